/* iscsi-priv.h — state shared by the iscsi protocol backend's files
 * (iscsi.c: open/close and the loop glue; iscsi-io.c: read, write,
 * write_zeroes, flush; iscsi-status.c: block status).  Not a public
 * interface: nothing outside backends/iscsi*.c includes it.
 *
 * One libiscsi context per image, touched only on the image's loop thread.
 */
#ifndef IMGFS_ISCSI_PRIV_H
#define IMGFS_ISCSI_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "image.h"

/* Largest data transfer of one READ16/WRITE16 when the target reports no
 * limit in its Block Limits VPD page. */
#define ISCSI_DEFAULT_MAX_XFER (4u << 20)
/* Largest WRITE SAME(16) when the target reports no limit. */
#define ISCSI_DEFAULT_MAX_WS (64u << 20)
/* Size of the shared zero buffer used for WRITE SAME's data block and for
 * writing zeroes when WRITE SAME is not available. */
#define ISCSI_ZERO_BUF_SIZE (1u << 20)
/* Commands one image request keeps in flight at most. */
#define ISCSI_REQ_WINDOW 32
/* Times a command is re-issued after UNIT ATTENTION / BUSY / TASK SET FULL. */
#define ISCSI_MAX_RETRIES 8

/* One asynchronous libiscsi call waited for while opening or closing. */
struct iscsi_wait {
    bool done;
    bool timed_out;
    int status;
    struct scsi_task *task;
};

/* A SCSI command handed to libiscsi, tracked so that it can be failed if
 * the session is given up (see iscsi_lose_session).  Embedded in the
 * backend's request pieces. */
struct iscsi_cmd {
    struct iscsi_cmd *prev, *next;
    struct scsi_task *task;
    /* Complete the owner with -EIO; the task is already freed and the
     * command untracked. */
    void (*abort)(struct iscsi_cmd *c);
};

struct iscsi_lun {
    struct image *img;
    struct iscsi_context *ctx;
    int lun;
    struct loop_poller poller;
    int64_t tick_timer;         /* periodic iscsi_service(ctx, 0) */
    bool closing;
    bool opened;                /* open finished: outage watch is on */
    bool dead;                  /* session given up; everything fails */
    uint64_t lost_since_ns;     /* not logged in since (0: logged in) */
    unsigned reconnect_limit_s; /* give up after this long, 0: never */
    unsigned request_timeout_s; /* task timeout on the data path, 0: none */
    uint64_t unanswered_since_ns; /* a command timed out and the target
                                   * answered nothing since (0: fine) */
    uint64_t reconnect_forced_ns; /* when a timeout last forced one */
    bool reconnect_wanted;      /* a timeout asked for one; the tick
                                 * starts it outside libiscsi */
    struct iscsi_cmd *inflight; /* commands inside libiscsi */
    struct iscsi_wait wait;     /* open/close: the call being waited for */
    bool waiting;

    uint32_t block_size;
    uint64_t num_blocks;
    uint32_t max_xfer_blocks;   /* per READ16 / WRITE16 */
    uint32_t max_ws_blocks;     /* per WRITE SAME(16) */
    uint32_t zero_blocks;       /* per zero-buffer WRITE16 */

    bool lbpme;                 /* thin provisioned (READ CAPACITY 16) */
    bool lbprz;                 /* deallocated blocks read as zeroes */
    bool lbpws;                 /* WRITE SAME(16) with UNMAP supported */
    bool ws_unmap_rejected;     /* target refused WRITE SAME + UNMAP */
    bool ws_rejected;           /* target refused WRITE SAME altogether */
    bool lba_status_rejected;   /* target refused GET LBA STATUS */
};

static inline struct iscsi_lun *iscsi_lun_of(struct image *img)
{
    return img->priv;
}

/* Track `c` as carrying `task` (just queued with libiscsi). */
static inline void iscsi_cmd_track(struct iscsi_lun *l, struct iscsi_cmd *c,
                                   struct scsi_task *task)
{
    c->task = task;
    c->prev = NULL;
    c->next = l->inflight;
    if (l->inflight)
        l->inflight->prev = c;
    l->inflight = c;
}

/* Stop tracking `c` (its callback arrived); returns its task. */
static inline struct scsi_task *iscsi_cmd_untrack(struct iscsi_lun *l,
                                                  struct iscsi_cmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->inflight = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    struct scsi_task *t = c->task;
    c->task = NULL;
    return t;
}

/* When the session has been given up: set last_error to why and return
 * -EIO (for requests that arrive or complete after that). */
