/* Unit tests of copy_job_checkpoint (copier/engine.h): the watermark a
 * checkpoint reports as durable never exceeds what the target held when
 * its flush was issued, with completions out of order and overlapping
 * checkpoints; a failed checkpoint flush fails the job; checkpoints of
 * jobs not running are refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "copier/engine.h"
#include "fake-image.h"
#include "fake-util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

#define MAX_CHECKPOINTS 4096

struct ckpt {
    struct run *run;
    uint64_t flushed_prefix;    /* target == source below it at flush issue */
    uint64_t noted;             /* watermark seen just before the call */
    uint64_t reported;
    int err;
    bool called;
};

struct run {
    struct pair *p;
    struct copy_job *job;
    bool done;
    struct copy_progress final;
    /* a checkpoint every `every` target writes (0: never) */
    unsigned every, writes;
    bool in_checkpoint;         /* inside copy_job_checkpoint */
    uint64_t issue_prefix;      /* set by the flush issue hook */
    struct ckpt ck[MAX_CHECKPOINTS];
    unsigned n, callbacks, out_of_order;
    unsigned last_called;       /* index + 1 of the previous callback */
    bool callback_after_done;
    uint64_t max_durable;
};

static void on_ckpt(void *opaque, uint64_t watermark, int err)
{
    struct ckpt *c = opaque;
    struct run *r = c->run;
    assert_false(c->called);
    c->called = true;
    c->reported = watermark;
    c->err = err;
    r->callbacks++;
    if (r->done)
        r->callback_after_done = true;
    unsigned idx = (unsigned)(c - r->ck) + 1;
    if (idx < r->last_called)
        r->out_of_order++;
    r->last_called = idx;
    if (!err && watermark > r->max_durable)
        r->max_durable = watermark;
}

static void take_checkpoint(void *opaque)
{
    struct run *r = opaque;
    if (r->done || r->n == MAX_CHECKPOINTS)
        return;
    struct ckpt *c = &r->ck[r->n];
    memset(c, 0, sizeof *c);
    c->run = r;
    struct copy_progress pr;
    copy_job_progress(r->job, &pr);
    c->noted = pr.watermark;
    r->in_checkpoint = true;
    r->issue_prefix = UINT64_MAX;
    int rc = copy_job_checkpoint(r->job, on_ckpt, c);
    r->in_checkpoint = false;
    if (rc == -EALREADY)
        return;
    assert_int_equal(rc, 0);
    assert_false(c->called);            /* never inside the call */
    assert_true(r->issue_prefix != UINT64_MAX);   /* a flush was issued */
    c->flushed_prefix = r->issue_prefix;
    r->n++;
}

/* Target issue hook: at a checkpoint's flush, how far the target already
 * equals the source (writes store their data when they complete); every
 * `every` writes, schedule a checkpoint. */
static void on_issue(void *opaque, struct fake_image *f, enum fake_op op,
                     uint64_t offset, uint64_t len)
{
    (void)offset;
    (void)len;
    struct run *r = opaque;
    if (op == FAKE_FLUSH && r->in_checkpoint) {
        int64_t d = first_diff(r->p->src, f, 0, r->p->src->img->size);
        r->issue_prefix = d < 0 ? r->p->src->img->size : (uint64_t)d;
    }
    if ((op == FAKE_WRITE || op == FAKE_WRITE_ZEROES) && r->every &&
        ++r->writes % r->every == 0)
        assert_int_equal(loop_defer(f->img->loop, take_checkpoint, r), 0);
}

static void on_done(void *opaque, const struct copy_progress *final)
{
    struct run *r = opaque;
    r->final = *final;
    r->done = true;
}

/* Source: random bytes (no zero byte, so the target prefix that equals it
 * is exactly what was written); target: zeroes. */
static void setup(struct pair *p, uint64_t size, unsigned seed,
                  unsigned delay_ms)
{
    struct fake_config sc = { .size = size, .block_size = 512,
                              .max_delay_rounds = 4, .seed = seed };
    struct fake_config dc = { .size = size, .block_size = 512,
                              .max_delay_rounds = 4,
                              .max_delay_ms = delay_ms, .seed = seed + 7 };
    pair_open(p, &sc, &dc);
    rng_seed(seed * 2654435761u + 1);
    unsigned char *buf = malloc(size);
    assert_non_null(buf);
    for (uint64_t i = 0; i < size; i++)
        buf[i] = (unsigned char)(1 + rng() % 255);
    fake_image_poke(p->src, 0, buf, size);
    free(buf);
}

static void start(struct run *r, struct pair *p, enum copy_order order,
                  unsigned every)
{
    struct copy_options o;
    copy_options_init(&o);
    o.order = order;
    o.requests = 8;
    o.request_size = 16 * KiB;
    o.sparse = 0;
    struct errmsg err = { "" };
    r->p = p;
    r->every = every;
    r->job = copy_job_new(p->src->img, p->dst->img, &o, &err);
    if (!r->job)
        fail_msg("copy_job_new: %s", err.text);
    p->dst->on_issue = on_issue;
    p->dst->on_issue_opaque = r;
    copy_job_start(r->job, on_done, r);
}

