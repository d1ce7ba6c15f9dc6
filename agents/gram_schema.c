/* gram_schema.c — JSON Schema (draft 2020-12 and draft-07) to a grammar of its instances in
 * compact serialization. This file walks the schema: keyword checks (every validation keyword
 * is either enforced or refused by name with its JSON pointer — never dropped), $ref,
 * anyOf/oneOf (distributed over the sibling keywords), enum/const, and the per-type builders
 * of gram_schema_types.c. allOf and $ref siblings are merged in gram_schema_merge.c.
 *
 * What is exact and what is refused (the contract the tests hold it to):
 *   - annotations are ignored as the spec says (title, description, default, examples, ...),
 *     and so are keywords no draft defines; `then`/`else` without `if` are no-ops;
 *   - refused: patternProperties, propertyNames, min/maxProperties, dependencies and
 *     dependent*, if, not, contains (and min/maxContains), unevaluated*,
 *     uniqueItems: true, dynamic/recursive refs, remote refs, refs to anchors, $id below the
 *     root, oneOf whose branches cannot be shown disjoint, allOf merges that change meaning;
 *   - the rest is exact for compact instances written with keys in an admitted order (see
 *     gram_schema_types.c), with the number forms documented there.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gram_schema.h"

const char *const nx__sc_annotations[] = {
    "title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
    "writeOnly", "$schema", "$defs", "definitions", "contentMediaType", "contentEncoding",
    "contentSchema", "$anchor", "$vocabulary", "$id", "then", "else", NULL};
const char *const nx__sc_unsupported_keys[] = {
    "patternProperties", "propertyNames", "minProperties", "maxProperties",
    "dependentRequired", "dependentSchemas", "dependencies", "if", "not", "contains",
    "minContains", "maxContains", "unevaluatedProperties", "unevaluatedItems",
    "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor", NULL};

bool nx__sc_key_in(const char *const *list, const char *key)
{
    for (; *list; list++)
        if (!strcmp(*list, key))
            return true;
    return false;
}

uint32_t nx__sc_fail(nx__sc_t *sc, int code, const char *fmt, ...)
{
    if (sc->rc == NX_OK) {
        va_list ap;
        va_start(ap, fmt);
        sc->rc = nx_err_vset(sc->err, code, fmt, ap);
        va_end(ap);
        if (sc->rc == NX_OK)
            sc->rc = code;
    }
    return NX__DEAD;
}

const char *nx__sc_where(const char *ptr)
{
    return *ptr ? ptr : "the root";
}

uint32_t nx__sc_unsupported(nx__sc_t *sc, const char *keyword, const char *ptr, const char *why)
{
    return nx__sc_fail(sc, NX_ENOTSUP, "unsupported keyword '%s' at %s%s%s", keyword,
                       nx__sc_where(ptr), why ? ": " : "", why ? why : "");
}

void nx__sc_ptr(char *out, const char *ptr, const char *key)
{
    size_t n = (size_t)snprintf(out, NX__SC_PTR, "%s/", ptr);
    for (; *key && n + 3 < NX__SC_PTR; key++) {
        if (*key == '~' || *key == '/') {
            out[n++] = '~';
            out[n++] = *key == '~' ? '0' : '1';
        } else
            out[n++] = *key;
    }
    out[n < NX__SC_PTR ? n : NX__SC_PTR - 1] = '\0';
}

json_t *nx__sc_keep(nx__sc_t *sc, json_t *node)
{
    if (!node)
        return NULL;
    if (json_array_size(sc->synth) >= NX__SC_MAX_SYNTH) {
        json_decref(node);
        nx__sc_fail(sc, NX_ENOTSUP, "schema expands to over %d merged subschemas (allOf, $ref "
                                    "siblings, anyOf distribution)", NX__SC_MAX_SYNTH);
        return NULL;
    }
    json_array_append_new(sc->synth, node);
    return node;
}

unsigned nx__sc_value_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return NX__SC_NULL;
    case JSON_TRUE: case JSON_FALSE: return NX__SC_BOOL;
    case JSON_OBJECT: return NX__SC_OBJECT;
    case JSON_ARRAY: return NX__SC_ARRAY;
    case JSON_STRING: return NX__SC_STRING;
    case JSON_INTEGER: return NX__SC_NUMBER | NX__SC_INTEGER;
    default: {
        double x = json_real_value(v);
        return NX__SC_NUMBER | (x == (double)(long long)x ? NX__SC_INTEGER : 0);
    }
    }
}

/* --- memo by node -------------------------------------------------------------------------- */

