/* Unit tests of backends/file.c (local files) on temporary files:
 * open rules, block status, write_zeroes, many requests in flight,
 * growable vs fixed size. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/image-open.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

struct fixture {
    char dir[256];
    char path[300];
    struct loop *loop;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/test-file.XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/img", f->dir);
    f->loop = loop_new();
    *state = f;
    return f->loop ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    loop_free(f->loop);
    free(f);
    return 0;
}

/* Fill `buf` with a pattern that differs per offset and seed. */
static void pattern(uint8_t *buf, size_t len, uint64_t offset, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t x = (offset + i) * 2654435761u + seed * 40503u;
        buf[i] = (uint8_t)(x >> 13) | 1;    /* never zero */
    }
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    return st.st_size;
}

static struct image *open_ok(struct fixture *f, const struct image_open_opts *o)
{
    struct image *img = NULL;
    struct errmsg err = { "" };
    int r = image_open_protocol(f->loop, f->path, o, &img, &err);
    if (r != 0)
        fail_msg("open %s: %d %s", f->path, r, err.text);
    assert_string_equal(img->ops->name, "file");
    return img;
}

/* ---- async helpers -------------------------------------------------- */

struct wait_io {
    bool done;
    int err;
};

static void io_cb(void *opaque, int err)
{
    struct wait_io *w = opaque;
    w->err = err;
    w->done = true;
}

static int zero_sync(struct image *img, uint64_t off, uint64_t len,
                     unsigned flags)
{
    struct wait_io w = { false, 0 };
    image_write_zeroes(img, off, len, flags, io_cb, &w);
    assert_false(w.done);       /* never completes inside the call */
    assert_int_equal(loop_run_until(img->loop, &w.done), 0);
    return w.err;
}

struct wait_status {
    bool done;
    int err;
    size_t n;
    struct extent ext[128];
};

static void status_cb(void *opaque, int err, const struct extent *ext,
                      size_t n)
{
    struct wait_status *w = opaque;
    w->err = err;
    w->n = n;
    if (n > 128)
        n = 128;
    if (n)
        memcpy(w->ext, ext, n * sizeof *ext);
    w->done = true;
}

static int status_sync(struct image *img, uint64_t off, uint64_t len,
                       struct wait_status *w)
{
    memset(w, 0, sizeof *w);
    image_block_status(img, off, len, status_cb, w);
    assert_false(w->done);
    assert_int_equal(loop_run_until(img->loop, &w->done), 0);
    return w->err;
}

/* ---- open rules ----------------------------------------------------- */

static void test_missing_target_needs_create(void **state)
{
    struct fixture *f = *state;
    struct image_open_opts o = { .write = true, .create_size = 4096 };
    struct image *img = NULL;
    struct errmsg err = { "" };
    assert_int_equal(image_open_protocol(f->loop, f->path, &o, &img, &err),
                     -ENOENT);
    assert_null(img);
    assert_non_null(strstr(err.text, f->path));
    assert_non_null(strstr(err.text, "use --create"));
    assert_int_equal(file_size(f->path), -1);     /* nothing created */

    /* A missing source is ENOENT too, and names the path. */
    o = (struct image_open_opts){ 0 };
    assert_int_equal(image_open_protocol(f->loop, f->path, &o, &img, &err),
                     -ENOENT);
    assert_non_null(strstr(err.text, f->path));
}

static void test_create_makes_sparse_zero_file(void **state)
{
    struct fixture *f = *state;
    struct image_open_opts o = { .write = true, .create = true,
                                 .create_size = 3 * MiB + 17 };
    struct image *img = open_ok(f, &o);
    assert_int_equal(img->size, 3 * MiB + 17);
    assert_true(img->reads_as_zero);
    assert_false(img->read_only);
    assert_true(img->can_unmap);
    assert_int_equal(img->block_size, 1);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_size, 3 * MiB + 17);
    assert_true(st.st_blocks * 512 < 64 * KiB);   /* sparse */
    uint8_t buf[4096];
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(image_read_sync(img, buf, 3 * MiB + 17 - 4096, 4096), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    assert_int_equal(image_close(img), 0);
}

