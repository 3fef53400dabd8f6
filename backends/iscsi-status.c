/* iscsi-status.c — block status of an iSCSI LUN.
 *
 * On a thin-provisioned LUN (LBPME set by READ CAPACITY(16)) one GET LBA
 * STATUS asks for at most STATUS_MAX_DESC descriptors starting at the
 * requested LBA: mapped blocks are EXTENT_DATA, deallocated or anchored
 * blocks EXTENT_HOLE when the LUN says unmapped blocks read as zeroes
 * (LBPRZ), else EXTENT_DATA (their contents are not defined).  Other LUNs,
 * and targets that refuse the command, answer with one EXTENT_DATA extent
 * for the whole range, like a backend without block_status.  A command
 * that times out is issued again, as on the data path (iscsi-io.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "iscsi-priv.h"

#define STATUS_MAX_DESC 64
/* Pause before a timed-out GET LBA STATUS is issued again. */
#define STATUS_TIMEOUT_RETRY_MS 100

struct status_req {
    struct iscsi_lun *l;
    uint64_t offset;
    uint64_t length;        /* clipped to the LUN */
    int retries;
    struct iscsi_cmd cmd;   /* the GET LBA STATUS in flight */
    image_extents_cb cb;
    void *opaque;
};

static void answer_data(struct status_req *s)
{
    struct extent e = { s->offset, s->length, EXTENT_DATA };
    image_extents_cb cb = s->cb;
    void *opaque = s->opaque;
    free(s);
    cb(opaque, 0, &e, 1);
}

static void answer_error(struct status_req *s, int err)
{
    image_extents_cb cb = s->cb;
    void *opaque = s->opaque;
    free(s);
    cb(opaque, err, NULL, 0);
}

/* Answer on a later loop iteration (never inside the caller's call, even
 * without memory: image_extents_later cannot fail): `err`, or with err 0
 * one EXTENT_DATA extent for the whole request.  Frees `s`. */
static void defer_answer(struct status_req *s, int err)
{
    struct extent e = { s->offset, s->length, EXTENT_DATA };
    struct image *img = s->l->img;
    image_extents_cb cb = s->cb;
    void *opaque = s->opaque;
    free(s);
    image_extents_later(img, cb, opaque, err, &e);
}

/* Turn the descriptors into extents clipped to the request, merging
 * neighbours of the same type.  Returns the number of extents (0 if the
 * answer does not cover the requested offset). */
static size_t to_extents(const struct status_req *s,
                         const struct scsi_get_lba_status *st,
                         struct extent *ext)
{
    uint64_t bs = s->l->block_size;
    uint64_t cursor = s->offset;
    uint64_t end = s->offset + s->length;
    size_t n = 0;
    for (uint32_t i = 0; i < st->num_descriptors && cursor < end; i++) {
        const struct scsi_lba_status_descriptor *d = &st->descriptors[i];
        uint64_t d_start = d->lba * bs;
        uint64_t d_end = (d->lba + d->num_blocks) * bs;
        if (d->num_blocks == 0 || d_end <= cursor)
            continue;
        if (d_start > cursor)
            break; /* a gap: stop at what we know */
        enum extent_type type = EXTENT_DATA;
        if (d->provisioning != SCSI_PROVISIONING_TYPE_MAPPED && s->l->lbprz)
            type = EXTENT_HOLE;
        uint64_t e_end = d_end < end ? d_end : end;
        if (n > 0 && ext[n - 1].type == type) {
            ext[n - 1].length += e_end - cursor;
        } else {
            ext[n++] = (struct extent){ cursor, e_end - cursor, type };
        }
        cursor = e_end;
    }
    return n;
}

static int issue(struct status_req *s);

static void retry_later(void *opaque)
{
    struct status_req *s = opaque;
    int r = issue(s);
    if (r < 0)
        answer_error(s, r);
}

