/* cuda_sample.cu — token picks on the GPU, so that only the chosen ids cross the bus (see
 * cuda_kernels.h nx__cu_sample; the plan comes from pick.h).
 *
 * NOT YET RUN ON A GPU: written on a machine without one; compiled for sm_90 and run under
 * the CPU emulation of tests/cuemu only.
 *
 * One block per pick. The semantics are the CPU sampler's (sampler.c): the repetition penalty
 * on the distinct ids of the history; greedy is the first index of the largest logit (NaN
 * ranks as -inf); otherwise elements are ranked by logit, the lower id first among equal
 * logits, and the kept set is the top-k of that ranking, then the smallest prefix of it whose
 * weight exp((l - max) / T) reaches top_p of the kept weight, then the weights >= min_p; the
 * draw r = draw * (kept weight) picks the first element, in rank order, where the running
 * weight passes r.
 *
 * Two ways, without sorting 152k logits. The fast path (below, with its own comment) finds a
 * prefix of the ranking of at most PREFIX_CAP elements that holds the answer in a few passes,
 * sorts it in shared memory and walks it as the CPU does; it covers top-k <= 1024 and, for
 * peaked rows, top-p, min-p and plain temperature. The exact search decides everything else:
 * every "first element in rank order where a running sum reaches a target" (the k-th element:
 * every weight 1; the top-p cut; the draw) is found by a bitwise search over the
 * order-preserving 32-bit key of the logit, highest bit first: the largest key K whose
 * elements at or above it reach the target, then, among elements with key K (ties), the
 * smallest id that reaches it. Each probe is one pass over the row (it stays in
 * L2) and one block reduction. Every sum is taken in a fixed order (each thread over its
 * strided elements, then the warps in order), so a pick is deterministic.
 *
 * Cost, by reading (not yet measured on a GPU): greedy is one pass over the row. The fast path
 * is the argmax pass, one more for the row's weight when there is no top-k, one to three
 * bracket passes, one to gather, and a sort of at most 2048 keys; the exact search takes up
 * to ~32 passes per search and up to three searches (top-k, top-p, draw), plus ~18 when a cut
 * falls among equal logits. bench/decode's "sampled" row and bench/gpu_decode.py show what a
 * sampled pick costs against greedy; NEXUS_CUDA_PICK=exact turns the fast path off.
 */
#include "cuda_kernels.h"

#include "cuda_launch.h"
#include <math.h>
#include <stdint.h>

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float clean_logit(float v)
{
    return isnan(v) ? -INFINITY : v;
}

/* Order-preserving key: a > b as floats (NaN as -inf) iff key(a) > key(b) as integers, and
 * -0 has +0's key (the CPU compares them as equal, so the lower id ranks first). */
__device__ __forceinline__ uint32_t key_of(float v)
{
    uint32_t u = __float_as_uint(clean_logit(v));
    if (u == 0x80000000u)
        u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* A cut in rank order: an element (key, id) is at or before it when key > cut.key, or key ==
 * cut.key and id <= cut.id. {0, UINT32_MAX} keeps everything. */
typedef struct cut {
    uint32_t key;
    uint32_t id;
} cut_t;

__device__ __forceinline__ bool within(uint32_t key, uint32_t id, cut_t c)
{
    return key > c.key || (key == c.key && id <= c.id);
}

/* What a search sums: COUNT gives every element weight 1 (the k-th element); KEPT_K the
 * weight inside the top-k cut (top-p); KEPT_ALL the weight inside every filter (the draw). */
enum { COUNT = 0, KEPT_K = 1, KEPT_ALL = 2 };

typedef struct pick_ctx {
    const float *row;
    uint32_t vocab;
    float max_logit;
    float temperature;
    float min_p;
    cut_t k_cut, p_cut;
} pick_ctx_t;

/* The unnormalised probability exp((l - max) / T) of logit l (the CPU sampler's weight). */
__device__ __forceinline__ float prob_weight(const pick_ctx_t &c, float l)
{
    return expf((clean_logit(l) - c.max_logit) / c.temperature);
}

__device__ __forceinline__ float weight(const pick_ctx_t &c, int stage, float l, uint32_t key,
                                        uint32_t id)
{
    if (stage == COUNT)
        return 1.f;
    if (!within(key, id, c.k_cut))
        return 0.f;
    float w = prob_weight(c, l);
    if (stage == KEPT_ALL && (!within(key, id, c.p_cut) || w < c.min_p))
        return 0.f;
    return w;
}

__device__ __forceinline__ float warp_sum_f(float v)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

/* Sums of a and b over the block in a fixed order; every thread gets them. Every thread of
 * the block calls it. red holds 2 * SAMPLE_WARPS floats. */
__device__ void block_sum2(float *a, float *b, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float wa = warp_sum_f(*a), wb = warp_sum_f(*b);
    __syncthreads(); /* red may still be read by the previous call */
    if (lane == 0) {
        red[warp] = wa;
        red[SAMPLE_WARPS + warp] = wb;
    }
    __syncthreads();
    float ta = 0.f, tb = 0.f;
    for (int i = 0; i < SAMPLE_WARPS; i++) {
        ta += red[i];
        tb += red[SAMPLE_WARPS + i];
    }
    *a = ta;
    *b = tb;
}

/* Sum of the stage's weights over the elements with key >= min_key, and the number of
 * elements with key == min_key and a positive weight. */
__device__ void sum_from(const pick_ctx_t &c, int stage, uint32_t min_key, float *sum,
                         float *ties, float *red)
{
    float s = 0.f, t = 0.f;
    for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        float l = c.row[i];
        uint32_t key = key_of(l);
        if (key < min_key)
            continue;
        float w = weight(c, stage, l, key, i);
        s += w;
        t += key == min_key && w > 0.f ? 1.f : 0.f;
    }
    *sum = s;
    *ties = t;
    block_sum2(sum, ties, red);
}

