/* Added tokens (tokenizer.json "added_tokens", then what tokenizer_config.json adds the way
 * transformers does), the special ids, BOS/EOS post-processing and the chat template. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_load.h"

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
    if (id > TL_MAX_TOKEN_ID) {
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
        uint32_t off = tl_pool_add(tok, content, len);
        if (off == UINT32_MAX) goto oom;
        old->content = tok->pool + off;
        old->content_len = len;
        old->id = id;
        if (tl_ensure_ids(tok, id + 1) != 0) goto oom;
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
    if (tl_get_bool_in(L, file, obj, "special", where, &f->special)) return -1;
    f->normalized = !f->special;
    if (tl_get_bool_in(L, file, obj, "single_word", where, &f->single_word) ||
        tl_get_bool_in(L, file, obj, "lstrip", where, &f->lstrip) ||
        tl_get_bool_in(L, file, obj, "rstrip", where, &f->rstrip) ||
        tl_get_bool_in(L, file, obj, "normalized", where, &f->normalized))
        return -1;
    return 0;
}

int tl_load_added_tokens(loader *L, const json_t *root) {
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
        const char *content = tl_need_string(L, a, "content", where, &len);
        if (!content) return -1;
        const json_t *idv = json_object_get(a, "id");
        if (!idv || !json_is_integer(idv) || json_integer_value(idv) < 0 ||
            json_integer_value(idv) > TL_MAX_TOKEN_ID) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.id must be an id from 0 to %d",
                            L->what, where, TL_MAX_TOKEN_ID);
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
        if (errno || *end || end == key || id < 0 || id > TL_MAX_TOKEN_ID) {
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
int tl_load_config_tokens(loader *L, const json_t *cfg) {
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
int tl_finish_added(loader *L) {
    tokenizer *tok = L->tok;
    if (tok_strmap_init(&tok->added_by_content, tok->n_added) != 0) goto oom;
    for (size_t i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        tl_set_piece(tok, a->id, (uint32_t)(a->content - tok->pool), a->content_len,
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

/* TemplateProcessing's "single": special tokens around one Sequence "A". */
static int load_post_processor(loader *L, const json_t *root) {
    tokenizer *tok = L->tok;
    const json_t *pp = json_object_get(root, "post_processor");
    if (!pp || json_is_null(pp)) return 0;
    if (!tl_type_is(pp, "TemplateProcessing")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: post_processor \"%s\" is not supported (only TemplateProcessing)",
                        L->what, tl_type_of(pp));
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
int tl_load_specials(loader *L, const json_t *root, const json_t *cfg) {
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
        if (tl_get_bool_in(L, L->config_what, cfg, "add_bos_token", NULL, &add_bos) ||
            tl_get_bool_in(L, L->config_what, cfg, "add_eos_token", NULL, &add_eos))
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

int tl_load_config_misc(loader *L, const json_t *cfg) {
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
    if (tl_get_bool_in(L, L->config_what, cfg, "legacy", NULL, &tok->legacy)) return -1;
    const char *tmpl;
    if (tokenizer_template_value(json_object_get(cfg, "chat_template"), &tmpl) != 0) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: chat_template must be a string or a list",
                        L->config_what);
        return -1;
    }
    if (tmpl && !(tok->chat_template = strdup(tmpl)))
        return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    return 0;
}

