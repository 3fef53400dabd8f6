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
 *  - RA_STREAMS interleaved sequential readers;
 *  - readahead_try_answer (any thread) and readahead_refill (loop thread):
 *    on a warm stream try_answer answers 4 KiB, 32 KiB, 1 MiB, unaligned
 *    and chunk-spanning reads before it returns with the image's bytes,
 *    and says no (no reply, no image read) for chunks still in flight,
 *    ranges outside every stream and after readahead_invalidate; a reader
 *    living on try_answer + refill (as the mount does) reads the whole
 *    image right, > 90 % of its reads answered by try_answer, refill
 *    keeping >= 8 chunks read ahead and >= 8 image reads in flight (also
 *    for a dd-like reader that tries try_answer from its first read); a
 *    second thread calling try_answer while the loop thread reads,
 *    refills, completes chunks and invalidates (meant for ASan and TSan
 *    builds: -Db_sanitize=address,undefined and -Db_sanitize=thread);
 *    inflight/idle/free with reads issued by refill (and a free from
 *    inside the idle callback).
 * Every reply is checked against the fake's contents; a read that is not
 * taken is read directly from the fake (fake_image_peek), as the mount
 * would read the image itself. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    /* Image reads issued: furthest end, and the first ones since the test
     * last reset rlog_n. */
    uint64_t issued_end;
    struct { uint64_t off, len; } rlog[64];
    unsigned rlog_n;
    bool free_in_idle;          /* readahead_free from the idle callback */
};

