/* qcow2-refcount.c — host cluster allocation, in-memory refcounts and the
 * metadata commit of images we create (flush and close).
 *
 * Commit, once every write queued before the flush has completed:
 *   1. write back dirty L2 tables;
 *   2. allocate missing refcount blocks (at the end of the file), write
 *      the refcount blocks changed since the last commit, the refcount
 *      table and the L1 table;
 *   3. flush the protocol;
 *   4. rewrite the header without the dirty bit, flush again.
 * See qcow2-writer.h for why the dirty bit is the completion marker. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-writer.h"

static uint64_t refblock_entries(struct qcow2_state *s)
{
    return s->cluster_size * 8 / 16;    /* refcount_order 4 */
}

static int set_err(struct qcow2_state *s, int err, const char *what)
{
    if (!s->w->err) {
        s->w->err = err;
        image_set_error(s->img, "%s", what);
    }
    return err;
}

uint64_t qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint16_t rc)
{
    struct qcow2_writer *w = s->w;
    uint64_t first = w->alloc_end >> s->cluster_bits;
    uint64_t limit = w->reftable_entries * refblock_entries(s);
    if (w->err)
        return 0;
    if (first + n > limit) {
        set_err(s, -ENOSPC, "qcow2 refcount table full (image grew past "
                "what its refcount table can describe)");
        return 0;
    }
    if (first + n > w->rc_cap) {
        uint64_t cap = w->rc_cap ? w->rc_cap : 1024;
        while (cap < first + n)
            cap *= 2;
        uint16_t *v = realloc(w->rc, cap * sizeof *v);
        if (!v) {
            set_err(s, -ENOMEM, "out of memory for refcounts");
            return 0;
        }
        memset(v + w->rc_cap, 0, (cap - w->rc_cap) * sizeof *v);
        w->rc = v;
        w->rc_cap = cap;
    }
    for (uint64_t i = 0; i < n; i++)
        w->rc[first + i] = rc;
    if (first + n > w->rc_len)
        w->rc_len = first + n;
    if (first < w->rc_dirty_from)
        w->rc_dirty_from = first;
    uint64_t off = w->alloc_end;
    w->alloc_end += n * s->cluster_size;
    if (w->alloc_end > s->file_size)
        s->file_size = w->alloc_end;
    return off;
}

int qcow2_rc_adjust(struct qcow2_state *s, uint64_t off, uint64_t len,
                    int delta)
{
    struct qcow2_writer *w = s->w;
    if (!len)
        return 0;
    uint64_t a = off >> s->cluster_bits, b = (off + len - 1) >> s->cluster_bits;
    for (uint64_t c = a; c <= b; c++) {
        int v = c < w->rc_len ? (int)w->rc[c] + delta : -1;
        if (v < 0 || v > 0xffff)
            return set_err(s, -EIO, "refcount out of range while "
                           "writing compressed clusters");
        w->rc[c] = (uint16_t)v;
    }
    if (a < w->rc_dirty_from)
        w->rc_dirty_from = a;
    return 0;
}

struct hdr_write {
    struct qcow2_state *s;
    uint8_t *buf;
    image_io_cb cb;
    void *opaque;
};

static void hdr_written(void *opaque, int err)
{
    struct hdr_write *hw = opaque;
    image_io_cb cb = hw->cb;
    void *op = hw->opaque;
    free(hw->buf);
    free(hw);
    cb(op, err);
}

void qcow2_write_header(struct qcow2_state *s, bool dirty, image_io_cb cb,
                        void *opaque)
{
    struct hdr_write *hw = malloc(sizeof *hw);
    uint8_t *buf = hw ? malloc(s->cluster_size) : NULL;
    if (!buf) {
        free(hw);
        qcow2_complete(s, cb, opaque, -ENOMEM);
        return;
    }
    *hw = (struct hdr_write){ s, buf, cb, opaque };
    struct qcow2_header h = s->h;
    if (dirty)
        h.incompat |= QCOW2_INCOMPAT_DIRTY;
    else
        h.incompat &= ~QCOW2_INCOMPAT_DIRTY;
    if (qcow2_header_encode(&h, buf, s->cluster_size) < 0) {
        hdr_written(hw, -EINVAL);
        return;
    }
    qcow2_proto_write(s, buf, 0, s->cluster_size, hdr_written, hw);
}

struct dirty_write {
    struct qcow2_state *s;
    struct wop *op;     /* the write that caused it waits for it */
};

static void meta_write_done(void *opaque, int err)
{
    struct dirty_write *dw = opaque;
    struct qcow2_state *s = dw->s;
    struct wop *op = dw->op;
    free(dw);
    s->w->meta_inflight--;
    if (err)
        set_err(s, err, "writing the qcow2 header failed");
    if (op)
        qcow2_wop_sub_done(op, err);
    qcow2_commit_maybe_start(s);
}

