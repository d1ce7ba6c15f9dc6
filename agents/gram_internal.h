/* gram_internal.h — the grammar engine's insides, shared by gram_dfa.c (NFA, subset
 * construction, products), gram_regex.c (the ECMA regex subset and code-point classes),
 * gram_build.c (rules and terminals, checks, the frozen grammar), gram_match.c (stacks and
 * states), gram_mask.c (token trie and masks), gram_schema*.c and gram_gbnf.c. Not public.
 *
 * Why terminals are DFAs under a pushdown automaton: a JSON string, a number or a keyword is
 * regular, and the token trie can be walked through a DFA at a table lookup per node; only
 * where a token crosses a terminal's end does the stack matter. So the mask engine caches, per
 * (terminal, DFA state), the tokens that stay inside the terminal (context-free) and the
 * tokens that leave it (checked against the real stacks, grouped by what follows the end).
 */
#ifndef NX_GRAM_INTERNAL_H
#define NX_GRAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar.h"

#define NX__DEAD UINT32_MAX
/* Caps that keep hostile schemas and grammars from exhausting memory or time. */
#define NX__MAX_DFA_STATES 65536u    /* per terminal */
/* NFA states visited times byte classes while one regex's DFA is built: its cost (about 7 ns
 * a step at -O2). The JSON-Schema-Test-Suite, the generation tests and the bench's schemas
 * need at most 86 k; a 442-byte `pattern` found by fuzz_json_schema needed 182 M (1.2 s, 51 s
 * under ASan). 4.2 M keeps any one regex near 30 ms (about 1 s under ASan). */
#define NX__MAX_DFA_WORK (1ull << 22)
#define NX__MAX_NFA_STATES 2000000u  /* per regex build */
#define NX__MAX_ELEMS 8000000u       /* grammar items in total */
#define NX__MAX_RULES 2000000u
#define NX__MAX_REPEAT 10000u        /* {m,n} bounds, minItems/maxItems, lengths */

/* --- DFAs ---------------------------------------------------------------------------------- */

enum { NX__DFA_ACCEPT = 1, NX__DFA_MORE = 2 /* some transition leads to a live state */ };

/* A byte-level DFA with equivalence classes of bytes. State 0 is the start; every state is
 * live (can reach an accepting state) except in an empty language (n_states == 0). */
typedef struct nx__dfa {
    uint32_t n_states;
    uint32_t n_classes;
    uint8_t byte_class[256];
    uint32_t *trans; /* [n_states * n_classes]: next state or NX__DEAD */
    uint8_t *flags;  /* [n_states]: NX__DFA_ACCEPT | NX__DFA_MORE */
} nx__dfa_t;

void nx__dfa_free(nx__dfa_t *d);
/* a ∩ b, or a ∖ b with minus; the result is trimmed to live states. NX_OK / NX_ENOMEM /
 * NX_ENOTSUP (over NX__MAX_DFA_STATES; err names the cap). */
int nx__dfa_product(const nx__dfa_t *a, const nx__dfa_t *b, bool minus, nx__dfa_t *out,
                    nx_err_t *err);

/* A Thompson NFA over byte ranges, built by the regex code and turned into a DFA. */
typedef struct nx__nfa_edge {
    uint32_t from, to;
    uint8_t lo, hi; /* byte range; eps when is_eps */
    bool is_eps;
} nx__nfa_edge_t;

typedef struct nx__nfa {
    uint32_t n_states;
    nx__nfa_edge_t *edges;
    size_t n_edges, cap_edges;
    bool overflow; /* a cap was hit while building */
} nx__nfa_t;

uint32_t nx__nfa_state(nx__nfa_t *n);
void nx__nfa_edge(nx__nfa_t *n, uint32_t from, uint32_t to, uint8_t lo, uint8_t hi);
void nx__nfa_eps(nx__nfa_t *n, uint32_t from, uint32_t to);
void nx__nfa_free(nx__nfa_t *n);
/* Subset construction from start to the single accepting state `accept`; trimmed. */
int nx__nfa_to_dfa(const nx__nfa_t *n, uint32_t start, uint32_t accept, nx__dfa_t *out,
                   nx_err_t *err);

