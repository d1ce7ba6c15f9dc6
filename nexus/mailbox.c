/* mailbox.c — pointer queue + eventfd (see mailbox.h). The eventfd's counter is kept at
 * "queue non-empty ? 1 : 0" under the lock, so its readability is exactly "something queued". */
#include "mailbox.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct node {
    struct node *next;
    void *item;
} node_t;

struct nx_mailbox {
    pthread_mutex_t lock;
    node_t *head, *tail;
    size_t count;
    int fd;
};

nx_mailbox_t *nx_mailbox_new(void)
{
    nx_mailbox_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->fd < 0) {
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    return self;
}

void nx_mailbox_destroy(nx_mailbox_t **self_p, void (*free_item)(void *item))
{
    if (!self_p || !*self_p)
        return;
    nx_mailbox_t *self = *self_p;
    void *item;
    while ((item = nx_mailbox_pop(self)))
        if (free_item)
            free_item(item);
    close(self->fd);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

bool nx_mailbox_push(nx_mailbox_t *self, void *item)
{
    node_t *n = malloc(sizeof *n);
    if (!n)
        return false;
    n->next = NULL;
    n->item = item;
    pthread_mutex_lock(&self->lock);
    if (self->tail)
        self->tail->next = n;
    else
        self->head = n;
    self->tail = n;
    if (self->count++ == 0) {
        uint64_t one = 1;
        ssize_t w = write(self->fd, &one, sizeof one); /* 0 -> 1: cannot overflow or block */
        (void)w;
    }
    pthread_mutex_unlock(&self->lock);
    return true;
}

void *nx_mailbox_pop(nx_mailbox_t *self)
{
    pthread_mutex_lock(&self->lock);
    node_t *n = self->head;
    void *item = NULL;
    if (n) {
        self->head = n->next;
        if (!self->head)
            self->tail = NULL;
        if (--self->count == 0) {
            uint64_t value;
            ssize_t r = read(self->fd, &value, sizeof value); /* back to 0: not readable */
            (void)r;
        }
        item = n->item;
        free(n);
    }
    pthread_mutex_unlock(&self->lock);
    return item;
}

bool nx_mailbox_wait(nx_mailbox_t *self, int timeout_ms)
{
    struct pollfd p = {.fd = self->fd, .events = POLLIN};
    for (;;) {
        int rc = poll(&p, 1, timeout_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        return rc > 0;
    }
}

int nx_mailbox_fd(const nx_mailbox_t *self)
{
    return self->fd;
}

size_t nx_mailbox_count(nx_mailbox_t *self)
{
    pthread_mutex_lock(&self->lock);
    size_t n = self->count;
    pthread_mutex_unlock(&self->lock);
    return n;
}
