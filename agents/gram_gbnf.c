/* gram_gbnf.c — llama.cpp's GBNF grammars into the same machinery: rules (`name ::= ...`,
 * start rule `root`), alternation, sequences, groups, `*` `+` `?` `{m}` `{m,}` `{m,n}`, string
 * literals with escapes (\n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH), character classes with
 * ranges and negation (over code points, matched as UTF-8), `.` (any character) and comments.
 * A literal becomes a literal terminal and a class a one-character DFA; a rule is a rule.
 * Errors carry LINE:COL. Lenient where llama.cpp is strict: a rule ends where the next
 * `name ::=` starts, so alternatives may continue on the next line.
 *
 * Regular pieces are folded into one DFA terminal: a quantified item or a group made only of
 * literals, classes, groups and quantifiers of them (no rule reference) becomes the DFA of
 * its regex instead of a rule per `+`/`*`/alternative. Besides fewer rules, this is what
 * keeps ambiguous nestings cheap: `[^\x00-\x7f]+++...+` as rules lets every parse stack hold
 * either frame at each level (masks walked thousands of stacks; fuzz_gbnf's slow input), as
 * one DFA it is one state. A fold whose DFA passes the caps falls back to rules.
 *
 * Not built: llama.cpp's token references (<[id]>, <name>); folding named rules (a rule
 * reference is never folded, so recursion needs no check).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

#define MAX_NESTING 200

typedef struct gp {
    const char *s;
    size_t len, pos;
    nx__gb_t *b;
    nx_err_t *err;
    int rc;
    int depth;
    char **names;      /* by rule id; NULL for anonymous rules */
    size_t cap_names;
    bool *defined;
    size_t *ref_at;    /* where a rule was first referenced, for "undefined rule" */
    uint32_t *name_slots; /* hash of names: rule id + 1 */
    size_t n_name_slots, n_named;
} gp_t;

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* The rule named s[0..n), or NX__DEAD; *slot_out: where a new one goes. */
static uint32_t name_find(const gp_t *p, const char *s, size_t n, size_t *slot_out)
{
    size_t mask = p->n_name_slots - 1, h = name_hash(s, n) & mask;
    for (; p->name_slots[h]; h = (h + 1) & mask) {
        uint32_t r = p->name_slots[h] - 1;
        if (strlen(p->names[r]) == n && !memcmp(p->names[r], s, n))
            return r;
    }
    *slot_out = h;
    return NX__DEAD;
}

static bool name_slots_grow(gp_t *p)
{
    size_t n = p->n_name_slots ? 2 * p->n_name_slots : 256;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return false;
    for (size_t i = 0; i < p->n_name_slots; i++) {
        if (!p->name_slots[i])
            continue;
        const char *nm = p->names[p->name_slots[i] - 1];
        size_t h = name_hash(nm, strlen(nm)) & (n - 1);
        while (slots[h])
            h = (h + 1) & (n - 1);
        slots[h] = p->name_slots[i];
    }
    free(p->name_slots);
    p->name_slots = slots;
    p->n_name_slots = n;
    return true;
}

static void where(const gp_t *p, size_t pos, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos && i < p->len; i++) {
        if (p->s[i] == '\n') {
            (*line)++;
            *col = 1;
        } else
            (*col)++;
    }
}

static uint32_t fail_at(gp_t *p, size_t pos, int code, const char *what)
{
    if (p->rc == NX_OK) {
        int line, col;
        where(p, pos, &line, &col);
        p->rc = nx_err_set(p->err, code, "%d:%d: %s", line, col, what);
    }
    return NX__DEAD;
}

static void skip_space(gp_t *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == '#') {
            while (p->pos < p->len && p->s[p->pos] != '\n')
                p->pos++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->pos++;
        else
            break;
    }
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

static size_t name_len(const gp_t *p, size_t pos)
{
    size_t n = 0;
    while (pos + n < p->len && name_char(p->s[pos + n]))
        n++;
    return n;
}

