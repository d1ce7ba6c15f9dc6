/* tok_bpe.c — the byte-level BPE core: GPT-2's byte-to-unicode table, the two hash maps
 * (token bytes -> id, id pair -> merge rank), UTF-8 checks, and merging one pre-token by
 * rank the way Hugging Face tokenizers does (lowest rank first, leftmost on ties).
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ------------------------------------------------------------------------------------------
 * GPT-2 byte-to-unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * are numbered from U+0100 upwards in byte order.
 */
static bool byte_is_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

uint32_t nx__byte_to_cp(unsigned char b)
{
    if (byte_is_printable(b))
        return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        n += !byte_is_printable(i);
    return 256 + n;
}

int nx__cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t n = 0;
    for (unsigned b = 0; b < 256; b++) {
        if (!byte_is_printable(b) && 256 + n++ == cp)
            return (int)b;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * Hash maps
 */
uint64_t nx__hash_bytes(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

static size_t pow2_at_least(size_t n)
{
    size_t cap = 16;
    while (cap < n)
        cap <<= 1;
    return cap;
}

int nx__strmap_init(nx__strmap_t *m, size_t expected)
{
    m->cap = pow2_at_least(expected * 2 + 1);
    m->count = 0;
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots ? NX_OK : NX_ENOMEM;
}

void nx__strmap_free(nx__strmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
}

bool nx__strmap_put(nx__strmap_t *m, const nx__token_t *tokens, int32_t id)
{
    const nx__token_t *t = &tokens[id];
    size_t mask = m->cap - 1, i = nx__hash_bytes(t->bytes, t->len) & mask;
    for (; m->slots[i]; i = (i + 1) & mask) {
        const nx__token_t *o = &tokens[m->slots[i] - 1];
        if (o->len == t->len && memcmp(o->bytes, t->bytes, t->len) == 0)
            return false;
    }
    m->slots[i] = (uint32_t)id + 1;
    m->count++;
    return true;
}

int32_t nx__strmap_get(const nx__strmap_t *m, const nx__token_t *tokens, const char *key,
                       size_t len)
{
    size_t mask = m->cap - 1, i = nx__hash_bytes(key, len) & mask;
    for (; m->slots[i]; i = (i + 1) & mask) {
        const nx__token_t *o = &tokens[m->slots[i] - 1];
        if (o->len == len && memcmp(o->bytes, key, len) == 0)
            return (int32_t)(m->slots[i] - 1);
    }
    return -1;
}

int nx__pairmap_init(nx__pairmap_t *m, size_t expected)
{
    m->cap = pow2_at_least(expected * 2 + 1);
    m->count = 0;
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots ? NX_OK : NX_ENOMEM;
}

void nx__pairmap_free(nx__pairmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

static size_t pair_slot(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & mask;
}

void nx__pairmap_put(nx__pairmap_t *m, int32_t left, int32_t right, uint32_t rank,
                     int32_t merged)
{
    uint64_t key = pair_key(left, right);
    size_t mask = m->cap - 1, i = pair_slot(key, mask);
    for (; m->slots[i].key; i = (i + 1) & mask) {
        if (m->slots[i].key == key)
            return;
    }
    m->slots[i] = (nx__pairmap_slot_t){.key = key, .rank = rank, .merged = merged};
    m->count++;
}

const nx__pairmap_slot_t *nx__pairmap_get(const nx__pairmap_t *m, int32_t left, int32_t right)
{
    uint64_t key = pair_key(left, right);
    size_t mask = m->cap - 1, i = pair_slot(key, mask);
    for (; m->slots[i].key; i = (i + 1) & mask) {
        if (m->slots[i].key == key)
            return &m->slots[i];
    }
    return NULL;
}

int nx__ids_push(nx__ids_t *v, int32_t id)
{
    if (v->count == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *ids = realloc(v->ids, cap * sizeof *ids);
        if (!ids)
            return NX_ENOMEM;
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->count++] = id;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * UTF-8
 */
int nx__utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return -1;
    for (size_t i = 1; i < n; i++) {
        if (i >= len)
            return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return -1;
    }
    return (int)n;
}

size_t nx__utf8_valid_prefix(const unsigned char *s, size_t len, bool *bad_out)
{
    size_t i = 0;
    if (bad_out)
        *bad_out = false;
    while (i < len) {
        int n = nx__utf8_seq(s + i, len - i);
        if (n <= 0) {
            if (bad_out)
                *bad_out = n < 0;
            break;
        }
        i += (size_t)n;
    }
    return i;
}

/* ------------------------------------------------------------------------------------------
 * Merging one pre-token. Symbols form a linked list over the word's bytes; a binary heap of
 * candidate merges ordered by (rank, position) gives O(n log n). Stale heap entries (a side
 * already merged away) are recognised on pop and skipped.
 */
typedef struct cand {
    uint32_t rank;
    uint32_t pos;
} cand_t;

static bool cand_less(cand_t a, cand_t b)
{
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void heap_push(cand_t *heap, size_t *n, cand_t c)
{
    size_t i = (*n)++;
    while (i > 0 && cand_less(c, heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = c;
}

static cand_t heap_pop(cand_t *heap, size_t *n)
{
    cand_t top = heap[0], last = heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n)
            break;
        if (child + 1 < *n && cand_less(heap[child + 1], heap[child]))
            child++;
        if (!cand_less(heap[child], last))
            break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = last;
    return top;
}

typedef struct word {
    int32_t *id;
    int32_t *prev, *next; /* -1 at the ends */
    cand_t *heap;
    size_t heap_len;
} word_t;

static void push_pair(const nx_tokenizer_t *tok, word_t *w, int32_t pos)
{
    if (pos < 0 || w->next[pos] < 0)
        return;
    const nx__pairmap_slot_t *m = nx__pairmap_get(&tok->merges, w->id[pos], w->id[w->next[pos]]);
    if (m)
        heap_push(w->heap, &w->heap_len, (cand_t){m->rank, (uint32_t)pos});
}

static void merge_all(const nx_tokenizer_t *tok, word_t *w, int32_t first)
{
    for (int32_t p = first; p >= 0; p = w->next[p])
        push_pair(tok, w, p);
    while (w->heap_len) {
        cand_t c = heap_pop(w->heap, &w->heap_len);
        int32_t pos = (int32_t)c.pos, right = w->next[pos];
        if (w->id[pos] < 0 || right < 0)
            continue; /* merged away, or now last */
        const nx__pairmap_slot_t *m = nx__pairmap_get(&tok->merges, w->id[pos], w->id[right]);
        if (!m || m->rank != c.rank)
            continue; /* a side changed since this candidate was pushed */
        w->id[pos] = m->merged;
        w->id[right] = -1;
        w->next[pos] = w->next[right];
        if (w->next[pos] >= 0)
            w->prev[w->next[pos]] = pos;
        push_pair(tok, w, w->prev[pos]);
        push_pair(tok, w, pos);
    }
}

int nx__bpe_word(const nx_tokenizer_t *tok, const unsigned char *bytes, size_t len,
                 nx__ids_t *out)
{
    if (len == 0)
        return NX_OK;
    if (tok->ignore_merges || len == 1) {
        int32_t whole = nx__strmap_get(&tok->vocab, tok->tokens, (const char *)bytes, len);
        if (whole >= 0)
            return nx__ids_push(out, whole);
    }
    enum { SMALL = 128 };
    int32_t small_ints[3 * SMALL];
    cand_t small_heap[3 * SMALL];
    int32_t *ints = small_ints;
    cand_t *heap = small_heap;
    if (len > SMALL) {
        ints = malloc(3 * len * sizeof *ints);
        heap = malloc(3 * len * sizeof *heap);
        if (!ints || !heap) {
            free(ints), free(heap);
            return NX_ENOMEM;
        }
    }
    word_t w = {.id = ints, .prev = ints + len, .next = ints + 2 * len, .heap = heap};
    int32_t first = -1, last = -1;
    for (size_t i = 0; i < len; i++) { /* a byte with no token is dropped, as HF does */
        w.id[i] = tok->byte_id[bytes[i]];
        w.prev[i] = w.next[i] = -1;
        if (w.id[i] < 0)
            continue;
        if (last >= 0)
            w.next[last] = (int32_t)i, w.prev[i] = last;
        else
            first = (int32_t)i;
        last = (int32_t)i;
    }
    if (first >= 0)
        merge_all(tok, &w, first);
    int rc = NX_OK;
    for (int32_t p = first; p >= 0 && rc == NX_OK; p = w.next[p])
        rc = nx__ids_push(out, w.id[p]);
    if (ints != small_ints)
        free(ints), free(heap);
    return rc;
}