void qcow2_meta_changed(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    w->meta_changed = true;
    if (w->header_clean_on_disk) {
        struct dirty_write *dw = malloc(sizeof *dw);
        if (!dw) {
            set_err(s, -ENOMEM, "out of memory");
            return;
        }
        dw->s = s;
        dw->op = w->setup_op;
        if (dw->op)
            dw->op->pending++;
        w->header_clean_on_disk = false;
        w->meta_inflight++;
        qcow2_write_header(s, true, meta_write_done, dw);
    }
}

/* ---- commit ------------------------------------------------------------ */

static void commit_step(struct qcow2_state *s);

static void commit_fail(struct qcow2_state *s, int err)
{
    if (!s->w->commit_err)
        s->w->commit_err = err;
}

static void commit_io_done(void *opaque, int err)
{
    struct qcow2_state *s = opaque;
    if (err) {
        commit_fail(s, err);
        if (s->proto->last_error.text[0])
            image_set_error(s->img, "committing qcow2 metadata: %s",
                            s->proto->last_error.text);
    }
    if (--s->w->commit_pending == 0)
        commit_step(s);
}

static void commit_write(struct qcow2_state *s, uint8_t *buf, uint64_t off,
                         size_t len);

struct owned_write {
    struct qcow2_state *s;
    uint8_t *buf;
};

static void owned_done(void *opaque, int err)
{
    struct owned_write *ow = opaque;
    struct qcow2_state *s = ow->s;
    free(ow->buf);
    free(ow);
    commit_io_done(s, err);
}

/* Write `buf` (taken over) at `off`; counts in commit_pending. */
static void commit_write(struct qcow2_state *s, uint8_t *buf, uint64_t off,
                         size_t len)
{
    struct owned_write *ow = malloc(sizeof *ow);
    s->w->commit_pending++;
    if (!ow) {
        free(buf);
        qcow2_complete(s, commit_io_done, s, -ENOMEM);
        return;
    }
    *ow = (struct owned_write){ s, buf };
    qcow2_proto_write(s, buf, off, len, owned_done, ow);
}

static int write_refcounts_and_l1(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    uint64_t cs = s->cluster_size, epb = refblock_entries(s);
    uint64_t nblocks;
    bool grew;
    do {    /* refcount blocks also need refcounts */
        grew = false;
        uint64_t nclusters = w->alloc_end >> s->cluster_bits;
        nblocks = (nclusters + epb - 1) / epb;
        for (uint64_t b = 0; b < nblocks; b++) {
            if (w->refblocks[b])
                continue;
            uint64_t off = qcow2_alloc_clusters(s, 1, 1);
            if (!off)
                return w->err;
            w->refblocks[b] = off;
            grew = true;
        }
    } while (grew);
    uint64_t from = w->rc_dirty_from == UINT64_MAX ? nblocks
                                                    : w->rc_dirty_from / epb;
    w->rc_dirty_from = UINT64_MAX;
    for (uint64_t b = from; b < nblocks; b++) {
        uint8_t *buf = malloc(cs);
        if (!buf)
            return -ENOMEM;
        for (uint64_t k = 0; k < epb; k++) {
            uint64_t c = b * epb + k;
            uint16_t v = c < w->rc_len ? w->rc[c] : 0;
            buf[2 * k] = (uint8_t)(v >> 8);
            buf[2 * k + 1] = (uint8_t)v;
        }
        commit_write(s, buf, w->refblocks[b], cs);
    }
    size_t rt_len = (size_t)s->h.reftable_clusters * cs;
    uint8_t *rt = calloc(1, rt_len);
    if (!rt)
        return -ENOMEM;
    for (uint64_t b = 0; b < nblocks; b++)
        qcow2_put_be64(rt + 8 * b, w->refblocks[b]);
    commit_write(s, rt, s->h.reftable_offset, rt_len);
    if (w->l1_dirty) {
        size_t l1_len = (size_t)(((uint64_t)s->h.l1_size * 8 + cs - 1) /
                                 cs * cs);
        uint8_t *l1 = calloc(1, l1_len ? l1_len : 1);
        if (!l1)
            return -ENOMEM;
        for (uint64_t i = 0; i < s->l1_entries; i++)
            qcow2_put_be64(l1 + 8 * i, s->l1[i]);
        w->l1_dirty = false;
        if (l1_len)
            commit_write(s, l1, s->h.l1_offset, l1_len);
        else
            free(l1);
    }
    return 0;
}

/* After each L2 writeback during a commit: go on once every table is
 * written, or once none is in flight after a failure. */
static void commit_l2_idle(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    if (!w->committing || w->commit_step != 1)
        return;
    if (w->err && s->cache.writebacks == 0) {
        commit_fail(s, w->err);
        s->cache.idle_cb = NULL;
        commit_step(s);
    } else if (qcow2_l2cache_clean(s)) {
        s->cache.idle_cb = NULL;
        commit_step(s);
    }
}

