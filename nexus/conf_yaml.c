/* conf_yaml.c — reading one YAML config file with libyaml's document API and checking its nodes
 * against what each field expects, with errors naming FILE:LINE:COL (1-based) and the field.
 *
 * Plain scalars are typed as YAML 1.1 (PyYAML) types them, with POSIX regular expressions taken
 * from the YAML 1.1 type definitions, so a value the JSON Schemas reject is rejected here too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf_yaml.h"

/* ---- scalar typing ---------------------------------------------------------------------------- */

enum { RE_NULL, RE_BOOL, RE_INT, RE_FLOAT, RE_DEC_INT, RE_DEC_FLOAT, RE_SIZE, RE_PERCENT,
       RE_DURATION, RE_COUNT };

static const char *const re_text[RE_COUNT] = {
    [RE_NULL] = "^(~|null|Null|NULL|)$",
    [RE_BOOL] = "^(yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
    [RE_INT] = "^([-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
               "|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+)$",
    [RE_FLOAT] = "^([-+]?[0-9][0-9_]*\\.[0-9_]*([eE][-+][0-9]+)?|\\.[0-9_]+([eE][-+][0-9]+)?"
                 "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(inf|Inf|INF)"
                 "|\\.(nan|NaN|NAN))$",
    /* the forms this reader turns into numbers (a subset of the two above) */
    [RE_DEC_INT] = "^[-+]?(0|[1-9][0-9]*)$",
    [RE_DEC_FLOAT] = "^[-+]?([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][-+][0-9]+)?$",
    [RE_SIZE] = "^([0-9]+)(\\.([0-9]+))? ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
    [RE_PERCENT] = "^([0-9]+)(\\.[0-9]+)?%$",
    [RE_DURATION] = "^([0-9]+)(s|m|h|d)$",
};

static regex_t re_compiled[RE_COUNT];
static bool re_ok;
static pthread_once_t re_once = PTHREAD_ONCE_INIT;

static void re_init(void)
{
    for (int i = 0; i < RE_COUNT; i++)
        if (regcomp(&re_compiled[i], re_text[i], REG_EXTENDED) != 0)
            return; /* a programmer error in the table; rx_match then says no to everything */
    re_ok = true;
}

static bool rx_match(int which, const char *text, size_t nmatch, regmatch_t *m)
{
    pthread_once(&re_once, re_init);
    return re_ok && regexec(&re_compiled[which], text, nmatch, m, 0) == 0;
}

typedef enum { Y_STR, Y_NULL, Y_BOOL, Y_INT, Y_FLOAT } ykind_t;

static const char *scalar_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* How a YAML 1.1 reader types this scalar: quoted and block scalars are always strings. */
static ykind_t scalar_kind(const yaml_node_t *n)
{
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return Y_STR;
    const char *t = scalar_text(n);
    if (rx_match(RE_NULL, t, 0, NULL))
        return Y_NULL;
    if (rx_match(RE_BOOL, t, 0, NULL))
        return Y_BOOL;
    if (rx_match(RE_INT, t, 0, NULL))
        return Y_INT;
    if (rx_match(RE_FLOAT, t, 0, NULL))
        return Y_FLOAT;
    return Y_STR;
}

static bool is_str(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && scalar_kind(n) == Y_STR &&
           strlen(scalar_text(n)) == n->data.scalar.length; /* no NUL inside */
}

/* ---- errors ------------------------------------------------------------------------------------ */

static int mark_error(const char *path, yaml_mark_t mark, const char *field, nx_err_t *err,
                      const char *fmt, va_list ap)
{
    char rest[768];
    vsnprintf(rest, sizeof rest, fmt, ap);
    if (field && field[0])
        return nx_err_set(err, NX_EFORMAT, "%s:%zu:%zu: field '%s': %s", path, mark.line + 1,
                          mark.column + 1, field, rest);
    return nx_err_set(err, NX_EFORMAT, "%s:%zu:%zu: %s", path, mark.line + 1, mark.column + 1,
                      rest);
}

