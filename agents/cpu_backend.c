/* cpu_backend.c — the forward pass on the CPU, behind the backend table (backend.h).
 *
 * Activations are fp32 host buffers sized for the step's rows; the residual stream is fp32.
 * Weights are read in place from the pool (BF16/F16/F32, or ggml's blocks). Every matmul covers
 * all rows of the batch at once (prefill and decode rows together), split over the thread pool
 * by tiles of output columns; attention is split by (sequence, query head). A matmul over block
 * weights first quantizes its input rows (cpu_quant.h), once per input and weight family: q, k
 * and v share theirs, as do gate and up.
 *
 * KV cache layout (one pool region per sequence, fp32):
 *   [layer][k|v][kv_head][capacity][head_dim]
 * so one head's keys for all positions are contiguous for the attention loop.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_kernels.h"
#include "cpu_quant.h"
#include "quant.h"
#include "threadpool.h"

typedef struct cpu_state {
    const nx_model_config_t *cfg;
    const nx__weights_t *w;
    nx_pool_t *pool;
    nx__tpool_t *tp;
    double *inv_freq;       /* [head_dim/2] */
    float **worker_scratch; /* per worker: a matmul tile of converted or repacked weight rows */
    size_t worker_floats;   /* floats in each worker_scratch */
    float **worker_scores;  /* per worker: attention scores, scores_cap floats */
    uint32_t scores_cap;
    /* activations, [rows_cap][...] */
    uint32_t rows_cap;
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *rope_cos, *rope_sin, *logits;
    uint32_t logits_cap;
    /* quantized matmul inputs, one buffer per weight family (NX__QF_32, NX__QF_256), each
     * [rows_cap][widest]; src is the fp32 input a buffer holds, for one run_matmuls only */
    void *qact_mem[2];
    nx__qact_t qact[2];
    const float *qact_src[2];
    struct stripe *stripes; /* per worker: a batch-1 run's chunks (see mm_stripes) */
} cpu_state_t;

/* A thread's chunks of a batch-1 run, [front, back) in one word (front in the low half), on a
 * cache line of its own. */
typedef struct stripe {
    _Alignas(64) uint64_t chunks;
} stripe_t;

/* count floats on a 64-byte boundary (free() releases it): the matmul's vector loads of
 * activation rows and converted weight tiles then do not straddle cache lines. */
static float *alloc_floats(size_t count)
{
    size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes ? bytes : 64);
}

static uint32_t q_dim(const nx_model_config_t *c) { return c->heads * c->head_dim; }
static uint32_t kv_dim(const nx_model_config_t *c) { return c->kv_heads * c->head_dim; }

/* The longest matmul input row: hidden, intermediate or the attention output. */
static uint32_t widest_input(const nx_model_config_t *c)
{
    uint32_t widest = c->hidden > c->intermediate ? c->hidden : c->intermediate;
    return q_dim(c) > widest ? q_dim(c) : widest;
}

static void free_activations(cpu_state_t *s)
{
    float **bufs[] = {&s->x, &s->xn, &s->q, &s->k, &s->v, &s->att,
                      &s->gate, &s->up, &s->rope_cos, &s->rope_sin};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    for (int f = 0; f < 2; f++) {
        free(s->qact_mem[f]);
        s->qact_mem[f] = NULL;
    }
    s->rows_cap = 0;
}

static void cpu_destroy(void *state)
{
    cpu_state_t *s = state;
    if (!s)
        return;
    free_activations(s);
    if (s->worker_scratch)
        for (uint32_t i = 0; i < nx__tpool_size(s->tp); i++)
            free(s->worker_scratch[i]);
    free(s->worker_scratch);
    if (s->worker_scores)
        for (uint32_t i = 0; i < nx__tpool_size(s->tp); i++)
            free(s->worker_scores[i]);
    free(s->worker_scores);
    free(s->stripes);
    free(s->logits);
    free(s->inv_freq);
    nx__tpool_destroy(&s->tp);
    free(s);
}

