/* Loading a tokenizer: tokenizer.json (BPE model, added tokens, normalizer, pre-tokenizer,
 * decoder, post-processor) and tokenizer_config.json, checked field by field into the immutable
 * tables of tokenizer_internal.h. Encoding and decoding live in their own files. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/json.h"
#include "text/tokenizer_internal.h"

#define TOKENIZER_JSON_MAX (256u << 20)
#define CONFIG_JSON_MAX (16u << 20)
#define CHAT_TEMPLATE_MAX (1u << 20)
/* Ids beyond this are refused: real vocabularies are dense and below a few hundred thousand,
 * and per-id tables are allocated up to the largest id. */
#define MAX_TOKEN_ID ((1 << 24) - 1)

/* What the loader carries around: the tokenizer being built and the names for errors. */
typedef struct loader {
    tokenizer *tok;
    const char *what;        /* tokenizer.json's name */
    const char *config_what; /* tokenizer_config.json's name */
    llava_error *err;
} loader;

/* ---------------------------------------------------------------------------------------- */
/* Pool and per-id tables                                                                     */

/* Copies s into the pool; returns its offset, or UINT32_MAX when out of memory/limit. The pool
 * is sized before any map points into it (see reserve_pool), so it never moves afterwards. */
static uint32_t pool_add(tokenizer *tok, const char *s, size_t len) {
    if (tok->pool_len + len + 1 > tok->pool_cap) return UINT32_MAX;
    uint32_t off = (uint32_t)tok->pool_len;
    memcpy(tok->pool + off, s, len);
    tok->pool[off + len] = '\0';
    tok->pool_len += len + 1;
    return off;
}

static int ensure_ids(tokenizer *tok, int32_t n) {
    if (n <= tok->n_ids) return 0;
    uint32_t *off = realloc(tok->piece_off, (size_t)n * sizeof *off);
    if (!off) return -1;
    tok->piece_off = off;
    uint32_t *len = realloc(tok->piece_len, (size_t)n * sizeof *len);
    if (!len) return -1;
    tok->piece_len = len;
    uint8_t *flags = realloc(tok->id_flags, (size_t)n);
    if (!flags) return -1;
    tok->id_flags = flags;
    uint8_t *byte = realloc(tok->id_byte, (size_t)n);
    if (!byte) return -1;
    tok->id_byte = byte;
    for (int32_t i = tok->n_ids; i < n; i++) {
        off[i] = 0;
        len[i] = 0;
        flags[i] = 0;
        byte[i] = 0;
    }
    tok->n_ids = n;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* ByteFallback's test: exactly "<0x" + two hex digits + ">". */
static int byte_piece_value(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

/* Gives id the piece at pool offset off. */
static void set_piece(tokenizer *tok, int32_t id, uint32_t off, size_t len, uint8_t flags) {
    tok->piece_off[id] = off;
    tok->piece_len[id] = (uint32_t)len;
    int b = byte_piece_value(tok->pool + off, len);
    tok->id_flags[id] = (uint8_t)(flags | TOK_ID_PRESENT | (b >= 0 ? TOK_ID_BYTE : 0));
    tok->id_byte[id] = (uint8_t)(b >= 0 ? b : 0);
}

/* ---------------------------------------------------------------------------------------- */
/* JSON helpers                                                                               */

/* A string member that must be present. */
static const char *need_string(loader *L, const json_t *obj, const char *key, const char *where,
                               size_t *len) {
    const json_t *v = json_object_get(obj, key);
    if (!v || !json_is_string(v)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.%s must be a string", L->what, where,
                        key);
        return NULL;
    }
    if (len) *len = json_string_length(v);
    return json_string_value(v);
}

/* A string of exactly one character (Metaspace replacement, Strip content). */
static int need_char(loader *L, const json_t *obj, const char *key, const char *where,
                     uint32_t *cp) {
    size_t len;
    const char *s = need_string(L, obj, key, where, &len);
    if (!s) return -1;
    if (len == 0 || tok_utf8_len((unsigned char)s[0]) != len) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.%s must be a single character",
                        L->what, where, key);
        return -1;
    }
    tok_utf8_decode(s, len, cp);
    return 0;
}

/* An optional boolean member; `file` names the file in errors. */
static int get_bool_in(loader *L, const char *file, const json_t *obj, const char *key,
                       const char *where, bool *out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.%s must be true or false", file, where,
                        key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_bool(loader *L, const json_t *obj, const char *key, const char *where, bool *out) {
    return get_bool_in(L, L->what, obj, key, where, out);
}

/* A pattern object of Replace: {"String": s}; {"Regex": r} is not supported. */
static int get_pattern(loader *L, const json_t *obj, const char *where, char **pat, size_t *len) {
    const json_t *p = json_object_get(obj, "pattern");
    const json_t *s = p ? json_object_get(p, "String") : NULL;
    if (p && json_object_get(p, "Regex")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED, "%s: %s: Regex patterns are not supported",
                        L->what, where);
        return -1;
    }
    if (!s || !json_is_string(s)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.pattern must be {\"String\": ...}",
                        L->what, where);
        return -1;
    }
    *len = json_string_length(s);
    *pat = malloc(*len + 1);
    if (!*pat) return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    memcpy(*pat, json_string_value(s), *len + 1);
    return 0;
}

