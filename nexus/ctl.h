/* ctl.h — nexusctl's sub-commands. Each takes the arguments after its own name
 * (argv[0] is the sub-command's name) and returns the process exit code:
 * 0 success, 1 the operation failed (bad file, check failed), 2 usage error. */
#ifndef NX_CTL_H
#define NX_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* cli.c: a whole decimal number in [min, max] (no sign, nothing after it); false otherwise. */
bool nx_cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);
/* cli.c: "1.192 GB", "287.5 MB", "4.0 kB" (decimal units, like the GB/s beside them). */
void nx_cli_format_bytes(uint64_t bytes, char *out, size_t cap);

#endif
