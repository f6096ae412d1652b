/* The tokenizer's behaviour case by case: BPE rank order and byte fallback on small hand-made
 * tokenizers, added-token flags (single_word, lstrip/rstrip by Unicode White_Space, normalized),
 * Metaspace split and decoding as the Rust library defines them, invalid UTF-8, streaming,
 * BOS/EOS rules, malformed files with the exact error, and encoding from several threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "text/tokenizer.h"

#define MODEL_DIR LLAVA_TEST_DATA "/llava-1.5-7b-hf"
#define META "\xE2\x96\x81" /* U+2581, the SentencePiece space */

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                    */

static tokenizer *load_llava(void) {
    tokenizer *tok;
    llava_error err;
    if (tokenizer_load(MODEL_DIR, &tok, &err) != LLAVA_OK) fail_msg("%s", err.message);
    return tok;
}

static tokenizer *load_json_text(const char *json, const char *config) {
    tokenizer *tok;
    llava_error err;
    if (tokenizer_load_buffers(json, strlen(json), config, config ? strlen(config) : 0, "test.json",
                               &tok, &err) != LLAVA_OK)
        fail_msg("load: %s", err.message);
    return tok;
}

/* Expects loading to fail with code and a message containing part. */
static void expect_load_error(const char *json, const char *config, llava_status code,
                              const char *part) {
    tokenizer *tok = (tokenizer *)1;
    llava_error err;
    llava_status st = tokenizer_load_buffers(json, strlen(json), config,
                                             config ? strlen(config) : 0, "test.json", &tok, &err);
    if (st != code || !strstr(err.message, part))
        fail_msg("expected %s with \"%s\", got %s: \"%s\"", llava_status_name(code), part,
                 llava_status_name(st), err.message);
    assert_null(tok);
}

/* Encodes and compares with the n ids that follow. */
static void expect_ids(const tokenizer *tok, const char *text, unsigned flags, size_t n, ...) {
    tokenizer_ids got = {0};
    llava_error err;
    if (tokenizer_encode(tok, text, strlen(text), flags, &got, &err) != LLAVA_OK)
        fail_msg("encode \"%s\": %s", text, err.message);
    va_list ap;
    va_start(ap, n);
    int ok = got.n == n;
    for (size_t i = 0; i < n; i++) {
        int32_t want = va_arg(ap, int32_t);
        if (ok && got.ids[i] != want) ok = 0;
    }
    va_end(ap);
    if (!ok) {
        fprintf(stderr, "text \"%s\": got", text);
        for (size_t i = 0; i < got.n; i++) fprintf(stderr, " %d", got.ids[i]);
        fprintf(stderr, "\n");
        fail_msg("ids differ for \"%s\" (%zu ids, expected %zu)", text, got.n, n);
    }
    tokenizer_ids_free(&got);
}

/* Decodes whole and streamed; both must equal want. */
static void expect_decode(const tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                          const char *want) {
    tokenizer_text whole = {0}, streamed = {0};
    llava_error err;
    assert_int_equal(tokenizer_decode(tok, ids, n, flags, &whole, &err), LLAVA_OK);
    tokenizer_stream *s = tokenizer_stream_new(tok, flags);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tokenizer_stream_push(s, ids[i], &streamed, &err), LLAVA_OK);
    assert_int_equal(tokenizer_stream_finish(s, &streamed, &err), LLAVA_OK);
    tokenizer_stream_free(s);
    const char *w = whole.len ? whole.data : "", *st = streamed.len ? streamed.data : "";
    if (strcmp(w, want) || strcmp(st, want))
        fail_msg("decode: want \"%s\", whole \"%s\", streamed \"%s\"", want, w, st);
    tokenizer_text_free(&whole);
    tokenizer_text_free(&streamed);
}

static int32_t id_of(const tokenizer *tok, const char *piece) {
    int32_t id = tokenizer_token_id(tok, piece);
    if (id < 0) fail_msg("no piece \"%s\"", piece);
    return id;
}

