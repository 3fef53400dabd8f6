/* Unit tests of the qcow2 read and write paths: crafted L2 entries (data,
 * zero, compressed, malformed), block status, backing-chain loops and
 * depth, and write → close → reopen → read round trips (checked with
 * `qemu-img check` when qemu-img is installed), including an image with
 * more L2 tables than the cache holds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/qcow2.h"
#include "backends/qcow2/qcow2-internal.h"
#include "qcow2-build.h"
#include "tests/fuzz/qcow2-memproto.h"

static uint8_t img[TB_LEN];

static uint32_t mem_block_size = 1;

static struct image *open_mem(struct loop *loop, size_t len,
                              struct errmsg *err)
{
    struct image *p = memproto_open(loop, "mem.qcow2", img, len, false);
    assert_non_null(p);
    p->block_size = mem_block_size;
    struct image_open_opts o = { 0 };
    struct image *q = NULL;
    if (qcow2_open(p, &o, &q, err) < 0)
        return NULL;
    return q;
}

struct bs_result {
    bool done;
    int err;
    struct extent ext[64];
    size_t n;
};

static void bs_cb(void *opaque, int err, const struct extent *e, size_t n)
{
    struct bs_result *r = opaque;
    r->err = err;
    r->n = n < 64 ? n : 64;
    if (!err)
        memcpy(r->ext, e, r->n * sizeof *e);
    r->done = true;
}

static void block_status_sync(struct image *q, uint64_t off, uint64_t len,
                              struct bs_result *r)
{
    memset(r, 0, sizeof *r);
    image_block_status(q, off, len, bs_cb, r);
    assert_int_equal(loop_run_until(q->loop, &r->done), 0);
}

static void read_kinds(void)
{
    tb_make(img, sizeof img);
    /* cluster 0: data 0xab; 1: zero flag; 2: compressed 0x5a pattern;
     * 3: zero flag (a zero run interrupted by a compressed cluster);
     * 4 and on: unallocated */
    memset(img + TB_DATA, 0xab, TB_CS);
    tb_l2(img, 0, TB_DATA | (1ull << 63));
    tb_l2(img, 1, 1);
    uint8_t plain[TB_CS], comp[TB_CS];
    for (unsigned i = 0; i < TB_CS; i++)
        plain[i] = (uint8_t)(0x5a ^ (i / 64));
    size_t clen = qcow2_deflate(plain, TB_CS, comp, sizeof comp);
    assert_true(clen > 0 && clen < 2000);
    uint64_t coff = TB_DATA + TB_CS + 100;      /* not sector aligned */
    memcpy(img + coff, comp, clen);
    unsigned x = 62 - (12 - 8);
    uint64_t extra = ((coff + clen - 1) >> 9) - (coff >> 9);
    tb_l2(img, 2, (1ull << 62) | (extra << x) | coff);
    tb_l2(img, 3, 1);

    struct loop *loop = loop_new();
    struct errmsg err;
    struct image *q = open_mem(loop, sizeof img, &err);
    assert_non_null(q);
    assert_int_equal(q->size, 1u << 20);
    assert_int_equal(q->block_size, 1);
    uint8_t buf[4 * TB_CS + 10];
    memset(buf, 0x11, sizeof buf);
    assert_int_equal(image_read_sync(q, buf, 0, 4 * TB_CS + 10), 0);
    for (unsigned i = 0; i < TB_CS; i++) {
        assert_int_equal(buf[i], 0xab);
        assert_int_equal(buf[TB_CS + i], 0);
        assert_int_equal(buf[2 * TB_CS + i], plain[i]);
        assert_int_equal(buf[3 * TB_CS + i], 0);
    }
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(buf[4 * TB_CS + i], 0);
    /* unaligned read across the compressed and zero clusters */
    assert_int_equal(image_read_sync(q, buf, TB_CS + 7, TB_CS + 3), 0);
    for (unsigned i = 0; i < TB_CS - 7; i++)
        assert_int_equal(buf[i], 0);
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(buf[TB_CS - 7 + i], plain[i]);
    /* past the end */
    assert_int_equal(image_read_sync(q, buf, (1u << 20) - 4, 8), -EINVAL);

    struct bs_result r;
    block_status_sync(q, 0, q->size, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, 5);
    assert_int_equal(r.ext[0].type, EXTENT_DATA);
    assert_int_equal(r.ext[0].length, TB_CS);
    assert_int_equal(r.ext[1].type, EXTENT_ZERO);
    assert_int_equal(r.ext[2].type, EXTENT_DATA);
    assert_int_equal(r.ext[3].type, EXTENT_ZERO);
    assert_int_equal(r.ext[4].type, EXTENT_HOLE);
    assert_int_equal(r.ext[4].offset + r.ext[4].length, q->size);
    block_status_sync(q, TB_CS + 5, 10, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.ext[0].offset, TB_CS + 5);
    assert_int_equal(r.ext[0].length, 10);
    assert_int_equal(r.ext[0].type, EXTENT_ZERO);
    assert_int_equal(image_close(q), 0);
    loop_free(loop);
}

