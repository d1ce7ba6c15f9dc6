/* gram_compat.c — schema compatibility for typed pipelines: is every instance valid under a
 * stage's output_schema valid under the next stage's input_schema?
 *
 * A structural subschema check, sound rather than complete: it answers NX_OK only where it
 * has shown inclusion, and otherwise names both JSON pointers and the reason (a type the
 * input does not take, a property the output may omit, a bound, a pattern). How each keyword
 * is decided:
 *   - $ref and allOf are resolved and merged with the compiler's own code (gram_schema_merge.c),
 *     so both sides mean what they mean to the compiler; a pair of nodes met again below a
 *     value (a property or an item) is taken as proven (recursive types, coinductively); met
 *     again with no value between is not;
 *   - anyOf/oneOf on the output: every branch (with its siblings merged in) must fit; on the
 *     input: the siblings must hold and some branch must take the output — for oneOf, the
 *     output must also be disjoint from the other branches (types, or a required property
 *     whose values the other branch refuses);
 *   - enum/const on the output: each value is matched by the input's compiled grammar;
 *   - strings: length, pattern and format become the compiler's string DFAs, and L(out) ⊆
 *     L(in) is decided exactly with the product (out minus in); a counterexample is quoted;
 *   - numbers: bounds compared as intervals (integers rounded inward), multipleOf by ratio
 *     of the decimals (0.3 is a multiple of 0.1);
 *     bounds are doubles, whose order is the order of the decimals the schemas wrote for
 *     bounds of up to 15 significant digits (all the compiler builds), and are named by those
 *     decimals in messages;
 *   - objects, arrays: required, per-property and additional schemas, prefix/rest items and
 *     item counts, position by position.
 * Keywords of the input that constrain but are not followed here are refused by name; the
 * output's are ignored (dropping a constraint only widens the output, which stays sound),
 * except patternProperties, which changes what additionalProperties covers.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gram_schema.h"

#define MAX_VALUE_DEPTH 64     /* nested values followed */
#define MAX_STACK 512          /* node pairs being checked */
#define MAX_STEPS 200000u      /* pair checks in all: anyOf against anyOf stays bounded */

typedef struct side {
    nx__sc_t sc;       /* root, draft and the error of $ref/allOf resolution */
    nx_err_t err;
    bool strict;       /* additionalProperties defaults to false */
    const char *name;  /* "output" / "input" */
} side_t;

typedef struct pair {
    const json_t *o, *i;
    uint32_t value_depth; /* values descended when the pair was entered */
} pair_t;

typedef struct cx {
    side_t o, i;
    pair_t stack[MAX_STACK];
    uint32_t n_stack, value_depth, steps;
    bool oom;
    char why[1024];
} cx_t;

static bool fail(cx_t *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(cx_t *cx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cx->why, sizeof cx->why, fmt, ap);
    va_end(ap);
    return false;
}

static const char *where(const char *ptr)
{
    return *ptr ? ptr : "(root)";
}

static bool sub(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr);

/* --- small helpers ------------------------------------------------------------------------- */

static bool constrains(json_t *node)
{
    if (json_is_boolean(node))
        return json_is_false(node);
    const char *key;
    json_t *v;
    json_object_foreach(node, key, v) {
        if (!nx__sc_key_in(nx__sc_annotations, key) &&
            !(!strcmp(key, "uniqueItems") && json_is_false(v)))
            return true;
    }
    return false;
}

static const char *const TYPE_NAMES[] = {"null", "boolean", "object", "array", "number",
                                         "string", "integer"};

/* Type bits of a schema object's "type" (NX__SC_ALL when absent); number includes integer. */
static unsigned types_of(json_t *node)
{
    json_t *t = json_object_get(node, "type");
    if (!t)
        return NX__SC_ALL;
    unsigned bits = 0;
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t k = 0; k < n; k++) {
        const char *s = json_string_value(json_is_array(t) ? json_array_get(t, k) : t);
        for (unsigned b = 0; s && b < 7; b++)
            if (!strcmp(s, TYPE_NAMES[b]))
                bits |= 1u << b;
    }
    if (bits & NX__SC_NUMBER)
        bits |= NX__SC_INTEGER;
    return bits;
}

/* "a string", "an integer or a null" */
static void type_words(unsigned bits, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if ((bits & NX__SC_NUMBER))
        bits &= ~(unsigned)NX__SC_INTEGER;
    for (unsigned b = 0; b < 7; b++) {
        if (!(bits & (1u << b)) || n >= cap)
            continue;
        const char *art = TYPE_NAMES[b][0] == 'i' || TYPE_NAMES[b][0] == 'a' ||
                          TYPE_NAMES[b][0] == 'o' ? "an" : "a";
        n += (size_t)snprintf(out + n, cap - n, "%s%s %s", n ? " or " : "", art,
                              TYPE_NAMES[b]);
    }
}

