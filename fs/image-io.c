/* image-io.c — per-node image I/O on the loop thread.
 *
 * Reads and writes from FUSE arrive here through loop_post and are issued
 * asynchronously on the node's image; the completion replies to FUSE.
 *
 * Writes are write-behind: a write is answered as soon as it is accepted
 * while the node has less than WRITE_BEHIND_BYTES accepted but unfinished,
 * so one sequential writer keeps several writes in flight.  A failure of
 * such a write becomes the node's sticky error, returned by the next
 * write, flush (close) or fsync.  Beyond the limit a write is answered
 * from its completion.
 *
 * Ordering: an operation that overlaps an unfinished write (issued or
 * parked) is parked until that write completed, so reads see earlier
 * writes and overlapping writes land in order.  Requests not aligned to
 * the image's block size are widened (reads) or read-modify-written.
 *
 * Size: reads of an NFS file see the size it has once every accepted
 * write completed (visible_size), not the image's size so far: a write
 * answered from write-behind may extend the file before it reached the
 * server.  The part of a read beyond what the server has is zeroes (a
 * hole that the pending write leaves, or a write being parked until it
 * completed, see above).
 *
 * Truncate (node_truncate) waits for the accepted writes, then changes the
 * NFS file's size, or on a fixed-size image (LUN) makes the bytes from
 * the new size to the end read as zeroes.
 */
#include "fs.h"
#include "readahead.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#define WRITE_BEHIND_BYTES (16u * 1024 * 1024)
/* Read-ahead: 1 MiB chunks (FUSE's largest read), up to 16 per reader. */
#define RA_CHUNK (1024u * 1024)
#define RA_MAX_CHUNKS 16u

static const struct io_replies fuse_replies = {
    .err = fuse_reply_err,
    .write = fuse_reply_write,
    .buf = fuse_reply_buf,
    .iov = fuse_reply_iov,
    .buf_async = reply_buf_async,
};
const struct io_replies *io_replies = &fuse_replies;

enum op_kind { OP_READ, OP_WRITE, OP_DRAIN, OP_OPEN };

struct io_op {
    struct io_op *next;
    enum op_kind kind;
    struct node *node;
    fuse_req_t req;         /* NULL once answered */
    uint64_t aoff, alen;    /* block-aligned range */
    uint64_t uoff;          /* user offset */
    size_t usize;           /* user size */
    uint8_t *buf;           /* aligned buffer of alen bytes (reads, RMW) */
    uint8_t *data;          /* write data (owned) */
    unsigned pending;
    int err;
    bool rmw;
    node_open_cb cb;        /* drain / open waiters; internal writes:
                             * called instead of replying */
    void *opaque;
    bool write;             /* open waiter: for writing */
    bool trunc;             /* open waiter: truncate once open */
};

static void run_parked(struct node *n);

