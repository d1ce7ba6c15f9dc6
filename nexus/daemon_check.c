/* daemon_check.c — what `nexusd --check` verifies beyond the configuration files themselves,
 * so that a passing check means the daemon would start: every agent's model opens (the
 * checkpoint's headers, config.json or GGUF keys and the tokenizer, exactly what start-up
 * reads for it; no weights), the pool's size fits this machine's device, and the home can be
 * written (the database lives there). It changes nothing on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"

/* "1.5 GiB" */
static const char *human_bytes(uint64_t bytes, char *buf, size_t cap)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = (double)bytes;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    snprintf(buf, cap, unit ? "%.1f %s" : "%.0f %s", value, units[unit]);
    return buf;
}

/* What start-up reads of a model before it serves (residency.c read_model): a model that fails
 * here would fail every task of its agents with model_error. */
static int check_model(const nx_agent_conf_t *a, nx_err_t *err)
{
    const char *path = a->model_path ? a->model_path : a->model;
    nx_st_t *st = nx_st_open(path, err);
    if (!st)
        goto out_fail;
    nx_st_destroy(&st);
    nx_model_config_t config;
    if (nx_config_load(path, &config, err) != NX_OK)
        goto out_fail;
    nx_tokenizer_t *tok = nx_tokenizer_load(path, err);
    if (!tok)
        goto out_fail;
    nx_tokenizer_destroy(&tok);
    return NX_OK;
out_fail:
    return nx_err_prefix(err, "%s: agent '%s': model '%s': ", a->source_path, a->name, path);
}

static int check_models(const nx_nexus_conf_t *conf, nx_err_t *err)
{
    for (size_t i = 0; i < conf->agent_count; i++) {
        const nx_agent_conf_t *a = &conf->agents[i];
        bool seen = false; /* agents sharing a model: open it once */
        for (size_t j = 0; j < i && !seen && a->model_path; j++)
            seen = conf->agents[j].model_path &&
                   strcmp(conf->agents[j].model_path, a->model_path) == 0;
        int rc = seen ? NX_OK : check_model(a, err);
        if (rc != NX_OK)
            return rc;
    }
    return NX_OK;
}

static int check_pool(const nx_nexus_conf_t *conf, nx_pool_plan_t *plan, nx_err_t *err)
{
    nx_pool_opts_t opts = {.device = conf->device, .bytes = conf->pool_bytes,
                           .fraction = conf->pool_bytes ? 0 : conf->pool_fraction};
    int rc = nx_pool_plan(&opts, plan, err);
    if (rc != NX_OK)
        nx_err_prefix(err, "%s: field 'pool': ", conf->source_path);
    return rc;
}

/* Whether a file can be made in `dir`: created and removed again, which also catches a
 * read-only file system where access() would say yes to root. */
static int probe_writable(const char *dir, nx_err_t *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/.nexusd-check-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return nx_err_set(err, NX_EIO, "cannot create a file in it: %s", strerror(errno));
    close(fd);
    unlink(path);
    return NX_OK;
}

/* The home exists as a writable folder (and its database, when there is one, opens for
 * writing), or it does not exist yet and its nearest existing parent is a writable folder,
 * where start-up will create it. */
static int check_home(const nx_nexus_conf_t *conf, nx_err_t *err)
{
    const char *home = conf->home;
    struct stat st;
    int rc = NX_OK;
    if (stat(home, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            rc = nx_err_set(err, NX_EIO, "it is not a folder");
        else
            rc = probe_writable(home, err);
        char db[4200];
        snprintf(db, sizeof db, "%s/nexus.db", home);
        int fd = rc == NX_OK ? open(db, O_RDWR | O_CLOEXEC | O_NONBLOCK) : -1;
        if (rc == NX_OK && fd < 0 && errno != ENOENT)
            rc = nx_err_set(err, NX_EIO, "its database '%s' cannot be opened for writing: %s", db,
                            strerror(errno));
        if (fd >= 0)
            close(fd);
    } else if (errno != ENOENT) {
        rc = nx_err_set(err, NX_EIO, "it cannot be used: %s", strerror(errno));
    } else {
        char parent[4200];
        snprintf(parent, sizeof parent, "%s", home);
        for (;;) { /* the nearest parent that exists */
            char *slash = strrchr(parent, '/');
            if (!slash || slash == parent) {
                snprintf(parent, sizeof parent, "/");
                break;
            }
            *slash = '\0';
            if (stat(parent, &st) == 0 || errno != ENOENT)
                break;
        }
        if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
            rc = nx_err_set(err, NX_EIO, "it does not exist and cannot be created: '%s' is not "
                            "a folder", parent);
        else if (probe_writable(parent, err) != NX_OK)
            rc = nx_err_prefix(err, "it does not exist and cannot be created in '%s': ", parent);
    }
    if (rc != NX_OK)
        nx_err_prefix(err, "%s: home '%s': ", conf->source_path, home);
    return rc;
}

int nx__daemon_check(const nx_nexus_conf_t *conf, char *summary, size_t cap, nx_err_t *err)
{
    nx_pool_plan_t plan;
    int rc = check_home(conf, err);
    if (rc == NX_OK)
        rc = check_pool(conf, &plan, err);
    if (rc == NX_OK)
        rc = check_models(conf, err);
    if (rc != NX_OK)
        return rc;
    char pool[32], free_text[32];
    snprintf(summary, cap, "%zu agents; pool %s of %s memory, %s free", conf->agent_count,
             human_bytes(plan.bytes, pool, sizeof pool), nx_device_name(plan.device),
             human_bytes(plan.free_bytes, free_text, sizeof free_text));
    return NX_OK;
}