static void test_existing_nonempty_needs_overwrite(void **state)
{
    struct fixture *f = *state;
    uint8_t data[10000], back[10000];
    pattern(data, sizeof data, 0, 1);
    write_file(f->path, data, sizeof data);

    for (int create = 0; create <= 1; create++) {
        struct image_open_opts o = { .write = true, .create = create,
                                     .create_size = 4096 };
        struct image *img = NULL;
        struct errmsg err = { "" };
        assert_int_equal(image_open_protocol(f->loop, f->path, &o, &img, &err),
                         -EEXIST);
        assert_null(img);
        assert_non_null(strstr(err.text, f->path));
        assert_non_null(strstr(err.text, "use --overwrite"));
        /* Nothing touched: same size, same bytes. */
        assert_int_equal(file_size(f->path), sizeof data);
        int fd = open(f->path, O_RDONLY);
        assert_int_equal(read(fd, back, sizeof back), (ssize_t)sizeof back);
        close(fd);
        assert_memory_equal(data, back, sizeof data);
    }

    /* --overwrite without --create: opened in place, contents kept. */
    struct image_open_opts o = { .write = true, .overwrite = true,
                                 .create_size = 4096 };
    struct image *img = open_ok(f, &o);
    assert_int_equal(img->size, sizeof data);
    assert_false(img->reads_as_zero);
    assert_int_equal(image_read_sync(img, back, 0, sizeof back), 0);
    assert_memory_equal(data, back, sizeof data);
    assert_int_equal(image_close(img), 0);

    /* --overwrite --create: truncated to create_size, all zeroes. */
    o.create = true;
    o.create_size = 5000;
    img = open_ok(f, &o);
    assert_int_equal(img->size, 5000);
    assert_true(img->reads_as_zero);
    assert_int_equal(image_read_sync(img, back, 0, 5000), 0);
    for (size_t i = 0; i < 5000; i++)
        assert_int_equal(back[i], 0);
    assert_int_equal(image_close(img), 0);
    assert_int_equal(file_size(f->path), 5000);
}

static void test_existing_empty_target_allowed(void **state)
{
    struct fixture *f = *state;
    write_file(f->path, "", 0);
    struct image_open_opts o = { .write = true, .create = true,
                                 .create_size = 8192 };
    struct image *img = open_ok(f, &o);
    assert_int_equal(img->size, 8192);
    assert_true(img->reads_as_zero);
    assert_int_equal(image_close(img), 0);
    assert_int_equal(file_size(f->path), 8192);
}

static void test_source_is_read_only(void **state)
{
    struct fixture *f = *state;
    uint8_t data[4096];
    pattern(data, sizeof data, 0, 2);
    write_file(f->path, data, sizeof data);
    struct image_open_opts o = { 0 };
    struct image *img = open_ok(f, &o);
    assert_true(img->read_only);
    assert_false(img->reads_as_zero);
    assert_int_equal(img->size, 4096);
    uint8_t buf[4096] = { 0 };
    assert_int_equal(image_write_sync(img, buf, 0, 512), -EROFS);
    assert_int_equal(zero_sync(img, 0, 512, 0), -EROFS);
    assert_int_equal(image_read_sync(img, buf, 0, 4096), 0);
    assert_memory_equal(buf, data, sizeof data);
    /* Reads past the end are refused, not clipped. */
    assert_int_equal(image_read_sync(img, buf, 4000, 200), -EINVAL);
    assert_non_null(strstr(img->last_error.text, f->path));
    assert_int_equal(image_close(img), 0);
}

