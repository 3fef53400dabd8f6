/* nfs-reconnect.c — the nfs backend rides through faults: lost
 * connections (server restart, reset, failover), stalls and stale file
 * handles, bounded by one reconnect timeout (io-timeouts.h).
 *
 * What libnfs 4.0 does on its own: when the TCP connection fails (error,
 * end of stream, POLLHUP) it moves every call it had sent back to its
 * out-queue, connects again to the same address and port and re-sends
 * them.  But it keeps its receive state: a connection lost in the middle
 * of a reply (a 1 MiB READ reply is the usual case) leaves the half-read
 * record in the context, and the first bytes of the new connection are
 * taken as the rest of it.  From then on every record boundary is wrong:
 * replies are discarded as garbage, each "garbage" reconnects again, and
 * the re-sent calls are never answered.  Its RPC timeout fails a call
 * without touching the connection.
 *
 * The choice: a lost connection is never resumed in the same context.
 * The context is set aside (not serviced any more: libnfs gets no events
 * for it, so it does nothing) and a new context is mounted asynchronously
 * from the image's URL (same server, export and URL options) on the
 * image's loop; once it is mounted it replaces the old one, and the old
 * one is destroyed.  Destroying it calls back every call it held as
 * cancelled; the data path (nfs.c) sees a connection failure and issues
 * the call again, on the new context (NFS_FAULT_RETRY).  Calls the data
 * path starts while the new context is being mounted go to the old one
 * and come back the same way.  NFSv3 file handles survive a server
 * restart and are not tied to a context, so the image keeps its handle.
 *
 *   detect    the poller saw POLLERR/POLLHUP, nfs_service() failed, or
 *             libnfs is no longer connected after servicing (it started
 *             one of its own reconnects); or a request timed out (below);
 *   pace      a mount attempt starts after a backoff (100 ms, doubling
 *             to 2 s; reset by an answer); an attempt that fails, or is
 *             not mounted within the request timeout, is dropped and the
 *             next one waits for the next backoff step;
 *   requests  libnfs's RPC timeout is off on the data path.  A tick
 *             (every TICK_MS) looks at the oldest call: unanswered for
 *             $IMGFS_REQUEST_TIMEOUT seconds, the connection counts as
 *             lost (as above);
 *   deadline  the first loss starts the outage clock; any answer to a
 *             call of the data path stops it.  After
 *             $IMGFS_RECONNECT_TIMEOUT seconds the connection is given
 *             up: the contexts are destroyed (libnfs calls back every
 *             call it holds, cancelled), the rest is failed, and every
 *             later request fails with -EIO.  A stall is thus detected
 *             after request timeout + reconnect timeout at most (plus a
 *             tick);
 *   stale     NFS3ERR_STALE on the image's handle: the file is looked up
 *             again by its path, once per image.  If it is the same file
 *             (fileid, and for a read-only image the size, as at open)
 *             the calls are re-sent with the new handle; otherwise they
 *             fail with a message naming the change.
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

/* Drop the mount attempt in progress, if any (its callback, cancelled,
 * sees that it is no longer the current attempt). */
static void drop_rebuild(struct nfs_image *ni)
{
    struct nfs_context *nfs = ni->rebuild;
    ni->rebuild = NULL;
    if (nfs)
        nfs_destroy_context(nfs);
}

