/* http_translate.h — OpenAI request bodies as protocol `task` requests (http_translate.c).
 * Pure: JSON in, a msgpack frame out; shared by the HTTP front and tests/fuzz_openai.c. */
#ifndef NX_HTTP_TRANSLATE_H
#define NX_HTTP_TRANSLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "proto.h"

typedef enum nx__api { NX__API_CHAT, NX__API_COMPLETIONS } nx__api_t;

/* What the response needs to know about the request. */
typedef struct nx__oa_req {
    nx__api_t api;        /* set by the caller */
    char *model;          /* as the client named it (the agent); caller frees */
    bool stream, include_usage;
} nx__oa_req_t;

/* The body `root` of a request for oa->api as a `task` request written into w (from
 * nx_writer_reply on; id nil), and oa filled. False with a sentence naming the field in why:
 * the client's mistake (400). The router still validates everything the task carries. */
bool nx__openai_translate(json_t *root, nx__oa_req_t *oa, nx_writer_t *w, char *why, size_t cap);

/* A typed answer's content for an OpenAI client: the text after a leading thinking block
 * (`<think>...</think>` and the whitespace after it), with the thinking in *reasoning_out
 * (malloc'ed; NULL when there is no complete block: the text is then returned whole). The
 * result points into text. */
const char *nx__openai_answer_content(const char *text, char **reasoning_out);

#endif
