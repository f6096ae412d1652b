/* Decoding ids back to text through the decoder steps of tokenizer.json, two ways: the whole
 * sequence at once, step by step over the list of token strings as Hugging Face does; and
 * streamed, one id at a time, where each step keeps back only what a later token can change
 * (a byte run, a partial pattern, leading or trailing characters to strip). Streaming runs in
 * the model's token loop, so it works in buffers the stream owns, sized when it is made. */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_internal.h"

static const char REPLACEMENT_CHAR[] = "\xEF\xBF\xBD"; /* U+FFFD */

static size_t utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ByteFallback's test on a token string: "<0xNN>" gives NN, anything else -1. */
static int byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int replace_into(const char *s, size_t len, const char *pat, size_t plen, const char *with,
                        size_t wlen, tokenizer_text *out) {
    size_t i = 0;
    while (plen && i < len) {
        const char *hit = memmem(s + i, len - i, pat, plen);
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        if (tok_text_append(out, s + i, at - i) || tok_text_append(out, with, wlen)) return -1;
        i = at + plen;
    }
    return tok_text_append(out, s + i, len - i);
}

/* Metaspace decoding of one token: the replacement becomes a space, or vanishes in the first
 * token unless the prepend scheme is "never". */
static int metaspace_into(const char *s, size_t len, uint32_t rep, bool drop, tokenizer_text *out) {
    size_t i = 0, run = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s + i, len - i, &cp);
        if (cp == rep) {
            if (tok_text_append(out, s + run, i - run)) return -1;
            if (!drop && tok_text_append(out, " ", 1)) return -1;
            run = i + n;
        }
        i += n;
    }
    return tok_text_append(out, s + run, len - run);
}

/* ---------------------------------------------------------------------------------------- */
/* Whole-sequence decoding: a list of strings through each step                               */

typedef struct strlist {
    tokenizer_text buf; /* the strings, back to back */
    size_t *off, *len;
    size_t n, cap;
} strlist;

static int list_add(strlist *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        size_t *o = realloc(l->off, cap * sizeof *o);
        if (!o) return -1;
        l->off = o;
        size_t *n = realloc(l->len, cap * sizeof *n);
        if (!n) return -1;
        l->len = n;
        l->cap = cap;
    }
    l->off[l->n] = l->buf.len;
    l->len[l->n] = len;
    l->n++;
    return tok_text_append(&l->buf, s, len);
}

/* Adds the last `len` bytes of l->buf (just written) as a string. */
static int list_add_tail(strlist *l, size_t start) {
    size_t len = l->buf.len - start;
    l->buf.len = start;
    return list_add(l, l->buf.data ? l->buf.data + start : "", len);
}

static void list_free(strlist *l) {
    tokenizer_text_free(&l->buf);
    free(l->off);
    free(l->len);
    memset(l, 0, sizeof *l);
}

#define STR(l, i) ((l)->buf.data + (l)->off[i])

static int flush_bytes(strlist *dst, const char *bytes, size_t n) {
    if (!n) return 0;
    if (tok_utf8_check(bytes, n) == n) return list_add(dst, bytes, n);
    for (size_t i = 0; i < n; i++)
        if (list_add(dst, REPLACEMENT_CHAR, 3)) return -1;
    return 0;
}

