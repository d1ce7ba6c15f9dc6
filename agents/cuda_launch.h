/* cuda_launch.h — internal: how the .cu files include CUDA and launch kernels.
 *
 * Built by nvcc (the product): the CUDA headers, and NX_LAUNCH(grid, block, smem, stream,
 * kernel)(args...) is kernel<<<grid, block, smem, stream>>>(args...).
 *
 * Built with NX_CUEMU (tests/cuemu: the CPU emulation that runs these kernels and the CUDA
 * backend's host code on a machine without a GPU, to check index arithmetic, barriers and the
 * host's orchestration; never the hardware, never speed): the emulator's device header, and
 * NX_LAUNCH runs the grid there, block after block, each thread a coroutine.
 *
 * The kernel comes last because a template kernel's name has commas in it.
 */
#ifndef NX_CUDA_LAUNCH_H
#define NX_CUDA_LAUNCH_H

#ifdef NX_CUEMU
#include "cuemu_device.h"
#define NX_LAUNCH(grid, block, smem, stream, ...)                                             \
    cuemu::launch(#__VA_ARGS__, __VA_ARGS__, (grid), (block), (smem), (stream))
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define NX_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
#endif

#endif