static uint64_t ptr_hash(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 31);
}

static uint32_t memo_get(const nx__sc_t *sc, const json_t *node)
{
    if (!sc->n_memo)
        return NX__DEAD;
    for (size_t h = ptr_hash(node) & (sc->n_memo - 1); sc->memo_node[h];
         h = (h + 1) & (sc->n_memo - 1))
        if (sc->memo_node[h] == node)
            return sc->memo_rule[h];
    return NX__DEAD;
}

static bool memo_put(nx__sc_t *sc, const json_t *node, uint32_t rule)
{
    if (2 * (sc->used_memo + 1) > sc->n_memo) {
        size_t n = sc->n_memo ? 2 * sc->n_memo : 256;
        const json_t **nodes = calloc(n, sizeof *nodes);
        uint32_t *rules = malloc(n * sizeof *rules);
        if (!nodes || !rules) {
            free(nodes);
            free(rules);
            return false;
        }
        for (size_t i = 0; i < sc->n_memo; i++) {
            if (!sc->memo_node[i])
                continue;
            size_t h = ptr_hash(sc->memo_node[i]) & (n - 1);
            while (nodes[h])
                h = (h + 1) & (n - 1);
            nodes[h] = sc->memo_node[i];
            rules[h] = sc->memo_rule[i];
        }
        free(sc->memo_node);
        free(sc->memo_rule);
        sc->memo_node = nodes;
        sc->memo_rule = rules;
        sc->n_memo = n;
    }
    size_t h = ptr_hash(node) & (sc->n_memo - 1);
    while (sc->memo_node[h])
        h = (h + 1) & (sc->n_memo - 1);
    sc->memo_node[h] = node;
    sc->memo_rule[h] = rule;
    sc->used_memo++;
    return true;
}

/* --- keywords ------------------------------------------------------------------------------ */

/* Refuse what cannot be enforced; EINVAL for keywords of the wrong JSON type. */
static bool check_keywords(nx__sc_t *sc, json_t *node, const char *ptr)
{
    const char *key;
    json_t *val;
    json_object_foreach(node, key, val) {
        if (nx__sc_key_in(nx__sc_unsupported_keys, key)) {
            nx__sc_unsupported(sc, key, ptr, NULL);
            return false;
        }
        if (!strcmp(key, "$id") && node != sc->root) {
            nx__sc_unsupported(sc, key, ptr, "a base URI below the root is not built");
            return false;
        }
        if (!strcmp(key, "uniqueItems") && json_is_true(val)) {
            nx__sc_unsupported(sc, key, ptr, "true is not built");
            return false;
        }
    }
    return true;
}

/* Does node hold a keyword that constrains instances (not an annotation)? */
static bool has_validation(json_t *node, const char *const *skip)
{
    const char *key;
    json_t *val;
    json_object_foreach(node, key, val) {
        if (nx__sc_key_in(nx__sc_annotations, key) || (skip && nx__sc_key_in(skip, key)))
            continue;
        if (!strcmp(key, "uniqueItems") && json_is_false(val))
            continue;
        return true;
    }
    return false;
}

