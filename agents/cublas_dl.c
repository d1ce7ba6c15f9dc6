/* cublas_dl.c — cuBLAS loaded with dlopen at run time (see cublas_dl.h for why). */
#include "cublas_dl.h"

#include "cublas_dl_lib.h" /* lib_open, lib_sym: dlopen, or the CPU emulation's table */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static nx__cublas_api_t loaded;
static nx_err_t load_err; /* the outcome of the one attempt, copied to every caller */

/* dlopen a library by soname (the loader's search path), then in the toolkit's usual place:
 * the toolkit's lib64 is often not in ld.so's cache on a GPU machine. */
static void *open_library(char *tried, size_t cap)
{
    const char *forced = getenv("NEXUS_CUBLAS");
    const char *names[] = {"libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.13",
                           "libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.12"};
    size_t used = 0;
    tried[0] = '\0';
    if (forced && *forced) {
        void *h = lib_open(forced);
        snprintf(tried, cap, "%s (NEXUS_CUBLAS): %s", forced, h ? "ok" : lib_error());
        return h;
    }
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        void *h = lib_open(names[i]);
        if (h) {
            loaded.library = names[i];
            return h;
        }
        if (used < cap)
            used += (size_t)snprintf(tried + used, cap - used, "%s%s", i ? ", " : "", names[i]);
    }
    return NULL;
}

static void load(void)
{
    char tried[512];
    void *lib = open_library(tried, sizeof tried);
    if (!lib) {
        nx_err_set(&load_err, NX_EDEVICE,
                   "cuBLAS is not installed or not on the library path (tried %s); the CUDA "
                   "engine backend needs it (set NEXUS_CUBLAS to its path)",
                   tried);
        return;
    }
    if (!loaded.library)
        loaded.library = getenv("NEXUS_CUBLAS");
    struct {
        const char *symbol;
        void **slot;
    } table[] = {
        {"cublasCreate_v2", (void **)&loaded.create},
        {"cublasDestroy_v2", (void **)&loaded.destroy},
        {"cublasSetStream_v2", (void **)&loaded.set_stream},
        {"cublasSetWorkspace_v2", (void **)&loaded.set_workspace},
        {"cublasGemmEx", (void **)&loaded.gemm_ex},
        {"cublasGetStatusName", (void **)&loaded.status_name},
        {"cublasGetStatusString", (void **)&loaded.status_string},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        void *fn = lib_sym(lib, table[i].symbol);
        if (!fn) {
            nx_err_set(&load_err, NX_EDEVICE, "cuBLAS library '%s' has no '%s'",
                       loaded.library, table[i].symbol);
            lib_close(lib);
            memset(&loaded, 0, sizeof loaded);
            return;
        }
        memcpy(table[i].slot, &fn, sizeof fn); /* object to function pointer, as POSIX allows */
    }
    load_err.code = NX_OK;
}

int nx__cublas_load(const nx__cublas_api_t **api_out, nx_err_t *err)
{
    pthread_once(&load_once, load);
    if (load_err.code != NX_OK) {
        if (err)
            *err = load_err;
        return load_err.code;
    }
    *api_out = &loaded;
    return NX_OK;
}

int nx__cublas_fail(const nx__cublas_api_t *api, nx_err_t *err, const char *call, int status)
{
    const char *name = api && api->status_name ? api->status_name(status) : NULL;
    const char *text = api && api->status_string ? api->status_string(status) : NULL;
    return nx_err_set(err, NX_EDEVICE, "cuBLAS %s failed: %s (%d): %s", call,
                      name ? name : "CUBLAS_STATUS_?", status, text ? text : "unknown error");
}