static int cpu_init(const nx_model_config_t *cfg, const nx__weights_t *w, nx_pool_t *pool,
                    const nx_engine_opts_t *opts, void **state_out, nx_err_t *err)
{
    cpu_state_t *s = calloc(1, sizeof *s);
    if (!s)
        return nx_err_set(err, NX_ENOMEM, "CPU backend: out of memory");
    s->cfg = cfg, s->w = w, s->pool = pool;
    s->tp = nx__tpool_new(opts ? opts->threads : 0, err);
    if (!s->tp)
        goto fail;
    s->inv_freq = calloc(cfg->head_dim / 2, sizeof *s->inv_freq);
    uint32_t widest = widest_input(cfg);
    s->worker_floats = (size_t)NX_K_TILE_COLS * widest;
    size_t quant_floats = (nx__q_scratch_bytes(widest) + sizeof(float) - 1) / sizeof(float);
    if (quant_floats > s->worker_floats)
        s->worker_floats = quant_floats;
    s->worker_scratch = calloc(nx__tpool_size(s->tp), sizeof *s->worker_scratch);
    s->worker_scores = calloc(nx__tpool_size(s->tp), sizeof *s->worker_scores);
    s->stripes = aligned_alloc(64, nx__tpool_size(s->tp) * sizeof *s->stripes);
    if (!s->inv_freq || !s->worker_scratch || !s->worker_scores || !s->stripes)
        goto oom;
    for (uint32_t i = 0; i < nx__tpool_size(s->tp); i++)
        if (!(s->worker_scratch[i] = alloc_floats(s->worker_floats)))
            goto oom;
    nx__k_rope_inv_freq(cfg, s->inv_freq);
    *state_out = s;
    return NX_OK;
oom:
    nx_err_set(err, NX_ENOMEM, "CPU backend: out of memory for scratch buffers");
fail:
    cpu_destroy(s);
    return err ? err->code : NX_ENOMEM;
}

/* ------------------------------------------------------------------------------------------
 * KV caches
 */
static int cpu_kv_alloc(void *state, uint32_t capacity, const char *owner, nx__kv_t *kv_out,
                        nx_err_t *err)
{
    cpu_state_t *s = state;
    nx_region_t *r = nx_pool_alloc(s->pool, nx_kv_bytes(s->cfg, NX_DEVICE_CPU, capacity), owner, err);
    if (!r)
        return err ? err->code : NX_EPOOLFULL;
    *kv_out = (nx__kv_t){.region = r, .base = nx_region_ptr(r), .capacity = capacity};
    return NX_OK;
}

static void cpu_kv_free(void *state, nx__kv_t *kv)
{
    cpu_state_t *s = state;
    if (kv->region)
        nx_pool_free(s->pool, &kv->region);
    kv->base = NULL;
}

/* Keys (kind 0) or values (kind 1) of one layer's kv head: [capacity][head_dim]. */
static float *kv_head(const cpu_state_t *s, const nx__kv_t *kv, uint32_t layer, int kind,
                      uint32_t head)
{
    const nx_model_config_t *c = s->cfg;
    uint64_t per_head = (uint64_t)kv->capacity * c->head_dim;
    return (float *)kv->base + (((uint64_t)layer * 2 + kind) * c->kv_heads + head) * per_head;
}

/* ------------------------------------------------------------------------------------------
 * Activation buffers
 */
static int ensure_rows(cpu_state_t *s, uint32_t rows, nx_err_t *err)
{
    if (rows <= s->rows_cap)
        return NX_OK;
    const nx_model_config_t *c = s->cfg;
    free_activations(s);
    size_t r = rows;
    s->x = alloc_floats(r * c->hidden);
    s->xn = alloc_floats(r * c->hidden);
    s->q = alloc_floats(r * q_dim(c));
    s->att = alloc_floats(r * q_dim(c));
    s->k = alloc_floats(r * kv_dim(c));
    s->v = alloc_floats(r * kv_dim(c));
    s->gate = alloc_floats(r * c->intermediate);
    s->up = alloc_floats(r * c->intermediate);
    s->rope_cos = alloc_floats(r * (c->head_dim / 2));
    s->rope_sin = alloc_floats(r * (c->head_dim / 2));
    bool qact_ok = true;
    for (int f = 0; f < 2; f++) {
        size_t bytes = nx__qact_bytes(f ? NX__QF_256 : NX__QF_32, rows, widest_input(c));
        qact_ok = qact_ok && (s->qact_mem[f] = aligned_alloc(64, bytes));
    }
    if (!s->x || !s->xn || !s->q || !s->att || !s->k || !s->v || !s->gate || !s->up ||
        !s->rope_cos || !s->rope_sin || !qact_ok) {
        free_activations(s);
        return nx_err_set(err, NX_ENOMEM, "CPU backend: out of memory for %u rows", rows);
    }
    s->rows_cap = rows;
    return NX_OK;
}