static void ptr_index(char *out, const char *ptr, const char *key, size_t index)
{
    char k[32];
    snprintf(k, sizeof k, "%zu", index);
    char tmp[NX__SC_PTR];
    nx__sc_ptr(tmp, ptr, key);
    nx__sc_ptr(out, tmp, k);
}

/* A resolved node ($ref followed, allOf merged), alive as long as the side's root or synth;
 * NULL with cx->why set. */
static json_t *resolve(cx_t *cx, side_t *s, json_t *node, const char *ptr)
{
    json_t *r = nx__sc_resolve(&s->sc, node, ptr, 0);
    if (!r || s->sc.rc != NX_OK) {
        json_decref(r);
        fail(cx, "cannot follow %s %s: %s", s->name, where(ptr), s->err.msg);
        s->sc.rc = NX_OK;
        return NULL;
    }
    if (r == node) {
        json_decref(r); /* the caller's node: alive already */
        return r;
    }
    if (json_is_boolean(r)) {
        json_decref(r);
        return json_is_true(r) ? json_true() : json_false(); /* static singletons */
    }
    if (!nx__sc_keep(&s->sc, r)) {
        fail(cx, "cannot follow %s %s: %s", s->name, where(ptr), s->err.msg);
        s->sc.rc = NX_OK;
        return NULL;
    }
    return r;
}

/* --- values under the input: its compiled grammar --------------------------------------- */

/* Does every value in `values` (a JSON array) satisfy the input node? The node is compiled
 * standalone with the root's $defs/definitions beside it (references elsewhere: refused). */
static bool values_fit(cx_t *cx, json_t *values, const char *optr, json_t *inode,
                       const char *iptr)
{
    json_t *doc;
    if (inode == cx->i.sc.root || json_is_boolean(inode)) {
        doc = json_incref(inode);
    } else {
        doc = json_copy(inode);
        char *text = json_dumps(inode, JSON_COMPACT);
        for (const char *p = text; p && (p = strstr(p, "\"$ref\":\"")); p++) {
            const char *ref = p + 8;
            if (strncmp(ref, "#/$defs/", 8) && strncmp(ref, "#/definitions/", 14)) {
                free(text);
                json_decref(doc);
                return fail(cx, "cannot check output %s's values under input %s: it refers "
                                "outside $defs/definitions", where(optr), where(iptr));
            }
        }
        free(text);
        static const char *const defs[] = {"$defs", "definitions"};
        for (int k = 0; k < 2; k++) {
            json_t *d = json_object_get(cx->i.sc.root, defs[k]);
            if (d && !json_object_get(doc, defs[k]))
                json_object_set(doc, defs[k], d);
        }
    }
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!text)
        return cx->oom = true, fail(cx, "out of memory");
    nx_gram_schema_opts_t opts = {.draft = cx->i.sc.draft, .strict = false};
    nx_err_t err = {0};
    nx_gram_t *g = nx_gram_from_json_schema(text, strlen(text), &opts, &err);
    free(text);
    if (!g)
        return fail(cx, "cannot check output %s's values under input %s: %s", where(optr),
                    where(iptr), err.msg);
    nx_gram_matcher_t *m = nx_gram_matcher_new(g, NULL, &err);
    bool fits = m != NULL;
    size_t k;
    json_t *v;
    json_array_foreach(values, k, v) {
        if (!fits)
            break;
        json_t *written = nx__json_as_written(v); /* 5.0 checked as "5" */
        char *vt = written ? json_dumps(written, JSON_COMPACT | JSON_ENCODE_ANY |
                                                     JSON_PRESERVE_ORDER)
                           : NULL;
        json_decref(written);
        nx_gram_matcher_reset(m);
        fits = vt && nx_gram_matcher_advance(m, vt, strlen(vt), NULL) == NX_OK &&
               nx_gram_matcher_accepting(m);
        if (!fits)
            fail(cx, "output %s may be %.200s, which input %s refuses", where(optr),
                 vt ? vt : "(a value)", where(iptr));
        free(vt);
    }
    nx_gram_matcher_destroy(&m);
    nx_gram_destroy(&g);
    return fits;
}

/* The values a node allows by enum/const (a new array), or NULL when it has neither. */
static json_t *listed_values(json_t *node)
{
    json_t *e = json_object_get(node, "enum"), *c = json_object_get(node, "const");
    if (!e && !c)
        return NULL;
    json_t *out = json_array();
    if (json_is_array(e)) {
        size_t k;
        json_t *v;
        json_array_foreach(e, k, v)
            if (!c || json_equal(c, v))
                json_array_append(out, v);
    } else if (c) {
        json_array_append(out, c);
    }
    return out;
}

/* --- strings: their DFAs ------------------------------------------------------------------- */

static const char *const STRING_KEYS[] = {"minLength", "maxLength", "pattern", "format", NULL};