/* Sum over the elements with key > k plus those with key == k and id <= max_id. */
__device__ float sum_through(const pick_ctx_t &c, int stage, uint32_t k, uint32_t max_id,
                             float *red)
{
    float s = 0.f, unused = 0.f;
    for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        float l = c.row[i];
        uint32_t key = key_of(l);
        if (key > k || (key == k && i <= max_id))
            s += weight(c, stage, l, key, i);
    }
    block_sum2(&s, &unused, red);
    return s;
}

__device__ __forceinline__ bool reaches(float sum, float target, bool strict)
{
    return strict ? sum > target : sum >= target;
}

/* The first element in rank order at which the running sum of the stage's weights reaches
 * target (strict: passes it). *found false when even the whole sum does not (rounding). */
__device__ cut_t find_cut(const pick_ctx_t &c, int stage, float target, bool strict,
                          bool *found, float *red)
{
    float sum, ties;
    sum_from(c, stage, 0, &sum, &ties, red);
    *found = reaches(sum, target, strict);
    if (!*found)
        return cut_t{0, UINT32_MAX};
    uint32_t k = 0;
    for (int bit = 31; bit >= 0; bit--) { /* largest k whose elements at or above it reach */
        uint32_t probe = k | (1u << bit);
        sum_from(c, stage, probe, &sum, &ties, red);
        if (reaches(sum, target, strict))
            k = probe;
    }
    sum_from(c, stage, k, &sum, &ties, red);
    /* the elements above k do not reach; among the ties at k, the smallest id that does */
    uint32_t lo = 0, hi = c.vocab - 1;
    if (ties > 1.5f) {
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (reaches(sum_through(c, stage, k, mid, red), target, strict))
                hi = mid;
            else
                lo = mid + 1;
        }
        return cut_t{k, lo};
    }
    /* one tie: its id (the smallest with key k and a positive weight) */
    __shared__ uint32_t best;
    if (threadIdx.x == 0)
        best = UINT32_MAX;
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        float l = c.row[i];
        uint32_t key = key_of(l);
        if (key == k && weight(c, stage, l, key, i) > 0.f)
            atomicMin(&best, i);
    }
    __syncthreads();
    cut_t r = cut_t{k, best};
    __syncthreads(); /* everyone has read best before a later call resets it */
    return r;
}

