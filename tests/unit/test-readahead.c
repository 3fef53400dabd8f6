/* Unit tests of fs/readahead (the mount's sequential read-ahead) against
 * the contract in fs/readahead.h, on fake images (tests/unit/fake-image.h)
 * whose reads complete later on the loop, out of order, and can fail on
 * purpose:
 *  - a dd-like sequential reader (1 MiB reads) is taken after its first
 *    read, keeps >= 8 image reads in flight and gets the image's bytes up
 *    to the partial last chunk;
 *  - small and unaligned sequential reads across chunk boundaries, and
 *    reads spanning many chunks;
 *  - several reads outstanding at once on one stream, and slightly out of
 *    order;
 *  - random reads are not taken and cost no image read;
 *  - readahead_invalidate: a later read returns the new contents, reads
 *    waiting on chunks in flight are still answered;
 *  - a failing chunk answers its waiting read with the error; a later read
 *    of the range returns the data;
 *  - memory: at most max_chunks chunks per stream and RA_BUDGET in all, 0
 *    once every object is freed;
 *  - the idle callback comes after the last image read; freeing then is
 *    clean;
 *  - RA_STREAMS interleaved sequential readers.
 * Every reply is checked against the fake's contents; a read that is not
 * taken is read directly from the fake (fake_image_peek), as the mount
 * would read the image itself. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/readahead.h"
#include "fake-image.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)

/* Longest wait for one condition before the test fails as stuck (a hang
 * guard, not a timing assertion). */
#define STUCK_NS (30ull * 1000 * 1000 * 1000)

/* ---- contents -------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Fill [off, off+len) of `f` with bytes that depend on their position (and
 * on `salt`, so that a second version differs everywhere). */
static void fill_pattern(struct fake_image *f, uint64_t off, uint64_t len,
                         uint64_t salt)
{
    size_t cap = 1 * MiB;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    while (len) {
        size_t n = len < cap ? len : cap;
        uint64_t word = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t pos = off + i;
            if (i == 0 || (pos & 7) == 0)
                word = mix64((pos >> 3) ^ salt);
            buf[i] = (unsigned char)(word >> (8 * (pos & 7)));
        }
        fake_image_poke(f, off, buf, n);
        off += n;
        len -= n;
    }
    free(buf);
}

/* Fail unless `got` equals the fake's bytes at [off, off+len). */
static void expect_image_bytes(struct fake_image *f, uint64_t off,
                               const unsigned char *got, size_t len)
{
    unsigned char *want = malloc(len);
    assert_non_null(want);
    fake_image_peek(f, off, want, len);
    if (memcmp(want, got, len)) {
        size_t i = 0;
        while (want[i] == got[i])
            i++;
        unsigned w = want[i], g = got[i];
        free(want);
        fail_msg("read [%llu, +%zu): byte %llu is %u, the image has %u",
                 (unsigned long long)off, len,
                 (unsigned long long)(off + i), g, w);
    }
    free(want);
}

/* ---- memory watch ---------------------------------------------------------- */

/* Bytes held when the test started (0, unless an earlier test failed and
 * left objects behind: then this test still checks its own). */
static size_t mem_base;

/* Bytes of chunk buffers held by this test's read-ahead objects. */
static size_t held(void)
{
    size_t t = readahead_bytes_total();
    return t > mem_base ? t - mem_base : 0;
}

/* Highest held() seen since the last reset: sampled when an image read is
 * issued, in every reply and idle call, and after every loop iteration of
 * run_until and drive_readers. */
static size_t mem_peak;

static void mem_sample(void)
{
    size_t t = held();
    if (t > mem_peak)
        mem_peak = t;
}

/* ---- one image with its read-ahead ------------------------------------------ */

struct node {
    struct loop *loop;
    struct fake_image *f;
    struct readahead *ra;
    unsigned idle_calls;
    unsigned idle_busy;         /* idle calls with an image read in flight */
    uint64_t done_at_idle;      /* image reads completed at the last idle */
    /* Watched range: set when an image read covering it is issued. */
    uint64_t watch_off, watch_len;
    bool watch_read;
};

static void on_idle(void *opaque)
{
    struct node *n = opaque;
    n->idle_calls++;
    if (readahead_inflight(n->ra) != 0 || n->f->stats.reads_inflight != 0)
        n->idle_busy++;
    n->done_at_idle = n->f->stats.reads - n->f->stats.reads_inflight;
    mem_sample();
}

