/* libFuzzer target for the safetensors header parser. Input: [8-byte LE header length][header
 * JSON][data], as in a file. Besides not crashing, an accepted header must keep the promises the
 * loader makes: ranges inside the data, sizes consistent with shapes, names sorted and unique,
 * no two tensors sharing a byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const st_header *h, uint64_t data_len) {
    for (size_t i = 0; i < h->count; i++) {
        const st_tensor *t = &h->tensors[i];
        uint64_t begin = (uint64_t)(uintptr_t)t->data, end = begin + t->nbytes;
        if (end < begin || end > data_len) abort();
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || numel != t->numel) abort();
        if ((uint64_t)t->numel * llava_dtype_size(t->dtype) != t->nbytes) abort();
        if (i && strcmp(h->tensors[i - 1].name, t->name) >= 0) abort();
        for (size_t j = 0; j < i; j++) { /* quadratic, but fuzz inputs hold few tensors */
            uint64_t b2 = (uint64_t)(uintptr_t)h->tensors[j].data, e2 = b2 + h->tensors[j].nbytes;
            if (t->nbytes && h->tensors[j].nbytes && begin < e2 && b2 < end) abort();
        }
    }
    for (size_t i = 0; i < h->meta_count; i++)
        if (!h->meta_keys[i] || !h->meta_values[i]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = (len << 8) | data[i];
    if (len > size - 8) len = size - 8; /* the file layer rejects this before parsing */
    st_header h;
    llava_error err;
    uint64_t data_len = size - 8 - len;
    if (st_header_parse((const char *)data + 8, (size_t)len, data_len, "fuzz", &h, &err) == LLAVA_OK) {
        check_accepted(&h, data_len);
        st_header_free(&h);
    } else if (!err.message[0] || h.tensors || h.count) {
        abort(); /* a rejection says why and leaves nothing behind */
    }
    return 0;
}
