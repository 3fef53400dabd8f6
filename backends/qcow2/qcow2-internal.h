/* qcow2-internal.h — shared state and helpers of the qcow2 format layer.
 *
 * Layout of the layer (one concern per file):
 *   qcow2-header.c   parse + validate the header cluster; encode a header
 *   qcow2-open.c     qcow2_probe, qcow2_open, backing chain, close, vtable
 *   qcow2-proto.c    clipped / block-aligned async I/O on the protocol image
 *   qcow2-l2cache.c  bounded LRU cache of L2 tables, shared async fills
 *   qcow2-map.c      classify guest clusters from L1/L2 entries
 *   qcow2-read.c     read (normal, zero, compressed, subclusters, backing)
 *   qcow2-status.c   block_status
 *   qcow2-compress.c raw deflate/inflate, compression worker threads
 *   qcow2-write.c    write / write_zeroes (allocation in arrival order)
 *   qcow2-wcompress.c compressed writes, committed in submission order
 *   qcow2-refcount.c in-memory refcounts, metadata commit (flush, close)
 *   qcow2-create.c   qcow2_create
 *
 * Everything here runs on the image's loop thread except the compression
 * workers (qcow2-compress.c), which only touch their own job structs and
 * hand results back with loop_post.
 */
#ifndef IMGFS_QCOW2_INTERNAL_H
#define IMGFS_QCOW2_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/qcow2.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)        /* same limit as qemu */
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)   /* same limit as qemu */
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_CHAIN_DEPTH 64
#define QCOW2_MAX_SNAPSHOTS 65536

#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN       0x1full

#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_DATA_FILE      0x44415441u

/* L1/L2 entry bits. */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ull
#define QCOW2_L1_RESERVED      0x7f000000000001ffull
#define QCOW2_SUBCLUSTERS      32

/* The decoded, validated header. */
struct qcow2_header {
    uint32_t version;
    uint64_t backing_offset;
    uint32_t backing_len;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t reftable_offset;
    uint32_t reftable_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompat;
    uint64_t compat;
    uint64_t autoclear;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    bool extended_l2;
    char backing_name[QCOW2_MAX_BACKING_NAME + 1];   /* "" if none */
    char backing_format[32];                        /* "" if not given */
};

/* Parse and validate a qcow2 header.  `buf` holds the first `len` bytes of
 * the image, where len = min(cluster size, file_size) (callers learn the
 * cluster size from qcow2_header_cluster_bits first).  `file_size` is the
 * size of the protocol image, used to check that tables lie inside it.
 * Returns 0, or -EINVAL/-ENOTSUP with `err` naming the offending field. */
int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                       struct qcow2_header *h, struct errmsg *err);

/* From the first bytes (>= 24) of an image: its cluster_bits, validated to
 * be 9..21 and the magic/version checked.  Returns cluster_bits or -errno
 * with `err` set. */
int qcow2_header_cluster_bits(const uint8_t *buf, size_t len,
                              struct errmsg *err);

/* Number of L1 entries needed to map `size` bytes. 0 on overflow-safe
 * computation always (size is limited by the caller). */
uint64_t qcow2_l1_entries_needed(uint64_t size, uint32_t cluster_bits,
                                 bool extended_l2);

/* Encode a v3 header (with backing name and backing-format extension if
 * set in h) into `buf` of `len` bytes (one cluster, zeroed by the caller).
 * Returns 0 or -EINVAL if it does not fit. */
int qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf,
                        size_t len);

/* Big-endian accessors. */
static inline uint64_t qcow2_be64(const uint8_t *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) |
           ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32) |
           ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
           ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}
static inline uint32_t qcow2_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static inline void qcow2_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline void qcow2_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* ---- L2 cache (qcow2-l2cache.c) ---------------------------------------- */

struct qcow2_state;
struct qcow2_l2_slot;

/* Someone waiting for an L2 table.  `fn` runs on the loop thread with the
 * slot (valid only during the call unless the caller marks it used) or an
 * error. */
struct qcow2_l2_waiter {
    void (*fn)(struct qcow2_l2_waiter *w, int err, struct qcow2_l2_slot *slot);
    uint64_t offset;        /* L2 table offset in the file */
    bool is_new;            /* fresh zeroed table (writer), no read */
    struct qcow2_l2_waiter *next;
};

enum qcow2_slot_state { SLOT_FREE, SLOT_LOADING, SLOT_READY };