static void on_issue(void *opaque, struct fake_image *f, enum fake_op op,
                     uint64_t offset, uint64_t len)
{
    struct node *n = opaque;
    (void)f;
    mem_sample();
    if (op == FAKE_READ && n->watch_len && offset <= n->watch_off &&
        offset + len >= n->watch_off + n->watch_len)
        n->watch_read = true;
}

static struct fake_config fake_cfg(uint64_t size, uint32_t block_size,
                                   unsigned seed, unsigned max_delay_rounds,
                                   unsigned max_delay_ms)
{
    return (struct fake_config){
        .size = size,
        .block_size = block_size,
        .seed = seed,
        .max_delay_rounds = max_delay_rounds,
        .max_delay_ms = max_delay_ms,
    };
}

static void node_open(struct node *n, struct loop *loop,
                      const struct fake_config *cfg, size_t chunk,
                      unsigned max_chunks)
{
    memset(n, 0, sizeof *n);
    n->loop = loop;
    n->f = fake_image_new(loop, "img", cfg);
    assert_non_null(n->f);
    n->f->on_issue = on_issue;
    n->f->on_issue_opaque = n;
    n->ra = readahead_new(n->f->img, chunk, max_chunks, on_idle, n);
    assert_non_null(n->ra);
}

typedef bool (*cond_fn)(void *arg);

/* Run the loop until cond(arg) holds; fail if it never does. */
static void run_until(struct loop *loop, cond_fn cond, void *arg,
                      const char *what)
{
    uint64_t give_up = loop_now_ns() + STUCK_NS;
    while (!cond(arg)) {
        assert_int_equal(loop_run_once(loop, 10), 0);
        mem_sample();
        if (loop_now_ns() > give_up)
            fail_msg("stuck waiting for %s", what);
    }
}

/* A few more loop iterations: anything still queued (a stray reply, a
 * deferred call into a freed object) runs now, under ASan. */
static void run_dry(struct loop *loop)
{
    for (int i = 0; i < 20; i++)
        assert_int_equal(loop_run_once(loop, 1), 0);
}

static bool node_quiet(void *arg)
{
    struct node *n = arg;
    return readahead_inflight(n->ra) == 0;
}

/* Wait until no image read is in flight, check the idle contract, free the
 * read-ahead and close the image (which fails if a read is in flight). */
static void node_close(struct node *n)
{
    run_until(n->loop, node_quiet, n, "the last image read");
    assert_int_equal(n->f->stats.reads_inflight, 0);
    assert_int_equal(n->idle_busy, 0);
    if (n->f->stats.reads) {
        /* idle came, and after the very last completion */
        assert_true(n->idle_calls >= 1);
        assert_int_equal(n->done_at_idle, n->f->stats.reads);
    }
    assert_int_equal(n->f->stats.misaligned, 0);
    assert_int_equal(n->f->stats.too_long, 0);
    readahead_free(n->ra);
    n->ra = NULL;
    run_dry(n->loop);
    n->f->on_issue = NULL;
    assert_int_equal(fake_image_close(n->f), 0);
    n->f = NULL;
}

/* ---- one read and its answer -------------------------------------------------- */

struct answer {
    uint64_t offset;
    size_t size;
    bool taken;
    unsigned calls;
    int err;
    int iovcnt;
    size_t got;                 /* bytes in the reply's iovecs */
    unsigned char *data;
};

static void answer_init(struct answer *a, uint64_t offset, size_t size)
{
    memset(a, 0, sizeof *a);
    a->offset = offset;
    a->size = size;
    a->data = malloc(size);
    assert_non_null(a->data);
}

static void answer_free(struct answer *a)
{
    free(a->data);
    a->data = NULL;
}

static void on_reply(void *opaque, int err, const struct iovec *iov,
                     int iovcnt)
{
    struct answer *a = opaque;
    mem_sample();
    a->calls++;
    a->err = err;
    a->iovcnt = iovcnt;
    a->got = 0;
    if (err)
        return;
    for (int i = 0; i < iovcnt; i++) {
        if (a->got + iov[i].iov_len <= a->size)
            memcpy(a->data + a->got, iov[i].iov_base, iov[i].iov_len);
        a->got += iov[i].iov_len;
    }
}

