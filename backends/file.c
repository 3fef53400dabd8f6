/* file.c — the "file" protocol: local regular files and block devices.
 *
 * Every blocking system call (pread, pwrite, fallocate, fdatasync, lseek)
 * runs on a small pool of worker threads (file-workers.h); completions come
 * back to the loop thread with loop_post, so NFS and iSCSI connections on
 * the same loop keep flowing while the disk works.
 *
 * Regular files have block_size 1 and report holes through
 * SEEK_DATA/SEEK_HOLE; block devices use their logical sector size
 * (BLKSSZGET) and size (BLKGETSIZE64) and report everything as data.
 * Opening rules for targets follow image-open.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file-workers.h"
#include "protocols.h"

/* Worker threads per open file: enough to keep a disk queue busy while the
 * engine's requests overlap, few enough for a 2-core machine. */
#define FILE_WORKER_THREADS 4
/* Most extents one block_status call reports (image.h's limit). */
#define FILE_MAX_EXTENTS IMAGE_MAX_EXTENTS

struct file_priv {
    int fd;
    bool is_blockdev;
    bool growable;
    struct file_workers *workers;
    /* Learned on first use, read and written by workers. */
    atomic_bool no_punch_hole;
    atomic_bool no_zero_range;
    atomic_bool no_blkzeroout;
};

enum file_op { OP_READ, OP_WRITE, OP_ZERO, OP_FLUSH, OP_STATUS,
               OP_TRUNCATE };

/* One request.  Fields above `err` are set on the loop thread before
 * submission; `err`, `detail` and the extents are set by the worker. */
struct file_req {
    struct file_work work;
    struct image *img;
    struct file_priv *fp;
    enum file_op op;
    void *buf;
    uint64_t offset;
    uint64_t len;
    uint64_t end_limit;     /* OP_STATUS: end of the range, clipped */
    unsigned flags;
    image_io_cb cb;
    image_extents_cb ecb;
    void *opaque;
    int err;
    char detail[256];       /* why, copied into img->last_error */
    size_t n_ext;
    struct extent ext[];    /* OP_STATUS only: FILE_MAX_EXTENTS */
};

static const char zero_block[1 << 16];

/* ---- worker side ---------------------------------------------------- */

/* Record failure `err` of system call `what` at `offset` (UINT64_MAX: no
 * offset) for req_done to hand to image_set_error. */
static void req_fail(struct file_req *r, int err, const char *what,
                     uint64_t offset)
{
    r->err = err;
    /* The caller adds the operation, offset and strerror(err); say which
     * system call failed where. */
    if (offset == UINT64_MAX)
        snprintf(r->detail, sizeof r->detail, "%s: %s", r->img->name, what);
    else
        snprintf(r->detail, sizeof r->detail, "%s: %s at offset %" PRIu64,
                 r->img->name, what, offset);
}

static int pread_full(struct file_req *r)
{
    uint8_t *p = r->buf;
    uint64_t done = 0;
    while (done < r->len) {
        size_t chunk = r->len - done > (1u << 30) ? (1u << 30)
                                                   : (size_t)(r->len - done);
        ssize_t n = pread(r->fp->fd, p + done, chunk, (off_t)(r->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            req_fail(r, -errno, "pread", r->offset + done);
            return r->err;
        }
        if (n == 0) {
            /* The file became shorter than the image size behind our
             * back; never hand out made-up bytes. */
            req_fail(r, -EIO, "pread (unexpected end of file)",
                     r->offset + done);
            return r->err;
        }
        done += (uint64_t)n;
    }
    return 0;
}

/* Write `len` bytes from `p` (or zeroes when p is NULL) at `offset`. */
static int pwrite_full(struct file_req *r, const uint8_t *p, uint64_t offset,
                       uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        uint64_t left = len - done;
        size_t chunk;
        const void *src;
        if (p) {
            chunk = left > (1u << 30) ? (1u << 30) : (size_t)left;
            src = p + done;
        } else {
            chunk = left > sizeof zero_block ? sizeof zero_block : (size_t)left;
            src = zero_block;
        }
        ssize_t n = pwrite(r->fp->fd, src, chunk, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            req_fail(r, -errno, "pwrite", offset + done);
            return r->err;
        }
        if (n == 0) {
            req_fail(r, -EIO, "pwrite (wrote nothing)", offset + done);
            return r->err;
        }
        done += (uint64_t)n;
    }
    return 0;
}

