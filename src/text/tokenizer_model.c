/* The BPE model of tokenizer.json: options, the vocabulary and the merges (read straight from
 * the raw text with the scanner of tokenizer_json.h, since they are most of the file), and the
 * facts the encoder derives from them once (byte-fallback ids, word cuts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_json.h"
#include "text/tokenizer_load.h"

typedef struct vocab_entry {
    uint32_t off, len; /* in the pool */
    int32_t id;
} vocab_entry;

static int fail_at(loader *L, size_t pos, const char *fmt, const char *arg) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s (byte offset %zu)", L->what, msg, pos);
    return -1;
}

/* model.vocab: {"piece": id, ...}. */
int tl_load_vocab(loader *L, tj_cursor *cur) {
    tokenizer *tok = L->tok;
    tj_cursor c = *cur;
    if (tj_peek(&c) != '{') return fail_at(L, c.pos, "model.vocab must be an object%s", "");
    if (tok->pool) return fail_at(L, c.pos, "model.vocab appears twice%s", "");
    /* Unescaped strings are never longer than their JSON form, so the files' sizes bound the
     * pool (pages never written are never backed by memory). */
    tok->pool_cap = L->pool_bound;
    tok->pool = malloc(tok->pool_cap);
    vocab_entry *entries = NULL;
    size_t n = 0, cap = 0;
    tokenizer_text key = {0};
    int64_t max_id = -1;
    if (!tok->pool) goto oom;
    c.pos++;
    if (tj_peek(&c) == '}') {
        c.pos++;
    } else {
        for (;;) {
            int64_t id;
            if (tj_string(&c, &key) || tj_expect(&c, ':')) goto fail;
            size_t id_at = (tj_skip_ws(&c), c.pos);
            if (tj_int(&c, &id)) goto fail;
            if (id < 0 || id > TL_MAX_TOKEN_ID) {
                char msg[64];
                snprintf(msg, sizeof msg, "%d", TL_MAX_TOKEN_ID);
                fail_at(L, id_at, "model.vocab: ids must be from 0 to %s", msg);
                goto fail;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 32768;
                vocab_entry *g = realloc(entries, cap * sizeof *g);
                if (!g) goto oom;
                entries = g;
            }
            uint32_t off = tl_pool_add(tok, key.data, key.len);
            if (off == UINT32_MAX) goto oom;
            entries[n++] = (vocab_entry){off, (uint32_t)key.len, (int32_t)id};
            if (id > max_id) max_id = id;
            char ch = tj_peek(&c);
            c.pos++;
            if (ch == '}') break;
            if (ch != ',') {
                fail_at(L, c.pos - 1, "model.vocab: expected ',' or '}'%s", "");
                goto fail;
            }
        }
    }
    /* Ids far beyond the number of entries would make the per-id tables huge for nothing. */
    if (max_id >= (int64_t)n + 65536) {
        llava_error_set(L->err, LLAVA_ERR_LIMIT,
                        "%s: model.vocab: id %lld is far beyond its %zu entries", L->what,
                        (long long)max_id, n);
        goto fail;
    }
    if (tok_strmap_init(&tok->vocab, n) != 0 || tl_ensure_ids(tok, (int32_t)(max_id + 1)) != 0)
        goto oom;
    tok->model_vocab_size = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        const vocab_entry *e = &entries[i];
        const char *piece = tok->pool + e->off;
        if (tok_strmap_get(&tok->vocab, piece, e->len) >= 0) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: model.vocab: \"%.64s\" appears twice",
                            L->what, piece);
            goto fail;
        }
        if (tok->id_flags[e->id] & TOK_ID_PRESENT) {
            llava_error_set(L->err, LLAVA_ERR_FORMAT,
                            "%s: model.vocab: id %d is given to both \"%.64s\" and \"%.64s\"",
                            L->what, e->id, tok->pool + tok->piece_off[e->id], piece);
            goto fail;
        }
        if (tok_strmap_put(&tok->vocab, piece, e->len, e->id) != 0) goto oom;
        tl_set_piece(tok, e->id, e->off, e->len, 0);
    }
    free(entries);
    tokenizer_text_free(&key);
    cur->pos = c.pos;
    return 0;
