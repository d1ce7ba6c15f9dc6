/* gram_schema_merge.c — $ref resolution and allOf merging for the schema compiler.
 *
 * A local $ref ("#", "#/json/pointer", percent-decoded, or the root's $id with such a
 * fragment) is followed; in draft 2020-12 its
 * sibling keywords apply too (merged in), in draft-07 they are ignored as that draft says.
 * allOf is merged into one schema: keywords from one side are taken as they are, the same
 * keyword on both sides is combined where the combination is exact (type: intersection,
 * required: union, properties: per key allOf, min*: larger, max*: smaller, enum:
 * intersection) and refused by name otherwise. additionalProperties is only merged when the
 * other side lists no property it does not list itself, since the keyword speaks of its own
 * schema's properties. Chains are capped (depth 32; synthesized schemas in nx__sc_keep).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gram_schema.h"

#define MAX_RESOLVE_DEPTH 32

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The node a local $ref points to (borrowed), or NULL after an error. */
static json_t *lookup(nx__sc_t *sc, const char *ref, const char *ptr)
{
    /* the root's own $id followed by a fragment names this document too */
    const char *id = json_string_value(json_object_get(sc->root, "$id"));
    size_t id_len = id ? strcspn(id, "#") : 0;
    if (id_len && !strncmp(ref, id, id_len) && (ref[id_len] == '#' || ref[id_len] == '\0'))
        ref = ref[id_len] ? ref + id_len : "#";
    if (ref[0] != '#')
        return nx__sc_unsupported(sc, "$ref", ptr, "only local references ('#...') are built"),
               NULL;
    if (ref[1] != '\0' && ref[1] != '/')
        return nx__sc_unsupported(sc, "$ref", ptr, "references to anchors are not built"),
               NULL;
    json_t *node = sc->root;
    const char *p = ref + 1;
    char seg[NX__SC_PTR];
    while (*p == '/') {
        p++;
        size_t n = 0;
        for (; *p && *p != '/' && n + 1 < sizeof seg; p++) {
            char c = *p;
            if (c == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
                c = (char)(hexval(p[1]) << 4 | hexval(p[2]));
                p += 2;
            } else if (c == '~' && (p[1] == '0' || p[1] == '1')) {
                c = p[1] == '0' ? '~' : '/';
                p++;
            }
            seg[n++] = c;
        }
        seg[n] = '\0';
        if (json_is_object(node))
            node = json_object_get(node, seg);
        else if (json_is_array(node)) {
            char *end;
            unsigned long i = strtoul(seg, &end, 10);
            node = *seg && !*end ? json_array_get(node, i) : NULL;
        } else
            node = NULL;
        if (!node)
            break;
    }
    if (!node)
        nx__sc_fail(sc, NX_EINVAL, "$ref '%s' at %s points at nothing", ref,
                    nx__sc_where(ptr));
    return node;
}

static bool only_annotations(json_t *node)
{
    static const char *const ann[] = {"title", "description", "$comment", "examples", "default",
                                      "deprecated", "readOnly", "writeOnly", "$schema", "$defs",
                                      "definitions", "$id", "$anchor", NULL};
    const char *key;
    json_t *val;
    json_object_foreach(node, key, val) {
        bool found = false;
        for (const char *const *a = ann; *a && !found; a++)
            found = !strcmp(*a, key);
        if (!found)
            return false;
    }
    return true;
}