/* At pos: `name ::=`? */
static bool at_definition(const gp_t *p, size_t pos)
{
    size_t n = name_len(p, pos);
    if (!n)
        return false;
    pos += n;
    while (pos < p->len && (p->s[pos] == ' ' || p->s[pos] == '\t'))
        pos++;
    return pos + 3 <= p->len && !memcmp(p->s + pos, "::=", 3);
}

static uint32_t rule_named(gp_t *p, const char *name, size_t n, size_t at)
{
    size_t slot = 0;
    if (name) {
        if (2 * (p->n_named + 1) > p->n_name_slots && !name_slots_grow(p))
            return fail_at(p, at, NX_ENOMEM, "out of memory");
        uint32_t found = name_find(p, name, n, &slot);
        if (found != NX__DEAD)
            return found;
    }
    uint32_t r = nx__gb_rule(p->b);
    if (r == NX__DEAD)
        return fail_at(p, at, NX_ENOTSUP, "grammar over its size cap");
    if (r >= p->cap_names) {
        size_t cap = p->cap_names ? 2 * p->cap_names : 64;
        while (cap <= r)
            cap *= 2;
        char **names = realloc(p->names, cap * sizeof *names);
        bool *def = names ? realloc(p->defined, cap * sizeof *def) : NULL;
        size_t *ref = def ? realloc(p->ref_at, cap * sizeof *ref) : NULL;
        if (names)
            p->names = names;
        if (def)
            p->defined = def;
        if (!names || !def || !ref)
            return fail_at(p, at, NX_ENOMEM, "out of memory");
        p->ref_at = ref;
        for (size_t i = p->cap_names; i < cap; i++) {
            p->names[i] = NULL;
            p->defined[i] = false;
            p->ref_at[i] = 0;
        }
        p->cap_names = cap;
    }
    if (name) {
        p->names[r] = strndup(name, n);
        if (!p->names[r])
            return fail_at(p, at, NX_ENOMEM, "out of memory");
        p->name_slots[slot] = r + 1;
        p->n_named++;
    } else
        p->defined[r] = true; /* anonymous rules are defined where made */
    p->ref_at[r] = at;
    return r;
}

/* One escaped or plain code point at p->pos (inside a literal or class). */
static int64_t char_at(gp_t *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    size_t start = p->pos;
    if (s[p->pos] == '\\') {
        if (++p->pos >= p->len)
            return fail_at(p, start, NX_EINVAL, "escape at the end"), -1;
        char e = (char)s[p->pos++];
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int i = 0; i < digits; i++, p->pos++) {
                char c = p->pos < p->len ? (char)s[p->pos] : 0;
                int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (h < 0)
                    return fail_at(p, start, NX_EINVAL, "bad hex escape"), -1;
                v = v << 4 | (uint32_t)h;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return fail_at(p, start, NX_EINVAL, "escape is not a Unicode scalar value"), -1;
            return v;
        }
        switch (e) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '\\': case '"': case '[': case ']': case '-': case '^': return e;
        default: return fail_at(p, start, NX_EINVAL, "unknown escape"), -1;
        }
    }
    uint32_t c = s[p->pos];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || p->pos + (size_t)n > p->len)
        return fail_at(p, start, NX_EINVAL, "invalid UTF-8"), -1;
    if (n > 1)
        c &= 0x7F >> n;
    for (int i = 1; i < n; i++) {
        if ((s[p->pos + i] & 0xC0) != 0x80)
            return fail_at(p, start, NX_EINVAL, "invalid UTF-8"), -1;
        c = c << 6 | (s[p->pos + i] & 0x3F);
    }
    p->pos += (size_t)n;
    return c;
}

