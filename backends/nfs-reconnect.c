/* nfs-reconnect.c — the nfs backend rides through faults: lost
 * connections (server restart, reset, failover), stalls and stale file
 * handles, bounded by one reconnect timeout (io-timeouts.h).
 *
 * What libnfs 4.0 does: when the TCP connection fails (error, end of
 * stream, POLLHUP) it moves every call it had sent back to its out-queue
 * (whole PDUs, XIDs kept), connects again to the same address and port
 * and re-sends them once connected; callers' callbacks and buffers stay
 * as they were.  Its budget is "auto_reconnect" attempts made back to
 * back: 10 (what we used to set) is spent within milliseconds while a
 * server restarts, and -1 (forever) makes a refused connect spin on
 * POLLHUP.  Its RPC timeout fails a call without touching the connection.
 *
 * The choice: let libnfs reconnect with unlimited retries (set at mount
 * time, nfs-mount.c) and enforce pace and deadline here, rather than
 * tearing down the context and mounting again.  Re-queueing inside
 * libnfs keeps every call in flight with its buffer and callback, so
 * nothing is rebuilt or completed twice; a re-mount would need the
 * portmapper and MOUNT service as well (more to be down), a synchronous
 * mount would block the loop thread the other images share, and a new
 * context would mean re-issuing every call ourselves while the old one
 * may still call back.  NFSv3 file handles survive a server restart, so
 * the re-sent calls stay valid.
 *
 *   pace      after a connection error the poller gives libnfs no events
 *             for a backoff (100 ms, doubling to 2 s; reset by an
 *             answer), so refused reconnects are attempts, not a spin;
 *   requests  libnfs's RPC timeout is off on the data path.  A tick
 *             (every TICK_MS) looks at the oldest call: unanswered for
 *             $IMGFS_REQUEST_TIMEOUT seconds, the connection counts as
 *             lost and its socket is shut down, which libnfs handles as
 *             any other loss (reconnect, re-send);
 *   deadline  the first loss starts the outage clock; any answer stops
 *             it.  After $IMGFS_RECONNECT_TIMEOUT seconds the connection
 *             is given up: the context is destroyed (libnfs calls back
 *             every call it holds, cancelled), the rest is failed, and
 *             every later request fails with -EIO.  A stall is thus
 *             detected after request timeout + reconnect timeout at most
 *             (plus a tick);
 *   stale     NFS3ERR_STALE on the image's handle: the file is looked up
 *             again by its path, once per image.  If it is the same file
 *             (fileid, and for a read-only image the size, as at open)
 *             the calls are re-sent with the new handle; otherwise they
 *             fail with a message naming the change.
 *
 * Calls that libnfs fails with a transport error (it could not even
 * start a reconnect) are issued again by the data path (nfs.c) after the
 * backoff, under the same deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <nfsc/libnfs.h>

#include "io-timeouts.h"
#include "nfs-image.h"

/* Tick period: request timeouts, backoff ends, the deadline. */
#define TICK_MS 100
/* Reconnect backoff: first step and ceiling. */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull

/* ---- the pending list ------------------------------------------------ */

void nfs_pending_add(struct nfs_image *ni, struct nfs_pending *p)
{
    p->prev = NULL;
    p->next = ni->pending;
    if (ni->pending)
        ni->pending->prev = p;
    ni->pending = p;
}

