/* cublas_dl_lib.h — internal: how cublas_dl.c opens the cuBLAS library and finds its entry
 * points. In the product that is dlopen/dlsym. In the build for tests/cuemu (the CPU emulation
 * of CUDA that `make emu-test` runs: it checks index arithmetic, barriers and host
 * orchestration, not the hardware) it is the emulator's table of its own cuBLAS functions, so
 * cublas_dl.c itself has no #ifdef.
 */
#ifndef NX_CUBLAS_DL_LIB_H
#define NX_CUBLAS_DL_LIB_H

#include <dlfcn.h>

#ifdef NX_CUEMU
void *cuemu_cublas_open(const char *name);
void *cuemu_cublas_sym(void *lib, const char *symbol);

static inline void *lib_open(const char *name) { return cuemu_cublas_open(name); }
static inline void *lib_sym(void *lib, const char *symbol) { return cuemu_cublas_sym(lib, symbol); }
static inline void lib_close(void *lib) { (void)lib; }
static inline const char *lib_error(void) { return "not emulated"; }
#else
static inline void *lib_open(const char *name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL); }
static inline void *lib_sym(void *lib, const char *symbol) { return dlsym(lib, symbol); }
static inline void lib_close(void *lib) { dlclose(lib); }
static inline const char *lib_error(void)
{
    const char *e = dlerror();
    return e ? e : "unknown dlopen error";
}
#endif

#endif
