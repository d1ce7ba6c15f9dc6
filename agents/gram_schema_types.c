/* gram_schema_types.c — the grammar of each JSON type under its keywords, compact form.
 *
 * Strings: one terminal, quotes included; characters are written as json.dumps(ensure_ascii=
 * False) writes them (raw UTF-8, \" \\ \b \f \n \r \t, \u00XX for other controls), so
 * minLength/maxLength count code points exactly and `pattern` (searched, as the spec says) is
 * matched against the decoded text. pattern, length and format intersect as DFAs. Formats:
 * date (days per month and leap years exact), time and date-time (RFC 3339, without leap
 * seconds), uuid, ipv4 (no leading zeros), email (dot-atom local part @ a host name of two
 * labels or more: no quoted local parts, address literals or one-label hosts). Others are
 * refused by name.
 *
 * Numbers: integers as -?(0|[1-9][0-9]*), without the .0+ the spec allows (1.0 is an integer in
 * JSON Schema, but Go's encoding/json and serde_json refuse it for an int field and Python reads
 * a float, so answers write integers as integers; -0 stays, every parser reads it as 0); an
 * integral enum or const value (5.0 included) is written the same way. Numbers add fractions
 * and exponents. Bounds (minimum, maximum and their exclusive forms) are exact as
 * digit DFAs against the bound's decimal as the schema wrote it (0.1 is the decimal 0.1, not
 * its double): fraction digits compare as strings with implicit trailing zeros, so 0.50 is 0.5
 * and -0 is 0. A bounded number is written without an exponent (1e2 is refused where 100 is
 * accepted). Integers under a decimal bound take the integers inside it (>= 1.5 is >= 2).
 * Bounds within ±2^53, of at most 15 significant digits (what a double keeps exactly; a
 * longer one is refused by name) and 40 fraction digits. multipleOf m = K / 10^s (K up to
 * 65536 and 3 + K * (2 + s) DFA states) is a residue DFA over the digits of x * 10^s,
 * intersected with the bounds; a number under it is also written without an exponent.
 *
 * Objects: the listed properties (`properties`, then `required` names it does not list) are
 * admitted in ANY order when there are at most 6, else in the order `properties` lists them;
 * additional properties (keys not listed, under additionalProperties) may come anywhere in
 * any order, any number of them. Required ones must all appear; no key twice among the listed.
 *
 * Arrays: prefixItems (draft-07: items as an array, then additionalItems), items, minItems,
 * maxItems (bounds up to 10,000), as a chain of rules.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gram_schema.h"

/* --- small text buffers ------------------------------------------------------------------------ */

typedef struct buf {
    char *s;
    size_t len, cap;
    bool oom;
} buf_t;

