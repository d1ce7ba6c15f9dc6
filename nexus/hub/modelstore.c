/* modelstore.c — hub names and the models folder nexusctl works on (see modelstore.h). */
#include <dirent.h>
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

/* ---- resolving a name ------------------------------------------------------------------------ */

const char *nx_ms_source_name(nx_ms_source_t source)
{
    switch (source) {
    case NX_MS_FOLDER:
        return "folder";
    case NX_MS_PATH:
        return "path";
    case NX_MS_PULLED:
        return "pulled";
    case NX_MS_HF_CACHE:
        return "hf-cache";
    }
    return "?";
}

void nx_ms_free_roots(char **roots, size_t count)
{
    for (size_t i = 0; roots && i < count; i++)
        free(roots[i]);
    free(roots);
}

/* Appends "a/b" (or "a" when b is NULL) unless the list has it already. */
static int add_root(char **roots, size_t *count, const char *a, const char *b)
{
    if (!a || !*a)
        return NX_OK;
    size_t n = strlen(a) + (b ? strlen(b) + 2 : 1);
    char *joined = malloc(n);
    if (!joined)
        return NX_ENOMEM;
    snprintf(joined, n, b ? "%s/%s" : "%s", a, b);
    char *cwd = a[0] == '/' ? NULL : getcwd(NULL, 0);
    char *path = nx__conf_abspath(cwd ? cwd : "/", joined);
    free(cwd);
    free(joined);
    if (!path)
        return NX_ENOMEM;
    for (size_t i = 0; i < *count; i++) {
        if (strcmp(roots[i], path) == 0) {
            free(path);
            return NX_OK;
        }
    }
    roots[(*count)++] = path;
    return NX_OK;
}

int nx_ms_hf_roots(char ***roots_out, size_t *count_out)
{
    *roots_out = NULL;
    *count_out = 0;
    char **roots = calloc(4, sizeof *roots);
    size_t count = 0;
    if (!roots)
        return NX_ENOMEM;
    int rc = add_root(roots, &count, getenv("HF_HUB_CACHE"), NULL);
    if (rc == NX_OK)
        rc = add_root(roots, &count, getenv("HF_HOME"), "hub");
    if (rc == NX_OK)
        rc = add_root(roots, &count, getenv("XDG_CACHE_HOME"), "huggingface/hub");
    if (rc == NX_OK)
        rc = add_root(roots, &count, getenv("HOME"), ".cache/huggingface/hub");
    if (rc != NX_OK) {
        nx_ms_free_roots(roots, count);
        return rc;
    }
    *roots_out = roots;
    *count_out = count;
    return NX_OK;
}

void nx_ms_model_clear(nx_ms_model_t *model)
{
    free(model->path);
    free(model->repo_dir);
    memset(model, 0, sizeof *model);
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", a, b);
    return out;
}

/* What one snapshot folder holds, top level only (where pull and the hub put model files). */
typedef struct snapshot_scan {
    bool config;             /* config.json there and readable through its link */
    char gguf[8][256];       /* .gguf files whose links resolve; up to 8 named */
    size_t gguf_count;
    char dangling[4][256];   /* entries whose link leads nowhere (a blob missing) */
    size_t dangling_count;
} snapshot_scan_t;

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int scan_snapshot(const char *dir, snapshot_scan_t *scan, nx_err_t *err)
{
    memset(scan, 0, sizeof *scan);
    DIR *d = opendir(dir);
    if (!d)
        return nx_err_set(err, errno == ENOENT ? NX_ENOTFOUND : NX_EIO,
                          "snapshot '%s': cannot open: %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = join(dir, e->d_name);
        if (!path) {
            closedir(d);
            return nx_err_set(err, NX_ENOMEM, "snapshot '%s': no memory", dir);
        }
        struct stat st;
        bool ok = stat(path, &st) == 0;
        free(path);
        if (!ok) {
            if (scan->dangling_count < 4)
                snprintf(scan->dangling[scan->dangling_count], 256, "%s", e->d_name);
            scan->dangling_count++;
        } else if (strcmp(e->d_name, "config.json") == 0 && S_ISREG(st.st_mode)) {
            scan->config = true;
        } else if (has_suffix(e->d_name, ".gguf") && S_ISREG(st.st_mode)) {
            if (scan->gguf_count < 8)
                snprintf(scan->gguf[scan->gguf_count], 256, "%s", e->d_name);
            scan->gguf_count++;
        }
    }
    closedir(d);
    qsort(scan->gguf, scan->gguf_count < 8 ? scan->gguf_count : 8, sizeof scan->gguf[0],
          cmp_name);
    qsort(scan->dangling, scan->dangling_count < 4 ? scan->dangling_count : 4,
          sizeof scan->dangling[0], cmp_name);
    return NX_OK;
}

