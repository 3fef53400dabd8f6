/* Unit tests of cli/mount-args.c: `imgfs mount` argument and -o parsing
 * through fuse_opt_parse — what imgfs keeps, what goes on to FUSE, and
 * the one-line refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "cli/mount-args.h"

/* Parse a NULL-terminated list of arguments after "mount". */
static int parse(struct mount_args *a, struct errmsg *err, ...)
{
    static char *argv[64];
    int argc = 0;
    argv[argc++] = "mount";
    va_list ap;
    va_start(ap, err);
    char *s;
    while ((s = va_arg(ap, char *)) != NULL)
        argv[argc++] = s;
    va_end(ap);
    argv[argc] = NULL;
    err->text[0] = '\0';
    return mount_args_parse(argc, argv, a, err);
}

/* The options left for FUSE, joined by spaces (argv[0] left out). */
static const char *fuse_left(const struct mount_args *a)
{
    static char buf[512];
    buf[0] = '\0';
    for (int i = 1; i < a->fuse.argc; i++) {
        strcat(buf, i > 1 ? " " : "");
        strcat(buf, a->fuse.argv[i]);
    }
    return buf;
}

#define PARSE_FAILS(want, ...) do { \
        struct mount_args a_; struct errmsg e_; \
        assert_int_equal(parse(&a_, &e_, __VA_ARGS__, NULL), -1); \
        if (!strstr(e_.text, want)) \
            fail_msg("message '%s' lacks '%s'", e_.text, want); \
        assert_null(strchr(e_.text, '\n')); \
        mount_args_free(&a_); \
    } while (0)

static void test_defaults(void **state)
{
    (void)state;
    struct mount_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "/mnt", "x=zero:1M", NULL), 0);
    assert_string_equal(a.mountpoint, "/mnt");
    assert_int_equal(a.nspecs, 1);
    assert_string_equal(a.specs[0], "x=zero:1M");
    assert_false(a.foreground || a.debug || a.help);
    assert_int_equal(a.fs.uid, getuid());
    assert_int_equal(a.fs.gid, getgid());
    assert_int_equal(a.fs.umask, 077);
    assert_false(a.fs.read_only || a.fs.page_cache || a.fs.no_state ||
                 a.fs.resume_jobs);
    assert_null(a.fs.state);
    assert_string_equal(fuse_left(&a), "");
    mount_args_free(&a);
}

static void test_options_anywhere(void **state)
{
    (void)state;
    struct mount_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "-o", "uid=5,umask=022", "/mnt",
                           "a=null:", "-f", "-oro,state=/s,fsname=x",
                           "b=zero:1M", "-o", "nostate,resume_jobs",
                           "--", "-c=null:", NULL), 0);
    assert_string_equal(a.mountpoint, "/mnt");
    assert_int_equal(a.nspecs, 3);
    assert_string_equal(a.specs[2], "-c=null:");
    assert_true(a.foreground);
    assert_false(a.debug);
    assert_int_equal(a.fs.uid, 5);
    assert_int_equal(a.fs.umask, 022);
    assert_true(a.fs.read_only && a.fs.no_state && a.fs.resume_jobs);
    assert_string_equal(a.fs.state, "/s");
    /* ro goes on to FUSE too; imgfs's own options do not. */
    assert_string_equal(fuse_left(&a), "-o ro,fsname=x");
    mount_args_free(&a);
}

static void test_allow_other_brings_default_permissions(void **state)
{
    (void)state;
    struct mount_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "-d", "-o", "allow_other", "/mnt",
                           "x=null:", NULL), 0);
    assert_true(a.debug && a.foreground);
    assert_string_equal(fuse_left(&a),
                        "-o allow_other -odefault_permissions -d");
    mount_args_free(&a);
    assert_int_equal(parse(&a, &err, "-o", "allow_root,default_permissions",
                           "/mnt", "x=null:", NULL), 0);
    assert_string_equal(fuse_left(&a), "-o allow_root,default_permissions");
    mount_args_free(&a);
}

static void test_help(void **state)
{
    (void)state;
    struct mount_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "--help", NULL), 0);
    assert_true(a.help);
    mount_args_free(&a);
    assert_int_equal(parse(&a, &err, "/mnt", "-h", "-x", NULL), 0);
    assert_true(a.help);
    mount_args_free(&a);
}

static void test_refusals(void **state)
{
    (void)state;
    PARSE_FAILS("expected MOUNTPOINT and NAME=URL", "/mnt");
    PARSE_FAILS("expected MOUNTPOINT and NAME=URL", "-f");
    PARSE_FAILS("unknown option '-x'", "-x", "/mnt", "a=null:");
    PARSE_FAILS("unknown option '--fast'", "/mnt", "a=null:", "--fast");
    PARSE_FAILS("'a': expected NAME=URL", "/mnt", "a");
    PARSE_FAILS("'=null:': expected NAME=URL", "/mnt", "=null:");
    PARSE_FAILS("bad option 'uid=abc': expected a number from 0 to "
                "4294967294", "-o", "uid=abc", "/mnt", "a=null:");
    PARSE_FAILS("bad option 'uid=4294967295'", "-ouid=4294967295", "/mnt",
                "a=null:");
    PARSE_FAILS("bad option 'gid=-1'", "-o", "gid=-1", "/mnt", "a=null:");
    PARSE_FAILS("bad option 'umask=0778': expected an octal mask from 0 "
                "to 777", "-o", "umask=0778", "/mnt", "a=null:");
    PARSE_FAILS("bad option 'state=rel': expected an absolute directory "
                "path", "-o", "state=rel", "/mnt", "a=null:");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_options_anywhere),
        cmocka_unit_test(test_allow_other_brings_default_permissions),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
