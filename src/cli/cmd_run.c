/* `llava run`: answers a prompt about images with a llava-hf checkpoint, streaming the text to
 * stdout (timings to stderr), or printing one JSON object with --json. It goes through the
 * engine's blocking call, so the model runs on the engine's worker as in every other front end. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "llava.h"

#define MAX_IMAGES 16
#define MAX_STOPS 16

static const char RUN_USAGE[] =
    "usage: llava run [-m DIR] -i IMAGE [-i IMAGE2 ...] -p PROMPT [options]\n"
    "  -m, --model DIR         llava-hf checkpoint folder (default: the bundled\n"
    "                          models/tiny-llava-shapes)\n"
    "  -i, --image FILE        an image (JPEG, PNG, WebP, ...); repeat for several\n"
    "  -p, --prompt TEXT       the question; <image> marks where images go (else before it)\n"
    "      --raw               use the prompt text as is, without a chat template\n"
    "      --template NAME     llava, vicuna, mistral or chatml (default: the model's)\n"
    "  -n, --max-tokens N      tokens to generate at most (default 256)\n"
    "      --temp T            sampling temperature (default 0: greedy)\n"
    "      --top-k K           keep the K most likely tokens (0: off)\n"
    "      --top-p P           keep the smallest set with probability >= P (1: off)\n"
    "      --min-p P           keep tokens with p >= P * p_max (0: off)\n"
    "      --repeat-penalty R  repetition penalty over prompt and output (1: off)\n"
    "      --presence-penalty X, --frequency-penalty X   OpenAI-style penalties (0: off)\n"
    "      --seed S            sampling seed (default 0)\n"
    "      --stop STR          stop before this text (repeatable)\n"
    "  -t, --threads N         compute threads (default: all cores)\n"
    "      --quant T           quantize the weights at load: q8_0 or q4_0 (int8 products)\n"
    "      --half PARTS        half-precision products (f16 multiply-adds, ~1e-3 relative error;\n"
    "                          CPUs with AVX512-FP16) for vision,projector,text,lm_head or all\n"
    "      --kv-cache T        the KV cache's type: f32 (default, exact) or f16 (half the memory\n"
    "                          and cache reads, ~1e-3 relative error; llama.cpp's default)\n"
    "      --no-mmap           read the weights into memory at load instead of mapping the\n"
    "                          files (slower load, faster and steadier decode)\n"
    "      --ctx N             context limit (default: the model's)\n"
    "      --json              print one JSON object instead of streaming\n";

static int parse_int(const char *s, const char *what, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return cli_fail("%s: '%s' is not an integer in [%ld, %ld]", what, s, lo, hi);
    *out = v;
    return 0;
}

static int parse_float(const char *s, const char *what, double lo, double hi, float *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi))
        return cli_fail("%s: '%s' is not a number in [%g, %g]", what, s, lo, hi);
    *out = (float)v;
    return 0;
}

typedef struct run_output {
    bool json;
    json_t *ids;
    char *text;
    size_t len, cap;
    bool failed;
} run_output;

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    run_output *o = user;
    if (id >= 0) json_array_append_new(o->ids, json_integer(id));
    if (!o->json) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        return 0;
    }
    if (o->len + len + 1 > o->cap) {
        size_t cap = (o->len + len + 1) * 2;
        char *t = realloc(o->text, cap);
        if (!t) {
            o->failed = true;
            return 1;
        }
        o->text = t;
        o->cap = cap;
    }
    memcpy(o->text + o->len, text, len);
    o->len += len;
    o->text[o->len] = '\0';
    return 0;
}

static const char *finish_name(llava_done_reason r) {
    return r == LLAVA_DONE_LENGTH ? "length" : r == LLAVA_DONE_CANCELLED ? "cancelled" : "stop";
}

int cmd_run(int argc, char **argv) {
    enum { O_RAW = 256, O_TEMPLATE, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REP, O_PRES, O_FREQ, O_SEED,
           O_STOP, O_CTX, O_JSON, O_HELP, O_HALF, O_QUANT, O_KV, O_NOMMAP };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"image", required_argument, 0, 'i'},
        {"prompt", required_argument, 0, 'p'},   {"raw", no_argument, 0, O_RAW},
        {"template", required_argument, 0, O_TEMPLATE},
        {"max-tokens", required_argument, 0, 'n'}, {"temp", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"min-p", required_argument, 0, O_MINP}, {"repeat-penalty", required_argument, 0, O_REP},
        {"presence-penalty", required_argument, 0, O_PRES},
        {"frequency-penalty", required_argument, 0, O_FREQ},
        {"seed", required_argument, 0, O_SEED},  {"stop", required_argument, 0, O_STOP},
        {"threads", required_argument, 0, 't'},  {"ctx", required_argument, 0, O_CTX},
        {"json", no_argument, 0, O_JSON},        {"help", no_argument, 0, O_HELP},
        {"half", required_argument, 0, O_HALF},  {"quant", required_argument, 0, O_QUANT},
        {"kv-cache", required_argument, 0, O_KV}, {"no-mmap", no_argument, 0, O_NOMMAP},
        {0, 0, 0, 0}};
    const char *model_dir = NULL, *prompt = NULL, *images[MAX_IMAGES], *stops[MAX_STOPS];
    int n_images = 0, n_stops = 0;
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    llava_request req;
    memset(&req, 0, sizeof req);
    long max_tokens = 256, v = 0;
    bool json = false, raw = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:i:p:n:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'i':
            if (n_images == MAX_IMAGES) return cli_fail("at most %d images", MAX_IMAGES);
            images[n_images++] = optarg;
            break;
        case 'p': prompt = optarg; break;
        case O_RAW: raw = true; break;
        case O_TEMPLATE: req.template_name = optarg; break;
        case 'n':
            if (parse_int(optarg, "--max-tokens", 1, 1 << 20, &max_tokens)) return 1;
            break;
        case O_TEMP:
            if (parse_float(optarg, "--temp", 0, 100, &req.sampling.temperature)) return 1;
            break;
        case O_TOPK:
            if (parse_int(optarg, "--top-k", 0, 1 << 30, &v)) return 1;
            req.sampling.top_k = (int)v;
            break;
        case O_TOPP:
            if (parse_float(optarg, "--top-p", 0, 1, &req.sampling.top_p)) return 1;
            break;
        case O_MINP:
            if (parse_float(optarg, "--min-p", 0, 1, &req.sampling.min_p)) return 1;
            break;
        case O_REP:
            if (parse_float(optarg, "--repeat-penalty", 0.01, 100, &req.sampling.repetition_penalty))
                return 1;
            break;
        case O_PRES:
            if (parse_float(optarg, "--presence-penalty", -2, 2, &req.sampling.presence_penalty))
                return 1;
            break;
        case O_FREQ:
            if (parse_float(optarg, "--frequency-penalty", -2, 2, &req.sampling.frequency_penalty))
                return 1;
            break;
        case O_SEED: {
            char *end;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (!*optarg || *end) return cli_fail("--seed: '%s' is not an integer", optarg);
            req.sampling.seed = s;
            break;
        }
        case O_STOP:
            if (n_stops == MAX_STOPS) return cli_fail("at most %d stop strings", MAX_STOPS);
            if (!*optarg) return cli_fail("--stop: empty stop string");
            stops[n_stops++] = optarg;
            break;
        case 't':
            if (parse_int(optarg, "--threads", 1, 1024, &v)) return 1;
            cfg.n_threads = (int)v;
            break;
        case O_QUANT:
            if (cli_parse_quant(optarg, &cfg.quant) != 0)
                return cli_fail("--quant: '%s': expected q8_0 or q4_0", optarg);
            break;
        case O_KV:
            if (cli_parse_kv_cache(optarg, &cfg.kv_cache) != 0)
                return cli_fail("--kv-cache: '%s': expected f32 or f16", optarg);
            break;
        case O_NOMMAP: cfg.no_mmap = true; break;
        case O_HALF:
            if (cli_parse_parts(optarg, &cfg.half_parts) != 0)
                return cli_fail("--half: '%s': expected parts from vision,projector,text,lm_head,all", optarg);
            break;
        case O_CTX:
            if (parse_int(optarg, "--ctx", 1, 1 << 24, &v)) return 1;
            cfg.n_ctx = (int)v;
            break;
        case O_JSON: json = true; break;
        case O_HELP: fputs(RUN_USAGE, stdout); return 0;
        default:
            fputs(RUN_USAGE, stderr);
            return cli_fail("run: bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail("run: unexpected argument '%s'", argv[optind]);
    char default_dir[4096];
    if (!model_dir && !(model_dir = cli_default_model(default_dir, sizeof default_dir)))
        return cli_fail("run: no model given and the bundled models/tiny-llava-shapes was not "
                        "found: pass -m DIR (a llava-hf checkpoint folder)");
    if (!prompt) return cli_fail("run: no prompt given: pass -p TEXT");
    cfg.model_dir = model_dir;
    req.max_tokens = (int)max_tokens;
    req.stop = stops;
    req.n_stop = (size_t)n_stops;

    /* raw: the prompt as is; else one user message, its images before the text unless the text
     * marks where they go */
    llava_image in[MAX_IMAGES];
    memset(in, 0, sizeof in);
    for (int i = 0; i < n_images; i++) in[i].path = images[i];
    llava_message msg = {.role = "user", .content = prompt, .images = in,
                         .n_images = (size_t)n_images};
    if (raw) {
        req.prompt = prompt;
        req.images = in;
        req.n_images = (size_t)n_images;
    } else {
        req.messages = &msg;
        req.n_messages = 1;
    }
    run_output out = {.json = json, .ids = json_array()};
    llava_result res;
    llava_error err;
    int rc = 0;
    if (llava_generate_simple(&cfg, &req, on_token, &out, &res, &err) != LLAVA_OK)
        rc = cli_fail("%s", err.message);
    else if (out.failed)
        rc = cli_fail("out of memory collecting the output");
    if (rc == 0) {
        const llava_timings *t = &res.timings;
        /* from the start of the run (the engine counts from submit, which includes the load) */
        double first = t->first_token_ms - t->queue_ms - t->prepare_ms;
        if (first < 0) first = 0;
        int completion = res.usage.completion_tokens;
        double tps = t->decode_ms > 0 ? 1000.0 * completion / t->decode_ms : 0;
        struct rusage ru;
        double peak_mib = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0;
        if (json) {
            json_t *o = json_pack(
                "{s:s%, s:O, s:s, s:{s:i, s:i}, s:{s:f, s:f, s:f, s:f, s:f, s:f}}", "text",
                out.text ? out.text : "", out.len, "token_ids", out.ids, "finish_reason",
                finish_name(res.reason), "usage", "prompt_tokens", res.usage.prompt_tokens,
                "completion_tokens", completion, "timings", "image_ms", t->image_ms,
                "prefill_ms", t->prefill_ms, "decode_ms", t->decode_ms, "first_token_ms",
                first, "decode_tokens_per_s", tps, "peak_rss_mib", peak_mib);
            char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            if (s) printf("%s\n", s);
            else rc = cli_fail("could not format the JSON output");
            free(s);
            json_decref(o);
        } else {
            printf("\n");
            fflush(stdout); /* the answer ends before the timings on a shared terminal or pipe */
            fprintf(stderr,
                    "llava: %d prompt positions (image %.1f ms, prefill %.1f ms), %d tokens in "
                    "%.1f ms (%.2f tokens/s), first token after %.1f ms, peak RSS %.0f MiB, "
                    "finish: %s\n",
                    res.usage.prompt_tokens, t->image_ms, t->prefill_ms, completion,
                    t->decode_ms, tps, first, peak_mib, finish_name(res.reason));
        }
    }
    json_decref(out.ids);
    free(out.text);
    return rc;
}