static void list_names(char *out, size_t cap, const char (*names)[256], size_t shown,
                       size_t total)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < shown && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s'%s'", i ? ", " : "", names[i]);
    if (total > shown && used < cap)
        snprintf(out + used, cap - used, " and %zu more", total - shown);
}

int nx_ms_snapshot_model(const char *snapshot_dir, char **path_out, nx_err_t *err)
{
    *path_out = NULL;
    snapshot_scan_t scan;
    int rc = scan_snapshot(snapshot_dir, &scan, err);
    if (rc != NX_OK)
        return rc;
    char names[600];
    if (scan.dangling_count) {
        list_names(names, sizeof names, scan.dangling, scan.dangling_count < 4 ? scan.dangling_count : 4,
                   scan.dangling_count);
        return nx_err_set(err, NX_EFORMAT,
                          "snapshot '%s' is not a whole model: %s link%s to a blob that is "
                          "missing (a pull that did not finish, or a blob deleted by hand)",
                          snapshot_dir, names, scan.dangling_count > 1 ? "" : "s");
    }
    if (scan.config) {
        *path_out = strdup(snapshot_dir);
    } else if (scan.gguf_count == 1) {
        *path_out = join(snapshot_dir, scan.gguf[0]);
    } else if (scan.gguf_count > 1) {
        list_names(names, sizeof names, scan.gguf, scan.gguf_count < 8 ? scan.gguf_count : 8,
                   scan.gguf_count);
        return nx_err_set(err, NX_EFORMAT,
                          "snapshot '%s' holds %zu .gguf files (%s): name one by its path, "
                          "e.g. '%s/%s'",
                          snapshot_dir, scan.gguf_count, names, snapshot_dir, scan.gguf[0]);
    } else {
        return nx_err_set(err, NX_EFORMAT,
                          "snapshot '%s' holds neither config.json nor a .gguf file", snapshot_dir);
    }
    return *path_out ? NX_OK : nx_err_set(err, NX_ENOMEM, "snapshot '%s': no memory", snapshot_dir);
}

static int pick_snapshot(const char *repo_dir, const nx_ms_name_t *name, char *commit,
                         size_t cap, nx_err_t *err);

static bool is_hex(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* refs/<rev> of repo_dir: the commit it names, into commit. False when there is no such ref. */
static bool read_ref(const char *repo_dir, const char *rev, char *commit, size_t cap)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/refs/%s", repo_dir, rev);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(commit, 1, cap - 1, f);
    fclose(f);
    commit[n] = '\0';
    while (n > 0 && (commit[n - 1] == '\n' || commit[n - 1] == '\r' || commit[n - 1] == ' '))
        commit[--n] = '\0';
    return n > 0 && !strchr(commit, '/') && strcmp(commit, ".") && strcmp(commit, "..");
}

int nx_ms_find_snapshot(const char *repo_dir, const nx_ms_name_t *name, char *commit,
                        size_t cap, nx_err_t *err)
{
    return pick_snapshot(repo_dir, name, commit, cap, err);
}

