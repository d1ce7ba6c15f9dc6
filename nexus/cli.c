/* cli.c — small helpers the nexusctl sub-commands share: numbers from arguments, sizes for
 * people. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"

bool nx_cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!text || text[0] < '0' || text[0] > '9') /* no sign, no space, not empty */
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

void nx_cli_format_bytes(uint64_t bytes, char *out, size_t cap)
{
    if (bytes >= 1000000000ull)
        snprintf(out, cap, "%.3f GB", (double)bytes / 1e9);
    else if (bytes >= 1000000ull)
        snprintf(out, cap, "%.1f MB", (double)bytes / 1e6);
    else
        snprintf(out, cap, "%.1f kB", (double)bytes / 1e3);
}
