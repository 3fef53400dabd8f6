/* test-iscsi-backend.c — the iscsi protocol backend against the real tgtd
 * started by scripts/test-servers.
 *
 * The test creates its own LUNs (`test-servers add-lun`, 512- and
 * 4096-byte blocks, thin and thick) and deletes them at the end.  Every
 * write goes through the backend; results are checked against the LUNs'
 * backing files, read locally: memcmp and cmp(1) for contents,
 * SEEK_DATA/SEEK_HOLE and st_blocks for allocation.  Covered: geometry,
 * random I/O with 64+ requests in flight and requests larger than one
 * command, write_zeroes with/without MAY_UNMAP on thin and thick LUNs,
 * block status against the backing file's holes, bounds and alignment,
 * bad URLs, CHAP, and a connection dropped by the target mid-I/O.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends/image-open.h"
#include "itest-util.h"
#include "servers-env.h"

#define MiB (1024u * 1024u)
#define LUN_SIZE (96ull * MiB)      /* > 64 MiB: more than one WRITE SAME */

struct lun {
    const char *tag;        /* t512, k512, t4k, k4k */
    uint32_t bs;
    bool thin;
    char name[64];          /* test-servers LUN name */
    char url[512];
    char file[512];         /* backing file */
    bool created;
};

static struct lun luns[] = {
    { "t512", 512, true },
    { "k512", 512, false },
    { "t4k", 4096, true },
    { "k4k", 4096, false },
};
#define NLUNS (sizeof luns / sizeof luns[0])

static struct loop *loop;
static const char *test_servers;
static char tmpdir[] = "/tmp/itest-iscsi-XXXXXX";

/* --- helpers ----------------------------------------------------------- */

static uint64_t rnd_state = 42;
static uint64_t rnd(uint64_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state % n;
}

static struct image *open_lun(const char *url)
{
    struct image_open_opts o = { .write = true };
    struct image *img = NULL;
    struct errmsg err = { { 0 } };
    int r = image_open_protocol(loop, url, &o, &img, &err);
    if (r != 0)
        fail_msg("open %s: %d %s", url, r, err.text);
    return img;
}

/* Asynchronous completions counted by `pending`. */
static int pending;

struct op {
    bool done;
    int err;
};

static void op_cb(void *opaque, int err)
{
    struct op *op = opaque;
    op->done = true;
    op->err = err;
    pending--;
}

static void wait_all(void)
{
    while (pending > 0)
        assert_int_equal(loop_run_once(loop, 1000), 0);
}

static int zeroes_sync(struct image *img, uint64_t off, uint64_t len,
                       unsigned flags)
{
    struct op op = { 0 };
    pending++;
    image_write_zeroes(img, off, len, flags, op_cb, &op);
    assert_false(op.done); /* never completes inside the call */
    wait_all();
    return op.err;
}

struct status_result {
    bool done;
    int err;
    struct extent ext[256];
    size_t n;
};

static void status_cb(void *opaque, int err, const struct extent *ext,
                      size_t n)
{
    struct status_result *s = opaque;
    s->done = true;
    s->err = err;
    s->n = n < 256 ? n : 256;
    if (err == 0)
        memcpy(s->ext, ext, s->n * sizeof *ext);
    pending--;
}

static void status_sync(struct image *img, uint64_t off, uint64_t len,
                        struct status_result *s)
{
    memset(s, 0, sizeof *s);
    pending++;
    image_block_status(img, off, len, status_cb, s);
    assert_false(s->done);
    wait_all();
}

