/* Unit tests of the server's pure parts: strict base64 (RFC 4648 vectors and every refusal),
 * image sniffing, the request-body parser for OpenAI and Ollama bodies (fields, defaults, and the
 * exact message and field of each refusal), and the answer formatting (UTF-8 cleaning, chunk and
 * error shapes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/base64.h"
#include "server/format.h"
#include "server/parse.h"

/* ---- base64 ---- */

static void decode_ok(const char *in, const char *want, size_t want_len) {
    unsigned char out[64];
    size_t n = 0;
    char msg[160] = "";
    assert_int_equal(srv_base64_decode(in, strlen(in), out, &n, msg, sizeof msg), 0);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

static void decode_bad(const char *in, const char *want_msg) {
    unsigned char out[64];
    size_t n = 0;
    char msg[160] = "";
    assert_int_equal(srv_base64_decode(in, strlen(in), out, &n, msg, sizeof msg), -1);
    assert_string_equal(msg, want_msg);
}

static void test_base64(void **state) {
    (void)state;
    decode_ok("Zg==", "f", 1);
    decode_ok("Zm8=", "fo", 2);
    decode_ok("Zm9v", "foo", 3);
    decode_ok("Zm9vYg==", "foob", 4);
    decode_ok("Zm9vYmE=", "fooba", 5);
    decode_ok("Zm9vYmFy", "foobar", 6);
    decode_ok("Zm9vYmE", "fooba", 5);          /* padding may be left out */
    decode_ok("Zm9v\r\nYmFy\n", "foobar", 6);  /* MIME line breaks are skipped */
    decode_ok("+/+/", "\xfb\xff\xbf", 3);
    decode_bad("", "empty base64 data");
    decode_bad("\r\n", "empty base64 data");
    decode_bad("Zm9v*mFy", "invalid base64 character '*' at offset 4");
    decode_bad("Zm9v YmFy", "invalid base64 character ' ' at offset 4");
    decode_bad("Zm9\x01", "invalid base64 byte 0x01 at offset 3");
    decode_bad("Zm9vY", "truncated base64 data (5 characters, one too many for whole bytes)");
    decode_bad("Zg=a", "base64 data after '=' padding (offset 2)");
    decode_bad("Zg=", "wrong base64 padding (1 '=' after 2 characters)");
    decode_bad("Zm9v====", "wrong base64 padding (4 '=' after 4 characters)");
    decode_bad("Zh==", "non-canonical base64 ending (unused bits set)");
    decode_bad("Zm9=", "non-canonical base64 ending (unused bits set)");
    assert_true(srv_base64_max_decoded(8) >= 6);
}

static void test_image_format(void **state) {
    (void)state;
    assert_string_equal(srv_image_format((const unsigned char *)"\xff\xd8\xff\xe0", 4), "jpeg");
    assert_string_equal(srv_image_format((const unsigned char *)"\x89PNG\r\n\x1a\n", 8), "png");
    assert_string_equal(srv_image_format((const unsigned char *)"RIFF\0\0\0\0WEBPVP8 ", 16), "webp");
    assert_string_equal(srv_image_format((const unsigned char *)"GIF89a", 6), "gif");
    assert_string_equal(srv_image_format((const unsigned char *)"BM\0\0\0\0\0\0\0\0\0\0\0\0", 14),
                        "bmp");
    assert_null(srv_image_format((const unsigned char *)"\x89PNG", 4));
    assert_null(srv_image_format((const unsigned char *)"hello world!", 12));
}

/* ---- parser: accepted bodies ---- */

static const srv_parse_options OPTS = {.allow_local_files = false, .allow_remote_images = false,
                                       .max_images = 4};
/* a 1x1 PNG's first 8 bytes are enough for the sniffer; the engine decodes the rest */
#define PNG_B64 "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"

static srv_parsed *parse_ok(srv_api api, const char *body, const srv_parse_options *o) {
    srv_parse_error e;
    srv_parsed *p = srv_parse_request(api, body, strlen(body), o ? o : &OPTS, &e);
    if (!p) fail_msg("refused: %d %s", e.status, e.message);
    return p;
}

static void test_openai_body(void **state) {
    (void)state;
    const char *body =
        "{\"model\": \"llava\", \"stream\": true, \"stream_options\": {\"include_usage\": true},"
        " \"temperature\": 0.5, \"top_p\": 0.9, \"seed\": -3, \"max_completion_tokens\": 7,"
        " \"frequency_penalty\": 0.25, \"presence_penalty\": -1, \"stop\": [\"\\n\", \"END\"],"
        " \"n\": 1, \"tools\": [], \"logprobs\": false, \"user\": \"ignored\","
        " \"messages\": [{\"role\": \"developer\", \"content\": \"Be brief.\"},"
        "  {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Look:\"},"
        "   {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/png;base64," PNG_B64
        "\", \"detail\": \"low\"}}, {\"type\": \"text\", \"text\": \"what is it?\"}]},"
        "  {\"role\": \"assistant\", \"content\": \"A dot.\"}, {\"role\": \"user\", \"content\":"
        "   \"Sure?\"}]}";
    srv_parsed *p = parse_ok(SRV_API_OPENAI_CHAT, body, NULL);
    const llava_request *r = &p->req;
    assert_string_equal(p->model, "llava");
    assert_true(p->stream && p->include_usage && p->seed_given);
    assert_int_equal(r->n_messages, 4);
    assert_string_equal(r->messages[0].role, "system");
    assert_string_equal(r->messages[1].role, "user");
    assert_string_equal(r->messages[1].content, "Look: what is it?");
    assert_int_equal(r->messages[1].n_images, 1);
    assert_ptr_equal(r->messages[1].images, &p->images[0]);
    assert_int_equal(p->images[0].size, 69);
    assert_memory_equal(p->images[0].data, "\x89PNG\r\n\x1a\n", 8);
    assert_string_equal(p->sources[0].field, "messages[1].content[1].image_url.url");
    assert_int_equal(r->messages[3].n_images, 0);
    assert_string_equal(r->messages[3].content, "Sure?");
    assert_null(r->prompt);
    assert_int_equal(r->max_tokens, 7);
    assert_float_equal(r->sampling.temperature, 0.5, 1e-6);
    assert_float_equal(r->sampling.top_p, 0.9, 1e-6);
    assert_float_equal(r->sampling.frequency_penalty, 0.25, 1e-6);
    assert_float_equal(r->sampling.presence_penalty, -1, 1e-6);
    assert_int_equal(r->sampling.seed, (uint64_t)-3);
    assert_int_equal(r->n_stop, 2);
    assert_string_equal(r->stop[0], "\n");
    assert_string_equal(r->stop[1], "END");
    srv_parsed_free(p);

    /* defaults: OpenAI's temperature 1, no stream, no limit */
    p = parse_ok(SRV_API_OPENAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
                 NULL);
    assert_false(p->stream || p->seed_given);
    assert_null(p->model);
    assert_float_equal(p->req.sampling.temperature, 1.0, 1e-6);
    assert_int_equal(p->req.max_tokens, 0);
    assert_int_equal(p->req.n_stop, 0);
    srv_parsed_free(p);
}

static void test_urls(void **state) {
    (void)state;
    srv_parse_options o = OPTS;
    o.allow_local_files = o.allow_remote_images = true;
    srv_parsed *p = parse_ok(SRV_API_OPENAI_CHAT,
        "{\"messages\": [{\"role\": \"user\", \"content\": ["
        "{\"type\": \"image_url\", \"image_url\": {\"url\": \"https://example.com/a.png?x=1\"}},"
        "{\"type\": \"image_url\", \"image_url\": \"file:///tmp/my%20pic.png\"},"
        "{\"type\": \"image_url\", \"image_url\": {\"url\": \"file://localhost/b.jpg\"}}]}]}", &o);
    assert_int_equal(p->n_images, 3);
    assert_int_equal(p->n_remote, 1);
    assert_string_equal(p->sources[0].url, "https://example.com/a.png?x=1");
    assert_null(p->images[0].data);
    assert_string_equal(p->images[1].path, "/tmp/my pic.png");
    assert_null(p->sources[1].url);
    assert_string_equal(p->images[2].path, "/b.jpg");
    srv_parsed_free(p);
}

static void test_ollama_bodies(void **state) {
    (void)state;
    /* chat with Ollama's defaults */
    srv_parsed *p = parse_ok(SRV_API_OLLAMA_CHAT,
        "{\"model\": \"llava:7b\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\","
        " \"images\": [\"" PNG_B64 "\"]}], \"options\": {\"seed\": -1, \"num_predict\": -1},"
        " \"keep_alive\": \"5m\"}", NULL);
    assert_true(p->stream);
    assert_false(p->seed_given);
    assert_string_equal(p->model, "llava:7b");
    assert_float_equal(p->req.sampling.temperature, 0.8, 1e-6);
    assert_int_equal(p->req.sampling.top_k, 40);
    assert_float_equal(p->req.sampling.top_p, 0.9, 1e-6);
    assert_int_equal(p->req.max_tokens, 0);
    assert_int_equal(p->req.messages[0].n_images, 1);
    assert_string_equal(p->sources[0].field, "messages[0].images[0]");
    srv_parsed_free(p);

    /* options */
    p = parse_ok(SRV_API_OLLAMA_CHAT,
        "{\"model\": \"m\", \"stream\": false, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
        " \"options\": {\"temperature\": 0, \"top_k\": 5, \"top_p\": 0.5, \"min_p\": 0.1,"
        " \"repeat_penalty\": 1.2, \"seed\": 42, \"num_predict\": 12, \"stop\": [\"a\"],"
        " \"num_ctx\": 8192}}", NULL);
    const llava_sampling *s = &p->req.sampling;
    assert_false(p->stream);
    assert_true(p->seed_given);
    assert_float_equal(s->temperature, 0, 1e-6);
    assert_int_equal(s->top_k, 5);
    assert_float_equal(s->min_p, 0.1, 1e-6);
    assert_float_equal(s->repetition_penalty, 1.2, 1e-6);
    assert_int_equal(s->seed, 42);
    assert_int_equal(p->req.max_tokens, 12);
    assert_int_equal(p->req.n_stop, 1);
    srv_parsed_free(p);

    /* generate: system + prompt become two messages; raw keeps the prompt as is */
    p = parse_ok(SRV_API_OLLAMA_GENERATE,
                 "{\"model\": \"m\", \"system\": \"S\", \"prompt\": \"P\", \"images\": [\"" PNG_B64
                 "\"]}", NULL);
    assert_int_equal(p->req.n_messages, 2);
    assert_string_equal(p->req.messages[0].role, "system");
    assert_string_equal(p->req.messages[1].content, "P");
    assert_int_equal(p->req.messages[1].n_images, 1);
    srv_parsed_free(p);
    p = parse_ok(SRV_API_OLLAMA_GENERATE,
                 "{\"model\": \"m\", \"raw\": true, \"prompt\": \"USER: <image>\\nQ ASSISTANT:\","
                 " \"images\": [\"" PNG_B64 "\"]}", NULL);
    assert_int_equal(p->req.n_messages, 0);
    assert_string_equal(p->req.prompt, "USER: <image>\nQ ASSISTANT:");
    assert_int_equal(p->req.n_images, 1);
    srv_parsed_free(p);

    /* load-only requests */
    p = parse_ok(SRV_API_OLLAMA_GENERATE, "{\"model\": \"m\"}", NULL);
    assert_true(p->load_only);
    srv_parsed_free(p);
    p = parse_ok(SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"messages\": []}", NULL);
    assert_true(p->load_only);
    srv_parsed_free(p);
}

/* ---- parser: refusals ---- */

typedef struct bad_case {
    srv_api api;
    const char *body;
    const char *message;
    const char *param;
} bad_case;

static const bad_case BAD[] = {
    {SRV_API_OPENAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 2}",
     "n: only n = 1 is supported, got 2", "n"},
    {SRV_API_OPENAI_CHAT, "{\"messages\": 3}", "messages: expected an array of messages",
     "messages"},
    {SRV_API_OPENAI_CHAT, "{}", "messages: missing", "messages"},
    {SRV_API_OPENAI_CHAT, "{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}",
     "messages[0].role: expected a string, got a number", "messages[0].role"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"video\"}]}]}",
     "messages[0].content[0].type: unsupported content part type 'video' (text or image_url)",
     "messages[0].content[0].type"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\","
     " \"image_url\": {\"url\": \"data:image/png;base64,AAAA\"}}]}]}",
     "messages[0].content[0].image_url.url: the 3 decoded bytes are not a JPEG, PNG, WebP, GIF "
     "or BMP image", "messages[0].content[0].image_url.url"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": null,"
     " \"top_p\": 2}", "top_p: 2 is out of range [0, 1]", "top_p"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 1e300}",
     "max_tokens: expected an integer, got 1e+300", "max_tokens"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 5,"
     " \"max_completion_tokens\": 6}",
     "max_completion_tokens: differs from max_tokens (set only one)", "max_completion_tokens"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stop\": [\"1\",\"2\",\"3\","
     "\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
     "stop[16]: more than 16 stop strings", "stop[16]"},
    {SRV_API_OPENAI_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\", \"tool_calls\": [{}]}]}",
     "messages[0].tool_calls: tool calls are not supported", "messages[0].tool_calls"},
    {SRV_API_OPENAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
     " \"logit_bias\": {\"1\": 5}}", "logit_bias: not supported", "logit_bias"},
    {SRV_API_OPENAI_CHAT, "{\"a\": 1} x", "invalid JSON at line 1, column 10: end of file "
     "expected near 'x'", ""},
    {SRV_API_OPENAI_CHAT, "\"text\"", "the request body must be a JSON object, got a string", ""},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"\"}", "model: missing (the model name is required)",
     "model"},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"options\": [1]}", "options: expected an object",
     "options"},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"think\": true}", "think: not supported by this "
     "model", "think"},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"messages\": [{\"role\": \"assistant\","
     " \"content\": \"x\", \"images\": [\"" PNG_B64 "\"]}]}",
     "messages[0].images: images are only allowed in user messages", "messages[0].images"},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\":"
     " \"x\", \"images\": [\"" PNG_B64 "\",\"" PNG_B64 "\",\"" PNG_B64 "\",\"" PNG_B64 "\",\""
     PNG_B64 "\"]}]}", "messages[0].images[4]: more than 4 images in one request",
     "messages[0].images[4]"},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\":"
     " \"x\", \"images\": [\"data:image/png;base64,@@\"]}]}",
     "messages[0].images[0]: invalid base64 character '@' at offset 0", "messages[0].images[0]"},
    {SRV_API_OLLAMA_CHAT, "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\":"
     " \"x\", \"images\": [\"http://x/y.png\"]}]}",
     "messages[0].images[0]: expected base64 image data, got a URL", "messages[0].images[0]"},
    {SRV_API_OLLAMA_GENERATE, "{\"model\": \"m\", \"raw\": true, \"system\": \"s\", \"prompt\":"
     " \"p\"}", "system: not allowed with raw: true", "system"},
    {SRV_API_OLLAMA_GENERATE, "{\"model\": \"m\", \"raw\": true}",
     "prompt: empty (raw mode needs the whole prompt)", "prompt"},
    {SRV_API_OLLAMA_GENERATE, "{\"model\": \"m\", \"prompt\": \"<image><image>\", \"images\":"
     " [\"" PNG_B64 "\"]}", "prompt: 2 <image> markers in the prompt but 1 image", "prompt"},
    {SRV_API_OLLAMA_GENERATE, "{\"model\": \"m\", \"prompt\": \"p\", \"suffix\": \"s\"}",
     "suffix: fill-in-the-middle is not supported", "suffix"},
    {SRV_API_OLLAMA_GENERATE, "{\"model\": \"m\", \"prompt\": \"p\", \"options\": {\"seed\":"
     " 1.5}}", "options.seed: expected an integer, got 1.5", "options.seed"},
};

