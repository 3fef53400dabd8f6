/* iscsi-io.c — the iscsi backend's data path: READ16, WRITE16, zeroing
 * (WRITE SAME(16) with or without UNMAP, or WRITE16 from a shared zero
 * buffer) and SYNCHRONIZE CACHE(16), all asynchronous.
 *
 * An image request becomes a `struct io_req`; it is cut into pieces that
 * each fit one command's limit (Block Limits VPD), and up to
 * ISCSI_REQ_WINDOW pieces are in flight at once.  The request completes
 * when its last piece does.  Reads and writes go straight between the
 * caller's buffer and the socket (iovec tasks, no copy).
 *
 * A piece whose command fails with UNIT ATTENTION, BUSY or TASK SET FULL
 * is issued again (libiscsi itself re-issues commands that were in flight
 * across a reconnect).  One that timed out (no answer within the request
 * timeout) forces a reconnect (iscsi_request_timed_out) and is issued
 * again, for as long as the session is not given up.  A zeroing piece whose WRITE SAME the target
 * rejects (ILLEGAL REQUEST) falls back — WRITE SAME+UNMAP, then plain
 * WRITE SAME, then zero-buffer writes — and the LUN remembers it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi-priv.h"

enum io_kind { IO_READ, IO_WRITE, IO_ZERO, IO_FLUSH };

/* Pause before a timed-out command is issued again (the forced reconnect
 * has begun by then; libiscsi queues it until the new login). */
#define TIMEOUT_RETRY_MS 100

/* How one piece is carried out; zeroing pieces may step down the list. */
enum piece_mode {
    MODE_READ16,
    MODE_WRITE16,
    MODE_WS_UNMAP,      /* WRITE SAME(16), UNMAP bit set */
    MODE_WS,            /* WRITE SAME(16) without UNMAP */
    MODE_ZERO_WRITE,    /* WRITE16 from iscsi_zero_buf */
    MODE_SYNC,          /* SYNCHRONIZE CACHE(16) */
};

struct io_req {
    struct iscsi_lun *l;
    enum io_kind kind;
    unsigned flags;         /* IMAGE_ZERO_* */
    uint8_t *buf;           /* read/write data, NULL otherwise */
    uint64_t first_lba;     /* buf[0] is this LBA */
    uint64_t next_lba;      /* first LBA not yet given to a piece */
    uint64_t end_lba;
    bool flush_issued;
    int in_flight;          /* pieces issued and not finished */
    int err;                /* first error, 0 if none */
    bool submitting;        /* inside the image_ops call that started it */
    image_io_cb cb;
    void *opaque;
};

struct io_piece {
    struct io_req *req;
    enum piece_mode mode;
    uint64_t lba;           /* first LBA still to do */
    uint32_t nblocks;       /* blocks still to do */
    uint32_t cmd_blocks;    /* blocks of the command in flight */
    int retries;
    struct iscsi_cmd cmd;   /* the command in flight */
    struct scsi_iovec iov;
};

static bool req_pump(struct io_req *req);
static void piece_cb(struct iscsi_context *ctx, int status, void *command_data,
                     void *private_data);

static const char *mode_name(enum piece_mode m)
{
    switch (m) {
    case MODE_READ16: return "READ16";
    case MODE_WRITE16: return "WRITE16";
    case MODE_WS_UNMAP: return "WRITE SAME(16) with UNMAP";
    case MODE_WS: return "WRITE SAME(16)";
    case MODE_ZERO_WRITE: return "WRITE16 (zeroes)";
    case MODE_SYNC: return "SYNCHRONIZE CACHE(16)";
    }
    return "?";
}

static uint32_t mode_limit(const struct iscsi_lun *l, enum piece_mode m)
{
    switch (m) {
    case MODE_WS_UNMAP:
    case MODE_WS:
        return l->max_ws_blocks;
    case MODE_ZERO_WRITE:
        return l->zero_blocks;
    default:
        return l->max_xfer_blocks;
    }
}

/* How the next zeroing piece of `req` is done, given what the LUN
 * supports and what it has rejected so far. */
