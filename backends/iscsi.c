/* iscsi.c — the iscsi:// protocol backend: opening a LUN (URL, CHAP
 * secret, login, READ CAPACITY(16), VPD pages), the loop glue (poller and
 * periodic tick) and close.  The data path is in iscsi-io.c, block status
 * in iscsi-status.c.
 *
 * Opening runs libiscsi's asynchronous calls on the image's loop and spins
 * the loop until each finishes or a deadline passes, so an unreachable
 * portal, a wrong IQN or LUN, or a failed login is reported within
 * seconds.  After open only the asynchronous API is used.
 *
 * Reconnects are libiscsi's: it re-issues the commands that were in flight
 * and the unit attentions of the new session are consumed by TEST UNIT
 * READY (no_ua_on_reconnect).  A command unanswered for
 * $IMGFS_REQUEST_TIMEOUT seconds (libiscsi's task timeout, default 30)
 * counts as a lost connection: a reconnect is forced and the command
 * issued again (libiscsi itself would only fail it).  If no session can
 * be re-established, or the target answers nothing, for
 * $IMGFS_RECONNECT_TIMEOUT seconds (io-timeouts.h: default 120, 0 =
 * forever) the session is given up: whatever is in flight, and every
 * later request, fails with -EIO ("iSCSI session lost").
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "io-timeouts.h"
#include "iscsi-priv.h"
#include "protocols.h"

#define DEFAULT_INITIATOR "iqn.2026-11.org.imgfs:initiator"
/* Deadline for connect + login + TEST UNIT READY, and for each command
 * issued while opening. */
#define OPEN_TIMEOUT_S 5
/* Period of the tick that lets libiscsi run timeouts and reconnects. */
#define TICK_MS 200
/* The data path's task timeout and the time a session may stay lost come
 * from io-timeouts.h. */

unsigned char iscsi_zero_buf[ISCSI_ZERO_BUF_SIZE];

/* ---- errors ---------------------------------------------------------- */

static const char *status_name(int status)
{
    switch (status) {
    case SCSI_STATUS_GOOD: return "GOOD";
    case SCSI_STATUS_CHECK_CONDITION: return "CHECK CONDITION";
    case SCSI_STATUS_BUSY: return "BUSY";
    case SCSI_STATUS_RESERVATION_CONFLICT: return "RESERVATION CONFLICT";
    case SCSI_STATUS_TASK_SET_FULL: return "TASK SET FULL";
    case SCSI_STATUS_TASK_ABORTED: return "TASK ABORTED";
    case SCSI_STATUS_CANCELLED: return "cancelled";
    case SCSI_STATUS_TIMEOUT: return "timed out";
    case SCSI_STATUS_ERROR: return "transport error";
    default: return "unexpected status";
    }
}

int iscsi_report_failure(struct iscsi_lun *l, int status,
                         struct scsi_task *task, const char *what)
{
    const char *lib = iscsi_get_error(l->ctx);
    if (status == SCSI_STATUS_CHECK_CONDITION && task) {
        image_set_error(l->img, "%s: CHECK CONDITION, sense key %s (0x%x), "
                        "%s (ASC/ASCQ 0x%04x)", what,
                        scsi_sense_key_str(task->sense.key), task->sense.key,
                        scsi_sense_ascq_str(task->sense.ascq),
                        task->sense.ascq);
        if (task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST &&
            task->sense.ascq == SCSI_SENSE_ASCQ_LBA_OUT_OF_RANGE)
            return -ENOSPC;
        if (task->sense.key == SCSI_SENSE_DATA_PROTECTION)
            return -EROFS;
        return -EIO;
    }
    image_set_error(l->img, "%s: %s (0x%x)%s%s", what, status_name(status),
                    status, lib && *lib ? ": " : "", lib ? lib : "");
    if (status == SCSI_STATUS_TIMEOUT)
        return -ETIMEDOUT;
    if (status == SCSI_STATUS_CANCELLED)
        return -ECANCELED;
    return -EIO;
}

bool iscsi_should_retry(int status, const struct scsi_task *task)
{
    if (status == SCSI_STATUS_BUSY || status == SCSI_STATUS_TASK_SET_FULL)
        return true;
    return status == SCSI_STATUS_CHECK_CONDITION && task &&
           task->sense.key == SCSI_SENSE_UNIT_ATTENTION;
}

