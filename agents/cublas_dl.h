/* cublas_dl.h — internal: the few cuBLAS entry points the CUDA engine backend uses, loaded with
 * dlopen at run time.
 *
 * Why not link it: there is no static cuBLAS, and a binary linked against libcublas.so would
 * fail to start on a machine without it (every CPU-only machine). So libcublas.so.13, then
 * .so.12, is opened the first time a CUDA engine is created; a missing library is NX_EDEVICE
 * naming it. The library needs no CUDA runtime of its own (it links only libcublasLt), and it
 * works on the current device's primary context, which the statically linked runtime also uses.
 *
 * This header needs no CUDA header (so the file builds in both configurations); the enum values
 * below are CUDA's own, checked against cublas_api.h / library_types.h by _Static_assert in
 * backend_cuda.c, which sees the real headers.
 */
#ifndef NX_CUBLAS_DL_H
#define NX_CUBLAS_DL_H

#include <stdbool.h>
#include <stddef.h>

#include "nx_err.h"

typedef struct nx__cublas_handle *nx__cublas_handle_t; /* cublasHandle_t */

/* cublasOperation_t */
#define NX_CUBLAS_OP_N 0
#define NX_CUBLAS_OP_T 1
/* cudaDataType_t */
#define NX_CUDA_R_32F 0
#define NX_CUDA_R_16F 2
#define NX_CUDA_R_16BF 14
/* cublasComputeType_t: fp32 accumulation, no TF32 shortcut */
#define NX_CUBLAS_COMPUTE_32F 68
/* cublasGemmAlgo_t */
#define NX_CUBLAS_GEMM_DEFAULT (-1)
#define NX_CUBLAS_STATUS_SUCCESS 0

typedef struct nx__cublas_api {
    int (*create)(nx__cublas_handle_t *handle);            /* cublasCreate_v2 */
    int (*destroy)(nx__cublas_handle_t handle);            /* cublasDestroy_v2 */
    int (*set_stream)(nx__cublas_handle_t handle, void *stream); /* cublasSetStream_v2 */
    int (*set_workspace)(nx__cublas_handle_t handle, void *workspace,
                         size_t bytes);                    /* cublasSetWorkspace_v2 */
    int (*gemm_ex)(nx__cublas_handle_t handle, int transa, int transb, int m, int n, int k,
                   const void *alpha, const void *a, int a_type, int lda, const void *b,
                   int b_type, int ldb, const void *beta, void *c, int c_type, int ldc,
                   int compute_type, int algo);            /* cublasGemmEx */
    const char *(*status_name)(int status);                /* cublasGetStatusName */
    const char *(*status_string)(int status);              /* cublasGetStatusString */
    const char *library;                                   /* the file that was opened */
} nx__cublas_api_t;

/* The process-wide table, loaded on first use (thread-safe; the library stays open for the
 * life of the process). NX_EDEVICE naming the libraries tried when none opens or a symbol is
 * missing. NEXUS_CUBLAS=/path/to/libcublas.so.N overrides the search. */
int nx__cublas_load(const nx__cublas_api_t **api_out, nx_err_t *err);

/* An error for a failed cuBLAS call: NX_EDEVICE "cuBLAS <call> failed: NAME: text". */
int nx__cublas_fail(const nx__cublas_api_t *api, nx_err_t *err, const char *call, int status);

#endif
