/* gram_schema_struct.c — objects, arrays and enum/const literals for the schema compiler (the
 * orders and bounds admitted are documented at the top of gram_schema_types.c).
 *
 * Objects with up to 6 listed properties are a subset automaton: rule M[s] picks the next
 * member among those not yet in s (or an additional one), T[s] continues with a comma or
 * closes once every required one is in s. 2^6 states at most, so 300 tools stay small.
 * An additional key is a JSON string DFA minus the listed keys, so a listed key always takes
 * its own schema and the automaton stays deterministic at key boundaries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gram_schema.h"

#define MAX_ANY_ORDER 6

typedef struct member {
    const char *key;
    size_t key_len;
    json_t *schema;
    bool required;
    uint32_t key_term, value_rule;
} member_t;

static char *json_key(const char *s, size_t n, size_t *len_out)
{
    static const char hex[] = "0123456789abcdef";
    char *out = malloc(6 * n + 4), *p = out;
    if (!out)
        return NULL;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b"
                      : c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t" : NULL;
        if (e) {
            memcpy(p, e, 2);
            p += 2;
        } else if (c < 0x20) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[c >> 4];
            p[5] = hex[c & 15];
            p += 6;
        } else
            *p++ = (char)c;
    }
    *p++ = '"';
    *p++ = ':';
    *len_out = (size_t)(p - out);
    return out;
}

/* "any key but these", with its colon. */
static uint32_t other_key_term(nx__sc_t *sc, member_t *mem, size_t n)
{
    nx__dfa_t any, listed, out;
    nx_err_t e = {0};
    if (nx__regex_dfa("[\\s\\S]*", false, NX__ENC_JSON, "\"", "\":", &any, &e) != NX_OK)
        return nx__sc_fail(sc, e.code ? e.code : NX_ENOMEM, "%s", e.msg);
    if (n == 0)
        return nx__gb_dfa(sc->b, &any);
    nx__nfa_t nfa = {0};
    uint32_t start = nx__nfa_state(&nfa), accept = nx__nfa_state(&nfa);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *k = json_key(mem[i].key, mem[i].key_len, &len);
        if (!k) {
            nx__nfa_free(&nfa);
            nx__dfa_free(&any);
            return nx__sc_fail(sc, NX_ENOMEM, "out of memory");
        }
        uint32_t cur = start;
        for (size_t j = 0; j < len; j++) {
            uint32_t next = j + 1 == len ? accept : nx__nfa_state(&nfa);
            nx__nfa_edge(&nfa, cur, next, (uint8_t)k[j], (uint8_t)k[j]);
            cur = next;
        }
        free(k);
    }
    int rc = nx__nfa_to_dfa(&nfa, start, accept, &listed, &e);
    nx__nfa_free(&nfa);
    if (rc == NX_OK) {
        rc = nx__dfa_product(&any, &listed, true, &out, &e);
        nx__dfa_free(&listed);
    }
    nx__dfa_free(&any);
    if (rc != NX_OK)
        return nx__sc_fail(sc, rc, "%s", e.msg);
    return nx__gb_dfa(sc->b, &out);
}

static int oom(nx__sc_t *sc)
{
    if (!sc->rc)
        nx__sc_fail(sc, NX_ENOMEM, "out of memory or over the grammar's size cap");
    return sc->rc;
}

/* Any order: M[s], T[s] for every subset s of the listed members. */
static int any_order(nx__sc_t *sc, member_t *mem, size_t n, uint32_t other_key,
                     uint32_t other_value, uint32_t comma, uint32_t body)
{
    uint32_t count = 1u << n, req = 0;
    uint32_t M[1u << MAX_ANY_ORDER], T[1u << MAX_ANY_ORDER];
    for (size_t i = 0; i < n; i++)
        req |= mem[i].required ? 1u << i : 0;
    for (uint32_t s = 0; s < count; s++) {
        M[s] = nx__gb_rule(sc->b);
        T[s] = nx__gb_rule(sc->b);
    }
    int rc = NX_OK;
    for (uint32_t s = 0; s < count && rc == NX_OK; s++) {
        for (size_t i = 0; i < n; i++)
            if (!(s & (1u << i)))
                rc |= nx__gb_alt(sc->b, M[s], (uint32_t[]){NX__TERM(mem[i].key_term),
                                 NX__REF(mem[i].value_rule), NX__REF(T[s | 1u << i])}, 3);
        if (other_key != NX__DEAD)
            rc |= nx__gb_alt(sc->b, M[s], (uint32_t[]){NX__TERM(other_key),
                             NX__REF(other_value), NX__REF(T[s])}, 3);
        if (s != count - 1 || other_key != NX__DEAD)
            rc |= nx__gb_alt(sc->b, T[s], (uint32_t[]){NX__TERM(comma), NX__REF(M[s])}, 2);
        if ((s & req) == req)
            rc |= nx__gb_alt(sc->b, T[s], NULL, 0);
    }
    rc |= nx__gb_alt(sc->b, body, (uint32_t[]){NX__REF(M[0])}, 1);
    return rc ? oom(sc) : NX_OK;
}

