/* `llava bench -m DIR`: the whole model on one request (an image and a prompt of N text tokens,
 * then G generated tokens), timed stage by stage through the model API, each figure beside its
 * hardware floor: decoding must read every decoder weight once per token (floor = bytes / read
 * bandwidth), the vision tower and the prompt are matrix products (floor = FLOPs / peak rate).
 * Separate from cmd_bench.c, which measures kernels alone; the machine probes are tensor/'s. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "cli/cli.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tensor/quant.h"
#include "tensor/tensor.h"

#define MAX_REPEAT 100

static const char BENCH_MODEL_USAGE[] =
    "usage: llava bench -m DIR [options]\n"
    "  One request per run: an image, a prompt of N text tokens, G generated tokens (greedy,\n"
    "  EOS ignored). Medians over R runs, each beside its hardware floor.\n"
    "  -m, --model DIR          llava-hf checkpoint folder\n"
    "      --quant T            quantize the matrices at load: q8_0 or q4_0 (int8 products;\n"
    "                           default: the weights as stored, exact f32 arithmetic)\n"
    "      --half PARTS         half-precision products (f16 multiply-adds, ~1e-3 relative\n"
    "                           error) for PARTS: vision,projector,text,lm_head or all; needs\n"
    "                           AVX512-FP16 (elsewhere the products stay exact)\n"
    "      --kv-cache T         the KV cache's type: f32 (default, exact) or f16 (half the\n"
    "                           cache bytes each decoded token reads; llama.cpp's default)\n"
    "      --no-mmap            read the weights into memory at load instead of mapping the\n"
    "                           files (the load time then includes reading them)\n"
    "      --image FILE         image to decode and encode (default: generated 640x480 pixels,\n"
    "                           preprocessed but not decoded)\n"
    "      --prompt-tokens N    text tokens after the image (default 64)\n"
    "      --gen-tokens N       tokens to generate (default 32)\n"
    "  -t, --threads N          compute threads (default: all cores)\n"
    "      --repeat R           measured runs (default 3)\n"
    "      --warmup W           unmeasured runs first (default 1: pages the weights in)\n"
    "      --prefill-chunk N    prompt positions per decoder pass (default: the engine's)\n"
    "      --vision-only        only decode, preprocess and encode the image (tower +\n"
    "                           projector): the text model's weights are never read\n"
    "      --no-probe           skip the bandwidth / peak-rate probes (no floors)\n"
    "      --json               one JSON object on stdout\n";

static int parse_int(const char *s, const char *what, long lo, long hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return cli_fail("bench: %s: '%s' is not an integer in [%ld, %ld]", what, s, lo, hi);
    *out = (int)v;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double s[MAX_REPEAT];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* ---- machine bounds ---- */

typedef struct machine_bounds {
    double read_bw;  /* bytes/s, all threads */
    double peak;     /* f32 FMA flop/s, all threads */
    double peak_int8; /* int8 dot-product ops/s of the quantized path, all threads */
    double peak_half; /* f16 FMA flop/s, all threads (0 without AVX512-FP16) */
} machine_bounds;

/* Runs tensor/'s probes in a child process: their 1 GiB buffer would otherwise be part of this
 * process's peak RSS, which the benchmark reports for the model alone. Called while no model is
 * loaded (no threads, so fork is safe). Returns 0 on success. */
static int probe_machine(int threads, machine_bounds *out) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
        machine_bounds b = {0};
        tensor_pool *pool = tensor_pool_create(threads);
        if (pool) {
            b.read_bw = tensor_probe_read_bandwidth(pool, (size_t)1 << 30, 4);
            b.peak = tensor_probe_peak_flops(pool, 0.5);
            b.peak_int8 = tensor_quant_probe_peak_ops(pool, 0.5);
            b.peak_half = tensor_half_probe_peak_flops(pool, 0.5);
            tensor_pool_destroy(pool);
        }
        ssize_t w = write(fd[1], &b, sizeof b);
        _exit(w == (ssize_t)sizeof b ? 0 : 1);
    }
    close(fd[1]);
    ssize_t r = read(fd[0], out, sizeof *out);
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (r != (ssize_t)sizeof *out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
    return out->read_bw > 0 && out->peak > 0 ? 0 : -1;
}