static char *dup_bytes(const char *s, size_t len) {
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static int type_is(const json_t *obj, const char *type) {
    const json_t *t = json_object_get(obj, "type");
    return t && json_is_string(t) && !strcmp(json_string_value(t), type);
}

static const char *type_of(const json_t *obj) {
    const json_t *t = json_object_get(obj, "type");
    return t && json_is_string(t) ? json_string_value(t) : "(no type)";
}

/* ---------------------------------------------------------------------------------------- */
/* The BPE model                                                                              */

static int load_vocab(loader *L, const json_t *model, const json_t *added, size_t extra_bytes) {
    tokenizer *tok = L->tok;
    const json_t *vocab = json_object_get(model, "vocab");
    if (!vocab || !json_is_object(vocab)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: model.vocab must be an object", L->what);
        return -1;
    }
    size_t count = json_object_size(vocab), bytes = extra_bytes, len;
    const char *key;
    json_t *val;
    int64_t max_id = -1;
    json_object_keylen_foreach((json_t *)vocab, key, len, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) > MAX_TOKEN_ID) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: model.vocab[\"%.64s\"] must be an id from 0 to %d", L->what, key,
                            MAX_TOKEN_ID);
            return -1;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
        bytes += len + 1;
    }
    size_t i;
    json_t *a;
    json_array_foreach((json_t *)added, i, a) {
        const json_t *c = json_object_get(a, "content");
        if (c && json_is_string(c)) bytes += json_string_length(c) + 1;
    }
    /* Ids far beyond the number of entries would make the per-id tables huge for nothing. */
    if (max_id >= (int64_t)(count + 65536)) {
        llava_error_set(L->err, LLAVA_ERR_LIMIT,
                        "%s: model.vocab: id %lld is far beyond its %zu entries", L->what,
                        (long long)max_id, count);
        return -1;
    }
    tok->pool_cap = bytes + 64;
    tok->pool = malloc(tok->pool_cap);
    if (!tok->pool || tok_strmap_init(&tok->vocab, count) != 0 ||
        ensure_ids(tok, (int32_t)(max_id + 1)) != 0) {
        llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
        return -1;
    }
    tok->model_vocab_size = (int32_t)count;
    json_object_keylen_foreach((json_t *)vocab, key, len, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (tok->id_flags[id] & TOK_ID_PRESENT) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: model.vocab: id %d is given to both \"%.64s\" and \"%.64s\"",
                            L->what, id, tok->pool + tok->piece_off[id], key);
            return -1;
        }
        uint32_t off = pool_add(tok, key, len);
        if (off == UINT32_MAX || tok_strmap_put(&tok->vocab, tok->pool + off, len, id) != 0) {
            llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
            return -1;
        }
        set_piece(tok, id, off, len, 0);
    }
    return 0;
}

/* One merge as its two parts: ["a", "b"], or "a b" (exactly one space, as Hugging Face splits
 * the legacy form). */
static int merge_parts(loader *L, const json_t *m, size_t rank, const char **a, size_t *alen,
                       const char **b, size_t *blen) {
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *alen = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *blen = json_string_length(json_array_get(m, 1));
        return 0;
    }
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t len = json_string_length(m);
        const char *sp = memchr(s, ' ', len);
        if (sp && !memchr(sp + 1, ' ', len - (size_t)(sp - s) - 1)) {
            *a = s;
            *alen = (size_t)(sp - s);
            *b = sp + 1;
            *blen = len - *alen - 1;
            return 0;
        }
    }
    llava_error_set(L->err, LLAVA_ERR_FORMAT,
                    "%s: model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]", L->what, rank);
    return -1;
}

static int load_merges(loader *L, const json_t *model) {
    tokenizer *tok = L->tok;
    const json_t *merges = json_object_get(model, "merges");
    if (!merges || !json_is_array(merges)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: model.merges must be an array", L->what);
        return -1;
    }
    size_t n = json_array_size(merges), rank = 0;
    if (tok_mergemap_init(&tok->merges, n) != 0) {
        llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
        return -1;
    }
    char small[256];
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(merges, i);
        /* The legacy text form may carry a "#version" line, which is not a merge. */
        if (json_is_string(m) && !strncmp(json_string_value(m), "#version", 8)) continue;
        const char *a, *b;
        size_t alen, blen;
        if (merge_parts(L, m, i, &a, &alen, &b, &blen) != 0) return -1;
        int32_t ia = tok_strmap_get(&tok->vocab, a, alen);
        int32_t ib = tok_strmap_get(&tok->vocab, b, blen);
        if (ia < 0 || ib < 0) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: model.merges[%zu]: \"%.64s\" is not in the vocabulary", L->what,
                            i, ia < 0 ? a : b);
            return -1;
        }
        char *joined = alen + blen <= sizeof small ? small : malloc(alen + blen);
        if (!joined) {
            llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
            return -1;
        }
        memcpy(joined, a, alen);
        memcpy(joined + alen, b, blen);
        int32_t id = tok_strmap_get(&tok->vocab, joined, alen + blen);
        if (joined != small) free(joined);
        if (id < 0) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: model.merges[%zu]: the merged token \"%.64s%.64s\" is not in "
                            "the vocabulary", L->what, i, a, b);
            return -1;
        }
        /* Hugging Face collects the merges into a map in order, so a repeated pair ends with
         * the rank of its last occurrence. */
        const tok_merge *old = tok_mergemap_get(&tok->merges, ia, ib);
        if (old) {
            tok_merge *w = (tok_merge *)old;
            w->rank = (int32_t)rank;
            w->id = id;
        } else if (tok_mergemap_put(&tok->merges, ia, ib, (int32_t)rank, id) != 0) {
            llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
            return -1;
        }
        rank++;
    }
    return 0;
}

static int load_model(loader *L, const json_t *root, size_t extra_bytes) {
    tokenizer *tok = L->tok;
    const json_t *model = json_object_get(root, "model");
    if (!model || !json_is_object(model)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: \"model\" must be an object", L->what);
        return -1;
    }
    const json_t *type = json_object_get(model, "type");
    if (type && !type_is(model, "BPE")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: model.type \"%s\" is not supported (only BPE)", L->what,
                        type_of(model));
        return -1;
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0)) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: model.dropout is not supported (it makes encoding random)", L->what);
        return -1;
    }
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0)) {
            llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED, "%s: model.%s is not supported",
                            L->what, affixes[i]);
            return -1;
        }
    }
    bool fuse = false, fallback = false, ignore = false;
    if (get_bool(L, model, "fuse_unk", "model", &fuse) || get_bool(L, model, "byte_fallback", "model", &fallback) ||
        get_bool(L, model, "ignore_merges", "model", &ignore))
        return -1;
    tok->fuse_unk = fuse;
    tok->byte_fallback = fallback;
    tok->ignore_merges = ignore;
    if (load_vocab(L, model, json_object_get(root, "added_tokens"), extra_bytes) != 0) return -1;
    if (load_merges(L, model) != 0) return -1;
    tok->unk_id = -1;
    const json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: model.unk_token must be a string",
                            L->what);
            return -1;
        }
        tok->unk_id = tok_strmap_get(&tok->vocab, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0) {
            /* Hugging Face fails only when an unknown character needs it; failing at load
             * names the problem earlier and never changes a successful result. */
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: model.unk_token \"%.64s\" is not in the vocabulary", L->what,
                            json_string_value(unk));
            return -1;
        }
    }
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        tok->byte_id[b] = tok_strmap_get(&tok->vocab, piece, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        tok->ascii_id[c] = tok_strmap_get(&tok->vocab, &ch, 1);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Added tokens                                                                               */

/* The id Hugging Face gives the next added token that is not in the vocabulary. */
static int32_t next_added_id(const tokenizer *tok) {
    int32_t max = -1;
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].id > max) max = tok->added[i].id;
    if (max < 0) return tok->model_vocab_size;
    return max >= tok->model_vocab_size || tok->model_vocab_size == 0 ? max + 1
                                                                       : tok->model_vocab_size;
}

