/* job-queue.h — mount jobs wait for memory (mem-budget.h).
 *
 * A job about to start asks for what its copy may use
 * (job_queue_admit).  If the mount's budget (or -o max_jobs) has room and
 * no job waits before it, the bytes are reserved and it starts; otherwise
 * it is queued (its status says "queued" and why) and started, in arrival
 * order, once running jobs ended or read-ahead gave memory back.
 * Everything here runs on the loop thread, except the _locked functions,
 * which want fs_global->jobs_lock held.
 */
#ifndef IMGFS_JOB_QUEUE_H
#define IMGFS_JOB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/errmsg.h"
#include "copier/jobspec.h"

struct job;

/* How a queued job is started again (jobs.c: job_start_run). */
typedef void (*job_queue_start_fn)(struct job *j, bool force_resume);

/* Reserve the memory `spec` needs (an adaptive depth's `memory`, clamped
 * to the whole budget — such a job then runs alone —, or a fixed pool's
 * requests × request size) and return 0; or queue `j` and return 1.
 * `start` is what starts it later.  A job whose least need is more than
 * the whole budget (a fixed pool above it, or one request of an adaptive
 * job, two with verify) could never start: -EINVAL, nothing reserved
 * or queued, `em` naming the job keys and the mount's limit. */
int job_queue_admit(struct job *j, struct copy_spec *spec,
                    bool force_resume, job_queue_start_fn start,
                    struct errmsg *em);

/* The job ended (or did not start after job_queue_admit returned true):
 * release its reservation and start what now fits. */
void job_queue_release(struct job *j);

/* Memory was given back outside of a job (copy_file_range): start what
 * now fits (loop thread). */
void job_queue_kick(void);

/* Remove `j` from the queue; true if it was queued. */
bool job_queue_drop_locked(struct job *j);

/* If `j` is queued, put why in `buf` and return true. */
bool job_queue_why_locked(const struct job *j, char *buf, size_t n);

/* The mount goes away: forget every queued job. */
void job_queue_clear(void);

#endif
