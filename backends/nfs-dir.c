/* nfs-dir.c — asynchronous NFS metadata of a directory tree (nfs-dir.h).
 *
 * The directory rides on an nfs_image without a file handle: its image
 * shell carries the loop, the URL the reconnect code mounts again and the
 * last error; nfs-reconnect.c drives its poller, request timeouts,
 * reconnects and the give-up exactly as for an open image.  Each call
 * here is one path-based libnfs async call, tracked on the image's
 * pending list while libnfs holds it, sent again after the backoff when
 * the connection failed, failed with -EIO once the connection is given
 * up.  A stale file handle is not looked up again (the calls go by
 * path): it fails the call.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <nfsc/libnfs.h>

#include "nfs-dir.h"
#include "nfs-id.h"
#include "nfs-image.h"

enum dir_op { OP_STAT, OP_LIST, OP_CREATE, OP_MKDIR, OP_UNLINK, OP_RMDIR,
              OP_RENAME, OP_CHOWN, OP_UTIMES, OP_TRUNCATE, OP_STATVFS };

struct nfs_dir {
    struct image *shell;        /* loop, URL for re-mounts, last_error */
    struct nfs_image *ni;
    char *root;                 /* the directory's path in the export */
    char *url;                  /* "nfs://server/export/dir" */
    char *query;                /* "" or "?..." */
    char server_addr[64];
    bool attached;
    bool closing;
};

struct dir_call {
    struct nfs_pending pend;    /* first: the list's entry is the call */
    struct nfs_dir *d;
    enum dir_op op;
    char *path, *path2;         /* paths inside the export */
    int mode;
    int uid, gid;
    uint64_t size;
    struct timeval tv[2];
    nfs_dir_cb cb;
    void *opaque;
    int64_t resend_timer;       /* > 0 while waiting to be sent again */
    bool driven;                /* waited for by nfs_dir_stat_wait on the
                                 * loop thread: resent by it at resend_ns
                                 * (no loop timer fires meanwhile) */
    uint64_t resend_ns;
    uint64_t started_ns;        /* when the caller asked */
    struct loop_call later;     /* completion of a call never sent */
    int later_err;
    struct errmsg later_msg;
};

/* The image shell is never used as an image: no operation. */
static const struct image_ops dir_shell_ops = { .name = "nfs-dir" };

/* ---- completion ------------------------------------------------------- */

static void call_free(struct dir_call *c)
{
    free(c->path);
    free(c->path2);
    free(c);
}

/* Hand `res` to the caller and free the call. */
static void call_finish(struct dir_call *c, struct nfs_dir_result *res)
{
    if (!res->error)
        res->error = "";
    nfs_pending_remove(c->d->ni, &c->pend);
    c->cb(c->opaque, res);
    call_free(c);
}

static void call_fail(struct dir_call *c, int err, const char *text)
{
    struct nfs_dir_result res = { .err = err, .error = text };
    call_finish(c, &res);
}

static void later_cb(void *opaque)
{
    struct dir_call *c = opaque;
    call_fail(c, c->later_err, c->later_msg.text);
}

/* Fail `c` on a later loop round (it was never handed to libnfs). */
static void call_fail_later(struct dir_call *c, int err, const char *text)
{
    c->later_err = err;
    errmsg_set(&c->later_msg, "%s", text ? text : "");
    c->later = (struct loop_call){ .fn = later_cb, .opaque = c };
    loop_defer_call(c->d->shell->loop, &c->later);
}

/* The connection was given up while libnfs held the call. */
static void call_abort(struct nfs_pending *pend)
{
    struct dir_call *c = (struct dir_call *)pend;
    int err = nfs_dead_error(c->d->ni);
    call_fail(c, err, c->d->shell->last_error.text);
}

/* libnfs status of a failed call as the caller's errno: -EFAULT (RPC
 * failed) and -EINTR (timed out, cancelled) are the connection's. */
static int status_errno(int status)
{
    if (status == -EFAULT || status == -EINTR || status >= -1)
        return -EIO;
    return status;
}

/* ---- results ---------------------------------------------------------- */

