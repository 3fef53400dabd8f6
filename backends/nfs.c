/* nfs.c — data path of the "nfs" protocol: libnfs async calls driven by
 * the image's loop (poller + periodic service timer).
 *
 * A caller's read, write or write_zeroes becomes one `nfs_request` that is
 * cut into pieces no larger than the server's READ3/WRITE3 maximum.  Up to
 * PIECES_IN_FLIGHT pieces of one request are outstanding at once; each
 * finished piece issues the next, and the caller is completed when every
 * piece has finished (the first error wins; after an error no new piece is
 * issued and the ones in flight are drained).  Short replies re-issue the
 * remainder of their piece.  NFSv3 has no hole punching and no SEEK_DATA:
 * write_zeroes writes one shared zero buffer, block_status is left to the
 * generic "all data" answer.  truncate is a SETATTR of the size on the
 * file handle, sent and resent like a COMMIT.  Opening lives in
 * nfs-open.c.
 *
 * Faults (nfs-reconnect.c): every piece and COMMIT is on the image's
 * pending list while it is inside libnfs or waiting to be sent again.  A
 * call that fails because the connection failed, or with a stale handle
 * that is being looked up again, is sent again after the backoff; once
 * the connection is given up everything fails with -EIO.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nfsc/libnfs.h>

#include "nfs-image.h"
#include "protocols.h"

/* Pieces of one request outstanding at once.  Enough to keep a server
 * busy (the engine runs many requests in parallel as well) while keeping
 * the memory of a huge write_zeroes bounded. */
#define PIECES_IN_FLIGHT 32

/* Closing is synchronous (libnfs commits a dirty file): a server that
 * is gone must not hang it (libnfs takes whole seconds). */
#define CLOSE_TIMEOUT_MS 10000

/* write_zeroes source: never written, shared by every image and thread. */
#define ZERO_BUF_SIZE (1u << 20)
static uint8_t zero_buf[ZERO_BUF_SIZE];

enum nfs_op { NFS_OP_READ, NFS_OP_WRITE, NFS_OP_ZEROES };

struct nfs_request {
    struct nfs_image *ni;
    enum nfs_op op;
    uint8_t *rbuf;              /* read destination */
    const uint8_t *wbuf;        /* write source (NULL for zeroes) */
    uint64_t start, end;        /* the caller's range */
    uint64_t next;              /* first byte not yet handed to a piece */
    unsigned in_flight;         /* pieces outstanding */
    bool issuing;               /* inside issue_pieces(): do not finish */
    bool zeroes_ok;             /* read_or_zeroes: a reply of zeroes need
                                 * not be copied into rbuf */
    bool zeroes;                /* ... and was not: IMAGE_READ_ZEROES */
    int err;                    /* first error, 0 if none */
    image_io_cb cb;
    void *opaque;
};

/* The part of a request one libnfs call works on; offset/len shrink as
 * short replies are accounted. */
struct nfs_piece {
    struct nfs_pending pend;    /* first: the list's entry is the piece */
    struct nfs_request *req;
    uint64_t offset;
    uint64_t len;
    const struct nfsfh *fh_used;/* the handle of the call in flight */
};

static struct nfs_image *nfs_of(struct image *img)
{
    return img->priv;
}


/* libnfs reports an RPC failure (connection lost) as -EFAULT and an RPC
 * timeout as -EINTR; callers get the errnos that mean that (when the
 * fault is not ridden through). */
static int nfs_errno(int status)
{
    if (status >= 0)
        return -EIO;
    if (status == -EFAULT)
        return -EIO;
    if (status == -EINTR)
        return -ETIMEDOUT;
    return status;
}

/* The errno of a server status quoted in a libnfs error text: a READ or
 * WRITE that libnfs split into several RPCs fails with -EFAULT and only
 * the text names the server's answer, as "...NFS3ERR_NOSPC(-28)...".
 * Returns that negative errno, or 0 when the text quotes none. */