/* A small tokenizer: vocab, merges and the rest given as JSON fragments. */
static char *small_json(const char *vocab, const char *merges, const char *model_extra,
                        const char *rest) {
    static const char fmt[] =
        "{\"version\":\"1.0\",\"added_tokens\":[],%s"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{%s},\"merges\":[%s]%s}}";
    size_t n = strlen(fmt) + strlen(vocab) + strlen(merges) + strlen(model_extra) + strlen(rest);
    char *s = malloc(n + 1);
    snprintf(s, n + 1, fmt, rest, vocab, merges, model_extra);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* BPE semantics on small tokenizers                                                          */

static void test_merge_by_rank_not_position(void **state) {
    (void)state;
    /* "b c" has the lower rank, so "abc" merges bc first and then a+bc, never ab+c. */
    char *j = small_json("\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,\"xabc\":6,\"x\":7",
                         "\"b c\",\"a b\",\"a bc\",\"ab c\"", "", "");
    tokenizer *tok = load_json_text(j, NULL);
    expect_ids(tok, "abc", 0, 1, 5);
    expect_ids(tok, "ab", 0, 1, 3);
    expect_ids(tok, "abab", 0, 2, 3, 3);
    expect_ids(tok, "xabc", 0, 2, 7, 5); /* "x abc" is no merge */
    tokenizer_free(tok);
    free(j);
    /* Equal ranks can only be the same pair: the leftmost goes first ("aaa" -> aa a). */
    j = small_json("\"a\":0,\"aa\":1", "[\"a\",\"a\"]", "", "");
    tok = load_json_text(j, NULL);
    expect_ids(tok, "aaa", 0, 2, 1, 0);
    expect_ids(tok, "aaaa", 0, 2, 1, 1);
    tokenizer_free(tok);
    free(j);
}

static void test_byte_fallback_and_unknown(void **state) {
    (void)state;
    /* é is C3 A9: both byte pieces exist, so it becomes them; ü (C3 BC) lacks <0xBC>, so it is
     * unknown; fused with the next unknown character when fuse_unk. */
    char *j = small_json("\"<unk>\":0,\"a\":1,\"<0xC3>\":2,\"<0xA9>\":3",
                         "", ",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"fuse_unk\":true", "");
    tokenizer *tok = load_json_text(j, NULL);
    expect_ids(tok, "a\xC3\xA9" "a", 0, 4, 1, 2, 3, 1);
    expect_ids(tok, "a\xC3\xBC\xC3\xBC" "a", 0, 3, 1, 0, 1);
    tokenizer_free(tok);
    free(j);
    j = small_json("\"<unk>\":0,\"a\":1", "", ",\"unk_token\":\"<unk>\",\"fuse_unk\":false", "");
    tok = load_json_text(j, NULL);
    expect_ids(tok, "bba", 0, 3, 0, 0, 1);
    tokenizer_free(tok);
    free(j);
    /* No unknown token: Hugging Face drops the character. */
    j = small_json("\"a\":0", "", "", "");
    tok = load_json_text(j, NULL);
    expect_ids(tok, "xax", 0, 1, 0);
    tokenizer_free(tok);
    free(j);
}

static void test_merges_string_and_pair_forms(void **state) {
    (void)state;
    char *a = small_json("\"a\":0,\"b\":1,\"ab\":2", "\"#version: 0.2\",\"a b\"", "", "");
    char *b = small_json("\"a\":0,\"b\":1,\"ab\":2", "[\"a\",\"b\"]", "", "");
    tokenizer *ta = load_json_text(a, NULL), *tb = load_json_text(b, NULL);
    expect_ids(ta, "ab", 0, 1, 2);
    expect_ids(tb, "ab", 0, 1, 2);
    tokenizer_free(ta);
    tokenizer_free(tb);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------------------------------- */
/* Added tokens                                                                               */

static const char added_base[] =
    "\"added_tokens\":[{\"id\":9,\"content\":\"hi\",\"single_word\":true,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"special\":false},"
    "{\"id\":10,\"content\":\"<x>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,"
    "\"normalized\":false,\"special\":true},"
    "{\"id\":11,\"content\":\"<x><y>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
    "\"normalized\":false,\"special\":true}],";

static char *added_json(void) {
    /* Nine characters; the added tokens take the next ids (9, 10, 11) as Hugging Face gives
     * them. Other characters have no piece and no unknown token, so they vanish. */
    return small_json("\"h\":0,\"i\":1,\"t\":2,\"s\":3,\" \":4,\"<\":5,\">\":6,\"x\":7,\"y\":8",
                      "", "", "");
}

static tokenizer *load_added(void) {
    char *base = added_json();
    /* Put the added tokens in (small_json writes an empty list first). */
    const char *at = strstr(base, "\"added_tokens\":[],");
    size_t n = strlen(base) + sizeof added_base;
    char *j = malloc(n);
    snprintf(j, n, "%.*s%s%s", (int)(at - base), base, added_base, at + strlen("\"added_tokens\":[],"));
    tokenizer *tok = load_json_text(j, NULL);
    free(base);
    free(j);
    return tok;
}

static void test_added_single_word(void **state) {
    (void)state;
    tokenizer *tok = load_added();
    expect_ids(tok, "hi", 0, 1, 9);
    expect_ids(tok, "hi hi", 0, 3, 9, 4, 9);
    expect_ids(tok, "hi.", 0, 1, 9);
    /* Inside a word ("this"), or followed by a word character: not the token. */
    expect_ids(tok, "this", 0, 4, 2, 0, 1, 3);
    expect_ids(tok, "hit", 0, 3, 0, 1, 2);
    /* Word characters are Unicode's (\\w): é and the combining acute accent count. */
    expect_ids(tok, "\xC3\xA9hi", 0, 2, 0, 1);
    expect_ids(tok, "hi\xCC\x81", 0, 2, 0, 1);
    expect_ids(tok, "\xE2\x80\x94hi", 0, 1, 9); /* an em dash is not */
    tokenizer_free(tok);
}

static void test_added_lstrip_rstrip_unicode_space(void **state) {
    (void)state;
    tokenizer *tok = load_added();
    /* The spaces around <x> (ASCII, U+3000 ideographic, U+0085 next line) belong to it. */
    expect_ids(tok, "s  <x>  s", 0, 3, 3, 10, 3);
    expect_ids(tok, "s\xE3\x80\x80<x>\xC2\x85s", 0, 3, 3, 10, 3);
    /* U+FEFF is not White_Space: it stays with "s" (and, having no piece, vanishes). */
    expect_ids(tok, "s\xEF\xBB\xBF<x>", 0, 2, 3, 10);
    /* Leftmost-longest: <x><y> wins over <x> at the same place. */
    expect_ids(tok, "<x><y>", 0, 1, 11);
    expect_ids(tok, "<x> <y>", 0, 4, 10, 5, 8, 6);
    tokenizer_free(tok);
}

static void test_added_normalized_token(void **state) {
    (void)state;
    /* With the legacy LLaMA normalizer, a normalized added token matches its normalized form
     * (here "▁<foo>") inside the normalized text, so only after a space or at the start. */
    tokenizer *base = load_llava();
    int32_t x = id_of(base, META "x");
    tokenizer_free(base);
    char *cfg =
        "{\"add_bos_token\":false,\"added_tokens_decoder\":{\"32002\":{\"content\":\"<foo>\","
        "\"lstrip\":false,\"normalized\":true,\"rstrip\":false,\"single_word\":false,"
        "\"special\":false}}}";
    char *json;
    size_t len;
    llava_error err;
    FILE *fp = fopen(MODEL_DIR "/tokenizer.json", "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    len = (size_t)ftell(fp);
    rewind(fp);
    json = malloc(len + 1);
    assert_int_equal(fread(json, 1, len, fp), len);
    fclose(fp);
    tokenizer *tok;
    assert_int_equal(tokenizer_load_buffers(json, len, cfg, strlen(cfg), "t", &tok, &err), LLAVA_OK);
    assert_int_equal(tokenizer_token_id(tok, "<foo>"), 32002);
    assert_int_equal(tokenizer_vocab_size(tok), 32003);
    expect_ids(tok, "x <foo>", 0, 2, x, 32002);
    expect_ids(tok, "<foo>", 0, 1, 32002);
    /* "x<foo>" normalizes to "▁x<foo>": no "▁<foo>" in it. */
    tokenizer_ids ids = {0};
    assert_int_equal(tokenizer_encode(tok, "x<foo>", 6, 0, &ids, &err), LLAVA_OK);
    assert_true(ids.n >= 2);
    for (size_t i = 0; i < ids.n; i++) assert_int_not_equal(ids.ids[i], 32002);
    tokenizer_ids_free(&ids);
    tokenizer_free(tok);
    free(json);
}

/* ---------------------------------------------------------------------------------------- */
/* The llava tokenizer                                                                        */

static void test_llava_accessors(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    assert_int_equal(tokenizer_vocab_size(tok), 32002);
    assert_int_equal(tokenizer_token_id(tok, "<image>"), 32000);
    assert_int_equal(tokenizer_token_id(tok, "<pad>"), 32001);
    assert_int_equal(tokenizer_token_id(tok, META "the"), 278);
    assert_int_equal(tokenizer_token_id(tok, "no such piece"), -1);
    assert_string_equal(tokenizer_token_text(tok, 13), "<0x0A>");
    assert_string_equal(tokenizer_token_text(tok, 32000), "<image>");
    assert_null(tokenizer_token_text(tok, -1));
    assert_null(tokenizer_token_text(tok, 32002));
    assert_true(tokenizer_is_special(tok, 32000));
    assert_true(tokenizer_is_special(tok, 1));
    assert_false(tokenizer_is_special(tok, 278));
    assert_int_equal(tokenizer_bos_id(tok), 1);
    assert_int_equal(tokenizer_eos_id(tok), 2);
    assert_int_equal(tokenizer_unk_id(tok), 0);
    assert_int_equal(tokenizer_pad_id(tok), 32001);
    assert_true(tokenizer_adds_bos(tok));
    assert_false(tokenizer_adds_eos(tok));
    assert_non_null(tokenizer_chat_template(tok));
    assert_non_null(strstr(tokenizer_chat_template(tok), "ASSISTANT:"));
    tokenizer_free(tok);
    /* A folder with chat_template.json (and no .jinja) gives that template. */
    llava_error err;
    assert_int_equal(tokenizer_load(LLAVA_FIXTURES "/tiny-f32/model", &tok, &err), LLAVA_OK);
    assert_non_null(tokenizer_chat_template(tok));
    assert_non_null(strstr(tokenizer_chat_template(tok), "message['role'].upper()"));
    tokenizer_free(tok);
}

static void test_encode_appends_and_prompt(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    tokenizer_ids ids = {0};
    llava_error err;
    const char *p = "USER: <image>\nWhat is shown in this image? ASSISTANT:";
    assert_int_equal(tokenizer_encode(tok, p, strlen(p), TOKENIZER_ADD_SPECIAL, &ids, &err), LLAVA_OK);
    static const int32_t want[] = {1, 3148, 1001, 29901, 29871, 32000, 29871, 13, 5618, 338,
                                   4318, 297, 445, 1967, 29973, 319, 1799, 9047, 13566, 29901};
    assert_int_equal(ids.n, 20);
    assert_memory_equal(ids.ids, want, sizeof want);
    /* A second call appends. */
    assert_int_equal(tokenizer_encode(tok, "hi", 2, 0, &ids, &err), LLAVA_OK);
    assert_int_equal(ids.n, 21);
    assert_int_equal(ids.ids[20], 7251);
    tokenizer_ids_free(&ids);
    tokenizer_free(tok);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    static const struct {
        const char *text;
        size_t len, offset;
    } bad[] = {
        {"ab\xFF", 3, 2},          {"\xC0\x80", 2, 0},         /* overlong NUL */
        {"x\xED\xA0\x80", 4, 1},   /* surrogate */           {"\xF4\x90\x80\x80", 4, 0},
        {"ok\xE2\x82", 4, 2},      /* truncated */            {"\x80", 1, 0},
        {"\xE0\x80\xAF", 3, 0},    /* overlong / */          {"a\xF8\x88\x80\x80\x80", 6, 1},
    };
    tokenizer_ids ids = {0};
    llava_error err;
    assert_int_equal(tokenizer_encode(tok, "x", 1, 0, &ids, &err), LLAVA_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tokenizer_encode(tok, bad[i].text, bad[i].len, 0, &ids, &err),
                         LLAVA_ERR_INVALID_ARGUMENT);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].offset);
        if (!strstr(err.message, want)) fail_msg("case %zu: \"%s\"", i, err.message);
        assert_int_equal(ids.n, 1); /* left as it was */
    }
    /* NUL and the largest code point are valid. */
    assert_int_equal(tokenizer_encode(tok, "a\0b\xF4\x8F\xBF\xBF", 7, 0, &ids, &err), LLAVA_OK);
    tokenizer_ids_free(&ids);
    tokenizer_free(tok);
}