static int utf8(uint32_t c, char *b)
{
    if (c < 0x80) { b[0] = (char)c; return 1; }
    if (c < 0x800) { b[0] = (char)(0xC0 | c >> 6); b[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        b[0] = (char)(0xE0 | c >> 12); b[1] = (char)(0x80 | (c >> 6 & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F)); return 3;
    }
    b[0] = (char)(0xF0 | c >> 18); b[1] = (char)(0x80 | (c >> 12 & 0x3F));
    b[2] = (char)(0x80 | (c >> 6 & 0x3F)); b[3] = (char)(0x80 | (c & 0x3F)); return 4;
}

/* --- regular pieces, folded into DFA terminals ---------------------------------------------- */

static nx__rx_t *rx_node(nx__rx_kind_t kind)
{
    nx__rx_t *rx = calloc(1, sizeof *rx);
    if (rx)
        rx->kind = kind;
    return rx;
}

/* Append kid to a CAT/ALT node (taking it); false (kid freed) out of memory. */
static bool rx_add(nx__rx_t *rx, nx__rx_t *kid)
{
    nx__rx_t **k = kid ? realloc(rx->kids, (rx->n_kids + 1) * sizeof *k) : NULL;
    if (!k) {
        nx__rx_free(kid);
        return false;
    }
    rx->kids = k;
    rx->kids[rx->n_kids++] = kid;
    return true;
}

/* One code point as a class. */
static nx__rx_t *rx_point(uint32_t cp)
{
    nx__rx_t *c = rx_node(NX__RX_CLASS);
    if (c && !(c->ranges = malloc(2 * sizeof *c->ranges))) {
        free(c);
        return NULL;
    }
    if (c) {
        c->ranges[0] = c->ranges[1] = cp;
        c->n_ranges = 1;
    }
    return c;
}

/* A DFA terminal of rx (UTF-8), or NX__DEAD when it would pass the caps (the caller keeps
 * the rules it built) or out of memory. */
static uint32_t rx_term(gp_t *p, const nx__rx_t *rx)
{
    nx__dfa_t d;
    nx_err_t e = {0};
    if (nx__rx_dfa(rx, NX__ENC_UTF8, NULL, NULL, &d, &e) != NX_OK)
        return NX__DEAD;
    return nx__gb_dfa(p->b, &d);
}

/* A class as a one-character DFA terminal; *rx_out (may be NULL) its regex. */
static uint32_t class_term(gp_t *p, uint32_t *ranges, uint32_t n, bool negate, size_t at,
                           nx__rx_t **rx_out)
{
    nx__rx_t rx = {.kind = NX__RX_CLASS};
    /* sort and merge, then negate over all code points */
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = i; j > 0 && ranges[2 * j] < ranges[2 * j - 2]; j--) {
            uint32_t lo = ranges[2 * j], hi = ranges[2 * j + 1];
            ranges[2 * j] = ranges[2 * j - 2];
            ranges[2 * j + 1] = ranges[2 * j - 1];
            ranges[2 * j - 2] = lo;
            ranges[2 * j - 1] = hi;
        }
    uint32_t *out = malloc((2 * (size_t)n + 2) * sizeof *out), m = 0, next = 0;
    if (!out)
        return fail_at(p, at, NX_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        uint32_t lo = ranges[2 * i], hi = ranges[2 * i + 1];
        if (negate) {
            if (lo > next) {
                out[2 * m] = next;
                out[2 * m + 1] = lo - 1;
                m++;
            }
            if (hi + 1 > next)
                next = hi + 1;
        } else {
            out[2 * m] = lo;
            out[2 * m + 1] = hi;
            m++;
        }
    }
    if (negate && next <= 0x10FFFF) {
        out[2 * m] = next;
        out[2 * m + 1] = 0x10FFFF;
        m++;
    }
    rx.ranges = out;
    rx.n_ranges = m;
    nx__dfa_t d;
    nx_err_t e = {0};
    int rc = nx__rx_dfa(&rx, NX__ENC_UTF8, NULL, NULL, &d, &e);
    nx__rx_t *keep = rx_out && rc == NX_OK ? rx_node(NX__RX_CLASS) : NULL;
    if (keep) {
        keep->ranges = out;
        keep->n_ranges = m;
        *rx_out = keep;
    } else
        free(out);
    if (rc != NX_OK)
        return fail_at(p, at, rc, e.msg);
    uint32_t t = nx__gb_dfa(p->b, &d);
    return t == NX__DEAD ? fail_at(p, at, NX_ENOMEM, "out of memory") : t;
}

