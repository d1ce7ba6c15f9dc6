/* proto_write.c — the reply writer (proto.h): msgpack maps and arrays built entry by entry
 * without counting ahead. Each open container is a level on a stack with its own buffer and
 * entry count; closing a level writes its header (now that the count is known) and its bytes
 * into the parent. Level 0 is the top-level map, closed by nx_writer_data. nx_writer_reply
 * (and so nx_writer_error) starts a fresh frame itself. Buffers are kept across resets, so a
 * long-lived writer stops allocating.
 *
 * Misuse (a key inside an array, none inside a map, a close without an open, data with
 * containers still open) is a programmer error and asserts. Running out of memory is not: the
 * writer remembers it and nx_writer_data returns NULL.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "proto.h"

#define DEPTH_MAX 32 /* far more than any reply nests */

typedef struct level {
    bool is_map;
    uint32_t entries;    /* pairs in a map, values in an array */
    msgpack_sbuffer buf; /* the entries' bytes, header not yet written */
} level_t;

struct nx_writer {
    level_t levels[DEPTH_MAX];
    int depth;           /* open levels; levels[depth - 1] is the innermost */
    msgpack_sbuffer out; /* the finished frame */
    bool failed;         /* out of memory somewhere: data returns NULL */
};

nx_writer_t *nx_writer_new(void)
{
    nx_writer_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    for (int i = 0; i < DEPTH_MAX; i++)
        msgpack_sbuffer_init(&self->levels[i].buf);
    msgpack_sbuffer_init(&self->out);
    nx_writer_reset(self);
    return self;
}

void nx_writer_destroy(nx_writer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_writer_t *self = *self_p;
    for (int i = 0; i < DEPTH_MAX; i++)
        msgpack_sbuffer_destroy(&self->levels[i].buf);
    msgpack_sbuffer_destroy(&self->out);
    free(self);
    *self_p = NULL;
}

void nx_writer_reset(nx_writer_t *self)
{
    for (int i = 0; i < DEPTH_MAX; i++) {
        msgpack_sbuffer_clear(&self->levels[i].buf);
        self->levels[i].entries = 0;
    }
    msgpack_sbuffer_clear(&self->out);
    self->levels[0].is_map = true;
    self->depth = 1;
    self->failed = false;
}

static void put(nx_writer_t *self, msgpack_sbuffer *buf, const void *bytes, size_t len)
{
    if (len && msgpack_sbuffer_write(buf, bytes, len) != 0)
        self->failed = true;
}

/* A packer onto the innermost level's buffer. */
static msgpack_packer packer(nx_writer_t *self)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->levels[self->depth - 1].buf, msgpack_sbuffer_write);
    return pk;
}

static void check(nx_writer_t *self, int rc)
{
    if (rc != 0)
        self->failed = true;
}

/* Length of the valid UTF-8 character at s[0..len) (strict: no overlong forms, surrogates or
 * code points above U+10FFFF), or 0 when s does not start with one. */
static size_t utf8_char_len(const unsigned char *s, size_t len)
{
    unsigned char b = s[0];
    if (b < 0x80)
        return 1;
    size_t n;
    uint32_t cp, min;
    if ((b & 0xe0) == 0xc0) { n = 2; cp = b & 0x1f; min = 0x80; }
    else if ((b & 0xf0) == 0xe0) { n = 3; cp = b & 0x0f; min = 0x800; }
    else if ((b & 0xf8) == 0xf0) { n = 4; cp = b & 0x07; min = 0x10000; }
    else return 0;
    if (n > len)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

/* A msgpack str is UTF-8, and strict clients refuse one that is not. Most text here is valid
 * (requests are checked, outputs are decoded whole), but an error message cut by snprintf can
 * end mid-character and a few messages quote raw request bytes: each byte that does not start
 * a valid character is written as U+FFFD, so no reply is ever undecodable. */
static void pack_text(nx_writer_t *self, msgpack_packer *pk, const char *text)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    const unsigned char *s = (const unsigned char *)text;
    size_t len = strlen(text), out_len = 0, bad = 0;
    for (size_t i = 0, n; i < len; i += n ? n : 1) {
        n = utf8_char_len(s + i, len - i);
        out_len += n ? n : 3;
        bad += !n;
    }
    check(self, msgpack_pack_str(pk, out_len));
    if (!bad) {
        check(self, msgpack_pack_str_body(pk, text, len));
        return;
    }
    for (size_t i = 0, n; i < len; i += n ? n : 1) {
        n = utf8_char_len(s + i, len - i);
        check(self, n ? msgpack_pack_str_body(pk, text + i, n)
                      : msgpack_pack_str_body(pk, replacement, 3));
    }
}