int nx__yerr(const nx__yfile_t *f, const yaml_node_t *node, const char *field, nx_err_t *err,
             const char *fmt, ...)
{
    yaml_mark_t at = node ? node->start_mark : (yaml_mark_t){0};
    va_list ap;
    va_start(ap, fmt);
    int rc = mark_error(f->path, at, field, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* What a node is, for "got ...": 'hot', the boolean 'yes', nothing (null), a mapping, a list. */
static void describe(const yaml_node_t *n, char *out, size_t cap)
{
    if (n->type == YAML_MAPPING_NODE) {
        snprintf(out, cap, "a mapping");
        return;
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        snprintf(out, cap, "a list");
        return;
    }
    char t[64]; /* the first 60 bytes, control characters shown as spaces: one-line messages */
    snprintf(t, 61, "%s", scalar_text(n));
    for (char *c = t; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    const char *ellipsis = strlen(scalar_text(n)) > 60 ? "..." : "";
    switch (scalar_kind(n)) {
    case Y_NULL:
        snprintf(out, cap, "nothing (null)");
        break;
    case Y_BOOL:
        snprintf(out, cap, "the boolean '%s'", t);
        break;
    case Y_INT:
    case Y_FLOAT:
        snprintf(out, cap, "the number '%s%s'", t, ellipsis);
        break;
    default:
        snprintf(out, cap, "'%s%s'", t, ellipsis);
    }
}

int nx__yexpect(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                const char *expected, nx_err_t *err)
{
    char got[96];
    describe(node, got, sizeof got);
    const char *hint = "";
    if (node->type == YAML_SCALAR_NODE && scalar_kind(node) != Y_STR &&
        strstr(expected, "string"))
        hint = " (quote it to make it a string)";
    return nx__yerr(f, node, field, err, "expected %s, got %s%s", expected, got, hint);
}

/* ---- the file ---------------------------------------------------------------------------------- */

/* What kind of thing a non-regular file is, for "not a regular file (a FIFO)". */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a folder";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    return "not a file";
}

static int not_regular(const nx__yfile_t *f, mode_t mode, nx_err_t *err)
{
    return nx_err_set(err, NX_EIO, "%s: not a regular file (%s); a config file must be one",
                      f->path, file_kind(mode));
}

/* Read the whole file. Only regular files are read: opening a FIFO for reading waits for a
 * writer forever, and a device never ends. stat() refuses them before open() (a symbolic link
 * is followed: what counts is what it points at, so no O_NOFOLLOW); O_NONBLOCK makes open()
 * return at once should the path become a FIFO between the two calls, and fstat() on the
 * descriptor then refuses what was really opened. */
static int read_all(nx__yfile_t *f, nx_err_t *err)
{
    struct stat st;
    if (stat(f->path, &st) != 0)
        return nx_err_set(err, errno == ENOENT ? NX_ENOTFOUND : NX_EIO, "%s: cannot open: %s",
                          f->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return not_regular(f, st.st_mode, err);
    int fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return nx_err_set(err, errno == ENOENT ? NX_ENOTFOUND : NX_EIO, "%s: cannot open: %s",
                          f->path, strerror(errno));
    int rc = NX_OK;
    if (fstat(fd, &st) != 0) {
        rc = nx_err_set(err, NX_EIO, "%s: cannot stat: %s", f->path, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = not_regular(f, st.st_mode, err);
        goto out_close;
    }
    if ((uint64_t)st.st_size > NX__CONF_MAX_FILE_BYTES) {
        rc = nx_err_set(err, NX_EFORMAT, "%s: %lld bytes is too big for a config file (at most %u)",
                        f->path, (long long)st.st_size, NX__CONF_MAX_FILE_BYTES);
        goto out_close;
    }
    f->bytes = malloc((size_t)st.st_size + 1);
    if (!f->bytes) {
        rc = nx_err_set(err, NX_ENOMEM, "%s: no memory to read it", f->path);
        goto out_close;
    }
    f->len = 0;
    while (f->len < (size_t)st.st_size) { /* a file that shrank meanwhile ends early */
        ssize_t n = read(fd, f->bytes + f->len, (size_t)st.st_size - f->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = nx_err_set(err, NX_EIO, "%s: read error: %s", f->path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        f->len += (size_t)n;
    }
    f->bytes[f->len] = '\0';
out_close:
    close(fd);
    return rc;
}

static int syntax_error(const nx__yfile_t *f, const yaml_parser_t *p, nx_err_t *err)
{
    const char *problem = p->problem ? p->problem : "cannot parse";
    if (p->error == YAML_READER_ERROR)
        return nx_err_set(err, NX_EFORMAT, "%s: YAML error at byte %zu: %s", f->path,
                          p->problem_offset, problem);
    char context[160] = "";
    if (p->context)
        snprintf(context, sizeof context, " (%s at line %zu, column %zu)", p->context,
                 p->context_mark.line + 1, p->context_mark.column + 1);
    return nx_err_set(err, NX_EFORMAT, "%s:%zu:%zu: YAML syntax error: %s%s", f->path,
                      p->problem_mark.line + 1, p->problem_mark.column + 1, problem, context);
}

/* Refuse nesting deeper than NX__CONF_MAX_DEPTH before a document is built: libyaml's cost
 * grows with the square of the depth (18 s for 100,000 nested flow lists, and 4 MiB allows
 * 2,000,000), and no config needs more than a few levels. This pass reads events only and
 * stops at the first collection past the cap, so it costs little however deep the file goes.
 * A syntax error found here is reported exactly as the document pass would report it. */
static int check_nesting(nx__yfile_t *f, nx_err_t *err)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return nx_err_set(err, NX_ENOMEM, "%s: no memory for the YAML parser", f->path);
    yaml_parser_set_input_string(&parser, (const unsigned char *)f->bytes, f->len);
    int rc = NX_OK, depth = 0;
    for (bool end = false; rc == NX_OK && !end;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = syntax_error(f, &parser, err);
            break;
        }
        switch (ev.type) {
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > NX__CONF_MAX_DEPTH)
                rc = nx_err_set(err, NX_EFORMAT,
                                "%s:%zu:%zu: nested more than %d levels deep (lists and "
                                "mappings inside each other); a config needs a few",
                                f->path, ev.start_mark.line + 1, ev.start_mark.column + 1,
                                NX__CONF_MAX_DEPTH);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_STREAM_END_EVENT:
            end = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

static int parse(nx__yfile_t *f, nx_err_t *err)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return nx_err_set(err, NX_ENOMEM, "%s: no memory for the YAML parser", f->path);
    yaml_parser_set_input_string(&parser, (const unsigned char *)f->bytes, f->len);
    int rc = check_nesting(f, err);
    if (rc != NX_OK)
        goto out;
    if (!yaml_parser_load(&parser, &f->doc)) {
        rc = syntax_error(f, &parser, err);
        goto out;
    }
    f->have_doc = true;
    if (!yaml_document_get_root_node(&f->doc)) {
        rc = nx_err_set(err, NX_EFORMAT, "%s:1:1: the file is empty (expected a mapping of fields)",
                        f->path);
        goto out;
    }
    yaml_document_t second;
    if (!yaml_parser_load(&parser, &second)) {
        rc = syntax_error(f, &parser, err);
        goto out;
    }
    bool more = yaml_document_get_root_node(&second) != NULL;
    yaml_mark_t at = second.start_mark;
    yaml_document_delete(&second);
    if (more)
        rc = nx_err_set(err, NX_EFORMAT, "%s:%zu:%zu: a second YAML document; a config file holds one",
                        f->path, at.line + 1, at.column + 1);
out:
    yaml_parser_delete(&parser);
    return rc;
}

int nx__yfile_open(nx__yfile_t *f, const char *path, nx_err_t *err)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", path);
    int rc = read_all(f, err);
    if (rc != NX_OK)
        return rc;
    char *real = realpath(path, NULL);
    if (!real)
        return nx_err_set(err, NX_EIO, "%s: cannot resolve its path: %s", path, strerror(errno));
    char *slash = strrchr(real, '/');
    if (slash == real)
        slash[1] = '\0';
    else
        *slash = '\0';
    f->dir = real;
    rc = parse(f, err);
    if (rc != NX_OK)
        return rc;
    yaml_node_t *root = nx__yfile_root(f);
    if (root->type != YAML_MAPPING_NODE)
        return nx__yexpect(f, root, "", "a mapping of fields at the top", err);
    return NX_OK;
}

void nx__yfile_close(nx__yfile_t *f)
{
    if (f->have_doc)
        yaml_document_delete(&f->doc);
    free(f->path);
    free(f->dir);
    free(f->bytes);
    memset(f, 0, sizeof *f);
}

yaml_node_t *nx__yfile_root(nx__yfile_t *f)
{
    return yaml_document_get_root_node(&f->doc);
}

/* ---- mappings ---------------------------------------------------------------------------------- */

static void join_field(char *out, size_t cap, const char *prefix, const char *key)
{
    snprintf(out, cap, "%s%s%s", prefix, prefix[0] ? "." : "", key);
}

static bool in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

static void list_text(const char *const *list, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (; *list && used < cap; list++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? ", " : "", *list);
}

static int check_key(const nx__yfile_t *f, yaml_node_t *map, yaml_node_pair_t *pair,
                     const char *prefix, const char *const *allowed, nx_err_t *err)
{
    yaml_document_t *doc = (yaml_document_t *)&f->doc;
    yaml_node_t *key = yaml_document_get_node(doc, pair->key);
    char field[256];
    if (!is_str(key))
        return nx__yexpect(f, key, prefix, "a field name", err);
    join_field(field, sizeof field, prefix, scalar_text(key));
    if (!in_list(allowed, scalar_text(key))) {
        char names[512];
        list_text(allowed, names, sizeof names);
        return nx__yerr(f, key, field, err, "unknown field (expected one of: %s)", names);
    }
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
        yaml_node_t *earlier = yaml_document_get_node(doc, q->key);
        if (is_str(earlier) && strcmp(scalar_text(earlier), scalar_text(key)) == 0)
            return nx__yerr(f, key, field, err, "given twice (first at line %zu)",
                            earlier->start_mark.line + 1);
    }
    return NX_OK;
}

int nx__ymap_check(const nx__yfile_t *f, yaml_node_t *map, const char *prefix,
                   const char *const *allowed, const char *const *required, nx_err_t *err)
{
    if (map->type != YAML_MAPPING_NODE)
        return nx__yexpect(f, map, prefix, "a mapping", err);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        int rc = check_key(f, map, p, prefix, allowed, err);
        if (rc != NX_OK)
            return rc;
    }
    for (; required && *required; required++) {
        if (nx__ymap_get((nx__yfile_t *)f, map, *required))
            continue;
        char field[256];
        join_field(field, sizeof field, prefix, *required);
        return nx__yerr(f, map, field, err, "required but missing");
    }
    return NX_OK;
}

yaml_node_t *nx__ymap_get(nx__yfile_t *f, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&f->doc, p->key);
        if (is_str(k) && strcmp(scalar_text(k), key) == 0)
            return yaml_document_get_node(&f->doc, p->value);
    }
    return NULL;
}

