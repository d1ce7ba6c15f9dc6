/* ctl_gguf.c — a GGUF file's key/values for `nexusctl model inspect`: one line each as text
 * (long strings cut, long arrays summarized), or JSON values a script can compare exactly. */
#include "ctl_gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_STRING_CHARS 120 /* a chat template is kilobytes: text shows its start */

/* Length of the well-formed UTF-8 sequence at p (Unicode's table 3-7), or 0. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef)
        need = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (need > left || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < need; k++)
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    return need;
}

/* ---- text ------------------------------------------------------------------------------ */

/* A string quoted and escaped into out (UTF-8 kept, control characters and bytes that are
 * not UTF-8 as \xNN), cut after max_chars input bytes with "...". */
static void quote(const char *s, size_t len, size_t max_chars, char *out, size_t cap)
{
    size_t used = 0;
    out[used++] = '"';
    for (size_t i = 0; i < len && i < max_chars && used + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c >= 0x80 ? utf8_len((const unsigned char *)s + i, len - i) : 0;
        if (n > 1) {
            memcpy(out + used, s + i, n);
            used += n;
            i += n - 1;
        } else if (c == '"' || c == '\\')
            used += (size_t)snprintf(out + used, cap - used, "\\%c", c);
        else if (c == '\n')
            used += (size_t)snprintf(out + used, cap - used, "\\n");
        else if (c >= 0x20 && c < 0x7f)
            out[used++] = (char)c;
        else
            used += (size_t)snprintf(out + used, cap - used, "\\x%02x", c);
    }
    out[used++] = '"';
    out[used] = '\0';
    if (len > max_chars)
        snprintf(out + used, cap - used, "... (%zu bytes)", len);
}

/* Element i of kv as text into out. */
static void elem_text(const nx_gguf_kv_t *kv, uint64_t i, char *out, size_t cap)
{
    nx_gguf_type_t type = nx_gguf_kv_elem_type(kv);
    uint64_t u;
    int64_t s;
    double f;
    bool b;
    size_t len;
    if (type == NX_GGUF_STRING) {
        const char *str = nx_gguf_get_str(kv, i, &len);
        quote(str, len, TEXT_STRING_CHARS, out, cap);
    } else if (type == NX_GGUF_BOOL && nx_gguf_get_bool(kv, i, &b)) {
        snprintf(out, cap, "%s", b ? "true" : "false");
    } else if ((type == NX_GGUF_F32 || type == NX_GGUF_F64) && nx_gguf_get_f64(kv, i, &f)) {
        snprintf(out, cap, "%.9g", f);
    } else if (nx_gguf_get_u64(kv, i, &u)) {
        snprintf(out, cap, "%" PRIu64, u);
    } else if (nx_gguf_get_i64(kv, i, &s)) {
        snprintf(out, cap, "%" PRId64, s);
    } else {
        snprintf(out, cap, "?");
    }
}

void nx_ctl_gguf_print_text(const nx_st_t *st)
{
    size_t count = nx_st_gguf_kv_count(st);
    printf("GGUF v%u, general.alignment %u, %zu tensor%s, %zu key%s\n", nx_st_gguf_version(st),
           nx_st_gguf_alignment(st), nx_st_tensor_count(st),
           nx_st_tensor_count(st) == 1 ? "" : "s", count, count == 1 ? "" : "s");
    for (size_t k = 0; k < count; k++) {
        const nx_gguf_kv_t *kv = nx_st_gguf_kv_at(st, k);
        char type[24], value[1024];
        if (nx_gguf_kv_type(kv) == NX_GGUF_ARRAY)
            snprintf(type, sizeof type, "arr[%s]", nx_gguf_type_name(nx_gguf_kv_elem_type(kv)));
        else
            snprintf(type, sizeof type, "%s", nx_gguf_type_name(nx_gguf_kv_type(kv)));
        printf("  %-40s %-9s ", nx_gguf_kv_key(kv), type);
        if (nx_gguf_kv_type(kv) != NX_GGUF_ARRAY) {
            elem_text(kv, 0, value, sizeof value);
            printf("%s\n", value);
            continue;
        }
        uint64_t n = nx_gguf_kv_count(kv);
        printf("%" PRIu64 " element%s%s", n, n == 1 ? "" : "s", n ? ": [" : "");
        for (uint64_t i = 0; i < n && i < NX_CTL_GGUF_ARRAY_HEAD; i++) {
            elem_text(kv, i, value, sizeof value);
            printf("%s%s", i ? ", " : "", value);
        }
        printf("%s\n", n > NX_CTL_GGUF_ARRAY_HEAD ? ", ...]" : n ? "]" : "");
    }
}

