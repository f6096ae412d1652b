/* `llava tokenize` and `llava detokenize`: text to ids and back with a model folder's tokenizer
 * (only tokenizer.json and tokenizer_config.json are read, no weights). tokenize --bench measures
 * encode throughput on one core. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/file.h"
#include "cli/cli.h"
#include "text/tokenizer.h"

#define TEXT_MAX_BYTES (1u << 30)

static void tokenize_usage(FILE *out) {
    fprintf(out,
            "usage: llava tokenize (-m MODEL_DIR | --tokenizer FILE) [--no-bos] [--json]\n"
            "                      [--bench] (TEXT | --file F)\n"
            "  -m DIR            a folder with tokenizer.json (and tokenizer_config.json)\n"
            "  --tokenizer FILE  a tokenizer.json (tokenizer_config.json is read next to it)\n"
            "  --no-bos          no special tokens (no BOS/EOS), add_special_tokens=False\n"
            "  --json            print {\"ids\": [...], \"pieces\": [...]}\n"
            "  --file F          read the text from F ('-' for standard input)\n"
            "  --jsonl           the input holds one JSON string per line; one result per line\n"
            "  --bench           encode repeatedly on one core and print the throughput\n"
            "Prints the ids separated by spaces.\n");
}

static void detokenize_usage(FILE *out) {
    fprintf(out,
            "usage: llava detokenize (-m MODEL_DIR | --tokenizer FILE) [--skip-special]\n"
            "                        [--stream] IDS...\n"
            "  IDS             token ids, as separate arguments or in one (\"1 2 3\", \"[1, 2, 3]\")\n"
            "  --skip-special  leave out special tokens (<s>, </s>, <image>, ...)\n"
            "  --stream        decode one id at a time, as generation streams it (same text)\n");
}

static double clock_ms(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* CPU time of this thread: what a shared machine's other load does not inflate. */
static double cpu_ms(void) { return clock_ms(CLOCK_THREAD_CPUTIME_ID); }

static int load(const char *path, tokenizer **tok) {
    llava_error err;
    if (tokenizer_load(path, tok, &err) != LLAVA_OK) return cli_fail("%s", err.message);
    return 0;
}

static int read_stdin(char **out, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return cli_fail("out of memory");
    for (;;) {
        if (n == cap) {
            if (cap >= TEXT_MAX_BYTES) {
                free(buf);
                return cli_fail("standard input: more than %u bytes", TEXT_MAX_BYTES);
            }
            char *g = realloc(buf, cap * 2 + 1);
            if (!g) {
                free(buf);
                return cli_fail("out of memory");
            }
            buf = g;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
    }
    if (ferror(stdin)) {
        free(buf);
        return cli_fail("standard input: %s", strerror(errno));
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Encodes text until at least a second has passed (and 3 times), keeping the best time. */
static int bench(const tokenizer *tok, const char *text, size_t len, unsigned flags,
                 double load_ms, double load_cpu_ms) {
    double best = 1e30, best_cpu = 1e30, start = llava_now_ms();
    size_t n_ids = 0;
    int runs = 0;
    llava_error err;
    while (runs < 3 || llava_now_ms() - start < 1000.0) {
        tokenizer_ids ids = {0};
        double t0 = llava_now_ms(), c0 = cpu_ms();
        if (tokenizer_encode(tok, text, len, flags, &ids, &err) != LLAVA_OK)
            return cli_fail("%s", err.message);
        double dt = llava_now_ms() - t0, dc = cpu_ms() - c0;
        if (dt < best) best = dt;
        if (dc < best_cpu) best_cpu = dc;
        n_ids = ids.n;
        tokenizer_ids_free(&ids);
        runs++;
    }
    printf("load: %.1f ms (%.1f ms of CPU)\n", load_ms, load_cpu_ms);
    printf("encode: %zu bytes -> %zu ids, best of %d runs %.2f ms (%.2f ms of CPU), "
           "%.1f MB/s (one core)\n", len, n_ids, runs, best, best_cpu,
           (double)len / 1e6 / (best / 1e3));
    return 0;
}

static int print_ids(const tokenizer *tok, const tokenizer_ids *ids, int as_json) {
    if (!as_json) {
        for (size_t i = 0; i < ids->n; i++) printf(i ? " %d" : "%d", (int)ids->ids[i]);
        putchar('\n');
        return 0;
    }
    json_t *o = json_object(), *a = json_array(), *p = json_array();
    for (size_t i = 0; i < ids->n; i++) {
        json_array_append_new(a, json_integer(ids->ids[i]));
        json_array_append_new(p, json_string(tokenizer_token_text(tok, ids->ids[i])));
    }
    json_object_set_new(o, "ids", a);
    json_object_set_new(o, "pieces", p);
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!s) return cli_fail("out of memory");
    puts(s);
    free(s);
    return 0;
}

/* --jsonl: each line of text is a JSON string to encode on its own. */
static int tokenize_lines(const tokenizer *tok, const char *text, size_t len, unsigned flags,
                          int as_json) {
    size_t line_no = 0;
    for (const char *p = text, *end = text + len; p < end; line_no++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_error_t je;
        json_t *s = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!s || !json_is_string(s)) {
            json_decref(s);
            return cli_fail("line %zu: not a JSON string%s%s", line_no + 1, s ? "" : ": ",
                            s ? "" : je.text);
        }
        tokenizer_ids ids = {0};
        llava_error err;
        int rc = tokenizer_encode(tok, json_string_value(s), json_string_length(s), flags, &ids,
                                  &err) != LLAVA_OK
                     ? cli_fail("line %zu: %s", line_no + 1, err.message)
                     : print_ids(tok, &ids, as_json);
        tokenizer_ids_free(&ids);
        json_decref(s);
        if (rc) return rc;
        p += n + 1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *file = NULL, *text = NULL;
    int as_json = 0, do_bench = 0, jsonl = 0;
    unsigned flags = TOKENIZER_ADD_SPECIAL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model") ||
                    !strcmp(argv[i], "--tokenizer")) && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--file") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(argv[i], "--no-bos")) {
            flags &= ~(unsigned)TOKENIZER_ADD_SPECIAL;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (!strcmp(argv[i], "--bench")) {
            do_bench = 1;
        } else if (!strcmp(argv[i], "--jsonl")) {
            jsonl = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0' && !text) {
            tokenize_usage(stderr);
            return cli_fail("tokenize: unknown option '%s'", argv[i]);
        } else if (!text) {
            text = argv[i];
        } else {
            tokenize_usage(stderr);
            return cli_fail("tokenize: unexpected argument '%s'", argv[i]);
        }
    }
    if (!path || (!text) == (!file)) {
        tokenize_usage(stderr);
        return 2;
    }
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        llava_error err;
        if (!strcmp(file, "-")) {
            if (read_stdin(&buf, &len)) return 1;
        } else if (llava_read_file(file, TEXT_MAX_BYTES, &buf, &len, &err) != LLAVA_OK) {
            return cli_fail("%s", err.message);
        }
        text = buf;
    } else {
        len = strlen(text);
    }
    tokenizer *tok;
    double t0 = llava_now_ms(), c0 = cpu_ms();
    if (load(path, &tok)) {
        free(buf);
        return 1;
    }
    double load_ms = llava_now_ms() - t0, load_cpu_ms = cpu_ms() - c0;
    int rc;
    if (do_bench) {
        rc = bench(tok, text, len, flags, load_ms, load_cpu_ms);
    } else if (jsonl) {
        rc = tokenize_lines(tok, text, len, flags, as_json);
    } else {
        tokenizer_ids ids = {0};
        llava_error err;
        if (tokenizer_encode(tok, text, len, flags, &ids, &err) != LLAVA_OK)
            rc = file ? cli_fail("%s: %s", file, err.message) : cli_fail("%s", err.message);
        else
            rc = print_ids(tok, &ids, as_json);
        tokenizer_ids_free(&ids);
    }
    tokenizer_free(tok);
    free(buf);
    return rc;
}