/* ---- typed getters ----------------------------------------------------------------------------- */

int nx__yget_string(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                    bool allow_empty, char **out, nx_err_t *err)
{
    if (!is_str(node))
        return nx__yexpect(f, node, field, allow_empty ? "a string" : "a non-empty string", err);
    if (!allow_empty && node->data.scalar.length == 0)
        return nx__yexpect(f, node, field, "a non-empty string", err);
    *out = strdup(scalar_text(node));
    return *out ? NX_OK : nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
}

int nx__yget_bool(const nx__yfile_t *f, const yaml_node_t *node, const char *field, bool *out,
                  nx_err_t *err)
{
    if (node->type != YAML_SCALAR_NODE || scalar_kind(node) != Y_BOOL)
        return nx__yexpect(f, node, field, "a boolean (true or false)", err);
    char c = scalar_text(node)[0];
    const char *t = scalar_text(node);
    *out = c == 'y' || c == 'Y' || c == 't' || c == 'T' || strcasecmp(t, "on") == 0;
    return NX_OK;
}

static void int_expected(int64_t min, int64_t max, char *out, size_t cap)
{
    if (max == INT64_MAX)
        snprintf(out, cap, "an integer >= %lld", (long long)min);
    else
        snprintf(out, cap, "an integer from %lld to %lld", (long long)min, (long long)max);
}