/* ---- giving up a session ------------------------------------------------ */

int iscsi_dead_error(struct iscsi_lun *l)
{
    image_set_error(l->img, "iSCSI session lost: no reconnect within %u s",
                    l->reconnect_limit_s);
    return -EIO;
}

/* The target stayed unreachable too long: destroy the context (libiscsi
 * then cancels the commands it parked for the reconnect, and their
 * callbacks fail them) and fail whatever it did not call back.  From now
 * on every request fails with -EIO. */
static void lose_session(struct iscsi_lun *l)
{
    l->dead = true;
    loop_remove_poller(l->img->loop, &l->poller);
    struct iscsi_context *ctx = l->ctx;
    iscsi_destroy_context(ctx);
    l->ctx = NULL;
    while (l->inflight) {
        struct iscsi_cmd *c = l->inflight;
        struct scsi_task *t = iscsi_cmd_untrack(l, c);
        scsi_free_scsi_task(t);
        c->abort(c);
    }
}

void iscsi_request_timed_out(struct iscsi_lun *l)
{
    if (l->dead || !l->ctx)
        return;
    uint64_t now = loop_now_ns();
    if (!l->unanswered_since_ns)
        l->unanswered_since_ns = now;
    /* Every command of a stalled session times out at about the same
     * time: one reconnect for all of them. */
    uint64_t spacing = (uint64_t)l->request_timeout_s * 1000000000u;
    if (!iscsi_is_logged_in(l->ctx) ||
        (l->reconnect_forced_ns && now - l->reconnect_forced_ns < spacing))
        return;
    l->reconnect_forced_ns = now;
    /* Never iscsi_reconnect() here: this runs inside libiscsi's callback,
     * usually from its timeout scan, which walks the context's PDU lists
     * and unlinks each expired PDU from the list it started on.  A
     * reconnect swaps in a fresh context with empty lists (the old PDUs
     * move to the one being replaced), so the scan's next unlink reads a
     * NULL list head.  The tick reconnects once libiscsi has returned. */
    l->reconnect_wanted = true;
}

/* Start the reconnect a timed-out command asked for, from outside every
 * libiscsi call. */
static void run_wanted_reconnect(struct iscsi_lun *l)
{
    if (!l->reconnect_wanted || l->dead || !l->ctx)
        return;
    l->reconnect_wanted = false;
    if (iscsi_is_logged_in(l->ctx))
        iscsi_reconnect(l->ctx);
}

/* ---- loop glue --------------------------------------------------------- */

/* libiscsi reconnects by putting the new socket on the old fd number; the
 * loop re-arms every round, so returning the fd is enough. */
static int poller_fd(void *opaque)
{
    struct iscsi_lun *l = opaque;
    return l->ctx ? iscsi_get_fd(l->ctx) : -1;
}

static int poller_events(void *opaque)
{
    struct iscsi_lun *l = opaque;
    return l->ctx ? iscsi_which_events(l->ctx) : 0;
}

/* `revents` for libiscsi, with POLLHUP added when the context is not
 * logged in (a login or a reconnect attempt is under way) and its socket
 * has only end of file or an error left to read.  libiscsi 1.19 reads
 * such a socket into an incoming PDU it allocates first; when the
 * attempt was a reconnect, the next attempt copies a fresh context over
 * this one (iscsi_reconnect) and that PDU is lost, 512 bytes per failed
 * attempt.  Its POLLHUP path, taken before any read, fails the attempt
 * the same way without allocating. */
static int hangup_before_read(struct iscsi_lun *l, int revents)
{
    if (!(revents & POLLIN) || iscsi_is_logged_in(l->ctx))
        return revents;
    int fd = iscsi_get_fd(l->ctx);
    char byte;
    if (fd < 0)
        return revents;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                   errno != EINTR))
        return revents | POLLHUP;
    return revents;
}

