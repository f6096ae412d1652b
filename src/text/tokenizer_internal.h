/* The inside of a tokenizer, shared by the files of src/text/ that load, encode and decode it:
 * the immutable tables built from tokenizer.json, the hash maps over them, and the description of
 * the normalizer, pre-tokenizer and decoder pipelines. Nothing here is part of the API. */
#ifndef LLAVA_TEXT_TOKENIZER_INTERNAL_H
#define LLAVA_TEXT_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

/* ---------------------------------------------------------------------------------------- */
/* Hash maps (open addressing, power-of-two capacity, never deleted from).                   */

/* Bytes -> int32 value; keys point into memory that outlives the map (the tokenizer's pool). */
typedef struct tok_strmap {
    const char **keys; /* [cap], NULL = empty slot */
    uint32_t *lens;    /* [cap] */
    int32_t *vals;     /* [cap] */
    size_t cap, n;
} tok_strmap;

/* A merge: the pair of ids (left, right) -> its rank and the id it merges into. */
typedef struct tok_merge {
    uint64_t key; /* (uint64_t)left << 32 | right; UINT64_MAX = empty slot */
    int32_t rank;
    int32_t id;
} tok_merge;

typedef struct tok_mergemap {
    tok_merge *slots; /* [cap] */
    size_t cap, n;
} tok_mergemap;

uint64_t tok_hash_bytes(const char *s, size_t len);
int tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
/* Inserts or overwrites; returns 0, or -1 when out of memory. */
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val);
/* The value of key, or -1. */
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len);

int tok_mergemap_init(tok_mergemap *m, size_t expected);
void tok_mergemap_free(tok_mergemap *m);
/* Keeps the first insertion of a pair (the lowest rank), as Hugging Face does; returns 0, or -1
 * when out of memory. */
int tok_mergemap_put(tok_mergemap *m, int32_t left, int32_t right, int32_t rank, int32_t id);
const tok_merge *tok_mergemap_get(const tok_mergemap *m, int32_t left, int32_t right);

/* ---------------------------------------------------------------------------------------- */
/* Unicode classes used by added-token matching (tokenizer_unicode.c).                       */

/* Rust regex \w: Alphabetic, Mark, Decimal_Number, Connector_Punctuation, Join_Control. */
bool tok_is_word_char(uint32_t cp);
/* Rust char::is_whitespace / regex \s: the White_Space property. */
bool tok_is_space(uint32_t cp);

/* Decodes the UTF-8 character at s (len > 0 bytes available, already validated): returns its
 * byte length and sets *cp. */
static inline size_t tok_utf8_decode(const char *s, size_t len, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80 || len < 2) {
        *cp = u[0];
        return 1;
    }
    if (u[0] < 0xE0) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if (u[0] < 0xF0 || len < 4) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}