static tok_added *find_added(tokenizer *tok, const char *content, size_t len) {
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].content_len == len && !memcmp(tok->added[i].content, content, len))
            return &tok->added[i];
    return NULL;
}

/* Adds (or updates the flags of) an added token the way Hugging Face's add_tokens does, and
 * checks that it lands on `want_id` (-1: anywhere). */
static int add_token(loader *L, const char *where, const char *content, size_t len,
                     const tok_added *flags, int32_t want_id) {
    tokenizer *tok = L->tok;
    if (len == 0) return 0; /* Hugging Face ignores empty added tokens */
    tok_added *old = find_added(tok, content, len);
    int32_t id = old ? old->id : tok_strmap_get(&tok->vocab, content, len);
    if (id < 0) id = next_added_id(tok);
    if (want_id >= 0 && id != want_id) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT,
                        "%s: added token \"%.64s\" is declared with id %d but its id is %d",
                        where, content, want_id, id);
        return -1;
    }
    if (id > MAX_TOKEN_ID) {
        llava_error_set(L->err, LLAVA_ERR_LIMIT, "%s: added token id %d is too large", where, id);
        return -1;
    }
    if (!old) {
        /* A new id may replace an older added token holding the same id (add_tokens inserts by
         * id), which only happens with contradictory files. */
        for (size_t i = 0; i < tok->n_added; i++)
            if (tok->added[i].id == id) {
                llava_error_set(L->err, LLAVA_ERR_FORMAT,
                                "%s: added tokens \"%.64s\" and \"%.64s\" share id %d", where,
                                tok->added[i].content, content, id);
                return -1;
            }
        tok_added *grown = realloc(tok->added, (tok->n_added + 1) * sizeof *grown);
        if (!grown) goto oom;
        tok->added = grown;
        old = &tok->added[tok->n_added++];
        memset(old, 0, sizeof *old);
        uint32_t off = pool_add(tok, content, len);
        if (off == UINT32_MAX) goto oom;
        old->content = tok->pool + off;
        old->content_len = len;
        old->id = id;
        if (ensure_ids(tok, id + 1) != 0) goto oom;
    }
    old->special = flags->special;
    old->lstrip = flags->lstrip;
    old->rstrip = flags->rstrip;
    old->single_word = flags->single_word;
    old->normalized = flags->normalized;
    return 0;
oom:
    llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", where);
    return -1;
}

/* Reads the flags of an added-token object; `special` defaults as given (Hugging Face's default
 * for `normalized` is the opposite of `special`). */
static int read_added_flags(loader *L, const char *file, const json_t *obj, const char *where,
                            tok_added *f, bool special_default) {
    memset(f, 0, sizeof *f);
    f->special = special_default;
    if (get_bool_in(L, file, obj, "special", where, &f->special)) return -1;
    f->normalized = !f->special;
    if (get_bool_in(L, file, obj, "single_word", where, &f->single_word) ||
        get_bool_in(L, file, obj, "lstrip", where, &f->lstrip) ||
        get_bool_in(L, file, obj, "rstrip", where, &f->rstrip) ||
        get_bool_in(L, file, obj, "normalized", where, &f->normalized))
        return -1;
    return 0;
}

static int load_added_tokens(loader *L, const json_t *root) {
    const json_t *added = json_object_get(root, "added_tokens");
    if (!added || json_is_null(added)) return 0;
    if (!json_is_array(added)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: added_tokens must be an array", L->what);
        return -1;
    }
    size_t i;
    json_t *a;
    json_array_foreach((json_t *)added, i, a) {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        size_t len;
        const char *content = need_string(L, a, "content", where, &len);
        if (!content) return -1;
        const json_t *idv = json_object_get(a, "id");
        if (!idv || !json_is_integer(idv) || json_integer_value(idv) < 0 ||
            json_integer_value(idv) > MAX_TOKEN_ID) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.id must be an id from 0 to %d",
                            L->what, where, MAX_TOKEN_ID);
            return -1;
        }
        tok_added f;
        if (read_added_flags(L, L->what, a, where, &f, false) != 0) return -1;
        char at[128];
        snprintf(at, sizeof at, "%s: %s", L->what, where);
        if (add_token(L, at, content, len, &f, (int32_t)json_integer_value(idv)) != 0) return -1;
    }
    return 0;
}

/* A special token of tokenizer_config.json: "<s>" or {"content": "<s>", ...}. Sets *s to NULL
 * when absent; *obj to the object form when given so. */
static int config_token(loader *L, const json_t *cfg, const char *key, const char **s,
                        size_t *len, const json_t **obj) {
    const json_t *v = json_object_get(cfg, key);
    *s = NULL;
    *obj = NULL;
    if (!v || json_is_null(v)) return 0;
    if (json_is_object(v)) {
        *obj = v;
        v = json_object_get(v, "content");
    }
    if (!v || !json_is_string(v)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be a string or a token object",
                        L->config_what, key);
        return -1;
    }
    *len = json_string_length(v);
    *s = json_string_value(v);
    return 0;
}

