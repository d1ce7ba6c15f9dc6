/* cuemu_cublas.cc — cuBLAS for cuemu (CPU emulation of CUDA for tests: checks index
 * arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 * The entry points agents/cublas_dl.c looks up, with the prototypes of cublas_api.h, reached
 * through the seam in agents/cublas_dl_lib.h (cuemu_cublas_open/sym) instead of dlopen.
 * cublasGemmEx is a plain column-major GEMM in fp32 (BF16, F16 or F32 A and B of one type; C
 * F32 or A's type; CUBLAS_COMPUTE_32F), queued on the handle's stream like a kernel, so it is
 * deferred and can be captured. Its arguments are checked as cuBLAS checks them (status 7,
 * CUBLAS_STATUS_INVALID_VALUE); when it runs, A, B and C must lie in device memory, else it is
 * an illegal address (sticky), as a GPU would fault. With beta == 0, C is not read.
 */
#include "cuemu_device.h"
#include "cuemu_internal.h"

#include <cublas_api.h>

#include <memory>
#include <set>
#include <vector>

struct cublasContext {
    cudaStream_t stream;
    void *workspace;
    size_t workspace_bytes;
};

using namespace cuemu;

static std::set<cublasContext *> *handles(void)
{
    static std::set<cublasContext *> live;
    return &live;
}

