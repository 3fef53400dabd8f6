/* nfs-dir.h — asynchronous NFS metadata: the names, attributes and
 * listings of one directory tree on an NFS export (what the mount shows
 * of an nfs://server/export/dir/ spec), next to the image vtable that
 * moves file contents.
 *
 * An nfs_dir is opened by URL with the mount code of the nfs backend
 * (nfs-mount.c: the same URL options, the fallback to parent directories
 * when the named directory is not itself an export, the same error
 * texts), then attached to a loop.  From then on every operation runs on
 * that loop's thread through libnfs's async API, and rides through faults
 * exactly like an open nfs image (nfs-reconnect.c, io-timeouts.h): a call
 * unanswered for $IMGFS_REQUEST_TIMEOUT makes the connection count as
 * lost, a new context is mounted and the calls are sent again; after
 * $IMGFS_RECONNECT_TIMEOUT without a connection every call in flight
 * fails with -EIO.  A stalled server thus fails a call after request +
 * reconnect timeout at most.  Unlike an image, the directory stays in
 * use after that: the next call starts connecting again (and fails the
 * same way if the server still does not answer).
 *
 * Paths (`rel`) are relative to the directory the URL named: "" is that
 * directory, "/a/b" an entry below it.  They are copied at the call; the
 * caller's strings need not outlive it.
 *
 * Completion: every operation takes a callback that runs on the loop
 * thread exactly once, never inside the call that issued it (failures to
 * issue included).  The result and everything it points to are valid
 * only during the callback.
 *
 * A call that is sent again after a lost connection may already have
 * been carried out by the server: a retried create, mkdir, unlink, rmdir
 * or rename can then fail with -EEXIST or -ENOENT although it took place
 * (as with any NFSv3 client across a reconnect).
 */
#ifndef IMGFS_NFS_DIR_H
#define IMGFS_NFS_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include "errmsg.h"
#include "loop.h"

struct nfs_dir;

/* Attributes of one entry, as the server reported them. */
struct nfs_dir_attr {
    uint64_t fsid;          /* the server's file system id */
    uint64_t fileid;        /* the server's file id (unique per fsid) */
    mode_t mode;            /* type (S_IFDIR, S_IFREG, ...) and mode bits */
    uint64_t nlink;
    uint32_t uid, gid;
    uint64_t size;
    uint64_t used;          /* bytes allocated */
    struct timespec atime, mtime, ctime;
};

/* One entry of a listing ("." and ".." are left out). */
struct nfs_dir_entry {
    const char *name;
    uint64_t fsid, fileid;
    mode_t mode;            /* S_IFDIR or S_IFREG (0 for other types) and
                             * the mode bits */
};

/* What a call returns.  `err` is 0 or a negative errno: the server's
 * answer (-ENOENT, -EEXIST, -ENOTEMPTY, -EACCES...), -EIO when the
 * connection was given up or the call could not be sent, -ENOMEM,
 * -ECANCELED when the nfs_dir was closed first.  `error` says more in
 * words ("" when there is nothing to add).  On success the member of the
 * operation is set: attr (stat), entries/n (list), vfs (statvfs). */
struct nfs_dir_result {
    int err;
    const char *error;
    const struct nfs_dir_attr *attr;
    const struct nfs_dir_entry *entries;
    size_t n;
    const struct statvfs *vfs;
};

typedef void (*nfs_dir_cb)(void *opaque, const struct nfs_dir_result *res);

/* Open the directory `url` (nfs://server/export/dir, trailing '/' and
 * query arguments allowed): connect and mount synchronously (any thread;
 * no loop is used yet).  With `is_dir` false the URL names a file: its
 * directory is opened and the file's name is returned in *file as
 * "/name" (malloc'd).  The named directory (or file) is looked up: its
 * attributes go to *attr when `attr` is not NULL; a missing one fails.
 * Returns 0, or -errno with `err` naming the URL and what failed. */