/* Schema order: C[i][e] = members i.. after e (0/1: something written before). */
static int in_order(nx__sc_t *sc, member_t *mem, size_t n, uint32_t other_key,
                    uint32_t other_value, uint32_t comma, uint32_t body)
{
    uint32_t *C = malloc(2 * (n + 1) * sizeof *C);
    if (!C)
        return oom(sc);
    for (size_t i = 0; i <= n; i++) {
        C[2 * i] = nx__gb_rule(sc->b);
        C[2 * i + 1] = nx__gb_rule(sc->b);
    }
    int rc = NX_OK;
    for (size_t i = 0; i <= n && rc == NX_OK; i++)
        for (int e = 0; e < 2; e++) {
            uint32_t r = C[2 * i + e], items[4], k = 0;
            if (e)
                items[k++] = NX__TERM(comma);
            if (i == n) {
                if (other_key != NX__DEAD) {
                    items[k++] = NX__TERM(other_key);
                    items[k++] = NX__REF(other_value);
                    items[k++] = NX__REF(C[2 * n + 1]);
                    rc |= nx__gb_alt(sc->b, r, items, k);
                }
                rc |= nx__gb_alt(sc->b, r, NULL, 0);
                continue;
            }
            items[k++] = NX__TERM(mem[i].key_term);
            items[k++] = NX__REF(mem[i].value_rule);
            items[k++] = NX__REF(C[2 * (i + 1) + 1]);
            rc |= nx__gb_alt(sc->b, r, items, k);
            if (!mem[i].required)
                rc |= nx__gb_alt(sc->b, r, (uint32_t[]){NX__REF(C[2 * (i + 1) + e])}, 1);
        }
    rc |= nx__gb_alt(sc->b, body, (uint32_t[]){NX__REF(C[0])}, 1);
    free(C);
    return rc ? oom(sc) : NX_OK;
}

