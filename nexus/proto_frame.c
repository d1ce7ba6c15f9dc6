/* proto_frame.c — one frame in, one msgpack map out, never trusting the frame: the size limit
 * first, then a walk over the bytes that checks the value is complete, has nothing after it
 * and declares no container larger than the bytes left (msgpack-c allocates a container's
 * entries before reading them, so a 5-byte frame could otherwise ask for 64 GB), and only then
 * msgpack-c's unpacker into its zone.
 */
#include <stdio.h>
#include <string.h>

#include "proto_int.h"

static int bad_msgpack(const char **code_out, nx_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad_msgpack(const char **code_out, nx_err_t *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *code_out = "bad_msgpack";
    int rc = nx_err_vset(err, NX_EFORMAT, fmt, ap);
    va_end(ap);
    return rc;
}

/* The shape of one msgpack header byte: `len_bytes` big-endian length bytes follow it; then
 * `fixed` bytes of payload plus `per_len` bytes per unit of length (strings, bins, exts), or
 * `items_per_len` child values per unit of length (arrays 1, maps 2). */
typedef struct head {
    unsigned len_bytes, fixed, per_len, items_per_len;
    uint64_t inline_len; /* for fix* types: the length carried in the byte itself */
    bool valid;
} head_t;

static head_t classify(unsigned char b)
{
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return (head_t){.valid = true};
    if ((b & 0xf0) == 0x80)
        return (head_t){.items_per_len = 2, .inline_len = b & 0x0f, .valid = true};
    if ((b & 0xf0) == 0x90)
        return (head_t){.items_per_len = 1, .inline_len = b & 0x0f, .valid = true};
    if ((b & 0xe0) == 0xa0)
        return (head_t){.per_len = 1, .inline_len = b & 0x1f, .valid = true};
    switch (b) {
    case 0xc4: case 0xd9: return (head_t){.len_bytes = 1, .per_len = 1, .valid = true};
    case 0xc5: case 0xda: return (head_t){.len_bytes = 2, .per_len = 1, .valid = true};
    case 0xc6: case 0xdb: return (head_t){.len_bytes = 4, .per_len = 1, .valid = true};
    case 0xc7: return (head_t){.len_bytes = 1, .fixed = 1, .per_len = 1, .valid = true};
    case 0xc8: return (head_t){.len_bytes = 2, .fixed = 1, .per_len = 1, .valid = true};
    case 0xc9: return (head_t){.len_bytes = 4, .fixed = 1, .per_len = 1, .valid = true};
    case 0xca: case 0xce: case 0xd2: return (head_t){.fixed = 4, .valid = true};
    case 0xcb: case 0xcf: case 0xd3: return (head_t){.fixed = 8, .valid = true};
    case 0xcc: case 0xd0: return (head_t){.fixed = 1, .valid = true};
    case 0xcd: case 0xd1: return (head_t){.fixed = 2, .valid = true};
    case 0xd4: return (head_t){.fixed = 2, .valid = true};
    case 0xd5: return (head_t){.fixed = 3, .valid = true};
    case 0xd6: return (head_t){.fixed = 5, .valid = true};
    case 0xd7: return (head_t){.fixed = 9, .valid = true};
    case 0xd8: return (head_t){.fixed = 17, .valid = true};
    case 0xdc: return (head_t){.len_bytes = 2, .items_per_len = 1, .valid = true};
    case 0xdd: return (head_t){.len_bytes = 4, .items_per_len = 1, .valid = true};
    case 0xde: return (head_t){.len_bytes = 2, .items_per_len = 2, .valid = true};
    case 0xdf: return (head_t){.len_bytes = 4, .items_per_len = 2, .valid = true};
    default: return (head_t){.valid = false}; /* 0xc1: never used */
    }
}

/* Containers may nest this deep; msgpack-c's unpacker stops at 32 (and then reports running
 * out of memory, which would read as our fault). */
#define NEST_MAX 24

/* Walk one value from p[0]; *end_out = the offset just after it. No recursion: `left` holds,
 * per open container, the values still to read in it, and `pending` their total, which can
 * never exceed the bytes left since each value takes at least one byte. */
static int scan_value(const unsigned char *p, size_t len, size_t *end_out,
                      const char **code_out, nx_err_t *err)
{
    uint64_t left[NEST_MAX];
    int depth = 0;
    uint64_t pending = 1;
    size_t pos = 0;
    do {
        if (pos >= len)
            return bad_msgpack(code_out, err, "the frame is truncated: it ends after %zu "
                               "bytes inside a msgpack value", len);
        size_t at = pos;
        head_t h = classify(p[pos++]);
        pending--;
        if (!h.valid)
            return bad_msgpack(code_out, err, "byte 0x%02x at offset %zu is not a msgpack "
                               "type", p[at], at);
        uint64_t n = h.inline_len;
        if (h.len_bytes) {
            if (h.len_bytes > len - pos)
                return bad_msgpack(code_out, err, "the frame is truncated: it ends inside "
                                   "the length of the value at offset %zu", at);
            n = 0;
            for (unsigned i = 0; i < h.len_bytes; i++)
                n = (n << 8) | p[pos++];
        }
        uint64_t payload = h.fixed + n * h.per_len; /* n < 2^32, per_len <= 1 */
        if (payload > len - pos)
            return bad_msgpack(code_out, err, "the frame is truncated: the value at offset "
                               "%zu needs %llu bytes, %zu are left", at,
                               (unsigned long long)payload, len - pos);
        pos += payload;
        uint64_t children = n * h.items_per_len;
        pending += children;
        if (pending > len - pos)
            return bad_msgpack(code_out, err, "the frame is truncated: the container at "
                               "offset %zu declares %llu entries, only %zu bytes are left", at,
                               (unsigned long long)children, len - pos);
        if (children > 0) {
            if (depth == NEST_MAX)
                return bad_msgpack(code_out, err, "containers nested too deeply (more than "
                                   "%d) at offset %zu", NEST_MAX, at);
            left[depth++] = children;
        } else {
            while (depth > 0 && --left[depth - 1] == 0)
                depth--;
        }
    } while (depth > 0);
    *end_out = pos;
    return NX_OK;
}

const char *nx__proto_type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "unknown";
}

