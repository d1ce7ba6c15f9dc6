/* typed.c — compiled output constraints, their cache, input checks against an input_schema
 * and answers' JSON values (typed.h says what and why).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "typed.h"

#define INPUT_MAX_DEPTH 128 /* nesting an input may have: deeper is refused, not recursed */

struct nx_typed {
    atomic_uint refs;
    nx_typed_kind_t kind;
    bool strict;
    nx_gram_t *gram;
    char digest[NX_TYPED_DIGEST_HEX];
};

static const char *kind_tag(nx_typed_kind_t kind)
{
    switch (kind) {
    case NX_TYPED_SCHEMA: return "schema";
    case NX_TYPED_JSON_OBJECT: return "json_object";
    case NX_TYPED_GBNF: return "gbnf";
    default: return "none";
    }
}

/* A schema's canonical text (compact, keys as given); caller frees. */
static char *canonical(const char *text, size_t len, nx_err_t *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        nx_err_set(err, NX_EINVAL, "the schema is not JSON: %s at line %d column %d", jerr.text,
                   jerr.line, jerr.column);
        return NULL;
    }
    char *out = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!out)
        nx_err_set(err, NX_ENOMEM, "out of memory writing a schema");
    return out;
}

static void digest_text(nx_typed_kind_t kind, bool strict, const char *text, size_t len,
                        char *out)
{
    /* the kind and the flag seed the hash of the text */
    char head[32];
    int head_len = snprintf(head, sizeof head, "%s\n%d\n", kind_tag(kind), strict ? 1 : 0);
    XXH64_hash_t seed = XXH3_64bits(head, (size_t)head_len);
    XXH128_hash_t h = XXH3_128bits_withSeed(text ? text : "", text ? len : 0, seed);
    snprintf(out, NX_TYPED_DIGEST_HEX, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
}

/* The canonical text of (kind, text): a copy for GBNF, nothing for json_object. */
static int canonical_of(nx_typed_kind_t kind, const char *text, size_t len, char **out,
                        size_t *out_len, nx_err_t *err)
{
    *out = NULL;
    *out_len = 0;
    if (kind == NX_TYPED_SCHEMA) {
        if (!(*out = canonical(text, len, err)))
            return err ? err->code : NX_EINVAL;
    } else if (kind == NX_TYPED_GBNF) {
        if (!(*out = strndup(text ? text : "", len)))
            return nx_err_set(err, NX_ENOMEM, "out of memory copying a grammar");
    } else if (kind != NX_TYPED_JSON_OBJECT) {
        return nx_err_set(err, NX_EINVAL, "no constraint kind given");
    }
    if (*out)
        *out_len = strlen(*out);
    return NX_OK;
}

int nx_typed_digest_of(nx_typed_kind_t kind, const char *text, size_t len, bool strict,
                       char *out, nx_err_t *err)
{
    char *canon;
    size_t canon_len;
    int rc = canonical_of(kind, text, len, &canon, &canon_len, err);
    if (rc == NX_OK)
        digest_text(kind, strict, canon, canon_len, out);
    free(canon);
    return rc;
}

int nx_typed_new(nx_typed_kind_t kind, const char *text, size_t len, bool strict,
                 nx_typed_t **out, nx_err_t *err)
{
    *out = NULL;
    char *canon;
    size_t canon_len;
    int rc = canonical_of(kind, text, len, &canon, &canon_len, err);
    if (rc != NX_OK)
        return rc;
    nx_typed_t *t = calloc(1, sizeof *t);
    if (!t) {
        free(canon);
        return nx_err_set(err, NX_ENOMEM, "out of memory compiling a schema");
    }
    atomic_init(&t->refs, 1);
    t->kind = kind;
    t->strict = strict;
    digest_text(kind, strict, canon, canon_len, t->digest);
    nx_gram_schema_opts_t opts = {.draft = NX_GRAM_DRAFT_AUTO, .strict = strict};
    if (kind == NX_TYPED_SCHEMA)
        t->gram = nx_gram_from_json_schema(canon, canon_len, &opts, err);
    else if (kind == NX_TYPED_GBNF)
        t->gram = nx_gram_from_gbnf(canon, canon_len, err);
    else
        t->gram = nx_gram_json_object(err);
    free(canon);
    if (!t->gram) {
        free(t);
        return err && err->code ? err->code : NX_EINVAL;
    }
    *out = t;
    return NX_OK;
}

nx_typed_t *nx_typed_ref(nx_typed_t *self)
{
    if (self)
        atomic_fetch_add(&self->refs, 1);
    return self;
}

void nx_typed_release(nx_typed_t **self_p)
{
    nx_typed_t *t = *self_p;
    *self_p = NULL;
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    nx_gram_destroy(&t->gram);
    free(t);
}

nx_typed_kind_t nx_typed_kind(const nx_typed_t *self)
{
    return self->kind;
}

const nx_gram_t *nx_typed_gram(const nx_typed_t *self)
{
    return self->gram;
}

const char *nx_typed_digest(const nx_typed_t *self)
{
    return self->digest;
}

bool nx_typed_has_value(const nx_typed_t *self)
{
    return self && (self->kind == NX_TYPED_SCHEMA || self->kind == NX_TYPED_JSON_OBJECT);
}

/* --- the cache ------------------------------------------------------------------------- */

typedef struct slot {
    nx_typed_t *typed;   /* a reference held by the cache, or NULL */
    uint64_t used;       /* the cache's clock at the last hit */
} slot_t;

struct nx_typed_cache {
    slot_t *slots;
    size_t capacity;
    uint64_t clock;
    size_t compiled, hits;
};

nx_typed_cache_t *nx_typed_cache_new(size_t capacity)
{
    nx_typed_cache_t *c = calloc(1, sizeof *c);
    if (c && !(c->slots = calloc(capacity ? capacity : 1, sizeof *c->slots))) {
        free(c);
        return NULL;
    }
    if (c)
        c->capacity = capacity ? capacity : 1;
    return c;
}

void nx_typed_cache_destroy(nx_typed_cache_t **self_p)
{
    nx_typed_cache_t *c = *self_p;
    if (!c)
        return;
    for (size_t i = 0; i < c->capacity; i++)
        nx_typed_release(&c->slots[i].typed);
    free(c->slots);
    free(c);
    *self_p = NULL;
}

int nx_typed_cache_get(nx_typed_cache_t *self, nx_typed_kind_t kind, const char *text,
                       size_t len, bool strict, nx_typed_t **out, nx_err_t *err)
{
    *out = NULL;
    char digest[NX_TYPED_DIGEST_HEX];
    int rc = nx_typed_digest_of(kind, text, len, strict, digest, err);
    if (rc != NX_OK)
        return rc;
    self->clock++;
    slot_t *victim = &self->slots[0];
    for (size_t i = 0; i < self->capacity; i++) {
        slot_t *s = &self->slots[i];
        if (s->typed && strcmp(s->typed->digest, digest) == 0) {
            s->used = self->clock;
            self->hits++;
            *out = nx_typed_ref(s->typed);
            return NX_OK;
        }
        if (!s->typed || (victim->typed && s->used < victim->used))
            victim = s;
    }
    nx_typed_t *t;
    if ((rc = nx_typed_new(kind, text, len, strict, &t, err)) != NX_OK)
        return rc;
    self->compiled++;
    nx_typed_release(&victim->typed);
    victim->typed = t;
    victim->used = self->clock;
    *out = nx_typed_ref(t);
    return NX_OK;
}

void nx_typed_cache_counts(const nx_typed_cache_t *self, size_t *compiled, size_t *hits)
{
    *compiled = self->compiled;
    *hits = self->hits;
}

/* --- inputs ------------------------------------------------------------------------------ */

typedef struct walk {
    nx_gram_matcher_t *m;
    nx_err_t *err;
    int rc;
} walk_t;

static void ptr_join(char *out, size_t cap, const char *ptr, const char *key)
{
    size_t n = (size_t)snprintf(out, cap, "%s/", ptr);
    for (; *key && n + 3 < cap; key++) {
        if (*key == '~' || *key == '/') {
            out[n++] = '~';
            out[n++] = *key == '~' ? '0' : '1';
        } else
            out[n++] = *key;
    }
    out[n < cap ? n : cap - 1] = '\0';
}

static const char *where(const char *ptr)
{
    return *ptr ? ptr : "the root";
}

static int walk_fail(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int walk_fail(walk_t *w, const char *fmt, ...)
{
    if (w->rc == NX_OK) {
        va_list ap;
        va_start(ap, fmt);
        w->rc = nx_err_vset(w->err, NX_EINVAL, fmt, ap);
        va_end(ap);
        if (w->rc == NX_OK)
            w->rc = NX_EINVAL;
    }
    return w->rc;
}

/* Feed text; false when the grammar refuses it (the state is then unchanged). An error other
 * than a refusal (the matcher's state cap) ends the walk. */
static bool feed(walk_t *w, const char *text, size_t len)
{
    nx_err_t e = {0};
    int rc = nx_gram_matcher_advance(w->m, text, len, &e);
    if (rc != NX_OK && rc != NX_EINVAL)
        walk_fail(w, "the input_schema check stopped: %s", e.msg);
    return rc == NX_OK;
}

static bool feed_str(walk_t *w, const char *text)
{
    return feed(w, text, strlen(text));
}

static int walk_value(walk_t *w, const json_t *v, const char *ptr, int depth);

static int walk_object(walk_t *w, const json_t *v, const char *ptr, int depth)
{
    if (!feed_str(w, "{"))
        return walk_fail(w, "input at %s: an object is not allowed here", where(ptr));
    size_t n = json_object_size(v);
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys)
        return walk_fail(w, "out of memory checking the input");
    size_t k = 0;
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)v, key, member)
        keys[k++] = key;
    bool first = true;
    for (size_t left = n; left > 0 && w->rc == NX_OK; left--, first = false) {
        /* the first remaining member (in the input's order) that the schema admits here */
        size_t pick = n;
        for (size_t i = 0; i < n && pick == n; i++) {
            if (!keys[i])
                continue;
            json_t *kstr = json_string(keys[i]);
            char *ktext = kstr ? json_dumps(kstr, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
            json_decref(kstr);
            if (!ktext)
                break;
            nx_gram_state_t before = nx_gram_matcher_state(w->m);
            bool ok = (first || feed_str(w, ",")) && feed_str(w, ktext) && feed_str(w, ":");
            free(ktext);
            if (ok)
                pick = i;
            else
                nx_gram_matcher_set_state(w->m, before);
        }
        if (pick == n) {
            size_t i = 0;
            while (!keys[i])
                i++;
            char at[512];
            ptr_join(at, sizeof at, ptr, keys[i]);
            walk_fail(w, "input at %s: property '%.64s' is not allowed here", at, keys[i]);
            break;
        }
        char at[512];
        ptr_join(at, sizeof at, ptr, keys[pick]);
        walk_value(w, json_object_get(v, keys[pick]), at, depth + 1);
        keys[pick] = NULL;
    }
    free(keys);
    if (w->rc == NX_OK && !feed_str(w, "}"))
        walk_fail(w, "input at %s: the object lacks a required property", where(ptr));
    return w->rc;
}

