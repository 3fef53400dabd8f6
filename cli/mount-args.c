/* mount-args.c — see mount-args.h. */
#include "mount-args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/image-open.h"
#include "copier/rate.h"

void mount_args_usage(FILE *f)
{
    fprintf(f,
        "usage: imgfs mount [-f] [-d] [-o OPTIONS] MOUNTPOINT NAME=URL...\n"
        "\n"
        "Mount images as files under MOUNTPOINT:\n"
        "  NAME=nfs://server/export/dir/file   an NFS file, shown as NAME\n"
        "  NAME=nfs://server/export/dir/       an NFS directory, shown as NAME/\n"
        "  NAME=iscsi://host[:port]/iqn/lun    an iSCSI LUN (fixed size)\n"
        "  NAME=/path/to/file-or-device        a local file (fixed size)\n"
        "  NAME=null: | NAME=zero:SIZE         test images\n"
        "MOUNTPOINT/control/ runs copy jobs: cp x.job MOUNTPOINT/control/,\n"
        "cat MOUNTPOINT/control/x.status, rm MOUNTPOINT/control/x.job.\n"
        "\n"
        "  -f            stay in the foreground\n"
        "  -d            FUSE debug output (implies -f)\n"
        "  -o OPTIONS    comma-separated mount options:\n"
        "     ro           open no image for writing, start no job\n"
        "     page_cache   let the kernel cache image files (faster for\n"
        "                  tools reading < 128 KiB at a time, slower for\n"
        "                  large sequential reads and writes)\n"
        "     uid=N,gid=N  owner and group of the mount root, the top-level\n"
        "                  images, control/ and its files (default: yours)\n"
        "     umask=OCTAL  their modes: files 0666 & ~umask (no write bits\n"
        "                  on read-only images), directories 0777 & ~umask\n"
        "                  (default 077: the owner only).  NFS directories\n"
        "                  and their files show the server's owners and modes\n"
        "     allow_other  let other local users in (see below)\n"
        "     allow_root   let root in\n"
        "     state=DIR    keep each job's spec and durable watermark in\n"
        "                  DIR/<mount point, '/' as '-'>/NAME.state (default\n"
        "                  /var/lib/imgfs/state for root, else\n"
        "                  $XDG_STATE_HOME/imgfs or ~/.local/state/imgfs);\n"
        "                  jobs the last mount left unfinished show as\n"
        "                  'interrupted': touch control/NAME.job resumes one\n"
        "     nostate      keep no job state\n"
        "     resume_jobs  resume every interrupted job at mount\n"
        "     rate=RATE    at most RATE bytes/s of data written by all\n"
        "                  running jobs together (e.g. 100M), shared\n"
        "                  fairly: each gets an equal share, or its own\n"
        "                  rate if lower; control/NAME.rate shows and\n"
        "                  changes one job's own limit (echo 50M > it)\n"
        "     memory=SIZE  buffers of all jobs and read-ahead together stay\n"
        "                  within SIZE (default 512M); a job that does not\n"
        "                  fit waits as 'queued' (its status says why) and\n"
        "                  starts, in order, when memory frees; a job's\n"
        "                  own memory (job key memory, default 64M) is cut\n"
        "                  to SIZE\n"
        "     max_jobs=N   at most N jobs run at once (default: no limit)\n"
        "     and FUSE's own options (fsname=, max_read=, ...)\n"
        "\n"
        "Only the mounting user can use the mount unless allow_other or\n"
        "allow_root is given.  Both imply default_permissions: the kernel\n"
        "checks each access against the owners and modes above, and a job\n"
        "runs only if whoever wrote its job file may read its source and\n"
        "write its target.  Whoever may write an image file may overwrite\n"
        "it, and the mount acts on the NFS server with its own identity\n"
        "(root when mounted by root; new files and directories are then\n"
        "given to the user who created them), so choose uid, gid and umask\n"
        "before opening a mount to other users.\n"
        "Unmount with: fusermount3 -u MOUNTPOINT\n"
        "Exit status: 0 mounted (or, with -f, unmounted cleanly), 1 an image,\n"
        "the state directory or the mount failed (or a write failed at\n"
        "unmount), 2 bad arguments.\n");
}