/* Appends the ids written in s ("1 2", "1,2", "[1, 2]") to ids. */
static int parse_ids(const char *s, tokenizer_ids *ids) {
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\t' || *p == '\n') p++;
        if (!*p) return 0;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX)
            return cli_fail("detokenize: '%s' is not a list of token ids", s);
        if (ids->n == ids->cap) {
            size_t cap = ids->cap ? ids->cap * 2 : 64;
            int32_t *g = realloc(ids->ids, cap * sizeof *g);
            if (!g) return cli_fail("out of memory");
            ids->ids = g;
            ids->cap = cap;
        }
        ids->ids[ids->n++] = (int32_t)v;
        p = end;
    }
}

int cmd_detokenize(int argc, char **argv) {
    const char *path = NULL;
    unsigned flags = 0;
    int stream = 0;
    tokenizer_ids ids = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            detokenize_usage(stdout);
            tokenizer_ids_free(&ids);
            return 0;
        } else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model") ||
                    !strcmp(argv[i], "--tokenizer")) && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--skip-special")) {
            flags |= TOKENIZER_SKIP_SPECIAL;
        } else if (!strcmp(argv[i], "--stream")) {
            stream = 1;
        } else if (parse_ids(argv[i], &ids)) {
            detokenize_usage(stderr);
            tokenizer_ids_free(&ids);
            return 2;
        }
    }
    if (!path) {
        detokenize_usage(stderr);
        tokenizer_ids_free(&ids);
        return 2;
    }
    tokenizer *tok;
    if (load(path, &tok)) {
        tokenizer_ids_free(&ids);
        return 1;
    }
    tokenizer_text text = {0};
    llava_error err;
    int rc = 0;
    if (stream) {
        tokenizer_stream *s = tokenizer_stream_new(tok, flags);
        if (!s) rc = cli_fail("out of memory");
        for (size_t i = 0; s && i < ids.n && !rc; i++) {
            text.len = 0;
            if (tokenizer_stream_push(s, ids.ids[i], &text, &err) != LLAVA_OK)
                rc = cli_fail("%s", err.message);
            else if (text.len)
                fwrite(text.data, 1, text.len, stdout);
            fflush(stdout);
        }
        text.len = 0;
        if (s && !rc && tokenizer_stream_finish(s, &text, &err) != LLAVA_OK)
            rc = cli_fail("%s", err.message);
        else if (s && !rc && text.len)
            fwrite(text.data, 1, text.len, stdout);
        tokenizer_stream_free(s);
    } else if (tokenizer_decode(tok, ids.ids, ids.n, flags, &text, &err) != LLAVA_OK) {
        rc = cli_fail("%s", err.message);
    } else if (text.len) {
        fwrite(text.data, 1, text.len, stdout);
    }
    if (!rc) putchar('\n');
    tokenizer_text_free(&text);
    tokenizer_ids_free(&ids);
    tokenizer_free(tok);
    return rc;
}
