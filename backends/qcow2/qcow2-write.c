/* qcow2-write.c — write and write_zeroes for images we create.
 *
 * Requests queue in arrival order.  Only the head of the queue is being
 * "set up" (its clusters looked up and allocated); setup is synchronous
 * except for L2 table loads, so host clusters are handed out in the order
 * requests arrive.  A request whose clusters overlap one still in flight
 * waits, which makes read-modify-write of partial clusters safe.
 *
 * Per cluster (piece = the part of the request inside it):
 *   data into an allocated cluster    → written in place (zero flag
 *                                       cleared; a partial write into a
 *                                       zero-flagged cluster rewrites the
 *                                       whole cluster with zeroes around)
 *   data into anything else           → new cluster at the end of the
 *     file; a partial piece is merged into the old contents (zeroes,
 *     backing data, or the inflated compressed cluster) in a bounce
 *     buffer; with compression a whole cluster goes to the deflate
 *     workers (qcow2-wcompress.c)
 *   zeroes over a whole cluster       → zero flag (or nothing when it is
 *                                       unallocated and has no backing)
 *   zeroes over part of a cluster     → like data, with a zero piece
 * Consecutive in-place or new clusters whose host offsets and source
 * bytes are contiguous are written with one protocol write. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-writer.h"

static void op_finish(struct wop *op)
{
    struct qcow2_state *s = op->s;
    struct wop **pp = &s->w->active;
    while (*pp && *pp != op)
        pp = &(*pp)->next;
    if (*pp)
        *pp = op->next;
    image_io_cb cb = op->cb;
    void *opaque = op->opaque;
    int err = op->err;
    free(op);
    cb(opaque, err);
    qcow2_wqueue_kick(s);
    qcow2_commit_maybe_start(s);
    qcow2_read_waiters_retry(s);
}

void qcow2_wop_sub_done(void *opaque, int err)
{
    struct wop *op = opaque;
    if (err && !op->s->w->err)
        op->s->w->err = err;    /* never commit over a failed write */
    if (err && !op->err) {
        op->err = err;
        if (op->s->proto->last_error.text[0])
            image_set_error(op->s->img, "%s", op->s->proto->last_error.text);
    }
    if (--op->pending == 0)
        op_finish(op);
}

static void op_fail(struct wop *op, int err)
{
    if (!op->err)
        op->err = err;
}

static void flush_run(struct wop *op)
{
    if (!op->run_len)
        return;
    op->pending++;
    qcow2_proto_write(op->s, op->run_buf, op->run_host, op->run_len,
                      qcow2_wop_sub_done, op);
    op->run_len = 0;
}

static void add_run(struct wop *op, uint64_t host, const uint8_t *data,
                    uint64_t n)
{
    if (op->run_len && op->run_host + op->run_len == host &&
        op->run_buf + op->run_len == data && op->run_len + n <= (64u << 20)) {
        op->run_len += n;
        return;
    }
    flush_run(op);
    op->run_host = host;
    op->run_buf = data;
    op->run_len = n;
}

/* Read-modify-write of one cluster into a new or existing host cluster. */
struct cow {
    struct wop *op;
    uint8_t *bounce;        /* one cluster */
    uint8_t *comp;          /* compressed bytes, or NULL */
    size_t comp_len;
    uint64_t host;          /* where the merged cluster goes */
    size_t in_cluster, n;
    const uint8_t *data;    /* NULL: zero piece */
};

static void cow_written(void *opaque, int err)
{
    struct cow *c = opaque;
    struct wop *op = c->op;
    free(c->bounce);
    free(c);
    qcow2_wop_sub_done(op, err);
}

static void cow_base_read(void *opaque, int err)
{
    struct cow *c = opaque;
    struct qcow2_state *s = c->op->s;
    if (!err && c->comp) {
        if (qcow2_inflate(c->comp, c->comp_len, c->bounce,
                          s->cluster_size) < 0) {
            image_set_error(s->img, "corrupt compressed cluster while "
                            "rewriting it");
            err = -EIO;
        }
    }
    free(c->comp);
    c->comp = NULL;
    if (err) {
        cow_written(c, err);
        return;
    }
    if (c->data)
        memcpy(c->bounce + c->in_cluster, c->data, c->n);
    else
        memset(c->bounce + c->in_cluster, 0, c->n);
    qcow2_proto_write(s, c->bounce, c->host, s->cluster_size, cow_written,
                      c);
}

enum cow_base { BASE_ZERO, BASE_BACKING, BASE_COMPRESSED };