/* --- regular expressions over code points ------------------------------------------------ */

/* A regex syntax tree. Classes are sorted, disjoint code point ranges. */
typedef enum { NX__RX_CLASS, NX__RX_CAT, NX__RX_ALT, NX__RX_REPEAT, NX__RX_EMPTY } nx__rx_kind_t;

typedef struct nx__rx {
    nx__rx_kind_t kind;
    uint32_t *ranges;   /* CLASS: lo0, hi0, lo1, hi1, ... */
    uint32_t n_ranges;
    struct nx__rx **kids; /* CAT, ALT; REPEAT has one */
    uint32_t n_kids;
    uint32_t min, max;  /* REPEAT; max UINT32_MAX = unbounded */
} nx__rx_t;

void nx__rx_free(nx__rx_t *rx);
/* Parse an ECMA-262 pattern as JSON Schema uses it (unanchored search unless ^/$ at the ends
 * of the top-level alternatives). Lookaround, backreferences and the like are NX_ENOTSUP
 * naming the construct; syntax errors NX_EINVAL with the offset. */
nx__rx_t *nx__rx_parse(const char *pattern, size_t len, bool search, nx_err_t *err);
/* How code points become bytes: raw UTF-8, or inside a JSON string (escapes as json.dumps
 * with ensure_ascii=False writes them). */
typedef enum { NX__ENC_UTF8, NX__ENC_JSON } nx__enc_t;
/* Add rx between NFA states from and to. */
void nx__rx_to_nfa(const nx__rx_t *rx, nx__enc_t enc, nx__nfa_t *nfa, uint32_t from,
                   uint32_t to);
/* A whole DFA: prefix bytes, rx encoded, suffix bytes (for "quoted" JSON strings). */
int nx__rx_dfa(const nx__rx_t *rx, nx__enc_t enc, const char *prefix, const char *suffix,
               nx__dfa_t *out, nx_err_t *err);
/* The DFA of a quoted JSON string (json.dumps's encoding) of min..max code points (max
 * UINT32_MAX: no bound), min <= max, built directly (gram_strlen.c). NX_OK / NX_ENOMEM /
 * NX_ENOTSUP (over NX__MAX_DFA_STATES; err says so). */
int nx__dfa_json_length(uint32_t min, uint32_t max, nx__dfa_t *out, nx_err_t *err);
/* Its layout: state 0 before the opening quote, then per_count states per character count
 * (count n's character boundary is 1 + n * per_count), the last state after the closing
 * quote. 0 when the character DFA could not be built. */
uint32_t nx__dfa_json_length_per_count(void);
/* Parse + DFA in one call. */
int nx__regex_dfa(const char *pattern, bool search, nx__enc_t enc, const char *prefix,
                  const char *suffix, nx__dfa_t *out, nx_err_t *err);

/* --- grammars ------------------------------------------------------------------------------ */

/* An item of an alternative: a terminal, a rule reference, or the end of the alternative. */
#define NX__IT_KIND(x) ((x) >> 30)
#define NX__IT_ARG(x) ((x) & 0x3fffffffu)
enum { NX__IT_TERM = 0, NX__IT_REF = 1, NX__IT_END = 2 };
#define NX__TERM(t) ((uint32_t)(t))
#define NX__REF(r) ((1u << 30) | (uint32_t)(r))
#define NX__END (2u << 30)

typedef enum { NX__T_LITERAL, NX__T_DFA } nx__term_kind_t;

typedef struct nx__term {
    nx__term_kind_t kind;
    char *lit;       /* LITERAL: the bytes; the state is how many matched */
    uint32_t len;
    nx__dfa_t dfa;   /* DFA */
    /* DFA from nx__dfa_json_length alone (a string of bounded length, no format or pattern):
     * states per character count (0: not such a terminal) and the max (UINT32_MAX: none),
     * so the mask engine reads which plain tokens fit from the state number (gram_mask.c) */
    uint32_t strlen_k, strlen_max;
} nx__term_t;

