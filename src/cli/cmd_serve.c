/* `llava serve`: the OpenAI- and Ollama-compatible HTTP server (src/server/) on a model folder.
 * Prints "listening on http://HOST:PORT" on standard output once the socket is bound (the model
 * loads in the background), logs to standard error, exits 0 after a graceful SIGINT/SIGTERM. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/cli.h"
#include "server/server.h"

static void serve_usage(FILE *out) {
    fprintf(out,
            "usage: llava serve [-m MODEL_DIR] [options]  (default: the bundled models/tiny-llava-shapes)\n"
            "  -m, --model DIR          a llava-hf checkpoint folder\n"
            "  --host ADDR              address to listen on (127.0.0.1)\n"
            "  --port N                 port (8080; 0 picks a free one)\n"
            "  --model-name NAME        name in /v1/models and /api/tags (the folder's name)\n"
            "  --max-queue N            requests waiting for the engine; more get 429 (64)\n"
            "  --max-body BYTES         request body limit, K/M/G suffixes (32M); more get 413\n"
            "  --max-images N           images per request (16)\n"
            "  --allow-local-files      accept file:// image URLs (read by the server)\n"
            "  --allow-remote-images    accept http(s):// image URLs (fetched by the server)\n"
            "  --remote-max-bytes BYTES size limit of a fetched image (20M)\n"
            "  --remote-timeout-ms MS   time limit of one fetch (10000)\n"
            "  --remote-max-redirects N (3)\n"
            "  --api-key KEY            require Authorization: Bearer KEY on /v1 and /api\n"
            "                           (or set LLAVA_API_KEY)\n"
            "  --grace-seconds S        after SIGINT/SIGTERM, time to finish requests (30)\n"
            "  --idle-timeout S         keep-alive and slow-body timeout (60)\n"
            "  --threads N              compute threads (all cores)\n"
            "  --quant T                quantize the weights at load: q8_0 or q4_0 (int8 products)\n"
            "  --half PARTS             half-precision products (f16, ~1e-3 relative error; CPUs\n"
            "                           with AVX512-FP16) for vision,projector,text,lm_head or all\n"
            "  --kv-cache T             the KV cache's type: f32 (exact) or f16 (half the memory,\n"
            "                           ~1e-3 relative error; llama.cpp's default) (f32)\n"
            "  --no-mmap                read the weights into memory at load instead of mapping\n"
            "                           the files (slower load, faster and steadier decode)\n"
            "  --prep-threads N         image/tokenizer threads, 1 or 2 (1)\n"
            "  --ctx N                  context limit (the model's)\n"
            "  --engine-nice N          nice value of the engine's threads above the HTTP\n"
            "                           loop's, so requests preempt computation (5; 0 off)\n"
            "  --quiet                  no log on standard error\n");
}

static void log_line(void *user, const char *line) {
    (void)user;
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    fprintf(stderr, "[%s] llava serve: %s\n", when, line);
}

/* "123", "64K", "32M", "1G" (binary units) -> bytes; -1 if malformed. */
static long long parse_size(const char *s) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0) return -1;
    long long mul = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mul = 1LL << 10; break;
        case 'm': case 'M': mul = 1LL << 20; break;
        case 'g': case 'G': mul = 1LL << 30; break;
        default: return -1;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
        if (*end) return -1;
    }
    if (v > (1LL << 40) / mul) return -1;
    return v * mul;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return cli_fail("%s %s: expected an integer in %ld..%ld", opt, s, lo, hi);
    *out = (int)v;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    srv_config cfg;
    srv_config_default(&cfg);
    cfg.port = 8080;
    cfg.grace_seconds = -1;
    cfg.remote_max_redirects = -1;
    cfg.engine_nice = 5;
    cfg.api_key = getenv("LLAVA_API_KEY");
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int n = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--allow-local-files")) {
            cfg.allow_local_files = true;
            continue;
        } else if (!strcmp(a, "--allow-remote-images")) {
            cfg.allow_remote_images = true;
            continue;
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
            continue;
        } else if (!strcmp(a, "--no-mmap")) {
            cfg.no_mmap = true;
            continue;
        }
        if (!v) {
            serve_usage(stderr);
            return cli_fail("%s: unknown option or missing value", a);
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            cfg.model_dir = v;
        } else if (!strcmp(a, "--host")) {
            cfg.host = v;
        } else if (!strcmp(a, "--port")) {
            if (parse_int(a, v, 0, 65535, &cfg.port)) return 1;
        } else if (!strcmp(a, "--model-name")) {
            cfg.model_name = v;
        } else if (!strcmp(a, "--max-queue")) {
            if (parse_int(a, v, 1, 65536, &cfg.max_queue)) return 1;
        } else if (!strcmp(a, "--max-images")) {
            if (parse_int(a, v, 1, 256, &n)) return 1;
            cfg.max_images = (size_t)n;
        } else if (!strcmp(a, "--max-body") || !strcmp(a, "--remote-max-bytes")) {
            long long sz = parse_size(v);
            if (sz <= 0) return cli_fail("%s %s: expected a size such as 1048576 or 32M", a, v);
            if (!strcmp(a, "--max-body")) cfg.max_body = (size_t)sz;
            else cfg.remote_max_bytes = (size_t)sz;
        } else if (!strcmp(a, "--remote-timeout-ms")) {
            if (parse_int(a, v, 1, 3600000, &cfg.remote_timeout_ms)) return 1;
        } else if (!strcmp(a, "--remote-max-redirects")) {
            if (parse_int(a, v, 0, 20, &cfg.remote_max_redirects)) return 1;
        } else if (!strcmp(a, "--api-key")) {
            cfg.api_key = v;
        } else if (!strcmp(a, "--grace-seconds")) {
            char *end;
            double g = strtod(v, &end);
            if (end == v || *end || !(g >= 0 && g <= 86400))
                return cli_fail("--grace-seconds %s: expected seconds in 0..86400", v);
            cfg.grace_seconds = g;
        } else if (!strcmp(a, "--idle-timeout")) {
            if (parse_int(a, v, 1, 86400, &cfg.idle_timeout_s)) return 1;
        } else if (!strcmp(a, "--quant")) {
            if (cli_parse_quant(v, &cfg.quant) != 0) return cli_fail("--quant %s: expected q8_0 or q4_0", v);
        } else if (!strcmp(a, "--kv-cache")) {
            if (cli_parse_kv_cache(v, &cfg.kv_cache) != 0) return cli_fail("--kv-cache %s: expected f32 or f16", v);
        } else if (!strcmp(a, "--half")) {
            if (cli_parse_parts(v, &cfg.half_parts) != 0)
                return cli_fail("--half %s: expected parts from vision,projector,text,lm_head,all", v);
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, v, 1, 1024, &cfg.n_threads)) return 1;
        } else if (!strcmp(a, "--prep-threads")) {
            if (parse_int(a, v, 1, 2, &cfg.prep_threads)) return 1;
        } else if (!strcmp(a, "--engine-nice")) {
            if (parse_int(a, v, 0, 19, &cfg.engine_nice)) return 1;
        } else if (!strcmp(a, "--ctx")) {
            if (parse_int(a, v, 1, 1 << 24, &cfg.n_ctx)) return 1;
        } else {
            serve_usage(stderr);
            return cli_fail("unknown option %s", a);
        }
    }
    char default_dir[4096];
    if (!cfg.model_dir && !(cfg.model_dir = cli_default_model(default_dir, sizeof default_dir))) {
        serve_usage(stderr);
        return cli_fail("serve: no model given and the bundled models/tiny-llava-shapes was not "
                        "found: pass -m MODEL_DIR");
    }
    if (!quiet) cfg.log = log_line;
    /* a client that disconnects mid-answer must not kill the server with SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    /* every client is a descriptor: allow as many as the system lets this process have */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    llava_error err;
    srv_server *s;
    if (srv_create(&cfg, &s, &err) != LLAVA_OK) return cli_fail("serve: %s", err.message);
    printf("listening on http://%s:%d\n", cfg.host ? cfg.host : "127.0.0.1", srv_port(s));
    fflush(stdout);
    int rc = srv_run(s);
    srv_free(s);
    return rc;
}
