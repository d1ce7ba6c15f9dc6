/* test_tokenizer.c — the tokenizer API in C, on the committed tiny qwen2 and llama tokenizers
 * (tests/fixtures/tokenizer): streaming decode fed one byte token at a time (emoji, CJK,
 * invalid bytes), flush, skip_special, encode errors and edge cases, token lookups, chat
 * rendering options. Run from the repository root (as `make test` does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>

#include "nx_engine.h"

#define QWEN2_DIR "tests/fixtures/tokenizer/qwen2_tiny"
#define LLAMA_DIR "tests/fixtures/tokenizer/llama_tiny"

static nx_tokenizer_t *load(const char *dir)
{
    nx_err_t err = {0};
    nx_tokenizer_t *tok = nx_tokenizer_load(dir, &err);
    if (!tok)
        fail_msg("loading %s: %s", dir, err.msg);
    return tok;
}

/* The id of the single-byte token for byte b. */
static int32_t byte_token(const nx_tokenizer_t *tok, unsigned char b)
{
    for (uint32_t id = 0; id < nx_tokenizer_vocab_size(tok); id++) {
        size_t len;
        const char *bytes = nx_tokenizer_token_bytes(tok, (int32_t)id, &len);
        if (bytes && len == 1 && (unsigned char)bytes[0] == b)
            return (int32_t)id;
    }
    fail_msg("no token for byte 0x%02x", b);
    return -1;
}

/* Push text's bytes one byte token at a time; returns the concatenated pieces, checking that
 * a piece never ends inside a character. */
static char *stream_bytes(const nx_tokenizer_t *tok, const char *text, size_t *empty_pushes)
{
    nx_detok_t d;
    nx_detok_init(&d, tok, false);
    size_t n = strlen(text), out_len = 0;
    char *out = calloc(4 * n + 16, 1), piece[128];
    *empty_pushes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = nx_detok_push(&d, byte_token(tok, (unsigned char)text[i]), piece,
                                   sizeof piece);
        assert_int_equal(strlen(piece), len);
        *empty_pushes += len == 0;
        memcpy(out + out_len, piece, len);
        out_len += len;
    }
    out_len += nx_detok_flush(&d, out + out_len, 16);
    out[out_len] = '\0';
    return out;
}

static void test_stream_emoji_and_cjk_byte_by_byte(void **state)
{
    nx_tokenizer_t *tok = load(QWEN2_DIR);
    const char *texts[] = {"👨‍👩‍👧‍👦 ok", "你好世界", "🇫🇷 €5 𠀀", "plain"};
    /* pushes that emit nothing: 3 for every 4-byte character, 2 for every 3-byte one */
    const size_t expected_empty[] = {
        4 * 3 + 3 * 2,     /* four people, three ZWJ */
        4 * 2,             /* four CJK characters */
        2 * 3 + 2 + 3,     /* two regional indicators, the euro sign, an ext-B ideograph */
        0};
    for (size_t i = 0; i < 4; i++) {
        size_t empty;
        char *got = stream_bytes(tok, texts[i], &empty);
        assert_string_equal(got, texts[i]);
        assert_int_equal(empty, expected_empty[i]);
        free(got);
    }
    nx_tokenizer_destroy(&tok);
}

