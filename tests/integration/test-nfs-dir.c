/* test-nfs-dir.c — the asynchronous NFS metadata interface
 * (backends/nfs-dir.h) and the nfs image's truncate against the real
 * ganesha started by scripts/test-servers.
 *
 * Every operation must call back exactly once and never inside the call
 * that issued it (errors included); a close fails the calls in flight
 * with -ECANCELED.  Effects are checked in the export directory with
 * tools we did not write (test, stat).  Each run works in its own
 * subdirectory of the export.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "backends/image-open.h"
#include "backends/nfs-dir.h"
#include "backends/protocols.h"
#include "itest-util.h"
#include "servers-env.h"

static struct loop *loop;
static const char *nfs_url;         /* nfs://127.0.0.1/imgfs */
static const char *export_dir;      /* local path of that export */
static char subdir[128];            /* this run's directory on the export */
static struct nfs_dir *dir;         /* opened on it */

/* ---- one call, watched ------------------------------------------------ */

struct watch {
    bool issuing;               /* inside the call that issued it */
    unsigned calls;
    bool inline_call;           /* called back while issuing */
    int err;
    struct nfs_dir_attr attr;
    char names[1024];           /* a listing: "name/mode-type;" ... */
    unsigned long bsize, blocks;
};

static void watch_cb(void *opaque, const struct nfs_dir_result *res)
{
    struct watch *w = opaque;
    w->calls++;
    if (w->issuing)
        w->inline_call = true;
    w->err = res->err;
    if (res->attr)
        w->attr = *res->attr;
    for (size_t i = 0; i < res->n; i++) {
        size_t len = strlen(w->names);
        snprintf(w->names + len, sizeof w->names - len, "%s/%c;",
                 res->entries[i].name,
                 S_ISDIR(res->entries[i].mode) ? 'd'
                 : S_ISREG(res->entries[i].mode) ? 'f' : '?');
    }
    if (res->vfs) {
        w->bsize = res->vfs->f_bsize;
        w->blocks = res->vfs->f_blocks;
    }
}

/* Run the loop until `w` was called back, then a few rounds more (a
 * second callback would show); check the completion rule. */
static int finish(struct watch *w)
{
    w->issuing = false;
    for (int i = 0; i < 2000 && !w->calls; i++)
        loop_run_once(loop, 10);
    for (int i = 0; i < 5; i++)
        loop_run_once(loop, 1);
    assert_int_equal(w->calls, 1);
    assert_false(w->inline_call);
    return w->err;
}

#define CALL(w, expr) ((w) = (struct watch){ .issuing = true }, (expr), \
                       finish(&(w)))

static int lsh(const char *fmt, const char *name)
{
    return run(fmt, export_dir, subdir, name);
}

/* ---- tests ------------------------------------------------------------ */

static void test_create_stat_truncate(void **state)
{
    (void)state;
    struct watch w;
    assert_int_equal(CALL(w, nfs_dir_create(dir, "/f", 0640, watch_cb, &w)),
                     0);
    assert_int_equal(lsh("test -f '%s/%s/%s'", "f"), 0);
    /* Exclusive: the second create fails, and later too. */
    assert_int_equal(CALL(w, nfs_dir_create(dir, "/f", 0640, watch_cb, &w)),
                     -EEXIST);
    assert_int_equal(CALL(w, nfs_dir_truncate(dir, "/f", 12345, watch_cb,
                                              &w)), 0);
    assert_int_equal(CALL(w, nfs_dir_stat(dir, "/f", watch_cb, &w)), 0);
    assert_true(S_ISREG(w.attr.mode));
    assert_int_equal(w.attr.mode & 0777, 0640);
    assert_int_equal(w.attr.size, 12345);
    assert_int_equal(lsh("test \"$(stat -c %%s '%s/%s/%s')\" = 12345", "f"),
                     0);
    /* The directory itself: "". */
    assert_int_equal(CALL(w, nfs_dir_stat(dir, "", watch_cb, &w)), 0);
    assert_true(S_ISDIR(w.attr.mode));
    assert_int_equal(CALL(w, nfs_dir_stat(dir, "/nope", watch_cb, &w)),
                     -ENOENT);
    assert_int_equal(CALL(w, nfs_dir_unlink(dir, "/f", watch_cb, &w)), 0);
}

