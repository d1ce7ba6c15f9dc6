/* fuzz_tokenizer.c — libFuzzer target for the tokenizer's input side: every input is text a
 * client sent (a task's "input"), encoded with a real byte-level BPE tokenizer, then decoded
 * again. The first byte picks the tokenizer (the committed tiny Qwen2 and Llama ones, and the
 * real Qwen3 and Llama 3 ones unpacked from their tokenizer.json.gz), the rest is the
 * text. It must never crash, leak or read out of bounds. Invalid UTF-8 must be refused with
 * NX_EINVAL and a message; valid UTF-8 must come back byte for byte from decode(encode(x))
 * (after NFC where the tokenizer normalizes: Qwen's), and the streaming decoder fed the same
 * ids one at a time must give the same text.
 *
 * Build and run (clang with libFuzzer; from the repository root, which holds the fixtures):
 *   make fuzz                                   # builds build/fuzz/fuzz_tokenizer
 *   mkdir -p var/fuzz/tokenizer && cp -r tests/fuzz/corpus/fuzz_tokenizer/. var/fuzz/tokenizer/
 *   build/fuzz/fuzz_tokenizer var/fuzz/tokenizer -max_total_time=60
 * NX_FUZZ_FIXTURES overrides where tests/fixtures/tokenizer is.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <utf8proc.h>
#include <zlib.h>

#include "nx_engine.h"

enum { TOK_MAX = 4 };
static nx_tokenizer_t *toks[TOK_MAX];
static bool tok_nfc[TOK_MAX]; /* its normalizer is NFC (decode gives back NFC(text)) */
static size_t tok_count;

/* Unpack DIR/tokenizer.json.gz (and copy tokenizer_config.json) into a temporary folder. */
static bool unpack(const char *dir, char *out_dir, size_t cap)
{
    snprintf(out_dir, cap, "%s/nx-fuzz-tok-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(out_dir))
        return false;
    char src[1024], dst[1024], buf[1 << 16];
    snprintf(src, sizeof src, "%s/tokenizer.json.gz", dir);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", out_dir);
    gzFile in = gzopen(src, "rb");
    FILE *out = in ? fopen(dst, "wb") : NULL;
    int n = 0;
    while (out && (n = gzread(in, buf, sizeof buf)) > 0)
        fwrite(buf, 1, (size_t)n, out);
    bool ok = in && out && n == 0;
    if (out)
        fclose(out);
    if (in)
        gzclose(in);
    snprintf(src, sizeof src, "%s/tokenizer_config.json", dir);
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", out_dir);
    FILE *cin = fopen(src, "rb"), *cout = cin ? fopen(dst, "wb") : NULL;
    while (cout && (n = (int)fread(buf, 1, sizeof buf, cin)) > 0)
        fwrite(buf, 1, (size_t)n, cout);
    if (cout)
        fclose(cout);
    if (cin)
        fclose(cin);
    return ok;
}

static void add(const char *dir, bool gz, bool nfc)
{
    char tmp[1024];
    const char *from = dir;
    if (gz) {
        if (!unpack(dir, tmp, sizeof tmp))
            return;
        from = tmp;
    }
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(from, &err);
    if (gz) { /* loaded: the unpacked copy is no longer needed */
        char path[1100];
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        unlink(path);
        snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp);
        unlink(path);
        rmdir(tmp);
    }
    if (!tok) {
        fprintf(stderr, "fuzz_tokenizer: %s: %s\n", dir, err.msg);
        return;
    }
    toks[tok_count] = tok;
    tok_nfc[tok_count++] = nfc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *root = getenv("NX_FUZZ_FIXTURES") ? getenv("NX_FUZZ_FIXTURES")
                                                  : "tests/fixtures/tokenizer";
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/qwen2_tiny", root);
    add(dir, false, true);
    snprintf(dir, sizeof dir, "%s/llama_tiny", root);
    add(dir, false, false);
    snprintf(dir, sizeof dir, "%s/qwen3", root);
    add(dir, true, true);
    snprintf(dir, sizeof dir, "%s/llama3", root);
    add(dir, true, false);
    if (tok_count < 2) { /* the committed tiny ones at least: otherwise nothing is tested */
        fprintf(stderr, "fuzz_tokenizer: run from the repository root or set NX_FUZZ_FIXTURES\n");
        abort();
    }
    return 0;
}

/* decode(ids) through the streaming decoder, one id at a time; caller frees. */
static char *stream_decode(const nx_tokenizer_t *tok, const int32_t *ids, size_t count,
                           size_t *len_out)
{
    size_t cap = 64, len = 0;
    char *out = malloc(cap), piece[4096];
    nx_detok_t d;
    nx_detok_init(&d, tok, false);
    for (size_t i = 0; out && i <= count; i++) {
        size_t n = i < count ? nx_detok_push(&d, ids[i], piece, sizeof piece)
                             : nx_detok_flush(&d, piece, sizeof piece);
        if (len + n + 1 > cap) {
            cap = 2 * (len + n + 1);
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        memcpy(out + len, piece, n);
        len += n;
    }
    *len_out = len;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t which = data[0] % tok_count;
    const nx_tokenizer_t *tok = toks[which];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    /* libFuzzer's bytes are not NUL-terminated: the encoder takes a length, but give it a
     * terminated copy so a read past `len` would be a real bug, not the fuzzer's buffer */
    char *copy = malloc(len + 1);
    if (!copy)
        return 0;
    memcpy(copy, text, len);
    copy[len] = '\0';
    bool valid = utf8proc_decompose((const utf8proc_uint8_t *)copy, (utf8proc_ssize_t)len,
                                    NULL, 0, 0) >= 0;
    /* a NUL inside the text is valid UTF-8 but decode returns a C string: compare lengths */
    int32_t *ids = NULL;
    size_t count = 0;
    nx_err_t err = {0};
    int rc = nx_tokenizer_encode(tok, copy, len, &ids, &count, &err);
    if (rc != NX_OK) {
        if (valid || rc != NX_EINVAL || !err.msg[0])
            __builtin_trap(); /* only invalid UTF-8 may be refused, with a reason */
        goto out;
    }
    if (!valid)
        __builtin_trap(); /* invalid UTF-8 was accepted */
    for (size_t i = 0; i < count; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= nx_tokenizer_vocab_size(tok))
            __builtin_trap(); /* an id outside the vocabulary */
    char *back = NULL;
    if (nx_tokenizer_decode(tok, ids, count, false, &back, &err) != NX_OK)
        __builtin_trap(); /* the encoder's own ids must decode */
    utf8proc_uint8_t *want = NULL;
    size_t want_len = len;
    if (tok_nfc[which]) {
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)copy, (utf8proc_ssize_t)len,
                                          &want, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0)
            __builtin_trap(); /* valid UTF-8 that NFC refuses */
        want_len = (size_t)m;
    }
    const char *expect = want ? (const char *)want : copy;
    if (!memchr(expect, '\0', want_len) &&
        (strlen(back) != want_len || memcmp(back, expect, want_len) != 0))
        __builtin_trap(); /* the round trip lost or changed text */
    size_t streamed_len = 0;
    char *streamed = stream_decode(tok, ids, count, &streamed_len);
    if (streamed && !memchr(expect, '\0', want_len) &&
        (streamed_len != want_len || memcmp(streamed, expect, want_len) != 0))
        __builtin_trap(); /* the streaming decoder disagrees with decode */
    free(streamed);
    free(want);
    free(back);
out:
    free(ids);
    free(copy);
    return 0;
}
