/* gram_mask.c — token masks, walking the vocabulary's token tries (built in gram_vocab.c).
 *
 * A trie is a flat array in depth-first order (byte, depth, token, end of subtree), so a
 * walk is a loop over an array that skips a whole subtree with one assignment when the
 * automaton rejects its prefix.
 *
 * A mask for a matcher state is the union, over its top nodes, of what each top allows. For a
 * top inside terminal T at DFA state d, the tokens split in three, and the split depends on
 * (T, d) only, so it is computed once per grammar and vocabulary (shared by the grammar's
 * matchers, see nx__tc_shared; a DFA terminal's by every grammar with the same DFA, see
 * vocab_classes) by walking the trie through T's DFA alone (a literal: along its remaining
 * bytes only, see tclass_build_literal):
 *   - sure: the token's bytes stay inside T (the DFA is still live after them): allowed
 *     whatever the stack below;
 *   - crossing: the DFA dies inside the token but passed an accepting state after j >= 1
 *     bytes: allowed iff the stack continues with the rest token[j:]. These are grouped by that
 *     remainder and checked against the top's continuation set, a few bytes each;
 *   - the rest: rejected.
 * (Ending T before any byte is another member of the same set: expansion is eager.) Masks are
 * then cached per state set, so a state seen again costs a copy.
 */
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "gram_internal.h"
#include "gram_vocab.h"
/* --- per (terminal, state) token classes ------------------------------------------------------- */

typedef struct tclass {
    uint32_t term, dstate;
    uint32_t *sure_bits;  /* dense, or NULL */
    uint32_t *sure_ids;   /* sparse otherwise */
    uint32_t n_sure;
    uint32_t n_groups;
    uint32_t *grp_tok;    /* [n_groups + 1]: tokens of group g are toks[grp_tok[g]..] */
    uint32_t *grp_rem;    /* [n_groups]: token whose bytes [grp_at[g]..] are the remainder */
    uint32_t *grp_at;
    uint32_t *toks;
    /* A literal's crossing tokens beyond its end: the subtree of v->all's nodes [sub_lo,
     * sub_hi) below the node of the literal's remaining bytes, at depth sub_depth; each
     * token there is allowed iff the continuation takes its bytes past sub_depth. */
    uint32_t sub_lo, sub_hi, sub_depth;
} tclass_t;

/* A matcher's view of a class: its own, or one the grammar or the vocabulary keeps. The key
 * is here, not in the class: a vocabulary's class serves terminals of many grammars. */
typedef struct local_tc {
    uint32_t term, dstate;
    tclass_t *tc;         /* NULL: a free slot */
    uint32_t stamp;       /* the mask computation that last OR-ed its sure set */
    bool owned;           /* the matcher frees it (no table below keeps it) */
} local_tc_t;

typedef struct shared_tc {
    uint32_t term, dstate;
    tclass_t *tc;         /* NULL: a free slot */
    bool owned;           /* the grammar frees it (not the vocabulary's) */
} shared_tc_t;

/* A DFA terminal's classes, kept by the vocabulary for every grammar with the same DFA (the
 * free JSON string, numbers, formats: the same automaton in every schema), so a new grammar's
 * first masks find them walked. Keyed by the DFA's content (a copy is kept), and only for
 * DFAs of up to VOCAB_DFA_WORDS transitions, where hashing one costs a few µs. */
#define VOCAB_DFA_WORDS 16384u
typedef struct vocab_dfa {
    uint64_t hash;
    nx__dfa_t dfa;        /* a copy */
} vocab_dfa_t;

typedef struct vocab_tc {
    uint32_t dfa, dstate; /* dfa: index in vocab_classes.dfas */
    tclass_t *tc;         /* NULL: a free slot */
} vocab_tc_t;

struct vocab_classes {
    pthread_mutex_t lock;
    vocab_dfa_t *dfas;
    size_t n_dfas, cap_dfas;
    vocab_tc_t *tc;       /* hash of (dfa, dstate) */
    size_t n_tc, used_tc;
    size_t bytes;         /* the classes' memory, about: capped by VOCAB_CLASS_BYTES */
};
/* A daemon lives as long as its vocabularies and sees schemas without end: past these caps
 * new DFAs and classes stay with their grammars (freed with them), the kept ones serve on. */
#define VOCAB_MAX_DFAS 1024u
#define VOCAB_CLASS_BYTES (64u << 20)

/* The classes of one grammar under one vocabulary, shared by all its matchers (a server
 * that makes a matcher per task pays each cold walk once per grammar). Immutable once
 * inserted; the table is guarded by `lock`. The first vocabulary a matcher brings claims
 * it; matchers under another vocabulary keep their classes to themselves. */
struct nx__tc_shared {
    pthread_mutex_t lock;
    uint64_t vocab_serial; /* 0 until claimed */
    shared_tc_t *tc;       /* hash of (term, dstate) */
    size_t n_tc, used_tc;
    uint32_t *term_vdfa;   /* [n_terms]: the vocabulary's index of each DFA terminal (hashing
                            * one costs up to ~20 µs: once per grammar), VDFA_UNKNOWN */
};
#define VDFA_UNKNOWN (UINT32_MAX - 1)

#define MASK_SLOTS 64u

struct nx__mask_cache {
    local_tc_t *tc;       /* hash of (term, dstate) */
    size_t n_tc, used_tc;
    uint32_t *mask_set;   /* [MASK_SLOTS]: the set each cached mask is for, NX__DEAD = free */
    uint32_t *masks;      /* [MASK_SLOTS * words] */
    uint32_t next_slot, stamp;
    uint32_t *walk_state; /* [max_len + 1] */
    uint8_t *walk_acc;
    uint32_t *pairs;      /* crossing (token, offset) pairs being collected */
    size_t n_pairs, cap_pairs;
    uint32_t *ids;
    size_t n_ids, cap_ids;
};

static void tclass_free(tclass_t *c)
{
    if (!c)
        return;
    free(c->sure_bits);
    free(c->sure_ids);
    free(c->grp_tok);
    free(c->grp_rem);
    free(c->grp_at);
    free(c->toks);
    free(c);
}

void nx__mask_cache_free(nx__mask_cache_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_tc; i++)
        if (c->tc[i].owned)
            tclass_free(c->tc[i].tc);
    free(c->tc);
    free(c->mask_set);
    free(c->masks);
    free(c->walk_state);
    free(c->walk_acc);
    free(c->pairs);
    free(c->ids);
    free(c);
}