static inline uint32_t nx__term_step(const nx__term_t *t, uint32_t s, uint8_t b)
{
    if (t->kind == NX__T_LITERAL)
        return s < t->len && (uint8_t)t->lit[s] == b ? s + 1 : NX__DEAD;
    return t->dfa.trans[(size_t)s * t->dfa.n_classes + t->dfa.byte_class[b]];
}
static inline bool nx__term_accepting(const nx__term_t *t, uint32_t s)
{
    return t->kind == NX__T_LITERAL ? s == t->len : (t->dfa.flags[s] & NX__DFA_ACCEPT) != 0;
}
static inline bool nx__term_more(const nx__term_t *t, uint32_t s)
{
    return t->kind == NX__T_LITERAL ? s < t->len : (t->dfa.flags[s] & NX__DFA_MORE) != 0;
}
static inline bool nx__term_empty(const nx__term_t *t)
{
    return t->kind == NX__T_DFA && t->dfa.n_states == 0;
}

/* Token classes shared by the matchers of one grammar (gram_mask.c); internally locked. */
typedef struct nx__tc_shared nx__tc_shared_t;
nx__tc_shared_t *nx__tc_shared_new(void);
void nx__tc_shared_free(nx__tc_shared_t *sh);

struct nx_gram {
    uint32_t *items;     /* every alternative's items, each ended by NX__END */
    uint32_t n_items;
    uint32_t *alt_start; /* item index of each alternative */
    uint32_t *rule_alt;  /* [n_rules + 1]: rule r's alternatives are alt_start[rule_alt[r]..] */
    uint32_t n_rules;
    nx__term_t *terms;
    uint32_t n_terms;
    uint32_t root;
    nx__tc_shared_t *shared; /* NULL: none (no memory at creation); classes stay per matcher */
};

/* The builder: rules are created first (so recursion can name them) and given alternatives. */
typedef struct nx__gb nx__gb_t;

nx__gb_t *nx__gb_new(void);
void nx__gb_free(nx__gb_t *b);
/* A new rule with no alternative yet (an empty language until given one); NX__DEAD on a cap. */
uint32_t nx__gb_rule(nx__gb_t *b);
/* Append an alternative of n items (NX__TERM/NX__REF; no END). NX_OK / NX_ENOMEM / NX_ENOTSUP. */
int nx__gb_alt(nx__gb_t *b, uint32_t rule, const uint32_t *items, size_t n);
/* Terminals; literals are interned. NX__DEAD on a cap or no memory. */
uint32_t nx__gb_literal(nx__gb_t *b, const char *bytes, size_t len);
/* Takes ownership of *dfa (zeroed). */
uint32_t nx__gb_dfa(nx__gb_t *b, nx__dfa_t *dfa);
/* Mark DFA terminal term as nx__dfa_json_length's (see nx__term_t.strlen_k). */
void nx__gb_term_strlen(nx__gb_t *b, uint32_t term, uint32_t per_count, uint32_t max);
/* DFA terminals by a key naming how they were built (a format, a string's bounds, a number
 * range), so the same piece in many schemas of one grammar (300 tools with an e-mail field)
 * is built once and is one terminal, whose token classes masks then share. nx__gb_keyed is
 * NX__DEAD for an unknown key; nx__gb_key records term under key (a copy), silently not on
 * no memory (a cache). */
uint32_t nx__gb_keyed(const nx__gb_t *b, const char *key);
void nx__gb_key(nx__gb_t *b, const char *key, uint32_t term);
/* A rule for item{min,max} (max UINT32_MAX: unbounded) with sep between repetitions
 * (sep NX__DEAD: none). NX__DEAD on a cap; err says which. */
uint32_t nx__gb_repeat(nx__gb_t *b, uint32_t item, uint32_t sep, uint32_t min, uint32_t max,
                       nx_err_t *err);
