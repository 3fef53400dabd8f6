/* copy-run.c — copy_run: run one job to completion on the images' loop,
 * with a periodic progress tick.  See engine.h. */
#include <errno.h>
#include <string.h>

#include "engine.h"

struct run_state {
    struct copy_job *job;
    struct loop *loop;
    void (*tick)(void *opaque, const struct copy_progress *p);
    void *opaque;
    unsigned tick_ms;
    int64_t timer;
    bool done;
    struct copy_progress final;
};

static void run_done(void *opaque, const struct copy_progress *final)
{
    struct run_state *st = opaque;
    st->final = *final;
    st->done = true;
}

static void run_tick(void *opaque)
{
    struct run_state *st = opaque;
    st->timer = 0;
    if (st->done)
        return;
    struct copy_progress p;
    copy_job_progress(st->job, &p);
    st->tick(st->opaque, &p);
    int64_t id = loop_add_timer(st->loop, st->tick_ms, run_tick, st);
    st->timer = id > 0 ? id : 0;
}

int copy_run(struct image *src, struct image *dst,
             const struct copy_options *opts,
             void (*tick)(void *opaque, const struct copy_progress *p),
             void *opaque, unsigned tick_ms, struct copy_progress *final,
             struct errmsg *err)
{
    struct copy_job *job = copy_job_new(src, dst, opts, err);
    if (!job)
        return errno ? -errno : -EINVAL;
    struct run_state st = {
        .job = job, .loop = src->loop, .tick = tick, .opaque = opaque,
        .tick_ms = tick_ms ? tick_ms : 1000,   /* 0: once a second */
    };
    copy_job_start(job, run_done, &st);
    if (tick) {
        int64_t id = loop_add_timer(st.loop, st.tick_ms, run_tick, &st);
        st.timer = id > 0 ? id : 0;
    }
    int r = loop_run_until(st.loop, &st.done);
    if (r < 0 && !st.done) {
        /* The loop itself failed: stop the job and try to drain it. */
        copy_job_cancel(job);
        if (loop_run_until(st.loop, &st.done) < 0) {
            if (st.timer)
                loop_cancel_timer(st.loop, st.timer);
            errmsg_set(err, "copy: event loop failed: %s", strerror(-r));
            return r;   /* the job cannot be freed safely: leaked */
        }
    }
    if (st.timer)
        loop_cancel_timer(st.loop, st.timer);
    if (final)
        *final = st.final;
    copy_job_free(job);
    if (st.final.state == COPY_DONE)
        return 0;
    errmsg_set(err, "%s", st.final.error);
    return st.final.err ? st.final.err : -EIO;
}
