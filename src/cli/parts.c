/* Model part lists and load-time formats on the command line (--half vision,projector,
 * --quant q8_0, --kv-cache f16). */
#include <string.h>

#include "cli/cli.h"
#include "llava.h"
#include "model/model.h"
#include "tensor/quant.h"

int cli_parse_quant(const char *s, int *out) {
    tensor_qtype t;
    if (tensor_qtype_parse(s, &t) != 0) return -1;
    *out = t == TENSOR_Q8_0 ? LLAVA_QUANT_LOAD_Q8_0 : LLAVA_QUANT_LOAD_Q4_0;
    return 0;
}

int cli_parse_kv_cache(const char *s, int *out) {
    if (!strcmp(s, "f32")) *out = LLAVA_KV_CACHE_F32;
    else if (!strcmp(s, "f16")) *out = LLAVA_KV_CACHE_F16;
    else return -1;
    return 0;
}

static const struct {
    const char *name;
    unsigned bits;
} PARTS[] = {{"vision", LLAVA_PART_VISION},
             {"projector", LLAVA_PART_PROJECTOR},
             {"text", LLAVA_PART_TEXT},
             {"lm_head", LLAVA_PART_LM_HEAD},
             {"all", LLAVA_PART_VISION | LLAVA_PART_PROJECTOR | LLAVA_PART_TEXT | LLAVA_PART_LM_HEAD}};

int cli_parse_parts(const char *s, unsigned *out) {
    unsigned bits = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        size_t i = 0;
        for (; i < sizeof PARTS / sizeof PARTS[0]; i++)
            if (strlen(PARTS[i].name) == n && !strncmp(PARTS[i].name, s, n)) break;
        if (i == sizeof PARTS / sizeof PARTS[0]) return -1;
        bits |= PARTS[i].bits;
        s += n;
        if (*s == ',' && !*++s) return -1; /* a trailing comma names nothing */
    }
    if (!bits) return -1;
    *out = bits;
    return 0;
}

void cli_parts_name(unsigned bits, char *out, size_t n) {
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i + 1 < sizeof PARTS / sizeof PARTS[0]; i++)
        if (bits & PARTS[i].bits) {
            size_t w = strlen(PARTS[i].name) + (len ? 1 : 0);
            if (len + w + 1 > n) break;
            if (len) out[len++] = ',';
            memcpy(out + len, PARTS[i].name, strlen(PARTS[i].name) + 1);
            len += strlen(PARTS[i].name);
        }
    if (!len && n > 4) memcpy(out, "none", 5);
}