static void test_not_a_file(void **state)
{
    struct fixture *f = *state;
    struct image_open_opts o = { 0 };
    struct image *img = NULL;
    struct errmsg err = { "" };
    assert_int_equal(image_open_protocol(f->loop, f->dir, &o, &img, &err),
                     -EISDIR);
    assert_non_null(strstr(err.text, f->dir));
    assert_int_equal(image_open_protocol(f->loop, "/dev/null", &o, &img, &err),
                     -EINVAL);
    assert_non_null(strstr(err.text, "not a regular file or block device"));
}

/* ---- block status --------------------------------------------------- */

static void check_contiguous(const struct wait_status *w, uint64_t off,
                             uint64_t end)
{
    assert_true(w->n >= 1);
    assert_int_equal(w->ext[0].offset, off);
    for (size_t i = 0; i < w->n; i++) {
        assert_true(w->ext[i].length > 0);
        if (i > 0)
            assert_int_equal(w->ext[i].offset,
                             w->ext[i - 1].offset + w->ext[i - 1].length);
    }
    assert_true(w->ext[w->n - 1].offset + w->ext[w->n - 1].length <= end);
}

static void test_block_status_sparse(void **state)
{
    struct fixture *f = *state;
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 * MiB), 0);
    uint8_t buf[8192];
    pattern(buf, sizeof buf, 0, 3);
    assert_int_equal(pwrite(fd, buf, 4096, 64 * KiB), 4096);
    assert_int_equal(pwrite(fd, buf, 8192, 512 * KiB), 8192);
    assert_int_equal(fsync(fd), 0);
    close(fd);

    struct image_open_opts o = { 0 };
    struct image *img = open_ok(f, &o);
    struct wait_status w;
    assert_int_equal(status_sync(img, 0, img->size, &w), 0);
    check_contiguous(&w, 0, 1 * MiB);
    assert_int_equal(w.n, 5);
    const struct extent want[] = {
        { 0, 64 * KiB, EXTENT_HOLE },
        { 64 * KiB, 4 * KiB, EXTENT_DATA },
        { 68 * KiB, 444 * KiB, EXTENT_HOLE },
        { 512 * KiB, 8 * KiB, EXTENT_DATA },
        { 520 * KiB, 504 * KiB, EXTENT_HOLE },
    };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(w.ext[i].offset, want[i].offset);
        assert_int_equal(w.ext[i].length, want[i].length);
        assert_int_equal(w.ext[i].type, want[i].type);
    }

    /* Starts exactly at the requested offset, even inside an extent, and
     * stops at offset + length. */
    assert_int_equal(status_sync(img, 66 * KiB, 100 * KiB, &w), 0);
    check_contiguous(&w, 66 * KiB, 166 * KiB);
    assert_int_equal(w.n, 2);
    assert_int_equal(w.ext[0].type, EXTENT_DATA);
    assert_int_equal(w.ext[0].length, 2 * KiB);
    assert_int_equal(w.ext[1].type, EXTENT_HOLE);
    assert_int_equal(w.ext[1].offset + w.ext[1].length, 166 * KiB);

    /* A length past the end is clipped to the size. */
    assert_int_equal(status_sync(img, 1 * MiB - 10, 1 * MiB, &w), 0);
    check_contiguous(&w, 1 * MiB - 10, 1 * MiB);
    assert_int_equal(w.ext[w.n - 1].offset + w.ext[w.n - 1].length, 1 * MiB);

    /* At or past the end: an error, with a message. */
    assert_int_equal(status_sync(img, 1 * MiB, 10, &w), -EINVAL);
    assert_int_equal(w.n, 0);
    assert_int_equal(image_close(img), 0);
}