int nx__sc_object(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule)
{
    json_t *props = json_object_get(node, "properties"), *req = json_object_get(node, "required");
    json_t *ap = json_object_get(node, "additionalProperties");
    if ((props && !json_is_object(props)) || (req && !json_is_array(req)) ||
        (ap && !json_is_object(ap) && !json_is_boolean(ap)))
        return nx__sc_fail(sc, NX_EINVAL, "properties/required/additionalProperties at %s "
                                          "have the wrong JSON type", nx__sc_where(ptr)), sc->rc;
    if (!ap)
        ap = sc->strict ? json_false() : json_true();
    else
        json_incref(ap);
    size_t n = json_object_size(props) + json_array_size(req);
    member_t *mem = calloc(n ? n : 1, sizeof *mem);
    char p[NX__SC_PTR], pp[NX__SC_PTR];
    int rc = NX_OK;
    if (!mem) {
        json_decref(ap);
        return oom(sc);
    }
    n = 0;
    const char *key;
    json_t *val;
    nx__sc_ptr(pp, ptr, "properties");
    json_object_foreach(props, key, val) {
        mem[n].key = key;
        mem[n].key_len = strlen(key);
        mem[n].schema = val;
        n++;
    }
    size_t i;
    json_array_foreach(req, i, val) {
        const char *k = json_string_value(val);
        if (!k) {
            nx__sc_fail(sc, NX_EINVAL, "'required' at %s holds a non-string",
                        nx__sc_where(ptr));
            rc = sc->rc;
            goto out;
        }
        size_t j = 0;
        while (j < n && strcmp(mem[j].key, k))
            j++;
        if (j == n) { /* required but not listed: its value follows additionalProperties */
            if (json_is_false(ap))
                goto out; /* no object can have it: no alternative */
            mem[n++] = (member_t){.key = k, .key_len = strlen(k), .schema = ap};
        }
        mem[j].required = true;
    }
    for (size_t k = 0; k < n; k++) {
        size_t len;
        char *text = json_key(mem[k].key, mem[k].key_len, &len);
        mem[k].key_term = text ? nx__gb_literal(sc->b, text, len) : NX__DEAD;
        free(text);
        nx__sc_ptr(p, mem[k].schema == ap ? ptr : pp, mem[k].schema == ap
                                                     ? "additionalProperties" : mem[k].key);
        mem[k].value_rule = nx__sc_compile(sc, mem[k].schema, p);
        if (mem[k].key_term == NX__DEAD || mem[k].value_rule == NX__DEAD) {
            rc = oom(sc);
            goto out;
        }
    }
    uint32_t other_key = NX__DEAD, other_value = NX__DEAD;
    if (!json_is_false(ap)) {
        nx__sc_ptr(p, ptr, "additionalProperties");
        other_value = nx__sc_compile(sc, ap, p);
        other_key = other_value == NX__DEAD ? NX__DEAD : other_key_term(sc, mem, n);
        if (other_key == NX__DEAD) {
            rc = oom(sc);
            goto out;
        }
    }
    uint32_t lb = nx__gb_literal(sc->b, "{", 1), rb = nx__gb_literal(sc->b, "}", 1);
    uint32_t comma = nx__gb_literal(sc->b, ",", 1), body = nx__gb_rule(sc->b);
    bool none_required = true;
    for (size_t k = 0; k < n; k++)
        none_required &= !mem[k].required;
    if (none_required)
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(lb), NX__TERM(rb)}, 2);
    if (n || other_key != NX__DEAD) {
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(lb), NX__REF(body), NX__TERM(rb)}, 3);
        rc |= n <= MAX_ANY_ORDER ? any_order(sc, mem, n, other_key, other_value, comma, body)
                                 : in_order(sc, mem, n, other_key, other_value, comma, body);
    }
    if (rc)
        rc = oom(sc);
out:
    free(mem);
    json_decref(ap);
    return rc;
}

/* --- arrays --------------------------------------------------------------------------------- */

