/* Unit tests of the qcow2 header parser and qcow2_open refusals on
 * crafted images held in a memory protocol image.  Every refusal case
 * checks the return code and that the message names the field; every
 * header that is accepted is also decoded with qcow2_header_parse and each
 * field checked against what the test wrote. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/qcow2.h"
#include "backends/qcow2/qcow2-internal.h"
#include "qcow2-build.h"
#include "tests/fuzz/qcow2-memproto.h"

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

/* Decode the header of `img`, a file of `file_size` bytes with clusters
 * of 2^cluster_bits bytes; fail unless it is accepted. */
static void parse_ok(unsigned cluster_bits, uint64_t file_size,
                     struct qcow2_header *h)
{
    struct errmsg err;
    errmsg_clear(&err);
    size_t len = (size_t)1 << cluster_bits;
    if (len > file_size)
        len = (size_t)file_size;
    assert_true(len <= sizeof img);
    memset(h, 0xa5, sizeof *h);     /* every field must be written */
    int r = qcow2_header_parse(img, len, file_size, h, &err);
    if (r != 0)
        fail_msg("header refused: %d: %s", r, err.text);
}

/* The fields tb_make writes, for a header of `version` (2 or 3). */
static void assert_tb_fields(const struct qcow2_header *h, uint32_t version)
{
    assert_int_equal(h->version, version);
    assert_int_equal(h->size, 1u << 20);
    assert_int_equal(h->cluster_bits, 12);
    assert_int_equal(h->crypt_method, 0);
    assert_int_equal(h->l1_size, 1);
    assert_int_equal(h->l1_offset, 2 * TB_CS);
    assert_int_equal(h->reftable_offset, TB_CS);
    assert_int_equal(h->reftable_clusters, 1);
    assert_int_equal(h->nb_snapshots, 0);
    assert_int_equal(h->refcount_order, 4);     /* v2: always 16-bit */
    assert_int_equal(h->header_length, version == 2 ? 72 : 112);
    assert_int_equal(h->compat, 0);
    assert_int_equal(h->autoclear, 0);
    assert_int_equal(h->compression_type, 0);
}

/* No backing file, no extended L2, no incompatible feature. */
static void assert_plain(const struct qcow2_header *h)
{
    assert_int_equal(h->incompat, 0);
    assert_false(h->extended_l2);
    assert_int_equal(h->backing_offset, 0);
    assert_int_equal(h->backing_len, 0);
    assert_string_equal(h->backing_name, "");
    assert_string_equal(h->backing_format, "");
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
    struct qcow2_header h;
    tb_make(img, sizeof img);
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
    parse_ok(12, sizeof img, &h);
    assert_tb_fields(&h, 3);
    assert_plain(&h);
    /* version 2 (72-byte header, no v3 fields) */
    tb_make(img, sizeof img);
    tb_be32(img + 4, 2);
    memset(img + 72, 0, 40);
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
    parse_ok(12, sizeof img, &h);
    assert_tb_fields(&h, 2);
    assert_plain(&h);
    /* the dirty bit alone is fine for reading */
    tb_make(img, sizeof img);
    tb_be64(img + 72, 1);
    assert_int_equal(try_open(sizeof img, &err, &out), 0);
    parse_ok(12, sizeof img, &h);
    assert_tb_fields(&h, 3);
    assert_int_equal(h.incompat, QCOW2_INCOMPAT_DIRTY);
    assert_false(h.extended_l2);
}

/* Accepted headers with the optional parts: compatible and autoclear
 * bits, other refcount widths, a backing file with its format, extended
 * L2 entries. */
static void test_valid_optional_fields(void **state)
{
    (void)state;
    struct qcow2_header h;
    /* lazy refcounts (compatible bit 0), bitmaps autoclear bit 0,
     * 64-bit refcounts */
    tb_make(img, sizeof img);
    tb_be64(img + 80, 1);
    tb_be64(img + 88, 1);
    tb_be32(img + 96, 6);
    parse_ok(12, sizeof img, &h);
    assert_int_equal(h.version, 3);
    assert_int_equal(h.compat, 1);
    assert_int_equal(h.autoclear, 1);
    assert_int_equal(h.refcount_order, 6);
    assert_int_equal(h.size, 1u << 20);
    assert_int_equal(h.l1_offset, 2 * TB_CS);
    assert_plain(&h);
    /* a backing file and its format */
    tb_make(img, sizeof img);
    tb_backing(img, "base.qcow2");
    tb_ext(img, 112, 0xe2792acau, "qcow2", 5);
    parse_ok(12, sizeof img, &h);
    assert_tb_fields(&h, 3);
    assert_int_equal(h.backing_offset, 512);
    assert_int_equal(h.backing_len, 10);
    assert_string_equal(h.backing_name, "base.qcow2");
    assert_string_equal(h.backing_format, "qcow2");
    assert_int_equal(h.incompat, 0);
    /* a backing file without a format extension */
    tb_make(img, sizeof img);
    tb_backing(img, "base.raw");
    parse_ok(12, sizeof img, &h);
    assert_string_equal(h.backing_name, "base.raw");
    assert_string_equal(h.backing_format, "");
    /* extended L2 entries: 16 KiB clusters, 32 MiB (16 MiB per L2
     * table of 16-byte entries: two L1 entries), tables moved to
     * cluster boundaries, in a file of 8 clusters */
    tb_make(img, sizeof img);
    tb_be32(img + 20, 14);
    tb_be64(img + 24, 32ull << 20);
    tb_be32(img + 36, 2);
    tb_be64(img + 40, 2u << 14);
    tb_be64(img + 48, 1u << 14);
    tb_be64(img + 72, QCOW2_INCOMPAT_EXTL2);
    parse_ok(14, 8u << 14, &h);
    assert_int_equal(h.cluster_bits, 14);
    assert_int_equal(h.size, 32ull << 20);
    assert_int_equal(h.l1_size, 2);
    assert_int_equal(h.l1_offset, 2u << 14);
    assert_int_equal(h.reftable_offset, 1u << 14);
    assert_int_equal(h.reftable_clusters, 1);
    assert_int_equal(h.incompat, QCOW2_INCOMPAT_EXTL2);
    assert_true(h.extended_l2);
    assert_string_equal(h.backing_name, "");
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
    struct qcow2_header h;
    parse_ok(12, sizeof img, &h);       /* the header itself is fine */
    assert_tb_fields(&h, 3);
    assert_string_equal(h.backing_name, "nonexistent-imgfs-test-base.qcow2");
    assert_int_equal(h.backing_len, 33);
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
    struct qcow2_header h;
    parse_ok(12, sizeof img, &h);
    assert_tb_fields(&h, 3);
    assert_plain(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_valid_optional_fields),
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
