/* copy-state.h — `imgfs copy --state FILE`: the copy's progress kept in
 * FILE (fs/job-state.h format, no job text) so that the same command line
 * resumes it after a kill or a reboot.
 *
 *  - copy_keeper_prepare, before anything is opened: if FILE exists it must
 *    name the same SOURCE and TARGET (else the command is refused, nothing
 *    touched); its durable watermark W becomes the start offset ("resuming
 *    at W" on stderr), and a file target is then written in place
 *    (--overwrite is implied: the file is this copy's own, half written);
 *  - copy_keeper_start, once the job started: FILE says "running" at the
 *    start offset, then every copy_checkpoint_interval_ms() a checkpoint
 *    (copy_job_checkpoint) makes the watermark durable and FILE is
 *    rewritten with it;
 *  - copy_keeper_stop, when the loop returned: stops the checkpoints; for a
 *    job that did not finish, flushes the target and saves the final
 *    watermark (or the last durable one if the flush failed) as
 *    "failed"/"interrupted";
 *  - copy_keeper_done, after the target was closed (and published): FILE
 *    is removed.
 * Every write is atomic and durable (job_state_write).  Loop thread. */
#ifndef IMGFS_COPY_STATE_H
#define IMGFS_COPY_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/errmsg.h"
#include "backends/loop.h"
#include "copier/engine.h"
#include "copy-args.h"


struct copy_keeper {
    const char *path;           /* NULL: --state not given */
    const struct copy_args *args;
    struct loop *loop;
    struct copy_job *job;
    struct image *dst;
    uint64_t durable;
    int64_t timer;
    bool inflight, stopped;
};

/* See above.  Returns 0, or -errno with `err` set (the command fails
 * with exit status 2 and touches nothing).  May change a->spec.copy.
 * start_offset and a->spec.overwrite. */
int copy_keeper_prepare(struct copy_keeper *s, struct copy_args *a,
                        struct errmsg *err);
/* Start keeping state for `job` (started) writing `dst`. */
void copy_keeper_start(struct copy_keeper *s, struct loop *loop,
                       struct copy_job *job, struct image *dst);
/* The job ended with `final` (dst still open). */
void copy_keeper_stop(struct copy_keeper *s, const struct copy_progress *final);
/* The copy succeeded: remove the state file. */
void copy_keeper_done(struct copy_keeper *s);

#endif
