/* copy-open.h — the one path from a job spec to a ready copy job.
 *
 * `imgfs copy`, jobs in a mount's control/ directory and anything else that
 * copies an image by name goes through copy_open(): it opens the source
 * (format, backing policy), checks what can be checked against it, opens the
 * target (which may create or truncate it) refusing the source itself or
 * any image of its backing chain, and prepares the engine job.  Callers
 * decide only what is theirs: where the names point (URLs) and whether the
 * target file may be created or replaced.
 *
 * Order of work, so that bad input touches nothing:
 *   1. copy_spec_check (option combinations);
 *   2. the source, read-only, with the spec's source format, no_backing for
 *      keep-backing, and the spec's allow-backing prefixes (a refused
 *      backing file fails here);
 *   3. resume offset within the source and aligned to its blocks;
 *   4. keep-backing: the backing name the target will record;
 *   5. the target, with distinct_from = the source (same image or a backing
 *      file of the source: refused before it is created, truncated or
 *      written);
 *   6. copy_job_new (target too small, request size vs block sizes, ...).
 * On failure everything opened is closed again and `err` says what and
 * where; on success the caller owns the session.
 */
#ifndef IMGFS_COPY_OPEN_H
#define IMGFS_COPY_OPEN_H

#include <stdbool.h>

#include "../backends/errmsg.h"
#include "../backends/image.h"
#include "../backends/loop.h"
#include "engine.h"
#include "jobspec.h"

/* Where the spec's images are and what may happen to the target file. */
struct copy_endpoints {
    const char *source_url;     /* URL or path to open as the source */
    const char *target_url;
    /* Labels for messages, e.g. the names inside a mount ("tpl/x.qcow2"):
     * errors of opening a side are prefixed "source 'LABEL'" / "target
     * 'LABEL'".  NULL: messages name the URLs only. */
    const char *source_label;
    const char *target_label;
    bool create;                /* image_open_opts.create for the target */
    bool overwrite;             /* image_open_opts.overwrite */
};

/* An opened copy: both images and the engine job (not started). */
struct copy_session {
    struct image *src;
    struct image *dst;
    struct copy_job *job;
};

/* Open both images of `spec` (resume point: spec->copy.start_offset) on
 * `loop` as described above and prepare the job.  Returns 0 with `out`
 * filled, or -errno with `err` set and `out` all NULL.  Runs the loop
 * (opening is synchronous). */
int copy_open(struct loop *loop, const struct copy_spec *spec,
              const struct copy_endpoints *ep, struct copy_session *out,
              struct errmsg *err);

/* Free the job (not running: never started or finished), close the
 * target, then the source.  Closing the target may still write (qcow2
 * metadata): its failure is returned as -errno with `err` set (err may be
 * NULL); the session is emptied either way. */
int copy_session_close(struct copy_session *s, struct errmsg *err);

#endif
