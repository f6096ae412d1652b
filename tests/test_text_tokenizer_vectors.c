/* The tokenizer against reference vectors: every vector of tests/data/tokenizer_tests (third-party
 * expectations from transformers, llama.cpp and transformers.js, see PROVENANCE.md), and the
 * adversarial strings plus a 1 MB random mix of tests/data/tokenizer_vectors, produced by the
 * JavaScript port of Hugging Face tokenizers on the llava tokenizer and Mistral-style Metaspace
 * variants of it. Ids must match exactly; decoding and streaming too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/file.h"
#include "text/tokenizer.h"

#define MODEL_DIR LLAVA_TEST_DATA "/llava-1.5-7b-hf"

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                    */

static json_t *load_json_flags(const char *path, size_t flags) {
    json_error_t je;
    json_t *j = json_load_file(path, flags, &je);
    if (!j) fail_msg("%s: %s (line %d)", path, je.text, je.line);
    return j;
}

/* Integers as reals: the vector files hold nothing larger, and configs hold 1e30 integers. */
static json_t *load_json(const char *path) {
    return load_json_flags(path, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL);
}

/* ids of a JSON array (integers read as reals). */
static size_t json_ids(const json_t *arr, int32_t **out) {
    size_t n = json_array_size(arr);
    *out = malloc((n ? n : 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) (*out)[i] = (int32_t)json_number_value(json_array_get(arr, i));
    return n;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 64 ? " ...\n" : "\n");
}

/* Compares ids, printing both on a mismatch; returns 1 when equal. */
static int same_ids(const char *name, const char *text, const int32_t *want, size_t nwant,
                    const tokenizer_ids *got) {
    if (got->n == nwant && (nwant == 0 || !memcmp(got->ids, want, nwant * sizeof *want))) return 1;
    fprintf(stderr, "MISMATCH %s: text \"%.200s\"\n", name, text);
    print_ids("expected", want, nwant);
    print_ids("got     ", got->ids, got->n);
    return 0;
}

static int encode_check(const tokenizer *tok, const char *name, const char *text, size_t len,
                        unsigned flags, const json_t *want_json) {
    int32_t *want;
    size_t n = json_ids(want_json, &want);
    tokenizer_ids got = {0};
    llava_error err;
    llava_status st = tokenizer_encode(tok, text, len, flags, &got, &err);
    if (st != LLAVA_OK) fail_msg("%s: encode failed: %s", name, err.message);
    int ok = same_ids(name, text, want, n, &got);
    free(want);
    tokenizer_ids_free(&got);
    return ok;
}

/* Decodes whole and streamed; both must give want (when not NULL) and each other. */
static int decode_check(const tokenizer *tok, const char *name, const int32_t *ids, size_t n,
                        unsigned flags, const char *want, size_t want_len) {
    tokenizer_text whole = {0}, streamed = {0};
    llava_error err;
    assert_int_equal(tokenizer_decode(tok, ids, n, flags, &whole, &err), LLAVA_OK);
    tokenizer_stream *s = tokenizer_stream_new(tok, flags);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        size_t before = streamed.len;
        assert_int_equal(tokenizer_stream_push(s, ids[i], &streamed, &err), LLAVA_OK);
        /* What a push appends is always whole characters. */
        assert_true(streamed.len == before ||
                    ((unsigned char)streamed.data[before] & 0xC0) != 0x80);
    }
    assert_int_equal(tokenizer_stream_finish(s, &streamed, &err), LLAVA_OK);
    tokenizer_stream_free(s);
    int ok = 1;
    if (want && (whole.len != want_len || memcmp(whole.data, want, want_len))) {
        fprintf(stderr, "DECODE MISMATCH %s (flags %u)\n  expected \"%.200s\"\n  got      \"%.200s\"\n",
                name, flags, want, whole.len ? whole.data : "");
        ok = 0;
    }
    if (streamed.len != whole.len || (whole.len && memcmp(streamed.data, whole.data, whole.len))) {
        fprintf(stderr, "STREAM MISMATCH %s (flags %u)\n  whole    \"%.200s\"\n  streamed \"%.200s\"\n",
                name, flags, whole.len ? whole.data : "", streamed.len ? streamed.data : "");
        ok = 0;
    }
    tokenizer_text_free(&whole);
    tokenizer_text_free(&streamed);
    return ok;
}