int nx__yget_int(const nx__yfile_t *f, const yaml_node_t *node, const char *field, int64_t min,
                 int64_t max, int64_t *out, nx_err_t *err)
{
    char expected[96];
    int_expected(min, max, expected, sizeof expected);
    if (node->type != YAML_SCALAR_NODE || scalar_kind(node) != Y_INT ||
        !rx_match(RE_DEC_INT, scalar_text(node), 0, NULL))
        return nx__yexpect(f, node, field, expected, err);
    errno = 0;
    long long v = strtoll(scalar_text(node), NULL, 10);
    if (errno || v < min || v > max)
        return nx__yexpect(f, node, field, expected, err);
    *out = v;
    return NX_OK;
}

int nx__yget_u64(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                 uint64_t min, uint64_t max, uint64_t *out, nx_err_t *err)
{
    char expected[96];
    if (max == UINT64_MAX)
        snprintf(expected, sizeof expected, "an integer >= %llu", (unsigned long long)min);
    else
        snprintf(expected, sizeof expected, "an integer from %llu to %llu",
                 (unsigned long long)min, (unsigned long long)max);
    const char *t = node->type == YAML_SCALAR_NODE ? scalar_text(node) : "";
    if (node->type != YAML_SCALAR_NODE || scalar_kind(node) != Y_INT ||
        !rx_match(RE_DEC_INT, t, 0, NULL) || t[0] == '-')
        return nx__yexpect(f, node, field, expected, err);
    errno = 0;
    unsigned long long v = strtoull(t[0] == '+' ? t + 1 : t, NULL, 10);
    if (errno || v < min || v > max)
        return nx__yexpect(f, node, field, expected, err);
    *out = v;
    return NX_OK;
}

