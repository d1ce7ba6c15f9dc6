/* gen_grammar.c — the grammar side of one generation: which phase the output is in and the
 * mask of each pick.
 *
 * Phases, in order (each may be skipped):
 *   OPEN     think_open is set and the output has not shown yet whether it opens with it;
 *   THINK    inside the thinking block: free text until think_close;
 *   FREE     free text until a trigger (an id, or a string found in the output's bytes);
 *   WS       after a thinking block, the grammar applies but whitespace tokens are skipped;
 *   GRAMMAR  the matcher follows every token; each pick is masked;
 *   DONE     the matcher is finished: no byte can follow.
 * Free phases carry only the banned ids (no mask at all without them, so unconstrained
 * generation pays nothing). The masks are buffers of this state, filled in place: nothing is
 * allocated per token.
 */
#include <stdlib.h>
#include <string.h>

#include "gen_grammar.h"
#include "grammar.h"

typedef enum phase { PH_OPEN, PH_THINK, PH_FREE, PH_WS, PH_GRAMMAR, PH_DONE } phase_t;

static const char *const phase_names[] = {"opening", "thinking", "free text",
                                          "whitespace before the grammar", "grammar", "done"};

struct nx__gg {
    const nx_tokenizer_t *tok;
    uint32_t vocab;           /* the model's ids */
    uint32_t words;           /* (vocab + 31) / 32 */
    nx_gram_matcher_t *matcher; /* NULL without a grammar (banned ids only); use m() */
    bool own_matcher;         /* false: shared (nx_gen_grammar_t.matcher), state below */
    nx_gram_state_t state;    /* this generation's state in the matcher */
    size_t gram_words;        /* words the matcher's masks fill (its vocabulary's) */
    uint32_t *mask;           /* [words] the mask of a grammar phase */
    uint32_t *free_mask;      /* [words] every id but the banned ones; NULL without bans */
    uint32_t *ws_mask;        /* [words] whitespace-only tokens; built when WS first needs it */
    int32_t *stop_ids;        /* stop_id_count: allowed only where the grammar accepts */
    size_t stop_id_count;
    int32_t *trigger_ids;
    size_t trigger_id_count;
    char **trigger_strs;
    size_t trigger_str_count, trigger_max_len;
    char *think_open, *think_close;
    int32_t *open_ids;        /* think_open as tokens (the grammar-from-the-start case) */
    size_t open_id_count, open_done; /* open_ids picked so far */
    bool lazy;                /* triggers: free text first */
    bool at_start;            /* a trigger counts only at search_from, whitespace aside */
    phase_t phase;
    char *raw;                /* the output's bytes while in free phases */
    size_t raw_len, raw_cap;
    size_t search_from;       /* raw offset where the think_close / trigger search starts */
};

/* The matcher at this generation's state (a shared one holds any generation's). */
static nx_gram_matcher_t *m(const nx__gg_t *self)
{
    nx_gram_matcher_set_state(self->matcher, self->state);
    return self->matcher;
}

/* After the matcher moved: keep where this generation is. */
static void keep_state(nx__gg_t *self) { self->state = nx_gram_matcher_state(self->matcher); }

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void set_bit(uint32_t *mask, uint32_t id) { mask[id >> 5] |= 1u << (id & 31); }
static void clear_bit(uint32_t *mask, uint32_t id) { mask[id >> 5] &= ~(1u << (id & 31)); }

static int check_ids(const int32_t *ids, size_t count, uint32_t vocab, const char *what,
                     nx_err_t *err)
{
    if (count && !ids)
        return nx_err_set(err, NX_EINVAL, "grammar: %s count is %zu but the list is NULL",
                          what, count);
    for (size_t i = 0; i < count; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab)
            return nx_err_set(err, NX_EINVAL, "grammar: %s %d is outside the vocabulary of %u",
                              what, ids[i], vocab);
    return NX_OK;
}

