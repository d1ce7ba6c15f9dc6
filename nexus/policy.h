/* policy.h — the residency manager's victim choice as a pure function of a table of models, so
 * that its rules are unit-tested one by one (tests/test_policy.c) and bench/swap can compare
 * the documented cost policy with plain LRU on the same trace.
 *
 * The rules (NX_POLICY_COST): never a pinned model, never one with running sequences, never
 * one that is not resident; models with queued tasks only when the others do not free enough;
 * then lowest priority first; then the cheapest to lose first, cost = reload_ms x recent_use /
 * bytes (a model that reloads fast, is rarely used and frees much goes first). NX_POLICY_LRU
 * keeps the hard rules (pinned, running, queued last) and orders by last use instead.
 */
#ifndef NX_POLICY_H
#define NX_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exec.h"

typedef struct nx_policy_model {
    bool resident;        /* only resident models can be evicted */
    bool pinned;
    uint32_t running;     /* running sequences */
    uint32_t queued;      /* tasks waiting for it */
    int priority;         /* the max of its agents' residency.priority */
    uint64_t bytes;       /* pool bytes its eviction frees */
    double reload_ms;     /* measured at its last load, or estimated */
    double recent_use;    /* exponentially decayed task count, >= 0 */
    uint64_t last_used_ns; /* nx_now_ns() of its last task; 0 = never */
} nx_policy_model_t;

/* The cost measure of one model (lower = evicted sooner). */
double nx_policy_cost(const nx_policy_model_t *model);

/* Choose models to evict so that free_bytes + their bytes >= need_bytes. Writes the chosen
 * indices into victims (capacity count), in eviction order, and their number into
 * *victim_count; 0 victims when free_bytes already suffices. NX_EPOOLFULL (and no victims)
 * when even every allowed victim together does not free enough. */
int nx_policy_victims(nx_policy_t policy, const nx_policy_model_t *models, size_t count,
                      uint64_t free_bytes, uint64_t need_bytes, size_t *victims,
                      size_t *victim_count);

/* Decay factor applied to recent_use over `elapsed_ns` (half-life NX_POLICY_HALF_LIFE_S). */
#define NX_POLICY_HALF_LIFE_S 60.0
double nx_policy_decay(uint64_t elapsed_ns);

#endif
