/* ctl_synth.c — placeholder until 'nexusctl model synth' lands in this file; it says so. */
#include <stdio.h>

#include "ctl.h"

int nx_ctl_model_synth(int argc, char **argv)
{
    fprintf(stderr, "nexusctl: 'model synth' is not built yet\n");
    return NX_CTL_EXIT_FAIL;
}
