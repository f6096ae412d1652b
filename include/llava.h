/* llava.h: the public contract of llava.c, a LLaVA vision-language inference engine.
 *
 * Everything a program embedding the engine needs is declared here; nothing under src/ is part
 * of the API. Every function says which thread may call it, whether it can block, and who owns
 * each pointer it takes or returns.
 */
#ifndef LLAVA_H
#define LLAVA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LLAVA_VERSION_MAJOR 0
#define LLAVA_VERSION_MINOR 1
#define LLAVA_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */

/* What went wrong, in classes a caller can act on. */
typedef enum llava_status {
    LLAVA_OK = 0,
    LLAVA_ERR_INVALID_ARGUMENT, /* the caller passed something unusable */
    LLAVA_ERR_IO,               /* a file could not be opened, read or mapped */
    LLAVA_ERR_FORMAT,           /* bytes from outside (file, image, JSON, body) are malformed */
    LLAVA_ERR_UNSUPPORTED,      /* well-formed but asks for something this engine does not do */
    LLAVA_ERR_LIMIT,            /* input exceeds a configured limit (size, pixels, context) */
    LLAVA_ERR_NO_MEMORY,
    LLAVA_ERR_BUSY,             /* the request queue is full: retry later */
    LLAVA_ERR_CANCELLED,
    LLAVA_ERR_STATE,            /* the call is not valid in the object's current state */
    LLAVA_ERR_INTERNAL
} llava_status;

/* An error: a status and a message naming the file, tensor, field or byte offset at fault.
 * Plain value; the caller owns it (usually on its stack). */
typedef struct llava_error {
    llava_status code;
    char message[512];
} llava_error;

/* A static, human-readable name of a status ("format error", ...). Any thread. */
const char *llava_status_name(llava_status status);

/* The library's version as "MAJOR.MINOR.PATCH". Any thread; static storage. */
const char *llava_version(void);

#ifdef __cplusplus
}
#endif
#endif /* LLAVA_H */