static enum piece_mode zero_mode(const struct io_req *req)
{
    const struct iscsi_lun *l = req->l;
    if ((req->flags & IMAGE_ZERO_MAY_UNMAP) && l->lbpme && l->lbpws &&
        !l->ws_unmap_rejected)
        return MODE_WS_UNMAP;
    if (!l->ws_rejected)
        return MODE_WS;
    return MODE_ZERO_WRITE;
}

/* Queue the command for the next part of `p`.  Returns 0, or -errno with
 * the image's last_error set. */
static void piece_abort(struct iscsi_cmd *c);

static int piece_issue(struct io_piece *p)
{
    struct iscsi_lun *l = p->req->l;
    if (l->dead)
        return iscsi_dead_error(l);
    struct iscsi_context *ctx = l->ctx;
    struct scsi_task *task = NULL;
    uint32_t bs = l->block_size;
    uint32_t n = p->nblocks;
    uint32_t limit = mode_limit(l, p->mode);
    if (n > limit)
        n = limit;
    p->cmd_blocks = n;
    uint32_t bytes = n * bs;
    switch (p->mode) {
    case MODE_READ16:
        p->iov = (struct scsi_iovec){
            p->req->buf + (p->lba - p->req->first_lba) * bs, bytes };
        task = iscsi_read16_iov_task(ctx, l->lun, p->lba, bytes, (int)bs,
                                        0, 0, 0, 0, 0, piece_cb, p,
                                        &p->iov, 1);
        break;
    case MODE_WRITE16:
        p->iov = (struct scsi_iovec){
            p->req->buf + (p->lba - p->req->first_lba) * bs, bytes };
        task = iscsi_write16_iov_task(ctx, l->lun, p->lba, NULL, bytes,
                                         (int)bs, 0, 0, 0, 0, 0, piece_cb, p,
                                         &p->iov, 1);
        break;
    case MODE_ZERO_WRITE:
        p->iov = (struct scsi_iovec){ iscsi_zero_buf, bytes };
        task = iscsi_write16_iov_task(ctx, l->lun, p->lba, NULL, bytes,
                                         (int)bs, 0, 0, 0, 0, 0, piece_cb, p,
                                         &p->iov, 1);
        break;
    case MODE_WS_UNMAP:
    case MODE_WS:
        task = iscsi_writesame16_task(ctx, l->lun, p->lba, iscsi_zero_buf,
                                         bs, n, 0, p->mode == MODE_WS_UNMAP,
                                         0, 0, piece_cb, p);
        break;
    case MODE_SYNC:
        task = iscsi_synchronizecache16_task(ctx, l->lun, 0, 0, 0, 0,
                                                piece_cb, p);
        break;
    }
    if (!task) {
        image_set_error(l->img, "%s at LBA %" PRIu64 ": cannot queue: %s",
                        mode_name(p->mode), p->lba, iscsi_get_error(ctx));
        return -ENOMEM;
    }
    p->cmd.abort = piece_abort;
    iscsi_cmd_track(l, &p->cmd, task);
    return 0;
}

static void finish_req(struct io_req *req)
{
    image_io_cb cb = req->cb;
    void *opaque = req->opaque;
    int err = req->err;
    struct image *img = req->l->img;
    bool later = req->submitting;
    free(req);
    if (later)
        image_complete_later(img, cb, opaque, err);
    else
        cb(opaque, err);
}

static void piece_done(struct io_piece *p, int err)
{
    struct io_req *req = p->req;
    free(p);
    req->in_flight--;
    if (err && !req->err)
        req->err = err;
    req_pump(req);
}

static void piece_abort(struct iscsi_cmd *c)
{
    struct io_piece *p = (struct io_piece *)((char *)c -
                                             offsetof(struct io_piece, cmd));
    piece_done(p, iscsi_dead_error(p->req->l));
}

static void piece_retry(void *opaque)
{
    struct io_piece *p = opaque;
    int r = piece_issue(p);
    if (r < 0)
        piece_done(p, r);
}

