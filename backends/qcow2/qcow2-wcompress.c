/* qcow2-wcompress.c — compressed writes: whole clusters are deflated on
 * worker threads and committed on the loop thread strictly in the order
 * they were submitted, so compressed data is laid out in guest order.
 *
 * Compressed data is packed byte by byte into clusters reserved at the end
 * of the file (refcount 0 when reserved, +1 for every compressed cluster
 * that touches them, as qcow2 requires).  A cluster that does not shrink
 * is stored as a normal cluster. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-writer.h"

static void commit_ready(struct qcow2_state *s);

static void comp_free(struct wcomp *wc)
{
    struct qcow2_writer *w = wc->s->w;
    if (wc->iprev)
        wc->iprev->inext = wc->inext;
    else if (w->comp_inflight == wc)
        w->comp_inflight = wc->inext;
    if (wc->inext)
        wc->inext->iprev = wc->iprev;
    if (wc->owns_in)
        free((void *)wc->job.in);
    free(wc->job.out);
    free(wc);
}

static void comp_written(void *opaque, int err)
{
    struct wcomp *wc = opaque;
    struct wop *op = wc->op;
    struct qcow2_state *s = wc->s;
    comp_free(wc);
    if (op) {
        qcow2_wop_sub_done(op, err);
        return;
    }
    /* A staged cluster submitted by a commit: no request waits for it. */
    if (err && !s->w->err)
        s->w->err = err;
    s->w->bg_pending--;
    qcow2_wqueue_kick(s);
    qcow2_commit_maybe_start(s);
    qcow2_read_waiters_retry(s);
}

static void comp_done(struct qcow2_cjob *job)
{
    struct wcomp *wc = job->opaque;
    wc->done = true;
    commit_ready(wc->s);
}

/* Reserve `len` bytes for compressed data; returns the offset or 0. */
static uint64_t place(struct qcow2_state *s, uint64_t len)
{
    struct qcow2_writer *w = s->w;
    uint64_t cs = s->cluster_size;
    uint64_t avail = w->comp_end - w->comp_pos;
    if (len > avail) {
        if (avail && w->comp_end == w->alloc_end) {
            uint64_t need = (len - avail + cs - 1) / cs;
            if (!qcow2_alloc_clusters(s, need, 0))
                return 0;
            w->comp_end += need * cs;
        } else {
            uint64_t need = (len + cs - 1) / cs;
            uint64_t p = qcow2_alloc_clusters(s, need, 0);
            if (!p)
                return 0;
            w->comp_pos = p;
            w->comp_end = p + need * cs;
        }
    }
    uint64_t pos = w->comp_pos;
    w->comp_pos += len;
    return pos;
}

static void commit_one(struct qcow2_state *s, struct wcomp *wc)
{
    struct qcow2_writer *w = s->w;
    struct wop *op = wc->op;
    uint64_t cs = s->cluster_size;
    wc->slot->pins--;
    int err = op && op->err ? op->err : w->err;
    if (err) {
        comp_written(wc, err);
        return;
    }
    if (wc->job.out_len == 0) {
        uint64_t nh = qcow2_alloc_clusters(s, 1, 1);
        if (!nh) {
            comp_written(wc, w->err);
            return;
        }
        qcow2_l2_set(s, wc->slot, wc->l2_index, nh | QCOW2_OFLAG_COPIED);
        qcow2_meta_changed(s);
        qcow2_proto_write(s, wc->job.in, nh, cs, comp_written, wc);
        return;
    }
    uint64_t len = wc->job.out_len;
    uint64_t pos = place(s, len);
    if (!pos || qcow2_rc_adjust(s, pos, len, +1) < 0) {
        comp_written(wc, w->err ? w->err : -ENOSPC);
        return;
    }
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t extra = ((pos + len - 1) >> 9) - (pos >> 9);
    qcow2_l2_set(s, wc->slot, wc->l2_index,
                 QCOW2_OFLAG_COMPRESSED | (extra << x) | pos);
    qcow2_meta_changed(s);
    qcow2_proto_write(s, wc->job.out, pos, len, comp_written, wc);
}

static void commit_ready(struct qcow2_state *s)
{
    struct qcow2_writer *w = s->w;
    while (w->comp_head && w->comp_head->done) {
        struct wcomp *wc = w->comp_head;
        w->comp_head = wc->next;
        if (!w->comp_head)
            w->comp_tail = NULL;
        commit_one(s, wc);
    }
}

int qcow2_wcomp_submit(struct qcow2_state *s, struct wop *op,
                       struct qcow2_l2_slot *slot, uint64_t guest,
                       const uint8_t *in, bool owns_in)
{
    struct qcow2_writer *w = s->w;
    uint64_t cs = s->cluster_size;
    struct wcomp *wc = calloc(1, sizeof *wc);
    if (!wc) {
        if (owns_in)
            free((void *)in);
        return -ENOMEM;
    }
    wc->s = s;
    wc->op = op;
    wc->slot = slot;
    wc->guest = guest;
    wc->l2_index = (guest >> s->cluster_bits) & (s->l2_entries - 1);
    wc->owns_in = owns_in;
    if (!owns_in && guest + cs > s->img->size) {
        /* The last cluster of the image: compress a zero-padded copy. */
        uint8_t *copy = calloc(1, cs);
        if (!copy) {
            free(wc);
            return -ENOMEM;
        }
        memcpy(copy, in, s->img->size - guest);
        in = copy;
        wc->owns_in = true;
    }
    wc->job.in = in;
    wc->job.in_len = cs;
    wc->job.out_cap = cs - 1;
    wc->job.out = malloc(cs);
    wc->job.done = comp_done;
    wc->job.opaque = wc;
    wc->job.loop = s->img->loop;
    if (!wc->job.out) {
        comp_free(wc);
        return -ENOMEM;
    }
    slot->pins++;
    wc->inext = w->comp_inflight;
    if (w->comp_inflight)
        w->comp_inflight->iprev = wc;
    w->comp_inflight = wc;
    if (op)
        op->pending++;
    else
        w->bg_pending++;
    if (w->comp_tail)
        w->comp_tail->next = wc;
    else
        w->comp_head = wc;
    w->comp_tail = wc;
    return qcow2_workers_submit(w->workers, &wc->job);
}