static int quoted_status_errno(const char *detail)
{
    const char *p = detail ? strstr(detail, "NFS3ERR_") : NULL;
    if (!p)
        return 0;
    p = strstr(p, "(-");
    int e = 0;
    if (p && sscanf(p, "(-%d)", &e) == 1 && e > 0 && e < 4096)
        return -e;
    return 0;
}

/* Store the libnfs reason for a failure, unless an earlier failure of the
 * same request already did. */
static void request_fail(struct nfs_request *req, int err, const char *what,
                         uint64_t offset, const char *detail)
{
    if (req->err)
        return;
    int quoted = err == -EFAULT ? quoted_status_errno(detail) : 0;
    req->err = quoted ? quoted : nfs_errno(err);
    image_set_error(req->ni->img, "NFS %s at offset %" PRIu64 ": %s", what,
                    offset, detail && *detail ? detail : strerror(-req->err));
}

/* The text of a failed call: libnfs's error text for -EFAULT (a READ or
 * WRITE split into several RPCs then passes no string), else the string
 * the callback got. */
static const char *error_text(int status, struct nfs_context *nfs,
                              const void *data)
{
    if (status == -EFAULT || !data)
        return nfs_get_error(nfs);
    return data;
}

static const char *op_name(const struct nfs_request *req)
{
    return req->op == NFS_OP_READ ? "READ" : "WRITE";
}

static void request_finish(struct nfs_request *req, bool from_issue)
{
    struct nfs_image *ni = req->ni;
    image_io_cb cb = req->cb;
    void *opaque = req->opaque;
    int err = req->err;
    if (!err && req->zeroes)
        err = IMAGE_READ_ZEROES;
    if (!err && req->op != NFS_OP_READ && req->end > ni->img->size)
        ni->img->size = req->end;       /* growable file got longer */
    free(req);
    if (from_issue)
        image_complete_later(ni->img, cb, opaque, err);
    else
        cb(opaque, err);
}

static int piece_submit(struct nfs_piece *p);
static void issue_pieces(struct nfs_request *req, bool from_issue);

/* A piece is over (done or failed): account it and keep the request
 * moving. */
static void piece_done(struct nfs_piece *p)
{
    struct nfs_request *req = p->req;
    nfs_pending_remove(req->ni, &p->pend);
    free(p);
    req->in_flight--;
    issue_pieces(req, false);
}

/* The connection was given up while libnfs held the piece. */
static void piece_abort(struct nfs_pending *pend)
{
    struct nfs_piece *p = (struct nfs_piece *)pend;
    if (!p->req->err)
        p->req->err = nfs_dead_error(p->req->ni);
    piece_done(p);
}

static void piece_resend(void *opaque)
{
    struct nfs_piece *p = opaque;
    if (p->req->err || piece_submit(p) < 0)
        piece_done(p);
}

/* A call of `p` failed with libnfs status `status`: send it again if the
 * fault is one to ride through (nfs-reconnect.c), else record the error.
 * Returns true if the piece will be sent again (it stays alive). */
static bool piece_failed(struct nfs_piece *p, int status, const char *what,
                         const char *detail)
{
    struct nfs_request *req = p->req;
    struct nfs_image *ni = req->ni;
    if (!req->err) {
        enum nfs_fault f = nfs_classify_failure(ni, status, p->fh_used,
                                                detail);
        if (f != NFS_FAULT_FAIL &&
            loop_add_timer(ni->img->loop, nfs_retry_delay_ms(ni),
                           piece_resend, p) > 0)
            return true;
    }
    if (ni->dead) {
        if (!req->err)
            req->err = nfs_dead_error(ni);
    } else {
        request_fail(req, status, what, p->offset,
                     ni->relookup_error[0] ? ni->relookup_error : detail);
    }
    return false;
}

/* Re-issue what is left of a piece after a short reply. */
static void piece_continue(struct nfs_piece *p)
{
    if (p->req->err || p->len == 0 || piece_submit(p) < 0)
        piece_done(p);
}

