/* qcow2-compress.c — zlib raw deflate/inflate for compressed clusters and
 * the worker threads that deflate off the loop thread.
 *
 * Workers only touch the job they popped (input buffer owned by the
 * writer until the job's done callback) and their own z_stream; results
 * go back to the loop thread with loop_post. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "qcow2-internal.h"

int qcow2_inflate(const uint8_t *in, size_t in_len, uint8_t *out,
                  size_t out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* Raw deflate.  Writers use a 4 KiB window (-12); a 32 KiB window
     * decodes those streams too. */
    if (inflateInit2(&z, -15) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    int r = inflate(&z, Z_FINISH);
    bool ok = (r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) &&
              z.avail_out == 0;
    inflateEnd(&z);
    return ok ? 0 : -EIO;
}

static size_t deflate_with(z_stream *z, const uint8_t *in, size_t in_len,
                           uint8_t *out, size_t out_cap)
{
    if (deflateReset(z) != Z_OK)
        return 0;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)in_len;
    z->next_out = out;
    z->avail_out = (uInt)out_cap;
    int r = deflate(z, Z_FINISH);
    if (r != Z_STREAM_END)
        return 0;
    return out_cap - z->avail_out;
}

static int deflate_init(z_stream *z)
{
    memset(z, 0, sizeof *z);
    return deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                        Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -ENOMEM;
}

size_t qcow2_deflate(const uint8_t *in, size_t in_len, uint8_t *out,
                     size_t out_cap)
{
    z_stream z;
    if (deflate_init(&z) < 0)
        return 0;
    size_t n = deflate_with(&z, in, in_len, out, out_cap);
    deflateEnd(&z);
    return n;
}

struct qcow2_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct qcow2_cjob *head, *tail;
    bool stop;
    unsigned n;
    pthread_t threads[];
};

static void job_done(void *opaque)
{
    struct qcow2_cjob *job = opaque;
    job->done(job);
}

static void *worker_main(void *opaque)
{
    struct qcow2_workers *w = opaque;
    z_stream z;
    bool have_z = deflate_init(&z) == 0;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cond, &w->lock);
        struct qcow2_cjob *job = w->head;
        if (job) {
            w->head = job->next;
            if (!w->head)
                w->tail = NULL;
        }
        pthread_mutex_unlock(&w->lock);
        if (!job)
            break;
        job->out_len = have_z ? deflate_with(&z, job->in, job->in_len,
                                             job->out, job->out_cap) : 0;
        while (loop_post(job->loop, job_done, job) < 0)
            ;   /* ENOMEM: retry; the loop must learn the result */
    }
    if (have_z)
        deflateEnd(&z);
    return NULL;
}

struct qcow2_workers *qcow2_workers_new(unsigned n)
{
    struct qcow2_workers *w = calloc(1, sizeof *w + n * sizeof(pthread_t));
    if (!w)
        return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0)
            break;
        w->n++;
    }
    if (w->n == 0) {
        qcow2_workers_free(w);
        return NULL;
    }
    return w;
}

int qcow2_workers_submit(struct qcow2_workers *w, struct qcow2_cjob *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void qcow2_workers_free(struct qcow2_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
}