/* ---- JSON ------------------------------------------------------------------------------ */

/* A JSON string of the bytes, those that are not well-formed UTF-8 replaced by U+FFFD
 * (json_stringn refuses them). */
static json_t *json_bytes(const char *s, size_t len)
{
    json_t *value = json_stringn(s, len);
    if (value)
        return value;
    char *fixed = malloc(len * 3 + 1);
    if (!fixed)
        return NULL;
    size_t used = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len(p + i, len - i);
        if (n) {
            memcpy(fixed + used, p + i, n);
            used += n;
            i += n;
        } else {
            memcpy(fixed + used, "\xef\xbf\xbd", 3);
            used += 3;
            i++;
        }
    }
    value = json_stringn(fixed, used);
    free(fixed);
    return value;
}

static json_t *json_number(double f)
{
    if (isnan(f))
        return json_string("nan");
    if (isinf(f))
        return json_string(f > 0 ? "inf" : "-inf");
    return json_real(f);
}

static json_t *elem_json(const nx_gguf_kv_t *kv, uint64_t i)
{
    nx_gguf_type_t type = nx_gguf_kv_elem_type(kv);
    uint64_t u;
    int64_t s;
    double f;
    bool b;
    size_t len;
    if (type == NX_GGUF_STRING) {
        const char *str = nx_gguf_get_str(kv, i, &len);
        return str ? json_bytes(str, len) : NULL;
    }
    if (type == NX_GGUF_BOOL && nx_gguf_get_bool(kv, i, &b))
        return json_boolean(b);
    if ((type == NX_GGUF_F32 || type == NX_GGUF_F64) && nx_gguf_get_f64(kv, i, &f))
        return json_number(f);
    if (nx_gguf_get_i64(kv, i, &s))
        return json_integer((json_int_t)s);
    if (nx_gguf_get_u64(kv, i, &u)) { /* past INT64_MAX: JSON integers here are 64-bit signed */
        char text[24];
        snprintf(text, sizeof text, "%" PRIu64, u);
        return json_string(text);
    }
    return json_null();
}

static json_t *kv_json(const nx_gguf_kv_t *kv, bool summary)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    const char *key = nx_gguf_kv_key(kv);
    json_object_set_new(o, "key", json_bytes(key, strlen(key)));
    json_object_set_new(o, "type", json_string(nx_gguf_type_name(nx_gguf_kv_type(kv))));
    if (nx_gguf_kv_type(kv) != NX_GGUF_ARRAY) {
        json_object_set_new(o, "value", elem_json(kv, 0));
        return o;
    }
    uint64_t n = nx_gguf_kv_count(kv);
    uint64_t shown = summary && n > NX_CTL_GGUF_ARRAY_HEAD ? NX_CTL_GGUF_ARRAY_HEAD : n;
    json_t *values = json_array();
    for (uint64_t i = 0; values && i < shown; i++) {
        if (json_array_append_new(values, elem_json(kv, i)) != 0) {
            json_decref(values);
            values = NULL;
        }
    }
    json_object_set_new(o, "elem_type", json_string(nx_gguf_type_name(nx_gguf_kv_elem_type(kv))));
    json_object_set_new(o, "count", json_integer((json_int_t)n));
    json_object_set_new(o, "value", values);
    json_object_set_new(o, "truncated", json_boolean(shown < n));
    if (!values) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *nx_ctl_gguf_json(const nx_st_t *st, bool summary)
{
    json_t *metadata = json_array();
    for (size_t k = 0; metadata && k < nx_st_gguf_kv_count(st); k++) {
        json_t *entry = kv_json(nx_st_gguf_kv_at(st, k), summary);
        if (!entry || json_array_append_new(metadata, entry) != 0) {
            json_decref(metadata);
            metadata = NULL;
        }
    }
    if (!metadata)
        return NULL;
    return json_pack("{s:I, s:I, s:I, s:o}", "version", (json_int_t)nx_st_gguf_version(st),
                     "alignment", (json_int_t)nx_st_gguf_alignment(st), "kv_count",
                     (json_int_t)nx_st_gguf_kv_count(st), "metadata", metadata);
}