static void fstat_at_eof_cb(int status, struct nfs_context *nfs, void *data,
                            void *private_data)
{
    struct nfs_piece *p = private_data;
    struct nfs_request *req = p->req;
    p->pend.in_libnfs = false;
    if (status < 0) {
        /* Sent again, the piece is read again from where it stopped. */
        if (piece_failed(p, status, "GETATTR after short READ",
                         error_text(status, nfs, data)))
            return;
    } else if (!req->err) {
        nfs_conn_answered(req->ni);
        const struct nfs_stat_64 *st = data;
        if (st->nfs_size <= p->offset) {
            /* The file is shorter than the image: the rest reads as
             * zeroes, like a sparse tail. */
            memset(req->rbuf + (p->offset - req->start), 0, p->len);
            p->len = 0;
        } else {
            req->err = -EIO;
            image_set_error(req->ni->img, "NFS READ at offset %" PRIu64
                            ": server returned no data before the end of "
                            "the file (%" PRIu64 " bytes)",
                            p->offset, (uint64_t)st->nfs_size);
        }
    }
    piece_done(p);
}

/* Whether the `n` bytes at `p` are all zero: a zero head of 16 bytes,
 * and every byte equal to the one 16 before it. */
static bool all_zero(const uint8_t *p, size_t n)
{
    size_t head = n < 16 ? n : 16;
    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}

static void read_cb(int status, struct nfs_context *nfs, void *data,
                    void *private_data)
{
    struct nfs_piece *p = private_data;
    struct nfs_request *req = p->req;
    p->pend.in_libnfs = false;
    if (status < 0) {
        if (!piece_failed(p, status, "READ",
                          error_text(status, nfs, data)))
            piece_done(p);
        return;
    }
    nfs_conn_answered(req->ni);
    if (req->err) {
        piece_done(p);
        return;
    }
    uint64_t got = (uint64_t)status;
    if (got > p->len)
        got = p->len;
    if (got == 0) {
        /* End of file before the end of the piece: zeroes if the file
         * really is that short, an error otherwise. */
        p->fh_used = req->ni->fh;
        if (nfs_fstat64_async(req->ni->nfs, req->ni->fh, fstat_at_eof_cb,
                              p) < 0) {
            request_fail(req, -EIO, "GETATTR after short READ", p->offset,
                         nfs_get_error(nfs));
            piece_done(p);
            return;
        }
        p->pend.in_libnfs = true;
        p->pend.sent_ns = loop_now_ns();
        return;
    }
    if (req->zeroes_ok && got == req->end - req->start &&
        all_zero(data, (size_t)got))
        req->zeroes = true;     /* the whole request in one reply */
    else
        memcpy(req->rbuf + (p->offset - req->start), data, got);
    p->offset += got;
    p->len -= got;
    piece_continue(p);
}

static void write_cb(int status, struct nfs_context *nfs, void *data,
                     void *private_data)
{
    struct nfs_piece *p = private_data;
    struct nfs_request *req = p->req;
    p->pend.in_libnfs = false;
    if (status >= 0)
        nfs_conn_answered(req->ni);
    if (status < 0) {
        if (piece_failed(p, status, "WRITE",
                         error_text(status, nfs, data)))
            return;
    } else if (status == 0 && !req->err) {
        request_fail(req, -EIO, "WRITE", p->offset,
                     "server wrote 0 bytes");
    } else {
        uint64_t put = (uint64_t)status;
        if (put > p->len)
            put = p->len;
        p->offset += put;
        p->len -= put;
        piece_continue(p);
        return;
    }
    piece_done(p);
}

/* Hand `p` to libnfs.  Returns 0, or -1 after recording the error (the
 * callback will then not run). */
