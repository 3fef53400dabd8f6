/* engine-internal.h — the copy job's state, shared by the engine's parts
 * (engine.c: lifecycle, errors, progress; planner.c: lazy block status →
 * planned ranges; pipeline.c: reads, ordered writes, watermark; verify.c:
 * the compare pass).  Not for use outside copier/ (tests may read it).
 *
 * Everything here runs on the images' loop thread, except the fields under
 * `lock`, which copy_job_progress reads from any thread.
 */
#ifndef IMGFS_ENGINE_INTERNAL_H
#define IMGFS_ENGINE_INTERNAL_H

#include <pthread.h>

#include "depth.h"
#include "engine.h"
#include "rate.h"

/* How many extents of one block-status answer the planner keeps. */
#define PLANNER_CACHE_EXTENTS 32u
/* A zero request covers at most this many request sizes (and 1 GiB). */
#define ZERO_REQUEST_FACTOR 64u
#define ZERO_REQUEST_MAX    (1024ull * 1024 * 1024)
/* Block status runs at most this many pool sizes ahead of the watermark
 * (and at least one zero-request cap). */
#define WINDOW_POOL_FACTOR 4u
/* Buffer alignment and stride granule. */
#define REQUEST_BUFFER_ALIGN 4096u

enum request_state {
    REQ_FREE,
    REQ_READING,        /* source reads in flight */
    REQ_READY,          /* data (or zero range) ready, writes not issued */
    REQ_WRITING,        /* target operations in flight */
    REQ_VERIFYING,      /* verify pass owns the buffer */
};

enum request_kind {
    REQ_DATA,           /* read, zero-detect, write */
    REQ_ZERO,           /* source reads as zeroes: write zeroes or skip */
    REQ_SKIP,           /* left to the target's backing (skip_backing):
                           nothing is read or written */
};

struct copy_request;

/* One image operation in flight for a request: the callback's opaque, so a
 * failure can name its own offset. */
struct request_op {
    struct copy_request *req;
    uint64_t offset;
    uint64_t issued_ns;             /* loop_now_ns() when issued */
    bool sample;                    /* a full-size data op: its latency
                                       goes to the depth controller */
    bool zeroes;                    /* a read that answered
                                       IMAGE_READ_ZEROES: its part of buf
                                       was not written */
};

struct copy_request {
    struct copy_job *job;
    unsigned index;
    unsigned char *buf;             /* stride bytes, 4 KiB aligned; NULL
                                       until needed (copy_job_buffer_get) */
    enum request_state state;
    enum request_kind kind;
    uint64_t seq;                   /* plan order (offset order) */
    uint64_t offset, length;
    unsigned ops_pending;           /* image operations in flight */
    unsigned ops_used;              /* entries of `ops` handed out */
    bool failed;                    /* one of its operations failed */
    bool buf_zero;                  /* buf is known to be all zero */
    unsigned zero_reads;            /* reads that answered
                                       IMAGE_READ_ZEROES */
    bool read_zeroes;               /* every read did: written as a zero
                                       range (buf not looked at) */
    size_t cursor;                  /* strict order: next piece to write */
    struct request_op *ops;         /* max_ops entries */
    struct copy_request *next_free;
};

/* Write-order bookkeeping, one per planned range, indexed by seq % n. */
struct copy_ticket {
    uint64_t end;
    struct copy_request *req;       /* NULL once the slot was released */
    bool done;                      /* every target op completed */
};

struct copy_planner {
    struct extent cache[PLANNER_CACHE_EXTENTS];
    size_t first, count;            /* live cache entries [first, count) */
    uint64_t cache_start;           /* offset the cached answer was asked at */
    uint64_t next;                  /* next offset to plan */
    bool querying;                  /* block status in flight */
    uint64_t window;                /* bytes ahead of the watermark */
    uint64_t zero_cap;              /* largest zero request */
    uint64_t align;                 /* lcm of both block sizes */
    uint64_t block_status_calls;
};

/* How many extents of one block-status answer the verify pass keeps per
 * image (the backends answer with at most 64). */
#define VERIFY_CACHE_EXTENTS 64u

/* The verify pass's view of one image's allocation: the contiguous prefix
 * of its latest block-status answer, covering [start, end).  Asked again
 * (from the verify position to the source end) only when the position
 * reaches `end`. */
struct verify_side {
    struct copy_job *job;
    struct image *img;
    struct extent cache[VERIFY_CACHE_EXTENTS];
    size_t count;
    uint64_t start, end;            /* covered range; start == end: none */
    bool querying;                  /* block status in flight */
    uint64_t block_status_calls;
};

struct copy_verifier {
    uint64_t next;                  /* next offset to compare */
    uint64_t diff;                  /* first differing offset found */
    bool differs;
    unsigned pairs;                 /* buffer pairs in use */
    /* Ranges that both images report as reading as zeroes (HOLE or ZERO,
     * never BACKING) are counted as verified without being read. */
    struct verify_side side[2];     /* [0] source, [1] target */
    uint64_t skipped;               /* bytes verified that way */
};

struct copy_job {
    struct image *src, *dst;
    struct copy_options opts;
    bool skip_zeroes;               /* target reads as zeroes */
    uint64_t size;                  /* bytes to copy (src->size) */