static void test_decode_rules(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    int32_t hello = id_of(tok, META "hello"), sp = id_of(tok, META);
    /* One leading space of the whole text goes, not of each token. */
    expect_decode(tok, (int32_t[]){hello, hello}, 2, 0, "hello hello");
    expect_decode(tok, (int32_t[]){sp, hello}, 2, 0, " hello");
    expect_decode(tok, (int32_t[]){1, hello}, 2, 0, "<s> hello");
    expect_decode(tok, (int32_t[]){1, hello, 2}, 3, TOKENIZER_SKIP_SPECIAL, "hello");
    /* Byte runs: valid UTF-8 is fused; an invalid run becomes one U+FFFD per byte, even the
     * bytes of a valid character inside it (Hugging Face's ByteFallback). */
    int32_t b41 = id_of(tok, "<0x41>"), bE4 = id_of(tok, "<0xE4>"), bBD = id_of(tok, "<0xBD>"),
            bA0 = id_of(tok, "<0xA0>"), bFF = id_of(tok, "<0xFF>");
    expect_decode(tok, (int32_t[]){bE4, bBD, bA0, hello}, 4, 0, "\xE4\xBD\xA0 hello");
    expect_decode(tok, (int32_t[]){bE4, bBD, hello}, 3, 0, "\xEF\xBF\xBD\xEF\xBF\xBD hello");
    expect_decode(tok, (int32_t[]){b41, bFF}, 2, 0, "\xEF\xBF\xBD\xEF\xBF\xBD");
    expect_decode(tok, (int32_t[]){bE4, bBD}, 2, 0, "\xEF\xBF\xBD\xEF\xBF\xBD");
    expect_decode(tok, NULL, 0, 0, "");
    tokenizer_text t = {0};
    llava_error err;
    assert_int_equal(tokenizer_decode(tok, (int32_t[]){5, 40000}, 2, 0, &t, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "token id 40000 (at position 1)"));
    tokenizer_text_free(&t);
    tokenizer_free(tok);
}

