/* gram_regex.c — the ECMA-262 regular expressions JSON Schema's `pattern` uses, compiled to
 * byte-level NFAs: literals, classes with ranges and negation, . \d \w \s (and their
 * negations, with ECMA's Unicode white space), quantifiers * + ? {m} {m,} {m,n} (lazy forms
 * match the same language), groups (capturing, (?:...) and named), alternation, and ^ $ at the
 * ends of the top-level alternatives. Lookaround, backreferences, \b, \p{...} and flags are
 * refused by name: a pattern is never approximated.
 *
 * Classes are lists of code point ranges; they become bytes either as raw UTF-8 (the ranges
 * split into UTF-8 byte-range sequences, the RE2 way) or as the characters of a JSON string
 * written compactly: a code point stands for exactly the bytes json.dumps(ensure_ascii=False)
 * writes for it (\" \\ \b \f \n \r \t, \u00XX for the other controls, everything else raw).
 */
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

#define MAX_CP 0x10FFFFu
#define MAX_DEPTH 200

void nx__rx_free(nx__rx_t *rx)
{
    if (!rx)
        return;
    for (uint32_t i = 0; i < rx->n_kids; i++)
        nx__rx_free(rx->kids[i]);
    free(rx->kids);
    free(rx->ranges);
    free(rx);
}

static nx__rx_t *rx_new(nx__rx_kind_t kind)
{
    nx__rx_t *rx = calloc(1, sizeof *rx);
    if (rx)
        rx->kind = kind;
    return rx;
}

static bool rx_add_kid(nx__rx_t *rx, nx__rx_t *kid)
{
    if (!kid)
        return false;
    nx__rx_t **kids = realloc(rx->kids, (rx->n_kids + 1) * sizeof *kids);
    if (!kids) {
        nx__rx_free(kid);
        return false;
    }
    rx->kids = kids;
    rx->kids[rx->n_kids++] = kid;
    return true;
}

/* --- classes ----------------------------------------------------------------------------------- */

typedef struct cls {
    uint32_t *r; /* lo, hi pairs */
    uint32_t n, cap;
    bool oom;
} cls_t;

static void cls_add(cls_t *c, uint32_t lo, uint32_t hi)
{
    if (c->n == c->cap) {
        uint32_t cap = c->cap ? 2 * c->cap : 8;
        uint32_t *r = realloc(c->r, 2 * (size_t)cap * sizeof *r);
        if (!r) {
            c->oom = true;
            return;
        }
        c->r = r;
        c->cap = cap;
    }
    c->r[2 * c->n] = lo;
    c->r[2 * c->n + 1] = hi;
    c->n++;
}

static int cmp_range(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void cls_normalize(cls_t *c)
{
    if (c->n == 0)
        return;
    qsort(c->r, c->n, 2 * sizeof *c->r, cmp_range);
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        uint32_t lo = c->r[2 * i], hi = c->r[2 * i + 1];
        if (m && lo <= c->r[2 * (m - 1) + 1] + 1) {
            if (hi > c->r[2 * (m - 1) + 1])
                c->r[2 * (m - 1) + 1] = hi;
        } else {
            c->r[2 * m] = lo;
            c->r[2 * m + 1] = hi;
            m++;
        }
    }
    c->n = m;
}

static void cls_negate(cls_t *c)
{
    cls_normalize(c);
    cls_t out = {0};
    uint32_t next = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->r[2 * i] > next)
            cls_add(&out, next, c->r[2 * i] - 1);
        next = c->r[2 * i + 1] + 1;
    }
    if (next <= MAX_CP)
        cls_add(&out, next, MAX_CP);
    out.oom |= c->oom;
    free(c->r);
    *c = out;
}

