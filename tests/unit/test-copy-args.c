/* Unit tests of cli/copy-args.c (imgfs copy option parsing) and the
 * formatting side of cli/progress.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/copy-args.h"
#include "cli/progress.h"

/* Parse a NULL-terminated list of arguments after "copy". */
static int parse(struct copy_args *a, struct errmsg *err, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "copy";
    va_list ap;
    va_start(ap, err);
    char *s;
    while ((s = va_arg(ap, char *)) != NULL)
        argv[argc++] = s;
    va_end(ap);
    memset(a, 0x5a, sizeof *a);
    err->text[0] = '\0';
    return copy_args_parse(argc, argv, a, err);
}

/* Expect failure with a message containing `want`. */
#define PARSE_FAILS(want, ...) do { \
        struct copy_args a_; struct errmsg e_; \
        assert_int_equal(parse(&a_, &e_, __VA_ARGS__, NULL), -EINVAL); \
        if (!strstr(e_.text, want)) \
            fail_msg("message '%s' lacks '%s'", e_.text, want); \
        assert_null(strchr(e_.text, '\n')); \
    } while (0)

static void test_defaults(void **state)
{
    (void)state;
    struct copy_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "src.raw", "nfs://h/e/t.raw", NULL), 0);
    assert_string_equal(a.spec.source, "src.raw");
    assert_string_equal(a.spec.target, "nfs://h/e/t.raw");
    struct copy_options d;
    copy_options_init(&d);
    assert_int_equal(a.spec.copy.requests, d.requests);
    assert_int_equal(a.spec.copy.request_size, d.request_size);
    assert_int_equal(a.spec.copy.order, COPY_ORDER_PIPELINED);
    assert_int_equal(a.spec.copy.sparse, d.sparse);
    assert_false(a.spec.copy.target_is_zero);
    assert_false(a.spec.copy.verify);
    assert_int_equal(a.spec.copy.start_offset, 0);
    assert_false(a.create);
    assert_false(a.spec.overwrite);
    assert_int_equal(a.spec.source_format, IMAGE_FORMAT_AUTO);
    assert_int_equal(a.spec.target_format, IMAGE_FORMAT_RAW);
    assert_int_equal(a.spec.cluster_size, 0);
    assert_false(a.spec.compress);
    assert_false(a.spec.keep_backing);
    assert_false(a.progress);
    assert_false(a.quiet);
    assert_false(a.help);
}

static void test_every_option(void **state)
{
    (void)state;
    struct copy_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "--requests", "64", "--request-size=4M",
                           "--order", "strict", "--sparse=0",
                           "--target-is-zero", "--verify", "--create",
                           "--overwrite", "--source-format", "qcow2",
                           "--target-format=qcow2", "--cluster-size", "1M",
                           "--compress", "-p",
                           "in.qcow2", "out.qcow2", NULL), 0);
    assert_int_equal(a.spec.copy.requests, 64);
    assert_int_equal(a.spec.copy.request_size, 4u << 20);
    assert_int_equal(a.spec.copy.order, COPY_ORDER_STRICT);
    assert_int_equal(a.spec.copy.sparse, 0);
    assert_true(a.spec.copy.target_is_zero);
    assert_true(a.spec.copy.verify);
    assert_true(a.create);
    assert_true(a.spec.overwrite);
    assert_int_equal(a.spec.source_format, IMAGE_FORMAT_QCOW2);
    assert_int_equal(a.spec.target_format, IMAGE_FORMAT_QCOW2);
    assert_int_equal(a.spec.cluster_size, 1u << 20);
    assert_true(a.spec.compress);
    assert_false(a.spec.keep_backing);
    assert_false(a.spec.copy.skip_backing);
    assert_true(a.progress);
    assert_int_equal(parse(&a, &err, "--target-format", "qcow2",
                           "--keep-backing", "in.qcow2", "out.qcow2", NULL),
                     0);
    assert_true(a.spec.keep_backing);
    assert_true(a.spec.copy.skip_backing);
    assert_false(a.quiet);

    assert_int_equal(parse(&a, &err, "-q", "--order=any", "--resume-from",
                           "3G", "--overwrite", "a", "b", NULL), 0);
    assert_true(a.quiet);
    assert_int_equal(a.spec.copy.order, COPY_ORDER_ANY);
    assert_int_equal(a.spec.copy.start_offset, 3ull << 30);
    /* A small request size lowers the default zero-run size with it. */
    assert_int_equal(parse(&a, &err, "--request-size", "1000", "a", "b",
                           NULL), 0);
    assert_int_equal(a.spec.copy.request_size, 1000);
    assert_int_equal(a.spec.copy.sparse, 512);
    assert_int_equal(parse(&a, &err, "--request-size", "300", "a", "b",
                           NULL), 0);
    assert_int_equal(a.spec.copy.sparse, 0);
    assert_int_equal(parse(&a, &err, "--order", "pipelined", "--source-format",
                           "raw", "a", "b", NULL), 0);
    assert_int_equal(a.spec.copy.order, COPY_ORDER_PIPELINED);
    assert_int_equal(a.spec.source_format, IMAGE_FORMAT_RAW);
}