static void test_read_kinds(void **state)
{
    (void)state;
    mem_block_size = 1;
    read_kinds();
    /* The same image on a protocol with 4 KiB blocks (a qcow2 on a LUN):
     * header, L1, L2 and unaligned compressed data are read aligned. */
    mem_block_size = 4096;
    read_kinds();
    mem_block_size = 512;
    read_kinds();
    mem_block_size = 1;
}

/* Open the crafted image and expect reading cluster `c` to fail with a
 * message containing `text`. */
static void expect_read_error(unsigned c, const char *text, bool in_status)
{
    struct loop *loop = loop_new();
    struct errmsg err;
    struct image *q = open_mem(loop, sizeof img, &err);
    assert_non_null(q);
    uint8_t buf[TB_CS];
    int r = image_read_sync(q, buf, (uint64_t)c * TB_CS, TB_CS);
    if (r >= 0 || !strstr(q->last_error.text, text))
        fail_msg("expected a read error with '%s', got %d '%s'", text, r,
                 q->last_error.text);
    struct bs_result b;
    block_status_sync(q, (uint64_t)c * TB_CS, TB_CS, &b);
    if (in_status)
        assert_true(b.err < 0);
    else    /* only reading inflates */
        assert_int_equal(b.err, 0);
    image_close(q);
    loop_free(loop);
}

static void test_bad_entries(void **state)
{
    (void)state;
    tb_make(img, sizeof img);
    tb_l2(img, 0, (TB_DATA + 512) | (1ull << 63));
    expect_read_error(0, "data cluster offset not aligned", true);
    tb_make(img, sizeof img);
    tb_l2(img, 0, (1ull << 40) | (1ull << 63));
    expect_read_error(0, "data cluster offset out of range", true);
    tb_make(img, sizeof img);
    tb_l2(img, 0, (1ull << 62) | (TB_LEN + 100));
    expect_read_error(0, "compressed data offset out of range", true);
    tb_make(img, sizeof img);
    tb_l2(img, 0, (1ull << 62) | TB_DATA);      /* garbage deflate data */
    memset(img + TB_DATA, 0xff, TB_CS);
    expect_read_error(0, "corrupt compressed cluster", false);
    tb_make(img, sizeof img);
    tb_be64(img + 2 * TB_CS, (1ull << 40) | (1ull << 63));
    expect_read_error(0, "lies past the end of the file", true);
    tb_make(img, sizeof img);
    tb_be64(img + 2 * TB_CS, (TB_L2 + 8) | (1ull << 63));
    expect_read_error(0, "not cluster aligned", true);
    tb_make(img, sizeof img);
    tb_be64(img + 2 * TB_CS, 2 * TB_CS);        /* L2 = the L1 itself */
    expect_read_error(0, "overlaps the header, the L1 table", true);
    tb_make(img, sizeof img);
    tb_be64(img + 2 * TB_CS, TB_CS);            /* L2 = refcount table */
    expect_read_error(0, "or the refcount table", true);
}

static char tmpdir[256];

static void write_file(const char *name, const uint8_t *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static int open_file(const char *name, struct errmsg *err)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    struct loop *loop = loop_new();
    struct image_open_opts o = { 0 };
    struct image *q;
    int r = image_open(loop, path, &o, &q, err);
    if (r == 0)
        image_close(q);
    loop_free(loop);
    return r;
}

