/* Error reporting shared by every layer: a status plus a message that names what is at fault.
 * Library code never prints or exits; it fills a llava_error and returns its status. */
#ifndef LLAVA_BASE_ERROR_H
#define LLAVA_BASE_ERROR_H

#include "llava.h"

#if defined(__GNUC__)
#define LLAVA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LLAVA_PRINTF(a, b)
#endif

/* Sets err (if not NULL) to code and the formatted message; returns code so that callers can
 * write `return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: ...", path);`. */
llava_status llava_error_set(llava_error *err, llava_status code, const char *fmt, ...)
    LLAVA_PRINTF(3, 4);

/* Puts "prefix: " in front of an error's message (e.g. the file name a lower layer did not know),
 * keeping its code; returns the code. */
llava_status llava_error_prefix(llava_error *err, const char *fmt, ...) LLAVA_PRINTF(2, 3);

/* Resets err to LLAVA_OK with an empty message. */
void llava_error_clear(llava_error *err);

#endif