static void test_operand_placement(void **state)
{
    (void)state;
    struct copy_args a;
    struct errmsg err;
    /* Options after the operands. */
    assert_int_equal(parse(&a, &err, "a", "b", "--verify", NULL), 0);
    assert_string_equal(a.spec.source, "a");
    assert_string_equal(a.spec.target, "b");
    assert_true(a.spec.copy.verify);
    /* "--" ends the options: a file named like an option. */
    assert_int_equal(parse(&a, &err, "--create", "--", "-odd", "--verify",
                           NULL), 0);
    assert_string_equal(a.spec.source, "-odd");
    assert_string_equal(a.spec.target, "--verify");
    assert_true(a.create);
    assert_false(a.spec.copy.verify);
}

static void test_help(void **state)
{
    (void)state;
    struct copy_args a;
    struct errmsg err;
    assert_int_equal(parse(&a, &err, "--help", NULL), 0);
    assert_true(a.help);
    assert_int_equal(parse(&a, &err, "a", "-h", "--bogus", NULL), 0);
    assert_true(a.help);
    /* The usage text names every option. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    copy_args_usage(f);
    fclose(f);
    const char *opts[] = { "--requests", "--request-size", "--order",
        "--sparse", "--target-is-zero", "--verify", "--create",
        "--overwrite", "--source-format", "--target-format",
        "--cluster-size", "--compress", "--keep-backing", "--resume-from",
        "-p", "-q", "--help", "usage: imgfs copy" };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!strstr(text, opts[i]))
            fail_msg("usage lacks %s", opts[i]);
    free(text);
}

static void test_bad_values(void **state)
{
    (void)state;
    PARSE_FAILS("--requests: '0' is not a number from 1 to 1024",
                "--requests", "0", "a", "b");
    PARSE_FAILS("--requests: '1025'", "--requests=1025", "a", "b");
    PARSE_FAILS("--requests: 'x'", "--requests", "x", "a", "b");
    PARSE_FAILS("--requests: '-1'", "--requests", "-1", "a", "b");
    PARSE_FAILS("--requests: '4k'", "--requests", "4k", "a", "b");
    PARSE_FAILS("--request-size: '1Q' is not a size",
                "--request-size", "1Q", "a", "b");
    PARSE_FAILS("--request-size: '0' is out of range",
                "--request-size", "0", "a", "b");
    PARSE_FAILS("--request-size: '65M' is out of range",
                "--request-size", "65M", "a", "b");
    PARSE_FAILS("--order: 'fast' is not strict, pipelined or any",
                "--order", "fast", "a", "b");
    PARSE_FAILS("--sparse: 'lots' is not a size", "--sparse", "lots", "a", "b");
    PARSE_FAILS("--sparse: '1000' must be 0 or a multiple of 512",
                "--sparse", "1000", "a", "b");
    PARSE_FAILS("--source-format: 'vmdk' is not auto, raw or qcow2",
                "--source-format", "vmdk", "a", "b");
    PARSE_FAILS("--target-format: 'auto' is not raw or qcow2",
                "--target-format", "auto", "a", "b");
    PARSE_FAILS("--cluster-size: '3K' is not a power of two",
                "--target-format", "qcow2", "--cluster-size", "3K", "a", "b");
    PARSE_FAILS("--cluster-size: '4M'",
                "--target-format", "qcow2", "--cluster-size", "4M", "a", "b");
    PARSE_FAILS("--resume-from: 'end' is not a byte offset",
                "--resume-from", "end", "a", "b");
}

static void test_bad_usage(void **state)
{
    (void)state;
    PARSE_FAILS("unknown option '--fast'", "--fast", "a", "b");
    PARSE_FAILS("unknown option '--fast'", "--fast=1", "a", "b");
    PARSE_FAILS("unknown option '-x'", "-x", "a", "b");
    PARSE_FAILS("--requests needs a value", "a", "b", "--requests");
    PARSE_FAILS("--verify takes no value", "--verify=yes", "a", "b");
    PARSE_FAILS("expected SOURCE and TARGET", "a");
    PARSE_FAILS("expected SOURCE and TARGET", "--verify");
    PARSE_FAILS("unexpected argument 'c'", "a", "b", "c");
    PARSE_FAILS("--compress needs --target-format qcow2", "--compress",
                "a", "b");
    PARSE_FAILS("--cluster-size needs --target-format qcow2",
                "--cluster-size", "64K", "a", "b");
    PARSE_FAILS("--keep-backing needs --target-format qcow2",
                "--keep-backing", "a", "b");
    PARSE_FAILS("--keep-backing cannot be combined with --verify",
                "--target-format=qcow2", "--keep-backing", "--verify",
                "a", "b");
    PARSE_FAILS("--keep-backing cannot be combined with --target-is-zero",
                "--target-format=qcow2", "--keep-backing",
                "--target-is-zero", "a", "b");
    PARSE_FAILS("--sparse (1048576) must not exceed --request-size (65536)",
                "--request-size", "64K", "--sparse", "1M", "a", "b");
    /* --create with --resume-from continues the copy's partial file (the
     * target is published when complete): accepted, both kept. */
    {
        struct copy_args r;
        struct errmsg e = { "" };
        assert_int_equal(parse(&r, &e, "--create", "--resume-from", "4096",
                               "a", "b", NULL), 0);
        assert_true(r.create);
        assert_int_equal(r.spec.copy.start_offset, 4096);
    }
    PARSE_FAILS("--resume-from cannot be combined with --create and "
                "--target-format qcow2",
                "--create", "--target-format", "qcow2", "--resume-from",
                "4096", "a", "b");
    PARSE_FAILS("-p and -q exclude each other", "-p", "-q", "a", "b");
}