static void test_stream_is_prompt(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    int32_t hello = id_of(tok, META "hello"), world = id_of(tok, META "world");
    tokenizer_stream *s = tokenizer_stream_new(tok, TOKENIZER_SKIP_SPECIAL);
    tokenizer_text out = {0};
    llava_error err;
    /* Text comes out as soon as it is final: the first token without its leading space. */
    assert_int_equal(tokenizer_stream_push(s, 1, &out, &err), LLAVA_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(tokenizer_stream_push(s, hello, &out, &err), LLAVA_OK);
    assert_string_equal(out.data, "hello");
    assert_int_equal(tokenizer_stream_push(s, world, &out, &err), LLAVA_OK);
    assert_string_equal(out.data, "hello world");
    /* A byte run waits for the token after it (an invalid run changes every byte of it). */
    int32_t emoji[4] = {243, 162, 155, 131}; /* F0 9F 98 80 */
    for (int i = 0; i < 4; i++) assert_int_equal(tokenizer_stream_push(s, emoji[i], &out, &err), LLAVA_OK);
    assert_string_equal(out.data, "hello world");
    assert_int_equal(tokenizer_stream_finish(s, &out, &err), LLAVA_OK);
    assert_string_equal(out.data, "hello world\xF0\x9F\x98\x80");
    /* finish resets: the next sequence strips its own leading space again. */
    out.len = 0;
    assert_int_equal(tokenizer_stream_push(s, world, &out, &err), LLAVA_OK);
    assert_string_equal(out.data, "world");
    assert_int_equal(tokenizer_stream_push(s, -3, &out, &err), LLAVA_ERR_INVALID_ARGUMENT);
    /* reset drops a held byte run and the sequence's state without output. */
    assert_int_equal(tokenizer_stream_push(s, 243, &out, &err), LLAVA_OK);
    tokenizer_stream_reset(s);
    out.len = 0;
    assert_int_equal(tokenizer_stream_push(s, world, &out, &err), LLAVA_OK);
    assert_int_equal(tokenizer_stream_finish(s, &out, &err), LLAVA_OK);
    assert_string_equal(out.data, "world");
    tokenizer_stream_free(s);
    tokenizer_text_free(&out);
    tokenizer_free(tok);
}

/* ---------------------------------------------------------------------------------------- */
/* Metaspace (Mistral-style files)                                                            */

static char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    rewind(fp);
    char *s = malloc(*len + 1);
    assert_int_equal(fread(s, 1, *len, fp), *len);
    s[*len] = '\0';
    fclose(fp);
    return s;
}