static int cmp_ids(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* The entries of added_tokens_decoder whose ids tokenizer.json lacks, in id order. */
static int load_config_decoder(loader *L, const json_t *dec) {
    tokenizer *tok = L->tok;
    size_t n = json_object_size(dec), k = 0;
    long long *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)dec, key, val) {
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        if (errno || *end || end == key || id < 0 || id > MAX_TOKEN_ID) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: added_tokens_decoder key \"%.32s\" is not a token id",
                            L->config_what, key);
            free(ids);
            return -1;
        }
        ids[k++] = id;
    }
    qsort(ids, n, sizeof *ids, cmp_ids);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        bool known = false;
        for (size_t j = 0; j < tok->n_added; j++) known |= tok->added[j].id == ids[i];
        if (known) continue;
        char key_s[32], where[64], at[600];
        snprintf(key_s, sizeof key_s, "%lld", ids[i]);
        snprintf(where, sizeof where, "added_tokens_decoder[\"%s\"]", key_s);
        snprintf(at, sizeof at, "%s: %s", L->config_what, where);
        const json_t *obj = json_object_get(dec, key_s);
        const json_t *c = obj ? json_object_get(obj, "content") : NULL;
        if (!c || !json_is_string(c)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s.content must be a string", at);
            rc = -1;
            break;
        }
        tok_added f;
        rc = read_added_flags(L, L->config_what, obj, where, &f, false);
        if (rc == 0)
            rc = add_token(L, at, json_string_value(c), json_string_length(c), &f,
                           (int32_t)ids[i]);
    }
    free(ids);
    return rc;
}

/* transformers adds the tokens of added_tokens_decoder whose ids tokenizer.json lacks, then
 * the special tokens (bos, eos, unk, pad, additional_special_tokens) not yet added. */
static int load_config_tokens(loader *L, const json_t *cfg) {
    tokenizer *tok = L->tok;
    const json_t *dec = json_object_get(cfg, "added_tokens_decoder");
    if (dec && json_is_object(dec)) {
        if (load_config_decoder(L, dec) != 0) return -1;
    } else if (dec && !json_is_null(dec)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: added_tokens_decoder must be an object",
                        L->config_what);
        return -1;
    }
    static const char *const specials[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    for (int i = 0; i < 4; i++) {
        size_t len = 0;
        const char *s;
        const json_t *obj;
        if (config_token(L, cfg, specials[i], &s, &len, &obj) != 0) return -1;
        if (!s || find_added(tok, s, len)) continue;
        tok_added f = {.special = true};
        if (obj && read_added_flags(L, L->config_what, obj, specials[i], &f, true) != 0)
            return -1;
        char at[600];
        snprintf(at, sizeof at, "%s: %s", L->config_what, specials[i]);
        if (add_token(L, at, s, len, &f, -1) != 0) return -1;
    }
    const json_t *extra = json_object_get(cfg, "additional_special_tokens");
    if (extra && json_is_array(extra)) {
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)extra, i, e) {
            const json_t *c = json_is_object(e) ? json_object_get(e, "content") : e;
            if (!c || !json_is_string(c)) {
                llava_error_set(L->err, LLAVA_ERR_FORMAT,
                                "%s: additional_special_tokens[%zu] must be a string",
                                L->config_what, i);
                return -1;
            }
            if (find_added(tok, json_string_value(c), json_string_length(c))) continue;
            tok_added f = {.special = true};
            if (json_is_object(e) &&
                read_added_flags(L, L->config_what, e, "additional_special_tokens", &f, true) != 0)
                return -1;
            if (add_token(L, L->config_what, json_string_value(c), json_string_length(c), &f,
                          -1) != 0)
                return -1;
        }
    }
    return 0;
}

/* Gives every added token its piece, and builds the content -> id map. */
static int finish_added(loader *L) {
    tokenizer *tok = L->tok;
    if (tok_strmap_init(&tok->added_by_content, tok->n_added) != 0) goto oom;
    for (size_t i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        set_piece(tok, a->id, (uint32_t)(a->content - tok->pool), a->content_len,
                  (uint8_t)(TOK_ID_ADDED | (a->special ? TOK_ID_SPECIAL : 0)));
        if (tok_strmap_put(&tok->added_by_content, a->content, a->content_len, a->id) != 0)
            goto oom;
        /* The pattern of a normalized token is its content through the normalizer. */
        tokenizer_text t = {0};
        if (a->normalized && tok->n_norm) {
            if (tok_normalize(tok, a->content, a->content_len, &t) != 0) goto oom;
        } else if (tok_text_append(&t, a->content, a->content_len) != 0) {
            goto oom;
        }
        a->pattern = t.data;
        a->pattern_len = t.len;
    }
    if (tok_build_matchers(tok) != 0) goto oom;
    return 0;
oom:
    llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Normalizer, pre-tokenizer, decoder, post-processor                                         */

static int add_norm(loader *L, const json_t *n, const char *where) {
    tokenizer *tok = L->tok;
    if (type_is(n, "Sequence")) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!list || !json_is_array(list)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.normalizers must be an array",
                            L->what, where);
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)list, i, e) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
            if (add_norm(L, e, sub) != 0) return -1;
        }
        return 0;
    }
    tok_norm_step step = {0};
    if (type_is(n, "Prepend")) {
        step.kind = TOK_NORM_PREPEND;
        const char *s = need_string(L, n, "prepend", where, &step.content_len);
        if (!s) return -1;
        step.content = dup_bytes(s, step.content_len);
    } else if (type_is(n, "Replace")) {
        step.kind = TOK_NORM_REPLACE;
        if (get_pattern(L, n, where, &step.pattern, &step.pattern_len) != 0) return -1;
        const char *s = need_string(L, n, "content", where, &step.content_len);
        if (!s) return free(step.pattern), -1;
        step.content = dup_bytes(s, step.content_len);
    } else {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: %s: normalizer \"%s\" is not supported (Sequence, Prepend, Replace)",
                        L->what, where, type_of(n));
        return -1;
    }
    tok_norm_step *grown = realloc(tok->norm, (tok->n_norm + 1) * sizeof *grown);
    if (!step.content || !grown) {
        free(step.pattern);
        free(step.content);
        if (grown) tok->norm = grown;
        return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    }
    tok->norm = grown;
    tok->norm[tok->n_norm++] = step;
    return 0;
}

