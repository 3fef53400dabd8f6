/* test-nfs-backend.c — the nfs protocol backend against the real ganesha
 * started by scripts/test-servers.
 *
 * Everything the test writes goes through NFS (the backend, or libnfs for
 * mkdir/truncate); results are checked by reading the export directory
 * locally with tools we did not write (cmp, sha256sum) and by reading back
 * through the backend.  Each run works in its own subdirectory of the
 * export, so it never touches other tests' files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "backends/image-open.h"
#include "backends/nfs-image.h"     /* the image's libnfs socket */
#include "backends/protocols.h"
#include "itest-util.h"
#include "servers-env.h"

#define MiB (1024u * 1024u)

static struct loop *loop;
static const char *nfs_url;         /* nfs://127.0.0.1/imgfs */
static const char *export_dir;      /* local path of that export */
static char subdir[128];            /* this run's directory on the export */
static char tmpdir[] = "/tmp/itest-nfs-XXXXXX";    /* local expectations */

/* --- helpers ----------------------------------------------------------- */

static void url_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s/%s", nfs_url, subdir, name);
}

static void local_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s/%s", export_dir, subdir, name);
}

/* sha256sum of a local file into out[65]. */
static void sha256_of(const char *path, char out[65])
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%64s", out), 1);
    assert_int_equal(pclose(p), 0);
}

/* Write `len` bytes to the local file `path` at `offset` (expectations). */
static void local_pwrite(const char *path, const void *buf, size_t len,
                         uint64_t offset)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
    close(fd);
}