/* The compiler's string terminal for {"type":"string", keys of node}; false with why. */
static bool string_dfa(cx_t *cx, json_t *node, const char *side, const char *ptr,
                       nx__dfa_t *out)
{
    json_t *s = json_pack("{ss}", "type", "string");
    for (int k = 0; STRING_KEYS[k]; k++) {
        json_t *v = json_object_get(node, STRING_KEYS[k]);
        if (v)
            json_object_set(s, STRING_KEYS[k], v);
    }
    char *text = json_dumps(s, JSON_COMPACT);
    json_decref(s);
    nx_err_t err = {0};
    nx_gram_t *g = text ? nx_gram_from_json_schema(text, strlen(text), NULL, &err) : NULL;
    free(text);
    if (!g)
        return fail(cx, "cannot compare %s %s's strings: %s", side, where(ptr), err.msg);
    /* one rule, one alternative: the string terminal (or none when no string fits) */
    bool found = false;
    for (uint32_t t = 0; t < g->n_terms && !found; t++) {
        if (g->terms[t].kind == NX__T_DFA) {
            *out = g->terms[t].dfa;
            memset(&g->terms[t].dfa, 0, sizeof g->terms[t].dfa);
            found = true;
        }
    }
    nx_gram_destroy(&g);
    if (!found)
        *out = (nx__dfa_t){0}; /* empty language */
    return true;
}

/* A shortest string of a nonempty DFA, printable, into buf. */
static void dfa_witness(const nx__dfa_t *d, char *buf, size_t cap)
{
    uint32_t n = d->n_states;
    uint32_t *prev = malloc(n * sizeof *prev), *queue = malloc(n * sizeof *queue);
    uint8_t *byte = malloc(n);
    snprintf(buf, cap, "(a string)");
    if (!prev || !queue || !byte)
        goto out;
    for (uint32_t s = 0; s < n; s++)
        prev[s] = NX__DEAD;
    uint32_t head = 0, tail = 0, hit = NX__DEAD;
    queue[tail++] = 0;
    prev[0] = 0;
    while (head < tail && hit == NX__DEAD) {
        uint32_t s = queue[head++];
        if (d->flags[s] & NX__DFA_ACCEPT) {
            hit = s;
            break;
        }
        for (int b = 0; b < 256; b++) {
            uint32_t t = d->trans[(size_t)s * d->n_classes + d->byte_class[b]];
            if (t != NX__DEAD && prev[t] == NX__DEAD) {
                prev[t] = s;
                byte[t] = (uint8_t)b;
                queue[tail++] = t;
            }
        }
    }
    if (hit == NX__DEAD)
        goto out;
    size_t len = 0;
    for (uint32_t s = hit; s != 0; s = prev[s])
        len++;
    if (len + 1 > cap || len > 200)
        goto out;
    buf[len] = '\0';
    for (uint32_t s = hit; s != 0; s = prev[s]) {
        uint8_t c = byte[s];
        buf[--len] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
out:
    free(prev);
    free(queue);
    free(byte);
}

/* "pattern '^a', maxLength 5", or "any string" */
static void describe_strings(json_t *node, bool only_input_keys, json_t *in, char *out,
                             size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; STRING_KEYS[k] && n < cap; k++) {
        json_t *v = json_object_get(node, STRING_KEYS[k]);
        if (!v || (only_input_keys && json_equal(v, json_object_get(in, STRING_KEYS[k]))))
            continue;
        if (json_is_string(v))
            n += (size_t)snprintf(out + n, cap - n, "%s%s '%.100s'", n ? ", " : "",
                                  STRING_KEYS[k], json_string_value(v));
        else
            n += (size_t)snprintf(out + n, cap - n, "%s%s %g", n ? ", " : "", STRING_KEYS[k],
                                  json_number_value(v));
    }
    if (!n)
        snprintf(out, cap, "any string");
}

static bool strings_fit(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr)
{
    /* the input's string keywords the output does not repeat word for word */
    json_t *need = json_object();
    for (int k = 0; STRING_KEYS[k]; k++) {
        json_t *v = json_object_get(i, STRING_KEYS[k]);
        if (v && !json_equal(v, json_object_get(o, STRING_KEYS[k])))
            json_object_set(need, STRING_KEYS[k], v);
    }
    if (json_object_size(need) == 0) {
        json_decref(need);
        return true;
    }
    nx__dfa_t od, id, diff = {0};
    bool fits = false;
    if (!string_dfa(cx, o, "output", optr, &od))
        goto out_need;
    if (!string_dfa(cx, need, "input", iptr, &id))
        goto out_od;
    nx_err_t err = {0};
    char od_words[400], id_words[400], example[256];
    describe_strings(o, false, NULL, od_words, sizeof od_words);
    describe_strings(need, false, NULL, id_words, sizeof id_words);
    if (od.n_states == 0) {
        fits = true;
    } else if (id.n_states == 0) {
        fail(cx, "input %s's %s admits no string; output %s's strings do", where(iptr),
             id_words, where(optr));
    } else if (nx__dfa_product(&od, &id, true, &diff, &err) != NX_OK) {
        fail(cx, "cannot prove output %s's %s satisfies input %s's %s: %s", where(optr),
             od_words, where(iptr), id_words, err.msg);
    } else if (diff.n_states == 0) {
        fits = true;
    } else {
        dfa_witness(&diff, example, sizeof example);
        fail(cx, "cannot prove output %s's %s satisfies input %s's %s: output may write %s",
             where(optr), od_words, where(iptr), id_words, example);
    }
    nx__dfa_free(&diff);
    nx__dfa_free(&id);
out_od:
    nx__dfa_free(&od);
out_need:
    json_decref(need);
    return fits;
}

