/* libFuzzer target: the GIF decoder (image_decode_gif) on arbitrary bytes, then preprocessing. */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_image_decode(image_decode_gif, data, size);
    return 0;
}