static void range_expected(nx__yrange_t r, char *out, size_t cap)
{
    if (isinf(r.max))
        snprintf(out, cap, "a number %s %g", r.min_open ? ">" : ">=", r.min);
    else
        snprintf(out, cap, "a number in %c%g, %g%c", r.min_open ? '(' : '[', r.min, r.max,
                 r.max_open ? ')' : ']');
}

int nx__yget_number(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                    nx__yrange_t r, double *out, nx_err_t *err)
{
    char expected[96];
    range_expected(r, expected, sizeof expected);
    if (node->type != YAML_SCALAR_NODE)
        return nx__yexpect(f, node, field, expected, err);
    const char *t = scalar_text(node);
    ykind_t kind = scalar_kind(node);
    bool decimal = (kind == Y_INT && rx_match(RE_DEC_INT, t, 0, NULL)) ||
                   (kind == Y_FLOAT && rx_match(RE_DEC_FLOAT, t, 0, NULL));
    if (!decimal)
        return nx__yexpect(f, node, field, expected, err);
    double v = strtod(t, NULL);
    bool ok = isfinite(v) && (r.min_open ? v > r.min : v >= r.min) &&
              (r.max_open ? v < r.max : v <= r.max);
    if (!ok)
        return nx__yexpect(f, node, field, expected, err);
    *out = v;
    return NX_OK;
}

static uint64_t unit_bytes(const char *unit)
{
    static const struct { const char *name; uint64_t bytes; } units[] = {
        {"B", 1}, {"KB", 1000ull}, {"MB", 1000000ull}, {"GB", 1000000000ull},
        {"TB", 1000000000000ull}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20},
        {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(units[i].name, unit) == 0)
            return units[i].bytes;
    return 0;
}

/* "1.5GiB" -> bytes; false on overflow or a bad form. */
static bool parse_size_text(const char *t, uint64_t *out)
{
    regmatch_t m[5];
    if (!rx_match(RE_SIZE, t, 5, m))
        return false;
    uint64_t mult = unit_bytes(t + m[4].rm_so);
    errno = 0;
    unsigned long long whole = strtoull(t + m[1].rm_so, NULL, 10);
    if (errno || mult == 0 || whole > UINT64_MAX / mult)
        return false;
    uint64_t bytes = whole * mult;
    if (m[3].rm_so >= 0) {
        double frac = strtod(t + m[2].rm_so, NULL); /* ".5" */
        double extra = floor(frac * (double)mult);
        if (extra > (double)(UINT64_MAX - bytes))
            return false;
        bytes += (uint64_t)extra;
    }
    *out = bytes;
    return true;
}