static void attr_of(const struct nfs_stat_64 *s, struct nfs_dir_attr *a)
{
    *a = (struct nfs_dir_attr){
        .fsid = s->nfs_dev, .fileid = s->nfs_ino,
        .mode = (mode_t)s->nfs_mode, .nlink = s->nfs_nlink,
        .uid = (uint32_t)s->nfs_uid, .gid = (uint32_t)s->nfs_gid,
        .size = s->nfs_size, .used = s->nfs_used,
        .atime = { (time_t)s->nfs_atime, (long)s->nfs_atime_nsec },
        .mtime = { (time_t)s->nfs_mtime, (long)s->nfs_mtime_nsec },
        .ctime = { (time_t)s->nfs_ctime, (long)s->nfs_ctime_nsec },
    };
}

static void statvfs_of(const struct nfs_statvfs_64 *s, struct statvfs *sv)
{
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = s->f_bsize;
    sv->f_frsize = s->f_frsize ? s->f_frsize : s->f_bsize;
    sv->f_blocks = s->f_blocks;
    sv->f_bfree = s->f_bfree;
    sv->f_bavail = s->f_bavail;
    sv->f_files = s->f_files;
    sv->f_ffree = s->f_ffree;
    sv->f_favail = s->f_favail;
    sv->f_namemax = s->f_namemax ? s->f_namemax : 255;
}

/* Answer a listing from the directory libnfs read (then close it). */
static void finish_list(struct dir_call *c, struct nfs_context *nfs,
                        struct nfsdir *dir)
{
    struct nfs_dir_entry *v = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    struct nfsdirent *e;
    while ((e = nfs_readdir(nfs, dir)) != NULL) {
        if (!strcmp(e->name, ".") || !strcmp(e->name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            struct nfs_dir_entry *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                err = -ENOMEM;
                break;
            }
            v = nv;
        }
        /* type: NF3REG = 1, NF3DIR = 2 (libnfs-raw-nfs.h) */
        v[n++] = (struct nfs_dir_entry){
            .name = e->name, .fsid = e->dev, .fileid = e->inode,
            .mode = (mode_t)(e->mode & 07777) |
                    (e->type == 2 ? S_IFDIR : e->type == 1 ? S_IFREG : 0),
        };
    }
    struct nfs_dir_result res = { .err = err, .entries = err ? NULL : v,
                                  .n = err ? 0 : n,
                                  .error = err ? "out of memory" : "" };
    call_finish(c, &res);
    free(v);
    nfs_closedir(nfs, dir);
}

static void close_cb(int status, struct nfs_context *nfs, void *data,
                     void *private_data)
{
    (void)status, (void)nfs, (void)data, (void)private_data;
}

/* ---- sending ---------------------------------------------------------- */

static int call_send(struct dir_call *c);
static void call_resend(void *opaque);

/* `c` waits to be sent (again) after the backoff: a loop timer, or the
 * wait of nfs_dir_stat_wait for a driven call.  Returns 0 or -ENOMEM. */
static int call_wait(struct dir_call *c)
{
    struct nfs_image *ni = c->d->ni;
    if (c->driven) {
        c->resend_ns = loop_now_ns() + nfs_retry_delay_ms(ni) * 1000000ull;
        return 0;
    }
    int64_t id = loop_add_timer(c->d->shell->loop, nfs_retry_delay_ms(ni),
                                call_resend, c);
    if (id <= 0)
        return -ENOMEM;
    c->resend_timer = id;
    return 0;
}

/* Send `c` now or arrange to; 0, or -errno with last_error set. */
static int call_send_or_wait(struct dir_call *c)
{
    int r = call_send(c);
    return r > 0 ? call_wait(c) : r;
}

static void call_resend(void *opaque)
{
    struct dir_call *c = opaque;
    c->resend_timer = 0;
    int r = call_send_or_wait(c);
    if (r < 0)
        call_fail(c, r, c->d->shell->last_error.text);
}

static void call_cb(int status, struct nfs_context *nfs, void *data,
                    void *private_data)
{
    struct dir_call *c = private_data;
    struct nfs_dir *d = c->d;
    struct nfs_image *ni = d->ni;
    c->pend.in_libnfs = false;
    if (status < 0) {
        const char *text = data ? (const char *)data : nfs_get_error(nfs);
        if (d->closing) {
            call_fail(c, -ECANCELED, "closed");
            return;
        }
        enum nfs_fault f = nfs_classify_failure(ni, status, NULL, text);
        if (f != NFS_FAULT_FAIL && call_wait(c) == 0)
            return;
        if (ni->dead) {
            int err = nfs_dead_error(ni);
            call_fail(c, err, d->shell->last_error.text);
            return;
        }
        call_fail(c, status_errno(status), text);
        return;
    }
    nfs_conn_answered(ni);
    struct nfs_dir_result res = { 0 };
    struct nfs_dir_attr attr;
    struct statvfs sv;
    switch (c->op) {
    case OP_STAT:
        attr_of(data, &attr);
        res.attr = &attr;
        break;
    case OP_LIST:
        finish_list(c, nfs, data);
        return;
    case OP_CREATE:
        nfs_close_async(nfs, data, close_cb, NULL);
        break;
    case OP_STATVFS:
        statvfs_of(data, &sv);
        res.vfs = &sv;
        break;
    default:
        break;
    }
    call_finish(c, &res);
}