json_t *nx__sc_resolve(nx__sc_t *sc, json_t *node, const char *ptr, uint32_t depth)
{
    if (depth > MAX_RESOLVE_DEPTH)
        return nx__sc_fail(sc, NX_ENOTSUP, "$ref/allOf chain at %s deeper than %d",
                           nx__sc_where(ptr), MAX_RESOLVE_DEPTH), NULL;
    if (!json_is_object(node)) {
        if (!json_is_boolean(node))
            return nx__sc_fail(sc, NX_EINVAL, "schema at %s is not an object or a boolean",
                               nx__sc_where(ptr)), NULL;
        return json_incref(node);
    }
    json_t *ref = json_object_get(node, "$ref");
    if (ref) {
        if (!json_is_string(ref))
            return nx__sc_fail(sc, NX_EINVAL, "$ref at %s is not a string",
                               nx__sc_where(ptr)), NULL;
        json_t *target = lookup(sc, json_string_value(ref), ptr);
        if (!target)
            return NULL;
        json_t *siblings = json_copy(node);
        json_object_del(siblings, "$ref");
        if (sc->draft == NX_GRAM_DRAFT_07 || only_annotations(siblings)) {
            json_decref(siblings);
            /* a plain reference: keep the target node itself, so recursion shares its rule */
            if (json_is_object(target) && !json_object_get(target, "$ref") &&
                !json_object_get(target, "allOf"))
                return json_incref(target);
            return nx__sc_resolve(sc, target, ptr, depth + 1);
        }
        json_t *t = nx__sc_resolve(sc, target, ptr, depth + 1);
        json_t *s = t ? nx__sc_resolve(sc, siblings, ptr, depth + 1) : NULL;
        json_decref(siblings);
        json_t *out = NULL;
        if (t && s) {
            if (json_is_false(t) || json_is_false(s))
                out = json_false();
            else if (json_is_true(t))
                out = json_incref(s);
            else if (json_is_true(s))
                out = json_incref(t);
            else
                out = nx__sc_merge(sc, t, s, ptr);
        }
        json_decref(t);
        json_decref(s);
        return out;
    }
    json_t *all = json_object_get(node, "allOf");
    if (!all)
        return json_incref(node);
    if (!json_is_array(all) || json_array_size(all) == 0)
        return nx__sc_fail(sc, NX_EINVAL, "'allOf' at %s is not a non-empty array",
                           nx__sc_where(ptr)), NULL;
    json_t *acc = json_copy(node);
    json_object_del(acc, "allOf");
    char bptr[NX__SC_PTR + 32];
    size_t i;
    json_t *br;
    json_array_foreach(all, i, br) {
        snprintf(bptr, sizeof bptr, "%s/allOf/%zu", ptr, i);
        json_t *r = nx__sc_resolve(sc, br, bptr, depth + 1);
        if (!r) {
            json_decref(acc);
            return NULL;
        }
        json_t *next = json_is_true(r) ? json_incref(acc)
                     : json_is_false(r) ? json_false()
                     : json_is_false(acc) ? json_false()
                     : nx__sc_merge(sc, acc, r, bptr);
        json_decref(r);
        json_decref(acc);
        if (!(acc = next))
            return NULL;
    }
    return acc;
}

/* --- merging ---------------------------------------------------------------------------------- */

static unsigned types_of(json_t *t)
{
    static const char *const names[] = {"null", "boolean", "object", "array", "number",
                                        "string", "integer"};
    unsigned bits = 0;
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_is_array(t) ? json_array_get(t, i) : t);
        for (unsigned k = 0; s && k < 7; k++)
            if (!strcmp(s, names[k]))
                bits |= 1u << k;
    }
    return bits;
}

static json_t *types_json(unsigned bits)
{
    static const char *const names[] = {"null", "boolean", "object", "array", "number",
                                        "string", "integer"};
    json_t *a = json_array();
    for (unsigned k = 0; k < 7; k++)
        if (bits & (1u << k))
            json_array_append_new(a, json_string(names[k]));
    return a;
}

static bool lists_only(json_t *with_ap, json_t *other)
{
    json_t *mine = json_object_get(with_ap, "properties");
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(other, "properties"), key, v)
        if (!json_object_get(mine, key))
            return false;
    return true;
}

