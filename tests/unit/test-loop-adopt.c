/* Unit tests of loop_adopt (backends/loop.c) and image_move_loop
 * (backends/image.c): what was attached to one loop (pollers, timers,
 * deferred and posted calls) goes on on another, as copy_open does with a
 * target opened in a thread of its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/image-open.h"
#include "backends/loop.h"

struct pipe_poller {
    struct loop_poller p;
    int fds[2];
    int serviced;
};

static int pp_fd(void *o) { return ((struct pipe_poller *)o)->fds[0]; }
static int pp_events(void *o) { (void)o; return POLLIN; }
static int pp_service(void *o, int revents)
{
    struct pipe_poller *pp = o;
    char c;
    if (revents & POLLIN && read(pp->fds[0], &c, 1) == 1)
        pp->serviced++;
    return 0;
}

static void pipe_poller_init(struct pipe_poller *pp)
{
    memset(pp, 0, sizeof *pp);
    assert_int_equal(pipe(pp->fds), 0);
    pp->p = (struct loop_poller){ .get_fd = pp_fd, .events = pp_events,
                                  .service = pp_service, .opaque = pp };
}

/* A poller armed on src is served by dst, and src no longer sees it. */
static void test_poller_moves(void **state)
{
    (void)state;
    struct loop *src = loop_new(), *dst = loop_new();
    struct pipe_poller pp;
    pipe_poller_init(&pp);
    loop_add_poller(src, &pp.p);
    assert_int_equal(loop_run_once(src, 0), 0);     /* armed on src */
    loop_adopt(dst, src);
    assert_int_equal(write(pp.fds[1], "x", 1), 1);
    assert_int_equal(loop_run_once(src, 0), 0);
    assert_int_equal(pp.serviced, 0);
    for (int i = 0; i < 100 && !pp.serviced; i++)
        assert_int_equal(loop_run_once(dst, 100), 0);
    assert_int_equal(pp.serviced, 1);
    loop_remove_poller(dst, &pp.p);
    close(pp.fds[0]);
    close(pp.fds[1]);
    loop_free(src);
    loop_free(dst);
}

/* Appends its letter to a log. */
struct tag { char c; char *log; };

static void append(void *o)
{
    struct tag *t = o;
    size_t n = strlen(t->log);
    t->log[n] = t->c;
    t->log[n + 1] = '\0';
}

/* Timers keep their ids and deadlines; ids never collide across loops;
 * deferred calls run after dst's own, in order. */
static void test_timers_and_calls_move(void **state)
{
    (void)state;
    struct loop *src = loop_new(), *dst = loop_new();
    char log[16] = "";
    struct tag a = { 'a', log }, b = { 'b', log }, c = { 'c', log },
               d = { 'd', log }, e = { 'e', log }, f = { 'f', log };
    int64_t t_dst = loop_add_timer(dst, 40, append, &e);
    int64_t t_src = loop_add_timer(src, 20, append, &d);
    int64_t t_gone = loop_add_timer(src, 30, append, &f);
    assert_true(t_dst != t_src && t_src != t_gone && t_dst != t_gone);
    assert_int_equal(loop_defer(dst, append, &a), 0);
    assert_int_equal(loop_defer(src, append, &b), 0);
    struct loop_call lc = { .fn = append, .opaque = &c };
    loop_defer_call(src, &lc);
    loop_adopt(dst, src);
    loop_cancel_timer(dst, t_gone);     /* the id src gave is dst's now */
    assert_int_equal(loop_run_once(dst, 0), 0);
    assert_string_equal(log, "abc");
    uint64_t t0 = loop_now_ns();
    while (strlen(log) < 5)
        assert_int_equal(loop_run_once(dst, 1000), 0);
    assert_true(loop_now_ns() - t0 >= 15 * 1000000ull);
    assert_string_equal(log, "abcde");
    assert_int_equal(loop_run_once(src, 0), 0);     /* nothing left */
    assert_string_equal(log, "abcde");
    loop_free(src);
    loop_free(dst);
}

static void set_true(void *p) { *(bool *)p = true; }

struct runner { struct loop *loop; bool done; int posted; };

static void bump(void *p) { ((struct runner *)p)->posted++; }

static void *run_private(void *p)
{
    struct runner *r = p;
    loop_add_timer(r->loop, 1, set_true, &r->done);
    loop_run_until(r->loop, &r->done);
    /* left for the adopting loop */
    loop_post(r->loop, bump, r);
    loop_add_timer(r->loop, 1, bump, r);
    return NULL;
}

/* A loop run by another thread, then adopted: its posted calls and timers
 * run on the adopting thread's loop. */
static void test_adopt_after_thread(void **state)
{
    (void)state;
    struct runner r = { .loop = loop_new() };
    struct loop *dst = loop_new();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_private, &r), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    loop_adopt(dst, r.loop);
    loop_free(r.loop);
    for (int i = 0; i < 100 && r.posted < 2; i++)
        assert_int_equal(loop_run_once(dst, 100), 0);
    assert_int_equal(r.posted, 2);
    assert_true(loop_on_thread(dst));
    loop_free(dst);
}

/* image_move_loop: protocol images without a loop of their own move;
 * others are refused unchanged. */
static void test_image_move_loop(void **state)
{
    (void)state;
    struct loop *a = loop_new(), *b = loop_new();
    struct image_open_opts o = { 0 };
    struct errmsg err;
    struct image *img;
    assert_int_equal(image_open_protocol(a, "zero:1M", &o, &img, &err), 0);
    assert_int_equal(image_move_loop(img, b), 0);
    assert_ptr_equal(img->loop, b);
    char buf[512];
    assert_int_equal(image_read_sync(img, buf, 0, sizeof buf), 0);
    image_close(img);
    char path[] = "/tmp/test-loop-adopt-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(image_open_protocol(a, path, &o, &img, &err), 0);
    assert_int_equal(image_move_loop(img, b), -ENOTSUP);
    assert_ptr_equal(img->loop, a);
    image_close(img);
    close(fd);
    unlink(path);
    loop_free(a);
    loop_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poller_moves),
        cmocka_unit_test(test_timers_and_calls_move),
        cmocka_unit_test(test_adopt_after_thread),
        cmocka_unit_test(test_image_move_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