/* ---- work per stage, from the config ---- */

/* Bytes of a tensor as the model holds it: quantized at load (quant = 1 + tensor_qtype) when it
 * is a float matrix whose shape takes blocks, else as stored. */
static double held_bytes(const st_tensor *t, int quant) {
    if (quant && t->ndim == 2 && t->dtype != LLAVA_DTYPE_U8 && t->shape[0] < (1 << 30) &&
        t->shape[1] < (1 << 30) && tensor_quant_shape_ok((int)t->shape[0], (int)t->shape[1]))
        return (double)tensor_quant_bytes((tensor_qtype)(quant - 1), (int)t->shape[0], (int)t->shape[1]);
    return (double)t->nbytes;
}

/* Bytes the decoder reads per generated token: every tensor of the text model's layers and the
 * output head as the model holds them (stored dtype, stored blocks, or blocks made at load),
 * found by name in both llava-hf layouts. The embedding row and the norms are noise; the KV
 * cache is added by the caller. Also sets *stored to 1 + tensor_qtype of the blocks the
 * checkpoint stores (`llava quantize` output: U8 tensors whose last dimension is the block
 * size), or 0. Returns 0 if the checkpoint cannot be opened. */
static double decoder_weight_bytes(const char *dir, int quant, int *stored) {
    *stored = 0;
    st_set *set = NULL;
    llava_error err;
    if (st_set_open(dir, &set, &err) != LLAVA_OK) return 0;
    double bytes = 0;
    const st_tensor *head = NULL;
    for (size_t i = 0; i < st_set_count(set); i++) {
        const st_tensor *t = st_set_tensor(set, i);
        if (t->dtype == LLAVA_DTYPE_U8 && t->ndim == 3)
            for (int q = 0; q < TENSOR_QTYPE_COUNT; q++)
                if ((size_t)t->shape[2] == tensor_qtype_block_bytes((tensor_qtype)q)) *stored = 1 + q;
        if ((strstr(t->name, "language_model.") && strstr(t->name, ".layers.")))
            bytes += held_bytes(t, quant);
        else if (!strcmp(t->name, "language_model.lm_head.weight") || !strcmp(t->name, "lm_head.weight"))
            head = t;
    }
    if (!head) { /* tied: the embedding matrix is the head */
        head = st_set_find(set, "language_model.model.embed_tokens.weight");
        if (!head) head = st_set_find(set, "model.language_model.embed_tokens.weight");
    }
    if (head) bytes += held_bytes(head, quant);
    st_set_close(set);
    return bytes;
}

/* Vision tower up to the selected layer plus projector, per image: patch products, per layer
 * q/k/v/o and the MLP (2·T·(4·D² + 2·D·F)) and attention (QKᵀ and PV: 4·T²·D), projector. */
static double vision_flops(const hf_llava_config *c, int rows) {
    const hf_vision_config *v = &c->vision;
    double D = v->hidden_size, F = v->intermediate_size, p = v->patch_size;
    double n = (double)(v->image_size / v->patch_size) * (v->image_size / v->patch_size), T = n + 1;
    int L = v->num_hidden_layers, fl = c->vision_feature_layer;
    int run = fl < 0 ? L + 1 + fl : fl;
    double f = 2.0 * n * (v->num_channels * p * p) * D;
    f += run * (2.0 * T * (4.0 * D * D + 2.0 * D * F) + 4.0 * T * T * D);
    f += 2.0 * rows * (D * c->text.hidden_size + (double)c->text.hidden_size * c->text.hidden_size);
    return f;
}

/* The decoder over P prompt positions: projections and SwiGLU MLP per layer, causal attention
 * (scores and PV over P(P+1)/2 pairs per head), and the output head for the last position. */
static double prefill_flops(const hf_text_config *t, int P) {
    double Dt = t->hidden_size, F = t->intermediate_size, hd = t->head_dim;
    double H = t->num_attention_heads, KV = t->num_key_value_heads;
    double per_row = 2.0 * (Dt * H * hd + 2.0 * Dt * KV * hd + H * hd * Dt + 3.0 * Dt * F);
    double attn = 2.0 * 2.0 * H * hd * (double)P * (P + 1) / 2.0;
    return t->num_hidden_layers * (P * per_row + attn) + 2.0 * Dt * t->vocab_size;
}

