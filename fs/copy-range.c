/* copy-range.c — copy_file_range between two images of one mount, run
 * through the copy engine on the loop thread (`cp A B` inside the mount).
 *
 * The range is copied by wrapping both images as slices (slice.c).  Both
 * nodes are drained first so write-behind data is on the images.  A
 * growable NFS target is first extended to the end of the range
 * (image_truncate), so the engine sees a target big enough; when the whole range
 * lies beyond the old end it reads as zeroes and zero runs are skipped.
 * Ranges that are not aligned to the images' block sizes answer
 * EOPNOTSUPP, on which the kernel falls back to its own copy.  A copy
 * onto the same image (by identity, image-id.h) is refused with EINVAL.
 *
 * Memory: the engine's fixed pool (at most COPY_DEFAULT_REQUESTS requests,
 * no more than the range needs) is taken from the mount's budget
 * (mem-budget.h) before anything is written, held while the copy runs and
 * given back when it ended (then queued jobs may start, job-queue.h).  A
 * system call does not wait in the job queue: it runs with the request
 * buffers that are free now, down to one; when not even one fits it
 * answers EOPNOTSUPP, and the kernel copies through read and write, whose
 * read-ahead the budget bounds too. */
#include "fs.h"
#include "job-queue.h"
#include "mem-budget.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

/* The FUSE reply carries a 32-bit count. */
#define MAX_RANGE 0xfffff000ull

struct range_ctx {
    fuse_req_t req;
    struct node *in, *out;
    uint64_t off_in, off_out, len;
    int drained;
    int err;
    struct image *s_in, *s_out;
    struct copy_job *cj;
    uint64_t old_size;          /* the target's size before it grew */
    size_t request_size;        /* a multiple of both block sizes */
    unsigned requests;          /* request buffers taken from the budget */
    uint64_t stride;            /* bytes per buffer taken */
};

static void finish(struct range_ctx *c, int err, uint64_t copied)
{
    if (err)
        fuse_reply_err(c->req, -err);
    else
        fuse_reply_write(c->req, (size_t)copied);
    if (c->s_in)
        image_close(c->s_in);
    if (c->s_out)
        image_close(c->s_out);
    if (c->requests) {
        mem_budget_range_give(c->requests * c->stride);
        job_queue_kick();
    }
    atomic_fetch_sub(&c->in->job_readers, 1);
    atomic_fetch_sub(&c->out->job_writers, 1);
    fs_global->active_jobs--;
    node_close(c->in, false);
    node_close(c->out, false);
    free(c);
}

static void cleanup_later(void *opaque)
{
    struct range_ctx *c = opaque;
    copy_job_free(c->cj);
    c->cj = NULL;
    finish(c, c->err, c->len);
}

static void copied(void *opaque, const struct copy_progress *final)
{
    struct range_ctx *c = opaque;
    if (final->state != COPY_DONE) {
        c->err = final->err ? final->err : -ECANCELED;
        syslog(LOG_ERR, "imgfs: copy_file_range: %s", final->error);
    }
    /* The job is freed after this callback returned. */
    if (loop_defer(fs_global->loop, cleanup_later, c) < 0)
        cleanup_later(c);
}

static int run_copy(struct range_ctx *c);

/* The target was extended (image_truncate) to the end of the range. */
static void extended(void *opaque, int err)
{
    struct range_ctx *c = opaque;
    int r = err;
    if (!err) {
        unsigned long long end_out = c->off_out + c->len;
        unsigned long long pend = atomic_load(&c->out->pending_end);
        while (end_out > pend &&
               !atomic_compare_exchange_weak(&c->out->pending_end, &pend,
                                             end_out))
            ;
        r = run_copy(c);
    } else {
        syslog(LOG_ERR, "imgfs: copy_file_range: extending %s: %s",
               c->out->img->name, c->out->img->last_error.text);
    }
    if (r != 0)
        finish(c, r < 0 ? r : 0, 0);
}

/* Check the range; extend a growable target first (then run_copy
 * follows from `extended`).  0: started or extending, 1: nothing to
 * copy, or -errno. */
