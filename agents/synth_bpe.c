/* synth_bpe.c — a small byte-level BPE trainer over a built-in corpus, for synthesized models.
 *
 * The corpus is pre-split roughly as the GPT-2 style regex of Qwen2/3 and Llama 3 does (letters
 * with one leading non-letter, digit groups, punctuation runs, whitespace runs), each piece is
 * a sequence of byte symbols, and the most frequent adjacent pair is merged until the wanted
 * number of merges is reached or no pair occurs twice. Ties go to the lowest pair of ids, so
 * the result is deterministic. Sizes are tiny (a few KB, a few hundred merges): plain loops.
 */
#include "synth_bpe.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* English prose, some C and Python, numbers and dates, a few non-ASCII words. */
static const char corpus[] =
    "The quick brown fox jumps over the lazy dog. A loader reads the checkpoint from disk, "
    "copies each tensor into the shared pool and tells the scheduler when the model is ready.\n"
    "When many agents share one device, the models that are in use stay resident, and the "
    "cold ones are swapped in from memory or from the disk in well under two seconds.\n"
    "It's a small world; they're sure we'll see what you've done, and I'm told she'd agree.\n"
    "Weather report for Monday, 12 March 2024: sunny in the morning, 17 degrees at noon, "
    "rain after 18:30 with winds of 25 km/h. Tuesday will be colder (about 9 degrees).\n"
    "Question: what is 1234 + 5678? Answer: 6912. And 3.14159 * 2 = 6.28318, roughly.\n"
    "The meeting moved from room 101 to room 202; please bring the notes, the slides and "
    "the printed agenda. Thank you for your patience and for the help you gave us.\n"
    "Once upon a time there was a little robot who wanted to learn how to write poems. "
    "Every night it read the stars, counted the words, and wrote them down in a notebook.\n"
    "In the beginning the engineers wrote the tests first, then the code, and then the "
    "documentation; the order mattered less than the habit of finishing each piece.\n"
    "int main(int argc, char **argv)\n{\n    for (int i = 0; i < argc; i++) {\n"
    "        printf(\"%d: %s\\n\", i, argv[i]);\n    }\n    return 0;\n}\n"
    "static size_t count_tokens(const char *text, size_t length)\n{\n"
    "    size_t count = 0;\n    while (length > 0 && *text != '\\0') {\n"
    "        count += is_space(*text) ? 0 : 1;\n        text++;\n        length--;\n"
    "    }\n    return count;\n}\n"
    "def load_model(path, device=\"cuda\"):\n    with open(path, \"rb\") as f:\n"
    "        header = json.loads(f.read(8))\n    return Model(header, device=device)\n\n"
    "for name, tensor in model.items():\n    print(f\"{name}: {tensor.shape} {tensor.dtype}\")\n"
    "if (result != NX_OK) { goto out_free; }\n"
    "{\"name\": \"assistant\", \"model\": \"qwen3-0.6b\", \"temperature\": 0.7, \"max_tokens\": 512}\n"
    "<html><body><p>Hello, world!</p></body></html>\n"
    "SELECT id, name, created_at FROM tasks WHERE state = 'done' ORDER BY id DESC LIMIT 10;\n"
    "Prices: $19.99, $5.00, 250 EUR, 1,000,000 users, 99.9% uptime, version 2.14.1.\n"
    "Phone: +1 (555) 010-2048. Date: 2025-01-31T08:15:00Z. Hex: 0xDEADBEEF, 0x7f.\n"
    "Café au lait, crème brûlée and a naïve façade: the French words keep their accents.\n"
    "Über die Straße gehen wir schön langsam, sagte der Müller zu seiner Frau.\n"
    "Привет, как дела? Всё хорошо, спасибо. Москва и Санкт-Петербург.\n"
    "日本語の文章も少し入れておきます。東京は今日も晴れです。\n"
    "中文的句子也有一点：你好，世界！我们一起学习。\n"
    "Ελληνικά: καλημέρα κόσμε. Español: ¿dónde está la biblioteca? Mañana, señor.\n"
    "The user asked the assistant to summarize the report, and the assistant answered in "
    "three short sentences. Then the user asked again, and the answer was the same.\n"
    "Models are defined in YAML, bound to an agent, and loaded on demand. The runtime keeps "
    "every task, every conversation and every residency event in a small database.\n"
    "Numbers again: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 32 64 128 256 512 1024 2048 "
    "4096 8192 16384 32768 65536 131072; pi is 3.14, e is 2.718, and 42 is the answer.\n"
    "The the the and and of of to to in in is is that that it it for for on on with with "
    "as as was was be be by by this this are are or or from from at at an an but but not.\n"
    "Reading, writing, loading, saving, counting, merging, training, testing, running, "
    "thinking, learning, sharing, swapping, waiting, starting, stopping, finishing.\n"
    "    indented line with spaces\n\ttabbed line\n\n\nthree newlines above; trailing space \n"
    "return self.weights[name].to(device, non_blocking=True)  # copy on the side stream\n"
    "assert len(tokens) == 42, \"expected 42 tokens\"\n"
    "x = [1, 2, 3]; y = {\"a\": 1, \"b\": 2}; z = (x, y); print(x[0] + y[\"a\"])\n"
    "The garden behind the old house was full of roses, tomatoes and tall green beans. "
    "Every summer the children picked the ripe fruit and carried it inside in baskets.\n"
    "Scientists measured the temperature of the water every hour for seven days, and the "
    "results showed a slow, steady rise that nobody had expected at the start.\n"
    "She opened the window, looked at the mountains, and decided that the weekend would be "
    "spent walking, reading and cooking something simple for her friends.\n"
    "Good software is written twice: once to understand the problem, and once to solve it "
    "well. The second version is usually shorter, faster and easier to test.\n"
    "Please remember to close the door, turn off the lights and feed the cat before you "
    "leave; the train departs at 07:45 and the next one is not until 09:10.\n"
    "The history of computing is a story of people who wanted machines to remember, to "
    "calculate and to communicate, and who kept building better tools for each task.\n"
    "while (queue_pop(&queue, &item) == 0) {\n    process(item);\n    free(item);\n}\n"
    "class Tokenizer:\n    def __init__(self, vocab, merges):\n        self.vocab = vocab\n"
    "        self.merges = {pair: rank for rank, pair in enumerate(merges)}\n";

