/* file.c — STUB, being written; replaced before the first commit lands. */
#include "protocols.h"
#include <errno.h>
int file_image_open(struct loop *loop, const char *url,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err)
{
    (void)loop; (void)opts; *out = NULL;
    errmsg_set(err, "%s: file backend not built yet", url);
    return -ENOTSUP;
}
