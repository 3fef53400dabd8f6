/* Unit tests of the copy engine (copier/) against fake images that
 * complete out of order, with scripted latency and injected errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copier/engine.h"
#include "copier/engine-internal.h"
#include "fake-image.h"
#include "fake-util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

/* ---- helpers ------------------------------------------------------------ */

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Fill `f` (size bytes) with segments of random data (containing zero runs
 * of random length), HOLE and ZERO extents (zero bytes), and script the
 * matching block-status map.  Segment boundaries are multiples of `unit`. */
static void make_source_content(struct fake_image *f, uint64_t unit,
                                unsigned seed)
{
    rng_seed(0x9e3779b97f4a7c15ull ^ seed);
    uint64_t size = f->img->size;
    size_t cap = 16, n = 0;
    struct extent *map = malloc(cap * sizeof *map);
    unsigned char *buf = malloc(512 * KiB);
    for (uint64_t at = 0; at < size;) {
        uint64_t len = round_up(1 + rng() % (400 * KiB), unit);
        if (len > size - at)
            len = size - at;
        unsigned kind = rng() % 4;      /* 0,1: data, 2: hole, 3: zero */
        enum extent_type t = kind < 2 ? EXTENT_DATA
                           : kind == 2 ? EXTENT_HOLE : EXTENT_ZERO;
        if (t == EXTENT_DATA) {
            for (uint64_t i = 0; i < len; i++)
                buf[i] = (unsigned char)(1 + rng() % 255);
            /* a few zero runs inside the data */
            for (int k = (int)(rng() % 4); k > 0; k--) {
                uint64_t zo = rng() % len;
                uint64_t zl = rng() % (40 * KiB);
                if (zl > len - zo)
                    zl = len - zo;
                memset(buf + zo, 0, zl);
            }
            fake_image_poke(f, at, buf, len);
        }
        if (n == cap) {
            cap *= 2;
            map = realloc(map, cap * sizeof *map);
        }
        map[n++] = (struct extent){ at, len, t };
        at += len;
    }
    assert_int_equal(fake_image_set_map(f, map, n), 0);
    free(map);
    free(buf);
}

struct run {
    struct copy_job *job;
    int done_calls;
    bool done;
    bool inside_start;
    bool done_inside_start;
    struct copy_progress final;
    /* monotonic checks from the fake's issue hook */
    uint64_t last_watermark, last_done;
    bool regressed;
    /* cancel after this many target ops (0: never) */
    unsigned cancel_after;
    unsigned target_ops;
    /* cancel when the target flush is issued */
    bool cancel_on_flush;
    /* lowest offset of any read/write issued */
    uint64_t min_io_offset;
    /* block status reach beyond the watermark */
    uint64_t max_ahead;
};

static void on_done(void *opaque, const struct copy_progress *final)
{
    struct run *r = opaque;
    r->done_calls++;
    r->done = true;
    if (r->inside_start)
        r->done_inside_start = true;
    r->final = *final;
}

static void on_issue(void *opaque, struct fake_image *f, enum fake_op op,
                     uint64_t offset, uint64_t len)
{
    (void)f;
    struct run *r = opaque;
    if (!r->job)
        return;
    struct copy_progress p;
    copy_job_progress(r->job, &p);
    if (p.watermark < r->last_watermark || p.done < r->last_done)
        r->regressed = true;
    r->last_watermark = p.watermark;
    r->last_done = p.done;
    if (op == FAKE_BLOCK_STATUS && offset + len - p.watermark > r->max_ahead)
        r->max_ahead = offset + len - p.watermark;
    if (op == FAKE_READ || op == FAKE_WRITE || op == FAKE_WRITE_ZEROES)
        if (offset < r->min_io_offset)
            r->min_io_offset = offset;
    if (op == FAKE_FLUSH && r->cancel_on_flush)
        copy_job_cancel(r->job);
    if (op == FAKE_WRITE || op == FAKE_WRITE_ZEROES) {
        r->target_ops++;
        if (r->cancel_after && r->target_ops == r->cancel_after)
            copy_job_cancel(r->job);
    }
}

/* Run a job to completion; checks the done-callback contract. */
static void run_job(struct fake_image *src, struct fake_image *dst,
                    const struct copy_options *o, struct run *r)
{
    struct errmsg err = { "" };
    r->min_io_offset = UINT64_MAX;
    r->job = copy_job_new(src->img, dst->img, o, &err);
    if (!r->job)
        fail_msg("copy_job_new: %s", err.text);
    src->on_issue = on_issue;
    src->on_issue_opaque = r;
    dst->on_issue = on_issue;
    dst->on_issue_opaque = r;
    r->inside_start = true;
    copy_job_start(r->job, on_done, r);
    r->inside_start = false;
    assert_false(r->done_inside_start);
    assert_int_equal(loop_run_until(src->img->loop, &r->done), 0);
    /* Nothing may be left in flight, and done never comes twice. */
    for (int i = 0; i < 20; i++)
        loop_run_once(src->img->loop, 1);
    assert_int_equal(r->done_calls, 1);
    assert_int_equal(src->stats.reads_inflight, 0);
    assert_int_equal(dst->stats.writes_inflight, 0);
    assert_int_equal(src->stats.other_inflight + dst->stats.other_inflight, 0);
    assert_int_equal(src->stats.misaligned + dst->stats.misaligned, 0);
    assert_int_equal(src->stats.too_long + dst->stats.too_long, 0);
    assert_false(r->regressed);
    src->on_issue = dst->on_issue = NULL;
    copy_job_free(r->job);
    r->job = NULL;
}

/* ---- data correctness ---------------------------------------------------- */

struct geometry {
    uint32_t src_bs, dst_bs;
    uint64_t size;
    size_t src_max, dst_max;
    size_t request_size;
    unsigned requests;
    uint64_t sparse;
};

static const struct geometry geometries[] = {
    /* src 512 → dst 4096, size not a multiple of request or dst block */
    { 512, 4096, 9 * MiB + 3 * 512, 0, 0, 1 * MiB, 8, 4096 },
    /* byte-granular source, odd size, small max_request both sides */
    { 1, 512, 5 * MiB + 12345, 96 * KiB, 200 * KiB, 256 * KiB, 16, 512 },
    /* 4 KiB source to byte-granular target, sparse 64 KiB */
    { 4096, 1, 6 * MiB + 4096, 0, 0, 512 * KiB, 4, 64 * KiB },
    /* one request only */
    { 512, 512, 3 * MiB + 512, 0, 0, 64 * KiB, 1, 4096 },
};

