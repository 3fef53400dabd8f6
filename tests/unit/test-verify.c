/* Unit tests of the copy engine's verify pass (copier/verify.c) against
 * fake images: ranges that both images report as reading as zeroes are
 * not read; everything else is read and compared; short block-status
 * answers, out-of-order completions, block-status errors and cancellation
 * during the pass. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
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

static void fill_random(struct fake_image *f, uint64_t off, uint64_t len)
{
    unsigned char *b = malloc(len);
    for (uint64_t i = 0; i < len; i++)
        b[i] = (unsigned char)(1 + rng() % 255);
    fake_image_poke(f, off, b, len);
    free(b);
}

/* Sum of the lengths of the map's extents of type DATA or BACKING. */
static uint64_t data_bytes(const struct extent *m, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        if (m[i].type == EXTENT_DATA || m[i].type == EXTENT_BACKING)
            sum += m[i].length;
    return sum;
}

/* What one run records about the verify pass.  The pass starts when the
 * target flush is issued (nothing else is issued until it completes). */
struct vrun {
    struct copy_job *job;
    struct fake_image *src, *dst;
    bool done;
    int done_calls;
    unsigned inflight_at_done;
    struct copy_progress final;
    uint64_t skipped;               /* job->ver.skipped at the end */
    bool verifying;
    /* per side ([0] source, [1] target), counted after the flush */
    uint64_t reads[2], bytes_read[2], status_calls[2];
    uint64_t max_read_len;
    /* cancel when verify reads pass this many bytes (0: never), so a
     * pass that reads what it should skip fails fast */
    uint64_t cancel_above_bytes;
    /* cancel when the Nth verify read is issued (0: never) */
    unsigned cancel_at_read;
    uint64_t reads_after_cancel;
    bool cancelled;
    /* cancel when the Nth verify block status of side cancel_side is
     * issued (0: never) */
    unsigned cancel_at_status;
    int cancel_side;
    /* make the Nth verify block status of side fail_side fail (0: never) */
    unsigned fail_at_status;
    int fail_side;
    uint64_t failed_status_offset;
};

static void on_done(void *opaque, const struct copy_progress *final)
{
    struct vrun *r = opaque;
    r->done = true;
    r->done_calls++;
    r->final = *final;
    r->skipped = r->job->ver.skipped;
    /* The caller may free the job and close the images now: nothing of
     * the job may be in flight. */
    r->inflight_at_done = r->src->stats.reads_inflight +
                          r->dst->stats.reads_inflight +
                          r->src->stats.other_inflight +
                          r->dst->stats.other_inflight;
}

static void on_issue(void *opaque, struct fake_image *f, enum fake_op op,
                     uint64_t offset, uint64_t len)
{
    struct vrun *r = opaque;
    int side = f == r->src ? 0 : 1;
    if (op == FAKE_FLUSH) {
        r->verifying = true;
        return;
    }
    if (!r->verifying)
        return;
    if (op == FAKE_READ) {
        if (r->cancelled)
            r->reads_after_cancel++;
        r->reads[side]++;
        r->bytes_read[side] += len;
        if (len > r->max_read_len)
            r->max_read_len = len;
        if ((r->cancel_at_read && r->reads[0] + r->reads[1] ==
                                  r->cancel_at_read) ||
            (r->cancel_above_bytes && !r->cancelled &&
             r->bytes_read[0] + r->bytes_read[1] > r->cancel_above_bytes)) {
            copy_job_cancel(r->job);
            r->cancelled = true;
        }
    } else if (op == FAKE_BLOCK_STATUS) {
        r->status_calls[side]++;
        if (r->cancel_at_status && side == r->cancel_side &&
            r->status_calls[side] == r->cancel_at_status) {
            copy_job_cancel(r->job);
            r->cancelled = true;
        }
        if (r->fail_at_status && side == r->fail_side &&
            r->status_calls[side] == r->fail_at_status) {
            /* Fails this very operation (checked after on_issue). */
            f->error_op = FAKE_BLOCK_STATUS;
            f->error_offset = offset;
            f->error_count = 1;
            f->error_detail = "scripted";
            r->failed_status_offset = offset;
        }
    }
}