/* Bytes of the UTF-8 character whose lead byte is b (1 for stray continuation bytes). */
static inline size_t tok_utf8_len(unsigned char b) {
    return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

/* Offset of the first invalid UTF-8 byte of s (overlong forms, surrogates and code points above
 * U+10FFFF are invalid, as in Rust's str), or len when all of s is valid. */
size_t tok_utf8_check(const char *s, size_t len);

/* ---------------------------------------------------------------------------------------- */
/* The pipeline descriptions.                                                                 */

typedef enum tok_norm_kind { TOK_NORM_PREPEND, TOK_NORM_REPLACE } tok_norm_kind;

/* One normalizer step. Prepend: `content` before a non-empty string. Replace: every
 * non-overlapping occurrence of `pattern`, left to right, by `content`. */
typedef struct tok_norm_step {
    tok_norm_kind kind;
    char *pattern, *content;
    size_t pattern_len, content_len;
} tok_norm_step;

typedef enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend;

typedef enum tok_dec_kind {
    TOK_DEC_REPLACE,       /* pattern -> content in each token (in the whole text after Fuse) */
    TOK_DEC_BYTE_FALLBACK, /* runs of <0xNN> tokens -> their bytes, or U+FFFD per byte */
    TOK_DEC_FUSE,          /* all tokens -> one */
    TOK_DEC_STRIP,         /* up to `start` leading and `stop` trailing `strip_char`s off each token */
    TOK_DEC_METASPACE,     /* replacement -> ' ', and dropped in the first token unless NEVER */
} tok_dec_kind;

typedef struct tok_dec_step {
    tok_dec_kind kind;
    char *pattern, *content; /* REPLACE */
    size_t pattern_len, content_len;
    uint32_t ch;             /* STRIP: the character; METASPACE: the replacement */
    size_t start, stop;      /* STRIP */
    tok_prepend prepend;     /* METASPACE */
} tok_dec_step;

/* An added token (tokenizer.json "added_tokens", updated by tokenizer_config.json). */
typedef struct tok_added {
    int32_t id;
    const char *content; /* in the pool */
    size_t content_len;
    char *pattern; /* what is matched: the content, or its normalized form when `normalized` */
    size_t pattern_len;
    bool special, lstrip, rstrip, single_word, normalized;
} tok_added;

/* Patterns of one matching pass (raw text, or normalized text), leftmost-longest. */
typedef struct tok_matcher {
    int32_t *order;        /* indices into tok->added, grouped by first byte, longest first */
    uint32_t first[257];   /* order[first[b] .. first[b+1]) start with byte b */
    size_t n;
} tok_matcher;

/* Per-id facts packed for the encode and decode loops. */
enum {
    TOK_ID_PRESENT = 1u << 0, /* the id has a piece */
    TOK_ID_SPECIAL = 1u << 1, /* a special added token */
    TOK_ID_ADDED = 1u << 2,   /* an added token (piece from added_tokens) */
    TOK_ID_BYTE = 1u << 3,    /* the piece is "<0xNN>" (ByteFallback decodes it to a byte) */
};

struct tokenizer {
    /* Pieces: piece of id i is pool + piece_off[i], piece_len[i] bytes, NUL-terminated. */
    char *pool;
    size_t pool_len, pool_cap;
    uint32_t *piece_off; /* [n_ids] */
    uint32_t *piece_len; /* [n_ids] */
    uint8_t *id_flags;   /* [n_ids] TOK_ID_* */
    uint8_t *id_byte;    /* [n_ids] the byte of a TOK_ID_BYTE piece */
    int32_t n_ids;       /* largest id + 1 */
    int32_t model_vocab_size; /* entries of model.vocab */

    tok_strmap vocab;   /* model vocabulary: piece -> id */
    tok_strmap added_by_content; /* added tokens: content -> id */
    tok_mergemap merges;

    /* BPE model options. */
    int32_t unk_id;          /* model.unk_token's id, or -1 */
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256];    /* id of "<0xNN>", or -1 */
    int32_t ascii_id[128];   /* id of each one-byte character, or -1 (encode fast path) */

    /* Splitting one pre-token into independent words before BPE is exact where no merge can
     * span the cut: between two characters that are pieces themselves and never adjacent in any
     * piece (see tokenizer_encode.c). */
    bool can_cut_words;
    tok_mergemap bigrams; /* (c1 << 32 | c2) for adjacent code points of every piece */

    tok_added *added;
    size_t n_added;
    tok_matcher match_raw;  /* added tokens with normalized=false, on the raw text */
    tok_matcher match_norm; /* added tokens with normalized=true, on normalized pieces */

    tok_norm_step *norm; /* normalizer steps, in order; none when n_norm == 0 */
    size_t n_norm;

    bool has_metaspace_pre; /* pre_tokenizer Metaspace */
    uint32_t pre_replacement;
    char pre_rep_utf8[5];
    size_t pre_rep_len;
    tok_prepend pre_prepend;
    bool pre_split;

    tok_dec_step *dec; /* decoder steps; has_decoder false means join with " " */
    size_t n_dec;
    bool has_decoder;

    /* Post-processing (TOKENIZER_ADD_SPECIAL): ids before and after the sequence. */
    int32_t *prefix_ids, *suffix_ids;
    size_t n_prefix, n_suffix;

    int32_t bos_id, eos_id, pad_id;
    bool adds_bos, adds_eos;
    bool legacy;
    char *chat_template;
};

/* Appends to a tokenizer_text; 0, or -1 when out of memory. */
int tok_text_append(tokenizer_text *t, const char *s, size_t len);
/* Makes room for `more` ids; 0, or -1 when out of memory. */
int tok_ids_reserve(tokenizer_ids *ids, size_t more);

/* Builds the added-token matchers once tok->added is final (tokenizer_encode.c). */
int tok_build_matchers(tokenizer *tok);
/* Applies the normalizer to s (tokenizer_encode.c); the result is appended to out. */
int tok_normalize(const tokenizer *tok, const char *s, size_t len, tokenizer_text *out);

#endif
