/* Unit tests of backends/image-open.c and the null:/zero: protocols. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backends/image-open.h"

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(parse_size("4K", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(parse_size("1M", &v), 0);
    assert_int_equal(v, 1 << 20);
    assert_int_equal(parse_size("2GiB", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(parse_size("64g", &v), 0);
    assert_int_equal(v, 64ull << 30);
    assert_int_equal(parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_size("", &v), -EINVAL);
    assert_int_equal(parse_size("3X", &v), -EINVAL);
    assert_int_equal(parse_size("-1", &v), -EINVAL);
    assert_int_equal(parse_size("99999999999T", &v), -EINVAL);
}

static void test_format_parse(void **state)
{
    (void)state;
    enum image_format f;
    assert_int_equal(image_format_parse("raw", false, &f), 0);
    assert_int_equal(f, IMAGE_FORMAT_RAW);
    assert_int_equal(image_format_parse("qcow2", true, &f), 0);
    assert_int_equal(f, IMAGE_FORMAT_QCOW2);
    assert_int_equal(image_format_parse("auto", true, &f), 0);
    assert_int_equal(f, IMAGE_FORMAT_AUTO);
    assert_int_equal(image_format_parse("auto", false, &f), -EINVAL);
    assert_int_equal(image_format_parse("vmdk", true, &f), -EINVAL);
}

static void check_resolve(const char *base, const char *name, const char *want)
{
    char *s = image_resolve_relative(base, name);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

static void test_resolve_relative(void **state)
{
    (void)state;
    check_resolve("nfs://h/export/dir/top.qcow2", "base.qcow2",
                  "nfs://h/export/dir/base.qcow2");
    check_resolve("nfs://h/export/dir/top.qcow2?nfsport=2049&mountport=20048",
                  "../b/base.raw",
                  "nfs://h/export/dir/../b/base.raw?nfsport=2049&mountport=20048");
    check_resolve("nfs://h/export/top.qcow2?nfsport=1", "/export/x.raw",
                  "nfs://h/export/x.raw?nfsport=1");
    check_resolve("/var/img/top.qcow2", "base.qcow2", "/var/img/base.qcow2");
    check_resolve("top.qcow2", "base.qcow2", "base.qcow2");
    check_resolve("/var/img/top.qcow2", "/abs/base", "/abs/base");
    check_resolve("/var/img/top.qcow2", "nfs://o/e/f", "nfs://o/e/f");
}

static void test_zero_and_null(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct image_open_opts o = { 0 };
    struct errmsg err;
    struct image *z, *n;
    assert_int_equal(image_open(loop, "zero:1M", &o, &z, &err), 0);
    assert_int_equal(z->size, 1 << 20);
    char buf[4096];
    memset(buf, 0xaa, sizeof buf);
    assert_int_equal(image_read_sync(z, buf, 4096, sizeof buf), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    assert_int_equal(image_read_sync(z, buf, (1 << 20) - 100, sizeof buf), -EINVAL);
    assert_int_equal(image_write_sync(z, buf, 0, 10), -EROFS);
    image_close(z);

    assert_int_equal(image_open(loop, "zero:abc", &o, &z, &err), -EINVAL);
    assert_non_null(strstr(err.text, "zero:SIZE"));
    assert_int_equal(image_open(loop, "ftp://x/y", &o, &z, &err), -EINVAL);
    assert_non_null(strstr(err.text, "unsupported URL scheme"));

    o.write = true;
    o.create_size = 8192;
    assert_int_equal(image_open(loop, "null:", &o, &n, &err), 0);
    assert_int_equal(n->size, 8192);
    assert_int_equal(image_write_sync(n, buf, 4096, 4096), 0);
    assert_int_equal(image_write_sync(n, buf, 8192, 4096), -ENOSPC);
    assert_int_equal(image_flush_sync(n), 0);
    image_close(n);
    loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_format_parse),
        cmocka_unit_test(test_resolve_relative),
        cmocka_unit_test(test_zero_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