static bool unsupported(int e)
{
    return e == EOPNOTSUPP || e == ENOTSUP || e == ENOSYS || e == EINVAL ||
           e == ENOTTY;
}

/* Try fallocate(mode) unless `known_missing` says the file system lacks it.
 * Returns 1 if done, 0 if unsupported (and remembers that), or -errno. */
static int try_fallocate(struct file_req *r, int mode, atomic_bool *known_missing,
                         const char *what)
{
    if (atomic_load(known_missing))
        return 0;
    for (;;) {
        if (fallocate(r->fp->fd, mode, (off_t)r->offset, (off_t)r->len) == 0)
            return 1;
        if (errno == EINTR)
            continue;
        if (unsupported(errno)) {
            atomic_store(known_missing, true);
            return 0;
        }
        req_fail(r, -errno, what, r->offset);
        return r->err;
    }
}

static void run_zero(struct file_req *r)
{
    struct file_priv *fp = r->fp;
    uint64_t end = r->offset + r->len;
    int k;

    if (!fp->is_blockdev && fp->growable) {
        /* Extend first by writing the last byte of our own range: unlike
         * ftruncate this never cuts off a concurrent write further out. */
        struct stat st;
        if (fstat(fp->fd, &st) < 0) {
            req_fail(r, -errno, "fstat", r->offset);
            return;
        }
        if ((uint64_t)st.st_size < end &&
            pwrite_full(r, NULL, end - 1, 1) < 0)
            return;
    }
    if (r->flags & IMAGE_ZERO_MAY_UNMAP) {
        k = try_fallocate(r, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          &fp->no_punch_hole, "fallocate(PUNCH_HOLE)");
        if (k != 0)
            return;
    }
    k = try_fallocate(r, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                      &fp->no_zero_range, "fallocate(ZERO_RANGE)");
    if (k != 0)
        return;
    if (fp->is_blockdev && !atomic_load(&fp->no_blkzeroout)) {
        uint64_t range[2] = { r->offset, r->len };
        if (ioctl(fp->fd, BLKZEROOUT, range) == 0)
            return;
        if (!unsupported(errno)) {
            req_fail(r, -errno, "ioctl(BLKZEROOUT)", r->offset);
            return;
        }
        atomic_store(&fp->no_blkzeroout, true);
    }
    pwrite_full(r, NULL, r->offset, r->len);
}

static void add_extent(struct file_req *r, uint64_t start, uint64_t end,
                       enum extent_type type)
{
    r->ext[r->n_ext++] = (struct extent){ start, end - start, type };
}

static void run_status(struct file_req *r)
{
    uint64_t pos = r->offset, end = r->end_limit;
    if (r->fp->is_blockdev) {
        add_extent(r, pos, end, EXTENT_DATA);
        return;
    }
    while (pos < end && r->n_ext < FILE_MAX_EXTENTS) {
        off_t data = lseek(r->fp->fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) {           /* only a hole up to EOF */
                add_extent(r, pos, end, EXTENT_HOLE);
                return;
            }
            if (unsupported(errno)) {       /* no hole support: all data */
                add_extent(r, pos, end, EXTENT_DATA);
                return;
            }
            req_fail(r, -errno, "lseek(SEEK_DATA)", pos);
            return;
        }
        if ((uint64_t)data > pos) {
            uint64_t stop = (uint64_t)data < end ? (uint64_t)data : end;
            add_extent(r, pos, stop, EXTENT_HOLE);
            pos = stop;
            continue;
        }
        off_t hole = lseek(r->fp->fd, (off_t)pos, SEEK_HOLE);
        if (hole < 0) {
            req_fail(r, -errno, "lseek(SEEK_HOLE)", pos);
            return;
        }
        uint64_t stop = (uint64_t)hole > pos && (uint64_t)hole < end
                        ? (uint64_t)hole : end;
        add_extent(r, pos, stop, EXTENT_DATA);
        pos = stop;
    }
}

static void run_req(struct file_work *w)
{
    struct file_req *r = (struct file_req *)w;
    switch (r->op) {
    case OP_READ:
        pread_full(r);
        break;
    case OP_WRITE:
        pwrite_full(r, r->buf, r->offset, r->len);
        break;
    case OP_ZERO:
        run_zero(r);
        break;
    case OP_FLUSH:
        while (fdatasync(r->fp->fd) < 0) {
            if (errno != EINTR) {
                req_fail(r, -errno, "fdatasync", UINT64_MAX);
                break;
            }
        }
        break;
    case OP_STATUS:
        run_status(r);
        break;
    case OP_TRUNCATE:
        while (ftruncate(r->fp->fd, (off_t)r->offset) < 0) {
            if (errno != EINTR) {
                req_fail(r, -errno, "ftruncate", r->offset);
                break;
            }
        }
        break;
    }
}

