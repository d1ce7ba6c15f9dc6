/* gram_build.c — building a grammar: rules (created before their alternatives, so recursion
 * can name them), alternatives of terminal and rule items, interned literal terminals, the
 * repeat helper ({m,n} as a chain of rules, exact), and the freeze into nx_gram_t with its
 * one check: no left recursion, which the matcher's eager expansion could not finish.
 */
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

typedef struct alt {
    uint32_t rule, off, n; /* items[off..off+n) */
} alt_t;

struct nx__gb {
    uint32_t n_rules;
    alt_t *alts;
    size_t n_alts, cap_alts;
    uint32_t *items;
    size_t n_items, cap_items;
    nx__term_t *terms;
    uint32_t n_terms, cap_terms;
    uint32_t *lit_slots; /* literal intern table: term id + 1 */
    size_t n_lit_slots;
    uint32_t n_lits;
    char **keys;         /* keyed DFA terminals (nx__gb_keyed): key i names term key_term[i] */
    uint32_t *key_term;
    size_t n_keys, cap_keys;
    bool oom;
};

nx__gb_t *nx__gb_new(void)
{
    return calloc(1, sizeof(nx__gb_t));
}

static void terms_free(nx__term_t *terms, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(terms[i].lit);
        nx__dfa_free(&terms[i].dfa);
    }
    free(terms);
}

void nx__gb_free(nx__gb_t *b)
{
    if (!b)
        return;
    free(b->alts);
    free(b->items);
    terms_free(b->terms, b->n_terms);
    free(b->lit_slots);
    for (size_t i = 0; i < b->n_keys; i++)
        free(b->keys[i]);
    free(b->keys);
    free(b->key_term);
    free(b);
}

/* A linear search: a grammar has tens of distinct keyed terminals (formats, bounded strings,
 * number ranges), each looked up once per schema node that uses it. */
uint32_t nx__gb_keyed(const nx__gb_t *b, const char *key)
{
    for (size_t i = 0; i < b->n_keys; i++)
        if (!strcmp(b->keys[i], key))
            return b->key_term[i];
    return NX__DEAD;
}

void nx__gb_key(nx__gb_t *b, const char *key, uint32_t term)
{
    if (term == NX__DEAD || nx__gb_keyed(b, key) != NX__DEAD)
        return;
    if (b->n_keys == b->cap_keys) {
        size_t cap = b->cap_keys ? 2 * b->cap_keys : 16;
        char **keys = realloc(b->keys, cap * sizeof *keys);
        if (keys)
            b->keys = keys;
        uint32_t *terms = keys ? realloc(b->key_term, cap * sizeof *terms) : NULL;
        if (!terms)
            return; /* only a cache: the terminal is rebuilt next time */
        b->key_term = terms;
        b->cap_keys = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return;
    b->keys[b->n_keys] = copy;
    b->key_term[b->n_keys++] = term;
}

uint32_t nx__gb_rule_count(const nx__gb_t *b)
{
    return b->n_rules;
}

uint32_t nx__gb_rule(nx__gb_t *b)
{
    if (b->n_rules >= NX__MAX_RULES)
        return NX__DEAD;
    return b->n_rules++;
}

int nx__gb_alt(nx__gb_t *b, uint32_t rule, const uint32_t *items, size_t n)
{
    if (rule == NX__DEAD)
        return NX_ENOTSUP;
    for (size_t i = 0; i < n; i++)
        if (items[i] == NX__DEAD || (NX__IT_KIND(items[i]) == NX__IT_REF &&
                                     NX__IT_ARG(items[i]) >= b->n_rules))
            return NX_ENOTSUP;
    if (b->n_items + n + b->n_alts + 1 > NX__MAX_ELEMS)
        return NX_ENOTSUP;
    if (b->n_alts == b->cap_alts) {
        size_t cap = b->cap_alts ? 2 * b->cap_alts : 256;
        alt_t *a = realloc(b->alts, cap * sizeof *a);
        if (!a)
            return NX_ENOMEM;
        b->alts = a;
        b->cap_alts = cap;
    }
    if (b->n_items + n > b->cap_items) {
        size_t cap = b->cap_items ? 2 * b->cap_items : 1024;
        while (cap < b->n_items + n)
            cap *= 2;
        uint32_t *it = realloc(b->items, cap * sizeof *it);
        if (!it)
            return NX_ENOMEM;
        b->items = it;
        b->cap_items = cap;
    }
    if (n) /* items may be NULL for an empty alternative */
        memcpy(b->items + b->n_items, items, n * sizeof *items);
    b->alts[b->n_alts++] = (alt_t){.rule = rule, .off = (uint32_t)b->n_items, .n = (uint32_t)n};
    b->n_items += n;
    return NX_OK;
}

static uint32_t add_term(nx__gb_t *b, nx__term_t t)
{
    if (b->n_terms >= (1u << 30) - 1)
        return NX__DEAD;
    if (b->n_terms == b->cap_terms) {
        uint32_t cap = b->cap_terms ? 2 * b->cap_terms : 64;
        nx__term_t *terms = realloc(b->terms, cap * sizeof *terms);
        if (!terms)
            return NX__DEAD;
        b->terms = terms;
        b->cap_terms = cap;
    }
    b->terms[b->n_terms] = t;
    return b->n_terms++;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 31);
}

