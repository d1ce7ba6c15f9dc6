/* ctl_store.c — `nexusctl model list` and `nexusctl rm`: the models a `model:` can name (the
 * models folder's entries, the snapshots pulled into it, the user's Hugging Face cache) and
 * removing a pulled one. Offline: neither talks to nexusd; the layout is modelstore.h's. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "conf.h"
#include "ctl.h"
#include "modelstore.h"

#define COMMIT_SHOWN 12 /* digits of a commit in tables; JSON has all */

/* "a/b" into out; false (out truncated) when it does not fit. */
static bool join_path(char *out, size_t cap, const char *a, const char *b)
{
    return (size_t)snprintf(out, cap, "%s/%s", a, b) < cap;
}

/* ---- sizes --------------------------------------------------------------------------------- */

/* Inodes already counted: a blob two snapshot links share is counted once. */
typedef struct seen {
    struct {
        dev_t dev;
        ino_t ino;
    } *v;
    size_t n, cap;
} seen_t;

static bool seen_add(seen_t *s, const struct stat *st)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].dev == st->st_dev && s->v[i].ino == st->st_ino)
            return false;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 32;
        void *v = realloc(s->v, cap * sizeof *s->v);
        if (!v)
            return true; /* counted twice rather than not at all */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].dev = st->st_dev;
    s->v[s->n++].ino = st->st_ino;
    return true;
}

/* Bytes of the files at `path` (a file, or a folder up to `depth` levels), through links. */
static uint64_t sum_bytes(const char *path, int depth, seen_t *seen)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (S_ISREG(st.st_mode))
        return seen_add(seen, &st) ? (uint64_t)st.st_size : 0;
    if (!S_ISDIR(st.st_mode) || depth == 0)
        return 0;
    DIR *d = opendir(path);
    uint64_t total = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char child[PATH_MAX];
        if ((size_t)snprintf(child, sizeof child, "%s/%s", path, e->d_name) < sizeof child)
            total += sum_bytes(child, depth - 1, seen);
    }
    if (d)
        closedir(d);
    return total;
}

static uint64_t model_bytes(const char *path)
{
    seen_t seen = {0};
    uint64_t bytes = sum_bytes(path, 4, &seen);
    free(seen.v);
    return bytes;
}

/* ---- rows ---------------------------------------------------------------------------------- */

typedef struct row {
    char name[NX_MS_REPO_MAX + NX_MS_REV_MAX + 2]; /* what to write in `model:` */
    uint64_t bytes;
    nx_ms_source_t source;
    char revs[256];                  /* refs naming the snapshot, "main,v2"; "" for none */
    char commit[NX_MS_REV_MAX + 1];  /* the snapshot, "" for a plain entry */
    char path[PATH_MAX];
} row_t;

typedef struct rows {
    row_t *v;
    size_t n, cap;
} rows_t;

static row_t *row_add(rows_t *rows)
{
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? 2 * rows->cap : 16;
        row_t *v = realloc(rows->v, cap * sizeof *v);
        if (!v)
            return NULL;
        rows->v = v;
        rows->cap = cap;
    }
    row_t *r = &rows->v[rows->n++];
    memset(r, 0, sizeof *r);
    return r;
}

/* "models--Org--Name" -> "Org/Name"; false for anything else. */
static bool repo_of_dir(const char *dir_name, char *repo, size_t cap)
{
    if (strncmp(dir_name, "models--", 8) != 0)
        return false;
    const char *org = dir_name + 8;
    const char *sep = strstr(org, "--");
    if (!sep || (size_t)snprintf(repo, cap, "%.*s/%s", (int)(sep - org), org, sep + 2) >= cap)
        return false;
    nx_ms_name_t name;
    return nx_ms_parse_name(repo, &name) && !name.rev_given;
}

