/* Tests of src/base: error formatting, dtype conversions, JSON lookups, file reads. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/dtype.h"
#include "base/error.h"
#include "base/file.h"
#include "base/json.h"

static void test_error_set_and_prefix(void **state) {
    (void)state;
    llava_error err;
    llava_error_clear(&err);
    assert_int_equal(err.code, LLAVA_OK);
    assert_int_equal(llava_error_set(&err, LLAVA_ERR_FORMAT, "bad %s %d", "thing", 7), LLAVA_ERR_FORMAT);
    assert_string_equal(err.message, "bad thing 7");
    llava_error_prefix(&err, "file.json");
    assert_string_equal(err.message, "file.json: bad thing 7");
    assert_string_equal(llava_status_name(LLAVA_ERR_BUSY), "busy");
}

/* Every half-precision bit pattern converts to float and back unchanged (NaNs stay NaN). */
static void test_f16_roundtrip_all(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = llava_f16_to_f32((uint16_t)h);
        uint16_t back = llava_f32_to_f16(f);
        if (isnan(f)) {
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
        } else {
            assert_int_equal(back, h);
        }
    }
    assert_true(llava_f16_to_f32(0x3c00) == 1.0f);
    assert_true(llava_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_int_equal(llava_f32_to_f16(65520.0f), 0x7c00); /* rounds up to infinity */
    assert_int_equal(llava_f32_to_f16(65519.0f), 0x7bff);
    /* ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    assert_int_equal(llava_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    assert_int_equal(llava_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = llava_bf16_to_f32((uint16_t)h);
        if (!isnan(f)) assert_int_equal(llava_f32_to_bf16(f), h);
    }
    assert_int_equal(llava_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80); /* tie to even */
}

static void test_dtype_names(void **state) {
    (void)state;
    llava_dtype t;
    assert_int_equal(llava_dtype_parse("BF16", &t), 0);
    assert_int_equal(t, LLAVA_DTYPE_BF16);
    assert_int_equal(llava_dtype_size(t), 2);
    assert_int_equal(llava_dtype_parse("F8_E4M3", &t), -1);
    assert_string_equal(llava_dtype_name(LLAVA_DTYPE_I64), "I64");
}

static void test_json_typed_lookups(void **state) {
    (void)state;
    llava_error err;
    const char *txt = "{\"a\": 3, \"b\": 2.5, \"c\": true, \"d\": \"x\", \"e\": 4096.0, \"n\": null, \"huge\": 3.2e65}";
    json_t *j = llava_json_load_buffer(txt, strlen(txt), "t.json", &err);
    assert_non_null(j);
    int64_t i = -1;
    double d = 0;
    bool b = false;
    const char *s = NULL;
    assert_int_equal(llava_json_get_int(j, "a", &i, "t.json", &err), LLAVA_OK);
    assert_int_equal(i, 3);
    assert_int_equal(llava_json_get_int(j, "e", &i, "t.json", &err), LLAVA_OK);
    assert_int_equal(i, 4096);
    assert_int_equal(llava_json_get_int(j, "missing", &i, "t.json", &err), LLAVA_OK);
    assert_int_equal(i, 4096);
    assert_int_equal(llava_json_get_int(j, "n", &i, "t.json", &err), LLAVA_OK);
    assert_int_equal(llava_json_get_int(j, "b", &i, "t.json", &err), LLAVA_ERR_FORMAT);
    assert_non_null(strstr(err.message, "t.json: \"b\" must be an integer"));
    assert_int_equal(llava_json_get_int(j, "huge", &i, "t.json", &err), LLAVA_ERR_FORMAT);
    assert_int_equal(llava_json_get_double(j, "b", &d, "t.json", &err), LLAVA_OK);
    assert_true(d == 2.5);
    assert_int_equal(llava_json_get_bool(j, "c", &b, "t.json", &err), LLAVA_OK);
    assert_true(b);
    assert_int_equal(llava_json_get_bool(j, "a", &b, "t.json", &err), LLAVA_ERR_FORMAT);
    assert_int_equal(llava_json_get_string(j, "d", &s, "t.json", &err), LLAVA_OK);
    assert_string_equal(s, "x");
    assert_int_equal(llava_json_get_string(j, "a", &s, "t.json", &err), LLAVA_ERR_FORMAT);
    json_decref(j);

    assert_null(llava_json_load_buffer("{\"a\": 1,}", 9, "bad.json", &err));
    assert_int_equal(err.code, LLAVA_ERR_FORMAT);
    assert_non_null(strstr(err.message, "bad.json: invalid JSON at line 1"));
    assert_null(llava_json_load_buffer("{\"a\":1,\"a\":2}", 13, "dup.json", &err));
}

static void test_read_file_limits(void **state) {
    (void)state;
    llava_error err;
    char *buf;
    size_t len;
    assert_int_equal(llava_read_file("/nonexistent/x", 100, &buf, &len, &err), LLAVA_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/x"));
    char path[] = "/tmp/llava_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(llava_write_file(path, "hello", 5, &err), LLAVA_OK);
    assert_int_equal(llava_read_file(path, 100, &buf, &len, &err), LLAVA_OK);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    assert_int_equal(llava_read_file(path, 4, &buf, &len, &err), LLAVA_ERR_LIMIT);
    remove(path);
    assert_int_equal(llava_read_file("/tmp", 100, &buf, &len, &err), LLAVA_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_set_and_prefix), cmocka_unit_test(test_f16_roundtrip_all),
        cmocka_unit_test(test_bf16),                 cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_json_typed_lookups),   cmocka_unit_test(test_read_file_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