static void copy_and_check(enum copy_order order, const struct geometry *g,
                           unsigned seed, bool target_zero)
{
    struct fake_config sc = { .size = g->size, .block_size = g->src_bs,
                              .max_request = g->src_max,
                              .max_delay_rounds = 6, .seed = seed };
    uint64_t dsize = round_up(g->size, g->dst_bs) + 8192;
    struct fake_config dc = { .size = dsize, .block_size = g->dst_bs,
                              .max_request = g->dst_max,
                              .max_delay_rounds = 6, .seed = seed + 1,
                              .reads_as_zero = target_zero };
    struct pair p;
    pair_open(&p, &sc, &dc);
    make_source_content(p.src, g->src_bs, seed);
    if (!target_zero)
        fill_pattern(p.dst, 0, dsize, 0xAA);    /* stale target data */

    struct copy_options o;
    copy_options_init(&o);
    o.order = order;
    o.requests = g->requests;
    o.request_size = g->request_size;
    o.sparse = g->sparse;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    if (r.final.state != COPY_DONE)
        fail_msg("order %s: %s", copy_order_name(order), r.final.error);
    assert_int_equal(r.final.done, g->size);
    assert_int_equal(r.final.watermark, g->size);
    assert_int_equal(r.final.total, g->size);
    assert_same(p.src, p.dst, 0, g->size);
    assert_int_equal(p.dst->stats.flushes, 1);
    if (target_zero) {
        assert_int_equal(p.dst->stats.zero_ops, 0);
        /* padding of a short last block is zero, the rest untouched */
        assert_true(is_zero_range(p.dst, g->size, dsize - g->size));
    } else
        assert_true(p.dst->stats.zero_ops > 0);
    unsigned per_request = g->src_max ? (unsigned)((g->request_size +
        g->src_max - 1) / g->src_max) : 1;
    assert_true(p.src->stats.max_reads_inflight <= g->requests * per_request);
    pair_close(&p);
}

static void test_copy_correct_every_order(void **state)
{
    (void)state;
    enum copy_order orders[] = { COPY_ORDER_STRICT, COPY_ORDER_PIPELINED,
                                 COPY_ORDER_ANY };
    for (unsigned o = 0; o < 3; o++)
        for (unsigned g = 0; g < sizeof geometries / sizeof *geometries; g++)
            for (unsigned tz = 0; tz < 2; tz++)
                copy_and_check(orders[o], &geometries[g], 11 * g + o + 1,
                               tz);
}

static void test_few_extents_per_answer_and_no_block_status(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        struct fake_config sc = { .size = 4 * MiB + 4096, .block_size = 512,
                                  .max_delay_rounds = 3, .seed = 5,
                                  .max_extents_per_reply = 1,
                                  .no_block_status = variant == 1 };
        struct fake_config dc = { .size = 4 * MiB + 4096, .block_size = 4096,
                                  .max_delay_rounds = 3, .seed = 6 };
        struct pair p;
        pair_open(&p, &sc, &dc);
        make_source_content(p.src, 512, 77);
        fill_pattern(p.dst, 0, dc.size, 0x55);
        struct copy_options o;
        copy_options_init(&o);
        o.request_size = 256 * KiB;
        struct run r = { 0 };
        run_job(p.src, p.dst, &o, &r);
        assert_int_equal(r.final.state, COPY_DONE);
        assert_same(p.src, p.dst, 0, sc.size);
        if (variant == 0)
            assert_true(p.src->stats.block_status_calls > 1);
        else
            assert_int_equal(p.src->stats.block_status_calls, 0);
        pair_close(&p);
    }
}

/* ---- ordering ------------------------------------------------------------- */

static void assert_log_in_offset_order(const struct fake_stats *s)
{
    for (size_t i = 1; i < s->log_len; i++)
        if (s->log[i].offset < s->log[i - 1].offset + s->log[i - 1].length)
            fail_msg("write %zu at %llu issued after write at %llu+%llu", i,
                     (unsigned long long)s->log[i].offset,
                     (unsigned long long)s->log[i - 1].offset,
                     (unsigned long long)s->log[i - 1].length);
}