static void test_chain_loop_and_depth(void **state)
{
    (void)state;
    struct errmsg err;
    tb_make(img, sizeof img);
    tb_backing(img, "b.qcow2");
    write_file("a.qcow2", img, sizeof img);
    tb_make(img, sizeof img);
    tb_backing(img, "a.qcow2");
    write_file("b.qcow2", img, sizeof img);
    assert_int_equal(open_file("a.qcow2", &err), -ELOOP);
    assert_non_null(strstr(err.text, "backing chain loop"));
    tb_make(img, sizeof img);
    tb_backing(img, "self.qcow2");
    write_file("self.qcow2", img, sizeof img);
    assert_int_equal(open_file("self.qcow2", &err), -ELOOP);
    /* 70 images deep */
    for (int i = 0; i < 70; i++) {
        char name[32], next[32];
        snprintf(name, sizeof name, "d%d.qcow2", i);
        snprintf(next, sizeof next, "d%d.qcow2", i + 1);
        tb_make(img, sizeof img);
        if (i < 69)
            tb_backing(img, next);
        write_file(name, img, sizeof img);
    }
    assert_int_equal(open_file("d0.qcow2", &err), -ELOOP);
    if (!strstr(err.text, "deeper than 64"))
        fail_msg("unexpected message: %s", err.text);
    /* 10 deep is fine */
    assert_int_equal(open_file("d59.qcow2", &err), 0);
}

/* ---- no_backing: only the top layer ---- */

static struct image *open_path(struct loop *loop, const char *name,
                               bool no_backing, struct errmsg *err)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    struct image_open_opts o = { .no_backing = no_backing };
    struct image *q = NULL;
    if (image_open(loop, path, &o, &q, err) < 0)
        return NULL;
    return q;
}

static void test_no_backing_top_layer(void **state)
{
    (void)state;
    struct errmsg err;
    /* The backing: 1 MiB of 0x77 (raw). */
    static uint8_t base[1u << 20];
    memset(base, 0x77, sizeof base);
    write_file("kb-base.raw", base, sizeof base);
    /* The top: cluster 0 data 0xab, 1 zero flag (shadows the backing),
     * 2 and on unallocated (inherited). */
    tb_make(img, sizeof img);
    static const char fmt[] = "raw";
    tb_ext(img, 112, 0xe2792acau, fmt, 3);
    tb_backing(img, "kb-base.raw");
    memset(img + TB_DATA, 0xab, TB_CS);
    tb_l2(img, 0, TB_DATA | (1ull << 63));
    tb_l2(img, 1, 1);
    write_file("kb-top.qcow2", img, sizeof img);

    struct loop *loop = loop_new();
    uint8_t buf[3 * TB_CS];
    struct bs_result r;

    /* Through the chain: the inherited clusters read the backing. */
    struct image *q = open_path(loop, "kb-top.qcow2", false, &err);
    if (!q)
        fail_msg("open: %s", err.text);
    assert_int_equal(image_read_sync(q, buf, 0, sizeof buf), 0);
    for (unsigned i = 0; i < TB_CS; i++) {
        assert_int_equal(buf[i], 0xab);
        assert_int_equal(buf[TB_CS + i], 0);
        assert_int_equal(buf[2 * TB_CS + i], 0x77);
    }
    block_status_sync(q, 0, q->size, &r);
    assert_int_equal(r.err, 0);
    for (size_t i = 0; i < r.n; i++)
        assert_int_not_equal(r.ext[i].type, EXTENT_BACKING);
    assert_string_equal(qcow2_backing_name(q), "kb-base.raw");
    assert_string_equal(qcow2_backing_format(q), "raw");
    assert_int_equal(image_close(q), 0);

    /* Only the top layer: inherited clusters are EXTENT_BACKING and read
     * as zeroes; the zero cluster stays EXTENT_ZERO. */
    q = open_path(loop, "kb-top.qcow2", true, &err);
    if (!q)
        fail_msg("open no_backing: %s", err.text);
    assert_string_equal(qcow2_backing_name(q), "kb-base.raw");
    assert_string_equal(qcow2_backing_format(q), "raw");
    memset(buf, 0x11, sizeof buf);
    assert_int_equal(image_read_sync(q, buf, 0, sizeof buf), 0);
    for (unsigned i = 0; i < TB_CS; i++) {
        assert_int_equal(buf[i], 0xab);
        assert_int_equal(buf[TB_CS + i], 0);
        assert_int_equal(buf[2 * TB_CS + i], 0);
    }
    /* an unaligned read ending inside the inherited range */
    assert_int_equal(image_read_sync(q, buf, TB_CS - 3, 2 * TB_CS), 0);
    assert_int_equal(buf[0], 0xab);
    for (unsigned i = 3; i < 2 * TB_CS; i++)
        assert_int_equal(buf[i], 0);
    block_status_sync(q, 0, q->size, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.ext[0].type, EXTENT_DATA);
    assert_int_equal(r.ext[0].length, TB_CS);
    assert_int_equal(r.ext[1].type, EXTENT_ZERO);
    assert_int_equal(r.ext[1].offset, TB_CS);
    assert_int_equal(r.ext[1].length, TB_CS);
    assert_int_equal(r.ext[2].type, EXTENT_BACKING);
    assert_int_equal(r.ext[2].offset, 2 * TB_CS);
    assert_int_equal(r.ext[2].offset + r.ext[2].length, q->size);
    block_status_sync(q, 5 * TB_CS + 9, 100, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.ext[0].offset, 5 * TB_CS + 9);
    assert_int_equal(r.ext[0].length, 100);
    assert_int_equal(r.ext[0].type, EXTENT_BACKING);
    assert_int_equal(image_close(q), 0);

    /* The backing is not even opened: a missing one does not matter. */
    char path[512];
    snprintf(path, sizeof path, "%s/kb-base.raw", tmpdir);
    assert_int_equal(unlink(path), 0);
    assert_null(open_path(loop, "kb-top.qcow2", false, &err));
    q = open_path(loop, "kb-top.qcow2", true, &err);
    if (!q)
        fail_msg("open no_backing without the backing: %s", err.text);
    assert_int_equal(image_close(q), 0);

    /* No backing name: NULL; unallocated clusters stay holes even with
     * no_backing.  A raw image is not qcow2: NULL. */
    tb_make(img, sizeof img);
    write_file("kb-alone.qcow2", img, sizeof img);
    q = open_path(loop, "kb-alone.qcow2", true, &err);
    assert_non_null(q);
    assert_null(qcow2_backing_name(q));
    assert_null(qcow2_backing_format(q));
    block_status_sync(q, 0, q->size, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.ext[0].type, EXTENT_HOLE);
    assert_int_equal(image_close(q), 0);
    write_file("kb-plain.raw", base, 4096);
    q = open_path(loop, "kb-plain.raw", true, &err);
    assert_non_null(q);
    assert_null(qcow2_backing_name(q));
    assert_int_equal(image_close(q), 0);
    loop_free(loop);
}

