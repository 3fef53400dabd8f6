/* job-queue.c — mount jobs wait for memory.  See job-queue.h. */
#include "job-queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/vec.h"
#include "copier/rate.h"
#include "fs.h"
#include "mem-budget.h"

/* How often the queue is looked at while read-ahead holds the memory a
 * queued job waits for (nothing else tells when it frees). */
#define QUEUE_RETRY_MS 200u

struct waiting {
    struct job *j;
    bool force_resume;
    uint64_t need;
    char why[192];
};

struct reservation {
    struct job *j;
    uint64_t bytes;
};

/* guarded by jobs_lock */
static struct waiting *queue;
static size_t queue_len, queue_cap;
/* loop thread */
static struct reservation *held;
static size_t held_len, held_cap;
static job_queue_start_fn start_fn;
static int64_t retry_timer;
static bool from_queue;         /* starting the queue's head: no FIFO rule */

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

/* A request's buffer: its size rounded up to 4 KiB, as the engine
 * allocates it. */
static uint64_t stride_of(const struct copy_spec *spec)
{
    return (spec->copy.request_size + 4095) / 4096 * 4096;
}

/* The least memory `spec` can run with: a fixed pool whole, one request
 * of an adaptive depth; the verify pass needs two buffers. */
static uint64_t least_need(const struct copy_spec *spec)
{
    uint64_t stride = stride_of(spec);
    unsigned n = spec->copy.adaptive ? 1 : spec->copy.requests;
    if (spec->copy.verify && n < 2)
        n = 2;
    return (uint64_t)n * stride;
}

/* Why `spec` can never start under a budget of `total` (em). */
static void refuse(const struct copy_spec *spec, uint64_t least,
                   uint64_t total, struct errmsg *em)
{
    char rs[32];
    rate_format(rs, sizeof rs, spec->copy.request_size);
    const char *v = spec->copy.verify ? ", two buffers for verify" : "";
    if (spec->copy.adaptive)
        errmsg_set(em, "needs %.1f MiB (request-size = %s: a job holds at "
                   "least one request%s) but the mount's memory limit "
                   "(-o memory) is %.1f MiB", mib(least), rs, v, mib(total));
    else
        errmsg_set(em, "needs %.1f MiB (requests = %u × request-size = "
                   "%s%s) but the mount's memory limit (-o memory) is "
                   "%.1f MiB", mib(least), spec->copy.requests, rs, v,
                   mib(total));
}

static uint64_t need_of(struct copy_spec *spec)
{
    uint64_t total = mem_budget_total();
    uint64_t least = least_need(spec);
    if (spec->copy.adaptive) {
        if (spec->copy.memory > total && total >= spec->copy.request_size)
            spec->copy.memory = total;
        return spec->copy.memory > least ? spec->copy.memory : least;
    }
    return least;
}

static bool hold(struct job *j, uint64_t bytes)
{
    struct reservation *v = vec_room(held, held_len, &held_cap, sizeof *v, 16);
    if (!v)
        return false;
    held = v;
    held[held_len++] = (struct reservation){ j, bytes };
    return true;
}

static bool enqueue_locked(struct job *j, bool force_resume, uint64_t need,
                           const char *why)
{
    struct waiting *v = vec_room(queue, queue_len, &queue_cap, sizeof *v, 16);
    if (!v)
        return false;
    queue = v;
    struct waiting *w = &queue[queue_len++];
    w->j = j;
    w->force_resume = force_resume;
    w->need = need;
    memccpy(w->why, why, '\0', sizeof w->why);
    w->why[sizeof w->why - 1] = '\0';
    return true;
}

static void run_queue(void *opaque);

static void arm_retry(void)
{
    if (!retry_timer)
        retry_timer = loop_add_timer(fs_global->loop, QUEUE_RETRY_MS,
                                     run_queue, NULL);
    if (retry_timer < 0)
        retry_timer = 0;
}

int job_queue_admit(struct job *j, struct copy_spec *spec,
                    bool force_resume, job_queue_start_fn start,
                    struct errmsg *em)
{
    start_fn = start;
    uint64_t total = mem_budget_total(), least = least_need(spec);
    if (least > total) {
        refuse(spec, least, total, em);
        return -EINVAL;
    }
    uint64_t need = need_of(spec);
    char why[192] = "";
    pthread_mutex_lock(&fs_global->jobs_lock);
    bool others_wait = queue_len > 0 && !from_queue;
    if (others_wait)
        mem_budget_job_fits(need, why, sizeof why);
    bool ok = !others_wait && mem_budget_job_reserve(need, why, sizeof why);
    if (ok && !hold(j, need)) {
        mem_budget_job_release(need);
        ok = false;
        snprintf(why, sizeof why, "memory: out of memory");
    }
    if (!ok) {
        if (!why[0])
            snprintf(why, sizeof why, "the jobs queued before it");
        if (!enqueue_locked(j, force_resume, need, why)) {
            /* No room to remember it: let it run over the budget. */
            pthread_mutex_unlock(&fs_global->jobs_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (!ok)
        arm_retry();
    return ok ? 0 : 1;
}

/* Start queued jobs, in order, while the head fits. */
static void run_queue(void *opaque)
{
    (void)opaque;
    retry_timer = 0;
    for (;;) {
        pthread_mutex_lock(&fs_global->jobs_lock);
        if (queue_len == 0) {
            pthread_mutex_unlock(&fs_global->jobs_lock);
            return;
        }
        struct waiting w = queue[0];
        bool fits = mem_budget_job_fits(w.need, queue[0].why,
                                        sizeof queue[0].why);
        if (fits)
            memmove(queue, queue + 1, --queue_len * sizeof *queue);
        pthread_mutex_unlock(&fs_global->jobs_lock);
        if (!fits) {
            arm_retry();
            return;
        }
        from_queue = true;
        start_fn(w.j, w.force_resume);
        from_queue = false;
    }
}

void job_queue_release(struct job *j)
{
    for (size_t i = 0; i < held_len; i++) {
        if (held[i].j == j) {
            mem_budget_job_release(held[i].bytes);
            held[i] = held[--held_len];
            break;
        }
    }
    if (loop_defer(fs_global->loop, run_queue, NULL) < 0)
        arm_retry();
}

void job_queue_kick(void)
{
    if (loop_defer(fs_global->loop, run_queue, NULL) < 0)
        arm_retry();
}

bool job_queue_drop_locked(struct job *j)
{
    for (size_t i = 0; i < queue_len; i++) {
        if (queue[i].j == j) {
            memmove(queue + i, queue + i + 1,
                    (queue_len - i - 1) * sizeof *queue);
            queue_len--;
            return true;
        }
    }
    return false;
}

bool job_queue_why_locked(const struct job *j, char *buf, size_t n)
{
    for (size_t i = 0; i < queue_len; i++) {
        if (queue[i].j == j) {
            snprintf(buf, n, "%s", queue[i].why);
            return true;
        }
    }
    return false;
}

void job_queue_clear(void)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    queue_len = 0;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (retry_timer > 0)
        loop_cancel_timer(fs_global->loop, retry_timer);
    retry_timer = 0;
}
