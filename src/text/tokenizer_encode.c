/* Encoding text to ids as Hugging Face tokenizers does: added tokens are split out of the raw
 * text first, each remaining piece is normalized (and searched again for normalized added
 * tokens), pre-tokenized, and merged by BPE rank with byte fallback; then BOS/EOS are added.
 * Linear-ish in the input: BPE runs per word with a heap, and repeated words hit a cache. */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_internal.h"

/* ---------------------------------------------------------------------------------------- */
/* Added-token matchers                                                                       */

static int cmp_by_pattern(const void *a, const void *b, void *ctx) {
    const tokenizer *tok = ctx;
    const tok_added *x = &tok->added[*(const int32_t *)a];
    const tok_added *y = &tok->added[*(const int32_t *)b];
    unsigned char fx = (unsigned char)x->pattern[0], fy = (unsigned char)y->pattern[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (x->pattern_len != y->pattern_len) return x->pattern_len > y->pattern_len ? -1 : 1;
    return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

static int build_matcher(tokenizer *tok, tok_matcher *m, bool normalized) {
    m->order = malloc((tok->n_added ? tok->n_added : 1) * sizeof *m->order);
    if (!m->order) return -1;
    m->n = 0;
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].normalized == normalized && tok->added[i].pattern_len > 0)
            m->order[m->n++] = (int32_t)i;
    /* Group by first byte, longest first, so the first hit at a position is the longest. */
    qsort_r(m->order, m->n, sizeof *m->order, cmp_by_pattern, tok);
    size_t k = 0;
    for (int b = 0; b < 256; b++) {
        m->first[b] = (uint32_t)k;
        while (k < m->n && (unsigned char)tok->added[m->order[k]].pattern[0] == b) k++;
    }
    m->first[256] = (uint32_t)k;
    return 0;
}

int tok_build_matchers(tokenizer *tok) {
    return build_matcher(tok, &tok->match_raw, false) || build_matcher(tok, &tok->match_norm, true)
               ? -1
               : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Encoding state of one call (the tokenizer itself stays read-only)                          */

typedef struct split {
    size_t start, stop;
    int32_t id; /* an added token, or -1 for text to tokenize */
} split;

/* A BPE symbol: a run of the word, doubly linked to its live neighbours. */
typedef struct symbol {
    int32_t id;
    int32_t prev, next; /* indices, -1 at the ends */
    uint32_t len;       /* bytes; 0 once merged into its left neighbour */
} symbol;

/* A queued merge of the pair (left, right) at pos; keeping the pair lets a pop see that it is
 * still current without a merge-map lookup. */
typedef struct heap_item {
    int32_t rank;
    int32_t pos;
    int32_t id;
    int32_t left, right;
} heap_item;

/* Per-call cache of BPE results by word, for long inputs. */
typedef struct word_cache {
    tok_strmap map;  /* word -> index into entries */
    char *keys;      /* word bytes (the map's keys point here; grown by chunks) */
    struct cache_chunk *chunks;
    int32_t *ids;    /* concatenated results */
    size_t n_ids, cap_ids;
    uint32_t *start, *count; /* per entry */
    size_t n_entries, cap_entries;
} word_cache;

struct cache_chunk {
    struct cache_chunk *next;
    size_t used, cap;
    char data[];
};

typedef struct enc {
    const tokenizer *tok;
    tokenizer_ids *out;
    llava_error *err;
    split *splits;
    size_t n_splits, cap_splits;
    tokenizer_text norm;  /* normalized piece */
    tokenizer_text pre;   /* pre-tokenized piece */
    tokenizer_text tmp;   /* normalizer scratch */
    symbol *syms;
    size_t cap_syms;
    heap_item *heap;
    size_t n_heap, cap_heap;
    word_cache *cache; /* NULL for short inputs */
} enc;

#define CACHE_MIN_INPUT 4096 /* below this, a cache costs more than it saves */
#define CACHE_MAX_WORD 256

static int oom(enc *e) {
    llava_error_set(e->err, LLAVA_ERR_NO_MEMORY, "out of memory while encoding");
    return -1;
}

static int push_split(enc *e, size_t start, size_t stop, int32_t id) {
    if (e->n_splits == e->cap_splits) {
        size_t cap = e->cap_splits ? e->cap_splits * 2 : 16;
        split *g = realloc(e->splits, cap * sizeof *g);
        if (!g) return oom(e);
        e->splits = g;
        e->cap_splits = cap;
    }
    e->splits[e->n_splits++] = (split){start, stop, id};
    return 0;
}

static int emit(enc *e, int32_t id) {
    if (tok_ids_reserve(e->out, 1) != 0) return oom(e);
    e->out->ids[e->out->n++] = id;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Finding added tokens (Hugging Face AddedVocabulary::find_matches)                          */

/* The code point that ends at s[end) (end > 0). */
static uint32_t char_before(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    uint32_t cp;
    tok_utf8_decode(s + i, end - i, &cp);
    return cp;
}

/* Start of the run of whitespace that ends at s[end). */
static size_t space_run_before(const char *s, size_t end) {
    while (end > 0) {
        size_t i = end - 1;
        while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
        uint32_t cp;
        tok_utf8_decode(s + i, end - i, &cp);
        if (!tok_is_space(cp)) break;
        end = i;
    }
    return end;
}

/* End of the run of whitespace that starts at s[start). */
static size_t space_run_after(const char *s, size_t len, size_t start) {
    while (start < len) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s + start, len - start, &cp);
        if (!tok_is_space(cp)) break;
        start += n;
    }
    return start;
}