struct qcow2_l2_slot {
    enum qcow2_slot_state state;
    uint64_t offset;
    uint8_t *table;         /* one cluster, big-endian entries as on disk */
    bool dirty;
    bool writing;
    uint64_t gen;           /* bumped on every modification */
    uint64_t lru;
    unsigned pins;          /* users across async steps: not evictable */
    struct qcow2_l2_waiter *waiters;    /* LOADING: who waits for it */
    struct qcow2_state *s;
};

struct qcow2_l2cache {
    struct qcow2_l2_slot *slots;
    unsigned nslots;
    uint64_t tick;
    struct qcow2_l2_waiter *slot_waiters;   /* waiting for a free slot */
    unsigned writebacks;                    /* in flight */
    void (*idle_cb)(struct qcow2_state *s); /* after a writeback finishes */
};

int qcow2_l2cache_init(struct qcow2_state *s);
void qcow2_l2cache_free(struct qcow2_state *s);

/* Get the L2 table at `w->offset`.  Returns 1 with *out set when it is in
 * the cache now (w unused), 0 when `w` was queued (w->fn is called later,
 * never from inside this call), or -errno. */
int qcow2_l2_get(struct qcow2_state *s, struct qcow2_l2_waiter *w,
                 struct qcow2_l2_slot **out);

/* Entry accessors: entry i of a table (first word, and the subcluster
 * bitmap of extended L2 entries, 0 otherwise). */
uint64_t qcow2_l2_entry(struct qcow2_state *s, const struct qcow2_l2_slot *slot,
                        uint64_t i);
uint64_t qcow2_l2_bitmap(struct qcow2_state *s,
                         const struct qcow2_l2_slot *slot, uint64_t i);
void qcow2_l2_set(struct qcow2_state *s, struct qcow2_l2_slot *slot,
                  uint64_t i, uint64_t entry);

/* Start writing back every dirty table not already being written.
 * Returns 0 or -ENOMEM.  cache.idle_cb runs after each writeback; the
 * caller re-checks qcow2_l2cache_clean() there. */
int qcow2_l2cache_start_flush(struct qcow2_state *s);

/* True when no table is dirty and no writeback is in flight. */
bool qcow2_l2cache_clean(struct qcow2_state *s);

/* ---- cluster classification (qcow2-map.c) ------------------------------ */

enum qcow2_kind {
    QK_UNALLOC,     /* go to backing, else zeroes */
    QK_ZERO,        /* reads as zeroes */
    QK_DATA,        /* host_offset valid */
    QK_COMPRESSED,  /* comp_offset/comp_len valid */
};

struct qcow2_mapping {
    enum qcow2_kind kind;
    uint64_t host_offset;   /* of the guest byte asked for (QK_DATA) */
    uint64_t comp_offset;   /* compressed data start (QK_COMPRESSED) */
    uint64_t comp_len;      /* bytes to read (to end of last sector) */
    uint64_t length;        /* bytes from the asked offset with this kind,
                               within the same cluster (within the same
                               L2 span when there is no L2 table) */
};

/* Classify guest offset `off` using an L2 table (NULL: L1 entry is 0).
 * Validates the entry (alignment, reserved bits, range).  Returns 0 or
 * -EINVAL with image_set_error naming the entry. */
int qcow2_map(struct qcow2_state *s, const struct qcow2_l2_slot *slot,
              uint64_t off, struct qcow2_mapping *m);

/* L1 lookup for guest offset `off`: 0 and *l2_offset (0 if unallocated),
 * or -EINVAL with the image error set for a bad L1 entry. */
int qcow2_l1_lookup(struct qcow2_state *s, uint64_t off, uint64_t *l2_offset);

/* ---- protocol I/O (qcow2-proto.c) -------------------------------------- */

/* Read [off, off+len) of the protocol image.  Bytes past its end read as
 * zeroes; unaligned requests on block devices go through a bounce buffer.
 * Completes later, never inside the call. */
void qcow2_proto_read(struct qcow2_state *s, void *buf, uint64_t off,
                      size_t len, image_io_cb cb, void *opaque);

/* The same for any image `p` below this layer (e.g. the backing file). */
void qcow2_read_clipped(struct qcow2_state *s, struct image *p, void *buf,
                        uint64_t off, size_t len, image_io_cb cb,
                        void *opaque);