static int check_spec(const nx_gen_grammar_t *s, uint32_t vocab, nx_err_t *err)
{
    if (s->matcher && !s->gram)
        return nx_err_set(err, NX_EINVAL, "grammar: a shared matcher needs its grammar");
    if (s->gram && !s->vocab)
        return nx_err_set(err, NX_EINVAL, "grammar: a grammar needs the tokenizer's vocabulary");
    if (s->vocab && nx_gram_vocab_size(s->vocab) > vocab)
        return nx_err_set(err, NX_EINVAL, "grammar: the grammar's vocabulary has %u ids, the "
                          "model %u", nx_gram_vocab_size(s->vocab), vocab);
    if (!s->gram && (s->trigger_id_count || s->trigger_str_count || s->think_open))
        return nx_err_set(err, NX_EINVAL, "grammar: triggers and a thinking block need a "
                          "grammar");
    if (!s->think_open != !s->think_close)
        return nx_err_set(err, NX_EINVAL, "grammar: think_open and think_close go together");
    if (s->think_open && (!s->think_open[0] || !s->think_close[0]))
        return nx_err_set(err, NX_EINVAL, "grammar: think_open and think_close are not empty");
    if (s->trigger_str_count && !s->trigger_strs)
        return nx_err_set(err, NX_EINVAL, "grammar: trigger_str_count is %zu but the list is "
                          "NULL", s->trigger_str_count);
    for (size_t i = 0; i < s->trigger_str_count; i++)
        if (!s->trigger_strs[i] || !s->trigger_strs[i][0])
            return nx_err_set(err, NX_EINVAL, "grammar: trigger string %zu is empty", i);
    int rc = check_ids(s->trigger_ids, s->trigger_id_count, vocab, "trigger id", err);
    if (rc == NX_OK)
        rc = check_ids(s->banned_ids, s->banned_id_count, vocab, "banned id", err);
    return rc;
}

static int32_t *copy_ids(const int32_t *ids, size_t count, bool *ok)
{
    int32_t *out = malloc((count ? count : 1) * sizeof *out);
    if (!out)
        *ok = false;
    else if (count)
        memcpy(out, ids, count * sizeof *ids);
    return out;
}

static char *copy_str(const char *s, bool *ok)
{
    char *out = s ? strdup(s) : NULL;
    if (s && !out)
        *ok = false;
    return out;
}

nx__gg_t *nx__gg_new(const nx_gen_grammar_t *spec, const nx_tokenizer_t *tok, uint32_t vocab,
                     const int32_t *stop_ids, size_t stop_id_count, nx_err_t *err)
{
    if (check_spec(spec, vocab, err) != NX_OK)
        return NULL;
    nx__gg_t *self = calloc(1, sizeof *self);
    if (!self)
        goto out_nomem;
    bool ok = true;
    self->tok = tok;
    self->vocab = vocab;
    self->words = (vocab + 31) / 32;
    self->lazy = spec->trigger_id_count || spec->trigger_str_count;
    self->at_start = spec->trigger_at_start;
    self->stop_ids = copy_ids(stop_ids, stop_id_count, &ok);
    self->stop_id_count = stop_id_count;
    self->trigger_ids = copy_ids(spec->trigger_ids, spec->trigger_id_count, &ok);
    self->trigger_id_count = spec->trigger_id_count;
    self->trigger_strs = calloc(spec->trigger_str_count + 1, sizeof *self->trigger_strs);
    ok = ok && self->trigger_strs;
    for (size_t i = 0; ok && i < spec->trigger_str_count; i++) {
        self->trigger_strs[i] = copy_str(spec->trigger_strs[i], &ok);
        self->trigger_str_count = i + 1;
        size_t len = strlen(spec->trigger_strs[i]);
        if (len > self->trigger_max_len)
            self->trigger_max_len = len;
    }
    self->think_open = copy_str(spec->think_open, &ok);
    self->think_close = copy_str(spec->think_close, &ok);
    self->mask = calloc(self->words, sizeof *self->mask);
    ok = ok && self->mask;
    if (ok && spec->banned_id_count) {
        if ((self->free_mask = malloc(self->words * sizeof *self->free_mask))) {
            memset(self->free_mask, 0xff, self->words * sizeof *self->free_mask);
            for (size_t i = 0; i < spec->banned_id_count; i++)
                clear_bit(self->free_mask, (uint32_t)spec->banned_ids[i]);
        }
        ok = self->free_mask != NULL;
    }
    if (!ok)
        goto out_nomem;
    self->gram_words = spec->vocab ? nx_gram_mask_words(spec->vocab) : 0;
    if (spec->matcher) {
        self->matcher = spec->matcher;
        self->state = nx_gram_matcher_start(spec->matcher);
    } else if (spec->gram) {
        if (!(self->matcher = nx_gram_matcher_new(spec->gram, spec->vocab, err)))
            goto out_fail;
        self->own_matcher = true;
        self->state = nx_gram_matcher_state(self->matcher);
    }
    if (self->think_open && !self->lazy) {
        size_t n = 0;
        if (nx_tokenizer_encode(tok, self->think_open, strlen(self->think_open),
                                &self->open_ids, &n, err) != NX_OK)
            goto out_fail;
        self->open_id_count = n;
    }
    self->phase = self->think_open ? PH_OPEN : self->lazy || !self->matcher ? PH_FREE
                                                                            : PH_GRAMMAR;
    return self;
out_nomem:
    nx_err_set(err, NX_ENOMEM, "grammar: no memory for the generation's grammar state");
out_fail:
    nx__gg_destroy(&self);
    return NULL;
}

