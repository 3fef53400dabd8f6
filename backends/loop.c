/* loop.c — epoll event loop with pollers, timers, deferred and posted calls.
 * See loop.h for the contract. */
#include "loop.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vec.h"

struct call {
    loop_fn fn;
    void *opaque;
};

/* A growable FIFO of calls. */
struct callq {
    struct call *v;
    size_t n, cap;
};

struct timer {
    int64_t id;
    uint64_t deadline;
    loop_fn fn;
    void *opaque;
    struct timer *next;
};

struct loop {
    int epfd;
    int wakefd;
    struct loop_poller *pollers;
    struct timer *timers;       /* sorted by deadline */
    struct callq deferred;      /* loop thread only */
    /* loop_defer_call()s that found no room in `deferred`: run after it,
     * in order (loop thread only). */
    struct loop_call *linked_head, **linked_tail;
    pthread_mutex_t post_lock;
    struct callq posted;        /* guarded by post_lock */
    pthread_t thread;
    bool running;
    volatile bool stop;
};

uint64_t loop_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int callq_push(struct callq *q, loop_fn fn, void *opaque)
{
    struct call *v = vec_room(q->v, q->n, &q->cap, sizeof *v, 64);
    if (!v)
        return -ENOMEM;
    q->v = v;
    q->v[q->n++] = (struct call){ fn, opaque };
    return 0;
}

struct loop *loop_new(void)
{
    struct loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->epfd < 0 || loop->wakefd < 0)
        goto fail;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0)
        goto fail;
    pthread_mutex_init(&loop->post_lock, NULL);
    loop->linked_tail = &loop->linked_head;
    return loop;
fail:;
    int saved = errno;
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    free(loop);
    errno = saved;
    return NULL;
}

void loop_free(struct loop *loop)
{
    if (!loop)
        return;
    while (loop->timers) {
        struct timer *t = loop->timers;
        loop->timers = t->next;
        free(t);
    }
    free(loop->deferred.v);
    free(loop->posted.v);
    pthread_mutex_destroy(&loop->post_lock);
    close(loop->epfd);
    close(loop->wakefd);
    free(loop);
}

void loop_add_poller(struct loop *loop, struct loop_poller *p)
{
    p->armed_fd = -1;
    p->armed_events = 0;
    p->next = loop->pollers;
    loop->pollers = p;
}

void loop_remove_poller(struct loop *loop, struct loop_poller *p)
{
    for (struct loop_poller **pp = &loop->pollers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            if (p->armed_fd >= 0)
                epoll_ctl(loop->epfd, EPOLL_CTL_DEL, p->armed_fd, NULL);
            p->armed_fd = -1;
            return;
        }
    }
}

int loop_defer(struct loop *loop, loop_fn fn, void *opaque)
{
    return callq_push(&loop->deferred, fn, opaque);
}

void loop_defer_call(struct loop *loop, struct loop_call *call)
{
    /* Within the queue when it has room, so that it keeps its place among
     * loop_defer()s; else linked through its own memory. */
    if (callq_push(&loop->deferred, call->fn, call->opaque) == 0)
        return;
    call->next = NULL;
    *loop->linked_tail = call;
    loop->linked_tail = &call->next;
}

int loop_post(struct loop *loop, loop_fn fn, void *opaque)
{
    pthread_mutex_lock(&loop->post_lock);
    int r = callq_push(&loop->posted, fn, opaque);
    pthread_mutex_unlock(&loop->post_lock);
    if (r == 0) {
        uint64_t one = 1;
        ssize_t w = write(loop->wakefd, &one, sizeof one);
        (void)w; /* EAGAIN means the counter is already non-zero */
    }
    return r;
}

/* The next timer id of every loop (see loop_adopt). */
static _Atomic int64_t next_timer_id = 1;