/* The llava tokenizer.json with its normalizer, pre_tokenizer and decoder replaced. */
static tokenizer *load_metaspace(const char *scheme, int split) {
    size_t len;
    char *json = read_all(MODEL_DIR "/tokenizer.json", &len);
    char *norm = strstr(json, "\"normalizer\":");
    char *model = strstr(json, "\"model\":");
    assert_true(norm && model && norm < model);
    char parts[512];
    snprintf(parts, sizeof parts,
             "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":"
             "\"" META "\",\"prepend_scheme\":\"%s\",\"split\":%s},\"post_processor\":null,"
             "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"" META "\","
             "\"prepend_scheme\":\"%s\",\"split\":%s},",
             scheme, split ? "true" : "false", scheme, split ? "true" : "false");
    size_t head = (size_t)(norm - json), n = head + strlen(parts) + strlen(model) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)head, json, parts, model);
    size_t cfg_len;
    char *cfg = read_all(MODEL_DIR "/tokenizer_config.json", &cfg_len);
    tokenizer *tok;
    llava_error err;
    if (tokenizer_load_buffers(out, strlen(out), cfg, cfg_len, "metaspace", &tok, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    free(json);
    free(out);
    free(cfg);
    return tok;
}

static void test_metaspace_split(void **state) {
    (void)state;
    tokenizer *split = load_metaspace("always", 1), *whole = load_metaspace("always", 0);
    int32_t hello = id_of(split, META "hello"), world = id_of(split, META "world"),
            sp = id_of(split, META), sp3 = id_of(split, META META META);
    int32_t a = id_of(split, META "a"), b = id_of(split, META "b"), sp2 = id_of(split, META META);
    /* split: every metaspace starts a pre-token, so a run of spaces never merges into "▁▁". */
    expect_ids(split, "hello  world", 0, 3, hello, sp, world);
    expect_ids(split, "   ", 0, 3, sp, sp, sp);
    expect_ids(split, "a  b   a", 0, 6, a, sp, b, sp, sp, a);
    /* Without split the run merges (values of the reference port, which does not split). */
    expect_ids(whole, "   ", 0, 1, sp3);
    expect_ids(whole, "a  b   a", 0, 5, a, sp, b, sp2, a);
    tokenizer_free(split);
    tokenizer_free(whole);
}

static void test_metaspace_first_and_decoder(void **state) {
    (void)state;
    tokenizer *tok = load_metaspace("first", 0);
    int32_t hello = id_of(tok, META "hello"), bare = id_of(tok, "hello"), sp = id_of(tok, META),
            sp2 = id_of(tok, META META);
    /* "first": only the piece at the start of the input gets the prefix. */
    expect_ids(tok, "hello<image>hello", 0, 3, hello, 32000, bare);
    expect_ids(tok, "<s>hello", 0, 2, 1, bare);
    expect_ids(tok, " hello", 0, 1, hello); /* the space is the prefix already */
    /* The Rust decoder drops every metaspace of the first token (not just one space). */
    expect_decode(tok, (int32_t[]){sp2, hello}, 2, 0, " hello");
    expect_decode(tok, (int32_t[]){sp, sp}, 2, 0, " ");
    tokenizer_free(tok);
    tok = load_metaspace("never", 0);
    expect_ids(tok, "hello", 0, 1, bare);
    expect_decode(tok, (int32_t[]){hello}, 1, 0, " hello");
    tokenizer_free(tok);
}

/* ---------------------------------------------------------------------------------------- */
/* BOS/EOS and configuration                                                                  */

static void test_bos_eos_sources(void **state) {
    (void)state;
    size_t len;
    char *json = read_all(MODEL_DIR "/tokenizer.json", &len);
    tokenizer *tok;
    llava_error err;
    /* Without tokenizer_config.json the post_processor (TemplateProcessing) adds <s>. */
    assert_int_equal(tokenizer_load_buffers(json, len, NULL, 0, "t", &tok, &err), LLAVA_OK);
    expect_ids(tok, "hi", TOKENIZER_ADD_SPECIAL, 2, 1, 7251);
    assert_int_equal(tokenizer_bos_id(tok), 1);
    assert_int_equal(tokenizer_eos_id(tok), -1);
    tokenizer_free(tok);
    /* The config's add_bos_token/add_eos_token rule when present. */
    const char *cfg = "{\"add_bos_token\":false,\"add_eos_token\":true,\"bos_token\":\"<s>\","
                      "\"eos_token\":{\"content\":\"</s>\",\"__type\":\"AddedToken\"},"
                      "\"model_max_length\":1000000000000000019884624838656}";
    assert_int_equal(tokenizer_load_buffers(json, len, cfg, strlen(cfg), "t", &tok, &err), LLAVA_OK);
    expect_ids(tok, "hi", TOKENIZER_ADD_SPECIAL, 2, 7251, 2);
    expect_ids(tok, "hi", 0, 1, 7251);
    tokenizer_free(tok);
    expect_load_error(json, "{\"add_bos_token\":false,\"add_eos_token\":true}", LLAVA_ERR_FORMAT,
                      "add_eos_token is true but eos_token");
    expect_load_error(json, "{\"add_prefix_space\":true}", LLAVA_ERR_UNSUPPORTED,
                      "add_prefix_space");
    expect_load_error(json, "{\"add_bos_token\":1}", LLAVA_ERR_FORMAT, "must be true or false");
    expect_load_error(json, "{\"bos_token\":", LLAVA_ERR_FORMAT,
                      "tokenizer_config.json: invalid JSON");
    /* A config token id that tokenizer.json gives to another piece. */
    expect_load_error(json,
                      "{\"added_tokens_decoder\":{\"32005\":{\"content\":\"<image>\",\"special\":true}}}",
                      LLAVA_ERR_FORMAT, "declared with id 32005 but its id is 32000");
    free(json);
}

static void test_load_errors(void **state) {
    (void)state;
    expect_load_error("[1, 2", NULL, LLAVA_ERR_FORMAT, "test.json: invalid JSON");
    expect_load_error("{\"model\": {}} x", NULL, LLAVA_ERR_FORMAT, "text after the top-level");
    expect_load_error("{}", NULL, LLAVA_ERR_FORMAT, "\"model\" must be an object");
    char *j = small_json("\"a\":0", "", "", "");
    char *u = strstr(j, "\"BPE\"");
    memcpy(u, "\"XYZ\"", 5);
    expect_load_error(j, NULL, LLAVA_ERR_UNSUPPORTED, "model.type \"XYZ\" is not supported");
    free(j);
    static const struct {
        const char *vocab, *merges, *model_extra, *rest;
        llava_status code;
        const char *part;
    } cases[] = {
        {"\"a\":0", "\"a b\"", "", "", LLAVA_ERR_FORMAT, "model.merges[0]: \"b\" is not in the vocabulary"},
        {"\"a\":0,\"b\":1", "\"a b\"", "", "", LLAVA_ERR_FORMAT, "\"ab\" is not in the vocabulary"},
        {"\"a\":0,\"b\":1", "\"a  b\"", "", "", LLAVA_ERR_FORMAT, "model.merges[0] must be"},
        {"\"a\":0,\"b\":0", "", "", "", LLAVA_ERR_FORMAT, "id 0 is given to both"},
        {"\"a\":0,\"a\":1", "", "", "", LLAVA_ERR_FORMAT, "\"a\" appears twice"},
        {"\"a\":-1", "", "", "", LLAVA_ERR_FORMAT, "ids must be from 0"},
        {"\"a\":1.5", "", "", "", LLAVA_ERR_FORMAT, "expected an integer"},
        {"\"a\":9000000", "", "", "", LLAVA_ERR_LIMIT, "far beyond"},
        {"\"a\":0", "", ",\"dropout\":0.1", "", LLAVA_ERR_UNSUPPORTED, "dropout"},
        {"\"a\":0", "", ",\"continuing_subword_prefix\":\"##\"", "", LLAVA_ERR_UNSUPPORTED,
         "continuing_subword_prefix"},
        {"\"a\":0", "", ",\"unk_token\":\"<unk>\"", "", LLAVA_ERR_FORMAT, "unk_token \"<unk>\" is not"},
        {"\"a\":0", "", "", "\"normalizer\":{\"type\":\"NFKC\"},", LLAVA_ERR_UNSUPPORTED,
         "normalizer \"NFKC\" is not supported"},
        {"\"a\":0", "", "",
         "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\" \"},",
         LLAVA_ERR_UNSUPPORTED, "Regex patterns are not supported"},
        {"\"a\":0", "", "", "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},", LLAVA_ERR_UNSUPPORTED,
         "pre_tokenizer \"ByteLevel\" is not supported"},
        {"\"a\":0", "", "", "\"decoder\":{\"type\":\"ByteLevel\"},", LLAVA_ERR_UNSUPPORTED,
         "decoder \"ByteLevel\" is not supported"},
        {"\"a\":0", "", "",
         "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"},", LLAVA_ERR_FORMAT,
         "replacement must be a single character"},
        {"\"a\":0", "", "",
         "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"x\"},",
         LLAVA_ERR_FORMAT, "prepend_scheme must be"},
        {"\"a\":0", "", "", "\"post_processor\":{\"type\":\"BertProcessing\"},",
         LLAVA_ERR_UNSUPPORTED, "post_processor \"BertProcessing\" is not supported"},
        {"\"a\":0", "", "", "\"added_tokens\":[{\"id\":7,\"content\":\"<x>\"}],", LLAVA_ERR_FORMAT,
         "declared with id 7 but its id is 1"},
        {"\"a\":0", "", "", "\"truncation\":{\"max_length\":8},", LLAVA_ERR_UNSUPPORTED,
         "\"truncation\" is set"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *json = small_json(cases[i].vocab, cases[i].merges, cases[i].model_extra, cases[i].rest);
        /* A second "added_tokens" member would be a duplicate key: drop the empty one. */
        if (strstr(cases[i].rest, "added_tokens")) {
            char *e = strstr(json, "\"added_tokens\":[],");
            memmove(e, e + 18, strlen(e + 18) + 1);
        }
        expect_load_error(json, NULL, cases[i].code, cases[i].part);
        free(json);
    }
    tokenizer *tok = (tokenizer *)1;
    llava_error err;
    assert_int_equal(tokenizer_load("/nonexistent/folder", &tok, &err), LLAVA_ERR_IO);
    assert_null(tok);
    assert_non_null(strstr(err.message, "/nonexistent/folder"));
}

/* ---------------------------------------------------------------------------------------- */
/* Scale and threads                                                                          */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One 1 MB "word" (no space, no added token: the legacy normalizer makes it one pre-token)
 * must take linear-ish time; a quadratic merge would take hours. */
static void test_one_megabyte_word(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    size_t n = 1 << 20;
    char *s = malloc(n);
    uint32_t x = 7;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        s[i] = "abcdefghijklmnopqrstuvwxyz"[x % 26];
    }
    tokenizer_ids ids = {0};
    llava_error err;
    double t0 = now_s();
    assert_int_equal(tokenizer_encode(tok, s, n, 0, &ids, &err), LLAVA_OK);
    double dt = now_s() - t0;
    fprintf(stderr, "1 MB word: %zu ids in %.2f s\n", ids.n, dt);
    assert_true(dt < 30.0);
    /* And it decodes back exactly (after the prefix space that decoding strips). */
    tokenizer_text t = {0};
    assert_int_equal(tokenizer_decode(tok, ids.ids, ids.n, 0, &t, &err), LLAVA_OK);
    assert_int_equal(t.len, n);
    assert_memory_equal(t.data, s, n);
    tokenizer_text_free(&t);
    tokenizer_ids_free(&ids);
    free(s);
    tokenizer_free(tok);
}