void nx__gg_destroy(nx__gg_t **self_p)
{
    nx__gg_t *self = *self_p;
    if (!self)
        return;
    if (self->own_matcher)
        nx_gram_matcher_destroy(&self->matcher);
    free(self->mask);
    free(self->free_mask);
    free(self->ws_mask);
    free(self->stop_ids);
    free(self->trigger_ids);
    for (size_t i = 0; i < self->trigger_str_count; i++)
        free(self->trigger_strs[i]);
    free(self->trigger_strs);
    free(self->think_open);
    free(self->think_close);
    free(self->open_ids);
    free(self->raw);
    free(self);
    *self_p = NULL;
}

/* ---- masks ----------------------------------------------------------------------------------- */

static int build_ws_mask(nx__gg_t *self, nx_err_t *err)
{
    if (!(self->ws_mask = calloc(self->words, sizeof *self->ws_mask)))
        return nx_err_set(err, NX_ENOMEM, "grammar: no memory for the whitespace mask");
    for (uint32_t id = 0; id < self->vocab; id++) {
        size_t len = 0;
        const char *bytes = nx_tokenizer_token_bytes(self->tok, (int32_t)id, &len);
        if (!bytes || len == 0 || nx_tokenizer_is_special(self->tok, (int32_t)id))
            continue;
        size_t i = 0;
        while (i < len && is_ws(bytes[i]))
            i++;
        if (i == len)
            set_bit(self->ws_mask, id);
    }
    return NX_OK;
}

/* The matcher's mask into self->mask, the stop ids allowed exactly where it accepts. */
static int grammar_mask(nx__gg_t *self, nx_err_t *err)
{
    int rc = nx_gram_matcher_mask(m(self), self->mask, err);
    if (rc != NX_OK)
        return rc;
    size_t gram_words = self->gram_words;
    if (gram_words < self->words) /* ids past the tokenizer's (padding rows): never */
        memset(self->mask + gram_words, 0, (self->words - gram_words) * sizeof *self->mask);
    bool accepting = nx_gram_matcher_accepting(m(self));
    for (size_t i = 0; i < self->stop_id_count; i++)
        (accepting ? set_bit : clear_bit)(self->mask, (uint32_t)self->stop_ids[i]);
    return NX_OK;
}

int nx__gg_mask(nx__gg_t *self, const uint32_t **allow_out, uint32_t *allow_bits_out,
                nx_err_t *err)
{
    *allow_out = NULL;
    *allow_bits_out = 0;
    int rc = NX_OK;
    switch (self->phase) {
    case PH_OPEN:
        if (self->lazy) {
            *allow_out = self->free_mask;
            break;
        }
        if (self->open_done > 0) { /* finish think_open, token by token */
            memset(self->mask, 0, self->words * sizeof *self->mask);
        } else if ((rc = grammar_mask(self, err)) != NX_OK) {
            return rc;
        }
        if (self->open_done < self->open_id_count)
            set_bit(self->mask, (uint32_t)self->open_ids[self->open_done]);
        *allow_out = self->mask;
        break;
    case PH_THINK:
    case PH_FREE:
        *allow_out = self->free_mask;
        break;
    case PH_WS:
        if (!self->ws_mask && (rc = build_ws_mask(self, err)) != NX_OK)
            return rc;
        if ((rc = grammar_mask(self, err)) != NX_OK)
            return rc;
        for (uint32_t w = 0; w < self->words; w++)
            self->mask[w] |= self->ws_mask[w];
        *allow_out = self->mask;
        break;
    case PH_GRAMMAR:
        if ((rc = grammar_mask(self, err)) != NX_OK)
            return rc;
        *allow_out = self->mask;
        break;
    case PH_DONE:
        return nx_err_set(err, NX_ESTATE, "grammar: the output is finished; nothing to pick");
    }
    if (*allow_out) {
        *allow_bits_out = self->vocab;
        uint32_t any = 0;
        for (uint32_t w = 0; w < self->words && !any; w++)
            any = (*allow_out)[w];
        if (!any)
            return nx_err_set(err, NX_ESTATE, "grammar: no token is allowed in phase '%s' "
                              "(matcher state %u)", phase_names[self->phase],
                              self->matcher ? self->state.id : 0);
    }
    return NX_OK;
}