static bool answered(void *arg)
{
    struct answer *a = arg;
    return a->calls > 0;
}

/* Offer the read to the read-ahead; if it is not taken, read it directly
 * from the image.  Returns whether it was taken. */
static bool offer(struct node *n, struct answer *a)
{
    a->taken = readahead_read(n->ra, a->offset, a->size, on_reply, a);
    if (!a->taken) {
        assert_int_equal(a->calls, 0);
        fake_image_peek(n->f, a->offset, a->data, a->size);
    }
    return a->taken;
}

/* A taken read was answered exactly once, without error, with the image's
 * bytes (a read not taken was never answered by the read-ahead). */
static void check_answer(struct node *n, const struct answer *a)
{
    if (!a->taken) {
        assert_int_equal(a->calls, 0);
        return;
    }
    assert_int_equal(a->calls, 1);
    if (a->err)
        fail_msg("read [%llu, +%zu) failed: %s", (unsigned long long)a->offset,
                 a->size, strerror(-a->err));
    assert_int_equal(a->got, a->size);
    expect_image_bytes(n->f, a->offset, a->data, a->size);
}

/* One read like dd does it: offer, wait for the answer, check it. */
static bool read_one(struct node *n, uint64_t offset, size_t size)
{
    struct answer a;
    answer_init(&a, offset, size);
    bool taken = offer(n, &a);
    if (taken)
        run_until(n->loop, answered, &a, "a reply");
    check_answer(n, &a);
    answer_free(&a);
    return taken;
}

static size_t clip(uint64_t offset, size_t size, uint64_t end)
{
    return offset + size > end ? (size_t)(end - offset) : size;
}

static int setup(void **state)
{
    (void)state;
    mem_base = readahead_bytes_total();
    mem_peak = 0;
    return 0;
}

/* ---- 1. dd-like sequential reader ------------------------------------------- */

static void test_sequential_reader(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 48 * MiB + 12345;
    struct fake_config cfg = fake_cfg(size, 512, 1, 8, 3);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 1);

    for (uint64_t pos = 0; pos < size; pos += MiB) {
        bool taken = read_one(&n, pos, clip(pos, MiB, size));
        if (pos == 0)
            assert_false(taken);        /* a new stream prefetches nothing */
        else if (!taken)
            fail_msg("sequential read at %llu not taken",
                     (unsigned long long)pos);
    }
    /* one sequential reader keeps >= 8 image reads in flight */
    if (n.f->stats.max_reads_inflight < 8)
        fail_msg("at most %u image reads in flight",
                 n.f->stats.max_reads_inflight);
    assert_true(mem_peak <= 16 * MiB);
    node_close(&n);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 2. small and unaligned sequential reads ------------------------------- */

/* Read [start, end) sequentially in pieces of `size` bytes (or, if
 * `size` is 0, of random sizes up to 150000); every read after the first
 * must be taken. */
static void read_sequentially(struct node *n, uint64_t start, uint64_t end,
                              size_t size, unsigned seed)
{
    uint64_t r = seed;
    unsigned reads = 0;
    for (uint64_t pos = start; pos < end; reads++) {
        size_t want = size ? size : (size_t)(1 + (r = mix64(r)) % 150000);
        size_t len = clip(pos, want, end);
        bool taken = read_one(n, pos, len);
        if (reads == 0)
            assert_false(taken);
        else if (!taken)
            fail_msg("sequential read [%llu, +%zu) not taken",
                     (unsigned long long)pos, len);
        pos += len;
    }
}

static void test_small_unaligned_reads(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);

    /* 64 KiB chunks: 3000-byte reads and random sizes cross many
     * chunk boundaries. */
    uint64_t size = 6 * MiB + 777;
    struct fake_config cfg = fake_cfg(size, 4096, 2, 5, 1);
    struct node small;
    node_open(&small, loop, &cfg, 64 * KiB, 8);
    fill_pattern(small.f, 0, size, 2);
    read_sequentially(&small, 12345, 12345 + 700 * 3000, 3000, 0);
    read_sequentially(&small, 4 * MiB + 333, size, 0, 7);
    node_close(&small);

    /* 1 MiB chunks, 1 MiB reads that straddle two chunks each, the last
     * one clipped at the end of the image. */
    size = 24 * MiB + 777;
    cfg = fake_cfg(size, 512, 3, 5, 1);
    struct node big;
    node_open(&big, loop, &cfg, 1 * MiB, 16);
    fill_pattern(big.f, 0, size, 3);
    read_sequentially(&big, 3 * MiB + 123457, size, 1 * MiB, 0);
    node_close(&big);

    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 2b. reads longer than a few chunks ------------------------------------- */

