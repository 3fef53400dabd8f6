/* fake-util.c — see fake-util.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

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