static void test_stream_invalid_bytes_and_flush(void **state)
{
    nx_tokenizer_t *tok = load(QWEN2_DIR);
    nx_detok_t d;
    char piece[128];
    nx_detok_init(&d, tok, false);
    /* a stray continuation byte is replaced at once; an unfinished character at the end of
     * the stream comes out of flush as one U+FFFD */
    assert_int_equal(nx_detok_push(&d, byte_token(tok, 0x80), piece, sizeof piece), 3);
    assert_string_equal(piece, "\xEF\xBF\xBD");
    assert_int_equal(nx_detok_push(&d, byte_token(tok, 0xE4), piece, sizeof piece), 0);
    assert_int_equal(nx_detok_push(&d, byte_token(tok, 0xBD), piece, sizeof piece), 0);
    assert_int_equal(nx_detok_flush(&d, piece, sizeof piece), 3);
    assert_string_equal(piece, "\xEF\xBF\xBD");
    assert_int_equal(nx_detok_flush(&d, piece, sizeof piece), 0);
    /* an incomplete character cut short by an ASCII byte: U+FFFD then the byte */
    nx_detok_push(&d, byte_token(tok, 0xF0), piece, sizeof piece);
    assert_int_equal(nx_detok_push(&d, byte_token(tok, 'a'), piece, sizeof piece), 4);
    assert_string_equal(piece, "\xEF\xBF\xBD" "a");
    /* the whole-sequence decode agrees */
    int32_t ids[] = {byte_token(tok, 0x80), byte_token(tok, 0xF0), byte_token(tok, 'a'),
                     byte_token(tok, 0xE4)};
    char *text = NULL;
    assert_int_equal(nx_tokenizer_decode(tok, ids, 4, false, &text, NULL), NX_OK);
    assert_string_equal(text, "\xEF\xBF\xBD\xEF\xBF\xBD" "a\xEF\xBF\xBD");
    free(text);
    nx_tokenizer_destroy(&tok);
}

static void test_special_tokens(void **state)
{
    nx_tokenizer_t *tok = load(QWEN2_DIR);
    int32_t im_start = nx_tokenizer_token_id(tok, "<|im_start|>");
    assert_true(im_start > 0);
    assert_true(nx_tokenizer_is_special(tok, im_start));
    assert_false(nx_tokenizer_is_special(tok, byte_token(tok, 'a')));
    assert_int_equal(nx_tokenizer_token_id(tok, "<|nope|>"), -1);
    assert_null(nx_tokenizer_token_bytes(tok, -1, NULL));
    assert_null(nx_tokenizer_token_bytes(tok, (int32_t)nx_tokenizer_vocab_size(tok), NULL));

    const char text[] = "<|im_start|>user\nhi<|im_end|>";
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(nx_tokenizer_encode(tok, text, strlen(text), &ids, &n, NULL), NX_OK);
    assert_int_equal(ids[0], im_start);
    char *all = NULL, *plain = NULL;
    assert_int_equal(nx_tokenizer_decode(tok, ids, n, false, &all, NULL), NX_OK);
    assert_int_equal(nx_tokenizer_decode(tok, ids, n, true, &plain, NULL), NX_OK);
    assert_string_equal(all, text);
    assert_string_equal(plain, "user\nhi");

    nx_detok_t d; /* skip_special in the stream too */
    nx_detok_init(&d, tok, true);
    char piece[128], joined[64] = "";
    for (size_t i = 0; i < n; i++) {
        nx_detok_push(&d, ids[i], piece, sizeof piece);
        strcat(joined, piece);
    }
    assert_string_equal(joined, "user\nhi");
    free(all), free(plain), free(ids);
    nx_tokenizer_destroy(&tok);
}

static void test_encode_edges_and_errors(void **state)
{
    nx_tokenizer_t *tok = load(LLAMA_DIR);
    nx_err_t err = {0};
    int32_t *ids = (int32_t *)1;
    size_t n = 99;
    assert_int_equal(nx_tokenizer_encode(tok, "", 0, &ids, &n, &err), NX_OK);
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);
    assert_int_equal(nx_tokenizer_encode(tok, "ok\xC0\xAF", 4, &ids, &n, &err), NX_EINVAL);
    assert_null(ids);
    assert_non_null(strstr(err.msg, "byte offset 2"));
    assert_int_equal(nx_tokenizer_encode(tok, "\xED\xA0\x80", 3, &ids, &n, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "byte offset 0")); /* a surrogate is not UTF-8 */
    /* an embedded NUL is text like any other byte */
    assert_int_equal(nx_tokenizer_encode(tok, "a\0b", 3, &ids, &n, &err), NX_OK);
    char *text = NULL;
    assert_int_equal(nx_tokenizer_decode(tok, ids, n, false, &text, &err), NX_OK);
    assert_memory_equal(text, "a\0b", 3);
    free(text), free(ids);
    int32_t bad[] = {5, -7};
    assert_int_equal(nx_tokenizer_decode(tok, bad, 2, false, &text, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "-7"));
    nx_tokenizer_destroy(&tok);
    nx_tokenizer_destroy(&tok); /* safe twice */
}

