/* mailbox.h — how nexusd's threads pass messages: a queue of owned pointers with an eventfd,
 * so a consumer can block on it (nx_mailbox_wait) or poll its fd next to ZeroMQ sockets
 * (zmq_poll takes plain file descriptors). Many producers, one consumer. Ownership of each
 * item passes with it: the producer stops touching it once pushed. */
#ifndef NX_MAILBOX_H
#define NX_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>

typedef struct nx_mailbox nx_mailbox_t;

nx_mailbox_t *nx_mailbox_new(void);
/* Items still queued are passed to free_item (may be NULL: leaked). */
void nx_mailbox_destroy(nx_mailbox_t **self_p, void (*free_item)(void *item));
/* Push from any thread; false only when out of memory (the item is then still the caller's). */
bool nx_mailbox_push(nx_mailbox_t *self, void *item);
/* Pop the oldest item, or NULL when empty; never blocks. */
void *nx_mailbox_pop(nx_mailbox_t *self);
/* Block until an item is there or timeout_ms passes (-1: forever); true when non-empty. */
bool nx_mailbox_wait(nx_mailbox_t *self, int timeout_ms);
/* Readable (POLLIN) while items are queued; level-triggered, for zmq_poll or poll. */
int nx_mailbox_fd(const nx_mailbox_t *self);
size_t nx_mailbox_count(nx_mailbox_t *self);

#endif