static void test_mkdir_list_rename_unlink(void **state)
{
    (void)state;
    struct watch w;
    assert_int_equal(CALL(w, nfs_dir_mkdir(dir, "/d", 0750, watch_cb, &w)),
                     0);
    assert_int_equal(CALL(w, nfs_dir_create(dir, "/g", 0600, watch_cb, &w)),
                     0);
    assert_int_equal(CALL(w, nfs_dir_list(dir, "", watch_cb, &w)), 0);
    assert_non_null(strstr(w.names, "d/d;"));
    assert_non_null(strstr(w.names, "g/f;"));
    assert_null(strstr(w.names, "./"));
    assert_int_equal(CALL(w, nfs_dir_rename(dir, "/g", "/d/h", watch_cb,
                                            &w)), 0);
    assert_int_equal(lsh("test -f '%s/%s/%s/h'", "d"), 0);
    assert_int_equal(lsh("test ! -e '%s/%s/%s'", "g"), 0);
    assert_int_equal(CALL(w, nfs_dir_list(dir, "/d", watch_cb, &w)), 0);
    assert_string_equal(w.names, "h/f;");
    assert_int_equal(CALL(w, nfs_dir_rmdir(dir, "/d", watch_cb, &w)),
                     -ENOTEMPTY);
    assert_int_equal(CALL(w, nfs_dir_unlink(dir, "/d/h", watch_cb, &w)), 0);
    assert_int_equal(CALL(w, nfs_dir_unlink(dir, "/d/h", watch_cb, &w)),
                     -ENOENT);
    assert_int_equal(CALL(w, nfs_dir_rmdir(dir, "/d", watch_cb, &w)), 0);
    assert_int_equal(lsh("test ! -e '%s/%s/%s'", "d"), 0);
}

static void test_setattr_statvfs(void **state)
{
    (void)state;
    struct watch w;
    assert_int_equal(CALL(w, nfs_dir_create(dir, "/t", 0644, watch_cb, &w)),
                     0);
    struct timespec ts[2] = { { 1000000000, 0 }, { 1200000000, 0 } };
    assert_int_equal(CALL(w, nfs_dir_utimes(dir, "/t", ts, watch_cb, &w)),
                     0);
    assert_int_equal(lsh("test \"$(stat -c %%Y '%s/%s/%s')\" = 1200000000",
                         "t"), 0);
    assert_int_equal(CALL(w, nfs_dir_chown(dir, "/t", getuid(), getgid(),
                                           watch_cb, &w)), 0);
    assert_int_equal(CALL(w, nfs_dir_statvfs(dir, watch_cb, &w)), 0);
    assert_true(w.bsize > 0 && w.blocks > 0);
    /* Waited for on the loop thread (loop_run_once ran here). */
    struct nfs_dir_attr a;
    assert_int_equal(nfs_dir_stat_wait(dir, loop, "/t", &a), 0);
    assert_true(S_ISREG(a.mode));
    assert_int_equal(nfs_dir_stat_wait(dir, loop, "/none", &a), -ENOENT);
    assert_int_equal(CALL(w, nfs_dir_unlink(dir, "/t", watch_cb, &w)), 0);
}

/* A close fails what is in flight with -ECANCELED, once. */
static void test_close_cancels(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "%s/%s/", nfs_url, subdir);
    struct nfs_dir *d = NULL;
    struct errmsg e = { { 0 } };
    assert_int_equal(nfs_dir_open(url, true, &d, NULL, NULL, &e), 0);
    nfs_dir_attach(d, loop);
    struct watch w = { .issuing = true };
    nfs_dir_stat(d, "", watch_cb, &w);
    w.issuing = false;
    nfs_dir_close(d);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.err, -ECANCELED);
}

static void test_open_errors(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "%s/%s/missing/", nfs_url, subdir);
    struct nfs_dir *d = NULL;
    struct errmsg e = { { 0 } };
    int r = nfs_dir_open(url, true, &d, NULL, NULL, &e);
    assert_true(r < 0);
    assert_null(d);
    assert_non_null(strstr(e.text, "missing"));
    /* A file URL: the directory is opened, the name returned. */
    struct watch w;
    assert_int_equal(CALL(w, nfs_dir_create(dir, "/x.img", 0600, watch_cb,
                                            &w)), 0);
    snprintf(url, sizeof url, "%s/%s/x.img", nfs_url, subdir);
    char *file = NULL;
    struct nfs_dir_attr a;
    assert_int_equal(nfs_dir_open(url, false, &d, &file, &a, &e), 0);
    assert_string_equal(file, "/x.img");
    assert_true(S_ISREG(a.mode));
    free(file);
    nfs_dir_close(d);
    assert_int_equal(CALL(w, nfs_dir_unlink(dir, "/x.img", watch_cb, &w)),
                     0);
}

/* image_truncate of an nfs image: the file gets the size (stat), the
 * image's size follows; a non-growable image refuses. */
struct io_watch {
    bool issuing, inline_call;
    unsigned calls;
    int err;
};

