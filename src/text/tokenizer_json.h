/* A strict JSON scanner for the two large members of tokenizer.json
 * (model.vocab: ~32k-250k entries, model.merges: ~60k-500k pairs). Building a jansson tree of
 * them takes most of 100 ms; scanning them directly takes a few. The rest of the file, with
 * these members blanked out, still goes through jansson. */
#ifndef LLAVA_TEXT_TOKENIZER_JSON_H
#define LLAVA_TEXT_TOKENIZER_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

/* A cursor over a JSON text; errors name `what` and a byte offset. */
typedef struct tj_cursor {
    const char *s;
    size_t len, pos;
    const char *what;
    llava_error *err;
} tj_cursor;

/* Skips spaces (JSON whitespace only). */
static inline void tj_skip_ws(tj_cursor *c) {
    while (c->pos < c->len) {
        char ch = c->s[c->pos];
        if (ch != ' ' && ch != '\n' && ch != '\r' && ch != '\t') break;
        c->pos++;
    }
}
/* Expects the byte ch after spaces and consumes it; -1 (error set) otherwise. */
int tj_expect(tj_cursor *c, char ch);
/* Peeks the next non-space byte (0 at the end). */
char tj_peek(tj_cursor *c);
/* Parses a string (escapes decoded, UTF-8 checked) into out, replacing its contents. */
int tj_string(tj_cursor *c, tokenizer_text *out);
/* Parses an integer that fits int64 (a float with no fraction is refused, as HF does). */
int tj_int(tj_cursor *c, int64_t *out);
/* Skips any value, checking its syntax; depth limits nesting. */
int tj_skip_value(tj_cursor *c, int depth);
/* Skips a value by its brackets and quotes only, without checking what lies between: for text
 * that a strict parser reads afterwards. Never reads outside the text; -1 when unbalanced. */
int tj_skip_value_fast(tj_cursor *c);

#endif