static uint64_t round_down(uint64_t v, uint64_t a)
{
    return v / a * a;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static bool overlaps(const struct io_op *a, const struct io_op *b)
{
    return a->aoff < b->aoff + b->alen && b->aoff < a->aoff + a->alen;
}

static void *alloc_buf(uint64_t len)
{
    return aligned_alloc(4096, round_up(len ? len : 1, 4096));
}

/* The size reads of `n` see (image open): for an NFS file the end of the
 * highest accepted write if that is beyond the image's size, since with
 * write-behind the write may still be on its way. */
static uint64_t visible_size(const struct node *n)
{
    uint64_t size = n->img->size;
    if (n->kind == NODE_NFSFILE) {
        uint64_t pend = atomic_load(&n->pending_end);
        if (pend > size)
            size = pend;
    }
    return size;
}

/* ---- open / close ------------------------------------------------------ */

static bool node_idle(const struct node *n)
{
    return !n->opens && !n->inflight && !n->parked_head &&
           !n->reads_inflight && n->img && !n->opening &&
           !(n->ra && readahead_inflight(n->ra));
}

static void close_now(void *opaque)
{
    struct node *n = opaque;
    n->close_pending = false;
    if (!node_idle(n))
        return;             /* reopened meanwhile, or closed at shutdown */
    readahead_free(n->ra);
    n->ra = NULL;
    struct image *img = n->img;
    n->img = NULL;
    int r = image_close(img);
    if (r < 0)
        syslog(LOG_WARNING, "imgfs: closing %s: %s", n->name,
               strerror(-r));
    node_reap_later(n);         /* idle now: free it if nothing else keeps it */
}

/* Close the image once nothing uses it.  Never from here directly: this
 * runs inside completion callbacks, i.e. inside libnfs/libiscsi's own
 * processing of a reply, which must not see its context logged out and
 * freed under it; the close runs from the loop on its next round. */
static void close_if_idle(struct node *n)
{
    if (!node_idle(n) || n->close_pending)
        return;
    n->close_pending = true;
    if (loop_defer(fs_global->loop, close_now, n) < 0)
        n->close_pending = false;   /* stays open until the next chance */
}

/* The last read-ahead image read of a node finished. */
static void ra_idle(void *opaque)
{
    close_if_idle(opaque);
}

void node_cache_drop(struct node *n)
{
    if (n->ra)
        readahead_invalidate(n->ra);
}

struct open_trunc {
    struct node *node;
    bool write;
    node_open_cb cb;
    void *opaque;
};

static void open_truncated(void *opaque, int err)
{
    struct open_trunc *t = opaque;
    if (err)
        node_close(t->node, t->write);
    t->cb(t->opaque, err);
    free(t);
}

/* Answer an opener whose reference is taken (unless err): with `trunc`,
 * once the image is truncated to 0 (then a failure drops the reference
 * and is the open's result). */
static void open_answer(struct node *n, bool write, bool trunc, int err,
                        node_open_cb cb, void *opaque)
{
    if (err || !trunc) {
        cb(opaque, err);
        return;
    }
    struct open_trunc *t = malloc(sizeof *t);
    if (!t) {
        node_close(n, write);
        cb(opaque, -ENOMEM);
        return;
    }
    *t = (struct open_trunc){ n, write, cb, opaque };
    node_truncate(n, 0, open_truncated, t);
}

/* No write of the mount is unfinished: the image's size says it all. */
static bool writes_idle(const struct node *n)
{
    for (struct io_op *x = n->parked_head; x; x = x->next)
        if (x->kind == OP_WRITE)
            return false;
    return !n->inflight;
}

void node_open(struct node *n, bool write, bool trunc, node_open_cb cb,
               void *opaque)
{
    if (write && n->read_only) {
        cb(opaque, -EROFS);
        return;
    }
    if (n->img) {
        if (write && n->img->read_only) {
            cb(opaque, -EROFS);
            return;
        }
        /* Close-to-open: a new open reads what the server has now. */
        node_cache_drop(n);
        if (writes_idle(n))
            atomic_store(&n->pending_end, 0);
        n->opens++;
        if (write)
            n->writers++;
        open_answer(n, write, trunc, 0, cb, opaque);
        return;
    }
    struct io_op *w = calloc(1, sizeof *w);
    if (!w) {
        cb(opaque, -ENOMEM);
        return;
    }
    w->kind = OP_OPEN;
    w->cb = cb;
    w->opaque = opaque;
    w->write = write;
    w->trunc = trunc;
    w->next = n->open_waiters;
    n->open_waiters = w;
    if (n->opening)
        return;

    n->opening = true;
    atomic_store(&n->pending_end, 0);   /* no write can be pending */
    char *url = node_url(n);
    struct image_open_opts o = {
        .write = !n->read_only,
        .overwrite = true,      /* open existing, never truncate */
        .growable = n->kind == NODE_NFSFILE,
        .format = IMAGE_FORMAT_RAW,
    };
    struct image *img = NULL;
    struct errmsg em = { "" };
    int r = url ? image_open_protocol(fs_global->loop, url, &o, &img, &em)
                : -ENOMEM;
    if (r < 0 && o.write && (r == -EROFS || r == -EACCES || r == -EPERM)) {
        o.write = false;
        r = image_open_protocol(fs_global->loop, url, &o, &img, &em);
    }
    if (r < 0)
        syslog(LOG_WARNING, "imgfs: opening %s: %s", url ? url : n->name,
               em.text);
    free(url);
    n->opening = false;
    n->img = r < 0 ? NULL : img;
    if (n->img) {
        uint64_t chunk = round_up(RA_CHUNK, img->block_size ? img->block_size
                                                            : 1);
        n->ra = readahead_new(img, chunk, RA_MAX_CHUNKS, ra_idle, n);
    }
    struct io_op *list = n->open_waiters;
    n->open_waiters = NULL;
    /* Every waiter takes its reference before any callback runs, so a
     * callback that closes cannot close the image under the others. */
    for (struct io_op *x = list; x; x = x->next) {
        x->err = r < 0 ? r : 0;
        if (!x->err && x->write && img->read_only)
            x->err = -EROFS;
        if (!x->err) {
            n->opens++;
            if (x->write)
                n->writers++;
        }
    }
    while (list) {
        struct io_op *x = list;
        list = x->next;
        open_answer(n, x->write, x->trunc, x->err, x->cb, x->opaque);
        free(x);
    }
    close_if_idle(n);
}

void node_close(struct node *n, bool write)
{
    if (n->opens)
        n->opens--;
    if (write && n->writers)
        n->writers--;
    close_if_idle(n);
    node_reap_later(n);         /* freed after this callback if unused */
}

int node_take_error(struct node *n)
{
    int e = n->werr;
    n->werr = 0;
    return e;
}

/* ---- reads ------------------------------------------------------------- */

static void read_done(void *opaque, int err)
{
    struct io_op *op = opaque;
    if (err && !op->err)
        op->err = err;
    if (--op->pending)
        return;
    struct node *n = op->node;
    if (op->err) {
        io_replies->err(op->req, -op->err);
        free(op->buf);
    } else {
        /* The copy into the kernel happens on a pool thread. */
        io_replies->buf_async(op->req, op->buf,
                        (char *)op->buf + (op->uoff - op->aoff), op->usize);
    }
    n->reads_inflight--;
    free(op);
    close_if_idle(n);
}

/* Fill buf with [aoff, aoff+alen): the part the image has now is read in
 * max_request pieces, the rest (beyond the image's size: a hole that an
 * extending write still in flight leaves) is zeroes.  Overlapping writes
 * have completed (parking), so that part holds nothing of ours. */
static void issue_reads(struct image *img, struct io_op *op,
                        image_io_cb cb)
{
    uint64_t have = img->size > op->aoff ? img->size - op->aoff : 0;
    if (have > op->alen)
        have = op->alen;
    memset(op->buf + have, 0, op->alen - have);
    uint64_t chunk = img->max_request ? img->max_request : have;
    if (chunk == 0)
        chunk = 1;
    op->pending = 1;            /* guard against early completion */
    for (uint64_t pos = 0; pos < have; pos += chunk) {
        uint64_t l = have - pos < chunk ? have - pos : chunk;
        op->pending++;
        image_read(img, op->buf + pos, op->aoff + pos, (size_t)l, cb, op);
    }
    cb(op, 0);
}

static void start_read(struct io_op *op)
{
    struct image *img = op->node->img;
    op->buf = alloc_buf(op->alen);
    if (!op->buf) {
        io_replies->err(op->req, ENOMEM);
        free(op);
        return;
    }
    op->node->reads_inflight++;
    issue_reads(img, op, read_done);
}

static bool must_park(struct node *n, struct io_op *op)
{
    for (struct io_op *x = n->inflight; x; x = x->next)
        if (overlaps(x, op))
            return true;
    for (struct io_op *x = n->parked_head; x; x = x->next)
        if ((x->kind == OP_WRITE || op->kind == OP_WRITE) && overlaps(x, op))
            return true;
    return false;
}

static void park(struct node *n, struct io_op *op)
{
    op->next = NULL;
    if (n->parked_tail)
        n->parked_tail->next = op;
    else
        n->parked_head = op;
    n->parked_tail = op;
}

/* Answer a read from read-ahead chunks: the copy into the reader's pages
 * (direct I/O) happens here, on the loop or a FUSE thread, while the
 * chunks are valid (the read-ahead object is locked). */
static void ra_reply(void *opaque, int err, const struct iovec *iov,
                     int iovcnt)
{
    fuse_req_t req = opaque;
    if (err)
        io_replies->err(req, -err);
    else
        io_replies->iov(req, iov, iovcnt);
}

/* Whether the loop may read ahead for `n` now.  Not while writes of ours
 * are in flight or parked (reads must see them: parking) nor while a job
 * writes the image around us.  Every such write drops the cache when it
 * starts (io_write, node_cache_drop in jobs.c / copy-range.c), so while
 * this is false the read-ahead holds no chunk a read could use. */
static bool may_read_ahead(const struct node *n)
{
    return n->ra && !n->inflight && !n->parked_head &&
           !atomic_load(&n->job_writers);
}

struct refill_ctx {
    struct node *node;
    uint64_t pos;
};

static void refill_on_loop(void *opaque)
{
    struct refill_ctx *c = opaque;
    /* The handle may have been closed meanwhile (then ra is gone or new:
     * readahead_refill finds no stream at pos and does nothing). */
    if (may_read_ahead(c->node))
        readahead_refill(c->node->ra, c->pos);
    free(c);
}

bool io_read_fast(fuse_req_t req, struct node *n, size_t size, off_t off)
{
    /* No check of writes or jobs here: see may_read_ahead. */
    struct readahead *ra = n->ra;
    if (!ra)
        return false;
    bool refill = false;
    if (!readahead_try_answer(ra, (uint64_t)off, size, ra_reply, req,
                              &refill))
        return false;
    if (refill) {
        struct refill_ctx *c = malloc(sizeof *c);
        if (c) {
            c->node = n;
            c->pos = (uint64_t)off + size;
            if (fs_post(refill_on_loop, c) < 0)
                free(c);
        }
    }
    return true;
}

void io_read(fuse_req_t req, struct node *n, size_t size, off_t off)
{
    struct image *img = n->img;
    if (!img) {
        io_replies->err(req, EBADF);
        return;
    }
    uint64_t isize = visible_size(n);
    if (n->kind == NODE_NFSFILE && (uint64_t)off + size > isize &&
        !n->inflight && !n->parked_head) {
        /* The file may have grown through another client (or a job's own
         * connection): ask the server before answering a short read. */
        struct stat st;
        if (node_attr(n, &st) == 0 && (uint64_t)st.st_size > isize)
            img->size = isize = (uint64_t)st.st_size;
    }
    if ((uint64_t)off >= isize || size == 0) {
        io_replies->buf(req, NULL, 0);
        return;
    }
    if ((uint64_t)off + size > isize)
        size = (size_t)(isize - (uint64_t)off);
    /* Read-ahead chunks end at the image's size (and with writes
     * pending, may_read_ahead is false anyway). */
    if ((uint64_t)off + size <= img->size && may_read_ahead(n) &&
        readahead_read(n->ra, (uint64_t)off, size, ra_reply, req))
        return;
    struct io_op *op = calloc(1, sizeof *op);
    if (!op) {
        io_replies->err(req, ENOMEM);
        return;
    }
    uint64_t bs = img->block_size ? img->block_size : 1;
    op->kind = OP_READ;
    op->node = n;
    op->req = req;
    op->uoff = (uint64_t)off;
    op->usize = size;
    op->aoff = round_down(op->uoff, bs);
    uint64_t aend = round_up(op->uoff + size, bs);
    if (aend > isize)
        aend = isize;
    op->alen = aend - op->aoff;
    if (must_park(n, op))
        park(n, op);
    else
        start_read(op);
}

/* ---- writes ------------------------------------------------------------ */

static void write_finished(struct io_op *op)
{
    struct node *n = op->node;
    struct image *img = n->img;
    node_open_cb cb = op->cb;
    void *cb_opaque = op->opaque;
    int err = op->err;
    if (op->err) {
        if (op->req)
            io_replies->err(op->req, -op->err);
        else if (!n->werr && !cb)
            n->werr = op->err;
        syslog(LOG_ERR, "imgfs: write to %s at offset %llu failed: %s%s%s",
               img ? img->name : n->name, (unsigned long long)op->uoff,
               strerror(-op->err), img && img->last_error.text[0] ? ": " : "",
               img ? img->last_error.text : "");
    } else {
        if (op->req)
            io_replies->write(op->req, op->usize);
        if (img && op->uoff + op->usize > img->size)
            img->size = op->uoff + op->usize;   /* growable file */
    }
    for (struct io_op **pp = &n->inflight; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }
    n->inflight_bytes -= op->alen;
    if (op->buf != op->data)
        free(op->buf);
    free(op->data);
    free(op);
    run_parked(n);
    if (cb)
        cb(cb_opaque, err);
    close_if_idle(n);
}

static void write_done(void *opaque, int err)
{
    struct io_op *op = opaque;
    if (err && !op->err)
        op->err = err;
    if (--op->pending)
        return;
    write_finished(op);
}

static void issue_writes(struct io_op *op)
{
    struct image *img = op->node->img;
    uint64_t chunk = img->max_request ? img->max_request : op->alen;
    if (chunk == 0)
        chunk = 1;
    op->pending = 1;
    for (uint64_t pos = 0; pos < op->alen; pos += chunk) {
        uint64_t l = op->alen - pos < chunk ? op->alen - pos : chunk;
        op->pending++;
        image_write(img, op->buf + pos, op->aoff + pos, (size_t)l,
                    write_done, op);
    }
    write_done(op, 0);
}

static void rmw_read_done(void *opaque, int err)
{
    struct io_op *op = opaque;
    if (err && !op->err)
        op->err = err;
    if (--op->pending)
        return;
    if (op->err) {
        op->pending = 1;
        write_done(op, op->err);
        return;
    }
    memcpy(op->buf + (op->uoff - op->aoff), op->data, op->usize);
    issue_writes(op);
}

static void start_write(struct io_op *op)
{
    struct node *n = op->node;
    op->next = n->inflight;
    n->inflight = op;
    if (!op->rmw) {
        op->buf = op->data;
        issue_writes(op);
        return;
    }
    op->buf = alloc_buf(op->alen);
    if (!op->buf) {
        op->pending = 1;
        write_done(op, -ENOMEM);
        return;
    }
    /* Read the whole aligned range: unaligned writes are rare (direct
     * I/O with odd sizes) and at most a few blocks wider. */
    issue_reads(n->img, op, rmw_read_done);
}

/* A write op of `size` (> 0) bytes of `data` (owned) at `uoff`, within
 * the image unless it is growable; NULL when out of memory. */
static struct io_op *write_op_new(struct node *n, void *data, size_t size,
                                  uint64_t uoff)
{
    struct image *img = n->img;
    struct io_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    uint64_t bs = img->block_size ? img->block_size : 1;
    uint64_t end = uoff + size;
    op->kind = OP_WRITE;
    op->node = n;
    op->data = data;
    op->uoff = uoff;
    op->usize = size;
    op->aoff = round_down(uoff, bs);
    uint64_t aend = round_up(end, bs);
    if (n->kind != NODE_NFSFILE && aend > img->size)
        aend = img->size;
    if (aend < end)
        aend = end;
    op->alen = aend - op->aoff;
    op->rmw = op->aoff != uoff || aend != end;
    return op;
}

/* Account `op` as accepted and issue it, or park it behind the unfinished
 * writes it overlaps. */
static void write_submit(struct io_op *op)
{
    struct node *n = op->node;
    n->inflight_bytes += op->alen;
    if (must_park(n, op))
        park(n, op);
    else
        start_write(op);
}

void io_write(fuse_req_t req, struct node *n, void *data, size_t size,
              off_t off)
{
    struct image *img = n->img;
    if (!img || img->read_only) {
        free(data);
        io_replies->err(req, img ? EBADF : EBADF);
        return;
    }
    if (n->werr) {
        free(data);
        io_replies->err(req, -n->werr);
        return;
    }
    node_cache_drop(n);
    uint64_t uoff = (uint64_t)off;
    bool growable = n->kind == NODE_NFSFILE;
    if (!growable && uoff + size > img->size) {
        if (uoff >= img->size) {
            free(data);
            io_replies->err(req, ENOSPC);
            return;
        }
        size = (size_t)(img->size - uoff);  /* short write at the end */
    }
    if (size == 0) {
        free(data);
        io_replies->write(req, 0);
        return;
    }
    struct io_op *op = write_op_new(n, data, size, uoff);
    if (!op) {
        free(data);
        io_replies->err(req, ENOMEM);
        return;
    }
    op->req = req;
    uint64_t end = uoff + size;
    unsigned long long pend = atomic_load(&n->pending_end);
    while (end > pend &&
           !atomic_compare_exchange_weak(&n->pending_end, &pend, end))
        ;
    /* Write-behind: answer now while the accepted-but-unfinished bytes
     * stay under the limit; a later failure becomes the sticky error. */
    if (n->inflight_bytes + op->alen <= WRITE_BEHIND_BYTES) {
        io_replies->write(op->req, op->usize);
        op->req = NULL;
    }
    write_submit(op);
}

/* ---- drain / flush ----------------------------------------------------- */

void node_drain(struct node *n, node_open_cb cb, void *opaque)
{
    bool writes_parked = false;
    for (struct io_op *x = n->parked_head; x; x = x->next)
        if (x->kind == OP_WRITE)
            writes_parked = true;
    if (!n->inflight && !writes_parked) {
        cb(opaque, 0);
        return;
    }
    struct io_op *op = calloc(1, sizeof *op);
    if (!op) {
        cb(opaque, -ENOMEM);
        return;
    }
    op->kind = OP_DRAIN;
    op->node = n;
    op->cb = cb;
    op->opaque = opaque;
    park(n, op);
}

static void run_parked(struct node *n)
{
    struct io_op *prev = NULL, *op = n->parked_head;
    while (op) {
        struct io_op *next = op->next;
        bool blocked = false;
        if (op->kind == OP_DRAIN) {
            blocked = n->inflight != NULL;
            for (struct io_op *x = n->parked_head; x != op && !blocked;
                 x = x->next)
                blocked = x->kind == OP_WRITE;
        } else {
            for (struct io_op *x = n->inflight; x && !blocked; x = x->next)
                blocked = overlaps(x, op);
            for (struct io_op *x = n->parked_head; x != op && !blocked;
                 x = x->next)
                blocked = x->kind == OP_DRAIN ||
                          ((x->kind == OP_WRITE || op->kind == OP_WRITE) &&
                           overlaps(x, op));
        }
        if (blocked) {
            prev = op;
            op = next;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            n->parked_head = next;
        if (n->parked_tail == op)
            n->parked_tail = prev;
        op->next = NULL;
        switch (op->kind) {
        case OP_READ:
            start_read(op);
            break;
        case OP_WRITE:
            start_write(op);
            break;
        case OP_DRAIN:
            op->cb(op->opaque, 0);
            free(op);
            break;
        case OP_OPEN:
            break;
        }
        op = next;
    }
}

struct flush_ctx {
    fuse_req_t req;
    struct node *node;
    bool fsync;
};

static void flush_image_done(void *opaque, int err)
{
    struct flush_ctx *c = opaque;
    int werr = node_take_error(c->node);
    io_replies->err(c->req, werr ? -werr : -err);
    struct node *n = c->node;
    free(c);
    node_close(n, false);
}

static void flush_drained(void *opaque, int err)
{
    struct flush_ctx *c = opaque;
    struct node *n = c->node;
    if (!err && c->fsync && n->img) {
        image_flush(n->img, flush_image_done, c);
        return;
    }
    int werr = node_take_error(n);
    io_replies->err(c->req, werr ? -werr : -err);
    free(c);
    node_close(n, false);
}

void io_flush(fuse_req_t req, struct node *n, bool fsync)
{
    if (!n->img) {
        io_replies->err(req, 0);
        return;
    }
    struct flush_ctx *c = malloc(sizeof *c);
    if (!c) {
        io_replies->err(req, ENOMEM);
        return;
    }
    c->req = req;
    c->node = n;
    c->fsync = fsync;
    n->opens++;                 /* keep the image while flushing */
    node_drain(n, flush_drained, c);
}

/* ---- truncate ---------------------------------------------------------- */

struct trunc_ctx {
    struct node *node;
    uint64_t size;
    node_open_cb cb;
    void *opaque;
    bool write_ref;         /* holds an open reference for writing */
    node_open_cb drained;   /* what runs once the node is drained */
};

/* Answer the truncate and drop the reference node_truncate took.  What
 * was read ahead goes either way: the image may have changed. */
static void trunc_finish(struct trunc_ctx *t, int err)
{
    struct node *n = t->node;
    node_cache_drop(n);
    t->cb(t->opaque, err);
    node_close(n, t->write_ref);
    free(t);
}

static void trunc_nfs_done(void *opaque, int err)
{
    struct trunc_ctx *t = opaque;
    if (!err)
        atomic_store(&t->node->pending_end, t->size);
    else
        syslog(LOG_ERR, "imgfs: truncating %s to %llu bytes failed: %s%s%s",
               t->node->img->name, (unsigned long long)t->size,
               strerror(-err), t->node->img->last_error.text[0] ? ": " : "",
               t->node->img->last_error.text);
    trunc_finish(t, err);
}

/* Every accepted write has completed: the file's new size goes through
 * the image (SETATTR on its handle, with its reconnect behaviour). */
static void trunc_nfs_drained(void *opaque, int err)
{
    struct trunc_ctx *t = opaque;
    if (err) {
        trunc_finish(t, err);
        return;
    }
    image_truncate(t->node->img, t->size, trunc_nfs_done, t);
}

static void trunc_zeroed(void *opaque, int err)
{
    struct trunc_ctx *t = opaque;
    struct image *img = t->node->img;
    if (err)
        syslog(LOG_ERR, "imgfs: zeroing %s from offset %llu failed: %s%s%s",
               img->name, (unsigned long long)t->size, strerror(-err),
               img->last_error.text[0] ? ": " : "", img->last_error.text);
    trunc_finish(t, err);
}

/* The partial block at the new size is zeroes now: zero whole blocks from
 * the next block boundary to the end. */
static void trunc_head_zeroed(void *opaque, int err)
{
    struct trunc_ctx *t = opaque;
    struct image *img = t->node->img;
    uint64_t bs = img->block_size ? img->block_size : 1;
    uint64_t from = round_up(t->size, bs);
    if (err || from >= img->size) {
        trunc_finish(t, err);
        return;
    }
    image_write_zeroes(img, from, img->size - from, IMAGE_ZERO_MAY_UNMAP,
                       trunc_zeroed, t);
}

static void trunc_fixed_drained(void *opaque, int err)
{
    struct trunc_ctx *t = opaque;
    struct node *n = t->node;
    struct image *img = n->img;
    if (err || t->size > img->size) {
        trunc_finish(t, err ? err : -EFBIG);
        return;
    }
    uint64_t bs = img->block_size ? img->block_size : 1;
    uint64_t head_end = round_up(t->size, bs);
    if (head_end > img->size)
        head_end = img->size;
    if (head_end == t->size) {
        trunc_head_zeroed(t, 0);
        return;
    }
    /* [size, head_end) shares a block with data that stays: an ordinary
     * (read-modify-)write of zeroes. */
    size_t len = (size_t)(head_end - t->size);
    void *zeroes = calloc(1, len);
    struct io_op *op = zeroes ? write_op_new(n, zeroes, len, t->size) : NULL;
    if (!op) {
        free(zeroes);
        trunc_finish(t, -ENOMEM);
        return;
    }
    op->cb = trunc_head_zeroed;
    op->opaque = t;
    write_submit(op);
}

/* The node is open for writing: drain its I/O, then t->drained. */
static void trunc_opened(void *opaque, int err)
{
    struct trunc_ctx *t = opaque;
    if (err) {
        t->cb(t->opaque, err);
        free(t);
        return;
    }
    t->write_ref = true;
    node_drain(t->node, t->drained, t);
}

void node_truncate(struct node *n, uint64_t size, node_open_cb cb,
                   void *opaque)
{
    struct trunc_ctx *t = malloc(sizeof *t);
    if (!t) {
        cb(opaque, -ENOMEM);
        return;
    }
    /* Both kinds go through the node's image: open it for writing (or
     * take one more reference); an NFS file is then truncated, a
     * fixed-size image has its tail zeroed. */
    *t = (struct trunc_ctx){ .node = n, .size = size, .cb = cb,
                             .opaque = opaque,
                             .drained = n->kind == NODE_NFSFILE
                                            ? trunc_nfs_drained
                                            : trunc_fixed_drained };
    node_open(n, true, false, trunc_opened, t);
}