static int piece_submit(struct nfs_piece *p)
{
    struct nfs_request *req = p->req;
    struct nfs_image *ni = req->ni;
    int r;
    if (ni->dead) {
        if (!req->err)
            req->err = nfs_dead_error(ni);
        return -1;
    }
    p->fh_used = ni->fh;
    if (req->op == NFS_OP_READ) {
        r = nfs_pread_async(ni->nfs, ni->fh, p->offset, p->len, read_cb, p);
    } else {
        const void *src = req->op == NFS_OP_WRITE
                              ? req->wbuf + (p->offset - req->start)
                              : zero_buf;
        r = nfs_pwrite_async(ni->nfs, ni->fh, p->offset, p->len, src,
                             write_cb, p);
    }
    if (r < 0) {
        request_fail(req, r, op_name(req), p->offset, nfs_get_error(ni->nfs));
        return -1;
    }
    p->pend.in_libnfs = true;
    p->pend.sent_ns = loop_now_ns();
    return 0;
}

/* Issue pieces until the window is full or the range is covered; finish
 * the request when nothing is left in flight.  `from_issue` is true when
 * called from the caller's own read/write call (finishing must then be
 * deferred). */
static void issue_pieces(struct nfs_request *req, bool from_issue)
{
    if (req->issuing)
        return;
    req->issuing = true;
    uint64_t chunk = req->op == NFS_OP_READ ? req->ni->readmax
                                            : req->ni->writemax;
    if (req->op == NFS_OP_ZEROES && chunk > ZERO_BUF_SIZE)
        chunk = ZERO_BUF_SIZE;
    while (!req->err && req->next < req->end &&
           req->in_flight < PIECES_IN_FLIGHT) {
        struct nfs_piece *p = malloc(sizeof *p);
        if (!p) {
            request_fail(req, -ENOMEM, op_name(req), req->next,
                         "out of memory");
            break;
        }
        uint64_t len = req->end - req->next;
        if (len > chunk)
            len = chunk;
        *p = (struct nfs_piece){ .req = req, .offset = req->next,
                                 .len = len };
        p->pend.abort = piece_abort;
        req->next += len;
        /* Counted before submitting, in case libnfs ever calls back at
         * once. */
        req->in_flight++;
        nfs_pending_add(req->ni, &p->pend);
        if (piece_submit(p) < 0) {
            nfs_pending_remove(req->ni, &p->pend);
            req->in_flight--;
            free(p);
            break;
        }
    }
    req->issuing = false;
    if (req->in_flight == 0 && (req->err || req->next == req->end))
        request_finish(req, from_issue);
}

/* Common entry of read, write and write_zeroes after range checks. */
static void request_start(struct image *img, enum nfs_op op, uint8_t *rbuf,
                          const uint8_t *wbuf, uint64_t offset, uint64_t len,
                          bool zeroes_ok, image_io_cb cb, void *opaque)
{
    struct nfs_image *ni = nfs_of(img);
    if (ni->dead) {
        image_complete_later(img, cb, opaque, nfs_dead_error(ni));
        return;
    }
    if (len == 0) {
        image_complete_later(img, cb, opaque, 0);
        return;
    }
    struct nfs_request *req = malloc(sizeof *req);
    if (!req) {
        image_complete_later(img, cb, opaque, -ENOMEM);
        return;
    }
    *req = (struct nfs_request){
        .ni = ni, .op = op, .rbuf = rbuf, .wbuf = wbuf,
        .start = offset, .end = offset + len, .next = offset,
        .zeroes_ok = zeroes_ok, .cb = cb, .opaque = opaque,
    };
    issue_pieces(req, true);
}

/* Writes: read-only images refuse; past the end only if growable. */
static int check_write_range(struct image *img, uint64_t offset, uint64_t len)
{
    if (img->read_only) {
        image_set_error(img, "image is open read-only");
        return -EROFS;
    }
    if (offset + len < offset) {
        image_set_error(img, "range overflows");
        return -EINVAL;
    }
    if (offset + len > img->size && !nfs_of(img)->growable) {
        image_set_error(img, "write of %" PRIu64 " bytes at offset %" PRIu64
                        " goes past the end of the file (%" PRIu64
                        " bytes)", len, offset, img->size);
        return -ENOSPC;
    }
    return 0;
}

