/* Entry point of the `llava` command: dispatches to the subcommand named by argv[1]. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "llava.h"

static int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("llava %s\n", llava_version());
    return 0;
}

/* One line per subcommand; each lives in src/cli/cmd_<name>.c. */
static const cli_command commands[] = {
    {"version", cmd_version, "print the version"},
    {"run", cmd_run, "answer a prompt about images with a model"},
    {"dump", cmd_dump, "write the intermediate tensors of a prompt (for checks)"},
    {"tokenize", cmd_tokenize, "text to token ids with a model folder's tokenizer"},
    {"detokenize", cmd_detokenize, "token ids back to text"},
    {"info", cmd_info, "describe a model folder (architecture, sizes, dtypes, tensors, template)"},
    {"preprocess", cmd_preprocess, "decode and preprocess an image to pixel_values (safetensors)"},
    {"serve", cmd_serve, "HTTP server with OpenAI- and Ollama-compatible APIs"},
    {"quantize", cmd_quantize, "store a checkpoint's matrices as Q8_0 or Q4_0 blocks (llava quantize --help)"},
    {"bench", cmd_bench, "measure speed (llava bench kernels: products vs machine bounds)"},
};

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("llava: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void usage(FILE *out) {
    fprintf(out, "usage: llava COMMAND [options]   (llava COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "llava: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
