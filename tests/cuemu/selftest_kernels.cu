/* selftest_kernels.cu — kernels for test_cuemu.c, the self-test of cuemu (the CPU emulation of
 * CUDA: it checks index arithmetic, barriers and host orchestration; not the hardware, not
 * speed). One kernel uses every emulated primitive; the others are each broken in one way, to
 * prove the detector for it fires. Written as CUDA (it would build with nvcc too); launched
 * through NX_LAUNCH like the project's kernels.
 */
#include "cuda_launch.h"
#include "selftest_kernels.h"

#include <math.h>
#include <stdint.h>

#define FULL_MASK 0xffffffffu

/* ------------------------------------------------------------------------------------------
 * Every primitive. Block of 64 threads (two warps), grid of 2 blocks; out[(block * 64 + t) *
 * ST_SLOTS + slot], fout likewise; counters: see selftest_kernels.h.
 */
__global__ void primitives_kernel(const int *in, int *out, float *fout, int *counters,
                                  float *fcounters)
{
    __shared__ int sh[64];
    unsigned t = threadIdx.x, lane = t & 31, b = blockIdx.x;
    int *o = out + ((uint64_t)b * 64 + t) * ST_SLOTS;
    float *fo = fout + ((uint64_t)b * 64 + t) * ST_SLOTS;

    o[0] = __shfl_sync(FULL_MASK, (int)(lane * 10 + b), 3);
    o[1] = __shfl_xor_sync(FULL_MASK, (int)lane, 1);
    o[2] = __shfl_up_sync(FULL_MASK, (int)lane, 2);
    o[3] = __shfl_down_sync(FULL_MASK, (int)lane, 4);
    o[4] = __shfl_xor_sync(FULL_MASK, (int)lane, 16, 16);
    o[5] = __shfl_down_sync(FULL_MASK, (int)lane, 4, 8);
    o[6] = (int)__ballot_sync(FULL_MASK, lane % 3 == 0);
    o[7] = __any_sync(FULL_MASK, lane == 5);
    o[8] = __all_sync(FULL_MASK, lane < 31);
    __syncwarp();

    sh[t] = (int)t * 2;
    __syncthreads();
    o[9] = sh[63 - t];
    o[10] = __syncthreads_count(t < 10);
    o[11] = __syncthreads_and(t < 64);
    o[12] = __syncthreads_or(t == 63);
    o[13] = __ldg(&in[t]) + __ldcs(&in[63 - t]);
    o[14] = (int)__float_as_uint(1.f);
    o[15] = __float_as_int(__uint_as_float(0x40000000u) + __int_as_float(0x3f800000));

    float v = (float)lane;
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, off);
    fo[0] = v;
    fo[1] = (float)__shfl_sync(FULL_MASK, (double)lane * 0.5, 7);
    fo[2] = rsqrtf(4.f);
    fo[3] = __expf(0.f);
    fo[4] = __fdividef(1.f, 4.f);
    fo[5] = fmaxf(expf(-INFINITY), 0.f);

    atomicAdd(&counters[0], 1);
    atomicMax(&counters[1], (int)(t + 100 * b));
    atomicMin(&counters[2], (int)t);
    if (atomicCAS(&counters[3], 0, (int)t + 1) == 0)
        atomicAdd(&counters[4], 1);
    atomicExch(&counters[5], 7);
    atomicAdd((unsigned *)&counters[6], 2u);
    atomicAdd(&fcounters[0], 0.5f);
}

/* Index arithmetic with 3-D blocks and 2-D grids: each thread writes its coordinates. */
__global__ void coords_kernel(int *out)
{
    unsigned bx = blockIdx.x + gridDim.x * blockIdx.y;
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
    out[bx * per_block + t] = (int)(threadIdx.x | threadIdx.y << 4 | threadIdx.z << 8 |
                                    blockIdx.x << 12 | blockIdx.y << 16);
}

/* Reads shared memory before any thread of the block wrote it: sees the fill pattern. */
__global__ void shared_garbage_kernel(unsigned *out)
{
    __shared__ unsigned cell;
    out[blockIdx.x] = cell; /* thread 0 only: one thread per block */
    cell = 12345u;
}

/* Thread 0 writes shared memory, the others read it; `barrier` says whether they wait. */
__global__ void publish_kernel(int *out, int barrier)
{
    __shared__ int value;
    if (threadIdx.x == 0)
        value = 42;
    if (barrier)
        __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}

