/* dev_nocuda.c — stands in for dev_cuda.c in builds without the CUDA toolkit: the CUDA backend
 * is simply absent, and says so. */
#include "device.h"

nx_dev_t *nx__dev_cuda_open(int ordinal, nx_err_t *err)
{
    nx_err_set(err, NX_ENOTSUP, "this build has no CUDA backend (nvcc was not found at build time)");
    return NULL;
}