static void on_idle(void *opaque)
{
    struct node *n = opaque;
    n->idle_calls++;
    if (!n->ra)
        return;                 /* after a free in the idle call: counted */
    if (readahead_inflight(n->ra) != 0 || n->f->stats.reads_inflight != 0)
        n->idle_busy++;
    n->done_at_idle = n->f->stats.reads - n->f->stats.reads_inflight;
    mem_sample();
    if (n->free_in_idle) {
        /* "the owner may now ... free ra" */
        readahead_free(n->ra);
        n->ra = NULL;
        n->free_in_idle = false;
    }
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
    if (op == FAKE_READ) {
        if (offset + len > n->issued_end)
            n->issued_end = offset + len;
        if (n->rlog_n < sizeof n->rlog / sizeof n->rlog[0]) {
            n->rlog[n->rlog_n].off = offset;
            n->rlog[n->rlog_n].len = len;
            n->rlog_n++;
        }
    }
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

/* Make a stream sequential: read [0, mib MiB) in 1 MiB reads from offset
 * 0 (the first read is not taken, the others are). */
static void warm_up(struct node *n, unsigned mib)
{
    assert_false(read_one(n, 0, MiB));
    for (uint64_t pos = 1 * MiB; pos < (uint64_t)mib * MiB; pos += MiB)
        assert_true(read_one(n, pos, MiB));
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

    warm_up(&n, 7);

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

/* ---- 10. try_answer on a warm stream ------------------------------------ */

/* Ask readahead_try_answer for a->offset/a->size (reply: on_reply).  Either
 * way it issues no image read (it runs on any thread, the image only on the
 * loop's) and leaves *refill false when it says no; when it answers, the
 * reply came exactly once before it returned, without error, with exactly
 * the image's bytes. */
static bool try_one(struct node *n, struct answer *a, bool *refill)
{
    uint64_t reads = n->f->stats.reads;
    *refill = false;
    a->taken = readahead_try_answer(n->ra, a->offset, a->size, on_reply, a,
                                    refill);
    assert_int_equal(n->f->stats.reads, reads);
    if (!a->taken) {
        assert_int_equal(a->calls, 0);
        assert_false(*refill);
        return false;
    }
    check_answer(n, a);
    assert_true(a->iovcnt >= 1);
    return true;
}

/* try_answer must say no to [off, +size). */
static void expect_no_answer(struct node *n, struct answer *a, uint64_t off,
                             size_t size, const char *why)
{
    bool refill;
    answer_init(a, off, size);
    if (try_one(n, a, &refill))
        fail_msg("try_answer [%llu, +%zu) answered (%s)",
                 (unsigned long long)off, size, why);
}

static void test_try_answer_warm(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 64 * MiB + 5555;
    struct fake_config cfg = fake_cfg(size, 512, 14, 6, 1);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 14);

    /* Warm: 4 sequential 1 MiB reads (the window doubles to 16 chunks),
     * then the chunks ahead finish reading: [4 MiB, 12 MiB) at least is
     * buffered. */
    warm_up(&n, 4);
    run_until(loop, node_quiet, &n, "the read-ahead to fill");
    assert_true(n.issued_end >= 12 * MiB);      /* precondition */

    /* refill: 1 must be set, 0 must not, -1 either (the header's "used up
     * a chunk" leaves a read from inside a chunk to its end open). */
    static const struct {
        uint64_t off;
        size_t size;
        int refill;
    } ready[] = {
        { 4 * MiB + 12345, 4 * KiB, 0 },
        { 5 * MiB + 777, 32 * KiB, 0 },
        { 6 * MiB, 1 * MiB, 1 },                /* one whole chunk */
        { 7 * MiB + 4097, 1 * MiB, -1 },        /* 1 MiB over chunks 7, 8 */
        { 10 * MiB - 3000, 6000, -1 },          /* spans chunks 9 and 10 */
        { 11 * MiB + 1, 4 * KiB - 2, 0 },
    };
    enum { NREADY = sizeof ready / sizeof ready[0] };
    struct answer quick[NREADY];
    for (unsigned i = 0; i < NREADY; i++) {
        bool refill;
        answer_init(&quick[i], ready[i].off, ready[i].size);
        if (!try_one(&n, &quick[i], &refill))
            fail_msg("try_answer [%llu, +%zu) on finished chunks: false",
                     (unsigned long long)ready[i].off, ready[i].size);
        if (ready[i].refill >= 0 && refill != (ready[i].refill == 1))
            fail_msg("try_answer [%llu, +%zu): *refill %s",
                     (unsigned long long)ready[i].off, ready[i].size,
                     refill ? "set" : "not set");
    }

    /* Chunks in flight: a read inside the window moves it on; the chunks
     * it adds are being read (the fake never completes a read inside the
     * call that issued it, and the loop does not run here). */
    n.rlog_n = 0;
    struct answer mover;
    answer_init(&mover, 12 * MiB, MiB);
    assert_true(offer(&n, &mover));
    assert_int_equal(mover.calls, 1);   /* its chunk is there: at once */
    check_answer(&n, &mover);
    assert_true(n.rlog_n >= 2);
    uint64_t first = n.rlog[0].off;
    uint64_t last = n.rlog[n.rlog_n - 1].off;
    assert_true(first >= 13 * MiB);
    struct answer busy[4];
    expect_no_answer(&n, &busy[0], last + 100, 4 * KiB, "chunk in flight");
    expect_no_answer(&n, &busy[1], first, n.rlog[0].len,
                     "the whole chunk in flight");
    expect_no_answer(&n, &busy[2], first - 2048, 4096,
                     "a finished chunk and one in flight");
    expect_no_answer(&n, &busy[3], first - MiB + 5, MiB,
                     "1 MiB: a finished chunk and one in flight");

    /* Outside every stream: the first read prefetched nothing; no stream
     * reaches 40 MiB or the end (16 chunks from the reader at 13 MiB). */
    struct answer outside[3];
    expect_no_answer(&n, &outside[0], 0, 4 * KiB, "never read ahead");
    expect_no_answer(&n, &outside[1], 40 * MiB + 3, 32 * KiB,
                     "beyond every window");
    expect_no_answer(&n, &outside[2], size - 4 * KiB, 4 * KiB,
                     "beyond every window");

    /* After readahead_invalidate: nothing, although every chunk is there. */
    run_until(loop, node_quiet, &n, "the chunks in flight");
    struct answer before;
    bool refill;
    answer_init(&before, 13 * MiB + 5, 32 * KiB);
    assert_true(try_one(&n, &before, &refill));     /* precondition */
    readahead_invalidate(n.ra);
    struct answer after[3];
    expect_no_answer(&n, &after[0], 14 * MiB + 5, 32 * KiB,
                     "after invalidate");
    expect_no_answer(&n, &after[1], 13 * MiB + 5 + 32 * KiB, 4 * KiB,
                     "after invalidate");
    expect_no_answer(&n, &after[2], first, MiB, "after invalidate");

    node_close(&n);
    /* still one reply each once the loop ran dry, none for a "no" */
    struct answer *all[] = { quick, busy, outside, after, &mover, &before };
    size_t counts[] = { NREADY, 4, 3, 3, 1, 1 };
    for (unsigned k = 0; k < 6; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            assert_int_equal(all[k][i].calls, all[k][i].taken ? 1 : 0);
            answer_free(&all[k][i]);
        }
    }
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 11. a reader living on try_answer + refill ------------------------- */

/* One read the way the mount serves it: try_answer (and readahead_refill
 * at the reader's new position when it asks for it), else readahead_read
 * on the loop thread, else directly from the image.  Every answer is
 * checked.  Returns whether try_answer answered it. */
struct fast_stats {
    unsigned reads, quick, refills, direct;
    bool check_ahead;           /* refill must have read >= 8 chunks ahead */
};

static bool fast_read(struct node *n, uint64_t pos, size_t len,
                      struct fast_stats *s)
{
    struct answer a;
    bool refill;
    answer_init(&a, pos, len);
    s->reads++;
    bool quick = try_one(n, &a, &refill);
    if (quick) {
        s->quick++;
        if (refill) {
            s->refills++;
            readahead_refill(n->ra, pos + len);
            uint64_t ahead = pos + len + 8 * MiB;
            if (ahead > n->f->img->size)
                ahead = n->f->img->size;
            if (s->check_ahead && n->issued_end < ahead)
                fail_msg("after readahead_refill(%llu) the image is read "
                         "up to %llu only", (unsigned long long)(pos + len),
                         (unsigned long long)n->issued_end);
        }
    } else if (offer(n, &a)) {
        run_until(n->loop, answered, &a, "a reply");
        check_answer(n, &a);
    } else {
        s->direct++;                    /* offer read it from the image */
    }
    answer_free(&a);
    return quick;
}

static void test_try_answer_refill_reader(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 48 * MiB + 3333;
    /* delays in loop rounds only: the same run every time */
    struct fake_config cfg = fake_cfg(size, 512, 15, 8, 0);
    struct node n;
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 15);

    /* warm-up through readahead_read: the window reaches 16 chunks; then
     * every image read issued from here on comes from readahead_refill */
    warm_up(&n, 4);
    run_until(loop, node_quiet, &n, "the read-ahead to fill");
    n.f->stats.max_reads_inflight = 0;
    uint64_t warm_reads = n.f->stats.reads;

    /* 32 KiB reads after one of 5000 bytes (so they straddle chunk
     * boundaries).  In even 12 MiB stretches the image keeps pace (a loop
     * round every 8 reads); in odd ones the reader outruns it (no loop
     * round unless it waits). */
    struct fast_stats s = { .check_ahead = true };
    for (uint64_t pos = 4 * MiB; pos < size;) {
        size_t len = clip(pos, s.reads == 0 ? 5000 : 32 * KiB, size);
        fast_read(&n, pos, len, &s);
        pos += len;
        if ((pos / (12 * MiB)) % 2 == 0 && s.reads % 8 == 0)
            assert_int_equal(loop_run_once(loop, 0), 0);
    }
    print_message("    %u reads: %u by try_answer, %u refills, %u direct; "
                  "%u image reads in flight at most, %llu issued\n",
                  s.reads, s.quick, s.refills, s.direct,
                  n.f->stats.max_reads_inflight,
                  (unsigned long long)(n.f->stats.reads - warm_reads));
    if (s.quick * 10 <= s.reads * 9)
        fail_msg("only %u of %u reads answered by try_answer", s.quick,
                 s.reads);
    assert_true(s.refills > 0);
    if (n.f->stats.max_reads_inflight < 8)
        fail_msg("at most %u image reads in flight after the warm-up",
                 n.f->stats.max_reads_inflight);
    node_close(&n);

    /* (b) Cold, like the mount serves `dd bs=1M`: every read tries
     * try_answer first, from the very first one.  The window must still
     * grow: >= 8 image reads in flight (as in test 1). */
    cfg = fake_cfg(size, 512, 19, 8, 3);
    node_open(&n, loop, &cfg, 1 * MiB, 16);
    fill_pattern(n.f, 0, size, 19);
    struct fast_stats c = { .check_ahead = false };
    for (uint64_t pos = 0; pos < size; pos += MiB)
        fast_read(&n, pos, clip(pos, MiB, size), &c);
    print_message("    cold: %u reads: %u by try_answer, %u refills, %u "
                  "direct; %u image reads in flight at most\n", c.reads,
                  c.quick, c.refills, c.direct,
                  n.f->stats.max_reads_inflight);
    if (n.f->stats.max_reads_inflight < 8)
        fail_msg("cold reader: at most %u image reads in flight",
                 n.f->stats.max_reads_inflight);
    node_close(&n);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 12. try_answer from another thread --------------------------------- */

/* The second thread: try_answer on ranges around the loop thread's reader,
 * each answer checked against the pattern (computed, never read from the
 * fake, which belongs to the loop thread).  No cmocka call here: the first
 * failure is written to `why` for the main thread. */
struct prober {
    struct readahead *ra;
    uint64_t size, salt, chunk;
    _Atomic uint64_t reader_pos;        /* the loop thread's reader */
    atomic_bool stop;
    atomic_uint tries, answered, refills_asked;
    _Atomic uint64_t refill_pos;        /* pos + 1 to refill at; 0: none */
    atomic_bool failed;
    char why[256];
    /* prober thread only */
    pthread_t self;
    unsigned char *buf;
    size_t got;
    unsigned calls;
    bool other_thread;
};

#define PROBE_MAX_TRIES 2000000u
#define PROBE_MAX_SIZE (512 * KiB)

static void probe_reply(void *opaque, int err, const struct iovec *iov,
                        int iovcnt)
{
    struct prober *p = opaque;
    p->calls++;
    if (!pthread_equal(pthread_self(), p->self))
        p->other_thread = true;
    if (err) {
        p->got = SIZE_MAX;
        return;
    }
    for (int i = 0; i < iovcnt; i++) {
        if (p->got + iov[i].iov_len <= PROBE_MAX_SIZE)
            memcpy(p->buf + p->got, iov[i].iov_base, iov[i].iov_len);
        p->got += iov[i].iov_len;
    }
}

static void probe_fail(struct prober *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void probe_fail(struct prober *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
    atomic_store(&p->failed, true);
}

/* Index of the first byte of buf (the image at off) that differs from
 * fill_pattern's, or len. */
static size_t pattern_mismatch(const unsigned char *buf, uint64_t off,
                               size_t len, uint64_t salt)
{
    uint64_t word = 0;
    for (size_t i = 0; i < len; i++) {
        uint64_t pos = off + i;
        if (i == 0 || (pos & 7) == 0)
            word = mix64((pos >> 3) ^ salt);
        if (buf[i] != (unsigned char)(word >> (8 * (pos & 7))))
            return i;
    }
    return len;
}

/* Leave the lock to the loop thread between tries: a mutex taken again
 * at once starves the other thread (under TSan, for seconds). */
static void probe_pause(unsigned i)
{
    if (i % 8 == 7) {
        struct timespec pause = { 0, 10000 };
        nanosleep(&pause, NULL);
    } else {
        sched_yield();
    }
}

static void *prober_main(void *arg)
{
    struct prober *p = arg;
    p->self = pthread_self();
    static const size_t sizes[] = { 4 * KiB, 32 * KiB, 512 * KiB, 0 };
    uint64_t r = p->salt;
    for (unsigned i = 0; i < PROBE_MAX_TRIES && !atomic_load(&p->stop) &&
                         !atomic_load(&p->failed); i++) {
        r = mix64(r);
        uint64_t base = atomic_load(&p->reader_pos);
        size_t len = sizes[r % 4] ? sizes[r % 4]
                                  : (size_t)(1 + (r >> 40) % 200000);
        /* from a chunk behind the reader to 16 chunks ahead */
        uint64_t lo = base > p->chunk ? base - p->chunk : 0;
        uint64_t off = lo + (r >> 8) % (17 * p->chunk);
        if (off >= p->size)
            continue;
        len = clip(off, len, p->size);
        p->calls = 0;
        p->got = 0;
        bool refill = false;
        atomic_fetch_add(&p->tries, 1);
        if (!readahead_try_answer(p->ra, off, len, probe_reply, p,
                                  &refill)) {
            if (p->calls || refill)
                probe_fail(p, "try_answer [%llu, +%zu): false, but %u "
                           "replies, refill %d", (unsigned long long)off,
                           len, p->calls, refill);
            probe_pause(i);
            continue;
        }
        if (p->calls != 1 || p->other_thread || p->got != len) {
            probe_fail(p, "try_answer [%llu, +%zu): %u replies (before "
                       "returning), %zu bytes, %s thread",
                       (unsigned long long)off, len, p->calls, p->got,
                       p->other_thread ? "another" : "the calling");
            continue;
        }
        size_t bad = pattern_mismatch(p->buf, off, len, p->salt);
        if (bad < len)
            probe_fail(p, "try_answer [%llu, +%zu) from another thread: "
                       "byte %llu is wrong", (unsigned long long)off, len,
                       (unsigned long long)(off + bad));
        atomic_fetch_add(&p->answered, 1);
        if (refill) {
            /* as the mount posts readahead_refill to the loop thread */
            atomic_store(&p->refill_pos, off + len + 1);
            atomic_fetch_add(&p->refills_asked, 1);
        }
        probe_pause(i);
    }
    return NULL;
}

/* The running prober, stopped by prober_teardown if its test failed. */
static struct prober *running_prober;
static pthread_t running_thread;

static void prober_stop(void)
{
    if (!running_prober)
        return;
    atomic_store(&running_prober->stop, true);
    pthread_join(running_thread, NULL);
    running_prober = NULL;
}

static int prober_teardown(void **state)
{
    (void)state;
    prober_stop();
    return 0;
}

/* Loop thread: run the refill the prober asked for, if any. */
static void serve_prober(struct node *n, struct prober *p)
{
    uint64_t pos = atomic_exchange(&p->refill_pos, 0);
    if (pos)
        readahead_refill(n->ra, pos - 1);
}

static void test_try_answer_threads(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    /* 256 KiB chunks and a 12 MiB image: TSan makes every fresh buffer
     * page costly (shadow page faults, TLB flushes across threads) */
    const uint64_t chunk = 256 * KiB;
    uint64_t size = 12 * MiB + 1234;
    struct fake_config cfg = fake_cfg(size, 512, 16, 4, 1);
    struct node n;
    node_open(&n, loop, &cfg, chunk, 16);
    fill_pattern(n.f, 0, size, 16);     /* fixed from here on */

    assert_false(read_one(&n, 0, chunk));
    for (uint64_t pos = chunk; pos < 4 * chunk; pos += chunk)
        assert_true(read_one(&n, pos, chunk));
    run_until(loop, node_quiet, &n, "the read-ahead to fill");

    static struct prober p;
    memset(&p, 0, sizeof p);
    p.ra = n.ra;
    p.size = size;
    p.salt = 16;
    p.chunk = chunk;
    p.buf = malloc(PROBE_MAX_SIZE);
    assert_non_null(p.buf);
    atomic_store(&p.reader_pos, 4 * chunk);
    assert_int_equal(pthread_create(&running_thread, NULL, prober_main, &p),
                     0);
    running_prober = &p;

    /* The loop thread: 5 passes of a reader (try_answer, refill,
     * readahead_read), loop rounds completing chunks, an invalidate every
     * 97 reads, and now and then a wait until the prober got an answer (so
     * that both threads really work on the same stream). */
    static const size_t sizes[] = { 32 * KiB, 64 * KiB + 123, 4 * KiB,
                                    200 * KiB };
    struct fast_stats s = { .check_ahead = false };
    unsigned invalidates = 0, waits = 0;
    for (unsigned pass = 0; pass < 5 && !atomic_load(&p.failed); pass++) {
        for (uint64_t pos = pass ? 0 : 4 * chunk; pos < size;) {
            atomic_store(&p.reader_pos, pos);
            serve_prober(&n, &p);
            size_t len = clip(pos, sizes[(s.reads / 50) % 4], size);
            fast_read(&n, pos, len, &s);
            pos += len;
            if (s.reads % 3 == 0)
                assert_int_equal(loop_run_once(loop, 0), 0);
            if (s.reads % 97 == 0) {
                readahead_invalidate(n.ra);
                invalidates++;
            }
            if (s.reads % 100 == 0) {
                unsigned seen = atomic_load(&p.answered);
                uint64_t give_up = loop_now_ns() + STUCK_NS;
                while (atomic_load(&p.answered) == seen &&
                       !atomic_load(&p.failed)) {
                    assert_int_equal(loop_run_once(loop, 1), 0);
                    serve_prober(&n, &p);
                    if (loop_now_ns() > give_up)
                        fail_msg("the prober never got an answer");
                }
                waits++;
            }
        }
    }
    prober_stop();
    free(p.buf);
    if (atomic_load(&p.failed))
        fail_msg("%s", p.why);
    print_message("    loop thread: %u reads (%u by try_answer), %u "
                  "invalidates, %u waits; prober: %u of %u answered, %u "
                  "refills asked\n", s.reads, s.quick, invalidates, waits,
                  atomic_load(&p.answered), atomic_load(&p.tries),
                  atomic_load(&p.refills_asked));
    assert_true(atomic_load(&p.answered) >= waits);
    assert_true(waits > 0 && invalidates > 0);
    node_close(&n);
    assert_int_equal(held(), 0);
    loop_free(loop);
}

/* ---- 13. inflight, idle and free with the refill path ------------------- */

/* Warm up, then read [4 MiB, 8 MiB) with try_answer only, refilling when
 * asked, without running the loop: reads issued by refill are left in
 * flight. */
static void refill_reader(struct node *n)
{
    for (uint64_t pos = 0; pos < 4 * MiB; pos += MiB)
        read_one(n, pos, MiB);
    run_until(n->loop, node_quiet, n, "the read-ahead to fill");
    uint64_t by_refill = 0;
    for (uint64_t pos = 4 * MiB; pos < 8 * MiB; pos += 64 * KiB) {
        struct answer a;
        bool refill;
        answer_init(&a, pos, 64 * KiB);
        if (!try_one(n, &a, &refill))
            fail_msg("try_answer at %llu: false", (unsigned long long)pos);
        answer_free(&a);
        if (refill) {
            uint64_t reads = n->f->stats.reads;
            readahead_refill(n->ra, pos + 64 * KiB);
            by_refill += n->f->stats.reads - reads;
        }
        /* in flight for read-ahead exactly when the image has reads */
        assert_int_equal(readahead_inflight(n->ra) > 0,
                         n->f->stats.reads_inflight > 0);
    }
    assert_true(by_refill > 0);
    assert_true(readahead_inflight(n->ra) > 0);     /* refill's reads */
}

static bool ra_freed(void *arg)
{
    struct node *n = arg;
    return n->ra == NULL;
}

static void test_refill_idle_then_free(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    uint64_t size = 32 * MiB;
    /* slow reads, each chunk read in 4 pieces */
    struct fake_config cfg = fake_cfg(size, 512, 17, 3, 0);
    cfg.latency = slow_reads;
    cfg.max_request = 256 * KiB;
    struct node n;

    /* (a) wait for the idle call, then free */
    node_open(&n, loop, &cfg, 1 * MiB, 8);
    fill_pattern(n.f, 0, size, 17);
    refill_reader(&n);
    n.idle_calls = 0;
    run_until(loop, idle_now, &n, "the idle call");
    assert_int_equal(n.idle_busy, 0);
    assert_int_equal(n.f->stats.reads_inflight, 0);
    assert_int_equal(n.done_at_idle, n.f->stats.reads);
    assert_int_equal(n.f->stats.too_long, 0);
    readahead_free(n.ra);
    n.ra = NULL;
    run_dry(loop);
    assert_int_equal(held(), 0);
    n.f->on_issue = NULL;
    assert_int_equal(fake_image_close(n.f), 0);

    /* (b) free from inside the idle callback */
    node_open(&n, loop, &cfg, 1 * MiB, 8);
    fill_pattern(n.f, 0, size, 18);
    refill_reader(&n);
    n.idle_calls = 0;
    n.free_in_idle = true;
    run_until(loop, ra_freed, &n, "the idle call");
    assert_int_equal(n.idle_calls, 1);
    assert_int_equal(n.idle_busy, 0);
    assert_int_equal(n.f->stats.reads_inflight, 0);
    assert_int_equal(n.done_at_idle, n.f->stats.reads);
    run_dry(loop);
    assert_int_equal(n.idle_calls, 1);
    assert_int_equal(held(), 0);
    n.f->on_issue = NULL;
    assert_int_equal(fake_image_close(n.f), 0);
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
        cmocka_unit_test_setup(test_try_answer_warm, setup),
        cmocka_unit_test_setup(test_try_answer_refill_reader, setup),
        cmocka_unit_test_setup_teardown(test_try_answer_threads, setup,
                                        prober_teardown),
        cmocka_unit_test_setup(test_refill_idle_then_free, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
