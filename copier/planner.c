/* planner.c — turn lazily queried block status into planned ranges.
 *
 * The planner keeps the extents of the latest block-status answer (at
 * most PLANNER_CACHE_EXTENTS of them) and cuts ranges from them:
 *   - DATA ranges end at the end of the run of DATA extents (rounded up to
 *     the block alignment) or after request_size bytes;
 *   - ZERO/HOLE ranges end at the end of the zero run (rounded down to the
 *     alignment) or after zero_cap bytes; a zero run shorter than the
 *     alignment is planned as data;
 *   - with skip_backing, BACKING ranges are planned as REQ_SKIP like zero
 *     ranges (the alignment is 1: engine.c refuses larger block sizes);
 *     without it they count as zero ranges.
 * A query asks for [next, min(size, watermark + window)), so the planner
 * never looks more than `window` bytes past the watermark, and an answer
 * is at most PLANNER_CACHE_EXTENTS extents: memory does not depend on the
 * image size.
 */
#include <errno.h>

#include "engine-internal.h"

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

void planner_init(struct copy_job *job)
{
    struct copy_planner *p = &job->plan;
    uint64_t sb = job->src->block_size ? job->src->block_size : 1;
    uint64_t db = job->dst->block_size ? job->dst->block_size : 1;
    uint64_t rs = job->opts.request_size;

    p->align = sb / gcd64(sb, db) * db;
    p->zero_cap = min64((uint64_t)ZERO_REQUEST_FACTOR * rs, ZERO_REQUEST_MAX);
    p->zero_cap -= p->zero_cap % p->align;
    /* sparse = 0 writes zero ranges as data from a zeroed buffer. */
    if (p->zero_cap < rs || job->opts.sparse == 0)
        p->zero_cap = rs;
    p->window = (uint64_t)WINDOW_POOL_FACTOR * job->opts.requests * rs;
    if (p->window < p->zero_cap)
        p->window = p->zero_cap;
    p->next = job->opts.start_offset;
    p->first = p->count = 0;
    p->querying = false;
}

static enum request_kind kind_of(const struct copy_job *job,
                                 enum extent_type t)
{
    if (t == EXTENT_DATA)
        return REQ_DATA;
    if (t == EXTENT_BACKING && job->opts.skip_backing)
        return REQ_SKIP;
    return REQ_ZERO;
}

static void block_status_done(void *opaque, int err, const struct extent *ext,
                              size_t n)
{
    struct copy_job *job = opaque;
    struct copy_planner *p = &job->plan;
    uint64_t asked = p->cache_start;

    p->querying = false;
    job->ops_inflight--;
    p->first = p->count = 0;
    if (err) {
        copy_job_fail(job, "block status", job->src, (int64_t)asked, err);
        copy_job_pump(job);
        return;
    }
    p->count = copy_job_keep_extents(job, "block status", job->src, asked, ext,
                                     n, p->cache, PLANNER_CACHE_EXTENTS);
    copy_job_pump(job);
}

/* Ask block status from p->next, if the window allows. */
static enum plan_result query(struct copy_job *job)
{
    struct copy_planner *p = &job->plan;
    if (p->querying)
        return PLAN_WAIT;
    uint64_t window_end = job->prog.watermark + p->window;
    uint64_t end = min64(job->size, window_end);
    uint64_t want = min64(job->opts.request_size, job->size - p->next);
    if (end <= p->next || end - p->next < want)
        return PLAN_WAIT;      /* the window is full: wait for writes */
    p->first = p->count = 0;
    p->querying = true;
    p->cache_start = p->next;
    p->block_status_calls++;
    job->ops_inflight++;
    image_block_status(job->src, p->next, end - p->next, block_status_done,
                       job);
    return PLAN_WAIT;
}

enum plan_result planner_next(struct copy_job *job, uint64_t *offset,
                              uint64_t *length, enum request_kind *kind)
{
    struct copy_planner *p = &job->plan;
    if (p->next >= job->size)
        return PLAN_END;
    if (p->querying)
        return PLAN_WAIT;

    while (p->first < p->count &&
           p->cache[p->first].offset + p->cache[p->first].length <= p->next)
        p->first++;
    if (p->first == p->count || p->cache[p->first].offset > p->next)
        return query(job);

    /* The run of same-kind extents starting at next. */
    enum request_kind k = kind_of(job, p->cache[p->first].type);
    uint64_t run_end = p->cache[p->first].offset + p->cache[p->first].length;
    size_t i = p->first + 1;
    while (i < p->count && kind_of(job, p->cache[i].type) == k) {
        run_end = p->cache[i].offset + p->cache[i].length;
        i++;
    }
    const struct extent *last = &p->cache[p->count - 1];
    uint64_t cache_end = last->offset + last->length;
    bool fresh = p->cache_start == p->next;

    uint64_t cap = k == REQ_DATA ? job->opts.request_size : p->zero_cap;
    uint64_t want = min64(p->next + cap, job->size);
    /* A run cut short by the end of an old answer: ask again from here
     * rather than plan a short request. */
    if (run_end < want && run_end == cache_end && cache_end < job->size &&
        !fresh)
        return query(job);

    uint64_t end;
    if (k == REQ_DATA) {
        end = min64(round_up(run_end, p->align), want);
    } else {
        end = min64(run_end, want);
        if (end < job->size)
            end -= end % p->align;
        if (end <= p->next) {
            /* Zero run shorter than one aligned block: read it. */
            k = REQ_DATA;
            end = min64(p->next + p->align, job->size);
        }
    }
    *offset = p->next;
    *length = end - p->next;
    *kind = k;
    p->next = end;
    return PLAN_RANGE;
}
