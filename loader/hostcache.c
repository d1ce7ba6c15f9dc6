/* hostcache.c — the host cache tier: a byte budget of pinned host RAM (plain RAM on CPU),
 * reserved once at start-up and cut into fixed chunks, holding the images of recently evicted
 * models so that their next load skips the disk. Replacement is least-recently-used, with
 * explicit eviction; images being copied out are pinned and never evicted under the copy.
 */
#include "hostcache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HC_CHUNK_BYTES (32ull << 20) /* big enough for full-speed copies, small enough to pack */

typedef struct hc_entry {
    struct hc_entry *prev, *next; /* LRU list: head is most recently used */
    char key[512];
    char *identity;
    char *files; /* one path per line */
    uint64_t last_use_ns;
    uint32_t pins;
    nx__hc_image_t image;
    uint32_t *chunk_ids;
} hc_entry_t;

struct nx_hostcache {
    nx_dev_t *dev;
    void *arena;
    uint64_t arena_bytes;
    uint64_t chunk_bytes;
    uint32_t chunk_count;
    uint32_t *free_ids; /* stack of free chunk indices */
    uint32_t free_count;
    hc_entry_t *head, *tail;
    size_t entries;
    uint64_t hits, misses, evictions;
    void *stream; /* device -> host copies on store */
    pthread_mutex_t lock;
};