static int apply_step(const tok_dec_step *st, const strlist *src, strlist *dst) {
    switch (st->kind) {
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < src->n; i++) {
            size_t start = dst->buf.len;
            if (replace_into(STR(src, i), src->len[i], st->pattern, st->pattern_len, st->content,
                             st->content_len, &dst->buf) ||
                list_add_tail(dst, start))
                return -1;
        }
        return 0;
    case TOK_DEC_BYTE_FALLBACK: {
        char *bytes = malloc(src->n ? src->n : 1);
        size_t nb = 0;
        if (!bytes) return -1;
        for (size_t i = 0; i < src->n; i++) {
            int b = byte_token(STR(src, i), src->len[i]);
            if (b >= 0) {
                bytes[nb++] = (char)b;
                continue;
            }
            if (flush_bytes(dst, bytes, nb) || list_add(dst, STR(src, i), src->len[i])) {
                free(bytes);
                return -1;
            }
            nb = 0;
        }
        int rc = flush_bytes(dst, bytes, nb);
        free(bytes);
        return rc;
    }
    case TOK_DEC_FUSE: {
        size_t start = dst->buf.len;
        for (size_t i = 0; i < src->n; i++)
            if (tok_text_append(&dst->buf, STR(src, i), src->len[i])) return -1;
        return list_add_tail(dst, start);
    }
    case TOK_DEC_STRIP: {
        char c[4];
        size_t clen = utf8_encode(st->ch, c);
        for (size_t i = 0; i < src->n; i++) {
            const char *s = STR(src, i);
            size_t len = src->len[i], a = 0, b = len;
            for (size_t k = 0; k < st->start && a + clen <= len && !memcmp(s + a, c, clen); k++)
                a += clen;
            for (size_t k = 0; k < st->stop && b >= clen && !memcmp(s + b - clen, c, clen); k++)
                b -= clen;
            if (list_add(dst, s + a, b > a ? b - a : 0)) return -1;
        }
        return 0;
    }
    case TOK_DEC_METASPACE:
        for (size_t i = 0; i < src->n; i++) {
            size_t start = dst->buf.len;
            if (metaspace_into(STR(src, i), src->len[i], st->ch,
                               i == 0 && st->prepend != TOK_PREPEND_NEVER, &dst->buf) ||
                list_add_tail(dst, start))
                return -1;
        }
        return 0;
    }
    return -1;
}

static llava_status check_id(const tokenizer *tok, int32_t id, size_t at, llava_error *err) {
    if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & TOK_ID_PRESENT))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "token id %d (at position %zu) is not in the vocabulary of %d ids",
                               (int)id, at, (int)tok->n_ids);
    return LLAVA_OK;
}

llava_status tokenizer_decode(const tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                              tokenizer_text *out, llava_error *err) {
    if (!tok || !out || (!ids && n))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "tokenizer_decode: NULL argument");
    out->len = 0;
    if (out->data) out->data[0] = '\0';
    strlist a = {0}, b = {0};
    strlist *cur = &a, *next = &b;
    for (size_t i = 0; i < n; i++) {
        if (check_id(tok, ids[i], i, err) != LLAVA_OK) goto fail_keep;
        if ((flags & TOKENIZER_SKIP_SPECIAL) && (tok->id_flags[ids[i]] & TOK_ID_SPECIAL)) continue;
        if (list_add(cur, tok->pool + tok->piece_off[ids[i]], tok->piece_len[ids[i]])) goto oom;
    }
    for (size_t k = 0; k < tok->n_dec; k++) {
        next->n = 0;
        next->buf.len = 0;
        if (apply_step(&tok->dec[k], cur, next)) goto oom;
        strlist *t = cur;
        cur = next;
        next = t;
    }
    for (size_t i = 0; i < cur->n; i++) {
        if (!tok->has_decoder && i > 0 && tok_text_append(out, " ", 1)) goto oom;
        if (tok_text_append(out, STR(cur, i), cur->len[i])) goto oom;
    }
    if (tok_text_append(out, "", 0)) goto oom; /* NUL-terminated even when empty */
    list_free(&a);
    list_free(&b);
    return LLAVA_OK;
oom:
    llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory while decoding");
fail_keep:
    list_free(&a);
    list_free(&b);
    out->len = 0;
    return err ? err->code : LLAVA_ERR_NO_MEMORY;
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming                                                                                  */

/* What one decoder step keeps between tokens. Both buffers keep their capacity for the life of
 * the stream: only their length is reset, so a push allocates only for a longer piece or byte
 * run than any before (and the sizes chosen by tokenizer_stream_new make even that rare). */
typedef struct stage {
    tokenizer_text held; /* BYTE_FALLBACK: the byte run; REPLACE after Fuse: a partial match */
    tokenizer_text out;  /* REPLACE, METASPACE: this step's output for the current token or text,
                            passed on to the next step before this step runs again */
    size_t count;        /* METASPACE: tokens seen; STRIP after Fuse: leading chars stripped */
    size_t held_chars;   /* STRIP after Fuse: trailing strip characters kept back */
    bool leading_done;   /* STRIP after Fuse: a non-strip character has been seen */
} stage;

