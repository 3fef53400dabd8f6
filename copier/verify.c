/* verify.c — the verify pass: compare both images after the copy.
 *
 * Ranges that BOTH images report through image_block_status as reading as
 * zeroes (EXTENT_HOLE or EXTENT_ZERO on each side) are counted as verified
 * without reading either side.  EXTENT_BACKING counts as data: it says
 * nothing about what the full chain reads there.  Everything else is read
 * again in request-sized chunks through the job's buffers (pairs: one
 * buffer for the source, one for the target) and compared; the lowest
 * differing offset is remembered.  A chunk ends early where a both-zero
 * range starts (rounded up to the block alignment of both images, the lcm
 * of their block sizes), and a skip ends at the range's end rounded down
 * (or at the source's end), so the verify position stays aligned; a
 * both-zero range shorter than one aligned block is read.  On a
 * difference no new chunk is issued; chunks in flight still finish (one
 * below may hold an earlier difference), then the pass ends.
 *
 * Block status, per image: the verifier keeps the contiguous prefix (at
 * most VERIFY_CACHE_EXTENTS extents) of the image's latest answer, asked
 * from the verify position to the source's end, and asks again only when
 * the position reaches the end of what that answer covers.  A chunk that
 * would reach past one side's answer stops there (rounded up to the
 * alignment) unless the other side holds data there, so short answers cost
 * shorter chunks, not reads of ranges both sides could skip.  Memory does
 * not depend on the image size.
 *
 * A block-status error fails the job: "verify: block status on IMAGE at
 * offset N: ..." (like read errors; no silent fallback to reading).
 */
#include <string.h>

#include "engine-internal.h"

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* ---- block status, per side -------------------------------------------- */

static bool reads_as_zero(enum extent_type t)
{
    return t == EXTENT_HOLE || t == EXTENT_ZERO;
}

static bool side_covers(const struct verify_side *s, uint64_t at)
{
    return at >= s->start && at < s->end;
}

/* Whether offset `at` (which the side's answer covers) reads as zeroes;
 * `*run_end` gets the end of the run of extents with the same answer,
 * within the cached answer. */
static bool side_zero_run(const struct verify_side *s, uint64_t at,
                          uint64_t *run_end)
{
    size_t i = 0;
    while (i + 1 < s->count &&
           s->cache[i].offset + s->cache[i].length <= at)
        i++;
    bool zero = reads_as_zero(s->cache[i].type);
    uint64_t end = s->cache[i].offset + s->cache[i].length;
    for (i++; i < s->count && reads_as_zero(s->cache[i].type) == zero; i++)
        end = s->cache[i].offset + s->cache[i].length;
    *run_end = end;
    return zero;
}

static void status_done(void *opaque, int err, const struct extent *ext,
                        size_t n)
{
    struct verify_side *s = opaque;
    struct copy_job *job = s->job;
    uint64_t asked = s->start;

    s->querying = false;
    job->ops_inflight--;
    s->count = 0;
    s->end = asked;
    if (err) {
        copy_job_fail(job, "verify: block status", s->img, (int64_t)asked, err);
        copy_job_pump(job);
        return;
    }
    /* The prefix is clipped to the source's end (the target may be
     * larger). */
    s->count = copy_job_keep_extents(job, "verify: block status", s->img, asked,
                                     ext, n, s->cache, VERIFY_CACHE_EXTENTS);
    if (s->count) {
        const struct extent *last = &s->cache[s->count - 1];
        s->end = last->offset + last->length;
    }
    copy_job_pump(job);
}

/* Ask the side's block status from `at` to the source's end (once). */
static void side_query(struct copy_job *job, struct verify_side *s,
                       uint64_t at)
{
    if (s->querying)
        return;
    s->querying = true;
    s->start = s->end = at;
    s->count = 0;
    s->block_status_calls++;
    job->ops_inflight++;
    image_block_status(s->img, at, job->size - at, status_done, s);
}

/* Where the data starting at `from` ends, at most `limit`: the first
 * offset where both sides may read as zeroes.  A side's offsets past its
 * answer may (unknown), so a chunk stops there unless the other side is
 * known to hold data. */
