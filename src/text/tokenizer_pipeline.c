/* The text pipelines of tokenizer.json around the model: the normalizer (Sequence, Prepend,
 * Replace), the pre-tokenizer (Metaspace) and the decoder (Sequence, Replace, ByteFallback,
 * Fuse, Strip, Metaspace). Anything else is refused as unsupported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "text/tokenizer_load.h"

static int add_norm(loader *L, const json_t *n, const char *where) {
    tokenizer *tok = L->tok;
    if (tl_type_is(n, "Sequence")) {
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
    if (tl_type_is(n, "Prepend")) {
        step.kind = TOK_NORM_PREPEND;
        const char *s = tl_need_string(L, n, "prepend", where, &step.content_len);
        if (!s) return -1;
        step.content = tl_dup_bytes(s, step.content_len);
    } else if (tl_type_is(n, "Replace")) {
        step.kind = TOK_NORM_REPLACE;
        if (tl_get_pattern(L, n, where, &step.pattern, &step.pattern_len) != 0) return -1;
        const char *s = tl_need_string(L, n, "content", where, &step.content_len);
        if (!s) return free(step.pattern), -1;
        step.content = tl_dup_bytes(s, step.content_len);
    } else {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: %s: normalizer \"%s\" is not supported (Sequence, Prepend, Replace)",
                        L->what, where, tl_type_of(n));
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
    if (tl_get_bool(L, obj, "add_prefix_space", where, &add_prefix) != 0) return -1;
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

int tl_load_pre_tokenizer(loader *L, const json_t *root) {
    tokenizer *tok = L->tok;
    const json_t *p = json_object_get(root, "pre_tokenizer");
    if (!p || json_is_null(p)) return 0;
    const char *where = "pre_tokenizer";
    if (tl_type_is(p, "Sequence")) {
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
    if (!tl_type_is(p, "Metaspace")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: %s \"%s\" is not supported (only Metaspace)", L->what, where,
                        tl_type_of(p));
        return -1;
    }
    tok->has_metaspace_pre = true;
    if (tl_need_char(L, p, "replacement", where, &tok->pre_replacement) != 0) return -1;
    const char *rep = json_string_value(json_object_get(p, "replacement"));
    tok->pre_rep_len = strlen(rep);
    memcpy(tok->pre_rep_utf8, rep, tok->pre_rep_len + 1);
    if (read_prepend_scheme(L, p, where, &tok->pre_prepend) != 0) return -1;
    tok->pre_split = true;
    return tl_get_bool(L, p, "split", where, &tok->pre_split);
}

static int add_dec(loader *L, const json_t *d, const char *where) {
    tokenizer *tok = L->tok;
    if (tl_type_is(d, "Sequence")) {
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
    if (tl_type_is(d, "Replace")) {
        step.kind = TOK_DEC_REPLACE;
        if (tl_get_pattern(L, d, where, &step.pattern, &step.pattern_len) != 0) return -1;
        const char *s = tl_need_string(L, d, "content", where, &step.content_len);
        if (!s || !(step.content = tl_dup_bytes(s, step.content_len))) {
            free(step.pattern);
            if (s) llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory");
            return -1;
        }
    } else if (tl_type_is(d, "ByteFallback")) {
        /* After Fuse the whole text is one token; a byte run there is not a real layout. */
        if (fused) {
            llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                            "%s: %s: ByteFallback after Fuse is not supported", L->what, where);
            return -1;
        }
        step.kind = TOK_DEC_BYTE_FALLBACK;
    } else if (tl_type_is(d, "Fuse")) {
        step.kind = TOK_DEC_FUSE;
    } else if (tl_type_is(d, "Strip")) {
        step.kind = TOK_DEC_STRIP;
        int64_t start = 0, stop = 0;
        if (tl_need_char(L, d, "content", where, &step.ch) != 0 ||
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
    } else if (tl_type_is(d, "Metaspace")) {
        step.kind = TOK_DEC_METASPACE;
        if (tl_need_char(L, d, "replacement", where, &step.ch) != 0 ||
            read_prepend_scheme(L, d, where, &step.prepend) != 0)
            return -1;
    } else {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: %s: decoder \"%s\" is not supported (Sequence, Replace, "
                        "ByteFallback, Fuse, Strip, Metaspace)", L->what, where, tl_type_of(d));
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

int tl_load_normalizer(loader *L, const json_t *root) {
    const json_t *norm = json_object_get(root, "normalizer");
    if (!norm || json_is_null(norm)) return 0;
    return add_norm(L, norm, "normalizer");
}

int tl_load_decoder(loader *L, const json_t *root) {
    const json_t *dec = json_object_get(root, "decoder");
    if (!dec || json_is_null(dec)) return 0;
    L->tok->has_decoder = true;
    return add_dec(L, dec, "decoder");
}