/* Refs under refs_dir (relative names, "pr/1" too) whose commit is `commit`, comma-joined. */
static void refs_naming(const char *refs_dir, const char *prefix, const char *commit, char *out,
                        size_t cap, int depth)
{
    DIR *d = opendir(refs_dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX], rel[NX_MS_REV_MAX + 1];
        struct stat st;
        if (!join_path(path, sizeof path, refs_dir, e->d_name) ||
            (size_t)snprintf(rel, sizeof rel, "%s%s", prefix, e->d_name) >= sizeof rel ||
            stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth > 0) {
            char sub[NX_MS_REV_MAX + 2];
            if ((size_t)snprintf(sub, sizeof sub, "%s/", rel) < sizeof sub)
                refs_naming(path, sub, commit, out, cap, depth - 1);
            continue;
        }
        char text[NX_MS_REV_MAX + 2] = "";
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
        if (f)
            fclose(f);
        text[n] = '\0';
        text[strcspn(text, "\r\n ")] = '\0';
        size_t used = strlen(out);
        if (strcmp(text, commit) == 0 && used < cap)
            snprintf(out + used, cap - used, "%s%s", used ? "," : "", rel);
    }
    if (d)
        closedir(d);
}

/* The first of Org/Name, Org/Name@REF..., Org/Name@COMMIT that resolves to `path` (a name the
 * store shadows for a cache snapshot resolves elsewhere); false when none does. */