/* A zeroing piece's WRITE SAME was refused: step down and try again. */
static bool ws_rejected(struct io_piece *p, int status, struct scsi_task *t)
{
    if ((p->mode != MODE_WS_UNMAP && p->mode != MODE_WS) ||
        status != SCSI_STATUS_CHECK_CONDITION || !t ||
        t->sense.key != SCSI_SENSE_ILLEGAL_REQUEST ||
        t->sense.ascq == SCSI_SENSE_ASCQ_LBA_OUT_OF_RANGE)
        return false;
    struct iscsi_lun *l = p->req->l;
    if (p->mode == MODE_WS_UNMAP) {
        l->ws_unmap_rejected = true;
        l->img->can_unmap = false;
        p->mode = l->ws_rejected ? MODE_ZERO_WRITE : MODE_WS;
    } else {
        l->ws_rejected = true;
        p->mode = MODE_ZERO_WRITE;
    }
    return true;
}

static void piece_cb(struct iscsi_context *ctx, int status, void *command_data,
                     void *private_data)
{
    (void)ctx;
    (void)command_data; /* the tracked task when present; may be NULL */
    struct io_piece *p = private_data;
    struct iscsi_lun *l = p->req->l;
    struct scsi_task *t = iscsi_cmd_untrack(l, &p->cmd);

    if (l->dead) {
        scsi_free_scsi_task(t);
        piece_done(p, iscsi_dead_error(l));
        return;
    }
    if (status == SCSI_STATUS_TIMEOUT) {
        /* Bounded by the reconnect timeout: the tick gives the session
         * up, and a dead session fails the re-issue. */
        scsi_free_scsi_task(t);
        iscsi_request_timed_out(l);
        if (loop_add_timer(l->img->loop, TIMEOUT_RETRY_MS, piece_retry,
                           p) <= 0)
            piece_done(p, -ENOMEM);
        return;
    }
    if (status != SCSI_STATUS_CANCELLED && status != SCSI_STATUS_ERROR)
        iscsi_target_answered(l);
    if (status == SCSI_STATUS_GOOD && p->mode == MODE_READ16 &&
        t->residual_status == SCSI_RESIDUAL_UNDERFLOW && t->residual > 0) {
        image_set_error(l->img, "READ16 at LBA %" PRIu64 ": target sent "
                        "%zu bytes less than asked", p->lba, t->residual);
        scsi_free_scsi_task(t);
        piece_done(p, -EIO);
        return;
    }
    if (status == SCSI_STATUS_GOOD) {
        scsi_free_scsi_task(t);
        p->lba += p->cmd_blocks;
        p->nblocks -= p->cmd_blocks;
        p->retries = 0;
        if (p->nblocks == 0 || p->mode == MODE_SYNC) {
            piece_done(p, 0);
            return;
        }
        piece_retry(p);
        return;
    }
    if (iscsi_should_retry(status, t) && p->retries < ISCSI_MAX_RETRIES) {
        p->retries++;
        scsi_free_scsi_task(t);
        if (loop_add_timer(l->img->loop, 10u * (unsigned)p->retries,
                           piece_retry, p) <= 0)
            piece_done(p, -ENOMEM);
        return;
    }
    if (ws_rejected(p, status, t)) {
        scsi_free_scsi_task(t);
        piece_retry(p);
        return;
    }
    char what[96];
    snprintf(what, sizeof what, "%s at LBA %" PRIu64 " (%" PRIu32 " blocks)",
             mode_name(p->mode), p->lba, p->cmd_blocks);
    int err = iscsi_report_failure(l, status, t, what);
    if (t)
        scsi_free_scsi_task(t);
    piece_done(p, err);
}

static int start_piece(struct io_req *req, enum piece_mode mode, uint64_t lba,
                       uint32_t nblocks)
{
    struct io_piece *p = calloc(1, sizeof *p);
    if (!p) {
        image_set_error(req->l->img, "out of memory");
        return -ENOMEM;
    }
    *p = (struct io_piece){ .req = req, .mode = mode, .lba = lba,
                            .nblocks = nblocks };
    int r = piece_issue(p);
    if (r < 0) {
        free(p);
        return r;
    }
    req->in_flight++;
    return 0;
}