static tokenizer *load_llava(void) {
    tokenizer *tok;
    llava_error err;
    if (tokenizer_load(MODEL_DIR, &tok, &err) != LLAVA_OK) fail_msg("%s", err.message);
    return tok;
}

/* ---------------------------------------------------------------------------------------- */
/* Third-party vectors (tests/data/tokenizer_tests)                                           */

/* llama.cpp's .inp/.out pair: inputs separated by "\n__ggml_vocab_test__\n", one line of ids
 * each, made by transformers with add_special_tokens=False. */
static void test_ggml_vocab_vectors(void **state) {
    (void)state;
    tokenizer *tok = load_llava();
    char *inp, *outp;
    size_t inp_len, out_len;
    llava_error err;
    assert_int_equal(llava_read_file(LLAVA_TEST_DATA "/tokenizer_tests/ggml-vocab-llama-spm.gguf.inp",
                                     1 << 20, &inp, &inp_len, &err), LLAVA_OK);
    assert_int_equal(llava_read_file(LLAVA_TEST_DATA "/tokenizer_tests/ggml-vocab-llama-spm.gguf.out",
                                     1 << 20, &outp, &out_len, &err), LLAVA_OK);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = inp, *line = outp;
    int cases = 0, bad = 0;
    while (p < inp + inp_len) {
        char *end = strstr(p, sep);
        if (!end) break;
        char *eol = strchr(line, '\n');
        assert_non_null(eol);
        *eol = '\0';
        int32_t want[1024];
        size_t n = 0;
        for (char *q = line; *q;) {
            char *next;
            long v = strtol(q, &next, 10);
            if (next == q) break;
            assert_true(n < 1024);
            want[n++] = (int32_t)v;
            q = next;
        }
        tokenizer_ids got = {0};
        assert_int_equal(tokenizer_encode(tok, p, (size_t)(end - p), 0, &got, &err), LLAVA_OK);
        char name[32];
        snprintf(name, sizeof name, "ggml#%d", cases);
        *end = '\0';
        bad += !same_ids(name, p, want, n, &got);
        tokenizer_ids_free(&got);
        cases++;
        p = end + strlen(sep);
        line = eol + 1;
    }
    assert_int_equal(cases, 46);
    assert_int_equal(bad, 0);
    free(inp);
    free(outp);
    tokenizer_free(tok);
}

/* llama_tokenizer_vectors.json and llava_prompt_vectors_generated.json: text, add_special_tokens,
 * ids, and for some cases the pieces and decoded strings. */
static void run_case_file(const char *path, int expect_cases) {
    tokenizer *tok = load_llava();
    json_t *root = load_json(path);
    const json_t *cases = json_object_get(root, "cases");
    size_t i;
    json_t *c;
    int bad = 0;
    json_array_foreach(cases, i, c) {
        const json_t *text_j = json_object_get(c, "text");
        const char *text = json_string_value(text_j);
        size_t len = json_string_length(text_j);
        unsigned flags = json_is_true(json_object_get(c, "add_special_tokens")) ? TOKENIZER_ADD_SPECIAL : 0;
        char name[160];
        const json_t *nm = json_object_get(c, "name");
        snprintf(name, sizeof name, "%s#%zu", nm ? json_string_value(nm) : path, i);
        bad += !encode_check(tok, name, text, len, flags, json_object_get(c, "ids"));
        int32_t *ids;
        size_t n = json_ids(json_object_get(c, "ids"), &ids);
        /* Pieces (without BOS): tokenizer_token_text of each id. */
        const json_t *pieces = json_object_get(c, "tokens");
        if (pieces) {
            size_t skip = n > json_array_size(pieces) ? n - json_array_size(pieces) : 0;
            for (size_t k = 0; k < json_array_size(pieces); k++) {
                const char *want = json_string_value(json_array_get(pieces, k));
                const char *got = tokenizer_token_text(tok, ids[skip + k]);
                if (!got || strcmp(want, got)) {
                    fprintf(stderr, "PIECE MISMATCH %s at %zu: \"%s\" vs \"%s\"\n", name, k, want,
                            got ? got : "(null)");
                    bad++;
                }
            }
        }
        const json_t *dec = json_object_get(c, "decoded");
        if (dec) bad += !decode_check(tok, name, ids, n, 0, json_string_value(dec), json_string_length(dec));
        dec = json_object_get(c, "decoded_skip_special");
        if (dec)
            bad += !decode_check(tok, name, ids, n, TOKENIZER_SKIP_SPECIAL, json_string_value(dec),
                                 json_string_length(dec));
        free(ids);
    }
    assert_int_equal((int)json_array_size(cases), expect_cases);
    assert_int_equal(bad, 0);
    json_decref(root);
    tokenizer_free(tok);
}

