/* ctl_inspect.c — placeholder until 'nexusctl model inspect|verify' land in this file. */
#include <stdio.h>

#include "ctl.h"

int nx_ctl_model_inspect(int argc, char **argv)
{
    fprintf(stderr, "nexusctl: 'model inspect' is not built yet\n");
    return NX_CTL_EXIT_FAIL;
}

int nx_ctl_model_verify(int argc, char **argv)
{
    fprintf(stderr, "nexusctl: 'model verify' is not built yet\n");
    return NX_CTL_EXIT_FAIL;
}