/* Start an entry in the innermost container: its key in a map, nothing in an array. */
static msgpack_packer entry(nx_writer_t *self, const char *key)
{
    assert(self->depth >= 1);
    level_t *top = &self->levels[self->depth - 1];
    msgpack_packer pk = packer(self);
    assert(top->is_map == (key != NULL) && "key in a map, NULL in an array");
    if (key)
        pack_text(self, &pk, key);
    top->entries++;
    return pk;
}

void nx_writer_str(nx_writer_t *self, const char *key, const char *value)
{
    msgpack_packer pk = entry(self, key);
    if (value)
        pack_text(self, &pk, value);
    else
        check(self, msgpack_pack_nil(&pk));
}

void nx_writer_int(nx_writer_t *self, const char *key, int64_t value)
{
    msgpack_packer pk = entry(self, key);
    check(self, msgpack_pack_int64(&pk, value));
}

void nx_writer_uint(nx_writer_t *self, const char *key, uint64_t value)
{
    msgpack_packer pk = entry(self, key);
    check(self, msgpack_pack_uint64(&pk, value));
}

void nx_writer_real(nx_writer_t *self, const char *key, double value)
{
    msgpack_packer pk = entry(self, key);
    check(self, msgpack_pack_double(&pk, value));
}

void nx_writer_bool(nx_writer_t *self, const char *key, bool value)
{
    msgpack_packer pk = entry(self, key);
    check(self, value ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
}

void nx_writer_nil(nx_writer_t *self, const char *key)
{
    msgpack_packer pk = entry(self, key);
    check(self, msgpack_pack_nil(&pk));
}

static void open_level(nx_writer_t *self, const char *key, bool is_map)
{
    entry(self, key); /* the key now; the value's header when it closes */
    assert(self->depth < DEPTH_MAX && "containers nested too deeply");
    level_t *lv = &self->levels[self->depth++];
    lv->is_map = is_map;
    lv->entries = 0;
    msgpack_sbuffer_clear(&lv->buf);
}

/* Write the innermost level (header + bytes) into `dst`, the parent's buffer or out. */
static void flush_level(nx_writer_t *self, level_t *lv, msgpack_sbuffer *dst)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, dst, msgpack_sbuffer_write);
    check(self, lv->is_map ? msgpack_pack_map(&pk, lv->entries)
                           : msgpack_pack_array(&pk, lv->entries));
    put(self, dst, lv->buf.data, lv->buf.size);
}

static void close_level(nx_writer_t *self, bool is_map)
{
    assert(self->depth > 1 && "close without an open");
    level_t *lv = &self->levels[self->depth - 1];
    assert(lv->is_map == is_map && "closing a different kind of container");
    self->depth--;
    flush_level(self, lv, &self->levels[self->depth - 1].buf);
    msgpack_sbuffer_clear(&lv->buf);
}

void nx_writer_map_open(nx_writer_t *self, const char *key) { open_level(self, key, true); }
void nx_writer_map_close(nx_writer_t *self) { close_level(self, true); }
void nx_writer_array_open(nx_writer_t *self, const char *key) { open_level(self, key, false); }
void nx_writer_array_close(nx_writer_t *self) { close_level(self, false); }

void nx_writer_reply(nx_writer_t *self, const char *op, const unsigned char *id, size_t id_len)
{
    nx_writer_reset(self); /* a reply is a new frame: no need to reset between replies */
    nx_writer_str(self, "op", op);
    msgpack_packer pk = entry(self, "id");
    if (id && id_len) /* the parser's re-packed bytes: one whole msgpack value */
        put(self, &self->levels[0].buf, id, id_len);
    else
        check(self, msgpack_pack_nil(&pk));
}

const void *nx_writer_data(nx_writer_t *self, size_t *len_out)
{
    assert(self->depth == 1 && "every open needs its close before data");
    msgpack_sbuffer_clear(&self->out);
    flush_level(self, &self->levels[0], &self->out);
    if (self->failed) {
        *len_out = 0;
        return NULL;
    }
    *len_out = self->out.size;
    return self->out.data;
}

void nx_writer_error(nx_writer_t *self, const unsigned char *id, size_t id_len, const char *code,
                     const char *message, int64_t task)
{
    nx_writer_reply(self, "error", id, id_len);
    nx_writer_str(self, "code", code);
    nx_writer_str(self, "message", message);
    if (task > 0)
        nx_writer_int(self, "task", task);
}
