/* router_out.c — replies out of the ROUTER socket: never blocking the router thread, never
 * losing one to a client that reads slowly.
 *
 * The socket has ZMQ_ROUTER_MANDATORY and every send is ZMQ_DONTWAIT, so ZeroMQ says what it
 * would otherwise do silently: EAGAIN when the client's queue (send_hwm messages) is full,
 * EHOSTUNREACH when the client is gone. A client whose queue is full is *held*: its replies
 * wait here, in order, and the loop retries them every few milliseconds until it reads (ZeroMQ
 * has no per-client "writable again" signal: a ROUTER is always POLLOUT). While a client is
 * held, each of its streams' tokens merge into one waiting token message per task, so what a
 * held client costs is bounded by the replies it is owed: for each task at most its accepted,
 * one merged token text (never longer than the output) and its result or error; nothing is
 * dropped. A client that is gone is owed nothing any more: what was waiting for it is dropped
 * and counted (replies_dropped); its tasks run to their end and are stored as usual.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "router_int.h"

#define RETRY_MAX_MS 32 /* the longest wait between two tries at a held client */

/* One reply waiting for a held client: a packed frame, or a task's merged tokens. */
struct nx__held {
    struct nx__held *next;
    zmsg_t *envelope;           /* a copy of the client's envelope (identity, REQ delimiter) */
    unsigned char *frame;       /* the packed reply (frame_len bytes); NULL for tokens */
    size_t frame_len;
    nx__job_t *job;             /* tokens: the task still streaming into this entry, or NULL */
    unsigned char *id;          /* tokens: the request's id bytes (id_len), task and text */
    size_t id_len;
    int64_t task;
    char *text;                 /* text_len bytes + NUL, in text_cap */
    size_t text_len, text_cap;
};

/* A held client: its routing id and its waiting replies, oldest first. */
struct nx__peer {
    struct nx__peer *next;
    unsigned char identity[256]; /* a ZeroMQ routing id is 1 to 255 bytes */
    size_t identity_len;
    nx__held_t *head, *tail;
};

static void *sock(nx__router_t *self)
{
    return zsock_resolve(self->router);
}

/* The envelope's frames, then the reply; 0 or zmq_send's errno. Only the first frame can fail
 * (ROUTER decides on the routing id), so a refused reply leaves nothing half sent. */
