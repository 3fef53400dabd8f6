/* Unit tests of copier/jobspec.c: the job file parser. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "copier/jobspec.h"

static int parse(const char *text, struct copy_spec *s, struct errmsg *e)
{
    errmsg_clear(e);
    return copy_spec_parse(text, strlen(text), s, e);
}

static void expect_error(const char *text, const char *msg)
{
    struct copy_spec s;
    struct errmsg e;
    assert_int_equal(parse(text, &s, &e), -EINVAL);
    assert_string_equal(e.text, msg);
}

static void test_full_example(void **state)
{
    (void)state;
    const char *text =
        "# deploy.job — paths are relative to the mount root\n"
        "source        = templates/debian-12.qcow2   # format detected\n"
        "target        = lun0\n"
        "source-format = qcow2\n"
        "target-format = qcow2\n"
        "order         = strict\n"
        "requests      = 32\n"
        "request-size  = 2M\n"
        "sparse        = 64K\n"
        "compress      = yes\n"
        "cluster-size  = 128K\n"
        "backing       = keep\n"
        "verify        = on\n"
        "resume        = true\n"
        "overwrite     = 1\n"
        "target-is-zero = YES\n";
    struct copy_spec s;
    struct errmsg e;
    assert_int_equal(parse(text, &s, &e), 0);
    assert_string_equal(s.source, "templates/debian-12.qcow2");
    assert_string_equal(s.target, "lun0");
    assert_int_equal(s.source_format, IMAGE_FORMAT_QCOW2);
    assert_int_equal(s.target_format, IMAGE_FORMAT_QCOW2);
    assert_int_equal(s.copy.order, COPY_ORDER_STRICT);
    assert_int_equal(s.copy.requests, 32);
    assert_int_equal(s.copy.request_size, 2 * 1024 * 1024);
    assert_int_equal(s.copy.sparse, 64 * 1024);
    assert_true(s.compress);
    assert_int_equal(s.cluster_size, 128 * 1024);
    assert_true(s.keep_backing);
    assert_true(s.copy.skip_backing);   /* backing = keep: top layer only */
    assert_true(s.copy.verify);
    assert_true(s.resume);
    assert_true(s.overwrite);
    assert_true(s.copy.target_is_zero);
    assert_int_equal(s.copy.start_offset, 0);
}

static void test_defaults(void **state)
{
    (void)state;
    struct copy_spec s;
    struct errmsg e;
    assert_int_equal(parse("source=a\ntarget=b", &s, &e), 0);
    assert_string_equal(s.source, "a");
    assert_string_equal(s.target, "b");
    assert_int_equal(s.source_format, IMAGE_FORMAT_AUTO);
    assert_int_equal(s.target_format, IMAGE_FORMAT_RAW);
    assert_int_equal(s.copy.order, COPY_ORDER_PIPELINED);
    assert_int_equal(s.copy.requests, COPY_DEFAULT_REQUESTS);
    assert_int_equal(s.copy.request_size, COPY_DEFAULT_REQUEST_SIZE);
    assert_int_equal(s.copy.sparse, COPY_DEFAULT_SPARSE);
    assert_false(s.compress || s.keep_backing || s.resume || s.overwrite ||
                 s.copy.verify || s.copy.target_is_zero ||
                 s.copy.skip_backing);
    assert_int_equal(s.cluster_size, 0);
    assert_int_equal(parse("source=a\ntarget=b\nbacking=flatten", &s, &e), 0);
    assert_false(s.keep_backing || s.copy.skip_backing);
}

static void test_whitespace_comments_crlf(void **state)
{
    (void)state;
    const char *text =
        "   # leading comment\r\n"
        "\r\n"
        "\t source\t=\t my image.raw \t# trailing\r\n"
        "target=lun1#no space before comment\r\n"
        "   sparse =0\r\n"
        "#last line without newline";
    struct copy_spec s;
    struct errmsg e;
    assert_int_equal(parse(text, &s, &e), 0);
    assert_string_equal(s.source, "my image.raw");
    assert_string_equal(s.target, "lun1");
    assert_int_equal(s.copy.sparse, 0);
}

static void test_error_messages(void **state)
{
    (void)state;
    expect_error("source = a\ntarget = b\n\nordr = any\n",
                 "line 4: unknown key 'ordr'");
    expect_error("source = a\ntarget = b\n#\n#\n\nrequest-size = 3X\n",
                 "line 6: request-size: '3X' is not a size");
    expect_error("source = a\nsource = b\ntarget = c\n",
                 "line 2: 'source' given twice");
    expect_error("source = a\n", "missing 'target'");
    expect_error("target = a\n", "missing 'source'");
    expect_error("", "missing 'source'");
    expect_error("source = a\ntarget = b\norder = fast\n",
                 "line 3: order: 'fast' is not strict, pipelined or any");
    expect_error("source = a\ntarget = b\nverify = maybe\n",
                 "line 3: verify: 'maybe' is not yes or no");
    expect_error("source = a\ntarget = b\nrequests = 0\n",
                 "line 3: requests: '0' is not a number of requests "
                 "(1..1024)");
    expect_error("source = a\ntarget = b\nrequests = 2000\n",
                 "line 3: requests: '2000' is not a number of requests "
                 "(1..1024)");
    expect_error("source = a\ntarget = b\nrequests = 4k\n",
                 "line 3: requests: '4k' is not a number of requests "
                 "(1..1024)");
    expect_error("source = a\ntarget = b\nrequest-size = 128M\n",
                 "line 3: request-size: '128M' is not a size between 1 "
                 "and 64M");
    expect_error("source = a\ntarget = b\ncluster-size = 48K\n",
                 "line 3: cluster-size: '48K' is not a power of two between "
                 "512 and 2M");
    expect_error("source = a\ntarget = b\ntarget-format = auto\n",
                 "line 3: target-format: 'auto' is not raw or qcow2");
    expect_error("source = a\ntarget = b\nbacking = drop\n",
                 "line 3: backing: 'drop' is not flatten or keep");
    expect_error("source = a\ntarget =   # nothing\n",
                 "line 2: 'target' has no value");
    expect_error("source = a\njust words\n",
                 "line 2: expected 'key = value', got 'just words'");
    expect_error(" = x\n", "line 1: missing key before '='");
    expect_error("Source = a\ntarget = b\n", "line 1: unknown key 'Source'");
}

