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

#include "nx_loader.h"

#define NX_MS_REPO_MAX 192 /* "Org/Name": each part at most 96 bytes */
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

#endif
