/* gram_vocab.c — vocabularies as token tries: every normal token in a depth-first trie, the
 * tries of the tokens outside the plain-text and word slices, and the masks of those slices
 * (see gram_mask.c for how masks walk them). Built once per tokenizer.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"
#include "gram_vocab.h"

static int cmp_tok(const void *a, const void *b, void *ctx)
{
    const nx_gram_vocab_t *v = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint32_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
    int c = memcmp(v->bytes + v->off[x], v->bytes + v->off[y], lx < ly ? lx : ly);
    if (c)
        return c;
    return lx != ly ? (lx < ly ? -1 : 1) : (x < y ? -1 : x > y);
}

void nx_gram_vocab_destroy(nx_gram_vocab_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_gram_vocab_t *v = *self_p;
    free(v->bytes);
    free(v->off);
    free(v->kind);
    free(v->eos);
    trie_t *tries[3] = {&v->all, &v->rest, &v->nonword};
    for (int i = 0; i < 3; i++) {
        free(tries[i]->t_byte);
        free(tries[i]->t_depth);
        free(tries[i]->t_tok);
        free(tries[i]->t_end);
    }
    free(v->plain);
    free(v->plain_chars);
    free(v->plain_upto);
    free(v->word);
    free(v->word_ids);
    free(v->long_ids);
    free(v->same_next);
    nx__vocab_classes_free(v->classes);
    free(v);
    *self_p = NULL;
}

uint32_t nx_gram_vocab_size(const nx_gram_vocab_t *self)
{
    return self->size;
}

size_t nx_gram_mask_words(const nx_gram_vocab_t *self)
{
    return ((size_t)self->size + 31) / 32;
}

/* The trie of the normal tokens, or (skip: a token bitmask) of those not in skip; the
 * same-bytes chains are built with the first trie only. */
static int build_trie(nx_gram_vocab_t *v, trie_t *tr, const uint32_t *skip)
{
    uint32_t *order = malloc((v->size ? v->size : 1) * sizeof *order), n = 0;
    size_t total = 0;
    if (!order)
        return NX_ENOMEM;
    for (uint32_t id = 0; id < v->size; id++)
        if (v->kind[id] == TOK_NORMAL && !(skip && (skip[id >> 5] >> (id & 31) & 1))) {
            order[n++] = id;
            total += v->off[id + 1] - v->off[id];
        }
    qsort_r(order, n, sizeof *order, cmp_tok, v);
    tr->t_byte = malloc(total + 1);
    tr->t_depth = malloc((total + 1) * sizeof *tr->t_depth);
    tr->t_tok = malloc((total + 1) * sizeof *tr->t_tok);
    tr->t_end = malloc((total + 1) * sizeof *tr->t_end);
    uint32_t *path = malloc(((size_t)v->max_len + 1) * sizeof *path); /* node at each depth */
    if (!tr->t_byte || !tr->t_depth || !tr->t_tok || !tr->t_end || !path) {
        free(order);
        free(path);
        return NX_ENOMEM;
    }
    uint32_t depth = 0, prev = UINT32_MAX, nodes = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t id = order[k], len = v->off[id + 1] - v->off[id];
        const char *s = v->bytes + v->off[id];
        uint32_t lcp = 0;
        if (prev != UINT32_MAX) {
            uint32_t plen = v->off[prev + 1] - v->off[prev];
            const char *ps = v->bytes + v->off[prev];
            while (lcp < len && lcp < plen && ps[lcp] == s[lcp])
                lcp++;
        }
        while (depth > lcp) /* close the nodes the new token does not share */
            tr->t_end[path[--depth]] = nodes;
        if (lcp == len && prev != UINT32_MAX) { /* same bytes as the previous token */
            if (skip) { /* chained already */
                prev = id;
                continue;
            }
            uint32_t last = path[len - 1];
            int32_t *p = &tr->t_tok[last];
            while (*p >= 0)
                p = &v->same_next[*p];
            *p = (int32_t)id;
        }
        for (uint32_t d = lcp; d < len; d++) {
            tr->t_byte[nodes] = (uint8_t)s[d];
            tr->t_depth[nodes] = (uint16_t)(d + 1);
            tr->t_tok[nodes] = d + 1 == len ? (int32_t)id : -1;
            path[depth++] = nodes++;
        }
        prev = id;
    }
    while (depth > 0)
        tr->t_end[path[--depth]] = nodes;
    tr->n_nodes = nodes;
    free(order);
    free(path);
    return NX_OK;
}

/* Plain text: whole UTF-8 characters, none of them a control, '"' or '\\' — the bytes a
 * JSON string's body holds raw. A DFA state that every such character leads back to (the
 * inside of a free string) allows all of them at once: the "slice" of llguidance. */