/* The largest clean logit and its first index, over the block. */
__device__ void block_argmax(const float *row, uint32_t vocab, float *max_out, uint32_t *id_out)
{
    __shared__ float best_v[SAMPLE_WARPS];
    __shared__ uint32_t best_i[SAMPLE_WARPS];
    float bv = -INFINITY;
    uint32_t bi = UINT32_MAX;
    for (uint32_t i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) { /* i increases */
        float v = clean_logit(row[i]);
        if (v > bv || bi == UINT32_MAX) {
            bv = v;
            bi = i;
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, bv, off);
        uint32_t oi = __shfl_xor_sync(FULL_MASK, bi, off);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        best_v[warp] = bv;
        best_i[warp] = bi;
    }
    __syncthreads();
    bv = best_v[0];
    bi = best_i[0];
    for (int w = 1; w < SAMPLE_WARPS; w++)
        if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) {
            bv = best_v[w];
            bi = best_i[w];
        }
    *max_out = bv;
    *id_out = bi == UINT32_MAX ? 0 : bi;
    __syncthreads(); /* everyone has read the arrays */
}

/* The last element in rank order with a positive weight (the draw's fallback when rounding
 * left the running sum short of r, as sampler.c's). */
__device__ uint32_t last_positive(const pick_ctx_t &c)
{
    __shared__ unsigned long long worst; /* (~key << 32 | id): the largest is the last */
    if (threadIdx.x == 0)
        worst = 0;
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        float l = c.row[i];
        uint32_t key = key_of(l);
        if (weight(c, KEPT_ALL, l, key, i) > 0.f)
            atomicMax(&worst, ((unsigned long long)~key << 32) | i);
    }
    __syncthreads();
    uint32_t id = (uint32_t)(worst & 0xffffffffu);
    __syncthreads();
    return id;
}

/* ------------------------------------------------------------------------------------------
 * The fast path: every filter keeps a prefix of the rank order (top-k, top-p and min-p) and the
 * draw lands in the kept prefix, so it is enough to find a prefix S = {key >= lo} of at most
 * PREFIX_CAP elements that holds the answer, sort S in shared memory, and walk it exactly as
 * the CPU sampler walks its sorted candidates (sums in double, in rank order). S is found by a
 * bracket search: each pass counts (and weighs) the elements at or above BRACKETS keys at
 * once, first at max - 2^j/4 (j < BRACKETS; in units of the temperature for weights), then
 * evenly between the last two keys that did and did not reach the target. When S cannot be
 * small (flat logits, a target deep in the tail, more ties than fit) or the walk does not end
 * inside S (float against double rounding at a boundary), the exact search above decides.
 */
#define PREFIX_CAP 2048   /* elements S may hold (sorted as 64-bit keys: 16 KiB) */
#define TOPK_FAST_MAX 1024
#define BRACKETS 8
#define BRACKET_PASSES 10

typedef struct thresholds {
    uint32_t key[BRACKETS]; /* non-increasing */
} thresholds_t;

/* For each j: the number of elements with key >= t.key[j] and (by_mass) their weight
 * exp((l - max) / T); every thread gets the same totals. red holds 2 * BRACKETS * SAMPLE_WARPS
 * floats. Counts are exact in float (vocab < 2^24). */
__device__ void bracket_pass(const pick_ctx_t &c, bool by_mass, const thresholds_t &t,
                             float *count, float *mass, float *red)
{
    float cnt[BRACKETS], st[BRACKETS];
#pragma unroll
    for (int j = 0; j < BRACKETS; j++)
        cnt[j] = st[j] = 0.f;
    uint32_t lowest = t.key[BRACKETS - 1];
    for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        float l = c.row[i];
        uint32_t key = key_of(l);
        if (key < lowest) /* most elements, after the first pass */
            continue;
        float w = by_mass ? prob_weight(c, l) : 0.f;
#pragma unroll
        for (int j = 0; j < BRACKETS; j++)
            if (key >= t.key[j]) {
                cnt[j] += 1.f;
                st[j] += w;
            }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < BRACKETS; j++) {
        cnt[j] = warp_sum_f(cnt[j]);
        st[j] = warp_sum_f(st[j]);
    }
    __syncthreads(); /* red may still be read by the previous call */
    if (lane == 0)
        for (int j = 0; j < BRACKETS; j++) {
            red[j * SAMPLE_WARPS + warp] = cnt[j];
            red[(BRACKETS + j) * SAMPLE_WARPS + warp] = st[j];
        }
    __syncthreads();
    for (int j = 0; j < BRACKETS; j++) {
        float a = 0.f, b = 0.f;
        for (int w = 0; w < SAMPLE_WARPS; w++) { /* the same order in every thread */
            a += red[j * SAMPLE_WARPS + w];
            b += red[(BRACKETS + j) * SAMPLE_WARPS + w];
        }
        count[j] = a;
        mass[j] = b;
    }
}