int nfs_dir_open(const char *url, bool is_dir, struct nfs_dir **out,
                 char **file, struct nfs_dir_attr *attr, struct errmsg *err);

/* Attach `d` to `loop` (its poller and the tick that drives timeouts and
 * reconnects).  On the loop's thread, or before the loop runs.  A second
 * call does nothing. */
void nfs_dir_attach(struct nfs_dir *d, struct loop *loop);
bool nfs_dir_attached(const struct nfs_dir *d);

/* Close `d`: detach it from its loop, fail the calls still in flight
 * with -ECANCELED (their callbacks run inside this call: the only
 * exception to the completion rule), free everything.  On the loop
 * thread, or after the loop stopped (before it is freed).  NULL: no-op. */
void nfs_dir_close(struct nfs_dir *d);

/* The URL of the directory without query and trailing '/'
 * ("nfs://server/export/dir"), the URL's query ("" or "?nfsport=..."),
 * and the server's numeric address (nfs-id.h).  Valid until close; any
 * thread. */
const char *nfs_dir_url(const struct nfs_dir *d);
const char *nfs_dir_query(const struct nfs_dir *d);
const char *nfs_dir_server_addr(const struct nfs_dir *d);

/* The operations: loop thread, `d` attached; cb(opaque, res) later. */

/* GETATTR of `rel` (following the path's symbolic links): res->attr. */
void nfs_dir_stat(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                  void *opaque);
/* The entries of the directory `rel`: res->entries, res->n. */
void nfs_dir_list(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                  void *opaque);
/* Create the regular file `rel` (exclusive: -EEXIST if it exists) with
 * `mode` & 07777. */
void nfs_dir_create(struct nfs_dir *d, const char *rel, mode_t mode,
                    nfs_dir_cb cb, void *opaque);
/* Create the directory `rel` with `mode` & 07777. */
void nfs_dir_mkdir(struct nfs_dir *d, const char *rel, mode_t mode,
                   nfs_dir_cb cb, void *opaque);
/* Remove the file `rel` / the empty directory `rel`. */
void nfs_dir_unlink(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                    void *opaque);
void nfs_dir_rmdir(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                   void *opaque);
/* Rename `from` to `to` (replacing `to` as rename(2) does). */
void nfs_dir_rename(struct nfs_dir *d, const char *from, const char *to,
                    nfs_dir_cb cb, void *opaque);
/* SETATTR: owner and group (the context's identity must be allowed to:
 * root with no_root_squash) / access and modification times / size. */
void nfs_dir_chown(struct nfs_dir *d, const char *rel, uid_t uid, gid_t gid,
                   nfs_dir_cb cb, void *opaque);
void nfs_dir_utimes(struct nfs_dir *d, const char *rel,
                    const struct timespec times[2], nfs_dir_cb cb,
                    void *opaque);
void nfs_dir_truncate(struct nfs_dir *d, const char *rel, uint64_t size,
                      nfs_dir_cb cb, void *opaque);
/* FSSTAT of the export: res->vfs. */
void nfs_dir_statvfs(struct nfs_dir *d, nfs_dir_cb cb, void *opaque);

/* nfs_dir_stat, waited for: 0 or -errno, *attr filled on success.  `d`
 * is attached to `loop` first if it is not yet (on the loop thread).  From
 * a thread other than the loop's, the call is posted to the loop and
 * waited for.  On the loop thread only `d`'s connection is driven until
 * the answer comes (timeouts, reconnects and resends included): nothing
 * else of the loop runs meanwhile, as with a synchronous call.  `d` is
 * not serviced again from inside one of its own callbacks, so never wait
 * from such a callback (it would fail after request + reconnect
 * timeout).  For the few callers that cannot wait for a callback (code
 * on the loop thread that expects an answer at once: access checks,
 * resolving a job's names). */
int nfs_dir_stat_wait(struct nfs_dir *d, struct loop *loop, const char *rel,
                      struct nfs_dir_attr *attr);

#endif
