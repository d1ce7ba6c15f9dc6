/* detok.c — ids back to text: nx_tokenizer_decode for a whole sequence and the streaming
 * nx_detok_* that holds the bytes of an incomplete UTF-8 character until the next token
 * completes it. Both turn invalid bytes into U+FFFD the same way (one per maximal invalid
 * subpart, as Rust's from_utf8_lossy and WHATWG do), so a stream's pieces concatenate to
 * exactly what nx_tokenizer_decode returns.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Bytes at s that form the maximal prefix of some valid sequence (at least 1). */
static size_t invalid_len(const unsigned char *s, size_t len)
{
    for (size_t n = 2; n <= 4 && n <= len; n++) {
        if (nx__utf8_seq(s, n - 1) != 0 || nx__utf8_seq(s, n) == -1)
            return n - 1;
    }
    return 1;
}

/* Copy s[0..len) to out as valid UTF-8. With hold, an incomplete character at the end is
 * left unconsumed; returns the bytes consumed and adds what was written to *out_len (never
 * past cap - 1; the text is cut at a character boundary if it would be). */
static size_t lossy_copy(const unsigned char *s, size_t len, bool hold, char *out,
                         size_t cap, size_t *out_len)
{
    size_t i = 0;
    while (i < len) {
        int n = nx__utf8_seq(s + i, len - i);
        if (n == 0 && hold)
            break;
        const char *src = (const char *)s + i;
        size_t src_len = (size_t)n, used = (size_t)n;
        if (n <= 0) { /* invalid, or incomplete at the very end */
            src = replacement, src_len = 3;
            used = n == 0 ? len - i : invalid_len(s + i, len - i);
        }
        if (*out_len + src_len + 1 > cap)
            break;
        memcpy(out + *out_len, src, src_len);
        *out_len += src_len;
        i += used;
    }
    return i;
}

int nx_tokenizer_decode(const nx_tokenizer_t *self, const int32_t *ids, size_t count,
                        bool skip_special, char **text_out, nx_err_t *err)
{
    *text_out = NULL;
    size_t raw_len = 0;
    for (size_t i = 0; i < count; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= self->vocab_size || !self->tokens[ids[i]].present)
            return nx_err_set(err, NX_EINVAL, "decoding: token id %d (at %zu) is not in the "
                              "vocabulary of %u", ids[i], i, self->vocab_size);
        raw_len += self->tokens[ids[i]].len;
    }
    unsigned char *raw = malloc(raw_len + 1);
    char *text = malloc(3 * raw_len + 1);
    if (!raw || !text) {
        free(raw), free(text);
        return nx_err_set(err, NX_ENOMEM, "decoding %zu tokens: out of memory", count);
    }
    size_t n = 0, text_len = 0;
    for (size_t i = 0; i < count; i++) {
        const nx__token_t *t = &self->tokens[ids[i]];
        if (skip_special && t->special)
            continue;
        memcpy(raw + n, t->bytes, t->len);
        n += t->len;
    }
    lossy_copy(raw, n, false, text, 3 * raw_len + 1, &text_len);
    text[text_len] = '\0';
    free(raw);
    *text_out = text;
    return NX_OK;
}

void nx_detok_init(nx_detok_t *self, const nx_tokenizer_t *tok, bool skip_special)
{
    memset(self, 0, sizeof *self);
    self->tok = tok;
    self->skip_special = skip_special;
}

/* Run pending + more through lossy_copy, keeping an incomplete tail pending. */
static size_t emit(nx_detok_t *self, const unsigned char *more, size_t more_len, bool hold,
                   char *out, size_t cap)
{
    size_t out_len = 0;
    if (cap == 0)
        return 0;
    unsigned char small[256];
    size_t total = self->pending_len + more_len;
    unsigned char *buf = total <= sizeof small ? small : malloc(total);
    if (!buf) {
        out[0] = '\0';
        return 0;
    }
    memcpy(buf, self->pending, self->pending_len);
    if (more_len)
        memcpy(buf + self->pending_len, more, more_len);
    size_t used = lossy_copy(buf, total, hold, out, cap, &out_len);
    size_t rest = total - used; /* an incomplete character: at most 3 bytes */
    if (rest > sizeof self->pending)
        rest = sizeof self->pending; /* only when out was too small for the text */
    memcpy(self->pending, buf + total - rest, rest);
    self->pending_len = rest;
    if (buf != small)
        free(buf);
    out[out_len] = '\0';
    return out_len;
}

size_t nx_detok_push(nx_detok_t *self, int32_t id, char *out, size_t cap)
{
    size_t len = 0;
    const char *bytes = nx_tokenizer_token_bytes(self->tok, id, &len);
    if (!bytes || (self->skip_special && nx_tokenizer_is_special(self->tok, id))) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    return emit(self, (const unsigned char *)bytes, len, true, out, cap);
}

size_t nx_detok_flush(nx_detok_t *self, char *out, size_t cap)
{
    return emit(self, NULL, 0, false, out, cap);
}