int iscsi_dead_error(struct iscsi_lun *l);

/* A command got no answer within the request timeout (libiscsi failed
 * it with SCSI_STATUS_TIMEOUT): the connection counts as lost.  Starts
 * the outage clock (the tick gives the session up after the reconnect
 * timeout) and asks for a reconnect, at most once per request timeout
 * while logged in; the next tick starts it (never from inside a libiscsi
 * callback, which is where this is called from) and libiscsi re-issues
 * what is in flight.  The caller issues the timed-out command again. */
void iscsi_request_timed_out(struct iscsi_lun *l);

/* The target answered a command: stops the outage clock of timeouts. */
static inline void iscsi_target_answered(struct iscsi_lun *l)
{
    l->unanswered_since_ns = 0;
}

/* The shared, never-written zero buffer (ISCSI_ZERO_BUF_SIZE bytes). */
extern unsigned char iscsi_zero_buf[ISCSI_ZERO_BUF_SIZE];

/* Describe a failed SCSI task (status, sense key, ASC/ASCQ and libiscsi's
 * error text) into img->last_error, prefixed by `what` (e.g. "WRITE16 at
 * LBA 123").  Returns the errno the failure maps to: -ENOSPC for LBA out
 * of range, -ETIMEDOUT, -ECANCELED, else -EIO.  `task` may be NULL (the
 * command never got a response). */
int iscsi_report_failure(struct iscsi_lun *l, int status,
                         struct scsi_task *task, const char *what);

/* True when a failed command should simply be issued again: UNIT
 * ATTENTION (e.g. after a reconnect), BUSY, TASK SET FULL. */
bool iscsi_should_retry(int status, const struct scsi_task *task);

/* Try a TCP connection to `portal` ("host[:port]", "[v6][:port]") within
 * `timeout_ms`; close it at once.  Returns 0 or -errno.  Used only to
 * explain a failed login (iscsi-portal.c). */
int iscsi_probe_portal(const char *portal, int timeout_ms);

/* Check the syntax of a portal "host[:port]" / "[v6][:port]": returns 0,
 * or -EINVAL when the host is empty or the port is not 1..65535. */
int iscsi_portal_check(const char *portal);

/* Read the CHAP password: the first line of `file` ($IMGFS_ISCSI_SECRET_FILE)
 * into `pw` (`size` bytes, NUL-terminated, CR/LF cut).  Like ssh with
 * private keys, the file must be a regular file that neither group nor
 * others may read, write or execute (checked on the opened descriptor).
 * Returns 0, or -errno with `err` naming the file and the problem (its
 * mode: "has mode 0644: it must not be accessible by group or others
 * (chmod 600 FILE)"; not a regular file; empty; unreadable). */
int iscsi_read_secret_file(const char *file, char *pw, size_t size,
                           struct errmsg *err);

/* Identity (iscsi-id.c, image-id.h).  Add "iscsi:IQN:LUN" (the IQN in
 * lower case) to `id`. */
void iscsi_target_identity(const char *iqn, int lun, struct image_id *id);
/* Add "lu:TYPE:HEX" for the preferred designator of association "logical
 * unit" in the Device Identification VPD page `di` (NAA, then EUI-64,
 * then T10 vendor id, then SCSI name string; TYPE naa, eui64, t10,
 * name), among those that are unique beyond one target host: NAA 2/5/6
 * and EUI-64 with a non-zero IEEE company id, SCSI name strings, T10
 * vendor ids with a vendor-specific part of 16 bytes or more.  Nothing
 * when there is none (tgtd reports none). */
void iscsi_lu_identity(const struct scsi_inquiry_device_identification *di,
                       struct image_id *id);

/* Data path (iscsi-io.c).  Same contracts as struct image_ops. */
void iscsi_op_read(struct image *img, void *buf, uint64_t offset, size_t len,
                   image_io_cb cb, void *opaque);
void iscsi_op_write(struct image *img, const void *buf, uint64_t offset,
                    size_t len, image_io_cb cb, void *opaque);
void iscsi_op_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                           unsigned flags, image_io_cb cb, void *opaque);
void iscsi_op_flush(struct image *img, image_io_cb cb, void *opaque);

/* Block status (iscsi-status.c).  Same contract as image_ops.block_status:
 * GET LBA STATUS on thin LUNs, one DATA extent otherwise. */
void iscsi_op_block_status(struct image *img, uint64_t offset,
                           uint64_t length, image_extents_cb cb,
                           void *opaque);

#endif