/* ---- one run ---- */

typedef struct run_times {
    double preprocess_ms, image_ms, prefill_ms, decode_ms, ttft_ms;
    double wall_ms, cpu_ms; /* the whole run, and the CPU time this process got meanwhile */
    int decode_steps;
} run_times;

/* User + system CPU time of this process, all threads. */
static double cpu_ms(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-3;
}

typedef struct bench_opts {
    const char *dir, *image;
    int prompt_tokens, gen_tokens, threads, repeat, warmup, prefill_chunk;
    int probe, json;
    int quant; /* 0, or 1 + tensor_qtype */
    unsigned half_parts; /* LLAVA_PART_* bits asked for half precision */
    int kv_f16;          /* an f16 KV cache (--kv-cache f16) */
    int no_mmap;         /* weights read into memory (--no-mmap) */
    int vision_only;
} bench_opts;

/* Builds the request: decode + preprocess through llava_prepare (timed), then the token ids
 * replaced by BOS, the image and prompt_tokens ordinary text ids (which ids does not change the
 * work; the prompt needs no tokenizer round trip to have an exact length). */
static int prepare_request(llava_model *m, const bench_opts *o, const uint8_t *rgb, int w, int h,
                           llava_prepared **out, double *ms) {
    llava_model_info info;
    llava_model_get_info(m, &info);
    template_message msg = {.role = "user", .text = "<image>", .n_images = 0};
    llava_image_input img = {0};
    if (o->image) {
        img.path = o->image;
    } else {
        img.rgb = rgb;
        img.width = w;
        img.height = h;
    }
    llava_prepare_options po = {.raw = true, .max_tokens = o->gen_tokens};
    llava_error err;
    double t0 = llava_now_ms();
    if (llava_prepare(m, &msg, 1, &img, 1, &po, out, &err) != LLAVA_OK)
        return cli_fail("bench: %s", err.message);
    *ms = llava_now_ms() - t0;
    llava_prepared *p = *out;
    int n = (info.bos_id >= 0) + 1 + o->prompt_tokens;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return cli_fail("bench: out of memory");
    int k = 0;
    if (info.bos_id >= 0) ids[k++] = info.bos_id;
    ids[k++] = info.image_token_id;
    for (int i = 0; i < o->prompt_tokens; i++) {
        int32_t id = 1000 + (int32_t)((i * 7919u) % 20000u); /* plain word pieces in LLaMA's vocab */
        if (id >= info.vocab_size) id = 3 + i % (info.vocab_size - 3);
        if (id == info.image_token_id) id = 3;
        ids[k++] = id;
    }
    free(p->ids);
    p->ids = ids;
    p->n_ids = n;
    p->n_positions = n - 1 + info.tokens_per_image;
    p->max_tokens = o->gen_tokens;
    if (p->n_positions + o->gen_tokens > info.n_ctx)
        return cli_fail("bench: %d prompt positions + %d tokens exceed the context of %d",
                        p->n_positions, o->gen_tokens, info.n_ctx);
    return 0;
}

static int run_once(llava_model *m, llava_session *s, const bench_opts *o, const uint8_t *rgb,
                    int w, int h, run_times *t) {
    double w0 = llava_now_ms(), c0 = cpu_ms();
    llava_prepared *p = NULL;
    if (prepare_request(m, o, rgb, w, h, &p, &t->preprocess_ms)) {
        llava_prepared_free(p);
        return 1;
    }
    llava_error err;
    if (o->vision_only) {
        double i0 = llava_now_ms();
        llava_status st = llava_encode_images(s, p, NULL, NULL, &err);
        llava_prepared_free(p);
        if (st != LLAVA_OK) return cli_fail("bench: %s", err.message);
        t->image_ms = llava_now_ms() - i0;
        t->wall_ms = llava_now_ms() - w0;
        t->cpu_ms = cpu_ms() - c0;
        return 0;
    }
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    gp.max_tokens = o->gen_tokens;
    gp.ignore_eos = true;
    llava_generate_result r;
    llava_status st = llava_generate(s, p, &gp, NULL, &r, &err);
    llava_prepared_free(p);
    if (st != LLAVA_OK) return cli_fail("bench: %s", err.message);
    t->wall_ms = llava_now_ms() - w0;
    t->cpu_ms = cpu_ms() - c0;
    t->image_ms = r.image_ms;
    t->prefill_ms = r.prefill_ms;
    t->decode_ms = r.decode_ms;
    /* from the raw image to the first token: preprocessing, vision tower, prefill, sampling */
    t->ttft_ms = t->preprocess_ms + r.first_token_ms;
    /* the first token comes from the prefill's logits; each further one is a decoder pass */
    t->decode_steps = r.completion_tokens - 1;
    return 0;
}