/* ---- write path ---- */

static void fill_pattern(uint8_t *b, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)((i * 31 + seed * 7 + (i >> 9)) & 0xff);
}

struct wr {
    int pending;
    int err;
    bool done;
};

static void wr_cb(void *opaque, int err)
{
    struct wr *w = opaque;
    if (err && !w->err)
        w->err = err;
    if (--w->pending == 0)
        w->done = true;
}

static bool have_qemu_img(void)
{
    return system("qemu-img --version >/dev/null 2>&1") == 0;
}

/* Create `name` (size, cluster size, compress), apply writes with many in
 * flight, close, reopen and compare with the reference. */
static void roundtrip(const char *name, uint64_t size, uint32_t cs,
                      bool compress)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    uint8_t *ref = calloc(1, size);
    assert_non_null(ref);
    struct loop *loop = loop_new();
    struct image_open_opts o = { .write = true, .create = true,
                                 .overwrite = true, .create_size = size,
                                 .format = IMAGE_FORMAT_QCOW2,
                                 .cluster_size = cs, .compress = compress };
    struct errmsg err;
    struct image *q;
    int r = image_open(loop, path, &o, &q, &err);
    if (r < 0)
        fail_msg("create: %s", err.text);
    /* Sequential 256 KiB writes, 16 in flight; then partial overwrites,
     * zero writes and unaligned writes. */
    size_t chunk = 256 * 1024;
    struct wr w = { 0 };
    uint8_t *data = malloc(size);
    assert_non_null(data);
    fill_pattern(data, size, 1);
    for (uint64_t off = 0; off < size; off += chunk) {
        uint64_t n = size - off < chunk ? size - off : chunk;
        if ((off / chunk) % 3 == 2)
            continue;   /* leave holes */
        memcpy(ref + off, data + off, n);
        w.pending++;
        image_write(q, data + off, off, n, wr_cb, &w);
    }
    assert_int_equal(loop_run_until(loop, &w.done), 0);
    assert_int_equal(w.err, 0);
    uint8_t *d2 = malloc(size);
    fill_pattern(d2, size, 2);
    w = (struct wr){ 0 };
    for (uint64_t off = 1000; off + 5000 < size; off += size / 7) {
        memcpy(ref + off, d2 + off, 3000);
        w.pending++;
        image_write(q, d2 + off, off, 3000, wr_cb, &w);
        memset(ref + off + 3000, 0, 2000);
        w.pending++;
        image_write_zeroes(q, off + 3000, 2000, 0, wr_cb, &w);
    }
    memset(ref + cs, 0, 2 * cs);            /* whole-cluster zeroes */
    w.pending++;
    image_write_zeroes(q, cs, 2 * cs, IMAGE_ZERO_MAY_UNMAP, wr_cb, &w);
    memcpy(ref + size - 10, d2, 10);        /* the very end */
    w.pending++;
    image_write(q, d2, size - 10, 10, wr_cb, &w);
    /* A read issued while those writes are in flight sees all of them. */
    uint8_t *early = malloc(size);
    assert_non_null(early);
    w.pending++;
    image_read(q, early, 0, size, wr_cb, &w);
    assert_int_equal(loop_run_until(loop, &w.done), 0);
    assert_int_equal(w.err, 0);
    assert_memory_equal(early, ref, size);
    free(early);
    assert_int_equal(image_write_sync(q, d2, size - 4, 8), -ENOSPC);
    /* Read back before closing (served from the cache and the file). */
    uint8_t *back = malloc(size);
    assert_int_equal(image_flush_sync(q), 0);
    assert_int_equal(image_read_sync(q, back, 0, size), 0);
    assert_memory_equal(back, ref, size);
    assert_int_equal(image_close(q), 0);

    struct image_open_opts ro = { 0 };
    assert_int_equal(image_open(loop, path, &ro, &q, &err), 0);
    assert_string_equal(q->ops->name, "qcow2");
    assert_int_equal(q->size, size);
    memset(back, 0x77, size);
    assert_int_equal(image_read_sync(q, back, 0, size), 0);
    assert_memory_equal(back, ref, size);
    image_close(q);
    loop_free(loop);
    if (have_qemu_img()) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "qemu-img check -q '%s'", path);
        assert_int_equal(system(cmd), 0);
    }
    free(ref);
    free(data);
    free(d2);
    free(back);
}

