/* file-workers.c — thread pool for blocking file I/O.  See file-workers.h. */
#include "file-workers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct file_workers {
    struct loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct file_work *head, *tail;  /* FIFO of queued work; under lock */
    bool stopping;                  /* under lock */
    unsigned nthreads;
    pthread_t threads[];
};

static void done_on_loop(void *opaque)
{
    struct file_work *w = opaque;
    w->done(w);
}

/* Hand `w` back to the loop.  loop_post only fails on ENOMEM; the work is
 * finished and must not be lost, so wait a little and try again. */
static void post_done(struct file_workers *fw, struct file_work *w)
{
    while (loop_post(fw->loop, done_on_loop, w) < 0) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static void *worker_main(void *opaque)
{
    struct file_workers *fw = opaque;
    pthread_mutex_lock(&fw->lock);
    for (;;) {
        while (!fw->head && !fw->stopping)
            pthread_cond_wait(&fw->wake, &fw->lock);
        if (!fw->head)
            break;      /* stopping and nothing left */
        struct file_work *w = fw->head;
        fw->head = w->next;
        if (!fw->head)
            fw->tail = NULL;
        pthread_mutex_unlock(&fw->lock);
        w->run(w);
        post_done(fw, w);
        pthread_mutex_lock(&fw->lock);
    }
    pthread_mutex_unlock(&fw->lock);
    return NULL;
}

struct file_workers *file_workers_new(struct loop *loop, unsigned threads)
{
    if (threads == 0)
        threads = 1;
    struct file_workers *fw = calloc(1, sizeof *fw +
                                     threads * sizeof(pthread_t));
    if (!fw)
        return NULL;
    fw->loop = loop;
    pthread_mutex_init(&fw->lock, NULL);
    pthread_cond_init(&fw->wake, NULL);

    /* Threads inherit the signal mask: block everything while creating
     * them so process signals are delivered to the other threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = 0;
    for (unsigned i = 0; i < threads; i++) {
        r = pthread_create(&fw->threads[i], NULL, worker_main, fw);
        if (r != 0)
            break;
        fw->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        file_workers_free(fw);
        errno = r;
        return NULL;
    }
    return fw;
}

void file_workers_submit(struct file_workers *fw, struct file_work *w)
{
    w->next = NULL;
    pthread_mutex_lock(&fw->lock);
    if (fw->tail)
        fw->tail->next = w;
    else
        fw->head = w;
    fw->tail = w;
    pthread_cond_signal(&fw->wake);
    pthread_mutex_unlock(&fw->lock);
}

void file_workers_free(struct file_workers *fw)
{
    if (!fw)
        return;
    pthread_mutex_lock(&fw->lock);
    fw->stopping = true;
    pthread_cond_broadcast(&fw->wake);
    pthread_mutex_unlock(&fw->lock);
    for (unsigned i = 0; i < fw->nthreads; i++)
        pthread_join(fw->threads[i], NULL);
    pthread_cond_destroy(&fw->wake);
    pthread_mutex_destroy(&fw->lock);
    free(fw);
}