static int poller_service(void *opaque, int revents)
{
    struct iscsi_lun *l = opaque;
    if (!l->ctx)
        return -1;
    revents = hangup_before_read(l, revents);
    if (iscsi_service(l->ctx, revents) < 0) {
        image_set_error(l->img, "iSCSI session: %s", iscsi_get_error(l->ctx));
        if (l->waiting && !l->wait.done) {
            l->wait.status = SCSI_STATUS_ERROR;
            l->wait.done = true;
        }
        return -1;
    }
    return 0;
}

static void tick(void *opaque)
{
    struct iscsi_lun *l = opaque;
    l->tick_timer = 0;
    if (l->closing || !l->ctx)
        return;
    if (l->opened && !iscsi_is_logged_in(l->ctx)) {
        uint64_t now = loop_now_ns();
        if (!l->lost_since_ns)
            l->lost_since_ns = now;
        else if (l->reconnect_limit_s &&
                 now - l->lost_since_ns >
                     (uint64_t)l->reconnect_limit_s * 1000000000u) {
            lose_session(l);
            return;
        }
    } else {
        l->lost_since_ns = 0;
    }
    if (l->unanswered_since_ns && l->reconnect_limit_s &&
        loop_now_ns() - l->unanswered_since_ns >
            (uint64_t)l->reconnect_limit_s * 1000000000u) {
        lose_session(l);
        return;
    }
    /* Timeouts and delayed reconnects run from iscsi_service(ctx, 0); a
     * direct poll also covers the round after a socket was replaced. */
    int fd = iscsi_get_fd(l->ctx);
    int revents = 0;
    if (fd >= 0) {
        struct pollfd p = { .fd = fd, .events = (short)iscsi_which_events(l->ctx) };
        if (p.events && poll(&p, 1, 0) == 1)
            revents = p.revents;
    }
    poller_service(l, revents);
    run_wanted_reconnect(l);
    int64_t id = loop_add_timer(l->img->loop, TICK_MS, tick, l);
    l->tick_timer = id > 0 ? id : 0;
}

static void wait_cb(struct iscsi_context *ctx, int status, void *command_data,
                    void *private_data)
{
    (void)ctx;
    struct iscsi_wait *w = private_data;
    w->status = status;
    w->task = command_data;
    w->done = true;
}

static void wait_deadline(void *opaque)
{
    struct iscsi_wait *w = opaque;
    w->timed_out = true;
    w->done = true;
}

/* Spin the loop until `w` completes or `timeout_s` passes.  A timed-out
 * wait may leave the call pending inside libiscsi; its late callback only
 * writes the lun's wait slot (see new_wait), and a timed-out open destroys
 * the context anyway. */
static void wait_for(struct iscsi_lun *l, struct iscsi_wait *w, int timeout_s)
{
    int64_t t = loop_add_timer(l->img->loop, (unsigned)timeout_s * 1000u,
                               wait_deadline, w);
    l->waiting = true;
    loop_run_until(l->img->loop, &w->done);
    l->waiting = false;
    if (t > 0 && !w->timed_out)
        loop_cancel_timer(l->img->loop, t);
}

/* Start a new wait: the lun's one wait slot, reset.  The slot lives as
 * long as the context, so a late callback never writes to a dead frame. */
static struct iscsi_wait *new_wait(struct iscsi_lun *l)
{
    l->wait = (struct iscsi_wait){ 0 };
    return &l->wait;
}

/* Run one SCSI command built by `task` (already queued with wait_cb and
 * `w`).  Returns the task on GOOD status (caller frees), else NULL with
 * `err` filled. */
static struct scsi_task *finish_command(struct iscsi_lun *l,
                                        struct iscsi_wait *w,
                                        struct scsi_task *queued,
                                        const char *what, struct errmsg *err)
{
    if (!queued) {
        errmsg_set(err, "%s: %s: %s", l->img->name, what,
                   iscsi_get_error(l->ctx));
        return NULL;
    }
    wait_for(l, w, OPEN_TIMEOUT_S);
    if (w->timed_out) {
        /* Calls the callback now (CANCELLED), so nothing stays pending. */
        iscsi_scsi_cancel_task(l->ctx, queued);
        scsi_free_scsi_task(queued);
        image_set_error(l->img, "%s: no answer within %d s", what,
                        OPEN_TIMEOUT_S);
        errmsg_set(err, "%s: %s", l->img->name, l->img->last_error.text);
        return NULL;
    }
    if (w->status != SCSI_STATUS_GOOD) {
        iscsi_report_failure(l, w->status, w->task, what);
        errmsg_set(err, "%s: %s", l->img->name, l->img->last_error.text);
        if (w->task) {
            scsi_free_scsi_task(w->task);
            w->task = NULL;
        }
        return NULL;
    }
    return w->task;
}