static bool parse_types(nx__sc_t *sc, json_t *node, const char *ptr, unsigned *types)
{
    static const struct { const char *name; unsigned bits; } names[] = {
        {"null", NX__SC_NULL}, {"boolean", NX__SC_BOOL}, {"object", NX__SC_OBJECT},
        {"array", NX__SC_ARRAY}, {"number", NX__SC_NUMBER}, {"string", NX__SC_STRING},
        {"integer", NX__SC_INTEGER}};
    json_t *t = json_object_get(node, "type");
    *types = NX__SC_ALL;
    if (!t)
        return true;
    *types = 0;
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_is_array(t) ? json_array_get(t, i) : t);
        size_t k = 0;
        while (s && k < sizeof names / sizeof names[0] && strcmp(names[k].name, s))
            k++;
        if (!s || k == sizeof names / sizeof names[0]) {
            nx__sc_fail(sc, NX_EINVAL, "'type' at %s names no JSON type", nx__sc_where(ptr));
            return false;
        }
        *types |= names[k].bits;
    }
    if (*types & NX__SC_NUMBER)
        *types |= NX__SC_INTEGER;
    return true;
}

/* enum/const with other validation keywords: keep the values the rest of the schema admits,
 * by compiling that rest and matching each value's compact text. */
static json_t *filter_literals(nx__sc_t *sc, json_t *node, json_t *values, const char *ptr)
{
    static const char *const lit_keys[] = {"enum", "const", "type", NULL};
    json_t *out = json_array();
    unsigned types;
    if (!out || !parse_types(sc, node, ptr, &types)) {
        json_decref(out);
        return NULL;
    }
    nx_gram_matcher_t *m = NULL;
    nx_gram_t *g = NULL;
    if (has_validation(node, lit_keys)) {
        if (sc->nested >= 4) {
            json_decref(out);
            nx__sc_unsupported(sc, "enum", ptr, "nested too deep beside other keywords");
            return NULL;
        }
        json_t *rest = json_deep_copy(node);
        json_object_del(rest, "enum");
        json_object_del(rest, "const");
        nx__sc_t sub = {.root = sc->root, .draft = sc->draft, .strict = sc->strict,
                        .err = sc->err, .nested = sc->nested + 1, .synth = json_array(),
                        .any_rule = NX__DEAD, .str_term = NX__DEAD, .num_term = NX__DEAD,
                        .int_term = NX__DEAD};
        sub.b = nx__gb_new();
        uint32_t r = sub.b && rest ? nx__sc_compile(&sub, rest, ptr) : NX__DEAD;
        if (r != NX__DEAD && sub.rc == NX_OK) {
            g = nx__gb_finish(sub.b, r, NULL, 0, sc->err);
            sub.b = NULL;
        }
        nx__gb_free(sub.b);
        free(sub.memo_node);
        free(sub.memo_rule);
        json_decref(sub.synth);
        json_decref(rest);
        if (!g || !(m = nx_gram_matcher_new(g, NULL, sc->err))) {
            nx__sc_fail(sc, sub.rc ? sub.rc : NX_ENOMEM, "%s", sc->err ? sc->err->msg : "");
            nx_gram_destroy(&g);
            json_decref(out);
            return NULL;
        }
    }
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v) {
        unsigned vt = nx__sc_value_type(v);
        bool ok = (vt & types & ~NX__SC_INTEGER) || ((types & NX__SC_INTEGER) &&
                                                     (vt & NX__SC_INTEGER));
        if (ok && m) {
            json_t *written = nx__json_as_written(v); /* 5.0 is checked as "5" */
            char *text = written ? json_dumps(written, JSON_COMPACT | JSON_ENCODE_ANY |
                                                           JSON_PRESERVE_ORDER)
                                 : NULL;
            json_decref(written);
            nx_gram_matcher_reset(m);
            ok = text && nx_gram_matcher_advance(m, text, strlen(text), NULL) == NX_OK &&
                 nx_gram_matcher_accepting(m);
            free(text);
        }
        if (ok)
            json_array_append(out, v);
    }
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
    return out;
}

/* --- the walk ------------------------------------------------------------------------------ */

