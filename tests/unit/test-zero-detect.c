/* Unit tests of copier/zero-detect.c: how a buffer splits into data pieces
 * and aligned zero runs, at the edges and against a brute-force model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "copier/zero-detect.h"

/* Collect the pieces of a buffer. */
static size_t pieces(const unsigned char *buf, uint64_t base, size_t len,
                     uint64_t gran, size_t max_data, struct zero_piece *out,
                     size_t cap)
{
    size_t n = 0, pos = 0;
    while (pos < len) {
        assert_true(n < cap);
        out[n] = zero_detect_next(buf, base, len, pos, gran, max_data);
        assert_int_equal(out[n].offset, pos);
        assert_true(out[n].length > 0);
        pos += out[n].length;
        n++;
    }
    assert_int_equal(pos, len);
    return n;
}

static void test_buffer_is_zero_every_position(void **state)
{
    (void)state;
    unsigned char b[64];
    for (size_t len = 0; len <= sizeof b; len++) {
        memset(b, 0, sizeof b);
        assert_true(zero_detect_buffer(b, len));
        for (size_t i = 0; i < len; i++) {
            b[i] = 1;
            assert_false(zero_detect_buffer(b, len));
            b[i] = 0;
        }
    }
}

static void test_all_zero_is_one_zero_piece(void **state)
{
    (void)state;
    static unsigned char buf[65536];
    struct zero_piece p[4];
    assert_int_equal(pieces(buf, 1 << 20, sizeof buf, 4096, 0, p, 4), 1);
    assert_true(p[0].zero);
    assert_int_equal(p[0].length, sizeof buf);
}

static void test_all_data_is_one_data_piece(void **state)
{
    (void)state;
    static unsigned char buf[65536];
    memset(buf, 0x5a, sizeof buf);
    struct zero_piece p[4];
    assert_int_equal(pieces(buf, 0, sizeof buf, 4096, 0, p, 4), 1);
    assert_false(p[0].zero);
    assert_int_equal(p[0].length, sizeof buf);
}

static void test_partial_edge_chunks_are_data(void **state)
{
    (void)state;
    /* Buffer covers image bytes [1024, 1024 + 3 × 4096): all zero, but only
     * chunks [4096, 8192) and [8192, 12288) are whole inside it. */
    static unsigned char buf[3 * 4096];
    struct zero_piece p[8];
    size_t n = pieces(buf, 1024, sizeof buf, 4096, 0, p, 8);
    assert_int_equal(n, 3);
    assert_false(p[0].zero);
    assert_int_equal(p[0].length, 3072);         /* up to 4096 */
    assert_true(p[1].zero);
    assert_int_equal(p[1].length, 8192);         /* 4096..12288 */
    assert_false(p[2].zero);
    assert_int_equal(p[2].length, 1024);         /* 12288..13312 */
}

static void test_short_or_misaligned_runs_stay_data(void **state)
{
    (void)state;
    static unsigned char buf[4 * 4096];
    memset(buf, 0x11, sizeof buf);
    /* 4095 zero bytes in a chunk: not a run. */
    memset(buf + 4096, 0, 4095);
    struct zero_piece p[8];
    assert_int_equal(pieces(buf, 0, sizeof buf, 4096, 0, p, 8), 1);
    /* 8191 zero bytes starting 1 byte into chunk 1: chunk 2 is whole and
     * zero (bytes 8192..12287 < 4097 + 8191 = 12288). */
    memset(buf, 0x11, sizeof buf);
    memset(buf + 4097, 0, 8191);
    size_t n = pieces(buf, 0, sizeof buf, 4096, 0, p, 8);
    assert_int_equal(n, 3);
    assert_false(p[0].zero);
    assert_int_equal(p[0].length, 8192);
    assert_true(p[1].zero);
    assert_int_equal(p[1].offset, 8192);
    assert_int_equal(p[1].length, 4096);
    assert_false(p[2].zero);
}

static void test_max_data_cuts_data_not_zero(void **state)
{
    (void)state;
    static unsigned char buf[8 * 4096];
    memset(buf, 0x22, sizeof buf);
    memset(buf + 4 * 4096, 0, 4 * 4096);     /* second half zero */
    struct zero_piece p[16];
    size_t n = pieces(buf, 0, sizeof buf, 4096, 6000, p, 16);
    /* data 16384 bytes cut at 6000: 6000, 6000, 4384; then one zero run */
    assert_int_equal(n, 4);
    assert_int_equal(p[0].length, 6000);
    assert_int_equal(p[1].length, 6000);
    assert_int_equal(p[2].length, 4384);
    assert_false(p[2].zero);
    assert_true(p[3].zero);
    assert_int_equal(p[3].length, 4 * 4096);
}

static void test_gran_one_byte(void **state)
{
    (void)state;
    unsigned char buf[10] = { 1, 0, 0, 2, 0, 3, 3, 0, 0, 0 };
    struct zero_piece p[10];
    size_t n = pieces(buf, 7, sizeof buf, 1, 0, p, 10);
    assert_int_equal(n, 6);
    bool want_zero[] = { false, true, false, true, false, true };
    size_t want_len[] = { 1, 2, 1, 1, 2, 3 };
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(p[i].zero, want_zero[i]);
        assert_int_equal(p[i].length, want_len[i]);
    }
}

/* Model: byte i is in a zero piece iff its whole absolute chunk lies in the
 * buffer and is all zero. */
static void test_random_against_model(void **state)
{
    (void)state;
    srand(7);
    static unsigned char buf[20000];
    for (int iter = 0; iter < 300; iter++) {
        size_t len = 1 + (size_t)rand() % sizeof buf;
        uint64_t gran = (uint64_t)1 << (rand() % 11);   /* 1..1024 */
        uint64_t base = (uint64_t)rand() % 5000;
        size_t max_data = rand() % 3 ? 0 : 1 + (size_t)rand() % 3000;
        memset(buf, 0, len);
        for (int k = rand() % 40; k > 0; k--)
            buf[(size_t)rand() % len] = (unsigned char)(1 + rand() % 255);
        struct zero_piece *p = calloc(len + 1, sizeof *p);
        size_t n = pieces(buf, base, len, gran, max_data, p, len + 1);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                assert_false(p[i].zero && p[i - 1].zero);
            if (!p[i].zero && max_data)
                assert_true(p[i].length <= max_data);
            for (size_t b = p[i].offset; b < p[i].offset + p[i].length; b++) {
                uint64_t abs = base + b;
                uint64_t cs = abs - abs % gran;
                bool inside = cs >= base && cs + gran <= base + len;
                bool zero = inside &&
                    zero_detect_buffer(buf + (cs - base), (size_t)gran);
                if (zero != p[i].zero)
                    fail_msg("iter %d: byte %zu (gran %llu, base %llu): "
                             "piece says %d, model %d", iter, b,
                             (unsigned long long)gran,
                             (unsigned long long)base, p[i].zero, zero);
            }
        }
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_is_zero_every_position),
        cmocka_unit_test(test_all_zero_is_one_zero_piece),
        cmocka_unit_test(test_all_data_is_one_data_piece),
        cmocka_unit_test(test_partial_edge_chunks_are_data),
        cmocka_unit_test(test_short_or_misaligned_runs_stay_data),
        cmocka_unit_test(test_max_data_cuts_data_not_zero),
        cmocka_unit_test(test_gran_one_byte),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
