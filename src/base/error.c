/* Error values: formatting of messages and status names. */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

llava_status llava_error_set(llava_error *err, llava_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

llava_status llava_error_prefix(llava_error *err, const char *fmt, ...) {
    if (!err) return LLAVA_ERR_INTERNAL;
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    snprintf(err->message, sizeof err->message, "%s: %s", prefix, old);
    return err->code;
}

void llava_error_clear(llava_error *err) {
    if (!err) return;
    err->code = LLAVA_OK;
    err->message[0] = '\0';
}

const char *llava_status_name(llava_status status) {
    switch (status) {
    case LLAVA_OK: return "ok";
    case LLAVA_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LLAVA_ERR_IO: return "I/O error";
    case LLAVA_ERR_FORMAT: return "format error";
    case LLAVA_ERR_UNSUPPORTED: return "unsupported";
    case LLAVA_ERR_LIMIT: return "limit exceeded";
    case LLAVA_ERR_NO_MEMORY: return "out of memory";
    case LLAVA_ERR_BUSY: return "busy";
    case LLAVA_ERR_CANCELLED: return "cancelled";
    case LLAVA_ERR_STATE: return "invalid state";
    case LLAVA_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *llava_version(void) {
#define LLAVA_STR2(x) #x
#define LLAVA_STR(x) LLAVA_STR2(x)
    return LLAVA_STR(LLAVA_VERSION_MAJOR) "." LLAVA_STR(LLAVA_VERSION_MINOR) "." LLAVA_STR(
        LLAVA_VERSION_PATCH);
}
