/* engine.h — the concurrent, order-preserving copy engine.
 *
 * A job copies image `src` onto image `dst` (both on the same loop; all
 * calls below except copy_job_progress run on that loop's thread).
 *
 * Memory: with `adaptive` off the job owns a fixed pool of `requests`
 * request objects, each with one aligned buffer of `request_size` bytes,
 * allocated in copy_job_new: memory is requests × request_size (+ a small
 * constant) whatever the image size.  With `adaptive` on, the job keeps
 * as many requests in flight as the depth controller (copier/depth.h)
 * finds useful from the latency and rate it observes, between
 * COPY_DEPTH_FLOOR and memory / request_size (at most COPY_MAX_REQUESTS);
 * buffers are allocated when a request first needs one and freed when the
 * depth shrinks, so buffer memory never exceeds `memory` (the verify pass
 * uses the same buffers).  Block status is queried lazily, a bounded window
 * ahead of the readers; the whole-image extent list never exists.
 *
 * A request's life: free → planned (range + extent type) → read (data only)
 * → zero detection (aligned runs of >= `sparse` zero bytes become zero
 * writes, or are skipped when the target reads as zeroes) → write → free.
 *
 * Write order:
 *   COPY_ORDER_STRICT     one target write in flight at a time, in offset
 *                         order;
 *   COPY_ORDER_PIPELINED  writes are issued in offset order, many in flight;
 *   COPY_ORDER_ANY        a write is issued as soon as its data is ready.
 * In every mode the job keeps the watermark: the offset below which every
 * target write has completed.  A failed or cancelled job reports it; a job
 * started with start_offset = watermark resumes there.
 *
 * At the end the target is flushed; with `verify` both images are then read
 * again and compared, except ranges that both report (block status) as
 * reading as zeroes, and a difference fails the job naming the first
 * differing byte offset.
 *
 * Errors name the operation, the image and the byte offset, then the
 * errno text and, when the backend gave one, its image->last_error:
 *   "OP on IMAGE at offset N: STRERROR[: LAST_ERROR]", e.g.
 *   "write on iscsi://127.0.0.1/iqn.x/1 at offset 1048576: Input/output
 *    error: WRITE16 at LBA 2048: ...";
 * a flush has no offset ("flush on IMAGE: STRERROR[: LAST_ERROR]"), and
 * a verify difference reads "verify: images differ at byte offset N".
 * On the first error the job stops issuing, drains what is in flight and
 * fails.  The watermark stays valid.
 */
#ifndef IMGFS_ENGINE_H
#define IMGFS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/image.h"

enum copy_order {
    COPY_ORDER_STRICT,
    COPY_ORDER_PIPELINED,
    COPY_ORDER_ANY,
};

#define COPY_DEFAULT_REQUESTS      16u
#define COPY_DEFAULT_REQUEST_SIZE  (1024u * 1024u)
#define COPY_DEFAULT_SPARSE        4096u
#define COPY_MAX_REQUESTS          1024u
#define COPY_MAX_REQUEST_SIZE      (64u * 1024u * 1024u)
#define COPY_DEFAULT_MEMORY        (64ull * 1024 * 1024)
#define COPY_DEPTH_FLOOR           2u

struct copy_options {
    unsigned requests;          /* pool size, 1..COPY_MAX_REQUESTS */
    size_t request_size;        /* bytes, multiple of both block sizes */
    enum copy_order order;
    uint64_t sparse;            /* 0: write every byte; else min zero run */
    bool target_is_zero;        /* target reads as zeroes: skip zero runs */
    /* Keep-backing copies: source ranges reported EXTENT_BACKING (a qcow2
     * layer opened with no_backing) are neither read nor written, so the
     * target's own backing file supplies them; EXTENT_ZERO ranges are
     * still written as zeroes (they shadow backing data).  The target must
     * read its backing where it is not written (a qcow2 target created
     * with the source's backing name).  Refused together with verify or
     * target_is_zero, and for images with block_size > 1.  Without it,
     * EXTENT_BACKING ranges are copied as zeroes like EXTENT_HOLE. */
    bool skip_backing;
    bool verify;                /* compare both sides after the copy */
    uint64_t start_offset;      /* resume point (a previous watermark) */
    /* Adaptive depth: `requests` is ignored and the depth moves between
     * COPY_DEPTH_FLOOR and memory / request_size (see "Memory" above).
     * Off (the engine's default; imgfs copy and job files turn it on
     * unless requests are given): the fixed pool of `requests`. */
    bool adaptive;
    uint64_t memory;            /* buffer bytes, >= request_size */
    /* Rate limit in bytes/s, 0: unlimited (copier/rate.h: 0 or RATE_MIN ..
     * RATE_MAX).  Paces the writes of data ranges: a request that read
     * data is written only when the job's token bucket grants its length;
     * ranges the source reports as zeroes or holes cost nothing (their
     * zero writes, or nothing, go at once), nor do the verify pass's
     * reads.  Bursts above the rate last at most RATE_BURST_MS (or one
     * request).  While the bucket is empty a loop timer waits: nothing
     * spins. */
    uint64_t rate;
};