int64_t loop_add_timer(struct loop *loop, unsigned ms, loop_fn fn, void *opaque)
{
    struct timer *t = malloc(sizeof *t);
    if (!t)
        return -ENOMEM;
    /* Unique across loops, so that timers moved by loop_adopt keep ids
     * their owners hold. */
    t->id = atomic_fetch_add(&next_timer_id, 1);
    t->deadline = loop_now_ns() + (uint64_t)ms * 1000000u;
    t->fn = fn;
    t->opaque = opaque;
    struct timer **pp = &loop->timers;
    while (*pp && (*pp)->deadline <= t->deadline)
        pp = &(*pp)->next;
    t->next = *pp;
    *pp = t;
    return t->id;
}

void loop_cancel_timer(struct loop *loop, int64_t id)
{
    for (struct timer **pp = &loop->timers; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct timer *t = *pp;
            *pp = t->next;
            free(t);
            return;
        }
    }
}

/* Register `fd` for `ev` on behalf of `p`.  The MOD is attempted every
 * round even when nothing seems to have changed: libnfs and libiscsi
 * reconnect by dup2()ing a new socket onto the same fd number, which
 * silently drops the old registration from epoll (MOD then fails with
 * ENOENT and we ADD again).  One cheap syscall per poller per round. */
static void arm_fd(struct loop *loop, struct loop_poller *p, int fd,
                   uint32_t ev)
{
    struct epoll_event e = { .events = ev, .data.ptr = p };
    if (fd == p->armed_fd &&
        epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &e) == 0) {
        p->armed_events = (int)ev;
        return;
    }
    if (p->armed_fd >= 0 && p->armed_fd != fd)
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, p->armed_fd, NULL);
    p->armed_fd = -1;
    if (fd >= 0 && epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &e) == 0) {
        p->armed_fd = fd;
        p->armed_events = (int)ev;
    }
}

/* Bring epoll registrations in line with what each poller wants now. */
static void arm_pollers(struct loop *loop)
{
    for (struct loop_poller *p = loop->pollers; p; p = p->next) {
        int fd = p->get_fd(p->opaque);
        int want = fd >= 0 ? p->events(p->opaque) : 0;
        uint32_t ev = 0;
        if (want & POLLIN)
            ev |= EPOLLIN;
        if (want & POLLOUT)
            ev |= EPOLLOUT;
        if (fd < 0) {
            if (p->armed_fd >= 0)
                epoll_ctl(loop->epfd, EPOLL_CTL_DEL, p->armed_fd, NULL);
            p->armed_fd = -1;
            continue;
        }
        arm_fd(loop, p, fd, ev);
    }
}

static void run_deferred(struct loop *loop)
{
    /* Calls deferred while running go to the next round. */
    struct callq *q = &loop->deferred;
    struct callq cur = *q;
    *q = (struct callq){ 0 };
    struct loop_call *linked = loop->linked_head;
    loop->linked_head = NULL;
    loop->linked_tail = &loop->linked_head;
    for (size_t i = 0; i < cur.n; i++)
        cur.v[i].fn(cur.v[i].opaque);
    if (q->v == NULL) {
        q->v = cur.v; /* reuse the buffer */
        q->cap = cur.cap;
        q->n = 0;
    } else {
        free(cur.v);
    }
    while (linked) {
        struct loop_call *c = linked;
        linked = c->next;       /* before fn, which may free c */
        c->fn(c->opaque);
    }
}

static void run_posted(struct loop *loop)
{
    uint64_t cnt;
    ssize_t r = read(loop->wakefd, &cnt, sizeof cnt);
    (void)r;
    pthread_mutex_lock(&loop->post_lock);
    struct callq cur = loop->posted;
    loop->posted = (struct callq){ 0 };
    pthread_mutex_unlock(&loop->post_lock);
    for (size_t i = 0; i < cur.n; i++)
        cur.v[i].fn(cur.v[i].opaque);
    free(cur.v);
}

static void run_timers(struct loop *loop)
{
    uint64_t now = loop_now_ns();
    while (loop->timers && loop->timers->deadline <= now) {
        struct timer *t = loop->timers;
        loop->timers = t->next;
        loop_fn fn = t->fn;
        void *opaque = t->opaque;
        free(t);
        fn(opaque);
    }
}