static void order_run(enum copy_order order, struct fake_stats *out_dst,
                      bool *ordered)
{
    struct fake_config sc = { .size = 8 * MiB, .block_size = 512,
                              .max_delay_rounds = 12, .seed = 3 };
    struct fake_config dc = { .size = 8 * MiB, .block_size = 512,
                              .max_delay_rounds = 12, .seed = 4 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    make_source_content(p.src, 512, 99);
    struct copy_options o;
    copy_options_init(&o);
    o.order = order;
    o.request_size = 128 * KiB;
    o.requests = 16;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_same(p.src, p.dst, 0, sc.size);
    *out_dst = p.dst->stats;
    *ordered = true;
    for (size_t i = 1; i < p.dst->stats.log_len; i++)
        if (p.dst->stats.log[i].offset < p.dst->stats.log[i - 1].offset)
            *ordered = false;
    if (order != COPY_ORDER_ANY)
        assert_log_in_offset_order(&p.dst->stats);
    out_dst->log = NULL;
    pair_close(&p);
}

static void test_strict_one_write_in_flight_in_order(void **state)
{
    (void)state;
    struct fake_stats s;
    bool ordered;
    order_run(COPY_ORDER_STRICT, &s, &ordered);
    assert_int_equal(s.max_writes_inflight, 1);
    assert_true(s.log_len > 10);
}

static void test_pipelined_many_writes_in_flight_in_order(void **state)
{
    (void)state;
    struct fake_stats s;
    bool ordered;
    order_run(COPY_ORDER_PIPELINED, &s, &ordered);
    assert_true(ordered);
    assert_true(s.max_writes_inflight > 1);
}

/* Source reads complete out of order (random delays): with
 * COPY_ORDER_ANY a range is written as soon as it is read, so the writes
 * are issued out of offset order, many at a time. */
static void test_any_many_writes_in_flight(void **state)
{
    (void)state;
    struct fake_stats s;
    bool ordered;
    order_run(COPY_ORDER_ANY, &s, &ordered);
    assert_false(ordered);
    assert_true(s.max_writes_inflight > 1);
}

/* The read at offset 0 is slow; everything else is immediate. */
static int slow_first_read(void *opaque, enum fake_op op, uint64_t offset,
                           uint64_t len)
{
    (void)opaque;
    (void)len;
    return op == FAKE_READ && offset == 0 ? 40 : 0;
}

static void first_write_with_slow_first_read(enum copy_order order,
                                             uint64_t *first_offset,
                                             unsigned *max_inflight)
{
    struct fake_config sc = { .size = 2 * MiB, .block_size = 512,
                              .latency = slow_first_read };
    struct fake_config dc = { .size = 2 * MiB, .block_size = 512,
                              .max_delay_rounds = 4, .seed = 9 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    fill_pattern(p.src, 0, 2 * MiB, 0x77);
    struct copy_options o;
    copy_options_init(&o);
    o.order = order;
    o.request_size = 64 * KiB;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_same(p.src, p.dst, 0, 2 * MiB);
    *first_offset = p.dst->stats.log[0].offset;
    *max_inflight = p.dst->stats.max_writes_inflight;
    pair_close(&p);
}

static void test_any_writes_before_earlier_reads_finish(void **state)
{
    (void)state;
    uint64_t first;
    unsigned inflight;
    first_write_with_slow_first_read(COPY_ORDER_ANY, &first, &inflight);
    assert_true(first > 0);             /* did not wait for offset 0 */
    first_write_with_slow_first_read(COPY_ORDER_PIPELINED, &first, &inflight);
    assert_int_equal(first, 0);         /* waited for offset 0 */
    assert_true(inflight > 1);
    first_write_with_slow_first_read(COPY_ORDER_STRICT, &first, &inflight);
    assert_int_equal(first, 0);
    assert_int_equal(inflight, 1);
}

/* ---- errors, watermark, cancel, resume ------------------------------------ */

static void test_write_error_keeps_valid_watermark(void **state)
{
    (void)state;
    for (enum copy_order order = COPY_ORDER_STRICT; order <= COPY_ORDER_ANY;
         order++) {
        struct fake_config sc = { .size = 16 * MiB, .block_size = 512,
                                  .max_delay_rounds = 10, .seed = 21 };
        struct fake_config dc = { .size = 16 * MiB, .block_size = 512,
                                  .max_delay_rounds = 10, .seed = 22 };
        struct pair p;
        pair_open(&p, &sc, &dc);
        fill_pattern(p.src, 0, 16 * MiB, 0x3c);
        fill_pattern(p.dst, 0, 16 * MiB, 0xAA);
        const uint64_t bad = 9 * MiB + 777;
        p.dst->error_op = FAKE_WRITE;
        p.dst->error_offset = bad;
        p.dst->error_count = 1;
        p.dst->error_detail = "fake: injected";
        struct copy_options o;
        copy_options_init(&o);
        o.order = order;
        o.request_size = 256 * KiB;
        struct run r = { 0 };
        run_job(p.src, p.dst, &o, &r);
        assert_int_equal(r.final.state, COPY_FAILED);
        assert_int_equal(r.final.err, -EIO);
        char want[128];
        snprintf(want, sizeof want, "write on dst at offset %llu: "
                 "Input/output error: fake: injected",
                 (unsigned long long)(bad - bad % (256 * KiB)));
        assert_string_equal(r.final.error, want);
        assert_true(r.final.watermark <= bad);
        assert_same(p.src, p.dst, 0, r.final.watermark);
        assert_int_equal(p.dst->stats.flushes, 0);
        pair_close(&p);
    }
}

static void test_read_error_names_image_and_offset(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 8 * MiB, .block_size = 512,
                              .max_delay_rounds = 4, .seed = 1 };
    struct fake_config dc = { .size = 8 * MiB, .block_size = 512 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    fill_pattern(p.src, 0, 8 * MiB, 0x42);
    p.src->error_op = FAKE_READ;
    p.src->error_offset = 3 * MiB + 5;
    p.src->error_count = 1;
    p.src->error_errno = -ENXIO;
    struct copy_options o;
    copy_options_init(&o);
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_FAILED);
    assert_int_equal(r.final.err, -ENXIO);
    assert_string_equal(r.final.error,
                        "read on src at offset 3145728: "
                        "No such device or address");
    assert_true(r.final.watermark <= 3 * MiB);
    assert_same(p.src, p.dst, 0, r.final.watermark);
    pair_close(&p);
}

static void test_block_status_and_flush_errors(void **state)
{
    (void)state;
    for (int which = 0; which < 2; which++) {
        struct fake_config sc = { .size = 2 * MiB, .block_size = 512 };
        struct fake_config dc = { .size = 2 * MiB, .block_size = 512 };
        struct pair p;
        pair_open(&p, &sc, &dc);
        fill_pattern(p.src, 0, 2 * MiB, 0x42);
        struct fake_image *f = which == 0 ? p.src : p.dst;
        f->error_op = which == 0 ? FAKE_BLOCK_STATUS : FAKE_FLUSH;
        f->error_offset = 0;
        f->error_count = 1;
        f->error_detail = "scripted";
        struct copy_options o;
        copy_options_init(&o);
        struct run r = { 0 };
        run_job(p.src, p.dst, &o, &r);
        assert_int_equal(r.final.state, COPY_FAILED);
        assert_string_equal(r.final.error, which == 0
            ? "block status on src at offset 0: Input/output error: scripted"
            : "flush on dst: Input/output error: scripted");
        if (which == 0)
            assert_int_equal(p.dst->stats.writes, 0);
        else
            assert_int_equal(r.final.watermark, 2 * MiB);
        pair_close(&p);
    }
}

static void test_cancel_mid_copy(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 32 * MiB, .block_size = 512,
                              .max_delay_rounds = 8, .seed = 31 };
    struct fake_config dc = { .size = 32 * MiB, .block_size = 512,
                              .max_delay_rounds = 8, .seed = 32 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    fill_pattern(p.src, 0, 32 * MiB, 0x5d);
    fill_pattern(p.dst, 0, 32 * MiB, 0xAA);
    struct copy_options o;
    copy_options_init(&o);
    o.request_size = 256 * KiB;
    struct run r = { .cancel_after = 20 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_CANCELLED);
    assert_int_equal(r.final.err, -ECANCELED);
    assert_true(r.final.watermark < 32 * MiB);
    assert_true(r.final.watermark >= 256 * KiB);   /* some writes landed */
    assert_same(p.src, p.dst, 0, r.final.watermark);
    /* Stopped issuing: far fewer writes than the whole image needs. */
    assert_true(p.dst->stats.writes < 32 * MiB / (256 * KiB));
    assert_int_equal(p.dst->stats.flushes, 0);
    pair_close(&p);
}

static void test_cancel_before_start(void **state)
{
    (void)state;
    struct fake_config c = { .size = 1 * MiB, .block_size = 512 };
    struct pair p;
    pair_open(&p, &c, &c);
    struct copy_options o;
    copy_options_init(&o);
    struct errmsg err;
    struct run r = { 0 };
    r.job = copy_job_new(p.src->img, p.dst->img, &o, &err);
    assert_non_null(r.job);
    copy_job_cancel(r.job);
    r.inside_start = true;
    copy_job_start(r.job, on_done, &r);
    r.inside_start = false;
    assert_false(r.done);
    assert_int_equal(loop_run_until(p.loop, &r.done), 0);
    assert_int_equal(r.final.state, COPY_CANCELLED);
    assert_int_equal(p.src->stats.reads + p.dst->stats.writes, 0);
    copy_job_free(r.job);
    pair_close(&p);
}

static void test_cancel_while_flushing_skips_verify(void **state)
{
    (void)state;
    struct fake_config c = { .size = 2 * MiB, .block_size = 512,
                             .max_delay_rounds = 3, .seed = 33 };
    struct pair p;
    pair_open(&p, &c, &c);
    fill_pattern(p.src, 0, 2 * MiB, 0x61);
    struct copy_options o;
    copy_options_init(&o);
    o.verify = true;
    o.request_size = 256 * KiB;
    struct run r = { .cancel_on_flush = true };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_CANCELLED);
    assert_int_equal(r.final.watermark, 2 * MiB);
    assert_int_equal(r.final.verified, 0);
    assert_int_equal(p.dst->stats.flushes, 1);
    assert_int_equal(p.dst->stats.reads, 0);    /* verify never started */
    pair_close(&p);
}

