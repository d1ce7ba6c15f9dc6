/* ctl_run.c — placeholder until 'nexusctl run' lands in this file; it says so. */
#include <stdio.h>

#include "ctl.h"

int nx_ctl_run(int argc, char **argv)
{
    fprintf(stderr, "nexusctl: 'run' is not built yet\n");
    return NX_CTL_EXIT_FAIL;
}