static bool name_for(const char *repo, const char *revs, const char *commit, const char *path,
                     const char *models_dir, char *out, size_t cap)
{
    char candidates[8][NX_MS_REPO_MAX + NX_MS_REV_MAX + 2];
    size_t n = 0;
    snprintf(candidates[n++], sizeof candidates[0], "%s", repo);
    char copy[256];
    snprintf(copy, sizeof copy, "%s", revs);
    char *save = NULL;
    for (char *ref = strtok_r(copy, ",", &save); ref && n < 7; ref = strtok_r(NULL, ",", &save))
        if (strcmp(ref, "main") != 0)
            snprintf(candidates[n++], sizeof candidates[0], "%s@%s", repo, ref);
    snprintf(candidates[n++], sizeof candidates[0], "%s@%.*s", repo,
             strlen(commit) > COMMIT_SHOWN ? COMMIT_SHOWN : (int)strlen(commit), commit);
    snprintf(candidates[n++], sizeof candidates[0], "%s@%s", repo, commit);
    for (size_t i = 0; i < n; i++) {
        nx_ms_model_t m;
        if (nx_ms_resolve(candidates[i], models_dir, NULL, &m, NULL) != NX_OK)
            continue;
        bool same = strcmp(m.path, path) == 0;
        nx_ms_model_clear(&m);
        if (same)
            return (size_t)snprintf(out, cap, "%s", candidates[i]) < cap;
    }
    return false;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Every snapshot of one repo folder that holds a model; the others are named on stderr. */
static void list_repo(const char *root, const char *dir_name, nx_ms_source_t source,
                      const char *models_dir, rows_t *rows)
{
    char repo[NX_MS_REPO_MAX + 1], snapshots[PATH_MAX], refs[PATH_MAX];
    if (!repo_of_dir(dir_name, repo, sizeof repo))
        return;
    snprintf(snapshots, sizeof snapshots, "%s/%s/snapshots", root, dir_name);
    snprintf(refs, sizeof refs, "%s/%s/refs", root, dir_name);
    struct dirent **list = NULL;
    int count = scandir(snapshots, &list, NULL, by_name);
    for (int i = 0; i < count; i++) {
        const char *commit = list[i]->d_name;
        char snap[PATH_MAX];
        struct stat st;
        char *path = NULL;
        nx_err_t err = {0};
        if (commit[0] == '.' || strlen(commit) > NX_MS_REV_MAX ||
            !join_path(snap, sizeof snap, snapshots, commit) || stat(snap, &st) != 0 ||
            !S_ISDIR(st.st_mode))
            goto next;
        if (nx_ms_snapshot_model(snap, &path, &err) != NX_OK) {
            fprintf(stderr, "nexusctl model list: skipped %s@%s: %s\n", repo, commit, err.msg);
            goto next;
        }
        row_t r = {.source = source};
        snprintf(r.commit, sizeof r.commit, "%s", commit);
        snprintf(r.path, sizeof r.path, "%s", path);
        refs_naming(refs, "", commit, r.revs, sizeof r.revs, 2);
        if (name_for(repo, r.revs, commit, path, models_dir, r.name, sizeof r.name)) {
            r.bytes = model_bytes(path);
            row_t *slot = row_add(rows);
            if (slot)
                *slot = r;
        }
    next:
        free(path);
        free(list[i]);
    }
    free(list);
}

/* The models folder: plain folders with config.json, .gguf files, pulled repos. */
static void list_models_dir(const char *models_dir, rows_t *rows)
{
    struct dirent **list = NULL;
    int count = scandir(models_dir, &list, NULL, by_name);
    for (int i = 0; i < count; i++) {
        const char *entry = list[i]->d_name;
        char path[PATH_MAX], config[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/%s", models_dir, entry);
        snprintf(config, sizeof config, "%s/config.json", path);
        size_t len = strlen(entry);
        struct stat st;
        if (entry[0] == '.' || stat(path, &st) != 0) {
            /* hidden (a removal under way) or a dangling link */
        } else if (S_ISDIR(st.st_mode) && strncmp(entry, "models--", 8) == 0) {
            list_repo(models_dir, entry, NX_MS_PULLED, models_dir, rows);
        } else if ((S_ISDIR(st.st_mode) && access(config, R_OK) == 0) ||
                   (S_ISREG(st.st_mode) && len > 5 && strcmp(entry + len - 5, ".gguf") == 0)) {
            row_t *r = row_add(rows);
            if (r) {
                snprintf(r->name, sizeof r->name, "%s", entry);
                snprintf(r->path, sizeof r->path, "%s", path);
                r->source = NX_MS_FOLDER;
                r->bytes = model_bytes(path);
            }
        }
        free(list[i]);
    }
    free(list);
}

static void list_hf_root(const char *root, const char *models_dir, rows_t *rows)
{
    struct dirent **list = NULL;
    int count = scandir(root, &list, NULL, by_name);
    for (int i = 0; i < count; i++) {
        if (strncmp(list[i]->d_name, "models--", 8) == 0)
            list_repo(root, list[i]->d_name, NX_MS_HF_CACHE, models_dir, rows);
        free(list[i]);
    }
    free(list);
}

static void print_rows_json(const rows_t *rows, const char *models_dir, char **roots,
                            size_t root_count)
{
    json_t *out = json_object(), *models = json_array(), *hf = json_array();
    for (size_t i = 0; i < root_count; i++)
        json_array_append_new(hf, json_string(roots[i]));
    for (size_t i = 0; i < rows->n; i++) {
        const row_t *r = &rows->v[i];
        json_t *revs = json_array();
        char copy[256];
        snprintf(copy, sizeof copy, "%s", r->revs);
        char *save = NULL;
        for (char *ref = strtok_r(copy, ",", &save); ref; ref = strtok_r(NULL, ",", &save))
            json_array_append_new(revs, json_string(ref));
        json_array_append_new(
            models, json_pack("{s:s, s:I, s:s, s:o, s:s?, s:s}", "name", r->name, "bytes",
                              (json_int_t)r->bytes, "source", nx_ms_source_name(r->source),
                              "revs", revs, "commit", r->commit[0] ? r->commit : NULL, "path",
                              r->path));
    }
    json_object_set_new(out, "models_dir", models_dir ? json_string(models_dir) : json_null());
    json_object_set_new(out, "hf_cache", hf);
    json_object_set_new(out, "models", models);
    json_dumpf(out, stdout, JSON_INDENT(1));
    printf("\n");
    json_decref(out);
}

static void print_rows(const rows_t *rows)
{
    enum { COLS = 6 };
    static const char *const head[COLS] = {"NAME", "SIZE", "SOURCE", "REV", "COMMIT", "PATH"};
    size_t width[COLS];
    for (size_t c = 0; c < COLS; c++)
        width[c] = strlen(head[c]);
    char (*cells)[COLS][PATH_MAX] = calloc(rows->n + 1, sizeof *cells);
    if (!cells)
        return;
    for (size_t c = 0; c < COLS; c++)
        snprintf(cells[0][c], PATH_MAX, "%s", head[c]);
    for (size_t i = 0; i < rows->n; i++) {
        const row_t *r = &rows->v[i];
        char(*row)[PATH_MAX] = cells[i + 1];
        snprintf(row[0], PATH_MAX, "%s", r->name);
        nx_cli_format_bytes(r->bytes, row[1], PATH_MAX);
        snprintf(row[2], PATH_MAX, "%s", nx_ms_source_name(r->source));
        snprintf(row[3], PATH_MAX, "%s", r->revs[0] ? r->revs : "-");
        snprintf(row[4], PATH_MAX, "%.*s", COMMIT_SHOWN, r->commit[0] ? r->commit : "-");
        snprintf(row[5], PATH_MAX, "%s", r->path);
        for (size_t c = 0; c < COLS; c++)
            width[c] = strlen(row[c]) > width[c] ? strlen(row[c]) : width[c];
    }
    for (size_t i = 0; i <= rows->n; i++)
        for (size_t c = 0; c < COLS; c++)
            printf(c + 1 < COLS ? "%-*s  " : "%-.*s\n", (int)width[c], cells[i][c]);
    free(cells);
}

int nx_ctl_model_list(int argc, char **argv)
{
    nx_ctl_store_opts_t opts = {0};
    bool json = false;
    if (nx_ctl_store_opts_take("model list", &argc, argv, &opts) != NX_CTL_EXIT_OK)
        return NX_CTL_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "nexusctl model list: unexpected '%s'\nusage: nexusctl model list "
                    "[--models DIR | --config FILE] [--json]\n", argv[i]);
            return NX_CTL_EXIT_USAGE;
        }
    }
    nx_err_t err = {0};
    char *models_dir = NULL;
    if (nx_ctl_models_dir(&opts, false, &models_dir, &err) != NX_OK) {
        fprintf(stderr, "nexusctl model list: %s\n", err.msg);
        return NX_CTL_EXIT_FAIL;
    }
    if (!models_dir)
        fprintf(stderr, "nexusctl model list: no models folder (pass --models DIR or --config "
                "FILE): listing the Hugging Face cache only\n");
    char **roots = NULL;
    size_t root_count = 0;
    rows_t rows = {0};
    if (nx_ms_hf_roots(&roots, &root_count) != NX_OK) {
        fprintf(stderr, "nexusctl model list: no memory\n");
        free(models_dir);
        return NX_CTL_EXIT_FAIL;
    }
    struct stat st;
    if (models_dir && stat(models_dir, &st) != 0)
        fprintf(stderr, "nexusctl model list: the models folder %s does not exist\n",
                models_dir);
    else if (models_dir)
        list_models_dir(models_dir, &rows);
    for (size_t i = 0; i < root_count; i++)
        list_hf_root(roots[i], models_dir, &rows);
    if (json)
        print_rows_json(&rows, models_dir, roots, root_count);
    else
        print_rows(&rows);
    free(rows.v);
    nx_ms_free_roots(roots, root_count);
    free(models_dir);
    return NX_CTL_EXIT_OK;
}