/* A prefix {key >= *lo} of at most PREFIX_CAP elements whose count (or weight, by_mass)
 * reaches target (strict: passes it). false: there is none the search can find. */
__device__ bool find_prefix(const pick_ctx_t &c, bool by_mass, float target, bool strict,
                            float *red, uint32_t *lo_out)
{
    float scale = by_mass ? c.temperature : 1.f;
    thresholds_t t;
    for (int j = 0; j < BRACKETS; j++)
        t.key[j] = key_of(c.max_logit - ldexpf(scale, j - 2));
    uint64_t hi = (uint64_t)key_of(c.max_logit) + 1; /* nothing at or above: does not reach */
    uint32_t lo = 0;
    float count_lo = 0.f;
    bool have_lo = false;
    for (int pass = 0; pass < BRACKET_PASSES; pass++) {
        float count[BRACKETS], mass[BRACKETS];
        bracket_pass(c, by_mass, t, count, mass, red);
        int j = 0;
        while (j < BRACKETS && !reaches(by_mass ? mass[j] : count[j], target, strict))
            j++;
        if (j < BRACKETS) {
            lo = t.key[j];
            count_lo = count[j];
            have_lo = true;
            if (j > 0)
                hi = t.key[j - 1];
        } else if (!have_lo) {
            return false; /* deeper than the first pass looks: the exact search */
        } else {
            hi = t.key[BRACKETS - 1];
        }
        if (count_lo <= (float)PREFIX_CAP) {
            *lo_out = lo;
            return true;
        }
        if (hi - lo <= 1)
            return false; /* more equal logits than S holds */
        uint64_t step = (hi - lo) / (BRACKETS + 1);
        for (int k = 0; k < BRACKETS; k++) { /* strictly between lo and hi, non-increasing */
            uint64_t key = step ? hi - (uint64_t)(k + 1) * step : hi - (uint64_t)(k + 1);
            t.key[k] = (uint32_t)(key > lo ? key : lo + 1);
        }
    }
    return false;
}

/* The id in a sorted entry ((~key << 32) | id). */
__device__ __forceinline__ uint32_t sorted_id(unsigned long long entry)
{
    return (uint32_t)(entry & 0xffffffffu);
}

/* Sorts S = {key >= lo} (at most PREFIX_CAP elements) into rank order in `sorted` ((~key <<
 * 32) | id, ascending) and their weights into wts; returns |S|. Every thread calls it. */
__device__ uint32_t gather_sorted(const pick_ctx_t &c, uint32_t lo, unsigned long long *sorted,
                                  float *wts)
{
    __shared__ uint32_t fill;
    if (threadIdx.x == 0)
        fill = 0;
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
        uint32_t key = key_of(c.row[i]);
        if (key < lo)
            continue;
        uint32_t slot = atomicAdd(&fill, 1u); /* any order: the sort below fixes it */
        if (slot < PREFIX_CAP)
            sorted[slot] = ((unsigned long long)~key << 32) | i;
    }
    __syncthreads();
    uint32_t n = fill < PREFIX_CAP ? fill : PREFIX_CAP;
    uint32_t size = 32;
    while (size < n)
        size <<= 1;
    for (uint32_t i = n + threadIdx.x; i < size; i += SAMPLE_THREADS)
        sorted[i] = ~0ull; /* padding sorts last */
    __syncthreads();
    for (uint32_t k = 2; k <= size; k <<= 1) { /* bitonic sort, ascending */
        for (uint32_t j = k >> 1; j > 0; j >>= 1) {
            for (uint32_t i = threadIdx.x; i < size; i += SAMPLE_THREADS) {
                uint32_t other = i ^ j;
                if (other <= i)
                    continue;
                unsigned long long a = sorted[i], b = sorted[other];
                if ((a > b) == ((i & k) == 0)) {
                    sorted[i] = b;
                    sorted[other] = a;
                }
            }
            __syncthreads();
        }
    }
    for (uint32_t i = threadIdx.x; i < n; i += SAMPLE_THREADS)
        wts[i] = prob_weight(c, c.row[sorted_id(sorted[i])]);
    __syncthreads();
    return n;
}

