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
 * generic "all data" answer.  Opening lives in nfs-open.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <nfsc/libnfs.h>

#include "nfs-image.h"
#include "protocols.h"

/* Pieces of one request outstanding at once.  Enough to keep a server
 * busy (the engine runs many requests in parallel as well) while keeping
 * the memory of a huge write_zeroes bounded. */
#define PIECES_IN_FLIGHT 32

/* write_zeroes source: never written, shared by every image and thread. */
#define ZERO_BUF_SIZE (1u << 20)
static uint8_t zero_buf[ZERO_BUF_SIZE];

/* How often libnfs gets nfs_service(0) to expire timed-out calls. */
#define SERVICE_TICK_MS 1000

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
    int err;                    /* first error, 0 if none */
    image_io_cb cb;
    void *opaque;
};

/* The part of a request one libnfs call works on; offset/len shrink as
 * short replies are accounted. */
struct nfs_piece {
    struct nfs_request *req;
    uint64_t offset;
    uint64_t len;
};

static struct nfs_image *nfs_of(struct image *img)
{
    return img->priv;
}

/* Complete `cb` on the next iteration (never inside the issuing call). */
static void complete_later(struct image *img, image_io_cb cb, void *opaque,
                           int err)
{
    if (image_complete_later(img, cb, opaque, err) < 0)
        cb(opaque, -ENOMEM);
}

/* libnfs reports an RPC failure (connection lost) as -EFAULT and an RPC
 * timeout as -EINTR; callers get the errnos that mean that. */
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

/* Store the libnfs reason for a failure, unless an earlier failure of the
 * same request already did. */