nx_hostcache_t *nx_hostcache_new(nx_pool_t *pool, uint64_t budget_bytes, nx_err_t *err)
{
    if (!pool) {
        nx_err_set(err, NX_EINVAL, "host cache: no pool given");
        return NULL;
    }
    nx_hostcache_t *self = calloc(1, sizeof *self);
    if (!self) {
        nx_err_set(err, NX_ENOMEM, "host cache: out of memory");
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    self->dev = nx__pool_dev(pool);
    self->chunk_bytes = HC_CHUNK_BYTES;
    self->chunk_count = (uint32_t)(budget_bytes / self->chunk_bytes);
    if (budget_bytes > 0 && self->chunk_count == 0) {
        /* A budget under one chunk still works: one smaller chunk. */
        self->chunk_bytes = (budget_bytes + 4095) & ~4095ull;
        self->chunk_count = 1;
    }
    self->arena_bytes = self->chunk_bytes * self->chunk_count;
    if (self->arena_bytes > 0) {
        self->arena = self->dev->ops->host_alloc(self->dev, self->arena_bytes, err);
        if (!self->arena) {
            nx_err_prefix(err, "host cache of %llu bytes: ", (unsigned long long)budget_bytes);
            goto fail;
        }
    }
    self->free_ids = calloc(self->chunk_count ? self->chunk_count : 1, sizeof(uint32_t));
    if (!self->free_ids) {
        nx_err_set(err, NX_ENOMEM, "host cache: out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < self->chunk_count; i++)
        self->free_ids[i] = self->chunk_count - 1 - i; /* pop gives the lowest first */
    self->free_count = self->chunk_count;
    if (self->dev->ops->stream_new(self->dev, &self->stream, err) != NX_OK)
        goto fail;
    return self;
fail:
    nx_hostcache_destroy(&self);
    return NULL;
}

static void entry_free(nx_hostcache_t *self, hc_entry_t *e)
{
    for (uint32_t i = 0; i < e->image.chunk_count; i++)
        self->free_ids[self->free_count++] = e->chunk_ids[i];
    free(e->chunk_ids);
    free(e->image.chunks);
    free(e->identity);
    free(e->files);
    free(e);
}

static void lru_unlink(nx_hostcache_t *self, hc_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        self->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        self->tail = e->prev;
    e->prev = e->next = NULL;
    self->entries--;
}

static void lru_push_front(nx_hostcache_t *self, hc_entry_t *e)
{
    e->prev = NULL;
    e->next = self->head;
    if (self->head)
        self->head->prev = e;
    self->head = e;
    if (!self->tail)
        self->tail = e;
    self->entries++;
}

void nx_hostcache_destroy(nx_hostcache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_hostcache_t *self = *self_p;
    while (self->head) {
        hc_entry_t *e = self->head;
        lru_unlink(self, e);
        entry_free(self, e);
    }
    if (self->stream)
        self->dev->ops->stream_destroy(self->dev, self->stream);
    if (self->arena)
        self->dev->ops->host_free(self->dev, self->arena, self->arena_bytes);
    free(self->free_ids);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

static hc_entry_t *find_locked(const nx_hostcache_t *self, const char *key)
{
    for (hc_entry_t *e = self->head; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* Canonical key for a path; falls back to the path itself when it cannot be resolved. */
static void canonical_key(const char *path, char *key, size_t cap)
{
    char *real = realpath(path, NULL);
    snprintf(key, cap, "%s", real ? real : path);
    free(real);
}

static int append_identity(char *buf, size_t cap, size_t *len, const char *path, nx_err_t *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return nx_err_set(err, NX_EIO, "host cache: cannot stat '%s'", path);
    int n = snprintf(buf + *len, cap - *len, "%lld:%lld.%09ld:%llu;", (long long)st.st_size,
                     (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                     (unsigned long long)st.st_ino);
    if (n < 0 || (size_t)n >= cap - *len)
        return nx_err_set(err, NX_EINVAL, "host cache: identity buffer too small");
    *len += (size_t)n;
    return NX_OK;
}

int nx__hostcache_identity(const nx_st_t *st, char *buf, size_t cap, nx_err_t *err)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < nx_st_file_count(st); i++) {
        int rc = append_identity(buf, cap, &len, nx_st_file_at(st, i)->path, err);
        if (rc != NX_OK)
            return rc;
    }
    return NX_OK;
}

/* Identity recomputed from an entry's recorded file list (for nx_hostcache_contains). */
static bool identity_matches(const hc_entry_t *e)
{
    char buf[8192];
    size_t len = 0;
    const char *p = e->files;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char path[4096];
        if (n >= sizeof path)
            return false;
        memcpy(path, p, n);
        path[n] = '\0';
        if (append_identity(buf, sizeof buf, &len, path, NULL) != NX_OK)
            return false;
        p = nl ? nl + 1 : p + n;
    }
    return strcmp(buf, e->identity) == 0;
}

const nx__hc_image_t *nx__hostcache_acquire(nx_hostcache_t *self, const char *key,
                                            const char *identity)
{
    pthread_mutex_lock(&self->lock);
    hc_entry_t *e = find_locked(self, key);
    if (e && strcmp(e->identity, identity) != 0) {
        /* The checkpoint changed on disk since its image was taken: the image is stale. */
        if (e->pins == 0) {
            lru_unlink(self, e);
            entry_free(self, e);
            self->evictions++;
        }
        e = NULL;
    }
    if (!e) {
        self->misses++;
        pthread_mutex_unlock(&self->lock);
        return NULL;
    }
    self->hits++;
    e->pins++;
    e->last_use_ns = nx_now_ns();
    lru_unlink(self, e);
    lru_push_front(self, e);
    pthread_mutex_unlock(&self->lock);
    return &e->image;
}

void nx__hostcache_release(nx_hostcache_t *self, const nx__hc_image_t *image)
{
    pthread_mutex_lock(&self->lock);
    for (hc_entry_t *e = self->head; e; e = e->next)
        if (&e->image == image) {
            e->pins--;
            break;
        }
    pthread_mutex_unlock(&self->lock);
}

/* Evict unpinned entries from the LRU tail until `need` chunks are free. */
static bool make_room_locked(nx_hostcache_t *self, uint32_t need)
{
    hc_entry_t *e = self->tail;
    while (self->free_count < need && e) {
        hc_entry_t *prev = e->prev;
        if (e->pins == 0) {
            lru_unlink(self, e);
            entry_free(self, e);
            self->evictions++;
        }
        e = prev;
    }
    return self->free_count >= need;
}

static int copy_into_chunks(nx_hostcache_t *self, hc_entry_t *e, const void *pool_src,
                            nx_err_t *err)
{
    nx_dev_t *dev = self->dev;
    for (uint32_t i = 0; i < e->image.chunk_count; i++) {
        uint64_t off = (uint64_t)i * e->image.chunk_bytes;
        uint64_t n = e->image.bytes - off < e->image.chunk_bytes ? e->image.bytes - off
                                                                  : e->image.chunk_bytes;
        int rc = dev->ops->copy_d2h(dev, e->image.chunks[i], (const char *)pool_src + off, n,
                                    self->stream, err);
        if (rc != NX_OK)
            return rc;
    }
    return dev->ops->stream_sync(dev, self->stream, err);
}

int nx__hostcache_store(nx_hostcache_t *self, const char *key, const char *identity,
                        const char *files, const void *pool_src, uint64_t bytes, nx_err_t *err)
{
    uint64_t need64 = (bytes + self->chunk_bytes - 1) / self->chunk_bytes;
    if (need64 > self->chunk_count)
        return nx_err_set(err, NX_EPOOLFULL,
                          "host cache: image of '%s' is %llu bytes, the budget is %llu", key,
                          (unsigned long long)bytes, (unsigned long long)self->arena_bytes);
    uint32_t need = (uint32_t)need64;
    hc_entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return nx_err_set(err, NX_ENOMEM, "host cache: out of memory");
    snprintf(e->key, sizeof e->key, "%s", key);
    e->identity = strdup(identity);
    e->files = strdup(files);
    e->image.chunks = calloc(need ? need : 1, sizeof(void *));
    e->chunk_ids = calloc(need ? need : 1, sizeof(uint32_t));
    if (!e->identity || !e->files || !e->image.chunks || !e->chunk_ids) {
        free(e->identity), free(e->files), free(e->image.chunks), free(e->chunk_ids), free(e);
        return nx_err_set(err, NX_ENOMEM, "host cache: out of memory");
    }
    e->image.bytes = bytes;
    e->image.chunk_bytes = self->chunk_bytes;

    pthread_mutex_lock(&self->lock);
    hc_entry_t *old = find_locked(self, key);
    if (old && old->pins == 0) {
        lru_unlink(self, old);
        entry_free(self, old);
    }
    if (!make_room_locked(self, need)) {
        pthread_mutex_unlock(&self->lock);
        entry_free(self, e);
        return nx_err_set(err, NX_EPOOLFULL,
                          "host cache: no room for '%s' (%llu bytes): the rest is in use", key,
                          (unsigned long long)bytes);
    }
    for (uint32_t i = 0; i < need; i++) {
        e->chunk_ids[i] = self->free_ids[--self->free_count];
        e->image.chunks[i] = (char *)self->arena + (uint64_t)e->chunk_ids[i] * self->chunk_bytes;
        e->image.chunk_count++;
    }
    e->pins = 1; /* not visible as a usable image until filled */
    e->last_use_ns = nx_now_ns();
    lru_push_front(self, e);
    pthread_mutex_unlock(&self->lock);

    /* The copy runs unlocked: it can take a while, and hits on other images go on. */
    int rc = copy_into_chunks(self, e, pool_src, err);

    pthread_mutex_lock(&self->lock);
    e->pins--;
    if (rc != NX_OK) {
        lru_unlink(self, e);
        entry_free(self, e);
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

void nx_hostcache_stats(const nx_hostcache_t *self, nx_hostcache_stats_t *out)
{
    nx_hostcache_t *mut = (nx_hostcache_t *)self; /* the lock is not part of the value */
    pthread_mutex_lock(&mut->lock);
    out->budget_bytes = self->arena_bytes;
    out->used_bytes = (uint64_t)(self->chunk_count - self->free_count) * self->chunk_bytes;
    out->entries = self->entries;
    out->hits = self->hits;
    out->misses = self->misses;
    out->evictions = self->evictions;
    pthread_mutex_unlock(&mut->lock);
}

size_t nx_hostcache_entries(const nx_hostcache_t *self, nx_hostcache_entry_info_t *out,
                            size_t cap)
{
    nx_hostcache_t *mut = (nx_hostcache_t *)self;
    pthread_mutex_lock(&mut->lock);
    size_t i = 0;
    for (const hc_entry_t *e = self->head; e; e = e->next, i++)
        if (i < cap) {
            snprintf(out[i].key, sizeof out[i].key, "%s", e->key);
            out[i].bytes = e->image.bytes;
            out[i].last_use_ns = e->last_use_ns;
        }
    pthread_mutex_unlock(&mut->lock);
    return i;
}

bool nx_hostcache_contains(const nx_hostcache_t *self, const char *path)
{
    char key[512];
    canonical_key(path, key, sizeof key);
    nx_hostcache_t *mut = (nx_hostcache_t *)self;
    pthread_mutex_lock(&mut->lock);
    const hc_entry_t *e = find_locked(self, key);
    bool fresh = e && identity_matches(e);
    pthread_mutex_unlock(&mut->lock);
    return fresh;
}

int nx_hostcache_evict(nx_hostcache_t *self, const char *path, nx_err_t *err)
{
    char key[512];
    canonical_key(path, key, sizeof key);
    pthread_mutex_lock(&self->lock);
    hc_entry_t *e = find_locked(self, key);
    int rc = NX_OK;
    if (!e)
        rc = nx_err_set(err, NX_ENOTFOUND, "host cache: no image of '%s'", path);
    else if (e->pins > 0)
        rc = nx_err_set(err, NX_EBUSY, "host cache: the image of '%s' is being copied", path);
    else {
        lru_unlink(self, e);
        entry_free(self, e);
        self->evictions++;
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

void nx_hostcache_evict_all(nx_hostcache_t *self)
{
    pthread_mutex_lock(&self->lock);
    hc_entry_t *e = self->head;
    while (e) {
        hc_entry_t *next = e->next;
        if (e->pins == 0) {
            lru_unlink(self, e);
            entry_free(self, e);
            self->evictions++;
        }
        e = next;
    }
    pthread_mutex_unlock(&self->lock);
}

/* Exposed for the loader: the key under which a checkpoint path is cached. */
void nx__hostcache_key(const char *path, char *key, size_t cap)
{
    canonical_key(path, key, cap);
}
