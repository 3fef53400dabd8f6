/* commands.h — subcommands of the imgfs executable.  Each takes the
 * arguments after the subcommand name (argv[0] is the subcommand) and
 * returns the process exit status. */
#ifndef IMGFS_COMMANDS_H
#define IMGFS_COMMANDS_H

int cmd_copy(int argc, char **argv);

/* `imgfs mount [-f] [-d] [-o opts] MOUNTPOINT NAME=URL...` (mount-cmd.c):
 * check every image, mount, daemonize unless -f, serve until unmounted.
 * Exit 0 after a clean unmount; 1 when an image or the mount failed; 2
 * on usage errors. */
int cmd_mount(int argc, char **argv);

/* `imgfs wait MOUNT/control/NAME.job`: follow a job through its status
 * file until it ends (wait-cmd.c).  Exit 0 when done; 1 with the error
 * when it failed or was cancelled; 2 on usage errors or a missing status
 * file. */
int cmd_wait(int argc, char **argv);

#endif
