/* Unit tests of copier/rate.h with a fake clock: the average rate a
 * greedy writer gets, the burst bound after idling, a change of rate
 * taking effect, the fair share of a mount-wide limit, and rate values
 * (rate_parse, the job key `rate`); and of the engine's hook with fake
 * images: paced copies in every order are identical, a limit changed
 * while the job waits for the bucket takes effect, limits out of range
 * are refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "backends/loop.h"
#include "copier/jobspec.h"
#include "copier/rate.h"
#include "fake-image.h"
#include "fake-util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define MS 1000000ull
#define SEC 1000000000ull

/* A writer that asks for `req` bytes whenever it may, from `*now` until
 * `until`, sleeping as the bucket says (rounded up to whole ms, as a loop
 * timer would).  Returns the bytes granted. */
static uint64_t greedy(struct rate_bucket *b, uint64_t *now, uint64_t until,
                       uint64_t req)
{
    uint64_t got = 0;
    while (*now < until) {
        uint64_t w = rate_take(b, req, *now);
        if (w == 0)
            got += req;
        else
            *now += (w + MS - 1) / MS * MS;
    }
    return got;
}

static void check_average(uint64_t rate, uint64_t req)
{
    struct rate_bucket b;
    uint64_t now = 5 * SEC;
    rate_init(&b, rate, now);
    uint64_t got = greedy(&b, &now, now + 10 * SEC, req);
    uint64_t want = rate * 10;
    /* Exact up to one request (the first is granted on credit 0) and the
     * credit of the last timer step, which the writer has no time left to
     * use. */
    assert_true(got <= want + req);
    assert_true(got + req + rate / 1000 >= want);
}

static void test_average_rate(void **state)
{
    (void)state;
    check_average(50 * MiB, 1 * MiB);
    check_average(200 * MiB, 1 * MiB);
    check_average(200 * MiB, 64 * KiB);
    check_average(1 * MiB, 4 * MiB);       /* requests above the burst */
    check_average(RATE_MIN, 512);
}

static void test_unlimited(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_init(&b, 0, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rate_take(&b, 64 * MiB, 0), 0);
}

/* After a long idle time the credit is at most RATE_BURST_MS worth: what
 * is granted at one instant, and in any later window, stays within the
 * rate plus that burst plus one request. */
static void test_burst_bound(void **state)
{
    (void)state;
    const uint64_t rate = 100 * MiB, req = 1 * MiB;
    const uint64_t burst = rate * RATE_BURST_MS / 1000;
    struct rate_bucket b;
    uint64_t now = 0;
    rate_init(&b, rate, now);
    greedy(&b, &now, 2 * SEC, req);
    now += 60 * SEC;                        /* idle for a minute */
    uint64_t got = 0;
    while (rate_take(&b, req, now) == 0)
        got += req;
    assert_true(got <= burst + req);
    assert_true(got >= burst);              /* the credit was kept */
    uint64_t start = now;
    got += greedy(&b, &now, start + 1 * SEC, req);
    assert_true(got <= rate + burst + req);
}

/* A change applies to the next take: the wait for a debt is recomputed
 * at the new rate, and after it the new rate holds. */
static void test_change(void **state)
{
    (void)state;
    const uint64_t req = 1 * MiB;
    struct rate_bucket b;
    uint64_t now = 0;
    rate_init(&b, 10 * MiB, now);
    greedy(&b, &now, 3 * SEC, req);
    /* Faster: within 1 s the writer gets the new rate's bytes. */
    rate_set(&b, 200 * MiB, now);
    uint64_t t0 = now;
    uint64_t got = greedy(&b, &now, t0 + 1 * SEC, req);
    assert_true(got + 2 * req >= 200 * MiB);
    assert_true(got <= 200 * MiB + 200 * MiB / 10 + req);
    /* Slower: at most 100 ms of credit at the new rate carries over. */
    rate_set(&b, 5 * MiB, now);
    t0 = now;
    got = greedy(&b, &now, t0 + 4 * SEC, req);
    assert_true(got <= 4 * 5 * MiB + 5 * MiB / 10 + 2 * req);
    assert_true(got + 2 * req >= 4 * 5 * MiB);
    /* Credit saved at a high rate is capped to the new rate's burst. */
    rate_set(&b, 200 * MiB, now);
    now += 10 * SEC;
    rate_set(&b, 5 * MiB, now);
    got = 0;
    while (rate_take(&b, 64 * KiB, now) == 0)
        got += 64 * KiB;
    assert_true(got <= 5 * MiB / 10 + 64 * KiB);
    /* Unlimited at once, even in debt. */
    assert_true(rate_take(&b, req, now) > 0);
    rate_set(&b, 0, now);
    assert_int_equal(rate_take(&b, req, now), 0);
    /* And limited again from there. */
    rate_set(&b, 10 * MiB, now);
    t0 = now;
    got = greedy(&b, &now, t0 + 2 * SEC, req);
    assert_true(got <= 20 * MiB + req);
    assert_true(got + req >= 20 * MiB);
}

