/* generate.c — generation on one sequence: the prompt in one step (prefill), then one token
 * per step until a stop id, a stop string, max_tokens or the end of the context, with the text
 * streamed in whole characters. This is what `nexusctl run` drives; the orchestrator drives
 * the step API itself, through the same per-sequence state (nx_gen_t).
 *
 * Stop ids end generation and are neither in the ids nor the text. A stop string ends it too;
 * the text up to it is emitted, the stop string and anything after it are not. To never emit
 * the beginning of a stop string that later completes, the tail of the text that is a prefix
 * of some stop string is held back until it is decided.
 *
 * Under a grammar the engine's pick (nx_gen_pick_next) defers the mask: the step asks for it
 * once the forward pass is issued (nx__seq_defer_mask), so on a GPU the matcher's work hides
 * behind the layers. NEXUS_GRAMMAR_MASK=eager (read by nx_gen_new) computes it before the step
 * as the host pick (nx_gen_advance) always does: the same picks, to compare and to measure.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gen_grammar.h"
#include "pick.h"

#define NX__FORCED_MAX 32 /* forced tokens appended after one pick, at most */

struct nx_gen {
    const nx_sampling_t *sampling;
    const nx_tokenizer_t *tok;
    uint32_t vocab;
    nx_emit_fn emit;
    void *user;
    nx_sampler_t *sampler;
    nx_detok_t detok;
    char *piece;           /* one decoded piece (piece_cap bytes) */
    size_t piece_cap;
    int32_t *stop_ids;     /* copied; stop_id_count of them */
    size_t stop_id_count;
    int32_t *history;      /* prompt then generated ids (the repetition penalty's input) */
    size_t history_len, history_cap;
    size_t prompt_len;
    size_t generated;
    char *text;            /* generated text so far, NUL-terminated */
    size_t text_len, text_cap;
    size_t emitted;        /* bytes of text already handed to emit */
    size_t stop_max_len;   /* longest stop string */
    const char *stop_reason;
    nx__gg_t *grammar;     /* nx_gen_set_grammar; NULL: unconstrained */
    bool picked;           /* a pick was asked for (the grammar must come before) */
    int32_t feed[1 + NX__FORCED_MAX]; /* what to feed next: the picked id, forced ids */
    size_t feed_count;
    int64_t room_after_step; /* tokens the sequence can still take after the step that
                              * picks; -1 unknown (host logits): no forced runs */
    bool mask_eager;       /* NEXUS_GRAMMAR_MASK=eager: masks before the step, even for
                            * the engine's pick (nx_gen_pick_next) */
};

typedef struct nx_gen gen_state_t;

static int grow(void **buf, size_t *cap, size_t need, size_t elem, nx_err_t *err)
{
    if (need <= *cap)
        return NX_OK;
    size_t cap_new = *cap ? *cap : 64;
    while (cap_new < need)
        cap_new *= 2;
    void *p = realloc(*buf, cap_new * elem);
    if (!p)
        return nx_err_set(err, NX_ENOMEM, "generation: no memory for %zu items", cap_new);
    *buf = p;
    *cap = cap_new;
    return NX_OK;
}

static int push_id(gen_state_t *g, int32_t id, nx_err_t *err)
{
    int rc = grow((void **)&g->history, &g->history_cap, g->history_len + 1, sizeof(int32_t),
                  err);
    if (rc == NX_OK)
        g->history[g->history_len++] = id;
    return rc;
}

static int push_text(gen_state_t *g, const char *piece, size_t len, nx_err_t *err)
{
    int rc = grow((void **)&g->text, &g->text_cap, g->text_len + len + 1, 1, err);
    if (rc != NX_OK)
        return rc;
    memcpy(g->text + g->text_len, piece, len);
    g->text_len += len;
    g->text[g->text_len] = '\0';
    return NX_OK;
}

/* Earliest occurrence of any stop string that ends in the text added since `from`;
 * -1 when none. */
static long find_stop(const gen_state_t *g, size_t from)
{
    const nx_sampling_t *s = g->sampling;
    size_t start = from > g->stop_max_len ? from - g->stop_max_len : 0;
    long best = -1;
    for (size_t i = 0; i < s->stop_count; i++) {
        const char *hit = memmem(g->text + start, g->text_len - start, s->stop[i],
                                 strlen(s->stop[i]));
        if (hit && (best < 0 || hit - g->text < best))
            best = hit - g->text;
    }
    return best;
}

