/* pipeline.c — the request life cycle: free → planned → read → zero
 * detection → ordered writes → retired, and the watermark.
 *
 * Ordering: every planned range gets a sequence number (plan order is
 * offset order) and a ticket in a ring of 2 × requests entries.
 *   STRICT     the next sequence number's writes are issued when no other
 *              request is writing, one operation at a time;
 *   PIPELINED  the next sequence number's writes are issued as soon as
 *              its data is ready, however many are in flight;
 *   ANY        a request's writes are issued as soon as its data is ready.
 * Zero ranges of the source become one write_zeroes (MAY_UNMAP) per
 * request, or nothing when the target reads as zeroes; with sparse = 0
 * they are written as data from a zeroed buffer instead (every byte is
 * written, nothing is read).  Skipped ranges (REQ_SKIP, skip_backing)
 * issue no operation at all; they only move the watermark.
 * A request's slot (buffer) is released as soon as its writes complete;
 * its ticket is retired in sequence order, which moves the watermark.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "engine-internal.h"
#include "zero-detect.h"

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Largest read/write length for `img`, a multiple of its block size, or 0
 * for no limit. */
static size_t max_len(const struct image *img)
{
    size_t m = img->max_request;
    uint32_t bs = img->block_size ? img->block_size : 1;
    if (m == 0)
        return 0;
    m -= m % bs;
    return m ? m : bs;
}

struct request_op *copy_request_op_take(struct copy_request *r, uint64_t offset)
{
    assert(r->ops_used < r->job->max_ops);
    struct request_op *op = &r->ops[r->ops_used++];
    op->req = r;
    op->offset = offset;
    op->issued_ns = loop_now_ns();
    op->sample = false;
    op->zeroes = false;
    r->ops_pending++;
    r->job->ops_inflight++;
    return op;
}

static void slot_release(struct copy_job *job, struct copy_request *r)
{
    struct copy_ticket *t = &job->tickets[r->seq % job->nticket];
    if (t->req == r)
        t->req = NULL;
    r->state = REQ_FREE;
    r->next_free = job->free_list;
    job->free_list = r;
    job->free_count++;
    job->pump_again = true;
    copy_job_buffer_trim(job, r);
}

/* Whether an op of `len` bytes on `img` is full-size (its latency says
 * something about the server, not about how small it was). */
static bool full_size(const struct copy_job *job, const struct image *img,
                      uint64_t len)
{
    uint64_t full = job->opts.request_size;
    uint64_t m = img->max_request;
    if (m && m < full)
        full = m;
    return 2 * len >= full;
}

/* Report a completed op's latency to the depth controller. */
static void sample_op(struct copy_job *job, const struct request_op *op,
                      enum depth_side side)
{
    if (op->sample)
        depth_sample(&job->depth, side, loop_now_ns() - op->issued_ns);
}

static struct copy_request *slot_take(struct copy_job *job)
{
    struct copy_request *r = job->free_list;
    job->free_list = r->next_free;
    job->free_count--;
    r->ops_pending = 0;
    r->ops_used = 0;
    r->cursor = 0;
    r->failed = false;
    return r;
}

/* Retire done tickets in order; moves the watermark. */
static void retire(struct copy_job *job, uint64_t bytes)
{
    uint64_t wm = job->prog.watermark;
    while (job->retire_seq < job->plan_seq) {
        struct copy_ticket *t = &job->tickets[job->retire_seq % job->nticket];
        if (!t->done)
            break;
        wm = t->end;
        job->retire_seq++;
    }
    copy_job_add_done(job, bytes, wm);
}

/* The request's target operations all completed. */
static void request_finish(struct copy_request *r)
{
    struct copy_job *job = r->job;
    job->groups_writing--;
    if (!r->failed) {
        job->tickets[r->seq % job->nticket].done = true;
        retire(job, r->length);
        if (r->kind == REQ_DATA)
            copy_job_depth_cycle(job);
    }
    slot_release(job, r);
}

static void write_done(void *opaque, int err);
static void zero_done(void *opaque, int err);

/* Length of a target operation at [offset, offset+len) when it ends at the
 * source's end: padded to the target block size if the target has room
 * (the buffer padding is zero, see start_read). */
static uint64_t target_len(struct copy_job *job, uint64_t offset,
                           uint64_t len)
{
    uint64_t db = job->dst->block_size ? job->dst->block_size : 1;
    if (offset + len == job->size && len % db) {
        uint64_t padded = round_up(len, db);
        if (offset + padded <= job->dst->size)
            return padded;
    }
    return len;
}