static int send_frame(void *socket, zmsg_t *envelope, const void *data, size_t len)
{
    for (zframe_t *f = zmsg_first(envelope); f; f = zmsg_next(envelope))
        if (zmq_send(socket, zframe_data(f), zframe_size(f), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
            return zmq_errno();
    return zmq_send(socket, data, len, ZMQ_DONTWAIT) < 0 ? zmq_errno() : 0;
}

static nx__peer_t *find_peer(nx__router_t *self, zmsg_t *envelope)
{
    zframe_t *id = zmsg_first(envelope);
    for (nx__peer_t *p = self->held; p && id; p = p->next)
        if (p->identity_len == zframe_size(id) && memcmp(p->identity, zframe_data(id),
                                                         p->identity_len) == 0)
            return p;
    return NULL;
}

static nx__peer_t *peer_new(nx__router_t *self, zmsg_t *envelope)
{
    zframe_t *id = zmsg_first(envelope);
    nx__peer_t *peer = id && zframe_size(id) <= sizeof peer->identity ? calloc(1, sizeof *peer)
                                                                      : NULL;
    if (!peer)
        return NULL;
    peer->identity_len = zframe_size(id);
    memcpy(peer->identity, zframe_data(id), peer->identity_len);
    peer->next = self->held;
    self->held = peer;
    return peer;
}

static void held_free(nx__held_t *h)
{
    if (h->job)
        h->job->held_tokens = NULL;
    zmsg_destroy(&h->envelope);
    free(h->frame);
    free(h->id);
    free(h->text);
    free(h);
}

static nx__held_t *held_new(const nx__client_t *client)
{
    nx__held_t *h = calloc(1, sizeof *h);
    if (h && !(h->envelope = zmsg_dup(client->envelope))) {
        free(h);
        return NULL;
    }
    return h;
}

static void append(nx__router_t *self, nx__peer_t *peer, nx__held_t *h)
{
    if (peer->tail)
        peer->tail->next = h;
    else
        peer->head = h;
    peer->tail = h;
    self->replies_held++;
}

static bool append_text(nx__held_t *h, const char *text)
{
    size_t n = strlen(text);
    if (h->text_len + n + 1 > h->text_cap) {
        size_t cap = h->text_cap ? h->text_cap : 64;
        while (cap < h->text_len + n + 1)
            cap *= 2;
        char *grown = realloc(h->text, cap);
        if (!grown)
            return false;
        h->text = grown;
        h->text_cap = cap;
    }
    memcpy(h->text + h->text_len, text, n + 1);
    h->text_len += n;
    return true;
}

static void dropped(nx__router_t *self, int zmq_err, size_t count)
{
    self->replies_dropped += count;
    if (zmq_err != EHOSTUNREACH) /* gone clients are expected; anything else is news */
        nx_log(NX_LOG_WARN, "router: %zu replies dropped: %s", count,
               zmq_err ? zmq_strerror(zmq_err) : "out of memory holding them");
}

void nx__out_send(nx__router_t *self, const nx__client_t *client, const void *frame, size_t len)
{
    if (!client || !client->envelope)
        return; /* a recovered task: nobody is waiting */
    nx__peer_t *peer = self->held ? find_peer(self, client->envelope) : NULL;
    if (!peer) { /* the fast path: nothing waits for this client */
        int rc = send_frame(sock(self), client->envelope, frame, len);
        if (rc != EAGAIN) {
            if (rc)
                dropped(self, rc, 1);
            return;
        }
    }
    nx__held_t *h = held_new(client);
    if (h && (h->frame = malloc(len ? len : 1)))
        memcpy(h->frame, frame, len);
    if (!h || !h->frame || !(peer = peer ? peer : peer_new(self, client->envelope))) {
        if (h)
            held_free(h);
        dropped(self, 0, 1);
        return;
    }
    h->frame_len = len;
    append(self, peer, h);
}

void nx__out_token(nx__router_t *self, nx__job_t *job, const char *text)
{
    if (!job->client.envelope)
        return;
    if (job->held_tokens) { /* its client is held and this stream's entry still waits */
        if (!append_text(job->held_tokens, text))
            dropped(self, 0, 1);
        return;
    }
    nx__peer_t *peer = self->held ? find_peer(self, job->client.envelope) : NULL;
    if (!peer) {
        nx_writer_reset(self->w);
        nx_writer_reply(self->w, "token", job->client.id, job->client.id_len);
        nx_writer_int(self->w, "task", job->root_id);
        nx_writer_str(self->w, "text", text);
        size_t len;
        const void *data = nx_writer_data(self->w, &len);
        int rc = data ? send_frame(sock(self), job->client.envelope, data, len) : 0;
        if (rc != EAGAIN) {
            if (rc || !data)
                dropped(self, rc, 1);
            return;
        }
    }
    nx__held_t *h = held_new(&job->client);
    if (h && job->client.id_len && (h->id = malloc(job->client.id_len)))
        memcpy(h->id, job->client.id, job->client.id_len);
    if (!h || (job->client.id_len && !h->id) || !append_text(h, text) ||
        !(peer = peer ? peer : peer_new(self, job->client.envelope))) {
        if (h)
            held_free(h);
        dropped(self, 0, 1);
        return;
    }
    h->id_len = job->client.id_len;
    h->task = job->root_id;
    h->job = job;
    job->held_tokens = h;
    append(self, peer, h);
}

void nx__out_forget_job(nx__job_t *job)
{
    if (job->held_tokens)
        job->held_tokens->job = NULL; /* the entry stays, to be sent; it just stops growing */
    job->held_tokens = NULL;
}

/* Send one waiting reply: 0, or zmq_send's errno. */
static int send_held(nx__router_t *self, nx__held_t *h)
{
    if (h->frame)
        return send_frame(sock(self), h->envelope, h->frame, h->frame_len);
    nx_writer_reset(self->w);
    nx_writer_reply(self->w, "token", h->id, h->id_len);
    nx_writer_int(self->w, "task", h->task);
    nx_writer_str(self->w, "text", h->text);
    size_t len;
    const void *data = nx_writer_data(self->w, &len);
    return data ? send_frame(sock(self), h->envelope, data, len) : ENOMEM;
}

static nx__held_t *pop(nx__router_t *self, nx__peer_t *peer)
{
    nx__held_t *h = peer->head;
    peer->head = h->next;
    if (!peer->head)
        peer->tail = NULL;
    self->replies_held--;
    return h;
}

/* Send what a held client will take now; true when something went (or was dropped). */
static bool flush_peer(nx__router_t *self, nx__peer_t *peer)
{
    bool progress = false;
    int rc = 0;
    while (peer->head && (rc = send_held(self, peer->head)) == 0) {
        held_free(pop(self, peer));
        progress = true;
    }
    if (peer->head && rc != EAGAIN) { /* gone (EHOSTUNREACH): nobody to owe anything to */
        size_t count = 0;
        while (peer->head) {
            held_free(pop(self, peer));
            count++;
        }
        dropped(self, rc, count);
        progress = true;
    }
    return progress;
}

int nx__out_flush(nx__router_t *self)
{
    if (!self->held)
        return -1;
    bool progress = false;
    for (nx__peer_t **pp = &self->held; *pp;) {
        nx__peer_t *peer = *pp;
        progress |= flush_peer(self, peer);
        if (!peer->head) { /* drained: the client is no longer held */
            *pp = peer->next;
            free(peer);
        } else {
            pp = &peer->next;
        }
    }
    if (progress || self->retry_ms < 1)
        self->retry_ms = 1;
    else if (self->retry_ms < RETRY_MAX_MS)
        self->retry_ms *= 2;
    return self->held ? self->retry_ms : -1;
}

void nx__out_drop_all(nx__router_t *self)
{
    size_t count = self->replies_held;
    while (self->held) {
        nx__peer_t *peer = self->held;
        self->held = peer->next;
        while (peer->head)
            held_free(pop(self, peer));
        free(peer);
    }
    if (count) {
        self->replies_dropped += count;
        nx_log(NX_LOG_WARN, "nexusd: %zu replies to clients that did not read them in time "
               "were dropped at shutdown", count);
    }
}
