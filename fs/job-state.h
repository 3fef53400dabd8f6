/* job-state.h — a copy job's spec and progress kept on disk, so that a job
 * outlives the process that ran it (SIGKILL, unmount, reboot).
 *
 * One file per job, written atomically: the new content goes to
 * "FILE.tmp" in the same directory, which is fsync'd, renamed over FILE,
 * and the directory is fsync'd.  A reader thus sees the old or the new
 * state, never a mix.  Files are created 0600 (they name images and
 * servers).
 *
 * Format (text, UTF-8 or bytes, no NUL):
 *
 *   imgfs-job-state: 1
 *   state: running            # running | interrupted | failed | queued
 *   watermark: 1048576        # DURABLE: a target flush completed after
 *                             # every write below it
 *   bytes-total: 67108864
 *   source: src               # as the job / command line names it
 *   target: lun
 *   uid: 0                    # who wrote the job (mount jobs)
 *   gid: 0
 *   error: -                  # why it stopped, "-" if nothing
 *   <blank line>
 *   the job text, verbatim, to the end of the file (mount jobs; empty
 *   for imgfs copy --state)
 *
 * States: "running" while the job runs (still so after a SIGKILL);
 * "interrupted" when the unmount stopped it; "failed"; "queued" (mount
 * jobs) when it waits for the mount's memory or a job slot (fs/job-queue.h)
 * — written when the job is accepted, its watermark then the previous
 * run's when this start resumes it, else 0; the next mount queues it
 * again, in the order of the files' modification times.  A reader that
 * predates "queued" takes it as an interrupted job (resumed by touch).
 *
 * Unknown keys are ignored when reading; `state` and `watermark` are
 * required.  Values never hold a newline (control characters are written
 * as spaces).
 *
 * Nothing here is tied to FUSE: `imgfs copy --state` uses it too.  Calls
 * are synchronous file I/O (a few small writes and two fsyncs).
 */
#ifndef IMGFS_JOB_STATE_H
#define IMGFS_JOB_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "backends/errmsg.h"

#define JOB_STATE_SUFFIX ".state"

struct kept_job {
    char state[16];             /* "running", "interrupted", "failed",
                                 * "queued" */
    uint64_t watermark;         /* durable */
    uint64_t total;
    char source[1024], target[1024];
    uid_t uid;
    gid_t gid;
    char error[512];            /* "" when none */
    char *text;                 /* job text (malloc'd, may be NULL) */
    size_t len;
};

/* Write `st` to `path` atomically and durably (see above), mode 0600.
 * Returns 0 or -errno with `err` naming the file and the failing step. */
int job_state_write(const char *path, const struct kept_job *st,
                    struct errmsg *err);

/* Read `path` into `st` (st->text malloc'd; free with job_state_free).
 * Returns 0, -ENOENT when there is no such file, -EINVAL when it is not a
 * state file (err says why), or another -errno. */
int job_state_read(const char *path, struct kept_job *st,
                   struct errmsg *err);

void job_state_free(struct kept_job *st);

/* Remove `path` and make the removal durable (fsync of the directory).
 * A missing file is not an error.  Returns 0 or -errno. */
int job_state_remove(const char *path);

/* Create `dir` (and missing parents) with mode 0700; an existing `dir`
 * (only the last component: parents are left as they are)
 * must be a directory, owned by the caller, and is then chmod'ed to 0700.
 * Returns 0 or -errno with `err` set. */
int job_state_mkdir(const char *dir, struct errmsg *err);

/* The default state directory: /var/lib/imgfs/state for root, else
 * $XDG_STATE_HOME/imgfs or ~/.local/state/imgfs (malloc'd, NULL on
 * ENOMEM or when no home is known). */
char *job_state_default_dir(void);

/* The per-mount subdirectory name for mount point `mountpoint` (an
 * absolute path): the path without its leading '/', each '/' written as
 * '-', and every byte other than [A-Za-z0-9._] as %XX — so distinct
 * mount points never share a directory ("/mnt/imgfs-a" -> "mnt-imgfs%2Da";
 * "/" -> "-").  Names longer than 200 bytes keep their first 180 bytes and
 * end with '~' and a 64-bit hash of the whole path in hex.  malloc'd. */
char *job_state_mount_key(const char *mountpoint);

#endif