/* Run a copy with verify to completion; checks that nothing is left in
 * flight, nothing was misaligned or too long, done came once. */
static void run_verify(struct fake_image *src, struct fake_image *dst,
                       struct copy_options *o, struct vrun *r)
{
    struct errmsg err = { "" };
    o->verify = true;
    r->src = src;
    r->dst = dst;
    r->job = copy_job_new(src->img, dst->img, o, &err);
    if (!r->job)
        fail_msg("copy_job_new: %s", err.text);
    src->on_issue = dst->on_issue = on_issue;
    src->on_issue_opaque = dst->on_issue_opaque = r;
    copy_job_start(r->job, on_done, r);
    assert_int_equal(loop_run_until(src->img->loop, &r->done), 0);
    for (int i = 0; i < 20; i++)
        loop_run_once(src->img->loop, 1);
    assert_int_equal(r->done_calls, 1);
    assert_int_equal(r->inflight_at_done, 0);
    assert_int_equal(src->stats.reads_inflight + dst->stats.reads_inflight,
                     0);
    assert_int_equal(src->stats.other_inflight + dst->stats.other_inflight,
                     0);
    assert_int_equal(src->stats.misaligned + dst->stats.misaligned, 0);
    assert_int_equal(src->stats.too_long + dst->stats.too_long, 0);
    assert_true(r->max_read_len <= o->request_size);
    src->on_issue = dst->on_issue = NULL;
    copy_job_free(r->job);
    r->job = NULL;
}

/* Poke random data into the map's DATA extents. */
static void fill_data_extents(struct fake_image *f, const struct extent *m,
                              size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].type == EXTENT_DATA)
            fill_random(f, m[i].offset, m[i].length);
}

/* ---- only data is read -------------------------------------------------- */

/* 64 MiB: data 1 MiB + 300 KiB + 3 MiB + 512 KiB, the rest holes and
 * zero extents (4 KiB aligned). */
static const struct extent sparse_map[] = {
    { 0, 1 * MiB, EXTENT_DATA },
    { 1 * MiB, 4 * MiB, EXTENT_HOLE },
    { 5 * MiB, 300 * KiB, EXTENT_DATA },
    { 5 * MiB + 300 * KiB, 7 * MiB - 300 * KiB, EXTENT_ZERO },
    { 12 * MiB, 8 * MiB, EXTENT_HOLE },
    { 20 * MiB, 3 * MiB, EXTENT_DATA },
    { 23 * MiB, 40 * MiB + 512 * KiB, EXTENT_HOLE },
    { 63 * MiB + 512 * KiB, 512 * KiB, EXTENT_DATA },
};
#define SPARSE_MAP_LEN (sizeof sparse_map / sizeof *sparse_map)

/* The target's view after the copy: the same layout, zero extents as
 * holes (a thin target that unmapped them). */
static void target_map_of(const struct extent *m, size_t n, struct extent *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = m[i];
        if (out[i].type != EXTENT_DATA)
            out[i].type = EXTENT_HOLE;
    }
}