static int read_prepend_scheme(loader *L, const json_t *obj, const char *where, tok_prepend *out) {
    *out = TOK_PREPEND_ALWAYS;
    const json_t *p = json_object_get(obj, "prepend_scheme");
    if (p && !json_is_null(p)) {
        const char *s = json_is_string(p) ? json_string_value(p) : "";
        if (!strcmp(s, "always")) *out = TOK_PREPEND_ALWAYS;
        else if (!strcmp(s, "first")) *out = TOK_PREPEND_FIRST;
        else if (!strcmp(s, "never")) *out = TOK_PREPEND_NEVER;
        else {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: %s.prepend_scheme must be \"always\", \"first\" or \"never\"",
                            L->what, where);
            return -1;
        }
    }
    bool add_prefix = true;
    const json_t *ap = json_object_get(obj, "add_prefix_space");
    if (get_bool(L, obj, "add_prefix_space", where, &add_prefix) != 0) return -1;
    if (ap && !json_is_null(ap) && !add_prefix) {
        if (*out != TOK_PREPEND_NEVER && p && !json_is_null(p)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: %s: add_prefix_space does not match prepend_scheme", L->what,
                            where);
            return -1;
        }
        *out = TOK_PREPEND_NEVER;
    }
    return 0;
}

static int load_pre_tokenizer(loader *L, const json_t *root) {
    tokenizer *tok = L->tok;
    const json_t *p = json_object_get(root, "pre_tokenizer");
    if (!p || json_is_null(p)) return 0;
    const char *where = "pre_tokenizer";
    if (type_is(p, "Sequence")) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (!list || !json_is_array(list) || json_array_size(list) != 1) {
            llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                            "%s: pre_tokenizer: only a Sequence of one Metaspace is supported",
                            L->what);
            return -1;
        }
        p = json_array_get(list, 0);
        where = "pre_tokenizer.pretokenizers[0]";
    }
    if (!type_is(p, "Metaspace")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: %s \"%s\" is not supported (only Metaspace)", L->what, where,
                        type_of(p));
        return -1;
    }
    tok->has_metaspace_pre = true;
    if (need_char(L, p, "replacement", where, &tok->pre_replacement) != 0) return -1;
    const char *rep = json_string_value(json_object_get(p, "replacement"));
    tok->pre_rep_len = strlen(rep);
    memcpy(tok->pre_rep_utf8, rep, tok->pre_rep_len + 1);
    if (read_prepend_scheme(L, p, where, &tok->pre_prepend) != 0) return -1;
    tok->pre_split = true;
    return get_bool(L, p, "split", where, &tok->pre_split);
}

static int add_dec(loader *L, const json_t *d, const char *where) {
    tokenizer *tok = L->tok;
    if (type_is(d, "Sequence")) {
        const json_t *list = json_object_get(d, "decoders");
        if (!list || !json_is_array(list)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.decoders must be an array",
                            L->what, where);
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)list, i, e) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", where, i);
            if (add_dec(L, e, sub) != 0) return -1;
        }
        return 0;
    }
    tok_dec_step step = {0};
    bool fused = false;
    for (size_t i = 0; i < tok->n_dec; i++) fused |= tok->dec[i].kind == TOK_DEC_FUSE;
    if (type_is(d, "Replace")) {
        step.kind = TOK_DEC_REPLACE;
        if (get_pattern(L, d, where, &step.pattern, &step.pattern_len) != 0) return -1;
        const char *s = need_string(L, d, "content", where, &step.content_len);
        if (!s || !(step.content = dup_bytes(s, step.content_len))) {
            free(step.pattern);
            if (s) llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory");
            return -1;
        }
    } else if (type_is(d, "ByteFallback")) {
        /* After Fuse the whole text is one token; a byte run there is not a real layout. */
        if (fused) {
            llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                            "%s: %s: ByteFallback after Fuse is not supported", L->what, where);
            return -1;
        }
        step.kind = TOK_DEC_BYTE_FALLBACK;
    } else if (type_is(d, "Fuse")) {
        step.kind = TOK_DEC_FUSE;
    } else if (type_is(d, "Strip")) {
        step.kind = TOK_DEC_STRIP;
        int64_t start = 0, stop = 0;
        if (need_char(L, d, "content", where, &step.ch) != 0 ||
            llava_json_get_int(d, "start", &start, L->what, L->err) != LLAVA_OK ||
            llava_json_get_int(d, "stop", &stop, L->what, L->err) != LLAVA_OK)
            return -1;
        if (start < 0 || stop < 0 || start > 1000000 || stop > 1000000) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s: start and stop must be small "
                            "non-negative counts", L->what, where);
            return -1;
        }
        step.start = (size_t)start;
        step.stop = (size_t)stop;
    } else if (type_is(d, "Metaspace")) {
        step.kind = TOK_DEC_METASPACE;
        if (need_char(L, d, "replacement", where, &step.ch) != 0 ||
            read_prepend_scheme(L, d, where, &step.prepend) != 0)
            return -1;
    } else {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: %s: decoder \"%s\" is not supported (Sequence, Replace, "
                        "ByteFallback, Fuse, Strip, Metaspace)", L->what, where, type_of(d));
        return -1;
    }
    tok_dec_step *grown = realloc(tok->dec, (tok->n_dec + 1) * sizeof *grown);
    if (!grown) {
        free(step.pattern);
        free(step.content);
        return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    }
    tok->dec = grown;
    tok->dec[tok->n_dec++] = step;
    return 0;
}

