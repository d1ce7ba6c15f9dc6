/* sampler.c — the next token from a row of logits, in the order Hugging Face's logits
 * processors apply: repetition penalty (CTRL), then greedy when temperature is 0, else
 * temperature, top-k, top-p, min-p and a draw from a seeded xoshiro256** generator.
 *
 * It runs once per generated token over vocabularies of ~152k entries, so nothing sorts the
 * whole vocabulary: top-k keeps a size-k min-heap (most logits are rejected by one compare
 * against the heap's root), and top-p without top-k finds its cut with a histogram of the
 * weights and sorts only the tokens of the bin where the cut falls. The draw walks the kept
 * tokens in rank order (the GPU's cuda_sample.cu walks the same order, so one plan picks the
 * same id on either backend), found the same way: only the bin where it lands is sorted.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pick.h"

#define NUCLEUS_BINS 4096 /* histogram bins over weights in [0, 1] for top-p */

typedef struct cand {
    float value; /* logit (selection) or unnormalised probability exp((l - max) / T) */
    int32_t id;
} cand_t;

struct nx_sampler {
    nx_sampling_t params; /* stop strings are not kept: generation handles them */
    uint32_t vocab;
    uint64_t rng[4];      /* xoshiro256** state */
    float *penalized;     /* [vocab] logits after the repetition penalty */
    uint32_t *seen_stamp; /* [vocab] == stamp when an id was penalised in this pick */
    uint32_t stamp;
    cand_t *cands;        /* [vocab] candidates of the current pick */
    int32_t *penalty_ids; /* [vocab] distinct ids of the last plan's history */
    double bin_mass[NUCLEUS_BINS]; /* top-p histogram: summed weight per bin */
    const uint32_t *allow; /* the mask the next plans carry (nx__sampler_set_allow); NULL */
    uint32_t allow_bits;
};