typedef struct job {
    const tokenizer *tok;
    const char *text;
    size_t len;
    tokenizer_ids ids;
    int rc;
} job;

static void *encode_job(void *arg) {
    job *j = arg;
    llava_error err;
    j->rc = tokenizer_encode(j->tok, j->text, j->len, TOKENIZER_ADD_SPECIAL, &j->ids, &err);
    return NULL;
}

static void test_threads_share_one_tokenizer(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    /* Long enough to use the per-call word cache. */
    size_t n = 64 * 1024;
    char *text = malloc(n + 1);
    static const char para[] = "USER: <image>\nDescribe the picture in detail, please. ";
    for (size_t i = 0; i < n; i++) text[i] = para[i % (sizeof para - 1)];
    text[n] = '\0';
    job ref = {tok, text, n, {0}, 0};
    encode_job(&ref);
    assert_int_equal(ref.rc, LLAVA_OK);
    enum { THREADS = 4 };
    pthread_t th[THREADS];
    job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){tok, text, n, {0}, -1};
        assert_int_equal(pthread_create(&th[i], NULL, encode_job, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].rc, LLAVA_OK);
        assert_int_equal(jobs[i].ids.n, ref.ids.n);
        assert_memory_equal(jobs[i].ids.ids, ref.ids.ids, ref.ids.n * sizeof(int32_t));
        tokenizer_ids_free(&jobs[i].ids);
    }
    tokenizer_ids_free(&ref.ids);
    free(text);
    tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_by_rank_not_position),
        cmocka_unit_test(test_byte_fallback_and_unknown),
        cmocka_unit_test(test_merges_string_and_pair_forms),
        cmocka_unit_test(test_added_single_word),
        cmocka_unit_test(test_added_lstrip_rstrip_unicode_space),
        cmocka_unit_test(test_added_normalized_token),
        cmocka_unit_test(test_llava_accessors),
        cmocka_unit_test(test_encode_appends_and_prompt),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_decode_rules),
        cmocka_unit_test(test_stream_is_prompt),
        cmocka_unit_test(test_metaspace_split),
        cmocka_unit_test(test_metaspace_first_and_decoder),
        cmocka_unit_test(test_bos_eos_sources),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_one_megabyte_word),
        cmocka_unit_test(test_threads_share_one_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
