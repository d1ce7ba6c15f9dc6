/* gram_match.c — following a grammar byte by byte. The live parse stacks are kept as
 * interned nodes (a node is a top — terminal item and DFA state — or a return frame, with its
 * parent), and a matcher state is an interned, sorted set of top nodes: so states compare and
 * hash as integers, copying one is free, and (set, byte) transitions are memoized.
 *
 * Expansion is eager: when a terminal ends (or a rule is entered) the matcher walks down to
 * the next terminals at once, so every member of a set is a top waiting for a byte (or node 0,
 * "accepted"). Tail calls push no frame, so `x*` as a right-recursive rule keeps a constant
 * stack. Left recursion is refused when the grammar is built; a depth guard remains for safety.
 *
 * Sets of distinct stacks can still grow exponentially in ambiguous grammars (nested repeats
 * like ((x+)+)+ give every stack a choice of frame per level), as in any stack-set parser; a
 * graph-structured stack would share them and is not built. Instead the work is capped: one
 * byte's expansion at NX__MAX_EXPANSIONS, a set at NX__MAX_SET_SIZE stacks (every schema of
 * bench/grammar.c, 300 tools as an anyOf included, stays under them), then NX_ENOMEM.
 */
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

#define MAX_EXPAND_DEPTH 20000u

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* --- nodes ------------------------------------------------------------------------------------ */

static bool node_slots_grow(nx_gram_matcher_t *m)
{
    size_t n = m->n_node_slots ? 2 * m->n_node_slots : 1024;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return false;
    for (uint32_t id = 1; id < m->n_nodes; id++) {
        const nx__node_t *x = &m->nodes[id];
        size_t h = mix((uint64_t)x->pos << 32 ^ (uint64_t)x->dstate << 16 ^ x->parent) & (n - 1);
        while (slots[h])
            h = (h + 1) & (n - 1);
        slots[h] = id + 1;
    }
    free(m->node_slots);
    m->node_slots = slots;
    m->n_node_slots = n;
    return true;
}

static uint32_t node(nx_gram_matcher_t *m, uint32_t pos, uint32_t dstate, uint32_t parent)
{
    if (2 * ((size_t)m->n_nodes + 1) > m->n_node_slots && !node_slots_grow(m))
        goto full;
    size_t mask = m->n_node_slots - 1;
    size_t h = mix((uint64_t)pos << 32 ^ (uint64_t)dstate << 16 ^ parent) & mask;
    for (; m->node_slots[h]; h = (h + 1) & mask) {
        const nx__node_t *x = &m->nodes[m->node_slots[h] - 1];
        if (x->pos == pos && x->dstate == dstate && x->parent == parent)
            return m->node_slots[h] - 1;
    }
    if (m->n_nodes >= NX__MAX_NODES)
        goto full;
    if (m->n_nodes == m->cap_nodes) {
        uint32_t cap = 2 * m->cap_nodes;
        nx__node_t *nodes = realloc(m->nodes, cap * sizeof *nodes);
        if (!nodes)
            goto full;
        m->nodes = nodes;
        m->cap_nodes = cap;
    }
    uint32_t id = m->n_nodes++;
    m->nodes[id] = (nx__node_t){.pos = pos, .dstate = dstate, .parent = parent, .cont = NX__DEAD};
    m->node_slots[h] = id + 1;
    return id;
full:
    m->overflow = true;
    return NX__ACCEPT_NODE;
}

/* --- the set being built ---------------------------------------------------------------------- */

static void push(nx_gram_matcher_t *m, uint32_t id)
{
    if (m->n_scratch == m->cap_scratch) {
        size_t cap = m->cap_scratch ? 2 * m->cap_scratch : 64;
        uint32_t *s = cap <= NX__MAX_SET_SIZE ? realloc(m->scratch, cap * sizeof *s) : NULL;
        if (!s) {
            m->overflow = true;
            return;
        }
        m->scratch = s;
        m->cap_scratch = cap;
    }
    m->scratch[m->n_scratch++] = id;
}