static void issue_zeroes(struct copy_request *r, uint64_t offset,
                         uint64_t len)
{
    struct copy_job *job = r->job;
    struct request_op *op = copy_request_op_take(r, offset);
    image_write_zeroes(job->dst, offset, target_len(job, offset, len),
                       IMAGE_ZERO_MAY_UNMAP, zero_done, op);
}

/* Issue the next target operation of `r`, skipping zero pieces the target
 * already has.  Returns false when nothing is left to issue. */
static bool issue_next_piece(struct copy_request *r)
{
    struct copy_job *job = r->job;
    bool skip = job->skip_zeroes;

    while (r->cursor < r->length) {
        if (r->kind == REQ_SKIP) {
            r->cursor = r->length;
            continue;
        }
        if (r->kind == REQ_ZERO || r->read_zeroes) {
            r->cursor = r->length;
            if (skip)
                continue;
            issue_zeroes(r, r->offset, r->length);
            return true;
        }
        size_t maxw = max_len(job->dst);
        struct zero_piece piece;
        if (job->opts.sparse) {
            piece = zero_detect_next(r->buf, r->offset, r->length, r->cursor,
                                     job->opts.sparse, maxw);
        } else {
            piece.offset = r->cursor;
            piece.length = r->length - r->cursor;
            if (maxw && piece.length > maxw)
                piece.length = maxw;
            piece.zero = false;
        }
        r->cursor += piece.length;
        uint64_t off = r->offset + piece.offset;
        if (piece.zero) {
            if (skip)
                continue;
            issue_zeroes(r, off, piece.length);
            return true;
        }
        struct request_op *op = copy_request_op_take(r, off);
        op->sample = full_size(job, job->dst, piece.length);
        image_write(job->dst, r->buf + piece.offset, off,
                    target_len(job, off, piece.length), write_done, op);
        return true;
    }
    return false;
}

/* Start writing `r` (its turn has come). */
static void request_write(struct copy_request *r)
{
    struct copy_job *job = r->job;
    r->state = REQ_WRITING;
    r->cursor = 0;
    r->ops_used = 0;
    job->groups_writing++;
    if (job->opts.order == COPY_ORDER_STRICT)
        issue_next_piece(r);
    else
        while (issue_next_piece(r))
            ;
    if (r->ops_pending == 0)
        request_finish(r);
}

static void target_op_done(struct request_op *op, int err, const char *name)
{
    struct copy_request *r = op->req;
    struct copy_job *job = r->job;
    r->ops_pending--;
    job->ops_inflight--;
    if (err) {
        r->failed = true;
        copy_job_fail(job, name, job->dst, (int64_t)op->offset, err);
    } else if (job->opts.order == COPY_ORDER_STRICT && !job->stopping &&
               !r->failed && issue_next_piece(r)) {
        copy_job_pump(job);
        return;
    }
    if (r->ops_pending == 0) {
        /* Stopping in strict order may leave pieces unwritten. */
        if (r->cursor < r->length)
            r->failed = true;
        request_finish(r);
    }
    copy_job_pump(job);
}

static void write_done(void *opaque, int err)
{
    struct request_op *op = opaque;
    if (!err)
        sample_op(op->req->job, op, DEPTH_WRITE);
    target_op_done(opaque, err, "write");
}

static void zero_done(void *opaque, int err)
{
    target_op_done(opaque, err, "write zeroes");
}

/* Data is ready: in ANY order write at once, else wait for the turn. */
static void request_ready(struct copy_request *r)
{
    r->state = REQ_READY;
    if (r->job->opts.order == COPY_ORDER_ANY && !r->job->stopping &&
        copy_job_rate_admit(r->job, r))
        request_write(r);
}

/* Reads that answered IMAGE_READ_ZEROES left their part of the buffer as
 * it was: a request that read as zeroes entirely is written as a zero
 * range, as zero detection would have found; else those parts are zeroed
 * for it. */
static void settle_zero_reads(struct copy_request *r)
{
    struct copy_job *job = r->job;
    if (r->zero_reads == r->ops_used) {
        r->read_zeroes = true;
        return;
    }
    size_t maxr = max_len(job->src);
    for (unsigned i = 0; i < r->ops_used; i++) {
        const struct request_op *op = &r->ops[i];
        if (!op->zeroes)
            continue;
        uint64_t pos = op->offset - r->offset;
        uint64_t len = r->length - pos;
        if (maxr && len > maxr)
            len = maxr;
        memset(r->buf + pos, 0, len);
    }
}