/* The CPU sampler's walk (sampler.c sample(), its sorted branch) over S in rank order, by one
 * thread: top-k (the first k of S), top-p, min-p (compacting wts and sorted in place), the
 * draw. total_all: the weight of the whole row, where no top-k bounds the candidates; kept_all:
 * no filter at all, so the draw's sum is total_all. -1: the walk did not end inside S. */
__device__ int32_t walk_sorted(const nx__cu_pick_t &p, bool top_k, uint32_t n,
                               unsigned long long *sorted, float *wts, float total_all)
{
    double total = total_all;
    if (top_k) {
        n = p.top_k < n ? p.top_k : n;
        total = 0;
        for (uint32_t i = 0; i < n; i++)
            total += wts[i];
    }
    bool kept_all = !top_k && p.top_p >= 1.f && p.min_p <= 0.f;
    if (p.top_p < 1.f) {
        double mass = (double)p.top_p * total, before = 0;
        uint32_t keep = 0;
        while (keep < n && (keep == 0 || before < mass))
            before += wts[keep++];
        if (!top_k && before < mass)
            return -1; /* the nucleus goes on past S (rounding) */
        n = keep;
    }
    if (p.min_p > 0.f) { /* the max weight is exactly 1 */
        uint32_t keep = 0;
        for (uint32_t i = 0; i < n; i++)
            if (wts[i] >= p.min_p) {
                wts[keep] = wts[i];
                sorted[keep++] = sorted[i];
            }
        n = keep;
    }
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += wts[i];
    double r = (double)p.draw * (kept_all ? (double)total_all : sum);
    for (uint32_t i = 0; i < n; i++) {
        r -= wts[i];
        if (r < 0)
            return (int32_t)sorted_id(sorted[i]);
    }
    if (kept_all)
        return -1; /* the draw lands past S (rounding) */
    for (uint32_t i = n; i-- > 0;) /* rounding left r >= 0: the last element with weight */
        if (wts[i] > 0)
            return (int32_t)sorted_id(sorted[i]);
    return n ? (int32_t)sorted_id(sorted[0]) : -1;
}

/* The pick by the fast path, or -1 when the exact search must decide. Every thread calls it
 * and gets the same answer (every decision is taken on block-wide sums). Hot path of sampled
 * decode. */
__device__ int32_t fast_pick(const pick_ctx_t &c, const nx__cu_pick_t &p, float *red)
{
    __shared__ unsigned long long sorted[PREFIX_CAP];
    __shared__ float wts[PREFIX_CAP];
    __shared__ int32_t picked;
    bool top_k = p.top_k > 0 && p.top_k < c.vocab;
    if (top_k && p.top_k > TOPK_FAST_MAX)
        return -1;
    float total_all = 0.f;
    uint32_t lo;
    bool found;
    if (top_k) {
        found = find_prefix(c, false, (float)p.top_k, false, red, &lo);
    } else {
        /* the whole row's weight, and how many weights reach min_p */
        float s = 0.f, at_min_p = 0.f;
        for (uint32_t i = threadIdx.x; i < c.vocab; i += SAMPLE_THREADS) {
            float w = prob_weight(c, c.row[i]);
            s += w;
            at_min_p += w >= p.min_p ? 1.f : 0.f;
        }
        block_sum2(&s, &at_min_p, red);
        total_all = s;
        if (p.top_p < 1.f) /* S holds the nucleus */
            found = find_prefix(c, true, p.top_p * total_all, false, red, &lo);
        else if (p.min_p > 0.f) /* S holds what min_p keeps */
            found = find_prefix(c, false, at_min_p, false, red, &lo);
        else /* S holds the drawn element */
            found = find_prefix(c, true, p.draw * total_all, true, red, &lo);
    }
    if (!found)
        return -1;
    uint32_t n = gather_sorted(c, lo, sorted, wts);
    if (threadIdx.x == 0)
        picked = walk_sorted(p, top_k, n, sorted, wts, total_all);
    __syncthreads();
    int32_t id = picked;
    __syncthreads(); /* everyone has read it */
    return id;
}

/* A grammar's mask, in place: disallowed logits become -inf (one pass over the row; the mask
 * words stay in L1). Returns the lowest allowed id (UINT32_MAX: none) to every thread. */