static void start_cow(struct wop *op, uint64_t cstart, uint64_t host,
                      size_t in_cluster, size_t n, const uint8_t *data,
                      enum cow_base base, uint64_t old_entry)
{
    struct qcow2_state *s = op->s;
    struct cow *c = calloc(1, sizeof *c);
    uint8_t *bounce = c ? malloc(s->cluster_size) : NULL;
    if (!bounce) {
        free(c);
        op_fail(op, -ENOMEM);
        return;
    }
    *c = (struct cow){ op, bounce, NULL, 0, host, in_cluster, n, data };
    op->pending++;
    if (base == BASE_ZERO) {
        memset(bounce, 0, s->cluster_size);
        cow_base_read(c, 0);
        return;
    }
    if (base == BASE_BACKING) {
        qcow2_read_clipped(s, s->backing, bounce, cstart, s->cluster_size,
                           cow_base_read, c);
        return;
    }
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t coff = old_entry & ((1ull << x) - 1);
    uint64_t nsec = (old_entry >> x) & ((1ull << (s->cluster_bits - 8)) - 1);
    c->comp_len = (size_t)((nsec + 1) * 512 - (coff & 511));
    c->comp = malloc(c->comp_len);
    if (!c->comp) {
        free(bounce);
        free(c);
        op->pending--;
        op_fail(op, -ENOMEM);
        return;
    }
    qcow2_proto_read(s, c->comp, coff, c->comp_len, cow_base_read, c);
}

/* Refcount range of a compressed L2 entry. */
static void release_compressed(struct qcow2_state *s, uint64_t e)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t coff = e & ((1ull << x) - 1);
    uint64_t nsec = (e >> x) & ((1ull << (s->cluster_bits - 8)) - 1);
    qcow2_rc_adjust(s, coff, (nsec + 1) * 512 - (coff & 511), -1);
}

