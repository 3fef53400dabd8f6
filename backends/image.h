/* image.h — the one abstraction for "an image": a byte array of fixed
 * size reached asynchronously.
 *
 * An image is either a protocol (file, nfs, iscsi, null, zero) or a format
 * (qcow2) stacked on a protocol image.  "raw" is simply the protocol image.
 *
 * Threading: an image belongs to one loop (image->loop).  Every operation
 * below must be called on that loop's thread, and every completion callback
 * runs on it.  (An idle protocol image may change loops once: loop_adopt
 * and image_move_loop, below.)  A completion never runs inside the call that issued the
 * request, not even on a failure to allocate memory: backends that finish
 * at once (errors included) defer with image_complete_later or
 * image_extents_later, which cannot fail.  So callers may issue requests
 * from inside completion callbacks without recursion, and may set up
 * their own state after the call returns.
 *
 * Errors: completion callbacks get `err` = 0 or a negative errno.  When a
 * backend knows more than the errno (a SCSI sense, an NFS status text), it
 * stores it with image_set_error() before calling back; the caller names the
 * operation, the image and the offset and appends image->last_error.
 *
 * Alignment: offsets and lengths of read/write/write_zeroes must be
 * multiples of image->block_size, except that the last request may end at
 * image->size.  Protocols with byte granularity have block_size 1.
 * Lengths are at most image->max_request for read/write (0: no limit);
 * write_zeroes and block_status take any length.
 */
#ifndef IMGFS_IMAGE_H
#define IMGFS_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errmsg.h"
#include "image-id.h"
#include "loop.h"

struct image;

/* What a byte range reads as, and whether it is allocated. */
enum extent_type {
    EXTENT_DATA = 0,    /* allocated; contents must be read */
    EXTENT_ZERO = 1,    /* allocated (or unknown) but reads as zeroes */
    EXTENT_HOLE = 2,    /* unallocated; reads as zeroes */
    /* Unallocated in this layer: the contents belong to a backing file
     * that was not opened (image_open_opts.no_backing); reads of the
     * range return zeroes here.  Unlike EXTENT_ZERO (which in a layer
     * SHADOWS the backing's data) and EXTENT_HOLE, it does not say what
     * the range reads as in the full chain.  Only qcow2 images opened with
     * no_backing report it; copies skip it with
     * copy_options.skip_backing, else treat it as zeroes like a hole. */
    EXTENT_BACKING = 3,
};

struct extent {
    uint64_t offset;
    uint64_t length;
    enum extent_type type;
};

/* Called when a read, write, write_zeroes or flush finishes. */
typedef void (*image_io_cb)(void *opaque, int err);

/* What image_read_or_zeroes completes with (instead of 0) when the range
 * read as zeroes and the buffer was left as it was. */
#define IMAGE_READ_ZEROES 1

/* Most extents one block_status answer holds (callers size their caches
 * by it; copier/ keeps at most this many per answer). */
#define IMAGE_MAX_EXTENTS 64

/* Called when block_status finishes.  On success (err == 0) `ext` holds
 * `n` contiguous extents, 1 <= n <= IMAGE_MAX_EXTENTS, starting exactly at
 * the requested offset, not extending past offset+length or image->size;
 * they may cover less than was asked (callers ask again for the rest).
 * On failure ext is NULL and n is 0.  The array is only valid during the
 * call. */
typedef void (*image_extents_cb)(void *opaque, int err,
                                 const struct extent *ext, size_t n);

/* write_zeroes flags */
#define IMAGE_ZERO_MAY_UNMAP 1u     /* may deallocate (thin LUN, hole) */

struct image_ops {
    const char *name;   /* "file", "nfs", "iscsi", "null", "zero", "qcow2" */

    /* Read `len` bytes at `offset` into `buf`.  `buf` must stay valid (and
     * untouched by the caller) until the callback: the backend may fill it
     * at any time before then, from another thread (file workers).  Its
     * contents are unspecified when the read fails.  Reads past
     * image->size are an error (-EINVAL); callers clip. */
    void (*read)(struct image *img, void *buf, uint64_t offset, size_t len,
                 image_io_cb cb, void *opaque);

    /* Like read, for a caller that takes "zeroes" for an answer: where the
     * backend sees, before copying the data into `buf`, that the whole
     * range reads as zeroes, it may leave `buf` as it was and complete
     * with IMAGE_READ_ZEROES instead of 0 (NFS: a READ reply of zeroes is
     * not copied out of libnfs's buffer).  May be NULL: image_read_or_zeroes
     * then reads. */
    void (*read_or_zeroes)(struct image *img, void *buf, uint64_t offset,
                           size_t len, image_io_cb cb, void *opaque);

    /* Write `len` bytes from `buf` at `offset`.  `buf` must stay valid until
     * the callback.  Writes past image->size fail with -ENOSPC unless the
     * image can grow (NFS/local files opened as growable). */
    void (*write)(struct image *img, const void *buf, uint64_t offset,
                  size_t len, image_io_cb cb, void *opaque);

    /* Make `len` bytes at `offset` read as zeroes.  With
     * IMAGE_ZERO_MAY_UNMAP the backend may deallocate (punch a hole, UNMAP);
     * without it the range stays allocated.  Backends with no native
     * support write zero buffers themselves. */
    void (*write_zeroes)(struct image *img, uint64_t offset, uint64_t len,
                         unsigned flags, image_io_cb cb, void *opaque);