/* Hand `c` to libnfs.  Returns 0; 1 when there is no connection to send
 * it on yet (a new one is being made: send it later); or -errno with
 * last_error set (the callback will not run).  A call made after the
 * connection was given up starts it over (nfs_image_revive): the
 * directory stays in use; calls older than the give-up fail. */
static int call_send(struct dir_call *c)
{
    struct nfs_image *ni = c->d->ni;
    if (ni->dead && c->started_ns > ni->gave_up_ns)
        nfs_image_revive(ni);
    if (ni->dead)
        return nfs_dead_error(ni);
    struct nfs_context *nfs = ni->nfs;
    if (!nfs)
        return 1;
    const char *p = c->path;
    int r = -EINVAL;
    switch (c->op) {
    case OP_STAT:
        r = nfs_stat64_async(nfs, p, call_cb, c);
        break;
    case OP_LIST:
        r = nfs_opendir_async(nfs, p, call_cb, c);
        break;
    case OP_CREATE:
        r = nfs_create_async(nfs, p, O_CREAT | O_EXCL | O_RDWR, c->mode,
                             call_cb, c);
        break;
    case OP_MKDIR:
        r = nfs_mkdir2_async(nfs, p, c->mode, call_cb, c);
        break;
    case OP_UNLINK:
        r = nfs_unlink_async(nfs, p, call_cb, c);
        break;
    case OP_RMDIR:
        r = nfs_rmdir_async(nfs, p, call_cb, c);
        break;
    case OP_RENAME:
        r = nfs_rename_async(nfs, p, c->path2, call_cb, c);
        break;
    case OP_CHOWN:
        r = nfs_chown_async(nfs, p, c->uid, c->gid, call_cb, c);
        break;
    case OP_UTIMES:
        r = nfs_utimes_async(nfs, p, c->tv, call_cb, c);
        break;
    case OP_TRUNCATE:
        r = nfs_truncate_async(nfs, p, c->size, call_cb, c);
        break;
    case OP_STATVFS:
        r = nfs_statvfs64_async(nfs, p, call_cb, c);
        break;
    }
    if (r < 0) {
        image_set_error(c->d->shell, "%s", nfs_get_error(nfs));
        return -EIO;
    }
    c->pend.in_libnfs = true;
    c->pend.sent_ns = loop_now_ns();
    return 0;
}

/* "/root/rel", or "/" for the export itself (malloc'd), NULL: ENOMEM. */
static char *full_path(const struct nfs_dir *d, const char *rel)
{
    char *s;
    if (asprintf(&s, "%s%s", d->root, rel ? rel : "") < 0)
        return NULL;
    if (!*s) {
        free(s);
        s = strdup("/");
    }
    return s;
}

/* A call of `op` on `rel` (and `rel2`), not sent yet; the caller fills
 * in the arguments.  NULL when out of memory. */
static struct dir_call *call_new(struct nfs_dir *d, enum dir_op op,
                                 const char *rel, const char *rel2,
                                 nfs_dir_cb cb, void *opaque)
{
    struct dir_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->d = d;
    c->op = op;
    c->cb = cb;
    c->opaque = opaque;
    c->pend.abort = call_abort;
    c->started_ns = loop_now_ns();
    c->path = full_path(d, rel);
    c->path2 = rel2 ? full_path(d, rel2) : NULL;
    return c;
}

/* Send `c` or fail it on a later round. */
static void call_start(struct dir_call *c)
{
    if (!c->path || (c->op == OP_RENAME && !c->path2)) {
        call_fail_later(c, -ENOMEM, "out of memory");
        return;
    }
    if (c->d->closing) {
        call_fail_later(c, -ECANCELED, "closed");
        return;
    }
    int r = call_send_or_wait(c);
    if (r < 0) {
        call_fail_later(c, r, c->d->shell->last_error.text);
        return;
    }
    nfs_pending_add(c->d->ni, &c->pend);
}

