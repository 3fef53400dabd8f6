/* fake-image.h — an in-memory image for engine tests (a test double of the
 * image vtable in backends/image.h).
 *
 * Contents live in sparse 64 KiB pages, so a 1 TiB fake with a few data
 * extents costs a few pages.  Every operation completes later on the loop:
 * after a random number of loop iterations and/or a random number of
 * milliseconds (loop timer), or a scripted latency, so completions arrive
 * out of order.  Reads copy data out and writes store it when the
 * operation completes.
 *
 * Scripted behaviour: an extent map for block_status (gaps read as DATA),
 * at most N extents per answer, one injected error (op + offset), one
 * corrupted byte on write, block size / max_request checks (violations
 * fail with -EINVAL and are counted).  Counters record concurrency, the
 * write issue order and block-status reach.
 */
#ifndef IMGFS_TEST_FAKE_IMAGE_H
#define IMGFS_TEST_FAKE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/image.h"

enum fake_op {
    FAKE_READ,
    FAKE_WRITE,
    FAKE_WRITE_ZEROES,
    FAKE_FLUSH,
    FAKE_BLOCK_STATUS,
};

struct fake_config {
    uint64_t size;
    uint32_t block_size;            /* 0 → 1 */
    size_t max_request;             /* 0: unlimited */
    bool read_only;
    bool reads_as_zero;
    bool no_block_status;           /* ops->block_status = NULL */
    /* read_or_zeroes answers IMAGE_READ_ZEROES (buffer untouched) for a
     * range that is all zero; off: it reads like read */
    bool answers_zeroes;
    unsigned max_extents_per_reply; /* 0: unlimited */
    unsigned max_delay_rounds;      /* each op: 0..N extra loop iterations */
    unsigned max_delay_ms;          /* each op: 0..N ms on a loop timer */
    unsigned seed;
    /* Scripted latency in ms (overrides the random delays when >= 0). */
    int (*latency)(void *opaque, enum fake_op op, uint64_t offset,
                   uint64_t len);
    void *latency_opaque;
    /* Lane model (lanes 0: off; overrides the delays above for reads,
     * writes and zero writes): the image serves operations on `lanes`
     * parallel lanes, like a server with that many workers.  An operation
     * takes the lane that frees first, waits for it, then holds it for
     * lane_latency_us + length / lane_bytes_per_sec (0: no transfer time)
     * and completes on a loop timer (ms resolution).  Tests may change
     * these three fields of f->cfg while ops run; lanes <= FAKE_MAX_LANES. */
    unsigned lanes;
    unsigned lane_latency_us;
    uint64_t lane_bytes_per_sec;
};

#define FAKE_MAX_LANES 1024u

/* One target operation as issued. */
struct fake_log_entry {
    enum fake_op op;
    uint64_t offset, length;
    unsigned flags;
};

struct fake_stats {
    unsigned reads_inflight, writes_inflight;   /* writes incl. zeroes */
    unsigned max_reads_inflight, max_writes_inflight;
    unsigned other_inflight;                    /* flush, block status */
    uint64_t reads, writes, zero_ops, flushes, block_status_calls;
    uint64_t bytes_read, bytes_written, bytes_zeroed;
    uint64_t zero_answers;                      /* IMAGE_READ_ZEROES sent */
    uint64_t max_block_status_end;              /* offset + length asked */
    uint64_t misaligned;                        /* ops refused: alignment */
    uint64_t too_long;                          /* ops over max_request */
    struct fake_log_entry *log;                 /* writes + zero ops */
    size_t log_len, log_cap;
};

struct fake_image {
    struct image *img;
    struct fake_config cfg;
    struct fake_stats stats;
    /* Injected error: the first `error_count` ops of kind `error_op`
     * touching `error_offset` fail with `error_errno` (and image_set_error
     * with `error_detail` if set).  error_count 0: disarmed. */
    enum fake_op error_op;
    uint64_t error_offset;
    int error_errno;
    unsigned error_count;
    const char *error_detail;
    /* A write covering this byte stores it inverted (-1: never). */
    int64_t corrupt_offset;
    /* Called when an op is issued (before it is queued). */
    void (*on_issue)(void *opaque, struct fake_image *f, enum fake_op op,
                     uint64_t offset, uint64_t len);
    void *on_issue_opaque;
    /* private */
    struct extent *map;
    size_t map_len;
    unsigned char ***pages;         /* [l1][l2] → 64 KiB page or NULL */
    uint64_t *lane_free_ns;         /* lane model: when each lane frees */
    size_t l1_len;
    uint64_t rng;
};

/* Create a fake on `loop`.  Returns NULL on ENOMEM. */
struct fake_image *fake_image_new(struct loop *loop, const char *name,
                                  const struct fake_config *cfg);

/* Close the image (ops->close) — fails with -EBUSY if ops are in flight. */
int fake_image_close(struct fake_image *f);

/* Set the block-status map (copied; sorted, non-overlapping extents). */
int fake_image_set_map(struct fake_image *f, const struct extent *map,
                       size_t n);

/* Direct, synchronous access to the contents (no counters, no latency). */
void fake_image_poke(struct fake_image *f, uint64_t offset, const void *buf,
                     size_t len);
void fake_image_peek(struct fake_image *f, uint64_t offset, void *buf,
                     size_t len);
/* Number of 64 KiB pages holding data. */
size_t fake_image_pages(const struct fake_image *f);

/* The fake behind an image made by fake_image_new. */
struct fake_image *fake_of(struct image *img);

#endif