/* ---- rm ------------------------------------------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Rename `path` to a hidden name beside it, then delete that: a crash part way leaves a
 * hidden folder nothing resolves, never half a model. */
static int remove_tree(const char *path, nx_err_t *err)
{
    char hidden[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash || (size_t)snprintf(hidden, sizeof hidden, "%.*s/.%s.removing-%ld",
                                   (int)(slash - path), path, slash + 1,
                                   (long)getpid()) >= sizeof hidden)
        return nx_err_set(err, NX_EINVAL, "'%s': path too long", path);
    if (rename(path, hidden) != 0)
        return nx_err_set(err, NX_EIO, "cannot rename '%s' to '%s': %s", path, hidden,
                          strerror(errno));
    if (nftw(hidden, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return nx_err_set(err, NX_EIO, "'%s' (renamed from '%s') could not all be removed: %s",
                          hidden, path, strerror(errno));
    return NX_OK;
}

/* `path` with every link in its folders resolved (the file itself kept: a .gguf in a snapshot
 * is a link to its blob, and the snapshot is what tells whose it is). */
static char *canonical(const char *path)
{
    char *real = realpath(path, NULL);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        free(real);
        char *copy = strdup(path);
        char *slash = copy ? strrchr(copy, '/') : NULL;
        if (!slash || slash == copy) {
            free(copy);
            return NULL;
        }
        *slash = '\0';
        char *dir = realpath(copy, NULL);
        size_t n = dir ? strlen(dir) + strlen(slash + 1) + 2 : 0;
        real = dir ? malloc(n) : NULL;
        if (real)
            snprintf(real, n, "%s/%s", dir, slash + 1);
        free(dir);
        free(copy);
    }
    return real;
}

static bool path_within(const char *path, const char *dir)
{
    char *p = canonical(path), *d = realpath(dir, NULL);
    size_t n = d ? strlen(d) : 0;
    bool within = p && d && strncmp(p, d, n) == 0 && (p[n] == '/' || p[n] == '\0');
    free(p);
    free(d);
    return within;
}

/* The agents whose model lies under `dir`, comma-joined into out; NX_OK or why the
 * configuration could not be read (then nothing is known). */
static int agents_using(const nx_ctl_store_opts_t *opts, const char *dir, char *out, size_t cap,
                        nx_err_t *err)
{
    out[0] = '\0';
    struct stat st;
    const char *config = opts->config ? opts->config
                         : stat("configs/nexus.yaml", &st) == 0 ? "configs/nexus.yaml"
                                                                : NULL;
    if (!config)
        return nx_err_set(err, NX_ENOTFOUND, "no nexus.yaml to read the agents from (pass "
                          "--config FILE)");
    nx_nexus_conf_t *conf = NULL;
    int rc = nx_nexus_conf_load(config, &conf, err);
    if (rc != NX_OK)
        return rc;
    size_t used = 0;
    for (size_t i = 0; i < conf->agent_count; i++) {
        const nx_agent_conf_t *a = &conf->agents[i];
        if (a->model_path && path_within(a->model_path, dir) && used < cap)
            used += (size_t)snprintf(out + used, cap - used, "%s%s (%s)", used ? ", " : "",
                                     a->name, a->source_path);
    }
    nx_nexus_conf_free(&conf);
    return NX_OK;
}

/* Blob IDs the snapshots of repo_dir link to (the link's last part), newline-joined. */
static char *linked_blobs(const char *repo_dir)
{
    char snapshots[PATH_MAX];
    snprintf(snapshots, sizeof snapshots, "%s/snapshots", repo_dir);
    size_t cap = 4096, used = 0;
    char *out = calloc(1, cap);
    DIR *d = opendir(snapshots);
    for (struct dirent *e; out && d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char snap[PATH_MAX];
        DIR *s = join_path(snap, sizeof snap, snapshots, e->d_name) ? opendir(snap) : NULL;
        for (struct dirent *f; out && s && (f = readdir(s));) {
            char link[PATH_MAX], target[PATH_MAX];
            ssize_t n = join_path(link, sizeof link, snap, f->d_name)
                            ? readlink(link, target, sizeof target - 1)
                            : -1;
            if (n <= 0)
                continue;
            target[n] = '\0';
            const char *id = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
            if (used + strlen(id) + 3 > cap) {
                char *grown = realloc(out, cap * 2);
                if (!grown) {
                    free(out);
                    out = NULL;
                    break;
                }
                out = grown;
                cap *= 2;
            }
            used += (size_t)snprintf(out + used, cap - used, "\n%s\n", id) - 1;
        }
        if (s)
            closedir(s);
    }
    if (d)
        closedir(d);
    return out;
}

/* Refs naming `commit` are deleted first (a ref to a missing snapshot is an error), then the
 * snapshot, then the blobs no other snapshot links to; the repo goes when nothing is left. */
static int remove_snapshot(const char *repo_dir, const char *commit, uint64_t *freed,
                           size_t *blobs_removed, bool *repo_removed, nx_err_t *err)
{
    char refs_dir[PATH_MAX], revs[256] = "", snap[PATH_MAX];
    snprintf(refs_dir, sizeof refs_dir, "%s/refs", repo_dir);
    refs_naming(refs_dir, "", commit, revs, sizeof revs, 2);
    char *save = NULL;
    for (char *ref = strtok_r(revs, ",", &save); ref; ref = strtok_r(NULL, ",", &save)) {
        char path[PATH_MAX];
        if (!join_path(path, sizeof path, refs_dir, ref) || unlink(path) != 0)
            return nx_err_set(err, NX_EIO, "cannot remove '%s': %s", path, strerror(errno));
    }
    snprintf(snap, sizeof snap, "%s/snapshots/%s", repo_dir, commit);
    char *before = linked_blobs(repo_dir);
    int rc = remove_tree(snap, err);
    char *after = rc == NX_OK ? linked_blobs(repo_dir) : NULL;
    if (rc == NX_OK && (!before || !after))
        rc = nx_err_set(err, NX_ENOMEM, "no memory");
    /* blobs the removed snapshot linked to that no snapshot left links to */
    for (char *line = before; rc == NX_OK && line && (line = strchr(line, '\n'));) {
        char *end = strchr(line + 1, '\n');
        if (!end)
            break;
        *end = '\0';
        const char *id = line + 1;
        char needle[PATH_MAX];
        snprintf(needle, sizeof needle, "\n%s\n", id);
        char blob[PATH_MAX];
        struct stat st;
        snprintf(blob, sizeof blob, "%s/blobs/%s", repo_dir, id);
        if (*id && !strstr(after, needle) && lstat(blob, &st) == 0) {
            if (unlink(blob) != 0) {
                rc = nx_err_set(err, NX_EIO, "cannot remove '%s': %s", blob, strerror(errno));
            } else {
                *freed += (uint64_t)st.st_size;
                (*blobs_removed)++;
            }
        }
        *end = '\n';
        line = end;
    }
    free(before);
    free(after);
    char snapshots[PATH_MAX];
    snprintf(snapshots, sizeof snapshots, "%s/snapshots", repo_dir);
    struct dirent **list = NULL;
    int left = rc == NX_OK ? scandir(snapshots, &list, NULL, NULL) : -1;
    int visible = 0;
    for (int i = 0; i < left; i++) {
        visible += list[i]->d_name[0] != '.';
        free(list[i]);
    }
    free(list);
    if (left >= 0 && visible == 0) {
        *freed += model_bytes(repo_dir); /* blobs no snapshot used (a stopped pull's) */
        rc = remove_tree(repo_dir, err);
        *repo_removed = rc == NX_OK;
    }
    return rc;
}

static const char rm_usage[] =
    "usage: nexusctl rm Org/Name[@REV] [--force] [--models DIR | --config FILE] [--json]\n";

/* Refusals and failures: the message, exit 1. */
static int rm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int rm_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "nexusctl rm: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return NX_CTL_EXIT_FAIL;
}

