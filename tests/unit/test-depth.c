/* Unit tests of the adaptive depth (copier/depth.h) driven by the copy
 * engine against fake images with the lane model: a slow target settles
 * low, a fast one far away climbs high, a change of the target mid-copy is
 * followed, and buffer memory never exceeds the limit.  The fakes complete
 * on real loop timers, so the assertions are ranges, never exact depths. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "copier/engine.h"
#include "copier/engine-internal.h"
#include "fake-image.h"
#include "fake-util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

/* Small requests keep the copying cheap, so a busy machine's CPU does not
 * become the bottleneck the tests would see instead of the fakes' lanes. */
#define RS (4 * KiB)            /* request size of every test */
#define MEMORY (256 * KiB)      /* ceiling 64 */

/* What a target looks like. */
struct lane_model {
    unsigned lanes;
    unsigned latency_us;
};

static const struct lane_model SLOW = { 1, 2000 };     /* 500 ops/s */
static const struct lane_model FAR = { 256, 10000 };   /* 10 ms, wide */

struct watch {
    struct copy_job *job;
    uint64_t writes;            /* full-size writes issued */
    uint64_t total;             /* writes the copy will issue */
    /* switch the target to `then` after `switch_at` writes (0: never) */
    uint64_t switch_at;
    struct lane_model then;
    /* target writes in flight at each write, over [from, to) of them */
    uint64_t from, to;
    uint64_t depth_sum, depth_n;
    unsigned depth_max;
    bool done;
    struct copy_progress final;
};

static void set_model(struct fake_image *f, struct lane_model m)
{
    f->cfg.lanes = m.lanes;
    f->cfg.lane_latency_us = m.latency_us;
}

static void on_issue(void *opaque, struct fake_image *f, enum fake_op op,
                     uint64_t offset, uint64_t len)
{
    (void)offset;
    struct watch *w = opaque;
    if (op != FAKE_WRITE || len != RS || !w->job)
        return;
    w->writes++;
    if (w->switch_at && w->writes == w->switch_at)
        set_model(f, w->then);
    /* The buffers never exceed the memory limit, at any moment. */
    assert_true(w->job->buffer_bytes <= MEMORY);
    if (w->writes >= w->from && w->writes < w->to) {
        /* what the target sees: its writes in flight, this one included */
        unsigned d = f->stats.writes_inflight + 1;
        assert_true(d <= MEMORY / RS);
        w->depth_sum += d;
        w->depth_n++;
        if (d > w->depth_max)
            w->depth_max = d;
    }
}

static void on_done(void *opaque, const struct copy_progress *final)
{
    struct watch *w = opaque;
    w->final = *final;
    w->done = true;
}

/* Copy `size` bytes (zeroes, written as data) from a quick source onto a
 * target that starts as `first`; record the target's writes in flight
 * over the writes [from_pct, to_pct) percent of the way.  Returns their
 * mean there. */
static double run(uint64_t size, struct lane_model first, struct watch *w,
                  unsigned from_pct, unsigned to_pct, bool verify)
{
    struct fake_config sc = { .size = size, .block_size = 512, .seed = 1,
                              .lanes = 64, .lane_latency_us = 200 };
    struct fake_config dc = { .size = size, .block_size = 512, .seed = 2,
                              .lanes = first.lanes,
                              .lane_latency_us = first.latency_us };
    struct pair p;
    pair_open(&p, &sc, &dc);
    /* a few marked places to check the copy by */
    for (uint64_t at = 0; at < size; at += size / 8)
        fill_pattern(p.src, at, 4096, (unsigned char)(0x40 + at / (size / 8)));

    struct copy_options o;
    copy_options_init(&o);
    o.request_size = RS;
    o.sparse = 0;               /* every byte written: every write counts */
    o.adaptive = true;
    o.memory = MEMORY;
    o.verify = verify;
    w->total = size / RS;
    w->from = w->total * from_pct / 100;
    w->to = w->total * to_pct / 100;

    struct errmsg err = { "" };
    w->job = copy_job_new(p.src->img, p.dst->img, &o, &err);
    if (!w->job)
        fail_msg("copy_job_new: %s", err.text);
    assert_int_equal(w->job->nslots, MEMORY / RS);
    p.dst->on_issue = on_issue;
    p.dst->on_issue_opaque = w;
    copy_job_start(w->job, on_done, w);
    assert_int_equal(loop_run_until(p.loop, &w->done), 0);
    assert_int_equal(w->final.state, COPY_DONE);
    assert_true(w->job->buffer_bytes_peak <= MEMORY);
    assert_true(w->job->buffer_bytes_peak > 0);
    assert_same(p.src, p.dst, 0, size);
    print_message("  writes in flight over writes %u..%u%%: mean %.1f, "
                  "max %u; %u depth changes; peak buffers %zu KiB\n",
                  from_pct, to_pct,
                  w->depth_n ? (double)w->depth_sum / (double)w->depth_n : 0,
                  w->depth_max, w->job->depth.changes,
                  w->job->buffer_bytes_peak / 1024);
    p.dst->on_issue = NULL;
    copy_job_free(w->job);
    w->job = NULL;
    pair_close(&p);
    assert_true(w->depth_n > 0);
    return (double)w->depth_sum / (double)w->depth_n;
}