/* --- numbers ------------------------------------------------------------------------------- */

typedef struct bound {
    bool has, strict;
    double x;
    const char *key;
} bound_t;

/* A bound as its decimal: the shortest text that reads back as the same double (the schema's
 * own text for bounds of up to 15 significant digits), not %g's six digits. */
typedef struct num_text {
    char s[32];
} num_text_t;

static num_text_t num_text(double x)
{
    num_text_t t;
    int p = 1;
    for (; p < 17; p++) {
        snprintf(t.s, sizeof t.s, "%.*e", p - 1, x);
        if (strtod(t.s, NULL) == x)
            break;
    }
    snprintf(t.s, sizeof t.s, "%.*e", p - 1, x);
    int exp10 = atoi(strchr(t.s, 'e') + 1), decimals = p - 1 - exp10;
    if (exp10 < 16 && decimals <= 20) /* plain form, as JSON writes most bounds */
        snprintf(t.s, sizeof t.s, "%.*f", decimals > 0 ? decimals : 0, x);
    return t;
}

static bound_t bound_of(json_t *node, bool lower)
{
    bound_t b = {0};
    json_t *inc = json_object_get(node, lower ? "minimum" : "maximum");
    json_t *exc = json_object_get(node, lower ? "exclusiveMinimum" : "exclusiveMaximum");
    if (json_is_number(inc))
        b = (bound_t){true, false, json_number_value(inc), lower ? "minimum" : "maximum"};
    if (json_is_number(exc)) {
        double x = json_number_value(exc);
        if (!b.has || (lower ? x >= b.x : x <= b.x))
            b = (bound_t){true, true, x, lower ? "exclusiveMinimum" : "exclusiveMaximum"};
    }
    return b;
}

/* Is every multiple of b a multiple of a (b / a an integer), decided on the decimals the
 * schemas wrote (0.3 / 0.1 is 3, not the doubles' 2.9999999999999996)? false when unproven. */
static bool multiple_divides(json_t *a, json_t *b)
{
    nx__decimal_t da, db;
    const char *why;
    bool ok = false;
    if (nx__json_decimal(a, &da, &why) && nx__json_decimal(b, &db, &why) && !da.neg &&
        !db.neg) {
        size_t s = strlen(da.frac) > strlen(db.frac) ? strlen(da.frac) : strlen(db.frac);
        unsigned __int128 x[2] = {(unsigned __int128)da.ip, (unsigned __int128)db.ip};
        const nx__decimal_t *d[2] = {&da, &db};
        /* both as integers over 10^s; one that passes 2^120 becomes 0: not proven */
        for (int k = 0; k < 2; k++)
            for (size_t j = 0; j < s; j++)
                x[k] = x[k] < ((unsigned __int128)1 << 120) / 10
                           ? x[k] * 10 + (unsigned)(d[k]->frac[j] ? d[k]->frac[j] - '0' : 0)
                           : 0;
        ok = x[0] && x[1] && x[1] % x[0] == 0;
    }
    return ok;
}

static bool numbers_fit(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr,
                        bool integer)
{
    for (int lower = 1; lower >= 0; lower--) {
        bound_t bi = bound_of(i, lower), bo = bound_of(o, lower);
        if (!bi.has)
            continue;
        if (!bo.has)
            return fail(cx, "output %s has no %s bound; input %s's %s is %s", where(optr),
                        lower ? "lower" : "upper", where(iptr), bi.key, num_text(bi.x).s);
        if (integer) { /* the output's extreme integer, inclusive */
            double x = lower ? (bo.strict ? floor(bo.x) + 1 : ceil(bo.x))
                             : (bo.strict ? ceil(bo.x) - 1 : floor(bo.x));
            bo = (bound_t){true, false, x, bo.key};
        }
        bool fits = lower ? (bo.x > bi.x || (bo.x == bi.x && (!bi.strict || bo.strict)))
                          : (bo.x < bi.x || (bo.x == bi.x && (!bi.strict || bo.strict)));
        if (!fits)
            return fail(cx, "output %s's values may be %s input %s's %s %s (output's %s is %s)",
                        where(optr), lower ? (bi.strict ? "at or below" : "below")
                                           : (bi.strict ? "at or above" : "above"),
                        where(iptr), bi.key, num_text(bi.x).s, bo.key, num_text(bo.x).s);
    }
    json_t *mi = json_object_get(i, "multipleOf");
    if (json_is_number(mi)) {
        double m = json_number_value(mi);
        json_t *mo = json_object_get(o, "multipleOf");
        bool fits = m > 0 && json_is_number(mo) && multiple_divides(mi, mo);
        if (!fits && m > 0 && integer) { /* integers: multiples of 1 */
            json_t *one = json_integer(1);
            fits = one && multiple_divides(mi, one);
            json_decref(one);
        }
        if (!fits)
            return fail(cx, "cannot prove output %s's values satisfy input %s's multipleOf %s",
                        where(optr), where(iptr), num_text(m).s);
    }
    return true;
}