/* Each worker's attention scores hold the longest context in the batch. */
static int ensure_scores(cpu_state_t *s, const nx__batch_t *b, nx_err_t *err)
{
    uint32_t need = 0;
    for (uint32_t i = 0; i < b->seq_count; i++)
        if (b->seqs[i].kv->capacity > need)
            need = b->seqs[i].kv->capacity;
    if (need <= s->scores_cap)
        return NX_OK;
    for (uint32_t i = 0; i < nx__tpool_size(s->tp); i++) {
        free(s->worker_scores[i]);
        if (!(s->worker_scores[i] = malloc((size_t)need * sizeof(float)))) {
            s->scores_cap = 0;
            return nx_err_set(err, NX_ENOMEM,
                              "CPU backend: out of memory for attention over %u tokens", need);
        }
    }
    s->scores_cap = need;
    return NX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Parallel matmuls: a list of jobs, each split into tiles of output columns
 */
typedef struct mm_job {
    const float *x;          /* [n][w->cols] */
    uint32_t n;
    const nx__wref_t *w;
    const nx__wref_t *bias;  /* may be NULL or have ptr NULL */
    float *y;                /* [n][w->rows] */
    bool accumulate;         /* y += instead of y = (residual adds) */
} mm_job_t;

typedef struct mm_ctx {
    cpu_state_t *s;
    const mm_job_t *jobs;
    uint32_t job_count;
    uint32_t first_task[8];    /* first task index (striped: first chunk) of each job */
    uint32_t task_rows[8];     /* weight rows per task (striped: per chunk) of each job */
    const nx__qact_t *qact[8]; /* each job's quantized input, NULL for fp32 weights */
    bool striped;              /* a batch-1 run: see mm_stripes */
} mm_ctx_t;

/* Weight rows per task of a job. A task is a stretch of consecutive weight rows, which the
 * kernels stream (each next tile prefetched while one is worked on; a task's first tile starts
 * cold): large batches, compute bound, take 4 tiles so that the threads finish together; small
 * ones, memory bound, longer stretches. Batch 1 is split by mm_stripes instead. */
static uint32_t task_rows(const mm_job_t *job)
{
    return (job->n > 8 ? 4 : 16) * NX_K_TILE_COLS;
}

/* A task (striped: a chunk) of a run: rows [first, end) of job j. */
typedef struct mm_span {
    uint32_t j, first, end;
} mm_span_t;

static mm_span_t span_of(const mm_ctx_t *ctx, uint32_t index)
{
    uint32_t j = ctx->job_count - 1;
    while (index < ctx->first_task[j])
        j--;
    uint32_t rows = ctx->jobs[j].w->rows, span = ctx->task_rows[j];
    uint32_t first = (index - ctx->first_task[j]) * span;
    return (mm_span_t){j, first, rows - first < span ? rows : first + span};
}

/* The span's rows, on worker's scratch; cold: nobody prefetched its first tile. */
static void mm_rows(const mm_ctx_t *ctx, mm_span_t at, uint32_t worker, bool cold)
{
    uint32_t j = at.j, first = at.first, end = at.end;
    const mm_job_t *job = &ctx->jobs[j];
    if (ctx->qact[j]) {
        nx__q_matmul(ctx->qact[j], job->n, job->w, job->bias, first, end - first, job->y,
                     job->accumulate, ctx->s->worker_scratch[worker], cold);
        return;
    }
    for (uint32_t col = first; col < end; col += NX_K_TILE_COLS) {
        uint32_t cols = end - col < NX_K_TILE_COLS ? end - col : NX_K_TILE_COLS;
        nx__k_matmul_tile(job->x, job->n, job->w, job->bias, col, cols, job->y,
                          job->accumulate, ctx->s->worker_scratch[worker]);
    }
}

/* ------------------------------------------------------------------------------------------
 * Batch 1: stripes. A decode step is memory bound and each thread streams its rows with the
 * next tile prefetched, so what costs is a thread starting cold (its first tile asked for
 * whole, ~1.3 us for block weights) and a thread waiting at the run's end for the other's
 * last task. Equal tasks from one shared counter traded one against the other: 32-tile tasks
 * left a run's end waiting on up to one task (tens of us; the pool's spin was 3-5% of a 4B
 * Q4_K_M step, more when the VM stalled a thread), 8-tile ones cost more in cold starts
 * (0.90); the fp32 kernels had 16-tile tasks.
 * Here the run's rows are cut into chunks of STRIPE_TILES tiles (never across a job), and the
 * chunks into one contiguous stripe per thread of about equal bytes. Each thread takes its own
 * stripe's chunks from the front, in memory order, so one stream runs through the stripe with
 * nothing cold after its first tile; then it takes the other stripes' chunks from their back
 * ends until none is left. A run ends within one chunk (a few us) of evenly, whichever thread
 * ran slow. A stripe (stripe_t) is taken by compare-and-swap, each on its own cache line, so
 * an owner's takes stay in its core until a thief comes. Results do not depend on the split
 * (cpu_quant.h, cpu_kernels.h). 4B Q4_K_M decode against the shared counter
 * (bench/quant_pair.py --baseline-build): 1.10, 11 of 15 rounds; 4B F16: 1.13, 12 of 15
 * (bench/RESULTS.md).
 */
#define STRIPE_TILES 4

static bool stripe_take(stripe_t *stripe, bool back, uint32_t *chunk)
{
    uint64_t old = __atomic_load_n(&stripe->chunks, __ATOMIC_RELAXED);
    for (;;) {
        uint32_t front = (uint32_t)old, end = (uint32_t)(old >> 32);
        if (front >= end)
            return false;
        uint64_t want = back ? (uint64_t)(end - 1) << 32 | front
                             : (uint64_t)end << 32 | (front + 1);
        if (__atomic_compare_exchange_n(&stripe->chunks, &old, want, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            *chunk = back ? end - 1 : front;
            return true;
        }
    }
}

/* One pool task per thread (nx__tpool_run hands them out, so a thread the VM woke late still
 * joins while chunks are left); the worker index, not the task, names the thread's stripe. */
static void mm_stripes(const mm_ctx_t *ctx, uint32_t worker)
{
    uint32_t threads = nx__tpool_size(ctx->s->tp), chunk;
    mm_span_t last = {UINT32_MAX, 0, 0};
    while (stripe_take(&ctx->s->stripes[worker], false, &chunk)) {
        /* warm when it goes on from the previous chunk in the same job: that one's last
         * tile prefetched this one's first */
        mm_span_t at = span_of(ctx, chunk);
        mm_rows(ctx, at, worker, at.j != last.j || at.first != last.end);
        last = at;
    }
    for (uint32_t k = 1; k < threads; k++)
        while (stripe_take(&ctx->s->stripes[(worker + k) % threads], true, &chunk))
            mm_rows(ctx, span_of(ctx, chunk), worker, true);
}

/* Cut the run's chunks (ctx->first_task/task_rows set, `chunks` in all) into one stripe per
 * thread of about equal weight bytes. */
static void stripes_deal(const mm_ctx_t *ctx, uint32_t chunks)
{
    uint32_t threads = nx__tpool_size(ctx->s->tp);
    uint64_t total = 0, bytes[8];
    for (uint32_t j = 0; j < ctx->job_count; j++) {
        const nx__wref_t *w = ctx->jobs[j].w;
        bytes[j] = nx__quant_row_bytes(w->dtype, w->cols);
        total += bytes[j] * w->rows;
    }
    uint64_t seen = 0;
    uint32_t chunk = 0;
    for (uint32_t t = 0; t < threads; t++) {
        uint32_t front = chunk;
        uint64_t until = total / threads * (t + 1); /* bytes before the next stripe */
        for (; chunk < chunks && (t == threads - 1 || seen < until); chunk++) {
            mm_span_t at = span_of(ctx, chunk);
            seen += bytes[at.j] * (at.end - at.first);
        }
        __atomic_store_n(&ctx->s->stripes[t].chunks, (uint64_t)chunk << 32 | front,
                         __ATOMIC_RELAXED);
    }
}

static void mm_task(void *ctx_v, uint32_t task, uint32_t worker)
{
    const mm_ctx_t *ctx = ctx_v;
    if (ctx->striped) {
        mm_stripes(ctx, worker);
        return;
    }
    mm_rows(ctx, span_of(ctx, task), worker, true);
}

typedef struct quantize_ctx {
    nx__qact_t *qact;
    const float *x; /* [rows][qact->cols] */
} quantize_ctx_t;

static void quantize_task(void *ctx_v, uint32_t row, uint32_t worker)
{
    const quantize_ctx_t *ctx = ctx_v;
    nx__qact_quantize(ctx->qact, row, ctx->x + (uint64_t)row * ctx->qact->cols);
}

/* The job's input quantized for its weight's family, or NULL for an fp32 kernel. Inputs
 * already quantized by an earlier job of the same run_matmuls are reused. */
static const nx__qact_t *quantized_input(cpu_state_t *s, const mm_job_t *job)
{
    nx__qfamily_t family = nx__q_family(job->w->dtype);
    if (family == NX__QF_NONE)
        return NULL;
    int f = family == NX__QF_256;
    if (s->qact_src[f] == job->x && s->qact[f].cols == job->w->cols)
        return &s->qact[f];
    nx__qact_bind(&s->qact[f], family, job->n, job->w->cols, s->qact_mem[f]);
    quantize_ctx_t ctx = {&s->qact[f], job->x};
    if ((uint64_t)job->n * job->w->cols <= 8192) /* a decode step: not worth waking workers */
        for (uint32_t r = 0; r < job->n; r++)
            quantize_task(&ctx, r, 0);
    else
        nx__tpool_run(s->tp, job->n, quantize_task, &ctx);
    s->qact_src[f] = job->x;
    return &s->qact[f];
}

static void run_matmuls(cpu_state_t *s, const mm_job_t *jobs, uint32_t count)
{
    mm_ctx_t ctx = {s, jobs, count, {0}, {0}, {0}, true};
    uint32_t tasks = 0;
    s->qact_src[0] = s->qact_src[1] = NULL; /* inputs change between calls */
    for (uint32_t j = 0; j < count; j++) {
        ctx.qact[j] = quantized_input(s, &jobs[j]);
        ctx.striped = ctx.striped && jobs[j].n == 1;
    }
    for (uint32_t j = 0; j < count; j++) {
        uint32_t span = ctx.striped ? STRIPE_TILES * NX_K_TILE_COLS : task_rows(&jobs[j]);
        ctx.task_rows[j] = span;
        ctx.first_task[j] = tasks;
        tasks += (jobs[j].w->rows + span - 1) / span;
    }
    if (ctx.striped) {
        stripes_deal(&ctx, tasks);
        tasks = nx__tpool_size(s->tp);
    }
    nx__tpool_run(s->tp, tasks, mm_task, &ctx);
}

/* ------------------------------------------------------------------------------------------
 * Per-row work: norms, q/k norm + RoPE + cache writes
 */
typedef struct row_ctx {
    cpu_state_t *s;
    const nx__batch_t *b;
    const nx__wref_t *norm; /* for norm_task */
    uint32_t layer;
} row_ctx_t;

static void norm_task(void *ctx_v, uint32_t row, uint32_t worker)
{
    const row_ctx_t *ctx = ctx_v;
    uint32_t h = ctx->s->cfg->hidden;
    nx__k_rmsnorm(ctx->s->x + (uint64_t)row * h, h, ctx->norm, ctx->s->cfg->rms_eps,
                  ctx->s->xn + (uint64_t)row * h);
}

static void silu_task(void *ctx_v, uint32_t row, uint32_t worker)
{
    const row_ctx_t *ctx = ctx_v;
    uint64_t n = ctx->s->cfg->intermediate;
    nx__k_silu_mul(ctx->s->gate + row * n, ctx->s->up + row * n, (uint32_t)n);
}

/* Qwen3's per-head q/k RMSNorm, then RoPE, then this row's k and v into its cache slot. */
static void qk_task(void *ctx_v, uint32_t row, uint32_t worker)
{
    const row_ctx_t *ctx = ctx_v;
    const cpu_state_t *s = ctx->s;
    const nx_model_config_t *c = s->cfg;
    const nx__layer_weights_t *lw = &s->w->layers[ctx->layer];
    uint32_t hd = c->head_dim, half = hd / 2;
    const float *cos_t = s->rope_cos + (uint64_t)row * half;
    const float *sin_t = s->rope_sin + (uint64_t)row * half;
    float *q = s->q + (uint64_t)row * q_dim(c), *k = s->k + (uint64_t)row * kv_dim(c);
    for (uint32_t h = 0; h < c->heads; h++) {
        if (lw->q_norm.ptr)
            nx__k_rmsnorm(q + h * hd, hd, &lw->q_norm, c->rms_eps, q + h * hd);
        nx__k_rope(q + h * hd, hd, cos_t, sin_t, c->rope_adjacent);
    }
    const nx__batch_seq_t *seq = &ctx->b->seqs[ctx->b->row_seq[row]];
    uint32_t pos = ctx->b->positions[row];
    const float *v = s->v + (uint64_t)row * kv_dim(c);
    for (uint32_t h = 0; h < c->kv_heads; h++) {
        if (lw->k_norm.ptr)
            nx__k_rmsnorm(k + h * hd, hd, &lw->k_norm, c->rms_eps, k + h * hd);
        nx__k_rope(k + h * hd, hd, cos_t, sin_t, c->rope_adjacent);
        memcpy(kv_head(s, seq->kv, ctx->layer, 0, h) + (uint64_t)pos * hd, k + h * hd,
               hd * sizeof(float));
        memcpy(kv_head(s, seq->kv, ctx->layer, 1, h) + (uint64_t)pos * hd, v + h * hd,
               hd * sizeof(float));
    }
}

/* ------------------------------------------------------------------------------------------
 * Attention: one task per (sequence, query head), over that sequence's cache
 */
static void attn_task(void *ctx_v, uint32_t task, uint32_t worker)
{
    const row_ctx_t *ctx = ctx_v;
    const cpu_state_t *s = ctx->s;
    const nx_model_config_t *c = s->cfg;
    uint32_t head = task % c->heads;
    const nx__batch_seq_t *seq = &ctx->b->seqs[task / c->heads];
    uint32_t kvh = head / (c->heads / c->kv_heads), hd = c->head_dim;
    const float *keys = kv_head(s, seq->kv, ctx->layer, 0, kvh);
    const float *values = kv_head(s, seq->kv, ctx->layer, 1, kvh);
    float *scores = s->worker_scores[worker]; /* scores_cap >= capacity: see cpu_forward */
    float scale = 1.0f / sqrtf((float)hd);
    for (uint32_t r = 0; r < seq->row_count; r++) {
        uint64_t row = seq->row_first + r;
        uint32_t len = seq->pos_first + r + 1; /* causal: positions 0..pos */
        const float *q = s->q + row * q_dim(c) + (uint64_t)head * hd;
        float *out = s->att + row * q_dim(c) + (uint64_t)head * hd;
        nx__k_attend(q, keys, values, len, hd, scale, scores, out);
    }
}

/* ------------------------------------------------------------------------------------------
 * The forward pass
 */
static void embed_and_rope_tables(cpu_state_t *s, const nx__batch_t *b)
{
    const nx_model_config_t *c = s->cfg;
    uint32_t half = c->head_dim / 2;
    for (uint32_t r = 0; r < b->rows; r++) {
        nx__k_weight_row(&s->w->embed, (uint32_t)b->tokens[r], s->x + (uint64_t)r * c->hidden);
        for (uint32_t i = 0; i < half; i++) {
            double angle = (double)b->positions[r] * s->inv_freq[i];
            s->rope_cos[(uint64_t)r * half + i] = (float)cos(angle);
            s->rope_sin[(uint64_t)r * half + i] = (float)sin(angle);
        }
    }
}

static void layer_forward(cpu_state_t *s, const nx__batch_t *b, uint32_t layer)
{
    const nx__layer_weights_t *lw = &s->w->layers[layer];
    uint32_t n = b->rows;
    row_ctx_t rc = {s, b, &lw->attn_norm, layer};
    nx__tpool_run(s->tp, n, norm_task, &rc);
    mm_job_t qkv[3] = {{s->xn, n, &lw->q, &lw->q_bias, s->q, false},
                       {s->xn, n, &lw->k, &lw->k_bias, s->k, false},
                       {s->xn, n, &lw->v, &lw->v_bias, s->v, false}};
    run_matmuls(s, qkv, 3);
    nx__tpool_run(s->tp, n, qk_task, &rc);
    nx__tpool_run(s->tp, b->seq_count * s->cfg->heads, attn_task, &rc);
    mm_job_t o = {s->att, n, &lw->o, &lw->o_bias, s->x, true};
    run_matmuls(s, &o, 1);

    rc.norm = &lw->mlp_norm;
    nx__tpool_run(s->tp, n, norm_task, &rc);
    mm_job_t gate_up[2] = {{s->xn, n, &lw->gate, NULL, s->gate, false},
                           {s->xn, n, &lw->up, NULL, s->up, false}};
    run_matmuls(s, gate_up, 2);
    nx__tpool_run(s->tp, n, silu_task, &rc);
    mm_job_t down = {s->gate, n, &lw->down, NULL, s->x, true};
    run_matmuls(s, &down, 1);
}

/* Final norm of the wanted rows (gathered into xn), lm_head, copy to the destinations. */
static int logits_out(cpu_state_t *s, const nx__batch_t *b, nx_err_t *err)
{
    const nx_model_config_t *c = s->cfg;
    if (b->logit_count == 0)
        return NX_OK;
    if (b->logit_count > s->logits_cap) {
        free(s->logits);
        s->logits = malloc((size_t)b->logit_count * c->vocab * sizeof(float));
        s->logits_cap = s->logits ? b->logit_count : 0;
        if (!s->logits)
            return nx_err_set(err, NX_ENOMEM, "CPU backend: out of memory for %u logit rows",
                              b->logit_count);
    }
    for (uint32_t i = 0; i < b->logit_count; i++)
        nx__k_rmsnorm(s->x + (uint64_t)b->logit_rows[i] * c->hidden, c->hidden, &s->w->norm,
                      c->rms_eps, s->xn + (uint64_t)i * c->hidden);
    mm_job_t head = {s->xn, b->logit_count, &s->w->lm_head, NULL, s->logits, false};
    run_matmuls(s, &head, 1);
    for (uint32_t i = 0; i < b->logit_count; i++)
        memcpy(b->logit_out[i], s->logits + (uint64_t)i * c->vocab, c->vocab * sizeof(float));
    return NX_OK;
}

static int cpu_forward(void *state, const nx__batch_t *b, nx_err_t *err)
{
    cpu_state_t *s = state;
    int rc = ensure_scores(s, b, err);
    if (rc == NX_OK)
        rc = ensure_rows(s, b->rows, err);
    if (rc)
        return rc;
    embed_and_rope_tables(s, b);
    for (uint32_t layer = 0; layer < s->cfg->layers; layer++)
        layer_forward(s, b, layer);
    rc = logits_out(s, b, err);
    /* Deferred masks after the whole pass: nothing overlaps here, since the worker pool
     * already has every core the pass can use (on CUDA the host computes them while the GPU
     * runs the layers). Same picks as masks made before the step: the plan's draw is taken
     * when it is made, whatever the mask. */
    if (rc == NX_OK && b->before_picks)
        rc = b->before_picks(b->before_picks_user, err);
    return rc;
}

const nx__backend_ops_t nx__cpu_backend = {
    .name = "cpu",
    .init = cpu_init,
    .destroy = cpu_destroy,
    .kv_alloc = cpu_kv_alloc,
    .kv_free = cpu_kv_free,
    .forward = cpu_forward,
};