static void test_chat_options(void **state)
{
    nx_tokenizer_t *qwen = load(QWEN2_DIR), *llama = load(LLAMA_DIR);
    nx_chat_msg_t msgs[] = {{"system", "S"}, {"user", "  U \n"}};
    nx_chat_opts_t opts = {.kind = NX_CHAT_AUTO, .thinking = 0, .add_generation_prompt = true};
    char *text = NULL;
    assert_int_equal(nx_chat_detect(qwen), NX_CHAT_CHATML);
    assert_int_equal(nx_chat_detect(llama), NX_CHAT_LLAMA3);
    /* qwen2's template has no enable_thinking: thinking off adds nothing */
    assert_int_equal(nx_chat_render(qwen, &opts, msgs, 2, &text, NULL), NX_OK);
    assert_string_equal(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n  U \n"
                              "<|im_end|>\n<|im_start|>assistant\n");
    free(text);
    opts.kind = NX_CHAT_LLAMA3; /* forced, on any tokenizer */
    assert_int_equal(nx_chat_render(qwen, &opts, msgs + 1, 1, &text, NULL), NX_OK);
    assert_string_equal(text, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU"
                              "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    free(text);
    opts.kind = NX_CHAT_RAW;
    assert_int_equal(nx_chat_render(llama, &opts, msgs, 2, &text, NULL), NX_OK);
    assert_string_equal(text, "S\n\n  U \n");
    free(text);
    nx_err_t err = {0};
    nx_chat_msg_t bad = {"us<er", "x"};
    assert_int_equal(nx_chat_render(llama, &opts, &bad, 1, &text, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "role"));
    nx_chat_kind_t kind;
    assert_true(nx_chat_kind_parse("llama3", &kind) && kind == NX_CHAT_LLAMA3);
    assert_false(nx_chat_kind_parse("jinja", &kind));
    assert_string_equal(nx_chat_kind_name(NX_CHAT_CHATML), "chatml");
    int32_t stop[1];
    assert_int_equal(nx_chat_stop_ids(llama, NX_CHAT_AUTO, stop, 1), 1); /* respects cap */
    assert_int_equal(stop[0], nx_tokenizer_token_id(llama, "<|eot_id|>"));
    nx_tokenizer_destroy(&qwen);
    nx_tokenizer_destroy(&llama);
}

/* An unknown template kind is refused without leaking the prompt buffer it had begun (found
 * by tests/fuzz_chat_template.c; LeakSanitizer there, glibc's count of bytes in use here). */
static void test_chat_unknown_kind_frees(void **state)
{
    nx_tokenizer_t *qwen = load(QWEN2_DIR);
    nx_chat_msg_t msg = {"user", "hi"};
    nx_chat_opts_t opts = {.kind = (nx_chat_kind_t)4, .thinking = -1};
    char *text = NULL;
    nx_err_t err = {0};
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(nx_chat_render(qwen, &opts, &msg, 1, &text, &err), NX_EINVAL);
        assert_null(text);
    }
    assert_int_equal(mallinfo2().uordblks, in_use);
    assert_non_null(strstr(err.msg, "kind 4 is unknown"));
    nx_tokenizer_destroy(&qwen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_emoji_and_cjk_byte_by_byte),
        cmocka_unit_test(test_stream_invalid_bytes_and_flush),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_encode_edges_and_errors),
        cmocka_unit_test(test_chat_options),
        cmocka_unit_test(test_chat_unknown_kind_frees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
