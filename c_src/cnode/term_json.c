/* term_json.c - see term_json.h for the mapping rules. */
#include "term_json.h"

#include <stdlib.h>
#include <string.h>

#include "term.h"

static int encode_value(ei_x_buff *x, const json_t *j);

static int encode_object(ei_x_buff *x, const json_t *j)
{
    if (ei_x_encode_map_header(x, (long)json_object_size(j)) < 0) return -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val) {
        if (ei_x_encode_binary(x, key, (long)strlen(key)) < 0) return -1;
        if (encode_value(x, val) < 0) return -1;
    }
    return 0;
}

static int encode_value(ei_x_buff *x, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return encode_object(x, j);
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (n > 0 && ei_x_encode_list_header(x, (long)n) < 0) return -1;
        for (size_t i = 0; i < n; i++)
            if (encode_value(x, json_array_get(j, i)) < 0) return -1;
        return ei_x_encode_empty_list(x);
    }
    case JSON_STRING:
        return ei_x_encode_binary(x, json_string_value(j), (long)json_string_length(j));
    case JSON_INTEGER:
        return ei_x_encode_longlong(x, (EI_LONGLONG)json_integer_value(j));
    case JSON_REAL:
        return ei_x_encode_double(x, json_real_value(j));
    case JSON_TRUE:
        return ei_x_encode_atom(x, "true");
    case JSON_FALSE:
        return ei_x_encode_atom(x, "false");
    case JSON_NULL:
    default:
        return ei_x_encode_atom(x, "nil");
    }
}

int term_json_encode(ei_x_buff *x, const json_t *j)
{
    return encode_value(x, j);
}

/* ------------------------------------------------------------ decoding */

#define FAIL(msg) do { *why = (msg); goto fail; } while (0)

static json_t *decode_atom(const char *buf, int *index, const char **why)
{
    char atom[MAXATOMLEN_UTF8];
    erlang_char_encoding was;
    if (ei_decode_atom_as(buf, index, atom, sizeof atom, ERLANG_UTF8, &was, NULL) < 0) {
        *why = "bad atom";
        return NULL;
    }
    if (strcmp(atom, "true") == 0) return json_true();
    if (strcmp(atom, "false") == 0) return json_false();
    if (strcmp(atom, "nil") == 0 || strcmp(atom, "null") == 0 ||
        strcmp(atom, "undefined") == 0)
        return json_null();
    json_t *s = json_string(atom);
    if (!s) *why = "atom is not valid UTF-8";
    return s;
}

static json_t *decode_binary(const char *buf, int *index, int size, const char **why)
{
    char *tmp = malloc(size > 0 ? (size_t)size : 1);
    long got = 0;
    if (!tmp) { *why = "out of memory"; return NULL; }
    if (ei_decode_binary(buf, index, tmp, &got) < 0) {
        free(tmp);
        *why = "bad binary";
        return NULL;
    }
    json_t *s = json_stringn(tmp, (size_t)got);
    free(tmp);
    if (!s) *why = "binary is not valid UTF-8";
    return s;
}

static json_t *decode_term(const char *buf, int *index, int depth, const char **why);

static json_t *decode_map(const char *buf, int *index, int depth, const char **why)
{
    int arity = 0;
    json_t *obj = NULL;
    if (ei_decode_map_header(buf, index, &arity) < 0) FAIL("bad map");
    obj = json_object();
    if (!obj) FAIL("out of memory");
    for (int i = 0; i < arity; i++) {
        json_t *k = NULL;
        int type = 0, size = 0;
        ei_get_type(buf, index, &type, &size);
        cn_kind kind = cn_tag_kind((unsigned char)buf[*index]);
        if (kind == CN_KIND_ATOM)
            k = decode_atom(buf, index, why);
        else if (kind == CN_KIND_BINARY)
            k = decode_binary(buf, index, size, why);
        else
            FAIL("map key is neither atom nor binary");
        if (!k) goto fail;
        if (!json_is_string(k)) {     /* true/false/nil as keys */
            json_decref(k);
            FAIL("map key must be a name");
        }
        json_t *v = decode_term(buf, index, depth, why);
        if (!v) { json_decref(k); goto fail; }
        int r = json_object_set_new(obj, json_string_value(k), v);
        json_decref(k);
        if (r < 0) FAIL("out of memory");
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

static json_t *decode_list(const char *buf, int *index, int depth, const char **why)
{
    int arity = 0;
    json_t *arr = NULL;
    if (ei_decode_list_header(buf, index, &arity) < 0) FAIL("bad list");
    arr = json_array();
    if (!arr) FAIL("out of memory");
    for (int i = 0; i < arity; i++) {
        json_t *v = decode_term(buf, index, depth, why);
        if (!v) goto fail;
        if (json_array_append_new(arr, v) < 0) FAIL("out of memory");
    }
    if (arity > 0) {
        int size = 0;
        if (cn_tag_kind((unsigned char)buf[*index]) != CN_KIND_NIL) FAIL("improper list");
        if (ei_decode_list_header(buf, index, &size) < 0) FAIL("bad list tail");
    }
    return arr;
fail:
    json_decref(arr);
    return NULL;
}

static json_t *decode_term(const char *buf, int *index, int depth, const char **why)
{
    int type = 0, size = 0;
    if (depth <= 0) { *why = "nesting too deep"; return NULL; }
    if (ei_get_type(buf, index, &type, &size) < 0) { *why = "bad term"; return NULL; }
    switch (cn_tag_kind((unsigned char)buf[*index])) {
    case CN_KIND_INTEGER: {
        EI_LONGLONG v = 0;
        if (ei_decode_longlong(buf, index, &v) < 0) {
            *why = "integer out of 64-bit range";
            return NULL;
        }
        return json_integer((json_int_t)v);
    }
    case CN_KIND_FLOAT: {
        double d = 0;
        if (ei_decode_double(buf, index, &d) < 0) { *why = "bad float"; return NULL; }
        return json_real(d);
    }
    case CN_KIND_ATOM:
        return decode_atom(buf, index, why);
    case CN_KIND_BINARY:
        return decode_binary(buf, index, size, why);
    case CN_KIND_MAP:
        return decode_map(buf, index, depth - 1, why);
    case CN_KIND_NIL:
    case CN_KIND_LIST:
        return decode_list(buf, index, depth - 1, why);
    case CN_KIND_STRING: {
        /* A list of small integers, as BEAM packs it. */
        unsigned char *tmp = malloc(size > 0 ? (size_t)size + 1 : 1);
        json_t *arr = NULL;
        if (!tmp) { *why = "out of memory"; return NULL; }
        if (ei_decode_string(buf, index, (char *)tmp) < 0) {
            free(tmp);
            *why = "bad string";
            return NULL;
        }
        arr = json_array();
        for (int i = 0; arr && i < size; i++)
            if (json_array_append_new(arr, json_integer(tmp[i])) < 0) {
                json_decref(arr);
                arr = NULL;
            }
        free(tmp);
        if (!arr) *why = "out of memory";
        return arr;
    }
    default:
        *why = "term has no JSON form (tuple, pid, ref, fun or bitstring)";
        return NULL;
    }
}

int term_json_decode(const char *buf, int *index, int max_depth, json_t **out,
                     const char **why)
{
    const char *dummy;
    if (!why) why = &dummy;
    *why = NULL;
    json_t *j = decode_term(buf, index, max_depth > 0 ? max_depth : 64, why);
    if (!j) return -1;
    *out = j;
    return 0;
}
