/* Unit tests of backends/image-open.c (format rule, name resolution), of
 * the backing-file confinement (backends/backing-policy.c) and of the
 * null:/zero: protocols. */
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

#include "backends/backing-policy.h"
#include "backends/image-open.h"
#include "qcow2-build.h"

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(image_parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(image_parse_size("4K", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(image_parse_size("1M", &v), 0);
    assert_int_equal(v, 1 << 20);
    assert_int_equal(image_parse_size("2GiB", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(image_parse_size("64g", &v), 0);
    assert_int_equal(v, 64ull << 30);
    assert_int_equal(image_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(image_parse_size("", &v), -EINVAL);
    assert_int_equal(image_parse_size("3X", &v), -EINVAL);
    assert_int_equal(image_parse_size("-1", &v), -EINVAL);
    assert_int_equal(image_parse_size("99999999999T", &v), -EINVAL);
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


/* ---- the format rule ---- */

static void test_name_kind(void **state)
{
    (void)state;
    assert_int_equal(image_name_kind("iscsi://h/iqn.x:y/1"), IMAGE_NAME_RAW);
    assert_int_equal(image_name_kind("iscsi://h/iqn/disk.qcow2"),
                     IMAGE_NAME_RAW);
    assert_int_equal(image_name_kind("null:"), IMAGE_NAME_RAW);
    assert_int_equal(image_name_kind("zero:1G"), IMAGE_NAME_RAW);
    assert_int_equal(image_name_kind("nfs://h/e/t.qcow2"), IMAGE_NAME_QCOW2);
    assert_int_equal(image_name_kind("nfs://h/e/t.QCow2?nfsport=2049"),
                     IMAGE_NAME_QCOW2);
    assert_int_equal(image_name_kind("nfs://h/e/t.raw?mountport=1"),
                     IMAGE_NAME_RAW);
    assert_int_equal(image_name_kind("nfs://h/e/t.img?x=.qcow2"),
                     IMAGE_NAME_PROBE);
    assert_int_equal(image_name_kind("/v/a.RAW"), IMAGE_NAME_RAW);
    assert_int_equal(image_name_kind("/v/a.qcow2"), IMAGE_NAME_QCOW2);
    assert_int_equal(image_name_kind("a.qcow2.img"), IMAGE_NAME_PROBE);
    assert_int_equal(image_name_kind("/dev/sdb"), IMAGE_NAME_PROBE);
    assert_int_equal(image_name_kind("qcow2"), IMAGE_NAME_PROBE);
    assert_int_equal(image_name_kind(".raw"), IMAGE_NAME_RAW);
}

/* ---- normalization and resolution ---- */

static void check_norm(const char *in, const char *want, bool want_escapes)
{
    bool escapes = !want_escapes;
    char *s = backing_normalize_path(in, &escapes);
    assert_non_null(s);
    if (strcmp(s, want) != 0 || escapes != want_escapes)
        fail_msg("normalize '%s': got '%s' escapes=%d, want '%s' %d", in, s,
                 escapes, want, want_escapes);
    free(s);
}

static void test_normalize(void **state)
{
    (void)state;
    check_norm("/a/b/c", "/a/b/c", false);
    check_norm("//a///b/./c/", "/a/b/c", false);
    check_norm("/a/b/../c", "/a/c", false);
    check_norm("/a/../../etc/passwd", "/etc/passwd", true);
    check_norm("/..", "/", true);
    check_norm("/", "/", false);
    check_norm("", "", false);
    check_norm("a/./b/..", "a", false);
    check_norm("a/../../b", "../b", false);
    check_norm("../../x", "../../x", false);
    check_norm("../a/../x", "../x", false);
    check_norm("x../y", "x../y", false);
    check_norm("a/..b", "a/..b", false);
}

static void test_scheme_inside_allowed(void **state)
{
    (void)state;
    assert_true(backing_has_scheme("iscsi://h/iqn/1"));
    assert_true(backing_has_scheme("nfs://h/e/x"));
    assert_true(backing_has_scheme("file:/etc/passwd"));
    assert_true(backing_has_scheme("null:"));
    assert_true(backing_has_scheme("zero:1G"));
    assert_true(backing_has_scheme("json:{}"));
    assert_true(backing_has_scheme("dir/x://y"));
    assert_false(backing_has_scheme("base.qcow2"));
    assert_false(backing_has_scheme("/a:b/c"));
    assert_false(backing_has_scheme("dir/a:b"));
    assert_false(backing_has_scheme("../x"));

    assert_true(backing_path_inside("/imgfs/x", "/imgfs"));
    assert_true(backing_path_inside("/imgfs", "/imgfs"));
    assert_false(backing_path_inside("/imgfsX/x", "/imgfs"));
    assert_false(backing_path_inside("/etc", "/imgfs"));
    assert_true(backing_path_inside("/etc", "/"));
    assert_true(backing_path_inside("x/y", ""));
    assert_false(backing_path_inside("/x", ""));

    const char *allow[] = { "/etc/", "nfs://o/e/", NULL };
    assert_true(backing_allowed("/etc/passwd", allow));
    assert_true(backing_allowed("nfs://o/e/f", allow));
    assert_false(backing_allowed("/etcx", allow));
    assert_false(backing_allowed("/etc/passwd", NULL));
    const char *empty[] = { "", NULL };
    assert_false(backing_allowed("/etc/passwd", empty));
}

static void check_bres(const char *image, const char *stored,
                       const char *want, bool want_escapes)
{
    bool escapes = !want_escapes;
    char *s = backing_resolve(image, stored, &escapes);
    assert_non_null(s);
    if (strcmp(s, want) != 0 || escapes != want_escapes)
        fail_msg("resolve '%s' in '%s': got '%s' escapes=%d, want '%s' %d",
                 stored, image, s, escapes, want, want_escapes);
    free(s);
}

static void test_backing_resolve(void **state)
{
    (void)state;
    const char *top = "nfs://h/imgfs/dir/top.qcow2?nfsport=2049&mountport=20048";
    check_bres(top, "base.raw",
               "nfs://h/imgfs/dir/base.raw?nfsport=2049&mountport=20048", false);
    check_bres(top, "../b/./base.raw",
               "nfs://h/imgfs/b/base.raw?nfsport=2049&mountport=20048", false);
    check_bres(top, "../../etc/passwd",
               "nfs://h/etc/passwd?nfsport=2049&mountport=20048", false);
    check_bres(top, "../../../../etc/passwd",
               "nfs://h/etc/passwd?nfsport=2049&mountport=20048", true);
    check_bres(top, "/etc//passwd",
               "nfs://h/etc/passwd?nfsport=2049&mountport=20048", false);
    check_bres(top, "nfs://o/e/../x", "nfs://o/x", false);
    check_bres(top, "iscsi://h/iqn/1", "iscsi://h/iqn/1", false);
    check_bres(top, "file:/etc/passwd", "file:/etc/passwd", false);
    check_bres("nfs://h/e/t.qcow2", "x.raw", "nfs://h/e/x.raw", false);
    check_bres("iscsi://h/iqn/1", "base", "iscsi://h/iqn/base", false);
    check_bres("/v/img/top.qcow2", "../b/base.raw", "/v/b/base.raw", false);
    check_bres("/v/img/top.qcow2", "/etc/passwd", "/etc/passwd", false);
    check_bres("/top.qcow2", "../../x", "/x", true);
    check_bres("top.qcow2", "base.raw", "base.raw", false);
    check_bres("top.qcow2", "../base.raw", "../base.raw", false);
    check_bres("d/top.qcow2", "../base.raw", "base.raw", false);
}

/* ---- confinement ---- */

static void expect_ok(const char *image, const char *stored, const char *root,
                      const char *const *allow)
{
    bool escapes;
    char *name = backing_resolve(image, stored, &escapes);
    assert_non_null(name);
    struct errmsg err;
    errmsg_clear(&err);
    int r = backing_check(image, stored, name, escapes, root, allow, &err);
    if (r != 0)
        fail_msg("'%s' in %s refused: %s", stored, image, err.text);
    free(name);
}

static void expect_refused(const char *image, const char *stored,
                           const char *root, const char *const *allow,
                           const char *why)
{
    bool escapes;
    char *name = backing_resolve(image, stored, &escapes);
    assert_non_null(name);
    struct errmsg err;
    errmsg_clear(&err);
    int r = backing_check(image, stored, name, escapes, root, allow, &err);
    if (r != -EPERM)
        fail_msg("'%s' in %s: want -EPERM (%s), got %d", stored, image, why,
                 r);
    char want[600];
    snprintf(want, sizeof want, "%s: backing file '%s' ", image, stored);
    if (strncmp(err.text, want, strlen(want)) != 0 || !strstr(err.text, why) ||
        !strstr(err.text, "--allow-backing PREFIX"))
        fail_msg("'%s' in %s: message '%s' (want '%s...%s')", stored, image,
                 err.text, want, why);
    free(name);
}

static void test_check_nfs(void **state)
{
    (void)state;
    const char *t = "nfs://h/imgfs/d/top.qcow2?nfsport=2049";
    const char *root = "/imgfs";
    expect_ok(t, "base.raw", root, NULL);
    expect_ok(t, "../base.raw", root, NULL);
    expect_ok(t, "/imgfs/x/base.qcow2", root, NULL);
    expect_ok(t, "nfs://h/imgfs/x.raw?nfsport=2049", root, NULL);
    expect_refused(t, "../../etc/passwd", root, NULL, "leaves the export /imgfs");
    expect_refused(t, "../../../../../etc/passwd", root, NULL,
                   "leaves the export /imgfs");
    expect_refused(t, "/etc/passwd", root, NULL, "leaves the export /imgfs");
    expect_refused(t, "/imgfsX/x", root, NULL, "leaves the export /imgfs");
    expect_refused(t, "iscsi://127.0.0.1/iqn.x:y/1", root, NULL,
                   "another protocol (iscsi:)");
    expect_refused(t, "file:/etc/passwd", root, NULL, "another protocol (file:)");
    expect_refused(t, "null:", root, NULL, "another protocol (null:)");
    expect_refused(t, "zero:1G", root, NULL, "another protocol (zero:)");
    expect_refused(t, "nfs://other-host/x", root, NULL,
                   "another NFS server (other-host)");
    expect_refused(t, "nfs://h/imgfs/x.raw", root, NULL, "other options");
    expect_refused(t, "x.raw?mountport=1", root, NULL, "other options");
    expect_refused(t, "nfs://h/other/x.raw?nfsport=2049", root, NULL,
                   "leaves the export /imgfs");
    const char *allow[] = { "nfs://h/etc/", "iscsi://127.0.0.1/", NULL };
    expect_ok(t, "/etc/passwd", root, allow);
    expect_ok(t, "iscsi://127.0.0.1/iqn.x:y/1", root, allow);
    expect_refused(t, "/etcx/passwd", root, allow, "leaves the export");
}

static void test_check_lun(void **state)
{
    (void)state;
    const char *lun = "iscsi://127.0.0.1/iqn.x:y/1";
    expect_refused(lun, "base.raw", "", NULL, "on a LUN");
    expect_refused(lun, "/etc/passwd", "", NULL, "on a LUN");
    expect_refused(lun, "iscsi://127.0.0.1/iqn.x:z/1", "", NULL, "on a LUN");
    const char *allow[] = { "iscsi://127.0.0.1/iqn.x:z/", NULL };
    expect_ok(lun, "iscsi://127.0.0.1/iqn.x:z/1", "", allow);
    expect_refused("zero:1M", "base.raw", "", NULL, "may not name");
}

static char tmpdir[256];

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static void test_check_local(void **state)
{
    (void)state;
    char top[512], link[512], root[512];
    tmp_path(top, sizeof top, "top.qcow2");
    tmp_path(link, sizeof link, "etc-link");
    snprintf(root, sizeof root, "%s", tmpdir);
    unlink(link);
    assert_int_equal(symlink("/etc", link), 0);
    expect_ok(top, "base.raw", root, NULL);
    expect_ok(top, "sub/../base.raw", root, NULL);
    expect_ok(top, "no-such-file.raw", root, NULL);
    expect_refused(top, "/etc/passwd", root, NULL, "leaves");
    expect_refused(top, "../../etc/passwd", root, NULL, "leaves");
    expect_refused(top, "../x.raw", root, NULL, "leaves");
    expect_refused(top, "etc-link/passwd", root, NULL, "symbolic link");
    expect_refused(top, "nfs://h/e/x", root, NULL, "names a URL (nfs:)");
    expect_refused(top, "file:base.raw", root, NULL, "names a URL (file:)");
    const char *allow[] = { "/etc/", NULL };
    expect_ok(top, "/etc/passwd", root, allow);
    expect_ok(top, "../../../../../../etc/passwd", root, allow);
    char sub[512];
    tmp_path(sub, sizeof sub, "sub/mid.qcow2");   /* a deeper level */
    expect_ok(sub, "../base.raw", root, NULL);
    expect_refused(sub, "../../base.raw", root, NULL, "leaves");
    unlink(link);
}

/* ---- image_open: format rule and confinement on real files ---- */

static uint8_t qimg[TB_LEN];

static void put_file(const char *name, const void *data, size_t len)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* image_open of tmpdir/name; returns the status, closes on success after
 * checking that a raw open shows the file's own first bytes. */
static int try_open(const char *name, enum image_format fmt,
                    const char *const *allow, const char *raw_head,
                    struct errmsg *err)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    struct loop *loop = loop_new();
    struct image_open_opts o = { .format = fmt, .allow_backing = allow };
    struct image *img;
    errmsg_clear(err);
    int r = image_open(loop, path, &o, &img, err);
    if (r == 0) {
        if (raw_head) {
            char head[4];
            assert_int_equal(image_read_sync(img, head, 0, 4), 0);
            assert_memory_equal(head, raw_head, 4);
        }
        image_close(img);
    }
    loop_free(loop);
    return r;
}

static void expect_text(const struct errmsg *err, const char *want)
{
    if (!strstr(err->text, want))
        fail_msg("message '%s' lacks '%s'", err->text, want);
}

static void test_open_format_rule(void **state)
{
    (void)state;
    struct errmsg err;
    char path[512];
    /* A guest-written header naming /etc/passwd as its backing file. */
    tb_make(qimg, sizeof qimg);
    tb_backing(qimg, "/etc/passwd");
    put_file("guest.raw", qimg, sizeof qimg);
    put_file("guest.img", qimg, sizeof qimg);
    put_file("guest.QCOW2", qimg, sizeof qimg);
    /* *.raw: raw, the header's bytes are data */
    assert_int_equal(try_open("guest.raw", IMAGE_FORMAT_AUTO, NULL,
                              "QFI\xfb", &err), 0);
    /* another name: refused */
    assert_int_equal(try_open("guest.img", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -EINVAL);
    tmp_path(path, sizeof path, "guest.img");
    expect_text(&err, path);
    expect_text(&err, "has a qcow2 header but is not named *.qcow2: state "
                "the format (--source-format qcow2 or raw; job key "
                "source-format)");
    /* stated raw: raw */
    assert_int_equal(try_open("guest.img", IMAGE_FORMAT_RAW, NULL, "QFI\xfb",
                              &err), 0);
    /* stated qcow2 (option or name): qcow2, its backing name confined */
    assert_int_equal(try_open("guest.img", IMAGE_FORMAT_QCOW2, NULL, NULL,
                              &err), -EPERM);
    expect_text(&err, "backing file '/etc/passwd' leaves");
    assert_int_equal(try_open("guest.QCOW2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -EPERM);
    expect_text(&err, "backing file '/etc/passwd' leaves");
    const char *allow[] = { "/etc/", NULL };
    assert_int_equal(try_open("guest.QCOW2", IMAGE_FORMAT_AUTO, allow, NULL,
                              &err), 0);
    /* *.qcow2 without the magic */
    memset(qimg, 0, sizeof qimg);
    put_file("plain.qcow2", qimg, sizeof qimg);
    assert_int_equal(try_open("plain.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -EINVAL);
    expect_text(&err, "plain.qcow2: named *.qcow2 but has no qcow2 header; "
                "state the format (--source-format raw, job key "
                "source-format = raw)");
    assert_int_equal(try_open("plain.qcow2", IMAGE_FORMAT_RAW, NULL,
                              "\0\0\0\0", &err), 0);
    /* no magic under another name: raw */
    put_file("plain.img", qimg, sizeof qimg);
    assert_int_equal(try_open("plain.img", IMAGE_FORMAT_AUTO, NULL,
                              "\0\0\0\0", &err), 0);
}

static void put_qcow2(const char *name, const char *backing, const char *fmt)
{
    tb_make(qimg, sizeof qimg);
    if (backing) {
        tb_backing(qimg, backing);
        if (fmt)
            tb_ext(qimg, 112, 0xe2792acau, fmt, (uint32_t)strlen(fmt));
    }
    put_file(name, qimg, sizeof qimg);
}

static void test_open_chain_confined(void **state)
{
    (void)state;
    struct errmsg err;
    char dir[512];
    tmp_path(dir, sizeof dir, "c");
    mkdir(dir, 0755);
    tmp_path(dir, sizeof dir, "c/sub");
    mkdir(dir, 0755);
    memset(qimg, 0x5a, 4096);
    put_file("c/base.raw", qimg, 4096);
    put_qcow2("c/sub/mid.qcow2", "../base.raw", "raw");
    put_qcow2("c/top.qcow2", "sub/mid.qcow2", "qcow2");
    assert_int_equal(try_open("c/top.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), 0);
    /* the mid image seen as the top: its "../base.raw" leaves sub/ */
    assert_int_equal(try_open("c/sub/mid.qcow2", IMAGE_FORMAT_AUTO, NULL,
                              NULL, &err), -EPERM);
    expect_text(&err, "backing file '../base.raw' leaves");
    /* the third link leaves: named with the image that stores it */
    put_qcow2("c/sub/mid2.qcow2", "../../outside.raw", "raw");
    put_qcow2("c/sub/top2.qcow2", "mid2x.qcow2", "qcow2");
    put_qcow2("c/sub/mid2x.qcow2", "mid2.qcow2", "qcow2");
    put_qcow2("c/top2.qcow2", "sub/top2.qcow2", "qcow2");
    assert_int_equal(try_open("c/top2.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -EPERM);
    expect_text(&err, "sub/mid2.qcow2: backing file '../../outside.raw' "
                "leaves");
    /* a backing file with a qcow2 header but no stated format/name */
    put_qcow2("c/hdr.img", NULL, NULL);
    put_qcow2("c/top3.qcow2", "hdr.img", NULL);
    assert_int_equal(try_open("c/top3.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -EINVAL);
    expect_text(&err, "has a qcow2 header but is not named *.qcow2");
    /* loops: by name, and through a symbolic link (by identity) */
    put_qcow2("c/a.qcow2", "b.qcow2", "qcow2");
    put_qcow2("c/b.qcow2", "a.qcow2", "qcow2");
    assert_int_equal(try_open("c/a.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -ELOOP);
    expect_text(&err, "backing chain loop");
    char alias[512];
    tmp_path(alias, sizeof alias, "c/alias.qcow2");
    unlink(alias);
    assert_int_equal(symlink("l.qcow2", alias), 0);
    put_qcow2("c/l.qcow2", "alias.qcow2", "qcow2");
    assert_int_equal(try_open("c/l.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -ELOOP);
    expect_text(&err, "backing chain loop");
    put_qcow2("c/r.qcow2", "alias-r.raw", "raw");
    tmp_path(alias, sizeof alias, "c/alias-r.raw");
    unlink(alias);
    assert_int_equal(symlink("r.qcow2", alias), 0);
    assert_int_equal(try_open("c/r.qcow2", IMAGE_FORMAT_AUTO, NULL, NULL,
                              &err), -ELOOP);
    expect_text(&err, "already in the chain");
}

static int setup_tmp(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-image-open.XXXXXX",
             t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
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
        cmocka_unit_test(test_name_kind),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_scheme_inside_allowed),
        cmocka_unit_test(test_backing_resolve),
        cmocka_unit_test(test_check_nfs),
        cmocka_unit_test(test_check_lun),
        cmocka_unit_test(test_check_local),
        cmocka_unit_test(test_open_format_rule),
        cmocka_unit_test(test_open_chain_confined),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