static void request_fail(struct nfs_request *req, int err, const char *what,
                         uint64_t offset, const char *detail)
{
    if (req->err)
        return;
    req->err = nfs_errno(err);
    image_set_error(req->ni->img, "NFS %s at offset %" PRIu64 ": %s", what,
                    offset, detail && *detail ? detail : strerror(-req->err));
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
    if (!err && req->op != NFS_OP_READ && req->end > ni->img->size)
        ni->img->size = req->end;       /* growable file got longer */
    free(req);
    if (from_issue)
        complete_later(ni->img, cb, opaque, err);
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
    free(p);
    req->in_flight--;
    issue_pieces(req, false);
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
    if (status < 0) {
        request_fail(req, status, "GETATTR after short READ", p->offset,
                     data ? (const char *)data : nfs_get_error(nfs));
    } else if (!req->err) {
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

static void read_cb(int status, struct nfs_context *nfs, void *data,
                    void *private_data)
{
    struct nfs_piece *p = private_data;
    struct nfs_request *req = p->req;
    if (status < 0) {
        request_fail(req, status, "READ", p->offset,
                     data ? (const char *)data : nfs_get_error(nfs));
        piece_done(p);
        return;
    }
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
        if (nfs_fstat64_async(req->ni->nfs, req->ni->fh, fstat_at_eof_cb,
                              p) < 0) {
            request_fail(req, -EIO, "GETATTR after short READ", p->offset,
                         nfs_get_error(nfs));
            piece_done(p);
        }
        return;
    }
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
    if (status < 0) {
        request_fail(req, status, "WRITE", p->offset,
                     data ? (const char *)data : nfs_get_error(nfs));
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
        *p = (struct nfs_piece){ req, req->next, len };
        req->next += len;
        /* Counted before submitting, in case libnfs ever calls back at
         * once. */
        req->in_flight++;
        if (piece_submit(p) < 0) {
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
                          image_io_cb cb, void *opaque)
{
    struct nfs_image *ni = nfs_of(img);
    if (ni->dead) {
        image_set_error(img, "connection to the NFS server lost and not "
                        "re-established (%s)", nfs_get_error(ni->nfs));
        complete_later(img, cb, opaque, -EIO);
        return;
    }
    if (len == 0) {
        complete_later(img, cb, opaque, 0);
        return;
    }
    struct nfs_request *req = malloc(sizeof *req);
    if (!req) {
        complete_later(img, cb, opaque, -ENOMEM);
        return;
    }
    *req = (struct nfs_request){
        .ni = ni, .op = op, .rbuf = rbuf, .wbuf = wbuf,
        .start = offset, .end = offset + len, .next = offset,
        .cb = cb, .opaque = opaque,
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

static void nfs_img_read(struct image *img, void *buf, uint64_t offset,
                         size_t len, image_io_cb cb, void *opaque)
{
    if (offset > img->size || len > img->size - offset) {
        image_set_error(img, "read of %zu bytes at offset %" PRIu64
                        " goes past the end of the image (%" PRIu64
                        " bytes)", len, offset, img->size);
        complete_later(img, cb, opaque, -EINVAL);
        return;
    }
    request_start(img, NFS_OP_READ, buf, NULL, offset, len, cb, opaque);
}

static void nfs_img_write(struct image *img, const void *buf, uint64_t offset,
                          size_t len, image_io_cb cb, void *opaque)
{
    int r = check_write_range(img, offset, len);
    if (r < 0) {
        complete_later(img, cb, opaque, r);
        return;
    }
    request_start(img, NFS_OP_WRITE, NULL, buf, offset, len, cb, opaque);
}

static void nfs_img_write_zeroes(struct image *img, uint64_t offset,
                                 uint64_t len, unsigned flags,
                                 image_io_cb cb, void *opaque)
{
    (void)flags;    /* NFSv3 cannot deallocate; zeroes are written */
    int r = check_write_range(img, offset, len);
    if (r < 0) {
        complete_later(img, cb, opaque, r);
        return;
    }
    request_start(img, NFS_OP_ZEROES, NULL, NULL, offset, len, cb, opaque);
}

struct nfs_flush {
    struct image *img;
    image_io_cb cb;
    void *opaque;
};

static void fsync_cb(int status, struct nfs_context *nfs, void *data,
                     void *private_data)
{
    struct nfs_flush *f = private_data;
    struct nfs_flush copy = *f;
    free(f);
    if (status < 0)
        image_set_error(copy.img, "NFS COMMIT: %s",
                        data ? (const char *)data : nfs_get_error(nfs));
    copy.cb(copy.opaque, status < 0 ? nfs_errno(status) : 0);
}

static void nfs_img_flush(struct image *img, image_io_cb cb, void *opaque)
{
    struct nfs_image *ni = nfs_of(img);
    if (img->read_only) {
        complete_later(img, cb, opaque, 0);
        return;
    }
    struct nfs_flush *f = malloc(sizeof *f);
    if (!f) {
        complete_later(img, cb, opaque, -ENOMEM);
        return;
    }
    *f = (struct nfs_flush){ img, cb, opaque };
    int r = ni->dead ? -EIO : nfs_fsync_async(ni->nfs, ni->fh, fsync_cb, f);
    if (r < 0) {
        free(f);
        image_set_error(img, "NFS COMMIT: %s", nfs_get_error(ni->nfs));
        complete_later(img, cb, opaque, r);
    }
}

static int nfs_img_close(struct image *img)
{
    struct nfs_image *ni = nfs_of(img);
    int r = 0;
    loop_remove_poller(img->loop, &ni->poller);
    if (ni->service_timer > 0)
        loop_cancel_timer(img->loop, ni->service_timer);
    if (ni->fh && !ni->dead) {
        r = nfs_close(ni->nfs, ni->fh);
        if (r < 0)
            image_set_error(img, "NFS close: %s", nfs_get_error(ni->nfs));
    }
    nfs_destroy_context(ni->nfs);
    free(ni);
    image_free_shell(img);
    return r < 0 ? r : 0;
}

const struct image_ops nfs_image_ops = {
    .name = "nfs",
    .read = nfs_img_read,
    .write = nfs_img_write,
    .write_zeroes = nfs_img_write_zeroes,
    .flush = nfs_img_flush,
    .block_status = NULL,       /* NFSv3 has no SEEK_DATA */
    .close = nfs_img_close,
};

/* --- loop glue --------------------------------------------------------- */

/* libnfs reconnects by dup2()ing the new socket onto the old descriptor
 * number; the loop re-arms every round, so returning the fd is enough. */
static int poll_get_fd(void *opaque)
{
    struct nfs_image *ni = opaque;
    if (ni->dead)
        return -1;
    return nfs_get_fd(ni->nfs);
}

static int poll_events(void *opaque)
{
    struct nfs_image *ni = opaque;
    return nfs_which_events(ni->nfs);
}

static int poll_service(void *opaque, int revents)
{
    struct nfs_image *ni = opaque;
    if (ni->dead)
        return -1;
    if (nfs_service(ni->nfs, revents) < 0) {
        /* Unrecoverable (reconnect failed or disabled).  Calls still
         * queued are failed by the timeout scan of the service timer;
         * new ones are refused. */
        ni->dead = true;
        image_set_error(ni->img, "connection to the NFS server lost and "
                        "not re-established (%s)", nfs_get_error(ni->nfs));
        return -1;
    }
    return 0;
}

static void service_tick(void *opaque)
{
    struct nfs_image *ni = opaque;
    ni->service_timer = 0;
    /* Also when dead: the timeout scan fails calls left queued on a
     * connection libnfs gave up on. */
    nfs_service(ni->nfs, 0);
    int64_t id = loop_add_timer(ni->img->loop, SERVICE_TICK_MS, service_tick,
                                ni);
    ni->service_timer = id > 0 ? id : 0;
}

void nfs_image_attach(struct nfs_image *ni)
{
    ni->poller = (struct loop_poller){
        .get_fd = poll_get_fd,
        .events = poll_events,
        .service = poll_service,
        .opaque = ni,
    };
    loop_add_poller(ni->img->loop, &ni->poller);
    int64_t id = loop_add_timer(ni->img->loop, SERVICE_TICK_MS, service_tick,
                                ni);
    ni->service_timer = id > 0 ? id : 0;
}