static bool plain_text(const char *s, uint32_t len, uint32_t *chars)
{
    const unsigned char *p = (const unsigned char *)s;
    *chars = 0;
    for (uint32_t i = 0; i < len; ++*chars) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (c < 0x20 || c == '"' || c == '\\')
                return false;
            i++;
            continue;
        }
        uint32_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!n || i + n > len)
            return false;
        uint32_t cp = c & (0xFF >> (n + 1));
        for (uint32_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

static int cmp_len_desc(const void *a, const void *b, void *ctx)
{
    const nx_gram_vocab_t *v = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint32_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
    return (ly > lx) - (ly < lx);
}

static int cmp_chars_desc(const void *a, const void *b, void *ctx)
{
    const uint8_t *chars = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return chars[y] - chars[x];
}

/* plain_upto and long_ids (see struct nx_gram_vocab): the sure plain tokens of a bounded
 * string without a pass over the whole vocabulary per cold mask. */
static bool bounded_slices(nx_gram_vocab_t *v)
{
    size_t words = nx_gram_mask_words(v);
    v->plain_upto = calloc(SHORT_CHARS * words, sizeof *v->plain_upto);
    v->long_ids = malloc((v->size ? v->size : 1) * sizeof *v->long_ids);
    if (!v->plain_upto || !v->long_ids)
        return false;
    for (uint32_t id = 0; id < v->size; id++) {
        uint32_t chars = v->plain_chars[id];
        if (chars > SHORT_CHARS)
            v->long_ids[v->n_long++] = id;
        else if (chars)
            v->plain_upto[(chars - 1) * words + (id >> 5)] |= 1u << (id & 31);
    }
    for (uint32_t r = 1; r < SHORT_CHARS; r++)
        for (size_t w = 0; w < words; w++)
            v->plain_upto[r * words + w] |= v->plain_upto[(r - 1) * words + w];
    qsort_r(v->long_ids, v->n_long, sizeof *v->long_ids, cmp_chars_desc, v->plain_chars);
    return true;
}

nx_gram_vocab_t *nx_gram_vocab_new(const char *const *bytes, const uint32_t *lens,
                                   const bool *special, uint32_t vocab_size,
                                   const int32_t *eos_ids, size_t eos_count, nx_err_t *err)
{
    static _Atomic uint64_t serials;
    nx_gram_vocab_t *v = calloc(1, sizeof *v);
    if (!v)
        goto oom;
    v->serial = ++serials;
    v->size = vocab_size;
    v->off = malloc(((size_t)vocab_size + 1) * sizeof *v->off);
    v->kind = calloc(vocab_size ? vocab_size : 1, 1);
    v->same_next = malloc((vocab_size ? vocab_size : 1) * sizeof *v->same_next);
    v->eos = malloc((eos_count ? eos_count : 1) * sizeof *v->eos);
    if (!v->off || !v->kind || !v->same_next || !v->eos)
        goto oom;
    size_t total = 0;
    for (uint32_t id = 0; id < vocab_size; id++) {
        bool never = !bytes[id] || lens[id] == 0 || lens[id] > MAX_TOKEN_BYTES ||
                     (special && special[id]);
        v->kind[id] = never ? TOK_NEVER : TOK_NORMAL;
        total += never ? 0 : lens[id];
        v->same_next[id] = -1;
    }
    v->bytes = malloc(total + 1);
    if (!v->bytes)
        goto oom;
    size_t pos = 0;
    for (uint32_t id = 0; id < vocab_size; id++) {
        v->off[id] = (uint32_t)pos;
        if (v->kind[id] == TOK_NORMAL) {
            memcpy(v->bytes + pos, bytes[id], lens[id]);
            pos += lens[id];
            if (lens[id] > v->max_len)
                v->max_len = lens[id];
        }
    }
    v->off[vocab_size] = (uint32_t)pos;
    for (size_t i = 0; i < eos_count; i++) {
        if (eos_ids[i] < 0 || (uint32_t)eos_ids[i] >= vocab_size) {
            nx_err_set(err, NX_EINVAL, "end id %d outside the vocabulary of %u", eos_ids[i],
                       vocab_size);
            nx_gram_vocab_destroy(&v);
            return NULL;
        }
        v->kind[eos_ids[i]] = TOK_EOS;
        v->eos[v->n_eos++] = eos_ids[i];
    }
    v->plain = calloc(nx_gram_mask_words(v), sizeof *v->plain);
    v->plain_chars = calloc(vocab_size ? vocab_size : 1, 1);
    if (!v->plain || !v->plain_chars || build_trie(v, &v->all, NULL) != NX_OK)
        goto oom;
    for (uint32_t id = 0; id < vocab_size; id++) {
        uint32_t chars;
        if (v->kind[id] == TOK_NORMAL && plain_text(v->bytes + v->off[id],
                                                   v->off[id + 1] - v->off[id], &chars)) {
            v->plain[id >> 5] |= 1u << (id & 31);
            v->plain_chars[id] = (uint8_t)(chars < 255 ? chars : 255);
        }
    }
    v->word = calloc(nx_gram_mask_words(v), sizeof *v->word);
    if (!v->word)
        goto oom;
    for (uint32_t id = 0; id < vocab_size; id++) {
        const char *b = v->bytes + v->off[id];
        uint32_t len = v->off[id + 1] - v->off[id], k = 0;
        while (k < len && ((b[k] >= 'a' && b[k] <= 'z') || (b[k] >= 'A' && b[k] <= 'Z') ||
                           (b[k] >= '0' && b[k] <= '9')))
            k++;
        if (v->kind[id] == TOK_NORMAL && len && k == len)
            v->word[id >> 5] |= 1u << (id & 31);
    }
    v->word_ids = malloc((vocab_size ? vocab_size : 1) * sizeof *v->word_ids);
    if (!v->word_ids)
        goto oom;
    for (uint32_t id = 0; id < vocab_size; id++)
        if (v->word[id >> 5] >> (id & 31) & 1)
            v->word_ids[v->n_word_ids++] = id;
    qsort_r(v->word_ids, v->n_word_ids, sizeof *v->word_ids, cmp_len_desc, v);
    if (build_trie(v, &v->rest, v->plain) != NX_OK || !bounded_slices(v) ||
        build_trie(v, &v->nonword, v->word) != NX_OK)
        goto oom;
    v->classes = nx__vocab_classes_new(); /* NULL: classes stay per grammar */
    return v;
oom:
    nx_err_set(err, NX_ENOMEM, "out of memory building a token trie");
    nx_gram_vocab_destroy(&v);
    return NULL;
}