static void test_resume_from_watermark(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 12 * MiB + 4096, .block_size = 4096,
                              .max_delay_rounds = 6, .seed = 41 };
    struct fake_config dc = { .size = 12 * MiB + 4096, .block_size = 4096,
                              .max_delay_rounds = 6, .seed = 42 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    make_source_content(p.src, 4096, 4242);
    fill_pattern(p.dst, 0, dc.size, 0xAA);
    p.dst->error_op = FAKE_WRITE;
    p.dst->error_offset = 7 * MiB;
    p.dst->error_count = 1000;
    p.dst->error_errno = -ENOSPC;
    /* make sure the failing offset is data */
    fill_pattern(p.src, 7 * MiB, 4096, 0x99);
    struct extent m[] = { { 0, sc.size, EXTENT_DATA } };
    fake_image_set_map(p.src, m, 1);

    struct copy_options o;
    copy_options_init(&o);
    o.request_size = 512 * KiB;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_FAILED);
    uint64_t wm = r.final.watermark;
    assert_true(wm <= 7 * MiB);
    assert_true(wm > 0);
    assert_int_equal(wm % 4096, 0);

    p.dst->error_count = 0;
    p.src->stats.bytes_read = 0;
    o.start_offset = wm;
    struct run r2 = { 0 };
    run_job(p.src, p.dst, &o, &r2);
    assert_int_equal(r2.final.state, COPY_DONE);
    assert_true(r2.min_io_offset >= wm);
    assert_true(p.src->stats.bytes_read <= sc.size - wm);
    assert_int_equal(r2.final.watermark, sc.size);
    assert_int_equal(r2.final.done, sc.size);
    assert_same(p.src, p.dst, 0, sc.size);
    pair_close(&p);
}

/* ---- validation ------------------------------------------------------------ */

static void test_target_too_small_refused(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 10 * MiB, .block_size = 512 };
    struct fake_config dc = { .size = 10 * MiB - 512, .block_size = 512 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    struct copy_options o;
    copy_options_init(&o);
    struct errmsg err = { "" };
    assert_null(copy_job_new(p.src->img, p.dst->img, &o, &err));
    assert_string_equal(err.text, "target too small: dst is 10485248 bytes, "
                                  "source is 10485760 bytes");
    /* copy_run refuses the same way and touches nothing */
    assert_int_equal(copy_run(p.src->img, p.dst->img, &o, NULL, NULL, 0,
                              NULL, &err), -ENOSPC);
    for (int i = 0; i < 5; i++)
        loop_run_once(p.loop, 0);
    assert_int_equal(p.dst->stats.writes + p.dst->stats.zero_ops +
                     p.dst->stats.flushes + p.src->stats.reads +
                     p.src->stats.block_status_calls, 0);
    pair_close(&p);
}

static void test_invalid_options_refused(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 10 * MiB, .block_size = 512 };
    struct fake_config dc = { .size = 10 * MiB, .block_size = 4096 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    struct copy_options o;
    struct errmsg err;
#define REFUSED(stmt, needle) do {                                         \
        copy_options_init(&o);                                             \
        stmt;                                                              \
        errmsg_clear(&err);                                                \
        assert_null(copy_job_new(p.src->img, p.dst->img, &o, &err));      \
        if (!strstr(err.text, needle))                                     \
            fail_msg("'%s' does not mention '%s'", err.text, needle);      \
    } while (0)
    REFUSED(o.requests = 0, "requests");
    REFUSED(o.requests = COPY_MAX_REQUESTS + 1, "requests");
    REFUSED(o.request_size = 1024, "multiple");
    REFUSED(o.request_size = COPY_MAX_REQUEST_SIZE + 4096, "request-size");
    REFUSED(o.request_size = 0, "request-size");
    REFUSED(o.sparse = 512, "sparse");
    REFUSED(o.start_offset = 512, "aligned");
    REFUSED(o.start_offset = 11 * MiB, "past");
    p.dst->img->read_only = true;
    REFUSED((void)0, "read-only");
    p.dst->img->read_only = false;
    struct loop *other = loop_new();
    struct fake_image *far = fake_image_new(other, "far", &dc);
    copy_options_init(&o);
    assert_null(copy_job_new(p.src->img, far->img, &o, &err));
    assert_non_null(strstr(err.text, "loop"));
    fake_image_close(far);
    loop_free(other);
    /* sparse below one sector, on a byte-granular target */
    struct fake_config bc = { .size = 10 * MiB, .block_size = 1 };
    struct fake_image *bytes = fake_image_new(p.loop, "bytes", &bc);
    copy_options_init(&o);
    o.sparse = 100;
    assert_null(copy_job_new(p.src->img, bytes->img, &o, &err));
    assert_non_null(strstr(err.text, "multiple of 512"));
    fake_image_close(bytes);
    /* and valid ones pass */
    copy_options_init(&o);
    o.start_offset = 8192;
    struct copy_job *job = copy_job_new(p.src->img, p.dst->img, &o, &err);
    assert_non_null(job);
    copy_job_free(job);
    assert_int_equal(p.dst->stats.writes + p.src->stats.reads, 0);
    pair_close(&p);
}