static void test_write_roundtrip(void **state)
{
    (void)state;
    roundtrip("w64k.qcow2", 5u << 20, 65536, false);
    roundtrip("w64kc.qcow2", (5u << 20) + 1234, 65536, true);
    roundtrip("w512.qcow2", (3u << 20) + 7, 512, false);
    roundtrip("w2m.qcow2", 9u << 20, 2u << 20, true);
}

/* More L2 tables than cache slots: 512-byte clusters map 32 KiB per
 * table and the cache holds 1024 tables, so 48 MiB needs evictions of
 * dirty tables while writing and refills while reading. */
static void test_cache_eviction(void **state)
{
    (void)state;
    roundtrip("evict.qcow2", 48u << 20, 512, false);
}

static void test_create_refusals(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/bad.qcow2", tmpdir);
    struct loop *loop = loop_new();
    struct image_open_opts o = { .write = true, .create = true,
                                 .overwrite = true, .create_size = 1 << 20,
                                 .format = IMAGE_FORMAT_QCOW2,
                                 .cluster_size = 3000 };
    struct errmsg err;
    struct image *q;
    assert_int_equal(image_open(loop, path, &o, &q, &err), -EINVAL);
    assert_non_null(strstr(err.text, "invalid qcow2 cluster size 3000"));
    o.cluster_size = 512;
    o.create_size = 1ull << 50;
    assert_int_equal(image_open(loop, path, &o, &q, &err), -EINVAL);
    assert_non_null(strstr(err.text, "use a larger cluster size"));
    /* Existing qcow2 images are not opened for writing. */
    tb_make(img, sizeof img);
    struct image *p = memproto_open(loop, "mem.qcow2", img, sizeof img, true);
    struct image_open_opts rw = { .write = true };
    assert_int_equal(qcow2_open(p, &rw, &q, &err), -ENOTSUP);
    assert_non_null(strstr(err.text, "create a new one"));
    loop_free(loop);
}

/* Random batches of overlapping writes and zero writes (all in flight
 * together), with and without compression, checked against a reference
 * after every batch, after reopening, and with qemu-img check. */
static uint64_t rng_state;

static uint64_t rnd(uint64_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (rng_state >> 33) % n;
}