static int base_types(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule)
{
    json_t *cst = json_object_get(node, "const"), *en = json_object_get(node, "enum");
    if (cst || en) {
        json_t *values = json_array();
        if (cst)
            json_array_append(values, cst);
        else if (json_is_array(en))
            json_array_extend(values, en);
        else {
            json_decref(values);
            return nx__sc_fail(sc, NX_EINVAL, "'enum' at %s is not an array",
                               nx__sc_where(ptr)), sc->rc;
        }
        if (cst && en) { /* both: the const value must also be in the enum */
            bool found = false;
            for (size_t i = 0; i < json_array_size(en) && !found; i++)
                found = json_equal(json_array_get(en, i), cst);
            if (!found)
                json_array_clear(values);
        }
        json_t *kept = filter_literals(sc, node, values, ptr);
        json_decref(values);
        if (!kept)
            return sc->rc ? sc->rc : NX_ENOMEM;
        int rc = nx__sc_literals(sc, kept, ptr, rule);
        json_decref(kept);
        return rc;
    }
    unsigned types;
    if (!parse_types(sc, node, ptr, &types))
        return sc->rc;
    int rc = NX_OK;
    if (types & NX__SC_NULL)
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(nx__gb_literal(sc->b, "null", 4))}, 1);
    if (types & NX__SC_BOOL) {
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(nx__gb_literal(sc->b, "true", 4))}, 1);
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(nx__gb_literal(sc->b, "false", 5))}, 1);
    }
    if (rc != NX_OK)
        return nx__sc_fail(sc, NX_ENOMEM, "out of memory"), sc->rc;
    if ((types & NX__SC_STRING) && nx__sc_string(sc, node, ptr, rule) != NX_OK)
        return sc->rc;
    if ((types & NX__SC_INTEGER) &&
        nx__sc_number(sc, node, ptr, !(types & NX__SC_NUMBER), rule) != NX_OK)
        return sc->rc;
    if ((types & NX__SC_OBJECT) && nx__sc_object(sc, node, ptr, rule) != NX_OK)
        return sc->rc;
    if ((types & NX__SC_ARRAY) && nx__sc_array(sc, node, ptr, rule) != NX_OK)
        return sc->rc;
    return NX_OK;
}

/* May branches a and b (resolved) share an instance? false only when shown disjoint. */
static bool may_overlap(nx__sc_t *sc, json_t *a, json_t *b, const char *ptr)
{
    if (json_is_false(a) || json_is_false(b))
        return false;
    if (!json_is_object(a) || !json_is_object(b))
        return true;
    unsigned ta, tb;
    if (!parse_types(sc, a, ptr, &ta) || !parse_types(sc, b, ptr, &tb))
        return true;
    /* integers are numbers: compare with the two merged */
    unsigned na = ta & NX__SC_INTEGER ? ta | NX__SC_NUMBER : ta;
    unsigned nb = tb & NX__SC_INTEGER ? tb | NX__SC_NUMBER : tb;
    if (!(na & nb))
        return false;
    json_t *la = json_object_get(a, "const"), *lb = json_object_get(b, "const");
    json_t *ea = json_object_get(a, "enum"), *eb = json_object_get(b, "enum");
    if ((la || ea) && (lb || eb)) {
        json_t *va = la ? json_pack("[O]", la) : json_incref(ea);
        json_t *vb = lb ? json_pack("[O]", lb) : json_incref(eb);
        /* past 10^5 comparisons, "may overlap": refused rather than slow */
        bool overlap = json_array_size(va) * json_array_size(vb) > 100000;
        for (size_t i = 0; i < json_array_size(va) && !overlap; i++)
            for (size_t j = 0; j < json_array_size(vb) && !overlap; j++)
                overlap = json_equal(json_array_get(va, i), json_array_get(vb, j));
        json_decref(va);
        json_decref(vb);
        return overlap;
    }
    /* objects told apart by a property both require with different const values */
    if ((na | nb) == NX__SC_OBJECT) {
        json_t *ra = json_object_get(a, "required"), *rb = json_object_get(b, "required");
        json_t *pa = json_object_get(a, "properties"), *pb = json_object_get(b, "properties");
        for (size_t i = 0; i < json_array_size(ra); i++) {
            const char *k = json_string_value(json_array_get(ra, i));
            bool in_b = false;
            for (size_t j = 0; k && j < json_array_size(rb); j++)
                in_b |= !strcmp(k, json_string_value(json_array_get(rb, j)) ?: "");
            json_t *ca = k ? json_object_get(json_object_get(pa, k), "const") : NULL;
            json_t *cb = k ? json_object_get(json_object_get(pb, k), "const") : NULL;
            if (in_b && ca && cb && !json_equal(ca, cb))
                return false;
        }
    }
    return true;
}