__device__ uint32_t apply_mask(float *row, uint32_t vocab, const uint32_t *mask,
                               uint32_t allow_bits)
{
    __shared__ uint32_t first;
    if (threadIdx.x == 0)
        first = UINT32_MAX;
    __syncthreads();
    uint32_t mine = UINT32_MAX;
    for (uint32_t i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
        bool ok = i < allow_bits && (mask[i >> 5] >> (i & 31) & 1u);
        if (!ok)
            row[i] = -INFINITY;
        else if (mine == UINT32_MAX)
            mine = i; /* i increases: the thread's lowest */
    }
    if (mine != UINT32_MAX)
        atomicMin(&first, mine);
    __syncthreads();
    uint32_t r = first;
    __syncthreads(); /* everyone has read it */
    return r;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(float *logits, uint32_t vocab, const nx__cu_pick_t *picks, uint32_t count,
                  const int32_t *penalty_ids, const uint32_t *masks, uint32_t mask_words,
                  int32_t *ids)
{
    __shared__ float red[2 * BRACKETS * SAMPLE_WARPS];
    if (blockIdx.x >= count)
        return;
    nx__cu_pick_t p = picks[blockIdx.x];
    float *row = logits + (uint64_t)p.row * vocab;
    /* the grammar's mask first, as the CPU sampler: the penalty keeps -inf at -inf */
    uint32_t first_allowed = 0;
    if (p.flags & NX_CU_PICK_MASK) {
        first_allowed = apply_mask(row, vocab, masks + (uint64_t)p.mask_slot * mask_words,
                                   p.allow_bits);
        if (first_allowed == UINT32_MAX) { /* nothing allowed: the host's -1 */
            if (threadIdx.x == 0)
                ids[blockIdx.x] = -1;
            return;
        }
    }
    /* the repetition penalty, in place (the ids are distinct: no two threads share one) */
    if (p.repetition_penalty != 1.f) {
        for (uint32_t i = threadIdx.x; i < p.penalty_count; i += SAMPLE_THREADS) {
            int32_t id = penalty_ids[p.penalty_first + i];
            if (id >= 0 && (uint32_t)id < vocab) {
                float l = row[id];
                row[id] = l < 0.f ? l * p.repetition_penalty : l / p.repetition_penalty;
            }
        }
        __syncthreads();
    }
    float max_logit;
    uint32_t best;
    block_argmax(row, vocab, &max_logit, &best);
    if (p.temperature == 0.f || max_logit == -INFINITY) { /* greedy, or nothing possible */
        if (threadIdx.x == 0)
            ids[blockIdx.x] = (int32_t)(max_logit == -INFINITY ? first_allowed : best);
        return;
    }
    pick_ctx_t c = {row, vocab, max_logit, p.temperature, p.min_p, {0, UINT32_MAX},
                    {0, UINT32_MAX}};
    int32_t fast = p.flags & NX_CU_PICK_EXACT ? -1 : fast_pick(c, p, red);
    if (fast >= 0) {
        if (threadIdx.x == 0)
            ids[blockIdx.x] = fast;
        return;
    }
    bool found;
    if (p.top_k > 0 && p.top_k < vocab)
        c.k_cut = find_cut(c, COUNT, (float)p.top_k, false, &found, red);
    if (p.top_p < 1.f) {
        float total, ties;
        sum_from(c, KEPT_K, 0, &total, &ties, red);
        c.p_cut = find_cut(c, KEPT_K, p.top_p * total, false, &found, red);
    }
    float kept, ties;
    sum_from(c, KEPT_ALL, 0, &kept, &ties, red);
    cut_t drawn = find_cut(c, KEPT_ALL, p.draw * kept, true, &found, red);
    uint32_t id = found ? drawn.id : last_positive(c);
    if (threadIdx.x == 0)
        ids[blockIdx.x] = (int32_t)id;
}

extern "C" int nx__cu_sample(void *stream, float *logits, uint32_t vocab,
                             const nx__cu_pick_t *picks, uint32_t count,
                             const int32_t *penalty_ids, const uint32_t *masks,
                             uint32_t mask_words, int32_t *ids)
{
    if (count == 0 || vocab == 0)
        return 0;
    NX_LAUNCH(count, SAMPLE_THREADS, 0, (cudaStream_t)stream, sample_kernel)(
        logits, vocab, picks, count, penalty_ids, masks, mask_words, ids);
    return (int)cudaGetLastError();
}
