/* Unit tests of backends/loop.c: deferred calls, timers, cross-thread
 * posts and pollers whose fd changes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "backends/loop.h"

static void count(void *p) { (*(int *)p)++; }

struct chain { struct loop *loop; int n; };
static void chain_step(void *p)
{
    struct chain *c = p;
    if (++c->n < 5)
        loop_defer(c->loop, chain_step, c);
}

static void test_defer_runs_later_not_inline(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    int n = 0;
    assert_int_equal(loop_defer(loop, count, &n), 0);
    assert_int_equal(n, 0);                 /* not inline */
    assert_int_equal(loop_run_once(loop, 1000), 0);
    assert_int_equal(n, 1);
    /* A call deferred from a deferred call runs on a later iteration. */
    struct chain c = { loop, 0 };
    loop_defer(loop, chain_step, &c);
    loop_run_once(loop, 0);
    assert_int_equal(c.n, 1);
    for (int i = 0; i < 10; i++)
        loop_run_once(loop, 0);
    assert_int_equal(c.n, 5);
    loop_free(loop);
}

static void set_true(void *p) { *(bool *)p = true; }

static void test_timers_fire_in_order_and_cancel(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    bool a = false, b = false, c = false;
    uint64_t t0 = loop_now_ns();
    loop_add_timer(loop, 30, set_true, &b);
    loop_add_timer(loop, 10, set_true, &a);
    int64_t id = loop_add_timer(loop, 20, set_true, &c);
    loop_cancel_timer(loop, id);
    assert_int_equal(loop_run_until(loop, &a), 0);
    assert_false(b);
    assert_int_equal(loop_run_until(loop, &b), 0);
    assert_false(c);
    assert_true(loop_now_ns() - t0 >= 30 * 1000000ull);
    loop_free(loop);
}

/* What the other thread posted, and what it saw when it ran. */
struct post_probe {
    struct loop *loop;
    pthread_t loop_thread;          /* the thread inside loop_run_once */
    bool ran;
    bool ran_on_loop_thread;
    bool loop_says_on_thread;
};

static void posted_fn(void *p)
{
    struct post_probe *pr = p;
    pr->ran = true;
    pr->ran_on_loop_thread = pthread_equal(pthread_self(), pr->loop_thread);
    pr->loop_says_on_thread = loop_on_thread(pr->loop);
}

static void *poster(void *p)
{
    struct post_probe *pr = p;
    /* Most likely the loop is blocked by now; if not, the post must still
     * end the one iteration below. */
    usleep(20000);
    if (loop_post(pr->loop, posted_fn, pr) < 0)
        abort();
    return NULL;
}

/* The loop has no pollers, timers or deferred calls, so nothing but the
 * post can end its wait (-1: forever).  A watchdog alarm turns a loop that
 * is not woken into a failure instead of a hang. */
static void test_post_from_other_thread_wakes_loop(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    struct post_probe pr = { .loop = loop, .loop_thread = pthread_self() };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, poster, &pr), 0);
    alarm(30);
    assert_int_equal(loop_run_once(loop, -1), 0);
    alarm(0);
    assert_true(pr.ran);                    /* woken by the post, ran it */
    assert_true(pr.ran_on_loop_thread);
    assert_true(pr.loop_says_on_thread);
    pthread_join(t, NULL);
    loop_free(loop);
}

static void *stopper(void *p)
{
    usleep(20000);
    loop_stop(p);
    return NULL;
}

static void test_stop_from_other_thread_ends_run(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stopper, loop), 0);
    alarm(30);
    assert_int_equal(loop_run(loop), 0);   /* returns only when stopped */
    alarm(0);
    pthread_join(t, NULL);
    loop_free(loop);
}

/* loop_defer_call: never inline, and in order with loop_defer. */
struct order_log { int seen[8]; int n; };
struct order_item { struct order_log *log; int id; struct loop_call call; };

static void log_item(void *p)
{
    struct order_item *it = p;
    it->log->seen[it->log->n++] = it->id;
}

