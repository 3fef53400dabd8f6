/* nfs-image.h — private to the nfs backend (nfs.c: data path,
 * nfs-mount.c: connect and mount, nfs-open.c: open rules, nfs-dir.c:
 * metadata of a directory tree, which rides on an nfs_image without a
 * file handle).  Not a shared contract.
 *
 * One libnfs context per image (libnfs is not thread safe); the context is
 * used synchronously only while opening and closing, and through the async
 * API on the image's loop thread otherwise.  nfs-reconnect.c keeps the
 * connection alive through faults (its header says how).
 */
#ifndef IMGFS_NFS_IMAGE_H
#define IMGFS_NFS_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "loop.h"

struct nfs_context;
struct nfsfh;

/* A call of the data path that is inside libnfs or waiting to be sent
 * again; embedded in the data path's pieces (nfs.c) and listed on the
 * image so that nfs-reconnect.c can time them out and fail them. */
struct nfs_pending {
    struct nfs_pending *prev, *next;
    uint64_t sent_ns;           /* handed to libnfs (reset on reconnect) */
    bool in_libnfs;             /* a libnfs callback is still due */
    /* Fail the owner (the connection was given up; libnfs will not call
     * back any more). */
    void (*abort)(struct nfs_pending *p);
};

/* Re-lookup of the file by path after NFS3ERR_STALE (once per image). */
enum nfs_relookup { RELOOKUP_NONE, RELOOKUP_RUNNING, RELOOKUP_DONE,
                    RELOOKUP_FAILED };

struct nfs_image {
    struct image *img;          /* back pointer; img->priv == this */
    struct nfs_context *nfs;    /* NULL once the connection is given up */
    struct nfsfh *fh;
    uint64_t readmax;           /* largest READ3 the server takes (> 0) */
    uint64_t writemax;          /* largest WRITE3 the server takes (> 0) */
    bool growable;              /* writes past img->size extend the file */
    bool dead;                  /* connection given up: everything fails */
    struct loop_poller poller;
    int64_t service_timer;      /* periodic tick, 0 = none */

    /* Riding through faults (nfs-reconnect.c). */
    char *path;                 /* the file inside the export (re-lookup) */
    int open_flags;             /* O_RDONLY or O_RDWR (re-lookup) */
    uint64_t fileid;            /* the file's fileid at open, 0: unknown */
    struct nfs_pending *pending;/* calls in flight or waiting to retry */
    unsigned reconnect_limit_s; /* give up after this long lost, 0: never */
    unsigned request_timeout_s; /* no answer this long = lost, 0: never */
    uint64_t lost_since_ns;     /* connection lost since (0: fine) */
    uint64_t hold_until_ns;     /* reconnect backoff: no new mount
                                 * attempt before */
    unsigned backoff_ms;        /* next backoff step */
    unsigned reconnects;        /* reconnects forced or seen */
    bool rebuilding;            /* the connection is lost: a new context
                                 * is (to be) mounted; ni->nfs is the old
                                 * one, not serviced, collecting calls */
    struct nfs_context *rebuild;/* the new context being mounted, or NULL
                                 * (waiting for the backoff) */
    uint64_t rebuild_started_ns;/* when the mount of `rebuild` began */
    int rebuild_status;         /* 0 mounting, 1 mounted, -1 failed */
    char lost_why[160];         /* what made it count as lost */
    enum nfs_relookup relookup;
    struct nfsfh *stale_fh;     /* the handle a re-lookup replaced; calls
                                 * may still use it: freed at close */
    char relookup_error[200];   /* why a stale handle could not be
                                 * replaced */
    bool in_service;            /* inside nfs_service() of this image:
                                 * not serviced again from one of its
                                 * own callbacks */
    uint64_t drive_tick_ns;     /* nfs_image_drive's last tick work */
    uint64_t gave_up_ns;        /* when the connection was given up */
};

/* A mounted export (nfs-mount.c): the context, what was mounted and the
 * file's path inside it. */
struct nfs_mounted {
    struct nfs_context *nfs;
    char *server;
    char *export;       /* what was mounted, e.g. "/export" */
    char *file;         /* path inside the export, e.g. "/dir/f.img" */
};

