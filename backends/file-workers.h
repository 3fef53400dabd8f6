/* file-workers.h — a small pool of threads that run blocking system calls
 * (pread, pwrite, fallocate, fdatasync, lseek) off the loop thread and hand
 * each finished piece of work back to the loop with loop_post.
 *
 * So the loop never blocks on a local disk: NFS and iSCSI connections that
 * share the loop keep flowing while a file request waits for the disk.
 *
 * Usage: embed a struct file_work in a request, set `run` (called on a
 * worker thread; does the blocking call and stores the result in the
 * request) and `done` (called later on the loop thread), then
 * file_workers_submit().  Work items are independent: several run at
 * once, in any order.
 */
#ifndef IMGFS_FILE_WORKERS_H
#define IMGFS_FILE_WORKERS_H

#include "loop.h"

struct file_work {
    void (*run)(struct file_work *w);     /* worker thread */
    void (*done)(struct file_work *w);    /* loop thread, after run */
    /* private to the pool */
    struct file_work *next;
};

struct file_workers;

/* Start `threads` worker threads (>= 1) that deliver completions on `loop`.
 * The threads block every signal, so signals (SIGINT for the CLI's
 * signalfd) go to the main thread.  Returns NULL with errno set. */
struct file_workers *file_workers_new(struct loop *loop, unsigned threads);

/* Queue `w` (loop thread).  Never fails: the work item is the request's own
 * memory.  `w->done` runs on the loop thread, never inside this call. */
void file_workers_submit(struct file_workers *fw, struct file_work *w);

/* Stop and join the threads.  No work may be queued or running (every
 * `done` has been called).  NULL is ignored. */
void file_workers_free(struct file_workers *fw);

#endif
