/* ctl_model_arg.c — the model argument of nexusctl's offline commands (run, tokenize, model
 * inspect|verify|load|quantize): a path, a name in the models folder, or a hub name Org/Name[@REV]
 * (modelstore.h). The options --models DIR and --config FILE say which models folder. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl.h"
#include "modelstore.h"

int nx_ctl_store_opts_take(const char *cmd, int *argc, char **argv, nx_ctl_store_opts_t *opts)
{
    int kept = 1;
    for (int i = 1; i < *argc; i++) {
        const char *arg = argv[i];
        const char **slot = strcmp(arg, "--models") == 0   ? &opts->models
                            : strcmp(arg, "--config") == 0 ? &opts->config
                                                           : NULL;
        if (!slot) {
            argv[kept++] = argv[i];
            continue;
        }
        if (i + 1 >= *argc || !argv[i + 1][0]) {
            fprintf(stderr, "nexusctl %s: %s takes a %s\n", cmd, arg,
                    slot == &opts->models ? "folder" : "nexus.yaml file");
            return NX_CTL_EXIT_USAGE;
        }
        *slot = argv[++i];
    }
    *argc = kept;
    argv[kept] = NULL;
    return NX_CTL_EXIT_OK;
}

int nx_ctl_models_dir(const nx_ctl_store_opts_t *opts, bool required, char **out, nx_err_t *err)
{
    *out = NULL;
    int rc = nx_ms_models_dir(opts->models, opts->config, out, err);
    if (rc == NX_ENOTFOUND && !required && !opts->config)
        return NX_OK; /* hub names still resolve in the Hugging Face cache */
    return rc;
}

int nx_ctl_resolve_model(const char *cmd, const nx_ctl_store_opts_t *opts, const char *arg,
                         char **path_out)
{
    *path_out = NULL;
    struct stat st;
    if (stat(arg, &st) == 0) { /* a path that exists as given wins */
        *path_out = strdup(arg);
        goto out;
    }
    nx_err_t err = {0};
    char *models_dir = NULL;
    nx_ms_model_t m;
    if (nx_ctl_models_dir(opts, false, &models_dir, &err) != NX_OK) {
        fprintf(stderr, "nexusctl %s: model '%s': %s\n", cmd, arg, err.msg);
        return NX_CTL_EXIT_FAIL;
    }
    bool bare = !strchr(arg, '/') && strcmp(arg, ".") && strcmp(arg, "..");
    if (bare && !models_dir) {
        fprintf(stderr, "nexusctl %s: model '%s' is not a path here, and there is no models "
                "folder to look it up in: pass --models DIR or --config FILE, or set "
                "NEXUS_MODELS\n", cmd, arg);
        return NX_CTL_EXIT_FAIL;
    }
    int rc = nx_ms_resolve(arg, models_dir, NULL, &m, &err);
    if (rc == NX_OK && m.source == NX_MS_FOLDER && stat(m.path, &st) != 0) {
        rc = nx_err_set(&err, NX_ENOTFOUND, "model '%s' is neither a path here nor in the "
                        "models folder %s", arg, models_dir);
        nx_ms_model_clear(&m);
    }
    free(models_dir);
    if (rc != NX_OK) {
        fprintf(stderr, "nexusctl %s: %s\n", cmd, err.msg);
        return NX_CTL_EXIT_FAIL;
    }
    *path_out = m.path; /* moves it */
    m.path = NULL;
    nx_ms_model_clear(&m);
out:
    if (!*path_out) {
        fprintf(stderr, "nexusctl %s: no memory\n", cmd);
        return NX_CTL_EXIT_FAIL;
    }
    return NX_CTL_EXIT_OK;
}