/* TemplateProcessing's "single": special tokens around one Sequence "A". */
static int load_post_processor(loader *L, const json_t *root) {
    tokenizer *tok = L->tok;
    const json_t *pp = json_object_get(root, "post_processor");
    if (!pp || json_is_null(pp)) return 0;
    if (!type_is(pp, "TemplateProcessing")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: post_processor \"%s\" is not supported (only TemplateProcessing)",
                        L->what, type_of(pp));
        return -1;
    }
    const json_t *single = json_object_get(pp, "single");
    const json_t *specials = json_object_get(pp, "special_tokens");
    if (!single || !json_is_array(single)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: post_processor.single must be an array",
                        L->what);
        return -1;
    }
    bool seen_seq = false;
    size_t i;
    json_t *item;
    json_array_foreach((json_t *)single, i, item) {
        if (json_object_get(item, "Sequence")) {
            if (seen_seq) {
                llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                                "%s: post_processor.single[%zu]: a second sequence", L->what, i);
                return -1;
            }
            seen_seq = true;
            continue;
        }
        const json_t *st = json_object_get(item, "SpecialToken");
        const json_t *name = st ? json_object_get(st, "id") : NULL;
        const json_t *entry = name && json_is_string(name) && specials
                                  ? json_object_get(specials, json_string_value(name))
                                  : NULL;
        const json_t *ids = entry ? json_object_get(entry, "ids") : NULL;
        if (!ids || !json_is_array(ids)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: post_processor.single[%zu] names no special token with ids",
                            L->what, i);
            return -1;
        }
        size_t k;
        json_t *idv;
        json_array_foreach((json_t *)ids, k, idv) {
            if (!json_is_integer(idv) || json_integer_value(idv) < 0 ||
                json_integer_value(idv) >= tok->n_ids ||
                !(tok->id_flags[json_integer_value(idv)] & TOK_ID_PRESENT)) {
                llava_error_set(L->err, LLAVA_ERR_FORMAT,
                                "%s: post_processor.special_tokens: id out of the vocabulary",
                                L->what);
                return -1;
            }
            int32_t **arr = seen_seq ? &tok->suffix_ids : &tok->prefix_ids;
            size_t *n = seen_seq ? &tok->n_suffix : &tok->n_prefix;
            int32_t *grown = realloc(*arr, (*n + 1) * sizeof *grown);
            if (!grown) return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
            *arr = grown;
            grown[(*n)++] = (int32_t)json_integer_value(idv);
        }
    }
    if (!seen_seq) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: post_processor.single has no sequence",
                        L->what);
        return -1;
    }
    return 0;
}

/* BOS/EOS: tokenizer_config.json's add_bos_token/add_eos_token rebuild the post-processor as
 * transformers' LlamaTokenizerFast does; without them, tokenizer.json's post_processor rules. */
static int load_specials(loader *L, const json_t *root, const json_t *cfg) {
    tokenizer *tok = L->tok;
    static const char *const keys[] = {"bos_token", "eos_token", "pad_token"};
    int32_t *dst[] = {&tok->bos_id, &tok->eos_id, &tok->pad_id};
    for (int i = 0; i < 3; i++) {
        *dst[i] = -1;
        if (!cfg) continue;
        size_t len = 0;
        const char *s;
        const json_t *obj;
        if (config_token(L, cfg, keys[i], &s, &len, &obj) != 0) return -1;
        if (s) *dst[i] = tokenizer_token_id(tok, s);
    }
    bool has_bos_key = cfg && json_object_get(cfg, "add_bos_token") &&
                       !json_is_null(json_object_get(cfg, "add_bos_token"));
    bool has_eos_key = cfg && json_object_get(cfg, "add_eos_token") &&
                       !json_is_null(json_object_get(cfg, "add_eos_token"));
    if (has_bos_key || has_eos_key) {
        bool add_bos = true, add_eos = false; /* LlamaTokenizerFast's defaults */
        if (get_bool_in(L, L->config_what, cfg, "add_bos_token", "config", &add_bos) ||
            get_bool_in(L, L->config_what, cfg, "add_eos_token", "config", &add_eos))
            return -1;
        if ((add_bos && tok->bos_id < 0) || (add_eos && tok->eos_id < 0)) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: add_%s_token is true but %s_token is "
                            "not set or not a token", L->config_what, add_bos && tok->bos_id < 0 ? "bos" : "eos",
                            add_bos && tok->bos_id < 0 ? "bos" : "eos");
            return -1;
        }
        tok->adds_bos = add_bos;
        tok->adds_eos = add_eos;
        if (add_bos) {
            tok->prefix_ids = malloc(sizeof *tok->prefix_ids);
            if (!tok->prefix_ids) goto oom;
            tok->prefix_ids[0] = tok->bos_id;
            tok->n_prefix = 1;
        }
        if (add_eos) {
            tok->suffix_ids = malloc(sizeof *tok->suffix_ids);
            if (!tok->suffix_ids) goto oom;
            tok->suffix_ids[0] = tok->eos_id;
            tok->n_suffix = 1;
        }
        return 0;
    }
    if (load_post_processor(L, root) != 0) return -1;
    if (tok->bos_id < 0 && tok->n_prefix == 1) tok->bos_id = tok->prefix_ids[0];
    if (tok->eos_id < 0 && tok->n_suffix == 1) tok->eos_id = tok->suffix_ids[0];
    tok->adds_bos = tok->bos_id >= 0 && tok->n_prefix && tok->prefix_ids[0] == tok->bos_id;
    tok->adds_eos = tok->eos_id >= 0 && tok->n_suffix &&
                    tok->suffix_ids[tok->n_suffix - 1] == tok->eos_id;
    return 0;
oom:
    return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
}

