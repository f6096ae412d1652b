/* Loading a tokenizer (tokenizer.json + tokenizer_config.json) and its accessors. The parts of
 * the files are read by tokenizer_model.c, tokenizer_added.c and tokenizer_pipeline.c; this file
 * orders them, and splits tokenizer.json so that its two huge members skip jansson. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/json.h"
#include "text/tokenizer_json.h"
#include "text/tokenizer_load.h"

#define TOKENIZER_JSON_MAX (256u << 20)
#define CONFIG_JSON_MAX (16u << 20)
#define CHAT_TEMPLATE_MAX (1u << 20)

/* A byte span of the raw text. */
typedef struct span {
    size_t start, end; /* end == 0: none */
} span;

/* Walks the members of model (at c) and reads model.vocab and model.merges in place with the
 * strict scanner; other members are skipped by their brackets (jansson reads them later). */
static int read_model_members(loader *L, tj_cursor *c, span *vocab, span *merges) {
    tokenizer_text key = {0};
    span deferred = {0, 0};
    int rc = -1;
    if (tj_expect(c, '{')) goto done;
    if (tj_peek(c) == '}') {
        c->pos++;
        rc = 0;
        goto done;
    }
    for (;;) {
        if (tj_string(c, &key) || tj_expect(c, ':')) goto done;
        tj_skip_ws(c);
        size_t vs = c->pos;
        bool is_vocab = key.len == 5 && !memcmp(key.data, "vocab", 5) && !vocab->end;
        bool is_merges = key.len == 6 && !memcmp(key.data, "merges", 6) && !merges->end;
        if (is_vocab) {
            if (tl_load_vocab(L, c)) goto done;
            *vocab = (span){vs, c->pos};
        } else if (is_merges && L->tok->pool) {
            if (tl_load_merges(L, c)) goto done;
            *merges = (span){vs, c->pos};
        } else {
            if (tj_skip_value_fast(c)) goto done;
            if (is_merges) deferred = *merges = (span){vs, c->pos};
        }
        char ch = tj_peek(c);
        c->pos++;
        if (ch == '}') break;
        if (ch != ',') {
            c->pos--;
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: invalid JSON at byte offset %zu: expected ',' or '}'", L->what,
                            c->pos);
            goto done;
        }
    }
    if (deferred.end) { /* merges came before vocab */
        tj_cursor m = {c->s, deferred.end, deferred.start, L->what, L->err};
        if (tl_load_merges(L, &m)) goto done;
    }
    rc = 0;
done:
    tokenizer_text_free(&key);
    return rc;
}

/* Reads model.vocab and model.merges straight from the raw text (they are most of the file and
 * would cost a jansson tree most of 100 ms), and returns a copy of the text with both values
 * blanked ({} and []) for jansson. Other members are only skipped by brackets and quotes here:
 * jansson checks them strictly. Newlines of the blanked values are kept so that jansson's line
 * numbers stay true. */
static char *read_big_members(loader *L, const char *text, size_t len, size_t *out_len) {
    tj_cursor c = {text, len, 0, L->what, L->err};
    tokenizer_text key = {0};
    span sp[2] = {{0, 0}, {0, 0}}; /* vocab, merges */
    bool seen_model = false;
    char *copy = NULL;
    if (tj_expect(&c, '{')) goto done;
    if (tj_peek(&c) == '}') {
        c.pos++;
    } else {
        for (;;) {
            if (tj_string(&c, &key) || tj_expect(&c, ':')) goto done;
            if (!seen_model && key.len == 5 && !memcmp(key.data, "model", 5) &&
                tj_peek(&c) == '{') {
                seen_model = true;
                if (read_model_members(L, &c, &sp[0], &sp[1])) goto done;
            } else if (tj_skip_value_fast(&c)) {
                goto done;
            }
            char ch = tj_peek(&c);
            c.pos++;
            if (ch == '}') break;
            if (ch != ',') {
                c.pos--;
                llava_error_set(L->err, LLAVA_ERR_FORMAT,
                                "%s: invalid JSON at byte offset %zu: expected ',' or '}'",
                                L->what, c.pos);
                goto done;
            }
        }
    }
    if (tj_peek(&c) != 0) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: invalid JSON at byte offset %zu: text "
                        "after the top-level object", L->what, c.pos);
        goto done;
    }
    if (!(copy = malloc(len + 1))) {
        tl_oom(L);
        goto done;
    }
    /* Copy, blanking the spans in text order. */
    int order[2] = {0, 1};
    size_t w = 0, r = 0;
    if (sp[1].end && (!sp[0].end || sp[1].start < sp[0].start)) order[0] = 1, order[1] = 0;
    for (int k = 0; k < 2; k++) {
        const span *x = &sp[order[k]];
        if (!x->end) continue;
        memcpy(copy + w, text + r, x->start - r);
        w += x->start - r;
        copy[w++] = order[k] == 0 ? '{' : '[';
        copy[w++] = order[k] == 0 ? '}' : ']';
        for (const char *p = text + x->start; (p = memchr(p, '\n', (size_t)(text + x->end - p)));
             p++)
            copy[w++] = '\n';
        r = x->end;
    }
    memcpy(copy + w, text + r, len - r);
    *out_len = w + len - r;
done:
    tokenizer_text_free(&key);
    return copy;
}