static void test_sparse_reads_only_data(void **state)
{
    (void)state;
    enum copy_order orders[] = { COPY_ORDER_STRICT, COPY_ORDER_PIPELINED,
                                 COPY_ORDER_ANY };
    unsigned requests[] = { 1, 4, 16 };
    const uint64_t size = 64 * MiB;
    const uint64_t data = data_bytes(sparse_map, SPARSE_MAP_LEN);
    for (unsigned oi = 0; oi < 3; oi++) {
        for (unsigned ri = 0; ri < 3; ri++) {
            unsigned seed = 10 * oi + ri + 1;
            struct fake_config sc = { .size = size, .block_size = 512,
                                      .max_delay_rounds = 5, .seed = seed };
            struct fake_config dc = { .size = size, .block_size = 4096,
                                      .max_delay_rounds = 5,
                                      .seed = seed + 100 };
            struct pair p;
            pair_open(&p, &sc, &dc);
            rng_seed(0x1234567ull + seed);
            fake_image_set_map(p.src, sparse_map, SPARSE_MAP_LEN);
            fill_data_extents(p.src, sparse_map, SPARSE_MAP_LEN);
            struct extent dm[SPARSE_MAP_LEN];
            target_map_of(sparse_map, SPARSE_MAP_LEN, dm);
            fake_image_set_map(p.dst, dm, SPARSE_MAP_LEN);
            /* Stale data: the copy must zero the holes. */
            fill_pattern(p.dst, 0, size, 0xAA);

            struct copy_options o;
            copy_options_init(&o);
            o.order = orders[oi];
            o.requests = requests[ri];
            o.request_size = 256 * KiB;
            struct vrun r = { 0 };
            run_verify(p.src, p.dst, &o, &r);
            if (r.final.state != COPY_DONE)
                fail_msg("%s", r.final.error);
            assert_same(p.src, p.dst, 0, size);
            assert_int_equal(r.final.verified, size);
            assert_int_equal(r.skipped, size - data);
            /* Exactly the data ranges, on both sides. */
            assert_int_equal(r.bytes_read[0], data);
            assert_int_equal(r.bytes_read[1], data);
            /* 8 extents: one answer per side covers them all. */
            assert_int_equal(r.status_calls[0], 1);
            assert_int_equal(r.status_calls[1], 1);
            pair_close(&p);
        }
    }
}

/* A 1 TiB template with 5 MiB of data onto a sparse target: the pass
 * reads the data only, with a handful of block-status calls. */
static void test_huge_sparse_image(void **state)
{
    (void)state;
    const uint64_t size = 1 * TiB;
    struct fake_config sc = { .size = size, .block_size = 512,
                              .max_delay_rounds = 3, .seed = 7 };
    struct fake_config dc = { .size = size, .block_size = 512,
                              .reads_as_zero = true,
                              .max_delay_rounds = 3, .seed = 8 };
    struct pair p;
    pair_open(&p, &sc, &dc);
    const struct extent m[] = {
        { 0, 4 * MiB, EXTENT_DATA },
        { 4 * MiB, 300 * GiB, EXTENT_HOLE },
        { 300 * GiB + 4 * MiB, 1 * MiB, EXTENT_DATA },
        { 300 * GiB + 5 * MiB, size - 300 * GiB - 5 * MiB, EXTENT_HOLE },
    };
    rng_seed(99);
    fake_image_set_map(p.src, m, 4);
    fill_data_extents(p.src, m, 4);
    fake_image_set_map(p.dst, m, 4);
    struct copy_options o;
    copy_options_init(&o);
    struct vrun r = { .cancel_above_bytes = 64 * MiB };
    run_verify(p.src, p.dst, &o, &r);
    if (r.final.state != COPY_DONE)
        fail_msg("%s (verify read %llu bytes)", r.final.error,
                 (unsigned long long)(r.bytes_read[0] + r.bytes_read[1]));
    assert_int_equal(r.final.verified, size);
    assert_int_equal(r.bytes_read[0], 5 * MiB);
    assert_int_equal(r.bytes_read[1], 5 * MiB);
    assert_true(r.status_calls[0] <= 2 && r.status_calls[1] <= 2);
    pair_close(&p);
}

/* ---- what must still be read ---------------------------------------------- */

/* Block-status answers take 5 ms, everything else the random delays. */
static int slow_block_status(void *opaque, enum fake_op op, uint64_t offset,
                             uint64_t len)
{
    (void)opaque;
    (void)offset;
    (void)len;
    return op == FAKE_BLOCK_STATUS ? 5 : -1;
}

