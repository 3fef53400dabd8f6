/* mount-run.c — fs_mount_run (mount.h): the loop thread, the FUSE session
 * on worker threads, and the clean shutdown after unmount (running jobs
 * cancelled with their watermark logged and kept as interrupted in the
 * state directory, images flushed and closed). */
#include "mount-priv.h"

#include "readahead.h"

#include <string.h>
#include <syslog.h>

static void *loop_main(void *opaque)
{
    (void)opaque;
    loop_run(fs_global->loop);
    return NULL;
}

static bool shutdown_done;

/* True when no node has image I/O pending. */
static bool io_idle(void)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    size_t n = fs_global->nnodes;
    pthread_mutex_unlock(&fs_global->tree_lock);
    for (size_t i = 0; i < n; i++) {
        struct node *x = node_get(i + 1);
        if (x && (x->inflight || x->parked_head || x->reads_inflight ||
                  x->opening || (x->ra && readahead_inflight(x->ra))))
            return false;
    }
    return true;
}

/* Loop thread: close what is still open and stop the loop. */
static void shutdown_finish(void)
{
    jobs_report_stopped();
    pthread_mutex_lock(&fs_global->tree_lock);
    size_t n = fs_global->nnodes;
    pthread_mutex_unlock(&fs_global->tree_lock);
    for (size_t i = 0; i < n; i++) {
        struct node *x = node_get(i + 1);
        if (!x || !x->img)
            continue;
        readahead_free(x->ra);
        x->ra = NULL;
        int r = x->img->read_only ? 0 : image_flush_sync(x->img);
        if (r < 0 || x->werr)
            syslog(LOG_ERR, "imgfs: %s: write error at shutdown: %s",
                   x->name, strerror(r < 0 ? -r : -x->werr));
        struct image *img = x->img;
        x->img = NULL;
        image_close(img);
    }
    shutdown_done = true;
    loop_stop(fs_global->loop);
}

/* Loop thread, after the FUSE session ended: wait (without spinning the
 * loop inside a callback, which would hold back the calls queued behind
 * this one) until jobs stopped and accepted writes finished. */
static void shutdown_poll(void *opaque)
{
    (void)opaque;
    if (fs_global->active_jobs == 0 && io_idle()) {
        shutdown_finish();
        return;
    }
    if (loop_add_timer(fs_global->loop, 20, shutdown_poll, NULL) < 0)
        shutdown_finish();
}

static void shutdown_on_loop(void *opaque)
{
    (void)opaque;
    jobs_cancel_all();
    shutdown_poll(NULL);
}

int fs_mount_run(struct fs_mount *m)
{
    struct imgfs *fs = &m->fs;
    fs->loop = loop_new();
    if (!fs->loop || pthread_create(&fs->loop_thread, NULL, loop_main,
                                    NULL) != 0) {
        syslog(LOG_ERR, "imgfs: cannot start the loop thread");
        if (fs->loop)
            loop_free(fs->loop);
        fs->loop = NULL;
        return 1;
    }
    reply_pool_start(2);
    if (fs->resume_jobs)
        jobs_resume_all();
    jobs_requeue_kept();
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (cfg) {
        fuse_loop_cfg_set_max_threads(cfg, 16);
        fuse_loop_cfg_set_idle_threads(cfg, 8);
    }
    int r = fuse_session_loop_mt(m->se, cfg);
    if (cfg)
        fuse_loop_cfg_destroy(cfg);
    int status = r < 0 ? 1 : 0;

    fs->se = NULL;
    if (loop_post(fs->loop, shutdown_on_loop, NULL) < 0)
        loop_stop(fs->loop);
    pthread_join(fs->loop_thread, NULL);
    reply_pool_stop();
    if (!shutdown_done)
        status = 1;
    /* The exports' NFS connections are attached to the loop. */
    nfs_exports_close();
    loop_free(fs->loop);
    fs->loop = NULL;
    return status;
}