/* One lane, 2 ms per write: more than a few in flight only queue (the
 * fixed pool would keep 16, the ceiling is 64). */
static void test_slow_target_settles_low(void **state)
{
    (void)state;
    struct watch w = { 0 };
    double mean = run(1024 * RS, SLOW, &w, 50, 100, false);
    assert_true(mean <= 8.0);
}

/* 10 ms per write, 256 in parallel: the depth climbs to the memory
 * ceiling (64), well above the fixed pool's 16. */
static void test_fast_far_target_settles_high(void **state)
{
    (void)state;
    struct watch w = { 0 };
    double mean = run(10240 * RS, FAR, &w, 50, 100, false);
    assert_true(mean >= 24.0);
    assert_true(w.depth_max <= MEMORY / RS);
}

/* The target turns from slow to wide and far after 512 writes:
 * the depth follows it up. */
static void test_change_slow_to_far_is_followed(void **state)
{
    (void)state;
    struct watch w = { .then = FAR };
    uint64_t size = 8192 * RS;
    w.switch_at = 512;
    double mean = run(size, SLOW, &w, 75, 100, false);
    assert_true(mean >= 24.0);
}

/* The target turns from wide and far to slow after a third of the copy:
 * the depth follows it down
 * (the rate it remembers must fade first). */
static void test_change_far_to_slow_is_followed(void **state)
{
    (void)state;
    struct watch w = { .then = SLOW };
    uint64_t size = 3072 * RS;
    w.switch_at = size / RS / 3;
    double mean = run(size, FAR, &w, 85, 100, false);
    assert_true(mean <= 10.0);
}

/* The verify pass runs within the same memory. */
static void test_verify_within_memory(void **state)
{
    (void)state;
    struct watch w = { 0 };
    run(1024 * RS, FAR, &w, 0, 100, true);
}

/* The controller alone: pinned never moves, bounds hold. */
static void test_controller_bounds(void **state)
{
    (void)state;
    struct depth_ctl c;
    depth_init_pinned(&c, 16);
    for (uint64_t t = 0; t < 1000; t++) {
        depth_sample(&c, DEPTH_WRITE, 1000000);
        assert_false(depth_cycle(&c, t * 1000000));
    }
    assert_int_equal(depth_current(&c), 16);

    /* latency grows with depth (one lane): never below floor, never above
     * ceiling, and not near the ceiling at the end */
    depth_init(&c, 2, 64, 4, 0);
    uint64_t now = 0;
    for (int i = 0; i < 20000; i++) {
        unsigned d = depth_current(&c);
        assert_true(d >= 2 && d <= 64);
        now += 1000000;                         /* one cycle per ms */
        depth_sample(&c, DEPTH_READ, 50000);
        depth_sample(&c, DEPTH_WRITE, (uint64_t)d * 1000000);
        depth_cycle(&c, now);
    }
    assert_true(depth_current(&c) <= 8);

    /* no queue whatever the depth (latency fixed, rate ∝ depth) */
    depth_init(&c, 2, 64, 4, 0);
    now = 0;
    for (int i = 0; i < 20000; i++) {
        unsigned d = depth_current(&c);
        now += 10000000 / d;                    /* d cycles per 10 ms */
        depth_sample(&c, DEPTH_READ, 50000);
        depth_sample(&c, DEPTH_WRITE, 10000000);
        depth_cycle(&c, now);
    }
    assert_int_equal(depth_current(&c), 64);
}

/* A path whose rate the depth does not change (a link at its rate: every
 * request more only waits in its queue, which inflates the latency the
 * controller takes for the base): from the engine's start (DEPTH_START)
 * startup finds no growth, so the depth does not double; afterwards it
 * only tries DEPTH_PROBE more now and then: over 20 s of such a link it
 * stays far below the ceiling (64). */
static void test_link_limited_does_not_climb(void **state)
{
    (void)state;
    struct depth_ctl c;
    depth_init(&c, 2, 64, DEPTH_START, 0);
    uint64_t now = 0;
    unsigned highest = 0, in_startup = 0;
    for (int i = 0; i < 20000; i++) {
        unsigned d = depth_current(&c);
        if (d > highest)
            highest = d;
        if (c.startup && d > in_startup)
            in_startup = d;
        now += 1000000;                         /* one cycle per ms */
        /* 2 ms per request on an idle link, plus the queue ahead of it */
        depth_sample(&c, DEPTH_READ, 2000000 + (uint64_t)d * 500000);
        depth_sample(&c, DEPTH_WRITE, 2000000 + (uint64_t)d * 500000);
        depth_cycle(&c, now);
    }
    print_message("  highest depth %u (in startup %u), at the end %u\n",
                  highest, in_startup, depth_current(&c));
    assert_int_equal(in_startup, DEPTH_START);
    assert_true(highest <= 2 * DEPTH_START);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controller_bounds),
        cmocka_unit_test(test_link_limited_does_not_climb),
        cmocka_unit_test(test_slow_target_settles_low),
        cmocka_unit_test(test_fast_far_target_settles_high),
        cmocka_unit_test(test_change_slow_to_far_is_followed),
        cmocka_unit_test(test_change_far_to_slow_is_followed),
        cmocka_unit_test(test_verify_within_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
