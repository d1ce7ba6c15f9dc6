/* tok_encode.c — nx_tokenizer_encode: added tokens are split out first (longest match at the
 * leftmost position, never merged, special ones included, as HF does by default); each piece
 * between them is NFC-normalized, split by the pre-tokenizer regex (PCRE2, UTF + UCP) into
 * pre-tokens, and every pre-token is merged by rank in tok_bpe.c.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct encoder {
    const nx_tokenizer_t *tok;
    nx__ids_t out;
    pcre2_match_data *match;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    nx_err_t *err;
} encoder_t;

/* Split one normalized piece with the regex; gaps between matches are pre-tokens too. */
static int split_and_merge(encoder_t *e, const unsigned char *s, size_t n, size_t where)
{
    const nx_tokenizer_t *tok = e->tok;
    if (!tok->regex)
        return nx__bpe_word(tok, s, n, &e->out);
    size_t off = 0, gap = 0;
    int rc = NX_OK;
    while (off < n && rc == NX_OK) {
        int r = pcre2_match(tok->regex, s, n, off, PCRE2_NO_UTF_CHECK, e->match, e->mctx);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof msg);
            return nx_err_set(e->err, NX_ENOTSUP, "pre-tokenizer regex failed near byte %zu "
                              "of the text: %s", where + off, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->match);
        size_t start = ov[0], end = ov[1];
        if (end == start) { /* an empty match splits nothing: step over one character */
            int len = nx__utf8_seq(s + off, n - off);
            off += len > 0 ? (size_t)len : 1;
            continue;
        }
        if (start > gap)
            rc = nx__bpe_word(tok, s + gap, start - gap, &e->out);
        if (rc == NX_OK)
            rc = nx__bpe_word(tok, s + start, end - start, &e->out);
        gap = off = end;
    }
    if (rc == NX_OK && gap < n)
        rc = nx__bpe_word(tok, s + gap, n - gap, &e->out);
    if (rc == NX_ENOMEM)
        nx_err_set(e->err, rc, "encoding: out of memory");
    return rc;
}

static bool all_ascii(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] & 0x80)
            return false;
    return true;
}

/* One piece of text between added tokens: normalize, add the prefix space, split, merge. */
static int encode_piece(encoder_t *e, const unsigned char *s, size_t n, size_t where)
{
    if (n == 0)
        return NX_OK;
    unsigned char *norm = NULL, *buf = NULL;
    if (e->tok->nfc && !all_ascii(s, n)) {
        utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &norm,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0)
            return nx_err_set(e->err, NX_EINVAL, "NFC of the text at byte %zu failed: %s",
                              where, utf8proc_errmsg(m));
        s = norm, n = (size_t)m;
    }
    if (e->tok->add_prefix_space && s[0] != ' ') {
        if (!(buf = malloc(n + 1))) {
            free(norm);
            return nx_err_set(e->err, NX_ENOMEM, "encoding: out of memory");
        }
        buf[0] = ' ';
        memcpy(buf + 1, s, n);
        s = buf, n++;
    }
    int rc = split_and_merge(e, s, n, where);
    free(buf);
    free(norm);
    return rc;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_word_byte(unsigned char c)
{
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* The added token that matches at text[pos], or NULL. Longest first. */
static const nx__added_t *added_at(const nx_tokenizer_t *tok, const unsigned char *text,
                                   size_t len, size_t pos)
{
    for (size_t k = 0; k < tok->added_count; k++) {
        const nx__added_t *a = &tok->added[k];
        if (a->len > len - pos || memcmp(text + pos, a->content, a->len) != 0)
            continue;
        if (a->single_word && ((pos > 0 && is_word_byte(text[pos - 1])) ||
                               (pos + a->len < len && is_word_byte(text[pos + a->len]))))
            continue;
        return a;
    }
    return NULL;
}

static int encode_text(encoder_t *e, const unsigned char *text, size_t len)
{
    const nx_tokenizer_t *tok = e->tok;
    size_t piece = 0; /* start of the text not yet encoded */
    int rc = NX_OK;
    for (size_t pos = 0; pos < len && rc == NX_OK;) {
        const nx__added_t *a = tok->added_first_byte[text[pos]] ? added_at(tok, text, len, pos)
                                                                 : NULL;
        if (!a) {
            pos++;
            continue;
        }
        size_t start = pos, end = pos + a->len;
        while (a->lstrip && start > piece && is_space(text[start - 1]))
            start--;
        while (a->rstrip && end < len && is_space(text[end]))
            end++;
        rc = encode_piece(e, text + piece, start - piece, piece);
        if (rc == NX_OK && (rc = nx__ids_push(&e->out, a->id)) != NX_OK)
            nx_err_set(e->err, rc, "encoding: out of memory");
        piece = pos = end;
    }
    if (rc == NX_OK)
        rc = encode_piece(e, text + piece, len - piece, piece);
    return rc;
}

int nx_tokenizer_encode(const nx_tokenizer_t *self, const char *text, size_t len,
                        int32_t **ids_out, size_t *count_out, nx_err_t *err)
{
    *ids_out = NULL;
    *count_out = 0;
    bool bad;
    size_t valid = nx__utf8_valid_prefix((const unsigned char *)text, len, &bad);
    if (valid < len)
        return nx_err_set(err, NX_EINVAL, "text is not valid UTF-8: %s sequence at byte "
                          "offset %zu", bad ? "invalid" : "truncated", valid);
    encoder_t e = {.tok = self, .err = err};
    int rc = NX_ENOMEM;
    if (self->regex) {
        e.match = pcre2_match_data_create_from_pattern(self->regex, NULL);
        e.mctx = pcre2_match_context_create(NULL);
        if (!e.match || !e.mctx)
            goto out;
        if (self->regex_jit) {
            if (!(e.jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL)))
                goto out;
            pcre2_jit_stack_assign(e.mctx, NULL, e.jit_stack);
        }
    }
    rc = encode_text(&e, (const unsigned char *)text, len);
out:
    if (rc == NX_ENOMEM && (!err || err->code != NX_ENOMEM))
        nx_err_set(err, rc, "encoding: out of memory");
    pcre2_match_data_free(e.match);
    pcre2_match_context_free(e.mctx);
    pcre2_jit_stack_free(e.jit_stack);
    if (rc != NX_OK) {
        free(e.out.ids);
        return rc;
    }
    if (!e.out.ids) /* empty text: a valid empty array, still malloc'ed */
        e.out.ids = malloc(sizeof *e.out.ids);
    *ids_out = e.out.ids;
    *count_out = e.out.count;
    return NX_OK;
}
