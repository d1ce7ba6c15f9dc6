/* backend_nocuda.c — stands in for backend_cuda.c in a build without nvcc: an engine on a
 * CUDA pool is NX_ENOTSUP (such a build cannot open a CUDA pool in the first place). */
#include "backend.h"

const nx__backend_ops_t *nx__cuda_backend(nx_err_t *err)
{
    nx_err_set(err, NX_ENOTSUP,
               "the CUDA engine backend is not in this build (built without nvcc)");
    return NULL;
}

uint64_t nx__cuda_scratch_bytes(const nx_model_config_t *config)
{
    return 0;
}

int nx__cuda_pick_rows(const float *logits, uint32_t rows, uint32_t vocab,
                       const nx__pick_t *plans, int32_t *ids, nx_err_t *err)
{
    return nx_err_set(err, NX_ENOTSUP,
                      "the CUDA engine backend is not in this build (built without nvcc)");
}