/* A call that could not even be allocated: answer -ENOMEM later from a
 * malloc-free deferral. */
struct oom_call {
    struct loop_call lc;
    nfs_dir_cb cb;
    void *opaque;
};

static void oom_cb(void *opaque)
{
    struct oom_call *o = opaque;
    struct nfs_dir_result res = { .err = -ENOMEM, .error = "out of memory" };
    o->cb(o->opaque, &res);
    free(o);
}

static void fail_oom(struct nfs_dir *d, nfs_dir_cb cb, void *opaque)
{
    struct oom_call *o = malloc(sizeof *o);
    while (!o) {
        /* Like image_complete_later: wait for memory rather than call
         * back inline. */
        loop_run_once(d->shell->loop, 10);
        o = malloc(sizeof *o);
    }
    *o = (struct oom_call){ .lc = { .fn = oom_cb, .opaque = o }, .cb = cb,
                            .opaque = opaque };
    loop_defer_call(d->shell->loop, &o->lc);
}

#define START(d, op, rel, rel2, cb, opaque, SETUP)                        \
    do {                                                                  \
        struct dir_call *c = call_new(d, op, rel, rel2, cb, opaque);      \
        if (!c) {                                                         \
            fail_oom(d, cb, opaque);                                      \
            return;                                                       \
        }                                                                 \
        SETUP;                                                            \
        call_start(c);                                                    \
    } while (0)

void nfs_dir_stat(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                  void *opaque)
{
    START(d, OP_STAT, rel, NULL, cb, opaque, (void)0);
}

void nfs_dir_list(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                  void *opaque)
{
    START(d, OP_LIST, rel, NULL, cb, opaque, (void)0);
}

void nfs_dir_create(struct nfs_dir *d, const char *rel, mode_t mode,
                    nfs_dir_cb cb, void *opaque)
{
    START(d, OP_CREATE, rel, NULL, cb, opaque, c->mode = (int)(mode & 07777));
}

void nfs_dir_mkdir(struct nfs_dir *d, const char *rel, mode_t mode,
                   nfs_dir_cb cb, void *opaque)
{
    START(d, OP_MKDIR, rel, NULL, cb, opaque, c->mode = (int)(mode & 07777));
}

void nfs_dir_unlink(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                    void *opaque)
{
    START(d, OP_UNLINK, rel, NULL, cb, opaque, (void)0);
}

void nfs_dir_rmdir(struct nfs_dir *d, const char *rel, nfs_dir_cb cb,
                   void *opaque)
{
    START(d, OP_RMDIR, rel, NULL, cb, opaque, (void)0);
}

void nfs_dir_rename(struct nfs_dir *d, const char *from, const char *to,
                    nfs_dir_cb cb, void *opaque)
{
    START(d, OP_RENAME, from, to, cb, opaque, (void)0);
}

void nfs_dir_chown(struct nfs_dir *d, const char *rel, uid_t uid, gid_t gid,
                   nfs_dir_cb cb, void *opaque)
{
    START(d, OP_CHOWN, rel, NULL, cb, opaque,
          (c->uid = (int)uid, c->gid = (int)gid));
}

void nfs_dir_utimes(struct nfs_dir *d, const char *rel,
                    const struct timespec times[2], nfs_dir_cb cb,
                    void *opaque)
{
    START(d, OP_UTIMES, rel, NULL, cb, opaque,
          for (int i = 0; i < 2; i++) {
              c->tv[i].tv_sec = times[i].tv_sec;
              c->tv[i].tv_usec = times[i].tv_nsec / 1000;
          });
}

void nfs_dir_truncate(struct nfs_dir *d, const char *rel, uint64_t size,
                      nfs_dir_cb cb, void *opaque)
{
    START(d, OP_TRUNCATE, rel, NULL, cb, opaque, c->size = size);
}

void nfs_dir_statvfs(struct nfs_dir *d, nfs_dir_cb cb, void *opaque)
{
    START(d, OP_STATVFS, "", NULL, cb, opaque, (void)0);
}

/* ---- waiting for a stat ---------------------------------------------- */

struct stat_wait {
    struct nfs_dir *d;
    struct loop *loop;
    const char *rel;
    struct nfs_dir_attr *attr;
    int err;
    bool done;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool threaded;
};