enum copy_state {
    COPY_QUEUED,
    COPY_RUNNING,
    COPY_FLUSHING,
    COPY_VERIFYING,
    COPY_DONE,
    COPY_FAILED,
    COPY_CANCELLED,
};

struct copy_progress {
    enum copy_state state;
    uint64_t total;             /* bytes to copy (source size) */
    uint64_t done;              /* bytes finished (written, zeroed, skipped) */
    uint64_t watermark;         /* every target write below it completed */
    uint64_t verified;          /* bytes compared by the verify pass */
    uint64_t elapsed_ns;        /* since copy_job_start */
    int err;                    /* 0 or negative errno when FAILED */
    char error[512];            /* message when FAILED */
};

struct copy_job;

/* Fill `o` with the defaults above (pipelined, 16 × 1 MiB, sparse 4 KiB,
 * fixed pool; memory COPY_DEFAULT_MEMORY for when adaptive is set). */
void copy_options_init(struct copy_options *o);

/* Short name of a state ("queued", "running", ...). */
const char *copy_state_name(enum copy_state s);
/* Parse/format an order name ("strict", "pipelined", "any"). */
int copy_order_parse(const char *s, enum copy_order *out);
const char *copy_order_name(enum copy_order o);

/* Validate and prepare a job.  Checks, before anything is written: both
 * images on the same loop, dst not read-only, dst->size >= src->size
 * ("target too small: N bytes, source needs M"), options in range and
 * request_size a multiple of both block sizes, start_offset <= src->size
 * and block aligned, skip_backing only without verify and target_is_zero
 * and on byte-addressable images, memory >= request_size when adaptive.
 * Allocates the request pool (adaptive: the slots only; buffers come when
 * a request needs one).  Returns NULL with `err`
 * filled and errno set (ENOSPC: target too small, EROFS, ENOMEM, else
 * EINVAL) on failure.  The job does not own the images. */
struct copy_job *copy_job_new(struct image *src, struct image *dst,
                              const struct copy_options *opts,
                              struct errmsg *err);

/* Called on the loop thread when the job reaches DONE, FAILED or
 * CANCELLED.  `final` is valid during the call. */
typedef void (*copy_done_cb)(void *opaque, const struct copy_progress *final);

/* Start the job (loop thread).  `done` is called exactly once, never from
 * inside copy_job_start. */
void copy_job_start(struct copy_job *job, copy_done_cb done, void *opaque);

/* Ask a running job to stop (loop thread).  It stops issuing, drains
 * in-flight requests and finishes with COPY_CANCELLED (watermark kept).
 * No effect on a finished job. */
void copy_job_cancel(struct copy_job *job);

/* Called on the loop thread when a checkpoint's flush completed.
 * err == 0: every target write below `watermark` is durable (a target
 * flush completed after all of them did).  err < 0: the flush failed;
 * nothing beyond an earlier checkpoint's watermark is known durable, and
 * the job fails with the flush error (a failed fsync may drop the dirty
 * data and not report it again, so the final flush could succeed falsely). */
typedef void (*copy_checkpoint_cb)(void *opaque, uint64_t watermark, int err);

/* Make the current watermark durable while the copy goes on (loop thread).
 * Notes the watermark W (every target write below it has completed), issues
 * image_flush on the target and calls cb(opaque, W, err) once that flush
 * completed: W is then durable.  Writes keep being issued meanwhile; the
 * flush covers only what completed before it was issued, which includes
 * everything below W.  The flush counts as in flight: the job's done
 * callback runs only after cb.  Checkpoints may overlap; each reports its
 * own W, and their callbacks may come in any order.  Returns 0 (cb will
 * run exactly once, never inside this call), -EALREADY when the job was
 * not started or is finishing (no flush issued, cb never called), or
 * -ENOMEM. */
/* How often callers that keep state checkpoint a running job (mount jobs,
 * imgfs copy --state): $IMGFS_CHECKPOINT_INTERVAL seconds (a decimal
 * number from 0.05 to 3600), else COPY_CHECKPOINT_DEFAULT_MS.  Returns
 * milliseconds. */
#define COPY_CHECKPOINT_DEFAULT_MS 5000u
unsigned copy_checkpoint_interval_ms(void);

int copy_job_checkpoint(struct copy_job *job, copy_checkpoint_cb cb,
                        void *opaque);

/* Change the rate limit of a job, started or not (loop thread), with
 * effect on the next write: a job waiting for the old rate re-evaluates
 * at once.  Returns 0, or -ERANGE for a rate outside 0 or RATE_MIN ..
 * RATE_MAX (nothing changed). */
int copy_job_set_rate(struct copy_job *job, uint64_t rate);

/* Snapshot the job's progress.  Safe from any thread. */
void copy_job_progress(struct copy_job *job, struct copy_progress *out);

/* Free a job that has not been started or has finished (after `done`). */
void copy_job_free(struct copy_job *job);

#endif