static void test_llama_tokenizer_vectors(void **state) {
    (void)state;
    run_case_file(LLAVA_TEST_DATA "/tokenizer_tests/llama_tokenizer_vectors.json", 111);
}

static void test_llava_prompt_vectors(void **state) {
    (void)state;
    run_case_file(LLAVA_TEST_DATA "/tokenizer_tests/llava_prompt_vectors_generated.json", 17);
}

/* ---------------------------------------------------------------------------------------- */
/* Reference-port vectors (tests/data/tokenizer_vectors/hf_tokenizers_js.json)                */

static json_t *metaspace(const char *scheme) {
    return json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "\xE2\x96\x81",
                     "prepend_scheme", scheme, "split", 0);
}

/* The variants of tools/gen_tokenizer_vectors.mjs, built from the same files. */
static tokenizer *load_variant(const char *name) {
    if (!strcmp(name, "llava")) return load_llava();
    json_t *j = load_json_flags(MODEL_DIR "/tokenizer.json", 0);
    if (!strncmp(name, "metaspace_", 10)) {
        const char *scheme = name + 10;
        json_object_set_new(j, "normalizer", json_null());
        json_object_set_new(j, "pre_tokenizer", metaspace(scheme));
        json_object_set_new(j, "decoder", metaspace(scheme));
    } else if (!strcmp(name, "image_strip")) {
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(j, "added_tokens"), i, t) {
            if (!strcmp(json_string_value(json_object_get(t, "content")), "<image>")) {
                json_object_set_new(t, "lstrip", json_true());
                json_object_set_new(t, "rstrip", json_true());
            }
        }
    } else {
        fail_msg("unknown variant %s", name);
    }
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(text);
    char *cfg;
    size_t cfg_len;
    llava_error err;
    assert_int_equal(llava_read_file(MODEL_DIR "/tokenizer_config.json", 1 << 20, &cfg, &cfg_len, &err),
                     LLAVA_OK);
    tokenizer *tok;
    if (tokenizer_load_buffers(text, strlen(text), cfg, cfg_len, name, &tok, &err) != LLAVA_OK)
        fail_msg("variant %s: %s", name, err.message);
    free(text);
    free(cfg);
    return tok;
}

static uint32_t fnv_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x01000193u;
    return h;
}

static uint32_t fnv_ids(const int32_t *ids, size_t n) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) h = (h ^ (((uint32_t)ids[i] >> (8 * k)) & 0xff)) * 0x01000193u;
    return h;
}