static void io_cb(void *opaque, int err)
{
    struct io_watch *w = opaque;
    w->calls++;
    w->inline_call |= w->issuing;
    w->err = err;
}

static int io_finish(struct io_watch *w)
{
    w->issuing = false;
    for (int i = 0; i < 2000 && !w->calls; i++)
        loop_run_once(loop, 10);
    assert_int_equal(w->calls, 1);
    assert_false(w->inline_call);
    return w->err;
}

static void test_image_truncate(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "%s/%s/grow.img", nfs_url, subdir);
    struct image_open_opts o = { .write = true, .create = true,
                                 .create_size = 4096, .growable = true };
    struct image *img = NULL;
    struct errmsg e = { { 0 } };
    assert_int_equal(nfs_image_open(loop, url, &o, &img, &e), 0);
    struct io_watch w = { .issuing = true };
    image_truncate(img, 3 * 1048576 + 7, io_cb, &w);
    assert_int_equal(io_finish(&w), 0);
    assert_int_equal(img->size, 3 * 1048576 + 7);
    assert_int_equal(lsh("test \"$(stat -c %%s '%s/%s/%s')\" = 3145735",
                         "grow.img"), 0);
    w = (struct io_watch){ .issuing = true };
    image_truncate(img, 100, io_cb, &w);
    assert_int_equal(io_finish(&w), 0);
    assert_int_equal(lsh("test \"$(stat -c %%s '%s/%s/%s')\" = 100",
                         "grow.img"), 0);
    assert_int_equal(image_close(img), 0);
    /* Opened without growable: no truncate. */
    o = (struct image_open_opts){ .write = true, .overwrite = true };
    assert_int_equal(nfs_image_open(loop, url, &o, &img, &e), 0);
    w = (struct io_watch){ .issuing = true };
    image_truncate(img, 0, io_cb, &w);
    assert_int_equal(io_finish(&w), -ENOTSUP);
    assert_int_equal(image_close(img), 0);
    assert_int_equal(lsh("test \"$(stat -c %%s '%s/%s/%s')\" = 100",
                         "grow.img"), 0);
    struct watch dw;
    assert_int_equal(CALL(dw, nfs_dir_unlink(dir, "/grow.img", watch_cb,
                                             &dw)), 0);
}

/* ---- setup ------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    nfs_url = servers_env_get("NFS_URL");
    export_dir = servers_env_get("NFS_EXPORT_DIR");
    if (!nfs_url || !export_dir)
        return -1;
    loop = loop_new();
    if (!loop)
        return -1;
    snprintf(subdir, sizeof subdir, "itest-nfs-dir-%d", (int)getpid());
    /* The run's directory, made through the interface on the export. */
    char url[512];
    snprintf(url, sizeof url, "%s/", nfs_url);
    struct nfs_dir *top = NULL;
    struct errmsg e = { { 0 } };
    if (nfs_dir_open(url, true, &top, NULL, NULL, &e) < 0) {
        fprintf(stderr, "%s\n", e.text);
        return -1;
    }
    nfs_dir_attach(top, loop);
    char rel[160];
    snprintf(rel, sizeof rel, "/%s", subdir);
    struct watch w = { .issuing = true };
    nfs_dir_mkdir(top, rel, 0755, watch_cb, &w);
    w.issuing = false;
    while (!w.calls)
        loop_run_once(loop, 10);
    nfs_dir_close(top);
    if (w.err)
        return -1;
    snprintf(url, sizeof url, "%s/%s/", nfs_url, subdir);
    struct nfs_dir_attr a;
    if (nfs_dir_open(url, true, &dir, NULL, &a, &e) < 0 || !S_ISDIR(a.mode)) {
        fprintf(stderr, "%s\n", e.text);
        return -1;
    }
    nfs_dir_attach(dir, loop);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nfs_dir_close(dir);
    /* Through NFS: the export is ganesha's while it runs. */
    struct nfs_context *nfs = nfs_init_context();
    char url[512];
    snprintf(url, sizeof url, "%s/", nfs_url);
    struct nfs_url *u = nfs ? nfs_parse_url_dir(nfs, url) : NULL;
    if (u && nfs_mount(nfs, u->server, u->path) == 0) {
        char path[160];
        snprintf(path, sizeof path, "/%s", subdir);
        nfs_rmdir(nfs, path);
    }
    if (u)
        nfs_destroy_url(u);
    if (nfs)
        nfs_destroy_context(nfs);
    loop_free(loop);
    return 0;
}

int main(void)
{
    servers_env_require();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_stat_truncate),
        cmocka_unit_test(test_mkdir_list_rename_unlink),
        cmocka_unit_test(test_setattr_statvfs),
        cmocka_unit_test(test_close_cancels),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_image_truncate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
