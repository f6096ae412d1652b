/* Base64 (RFC 4648, standard alphabet) decoding of images sent inside JSON bodies, strict enough
 * that a corrupted upload is refused with the byte offset at fault instead of decoding to noise. */
#ifndef LLAVA_SERVER_BASE64_H
#define LLAVA_SERVER_BASE64_H

#include <stddef.h>

/* Upper bound of the decoded size of len base64 characters. */
size_t srv_base64_max_decoded(size_t len);

/* Decodes len characters of src into out (room for srv_base64_max_decoded(len) bytes) and sets
 * *out_len. Accepted: the standard alphabet, '=' padding at the end (or none), and CR/LF line
 * breaks (MIME-wrapped uploads), which are skipped. Anything else fails: returns -1 and writes
 * into msg (cap bytes) what is wrong and at which character offset. Returns 0 on success. */
int srv_base64_decode(const char *src, size_t len, unsigned char *out, size_t *out_len, char *msg,
                      size_t cap);

#endif
