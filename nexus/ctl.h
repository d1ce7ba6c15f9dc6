/* ctl.h — nexusctl's sub-commands. Each takes the arguments after its own name
 * (argv[0] is the sub-command's name) and returns the process exit code:
 * 0 success, 1 the operation failed (bad file, check failed), 2 usage error. */
#ifndef NX_CTL_H
#define NX_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_loader.h"

#define NX_CTL_EXIT_OK 0
#define NX_CTL_EXIT_FAIL 1
#define NX_CTL_EXIT_USAGE 2

int nx_ctl_model_inspect(int argc, char **argv); /* ctl_inspect.c */
int nx_ctl_model_verify(int argc, char **argv);  /* ctl_inspect.c */
int nx_ctl_model_load(int argc, char **argv);    /* ctl_load.c */
int nx_ctl_model_synth(int argc, char **argv);   /* ctl_synth.c */
int nx_ctl_model_quantize(int argc, char **argv); /* ctl_quantize.c */
int nx_ctl_run(int argc, char **argv);           /* ctl_run.c */
int nx_ctl_tokenize(int argc, char **argv);      /* ctl_tokenize.c */
int nx_ctl_pull(int argc, char **argv);          /* ctl_pull.c */
int nx_ctl_model_list(int argc, char **argv);    /* ctl_store.c */
int nx_ctl_rm(int argc, char **argv);            /* ctl_store.c */
int nx_ctl_loader_calibrate(int argc, char **argv); /* ctl_loader.c */
int nx_ctl_loader_show(int argc, char **argv);      /* ctl_loader.c */

/* --models DIR and --config FILE (ctl_model_arg.c): which models folder a name is looked up in. */
typedef struct nx_ctl_store_opts {
    const char *models; /* --models DIR, or NULL */
    const char *config; /* --config FILE, or NULL */
} nx_ctl_store_opts_t;

/* Take --models DIR and --config FILE out of argv (the rest keep their order; *argc shrinks)
 * into *opts. NX_CTL_EXIT_USAGE (after saying so) when one lacks its value. */
int nx_ctl_store_opts_take(const char *cmd, int *argc, char **argv, nx_ctl_store_opts_t *opts);
/* The models folder of opts (nx_ms_models_dir). With required false, "no folder found" is
 * NX_OK with *out NULL (unless --config was given). Caller owns *out. */
int nx_ctl_models_dir(const nx_ctl_store_opts_t *opts, bool required, char **out, nx_err_t *err);
/* A model argument to a path: `arg` itself when it exists, else nx_ms_resolve in the models
 * folder of opts (or, without one, the Hugging Face cache). Prints "nexusctl CMD: ..." and
 * returns NX_CTL_EXIT_FAIL when it names nothing. Caller owns *path_out. */
int nx_ctl_resolve_model(const char *cmd, const nx_ctl_store_opts_t *opts, const char *arg,
                         char **path_out);

/* cli.c: a whole decimal number in [min, max] (no sign, nothing after it); false otherwise. */
bool nx_cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);
/* cli.c: "1.192 GB", "287.5 MB", "4.0 kB" (decimal units, like the GB/s beside them). */
void nx_cli_format_bytes(uint64_t bytes, char *out, size_t cap);

#endif
