/* image.c — dispatch helpers shared by every backend.  See image.h. */
#include "image.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void image_set_error(struct image *img, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(img->last_error.text, sizeof img->last_error.text, fmt, ap);
    va_end(ap);
}

struct image *image_alloc(const struct image_ops *ops, struct loop *loop,
                          const char *name)
{
    struct image *img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    img->name = strdup(name ? name : "");
    if (!img->name) {
        free(img);
        return NULL;
    }
    img->ops = ops;
    img->loop = loop;
    img->block_size = 1;
    return img;
}

void image_free_shell(struct image *img)
{
    if (!img)
        return;
    free(img->name);
    free(img);
}

struct later {
    image_io_cb cb;
    void *opaque;
    int err;
};

static void later_run(void *p)
{
    struct later *l = p;
    image_io_cb cb = l->cb;
    void *opaque = l->opaque;
    int err = l->err;
    free(l);
    cb(opaque, err);
}

int image_complete_later(struct image *img, image_io_cb cb, void *opaque,
                         int err)
{
    struct later *l = malloc(sizeof *l);
    if (!l)
        return -ENOMEM;
    *l = (struct later){ cb, opaque, err };
    if (loop_defer(img->loop, later_run, l) < 0) {
        free(l);
        return -ENOMEM;
    }
    return 0;
}

void image_read(struct image *img, void *buf, uint64_t offset, size_t len,
                image_io_cb cb, void *opaque)
{
    img->ops->read(img, buf, offset, len, cb, opaque);
}

void image_write(struct image *img, const void *buf, uint64_t offset,
                 size_t len, image_io_cb cb, void *opaque)
{
    img->ops->write(img, buf, offset, len, cb, opaque);
}

void image_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                        unsigned flags, image_io_cb cb, void *opaque)
{
    img->ops->write_zeroes(img, offset, len, flags, cb, opaque);
}

void image_flush(struct image *img, image_io_cb cb, void *opaque)
{
    img->ops->flush(img, cb, opaque);
}

struct all_data {
    image_extents_cb cb;
    void *opaque;
    struct extent ext;
};

static void all_data_run(void *p)
{
    struct all_data *a = p;
    struct all_data copy = *a;
    free(a);
    copy.cb(copy.opaque, 0, &copy.ext, 1);
}

void image_block_status(struct image *img, uint64_t offset, uint64_t length,
                        image_extents_cb cb, void *opaque)
{
    if (img->ops->block_status) {
        img->ops->block_status(img, offset, length, cb, opaque);
        return;
    }
    struct all_data *a = malloc(sizeof *a);
    if (!a || loop_defer(img->loop, all_data_run, a) < 0) {
        /* Out of memory: nothing else can be scheduled either; report the
         * failure directly (documented exception is not worth having). */
        free(a);
        cb(opaque, -ENOMEM, NULL, 0);
        return;
    }
    uint64_t end = offset + length;
    if (end > img->size)
        end = img->size;
    *a = (struct all_data){ cb, opaque,
                            { offset, end - offset, EXTENT_DATA } };
}

int image_close(struct image *img)
{
    if (!img)
        return 0;
    return img->ops->close(img);
}

struct sync_wait {
    bool done;
    int err;
};

static void sync_cb(void *opaque, int err)
{
    struct sync_wait *w = opaque;
    w->err = err;
    w->done = true;
}

static int sync_finish(struct image *img, struct sync_wait *w)
{
    int r = loop_run_until(img->loop, &w->done);
    return r < 0 ? r : w->err;
}

int image_read_sync(struct image *img, void *buf, uint64_t offset, size_t len)
{
    struct sync_wait w = { false, 0 };
    image_read(img, buf, offset, len, sync_cb, &w);
    return sync_finish(img, &w);
}

int image_write_sync(struct image *img, const void *buf, uint64_t offset,
                     size_t len)
{
    struct sync_wait w = { false, 0 };
    image_write(img, buf, offset, len, sync_cb, &w);
    return sync_finish(img, &w);
}

int image_flush_sync(struct image *img)
{
    struct sync_wait w = { false, 0 };
    image_flush(img, sync_cb, &w);
    return sync_finish(img, &w);
}
