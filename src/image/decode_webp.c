/* WebP through libwebp's animation decoder, the path Pillow 9.4 takes for every WebP file (still
 * or animated): the first frame composed on the canvas as non-premultiplied RGBA, alpha then
 * dropped. The canvas size is checked against the limits from the demuxed header before the
 * decoder allocates anything of that size. */
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "image/codec.h"

llava_status image_decode_webp(const uint8_t *bytes, size_t len, const image_limits *lim,
                               image_decoded *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    WebPData data = {bytes, len};
    WebPDemuxState state;
    WebPDemuxer *demux = WebPDemuxPartial(&data, &state);
    if (!demux || state != WEBP_DEMUX_DONE) {
        const char *why = !demux && state == WEBP_DEMUX_PARSE_ERROR
                              ? "malformed RIFF container"
                              : "truncated data (the file ends before the image is complete)";
        WebPDemuxDelete(demux);
        return llava_error_set(err, LLAVA_ERR_FORMAT, "WebP: %s", why);
    }
    uint32_t w = WebPDemuxGetI(demux, WEBP_FF_CANVAS_WIDTH);
    uint32_t h = WebPDemuxGetI(demux, WEBP_FF_CANVAS_HEIGHT);
    llava_status st = image_check_limits(lim, "WebP", w, h, err);
    if (st != LLAVA_OK) {
        WebPDemuxDelete(demux);
        return st;
    }
    WebPChunkIterator chunk;
    if (WebPDemuxGetChunk(demux, "EXIF", 1, &chunk)) {
        out->orientation = image_exif_orientation(chunk.chunk.bytes, chunk.chunk.size);
        WebPDemuxReleaseChunkIterator(&chunk);
    }
    WebPDemuxDelete(demux);

    WebPAnimDecoderOptions opt;
    if (!WebPAnimDecoderOptionsInit(&opt))
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "WebP: library version mismatch");
    opt.color_mode = MODE_RGBA;
    opt.use_threads = 0;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &opt);
    if (!dec) return llava_error_set(err, LLAVA_ERR_FORMAT, "WebP: malformed bitstream header");
    uint8_t *rgba = NULL;
    int ts = 0;
    if (!WebPAnimDecoderGetNext(dec, &rgba, &ts) || !rgba) {
        WebPAnimDecoderDelete(dec);
        return llava_error_set(err, LLAVA_ERR_FORMAT, "WebP: corrupt or truncated image data");
    }
    uint8_t *rgb = image_alloc_rgb((int)w, (int)h);
    if (!rgb) {
        WebPAnimDecoderDelete(dec);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "WebP: out of memory for %ux%u pixels",
                               w, h);
    }
    size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        rgb[3 * i] = rgba[4 * i];
        rgb[3 * i + 1] = rgba[4 * i + 1];
        rgb[3 * i + 2] = rgba[4 * i + 2];
    }
    WebPAnimDecoderDelete(dec);
    out->width = (int)w;
    out->height = (int)h;
    out->rgb = rgb;
    return LLAVA_OK;
}