static void wait_stat_cb(void *opaque, const struct nfs_dir_result *res)
{
    struct stat_wait *w = opaque;
    if (res->err == 0)
        *w->attr = *res->attr;
    if (!w->threaded) {
        w->err = res->err;
        w->done = true;
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->err = res->err;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void wait_stat_on_loop(void *opaque)
{
    struct stat_wait *w = opaque;
    nfs_dir_attach(w->d, w->loop);
    nfs_dir_stat(w->d, w->rel, wait_stat_cb, w);
}

/* On the loop thread: send the stat and drive only `d`'s connection
 * until it is answered (nfs_image_drive), resending it when a fault
 * calls for that; nothing else of the loop runs meanwhile. */
static int stat_wait_driven(struct stat_wait *w)
{
    struct nfs_dir *d = w->d;
    struct dir_call *c = call_new(d, OP_STAT, w->rel, NULL, wait_stat_cb, w);
    if (!c || !c->path) {
        if (c)
            call_free(c);
        return -ENOMEM;
    }
    c->driven = true;
    int r = d->closing ? -ECANCELED : call_send_or_wait(c);
    if (r < 0) {
        call_free(c);
        return r;
    }
    nfs_pending_add(d->ni, &c->pend);
    while (!w->done) {
        /* `c` is alive until the callback set done. */
        uint64_t now = loop_now_ns();
        if (c->resend_ns && now >= c->resend_ns) {
            c->resend_ns = 0;
            r = call_send_or_wait(c);
            if (r < 0) {
                call_fail(c, r, d->shell->last_error.text);
                break;
            }
            continue;
        }
        unsigned ms = 100;
        if (c->resend_ns && (c->resend_ns - now) / 1000000u < ms)
            ms = (unsigned)((c->resend_ns - now) / 1000000u) + 1;
        nfs_image_drive(d->ni, ms);
    }
    return w->err;
}

int nfs_dir_stat_wait(struct nfs_dir *d, struct loop *loop, const char *rel,
                      struct nfs_dir_attr *attr)
{
    struct stat_wait w = { .d = d, .loop = loop, .rel = rel, .attr = attr };
    if (loop_on_thread(loop)) {
        nfs_dir_attach(d, loop);
        return stat_wait_driven(&w);
    }
    w.threaded = true;
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    int r = loop_post(loop, wait_stat_on_loop, &w);
    if (r == 0) {
        pthread_mutex_lock(&w.lock);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
        r = w.err;
    }
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return r;
}

/* ---- open / attach / close ------------------------------------------- */

const char *nfs_dir_url(const struct nfs_dir *d)
{
    return d->url;
}

const char *nfs_dir_query(const struct nfs_dir *d)
{
    return d->query;
}

const char *nfs_dir_server_addr(const struct nfs_dir *d)
{
    return d->server_addr;
}

bool nfs_dir_attached(const struct nfs_dir *d)
{
    return d->attached;
}

/* `url` without its query and trailing '/' into *base, the query into
 * *query.  For a file URL (`is_dir` false) *file gets "/name" and *base
 * loses it. */
static int split_url(const char *url, bool is_dir, char **base,
                     char **query, char **file)
{
    const char *q = strchr(url, '?');
    size_t len = q ? (size_t)(q - url) : strlen(url);
    size_t scheme = strlen("nfs://");
    while (len > scheme && url[len - 1] == '/')
        len--;
    *base = strndup(url, len);
    *query = strdup(q ? q : "");
    *file = NULL;
    if (!*base || !*query)
        return -ENOMEM;
    if (!is_dir) {
        char *slash = strrchr(*base, '/');
        if (!slash || (size_t)(slash - *base) < scheme ||
            !strchr(*base + scheme, '/') || !slash[1])
            return -EINVAL;
        *file = strdup(slash);
        if (!*file)
            return -ENOMEM;
        *slash = '\0';
    }
    return 0;
}

static void dir_free(struct nfs_dir *d)
{
    if (!d)
        return;
    if (d->ni) {
        if (d->ni->nfs)
            nfs_destroy_context(d->ni->nfs);
        free(d->ni->path);
        free(d->ni);
    }
    image_free_shell(d->shell);
    free(d->root);
    free(d->url);
    free(d->query);
    free(d);
}

int nfs_dir_open(const char *url, bool is_dir, struct nfs_dir **out,
                 char **file, struct nfs_dir_attr *attr, struct errmsg *err)
{
    *out = NULL;
    if (file)
        *file = NULL;
    char *base = NULL, *query = NULL, *name = NULL, *mount_url = NULL;
    struct nfs_mounted m = { 0 };
    struct nfs_dir *d = calloc(1, sizeof *d);
    int r = d ? split_url(url, is_dir, &base, &query, &name) : -ENOMEM;
    if (r == -EINVAL) {
        errmsg_set(err, "%s: NFS URL names no file", url);
        goto fail;
    }
    if (r < 0 || asprintf(&mount_url, "%s%s", base, query) < 0) {
        mount_url = NULL;
        r = -ENOMEM;
        goto fail_msg;
    }
    r = nfs_mount_dir_url(mount_url, &m, err);
    if (r < 0)
        goto fail;
    nfs_set_dircache(m.nfs, 0);     /* listings come from the server */
    d->root = m.file;
    m.file = NULL;
    d->url = base;
    d->query = query;
    base = query = NULL;
    if (nfs_server_address(m.nfs, m.server, d->server_addr,
                           sizeof d->server_addr) < 0)
        snprintf(d->server_addr, sizeof d->server_addr, "%s", m.server);

    /* What must be there: the directory, or the file in it. */
    struct nfs_stat_64 st;
    char *what = full_path(d, name);
    r = what ? nfs_stat64(m.nfs, what, &st) : -ENOMEM;
    if (r < 0) {
        if (r == -ENOMEM)
            goto fail_msg;
        errmsg_set(err, "%s: cannot look up %s on export %s: %s", url,
                   what, m.export, nfs_get_error(m.nfs));
        free(what);
        r = r < -1 ? r : -EIO;
        goto fail;
    }
    free(what);
    if (attr)
        attr_of(&st, attr);

    /* The reconnect code mounts the export of shell->name again: a URL
     * whose "file" is the directory's "." there. */
    char *shell_url = NULL;
    if (asprintf(&shell_url, "%s/.%s", d->url, d->query) < 0)
        goto fail_msg;
    d->shell = image_alloc(&dir_shell_ops, NULL, shell_url);
    free(shell_url);
    d->ni = calloc(1, sizeof *d->ni);
    if (!d->shell || !d->ni)
        goto fail_msg;
    d->ni->img = d->shell;
    d->shell->priv = d->ni;
    d->ni->nfs = m.nfs;
    m.nfs = NULL;
    if (asprintf(&d->ni->path, "%s/.", d->root) < 0) {
        d->ni->path = NULL;
        goto fail_msg;
    }
    /* Calls go by path: a stale handle is not looked up again. */
    d->ni->relookup = RELOOKUP_FAILED;
    snprintf(d->ni->relookup_error, sizeof d->ni->relookup_error,
             "stale file handle");
    nfs_mounted_release(&m);
    free(mount_url);
    if (file)
        *file = name;
    else
        free(name);
    *out = d;
    return 0;

fail_msg:
    errmsg_set(err, "%s: out of memory", url);
    r = -ENOMEM;
fail:
    nfs_mounted_release(&m);
    free(base);
    free(query);
    free(name);
    free(mount_url);
    dir_free(d);
    return r;
}

void nfs_dir_attach(struct nfs_dir *d, struct loop *loop)
{
    if (d->attached)
        return;
    d->attached = true;
    d->shell->loop = loop;
    nfs_image_attach(d->ni);
}

void nfs_dir_close(struct nfs_dir *d)
{
    if (!d)
        return;
    d->closing = true;
    if (d->attached) {
        struct nfs_image *ni = d->ni;
        nfs_image_detach(ni);
        /* Calls waiting to be sent again. */
        for (struct nfs_pending *p = ni->pending, *next; p; p = next) {
            next = p->next;
            struct dir_call *c = (struct dir_call *)p;
            if (!p->in_libnfs) {
                if (c->resend_timer > 0)
                    loop_cancel_timer(d->shell->loop, c->resend_timer);
                call_fail(c, -ECANCELED, "closed");
            }
        }
        /* Destroying the context calls back what libnfs holds
         * (cancelled): call_cb fails them. */
        if (ni->nfs)
            nfs_destroy_context(ni->nfs);
        ni->nfs = NULL;
        for (struct nfs_pending *p = ni->pending, *next; p; p = next) {
            next = p->next;
            call_fail((struct dir_call *)p, -ECANCELED, "closed");
        }
    }
    dir_free(d);
}
