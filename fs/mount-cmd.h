/* mount-cmd.h — the `imgfs mount` and `imgfs wait` subcommands. */
#ifndef IMGFS_MOUNT_CMD_H
#define IMGFS_MOUNT_CMD_H

/* `imgfs mount [-f] [-o opts] MOUNTPOINT NAME=URL...`.  Returns the
 * process exit status. */
int cmd_mount(int argc, char **argv);

/* `imgfs wait MOUNT/control/NAME.job`: follow a job until it ends.
 * Returns the process exit status (0 when the job is done). */
int cmd_wait(int argc, char **argv);

#endif
