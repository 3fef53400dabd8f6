/* target-opener.c — an image opened in a thread of its own, then moved
 * onto the caller's loop.  See target-opener.h. */
#include "target-opener.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

struct target_opener {
    const char *url;
    struct image_open_opts opts;
    struct loop *loop;          /* private: run only by the thread */
    pthread_t thread;
    struct image *img;
    struct errmsg err;
    int r;
};

static void *open_thread(void *opaque)
{
    struct target_opener *t = opaque;
    t->r = image_open(t->loop, t->url, &t->opts, &t->img, &t->err);
    return NULL;
}

struct target_opener *target_opener_start(const char *url,
                                          const struct image_open_opts *opts)
{
    struct target_opener *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->url = url;
    t->opts = *opts;
    t->loop = loop_new();
    if (!t->loop) {
        free(t);
        return NULL;
    }
    /* The thread inherits the signal mask: with everything blocked,
     * process signals (SIGINT, SIGTERM) still go to the caller's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&t->thread, NULL, open_thread, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        loop_free(t->loop);
        free(t);
        errno = r;
        return NULL;
    }
    return t;
}

int target_opener_join(struct target_opener *t, struct loop *loop,
                       struct image **img, struct errmsg *err)
{
    pthread_join(t->thread, NULL);
    int r = t->r;
    *img = NULL;
    if (r < 0) {
        *err = t->err;
    } else if (image_move_loop(t->img, loop) < 0) {
        /* Closed where it lives (this thread now runs its loop). */
        errmsg_set(err, "%s: this kind of image cannot be opened in "
                   "parallel", t->img->name);
        image_close(t->img);
        r = -ENOTSUP;
    } else {
        *img = t->img;
    }
    /* Whatever is left on the private loop (the image's poller and
     * timers) goes on on `loop`. */
    loop_adopt(loop, t->loop);
    loop_free(t->loop);
    free(t);
    return r;
}