static int load_config_misc(loader *L, const json_t *cfg) {
    tokenizer *tok = L->tok;
    const json_t *aps = json_object_get(cfg, "add_prefix_space");
    if (aps && !json_is_null(aps)) {
        /* transformers then rebuilds the tokenizer from tokenizer.model (from_slow). */
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: add_prefix_space is set, which makes transformers rebuild the "
                        "tokenizer from the SentencePiece model; not supported",
                        L->config_what);
        return -1;
    }
    tok->legacy = true;
    if (get_bool_in(L, L->config_what, cfg, "legacy", "config", &tok->legacy)) return -1;
    const json_t *ct = json_object_get(cfg, "chat_template");
    const char *tmpl = NULL;
    if (ct && json_is_string(ct)) {
        tmpl = json_string_value(ct);
    } else if (ct && json_is_array(ct)) {
        /* A list of named templates: the one named "default", else the first. */
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const json_t *name = json_object_get(e, "name");
            const json_t *t = json_object_get(e, "template");
            if (!t || !json_is_string(t)) continue;
            if (!tmpl) tmpl = json_string_value(t);
            if (name && json_is_string(name) && !strcmp(json_string_value(name), "default"))
                tmpl = json_string_value(t);
        }
    } else if (ct && !json_is_null(ct)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: chat_template must be a string or a list",
                        L->config_what);
        return -1;
    }
    if (tmpl && !(tok->chat_template = strdup(tmpl)))
        return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Word cuts (see tokenizer_internal.h)                                                       */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int prepare_word_cuts(tokenizer *tok) {
    tok->metaspace_cp = 0x2581;
    tok->can_cut_words = false;
    if (tok->ignore_merges || tok_strmap_get(&tok->vocab, "\xE2\x96\x81", 3) < 0) return 0;
    /* A merge whose part is a byte-fallback or unknown piece could join text across a cut
     * without its characters showing in any piece. */
    for (size_t i = 0; i < tok->merges.cap; i++) {
        const tok_merge *m = &tok->merges.slots[i];
        if (m->key == UINT64_MAX) continue;
        int32_t parts[2] = {(int32_t)(m->key >> 32), (int32_t)(uint32_t)m->key};
        for (int k = 0; k < 2; k++)
            if ((tok->id_flags[parts[k]] & TOK_ID_BYTE) || parts[k] == tok->unk_id) return 0;
    }
    size_t cap = 0;
    for (int32_t id = 0; id < tok->n_ids; id++) {
        if (!(tok->id_flags[id] & TOK_ID_PRESENT) || (tok->id_flags[id] & TOK_ID_ADDED))
            continue;
        const char *s = tok->pool + tok->piece_off[id];
        size_t len = tok->piece_len[id], i = 0;
        uint32_t prev = 0x2581;
        while (i < len) {
            uint32_t cp;
            i += tok_utf8_decode(s + i, len - i, &cp);
            if (cp == 0x2581 && prev != 0x2581) {
                if (tok->n_cut_blockers == cap) {
                    cap = cap ? cap * 2 : 16;
                    uint32_t *g = realloc(tok->cut_blockers, cap * sizeof *g);
                    if (!g) return -1;
                    tok->cut_blockers = g;
                }
                tok->cut_blockers[tok->n_cut_blockers++] = prev;
            }
            prev = cp;
        }
    }
    qsort(tok->cut_blockers, tok->n_cut_blockers, sizeof *tok->cut_blockers, cmp_u32);
    tok->can_cut_words = true;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Entry points                                                                               */

static llava_status build(loader *L, const json_t *root, const json_t *cfg) {
    tokenizer *tok = L->tok;
    /* Pool room for contents that config files may add beyond tokenizer.json. */
    size_t extra = 0;
    if (cfg) {
        const char *k;
        json_t *v;
        const json_t *dec = json_object_get(cfg, "added_tokens_decoder");
        if (dec && json_is_object(dec)) json_object_foreach((json_t *)dec, k, v) {
                const json_t *c = json_object_get(v, "content");
                if (c && json_is_string(c)) extra += json_string_length(c) + 1;
            }
        static const char *const sp[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
        for (int i = 0; i < 4; i++) {
            const json_t *v2 = json_object_get(cfg, sp[i]);
            if (v2 && json_is_object(v2)) v2 = json_object_get(v2, "content");
            if (v2 && json_is_string(v2)) extra += json_string_length(v2) + 1;
        }
        const json_t *ex = json_object_get(cfg, "additional_special_tokens");
        size_t i;
        json_t *e;
        if (ex && json_is_array(ex)) json_array_foreach((json_t *)ex, i, e) {
                const json_t *c = json_is_object(e) ? json_object_get(e, "content") : e;
                if (c && json_is_string(c)) extra += json_string_length(c) + 1;
            }
    }
    if (load_model(L, root, extra) != 0 || load_added_tokens(L, root) != 0) goto fail;
    if (cfg && load_config_tokens(L, cfg) != 0) goto fail;
    const json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm) && add_norm(L, norm, "normalizer") != 0) goto fail;
    if (load_pre_tokenizer(L, root) != 0) goto fail;
    const json_t *dec = json_object_get(root, "decoder");
    if (dec && !json_is_null(dec)) {
        tok->has_decoder = true;
        if (add_dec(L, dec, "decoder") != 0) goto fail;
    }
    if (finish_added(L) != 0) goto fail;
    if (load_specials(L, root, cfg) != 0) goto fail;
    if (cfg && load_config_misc(L, cfg) != 0) goto fail;
    if (prepare_word_cuts(tok) != 0) {
        llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    return LLAVA_OK;
fail:
    return L->err ? L->err->code : LLAVA_ERR_FORMAT;
}

llava_status tokenizer_load_buffers(const char *tokenizer_json, size_t tokenizer_json_len,
                                    const char *config_json, size_t config_json_len,
                                    const char *what, tokenizer **out, llava_error *err) {
    *out = NULL;
    char config_what[512];
    snprintf(config_what, sizeof config_what, "%s", what ? what : "tokenizer.json");
    char *slash = strrchr(config_what, '/');
    snprintf(slash ? slash + 1 : config_what,
             sizeof config_what - (size_t)(slash ? slash + 1 - config_what : 0),
             "tokenizer_config.json");
    llava_error local;
    if (!err) err = &local;
    llava_error_clear(err);
    loader L = {NULL, what ? what : "tokenizer.json", config_what, err};
    json_t *root = llava_json_load_buffer(tokenizer_json, tokenizer_json_len, L.what, err);
    if (!root) return err->code;
    if (!json_is_object(root)) {
        json_decref(root);
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object",
                               L.what);
    }
    json_t *cfg = NULL;
    if (config_json) {
        /* Integers are read as reals: tokenizer_config.json files carry model_max_length
         * values such as 1e30 written as integers, which jansson otherwise rejects, and no
         * integer of this file is needed. */
        json_error_t je;
        cfg = json_loadb(config_json, config_json_len,
                         JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
        if (!cfg)
            llava_error_set(err, LLAVA_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s",
                            config_what, je.line, je.column, je.text);
        if (!cfg || !json_is_object(cfg)) {
            if (cfg) llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object", config_what);
            json_decref(root);
            json_decref(cfg);
            return err->code;
        }
    }
    L.tok = calloc(1, sizeof *L.tok);
    llava_status st = L.tok ? build(&L, root, cfg)
                            : llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    json_decref(root);
    json_decref(cfg);
    if (st != LLAVA_OK) {
        tokenizer_free(L.tok);
        return st;
    }
    *out = L.tok;
    return LLAVA_OK;
}

/* A chat template from chat_template.jinja, or from chat_template.json's "chat_template". */
static llava_status read_template_files(const char *dir, tokenizer *tok, llava_error *err) {
    char path[4096];
    char *buf;
    size_t len;
    if (llava_path_join(path, sizeof path, dir, "chat_template.jinja") == 0 &&
        llava_file_exists(path)) {
        if (llava_read_file(path, CHAT_TEMPLATE_MAX, &buf, &len, err) != LLAVA_OK) return err->code;
        tok->chat_template = buf;
        return LLAVA_OK;
    }
    if (llava_path_join(path, sizeof path, dir, "chat_template.json") == 0 &&
        llava_file_exists(path)) {
        json_t *j = llava_json_load_file(path, CHAT_TEMPLATE_MAX, true, err);
        if (!j) return err->code;
        const json_t *t = json_object_get(j, "chat_template");
        if (t && json_is_string(t)) tok->chat_template = strdup(json_string_value(t));
        json_decref(j);
        if (t && !json_is_string(t))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: chat_template must be a string",
                                   path);
        if (t && !tok->chat_template)
            return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    }
    return LLAVA_OK;
}