static void commit_finish(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    int err = w->commit_err;
    struct qcow2_flush_waiter *fw = w->flush_waiters;
    w->flush_waiters = NULL;
    w->committing = false;
    if (!err) {
        bool dirty = w->closing && w->writes_since_flush;
        w->header_clean_on_disk = !dirty;
        /* Writes that arrived after the flush are not covered by it. */
        uint64_t seq = 0;
        for (struct qcow2_flush_waiter *f = fw; f; f = f->next)
            seq = f->seq;
        if (!w->closing && seq == w->next_seq)
            w->writes_since_flush = false;
    } else if (!w->err) {
        w->err = err;
    }
    while (fw) {
        struct qcow2_flush_waiter *n = fw->next;
        fw->cb(fw->opaque, err);
        free(fw);
        fw = n;
    }
    qcow2_wqueue_kick(s);
    qcow2_commit_maybe_start(s);
}

/* Steps: 0 start, 1 L2 written, 2 refcounts/L1 written, 3 flushed,
 * 4 header written, 5 flushed → finish. */
static void commit_step(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    int step = w->commit_step++;
    if (w->commit_err && step < 5) {
        w->commit_step = 6;
        commit_finish(s);
        return;
    }
    switch (step) {
    case 0:
        if (!w->meta_changed && !(w->closing && w->writes_since_flush &&
                                  w->header_clean_on_disk)) {
            /* nothing new: just flush */
            w->commit_step = 5;
            w->commit_pending = 1;
            image_flush(s->proto, commit_io_done, s);
            return;
        }
        w->meta_changed = false;
        s->cache.idle_cb = commit_l2_idle;
        {
            int r = qcow2_l2cache_start_flush(s);
            if (r < 0) {
                commit_fail(s, r);
                s->cache.idle_cb = NULL;
                commit_step(s);
                return;
            }
        }
        if (qcow2_l2cache_clean(s)) {
            s->cache.idle_cb = NULL;
            commit_step(s);
        }
        return;
    case 1: {
        w->commit_pending = 1;
        int r = write_refcounts_and_l1(s);
        if (r < 0)
            commit_fail(s, r);
        commit_io_done(s, 0);
        return;
    }
    case 2:
        w->commit_pending = 1;
        image_flush(s->proto, commit_io_done, s);
        return;
    case 3:
        w->commit_pending = 1;
        qcow2_write_header(s, w->closing && w->writes_since_flush,
                           commit_io_done, s);
        return;
    case 4:
        w->commit_pending = 1;
        image_flush(s->proto, commit_io_done, s);
        return;
    default:
        commit_finish(s);
        return;
    }
}

void qcow2_commit_maybe_start(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    if (!w || w->committing || !w->flush_queue)
        return;
    /* Drain every write that arrived before the first queued flush. */
    uint64_t seq = w->flush_queue->seq;
    for (struct wop *op = w->queue_head; op; op = op->next)
        if (op->seq < seq)
            return;
    if (w->active || w->comp_head || w->meta_inflight || w->bg_pending)
        return;
    if (w->staged) {
        int r = qcow2_unstage(s, NULL);     /* calls us again when done */
        if (r < 0 && !w->err)
            w->err = r;
        if (r == 0)
            return;
    }
    w->committing = true;
    w->commit_step = 0;
    w->commit_err = w->err;
    /* Take the flushes whose writes are all done (all queued ones: a flush
     * also covers writes that arrived before it). */
    w->flush_waiters = w->flush_queue;
    w->flush_queue = NULL;
    commit_step(s);
}

static void maybe_start_later(void *opaque)
{
    qcow2_commit_maybe_start(opaque);
}

void qcow2_flush(struct image *img, image_io_cb cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_flush_waiter *fw = calloc(1, sizeof *fw);
    if (!fw || loop_defer(img->loop, maybe_start_later, s) < 0) {
        free(fw);
        qcow2_complete(s, cb, opaque, -ENOMEM);
        return;
    }
    fw->seq = s->w->next_seq;
    fw->cb = cb;
    fw->opaque = opaque;
    struct qcow2_flush_waiter **pp = &s->w->flush_queue;
    while (*pp)
        pp = &(*pp)->next;
    *pp = fw;
}

struct close_wait {
    bool done;
    int err;
};

static void close_flushed(void *opaque, int err)
{
    struct close_wait *cw = opaque;
    cw->err = err;
    cw->done = true;
}

int qcow2_writer_close(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    int r = 0;
    w->closing = true;
    if (w->meta_changed || !w->header_clean_on_disk ||
        w->writes_since_flush) {
        struct close_wait cw = { false, 0 };
        qcow2_flush(s->img, close_flushed, &cw);
        int lr = loop_run_until(s->img->loop, &cw.done);
        r = lr < 0 ? lr : cw.err;
    }
    if (!r && w->err)
        r = w->err;
    qcow2_workers_free(w->workers);
    free(w->staged);
    free(w->rc);
    free(w->refblocks);
    free(w->zeroes);
    free(w);
    s->w = NULL;
    return r;
}