/* ---- memory bound & window ----------------------------------------------- */

static void test_memory_bound_on_1tib_sparse_image(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 1 * TiB, .block_size = 512,
                              .max_delay_rounds = 3, .seed = 51 };
    struct fake_config dc = { .size = 1 * TiB, .block_size = 4096,
                              .reads_as_zero = true, .max_delay_rounds = 3,
                              .seed = 52 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    uint64_t data_at[] = { 0, 512 * GiB + 4096, 1 * TiB - 1 * MiB };
    struct extent map[7];
    size_t n = 0;
    uint64_t at = 0;
    for (int i = 0; i < 3; i++) {
        if (data_at[i] > at)
            map[n++] = (struct extent){ at, data_at[i] - at, EXTENT_HOLE };
        map[n++] = (struct extent){ data_at[i], 1 * MiB, EXTENT_DATA };
        fill_pattern(p.src, data_at[i], 1 * MiB, (unsigned char)(0x10 + i));
        at = data_at[i] + 1 * MiB;
    }
    assert_int_equal(fake_image_set_map(p.src, map, n), 0);

    struct copy_options o;
    copy_options_init(&o);
    o.requests = 8;
    o.request_size = 256 * KiB;
    struct errmsg err;
    struct copy_job *probe = copy_job_new(p.src->img, p.dst->img, &o, &err);
    assert_non_null(probe);
    /* the pool, whatever the image size */
    assert_int_equal(probe->buffer_bytes, 8 * 256 * KiB);
    copy_job_free(probe);

    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_int_equal(r.final.watermark, 1 * TiB);
    for (int i = 0; i < 3; i++)
        assert_same(p.src, p.dst, data_at[i], 1 * MiB);
    assert_int_equal(p.dst->stats.zero_ops, 0);       /* holes skipped */
    assert_int_equal(p.dst->stats.bytes_written, 3 * MiB);
    assert_true(fake_image_pages(p.dst) <= 3 * 17);
    assert_int_equal(p.src->stats.bytes_read, 3 * MiB);
    /* block status never ran further ahead than the bounded window */
    uint64_t window = (uint64_t)WINDOW_POOL_FACTOR * 8 * 256 * KiB;
    uint64_t zcap = (uint64_t)ZERO_REQUEST_FACTOR * 256 * KiB;
    if (window < zcap)
        window = zcap;
    assert_true(r.max_ahead > 0);
    assert_true(r.max_ahead <= window);
    assert_true(p.src->stats.max_reads_inflight <= 8);
    pair_close(&p);
}

static void test_zero_requests_capped_and_unmap(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 4 * GiB, .block_size = 512 };
    struct fake_config dc = { .size = 4 * GiB, .block_size = 512 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    struct extent map[] = { { 0, 4 * GiB, EXTENT_HOLE } };
    fake_image_set_map(p.src, map, 1);
    struct copy_options o;
    copy_options_init(&o);
    o.request_size = 1 * MiB;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_int_equal(p.src->stats.reads, 0);
    assert_int_equal(p.dst->stats.writes, 0);
    assert_int_equal(p.dst->stats.bytes_zeroed, 4 * GiB);
    for (size_t i = 0; i < p.dst->stats.log_len; i++) {
        assert_true(p.dst->stats.log[i].length <= 64 * MiB);
        assert_int_equal(p.dst->stats.log[i].flags, IMAGE_ZERO_MAY_UNMAP);
    }
    assert_true(p.dst->stats.log_len >= 4 * GiB / (64 * MiB));
    pair_close(&p);
}

/* ---- sparse options -------------------------------------------------------- */

static void test_sparse_zero_writes_every_byte(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 6 * MiB + 512, .block_size = 512,
                              .max_delay_rounds = 4, .seed = 61 };
    struct fake_config dc = { .size = 6 * MiB + 512, .block_size = 512,
                              .reads_as_zero = true, .max_delay_rounds = 4,
                              .seed = 62 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    make_source_content(p.src, 512, 6161);
    struct copy_options o;
    copy_options_init(&o);
    o.sparse = 0;
    o.target_is_zero = true;
    o.request_size = 256 * KiB;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_same(p.src, p.dst, 0, sc.size);
    /* The issued target writes tile the whole image: holes and zero
     * extents are written as data too, and never read. */
    const struct fake_stats *s = &p.dst->stats;
    uint64_t at = 0;
    for (size_t i = 0; i < s->log_len; i++) {
        assert_int_equal(s->log[i].op, FAKE_WRITE);
        assert_int_equal(s->log[i].offset, at);
        at += s->log[i].length;
    }
    assert_int_equal(at, sc.size);
    assert_int_equal(s->bytes_written, sc.size);
    assert_int_equal(s->zero_ops, 0);
    assert_true(p.src->stats.bytes_read < sc.size);
    pair_close(&p);
}

/* A source that answers "zeroes" for reads of all-zero ranges without
 * filling the buffer (image_read_or_zeroes, as NFS does): the target gets
 * zeroes there, never a buffer's stale bytes — whole requests that read as
 * zeroes become zero writes, and the zero parts of a request read in
 * several pieces are zeroed for it.  Two buffers only, so every buffer
 * held data before. */
