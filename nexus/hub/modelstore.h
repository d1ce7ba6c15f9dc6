/* modelstore.h — where models live and how a model name becomes a path.
 *
 * The store is the models folder (`models:` in nexus.yaml). `nexusctl pull` fills it in the
 * Hugging Face hub cache's layout, so either tool reads what the other fetched:
 *
 *   <models>/models--Org--Name/
 *       refs/<REV>                  the commit REV resolved to: 40 hex digits, no newline
 *       blobs/<ID>                  a file's bytes; ID is its LFS sha256 (64 hex) or, for a
 *                                   file kept in git, its git blob sha1 (40 hex)
 *       blobs/<ID>.incomplete       a download in progress: never part of a model
 *       snapshots/<COMMIT>/<FILE>   relative symlink to ../../blobs/<ID> (one more ../ per
 *                                   folder inside FILE); made only once the blob is complete
 *                                   and its checksum matched
 *
 * Names a model can be given by (an agent's `model:`, nexusctl run and friends):
 *   demo-qwen3            a folder or .gguf file in the models folder
 *   Org/Name[@REV]        a hub repository: the store first, then the user's Hugging Face cache
 *   ./x ../x /x           a path
 */
#ifndef NX_MODELSTORE_H
#define NX_MODELSTORE_H

#include <stdbool.h>
#include <stddef.h>

#include "nx_loader.h"

#define NX_MS_REPO_MAX 193 /* "Org/Name": each part at most 96 bytes, and the slash */
#define NX_MS_REV_MAX 128

/* A hub name split into its parts. */
typedef struct nx_ms_name {
    char repo[NX_MS_REPO_MAX + 1]; /* "Org/Name" */
    char rev[NX_MS_REV_MAX + 1];   /* "main" when the name gave none; a branch, tag or commit */
    bool rev_given;                /* the name had "@REV" */
} nx_ms_name_t;

/* True when `text` is a hub name "Org/Name" or "Org/Name@REV": Org and Name are 1-96 of
 * [A-Za-z0-9._-], start with a letter or digit, hold no "--" or ".." and do not end in '.';
 * REV is 1-128 of [A-Za-z0-9._/-] without "..". Fills *out when true (out may be NULL). */
bool nx_ms_parse_name(const char *text, nx_ms_name_t *out);

/* "<root>/models--Org--Name" for repo "Org/Name". Caller owns the result; NULL on no memory. */
char *nx_ms_repo_dir(const char *root, const char *repo);

/* The models folder nexusctl works on, absolute: `models_flag` (--models DIR) when given, else
 * $NEXUS_MODELS when set, else the `models:` of the nexus.yaml at `config_flag` (--config FILE)
 * or, with neither, of configs/nexus.yaml when that file exists (nexusd's default). NX_ENOTFOUND
 * with a sentence saying what to pass when none applies; the config's own errors as they come.
 * Caller owns *out. */
int nx_ms_models_dir(const char *models_flag, const char *config_flag, char **out,
                     nx_err_t *err);

/* Where a resolved model came from. */
typedef enum nx_ms_source {
    NX_MS_FOLDER,   /* a bare name: a folder or .gguf file in the models folder */
    NX_MS_PATH,     /* a path, as written */
    NX_MS_PULLED,   /* a hub name found in the store (the models folder) */
    NX_MS_HF_CACHE, /* a hub name found in the user's Hugging Face cache */
} nx_ms_source_t;

/* A name resolved to files. */
typedef struct nx_ms_model {
    char *path;            /* absolute: a folder (config.json) or a .gguf file; owned */
    char *repo_dir;        /* the models--Org--Name folder (pulled, hf-cache), else NULL; owned */
    nx_ms_source_t source;
    char commit[NX_MS_REV_MAX + 1]; /* the snapshot folder's name (pulled, hf-cache), else "" */
} nx_ms_model_t;

/* "folder", "path", "pulled", "hf-cache". */
const char *nx_ms_source_name(nx_ms_source_t source);

/* The Hugging Face cache folders a hub name is looked up in, in order, each once: $HF_HUB_CACHE,
 * $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, $HOME/.cache/huggingface/hub (those whose
 * variables are set; existing or not). Caller frees each string and the array; NX_ENOMEM. */
int nx_ms_hf_roots(char ***roots_out, size_t *count_out);
void nx_ms_free_roots(char **roots, size_t count);

/* `name` (an agent's `model:`, a nexusctl argument) to files:
 *   a bare name (no '/')      <models_dir>/name, source folder (its existence is not checked)
 *   ./x ../x /x, or a '/'     base_dir/x, source path (not checked either)
 *     name that is no hub name
 *   Org/Name[@REV]            the store (models_dir) first, then each nx_ms_hf_roots folder:
 *                             refs/REV names the commit, or REV is a commit (a hex prefix of
 *                             at least 7 digits matching one snapshot); without REV refs/main,
 *                             else the newest snapshot. A repo found but with no such revision
 *                             goes on to the next folder. In the snapshot: config.json -> the
 *                             folder, else its one .gguf file. When found nowhere but
 *                             base_dir/Org/Name exists, that path (what the name meant before
 *                             hub names). Otherwise NX_ENOTFOUND saying which folders were
 *                             looked in and to run `nexusctl pull NAME`.
 * A snapshot that is no model (dangling links to missing blobs, several .gguf files, neither
 * config.json nor .gguf) is NX_EFORMAT naming the snapshot. models_dir and base_dir may be NULL
 * (no models folder: bare names fail; no base: relative paths are taken as given). Caller
 * clears *out (nx_ms_model_clear) on success; it is zeroed on error. */
int nx_ms_resolve(const char *name, const char *models_dir, const char *base_dir,
                  nx_ms_model_t *out, nx_err_t *err);
void nx_ms_model_clear(nx_ms_model_t *model);

/* The snapshot folder name (commit) that name->rev picks in repo_dir, by nx_ms_resolve's rules,
 * whether or not it holds a whole model. NX_ENOTFOUND when there is none, NX_EFORMAT when a
 * commit prefix is ambiguous or a ref names a missing snapshot. */
int nx_ms_find_snapshot(const char *repo_dir, const nx_ms_name_t *name, char *commit,
                        size_t cap, nx_err_t *err);

/* The model in one snapshot folder (the rule of nx_ms_resolve). Caller owns *path_out. */
int nx_ms_snapshot_model(const char *snapshot_dir, char **path_out, nx_err_t *err);

#endif