int loop_run_once(struct loop *loop, int timeout_ms)
{
    loop->thread = pthread_self();
    loop->running = true;
    /* Arm first: a poller's get_fd/events may defer work or add timers,
     * which must shorten this round's wait. */
    arm_pollers(loop);
    if (loop->deferred.n || loop->linked_head)
        timeout_ms = 0;
    if (loop->timers) {
        uint64_t now = loop_now_ns();
        uint64_t d = loop->timers->deadline;
        int t = d <= now ? 0 : (int)((d - now + 999999) / 1000000);
        if (timeout_ms < 0 || t < timeout_ms)
            timeout_ms = t;
    }
    struct epoll_event evs[64];
    int n = epoll_wait(loop->epfd, evs, 64, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return -errno;
    }
    for (int i = 0; i < n; i++) {
        struct loop_poller *p = evs[i].data.ptr;
        if (!p) {
            run_posted(loop);
            continue;
        }
        int rev = 0;
        if (evs[i].events & EPOLLIN)
            rev |= POLLIN;
        if (evs[i].events & EPOLLOUT)
            rev |= POLLOUT;
        if (evs[i].events & EPOLLERR)
            rev |= POLLERR;
        if (evs[i].events & EPOLLHUP)
            rev |= POLLHUP;
        /* The poller may have been removed by an earlier callback in this
         * batch; only service pollers still attached. */
        for (struct loop_poller *q = loop->pollers; q; q = q->next) {
            if (q == p) {
                p->service(p->opaque, rev);
                break;
            }
        }
    }
    run_timers(loop);
    run_deferred(loop);
    return 0;
}

int loop_run_until(struct loop *loop, const bool *done)
{
    while (!*done) {
        int r = loop_run_once(loop, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

static void stop_cb(void *opaque)
{
    struct loop *loop = opaque;
    loop->stop = true;
}

int loop_run(struct loop *loop)
{
    loop->stop = false;
    while (!loop->stop) {
        int r = loop_run_once(loop, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

void loop_stop(struct loop *loop)
{
    loop_post(loop, stop_cb, loop);
}

bool loop_on_thread(struct loop *loop)
{
    return loop->running && pthread_equal(loop->thread, pthread_self());
}

void loop_adopt(struct loop *dst, struct loop *src)
{
    /* Pollers: off src's epoll; dst registers them at its next round. */
    struct loop_poller **tail = &dst->pollers;
    while (*tail)
        tail = &(*tail)->next;
    for (struct loop_poller *p = src->pollers; p; p = p->next) {
        if (p->armed_fd >= 0)
            epoll_ctl(src->epfd, EPOLL_CTL_DEL, p->armed_fd, NULL);
        p->armed_fd = -1;
        p->armed_events = 0;
    }
    *tail = src->pollers;
    src->pollers = NULL;

    /* Timers: merged by deadline, ids and deadlines kept. */
    struct timer *moving = src->timers;
    src->timers = NULL;
    while (moving) {
        struct timer *t = moving;
        moving = t->next;
        struct timer **pp = &dst->timers;
        while (*pp && (*pp)->deadline <= t->deadline)
            pp = &(*pp)->next;
        t->next = *pp;
        *pp = t;
    }

    /* Deferred calls: after dst's own, in their order (waiting for memory
     * rather than dropping one); src's linked calls after dst's. */
    for (size_t i = 0; i < src->deferred.n; i++) {
        struct call *c = &src->deferred.v[i];
        while (callq_push(&dst->deferred, c->fn, c->opaque) < 0) {
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);   /* out of memory: wait for some */
        }
    }
    src->deferred.n = 0;
    if (src->linked_head) {
        *dst->linked_tail = src->linked_head;
        dst->linked_tail = src->linked_tail;
        src->linked_head = NULL;
        src->linked_tail = &src->linked_head;
    }

    /* Posted calls: handed to dst as if posted there. */
    pthread_mutex_lock(&src->post_lock);
    struct callq posted = src->posted;
    src->posted = (struct callq){ 0 };
    pthread_mutex_unlock(&src->post_lock);
    for (size_t i = 0; i < posted.n; i++) {
        while (loop_post(dst, posted.v[i].fn, posted.v[i].opaque) < 0) {
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);
        }
    }
    free(posted.v);
}