static void test_defer_call_runs_later_in_order(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    struct order_log log = { .n = 0 };
    struct order_item it[4];
    for (int i = 0; i < 4; i++) {
        it[i] = (struct order_item){ &log, i, { log_item, &it[i], NULL } };
        if (i % 2)
            loop_defer_call(loop, &it[i].call);
        else
            assert_int_equal(loop_defer(loop, log_item, &it[i]), 0);
    }
    assert_int_equal(log.n, 0);             /* not inline */
    alarm(30);
    assert_int_equal(loop_run_once(loop, -1), 0);
    alarm(0);
    assert_int_equal(log.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(log.seen[i], i);
    loop_free(loop);
}

struct pipe_poller {
    int fds[2];
    int use;            /* which pipe's read end we report */
    int other[2];
    int serviced;
    struct loop_poller p;
};

static int pp_fd(void *o) { struct pipe_poller *pp = o; return pp->use ? pp->other[0] : pp->fds[0]; }
static int pp_events(void *o) { (void)o; return POLLIN; }
static int pp_service(void *o, int rev)
{
    struct pipe_poller *pp = o;
    char c;
    if (rev & POLLIN) {
        ssize_t r = read(pp_fd(pp), &c, 1);
        (void)r;
        pp->serviced++;
    }
    return 0;
}

static void test_poller_follows_fd_change(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct pipe_poller pp = { .use = 0 };
    assert_int_equal(pipe(pp.fds), 0);
    assert_int_equal(pipe(pp.other), 0);
    pp.p = (struct loop_poller){ pp_fd, pp_events, pp_service, &pp };
    loop_add_poller(loop, &pp.p);
    assert_int_equal(write(pp.fds[1], "x", 1), 1);
    loop_run_once(loop, 1000);
    assert_int_equal(pp.serviced, 1);
    /* Reconnect: the poller now reports another fd. */
    pp.use = 1;
    assert_int_equal(write(pp.other[1], "y", 1), 1);
    loop_run_once(loop, 1000);
    assert_int_equal(pp.serviced, 2);
    /* Old fd is no longer watched. */
    assert_int_equal(write(pp.fds[1], "z", 1), 1);
    loop_run_once(loop, 50);
    assert_int_equal(pp.serviced, 2);
    loop_remove_poller(loop, &pp.p);
    close(pp.fds[0]); close(pp.fds[1]); close(pp.other[0]); close(pp.other[1]);
    loop_free(loop);
}

/* libnfs/libiscsi reconnect by dup2()ing a new socket onto the same fd
 * number; epoll forgets the old registration and the loop must notice. */
static void test_poller_survives_dup2_onto_same_fd(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct pipe_poller pp = { .use = 0 };
    assert_int_equal(pipe(pp.fds), 0);
    pp.p = (struct loop_poller){ pp_fd, pp_events, pp_service, &pp };
    loop_add_poller(loop, &pp.p);
    assert_int_equal(write(pp.fds[1], "x", 1), 1);
    loop_run_once(loop, 1000);
    assert_int_equal(pp.serviced, 1);
    int fresh[2];
    assert_int_equal(pipe(fresh), 0);
    assert_int_equal(dup2(fresh[0], pp.fds[0]), pp.fds[0]);
    close(fresh[0]);
    assert_int_equal(write(fresh[1], "y", 1), 1);
    loop_run_once(loop, 1000);
    assert_int_equal(pp.serviced, 2);
    loop_remove_poller(loop, &pp.p);
    close(pp.fds[0]); close(pp.fds[1]); close(fresh[1]);
    loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defer_runs_later_not_inline),
        cmocka_unit_test(test_timers_fire_in_order_and_cancel),
        cmocka_unit_test(test_post_from_other_thread_wakes_loop),
        cmocka_unit_test(test_stop_from_other_thread_ends_run),
        cmocka_unit_test(test_defer_call_runs_later_in_order),
        cmocka_unit_test(test_poller_follows_fd_change),
        cmocka_unit_test(test_poller_survives_dup2_onto_same_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
