/* The `llava` command: one function per subcommand, each in its own file, all taking the
 * arguments after the subcommand name (argv[0] is the subcommand) and returning the exit code. */
#ifndef LLAVA_CLI_H
#define LLAVA_CLI_H

#include <stddef.h>

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
/* `llava bench -m DIR ...` (bench_model.c): the whole model against its hardware floors. */
int bench_model(int argc, char **argv);

/* The bundled model's folder (models/tiny-llava-shapes) found next to the executable (installed
 * or build tree), in the source tree it was built from, or in the install prefix; written to out
 * and returned, or NULL when none holds a config.json. */
const char *cli_default_model(char *out, size_t n);

/* A comma-separated list of model parts (vision, projector, text, lm_head, all) as LLAVA_PART_*
 * bits: 0, or -1 for an unknown or empty name. */
int cli_parse_parts(const char *s, unsigned *out);
/* The bits as such a list ("none" for 0), cut to fit n bytes. */
void cli_parts_name(unsigned bits, char *out, size_t n);

/* "q8_0" / "q4_0" (case-insensitive) as llava_engine_config.quant: 0, or -1 for another name. */
int cli_parse_quant(const char *s, int *out);
/* "f32" / "f16" as llava_engine_config.kv_cache: 0, or -1 for another name. */
int cli_parse_kv_cache(const char *s, int *out);

/* Prints "llava: <message>" to stderr; returns 1 (the exit code for errors). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