/* source/target are paths inside the mount: a ".." component would walk
 * out of the directory the mount was given, a control character would
 * reach status files and logs (and is echoed escaped, never raw). */
static void test_path_components_and_control_chars(void **state)
{
    (void)state;
    expect_error("source = ../x\ntarget = b\n",
                 "line 1: source: '../x' is not a path without '..' "
                 "components");
    expect_error("source = a\ntarget = dir/..\n",
                 "line 2: target: 'dir/..' is not a path without '..' "
                 "components");
    expect_error("source = a\ntarget = dir/../../etc/x\n",
                 "line 2: target: 'dir/../../etc/x' is not a path without "
                 "'..' components");
    expect_error("source = ..\ntarget = b\n",
                 "line 1: source: '..' is not a path without '..' "
                 "components");
    expect_error("source = a\ntarget = dir//..//x\n",
                 "line 2: target: 'dir//..//x' is not a path without '..' "
                 "components");
    expect_error("source = a\tb\ntarget = c\n",
                 "line 1: source: 'a\\x09b' is not a path without control "
                 "characters");
    expect_error("source = a\ntarget = dir/x\x1b[2Jy\n",
                 "line 2: target: 'dir/x\\x1b[2Jy' is not a path without "
                 "control characters");
    expect_error("source = a\ntarget = b\rc\n",
                 "line 2: target: 'b\\x0dc' is not a path without control "
                 "characters");
    expect_error("source = a\x7f\ntarget = b\n",
                 "line 1: source: 'a\\x7f' is not a path without control "
                 "characters");
    expect_error("source = \x01\ntarget = b\n",
                 "line 1: source: '\\x01' is not a path without control "
                 "characters");
    expect_error("sour\x1b" "ce = a\ntarget = b\n",
                 "line 1: unknown key 'sour\\x1bce'");

    /* ".." inside a name is not a component; blanks around still trim */
    struct copy_spec s;
    struct errmsg e;
    assert_int_equal(parse("source = x..y/..a/b..\ntarget = dir/.../c\t\r\n",
                           &s, &e), 0);
    assert_string_equal(s.source, "x..y/..a/b..");
    assert_string_equal(s.target, "dir/.../c");
}

static void test_nul_and_long_lines(void **state)
{
    (void)state;
    struct copy_spec s;
    struct errmsg e;
    const char text[] = "source = a\ntarget = b\nverify = n\0o\n";
    assert_int_equal(copy_spec_parse(text, sizeof text - 1, &s, &e), -EINVAL);
    assert_string_equal(e.text,
                        "line 3: NUL byte in job text (not a text file?)");

    size_t n = 5000;
    char *big = malloc(n + 64);
    strcpy(big, "target = b\nsource = ");
    size_t at = strlen(big);
    memset(big + at, 'x', n);
    big[at + n] = '\n';
    big[at + n + 1] = '\0';
    assert_int_equal(parse(big, &s, &e), -EINVAL);
    assert_non_null(strstr(e.text, "line 2: line too long"));
    /* a path that fits a line but not the spec */
    memset(big + at, 'y', 1500);
    big[at + 1500] = '\0';
    assert_int_equal(parse(big, &s, &e), -EINVAL);
    assert_non_null(strstr(e.text, "line 2: source:"));
    assert_non_null(strstr(e.text, "fewer than 1024 bytes"));
    free(big);
}

static void test_parse_bool(void **state)
{
    (void)state;
    const char *yes[] = { "yes", "YES", "true", "On", "1" };
    const char *no[] = { "no", "False", "off", "0" };
    const char *bad[] = { "", "y", "2", "yes please", "nope" };
    bool v;
    for (size_t i = 0; i < 5; i++) {
        v = false;
        assert_int_equal(copy_spec_parse_bool(yes[i], &v), 0);
        assert_true(v);
    }
    for (size_t i = 0; i < 4; i++) {
        v = true;
        assert_int_equal(copy_spec_parse_bool(no[i], &v), 0);
        assert_false(v);
    }
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(copy_spec_parse_bool(bad[i], &v), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_whitespace_comments_crlf),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_path_components_and_control_chars),
        cmocka_unit_test(test_nul_and_long_lines),
        cmocka_unit_test(test_parse_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
