/* image-ops.c — FUSE handlers for image files (top-level images and files
 * inside NFS directories): getattr, setattr, open, read, write, flush,
 * fsync, release.  They run on FUSE worker threads and hand everything
 * that touches an image to the loop thread (image-io.c). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

int fs_post(loop_fn fn, void *opaque)
{
    return loop_post(fs_global->loop, fn, opaque);
}

int node_attr(struct node *n, struct stat *st)
{
    if (n->kind != NODE_NFSFILE && n->kind != NODE_NFSDIR) {
        node_static_attr(n, st);
        return 0;
    }
    char *rel;
    pthread_mutex_lock(&fs_global->tree_lock);
    rel = strdup(n->relpath);
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (!rel)
        return -ENOMEM;
    int r = nfs_meta_stat(n->exp, rel, st);
    free(rel);
    if (r < 0)
        return r;
    /* st_ino stays the server's (nfs_meta_ino), not the node number: two
     * names for one file must look the same to cp (see fs.h). */
    if (n->kind == NODE_NFSFILE) {
        /* Writes already answered (write-behind) may not have reached the
         * server yet. */
        uint64_t pend = atomic_load(&n->pending_end);
        if ((uint64_t)st->st_size < pend)
            st->st_size = (off_t)pend;
        /* Report images as fully allocated, like the LUNs.  With fewer
         * blocks than the size (a file with holes), GNU cp decides the
         * source is sparse and copies with read + write, seeking over
         * zero blocks instead of writing them, which bypasses
         * copy_file_range (the engine, which writes zero runs properly).
         * (A LUN opened with O_TRUNC reads as zeroes, so the result is
         * right either way.)
         * NFSv3 cannot tell where the holes are anyway (no SEEK_DATA). */
        st->st_blocks = (blkcnt_t)(((uint64_t)st->st_size + 511) / 512);
        st->st_blksize = IMAGE_BLKSIZE;
        if (n->read_only)
            st->st_mode &= ~(mode_t)0222;
    }
    return 0;
}