/* --- objects ------------------------------------------------------------------------------- */

static json_t *additional(side_t *s, json_t *node)
{
    json_t *ap = json_object_get(node, "additionalProperties");
    return ap ? ap : s->strict ? json_false() : json_true();
}

static bool objects_fit(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr)
{
    if (json_object_get(o, "patternProperties") &&
        (json_object_get(o, "additionalProperties") || cx->o.strict))
        return fail(cx, "cannot prove output %s's patternProperties fits input %s",
                    where(optr), where(iptr));
    json_t *req_o = json_object_get(o, "required");
    size_t k;
    json_t *name;
    json_array_foreach(json_object_get(i, "required"), k, name) {
        bool listed = false;
        size_t j;
        json_t *x;
        json_array_foreach(req_o, j, x) listed |= json_equal(x, name);
        if (!listed)
            return fail(cx, "output %s may omit '%.200s', which input %s requires", where(optr),
                        json_string_value(name) ? json_string_value(name) : "?", where(iptr));
    }
    json_t *po = json_object_get(o, "properties"), *pi = json_object_get(i, "properties");
    json_t *ap_o = additional(&cx->o, o), *ap_i = additional(&cx->i, i);
    char op[NX__SC_PTR], ip[NX__SC_PTR], tmp[NX__SC_PTR];
    cx->value_depth++;
    bool fits = true;
    const char *key;
    json_t *v;
    for (int side = 0; side < 2 && fits; side++) {
        json_object_foreach(side ? pi : po, key, v) {
            if (side && json_object_get(po, key))
                continue; /* done from the output's side */
            json_t *so = json_object_get(po, key), *si = json_object_get(pi, key);
            if (so) {
                nx__sc_ptr(tmp, optr, "properties");
                nx__sc_ptr(op, tmp, key);
            } else
                nx__sc_ptr(op, optr, "additionalProperties");
            if (si) {
                nx__sc_ptr(tmp, iptr, "properties");
                nx__sc_ptr(ip, tmp, key);
            } else
                nx__sc_ptr(ip, iptr, "additionalProperties");
            if (!(fits = sub(cx, so ? so : ap_o, op, si ? si : ap_i, ip)))
                break;
        }
    }
    if (fits) {
        nx__sc_ptr(op, optr, "additionalProperties");
        nx__sc_ptr(ip, iptr, "additionalProperties");
        fits = sub(cx, ap_o, op, ap_i, ip);
    }
    cx->value_depth--;
    return fits;
}

/* --- arrays -------------------------------------------------------------------------------- */

typedef struct layout {
    json_t *prefix;             /* array of schemas, or NULL */
    const char *prefix_key;     /* "prefixItems" / "items" */
    json_t *rest;               /* the schema of the items past the prefix */
    const char *rest_key;
    double min, max;            /* item counts; max INFINITY when unbounded */
} layout_t;

static layout_t layout_of(side_t *s, json_t *node)
{
    layout_t l = {.rest = json_true(), .rest_key = "items", .min = 0, .max = INFINITY};
    json_t *items = json_object_get(node, "items");
    if (s->sc.draft == NX_GRAM_DRAFT_07 && json_is_array(items)) {
        l.prefix = items;
        l.prefix_key = "items";
        json_t *add = json_object_get(node, "additionalItems");
        if (add)
            l.rest = add;
        l.rest_key = "additionalItems";
    } else {
        l.prefix = json_object_get(node, "prefixItems");
        l.prefix_key = "prefixItems";
        if (items && !json_is_array(items))
            l.rest = items;
    }
    if (!json_is_array(l.prefix))
        l.prefix = NULL;
    json_t *mn = json_object_get(node, "minItems"), *mx = json_object_get(node, "maxItems");
    if (json_is_number(mn))
        l.min = json_number_value(mn);
    if (json_is_number(mx))
        l.max = json_number_value(mx);
    return l;
}

