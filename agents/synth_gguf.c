/* synth_gguf.c — a synthesized model as one GGUF file: synthesize (synth.c) into a temporary
 * directory, quantize (quantize.c) it into the target, remove the directory. Tests and
 * benchmarks get quantized models the same way users get theirs. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quantize.h"
#include "synth.h"

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

int nx_synth_gguf(const nx_synth_opts_t *opts, int mix, const char *out_path,
                  nx_synth_report_t *report, nx_err_t *err)
{
    if (!opts || !out_path || (unsigned)mix >= NX_QMIX__COUNT)
        return nx_err_set(err, NX_EINVAL, "synth: needs options, an output path and a type");
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.synth-%d", out_path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return nx_err_set(err, NX_EINVAL, "synth: output path '%s' is too long", out_path);
    nx_synth_opts_t o = *opts;
    o.out_dir = tmp;
    o.dtype = NX_DT_F32; /* the quantizer sees the generator's values, unrounded */
    o.shards = 1;
    int rc = nx_synth_model(&o, report, err);
    if (rc == NX_OK) {
        char name[256];
        const char *slash = strrchr(out_path, '/');
        snprintf(name, sizeof name, "%s", slash ? slash + 1 : out_path);
        char *dot = strrchr(name, '.');
        if (dot && strcmp(dot, ".gguf") == 0)
            *dot = '\0';
        nx_quantize_opts_t q = {.in_dir = tmp, .out_path = out_path, .mix = (nx_qmix_t)mix,
                                .name = name};
        rc = nx_quantize_model(&q, NULL, err);
        nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    return rc;
}