int nx__gg_mask_into(nx__gg_t *self, uint32_t *words, uint32_t word_count,
                     uint32_t *allow_bits_out, nx_err_t *err)
{
    *allow_bits_out = 0;
    if (word_count < self->words)
        return nx_err_set(err, NX_EINVAL, "grammar: a mask of %u words for %u ids", word_count,
                          self->vocab);
    const uint32_t *allow;
    uint32_t allow_bits;
    int rc = nx__gg_mask(self, &allow, &allow_bits, err);
    if (rc != NX_OK) {
        if (rc != NX_ESTATE) /* NX_ESTATE's message names them already */
            nx_err_prefix(err, "grammar (phase '%s', matcher state %u): ",
                          phase_names[self->phase], self->matcher ? self->state.id : 0);
        return rc;
    }
    if (!allow)
        return NX_OK;
    memcpy(words, allow, self->words * sizeof *words);
    memset(words + self->words, 0, (word_count - self->words) * sizeof *words);
    *allow_bits_out = allow_bits;
    return NX_OK;
}

/* ---- following the output -------------------------------------------------------------------- */

static int push_raw(nx__gg_t *self, const char *bytes, size_t len, nx_err_t *err)
{
    if (self->raw_len + len + 1 > self->raw_cap) {
        size_t cap = self->raw_cap ? self->raw_cap : 256;
        while (cap < self->raw_len + len + 1)
            cap *= 2;
        char *p = realloc(self->raw, cap);
        if (!p)
            return nx_err_set(err, NX_ENOMEM, "grammar: no memory for %zu bytes of output", cap);
        self->raw = p;
        self->raw_cap = cap;
    }
    memcpy(self->raw + self->raw_len, bytes, len);
    self->raw_len += len;
    self->raw[self->raw_len] = '\0';
    return NX_OK;
}

/* The grammar starts with these bytes (a trigger and what followed it in its token). */
static int start_grammar(nx__gg_t *self, const char *bytes, size_t len, bool *finished,
                         nx_err_t *err)
{
    self->phase = PH_GRAMMAR;
    if (len > 0) {
        nx_err_t why = {0};
        int rc = nx_gram_matcher_advance(m(self), bytes, len, &why);
        keep_state(self);
        if (rc == NX_EINVAL)
            return nx_err_set(err, NX_EINVAL, "grammar: the output '%.*s' where the grammar "
                              "starts does not match it", (int)(len > 80 ? 80 : len), bytes);
        if (rc != NX_OK)
            return nx_err_set(err, rc, "%s", why.msg);
    }
    if (nx_gram_matcher_finished(m(self))) {
        self->phase = PH_DONE;
        *finished = true;
    }
    return NX_OK;
}

/* After a thinking block or in free text: the grammar (or trigger search) from raw[from]. */
static int after_think(nx__gg_t *self, size_t from, bool *finished, nx_err_t *err);

/* Where the answer's first non-whitespace byte is (raw_len when none yet). */
static size_t answer_start(const nx__gg_t *self)
{
    size_t at = self->search_from;
    while (at < self->raw_len && is_ws(self->raw[at]))
        at++;
    return at;
}