/* The deadline passed: fail everything, now and later. */
static void give_up(struct nfs_image *ni)
{
    ni->dead = true;
    ni->gave_up_ns = loop_now_ns();
    loop_remove_poller(ni->img->loop, &ni->poller);
    drop_rebuild(ni);
    struct nfs_context *nfs = ni->nfs;
    if (nfs && ni->fh)
        nfs_close_async(nfs, ni->fh, close_cb, NULL);
    if (nfs && ni->stale_fh)
        nfs_close_async(nfs, ni->stale_fh, close_cb, NULL);
    ni->fh = ni->stale_fh = NULL;
    /* Calls back (cancelled) every call libnfs holds; the data path
     * sees `dead` and fails them. */
    if (nfs)
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

/* ---- replacing the context ---------------------------------------------- */

/* The connection of ni->nfs is lost (why: for the give-up message): set
 * the context aside and mount a new one after a backoff. */
static void conn_failed(struct nfs_image *ni, const char *why)
{
    conn_lost(ni, why);
    if (ni->rebuilding)
        return;
    ni->rebuilding = true;
    ni->reconnects++;
    hold_back(ni);
}

static void rebuild_mount_cb(int status, struct nfs_context *nfs, void *data,
                             void *private_data)
{
    (void)data;
    struct nfs_image *ni = private_data;
    if (nfs != ni->rebuild)
        return;                 /* a dropped attempt, being destroyed */
    ni->rebuild_status = status < 0 ? -1 : 1;
}

/* The export the image's file was found in: the URL's path minus the
 * file's path inside the export (ni->path).  Returns a malloc'd string,
 * or NULL. */
static char *export_of(const struct nfs_url *u, const char *file)
{
    size_t np = strlen(u->path), nf = strlen(u->file), nl = strlen(file);
    char *full = malloc(np + nf + 1);
    if (!full)
        return NULL;
    memcpy(full, u->path, np);
    memcpy(full + np, u->file, nf + 1);
    size_t n = np + nf;
    if (nl > n || strcmp(full + n - nl, file) != 0) {
        free(full);
        return NULL;
    }
    if (n == nl) {
        free(full);
        return strdup("/");
    }
    full[n - nl] = '\0';
    return full;
}

/* Start mounting a new context for the image's URL.  On failure the
 * next attempt waits for the next backoff step. */
static void start_rebuild(struct nfs_image *ni)
{
    struct nfs_context *nfs = nfs_init_context();
    if (!nfs) {
        hold_back(ni);
        return;
    }
    nfs_set_version(nfs, 3);
    nfs_set_timeout(nfs, -1);           /* attempts are timed here */
    nfs_set_tcp_syncnt(nfs, 2);
    nfs_set_autoreconnect(nfs, 0);      /* a loss is handled here */
    nfs_set_dircache(nfs, 0);           /* listings come from the server */
    struct nfs_url *u = ni->path ? nfs_parse_url_full(nfs, ni->img->name)
                                 : NULL;
    char *export = u ? export_of(u, ni->path) : NULL;
    ni->rebuild = nfs;
    ni->rebuild_status = 0;
    ni->rebuild_started_ns = loop_now_ns();
    if (!export ||
        nfs_mount_async(nfs, u->server, export, rebuild_mount_cb, ni) < 0) {
        drop_rebuild(ni);
        hold_back(ni);
    }
    free(export);
    if (u)
        nfs_destroy_url(u);
}

/* The new context is mounted: it replaces the old one, whose calls come
 * back cancelled and are issued again by the data path. */
static void finish_rebuild(struct nfs_image *ni)
{
    struct nfs_context *old = ni->nfs;
    ni->nfs = ni->rebuild;
    ni->rebuild = NULL;
    ni->rebuilding = false;
    ni->backoff_ms = BACKOFF_FIRST_MS;  /* the server is there */
    if (old)
        nfs_destroy_context(old);
}

/* An attempt failed or took too long: drop it, wait for the next. */
static void rebuild_failed(struct nfs_image *ni)
{
    drop_rebuild(ni);
    hold_back(ni);
}

/* ---- request timeouts ------------------------------------------------- */

/* How long one mount attempt may take. */
static uint64_t attempt_limit_ns(const struct nfs_image *ni)
{
    unsigned s = ni->request_timeout_s ? ni->request_timeout_s : 30;
    return s * NS_PER_S;
}

static void check_request_timeout(struct nfs_image *ni, uint64_t now)
{
    if (!ni->request_timeout_s || ni->rebuilding)
        return;
    uint64_t oldest = 0;
    for (struct nfs_pending *p = ni->pending; p; p = p->next)
        if (p->in_libnfs && (!oldest || p->sent_ns < oldest))
            oldest = p->sent_ns;
    if (!oldest || now < oldest ||
        now - oldest < ni->request_timeout_s * NS_PER_S)
        return;
    char why[96];
    snprintf(why, sizeof why, "no answer from the server within %u s",
             ni->request_timeout_s);
    conn_failed(ni, why);
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

/* A re-lookup call lost to the connection (-EFAULT) or its timeout
 * (-EINTR) is tried again on the next call; returns whether that is the
 * case. */
static bool relookup_again(struct nfs_image *ni, int status)
{
    if (status != -EFAULT && status != -EINTR)
        return false;
    ni->relookup = RELOOKUP_NONE;
    return true;
}

static void relookup_open_cb(int status, struct nfs_context *nfs, void *data,
                             void *private_data)
{
    struct nfs_image *ni = private_data;
    if (ni->dead)
        return;
    if (status < 0) {
        if (relookup_again(ni, status))
            return;
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
        if (relookup_again(ni, status))
            return;
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

/* While a connection is lost the poller serves the context being
 * mounted, if any; the old context gets no events. */
static struct nfs_context *serviced(const struct nfs_image *ni)
{
    if (ni->dead)
        return NULL;
    return ni->rebuilding ? ni->rebuild : ni->nfs;
}

static int poll_get_fd(void *opaque)
{
    struct nfs_context *nfs = serviced(opaque);
    return nfs ? nfs_get_fd(nfs) : -1;
}

static int poll_events(void *opaque)
{
    struct nfs_context *nfs = serviced(opaque);
    return nfs ? nfs_which_events(nfs) : 0;
}

static int poll_service(void *opaque, int revents)
{
    struct nfs_image *ni = opaque;
    struct nfs_context *nfs = serviced(ni);
    if (ni->dead)
        return -1;
    if (!nfs)
        return 0;
    if (ni->in_service)
        return 0;
    bool failed = revents & (POLLERR | POLLHUP);
    ni->in_service = true;
    int r = nfs_service(nfs, revents);
    ni->in_service = false;
    if (ni->dead)
        return -1;
    if (ni->rebuilding) {
        if (nfs != ni->rebuild)
            return 0;
        if (ni->rebuild_status > 0)
            finish_rebuild(ni);
        else if (ni->rebuild_status < 0 || r < 0)
            rebuild_failed(ni);
        return 0;
    }
    /* libnfs would resume a lost connection in this context (see
     * above): not connected any more after servicing is a loss too. */
    if (failed || r < 0 || !(nfs_which_events(nfs) & POLLIN))
        conn_failed(ni, nfs_get_error(nfs));
    return 0;
}

/* The periodic work: request timeouts, the deadline, the next mount
 * attempt, libnfs's own timers.  False once the connection is given up. */
static bool tick_work(struct nfs_image *ni)
{
    if (ni->dead)
        return false;
    uint64_t now = loop_now_ns();
    check_request_timeout(ni, now);
    now = loop_now_ns();            /* not before lost_since_ns */
    if (ni->lost_since_ns && ni->reconnect_limit_s &&
        now > ni->lost_since_ns &&
        now - ni->lost_since_ns > ni->reconnect_limit_s * NS_PER_S) {
        give_up(ni);
        return false;
    }
    if (ni->rebuilding) {
        if (ni->rebuild && now - ni->rebuild_started_ns > attempt_limit_ns(ni))
            rebuild_failed(ni);
        if (!ni->rebuild && now >= ni->hold_until_ns)
            start_rebuild(ni);
    } else if (!ni->in_service) {
        ni->in_service = true;
        nfs_service(ni->nfs, 0);
        ni->in_service = false;
    }
    return true;
}

static void tick(void *opaque)
{
    struct nfs_image *ni = opaque;
    ni->service_timer = 0;
    if (!tick_work(ni))
        return;
    int64_t id = loop_add_timer(ni->img->loop, TICK_MS, tick, ni);
    ni->service_timer = id > 0 ? id : 0;
}

void nfs_image_drive(struct nfs_image *ni, unsigned ms)
{
    if (ms > TICK_MS)
        ms = TICK_MS;
    int fd = poll_get_fd(ni);
    struct pollfd pfd = { .fd = fd, .events = (short)poll_events(ni) };
    int n = poll(&pfd, fd >= 0 ? 1 : 0, (int)ms);
    if (n > 0 && pfd.revents)
        poll_service(ni, pfd.revents);
    uint64_t now = loop_now_ns();
    if (now - ni->drive_tick_ns >= TICK_MS * NS_PER_MS) {
        ni->drive_tick_ns = now;
        tick_work(ni);
    }
}

void nfs_image_attach(struct nfs_image *ni)
{
    ni->reconnect_limit_s = image_reconnect_timeout_s();
    ni->request_timeout_s = image_request_timeout_s();
    ni->backoff_ms = BACKOFF_FIRST_MS;
    struct nfs_stat_64 st;
    if (ni->fh && nfs_fstat64(ni->nfs, ni->fh, &st) == 0)
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

void nfs_image_revive(struct nfs_image *ni)
{
    if (!ni->dead)
        return;
    ni->dead = false;
    ni->rebuilding = true;          /* no context (ni->nfs is NULL) */
    ni->rebuild = NULL;
    ni->lost_since_ns = loop_now_ns();
    ni->backoff_ms = BACKOFF_FIRST_MS;
    ni->hold_until_ns = 0;          /* a mount attempt at the next tick */
    loop_add_poller(ni->img->loop, &ni->poller);
    if (ni->service_timer > 0)
        loop_cancel_timer(ni->img->loop, ni->service_timer);
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
    drop_rebuild(ni);
    ni->rebuilding = false;
}