static void test_reads_answered_as_zeroes(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        uint64_t size = 8 * MiB;
        struct fake_config sc = { .size = size, .block_size = 512,
                                  .no_block_status = true,
                                  .answers_zeroes = true,
                                  .max_request = variant ? 64 * KiB : 0,
                                  .max_delay_rounds = 3, .seed = 71 };
        struct fake_config dc = { .size = size, .block_size = 512,
                                  .max_delay_rounds = 3, .seed = 72 };
        struct pair p;
        pair_open(&p, &sc, &dc);
        /* 1 MiB of data, then 96 KiB of data, 160 KiB of zeroes, over and
         * over: requests of
         * 256 KiB (variant 1: read as 4 pieces) hold both; requests of
         * 64 KiB (variant 0) are either */
        fill_pattern(p.src, 0, MiB, 0x11);      /* both buffers hold data */
        for (uint64_t at = MiB; at < size; at += 256 * KiB)
            fill_pattern(p.src, at, 96 * KiB, (unsigned char)(1 + at / MiB));
        fill_pattern(p.dst, 0, size, 0xAA);     /* stale target data */
        struct copy_options o;
        copy_options_init(&o);
        o.request_size = variant ? 256 * KiB : 64 * KiB;
        o.requests = 2;
        struct run r = { 0 };
        run_job(p.src, p.dst, &o, &r);
        assert_int_equal(r.final.state, COPY_DONE);
        assert_same(p.src, p.dst, 0, size);
        assert_true(p.src->stats.zero_answers > 0);
        if (variant == 0)
            assert_true(p.dst->stats.zero_ops > 0);
        pair_close(&p);
    }
}

static void test_target_is_zero_skips_holes(void **state)
{
    (void)state;
    for (int tz = 0; tz < 2; tz++) {
        struct fake_config sc = { .size = 6 * MiB, .block_size = 512,
                                  .max_delay_rounds = 4, .seed = 71 };
        struct fake_config dc = { .size = 6 * MiB, .block_size = 512 };
        struct pair p;
        pair_open(&p, &sc, &dc);
        make_source_content(p.src, 512, 7171);
        struct copy_options o;
        copy_options_init(&o);
        o.target_is_zero = tz;
        struct run r = { 0 };
        run_job(p.src, p.dst, &o, &r);
        assert_int_equal(r.final.state, COPY_DONE);
        assert_same(p.src, p.dst, 0, sc.size);
        if (tz) {
            assert_int_equal(p.dst->stats.zero_ops, 0);
            assert_true(p.dst->stats.bytes_written < sc.size);
        } else {
            assert_true(p.dst->stats.zero_ops > 0);
            assert_int_equal(p.dst->stats.bytes_written +
                             p.dst->stats.bytes_zeroed, sc.size);
        }
        assert_int_equal(r.final.done, sc.size);
        pair_close(&p);
    }
}

/* ---- keep-backing: skip_backing -------------------------------------------- */

/* A byte-granular source layer with DATA (random bytes, some zero runs),
 * ZERO, HOLE and BACKING extents at odd boundaries; the target is
 * pre-filled with 0xBB, standing for what its backing file shows.  With
 * skip_backing, BACKING ranges must be neither read nor written (target
 * keeps 0xBB), ZERO/HOLE ranges become zeroes, DATA is copied; without
 * it, BACKING ranges are zeroed like holes. */
static void skip_backing_case(enum copy_order order, uint64_t sparse,
                              bool skip, unsigned seed)
{
    const uint64_t size = 8 * MiB + 777;
    struct fake_config sc = { .size = size, .block_size = 1,
                              .max_extents_per_reply = 5,
                              .max_delay_rounds = 5, .seed = seed };
    struct fake_config dc = { .size = size, .block_size = 1,
                              .max_delay_rounds = 5, .seed = seed + 1 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    fill_pattern(p.dst, 0, size, 0xBB);
    rng_seed(0x51ab5eedull ^ seed);
    struct extent map[256];
    size_t n = 0;
    uint64_t data_bytes = 0;
    unsigned char *buf = malloc(300 * KiB);
    for (uint64_t at = 0; at < size && n < 256;) {
        uint64_t len = 1 + rng() % (300 * KiB);
        if (len > size - at || n == 255)
            len = size - at;
        /* Cycle through the kinds so every one occurs, BACKING most. */
        static const enum extent_type kinds[] = {
            EXTENT_DATA, EXTENT_BACKING, EXTENT_ZERO, EXTENT_BACKING,
            EXTENT_HOLE, EXTENT_DATA, EXTENT_BACKING };
        enum extent_type t = kinds[n % 7];
        /* The source layer's bytes under BACKING/ZERO/HOLE read as zero
         * (a qcow2 layer opened with no_backing). */
        if (t == EXTENT_DATA) {
            for (uint64_t i = 0; i < len; i++)
                buf[i] = (unsigned char)(1 + rng() % 255);
            if (len > 8 * KiB)
                memset(buf + len / 3, 0, 8 * KiB);  /* a zero run */
            fake_image_poke(p.src, at, buf, len);
            data_bytes += len;
        }
        map[n++] = (struct extent){ at, len, t };
        at += len;
    }
    free(buf);
    assert_int_equal(fake_image_set_map(p.src, map, n), 0);

    struct copy_options o;
    copy_options_init(&o);
    o.order = order;
    o.sparse = sparse;
    o.request_size = 256 * KiB;
    o.requests = 8;
    o.skip_backing = skip;
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    if (r.final.state != COPY_DONE)
        fail_msg("order %s sparse %llu: %s", copy_order_name(order),
                 (unsigned long long)sparse, r.final.error);
    assert_int_equal(r.final.done, size);
    assert_int_equal(r.final.watermark, size);

    unsigned char *want = malloc(300 * KiB), *got = malloc(300 * KiB);
    uint64_t backing_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct extent *e = &map[i];
        fake_image_peek(p.dst, e->offset, got, e->length);
        if (e->type == EXTENT_DATA)
            fake_image_peek(p.src, e->offset, want, e->length);
        else if (e->type == EXTENT_BACKING && skip)
            memset(want, 0xBB, e->length);
        else
            memset(want, 0, e->length);
        if (memcmp(want, got, e->length) != 0)
            fail_msg("extent %zu (type %d, offset %llu): wrong target bytes",
                     i, (int)e->type, (unsigned long long)e->offset);
        if (e->type == EXTENT_BACKING)
            backing_bytes += e->length;
    }
    free(want);
    free(got);
    assert_true(backing_bytes > 0);
    /* Only DATA is read: BACKING, ZERO and HOLE ranges never are. */
    assert_int_equal(p.src->stats.bytes_read, data_bytes);
    /* No target operation touches a BACKING range when skipping; then
     * every other byte is written or zeroed exactly once. */
    if (skip) {
        const struct fake_stats *st = &p.dst->stats;
        for (size_t k = 0; k < st->log_len; k++) {
            uint64_t a = st->log[k].offset, b = a + st->log[k].length;
            for (size_t i = 0; i < n; i++)
                if (map[i].type == EXTENT_BACKING && a < map[i].offset +
                    map[i].length && map[i].offset < b)
                    fail_msg("target op [%llu, %llu) touches BACKING "
                             "extent %zu", (unsigned long long)a,
                             (unsigned long long)b, i);
        }
        assert_int_equal(st->bytes_written + st->bytes_zeroed,
                         size - backing_bytes);
        if (sparse)
            assert_true(st->zero_ops > 0);  /* ZERO ranges are written */
    }
    pair_close(&p);
}