/* Why `text` names nothing nexusctl rm may remove: a folder model, one in the user's cache. */
static int rm_refuse_unpulled(const char *text, const nx_ms_name_t *hub, bool is_hub,
                              const char *models_dir)
{
    nx_ms_model_t m;
    nx_err_t err = {0};
    int rc = nx_ms_resolve(text, models_dir, NULL, &m, &err);
    struct stat st;
    if (!is_hub && rc == NX_OK && m.source == NX_MS_FOLDER && stat(m.path, &st) == 0) {
        rc = rm_fail("'%s' is a model you put in the models folder (%s), not a pulled one: "
                     "delete it by hand", text, m.path);
    } else if (!is_hub) {
        rc = rm_fail("'%s' is not the name of a pulled model (Org/Name or Org/Name@REV)", text);
    } else if (rc == NX_OK && m.source == NX_MS_HF_CACHE) {
        rc = rm_fail("model '%s' is in the Hugging Face cache (%s), which is yours, not "
                     "nexus's: nexusctl rm removes only what `nexusctl pull` put in %s", text,
                     m.repo_dir, models_dir);
    } else {
        rc = rm_fail("model '%s' is not in the store %s (`nexusctl model list` shows what is)",
                     hub->repo, models_dir);
    }
    if (m.path)
        nx_ms_model_clear(&m);
    return rc;
}

