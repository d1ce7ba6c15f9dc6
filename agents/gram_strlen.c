/* gram_strlen.c — the DFA of a quoted JSON string of min..max code points, built directly.
 *
 * Why not the regex `[\s\S]{min,max}`: its NFA is max copies of one character's NFA and the
 * subset construction and trim over it cost ~3 ms for maxLength 200 (a tools array of 300
 * tools spent most of its compile there). The language has an obvious DFA instead: one
 * character's DFA C (raw UTF-8 or a json.dumps escape, from the regex code once per process)
 * beside a counter of the characters written, states (count, state of C), the count capped at
 * min when there is no max. C's encodings are prefix-free (no character's bytes begin
 * another's), so reaching an accepting state of C is exactly "one more character done". The
 * result is trimmed by construction (every state reachable and live), cost O(states x
 * classes).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gram_internal.h"

static nx__dfa_t char_dfa;   /* one JSON-encoded code point, no quotes */
static bool char_dfa_ok;     /* built, and its accepting states have no way on */
static pthread_once_t char_dfa_once = PTHREAD_ONCE_INIT;

static void char_dfa_build(void)
{
    if (nx__regex_dfa("[\\s\\S]", false, NX__ENC_JSON, NULL, NULL, &char_dfa, NULL) != NX_OK)
        return;
    bool ok = char_dfa.n_states > 1 && !(char_dfa.flags[0] & NX__DFA_ACCEPT);
    for (uint32_t s = 0; s < char_dfa.n_states && ok; s++)
        ok = !(char_dfa.flags[s] & NX__DFA_ACCEPT) || !(char_dfa.flags[s] & NX__DFA_MORE);
    /* a raw '"' begins no character: there it closes the string */
    char_dfa_ok = ok && char_dfa.trans[char_dfa.byte_class['"']] == NX__DEAD;
}

uint32_t nx__dfa_json_length_per_count(void)
{
    pthread_once(&char_dfa_once, char_dfa_build);
    if (!char_dfa_ok)
        return 0;
    uint32_t k = 0;
    for (uint32_t s = 0; s < char_dfa.n_states; s++)
        k += !(char_dfa.flags[s] & NX__DFA_ACCEPT);
    return k;
}

int nx__dfa_json_length(uint32_t min, uint32_t max, nx__dfa_t *out, nx_err_t *err)
{
    memset(out, 0, sizeof *out);
    pthread_once(&char_dfa_once, char_dfa_build);
    const nx__dfa_t *c = &char_dfa;
    if (!char_dfa_ok)
        return nx_err_set(err, NX_ENOMEM, "out of memory building a string's DFA");
    /* C's states that are inside a character (not accepting), renumbered: inner[s] */
    uint32_t inner[64], k = 0;
    if (c->n_states > 64)
        return nx_err_set(err, NX_ENOTSUP, "a character's DFA has %u states", c->n_states);
    for (uint32_t s = 0; s < c->n_states; s++)
        inner[s] = c->flags[s] & NX__DFA_ACCEPT ? NX__DEAD : k++;
    bool bounded = max != UINT32_MAX;
    uint32_t top = bounded ? max : min; /* the count's last value */
    /* 0: before the opening quote; 1 + count * k + inner: inside; then the end. With a max,
     * count == max has only C's start (no character may begin). */
    uint64_t n = 2 + (uint64_t)top * k + (bounded ? 1 : k);
    if (n > NX__MAX_DFA_STATES)
        return nx_err_set(err, NX_ENOTSUP, "a string of %u..%u characters needs %llu DFA states "
                          "(over %u)", min, max, (unsigned long long)n, NX__MAX_DFA_STATES);
    uint8_t quote_cls = c->byte_class['"'];
    bool quote_alone = true;
    for (unsigned b = 0; b < 256 && quote_alone; b++)
        quote_alone = b == '"' || c->byte_class[b] != quote_cls;
    uint32_t classes = c->n_classes + !quote_alone, qc = quote_alone ? quote_cls : c->n_classes;
    out->n_states = (uint32_t)n;
    out->n_classes = classes;
    memcpy(out->byte_class, c->byte_class, 256);
    out->byte_class['"'] = (uint8_t)qc;
    out->trans = malloc((size_t)n * classes * sizeof *out->trans);
    out->flags = malloc((size_t)n);
    if (!out->trans || !out->flags || classes > 256) {
        nx__dfa_free(out);
        return nx_err_set(err, NX_ENOMEM, "out of memory building a string's DFA");
    }
    uint32_t end = (uint32_t)n - 1;
    for (size_t i = 0; i < (size_t)n * classes; i++)
        out->trans[i] = NX__DEAD;
    out->trans[qc] = 1; /* the opening quote */
    for (uint32_t count = 0; count <= top; count++) {
        uint32_t states = bounded && count == top ? 1 : k;
        for (uint32_t s = 0, in = 0; s < c->n_states && in < states; s++) {
            if (inner[s] == NX__DEAD)
                continue;
            uint32_t from = 1 + count * k + inner[s];
            uint32_t *row = out->trans + (size_t)from * classes;
            in++;
            if (!(bounded && count == top))
                for (uint32_t cls = 0; cls < c->n_classes; cls++) {
                    uint32_t to = c->trans[(size_t)s * c->n_classes + cls];
                    if (to == NX__DEAD)
                        continue;
                    if (c->flags[to] & NX__DFA_ACCEPT) /* a character done */
                        to = 1 + (count < top ? count + 1 : count) * k + 0;
                    else
                        to = 1 + count * k + inner[to];
                    row[cls] = to;
                }
            if (!quote_alone) /* '"' moved to a class of its own: as before inside C */
                row[qc] = row[quote_cls];
            if (s == 0 && count >= min)
                row[qc] = end; /* C's start never takes a raw '"' */
        }
    }
    for (uint32_t s = 0; s < end; s++)
        out->flags[s] = NX__DFA_MORE;
    out->flags[end] = NX__DFA_ACCEPT;
    return NX_OK;
}