/* ECMA's \s: WhiteSpace and LineTerminator. */
static void cls_space(cls_t *c)
{
    static const uint32_t sp[][2] = {{9, 13},         {32, 32},         {0xA0, 0xA0},
                                     {0x1680, 0x1680}, {0x2000, 0x200A}, {0x2028, 0x2029},
                                     {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                                     {0xFEFF, 0xFEFF}};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        cls_add(c, sp[i][0], sp[i][1]);
}

static void cls_word(cls_t *c)
{
    cls_add(c, '0', '9');
    cls_add(c, 'A', 'Z');
    cls_add(c, '_', '_');
    cls_add(c, 'a', 'z');
}

static nx__rx_t *rx_class(cls_t *c)
{
    cls_normalize(c);
    nx__rx_t *rx = c->oom ? NULL : rx_new(NX__RX_CLASS);
    if (!rx) {
        free(c->r);
        return NULL;
    }
    rx->ranges = c->r;
    rx->n_ranges = c->n;
    return rx;
}

/* --- the parser ------------------------------------------------------------------------------ */

typedef struct parser {
    const unsigned char *s;
    size_t len, pos;
    int depth;
    nx_err_t *err;
    int rc;
} parser_t;

static void *fail(parser_t *p, int rc, const char *what)
{
    if (p->rc == NX_OK)
        p->rc = nx_err_set(p->err, rc, "%s at offset %zu of the pattern", what, p->pos);
    return NULL;
}

/* Decode one UTF-8 code point; -1 on invalid UTF-8. */
static int64_t next_cp(parser_t *p)
{
    const unsigned char *s = p->s + p->pos;
    size_t left = p->len - p->pos;
    uint32_t c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || (size_t)n > left)
        return -1;
    if (n > 1) {
        c &= 0x7F >> n;
        for (int i = 1; i < n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return -1;
            c = c << 6 | (s[i] & 0x3F);
        }
        if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
            c > MAX_CP || (c >= 0xD800 && c <= 0xDFFF))
            return -1;
    }
    p->pos += (size_t)n;
    return c;
}