static void finish(struct run *r, struct pair *p)
{
    assert_int_equal(loop_run_until(p->loop, &r->done), 0);
    for (int i = 0; i < 20; i++)
        loop_run_once(p->loop, 1);
    assert_int_equal(p->dst->stats.other_inflight, 0);
    assert_int_equal(p->dst->stats.writes_inflight, 0);
    /* Every checkpoint called back exactly once, before the job's end. */
    assert_int_equal(r->callbacks, r->n);
    assert_false(r->callback_after_done);
    p->dst->on_issue = NULL;
    copy_job_free(r->job);
    r->job = NULL;
}

static void test_durable_watermark_never_exceeds_flushed(void **state)
{
    (void)state;
    static const enum copy_order orders[] = {
        COPY_ORDER_STRICT, COPY_ORDER_PIPELINED, COPY_ORDER_ANY };
    unsigned total_ooo = 0, positive = 0;
    for (unsigned k = 0; k < 3; k++) {
        for (unsigned seed = 1; seed <= 3; seed++) {
            struct pair p;
            setup(&p, 4 * MiB + 512 * seed, seed, 3);
            struct run *r = calloc(1, sizeof *r);
            assert_non_null(r);
            start(r, &p, orders[k], 5);
            finish(r, &p);
            assert_int_equal(r->final.state, COPY_DONE);
            assert_same(p.src, p.dst, 0, p.src->img->size);
            assert_true(r->n >= 10);
            for (unsigned i = 0; i < r->n; i++) {
                struct ckpt *c = &r->ck[i];
                assert_int_equal(c->err, 0);
                if (c->reported > c->flushed_prefix)
                    fail_msg("order %s seed %u checkpoint %u: reported "
                             "durable watermark %llu, but the target held "
                             "only %llu bytes when its flush was issued",
                             copy_order_name(orders[k]), seed, i,
                             (unsigned long long)c->reported,
                             (unsigned long long)c->flushed_prefix);
                /* The watermark at the call, not an older one. */
                assert_true(c->reported >= c->noted);
                positive += c->reported > 0;
            }
            total_ooo += r->out_of_order;
            free(r);
            pair_close(&p);
        }
    }
    assert_true(positive > 0);
    /* The fake's random delays do complete flushes out of order. */
    assert_true(total_ooo > 0);
}

static void test_flush_error_fails_job_and_reports(void **state)
{
    (void)state;
    struct pair p;
    setup(&p, 2 * MiB, 11, 1);
    p.dst->error_op = FAKE_FLUSH;
    p.dst->error_errno = -EIO;
    p.dst->error_count = 1;
    struct run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    start(r, &p, COPY_ORDER_PIPELINED, 8);
    finish(r, &p);
    assert_true(r->n >= 1);
    assert_int_equal(r->ck[0].err, -EIO);
    assert_int_equal(r->final.state, COPY_FAILED);
    assert_non_null(strstr(r->final.error, "flush on dst"));
    /* Only the first checkpoint (the failed one) can have been issued
     * before the job stopped; none after it reports success beyond it. */
    for (unsigned i = 1; i < r->n; i++)
        assert_true(r->ck[i].err != 0 || r->ck[i].reported <=
                    r->ck[i].flushed_prefix);
    free(r);
    pair_close(&p);
}

static void test_refused_when_not_running(void **state)
{
    (void)state;
    struct pair p;
    setup(&p, 1 * MiB, 21, 0);
    struct copy_options o;
    copy_options_init(&o);
    struct errmsg err = { "" };
    struct copy_job *job = copy_job_new(p.src->img, p.dst->img, &o, &err);
    assert_non_null(job);
    struct ckpt c = { 0 };
    assert_int_equal(copy_job_checkpoint(job, on_ckpt, &c), -EALREADY);
    copy_job_free(job);

    struct run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    start(r, &p, COPY_ORDER_PIPELINED, 0);
    finish(r, &p);
    assert_int_equal(r->final.state, COPY_DONE);
    /* A cancelled job: a checkpoint while it drains still calls back
     * before the end. */
    struct run *r2 = calloc(1, sizeof *r2);
    assert_non_null(r2);
    p.dst->stats.flushes = 0;
    start(r2, &p, COPY_ORDER_PIPELINED, 0);
    copy_job_cancel(r2->job);
    take_checkpoint(r2);
    assert_int_equal(r2->n, 1);
    finish(r2, &p);
    assert_int_equal(r2->final.state, COPY_CANCELLED);
    assert_true(r2->ck[0].called);
    assert_int_equal(p.dst->stats.flushes, 1);
    free(r2);
    free(r);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durable_watermark_never_exceeds_flushed),
        cmocka_unit_test(test_flush_error_fails_job_and_reports),
        cmocka_unit_test(test_refused_when_not_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