static void expand(nx_gram_matcher_t *m, uint32_t pos, uint32_t parent);

/* A terminal at item pos now in state d: wait for more bytes and/or end it. */
static void emit_top(nx_gram_matcher_t *m, uint32_t pos, uint32_t d, uint32_t parent)
{
    const nx__term_t *t = &m->g->terms[m->g->items[pos]];
    if (nx__term_more(t, d))
        push(m, node(m, pos, d, parent));
    if (nx__term_accepting(t, d))
        expand(m, pos + 1, parent);
}

/* Has (pos, parent) been expanded in this batch? Marks it if not. What an expansion adds
 * depends on (pos, parent) alone, so doing it once per batch keeps ambiguous grammars
 * (nested nullable alternatives) polynomial instead of exponential. */
static bool visited(nx_gram_matcher_t *m, uint32_t pos, uint32_t parent)
{
    if (2 * (m->used_visit + 1) > m->n_visit) {
        size_t n = m->n_visit ? 2 * m->n_visit : 256;
        uint64_t *keys = calloc(n, sizeof *keys);
        uint32_t *stamps = calloc(n, sizeof *stamps);
        if (!keys || !stamps || n > (1u << 26)) {
            free(keys);
            free(stamps);
            m->overflow = true;
            return true;
        }
        size_t used = 0;
        for (size_t i = 0; i < m->n_visit; i++) {
            if (!m->visit[i] || m->visit_stamp[i] != m->stamp)
                continue; /* entries of older batches are dropped */
            size_t h = mix(m->visit[i]) & (n - 1);
            while (keys[h])
                h = (h + 1) & (n - 1);
            keys[h] = m->visit[i];
            stamps[h] = m->stamp;
            used++;
        }
        free(m->visit);
        free(m->visit_stamp);
        m->visit = keys;
        m->visit_stamp = stamps;
        m->n_visit = n;
        m->used_visit = used;
    }
    uint64_t key = ((uint64_t)pos << 32 | parent) + 1;
    size_t mask = m->n_visit - 1, h = mix(key) & mask;
    for (; m->visit[h] && m->visit_stamp[h] == m->stamp; h = (h + 1) & mask)
        if (m->visit[h] == key)
            return true;
    m->used_visit++; /* entries of this batch: at most half the slots, so probes end */
    m->visit[h] = key; /* a free slot, or one of an older batch reused */
    m->visit_stamp[h] = m->stamp;
    return false;
}

/* A new expansion batch: what was expanded before may be expanded again. */
static void new_batch(nx_gram_matcher_t *m)
{
    if (++m->stamp == 0) { /* wrapped: clear the stamps */
        if (m->visit_stamp)
            memset(m->visit_stamp, 0, m->n_visit * sizeof *m->visit_stamp);
        m->stamp = 1;
    }
    m->used_visit = 0;
}

static void expand(nx_gram_matcher_t *m, uint32_t pos, uint32_t parent)
{
    if (m->overflow || visited(m, pos, parent))
        return;
    if (m->used_visit > NX__MAX_EXPANSIONS) { /* one batch's work, bounded */
        m->overflow = true;
        return;
    }
    if (++m->depth > MAX_EXPAND_DEPTH) {
        m->overflow = true;
        m->depth--;
        return;
    }
    const nx_gram_t *g = m->g;
    uint32_t item = g->items[pos];
    switch (NX__IT_KIND(item)) {
    case NX__IT_END:
        if (parent == NX__NO_PARENT)
            push(m, NX__ACCEPT_NODE);
        else
            expand(m, m->nodes[parent].pos, m->nodes[parent].parent);
        break;
    case NX__IT_TERM:
        if (!nx__term_empty(&g->terms[item]))
            emit_top(m, pos, 0, parent);
        break;
    default: {
        uint32_t r = NX__IT_ARG(item);
        /* a tail call pushes no frame: finishing r finishes this alternative */
        uint32_t frame = NX__IT_KIND(g->items[pos + 1]) == NX__IT_END
                             ? parent : node(m, pos + 1, NX__DEAD, parent);
        for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1] && !m->overflow; a++)
            expand(m, g->alt_start[a], frame);
    }
    }
    m->depth--;
}

