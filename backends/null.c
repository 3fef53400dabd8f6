/* null.c — the "null:" protocol: writes are discarded, reads return
 * zeroes.  A write-side bound for benchmarks ("how fast can we read?"). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "protocols.h"

/* Every request finishes at once; its callback runs later (image.h). */
static void complete(struct image *img, image_io_cb cb, void *opaque, int err)
{
    image_complete_later(img, cb, opaque, err);
}

static void null_read(struct image *img, void *buf, uint64_t offset,
                      size_t len, image_io_cb cb, void *opaque)
{
    memset(buf, 0, len);
    complete(img, cb, opaque,
             offset + len > img->size ? -EINVAL : 0);
}

static void null_write(struct image *img, const void *buf, uint64_t offset,
                       size_t len, image_io_cb cb, void *opaque)
{
    (void)buf;
    complete(img, cb, opaque, offset + len > img->size ? -ENOSPC : 0);
}

static void null_write_zeroes(struct image *img, uint64_t offset,
                              uint64_t len, unsigned flags, image_io_cb cb,
                              void *opaque)
{
    (void)flags;
    complete(img, cb, opaque, offset + len > img->size ? -ENOSPC : 0);
}

static void null_flush(struct image *img, image_io_cb cb, void *opaque)
{
    complete(img, cb, opaque, 0);
}

static int null_close(struct image *img)
{
    image_free_shell(img);
    return 0;
}

static const struct image_ops null_ops = {
    .name = "null",
    .read = null_read,
    .write = null_write,
    .write_zeroes = null_write_zeroes,
    .flush = null_flush,
    .close = null_close,
};

int null_image_open(struct loop *loop, const char *url,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err)
{
    if (strcmp(url, "null:") != 0) {
        errmsg_set(err, "%s: the null protocol takes no arguments "
                   "(write \"null:\")", url);
        return -EINVAL;
    }
    struct image *img = image_alloc(&null_ops, loop, url);
    if (!img) {
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    img->size = opts->create_size ? opts->create_size : INT64_MAX;
    img->reads_as_zero = true;
    img->can_unmap = true;
    *out = img;
    return 0;
}
