/* ctl_tokenize.c — placeholder until 'nexusctl tokenize' lands in this file; it says so. */
#include <stdio.h>

#include "ctl.h"

int nx_ctl_tokenize(int argc, char **argv)
{
    fprintf(stderr, "nexusctl: 'tokenize' is not built yet\n");
    return NX_CTL_EXIT_FAIL;
}
