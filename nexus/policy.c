/* policy.c — victim choice for eviction (see policy.h): filter by the hard rules, order the
 * candidates, take them in order until enough bytes are free. Pure: no clock, no globals. */
#include "policy.h"

#include <math.h>
#include <stdlib.h>

double nx_policy_cost(const nx_policy_model_t *m)
{
    double bytes = m->bytes ? (double)m->bytes : 1.0;
    return m->reload_ms * m->recent_use / bytes;
}

double nx_policy_decay(uint64_t elapsed_ns)
{
    return exp2(-((double)elapsed_ns / 1e9) / NX_POLICY_HALF_LIFE_S);
}

typedef struct candidate {
    size_t index;
    const nx_policy_model_t *model;
    nx_policy_t policy;
} candidate_t;

static int cmp_double(double a, double b) { return a < b ? -1 : a > b ? 1 : 0; }

/* Models without queued tasks first; then by policy; ties by index (stable, deterministic). */
static int compare(const void *pa, const void *pb)
{
    const candidate_t *a = pa, *b = pb;
    int c = (a->model->queued > 0) - (b->model->queued > 0);
    if (c)
        return c;
    if (a->policy == NX_POLICY_LRU) {
        c = (a->model->last_used_ns > b->model->last_used_ns) -
            (a->model->last_used_ns < b->model->last_used_ns);
    } else {
        c = (a->model->priority > b->model->priority) - (a->model->priority < b->model->priority);
        if (!c)
            c = cmp_double(nx_policy_cost(a->model), nx_policy_cost(b->model));
    }
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

int nx_policy_victims(nx_policy_t policy, const nx_policy_model_t *models, size_t count,
                      uint64_t free_bytes, uint64_t need_bytes, size_t *victims,
                      size_t *victim_count)
{
    *victim_count = 0;
    if (free_bytes >= need_bytes)
        return NX_OK;
    candidate_t *cands = malloc((count ? count : 1) * sizeof *cands);
    if (!cands)
        return NX_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        const nx_policy_model_t *m = &models[i];
        if (m->resident && !m->pinned && m->running == 0)
            cands[n++] = (candidate_t){i, m, policy};
    }
    qsort(cands, n, sizeof *cands, compare);
    uint64_t freed = free_bytes;
    size_t taken = 0;
    while (taken < n && freed < need_bytes) {
        freed += cands[taken].model->bytes;
        victims[taken] = cands[taken].index;
        taken++;
    }
    free(cands);
    if (freed < need_bytes)
        return NX_EPOOLFULL;
    *victim_count = taken;
    return NX_OK;
}
