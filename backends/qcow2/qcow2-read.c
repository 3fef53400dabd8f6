/* qcow2-read.c — the read path.
 *
 * A read walks its range one L2 table at a time.  Within a table it turns
 * consecutive clusters (or subclusters) of the same kind into one run:
 * data with contiguous host offsets → one protocol read; unallocated →
 * one backing read (zeroes past the backing's end, or without backing);
 * zero → memset; compressed → read the compressed bytes, inflate the
 * cluster, copy the slice (the last inflated cluster is kept, so a cluster
 * read in several pieces is inflated once).  The read completes when the
 * walk has reached the end and every sub-read has finished. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-writer.h"

struct rd {
    struct qcow2_state *s;
    uint8_t *buf;
    uint64_t start, end, cursor;
    int pending;            /* sub-reads in flight + 1 while walking */
    int err;
    image_io_cb cb;
    void *opaque;
    struct qcow2_l2_waiter w;
    struct zrun *zrun;      /* compressed pieces being gathered */
    struct rd *next_waiting;    /* images being written: waiting reads */
    /* the run being accumulated */
    enum qcow2_kind run_kind;
    uint64_t run_guest, run_host, run_len;
};

static void walk(struct rd *r);

static void finish_if_done(struct rd *r)
{
    if (r->pending > 0)
        return;
    image_io_cb cb = r->cb;
    void *op = r->opaque;
    int err = r->err;
    free(r);
    cb(op, err);
}

static void fail(struct rd *r, int err)
{
    if (!r->err)
        r->err = err;
}

static void sub_done(void *opaque, int err)
{
    struct rd *r = opaque;
    if (err) {
        struct image *p = r->s->proto;
        if (p->last_error.text[0] && !r->s->img->last_error.text[0])
            image_set_error(r->s->img, "%s", p->last_error.text);
        fail(r, err);
    }
    r->pending--;
    finish_if_done(r);
}

/* Compressed clusters are usually packed one after the other: pieces
 * whose compressed bytes are adjacent (gaps up to ZRUN_GAP) are fetched
 * with one protocol read of at most ZRUN_MAX bytes, then inflated one by
 * one. */
#define ZRUN_GAP 4096u
#define ZRUN_MAX (4u << 20)
#define ZRUN_PIECES 256u

struct zpiece {
    uint64_t comp_offset;
    size_t comp_len;
    uint8_t *dst;
    size_t in_cluster, len;
};

struct zrun {
    struct rd *r;
    uint8_t *comp;
    uint64_t start, end;
    unsigned n;
    struct zpiece p[ZRUN_PIECES];
};

static void zrun_done(void *opaque, int err)
{
    struct zrun *z = opaque;
    struct rd *r = z->r;
    struct qcow2_state *s = r->s;
    for (unsigned i = 0; i < z->n && !err; i++) {
        struct zpiece *p = &z->p[i];
        const uint8_t *in = z->comp + (p->comp_offset - z->start);
        if (qcow2_inflate(in, p->comp_len, s->zbuf, s->cluster_size) < 0) {
            s->zbuf_offset = UINT64_MAX;
            image_set_error(s->img, "corrupt compressed cluster at host "
                            "offset 0x%" PRIx64, p->comp_offset);
            err = -EIO;
            break;
        }
        s->zbuf_offset = p->comp_offset;
        memcpy(p->dst, s->zbuf + p->in_cluster, p->len);
    }
    free(z->comp);
    free(z);
    sub_done(r, err);
}

static void zrun_flush(struct rd *r)
{
    struct zrun *z = r->zrun;
    if (!z)
        return;
    r->zrun = NULL;
    if (r->err) {
        free(z);
        return;
    }
    size_t len = (size_t)(z->end - z->start);
    z->comp = malloc(len);
    if (!z->comp) {
        free(z);
        fail(r, -ENOMEM);
        return;
    }
    r->pending++;
    qcow2_proto_read(r->s, z->comp, z->start, len, zrun_done, z);
}

static void read_compressed(struct rd *r, const struct qcow2_mapping *m,
                            uint64_t guest, uint64_t len)
{
    struct qcow2_state *s = r->s;
    uint8_t *dst = r->buf + (guest - r->start);
    size_t in_cluster = (size_t)(guest & (s->cluster_size - 1));
    if (s->zbuf_offset == m->comp_offset) {
        memcpy(dst, s->zbuf + in_cluster, len);
        return;
    }
    uint64_t cend = m->comp_offset + m->comp_len;
    struct zrun *z = r->zrun;
    if (z && (z->n == ZRUN_PIECES || m->comp_offset < z->start ||
              m->comp_offset > z->end + ZRUN_GAP ||
              (cend > z->end ? cend : z->end) - z->start > ZRUN_MAX)) {
        zrun_flush(r);
        z = NULL;
    }
    if (!z) {
        z = calloc(1, sizeof *z);
        if (!z) {
            fail(r, -ENOMEM);
            return;
        }
        z->r = r;
        z->start = m->comp_offset;
        z->end = cend;
        r->zrun = z;
    }
    if (cend > z->end)
        z->end = cend;
    z->p[z->n++] = (struct zpiece){ m->comp_offset, m->comp_len, dst,
                                    in_cluster, len };
}