void nx__mask_cache_forget_states(nx__mask_cache_t *c)
{
    for (uint32_t i = 0; c && i < MASK_SLOTS; i++)
        c->mask_set[i] = NX__DEAD;
}

static bool grow(uint32_t **v, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? 2 * *cap : 1024;
    while (n < need)
        n *= 2;
    uint32_t *p = realloc(*v, n * sizeof *p);
    if (!p)
        return false;
    *v = p;
    *cap = n;
    return true;
}

/* Order crossing pairs by their remainder bytes, so equal remainders are adjacent and
 * neighbours share prefixes. */
static int cmp_pair(const void *a, const void *b, void *ctx)
{
    const nx_gram_vocab_t *v = ctx;
    const uint32_t *x = a, *y = b;
    const char *sx = v->bytes + v->off[x[0]] + x[1], *sy = v->bytes + v->off[y[0]] + y[1];
    uint32_t lx = v->off[x[0] + 1] - v->off[x[0]] - x[1];
    uint32_t ly = v->off[y[0] + 1] - v->off[y[0]] - y[1];
    int c = memcmp(sx, sy, lx < ly ? lx : ly);
    return c ? c : lx != ly ? (lx < ly ? -1 : 1) : (x[0] < y[0] ? -1 : x[0] > y[0]);
}

static bool add_tok(nx__mask_cache_t *c, const nx_gram_vocab_t *v, int32_t tok)
{
    for (; tok >= 0; tok = v->same_next[tok]) {
        if (!grow(&c->ids, &c->cap_ids, c->n_ids + 1))
            return false;
        c->ids[c->n_ids++] = (uint32_t)tok;
    }
    return true;
}

static bool add_pairs(nx__mask_cache_t *c, const nx_gram_vocab_t *v, int32_t tok, uint32_t depth)
{
    for (; tok >= 0; tok = v->same_next[tok])
        for (uint32_t j = 1; j < depth; j++) {
            if (!c->walk_acc[j])
                continue;
            if (!grow(&c->pairs, &c->cap_pairs, c->n_pairs + 2))
                return false;
            c->pairs[c->n_pairs++] = (uint32_t)tok;
            c->pairs[c->n_pairs++] = j;
        }
    return true;
}

/* Does every plain-text token (see plain_text in gram_vocab.c) keep terminal t alive from d, ending in a
 * state that can go on? Then those tokens are sure from d all at once. Checked on R, the
 * states plain characters reach from d (a breadth-first search over the UTF-8 shapes, with
 * sets of states so a DFA's byte classes need not line up with them): every step must live
 * and every state of R must have a way on. R is {d} inside a free string; it is the states of
 * "which listed key is this a prefix of" for an additional-properties key. */