static void test_refusals(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        const bad_case *b = &BAD[i];
        srv_parse_error e;
        srv_parsed *p = srv_parse_request(b->api, b->body, strlen(b->body), &OPTS, &e);
        if (p) fail_msg("case %zu accepted: %s", i, b->body);
        if (strcmp(e.message, b->message) != 0)
            fail_msg("case %zu: '%s' != '%s'", i, e.message, b->message);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.param, b->param);
    }
}

/* ---- formatting ---- */

static void test_format(void **state) {
    (void)state;
    size_t n;
    char *s = srv_utf8_clean("a\xff" "b\xc3\xa9\xe2\x82", 7, &n);
    assert_string_equal(s, "a\xef\xbf\xbd" "b\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd");
    assert_int_equal(n, strlen(s));
    free(s);
    s = srv_utf8_clean("\xed\xa0\x80", 3, &n); /* a UTF-16 surrogate is not UTF-8 */
    assert_string_equal(s, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    free(s);

    srv_answer a = {.id = "chatcmpl-1", .created = 1700000000,
                    .created_at = "2023-11-14T22:13:20.000000Z", .model = "m"};
    s = srv_openai_chunk(&a, NULL, "hi\xff", 3, NULL, false);
    assert_string_equal(s, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                           "\"created\":1700000000,\"model\":\"m\",\"system_fingerprint\":null,"
                           "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\xef\xbf\xbd\"},"
                           "\"logprobs\":null,\"finish_reason\":null}]}");
    free(s);
    llava_usage u = {.prompt_tokens = 3, .completion_tokens = 2};
    s = srv_openai_usage_chunk(&a, &u);
    assert_non_null(strstr(s, "\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
                              "\"completion_tokens\":2,\"total_tokens\":5}"));
    free(s);
    s = srv_openai_error(429, "busy", NULL);
    assert_string_equal(s, "{\"error\":{\"message\":\"busy\",\"type\":\"rate_limit_error\","
                           "\"param\":null,\"code\":\"rate_limit_exceeded\"}}");
    free(s);
    llava_timings t = {.total_ms = 2, .image_ms = 0.5, .prefill_ms = 0.25, .decode_ms = 1};
    s = srv_ollama_final(&a, false, "", 0, "stop", &u, &t);
    assert_string_equal(s, "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:20.000000Z\","
                           "\"response\":\"\",\"done_reason\":\"stop\",\"done\":true,"
                           "\"total_duration\":2000000,\"load_duration\":0,"
                           "\"prompt_eval_count\":3,\"prompt_eval_duration\":750000,"
                           "\"eval_count\":2,\"eval_duration\":1000000}");
    free(s);
    s = srv_ollama_chunk(&a, true, "x", 1);
    assert_string_equal(s, "{\"model\":\"m\",\"created_at\":\"2023-11-14T22:13:20.000000Z\","
                           "\"message\":{\"role\":\"assistant\",\"content\":\"x\"},"
                           "\"done\":false}");
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),        cmocka_unit_test(test_image_format),
        cmocka_unit_test(test_openai_body),   cmocka_unit_test(test_urls),
        cmocka_unit_test(test_ollama_bodies), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