static void test_skip_backing_skips_inherited_writes_zero_ranges(void **state)
{
    (void)state;
    enum copy_order orders[] = { COPY_ORDER_STRICT, COPY_ORDER_PIPELINED,
                                 COPY_ORDER_ANY };
    for (unsigned i = 0; i < 3; i++) {
        skip_backing_case(orders[i], 4096, true, 300 + i);
        skip_backing_case(orders[i], 0, true, 310 + i);    /* every byte */
    }
    /* Without the option an inherited range is copied as zeroes. */
    skip_backing_case(COPY_ORDER_PIPELINED, 4096, false, 320);
}

static void test_skip_backing_refusals(void **state)
{
    (void)state;
    struct fake_config bc = { .size = 4 * MiB, .block_size = 1 };
    struct fake_config sc = { .size = 4 * MiB, .block_size = 512 };
    struct pair p;
    pair_open(&p, &bc, &bc);
    struct fake_image *sectors = fake_image_new(p.loop, "sectors", &sc);
    struct copy_options o;
    struct errmsg err;
    copy_options_init(&o);
    o.skip_backing = true;
    o.verify = true;
    assert_null(copy_job_new(p.src->img, p.dst->img, &o, &err));
    assert_non_null(strstr(err.text, "verify"));
    o.verify = false;
    o.target_is_zero = true;
    assert_null(copy_job_new(p.src->img, p.dst->img, &o, &err));
    assert_non_null(strstr(err.text, "target-is-zero"));
    o.target_is_zero = false;
    assert_null(copy_job_new(p.src->img, sectors->img, &o, &err));
    assert_non_null(strstr(err.text, "byte-addressable"));
    assert_null(copy_job_new(sectors->img, p.dst->img, &o, &err));
    assert_non_null(strstr(err.text, "byte-addressable"));
    struct copy_job *job = copy_job_new(p.src->img, p.dst->img, &o, &err);
    assert_non_null(job);
    copy_job_free(job);
    fake_image_close(sectors);
    pair_close(&p);
}

/* ---- verify ------------------------------------------------------------------ */

static void test_verify_passes_and_catches_corruption(void **state)
{
    (void)state;
    for (unsigned requests = 1; requests <= 16; requests += 15) {
        for (int corrupt = 0; corrupt < 2; corrupt++) {
            struct fake_config sc = { .size = 5 * MiB + 512, .block_size = 512,
                                      .max_delay_rounds = 5, .seed = 81 };
            struct fake_config dc = { .size = 5 * MiB + 4096,
                                      .block_size = 4096,
                                      .max_delay_rounds = 5, .seed = 82 };
            struct pair p;
            pair_open(&p, &sc, &dc);
            make_source_content(p.src, 512, 8181);
            const uint64_t bad = 3 * MiB + 1234;
            fill_pattern(p.src, bad - 100, 200, 0xC3);
            struct extent m[] = { { 0, sc.size, EXTENT_DATA } };
            fake_image_set_map(p.src, m, 1);
            if (corrupt)
                p.dst->corrupt_offset = (int64_t)bad;
            struct copy_options o;
            copy_options_init(&o);
            o.verify = true;
            o.requests = requests;
            o.request_size = 256 * KiB;
            struct run r = { 0 };
            run_job(p.src, p.dst, &o, &r);
            if (corrupt) {
                assert_int_equal(r.final.state, COPY_FAILED);
                assert_string_equal(r.final.error,
                    "verify: images differ at byte offset 3146962");
                assert_true(r.final.verified < sc.size);
            } else {
                if (r.final.state != COPY_DONE)
                    fail_msg("%s", r.final.error);
                assert_int_equal(r.final.verified, sc.size);
            }
            pair_close(&p);
        }
    }
}

/* ---- copy_run, ticks, threads ----------------------------------------------- */

struct ticks {
    unsigned n;
    uint64_t last_wm;
    bool regressed;
};

static void tick(void *opaque, const struct copy_progress *p)
{
    struct ticks *t = opaque;
    t->n++;
    if (p->watermark < t->last_wm)
        t->regressed = true;
    t->last_wm = p->watermark;
}

static void test_copy_run_success_and_failure(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 4 * MiB, .block_size = 512,
                              .max_delay_ms = 2, .seed = 91 };
    struct fake_config dc = { .size = 4 * MiB, .block_size = 512,
                              .max_delay_ms = 2, .seed = 92 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    make_source_content(p.src, 512, 9191);
    struct copy_options o;
    copy_options_init(&o);
    o.request_size = 64 * KiB;
    struct ticks t = { 0 };
    struct copy_progress fin;
    struct errmsg err = { "" };
    assert_int_equal(copy_run(p.src->img, p.dst->img, &o, tick, &t, 1, &fin,
                              &err), 0);
    assert_int_equal(fin.state, COPY_DONE);
    assert_false(t.regressed);
    assert_same(p.src, p.dst, 0, sc.size);

    p.dst->error_op = FAKE_WRITE_ZEROES;
    p.dst->error_offset = 0;
    p.dst->error_count = 1;
    struct extent m[] = { { 0, sc.size, EXTENT_HOLE } };
    fake_image_set_map(p.src, m, 1);
    fill_pattern(p.src, 0, sc.size, 0);
    assert_int_equal(copy_run(p.src->img, p.dst->img, &o, NULL, NULL, 0,
                              &fin, &err), -EIO);
    assert_string_equal(err.text, "write zeroes on dst at offset 0: "
                                  "Input/output error");
    assert_int_equal(fin.state, COPY_FAILED);
    pair_close(&p);
}