/* ---- CHAP secret ------------------------------------------------------- */

/* Fill `pw` with the CHAP password: first line of $IMGFS_ISCSI_SECRET_FILE,
 * else $IMGFS_ISCSI_PASSWORD.  Returns 1 if found, 0 if neither is set,
 * -errno (with `err`) if the file cannot be read. */
static int read_chap_password(const char *url, char *pw, size_t size,
                              struct errmsg *err)
{
    const char *file = getenv("IMGFS_ISCSI_SECRET_FILE");
    if (file && *file) {
        int r = iscsi_read_secret_file(file, pw, size, err);
        if (r < 0) {
            errmsg_prefix(err, "%s", url);
            return r;
        }
        return 1;
    }
    const char *env = getenv("IMGFS_ISCSI_PASSWORD");
    if (env && *env) {
        snprintf(pw, size, "%s", env);
        return 1;
    }
    return 0;
}

/* Split "iscsi://user@rest" into `user` and "iscsi://rest" (libiscsi 1.19's
 * parser drops a user given without a password, so imgfs takes the user
 * itself).  Returns 0, or -EINVAL if the user part is too long or carries
 * a password ("user%password@", "user:password@", "target_password="),
 * which must never be on a command line. */
static int split_user(const char *url, char *user, size_t user_size,
                      char *rest, size_t rest_size, struct errmsg *err)
{
    const char *auth = url + strlen("iscsi://");
    const char *at = strchr(auth, '@');
    const char *slash = strchr(auth, '/');
    user[0] = '\0';
    if (strstr(url, "target_password=")) {
        errmsg_set(err, "%s: passwords do not belong in the URL", url);
        return -EINVAL;
    }
    if (!at || (slash && slash < at)) {
        snprintf(rest, rest_size, "%s", url);
        return 0;
    }
    size_t n = (size_t)(at - auth);
    if (memchr(auth, '%', n) || memchr(auth, ':', n)) {
        errmsg_set(err, "%s: put the CHAP password in the file named by "
                   "$IMGFS_ISCSI_SECRET_FILE (or $IMGFS_ISCSI_PASSWORD), "
                   "not in the URL", url);
        return -EINVAL;
    }
    if (n == 0 || n >= user_size) {
        errmsg_set(err, "%s: bad CHAP user name in the URL", url);
        return -EINVAL;
    }
    memcpy(user, auth, n);
    user[n] = '\0';
    snprintf(rest, rest_size, "iscsi://%s", at + 1);
    return 0;
}

/* ---- open -------------------------------------------------------------- */

static void destroy_lun(struct iscsi_lun *l)
{
    if (l->tick_timer)
        loop_cancel_timer(l->img->loop, l->tick_timer);
    l->tick_timer = 0;
    loop_remove_poller(l->img->loop, &l->poller);
    if (l->ctx)
        iscsi_destroy_context(l->ctx);
    l->ctx = NULL;
}

/* Wait for the asynchronous call just queued on `w` (queue_result is its
 * return value).  Returns 0 on GOOD status. */
static int wait_step(struct iscsi_lun *l, struct iscsi_wait *w,
                     int queue_result)
{
    if (queue_result != 0)
        return -EIO;
    wait_for(l, w, OPEN_TIMEOUT_S);
    if (w->timed_out)
        return -ETIMEDOUT;
    return w->status == SCSI_STATUS_GOOD ? 0 : -EIO;
}

/* Connect, log in and TEST UNIT READY (libiscsi consumes the unit
 * attentions of a fresh session).  iscsi_full_connect_async is used, not
 * connect + login, because it records the portal and LUN that libiscsi's
 * automatic reconnect needs.  On failure a plain TCP probe of the portal
 * tells "cannot connect" apart from a refused login or a missing LUN. */