/* A wait is never shorter than the debt needs, so asking early achieves
 * nothing. */
static void test_wait_exact(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_init(&b, 1 * MiB, 0);
    assert_int_equal(rate_take(&b, 1 * MiB, 0), 0);
    uint64_t w = rate_take(&b, 1, 0);
    assert_true(w >= SEC - 1 && w <= SEC);
    assert_true(rate_take(&b, 1, w - 1000) > 0);
    assert_int_equal(rate_take(&b, 1, w), 0);
}

static void test_fair_share(void **state)
{
    (void)state;
    uint64_t out[4];
    const uint64_t none2[2] = { 0, 0 };
    rate_fair_share(100 * MiB, none2, 2, out);
    assert_int_equal(out[0], 50 * MiB);
    assert_int_equal(out[1], 50 * MiB);

    /* A job limited below its share leaves the rest to the other. */
    const uint64_t one_low[2] = { 20 * MiB, 0 };
    rate_fair_share(100 * MiB, one_low, 2, out);
    assert_int_equal(out[0], 20 * MiB);
    assert_int_equal(out[1], 80 * MiB);

    /* Own limits above the share do not matter. */
    const uint64_t high[2] = { 90 * MiB, 70 * MiB };
    rate_fair_share(100 * MiB, high, 2, out);
    assert_int_equal(out[0], 50 * MiB);
    assert_int_equal(out[1], 50 * MiB);

    /* Water-filling over several levels. */
    const uint64_t mixed[4] = { 10 * MiB, 0, 25 * MiB, 40 * MiB };
    rate_fair_share(100 * MiB, mixed, 4, out);
    assert_int_equal(out[0], 10 * MiB);
    assert_int_equal(out[2], 25 * MiB);
    assert_int_equal(out[1], 65 * MiB / 2);
    assert_int_equal(out[3], 65 * MiB / 2);

    /* No mount-wide limit: each its own. */
    rate_fair_share(0, mixed, 4, out);
    assert_memory_equal(out, mixed, sizeof mixed);

    /* Two jobs paced by their shares move the same bytes, their sum the
     * total rate. */
    const uint64_t both[2] = { 0, 0 };
    rate_fair_share(60 * MiB, both, 2, out);
    struct rate_bucket a, c;
    rate_init(&a, out[0], 0);
    rate_init(&c, out[1], 0);
    uint64_t ga = 0, gc = 0;
    for (uint64_t now = 0; now < 5 * SEC; now += MS) {
        while (rate_take(&a, 256 * KiB, now) == 0)
            ga += 256 * KiB;
        while (rate_take(&c, 1 * MiB, now) == 0)
            gc += 1 * MiB;
    }
    assert_true(ga + 1 * MiB >= 150 * MiB && ga <= 150 * MiB + 1 * MiB);
    assert_true(gc + 1 * MiB >= 150 * MiB && gc <= 150 * MiB + 1 * MiB);
}