/* The source is a hole at [2 MiB, 16 MiB); the copy (told the target reads
 * as zeroes, which is a lie) leaves garbage at 9 MiB + 1234 there.  With
 * the target's map saying DATA there (or everywhere, or no block status),
 * the pass reads the range and names the first garbage byte. */
static void test_garbage_in_source_hole_caught(void **state)
{
    (void)state;
    const uint64_t size = 16 * MiB;
    const uint64_t bad = 9 * MiB + 1234;
    const struct extent sm[] = {
        { 0, 2 * MiB, EXTENT_DATA },
        { 2 * MiB, 14 * MiB, EXTENT_HOLE },
    };
    /* The target: data where the copy wrote and around the garbage. */
    const struct extent dm[] = {
        { 0, 2 * MiB, EXTENT_DATA },
        { 2 * MiB, 6 * MiB, EXTENT_HOLE },
        { 8 * MiB, 2 * MiB, EXTENT_DATA },
        { 10 * MiB, 6 * MiB, EXTENT_ZERO },
    };
    /* 0: the map above; 1: no map (DATA everywhere); 2: no block status;
     * 3: the map above one extent per answer, answers slow (the target's
     * next answer is still coming when the difference is found). */
    for (int variant = 0; variant < 4; variant++) {
        for (unsigned requests = 1; requests <= 16; requests += 15) {
            struct fake_config sc = { .size = size, .block_size = 512,
                                      .max_delay_rounds = 4, .seed = 21 };
            struct fake_config dc = { .size = size, .block_size = 4096,
                                      .max_delay_rounds = 4, .seed = 22,
                                      .no_block_status = variant == 2 };
            if (variant == 3) {
                dc.max_extents_per_reply = 1;
                dc.latency = slow_block_status;
            }
            struct pair p;
            pair_open(&p, &sc, &dc);
            rng_seed(2121);
            fake_image_set_map(p.src, sm, 2);
            fill_data_extents(p.src, sm, 2);
            if (variant == 0 || variant == 3)
                fake_image_set_map(p.dst, dm, 4);
            fill_pattern(p.dst, bad, 100, 0x5A);
            struct copy_options o;
            copy_options_init(&o);
            o.target_is_zero = true;
            o.requests = requests;
            o.request_size = 256 * KiB;
            struct vrun r = { 0 };
            run_verify(p.src, p.dst, &o, &r);
            assert_int_equal(r.final.state, COPY_FAILED);
            assert_string_equal(r.final.error,
                "verify: images differ at byte offset 9438418");
            assert_true(r.final.verified < size);
            if (variant == 0 || variant == 3) {
                /* Only [0,2M) and the chunks of [8M,10M) up to the
                 * difference were read. */
                assert_true(r.bytes_read[1] <= 4 * MiB);
                assert_true(r.bytes_read[1] >= 3 * MiB + 256 * KiB);
            }
            pair_close(&p);
        }
    }
}

/* The pass trusts block status: where BOTH sides report zeroes it reads
 * nothing, so garbage under a target map that (wrongly) says HOLE is not
 * seen.  (Real backends report HOLE only where reads return zeroes: SEEK_HOLE,
 * an LBPRZ LUN, an unallocated qcow2 cluster.)  This pins the rule: both
 * sides' maps decide, not one. */