static bool arrays_fit(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr)
{
    layout_t lo = layout_of(&cx->o, o), li = layout_of(&cx->i, i);
    if (lo.min < li.min)
        return fail(cx, "output %s may have fewer items than input %s's minItems %g",
                    where(optr), where(iptr), li.min);
    if (lo.max > li.max)
        return fail(cx, "output %s may have more items than input %s's maxItems %g",
                    where(optr), where(iptr), li.max);
    if (json_is_true(json_object_get(i, "uniqueItems")) &&
        !json_is_true(json_object_get(o, "uniqueItems")) && lo.max > 1)
        return fail(cx, "output %s may repeat items; input %s's uniqueItems forbids it",
                    where(optr), where(iptr));
    size_t n_o = lo.prefix ? json_array_size(lo.prefix) : 0;
    size_t n_i = li.prefix ? json_array_size(li.prefix) : 0;
    size_t n = n_o > n_i ? n_o : n_i;
    char op[NX__SC_PTR], ip[NX__SC_PTR];
    bool fits = true;
    cx->value_depth++;
    for (size_t p = 0; p < n && p < lo.max && fits; p++) {
        json_t *so = p < n_o ? json_array_get(lo.prefix, p) : lo.rest;
        json_t *si = p < n_i ? json_array_get(li.prefix, p) : li.rest;
        if (p < n_o)
            ptr_index(op, optr, lo.prefix_key, p);
        else
            nx__sc_ptr(op, optr, lo.rest_key);
        if (p < n_i)
            ptr_index(ip, iptr, li.prefix_key, p);
        else
            nx__sc_ptr(ip, iptr, li.rest_key);
        fits = sub(cx, so, op, si, ip);
        if (fits && json_is_false(so))
            lo.max = p; /* no array of the output reaches past here */
    }
    if (fits && lo.max > n) {
        nx__sc_ptr(op, optr, lo.rest_key);
        nx__sc_ptr(ip, iptr, li.rest_key);
        fits = sub(cx, lo.rest, op, li.rest, ip);
    }
    cx->value_depth--;
    return fits;
}

/* --- combinators --------------------------------------------------------------------------- */

/* Can no instance of o be valid under b? A sufficient test: no common type, or a property
 * both require whose every value o allows (by enum/const) b's schema refuses. */
static bool disjoint(cx_t *cx, json_t *o, json_t *b, const char *iptr)
{
    if (!(types_of(o) & types_of(b))) /* number includes integer on both sides */
        return true;
    const char *key;
    json_t *sb;
    json_object_foreach(json_object_get(b, "properties"), key, sb) {
        bool req_o = false, req_b = false;
        size_t k;
        json_t *x;
        json_array_foreach(json_object_get(o, "required"), k, x)
            req_o |= json_is_string(x) && !strcmp(json_string_value(x), key);
        json_array_foreach(json_object_get(b, "required"), k, x)
            req_b |= json_is_string(x) && !strcmp(json_string_value(x), key);
        json_t *so = json_object_get(json_object_get(o, "properties"), key);
        json_t *vals = req_o && req_b && so ? listed_values(so) : NULL;
        if (!vals)
            continue;
        char saved[sizeof cx->why];
        memcpy(saved, cx->why, sizeof saved);
        bool none = true;
        size_t n = json_array_size(vals);
        for (size_t k2 = 0; k2 < n && none; k2++) {
            json_t *one = json_array();
            json_array_append(one, json_array_get(vals, k2));
            none = !values_fit(cx, one, "", sb, iptr) && !strstr(cx->why, "cannot check");
            json_decref(one);
        }
        memcpy(cx->why, saved, sizeof saved);
        json_decref(vals);
        if (none)
            return true;
    }
    return false;
}

/* Output alternatives: every branch, with the node's other keywords merged in. */
static bool output_branches(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr,
                            const char *kw)
{
    json_t *siblings = json_copy(o);
    json_object_del(siblings, kw);
    json_t *branches = json_object_get(o, kw);
    if (!json_is_array(branches) || !json_array_size(branches)) {
        json_decref(siblings);
        return fail(cx, "output %s's '%s' is not a non-empty array", where(optr), kw);
    }
    char bptr[NX__SC_PTR];
    bool fits = true;
    size_t k;
    json_t *br;
    json_array_foreach(branches, k, br) {
        ptr_index(bptr, optr, kw, k);
        json_t *r = resolve(cx, &cx->o, br, bptr);
        if (!r) {
            fits = false;
            break;
        }
        json_t *m = NULL;
        if (json_is_object(r) && constrains(siblings)) {
            m = nx__sc_merge(&cx->o.sc, siblings, r, bptr);
            if (m && cx->o.sc.rc == NX_OK)
                m = nx__sc_keep(&cx->o.sc, m);
            else {
                json_decref(m);
                m = NULL; /* the branch alone is wider, so still sound */
            }
            cx->o.sc.rc = NX_OK;
        }
        if (!(fits = sub(cx, m ? m : r, bptr, i, iptr)))
            break;
    }
    json_decref(siblings);
    return fits;
}