static int walk_array(walk_t *w, const json_t *v, const char *ptr, int depth)
{
    if (!feed_str(w, "["))
        return walk_fail(w, "input at %s: an array is not allowed here", where(ptr));
    for (size_t i = 0; i < json_array_size(v) && w->rc == NX_OK; i++) {
        if (i > 0 && !feed_str(w, ","))
            return walk_fail(w, "input at %s: the array has too many items (%zu)", where(ptr),
                             json_array_size(v));
        char at[512], index[24];
        snprintf(index, sizeof index, "%zu", i);
        ptr_join(at, sizeof at, ptr, index);
        walk_value(w, json_array_get(v, i), at, depth + 1);
    }
    if (w->rc == NX_OK && !feed_str(w, "]"))
        walk_fail(w, "input at %s: the array has too few items (%zu)", where(ptr),
                  json_array_size(v));
    return w->rc;
}

static int walk_value(walk_t *w, const json_t *v, const char *ptr, int depth)
{
    if (depth > INPUT_MAX_DEPTH)
        return walk_fail(w, "input at %s: nested deeper than %d", where(ptr), INPUT_MAX_DEPTH);
    if (json_is_object(v))
        return walk_object(w, v, ptr, depth);
    if (json_is_array(v))
        return walk_array(w, v, ptr, depth);
    /* 5.0 is an integer (the spec): an integral real within ±2^53 is fed as its integer text,
     * which the grammar admits under "integer" and "number" alike (it writes integers without
     * a fraction); a real with a fraction, or past 2^53, as jansson writes it */
    double x = json_is_real(v) ? json_real_value(v) : 0.5;
    char *text = NULL;
    if (x == floor(x) && fabs(x) <= 9007199254740992.0) {
        if (asprintf(&text, "%lld", (long long)x) < 0)
            text = NULL;
    } else
        text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!text)
        return walk_fail(w, "out of memory checking the input");
    if (!feed_str(w, text))
        walk_fail(w, "input at %s: the value %.64s%s does not match the input_schema",
                  where(ptr), text, strlen(text) > 64 ? "..." : "");
    free(text);
    return w->rc;
}