/* --- interned sets ---------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t set_hash(const uint32_t *v, size_t n)
{
    uint64_t h = n;
    for (size_t i = 0; i < n; i++)
        h = mix(h ^ v[i]) + i;
    return h;
}

static bool set_slots_grow(nx_gram_matcher_t *m)
{
    size_t n = m->n_set_slots ? 2 * m->n_set_slots : 1024;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return false;
    for (uint32_t id = 0; id < m->n_sets; id++) {
        uint32_t len;
        const uint32_t *v = nx__set_members(m, id, &len);
        size_t h = set_hash(v, len) & (n - 1);
        while (slots[h])
            h = (h + 1) & (n - 1);
        slots[h] = id + 1;
    }
    free(m->set_slots);
    m->set_slots = slots;
    m->n_set_slots = n;
    return true;
}

/* Intern the scratch set (sorted and deduplicated here); NX__DEAD when empty or on overflow. */
static uint32_t intern_scratch(nx_gram_matcher_t *m)
{
    if (m->overflow || m->n_scratch == 0)
        return NX__DEAD;
    uint32_t *v = m->scratch;
    size_t n = m->n_scratch, k = 0;
    qsort(v, n, sizeof *v, cmp_u32);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || v[i] != v[k - 1])
            v[k++] = v[i];
    n = k;
    if (2 * ((size_t)m->n_sets + 1) > m->n_set_slots && !set_slots_grow(m))
        goto full;
    size_t mask = m->n_set_slots - 1, h = set_hash(v, n) & mask;
    for (; m->set_slots[h]; h = (h + 1) & mask) {
        uint32_t id = m->set_slots[h] - 1, len;
        const uint32_t *w = nx__set_members(m, id, &len);
        if (len == n && !memcmp(w, v, n * sizeof *v))
            return id;
    }
    if (m->n_members + n > NX__MAX_SET_MEMBERS)
        goto full;
    if (m->n_sets + 2 > m->cap_sets) {
        uint32_t cap = 2 * m->cap_sets;
        uint32_t *off = realloc(m->set_off, ((size_t)cap + 1) * sizeof *off);
        if (!off)
            goto full;
        m->set_off = off;
        m->cap_sets = cap;
    }
    if (m->n_members + n > m->cap_members) {
        size_t cap = 2 * m->cap_members;
        while (cap < m->n_members + n)
            cap *= 2;
        uint32_t *mem = realloc(m->members, cap * sizeof *mem);
        if (!mem)
            goto full;
        m->members = mem;
        m->cap_members = cap;
    }
    memcpy(m->members + m->n_members, v, n * sizeof *v);
    m->n_members += n;
    uint32_t id = m->n_sets++;
    m->set_off[id + 1] = (uint32_t)m->n_members;
    m->set_slots[h] = id + 1;
    return id;
full:
    m->overflow = true;
    return NX__DEAD;
}

static uint32_t memo_get(const nx_gram_matcher_t *m, uint32_t set, uint8_t b, bool *hit)
{
    uint64_t key = ((uint64_t)set << 8 | b) + 1;
    size_t mask = m->n_memo - 1;
    for (size_t h = mix(key) & mask; m->memo[2 * h]; h = (h + 1) & mask)
        if (m->memo[2 * h] == key) {
            *hit = true;
            return (uint32_t)m->memo[2 * h + 1];
        }
    *hit = false;
    return NX__DEAD;
}

