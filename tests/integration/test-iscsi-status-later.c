/* test-iscsi-status-later.c — image.h's rule "a completion never runs
 * inside the call that issued it" for the block status answers the iscsi
 * backend gives at once (a range outside the LUN, a LUN without thin
 * provisioning), even when the loop cannot queue a call: loop_defer is
 * wrapped (-Wl,--wrap=loop_defer) to fail with -ENOMEM while a request is
 * issued.  Runs against the real tgtd of scripts/test-servers with one
 * thick LUN of its own, deleted at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "backends/image-open.h"
#include "itest-util.h"
#include "servers-env.h"

#define LUN_SIZE (8ull * 1024 * 1024)

/* While true, loop_defer fails as if out of memory. */
static bool defer_fails;

int __real_loop_defer(struct loop *loop, loop_fn fn, void *opaque);
int __wrap_loop_defer(struct loop *loop, loop_fn fn, void *opaque);

int __wrap_loop_defer(struct loop *loop, loop_fn fn, void *opaque)
{
    if (defer_fails)
        return -ENOMEM;
    return __real_loop_defer(loop, fn, opaque);
}

static struct loop *loop;
static const char *test_servers;
static char lun_name[64], lun_url[512], lun_file[512];
static bool lun_created;
static struct image *img;

/* One block status request: `issuing` is true while the call runs. */
struct probe {
    bool issuing;
    bool called_inside;
    int calls;
    int err;
    size_t n;
    struct extent ext;
};

static void ext_cb(void *opaque, int err, const struct extent *ext, size_t n)
{
    struct probe *p = opaque;
    p->called_inside |= p->issuing;
    p->calls++;
    p->err = err;
    p->n = n;
    if (n)
        p->ext = ext[0];
}

/* Ask for the block status of [off, off+len) with loop_defer failing;
 * check nothing was answered inside the call, then run the loop until the
 * one answer came. */
static void status_later(struct probe *p, uint64_t off, uint64_t len)
{
    *p = (struct probe){ .issuing = true };
    defer_fails = true;
    image_block_status(img, off, len, ext_cb, p);
    defer_fails = false;
    p->issuing = false;
    assert_false(p->called_inside);
    assert_int_equal(p->calls, 0);
    alarm(30);
    while (p->calls == 0)
        assert_int_equal(loop_run_once(loop, -1), 0);
    alarm(0);
    assert_int_equal(p->calls, 1);
}

static void test_outside_the_lun_answers_later(void **state)
{
    (void)state;
    struct probe p;
    status_later(&p, img->size + 4096, 4096);
    assert_int_equal(p.err, -EINVAL);
    assert_int_equal(p.n, 0);
}

static void test_thick_lun_answers_later(void **state)
{
    (void)state;
    struct probe p;
    status_later(&p, 0, LUN_SIZE);
    assert_int_equal(p.err, 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.ext.offset, 0);
    assert_int_equal(p.ext.length, LUN_SIZE);
    assert_int_equal(p.ext.type, EXTENT_DATA);
}

static int group_setup(void **state)
{
    (void)state;
    servers_env_require();
    test_servers = servers_env_get("TEST_SERVERS");
    if (!test_servers || !servers_env_get("ISCSI_PORTAL"))
        return -1;
    loop = loop_new();
    if (!loop)
        return -1;
    snprintf(lun_name, sizeof lun_name, "itest-status-later-%d",
             (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' add-lun %s %llu 512 thick", test_servers,
             lun_name, (unsigned long long)LUN_SIZE);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int got = fscanf(p, "%511s %511s", lun_url, lun_file);
    int st = pclose(p);
    if (got != 2 || st != 0) {
        fprintf(stderr, "add-lun %s failed\n", lun_name);
        return -1;
    }
    lun_created = true;
    struct image_open_opts o = { .write = false };
    struct errmsg err = { { 0 } };
    if (image_open_protocol(loop, lun_url, &o, &img, &err) != 0) {
        fprintf(stderr, "open %s: %s\n", lun_url, err.text);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (img)
        image_close(img);
    if (lun_created)
        run("'%s' del-lun %s", test_servers, lun_name);
    if (loop)
        loop_free(loop);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outside_the_lun_answers_later),
        cmocka_unit_test(test_thick_lun_answers_later),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