static void random_ops(const char *name, uint32_t cs, bool compress,
                       uint64_t seed, bool with_backing)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    uint64_t size = 4u << 20;
    rng_state = seed;
    uint8_t *ref = calloc(1, size), *back = malloc(size);
    uint8_t *data = malloc(size);
    assert_true(ref && back && data);
    fill_pattern(data, size, seed);
    if (with_backing) {
        /* A raw backing file, shorter than the image, next to it. */
        uint64_t bsize = size - size / 3 + 77;
        for (uint64_t k = 0; k < bsize; k++)
            ref[k] = (uint8_t)(k * 13 + (k >> 12));
        memset(ref + 4096, 0, 70000);
        write_file("rbase.raw", ref, bsize);
    }
    struct loop *loop = loop_new();
    struct image_open_opts o = { .write = true, .create = true,
                                 .overwrite = true, .create_size = size,
                                 .format = IMAGE_FORMAT_QCOW2,
                                 .cluster_size = cs, .compress = compress,
                                 .backing = with_backing ? "rbase.raw" : NULL,
                                 .backing_format = with_backing ? "raw"
                                                                : NULL };
    struct errmsg err;
    struct image *q;
    assert_int_equal(image_open(loop, path, &o, &q, &err), 0);
    for (int batch = 0; batch < 12; batch++) {
        struct wr w = { 0 };
        int n = 1 + (int)rnd(24);
        for (int i = 0; i < n; i++) {
            uint64_t len = rnd(8) == 0 ? 1 + rnd(300000) : 1 + rnd(3 * cs);
            uint64_t off = rnd(size - len + 1);
            if (rnd(4) == 0)
                off = off / cs * cs;        /* whole clusters too */
            if (rnd(3) == 0) {
                memset(ref + off, 0, len);
                w.pending++;
                image_write_zeroes(q, off, len, 0, wr_cb, &w);
            } else {
                uint64_t src = rnd(size - len + 1);
                memcpy(ref + off, data + src, len);
                w.pending++;
                image_write(q, data + src, off, len, wr_cb, &w);
            }
        }
        assert_int_equal(loop_run_until(loop, &w.done), 0);
        if (w.err)
            fail_msg("%s cs %u seed %llu batch %d: %s: %s", name, cs,
                     (unsigned long long)seed, batch, strerror(-w.err),
                     q->last_error.text);
        if (batch % 4 == 3)
            assert_int_equal(image_flush_sync(q), 0);
        assert_int_equal(image_read_sync(q, back, 0, size), 0);
        for (uint64_t k = 0; k < size; k++)
            if (back[k] != ref[k])
                fail_msg("%s cs %u seed %llu batch %d: first difference at "
                         "%llu", name, cs, (unsigned long long)seed, batch,
                         (unsigned long long)k);
    }
    assert_int_equal(image_close(q), 0);
    struct image_open_opts ro = { 0 };
    assert_int_equal(image_open(loop, path, &ro, &q, &err), 0);
    memset(back, 0x5c, size);
    assert_int_equal(image_read_sync(q, back, 0, size), 0);
    assert_memory_equal(back, ref, size);
    image_close(q);
    loop_free(loop);
    if (have_qemu_img()) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "qemu-img check -q '%s'", path);
        assert_int_equal(system(cmd), 0);
    }
    free(ref);
    free(back);
    free(data);
}

static void test_random_ops(void **state)
{
    (void)state;
    const uint32_t sizes[] = { 512, 4096, 65536 };
    const char *env = getenv("QCOW2_TEST_SEEDS");     /* more: soak test */
    uint64_t seeds = env ? strtoull(env, NULL, 10) : 4;
    for (uint64_t seed = 1; seed <= seeds; seed++)
        for (int i = 0; i < 3; i++) {
            random_ops("rnd.qcow2", sizes[i], false, seed * 10 + i, false);
            random_ops("rndc.qcow2", sizes[i], true, seed * 10 + i, false);
            random_ops("rndb.qcow2", sizes[i], false, seed * 10 + i, true);
            random_ops("rndbc.qcow2", sizes[i], true, seed * 10 + i, true);
        }
}

/* The dirty bit (incompatible feature bit 0) in the header on disk. */
static int dirty_on_disk(const char *path)
{
    uint8_t h[80];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(h, 1, sizeof h, f), sizeof h);
    fclose(f);
    return h[79] & 1;
}