static int hexval(int ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0'
         : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
         : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* After a backslash: a class escape fills c and returns 1; a character escape returns 0 and
 * its code point in *cp; -1 after an error. */
static int parse_escape(parser_t *p, cls_t *c, uint32_t *cp, bool in_class)
{
    if (p->pos >= p->len)
        return fail(p, NX_EINVAL, "pattern ends with a backslash"), -1;
    unsigned char e = p->s[p->pos++];
    switch (e) {
    case 'd': cls_add(c, '0', '9'); return 1;
    case 'D': cls_add(c, '0', '9'); cls_negate(c); return 1;
    case 'w': cls_word(c); return 1;
    case 'W': cls_word(c); cls_negate(c); return 1;
    case 's': cls_space(c); return 1;
    case 'S': cls_space(c); cls_negate(c); return 1;
    case 'n': *cp = '\n'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case '0':
        if (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            return fail(p, NX_ENOTSUP, "unsupported octal escape"), -1;
        *cp = 0;
        return 0;
    case 'b':
        if (in_class) {
            *cp = '\b';
            return 0;
        }
        return fail(p, NX_ENOTSUP, "unsupported word boundary '\\b'"), -1;
    case 'B': return fail(p, NX_ENOTSUP, "unsupported word boundary '\\B'"), -1;
    case 'k': return fail(p, NX_ENOTSUP, "unsupported backreference '\\k'"), -1;
    case 'p': case 'P':
        return fail(p, NX_ENOTSUP, "unsupported Unicode property escape '\\p'"), -1;
    case 'c': return fail(p, NX_ENOTSUP, "unsupported control escape '\\c'"), -1;
    case 'x': case 'u': {
        int n = e == 'x' ? 2 : 4;
        if (e == 'u' && p->pos < p->len && p->s[p->pos] == '{')
            return fail(p, NX_ENOTSUP, "unsupported escape '\\u{...}'"), -1;
        uint32_t v = 0;
        for (int i = 0; i < n; i++) {
            int h = p->pos < p->len ? hexval(p->s[p->pos]) : -1;
            if (h < 0)
                return fail(p, NX_EINVAL, "bad hex escape"), -1;
            v = v << 4 | (uint32_t)h;
            p->pos++;
        }
        if (v >= 0xD800 && v <= 0xDFFF)
            return fail(p, NX_ENOTSUP, "unsupported surrogate escape"), -1;
        *cp = v;
        return 0;
    }
    default:
        if (e >= '1' && e <= '9')
            return fail(p, NX_ENOTSUP, "unsupported backreference"), -1;
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z'))
            return fail(p, NX_EINVAL, "unknown escape"), -1;
        p->pos--;
        int64_t v = next_cp(p);
        if (v < 0)
            return fail(p, NX_EINVAL, "invalid UTF-8"), -1;
        *cp = (uint32_t)v;
        return 0;
    }
}

static nx__rx_t *parse_class(parser_t *p)
{
    cls_t c = {0};
    bool negate = p->pos < p->len && p->s[p->pos] == '^';
    p->pos += negate;
    for (;;) {
        if (p->pos >= p->len) {
            free(c.r);
            return fail(p, NX_EINVAL, "unterminated character class");
        }
        if (p->s[p->pos] == ']') {
            p->pos++;
            break;
        }
        uint32_t lo;
        int k;
        if (p->s[p->pos] == '\\') {
            /* a class escape (\d, \S, ...) is built apart, then joined: its negation must
             * not swallow what the class already holds */
            cls_t esc = {0};
            p->pos++;
            k = parse_escape(p, &esc, &lo, true);
            for (uint32_t i = 0; k == 1 && i < esc.n; i++)
                cls_add(&c, esc.r[2 * i], esc.r[2 * i + 1]);
            c.oom |= esc.oom;
            free(esc.r);
            if (k < 0) {
                free(c.r);
                return NULL;
            }
            if (k == 1)
                continue;
        } else {
            int64_t v = next_cp(p);
            if (v < 0) {
                free(c.r);
                return fail(p, NX_EINVAL, "invalid UTF-8");
            }
            lo = (uint32_t)v;
        }
        uint32_t hi = lo;
        if (p->pos + 1 < p->len && p->s[p->pos] == '-' && p->s[p->pos + 1] != ']') {
            p->pos++;
            if (p->s[p->pos] == '\\') {
                p->pos++;
                cls_t tmp = {0};
                k = parse_escape(p, &tmp, &hi, true);
                free(tmp.r);
                if (k != 0) {
                    free(c.r);
                    return k < 0 ? NULL : fail(p, NX_EINVAL, "class escape as a range end");
                }
            } else {
                int64_t v = next_cp(p);
                if (v < 0) {
                    free(c.r);
                    return fail(p, NX_EINVAL, "invalid UTF-8");
                }
                hi = (uint32_t)v;
            }
            if (hi < lo) {
                free(c.r);
                return fail(p, NX_EINVAL, "range out of order in character class");
            }
        }
        cls_add(&c, lo, hi);
    }
    if (negate)
        cls_negate(&c);
    return rx_class(&c);
}

static nx__rx_t *parse_alt(parser_t *p);

/* Markers for ^ and $ in the tree: a CLASS with this impossible range. */
#define ANCHOR_BEGIN 0xFFFFFFF0u
#define ANCHOR_END 0xFFFFFFF1u

static nx__rx_t *anchor(uint32_t which)
{
    nx__rx_t *rx = rx_new(NX__RX_CLASS);
    if (rx && !(rx->ranges = malloc(2 * sizeof *rx->ranges))) {
        free(rx);
        return NULL;
    }
    if (rx) {
        rx->ranges[0] = rx->ranges[1] = which;
        rx->n_ranges = 1;
    }
    return rx;
}

static bool is_anchor(const nx__rx_t *rx, uint32_t which)
{
    return rx->kind == NX__RX_CLASS && rx->n_ranges == 1 && rx->ranges[0] == which;
}

static nx__rx_t *parse_atom(parser_t *p)
{
    unsigned char ch = p->s[p->pos];
    cls_t c = {0};
    switch (ch) {
    case '(': {
        p->pos++;
        if (p->pos < p->len && p->s[p->pos] == '?') {
            const char *rest = (const char *)p->s + p->pos;
            size_t left = p->len - p->pos;
            if (left >= 2 && rest[1] == ':')
                p->pos += 2;
            else if (left >= 2 && (rest[1] == '=' || rest[1] == '!'))
                return fail(p, NX_ENOTSUP, "unsupported lookahead");
            else if (left >= 3 && rest[1] == '<' && (rest[2] == '=' || rest[2] == '!'))
                return fail(p, NX_ENOTSUP, "unsupported lookbehind");
            else if (left >= 2 && rest[1] == '<') {
                const char *close = memchr(rest, '>', left);
                if (!close)
                    return fail(p, NX_EINVAL, "unterminated group name");
                p->pos += (size_t)(close - rest) + 1;
            } else
                return fail(p, NX_ENOTSUP, "unsupported group modifier");
        }
        if (++p->depth > MAX_DEPTH)
            return fail(p, NX_ENOTSUP, "groups nested deeper than 200");
        nx__rx_t *rx = parse_alt(p);
        p->depth--;
        if (!rx)
            return NULL;
        if (p->pos >= p->len || p->s[p->pos] != ')') {
            nx__rx_free(rx);
            return fail(p, NX_EINVAL, "missing ')'");
        }
        p->pos++;
        return rx;
    }
    case '[':
        p->pos++;
        return parse_class(p);
    case '.':
        p->pos++;
        cls_add(&c, '\n', '\n');
        cls_add(&c, '\r', '\r');
        cls_add(&c, 0x2028, 0x2029);
        cls_negate(&c);
        return rx_class(&c);
    case '^':
        p->pos++;
        return anchor(ANCHOR_BEGIN);
    case '$':
        p->pos++;
        return anchor(ANCHOR_END);
    case '\\': {
        p->pos++;
        uint32_t cp;
        int k = parse_escape(p, &c, &cp, false);
        if (k < 0) {
            free(c.r);
            return NULL;
        }
        if (k == 0)
            cls_add(&c, cp, cp);
        return rx_class(&c);
    }
    case '*': case '+': case '?': case '{':
        return fail(p, NX_EINVAL, "nothing to repeat");
    case ')':
        return fail(p, NX_EINVAL, "unmatched ')'");
    default: {
        int64_t v = next_cp(p);
        if (v < 0)
            return fail(p, NX_EINVAL, "invalid UTF-8");
        cls_add(&c, (uint32_t)v, (uint32_t)v);
        return rx_class(&c);
    }
    }
}

/* {m}, {m,}, {m,n} at p->pos (after '{'); false when it is not a quantifier (then '{' is a
 * literal, as ECMA's Annex B reads it). */
static bool parse_braces(parser_t *p, uint32_t *min, uint32_t *max)
{
    size_t i = p->pos + 1;
    uint64_t a = 0, b;
    size_t start = i;
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9' && a <= NX__MAX_REPEAT)
        a = a * 10 + (p->s[i++] - '0');
    if (i == start)
        return false;
    b = a;
    if (i < p->len && p->s[i] == ',') {
        i++;
        size_t s2 = i;
        b = 0;
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9' && b <= NX__MAX_REPEAT)
            b = b * 10 + (p->s[i++] - '0');
        if (i == s2)
            b = UINT32_MAX;
    }
    if (i >= p->len || p->s[i] != '}')
        return false;
    p->pos = i + 1;
    *min = (uint32_t)(a > NX__MAX_REPEAT ? NX__MAX_REPEAT + 1 : a);
    *max = b == UINT32_MAX ? UINT32_MAX : (uint32_t)(b > NX__MAX_REPEAT ? NX__MAX_REPEAT + 1 : b);
    return true;
}

static nx__rx_t *parse_seq(parser_t *p)
{
    nx__rx_t *seq = rx_new(NX__RX_CAT);
    if (!seq)
        return fail(p, NX_ENOMEM, "out of memory");
    while (p->pos < p->len && p->s[p->pos] != '|' && p->s[p->pos] != ')') {
        nx__rx_t *atom = parse_atom(p);
        if (!atom) {
            nx__rx_free(seq);
            return p->rc ? NULL : fail(p, NX_ENOMEM, "out of memory");
        }
        for (;;) {
            uint32_t min, max;
            if (p->pos >= p->len)
                break;
            unsigned char q = p->s[p->pos];
            if (q == '*') { min = 0; max = UINT32_MAX; p->pos++; }
            else if (q == '+') { min = 1; max = UINT32_MAX; p->pos++; }
            else if (q == '?') { min = 0; max = 1; p->pos++; }
            else if (q == '{' && parse_braces(p, &min, &max)) {}
            else break;
            if (min > NX__MAX_REPEAT || (max != UINT32_MAX && max > NX__MAX_REPEAT)) {
                nx__rx_free(atom);
                nx__rx_free(seq);
                return fail(p, NX_ENOTSUP, "repetition bound over 10000");
            }
            if (max < min) {
                nx__rx_free(atom);
                nx__rx_free(seq);
                return fail(p, NX_EINVAL, "numbers out of order in {} quantifier");
            }
            if (p->pos < p->len && p->s[p->pos] == '?')
                p->pos++; /* lazy: the same language */
            if (atom->kind == NX__RX_CLASS && (is_anchor(atom, ANCHOR_BEGIN) ||
                                               is_anchor(atom, ANCHOR_END))) {
                nx__rx_free(atom);
                nx__rx_free(seq);
                return fail(p, NX_EINVAL, "nothing to repeat");
            }
            nx__rx_t *rep = rx_new(NX__RX_REPEAT);
            if (!rep || !rx_add_kid(rep, atom)) {
                free(rep);
                nx__rx_free(seq);
                return fail(p, NX_ENOMEM, "out of memory");
            }
            rep->min = min;
            rep->max = max;
            atom = rep;
        }
        if (!rx_add_kid(seq, atom)) {
            nx__rx_free(seq);
            return fail(p, NX_ENOMEM, "out of memory");
        }
    }
    return seq;
}

static nx__rx_t *parse_alt(parser_t *p)
{
    nx__rx_t *alt = rx_new(NX__RX_ALT);
    if (!alt)
        return fail(p, NX_ENOMEM, "out of memory");
    for (;;) {
        nx__rx_t *seq = parse_seq(p);
        if (!seq || !rx_add_kid(alt, seq)) {
            nx__rx_free(alt);
            return p->rc ? NULL : fail(p, NX_ENOMEM, "out of memory");
        }
        if (p->pos < p->len && p->s[p->pos] == '|') {
            p->pos++;
            continue;
        }
        return alt;
    }
}

static bool has_anchor(const nx__rx_t *rx)
{
    if (is_anchor(rx, ANCHOR_BEGIN) || is_anchor(rx, ANCHOR_END))
        return true;
    for (uint32_t i = 0; i < rx->n_kids; i++)
        if (has_anchor(rx->kids[i]))
            return true;
    return false;
}

/* Any code point, repeated: the unanchored side of a search. */
static nx__rx_t *any_star(void)
{
    cls_t c = {0};
    cls_add(&c, 0, MAX_CP);
    nx__rx_t *rep = rx_new(NX__RX_REPEAT), *cls = rx_class(&c);
    if (!rep || !rx_add_kid(rep, cls)) {
        free(rep);
        return NULL;
    }
    rep->min = 0;
    rep->max = UINT32_MAX;
    return rep;
}

nx__rx_t *nx__rx_parse(const char *pattern, size_t len, bool search, nx_err_t *err)
{
    parser_t p = {.s = (const unsigned char *)pattern, .len = len, .err = err};
    nx__rx_t *alt = parse_alt(&p);
    if (alt && p.pos < p.len) {
        nx__rx_free(alt);
        alt = fail(&p, NX_EINVAL, "unmatched ')'");
    }
    if (!alt) {
        if (p.rc == NX_OK)
            nx_err_set(err, NX_ENOMEM, "out of memory parsing a pattern");
        return NULL;
    }
    /* ^ and $ may open and close a top-level alternative; elsewhere they are refused */
    for (uint32_t i = 0; i < alt->n_kids; i++) {
        nx__rx_t *seq = alt->kids[i];
        bool begin = seq->n_kids && is_anchor(seq->kids[0], ANCHOR_BEGIN);
        if (begin) {
            nx__rx_free(seq->kids[0]);
            memmove(seq->kids, seq->kids + 1, --seq->n_kids * sizeof *seq->kids);
        }
        bool end = seq->n_kids && is_anchor(seq->kids[seq->n_kids - 1], ANCHOR_END);
        if (end)
            nx__rx_free(seq->kids[--seq->n_kids]);
        if (has_anchor(seq)) {
            nx__rx_free(alt);
            nx_err_set(err, NX_ENOTSUP, "unsupported anchor inside the pattern (only ^ and $ "
                                        "at the ends of a top-level alternative)");
            return NULL;
        }
        if (search && !begin) {
            /* append, then rotate the new kid to the front */
            if (!rx_add_kid(seq, any_star()))
                goto oom;
            nx__rx_t *front = seq->kids[seq->n_kids - 1];
            memmove(seq->kids + 1, seq->kids, (seq->n_kids - 1) * sizeof *seq->kids);
            seq->kids[0] = front;
        }
        if (search && !end && !rx_add_kid(seq, any_star()))
            goto oom;
    }
    return alt;
oom:
    nx__rx_free(alt);
    nx_err_set(err, NX_ENOMEM, "out of memory parsing a pattern");
    return NULL;
}