#define MAX_SYMBOLS (256 + NX__BPE_MAX_MERGES)

typedef struct word {
    uint16_t *syms;
    uint32_t len;
    uint32_t count;
} word_t;

static bool is_letter(unsigned char c)
{
    /* Every non-ASCII byte counts as a letter: the corpus's non-ASCII text is words. */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_nl(unsigned char c) { return c == '\n' || c == '\r'; }
static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static bool is_punct(unsigned char c) { return !is_space(c) && !is_letter(c) && !is_digit(c); }

static size_t run(const unsigned char *s, size_t n, size_t i, bool (*pred)(unsigned char))
{
    size_t j = i;
    while (j < n && pred(s[j]))
        j++;
    return j - i;
}

static size_t contraction_len(const unsigned char *s, size_t n, size_t i)
{
    static const char *const tails[] = {"re", "ve", "ll", "s", "t", "m", "d"};
    for (size_t k = 0; k < sizeof tails / sizeof tails[0]; k++) {
        size_t len = strlen(tails[k]);
        if (i + 1 + len <= n && strncasecmp((const char *)s + i + 1, tails[k], len) == 0)
            return 1 + len;
    }
    return 0;
}

/* Length of the pre-tokenizer piece that starts at s[i] (always >= 1). */
static size_t piece_len(const unsigned char *s, size_t n, size_t i, uint32_t max_digits)
{
    unsigned char c = s[i];
    size_t len;
    if (c == '\'' && (len = contraction_len(s, n, i)) > 0)
        return len;
    if (is_letter(c))
        return run(s, n, i, is_letter);
    if (!is_nl(c) && !is_digit(c) && i + 1 < n && is_letter(s[i + 1]))
        return 1 + run(s, n, i + 1, is_letter);
    if (is_digit(c)) {
        len = run(s, n, i, is_digit);
        return len < max_digits ? len : max_digits;
    }
    size_t start = (c == ' ' && i + 1 < n && is_punct(s[i + 1])) ? i + 1 : i;
    if (is_punct(s[start])) {
        size_t end = start + run(s, n, start, is_punct);
        return end + run(s, n, end, is_nl) - i;
    }
    size_t ws = run(s, n, i, is_space);
    for (size_t k = ws; k > 0; k--)
        if (is_nl(s[i + k - 1]))
            return k;
    return (i + ws < n && ws > 1) ? ws - 1 : ws;
}

static int cmp_piece(const void *a, const void *b)
{
    const word_t *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    for (uint32_t i = 0; i < n; i++)
        if (x->syms[i] != y->syms[i])
            return x->syms[i] < y->syms[i] ? -1 : 1;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Split the corpus into unique pieces with counts; *words_out is an array the caller frees
 * (word_t.syms point into *storage_out, also freed by the caller). */
static int split_corpus(uint32_t max_digits, word_t **words_out, size_t *count_out,
                        uint16_t **storage_out)
{
    const unsigned char *s = (const unsigned char *)corpus;
    size_t n = sizeof corpus - 1, pieces = 0;
    uint16_t *storage = malloc(n * sizeof *storage);
    word_t *words = malloc(n * sizeof *words);
    if (!storage || !words) {
        free(storage);
        free(words);
        return NX_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        storage[i] = s[i];
    for (size_t i = 0; i < n;) {
        size_t len = piece_len(s, n, i, max_digits);
        words[pieces++] = (word_t){storage + i, (uint32_t)len, 1};
        i += len;
    }
    qsort(words, pieces, sizeof *words, cmp_piece);
    size_t unique = 0;
    for (size_t i = 0; i < pieces; i++) {
        if (unique > 0 && cmp_piece(&words[unique - 1], &words[i]) == 0)
            words[unique - 1].count++;
        else
            words[unique++] = words[i];
    }
    *words_out = words;
    *count_out = unique;
    *storage_out = storage;
    return NX_OK;
}

static uint32_t find_token(const nx__bpe_t *bpe, const unsigned char *bytes, uint32_t len)
{
    for (uint32_t id = 0; id < bpe->token_count; id++)
        if (bpe->tokens[id].len == len && memcmp(bpe->tokens[id].bytes, bytes, len) == 0)
            return id;
    return UINT32_MAX;
}

/* The merged token for (a, b): an existing token with the same bytes, or a new one. */
static uint32_t merged_token(nx__bpe_t *bpe, uint32_t a, uint32_t b)
{
    nx__bpe_token_t *ta = &bpe->tokens[a], *tb = &bpe->tokens[b];
    unsigned char buf[NX__BPE_MAX_TOKEN_BYTES];
    uint32_t len = ta->len + tb->len;
    memcpy(buf, ta->bytes, ta->len);
    memcpy(buf + ta->len, tb->bytes, tb->len);
    uint32_t id = find_token(bpe, buf, len);
    if (id != UINT32_MAX)
        return id;
    id = bpe->token_count++;
    memcpy(bpe->tokens[id].bytes, buf, len);
    bpe->tokens[id].len = len;
    return id;
}

/* The most frequent pair (count >= 2, merged length within bounds); false when none. */
static bool best_pair(const nx__bpe_t *bpe, const word_t *words, size_t word_count,
                      uint32_t *counts, uint32_t *a_out, uint32_t *b_out)
{
    memset(counts, 0, sizeof(uint32_t) * MAX_SYMBOLS * MAX_SYMBOLS);
    for (size_t w = 0; w < word_count; w++)
        for (uint32_t i = 0; i + 1 < words[w].len; i++)
            counts[words[w].syms[i] * MAX_SYMBOLS + words[w].syms[i + 1]] += words[w].count;
    uint32_t best = 1;
    bool found = false;
    for (uint32_t a = 0; a < bpe->token_count; a++)
        for (uint32_t b = 0; b < bpe->token_count; b++) {
            uint32_t c = counts[a * MAX_SYMBOLS + b];
            if (c > best &&
                bpe->tokens[a].len + bpe->tokens[b].len <= NX__BPE_MAX_TOKEN_BYTES) {
                best = c;
                *a_out = a;
                *b_out = b;
                found = true;
            }
        }
    return found;
}

static void apply_merge(word_t *words, size_t word_count, uint32_t a, uint32_t b, uint32_t to)
{
    for (size_t w = 0; w < word_count; w++) {
        uint16_t *s = words[w].syms;
        uint32_t out = 0;
        for (uint32_t i = 0; i < words[w].len; i++) {
            if (i + 1 < words[w].len && s[i] == a && s[i + 1] == b) {
                s[out++] = (uint16_t)to;
                i++;
            } else {
                s[out++] = s[i];
            }
        }
        words[w].len = out;
    }
}

int nx__bpe_train(nx__bpe_t *bpe, uint32_t merges_wanted, uint32_t max_digits)
{
    if (merges_wanted > NX__BPE_MAX_MERGES)
        merges_wanted = NX__BPE_MAX_MERGES;
    memset(bpe, 0, sizeof *bpe);
    for (uint32_t byte = 0; byte < 256; byte++) {
        bpe->tokens[byte].bytes[0] = (unsigned char)byte;
        bpe->tokens[byte].len = 1;
    }
    bpe->token_count = 256;

    word_t *words = NULL;
    uint16_t *storage = NULL;
    size_t word_count = 0;
    uint32_t *counts = malloc(sizeof(uint32_t) * MAX_SYMBOLS * MAX_SYMBOLS);
    int rc = counts ? split_corpus(max_digits, &words, &word_count, &storage) : NX_ENOMEM;
    if (rc != NX_OK)
        goto out;
    uint32_t a, b;
    while (bpe->merge_count < merges_wanted &&
           best_pair(bpe, words, word_count, counts, &a, &b)) {
        uint32_t to = merged_token(bpe, a, b);
        bpe->merges[bpe->merge_count++] = (nx__bpe_merge_t){a, b, to};
        apply_merge(words, word_count, a, b, to);
    }
out:
    free(counts);
    free(words);
    free(storage);
    return rc;
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest (control
 * characters, space, a few Latin-1 gaps) map to code points 256, 257, ... in byte order. */
static uint32_t byte_codepoint(unsigned char byte)
{
    if ((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174)
        return byte;
    uint32_t shifted = 0;
    for (uint32_t b = 0; b < byte; b++)
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174))
            shifted++;
    return 256 + shifted;
}

size_t nx__bpe_symbol(const nx__bpe_token_t *token, char *out, size_t cap)
{
    size_t len = 0;
    for (uint32_t i = 0; i < token->len; i++) {
        uint32_t cp = byte_codepoint(token->bytes[i]);
        char enc[2];
        size_t enc_len = 1;
        if (cp < 0x80) {
            enc[0] = (char)cp;
        } else { /* every mapped code point is below 0x800: two UTF-8 bytes */
            enc[0] = (char)(0xC0 | (cp >> 6));
            enc[1] = (char)(0x80 | (cp & 0x3F));
            enc_len = 2;
        }
        if (len + enc_len < cap)
            memcpy(out + len, enc, enc_len);
        len += enc_len;
    }
    if (cap > 0)
        out[len < cap ? len : cap - 1] = '\0';
    return len;
}
