/* The strict JSON scanner of tokenizer_json.h: RFC 8259 syntax (strings with escapes and
 * surrogate pairs, UTF-8 checked, no control characters; numbers; literals), with errors that
 * name the file and the byte offset. */
#include "text/tokenizer_json.h"

#include <stdio.h>
#include <string.h>

#include "text/tokenizer_internal.h"

#define MAX_DEPTH 64

static int fail(tj_cursor *c, const char *msg) {
    llava_error_set(c->err, LLAVA_ERR_FORMAT, "%s: invalid JSON at byte offset %zu: %s", c->what,
                    c->pos, msg);
    return -1;
}

char tj_peek(tj_cursor *c) {
    tj_skip_ws(c);
    return c->pos < c->len ? c->s[c->pos] : 0;
}

int tj_expect(tj_cursor *c, char ch) {
    if (tj_peek(c) != ch) {
        char msg[32];
        snprintf(msg, sizeof msg, "expected '%c'", ch);
        return fail(c, msg);
    }
    c->pos++;
    return 0;
}

static int hex4(tj_cursor *c, uint32_t *v) {
    if (c->len - c->pos < 4) return fail(c, "truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char h = c->s[c->pos + (size_t)i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
              : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return fail(c, "bad \\u escape");
        *v = *v << 4 | (uint32_t)d;
    }
    c->pos += 4;
    return 0;
}

static int put_cp(tokenizer_text *out, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    return tok_text_append(out, b, n);
}