int nx__sc_array(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule)
{
    json_t *prefix = NULL, *rest = json_object_get(node, "items");
    const char *rest_key = "items";
    if (sc->draft == NX_GRAM_DRAFT_07) {
        if (json_is_array(rest)) {
            prefix = rest;
            rest = json_object_get(node, "additionalItems");
            rest_key = "additionalItems";
        }
    } else {
        prefix = json_object_get(node, "prefixItems");
        if (json_is_array(rest))
            return nx__sc_fail(sc, NX_EINVAL, "'items' at %s is an array (draft-07's form) in "
                                              "a 2020-12 schema", nx__sc_where(ptr)), sc->rc;
    }
    if (prefix && !json_is_array(prefix))
        return nx__sc_fail(sc, NX_EINVAL, "prefixItems at %s is not an array",
                           nx__sc_where(ptr)), sc->rc;
    if (!rest)
        rest = json_true();
    else
        json_incref(rest);
    uint32_t min = 0, max = UINT32_MAX;
    json_t *mn = json_object_get(node, "minItems"), *mx = json_object_get(node, "maxItems");
    int rc = NX_OK;
    const char *bad = NULL;
    if (mn) {
        double x = json_number_value(mn);
        if (!json_is_number(mn) || x < 0 || x != (double)(uint64_t)x)
            bad = "minItems";
        else if (x > NX__MAX_REPEAT) {
            nx__sc_unsupported(sc, "minItems", ptr, "over 10000 is not built");
            rc = sc->rc;
            goto out;
        } else
            min = (uint32_t)x;
    }
    if (mx) {
        double x = json_number_value(mx);
        if (!json_is_number(mx) || x < 0 || x != (double)(uint64_t)x)
            bad = "maxItems";
        else if (x > NX__MAX_REPEAT) {
            nx__sc_unsupported(sc, "maxItems", ptr, "over 10000 is not built");
            rc = sc->rc;
            goto out;
        } else
            max = (uint32_t)x;
    }
    if (bad) {
        nx__sc_fail(sc, NX_EINVAL, "'%s' at %s is not a non-negative integer", bad,
                    nx__sc_where(ptr));
        rc = sc->rc;
        goto out;
    }
    size_t k = json_array_size(prefix);
    if (json_is_false(rest) && (max == UINT32_MAX || max > k))
        max = (uint32_t)k;
    uint32_t lb = nx__gb_literal(sc->b, "[", 1), rb = nx__gb_literal(sc->b, "]", 1);
    uint32_t comma = nx__gb_literal(sc->b, ",", 1);
    if (min > max)
        goto out; /* no array fits */
    if (min == 0)
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(lb), NX__TERM(rb)}, 2);
    if (max == 0)
        goto out;
    /* E_i: the elements from index i on, at least one. Indices at or past `steady` all look
     * alike when max is unbounded, so E_steady loops on itself. */
    size_t steady = k > min ? k : min;
    size_t chain = max == UINT32_MAX ? steady + 1 : max;
    if (chain > NX__MAX_REPEAT + 1) {
        nx__sc_unsupported(sc, "prefixItems", ptr, "over 10000 items is not built");
        rc = sc->rc;
        goto out;
    }
    uint32_t *E = malloc(chain * sizeof *E);
    if (!E) {
        rc = oom(sc);
        goto out;
    }
    for (size_t i = 0; i < chain; i++)
        E[i] = nx__gb_rule(sc->b);
    char p[NX__SC_PTR + 32], q[NX__SC_PTR];
    uint32_t rest_rule = NX__DEAD;
    for (size_t i = 0; i < chain && rc == NX_OK; i++) {
        uint32_t v;
        if (i < k) {
            nx__sc_ptr(q, ptr, sc->draft == NX_GRAM_DRAFT_07 ? "items" : "prefixItems");
            snprintf(p, sizeof p, "%s/%zu", q, i);
            v = nx__sc_compile(sc, json_array_get(prefix, i), p);
        } else {
            if (rest_rule == NX__DEAD) {
                nx__sc_ptr(p, ptr, rest_key);
                rest_rule = nx__sc_compile(sc, rest, p);
            }
            v = rest_rule;
        }
        if (v == NX__DEAD) {
            rc = oom(sc);
            break;
        }
        size_t next = max == UINT32_MAX && i == steady ? steady : i + 1;
        if (i + 1 >= min)
            rc |= nx__gb_alt(sc->b, E[i], (uint32_t[]){NX__REF(v)}, 1);
        if (next < chain)
            rc |= nx__gb_alt(sc->b, E[i], (uint32_t[]){NX__REF(v), NX__TERM(comma),
                             NX__REF(E[next])}, 3);
    }
    if (rc == NX_OK)
        rc |= nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(lb), NX__REF(E[0]), NX__TERM(rb)}, 3);
    free(E);
    if (rc)
        rc = oom(sc);
out:
    json_decref(rest);
    return rc;
}

/* --- literals --------------------------------------------------------------------------------- */

int nx__sc_literals(nx__sc_t *sc, json_t *values, const char *ptr, uint32_t rule)
{
    if (json_array_size(values) == 0)
        return NX_OK;
    char *re = NULL;
    size_t len = 0, cap = 0;
    size_t i;
    json_t *v;
    bool ok = true;
    json_array_foreach(values, i, v) {
        if (i)
            ok &= nx__sc_value_regex(NULL, &re, &len, &cap, -1); /* "|" */
        ok &= nx__sc_value_regex(v, &re, &len, &cap, 0);
    }
    if (!ok) {
        free(re);
        return nx__sc_unsupported(sc, "enum", ptr, "values too large"), sc->rc;
    }
    nx__dfa_t d;
    nx_err_t e = {0};
    int rc = nx__regex_dfa(re, false, NX__ENC_UTF8, NULL, NULL, &d, &e);
    free(re);
    if (rc != NX_OK)
        return nx__sc_unsupported(sc, "enum", ptr, e.msg), sc->rc;
    uint32_t t = nx__gb_dfa(sc->b, &d);
    if (t == NX__DEAD || nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(t)}, 1) != NX_OK)
        return oom(sc);
    return NX_OK;
}
