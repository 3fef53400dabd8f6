/* Unit tests of the qcow2 header parser and qcow2_open refusals on
 * crafted images held in a memory protocol image.  Every refusal case
 * checks the return code and that the message names the field. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/qcow2.h"
#include "qcow2-build.h"
#include "../fuzz/qcow2-memproto.h"

static uint8_t img[TB_LEN];

/* Open `len` bytes of `img` as qcow2; returns the open result. */
static int try_open(size_t len, struct errmsg *err, struct image **out)
{
    struct loop *loop = loop_new();
    assert_non_null(loop);
    struct image *p = memproto_open(loop, "mem.qcow2", img, len, false);
    assert_non_null(p);
    struct image_open_opts o = { 0 };
    errmsg_clear(err);
    int r = qcow2_open(p, &o, out, err);
    if (r == 0) {
        assert_non_null(*out);
        assert_int_equal(image_close(*out), 0);
    }
    loop_free(loop);
    return r;
}

/* Expect refusal `code` with `text` in the message. */
static void expect_refused(size_t len, int code, const char *text)
{
    struct errmsg err;
    struct image *out = NULL;
    int r = try_open(len, &err, &out);
    if (r != code || !strstr(err.text, text))
        fail_msg("expected %d containing '%s', got %d: '%s'", code, text, r,
                 err.text);
}

static void test_valid(void **state)
{
    (void)state;
    struct errmsg err;
    struct image *out;
    tb_make(img, sizeof img);
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
    /* version 2 (72-byte header, no v3 fields) */
    tb_make(img, sizeof img);
    tb_be32(img + 4, 2);
    memset(img + 72, 0, 40);
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
    /* the dirty bit alone is fine for reading */
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1);
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
}

static void test_magic_version_size(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    img[0] = 'X';
    expect_refused(sizeof img, -EINVAL, "bad magic");
    tb_make(img, sizeof img);
    tb_be32(img + 4, 4);
    expect_refused(sizeof img, -ENOTSUP, "unsupported qcow2 version 4");
    tb_make(img, sizeof img);
    tb_be32(img + 4, 1);
    expect_refused(sizeof img, -ENOTSUP, "version 1");
    tb_make(img, sizeof img);
    expect_refused(60, -EINVAL, "file too small");
    expect_refused(100, -EINVAL, "version 3 header");
}

static void test_cluster_bits(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_be32(img + 20, 8);
    expect_refused(sizeof img, -EINVAL, "invalid cluster_bits 8");
    tb_be32(img + 20, 22);
    expect_refused(sizeof img, -EINVAL, "invalid cluster_bits 22");
    tb_be32(img + 20, 0xffffffffu);
    expect_refused(sizeof img, -EINVAL, "cluster_bits");
}

static void test_features(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_be32(img + 32, 1);
    expect_refused(sizeof img, -ENOTSUP, "encrypted images are not supported "
                   "(crypt_method 1)");
    tb_make(img, sizeof img);
    tb_be32(img + 32, 2);
    expect_refused(sizeof img, -ENOTSUP, "crypt_method 2");
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 1);
    expect_refused(sizeof img, -EINVAL, "marked corrupt");
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 2);
    expect_refused(sizeof img, -ENOTSUP, "external data files");
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 9);
    expect_refused(sizeof img, -ENOTSUP, "unknown incompatible feature bits "
                   "0x200 (bit 9)");
    /* ... named from the feature name table when present */
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 5);
    uint8_t ft[48] = { 0, 5 };
    memcpy(ft + 2, "future thing", 12);
    tb_ext(img, 112, 0x6803f857u, ft, sizeof ft);
    expect_refused(sizeof img, -ENOTSUP, "bit 5: \"future thing\"");
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 3);
    img[104] = 1;
    expect_refused(sizeof img, -ENOTSUP, "compression_type 1 (zstd)");
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 3);
    expect_refused(sizeof img, -ENOTSUP, "compression_type is 0");
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1u << 4);
    expect_refused(sizeof img, -EINVAL, "extended L2 entries need "
                   "cluster_bits >= 14");
    tb_make(img, sizeof img);
    tb_be32(img + 96, 7);
    expect_refused(sizeof img, -EINVAL, "invalid refcount_order 7");
}

static void test_header_length(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_be32(img + 100, 100);
    expect_refused(sizeof img, -EINVAL, "invalid header_length 100");
    tb_be32(img + 100, 113);
    expect_refused(sizeof img, -EINVAL, "invalid header_length 113");
    tb_be32(img + 100, 8192);
    expect_refused(sizeof img, -EINVAL, "invalid header_length 8192");
}