/* Sequential 1 MiB reads on 64 KiB chunks (each read spans 16 or 17
 * chunks; a stream may hold 32): the header sets no limit on how many
 * chunks a read may span, so they are taken like any sequential read. */
static void test_reads_spanning_many_chunks(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 24 * MiB + 999;
    struct fake_config cfg = fake_cfg(size, 512, 13, 5, 1);
    struct node n;
    node_open(&n, loop, &cfg, 64 * KiB, 32);
    fill_pattern(n.f, 0, size, 13);
    read_sequentially(&n, 100000, size, 1 * MiB, 0);
    node_close(&n);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 3. several reads outstanding on one stream ----------------------------- */

static bool all_answered(struct answer *a, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (a[i].taken && a[i].calls == 0)
            return false;
    return true;
}

struct answers {
    struct answer *a;
    size_t count;
};

static bool answers_done(void *arg)
{
    struct answers *s = arg;
    return all_answered(s->a, s->count);
}

static void test_many_outstanding(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 40 * MiB;
    struct fake_config cfg = fake_cfg(size, 512, 4, 8, 2);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 4);

    assert_false(read_one(&n, 0, MiB));
    assert_true(read_one(&n, 1 * MiB, MiB));

    /* 8 consecutive reads offered back to back, like a split 8 MiB read:
     * each continues the previous one, so each is taken. */
    struct answer burst[8];
    for (unsigned i = 0; i < 8; i++) {
        answer_init(&burst[i], (2 + i) * MiB, MiB);
        if (!offer(&n, &burst[i]))
            fail_msg("read %u of the burst not taken", i);
    }
    struct answers s = { burst, 8 };
    run_until(loop, answers_done, &s, "the burst");

    /* Pairs offered out of order (k+1 before k), 4 pairs outstanding at
     * once; then 8 in order again.  Taken or not, every answer is right. */
    struct answer mixed[16];
    for (unsigned i = 0; i < 8; i++) {
        unsigned k = i ^ 1;         /* 1, 0, 3, 2, ... */
        answer_init(&mixed[i], (10 + k) * MiB, MiB);
        offer(&n, &mixed[i]);
    }
    for (unsigned i = 8; i < 16; i++) {
        answer_init(&mixed[i], (10 + i) * MiB, MiB);
        offer(&n, &mixed[i]);
    }
    s = (struct answers){ mixed, 16 };
    run_until(loop, answers_done, &s, "the mixed reads");
    for (unsigned i = 0; i < 8; i++)
        check_answer(&n, &burst[i]);
    for (unsigned i = 0; i < 16; i++)
        check_answer(&n, &mixed[i]);

    node_close(&n);
    /* still exactly one answer each once the loop ran dry */
    for (unsigned i = 0; i < 8; i++) {
        assert_int_equal(burst[i].calls, 1);
        answer_free(&burst[i]);
    }
    for (unsigned i = 0; i < 16; i++) {
        assert_int_equal(mixed[i].calls, mixed[i].taken ? 1 : 0);
        answer_free(&mixed[i]);
    }
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 4. random reads ----------------------------------------------------------- */

static void test_random_reads_not_taken(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 1024 * MiB;         /* sparse: reads as zeroes */
    struct fake_config cfg = fake_cfg(size, 512, 5, 3, 0);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);

    static const size_t sizes[] = { 4096, 3000, 1 * MiB, 512, 65536 };
    enum { READS = 300 };
    uint64_t begin[READS], end[READS];
    uint64_t r = 5;
    for (unsigned i = 0; i < READS; i++) {
        size_t len = sizes[i % 5];
        uint64_t off;
        bool near;
        do {            /* never continuing nor overlapping an earlier read */
            off = (r = mix64(r)) % (size - len);
            near = false;
            for (unsigned j = 0; j < i && !near; j++)
                near = off >= begin[j] && off <= end[j];
        } while (near);
        begin[i] = off;
        end[i] = off + len;
        struct answer a;
        answer_init(&a, off, len);
        if (offer(&n, &a))
            fail_msg("random read %u [%llu, +%zu) taken", i,
                     (unsigned long long)off, len);
        answer_free(&a);
        assert_int_equal(n.f->stats.reads, 0);
        if (i % 16 == 0)
            run_dry(loop);
    }
    run_dry(loop);
    /* random readers cost nothing: no image read, no buffer */
    assert_int_equal(n.f->stats.reads, 0);
    assert_int_equal(readahead_inflight(n.ra), 0);
    assert_int_equal(mem_peak, 0);
    assert_int_equal(held(), 0);
    node_close(&n);
    loop_free(loop);
}