int tj_string(tj_cursor *c, tokenizer_text *out) {
    if (out) out->len = 0;
    if (tj_expect(c, '"') != 0) return -1;
    for (;;) {
        /* The plain run up to the next quote, backslash or control byte, copied at once. */
        size_t run = c->pos;
        while (c->pos < c->len) {
            unsigned char ch = (unsigned char)c->s[c->pos];
            if (ch == '"' || ch == '\\' || ch < 0x20) break;
            c->pos++;
        }
        size_t n = c->pos - run;
        if (n) {
            size_t bad = tok_utf8_check(c->s + run, n);
            if (bad < n) {
                c->pos = run + bad;
                return fail(c, "invalid UTF-8 in a string");
            }
            if (out && tok_text_append(out, c->s + run, n)) goto oom;
        }
        if (c->pos >= c->len) return fail(c, "unterminated string");
        char ch = c->s[c->pos];
        if (ch == '"') {
            c->pos++;
            if (out && tok_text_append(out, "", 0)) goto oom;
            return 0;
        }
        if (ch != '\\') return fail(c, "control character in a string");
        if (++c->pos >= c->len) return fail(c, "unterminated string");
        char e = c->s[c->pos++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (out && tok_text_append(out, &map[simple - "\"\\/bfnrt"], 1)) goto oom;
            continue;
        }
        if (e != 'u') {
            c->pos--;
            return fail(c, "bad escape");
        }
        uint32_t cp;
        if (hex4(c, &cp)) return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(c, "lone low surrogate");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (c->len - c->pos < 2 || c->s[c->pos] != '\\' || c->s[c->pos + 1] != 'u')
                return fail(c, "lone high surrogate");
            c->pos += 2;
            if (hex4(c, &lo)) return -1;
            if (lo < 0xDC00 || lo > 0xDFFF) return fail(c, "bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (out && put_cp(out, cp)) goto oom;
    }
oom:
    llava_error_set(c->err, LLAVA_ERR_NO_MEMORY, "out of memory reading %s", c->what);
    return -1;
}

/* Scans a number's syntax; sets *is_int when it has no fraction or exponent. */
static int scan_number(tj_cursor *c, int *is_int) {
    size_t p = c->pos;
    const char *s = c->s;
    *is_int = 1;
    if (p < c->len && s[p] == '-') p++;
    if (p >= c->len || s[p] < '0' || s[p] > '9') return fail(c, "bad number");
    if (s[p] == '0') p++;
    else while (p < c->len && s[p] >= '0' && s[p] <= '9') p++;
    if (p < c->len && s[p] == '.') {
        *is_int = 0;
        p++;
        if (p >= c->len || s[p] < '0' || s[p] > '9') return fail(c, "bad number");
        while (p < c->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    if (p < c->len && (s[p] == 'e' || s[p] == 'E')) {
        *is_int = 0;
        p++;
        if (p < c->len && (s[p] == '+' || s[p] == '-')) p++;
        if (p >= c->len || s[p] < '0' || s[p] > '9') return fail(c, "bad number");
        while (p < c->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    c->pos = p;
    return 0;
}

int tj_int(tj_cursor *c, int64_t *out) {
    tj_skip_ws(c);
    size_t start = c->pos;
    int is_int;
    if (scan_number(c, &is_int)) return -1;
    if (!is_int) {
        c->pos = start;
        return fail(c, "expected an integer");
    }
    const char *s = c->s + start;
    size_t n = c->pos - start, i = 0;
    int neg = s[0] == '-';
    if (neg) i++;
    uint64_t v = 0;
    for (; i < n; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10 || v * 10 + d > (uint64_t)INT64_MAX + (uint64_t)neg) {
            c->pos = start;
            return fail(c, "integer out of range");
        }
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int literal(tj_cursor *c, const char *word) {
    size_t n = strlen(word);
    if (c->len - c->pos < n || memcmp(c->s + c->pos, word, n)) return fail(c, "bad literal");
    c->pos += n;
    return 0;
}

int tj_skip_value(tj_cursor *c, int depth) {
    if (depth > MAX_DEPTH) return fail(c, "nested too deeply");
    int is_int;
    switch (tj_peek(c)) {
    case '"':
        return tj_string(c, NULL);
    case '{':
        c->pos++;
        if (tj_peek(c) == '}') return c->pos++, 0;
        for (;;) {
            if (tj_string(c, NULL) || tj_expect(c, ':') || tj_skip_value(c, depth + 1)) return -1;
            char ch = tj_peek(c);
            c->pos++;
            if (ch == '}') return 0;
            if (ch != ',') return c->pos--, fail(c, "expected ',' or '}'");
        }
    case '[':
        c->pos++;
        if (tj_peek(c) == ']') return c->pos++, 0;
        for (;;) {
            if (tj_skip_value(c, depth + 1)) return -1;
            char ch = tj_peek(c);
            c->pos++;
            if (ch == ']') return 0;
            if (ch != ',') return c->pos--, fail(c, "expected ',' or ']'");
        }
    case 't':
        return literal(c, "true");
    case 'f':
        return literal(c, "false");
    case 'n':
        return literal(c, "null");
    case 0:
        return fail(c, "unexpected end");
    default:
        return scan_number(c, &is_int);
    }
}

/* Bytes that matter to tj_skip_value_fast: 1 outside strings, 2 inside them. */
static const unsigned char fast_class[256] = {
    ['"'] = 3, ['\\'] = 2, ['{'] = 1, ['['] = 1, ['}'] = 1, [']'] = 1,
};

int tj_skip_value_fast(tj_cursor *c) {
    const unsigned char *s = (const unsigned char *)c->s;
    size_t depth = 0, p, len = c->len;
    tj_skip_ws(c);
    p = c->pos;
    if (p >= len) return fail(c, "unexpected end");
    if (s[p] != '{' && s[p] != '[' && s[p] != '"') return tj_skip_value(c, 1);
    for (;;) {
        while (p < len && !(fast_class[s[p]] & 1)) p++;
        if (p >= len) break;
        unsigned char ch = s[p++];
        if (ch == '"') {
            for (;;) {
                while (p < len && !(fast_class[s[p]] & 2)) p++;
                if (p >= len) break;
                if (s[p] == '"') break;
                p += 2; /* a backslash and the byte it escapes */
            }
            if (p >= len) break;
            p++;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (depth == 0) {
            break;
        } else {
            depth--;
        }
        if (depth == 0) {
            c->pos = p;
            return 0;
        }
    }
    return fail(c, "unbalanced brackets or quotes");
}