static int connect_lun(struct iscsi_lun *l, const struct iscsi_url *u,
                       struct errmsg *err)
{
    const char *name = l->img->name;
    struct iscsi_wait *w = new_wait(l);
    int r = wait_step(l, w, iscsi_full_connect_async(l->ctx, u->portal,
                                                     u->lun, wait_cb, w));
    if (r == 0 && iscsi_is_logged_in(l->ctx))
        return 0;
    if (r == -ETIMEDOUT) {
        errmsg_set(err, "%s: no iSCSI login to target %s LUN %d at %s "
                   "within %d s", name, u->target, u->lun, u->portal,
                   OPEN_TIMEOUT_S);
        return r;
    }
    char why[256];
    snprintf(why, sizeof why, "%s", iscsi_get_error(l->ctx));
    for (size_t n = strlen(why); n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' ');)
        why[--n] = '\0';
    int probe = iscsi_probe_portal(u->portal, 2000);
    if (probe < 0) {
        errmsg_set(err, "%s: cannot connect to iSCSI portal %s: %s", name,
                   u->portal, strerror(-probe));
        return probe;
    }
    errmsg_set(err, "%s: cannot log in to iSCSI target %s LUN %d at %s: %s",
               name, u->target, u->lun, u->portal, why);
    return -EIO;
}

static int check_disk(struct iscsi_lun *l, struct errmsg *err)
{
    struct iscsi_wait *w = new_wait(l);
    struct scsi_task *t = finish_command(l, w,
        iscsi_inquiry_task(l->ctx, l->lun, 0, 0, 255, wait_cb, w),
        "INQUIRY", err);
    if (!t)
        return -EIO;
    struct scsi_inquiry_standard *inq = scsi_datain_unmarshall(t);
    int r = 0;
    if (!inq) {
        errmsg_set(err, "%s: INQUIRY: malformed answer", l->img->name);
        r = -EIO;
    } else if (inq->qualifier != SCSI_INQUIRY_PERIPHERAL_QUALIFIER_CONNECTED ||
               inq->device_type !=
                   SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
        errmsg_set(err, "%s: LUN %d is not a disk (peripheral qualifier %d, "
                   "device type 0x%x)", l->img->name, l->lun,
                   (int)inq->qualifier, (unsigned)inq->device_type);
        r = -ENODEV;
    }
    scsi_free_scsi_task(t);
    return r;
}

static int read_capacity(struct iscsi_lun *l, struct errmsg *err)
{
    struct iscsi_wait *w = new_wait(l);
    struct scsi_task *t = finish_command(l, w,
        iscsi_readcapacity16_task(l->ctx, l->lun, wait_cb, w),
        "READ CAPACITY(16)", err);
    if (!t)
        return -EIO;
    struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(t);
    int r = 0;
    if (!rc) {
        errmsg_set(err, "%s: READ CAPACITY(16): malformed answer",
                   l->img->name);
        r = -EIO;
    } else if (rc->block_length < 512 || rc->block_length > 65536 ||
               (rc->block_length & (rc->block_length - 1))) {
        errmsg_set(err, "%s: unsupported logical block size %" PRIu32,
                   l->img->name, rc->block_length);
        r = -ENOTSUP;
    } else {
        l->block_size = rc->block_length;
        l->num_blocks = rc->returned_lba + 1;
        l->lbpme = rc->lbpme;
        l->lbprz = rc->lbprz;
    }
    scsi_free_scsi_task(t);
    return r;
}

/* Block Limits and Logical Block Provisioning VPD pages; both optional. */
static void read_vpd(struct iscsi_lun *l)
{
    struct errmsg ignored;
    struct iscsi_wait *w = new_wait(l);
    struct scsi_task *t = finish_command(l, w,
        iscsi_inquiry_task(l->ctx, l->lun, 1,
                           SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 255, wait_cb, w),
        "INQUIRY Block Limits", &ignored);
    if (t) {
        struct scsi_inquiry_block_limits *bl = scsi_datain_unmarshall(t);
        if (bl) {
            if (bl->max_xfer_len)
                l->max_xfer_blocks = bl->max_xfer_len;
            if (bl->max_ws_len)
                l->max_ws_blocks = bl->max_ws_len > UINT32_MAX
                                       ? UINT32_MAX
                                       : (uint32_t)bl->max_ws_len;
        }
        scsi_free_scsi_task(t);
    }
    if (!l->lbpme)
        return;
    w = new_wait(l);
    t = finish_command(l, w,
        iscsi_inquiry_task(l->ctx, l->lun, 1,
                           SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING,
                           255, wait_cb, w),
        "INQUIRY Logical Block Provisioning", &ignored);
    if (t) {
        struct scsi_inquiry_logical_block_provisioning *lbp =
            scsi_datain_unmarshall(t);
        if (lbp)
            l->lbpws = lbp->lbpws;
        scsi_free_scsi_task(t);
    }
}