/* ---- 5. invalidate --------------------------------------------------------------- */

static int slow_reads(void *opaque, enum fake_op op, uint64_t offset,
                      uint64_t len)
{
    (void)opaque;
    (void)offset;
    (void)len;
    return op == FAKE_READ ? 30 : -1;
}

static void test_invalidate(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 32 * MiB;

    /* (a) A buffered chunk changes: after readahead_invalidate the new
     * bytes are read. */
    struct fake_config cfg = fake_cfg(size, 512, 6, 4, 1);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 6);
    n.watch_off = 6 * MiB + 1000;
    n.watch_len = 5000;
    for (uint64_t pos = 0; pos < 4 * MiB; pos += MiB)
        read_one(&n, pos, MiB);
    run_until(loop, node_quiet, &n, "the read-ahead to fill");
    /* precondition: the range was read ahead (RA_START_CHUNKS chunks) */
    assert_true(n.watch_read);
    fill_pattern(n.f, n.watch_off, n.watch_len, 66);
    readahead_invalidate(n.ra);
    /* every stream is forgotten: the next read starts a new one */
    assert_false(read_one(&n, 4 * MiB, MiB));
    for (uint64_t pos = 5 * MiB; pos < 12 * MiB; pos += MiB)
        assert_true(read_one(&n, pos, MiB));        /* checks new bytes */
    node_close(&n);

    /* (b) Invalidate while reads wait on chunks in flight: each is
     * answered once, with the old or the new bytes; later reads return the
     * new bytes. */
    cfg = fake_cfg(size, 512, 7, 2, 0);
    cfg.latency = slow_reads;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 7);
    assert_false(read_one(&n, 0, MiB));
    struct answer waiting[3];
    unsigned char *old = malloc(3 * MiB);
    assert_non_null(old);
    fake_image_peek(n.f, 1 * MiB, old, 3 * MiB);
    for (unsigned i = 0; i < 3; i++) {
        answer_init(&waiting[i], (1 + i) * MiB, MiB);
        offer(&n, &waiting[i]);
    }
    assert_true(waiting[0].taken);
    assert_true(readahead_inflight(n.ra) > 0);
    fill_pattern(n.f, 1 * MiB, 8 * MiB, 77);
    readahead_invalidate(n.ra);
    struct answers s = { waiting, 3 };
    run_until(loop, answers_done, &s, "the waiting reads");
    for (unsigned i = 0; i < 3; i++) {
        struct answer *a = &waiting[i];
        if (!a->taken)
            continue;
        assert_int_equal(a->calls, 1);
        assert_int_equal(a->err, 0);
        assert_int_equal(a->got, a->size);
        if (memcmp(a->data, old + i * MiB, MiB))
            expect_image_bytes(n.f, a->offset, a->data, a->size);
    }
    for (uint64_t pos = 4 * MiB; pos < 12 * MiB; pos += MiB)
        read_one(&n, pos, MiB);                     /* checks new bytes */
    node_close(&n);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(waiting[i].calls, waiting[i].taken ? 1 : 0);
        answer_free(&waiting[i]);
    }
    free(old);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 6. errors ----------------------------------------------------------------- */

/* The first image read touching `offset` (the one that fails) completes
 * after 300 ms, so that the reader is waiting on it by then; the others
 * get the fake's random delays. */
struct slow_failure {
    uint64_t offset;
    bool issued;
};

static int slow_failing_read(void *opaque, enum fake_op op, uint64_t offset,
                             uint64_t len)
{
    struct slow_failure *s = opaque;
    if (op == FAKE_READ && !s->issued && offset <= s->offset &&
        s->offset - offset < len) {
        s->issued = true;
        return 300;
    }
    return -1;
}