int nx__yget_size(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                  uint64_t min, uint64_t max, uint64_t *bytes_out, double *fraction_out,
                  nx_err_t *err)
{
    char expected[192], range[64];
    if (max == UINT64_MAX)
        snprintf(range, sizeof range, "of at least %llu", (unsigned long long)min);
    else
        snprintf(range, sizeof range, "of %llu to %llu", (unsigned long long)min,
                 (unsigned long long)max);
    snprintf(expected, sizeof expected,
             "a size %s bytes (an integer, or like '512MiB', '8GiB', '1.5GB')%s", range,
             fraction_out ? " or a percent of free memory like '80%'" : "");
    if (fraction_out)
        *fraction_out = 0;
    if (node->type != YAML_SCALAR_NODE)
        return nx__yexpect(f, node, field, expected, err);
    const char *t = scalar_text(node);
    ykind_t kind = scalar_kind(node);
    uint64_t bytes = 0;
    if (kind == Y_INT) {
        if (nx__yget_u64(f, node, field, min, max, &bytes, err) != NX_OK)
            return nx__yexpect(f, node, field, expected, err);
    } else if (fraction_out && kind == Y_STR && rx_match(RE_PERCENT, t, 0, NULL)) {
        double pct = strtod(t, NULL);
        if (!(pct > 0 && pct <= 100))
            return nx__yexpect(f, node, field, "a percent above 0% and at most 100%", err);
        *fraction_out = pct / 100.0;
        *bytes_out = 0;
        return NX_OK;
    } else if (kind != Y_STR || !parse_size_text(t, &bytes) || bytes < min || bytes > max) {
        return nx__yexpect(f, node, field, expected, err);
    }
    *bytes_out = bytes;
    return NX_OK;
}

int nx__yget_duration(const nx__yfile_t *f, const yaml_node_t *node, const char *field,
                      uint64_t min_s, uint64_t max_s, uint64_t *seconds_out, nx_err_t *err)
{
    char expected[160];
    if (min_s == 0 && max_s >= UINT32_MAX)
        snprintf(expected, sizeof expected, "a duration (seconds, or like '30s', '10m', '1h', '2d')");
    else
        snprintf(expected, sizeof expected,
                 "a duration from %llu to %llu seconds (seconds, or like '30s', '10m', '1h', '2d')",
                 (unsigned long long)min_s, (unsigned long long)max_s);
    if (node->type != YAML_SCALAR_NODE)
        return nx__yexpect(f, node, field, expected, err);
    const char *t = scalar_text(node);
    ykind_t kind = scalar_kind(node);
    uint64_t seconds = 0;
    regmatch_t m[3];
    if (kind == Y_INT) {
        if (nx__yget_u64(f, node, field, min_s, max_s, &seconds, err) != NX_OK)
            return nx__yexpect(f, node, field, expected, err);
    } else if (kind == Y_STR && rx_match(RE_DURATION, t, 3, m)) {
        static const uint64_t per[] = {['s'] = 1, ['m'] = 60, ['h'] = 3600, ['d'] = 86400};
        errno = 0;
        unsigned long long n = strtoull(t, NULL, 10);
        uint64_t unit = per[(unsigned char)t[m[2].rm_so]];
        if (errno || n > max_s / unit || n * unit < min_s)
            return nx__yexpect(f, node, field, expected, err);
        seconds = n * unit;
    } else {
        return nx__yexpect(f, node, field, expected, err);
    }
    *seconds_out = seconds;
    return NX_OK;
}

/* ---- paths ------------------------------------------------------------------------------------- */