    size_t stride;
    unsigned nslots;                /* request slots the pipeline may use:
                                       requests, or the depth ceiling */
    unsigned nbuf;                  /* nslots (+1 for verify if needed) */
    size_t buffer_bytes;            /* bytes allocated for buffers now */
    size_t buffer_bytes_peak;       /* the most ever allocated at once */
    unsigned buffers_held;          /* requests with a buffer */
    struct depth_ctl depth;         /* in-flight depth (pinned: fixed) */
    struct copy_request *reqs;      /* nbuf entries */
    struct request_op *op_pool;
    unsigned max_ops;               /* per request */
    struct copy_request *free_list;
    unsigned free_count;

    struct copy_ticket *tickets;
    unsigned nticket;
    uint64_t plan_seq;              /* next seq to plan */
    uint64_t issue_seq;             /* next seq whose writes may issue */
    uint64_t retire_seq;            /* lowest seq not yet retired */
    unsigned groups_writing;        /* requests in REQ_WRITING */

    struct copy_planner plan;
    struct copy_verifier ver;

    unsigned ops_inflight;          /* every image op (and kicks) pending */
    bool started, stopping, finished, flush_issued, done_called;
    bool cancel_requested;
    bool in_pump, pump_again;
    uint64_t start_ns;

    struct rate_bucket rate;        /* paces data writes (opts.rate) */
    int64_t rate_timer;             /* waiting for the bucket, 0: not */
    bool rate_held;                 /* a ready request was refused */

    copy_done_cb done_cb;
    void *done_opaque;

    pthread_mutex_t lock;           /* guards `prog` and `end_ns` */
    struct copy_progress prog;
    uint64_t end_ns;
};

/* engine.c */
/* Drive the job: plan and read into free slots, issue writes in order,
 * flush, verify, finish.  Safe to call from any completion; re-entrant
 * calls are folded into the running one.  May call the done callback,
 * so callers must not touch the job after calling it. */
void copy_job_pump(struct copy_job *job);
/* Record the first error ("OP on IMAGE at offset N: strerror[: detail]";
 * offset < 0 omits "at offset") and start draining. */
void copy_job_fail(struct copy_job *job, const char *op, struct image *img,
                   int64_t offset, int err);
/* Same with a ready-made message. */
void copy_job_fail_msg(struct copy_job *job, int err, const char *msg);
/* Copy into `out` (at most `max`) the contiguous prefix of a block-status
 * answer asked at `asked`, clipped to the job's size.  Returns how many;
 * 0 fails the job ("OP on IMAGE at offset N: backend returned no usable
 * extent"). */
size_t copy_job_keep_extents(struct copy_job *job, const char *op,
                             struct image *img, uint64_t asked,
                        const struct extent *ext, size_t n,
                        struct extent *out, size_t max);
/* Update the thread-visible progress (under the lock). */
void copy_job_set_state(struct copy_job *job, enum copy_state s);
void copy_job_add_done(struct copy_job *job, uint64_t bytes, uint64_t watermark);
void copy_job_add_verified(struct copy_job *job, uint64_t bytes);
/* Whether request `r` may start writing now under the rate limit
 * (charged if so).  If not, a timer pumps the job when it may. */
bool copy_job_rate_admit(struct copy_job *job, const struct copy_request *r);

/* Give `r` its buffer if it has none (posix_memalign of `stride` bytes,
 * counted in buffer_bytes).  False when out of memory. */
bool copy_job_buffer_get(struct copy_job *job, struct copy_request *r);
/* `r` was just released: free its buffer if the job holds more buffers
 * than its depth allows. */
void copy_job_buffer_trim(struct copy_job *job, struct copy_request *r);
/* A data request completed its cycle (read, written): tell the depth
 * controller; when the depth shrank, free buffers of idle slots. */
void copy_job_depth_cycle(struct copy_job *job);

/* Borrow one op context of `r` for an operation at `offset`. */
struct request_op *copy_request_op_take(struct copy_request *r, uint64_t offset);

/* planner.c */
void planner_init(struct copy_job *job);
enum plan_result { PLAN_RANGE, PLAN_WAIT, PLAN_END };
/* Plan the next range at job->plan.next (aligned).  PLAN_RANGE fills
 * the offset, length and kind and advances; PLAN_WAIT means block status is in
 * flight or the window is full; PLAN_END means everything is planned. */
enum plan_result planner_next(struct copy_job *job, uint64_t *offset,
                              uint64_t *length, enum request_kind *kind);

/* pipeline.c */
/* Fill free slots with planned ranges and issue their reads. */
void pipeline_fill(struct copy_job *job);
/* Issue the writes that the order mode allows now. */
void pipeline_issue_writes(struct copy_job *job);
/* Release READY requests that will never be written (stopping). */
void pipeline_drop_unwritten(struct copy_job *job);
/* True when every planned range was written and retired. */
bool pipeline_finished(const struct copy_job *job);

/* verify.c */
void verify_start(struct copy_job *job);
/* Skip ranges both images report as zeroes, ask block status when a side's
 * answer is used up, and issue more compare reads; returns true when the
 * pass is complete (nothing in flight). */
bool verify_pump(struct copy_job *job);

#endif