/* An interrupted target is never complete: the header says dirty from
 * creation until a commit, and again from the next write. */
static void test_dirty_until_commit(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/dirty.qcow2", tmpdir);
    struct loop *loop = loop_new();
    struct image_open_opts o = { .write = true, .create = true,
                                 .overwrite = true, .create_size = 1 << 20,
                                 .format = IMAGE_FORMAT_QCOW2 };
    struct errmsg err;
    struct image *q;
    assert_int_equal(image_open(loop, path, &o, &q, &err), 0);
    assert_int_equal(dirty_on_disk(path), 1);
    uint8_t buf[4096];
    memset(buf, 0x42, sizeof buf);
    assert_int_equal(image_write_sync(q, buf, 0, sizeof buf), 0);
    assert_int_equal(dirty_on_disk(path), 1);
    assert_int_equal(image_flush_sync(q), 0);
    assert_int_equal(dirty_on_disk(path), 0);
    assert_int_equal(image_write_sync(q, buf, 512 * 1024, sizeof buf), 0);
    assert_int_equal(dirty_on_disk(path), 1);
    /* Closed without a flush after that write (an interrupted copy): the
     * metadata is committed, so the data is reachable and consistent,
     * but the image stays marked dirty. */
    assert_int_equal(image_close(q), 0);
    assert_int_equal(dirty_on_disk(path), 1);
    char cmd[1200];
    if (have_qemu_img()) {
        snprintf(cmd, sizeof cmd, "qemu-img check -q '%s' && qemu-img info "
                 "'%s' | grep -q 'cleanly shut down: no'", path, path);
        assert_int_equal(system(cmd), 0);
    }
    struct image_open_opts ro = { 0 };
    assert_int_equal(image_open(loop, path, &ro, &q, &err), 0);
    uint8_t back[4096];
    assert_int_equal(image_read_sync(q, back, 512 * 1024, sizeof back), 0);
    assert_memory_equal(back, buf, sizeof buf);
    image_close(q);

    /* Write, flush, close: clean. */
    assert_int_equal(image_open(loop, path, &o, &q, &err), 0);
    assert_int_equal(image_write_sync(q, buf, 4096, sizeof buf), 0);
    assert_int_equal(image_flush_sync(q), 0);
    assert_int_equal(image_close(q), 0);
    assert_int_equal(dirty_on_disk(path), 0);
    /* A failed data write: no later commit makes the image look
     * complete.  The memory protocol holds 256 KiB and cannot grow. */
    uint8_t *space = calloc(1, 256 * 1024);
    struct image *p = memproto_open(loop, "small.qcow2", space, 256 * 1024,
                                    false);
    free(space);
    p->read_only = false;
    struct image_open_opts co = { .write = true, .cluster_size = 4096 };
    assert_int_equal(qcow2_create(p, 1 << 20, &co, &q, &err), 0);
    static uint8_t big[512 * 1024];
    assert_true(image_write_sync(q, big + 1, 0, sizeof big - 1) < 0 ||
                image_write_sync(q, buf, 600 * 1024, sizeof buf) < 0);
    assert_true(image_flush_sync(q) < 0);
    size_t plen;
    const uint8_t *pd = memproto_data(p, &plen);
    assert_int_equal(pd[79] & 1, 1);
    assert_true(image_close(q) < 0);

    /* Metadata writes failing during a commit: flush fails (no hang),
     * the header on the protocol stays dirty. */
    p = memproto_open(loop, "failing.qcow2", NULL, 0, true);
    assert_int_equal(qcow2_create(p, 8 << 20, &co, &q, &err), 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(image_write_sync(q, buf, (uint64_t)i * 65536,
                                          sizeof buf), 0);
    memproto_fail_writes(p, true);
    assert_true(image_flush_sync(q) < 0);
    pd = memproto_data(p, &plen);
    assert_int_equal(pd[79] & 1, 1);
    assert_true(image_close(q) < 0);
    loop_free(loop);
    if (have_qemu_img()) {
        snprintf(cmd, sizeof cmd, "qemu-img check -q '%s'", path);
        assert_int_equal(system(cmd), 0);
    }
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/imgfs-qcow2-rw-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_kinds),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_chain_loop_and_depth),
        cmocka_unit_test(test_no_backing_top_layer),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_cache_eviction),
        cmocka_unit_test(test_create_refusals),
        cmocka_unit_test(test_dirty_until_commit),
        cmocka_unit_test(test_random_ops),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
