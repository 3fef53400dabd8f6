/* mount-cmd.c — `imgfs mount`: argument parsing, checking every image
 * before mounting (errors are printed and exit non-zero while still in the
 * foreground), FUSE session setup, daemonizing, the loop thread, and the
 * clean shutdown after unmount (running jobs cancelled with their
 * watermark logged and kept as interrupted in the state directory, images
 * flushed and closed).  -o state=DIR / nostate / resume_jobs choose where
 * jobs are kept (job-state.h, jobs.c). */
#include "mount-cmd.h"

#include "fs.h"
#include "job-state.h"
#include "readahead.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

extern const struct fuse_lowlevel_ops imgfs_ops;

static void mount_usage(FILE *f)
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
        "Unmount with: fusermount3 -u MOUNTPOINT\n");
}

/* What -o sets besides the options passed on to FUSE. */
struct mount_opts {
    bool read_only, page_cache;
    bool no_state, resume_jobs;
    char *state;                /* state=DIR (malloc'd) */
    bool allow_other, allow_root, default_permissions;
    uid_t uid;
    gid_t gid;
    mode_t umask;
    char error[256];            /* why an option was refused */
};

enum {
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
};

static const struct fuse_opt mount_opt_spec[] = {
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
    FUSE_OPT_END,
};

/* Parse the value of "name=VALUE" in `arg` as an unsigned number in
 * `base` (only digits: no sign, no spaces, nothing after) of at most
 * `max`.  Returns false, with mo->error set, when it is not one. */
static bool option_number(struct mount_opts *mo, const char *arg, int base,
                          unsigned long max, unsigned long *out)
{
    const char *v = strchr(arg, '=') + 1;
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, base);
    bool digits = *v >= '0' && *v <= (base == 8 ? '7' : '9');
    if (!digits || *end || errno || n > max) {
        if (base == 8)
            snprintf(mo->error, sizeof mo->error, "bad option '%s': "
                     "expected an octal mask from 0 to %lo", arg, max);
        else
            snprintf(mo->error, sizeof mo->error, "bad option '%s': "
                     "expected a number from 0 to %lu", arg, max);
        return false;
    }
    *out = n;
    return true;
}

/* fuse_opt_parse callback: note imgfs's options; keep (1) those FUSE
 * needs, drop (0) imgfs's own, refuse (-1) bad values. */
static int mount_opt_proc(void *data, const char *arg, int key,
                          struct fuse_args *outargs)
{
    struct mount_opts *mo = data;
    unsigned long n;
    (void)outargs;
    switch (key) {
    case KEY_RO:
        mo->read_only = true;
        return 1;
    case KEY_PAGE_CACHE:
        mo->page_cache = true;
        return 0;
    case KEY_ALLOW_OTHER:
        mo->allow_other = true;
        return 1;
    case KEY_ALLOW_ROOT:
        mo->allow_root = true;
        return 1;
    case KEY_DEFAULT_PERMISSIONS:
        mo->default_permissions = true;
        return 1;
    case KEY_UID:
    case KEY_GID:
        /* (uid_t)-1 means "no change" to chown(2): not an owner. */
        if (!option_number(mo, arg, 10, 0xfffffffeUL, &n))
            return -1;
        if (key == KEY_UID)
            mo->uid = (uid_t)n;
        else
            mo->gid = (gid_t)n;
        return 0;
    case KEY_UMASK:
        if (!option_number(mo, arg, 8, 0777, &n))
            return -1;
        mo->umask = (mode_t)n;
        return 0;
    case KEY_STATE:
        free(mo->state);
        mo->state = strdup(arg + strlen("state="));
        if (!mo->state || mo->state[0] != '/') {
            snprintf(mo->error, sizeof mo->error, "bad option '%s': "
                     "expected an absolute directory path", arg);
            return -1;
        }
        return 0;
    case KEY_NOSTATE:
        mo->no_state = true;
        return 0;
    case KEY_RESUME_JOBS:
        mo->resume_jobs = true;
        return 0;
    default:
        return 1;               /* FUSE's own options */
    }
}

/* Parse the joined -o string `opts` (may be NULL) into `mo` (defaults:
 * the caller's uid and gid, umask 077) and `fuse_opts`, the options left
 * for FUSE, plus default_permissions when allow_other or allow_root asks
 * for it.  Returns 0, or -1 with mo->error set. */
