/* gpu_tests.h — what the cmocka programs that reach a GPU (test_cuda_engine, test_pick)
 * share: whether a usable CUDA GPU is there, found once by gpu_group_setup, and NEED_GPU()
 * to skip a test with the reason when it is not. Include after <cmocka.h>. */
#ifndef NX_GPU_TESTS_H
#define NX_GPU_TESTS_H

#include <stdbool.h>
#include <stdio.h>

#include "nx_loader.h"

static bool have_gpu;
static char no_gpu_reason[1100];

#define NEED_GPU()                                                                            \
    do {                                                                                      \
        if (!have_gpu) {                                                                      \
            print_message("skipped: %s\n", no_gpu_reason);                                    \
            skip();                                                                           \
        }                                                                                     \
    } while (0)

/* cmocka group set-up: looks for the GPU; its absence is not an error (tests skip). */
static int gpu_group_setup(void **state)
{
    (void)state;
    nx_err_t reason = {0};
    have_gpu = nx_cuda_available(&reason);
    if (!have_gpu) {
        snprintf(no_gpu_reason, sizeof no_gpu_reason, "no usable CUDA GPU: %s",
                 reason.msg[0] ? reason.msg : "(no reason given)");
        fprintf(stderr, "%s; the GPU tests are skipped\n", no_gpu_reason);
    }
    return 0;
}

#endif
