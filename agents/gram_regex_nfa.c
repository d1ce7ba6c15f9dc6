/* gram_regex_nfa.c — a regex tree (gram_regex.c) to NFA edges: code point classes to UTF-8
 * byte-range sequences (split at encoding-length and continuation-byte boundaries, the RE2
 * way, surrogates left out), or to the bytes a compact JSON string writes for them; repeats
 * unrolled into copies, so {m,n} is exact. Every loop checks the NFA's overflow flag so that
 * a nested repeat stops at the cap instead of spinning.
 */
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

/* One UTF-8 sequence of byte ranges from -> to. */
static void seq_edges(nx__nfa_t *n, uint32_t from, uint32_t to, const uint8_t *lo,
                      const uint8_t *hi, int len)
{
    uint32_t cur = from;
    for (int i = 0; i < len; i++) {
        uint32_t next = i == len - 1 ? to : nx__nfa_state(n);
        nx__nfa_edge(n, cur, next, lo[i], hi[i]);
        cur = next;
    }
}

static int encode(uint32_t c, uint8_t *b)
{
    if (c < 0x80) { b[0] = (uint8_t)c; return 1; }
    if (c < 0x800) { b[0] = 0xC0 | c >> 6; b[1] = 0x80 | (c & 0x3F); return 2; }
    if (c < 0x10000) {
        b[0] = 0xE0 | c >> 12; b[1] = 0x80 | (c >> 6 & 0x3F); b[2] = 0x80 | (c & 0x3F);
        return 3;
    }
    b[0] = 0xF0 | c >> 18; b[1] = 0x80 | (c >> 12 & 0x3F); b[2] = 0x80 | (c >> 6 & 0x3F);
    b[3] = 0x80 | (c & 0x3F);
    return 4;
}

/* [lo, hi] (no surrogates) as UTF-8 byte-range sequences. */
static void utf8_range(nx__nfa_t *n, uint32_t from, uint32_t to, uint32_t lo, uint32_t hi)
{
    if (lo > hi || n->overflow)
        return;
    static const uint32_t max_of_len[] = {0x7F, 0x7FF, 0xFFFF};
    for (int i = 0; i < 3; i++)
        if (lo <= max_of_len[i] && hi > max_of_len[i]) {
            utf8_range(n, from, to, lo, max_of_len[i]);
            utf8_range(n, from, to, max_of_len[i] + 1, hi);
            return;
        }
    if (hi < 0x80) {
        nx__nfa_edge(n, from, to, (uint8_t)lo, (uint8_t)hi);
        return;
    }
    for (int i = 1; i < 4; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                utf8_range(n, from, to, lo, lo | m);
                utf8_range(n, from, to, (lo | m) + 1, hi);
                return;
            }
            if ((hi & m) != m) {
                utf8_range(n, from, to, lo, (hi & ~m) - 1);
                utf8_range(n, from, to, hi & ~m, hi);
                return;
            }
        }
    }
    uint8_t a[4], b[4];
    int len = encode(lo, a);
    encode(hi, b);
    seq_edges(n, from, to, a, b, len);
}

static void cp_range(nx__nfa_t *n, uint32_t from, uint32_t to, uint32_t lo, uint32_t hi)
{
    if (lo <= 0xDFFF && hi >= 0xD800) { /* surrogates are not characters of UTF-8 */
        if (lo < 0xD800)
            utf8_range(n, from, to, lo, 0xD7FF);
        if (hi > 0xDFFF)
            utf8_range(n, from, to, 0xE000, hi);
        return;
    }
    utf8_range(n, from, to, lo, hi);
}

static void literal_edges(nx__nfa_t *n, uint32_t from, uint32_t to, const char *s)
{
    size_t len = strlen(s);
    uint32_t cur = from;
    for (size_t i = 0; i < len; i++) {
        uint32_t next = i + 1 == len ? to : nx__nfa_state(n);
        nx__nfa_edge(n, cur, next, (uint8_t)s[i], (uint8_t)s[i]);
        cur = next;
    }
}

/* The ASCII part of a class inside a JSON string: runs of raw bytes as one edge each, the
 * characters JSON must escape as their escapes. */
static void json_ascii(nx__nfa_t *n, uint32_t from, uint32_t to, uint32_t lo, uint32_t hi)
{
    uint32_t run = UINT32_MAX;
    for (uint32_t c = lo; c <= hi + 1 && !n->overflow; c++) {
        bool raw = c <= hi && c >= 0x20 && c != '"' && c != '\\';
        if (raw && run == UINT32_MAX)
            run = c;
        if (!raw && run != UINT32_MAX) {
            nx__nfa_edge(n, from, to, (uint8_t)run, (uint8_t)(c - 1));
            run = UINT32_MAX;
        }
        if (raw || c > hi)
            continue;
        char esc[8];
        switch (c) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        default: {
            static const char hex[] = "0123456789abcdef";
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc[6] = '\0';
        }
        }
        literal_edges(n, from, to, esc);
    }
}

