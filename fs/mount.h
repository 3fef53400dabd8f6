/* mount.h — the FUSE file system's mount API: what `imgfs mount` (cli/)
 * uses to build, run and tear down one mount.
 *
 * One mount per process.  The order of calls:
 *   fs_mount_new           options, the root and control/
 *   fs_mount_add_image     once per NAME=URL (each image checked now)
 *   fs_mount_attach        state directory, FUSE session, kernel mount
 *   (the caller may daemonize here: no thread runs yet)
 *   fs_mount_run           serve until unmounted, then stop jobs and close
 *                          images
 *   fs_mount_close         always, after fs_mount_new succeeded
 * Nothing here prints to stdout or stderr: errors come back in a struct
 * errmsg; after fs_mount_run has started, problems go to syslog (the
 * process may be a daemon by then). */
#ifndef IMGFS_FS_MOUNT_H
#define IMGFS_FS_MOUNT_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backends/errmsg.h"

/* What -o chose for the file system (options FUSE itself handles are
 * passed to fs_mount_attach as fuse_args). */
struct fs_mount_options {
    bool read_only;             /* ro: open no image for writing */
    bool page_cache;            /* let the kernel cache image files */
    uid_t uid;                  /* owner of root, images, control/ */
    gid_t gid;                  /* their group */
    mode_t umask;               /* their modes (0777 / 0666 & ~umask) */
    bool no_state;              /* keep no job state */
    const char *state;          /* state=DIR (absolute), NULL: default */
    bool resume_jobs;           /* resume every interrupted job at start */
    uint64_t rate;              /* rate=: bytes/s shared by running jobs */
    uint64_t memory;            /* memory=: jobs' and read-ahead buffers
                                   together (fs/mem-budget.h), 0: default */
    unsigned max_jobs;          /* max_jobs=: jobs at once, 0: no limit */
    /* Called with a message for each kept job file that cannot be read
     * (it is skipped); may be NULL. */
    void (*warn)(const char *msg);
};

struct fs_mount;

/* Create the mount (not yet attached to the kernel) with options `o`
 * (copied; o->state is copied too).  Also tunes malloc for the mount's
 * 1 MiB I/O buffers.  Returns NULL with `em` set on failure, or when a
 * mount already exists in this process. */
struct fs_mount *fs_mount_new(const struct fs_mount_options *o,
                              struct errmsg *em);

/* Add the image `url` as the top-level entry `name`: an NFS file, an NFS
 * directory (URL ending in '/'), an iSCSI LUN, a local file, null: or
 * zero:SIZE.  The image is checked now (opened, or looked up on the NFS
 * server); an image that refuses writing is shown read-only.  Returns 0,
 * or -1 with `em` set to "NAME: why" (bad or duplicate name, cannot
 * open). */
int fs_mount_add_image(struct fs_mount *m, const char *name, const char *url,
                       struct errmsg *em);

/* Set up the state directory (unless no_state) and load the jobs kept
 * there, then create the FUSE session from `args` (FUSE's options; the
 * file system adds fsname and subtype; `args` stays the caller's) and
 * mount it on `mountpoint`.  Returns 0, or -1 with `em` set. */
int fs_mount_attach(struct fs_mount *m, struct fuse_args *args,
                    const char *mountpoint, struct errmsg *em);

/* Serve the attached mount until it is unmounted (or a signal ends the
 * session): start the loop thread, resume interrupted jobs if asked, run
 * the FUSE session on worker threads; then cancel running jobs (their
 * watermark kept), wait for accepted writes, flush and close every image.
 * Returns the exit status: 0, or 1 when the session or the shutdown
 * failed (details in syslog). */
int fs_mount_run(struct fs_mount *m);

/* Unmount (if still mounted), destroy the session, remove an empty state
 * directory and close the NFS exports.  `m` may be NULL. */
void fs_mount_close(struct fs_mount *m);

#endif