/* ---- the generator: splitmix64 expands the seed into xoshiro256**'s state ---------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double uniform01(uint64_t s[4]) /* [0, 1) with 53 random bits */
{
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

/* ---- parameters ---------------------------------------------------------------------------- */

nx_sampling_t nx_sampling_default(void)
{
    return (nx_sampling_t){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                           .repetition_penalty = 1.0f, .seed = 0, .max_tokens = 256};
}

int nx_sampling_validate(const nx_sampling_t *s, nx_err_t *err)
{
    if (!(s->temperature >= 0.0f) || !isfinite(s->temperature))
        return nx_err_set(err, NX_EINVAL, "temperature must be finite and >= 0, not %g",
                          (double)s->temperature);
    if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        return nx_err_set(err, NX_EINVAL, "top_p must be in (0, 1], not %g", (double)s->top_p);
    if (!(s->min_p >= 0.0f && s->min_p < 1.0f))
        return nx_err_set(err, NX_EINVAL, "min_p must be in [0, 1), not %g", (double)s->min_p);
    if (!(s->repetition_penalty > 0.0f) || !isfinite(s->repetition_penalty))
        return nx_err_set(err, NX_EINVAL, "repetition_penalty must be finite and > 0, not %g",
                          (double)s->repetition_penalty);
    if (s->max_tokens == 0)
        return nx_err_set(err, NX_EINVAL, "max_tokens must be > 0, not 0");
    if (s->stop_count > 0 && !s->stop)
        return nx_err_set(err, NX_EINVAL, "stop_count is %zu but stop is NULL", s->stop_count);
    for (size_t i = 0; i < s->stop_count; i++)
        if (!s->stop[i] || !s->stop[i][0])
            return nx_err_set(err, NX_EINVAL, "stop string %zu is empty", i);
    return NX_OK;
}

/* ---- lifetime -------------------------------------------------------------------------------- */

nx_sampler_t *nx_sampler_new(const nx_sampling_t *s, uint32_t vocab, nx_err_t *err)
{
    if (nx_sampling_validate(s, err) != NX_OK)
        return NULL;
    if (vocab == 0) {
        nx_err_set(err, NX_EINVAL, "sampler: vocabulary size must be > 0");
        return NULL;
    }
    nx_sampler_t *self = calloc(1, sizeof *self);
    if (!self)
        goto out_nomem;
    self->params = *s;
    self->params.stop = NULL;
    self->params.stop_count = 0;
    self->vocab = vocab;
    self->penalized = malloc((size_t)vocab * sizeof *self->penalized);
    self->seen_stamp = calloc(vocab, sizeof *self->seen_stamp);
    self->cands = malloc((size_t)vocab * sizeof *self->cands);
    self->penalty_ids = malloc((size_t)vocab * sizeof *self->penalty_ids);
    if (!self->penalized || !self->seen_stamp || !self->cands || !self->penalty_ids)
        goto out_nomem;
    uint64_t x = s->seed;
    for (int i = 0; i < 4; i++)
        self->rng[i] = splitmix64(&x);
    return self;
out_nomem:
    nx_sampler_destroy(&self);
    nx_err_set(err, NX_ENOMEM, "sampler: no memory for a vocabulary of %u", vocab);
    return NULL;
}

void nx_sampler_destroy(nx_sampler_t **self_p)
{
    nx_sampler_t *self = *self_p;
    if (!self)
        return;
    free(self->penalized);
    free(self->seen_stamp);
    free(self->cands);
    free(self->penalty_ids);
    free(self);
    *self_p = NULL;
}

/* ---- the steps of a pick ------------------------------------------------------------------- */

/* The distinct ids of history inside the vocabulary, in first-seen order, into
 * self->penalty_ids; returns how many. */
static uint32_t distinct_ids(nx_sampler_t *self, const int32_t *history, size_t history_len)
{
    if (++self->stamp == 0) { /* wrapped: forget every old stamp */
        memset(self->seen_stamp, 0, (size_t)self->vocab * sizeof *self->seen_stamp);
        self->stamp = 1;
    }
    uint32_t count = 0;
    for (size_t i = 0; i < history_len; i++) {
        int32_t id = history[i];
        if (id < 0 || (uint32_t)id >= self->vocab || self->seen_stamp[id] == self->stamp)
            continue;
        self->seen_stamp[id] = self->stamp;
        self->penalty_ids[count++] = id;
    }
    return count;
}

void nx__sampler_plan(nx_sampler_t *self, const int32_t *history, size_t history_len,
                      nx__pick_t *out)
{
    const nx_sampling_t *p = &self->params;
    *out = (nx__pick_t){.temperature = p->temperature, .top_k = p->top_k, .top_p = p->top_p,
                        .min_p = p->min_p, .repetition_penalty = p->repetition_penalty};
    if (p->repetition_penalty != 1.0f && history_len > 0) {
        out->penalty_count = distinct_ids(self, history, history_len);
        out->penalty_ids = out->penalty_count ? self->penalty_ids : NULL;
    }
    if (p->temperature != 0.0f)
        out->draw = uniform01(self->rng);
    out->allow = self->allow;
    out->allow_bits = self->allow ? self->allow_bits : 0;
}

void nx__sampler_set_allow(nx_sampler_t *self, const uint32_t *allow, uint32_t allow_bits)
{
    self->allow = allow;
    self->allow_bits = allow_bits;
}

/* CTRL's penalty over the plan's distinct ids: positive logits are divided by it, negative
 * ones multiplied (both make the token less likely). Returns the row to use. */
static const float *apply_penalty(nx_sampler_t *self, const float *logits,
                                  const nx__pick_t *plan)
{
    float penalty = plan->repetition_penalty;
    if (penalty == 1.0f || plan->penalty_count == 0)
        return logits;
    memcpy(self->penalized, logits, (size_t)self->vocab * sizeof *logits);
    for (uint32_t i = 0; i < plan->penalty_count; i++) {
        int32_t id = plan->penalty_ids[i];
        float l = self->penalized[id];
        self->penalized[id] = l < 0 ? l * penalty : l / penalty;
    }
    return self->penalized;
}

/* NaN logits (a broken model) rank below everything, as -inf. */
static float clean(float l) { return isnan(l) ? -INFINITY : l; }

static int32_t argmax(const float *row, uint32_t vocab) /* lowest id on ties */
{
    int32_t best = 0;
    float best_value = clean(row[0]);
    for (uint32_t i = 1; i < vocab; i++) {
        float v = clean(row[i]);
        if (v > best_value) {
            best_value = v;
            best = (int32_t)i;
        }
    }
    return best;
}

/* Ranking of candidates: higher value first, lower id among equals. */
static bool ranks_before(const cand_t *a, const cand_t *b)
{
    return a->value > b->value || (a->value == b->value && a->id < b->id);
}

static int cmp_rank(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

/* Min-heap by rank (root = the worst kept) over heap[0..n). */
static void sift_down(cand_t *heap, size_t n, size_t i)
{
    for (;;) {
        size_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(&heap[worst], &heap[l]))
            worst = l;
        if (r < n && ranks_before(&heap[worst], &heap[r]))
            worst = r;
        if (worst == i)
            return;
        cand_t t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

/* The k best of n candidates into self->cands[0..k), sorted by rank: the candidates are
 * row's ids 0..n) or, with row NULL, self->cands[0..n) as they are (the heap takes their
 * front, read past it). */
static void select_top_k(nx_sampler_t *self, const float *row, size_t n, uint32_t k)
{
    cand_t *heap = self->cands;
    if (row)
        for (uint32_t i = 0; i < k; i++)
            heap[i] = (cand_t){clean(row[i]), (int32_t)i};
    for (size_t i = k / 2; i-- > 0;)
        sift_down(heap, k, i);
    for (size_t i = k; i < n; i++) { /* hot: one compare for most ids */
        cand_t c = row ? (cand_t){clean(row[i]), (int32_t)i} : heap[i];
        if (ranks_before(&c, &heap[0])) {
            heap[0] = c;
            sift_down(heap, k, 0);
        }
    }
    qsort(heap, k, sizeof *heap, cmp_rank);
}

/* The highest value of c[0..n), n > 0. */
static float max_value(const cand_t *c, size_t n)
{
    float m = c[0].value;
    for (size_t i = 1; i < n; i++)
        m = c[i].value > m ? c[i].value : m;
    return m;
}

static int weight_bin(float w) /* w in [0, 1] */
{
    int bin = (int)(w * NUCLEUS_BINS);
    return bin < 0 ? 0 : bin >= NUCLEUS_BINS ? NUCLEUS_BINS - 1 : bin;
}

/* Turn candidate logits into weights exp((l - max) / T); returns their sum. */
static double to_weights(cand_t *c, size_t n, float max_logit, float temperature)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        float w = expf((c[i].value - max_logit) / temperature);
        c[i].value = w;
        sum += w;
    }
    return sum;
}

/* Top-p over unsorted weights in [0, 1] without sorting them all: a histogram of the weights
 * finds the bin where the mass (counted from the top) reaches `mass`; the tokens above it are
 * all kept, and only that bin's tokens are sorted to find the cut inside it. Reorders c so the
 * kept tokens come first and returns how many there are (at least one). */
static size_t nucleus_unsorted(nx_sampler_t *self, cand_t *c, size_t n, double mass)
{
    double *bin_mass = self->bin_mass;
    memset(bin_mass, 0, NUCLEUS_BINS * sizeof *bin_mass);
    for (size_t i = 0; i < n; i++)
        bin_mass[weight_bin(c[i].value)] += c[i].value;
    int cut_bin = NUCLEUS_BINS - 1;
    double above = 0; /* mass of the bins above cut_bin */
    while (cut_bin > 0 && above + bin_mass[cut_bin] < mass)
        above += bin_mass[cut_bin--];
    size_t first = 0; /* partition: bins above the cut, then the cut bin, then the rest */
    for (size_t i = 0; i < n; i++) {
        if (weight_bin(c[i].value) > cut_bin) {
            cand_t t = c[first];
            c[first++] = c[i];
            c[i] = t;
        }
    }
    size_t end = first;
    for (size_t i = first; i < n; i++) {
        if (weight_bin(c[i].value) == cut_bin) {
            cand_t t = c[end];
            c[end++] = c[i];
            c[i] = t;
        }
    }
    qsort(c + first, end - first, sizeof *c, cmp_rank);
    double before = above;
    size_t keep = first;
    while (keep < end && (keep == 0 || before < mass))
        before += c[keep++].value;
    return keep;
}

/* The first of c[0..n) in rank order at which the running weight passes *r, found by
 * partitioning around pivots (expected linear; no sort but of the last few); -1, with *r
 * lowered by the weight of what it walked, when rounding leaves *r unpassed. Reorders c. */
static int32_t pass_in_rank_order(cand_t *c, size_t n, double *r)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 32) {
        cand_t pivot = c[lo + (hi - lo) / 2];
        size_t mid = lo;
        double before = 0; /* the weight ranked before the pivot */
        for (size_t i = lo; i < hi; i++) {
            if (ranks_before(&c[i], &pivot)) {
                cand_t t = c[mid];
                c[mid] = c[i];
                c[i] = t;
                before += c[mid++].value;
            }
        }
        if (before > *r) { /* it passes before the pivot */
            hi = mid;
            continue;
        }
        *r -= before;
        *r -= pivot.value;
        if (*r < 0)
            return pivot.id;
        for (size_t i = mid; i < hi; i++) { /* the pivot first, then what ranks after it */
            if (c[i].id == pivot.id) {
                c[i] = c[mid];
                c[mid] = pivot;
                break;
            }
        }
        lo = mid + 1;
    }
    qsort(c + lo, hi - lo, sizeof *c, cmp_rank);
    for (size_t i = lo; i < hi; i++) {
        *r -= c[i].value;
        if (*r < 0)
            return c[i].id;
    }
    return -1;
}