static int search_triggers(nx__gg_t *self, size_t from, bool *finished, nx_err_t *err)
{
    if (self->at_start) { /* only at the answer's start: a prefix there, or never */
        size_t at = answer_start(self);
        for (size_t i = 0; i < self->trigger_str_count; i++) {
            size_t len = strlen(self->trigger_strs[i]);
            if (self->raw_len - at >= len && memcmp(self->raw + at, self->trigger_strs[i], len) == 0)
                return start_grammar(self, self->raw + at, self->raw_len - at, finished, err);
        }
        return NX_OK;
    }
    size_t back = self->trigger_max_len ? self->trigger_max_len - 1 : 0;
    size_t start = from > self->search_from + back ? from - back : self->search_from;
    const char *best = NULL;
    for (size_t i = 0; i < self->trigger_str_count; i++) {
        const char *hit = memmem(self->raw + start, self->raw_len - start, self->trigger_strs[i],
                                 strlen(self->trigger_strs[i]));
        if (hit && (!best || hit < best))
            best = hit;
    }
    if (!best)
        return NX_OK;
    return start_grammar(self, best, (size_t)(self->raw + self->raw_len - best), finished, err);
}

static int after_think(nx__gg_t *self, size_t from, bool *finished, nx_err_t *err)
{
    while (from < self->raw_len && is_ws(self->raw[from]))
        from++;
    self->search_from = from;
    if (self->lazy) {
        self->phase = PH_FREE;
        return search_triggers(self, from, finished, err);
    }
    if (from == self->raw_len) {
        self->phase = PH_WS;
        return NX_OK;
    }
    return start_grammar(self, self->raw + from, self->raw_len - from, finished, err);
}

static bool is_trigger_id(const nx__gg_t *self, int32_t id)
{
    if (self->at_start && answer_start(self) < self->raw_len)
        return false; /* the answer began with other text */
    for (size_t i = 0; i < self->trigger_id_count; i++)
        if (self->trigger_ids[i] == id)
            return true;
    return false;
}

static int observe_open(nx__gg_t *self, int32_t id, const char *bytes, size_t len,
                        bool *finished, nx_err_t *err)
{
    size_t open_len = strlen(self->think_open);
    if (!self->lazy) {
        if (self->open_done < self->open_id_count && id == self->open_ids[self->open_done]) {
            int rc = push_raw(self, bytes, len, err);
            if (rc == NX_OK && ++self->open_done == self->open_id_count) {
                self->phase = PH_THINK;
                self->search_from = self->raw_len;
            }
            return rc;
        }
        self->phase = PH_GRAMMAR; /* the first token was the grammar's */
        return NX_OK;             /* the caller feeds it */
    }
    if (is_trigger_id(self, id))
        return start_grammar(self, bytes, len, finished, err);
    int rc = push_raw(self, bytes, len, err);
    if (rc != NX_OK)
        return rc;
    if (self->raw_len >= open_len && memcmp(self->raw, self->think_open, open_len) == 0) {
        self->phase = PH_THINK;
        self->search_from = open_len;
        return NX_OK;
    }
    if (self->raw_len < open_len && memcmp(self->raw, self->think_open, self->raw_len) == 0)
        return NX_OK; /* still a prefix of think_open: undecided */
    self->phase = PH_FREE;
    self->search_from = 0;
    return search_triggers(self, 0, finished, err);
}

static int observe_think(nx__gg_t *self, const char *bytes, size_t len, bool *finished,
                         nx_err_t *err)
{
    size_t before = self->raw_len;
    int rc = push_raw(self, bytes, len, err);
    if (rc != NX_OK)
        return rc;
    size_t close_len = strlen(self->think_close);
    size_t start = before > self->search_from + close_len - 1 ? before - (close_len - 1)
                                                              : self->search_from;
    const char *hit = memmem(self->raw + start, self->raw_len - start, self->think_close,
                             close_len);
    if (!hit)
        return NX_OK;
    return after_think(self, (size_t)(hit - self->raw) + close_len, finished, err);
}