static uint32_t parse_alternates(gp_t *p, uint32_t rule, nx__rx_t **rx);

/* One element (before its quantifier): an item for an alternative, and in *rx its regex when
 * it is regular (a literal, a class, a group of regular alternatives), else NULL. */
static uint32_t parse_primary(gp_t *p, nx__rx_t **rx)
{
    size_t at = p->pos;
    char c = p->s[p->pos];
    *rx = NULL;
    if (c == '"') {
        p->pos++;
        /* at most 4 bytes per source byte of the literal (a \U escape is 10 bytes for 4) */
        size_t end = p->pos;
        while (end < p->len && p->s[end] != '"')
            end += p->s[end] == '\\' && end + 1 < p->len ? 2 : 1;
        char *buf = malloc(4 * (end - p->pos) + 4);
        nx__rx_t *cat = rx_node(NX__RX_CAT);
        size_t n = 0;
        if (!buf || !cat) {
            free(buf);
            free(cat);
            return fail_at(p, at, NX_ENOMEM, "out of memory");
        }
        while (p->pos < p->len && p->s[p->pos] != '"') {
            int64_t cp = char_at(p);
            if (cp < 0 || !rx_add(cat, rx_point((uint32_t)cp))) {
                free(buf);
                nx__rx_free(cat);
                return cp < 0 ? NX__DEAD : fail_at(p, at, NX_ENOMEM, "out of memory");
            }
            n += (size_t)utf8((uint32_t)cp, buf + n);
        }
        if (p->pos >= p->len) {
            free(buf);
            nx__rx_free(cat);
            return fail_at(p, at, NX_EINVAL, "unterminated string literal");
        }
        p->pos++;
        if (n == 0)
            cat->kind = NX__RX_EMPTY;
        *rx = cat;
        if (n == 0) { /* "" matches the empty string: an empty rule */
            free(buf);
            uint32_t r = rule_named(p, NULL, 0, at);
            if (r == NX__DEAD || nx__gb_alt(p->b, r, NULL, 0) != NX_OK)
                return fail_at(p, at, NX_ENOMEM, "out of memory");
            return NX__REF(r);
        }
        uint32_t t = nx__gb_literal(p->b, buf, n);
        free(buf);
        return t == NX__DEAD ? fail_at(p, at, NX_ENOMEM, "out of memory") : NX__TERM(t);
    }
    if (c == '[' || c == '.') {
        uint32_t *ranges = NULL, n = 0, cap = 0;
        bool negate = false;
        if (c == '.') {
            p->pos++;
            ranges = malloc(2 * sizeof *ranges);
            if (!ranges)
                return fail_at(p, at, NX_ENOMEM, "out of memory");
            ranges[0] = 0;
            ranges[1] = 0x10FFFF;
            n = 1;
        } else {
            p->pos++;
            if (p->pos < p->len && p->s[p->pos] == '^') {
                negate = true;
                p->pos++;
            }
            while (p->pos < p->len && p->s[p->pos] != ']') {
                int64_t lo = char_at(p), hi = lo;
                if (lo >= 0 && p->pos + 1 < p->len && p->s[p->pos] == '-' &&
                    p->s[p->pos + 1] != ']') {
                    p->pos++;
                    hi = char_at(p);
                }
                if (lo < 0 || hi < 0) {
                    free(ranges);
                    return NX__DEAD;
                }
                if (hi < lo) {
                    free(ranges);
                    return fail_at(p, at, NX_EINVAL, "range out of order in character class");
                }
                if (n == cap) {
                    cap = cap ? 2 * cap : 8;
                    uint32_t *r = realloc(ranges, 2 * (size_t)cap * sizeof *r);
                    if (!r) {
                        free(ranges);
                        return fail_at(p, at, NX_ENOMEM, "out of memory");
                    }
                    ranges = r;
                }
                ranges[2 * n] = (uint32_t)lo;
                ranges[2 * n + 1] = (uint32_t)hi;
                n++;
            }
            if (p->pos >= p->len) {
                free(ranges);
                return fail_at(p, at, NX_EINVAL, "unterminated character class");
            }
            p->pos++;
        }
        uint32_t t = class_term(p, ranges, n, negate, at, rx);
        free(ranges);
        return t == NX__DEAD ? NX__DEAD : NX__TERM(t);
    }
    if (c == '(') {
        p->pos++;
        if (++p->depth > MAX_NESTING)
            return fail_at(p, at, NX_ENOTSUP, "groups nested deeper than 200");
        uint32_t r = rule_named(p, NULL, 0, at);
        if (r == NX__DEAD || parse_alternates(p, r, rx) == NX__DEAD)
            return NX__DEAD;
        p->depth--;
        skip_space(p);
        if (p->pos >= p->len || p->s[p->pos] != ')') {
            nx__rx_free(*rx);
            *rx = NULL;
            return fail_at(p, p->pos, NX_EINVAL, "expected ')'");
        }
        p->pos++;
        return NX__REF(r);
    }
    if (c == '<')
        return fail_at(p, at, NX_ENOTSUP, "token references (<...>) are not supported");
    size_t n = name_len(p, p->pos);
    if (!n)
        return fail_at(p, at, NX_EINVAL, "expected a rule name, a literal, a class or '('");
    uint32_t r = rule_named(p, p->s + p->pos, n, at);
    p->pos += n;
    return r == NX__DEAD ? NX__DEAD : NX__REF(r);
}