static void test_both_maps_decide(void **state)
{
    (void)state;
    const uint64_t size = 8 * MiB;
    const struct extent hole[] = { { 0, size, EXTENT_HOLE } };
    const struct extent data[] = { { 0, size, EXTENT_DATA } };
    for (int variant = 0; variant < 3; variant++) {
        /* 0: source hole, target hole (lying) → skipped, passes;
         * 1: source DATA (zeroes), target hole → read, caught;
         * 2: source hole, target DATA → read, caught. */
        struct fake_config c = { .size = size, .block_size = 512,
                                 .max_delay_rounds = 2, .seed = 31 };
        struct pair p;
        pair_open(&p, &c, &c);
        fake_image_set_map(p.src, variant == 1 ? data : hole, 1);
        fake_image_set_map(p.dst, variant == 2 ? data : hole, 1);
        fill_pattern(p.dst, 5 * MiB + 7, 3, 0x77);
        struct copy_options o;
        copy_options_init(&o);
        o.target_is_zero = true;        /* leaves the garbage in place */
        o.request_size = 512 * KiB;
        struct vrun r = { 0 };
        run_verify(p.src, p.dst, &o, &r);
        if (variant == 0) {
            assert_int_equal(r.final.state, COPY_DONE);
            assert_int_equal(r.final.verified, size);
            assert_int_equal(r.bytes_read[0] + r.bytes_read[1], 0);
        } else {
            assert_int_equal(r.final.state, COPY_FAILED);
            assert_string_equal(r.final.error,
                "verify: images differ at byte offset 5242887");
            assert_true(r.bytes_read[1] >= 5 * MiB + 512 * KiB);
        }
        pair_close(&p);
    }
}

/* A target that reports DATA everywhere (or has no block status, like
 * NFS), or a source without block status: every byte is read on both
 * sides, as before.  A source BACKING extent counts as data too. */
static void test_data_everywhere_reads_everything(void **state)
{
    (void)state;
    const uint64_t size = 24 * MiB + 4096;
    for (int variant = 0; variant < 4; variant++) {
        struct fake_config sc = { .size = size, .block_size = 512,
                                  .max_delay_rounds = 3, .seed = 41,
                                  .no_block_status = variant == 2 };
        struct fake_config dc = { .size = size, .block_size = 4096,
                                  .max_delay_rounds = 3, .seed = 42,
                                  .no_block_status = variant == 1 };
        struct pair p;
        pair_open(&p, &sc, &dc);
        rng_seed(4141);
        /* The first six extents of sparse_map (up to 23 MiB), then a
         * hole to the end. */
        struct extent sm[7];
        memcpy(sm, sparse_map, 6 * sizeof *sm);
        sm[6] = (struct extent){ 23 * MiB, size - 23 * MiB, EXTENT_HOLE };
        if (variant == 3)       /* a BACKING layer over [1M, 5M) */
            sm[1].type = EXTENT_BACKING;
        fake_image_set_map(p.src, sm, 7);
        fill_data_extents(p.src, sm, 7);
        struct extent dm[7];
        target_map_of(sm, 7, dm);       /* BACKING → HOLE on the target */
        const struct extent all[] = { { 0, size, EXTENT_DATA } };
        if (variant == 0)
            fake_image_set_map(p.dst, all, 1);
        else
            fake_image_set_map(p.dst, dm, 7);
        struct copy_options o;
        copy_options_init(&o);
        o.requests = 8;
        o.request_size = 1 * MiB;
        struct vrun r = { 0 };
        run_verify(p.src, p.dst, &o, &r);
        if (r.final.state != COPY_DONE)
            fail_msg("variant %d: %s", variant, r.final.error);
        assert_int_equal(r.final.verified, size);
        assert_same(p.src, p.dst, 0, size);
        if (variant < 3) {
            assert_int_equal(r.bytes_read[0], size);
            assert_int_equal(r.bytes_read[1], size);
            assert_int_equal(r.skipped, 0);
        } else {
            /* data + the BACKING range, nothing else */
            uint64_t want = data_bytes(sm, 7);
            assert_int_equal(want, 1 * MiB + 4 * MiB + 300 * KiB + 3 * MiB);
            assert_int_equal(r.bytes_read[0], want);
            assert_int_equal(r.bytes_read[1], want);
        }
        pair_close(&p);
    }
}

/* ---- short answers, odd boundaries, out-of-order completions -------------- */