int nx__gg_observe(nx__gg_t *self, int32_t id, bool *finished_out, nx_err_t *err)
{
    *finished_out = false;
    size_t len = 0;
    const char *bytes = nx_tokenizer_token_bytes(self->tok, id, &len);
    if (!bytes)
        bytes = "", len = 0;
    int rc = NX_OK;
    switch (self->phase) {
    case PH_OPEN:
        if ((rc = observe_open(self, id, bytes, len, finished_out, err)) != NX_OK ||
            self->phase != PH_GRAMMAR || self->lazy)
            return rc;
        break; /* grammar from the start: this token is its first */
    case PH_THINK:
        return observe_think(self, bytes, len, finished_out, err);
    case PH_FREE:
        if (!self->matcher)
            return NX_OK; /* banned ids only: free text to the end */
        if (is_trigger_id(self, id))
            return start_grammar(self, bytes, len, finished_out, err);
        size_t before = self->raw_len;
        if ((rc = push_raw(self, bytes, len, err)) != NX_OK)
            return rc;
        return search_triggers(self, before, finished_out, err);
    case PH_WS: {
        size_t i = 0;
        while (i < len && is_ws(bytes[i]))
            i++;
        if (i == len)
            return NX_OK;
        self->phase = PH_GRAMMAR;
        break;
    }
    case PH_GRAMMAR:
        break;
    case PH_DONE:
        return nx_err_set(err, NX_ESTATE, "grammar: a token after the output finished");
    }
    nx_err_t why = {0};
    rc = nx_gram_matcher_accept_token(m(self), id, &why);
    keep_state(self);
    if (rc == NX_EINVAL)
        return nx_err_set(err, NX_ESTATE, "grammar: token %d was picked but the matcher "
                          "(state %u) rejects it", id, self->state.id);
    if (rc != NX_OK)
        return nx_err_set(err, rc, "%s", why.msg);
    if (nx_gram_matcher_finished(self->matcher)) {
        self->phase = PH_DONE;
        *finished_out = true;
    }
    return NX_OK;
}

#define FORCED_BYTES_MAX 256 /* one run; a longer one goes on after the next pick */

int nx__gg_forced(nx__gg_t *self, int32_t *out, size_t cap, bool may_finish,
                  size_t *count_out, bool *finished_out, nx_err_t *err)
{
    *count_out = 0;
    *finished_out = false;
    if (self->phase != PH_GRAMMAR || cap == 0)
        return NX_OK;
    char bytes[FORCED_BYTES_MAX];
    size_t n = nx_gram_matcher_forced(m(self), bytes, sizeof bytes);
    if (n == 0)
        return NX_OK;
    bool finished_after = nx_gram_matcher_advance(self->matcher, bytes, n, NULL) == NX_OK &&
                          nx_gram_matcher_finished(self->matcher);
    nx_gram_matcher_set_state(self->matcher, self->state);
    int32_t *ids = NULL;
    size_t count = 0;
    nx_err_t why = {0};
    if (nx_tokenizer_encode(self->tok, bytes, n, &ids, &count, &why) != NX_OK)
        return NX_OK; /* e.g. the run ends inside a UTF-8 character: the model goes on */
    size_t keep = finished_after && may_finish ? count : count - 1;
    keep = keep < cap ? keep : cap;
    size_t done = 0;
    for (; done < keep; done++) {
        if (nx_tokenizer_is_special(self->tok, ids[done]) ||
            nx_gram_matcher_accept_token(self->matcher, ids[done], NULL) != NX_OK)
            break;
        out[done] = ids[done];
    }
    keep_state(self);
    free(ids);
    *count_out = done;
    if (done > 0 && nx_gram_matcher_finished(self->matcher)) {
        self->phase = PH_DONE;
        *finished_out = true;
    }
    (void)err;
    return NX_OK;
}

int nx__gg_end(nx__gg_t *self, nx_err_t *err)
{
    if (nx__gg_free_text(self) && (self->phase != PH_OPEN || self->lazy))
        return NX_OK;
    if (self->phase == PH_DONE || nx_gram_matcher_accepting(m(self)))
        return NX_OK;
    return nx_err_set(err, NX_ESTATE, "grammar: an end id was picked in phase '%s' where the "
                      "grammar does not accept", phase_names[self->phase]);
}

bool nx__gg_free_text(const nx__gg_t *self)
{
    return self->phase == PH_OPEN || self->phase == PH_THINK || self->phase == PH_FREE;
}

bool nx__gg_started(const nx__gg_t *self)
{
    return self->matcher && self->phase >= PH_WS;
}

bool nx__gg_accepted(const nx__gg_t *self)
{
    return nx__gg_started(self) &&
           (self->phase == PH_DONE || nx_gram_matcher_accepting(m(self)));
}