static void test_l1(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_be32(img + 36, 0);
    expect_refused(sizeof img, -EINVAL, "l1_size 0 is too small");
    tb_make(img, sizeof img);
    tb_be32(img + 36, 0x10000000u);
    expect_refused(sizeof img, -EINVAL, "l1_size 268435456 is too large");
    tb_make(img, sizeof img);
    tb_be64(img + 24, 1ull << 61);
    expect_refused(sizeof img, -EINVAL, "too small for the virtual size");
    tb_make(img, sizeof img);
    tb_be64(img + 24, ~0ull);
    expect_refused(sizeof img, -EINVAL, "virtual size");
    tb_make(img, sizeof img);
    tb_be64(img + 40, 2 * TB_CS + 8);
    expect_refused(sizeof img, -EINVAL, "L1 table offset 0x2008 is not "
                   "aligned");
    tb_make(img, sizeof img);
    tb_be64(img + 40, 0);
    expect_refused(sizeof img, -EINVAL, "L1 table offset is 0");
    tb_make(img, sizeof img);
    tb_be64(img + 40, 1ull << 40);
    expect_refused(sizeof img, -EINVAL, "L1 table at offset 0x10000000000");
    tb_make(img, sizeof img);
    tb_be32(img + 36, 4000);
    expect_refused(sizeof img, -EINVAL, "extends past the end of the file");
}

static void test_refcount_table(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_be64(img + 48, 2 * TB_CS);
    expect_refused(sizeof img, -EINVAL, "overlaps the refcount table");
    tb_make(img, sizeof img);
    tb_be32(img + 56, 0);
    expect_refused(sizeof img, -EINVAL, "refcount_table_clusters is 0");
    tb_make(img, sizeof img);
    tb_be32(img + 56, 100000);
    expect_refused(sizeof img, -EINVAL, "refcount_table_clusters 100000 is "
                   "too large");
    tb_make(img, sizeof img);
    tb_be64(img + 48, 100);
    expect_refused(sizeof img, -EINVAL, "refcount table offset 0x64 is not "
                   "aligned");
    tb_make(img, sizeof img);
    tb_be32(img + 60, 1);
    tb_be64(img + 64, 1ull << 30);
    expect_refused(sizeof img, -EINVAL, "snapshot table");
}

static void test_backing_and_extensions(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_backing(img, "base.qcow2");
    tb_be32(img + 16, 0);
    expect_refused(sizeof img, -EINVAL, "invalid backing_file_size 0");
    tb_be32(img + 16, 2000);
    expect_refused(sizeof img, -EINVAL, "invalid backing_file_size 2000");
    tb_make(img, sizeof img);
    tb_backing(img, "base.qcow2");
    tb_be64(img + 8, TB_CS - 4);
    expect_refused(sizeof img, -EINVAL, "backing_file_offset 4092");
    tb_make(img, sizeof img);
    tb_backing(img, "base.qcow2");
    img[515] = 0;
    expect_refused(sizeof img, -EINVAL, "backing file name contains a NUL");
    tb_make(img, sizeof img);
    tb_be32(img + 112, 0x12345678u);
    tb_be32(img + 116, 100000);
    expect_refused(sizeof img, -EINVAL, "header extension 0x12345678");
    tb_make(img, sizeof img);
    uint8_t fmt[40];
    memset(fmt, 'a', sizeof fmt);
    tb_ext(img, 112, 0xe2792acau, fmt, sizeof fmt);
    expect_refused(sizeof img, -EINVAL, "backing file format extension too "
                   "long");
    tb_make(img, sizeof img);
    tb_backing(img, "base.vmdk");
    tb_ext(img, 112, 0xe2792acau, "vmdk", 4);
    expect_refused(sizeof img, -ENOTSUP, "unsupported backing file format "
                   "'vmdk'");
    /* A missing backing file is an error naming it (a relative name: an
     * absolute one outside the image's directory is refused before any
     * open, see test-image-open.c). */
    tb_make(img, sizeof img);
    tb_backing(img, "nonexistent-imgfs-test-base.qcow2");
    struct errmsg err;
    struct image *out;
    int r = try_open(sizeof img, &err, &out);
    assert_true(r < 0);
    assert_non_null(strstr(err.text, "opening backing file "
                           "nonexistent-imgfs-test-base.qcow2"));
}

/* A many-extension header is parsed without reading past the cluster. */
static void test_extension_walk_bounded(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    size_t off = 112;
    while (off + 16 <= TB_CS)
        off = tb_ext(img, off, 0x01020304u, "12345678", 8);
    struct errmsg err;
    struct image *out;
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_magic_version_size),
        cmocka_unit_test(test_cluster_bits),
        cmocka_unit_test(test_features),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_l1),
        cmocka_unit_test(test_refcount_table),
        cmocka_unit_test(test_backing_and_extensions),
        cmocka_unit_test(test_extension_walk_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
