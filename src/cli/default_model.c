/* The model `llava run` and `llava serve` use when no -m is given: the small model shipped in
 * models/tiny-llava-shapes, wherever the binary runs from. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define DEFAULT_MODEL_NAME "tiny-llava-shapes"

#ifndef LLAVA_SOURCE_DIR
#define LLAVA_SOURCE_DIR ""
#endif
#ifndef LLAVA_INSTALL_DATADIR
#define LLAVA_INSTALL_DATADIR ""
#endif

static int is_checkpoint(const char *dir) {
    char p[PATH_MAX + 32];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/config.json", dir) >= (int)sizeof p) return 0;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int try_dir(char *out, size_t n, const char *base, const char *rel) {
    if (!base[0]) return 0;
    if (snprintf(out, n, "%s%s", base, rel) >= (int)n) return 0;
    return is_checkpoint(out);
}

const char *cli_default_model(char *out, size_t n) {
    /* An installed copy moved elsewhere (a relocated prefix, a tarball) still finds its data
     * next to the binary, so the executable's own location comes first; then the source tree
     * this binary was built from; then the prefix it was configured to install into. */
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            static const char *rel[] = {
                "/../share/llava/models/" DEFAULT_MODEL_NAME, /* PREFIX/bin/llava */
                "/../models/" DEFAULT_MODEL_NAME,             /* build/llava in the source tree */
                "/models/" DEFAULT_MODEL_NAME,                /* next to the binary */
            };
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
                if (try_dir(out, n, exe, rel[i])) return out;
        }
    }
    if (try_dir(out, n, LLAVA_SOURCE_DIR, "/models/" DEFAULT_MODEL_NAME)) return out;
    if (try_dir(out, n, LLAVA_INSTALL_DATADIR, "/models/" DEFAULT_MODEL_NAME)) return out;
    return NULL;
}
