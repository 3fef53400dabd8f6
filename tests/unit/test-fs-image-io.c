/* Unit tests of fs/image-io.c (the mount's per-node I/O on the loop
 * thread) against the contract in its header comment and fs.h, on a fake
 * image (fake-image.h) whose operations complete later, in a scripted
 * order or with an error, and with fake FUSE requests (the io_replies
 * seam of fs.h records every answer):
 *  - write-behind: a write is answered before the image has it;
 *  - a read overlapping a pending write is not issued before the write
 *    completed, and returns the write's bytes (the write is slow, the
 *    read fast: without parking the read returns the old bytes);
 *  - a read that overlaps nothing pending is issued at once;
 *  - overlapping writes land in the order they were accepted (the first
 *    one slow: without parking the second lands first and is overwritten);
 *  - a failed write-behind write becomes the sticky error: the next
 *    write, flush and fsync return it once, then 0;
 *  - fsync answers after every accepted write completed and the image was
 *    flushed;
 *  - an unaligned write on a 512-byte-block image keeps the bytes around
 *    it (read-modify-write).
 * Results are compared with the fake's contents (fake_image_peek). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs.h"
#include "fake-image.h"

#define KiB 1024u
#define IMG_SIZE (4u * 1024 * KiB)
/* Longest wait for one condition (a hang guard, not a timing assertion). */
#define STUCK_ROUNDS 20000

/* ---- fake requests ------------------------------------------------------ */

struct treq {
    bool answered;
    int err;                    /* errno answered (0: success) */
    size_t count;               /* write: bytes */
    unsigned char *data;        /* read: bytes */
    size_t len;
    unsigned seq;               /* order of answers */
};

static unsigned answers;

static struct treq *treq_of(fuse_req_t req)
{
    struct treq *t = (struct treq *)req;
    assert_false(t->answered);  /* every request is answered once */
    t->answered = true;
    t->seq = ++answers;
    return t;
}

static int r_err(fuse_req_t req, int err)
{
    treq_of(req)->err = err;
    return 0;
}

static int r_write(fuse_req_t req, size_t count)
{
    treq_of(req)->count = count;
    return 0;
}

static int r_buf(fuse_req_t req, const char *buf, size_t size)
{
    struct treq *t = treq_of(req);
    t->data = malloc(size ? size : 1);
    assert_non_null(t->data);
    if (size)
        memcpy(t->data, buf, size);
    t->len = size;
    return 0;
}

static int r_iov(fuse_req_t req, const struct iovec *iov, int count)
{
    struct treq *t = treq_of(req);
    size_t len = 0;
    for (int i = 0; i < count; i++)
        len += iov[i].iov_len;
    t->data = malloc(len ? len : 1);
    assert_non_null(t->data);
    for (int i = 0; i < count; i++) {
        memcpy(t->data + t->len, iov[i].iov_base, iov[i].iov_len);
        t->len += iov[i].iov_len;
    }
    return 0;
}

static void r_buf_async(fuse_req_t req, void *buf, const char *data,
                        size_t len)
{
    r_buf(req, data, len);
    free(buf);
}

static const struct io_replies test_replies = {
    .err = r_err, .write = r_write, .buf = r_buf, .iov = r_iov,
    .buf_async = r_buf_async,
};

#define REQ(t) ((fuse_req_t)(void *)(t))

/* ---- fixture ------------------------------------------------------------ */

/* Scripted latency: writes at [slow_off, slow_off + slow_len) take
 * `slow_ms`, everything else completes on the next loop round. */
struct script {
    uint64_t slow_off, slow_len;
    int slow_ms;
    unsigned writes_seen;
};

struct fx {
    struct imgfs fs;
    struct loop *loop;
    struct fake_image *f;
    struct node n;
    struct script sc;
};

static int latency(void *opaque, enum fake_op op, uint64_t off, uint64_t len)
{
    struct script *sc = opaque;
    (void)len;
    if (op == FAKE_WRITE) {
        sc->writes_seen++;
        if (off >= sc->slow_off && off < sc->slow_off + sc->slow_len)
            return sc->slow_ms;
    }
    return 0;
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->loop = loop_new();
    assert_non_null(x->loop);
    x->fs.loop = x->loop;
    pthread_mutex_init(&x->fs.tree_lock, NULL);
    pthread_mutex_init(&x->fs.jobs_lock, NULL);
    fs_global = &x->fs;
    struct fake_config cfg = { .size = IMG_SIZE, .block_size = 512,
                               .latency = latency,
                               .latency_opaque = &x->sc, .seed = 7 };
    x->f = fake_image_new(x->loop, "fake", &cfg);
    assert_non_null(x->f);
    unsigned char *old = malloc(IMG_SIZE);
    assert_non_null(old);
    memset(old, 0xee, IMG_SIZE);
    fake_image_poke(x->f, 0, old, IMG_SIZE);
    free(old);
    /* A top-level image node, open once (as by one FUSE handle), so the
     * image stays open; no read-ahead. */
    x->n.kind = NODE_IMAGE;
    x->n.name = (char *)"img";
    x->n.fixed = true;
    x->n.img = x->f->img;
    x->n.fixed_size = IMG_SIZE;
    x->n.opens = 1;
    x->n.writers = 1;
    io_replies = &test_replies;
    answers = 0;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    assert_null(x->n.inflight);
    assert_null(x->n.parked_head);
    assert_int_equal(fake_image_close(x->f), 0);
    loop_free(x->loop);
    pthread_mutex_destroy(&x->fs.tree_lock);
    pthread_mutex_destroy(&x->fs.jobs_lock);
    fs_global = NULL;
    free(x);
    return 0;
}

