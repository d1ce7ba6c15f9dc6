/* err.c — error codes, messages, logging and the monotonic clock (see nx_err.h). */
#include "nx_err.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *nx_strerror(int code)
{
    switch (code) {
    case NX_OK:
        return "success";
#define NX__ERR_TEXT(name, value, text) \
    case NX_##name:                     \
        return text;
        NX_ERROR_LIST(NX__ERR_TEXT)
#undef NX__ERR_TEXT
    }
    return "unknown error";
}

const char *nx_errname(int code)
{
    switch (code) {
    case NX_OK:
        return "OK";
#define NX__ERR_NAME(name, value, text) \
    case NX_##name:                     \
        return #name;
        NX_ERROR_LIST(NX__ERR_NAME)
#undef NX__ERR_NAME
    }
    return "EUNKNOWN";
}

int nx_err_vset(nx_err_t *err, int code, const char *fmt, va_list ap)
{
    if (!err)
        return code;
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    return code;
}

int nx_err_set(nx_err_t *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nx_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int nx_err_prefix(nx_err_t *err, const char *fmt, ...)
{
    if (!err)
        return NX_EINVAL;
    char head[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    size_t head_len = strlen(head);
    size_t old_len = strnlen(err->msg, sizeof err->msg - 1);
    if (head_len >= sizeof err->msg - 1)
        head_len = sizeof err->msg - 1;
    if (head_len + old_len > sizeof err->msg - 1)
        old_len = sizeof err->msg - 1 - head_len; /* keep the head; cut the tail */
    memmove(err->msg + head_len, err->msg, old_len);
    memcpy(err->msg, head, head_len);
    err->msg[head_len + old_len] = '\0';
    return err->code;
}

void nx_err_clear(nx_err_t *err)
{
    if (!err)
        return;
    err->code = NX_OK;
    err->msg[0] = '\0';
}

static int log_level = -1;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_init(void)
{
    const char *env = getenv("NEXUS_LOG");
    log_level = NX_LOG_INFO;
    if (!env)
        return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(env, names[i]) == 0)
            log_level = i;
}

bool nx_log_enabled(int level)
{
    pthread_once(&log_once, log_init);
    return level <= log_level;
}

void nx_log(int level, const char *fmt, ...)
{
    if (!nx_log_enabled(level))
        return;
    static const char *tags[] = {"error", "warn", "info", "debug"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so that lines from several threads do not interleave. */
    fprintf(stderr, "nexus %s: %s\n", tags[level < 0 ? 0 : level > 3 ? 3 : level], line);
}

uint64_t nx_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