/* Issue the accumulated run. */
static void flush_run(struct rd *r)
{
    struct qcow2_state *s = r->s;
    if (!r->run_len)
        return;
    uint8_t *dst = r->buf + (r->run_guest - r->start);
    size_t len = (size_t)r->run_len;
    r->run_len = 0;
    if (r->err)
        return;
    switch (r->run_kind) {
    case QK_ZERO:
        memset(dst, 0, len);
        break;
    case QK_DATA:
        r->pending++;
        qcow2_proto_read(s, dst, r->run_host, len, sub_done, r);
        break;
    case QK_UNALLOC:
        if (!s->backing) {
            memset(dst, 0, len);
        } else {
            r->pending++;
            qcow2_read_clipped(s, s->backing, dst, r->run_guest, len,
                               sub_done, r);
        }
        break;
    case QK_COMPRESSED:
        break;  /* never accumulated */
    }
}

static void add_piece(struct rd *r, const struct qcow2_mapping *m,
                      uint64_t guest, uint64_t len)
{
    if (m->kind == QK_COMPRESSED) {
        if (!r->err)
            read_compressed(r, m, guest, len);
        return;
    }
    if (r->run_len && r->run_kind == m->kind &&
        r->run_guest + r->run_len == guest &&
        (m->kind != QK_DATA || r->run_host + r->run_len == m->host_offset) &&
        r->run_len + len <= (64u << 20)) {
        r->run_len += len;
        return;
    }
    flush_run(r);
    r->run_kind = m->kind;
    r->run_guest = guest;
    r->run_host = m->host_offset;
    r->run_len = len;
}

static void l2_ready(struct qcow2_l2_waiter *w, int err,
                     struct qcow2_l2_slot *slot);

/* Walk from r->cursor until the end or until an L2 table must be loaded. */
static void walk(struct rd *r)
{
    struct qcow2_state *s = r->s;
    uint64_t span = s->cluster_size * s->l2_entries;
    while (r->cursor < r->end && !r->err) {
        uint64_t l2off;
        int e = qcow2_l1_lookup(s, r->cursor, &l2off);
        if (e < 0) {
            fail(r, e);
            break;
        }
        struct qcow2_l2_slot *slot = NULL;
        if (l2off) {
            r->w.fn = l2_ready;
            r->w.offset = l2off;
            r->w.is_new = false;
            e = qcow2_l2_get(s, &r->w, &slot);
            if (e == 0) {
                flush_run(r);
                zrun_flush(r);
                return;     /* l2_ready resumes the walk */
            }
            if (e < 0) {
                fail(r, e);
                break;
            }
        }
        uint64_t table_end = (r->cursor / span + 1) * span;
        if (table_end > r->end || table_end == 0)
            table_end = r->end;
        while (r->cursor < table_end) {
            struct qcow2_mapping m;
            e = qcow2_map(s, slot, r->cursor, &m);
            if (e < 0) {
                fail(r, e);
                break;
            }
            uint64_t len = m.length;
            if (len > table_end - r->cursor)
                len = table_end - r->cursor;
            add_piece(r, &m, r->cursor, len);
            r->cursor += len;
        }
    }
    flush_run(r);
    zrun_flush(r);
    r->pending--;
    finish_if_done(r);
}

static void l2_ready(struct qcow2_l2_waiter *w, int err,
                     struct qcow2_l2_slot *slot)
{
    struct rd *r = (struct rd *)((char *)w - offsetof(struct rd, w));
    (void)slot;
    if (err) {
        image_set_error(r->s->img, "reading L2 table at 0x%" PRIx64
                        " failed", w->offset);
        fail(r, err);
        flush_run(r);
        zrun_flush(r);
        r->pending--;
        finish_if_done(r);
        return;
    }
    walk(r);    /* the table is now cached: the walk finds it */
}

/* On an image being written, a read waits until no write to its
 * clusters is pending (L2 entries change before the data lands). */
static void start_walk(void *opaque)
{
    struct rd *r = opaque;
    struct qcow2_state *s = r->s;
    if (s->w && qcow2_writer_busy(s, r->start, r->end - r->start)) {
        r->next_waiting = s->w->read_waiters;
        s->w->read_waiters = r;
        return;
    }
    walk(r);
}

void qcow2_read_waiters_retry(struct qcow2_state *s)
{
    struct rd *list = s->w->read_waiters;
    s->w->read_waiters = NULL;
    while (list) {
        struct rd *r = list;
        list = r->next_waiting;
        start_walk(r);
    }
}

void qcow2_read(struct image *img, void *buf, uint64_t offset, size_t len,
                image_io_cb cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    if (offset > img->size || len > img->size - offset) {
        qcow2_complete(s, cb, opaque, -EINVAL);
        return;
    }
    struct rd *r = calloc(1, sizeof *r);
    if (!r) {
        qcow2_complete(s, cb, opaque, -ENOMEM);
        return;
    }
    r->s = s;
    r->buf = buf;
    r->start = r->cursor = offset;
    r->end = offset + len;
    r->pending = 1;
    r->cb = cb;
    r->opaque = opaque;
    /* Walk on the next iteration so that no completion can run inside
     * this call, even when everything is cached. */
    if (loop_defer(img->loop, start_walk, r) < 0) {
        free(r);
        qcow2_complete(s, cb, opaque, -ENOMEM);
    }
}
