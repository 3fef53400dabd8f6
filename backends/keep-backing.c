/* keep-backing.c — the backing name of a keep-backing target (see
 * keep-backing.h). */
#include "keep-backing.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image-open.h"
#include "qcow2.h"

/* True if `a` and `b` (resolved backing names) reach the same image:
 * local paths the same file (stat), URLs the same string. */
static bool same_backing(const char *a, const char *b)
{
    if (strstr(a, "://") || strstr(b, "://"))
        return strcmp(a, b) == 0;
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev &&
           x.st_ino == y.st_ino;
}

int keep_backing_name(const char *source, const char *target,
                      struct image *src, char **name, const char **format,
                      struct errmsg *err)
{
    *name = NULL;
    *format = NULL;
    const char *stored = qcow2_backing_name(src);
    if (!stored) {
        errmsg_set(err, "%s %s", source,
                   strcmp(src->ops->name, "qcow2") == 0
                       ? "has no backing file (nothing to keep)"
                       : "is not a qcow2 image");
        return -EINVAL;
    }
    const char *fmt = qcow2_backing_format(src);
    *format = fmt && fmt[0] ? fmt : NULL;
    char *from_src = image_resolve_relative(source, stored);
    char *from_dst = image_resolve_relative(target, stored);
    if (!from_src || !from_dst) {
        free(from_src);
        free(from_dst);
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    if (same_backing(from_src, target)) {
        errmsg_set(err, "target %s is the source's backing file", target);
        free(from_src);
        free(from_dst);
        return -EINVAL;
    }
    bool relative = stored[0] != '/' && !strstr(stored, "://");
    if (relative && same_backing(from_src, from_dst)) {
        free(from_src);
        free(from_dst);
        *name = strdup(stored);
    } else {
        free(from_dst);
        if (!strstr(from_src, "://") && from_src[0] != '/') {
            char *abs = realpath(from_src, NULL);
            if (!abs) {
                errmsg_set(err, "backing file %s of %s: %s", from_src,
                           source, strerror(errno));
                free(from_src);
                return -ENOENT;
            }
            free(from_src);
            from_src = abs;
        }
        *name = from_src;
    }
    if (!*name) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    return 0;
}
