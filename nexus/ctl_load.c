/* ctl_load.c — placeholder until 'nexusctl model load' lands in this file; it says so. */
#include <stdio.h>

#include "ctl.h"

int nx_ctl_model_load(int argc, char **argv)
{
    fprintf(stderr, "nexusctl: 'model load' is not built yet\n");
    return NX_CTL_EXIT_FAIL;
}
