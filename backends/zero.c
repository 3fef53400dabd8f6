/* zero.c — the "zero:SIZE" protocol: a read-only image of SIZE bytes that
 * reads as zeroes.  Block status reports one hole, so a copy from it
 * exercises the target's zeroing path; with --sparse 0 it writes every
 * byte (a read-side-free bound for benchmarks). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "protocols.h"

/* Every request finishes at once; its callback runs later (image.h). */
static void complete(struct image *img, image_io_cb cb, void *opaque, int err)
{
    image_complete_later(img, cb, opaque, err);
}

static void zero_read(struct image *img, void *buf, uint64_t offset,
                      size_t len, image_io_cb cb, void *opaque)
{
    if (offset > img->size || len > img->size - offset) {
        complete(img, cb, opaque, -EINVAL);
        return;
    }
    memset(buf, 0, len);
    complete(img, cb, opaque, 0);
}

static void zero_write(struct image *img, const void *buf, uint64_t offset,
                       size_t len, image_io_cb cb, void *opaque)
{
    (void)buf; (void)offset; (void)len;
    image_set_error(img, "zero: images are read-only");
    complete(img, cb, opaque, -EROFS);
}

static void zero_write_zeroes(struct image *img, uint64_t offset,
                              uint64_t len, unsigned flags, image_io_cb cb,
                              void *opaque)
{
    (void)offset; (void)len; (void)flags;
    image_set_error(img, "zero: images are read-only");
    complete(img, cb, opaque, -EROFS);
}

static void zero_flush(struct image *img, image_io_cb cb, void *opaque)
{
    complete(img, cb, opaque, 0);
}

static void zero_block_status(struct image *img, uint64_t offset,
                              uint64_t length, image_extents_cb cb,
                              void *opaque)
{
    if (offset >= img->size) {
        image_extents_later(img, cb, opaque, -EINVAL, NULL);
        return;
    }
    if (length > img->size - offset)
        length = img->size - offset;
    struct extent all = { offset, length, EXTENT_HOLE };
    image_extents_later(img, cb, opaque, 0, &all);
}

static int zero_close(struct image *img)
{
    image_free_shell(img);
    return 0;
}

static const struct image_ops zero_ops = {
    .name = "zero",
    .read = zero_read,
    .write = zero_write,
    .write_zeroes = zero_write_zeroes,
    .flush = zero_flush,
    .block_status = zero_block_status,
    .close = zero_close,
};

int zero_image_open(struct loop *loop, const char *url,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err)
{
    uint64_t size;
    if (image_parse_size(url + strlen("zero:"), &size) < 0) {
        errmsg_set(err, "%s: expected zero:SIZE, e.g. zero:2G", url);
        return -EINVAL;
    }
    if (opts->write) {
        errmsg_set(err, "%s: zero: images are read-only", url);
        return -EROFS;
    }
    struct image *img = image_alloc(&zero_ops, loop, url);
    if (!img) {
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    img->size = size;
    img->read_only = true;
    img->reads_as_zero = true;
    *out = img;
    return 0;
}