/* {m}, {m,}, {m,n} */
static bool parse_braces(gp_t *p, uint32_t *min, uint32_t *max)
{
    size_t at = p->pos;
    p->pos++;
    skip_space(p);
    uint64_t a = 0, b;
    size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9' && a < 1000000)
        a = a * 10 + (uint64_t)(p->s[p->pos++] - '0');
    if (p->pos == start)
        return fail_at(p, at, NX_EINVAL, "expected a number after '{'"), false;
    b = a;
    skip_space(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        skip_space(p);
        size_t s2 = p->pos;
        b = 0;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9' && b < 1000000)
            b = b * 10 + (uint64_t)(p->s[p->pos++] - '0');
        if (p->pos == s2)
            b = UINT32_MAX;
        skip_space(p);
    }
    if (p->pos >= p->len || p->s[p->pos] != '}')
        return fail_at(p, at, NX_EINVAL, "expected '}'"), false;
    p->pos++;
    *min = (uint32_t)a;
    *max = (uint32_t)b;
    return true;
}

#define MAX_FOLD_QUANTIFIERS 64

/* The item as rules: the quantifiers applied one by one with nx__gb_repeat. */
static uint32_t repeat_rules(gp_t *p, uint32_t item, const uint32_t (*q)[2], size_t n_q,
                             size_t at)
{
    for (size_t k = 0; k < n_q && item != NX__DEAD; k++) {
        nx_err_t e = {0};
        uint32_t r = nx__gb_repeat(p->b, item, NX__DEAD, q[k][0], q[k][1], &e);
        item = r == NX__DEAD ? fail_at(p, at, e.code ? e.code : NX_ENOMEM, e.msg) : NX__REF(r);
    }
    return item;
}

/* One item and its quantifiers. A regular item that is a group or quantified becomes one DFA
 * terminal (the regex with its repeats) when that DFA fits the caps; else rules as parsed.
 * *rx_out: the item's regex when it is regular, for the enclosing sequence (else NULL). */