static void test_block_status_bounded(void **state)
{
    /* 300 data islands: one call may not report them all, but repeated
     * calls starting where the last one stopped cover the file exactly. */
    struct fixture *f = *state;
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    const unsigned islands = 300;
    assert_int_equal(ftruncate(fd, islands * 64 * KiB), 0);
    uint8_t buf[4096];
    pattern(buf, sizeof buf, 0, 4);
    for (unsigned i = 0; i < islands; i++)
        assert_int_equal(pwrite(fd, buf, 4096, i * 64 * KiB + 32 * KiB), 4096);
    close(fd);

    struct image_open_opts o = { 0 };
    struct image *img = open_ok(f, &o);
    uint64_t pos = 0, data_bytes = 0;
    unsigned calls = 0, data_extents = 0;
    struct wait_status w;
    while (pos < img->size) {
        assert_int_equal(status_sync(img, pos, img->size - pos, &w), 0);
        check_contiguous(&w, pos, img->size);
        assert_true(w.n <= 128);
        for (size_t i = 0; i < w.n; i++) {
            if (w.ext[i].type == EXTENT_DATA) {
                assert_int_equal(w.ext[i].offset % (64 * KiB), 32 * KiB);
                data_bytes += w.ext[i].length;
                data_extents++;
            }
        }
        pos = w.ext[w.n - 1].offset + w.ext[w.n - 1].length;
        calls++;
    }
    assert_int_equal(pos, img->size);
    assert_int_equal(data_extents, islands);
    assert_int_equal(data_bytes, islands * 4096);
    assert_true(calls > 1);     /* bounded per call */
    assert_int_equal(image_close(img), 0);
}

/* ---- write_zeroes --------------------------------------------------- */

static void test_write_zeroes(void **state)
{
    struct fixture *f = *state;
    const size_t size = 2 * MiB;
    uint8_t *data = malloc(size), *back = malloc(size);
    pattern(data, size, 0, 5);
    write_file(f->path, data, size);

    struct image_open_opts o = { .write = true, .overwrite = true };
    struct image *img = open_ok(f, &o);
    struct stat before, after;
    assert_int_equal(stat(f->path, &before), 0);

    /* MAY_UNMAP punches a hole. */
    assert_int_equal(zero_sync(img, 256 * KiB, 512 * KiB,
                               IMAGE_ZERO_MAY_UNMAP), 0);
    memset(data + 256 * KiB, 0, 512 * KiB);
    /* Without MAY_UNMAP the range reads as zeroes too (unaligned range). */
    assert_int_equal(zero_sync(img, 1 * MiB + 3, 100 * KiB + 1, 0), 0);
    memset(data + 1 * MiB + 3, 0, 100 * KiB + 1);
    assert_int_equal(image_flush_sync(img), 0);

    assert_int_equal(image_read_sync(img, back, 0, size), 0);
    assert_memory_equal(data, back, size);
    assert_int_equal(stat(f->path, &after), 0);
    assert_int_equal(after.st_size, size);
    assert_true(after.st_blocks < before.st_blocks);

    struct wait_status w;
    assert_int_equal(status_sync(img, 256 * KiB, 512 * KiB, &w), 0);
    assert_int_equal(w.n, 1);
    assert_int_equal(w.ext[0].type, EXTENT_HOLE);
    assert_int_equal(w.ext[0].length, 512 * KiB);

    /* Past the end of a fixed-size file: ENOSPC, size unchanged. */
    assert_int_equal(zero_sync(img, size - 10, 20, 0), -ENOSPC);
    assert_int_equal(file_size(f->path), size);
    assert_int_equal(image_close(img), 0);
    free(data);
    free(back);
}

/* ---- concurrency ---------------------------------------------------- */

struct many {
    unsigned completed;
    unsigned failed;
    bool all_done;
    unsigned total;
};

static void many_cb(void *opaque, int err)
{
    struct many *m = opaque;
    if (err)
        m->failed++;
    if (++m->completed == m->total)
        m->all_done = true;
}

