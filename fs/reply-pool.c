/* reply-pool.c — threads that send large read replies to the kernel.
 *
 * Answering a 1 MiB read copies the data into the kernel; done on the loop
 * thread, that copy would compete with the network receive the loop thread
 * also does.  The loop thread hands finished reads here instead, so the
 * two copies run on different cores.  If the pool is not running (or a
 * queue entry cannot be allocated) the reply is sent by the caller. */
#include "fs.h"

#include <stdlib.h>

struct reply {
    struct reply *next;
    fuse_req_t req;
    void *buf;              /* freed after the reply */
    const char *data;
    size_t len;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct reply *head, *tail;
    bool stopping;
    unsigned nthreads;
    pthread_t threads[4];
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER,
           .wake = PTHREAD_COND_INITIALIZER };

static void *reply_main(void *opaque)
{
    (void)opaque;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.head && !pool.stopping)
            pthread_cond_wait(&pool.wake, &pool.lock);
        struct reply *r = pool.head;
        if (!r)
            break;
        pool.head = r->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.lock);
        fuse_reply_buf(r->req, r->data, r->len);
        free(r->buf);
        free(r);
        pthread_mutex_lock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

int reply_pool_start(unsigned nthreads)
{
    if (nthreads > 4)
        nthreads = 4;
    for (pool.nthreads = 0; pool.nthreads < nthreads; pool.nthreads++)
        if (pthread_create(&pool.threads[pool.nthreads], NULL, reply_main,
                           NULL) != 0)
            break;
    return pool.nthreads ? 0 : -1;
}

void reply_pool_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (unsigned i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    pool.nthreads = 0;
}

void reply_buf_async(fuse_req_t req, void *buf, const char *data, size_t len)
{
    struct reply *r = pool.nthreads ? malloc(sizeof *r) : NULL;
    if (!r) {
        fuse_reply_buf(req, data, len);
        free(buf);
        return;
    }
    *r = (struct reply){ NULL, req, buf, data, len };
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->next = r;
    else
        pool.head = r;
    pool.tail = r;
    pthread_cond_signal(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
}