static void read_backing(const struct lun *l, void *buf, uint64_t off,
                         size_t len)
{
    int fd = open(l->file, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Is [off, off+len) of the backing file entirely a hole / entirely data? */
static bool backing_is_hole(const struct lun *l, uint64_t off, uint64_t len)
{
    int fd = open(l->file, O_RDONLY);
    assert_true(fd >= 0);
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    close(fd);
    return d < 0 || (uint64_t)d >= off + len;
}

static bool backing_is_data(const struct lun *l, uint64_t off, uint64_t len)
{
    int fd = open(l->file, O_RDONLY);
    assert_true(fd >= 0);
    off_t h = lseek(fd, (off_t)off, SEEK_HOLE);
    close(fd);
    return h >= 0 && (uint64_t)h >= off + len;
}

static uint64_t backing_allocated(const struct lun *l)
{
    struct stat st;
    assert_int_equal(stat(l->file, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/* --- setup ------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    servers_env_require();
    test_servers = servers_env_get("TEST_SERVERS");
    if (!test_servers || !servers_env_get("ISCSI_PORTAL"))
        return -1;
    if (!mkdtemp(tmpdir))
        return -1;
    loop = loop_new();
    if (!loop)
        return -1;
    for (size_t i = 0; i < NLUNS; i++) {
        struct lun *l = &luns[i];
        snprintf(l->name, sizeof l->name, "itest-iscsi-%d-%s", (int)getpid(),
                 l->tag);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' add-lun %s %llu %u %s", test_servers,
                 l->name, (unsigned long long)LUN_SIZE, l->bs,
                 l->thin ? "thin" : "thick");
        FILE *p = popen(cmd, "r");
        if (!p)
            return -1;
        int got = fscanf(p, "%511s %511s", l->url, l->file);
        int st = pclose(p);
        if (got != 2 || st != 0) {
            fprintf(stderr, "add-lun %s failed\n", l->name);
            return -1;
        }
        l->created = true;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < NLUNS; i++)
        if (luns[i].created)
            run("'%s' del-lun %s", test_servers, luns[i].name);
    run("rm -rf '%s'", tmpdir);
    if (loop)
        loop_free(loop);
    return 0;
}

/* --- tests ------------------------------------------------------------- */

static void test_geometry(void **state)
{
    (void)state;
    for (size_t i = 0; i < NLUNS; i++) {
        struct image *img = open_lun(luns[i].url);
        assert_string_equal(img->ops->name, "iscsi");
        assert_int_equal(img->size, LUN_SIZE);
        assert_int_equal(img->block_size, luns[i].bs);
        assert_int_equal(img->max_request, 0);
        assert_int_equal(img->can_unmap, luns[i].thin);
        assert_int_equal(image_close(img), 0);
    }
}

/* Random non-overlapping writes (64+ in flight, some larger than one
 * command may carry), then random reads in flight; both checked against
 * a reference copy and the backing file. */
static void random_io(struct lun *l, uint64_t seed)
{
    rnd_state = seed;
    struct image *img = open_lun(l->url);
    uint8_t *ref = malloc(LUN_SIZE);
    assert_non_null(ref);
    read_backing(l, ref, 0, LUN_SIZE);

    struct { uint64_t off; size_t len; struct op op; } w[200];
    size_t nw = 0;
    uint64_t cursor = 0;
    uint32_t bs = l->bs;
    while (nw < 200) {
        uint64_t gap = rnd(16) * bs;
        size_t len = (nw % 20 == 3) ? (9 * MiB + rnd(64) * bs)  /* > 4 MiB */
                                    : (1 + rnd(512 * 512 / bs)) * bs;
        if (cursor + gap + len > LUN_SIZE)
            break;
        w[nw].off = cursor + gap;
        w[nw].len = len;
        cursor = w[nw].off + len;
        fill_random(ref + w[nw].off, len, seed * 1000 + nw);
        nw++;
    }
    assert_true(nw >= 64);
    for (size_t i = 0; i < nw; i++) {
        pending++;
        image_write(img, ref + w[i].off, w[i].off, w[i].len, op_cb, &w[i].op);
    }
    wait_all();
    for (size_t i = 0; i < nw; i++)
        if (w[i].op.err)
            fail_msg("write %zu at %" PRIu64 "+%zu: %d %s", i, w[i].off,
                     w[i].len, w[i].op.err, img->last_error.text);
    assert_int_equal(image_flush_sync(img), 0);

    /* The backing file, byte for byte (memcmp and cmp). */
    uint8_t *back = malloc(LUN_SIZE);
    assert_non_null(back);
    read_backing(l, back, 0, LUN_SIZE);
    assert_memory_equal(back, ref, LUN_SIZE);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/%s.expect", tmpdir, l->tag);
    FILE *f = fopen(expect, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(ref, 1, LUN_SIZE, f), LUN_SIZE);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(run("cmp '%s' '%s'", expect, l->file), 0);
    unlink(expect);

    /* Random reads, 96 in flight, some spanning several commands. */
    memset(back, 0xAA, LUN_SIZE);
    struct { uint64_t off; size_t len; struct op op; } r[96];
    for (size_t i = 0; i < 96; i++) {
        size_t len = (i % 8 == 0) ? 10 * MiB : (1 + rnd(256)) * bs;
        r[i].off = rnd((LUN_SIZE - len) / bs + 1) * bs;
        r[i].len = len;
    }
    uint8_t *bufs[96];
    for (size_t i = 0; i < 96; i++) {
        bufs[i] = malloc(r[i].len);
        assert_non_null(bufs[i]);
        pending++;
        image_read(img, bufs[i], r[i].off, r[i].len, op_cb, &r[i].op);
    }
    wait_all();
    for (size_t i = 0; i < 96; i++) {
        if (r[i].op.err)
            fail_msg("read %zu: %d %s", i, r[i].op.err, img->last_error.text);
        assert_memory_equal(bufs[i], ref + r[i].off, r[i].len);
        free(bufs[i]);
    }
    free(back);
    free(ref);
    assert_int_equal(image_close(img), 0);
}

static void test_random_io_512(void **state)
{
    (void)state;
    random_io(&luns[0], 1);
    random_io(&luns[1], 2);
}

static void test_random_io_4k(void **state)
{
    (void)state;
    random_io(&luns[2], 3);
    random_io(&luns[3], 4);
}

/* Fill [off, off+len) with random data through the backend. */
static void fill_range(struct image *img, uint64_t off, size_t len,
                       uint64_t seed)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    fill_random(buf, len, seed);
    assert_int_equal(image_write_sync(img, buf, off, len), 0);
    free(buf);
}

static void check_zero(const struct lun *l, uint64_t off, size_t len)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    read_backing(l, buf, off, len);
    assert_true(all_zero(buf, len));
    free(buf);
}

static void zeroes_on(struct lun *l)
{
    struct image *img = open_lun(l->url);
    /* Data everywhere in the first 16 MiB. */
    fill_range(img, 0, 16 * MiB, 77);
    assert_int_equal(image_flush_sync(img), 0);
    assert_true(backing_is_data(l, 0, 16 * MiB));

    /* MAY_UNMAP: zeroes, and on a thin LUN a hole in the backing file. */
    assert_int_equal(zeroes_sync(img, 1 * MiB, 3 * MiB,
                                 IMAGE_ZERO_MAY_UNMAP), 0);
    /* Without MAY_UNMAP: zeroes that stay allocated. */
    assert_int_equal(zeroes_sync(img, 6 * MiB, 2 * MiB, 0), 0);
    /* Not a multiple of 1 MiB, odd block count. */
    assert_int_equal(zeroes_sync(img, 9 * MiB + 8 * l->bs, 37 * l->bs,
                                 IMAGE_ZERO_MAY_UNMAP), 0);
    assert_int_equal(image_flush_sync(img), 0);

    check_zero(l, 1 * MiB, 3 * MiB);
    check_zero(l, 6 * MiB, 2 * MiB);
    check_zero(l, 9 * MiB + 8 * l->bs, 37 * l->bs);
    /* The neighbours kept their data. */
    uint8_t *expect = malloc(16 * MiB), *got = malloc(16 * MiB);
    assert_non_null(expect);
    assert_non_null(got);
    fill_random(expect, 16 * MiB, 77);
    read_backing(l, got, 0, 16 * MiB);
    assert_memory_equal(got, expect, 1 * MiB);
    assert_memory_equal(got + 4 * MiB, expect + 4 * MiB, 2 * MiB);
    assert_memory_equal(got + 8 * MiB, expect + 8 * MiB, 1 * MiB + 8 * l->bs);
    uint64_t after = 9 * MiB + 45 * l->bs;
    assert_memory_equal(got + after, expect + after, 16 * MiB - after);
    free(expect);
    free(got);

    if (l->thin)
        assert_true(backing_is_hole(l, 1 * MiB, 3 * MiB));
    else
        assert_true(backing_is_data(l, 1 * MiB, 3 * MiB));
    assert_true(backing_is_data(l, 6 * MiB, 2 * MiB));

    /* The whole LUN (more than one WRITE SAME's worth). */
    fill_range(img, LUN_SIZE - 2 * MiB, 2 * MiB, 78);
    assert_int_equal(zeroes_sync(img, 0, LUN_SIZE, IMAGE_ZERO_MAY_UNMAP), 0);
    assert_int_equal(image_flush_sync(img), 0);
    check_zero(l, 0, LUN_SIZE);
    if (l->thin)
        assert_true(backing_allocated(l) < 1 * MiB);
    else
        assert_true(backing_is_data(l, 0, LUN_SIZE));
    assert_int_equal(image_close(img), 0);
}

static void test_write_zeroes(void **state)
{
    (void)state;
    for (size_t i = 0; i < NLUNS; i++)
        zeroes_on(&luns[i]);
}

/* Walk block status over the whole LUN and compare each extent with the
 * backing file's data/hole map. */
static void status_on(struct lun *l)
{
    struct image *img = open_lun(l->url);
    assert_int_equal(zeroes_sync(img, 0, LUN_SIZE, IMAGE_ZERO_MAY_UNMAP), 0);
    fill_range(img, 2 * MiB, 1 * MiB, 5);
    fill_range(img, 10 * MiB, 12 * 4096, 6);
    fill_range(img, 50 * MiB, 8 * MiB, 7);
    fill_range(img, LUN_SIZE - 4096, 4096, 8);
    assert_int_equal(image_flush_sync(img), 0);

    uint64_t off = 0;
    size_t calls = 0, holes = 0, datas = 0;
    while (off < LUN_SIZE) {
        struct status_result s;
        status_sync(img, off, LUN_SIZE - off, &s);
        assert_int_equal(s.err, 0);
        assert_true(s.n >= 1 && s.n <= 256);
        assert_int_equal(s.ext[0].offset, off);
        for (size_t i = 0; i < s.n; i++) {
            const struct extent *e = &s.ext[i];
            assert_int_equal(e->offset, off);
            assert_true(e->length > 0);
            assert_true(e->offset + e->length <= LUN_SIZE);
            if (!l->thin) {
                assert_int_equal(e->type, EXTENT_DATA);
            } else if (e->type == EXTENT_HOLE) {
                assert_true(backing_is_hole(l, e->offset, e->length));
                holes++;
            } else {
                assert_int_equal(e->type, EXTENT_DATA);
                assert_true(backing_is_data(l, e->offset, e->length));
                datas++;
            }
            off += e->length;
        }
        calls++;
    }
    if (l->thin) {
        assert_true(holes >= 4);
        assert_true(datas >= 4);
    }
    /* Starting inside an extent, and with a short length. */
    struct status_result s;
    status_sync(img, 2 * MiB + 3 * l->bs, 5 * l->bs, &s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ext[0].offset, 2 * MiB + 3 * l->bs);
    assert_int_equal(s.ext[0].length, 5 * l->bs);
    assert_int_equal(s.ext[0].type, EXTENT_DATA);
    status_sync(img, LUN_SIZE, 4096, &s);
    assert_int_equal(s.err, -EINVAL);
    assert_int_equal(image_close(img), 0);
}

static void test_block_status(void **state)
{
    (void)state;
    status_on(&luns[0]);
    status_on(&luns[2]);
    status_on(&luns[1]);
}

static void test_bounds_and_alignment(void **state)
{
    (void)state;
    struct lun *l = &luns[2]; /* 4096-byte blocks */
    struct image *img = open_lun(l->url);
    fill_range(img, LUN_SIZE - 8192, 8192, 9);
    assert_int_equal(image_flush_sync(img), 0);
    uint8_t before[8192], after[8192], buf[16384];
    read_backing(l, before, LUN_SIZE - 8192, 8192);
    memset(buf, 0x5A, sizeof buf);

    assert_int_equal(image_write_sync(img, buf, LUN_SIZE - 4096, 8192),
                     -ENOSPC);
    assert_int_equal(image_write_sync(img, buf, LUN_SIZE, 4096), -ENOSPC);
    assert_int_equal(zeroes_sync(img, LUN_SIZE - 4096, 8192, 0), -ENOSPC);
    assert_int_equal(image_read_sync(img, buf, LUN_SIZE - 4096, 8192),
                     -EINVAL);
    assert_int_equal(image_write_sync(img, buf, LUN_SIZE - 8192 + 512, 4096),
                     -EINVAL);
    assert_int_equal(image_write_sync(img, buf, LUN_SIZE - 8192, 1000),
                     -EINVAL);
    assert_int_equal(zeroes_sync(img, LUN_SIZE - 8192, 512, 0), -EINVAL);
    assert_int_equal(image_flush_sync(img), 0);
    read_backing(l, after, LUN_SIZE - 8192, 8192);
    assert_memory_equal(before, after, 8192);
    /* The last block itself is writable. */
    assert_int_equal(image_write_sync(img, buf, LUN_SIZE - 4096, 4096), 0);
    assert_int_equal(image_close(img), 0);

    /* A misaligned request on a 512-byte LUN is refused too. */
    img = open_lun(luns[0].url);
    assert_int_equal(image_write_sync(img, buf, 100, 512), -EINVAL);
    assert_int_equal(image_write_sync(img, buf, 512, 700), -EINVAL);
    assert_int_equal(image_close(img), 0);
}

static void expect_open_error(const char *url, const char *needle)
{
    struct image_open_opts o = { .write = true };
    struct image *img = NULL;
    struct errmsg err = { { 0 } };
    int r = image_open_protocol(loop, url, &o, &img, &err);
    if (r == 0)
        fail_msg("%s opened, expected an error", url);
    assert_null(img);
    if (!strstr(err.text, url))
        fail_msg("error does not name the URL: %s", err.text);
    if (needle && !strstr(err.text, needle))
        fail_msg("error lacks '%s': %s", needle, err.text);
}

static void test_bad_urls(void **state)
{
    (void)state;
    const char *portal = servers_env_get("ISCSI_PORTAL");
    const char *prefix = servers_env_get("ISCSI_IQN_PREFIX");
    char url[512];
    snprintf(url, sizeof url, "iscsi://%s/%s:no-such-target/1", portal,
             prefix);
    expect_open_error(url, "not found");
    snprintf(url, sizeof url, "iscsi://%s/%s:%s/7", portal, prefix,
             luns[0].name);
    expect_open_error(url, "LOGICAL_UNIT_NOT_SUPPORTED");
    snprintf(url, sizeof url, "iscsi://%s/%s:%s/0", portal, prefix,
             luns[0].name);
    expect_open_error(url, "not a disk");
    /* A port nobody listens on (1 is privileged and unused here). */
    snprintf(url, sizeof url, "iscsi://127.0.0.1:1/%s:%s/1", prefix,
             luns[0].name);
    expect_open_error(url, "cannot connect");
    expect_open_error("iscsi://127.0.0.1", NULL);
}

static void test_chap(void **state)
{
    (void)state;
    const char *url = servers_env_get("ISCSI_CHAP");
    const char *secret = servers_env_get("ISCSI_CHAP_SECRET_FILE");
    if (!url || !secret)
        skip();
    unsetenv("IMGFS_ISCSI_PASSWORD");

    setenv("IMGFS_ISCSI_SECRET_FILE", secret, 1);
    struct image *img = open_lun(url);
    uint8_t buf[4096];
    assert_int_equal(image_read_sync(img, buf, 0, sizeof buf), 0);
    assert_int_equal(image_close(img), 0);

    char wrong[600];
    snprintf(wrong, sizeof wrong, "%s/wrong.secret", tmpdir);
    FILE *f = fopen(wrong, "w");
    assert_non_null(f);
    fputs("not-the-secret\n", f);
    fclose(f);
    /* owner-only, or the mode check refuses it before the login */
    assert_int_equal(chmod(wrong, 0600), 0);
    setenv("IMGFS_ISCSI_SECRET_FILE", wrong, 1);
    expect_open_error(url, "Authentication");

    unsetenv("IMGFS_ISCSI_SECRET_FILE");
    expect_open_error(url, "no password");

    /* A password in the URL is refused before anything is sent. */
    char with_pw[600];
    const char *at = strchr(url, '@');
    assert_non_null(at);
    snprintf(with_pw, sizeof with_pw, "iscsi://imgfs%%secret%s", at);
    expect_open_error(with_pw, "IMGFS_ISCSI_SECRET_FILE");
}

/* Drop the target side of the LUN's connection (tgtadm) while writes and
 * reads are in flight: libiscsi reconnects and re-issues them; every
 * request must still succeed and the data must be right. */
static void drop_connection(const struct lun *l)
{
    const char *tgtadm = servers_env_get("TGTADM");
    const char *port = servers_env_get("TGTADM_CONTROL_PORT");
    const char *root = servers_env_get("TEST_ROOT");
    assert_non_null(tgtadm);
    assert_non_null(root);
    int r = run("tid=$(cat '%s/luns/%s.tid') && "
                "sid=$('%s' -C %s --lld iscsi --mode conn --op show --tid $tid"
                " | awk '/Session:/ {print $2; exit}') && "
                "test -n \"$sid\" && "
                "'%s' -C %s --lld iscsi --mode conn --op delete --tid $tid "
                "--sid $sid --cid 0", root, l->name, tgtadm,
                port ? port : "0", tgtadm, port ? port : "0");
    assert_int_equal(r, 0);
}

static void test_reconnect(void **state)
{
    (void)state;
    struct lun *l = &luns[1];
    struct image *img = open_lun(l->url);
    const size_t n = 64, len = 1 * MiB;
    uint8_t *ref = malloc(n * len), *back = malloc(n * len);
    assert_non_null(ref);
    assert_non_null(back);
    fill_random(ref, n * len, 99);
    struct op ops[64];
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < n; i++) {
        pending++;
        image_write(img, ref + i * len, i * len, len, op_cb, &ops[i]);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(loop_run_once(loop, 0), 0);
    assert_true(pending > 0);
    drop_connection(l);
    wait_all();
    for (size_t i = 0; i < n; i++)
        if (ops[i].err)
            fail_msg("write %zu after reconnect: %d %s", i, ops[i].err,
                     img->last_error.text);
    assert_int_equal(image_flush_sync(img), 0);
    read_backing(l, back, 0, n * len);
    assert_memory_equal(back, ref, n * len);

    memset(back, 0, n * len);
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < n; i++) {
        pending++;
        image_read(img, back + i * len, i * len, len, op_cb, &ops[i]);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(loop_run_once(loop, 0), 0);
    drop_connection(l);
    wait_all();
    for (size_t i = 0; i < n; i++)
        if (ops[i].err)
            fail_msg("read %zu after reconnect: %d %s", i, ops[i].err,
                     img->last_error.text);
    assert_memory_equal(back, ref, n * len);
    free(ref);
    free(back);
    assert_int_equal(image_close(img), 0);
}

/* Switch thin provisioning of a LUN on or off behind the backend's back. */
static void set_thin(const struct lun *l, bool thin)
{
    const char *tgtadm = servers_env_get("TGTADM");
    const char *port = servers_env_get("TGTADM_CONTROL_PORT");
    const char *root = servers_env_get("TEST_ROOT");
    assert_int_equal(run("'%s' -C %s --lld iscsi --mode logicalunit --op update "
                         "--tid $(cat '%s/luns/%s.tid') --lun 1 "
                         "--params thin_provisioning=%d", tgtadm,
                         port ? port : "0", root, l->name, thin ? 1 : 0), 0);
}

/* The LUN was thin at open (so the backend uses WRITE SAME + UNMAP) and
 * then stops being thin: tgtd refuses WRITE SAME with UNMAP (ILLEGAL
 * REQUEST).  The backend must fall back to plain WRITE SAME, zero the range
 * anyway, and stop claiming it can unmap. */
static void test_write_same_fallback(void **state)
{
    (void)state;
    struct lun *l = &luns[0];
    struct image *img = open_lun(l->url);
    assert_true(img->can_unmap);
    fill_range(img, 0, 4 * MiB, 31);
    assert_int_equal(image_flush_sync(img), 0);
    set_thin(l, false);
    int r = zeroes_sync(img, 1 * MiB, 2 * MiB, IMAGE_ZERO_MAY_UNMAP);
    set_thin(l, true);
    assert_int_equal(r, 0);
    assert_false(img->can_unmap);
    assert_int_equal(image_flush_sync(img), 0);
    check_zero(l, 1 * MiB, 2 * MiB);
    assert_true(backing_is_data(l, 1 * MiB, 2 * MiB));
    uint8_t *expect = malloc(4 * MiB), *got = malloc(4 * MiB);
    assert_non_null(expect);
    assert_non_null(got);
    fill_random(expect, 4 * MiB, 31);
    read_backing(l, got, 0, 4 * MiB);
    assert_memory_equal(got, expect, 1 * MiB);
    assert_memory_equal(got + 3 * MiB, expect + 3 * MiB, 1 * MiB);
    free(expect);
    free(got);
    assert_int_equal(image_close(img), 0);
}

/* Allow or refuse every initiator on the LUN's target. */
static void set_acl(const struct lun *l, bool allow)
{
    const char *tgtadm = servers_env_get("TGTADM");
    const char *port = servers_env_get("TGTADM_CONTROL_PORT");
    const char *root = servers_env_get("TEST_ROOT");
    assert_int_equal(run("'%s' -C %s --mode target --op %s --tid "
                         "$(cat '%s/luns/%s.tid') --initiator-address ALL",
                         tgtadm, port ? port : "0", allow ? "bind" : "unbind",
                         root, l->name), 0);
}

/* The target drops the session and refuses logins: after
 * $IMGFS_ISCSI_RECONNECT_TIMEOUT seconds the backend gives up, fails what
 * is in flight and everything after with -EIO, instead of hanging. */
static void test_outage(void **state)
{
    (void)state;
    struct lun *l = &luns[3];
    setenv("IMGFS_ISCSI_RECONNECT_TIMEOUT", "2", 1);
    struct image *img = open_lun(l->url);
    unsetenv("IMGFS_ISCSI_RECONNECT_TIMEOUT");
    set_acl(l, false);
    drop_connection(l);
    uint8_t *buf = calloc(1, 16 * MiB);
    assert_non_null(buf);
    struct op ops[16];
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < 16; i++) {
        pending++;
        image_write(img, buf + i * MiB, i * MiB, MiB, op_cb, &ops[i]);
    }
    struct status_result st;
    memset(&st, 0, sizeof st);
    pending++;
    image_block_status(img, 0, LUN_SIZE, status_cb, &st);
    wait_all();
    set_acl(l, true);
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(ops[i].err, -EIO);
    assert_int_equal(st.err, 0); /* thick: answered without the target */
    assert_non_null(strstr(img->last_error.text, "session lost"));
    assert_int_equal(image_write_sync(img, buf, 0, 4096), -EIO);
    assert_int_equal(image_read_sync(img, buf, 0, 4096), -EIO);
    assert_int_equal(image_flush_sync(img), -EIO);
    assert_int_equal(image_close(img), -EIO);
    free(buf);
    /* The target is back: a new open works. */
    img = open_lun(l->url);
    assert_int_equal(image_close(img), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_random_io_512),
        cmocka_unit_test(test_random_io_4k),
        cmocka_unit_test(test_write_zeroes),
        cmocka_unit_test(test_block_status),
        cmocka_unit_test(test_bounds_and_alignment),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_chap),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_write_same_fallback),
        cmocka_unit_test(test_outage),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