/* Connect to the server of `url` and mount the export holding its file
 * (the URL's directory, else the nearest parent the server accepts).
 * Returns 0 and fills `m`, or -errno with `err` naming the URL and what
 * failed (connection, mount). */
int nfs_mount_url(const char *url, struct nfs_mounted *m, struct errmsg *err);

/* The same for the directory `url` names (no trailing '/'): the whole
 * path is the directory; `m->file` is its path inside the export that
 * mounted ("" when the directory is the export). */
int nfs_mount_dir_url(const char *url, struct nfs_mounted *m,
                      struct errmsg *err);

/* Destroy the context (if any) and free the strings; `m` becomes empty. */
void nfs_mounted_release(struct nfs_mounted *m);

/* The vtable of nfs images (nfs.c). */
extern const struct image_ops nfs_image_ops;

/* Attach `ni` to its image's loop (nfs-reconnect.c): the poller and the
 * periodic tick that drives request timeouts, reconnect backoff and the
 * reconnect deadline; reads the timeouts (io-timeouts.h), records the
 * file's fileid for a later re-lookup and turns libnfs's own RPC timeout
 * off.  Called once by nfs_image_open after the file is open; ni->path
 * and ni->open_flags should be set before (without a path a stale file
 * handle is not looked up again).  Without a file handle (ni->fh NULL:
 * nfs-dir.c) no fileid is recorded. */
void nfs_image_attach(struct nfs_image *ni);

/* Drive `ni` without its loop for at most `ms` (capped at one tick):
 * wait for its connection's fd, service it, and do the tick's work
 * (request timeouts, reconnects, the give-up) when a tick is due.  For
 * the loop thread waiting for one call of `ni` inside another loop
 * callback (nfs-dir.c), where running the whole loop would run other
 * callbacks in the middle of that one.  Loop timers (resends) do not
 * fire meanwhile. */
void nfs_image_drive(struct nfs_image *ni, unsigned ms);

/* After a give-up (ni->dead): start over, for a user that wants to be
 * tried again later (nfs-dir.c: a directory of a mount, unlike an
 * image, stays in use).  The connection counts as lost from now: a new
 * context is mounted at the next tick (ni->nfs stays NULL until then:
 * calls wait), paced and given up as after any loss. */
void nfs_image_revive(struct nfs_image *ni);

/* Detach from the loop (poller, tick); before the context is destroyed. */
void nfs_image_detach(struct nfs_image *ni);

/* Track `p`, just handed to libnfs (sent now). */
void nfs_pending_add(struct nfs_image *ni, struct nfs_pending *p);

/* Stop tracking `p` (its owner is finished). */
void nfs_pending_remove(struct nfs_image *ni, struct nfs_pending *p);

/* The server answered a call: the connection works (ends an outage,
 * resets the backoff). */
void nfs_conn_answered(struct nfs_image *ni);

/* What to do with a call that failed with libnfs status `status`:
 *   NFS_FAULT_FAIL   a real answer or a permanent failure: fail it;
 *   NFS_FAULT_RETRY  the connection failed: issue it again after
 *                    nfs_retry_delay_ms() (the outage clock is started);
 *   NFS_FAULT_STALE  NFS3ERR_STALE and a re-lookup is running or just
 *                    gave a new handle: issue it again (with ni->fh)
 *                    after nfs_retry_delay_ms().
 * `sent_fh` is the handle the call used.  On NFS_FAULT_FAIL for a stale
 * handle the image's last_error says why (file replaced, re-lookup
 * failed). */
enum nfs_fault { NFS_FAULT_FAIL, NFS_FAULT_RETRY, NFS_FAULT_STALE };
enum nfs_fault nfs_classify_failure(struct nfs_image *ni, int status,
                                    const struct nfsfh *sent_fh,
                                    const char *detail);

/* Milliseconds to wait before a call is issued again. */
unsigned nfs_retry_delay_ms(const struct nfs_image *ni);

/* When the connection has been given up: set last_error to why and
 * return -EIO. */
int nfs_dead_error(struct nfs_image *ni);

#endif