static int parse_mount_options(const char *opts, struct mount_opts *mo,
                               struct fuse_args *fuse_opts)
{
    memset(mo, 0, sizeof *mo);
    mo->uid = getuid();
    mo->gid = getgid();
    mo->umask = 077;
    *fuse_opts = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
    if (fuse_opt_add_arg(fuse_opts, "imgfs") != 0)
        goto nomem;
    if (opts && (fuse_opt_add_arg(fuse_opts, "-o") != 0 ||
                 fuse_opt_add_arg(fuse_opts, opts) != 0))
        goto nomem;
    /* On success fuse_opt_parse replaces *fuse_opts with what is kept. */
    if (fuse_opt_parse(fuse_opts, mo, mount_opt_spec, mount_opt_proc) != 0) {
        if (!mo->error[0])
            snprintf(mo->error, sizeof mo->error, "bad options '%s'",
                     opts ? opts : "");
        return -1;
    }
    /* Other users are let in only with the kernel checking modes. */
    if ((mo->allow_other || mo->allow_root) && !mo->default_permissions &&
        fuse_opt_add_arg(fuse_opts, "-odefault_permissions") != 0)
        goto nomem;
    return 0;
nomem:
    snprintf(mo->error, sizeof mo->error, "out of memory");
    return -1;
}

static bool is_nfs_dir_url(const char *url)
{
    const char *q = strchr(url, '?');
    size_t len = q ? (size_t)(q - url) : strlen(url);
    return len > 0 && url[len - 1] == '/';
}

