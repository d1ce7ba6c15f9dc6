/* nx_err.h — the project's one error type, logging and clock.
 *
 * Every action function returns an int: NX_OK (0) or a negative code from NX_ERROR_LIST.
 * Where the caller needs more than a code (a file, a tensor, a YAML line), the function also
 * fills an nx_err_t with a sentence naming the problem and where it is. Library code never
 * exits or aborts on external input; it returns one of these.
 */
#ifndef NX_ERR_H
#define NX_ERR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

/* X(name, value, default text) */
#define NX_ERROR_LIST(X)                                   \
    X(EINVAL, -1, "invalid argument")                      \
    X(ENOMEM, -2, "out of host memory")                    \
    X(EIO, -3, "input/output error")                       \
    X(EFORMAT, -4, "malformed file")                       \
    X(ENOTFOUND, -5, "not found")                          \
    X(EPOOLFULL, -6, "device pool has too little free memory") \
    X(EDEVICE, -7, "device error")                         \
    X(ENOTSUP, -8, "not supported")                        \
    X(EEXIST, -9, "already exists")                        \
    X(EDIGEST, -10, "digest mismatch")                     \
    X(EBUSY, -11, "busy")                                  \
    X(ECANCELED, -12, "canceled")                          \
    X(ESTATE, -13, "invalid state")                        \
    X(EMISMATCH, -14, "contents differ")                   \
    X(ENOSPC, -15, "no space left to store it")            \
    X(EDISK, -16, "the disk failed a read, write or sync")

enum {
    NX_OK = 0,
#define NX__ERR_ENUM(name, value, text) NX_##name = value,
    NX_ERROR_LIST(NX__ERR_ENUM)
#undef NX__ERR_ENUM
};

/* A code plus a human sentence. msg is always NUL-terminated; empty when code is NX_OK. */
typedef struct nx_err {
    int code;       /* NX_OK or a negative NX_E* code */
    char msg[1024]; /* "file 'x.safetensors': tensor 'w': shape [2,3] x F32 is 24 bytes, range is 20" */
} nx_err_t;

/* Static text for a code ("invalid argument"); never NULL. */
const char *nx_strerror(int code);

/* Short stable name for a code ("EINVAL"); never NULL. */
const char *nx_errname(int code);

/* Fill *err (which may be NULL) with code and a printf-style message; returns code so that
 * callers can write `return nx_err_set(err, NX_EINVAL, "...")`. */
int nx_err_set(nx_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int nx_err_vset(nx_err_t *err, int code, const char *fmt, va_list ap);

/* Prepend context to an existing message ("loading 'm': " + old); returns err->code. */
int nx_err_prefix(nx_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void nx_err_clear(nx_err_t *err);

/* Logging to stderr. The level comes from NEXUS_LOG (error|warn|info|debug; default info). */
enum { NX_LOG_ERROR = 0, NX_LOG_WARN = 1, NX_LOG_INFO = 2, NX_LOG_DEBUG = 3 };
void nx_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool nx_log_enabled(int level);

/* Monotonic clock in nanoseconds. */
uint64_t nx_now_ns(void);

#endif
