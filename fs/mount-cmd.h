/* mount-cmd.h — the `imgfs mount` subcommand. */
#ifndef IMGFS_MOUNT_CMD_H
#define IMGFS_MOUNT_CMD_H

/* `imgfs mount [-f] [-o opts] MOUNTPOINT NAME=URL...`.  Returns the
 * process exit status. */
int cmd_mount(int argc, char **argv);

#endif