oom:
    tl_oom(L);
fail:
    free(entries);
    tokenizer_text_free(&key);
    return -1;
}

/* One merge: ["a", "b"], or "a b" (exactly one space, as Hugging Face splits the legacy form);
 * writes a + b into both (a's length in *alen) so the merged piece can be looked up too. */
static int merge_parts(loader *L, tj_cursor *c, size_t rank, tokenizer_text *ab, size_t *alen,
                       tokenizer_text *tmp) {
    size_t at = c->pos;
    char first = tj_peek(c);
    if (first == '[') {
        c->pos++;
        if (tj_string(c, ab) || tj_expect(c, ',') || tj_string(c, tmp) || tj_expect(c, ']'))
            return -1;
        *alen = ab->len;
        if (tok_text_append(ab, tmp->data, tmp->len)) return tl_oom(L);
        return 0;
    }
    if (first == '"') {
        if (tj_string(c, tmp)) return -1;
        const char *sp = memchr(tmp->data, ' ', tmp->len);
        if (sp && !memchr(sp + 1, ' ', tmp->len - (size_t)(sp - tmp->data) - 1)) {
            *alen = (size_t)(sp - tmp->data);
            ab->len = 0;
            if (tok_text_append(ab, tmp->data, *alen) ||
                tok_text_append(ab, sp + 1, tmp->len - *alen - 1))
                return tl_oom(L);
            return 0;
        }
    }
    char idx[32];
    snprintf(idx, sizeof idx, "%zu", rank);
    return fail_at(L, at, "model.merges[%s] must be \"a b\" or [\"a\", \"b\"]", idx);
}

int tl_load_merges(loader *L, tj_cursor *cur) {
    tokenizer *tok = L->tok;
    tj_cursor c = *cur;
    const char *text = c.s;
    size_t end = c.len;
    if (tj_peek(&c) != '[') return fail_at(L, c.pos, "model.merges must be an array%s", "");
    if (!tok->pool) return fail_at(L, c.pos, "model.merges before model.vocab%s", "");
    if (tok->merges.slots) return fail_at(L, c.pos, "model.merges appears twice%s", "");
    /* Sized for a typical vocabulary; the map grows when there are more. */
    if (tok_mergemap_init(&tok->merges, 2 * (size_t)tok->model_vocab_size + 16) != 0)
        return tl_oom(L);
    tokenizer_text ab = {0}, tmp = {0};
    size_t i = 0, rank = 0;
    int rc = -1;
    c.pos++;
    if (tj_peek(&c) == ']') {
        c.pos++;
        rc = 0;
        cur->pos = c.pos;
        goto done;
    }
    for (;; i++) {
        size_t at = (tj_skip_ws(&c), c.pos), alen;
        /* The legacy text form may carry a "#version" line, which is not a merge. */
        if (end - at > 9 && !memcmp(text + at, "\"#version", 9)) {
            if (tj_string(&c, NULL)) goto done;
        } else {
            if (merge_parts(L, &c, i, &ab, &alen, &tmp)) goto done;
            int32_t ia = tok_strmap_get(&tok->vocab, ab.data, alen);
            int32_t ib = tok_strmap_get(&tok->vocab, ab.data + alen, ab.len - alen);
            int32_t id = tok_strmap_get(&tok->vocab, ab.data, ab.len);
            if (ia < 0 || ib < 0 || id < 0) {
                const char *bad = ia < 0 ? ab.data : ib < 0 ? ab.data + alen : ab.data;
                size_t bad_len = ia < 0 ? alen : ib < 0 ? ab.len - alen : ab.len;
                llava_error_set(L->err, LLAVA_ERR_FORMAT,
                                "%s: model.merges[%zu]: \"%.*s\" is not in the vocabulary "
                                "(byte offset %zu)", L->what, i,
                                (int)(bad_len > 64 ? 64 : bad_len), bad, at);
                goto done;
            }
            /* Hugging Face collects the merges into a map in order, so a repeated pair ends
             * with the rank of its last occurrence. */
            tok_merge *old = (tok_merge *)tok_mergemap_get(&tok->merges, ia, ib);
            if (old) {
                old->rank = (int32_t)rank;
                old->id = id;
            } else if (tok_mergemap_put(&tok->merges, ia, ib, (int32_t)rank, id) != 0) {
                tl_oom(L);
                goto done;
            }
            rank++;
        }
        char ch = tj_peek(&c);
        c.pos++;
        if (ch == ']') break;
        if (ch != ',') {
            fail_at(L, c.pos - 1, "model.merges: expected ',' or ']'%s", "");
            goto done;
        }
    }
    rc = 0;
    cur->pos = c.pos;
done:
    tokenizer_text_free(&ab);
    tokenizer_text_free(&tmp);
    return rc;
}