static void status_cb(struct iscsi_context *ctx, int status,
                      void *command_data, void *private_data)
{
    (void)ctx;
    (void)command_data;
    struct status_req *s = private_data;
    struct iscsi_lun *l = s->l;
    struct scsi_task *t = iscsi_cmd_untrack(l, &s->cmd);

    if (l->dead) {
        scsi_free_scsi_task(t);
        answer_error(s, iscsi_dead_error(l));
        return;
    }
    if (status == SCSI_STATUS_TIMEOUT) {
        /* As on the data path: a lost connection, asked to be
         * reconnected; issued again until the session is given up. */
        scsi_free_scsi_task(t);
        iscsi_request_timed_out(l);
        if (loop_add_timer(l->img->loop, STATUS_TIMEOUT_RETRY_MS,
                           retry_later, s) <= 0)
            answer_error(s, -ENOMEM);
        return;
    }
    if (status != SCSI_STATUS_CANCELLED && status != SCSI_STATUS_ERROR)
        iscsi_target_answered(l);
    if (status == SCSI_STATUS_GOOD) {
        struct scsi_get_lba_status *st = scsi_datain_unmarshall(t);
        struct extent ext[STATUS_MAX_DESC];
        size_t n = st ? to_extents(s, st, ext) : 0;
        scsi_free_scsi_task(t);
        if (n == 0) {
            answer_data(s);
            return;
        }
        image_extents_cb cb = s->cb;
        void *opaque = s->opaque;
        free(s);
        cb(opaque, 0, ext, n);
        return;
    }
    if (iscsi_should_retry(status, t) && s->retries < ISCSI_MAX_RETRIES) {
        s->retries++;
        scsi_free_scsi_task(t);
        if (loop_add_timer(l->img->loop, 10u * (unsigned)s->retries,
                           retry_later, s) <= 0)
            answer_error(s, -ENOMEM);
        return;
    }
    if (status == SCSI_STATUS_CHECK_CONDITION && t &&
        t->sense.key == SCSI_SENSE_ILLEGAL_REQUEST &&
        t->sense.ascq != SCSI_SENSE_ASCQ_LBA_OUT_OF_RANGE) {
        /* No GET LBA STATUS here: everything is data from now on. */
        l->lba_status_rejected = true;
        scsi_free_scsi_task(t);
        answer_data(s);
        return;
    }
    char what[80];
    snprintf(what, sizeof what, "GET LBA STATUS at LBA %" PRIu64,
             s->offset / l->block_size);
    int err = iscsi_report_failure(l, status, t, what);
    if (t)
        scsi_free_scsi_task(t);
    answer_error(s, err);
}

/* Queue the GET LBA STATUS.  Returns 0, or -errno with last_error set. */
static void status_abort(struct iscsi_cmd *c)
{
    struct status_req *s = (struct status_req *)((char *)c -
                                                 offsetof(struct status_req, cmd));
    answer_error(s, iscsi_dead_error(s->l));
}

static int issue(struct status_req *s)
{
    struct iscsi_lun *l = s->l;
    if (l->dead)
        return iscsi_dead_error(l);
    uint32_t alloc_len = 8 + 16 * STATUS_MAX_DESC;
    struct scsi_task *task = iscsi_get_lba_status_task(
        l->ctx, l->lun, s->offset / l->block_size, alloc_len, status_cb, s);
    if (!task) {
        image_set_error(l->img, "GET LBA STATUS: cannot queue: %s",
                        iscsi_get_error(l->ctx));
        return -ENOMEM;
    }
    s->cmd.abort = status_abort;
    iscsi_cmd_track(l, &s->cmd, task);
    return 0;
}

void iscsi_op_block_status(struct image *img, uint64_t offset,
                           uint64_t length, image_extents_cb cb,
                           void *opaque)
{
    struct iscsi_lun *l = iscsi_lun_of(img);
    struct status_req *s = calloc(1, sizeof *s);
    if (!s) {
        /* Nothing can be scheduled without memory (as image_block_status
         * does in the same case). */
        cb(opaque, -ENOMEM, NULL, 0);
        return;
    }
    *s = (struct status_req){ .l = l, .offset = offset, .length = length,
                              .cb = cb, .opaque = opaque };
    if (offset >= img->size || length == 0) {
        image_set_error(img, "block status at %" PRIu64 "+%" PRIu64
                        ": outside the LUN (%" PRIu64 " bytes)",
                        offset, length, img->size);
        defer_answer(s, -EINVAL);
        return;
    }
    if (length > img->size - offset)
        s->length = img->size - offset;
    if (l->dead) {
        defer_answer(s, iscsi_dead_error(l));
        return;
    }
    if (!l->lbpme || l->lba_status_rejected) {
        defer_answer(s, 0);
        return;
    }
    int r = issue(s);
    if (r < 0)
        defer_answer(s, r);
}