/* ---- report ---- */

typedef struct bench_report {
    int threads, positions, runs;
    const char *isa;
    double load_ms, peak_rss_mib;
    double preprocess_ms, image_ms, prefill_tps, decode_tps, ttft_ms;
    double bytes_per_token, vision_gflop, prefill_gflop;
    double cpu_share; /* CPU time got / (wall time × threads) over the measured runs */
    int have_bounds;
    machine_bounds mb;                /* the better of the two probes, each bound */
    machine_bounds mb_before, mb_after; /* the probes themselves, when both ran */
    int probed_twice;
    double image_floor_ms, prefill_floor_tps, decode_floor_tps, ttft_floor_ms;
    int stored_quant; /* 1 + tensor_qtype of blocks the checkpoint stores, or 0 */
} bench_report;

/* The rate a part's products run at, for its floor: int8 when quantized (at load or stored),
 * f16 when half precision was asked for and the CPU has it, else f32. Attention stays f32
 * whatever the products do, so the floor is a lower bound. */
enum { RATE_F32, RATE_INT8, RATE_F16 };

static int part_rate(const bench_opts *o, const bench_report *r, unsigned part) {
    if (o->quant || r->stored_quant) return RATE_INT8;
    if ((o->half_parts & part) && tensor_half_available() && r->mb.peak_half > 0) return RATE_F16;
    return RATE_F32;
}

static double part_peak(const bench_opts *o, const bench_report *r, unsigned part) {
    int rate = part_rate(o, r, part);
    return rate == RATE_INT8 ? r->mb.peak_int8 : rate == RATE_F16 ? r->mb.peak_half : r->mb.peak;
}

static const char *rate_name(const bench_opts *o, const bench_report *r, unsigned part) {
    static const char *names[] = {"f32 FMA", "int8 dot-product", "f16 FMA"};
    return names[part_rate(o, r, part)];
}