enum {
    KEY_HELP,
    KEY_FOREGROUND,
    KEY_DEBUG,
    KEY_RO,
    KEY_PAGE_CACHE,
    KEY_ALLOW_OTHER,
    KEY_ALLOW_ROOT,
    KEY_DEFAULT_PERMISSIONS,
    KEY_UID,
    KEY_GID,
    KEY_UMASK,
    KEY_STATE,
    KEY_NOSTATE,
    KEY_RESUME_JOBS,
    KEY_RATE,
    KEY_MEMORY,
    KEY_MAX_JOBS,
};

static const struct fuse_opt mount_opt_spec[] = {
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-f", KEY_FOREGROUND),
    FUSE_OPT_KEY("-d", KEY_DEBUG),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("page_cache", KEY_PAGE_CACHE),
    FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
    FUSE_OPT_KEY("allow_root", KEY_ALLOW_ROOT),
    FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
    FUSE_OPT_KEY("uid=", KEY_UID),
    FUSE_OPT_KEY("gid=", KEY_GID),
    FUSE_OPT_KEY("umask=", KEY_UMASK),
    FUSE_OPT_KEY("state=", KEY_STATE),
    FUSE_OPT_KEY("nostate", KEY_NOSTATE),
    FUSE_OPT_KEY("resume_jobs", KEY_RESUME_JOBS),
    FUSE_OPT_KEY("rate=", KEY_RATE),
    FUSE_OPT_KEY("memory=", KEY_MEMORY),
    FUSE_OPT_KEY("max_jobs=", KEY_MAX_JOBS),
    FUSE_OPT_END,
};

/* What the fuse_opt_parse callback works on. */
struct parse_ctx {
    struct mount_args *a;
    struct errmsg *err;
    bool failed;                /* err is set */
};

/* Parse the value of "name=VALUE" in `arg` as an unsigned number in
 * `base` (only digits: no sign, no spaces, nothing after) of at most
 * `max`.  Returns false, with the error set, when it is not one. */
static bool option_number(struct parse_ctx *c, const char *arg, int base,
                          unsigned long max, unsigned long *out)
{
    const char *v = strchr(arg, '=') + 1;
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, base);
    bool digits = *v >= '0' && *v <= (base == 8 ? '7' : '9');
    if (!digits || *end || errno || n > max) {
        if (base == 8)
            errmsg_set(c->err, "bad option '%s': "
                       "expected an octal mask from 0 to %lo", arg, max);
        else
            errmsg_set(c->err, "bad option '%s': "
                       "expected a number from 0 to %lu", arg, max);
        c->failed = true;
        return false;
    }
    *out = n;
    return true;
}

/* An operand: the mount point, then NAME=URL (a non-empty NAME). */
static int add_operand(struct parse_ctx *c, const char *arg)
{
    struct mount_args *a = c->a;
    if (!a->mountpoint) {
        a->mountpoint = arg;
        return 0;
    }
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        errmsg_set(c->err, "'%s': expected NAME=URL", arg);
        c->failed = true;
        return -1;
    }
    const char **v = realloc(a->specs, (a->nspecs + 1) * sizeof *v);
    if (!v) {
        errmsg_set(c->err, "out of memory");
        c->failed = true;
        return -1;
    }
    a->specs = v;
    v[a->nspecs++] = arg;
    return 0;
}

/* The -o options of imgfs itself: note them; keep (1) those FUSE needs,
 * drop (0) the others, refuse (-1) bad values. */