static void read_request(struct image *img, void *buf, uint64_t offset,
                         size_t len, bool zeroes_ok, image_io_cb cb,
                         void *opaque)
{
    if (offset > img->size || len > img->size - offset) {
        image_set_error(img, "read of %zu bytes at offset %" PRIu64
                        " goes past the end of the image (%" PRIu64
                        " bytes)", len, offset, img->size);
        image_complete_later(img, cb, opaque, -EINVAL);
        return;
    }
    request_start(img, NFS_OP_READ, buf, NULL, offset, len, zeroes_ok, cb,
                  opaque);
}

static void nfs_img_read(struct image *img, void *buf, uint64_t offset,
                         size_t len, image_io_cb cb, void *opaque)
{
    read_request(img, buf, offset, len, false, cb, opaque);
}

/* A request answered by one READ reply of zeroes is not copied out of
 * libnfs's buffer (about half of a copy's memmove for a raw image with
 * holes, which NFSv3 cannot skip: it has no SEEK_DATA). */
static void nfs_img_read_or_zeroes(struct image *img, void *buf,
                                   uint64_t offset, size_t len,
                                   image_io_cb cb, void *opaque)
{
    read_request(img, buf, offset, len, true, cb, opaque);
}

static void nfs_img_write(struct image *img, const void *buf, uint64_t offset,
                          size_t len, image_io_cb cb, void *opaque)
{
    int r = check_write_range(img, offset, len);
    if (r < 0) {
        image_complete_later(img, cb, opaque, r);
        return;
    }
    request_start(img, NFS_OP_WRITE, NULL, buf, offset, len, false, cb,
                  opaque);
}

static void nfs_img_write_zeroes(struct image *img, uint64_t offset,
                                 uint64_t len, unsigned flags,
                                 image_io_cb cb, void *opaque)
{
    (void)flags;    /* NFSv3 cannot deallocate; zeroes are written */
    int r = check_write_range(img, offset, len);
    if (r < 0) {
        image_complete_later(img, cb, opaque, r);
        return;
    }
    request_start(img, NFS_OP_ZEROES, NULL, NULL, offset, len, false, cb,
                  opaque);
}

/* A COMMIT (flush), or a SETATTR of the size (truncate): one call on the
 * file handle, sent again like a piece when the connection fails. */
struct nfs_flush {
    struct nfs_pending pend;    /* first: the list's entry is the flush */
    struct image *img;
    bool truncate;              /* SETATTR size = trunc_size, not COMMIT */
    uint64_t trunc_size;
    const struct nfsfh *fh_used;
    image_io_cb cb;
    void *opaque;
};

/* Complete the flush `f` with `err` (last_error already set). */
static void flush_finish(struct nfs_flush *f, int err)
{
    struct nfs_flush copy = *f;
    nfs_pending_remove(nfs_of(f->img), &f->pend);
    free(f);
    copy.cb(copy.opaque, err);
}

static void flush_abort(struct nfs_pending *pend)
{
    struct nfs_flush *f = (struct nfs_flush *)pend;
    flush_finish(f, nfs_dead_error(nfs_of(f->img)));
}

static void fsync_cb(int status, struct nfs_context *nfs, void *data,
                     void *private_data);

static const char *flush_what(const struct nfs_flush *f)
{
    return f->truncate ? "SETATTR (size)" : "COMMIT";
}

/* Send the COMMIT of `f`; returns 0 or -errno (last_error set). */
static int flush_send(struct nfs_flush *f)
{
    struct nfs_image *ni = nfs_of(f->img);
    if (ni->dead)
        return nfs_dead_error(ni);
    f->fh_used = ni->fh;
    int r = f->truncate
                ? nfs_ftruncate_async(ni->nfs, ni->fh, f->trunc_size,
                                      fsync_cb, f)
                : nfs_fsync_async(ni->nfs, ni->fh, fsync_cb, f);
    if (r < 0) {
        image_set_error(f->img, "NFS %s: %s", flush_what(f),
                        nfs_get_error(ni->nfs));
        return nfs_errno(r);
    }
    f->pend.in_libnfs = true;
    f->pend.sent_ns = loop_now_ns();
    return 0;
}