static int combinator(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule)
{
    static const char *const comb[] = {"anyOf", "oneOf", NULL};
    const char *key = json_object_get(node, "anyOf") ? "anyOf" : "oneOf";
    json_t *branches = json_object_get(node, key);
    char bptr[NX__SC_PTR + 32], kptr[NX__SC_PTR];
    nx__sc_ptr(kptr, ptr, key);
    if (!json_is_array(branches) || json_array_size(branches) == 0)
        return nx__sc_fail(sc, NX_EINVAL, "'%s' at %s is not a non-empty array", key,
                           nx__sc_where(ptr)), sc->rc;
    json_t *base = NULL;
    if (has_validation(node, comb) || (!strcmp(key, "anyOf") && json_object_get(node, "oneOf"))) {
        base = nx__sc_keep(sc, json_copy(node));
        if (!base)
            return sc->rc;
        json_object_del(base, key);
    }
    size_t n = json_array_size(branches);
    json_t **m = calloc(n, sizeof *m);
    if (!m)
        return nx__sc_fail(sc, NX_ENOMEM, "out of memory"), sc->rc;
    int rc = NX_OK;
    for (size_t i = 0; i < n && rc == NX_OK; i++) {
        snprintf(bptr, sizeof bptr, "%s/%zu", kptr, i);
        json_t *br = json_array_get(branches, i);
        json_t *r = nx__sc_resolve(sc, br, bptr, 0);
        if (r && base && json_is_object(r)) {
            json_t *merged = nx__sc_merge(sc, base, r, bptr);
            json_decref(r);
            r = merged;
        } else if (r && base && json_is_true(r)) {
            json_decref(r);
            r = json_incref(base);
        }
        if (!r) {
            rc = sc->rc ? sc->rc : NX_ENOMEM;
            break;
        }
        m[i] = nx__sc_keep(sc, r); /* the memo keys on addresses: keep them alive */
        if (!m[i])
            rc = sc->rc;
    }
    if (rc == NX_OK && !strcmp(key, "oneOf") && n > 1000) {
        nx__sc_unsupported(sc, "oneOf", ptr, "over 1000 branches are not checked for overlap");
        rc = sc->rc;
    }
    if (rc == NX_OK && !strcmp(key, "oneOf"))
        for (size_t i = 0; i < n && rc == NX_OK; i++)
            for (size_t j = i + 1; j < n && rc == NX_OK; j++)
                if (may_overlap(sc, m[i], m[j], ptr)) {
                    nx__sc_unsupported(sc, "oneOf", ptr,
                                       "its branches may overlap, and exclusivity is not "
                                       "built (only branches of disjoint types, consts "
                                       "or const-tagged objects)");
                    rc = sc->rc;
                }
    for (size_t i = 0; i < n && rc == NX_OK; i++) {
        snprintf(bptr, sizeof bptr, "%s/%zu", kptr, i);
        uint32_t r = nx__sc_compile(sc, m[i], bptr);
        if (r == NX__DEAD || nx__gb_alt(sc->b, rule, (uint32_t[]){NX__REF(r)}, 1) != NX_OK) {
            if (!sc->rc)
                nx__sc_fail(sc, NX_ENOMEM, "out of memory");
            rc = sc->rc;
        }
    }
    free(m);
    return rc;
}

