/* gram_forced.c — the bytes a grammar forces from a matcher's state: where exactly one byte can
 * follow (and the input is not yet a sentence, so no end can come instead), the output has no
 * choice, and the generation can append those bytes without sampling (gen_grammar.c).
 *
 * A state is a closed set of parse stacks whose tops sit inside terminals, so the bytes that
 * can follow are the union over the tops of the bytes their terminal's DFA (or literal) takes
 * from its state; the walk stops at the second distinct byte.
 */
#include "gram_internal.h"

/* The only byte that can follow `set`, or -1 (none, several, or the set accepts). */
static int only_byte(const nx_gram_matcher_t *m, uint32_t set)
{
    uint32_t n;
    const uint32_t *v = nx__set_members(m, set, &n);
    int only = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] == NX__ACCEPT_NODE)
            return -1; /* a sentence already: an end id may come instead */
        const nx__node_t *top = &m->nodes[v[i]];
        const nx__term_t *t = &m->g->terms[m->g->items[top->pos]];
        if (t->kind == NX__T_LITERAL) {
            if (top->dstate >= t->len)
                continue;
            int b = (uint8_t)t->lit[top->dstate];
            if (only >= 0 && only != b)
                return -1;
            only = b;
            continue;
        }
        for (int b = 0; b < 256; b++) {
            if (nx__term_step(t, top->dstate, (uint8_t)b) == NX__DEAD)
                continue;
            if (only >= 0 && only != b)
                return -1;
            only = b;
        }
    }
    return only;
}

size_t nx_gram_matcher_forced(nx_gram_matcher_t *self, char *out, size_t cap)
{
    uint32_t set = self->cur;
    size_t n = 0;
    while (n < cap && set != NX__DEAD && !self->ended && !self->overflow) {
        int b = only_byte(self, set);
        if (b < 0)
            break;
        out[n++] = (char)b;
        set = nx__set_advance(self, set, (uint8_t)b);
    }
    return n;
}

nx_gram_state_t nx_gram_matcher_start(const nx_gram_matcher_t *self)
{
    return (nx_gram_state_t){.id = self->start};
}