struct tokenizer_stream {
    const tokenizer *tok;
    unsigned flags;
    size_t fuse_at; /* index of the first Fuse step: steps after it see one text, not tokens */
    size_t tokens;  /* tokens fed (for the decoder-less join with spaces) */
    stage *st;      /* [n_dec] */
};

/* Bytes reserved for a byte run. One character is at most 4 bytes; longer runs are characters
 * the vocabulary lacks spelled one after another (rare scripts, emoji joined by U+200D), and
 * a run only ends at the next token that is not a byte. */
#define BYTE_RUN_RESERVE 256

/* Makes room for cap bytes (the terminating NUL included), keeping the text. */
static int text_reserve(tokenizer_text *t, size_t cap) {
    if (cap <= t->cap) return 0;
    char *p = realloc(t->data, cap);
    if (!p) return -1;
    p[t->len] = '\0';
    t->data = p;
    t->cap = cap;
    return 0;
}

/* Sizes every step's buffers for the longest input it can get from one token of this
 * vocabulary (or a byte run of BYTE_RUN_RESERVE bytes), following the length through the
 * steps, so that decoding never grows them in practice. */
static int stream_reserve(tokenizer_stream *s) {
    const tokenizer *tok = s->tok;
    size_t n = 0; /* the most bytes one call of step k can receive */
    for (int32_t id = 0; id < tok->n_ids; id++)
        if (tok->piece_len[id] > n) n = tok->piece_len[id];
    for (size_t k = 0; k < tok->n_dec; k++) {
        const tok_dec_step *st = &tok->dec[k];
        stage *sg = &s->st[k];
        switch (st->kind) {
        case TOK_DEC_REPLACE: {
            /* after Fuse the input joins a held tail shorter than the pattern */
            size_t in = k > s->fuse_at ? n + st->pattern_len : n;
            if (k > s->fuse_at && text_reserve(&sg->held, in + 1)) return -1;
            size_t hits = st->pattern_len ? in / st->pattern_len : 0;
            n = in + (st->content_len > st->pattern_len
                          ? hits * (st->content_len - st->pattern_len) : 0);
            if (text_reserve(&sg->out, n + 1)) return -1;
            break;
        }
        case TOK_DEC_METASPACE: /* the replacement becomes one space or nothing: no longer */
            if (text_reserve(&sg->out, n + 1)) return -1;
            break;
        case TOK_DEC_BYTE_FALLBACK: /* passes on a token, a byte run or one U+FFFD at a time */
            if (text_reserve(&sg->held, BYTE_RUN_RESERVE)) return -1;
            if (n < BYTE_RUN_RESERVE) n = BYTE_RUN_RESERVE;
            break;
        case TOK_DEC_FUSE:
        case TOK_DEC_STRIP: /* pass on a part of their input, from their input's memory */
            break;
        }
    }
    return 0;
}

tokenizer_stream *tokenizer_stream_new(const tokenizer *tok, unsigned flags) {
    tokenizer_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->tok = tok;
    s->flags = flags;
    s->st = calloc(tok->n_dec ? tok->n_dec : 1, sizeof *s->st);
    if (!s->st) {
        free(s);
        return NULL;
    }
    s->fuse_at = tok->n_dec;
    for (size_t k = 0; k < tok->n_dec; k++)
        if (tok->dec[k].kind == TOK_DEC_FUSE) {
            s->fuse_at = k;
            break;
        }
    if (stream_reserve(s)) {
        tokenizer_stream_free(s);
        return NULL;
    }
    return s;
}

void tokenizer_stream_free(tokenizer_stream *s) {
    if (!s) return;
    for (size_t k = 0; k < s->tok->n_dec; k++) {
        tokenizer_text_free(&s->st[k].held);
        tokenizer_text_free(&s->st[k].out);
    }
    free(s->st);
    free(s);
}

static int feed_text(tokenizer_stream *s, size_t k, const char *t, size_t len, tokenizer_text *out);

