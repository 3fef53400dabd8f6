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
 * An existing raw target on a LUN or NFS (not a file created here, no
 * keep-backing) opens in another thread while step 2 runs, on a loop of
 * its own (target-opener.h): such an open writes nothing, and the source
 * checks of step 5 run once both are open, before anything is written;
 * the image is then on `loop` like the source.  Errors are the same as
 * one after the other: a failed source is reported (the target closed
 * again), then the target's own errors, then the distinct_from rule.
 * On failure everything opened is closed again and `err` says what and
 * where; on success the caller owns the session.
 *
 * Created targets are published only when complete.  When the endpoints
 * say create and the target is a local or NFS file, step 5 first looks at
 * NAME (an existing one must not be the source or one of its backing
 * files), then:
 *   - NAME does not exist, or the target is qcow2 (always written as a new
 *     file): the image is written under the hidden name
 *     ".NAME.imgfs-partial" in the directory of NAME (same file system or
 *     export, so the rename is atomic), created 0600 like every created
 *     file, and copy_session_publish() renames it onto NAME once the job
 *     is done, flushed, verified and closed.  An existing qcow2 NAME needs
 *     `overwrite` unless it is empty, and is replaced only then, so a
 *     failed copy never destroys it.  A leftover partial file of an
 *     earlier run is removed and created again, except on resume
 *     (spec->copy.start_offset > 0) of a raw target: the partial file must
 *     exist with exactly the source's size and is continued in place
 *     (nothing is truncated); without it the open fails ("no partial file
 *     ... to resume").  qcow2 targets are never resumed (a start offset is
 *     refused: they restart from 0); an unpublished qcow2 partial file is
 *     removed when the session is closed, a raw one stays for a resume.
 *   - NAME is an existing raw file (or not a regular file: a block
 *     device): it is written in place, keeping its identity (file handle,
 *     hard links, open descriptors, other mounts of it), as `qemu-img
 *     convert -n` does: truncated to the source's size when starting,
 *     left as it is on resume (either needs `overwrite` unless empty).
 * Without create, the target is opened in place; a raw file NAME that does
 * not exist but has a partial file is a created target never published:
 * its partial file (source's size) is continued and published as above.
 */
#ifndef IMGFS_COPY_OPEN_H
#define IMGFS_COPY_OPEN_H

#include <stdbool.h>

#include "backends/errmsg.h"
#include "backends/image.h"
#include "backends/loop.h"
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

/* A target written under a temporary name, to be published (see
 * above).  All NULL/false: the target is written in place. */
struct copy_publish {
    char *partial_url;          /* where the target is open */
    char *final_url;            /* the name asked for (messages) */
    char *final_name;           /* its last component: the rename's goal */
    bool replace;               /* an existing final file may be replaced */
    bool restart;               /* unpublished, the partial file is of no
                                 * use (qcow2, or created by a failed
                                 * copy_open): removed by abandon */
};

/* An opened copy: both images and the engine job (not started). */
struct copy_session {
    struct image *src;
    struct image *dst;
    struct copy_job *job;
    struct copy_publish publish;
};

/* Open both images of `spec` (resume point: spec->copy.start_offset) on
 * `loop` as described above and prepare the job.  Returns 0 with `out`
 * filled, or -errno with `err` set and `out` all NULL.  Runs the loop
 * (opening is synchronous). */
int copy_open(struct loop *loop, const struct copy_spec *spec,
              const struct copy_endpoints *ep, struct copy_session *out,
              struct errmsg *err);

/* Free the job (not running: never started or finished), close the
 * target, then the source, without publishing: a raw partial file stays
 * (resumable), a qcow2 one is removed (copy_publish_abandon).  Closing the
 * target may still write (qcow2 metadata): its failure is returned as
 * -errno with `err` set (err may be NULL); the session is emptied either
 * way. */
int copy_session_close(struct copy_session *s, struct errmsg *err);

/* The job finished COPY_DONE (flushed, and verified when asked): free it,
 * close the target (qcow2 metadata written), publish it (rename the
 * partial file onto its final name; nothing to do for a target written in
 * place), close the source.  Returns 0, or -errno with `err` set when
 * closing or renaming failed: the target is then not published (a raw
 * partial file stays, a qcow2 one is removed).  The session is emptied
 * either way. */
int copy_session_publish(struct copy_session *s, struct errmsg *err);

/* Rename p's partial file onto its final name (the image must be closed).
 * Returns 0 or -errno with `err` set (the partial file stays).  `p` is
 * emptied either way; nothing to do when p has no partial file. */
int copy_publish_commit(struct copy_publish *p, struct errmsg *err);

/* Give up publishing: remove the partial file when p->restart, else leave
 * it for a resume.  `p` is emptied. */
void copy_publish_abandon(struct copy_publish *p);

#endif
