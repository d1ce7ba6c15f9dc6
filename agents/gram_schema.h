/* gram_schema.h — internal: the JSON Schema compiler's state, shared by gram_schema.c (the
 * walk, $ref, combinators, keyword checks), gram_schema_merge.c (allOf) and
 * gram_schema_types.c (strings, numbers, objects, arrays, literals). Not public.
 */
#ifndef NX_GRAM_SCHEMA_H
#define NX_GRAM_SCHEMA_H

#include <jansson.h>

#include "gram_internal.h"

#define NX__SC_MAX_DEPTH 64      /* nested subschemas compiled on the C stack */
#define NX__SC_MAX_SYNTH 20000   /* schemas synthesized by allOf merges and distribution */
#define NX__SC_PTR 512           /* JSON pointer text kept for messages */

typedef struct nx__sc {
    nx__gb_t *b;
    json_t *root;
    nx_gram_draft_t draft;
    bool strict;
    nx_err_t *err;
    int rc;                 /* first error */
    /* rules of compiled schema nodes, by node address (recursion through $ref included) */
    const json_t **memo_node;
    uint32_t *memo_rule;
    size_t n_memo, used_memo;
    json_t *synth;          /* array keeping synthesized schemas alive */
    uint32_t depth, nested;
    uint32_t any_rule, str_term, num_term, int_term; /* shared pieces, NX__DEAD until made */
} nx__sc_t;

/* Keywords that only annotate (title, default, ...): ignored by the compiler and by the
 * compatibility check (gram_compat.c). NULL-terminated. */
extern const char *const nx__sc_annotations[];
/* Keywords that constrain instances and are not built: the compiler refuses them, and the
 * compatibility check refuses them on an input schema. NULL-terminated. */
extern const char *const nx__sc_unsupported_keys[];
/* Is key one of list's (NULL-terminated) keywords? */
bool nx__sc_key_in(const char *const *list, const char *key);

/* Record the first error; returns NX__DEAD for `return nx__sc_fail(...)` in rule builders. */
uint32_t nx__sc_fail(nx__sc_t *sc, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "unsupported keyword 'k' at PTR" */
uint32_t nx__sc_unsupported(nx__sc_t *sc, const char *keyword, const char *ptr,
                            const char *why);
/* The rule of a subschema at pointer ptr (memoized by node). */
uint32_t nx__sc_compile(nx__sc_t *sc, json_t *node, const char *ptr);
/* ptr + "/" + key, escaped as RFC 6901 says, into out (NX__SC_PTR bytes). */
void nx__sc_ptr(char *out, const char *ptr, const char *key);
const char *nx__sc_where(const char *ptr); /* "/a/b", or "the root" */

/* A schema object to follow: $ref resolved (with 2020-12 siblings merged in) and allOf merged
 * away; a new reference the caller releases, or NULL after an error. */
json_t *nx__sc_resolve(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t depth);
/* a ∧ b as one schema object (both resolved, neither with allOf); NULL after an error. */
json_t *nx__sc_merge(nx__sc_t *sc, json_t *a, json_t *b, const char *ptr);
/* Keep a synthesized schema alive for the compile (steals the reference; returns it). */
json_t *nx__sc_keep(nx__sc_t *sc, json_t *node);

/* A JSON number as the decimal its schema text wrote: (neg ? -1 : 1) * ip.frac exactly. */
typedef struct nx__decimal {
    bool neg;           /* below zero; never for 0 (-0 and -0.0 are 0) */
    int64_t ip;         /* integer part, at most 2^53 */
    char frac[41];      /* fraction digits without trailing zeros; "" for an integer */
} nx__decimal_t;
/* The exact decimal of a JSON number: integers as they are; reals (jansson keeps a double) as
 * the shortest decimal of at most 15 significant digits that reads back as the same double,
 * which is the one the text wrote (two decimals of 15 digits or fewer never share a double).
 * false, with *why set, for a real that needs more digits (its decimal is not known), beyond
 * 2^53, or with more than 40 fraction digits. */
bool nx__json_decimal(json_t *v, nx__decimal_t *d, const char **why);
/* Is v a number whose value is an integer within ±2^53 (an integer, or a real such as 5.0)?
 * Sets *n: the grammar writes such a value as its integer text ("5"), never "5.0". */
bool nx__json_integral(const json_t *v, long long *n);
/* A copy of v (any depth) with every integral real as an integer (5.0 as 5): the value as the
 * grammar writes it, for checking a literal against a compiled grammar. Caller owns the
 * result; NULL when out of memory. */
json_t *nx__json_as_written(json_t *v);

/* allOf of multipleOf a and b: their least common multiple as a new JSON number (exact for
 * decimals: lcm(0.25, 0.1) is 0.5); NULL after an error naming 'multipleOf' at ptr. */
json_t *nx__sc_multiple_lcm(nx__sc_t *sc, json_t *a, json_t *b, const char *ptr);

/* gram_schema_types.c: one alternative group per JSON type, all into rule `rule`. */
int nx__sc_string(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule);
int nx__sc_number(nx__sc_t *sc, json_t *node, const char *ptr, bool integer, uint32_t rule);
int nx__sc_object(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule);
int nx__sc_array(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule);
/* enum/const: the values (filtered by the caller) as one terminal into rule. */
int nx__sc_literals(nx__sc_t *sc, json_t *values, const char *ptr, uint32_t rule);
/* Append the regex matching a value's compact forms (a number equal to an integer as that
 * integer: 5.0 as "5", zero as 0 or -0; objects of up to 4 members in any order) to buf.
 * false: out of memory or a value too large. */
bool nx__sc_value_regex(json_t *v, char **buf, size_t *len, size_t *cap, int depth);

/* Type bits of a schema, for type lists and oneOf's disjointness check. */
enum {
    NX__SC_NULL = 1, NX__SC_BOOL = 2, NX__SC_OBJECT = 4, NX__SC_ARRAY = 8, NX__SC_NUMBER = 16,
    NX__SC_STRING = 32, NX__SC_INTEGER = 64, NX__SC_ALL = 127
};
unsigned nx__sc_value_type(const json_t *v);

#endif
