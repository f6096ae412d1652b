/* `llava quantize -m DIR -o DIR2 --type q8_0|q4_0`: a copy of a checkpoint folder whose large
 * matrices are stored in the Q8_0 / Q4_0 blocks of tensor/quant.h, so the engine maps them
 * directly instead of quantizing at every load. One output shard per input shard (same names,
 * same index), each quantized in memory and written before the next, so memory stays at one
 * shard's worth. The block layout is written into every shard's metadata. */
#include <dirent.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "cli/cli.h"
#include "io/safetensors.h"
#include "tensor/quant.h"

static const char QUANTIZE_USAGE[] =
    "usage: llava quantize -m DIR -o OUT --type q8_0|q4_0 [options]\n"
    "  Writes OUT: the checkpoint with its matrices in the given block format (other files\n"
    "  copied). Token embeddings, position embeddings and the patch convolution keep their\n"
    "  dtype (one row of the embeddings is read per token; the others are small or not\n"
    "  products). Loading OUT needs no option: the format is in the tensors.\n"
    "  -m, --model DIR      llava-hf checkpoint folder\n"
    "  -o, --out DIR        output folder (created; must not be DIR)\n"
    "      --type T         q8_0 or q4_0\n"
    "      --keep PART      leave PART in its stored dtype: vision, projector, text, lm_head\n"
    "                       (repeatable)\n"
    "  -t, --threads N      threads (default: all cores)\n";

/* Said in every shard's metadata (key llava.quant.layout), for any reader of the files. */
static const char LAYOUT_DOC[] =
    "Tensors of dtype U8 and shape [G, B, S] are quantized matrices [N, K] (N <= 16G, K = 32B; "
    "N is the model's shape). Rows come in groups of 16; group g is B consecutive blocks of S "
    "bytes, block b covering columns 32b..32b+31 of rows 16g..16g+15. S = 544: Q8_0, "
    "d[16] f16 LE scales then q[8][16][4] u8, weight(r, 4j+i) = (q[j][r][i] - 128) * d[r]. "
    "S = 288: Q4_0, d[16] f16 then q[4][16][4] u8, weight(r, 4j+i) = ((q & 15) - 8) * d[r], "
    "weight(r, 16+4j+i) = ((q >> 4) - 8) * d[r]. Rows past N are zero.";

enum { PART_VISION = 1, PART_PROJECTOR = 2, PART_TEXT = 4, PART_LM_HEAD = 8 };

/* Which part of a llava-hf checkpoint a tensor belongs to (hub and newer layouts), or 0 for
 * tensors never quantized (embeddings, norms, biases, convolutions). */
static int part_of(const st_tensor *t) {
    const char *n = t->name;
    size_t len = strlen(n);
    if (t->ndim != 2 || len < 7 || strcmp(n + len - 7, ".weight")) return 0;
    if (strstr(n, "embed_tokens") || strstr(n, "position_embedding") || strstr(n, "patch_embedding")) return 0;
    if (!strcmp(n, "lm_head.weight") || !strcmp(n, "language_model.lm_head.weight")) return PART_LM_HEAD;
    if (strstr(n, "vision_tower.")) return PART_VISION;
    if (strstr(n, "multi_modal_projector.")) return PART_PROJECTOR;
    if (strstr(n, "language_model.")) return PART_TEXT;
    return 0;
}

static int quantizable(const st_tensor *t, int keep) {
    int p = part_of(t);
    if (!p || (keep & p)) return 0;
    if (t->dtype != LLAVA_DTYPE_F16 && t->dtype != LLAVA_DTYPE_BF16 && t->dtype != LLAVA_DTYPE_F32) return 0;
    if (t->shape[0] > (1 << 30) || t->shape[1] > (1 << 30)) return 0;
    return tensor_quant_shape_ok((int)t->shape[0], (int)t->shape[1]);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return -1;
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) rc = -1;
    if (ferror(in)) rc = -1;
    fclose(in);
    if (fclose(out) != 0) rc = -1;
    return rc;
}