static bool live(cublasHandle_t h)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    return h && handles()->count(h);
}

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t *handle)
{
    if (!handle)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (sticky() != cudaSuccess)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    std::lock_guard<std::recursive_mutex> g(lock);
    *handle = new cublasContext{NULL, NULL, 0};
    handles()->insert(*handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (!handles()->erase(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace,
                                                  size_t bytes)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && (!is_device_range(workspace, bytes) || (uintptr_t)workspace % 256)) {
        say("cublasSetWorkspace(%p, %zu bytes): not 256-byte aligned device memory", workspace,
            bytes);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    handle->workspace = workspace;
    handle->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

const char *CUBLASWINAPI cublasGetStatusName(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *CUBLASWINAPI cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "an error (emulated cuBLAS)";
    }
}

/* ------------------------------------------------------------------------------------------
 * GemmEx
 */
static size_t type_bytes(cudaDataType t)
{
    return t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0;
}

static float load(const void *p, cudaDataType t, size_t i)
{
    switch (t) {
    case CUDA_R_16BF: {
        uint32_t bits = ((const uint16_t *)p)[i];
        return __uint_as_float(bits << 16);
    }
    case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static void store(void *p, cudaDataType t, size_t i, float v)
{
    switch (t) {
    case CUDA_R_16BF: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v); break;
    case CUDA_R_16F: ((__half *)p)[i] = __float2half_rn(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

struct gemm_args {
    bool ta, tb;
    int m, n, k;
    float alpha, beta;
    const void *a, *b;
    void *c;
    cudaDataType at, bt, ct;
    int lda, ldb, ldc;
};

/* Elements a matrix of `rows` x `cols` (column-major, leading dimension ld) spans. */
static size_t span(int rows, int cols, int ld)
{
    return rows && cols ? (size_t)(cols - 1) * ld + rows : 0;
}

static cudaError_t run_gemm(const gemm_args &g)
{
    size_t a_n = g.ta ? span(g.k, g.m, g.lda) : span(g.m, g.k, g.lda);
    size_t b_n = g.tb ? span(g.n, g.k, g.ldb) : span(g.k, g.n, g.ldb);
    size_t c_n = span(g.m, g.n, g.ldc);
    struct {
        const char *name;
        const void *p;
        size_t bytes;
    } mats[] = {{"A", g.a, a_n * type_bytes(g.at)},
                {"B", g.b, b_n * type_bytes(g.bt)},
                {"C", g.c, c_n * type_bytes(g.ct)}};
    for (const auto &mt : mats)
        if (mt.bytes && !is_device_range(mt.p, mt.bytes)) {
            say("ERROR: cublasGemmEx: %s [%p, +%zu bytes) is not (all) device memory: an "
                "illegal address on a GPU", mt.name, mt.p, mt.bytes);
            return cudaErrorIllegalAddress;
        }
    /* op(A) as float [m][k], op(B) as float [n][k]: the inner loop runs over k */
    std::vector<float> a((size_t)g.m * g.k), b((size_t)g.n * g.k);
    for (int i = 0; i < g.m; i++)
        for (int l = 0; l < g.k; l++)
            a[(size_t)i * g.k + l] = load(g.a, g.at, g.ta ? (size_t)i * g.lda + l
                                                            : (size_t)l * g.lda + i);
    for (int j = 0; j < g.n; j++)
        for (int l = 0; l < g.k; l++)
            b[(size_t)j * g.k + l] = load(g.b, g.bt, g.tb ? (size_t)l * g.ldb + j
                                                           : (size_t)j * g.ldb + l);
    for (int j = 0; j < g.n; j++)
        for (int i = 0; i < g.m; i++) {
            const float *ar = &a[(size_t)i * g.k], *bc = &b[(size_t)j * g.k];
            float acc = 0.f;
            for (int l = 0; l < g.k; l++)
                acc += ar[l] * bc[l];
            size_t at = (size_t)j * g.ldc + i;
            float v = g.alpha * acc;
            if (g.beta != 0.f)
                v += g.beta * load(g.c, g.ct, at);
            store(g.c, g.ct, at, v);
        }
    return cudaSuccess;
}

static cublasStatus_t invalid(const char *why)
{
    say("cublasGemmEx: %s: CUBLAS_STATUS_INVALID_VALUE", why);
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const void *alpha, const void *A, cudaDataType Atype,
                                         int lda, const void *B, cudaDataType Btype, int ldb,
                                         const void *beta, void *C, cudaDataType Ctype, int ldc,
                                         cublasComputeType_t computeType, cublasGemmAlgo_t algo)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) ||
        (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
        return invalid("transa/transb other than N or T");
    if (m < 0 || n < 0 || k < 0)
        return invalid("a negative dimension");
    bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
    int a_rows = ta ? k : m, b_rows = tb ? n : k;
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1))
        return invalid("a leading dimension smaller than its matrix's rows");
    if (!alpha || !beta)
        return invalid("alpha or beta is NULL");
    if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC) {
        say("cublasGemmEx: compute type %d is not emulated (CUBLAS_COMPUTE_32F only)",
            (int)computeType);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (!type_bytes(Atype) || Atype != Btype || (Ctype != CUDA_R_32F && Ctype != Atype)) {
        say("cublasGemmEx: types A %d, B %d, C %d are not a supported combination for "
            "CUBLAS_COMPUTE_32F", (int)Atype, (int)Btype, (int)Ctype);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    /* host pointer mode: the scalars are read now */
    gemm_args g = {ta, tb, m, n, k, *(const float *)alpha, *(const float *)beta, A, B, C, Atype,
                   Btype, Ctype, lda, ldb, ldc};
    char what[160];
    snprintf(what, sizeof what, "cublasGemmEx (%c%c, m %d, n %d, k %d)", ta ? 'T' : 'N',
             tb ? 'T' : 'N', m, n, k);
    cudaError_t e = submit(handle->stream, op{[g]() { return run_gemm(g); }, what});
    if (e != cudaSuccess) {
        say("cublasGemmEx: queueing failed: %s", cudaGetErrorName(e));
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------------------------------
 * The seam agents/cublas_dl_lib.h calls under NX_CUEMU instead of dlopen/dlsym.
 */
static char library_token;

extern "C" void *cuemu_cublas_open(const char *name)
{
    return &library_token;
}

extern "C" void *cuemu_cublas_sym(void *lib, const char *symbol)
{
    static const struct {
        const char *name;
        void *fn;
    } table[] = {
        {"cublasCreate_v2", (void *)cublasCreate_v2},
        {"cublasDestroy_v2", (void *)cublasDestroy_v2},
        {"cublasSetStream_v2", (void *)cublasSetStream_v2},
        {"cublasSetWorkspace_v2", (void *)cublasSetWorkspace_v2},
        {"cublasGemmEx", (void *)(cublasStatus_t(CUBLASWINAPI *)(
                             cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                             const void *, const void *, cudaDataType, int, const void *,
                             cudaDataType, int, const void *, void *, cudaDataType, int,
                             cublasComputeType_t, cublasGemmAlgo_t))cublasGemmEx},
        {"cublasGetStatusName", (void *)cublasGetStatusName},
        {"cublasGetStatusString", (void *)cublasGetStatusString},
    };
    if (lib != &library_token)
        return NULL;
    for (const auto &t : table)
        if (strcmp(t.name, symbol) == 0)
            return t.fn;
    say("cuBLAS entry point '%s' is not emulated (tests/cuemu/cuemu_cublas.cc)", symbol);
    return NULL;
}