void nfs_pending_remove(struct nfs_image *ni, struct nfs_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (ni->pending == p)
        ni->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* ---- outage clock ---------------------------------------------------- */

int nfs_dead_error(struct nfs_image *ni)
{
    image_set_error(ni->img, "NFS connection lost (%s) and not "
                    "re-established within %u s", ni->lost_why,
                    ni->reconnect_limit_s);
    return -EIO;
}

void nfs_conn_answered(struct nfs_image *ni)
{
    if (ni->dead)
        return;
    ni->lost_since_ns = 0;
    ni->backoff_ms = BACKOFF_FIRST_MS;
}

/* The connection failed (why: for the give-up message): start the
 * outage clock if it is not running. */
static void conn_lost(struct nfs_image *ni, const char *why)
{
    if (ni->lost_since_ns)
        return;
    ni->lost_since_ns = loop_now_ns();
    snprintf(ni->lost_why, sizeof ni->lost_why, "%s",
             why && *why ? why : "connection failed");
}

/* Hold libnfs back for one backoff step. */
static void hold_back(struct nfs_image *ni)
{
    ni->hold_until_ns = loop_now_ns() + ni->backoff_ms * NS_PER_MS;
    ni->backoff_ms *= 2;
    if (ni->backoff_ms > BACKOFF_MAX_MS)
        ni->backoff_ms = BACKOFF_MAX_MS;
}

unsigned nfs_retry_delay_ms(const struct nfs_image *ni)
{
    return ni->backoff_ms ? ni->backoff_ms : BACKOFF_FIRST_MS;
}

static void close_cb(int status, struct nfs_context *nfs, void *data,
                     void *private_data)
{
    (void)status, (void)nfs, (void)data, (void)private_data;
}

/* The deadline passed: fail everything, now and later. */
static void give_up(struct nfs_image *ni)
{
    ni->dead = true;
    loop_remove_poller(ni->img->loop, &ni->poller);
    struct nfs_context *nfs = ni->nfs;
    if (ni->fh)
        nfs_close_async(nfs, ni->fh, close_cb, NULL);
    if (ni->stale_fh)
        nfs_close_async(nfs, ni->stale_fh, close_cb, NULL);
    ni->fh = ni->stale_fh = NULL;
    /* Calls back (cancelled) every call libnfs holds; the data path
     * sees `dead` and fails them. */
    nfs_destroy_context(nfs);
    ni->nfs = NULL;
    struct nfs_pending *p = ni->pending;
    while (p) {
        struct nfs_pending *next = p->next;
        if (p->in_libnfs) {
            p->in_libnfs = false;
            p->abort(p);
        }
        p = next;
    }
}

/* ---- request timeouts ------------------------------------------------- */

/* Shut the socket down: libnfs sees the end of stream and reconnects,
 * re-sending what was in flight, whose clocks start again. */
static void force_reconnect(struct nfs_image *ni)
{
    int fd = nfs_get_fd(ni->nfs);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    ni->reconnects++;
    uint64_t now = loop_now_ns();
    for (struct nfs_pending *p = ni->pending; p; p = p->next)
        p->sent_ns = now;
}

static void check_request_timeout(struct nfs_image *ni, uint64_t now)
{
    if (!ni->request_timeout_s)
        return;
    uint64_t oldest = 0;
    for (struct nfs_pending *p = ni->pending; p; p = p->next)
        if (p->in_libnfs && (!oldest || p->sent_ns < oldest))
            oldest = p->sent_ns;
    if (!oldest || now - oldest < ni->request_timeout_s * NS_PER_S)
        return;
    char why[96];
    snprintf(why, sizeof why, "no answer from the server within %u s",
             ni->request_timeout_s);
    conn_lost(ni, why);
    force_reconnect(ni);
}

/* ---- stale handles ----------------------------------------------------- */

static void relookup_failed(struct nfs_image *ni, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void relookup_failed(struct nfs_image *ni, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ni->relookup_error, sizeof ni->relookup_error, fmt, ap);
    va_end(ap);
    ni->relookup = RELOOKUP_FAILED;
}

static void relookup_open_cb(int status, struct nfs_context *nfs, void *data,
                             void *private_data)
{
    struct nfs_image *ni = private_data;
    if (ni->dead)
        return;
    if (status < 0) {
        if (status == -EFAULT || status == -EINTR) {
            ni->relookup = RELOOKUP_NONE;   /* try again on the next call */
            return;
        }
        relookup_failed(ni, "stale file handle; opening %s again failed: %s",
                        ni->path, data ? (const char *)data
                                       : nfs_get_error(nfs));
        return;
    }
    nfs_conn_answered(ni);
    ni->stale_fh = ni->fh;
    ni->fh = data;
    ni->relookup = RELOOKUP_DONE;
}

static void relookup_stat_cb(int status, struct nfs_context *nfs, void *data,
                             void *private_data)
{
    struct nfs_image *ni = private_data;
    if (ni->dead)
        return;
    if (status < 0) {
        if (status == -EFAULT || status == -EINTR) {
            ni->relookup = RELOOKUP_NONE;
            return;
        }
        relookup_failed(ni, "stale file handle; %s is gone: %s", ni->path,
                        data ? (const char *)data : nfs_get_error(nfs));
        return;
    }
    nfs_conn_answered(ni);
    const struct nfs_stat_64 *st = data;
    if (ni->fileid && st->nfs_ino != ni->fileid) {
        relookup_failed(ni, "stale file handle: %s was replaced by another "
                        "file (fileid %" PRIu64 ", was %" PRIu64 ")",
                        ni->path, (uint64_t)st->nfs_ino, ni->fileid);
        return;
    }
    if (ni->img->read_only && st->nfs_size != ni->img->size) {
        relookup_failed(ni, "stale file handle: %s changed size (%" PRIu64
                        " bytes, was %" PRIu64 ")", ni->path,
                        (uint64_t)st->nfs_size, ni->img->size);
        return;
    }
    if (nfs_open_async(nfs, ni->path, ni->open_flags, relookup_open_cb,
                       ni) < 0)
        relookup_failed(ni, "stale file handle; cannot open %s again: %s",
                        ni->path, nfs_get_error(nfs));
}

/* A call on the current handle came back stale. */
static enum nfs_fault handle_stale(struct nfs_image *ni,
                                   const struct nfsfh *sent_fh)
{
    if (sent_fh != ni->fh)
        return NFS_FAULT_STALE;     /* already replaced: send it again */
    switch (ni->relookup) {
    case RELOOKUP_NONE:
        if (!ni->path) {
            relookup_failed(ni, "stale file handle (the file's path is "
                            "not known)");
            return NFS_FAULT_FAIL;
        }
        ni->relookup = RELOOKUP_RUNNING;
        if (nfs_stat64_async(ni->nfs, ni->path, relookup_stat_cb, ni) < 0) {
            relookup_failed(ni, "stale file handle; cannot look %s up "
                            "again: %s", ni->path, nfs_get_error(ni->nfs));
            return NFS_FAULT_FAIL;
        }
        return NFS_FAULT_STALE;
    case RELOOKUP_RUNNING:
        return NFS_FAULT_STALE;
    case RELOOKUP_DONE:
        relookup_failed(ni, "stale file handle: %s is stale again after it "
                        "was looked up once", ni->path);
        return NFS_FAULT_FAIL;
    case RELOOKUP_FAILED:
        return NFS_FAULT_FAIL;
    }
    return NFS_FAULT_FAIL;
}

enum nfs_fault nfs_classify_failure(struct nfs_image *ni, int status,
                                    const struct nfsfh *sent_fh,
                                    const char *detail)
{
    if (ni->dead)
        return NFS_FAULT_FAIL;
    /* libnfs reports the server's errors of a READ or WRITE split into
     * several RPCs as -EFAULT, like a failed RPC; its error text tells
     * them apart ("... failed with NFS3ERR_STALE(-116)"). */
    const char *text = nfs_get_error(ni->nfs);
    bool server_said = text && strstr(text, "NFS3ERR_");
    if (status == -ESTALE ||
        (status == -EFAULT && server_said && strstr(text, "NFS3ERR_STALE")))
        return handle_stale(ni, sent_fh);
    /* libnfs: -EFAULT when the RPC failed (connection), -EINTR when it
     * timed out or was cancelled. */
    if ((status == -EFAULT && !server_said) || status == -EINTR) {
        conn_lost(ni, detail);
        return NFS_FAULT_RETRY;
    }
    nfs_conn_answered(ni);
    return NFS_FAULT_FAIL;
}

/* ---- loop glue --------------------------------------------------------- */

/* libnfs reconnects by dup2()ing the new socket onto the old descriptor
 * number; the loop re-arms every round, so returning the fd is enough.
 * During a backoff there is no fd: libnfs gets no events. */
static int poll_get_fd(void *opaque)
{
    struct nfs_image *ni = opaque;
    if (ni->dead || loop_now_ns() < ni->hold_until_ns)
        return -1;
    return nfs_get_fd(ni->nfs);
}

static int poll_events(void *opaque)
{
    struct nfs_image *ni = opaque;
    return ni->dead ? 0 : nfs_which_events(ni->nfs);
}

static int poll_service(void *opaque, int revents)
{
    struct nfs_image *ni = opaque;
    if (ni->dead)
        return -1;
    bool failed = revents & (POLLERR | POLLHUP);
    /* With unlimited reconnects a -1 is a failed (re)connect attempt
     * that libnfs will repeat on the next events, not the end. */
    int r = nfs_service(ni->nfs, revents);
    if (ni->dead)
        return -1;
    if (failed || r < 0) {
        conn_lost(ni, nfs_get_error(ni->nfs));
        hold_back(ni);
    }
    return 0;
}

static void tick(void *opaque)
{
    struct nfs_image *ni = opaque;
    ni->service_timer = 0;
    if (ni->dead)
        return;
    check_request_timeout(ni, loop_now_ns());
    uint64_t now = loop_now_ns();   /* not before lost_since_ns */
    if (ni->lost_since_ns && ni->reconnect_limit_s &&
        now > ni->lost_since_ns &&
        now - ni->lost_since_ns > ni->reconnect_limit_s * NS_PER_S) {
        give_up(ni);
        return;
    }
    nfs_service(ni->nfs, 0);
    int64_t id = loop_add_timer(ni->img->loop, TICK_MS, tick, ni);
    ni->service_timer = id > 0 ? id : 0;
}

void nfs_image_attach(struct nfs_image *ni)
{
    ni->reconnect_limit_s = io_reconnect_timeout_s();
    ni->request_timeout_s = io_request_timeout_s();
    ni->backoff_ms = BACKOFF_FIRST_MS;
    struct nfs_stat_64 st;
    if (nfs_fstat64(ni->nfs, ni->fh, &st) == 0)
        ni->fileid = st.nfs_ino;
    /* Timeouts are ours (see above): a libnfs timeout would fail the call
     * instead of reconnecting. */
    nfs_set_timeout(ni->nfs, -1);
    ni->poller = (struct loop_poller){
        .get_fd = poll_get_fd,
        .events = poll_events,
        .service = poll_service,
        .opaque = ni,
    };
    loop_add_poller(ni->img->loop, &ni->poller);
    int64_t id = loop_add_timer(ni->img->loop, TICK_MS, tick, ni);
    ni->service_timer = id > 0 ? id : 0;
}

void nfs_image_detach(struct nfs_image *ni)
{
    if (!ni->dead)
        loop_remove_poller(ni->img->loop, &ni->poller);
    if (ni->service_timer > 0)
        loop_cancel_timer(ni->img->loop, ni->service_timer);
    ni->service_timer = 0;
}
