/* mount-priv.h — the state of the one mount (fs/mount*.c only). */
#ifndef IMGFS_FS_MOUNT_PRIV_H
#define IMGFS_FS_MOUNT_PRIV_H

#include "fs.h"
#include "mount.h"

struct fs_mount {
    struct imgfs fs;            /* fs_global points here */
    struct fs_mount_options opts;   /* opts.state owned */
    struct fuse_session *se;
    bool signals;               /* fuse_set_signal_handlers done */
    bool mounted;               /* fuse_session_mount done */
};

#endif
