/* The request parser's common half: the arena, typed field readers with field-naming errors,
 * messages, stop strings, images (base64, data: URIs, file:// and http(s):// URLs), and the
 * entry point that hands the body to the OpenAI or Ollama half. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/base64.h"
#include "server/parse_internal.h"

/* ---- arena ---- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK (64 * 1024)

void *srv_arena_alloc(srv_arena *a, size_t size) {
    size = (size + 15) & ~(size_t)15;
    struct arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > ARENA_CHUNK ? size : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        /* a large block goes behind the current chunk so that its free room stays usable */
        if (a->head && size > ARENA_CHUNK) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

char *srv_arena_strdup(srv_arena *a, const char *s, size_t len) {
    char *d = srv_arena_alloc(a, len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

static void arena_free(srv_arena *a) {
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

/* ---- errors and typed readers ---- */

int pfail(pctx *c, const char *field, const char *fmt, ...) {
    srv_parse_error *e = c->err;
    e->status = 400;
    snprintf(e->param, sizeof e->param, "%s", field);
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (field[0]) snprintf(e->message, sizeof e->message, "%s: %s", field, text);
    else snprintf(e->message, sizeof e->message, "%s", text);
    return -1;
}

int pfail_oom(pctx *c) {
    c->err->status = 500;
    c->err->param[0] = '\0';
    snprintf(c->err->message, sizeof c->err->message, "out of memory while reading the request");
    return -1;
}

const json_t *pget(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

int pget_bool(pctx *c, const json_t *obj, const char *key, const char *field, bool *out) {
    const json_t *v = pget(obj, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return pfail(c, field, "expected a boolean, got %s", type_name(v));
    *out = json_is_true(v);
    return 0;
}

int pget_number(pctx *c, const json_t *obj, const char *key, const char *field, double lo,
                double hi, double *out, bool *present) {
    const json_t *v = pget(obj, key);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (!json_is_number(v)) return pfail(c, field, "expected a number, got %s", type_name(v));
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return pfail(c, field, "%g is out of range [%g, %g]", d, lo, hi);
    *out = d;
    return 0;
}

int pget_int(pctx *c, const json_t *obj, const char *key, const char *field, int64_t lo,
             int64_t hi, int64_t *out, bool *present) {
    const json_t *v = pget(obj, key);
    if (present) *present = v != NULL;
    if (!v) return 0;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        /* 16.0 is an integer as some clients write it; 16.5 is not (nor 1e300) */
        double d = json_real_value(v);
        if (!(d >= -9.2e18 && d <= 9.2e18) || d != floor(d))
            return pfail(c, field, "expected an integer, got %g", d);
        x = (int64_t)d;
    } else {
        return pfail(c, field, "expected an integer, got %s", type_name(v));
    }
    if (x < lo || x > hi)
        return pfail(c, field, "%lld is out of range [%lld, %lld]", (long long)x, (long long)lo,
                     (long long)hi);
    *out = x;
    return 0;
}

int pget_string(pctx *c, const json_t *obj, const char *key, const char *field, const char **out) {
    const json_t *v = pget(obj, key);
    if (!v) return 0;
    if (!json_is_string(v)) return pfail(c, field, "expected a string, got %s", type_name(v));
    *out = json_string_value(v);
    return 0;
}

/* ---- stop strings ---- */

static int add_stop(pctx *c, const json_t *s, const char *field) {
    if (!json_is_string(s)) return pfail(c, field, "expected a string, got %s", type_name(s));
    size_t n = json_string_length(s);
    if (n == 0) return pfail(c, field, "empty stop string");
    if (n > SRV_MAX_STOP_LEN)
        return pfail(c, field, "stop string of %zu bytes (at most %d)", n, SRV_MAX_STOP_LEN);
    if (memchr(json_string_value(s), 0, n)) return pfail(c, field, "stop string contains NUL");
    if (c->n_stop == SRV_MAX_STOP) return pfail(c, field, "more than %d stop strings", SRV_MAX_STOP);
    const char *d = srv_arena_strdup(c->p->arena, json_string_value(s), n);
    if (!d) return pfail_oom(c);
    c->stop[c->n_stop++] = d;
    return 0;
}

int pparse_stop(pctx *c, const json_t *v, const char *field) {
    if (!v) return 0;
    if (!c->stop && !(c->stop = srv_arena_alloc(c->p->arena, SRV_MAX_STOP * sizeof *c->stop)))
        return pfail_oom(c);
    if (json_is_string(v)) return add_stop(c, v, field);
    if (!json_is_array(v))
        return pfail(c, field, "expected a string or an array of strings, got %s", type_name(v));
    size_t i;
    const json_t *s;
    json_array_foreach(v, i, s) {
        char f[160];
        snprintf(f, sizeof f, "%s[%zu]", field, i);
        if (add_stop(c, s, f) != 0) return -1;
    }
    return 0;
}

/* ---- messages and images ---- */

int padd_message(pctx *c, const char *role, const char *content, size_t content_len) {
    if (c->n_msgs == c->cap_msgs) {
        size_t cap = c->cap_msgs ? c->cap_msgs * 2 : 8;
        pmsg *m = realloc(c->msgs, cap * sizeof *m);
        if (!m) return pfail_oom(c);
        c->msgs = m;
        c->cap_msgs = cap;
    }
    const char *r = srv_arena_strdup(c->p->arena, role, strlen(role));
    const char *t = srv_arena_strdup(c->p->arena, content, content_len);
    if (!r || !t) return pfail_oom(c);
    c->msgs[c->n_msgs] = (pmsg){.role = r, .content = t, .first_image = c->n_images};
    return (int)c->n_msgs++;
}

size_t pcount_markers(const char *text) {
    size_t n = 0;
    for (const char *s = text; (s = strstr(s, "<image>")); s += 7) n++;
    return n;
}

const char *srv_image_format(const unsigned char *b, size_t n) {
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return "jpeg";
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return "png";
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return "webp";
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) return "gif";
    if (n >= 14 && b[0] == 'B' && b[1] == 'M') return "bmp";
    return NULL;
}

static bool has_prefix_ci(const char *s, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* file:///abs/path or file://localhost/abs/path, percent-decoded. */
static const char *file_url_path(pctx *c, const char *v, size_t len, const char *field) {
    const char *s = v + 7; /* after file:// */
    size_t n = len - 7;
    if (has_prefix_ci(s, n, "localhost/")) {
        s += 9;
        n -= 9;
    }
    if (n == 0 || s[0] != '/') {
        pfail(c, field, "a file URL must name an absolute path on this machine (file:///path)");
        return NULL;
    }
    char *out = srv_arena_alloc(c->p->arena, n + 1);
    if (!out) {
        pfail_oom(c);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                pfail(c, field, "bad percent escape at offset %zu of the file URL", i + 7);
                return NULL;
            }
            out[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '?' || s[i] == '#') {
            pfail(c, field, "a file URL may not have a query or fragment");
            return NULL;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return out;
}

/* Room for one more image; the count limit is checked here so the message names the field. */
static int grow_images(pctx *c, const char *field) {
    if (c->n_images >= c->opt->max_images) {
        if (c->opt->max_images == 0) return pfail(c, field, "this server accepts no images");
        return pfail(c, field, "more than %zu images in one request", c->opt->max_images);
    }
    if (c->n_images == c->cap_images) {
        size_t cap = c->cap_images ? c->cap_images * 2 : 4;
        llava_image *im = realloc(c->images, cap * sizeof *im);
        if (!im) return pfail_oom(c);
        c->images = im;
        srv_image_source *so = realloc(c->sources, cap * sizeof *so);
        if (!so) return pfail_oom(c);
        c->sources = so;
        c->cap_images = cap;
    }
    return 0;
}

static int decode_base64_image(pctx *c, const char *b64, size_t len, const char *field,
                               llava_image *im) {
    unsigned char *buf = srv_arena_alloc(c->p->arena, srv_base64_max_decoded(len));
    if (!buf) return pfail_oom(c);
    size_t n = 0;
    char msg[160];
    if (srv_base64_decode(b64, len, buf, &n, msg, sizeof msg) != 0)
        return pfail(c, field, "%s", msg);
    if (!srv_image_format(buf, n))
        return pfail(c, field, "the %zu decoded bytes are not a JPEG, PNG, WebP, GIF or BMP image",
                     n);
    im->data = buf;
    im->size = n;
    return 0;
}

int padd_image(pctx *c, const char *v, size_t len, const char *field, bool allow_urls) {
    if (grow_images(c, field) != 0) return -1;
    llava_image im = {0};
    srv_image_source src = {.url = NULL};
    snprintf(src.field, sizeof src.field, "%s", field);
    if (has_prefix_ci(v, len, "data:")) {
        const char *comma = memchr(v, ',', len);
        if (!comma) return pfail(c, field, "a data URI without ',' before its data");
        size_t head = (size_t)(comma - v);
        if (!has_prefix_ci(v + 5, head - 5, "image/"))
            return pfail(c, field, "the data URI's media type is not image/* ('%.*s')",
                         (int)(head - 5 < 40 ? head - 5 : 40), v + 5);
        if (head < 12 || strncasecmp(comma - 7, ";base64", 7) != 0)
            return pfail(c, field, "only base64 data URIs are accepted (data:image/...;base64,...)");
        if (decode_base64_image(c, comma + 1, len - head - 1, field, &im) != 0) return -1;
    } else if (has_prefix_ci(v, len, "http://") || has_prefix_ci(v, len, "https://")) {
        if (!allow_urls)
            return pfail(c, field, "expected base64 image data, got a URL");
        if (!c->opt->allow_remote_images)
            return pfail(c, field, "remote image URLs are disabled on this server "
                                   "(start it with --allow-remote-images)");
        if (len > 8192) return pfail(c, field, "URL longer than 8192 bytes");
        if (memchr(v, 0, len) || strpbrk(v, " \t\r\n"))
            return pfail(c, field, "URL contains whitespace or NUL");
        if (!(src.url = srv_arena_strdup(c->p->arena, v, len))) return pfail_oom(c);
        c->p->n_remote++;
    } else if (has_prefix_ci(v, len, "file://")) {
        if (!allow_urls)
            return pfail(c, field, "expected base64 image data, got a URL");
        if (!c->opt->allow_local_files)
            return pfail(c, field, "file:// URLs are disabled on this server "
                                   "(start it with --allow-local-files)");
        if (memchr(v, 0, len)) return pfail(c, field, "URL contains NUL");
        if (!(im.path = file_url_path(c, v, len, field))) return -1;
    } else if (allow_urls) {
        return pfail(c, field, "expected a data:image/...;base64 URI%s", 
                     c->opt->allow_remote_images ? " or an http(s):// URL" : "");
    } else {
        if (decode_base64_image(c, v, len, field, &im) != 0) return -1;
    }
    c->images[c->n_images] = im;
    c->sources[c->n_images] = src;
    c->n_images++;
    if (c->n_msgs > 0) c->msgs[c->n_msgs - 1].n_images++;
    return 0;
}

/* ---- entry point ---- */

/* Moves the lists of c into the arena and points the request at them. */
static int finish(pctx *c) {
    srv_parsed *p = c->p;
    srv_arena *a = p->arena;
    if (c->n_images) {
        p->images = srv_arena_alloc(a, c->n_images * sizeof *p->images);
        p->sources = srv_arena_alloc(a, c->n_images * sizeof *p->sources);
        if (!p->images || !p->sources) return pfail_oom(c);
        memcpy(p->images, c->images, c->n_images * sizeof *p->images);
        memcpy(p->sources, c->sources, c->n_images * sizeof *p->sources);
        p->n_images = c->n_images;
    }
    if (!p->req.prompt && c->n_msgs) {
        p->messages = srv_arena_alloc(a, c->n_msgs * sizeof *p->messages);
        if (!p->messages) return pfail_oom(c);
        for (size_t i = 0; i < c->n_msgs; i++) {
            const pmsg *m = &c->msgs[i];
            p->messages[i] = (llava_message){
                .role = m->role, .content = m->content,
                .images = m->n_images ? p->images + m->first_image : NULL,
                .n_images = m->n_images};
        }
        p->req.messages = p->messages;
        p->req.n_messages = c->n_msgs;
    } else if (p->req.prompt) {
        p->req.images = p->n_images ? p->images : NULL;
        p->req.n_images = p->n_images;
    }
    p->req.stop = c->n_stop ? c->stop : NULL;
    p->req.n_stop = c->n_stop;
    p->req.user = NULL;
    return 0;
}

srv_parsed *srv_parse_request(srv_api api, const char *body, size_t len,
                              const srv_parse_options *opt, srv_parse_error *err) {
    memset(err, 0, sizeof *err);
    srv_parsed *p = calloc(1, sizeof *p);
    srv_arena *arena = calloc(1, sizeof *arena);
    pctx c = {.p = p, .opt = opt, .err = err};
    if (!p || !arena) {
        free(p);
        free(arena);
        pfail_oom(&c);
        return NULL;
    }
    p->api = api;
    p->arena = arena;
    int rc = -1;
    json_t *root = NULL;
    if (len == 0) {
        pfail(&c, "", "the request body is empty (expected a JSON object)");
        goto out;
    }
    json_error_t je;
    /* duplicate keys are refused: which one a client meant is anybody's guess */
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        pfail(&c, "", "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
        goto out;
    }
    if (!json_is_object(root)) {
        pfail(&c, "", "the request body must be a JSON object, got %s", type_name(root));
        goto out;
    }
    rc = api == SRV_API_OPENAI_CHAT ? parse_openai_chat(&c, root)
                                    : parse_ollama(&c, root, api == SRV_API_OLLAMA_CHAT);
    if (rc == 0) rc = finish(&c);
    if (rc == 0 && p->model) {
        /* the model name lives in root; keep a copy past json_decref */
        if (!(p->model = srv_arena_strdup(arena, p->model, strlen(p->model)))) rc = pfail_oom(&c);
    }
out:
    json_decref(root);
    free(c.msgs);
    free(c.images);
    free(c.sources);
    if (rc != 0) {
        srv_parsed_free(p);
        return NULL;
    }
    return p;
}

void srv_parsed_free(srv_parsed *p) {
    if (!p) return;
    if (p->arena) {
        arena_free(p->arena);
        free(p->arena);
    }
    free(p);
}
