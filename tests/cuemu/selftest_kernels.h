/* selftest_kernels.h — the launchers of selftest_kernels.cu for test_cuemu.c (the self-test of
 * cuemu, the CPU emulation of CUDA). Each returns the launch's cudaError_t as an int. */
#ifndef NX_CUEMU_SELFTEST_KERNELS_H
#define NX_CUEMU_SELFTEST_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_SLOTS 16 /* int and float results per thread of primitives_kernel */
/* counters: [0] atomicAdd 1, [1] atomicMax, [2] atomicMin (start high), [3] atomicCAS target,
 * [4] CAS winners, [5] atomicExch, [6] unsigned atomicAdd 2; fcounters[0] atomicAdd 0.5f */
int st_primitives(const int *in, int *out, float *fout, int *counters, float *fcounters);

#define ST_COORDS_GX 2
#define ST_COORDS_GY 3
#define ST_COORDS_BX 8
#define ST_COORDS_BY 4
#define ST_COORDS_BZ 2
int st_coords(int *out);

int st_shared_garbage(unsigned *out, unsigned blocks);
int st_publish(int *out, unsigned blocks, unsigned threads, int barrier);
int st_store(void *stream, int *out, int value);

enum {
    ST_SHFL_EXITED,
    ST_MISMATCHED_BARRIER,
    ST_BARRIER_VS_SHUFFLE,
    ST_PARTIAL_WARP,
    ST_BLOCK_TOO_BIG,
    ST_BLOCK_Z_TOO_BIG,
    ST_GRID_Y_TOO_BIG,
    ST_ZERO_GRID,
};
int st_launch_broken(int which, int *out);
int st_read_past_end(const float *in, uint32_t index, float *out);
int st_vector_load(const float *in, uint32_t offset, float *out);

#ifdef __cplusplus
}
#endif

#endif
