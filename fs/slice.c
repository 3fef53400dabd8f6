/* slice.c — an image that presents the window [offset, offset+length) of
 * another image, so the copy engine (which copies whole images) can copy
 * a byte range for copy_file_range.  Requests are passed to the base
 * image shifted by `offset`; extents coming back are shifted back.
 * Closing the slice leaves the base open. */
#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct slice {
    struct image *base;
    uint64_t offset;
};

static struct slice *S(struct image *img)
{
    return img->priv;
}

static void slice_read(struct image *img, void *buf, uint64_t offset,
                       size_t len, image_io_cb cb, void *opaque)
{
    if (offset + len > img->size) {
        image_complete_later(img, cb, opaque, -EINVAL);
        return;
    }
    image_read(S(img)->base, buf, S(img)->offset + offset, len, cb, opaque);
}

static void slice_write(struct image *img, const void *buf, uint64_t offset,
                        size_t len, image_io_cb cb, void *opaque)
{
    if (offset + len > img->size) {
        image_complete_later(img, cb, opaque, -ENOSPC);
        return;
    }
    image_write(S(img)->base, buf, S(img)->offset + offset, len, cb, opaque);
}

static void slice_write_zeroes(struct image *img, uint64_t offset,
                               uint64_t len, unsigned flags, image_io_cb cb,
                               void *opaque)
{
    if (offset + len > img->size) {
        image_complete_later(img, cb, opaque, -ENOSPC);
        return;
    }
    image_write_zeroes(S(img)->base, S(img)->offset + offset, len, flags,
                       cb, opaque);
}

static void slice_flush(struct image *img, image_io_cb cb, void *opaque)
{
    image_flush(S(img)->base, cb, opaque);
}

struct bs_ctx {
    uint64_t shift;
    image_extents_cb cb;
    void *opaque;
};

static void slice_extents_done(void *opaque, int err,
                               const struct extent *ext, size_t n)
{
    struct bs_ctx *c = opaque;
    struct extent *v = NULL;
    if (!err && n) {
        v = malloc(n * sizeof *v);
        if (!v)
            err = -ENOMEM;
        for (size_t i = 0; v && i < n; i++) {
            v[i] = ext[i];
            v[i].offset -= c->shift;
        }
    }
    c->cb(c->opaque, err, err ? NULL : v, err ? 0 : n);
    free(v);
    free(c);
}

static void slice_block_status(struct image *img, uint64_t offset,
                               uint64_t length, image_extents_cb cb,
                               void *opaque)
{
    struct bs_ctx *c = malloc(sizeof *c);
    if (!c) {
        cb(opaque, -ENOMEM, NULL, 0);
        return;
    }
    if (offset + length > img->size)
        length = img->size - offset;
    c->shift = S(img)->offset;
    c->cb = cb;
    c->opaque = opaque;
    image_block_status(S(img)->base, S(img)->offset + offset, length,
                       slice_extents_done, c);
}

static int slice_close(struct image *img)
{
    free(img->priv);
    image_free_shell(img);
    return 0;
}

static const struct image_ops slice_ops = {
    .name = "slice",
    .read = slice_read,
    .write = slice_write,
    .write_zeroes = slice_write_zeroes,
    .flush = slice_flush,
    .block_status = slice_block_status,
    .close = slice_close,
};

struct image *slice_image_new(struct image *base, uint64_t offset,
                              uint64_t length, struct errmsg *err)
{
    struct image *img = image_alloc(&slice_ops, base->loop, base->name);
    struct slice *s = malloc(sizeof *s);
    if (!img || !s) {
        free(s);
        if (img)
            image_free_shell(img);
        errmsg_set(err, "%s: out of memory", base->name);
        return NULL;
    }
    s->base = base;
    s->offset = offset;
    img->priv = s;
    img->size = length;
    img->block_size = base->block_size;
    img->max_request = base->max_request;
    img->read_only = base->read_only;
    img->can_unmap = base->can_unmap;
    img->reads_as_zero = false;
    return img;
}