static uint32_t xorshift32(uint32_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static size_t utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The 1 MB mix, as random_mix() of the generator builds it. */
static char *make_mix(const json_t *root, size_t *len) {
    uint32_t x = (uint32_t)json_number_value(json_object_get(root, "mix_seed"));
    size_t want = (size_t)json_number_value(json_object_get(root, "mix_bytes"));
    const json_t *pieces = json_object_get(root, "pieces"), *ranges = json_object_get(root, "ranges");
    size_t np = json_array_size(pieces), nr = json_array_size(ranges), n = 0;
    char *buf = malloc(want + 256);
    while (n < want) {
        if (xorshift32(&x) % 8 == 0) {
            const json_t *r = json_array_get(ranges, xorshift32(&x) % nr);
            uint32_t lo = (uint32_t)json_number_value(json_array_get(r, 0));
            uint32_t hi = (uint32_t)json_number_value(json_array_get(r, 1));
            n += utf8_put(lo + xorshift32(&x) % (hi - lo + 1), buf + n);
        } else {
            const json_t *p = json_array_get(pieces, xorshift32(&x) % np);
            memcpy(buf + n, json_string_value(p), json_string_length(p));
            n += json_string_length(p);
        }
    }
    *len = n;
    return buf;
}

/* The mix without spaces, tabs, CR and LF, cut after the first whole character that reaches
 * want bytes (in place; returns the new length). */
static size_t make_nospace(char *s, size_t len, size_t want) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') s[n++] = s[i];
    size_t k = 0;
    while (k < n && k < want) {
        unsigned char c = (unsigned char)s[k];
        k += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    }
    return k;
}

/* Text that cannot round-trip through the legacy normalizer: an added token's content (the
 * piece after it gets its own prefix space), or the metaspace itself (it decodes to a space). */
static int lossy_text(const char *s, size_t len) {
    static const char *const specials[] = {"<image>", "<s>", "</s>", "<unk>", "<pad>", "\xE2\x96\x81"};
    for (int i = 0; i < 6; i++)
        if (memmem(s, len, specials[i], strlen(specials[i]))) return 1;
    return 0;
}

