/* gram_dfa.c — byte-level automata for the grammar's terminals: Thompson NFAs over byte
 * ranges, the subset construction (with byte equivalence classes, so a table row is a few
 * dozen entries rather than 256), products (intersection for pattern + length, difference for
 * "any key but the listed ones") and trimming to live states. Every size is capped: a hostile
 * pattern gets NX_ENOTSUP naming the cap, never an unbounded allocation.
 */
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

void nx__dfa_free(nx__dfa_t *d)
{
    free(d->trans);
    free(d->flags);
    memset(d, 0, sizeof *d);
}

uint32_t nx__nfa_state(nx__nfa_t *n)
{
    if (n->n_states >= NX__MAX_NFA_STATES) {
        n->overflow = true;
        return 0;
    }
    return n->n_states++;
}

static void add_edge(nx__nfa_t *n, nx__nfa_edge_t e)
{
    if (n->overflow)
        return;
    if (n->n_edges == n->cap_edges) {
        size_t cap = n->cap_edges ? 2 * n->cap_edges : 64;
        if (cap > 4 * (size_t)NX__MAX_NFA_STATES) {
            n->overflow = true;
            return;
        }
        nx__nfa_edge_t *edges = realloc(n->edges, cap * sizeof *edges);
        if (!edges) {
            n->overflow = true;
            return;
        }
        n->edges = edges;
        n->cap_edges = cap;
    }
    n->edges[n->n_edges++] = e;
}

void nx__nfa_edge(nx__nfa_t *n, uint32_t from, uint32_t to, uint8_t lo, uint8_t hi)
{
    add_edge(n, (nx__nfa_edge_t){.from = from, .to = to, .lo = lo, .hi = hi});
}

void nx__nfa_eps(nx__nfa_t *n, uint32_t from, uint32_t to)
{
    add_edge(n, (nx__nfa_edge_t){.from = from, .to = to, .is_eps = true});
}

void nx__nfa_free(nx__nfa_t *n)
{
    free(n->edges);
    memset(n, 0, sizeof *n);
}

/* --- sets of NFA states, interned ----------------------------------------------------------- */

typedef struct set_table {
    uint32_t *members;  /* all sets back to back */
    size_t n_members, cap_members;
    size_t *off;        /* [n_sets + 1] */
    uint32_t n_sets, cap_sets;
    uint32_t *slots;    /* hash: set id + 1 */
    size_t n_slots;
} set_table_t;