llava_status tokenizer_load(const char *path, tokenizer **out, llava_error *err) {
    *out = NULL;
    llava_error local;
    if (!err) err = &local;
    char dir[4096], file[4096], cfg_path[4096];
    size_t plen = strlen(path);
    if (plen >= sizeof dir) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "path too long");
    if (llava_file_exists(path)) { /* the tokenizer.json file itself */
        memcpy(file, path, plen + 1);
        memcpy(dir, path, plen + 1);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else memcpy(dir, ".", 2);
    } else {
        memcpy(dir, path, plen + 1);
        if (llava_path_join(file, sizeof file, dir, "tokenizer.json") != 0)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "path too long");
        if (!llava_file_exists(file))
            return llava_error_set(err, LLAVA_ERR_IO, "%s: no tokenizer.json there (or not a "
                                   "folder)", path);
    }
    char *json = NULL, *cfg = NULL;
    size_t json_len = 0, cfg_len = 0;
    if (llava_read_file(file, TOKENIZER_JSON_MAX, &json, &json_len, err) != LLAVA_OK)
        return err->code;
    if (llava_path_join(cfg_path, sizeof cfg_path, dir, "tokenizer_config.json") == 0 &&
        llava_file_exists(cfg_path) &&
        llava_read_file(cfg_path, CONFIG_JSON_MAX, &cfg, &cfg_len, err) != LLAVA_OK) {
        free(json);
        return err->code;
    }
    llava_status st = tokenizer_load_buffers(json, json_len, cfg, cfg_len, file, out, err);
    free(json);
    free(cfg);
    if (st == LLAVA_OK && !(*out)->chat_template &&
        read_template_files(dir, *out, err) != LLAVA_OK) {
        tokenizer_free(*out);
        *out = NULL;
        return err->code;
    }
    return st;
}

void tokenizer_free(tokenizer *tok) {
    if (!tok) return;
    free(tok->pool);
    free(tok->piece_off);
    free(tok->piece_len);
    free(tok->id_flags);
    free(tok->id_byte);
    tok_strmap_free(&tok->vocab);
    tok_strmap_free(&tok->added_by_content);
    tok_mergemap_free(&tok->merges);
    free(tok->cut_blockers);
    for (size_t i = 0; i < tok->n_added; i++) free(tok->added[i].pattern);
    free(tok->added);
    free(tok->match_raw.order);
    free(tok->match_norm.order);
    for (size_t i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].pattern);
        free(tok->norm[i].content);
    }
    free(tok->norm);
    for (size_t i = 0; i < tok->n_dec; i++) {
        free(tok->dec[i].pattern);
        free(tok->dec[i].content);
    }
    free(tok->dec);
    free(tok->prefix_ids);
    free(tok->suffix_ids);
    free(tok->chat_template);
    free(tok);
}

/* ---------------------------------------------------------------------------------------- */
/* Accessors                                                                                  */

int32_t tokenizer_vocab_size(const tokenizer *tok) { return tok->n_ids; }

int32_t tokenizer_token_id(const tokenizer *tok, const char *text) {
    size_t len = strlen(text);
    int32_t id = tok_strmap_get(&tok->added_by_content, text, len);
    return id >= 0 ? id : tok_strmap_get(&tok->vocab, text, len);
}

const char *tokenizer_token_text(const tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & TOK_ID_PRESENT)) return NULL;
    return tok->pool + tok->piece_off[id];
}

int tokenizer_is_special(const tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && (tok->id_flags[id] & TOK_ID_SPECIAL) ? 1 : 0;
}

int32_t tokenizer_bos_id(const tokenizer *tok) { return tok->bos_id; }
int32_t tokenizer_eos_id(const tokenizer *tok) { return tok->eos_id; }
int32_t tokenizer_unk_id(const tokenizer *tok) { return tok->unk_id; }
int32_t tokenizer_pad_id(const tokenizer *tok) { return tok->pad_id; }
bool tokenizer_adds_bos(const tokenizer *tok) { return tok->adds_bos; }
bool tokenizer_adds_eos(const tokenizer *tok) { return tok->adds_eos; }
const char *tokenizer_chat_template(const tokenizer *tok) { return tok->chat_template; }