static int pick_snapshot(const char *repo_dir, const nx_ms_name_t *name, char *commit,
                         size_t cap, nx_err_t *err)
{
    char snapshots[4400];
    snprintf(snapshots, sizeof snapshots, "%s/snapshots", repo_dir);
    struct stat st;
    if (read_ref(repo_dir, name->rev, commit, cap)) {
        char snap[4600];
        snprintf(snap, sizeof snap, "%s/%s", snapshots, commit);
        if (stat(snap, &st) != 0 || !S_ISDIR(st.st_mode))
            return nx_err_set(err, NX_EFORMAT,
                              "'%s/refs/%s' names commit %s, but '%s' is missing", repo_dir,
                              name->rev, commit, snap);
        return NX_OK;
    }
    bool by_commit = name->rev_given && strlen(name->rev) >= 7 && is_hex(name->rev);
    bool newest = !name->rev_given;
    if (!by_commit && !newest)
        return nx_err_set(err, NX_ENOTFOUND, "no revision '%s' in '%s'", name->rev, repo_dir);
    DIR *d = opendir(snapshots);
    if (!d)
        return nx_err_set(err, NX_ENOTFOUND, "'%s' has no snapshots folder", repo_dir);
    size_t matches = 0;
    struct timespec best = {0, 0};
    commit[0] = '\0';
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= cap)
            continue;
        char snap[4600];
        if ((size_t)snprintf(snap, sizeof snap, "%s/%s", snapshots, e->d_name) >= sizeof snap ||
            stat(snap, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (by_commit) {
            if (strncmp(e->d_name, name->rev, strlen(name->rev)) != 0)
                continue;
            if (matches++ == 0)
                snprintf(commit, cap, "%s", e->d_name);
        } else if (matches++ == 0 || st.st_mtim.tv_sec > best.tv_sec ||
                   (st.st_mtim.tv_sec == best.tv_sec && st.st_mtim.tv_nsec > best.tv_nsec) ||
                   (st.st_mtim.tv_sec == best.tv_sec && st.st_mtim.tv_nsec == best.tv_nsec &&
                    strcmp(e->d_name, commit) > 0)) {
            best = st.st_mtim;
            snprintf(commit, cap, "%s", e->d_name);
        }
    }
    closedir(d);
    if (matches == 0)
        return nx_err_set(err, NX_ENOTFOUND,
                          by_commit ? "no snapshot of commit %s in '%s'"
                                    : "%s'%s' has no snapshot",
                          by_commit ? name->rev : "", repo_dir);
    if (by_commit && matches > 1)
        return nx_err_set(err, NX_EFORMAT,
                          "'%s' names %zu snapshots in '%s': give more digits of the commit",
                          name->rev, matches, snapshots);
    return NX_OK;
}