/* Freeze into a grammar with the given root rule; checks left recursion (NX_EINVAL naming
 * the rule via names[], which may be NULL). Frees the builder in all cases. */
nx_gram_t *nx__gb_finish(nx__gb_t *b, uint32_t root, const char *const *names, size_t n_names,
                         nx_err_t *err);
/* Number of rules so far (names[] indices of gram_gbnf.c). */
uint32_t nx__gb_rule_count(const nx__gb_t *b);

/* gram_json.c: the rule of any JSON value (shared by schema `true`, json_object mode). */
uint32_t nx__gb_json_value(nx__gb_t *b, nx_err_t *err);
uint32_t nx__gb_json_string_term(nx__gb_t *b, nx_err_t *err);


/* --- matchers (gram_match.c; masks in gram_mask.c) ------------------------------------------ */

/* A stack node, interned: a frame (dstate NX__DEAD: return to item pos under parent) or a
 * top (inside the terminal at item pos, in its state dstate). Node 0 stands for the empty
 * stack: the grammar has accepted. */
typedef struct nx__node {
    uint32_t pos, dstate, parent;
    uint32_t cont; /* tops: the set after the terminal ends here (lazily), NX__DEAD unknown */
} nx__node_t;

#define NX__NO_PARENT UINT32_MAX
#define NX__ACCEPT_NODE 0u
#define NX__MAX_NODES (1u << 22)
#define NX__MAX_SET_MEMBERS (1u << 25) /* all sets together */
#define NX__MAX_EXPANSIONS (1u << 16) /* (item, parent) pairs expanded for one byte */
#define NX__MAX_SET_SIZE (1u << 12) /* one set: more parse stacks is a runaway grammar */

typedef struct nx__mask_cache nx__mask_cache_t;

struct nx_gram_matcher {
    const nx_gram_t *g;
    const nx_gram_vocab_t *v;
    nx__node_t *nodes;
    uint32_t n_nodes, cap_nodes;
    uint32_t *node_slots; /* node id + 1 */
    size_t n_node_slots;
    uint32_t *members; /* interned sets (sorted node ids), back to back */
    size_t n_members, cap_members;
    uint32_t *set_off; /* [n_sets + 1] */
    uint32_t n_sets, cap_sets;
    uint32_t *set_slots; /* set id + 1 */
    size_t n_set_slots;
    uint64_t *memo;      /* (set << 8 | byte) + 1 in the high part, next set in the low */
    size_t n_memo, memo_used;
    uint32_t *scratch;   /* members of the set being built */
    size_t n_scratch, cap_scratch;
    uint32_t depth;      /* expansion depth, for the guard */
    uint64_t *visit;     /* (pos, parent) + 1 expanded in the current batch, with its stamp */
    uint32_t *visit_stamp;
    size_t n_visit, used_visit;
    uint32_t stamp;      /* the current expansion batch */
    uint32_t start, cur; /* set ids; NX__DEAD = no stack left */
    bool ended;          /* an end id was accepted */
    bool overflow;       /* a cap was hit; operations say NX_ENOMEM */
    nx__mask_cache_t *cache;
};

/* Interned sets: the set after byte b (NX__DEAD when every stack dies). */
uint32_t nx__set_advance(nx_gram_matcher_t *m, uint32_t set, uint8_t b);
/* The set after the terminal of top node `top` ends where it stands (its continuation). */
uint32_t nx__top_cont(nx_gram_matcher_t *m, uint32_t top);
static inline const uint32_t *nx__set_members(const nx_gram_matcher_t *m, uint32_t set,
                                              uint32_t *n)
{
    *n = m->set_off[set + 1] - m->set_off[set];
    return m->members + m->set_off[set];
}
void nx__mask_cache_free(nx__mask_cache_t *c);
/* Forget the masks cached per state (the states are being dropped); keeps the token classes. */
void nx__mask_cache_forget_states(nx__mask_cache_t *c);

#endif