static int emit_repeat(tokenizer_stream *s, size_t k, uint32_t ch, size_t n, tokenizer_text *out) {
    char c[4];
    size_t clen = utf8_encode(ch, c);
    for (size_t i = 0; i < n; i++)
        if (feed_text(s, k, c, clen, out)) return -1;
    return 0;
}

/* Text after Fuse enters step k (k > fuse_at): the steps see one growing string. */
static int feed_text(tokenizer_stream *s, size_t k, const char *t, size_t len, tokenizer_text *out) {
    const tokenizer *tok = s->tok;
    if (len == 0) return 0;
    if (k == tok->n_dec) return tok_text_append(out, t, len);
    const tok_dec_step *st = &tok->dec[k];
    stage *sg = &s->st[k];
    switch (st->kind) {
    case TOK_DEC_FUSE:
    case TOK_DEC_BYTE_FALLBACK: /* refused after Fuse at load */
        return feed_text(s, k + 1, t, len, out);
    case TOK_DEC_METASPACE:
        sg->out.len = 0;
        return metaspace_into(t, len, st->ch, st->prepend != TOK_PREPEND_NEVER, &sg->out) ||
               feed_text(s, k + 1, sg->out.data, sg->out.len, out);
    case TOK_DEC_REPLACE: {
        /* Replace what is complete; keep back a tail that may be the start of a match. */
        if (tok_text_append(&sg->held, t, len)) return -1;
        const char *h = sg->held.data, *p = st->pattern;
        size_t n = sg->held.len, pl = st->pattern_len, i = 0, done = 0;
        tokenizer_text *r = &sg->out;
        int rc = 0;
        r->len = 0;
        while (i < n && pl) {
            if (n - i >= pl && !memcmp(h + i, p, pl)) {
                rc |= tok_text_append(r, h + done, i - done) ||
                      tok_text_append(r, st->content, st->content_len);
                i += pl;
                done = i;
            } else if (n - i < pl && !memcmp(h + i, p, n - i)) {
                break;
            } else {
                i++;
            }
        }
        if (!pl) i = n;
        rc |= tok_text_append(r, h + done, i - done);
        memmove(sg->held.data, h + i, n - i);
        sg->held.len = n - i;
        return rc || feed_text(s, k + 1, r->data, r->len, out);
    }
    case TOK_DEC_STRIP: {
        size_t i = 0;
        while (i < len) {
            uint32_t cp;
            size_t n = tok_utf8_decode(t + i, len - i, &cp);
            if (!sg->leading_done) {
                if (cp == st->ch && sg->count < st->start) {
                    sg->count++;
                    i += n;
                    continue;
                }
                sg->leading_done = true;
            }
            if (st->stop && cp == st->ch) {
                /* Only the last `stop` of a trailing run can be stripped. */
                if (sg->held_chars == st->stop && emit_repeat(s, k + 1, st->ch, 1, out)) return -1;
                else if (sg->held_chars < st->stop) sg->held_chars++;
            } else {
                if (emit_repeat(s, k + 1, st->ch, sg->held_chars, out)) return -1;
                sg->held_chars = 0;
                if (feed_text(s, k + 1, t + i, n, out)) return -1;
            }
            i += n;
        }
        return 0;
    }
    }
    return -1;
}

