/* Names and sizes of tensor element types. */
#include "base/dtype.h"

static const struct {
    const char *name;
    size_t size;
} dtype_table[LLAVA_DTYPE_COUNT] = {
    [LLAVA_DTYPE_F64] = {"F64", 8}, [LLAVA_DTYPE_F32] = {"F32", 4},  [LLAVA_DTYPE_F16] = {"F16", 2},
    [LLAVA_DTYPE_BF16] = {"BF16", 2}, [LLAVA_DTYPE_I64] = {"I64", 8}, [LLAVA_DTYPE_I32] = {"I32", 4},
    [LLAVA_DTYPE_I16] = {"I16", 2}, [LLAVA_DTYPE_I8] = {"I8", 1},   [LLAVA_DTYPE_U8] = {"U8", 1},
    [LLAVA_DTYPE_BOOL] = {"BOOL", 1},
};

size_t llava_dtype_size(llava_dtype t) {
    return (unsigned)t < LLAVA_DTYPE_COUNT ? dtype_table[t].size : 0;
}

const char *llava_dtype_name(llava_dtype t) {
    return (unsigned)t < LLAVA_DTYPE_COUNT ? dtype_table[t].name : "?";
}

int llava_dtype_parse(const char *name, llava_dtype *out) {
    for (int i = 0; i < LLAVA_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (llava_dtype)i;
            return 0;
        }
    }
    return -1;
}