bool nx__proto_str_eq(const msgpack_object *o, const char *text)
{
    size_t n = strlen(text);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, text, n) == 0;
}

const msgpack_object *nx__proto_get(const msgpack_object *o, const char *key)
{
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++)
        if (nx__proto_str_eq(&o->via.map.ptr[i].key, key))
            return &o->via.map.ptr[i].val;
    return NULL;
}

int nx__proto_unpack_map(const void *frame, size_t len, size_t max_bytes, msgpack_unpacked *out,
                         const char **code_out, nx_err_t *err)
{
    if (max_bytes && len > max_bytes) {
        *code_out = "too_large";
        return nx_err_set(err, NX_EINVAL, "the message is %zu bytes, over the limit of %zu "
                          "(max_message_bytes)", len, max_bytes);
    }
    if (len == 0)
        return bad_msgpack(code_out, err, "the frame is empty; expected one msgpack map");
    size_t end = 0;
    int rc = scan_value(frame, len, &end, code_out, err);
    if (rc)
        return rc;
    if (end != len)
        return bad_msgpack(code_out, err, "%zu trailing bytes after the msgpack value (it "
                           "ends at offset %zu); a frame holds exactly one map", len - end, end);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(out, frame, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        out->data.type = MSGPACK_OBJECT_NIL;
        *code_out = "internal";
        return nx_err_set(err, NX_ENOMEM, "out of memory unpacking a %zu-byte frame", len);
    }
    if ((ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES) || off != len) {
        out->data.type = MSGPACK_OBJECT_NIL; /* callers look at data only when it is a map */
        return bad_msgpack(code_out, err, "the frame is not valid msgpack (nested too deeply "
                           "or malformed; the unpacker stopped at offset %zu)", off);
    }
    const msgpack_object *root = &out->data;
    if (root->type != MSGPACK_OBJECT_MAP)
        return bad_msgpack(code_out, err, "the frame holds a msgpack %s, not a map",
                           nx__proto_type_name(root));
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *key = &root->via.map.ptr[i].key;
        if (key->type != MSGPACK_OBJECT_STR)
            return bad_msgpack(code_out, err, "key %u of the map is a msgpack %s; every key "
                               "must be a string", i + 1, nx__proto_type_name(key));
    }
    return NX_OK;
}