/* Input alternatives: the siblings hold, and some branch takes o (oneOf: exactly one). */
static bool input_branches(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr,
                           const char *kw, bool (*rest)(cx_t *, json_t *, const char *,
                                                        json_t *, const char *))
{
    json_t *siblings = json_copy(i);
    json_object_del(siblings, kw);
    if (!nx__sc_keep(&cx->i.sc, siblings)) {
        cx->i.sc.rc = NX_OK;
        return fail(cx, "cannot prove output %s fits input %s: %s", where(optr), where(iptr),
                    cx->i.err.msg);
    }
    if (!rest(cx, o, optr, siblings, iptr))
        return false;
    json_t *branches = json_object_get(i, kw);
    if (!json_is_array(branches) || !json_array_size(branches))
        return fail(cx, "input %s's '%s' is not a non-empty array", where(iptr), kw);
    char bptr[NX__SC_PTR], first_why[sizeof cx->why] = "";
    size_t k, taken = SIZE_MAX;
    json_t *br;
    unsigned to = types_of(o);
    json_array_foreach(branches, k, br) {
        ptr_index(bptr, iptr, kw, k);
        if (sub(cx, o, optr, br, bptr)) {
            taken = k;
            break;
        }
        json_t *r = resolve(cx, &cx->i, br, bptr);
        if (!first_why[0] && r && json_is_object(r) && (types_of(r) & to))
            memcpy(first_why, cx->why, sizeof first_why);
    }
    if (taken == SIZE_MAX)
        return fail(cx, "output %s fits none of input %s's %s branches%s%.700s%s", where(optr),
                    where(iptr), kw, first_why[0] ? " (" : "", first_why,
                    first_why[0] ? ")" : "");
    if (!strcmp(kw, "oneOf")) {
        json_array_foreach(branches, k, br) {
            if (k == taken)
                continue;
            ptr_index(bptr, iptr, kw, k);
            json_t *r = resolve(cx, &cx->i, br, bptr);
            if (!r)
                return false;
            if (json_is_false(r) || (json_is_object(r) && disjoint(cx, o, r, bptr)))
                continue;
            return fail(cx, "cannot prove output %s fits exactly one of input %s's oneOf "
                            "branches (%zu, and maybe %zu)", where(optr), where(iptr),
                        taken, k);
        }
    }
    return true;
}

/* --- the pair check ------------------------------------------------------------------------- */

/* Both resolved objects, neither with $ref/allOf; o has no anyOf/oneOf. */
static bool plain_fits(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr)
{
    if (json_object_get(i, "anyOf"))
        return input_branches(cx, o, optr, i, iptr, "anyOf", plain_fits);
    if (json_object_get(i, "oneOf"))
        return input_branches(cx, o, optr, i, iptr, "oneOf", plain_fits);
    if (!constrains(i))
        return true;
    const char *key;
    json_t *v;
    json_object_foreach(i, key, v)
        if (nx__sc_key_in(nx__sc_unsupported_keys, key)) /* they constrain; not followed here */
            return fail(cx, "cannot prove output %s satisfies input %s's '%s' (not checked)",
                        where(optr), where(iptr), key);
    json_t *vals = listed_values(o);
    if (vals) {
        bool fits = values_fit(cx, vals, optr, i, iptr);
        json_decref(vals);
        return fits;
    }
    unsigned to = types_of(o), ti = types_of(i);
    char words[128];
    type_words(ti, words, sizeof words);
    json_t *ivals = listed_values(i);
    bool fits = true;
    for (unsigned b = 0; b < 7 && fits; b++) {
        unsigned t = 1u << b;
        if (!(to & t) || (t == NX__SC_INTEGER && (to & NX__SC_NUMBER)))
            continue;
        bool integer = t == NX__SC_INTEGER || (t == NX__SC_NUMBER && !(to & NX__SC_NUMBER));
        if (!(ti & t)) {
            if (to == NX__SC_ALL)
                fits = fail(cx, "output %s may be any JSON value; input %s wants %s",
                            where(optr), where(iptr), words);
            else
                fits = fail(cx, "output %s %s %s %s; input %s wants %s", where(optr),
                            (to & ~(unsigned)NX__SC_INTEGER) == t || to == t ? "is" : "may be",
                            b == 6 || b == 2 || b == 3 ? "an" : "a", TYPE_NAMES[b],
                            where(iptr), words);
            break;
        }
        if (ivals) {
            /* the output's values of this type must all be listed */
            json_t *need = json_array();
            if (t == NX__SC_NULL)
                json_array_append_new(need, json_null());
            if (t == NX__SC_BOOL) {
                json_array_append_new(need, json_true());
                json_array_append_new(need, json_false());
            }
            bool all = json_array_size(need) > 0;
            size_t k, j;
            json_t *x, *y;
            json_array_foreach(need, k, x) {
                bool in = false;
                json_array_foreach(ivals, j, y) in |= json_equal(x, y);
                all &= in;
            }
            json_decref(need);
            if (!all) {
                char *list = json_dumps(ivals, JSON_COMPACT | JSON_ENCODE_ANY);
                fits = fail(cx, "output %s may be any %s; input %s allows only %.300s",
                            where(optr), TYPE_NAMES[b], where(iptr), list ? list : "a list");
                free(list);
            }
            continue;
        }
        if (t == NX__SC_STRING)
            fits = strings_fit(cx, o, optr, i, iptr);
        else if (t == NX__SC_NUMBER || t == NX__SC_INTEGER)
            fits = numbers_fit(cx, o, optr, i, iptr, integer);
        else if (t == NX__SC_OBJECT)
            fits = objects_fit(cx, o, optr, i, iptr);
        else if (t == NX__SC_ARRAY)
            fits = arrays_fit(cx, o, optr, i, iptr);
    }
    json_decref(ivals);
    return fits;
}

