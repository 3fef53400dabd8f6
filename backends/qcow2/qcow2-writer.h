/* qcow2-writer.h — state of the write path for images we create.
 *
 * Only images made by qcow2_create are writable.  Their layout grows by
 * appending: host clusters are handed out from `alloc_end` in the order
 * writes arrive, so a copy that writes in offset order produces a file
 * laid out in guest order.  Refcounts live in memory (2 bytes per host
 * cluster) and are written, with the dirty L2 tables and the L1 table, by
 * a commit (flush and close).
 *
 * Crash consistency (documented choice): qcow2_create writes the header
 * with the incompatible "dirty" bit set and an all-zero L1 table.  Only a
 * commit that has written and flushed every L2 table, refcount block, the
 * refcount table and the L1 table rewrites the header without the dirty
 * bit.  The first metadata change after a commit sets the bit again (the
 * write that caused it completes only after that header write).  Close
 * commits the metadata too (so what was written stays reachable) but
 * keeps the dirty bit when write requests arrived after the last flush,
 * and a failed data write makes every later commit fail.  So a copy that
 * is interrupted, cancelled or failed — the engine flushes only after a
 * complete copy — leaves an image that `qemu-img info` reports as
 * "cleanly shut down: no", never one that looks complete.
 */
#ifndef IMGFS_QCOW2_WRITER_H
#define IMGFS_QCOW2_WRITER_H

#include "qcow2-internal.h"

struct wop;

/* One queued compression of a full cluster, committed in submit order. */
struct wcomp {
    struct qcow2_cjob job;
    struct qcow2_state *s;
    struct wop *op;                 /* NULL for a staged cluster */
    bool owns_in;                   /* job.in is freed with it */
    struct qcow2_l2_slot *slot;     /* pinned until committed */
    uint64_t l2_index;
    uint64_t guest;
    bool done;
    struct wcomp *next;             /* commit FIFO */
    struct wcomp *inext, *iprev;    /* all until their data is written */
};

/* A write or write_zeroes request. */
struct wop {
    struct qcow2_state *s;
    const uint8_t *buf;             /* NULL: write zeroes */
    uint64_t off, len, cursor;
    uint64_t first_cluster, last_cluster;
    image_io_cb cb;
    void *opaque;
    int pending;
    int err;
    struct qcow2_l2_waiter w;
    /* run of writes being merged */
    uint64_t run_host;
    const uint8_t *run_buf;
    uint64_t run_len;
    uint64_t seq;                   /* arrival number */
    struct wop *next;               /* queue or active list */
};

struct qcow2_flush_waiter {
    uint64_t seq;                   /* ops with a lower seq come first */
    image_io_cb cb;
    void *opaque;
    struct qcow2_flush_waiter *next;
};

struct qcow2_writer {
    uint64_t alloc_end;             /* next free host cluster (bytes) */
    uint64_t comp_pos;              /* next free byte for compressed data */
    uint64_t comp_end;              /* end of clusters reserved for it */
    uint16_t *rc;                   /* refcount per host cluster */
    uint64_t rc_len;                /* entries in rc */
    uint64_t rc_cap;
    uint64_t rc_dirty_from;         /* lowest cluster changed since commit */
    uint64_t *refblocks;            /* host offset per reftable entry */
    uint64_t reftable_entries;      /* capacity */
    bool l1_dirty;
    bool header_clean_on_disk;      /* dirty bit cleared by a commit */
    bool meta_changed;              /* since the last commit */
    bool writes_since_flush;        /* requests after the last flush */
    bool closing;                   /* the commit is close's */
    int err;                        /* sticky metadata error */
    uint8_t *zeroes;                /* one cluster of zeroes */
    bool compress;
    struct qcow2_workers *workers;
    struct wcomp *comp_head, *comp_tail;
    struct wcomp *comp_inflight;    /* submitted, data not yet written */
    unsigned bg_pending;            /* op-less compressions in flight */
    void *read_waiters;             /* reads waiting for writes (rd list) */
    uint8_t *staged;                /* staging cluster, or NULL */
    uint64_t staged_guest;
    struct qcow2_l2_slot *staged_slot;  /* pinned while staged */
    struct wop *queue_head, *queue_tail;    /* waiting for setup */
    struct wop *active;             /* set up, I/O in flight */
    bool setup_running;
    struct wop *setup_op;           /* during setup(): the op set up */
    uint64_t next_seq;
    unsigned meta_inflight;         /* header/other metadata writes */
    /* commit state machine */
    bool committing;
    int commit_step;
    int commit_err;
    unsigned commit_pending;
    struct qcow2_flush_waiter *flush_waiters;   /* current commit */
    struct qcow2_flush_waiter *flush_queue;     /* next commit */
};

/* Allocate `n` contiguous host clusters at the end; refcounts set to `rc`
 * (1 for data and metadata, 0 for compressed areas counted per use).
 * Returns the host offset, or 0 with s->w->err set on failure. */
uint64_t qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint16_t rc);

/* Add `delta` (+1/-1) to the refcounts of the host clusters touched by
 * [off, off+len).  Returns 0 or -ENOSPC/-ENOMEM. */
int qcow2_rc_adjust(struct qcow2_state *s, uint64_t off, uint64_t len,
                    int delta);

/* Note a metadata change; sets the on-disk dirty bit if it was clear. */
void qcow2_meta_changed(struct qcow2_state *s);

/* Compression: queue the full cluster at guest offset `guest` for
 * deflate; the L2 entry in `slot` (pinned meanwhile) is set when the
 * result is committed in submit order.  `in` is cluster_size bytes (or
 * up to the image end), valid until `op` completes, or taken over when
 * `owns_in`.  `op` may be NULL (staged clusters flushed by a commit).
 * Returns 0 or -ENOMEM. */
int qcow2_wcomp_submit(struct qcow2_state *s, struct wop *op,
                       struct qcow2_l2_slot *slot, uint64_t guest,
                       const uint8_t *in, bool owns_in);

/* With compression, a partial write into an empty cluster is collected
 * in a staging buffer (the engine splits clusters around zero runs) and
 * compressed as a whole when a write moves on to another cluster or at
 * the next commit.  Submit the staged cluster now, if any (op may be
 * NULL).  Returns 0 or -errno. */
int qcow2_unstage(struct qcow2_state *s, struct wop *op);

/* Sub-I/O bookkeeping for a write op. */
void qcow2_wop_sub_done(void *opaque, int err);

/* True if a write to [off, off+len) is queued, in flight or being
 * compressed, so a read of it must wait.  Submits a staged cluster in
 * the range for compression (reads never see staging buffers). */
bool qcow2_writer_busy(struct qcow2_state *s, uint64_t off, uint64_t len);

/* Restart reads that waited for writes (qcow2-read.c). */
void qcow2_read_waiters_retry(struct qcow2_state *s);

/* Kick the write queue (after an op completed or a commit finished). */
void qcow2_wqueue_kick(struct qcow2_state *s);

/* Write the header cluster (dirty bit as given) asynchronously. */
void qcow2_write_header(struct qcow2_state *s, bool dirty, image_io_cb cb,
                        void *opaque);

/* Start a commit if one is wanted and none runs; see qcow2-refcount.c. */
void qcow2_commit_maybe_start(struct qcow2_state *s);

#endif
