/* Unit tests of image.h's rule that a completion never runs inside the
 * call that issued the request: requests that null:, zero: and local files
 * answer at once (errors, empty requests, block status) call back only
 * from a later loop iteration, exactly once, with the right result. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/image-open.h"

/* One request: `issuing` is true while the call that issues it runs. */
struct probe {
    bool issuing;
    bool called_inside;     /* the callback ran while issuing was true */
    int calls;
    int err;
    size_t n;
    struct extent ext;
};

static void io_cb(void *opaque, int err)
{
    struct probe *p = opaque;
    p->called_inside |= p->issuing;
    p->calls++;
    p->err = err;
}

static void ext_cb(void *opaque, int err, const struct extent *ext, size_t n)
{
    struct probe *p = opaque;
    p->called_inside |= p->issuing;
    p->calls++;
    p->err = err;
    p->n = n;
    if (n)
        p->ext = ext[0];
}

/* Issue `call` with p->issuing set, check it did not call back yet, then
 * run the loop until it does (a watchdog alarm fails a lost completion
 * instead of hanging) and check it called back once, later. */
#define ISSUE(img, p, call)                                             \
    do {                                                                \
        (p) = (struct probe){ .issuing = true };                        \
        call;                                                           \
        (p).issuing = false;                                            \
        assert_int_equal((p).calls, 0);                                 \
        alarm(30);                                                      \
        while ((p).calls == 0)                                          \
            assert_int_equal(loop_run_once((img)->loop, -1), 0);        \
        alarm(0);                                                       \
        assert_false((p).called_inside);                                \
        assert_int_equal((p).calls, 1);                                 \
    } while (0)

static struct image *open_url(struct loop *loop, const char *url,
                              const struct image_open_opts *opts)
{
    struct image *img = NULL;
    struct errmsg err = { 0 };
    int r = image_open(loop, url, opts, &img, &err);
    if (r < 0)
        fail_msg("%s: %s", url, err.text);
    return img;
}

static void test_null_answers_later(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct image_open_opts o = { .write = true, .create_size = 4096 };
    struct image *img = open_url(loop, "null:", &o);
    char buf[512];
    struct probe p;

    ISSUE(img, p, image_write(img, buf, 4096, 512, io_cb, &p));
    assert_int_equal(p.err, -ENOSPC);
    ISSUE(img, p, image_read(img, buf, 4000, 512, io_cb, &p));
    assert_int_equal(p.err, -EINVAL);
    ISSUE(img, p, image_write_zeroes(img, 0, 8192, 0, io_cb, &p));
    assert_int_equal(p.err, -ENOSPC);
    ISSUE(img, p, image_flush(img, io_cb, &p));
    assert_int_equal(p.err, 0);
    /* No block_status of its own: image_block_status answers "data". */
    ISSUE(img, p, image_block_status(img, 512, 1 << 20, ext_cb, &p));
    assert_int_equal(p.err, 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.ext.offset, 512);
    assert_int_equal(p.ext.length, 4096 - 512);
    assert_int_equal(p.ext.type, EXTENT_DATA);
    assert_int_equal(image_close(img), 0);
    loop_free(loop);
}

static void test_zero_answers_later(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct image_open_opts o = { 0 };
    struct image *img = open_url(loop, "zero:1M", &o);
    char buf[512];
    struct probe p;

    ISSUE(img, p, image_write(img, buf, 0, 512, io_cb, &p));
    assert_int_equal(p.err, -EROFS);
    ISSUE(img, p, image_write_zeroes(img, 0, 512, 0, io_cb, &p));
    assert_int_equal(p.err, -EROFS);
    ISSUE(img, p, image_read(img, buf, (1 << 20) - 256, 512, io_cb, &p));
    assert_int_equal(p.err, -EINVAL);
    ISSUE(img, p, image_block_status(img, 1 << 20, 512, ext_cb, &p));
    assert_int_equal(p.err, -EINVAL);
    assert_int_equal(p.n, 0);
    ISSUE(img, p, image_block_status(img, 4096, 2 << 20, ext_cb, &p));
    assert_int_equal(p.err, 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.ext.offset, 4096);
    assert_int_equal(p.ext.length, (1 << 20) - 4096);
    assert_int_equal(p.ext.type, EXTENT_HOLE);
    assert_int_equal(image_close(img), 0);
    loop_free(loop);
}

static void test_file_checks_answer_later(void **state)
{
    (void)state;
    char dir[256], path[300];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/test-image-complete.XXXXXX",
             tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/img", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs("0123456789", f) >= 0, 1);
    assert_int_equal(fclose(f), 0);

    struct loop *loop = loop_new();
    struct image_open_opts o = { 0 };
    struct image *img = open_url(loop, path, &o);
    char buf[64];
    struct probe p;

    ISSUE(img, p, image_read(img, buf, 5, 10, io_cb, &p));
    assert_int_equal(p.err, -EINVAL);
    assert_non_null(strstr(img->last_error.text, "past the end"));
    ISSUE(img, p, image_write(img, buf, 0, 1, io_cb, &p));
    assert_int_equal(p.err, -EROFS);
    ISSUE(img, p, image_read(img, buf, 3, 0, io_cb, &p));
    assert_int_equal(p.err, 0);
    ISSUE(img, p, image_flush(img, io_cb, &p));
    assert_int_equal(p.err, 0);
    ISSUE(img, p, image_block_status(img, 10, 1, ext_cb, &p));
    assert_int_equal(p.err, -EINVAL);
    assert_int_equal(p.n, 0);
    /* And one that goes through a worker, for comparison. */
    ISSUE(img, p, image_read(img, buf, 2, 8, io_cb, &p));
    assert_int_equal(p.err, 0);
    assert_memory_equal(buf, "23456789", 8);
    assert_int_equal(image_close(img), 0);
    loop_free(loop);
    unlink(path);
    rmdir(dir);
}

/* A request issued from inside a completion is not answered inside it
 * either (no recursion). */
struct nested {
    struct image *img;
    struct probe outer, inner;
    char buf[512];
};

static void outer_cb(void *opaque, int err)
{
    struct nested *n = opaque;
    io_cb(&n->outer, err);
    n->inner = (struct probe){ .issuing = true };
    image_write(n->img, n->buf, 0, 512, io_cb, &n->inner);
    n->inner.issuing = false;
    assert_int_equal(n->inner.calls, 0);
}

static void test_request_from_completion_answers_later(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct image_open_opts o = { 0 };
    struct nested n = { .img = open_url(loop, "zero:4096", &o) };
    image_write(n.img, n.buf, 0, 512, outer_cb, &n);
    assert_int_equal(n.outer.calls, 0);
    alarm(30);
    while (n.inner.calls == 0)
        assert_int_equal(loop_run_once(loop, -1), 0);
    alarm(0);
    assert_int_equal(n.outer.calls, 1);
    assert_int_equal(n.inner.calls, 1);
    assert_false(n.inner.called_inside);
    assert_int_equal(n.inner.err, -EROFS);
    assert_int_equal(image_close(n.img), 0);
    loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_answers_later),
        cmocka_unit_test(test_zero_answers_later),
        cmocka_unit_test(test_file_checks_answer_later),
        cmocka_unit_test(test_request_from_completion_answers_later),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