uint32_t nx__gb_literal(nx__gb_t *b, const char *bytes, size_t len)
{
    if (len == 0 || len > (1u << 24))
        return NX__DEAD;
    if (2 * ((size_t)b->n_lits + 1) > b->n_lit_slots) {
        size_t n = b->n_lit_slots ? 2 * b->n_lit_slots : 256;
        uint32_t *slots = calloc(n, sizeof *slots);
        if (!slots)
            return NX__DEAD;
        for (size_t i = 0; i < b->n_lit_slots; i++) {
            if (!b->lit_slots[i])
                continue;
            const nx__term_t *t = &b->terms[b->lit_slots[i] - 1];
            size_t h = hash_bytes(t->lit, t->len) & (n - 1);
            while (slots[h])
                h = (h + 1) & (n - 1);
            slots[h] = b->lit_slots[i];
        }
        free(b->lit_slots);
        b->lit_slots = slots;
        b->n_lit_slots = n;
    }
    size_t h = hash_bytes(bytes, len) & (b->n_lit_slots - 1);
    for (; b->lit_slots[h]; h = (h + 1) & (b->n_lit_slots - 1)) {
        const nx__term_t *t = &b->terms[b->lit_slots[h] - 1];
        if (t->len == len && !memcmp(t->lit, bytes, len))
            return b->lit_slots[h] - 1;
    }
    char *copy = malloc(len);
    if (!copy)
        return NX__DEAD;
    memcpy(copy, bytes, len);
    uint32_t id = add_term(b, (nx__term_t){.kind = NX__T_LITERAL, .lit = copy,
                                           .len = (uint32_t)len});
    if (id == NX__DEAD) {
        free(copy);
        return NX__DEAD;
    }
    b->lit_slots[h] = id + 1;
    b->n_lits++;
    return id;
}

void nx__gb_term_strlen(nx__gb_t *b, uint32_t term, uint32_t per_count, uint32_t max)
{
    if (term < b->n_terms && b->terms[term].kind == NX__T_DFA) {
        b->terms[term].strlen_k = per_count;
        b->terms[term].strlen_max = max;
    }
}

uint32_t nx__gb_dfa(nx__gb_t *b, nx__dfa_t *dfa)
{
    uint32_t id = add_term(b, (nx__term_t){.kind = NX__T_DFA, .dfa = *dfa});
    if (id == NX__DEAD)
        nx__dfa_free(dfa);
    memset(dfa, 0, sizeof *dfa);
    return id;
}