json_t *nx__sc_merge(nx__sc_t *sc, json_t *a, json_t *b, const char *ptr)
{
    json_t *ap_a = json_object_get(a, "additionalProperties");
    json_t *ap_b = json_object_get(b, "additionalProperties");
    if ((ap_a && !json_is_true(ap_a) && !lists_only(a, b)) ||
        (ap_b && !json_is_true(ap_b) && !lists_only(b, a)))
        return nx__sc_unsupported(sc, "additionalProperties", ptr,
                                  "allOf of schemas whose additionalProperties would see "
                                  "each other's properties is not built"), NULL;
    static const char *const arr[] = {"items", "prefixItems", "additionalItems", NULL};
    for (int i = 0; arr[i]; i++)
        for (int j = 0; arr[j]; j++)
            if (i != j && json_object_get(a, arr[i]) && json_object_get(b, arr[j]))
                return nx__sc_unsupported(sc, arr[i], ptr, "allOf of two array item "
                                                           "layouts is not built"), NULL;
    json_t *out = json_copy(a);
    const char *key;
    json_t *vb;
    json_object_foreach(b, key, vb) {
        json_t *va = json_object_get(out, key);
        if (!va) {
            json_object_set(out, key, vb);
            continue;
        }
        if (json_equal(va, vb))
            continue;
        if (!strcmp(key, "type")) {
            unsigned ta = types_of(va), tb = types_of(vb);
            /* number includes integer */
            if (ta & 16) ta |= 64;
            if (tb & 16) tb |= 64;
            unsigned both = ta & tb;
            if ((both & 16) && !((types_of(va) & 16) && (types_of(vb) & 16)))
                both &= ~16u;
            json_object_set_new(out, key, types_json(both));
        } else if (!strcmp(key, "required")) {
            json_t *u = json_copy(va);
            size_t i;
            json_t *x;
            json_array_foreach(vb, i, x) {
                bool seen = false;
                for (size_t j = 0; j < json_array_size(u) && !seen; j++)
                    seen = json_equal(json_array_get(u, j), x);
                if (!seen)
                    json_array_append(u, x);
            }
            json_object_set_new(out, key, u);
        } else if (!strcmp(key, "properties") || !strcmp(key, "$defs") ||
                   !strcmp(key, "definitions")) {
            json_t *u = json_copy(va);
            const char *k;
            json_t *x;
            json_object_foreach(vb, k, x) {
                json_t *y = json_object_get(u, k);
                if (!y)
                    json_object_set(u, k, x);
                else if (!json_equal(x, y))
                    json_object_set_new(u, k, json_pack("{s[OO]}", "allOf", y, x));
            }
            json_object_set_new(out, key, u);
        } else if (!strcmp(key, "minimum") || !strcmp(key, "exclusiveMinimum") ||
                   !strcmp(key, "minLength") || !strcmp(key, "minItems") ||
                   !strcmp(key, "maximum") || !strcmp(key, "exclusiveMaximum") ||
                   !strcmp(key, "maxLength") || !strcmp(key, "maxItems")) {
            if (!json_is_number(va) || !json_is_number(vb)) {
                json_decref(out);
                return nx__sc_fail(sc, NX_EINVAL, "'%s' at %s is not a number", key,
                                   nx__sc_where(ptr)), NULL;
            }
            bool lower = !strncmp(key, "min", 3) || !strcmp(key, "exclusiveMinimum");
            double x = json_number_value(va), y = json_number_value(vb);
            if (lower ? y > x : y < x)
                json_object_set(out, key, vb);
        } else if (!strcmp(key, "multipleOf")) {
            json_t *l = nx__sc_multiple_lcm(sc, va, vb, ptr);
            if (!l) {
                json_decref(out);
                return NULL;
            }
            json_object_set_new(out, key, l);
        } else if (!strcmp(key, "enum")) {
            json_t *u = json_array();
            size_t i, j;
            json_t *x, *y;
            json_array_foreach(va, i, x) {
                bool in = false;
                json_array_foreach(vb, j, y) in |= json_equal(x, y);
                if (in)
                    json_array_append(u, x);
            }
            json_object_set_new(out, key, u);
        } else if (!strcmp(key, "const")) {
            json_object_set_new(out, "enum", json_array()); /* two different consts */
        } else {
            bool ann = !strcmp(key, "title") || !strcmp(key, "description") ||
                       !strcmp(key, "$comment") || !strcmp(key, "default") ||
                       !strcmp(key, "examples") || !strcmp(key, "$schema") ||
                       !strcmp(key, "$id");
            if (ann)
                continue;
            json_decref(out);
            return nx__sc_unsupported(sc, key, ptr, "allOf with this keyword in two "
                                                    "branches, different, is not built"), NULL;
        }
    }
    return out;
}