/* The draw r over candidates in no particular order (weights in [0, 1]), walked in rank order
 * like the sorted path: the histogram of the weights finds the bin where the running mass from
 * the top passes r; only in that bin are tokens ranked. -1 when rounding leaves r unpassed.
 * Reorders c. */
static int32_t draw_unsorted(nx_sampler_t *self, cand_t *c, size_t n, double r)
{
    double *bin_mass = self->bin_mass;
    memset(bin_mass, 0, NUCLEUS_BINS * sizeof *bin_mass);
    for (size_t i = 0; i < n; i++)
        bin_mass[weight_bin(c[i].value)] += c[i].value;
    for (int bin = NUCLEUS_BINS - 1; bin >= 0; bin--) {
        if (bin_mass[bin] <= r) { /* the whole bin does not pass r */
            r -= bin_mass[bin];
            continue;
        }
        size_t end = 0;
        for (size_t i = 0; i < n; i++) {
            if (weight_bin(c[i].value) == bin) {
                cand_t t = c[end];
                c[end++] = c[i];
                c[i] = t;
            }
        }
        int32_t id = pass_in_rank_order(c, end, &r);
        if (id >= 0)
            return id;
    }
    return -1;
}

/* The last candidate in rank order with a positive weight (the lowest weight, the highest id
 * among equals): the draw's fallback when rounding left r unpassed. */