static void test_parse(void **state)
{
    (void)state;
    uint64_t v = 1;
    assert_int_equal(rate_parse("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(rate_parse("50M", &v), 0);
    assert_int_equal(v, 50 * MiB);
    assert_int_equal(rate_parse("50M\n", &v), 0);
    assert_int_equal(v, 50 * MiB);
    assert_int_equal(rate_parse("200M/s", &v), 0);
    assert_int_equal(v, 200 * MiB);
    assert_int_equal(rate_parse("1G", &v), 0);
    assert_int_equal(v, 1024 * MiB);
    assert_int_equal(rate_parse("abc", &v), -EINVAL);
    assert_int_equal(rate_parse("-5M", &v), -EINVAL);
    assert_int_equal(rate_parse("5X", &v), -EINVAL);
    assert_int_equal(rate_parse("", &v), -EINVAL);
    assert_int_equal(rate_parse("1", &v), -ERANGE);
    assert_int_equal(rate_parse("2T", &v), -ERANGE);
    char buf[32];
    assert_string_equal(rate_format(buf, sizeof buf, 0), "0");
    assert_string_equal(rate_format(buf, sizeof buf, 50 * MiB), "50M");
    assert_string_equal(rate_format(buf, sizeof buf, 1536 * KiB), "1536K");
    assert_string_equal(rate_format(buf, sizeof buf, 1000), "1000");
    assert_int_equal(rate_parse(rate_format(buf, sizeof buf, 12345), &v), 0);
    assert_int_equal(v, 12345);
}

static void test_job_key(void **state)
{
    (void)state;
    struct copy_spec spec;
    struct errmsg err = { "" };
    const char *ok = "source = a\ntarget = b\nrate = 50M\n";
    assert_int_equal(copy_spec_parse(ok, strlen(ok), &spec, &err), 0);
    assert_int_equal(spec.copy.rate, 50 * MiB);
    const char *none = "source = a\ntarget = b\n";
    assert_int_equal(copy_spec_parse(none, strlen(none), &spec, &err), 0);
    assert_int_equal(spec.copy.rate, 0);
    const char *bad = "source = a\ntarget = b\nrate = fast\n";
    assert_int_equal(copy_spec_parse(bad, strlen(bad), &spec, &err), -EINVAL);
    assert_non_null(strstr(err.text, "line 3: rate: 'fast' is not a rate"));
}

/* ---- the engine's hook, with fake images on a real loop ---------------- */

struct paced {
    struct copy_job *job;
    struct loop *loop;
    bool done;
    struct copy_progress final;
    unsigned ticks;
    uint64_t new_rate;              /* set by the first tick */
    int64_t timer;
};

static void paced_done(void *opaque, const struct copy_progress *final)
{
    struct paced *p = opaque;
    p->final = *final;
    p->done = true;
}

static void paced_tick(void *opaque)
{
    struct paced *p = opaque;
    p->timer = 0;
    if (p->done)
        return;
    if (p->ticks++ == 0)
        assert_int_equal(copy_job_set_rate(p->job, p->new_rate), 0);
    /* A safety net, not a timing assertion: a job whose limit was lifted
     * that is still running after 2000 ticks (20 s) is stuck. */
    assert_true(p->ticks < 2000);
    p->timer = loop_add_timer(p->loop, 10, paced_tick, p);
}

/* Copy 4 MiB of data (and a hole) at `rate` in `order`; with new_rate
 * != rate, the first tick (10 ms) changes the limit of the running job.
 * The target must equal the source. */
static void paced_copy(enum copy_order order, uint64_t rate,
                       uint64_t new_rate)
{
    struct fake_config sc = { .size = 5 * MiB, .block_size = 512,
                              .max_delay_rounds = 2, .seed = 3 };
    struct fake_config dc = { .size = 5 * MiB, .block_size = 512,
                              .max_delay_rounds = 2, .seed = 4 };
    struct pair pr;
    pair_open(&pr, &sc, &dc);
    fill_pattern(pr.src, 0, 2 * MiB, 0x11);
    fill_pattern(pr.src, 3 * MiB, 2 * MiB, 0x22);
    fill_pattern(pr.dst, 0, 5 * MiB, 0x55);
    struct copy_options o;
    copy_options_init(&o);
    o.order = order;
    o.request_size = 256 * KiB;
    o.rate = rate;
    struct errmsg err = { "" };
    struct paced p = { .loop = pr.loop, .new_rate = new_rate };
    p.job = copy_job_new(pr.src->img, pr.dst->img, &o, &err);
    assert_non_null(p.job);
    copy_job_start(p.job, paced_done, &p);
    p.timer = loop_add_timer(pr.loop, 10, paced_tick, &p);
    assert_int_equal(loop_run_until(pr.loop, &p.done), 0);
    if (p.timer > 0)
        loop_cancel_timer(pr.loop, p.timer);
    assert_int_equal(p.final.state, COPY_DONE);
    assert_same(pr.src, pr.dst, 0, 5 * MiB);
    copy_job_free(p.job);
    pair_close(&pr);
}

static void test_engine_paced(void **state)
{
    (void)state;
    const enum copy_order orders[] = { COPY_ORDER_STRICT,
                                       COPY_ORDER_PIPELINED, COPY_ORDER_ANY };
    for (unsigned i = 0; i < 3; i++) {
        /* 4 MiB of data at 64 MiB/s: paced, and identical. */
        paced_copy(orders[i], 64 * MiB, 64 * MiB);
        /* 1 KiB/s would take over an hour: lifting the limit while the
         * job waits for the bucket lets it finish. */
        paced_copy(orders[i], RATE_MIN, 0);
        /* And raising it likewise. */
        paced_copy(orders[i], RATE_MIN, 1024 * MiB);
    }
}

static void test_engine_rate_range(void **state)
{
    (void)state;
    struct fake_config c = { .size = 1 * MiB };
    struct pair pr;
    pair_open(&pr, &c, &c);
    struct copy_options o;
    copy_options_init(&o);
    o.rate = 5;
    struct errmsg err = { "" };
    assert_null(copy_job_new(pr.src->img, pr.dst->img, &o, &err));
    assert_non_null(strstr(err.text, "rate 5 bytes/s is out of range"));
    o.rate = 0;
    struct copy_job *job = copy_job_new(pr.src->img, pr.dst->img, &o, &err);
    assert_non_null(job);
    assert_int_equal(copy_job_set_rate(job, 10), -ERANGE);
    assert_int_equal(copy_job_set_rate(job, RATE_MAX + 1), -ERANGE);
    assert_int_equal(copy_job_set_rate(job, 50 * MiB), 0);
    copy_job_free(job);
    pair_close(&pr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_average_rate),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_burst_bound),
        cmocka_unit_test(test_change),
        cmocka_unit_test(test_wait_exact),
        cmocka_unit_test(test_fair_share),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_job_key),
        cmocka_unit_test(test_engine_paced),
        cmocka_unit_test(test_engine_rate_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