/* Write [off, off+len) to the protocol image.  Must be aligned to the
 * protocol block size (the writer keeps its allocations aligned). */
void qcow2_proto_write(struct qcow2_state *s, const void *buf, uint64_t off,
                       size_t len, image_io_cb cb, void *opaque);

/* ---- compression (qcow2-compress.c) ------------------------------------ */

/* Inflate raw deflate data `in` into exactly `out_len` bytes.  Returns 0 or
 * -EIO if the stream is corrupt or short. */
int qcow2_inflate(const uint8_t *in, size_t in_len, uint8_t *out,
                  size_t out_len);

/* Deflate `in` into `out` (capacity out_cap).  Returns the compressed
 * length, or 0 if it does not fit (the caller then stores it plain). */
size_t qcow2_deflate(const uint8_t *in, size_t in_len, uint8_t *out,
                     size_t out_cap);

struct qcow2_cjob;
struct qcow2_workers;

/* A compression job: `in` (cluster_size bytes) deflated into `out` by a
 * worker thread; then `done(job)` runs on the loop thread. */
struct qcow2_cjob {
    const uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_cap;
    size_t out_len;         /* 0: did not shrink */
    void (*done)(struct qcow2_cjob *job);
    void *opaque;
    struct loop *loop;
    struct qcow2_cjob *next;
};

struct qcow2_workers *qcow2_workers_new(unsigned n);
/* Queue a job (loop thread).  Returns 0 or -ENOMEM. */
int qcow2_workers_submit(struct qcow2_workers *w, struct qcow2_cjob *job);
/* Stop and join the threads (queued jobs are finished first). */
void qcow2_workers_free(struct qcow2_workers *w);

/* ---- writer (qcow2-write.c, qcow2-refcount.c) -------------------------- */

struct qcow2_writer;

void qcow2_write(struct image *img, const void *buf, uint64_t offset,
                 size_t len, image_io_cb cb, void *opaque);
void qcow2_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                        unsigned flags, image_io_cb cb, void *opaque);
void qcow2_flush(struct image *img, image_io_cb cb, void *opaque);

/* Tear down the writer: commit metadata synchronously (spinning the loop).
 * Returns 0 or -errno with the image error set. */
int qcow2_writer_close(struct qcow2_state *s);

/* ---- the image state ---------------------------------------------------- */

struct qcow2_state {
    struct image *img;
    struct image *proto;
    struct image *backing;      /* NULL if none */
    struct qcow2_header h;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_entry_bytes;    /* 8, or 16 with extended L2 */
    uint64_t l2_entries;        /* per table */
    uint64_t *l1;               /* host-endian, l1_entries of them */
    uint64_t l1_entries;        /* loaded (<= header l1_size) */
    uint64_t file_size;         /* protocol size at open (reader checks) */
    uint8_t *zbuf;              /* one cluster of decompressed data */
    uint64_t zbuf_offset;       /* compressed offset cached in zbuf, or ~0 */
    bool zbuf_busy;
    struct qcow2_l2cache cache;
    struct qcow2_writer *w;     /* non-NULL for images we create */
};

/* The vtable entries implemented across files. */
void qcow2_read(struct image *img, void *buf, uint64_t offset, size_t len,
                image_io_cb cb, void *opaque);
void qcow2_block_status(struct image *img, uint64_t offset, uint64_t length,
                        image_extents_cb cb, void *opaque);

/* Build the image shell around a state whose header fields, cluster
 * geometry and l1 are set; sets up the cache.  Returns the image or NULL
 * (ENOMEM).  Shared by open and create. */
struct image *qcow2_image_new(struct qcow2_state *s, const char *name);

/* Free the state (not the proto/backing, not the image shell). */
void qcow2_state_free(struct qcow2_state *s);

/* Fill geometry fields (cluster_size, l2 sizes) from s->h. */
void qcow2_set_geometry(struct qcow2_state *s);

/* Open s->h.backing_name (resolved against s->proto->name, format from
 * s->h.backing_format) read-only into s->backing, with chain depth and
 * loop checks.  Returns 0 or -errno with `err` set. */
int qcow2_open_backing(struct qcow2_state *s, struct errmsg *err);

/* Complete cb(opaque, err) on a later loop iteration, never inside the
 * calling request: image_complete_later on the qcow2 image (cannot fail). */
void qcow2_complete(struct qcow2_state *s, image_io_cb cb, void *opaque,
                    int err);

#endif