static int32_t last_positive(const cand_t *c, size_t n)
{
    int32_t id = c[0].id;
    float low = INFINITY;
    for (size_t i = 0; i < n; i++)
        if (c[i].value > 0 && (c[i].value < low || (c[i].value == low && c[i].id > id))) {
            low = c[i].value;
            id = c[i].id;
        }
    return id;
}

/* Sample n candidates: row's ids [0, n), or with row NULL self->cands[0..n) (a grammar's
 * allowed ids, in id order): top-k, temperature, top-p, min-p, then the plan's draw. */
static int32_t sample(nx_sampler_t *self, const float *row, size_t n, const nx__pick_t *p)
{
    cand_t *c = self->cands;
    bool sorted;
    if (p->top_k > 0 && p->top_k < n) {
        select_top_k(self, row, n, p->top_k);
        n = p->top_k;
        sorted = true;
    } else {
        if (row)
            for (uint32_t i = 0; i < n; i++)
                c[i] = (cand_t){clean(row[i]), (int32_t)i};
        sorted = false;
    }
    float max_logit = sorted ? c[0].value : max_value(c, n);
    if (max_logit == -INFINITY) /* nothing is possible: fall back to the lowest id */
        return c[0].id;
    double total = to_weights(c, n, max_logit, p->temperature);

    if (p->top_p < 1.0f) { /* keep the smallest prefix whose mass reaches top_p */
        double mass = (double)p->top_p * total;
        if (sorted) {
            double before = 0;
            size_t keep = 0;
            while (keep < n && (keep == 0 || before < mass))
                before += c[keep++].value;
            n = keep;
        } else {
            n = nucleus_unsorted(self, c, n, mass);
        }
    }
    if (p->min_p > 0.0f) { /* the max weight is exactly 1: exp(0) */
        size_t keep = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].value >= p->min_p)
                c[keep++] = c[i];
        n = keep; /* at least the max survives */
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += c[i].value;
    double r = p->draw * sum;
    if (!sorted) {
        int32_t id = draw_unsorted(self, c, n, r);
        return id >= 0 ? id : last_positive(c, n);
    }
    for (size_t i = 0; i < n; i++) {
        r -= c[i].value;
        if (r < 0)
            return c[i].id;
    }
    for (size_t i = n; i-- > 0;) /* rounding left r >= 0: the last token with weight */
        if (c[i].value > 0)
            return c[i].id;
    return c[0].id;
}