static void memo_put(nx_gram_matcher_t *m, uint32_t set, uint8_t b, uint32_t next)
{
    if (2 * (m->memo_used + 1) > m->n_memo) {
        /* a full memo is simply dropped: it is a cache, the sets stay */
        if (m->n_memo >= (1u << 22)) {
            memset(m->memo, 0, 2 * m->n_memo * sizeof *m->memo);
            m->memo_used = 0;
        } else {
            size_t n = 2 * m->n_memo;
            uint64_t *memo = calloc(2 * n, sizeof *memo);
            if (!memo)
                return;
            for (size_t i = 0; i < m->n_memo; i++) {
                if (!m->memo[2 * i])
                    continue;
                size_t h = mix(m->memo[2 * i]) & (n - 1);
                while (memo[2 * h])
                    h = (h + 1) & (n - 1);
                memo[2 * h] = m->memo[2 * i];
                memo[2 * h + 1] = m->memo[2 * i + 1];
            }
            free(m->memo);
            m->memo = memo;
            m->n_memo = n;
        }
    }
    uint64_t key = ((uint64_t)set << 8 | b) + 1;
    size_t mask = m->n_memo - 1, h = mix(key) & mask;
    while (m->memo[2 * h])
        h = (h + 1) & mask;
    m->memo[2 * h] = key;
    m->memo[2 * h + 1] = next;
    m->memo_used++;
}

uint32_t nx__set_advance(nx_gram_matcher_t *m, uint32_t set, uint8_t b)
{
    if (set == NX__DEAD || m->overflow)
        return NX__DEAD;
    bool hit;
    uint32_t next = memo_get(m, set, b, &hit);
    if (hit)
        return next;
    m->n_scratch = 0;
    new_batch(m);
    uint32_t n;
    const uint32_t *v = nx__set_members(m, set, &n);
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] == NX__ACCEPT_NODE)
            continue;
        /* the members array may move as sets are interned below: index, do not keep v */
        nx__node_t top = m->nodes[m->members[m->set_off[set] + i]];
        const nx__term_t *t = &m->g->terms[m->g->items[top.pos]];
        uint32_t d = nx__term_step(t, top.dstate, b);
        if (d != NX__DEAD)
            emit_top(m, top.pos, d, top.parent);
        v = nx__set_members(m, set, &n);
    }
    next = intern_scratch(m);
    if (!m->overflow)
        memo_put(m, set, b, next);
    return next;
}

uint32_t nx__top_cont(nx_gram_matcher_t *m, uint32_t top)
{
    if (m->nodes[top].cont != NX__DEAD)
        return m->nodes[top].cont;
    m->n_scratch = 0;
    new_batch(m);
    expand(m, m->nodes[top].pos + 1, m->nodes[top].parent);
    uint32_t cont = intern_scratch(m);
    /* an empty continuation stays NX__DEAD and is recomputed: cheap, and rare */
    m->nodes[top].cont = cont;
    return cont;
}

/* --- the public matcher ------------------------------------------------------------------------ */

nx_gram_matcher_t *nx_gram_matcher_new(const nx_gram_t *gram, const nx_gram_vocab_t *vocab,
                                       nx_err_t *err)
{
    nx_gram_matcher_t *m = calloc(1, sizeof *m);
    if (!m)
        goto oom;
    m->g = gram;
    m->v = vocab;
    m->cap_nodes = 1024;
    m->cap_sets = 256;
    m->cap_members = 4096;
    m->n_memo = 1024;
    m->nodes = malloc(m->cap_nodes * sizeof *m->nodes);
    m->set_off = malloc(((size_t)m->cap_sets + 1) * sizeof *m->set_off);
    m->members = malloc(m->cap_members * sizeof *m->members);
    m->memo = calloc(2 * m->n_memo, sizeof *m->memo);
    if (!m->nodes || !m->set_off || !m->members || !m->memo)
        goto oom;
    m->nodes[0] = (nx__node_t){.pos = NX__DEAD, .dstate = NX__DEAD, .parent = NX__DEAD,
                               .cont = NX__DEAD};
    m->n_nodes = 1;
    m->set_off[0] = 0;
    m->n_scratch = 0;
    new_batch(m);
    for (uint32_t a = gram->rule_alt[gram->root]; a < gram->rule_alt[gram->root + 1]; a++)
        expand(m, gram->alt_start[a], NX__NO_PARENT);
    m->start = m->cur = intern_scratch(m);
    if (m->overflow) {
        nx_err_set(err, NX_ENOMEM, "grammar's start state over the matcher's caps");
        nx_gram_matcher_destroy(&m);
        return NULL;
    }
    return m;
oom:
    nx_err_set(err, NX_ENOMEM, "out of memory creating a grammar matcher");
    nx_gram_matcher_destroy(&m);
    return NULL;
}