static void put(buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = cap < (64u << 20) ? realloc(b->s, cap) : NULL;
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A JSON string as the grammar writes it, quotes included. */
static void json_str(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7] = "\\u00";
        switch (c) {
        case '"': put(b, "\\\"", 2); break;
        case '\\': put(b, "\\\\", 2); break;
        case '\b': put(b, "\\b", 2); break;
        case '\f': put(b, "\\f", 2); break;
        case '\n': put(b, "\\n", 2); break;
        case '\r': put(b, "\\r", 2); break;
        case '\t': put(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                put(b, esc, 6);
            } else
                put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

/* Bytes as a regex matching exactly them. */
static void rx_lit(buf_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') || c == ' ' || c == '_'))
            put(b, "\\", 1);
        put(b, (const char *)&c, 1);
    }
}

/* A regex's DFA; as a terminal (out NULL) built once per grammar (nx__gb_keyed). */
static uint32_t dfa_term(nx__sc_t *sc, const char *re, bool search, nx__enc_t enc,
                         const char *pre, const char *suf, nx__dfa_t *out)
{
    nx__dfa_t d;
    nx_err_t e = {0};
    char *key = NULL;
    if (!out && asprintf(&key, "r%d%d%s\x01%s\x01%s", search, (int)enc, pre ? pre : "",
                         suf ? suf : "", re) < 0)
        key = NULL;
    uint32_t t = key ? nx__gb_keyed(sc->b, key) : NX__DEAD;
    if (t != NX__DEAD) {
        free(key);
        return t;
    }
    int rc = nx__regex_dfa(re, search, enc, pre, suf, &d, &e);
    if (rc != NX_OK) {
        free(key);
        return nx__sc_fail(sc, rc, "%s", e.msg);
    }
    if (out) {
        *out = d;
        return 0;
    }
    t = nx__gb_dfa(sc->b, &d);
    if (key)
        nx__gb_key(sc->b, key, t);
    free(key);
    return t;
}

static int add_term_alt(nx__sc_t *sc, uint32_t rule, uint32_t term)
{
    if (term == NX__DEAD || nx__gb_alt(sc->b, rule, (uint32_t[]){NX__TERM(term)}, 1) != NX_OK)
        return sc->rc ? sc->rc : (nx__sc_fail(sc, NX_ENOMEM, "out of memory"), sc->rc);
    return NX_OK;
}

/* --- strings ---------------------------------------------------------------------------------- */

static const struct { const char *name, *re; } FORMATS[] = {
#define DATE "([0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|[0-9]{4}-(0[13-9]|1[0-2])-(29|30)" \
             "|[0-9]{4}-(0[13578]|1[02])-31|([0-9]{2}(0[48]|[2468][048]|[13579][26])|"      \
             "([02468][048]|[13579][26])00)-02-29)"
#define TIME "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?([zZ]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
#define OCTET "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
#define LABEL "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#define ATOM "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    {"date", DATE},
    {"time", TIME},
    {"date-time", DATE "[Tt]" TIME},
    {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
    {"ipv4", OCTET "\\." OCTET "\\." OCTET "\\." OCTET},
    /* the host has a dot, as ajv-formats requires (a one-label host is RFC 5321's, but two
     * common validators disagree on it; the grammar writes what both accept) */
    {"email", ATOM "(\\." ATOM ")*@" LABEL "(\\." LABEL ")+"},
};

static bool bound(nx__sc_t *sc, json_t *node, const char *key, const char *ptr, uint32_t *out)
{
    json_t *v = json_object_get(node, key);
    if (!v)
        return false;
    double x = json_number_value(v);
    if (!json_is_number(v) || x < 0 || x != floor(x))
        return nx__sc_fail(sc, NX_EINVAL, "'%s' at %s is not a non-negative integer", key,
                           nx__sc_where(ptr)), false;
    if (x > NX__MAX_REPEAT) /* a length automaton that large: refused, not approximated */
        return nx__sc_unsupported(sc, key, ptr, "over 10000 is not built"), false;
    *out = (uint32_t)x;
    return true;
}

static int string_term(nx__sc_t *sc, json_t *node, const char *ptr, json_t *fmt, json_t *pat,
                       bool has_min, bool has_max, uint32_t minl, uint32_t maxl, uint32_t *term);

int nx__sc_string(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t rule)
{
    json_t *pat = json_object_get(node, "pattern"), *fmt = json_object_get(node, "format");
    uint32_t minl = 0, maxl = UINT32_MAX;
    bool has_min = bound(sc, node, "minLength", ptr, &minl);
    if (sc->rc)
        return sc->rc;
    bool has_max = bound(sc, node, "maxLength", ptr, &maxl);
    if (sc->rc)
        return sc->rc;
    if (!pat && !fmt && !has_min && !has_max) {
        if (sc->str_term == NX__DEAD)
            sc->str_term = nx__gb_json_string_term(sc->b, sc->err);
        if (sc->str_term == NX__DEAD)
            return nx__sc_fail(sc, NX_ENOMEM, "out of memory"), sc->rc;
        return add_term_alt(sc, rule, sc->str_term);
    }
    if (has_max && maxl < minl)
        return NX_OK; /* no string fits */
    /* the whole terminal once per grammar: its bounds, format and pattern name it */
    char *key = NULL; /* not for a format or pattern that is not a string: its error */
    if ((!fmt || json_is_string(fmt)) && (!pat || json_is_string(pat)) &&
        asprintf(&key, "s%u,%u,%s,%d%s", minl, maxl, fmt && json_is_string(fmt) ?
                 json_string_value(fmt) : "", pat && json_is_string(pat),
                 pat && json_is_string(pat) ? json_string_value(pat) : "") < 0)
        key = NULL;
    uint32_t t = key ? nx__gb_keyed(sc->b, key) : NX__DEAD;
    if (t != NX__DEAD) {
        free(key);
        return add_term_alt(sc, rule, t);
    }
    int rc = string_term(sc, node, ptr, fmt, pat, has_min, has_max, minl, maxl, &t);
    if (rc == NX_OK && key)
        nx__gb_key(sc->b, key, t);
    free(key);
    return rc != NX_OK ? rc : add_term_alt(sc, rule, t);
}

/* The terminal of a string with bounds, a format or a pattern (their DFAs intersected). */
static int string_term(nx__sc_t *sc, json_t *node, const char *ptr, json_t *fmt, json_t *pat,
                       bool has_min, bool has_max, uint32_t minl, uint32_t maxl, uint32_t *term)
{
    nx__dfa_t acc = {0}, d;
    bool have = false;
    if (has_min || has_max) {
        nx_err_t e = {0};
        int rc = nx__dfa_json_length(minl, maxl, &acc, &e);
        if (rc == NX_ENOMEM)
            return nx__sc_fail(sc, rc, "%s", e.msg), sc->rc;
        if (rc != NX_OK)
            return nx__sc_unsupported(sc, has_max ? "maxLength" : "minLength", ptr, e.msg),
                   sc->rc;
        have = true;
    }
    const char *res[2] = {NULL, NULL}, *names[2] = {"format", "pattern"};
    if (fmt) {
        const char *f = json_string_value(fmt);
        for (size_t i = 0; f && i < sizeof FORMATS / sizeof FORMATS[0]; i++)
            if (!strcmp(FORMATS[i].name, f))
                res[0] = FORMATS[i].re;
        if (!res[0]) {
            nx__dfa_free(&acc);
            char why[256];
            snprintf(why, sizeof why, "format '%.100s' is not built (date-time, date, time, "
                                      "uuid, email, ipv4 are)", f ? f : "(not a string)");
            return nx__sc_unsupported(sc, "format", ptr, why), sc->rc;
        }
    }
    if (pat) {
        if (!json_is_string(pat)) {
            nx__dfa_free(&acc);
            return nx__sc_fail(sc, NX_EINVAL, "'pattern' at %s is not a string",
                               nx__sc_where(ptr)), sc->rc;
        }
        res[1] = json_string_value(pat);
    }
    for (int i = 0; i < 2; i++) {
        if (!res[i])
            continue;
        nx_err_t e = {0};
        int rc = nx__regex_dfa(res[i], i == 1, NX__ENC_JSON, "\"", "\"", &d, &e);
        if (rc != NX_OK) {
            nx__dfa_free(&acc);
            return nx__sc_fail(sc, rc, "%s keyword '%s' at %s: %s",
                               rc == NX_ENOTSUP ? "unsupported" : "invalid", names[i],
                               nx__sc_where(ptr), e.msg), sc->rc;
        }
        if (have) {
            nx__dfa_t both;
            rc = nx__dfa_product(&acc, &d, false, &both, &e);
            nx__dfa_free(&acc);
            nx__dfa_free(&d);
            if (rc != NX_OK)
                return nx__sc_unsupported(sc, names[i], ptr, e.msg), sc->rc;
            acc = both;
        } else
            acc = d;
        have = true;
    }
    *term = nx__gb_dfa(sc->b, &acc);
    if (*term == NX__DEAD)
        return nx__sc_fail(sc, NX_ENOMEM, "out of memory"), sc->rc;
    if (!fmt && !pat) /* the length DFA alone: its layout is known */
        nx__gb_term_strlen(sc->b, *term, nx__dfa_json_length_per_count(), maxl);
    return NX_OK;
}

/* --- numbers ---------------------------------------------------------------------------------- */

#define FRAC "(\\.[0-9]+)?"
#define ZFRAC "(\\.0+)?"
#define NZFRAC "\\.[0-9]*[1-9][0-9]*"
#define NAT "(0|[1-9][0-9]*)"
#define INF INT64_MAX

/* Equal-length digit strings lo <= hi. */
static void same_len(buf_t *b, const char *lo, const char *hi, size_t n)
{
    if (n == 0)
        return;
    char tmp[64];
    if (n == 1) {
        snprintf(tmp, sizeof tmp, "[%c-%c]", lo[0], hi[0]);
        puts_(b, tmp);
        return;
    }
    if (lo[0] == hi[0]) {
        put(b, lo, 1);
        same_len(b, lo + 1, hi + 1, n - 1);
        return;
    }
    char nines[32], zeros[32];
    memset(nines, '9', n - 1);
    memset(zeros, '0', n - 1);
    puts_(b, "(");
    put(b, lo, 1);
    puts_(b, "(");
    same_len(b, lo + 1, nines, n - 1);
    puts_(b, ")");
    if (lo[0] + 1 <= hi[0] - 1) {
        snprintf(tmp, sizeof tmp, "|[%c-%c][0-9]{%zu}", lo[0] + 1, hi[0] - 1, n - 1);
        puts_(b, tmp);
    }
    puts_(b, "|");
    put(b, hi, 1);
    puts_(b, "(");
    same_len(b, zeros, hi + 1, n - 1);
    puts_(b, "))");
}

static int digits(int64_t x)
{
    int n = 1;
    while (x >= 10) {
        x /= 10;
        n++;
    }
    return n;
}

/* Natural numbers in [a, b] (b may be INF), canonical digits. */
static void nat_range(buf_t *b, int64_t a, int64_t hi)
{
    char tmp[64], lo_s[32], hi_s[32];
    puts_(b, "(");
    if (hi == INF) {
        int d = digits(a);
        int64_t top = 1;
        for (int i = 0; i < d; i++)
            top *= 10;
        nat_range(b, a, top - 1);
        snprintf(tmp, sizeof tmp, "|[1-9][0-9]{%d,}", d);
        puts_(b, tmp);
    } else {
        bool first = true;
        int64_t p = 1;
        for (int k = 1; k <= digits(hi); k++, p *= 10) {
            int64_t lo_k = k == 1 ? 0 : p, hi_k = p * 10 - 1;
            if (lo_k < a)
                lo_k = a;
            if (hi_k > hi)
                hi_k = hi;
            if (lo_k > hi_k)
                continue;
            snprintf(lo_s, sizeof lo_s, "%lld", (long long)lo_k);
            snprintf(hi_s, sizeof hi_s, "%lld", (long long)hi_k);
            if (!first)
                puts_(b, "|");
            first = false;
            same_len(b, lo_s, hi_s, strlen(lo_s));
        }
    }
    puts_(b, ")");
}

/* Integers in [lo, hi]; lo may be -INF (as -INF), hi INF. */
static void int_range(buf_t *b, int64_t lo, int64_t hi)
{
    bool any = false;
    puts_(b, "(");
    if (hi >= 0) {
        nat_range(b, lo > 0 ? lo : 0, hi);
        any = true;
    }
    if (lo < 0) {
        if (any)
            puts_(b, "|");
        puts_(b, "-");
        nat_range(b, hi < 0 ? -hi : 1, lo == -INF ? INF : -lo);
    }
    puts_(b, ")");
}

bool nx__json_decimal(json_t *v, nx__decimal_t *d, const char **why)
{
    memset(d, 0, sizeof *d);
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x > (json_int_t)1 << 53 || x < -((json_int_t)1 << 53)) {
            *why = "bounds beyond 2^53 are not built";
            return false;
        }
        d->neg = x < 0;
        d->ip = x < 0 ? -(int64_t)x : (int64_t)x;
        return true;
    }
    double x = json_number_value(v);
    if (!(fabs(x) <= 9007199254740992.0)) {
        *why = "bounds beyond 2^53 are not built";
        return false;
    }
    if (x == 0)
        return true;
    char text[40];
    int p = 1;
    for (; p <= 15; p++) {
        snprintf(text, sizeof text, "%.*e", p - 1, fabs(x));
        if (strtod(text, NULL) == fabs(x))
            break;
    }
    if (p > 15) {
        *why = "a bound of more than 15 significant digits is not built (the JSON reader "
               "keeps a double, so its exact decimal is not known)";
        return false;
    }
    /* text is "D.DDDDe±XX": the digits D... times 10^(exp - p + 1) */
    char digits[20];
    int n = 0;
    for (const char *c = text; *c && *c != 'e'; c++)
        if (*c != '.')
            digits[n++] = *c;
    int exp = atoi(strchr(text, 'e') + 1);
    while (n > 1 && digits[n - 1] == '0')
        n--;
    int point = exp + 1; /* digits before the decimal point (0.DDDD times 10^point) */
    int frac_len = n - point;
    if (frac_len > (int)sizeof d->frac - 1) {
        *why = "a bound with more than 40 fraction digits is not built";
        return false;
    }
    d->neg = x < 0;
    for (int i = 0; i < point; i++)
        d->ip = d->ip * 10 + (i < n ? digits[i] - '0' : 0);
    for (int i = 0; i < frac_len; i++)
        d->frac[i] = point + i < 0 ? '0' : digits[point + i];
    return true;
}