/* A random layout at 512-byte granularity: DATA (random bytes with zero
 * runs), HOLE and ZERO extents.  Fills the image and returns the map
 * (caller frees). */
static struct extent *random_source(struct fake_image *f, size_t *n_out)
{
    uint64_t size = f->img->size;
    size_t cap = 16, n = 0;
    struct extent *m = malloc(cap * sizeof *m);
    for (uint64_t at = 0; at < size;) {
        uint64_t len = (1 + rng() % 800) * 512;
        if (len > size - at)
            len = size - at;
        unsigned k = rng() % 3;
        enum extent_type t = k == 0 ? EXTENT_DATA
                           : k == 1 ? EXTENT_HOLE : EXTENT_ZERO;
        if (t == EXTENT_DATA) {
            fill_random(f, at, len);
            if (rng() % 2)
                fill_pattern(f, at + len / 3, len / 3, 0);
        }
        if (n == cap)
            m = realloc(m, (cap *= 2) * sizeof *m);
        m[n++] = (struct extent){ at, len, t };
        at += len;
    }
    *n_out = n;
    return m;
}

/* An honest target map with its own random boundaries (multiples of
 * 512): a segment is HOLE or ZERO only if it reads as zeroes in `f`,
 * and sometimes DATA although it does (allocated zeroes). */
static struct extent *random_target_map(struct fake_image *f, size_t *n_out)
{
    uint64_t size = f->img->size;
    size_t cap = 16, n = 0;
    struct extent *m = malloc(cap * sizeof *m);
    for (uint64_t at = 0; at < size;) {
        uint64_t len = (1 + rng() % 600) * 512;
        if (len > size - at)
            len = size - at;
        enum extent_type t = EXTENT_DATA;
        if (rng() % 5 && is_zero_range(f, at, len))
            t = rng() % 2 ? EXTENT_HOLE : EXTENT_ZERO;
        if (n == cap)
            m = realloc(m, (cap *= 2) * sizeof *m);
        m[n++] = (struct extent){ at, len, t };
        at += len;
    }
    *n_out = n;
    return m;
}

/* Bytes where both maps say zeroes (the most the pass may skip), and the
 * part of them in whole `align` blocks of maximal both-zero runs. */
static uint64_t both_zero_bytes(const struct extent *a, size_t na,
                                const struct extent *b, size_t nb,
                                uint64_t align, uint64_t *aligned)
{
    uint64_t sum = 0, run_start = 0, run_end = 0;
    size_t i = 0, j = 0;
    *aligned = 0;
    while (i < na && j < nb) {
        uint64_t s = a[i].offset > b[j].offset ? a[i].offset : b[j].offset;
        uint64_t ea = a[i].offset + a[i].length;
        uint64_t eb = b[j].offset + b[j].length;
        uint64_t e = ea < eb ? ea : eb;
        bool za = a[i].type == EXTENT_HOLE || a[i].type == EXTENT_ZERO;
        bool zb = b[j].type == EXTENT_HOLE || b[j].type == EXTENT_ZERO;
        if (za && zb && e > s) {
            sum += e - s;
            if (s != run_end) {     /* close the previous run */
                uint64_t lo = (run_start + align - 1) / align * align;
                uint64_t hi = run_end / align * align;
                *aligned += hi > lo ? hi - lo : 0;
                run_start = s;
            }
            run_end = e;
        }
        if (ea == e)
            i++;
        if (eb == e)
            j++;
    }
    uint64_t lo = (run_start + align - 1) / align * align;
    uint64_t hi = run_end / align * align;
    *aligned += hi > lo ? hi - lo : 0;
    return sum;
}