static void read_done(void *opaque, int err)
{
    struct request_op *op = opaque;
    struct copy_request *r = op->req;
    struct copy_job *job = r->job;
    r->ops_pending--;
    job->ops_inflight--;
    if (err == IMAGE_READ_ZEROES) {
        op->zeroes = true;
        r->zero_reads++;
        err = 0;
    }
    if (err) {
        r->failed = true;
        copy_job_fail(job, "read", job->src, (int64_t)op->offset, err);
    } else {
        sample_op(job, op, DEPTH_READ);
    }
    if (r->ops_pending == 0) {
        if (r->failed || job->stopping) {
            slot_release(job, r);
        } else {
            if (r->zero_reads)
                settle_zero_reads(r);
            request_ready(r);
        }
    }
    copy_job_pump(job);
}

static void start_read(struct copy_request *r)
{
    struct copy_job *job = r->job;
    size_t maxr = max_len(job->src);
    r->state = REQ_READING;
    r->buf_zero = false;
    r->zero_reads = 0;
    r->read_zeroes = false;
    /* Zero the padding a short last write may carry (target_len). */
    uint64_t db = job->dst->block_size ? job->dst->block_size : 1;
    uint64_t padded = round_up(r->length, db);
    if (padded > r->length)
        memset(r->buf + r->length, 0, padded - r->length);
    for (uint64_t pos = 0; pos < r->length;) {
        uint64_t len = r->length - pos;
        if (maxr && len > maxr)
            len = maxr;
        struct request_op *op = copy_request_op_take(r, r->offset + pos);
        op->sample = full_size(job, job->src, len);
        /* With zero detection on, a backend may answer "zeroes" instead
         * of filling the buffer (image_read_or_zeroes). */
        if (job->opts.sparse)
            image_read_or_zeroes(job->src, r->buf + pos, r->offset + pos,
                                 len, read_done, op);
        else
            image_read(job->src, r->buf + pos, r->offset + pos, len,
                       read_done, op);
        pos += len;
    }
}

void pipeline_fill(struct copy_job *job)
{
    while (!job->stopping && job->free_count > 0 &&
           job->nslots - job->free_count < depth_current(&job->depth) &&
           job->plan_seq - job->retire_seq < job->nticket) {
        uint64_t offset, length;
        enum request_kind kind;
        if (planner_next(job, &offset, &length, &kind) != PLAN_RANGE)
            break;
        struct copy_request *r = slot_take(job);
        r->seq = job->plan_seq++;
        r->offset = offset;
        r->length = length;
        r->kind = kind;
        r->read_zeroes = false;
        r->zero_reads = 0;
        job->tickets[r->seq % job->nticket] =
            (struct copy_ticket){ offset + length, r, false };
        bool needs_buf = kind == REQ_DATA ||
                         (kind == REQ_ZERO && job->opts.sparse == 0);
        if (needs_buf && !copy_job_buffer_get(job, r)) {
            /* Dropped as READY while the job drains. */
            r->state = REQ_READY;
            copy_job_fail_msg(job, -ENOMEM,
                              "copy: out of memory for a buffer");
            break;
        }
        if (kind == REQ_DATA) {
            start_read(r);
        } else if (kind == REQ_ZERO && job->opts.sparse == 0) {
            /* Write every byte: zeroes go out as data, nothing to read. */
            if (!r->buf_zero)
                memset(r->buf, 0, job->stride);
            r->buf_zero = true;
            r->kind = REQ_DATA;
            request_ready(r);
        } else {
            request_ready(r);
        }
    }
}

void pipeline_issue_writes(struct copy_job *job)
{
    if (job->opts.order == COPY_ORDER_ANY && job->rate_held &&
        !job->stopping) {
        /* Requests the rate limit held back when they became ready. */
        job->rate_held = false;
        for (unsigned i = 0; i < job->nbuf; i++)
            if (job->reqs[i].state == REQ_READY &&
                copy_job_rate_admit(job, &job->reqs[i]))
                request_write(&job->reqs[i]);
    }
    if (job->opts.order == COPY_ORDER_ANY || job->stopping)
        return;
    while (job->issue_seq < job->plan_seq) {
        struct copy_request *r =
            job->tickets[job->issue_seq % job->nticket].req;
        if (!r || r->state != REQ_READY)
            break;
        if (job->opts.order == COPY_ORDER_STRICT && job->groups_writing)
            break;
        if (!copy_job_rate_admit(job, r))
            break;
        job->issue_seq++;
        request_write(r);
    }
}

void pipeline_drop_unwritten(struct copy_job *job)
{
    for (unsigned i = 0; i < job->nbuf; i++)
        if (job->reqs[i].state == REQ_READY)
            slot_release(job, &job->reqs[i]);
}

bool pipeline_finished(const struct copy_job *job)
{
    return job->plan.next >= job->size && job->retire_seq == job->plan_seq;
}