/* Fractions (the optional ".F" of a number) with 0.F >= 0.f (or > when strict): digit strings
 * compared with implicit trailing zeros, so a shorter F is below any f it begins. */
static void frac_ge(buf_t *b, const char *f, bool strict)
{
    char tmp[32];
    if (!*f) {
        puts_(b, strict ? NZFRAC : FRAC);
        return;
    }
    puts_(b, "\\.");
    size_t n = strlen(f);
    for (size_t k = 0; k < n; k++) {
        puts_(b, "(");
        if (f[k] < '9') {
            snprintf(tmp, sizeof tmp, "[%c-9][0-9]*|", f[k] + 1);
            puts_(b, tmp);
        }
        put(b, f + k, 1);
    }
    puts_(b, strict ? "[0-9]*[1-9][0-9]*" : "[0-9]*");
    for (size_t k = 0; k < n; k++)
        puts_(b, ")");
}

/* Fractions with 0.F <= 0.f (or < when strict); false when none (0.F < 0). */
static bool frac_le(buf_t *b, const char *f, bool strict)
{
    char tmp[32];
    if (!*f) {
        if (!strict)
            puts_(b, ZFRAC);
        return !strict;
    }
    puts_(b, "(\\.");
    size_t n = strlen(f);
    for (size_t k = 0; k < n; k++) {
        puts_(b, "(");
        if (f[k] > '0') {
            snprintf(tmp, sizeof tmp, "[0-%c][0-9]*", f[k] - 1);
            puts_(b, tmp);
            if (k + 1 < n || !strict)
                puts_(b, "|");
        }
        if (k + 1 < n || !strict)
            put(b, f + k, 1);
    }
    if (!strict)
        puts_(b, "0*");
    for (size_t k = n; k-- > 0;)
        puts_(b, k ? ")?" : ")");
    puts_(b, ")?");
    return true;
}