int tl_load_model(loader *L, const json_t *model) {
    tokenizer *tok = L->tok;
    const json_t *type = json_object_get(model, "type");
    if (type && !tl_type_is(model, "BPE")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: model.type \"%s\" is not supported (only BPE)", L->what,
                        tl_type_of(model));
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
    if (tl_get_bool(L, model, "fuse_unk", "model", &fuse) ||
        tl_get_bool(L, model, "byte_fallback", "model", &fallback) ||
        tl_get_bool(L, model, "ignore_merges", "model", &ignore))
        return -1;
    tok->fuse_unk = fuse;
    tok->byte_fallback = fallback;
    tok->ignore_merges = ignore;
    if (!tok->pool || !tok->merges.slots) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: model.%s is missing", L->what,
                        !tok->pool ? "vocab" : "merges");
        return -1;
    }
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
    for (int ch = 0; ch < 128; ch++) {
        char one = (char)ch;
        tok->ascii_id[ch] = tok_strmap_get(&tok->vocab, &one, 1);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Word cuts (see tokenizer_internal.h)                                                       */

int tl_prepare_word_cuts(tokenizer *tok) {
    tok->can_cut_words = false;
    if (tok->ignore_merges) return 0; /* a whole pre-token may be one piece: never cut */
    /* A merge whose part is a byte-fallback or unknown piece could join text across a cut
     * without its characters showing in any piece. */
    for (size_t i = 0; i < tok->merges.cap; i++) {
        const tok_merge *m = &tok->merges.slots[i];
        if (m->key == UINT64_MAX) continue;
        int32_t parts[2] = {(int32_t)(m->key >> 32), (int32_t)(uint32_t)m->key};
        for (int k = 0; k < 2; k++)
            if ((tok->id_flags[parts[k]] & TOK_ID_BYTE) || parts[k] == tok->unk_id) return 0;
    }
    if (tok_mergemap_init(&tok->bigrams, 4096) != 0) return -1; /* ~3.5k for LLaMA; grows */
    for (int32_t id = 0; id < tok->n_ids; id++) {
        if (!(tok->id_flags[id] & TOK_ID_PRESENT)) continue;
        const char *s = tok->pool + tok->piece_off[id];
        size_t len = tok->piece_len[id], i = 0;
        uint32_t prev = 0, cp;
        for (bool first = true; i < len; first = false) {
            i += tok_utf8_decode(s + i, len - i, &cp);
            if (!first && tok_mergemap_put(&tok->bigrams, (int32_t)prev, (int32_t)cp, 0, 0) != 0)
                return -1;
            prev = cp;
        }
    }
    tok->can_cut_words = true;
    return 0;
}