/* Kernel arguments are copied at the launch: a graph replays the value it captured. */
__global__ void store_kernel(int *out, int value)
{
    out[threadIdx.x] = value + (int)threadIdx.x;
}

/* ------------------------------------------------------------------------------------------
 * Broken on purpose
 */
__global__ void shfl_exited_kernel(int *out)
{
    if (threadIdx.x == 5)
        return; /* lane 5 leaves; the full-mask shuffle below waits for it forever */
    out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, (int)threadIdx.x, 1);
}

__global__ void mismatched_barrier_kernel(int *out)
{
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void barrier_vs_shuffle_kernel(int *out)
{
    int v = (int)threadIdx.x;
    if (threadIdx.x < 16)
        __syncthreads();
    else
        v = __shfl_xor_sync(FULL_MASK, v, 1);
    out[threadIdx.x] = v;
}

__global__ void partial_warp_shuffle_kernel(int *out)
{
    out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, (int)threadIdx.x, 1);
}

__global__ void read_past_end_kernel(const float *in, uint32_t index, float *out)
{
    out[0] = in[index];
}

/* A float4 load from in + offset floats: misaligned unless offset % 4 == 0. */
__global__ void vector_load_kernel(const float *in, uint32_t offset, float *out)
{
    float4 v = *(const float4 *)(in + offset);
    out[0] = v.x + v.y + v.z + v.w;
}

/* ------------------------------------------------------------------------------------------
 * Launchers (cudaGetLastError after each launch, like the project's)
 */
extern "C" int st_primitives(const int *in, int *out, float *fout, int *counters,
                             float *fcounters)
{
    NX_LAUNCH(2, 64, 0, 0, primitives_kernel)(in, out, fout, counters, fcounters);
    return (int)cudaGetLastError();
}

extern "C" int st_coords(int *out)
{
    NX_LAUNCH(dim3(ST_COORDS_GX, ST_COORDS_GY), dim3(ST_COORDS_BX, ST_COORDS_BY, ST_COORDS_BZ), 0,
              0, coords_kernel)(out);
    return (int)cudaGetLastError();
}

extern "C" int st_shared_garbage(unsigned *out, unsigned blocks)
{
    NX_LAUNCH(blocks, 1, 0, 0, shared_garbage_kernel)(out);
    return (int)cudaGetLastError();
}

extern "C" int st_publish(int *out, unsigned blocks, unsigned threads, int barrier)
{
    NX_LAUNCH(blocks, threads, 0, 0, publish_kernel)(out, barrier);
    return (int)cudaGetLastError();
}

extern "C" int st_store(void *stream, int *out, int value)
{
    NX_LAUNCH(1, 32, 0, (cudaStream_t)stream, store_kernel)(out, value);
    return (int)cudaGetLastError();
}

extern "C" int st_launch_broken(int which, int *out)
{
    switch (which) {
    case ST_SHFL_EXITED: NX_LAUNCH(1, 32, 0, 0, shfl_exited_kernel)(out); break;
    case ST_MISMATCHED_BARRIER: NX_LAUNCH(1, 64, 0, 0, mismatched_barrier_kernel)(out); break;
    case ST_BARRIER_VS_SHUFFLE: NX_LAUNCH(1, 32, 0, 0, barrier_vs_shuffle_kernel)(out); break;
    case ST_PARTIAL_WARP: NX_LAUNCH(1, 48, 0, 0, partial_warp_shuffle_kernel)(out); break;
    case ST_BLOCK_TOO_BIG: NX_LAUNCH(1, 1025, 0, 0, store_kernel)(out, 0); break;
    case ST_BLOCK_Z_TOO_BIG: NX_LAUNCH(1, dim3(1, 1, 65), 0, 0, store_kernel)(out, 0); break;
    case ST_GRID_Y_TOO_BIG: NX_LAUNCH(dim3(1, 65536), 32, 0, 0, store_kernel)(out, 0); break;
    case ST_ZERO_GRID: NX_LAUNCH(0, 32, 0, 0, store_kernel)(out, 0); break;
    }
    return (int)cudaGetLastError();
}

extern "C" int st_vector_load(const float *in, uint32_t offset, float *out)
{
    NX_LAUNCH(1, 1, 0, 0, vector_load_kernel)(in, offset, out);
    return (int)cudaGetLastError();
}

extern "C" int st_read_past_end(const float *in, uint32_t index, float *out)
{
    NX_LAUNCH(1, 1, 0, 0, read_past_end_kernel)(in, index, out);
    return (int)cudaGetLastError();
}
