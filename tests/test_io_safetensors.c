/* Tests of src/io/safetensors: malformed files made here in a temporary folder are each rejected
 * with a message naming the file, the tensor and the fault; the writer's files read back; the
 * fixtures' checkpoints open with the expected tensors; sharded sets are cross-checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"

static char tmp_dir[64];

static int make_tmp(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/llava_test_io_st_XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

/* Removes the temporary folder and everything in it (one level of subfolders). */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int drop_tmp(void **state) {
    (void)state;
    remove_tree(tmp_dir);
    return 0;
}

static const char *fixtures_dir(void) {
    const char *d = getenv("LLAVA_FIXTURES");
    return d ? d : LLAVA_FIXTURES;
}

static const char *data_dir(void) {
    const char *d = getenv("LLAVA_TEST_DATA");
    return d ? d : LLAVA_TEST_DATA;
}

static void tmp_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", tmp_dir, name); }

/* Writes [8-byte length][header][data_len bytes of a counting pattern]; claimed_len overrides
 * the length field when not UINT64_MAX. */
static void write_raw(const char *path, const char *header, uint64_t claimed_len, size_t data_len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = claimed_len != UINT64_MAX ? claimed_len : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, strlen(header), f), strlen(header));
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *text) {
    llava_error err;
    assert_int_equal(llava_write_file(path, text, strlen(text), &err), LLAVA_OK);
}

/* Opening `path` (file or folder) fails, and the message holds every fragment given. */
static void expect_reject(const char *path, const char *frag1, const char *frag2, const char *frag3) {
    st_set *s = NULL;
    llava_error err;
    llava_error_clear(&err);
    if (st_set_open(path, &s, &err) == LLAVA_OK) {
        st_set_close(s);
        fail_msg("%s was accepted", path);
    }
    assert_null(s);
    const char *frags[] = {frag1, frag2, frag3};
    for (int i = 0; i < 3; i++)
        if (frags[i] && !strstr(err.message, frags[i]))
            fail_msg("message \"%s\" lacks \"%s\"", err.message, frags[i]);
}

/* One malformed single file: header text, claimed length, data bytes, what the message names. */
typedef struct bad_file {
    const char *name;
    const char *header;
    uint64_t claimed_len;
    size_t data_len;
    const char *frag1, *frag2;
} bad_file;

#define OK_ENTRY "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"