/* The allowed ids of the plan's mask (ids past allow_bits or the vocabulary are not), in id
 * order with their logits, into self->cands; returns how many. One pass over the mask's
 * words: a grammar state usually allows a few hundred ids, so the pick that follows reads
 * those, not the whole row. */
static size_t gather_allowed(nx_sampler_t *self, const float *logits, const nx__pick_t *p)
{
    cand_t *c = self->cands;
    uint32_t limit = p->allow_bits < self->vocab ? p->allow_bits : self->vocab;
    size_t n = 0;
    for (uint32_t base = 0; base < limit; base += 32) {
        uint32_t bits = p->allow[base / 32];
        if (limit - base < 32)
            bits &= (1u << (limit - base)) - 1;
        if (bits == ~0u) { /* a whole word allowed (inside a string, most are) */
            for (uint32_t i = base; i < base + 32; i++)
                c[n++] = (cand_t){clean(logits[i]), (int32_t)i};
            continue;
        }
        for (; bits; bits &= bits - 1) {
            uint32_t i = base + (uint32_t)__builtin_ctz(bits);
            c[n++] = (cand_t){clean(logits[i]), (int32_t)i};
        }
    }
    return n;
}

/* CTRL's penalty over candidates c[0..n) in id order: the plan's ids found by binary search.
 * Values are already clean, and -inf stays -inf. */
static void penalize_cands(cand_t *c, size_t n, const nx__pick_t *p)
{
    float penalty = p->repetition_penalty;
    if (penalty == 1.0f)
        return;
    for (uint32_t k = 0; k < p->penalty_count; k++) {
        int32_t id = p->penalty_ids[k];
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c[mid].id < id)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < n && c[lo].id == id)
            c[lo].value = c[lo].value < 0 ? c[lo].value * penalty : c[lo].value / penalty;
    }
}

/* A pick under the plan's grammar mask. The mask goes first: only the allowed ids are
 * candidates, then the repetition penalty, temperature, top-k, top-p and min-p apply to them,
 * so the draw reads exactly the constrained distribution and nothing is resampled; it is the
 * pick of a row whose disallowed logits are -inf, without a pass over the row. -1 when the
 * mask allows no id; the lowest allowed id when every allowed logit is -inf or NaN. */
static int32_t pick_masked(nx_sampler_t *self, const nx__pick_t *plan, const float *logits)
{
    size_t n = gather_allowed(self, logits, plan);
    if (n == 0)
        return -1;
    cand_t *c = self->cands;
    penalize_cands(c, n, plan);
    if (plan->temperature != 0.0f)
        return sample(self, NULL, n, plan);
    size_t best = 0; /* greedy: the lowest id on ties, as argmax */
    for (size_t i = 1; i < n; i++)
        if (c[i].value > c[best].value)
            best = i;
    return c[best].id;
}

int32_t nx__sampler_pick_plan(nx_sampler_t *self, const nx__pick_t *plan, const float *logits)
{
    if (plan->allow)
        return pick_masked(self, plan, logits);
    const float *row = apply_penalty(self, logits, plan);
    return plan->temperature == 0.0f ? argmax(row, self->vocab)
                                     : sample(self, row, self->vocab, plan);
}

int32_t nx_sampler_pick(nx_sampler_t *self, const float *logits, const int32_t *history,
                        size_t history_len)
{
    nx__pick_t plan;
    nx__sampler_plan(self, history, history_len, &plan);
    return nx__sampler_pick_plan(self, &plan, logits);
}

/* nx__sampler_pick_plan under a mask given for this one pick. */
int32_t nx_sampler_pick_masked(nx_sampler_t *self, const float *logits, const int32_t *history,
                               size_t history_len, const uint32_t *allow, uint32_t allow_bits)
{
    const uint32_t *saved = self->allow;
    uint32_t saved_bits = self->allow_bits;
    nx__sampler_set_allow(self, allow, allow_bits);
    nx__pick_t plan;
    nx__sampler_plan(self, history, history_len, &plan);
    int32_t id = nx__sampler_pick_plan(self, &plan, logits);
    self->allow = saved;
    self->allow_bits = saved_bits;
    return id;
}