/* Device Identification VPD page: the LU's own designator as a second
 * identity key (one LU reached through two targets).  Optional. */
static void read_identity(struct iscsi_lun *l)
{
    struct errmsg ignored;
    struct iscsi_wait *w = new_wait(l);
    struct scsi_task *t = finish_command(l, w,
        iscsi_inquiry_task(l->ctx, l->lun, 1,
                           SCSI_INQUIRY_PAGECODE_DEVICE_IDENTIFICATION, 255,
                           wait_cb, w),
        "INQUIRY Device Identification", &ignored);
    if (!t)
        return;
    struct scsi_inquiry_device_identification *di = scsi_datain_unmarshall(t);
    if (di)
        iscsi_lu_identity(di, &l->img->id);
    scsi_free_scsi_task(t);
}

static uint32_t clamp_blocks(uint32_t blocks, uint64_t max_bytes, uint32_t bs)
{
    uint64_t cap = max_bytes / bs;
    if (cap == 0)
        cap = 1;
    return blocks == 0 || blocks > cap ? (uint32_t)cap : blocks;
}

static int iscsi_close(struct image *img);

static const struct image_ops iscsi_ops = {
    .name = "iscsi",
    .read = iscsi_op_read,
    .write = iscsi_op_write,
    .write_zeroes = iscsi_op_write_zeroes,
    .flush = iscsi_op_flush,
    .block_status = iscsi_op_block_status,
    .close = iscsi_close,
};

/* Create the context and set everything that must be set before login. */
static int setup_context(struct iscsi_lun *l, const char *url,
                         struct iscsi_url **out_url, struct errmsg *err)
{
    const char *initiator = getenv("IMGFS_ISCSI_INITIATOR");
    if (!initiator || !*initiator)
        initiator = DEFAULT_INITIATOR;
    l->ctx = iscsi_create_context(initiator);
    if (!l->ctx) {
        errmsg_set(err, "%s: cannot create iSCSI context", url);
        return -ENOMEM;
    }
    char user[256], rest[1024];
    int r = split_user(url, user, sizeof user, rest, sizeof rest, err);
    if (r < 0)
        return r;
    struct iscsi_url *u = iscsi_parse_full_url(l->ctx, rest);
    if (!u) {
        errmsg_set(err, "%s: not an iSCSI URL "
                   "(iscsi://[user@]host[:port]/iqn/lun): %s", url,
                   iscsi_get_error(l->ctx));
        return -EINVAL;
    }
    *out_url = u;
    if (iscsi_portal_check(u->portal) < 0) {
        errmsg_set(err, "%s: invalid portal '%s' (expected host[:port] "
                   "with a port from 1 to 65535)", url, u->portal);
        return -EINVAL;
    }
    l->lun = u->lun;
    if (user[0]) {
        char pw[256] = "";
        r = read_chap_password(url, pw, sizeof pw, err);
        if (r == 0) {
            errmsg_set(err, "%s: CHAP user '%s' given but no password: set "
                       "$IMGFS_ISCSI_SECRET_FILE to a file holding it",
                       url, user);
            r = -EINVAL;
        }
        if (r > 0 && iscsi_set_initiator_username_pwd(l->ctx, user, pw)) {
            errmsg_set(err, "%s: %s", url, iscsi_get_error(l->ctx));
            r = -EINVAL;
        }
        memset(pw, 0, sizeof pw);
        if (r < 0)
            return r;
    }
    if (iscsi_set_targetname(l->ctx, u->target) ||
        iscsi_set_session_type(l->ctx, ISCSI_SESSION_NORMAL) ||
        iscsi_set_header_digest(l->ctx, ISCSI_HEADER_DIGEST_NONE)) {
        errmsg_set(err, "%s: %s", url, iscsi_get_error(l->ctx));
        return -EINVAL;
    }
    l->reconnect_limit_s = image_reconnect_timeout_s();
    l->request_timeout_s = image_request_timeout_s();
    iscsi_set_timeout(l->ctx, OPEN_TIMEOUT_S);
    iscsi_set_no_ua_on_reconnect(l->ctx, 1);
    iscsi_set_noautoreconnect(l->ctx, 0);
    return 0;
}

