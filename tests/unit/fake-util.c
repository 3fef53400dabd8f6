/* fake-util.c — see fake-util.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include "fake-util.h"

static uint64_t rng_state = 1;

void rng_seed(uint64_t seed)
{
    rng_state = seed ? seed : 1;
}

uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

void fill_pattern(struct fake_image *f, uint64_t off, uint64_t len,
                  unsigned char v)
{
    unsigned char *b = malloc(len);
    assert_non_null(b);
    memset(b, v, len);
    fake_image_poke(f, off, b, len);
    free(b);
}

bool is_zero_range(struct fake_image *f, uint64_t off, uint64_t len)
{
    static unsigned char x[64 * 1024];
    while (len) {
        size_t n = len < sizeof x ? len : sizeof x;
        fake_image_peek(f, off, x, n);
        for (size_t i = 0; i < n; i++)
            if (x[i])
                return false;
        off += n;
        len -= n;
    }
    return true;
}

int64_t first_diff(struct fake_image *a, struct fake_image *b, uint64_t off,
                   uint64_t len)
{
    static unsigned char x[256 * 1024], y[256 * 1024];
    while (len) {
        size_t n = len < sizeof x ? len : sizeof x;
        fake_image_peek(a, off, x, n);
        fake_image_peek(b, off, y, n);
        if (memcmp(x, y, n)) {
            size_t i = 0;
            while (x[i] == y[i])
                i++;
            return (int64_t)(off + i);
        }
        off += n;
        len -= n;
    }
    return -1;
}

void assert_same(struct fake_image *a, struct fake_image *b, uint64_t off,
                 uint64_t len)
{
    int64_t d = first_diff(a, b, off, len);
    if (d >= 0)
        fail_msg("images differ at byte %lld", (long long)d);
}

void pair_open(struct pair *p, const struct fake_config *sc,
               const struct fake_config *dc)
{
    p->loop = loop_new();
    assert_non_null(p->loop);
    p->src = fake_image_new(p->loop, "src", sc);
    p->dst = fake_image_new(p->loop, "dst", dc);
    assert_non_null(p->src);
    assert_non_null(p->dst);
}

void pair_close(struct pair *p)
{
    assert_int_equal(fake_image_close(p->src), 0);
    assert_int_equal(fake_image_close(p->dst), 0);
    loop_free(p->loop);
}

/* ---- copy_run: a job run to completion (see fake-util.h) ---------------- */

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