static void class_edges(const nx__rx_t *rx, nx__enc_t enc, nx__nfa_t *n, uint32_t from,
                        uint32_t to)
{
    for (uint32_t i = 0; i < rx->n_ranges && !n->overflow; i++) {
        uint32_t lo = rx->ranges[2 * i], hi = rx->ranges[2 * i + 1];
        if (enc == NX__ENC_JSON && lo < 0x80) {
            json_ascii(n, from, to, lo, hi < 0x80 ? hi : 0x7F);
            if (hi < 0x80)
                continue;
            lo = 0x80;
        }
        cp_range(n, from, to, lo, hi);
    }
}

void nx__rx_to_nfa(const nx__rx_t *rx, nx__enc_t enc, nx__nfa_t *n, uint32_t from, uint32_t to)
{
    if (n->overflow)
        return;
    switch (rx->kind) {
    case NX__RX_EMPTY:
        nx__nfa_eps(n, from, to);
        return;
    case NX__RX_CLASS:
        class_edges(rx, enc, n, from, to);
        return;
    case NX__RX_ALT:
        for (uint32_t i = 0; i < rx->n_kids && !n->overflow; i++)
            nx__rx_to_nfa(rx->kids[i], enc, n, from, to);
        return;
    case NX__RX_CAT: {
        uint32_t cur = from;
        for (uint32_t i = 0; i < rx->n_kids && !n->overflow; i++) {
            uint32_t next = i + 1 == rx->n_kids ? to : nx__nfa_state(n);
            nx__rx_to_nfa(rx->kids[i], enc, n, cur, next);
            cur = next;
        }
        if (rx->n_kids == 0)
            nx__nfa_eps(n, from, to);
        return;
    }
    case NX__RX_REPEAT: {
        uint32_t cur = from;
        for (uint32_t i = 0; i < rx->min && !n->overflow; i++) {
            uint32_t next = nx__nfa_state(n);
            nx__rx_to_nfa(rx->kids[0], enc, n, cur, next);
            cur = next;
        }
        if (rx->max == UINT32_MAX) {
            /* the loop goes through a fresh state so that its epsilon back edge cannot
             * reach what precedes the repeat */
            uint32_t loop = nx__nfa_state(n), body = nx__nfa_state(n);
            nx__nfa_eps(n, cur, loop);
            nx__rx_to_nfa(rx->kids[0], enc, n, loop, body);
            nx__nfa_eps(n, body, loop);
            nx__nfa_eps(n, loop, to);
            return;
        }
        for (uint32_t i = rx->min; i < rx->max && !n->overflow; i++) {
            uint32_t next = nx__nfa_state(n);
            nx__nfa_eps(n, cur, to);
            nx__rx_to_nfa(rx->kids[0], enc, n, cur, next);
            cur = next;
        }
        nx__nfa_eps(n, cur, to);
        return;
    }
    }
}

int nx__rx_dfa(const nx__rx_t *rx, nx__enc_t enc, const char *prefix, const char *suffix,
               nx__dfa_t *out, nx_err_t *err)
{
    nx__nfa_t n = {0};
    uint32_t start = nx__nfa_state(&n), accept = nx__nfa_state(&n);
    uint32_t a = start, b = accept;
    if (prefix && *prefix) {
        a = nx__nfa_state(&n);
        literal_edges(&n, start, a, prefix);
    }
    if (suffix && *suffix) {
        b = nx__nfa_state(&n);
        literal_edges(&n, b, accept, suffix);
    }
    nx__rx_to_nfa(rx, enc, &n, a, b);
    int rc = nx__nfa_to_dfa(&n, start, accept, out, err);
    nx__nfa_free(&n);
    return rc;
}

int nx__regex_dfa(const char *pattern, bool search, nx__enc_t enc, const char *prefix,
                  const char *suffix, nx__dfa_t *out, nx_err_t *err)
{
    nx_err_t local = {0};
    nx_err_t *e = err ? err : &local;
    nx__rx_t *rx = nx__rx_parse(pattern, strlen(pattern), search, e);
    if (!rx)
        return e->code ? e->code : NX_EINVAL;
    int rc = nx__rx_dfa(rx, enc, prefix, suffix, out, err);
    nx__rx_free(rx);
    return rc;
}