static void test_short_answers_odd_boundaries(void **state)
{
    (void)state;
    struct { uint32_t sbs, dbs; unsigned maxext; unsigned requests;
             size_t rs; size_t smax; } cases[] = {
        { 512, 4096, 1, 4, 256 * KiB, 0 },
        { 512, 512, 2, 16, 64 * KiB, 48 * KiB },
        { 4096, 512, 1, 1, 128 * KiB, 0 },
        { 512, 4096, 0, 8, 1 * MiB, 0 },
    };
    for (unsigned c = 0; c < sizeof cases / sizeof *cases; c++) {
        const uint64_t size = 20 * MiB + 8192;
        struct fake_config sc = { .size = size, .block_size = cases[c].sbs,
                                  .max_request = cases[c].smax,
                                  .max_extents_per_reply = cases[c].maxext,
                                  .max_delay_rounds = 6, .max_delay_ms = 1,
                                  .seed = 51 + c };
        struct fake_config dc = { .size = size + 4096,
                                  .block_size = cases[c].dbs,
                                  .max_extents_per_reply = cases[c].maxext,
                                  .max_delay_rounds = 6, .max_delay_ms = 1,
                                  .seed = 61 + c };
        struct pair p;
        pair_open(&p, &sc, &dc);
        rng_seed(5151 + c);
        size_t ns, nd;
        /* Extents at 512-byte boundaries even where a side has 4 KiB
         * blocks: the pass must keep its reads aligned. */
        struct extent *sm = random_source(p.src, &ns);
        fake_image_set_map(p.src, sm, ns);
        fill_pattern(p.dst, 0, size, 0xEE);
        /* After the copy the target holds the source's bytes: build its
         * map from them. */
        struct extent *dm = random_target_map(p.src, &nd);
        fake_image_set_map(p.dst, dm, nd);
        struct copy_options o;
        copy_options_init(&o);
        o.requests = cases[c].requests;
        o.request_size = cases[c].rs;
        struct vrun r = { 0 };
        run_verify(p.src, p.dst, &o, &r);
        if (r.final.state != COPY_DONE)
            fail_msg("case %u: %s", c, r.final.error);
        assert_same(p.src, p.dst, 0, size);
        assert_int_equal(r.final.verified, size);
        uint64_t align = cases[c].sbs > cases[c].dbs ? cases[c].sbs
                                                     : cases[c].dbs;
        uint64_t aligned;
        uint64_t zero = both_zero_bytes(sm, ns, dm, nd, align, &aligned);
        /* Skipped only where both maps say zeroes; all of it in whole
         * aligned blocks, but for at most one block lost where an answer
         * ends inside a zero run that is not aligned. */
        assert_true(r.skipped <= zero);
        uint64_t answers = r.status_calls[0] + r.status_calls[1];
        assert_true(r.skipped + answers * align >= aligned);
        if (align == 512)
            assert_int_equal(r.skipped, zero);
        /* Every other byte is read exactly once on each side. */
        assert_int_equal(r.bytes_read[0], size - r.skipped);
        assert_int_equal(r.bytes_read[1], size - r.skipped);
        /* Block status: at least one extent per answer consumed, so at
         * most one call per extent (per VERIFY_CACHE_EXTENTS extents with
         * unlimited answers), and several when answers are short. */
        size_t per = cases[c].maxext ? cases[c].maxext
                                     : VERIFY_CACHE_EXTENTS;
        assert_true(r.status_calls[0] <= (ns + per - 1) / per + 1);
        assert_true(r.status_calls[1] <= (nd + per - 1) / per + 1);
        if (cases[c].maxext)
            assert_true(r.status_calls[0] > 1 && r.status_calls[1] > 1);
        free(sm);
        free(dm);
        pair_close(&p);
    }
}

/* ---- errors and cancellation ------------------------------------------------ */