/* Run the loop until `t` is answered. */
static void wait_answer(struct fx *x, struct treq *t)
{
    for (int i = 0; i < STUCK_ROUNDS && !t->answered; i++)
        assert_int_equal(loop_run_once(x->loop, 5), 0);
    assert_true(t->answered);
}

/* Run the loop until nothing of the node is in flight or parked. */
static void wait_idle(struct fx *x)
{
    for (int i = 0; i < STUCK_ROUNDS && (x->n.inflight || x->n.parked_head);
         i++)
        assert_int_equal(loop_run_once(x->loop, 5), 0);
    assert_null(x->n.inflight);
    assert_null(x->n.parked_head);
}

static void *bytes(unsigned char c, size_t len)
{
    void *p = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
    assert_non_null(p);
    memset(p, c, len);
    return p;
}

static void expect_fake(struct fx *x, uint64_t off, unsigned char c,
                        size_t len)
{
    unsigned char *got = malloc(len);
    assert_non_null(got);
    fake_image_peek(x->f, off, got, len);
    for (size_t i = 0; i < len; i++)
        if (got[i] != c)
            fail_msg("image byte %llu is 0x%02x, expected 0x%02x",
                     (unsigned long long)(off + i), got[i], c);
    free(got);
}

/* ---- tests -------------------------------------------------------------- */

static void test_read_waits_for_overlapping_write(void **state)
{
    struct fx *x = *state;
    x->sc = (struct script){ .slow_off = 0, .slow_len = IMG_SIZE,
                             .slow_ms = 40 };
    struct treq w = { 0 }, r = { 0 };
    io_write(REQ(&w), &x->n, bytes(0x11, 64 * KiB), 64 * KiB, 0);
    /* Write-behind: answered before the image has the bytes. */
    assert_true(w.answered);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.count, 64 * KiB);
    expect_fake(x, 0, 0xee, 64 * KiB);
    uint64_t reads_before = x->f->stats.reads;
    io_read(REQ(&r), &x->n, 8 * KiB, 4 * KiB);
    /* Parked: not issued while the write it overlaps is in flight. */
    assert_int_equal(x->f->stats.reads, reads_before);
    assert_false(r.answered);
    wait_answer(x, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.len, 8 * KiB);
    unsigned char want[8 * KiB];
    memset(want, 0x11, sizeof want);
    assert_memory_equal(r.data, want, sizeof want);
    free(r.data);
    wait_idle(x);
}

static void test_read_elsewhere_not_parked(void **state)
{
    struct fx *x = *state;
    x->sc = (struct script){ .slow_off = 0, .slow_len = IMG_SIZE,
                             .slow_ms = 40 };
    struct treq w = { 0 }, r = { 0 };
    io_write(REQ(&w), &x->n, bytes(0x22, 64 * KiB), 64 * KiB, 0);
    uint64_t reads_before = x->f->stats.reads;
    io_read(REQ(&r), &x->n, 4 * KiB, 1024 * KiB);
    assert_int_equal(x->f->stats.reads, reads_before + 1);   /* issued */
    wait_answer(x, &r);
    assert_int_equal(r.err, 0);
    unsigned char want[4 * KiB];
    memset(want, 0xee, sizeof want);
    assert_memory_equal(r.data, want, sizeof want);
    free(r.data);
    wait_idle(x);
}

static void test_overlapping_writes_land_in_order(void **state)
{
    struct fx *x = *state;
    /* The first write (at 0) is slow, the second (at 32 KiB) fast. */
    x->sc = (struct script){ .slow_off = 0, .slow_len = 1, .slow_ms = 40 };
    struct treq w1 = { 0 }, w2 = { 0 }, w3 = { 0 };
    io_write(REQ(&w1), &x->n, bytes(0x01, 64 * KiB), 64 * KiB, 0);
    io_write(REQ(&w2), &x->n, bytes(0x02, 64 * KiB), 64 * KiB, 32 * KiB);
    io_write(REQ(&w3), &x->n, bytes(0x03, 16 * KiB), 16 * KiB, 40 * KiB);
    assert_true(w1.answered && w2.answered && w3.answered);
    wait_idle(x);
    expect_fake(x, 0, 0x01, 32 * KiB);
    expect_fake(x, 32 * KiB, 0x02, 8 * KiB);
    expect_fake(x, 40 * KiB, 0x03, 16 * KiB);
    expect_fake(x, 56 * KiB, 0x02, 40 * KiB);
    /* Issued in acceptance order. */
    assert_int_equal(x->f->stats.log_len, 3);
    assert_int_equal(x->f->stats.log[0].offset, 0);
    assert_int_equal(x->f->stats.log[1].offset, 32 * KiB);
    assert_int_equal(x->f->stats.log[2].offset, 40 * KiB);
}