/* A token string enters step k (k <= fuse_at): the steps see tokens one by one. */
static int feed_token(tokenizer_stream *s, size_t k, const char *t, size_t len, tokenizer_text *out) {
    const tokenizer *tok = s->tok;
    if (k == tok->n_dec) return tok_text_append(out, t, len);
    const tok_dec_step *st = &tok->dec[k];
    stage *sg = &s->st[k];
    int rc = 0;
    switch (st->kind) {
    case TOK_DEC_FUSE:
        return feed_text(s, k + 1, t, len, out);
    case TOK_DEC_REPLACE:
        sg->out.len = 0;
        return replace_into(t, len, st->pattern, st->pattern_len, st->content, st->content_len,
                            &sg->out) ||
               feed_token(s, k + 1, sg->out.data, sg->out.len, out);
    case TOK_DEC_METASPACE:
        sg->out.len = 0;
        rc = metaspace_into(t, len, st->ch, sg->count == 0 && st->prepend != TOK_PREPEND_NEVER,
                            &sg->out) ||
             feed_token(s, k + 1, sg->out.data, sg->out.len, out);
        sg->count++;
        return rc;
    case TOK_DEC_STRIP: {
        char c[4];
        size_t clen = utf8_encode(st->ch, c), a = 0, b = len;
        for (size_t i = 0; i < st->start && a + clen <= len && !memcmp(t + a, c, clen); i++)
            a += clen;
        for (size_t i = 0; i < st->stop && b >= clen && !memcmp(t + b - clen, c, clen); i++)
            b -= clen;
        return feed_token(s, k + 1, t + a, b > a ? b - a : 0, out);
    }
    case TOK_DEC_BYTE_FALLBACK: {
        int byte = byte_token(t, len);
        if (byte >= 0) {
            char c = (char)byte;
            return tok_text_append(&sg->held, &c, 1);
        }
        rc = 0;
        if (sg->held.len) {
            if (tok_utf8_check(sg->held.data, sg->held.len) == sg->held.len) {
                rc = feed_token(s, k + 1, sg->held.data, sg->held.len, out);
            } else {
                for (size_t i = 0; i < sg->held.len && !rc; i++)
                    rc = feed_token(s, k + 1, REPLACEMENT_CHAR, 3, out);
            }
            sg->held.len = 0;
        }
        return rc || feed_token(s, k + 1, t, len, out);
    }
    }
    return -1;
}

/* Flushes what step k and those after it keep back, as at the end of the sequence. */
static int finish_from(tokenizer_stream *s, size_t k, tokenizer_text *out) {
    const tokenizer *tok = s->tok;
    for (; k < tok->n_dec; k++) {
        const tok_dec_step *st = &tok->dec[k];
        stage *sg = &s->st[k];
        int rc = 0;
        if (st->kind == TOK_DEC_BYTE_FALLBACK && sg->held.len) {
            if (tok_utf8_check(sg->held.data, sg->held.len) == sg->held.len) {
                rc = feed_token(s, k + 1, sg->held.data, sg->held.len, out);
            } else {
                for (size_t i = 0; i < sg->held.len && !rc; i++)
                    rc = feed_token(s, k + 1, REPLACEMENT_CHAR, 3, out);
            }
        } else if (st->kind == TOK_DEC_REPLACE && k > s->fuse_at && sg->held.len) {
            rc = feed_text(s, k + 1, sg->held.data, sg->held.len, out);
        }
        /* STRIP after Fuse: the characters kept back are the stripped tail. */
        sg->held.len = 0;
        sg->count = 0;
        sg->held_chars = 0;
        sg->leading_done = false;
        if (rc) return -1;
    }
    return 0;
}

llava_status tokenizer_stream_push(tokenizer_stream *s, int32_t id, tokenizer_text *out,
                                   llava_error *err) {
    const tokenizer *tok = s->tok;
    if (check_id(tok, id, s->tokens, err) != LLAVA_OK) return err ? err->code : LLAVA_ERR_INVALID_ARGUMENT;
    if ((s->flags & TOKENIZER_SKIP_SPECIAL) && (tok->id_flags[id] & TOK_ID_SPECIAL)) return LLAVA_OK;
    const char *piece = tok->pool + tok->piece_off[id];
    size_t len = tok->piece_len[id];
    int rc = 0;
    if (!tok->has_decoder) {
        rc = (s->tokens && tok_text_append(out, " ", 1)) || tok_text_append(out, piece, len);
    } else {
        rc = feed_token(s, 0, piece, len, out);
    }
    s->tokens++;
    if (rc) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory while decoding");
    return LLAVA_OK;
}

llava_status tokenizer_stream_finish(tokenizer_stream *s, tokenizer_text *out, llava_error *err) {
    int rc = finish_from(s, 0, out);
    s->tokens = 0;
    if (rc) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory while decoding");
    return LLAVA_OK;
}

void tokenizer_stream_reset(tokenizer_stream *s) {
    for (size_t k = 0; k < s->tok->n_dec; k++) {
        stage *sg = &s->st[k];
        sg->held.len = 0;
        sg->count = 0;
        sg->held_chars = 0;
        sg->leading_done = false;
    }
    s->tokens = 0;
}