static bool sub(cx_t *cx, json_t *o, const char *optr, json_t *i, const char *iptr)
{
    if (cx->oom)
        return false;
    if (++cx->steps > MAX_STEPS)
        return fail(cx, "cannot prove output %s fits input %s: the check passed %u steps",
                    where(optr), where(iptr), MAX_STEPS);
    if (cx->value_depth > MAX_VALUE_DEPTH || cx->n_stack >= MAX_STACK)
        return fail(cx, "cannot prove output %s fits input %s: nested deeper than %d",
                    where(optr), where(iptr), MAX_VALUE_DEPTH);
    json_t *ro = resolve(cx, &cx->o, o, optr);
    json_t *ri = ro ? resolve(cx, &cx->i, i, iptr) : NULL;
    if (!ro || !ri)
        return false;
    if (json_is_false(ro) || !constrains(ri))
        return true;
    if (json_is_false(ri))
        return fail(cx, "input %s admits no value; output %s admits some", where(iptr),
                    where(optr));
    if (!json_is_object(ro) && !json_is_true(ro))
        return fail(cx, "output %s is not a schema", where(optr));
    if (!json_is_object(ri))
        return fail(cx, "input %s is not a schema", where(iptr));
    for (uint32_t k = cx->n_stack; k-- > 0;) {
        pair_t *p = &cx->stack[k];
        if (p->o == ro && p->i == ri) {
            if (p->value_depth < cx->value_depth)
                return true; /* recursion below a value: coinductively proven */
            return fail(cx, "cannot prove output %s fits input %s: a reference loop with no "
                            "value between", where(optr), where(iptr));
        }
    }
    cx->stack[cx->n_stack++] = (pair_t){ro, ri, cx->value_depth};
    json_t *oo = json_is_true(ro) ? json_object() : json_incref(ro);
    bool fits;
    if (json_object_get(oo, "anyOf"))
        fits = output_branches(cx, oo, optr, ri, iptr, "anyOf");
    else if (json_object_get(oo, "oneOf"))
        fits = output_branches(cx, oo, optr, ri, iptr, "oneOf");
    else
        fits = plain_fits(cx, oo, optr, ri, iptr);
    json_decref(oo);
    cx->n_stack--;
    return fits;
}

/* --- the entry point ------------------------------------------------------------------------ */

static json_t *load(const char *text, size_t len, const char *name, nx_err_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        nx_err_set(err, NX_EINVAL, "%s schema is not JSON: %s at line %d column %d", name,
                   jerr.text, jerr.line, jerr.column);
    return root;
}

static bool side_init(side_t *s, json_t *root, nx_gram_draft_t draft, bool strict,
                      const char *name, nx_err_t *err)
{
    const char *uri = json_string_value(json_object_get(root, "$schema"));
    if (draft == NX_GRAM_DRAFT_AUTO)
        draft = uri && strstr(uri, "draft-07") ? NX_GRAM_DRAFT_07 : NX_GRAM_DRAFT_2020_12;
    *s = (side_t){.sc = {.root = root, .draft = draft, .synth = json_array(),
                         .any_rule = NX__DEAD, .str_term = NX__DEAD, .num_term = NX__DEAD,
                         .int_term = NX__DEAD},
                  .strict = strict, .name = name};
    s->sc.err = &s->err;
    if (!s->sc.synth)
        return nx_err_set(err, NX_ENOMEM, "out of memory"), false;
    return true;
}

int nx_gram_schema_compat(const char *out, size_t out_len, const char *in, size_t in_len,
                          const nx_gram_schema_opts_t *out_opts, nx_err_t *err)
{
    if (!in)
        return NX_OK; /* the input takes free text: anything fits */
    if (!out)
        return nx_err_set(err, NX_EINVAL, "output is free text (no output_schema); input "
                                          "(root) wants JSON under its input_schema");
    json_t *ro = load(out, out_len, "output", err);
    json_t *ri = ro ? load(in, in_len, "input", err) : NULL;
    if (!ri) {
        json_decref(ro);
        return NX_EINVAL;
    }
    cx_t *cx = calloc(1, sizeof *cx);
    int rc = NX_ENOMEM;
    if (!cx) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        goto out;
    }
    if (!side_init(&cx->o, ro, out_opts ? out_opts->draft : NX_GRAM_DRAFT_AUTO,
                   out_opts && out_opts->strict, "output", err) ||
        !side_init(&cx->i, ri, NX_GRAM_DRAFT_AUTO, false, "input", err))
        goto out_sides;
    if (sub(cx, ro, "", ri, ""))
        rc = NX_OK;
    else
        rc = nx_err_set(err, cx->oom ? NX_ENOMEM : NX_EINVAL, "%s", cx->why);
out_sides:
    json_decref(cx->o.sc.synth);
    json_decref(cx->i.sc.synth);
    free(cx);
out:
    json_decref(ro);
    json_decref(ri);
    return rc;
}