void nx_gram_matcher_destroy(nx_gram_matcher_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_gram_matcher_t *m = *self_p;
    nx__mask_cache_free(m->cache);
    free(m->nodes);
    free(m->node_slots);
    free(m->members);
    free(m->set_off);
    free(m->set_slots);
    free(m->memo);
    free(m->scratch);
    free(m->visit);
    free(m->visit_stamp);
    free(m);
    *self_p = NULL;
}

/* Interned stacks and states past these are dropped at a reset (the per-terminal token classes,
 * which do not refer to them, are kept): a matcher reused for generation after generation of
 * a recursive grammar does not grow without end. */
#define RESET_NODES (1u << 20)
#define RESET_MEMBERS (1u << 23)

void nx_gram_matcher_reset(nx_gram_matcher_t *self)
{
    self->ended = false;
    if (self->n_nodes > RESET_NODES || self->n_members > RESET_MEMBERS || self->overflow) {
        self->n_nodes = 1;
        memset(self->node_slots, 0, self->n_node_slots * sizeof *self->node_slots);
        self->n_sets = 0;
        self->n_members = 0;
        memset(self->set_slots, 0, self->n_set_slots * sizeof *self->set_slots);
        memset(self->memo, 0, 2 * self->n_memo * sizeof *self->memo);
        self->memo_used = 0;
        self->overflow = false;
        nx__mask_cache_forget_states(self->cache);
        const nx_gram_t *g = self->g;
        self->n_scratch = 0;
        new_batch(self);
        for (uint32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++)
            expand(self, g->alt_start[a], NX__NO_PARENT);
        self->start = intern_scratch(self); /* it fitted before: it fits again */
    }
    self->cur = self->start;
}

nx_gram_state_t nx_gram_matcher_state(const nx_gram_matcher_t *self)
{
    return (nx_gram_state_t){.id = self->ended ? NX__DEAD - 1 : self->cur};
}

void nx_gram_matcher_set_state(nx_gram_matcher_t *self, nx_gram_state_t state)
{
    self->ended = state.id == NX__DEAD - 1;
    if (!self->ended)
        self->cur = state.id;
}

int nx_gram_matcher_advance(nx_gram_matcher_t *self, const void *bytes, size_t len,
                            nx_err_t *err)
{
    if (self->overflow)
        return nx_err_set(err, NX_ENOMEM, "grammar matcher over its state caps");
    if (self->ended)
        return len ? NX_EINVAL : NX_OK;
    uint32_t s = self->cur;
    const uint8_t *p = bytes;
    for (size_t i = 0; i < len && s != NX__DEAD; i++)
        s = nx__set_advance(self, s, p[i]);
    if (self->overflow)
        return nx_err_set(err, NX_ENOMEM, "grammar matcher over its state caps");
    if (s == NX__DEAD)
        return NX_EINVAL;
    self->cur = s;
    return NX_OK;
}

bool nx_gram_matcher_accepting(const nx_gram_matcher_t *self)
{
    if (self->cur == NX__DEAD)
        return false;
    uint32_t n;
    const uint32_t *v = nx__set_members(self, self->cur, &n);
    return n && v[0] == NX__ACCEPT_NODE;
}

bool nx_gram_matcher_finished(const nx_gram_matcher_t *self)
{
    if (self->ended || self->cur == NX__DEAD)
        return true;
    uint32_t n;
    const uint32_t *v = nx__set_members(self, self->cur, &n);
    return n == 1 && v[0] == NX__ACCEPT_NODE;
}