static uint32_t parse_item(gp_t *p, nx__rx_t **rx_out)
{
    size_t at = p->pos;
    bool group = p->s[p->pos] == '(';
    nx__rx_t *rx;
    uint32_t item = parse_primary(p, &rx);
    uint32_t quant[MAX_FOLD_QUANTIFIERS][2];
    size_t n_q = 0;
    while (item != NX__DEAD && p->pos < p->len) {
        char q = p->s[p->pos];
        uint32_t min, max;
        if (q == '*') { min = 0; max = UINT32_MAX; p->pos++; }
        else if (q == '+') { min = 1; max = UINT32_MAX; p->pos++; }
        else if (q == '?') { min = 0; max = 1; p->pos++; }
        else if (q == '{') { if (!parse_braces(p, &min, &max)) { item = NX__DEAD; break; } }
        else break;
        if (n_q == MAX_FOLD_QUANTIFIERS) { /* past the fold's patience: rules from here */
            item = repeat_rules(p, item, quant, n_q, at);
            n_q = 0;
            nx__rx_free(rx);
            rx = NULL;
        }
        quant[n_q][0] = min;
        quant[n_q][1] = max;
        n_q++;
        if (rx && rx->kind == NX__RX_REPEAT && rx->min <= 1 && rx->max >= 1 &&
            rx->max == UINT32_MAX && (max == UINT32_MAX || (min == 0 && max == 1))) {
            /* (a+)+ = a+, (a*)+ = (a+)* = (a+)? = a*: {m1,} with m1 <= 1 repeated {m2,}
             * is {m1 m2,}, and made optional {0,}. Merged, since the NFA copies what a
             * repeat holds (a+ is a a*): nested, 2^depth states */
            rx->min = max == UINT32_MAX ? rx->min * min : 0;
        } else if (rx) {
            nx__rx_t *rep = rx_node(NX__RX_REPEAT);
            if (!rep || !rx_add(rep, rx)) {
                free(rep);
                rx = NULL;
                item = fail_at(p, at, NX_ENOMEM, "out of memory");
                break;
            }
            rep->min = min;
            rep->max = max;
            rx = rep;
        }
    }
    if (item != NX__DEAD) {
        uint32_t folded = rx && (group || n_q) ? rx_term(p, rx) : NX__DEAD;
        item = folded != NX__DEAD ? NX__TERM(folded) : repeat_rules(p, item, quant, n_q, at);
    }
    if (item == NX__DEAD) { /* also a repeat past the caps both ways, e.g. {2,333333} */
        nx__rx_free(rx);
        rx = NULL;
    }
    *rx_out = rx;
    return item;
}

/* One alternative into rule; *rx (may be NULL): its regex when every item is regular. */
static uint32_t parse_sequence(gp_t *p, uint32_t rule, nx__rx_t **rx)
{
    uint32_t *items = NULL;
    size_t n = 0, cap = 0;
    nx__rx_t *cat = rx ? rx_node(NX__RX_CAT) : NULL;
    for (;;) {
        skip_space(p);
        if (p->pos >= p->len || p->s[p->pos] == '|' || p->s[p->pos] == ')' ||
            at_definition(p, p->pos))
            break;
        size_t at = p->pos;
        nx__rx_t *item_rx;
        uint32_t item = parse_item(p, &item_rx);
        if (item == NX__DEAD) {
            free(items);
            nx__rx_free(cat);
            return NX__DEAD;
        }
        if (cat && (!item_rx || !rx_add(cat, item_rx))) { /* not regular (or no memory) */
            nx__rx_free(cat);
            cat = NULL;
        } else if (!cat)
            nx__rx_free(item_rx);
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            uint32_t *it = realloc(items, cap * sizeof *it);
            if (!it) {
                free(items);
                nx__rx_free(cat);
                return fail_at(p, at, NX_ENOMEM, "out of memory");
            }
            items = it;
        }
        items[n++] = item;
    }
    if (cat && cat->n_kids == 0)
        cat->kind = NX__RX_EMPTY;
    if (rx)
        *rx = cat;
    int rc = nx__gb_alt(p->b, rule, items, n);
    free(items);
    return rc == NX_OK ? rule : fail_at(p, p->pos, rc, "grammar over its size cap");
}