/* ---- loop side ------------------------------------------------------ */

static void req_done(struct file_work *w)
{
    struct file_req *r = (struct file_req *)w;
    struct image *img = r->img;
    if (r->err)
        image_set_error(img, "%s", r->detail);
    else if ((r->op == OP_WRITE || r->op == OP_ZERO) &&
             r->offset + r->len > img->size)
        img->size = r->offset + r->len;     /* growable file got longer */
    else if (r->op == OP_TRUNCATE)
        img->size = r->offset;
    if (r->op == OP_STATUS)
        r->ecb(r->opaque, r->err, r->err ? NULL : r->ext,
               r->err ? 0 : r->n_ext);
    else
        r->cb(r->opaque, r->err);
    free(r);
}

static struct file_req *req_new(struct image *img, enum file_op op,
                                size_t n_ext)
{
    struct file_req *r = calloc(1, sizeof *r + n_ext * sizeof(struct extent));
    if (!r)
        return NULL;
    r->work.run = run_req;
    r->work.done = req_done;
    r->img = img;
    r->fp = img->priv;
    r->op = op;
    return r;
}

/* Finish a request that never reaches a worker (checked out, empty, no
 * memory): its callback runs later, never inside the call (image.h). */
static void fail_now(struct image *img, image_io_cb cb, void *opaque, int err)
{
    image_complete_later(img, cb, opaque, err);
}

/* Check a read/write/zero range against size and alignment.  Returns 0 or
 * -errno after recording why. */
static int check_range(struct image *img, const char *what, uint64_t offset,
                       uint64_t len, bool writing)
{
    struct file_priv *fp = img->priv;
    uint64_t bs = img->block_size;
    if (writing && img->read_only) {
        image_set_error(img, "%s: %s: opened read-only", img->name, what);
        return -EROFS;
    }
    if (offset % bs || (len % bs && offset + len != img->size)) {
        image_set_error(img, "%s: %s at offset %" PRIu64 " length %" PRIu64
                        ": not aligned to %" PRIu64 " bytes",
                        img->name, what, offset, len, bs);
        return -EINVAL;
    }
    if (offset + len < offset ||
        offset + len > img->size) {
        if (!writing) {
            image_set_error(img, "%s: %s at offset %" PRIu64 " length %"
                            PRIu64 " is past the end (%" PRIu64 " bytes)",
                            img->name, what, offset, len, img->size);
            return -EINVAL;
        }
        if (!fp->growable || offset + len < offset) {
            image_set_error(img, "%s: %s at offset %" PRIu64 " length %"
                            PRIu64 " is past the end (%" PRIu64 " bytes)",
                            img->name, what, offset, len, img->size);
            return -ENOSPC;
        }
    }
    return 0;
}

static void submit_io(struct image *img, enum file_op op, void *buf,
                      uint64_t offset, uint64_t len, unsigned flags,
                      image_io_cb cb, void *opaque)
{
    static const char *const names[] = {
        [OP_READ] = "read", [OP_WRITE] = "write", [OP_ZERO] = "write zeroes",
    };
    int e = check_range(img, names[op], offset, len, op != OP_READ);
    if (e < 0) {
        fail_now(img, cb, opaque, e);
        return;
    }
    if (len == 0) {
        fail_now(img, cb, opaque, 0);
        return;
    }
    struct file_req *r = req_new(img, op, 0);
    if (!r) {
        fail_now(img, cb, opaque, -ENOMEM);
        return;
    }
    r->buf = buf;
    r->offset = offset;
    r->len = len;
    r->flags = flags;
    r->cb = cb;
    r->opaque = opaque;
    file_workers_submit(r->fp->workers, &r->work);
}

static void file_read(struct image *img, void *buf, uint64_t offset,
                      size_t len, image_io_cb cb, void *opaque)
{
    submit_io(img, OP_READ, buf, offset, len, 0, cb, opaque);
}

