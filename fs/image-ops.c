/* image-ops.c — FUSE handlers for image files (top-level images and files
 * inside NFS directories): getattr, setattr, open, read, write, flush,
 * fsync, release.  They run on FUSE worker threads and hand everything
 * that touches an image or the NFS server to the loop thread (image-io.c;
 * NFS attributes through the export's nfs_dir as nfs_calls, which answer
 * an interrupt with EINTR). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "backends/nfs-dir.h"

int fs_post(loop_fn fn, void *opaque)
{
    return loop_post(fs_global->loop, fn, opaque);
}

static bool is_nfs(const struct node *n)
{
    return n->kind == NODE_NFSFILE || n->kind == NODE_NFSDIR;
}

static char *node_rel(struct node *n)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    char *rel = strdup(n->relpath);
    pthread_mutex_unlock(&fs_global->tree_lock);
    return rel;
}

int node_attr(struct node *n, struct stat *st)
{
    if (!is_nfs(n)) {
        node_static_attr(n, st);
        return 0;
    }
    char *rel = node_rel(n);
    if (!rel)
        return -ENOMEM;
    struct nfs_dir_attr a;
    int r = nfs_dir_stat_wait(n->exp->dir, fs_global->loop, rel, &a);
    free(rel);
    if (r < 0)
        return r;
    nfs_node_stat(n, &a, st);
    return 0;
}

void nfs_node_stat(struct node *n, const struct nfs_dir_attr *a,
                   struct stat *st)
{
    nfs_export_attr(n->exp, a, st);
    /* st_ino stays the server's (nfs_export_ino), not the node number:
     * two names for one file must look the same to cp (see fs.h). */
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
}

/* ---- getattr, and setattr of times, of NFS nodes on the loop ------------ */

/* A getattr, or a setattr of times (GETATTR, SETATTR, GETATTR). */
struct attr_call {
    struct nfs_call c;
    struct node *node;
    int to_set;                 /* FUSE_SET_ATTR_* of times; 0: getattr */
    struct timespec atime, mtime;
    char *rel;
};

static void attr_end(struct attr_call *a, int err)
{
    free(a->rel);
    nfs_call_reply_err(&a->c, err);
}

static void attr_answered(void *opaque, const struct nfs_dir_result *res)
{
    struct attr_call *a = opaque;
    if (res->err) {
        attr_end(a, res->err);
        return;
    }
    if (nfs_call_claim(&a->c)) {
        struct stat st;
        nfs_node_stat(a->node, res->attr, &st);
        fuse_reply_attr(a->c.req, &st, ATTR_TIMEOUT);
    }
    free(a->rel);
    nfs_call_end(&a->c);
}

static void times_set(void *opaque, const struct nfs_dir_result *res)
{
    struct attr_call *a = opaque;
    if (res->err) {
        attr_end(a, res->err);
        return;
    }
    a->to_set = 0;
    nfs_dir_stat(nfs_export_dir(a->node->exp), a->rel, attr_answered, a);
}

/* The current times: keep what is not being set. */
static void times_current(void *opaque, const struct nfs_dir_result *res)
{
    struct attr_call *a = opaque;
    if (res->err) {
        attr_end(a, res->err);
        return;
    }
    struct timespec ts[2] = { res->attr->atime, res->attr->mtime };
    if (a->to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
        ts[0] = a->atime;
    if (a->to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
        ts[1] = a->mtime;
    nfs_dir_utimes(nfs_export_dir(a->node->exp), a->rel, ts, times_set, a);
}

static void attr_on_loop(void *opaque)
{
    struct attr_call *a = opaque;
    if (!nfs_call_live(&a->c)) {
        attr_end(a, 0);
        return;
    }
    a->rel = node_rel(a->node);
    if (!a->rel) {
        attr_end(a, -ENOMEM);
        return;
    }
    nfs_dir_stat(nfs_export_dir(a->node->exp), a->rel,
                 a->to_set ? times_current : attr_answered, a);
}

/* Start a getattr (to_set 0) or a setattr of the times in `attr`. */
static void attr_start(fuse_req_t req, struct node *n,
                       const struct stat *attr, int to_set)
{
    struct attr_call *a = calloc(1, sizeof *a);
    if (!a) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    a->node = n;
    a->to_set = to_set;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        a->atime = now;
    else if (attr && (to_set & FUSE_SET_ATTR_ATIME))
        a->atime = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        a->mtime = now;
    else if (attr && (to_set & FUSE_SET_ATTR_MTIME))
        a->mtime = attr->st_mtim;
    nfs_call_start(&a->c, req, attr_on_loop, n, NULL);
}

void image_op_getattr(fuse_req_t req, struct node *n)
{
    if (is_nfs(n)) {
        attr_start(req, n, NULL, 0);
        return;
    }
    struct stat st;
    node_static_attr(n, &st);
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* ---- setattr ----------------------------------------------------------- */

struct truncate_ctx {
    fuse_req_t req;
    struct node *node;
    uint64_t size;
};

static void truncate_answer(struct truncate_ctx *c, int err,
                            const struct stat *attr)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    if (attr)
        st = *attr;
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

static void truncated_statted(void *opaque, const struct nfs_dir_result *res)
{
    struct truncate_ctx *c = opaque;
    struct stat st;
    if (!res->err)
        nfs_node_stat(c->node, res->attr, &st);
    truncate_answer(c, res->err, res->err ? NULL : &st);
}

static void truncate_done(void *opaque, int err)
{
    struct truncate_ctx *c = opaque;
    if (err || c->node->kind != NODE_NFSFILE) {
        struct stat st;
        node_static_attr(c->node, &st);
        truncate_answer(c, err, &st);
        return;
    }
    /* The new attributes from the server (asynchronously: this runs in
     * a completion). */
    char *rel = node_rel(c->node);
    if (!rel) {
        truncate_answer(c, -ENOMEM, NULL);
        return;
    }
    nfs_dir_stat(nfs_export_dir(c->node->exp), rel, truncated_statted, c);
    free(rel);
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
    int times = to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                          FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW);
    if (n->kind == NODE_NFSFILE &&
        (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
        attr_start(req, n, attr, times);
        return;
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