static void test_many_in_flight(void **state)
{
    struct fixture *f = *state;
    const unsigned nreq = 64;
    const size_t chunk = 64 * KiB + 7;      /* odd sizes: block_size 1 */
    const uint64_t size = nreq * chunk;
    struct image_open_opts o = { .write = true, .create = true,
                                 .create_size = size };
    struct image *img = open_ok(f, &o);
    uint8_t *data = malloc(size), *back = malloc(size);
    pattern(data, size, 0, 6);
    memset(back, 0, size);

    /* Issue every write at once, in reverse order. */
    struct many m = { .total = nreq };
    for (unsigned i = nreq; i-- > 0;)
        image_write(img, data + i * chunk, i * chunk, chunk, many_cb, &m);
    assert_int_equal(m.completed, 0);
    assert_int_equal(loop_run_until(f->loop, &m.all_done), 0);
    assert_int_equal(m.failed, 0);

    m = (struct many){ .total = nreq };
    for (unsigned i = 0; i < nreq; i++)
        image_read(img, back + i * chunk, i * chunk, chunk, many_cb, &m);
    assert_int_equal(loop_run_until(f->loop, &m.all_done), 0);
    assert_int_equal(m.failed, 0);
    assert_memory_equal(data, back, size);
    assert_int_equal(image_flush_sync(img), 0);
    assert_int_equal(image_close(img), 0);

    /* And the bytes are really in the file. */
    int fd = open(f->path, O_RDONLY);
    memset(back, 0, size);
    assert_int_equal(read(fd, back, size), (ssize_t)size);
    close(fd);
    assert_memory_equal(data, back, size);
    free(data);
    free(back);
}

/* ---- size ----------------------------------------------------------- */

static void test_growable_vs_fixed(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[4096];
    pattern(buf, sizeof buf, 0, 7);

    struct image_open_opts o = { .write = true, .create = true,
                                 .create_size = 8192 };
    struct image *img = open_ok(f, &o);
    assert_int_equal(image_write_sync(img, buf, 8192 - 100, 200), -ENOSPC);
    assert_non_null(strstr(img->last_error.text, "past the end"));
    assert_int_equal(image_write_sync(img, buf, 8192, 1), -ENOSPC);
    assert_int_equal(img->size, 8192);
    assert_int_equal(image_close(img), 0);
    assert_int_equal(file_size(f->path), 8192);

    o.overwrite = true;
    o.growable = true;
    o.create_size = 0;
    img = open_ok(f, &o);
    assert_int_equal(img->size, 0);
    assert_int_equal(image_write_sync(img, buf, 10000, 4096), 0);
    assert_int_equal(img->size, 14096);
    assert_int_equal(zero_sync(img, 20000, 5000, IMAGE_ZERO_MAY_UNMAP), 0);
    assert_int_equal(img->size, 25000);
    assert_int_equal(image_close(img), 0);
    assert_int_equal(file_size(f->path), 25000);

    uint8_t *back = calloc(1, 25000);
    int fd = open(f->path, O_RDONLY);
    assert_int_equal(read(fd, back, 25000), 25000);
    close(fd);
    for (size_t i = 0; i < 25000; i++) {
        if (i >= 10000 && i < 14096)
            assert_int_equal(back[i], buf[i - 10000]);
        else
            assert_int_equal(back[i], 0);
    }
    free(back);
}

/* A failing system call surfaces as the completion's -errno, with
 * last_error naming the file and the call. */
static void test_io_error_names_syscall(void **state)
{
    struct fixture *f = *state;
    struct image_open_opts o = { .write = true, .create = true,
                                 .growable = true, .create_size = 4096 };
    struct image *img = open_ok(f, &o);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 64 * KiB;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    uint8_t buf[4096] = { 1 };
    int r = image_write_sync(img, buf, 128 * KiB, sizeof buf);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(r, -EFBIG);
    assert_non_null(strstr(img->last_error.text, f->path));
    assert_non_null(strstr(img->last_error.text, "pwrite at offset 131072"));
    assert_int_equal(img->size, 4096);      /* did not grow */
    assert_int_equal(image_close(img), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_target_needs_create,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_makes_sparse_zero_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_existing_nonempty_needs_overwrite,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_existing_empty_target_allowed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_is_read_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_status_sparse,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_status_bounded,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_zeroes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_growable_vs_fixed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_error_names_syscall,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
