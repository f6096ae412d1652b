/* Whole-file reads and writes with explicit limits. */
#include "base/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

llava_status llava_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                             llava_error *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return llava_error_set(err, LLAVA_ERR_IO, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        fclose(f);
        return llava_error_set(err, LLAVA_ERR_LIMIT, "%s: %lld bytes, more than the limit of %zu",
                               path, (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (got != n || bad) {
        free(buf);
        return llava_error_set(err, LLAVA_ERR_IO, "%s: read %zu of %zu bytes", path, got, n);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return LLAVA_OK;
}

llava_status llava_write_file(const char *path, const void *data, size_t len, llava_error *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t put = len ? fwrite(data, 1, len, f) : 0;
    int bad = fclose(f) != 0 || put != len;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return llava_error_set(err, LLAVA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return LLAVA_OK;
}

int llava_path_join(char *out, size_t cap, const char *dir, const char *name) {
    int n = (dir && dir[0]) ? snprintf(out, cap, "%s/%s", dir, name) : snprintf(out, cap, "%s", name);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int llava_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