static void run_variant(const json_t *root, const char *variant) {
    tokenizer *tok = load_variant(variant);
    size_t i;
    json_t *c;
    int cases = 0, bad = 0, roundtrips = 0;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "tokenizer")), variant)) continue;
        const json_t *text_j = json_object_get(c, "text");
        const char *text = json_string_value(text_j);
        size_t len = json_string_length(text_j);
        char name[64];
        snprintf(name, sizeof name, "%s#%zu", variant, i);
        bad += !encode_check(tok, name, text, len, 0, json_object_get(c, "ids"));
        bad += !encode_check(tok, name, text, len, TOKENIZER_ADD_SPECIAL, json_object_get(c, "ids_special"));
        int32_t *ids;
        size_t n = json_ids(json_object_get(c, "ids_special"), &ids);
        const json_t *d = json_object_get(c, "decoded");
        bad += !decode_check(tok, name, ids, n, 0, json_string_value(d), json_string_length(d));
        d = json_object_get(c, "decoded_skip_special");
        bad += !decode_check(tok, name, ids, n, TOKENIZER_SKIP_SPECIAL, json_string_value(d),
                             json_string_length(d));
        free(ids);
        /* The legacy LLaMA tokenizer loses nothing: decode(encode(s)) == s. */
        if (!strcmp(variant, "llava") && !lossy_text(text, len)) {
            n = json_ids(json_object_get(c, "ids"), &ids);
            tokenizer_text t = {0};
            llava_error err;
            assert_int_equal(tokenizer_decode(tok, ids, n, 0, &t, &err), LLAVA_OK);
            if (t.len != len || memcmp(t.data ? t.data : "", text, len)) {
                fprintf(stderr, "ROUND TRIP %s: \"%s\" -> \"%s\"\n", name, text, t.data ? t.data : "");
                bad++;
            }
            roundtrips++;
            tokenizer_text_free(&t);
            free(ids);
        }
        cases++;
    }
    fprintf(stderr, "%s: %d cases, %d round trips, %d mismatches\n", variant, cases, roundtrips, bad);
    assert_true(cases >= 400);
    assert_int_equal(bad, 0);

    /* The 1 MB mix: the text must be the generator's, then the ids. */
    const json_t *mix = json_object_get(json_object_get(root, "mix"), variant);
    size_t len;
    char *text = make_mix(root, &len);
    assert_int_equal(len, (size_t)json_number_value(json_object_get(mix, "text_bytes")));
    assert_int_equal(fnv_bytes(text, len), (uint32_t)json_number_value(json_object_get(mix, "text_fnv1a32")));
    tokenizer_ids ids = {0};
    llava_error err;
    assert_int_equal(tokenizer_encode(tok, text, len, 0, &ids, &err), LLAVA_OK);
    int32_t *first;
    size_t nfirst = json_ids(json_object_get(mix, "first_ids"), &first);
    if (ids.n != (size_t)json_number_value(json_object_get(mix, "count")) ||
        fnv_ids(ids.ids, ids.n) != (uint32_t)json_number_value(json_object_get(mix, "ids_fnv1a32"))) {
        fprintf(stderr, "MIX MISMATCH %s: %zu ids (want %.0f)\n", variant, ids.n,
                json_number_value(json_object_get(mix, "count")));
        print_ids("want first", first, nfirst);
        print_ids("got first ", ids.ids, ids.n);
        fail();
    }
    free(first);
    const json_t *dh = json_object_get(mix, "decoded_fnv1a32");
    if (json_is_number(dh)) {
        tokenizer_text t = {0};
        assert_int_equal(tokenizer_decode(tok, ids.ids, ids.n, 0, &t, &err), LLAVA_OK);
        assert_int_equal(fnv_bytes(t.data, t.len), (uint32_t)json_number_value(dh));
        tokenizer_text_free(&t);
    }
    assert_true(decode_check(tok, "mix", ids.ids, ids.n, 0, NULL, 0));
    tokenizer_ids_free(&ids);

    /* The same without spaces: long words, cut only where no merge can reach across. */
    const json_t *ns = json_object_get(mix, "nospace");
    len = make_nospace(text, len, (size_t)json_number_value(json_object_get(root, "nospace_bytes")));
    assert_int_equal(len, (size_t)json_number_value(json_object_get(ns, "text_bytes")));
    assert_int_equal(fnv_bytes(text, len), (uint32_t)json_number_value(json_object_get(ns, "text_fnv1a32")));
    assert_int_equal(tokenizer_encode(tok, text, len, 0, &ids, &err), LLAVA_OK);
    nfirst = json_ids(json_object_get(ns, "first_ids"), &first);
    if (ids.n != (size_t)json_number_value(json_object_get(ns, "count")) ||
        fnv_ids(ids.ids, ids.n) != (uint32_t)json_number_value(json_object_get(ns, "ids_fnv1a32"))) {
        fprintf(stderr, "NOSPACE MISMATCH %s: %zu ids (want %.0f)\n", variant, ids.n,
                json_number_value(json_object_get(ns, "count")));
        print_ids("want first", first, nfirst);
        print_ids("got first ", ids.ids, ids.n);
        fail();
    }
    free(first);
    tokenizer_ids_free(&ids);
    free(text);
    tokenizer_free(tok);
}

/* The group state is the parsed vector file. */
static int setup_vectors(void **state) {
    *state = load_json(LLAVA_TEST_DATA "/tokenizer_vectors/hf_tokenizers_js.json");
    return 0;
}

static int teardown_vectors(void **state) {
    json_decref(*state);
    return 0;
}

static void test_js_llava(void **state) {
    run_variant(*state, "llava");
}

static void test_js_metaspace_first(void **state) {
    run_variant(*state, "metaspace_first");
}

static void test_js_metaspace_always(void **state) {
    run_variant(*state, "metaspace_always");
}

static void test_js_image_strip(void **state) {
    run_variant(*state, "image_strip");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ggml_vocab_vectors),
        cmocka_unit_test(test_llama_tokenizer_vectors),
        cmocka_unit_test(test_llava_prompt_vectors),
        cmocka_unit_test(test_js_llava),
        cmocka_unit_test(test_js_metaspace_first),
        cmocka_unit_test(test_js_metaspace_always),
        cmocka_unit_test(test_js_image_strip),
    };
    return cmocka_run_group_tests(tests, setup_vectors, teardown_vectors);
}