/* Every regular file of the folder but the weights: config, tokenizer, templates. */
static int copy_side_files(const char *dir, const char *out) {
    DIR *d = opendir(dir);
    if (!d) return cli_fail("quantize: cannot read %s", dir);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
            !strcmp(e->d_name, "model.safetensors.index.json"))
            continue;
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s", dir, e->d_name);
        snprintf(to, sizeof to, "%s/%s", out, e->d_name);
        struct stat st;
        if (stat(from, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (copy_file(from, to) != 0) rc = cli_fail("quantize: cannot copy %s to %s", from, to);
    }
    closedir(d);
    return rc;
}

typedef struct shard_job {
    const char *file;       /* input shard path */
    uint64_t bytes_in, bytes_out;
    int quantized, kept;
} shard_job;

/* Quantizes and writes one shard: every tensor of set that lives in job->file. */
static int write_shard(const st_set *set, shard_job *job, const char *out_dir, tensor_qtype qt, int keep,
                       tensor_pool *pool, json_t *weight_map) {
    st_writer *w = st_writer_new();
    if (!w) return cli_fail("quantize: out of memory");
    void **bufs = calloc(st_set_count(set), sizeof *bufs);
    llava_error err;
    int rc = 0;
    if (!bufs) rc = cli_fail("quantize: out of memory");
    for (size_t i = 0; i < st_set_count(set) && !rc; i++) {
        const st_tensor *t = st_set_tensor(set, i);
        if (strcmp(t->file, job->file)) continue;
        job->bytes_in += t->nbytes;
        if (weight_map) json_object_set_new(weight_map, t->name, json_string(base_name(job->file)));
        if (!quantizable(t, keep)) {
            job->kept++;
            job->bytes_out += t->nbytes;
            if (st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err) != LLAVA_OK)
                rc = cli_fail("quantize: %s", err.message);
            continue;
        }
        int rows = (int)t->shape[0], cols = (int)t->shape[1];
        size_t bytes = tensor_quant_bytes(qt, rows, cols);
        bufs[i] = malloc(bytes);
        if (!bufs[i]) {
            rc = cli_fail("quantize: out of memory for %s (%zu bytes)", t->name, bytes);
            break;
        }
        if (tensor_quantize(pool, bufs[i], qt, t->data, t->dtype, rows, cols) != 0) {
            rc = cli_fail("quantize: %s: cannot quantize", t->name);
            break;
        }
        int64_t shape[3] = {(rows + TENSOR_QROWS - 1) / TENSOR_QROWS, cols / TENSOR_QK,
                            (int64_t)tensor_qtype_block_bytes(qt)};
        if (st_writer_add(w, t->name, LLAVA_DTYPE_U8, 3, shape, bufs[i], &err) != LLAVA_OK)
            rc = cli_fail("quantize: %s", err.message);
        job->quantized++;
        job->bytes_out += bytes;
    }
    if (!rc && (st_writer_set_metadata(w, "format", "pt", &err) != LLAVA_OK ||
                st_writer_set_metadata(w, "llava.quantization", tensor_qtype_name(qt), &err) != LLAVA_OK ||
                st_writer_set_metadata(w, "llava.quant.layout", LAYOUT_DOC, &err) != LLAVA_OK))
        rc = cli_fail("quantize: %s", err.message);
    if (!rc) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", out_dir, base_name(job->file));
        if (st_writer_save(w, path, &err) != LLAVA_OK) rc = cli_fail("quantize: %s", err.message);
    }
    for (size_t i = 0; bufs && i < st_set_count(set); i++) free(bufs[i]);
    free(bufs);
    st_writer_free(w);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *type = NULL;
    int keep = 0, threads = 0;
    static const struct option longs[] = {{"model", required_argument, 0, 'm'},
                                          {"out", required_argument, 0, 'o'},
                                          {"type", required_argument, 0, 'T'},
                                          {"keep", required_argument, 0, 'k'},
                                          {"threads", required_argument, 0, 't'},
                                          {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "m:o:t:h", longs, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'o': out = optarg; break;
        case 'T': type = optarg; break;
        case 'k':
            if (!strcmp(optarg, "vision")) keep |= PART_VISION;
            else if (!strcmp(optarg, "projector")) keep |= PART_PROJECTOR;
            else if (!strcmp(optarg, "text")) keep |= PART_TEXT;
            else if (!strcmp(optarg, "lm_head")) keep |= PART_LM_HEAD;
            else return cli_fail("quantize: --keep takes vision, projector, text or lm_head, not '%s'", optarg);
            break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 1024) return cli_fail("quantize: --threads: '%s' is not 1..1024", optarg);
            threads = (int)v;
            break;
        }
        case 'h': fputs(QUANTIZE_USAGE, stdout); return 0;
        default: fputs(QUANTIZE_USAGE, stderr); return 2;
        }
    }
    if (!dir || !out || !type || optind < argc) {
        fputs(QUANTIZE_USAGE, stderr);
        return 2;
    }
    tensor_qtype qt;
    if (tensor_qtype_parse(type, &qt) != 0) return cli_fail("quantize: --type takes q8_0 or q4_0, not '%s'", type);
    struct stat si, so;
    if (stat(dir, &si) != 0 || !S_ISDIR(si.st_mode)) return cli_fail("quantize: %s is not a folder", dir);
    if (mkdir(out, 0755) != 0 && (stat(out, &so) != 0 || !S_ISDIR(so.st_mode)))
        return cli_fail("quantize: cannot create %s", out);
    if (stat(out, &so) == 0 && so.st_ino == si.st_ino && so.st_dev == si.st_dev)
        return cli_fail("quantize: the output folder must differ from the input");

    st_set *set = NULL;
    llava_error err;
    if (st_set_open(dir, &set, &err) != LLAVA_OK) return cli_fail("quantize: %s", err.message);
    tensor_pool *pool = tensor_pool_create(threads);
    if (!pool) {
        st_set_close(set);
        return cli_fail("quantize: cannot start the threads");
    }
    /* the shards, in the order their first tensor appears */
    size_t nfiles = 0;
    shard_job *jobs = calloc(st_set_count(set) + 1, sizeof *jobs);
    int rc = jobs ? 0 : cli_fail("quantize: out of memory");
    for (size_t i = 0; i < st_set_count(set) && !rc; i++) {
        const char *f = st_set_tensor(set, i)->file;
        size_t j = 0;
        while (j < nfiles && strcmp(jobs[j].file, f)) j++;
        if (j == nfiles) jobs[nfiles++].file = f;
    }
    char index_path[4096];
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    struct stat sx;
    int indexed = stat(index_path, &sx) == 0;
    json_t *weight_map = indexed ? json_object() : NULL;
    uint64_t total_in = 0, total_out = 0;
    int n_quant = 0, n_kept = 0;
    double t0 = llava_now_s();
    for (size_t j = 0; j < nfiles && !rc; j++) {
        rc = write_shard(set, &jobs[j], out, qt, keep, pool, weight_map);
        if (rc) break;
        fprintf(stderr, "%s: %d matrices quantized, %d tensors kept, %.2f GB -> %.2f GB\n",
                base_name(jobs[j].file), jobs[j].quantized, jobs[j].kept, jobs[j].bytes_in * 1e-9,
                jobs[j].bytes_out * 1e-9);
        total_in += jobs[j].bytes_in;
        total_out += jobs[j].bytes_out;
        n_quant += jobs[j].quantized;
        n_kept += jobs[j].kept;
    }
    if (!rc && indexed) {
        json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total_out,
                                  "weight_map", weight_map);
        weight_map = NULL; /* owned by index now */
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
        if (!index || json_dump_file(index, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
            rc = cli_fail("quantize: cannot write %s", path);
        json_decref(index);
    }
    json_decref(weight_map);
    if (!rc) rc = copy_side_files(dir, out);
    double t1 = llava_now_s();
    if (!rc)
        fprintf(stderr, "%s: %s, %d matrices quantized, %d tensors kept, %.2f GB -> %.2f GB in %.1f s\n", out,
                tensor_qtype_name(qt), n_quant, n_kept, total_in * 1e-9, total_out * 1e-9,
                t1 - t0);
    free(jobs);
    tensor_pool_destroy(pool);
    st_set_close(set);
    return rc;
}