static void local_truncate(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

/* A libnfs context mounted on the export, for setup steps the backend does
 * not offer (mkdir, truncate behind its back). */
static struct nfs_context *raw_nfs(void)
{
    struct nfs_context *nfs = nfs_init_context();
    assert_non_null(nfs);
    char url[512];
    snprintf(url, sizeof url, "%s/", nfs_url);
    struct nfs_url *u = nfs_parse_url_dir(nfs, url);
    assert_non_null(u);
    assert_int_equal(nfs_mount(nfs, u->server, u->path), 0);
    nfs_destroy_url(u);
    return nfs;
}

static struct image_open_opts target_opts(bool create, bool overwrite,
                                          uint64_t size, bool growable)
{
    return (struct image_open_opts){ .write = true, .create = create,
                                     .overwrite = overwrite,
                                     .create_size = size,
                                     .growable = growable };
}

static struct image *open_ok(const char *name, struct image_open_opts o)
{
    char url[512];
    url_of(url, sizeof url, name);
    struct image *img = NULL;
    struct errmsg e = { { 0 } };
    int r = nfs_image_open(loop, url, &o, &img, &e);
    if (r < 0)
        fail_msg("open %s: %s (%s)", url, strerror(-r), e.text);
    assert_non_null(img);
    return img;
}

/* Open expecting failure `want`; the message must name the URL and
 * contain `needle`. */
static void open_fails(const char *url, struct image_open_opts o, int want,
                       const char *needle)
{
    struct image *img = NULL;
    struct errmsg e = { { 0 } };
    int r = nfs_image_open(loop, url, &o, &img, &e);
    if (r != want || !strstr(e.text, url) || !strstr(e.text, needle))
        fail_msg("open %s: got %d (%s), want %d and a message with '%s'",
                 url, r, e.text, want, needle);
    assert_null(img);
}

/* Many requests in flight: each completion counts down. */
struct batch {
    unsigned pending;
    int first_err;
    bool done;
};

static void batch_cb(void *opaque, int err)
{
    struct batch *b = opaque;
    if (err && !b->first_err)
        b->first_err = err;
    if (--b->pending == 0)
        b->done = true;
}

static int batch_wait(struct batch *b)
{
    if (b->pending)
        assert_int_equal(loop_run_until(loop, &b->done), 0);
    return b->first_err;
}

static int zeroes_sync(struct image *img, uint64_t offset, uint64_t len)
{
    struct batch b = { 1, 0, false };
    image_write_zeroes(img, offset, len, IMAGE_ZERO_MAY_UNMAP, batch_cb, &b);
    return batch_wait(&b);
}

static void close_ok(struct image *img)
{
    assert_int_equal(image_close(img), 0);
}

/* --- open rules -------------------------------------------------------- */

static void test_missing_target_needs_create(void **state)
{
    (void)state;
    char url[512];
    url_of(url, sizeof url, "missing-target.img");
    open_fails(url, target_opts(false, false, 0, false), -ENOENT,
               "--create");
    char local[512];
    local_of(local, sizeof local, "missing-target.img");
    assert_int_equal(access(local, F_OK), -1);
}

static void test_create_is_sparse_and_zero(void **state)
{
    (void)state;
    const uint64_t size = 64 * MiB;
    struct image *img = open_ok("created.img",
                                target_opts(true, false, size, false));
    assert_int_equal(img->size, size);
    assert_true(img->reads_as_zero);
    assert_false(img->read_only);
    assert_false(img->can_unmap);
    assert_int_equal(img->block_size, 1);
    close_ok(img);

    char local[512];
    local_of(local, sizeof local, "created.img");
    struct stat st;
    assert_int_equal(stat(local, &st), 0);
    assert_int_equal((uint64_t)st.st_size, size);
    /* Sparse: far fewer blocks than bytes. */
    assert_true((uint64_t)st.st_blocks * 512 < size / 4);
    assert_int_equal(run("cmp -s -n %" PRIu64 " '%s' /dev/zero", size,
                         local), 0);
}

static void test_existing_refused_without_overwrite(void **state)
{
    (void)state;
    const char *name = "precious.img";
    uint8_t data[100000];
    fill_random(data, sizeof data, 7);
    struct image *img = open_ok(name,
                                target_opts(true, false, sizeof data, false));
    assert_int_equal(image_write_sync(img, data, 0, sizeof data), 0);
    assert_int_equal(image_flush_sync(img), 0);
    close_ok(img);

    char url[512], local[512], before[65], after[65];
    url_of(url, sizeof url, name);
    local_of(local, sizeof local, name);
    sha256_of(local, before);

    open_fails(url, target_opts(false, false, 0, false), -EEXIST,
               "--overwrite");
    open_fails(url, target_opts(true, false, 4 * MiB, false), -EEXIST,
               "exists and is not empty");
    open_fails(url, target_opts(true, false, 4 * MiB, true), -EEXIST,
               "--overwrite");
    sha256_of(local, after);
    assert_string_equal(before, after);

    /* Without --create, --overwrite opens it in place, size kept. */
    img = open_ok(name, target_opts(false, true, 0, false));
    assert_int_equal(img->size, sizeof data);
    assert_false(img->reads_as_zero);
    uint8_t back[sizeof data];
    assert_int_equal(image_read_sync(img, back, 0, sizeof back), 0);
    assert_memory_equal(back, data, sizeof data);
    close_ok(img);
    sha256_of(local, after);
    assert_string_equal(before, after);

    /* --create --overwrite truncates to the new size, all zeroes. */
    img = open_ok(name, target_opts(true, true, 3 * MiB + 5, false));
    assert_int_equal(img->size, 3 * MiB + 5);
    assert_true(img->reads_as_zero);
    close_ok(img);
    struct stat st;
    assert_int_equal(stat(local, &st), 0);
    assert_int_equal(st.st_size, 3 * MiB + 5);
    assert_int_equal(run("cmp -s -n %u '%s' /dev/zero", 3 * MiB + 5, local),
                     0);
}

static void test_empty_existing_file_is_accepted(void **state)
{
    (void)state;
    /* An existing empty file needs no --overwrite. */
    struct image *img = open_ok("empty.img",
                                target_opts(true, false, 0, false));
    assert_int_equal(img->size, 0);
    close_ok(img);
    img = open_ok("empty.img", target_opts(true, false, 2 * MiB, false));
    assert_int_equal(img->size, 2 * MiB);
    close_ok(img);
}

static void test_source_is_read_only(void **state)
{
    (void)state;
    uint8_t data[5000];
    fill_random(data, sizeof data, 11);
    struct image *img = open_ok("source.img",
                                target_opts(true, false, sizeof data, false));
    assert_int_equal(image_write_sync(img, data, 0, sizeof data), 0);
    close_ok(img);

    struct image_open_opts ro = { 0 };
    img = open_ok("source.img", ro);
    assert_true(img->read_only);
    assert_int_equal(img->size, sizeof data);
    uint8_t back[sizeof data];
    assert_int_equal(image_read_sync(img, back, 0, sizeof back), 0);
    assert_memory_equal(back, data, sizeof data);
    assert_int_equal(image_write_sync(img, data, 0, 10), -EROFS);
    /* Reads past the end are refused. */
    assert_int_equal(image_read_sync(img, back, 4000, 1001), -EINVAL);
    assert_int_equal(image_flush_sync(img), 0);
    close_ok(img);
}

static void test_growable_and_fixed_size(void **state)
{
    (void)state;
    char local[512];
    local_of(local, sizeof local, "fixed.img");
    uint8_t data[70000];
    fill_random(data, sizeof data, 13);

    struct image *img = open_ok("fixed.img",
                                target_opts(true, false, 65536, false));
    assert_int_equal(image_write_sync(img, data, 60000, 10000), -ENOSPC);
    assert_true(img->last_error.text[0] != '\0');
    assert_int_equal(zeroes_sync(img, 65000, 1000), -ENOSPC);
    assert_int_equal(img->size, 65536);
    close_ok(img);
    struct stat st;
    assert_int_equal(stat(local, &st), 0);
    assert_int_equal(st.st_size, 65536);

    local_of(local, sizeof local, "grow.img");
    img = open_ok("grow.img", target_opts(true, false, 0, true));
    assert_int_equal(img->size, 0);
    assert_int_equal(image_write_sync(img, data, 0, 40000), 0);
    assert_int_equal(img->size, 40000);
    /* Past the end with a gap: the gap reads as zeroes. */
    assert_int_equal(image_write_sync(img, data + 40000, 50000, 30000), 0);
    assert_int_equal(img->size, 80000);
    assert_int_equal(zeroes_sync(img, 80000, 3 * MiB + 1), 0);
    assert_int_equal(img->size, 80000 + 3 * MiB + 1);
    assert_int_equal(image_flush_sync(img), 0);
    close_ok(img);

    char expect[600];
    snprintf(expect, sizeof expect, "%s/grow.expect", tmpdir);
    local_truncate(expect, 80000 + 3 * MiB + 1);
    local_pwrite(expect, data, 40000, 0);
    local_pwrite(expect, data + 40000, 30000, 50000);
    assert_int_equal(run("cmp '%s' '%s'", expect, local), 0);
}

/* --- data path ----------------------------------------------------------- */

/* 8 MiB of random data written at an odd offset in one request (many
 * READ3/WRITE3 pieces), then in odd-sized pieces, read back in requests
 * larger than the server's readmax. */
static void test_read_write_8m_odd_offsets(void **state)
{
    (void)state;
    const uint64_t size = 20 * MiB + 12345;
    const size_t len = 8 * MiB;
    uint8_t *data = malloc(len), *back = malloc(len);
    assert_non_null(data);
    assert_non_null(back);
    char local[512], expect[600];
    local_of(local, sizeof local, "rw.img");
    snprintf(expect, sizeof expect, "%s/rw.expect", tmpdir);
    local_truncate(expect, size);

    struct image *img = open_ok("rw.img", target_opts(true, false, size,
                                                      false));
    fill_random(data, len, 1);
    assert_int_equal(image_write_sync(img, data, 12347, len), 0);
    local_pwrite(expect, data, len, 12347);

    /* Second copy in odd pieces (3 MiB+1, 1 byte, 777 bytes, rest). */
    fill_random(data, len, 2);
    uint64_t base = 10 * MiB + 3;
    size_t cuts[] = { 3 * MiB + 1, 1, 777, 0 };
    size_t done = 0;
    for (int i = 0; i < 4; i++) {
        size_t n = cuts[i] ? cuts[i] : len - done;
        assert_int_equal(image_write_sync(img, data + done, base + done, n),
                         0);
        done += n;
    }
    local_pwrite(expect, data, len, base);
    assert_int_equal(image_flush_sync(img), 0);

    /* Read back across both regions with odd, large requests. */
    assert_int_equal(image_read_sync(img, back, base, len), 0);
    assert_memory_equal(back, data, len);
    uint8_t *whole = malloc(size);
    assert_non_null(whole);
    assert_int_equal(image_read_sync(img, whole, 0, size), 0);
    close_ok(img);
    assert_int_equal(run("cmp '%s' '%s'", expect, local), 0);

    FILE *f = fopen(expect, "rb");
    assert_non_null(f);
    uint8_t *want = malloc(size);
    assert_non_null(want);
    assert_int_equal(fread(want, 1, size, f), size);
    fclose(f);
    assert_memory_equal(whole, want, size);
    free(want);
    free(whole);
    free(data);
    free(back);
}

/* 64 writes in flight at once, then 64 reads in flight at once. */
static void test_many_concurrent_requests(void **state)
{
    (void)state;
    enum { N = 64 };
    const size_t piece = 300 * 1024 + 17;   /* odd, not a readmax multiple */
    const uint64_t size = (uint64_t)N * piece + 999;
    uint8_t *data = malloc(N * piece), *back = malloc(N * piece);
    assert_non_null(data);
    assert_non_null(back);
    fill_random(data, N * piece, 3);

    struct image *img = open_ok("many.img", target_opts(true, false, size,
                                                        false));
    /* Issue in a scattered order so completions interleave. */
    struct batch b = { N, 0, false };
    for (unsigned i = 0; i < N; i++) {
        unsigned k = (i * 37) % N;
        image_write(img, data + k * piece, 999 + (uint64_t)k * piece, piece,
                    batch_cb, &b);
    }
    assert_int_equal(batch_wait(&b), 0);
    struct batch f = { 1, 0, false };
    image_flush(img, batch_cb, &f);
    assert_int_equal(batch_wait(&f), 0);

    memset(back, 0xAA, N * piece);
    struct batch r = { N, 0, false };
    for (unsigned i = 0; i < N; i++) {
        unsigned k = (i * 29) % N;
        image_read(img, back + k * piece, 999 + (uint64_t)k * piece, piece,
                   batch_cb, &r);
    }
    assert_int_equal(batch_wait(&r), 0);
    assert_memory_equal(back, data, N * piece);
    close_ok(img);

    char local[512], expect[600];
    local_of(local, sizeof local, "many.img");
    snprintf(expect, sizeof expect, "%s/many.expect", tmpdir);
    local_truncate(expect, size);
    local_pwrite(expect, data, N * piece, 999);
    assert_int_equal(run("cmp '%s' '%s'", expect, local), 0);
    free(data);
    free(back);
}

static void test_write_zeroes(void **state)
{
    (void)state;
    const uint64_t size = 12 * MiB + 3;
    uint8_t *data = malloc(size), *back = malloc(size);
    assert_non_null(data);
    assert_non_null(back);
    fill_random(data, size, 4);
    struct image *img = open_ok("zeroes.img", target_opts(true, false, size,
                                                          false));
    assert_int_equal(image_write_sync(img, data, 0, size), 0);
    /* Longer than the zero buffer and the server's writemax, odd ends;
     * two ranges in flight together. */
    struct batch b = { 2, 0, false };
    image_write_zeroes(img, 1000001, 5 * MiB + 7, 0, batch_cb, &b);
    image_write_zeroes(img, 9 * MiB + 1, 3, IMAGE_ZERO_MAY_UNMAP, batch_cb,
                       &b);
    assert_int_equal(batch_wait(&b), 0);
    assert_int_equal(image_flush_sync(img), 0);
    memset(data + 1000001, 0, 5 * MiB + 7);
    memset(data + 9 * MiB + 1, 0, 3);
    assert_int_equal(image_read_sync(img, back, 0, size), 0);
    assert_memory_equal(back, data, size);
    close_ok(img);

    char local[512], expect[600];
    local_of(local, sizeof local, "zeroes.img");
    snprintf(expect, sizeof expect, "%s/zeroes.expect", tmpdir);
    local_pwrite(expect, data, size, 0);
    assert_int_equal(run("cmp '%s' '%s'", expect, local), 0);
    free(data);
    free(back);
}

/* The file shrinks behind the image's back: the missing tail reads as
 * zeroes (the image is longer than the file). */
static void test_read_past_shrunk_file(void **state)
{
    (void)state;
    uint8_t data[3 * MiB];
    fill_random(data, sizeof data, 5);
    struct image *img = open_ok("shrunk.img",
                                target_opts(true, false, sizeof data, false));
    assert_int_equal(image_write_sync(img, data, 0, sizeof data), 0);
    assert_int_equal(image_flush_sync(img), 0);

    struct nfs_context *nfs = raw_nfs();
    char path[256];
    snprintf(path, sizeof path, "/%s/shrunk.img", subdir);
    assert_int_equal(nfs_truncate(nfs, path, MiB + 100), 0);
    nfs_destroy_context(nfs);

    static uint8_t back[3 * MiB];
    memset(back, 0xAA, sizeof back);
    assert_int_equal(image_read_sync(img, back, 0, sizeof back), 0);
    memset(data + MiB + 100, 0, sizeof data - MiB - 100);
    assert_memory_equal(back, data, sizeof data);
    close_ok(img);
}

/* image_read_or_zeroes: a request answered by one READ reply of zeroes
 * completes with IMAGE_READ_ZEROES and leaves the buffer as it was (a hole
 * and written zeroes alike); data, and a request the server answers in
 * several READs, fill the buffer and complete with 0; image_read always
 * fills it. */
struct answer {
    int err;
    bool done;
};

static void answer_cb(void *opaque, int err)
{
    struct answer *a = opaque;
    a->err = err;
    a->done = true;
}

static int read_or_zeroes_sync(struct image *img, void *buf, uint64_t off,
                               size_t len)
{
    struct answer a = { 0, false };
    image_read_or_zeroes(img, buf, off, len, answer_cb, &a);
    assert_int_equal(loop_run_until(loop, &a.done), 0);
    return a.err;
}

static void test_read_or_zeroes(void **state)
{
    (void)state;
    /* [0, 1M) data, [1M, 2M) written zeroes, [2M, 4M) a hole (never
     * written), the last byte data */
    static uint8_t data[MiB];
    fill_random(data, sizeof data, 9);
    struct image *img = open_ok("read-zeroes.img",
                                target_opts(true, false, 4 * MiB, false));
    assert_int_equal(image_write_sync(img, data, 0, MiB), 0);
    static uint8_t zero[MiB];
    assert_int_equal(image_write_sync(img, zero, MiB, MiB), 0);
    uint8_t one = 0x5a;
    assert_int_equal(image_write_sync(img, &one, 4 * MiB - 1, 1), 0);
    assert_int_equal(image_flush_sync(img), 0);

    static uint8_t buf[2 * MiB];
    size_t readmax = ((struct nfs_image *)img->priv)->readmax;
    memset(buf, 0xAA, sizeof buf);
    assert_int_equal(read_or_zeroes_sync(img, buf, 0, MiB), 0);
    assert_memory_equal(buf, data, MiB);
    size_t half = readmax < MiB / 2 ? readmax : MiB / 2;
    for (uint64_t off = MiB; off < 3 * MiB; off += half) {
        memset(buf, 0xAA, sizeof buf);
        assert_int_equal(read_or_zeroes_sync(img, buf, off, half),
                         IMAGE_READ_ZEROES);
        for (size_t i = 0; i < half; i++)
            if (buf[i] != 0xAA)
                fail_msg("zeroes at %" PRIu64 " were copied", off);
    }
    /* zeroes, then the data byte at the very end */
    memset(buf, 0xAA, sizeof buf);
    assert_int_equal(read_or_zeroes_sync(img, buf, 3 * MiB, MiB), 0);
    for (size_t i = 0; i < MiB - 1; i++)
        if (buf[i] != 0)
            fail_msg("byte %zu of the last MiB reads %#x", i, buf[i]);
    assert_int_equal(buf[MiB - 1], 0x5a);
    /* more than one READ: filled, never "zeroes" */
    if (readmax < 2 * MiB) {
        memset(buf, 0xAA, sizeof buf);
        assert_int_equal(read_or_zeroes_sync(img, buf, MiB, 2 * MiB), 0);
        for (size_t i = 0; i < 2 * MiB; i++)
            if (buf[i] != 0)
                fail_msg("byte %zu of a split read reads %#x", i, buf[i]);
    }
    /* plain reads always fill */
    memset(buf, 0xAA, sizeof buf);
    assert_int_equal(image_read_sync(img, buf, MiB, MiB), 0);
    for (size_t i = 0; i < MiB; i++)
        if (buf[i] != 0)
            fail_msg("image_read left byte %zu as %#x", i, buf[i]);
    close_ok(img);
}

/* The TCP connection to the server is cut under the image (ss -K): libnfs
 * reconnects and re-sends, so requests issued afterwards still succeed.
 * Skipped where the kernel cannot destroy sockets (no INET_DIAG_DESTROY
 * or no CAP_NET_ADMIN). */
static void test_reconnect_after_connection_drop(void **state)
{
    (void)state;
    const size_t len = 4 * MiB + 3;
    uint8_t *data = malloc(len), *back = malloc(len);
    assert_non_null(data);
    assert_non_null(back);
    fill_random(data, len, 8);
    struct image *img = open_ok("reconnect.img",
                                target_opts(true, false, len, false));
    assert_int_equal(image_write_sync(img, data, 0, len / 2), 0);

    struct nfs_image *ni = img->priv;
    struct sockaddr_storage local;
    socklen_t sl = sizeof local;
    assert_int_equal(getsockname(nfs_get_fd(ni->nfs),
                                 (struct sockaddr *)&local, &sl), 0);
    int port = ntohs(((struct sockaddr_in *)&local)->sin_port);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "ss -K -t -n 'sport = :%d' 2>/dev/null", port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[512];
    int lines = 0;
    while (fgets(line, sizeof line, p))
        if (strstr(line, "127.0.0.1") || strstr(line, "ESTAB"))
            lines++;
    int rc = pclose(p);
    if (rc != 0 || lines == 0) {
        close_ok(img);
        free(data);
        free(back);
        skip();
    }

    assert_int_equal(image_write_sync(img, data + len / 2, len / 2,
                                      len - len / 2), 0);
    assert_int_equal(image_flush_sync(img), 0);
    assert_int_equal(image_read_sync(img, back, 0, len), 0);
    assert_memory_equal(back, data, len);
    close_ok(img);

    char local_path[512], expect[600];
    local_of(local_path, sizeof local_path, "reconnect.img");
    snprintf(expect, sizeof expect, "%s/reconnect.expect", tmpdir);
    local_pwrite(expect, data, len, 0);
    assert_int_equal(run("cmp '%s' '%s'", expect, local_path), 0);
    free(data);
    free(back);
}

/* --- errors and URLs ----------------------------------------------------- */

struct counted {
    int calls;
    int err;
};

static void counted_cb(void *opaque, int err)
{
    struct counted *c = opaque;
    c->calls++;
    c->err = err;
}

/* The file is removed on the server under an open image: a request cut
 * into several pieces fails with the server's error, completes exactly
 * once, and the image says what went wrong. */
static void test_server_error_reaches_caller(void **state)
{
    (void)state;
    const size_t len = 3 * MiB + 1;
    uint8_t *data = calloc(1, len);
    assert_non_null(data);
    struct image *img = open_ok("removed.img",
                                target_opts(true, false, len, false));
    struct nfs_context *nfs = raw_nfs();
    char path[256];
    snprintf(path, sizeof path, "/%s/removed.img", subdir);
    assert_int_equal(nfs_unlink(nfs, path), 0);
    nfs_destroy_context(nfs);

    struct counted w = { 0, 0 }, r = { 0, 0 };
    image_write(img, data, 0, len, counted_cb, &w);
    image_read(img, data, 0, len, counted_cb, &r);
    assert_int_equal(w.calls + r.calls, 0);     /* never inside the call */
    while (w.calls == 0 || r.calls == 0)
        assert_int_equal(loop_run_once(loop, 1000), 0);
    /* Let stray completions (there must be none) show up. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(loop_run_once(loop, 10), 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(r.calls, 1);
    assert_true(w.err < 0);
    assert_true(r.err < 0);
    if (!strstr(img->last_error.text, "NFS "))
        fail_msg("last_error: '%s'", img->last_error.text);
    /* libnfs commits dirty files on close: that fails too. */
    int c = image_close(img);
    assert_true(c == 0 || c == -ESTALE);
    free(data);
}

static void test_missing_file_and_export(void **state)
{
    (void)state;
    struct image_open_opts ro = { 0 };
    char url[512];
    url_of(url, sizeof url, "no-such-file.img");
    open_fails(url, ro, -ENOENT, "no such file");

    snprintf(url, sizeof url, "%s/%s/no-such-dir/x.img", nfs_url, subdir);
    open_fails(url, ro, -ENOENT, "no such file");

    const char *server_start = nfs_url + strlen("nfs://");
    const char *slash = strchr(server_start, '/');
    assert_non_null(slash);
    snprintf(url, sizeof url, "nfs://%.*s/no-such-export-%d/f.img",
             (int)(slash - server_start), server_start, (int)getpid());
    struct image *img = NULL;
    struct errmsg e = { { 0 } };
    int r = nfs_image_open(loop, url, &ro, &img, &e);
    assert_true(r < 0);
    assert_null(img);
    if (!strstr(e.text, url) || !strstr(e.text, "mount of"))
        fail_msg("missing export: %s", e.text);
}

static void test_malformed_urls(void **state)
{
    (void)state;
    struct image_open_opts ro = { 0 };
    const char *bad[] = { "nfs://", "nfs:///imgfs/file.raw", "nfs://127.0.0.1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        open_fails(bad[i], ro, -EINVAL, "invalid NFS URL");
    char url[600];
    snprintf(url, sizeof url, "%s/%s/f.img?nfsport=abc", nfs_url, subdir);
    open_fails(url, ro, -EINVAL, "nfsport must be a port number");
    snprintf(url, sizeof url, "%s/%s/f.img?mountport=70000", nfs_url, subdir);
    open_fails(url, ro, -EINVAL, "mountport must be a port number");
    snprintf(url, sizeof url, "%s/%s/f.img?version=4", nfs_url, subdir);
    open_fails(url, ro, -EINVAL, "version 3");
}

/* A port nobody listens on: bind, read the port, close. */
static int unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_unreachable_ports(void **state)
{
    (void)state;
    struct image_open_opts ro = { 0 };
    char url[512];
    int port = unused_port();
    snprintf(url, sizeof url, "%s/x.img?nfsport=%d&mountport=%d", nfs_url,
             port, port);
    open_fails(url, ro, -ECONNREFUSED, "Connection refused");

    /* A server that accepts connections but never answers: the open
     * must give up (libnfs timeout) instead of hanging. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(url, sizeof url, "%s/x.img?nfsport=%d&mountport=%d", nfs_url,
             ntohs(a.sin_port), ntohs(a.sin_port));
    open_fails(url, ro, -ETIMEDOUT, "no answer");
    close(fd);
}

static void test_url_with_ports(void **state)
{
    (void)state;
    const char *nfs_port = servers_env_get("NFS_PORT");
    const char *mount_port = servers_env_get("NFS_MOUNT_PORT");
    if (!nfs_port || !mount_port)
        skip();
    uint8_t data[200000];
    fill_random(data, sizeof data, 6);
    char url[700];
    snprintf(url, sizeof url, "%s/%s/ports.img?nfsport=%s&mountport=%s",
             nfs_url, subdir, nfs_port, mount_port);
    struct image_open_opts o = target_opts(true, false, sizeof data, false);
    struct image *img = NULL;
    struct errmsg e = { { 0 } };
    int r = nfs_image_open(loop, url, &o, &img, &e);
    if (r < 0)
        fail_msg("%s", e.text);
    assert_int_equal(image_write_sync(img, data, 0, sizeof data), 0);
    assert_int_equal(image_flush_sync(img), 0);
    close_ok(img);

    struct image_open_opts ro = { 0 };
    r = nfs_image_open(loop, url, &ro, &img, &e);
    if (r < 0)
        fail_msg("%s", e.text);
    uint8_t back[sizeof data];
    assert_int_equal(image_read_sync(img, back, 0, sizeof back), 0);
    assert_memory_equal(back, data, sizeof data);
    close_ok(img);

    char local[512], expect[600];
    local_of(local, sizeof local, "ports.img");
    snprintf(expect, sizeof expect, "%s/ports.expect", tmpdir);
    local_pwrite(expect, data, sizeof data, 0);
    assert_int_equal(run("cmp '%s' '%s'", expect, local), 0);
}

/* --- setup --------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    nfs_url = servers_env_get("NFS_URL");
    export_dir = servers_env_get("NFS_EXPORT_DIR");
    if (!nfs_url || !export_dir)
        return -1;
    loop = loop_new();
    if (!loop || !mkdtemp(tmpdir))
        return -1;
    snprintf(subdir, sizeof subdir, "itest-nfs-backend-%d", (int)getpid());
    struct nfs_context *nfs = raw_nfs();
    char path[256];
    snprintf(path, sizeof path, "/%s", subdir);
    int r = nfs_mkdir(nfs, path);
    nfs_destroy_context(nfs);
    return r;
}

/* Remove this run's directory through NFS. */
static void remove_subdir(void)
{
    struct nfs_context *nfs = raw_nfs();
    char path[512];
    snprintf(path, sizeof path, "/%s", subdir);
    struct nfsdir *dir;
    if (nfs_opendir(nfs, path, &dir) == 0) {
        struct nfsdirent *ent;
        while ((ent = nfs_readdir(nfs, dir)) != NULL) {
            if (strcmp(ent->name, ".") == 0 || strcmp(ent->name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "/%s/%s", subdir, ent->name);
            nfs_unlink(nfs, path);
        }
        nfs_closedir(nfs, dir);
        snprintf(path, sizeof path, "/%s", subdir);
        nfs_rmdir(nfs, path);
    }
    nfs_destroy_context(nfs);
}

static int teardown(void **state)
{
    (void)state;
    remove_subdir();
    if (loop)
        loop_free(loop);
    run("rm -rf '%s'", tmpdir);
    return 0;
}

int main(void)
{
    servers_env_require();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_target_needs_create),
        cmocka_unit_test(test_create_is_sparse_and_zero),
        cmocka_unit_test(test_existing_refused_without_overwrite),
        cmocka_unit_test(test_empty_existing_file_is_accepted),
        cmocka_unit_test(test_source_is_read_only),
        cmocka_unit_test(test_read_or_zeroes),
        cmocka_unit_test(test_growable_and_fixed_size),
        cmocka_unit_test(test_read_write_8m_odd_offsets),
        cmocka_unit_test(test_many_concurrent_requests),
        cmocka_unit_test(test_write_zeroes),
        cmocka_unit_test(test_read_past_shrunk_file),
        cmocka_unit_test(test_reconnect_after_connection_drop),
        cmocka_unit_test(test_server_error_reaches_caller),
        cmocka_unit_test(test_missing_file_and_export),
        cmocka_unit_test(test_malformed_urls),
        cmocka_unit_test(test_unreachable_ports),
        cmocka_unit_test(test_url_with_ports),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
