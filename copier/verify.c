/* verify.c — the verify pass: read both images again in request-sized
 * chunks through the job's buffers (pairs: one buffer for the source, one
 * for the target), compare, and remember the lowest differing offset.
 * On a difference no new chunk is issued; chunks in flight still finish
 * (one below may hold an earlier difference), then the pass ends. */
#include <string.h>

#include "engine-internal.h"

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static void compare_pair(struct copy_job *job, struct copy_request *a,
                         struct copy_request *b)
{
    if (!a->failed && !b->failed) {
        if (memcmp(a->buf, b->buf, a->length) == 0) {
            job_add_verified(job, a->length);
        } else {
            size_t i = 0;
            while (a->buf[i] == b->buf[i])
                i++;
            uint64_t at = a->offset + i;
            if (!job->ver.differs || at < job->ver.diff)
                job->ver.diff = at;
            job->ver.differs = true;
        }
    }
    a->state = REQ_FREE;
    b->state = REQ_FREE;
}

static void verify_read_done(void *opaque, int err)
{
    struct request_op *op = opaque;
    struct copy_request *r = op->req;
    struct copy_job *job = r->job;
    bool is_src = r->index % 2 == 0;
    struct copy_request *other = &job->reqs[is_src ? r->index + 1
                                                   : r->index - 1];
    r->ops_pending--;
    job->ops_inflight--;
    if (err) {
        r->failed = true;
        job_fail(job, "read", is_src ? job->src : job->dst,
                 (int64_t)op->offset, err);
    }
    if (r->ops_pending == 0 && other->ops_pending == 0)
        compare_pair(job, is_src ? r : other, is_src ? other : r);
    job_pump(job);
}

static void read_side(struct copy_request *r,
                      struct image *img, uint64_t len)
{
    uint64_t max = img->max_request;
    uint64_t bs = img->block_size ? img->block_size : 1;
    if (max) {
        max -= max % bs;
        if (!max)
            max = bs;
    }
    r->ops_used = 0;
    r->ops_pending = 0;
    r->failed = false;
    r->state = REQ_VERIFYING;
    r->buf_zero = false;
    for (uint64_t pos = 0; pos < len;) {
        uint64_t n = len - pos;
        if (max && n > max)
            n = max;
        struct request_op *op = request_op_take(r, r->offset + pos);
        image_read(img, r->buf + pos, r->offset + pos, n, verify_read_done,
                   op);
        pos += n;
    }
}

void verify_start(struct copy_job *job)
{
    job->ver.next = 0;
    job->ver.differs = false;
    job->ver.pairs = job->nbuf / 2;
}

bool verify_pump(struct copy_job *job)
{
    struct copy_verifier *v = &job->ver;
    bool idle = true;
    for (unsigned i = 0; i < v->pairs; i++) {
        struct copy_request *a = &job->reqs[2 * i];
        struct copy_request *b = &job->reqs[2 * i + 1];
        if (a->state == REQ_FREE && b->state == REQ_FREE &&
            !v->differs && !job->stopping && v->next < job->size) {
            uint64_t len = job->size - v->next;
            if (len > job->opts.request_size)
                len = job->opts.request_size;
            a->offset = b->offset = v->next;
            a->length = b->length = len;
            v->next += len;
            /* The target may need whole blocks past the source's end. */
            uint64_t dlen = round_up(len, job->dst->block_size
                                     ? job->dst->block_size : 1);
            if (a->offset + dlen > job->dst->size)
                dlen = len;
            read_side(a, job->src, len);
            read_side(b, job->dst, dlen);
        }
        if (a->state != REQ_FREE || b->state != REQ_FREE)
            idle = false;
    }
    return idle && (v->differs || v->next >= job->size);
}