static llava_status build(loader *L, const json_t *root, const json_t *cfg) {
    tokenizer *tok = L->tok;
    /* Truncation would drop ids and fixed padding add some: refused rather than ignored. */
    static const char *const shaping[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(root, shaping[i]);
        if (v && !json_is_null(v)) {
            llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED, "%s: \"%s\" is set; not supported",
                            L->what, shaping[i]);
            goto fail;
        }
    }
    const json_t *model = json_object_get(root, "model");
    if (!model || !json_is_object(model)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: \"model\" must be an object", L->what);
        goto fail;
    }
    if (tl_load_model(L, model) != 0 || tl_load_added_tokens(L, root) != 0 ||
        (cfg && tl_load_config_tokens(L, cfg) != 0) || tl_load_normalizer(L, root) != 0 ||
        tl_load_pre_tokenizer(L, root) != 0 || tl_load_decoder(L, root) != 0 ||
        tl_finish_added(L) != 0 || tl_load_specials(L, root, cfg) != 0 ||
        (cfg && tl_load_config_misc(L, cfg) != 0))
        goto fail;
    if (tl_prepare_word_cuts(tok) != 0) {
        tl_oom(L);
        goto fail;
    }
    return LLAVA_OK;
fail:
    return L->err->code != LLAVA_OK ? L->err->code : LLAVA_ERR_FORMAT;
}

/* tokenizer_config.json's contents as a JSON object. Integers are read as reals: these files
 * carry model_max_length values such as 1e30 written as integers, which jansson otherwise
 * rejects, and no integer of this file is needed. */
static json_t *load_config(const char *buf, size_t len, const char *what, llava_error *err) {
    json_error_t je;
    json_t *cfg = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
    if (!cfg) {
        llava_error_set(err, LLAVA_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", what, je.line,
                        je.column, je.text);
    } else if (!json_is_object(cfg)) {
        llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object", what);
        json_decref(cfg);
        cfg = NULL;
    }
    return cfg;
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
    loader L = {NULL, what ? what : "tokenizer.json", config_what, err, 0};
    if (!tokenizer_json) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "no tokenizer.json");
    L.pool_bound = tokenizer_json_len + config_json_len + 64;
    L.tok = calloc(1, sizeof *L.tok);
    if (!L.tok) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    size_t rest_len = 0;
    char *rest = read_big_members(&L, tokenizer_json, tokenizer_json_len, &rest_len);
    json_t *root = rest ? llava_json_load_buffer(rest, rest_len, L.what, err) : NULL;
    free(rest);
    if (!root) {
        tokenizer_free(L.tok);
        return err->code;
    }
    json_t *cfg = NULL;
    if (config_json) {
        cfg = load_config(config_json, config_json_len, config_what, err);
        if (!cfg) {
            json_decref(root);
            tokenizer_free(L.tok);
            return err->code;
        }
    }
    llava_status st = build(&L, root, cfg);
    json_decref(root);
    json_decref(cfg);
    if (st != LLAVA_OK) {
        tokenizer_free(L.tok);
        return st;
    }
    *out = L.tok;
    return LLAVA_OK;
}

int tokenizer_template_value(const json_t *v, const char **text) {
    *text = NULL;
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        *text = json_string_value(v);
        return 0;
    }
    if (!json_is_array(v)) return -1;
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        const json_t *name = json_object_get(e, "name"), *t = json_object_get(e, "template");
        if (!json_is_string(t)) continue;
        if (!*text) *text = json_string_value(t);
        if (json_is_string(name) && !strcmp(json_string_value(name), "default")) {
            *text = json_string_value(t);
            break;
        }
    }
    return 0;
}

/* A chat template from chat_template.jinja, or from chat_template.json's "chat_template";
 * *text stays NULL when neither file is there. */
static llava_status read_template_files(const char *dir, char **text, const char **source, llava_error *err) {
    char path[4096];
    size_t len;
    if (llava_path_join(path, sizeof path, dir, "chat_template.jinja") == 0 &&
        llava_file_exists(path)) {
        if (llava_read_file(path, CHAT_TEMPLATE_MAX, text, &len, err) != LLAVA_OK) return err->code;
        *source = "chat_template.jinja";
        return LLAVA_OK;
    }
    if (llava_path_join(path, sizeof path, dir, "chat_template.json") == 0 &&
        llava_file_exists(path)) {
        json_t *j = llava_json_load_file(path, CHAT_TEMPLATE_MAX, true, err);
        if (!j) return err->code;
        const json_t *t = json_object_get(j, "chat_template");
        bool present = t != NULL, is_string = t && json_is_string(t);
        if (is_string) *text = strdup(json_string_value(t));
        json_decref(j);
        if (present && !is_string)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: chat_template must be a string",
                                   path);
        if (present && !*text)
            return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
        if (*text) *source = "chat_template.json";
    }
    return LLAVA_OK;
}

llava_status tokenizer_find_chat_template(const char *dir, char **text, const char **source, llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    *text = NULL;
    *source = NULL;
    char path[4096];
    if (llava_path_join(path, sizeof path, dir, "tokenizer_config.json") == 0 && llava_file_exists(path)) {
        char *buf;
        size_t len;
        if (llava_read_file(path, CONFIG_JSON_MAX, &buf, &len, err) != LLAVA_OK) return err->code;
        json_t *cfg = load_config(buf, len, path, err);
        free(buf);
        if (!cfg) return err->code;
        const char *t;
        if (tokenizer_template_value(json_object_get(cfg, "chat_template"), &t) != 0) {
            json_decref(cfg);
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: chat_template must be a string or a list", path);
        }
        if (t) {
            *text = strdup(t);
            json_decref(cfg);
            if (!*text) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
            *source = "tokenizer_config.json";
            return LLAVA_OK;
        }
        json_decref(cfg);
    }
    return read_template_files(dir, text, source, err);
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
    const char *source;
    if (st == LLAVA_OK && !(*out)->chat_template &&
        read_template_files(dir, &(*out)->chat_template, &source, err) != LLAVA_OK) {
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
    tok_mergemap_free(&tok->bigrams);
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