static int start_copy(struct range_ctx *c)
{
    struct image *in = c->in->img, *out = c->out->img;
    if (!in || !out)
        return -EBADF;
    if (c->off_in >= in->size) {
        c->len = 0;
        return 1;
    }
    if (c->len > in->size - c->off_in)
        c->len = in->size - c->off_in;
    if (c->len > MAX_RANGE)
        c->len = MAX_RANGE;
    if (c->len == 0)
        return 1;
    uint64_t bin = in->block_size ? in->block_size : 1;
    uint64_t bout = out->block_size ? out->block_size : 1;
    uint64_t end_in = c->off_in + c->len, end_out = c->off_out + c->len;
    bool growable = c->out->kind == NODE_NFSFILE;
    if (c->off_in % bin || c->off_out % bout ||
        (end_in % bin && end_in != in->size) ||
        (end_out % bout && end_out != out->size && !growable))
        return -EOPNOTSUPP;
    if (end_out > out->size && !growable)
        return -ENOSPC;
    /* The pool, from the mount's memory budget (see the top). */
    struct copy_options o;
    copy_options_init(&o);
    c->request_size = o.request_size;
    while (c->request_size % bin || c->request_size % bout)
        c->request_size *= 2;
    c->stride = (c->request_size + 4095) / 4096 * 4096;
    uint64_t want = (c->len + c->request_size - 1) / c->request_size;
    c->requests = mem_budget_range_take(c->stride, want < o.requests
                                                   ? (unsigned)want
                                                   : o.requests);
    if (c->requests == 0)
        return -EOPNOTSUPP;
    c->old_size = out->size;
    if (end_out > out->size) {
        image_truncate(out, end_out, extended, c);
        return 0;
    }
    return run_copy(c);
}

/* Copy [off_in, +len) onto [off_out, +len) of a target that is big
 * enough.  0: started, or -errno. */
static int run_copy(struct range_ctx *c)
{
    struct image *in = c->in->img, *out = c->out->img;
    bool target_zero = c->off_out >= c->old_size;
    struct errmsg em = { "" };
    c->s_in = slice_image_new(in, c->off_in, c->len, &em);
    c->s_out = c->s_in ? slice_image_new(out, c->off_out, c->len, &em)
                       : NULL;
    if (!c->s_out)
        return -ENOMEM;
    c->s_out->reads_as_zero = target_zero;
    struct copy_options o;
    copy_options_init(&o);
    o.target_is_zero = target_zero;
    o.request_size = c->request_size;
    o.requests = c->requests;
    c->cj = copy_job_new(c->s_in, c->s_out, &o, &em);
    if (!c->cj) {
        syslog(LOG_ERR, "imgfs: copy_file_range: %s", em.text);
        return -EOPNOTSUPP;
    }
    copy_job_start(c->cj, copied, c);
    return 0;
}

static void drained(void *opaque, int err)
{
    struct range_ctx *c = opaque;
    if (err && !c->err)
        c->err = err;
    if (++c->drained < 2)
        return;
    int r = c->err ? c->err : start_copy(c);
    if (r != 0)
        finish(c, r < 0 ? r : 0, 0);
}

/* True when `out` is `in` or an image of its backing chain under
 * another name (two mount names for one export, a hard link, two
 * spellings of one LUN): copying would read what it overwrites. */
static bool same_image(const struct image *in, const struct image *out)
{
    return !image_id_empty(&out->id) &&
           (image_id_same(&in->id, &out->id) ||
            image_chain_find(in, &out->id) != NULL);
}

static void range_on_loop(void *opaque)
{
    struct range_ctx *c = opaque;
    if (!c->in->img || !c->out->img || c->out->img->read_only) {
        fuse_reply_err(c->req, EBADF);
        free(c);
        return;
    }
    if (same_image(c->in->img, c->out->img)) {
        syslog(LOG_ERR, "imgfs: copy_file_range: %s is the same image as "
               "%s", c->out->img->name, c->in->img->name);
        fuse_reply_err(c->req, EINVAL);
        free(c);
        return;
    }
    if (atomic_load(&c->out->job_writers) ||
        atomic_load(&c->out->job_readers) ||
        atomic_load(&c->in->job_writers)) {
        fuse_reply_err(c->req, EBUSY);
        free(c);
        return;
    }
    atomic_fetch_add(&c->in->job_readers, 1);
    atomic_fetch_add(&c->out->job_writers, 1);
    node_cache_drop(c->out);
    fs_global->active_jobs++;
    c->in->opens++;
    c->out->opens++;
    node_drain(c->in, drained, c);
    node_drain(c->out, drained, c);
}

void fs_copy_range(fuse_req_t req, struct node *in, off_t off_in,
                   struct node *out, off_t off_out, size_t len)
{
    if (in == out) {
        fuse_reply_err(req, EOPNOTSUPP);    /* overlapping ranges: kernel */
        return;
    }
    struct range_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->req = req;
    c->in = in;
    c->out = out;
    c->off_in = (uint64_t)off_in;
    c->off_out = (uint64_t)off_out;
    c->len = len;
    if (fs_post(range_on_loop, c) < 0) {
        free(c);
        fuse_reply_err(req, ENOMEM);
    }
}
