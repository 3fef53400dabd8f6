/* Unit tests of copier/status-json.h: strings are escaped as JSON asks
 * (quote, backslash, control characters, DEL), valid UTF-8 passes and
 * every invalid byte becomes \ufffd; a status line has the documented
 * keys in order, null for a missing error and an unknown eta. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copier/status-json.h"

/* `text` as a JSON string (malloc'd). */
static char *escaped(const char *text)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    json_write_string(f, text);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void check(const char *text, const char *want)
{
    char *got = escaped(text);
    assert_string_equal(got, want);
    free(got);
}

static void test_escapes(void **state)
{
    (void)state;
    check("plain", "\"plain\"");
    check("say \"hi\"", "\"say \\\"hi\\\"\"");
    check("a\\b", "\"a\\\\b\"");
    check("l1\nl2\r\tx", "\"l1\\nl2\\r\\tx\"");
    check("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"");
    check("", "\"\"");
}

static void test_utf8(void **state)
{
    (void)state;
    check("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xbe",
          "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xbe\"");
    check("\xff", "\"\\ufffd\"");
    check("a\xe2\x82", "\"a\\ufffd\\ufffd\"");              /* cut short */
    check("\xc0\xaf", "\"\\ufffd\\ufffd\"");                /* overlong */
    check("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");     /* surrogate */
    check("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

static void test_line(void **state)
{
    (void)state;
    struct status_json s = {
        .job = "j\"1", .state = "running", .bytes_done = 10,
        .bytes_total = 100, .watermark = 8, .rate = 2.6, .rate_limit = 0,
        .eta_s = 34.6, .error = NULL, .time = 1796400000.25,
    };
    char *l = status_json_format(&s);
    assert_non_null(l);
    assert_string_equal(l,
        "{\"job\":\"j\\\"1\",\"state\":\"running\",\"bytes_done\":10,"
        "\"bytes_total\":100,\"watermark\":8,\"rate\":3,\"rate_limit\":0,"
        "\"eta_s\":35,\"error\":null,\"time\":1796400000.250}\n");
    free(l);
    s.job = NULL;
    s.state = "failed";
    s.eta_s = -1;
    s.error = "bad \"x\"";
    l = status_json_format(&s);
    assert_non_null(l);
    assert_string_equal(l,
        "{\"state\":\"failed\",\"bytes_done\":10,\"bytes_total\":100,"
        "\"watermark\":8,\"rate\":3,\"rate_limit\":0,\"eta_s\":null,"
        "\"error\":\"bad \\\"x\\\"\",\"time\":1796400000.250}\n");
    free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