/* Bytes at the end of the text that could still grow into a stop string. */
static size_t held_back(const gen_state_t *g)
{
    const nx_sampling_t *s = g->sampling;
    size_t hold = 0;
    for (size_t i = 0; i < s->stop_count; i++) {
        size_t stop_len = strlen(s->stop[i]);
        for (size_t k = stop_len - 1; k > hold; k--) {
            if (k <= g->text_len &&
                memcmp(g->text + g->text_len - k, s->stop[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

/* Hand text[emitted, upto) to emit; a non-zero answer stops generation ("emit"). */
static void emit_upto(gen_state_t *g, size_t upto)
{
    if (upto <= g->emitted)
        return;
    if (g->stop_reason && strcmp(g->stop_reason, "emit") == 0) { /* the caller said stop */
        g->emitted = upto;
        return;
    }
    if (g->emit && g->emit(g->user, g->text + g->emitted, upto - g->emitted) != 0 &&
        !g->stop_reason)
        g->stop_reason = "emit";
    g->emitted = upto;
}

/* Append a decoded piece, cut at a stop string, emit what is decided. */
static int add_piece(gen_state_t *g, const char *piece, size_t len, bool final, nx_err_t *err)
{
    size_t from = g->text_len;
    int rc = push_text(g, piece, len, err);
    if (rc != NX_OK)
        return rc;
    bool free_text = !g->grammar || nx__gg_free_text(g->grammar); /* stop strings: free text */
    long stop_at = g->sampling->stop_count && free_text ? find_stop(g, from) : -1;
    if (stop_at >= 0) {
        g->text_len = (size_t)stop_at;
        g->text[g->text_len] = '\0';
        emit_upto(g, g->text_len);
        g->stop_reason = "stop";
        return NX_OK;
    }
    emit_upto(g, final || !free_text ? g->text_len : g->text_len - held_back(g));
    return NX_OK;
}

static int prefill(nx_engine_t *engine, nx_seq_t *seq, nx_gen_t *g, const int32_t *prompt,
                   size_t prompt_len, nx_err_t *err)
{
    if (prompt_len == 0)
        return nx_err_set(err, NX_EINVAL, "generation needs a prompt of at least one token");
    int rc = nx_seq_feed(seq, prompt, prompt_len, err);
    if (rc == NX_OK)
        rc = nx_gen_pick_next(g, seq, err);
    if (rc != NX_OK)
        return rc;
    return nx_engine_step(engine, &seq, 1, err);
}

/* nx_detok_push wants 64 bytes more than the longest token. */
static size_t piece_capacity(const nx_tokenizer_t *tok)
{
    size_t longest = 0, len = 0;
    uint32_t vocab = nx_tokenizer_vocab_size(tok);
    for (uint32_t id = 0; id < vocab; id++)
        if (nx_tokenizer_token_bytes(tok, (int32_t)id, &len) && len > longest)
            longest = len;
    return longest + 64 + 16;
}

static bool is_stop_id(int32_t id, const int32_t *stop_ids, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (stop_ids[i] == id)
            return true;
    return false;
}

nx_gen_t *nx_gen_new(const nx_tokenizer_t *tok, uint32_t vocab, const nx_sampling_t *sampling,
                     const int32_t *prompt, size_t prompt_len, const int32_t *stop_ids,
                     size_t stop_id_count, nx_emit_fn emit, void *user, nx_err_t *err)
{
    nx_gen_t *g = calloc(1, sizeof *g);
    if (!g) {
        nx_err_set(err, NX_ENOMEM, "generation: no memory for its state");
        return NULL;
    }
    const char *mask_env = getenv("NEXUS_GRAMMAR_MASK");
    *g = (nx_gen_t){.sampling = sampling, .tok = tok, .vocab = vocab, .emit = emit,
                    .user = user, .prompt_len = prompt_len, .room_after_step = -1,
                    .mask_eager = mask_env && strcasecmp(mask_env, "eager") == 0};
    for (size_t i = 0; i < sampling->stop_count; i++)
        if (strlen(sampling->stop[i]) > g->stop_max_len)
            g->stop_max_len = strlen(sampling->stop[i]);
    g->sampler = nx_sampler_new(sampling, vocab, err);
    if (!g->sampler)
        goto fail;
    g->piece_cap = piece_capacity(tok);
    g->piece = malloc(g->piece_cap);
    g->stop_ids = malloc((stop_id_count ? stop_id_count : 1) * sizeof *g->stop_ids);
    if (!g->piece || !g->stop_ids) {
        nx_err_set(err, NX_ENOMEM, "generation: no memory for a text piece");
        goto fail;
    }
    if (stop_id_count)
        memcpy(g->stop_ids, stop_ids, stop_id_count * sizeof *stop_ids);
    g->stop_id_count = stop_id_count;
    if (push_text(g, "", 0, err) != NX_OK)
        goto fail;
    for (size_t i = 0; i < prompt_len; i++)
        if (push_id(g, prompt[i], err) != NX_OK)
            goto fail;
    nx_detok_init(&g->detok, tok, true);
    return g;
fail:
    nx_gen_destroy(&g);
    return NULL;
}

void nx_gen_destroy(nx_gen_t **self_p)
{
    nx_gen_t *g = self_p ? *self_p : NULL;
    if (!g)
        return;
    nx_sampler_destroy(&g->sampler);
    nx__gg_destroy(&g->grammar);
    free(g->piece);
    free(g->stop_ids);
    free(g->history);
    free(g->text);
    free(g);
    *self_p = NULL;
}

/* The stream ended (not at a stop string): nothing is held back any more. */
static int finish_stream(nx_gen_t *g, nx_err_t *err)
{
    if (strcmp(g->stop_reason, "stop") == 0)
        return NX_OK;
    size_t n = nx_detok_flush(&g->detok, g->piece, g->piece_cap);
    const char *reason = g->stop_reason;
    int rc = add_piece(g, g->piece, n, true, err);
    if (rc == NX_OK && strcmp(g->stop_reason, "stop") != 0)
        g->stop_reason = reason;
    return rc;
}

int nx_gen_set_grammar(nx_gen_t *g, const nx_gen_grammar_t *grammar, nx_err_t *err)
{
    if (g->picked || g->grammar)
        return nx_err_set(err, NX_ESTATE, "grammar: set it once, before the first pick");
    g->grammar = nx__gg_new(grammar, g->tok, g->vocab, g->stop_ids, g->stop_id_count, err);
    return g->grammar ? NX_OK : err ? err->code : NX_ENOMEM;
}

bool nx_gen_grammar_started(const nx_gen_t *g)
{
    return g->grammar && nx__gg_started(g->grammar);
}

bool nx_gen_grammar_accepted(const nx_gen_t *g)
{
    return g->grammar && nx__gg_accepted(g->grammar);
}

/* The sampler's mask for the next pick: the grammar's, or none; none yet when `deferred` (the
 * step's plan gets it from mask_now). */
static int prepare_pick(nx_gen_t *g, bool deferred, nx_err_t *err)
{
    if (g->stop_reason)
        return nx_err_set(err, NX_ESTATE, "generation already ended (%s)", g->stop_reason);
    g->picked = true;
    if (!g->grammar || deferred) {
        nx__sampler_set_allow(g->sampler, NULL, 0);
        return NX_OK;
    }
    const uint32_t *allow;
    uint32_t allow_bits;
    int rc = nx__gg_mask(g->grammar, &allow, &allow_bits, err);
    if (rc == NX_OK)
        nx__sampler_set_allow(g->sampler, allow, allow_bits);
    return rc;
}

int nx_gen_advance(nx_gen_t *g, const float *logits, bool room_left, int32_t *next_out,
                   nx_err_t *err)
{
    int rc = prepare_pick(g, false, err);
    if (rc != NX_OK)
        return rc;
    int32_t id = nx_sampler_pick(g->sampler, logits, g->history, g->history_len);
    return nx_gen_advance_id(g, id, room_left, next_out, err);
}

static int append_token(nx_gen_t *g, int32_t id, nx_err_t *err);

/* Before the first pick: the tokens the grammar forces at the start of the output (a strict
 * schema's '{"name":"...') go into the same step as the prompt. Never all of a grammar's
 * sentence: the output goes on with the pick that follows. */
static int feed_forced_start(nx_gen_t *g, nx_seq_t *seq, nx_err_t *err)
{
    int64_t room = (int64_t)nx_seq_capacity(seq) - nx_seq_len(seq) - nx_seq_queued(seq) - 1;
    int64_t left = (int64_t)g->sampling->max_tokens - 1; /* the pick after them */
    int64_t cap = room < left ? room : left;
    cap = cap < NX__FORCED_MAX ? cap : NX__FORCED_MAX;
    size_t count = 0;
    bool finished = false;
    int rc = cap > 0 ? nx__gg_forced(g->grammar, g->feed, (size_t)cap, false, &count,
                                     &finished, err)
                     : NX_OK;
    for (size_t i = 0; rc == NX_OK && i < count; i++)
        rc = append_token(g, g->feed[i], err);
    return rc == NX_OK && count ? nx_seq_feed(seq, g->feed, count, err) : rc;
}

/* The step's deferred mask (nx__mask_fn): the grammar's, computed now. */
static int mask_now(void *user, uint32_t *words, uint32_t word_count, uint32_t *allow_bits_out,
                    nx_err_t *err)
{
    nx_gen_t *g = user;
    return nx__gg_mask_into(g->grammar, words, word_count, allow_bits_out, err);
}

int nx_gen_pick_next(nx_gen_t *g, nx_seq_t *seq, nx_err_t *err)
{
    int rc = NX_OK;
    if (g->grammar && !g->picked && (rc = feed_forced_start(g, seq, err)) != NX_OK)
        return rc;
    bool deferred = g->grammar && !g->mask_eager;
    if ((rc = prepare_pick(g, deferred, err)) != NX_OK)
        return rc;
    g->room_after_step = (int64_t)nx_seq_capacity(seq) - nx_seq_len(seq) - nx_seq_queued(seq);
    rc = nx_seq_pick_next(seq, g->sampler, g->history, g->history_len, err);
    if (rc == NX_OK && deferred)
        nx__seq_defer_mask(seq, mask_now, g);
    return rc;
}

/* One token onto the output: ids, text (cut at a stop string), emitted pieces. */
static int append_token(nx_gen_t *g, int32_t id, nx_err_t *err)
{
    int rc = push_id(g, id, err);
    if (rc != NX_OK)
        return rc;
    g->generated++;
    size_t n = nx_detok_push(&g->detok, id, g->piece, g->piece_cap);
    return add_piece(g, g->piece, n, false, err);
}

/* After a picked token under a grammar: the tokens it forces next, appended as if picked.
 * Never more than max_tokens or the sequence's room allow. */
static int append_forced(nx_gen_t *g, bool *finished, nx_err_t *err)
{
    if (g->room_after_step < 0 || g->stop_reason || *finished)
        return NX_OK;
    int64_t room = g->room_after_step - 1; /* the picked id is fed too */
    int64_t left = (int64_t)g->sampling->max_tokens - (int64_t)g->generated;
    int64_t cap = room < left ? room : left;
    cap = cap < NX__FORCED_MAX ? cap : NX__FORCED_MAX;
    size_t count = 0;
    int rc = NX_OK;
    if (cap > 0)
        rc = nx__gg_forced(g->grammar, g->feed + 1, (size_t)cap, true, &count, finished, err);
    for (size_t i = 0; rc == NX_OK && i < count; i++)
        rc = append_token(g, g->feed[1 + i], err);
    g->feed_count += count;
    return rc;
}

size_t nx_gen_next_ids(const nx_gen_t *self, const int32_t **ids)
{
    *ids = self->feed;
    return self->stop_reason ? 0 : self->feed_count;
}

int nx_gen_advance_id(nx_gen_t *g, int32_t id, bool room_left, int32_t *next_out,
                      nx_err_t *err)
{
    if (g->stop_reason)
        return nx_err_set(err, NX_ESTATE, "generation already ended (%s)", g->stop_reason);
    if (id < 0 || (uint32_t)id >= g->vocab)
        return nx_err_set(err, NX_EINVAL, "generation: picked id %d is outside the vocabulary "
                          "of %u", id, g->vocab);
    *next_out = id;
    int rc;
    if (is_stop_id(id, g->stop_ids, g->stop_id_count)) {
        if (g->grammar && (rc = nx__gg_end(g->grammar, err)) != NX_OK)
            return rc;
        g->stop_reason = "eos";
        return finish_stream(g, err);
    }
    bool finished = false;
    if (g->grammar && (rc = nx__gg_observe(g->grammar, id, &finished, err)) != NX_OK)
        return rc;
    g->feed[0] = id;
    g->feed_count = 1;
    if ((rc = append_token(g, id, err)) != NX_OK)
        return rc;
    if (g->grammar && room_left && g->generated < g->sampling->max_tokens &&
        (rc = append_forced(g, &finished, err)) != NX_OK)
        return rc;
    if (!g->stop_reason && finished)
        g->stop_reason = "stop";
    if (!g->stop_reason && (g->generated >= g->sampling->max_tokens || !room_left))
        g->stop_reason = "length";
    return g->stop_reason ? finish_stream(g, err) : NX_OK;
}

const char *nx_gen_stop_reason(const nx_gen_t *self) { return self->stop_reason; }
const char *nx_gen_text(const nx_gen_t *self) { return self->text; }
size_t nx_gen_count(const nx_gen_t *self) { return self->generated; }
const int32_t *nx_gen_ids(const nx_gen_t *self) { return self->history + self->prompt_len; }

int nx_generate(nx_engine_t *engine, nx_seq_t *seq, const nx_tokenizer_t *tok,
                const int32_t *prompt, size_t prompt_len, const nx_sampling_t *sampling,
                const int32_t *stop_ids, size_t stop_id_count, nx_emit_fn emit, void *user,
                nx_gen_result_t *out, nx_err_t *err)
{
    return nx_generate_grammar(engine, seq, tok, prompt, prompt_len, sampling, stop_ids,
                               stop_id_count, NULL, emit, user, out, err);
}

int nx_generate_grammar(nx_engine_t *engine, nx_seq_t *seq, const nx_tokenizer_t *tok,
                        const int32_t *prompt, size_t prompt_len, const nx_sampling_t *sampling,
                        const int32_t *stop_ids, size_t stop_id_count,
                        const nx_gen_grammar_t *grammar, nx_emit_fn emit, void *user,
                        nx_gen_result_t *out, nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    uint32_t vocab = nx_engine_config(engine)->vocab;
    nx_gen_t *g = nx_gen_new(tok, vocab, sampling, prompt, prompt_len, stop_ids,
                             stop_id_count, emit, user, err);
    if (!g)
        return err ? err->code : NX_ENOMEM;
    if (grammar && nx_gen_set_grammar(g, grammar, err) != NX_OK) {
        int rc = err ? err->code : NX_EINVAL;
        nx_gen_destroy(&g);
        return rc;
    }
    uint64_t t0 = nx_now_ns();
    int rc = prefill(engine, seq, g, prompt, prompt_len, err);
    uint64_t t1 = nx_now_ns();
    out->prefill_seconds = (double)(t1 - t0) / 1e9;
    while (rc == NX_OK) {
        int32_t id;
        bool room = nx_seq_len(seq) < nx_seq_capacity(seq);
        if ((rc = nx_gen_advance_id(g, nx_seq_picked(seq), room, &id, err)) != NX_OK ||
            g->stop_reason)
            break;
        const int32_t *feed;
        size_t feed_count = nx_gen_next_ids(g, &feed);
        if ((rc = nx_seq_feed(seq, feed, feed_count, err)) == NX_OK &&
            (rc = nx_gen_pick_next(g, seq, err)) == NX_OK)
            rc = nx_engine_step(engine, &seq, 1, err);
    }
    if (rc != NX_OK)
        goto out;
    out->decode_seconds = (double)(nx_now_ns() - t1) / 1e9;
    out->ids = malloc((g->generated ? g->generated : 1) * sizeof *out->ids);
    if (!out->ids) {
        rc = nx_err_set(err, NX_ENOMEM, "generation: no memory for %zu ids", g->generated);
        goto out;
    }
    memcpy(out->ids, nx_gen_ids(g), g->generated * sizeof *out->ids);
    out->count = g->generated;
    out->text = g->text;
    g->text = NULL;
    out->prompt_tokens = (uint32_t)prompt_len;
    out->stop_reason = g->stop_reason;
out:
    if (rc != NX_OK)
        nx_gen_result_free(out);
    nx_gen_destroy(&g);
    return rc;
}

void nx_gen_result_free(nx_gen_result_t *result)
{
    free(result->ids);
    free(result->text);
    memset(result, 0, sizeof *result);
}