struct watcher {
    struct copy_job *job;
    volatile bool stop;
    bool regressed;
    unsigned samples;
};

static void *watch(void *opaque)
{
    struct watcher *w = opaque;
    uint64_t last = 0;
    while (!w->stop) {
        struct copy_progress p;
        copy_job_progress(w->job, &p);
        if (p.watermark < last || p.done > p.total)
            w->regressed = true;
        last = p.watermark;
        w->samples++;
    }
    return NULL;
}

static void test_progress_from_another_thread(void **state)
{
    (void)state;
    struct fake_config sc = { .size = 16 * MiB, .block_size = 512,
                              .max_delay_rounds = 5, .seed = 101 };
    struct fake_config dc = { .size = 16 * MiB, .block_size = 512,
                              .max_delay_rounds = 5, .seed = 102 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    make_source_content(p.src, 512, 10101);
    struct copy_options o;
    copy_options_init(&o);
    o.request_size = 64 * KiB;
    struct errmsg err;
    struct run r = { 0 };
    r.job = copy_job_new(p.src->img, p.dst->img, &o, &err);
    assert_non_null(r.job);
    struct watcher w = { .job = r.job };
    pthread_t th;
    pthread_create(&th, NULL, watch, &w);
    copy_job_start(r.job, on_done, &r);
    assert_int_equal(loop_run_until(p.loop, &r.done), 0);
    w.stop = true;
    pthread_join(th, NULL);
    assert_false(w.regressed);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_same(p.src, p.dst, 0, sc.size);
    copy_job_free(r.job);
    pair_close(&p);
}

static void test_empty_and_already_done(void **state)
{
    (void)state;
    struct fake_config c0 = { .size = 0, .block_size = 512 };
    struct fake_config c1 = { .size = 1 * MiB, .block_size = 512 };
    struct pair p;
    pair_open(&p, &c0, &c1);
    struct copy_options o;
    copy_options_init(&o);
    struct run r = { 0 };
    run_job(p.src, p.dst, &o, &r);
    assert_int_equal(r.final.state, COPY_DONE);
    assert_int_equal(p.dst->stats.writes, 0);
    pair_close(&p);

    pair_open(&p, &c1, &c1);
    o.start_offset = 1 * MiB;       /* resume of a finished copy */
    struct run r2 = { 0 };
    run_job(p.src, p.dst, &o, &r2);
    assert_int_equal(r2.final.state, COPY_DONE);
    assert_int_equal(p.src->stats.reads, 0);
    assert_int_equal(p.dst->stats.flushes, 1);
    pair_close(&p);
}

static void test_names(void **state)
{
    (void)state;
    enum copy_order o;
    assert_int_equal(copy_order_parse("strict", &o), 0);
    assert_int_equal(o, COPY_ORDER_STRICT);
    assert_int_equal(copy_order_parse("any", &o), 0);
    assert_int_equal(o, COPY_ORDER_ANY);
    assert_int_equal(copy_order_parse("pipelined", &o), 0);
    assert_int_equal(o, COPY_ORDER_PIPELINED);
    assert_int_equal(copy_order_parse("Pipelined", &o), -EINVAL);
    assert_int_equal(copy_order_parse("", &o), -EINVAL);
    assert_string_equal(copy_order_name(COPY_ORDER_STRICT), "strict");
    assert_string_equal(copy_order_name(COPY_ORDER_ANY), "any");
    assert_string_equal(copy_state_name(COPY_VERIFYING), "verifying");
    assert_string_equal(copy_state_name(COPY_CANCELLED), "cancelled");
    struct copy_options opt;
    copy_options_init(&opt);
    assert_int_equal(opt.requests, COPY_DEFAULT_REQUESTS);
    assert_int_equal(opt.request_size, COPY_DEFAULT_REQUEST_SIZE);
    assert_int_equal(opt.sparse, COPY_DEFAULT_SPARSE);
    assert_int_equal(opt.order, COPY_ORDER_PIPELINED);
    assert_false(opt.verify);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_copy_correct_every_order),
        cmocka_unit_test(test_few_extents_per_answer_and_no_block_status),
        cmocka_unit_test(test_strict_one_write_in_flight_in_order),
        cmocka_unit_test(test_pipelined_many_writes_in_flight_in_order),
        cmocka_unit_test(test_any_many_writes_in_flight),
        cmocka_unit_test(test_any_writes_before_earlier_reads_finish),
        cmocka_unit_test(test_write_error_keeps_valid_watermark),
        cmocka_unit_test(test_read_error_names_image_and_offset),
        cmocka_unit_test(test_block_status_and_flush_errors),
        cmocka_unit_test(test_cancel_mid_copy),
        cmocka_unit_test(test_cancel_before_start),
        cmocka_unit_test(test_cancel_while_flushing_skips_verify),
        cmocka_unit_test(test_resume_from_watermark),
        cmocka_unit_test(test_target_too_small_refused),
        cmocka_unit_test(test_invalid_options_refused),
        cmocka_unit_test(test_memory_bound_on_1tib_sparse_image),
        cmocka_unit_test(test_zero_requests_capped_and_unmap),
        cmocka_unit_test(test_sparse_zero_writes_every_byte),
        cmocka_unit_test(test_reads_answered_as_zeroes),
        cmocka_unit_test(test_target_is_zero_skips_holes),
        cmocka_unit_test(test_skip_backing_skips_inherited_writes_zero_ranges),
        cmocka_unit_test(test_skip_backing_refusals),
        cmocka_unit_test(test_verify_passes_and_catches_corruption),
        cmocka_unit_test(test_copy_run_success_and_failure),
        cmocka_unit_test(test_progress_from_another_thread),
        cmocka_unit_test(test_empty_and_already_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
