/* mount-cmd.c — `imgfs mount`: argument parsing, checking every image
 * before mounting (errors are printed and exit non-zero while still in the
 * foreground), FUSE session setup, daemonizing, the loop thread, and the
 * clean shutdown after unmount (running jobs cancelled with their
 * watermark logged, images flushed and closed). */
#include "mount-cmd.h"

#include "fs.h"
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
        "  -o OPTIONS    FUSE mount options (allow_other, ro, ...) and:\n"
        "     page_cache   let the kernel cache image files (faster for\n"
        "                  tools reading < 128 KiB at a time, slower for\n"
        "                  large sequential reads and writes)\n"
        "Unmount with: fusermount3 -u MOUNTPOINT\n");
}

/* Whether the comma-separated *opts contain option `name`; with `take`,
 * also remove it (*opts is freed and set to NULL when nothing is left).
 * Out of memory: false, *opts unchanged. */
static bool find_option(char **opts, const char *name, bool take)
{
    if (!*opts)
        return false;
    char *out = malloc(strlen(*opts) + 1), *copy = strdup(*opts);
    char *save = NULL;
    bool found = false;
    if (!out || !copy) {
        free(out);
        free(copy);
        return false;
    }
    out[0] = '\0';
    for (char *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, name)) {
            found = true;
            if (take)
                continue;
        }
        if (out[0])
            strcat(out, ",");
        strcat(out, t);
    }
    free(copy);
    if (!take) {
        free(out);
        return found;
    }
    free(*opts);
    *opts = out[0] ? out : NULL;
    if (!*opts)
        free(out);
    return found;
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
    fs.uid = getuid();
    clock_gettime(CLOCK_REALTIME, &fs.mount_time);
    fs.gid = getgid();
    fs.read_only = find_option(&opts, "ro", false);
    fs.page_cache = find_option(&opts, "page_cache", true);
    fs.root = node_new(NODE_ROOT, NULL, "");
    fs.control = fs.root ? node_new(NODE_CONTROL, fs.root, "control") : NULL;
    if (!fs.control) {
        fprintf(stderr, "imgfs mount: out of memory\n");
        return 1;
    }

    struct loop *tmp = loop_new();
    if (!tmp) {
        fprintf(stderr, "imgfs mount: %s\n", strerror(errno));
        return 1;
    }
    int status = 1;
    for (; i < argc; i++)
        if (add_spec(tmp, argv[i]) < 0) {
            loop_free(tmp);
            fs_free();
            free(opts);
            return 1;
        }
    loop_free(tmp);

    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    fuse_opt_add_arg(&args, "imgfs");
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, "fsname=imgfs,subtype=imgfs");
    if (opts) {
        fuse_opt_add_arg(&args, "-o");
        fuse_opt_add_arg(&args, opts);
    }
    if (debug)
        fuse_opt_add_arg(&args, "-d");
    struct fuse_session *se = fuse_session_new(&args, &imgfs_ops,
                                               sizeof imgfs_ops, NULL);
    fuse_opt_free_args(&args);
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
    fs_free();
    free(opts);
    return status;
}