#define SLICE_MAX_STATES 256
static const uint8_t SHAPES[][4][2] = {
    {{0xC2, 0xDF}, {0x80, 0xBF}}, {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
    {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}}, {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
    {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}},
    {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
    {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
    {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}}};

static bool set_add(uint32_t *set, uint32_t *n, uint32_t cap, uint32_t x)
{
    for (uint32_t j = 0; j < *n; j++)
        if (set[j] == x)
            return true;
    if (*n == cap)
        return false;
    set[(*n)++] = x;
    return true;
}

/* The states one plain character leads to from x, added to out (NX__DEAD among them when
 * some character dies). Bytes are tried once per DFA byte class. Stops early (returning
 * false) when a step dies and stop_dead is set, when both a dead and a live step were seen
 * and stop_mixed is set, or when there are too many states to track. */
/* set_add with a bitmap of the set's members (a live state's bit) when member is not NULL:
 * the closure in slice_of grows to SLICE_MAX_STATES, where a linear search per step cost
 * hundreds of µs on a key DFA of 1,000 states. */
static bool out_add(uint32_t *set, uint32_t *n, uint64_t *member, uint32_t x)
{
    if (!member || x == NX__DEAD)
        return set_add(set, n, SLICE_MAX_STATES, x);
    if (member[x >> 6] >> (x & 63) & 1)
        return true;
    if (*n == SLICE_MAX_STATES)
        return false;
    member[x >> 6] |= 1ull << (x & 63);
    set[(*n)++] = x;
    return true;
}

static bool plain_step(const nx__term_t *t, uint32_t x, uint32_t *out, uint32_t *n_out,
                       uint64_t *member, bool stop_dead, bool stop_mixed)
{
    const uint8_t *cls = t->dfa.byte_class;
    bool dead = false, live = false, tried[256] = {0};
    for (unsigned b = 0x20; b < 0x80; b++) {
        if (b == '"' || b == '\\' || tried[cls[b]])
            continue;
        tried[cls[b]] = true; /* a byte class leads to one state */
        uint32_t y = nx__term_step(t, x, (uint8_t)b);
        dead |= y == NX__DEAD;
        live |= y != NX__DEAD;
        if ((stop_dead && dead) || (stop_mixed && dead && live) ||
            !out_add(out, n_out, member, y))
            return false;
    }
    for (size_t k = 0; k < sizeof SHAPES / sizeof SHAPES[0]; k++) {
        uint32_t cur[64], next[64], n = 1, m = 0;
        cur[0] = x;
        for (int pos = 0; pos < 4 && SHAPES[k][pos][0]; pos++) {
            m = 0;
            for (uint32_t i = 0; i < n; i++) {
                if (cur[i] == NX__DEAD) {
                    if (!set_add(next, &m, 64, NX__DEAD))
                        return false;
                    continue;
                }
                bool seen[256] = {0};
                for (unsigned c = SHAPES[k][pos][0]; c <= SHAPES[k][pos][1]; c++) {
                    if (seen[cls[c]])
                        continue;
                    seen[cls[c]] = true;
                    uint32_t y = nx__term_step(t, cur[i], (uint8_t)c);
                    if ((stop_dead && y == NX__DEAD) || !set_add(next, &m, 64, y))
                        return false; /* dead, or too tangled to tell: walk it all */
                }
            }
            memcpy(cur, next, m * sizeof *cur);
            n = m;
        }
        for (uint32_t i = 0; i < m; i++) {
            dead |= next[i] == NX__DEAD;
            live |= next[i] != NX__DEAD;
            if ((stop_mixed && dead && live) || !out_add(out, n_out, member, next[i]))
                return false;
        }
    }
    return true;
}

#define SLICE_NONE UINT32_MAX
#define SLICE_ALL (UINT32_MAX - 1)
#define SLICE_MAX_CHARS 64
#define MAX_WORD_SLICE 255 /* bytes a bounded word slice follows */

/* The states one character of a class (plain text, ASCII words) leads to from x, added to
 * out (NX__DEAD among them when one dies); member: the closure's bitmap (see out_add), or
 * NULL in the bounded-length search. false when too many states to track, or (a shortcut)
 * when the answer is already known to be SLICE_NONE. */
typedef bool (*class_step_fn)(const nx__term_t *t, uint32_t x, uint32_t *out, uint32_t *n_out,
                              uint64_t *member);

/* One plain character: the closure stops at a death, the bounded search where deaths and
 * lives mix (either way its answer is SLICE_NONE). */
static bool plain_char(const nx__term_t *t, uint32_t x, uint32_t *out, uint32_t *n_out,
                       uint64_t *member)
{
    return plain_step(t, x, out, n_out, member, member != NULL, member == NULL);
}

/* The search shared by slice_of and word_slice, for the tokens made of one character class
 * (step), from DFA state d of t:
 *   SLICE_ALL: over the closure R of d under the class, every step lives and every state can
 *     go on;
 *   r: after k <= r characters every state goes on and none accepts, after r + 1 all are
 *     dead (r <= max_chars);
 *   SLICE_NONE: neither holds, or it could not be told.
 * Inlined into both, so each calls its step directly, as when they were written out. */
static inline __attribute__((always_inline)) uint32_t
slice_by(const nx__term_t *t, uint32_t d, class_step_fn step, uint32_t max_chars)
{
    uint32_t r[SLICE_MAX_STATES], n_r = 1;
    uint64_t *member = calloc(t->dfa.n_states / 64 + 1, sizeof *member);
    if (!member)
        return SLICE_NONE; /* the whole trie is walked: slower, still exact */
    r[0] = d;
    member[d >> 6] |= 1ull << (d & 63);
    bool closed = true;
    for (uint32_t q = 0; q < n_r && closed; q++) {
        uint32_t before = n_r;
        closed = nx__term_more(t, r[q]) && step(t, r[q], r, &n_r, member);
        for (uint32_t j = before; j < n_r && closed; j++)
            closed = r[j] != NX__DEAD;
    }
    free(member);
    if (closed)
        return SLICE_ALL;
    uint32_t cur[SLICE_MAX_STATES], next[SLICE_MAX_STATES], n = 1;
    cur[0] = d;
    for (uint32_t k = 0; k <= max_chars; k++) {
        uint32_t m = 0;
        for (uint32_t i = 0; i < n; i++)
            if (!nx__term_more(t, cur[i]) || (k > 0 && nx__term_accepting(t, cur[i])) ||
                !step(t, cur[i], next, &m, NULL))
                return SLICE_NONE;
        bool any_dead = false, all_dead = true;
        for (uint32_t i = 0; i < m; i++) {
            any_dead |= next[i] == NX__DEAD;
            all_dead &= next[i] == NX__DEAD;
        }
        if (all_dead)
            return k;
        if (any_dead)
            return SLICE_NONE;
        memcpy(cur, next, m * sizeof *cur);
        n = m;
    }
    return SLICE_NONE;
}

/* Which plain-text tokens (see plain_text) are sure from d, taken whole instead of walked:
 *   SLICE_ALL: every one — each keeps terminal t alive and ends where it can go on. Checked on
 *     R, the states plain characters reach from d: every step lives, every state of R has a
 *     way on. R is {d} inside a free string; it is the states of "which listed key is this a
 *     prefix of" for an additional-properties key;
 *   r: those of at most r characters, and longer ones die without crossing: the states after
 *     k <= r characters all go on and none accepts, after r + 1 all are dead (a string of
 *     bounded length);
 *   SLICE_NONE: neither holds; the whole trie is walked. */
static uint32_t slice_of(const nx__term_t *t, uint32_t d)
{
    if (t->kind != NX__T_DFA)
        return SLICE_NONE;
    if (t->strlen_k && d >= 1 && d + 1 < t->dfa.n_states && (d - 1) % t->strlen_k == 0) {
        /* a bounded-length string at a character boundary after `count` characters (see
         * gram_strlen.c): plain characters only count up, never accept, never cross; with a
         * max, the (max - count + 1)-th dies. Read from the state number: the search below
         * costs a plain_step per count, ~100 µs for a maxLength of 40, and gives up past
         * SLICE_MAX_CHARS (then the whole trie was walked). */
        uint32_t count = (d - 1) / t->strlen_k;
        return t->strlen_max == UINT32_MAX ? SLICE_ALL : t->strlen_max - count;
    }
    return slice_by(t, d, plain_char, SLICE_MAX_CHARS);
}

/* The set of states one ASCII letter or digit leads to from x, added to out (NX__DEAD among
 * them when one dies); false when too many states to track. One step per byte class. */
static bool word_step(const nx__term_t *t, uint32_t x, uint32_t *out, uint32_t *n_out,
                      uint64_t *member)
{
    bool tried[256] = {0};
    for (unsigned b = '0'; b <= 'z'; b++) {
        if (!((b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z')) ||
            tried[t->dfa.byte_class[b]])
            continue;
        tried[t->dfa.byte_class[b]] = true;
        if (!out_add(out, n_out, member, nx__term_step(t, x, (uint8_t)b)))
            return false;
    }
    return true;
}

/* Which word tokens (ASCII letters and digits only, see nx_gram_vocab.word) are sure from d,
 * so that only the other tokens' trie is walked — the e-mail local parts, host labels and
 * identifiers that plain text kills (a space, say) and that walked the whole trie (0.5-0.9 ms
 * on Qwen3's 333 k nodes):
 *   SLICE_ALL: every one — over the closure R of d under those bytes every step lives and
 *     every state can go on;
 *   r: those of at most r bytes, and longer ones die without crossing (the states after
 *     k <= r bytes go on and none accepts; after r + 1 all are dead: a bounded label);
 *   SLICE_NONE: neither holds. */
static uint32_t word_slice(const nx__term_t *t, uint32_t d)
{
    if (t->kind != NX__T_DFA)
        return SLICE_NONE;
    return slice_by(t, d, word_step, MAX_WORD_SLICE);
}

/* Sort crossing pairs so equal remainders are adjacent and neighbours share prefixes (what
 * cmp_pair orders by, up to the order of keys): an LSD radix sort on a 64-bit key (the
 * remainder's first 7 bytes, then its length, capped), then cmp_pair inside runs of equal
 * keys, which only remainders of 7 bytes or more share. qsort_r with cmp_pair was most of a
 * cold mask's time past 1,000 pairs (150-250 µs for the 1,311 of a JSON string's start). */
typedef struct pair_rec {
    uint64_t key;
    uint32_t pair[2]; /* token, offset */
} pair_rec_t;

static bool sort_pairs(nx__mask_cache_t *c, const nx_gram_vocab_t *v, size_t np)
{
    pair_rec_t *base = malloc(2 * np * sizeof *base), *a = base, *b = base + np;
    if (!base)
        return false;
    for (size_t k = 0; k < np; k++) {
        uint32_t tok = c->pairs[2 * k], at = c->pairs[2 * k + 1];
        const uint8_t *rem = (const uint8_t *)v->bytes + v->off[tok] + at;
        uint32_t len = v->off[tok + 1] - v->off[tok] - at;
        uint64_t key = 0;
        for (uint32_t i = 0; i < 7; i++)
            key = key << 8 | (i < len ? rem[i] : 0);
        a[k] = (pair_rec_t){key << 8 | (len < 255 ? len : 255), {tok, at}};
    }
    for (unsigned shift = 0; shift < 64; shift += 8) {
        size_t count[257] = {0};
        for (size_t k = 0; k < np; k++)
            count[((a[k].key >> shift) & 255) + 1]++;
        bool one_bucket = false;
        for (unsigned x = 1; x <= 256 && !one_bucket; x++)
            one_bucket = count[x] == np;
        if (one_bucket)
            continue; /* this byte is the same in every key */
        for (unsigned x = 1; x <= 256; x++)
            count[x] += count[x - 1];
        for (size_t k = 0; k < np; k++)
            b[count[(a[k].key >> shift) & 255]++] = a[k];
        pair_rec_t *t = a;
        a = b;
        b = t;
    }
    for (size_t s = 0, e; s < np; s = e) {
        for (e = s + 1; e < np && a[e].key == a[s].key; e++)
            ;
        if ((a[s].key & 255) < 7)
            continue; /* the key is the whole remainder: equal keys, equal bytes */
        for (size_t k = s + 1; k < e; k++) /* runs are short: insertion sort */
            for (size_t j = k; j > s && cmp_pair(a[j - 1].pair, a[j].pair, (void *)v) > 0; j--) {
                pair_rec_t t = a[j];
                a[j] = a[j - 1];
                a[j - 1] = t;
            }
    }
    for (size_t k = 0; k < np; k++) {
        c->pairs[2 * k] = a[k].pair[0];
        c->pairs[2 * k + 1] = a[k].pair[1];
    }
    free(base);
    return true;
}

/* A literal's class from state d, found along the literal only: the tokens that are proper
 * prefixes of its remaining bytes R are sure; a token equal to R crosses with nothing left
 * (a group with an empty remainder); the tokens that begin with R and go on are the subtree
 * below R's node, kept as a node range for or_subtree. No other token can begin inside a
 * literal. O(|R| x branching) instead of a walk over the whole trie, whose cost was the
 * crossing pairs: after `"arguments": ` every token beginning with a space (53 k of
 * Qwen3's) crossed, 3-14 ms for the first mask of a tool call. */
static tclass_t *tclass_build_literal(nx__mask_cache_t *c, const nx_gram_vocab_t *v,
                                      const nx__term_t *t, uint32_t term, uint32_t d)
{
    tclass_t *tc = calloc(1, sizeof *tc);
    if (!tc)
        return NULL;
    tc->term = term;
    tc->dstate = d;
    c->n_ids = 0;
    const trie_t *tr = &v->all;
    const uint8_t *rem = (const uint8_t *)t->lit + d;
    uint32_t rlen = d < t->len ? t->len - d : 0, lo = 0, hi = tr->n_nodes, k = 0;
    int32_t exact = -1;
    for (; k < rlen; k++) {
        uint32_t node = NX__DEAD;
        for (uint32_t j = lo; j < hi; j = tr->t_end[j])
            if (tr->t_byte[j] == rem[k]) {
                node = j;
                break;
            }
        if (node == NX__DEAD)
            break;
        if (tr->t_tok[node] >= 0) {
            if (k + 1 < rlen) {
                if (!add_tok(c, v, tr->t_tok[node]))
                    goto oom;
            } else
                exact = tr->t_tok[node];
        }
        lo = node + 1;
        hi = tr->t_end[node];
    }
    if (k == rlen && rlen > 0 && lo < hi) {
        tc->sub_lo = lo;
        tc->sub_hi = hi;
        tc->sub_depth = rlen;
    }
    tc->n_sure = (uint32_t)c->n_ids;
    if (c->n_ids) {
        tc->sure_ids = malloc(c->n_ids * sizeof *tc->sure_ids);
        if (!tc->sure_ids)
            goto oom;
        memcpy(tc->sure_ids, c->ids, c->n_ids * sizeof *tc->sure_ids);
    }
    if (exact >= 0) {
        uint32_t n = 0;
        for (int32_t x = exact; x >= 0; x = v->same_next[x])
            n++;
        tc->toks = malloc(n * sizeof *tc->toks);
        tc->grp_tok = malloc(2 * sizeof *tc->grp_tok);
        tc->grp_rem = malloc(sizeof *tc->grp_rem);
        tc->grp_at = malloc(sizeof *tc->grp_at);
        if (!tc->toks || !tc->grp_tok || !tc->grp_rem || !tc->grp_at)
            goto oom;
        n = 0;
        for (int32_t x = exact; x >= 0; x = v->same_next[x])
            tc->toks[n++] = (uint32_t)x;
        tc->grp_tok[0] = 0;
        tc->grp_tok[1] = n;
        tc->grp_rem[0] = (uint32_t)exact;
        tc->grp_at[0] = rlen;
        tc->n_groups = 1;
    }
    return tc;
oom:
    tclass_free(tc);
    return NULL;
}

/* Walk the trie through terminal t from state d (the hot loop of a cold mask). Where every
 * plain-text token loops back to d, those are taken whole from the vocabulary's `plain` mask
 * and only the other tokens' trie is walked. */
static tclass_t *tclass_build(nx__mask_cache_t *c, const nx_gram_vocab_t *v, const nx__term_t *t,
                              uint32_t term, uint32_t d)
{
    if (t->kind == NX__T_LITERAL)
        return tclass_build_literal(c, v, t, term, d);
    tclass_t *tc = calloc(1, sizeof *tc);
    if (!tc)
        return NULL;
    tc->term = term;
    tc->dstate = d;
    c->n_ids = c->n_pairs = 0;
    uint32_t *st = c->walk_state;
    uint8_t *acc = c->walk_acc;
    uint32_t *accn = st + v->max_len + 1; /* accepting states on the path so far */
    uint32_t slice_chars = slice_of(t, d);
    bool slice = slice_chars != SLICE_NONE;
    uint32_t word_bytes = slice ? SLICE_NONE : word_slice(t, d);
    bool words = word_bytes != SLICE_NONE;
    const trie_t *tr = slice ? &v->rest : words ? &v->nonword : &v->all;
    st[0] = d;
    acc[0] = 0;
    accn[0] = 0;
    bool ok = true;
    for (uint32_t i = 0; i < tr->n_nodes && ok;) {
        uint32_t dep = tr->t_depth[i];
        uint32_t s = nx__term_step(t, st[dep - 1], tr->t_byte[i]);
        if (s == NX__DEAD) {
            if (accn[dep - 1]) /* every token below crosses the terminal's end */
                for (uint32_t k = i; k < tr->t_end[i] && ok; k++)
                    if (tr->t_tok[k] >= 0)
                        ok = add_pairs(c, v, tr->t_tok[k], dep);
            i = tr->t_end[i];
            continue;
        }
        st[dep] = s;
        acc[dep] = nx__term_accepting(t, s);
        accn[dep] = accn[dep - 1] + acc[dep];
        if (tr->t_tok[i] >= 0) {
            /* ending in a state with no way on, the terminal must end here, so the token
             * is only as good as what follows: a crossing with nothing left to match */
            if (nx__term_more(t, s))
                ok = add_tok(c, v, tr->t_tok[i]);
            else
                ok = add_pairs(c, v, tr->t_tok[i], dep + 1);
        }
        i++;
    }
    if (!ok)
        goto oom;
    tc->n_sure = (uint32_t)c->n_ids;
    size_t n_words = nx_gram_mask_words(v);
    if ((slice && slice_chars > 0) || (words && word_bytes > 0) || c->n_ids > v->size / 64) {
        tc->sure_bits = malloc(n_words * sizeof *tc->sure_bits);
        if (!tc->sure_bits)
            goto oom;
        if (words && word_bytes > 0) {
            memcpy(tc->sure_bits, v->word, n_words * sizeof *v->word);
            for (uint32_t k = 0; k < v->n_word_ids && word_bytes != SLICE_ALL &&
                                 v->off[v->word_ids[k] + 1] - v->off[v->word_ids[k]] > word_bytes;
                 k++)
                tc->sure_bits[v->word_ids[k] >> 5] &= ~(1u << (v->word_ids[k] & 31));
        } else if (!slice || slice_chars == 0)
            memset(tc->sure_bits, 0, n_words * sizeof *tc->sure_bits);
        else if (slice_chars == SLICE_ALL)
            memcpy(tc->sure_bits, v->plain, n_words * sizeof *v->plain);
        else if (slice_chars <= SHORT_CHARS)
            memcpy(tc->sure_bits, v->plain_upto + (slice_chars - 1) * n_words,
                   n_words * sizeof *tc->sure_bits);
        else {
            memcpy(tc->sure_bits, v->plain, n_words * sizeof *v->plain);
            for (uint32_t k = 0; k < v->n_long && v->plain_chars[v->long_ids[k]] > slice_chars;
                 k++)
                tc->sure_bits[v->long_ids[k] >> 5] &= ~(1u << (v->long_ids[k] & 31));
        }
        for (size_t k = 0; k < c->n_ids; k++)
            tc->sure_bits[c->ids[k] >> 5] |= 1u << (c->ids[k] & 31);
    } else if (c->n_ids) {
        tc->sure_ids = malloc(c->n_ids * sizeof *tc->sure_ids);
        if (!tc->sure_ids)
            goto oom;
        memcpy(tc->sure_ids, c->ids, c->n_ids * sizeof *tc->sure_ids);
    }
    size_t np = c->n_pairs / 2;
    if (np) {
        if (!sort_pairs(c, v, np))
            goto oom;
        tc->toks = malloc(np * sizeof *tc->toks);
        tc->grp_tok = malloc((np + 1) * sizeof *tc->grp_tok);
        tc->grp_rem = malloc(np * sizeof *tc->grp_rem);
        tc->grp_at = malloc(np * sizeof *tc->grp_at);
        if (!tc->toks || !tc->grp_tok || !tc->grp_rem || !tc->grp_at)
            goto oom;
        uint32_t g = 0;
        for (size_t k = 0; k < np; k++) {
            const uint32_t *p = c->pairs + 2 * k;
            bool same = false;
            if (k) {
                const uint32_t *q = p - 2;
                uint32_t lp = v->off[p[0] + 1] - v->off[p[0]] - p[1];
                uint32_t lq = v->off[q[0] + 1] - v->off[q[0]] - q[1];
                same = lp == lq && !memcmp(v->bytes + v->off[p[0]] + p[1],
                                           v->bytes + v->off[q[0]] + q[1], lp);
            }
            if (!same) {
                tc->grp_tok[g] = (uint32_t)k;
                tc->grp_rem[g] = p[0];
                tc->grp_at[g] = p[1];
                g++;
            }
            tc->toks[k] = p[0];
        }
        tc->grp_tok[g] = (uint32_t)np;
        tc->n_groups = g;
    }
    return tc;
oom:
    tclass_free(tc);
    return NULL;
}

static uint64_t tc_hash(uint32_t term, uint32_t d)
{
    uint64_t h = ((uint64_t)term << 32 | d) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

nx__tc_shared_t *nx__tc_shared_new(void)
{
    nx__tc_shared_t *sh = calloc(1, sizeof *sh);
    if (sh && pthread_mutex_init(&sh->lock, NULL) != 0) {
        free(sh);
        return NULL;
    }
    return sh;
}

void nx__tc_shared_free(nx__tc_shared_t *sh)
{
    if (!sh)
        return;
    for (size_t i = 0; i < sh->n_tc; i++)
        if (sh->tc[i].owned)
            tclass_free(sh->tc[i].tc);
    free(sh->tc);
    free(sh->term_vdfa);
    pthread_mutex_destroy(&sh->lock);
    free(sh);
}

/* Open-addressing tables of entries with a `tc` pointer (NULL: free) and a 2-key hash, for
 * the three tables (matcher, grammar, vocabulary): find the slot of (a, b), or the free
 * slot where it goes; grow to keep the load under 1/2 (false on no memory). */
#define TABLE_FIND(tab, n, ka, kb, a, b, slot_out)                                          \
    do {                                                                                    \
        size_t mask_ = (n) - 1, h_ = tc_hash((a), (b)) & mask_;                             \
        while ((tab)[h_].tc && !((tab)[h_].ka == (a) && (tab)[h_].kb == (b)))               \
            h_ = (h_ + 1) & mask_;                                                          \
        (slot_out) = h_;                                                                    \
    } while (0)

#define TABLE_GROW(type, tab, n, used, ka, kb, ok)                                          \
    do {                                                                                    \
        (ok) = true;                                                                        \
        if (2 * ((used) + 1) <= (n))                                                        \
            break;                                                                          \
        size_t nn_ = (n) ? 2 * (n) : 256;                                                   \
        type *t_ = calloc(nn_, sizeof *t_);                                                 \
        if (!t_) {                                                                          \
            (ok) = false;                                                                   \
            break;                                                                          \
        }                                                                                   \
        for (size_t i_ = 0; i_ < (n); i_++) {                                               \
            if (!(tab)[i_].tc)                                                              \
                continue;                                                                   \
            size_t h_ = tc_hash((tab)[i_].ka, (tab)[i_].kb) & (nn_ - 1);                    \
            while (t_[h_].tc)                                                               \
                h_ = (h_ + 1) & (nn_ - 1);                                                  \
            t_[h_] = (tab)[i_];                                                             \
        }                                                                                   \
        free(tab);                                                                          \
        (tab) = t_;                                                                         \
        (n) = nn_;                                                                          \
    } while (0)

struct vocab_classes *nx__vocab_classes_new(void)
{
    struct vocab_classes *vc = calloc(1, sizeof *vc);
    if (vc && pthread_mutex_init(&vc->lock, NULL) != 0) {
        free(vc);
        return NULL;
    }
    return vc;
}

void nx__vocab_classes_free(struct vocab_classes *vc)
{
    if (!vc)
        return;
    for (size_t i = 0; i < vc->n_tc; i++)
        tclass_free(vc->tc[i].tc);
    free(vc->tc);
    for (size_t i = 0; i < vc->n_dfas; i++)
        nx__dfa_free(&vc->dfas[i].dfa);
    free(vc->dfas);
    pthread_mutex_destroy(&vc->lock);
    free(vc);
}

static size_t tclass_bytes(const tclass_t *tc, const nx_gram_vocab_t *v)
{
    size_t toks = tc->n_groups ? tc->grp_tok[tc->n_groups] : 0;
    return sizeof *tc + (tc->sure_bits ? nx_gram_mask_words(v) * 4 : (size_t)tc->n_sure * 4) +
           toks * 4 + (size_t)tc->n_groups * 12;
}

static uint64_t dfa_hash(const nx__dfa_t *d)
{
    uint64_t h = ((uint64_t)d->n_states << 32 | d->n_classes) * 0x9E3779B97F4A7C15ull;
    for (unsigned b = 0; b < 256; b++)
        h = (h ^ d->byte_class[b]) * 0x100000001B3ull;
    size_t n = (size_t)d->n_states * d->n_classes;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d->trans[i]) * 0x100000001B3ull;
    for (uint32_t i = 0; i < d->n_states; i++)
        h = (h ^ d->flags[i]) * 0x100000001B3ull;
    return h ^ (h >> 31);
}

static bool dfa_same(const nx__dfa_t *a, const nx__dfa_t *b)
{
    return a->n_states == b->n_states && a->n_classes == b->n_classes &&
           !memcmp(a->byte_class, b->byte_class, 256) &&
           !memcmp(a->trans, b->trans, (size_t)a->n_states * a->n_classes * sizeof *a->trans) &&
           !memcmp(a->flags, b->flags, a->n_states);
}

/* The index of DFA d among the vocabulary's (added, copied, when new); NX__DEAD on no
 * memory. Under vc->lock. */
static uint32_t vocab_dfa_index(struct vocab_classes *vc, const nx__dfa_t *d, uint64_t hash)
{
    for (size_t i = 0; i < vc->n_dfas; i++)
        if (vc->dfas[i].hash == hash && dfa_same(&vc->dfas[i].dfa, d))
            return (uint32_t)i;
    if (vc->n_dfas >= VOCAB_MAX_DFAS)
        return NX__DEAD;
    if (vc->n_dfas == vc->cap_dfas) {
        size_t cap = vc->cap_dfas ? 2 * vc->cap_dfas : 16;
        vocab_dfa_t *p = realloc(vc->dfas, cap * sizeof *p);
        if (!p)
            return NX__DEAD;
        vc->dfas = p;
        vc->cap_dfas = cap;
    }
    size_t n = (size_t)d->n_states * d->n_classes;
    nx__dfa_t copy = *d;
    copy.trans = malloc(n * sizeof *copy.trans);
    copy.flags = malloc(d->n_states ? d->n_states : 1);
    if (!copy.trans || !copy.flags) {
        nx__dfa_free(&copy);
        return NX__DEAD;
    }
    memcpy(copy.trans, d->trans, n * sizeof *copy.trans);
    memcpy(copy.flags, d->flags, d->n_states);
    vc->dfas[vc->n_dfas] = (vocab_dfa_t){.hash = hash, .dfa = copy};
    return (uint32_t)vc->n_dfas++;
}

/* The class of (term, d) for matcher m, from the first table that has it: the matcher's, the
 * grammar's (for the vocabulary that claimed it), the vocabulary's (for a DFA terminal, by
 * content); else built (outside the locks, with m's scratch) and offered to the vocabulary
 * (DFA terminals) or the grammar (literals, and DFAs too large to key), whichever takes it
 * first owning it. The entry is valid until the next tclass_get. */
static local_tc_t *tclass_get(nx_gram_matcher_t *m, uint32_t term, uint32_t d)
{
    nx__mask_cache_t *c = m->cache;
    bool ok;
    TABLE_GROW(local_tc_t, c->tc, c->n_tc, c->used_tc, term, dstate, ok);
    if (!ok)
        return NULL;
    size_t h;
    TABLE_FIND(c->tc, c->n_tc, term, dstate, term, d, h);
    if (c->tc[h].tc)
        return &c->tc[h];
    const nx__term_t *t = &m->g->terms[term];
    nx__tc_shared_t *sh = m->g->shared;
    struct vocab_classes *vc = m->v->classes;
    bool use_shared = false, in_vocab = false, in_shared = false;
    tclass_t *tc = NULL;
    if (sh) {
        pthread_mutex_lock(&sh->lock);
        if (!sh->vocab_serial)
            sh->vocab_serial = m->v->serial;
        use_shared = sh->vocab_serial == m->v->serial;
        if (use_shared && sh->n_tc) {
            size_t k;
            TABLE_FIND(sh->tc, sh->n_tc, term, dstate, term, d, k);
            tc = sh->tc[k].tc;
        }
        pthread_mutex_unlock(&sh->lock);
        in_shared = tc != NULL;
    }
    uint32_t vdfa = NX__DEAD;
    if (!tc && vc && t->kind == NX__T_DFA &&
        (size_t)t->dfa.n_states * t->dfa.n_classes <= VOCAB_DFA_WORDS) {
        uint32_t known = VDFA_UNKNOWN;
        if (use_shared) {
            pthread_mutex_lock(&sh->lock);
            if (!sh->term_vdfa && (sh->term_vdfa = malloc(m->g->n_terms * sizeof(uint32_t))))
                for (uint32_t i = 0; i < m->g->n_terms; i++)
                    sh->term_vdfa[i] = VDFA_UNKNOWN;
            if (sh->term_vdfa)
                known = sh->term_vdfa[term];
            pthread_mutex_unlock(&sh->lock);
        }
        uint64_t hash = known == VDFA_UNKNOWN ? dfa_hash(&t->dfa) : 0;
        pthread_mutex_lock(&vc->lock);
        vdfa = known != VDFA_UNKNOWN ? known : vocab_dfa_index(vc, &t->dfa, hash);
        if (vdfa != NX__DEAD && vc->n_tc) {
            size_t k;
            TABLE_FIND(vc->tc, vc->n_tc, dfa, dstate, vdfa, d, k);
            tc = vc->tc[k].tc;
        }
        pthread_mutex_unlock(&vc->lock);
        in_vocab = tc != NULL;
        if (known == VDFA_UNKNOWN && vdfa != NX__DEAD && use_shared) {
            pthread_mutex_lock(&sh->lock);
            if (sh->term_vdfa)
                sh->term_vdfa[term] = vdfa;
            pthread_mutex_unlock(&sh->lock);
        }
    }
    if (!tc) {
        uint64_t t0 = nx_now_ns();
        tc = tclass_build(c, m->v, t, term, d);
        if (!tc)
            return NULL;
        if (getenv("NX_GRAM_DEBUG")) /* which cold walks cost what (bench/grammar.c) */
            fprintf(stderr, "tclass term %u (%s, %u states) d %u: %.0f us, sure %u, groups %u, "
                    "dense %d (trie nodes %u, rest %u)\n", term,
                    t->kind == NX__T_DFA ? "dfa" : "lit",
                    t->kind == NX__T_DFA ? t->dfa.n_states : t->len, d,
                    (double)(nx_now_ns() - t0) / 1e3, tc->n_sure, tc->n_groups,
                    tc->sure_bits != NULL, m->v->all.n_nodes, m->v->rest.n_nodes);
        if (vdfa != NX__DEAD) {
            pthread_mutex_lock(&vc->lock);
            size_t k = 0;
            if (vc->n_tc)
                TABLE_FIND(vc->tc, vc->n_tc, dfa, dstate, vdfa, d, k);
            if (vc->n_tc && vc->tc[k].tc) { /* another thread built it meanwhile */
                tclass_free(tc);
                tc = vc->tc[k].tc;
                in_vocab = true;
            } else if (vc->bytes + tclass_bytes(tc, m->v) <= VOCAB_CLASS_BYTES) {
                TABLE_GROW(vocab_tc_t, vc->tc, vc->n_tc, vc->used_tc, dfa, dstate, ok);
                if (ok) {
                    TABLE_FIND(vc->tc, vc->n_tc, dfa, dstate, vdfa, d, k);
                    vc->tc[k] = (vocab_tc_t){.dfa = vdfa, .dstate = d, .tc = tc};
                    vc->used_tc++;
                    vc->bytes += tclass_bytes(tc, m->v);
                    in_vocab = true;
                }
            }
            pthread_mutex_unlock(&vc->lock);
        }
    }
    if (use_shared && !in_shared) {
        pthread_mutex_lock(&sh->lock);
        size_t k = 0;
        if (sh->n_tc)
            TABLE_FIND(sh->tc, sh->n_tc, term, dstate, term, d, k);
        if (sh->n_tc && sh->tc[k].tc) { /* another thread put one meanwhile */
            if (!in_vocab)
                tclass_free(tc);
            tc = sh->tc[k].tc;
            in_shared = true;
        } else {
            TABLE_GROW(shared_tc_t, sh->tc, sh->n_tc, sh->used_tc, term, dstate, ok);
            if (ok) {
                TABLE_FIND(sh->tc, sh->n_tc, term, dstate, term, d, k);
                sh->tc[k] = (shared_tc_t){.term = term, .dstate = d, .tc = tc,
                                          .owned = !in_vocab};
                sh->used_tc++;
                in_shared = true;
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
    c->tc[h] = (local_tc_t){.term = term, .dstate = d, .tc = tc, .stamp = 0,
                            .owned = !in_vocab && !in_shared};
    c->used_tc++;
    return &c->tc[h];
}

static nx__mask_cache_t *cache_new(const nx_gram_vocab_t *v)
{
    nx__mask_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->mask_set = malloc(MASK_SLOTS * sizeof *c->mask_set);
    c->masks = malloc(MASK_SLOTS * nx_gram_mask_words(v) * sizeof *c->masks);
    c->walk_state = malloc(2 * ((size_t)v->max_len + 2) * sizeof *c->walk_state);
    c->walk_acc = malloc((size_t)v->max_len + 2);
    if (!c->mask_set || !c->masks || !c->walk_state || !c->walk_acc) {
        nx__mask_cache_free(c);
        return NULL;
    }
    for (uint32_t i = 0; i < MASK_SLOTS; i++)
        c->mask_set[i] = NX__DEAD;
    return c;
}

/* The tokens of crossing groups whose remainder the continuation set accepts. Groups are
 * sorted by remainder, so the states along the previous remainder are reused for the shared
 * prefix. */
static void or_groups(nx_gram_matcher_t *m, const tclass_t *tc, uint32_t cont, uint32_t *mask)
{
    const nx_gram_vocab_t *v = m->v;
    uint32_t *st = m->cache->walk_state; /* st[k]: state after k remainder bytes */
    const char *prev = NULL;
    uint32_t prev_len = 0;
    st[0] = cont;
    for (uint32_t g = 0; g < tc->n_groups; g++) {
        uint32_t tok = tc->grp_rem[g], at = tc->grp_at[g];
        const char *rem = v->bytes + v->off[tok] + at;
        uint32_t len = v->off[tok + 1] - v->off[tok] - at, k = 0;
        while (prev && k < len && k < prev_len && rem[k] == prev[k])
            k++;
        for (; k < len; k++)
            st[k + 1] = st[k] == NX__DEAD ? NX__DEAD : nx__set_advance(m, st[k], (uint8_t)rem[k]);
        prev = rem;
        prev_len = len;
        if (st[len] == NX__DEAD)
            continue;
        for (uint32_t i = tc->grp_tok[g]; i < tc->grp_tok[g + 1]; i++)
            mask[tc->toks[i] >> 5] |= 1u << (tc->toks[i] & 31);
    }
}

/* The tokens of a literal's subtree (tclass_t.sub_lo) whose bytes past the literal the
 * continuation set takes: the trie walked through the matcher's sets, a subtree skipped where
 * the set dies (after `"arguments": ` only the few tokens " {..." live). */
static void or_subtree(nx_gram_matcher_t *m, const tclass_t *tc, uint32_t cont, uint32_t *mask)
{
    const nx_gram_vocab_t *v = m->v;
    const trie_t *tr = &v->all;
    uint32_t *st = m->cache->walk_state; /* st[k]: the set k bytes past the literal */
    st[0] = cont;
    for (uint32_t i = tc->sub_lo; i < tc->sub_hi;) {
        uint32_t dep = tr->t_depth[i] - tc->sub_depth;
        uint32_t s = nx__set_advance(m, st[dep - 1], tr->t_byte[i]);
        if (s == NX__DEAD) {
            i = tr->t_end[i];
            continue;
        }
        st[dep] = s;
        for (int32_t x = tr->t_tok[i]; x >= 0; x = v->same_next[x])
            mask[x >> 5] |= 1u << (x & 31);
        i++;
    }
}

int nx_gram_matcher_mask(nx_gram_matcher_t *self, uint32_t *mask, nx_err_t *err)
{
    const nx_gram_vocab_t *v = self->v;
    if (!v)
        return nx_err_set(err, NX_ESTATE, "grammar matcher has no vocabulary");
    size_t words = nx_gram_mask_words(v);
    memset(mask, 0, words * sizeof *mask);
    if (self->ended || self->cur == NX__DEAD)
        return NX_OK;
    if (!self->cache && !(self->cache = cache_new(v)))
        return nx_err_set(err, NX_ENOMEM, "out of memory for the mask cache");
    nx__mask_cache_t *c = self->cache;
    uint32_t set = self->cur;
    for (uint32_t i = 0; i < MASK_SLOTS; i++)
        if (c->mask_set[i] == set) {
            memcpy(mask, c->masks + i * words, words * sizeof *mask);
            return NX_OK;
        }
    uint32_t stamp = ++c->stamp, n;
    nx__set_members(self, set, &n);
    bool accepting = false;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t top = self->members[self->set_off[set] + k]; /* members may move below */
        if (top == NX__ACCEPT_NODE) {
            accepting = true;
            continue;
        }
        nx__node_t node = self->nodes[top];
        local_tc_t *entry = tclass_get(self, self->g->items[node.pos], node.dstate);
        if (!entry)
            return nx_err_set(err, NX_ENOMEM, "out of memory computing a token mask");
        const tclass_t *tc = entry->tc;
        if (entry->stamp != stamp) {
            entry->stamp = stamp;
            if (tc->sure_bits)
                for (size_t w = 0; w < words; w++)
                    mask[w] |= tc->sure_bits[w];
            else
                for (uint32_t i = 0; i < tc->n_sure; i++)
                    mask[tc->sure_ids[i] >> 5] |= 1u << (tc->sure_ids[i] & 31);
        }
        if (tc->n_groups || tc->sub_hi > tc->sub_lo) {
            uint32_t cont = nx__top_cont(self, top);
            if (cont != NX__DEAD && tc->n_groups)
                or_groups(self, tc, cont, mask);
            if (cont != NX__DEAD && tc->sub_hi > tc->sub_lo)
                or_subtree(self, tc, cont, mask);
        }
    }
    if (self->overflow)
        return nx_err_set(err, NX_ENOMEM, "grammar matcher over its state caps");
    if (accepting)
        for (size_t i = 0; i < v->n_eos; i++)
            mask[v->eos[i] >> 5] |= 1u << (v->eos[i] & 31);
    uint32_t slot = c->next_slot++ % MASK_SLOTS;
    c->mask_set[slot] = set;
    memcpy(c->masks + slot * words, mask, words * sizeof *mask);
    return NX_OK;
}

int nx_gram_matcher_accept_token(nx_gram_matcher_t *self, int32_t token, nx_err_t *err)
{
    const nx_gram_vocab_t *v = self->v;
    if (!v)
        return nx_err_set(err, NX_ESTATE, "grammar matcher has no vocabulary");
    if (token < 0 || (uint32_t)token >= v->size || self->ended)
        return NX_EINVAL;
    if (v->kind[token] == TOK_EOS) {
        if (!nx_gram_matcher_accepting(self))
            return NX_EINVAL;
        self->ended = true;
        return NX_OK;
    }
    if (v->kind[token] == TOK_NEVER)
        return NX_EINVAL;
    return nx_gram_matcher_advance(self, v->bytes + v->off[token],
                                   v->off[token + 1] - v->off[token], err);
}
