/* engine.c — copy job life cycle: options, validation, the pump that drives
 * the pipeline, flush, verify, errors, cancel and progress.  See engine.h
 * for the contract and engine-internal.h for how the parts fit. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine-internal.h"

void copy_options_init(struct copy_options *o)
{
    memset(o, 0, sizeof *o);
    o->requests = COPY_DEFAULT_REQUESTS;
    o->request_size = COPY_DEFAULT_REQUEST_SIZE;
    o->order = COPY_ORDER_PIPELINED;
    o->sparse = COPY_DEFAULT_SPARSE;
}

const char *copy_state_name(enum copy_state s)
{
    switch (s) {
    case COPY_QUEUED: return "queued";
    case COPY_RUNNING: return "running";
    case COPY_FLUSHING: return "flushing";
    case COPY_VERIFYING: return "verifying";
    case COPY_DONE: return "done";
    case COPY_FAILED: return "failed";
    case COPY_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static const char *const order_names[] = {
    [COPY_ORDER_STRICT] = "strict",
    [COPY_ORDER_PIPELINED] = "pipelined",
    [COPY_ORDER_ANY] = "any",
};

int copy_order_parse(const char *s, enum copy_order *out)
{
    for (unsigned i = 0; s && i < sizeof order_names / sizeof *order_names;
         i++) {
        if (strcmp(s, order_names[i]) == 0) {
            *out = (enum copy_order)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *copy_order_name(enum copy_order o)
{
    if ((unsigned)o < sizeof order_names / sizeof *order_names)
        return order_names[o];
    return "unknown";
}

/* ---- validation and allocation ---------------------------------------- */