uint32_t nx__gb_repeat(nx__gb_t *b, uint32_t item, uint32_t sep, uint32_t min, uint32_t max,
                       nx_err_t *err)
{
    if (min > NX__MAX_REPEAT || (max != UINT32_MAX && max > NX__MAX_REPEAT)) {
        nx_err_set(err, NX_ENOTSUP, "repetition bound %u over %u",
                   min > NX__MAX_REPEAT ? min : max, NX__MAX_REPEAT);
        return NX__DEAD;
    }
    if (max < min || item == NX__DEAD) {
        nx_err_set(err, NX_EINVAL, "repetition of nothing or with max %u < min %u", max, min);
        return NX__DEAD;
    }
    /* more: the rule for "zero or more further items, each after sep" (unbounded), or the
     * chain O_k ::= sep item O_{k-1} | ε for the optional ones of a bounded repeat */
    uint32_t more = nx__gb_rule(b);
    uint32_t with_sep[3], n_ws = 0;
    if (sep != NX__DEAD)
        with_sep[n_ws++] = sep;
    with_sep[n_ws++] = item;
    int rc = NX_OK;
    if (max == UINT32_MAX) {
        with_sep[n_ws] = NX__REF(more);
        rc |= nx__gb_alt(b, more, with_sep, n_ws + 1);
        rc |= nx__gb_alt(b, more, NULL, 0);
    } else {
        uint32_t optional = max - (min ? min : 1); /* items after the first/required ones */
        rc |= nx__gb_alt(b, more, NULL, 0);
        for (uint32_t k = 0; k < optional && rc == NX_OK; k++) {
            uint32_t next = nx__gb_rule(b);
            with_sep[n_ws] = NX__REF(more);
            rc |= nx__gb_alt(b, next, with_sep, n_ws + 1);
            rc |= nx__gb_alt(b, next, NULL, 0);
            more = next;
        }
    }
    uint32_t rule = nx__gb_rule(b);
    if (rc != NX_OK || rule == NX__DEAD) {
        nx_err_set(err, NX_ENOTSUP, "grammar over its size cap");
        return NX__DEAD;
    }
    if (max == 0)
        rc = nx__gb_alt(b, rule, NULL, 0);
    else {
        uint32_t first = min ? min : 1;
        size_t n = 0, cap = (size_t)first * 2 + 1;
        uint32_t *items = malloc(cap * sizeof *items);
        if (!items) {
            nx_err_set(err, NX_ENOMEM, "out of memory");
            return NX__DEAD;
        }
        for (uint32_t i = 0; i < first; i++) {
            if (i && sep != NX__DEAD)
                items[n++] = sep;
            items[n++] = item;
        }
        items[n++] = NX__REF(more);
        rc = nx__gb_alt(b, rule, items, n);
        free(items);
        if (min == 0 && rc == NX_OK)
            rc = nx__gb_alt(b, rule, NULL, 0);
    }
    if (rc != NX_OK) {
        nx_err_set(err, NX_ENOTSUP, "grammar over its size cap");
        return NX__DEAD;
    }
    return rule;
}

/* --- freezing ------------------------------------------------------------------------------ */

void nx_gram_destroy(nx_gram_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_gram_t *g = *self_p;
    free(g->items);
    free(g->alt_start);
    free(g->rule_alt);
    terms_free(g->terms, g->n_terms);
    nx__tc_shared_free(g->shared);
    free(g);
    *self_p = NULL;
}

void nx_gram_stats(const nx_gram_t *self, uint32_t *rules, uint32_t *terminals,
                   uint32_t *dfa_states)
{
    uint32_t states = 0;
    for (uint32_t i = 0; i < self->n_terms; i++)
        states += self->terms[i].kind == NX__T_DFA ? self->terms[i].dfa.n_states
                                                   : self->terms[i].len + 1;
    if (rules)
        *rules = self->n_rules;
    if (terminals)
        *terminals = self->n_terms;
    if (dfa_states)
        *dfa_states = states;
}

static bool term_nullable(const nx__term_t *t)
{
    return t->kind == NX__T_DFA && t->dfa.n_states && (t->dfa.flags[0] & NX__DFA_ACCEPT);
}

/* Left recursion: a rule that can reach itself without consuming a byte. Nullable rules by
 * fixpoint, then an iterative depth-first search over "starts with" edges (grammars may have
 * millions of rules: no recursion on the C stack). Returns the rule on a cycle or NX__DEAD. */