static void print_text(const bench_opts *o, const bench_report *r) {
    printf("model %s, %d threads, kernel path %s, %d run%s (median)\n", o->dir, r->threads, r->isa,
           r->runs, r->runs == 1 ? "" : "s");
    if (o->quant)
        printf("weights quantized at load: %s (int8 path %s)\n", tensor_qtype_name((tensor_qtype)(o->quant - 1)),
               tensor_quant_path_name());
    else if (r->stored_quant)
        printf("weights stored quantized: %s (int8 path %s)\n",
               tensor_qtype_name((tensor_qtype)(r->stored_quant - 1)), tensor_quant_path_name());
    if (o->half_parts) {
        char parts[64];
        cli_parts_name(o->half_parts, parts, sizeof parts);
        printf("half-precision products: %s (%s)\n", parts,
               tensor_half_available() ? "AVX512-FP16" : "not on this CPU: the products stay exact");
    }
    if (o->kv_f16) printf("KV cache: f16\n");
    if (o->no_mmap) printf("weights read into memory at load (--no-mmap)\n");
    if (o->vision_only)
        printf("request: 1 image through the vision tower and projector only\n");
    else
        printf("request: 1 image + %d text tokens = %d positions, %d generated\n", o->prompt_tokens,
               r->positions, o->gen_tokens);
    if (r->have_bounds)
        printf("machine: read bandwidth %.2f GB/s, peak f32 FMA %.1f GFLOP/s, int8 %.1f GOP/s, f16 FMA %.1f "
               "GFLOP/s (%d threads)\n",
               r->mb.read_bw * 1e-9, r->mb.peak * 1e-9, r->mb.peak_int8 * 1e-9, r->mb.peak_half * 1e-9, r->threads);
    if (r->probed_twice)
        printf("  (each the better of two probes: before the runs %.2f GB/s, %.1f GFLOP/s, %.1f GOP/s; "
               "after %.2f, %.1f, %.1f)\n", r->mb_before.read_bw * 1e-9, r->mb_before.peak * 1e-9,
               r->mb_before.peak_int8 * 1e-9, r->mb_after.read_bw * 1e-9, r->mb_after.peak * 1e-9,
               r->mb_after.peak_int8 * 1e-9);
    printf("load %.0f ms, peak RSS %.0f MiB, CPU share %.0f%% (CPU time / (wall time x threads) while "
           "measuring: below 100%% the machine was shared)\n\n", r->load_ms, r->peak_rss_mib, 100 * r->cpu_share);
    printf("%-34s %12s %12s %9s\n", "stage", "measured", "floor", "of floor");
#define ROW(name, val, floor, unit, higher_better)                                                    \
    do {                                                                                              \
        if (r->have_bounds && (floor) > 0)                                                            \
            printf("%-34s %9.1f %-2s %9.1f %-2s %8.1f%%\n", name, val, unit, floor, unit,             \
                   100.0 * ((higher_better) ? (val) / (floor) : (floor) / (val)));                    \
        else                                                                                          \
            printf("%-34s %9.1f %-2s %12s %9s\n", name, val, unit, "-", "-");                        \
    } while (0)
    printf("%-34s %9.1f %-2s %12s %9s\n",
           o->image ? "image decode + preprocess" : "image preprocess (generated)", r->preprocess_ms,
           "ms", "-", "-");
    ROW("vision encode + projector", r->image_ms, r->image_floor_ms, "ms", 0);
    if (!o->vision_only) {
        ROW("prefill (tokens/s)", r->prefill_tps, r->prefill_floor_tps, "/s", 1);
        ROW("decode (tokens/s)", r->decode_tps, r->decode_floor_tps, "/s", 1);
        ROW("time to first token", r->ttft_ms, r->ttft_floor_ms, "ms", 0);
    }
#undef ROW
    if (o->vision_only)
        printf("\nfloor: vision %.1f GFLOP / peak %s rate\n", r->vision_gflop, rate_name(o, r, LLAVA_PART_VISION));
    else
        printf("\nfloors: decode %.2f GB of weights per token / read bandwidth; vision %.1f GFLOP / peak %s rate, "
               "prefill %.1f GFLOP / peak %s rate\n",
               r->bytes_per_token * 1e-9, r->vision_gflop, rate_name(o, r, LLAVA_PART_VISION), r->prefill_gflop,
               rate_name(o, r, LLAVA_PART_TEXT));
}