static int invalid(struct errmsg *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int invalid(struct errmsg *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->text, sizeof err->text, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint64_t bs_of(const struct image *img)
{
    return img->block_size ? img->block_size : 1;
}

static int validate(struct image *src, struct image *dst,
                    const struct copy_options *o, struct errmsg *err)
{
    if (!src || !dst || !o)
        return invalid(err, -EINVAL, "copy: missing source, target or options");
    if (src->loop != dst->loop)
        return invalid(err, -EINVAL, "copy: source %s and target %s are on "
                       "different loops", src->name, dst->name);
    if (dst->read_only)
        return invalid(err, -EROFS, "target %s is read-only", dst->name);
    if (dst->size < src->size)
        return invalid(err, -ENOSPC, "target too small: dst is %llu bytes, "
                       "source is %llu bytes",
                       (unsigned long long)dst->size,
                       (unsigned long long)src->size);
    if (o->adaptive && o->memory < o->request_size)
        return invalid(err, -EINVAL, "memory %llu bytes is less than one "
                       "request (%zu bytes)",
                       (unsigned long long)o->memory, o->request_size);
    if (!o->adaptive && (o->requests < 1 || o->requests > COPY_MAX_REQUESTS))
        return invalid(err, -EINVAL, "requests must be 1..%u (got %u)",
                       COPY_MAX_REQUESTS, o->requests);
    uint64_t sb = bs_of(src), db = bs_of(dst);
    if (o->request_size == 0 || o->request_size > COPY_MAX_REQUEST_SIZE)
        return invalid(err, -EINVAL, "request-size must be 1..%u bytes "
                       "(got %zu)", COPY_MAX_REQUEST_SIZE, o->request_size);
    if (o->request_size % sb || o->request_size % db)
        return invalid(err, -EINVAL, "request-size %zu is not a multiple of "
                       "the block sizes (source %llu, target %llu)",
                       o->request_size, (unsigned long long)sb,
                       (unsigned long long)db);
    if ((unsigned)o->order > COPY_ORDER_ANY)
        return invalid(err, -EINVAL, "unknown write order %d", (int)o->order);
    /* Like qemu-img -S: zero runs are found in whole 512-byte sectors at
     * least (this also bounds the operations one request can issue). */
    if (o->sparse % db || o->sparse % 512)
        return invalid(err, -EINVAL, "sparse %llu must be 0 or a multiple of "
                       "512 and of the target block size %llu",
                       (unsigned long long)o->sparse, (unsigned long long)db);
    if (o->skip_backing && o->verify)
        return invalid(err, -EINVAL, "verify cannot be combined with "
                       "keeping the backing chain (the source layer reads "
                       "zeroes where the target reads its backing; compare "
                       "the chains with qemu-img compare)");
    if (o->skip_backing && o->target_is_zero)
        return invalid(err, -EINVAL, "target-is-zero cannot be combined "
                       "with keeping the backing chain (the target reads "
                       "its backing, and zero clusters must be written)");
    if (o->skip_backing && (sb > 1 || db > 1))
        return invalid(err, -EINVAL, "keeping the backing chain needs "
                       "byte-addressable images (source block size %llu, "
                       "target %llu)", (unsigned long long)sb,
                       (unsigned long long)db);
    if (o->start_offset > src->size)
        return invalid(err, -EINVAL, "start offset %llu is past the source "
                       "end (%llu bytes)",
                       (unsigned long long)o->start_offset,
                       (unsigned long long)src->size);
    if (o->start_offset != src->size &&
        (o->start_offset % sb || o->start_offset % db))
        return invalid(err, -EINVAL, "start offset %llu is not aligned to "
                       "the block sizes (source %llu, target %llu)",
                       (unsigned long long)o->start_offset,
                       (unsigned long long)sb, (unsigned long long)db);
    if (o->rate && (o->rate < RATE_MIN || o->rate > RATE_MAX))
        return invalid(err, -EINVAL, "rate %llu bytes/s is out of range "
                       "(0 for unlimited, or %llu to %llu)",
                       (unsigned long long)o->rate, RATE_MIN, RATE_MAX);
    return 0;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

/* Upper bound of image operations one request may have: split reads, verify
 * reads, or write pieces (zero runs, data between them, max_request cuts). */
static unsigned ops_bound(const struct image *src, const struct image *dst,
                          const struct copy_options *o)
{
    uint64_t rs = o->request_size;
    uint64_t ms = src->max_request ? src->max_request : rs;
    uint64_t md = dst->max_request ? dst->max_request : rs;
    ms -= ms % bs_of(src);
    md -= md % bs_of(dst);
    if (!ms)
        ms = bs_of(src);
    if (!md)
        md = bs_of(dst);
    uint64_t reads = div_up(rs, ms) + 1;
    uint64_t chunks = o->sparse ? rs / o->sparse + 2 : 1;
    uint64_t writes = 2 * chunks + div_up(rs, md) + 2;
    uint64_t n = reads > writes ? reads : writes;
    return (unsigned)n;
}

struct copy_job *copy_job_new(struct image *src, struct image *dst,
                              const struct copy_options *opts,
                              struct errmsg *err)
{
    int r = validate(src, dst, opts, err);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    struct copy_job *job = calloc(1, sizeof *job);
    if (!job)
        goto nomem;
    job->src = src;
    job->dst = dst;
    job->opts = *opts;
    job->size = src->size;
    job->skip_zeroes = opts->target_is_zero || dst->reads_as_zero;
    job->stride = (opts->request_size + REQUEST_BUFFER_ALIGN - 1) /
                  REQUEST_BUFFER_ALIGN * REQUEST_BUFFER_ALIGN;
    /* Adaptive: as many slots as the memory holds buffers. */
    uint64_t fit = opts->memory / job->stride;
    if (opts->adaptive)
        job->nslots = fit < 1 ? 1 : fit > COPY_MAX_REQUESTS
                          ? COPY_MAX_REQUESTS : (unsigned)fit;
    else
        job->nslots = opts->requests;
    /* The verify pass reads source and target side by side: it needs at
     * least two buffers. */
    job->nbuf = job->nslots + (opts->verify && job->nslots == 1);
    job->max_ops = ops_bound(src, dst, opts);
    job->nticket = 2 * job->nslots;
    if (opts->adaptive)
        depth_init(&job->depth, COPY_DEPTH_FLOOR, job->nslots, DEPTH_START,
                   loop_now_ns());
    else
        depth_init_pinned(&job->depth, job->nslots);
    /* The planner's window scales with the pool it can fill. */
    job->opts.requests = job->nslots;

    job->reqs = calloc(job->nbuf, sizeof *job->reqs);
    job->op_pool = calloc((size_t)job->nbuf * job->max_ops,
                          sizeof *job->op_pool);
    job->tickets = calloc(job->nticket, sizeof *job->tickets);
    if (!job->reqs || !job->op_pool || !job->tickets)
        goto nomem;
    for (unsigned i = job->nbuf; i-- > 0;) {
        struct copy_request *q = &job->reqs[i];
        q->job = job;
        q->index = i;
        q->ops = job->op_pool + (size_t)i * job->max_ops;
        q->state = REQ_FREE;
        /* A fixed pool is allocated now, whole. */
        if (!opts->adaptive && !copy_job_buffer_get(job, q))
            goto nomem;
        if (i < job->nslots) {
            q->next_free = job->free_list;
            job->free_list = q;
            job->free_count++;
        }
    }
    planner_init(job);
    pthread_mutex_init(&job->lock, NULL);
    job->prog.state = COPY_QUEUED;
    job->prog.total = src->size;
    job->prog.done = opts->start_offset;
    job->prog.watermark = opts->start_offset;
    return job;

nomem:
    if (job) {
        for (unsigned i = 0; job->reqs && i < job->nbuf; i++)
            free(job->reqs[i].buf);
        free(job->reqs);
        free(job->op_pool);
        free(job->tickets);
        free(job);
    }
    errmsg_set(err, "copy: out of memory allocating %u × %zu byte buffers",
               opts->requests, opts->request_size);
    errno = ENOMEM;
    return NULL;
}

void copy_job_free(struct copy_job *job)
{
    if (!job)
        return;
    if (job->rate_timer)
        loop_cancel_timer(job->src->loop, job->rate_timer);
    pthread_mutex_destroy(&job->lock);
    for (unsigned i = 0; i < job->nbuf; i++)
        free(job->reqs[i].buf);
    free(job->reqs);
    free(job->op_pool);
    free(job->tickets);
    free(job);
}

/* ---- buffers and depth ------------------------------------------------- */

bool copy_job_buffer_get(struct copy_job *job, struct copy_request *r)
{
    if (r->buf)
        return true;
    void *mem = NULL;
    if (posix_memalign(&mem, REQUEST_BUFFER_ALIGN, job->stride) != 0)
        return false;
    r->buf = mem;
    r->buf_zero = false;
    job->buffers_held++;
    job->buffer_bytes += job->stride;
    if (job->buffer_bytes > job->buffer_bytes_peak)
        job->buffer_bytes_peak = job->buffer_bytes;
    return true;
}

static void buffer_drop(struct copy_job *job, struct copy_request *r)
{
    free(r->buf);
    r->buf = NULL;
    r->buf_zero = false;
    job->buffers_held--;
    job->buffer_bytes -= job->stride;
}

void copy_job_buffer_trim(struct copy_job *job, struct copy_request *r)
{
    if (job->opts.adaptive && r->buf && r->state == REQ_FREE &&
        job->buffers_held > depth_current(&job->depth))
        buffer_drop(job, r);
}

void copy_job_depth_cycle(struct copy_job *job)
{
    if (!depth_cycle(&job->depth, loop_now_ns()))
        return;
    for (struct copy_request *r = job->free_list;
         r && job->buffers_held > depth_current(&job->depth);
         r = r->next_free)
        copy_job_buffer_trim(job, r);
    job->pump_again = true;
}

/* The verify pass uses every buffer of the pool. */
static bool buffers_for_verify(struct copy_job *job)
{
    for (unsigned i = 0; i < job->nbuf; i++)
        if (!copy_job_buffer_get(job, &job->reqs[i]))
            return false;
    return true;
}

/* ---- progress ---------------------------------------------------------- */

void copy_job_set_state(struct copy_job *job, enum copy_state s)
{
    pthread_mutex_lock(&job->lock);
    job->prog.state = s;
    if (s == COPY_DONE || s == COPY_FAILED || s == COPY_CANCELLED)
        job->end_ns = loop_now_ns();
    pthread_mutex_unlock(&job->lock);
}

void copy_job_add_done(struct copy_job *job, uint64_t bytes, uint64_t watermark)
{
    pthread_mutex_lock(&job->lock);
    job->prog.done += bytes;
    job->prog.watermark = watermark;
    pthread_mutex_unlock(&job->lock);
}

void copy_job_add_verified(struct copy_job *job, uint64_t bytes)
{
    pthread_mutex_lock(&job->lock);
    job->prog.verified += bytes;
    pthread_mutex_unlock(&job->lock);
}

void copy_job_progress(struct copy_job *job, struct copy_progress *out)
{
    pthread_mutex_lock(&job->lock);
    *out = job->prog;
    if (job->start_ns) {
        uint64_t end = job->end_ns ? job->end_ns : loop_now_ns();
        out->elapsed_ns = end - job->start_ns;
    } else {
        out->elapsed_ns = 0;
    }
    pthread_mutex_unlock(&job->lock);
}

/* ---- errors ------------------------------------------------------------ */

void copy_job_fail_msg(struct copy_job *job, int err, const char *msg)
{
    job->stopping = true;
    pthread_mutex_lock(&job->lock);
    if (job->prog.err == 0 && !job->cancel_requested) {
        job->prog.err = err < 0 ? err : -EIO;
        snprintf(job->prog.error, sizeof job->prog.error, "%s", msg);
    }
    pthread_mutex_unlock(&job->lock);
}

void copy_job_fail(struct copy_job *job, const char *op, struct image *img,
                   int64_t offset, int err)
{
    struct errmsg msg;
    if (offset >= 0)
        errmsg_set(&msg, "%s on %s at offset %lld: %s", op, img->name,
                   (long long)offset, strerror(-err));
    else
        errmsg_set(&msg, "%s on %s: %s", op, img->name, strerror(-err));
    if (img->last_error.text[0]) {
        size_t n = strlen(msg.text);
        if (n + 2 < sizeof msg.text)
            memccpy(msg.text + n, ": ", '\0', 3);
        n = strlen(msg.text);
        size_t room = sizeof msg.text - n - 1;
        size_t add = strnlen(img->last_error.text, room);
        memcpy(msg.text + n, img->last_error.text, add);
        msg.text[n + add] = '\0';
    }
    copy_job_fail_msg(job, err, msg.text);
}

size_t copy_job_keep_extents(struct copy_job *job, const char *op,
                             struct image *img, uint64_t asked,
                        const struct extent *ext, size_t n,
                        struct extent *out, size_t max)
{
    size_t count = 0;
    uint64_t at = asked;
    for (size_t i = 0; i < n && count < max && at < job->size; i++) {
        if (ext[i].offset != at || ext[i].length == 0)
            break;
        struct extent e = ext[i];
        if (e.length > job->size - at)
            e.length = job->size - at;
        out[count++] = e;
        at += e.length;
    }
    if (count == 0) {
        char msg[sizeof job->prog.error];
        snprintf(msg, sizeof msg,
                 "%s on %s at offset %llu: backend returned no usable extent",
                 op, img->name, (unsigned long long)asked);
        copy_job_fail_msg(job, -EIO, msg);
    }
    return count;
}

/* ---- the pump ---------------------------------------------------------- */

static void flush_done(void *opaque, int err)
{
    struct copy_job *job = opaque;
    job->ops_inflight--;
    if (err) {
        copy_job_fail(job, "flush", job->dst, -1, err);
    } else if (!job->stopping) {
        if (job->opts.verify && !buffers_for_verify(job)) {
            copy_job_fail_msg(job, -ENOMEM,
                              "verify: out of memory for buffers");
        } else if (job->opts.verify) {
            copy_job_set_state(job, COPY_VERIFYING);
            verify_start(job);
        } else {
            job->finished = true;
        }
    }
    copy_job_pump(job);
}

/* One round of work; sets job->finished when the job is over. */
static void pump_round(struct copy_job *job)
{
    if (job->stopping) {
        pipeline_drop_unwritten(job);
        if (job->ops_inflight == 0)
            job->finished = true;
        return;
    }
    switch (job->prog.state) {
    case COPY_RUNNING:
        pipeline_fill(job);
        pipeline_issue_writes(job);
        if (!job->stopping && pipeline_finished(job) && !job->flush_issued) {
            job->flush_issued = true;
            copy_job_set_state(job, COPY_FLUSHING);
            job->ops_inflight++;
            image_flush(job->dst, flush_done, job);
        }
        break;
    case COPY_VERIFYING:
        if (verify_pump(job)) {
            if (job->ver.differs) {
                char msg[128];
                snprintf(msg, sizeof msg,
                         "verify: images differ at byte offset %llu",
                         (unsigned long long)job->ver.diff);
                copy_job_fail_msg(job, -EIO, msg);
                job->pump_again = true;
            } else {
                job->finished = true;
            }
        }
        break;
    default:
        break;
    }
}

void copy_job_pump(struct copy_job *job)
{
    if (job->in_pump) {
        job->pump_again = true;
        return;
    }
    if (job->done_called)
        return;
    job->in_pump = true;
    while (!job->finished) {
        job->pump_again = false;
        pump_round(job);
        if (!job->pump_again)
            break;
    }
    job->in_pump = false;
    /* Done only when nothing is in flight any more: a checkpoint's flush
     * issued before the final one may complete after it, and its callback
     * must come before the job's. */
    if (!job->finished || job->ops_inflight > 0)
        return;
    job->done_called = true;

    enum copy_state s = COPY_DONE;
    if (job->cancel_requested) {
        s = COPY_CANCELLED;
        pthread_mutex_lock(&job->lock);
        job->prog.err = -ECANCELED;
        snprintf(job->prog.error, sizeof job->prog.error, "cancelled");
        pthread_mutex_unlock(&job->lock);
    } else if (job->prog.err) {
        s = COPY_FAILED;
    }
    copy_job_set_state(job, s);
    if (job->rate_timer) {
        loop_cancel_timer(job->src->loop, job->rate_timer);
        job->rate_timer = 0;
    }
    struct copy_progress final;
    copy_job_progress(job, &final);
    /* Last use of `job`: the callback may free it. */
    job->done_cb(job->done_opaque, &final);
}

static void kick(void *opaque)
{
    struct copy_job *job = opaque;
    job->ops_inflight--;
    copy_job_pump(job);
}

/* Run copy_job_pump on a later loop iteration (counted as in flight, so the job
 * cannot finish and be freed while the call is pending). */
static void schedule_kick(struct copy_job *job)
{
    job->ops_inflight++;
    if (loop_defer(job->src->loop, kick, job) == 0)
        return;
    if (loop_add_timer(job->src->loop, 0, kick, job) > 0)
        return;
    /* No memory to schedule anything: run now (the only case where done
     * may run inside the caller). */
    kick(job);
}

void copy_job_start(struct copy_job *job, copy_done_cb done, void *opaque)
{
    if (job->started)
        return;
    job->started = true;
    job->done_cb = done;
    job->done_opaque = opaque;
    pthread_mutex_lock(&job->lock);
    job->start_ns = loop_now_ns();
    job->prog.state = COPY_RUNNING;
    pthread_mutex_unlock(&job->lock);
    rate_init(&job->rate, job->opts.rate, job->start_ns);
    job->depth.interval_start_ns = job->start_ns;
    if (job->cancel_requested)
        job->stopping = true;
    schedule_kick(job);
}

/* ---- checkpoints ------------------------------------------------------ */

struct checkpoint {
    struct copy_job *job;
    uint64_t watermark;             /* noted before the flush was issued */
    copy_checkpoint_cb cb;
    void *opaque;
};

static void checkpoint_flushed(void *opaque, int err)
{
    struct checkpoint *c = opaque;
    struct copy_job *job = c->job;
    if (err)
        copy_job_fail(job, "flush", job->dst, -1, err);
    c->cb(c->opaque, c->watermark, err);
    free(c);
    job->ops_inflight--;
    copy_job_pump(job);
}

unsigned copy_checkpoint_interval_ms(void)
{
    const char *v = getenv("IMGFS_CHECKPOINT_INTERVAL");
    if (!v || !*v)
        return COPY_CHECKPOINT_DEFAULT_MS;
    char *end;
    errno = 0;
    double secs = strtod(v, &end);
    if (errno || *end || !(secs >= 0.05 && secs <= 3600))
        return COPY_CHECKPOINT_DEFAULT_MS;
    return (unsigned)(secs * 1000.0);
}

int copy_job_checkpoint(struct copy_job *job, copy_checkpoint_cb cb,
                        void *opaque)
{
    if (!job->started || job->finished || job->done_called)
        return -EALREADY;
    struct checkpoint *c = malloc(sizeof *c);
    if (!c)
        return -ENOMEM;
    c->job = job;
    c->cb = cb;
    c->opaque = opaque;
    /* The watermark only moves on this thread: every write below it has
     * completed now, before the flush is issued. */
    pthread_mutex_lock(&job->lock);
    c->watermark = job->prog.watermark;
    pthread_mutex_unlock(&job->lock);
    job->ops_inflight++;
    image_flush(job->dst, checkpoint_flushed, c);
    return 0;
}

void copy_job_cancel(struct copy_job *job)
{
    if (job->finished || job->stopping)
        return;
    job->cancel_requested = true;
    job->stopping = true;
    if (job->started)
        schedule_kick(job);
}

/* ---- rate limit (rate.h) ---------------------------------------------- */

static void rate_timer_fired(void *opaque)
{
    struct copy_job *job = opaque;
    job->rate_timer = 0;
    copy_job_pump(job);
}

bool copy_job_rate_admit(struct copy_job *job, const struct copy_request *r)
{
    uint64_t cost = r->kind == REQ_DATA ? r->length : 0;
    if (cost == 0 || job->opts.rate == 0)
        return true;
    if (job->rate_timer) {
        job->rate_held = true;      /* already waiting for the bucket */
        return false;
    }
    uint64_t wait = rate_take(&job->rate, cost, loop_now_ns());
    if (wait == 0)
        return true;
    uint64_t ms = (wait + 999999) / 1000000;
    int64_t t = loop_add_timer(job->src->loop,
                               (unsigned)(ms < 1000 ? ms : 1000),
                               rate_timer_fired, job);
    if (t <= 0)
        return true;                /* no memory for a timer: unpaced */
    job->rate_timer = t;
    job->rate_held = true;
    return false;
}

int copy_job_set_rate(struct copy_job *job, uint64_t rate)
{
    if (rate && (rate < RATE_MIN || rate > RATE_MAX))
        return -ERANGE;
    job->opts.rate = rate;
    rate_set(&job->rate, rate, loop_now_ns());
    if (job->rate_timer) {
        /* Waiting under the old rate: ask the bucket again now. */
        loop_cancel_timer(job->src->loop, job->rate_timer);
        job->rate_timer = 0;
        if (job->started && !job->done_called)
            schedule_kick(job);
    }
    return 0;
}