/* Handle the piece [pos, pos+n) of one cluster. */
static void do_piece(struct wop *op, struct qcow2_l2_slot *slot,
                     uint64_t pos, uint64_t n)
{
    struct qcow2_state *s = op->s;
    struct qcow2_writer *w = s->w;
    uint64_t cs = s->cluster_size;
    uint64_t cstart = pos & ~(cs - 1);
    uint64_t cend = cstart + cs < s->img->size ? cstart + cs : s->img->size;
    size_t in_cluster = (size_t)(pos - cstart);
    bool full = pos == cstart && pos + n >= cend;
    const uint8_t *data = op->buf ? op->buf + (pos - op->off) : NULL;
    uint64_t i = (pos >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t e = qcow2_l2_entry(s, slot, i);
    bool compressed = (e & QCOW2_OFLAG_COMPRESSED) != 0;
    uint64_t host = compressed ? 0 : e & QCOW2_OFFSET_MASK;
    bool zflag = !compressed && (e & QCOW2_OFLAG_ZERO);

    /* Moving on from the staged cluster: compress it now, unless this
     * request reaches it further on (then it is merged there). */
    if (w->staged && w->staged_guest != cstart &&
        !(w->staged_guest > cstart &&
          (w->staged_guest >> s->cluster_bits) <= op->last_cluster)) {
        int r = qcow2_unstage(s, op);
        if (r < 0) {
            op_fail(op, r);
            return;
        }
    }
    if (w->staged && w->staged_guest == cstart) {   /* being collected */
        if (!full) {
            if (data)
                memcpy(w->staged + in_cluster, data, n);
            else
                memset(w->staged + in_cluster, 0, n);
            return;
        }
        /* Overwritten whole: forget the staged bytes. */
        free(w->staged);
        w->staged = NULL;
        w->staged_slot->pins--;
        if (!data)
            return;     /* still unallocated: reads as zeroes */
    }
    if (data && !full && w->compress && !host && !compressed &&
        !s->backing && !w->staged) {
        w->staged = calloc(1, cs);
        if (!w->staged) {
            op_fail(op, -ENOMEM);
            return;
        }
        memcpy(w->staged + in_cluster, data, n);
        w->staged_guest = cstart;
        w->staged_slot = slot;
        slot->pins++;
        return;
    }

    if (!data) {
        /* write zeroes */
        if (zflag)
            return;
        if (!host && !compressed && !s->backing)
            return;
        if (full) {
            if (compressed)
                release_compressed(s, e);
            qcow2_l2_set(s, slot, i, host ? host | QCOW2_OFLAG_COPIED |
                         QCOW2_OFLAG_ZERO : QCOW2_OFLAG_ZERO);
            qcow2_meta_changed(s);
            return;
        }
        if (host) {
            add_run(op, host + in_cluster, w->zeroes, n);
            return;
        }
    } else if (host) {
        if (zflag) {
            qcow2_l2_set(s, slot, i, host | QCOW2_OFLAG_COPIED);
            qcow2_meta_changed(s);
            if (!full) {
                flush_run(op);
                start_cow(op, cstart, host, in_cluster, (size_t)n, data,
                          BASE_ZERO, 0);
                return;
            }
        }
        add_run(op, host + in_cluster, data, n);
        return;
    } else if (w->compress && full) {
        flush_run(op);
        if (compressed) {
            release_compressed(s, e);
            qcow2_l2_set(s, slot, i, 0);
        }
        int r = qcow2_wcomp_submit(s, op, slot, cstart, data, false);
        if (r < 0)
            op_fail(op, r);
        return;
    }
    /* A new host cluster. */
    uint64_t nh = qcow2_alloc_clusters(s, 1, 1);
    if (!nh) {
        op_fail(op, w->err);
        return;
    }
    qcow2_l2_set(s, slot, i, nh | QCOW2_OFLAG_COPIED);
    qcow2_meta_changed(s);
    if (full && data) {
        add_run(op, nh, data, n);
    } else {
        flush_run(op);
        enum cow_base base = compressed ? BASE_COMPRESSED :
            (!zflag && s->backing) ? BASE_BACKING : BASE_ZERO;
        start_cow(op, cstart, nh, in_cluster, (size_t)n, data, base, e);
    }
    if (compressed)
        release_compressed(s, e);
}

int qcow2_unstage(struct qcow2_state *s, struct wop *op)
{
    struct qcow2_writer *w = s->w;
    if (!w->staged)
        return 0;
    uint8_t *buf = w->staged;
    struct qcow2_l2_slot *slot = w->staged_slot;
    w->staged = NULL;
    slot->pins--;
    return qcow2_wcomp_submit(s, op, slot, w->staged_guest, buf, true);
}

bool qcow2_writer_busy(struct qcow2_state *s, uint64_t off, uint64_t len)
{
    struct qcow2_writer *w = s->w;
    if (!len)
        return false;
    uint64_t a = off >> s->cluster_bits, b = (off + len - 1) >> s->cluster_bits;
    if (w->staged) {
        uint64_t c = w->staged_guest >> s->cluster_bits;
        if (c >= a && c <= b) {
            int r = qcow2_unstage(s, NULL);
            if (r < 0 && !w->err)
                w->err = r;
        }
    }
    struct wop *lists[2] = { w->queue_head, w->active };
    for (int i = 0; i < 2; i++)
        for (struct wop *op = lists[i]; op; op = op->next)
            if (op->first_cluster <= b && a <= op->last_cluster)
                return true;
    for (struct wcomp *wc = w->comp_inflight; wc; wc = wc->inext) {
        uint64_t c = wc->guest >> s->cluster_bits;
        if (c >= a && c <= b)
            return true;
    }
    return false;
}

/* Must `op` wait?  Yes while a write in flight or a compression whose
 * data is not yet written touches one of its clusters (a compressed
 * cluster's L2 entry is set only when its result is committed, and its
 * bytes may be read back only once written). */
static bool overlaps_active(struct qcow2_state *s, struct wop *op)
{
    for (struct wop *a = s->w->active; a; a = a->next)
        if (a->first_cluster <= op->last_cluster &&
            op->first_cluster <= a->last_cluster)
            return true;
    for (struct wcomp *wc = s->w->comp_inflight; wc; wc = wc->inext) {
        uint64_t c = wc->guest >> s->cluster_bits;
        if (c >= op->first_cluster && c <= op->last_cluster)
            return true;
    }
    return false;
}

static void setup_l2_ready(struct qcow2_l2_waiter *wt, int err,
                           struct qcow2_l2_slot *slot);

/* Continue setting up the head op.  Returns true when its setup is
 * finished, false while it waits for an L2 table. */
static bool setup_steps(struct wop *op);

static bool setup(struct wop *op)
{
    op->s->w->setup_op = op;
    bool done = setup_steps(op);
    op->s->w->setup_op = NULL;
    return done;
}

static bool setup_steps(struct wop *op)
{
    struct qcow2_state *s = op->s;
    uint64_t span = s->cluster_size * s->l2_entries;
    uint64_t end = op->off + op->len;
    while (op->cursor < end && !op->err) {
        uint64_t idx = op->cursor / span;
        uint64_t table_end = (idx + 1) * span;
        if (table_end > end)
            table_end = end;
        uint64_t l2off = s->l1[idx] & QCOW2_OFFSET_MASK;
        if (!l2off) {
            if (!op->buf && !s->backing) {
                op->cursor = table_end;     /* already reads as zeroes */
                continue;
            }
            l2off = qcow2_alloc_clusters(s, 1, 1);
            if (!l2off) {
                op_fail(op, s->w->err);
                break;
            }
            s->l1[idx] = l2off | QCOW2_OFLAG_COPIED;
            s->w->l1_dirty = true;
            qcow2_meta_changed(s);
            op->w.is_new = true;
        } else if (op->w.offset != l2off) {
            op->w.is_new = false;
        }
        op->w.offset = l2off;
        op->w.fn = setup_l2_ready;
        struct qcow2_l2_slot *slot;
        int r = qcow2_l2_get(s, &op->w, &slot);
        if (r == 0)
            return false;
        if (r < 0) {
            op_fail(op, r);
            break;
        }
        while (op->cursor < table_end && !op->err) {
            uint64_t cend = (op->cursor | (s->cluster_size - 1)) + 1;
            uint64_t n = (cend < table_end ? cend : table_end) - op->cursor;
            do_piece(op, slot, op->cursor, n);
            op->cursor += n;
        }
        op->w.is_new = false;
    }
    flush_run(op);
    return true;
}

static void setup_done(struct qcow2_state *s, struct wop *op)
{
    s->w->queue_head = op->next;
    if (!s->w->queue_head)
        s->w->queue_tail = NULL;
    op->next = s->w->active;
    s->w->active = op;
    s->w->setup_running = false;
    if (--op->pending == 0)
        op_finish(op);      /* kicks the queue */
    else
        qcow2_wqueue_kick(s);
}

static void setup_l2_ready(struct qcow2_l2_waiter *wt, int err,
                           struct qcow2_l2_slot *slot)
{
    struct wop *op = (struct wop *)((char *)wt - offsetof(struct wop, w));
    (void)slot;
    if (err) {
        image_set_error(op->s->img, "reading L2 table at 0x%" PRIx64
                        " failed", wt->offset);
        op_fail(op, err);
        flush_run(op);
        setup_done(op->s, op);
        return;
    }
    if (setup(op))
        setup_done(op->s, op);
}

void qcow2_wqueue_kick(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    while (w->queue_head && !w->setup_running && !w->committing) {
        struct wop *op = w->queue_head;
        if (overlaps_active(s, op))
            return;
        if (w->flush_queue && op->seq >= w->flush_queue->seq)
            return;     /* arrived after a flush: wait for its commit */
        if (w->err && !op->err)
            op->err = w->err;
        w->setup_running = true;
        if (op->err || setup(op))
            setup_done(s, op);
        else
            return;
    }
}

static void kick_later(void *opaque)
{
    qcow2_wqueue_kick(opaque);
}

static void enqueue(struct image *img, const void *buf, uint64_t offset,
                    uint64_t len, image_io_cb cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    if (offset > img->size || len > img->size - offset) {
        image_set_error(img, "write past the end of the qcow2 image "
                        "(%" PRIu64 " bytes)", img->size);
        qcow2_complete(s, cb, opaque, -ENOSPC);
        return;
    }
    if (len == 0 || s->w->err) {
        qcow2_complete(s, cb, opaque, s->w->err);
        return;
    }
    struct wop *op = calloc(1, sizeof *op);
    if (!op || loop_defer(img->loop, kick_later, s) < 0) {
        free(op);
        qcow2_complete(s, cb, opaque, -ENOMEM);
        return;
    }
    op->s = s;
    op->buf = buf;
    op->off = op->cursor = offset;
    op->len = len;
    op->first_cluster = offset >> s->cluster_bits;
    op->last_cluster = (offset + len - 1) >> s->cluster_bits;
    op->cb = cb;
    op->opaque = opaque;
    op->pending = 1;
    op->seq = s->w->next_seq++;
    s->w->writes_since_flush = true;
    if (s->w->queue_tail)
        s->w->queue_tail->next = op;
    else
        s->w->queue_head = op;
    s->w->queue_tail = op;
}

void qcow2_write(struct image *img, const void *buf, uint64_t offset,
                 size_t len, image_io_cb cb, void *opaque)
{
    enqueue(img, buf, offset, len, cb, opaque);
}

void qcow2_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                        unsigned flags, image_io_cb cb, void *opaque)
{
    (void)flags;    /* zero ranges are always left unallocated or flagged */
    enqueue(img, NULL, offset, len, cb, opaque);
}
