/* Unit tests of fs/slice.c: a window [offset, offset+length) of a local
 * file image — reads, writes and block status are shifted, requests past
 * the window end are refused, closing the slice leaves the base open. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/image-open.h"
#include "fs/fs.h"

#define FILE_SIZE (1024 * 1024)
#define WIN_OFF (256 * 1024)
#define WIN_LEN (128 * 1024)

struct fixture {
    char path[64];
    struct loop *loop;
    struct image *base;
    uint8_t *pattern;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    strcpy(f->path, "/tmp/test-slice.XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    f->pattern = malloc(FILE_SIZE);
    for (size_t i = 0; i < FILE_SIZE; i++)
        f->pattern[i] = (uint8_t)(i * 7 + i / 4096);
    /* Data everywhere except a hole at [WIN_OFF + 64K, WIN_OFF + 96K). */
    assert_int_equal(ftruncate(fd, FILE_SIZE), 0);
    assert_int_equal(pwrite(fd, f->pattern, WIN_OFF + 65536, 0),
                     WIN_OFF + 65536);
    size_t tail = WIN_OFF + 98304;
    assert_int_equal(pwrite(fd, f->pattern + tail, FILE_SIZE - tail, tail),
                     (ssize_t)(FILE_SIZE - tail));
    memset(f->pattern + WIN_OFF + 65536, 0, 32768);
    close(fd);
    f->loop = loop_new();
    assert_non_null(f->loop);
    struct image_open_opts o = { .write = true, .overwrite = true,
                                 .format = IMAGE_FORMAT_RAW };
    struct errmsg em;
    assert_int_equal(image_open_protocol(f->loop, f->path, &o, &f->base, &em),
                     0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    image_close(f->base);
    loop_free(f->loop);
    unlink(f->path);
    free(f->pattern);
    free(f);
    return 0;
}

static void test_read_write_shifted(void **state)
{
    struct fixture *f = *state;
    struct errmsg em;
    struct image *s = slice_image_new(f->base, WIN_OFF, WIN_LEN, &em);
    assert_non_null(s);
    assert_int_equal(s->size, WIN_LEN);
    uint8_t *buf = malloc(WIN_LEN);
    assert_int_equal(image_read_sync(s, buf, 0, WIN_LEN), 0);
    assert_memory_equal(buf, f->pattern + WIN_OFF, WIN_LEN);

    memset(buf, 0xa5, 4096);
    assert_int_equal(image_write_sync(s, buf, 8192, 4096), 0);
    uint8_t *check = malloc(4096);
    assert_int_equal(image_read_sync(f->base, check, WIN_OFF + 8192, 4096), 0);
    assert_memory_equal(check, buf, 4096);
    /* Bytes just outside the window are untouched. */
    assert_int_equal(image_read_sync(f->base, check, WIN_OFF + WIN_LEN, 4096),
                     0);
    assert_memory_equal(check, f->pattern + WIN_OFF + WIN_LEN, 4096);

    /* Past the window end: refused, base untouched. */
    assert_int_equal(image_write_sync(s, buf, WIN_LEN - 2048, 4096), -ENOSPC);
    assert_int_equal(image_read_sync(s, buf, WIN_LEN - 2048, 4096), -EINVAL);
    assert_int_equal(image_read_sync(f->base, check, WIN_OFF + WIN_LEN, 4096),
                     0);
    assert_memory_equal(check, f->pattern + WIN_OFF + WIN_LEN, 4096);

    assert_int_equal(image_close(s), 0);
    /* The base is still usable. */
    assert_int_equal(image_read_sync(f->base, check, 0, 4096), 0);
    assert_memory_equal(check, f->pattern, 4096);
    free(check);
    free(buf);
}

struct bs_result {
    bool done;
    int err;
    struct extent ext[16];
    size_t n;
};

static void bs_cb(void *opaque, int err, const struct extent *ext, size_t n)
{
    struct bs_result *r = opaque;
    r->done = true;
    r->err = err;
    r->n = n < 16 ? n : 16;
    if (!err)
        memcpy(r->ext, ext, r->n * sizeof *ext);
}

static void test_block_status_shifted(void **state)
{
    struct fixture *f = *state;
    struct errmsg em;
    struct image *s = slice_image_new(f->base, WIN_OFF, WIN_LEN, &em);
    assert_non_null(s);
    struct bs_result r = { 0 };
    image_block_status(s, 0, WIN_LEN, bs_cb, &r);
    assert_int_equal(loop_run_until(f->loop, &r.done), 0);
    assert_int_equal(r.err, 0);
    assert_true(r.n >= 1);
    /* Extents start at the slice's offset 0, are contiguous, stay inside
     * the window, and the hole at [64K, 96K) does not read as data. */
    uint64_t at = 0;
    for (size_t i = 0; i < r.n; i++) {
        assert_int_equal(r.ext[i].offset, at);
        at += r.ext[i].length;
        if (r.ext[i].offset <= 65536 && 65536 < at)
            assert_int_not_equal(r.ext[i].type, EXTENT_DATA);
    }
    assert_true(at <= WIN_LEN);
    assert_int_equal(r.ext[0].type, EXTENT_DATA);
    image_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_write_shifted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_block_status_shifted, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