/* ---- progress --------------------------------------------------------- */

static void test_format(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(progress_format_bytes(b, sizeof b, 0), "0 B");
    assert_string_equal(progress_format_bytes(b, sizeof b, 512), "512 B");
    assert_string_equal(progress_format_bytes(b, sizeof b, 1536), "1.5 KiB");
    assert_string_equal(progress_format_bytes(b, sizeof b, 2.0 * (1 << 30)),
                        "2.0 GiB");
    assert_string_equal(progress_format_duration(b, sizeof b, 7), "0:07");
    assert_string_equal(progress_format_duration(b, sizeof b, 754), "12:34");
    assert_string_equal(progress_format_duration(b, sizeof b, 3723),
                        "1:02:03");
    assert_string_equal(progress_format_duration(b, sizeof b, -1), "--:--");
}

static void test_progress_lines(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct progress p;
    progress_init(&p, f, "imgfs copy", PROGRESS_LINES);
    const uint64_t total = 1000ull << 20;
    const uint64_t s = 1000000000ull;
    progress_update(&p, total / 20, total, 1 * s);          /* 5%: nothing */
    progress_update(&p, total * 15 / 100, total, 2 * s);    /* 10% line */
    progress_update(&p, total * 16 / 100, total, 3 * s);    /* nothing */
    progress_update(&p, total * 47 / 100, total, 4 * s);    /* 40% line */
    progress_update(&p, total, total, 5 * s);               /* 100% line */
    progress_update(&p, total, total, 6 * s);               /* nothing */
    progress_finish(&p);
    fclose(f);
    assert_string_equal(text,
        "imgfs copy: 10% (150.0 MiB of 1000.0 MiB, 100.0 MiB/s)\n"
        "imgfs copy: 40% (470.0 MiB of 1000.0 MiB, 144.1 MiB/s)\n"
        "imgfs copy: 100% (1000.0 MiB of 1000.0 MiB, 259.9 MiB/s)\n");
    free(text);
}

static void test_progress_bar(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct progress p;
    progress_init(&p, f, "x", PROGRESS_BAR);
    progress_update(&p, 512, 1024, 1000000000ull);
    fflush(f);
    assert_non_null(strstr(text, "\r 50.0% [##############              ]"));
    assert_non_null(strstr(text, "512 B / 1.0 KiB"));
    assert_null(strchr(text, '\n'));
    progress_finish(&p);
    fclose(f);
    /* Finishing erases the line. */
    assert_int_equal(strcmp(text + len - 4, "\r\033[K"), 0);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_option),
        cmocka_unit_test(test_operand_placement),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_usage),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_progress_lines),
        cmocka_unit_test(test_progress_bar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