static void flush_resend(void *opaque)
{
    struct nfs_flush *f = opaque;
    int r = flush_send(f);
    if (r < 0)
        flush_finish(f, r);
}

static void fsync_cb(int status, struct nfs_context *nfs, void *data,
                     void *private_data)
{
    struct nfs_flush *f = private_data;
    struct nfs_image *ni = nfs_of(f->img);
    f->pend.in_libnfs = false;
    const char *detail = error_text(status, nfs, data);
    if (status >= 0) {
        nfs_conn_answered(ni);
        if (f->truncate)
            f->img->size = f->trunc_size;
        flush_finish(f, 0);
        return;
    }
    enum nfs_fault fault = nfs_classify_failure(ni, status, f->fh_used,
                                                detail);
    if (fault != NFS_FAULT_FAIL &&
        loop_add_timer(f->img->loop, nfs_retry_delay_ms(ni), flush_resend,
                       f) > 0)
        return;
    if (ni->dead) {
        flush_finish(f, nfs_dead_error(ni));
        return;
    }
    image_set_error(f->img, "NFS %s: %s", flush_what(f),
                    ni->relookup_error[0] ? ni->relookup_error : detail);
    flush_finish(f, nfs_errno(status));
}

/* Send a COMMIT or SETATTR of the size; complete cb later. */
static void flush_start(struct image *img, bool truncate, uint64_t size,
                        image_io_cb cb, void *opaque)
{
    struct nfs_image *ni = nfs_of(img);
    struct nfs_flush *f = malloc(sizeof *f);
    if (!f) {
        image_complete_later(img, cb, opaque, -ENOMEM);
        return;
    }
    *f = (struct nfs_flush){ .img = img, .truncate = truncate,
                             .trunc_size = size, .cb = cb,
                             .opaque = opaque };
    f->pend.abort = flush_abort;
    int r = flush_send(f);
    if (r < 0) {
        free(f);
        image_complete_later(img, cb, opaque, r);
        return;
    }
    nfs_pending_add(ni, &f->pend);
}

static void nfs_img_flush(struct image *img, image_io_cb cb, void *opaque)
{
    if (img->read_only) {
        image_complete_later(img, cb, opaque, 0);
        return;
    }
    flush_start(img, false, 0, cb, opaque);
}

static void nfs_img_truncate(struct image *img, uint64_t size,
                             image_io_cb cb, void *opaque)
{
    if (img->read_only) {
        image_set_error(img, "image is open read-only");
        image_complete_later(img, cb, opaque, -EROFS);
        return;
    }
    if (!nfs_of(img)->growable) {
        image_set_error(img, "the file was not opened to change its size");
        image_complete_later(img, cb, opaque, -ENOTSUP);
        return;
    }
    flush_start(img, true, size, cb, opaque);
}

static int nfs_img_close(struct image *img)
{
    struct nfs_image *ni = nfs_of(img);
    int r = 0;
    nfs_image_detach(ni);
    if (ni->dead)
        r = nfs_dead_error(ni);
    if (ni->nfs)
        nfs_set_timeout(ni->nfs, CLOSE_TIMEOUT_MS);
    if (ni->nfs && ni->fh) {
        r = nfs_close(ni->nfs, ni->fh);
        if (r < 0)
            image_set_error(img, "NFS close: %s", nfs_get_error(ni->nfs));
    }
    if (ni->nfs && ni->stale_fh)
        nfs_close(ni->nfs, ni->stale_fh);
    if (ni->nfs)
        nfs_destroy_context(ni->nfs);
    free(ni->path);
    free(ni);
    image_free_shell(img);
    return r < 0 ? r : 0;
}

const struct image_ops nfs_image_ops = {
    .name = "nfs",
    .read = nfs_img_read,
    .read_or_zeroes = nfs_img_read_or_zeroes,
    .write = nfs_img_write,
    .write_zeroes = nfs_img_write_zeroes,
    .flush = nfs_img_flush,
    .block_status = NULL,       /* NFSv3 has no SEEK_DATA */
    .truncate = nfs_img_truncate,
    .close = nfs_img_close,
};