static void test_malformed_files(void **state) {
    (void)state;
    const bad_file cases[] = {
        {"header_past_end.safetensors", "{" OK_ENTRY "}", 5000, 24, "header length 5000", "runs past the end"},
        {"header_huge.safetensors", "{" OK_ENTRY "}", 200000000, 24, "header length 200000000", "exceeds the limit"},
        {"not_json.safetensors", "{\"a\": {\"dtype\": ", UINT64_MAX, 0, "not valid JSON", "file offset"},
        {"not_object.safetensors", "[1, 2, 3]", UINT64_MAX, 0, "header is not a JSON object", NULL},
        {"empty_header.safetensors", "", UINT64_MAX, 0, "not valid JSON", NULL},
        {"unknown_dtype.safetensors", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}",
         UINT64_MAX, 2, "tensor \"a\"", "unknown dtype \"F8_E4M3\""},
        {"dtype_missing.safetensors", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,2]}}", UINT64_MAX, 2,
         "tensor \"a\"", "\"dtype\" is missing"},
        {"dtype_not_string.safetensors", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,2]}}", UINT64_MAX, 2,
         "tensor \"a\"", "\"dtype\" must be a string"},
        {"shape_mismatch.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",
         UINT64_MAX, 24, "tensor \"a\"", "needs 24 bytes but data_offsets [0, 20] span 20"},
        {"past_data.safetensors", "{" OK_ENTRY "}", UINT64_MAX, 16, "tensor \"a\"", "extend past the end of the data"},
        {"overlap.safetensors",
         "{" OK_ENTRY ",\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[20,28]}}", UINT64_MAX, 28,
         "\"a\" [0, 24] and \"b\" [20, 28] overlap", NULL},
        {"overlap_same.safetensors",
         "{\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}," OK_ENTRY "}", UINT64_MAX, 24,
         "overlap", "\"b\""},
        {"meta_not_string.safetensors", "{\"__metadata__\":{\"format\":1}," OK_ENTRY "}", UINT64_MAX, 24,
         "__metadata__", "\"format\" is not a string"},
        {"meta_not_object.safetensors", "{\"__metadata__\":[\"pt\"]," OK_ENTRY "}", UINT64_MAX, 24,
         "\"__metadata__\" must be an object", NULL},
        {"duplicate.safetensors", "{" OK_ENTRY "," OK_ENTRY "}", UINT64_MAX, 24, "duplicate", NULL},
        {"offsets_three.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}",
         UINT64_MAX, 8, "tensor \"a\"", "\"data_offsets\" must be an array of two"},
        {"offsets_string.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0-8\"}}",
         UINT64_MAX, 8, "tensor \"a\"", "\"data_offsets\""},
        {"offsets_negative.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-4,0]}}",
         UINT64_MAX, 8, "tensor \"a\"", "non-negative"},
        {"begin_after_end.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}",
         UINT64_MAX, 8, "tensor \"a\"", "begin is after end"},
        {"negative_dim.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}",
         UINT64_MAX, 24, "tensor \"a\"", "shape[1] must be a non-negative integer"},
        {"float_dim.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}",
         UINT64_MAX, 8, "tensor \"a\"", "shape[0]"},
        {"overflow.safetensors",
         "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", UINT64_MAX, 8,
         "tensor \"a\"", "too large"},
        {"overflow_size.safetensors",
         "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}", UINT64_MAX, 8,
         "tensor \"a\"", "too large"},
        {"too_many_dims.safetensors",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1,
         "tensor \"a\"", "9 dimensions"},
        {"entry_not_object.safetensors", "{\"a\":[\"F32\",[2],[0,8]]}", UINT64_MAX, 8, "tensor \"a\"",
         "entry is not a JSON object"},
        {"unknown_key.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"strides\":[1]}}", UINT64_MAX, 8,
         "tensor \"a\"", "unknown key \"strides\""},
        {"shape_missing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", UINT64_MAX, 8,
         "tensor \"a\"", "\"shape\" must be an array"},
        {"trailing_garbage.safetensors", "{" OK_ENTRY "}xyz", UINT64_MAX, 24, "not valid JSON", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256];
        tmp_path(path, sizeof path, cases[i].name);
        write_raw(path, cases[i].header, cases[i].claimed_len, cases[i].data_len);
        expect_reject(path, path, cases[i].frag1, cases[i].frag2);
        /* st_file_open gives the same verdict, mapped or read into memory */
        st_file *f = NULL;
        llava_error err;
        assert_int_not_equal(st_file_open(path, &f, &err), LLAVA_OK);
        assert_null(f);
        char msg[sizeof err.message];
        memcpy(msg, err.message, sizeof msg);
        assert_int_not_equal(st_file_open_mode(path, ST_READ, &f, &err), LLAVA_OK);
        assert_null(f);
        assert_string_equal(err.message, msg);
    }

    /* A 64 GiB file (sparse) whose header is broken: read into memory, it fails on its header as
     * the mapping does, before allocating or reading what follows (which here could not even be
     * allocated on most machines, and would take minutes to read). */
    {
        char big[256];
        tmp_path(big, sizeof big, "big_bad_header.safetensors");
        write_raw(big, "{\"a\": 1}", UINT64_MAX, 0);
        assert_int_equal(truncate(big, (off_t)64 << 30), 0);
        st_file *f = NULL;
        llava_error err;
        assert_int_not_equal(st_file_open(big, &f, &err), LLAVA_OK);
        char msg[sizeof err.message];
        memcpy(msg, err.message, sizeof msg);
        assert_non_null(strstr(msg, "tensor \"a\""));
        assert_int_not_equal(st_file_open_mode(big, ST_READ, &f, &err), LLAVA_OK);
        assert_null(f);
        assert_string_equal(err.message, msg);
        unlink(big);
    }

    /* shorter than the length field */
    char path[256];
    tmp_path(path, sizeof path, "truncated.safetensors");
    write_text(path, "xyz");
    expect_reject(path, path, "3 bytes, too short", NULL);
    /* an accepted file with a gap and a trailing byte, and an empty tensor anywhere in range */
    tmp_path(path, sizeof path, "gaps.safetensors");
    write_raw(path,
              "{\"b\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[8,8]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]}}",
              UINT64_MAX, 29);
    st_set *s;
    llava_error err;
    if (st_set_open(path, &s, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(st_set_count(s), 2);
    assert_string_equal(st_set_tensor(s, 0)->name, "a");
    assert_int_equal(((const unsigned char *)st_set_find(s, "a")->data)[0], 4);
    assert_int_equal(st_set_total_bytes(s), 24);
    st_set_close(s);
    expect_reject("/nonexistent/llava/model", "/nonexistent/llava/model", "cannot open", NULL);
}

/* The header parser on its own (the fuzz target's entry point). */
static void test_header_parse(void **state) {
    (void)state;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},\"w\":{\"dtype\":\"BF16\",\"shape\":[3],"
                    "\"data_offsets\":[2,8]},\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}";
    st_header hd;
    llava_error err;
    if (st_header_parse(h, strlen(h), 16, "mem", &hd, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(hd.count, 2);
    assert_string_equal(hd.tensors[0].name, "s");
    assert_int_equal(hd.tensors[0].ndim, 0);
    assert_int_equal(hd.tensors[0].numel, 1);
    assert_int_equal((uintptr_t)hd.tensors[0].data, 8);
    assert_int_equal(hd.tensors[1].dtype, LLAVA_DTYPE_BF16);
    assert_int_equal(hd.tensors[1].nbytes, 6);
    assert_int_equal(hd.meta_count, 2);
    st_header_free(&hd);
    assert_int_equal(st_header_parse(h, strlen(h), 15, "mem", &hd, &err), LLAVA_ERR_FORMAT);
    assert_non_null(strstr(err.message, "mem: tensor \"s\""));
    assert_int_equal(hd.count, 0);
}

static uint16_t f16_bits(float x) { return llava_f32_to_f16(x); }

/* Writer -> reader: shapes, dtypes, bytes, metadata, canonical header, aligned data. */
static void test_writer_round_trip(void **state) {
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {f16_bits(0.5f), f16_bits(-2.0f), f16_bits(65504.0f)};
    uint8_t u[5] = {1, 2, 3, 4, 5};
    int64_t ids[2] = {-7, 1LL << 40};
    double scalar = 3.25;
    const int64_t sa[2] = {2, 3}, sh[1] = {3}, su[1] = {5}, si[2] = {1, 2}, sz[2] = {0, 4};
    st_writer *w = st_writer_new();
    llava_error err;
    assert_non_null(w);
    assert_int_equal(st_writer_add(w, "z.u8", LLAVA_DTYPE_U8, 1, su, u, &err), LLAVA_OK);
    assert_int_equal(st_writer_add(w, "m.f16", LLAVA_DTYPE_F16, 1, sh, h, &err), LLAVA_OK);
    assert_int_equal(st_writer_add(w, "a.f32", LLAVA_DTYPE_F32, 2, sa, a, &err), LLAVA_OK);
    assert_int_equal(st_writer_add(w, "ids \"quoted\"\n", LLAVA_DTYPE_I64, 2, si, ids, &err), LLAVA_OK);
    assert_int_equal(st_writer_add(w, "scalar", LLAVA_DTYPE_F64, 0, NULL, &scalar, &err), LLAVA_OK);
    assert_int_equal(st_writer_add(w, "empty", LLAVA_DTYPE_BF16, 2, sz, NULL, &err), LLAVA_OK);
    assert_int_equal(st_writer_set_metadata(w, "format", "pt", &err), LLAVA_OK);
    assert_int_equal(st_writer_set_metadata(w, "author", "x", &err), LLAVA_OK);
    assert_int_equal(st_writer_set_metadata(w, "author", "test", &err), LLAVA_OK);
    assert_int_not_equal(st_writer_add(w, "bad", LLAVA_DTYPE_F32, 9, sa, a, &err), LLAVA_OK);
    assert_int_not_equal(st_writer_add(w, "__metadata__", LLAVA_DTYPE_F32, 1, sh, a, &err), LLAVA_OK);
    char path[256];
    tmp_path(path, sizeof path, "round.safetensors");
    if (st_writer_save(w, path, &err) != LLAVA_OK) fail_msg("%s", err.message);
    st_writer_free(w);

    char *raw;
    size_t len;
    assert_int_equal(llava_read_file(path, 1 << 20, &raw, &len, &err), LLAVA_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
    assert_int_equal(hl % 8, 0);
    assert_true(8 + hl <= len);
    assert_memory_equal(raw + 8, "{\"__metadata__\":{\"author\":\"test\",\"format\":\"pt\"},\"a.f32\":{", 57);
    assert_true(raw[8 + hl - 1] == ' ' || raw[8 + hl - 1] == '}');
    free(raw);

    st_set *s;
    if (st_set_open(path, &s, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(st_set_count(s), 6);
    assert_int_equal(st_set_file_count(s), 1);
    assert_int_equal(st_set_total_bytes(s), 24 + 6 + 5 + 16 + 8);
    const char *order[] = {"a.f32", "empty", "ids \"quoted\"\n", "m.f16", "scalar", "z.u8"};
    for (size_t i = 0; i < 6; i++) {
        const st_tensor *t = st_set_tensor(s, i);
        assert_string_equal(t->name, order[i]);
        assert_ptr_equal(st_set_find(s, order[i]), t);
        assert_string_equal(t->file, path);
        /* every tensor aligned to its element size */
        assert_int_equal((uintptr_t)t->data % llava_dtype_size(t->dtype), 0);
    }
    const st_tensor *t = st_set_find(s, "a.f32");
    assert_int_equal(t->dtype, LLAVA_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->numel, 6);
    assert_memory_equal(t->data, a, sizeof a);
    t = st_set_find(s, "m.f16");
    assert_memory_equal(t->data, h, sizeof h);
    t = st_set_find(s, "ids \"quoted\"\n");
    assert_memory_equal(t->data, ids, sizeof ids);
    t = st_set_find(s, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_memory_equal(t->data, &scalar, 8);
    t = st_set_find(s, "empty");
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->nbytes, 0);
    assert_memory_equal(st_set_find(s, "z.u8")->data, u, 5);
    assert_null(st_set_find(s, "absent"));
    assert_null(st_set_tensor(s, 6));
    st_set_close(s);

    st_file *f;
    assert_int_equal(st_file_open(path, &f, &err), LLAVA_OK);
    assert_string_equal(st_file_metadata(f, "format"), "pt");
    assert_string_equal(st_file_metadata(f, "author"), "test");
    assert_null(st_file_metadata(f, "nothing"));

    /* read into memory instead of mapped: the same tensors, bytes and metadata */
    st_file *g;
    assert_int_equal(st_file_open_mode(path, ST_READ, &g, &err), LLAVA_OK);
    assert_int_equal(st_file_count(g), st_file_count(f));
    for (size_t i = 0; i < st_file_count(f); i++) {
        const st_tensor *a_t = st_file_tensor(f, i), *b_t = st_file_tensor(g, i);
        assert_string_equal(a_t->name, b_t->name);
        assert_int_equal(a_t->nbytes, b_t->nbytes);
        assert_true(a_t->nbytes == 0 || a_t->data != b_t->data);
        if (a_t->nbytes) assert_memory_equal(a_t->data, b_t->data, a_t->nbytes);
    }
    assert_string_equal(st_file_metadata(g, "author"), "test");
    st_file_close(g);
    st_file_close(f);
    st_set *rs;
    assert_int_equal(st_set_open_mode(path, ST_READ, &rs, &err), LLAVA_OK);
    assert_memory_equal(st_set_find(rs, "m.f16")->data, h, sizeof h);
    assert_memory_equal(st_set_find(rs, "z.u8")->data, u, 5);
    st_set_close(rs);

    /* a name added twice is refused at save time */
    w = st_writer_new();
    assert_int_equal(st_writer_add(w, "x", LLAVA_DTYPE_U8, 1, su, u, &err), LLAVA_OK);
    assert_int_equal(st_writer_add(w, "x", LLAVA_DTYPE_U8, 1, su, u, &err), LLAVA_OK);
    assert_int_not_equal(st_writer_save(w, path, &err), LLAVA_OK);
    assert_non_null(strstr(err.message, "\"x\" was added twice"));
    st_writer_free(w);
}

/* Expected tensor count of a LLaVA-1.5 checkpoint from its config. */
static size_t expected_tensors(const hf_llava_config *c) {
    return (size_t)c->text.num_hidden_layers * 9 + 3        /* layers, embed, norm, lm_head */
           + (size_t)c->vision.num_hidden_layers * 16 + 7   /* layers, embeddings x3, pre/post LN */
           + 4;                                             /* projector */
}

/* The fixtures' checkpoints open, hold the tensors their configs call for, and re-writing them
 * with st_writer gives the very same bytes (the writer's form is the safetensors library's). */
static void test_fixture_checkpoints(void **state) {
    (void)state;
    const struct {
        const char *name;
        llava_dtype dtype;
    } cases[] = {{"tiny-f32", LLAVA_DTYPE_F32}, {"small-f16", LLAVA_DTYPE_F16}, {"tiny-bf16-gelu", LLAVA_DTYPE_BF16}};
    for (size_t i = 0; i < 3; i++) {
        char dir[512], path[600];
        llava_error err;
        snprintf(dir, sizeof dir, "%s/%s/model", fixtures_dir(), cases[i].name);
        snprintf(path, sizeof path, "%s/config.json", dir);
        hf_llava_config c;
        if (hf_llava_config_load(path, &c, &err) != LLAVA_OK) fail_msg("%s", err.message);
        st_set *s;
        if (st_set_open(dir, &s, &err) != LLAVA_OK) fail_msg("%s", err.message);
        assert_int_equal(st_set_count(s), expected_tensors(&c));
        assert_int_equal(st_set_file_count(s), 1);
        uint64_t total = 0;
        for (size_t k = 0; k < st_set_count(s); k++) {
            assert_int_equal(st_set_tensor(s, k)->dtype, cases[i].dtype);
            total += st_set_tensor(s, k)->nbytes;
        }
        assert_int_equal(st_set_total_bytes(s), total);
        const st_tensor *e = st_set_find(s, "language_model.model.embed_tokens.weight");
        assert_non_null(e);
        assert_int_equal(e->ndim, 2);
        assert_int_equal(e->shape[0], c.text.vocab_size);
        assert_int_equal(e->shape[1], c.text.hidden_size);
        const st_tensor *p = st_set_find(s, "vision_tower.vision_model.embeddings.patch_embedding.weight");
        assert_non_null(p);
        assert_int_equal(p->ndim, 4);
        assert_int_equal(p->shape[0], c.vision.hidden_size);
        assert_int_equal(p->shape[1], 3);
        assert_int_equal(p->shape[2], c.vision.patch_size);
        const st_tensor *l1 = st_set_find(s, "multi_modal_projector.linear_1.weight");
        assert_non_null(l1);
        assert_int_equal(l1->shape[0], c.text.hidden_size);
        assert_int_equal(l1->shape[1], c.vision.hidden_size);
        char name[128];
        snprintf(name, sizeof name, "language_model.model.layers.%d.self_attn.k_proj.weight",
                 c.text.num_hidden_layers - 1);
        const st_tensor *k = st_set_find(s, name);
        assert_non_null(k);
        assert_int_equal(k->shape[0], c.text.num_key_value_heads * c.text.head_dim);
        snprintf(name, sizeof name, "vision_tower.vision_model.encoder.layers.%d.mlp.fc1.weight",
                 c.vision.num_hidden_layers - 1);
        assert_non_null(st_set_find(s, name));
        assert_null(st_set_find(s, "language_model.model.layers.0.self_attn.rotary_emb.inv_freq"));

        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        st_file *f;
        assert_int_equal(st_file_open(path, &f, &err), LLAVA_OK);
        assert_string_equal(st_file_metadata(f, "format"), "pt");
        st_writer *w = st_writer_new();
        assert_int_equal(st_writer_set_metadata(w, "format", "pt", &err), LLAVA_OK);
        for (size_t k2 = 0; k2 < st_file_count(f); k2++) {
            const st_tensor *t = st_file_tensor(f, k2);
            assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), LLAVA_OK);
        }
        char copy[256];
        tmp_path(copy, sizeof copy, "copy.safetensors");
        assert_int_equal(st_writer_save(w, copy, &err), LLAVA_OK);
        st_writer_free(w);
        char *a, *b;
        size_t na, nb;
        assert_int_equal(llava_read_file(path, 64u << 20, &a, &na, &err), LLAVA_OK);
        assert_int_equal(llava_read_file(copy, 64u << 20, &b, &nb, &err), LLAVA_OK);
        assert_int_equal(na, nb);
        assert_true(memcmp(a, b, na) == 0);
        free(a);
        free(b);
        unlink(copy);
        st_file_close(f);
        st_set_close(s);
    }
}

/* Writes a shard holding the named 2-element F32 tensors. */
static void write_shard(const char *dir, const char *file, const char *const *names, size_t n) {
    static const float v[2] = {1.5f, -1.5f};
    static const int64_t shape[1] = {2};
    st_writer *w = st_writer_new();
    llava_error err;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(st_writer_add(w, names[i], LLAVA_DTYPE_F32, 1, shape, v, &err), LLAVA_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (st_writer_save(w, path, &err) != LLAVA_OK) fail_msg("%s", err.message);
    st_writer_free(w);
}

static void make_dir(char *out, size_t cap, const char *name) {
    tmp_path(out, cap, name);
    assert_int_equal(mkdir(out, 0755), 0);
}

static void test_sharded_sets(void **state) {
    (void)state;
    const char *s1[] = {"a", "b"}, *s2[] = {"c"};
    char dir[256], path[512];
    llava_error err;
    make_dir(dir, sizeof dir, "sharded");
    write_shard(dir, "model-00001-of-00002.safetensors", s1, 2);
    write_shard(dir, "model-00002-of-00002.safetensors", s2, 1);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, "{\"metadata\": {\"total_size\": 24}, \"weight_map\": {"
                     "\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\","
                     "\"c\": \"model-00002-of-00002.safetensors\"}}");
    st_set *s;
    if (st_set_open(dir, &s, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(st_set_file_count(s), 2);
    assert_int_equal(st_set_count(s), 3);
    assert_int_equal(st_set_total_bytes(s), 24);
    assert_non_null(strstr(st_set_find(s, "c")->file, "model-00002-of-00002.safetensors"));
    assert_non_null(strstr(st_set_find(s, "a")->file, "model-00001-of-00002.safetensors"));
    assert_true(((const float *)st_set_find(s, "c")->data)[1] == -1.5f);
    st_set_close(s);
    /* the index path itself opens the same set */
    if (st_set_open(path, &s, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(st_set_count(s), 3);
    st_set_close(s);

    /* a tensor mapped to the wrong shard */
    make_dir(dir, sizeof dir, "wrong_shard");
    write_shard(dir, "s1.safetensors", s1, 2);
    write_shard(dir, "s2.safetensors", s2, 1);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\", \"c\": \"s2.safetensors\"}}");
    expect_reject(dir, "tensor \"b\" is in shard \"s1.safetensors\"", "puts it in \"s2.safetensors\"", path);

    /* a tensor of a shard missing from the map */
    write_text(path, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"c\": \"s2.safetensors\"}}");
    expect_reject(dir, "tensor \"b\" is in shard \"s1.safetensors\"", "not in the weight_map", path);

    /* the map names a tensor its shard lacks */
    write_text(path, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", "
                     "\"c\": \"s2.safetensors\", \"d\": \"s2.safetensors\"}}");
    expect_reject(dir, "names tensor \"d\" in shard \"s2.safetensors\"", "does not hold it", path);

    /* a missing shard */
    write_text(path, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", "
                     "\"c\": \"s3.safetensors\"}}");
    expect_reject(dir, "shard \"s3.safetensors\"", "cannot open", path);

    /* malformed index files */
    write_text(path, "{\"weight_map\": [\"s1.safetensors\"]}");
    expect_reject(dir, "\"weight_map\" must be an object", path, NULL);
    write_text(path, "{\"weight_map\": {}}");
    expect_reject(dir, "\"weight_map\" is empty", path, NULL);
    write_text(path, "{\"weight_map\": {\"a\": \"../s1.safetensors\"}}");
    expect_reject(dir, "tensor \"a\"", "file name in the same folder", path);
    write_text(path, "{\"weight_map\": {\"a\": 1}}");
    expect_reject(dir, "tensor \"a\"", "file name", path);
    write_text(path, "{\"weight_map\": {\"a\": \"s1.safetensors\",");
    expect_reject(dir, "invalid JSON", path, NULL);

    /* a malformed shard is named through the index */
    snprintf(path, sizeof path, "%s/s2.safetensors", dir);
    write_raw(path, "{\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", UINT64_MAX, 4);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", \"c\": \"s2.safetensors\"}}");
    expect_reject(dir, "shard \"s2.safetensors\"", "tensor \"c\"", "extend past the end");

    /* no index: two candidate files are ambiguous, none is an error, one is taken */
    make_dir(dir, sizeof dir, "two_files");
    write_shard(dir, "x.safetensors", s1, 2);
    write_shard(dir, "y.safetensors", s2, 1);
    expect_reject(dir, dir, "2 .safetensors files", "no model.safetensors.index.json");
    make_dir(dir, sizeof dir, "no_files");
    expect_reject(dir, dir, "no model.safetensors.index.json", NULL);
    make_dir(dir, sizeof dir, "one_file");
    write_shard(dir, "weights.safetensors", s2, 1);
    if (st_set_open(dir, &s, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(st_set_count(s), 1);
    st_set_close(s);
}

/* The real llava-1.5-7b-hf index parses; its shards are not shipped, and the error names the
 * first one. */
static void test_real_index_without_shards(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/llava-1.5-7b-hf", data_dir());
    expect_reject(dir, "model.safetensors.index.json", "shard \"model-00001-of-00003.safetensors\"",
                  "cannot open");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_malformed_files, make_tmp, drop_tmp),
        cmocka_unit_test(test_header_parse),
        cmocka_unit_test_setup_teardown(test_writer_round_trip, make_tmp, drop_tmp),
        cmocka_unit_test_setup_teardown(test_fixture_checkpoints, make_tmp, drop_tmp),
        cmocka_unit_test_setup_teardown(test_sharded_sets, make_tmp, drop_tmp),
        cmocka_unit_test(test_real_index_without_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