/* Issue pieces while the window has room; finish (and free) the request
 * when nothing is left in flight.  Returns true if it finished. */
static bool req_pump(struct io_req *req)
{
    while (!req->err && req->in_flight < ISCSI_REQ_WINDOW) {
        int r;
        if (req->kind == IO_FLUSH) {
            if (req->flush_issued)
                break;
            req->flush_issued = true;
            r = start_piece(req, MODE_SYNC, 0, 0);
        } else {
            if (req->next_lba >= req->end_lba)
                break;
            enum piece_mode mode = req->kind == IO_READ    ? MODE_READ16
                                   : req->kind == IO_WRITE ? MODE_WRITE16
                                                           : zero_mode(req);
            uint64_t n = req->end_lba - req->next_lba;
            uint32_t limit = mode_limit(req->l, mode);
            if (n > limit)
                n = limit;
            r = start_piece(req, mode, req->next_lba, (uint32_t)n);
            if (r == 0)
                req->next_lba += n;
        }
        if (r < 0)
            req->err = r;
    }
    if (req->in_flight > 0)
        return false;
    finish_req(req);
    return true;
}

/* Check alignment and range; returns 0 or the errno to complete with. */
static int check_range(struct image *img, uint64_t offset, uint64_t len,
                       enum io_kind kind)
{
    uint32_t bs = img->block_size;
    if (offset % bs || len % bs) {
        image_set_error(img, "offset %" PRIu64 " / length %" PRIu64
                        " not a multiple of the LUN block size %" PRIu32,
                        offset, len, bs);
        return -EINVAL;
    }
    if (kind != IO_READ && img->read_only) {
        image_set_error(img, "image is open read-only");
        return -EROFS;
    }
    if (offset > img->size || len > img->size - offset) {
        image_set_error(img, "range %" PRIu64 "+%" PRIu64 " is past the end "
                        "of the LUN (%" PRIu64 " bytes)", offset, len,
                        img->size);
        return kind == IO_READ ? -EINVAL : -ENOSPC;
    }
    return 0;
}

static void start_req(struct image *img, enum io_kind kind, uint8_t *buf,
                      uint64_t offset, uint64_t len, unsigned flags,
                      image_io_cb cb, void *opaque)
{
    struct iscsi_lun *lun = iscsi_lun_of(img);
    int err = lun->dead         ? iscsi_dead_error(lun)
              : kind == IO_FLUSH ? 0
                                 : check_range(img, offset, len, kind);
    struct io_req *req = err ? NULL : calloc(1, sizeof *req);
    if (!req) {
        if (!err)
            err = -ENOMEM;
        image_complete_later(img, cb, opaque, err);
        return;
    }
    struct iscsi_lun *l = iscsi_lun_of(img);
    uint32_t bs = l->block_size;
    *req = (struct io_req){ .l = l, .kind = kind, .flags = flags, .buf = buf,
                            .first_lba = offset / bs,
                            .next_lba = offset / bs,
                            .end_lba = (offset + len) / bs,
                            .submitting = true, .cb = cb, .opaque = opaque };
    /* A request that finishes at once (zero length, or nothing could be
     * queued) completes through image_complete_later. */
    if (!req_pump(req))
        req->submitting = false;
}

void iscsi_op_read(struct image *img, void *buf, uint64_t offset, size_t len,
                   image_io_cb cb, void *opaque)
{
    start_req(img, IO_READ, buf, offset, len, 0, cb, opaque);
}

void iscsi_op_write(struct image *img, const void *buf, uint64_t offset,
                    size_t len, image_io_cb cb, void *opaque)
{
    /* libiscsi only reads the buffer of a WRITE16 task. */
    start_req(img, IO_WRITE, (uint8_t *)buf, offset, len, 0, cb, opaque);
}

void iscsi_op_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                           unsigned flags, image_io_cb cb, void *opaque)
{
    start_req(img, IO_ZERO, NULL, offset, len, flags, cb, opaque);
}

void iscsi_op_flush(struct image *img, image_io_cb cb, void *opaque)
{
    start_req(img, IO_FLUSH, NULL, 0, 0, 0, cb, opaque);
}