/* Magnitudes (NAT FRAC texts) u with u >= m (op 0), > m (1), <= m (2), < m (3), m = ip.frac;
 * false when none. */
static bool mag_bound(buf_t *b, int op, int64_t ip, const char *frac)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)ip);
    puts_(b, "(");
    if (op <= 1) {
        nat_range(b, ip + 1, INF);
        puts_(b, FRAC "|");
        puts_(b, tmp);
        frac_ge(b, frac, op == 1);
        puts_(b, ")");
        return true;
    }
    bool any = false;
    if (ip >= 1) {
        nat_range(b, 0, ip - 1);
        puts_(b, FRAC);
        any = true;
    }
    buf_t eq = {0};
    if (frac_le(&eq, frac, op == 3)) {
        if (any)
            puts_(b, "|");
        puts_(b, tmp);
        puts_(b, eq.s ? eq.s : "");
        any = true;
    }
    b->oom |= eq.oom;
    free(eq.s);
    puts_(b, ")");
    return any;
}

/* Numbers x (no exponent) with x >= m (op 0), > m (1), <= m (2), < m (3): the sign and the
 * magnitude's side of m; -0 is 0. */
static void num_bound(buf_t *b, int op, const nx__decimal_t *m)
{
    bool pos = !m->neg && (m->ip || m->frac[0]); /* m > 0 */
    /* x = +u: all (m below 0, op >= or >), none (m <= 0 or < 0 under <= or <), or u against m */
    bool all_pos = op <= 1 && m->neg, no_pos = (op == 2 && m->neg) || (op == 3 && !pos);
    /* x = -u: -u >= m iff u <= -m (op ^ 2 mirrors it): all when m > 0 under <= or <, none when
     * m > 0 under >= (or m >= 0 under >) */
    bool all_neg = op >= 2 && pos, no_neg = (op == 0 && pos) || (op == 1 && !m->neg);
    buf_t side = {0};
    bool any = false;
    puts_(b, "(");
    if (all_pos)
        any = (puts_(b, NAT FRAC), true);
    else if (!no_pos && mag_bound(&side, op, m->ip, m->frac)) {
        puts_(b, side.s);
        any = true;
    }
    side.len = 0;
    if (all_neg || (!no_neg && mag_bound(&side, op ^ 2, m->ip, m->frac))) {
        puts_(b, any ? "|-" : "-");
        puts_(b, all_neg ? NAT FRAC : side.s);
    }
    b->oom |= side.oom;
    free(side.s);
    puts_(b, ")");
}