static void print_json(const bench_opts *o, const bench_report *r) {
    printf("{\"model\":\"");
    for (const char *c = o->dir; *c; c++) { /* a path: escape what JSON needs */
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if ((unsigned char)*c < 0x20) printf("\\u%04x", *c);
        else putchar(*c);
    }
    printf("\",\"threads\":%d,\"isa\":\"%s\",\"runs\":%d,\"image\":%s,", r->threads, r->isa, r->runs,
           o->image ? "true" : "false");
    printf("\"quant\":\"%s\",\"stored_quant\":\"%s\",\"int8_path\":\"%s\",",
           o->quant ? tensor_qtype_name((tensor_qtype)(o->quant - 1)) : "none",
           r->stored_quant ? tensor_qtype_name((tensor_qtype)(r->stored_quant - 1)) : "none", tensor_quant_path_name());
    char parts[64];
    cli_parts_name(o->half_parts, parts, sizeof parts);
    printf("\"half\":\"%s\",\"half_active\":%s,", parts, o->half_parts && tensor_half_available() ? "true" : "false");
    printf("\"kv_cache\":\"%s\",\"mmap\":%s,", o->kv_f16 ? "f16" : "f32", o->no_mmap ? "false" : "true");
    printf("\"prompt_tokens\":%d,\"positions\":%d,\"gen_tokens\":%d,", o->prompt_tokens, r->positions,
           o->gen_tokens);
    if (r->have_bounds)
        printf("\"read_bandwidth_gbs\":%.3f,\"peak_gflops\":%.2f,\"peak_int8_gops\":%.2f,\"peak_half_gflops\":%.2f,",
               r->mb.read_bw * 1e-9, r->mb.peak * 1e-9, r->mb.peak_int8 * 1e-9, r->mb.peak_half * 1e-9);
    if (r->probed_twice)
        printf("\"probes\":{\"before\":[%.3f,%.2f,%.2f],\"after\":[%.3f,%.2f,%.2f]},", r->mb_before.read_bw * 1e-9,
               r->mb_before.peak * 1e-9, r->mb_before.peak_int8 * 1e-9, r->mb_after.read_bw * 1e-9,
               r->mb_after.peak * 1e-9, r->mb_after.peak_int8 * 1e-9);
    printf("\"load_ms\":%.1f,\"peak_rss_mib\":%.1f,\"cpu_share\":%.4f,", r->load_ms, r->peak_rss_mib,
           r->cpu_share);
    printf("\"weights_bytes_per_token\":%.0f,\"vision_gflop\":%.3f,\"prefill_gflop\":%.3f,",
           r->bytes_per_token, r->vision_gflop, r->prefill_gflop);
    printf("\"preprocess_ms\":%.3f,", r->preprocess_ms);
    /* floors are null without the probes */
    const char *names[4] = {"vision_ms", "prefill_tok_s", "decode_tok_s", "ttft_ms"};
    const char *floors[4] = {"vision_floor_ms", "prefill_floor_tok_s", "decode_floor_tok_s", "ttft_floor_ms"};
    double vals[4] = {r->image_ms, r->prefill_tps, r->decode_tps, r->ttft_ms};
    double fl[4] = {r->image_floor_ms, r->prefill_floor_tps, r->decode_floor_tps, r->ttft_floor_ms};
    for (int i = 0; i < 4; i++) {
        if (o->vision_only && i > 0) { /* not measured */
            printf(",\"%s\":null,\"%s\":null", names[i], floors[i]);
            continue;
        }
        printf("%s\"%s\":%.3f,\"%s\":", i ? "," : "", names[i], vals[i], floors[i]);
        if (r->have_bounds && fl[i] > 0) printf("%.3f", fl[i]);
        else printf("null");
    }
    printf("}\n");
}

/* A deterministic 640x480 picture (gradients and a checkerboard) for runs without --image. */
static uint8_t *generated_image(int w, int h) {
    uint8_t *rgb = malloc((size_t)w * h * 3);
    if (!rgb) return NULL;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *px = rgb + ((size_t)y * w + x) * 3;
            px[0] = (uint8_t)(x * 255 / (w - 1));
            px[1] = (uint8_t)(y * 255 / (h - 1));
            px[2] = ((x / 32 + y / 32) & 1) ? 220 : 35;
        }
    return rgb;
}