static void test_read_error(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 32 * MiB;
    struct slow_failure slow = { 7 * MiB + 4321, false };
    struct fake_config cfg = fake_cfg(size, 512, 8, 4, 0);
    cfg.latency = slow_failing_read;
    cfg.latency_opaque = &slow;
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 8);
    n.f->error_op = FAKE_READ;
    n.f->error_offset = slow.offset;
    n.f->error_errno = -EREMOTEIO;
    n.f->error_count = 1;

    assert_false(read_one(&n, 0, MiB));
    for (uint64_t pos = 1 * MiB; pos < 7 * MiB; pos += MiB)
        assert_true(read_one(&n, pos, MiB));

    /* the read covering the failing chunk gets its error and no data */
    struct answer bad;
    answer_init(&bad, 7 * MiB, MiB);
    assert_true(offer(&n, &bad));
    run_until(loop, answered, &bad, "the failing read");
    assert_int_equal(n.f->error_count, 0);          /* the error was used */
    assert_int_equal(bad.calls, 1);
    assert_int_equal(bad.err, -EREMOTEIO);
    assert_int_equal(bad.iovcnt, 0);

    /* the range reads again, and the reader goes on */
    for (uint64_t pos = 7 * MiB; pos < 16 * MiB; pos += MiB)
        read_one(&n, pos, MiB);
    node_close(&n);
    assert_int_equal(bad.calls, 1);
    answer_free(&bad);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 7. memory ------------------------------------------------------------------ */

/* A reader with at most one read outstanding, driven with others at once. */
struct reader {
    struct node *n;
    uint64_t pos, end;
    unsigned reads, taken;
    bool busy;
    struct answer a;
};

static bool reader_advance(struct reader *r)
{
    if (r->busy) {
        if (r->a.calls == 0)
            return false;
        check_answer(r->n, &r->a);
        answer_free(&r->a);
        r->pos += r->a.size;
        r->busy = false;
    }
    if (r->pos >= r->end)
        return true;
    answer_init(&r->a, r->pos, clip(r->pos, MiB, r->end));
    r->reads++;
    if (offer(r->n, &r->a)) {
        r->taken++;
        r->busy = true;
    } else {
        check_answer(r->n, &r->a);
        answer_free(&r->a);
        r->pos += r->a.size;
    }
    return false;
}

/* Run all readers at once until each has read its range. */
static void drive_readers(struct loop *loop, struct reader *r, size_t count)
{
    uint64_t give_up = loop_now_ns() + STUCK_NS;
    for (;;) {
        bool all_done = true;
        for (size_t i = 0; i < count; i++)
            all_done &= reader_advance(&r[i]);
        if (all_done)
            return;
        assert_int_equal(loop_run_once(loop, 10), 0);
        mem_sample();
        if (loop_now_ns() > give_up)
            fail_msg("readers stuck");
    }
}

/* A sparse image with an 8-byte mark at every MiB (so that a chunk read
 * at the wrong place shows). */
static void mark_every_mib(struct fake_image *f)
{
    for (uint64_t pos = 0; pos + 8 <= f->img->size; pos += MiB)
        fill_pattern(f, pos, 8, 9);
}