    /* Make completed writes durable (fsync, SYNCHRONIZE CACHE, qcow2
     * metadata commit). */
    void (*flush)(struct image *img, image_io_cb cb, void *opaque);

    /* Describe the allocation of [offset, offset+length), in at most
     * IMAGE_MAX_EXTENTS extents (image_extents_cb).  May be NULL: callers
     * then treat everything as EXTENT_DATA (see image_block_status). */
    void (*block_status)(struct image *img, uint64_t offset, uint64_t length,
                         image_extents_cb cb, void *opaque);

    /* Set the size of a file to `size`: bytes past it are gone, a larger
     * size reads as zeroes up to it; img->size is `size` once the
     * callback reports success.  Writes the caller issued before must
     * have completed.  Only growable files (NFS and local files opened
     * for writing) can; read-only images fail with -EROFS.  May be NULL:
     * image_truncate then answers -ENOTSUP. */
    void (*truncate)(struct image *img, uint64_t size, image_io_cb cb,
                     void *opaque);

    /* Release everything.  No request may be in flight.  Synchronous: may
     * run the loop internally to finish closing (e.g. write qcow2
     * metadata, log out).  Returns 0 or -errno (then image->last_error says
     * why); the image is freed either way. */
    int (*close)(struct image *img);
};

struct image {
    const struct image_ops *ops;
    struct loop *loop;
    char *name;             /* the URL or path the user gave; for messages */
    uint64_t size;          /* bytes */
    uint32_t block_size;    /* I/O granularity in bytes (1, 512, 4096...) */
    size_t max_request;     /* largest read/write length, 0 = unlimited */
    bool read_only;
    bool reads_as_zero;     /* every byte currently reads as zero (new
                             * sparse file, null:, target-is-zero) */
    bool can_unmap;         /* write_zeroes MAY_UNMAP really deallocates */
    struct errmsg last_error;
    struct image_id id;     /* what the image is (image-id.h); filled by
                             * the protocol at open, copied by formats */
    struct image *backing;  /* format layers: the opened backing image
                             * (owned by the layer), NULL when none */
    void *priv;             /* backend state */
};

/* Record a detailed reason for the next failing completion. */
void image_set_error(struct image *img, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Dispatch helpers: call img->ops->X.  image_block_status answers with one
 * EXTENT_DATA extent (deferred) when the backend has no block_status. */
void image_read(struct image *img, void *buf, uint64_t offset, size_t len,
                image_io_cb cb, void *opaque);
/* img->ops->read_or_zeroes, or image_read when the backend has none: the
 * callback's err is 0 (buf holds the data), IMAGE_READ_ZEROES (the range
 * reads as zeroes; buf was not written) or -errno. */
void image_read_or_zeroes(struct image *img, void *buf, uint64_t offset,
                          size_t len, image_io_cb cb, void *opaque);
void image_write(struct image *img, const void *buf, uint64_t offset,
                 size_t len, image_io_cb cb, void *opaque);
void image_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                        unsigned flags, image_io_cb cb, void *opaque);
void image_flush(struct image *img, image_io_cb cb, void *opaque);
void image_block_status(struct image *img, uint64_t offset, uint64_t length,
                        image_extents_cb cb, void *opaque);
/* img->ops->truncate, or -ENOTSUP (deferred) when the image has none. */
void image_truncate(struct image *img, uint64_t size, image_io_cb cb,
                    void *opaque);
int image_close(struct image *img);

/* Allocate an image shell with ops, loop and a copy of `name`; size etc.
 * are filled by the backend.  Returns NULL on ENOMEM. */
struct image *image_alloc(const struct image_ops *ops, struct loop *loop,
                          const char *name);
/* Free the shell (name and struct); for backends' close(). */
void image_free_shell(struct image *img);

/* Complete `cb(opaque, err)` on a later loop iteration, never inside this
 * call (loop thread only).  The one helper for backends whose work
 * finishes immediately, errors included.  It cannot fail: when malloc
 * does, a reserve kept with every image_alloc()ed image is used, and when
 * that is used up too, it waits on the loop thread until memory is back. */
void image_complete_later(struct image *img, image_io_cb cb, void *opaque,
                          int err);

/* The same for a block_status answer: call `cb(opaque, err, ext, n)` on a
 * later loop iteration with a copy of the one extent `*ext` (n = 1) when
 * err is 0, else with NULL and n = 0 (`ext` is then ignored). */
void image_extents_later(struct image *img, image_extents_cb cb,
                         void *opaque, int err, const struct extent *ext);

/* Run image operations synchronously by spinning the image's loop until
 * the completion arrives.  For setup code and tests, never for the data
 * path.  Return 0 or -errno. */
int image_read_sync(struct image *img, void *buf, uint64_t offset, size_t len);
int image_write_sync(struct image *img, const void *buf, uint64_t offset,
                     size_t len);
int image_flush_sync(struct image *img);

/* Hand `img`, opened on another loop whose pollers, timers and calls were
 * just moved onto `loop` by loop_adopt (loop.h), over to `loop`: from now
 * on it belongs to `loop` (see "Threading").  Nothing may be in flight.
 * Only protocol images whose backend keeps no loop pointer besides
 * img->loop can move (nfs, iscsi, null, zero); others (file, qcow2) are
 * refused with -ENOTSUP, unchanged.  Returns 0 or -ENOTSUP. */
int image_move_loop(struct image *img, struct loop *loop);

#endif