/* ceil (up) or floor of a decimal, as an integer */
static int64_t dec_round(const nx__decimal_t *m, bool up)
{
    int64_t x = m->neg ? -m->ip : m->ip;
    if (m->frac[0] && up != m->neg)
        x += up ? 1 : -1;
    return x;
}

/* Numbers (no exponent) that are multiples of m = K / 10^s: x * 10^s is an integer (no
 * nonzero fraction digit past the s-th) divisible by K. States: start, after '-', the integer
 * "0", then per residue mod K: integer digits, after '.', and fraction digits 1..max(s, 1)
 * (the last loops on '0'). Accepting: the residue of x * 10^s is 0. Not trimmed: the caller
 * intersects it with a number DFA, and the product keeps the live states. */
static int multiple_dfa(uint64_t K, uint32_t s, nx__dfa_t *out, nx_err_t *err)
{
    enum { C_MINUS, C_DOT, C_DIGIT0, C_OTHER = C_DIGIT0 + 10, N_CLASSES };
    uint32_t fs = s ? s : 1, k = (uint32_t)K;
    uint64_t n = 3 + K * (2 + (uint64_t)fs);
    memset(out, 0, sizeof *out);
    if (n > NX__MAX_DFA_STATES)
        return nx_err_set(err, NX_ENOTSUP, "a multiple of %llu/10^%u needs %llu DFA states "
                          "(over %u)", (unsigned long long)K, s, (unsigned long long)n,
                          NX__MAX_DFA_STATES);
    out->n_states = (uint32_t)n;
    out->n_classes = N_CLASSES;
    memset(out->byte_class, C_OTHER, 256);
    out->byte_class['-'] = C_MINUS;
    out->byte_class['.'] = C_DOT;
    for (int d = 0; d < 10; d++)
        out->byte_class['0' + d] = (uint8_t)(C_DIGIT0 + d);
    out->trans = malloc((size_t)n * N_CLASSES * sizeof *out->trans);
    out->flags = calloc((size_t)n, 1);
    if (!out->trans || !out->flags) {
        nx__dfa_free(out);
        return nx_err_set(err, NX_ENOMEM, "out of memory building a multipleOf DFA");
    }
    for (size_t i = 0; i < (size_t)n * N_CLASSES; i++)
        out->trans[i] = NX__DEAD;
#define INT_ST(r) (3 + (r))
#define DOT_ST(r) (3 + k + (r))
#define FRAC_ST(j, r) (3 + 2 * k + ((j) - 1) * k + (r)) /* j fraction digits read, 1..fs */
#define T(st, cls) out->trans[(size_t)(st) * N_CLASSES + (cls)]
    uint64_t scale = 1; /* 10^(s - j) mod K, from j = s down */
    for (uint32_t j = fs; j >= 1; j--) {
        for (uint32_t r = 0; r < k; r++) {
            if ((s ? r * scale : r) % K == 0)
                out->flags[FRAC_ST(j, r)] = NX__DFA_ACCEPT;
            if (j == fs)
                T(FRAC_ST(j, r), C_DIGIT0) = FRAC_ST(j, r); /* zeros past the s-th digit */
            else
                for (uint32_t d = 0; d < 10; d++)
                    T(FRAC_ST(j, r), C_DIGIT0 + d) = FRAC_ST(j + 1, (r * 10 + d) % K);
        }
        if (j < fs || s)
            scale = scale * 10 % K;
    }
    if (!s) /* else scale is now 10^s mod K */
        scale = 1;
    for (uint32_t r = 0; r < k; r++) {
        if (r * scale % K == 0)
            out->flags[INT_ST(r)] = NX__DFA_ACCEPT;
        for (uint32_t d = 0; d < 10; d++) {
            T(INT_ST(r), C_DIGIT0 + d) = INT_ST((r * 10 + d) % K);
            if (s || d == 0)
                T(DOT_ST(r), C_DIGIT0 + d) = FRAC_ST(1, s ? (r * 10 + d) % K : r);
        }
        T(INT_ST(r), C_DOT) = DOT_ST(r);
    }
    for (uint32_t st = 0; st < 2; st++) { /* start, after '-' */
        if (st == 0)
            T(0, C_MINUS) = 1;
        T(st, C_DIGIT0) = 2;
        for (uint32_t d = 1; d < 10; d++)
            T(st, C_DIGIT0 + d) = INT_ST(d % K);
    }
    out->flags[2] = NX__DFA_ACCEPT; /* "0" */
    T(2, C_DOT) = DOT_ST(0);
#undef INT_ST
#undef DOT_ST
#undef FRAC_ST
#undef T
    return NX_OK;
}

