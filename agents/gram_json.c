/* gram_json.c — the grammar of any JSON value in compact form (no whitespace), shared by the
 * schema compiler (`true`, `{}`, unconstrained places) and json_object mode. Strings are one
 * terminal (quotes included) and a key with its colon is another, so the mask's crossing
 * checks only happen at the few places where a token spans two terminals.
 */
#include <string.h>

#include <stdio.h>

#include "gram_internal.h"

#define NUMBER_RE "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?"

/* One terminal per grammar for each (keyed, see nx__gb_keyed): a tools array's 300 schemas
 * share their free strings, keys and numbers, and masks walk each once. */
static uint32_t term_re(nx__gb_t *b, const char *re, nx__enc_t enc, const char *pre,
                        const char *suf, nx_err_t *err)
{
    char key[160];
    int n = snprintf(key, sizeof key, "j%d%s\x01%s\x01%s", (int)enc, pre ? pre : "",
                     suf ? suf : "", re);
    bool keyed = n > 0 && (size_t)n < sizeof key; /* a cut key could name another regex */
    uint32_t t = keyed ? nx__gb_keyed(b, key) : NX__DEAD;
    if (t != NX__DEAD)
        return t;
    nx__dfa_t d;
    if (nx__regex_dfa(re, false, enc, pre, suf, &d, err) != NX_OK)
        return NX__DEAD;
    t = nx__gb_dfa(b, &d);
    if (keyed)
        nx__gb_key(b, key, t);
    return t;
}

uint32_t nx__gb_json_string_term(nx__gb_t *b, nx_err_t *err)
{
    return term_re(b, "[\\s\\S]*", NX__ENC_JSON, "\"", "\"", err);
}

uint32_t nx__gb_json_value(nx__gb_t *b, nx_err_t *err)
{
    uint32_t value = nx__gb_rule(b), object = nx__gb_rule(b), array = nx__gb_rule(b);
    uint32_t member = nx__gb_rule(b);
    uint32_t str = nx__gb_json_string_term(b, err);
    uint32_t key = term_re(b, "[\\s\\S]*", NX__ENC_JSON, "\"", "\":", err);
    uint32_t num = term_re(b, NUMBER_RE, NX__ENC_UTF8, NULL, NULL, err);
    uint32_t lb = nx__gb_literal(b, "{", 1), rb = nx__gb_literal(b, "}", 1);
    uint32_t ls = nx__gb_literal(b, "[", 1), rs = nx__gb_literal(b, "]", 1);
    uint32_t comma = nx__gb_literal(b, ",", 1);
    if (str == NX__DEAD || key == NX__DEAD || num == NX__DEAD || value == NX__DEAD ||
        member == NX__DEAD)
        return NX__DEAD;
    int rc = NX_OK;
    uint32_t alts[][1] = {{NX__REF(object)}, {NX__REF(array)}, {NX__TERM(str)}, {NX__TERM(num)},
                          {NX__TERM(nx__gb_literal(b, "true", 4))},
                          {NX__TERM(nx__gb_literal(b, "false", 5))},
                          {NX__TERM(nx__gb_literal(b, "null", 4))}};
    for (size_t i = 0; i < sizeof alts / sizeof alts[0]; i++)
        rc |= nx__gb_alt(b, value, alts[i], 1);
    rc |= nx__gb_alt(b, member, (uint32_t[]){NX__TERM(key), NX__REF(value)}, 2);
    uint32_t members = nx__gb_repeat(b, NX__REF(member), NX__TERM(comma), 1, UINT32_MAX, err);
    uint32_t values = nx__gb_repeat(b, NX__REF(value), NX__TERM(comma), 1, UINT32_MAX, err);
    if (members == NX__DEAD || values == NX__DEAD)
        return NX__DEAD;
    rc |= nx__gb_alt(b, object, (uint32_t[]){NX__TERM(lb), NX__TERM(rb)}, 2);
    rc |= nx__gb_alt(b, object, (uint32_t[]){NX__TERM(lb), NX__REF(members), NX__TERM(rb)}, 3);
    rc |= nx__gb_alt(b, array, (uint32_t[]){NX__TERM(ls), NX__TERM(rs)}, 2);
    rc |= nx__gb_alt(b, array, (uint32_t[]){NX__TERM(ls), NX__REF(values), NX__TERM(rs)}, 3);
    if (rc != NX_OK) {
        nx_err_set(err, NX_ENOMEM, "out of memory building the JSON grammar");
        return NX__DEAD;
    }
    return value;
}

nx_gram_t *nx_gram_json_object(nx_err_t *err)
{
    nx__gb_t *b = nx__gb_new();
    if (!b) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NULL;
    }
    uint32_t value = nx__gb_json_value(b, err);
    if (value == NX__DEAD) {
        nx__gb_free(b);
        return NULL;
    }
    /* the value rule's first alternative is the object rule, created right after it */
    uint32_t root = nx__gb_rule(b);
    if (nx__gb_alt(b, root, (uint32_t[]){NX__REF(value + 1)}, 1) != NX_OK) {
        nx__gb_free(b);
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NULL;
    }
    return nx__gb_finish(b, root, NULL, 0, err);
}