/* Alternatives into rule; *rx (may be NULL): their regex when every one is regular. */
static uint32_t parse_alternates(gp_t *p, uint32_t rule, nx__rx_t **rx)
{
    nx__rx_t *alt = rx ? rx_node(NX__RX_ALT) : NULL;
    if (rx)
        *rx = NULL;
    for (;;) {
        nx__rx_t *seq = NULL;
        if (parse_sequence(p, rule, alt ? &seq : NULL) == NX__DEAD) {
            nx__rx_free(alt);
            return NX__DEAD;
        }
        if (alt && (!seq || !rx_add(alt, seq))) {
            nx__rx_free(alt);
            alt = NULL;
        }
        skip_space(p);
        if (p->pos < p->len && p->s[p->pos] == '|') {
            p->pos++;
            continue;
        }
        if (rx)
            *rx = alt;
        return rule;
    }
}

nx_gram_t *nx_gram_from_gbnf(const char *text, size_t len, nx_err_t *err)
{
    gp_t p = {.s = text, .len = len, .err = err, .b = nx__gb_new()};
    nx_gram_t *g = NULL;
    if (!p.b) {
        nx_err_set(err, NX_ENOMEM, "out of memory");
        return NULL;
    }
    if (memchr(text, '\0', len)) {
        fail_at(&p, (size_t)((const char *)memchr(text, '\0', len) - text), NX_EINVAL,
                "NUL byte in the grammar");
        goto out;
    }
    skip_space(&p);
    while (p.pos < p.len && p.rc == NX_OK) {
        size_t at = p.pos, n = name_len(&p, p.pos);
        if (!at_definition(&p, p.pos)) {
            fail_at(&p, at, NX_EINVAL, "expected 'name ::='");
            break;
        }
        uint32_t r = rule_named(&p, p.s + p.pos, n, at);
        if (r == NX__DEAD)
            break;
        if (p.defined[r]) {
            fail_at(&p, at, NX_EINVAL, "rule defined twice");
            break;
        }
        p.defined[r] = true;
        p.pos += n;
        skip_space(&p);
        p.pos += 3; /* ::= */
        if (parse_alternates(&p, r, NULL) == NX__DEAD)
            break;
        skip_space(&p);
        if (p.pos < p.len && p.s[p.pos] == ')') {
            fail_at(&p, p.pos, NX_EINVAL, "unmatched ')'");
            break;
        }
    }
    if (p.rc != NX_OK)
        goto out;
    uint32_t root = NX__DEAD, count = nx__gb_rule_count(p.b);
    for (uint32_t r = 0; r < count && r < p.cap_names; r++) {
        if (p.names[r] && !p.defined[r]) {
            char what[160];
            snprintf(what, sizeof what, "undefined rule '%.100s'", p.names[r]);
            fail_at(&p, p.ref_at[r], NX_EINVAL, what);
            goto out;
        }
        if (p.names[r] && !strcmp(p.names[r], "root"))
            root = r;
    }
    if (root == NX__DEAD) {
        nx_err_set(err, NX_EINVAL, "1:1: the grammar has no 'root' rule");
        goto out;
    }
    g = nx__gb_finish(p.b, root, (const char *const *)p.names,
                      count < p.cap_names ? count : p.cap_names, err);
    p.b = NULL;
out:
    nx__gb_free(p.b);
    for (size_t i = 0; i < p.cap_names; i++)
        free(p.names[i]);
    free(p.names);
    free(p.defined);
    free(p.ref_at);
    free(p.name_slots);
    return g;
}
