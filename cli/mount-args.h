/* mount-args.h — command-line options of `imgfs mount`, all parsed with
 * libfuse's fuse_opt_parse, without touching any image. */
#ifndef IMGFS_MOUNT_ARGS_H
#define IMGFS_MOUNT_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "fs/mount.h"

struct mount_args {
    bool help;                  /* -h / --help: print usage, nothing else */
    bool foreground;            /* -f (and -d) */
    bool debug;                 /* -d */
    const char *mountpoint;     /* first operand (in argv) */
    const char **specs;         /* NAME=URL operands (in argv; array
                                 * malloc'd) */
    size_t nspecs;
    struct fs_mount_options fs; /* what -o chose (fs.state malloc'd) */
    /* The options left for FUSE (with default_permissions added when
     * allow_other or allow_root asks for it, -d when debugging). */
    struct fuse_args fuse;
    /* -o seen, for default_permissions */
    bool allow_other, allow_root, default_permissions;
};

/* Parse `argv` (argv[0] is the subcommand name, "mount"): -f, -d, -h,
 * --help, -o OPTIONS (any number, joined; "-oOPTIONS" too), then the
 * mount point and at least one NAME=URL, options and operands in any
 * order; "--" ends the options.  -o defaults: the caller's uid and gid,
 * umask 077.  Returns 0 with `a` filled (with -h, only a->help is
 * meaningful), or -1 with `err` holding one line (e.g. "unknown option
 * '-x'", "bad option 'umask=0778': expected an octal mask from 0 to 777",
 * "expected MOUNTPOINT and NAME=URL").  Either way mount_args_free(a)
 * releases it. */
int mount_args_parse(int argc, char **argv, struct mount_args *a,
                     struct errmsg *err);

/* Free what mount_args_parse allocated in `a`. */
void mount_args_free(struct mount_args *a);

/* Print the `imgfs mount --help` text to `f`. */
void mount_args_usage(FILE *f);

#endif