static void file_write(struct image *img, const void *buf, uint64_t offset,
                       size_t len, image_io_cb cb, void *opaque)
{
    submit_io(img, OP_WRITE, (void *)buf, offset, len, 0, cb, opaque);
}

static void file_write_zeroes(struct image *img, uint64_t offset,
                              uint64_t len, unsigned flags, image_io_cb cb,
                              void *opaque)
{
    submit_io(img, OP_ZERO, NULL, offset, len, flags, cb, opaque);
}

static void file_flush(struct image *img, image_io_cb cb, void *opaque)
{
    if (img->read_only) {
        fail_now(img, cb, opaque, 0);
        return;
    }
    struct file_req *r = req_new(img, OP_FLUSH, 0);
    if (!r) {
        fail_now(img, cb, opaque, -ENOMEM);
        return;
    }
    r->cb = cb;
    r->opaque = opaque;
    file_workers_submit(r->fp->workers, &r->work);
}

static void file_block_status(struct image *img, uint64_t offset,
                              uint64_t length, image_extents_cb cb,
                              void *opaque)
{
    int e = 0;
    struct file_req *r = NULL;
    if (offset >= img->size || length == 0) {
        image_set_error(img, "%s: block status at offset %" PRIu64
                        " length %" PRIu64 ": outside the image (%" PRIu64
                        " bytes)", img->name, offset, length, img->size);
        e = -EINVAL;
    } else if (!(r = req_new(img, OP_STATUS, FILE_MAX_EXTENTS))) {
        e = -ENOMEM;
    }
    if (e) {
        image_extents_later(img, cb, opaque, e, NULL);
        return;
    }
    r->offset = offset;
    r->end_limit = length > img->size - offset ? img->size : offset + length;
    r->ecb = cb;
    r->opaque = opaque;
    file_workers_submit(r->fp->workers, &r->work);
}

static void file_truncate(struct image *img, uint64_t size, image_io_cb cb,
                          void *opaque)
{
    struct file_priv *fp = img->priv;
    if (img->read_only || fp->is_blockdev || !fp->growable) {
        image_set_error(img, "%s: cannot change the size of %s", img->name,
                        img->read_only ? "a read-only image"
                                       : "this file or device");
        fail_now(img, cb, opaque, img->read_only ? -EROFS : -ENOTSUP);
        return;
    }
    if (size > INT64_MAX) {
        image_set_error(img, "%s: size %" PRIu64 " too large", img->name,
                        size);
        fail_now(img, cb, opaque, -EFBIG);
        return;
    }
    struct file_req *r = req_new(img, OP_TRUNCATE, 0);
    if (!r) {
        fail_now(img, cb, opaque, -ENOMEM);
        return;
    }
    r->offset = size;
    r->cb = cb;
    r->opaque = opaque;
    file_workers_submit(fp->workers, &r->work);
}

static int file_close(struct image *img)
{
    struct file_priv *fp = img->priv;
    int ret = 0;
    file_workers_free(fp->workers);
    if (close(fp->fd) < 0) {
        ret = -errno;
        image_set_error(img, "%s: close: %s", img->name, strerror(errno));
    }
    free(fp);
    image_free_shell(img);
    return ret;
}

static const struct image_ops file_ops = {
    .name = "file",
    .read = file_read,
    .write = file_write,
    .write_zeroes = file_write_zeroes,
    .flush = file_flush,
    .block_status = file_block_status,
    .truncate = file_truncate,
    .close = file_close,
};

/* ---- open ----------------------------------------------------------- */

/* Fill `id` from `st`: "file:DEV:INO" for a regular file, "blk:RDEV" for
 * a block device, nothing for anything else. */
static void file_identity(const struct stat *st, struct image_id *id)
{
    if (S_ISREG(st->st_mode))
        image_id_add(id, "file:%ju:%ju", (uintmax_t)st->st_dev,
                     (uintmax_t)st->st_ino);
    else if (S_ISBLK(st->st_mode))
        image_id_add(id, "blk:%ju", (uintmax_t)st->st_rdev);
}

/* Open `path` following the rules of image-open.h.  On success *fd_out is
 * open, *created says whether a new file was made (to remove it if later
 * setup fails) and *fresh whether it now reads as zeroes. */