static int fs_option(struct parse_ctx *c, const char *arg, int key)
{
    struct fs_mount_options *o = &c->a->fs;
    unsigned long n;
    switch (key) {
    case KEY_RO:
        o->read_only = true;
        return 1;
    case KEY_PAGE_CACHE:
        o->page_cache = true;
        return 0;
    case KEY_UID:
    case KEY_GID:
        /* (uid_t)-1 means "no change" to chown(2): not an owner. */
        if (!option_number(c, arg, 10, 0xfffffffeUL, &n))
            return -1;
        if (key == KEY_UID)
            o->uid = (uid_t)n;
        else
            o->gid = (gid_t)n;
        return 0;
    case KEY_UMASK:
        if (!option_number(c, arg, 8, 0777, &n))
            return -1;
        o->umask = (mode_t)n;
        return 0;
    case KEY_STATE:
        free((char *)o->state);
        o->state = strdup(arg + strlen("state="));
        if (!o->state || o->state[0] != '/') {
            errmsg_set(c->err, "bad option '%s': "
                       "expected an absolute directory path", arg);
            c->failed = true;
            return -1;
        }
        return 0;
    case KEY_NOSTATE:
        o->no_state = true;
        return 0;
    case KEY_RESUME_JOBS:
        o->resume_jobs = true;
        return 0;
    case KEY_MEMORY: {
        uint64_t v;
        if (image_parse_size(arg + strlen("memory="), &v) < 0 ||
            v < (1u << 20)) {
            errmsg_set(c->err, "bad option '%s': expected a size of at "
                       "least 1M (e.g. 256M)", arg);
            c->failed = true;
            return -1;
        }
        o->memory = v;
        return 0;
    }
    case KEY_MAX_JOBS:
        if (!option_number(c, arg, 10, 4096, &n))
            return -1;
        o->max_jobs = (unsigned)n;
        return 0;
    case KEY_RATE:
        if (rate_parse(arg + strlen("rate="), &o->rate) < 0) {
            errmsg_set(c->err, "bad option '%s': expected a rate in bytes/s "
                       "(e.g. 100M; 0 for unlimited, else 1K to 1T)", arg);
            c->failed = true;
            return -1;
        }
        return 0;
    default:
        return 1;
    }
}

/* fuse_opt_parse callback. */
static int mount_opt_proc(void *data, const char *arg, int key,
                          struct fuse_args *outargs)
{
    struct parse_ctx *c = data;
    struct mount_args *a = c->a;
    (void)outargs;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        return add_operand(c, arg) < 0 ? -1 : 0;
    case KEY_HELP:
        a->help = true;
        return -1;              /* stop here: nothing else matters */
    case KEY_FOREGROUND:
        a->foreground = true;
        return 0;
    case KEY_DEBUG:
        a->debug = a->foreground = true;
        return 0;
    case KEY_ALLOW_OTHER:
        a->allow_other = true;
        return 1;
    case KEY_ALLOW_ROOT:
        a->allow_root = true;
        return 1;
    case KEY_DEFAULT_PERMISSIONS:
        a->default_permissions = true;
        return 1;
    case FUSE_OPT_KEY_OPT:
        /* A command-line word starting with '-' that is none of ours;
         * -o words never start with '-' and go to FUSE. */
        if (arg[0] == '-') {
            errmsg_set(c->err, "unknown option '%s'", arg);
            c->failed = true;
            return -1;
        }
        return 1;
    default:
        return fs_option(c, arg, key);
    }
}

int mount_args_parse(int argc, char **argv, struct mount_args *a,
                     struct errmsg *err)
{
    memset(a, 0, sizeof *a);
    a->fs.uid = getuid();
    a->fs.gid = getgid();
    a->fs.umask = 077;
    a->fuse = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
    struct parse_ctx c = { .a = a, .err = err };
    /* On success fuse_opt_parse replaces a->fuse with what is kept. */
    if (fuse_opt_parse(&a->fuse, &c, mount_opt_spec, mount_opt_proc) != 0) {
        if (a->help)
            return 0;
        if (!c.failed)
            errmsg_set(err, "bad options");
        return -1;
    }
    /* fuse_opt_parse keeps a "--" that came before operands when it
     * also keeps -o options; FUSE needs none. */
    if (a->fuse.argc > 1 && !strcmp(a->fuse.argv[a->fuse.argc - 1], "--")) {
        free(a->fuse.argv[--a->fuse.argc]);
        a->fuse.argv[a->fuse.argc] = NULL;
    }
    if (!a->mountpoint || a->nspecs == 0) {
        errmsg_set(err, "expected MOUNTPOINT and NAME=URL");
        return -1;
    }
    /* Other users are let in only with the kernel checking modes. */
    if (((a->allow_other || a->allow_root) && !a->default_permissions &&
         fuse_opt_add_arg(&a->fuse, "-odefault_permissions") != 0) ||
        (a->debug && fuse_opt_add_arg(&a->fuse, "-d") != 0)) {
        errmsg_set(err, "out of memory");
        return -1;
    }
    return 0;
}

void mount_args_free(struct mount_args *a)
{
    fuse_opt_free_args(&a->fuse);
    free(a->specs);
    a->specs = NULL;
    free((char *)a->fs.state);
    a->fs.state = NULL;
}
