/* mount-cmd.c — `imgfs mount`: parse the command line (mount-args.h),
 * check every image and attach the mount while still in the foreground
 * (errors are printed and exit non-zero), daemonize unless -f, then serve
 * until unmounted (fs/mount.h).  -o state=DIR / nostate / resume_jobs
 * choose where jobs are kept. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "commands.h"
#include "fs/mount.h"
#include "mount-args.h"

static void warn_state(const char *msg)
{
    fprintf(stderr, "imgfs mount: %s (skipped)\n", msg);
}

/* Add every NAME=URL of `a` to `m`.  0, or -1 with the error printed. */
static int add_images(struct fs_mount *m, const struct mount_args *a)
{
    for (size_t i = 0; i < a->nspecs; i++) {
        const char *spec = a->specs[i];
        const char *eq = strchr(spec, '=');     /* checked by the parse */
        char *name = strndup(spec, (size_t)(eq - spec));
        struct errmsg em = { "" };
        if (!name)
            errmsg_set(&em, "out of memory");
        int r = name ? fs_mount_add_image(m, name, eq + 1, &em) : -1;
        free(name);
        if (r < 0) {
            fprintf(stderr, "imgfs mount: %s\n", em.text);
            return -1;
        }
    }
    return 0;
}

/* Build, attach and serve the mount `a` describes.  The exit status. */
static int mount_and_serve(struct mount_args *a)
{
    struct errmsg em = { "" };
    a->fs.warn = warn_state;
    struct fs_mount *m = fs_mount_new(&a->fs, &em);
    if (!m) {
        fprintf(stderr, "imgfs mount: %s\n", em.text);
        return 1;
    }
    int status = 1;
    if (add_images(m, a) < 0)
        goto out;
    if (fs_mount_attach(m, &a->fuse, a->mountpoint, &em) < 0) {
        fprintf(stderr, "imgfs mount: %s\n", em.text);
        goto out;
    }
    openlog("imgfs", LOG_PID, LOG_DAEMON);
    if (!a->foreground && fuse_daemonize(0) != 0)
        goto out;
    status = fs_mount_run(m);
out:
    fs_mount_close(m);
    return status;
}

int cmd_mount(int argc, char **argv)
{
    struct mount_args a;
    struct errmsg em = { "" };
    int status;
    if (mount_args_parse(argc, argv, &a, &em) < 0) {
        fprintf(stderr, "imgfs mount: %s\n", em.text);
        status = 2;
    } else if (a.help) {
        mount_args_usage(stdout);
        status = 0;
    } else {
        status = mount_and_serve(&a);
    }
    mount_args_free(&a);
    return status;
}