/* Look the hub name up in one root. NX_ENOTFOUND (with why in err) when it is not there. */
static int resolve_in_root(const char *root, const nx_ms_name_t *name, nx_ms_model_t *out,
                           nx_err_t *err)
{
    char *repo_dir = nx_ms_repo_dir(root, name->repo);
    if (!repo_dir)
        return nx_err_set(err, NX_ENOMEM, "no memory");
    struct stat st;
    int rc;
    if (stat(repo_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = nx_err_set(err, NX_ENOTFOUND, "no '%s'", repo_dir);
        goto out_free;
    }
    rc = pick_snapshot(repo_dir, name, out->commit, sizeof out->commit, err);
    if (rc != NX_OK)
        goto out_free;
    char snap[4800];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", repo_dir, out->commit);
    rc = nx_ms_snapshot_model(snap, &out->path, err);
    if (rc != NX_OK)
        goto out_free;
    out->repo_dir = repo_dir;
    return NX_OK;
out_free:
    free(repo_dir);
    out->commit[0] = '\0';
    return rc;
}

/* Paths: "./x", "../x", "/x", ".", "..", or a '/' name that is no hub name. */
static bool is_plain_path(const char *name)
{
    return name[0] == '/' || strncmp(name, "./", 2) == 0 || strncmp(name, "../", 3) == 0 ||
           strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
           (strchr(name, '/') && !nx_ms_parse_name(name, NULL));
}

static int resolve_path(const char *name, const char *base_dir, nx_ms_source_t source,
                        nx_ms_model_t *out, nx_err_t *err)
{
    char *cwd = NULL;
    if (!base_dir && name[0] != '/')
        base_dir = cwd = getcwd(NULL, 0);
    out->path = base_dir || name[0] == '/' ? nx__conf_abspath(base_dir ? base_dir : "/", name)
                                           : NULL;
    free(cwd);
    out->source = source;
    return out->path ? NX_OK : nx_err_set(err, NX_ENOMEM, "model '%s': no memory", name);
}

int nx_ms_resolve(const char *name, const char *models_dir, const char *base_dir,
                  nx_ms_model_t *out, nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!name || !*name)
        return nx_err_set(err, NX_EINVAL, "an empty model name");
    if (is_plain_path(name))
        return resolve_path(name, base_dir, NX_MS_PATH, out, err);
    nx_ms_name_t hub;
    if (!nx_ms_parse_name(name, &hub)) { /* a bare name: an entry of the models folder */
        if (!models_dir)
            return nx_err_set(err, NX_ENOTFOUND,
                              "model '%s': no models folder to look it up in (pass --models DIR "
                              "or --config FILE, or give a path)", name);
        return resolve_path(name, models_dir, NX_MS_FOLDER, out, err);
    }
    char **roots = NULL;
    size_t root_count = 0;
    if (nx_ms_hf_roots(&roots, &root_count) != NX_OK)
        return nx_err_set(err, NX_ENOMEM, "model '%s': no memory", name);
    char looked[700] = "";
    size_t used = 0;
    char why[300] = ""; /* a repo that was there, without the revision asked for */
    int rc = NX_ENOTFOUND;
    for (size_t i = 0; i <= root_count && rc == NX_ENOTFOUND; i++) {
        const char *root = i == 0 ? models_dir : roots[i - 1];
        if (!root)
            continue;
        nx_err_t e = {0};
        rc = resolve_in_root(root, &hub, out, &e);
        if (rc == NX_OK) {
            out->source = i == 0 ? NX_MS_PULLED : NX_MS_HF_CACHE;
        } else if (rc != NX_ENOTFOUND) {
            nx_err_set(err, rc, "model '%s': %s", name, e.msg);
        } else {
            if (i > 0 && used < sizeof looked)
                used += (size_t)snprintf(looked + used, sizeof looked - used, "%s%s",
                                         used ? ", " : "", root);
            if (!why[0] && strncmp(e.msg, "no '", 4) != 0)
                snprintf(why, sizeof why, "; %.280s", e.msg);
        }
    }
    nx_ms_free_roots(roots, root_count);
    if (rc != NX_ENOTFOUND)
        return rc;
    /* before hub names, "sub/dir" was a path relative to the agent file: still honoured */
    char *legacy = base_dir ? nx__conf_abspath(base_dir, name) : NULL;
    struct stat st;
    bool legacy_there = legacy && stat(legacy, &st) == 0;
    free(legacy);
    if (legacy_there)
        return resolve_path(name, base_dir, NX_MS_PATH, out, err);
    return nx_err_set(err, NX_ENOTFOUND,
                      "model '%s' not found in %s or the Hugging Face cache (%s)%s: run "
                      "`nexusctl pull %s`",
                      name, models_dir ? models_dir : "(no models folder)",
                      looked[0] ? looked : "no cache folder: HOME, HF_HOME, HF_HUB_CACHE unset",
                      why, name);
}
