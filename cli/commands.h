/* commands.h — subcommands of the imgfs executable.  Each takes the
 * arguments after the subcommand name (argv[0] is the subcommand) and
 * returns the process exit status. */
#ifndef IMGFS_COMMANDS_H
#define IMGFS_COMMANDS_H

int cmd_copy(int argc, char **argv);

#endif
