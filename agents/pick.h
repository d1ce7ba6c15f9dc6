/* pick.h — internal: one token pick, planned on the host and carried out where the logits
 * are: on the host for the CPU backend (sampler.c), on the GPU for the CUDA backend
 * (cuda_sample.cu), so that only the chosen id crosses the bus.
 *
 * The plan holds everything a pick reads besides the logits: the sampling parameters, the
 * pick's one uniform draw (taken from the sampler's seeded generator when the plan is made, so
 * the same seed gives the same draws on either backend) and the distinct ids of the history
 * for the repetition penalty.
 */
#ifndef NX_PICK_H
#define NX_PICK_H

#include "nx_engine.h"

typedef struct nx__pick {
    float temperature;          /* 0: greedy */
    uint32_t top_k;             /* 0, or >= vocab: off */
    float top_p;                /* 1: off */
    float min_p;                /* 0: off */
    float repetition_penalty;   /* 1: off */
    double draw;                /* uniform in [0, 1); 0 when greedy */
    const int32_t *penalty_ids; /* distinct ids inside the vocabulary; NULL when none */
    uint32_t penalty_count;
    /* A grammar's token mask (bit id % 32 of word id / 32), applied before everything else:
     * only allowed ids can be picked, and the draw follows the constrained distribution.
     * NULL: no mask. Ids at or past allow_bits are disallowed. Points into the caller's
     * buffer (nx__sampler_set_allow), valid until the pick is done; for a deferred mask
     * (nx__seq_defer_mask) into the engine's, set by the step once the forward pass is
     * issued. */
    const uint32_t *allow;
    uint32_t allow_bits;
} nx__pick_t;

/* The next pick of `self`: takes one draw from its generator unless greedy. penalty_ids
 * point into the sampler and stay valid until its next plan or pick. */
void nx__sampler_plan(nx_sampler_t *self, const int32_t *history, size_t history_len,
                      nx__pick_t *out);
/* The mask the next plans of `self` carry (NULL: none); borrowed until it is replaced. The
 * generation state sets it before each pick while a grammar applies. On host logits a masked
 * plan reads only the allowed ids (no pass over the row, nothing allocated). */
void nx__sampler_set_allow(nx_sampler_t *self, const uint32_t *allow, uint32_t allow_bits);
/* Carry a plan of `self` out on host logits (vocab floats). nx_sampler_pick is
 * nx__sampler_plan followed by this. */
int32_t nx__sampler_pick_plan(nx_sampler_t *self, const nx__pick_t *plan, const float *logits);

/* A deferred mask: fills words[0, word_count) (word_count = (vocab + 31) / 32, the engine's
 * vocabulary) with the mask of the pick the sequence's step makes and sets *allow_bits_out to
 * the ids it covers, or sets *allow_bits_out to 0 for no mask (any id; words untouched). An
 * error fails the step (err names what and where). */
typedef int (*nx__mask_fn)(void *user, uint32_t *words, uint32_t word_count,
                           uint32_t *allow_bits_out, nx_err_t *err);

/* The next step's pick of `seq` (nx_seq_pick_next, called before this) takes its mask from
 * fn(user, ...), called once during that step, after the backend has issued the forward pass
 * and before the pick: the host computes the mask while the GPU computes the logits. user is
 * borrowed until the step is over. The request lasts one step, like nx_seq_pick_next's. */
void nx__seq_defer_mask(nx_seq_t *seq, nx__mask_fn fn, void *user);

#endif
