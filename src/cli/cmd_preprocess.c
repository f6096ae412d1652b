/* `llava preprocess`: one image through decoding and CLIPImageProcessor preprocessing, written as
 * pixel_values [1, 3, H, W] F32 in a safetensors file, so that anyone can compare it with the
 * transformers reference. Needs only the model folder's preprocessor_config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/file.h"
#include "cli/cli.h"
#include "image/image.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: llava preprocess -m MODEL_DIR -i IMAGE -o OUT.safetensors [--pad] [--u8]\n"
            "  -m DIR     model folder holding preprocessor_config.json (or that file itself)\n"
            "  -i IMAGE   JPEG, PNG, WebP, GIF or BMP (format read from the bytes)\n"
            "  -o FILE    writes pixel_values [1, 3, H, W] F32\n"
            "  --pad      pad to a square with the mean colour first (LLaVA's \"pad\" mode)\n"
            "  --u8       also write image.decoded [h, w, 3] U8 (after EXIF rotation and RGB\n"
            "             conversion) and image.processed [H, W, 3] U8 (resized and cropped)\n"
            "  --repeat N decode and preprocess N more times from memory and print the times\n");
}

static double clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { T_DECODE, T_PREPROCESS, T_TOTAL, T_ONE_CALL, T_COUNT };

/* Times decoding (from bytes already in memory) and preprocessing, `runs` times each, and the
 * one-call image_decode_preprocess (which streams JPEG rows through the resize); prints the
 * minimum and median wall time of each, and the minimum CPU time of this thread (the figure
 * that stays meaningful on a machine shared with other work). */
static llava_status time_runs(const char *path, const hf_preprocess_config *cfg, float *pixels,
                              size_t cap, int runs, llava_error *err) {
    char *data = NULL;
    size_t len = 0;
    llava_status st = llava_read_file(path, (size_t)256 << 20, &data, &len, err);
    if (st != LLAVA_OK) return st;
    double *wall = calloc((size_t)runs * T_COUNT * 2, sizeof *wall);
    if (!wall) {
        free(data);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "preprocess: out of memory");
    }
    double *cpu = wall + (size_t)runs * T_COUNT;
    for (int r = 0; r < runs && st == LLAVA_OK; r++) {
        double w[4], c[4];
        image_rgb img;
        w[0] = clock_ms(CLOCK_MONOTONIC), c[0] = clock_ms(CLOCK_THREAD_CPUTIME_ID);
        st = image_decode_memory(data, len, NULL, &img, err);
        w[1] = clock_ms(CLOCK_MONOTONIC), c[1] = clock_ms(CLOCK_THREAD_CPUTIME_ID);
        if (st == LLAVA_OK)
            st =
                image_preprocess(img.rgb, img.width, img.height, cfg, pixels, cap, NULL, NULL, err);
        image_free(&img);
        w[2] = clock_ms(CLOCK_MONOTONIC), c[2] = clock_ms(CLOCK_THREAD_CPUTIME_ID);
        if (st == LLAVA_OK)
            st = image_decode_preprocess(data, len, NULL, cfg, pixels, cap, NULL, NULL, err);
        w[3] = clock_ms(CLOCK_MONOTONIC), c[3] = clock_ms(CLOCK_THREAD_CPUTIME_ID);
        const int from[T_COUNT] = {0, 1, 0, 2}, to[T_COUNT] = {1, 2, 2, 3};
        for (int k = 0; k < T_COUNT; k++) {
            wall[(size_t)k * runs + r] = w[to[k]] - w[from[k]];
            cpu[(size_t)k * runs + r] = c[to[k]] - c[from[k]];
        }
    }
    if (st == LLAVA_OK) {
        static const char *names[T_COUNT] = {"decode", "preprocess", "total", "one call"};
        for (int k = 0; k < T_COUNT; k++) {
            double *tw = wall + (size_t)k * runs, *tc = cpu + (size_t)k * runs;
            qsort(tw, (size_t)runs, sizeof *tw, cmp_double);
            qsort(tc, (size_t)runs, sizeof *tc, cmp_double);
            printf("%-10s wall min %8.2f ms  median %8.2f ms   cpu min %8.2f ms  (%d runs)\n",
                   names[k], tw[0], tw[runs / 2], tc[0], runs);
        }
    }
    free(wall);
    free(data);
    return st;
}