/* Leftmost-longest match at or after from: its start and the added token, or -1. */
static ptrdiff_t next_match(const tokenizer *tok, const tok_matcher *m, const char *s, size_t len,
                            size_t from, const tok_added **hit) {
    for (size_t p = from; p < len; p++) {
        unsigned char b = (unsigned char)s[p];
        for (uint32_t k = m->first[b]; k < m->first[b + 1]; k++) {
            const tok_added *a = &tok->added[m->order[k]];
            if (a->pattern_len <= len - p && !memcmp(s + p, a->pattern, a->pattern_len)) {
                *hit = a;
                return (ptrdiff_t)p;
            }
        }
    }
    return -1;
}

/* Splits s into pieces (added token or not) covering it, appended to e->splits. */
static int find_matches(enc *e, const tok_matcher *m, const char *s, size_t len) {
    const tokenizer *tok = e->tok;
    size_t start_offset = 0, from = 0;
    if (m->n) {
        const tok_added *a;
        ptrdiff_t at;
        while (from < len && (at = next_match(tok, m, s, len, from, &a)) >= 0) {
            size_t start = (size_t)at, stop = start + a->pattern_len;
            from = stop;
            if (a->single_word) {
                bool start_space = start == 0 || !tok_is_word_char(char_before(s, start));
                uint32_t next_cp = 0;
                if (stop < len) tok_utf8_decode(s + stop, len - stop, &next_cp);
                bool stop_space = stop == len || !tok_is_word_char(next_cp);
                if (!start_space || !stop_space) continue;
            }
            if (a->lstrip) {
                size_t new_start = space_run_before(s, start);
                start = new_start > start_offset ? new_start : start_offset;
            }
            if (a->rstrip) stop = space_run_after(s, len, stop);
            if (start_offset < start && push_split(e, start_offset, start, -1) != 0) return -1;
            if (push_split(e, start, stop, a->id) != 0) return -1;
            start_offset = stop;
        }
    }
    if (start_offset < len && push_split(e, start_offset, len, -1) != 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Normalizer and pre-tokenizer                                                               */

static int replace_all(const char *s, size_t len, const char *pat, size_t plen, const char *with,
                       size_t wlen, tokenizer_text *out) {
    if (plen == 0) return tok_text_append(out, s, len); /* an empty pattern matches nothing */
    size_t i = 0;
    while (i < len) {
        const char *hit = plen == 1 ? memchr(s + i, pat[0], len - i)
                                    : memmem(s + i, len - i, pat, plen);
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        if (tok_text_append(out, s + i, at - i) || tok_text_append(out, with, wlen)) return -1;
        i = at + plen;
    }
    return tok_text_append(out, s + i, len - i);
}

int tok_normalize(const tokenizer *tok, const char *s, size_t len, tokenizer_text *out) {
    tokenizer_text a = {0}, b = {0};
    tokenizer_text *cur = &a, *next = &b;
    if (tok_text_append(cur, s, len) != 0) goto fail;
    for (size_t i = 0; i < tok->n_norm; i++) {
        const tok_norm_step *st = &tok->norm[i];
        next->len = 0;
        if (st->kind == TOK_NORM_PREPEND) {
            if (cur->len == 0) continue;
            if (tok_text_append(next, st->content, st->content_len) ||
                tok_text_append(next, cur->data, cur->len))
                goto fail;
        } else if (replace_all(cur->data ? cur->data : "", cur->len, st->pattern, st->pattern_len,
                               st->content, st->content_len, next) != 0) {
            goto fail;
        }
        tokenizer_text *t = cur;
        cur = next;
        next = t;
    }
    int rc = tok_text_append(out, cur->data ? cur->data : "", cur->len);
    tokenizer_text_free(&a);
    tokenizer_text_free(&b);
    return rc;
fail:
    tokenizer_text_free(&a);
    tokenizer_text_free(&b);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* BPE on one word                                                                            */

static inline bool heap_less(const heap_item *x, const heap_item *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

/* A 4-ary min-heap on (rank, pos): half the levels of a binary one, which matters when one
 * pre-token has a million symbols. */
static int heap_push(enc *e, const tok_merge *m, int32_t pos, int32_t left, int32_t right) {
    if (e->n_heap == e->cap_heap) {
        size_t cap = e->cap_heap ? e->cap_heap * 2 : 64;
        heap_item *g = realloc(e->heap, cap * sizeof *g);
        if (!g) return oom(e);
        e->heap = g;
        e->cap_heap = cap;
    }
    size_t i = e->n_heap++;
    heap_item it = {m->rank, pos, m->id, left, right};
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (!heap_less(&it, &e->heap[parent])) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = it;
    return 0;
}

static heap_item heap_pop(enc *e) {
    heap_item top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n) break;
        size_t best = c, end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (heap_less(&e->heap[k], &e->heap[best])) best = k;
        if (!heap_less(&e->heap[best], &last)) break;
        e->heap[i] = e->heap[best];
        i = best;
    }
    if (n) e->heap[i] = last;
    return top;
}

static int add_symbol(enc *e, size_t *n, int32_t id, size_t len) {
    if (*n == e->cap_syms) {
        size_t cap = e->cap_syms ? e->cap_syms * 2 : 64;
        symbol *g = realloc(e->syms, cap * sizeof *g);
        if (!g) return oom(e);
        e->syms = g;
        e->cap_syms = cap;
    }
    e->syms[*n] = (symbol){id, (int32_t)*n - 1, (int32_t)*n + 1, (uint32_t)len};
    (*n)++;
    return 0;
}

/* The symbols of a word before merging (Hugging Face BPE::merge_word): one per character in
 * the vocabulary, else its <0xNN> bytes, else the unknown token (consecutive ones fused). */
static int word_symbols(enc *e, const char *w, size_t len, size_t *n_out) {
    const tokenizer *tok = e->tok;
    size_t n = 0, i = 0;
    int32_t unk_len = -1; /* bytes of the pending unknown run, -1 when none */
    while (i < len) {
        unsigned char c = (unsigned char)w[i];
        size_t clen = c < 0x80 ? 1 : tok_utf8_len(c);
        if (clen > len - i) clen = len - i;
        int32_t id = c < 0x80 ? tok->ascii_id[c] : tok_strmap_get(&tok->vocab, w + i, clen);
        if (id >= 0) {
            if (unk_len >= 0) {
                if (add_symbol(e, &n, tok->unk_id, (size_t)unk_len) != 0) return -1;
                unk_len = -1;
            }
            if (add_symbol(e, &n, id, clen) != 0) return -1;
        } else {
            bool done = false;
            if (tok->byte_fallback) {
                done = true;
                for (size_t k = 0; k < clen; k++) done &= tok->byte_id[(unsigned char)w[i + k]] >= 0;
                for (size_t k = 0; done && k < clen; k++)
                    if (add_symbol(e, &n, tok->byte_id[(unsigned char)w[i + k]], 1) != 0) return -1;
            }
            if (!done && tok->unk_id >= 0) {
                if (unk_len >= 0 && tok->fuse_unk) {
                    unk_len += (int32_t)clen;
                } else {
                    if (unk_len >= 0 && add_symbol(e, &n, tok->unk_id, (size_t)unk_len) != 0)
                        return -1;
                    unk_len = (int32_t)clen;
                }
            }
            /* Neither: Hugging Face drops the character. */
        }
        i += clen;
    }
    if (unk_len >= 0 && add_symbol(e, &n, tok->unk_id, (size_t)unk_len) != 0) return -1;
    if (n) e->syms[n - 1].next = -1;
    *n_out = n;
    return 0;
}

/* Merges by rank, lowest first, then leftmost (Hugging Face Word::merge_all, dropout off), and
 * appends the resulting ids to dst. */
static int bpe_word(enc *e, const char *w, size_t len, tokenizer_ids *dst) {
    const tokenizer *tok = e->tok;
    size_t n;
    if (word_symbols(e, w, len, &n) != 0) return -1;
    symbol *s = e->syms;
    e->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const tok_merge *m = tok_mergemap_get(&tok->merges, s[i].id, s[i + 1].id);
        if (m && heap_push(e, m, (int32_t)i, s[i].id, s[i + 1].id) != 0) return -1;
    }
    while (e->n_heap) {
        heap_item top = heap_pop(e);
        symbol *cur = &e->syms[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        symbol *right = &e->syms[cur->next];
        /* A stale entry: the pair at pos changed since it was queued. Like Hugging Face, the
         * entry still applies when the new pair merges into the same id. */
        if (cur->id != top.left || right->id != top.right) {
            const tok_merge *m = tok_mergemap_get(&tok->merges, cur->id, right->id);
            if (!m || m->id != top.id) continue;
        }
        cur->id = top.id;
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0) e->syms[cur->next].prev = top.pos;
        if (cur->prev >= 0) {
            int32_t left_id = e->syms[cur->prev].id;
            const tok_merge *pm = tok_mergemap_get(&tok->merges, left_id, cur->id);
            if (pm && heap_push(e, pm, cur->prev, left_id, cur->id) != 0) return -1;
        }
        if (cur->next >= 0) {
            int32_t right_id = e->syms[cur->next].id;
            const tok_merge *nm = tok_mergemap_get(&tok->merges, cur->id, right_id);
            if (nm && heap_push(e, nm, top.pos, cur->id, right_id) != 0) return -1;
        }
    }
    if (tok_ids_reserve(dst, n) != 0) return oom(e);
    for (size_t i = 0; i < n; i++)
        if (e->syms[i].len) dst->ids[dst->n++] = e->syms[i].id;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Word cache                                                                                 */

static void cache_free(word_cache *c) {
    if (!c) return;
    tok_strmap_free(&c->map);
    while (c->chunks) {
        struct cache_chunk *next = c->chunks->next;
        free(c->chunks);
        c->chunks = next;
    }
    free(c->ids);
    free(c->start);
    free(c->count);
    free(c);
}

static const char *cache_key_copy(word_cache *c, const char *w, size_t len) {
    if (!c->chunks || c->chunks->cap - c->chunks->used < len) {
        size_t cap = 1 << 16;
        struct cache_chunk *ch = malloc(sizeof *ch + cap);
        if (!ch) return NULL;
        ch->next = c->chunks;
        ch->used = 0;
        ch->cap = cap;
        c->chunks = ch;
    }
    char *dst = c->chunks->data + c->chunks->used;
    memcpy(dst, w, len);
    c->chunks->used += len;
    return dst;
}

/* BPE of a word through the cache when there is one. */
static int encode_word(enc *e, const char *w, size_t len) {
    word_cache *c = e->cache;
    if (!c || len > CACHE_MAX_WORD) return bpe_word(e, w, len, e->out);
    int32_t entry = tok_strmap_get(&c->map, w, len);
    if (entry < 0) {
        size_t before = e->out->n;
        if (bpe_word(e, w, len, e->out) != 0) return -1;
        size_t count = e->out->n - before;
        if (c->n_ids + count > c->cap_ids) {
            size_t cap = c->cap_ids ? c->cap_ids * 2 : 4096;
            while (cap < c->n_ids + count) cap *= 2;
            int32_t *g = realloc(c->ids, cap * sizeof *g);
            if (!g) return oom(e);
            c->ids = g;
            c->cap_ids = cap;
        }
        if (c->n_entries == c->cap_entries) {
            size_t cap = c->cap_entries ? c->cap_entries * 2 : 1024;
            uint32_t *s = realloc(c->start, cap * sizeof *s);
            if (!s) return oom(e);
            c->start = s;
            uint32_t *k = realloc(c->count, cap * sizeof *k);
            if (!k) return oom(e);
            c->count = k;
            c->cap_entries = cap;
        }
        const char *key = cache_key_copy(c, w, len);
        if (!key || tok_strmap_put(&c->map, key, len, (int32_t)c->n_entries) != 0) return oom(e);
        memcpy(c->ids + c->n_ids, e->out->ids + before, count * sizeof *c->ids);
        c->start[c->n_entries] = (uint32_t)c->n_ids;
        c->count[c->n_entries] = (uint32_t)count;
        c->n_entries++;
        c->n_ids += count;
        return 0;
    }
    size_t count = c->count[entry];
    if (tok_ids_reserve(e->out, count) != 0) return oom(e);
    memcpy(e->out->ids + e->out->n, c->ids + c->start[entry], count * sizeof *c->ids);
    e->out->n += count;
    return 0;
}

/* Whether the character s[0..clen) is a piece by itself. */
static bool char_is_piece(const tokenizer *tok, const char *s, size_t clen) {
    unsigned char c = (unsigned char)s[0];
    return c < 0x80 ? tok->ascii_id[c] >= 0 : tok_strmap_get(&tok->vocab, s, clen) >= 0;
}

/* No merge can span the boundary between characters a and b when both are pieces (so neither
 * becomes bytes or an unknown token) and no piece holds a followed by b: a merged symbol across
 * it would be a piece containing "ab". */
static bool can_cut(const tokenizer *tok, uint32_t a, bool a_piece, uint32_t b, bool b_piece) {
    return a_piece && b_piece && !tok_mergemap_get(&tok->bigrams, (int32_t)a, (int32_t)b);
}

#define LONG_WORD 256 /* bytes: past this a word is cut wherever can_cut allows */

/* A word that no metaspace cut shortened, cut further between any two characters that allow
 * it, so that BPE never works on more than a few symbols at once. */
static int encode_long_word(enc *e, const char *w, size_t len) {
    const tokenizer *tok = e->tok;
    size_t start = 0, i = 0;
    uint32_t prev = 0;
    bool prev_piece = false;
    while (i < len) {
        uint32_t cp;
        size_t n = tok_utf8_decode(w + i, len - i, &cp);
        bool piece = char_is_piece(tok, w + i, n);
        if (i > start && can_cut(tok, prev, prev_piece, cp, piece)) {
            if (encode_word(e, w + start, i - start) != 0) return -1;
            start = i;
        }
        prev = cp;
        prev_piece = piece;
        i += n;
    }
    return encode_word(e, w + start, len - start);
}

static int encode_cut_word(enc *e, const char *w, size_t len) {
    return len > LONG_WORD ? encode_long_word(e, w, len) : encode_word(e, w, len);
}

/* One pre-token, which Hugging Face hands to BPE whole. Cut into words where no merge can
 * reach across (can_cut), each merged on its own: the same ids, in linear time. Cuts are looked
 * for before each metaspace that ends a run of other characters (word starts), and inside long
 * words. */
static int encode_pretoken(enc *e, const char *w, size_t len) {
    const tokenizer *tok = e->tok;
    if (len == 0) return 0;
    if (tok->ignore_merges) {
        int32_t id = tok_strmap_get(&tok->vocab, w, len);
        if (id >= 0) return emit(e, id);
    }
    if (!tok->can_cut_words) return encode_word(e, w, len);
    static const char meta[] = "\xE2\x96\x81"; /* U+2581 */
    bool meta_piece = char_is_piece(tok, meta, 3);
    size_t word_start = 0, i = 0, prev_at = 0, prev_len = 0;
    uint32_t prev = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = tok_utf8_decode(w + i, len - i, &cp);
        if (cp == 0x2581 && i > word_start && prev != 0x2581 &&
            can_cut(tok, prev, char_is_piece(tok, w + prev_at, prev_len), cp, meta_piece)) {
            if (encode_cut_word(e, w + word_start, i - word_start) != 0) return -1;
            word_start = i;
        }
        prev = cp;
        prev_at = i;
        prev_len = n;
        i += n;
    }
    return encode_cut_word(e, w + word_start, len - word_start);
}

/* Metaspace pre-tokenizer on a normalized piece; first: the piece starts the input. */
static int pre_tokenize(enc *e, const char *s, size_t len, bool first) {
    const tokenizer *tok = e->tok;
    if (!tok->has_metaspace_pre) return encode_pretoken(e, s, len);
    tokenizer_text *p = &e->pre;
    p->len = 0;
    bool prepend = tok->pre_prepend == TOK_PREPEND_ALWAYS ||
                   (tok->pre_prepend == TOK_PREPEND_FIRST && first);
    /* The space replacement happens first, so a leading space counts as the prefix. */
    if (prepend && len > 0 && s[0] != ' ' &&
        !(len >= tok->pre_rep_len && !memcmp(s, tok->pre_rep_utf8, tok->pre_rep_len)))
        if (tok_text_append(p, tok->pre_rep_utf8, tok->pre_rep_len) != 0) return oom(e);
    if (replace_all(s, len, " ", 1, tok->pre_rep_utf8, tok->pre_rep_len, p) != 0) return oom(e);
    if (!tok->pre_split) return encode_pretoken(e, p->data, p->len);
    /* split: every replacement character starts a new pre-token (MergedWithNext). */
    size_t start = 0, i = 0;
    while (i < p->len) {
        if (i > start && p->len - i >= tok->pre_rep_len &&
            !memcmp(p->data + i, tok->pre_rep_utf8, tok->pre_rep_len)) {
            if (encode_pretoken(e, p->data + start, i - start) != 0) return -1;
            start = i;
        }
        i += tok_utf8_len((unsigned char)p->data[i]);
    }
    return encode_pretoken(e, p->data + start, p->len - start);
}

/* ---------------------------------------------------------------------------------------- */
/* Entry point                                                                                */

static void enc_free(enc *e) {
    free(e->splits);
    tokenizer_text_free(&e->norm);
    tokenizer_text_free(&e->pre);
    tokenizer_text_free(&e->tmp);
    free(e->syms);
    free(e->heap);
    cache_free(e->cache);
}

/* The pieces of one raw segment between non-normalized added tokens. */
static int encode_segment(enc *e, const char *s, size_t len, bool at_start) {
    const tokenizer *tok = e->tok;
    const char *text = s;
    size_t text_len = len;
    if (tok->n_norm) {
        e->norm.len = 0;
        if (tok_normalize(tok, s, len, &e->norm) != 0) return oom(e);
        text = e->norm.data ? e->norm.data : "";
        text_len = e->norm.len;
    }
    if (!tok->match_norm.n) return text_len ? pre_tokenize(e, text, text_len, at_start) : 0;
    /* Splits of the normalized text go after those of the raw text, which stay valid. */
    size_t first = e->n_splits;
    if (find_matches(e, &tok->match_norm, text, text_len) != 0) return -1;
    size_t last = e->n_splits;
    for (size_t k = first; k < last; k++) {
        split sp = e->splits[k];
        if (sp.id >= 0) {
            if (emit(e, sp.id) != 0) return -1;
        } else if (pre_tokenize(e, text + sp.start, sp.stop - sp.start,
                                at_start && sp.start == 0) != 0) {
            return -1;
        }
    }
    e->n_splits = first;
    return 0;
}

llava_status tokenizer_encode(const tokenizer *tok, const char *text, size_t len, unsigned flags,
                              tokenizer_ids *out, llava_error *err) {
    if (!tok || !out || (!text && len))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "tokenizer_encode: NULL argument");
    size_t bad = tok_utf8_check(text, len);
    if (bad < len)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "text to encode is not valid UTF-8 at byte offset %zu (byte 0x%02X)",
                               bad, (unsigned char)text[bad]);
    size_t n_before = out->n;
    enc e = {.tok = tok, .out = out, .err = err};
    if (len >= CACHE_MIN_INPUT) {
        e.cache = calloc(1, sizeof *e.cache);
        if (!e.cache || tok_strmap_init(&e.cache->map, 1024) != 0) {
            free(e.cache);
            e.cache = NULL; /* run without a cache rather than fail */
        }
    }
    int rc = 0;
    if (flags & TOKENIZER_ADD_SPECIAL)
        for (size_t i = 0; i < tok->n_prefix && rc == 0; i++) rc = emit(&e, tok->prefix_ids[i]);
    if (rc == 0) rc = find_matches(&e, &tok->match_raw, text ? text : "", len);
    size_t n_raw = e.n_splits;
    for (size_t k = 0; k < n_raw && rc == 0; k++) {
        split sp = e.splits[k];
        if (sp.id >= 0) rc = emit(&e, sp.id);
        else rc = encode_segment(&e, text + sp.start, sp.stop - sp.start, sp.start == 0);
    }
    if (flags & TOKENIZER_ADD_SPECIAL)
        for (size_t i = 0; i < tok->n_suffix && rc == 0; i++) rc = emit(&e, tok->suffix_ids[i]);
    enc_free(&e);
    if (rc != 0) {
        out->n = n_before;
        return err ? err->code : LLAVA_ERR_NO_MEMORY;
    }
    return LLAVA_OK;
}
