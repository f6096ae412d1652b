/* Chat templates: exact prompt strings for each template, single and multi-turn, with images,
 * system prompts, detection from real chat_template files, and bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/file.h"
#include "text/template.h"

static void expect(template_kind k, const template_message *m, size_t n, bool gen,
                   const char *want) {
    char *got = NULL;
    llava_error err;
    assert_int_equal(template_render(k, m, n, gen, &got, &err), LLAVA_OK);
    assert_string_equal(got, want);
    free(got);
}

static void test_llava_single(void **state) {
    (void)state;
    /* the fixtures' prompts, as llava-hf's processor renders them */
    template_message m = {"user", "What is shown in this image?", 1};
    expect(TEMPLATE_LLAVA, &m, 1, true,
           "USER: <image>\nWhat is shown in this image? ASSISTANT:");
    template_message two = {"user", "Compare.", 2};
    expect(TEMPLATE_LLAVA, &two, 1, true, "USER: <image>\n<image>\nCompare. ASSISTANT:");
    template_message marked = {"user", "<image>\nWhat?", 0};
    expect(TEMPLATE_LLAVA, &marked, 1, true, "USER: <image>\nWhat? ASSISTANT:");
    expect(TEMPLATE_LLAVA, &marked, 1, false, "USER: <image>\nWhat? ");
}

static void test_llava_multi_turn(void **state) {
    (void)state;
    /* llava-hf's chat_template (tests/data/llava-1.5-7b-hf/chat_template.json): assistant text
     * gets a trailing space like any text part, system text has no role prefix */
    template_message m[] = {
        {"system", "Be brief.", 0},
        {"user", "What is this?", 1},
        {"assistant", "A cat.", 0},
        {"user", "What colour?", 0},
    };
    expect(TEMPLATE_LLAVA, m, 4, true,
           "Be brief. USER: <image>\nWhat is this? ASSISTANT: A cat. USER: What colour? "
           "ASSISTANT:");
}

static void test_vicuna(void **state) {
    (void)state;
    template_message m[] = {
        {"user", "What is this?", 1},
        {"assistant", "A cat.", 0},
        {"user", "Sure?", 0},
    };
    expect(TEMPLATE_VICUNA, m, 3, true,
           "A chat between a curious human and an artificial intelligence assistant. The "
           "assistant gives helpful, detailed, and polite answers to the human's questions. "
           "USER: <image>\nWhat is this? ASSISTANT: A cat.</s>USER: Sure? ASSISTANT:");
    template_message s[] = {{"system", "You are terse.", 0}, {"user", "Hi", 0}};
    expect(TEMPLATE_VICUNA, s, 2, true, "You are terse. USER: Hi ASSISTANT:");
}

static void test_mistral(void **state) {
    (void)state;
    template_message m = {"user", "What is shown in this image?", 1};
    expect(TEMPLATE_MISTRAL, &m, 1, true, "[INST] <image>\nWhat is shown in this image? [/INST]");
    template_message t[] = {
        {"system", "Be brief.", 0},
        {"user", "What is this?", 1},
        {"assistant", "A cat.", 0},
        {"user", "Sure?", 0},
    };
    expect(TEMPLATE_MISTRAL, t, 4, true,
           "[INST] Be brief.\n\n<image>\nWhat is this? [/INST] A cat.</s>[INST] Sure? [/INST]");
}

static void test_chatml(void **state) {
    (void)state;
    template_message t[] = {
        {"system", "Be brief.", 0},
        {"user", "What is this?", 1},
        {"assistant", "A cat.", 0},
        {"user", "Sure?", 0},
    };
    expect(TEMPLATE_CHATML, t, 4, true,
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\nWhat is this?"
           "<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n<|im_start|>user\nSure?"
           "<|im_end|>\n<|im_start|>assistant\n");
    expect(TEMPLATE_CHATML, t, 2, false,
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\nWhat is this?"
           "<|im_end|>\n");
}

static void test_names(void **state) {
    (void)state;
    template_kind k;
    const char *names[] = {"llava", "vicuna", "mistral", "chatml"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(template_from_name(names[i], &k), 0);
        assert_int_equal((int)k, i);
        assert_string_equal(template_name(k), names[i]);
    }
    assert_int_equal(template_from_name("llava-1.5", &k), 0);
    assert_int_equal(k, TEMPLATE_LLAVA);
    assert_int_equal(template_from_name("alpaca", &k), -1);
    assert_int_equal(template_from_name("", &k), -1);
    assert_int_equal(template_from_name(NULL, &k), -1);
}

static void test_detect(void **state) {
    (void)state;
    char *json = NULL;
    size_t len = 0;
    llava_error err;
    assert_int_equal(llava_read_file(LLAVA_TEST_DATA "/llava-1.5-7b-hf/chat_template.json", 1 << 20,
                                     &json, &len, &err),
                     LLAVA_OK);
    assert_int_equal(template_detect(json, "llama"), TEMPLATE_LLAVA);
    free(json);
    assert_int_equal(template_detect("{{ '[INST] ' + m }}", "llama"), TEMPLATE_MISTRAL);
    assert_int_equal(template_detect("<|im_start|>{{ role }}", "llama"), TEMPLATE_CHATML);
    assert_int_equal(template_detect(NULL, "mistral"), TEMPLATE_MISTRAL);
    assert_int_equal(template_detect(NULL, "llama"), TEMPLATE_LLAVA);
    assert_int_equal(template_detect("", NULL), TEMPLATE_LLAVA);
}

static void test_bad(void **state) {
    (void)state;
    char *out = (char *)1;
    llava_error err;
    template_message m = {"tool", "x", 0};
    assert_int_equal(template_render(TEMPLATE_LLAVA, &m, 1, true, &out, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_null(out);
    assert_non_null(strstr(err.message, "message 0"));
    assert_non_null(strstr(err.message, "'tool'"));
    template_message neg = {"user", "x", -1};
    assert_int_equal(template_render(TEMPLATE_LLAVA, &neg, 1, true, &out, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_int_equal(template_render((template_kind)99, &neg + 0, 0, true, &out, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
}

static void test_count(void **state) {
    (void)state;
    assert_int_equal(template_count_images("no images"), 0);
    assert_int_equal(template_count_images("<image>\n<image>x<image"), 2);
    assert_int_equal(template_count_images("<image><image><image>"), 3);
    assert_int_equal(template_count_images(NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llava_single), cmocka_unit_test(test_llava_multi_turn),
        cmocka_unit_test(test_vicuna),       cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_chatml),       cmocka_unit_test(test_names),
        cmocka_unit_test(test_detect),       cmocka_unit_test(test_bad),
        cmocka_unit_test(test_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