int bench_model(int argc, char **argv) {
    bench_opts o = {.prompt_tokens = 64, .gen_tokens = 32, .threads = 0, .repeat = 3, .warmup = 1,
                    .probe = 1};
    enum { OPT_NOMMAP = 251, OPT_KV = 252, OPT_VISION = 253, OPT_HALF = 254, OPT_QUANT = 255, OPT_IMAGE = 256, OPT_PROMPT, OPT_GEN, OPT_REPEAT, OPT_WARMUP, OPT_NOPROBE, OPT_JSON, OPT_CHUNK };
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},         {"quant", required_argument, 0, OPT_QUANT},         {"image", required_argument, 0, OPT_IMAGE},
        {"prompt-tokens", required_argument, 0, OPT_PROMPT},
        {"gen-tokens", required_argument, 0, OPT_GEN}, {"threads", required_argument, 0, 't'},
        {"repeat", required_argument, 0, OPT_REPEAT}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"no-probe", no_argument, 0, OPT_NOPROBE},     {"json", no_argument, 0, OPT_JSON},
        {"prefill-chunk", required_argument, 0, OPT_CHUNK}, {"half", required_argument, 0, OPT_HALF},
        {"vision-only", no_argument, 0, OPT_VISION},  {"kv-cache", required_argument, 0, OPT_KV},
        {"no-mmap", no_argument, 0, OPT_NOMMAP},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "m:t:h", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o.dir = optarg; break;
        case OPT_QUANT: {
            tensor_qtype qt;
            if (tensor_qtype_parse(optarg, &qt) != 0) return cli_fail("bench: --quant takes q8_0 or q4_0, not '%s'", optarg);
            o.quant = 1 + (int)qt;
            break;
        }
        case OPT_HALF:
            if (cli_parse_parts(optarg, &o.half_parts) != 0)
                return cli_fail("bench: --half takes parts from vision,projector,text,lm_head,all, not '%s'", optarg);
            break;
        case OPT_KV: {
            int kv;
            if (cli_parse_kv_cache(optarg, &kv) != 0) return cli_fail("bench: --kv-cache takes f32 or f16, not '%s'", optarg);
            o.kv_f16 = kv == LLAVA_KV_CACHE_F16;
            break;
        }
        case OPT_IMAGE: o.image = optarg; break;
        case OPT_VISION: o.vision_only = 1; break;
        case OPT_NOMMAP: o.no_mmap = 1; break;
        case OPT_PROMPT: if (parse_int(optarg, "--prompt-tokens", 0, 1 << 20, &o.prompt_tokens)) return 1; break;
        case OPT_GEN: if (parse_int(optarg, "--gen-tokens", 2, 1 << 20, &o.gen_tokens)) return 1; break;
        case 't': if (parse_int(optarg, "--threads", 1, 1024, &o.threads)) return 1; break;
        case OPT_REPEAT: if (parse_int(optarg, "--repeat", 1, MAX_REPEAT, &o.repeat)) return 1; break;
        case OPT_WARMUP: if (parse_int(optarg, "--warmup", 0, 100, &o.warmup)) return 1; break;
        case OPT_CHUNK: if (parse_int(optarg, "--prefill-chunk", 1, 1 << 20, &o.prefill_chunk)) return 1; break;
        case OPT_NOPROBE: o.probe = 0; break;
        case OPT_JSON: o.json = 1; break;
        case 'h': fputs(BENCH_MODEL_USAGE, stdout); return 0;
        default: fputs(BENCH_MODEL_USAGE, stderr); return 2;
        }
    }
    if (!o.dir || optind < argc) {
        fputs(BENCH_MODEL_USAGE, stderr);
        return 2;
    }

    bench_report r = {0};
    if (o.probe) {
        if (probe_machine(o.threads, &r.mb) != 0) return cli_fail("bench: the machine probes failed");
        r.have_bounds = 1;
    }
    const int gw = 640, gh = 480;
    uint8_t *rgb = o.image ? NULL : generated_image(gw, gh);
    if (!o.image && !rgb) return cli_fail("bench: out of memory");

    llava_model_options mo;
    llava_model_options_default(&mo);
    mo.n_threads = o.threads;
    mo.prefill_chunk = o.prefill_chunk;
    mo.half_parts = o.half_parts;
    mo.kv_cache = o.kv_f16 ? LLAVA_KV_F16 : LLAVA_KV_F32;
    mo.no_mmap = o.no_mmap;
    mo.quant = o.quant == 1 + TENSOR_Q8_0 ? LLAVA_QUANT_Q8_0 : o.quant == 1 + TENSOR_Q4_0 ? LLAVA_QUANT_Q4_0 : LLAVA_QUANT_NONE;
    llava_model *m = NULL;
    llava_session *s = NULL;
    llava_error err;
    double t0 = llava_now_ms();
    if (llava_model_load(o.dir, &mo, &m, &err) != LLAVA_OK) {
        free(rgb);
        return cli_fail("bench: %s", err.message);
    }
    r.load_ms = llava_now_ms() - t0;
    if (llava_session_create(m, &s, &err) != LLAVA_OK) {
        llava_model_free(m);
        free(rgb);
        return cli_fail("bench: %s", err.message);
    }
    llava_model_info info;
    llava_model_get_info(m, &info);
    r.threads = info.n_threads;
    r.isa = tensor_isa_name(tensor_isa_active());
    r.runs = o.repeat;

    double pre[MAX_REPEAT], img[MAX_REPEAT], pf[MAX_REPEAT], dec[MAX_REPEAT], ttft[MAX_REPEAT];
    double wall_sum = 0, cpu_sum = 0;
    int rc = 0;
    for (int i = 0; i < o.warmup + o.repeat && !rc; i++) {
        run_times t = {0};
        if ((rc = run_once(m, s, &o, rgb, gw, gh, &t))) break;
        if (i < o.warmup) continue;
        int k = i - o.warmup;
        pre[k] = t.preprocess_ms;
        img[k] = t.image_ms;
        r.positions = (info.bos_id >= 0) + o.prompt_tokens + info.tokens_per_image;
        pf[k] = r.positions / (t.prefill_ms * 1e-3);
        dec[k] = t.decode_steps / (t.decode_ms * 1e-3);
        ttft[k] = t.ttft_ms;
        wall_sum += t.wall_ms;
        cpu_sum += t.cpu_ms;
        if (!o.json && o.vision_only)
            fprintf(stderr, "run %d/%d: preprocess %.1f ms, vision %.1f ms\n", k + 1, o.repeat, pre[k], img[k]);
        else if (!o.json)
            fprintf(stderr, "run %d/%d: preprocess %.1f ms, vision %.1f ms, prefill %.2f tok/s, "
                    "decode %.2f tok/s, first token %.1f ms\n", k + 1, o.repeat, pre[k], img[k], pf[k],
                    dec[k], ttft[k]);
    }
    if (!rc) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        r.peak_rss_mib = (double)ru.ru_maxrss / 1024.0; /* kB on Linux */
        r.preprocess_ms = median(pre, o.repeat);
        r.image_ms = median(img, o.repeat);
        r.prefill_tps = median(pf, o.repeat);
        r.decode_tps = median(dec, o.repeat);
        r.ttft_ms = median(ttft, o.repeat);
        r.cpu_share = wall_sum > 0 ? cpu_sum / (wall_sum * r.threads) : 0;

        const hf_llava_config *cfg = llava_model_config(m);
        const hf_text_config *tc = &cfg->text;
        /* the KV cache: keys and values of every layer over the positions seen, on average
         * halfway through the generated tokens */
        double ctx = r.positions + o.gen_tokens / 2.0;
        double kv = 2.0 * tc->num_hidden_layers * tc->num_key_value_heads * tc->head_dim * ctx * (o.kv_f16 ? 2.0 : 4.0);
        r.bytes_per_token = decoder_weight_bytes(o.dir, o.quant, &r.stored_quant) + kv;
        r.vision_gflop = vision_flops(cfg, llava_model_feature_rows(m)) * 1e-9;
        r.prefill_gflop = prefill_flops(tc, r.positions) * 1e-9;
    }
    llava_session_free(s);
    llava_model_free(m); /* its threads too: the second probe forks */
    free(rgb);
    if (!rc) {
        if (r.have_bounds) {
            /* Probed again after the runs, each bound the better of the two: on a shared or
             * virtual machine the rate a core gets moves by the minute (two vCPUs on one
             * physical core halve the FMA rate), and a floor is what the machine can do. */
            machine_bounds after;
            if (probe_machine(o.threads, &after) == 0) {
                r.mb_before = r.mb;
                r.mb_after = after;
                r.probed_twice = 1;
                if (after.read_bw > r.mb.read_bw) r.mb.read_bw = after.read_bw;
                if (after.peak > r.mb.peak) r.mb.peak = after.peak;
                if (after.peak_int8 > r.mb.peak_int8) r.mb.peak_int8 = after.peak_int8;
                if (after.peak_half > r.mb.peak_half) r.mb.peak_half = after.peak_half;
            }
            r.image_floor_ms = r.vision_gflop * 1e9 / part_peak(&o, &r, LLAVA_PART_VISION) * 1e3;
            r.prefill_floor_tps = r.positions / (r.prefill_gflop * 1e9 / part_peak(&o, &r, LLAVA_PART_TEXT));
            r.decode_floor_tps = r.bytes_per_token > 0 ? r.mb.read_bw / r.bytes_per_token : 0;
            r.ttft_floor_ms = r.image_floor_ms + r.positions / r.prefill_floor_tps * 1e3;
        }
        if (o.json) print_json(&o, &r);
        else print_text(&o, &r);
    }
    return rc;
}
