/* mount.c — fs_mount_new, fs_mount_attach, fs_mount_close (mount.h): the
 * one mount's tree, state directory and FUSE session. */
#include "mount-priv.h"

#include "job-state.h"
#include "mem-budget.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const struct fuse_lowlevel_ops imgfs_ops;

static struct fs_mount the_mount;
static bool the_mount_used;

struct fs_mount *fs_mount_new(const struct fs_mount_options *o,
                              struct errmsg *em)
{
    if (the_mount_used) {
        errmsg_set(em, "one mount per process");
        return NULL;
    }
    /* Keep the 1 MiB I/O buffers (one per FUSE request in flight) on the
     * heap and reuse them: left to mmap, every read reply and every write
     * faults in fresh zeroed pages and unmaps them again (10x the page
     * faults, ~15% more CPU for a sequential dd). */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    struct fs_mount *m = &the_mount;
    the_mount_used = true;
    m->opts = *o;
    m->opts.state = NULL;
    struct imgfs *fs = &m->fs;
    fs_global = fs;
    pthread_mutex_init(&fs->tree_lock, NULL);
    pthread_mutex_init(&fs->jobs_lock, NULL);
    fs->uid = o->uid;
    fs->gid = o->gid;
    fs->umask = o->umask;
    fs->rate = o->rate;
    mem_budget_configure(o->memory, o->max_jobs);
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    fs->read_only = o->read_only;
    fs->page_cache = o->page_cache;
    fs->root = node_new(NODE_ROOT, NULL, "");
    fs->control = fs->root ? node_new(NODE_CONTROL, fs->root, "control")
                           : NULL;
    if (!fs->control || (o->state && !(m->opts.state = strdup(o->state)))) {
        errmsg_set(em, "out of memory");
        fs_mount_close(m);
        return NULL;
    }
    return m;
}

/* The warn callback for jobs_load_state (it takes no NULL). */
static void (*state_warn)(const char *msg);

static void warn_state(const char *msg)
{
    if (state_warn)
        state_warn(msg);
}

/* Choose and create this mount's state directory; load its jobs.
 * Returns 0, or -1 with `em` set. */
static int setup_state(struct fs_mount *m, const char *mountpoint,
                       struct errmsg *em)
{
    const struct fs_mount_options *mo = &m->opts;
    if (mo->no_state)
        return 0;
    char *base = mo->state ? strdup(mo->state) : job_state_default_dir();
    char *mp = realpath(mountpoint, NULL);
    char *key = mp ? job_state_mount_key(mp) : NULL;
    char *dir = NULL;
    int r = -1;
    if (!base)
        errmsg_set(em, "no state directory (HOME is not set): "
                   "give -o state=DIR or -o nostate");
    else if (!mp)
        errmsg_set(em, "%s: %s", mountpoint, strerror(errno));
    else if (!key || asprintf(&dir, "%s/%s", base, key) < 0)
        errmsg_set(em, "out of memory");
    else if (job_state_mkdir(dir, em) == 0) {
        m->fs.state_dir = dir;
        dir = NULL;
        state_warn = mo->warn;
        jobs_load_state(warn_state);
        r = 0;
    }
    free(base);
    free(mp);
    free(key);
    free(dir);
    return r;
}

int fs_mount_attach(struct fs_mount *m, struct fuse_args *args,
                    const char *mountpoint, struct errmsg *em)
{
    if (setup_state(m, mountpoint, em) < 0)
        return -1;
    m->fs.resume_jobs = m->opts.resume_jobs;

    if (fuse_opt_add_arg(args, "-ofsname=imgfs,subtype=imgfs") != 0) {
        errmsg_set(em, "out of memory");
        return -1;
    }
    m->se = fuse_session_new(args, &imgfs_ops, sizeof imgfs_ops, NULL);
    if (!m->se) {
        errmsg_set(em, "bad FUSE options");
        return -1;
    }
    if (fuse_set_signal_handlers(m->se) != 0) {
        errmsg_set(em, "cannot set signal handlers");
        return -1;
    }
    m->signals = true;
    if (fuse_session_mount(m->se, mountpoint) != 0) {
        errmsg_set(em, "cannot mount on %s", mountpoint);
        return -1;
    }
    m->mounted = true;
    m->fs.mountpoint = realpath(mountpoint, NULL);
    m->fs.se = m->se;
    return 0;
}

void fs_mount_close(struct fs_mount *m)
{
    if (!m)
        return;
    if (m->mounted)
        fuse_session_unmount(m->se);
    if (m->signals)
        fuse_remove_signal_handlers(m->se);
    if (m->se)
        fuse_session_destroy(m->se);
    m->mounted = m->signals = false;
    m->se = NULL;
    /* A mount that kept nothing leaves no directory behind. */
    if (m->fs.state_dir)
        rmdir(m->fs.state_dir);
    for (size_t i = 0; i < m->fs.nexports; i++)
        nfs_export_close(m->fs.exports[i]);
    free(m->fs.exports);
    m->fs.exports = NULL;
    m->fs.nexports = 0;
    free((char *)m->opts.state);
    m->opts.state = NULL;
}