static void test_block_status_error_fails_job(void **state)
{
    (void)state;
    for (int side = 0; side < 2; side++) {
        for (unsigned nth = 1; nth <= 3; nth += 2) {
            const uint64_t size = 16 * MiB;
            struct fake_config c = { .size = size, .block_size = 512,
                                     .max_extents_per_reply = 1,
                                     .max_delay_rounds = 3,
                                     .seed = 71 + side };
            struct pair p;
            pair_open(&p, &c, &c);
            rng_seed(7171);
            struct extent m[8];
            for (int i = 0; i < 8; i++)
                m[i] = (struct extent){ (uint64_t)i * 2 * MiB, 2 * MiB,
                                        i % 2 ? EXTENT_HOLE : EXTENT_DATA };
            fake_image_set_map(p.src, m, 8);
            fill_data_extents(p.src, m, 8);
            fake_image_set_map(p.dst, m, 8);
            struct copy_options o;
            copy_options_init(&o);
            o.request_size = 512 * KiB;
            struct vrun r = { .fail_at_status = nth, .fail_side = side };
            run_verify(p.src, p.dst, &o, &r);
            assert_int_equal(r.final.state, COPY_FAILED);
            char want[256];
            snprintf(want, sizeof want, "verify: block status on %s at "
                     "offset %llu: Input/output error: scripted",
                     side ? "dst" : "src",
                     (unsigned long long)r.failed_status_offset);
            assert_string_equal(r.final.error, want);
            assert_true(r.final.verified <= r.failed_status_offset);
            assert_int_equal(r.status_calls[side], nth);
            if (nth == 3)
                assert_true(r.failed_status_offset > 0);
            assert_same(p.src, p.dst, 0, size);    /* the copy itself was fine */
            pair_close(&p);
        }
    }
}

static void test_cancel_during_verify(void **state)
{
    (void)state;
    for (int variant = 0; variant < 4; variant++) {
        /* 0: cancel at a verify read; 1: while the target's block status is
         * in flight; 2: the source's; 3: the target's, with slow answers,
         * in an image of holes only (no read in flight at all). */
        const uint64_t size = 32 * MiB;
        struct fake_config c = { .size = size, .block_size = 512,
                                 .max_extents_per_reply = 1,
                                 .max_delay_rounds = 4, .seed = 81 };
        if (variant == 3)
            c.latency = slow_block_status;
        struct pair p;
        pair_open(&p, &c, &c);
        rng_seed(8181);
        struct extent m[16];
        for (int i = 0; i < 16; i++)
            m[i] = (struct extent){ (uint64_t)i * 2 * MiB, 2 * MiB,
                                    i % 4 == 3 || variant == 3
                                        ? EXTENT_HOLE : EXTENT_DATA };
        fake_image_set_map(p.src, m, 16);
        fill_data_extents(p.src, m, 16);
        fake_image_set_map(p.dst, m, 16);
        struct copy_options o;
        copy_options_init(&o);
        o.request_size = 256 * KiB;
        o.requests = 4;
        struct vrun r = { 0 };
        if (variant == 0) {
            r.cancel_at_read = 7;
        } else {
            r.cancel_at_status = 3;
            r.cancel_side = variant == 2 ? 0 : 1;
        }
        run_verify(p.src, p.dst, &o, &r);
        assert_int_equal(r.final.state, COPY_CANCELLED);
        assert_int_equal(r.final.err, -ECANCELED);
        assert_true(r.cancelled);
        assert_true(r.final.verified < size);
        /* At most the other half of the pair being issued. */
        assert_true(r.reads_after_cancel <= 1);
        assert_int_equal(r.final.watermark, size);
        if (variant == 3) {
            assert_int_equal(r.reads[0] + r.reads[1], 0);
            assert_int_equal(r.final.verified, 4 * MiB);
        }
        pair_close(&p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_reads_only_data),
        cmocka_unit_test(test_huge_sparse_image),
        cmocka_unit_test(test_garbage_in_source_hole_caught),
        cmocka_unit_test(test_both_maps_decide),
        cmocka_unit_test(test_data_everywhere_reads_everything),
        cmocka_unit_test(test_short_answers_odd_boundaries),
        cmocka_unit_test(test_block_status_error_fails_job),
        cmocka_unit_test(test_cancel_during_verify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