char *nx__conf_abspath(const char *base_dir, const char *rel)
{
    size_t cap = strlen(base_dir) + strlen(rel) + 3;
    char *joined = malloc(cap);
    char *out = malloc(cap);
    if (!joined || !out)
        goto out_fail;
    if (rel[0] == '/')
        snprintf(joined, cap, "%s", rel);
    else
        snprintf(joined, cap, "%s/%s", base_dir, rel);
    size_t len = 0; /* out holds "/a/b" built component by component */
    char *save = NULL;
    for (char *part = strtok_r(joined, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            while (len > 0 && out[len - 1] != '/')
                len--;
            if (len > 0)
                len--; /* drop the slash too */
            continue;
        }
        out[len++] = '/';
        size_t n = strlen(part);
        memcpy(out + len, part, n);
        len += n;
    }
    if (len == 0)
        out[len++] = '/';
    out[len] = '\0';
    free(joined);
    return out;
out_fail:
    free(joined);
    free(out);
    return NULL;
}

/* ---- a YAML tree as JSON ---------------------------------------------------------------------- */

#define JSON_MAX_NODES 100000 /* aliases can repeat a subtree: bound the copy */

typedef struct to_json {
    nx__yfile_t *f;
    const char *field;
    nx_err_t *err;
    size_t nodes;
} to_json_t;

static json_t *scalar_json(to_json_t *c, const yaml_node_t *n)
{
    const char *t = scalar_text(n);
    switch (scalar_kind(n)) {
    case Y_NULL:
        return json_null();
    case Y_BOOL:
        return json_boolean(t[0] == 't' || t[0] == 'T' || t[0] == 'y' || t[0] == 'Y' ||
                            ((t[0] == 'o' || t[0] == 'O') && (t[1] == 'n' || t[1] == 'N')));
    case Y_INT:
        if (rx_match(RE_DEC_INT, t, 0, NULL)) {
            errno = 0;
            long long v = strtoll(t, NULL, 10);
            if (errno == 0)
                return json_integer(v);
        }
        break;
    case Y_FLOAT:
        if (rx_match(RE_DEC_FLOAT, t, 0, NULL))
            return json_real(strtod(t, NULL));
        break;
    default:
        if (strlen(t) != n->data.scalar.length)
            break; /* a NUL inside */
        return json_string(t);
    }
    nx__yerr(c->f, n, c->field, c->err, "expected JSON: a decimal number in 64 bits, a string, "
             "true, false or null; got '%.40s' (quote it for a string)", t);
    return NULL;
}

static json_t *node_json(to_json_t *c, yaml_node_t *n, int depth)
{
    if (++c->nodes > JSON_MAX_NODES || depth > NX__CONF_MAX_DEPTH) {
        nx__yerr(c->f, n, c->field, c->err, "more than %d nodes or deeper than %d levels",
                 JSON_MAX_NODES, NX__CONF_MAX_DEPTH);
        return NULL;
    }
    if (n->type == YAML_SCALAR_NODE)
        return scalar_json(c, n);
    json_t *out = n->type == YAML_MAPPING_NODE ? json_object() : json_array();
    if (!out) {
        nx_err_set(c->err, NX_ENOMEM, "%s: no memory", c->f->path);
        return NULL;
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top;
             i++) {
            json_t *item = node_json(c, yaml_document_get_node(&c->f->doc, *i), depth + 1);
            if (!item || json_array_append_new(out, item) != 0)
                goto out_fail;
        }
        return out;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&c->f->doc, p->key);
        if (!is_str(k)) {
            nx__yexpect(c->f, k, c->field, "a string key", c->err);
            goto out_fail;
        }
        if (json_object_get(out, scalar_text(k))) {
            nx__yerr(c->f, k, c->field, c->err, "key '%.64s' is given twice", scalar_text(k));
            goto out_fail;
        }
        json_t *v = node_json(c, yaml_document_get_node(&c->f->doc, p->value), depth + 1);
        if (!v || json_object_set_new(out, scalar_text(k), v) != 0)
            goto out_fail;
    }
    return out;
out_fail:
    json_decref(out);
    return NULL;
}

int nx__yget_json(nx__yfile_t *f, yaml_node_t *node, const char *field, json_t **out,
                  nx_err_t *err)
{
    to_json_t c = {.f = f, .field = field, .err = err};
    *out = node_json(&c, node, 0);
    return *out ? NX_OK : (err && err->code ? err->code : NX_EFORMAT);
}
