/* qcow2-proto.c — async I/O on the protocol image below a qcow2 layer:
 * reads past the end of the file return zeroes (a file may end inside its
 * last cluster), and unaligned reads on block-granular protocols go
 * through an aligned bounce buffer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-internal.h"

struct proto_read {
    uint8_t *dst;           /* caller buffer for the clipped part */
    uint8_t *bounce;        /* aligned buffer, or NULL */
    size_t skip;            /* bytes of bounce before dst's data */
    size_t len;             /* bytes to copy from bounce */
    image_io_cb cb;
    void *opaque;
};

void qcow2_complete(struct qcow2_state *s, image_io_cb cb, void *opaque,
                    int err)
{
    image_complete_later(s->img, cb, opaque, err);
}

static void proto_read_done(void *opaque, int err)
{
    struct proto_read *pr = opaque;
    if (pr->bounce) {
        if (!err)
            memcpy(pr->dst, pr->bounce + pr->skip, pr->len);
        free(pr->bounce);
    }
    image_io_cb cb = pr->cb;
    void *op = pr->opaque;
    free(pr);
    cb(op, err);
}

void qcow2_proto_read(struct qcow2_state *s, void *buf, uint64_t off,
                      size_t len, image_io_cb cb, void *opaque)
{
    qcow2_read_clipped(s, s->proto, buf, off, len, cb, opaque);
}

void qcow2_read_clipped(struct qcow2_state *s, struct image *p, void *buf,
                        uint64_t off, size_t len, image_io_cb cb,
                        void *opaque)
{
    uint8_t *dst = buf;
    size_t have = 0;
    if (off < p->size)
        have = p->size - off < len ? (size_t)(p->size - off) : len;
    if (have < len)
        memset(dst + have, 0, len - have);
    if (have == 0) {
        qcow2_complete(s, cb, opaque, 0);
        return;
    }
    uint64_t bs = p->block_size ? p->block_size : 1;
    uint64_t a_start = off / bs * bs;
    uint64_t a_end = (off + have + bs - 1) / bs * bs;
    if (a_end > p->size)
        a_end = p->size;    /* the last request may end at image->size */
    if (a_start == off && a_end == off + have) {
        image_read(p, dst, off, have, cb, opaque);
        return;
    }
    struct proto_read *pr = calloc(1, sizeof *pr);
    uint8_t *bounce = NULL;
    size_t blen = (size_t)(a_end - a_start);
    if (pr)
        bounce = aligned_alloc(4096, (blen + 4095) / 4096 * 4096);
    if (!pr || !bounce) {
        free(pr);
        qcow2_complete(s, cb, opaque, -ENOMEM);
        return;
    }
    *pr = (struct proto_read){ dst, bounce, (size_t)(off - a_start), have,
                               cb, opaque };
    image_read(p, bounce, a_start, blen, proto_read_done, pr);
}

void qcow2_proto_write(struct qcow2_state *s, const void *buf, uint64_t off,
                       size_t len, image_io_cb cb, void *opaque)
{
    image_write(s->proto, buf, off, len, cb, opaque);
}
