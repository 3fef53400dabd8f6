/* image.c — dispatch helpers shared by every backend.  See image.h. */
#include "image.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void image_set_error(struct image *img, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(img->last_error.text, sizeof img->last_error.text, fmt, ap);
    va_end(ap);
}

/* Completions deferred by image_complete_later / image_extents_later. */
struct later {
    struct loop_call call;
    struct image_shell *reserve_of;     /* from this shell's reserve */
    image_io_cb cb;                     /* exactly one of cb, ecb */
    image_extents_cb ecb;
    void *opaque;
    int err;
    size_t n_ext;                       /* ecb: 0 or 1 */
    struct extent ext;
    struct later *next_free;
};

/* Deferred completions kept with every image for when malloc fails. */
#define LATER_RESERVE 8

/* What image_alloc allocates: the image and its reserve. */
struct image_shell {
    struct image img;                   /* first: the shell is the image */
    struct later reserve[LATER_RESERVE];
    struct later *free_reserve;
};

struct image *image_alloc(const struct image_ops *ops, struct loop *loop,
                          const char *name)
{
    struct image_shell *sh = calloc(1, sizeof *sh);
    if (!sh)
        return NULL;
    struct image *img = &sh->img;
    img->name = strdup(name ? name : "");
    if (!img->name) {
        free(sh);
        return NULL;
    }
    img->ops = ops;
    img->loop = loop;
    img->block_size = 1;
    for (size_t i = 0; i < LATER_RESERVE; i++) {
        sh->reserve[i].next_free = sh->free_reserve;
        sh->free_reserve = &sh->reserve[i];
    }
    return img;
}

void image_free_shell(struct image *img)
{
    if (!img)
        return;
    free(img->name);
    free((struct image_shell *)img);
}

static void later_run(void *p)
{
    struct later *l = p;
    struct later copy = *l;
    if (l->reserve_of) {
        l->next_free = l->reserve_of->free_reserve;
        l->reserve_of->free_reserve = l;
    } else {
        free(l);
    }
    if (copy.cb)
        copy.cb(copy.opaque, copy.err);
    else
        copy.ecb(copy.opaque, copy.err, copy.n_ext ? &copy.ext : NULL,
                 copy.n_ext);
}

/* A node for one deferred completion of `img`: from the heap, else from
 * the image's reserve, else from the heap once memory is back (waiting
 * for it on the loop thread: the contract allows no other way out). */
static struct later *later_get(struct image *img)
{
    struct image_shell *sh = (struct image_shell *)img;
    struct later *l = calloc(1, sizeof *l);
    if (l)
        return l;
    if (sh->free_reserve) {
        l = sh->free_reserve;
        sh->free_reserve = l->next_free;
        *l = (struct later){ .reserve_of = sh };
        return l;
    }
    while (!(l = calloc(1, sizeof *l))) {
        struct timespec pause = { 0, 1000000 };
        nanosleep(&pause, NULL);
    }
    return l;
}

static void later_defer(struct image *img, struct later *l)
{
    l->call.fn = later_run;
    l->call.opaque = l;
    loop_defer_call(img->loop, &l->call);
}

void image_complete_later(struct image *img, image_io_cb cb, void *opaque,
                          int err)
{
    struct later *l = later_get(img);
    l->cb = cb;
    l->opaque = opaque;
    l->err = err;
    later_defer(img, l);
}

void image_extents_later(struct image *img, image_extents_cb cb,
                         void *opaque, int err, const struct extent *ext)
{
    struct later *l = later_get(img);
    l->ecb = cb;
    l->opaque = opaque;
    l->err = err;
    if (!err && ext) {
        l->ext = *ext;
        l->n_ext = 1;
    }
    later_defer(img, l);
}

void image_read(struct image *img, void *buf, uint64_t offset, size_t len,
                image_io_cb cb, void *opaque)
{
    img->ops->read(img, buf, offset, len, cb, opaque);
}

void image_read_or_zeroes(struct image *img, void *buf, uint64_t offset,
                          size_t len, image_io_cb cb, void *opaque)
{
    if (img->ops->read_or_zeroes)
        img->ops->read_or_zeroes(img, buf, offset, len, cb, opaque);
    else
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

void image_truncate(struct image *img, uint64_t size, image_io_cb cb,
                    void *opaque)
{
    if (img->ops->truncate) {
        img->ops->truncate(img, size, cb, opaque);
        return;
    }
    image_set_error(img, "%s images cannot change their size",
                    img->ops->name);
    image_complete_later(img, cb, opaque, -ENOTSUP);
}

void image_block_status(struct image *img, uint64_t offset, uint64_t length,
                        image_extents_cb cb, void *opaque)
{
    if (img->ops->block_status) {
        img->ops->block_status(img, offset, length, cb, opaque);
        return;
    }
    uint64_t end = offset + length;
    if (end > img->size)
        end = img->size;
    struct extent all = { offset, end - offset, EXTENT_DATA };
    image_extents_later(img, cb, opaque, 0, &all);
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

int image_move_loop(struct image *img, struct loop *loop)
{
    /* The backends whose state keeps no loop pointer of its own: every
     * poller, timer and deferred call of theirs goes through img->loop.
     * (file: its worker threads post to the loop they were made with;
     * qcow2: its protocol image and compression workers.) */
    static const char *const movable[] = { "nfs", "iscsi", "null", "zero" };
    bool ok = false;
    for (size_t i = 0; i < sizeof movable / sizeof movable[0]; i++)
        ok = ok || strcmp(img->ops->name, movable[i]) == 0;
    if (!ok || img->backing)
        return -ENOTSUP;
    img->loop = loop;
    return 0;
}