static int add_export(struct nfs_export *e)
{
    struct nfs_export **v = realloc(the_fs->exports,
                                    (the_fs->nexports + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    the_fs->exports = v;
    v[the_fs->nexports++] = e;
    return 0;
}

/* Check and add one NAME=URL.  Prints and returns -1 on error. */
static int add_spec(struct loop *tmp_loop, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec) {
        fprintf(stderr, "imgfs mount: '%s': expected NAME=URL\n", spec);
        return -1;
    }
    char *name = strndup(spec, (size_t)(eq - spec));
    const char *url = eq + 1;
    int ret = -1;
    if (!name)
        goto out;
    if (strchr(name, '/') || !strcmp(name, "control") ||
        !strcmp(name, ".") || !strcmp(name, "..")) {
        fprintf(stderr, "imgfs mount: '%s': bad name (no '/', not "
                "'control')\n", name);
        goto out;
    }
    if (node_child(the_fs->root, name)) {
        fprintf(stderr, "imgfs mount: '%s': name used twice\n", name);
        goto out;
    }
    struct errmsg em = { "" };
    if (!strncmp(url, "nfs://", 6)) {
        bool dir = is_nfs_dir_url(url);
        struct nfs_export *e;
        char *file = NULL;
        int r = nfs_export_open(url, dir, &e, &file, &em);
        if (r < 0) {
            fprintf(stderr, "imgfs mount: %s: %s\n", name, em.text);
            goto out;
        }
        if (add_export(e) < 0) {
            nfs_export_close(e);
            free(file);
            goto out;
        }
        struct node *n = node_new(dir ? NODE_NFSDIR : NODE_NFSFILE,
                                  the_fs->root, name);
        if (!n) {
            free(file);
            goto out;
        }
        n->exp = e;
        n->relpath = dir ? strdup("") : file;
        n->read_only = the_fs->read_only;
        struct stat st;
        r = n->relpath ? nfs_meta_stat(e, n->relpath, &st) : -ENOMEM;
        if (r < 0) {
            fprintf(stderr, "imgfs mount: %s: %s: %s\n", name, url,
                    strerror(-r));
            goto out;
        }
        if (dir != S_ISDIR(st.st_mode)) {
            fprintf(stderr, "imgfs mount: %s: %s is %s (directories end "
                    "with '/')\n", name, url,
                    dir ? "not a directory" : "a directory");
            goto out;
        }
        ret = 0;
        goto out;
    }
    /* iSCSI LUN, local file, null:, zero:: open once to check it and learn
     * its size (fixed while mounted). */
    char *path = NULL;
    if (!strstr(url, "://") && strncmp(url, "null:", 5) &&
        strncmp(url, "zero:", 5)) {
        path = realpath(url, NULL);
        if (!path) {
            fprintf(stderr, "imgfs mount: %s: %s: %s\n", name, url,
                    strerror(errno));
            goto out;
        }
    }
    const char *open_url = path ? path : url;
    /* overwrite without create: open the existing image for writing,
     * never truncating it. */
    struct image_open_opts o = { .write = !the_fs->read_only,
                                 .overwrite = true,
                                 .format = IMAGE_FORMAT_RAW };
    struct image *img;
    int r = image_open_protocol(tmp_loop, open_url, &o, &img, &em);
    if (r < 0 && o.write && (r == -EROFS || r == -EACCES || r == -EPERM ||
                             !strncmp(url, "zero:", 5))) {
        o.write = false;
        r = image_open_protocol(tmp_loop, open_url, &o, &img, &em);
    }
    if (r < 0) {
        fprintf(stderr, "imgfs mount: %s: %s\n", name, em.text);
        free(path);
        goto out;
    }
    struct node *n = node_new(NODE_IMAGE, the_fs->root, name);
    if (!n) {
        image_close(img);
        free(path);
        goto out;
    }
    n->url = path ? path : strdup(url);
    n->fixed_size = img->size;
    n->id_ino = node_id_ino(img);
    n->read_only = the_fs->read_only || !o.write || img->read_only;
    n->lun = true;
    image_close(img);
    ret = n->url ? 0 : -1;
out:
    free(name);
    return ret;
}

static void *loop_main(void *opaque)
{
    (void)opaque;
    loop_run(the_fs->loop);
    return NULL;
}

static bool shutdown_done;

/* True when no node has image I/O pending. */
static bool io_idle(void)
{
    pthread_mutex_lock(&the_fs->tree_lock);
    size_t n = the_fs->nnodes;
    pthread_mutex_unlock(&the_fs->tree_lock);
    for (size_t i = 0; i < n; i++) {
        struct node *x = node_get(i + 1);
        if (x && (x->inflight || x->parked_head || x->reads_inflight ||
                  x->opening || (x->ra && readahead_inflight(x->ra))))
            return false;
    }
    return true;
}

/* Loop thread: close what is still open and stop the loop. */
static void shutdown_finish(void)
{
    jobs_report_stopped();
    pthread_mutex_lock(&the_fs->tree_lock);
    size_t n = the_fs->nnodes;
    pthread_mutex_unlock(&the_fs->tree_lock);
    for (size_t i = 0; i < n; i++) {
        struct node *x = node_get(i + 1);
        if (!x || !x->img)
            continue;
        readahead_free(x->ra);
        x->ra = NULL;
        int r = x->img->read_only ? 0 : image_flush_sync(x->img);
        if (r < 0 || x->werr)
            syslog(LOG_ERR, "imgfs: %s: write error at shutdown: %s",
                   x->name, strerror(r < 0 ? -r : -x->werr));
        struct image *img = x->img;
        x->img = NULL;
        image_close(img);
    }
    shutdown_done = true;
    loop_stop(the_fs->loop);
}

/* Loop thread, after the FUSE session ended: wait (without spinning the
 * loop inside a callback, which would hold back the calls queued behind
 * this one) until jobs stopped and accepted writes finished. */
static void shutdown_poll(void *opaque)
{
    (void)opaque;
    if (the_fs->active_jobs == 0 && io_idle()) {
        shutdown_finish();
        return;
    }
    if (loop_add_timer(the_fs->loop, 20, shutdown_poll, NULL) < 0)
        shutdown_finish();
}

static void shutdown_on_loop(void *opaque)
{
    (void)opaque;
    jobs_cancel_all();
    shutdown_poll(NULL);
}

static void warn_state(const char *msg)
{
    fprintf(stderr, "imgfs mount: %s (skipped)\n", msg);
}

/* Choose and create this mount's state directory; load its jobs.
 * Returns 0, or -1 with a message printed. */
static int setup_state(const struct mount_opts *mo, const char *mountpoint)
{
    if (mo->no_state)
        return 0;
    char *base = mo->state ? strdup(mo->state) : job_state_default_dir();
    char *mp = realpath(mountpoint, NULL);
    char *key = mp ? job_state_mount_key(mp) : NULL;
    char *dir = NULL;
    int r = -1;
    if (!base)
        fprintf(stderr, "imgfs mount: no state directory (HOME is not set): "
                "give -o state=DIR or -o nostate\n");
    else if (!mp)
        fprintf(stderr, "imgfs mount: %s: %s\n", mountpoint,
                strerror(errno));
    else if (!key || asprintf(&dir, "%s/%s", base, key) < 0)
        fprintf(stderr, "imgfs mount: out of memory\n");
    else {
        struct errmsg em = { "" };
        if (job_state_mkdir(dir, &em) < 0) {
            fprintf(stderr, "imgfs mount: %s\n", em.text);
        } else {
            the_fs->state_dir = dir;
            dir = NULL;
            jobs_load_state(warn_state);
            r = 0;
        }
    }
    free(base);
    free(mp);
    free(key);
    free(dir);
    return r;
}

static void fs_free(void)
{
    for (size_t i = 0; i < the_fs->nexports; i++)
        nfs_export_close(the_fs->exports[i]);
    free(the_fs->exports);
}

int cmd_mount(int argc, char **argv)
{
    bool foreground = false, debug = false;
    char *opts = NULL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            mount_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-f")) {
            foreground = true;
        } else if (!strcmp(a, "-d")) {
            debug = foreground = true;
        } else if (!strcmp(a, "-o") || !strncmp(a, "-o", 2)) {
            const char *v = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "imgfs mount: -o needs options\n");
                return 2;
            }
            char *joined;
            if (asprintf(&joined, "%s%s%s", opts ? opts : "",
                         opts ? "," : "", v) < 0)
                return 1;
            free(opts);
            opts = joined;
        } else if (!strcmp(a, "--")) {
            i++;
            break;
        } else if (a[0] == '-') {
            fprintf(stderr, "imgfs mount: unknown option '%s'\n", a);
            mount_usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (argc - i < 2) {
        mount_usage(stderr);
        free(opts);
        return 2;
    }
    const char *mountpoint = argv[i++];
    struct mount_opts mo;
    struct fuse_args args;
    if (parse_mount_options(opts, &mo, &args) < 0) {
        fprintf(stderr, "imgfs mount: %s\n", mo.error);
        fuse_opt_free_args(&args);
        free(opts);
        free(mo.state);
        return 2;
    }

    /* Keep the 1 MiB I/O buffers (one per FUSE request in flight) on the
     * heap and reuse them: left to mmap, every read reply and every write
     * faults in fresh zeroed pages and unmaps them again (10x the page
     * faults, ~15% more CPU for a sequential dd). */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    static struct imgfs fs;
    the_fs = &fs;
    pthread_mutex_init(&fs.tree_lock, NULL);
    pthread_mutex_init(&fs.jobs_lock, NULL);
    fs.uid = mo.uid;
    fs.gid = mo.gid;
    fs.umask = mo.umask;
    clock_gettime(CLOCK_REALTIME, &fs.mount_time);
    fs.read_only = mo.read_only;
    fs.page_cache = mo.page_cache;
    int status = 1;
    fs.root = node_new(NODE_ROOT, NULL, "");
    fs.control = fs.root ? node_new(NODE_CONTROL, fs.root, "control") : NULL;
    if (!fs.control) {
        fprintf(stderr, "imgfs mount: out of memory\n");
        goto out_args;
    }

    struct loop *tmp = loop_new();
    if (!tmp) {
        fprintf(stderr, "imgfs mount: %s\n", strerror(errno));
        goto out_args;
    }
    for (; i < argc; i++)
        if (add_spec(tmp, argv[i]) < 0) {
            loop_free(tmp);
            goto out_free;
        }
    loop_free(tmp);
    if (setup_state(&mo, mountpoint) < 0)
        goto out_free;
    fs.resume_jobs = mo.resume_jobs;

    if (fuse_opt_add_arg(&args, "-ofsname=imgfs,subtype=imgfs") != 0 ||
        (debug && fuse_opt_add_arg(&args, "-d") != 0)) {
        fprintf(stderr, "imgfs mount: out of memory\n");
        goto out_free;
    }
    struct fuse_session *se = fuse_session_new(&args, &imgfs_ops,
                                               sizeof imgfs_ops, NULL);
    if (!se) {
        fprintf(stderr, "imgfs mount: bad FUSE options '%s'\n",
                opts ? opts : "");
        goto out_free;
    }
    if (fuse_set_signal_handlers(se) != 0)
        goto out_destroy;
    if (fuse_session_mount(se, mountpoint) != 0) {
        fprintf(stderr, "imgfs mount: cannot mount on %s\n", mountpoint);
        goto out_signals;
    }
    fs.mountpoint = realpath(mountpoint, NULL);
    fs.se = se;
    openlog("imgfs", LOG_PID, LOG_DAEMON);
    if (!foreground && fuse_daemonize(0) != 0)
        goto out_unmount;

    fs.loop = loop_new();
    if (!fs.loop || pthread_create(&fs.loop_thread, NULL, loop_main,
                                   NULL) != 0) {
        syslog(LOG_ERR, "imgfs: cannot start the loop thread");
        goto out_unmount;
    }
    reply_pool_start(2);
    if (fs.resume_jobs)
        jobs_resume_all();
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (cfg) {
        fuse_loop_cfg_set_max_threads(cfg, 16);
        fuse_loop_cfg_set_idle_threads(cfg, 8);
    }
    int r = fuse_session_loop_mt(se, cfg);
    if (cfg)
        fuse_loop_cfg_destroy(cfg);
    status = r < 0 ? 1 : 0;

    fs.se = NULL;
    if (loop_post(fs.loop, shutdown_on_loop, NULL) < 0)
        loop_stop(fs.loop);
    pthread_join(fs.loop_thread, NULL);
    reply_pool_stop();
    if (!shutdown_done)
        status = 1;
    loop_free(fs.loop);
out_unmount:
    fuse_session_unmount(se);
out_signals:
    fuse_remove_signal_handlers(se);
out_destroy:
    fuse_session_destroy(se);
out_free:
    /* A mount that kept nothing leaves no directory behind. */
    if (fs.state_dir)
        rmdir(fs.state_dir);
    fs_free();
out_args:
    fuse_opt_free_args(&args);
    free(opts);
    free(mo.state);
    return status;
}
