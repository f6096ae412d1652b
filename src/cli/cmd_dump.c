/* `llava dump`: runs the prompt pass of a request and writes its intermediate tensors to a
 * .safetensors file under the names of the reference fixtures (pixel_values, input_ids,
 * expanded_input_ids, vision.features, image_features, inputs_embeds, last_logits). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/safetensors.h"
#include "model/model.h"

#define MAX_IMAGES 16

static const char DUMP_USAGE[] =
    "usage: llava dump -m DIR [-i IMAGE ...] -p PROMPT [--raw] [--template NAME] -o OUT.safetensors\n"
    "  writes pixel_values [n,3,S,S], input_ids [1,L], expanded_input_ids [1,Lx] (I64),\n"
    "  vision.features [n,N,Dv], image_features [n,N,Dt], inputs_embeds [1,Lx,Dt] and\n"
    "  last_logits [V] (F32) for the prompt; -t N sets the compute threads\n";

typedef struct dump_buffers {
    float *vision, *image, *embeds, *logits;
    int64_t *ids, *expanded;
} dump_buffers;

static llava_status write_dump(const char *path, const llava_model_info *info,
                               const llava_prepared *p, int feature_rows, dump_buffers *b,
                               llava_error *err) {
    st_writer *w = st_writer_new();
    if (!w) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    int n = p->n_images, S = info->image_size;
    int64_t pix[4] = {n, 3, S, S}, ids[2] = {1, p->n_ids}, ex[2] = {1, p->n_positions};
    int64_t vf[3] = {n, feature_rows, info->vision_hidden};
    int64_t imf[3] = {n, info->tokens_per_image, info->text_hidden};
    int64_t emb[3] = {1, p->n_positions, info->text_hidden}, lg[1] = {info->vocab_size};
    llava_status st = LLAVA_OK;
    if (n > 0) {
        if (st == LLAVA_OK)
            st = st_writer_add(w, "pixel_values", LLAVA_DTYPE_F32, 4, pix, p->pixel_values, err);
        if (st == LLAVA_OK)
            st = st_writer_add(w, "vision.features", LLAVA_DTYPE_F32, 3, vf, b->vision, err);
        if (st == LLAVA_OK)
            st = st_writer_add(w, "image_features", LLAVA_DTYPE_F32, 3, imf, b->image, err);
    }
    if (st == LLAVA_OK) st = st_writer_add(w, "input_ids", LLAVA_DTYPE_I64, 2, ids, b->ids, err);
    if (st == LLAVA_OK)
        st = st_writer_add(w, "expanded_input_ids", LLAVA_DTYPE_I64, 2, ex, b->expanded, err);
    if (st == LLAVA_OK)
        st = st_writer_add(w, "inputs_embeds", LLAVA_DTYPE_F32, 3, emb, b->embeds, err);
    if (st == LLAVA_OK)
        st = st_writer_add(w, "last_logits", LLAVA_DTYPE_F32, 1, lg, b->logits, err);
    if (st == LLAVA_OK) st = st_writer_set_metadata(w, "prompt", p->prompt, err);
    if (st == LLAVA_OK) st = st_writer_save(w, path, err);
    st_writer_free(w);
    return st;
}

int cmd_dump(int argc, char **argv) {
    enum { O_RAW = 256, O_TEMPLATE, O_HELP };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"image", required_argument, 0, 'i'},
        {"prompt", required_argument, 0, 'p'}, {"output", required_argument, 0, 'o'},
        {"raw", no_argument, 0, O_RAW},        {"template", required_argument, 0, O_TEMPLATE},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    const char *model_dir = NULL, *prompt = NULL, *out_path = NULL, *images[MAX_IMAGES];
    int n_images = 0;
    llava_model_options mopt;
    llava_model_options_default(&mopt);
    llava_prepare_options popt = {.max_tokens = 1};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:i:p:o:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'i':
            if (n_images == MAX_IMAGES) return cli_fail("at most %d images", MAX_IMAGES);
            images[n_images++] = optarg;
            break;
        case 'p': prompt = optarg; break;
        case 'o': out_path = optarg; break;
        case O_RAW: popt.raw = true; break;
        case O_TEMPLATE: popt.template_name = optarg; break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 1024)
                return cli_fail("--threads: '%s' is not an integer in [1, 1024]", optarg);
            mopt.n_threads = (int)v;
            break;
        }
        case O_HELP: fputs(DUMP_USAGE, stdout); return 0;
        default:
            fputs(DUMP_USAGE, stderr);
            return cli_fail("dump: bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail("dump: unexpected argument '%s'", argv[optind]);
    if (!model_dir) return cli_fail("dump: no model given: pass -m DIR");
    if (!prompt) return cli_fail("dump: no prompt given: pass -p TEXT");
    if (!out_path) return cli_fail("dump: no output file given: pass -o OUT.safetensors");

    llava_error err;
    llava_model *model = NULL;
    if (llava_model_load(model_dir, &mopt, &model, &err) != LLAVA_OK)
        return cli_fail("%s", err.message);
    llava_model_info info;
    llava_model_get_info(model, &info);

    template_message msg = {"user", prompt,
                            template_count_images(prompt) == 0 && !popt.raw ? n_images : 0};
    llava_image_input in[MAX_IMAGES];
    memset(in, 0, sizeof in);
    for (int i = 0; i < n_images; i++) in[i].path = images[i];
    llava_prepared *p = NULL;
    llava_session *session = NULL;
    dump_buffers b = {0};
    int rc = 0;
    if (llava_prepare(model, &msg, 1, in, n_images, &popt, &p, &err) != LLAVA_OK ||
        llava_session_create(model, &session, &err) != LLAVA_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    int rows = llava_model_feature_rows(model);
    size_t n = (size_t)p->n_images;
    b.vision = malloc((n * rows * info.vision_hidden + 1) * sizeof(float));
    b.image = malloc((n * info.tokens_per_image * info.text_hidden + 1) * sizeof(float));
    b.embeds = malloc((size_t)p->n_positions * info.text_hidden * sizeof(float));
    b.logits = malloc((size_t)info.vocab_size * sizeof(float));
    b.ids = malloc((size_t)p->n_ids * sizeof(int64_t));
    b.expanded = malloc((size_t)p->n_positions * sizeof(int64_t));
    if (!b.vision || !b.image || !b.embeds || !b.logits || !b.ids || !b.expanded) {
        rc = cli_fail("out of memory for the dump buffers");
        goto done;
    }
    for (int i = 0; i < p->n_ids; i++) b.ids[i] = p->ids[i];
    llava_trace trace = {.vision_features = b.vision, .image_features = b.image,
                         .inputs_embeds = b.embeds, .expanded_ids = b.expanded,
                         .last_logits = b.logits};
    if (llava_evaluate_prompt(session, p, &trace, NULL, &err) != LLAVA_OK ||
        write_dump(out_path, &info, p, rows, &b, &err) != LLAVA_OK)
        rc = cli_fail("%s", err.message);
done:
    free(b.vision);
    free(b.image);
    free(b.embeds);
    free(b.logits);
    free(b.ids);
    free(b.expanded);
    llava_session_free(session);
    llava_prepared_free(p);
    llava_model_free(model);
    return rc;
}