static int open_fd(const char *path, const struct image_open_opts *opts,
                   int *fd_out, bool *created, bool *fresh,
                   struct errmsg *err)
{
    *created = *fresh = false;
    if (!opts->write) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == ENOENT)
                errmsg_set(err, "%s: no such file", path);
            else
                errmsg_set(err, "%s: open: %s", path, strerror(e));
            return -e;
        }
        *fd_out = fd;
        return 0;
    }

    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && opts->create) {
        /* Owner-only: an image holds a whole disk. */
        fd = open(path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
        if (fd >= 0)
            *created = true;
        else if (errno == EEXIST)   /* lost a race: look at what is there */
            fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            errmsg_set(err, "%s: no such file; use --create to create it",
                       path);
        else
            errmsg_set(err, "%s: open: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        errmsg_set(err, "%s: fstat: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    /* Before anything is truncated or written (a file just created
     * cannot be the source, and is never it). */
    struct image_id id = { 0 };
    file_identity(&st, &id);
    int r = image_id_check_distinct(&id, path, opts->distinct_from, err);
    if (r < 0) {
        close(fd);
        if (*created)
            unlink(path);
        return r;
    }
    if (S_ISBLK(st.st_mode)) {
        /* O_EXCL on a block device: refuse one that is mounted or
         * otherwise claimed, instead of writing under a file system. */
        int xfd = open(path, O_RDWR | O_CLOEXEC | O_EXCL);
        if (xfd < 0) {
            int e = errno;
            errmsg_set(err, "%s: open: %s%s", path, strerror(e),
                       e == EBUSY ? " (device in use or mounted)" : "");
            close(fd);
            return -e;
        }
        close(fd);
        fd = xfd;
    }
    if (S_ISREG(st.st_mode)) {
        if (!*created && st.st_size > 0 && !opts->overwrite) {
            errmsg_set(err, "%s: exists and is not empty; use --overwrite "
                       "to replace it", path);
            close(fd);
            return -EEXIST;
        }
        if (opts->create) {
            /* Truncate to zero first so no old byte survives, then size
             * the sparse file. */
            if (ftruncate(fd, 0) < 0 ||
                ftruncate(fd, (off_t)opts->create_size) < 0) {
                int e = errno;
                errmsg_set(err, "%s: ftruncate to %" PRIu64 " bytes: %s",
                           path, opts->create_size, strerror(e));
                close(fd);
                if (*created)
                    unlink(path);
                return -e;
            }
            *fresh = true;
        }
    }
    *fd_out = fd;
    return 0;
}

int file_image_open(struct loop *loop, const char *path,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err)
{
    *out = NULL;
    int fd = -1;
    bool created, fresh;
    int r = open_fd(path, opts, &fd, &created, &fresh, err);
    if (r < 0)
        return r;

    struct image *img = NULL;
    struct file_priv *fp = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        errmsg_set(err, "%s: fstat: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        r = -EISDIR;
        errmsg_set(err, "%s: is a directory", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        r = -EINVAL;
        errmsg_set(err, "%s: not a regular file or block device", path);
        goto fail;
    }
    img = image_alloc(&file_ops, loop, path);
    fp = calloc(1, sizeof *fp);
    if (!img || !fp) {
        r = -ENOMEM;
        errmsg_set(err, "%s: out of memory", path);
        goto fail;
    }
    fp->fd = fd;
    fp->is_blockdev = S_ISBLK(st.st_mode);
    if (fp->is_blockdev) {
        uint64_t bytes;
        int sector;
        if (ioctl(fd, BLKGETSIZE64, &bytes) < 0 ||
            ioctl(fd, BLKSSZGET, &sector) < 0) {
            r = -errno;
            errmsg_set(err, "%s: reading the device size: %s", path,
                       strerror(errno));
            goto fail;
        }
        img->size = bytes;
        img->block_size = sector > 0 ? (uint32_t)sector : 512;
    } else {
        img->size = (uint64_t)st.st_size;
        img->block_size = 1;
        img->can_unmap = true;
        fp->growable = opts->write && opts->growable;
    }
    file_identity(&st, &img->id);
    img->read_only = !opts->write;
    img->reads_as_zero = fresh;
    img->max_request = 0;
    fp->workers = file_workers_new(loop, FILE_WORKER_THREADS);
    if (!fp->workers) {
        r = -errno;
        errmsg_set(err, "%s: starting I/O threads: %s", path, strerror(errno));
        goto fail;
    }
    img->priv = fp;
    *out = img;
    return 0;

fail:
    free(fp);
    image_free_shell(img);
    close(fd);
    if (created)
        unlink(path);
    return r;
}