static uint64_t data_run_end(const struct copy_verifier *v, uint64_t from,
                             uint64_t limit)
{
    uint64_t at = from;
    while (at < limit) {
        uint64_t src_end = UINT64_MAX, dst_end = UINT64_MAX;
        bool src_zero = true, dst_zero = true;
        if (side_covers(&v->side[0], at))
            src_zero = side_zero_run(&v->side[0], at, &src_end);
        if (side_covers(&v->side[1], at))
            dst_zero = side_zero_run(&v->side[1], at, &dst_end);
        if (src_zero && dst_zero)
            return at;
        at = min64(src_end, dst_end);
    }
    return limit;
}

enum chunk_result { CHUNK_READ, CHUNK_WAIT, CHUNK_END };

/* Advance v->next over ranges both sides report as zeroes (counting them
 * as verified) and find the next chunk to read: CHUNK_READ with its
 * length (it starts at v->next), CHUNK_WAIT while block status is needed
 * and in flight, CHUNK_END at the end of the source. */
static enum chunk_result next_chunk(struct copy_job *job, uint64_t *len)
{
    struct copy_verifier *v = &job->ver;
    uint64_t align = job->plan.align;
    uint64_t skipped = 0;
    enum chunk_result res = CHUNK_END;

    while (v->next < job->size) {
        bool known = true;
        for (int k = 0; k < 2; k++) {
            if (!side_covers(&v->side[k], v->next)) {
                side_query(job, &v->side[k], v->next);
                known = false;
            }
        }
        if (!known) {
            res = CHUNK_WAIT;
            break;
        }
        uint64_t src_end, dst_end;
        bool src_zero = side_zero_run(&v->side[0], v->next, &src_end);
        bool dst_zero = side_zero_run(&v->side[1], v->next, &dst_end);
        uint64_t from = v->next;
        if (src_zero && dst_zero) {
            uint64_t end = min64(src_end, dst_end);
            if (end < job->size)
                end -= end % align;
            if (end > v->next) {
                skipped += end - v->next;
                v->next = end;
                continue;
            }
            /* A zero run shorter than one aligned block: read it. */
            from = min64(v->next + align, job->size);
        }
        uint64_t limit = min64(v->next + job->opts.request_size, job->size);
        uint64_t end = min64(round_up(data_run_end(v, from, limit), align),
                             limit);
        *len = end - v->next;
        res = CHUNK_READ;
        break;
    }
    if (skipped) {
        v->skipped += skipped;
        copy_job_add_verified(job, skipped);
    }
    return res;
}

/* ---- compare reads ------------------------------------------------------ */

static void compare_pair(struct copy_job *job, struct copy_request *a,
                         struct copy_request *b)
{
    if (!a->failed && !b->failed) {
        if (memcmp(a->buf, b->buf, a->length) == 0) {
            copy_job_add_verified(job, a->length);
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
        copy_job_fail(job, "read", is_src ? job->src : job->dst,
                      (int64_t)op->offset, err);
    }
    if (r->ops_pending == 0 && other->ops_pending == 0)
        compare_pair(job, is_src ? r : other, is_src ? other : r);
    copy_job_pump(job);
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
        struct request_op *op = copy_request_op_take(r, r->offset + pos);
        image_read(img, r->buf + pos, r->offset + pos, n, verify_read_done,
                   op);
        pos += n;
    }
}

void verify_start(struct copy_job *job)
{
    struct copy_verifier *v = &job->ver;
    v->next = 0;
    v->differs = false;
    v->pairs = job->nbuf / 2;
    v->skipped = 0;
    for (int k = 0; k < 2; k++) {
        struct verify_side *s = &v->side[k];
        memset(s, 0, sizeof *s);
        s->job = job;
        s->img = k == 0 ? job->src : job->dst;
    }
}

bool verify_pump(struct copy_job *job)
{
    struct copy_verifier *v = &job->ver;
    bool idle = true;
    for (unsigned i = 0; i < v->pairs; i++) {
        struct copy_request *a = &job->reqs[2 * i];
        struct copy_request *b = &job->reqs[2 * i + 1];
        uint64_t len;
        if (a->state == REQ_FREE && b->state == REQ_FREE &&
            !v->differs && !job->stopping && v->next < job->size &&
            next_chunk(job, &len) == CHUNK_READ) {
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
    bool querying = v->side[0].querying || v->side[1].querying;
    return idle && !querying && (v->differs || v->next >= job->size);
}