static uint64_t hash_u32s(const uint32_t *v, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ n;
    for (size_t i = 0; i < n; i++)
        h = (h ^ v[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static bool set_grow_slots(set_table_t *t)
{
    size_t n = t->n_slots ? 2 * t->n_slots : 1024;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return false;
    for (uint32_t id = 0; id < t->n_sets; id++) {
        const uint32_t *m = t->members + t->off[id];
        size_t h = hash_u32s(m, t->off[id + 1] - t->off[id]) & (n - 1);
        while (slots[h])
            h = (h + 1) & (n - 1);
        slots[h] = id + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->n_slots = n;
    return true;
}

/* The id of set v (sorted, distinct), adding it when new (*added); NX__DEAD when out of memory. */
static uint32_t set_intern(set_table_t *t, const uint32_t *v, size_t n, bool *added)
{
    *added = false;
    if (2 * ((size_t)t->n_sets + 1) > t->n_slots && !set_grow_slots(t))
        return NX__DEAD;
    size_t h = hash_u32s(v, n) & (t->n_slots - 1);
    for (; t->slots[h]; h = (h + 1) & (t->n_slots - 1)) {
        uint32_t id = t->slots[h] - 1;
        size_t len = t->off[id + 1] - t->off[id];
        if (len == n && !memcmp(t->members + t->off[id], v, n * sizeof *v))
            return id;
    }
    if (t->n_sets + 2 > t->cap_sets) {
        uint32_t cap = t->cap_sets ? 2 * t->cap_sets : 256;
        size_t *off = realloc(t->off, (cap + 1) * sizeof *off);
        if (!off)
            return NX__DEAD;
        t->off = off;
        t->cap_sets = cap;
    }
    if (t->n_members + n > t->cap_members) {
        size_t cap = t->cap_members ? 2 * t->cap_members : 4096;
        while (cap < t->n_members + n)
            cap *= 2;
        uint32_t *m = realloc(t->members, cap * sizeof *m);
        if (!m)
            return NX__DEAD;
        t->members = m;
        t->cap_members = cap;
    }
    if (t->n_sets == 0)
        t->off[0] = 0;
    memcpy(t->members + t->n_members, v, n * sizeof *v);
    t->n_members += n;
    uint32_t id = t->n_sets++;
    t->off[id + 1] = t->n_members;
    t->slots[h] = id + 1;
    *added = true;
    return id;
}

static void set_free(set_table_t *t)
{
    free(t->members);
    free(t->off);
    free(t->slots);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* --- trimming -------------------------------------------------------------------------------- */

/* Keep the states reachable from 0 that can reach an accepting state, renumbered in order;
 * set NX__DFA_MORE. An empty language leaves n_states 0. */
static int dfa_trim(nx__dfa_t *d)
{
    uint32_t n = d->n_states, c = d->n_classes;
    bool *live = calloc(n ? n : 1, sizeof *live);
    uint32_t *map = malloc((n ? n : 1) * sizeof *map);
    if (!live || !map) {
        free(live);
        free(map);
        return NX_ENOMEM;
    }
    for (uint32_t s = 0; s < n; s++)
        live[s] = d->flags[s] & NX__DFA_ACCEPT;
    for (bool changed = true; changed;) { /* backward fixpoint; DFAs here are small */
        changed = false;
        for (uint32_t s = 0; s < n; s++) {
            if (live[s])
                continue;
            for (uint32_t k = 0; k < c; k++) {
                uint32_t t = d->trans[(size_t)s * c + k];
                if (t != NX__DEAD && live[t]) {
                    live[s] = changed = true;
                    break;
                }
            }
        }
    }
    uint32_t m = 0;
    for (uint32_t s = 0; s < n; s++)
        map[s] = live[s] ? m++ : NX__DEAD;
    if (n == 0 || !live[0])
        m = 0;
    for (uint32_t s = 0; s < n && m; s++) {
        if (map[s] == NX__DEAD)
            continue;
        uint8_t more = 0;
        for (uint32_t k = 0; k < c; k++) {
            uint32_t t = d->trans[(size_t)s * c + k];
            t = t == NX__DEAD ? NX__DEAD : map[t];
            d->trans[(size_t)map[s] * c + k] = t;
            more |= t != NX__DEAD;
        }
        d->flags[map[s]] = (d->flags[s] & NX__DFA_ACCEPT) | (more ? NX__DFA_MORE : 0);
    }
    d->n_states = m;
    free(live);
    free(map);
    return NX_OK;
}

/* Merge equivalent states (Moore's partition refinement), keeping state 0 the start and the
 * order of first appearance. Why: the subset construction leaves states that differ only in
 * which NFA states led there (the e-mail format's "inside an atom" before and after a dot),
 * and the mask engine walks the token trie once per (terminal, state) it meets: fewer states,
 * fewer cold walks. A chain of n states needs n rounds, so past a work budget the DFA is left
 * as it is (still exact, only larger). */
#define MINIMIZE_WORK (1u << 23) /* states x classes x rounds */

static int dfa_minimize(nx__dfa_t *d)
{
    uint32_t n = d->n_states, c = d->n_classes;
    if (n < 2)
        return NX_OK;
    size_t n_slots = 2;
    while (n_slots < 2 * (size_t)n)
        n_slots *= 2;
    uint32_t *part = malloc(n * sizeof *part), *next = malloc(n * sizeof *next);
    uint32_t *slots = malloc(n_slots * sizeof *slots); /* representative state + 1 */
    int rc = NX_ENOMEM;
    if (!part || !next || !slots)
        goto out;
    uint32_t n_parts = 0;
    bool acc0 = d->flags[0] & NX__DFA_ACCEPT;
    for (uint32_t s = 0; s < n; s++) {
        part[s] = ((d->flags[s] & NX__DFA_ACCEPT) != 0) != acc0; /* the start's kind is 0 */
        n_parts = part[s] + 1 > n_parts ? part[s] + 1 : n_parts;
    }
    rc = NX_OK;
    for (uint64_t work = 0;; work += (uint64_t)n * c) {
        if (work > MINIMIZE_WORK)
            goto out; /* left unminimized */
        memset(slots, 0, n_slots * sizeof *slots);
        uint32_t count = 0;
        for (uint32_t s = 0; s < n; s++) {
            const uint32_t *row = d->trans + (size_t)s * c;
            uint64_t h = part[s] * 0x9E3779B97F4A7C15ull;
            for (uint32_t k = 0; k < c; k++)
                h = (h ^ (row[k] == NX__DEAD ? 0xFFFFFFFFu : part[row[k]])) * 0x100000001B3ull;
            size_t at = (h ^ (h >> 29)) & (n_slots - 1);
            for (;; at = (at + 1) & (n_slots - 1)) {
                if (!slots[at]) {
                    slots[at] = s + 1;
                    next[s] = count++;
                    break;
                }
                uint32_t r = slots[at] - 1;
                const uint32_t *rrow = d->trans + (size_t)r * c;
                bool same = part[r] == part[s];
                for (uint32_t k = 0; k < c && same; k++)
                    same = (row[k] == NX__DEAD) == (rrow[k] == NX__DEAD) &&
                           (row[k] == NX__DEAD || part[row[k]] == part[rrow[k]]);
                if (same) {
                    next[s] = next[r];
                    break;
                }
            }
        }
        uint32_t *t = part;
        part = next;
        next = t;
        if (count == n_parts)
            break;
        n_parts = count;
    }
    if (n_parts == n)
        goto out; /* already minimal */
    /* part[] numbers blocks in order of first appearance: block b's first state s is its
     * representative and b <= s, so rows move down in place without overwriting one that
     * is still to be read */
    for (uint32_t s = 0, b = 0; s < n; s++) {
        if (part[s] != b)
            continue;
        const uint32_t *row = d->trans + (size_t)s * c;
        uint32_t *dst = d->trans + (size_t)b * c;
        uint8_t more = 0;
        for (uint32_t k = 0; k < c; k++) {
            dst[k] = row[k] == NX__DEAD ? NX__DEAD : part[row[k]];
            more |= dst[k] != NX__DEAD;
        }
        d->flags[b] = (d->flags[s] & NX__DFA_ACCEPT) | (more ? NX__DFA_MORE : 0);
        b++;
    }
    d->n_states = n_parts;
out:
    free(part);
    free(next);
    free(slots);
    return rc;
}

/* --- subset construction ----------------------------------------------------------------- */

typedef struct csr {
    uint32_t *start; /* [n_states + 1] */
    uint32_t *edge;  /* edge indices grouped by source */
} csr_t;

static int build_csr(const nx__nfa_t *n, bool eps, csr_t *out)
{
    out->start = calloc((size_t)n->n_states + 1, sizeof *out->start);
    out->edge = malloc((n->n_edges ? n->n_edges : 1) * sizeof *out->edge);
    if (!out->start || !out->edge)
        return NX_ENOMEM;
    for (size_t i = 0; i < n->n_edges; i++)
        if (n->edges[i].is_eps == eps)
            out->start[n->edges[i].from + 1]++;
    for (uint32_t s = 0; s < n->n_states; s++)
        out->start[s + 1] += out->start[s];
    uint32_t *fill = malloc(((size_t)n->n_states + 1) * sizeof *fill);
    if (!fill)
        return NX_ENOMEM;
    memcpy(fill, out->start, ((size_t)n->n_states + 1) * sizeof *fill);
    for (size_t i = 0; i < n->n_edges; i++)
        if (n->edges[i].is_eps == eps)
            out->edge[fill[n->edges[i].from]++] = (uint32_t)i;
    free(fill);
    return NX_OK;
}

/* Close v[0..*len) under epsilon edges (seen: stamps per NFA state); sorts the result. */
static void closure(const nx__nfa_t *n, const csr_t *eps, uint32_t *v, size_t *len,
                    uint32_t *seen, uint32_t stamp)
{
    for (size_t i = 0; i < *len; i++)
        seen[v[i]] = stamp;
    for (size_t i = 0; i < *len; i++) {
        uint32_t s = v[i];
        for (uint32_t k = eps->start[s]; k < eps->start[s + 1]; k++) {
            uint32_t t = n->edges[eps->edge[k]].to;
            if (seen[t] != stamp) {
                seen[t] = stamp;
                v[(*len)++] = t;
            }
        }
    }
    qsort(v, *len, sizeof *v, cmp_u32);
}

/* Room in out->trans (and out->flags) for `states` rows of `classes` entries; *cap counts
 * trans entries and doubles. NX_OK or NX_ENOMEM (what was there stays, owned by out). */
static int grow_table(nx__dfa_t *out, uint32_t states, uint32_t classes, size_t *cap)
{
    if ((size_t)states * classes <= *cap)
        return NX_OK;
    size_t ncap = *cap ? 2 * *cap : 64 * (size_t)classes;
    while (ncap < (size_t)states * classes)
        ncap *= 2;
    uint32_t *t = realloc(out->trans, ncap * sizeof *t);
    if (t)
        out->trans = t;
    uint8_t *f = realloc(out->flags, ncap / classes + 1);
    if (f)
        out->flags = f;
    if (!t || !f)
        return NX_ENOMEM;
    *cap = ncap;
    return NX_OK;
}

int nx__nfa_to_dfa(const nx__nfa_t *n, uint32_t start, uint32_t accept, nx__dfa_t *out,
                   nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (n->overflow)
        return nx_err_set(err, NX_ENOTSUP, "regular expression over %u automaton states",
                          NX__MAX_NFA_STATES);
    int rc = NX_ENOMEM;
    csr_t by = {0}, eps = {0};
    set_table_t sets = {0};
    uint32_t *work = malloc(((size_t)n->n_states + 1) * sizeof *work);
    uint32_t *seen = calloc((size_t)n->n_states + 1, sizeof *seen);
    size_t cap_trans = 0;
    if (!work || !seen || build_csr(n, false, &by) || build_csr(n, true, &eps))
        goto out;
    /* byte classes: a new class starts wherever some edge's range starts or ends */
    bool cut[257] = {0};
    for (size_t i = 0; i < n->n_edges; i++)
        if (!n->edges[i].is_eps) {
            cut[n->edges[i].lo] = true;
            cut[n->edges[i].hi + 1] = true;
        }
    uint8_t rep[256];
    uint32_t classes = 0;
    for (int b = 0; b < 256; b++) {
        if (b == 0 || cut[b])
            rep[classes++] = (uint8_t)b;
        out->byte_class[b] = (uint8_t)(classes - 1);
    }
    out->n_classes = classes;
    uint32_t stamp = 1;
    size_t len = 1;
    uint64_t work_done = 0; /* NFA states visited, times the byte classes: the build's cost */
    work[0] = start;
    closure(n, &eps, work, &len, seen, stamp++);
    bool added;
    if (set_intern(&sets, work, len, &added) == NX__DEAD)
        goto out;
    for (uint32_t d = 0; d < sets.n_sets; d++) {
        if (sets.n_sets > NX__MAX_DFA_STATES) {
            rc = nx_err_set(err, NX_ENOTSUP, "regular expression over %u DFA states",
                            NX__MAX_DFA_STATES);
            goto out;
        }
        if (grow_table(out, sets.n_sets, classes, &cap_trans) != NX_OK)
            goto out;
        out->flags[d] = 0;
        for (size_t i = sets.off[d]; i < sets.off[d + 1]; i++)
            if (sets.members[i] == accept)
                out->flags[d] = NX__DFA_ACCEPT;
        work_done += (uint64_t)(sets.off[d + 1] - sets.off[d]) * classes;
        if (work_done > NX__MAX_DFA_WORK) {
            rc = nx_err_set(err, NX_ENOTSUP, "regular expression too complex: its automaton "
                            "took over %llu steps to build (at %u states)",
                            (unsigned long long)NX__MAX_DFA_WORK, sets.n_sets);
            goto out;
        }
        for (uint32_t k = 0; k < classes; k++) {
            uint8_t byte = rep[k];
            len = 0;
            uint32_t st = stamp++;
            for (size_t i = sets.off[d]; i < sets.off[d + 1]; i++) {
                uint32_t s = sets.members[i];
                for (uint32_t e = by.start[s]; e < by.start[s + 1]; e++) {
                    const nx__nfa_edge_t *edge = &n->edges[by.edge[e]];
                    if (edge->lo <= byte && byte <= edge->hi && seen[edge->to] != st) {
                        seen[edge->to] = st;
                        work[len++] = edge->to;
                    }
                }
            }
            uint32_t next = NX__DEAD;
            if (len) {
                closure(n, &eps, work, &len, seen, stamp++);
                next = set_intern(&sets, work, len, &added);
                if (next == NX__DEAD)
                    goto out;
            }
            out->trans[(size_t)d * classes + k] = next;
        }
    }
    out->n_states = sets.n_sets;
    rc = dfa_trim(out);
    if (rc == NX_OK)
        rc = dfa_minimize(out);
out:
    if (rc != NX_OK) {
        if (rc == NX_ENOMEM)
            nx_err_set(err, NX_ENOMEM, "out of memory building a DFA");
        nx__dfa_free(out);
    }
    free(work);
    free(seen);
    free(by.start);
    free(by.edge);
    free(eps.start);
    free(eps.edge);
    set_free(&sets);
    return rc;
}

/* --- products ---------------------------------------------------------------------------- */

int nx__dfa_product(const nx__dfa_t *a, const nx__dfa_t *b, bool minus, nx__dfa_t *out,
                    nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (a->n_states == 0)
        return NX_OK;
    /* classes of the product: pairs of classes that occur together */
    uint32_t pair_id[256];
    uint8_t rep[256];
    uint32_t classes = 0;
    for (int x = 0; x < 256; x++) {
        uint32_t key = (uint32_t)a->byte_class[x] << 8 | b->byte_class[x];
        uint32_t k = 0;
        while (k < classes && pair_id[k] != key)
            k++;
        if (k == classes) {
            pair_id[classes] = key;
            rep[classes++] = (uint8_t)x;
        }
        out->byte_class[x] = (uint8_t)k;
    }
    out->n_classes = classes;
    /* states are (a state, b state or NX__DEAD) pairs, interned as two-member sets */
    set_table_t sets = {0};
    size_t cap = 0;
    int rc = NX_ENOMEM;
    bool added;
    uint32_t start[2] = {0, b->n_states ? 0 : NX__DEAD};
    if (set_intern(&sets, start, 2, &added) == NX__DEAD)
        goto out;
    for (uint32_t d = 0; d < sets.n_sets; d++) {
        if (sets.n_sets > NX__MAX_DFA_STATES) {
            rc = nx_err_set(err, NX_ENOTSUP, "automaton product over %u states",
                            NX__MAX_DFA_STATES);
            goto out;
        }
        if (grow_table(out, sets.n_sets, classes, &cap) != NX_OK)
            goto out;
        uint32_t sa = sets.members[sets.off[d]], sb = sets.members[sets.off[d] + 1];
        bool acc_a = a->flags[sa] & NX__DFA_ACCEPT;
        bool acc_b = sb != NX__DEAD && (b->flags[sb] & NX__DFA_ACCEPT);
        out->flags[d] = (minus ? acc_a && !acc_b : acc_a && acc_b) ? NX__DFA_ACCEPT : 0;
        for (uint32_t k = 0; k < classes; k++) {
            uint8_t x = rep[k];
            uint32_t ta = a->trans[(size_t)sa * a->n_classes + a->byte_class[x]];
            uint32_t tb = sb == NX__DEAD ? NX__DEAD
                                         : b->trans[(size_t)sb * b->n_classes + b->byte_class[x]];
            uint32_t next = NX__DEAD;
            if (ta != NX__DEAD && (minus || tb != NX__DEAD)) {
                uint32_t pair[2] = {ta, tb};
                next = set_intern(&sets, pair, 2, &added);
                if (next == NX__DEAD)
                    goto out;
            }
            out->trans[(size_t)d * classes + k] = next;
        }
    }
    out->n_states = sets.n_sets;
    rc = dfa_trim(out);
    if (rc == NX_OK)
        rc = dfa_minimize(out);
out:
    if (rc != NX_OK) {
        if (rc == NX_ENOMEM)
            nx_err_set(err, NX_ENOMEM, "out of memory building a DFA product");
        nx__dfa_free(out);
    }
    set_free(&sets);
    return rc;
}
