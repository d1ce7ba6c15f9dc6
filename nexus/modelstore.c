/* modelstore.c — hub names and the models folder nexusctl works on (see modelstore.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "conf_yaml.h"
#include "modelstore.h"

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* One part of "Org/Name": s[0..n). */
static bool part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 96 || !alnum(s[0]) || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!name_char(s[i]))
            return false;
        if (i + 1 < n && ((s[i] == '-' && s[i + 1] == '-') || (s[i] == '.' && s[i + 1] == '.')))
            return false;
    }
    return true;
}

static bool rev_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NX_MS_REV_MAX || strstr(s, "..") || s[0] == '/' || s[n - 1] == '/')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]) && s[i] != '/')
            return false;
    return true;
}

bool nx_ms_parse_name(const char *text, nx_ms_name_t *out)
{
    if (!text)
        return false;
    const char *slash = strchr(text, '/');
    if (!slash)
        return false;
    const char *at = strchr(slash + 1, '@');
    size_t name_len = at ? (size_t)(at - slash - 1) : strlen(slash + 1);
    if (!part_ok(text, (size_t)(slash - text)) || !part_ok(slash + 1, name_len))
        return false;
    if (at && !rev_ok(at + 1))
        return false;
    if (out) {
        size_t repo_len = (size_t)(slash - text) + 1 + name_len;
        memcpy(out->repo, text, repo_len);
        out->repo[repo_len] = 0;
        strcpy(out->rev, at ? at + 1 : "main");
        out->rev_given = at != NULL;
    }
    return true;
}

char *nx_ms_repo_dir(const char *root, const char *repo)
{
    const char *slash = strchr(repo, '/');
    if (!slash)
        return NULL;
    size_t n = strlen(root) + strlen(repo) + 16;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/models--%.*s--%s", root, (int)(slash - repo), repo, slash + 1);
    return out;
}

static int models_of_config(const char *config, char **out, nx_err_t *err)
{
    nx_nexus_conf_t *c = NULL;
    int rc = nx_nexus_conf_read(config, &c, err);
    if (rc != NX_OK)
        return rc;
    *out = strdup(c->models_dir);
    nx_nexus_conf_free(&c);
    return *out ? NX_OK : nx_err_set(err, NX_ENOMEM, "no memory");
}

int nx_ms_models_dir(const char *models_flag, const char *config_flag, char **out,
                     nx_err_t *err)
{
    *out = NULL;
    const char *env = getenv("NEXUS_MODELS");
    const char *given = models_flag ? models_flag : (env && *env ? env : NULL);
    if (given) {
        char *cwd = getcwd(NULL, 0);
        *out = cwd ? nx__conf_abspath(cwd, given) : NULL;
        free(cwd);
        return *out ? NX_OK : nx_err_set(err, NX_ENOMEM, "no memory");
    }
    if (config_flag)
        return models_of_config(config_flag, out, err);
    struct stat st;
    if (stat("configs/nexus.yaml", &st) == 0)
        return models_of_config("configs/nexus.yaml", out, err);
    return nx_err_set(err, NX_ENOTFOUND,
                      "no models folder: pass --models DIR or --config nexus.yaml, or set "
                      "NEXUS_MODELS (configs/nexus.yaml is not in this folder)");
}