/* multipleOf as K / 10^s, K <= 65536; false after an error (recorded). */
static bool multiple_of(nx__sc_t *sc, json_t *v, const char *ptr, uint64_t *K, uint32_t *s)
{
    nx__decimal_t m;
    const char *why = NULL;
    if (!json_is_number(v) || json_number_value(v) <= 0)
        return nx__sc_fail(sc, NX_EINVAL, "'multipleOf' at %s is not a number above 0",
                           nx__sc_where(ptr)), false;
    if (!nx__json_decimal(v, &m, &why))
        return nx__sc_unsupported(sc, "multipleOf", ptr, why), false;
    *s = (uint32_t)strlen(m.frac);
    *K = (uint64_t)m.ip;
    for (uint32_t i = 0; i < *s && *K <= NX__MAX_DFA_STATES; i++)
        *K = *K * 10 + (uint64_t)(m.frac[i] - '0');
    if (*K > NX__MAX_DFA_STATES)
        return nx__sc_unsupported(sc, "multipleOf", ptr, "a multiple whose digits (without "
                                  "the point) pass 65536 is not built"), false;
    return true;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

json_t *nx__sc_multiple_lcm(nx__sc_t *sc, json_t *a, json_t *b, const char *ptr)
{
    nx__decimal_t m[2];
    const char *why = NULL;
    json_t *v[2] = {a, b};
    uint64_t scaled[2];
    const uint64_t limit = (uint64_t)1 << 53;
    size_t s = 0;
    for (int i = 0; i < 2; i++) {
        if (!json_is_number(v[i]) || json_number_value(v[i]) <= 0)
            return nx__sc_fail(sc, NX_EINVAL, "'multipleOf' at %s is not a number above 0",
                               nx__sc_where(ptr)), NULL;
        if (!nx__json_decimal(v[i], &m[i], &why))
            return nx__sc_unsupported(sc, "multipleOf", ptr, why), NULL;
        if (strlen(m[i].frac) > s)
            s = strlen(m[i].frac);
    }
    /* both as integers over 10^s */
    for (int i = 0; i < 2; i++) {
        uint64_t x = (uint64_t)m[i].ip;
        for (size_t j = 0; j < s && x < limit; j++)
            x = x * 10 + (m[i].frac[j] ? (uint64_t)(m[i].frac[j] - '0') : 0); /* 0-padded */
        if (x >= limit)
            return nx__sc_unsupported(sc, "multipleOf", ptr, "allOf of two multiples past "
                                      "2^53 (digits without the point) is not built"), NULL;
        scaled[i] = x;
    }
    uint64_t g = gcd(scaled[0], scaled[1]), q = scaled[0] / g;
    if (q > limit / scaled[1])
        return nx__sc_unsupported(sc, "multipleOf", ptr, "allOf of two multiples whose least "
                                  "common multiple passes 2^53 is not built"), NULL;
    char text[48];
    snprintf(text, sizeof text, "%llue-%zu", (unsigned long long)(q * scaled[1]), s);
    json_t *l = s ? json_real(strtod(text, NULL))
                  : json_integer((json_int_t)(q * scaled[1]));
    if (!l)
        nx__sc_fail(sc, NX_ENOMEM, "out of memory");
    return l;
}

/* A regex's DFA (not a terminal) into *out; false after an error (recorded). */
static bool rx_dfa(nx__sc_t *sc, const buf_t *b, nx__dfa_t *out)
{
    if (!b->oom && dfa_term(sc, b->s, false, NX__ENC_UTF8, NULL, NULL, out) != NX__DEAD)
        return true;
    if (!sc->rc)
        nx__sc_fail(sc, NX_ENOMEM, "out of memory");
    return false;
}

/* Intersect *d into *acc (the first one becomes *acc); takes *d. false after an error
 * (recorded, naming key; *acc freed and *have cleared). */
static bool and_dfa(nx__sc_t *sc, nx__dfa_t *acc, bool *have, nx__dfa_t *d, const char *key,
                    const char *ptr)
{
    if (!*have) {
        *acc = *d;
        *have = true;
        return true;
    }
    nx__dfa_t both;
    nx_err_t e = {0};
    int rc = nx__dfa_product(acc, d, false, &both, &e);
    nx__dfa_free(acc);
    nx__dfa_free(d);
    if (rc != NX_OK) {
        *have = false;
        nx__sc_unsupported(sc, key, ptr, e.msg);
        return false;
    }
    *acc = both;
    return true;
}

int nx__sc_number(nx__sc_t *sc, json_t *node, const char *ptr, bool integer, uint32_t rule)
{
    static const char *const keys[] = {"minimum", "exclusiveMinimum", "maximum",
                                       "exclusiveMaximum"};
    json_t *v[4], *mult = json_object_get(node, "multipleOf");
    nx__decimal_t m[4];
    bool any = false;
    for (int i = 0; i < 4; i++) {
        const char *why = NULL;
        v[i] = json_object_get(node, keys[i]);
        if (v[i] && !json_is_number(v[i]))
            return nx__sc_unsupported(sc, keys[i], ptr, "a bound that is not a number "
                                                        "(draft-04's boolean form) is not built"),
                   sc->rc;
        if (v[i] && !nx__json_decimal(v[i], &m[i], &why))
            return nx__sc_unsupported(sc, keys[i], ptr, why), sc->rc;
        any |= v[i] != NULL;
    }
    uint64_t K = 1;
    uint32_t s = 0;
    if (mult && !multiple_of(sc, mult, ptr, &K, &s))
        return sc->rc;
    if (!any && !mult) {
        uint32_t *term = integer ? &sc->int_term : &sc->num_term;
        if (*term == NX__DEAD)
            *term = dfa_term(sc, integer ? "-?" NAT
                                         : "-?" NAT "(\\.[0-9]+)?([eE][+-]?[0-9]+)?",
                             false, NX__ENC_UTF8, NULL, NULL, NULL);
        return add_term_alt(sc, rule, *term);
    }
    buf_t b = {0};
    nx__dfa_t acc = {0}, d;
    bool have = false, ok = true;
    if (integer) {
        int64_t lo = -INF, hi = INF, x;
        if (v[0] && (x = dec_round(&m[0], true)) > lo) lo = x;
        if (v[1] && (x = dec_round(&m[1], false) + 1) > lo) lo = x;
        if (v[2] && (x = dec_round(&m[2], false)) < hi) hi = x;
        if (v[3] && (x = dec_round(&m[3], true) - 1) < hi) hi = x;
        if (lo > hi)
            return NX_OK; /* no integer fits */
        puts_(&b, "(");
        int_range(&b, lo, hi);
        puts_(&b, lo <= 0 && hi >= 0 ? "|-0)" : ")"); /* -0 is 0; no fraction, not even .0 */
        if (!mult) { /* one keyed terminal, shared by equal bounds */
            uint32_t t = b.oom ? NX__DEAD
                               : dfa_term(sc, b.s, false, NX__ENC_UTF8, NULL, NULL, NULL);
            free(b.s);
            return add_term_alt(sc, rule, t);
        }
        ok = rx_dfa(sc, &b, &d) && and_dfa(sc, &acc, &have, &d, "type", ptr);
    }
    for (int i = 0; i < 4 && ok && !integer; i++) {
        if (!v[i])
            continue;
        b.len = 0;
        num_bound(&b, i, &m[i]);
        ok = rx_dfa(sc, &b, &d) && and_dfa(sc, &acc, &have, &d, keys[i], ptr);
    }
    if (ok && !have) { /* multipleOf alone: numbers without exponent */
        b.len = 0;
        puts_(&b, "-?" NAT FRAC);
        ok = rx_dfa(sc, &b, &d) && and_dfa(sc, &acc, &have, &d, "multipleOf", ptr);
    }
    free(b.s);
    if (ok && mult) {
        nx_err_t e = {0};
        ok = multiple_dfa(K, s, &d, &e) == NX_OK;
        if (!ok)
            nx__sc_unsupported(sc, "multipleOf", ptr, e.msg);
        else
            ok = and_dfa(sc, &acc, &have, &d, "multipleOf", ptr);
    }
    if (!ok) {
        if (have)
            nx__dfa_free(&acc);
        return sc->rc ? sc->rc : NX_ENOMEM;
    }
    return add_term_alt(sc, rule, nx__gb_dfa(sc->b, &acc));
}

/* --- literal values as regexes -------------------------------------------------------------- */

bool nx__json_integral(const json_t *v, long long *n)
{
    if (json_is_integer(v)) {
        *n = (long long)json_integer_value(v);
        return true;
    }
    double x = json_is_real(v) ? json_real_value(v) : NAN;
    if (!(x == floor(x) && fabs(x) <= 9007199254740992.0))
        return false; /* NaN, a fraction, or past 2^53 where a double skips integers */
    *n = (long long)x;
    return true;
}

json_t *nx__json_as_written(json_t *v)
{
    long long n;
    if (json_is_real(v) && nx__json_integral(v, &n))
        return json_integer((json_int_t)n);
    if (json_is_array(v)) {
        json_t *out = json_array(), *x;
        size_t k;
        json_array_foreach(v, k, x) {
            if (!out || json_array_append_new(out, nx__json_as_written(x)))
                return json_decref(out), NULL;
        }
        return out;
    }
    if (json_is_object(v)) {
        json_t *out = json_object(), *x;
        const char *key;
        json_object_foreach(v, key, x) {
            if (!out || json_object_set_new(out, key, nx__json_as_written(x)))
                return json_decref(out), NULL;
        }
        return out;
    }
    return json_incref(v);
}

static bool value_rx(buf_t *b, json_t *v, int depth);

/* Members of an object in every order (up to 4 members: 24 orders), else as listed. */
static bool members_rx(buf_t *b, json_t *obj, const char **keys, size_t n, size_t *perm,
                       size_t k, bool *used, bool *first, int depth)
{
    if (k == n) {
        if (!*first)
            puts_(b, "|");
        *first = false;
        for (size_t i = 0; i < n; i++) {
            if (i)
                puts_(b, ",");
            buf_t key = {0};
            json_str(&key, keys[perm[i]], strlen(keys[perm[i]]));
            if (key.oom)
                return false;
            rx_lit(b, key.s, key.len);
            free(key.s);
            puts_(b, ":");
            if (!value_rx(b, json_object_get(obj, keys[perm[i]]), depth + 1))
                return false;
        }
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (used[i] || (n > 4 && i != k))
            continue;
        used[i] = true;
        perm[k] = i;
        bool ok = members_rx(b, obj, keys, n, perm, k + 1, used, first, depth);
        used[i] = false;
        if (!ok)
            return false;
    }
    return true;
}

static bool value_rx(buf_t *b, json_t *v, int depth)
{
    char tmp[64];
    if (depth > 32 || b->oom)
        return false;
    switch (json_typeof(v)) {
    case JSON_NULL: puts_(b, "null"); break;
    case JSON_TRUE: puts_(b, "true"); break;
    case JSON_FALSE: puts_(b, "false"); break;
    case JSON_INTEGER:
    case JSON_REAL: {
        double x = json_number_value(v);
        long long n;
        if (nx__json_integral(v, &n)) { /* written as an integer: 5.0 is "5" */
            if (n == 0)
                puts_(b, "(\\-?0)");
            else {
                snprintf(tmp, sizeof tmp, "%lld", n);
                rx_lit(b, tmp, strlen(tmp));
            }
        } else {
            /* the shortest text that reads back as x, as Python's repr writes it */
            for (int prec = 1; prec <= 17; prec++) {
                snprintf(tmp, sizeof tmp, "%.*g", prec, x);
                if (strtod(tmp, NULL) == x)
                    break;
            }
            if (!strchr(tmp, '.') && !strchr(tmp, 'e'))
                strcat(tmp, ".0");
            rx_lit(b, tmp, strlen(tmp));
        }
        break;
    }
    case JSON_STRING: {
        buf_t s = {0};
        json_str(&s, json_string_value(v), json_string_length(v));
        if (s.oom)
            return false;
        rx_lit(b, s.s, s.len);
        free(s.s);
        break;
    }
    case JSON_ARRAY: {
        puts_(b, "\\[");
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (i)
                puts_(b, ",");
            if (!value_rx(b, x, depth + 1))
                return false;
        }
        puts_(b, "\\]");
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        const char **keys = calloc(n ? n : 1, sizeof *keys);
        size_t *perm = calloc(n ? n : 1, sizeof *perm);
        bool *used = calloc(n ? n : 1, sizeof *used), first = true, ok = keys && perm && used;
        const char *key;
        json_t *x;
        json_object_foreach(v, key, x) if (keys) keys[i++] = key;
        puts_(b, "\\{(");
        ok = ok && members_rx(b, v, keys, n, perm, 0, used, &first, depth);
        puts_(b, ")\\}");
        free(keys);
        free(perm);
        free(used);
        if (!ok)
            return false;
        break;
    }
    }
    return !b->oom;
}

bool nx__sc_value_regex(json_t *v, char **s, size_t *len, size_t *cap, int depth)
{
    buf_t b = {.s = *s, .len = *len, .cap = *cap};
    bool ok;
    if (depth < 0) {
        puts_(&b, "|");
        ok = !b.oom;
    } else
        ok = value_rx(&b, v, depth);
    *s = b.s;
    *len = b.len;
    *cap = b.cap;
    return ok && b.len < (16u << 20);
}