int cmd_preprocess(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *output = NULL;
    int pad = 0, u8 = 0, repeat = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--pad")) {
            pad = 1;
        } else if (!strcmp(a, "--u8")) {
            u8 = 1;
        } else if (!strcmp(a, "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
            if (repeat < 1 || repeat > 10000)
                return cli_fail("preprocess: --repeat wants 1..10000");
        } else if ((!strcmp(a, "-m") || !strcmp(a, "-i") || !strcmp(a, "-o")) && i + 1 < argc) {
            const char **dst = a[1] == 'm' ? &model : a[1] == 'i' ? &input : &output;
            *dst = argv[++i];
        } else {
            usage(stderr);
            return cli_fail("preprocess: unexpected argument '%s'", a);
        }
    }
    if (!model || !input || !output) {
        usage(stderr);
        return cli_fail("preprocess: -m, -i and -o are required");
    }

    char cfg_path[4096];
    if (llava_file_exists(model))
        snprintf(cfg_path, sizeof cfg_path, "%s", model);
    else if (llava_path_join(cfg_path, sizeof cfg_path, model, "preprocessor_config.json") != 0)
        return cli_fail("preprocess: path too long: %s", model);
    llava_error err = {0};
    hf_preprocess_config cfg;
    if (hf_preprocess_config_load(cfg_path, &cfg, &err) != LLAVA_OK)
        return cli_fail("%s", err.message);
    if (pad) cfg.do_pad = true;

    image_rgb img;
    if (image_decode_file(input, NULL, &img, &err) != LLAVA_OK) return cli_fail("%s", err.message);
    int oh = 0, ow = 0;
    float *pixels = NULL;
    image_rgb processed = {0};
    st_writer *w = NULL;
    int rc = 1;
    if (image_preprocess_size(&cfg, img.width, img.height, &oh, &ow, &err) != LLAVA_OK) goto fail;
    pixels = malloc(sizeof *pixels * 3 * (size_t)oh * ow);
    if (!pixels) {
        cli_fail("preprocess: out of memory");
        goto done;
    }
    if (image_preprocess(img.rgb, img.width, img.height, &cfg, pixels, 3 * (size_t)oh * ow, &oh,
                         &ow, &err) != LLAVA_OK)
        goto fail;
    w = st_writer_new();
    if (!w) {
        cli_fail("preprocess: out of memory");
        goto done;
    }
    const int64_t shape[4] = {1, 3, oh, ow};
    if (st_writer_add(w, "pixel_values", LLAVA_DTYPE_F32, 4, shape, pixels, &err) != LLAVA_OK)
        goto fail;
    if (u8) {
        if (image_preprocess_u8(img.rgb, img.width, img.height, &cfg, &processed, &err) != LLAVA_OK)
            goto fail;
        const int64_t ds[3] = {img.height, img.width, 3}, ps[3] = {oh, ow, 3};
        if (st_writer_add(w, "image.decoded", LLAVA_DTYPE_U8, 3, ds, img.rgb, &err) != LLAVA_OK ||
            st_writer_add(w, "image.processed", LLAVA_DTYPE_U8, 3, ps, processed.rgb, &err) !=
                LLAVA_OK)
            goto fail;
    }
    if (st_writer_set_metadata(w, "source_format", image_format_name(img.format), &err) !=
        LLAVA_OK)
        goto fail;
    if (st_writer_save(w, output, &err) != LLAVA_OK) goto fail;
    printf("%s: %s %dx%d -> pixel_values [1, 3, %d, %d]\n", input, image_format_name(img.format),
           img.width, img.height, oh, ow);
    if (repeat && time_runs(input, &cfg, pixels, 3 * (size_t)oh * ow, repeat, &err) != LLAVA_OK)
        goto fail;
    rc = 0;
    goto done;
fail:
    cli_fail("%s", err.message);
done:
    st_writer_free(w);
    image_free(&processed);
    free(pixels);
    image_free(&img);
    return rc;
}
