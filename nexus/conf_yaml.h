/* conf_yaml.h — internal helpers behind conf.c: one YAML file read with libyaml's document API,
 * typed getters that check a node against what a field expects, and error messages of the form
 * "FILE:LINE:COL: field 'x.y': expected ..., got ...". Lines and columns are 1-based.
 *
 * Plain scalars are typed the way YAML 1.1 readers (PyYAML, so editors and the JSON Schemas)
 * see them: `true`/`yes`/`on` are booleans, `5` an integer, `0.5` a number, `~` or nothing a
 * null; a string field given one of those is an error ("quote it"), so C and the schemas agree.
 */
#ifndef NX_CONF_YAML_H
#define NX_CONF_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <yaml.h>

#include "nx_err.h"

#define NX__CONF_MAX_FILE_BYTES (4u << 20) /* a config is text; anything bigger is a mistake */
#define NX__CONF_MAX_DEPTH 64 /* lists and mappings inside each other, the top mapping included */

typedef struct nx__yfile {
    char *path;         /* as given, for messages */
    char *dir;          /* absolute folder of the file: relative paths resolve against it */
    char *bytes;        /* the file's contents (hashed by agent configs) */
    size_t len;
    yaml_document_t doc;
    bool have_doc;
} nx__yfile_t;

/* Read and parse `path` (one document). A syntax error is NX_EFORMAT with libyaml's problem
 * text at FILE:LINE:COL, and so is nesting deeper than NX__CONF_MAX_DEPTH (found before any
 * document is built); a missing file NX_ENOTFOUND; a FIFO, folder or device NX_EIO "not a
 * regular file" (never opened in a way that could block); an empty file NX_EFORMAT. On success
 * the root is a mapping. Call nx__yfile_close in every case. */
int nx__yfile_open(nx__yfile_t *f, const char *path, nx_err_t *err);
void nx__yfile_close(nx__yfile_t *f);
yaml_node_t *nx__yfile_root(nx__yfile_t *f);

/* NX_EFORMAT "FILE:LINE:COL: field 'FIELD': " + the formatted rest, at node's start. */
int nx__yerr(const nx__yfile_t *f, const yaml_node_t *node, const char *field, nx_err_t *err,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* "... expected EXPECTED, got <what the node is>". */
int nx__yexpect(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                const char *expected, nx_err_t *err);

/* Check that `map` is a mapping whose keys are all plain strings from `allowed` (NULL-ended),
 * none twice, and that every key in `required` (NULL-ended, may be NULL) is present. `prefix`
 * is the mapping's own field path ("" at the top). */
int nx__ymap_check(const nx__yfile_t *f, yaml_node_t *map, const char *prefix,
                   const char *const *allowed, const char *const *required, nx_err_t *err);
/* The value under `key` in a mapping, or NULL. */
yaml_node_t *nx__ymap_get(nx__yfile_t *f, yaml_node_t *map, const char *key);

/* Typed getters: NX_OK and *out, or NX_EFORMAT naming the field and what was expected. */
int nx__yget_string(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                    bool allow_empty, char **out, nx_err_t *err); /* *out malloc'ed */
int nx__yget_bool(const nx__yfile_t *f, const yaml_node_t *node, const char *field, bool *out,
                  nx_err_t *err);
int nx__yget_int(const nx__yfile_t *f, const yaml_node_t *node, const char *field, int64_t min,
                 int64_t max, int64_t *out, nx_err_t *err);
int nx__yget_u64(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                 uint64_t min, uint64_t max, uint64_t *out, nx_err_t *err);
/* A finite number (integer or decimal) in the range from min to max, each end open (excluded)
 * or closed; max = INFINITY for no upper bound. */
typedef struct nx__yrange {
    double min, max;
    bool min_open, max_open;
} nx__yrange_t;
int nx__yget_number(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                    nx__yrange_t range, double *out, nx_err_t *err);
/* Bytes: an integer >= min, or a string "8GiB" / "512MiB" / "1.5GB" / "100B" (K/M/G/T with
 * B = 1000s, iB = 1024s). With fraction_out non-NULL a percent "80%" in (0, 100] is allowed
 * too: *fraction_out = 0.8 and *bytes_out = 0 (otherwise *fraction_out = 0). */
int nx__yget_size(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                  uint64_t min, uint64_t max, uint64_t *bytes_out, double *fraction_out,
                  nx_err_t *err);
/* Seconds: an integer, or "30s" / "10m" / "1h" / "2d"; at most max_s. */
int nx__yget_duration(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                      uint64_t min_s, uint64_t max_s, uint64_t *seconds_out, nx_err_t *err);

/* A YAML subtree as JSON (scalars typed as above; a number must be decimal; keys strings,
 * none twice). NX_EFORMAT naming the field and the offending node. Caller owns *out. */
int nx__yget_json(nx__yfile_t *f, yaml_node_t *node, const char *field, json_t **out,
                  nx_err_t *err);

/* `rel` made absolute against `base_dir` and normalized ("." and ".." folded), without
 * touching the file system (the path may not exist yet). Caller frees; NULL on no memory. */
char *nx__conf_abspath(const char *base_dir, const char *rel);

/* ---- conf_agent.c: one agent file (shared by nx_agent_conf_load and nx_nexus_conf_load) ---- */
struct nx_agent_conf;

/* Where the fields the cross-file checks talk about were written. */
#define NX__AGENT_MAX_TOOLS 32 /* agents one agent may list under tools: */

typedef struct nx__agent_marks {
    yaml_mark_t name, model, next;
    yaml_mark_t tools[NX__AGENT_MAX_TOOLS]; /* each tools: entry */
} nx__agent_marks_t;

/* Parse and validate the agent in the open file `f` into *a (zeroed by the caller). A model
 * given by name resolves under models_dir, or stays unresolved (model_path NULL) when
 * models_dir is NULL; a model given as a path resolves against the file's folder. On error *a
 * may hold parts: nx__agent_clear it in every case. */
int nx__agent_parse(nx__yfile_t *f, const char *models_dir, struct nx_agent_conf *a,
                    nx__agent_marks_t *marks, nx_err_t *err);
void nx__agent_clear(struct nx_agent_conf *a);

#endif