int nx_ctl_rm(int argc, char **argv)
{
    nx_ctl_store_opts_t opts = {0};
    bool json = false, force = false;
    const char *text = NULL;
    if (nx_ctl_store_opts_take("rm", &argc, argv, &opts) != NX_CTL_EXIT_OK)
        return NX_CTL_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--force") == 0) {
            force = true;
        } else if (argv[i][0] == '-' || text) {
            fprintf(stderr, "nexusctl rm: unexpected '%s'\n%s", argv[i], rm_usage);
            return NX_CTL_EXIT_USAGE;
        } else {
            text = argv[i];
        }
    }
    if (!text) {
        fprintf(stderr, "nexusctl rm: which model?\n%s", rm_usage);
        return NX_CTL_EXIT_USAGE;
    }
    nx_err_t err = {0};
    char *models_dir = NULL, *repo_dir = NULL;
    nx_ms_name_t hub;
    bool is_hub = nx_ms_parse_name(text, &hub);
    int code = NX_CTL_EXIT_FAIL;
    struct stat st;
    if (nx_ctl_models_dir(&opts, true, &models_dir, &err) != NX_OK) {
        rm_fail("%s", err.msg);
        goto out;
    }
    if (is_hub && !(repo_dir = nx_ms_repo_dir(models_dir, hub.repo))) {
        rm_fail("no memory");
        goto out;
    }
    if (!is_hub || stat(repo_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        code = rm_refuse_unpulled(text, &hub, is_hub, models_dir);
        goto out;
    }
    char commit[NX_MS_REV_MAX + 1] = "", target[PATH_MAX];
    if (hub.rev_given && nx_ms_find_snapshot(repo_dir, &hub, commit, sizeof commit, &err) != NX_OK) {
        rm_fail("model '%s': %s", text, err.msg);
        goto out;
    }
    snprintf(target, sizeof target, commit[0] ? "%s/snapshots/%s" : "%s", repo_dir, commit);
    char users[1024];
    if (!force && agents_using(&opts, target, users, sizeof users, &err) != NX_OK) {
        rm_fail("cannot tell whether an agent uses '%s': %s; pass --force to remove it anyway",
                text, err.msg);
        goto out;
    }
    if (!force && users[0]) {
        rm_fail("model '%s' is used by %s: change their `model:` first, or pass --force", text,
                users);
        goto out;
    }
    uint64_t freed = 0;
    size_t blob_count = 0;
    bool repo_removed = !commit[0];
    int rc;
    if (commit[0]) {
        rc = remove_snapshot(repo_dir, commit, &freed, &blob_count, &repo_removed, &err);
    } else {
        freed = model_bytes(repo_dir);
        rc = remove_tree(repo_dir, &err);
    }
    if (rc != NX_OK) {
        rm_fail("model '%s': %s", text, err.msg);
        goto out;
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s?, s:I, s:b}", "removed", text, "path",
                              commit[0] && !repo_removed ? target : repo_dir, "commit",
                              commit[0] ? commit : NULL, "bytes_freed", (json_int_t)freed,
                              "repo_removed", repo_removed);
        json_dumpf(o, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(o);
    } else {
        char size[32];
        nx_cli_format_bytes(freed, size, sizeof size);
        printf("removed %s%s%s (%s freed): %s\n", hub.repo, commit[0] ? " snapshot " : "",
               commit, size, commit[0] && !repo_removed ? target : repo_dir);
    }
    code = NX_CTL_EXIT_OK;
out:
    free(repo_dir);
    free(models_dir);
    return code;
}
