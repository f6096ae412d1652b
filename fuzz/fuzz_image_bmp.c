/* libFuzzer target: the BMP decoder (image_decode_bmp) on arbitrary bytes, then preprocessing. */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_image_decode(image_decode_bmp, data, size);
    return 0;
}