int iscsi_image_open(struct loop *loop, const char *url,
                     const struct image_open_opts *opts, struct image **out,
                     struct errmsg *err)
{
    *out = NULL;
    struct image *img = image_alloc(&iscsi_ops, loop, url);
    struct iscsi_lun *l = calloc(1, sizeof *l);
    if (!img || !l) {
        image_free_shell(img);
        free(l);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    img->priv = l;
    l->img = img;
    l->poller = (struct loop_poller){ .get_fd = poller_fd,
                                      .events = poller_events,
                                      .service = poller_service,
                                      .opaque = l };
    struct iscsi_url *u = NULL;
    int r = setup_context(l, url, &u, err);
    if (r == 0) {
        loop_add_poller(loop, &l->poller);
        int64_t id = loop_add_timer(loop, TICK_MS, tick, l);
        l->tick_timer = id > 0 ? id : 0;
        r = connect_lun(l, u, err);
    }
    if (r == 0)
        iscsi_target_identity(u->target, u->lun, &img->id);
    if (u)
        iscsi_destroy_url(u);
    if (r == 0)
        r = check_disk(l, err);
    if (r == 0)
        r = read_capacity(l, err);
    if (r == 0) {
        read_identity(l);
        /* LUNs are never created or truncated: refusing before the
         * first write is enough, and nothing was written yet. */
        r = image_id_check_distinct(&img->id, url, opts->distinct_from,
                                    err);
    }
    if (r == 0) {
        read_vpd(l);
        uint32_t bs = l->block_size;
        l->max_xfer_blocks = clamp_blocks(l->max_xfer_blocks,
                                          ISCSI_DEFAULT_MAX_XFER, bs);
        l->max_ws_blocks = clamp_blocks(l->max_ws_blocks,
                                        ISCSI_DEFAULT_MAX_WS, bs);
        l->zero_blocks = clamp_blocks(l->max_xfer_blocks,
                                      ISCSI_ZERO_BUF_SIZE, bs);
        iscsi_set_timeout(l->ctx, (int)l->request_timeout_s);
        img->size = l->num_blocks * bs;
        img->block_size = bs;
        img->max_request = 0;
        img->read_only = !opts->write;
        img->can_unmap = l->lbpme && l->lbpws;
        errmsg_clear(err);
        img->last_error.text[0] = '\0';
        l->opened = true;
        *out = img;
        return 0;
    }
    destroy_lun(l);
    free(l);
    image_free_shell(img);
    return r;
}

/* ---- close ------------------------------------------------------------- */

static int iscsi_close(struct image *img)
{
    struct iscsi_lun *l = iscsi_lun_of(img);
    int r = 0;
    if (l->dead)
        r = iscsi_dead_error(l);
    if (l->ctx && iscsi_is_logged_in(l->ctx)) {
        iscsi_set_timeout(l->ctx, OPEN_TIMEOUT_S);
        struct iscsi_wait *w = new_wait(l);
        if (iscsi_logout_async(l->ctx, wait_cb, w) != 0) {
            image_set_error(img, "logout: %s", iscsi_get_error(l->ctx));
            r = -EIO;
        } else {
            wait_for(l, w, OPEN_TIMEOUT_S);
            if (w->timed_out || w->status != SCSI_STATUS_GOOD) {
                image_set_error(img, "logout: %s",
                                w->timed_out ? "no answer"
                                             : iscsi_get_error(l->ctx));
                r = w->timed_out ? -ETIMEDOUT : -EIO;
            }
        }
    }
    l->closing = true;
    destroy_lun(l);
    free(l);
    image_free_shell(img);
    return r;
}