static void test_write_error_is_sticky_once(void **state)
{
    struct fx *x = *state;
    x->f->error_op = FAKE_WRITE;
    x->f->error_offset = 128 * KiB;
    x->f->error_errno = -EIO;
    x->f->error_count = 1;
    struct treq w = { 0 }, f1 = { 0 }, f2 = { 0 }, w2 = { 0 }, w3 = { 0 };
    io_write(REQ(&w), &x->n, bytes(0x33, 4 * KiB), 4 * KiB, 128 * KiB);
    assert_true(w.answered);
    assert_int_equal(w.err, 0);         /* write-behind: said ok */
    wait_idle(x);
    /* The next write gets the error ... */
    io_write(REQ(&w2), &x->n, bytes(0x44, 4 * KiB), 4 * KiB, 0);
    assert_true(w2.answered);
    assert_int_equal(w2.err, EIO);
    expect_fake(x, 0, 0xee, 4 * KiB);   /* ... and is not written */
    /* ... and so does the next flush, once: the error is still there
     * (returned by write, not taken). */
    io_flush(REQ(&f1), &x->n, false);
    wait_answer(x, &f1);
    assert_int_equal(f1.err, EIO);
    io_flush(REQ(&f2), &x->n, false);
    wait_answer(x, &f2);
    assert_int_equal(f2.err, 0);
    io_write(REQ(&w3), &x->n, bytes(0x55, 4 * KiB), 4 * KiB, 0);
    assert_int_equal(w3.err, 0);
    wait_idle(x);
    expect_fake(x, 0, 0x55, 4 * KiB);
}

static void test_write_error_reaches_fsync(void **state)
{
    struct fx *x = *state;
    x->sc = (struct script){ .slow_off = 0, .slow_len = IMG_SIZE,
                             .slow_ms = 20 };
    x->f->error_op = FAKE_WRITE;
    x->f->error_offset = 256 * KiB;
    x->f->error_errno = -ENOSPC;
    x->f->error_count = 1;
    struct treq w = { 0 }, s = { 0 }, s2 = { 0 };
    io_write(REQ(&w), &x->n, bytes(0x66, 8 * KiB), 8 * KiB, 256 * KiB);
    assert_int_equal(w.err, 0);
    /* fsync while the failing write is still in flight: it waits for it
     * and returns its error. */
    io_flush(REQ(&s), &x->n, true);
    assert_false(s.answered);
    wait_answer(x, &s);
    assert_int_equal(s.err, ENOSPC);
    io_flush(REQ(&s2), &x->n, true);
    wait_answer(x, &s2);
    assert_int_equal(s2.err, 0);
}

static void test_fsync_after_writes_and_flush(void **state)
{
    struct fx *x = *state;
    x->sc = (struct script){ .slow_off = 0, .slow_len = IMG_SIZE,
                             .slow_ms = 20 };
    struct treq w[4] = { 0 }, s = { 0 };
    for (int i = 0; i < 4; i++)
        io_write(REQ(&w[i]), &x->n, bytes((unsigned char)(0x70 + i),
                                          32 * KiB), 32 * KiB,
                 (uint64_t)i * 512 * KiB);
    uint64_t flushes = x->f->stats.flushes;
    io_flush(REQ(&s), &x->n, true);
    wait_answer(x, &s);
    assert_int_equal(s.err, 0);
    /* Every write is on the image and the image was flushed. */
    for (int i = 0; i < 4; i++)
        expect_fake(x, (uint64_t)i * 512 * KiB, (unsigned char)(0x70 + i),
                    32 * KiB);
    assert_int_equal(x->f->stats.flushes, flushes + 1);
    assert_null(x->n.inflight);
}

static void test_unaligned_write_keeps_neighbours(void **state)
{
    struct fx *x = *state;
    struct treq w = { 0 }, r = { 0 };
    io_write(REQ(&w), &x->n, bytes(0x99, 1000), 1000, 700);
    wait_idle(x);
    expect_fake(x, 0, 0xee, 700);
    expect_fake(x, 700, 0x99, 1000);
    expect_fake(x, 1700, 0xee, 2048 - 1700);
    io_read(REQ(&r), &x->n, 10, 695);
    wait_answer(x, &r);
    assert_int_equal(r.len, 10);
    const unsigned char want[10] = { 0xee, 0xee, 0xee, 0xee, 0xee,
                                     0x99, 0x99, 0x99, 0x99, 0x99 };
    assert_memory_equal(r.data, want, 10);
    free(r.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_waits_for_overlapping_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_elsewhere_not_parked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_writes_land_in_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_is_sticky_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_reaches_fsync,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_after_writes_and_flush,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unaligned_write_keeps_neighbours,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
