/* readahead.h — the mount's own sequential read-ahead for one open image.
 *
 * Image files are opened with FOPEN_DIRECT_IO: the kernel neither caches
 * their pages nor reads ahead, and every read(2) arrives here as it is
 * (up to 1 MiB).  Going around the page cache saves a copy per byte and
 * the kernel's per-page work (allocation, LRU, invalidation at open),
 * which was most of the cost of `dd if=MOUNT/img`; in exchange this
 * module keeps a sequential reader's next requests in flight on the
 * image, so they are answered from memory.
 *
 * Model: a `struct readahead` belongs to one open image (one node).  Every
 * function below runs on the image's loop thread, except
 * readahead_try_answer, which any thread may call at any time (a FUSE
 * worker answers a read from chunks already there without waking the loop
 * thread: a round trip less per read(2), which small readers such as
 * sha256sum's 32 KiB reads feel most).  It follows up to RA_STREAMS
 * readers.  A read that continues where an earlier read of a stream ended
 * (or falls inside the stream's buffered window) is sequential: the
 * stream then keeps chunks of `chunk` bytes (aligned to `chunk`) read from
 * the image ahead of the reader — its window starts at RA_START_CHUNKS and
 * doubles with every hit up to `max_chunks` — and answers the read from
 * them, at once when they are there, or when they complete.  Any other
 * read is not taken (readahead_read returns false) and the caller reads
 * the image directly; it starts a new stream (replacing the least recently
 * used one) but prefetches nothing yet, so random readers cost nothing.
 *
 * Memory: each stream holds at most `max_chunks` chunks, and all
 * read-ahead objects together at most RA_BUDGET bytes of buffers; when the
 * budget is used up, reads that are not already covered go direct.
 *
 * Coherence: the caller calls readahead_invalidate whenever the image's
 * contents may change other than through reads (a write through the
 * mount, a truncate, a job or copy writing it, a new open of the file —
 * close-to-open).  Chunks in flight at that moment still answer the reads
 * already waiting on them (those reads were concurrent with the change)
 * but no later read.
 *
 * Errors: a chunk that fails answers its waiting reads with the error and
 * is dropped; a later read of the range reads again.
 */
#ifndef IMGFS_FS_READAHEAD_H
#define IMGFS_FS_READAHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct image;
struct readahead;

#define RA_STREAMS 4
#define RA_START_CHUNKS 4u
#define RA_BUDGET (256u * 1024 * 1024)

/* Answer to a read taken by readahead_read.  err = 0 and `iov` (`iovcnt`
 * entries, together exactly the requested size) on success, valid only
 * during the call; else err < 0 and no data.  Runs on the loop thread,
 * possibly inside readahead_read. */
typedef void (*ra_reply_fn)(void *opaque, int err, const struct iovec *iov,
                            int iovcnt);

/* Called (on the loop thread) whenever the last image read of `ra` in
 * flight completed: the owner may now close the image or free `ra`. */
typedef void (*ra_idle_fn)(void *opaque);

/* New read-ahead state for `img` (which must outlive it): chunks of
 * `chunk` bytes (> 0; a multiple of img->block_size), at most `max_chunks`
 * (>= 1) per stream.  Returns NULL when out of memory. */
struct readahead *readahead_new(struct image *img, size_t chunk,
                                unsigned max_chunks, ra_idle_fn idle,
                                void *idle_opaque);

/* Offer the read [offset, offset+size) (size > 0, offset+size <=
 * img->size: the caller clips at the end of the image).  Returns true if
 * it was taken: `reply` is then called exactly once, now or later.
 * Returns false if not (not sequential, not covered and no memory to read
 * ahead, or spanning more than max_chunks chunks): the caller must read it
 * itself.  Never fails otherwise.  A stream's window counts chunks still
 * being read; chunks that left their stream while in flight (see
 * "Coherence") count against RA_BUDGET only.  A chunk whose image read
 * fails before any read waits on it is dropped silently: the next read of
 * the range reads it again. */
bool readahead_read(struct readahead *ra, uint64_t offset, size_t size,
                    ra_reply_fn reply, void *opaque);

/* Any thread.  Answer [offset, offset+size) now if chunks that have
 * finished reading cover all of it: calls reply(opaque, 0, iov, n) before
 * returning (with the object locked: reply must not call back into it)
 * and returns true.  Otherwise returns false and does nothing (no image
 * read).  *refill is set to true when the answer used up a chunk: the
 * caller should then have readahead_refill(ra, offset+size) run on the
 * loop thread, so the reader stays ahead. */
bool readahead_try_answer(struct readahead *ra, uint64_t offset, size_t size,
                          ra_reply_fn reply, void *opaque, bool *refill);

/* Loop thread.  Keep reading ahead of the stream whose reader is at `pos`
 * (after readahead_try_answer asked for it); nothing if there is none. */
void readahead_refill(struct readahead *ra, uint64_t pos);

/* Forget every buffered chunk and every stream (see "Coherence"). */
void readahead_invalidate(struct readahead *ra);

/* Image reads of `ra` in flight (the image must stay open while > 0). */
unsigned readahead_inflight(struct readahead *ra);

/* Bytes of chunk buffers held by all read-ahead objects (for tests). */
size_t readahead_bytes_total(void);

/* Free `ra`.  Precondition: readahead_inflight(ra) == 0 (then no read is
 * waiting either). */
void readahead_free(struct readahead *ra);

#endif