int nx_typed_check_input(const nx_typed_t *self, const char *input, nx_err_t *err)
{
    json_error_t jerr;
    json_t *doc = json_loads(input ? input : "", JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                             &jerr);
    if (!doc)
        return nx_err_set(err, NX_EINVAL, "input is not JSON (the agent has an input_schema): "
                          "%s at line %d column %d", jerr.text, jerr.line, jerr.column);
    walk_t w = {.err = err};
    if (!(w.m = nx_gram_matcher_new(self->gram, NULL, err))) {
        json_decref(doc);
        return err && err->code ? err->code : NX_ENOMEM;
    }
    walk_value(&w, doc, "", 0);
    if (w.rc == NX_OK && !nx_gram_matcher_accepting(w.m))
        walk_fail(&w, "input at the root: incomplete under the input_schema");
    nx_gram_matcher_destroy(&w.m);
    json_decref(doc);
    return w.rc;
}

/* --- answers ----------------------------------------------------------------------------- */

json_t *nx_typed_answer_value(const char *text)
{
    if (!text)
        return NULL;
    const char *s = text;
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    if (strncmp(s, "<think>", 7) == 0) {
        const char *end = strstr(s, "</think>");
        if (!end)
            return NULL;
        s = end + 8;
    }
    json_error_t jerr;
    return json_loads(s, JSON_DECODE_ANY, &jerr);
}