static uint32_t left_recursive(const nx_gram_t *g)
{
    uint32_t n = g->n_rules, found = NX__DEAD;
    bool *nullable = calloc(n ? n : 1, sizeof *nullable);
    uint8_t *color = calloc(n ? n : 1, 1);
    uint32_t *stack = malloc(2 * ((size_t)n + 1) * sizeof *stack);
    if (!nullable || !color || !stack)
        goto out;
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t r = 0; r < n; r++) {
            if (nullable[r])
                continue;
            for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1] && !nullable[r]; a++) {
                const uint32_t *it = g->items + g->alt_start[a];
                bool all = true;
                for (; NX__IT_KIND(*it) != NX__IT_END && all; it++)
                    all = NX__IT_KIND(*it) == NX__IT_REF ? nullable[NX__IT_ARG(*it)]
                                                         : term_nullable(&g->terms[*it]);
                if (all)
                    nullable[r] = changed = true;
            }
        }
    }
    /* stack entries: (rule, next position to look at as alt index << 8 | item index) */
    for (uint32_t root = 0; root < n && found == NX__DEAD; root++) {
        if (color[root])
            continue;
        size_t sp = 0;
        stack[sp++] = root;
        stack[sp++] = 0;
        color[root] = 1;
        while (sp && found == NX__DEAD) {
            uint32_t r = stack[sp - 2], cursor = stack[sp - 1];
            uint32_t a = g->rule_alt[r] + (cursor >> 8), i = cursor & 0xFF;
            if (a >= g->rule_alt[r + 1]) {
                color[r] = 2;
                sp -= 2;
                continue;
            }
            const uint32_t *it = g->items + g->alt_start[a];
            uint32_t x = it[i];
            bool next_alt = NX__IT_KIND(x) == NX__IT_END || i >= 255;
            if (!next_alt && NX__IT_KIND(x) == NX__IT_TERM)
                next_alt = !term_nullable(&g->terms[x]);
            if (next_alt) {
                stack[sp - 1] = (cursor & ~0xFFu) + 0x100;
                continue;
            }
            uint32_t s = NX__IT_ARG(x);
            /* after this item: the next item of the alternative if s is nullable */
            bool go_on = NX__IT_KIND(x) == NX__IT_TERM || nullable[s];
            stack[sp - 1] = go_on ? cursor + 1 : (cursor & ~0xFFu) + 0x100;
            if (NX__IT_KIND(x) == NX__IT_REF) {
                if (color[s] == 1)
                    found = s;
                else if (color[s] == 0) {
                    color[s] = 1;
                    stack[sp++] = s;
                    stack[sp++] = 0;
                }
            }
        }
    }
out:
    free(nullable);
    free(color);
    free(stack);
    return found;
}

nx_gram_t *nx__gb_finish(nx__gb_t *b, uint32_t root, const char *const *names, size_t n_names,
                         nx_err_t *err)
{
    nx_gram_t *g = calloc(1, sizeof *g);
    if (!g || root >= b->n_rules)
        goto fail;
    g->shared = nx__tc_shared_new(); /* NULL is allowed: no sharing */
    uint32_t nr = b->n_rules;
    g->n_rules = nr;
    g->root = root;
    g->rule_alt = calloc((size_t)nr + 1, sizeof *g->rule_alt);
    g->alt_start = malloc((b->n_alts ? b->n_alts : 1) * sizeof *g->alt_start);
    g->items = malloc((b->n_items + b->n_alts + 1) * sizeof *g->items);
    uint32_t *order = malloc((b->n_alts ? b->n_alts : 1) * sizeof *order);
    if (!g->rule_alt || !g->alt_start || !g->items || !order) {
        free(order);
        goto fail;
    }
    /* group the alternatives by rule, keeping their order within a rule */
    for (size_t a = 0; a < b->n_alts; a++)
        g->rule_alt[b->alts[a].rule + 1]++;
    for (uint32_t r = 0; r < nr; r++)
        g->rule_alt[r + 1] += g->rule_alt[r];
    uint32_t *fill = malloc(((size_t)nr + 1) * sizeof *fill);
    if (!fill) {
        free(order);
        goto fail;
    }
    memcpy(fill, g->rule_alt, ((size_t)nr + 1) * sizeof *fill);
    for (size_t a = 0; a < b->n_alts; a++)
        order[fill[b->alts[a].rule]++] = (uint32_t)a;
    free(fill);
    uint32_t pos = 0;
    for (size_t k = 0; k < b->n_alts; k++) {
        const alt_t *a = &b->alts[order[k]];
        g->alt_start[k] = pos;
        if (a->n) /* b->items is NULL while every alternative is empty */
            memcpy(g->items + pos, b->items + a->off, a->n * sizeof *g->items);
        pos += a->n;
        g->items[pos++] = NX__END;
    }
    free(order);
    g->n_items = pos;
    g->terms = b->terms;
    g->n_terms = b->n_terms;
    b->terms = NULL;
    b->n_terms = 0;
    uint32_t bad = left_recursive(g);
    if (bad != NX__DEAD) {
        if (names && bad < n_names && names[bad])
            nx_err_set(err, NX_EINVAL, "left recursion through rule '%s'", names[bad]);
        else
            nx_err_set(err, NX_EINVAL, "left recursion in the grammar");
        nx_gram_destroy(&g);
        nx__gb_free(b);
        return NULL;
    }
    nx__gb_free(b);
    return g;
fail:
    nx_err_set(err, NX_ENOMEM, "out of memory freezing a grammar");
    nx_gram_destroy(&g);
    nx__gb_free(b);
    return NULL;
}