uint32_t nx__sc_compile(nx__sc_t *sc, json_t *node, const char *ptr)
{
    if (sc->rc != NX_OK)
        return NX__DEAD;
    if (json_is_true(node)) {
        if (sc->any_rule == NX__DEAD)
            sc->any_rule = nx__gb_json_value(sc->b, sc->err);
        if (sc->any_rule == NX__DEAD)
            return nx__sc_fail(sc, NX_ENOMEM, "out of memory");
        return sc->any_rule;
    }
    if (json_is_false(node))
        return nx__gb_rule(sc->b); /* no alternative: nothing matches */
    if (!json_is_object(node))
        return nx__sc_fail(sc, NX_EINVAL, "schema at %s is not an object or a boolean",
                           nx__sc_where(ptr));
    uint32_t rule = memo_get(sc, node);
    if (rule != NX__DEAD)
        return rule;
    if (sc->depth >= NX__SC_MAX_DEPTH)
        return nx__sc_fail(sc, NX_ENOTSUP, "schema at %s nested deeper than %d subschemas",
                           nx__sc_where(ptr), NX__SC_MAX_DEPTH);
    rule = nx__gb_rule(sc->b);
    if (rule == NX__DEAD || !memo_put(sc, node, rule))
        return nx__sc_fail(sc, NX_ENOTSUP, "schema over the grammar's size cap");
    if (!check_keywords(sc, node, ptr))
        return NX__DEAD;
    sc->depth++;
    int rc;
    if (json_object_get(node, "$ref") || json_object_get(node, "allOf")) {
        json_t *r = nx__sc_resolve(sc, node, ptr, 0);
        uint32_t target = r ? nx__sc_compile(sc, nx__sc_keep(sc, r), ptr) : NX__DEAD;
        rc = target == NX__DEAD ? sc->rc
                                : nx__gb_alt(sc->b, rule, (uint32_t[]){NX__REF(target)}, 1);
    } else if (json_object_get(node, "anyOf") || json_object_get(node, "oneOf")) {
        rc = combinator(sc, node, ptr, rule);
    } else {
        rc = base_types(sc, node, ptr, rule);
    }
    sc->depth--;
    if (rc != NX_OK)
        return nx__sc_fail(sc, rc, "out of memory compiling the schema at %s",
                           nx__sc_where(ptr));
    return rule;
}

/* --- the public entry points ----------------------------------------------------------------- */

static nx_gram_t *compile_root(json_t *root, nx_gram_draft_t draft, bool strict, nx_err_t *err)
{
    nx__sc_t sc = {.root = root, .draft = draft, .strict = strict, .err = err,
                   .synth = json_array(), .any_rule = NX__DEAD, .str_term = NX__DEAD,
                   .num_term = NX__DEAD, .int_term = NX__DEAD};
    sc.b = nx__gb_new();
    nx_gram_t *g = NULL;
    if (!sc.b || !sc.synth) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        goto out;
    }
    uint32_t r = nx__sc_compile(&sc, root, "");
    if (r != NX__DEAD && sc.rc == NX_OK) {
        g = nx__gb_finish(sc.b, r, NULL, 0, err);
        sc.b = NULL;
    }
out:
    nx__gb_free(sc.b);
    free(sc.memo_node);
    free(sc.memo_rule);
    json_decref(sc.synth);
    return g;
}

nx_gram_t *nx_gram_from_json_schema(const char *schema, size_t len,
                                    const nx_gram_schema_opts_t *opts, nx_err_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(schema, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES |
                                               JSON_ALLOW_NUL, &jerr);
    if (!root) {
        nx_err_set(err, NX_EINVAL, "schema is not JSON: %s at line %d column %d", jerr.text,
                   jerr.line, jerr.column);
        return NULL;
    }
    nx_gram_draft_t draft = opts ? opts->draft : NX_GRAM_DRAFT_AUTO;
    const char *uri = json_string_value(json_object_get(root, "$schema"));
    if (draft == NX_GRAM_DRAFT_AUTO) {
        draft = NX_GRAM_DRAFT_2020_12;
        if (uri && strstr(uri, "draft-07"))
            draft = NX_GRAM_DRAFT_07;
        else if (uri && !strstr(uri, "2020-12")) {
            nx_err_set(err, NX_ENOTSUP, "unsupported keyword '$schema' at the root: '%s' "
                                        "(draft 2020-12 and draft-07 are built)", uri);
            json_decref(root);
            return NULL;
        }
    }
    nx_gram_t *g = compile_root(root, draft, opts && opts->strict, err);
    json_decref(root);
    return g;
}