static void test_memory_bounds(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);

    /* (a) 3 objects with 2 streams each, 8 chunks of 1 MiB a stream: at
     * most 6 * 8 MiB in all, far below the budget, so every read after a
     * reader's first is taken. */
    struct node a[3];
    struct reader ra[6];
    for (unsigned i = 0; i < 3; i++) {
        struct fake_config cfg = fake_cfg(64 * MiB, 4096, 10 + i, 6, 2);
        node_open(&a[i], loop, &cfg, 1 * MiB, 8);
        fill_pattern(a[i].f, 0, 64 * MiB, 10 + i);
        for (unsigned j = 0; j < 2; j++) {
            uint64_t start = j * 32 * MiB + i * 4096 + j * 777;
            ra[2 * i + j] = (struct reader){ &a[i], start, start + 16 * MiB };
        }
    }
    mem_peak = 0;
    drive_readers(loop, ra, 6);
    for (unsigned i = 0; i < 6; i++)
        assert_int_equal(ra[i].taken, ra[i].reads - 1);
    if (mem_peak > 6 * 8 * MiB)
        fail_msg("%zu bytes held by 6 streams of 8 x 1 MiB", mem_peak);
    assert_true(mem_peak > 0);
    for (unsigned i = 0; i < 3; i++)
        node_close(&a[i]);
    assert_int_equal(held(), 0);

    /* (b) 2 objects with 2 streams each, 32 chunks of 4 MiB a stream:
     * 512 MiB if nothing stopped them; RA_BUDGET must. */
    struct node b[2];
    struct reader rb[4];
    for (unsigned i = 0; i < 2; i++) {
        struct fake_config cfg = fake_cfg(640 * MiB, 4096, 20 + i, 4, 1);
        node_open(&b[i], loop, &cfg, 4 * MiB, 32);
        mark_every_mib(b[i].f);
        for (unsigned j = 0; j < 2; j++) {
            uint64_t start = j * 320 * MiB + 8192 * i;
            rb[2 * i + j] = (struct reader){ &b[i], start, start + 48 * MiB };
        }
    }
    mem_peak = 0;
    drive_readers(loop, rb, 4);
    if (mem_peak > RA_BUDGET)
        fail_msg("%zu bytes held, budget %u", mem_peak, RA_BUDGET);
    for (unsigned i = 0; i < 2; i++)
        node_close(&b[i]);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 8. idle callback ------------------------------------------------------------ */

static bool idle_now(void *arg)
{
    struct node *n = arg;
    return n->idle_calls > 0 && readahead_inflight(n->ra) == 0;
}

static void test_idle_then_free(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 32 * MiB;
    struct fake_config cfg = fake_cfg(size, 512, 11, 3, 0);
    cfg.latency = slow_reads;       /* reads ahead still in flight at stop */
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 11);

    for (uint64_t pos = 0; pos < 5 * MiB; pos += MiB)
        read_one(&n, pos, MiB);
    /* The reader stops; wait for the idle call that follows the last
     * image read, then free at once. */
    if (readahead_inflight(n.ra) > 0)
        n.idle_calls = 0;
    run_until(loop, idle_now, &n, "the idle call");
    assert_int_equal(n.idle_busy, 0);
    assert_int_equal(n.f->stats.reads_inflight, 0);
    assert_true(n.f->stats.reads > 0);
    assert_int_equal(n.done_at_idle, n.f->stats.reads);
    readahead_free(n.ra);
    n.ra = NULL;
    run_dry(loop);
    assert_int_equal(held(), 0);
    n.f->on_issue = NULL;
    assert_int_equal(fake_image_close(n.f), 0);
    loop_free(loop);
}

/* ---- 9. interleaved sequential readers ---------------------------------------- */

static void test_interleaved_streams(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    /* readers 20 MiB apart: no stream's window (8 chunks) reaches the
     * next reader */
    uint64_t size = RA_STREAMS * 20 * MiB + 4321;
    struct fake_config cfg = fake_cfg(size, 512, 12, 6, 1);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 8);
    fill_pattern(n.f, 0, size, 12);

    uint64_t pos[RA_STREAMS];
    for (unsigned i = 0; i < RA_STREAMS; i++)
        pos[i] = i * 20 * MiB + (i * 4099) % 65536;
    for (unsigned round = 0; round < 8; round++) {
        for (unsigned i = 0; i < RA_STREAMS; i++) {
            bool taken = read_one(&n, pos[i], MiB);
            if (round == 0)
                assert_false(taken);
            else if (!taken)
                fail_msg("reader %u, round %u: not taken", i, round);
            pos[i] += MiB;
        }
    }
    node_close(&n);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_sequential_reader, setup),
        cmocka_unit_test_setup(test_small_unaligned_reads, setup),
        cmocka_unit_test_setup(test_reads_spanning_many_chunks, setup),
        cmocka_unit_test_setup(test_many_outstanding, setup),
        cmocka_unit_test_setup(test_random_reads_not_taken, setup),
        cmocka_unit_test_setup(test_invalidate, setup),
        cmocka_unit_test_setup(test_read_error, setup),
        cmocka_unit_test_setup(test_memory_bounds, setup),
        cmocka_unit_test_setup(test_idle_then_free, setup),
        cmocka_unit_test_setup(test_interleaved_streams, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
