/* qcow2-memproto.c — see qcow2-memproto.h. */
#include "qcow2-memproto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct memproto {
    uint8_t *data;
    size_t len;
    bool growable;
    bool fail_writes;
};

void memproto_fail_writes(struct image *img, bool fail)
{
    ((struct memproto *)img->priv)->fail_writes = fail;
}

static void done_later(struct image *img, image_io_cb cb, void *opaque,
                       int err)
{
    image_complete_later(img, cb, opaque, err);
}

/* Enforce the image.h alignment rule (the last request may end at the
 * image end). */
static bool misaligned(struct image *img, uint64_t off, size_t len)
{
    uint64_t bs = img->block_size;
    return bs > 1 && (off % bs || (len % bs && off + len != img->size));
}

static void mem_read(struct image *img, void *buf, uint64_t off, size_t len,
                     image_io_cb cb, void *opaque)
{
    struct memproto *m = img->priv;
    if (off > m->len || len > m->len - off || misaligned(img, off, len)) {
        done_later(img, cb, opaque, -EINVAL);
        return;
    }
    memcpy(buf, m->data + off, len);
    done_later(img, cb, opaque, 0);
}

static int grow(struct image *img, uint64_t end)
{
    struct memproto *m = img->priv;
    if (end <= m->len)
        return 0;
    if (!m->growable || end > (1ull << 32))
        return -ENOSPC;
    uint8_t *d = realloc(m->data, end);
    if (!d)
        return -ENOMEM;
    memset(d + m->len, 0, end - m->len);
    m->data = d;
    m->len = end;
    img->size = end;
    return 0;
}

static void mem_write(struct image *img, const void *buf, uint64_t off,
                      size_t len, image_io_cb cb, void *opaque)
{
    struct memproto *m = img->priv;
    int r = m->fail_writes ? -EIO :
            misaligned(img, off, len) ? -EINVAL : grow(img, off + len);
    if (!r)
        memcpy(m->data + off, buf, len);
    done_later(img, cb, opaque, r);
}

static void mem_zeroes(struct image *img, uint64_t off, uint64_t len,
                       unsigned flags, image_io_cb cb, void *opaque)
{
    struct memproto *m = img->priv;
    (void)flags;
    int r = grow(img, off + len);
    if (!r)
        memset(m->data + off, 0, len);
    done_later(img, cb, opaque, r);
}

static void mem_flush(struct image *img, image_io_cb cb, void *opaque)
{
    done_later(img, cb, opaque, 0);
}

static int mem_close(struct image *img)
{
    struct memproto *m = img->priv;
    free(m->data);
    free(m);
    image_free_shell(img);
    return 0;
}

static const struct image_ops mem_ops = {
    .name = "mem",
    .read = mem_read,
    .write = mem_write,
    .write_zeroes = mem_zeroes,
    .flush = mem_flush,
    .close = mem_close,
};

struct image *memproto_open(struct loop *loop, const char *name,
                            const void *data, size_t len, bool growable)
{
    struct memproto *m = calloc(1, sizeof *m);
    struct image *img = m ? image_alloc(&mem_ops, loop, name) : NULL;
    if (!img) {
        free(m);
        return NULL;
    }
    m->data = malloc(len ? len : 1);
    if (!m->data) {
        free(m);
        image_free_shell(img);
        return NULL;
    }
    if (len)
        memcpy(m->data, data, len);
    m->len = len;
    m->growable = growable;
    img->priv = m;
    img->size = len;
    img->read_only = !growable;
    return img;
}

const uint8_t *memproto_data(struct image *img, size_t *len)
{
    struct memproto *m = img->priv;
    *len = m->len;
    return m->data;
}