void image_op_getattr(fuse_req_t req, struct node *n)
{
    struct stat st;
    int r = node_attr(n, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* ---- setattr ----------------------------------------------------------- */

struct truncate_ctx {
    fuse_req_t req;
    struct node *node;
    uint64_t size;
};

static void truncate_done(void *opaque, int err)
{
    struct truncate_ctx *c = opaque;
    struct stat st;
    if (!err)
        err = node_attr(c->node, &st);
    if (err) {
        fuse_reply_err(c->req, -err);
    } else if (c->node->kind != NODE_NFSFILE) {
        /* A LUN kept its size but reads as zeroes from c->size: answer
         * with that size, valid for no time.  The kernel then drops its
         * cached pages from there (-o page_cache; it keeps them when the
         * size does not change) and asks for the size again at the next
         * stat or read past it, which is the LUN's size. */
        st.st_size = (off_t)c->size;
        fuse_reply_attr(c->req, &st, 0.0);
    } else {
        fuse_reply_attr(c->req, &st, ATTR_TIMEOUT);
    }
    free(c);
}

static void truncate_on_loop(void *opaque)
{
    struct truncate_ctx *c = opaque;
    node_truncate(c->node, c->size, truncate_done, c);
}

void image_op_setattr(fuse_req_t req, struct node *n, struct stat *attr,
                      int to_set)
{
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (n->read_only) {
            fuse_reply_err(req, EROFS);
            return;
        }
        /* A LUN (fixed size) keeps its size; truncating it to a smaller
         * size makes the rest read as zeroes (see README "Mounting"). */
        bool fixed = n->kind != NODE_NFSFILE;
        if (fixed && (uint64_t)attr->st_size > n->fixed_size) {
            fuse_reply_err(req, EFBIG);
            return;
        }
        if (!fixed || (uint64_t)attr->st_size < n->fixed_size) {
            if (node_busy_for_write(n)) {
                fuse_reply_err(req, EBUSY);
                return;
            }
            struct truncate_ctx *c = calloc(1, sizeof *c);
            if (!c) {
                fuse_reply_err(req, ENOMEM);
                return;
            }
            c->req = req;
            c->node = n;
            c->size = (uint64_t)attr->st_size;
            if (fs_post(truncate_on_loop, c) < 0) {
                free(c);
                fuse_reply_err(req, ENOMEM);
            }
            return;
        }
    }
    if (n->kind == NODE_NFSFILE &&
        (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
        struct timespec ts[2];
        clock_gettime(CLOCK_REALTIME, &ts[0]);
        ts[1] = ts[0];
        struct stat cur;
        int r = node_attr(n, &cur);
        if (r == 0) {
            ts[0] = cur.st_atim;
            ts[1] = cur.st_mtim;
            if (to_set & FUSE_SET_ATTR_ATIME_NOW)
                clock_gettime(CLOCK_REALTIME, &ts[0]);
            else if (to_set & FUSE_SET_ATTR_ATIME)
                ts[0] = attr->st_atim;
            if (to_set & FUSE_SET_ATTR_MTIME_NOW)
                clock_gettime(CLOCK_REALTIME, &ts[1]);
            else if (to_set & FUSE_SET_ATTR_MTIME)
                ts[1] = attr->st_mtim;
            char *rel;
            pthread_mutex_lock(&fs_global->tree_lock);
            rel = strdup(n->relpath);
            pthread_mutex_unlock(&fs_global->tree_lock);
            r = rel ? nfs_meta_utimes(n->exp, rel, ts) : -ENOMEM;
            free(rel);
        }
        if (r < 0) {
            fuse_reply_err(req, -r);
            return;
        }
    }
    /* Mode and ownership are not ours to change; report what is. */
    image_op_getattr(req, n);
}

/* ---- open / release ---------------------------------------------------- */

struct open_ctx {
    fuse_req_t req;
    struct node *node;
    struct fuse_file_info fi;
    bool write, trunc;
};

static void opened(void *opaque, int err)
{
    struct open_ctx *c = opaque;
    if (!err && c->write && node_busy_for_write(c->node)) {
        node_close(c->node, true);
        err = -EBUSY;
    }
    c->fi.keep_cache = 0;
    handle_reply_opened(c->req, c->node, c->write, err, &c->fi, NULL);
    free(c);
}

void handle_reply_opened(fuse_req_t req, struct node *n, bool write, int err,
                         struct fuse_file_info *fi,
                         const struct fuse_entry_param *e)
{
    struct handle *h = err ? NULL : calloc(1, sizeof *h);
    if (!err && !h) {
        node_close(n, write);
        err = -ENOMEM;
    }
    if (err) {
        fuse_reply_err(req, -err);
        return;
    }
    h->node = n;
    h->write = write;
    fi->fh = (uint64_t)(uintptr_t)h;
    /* No page cache for images: reads are answered from the mount's own
     * read-ahead (readahead.h), writes go straight to the image.  With
     * -o page_cache the kernel caches them (and its readahead requests are
     * answered from ours). */
    fi->direct_io = !fs_global->page_cache;
    int r = e ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi);
    if (r != 0) {
        /* The opener went away (interrupted): drop the reference. */
        node_close(n, write);
        free(h);
    }
}

static void open_on_loop(void *opaque)
{
    struct open_ctx *c = opaque;
    node_open(c->node, c->write, c->trunc, opened, c);
}

void image_op_open(fuse_req_t req, struct node *n, struct fuse_file_info *fi)
{
    bool write = (fi->flags & O_ACCMODE) != O_RDONLY;
    if (write && (n->read_only || fs_global->read_only)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (write && node_busy_for_write(n)) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    struct open_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->req = req;
    c->node = n;
    c->fi = *fi;
    c->write = write;
    /* O_TRUNC truncates NFS files and makes LUNs (and other fixed-size
     * images) read as zeroes: `cp` and `>` onto a LUN work as onto a
     * file (README "Mounting"). */
    c->trunc = write && (fi->flags & O_TRUNC);
    if (fs_post(open_on_loop, c) < 0) {
        free(c);
        fuse_reply_err(req, ENOMEM);
    }
}

struct io_ctx {
    fuse_req_t req;
    struct node *node;
    size_t size;
    off_t off;
    void *data;
    bool write;
};

static void release_on_loop(void *opaque)
{
    struct io_ctx *c = opaque;
    node_close(c->node, c->write);
    free(c);
}

void image_op_release(fuse_req_t req, struct node *n,
                      struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    struct io_ctx *c = calloc(1, sizeof *c);
    if (c) {
        c->node = n;
        c->write = h ? h->write : false;
        if (fs_post(release_on_loop, c) < 0)
            free(c);
    }
    free(h);
    fuse_reply_err(req, 0);
}

/* ---- read / write / flush ---------------------------------------------- */

static void read_on_loop(void *opaque)
{
    struct io_ctx *c = opaque;
    io_read(c->req, c->node, c->size, c->off);
    free(c);
}

void image_op_read(fuse_req_t req, struct node *n, size_t size, off_t off)
{
    if (io_read_fast(req, n, size, off))
        return;                 /* answered from read-ahead, on this thread */
    struct io_ctx *c = malloc(sizeof *c);
    if (!c) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    *c = (struct io_ctx){ .req = req, .node = n, .size = size, .off = off };
    if (fs_post(read_on_loop, c) < 0) {
        free(c);
        fuse_reply_err(req, ENOMEM);
    }
}

static void write_on_loop(void *opaque)
{
    struct io_ctx *c = opaque;
    io_write(c->req, c->node, c->data, c->size, c->off);
    free(c);
}

void image_op_write(fuse_req_t req, struct node *n, const char *buf,
                    size_t size, off_t off)
{
    if (node_busy_for_write(n)) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    struct io_ctx *c = malloc(sizeof *c);
    void *data = aligned_alloc(4096, (size + 4095) / 4096 * 4096 + 4096);
    if (!c || !data) {
        free(c);
        free(data);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(data, buf, size);
    *c = (struct io_ctx){ .req = req, .node = n, .size = size, .off = off,
                          .data = data };
    if (fs_post(write_on_loop, c) < 0) {
        free(c);
        free(data);
        fuse_reply_err(req, ENOMEM);
    }
}

static void flush_on_loop(void *opaque)
{
    struct io_ctx *c = opaque;
    io_flush(c->req, c->node, c->write);
    free(c);
}

void image_op_flush(fuse_req_t req, struct node *n, bool fsync)
{
    struct io_ctx *c = malloc(sizeof *c);
    if (!c) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* `write` carries "fsync" here: flush the image too. */
    *c = (struct io_ctx){ .req = req, .node = n, .write = fsync };
    if (fs_post(flush_on_loop, c) < 0) {
        free(c);
        fuse_reply_err(req, ENOMEM);
    }
}
