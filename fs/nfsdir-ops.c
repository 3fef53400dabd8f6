/* nfsdir-ops.c — NFS exports and the requests on NFS directories:
 * lookup, listing, create, mkdir, unlink, rmdir, rename, statfs.
 *
 * Every request is posted to the loop thread (nfs_call) and runs as
 * asynchronous calls of the export's nfs_dir (backends/nfs-dir.h), which
 * ride through a lost connection with the nfs backend's timeouts and
 * reconnects; the reply comes from the last completion.  A request the
 * kernel interrupts (the caller got a signal) is answered EINTR at once
 * by the interrupt handler; its completion then only frees its state. */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "backends/nfs-dir.h"
#include "backends/nfs-id.h"

/* ---- exports ----------------------------------------------------------- */

uint64_t nfs_export_ino(const struct nfs_export *e, uint64_t fsid,
                        uint64_t fileid)
{
    return NFS_INO_FLAG |
           ((fileid ^ nfs_fs_key(e->server_addr, fsid)) & ~NFS_INO_FLAG);
}

void nfs_export_attr(const struct nfs_export *e, const struct nfs_dir_attr *a,
                     struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = (ino_t)nfs_export_ino(e, a->fsid, a->fileid);
    st->st_mode = a->mode;
    st->st_nlink = (nlink_t)a->nlink;
    st->st_uid = (uid_t)a->uid;
    st->st_gid = (gid_t)a->gid;
    st->st_size = (off_t)a->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((a->used + 511) / 512);
    st->st_atim = a->atime;
    st->st_mtim = a->mtime;
    st->st_ctim = a->ctime;
}

int nfs_export_open(const char *url, bool is_dir, struct nfs_export **out,
                    char **file, struct stat *st, struct errmsg *err)
{
    *out = NULL;
    struct nfs_export *e = calloc(1, sizeof *e);
    if (!e) {
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    struct nfs_dir_attr a;
    int r = nfs_dir_open(url, is_dir, &e->dir, file, &a, err);
    if (r < 0) {
        free(e);
        return r;
    }
    e->url_prefix = strdup(nfs_dir_url(e->dir));
    e->query = strdup(nfs_dir_query(e->dir));
    snprintf(e->server_addr, sizeof e->server_addr, "%s",
             nfs_dir_server_addr(e->dir));
    if (!e->url_prefix || !e->query) {
        errmsg_set(err, "%s: out of memory", url);
        nfs_export_close(e);
        if (file) {
            free(*file);
            *file = NULL;
        }
        return -ENOMEM;
    }
    nfs_export_attr(e, &a, st);
    *out = e;
    return 0;
}

void nfs_export_close(struct nfs_export *e)
{
    if (!e)
        return;
    nfs_dir_close(e->dir);
    free(e->url_prefix);
    free(e->query);
    free(e);
}

void nfs_exports_close(void)
{
    for (size_t i = 0; i < fs_global->nexports; i++)
        nfs_export_close(fs_global->exports[i]);
    free(fs_global->exports);
    fs_global->exports = NULL;
    fs_global->nexports = 0;
}

struct nfs_dir *nfs_export_dir(struct nfs_export *e)
{
    nfs_dir_attach(e->dir, fs_global->loop);
    return e->dir;
}

int nfs_export_stat_wait(struct nfs_export *e, const char *rel,
                         struct stat *st)
{
    struct nfs_dir_attr a;
    int r = nfs_dir_stat_wait(e->dir, fs_global->loop, rel, &a);
    if (r == 0)
        nfs_export_attr(e, &a, st);
    return r;
}

/* ---- requests answered from the loop ---------------------------------- */

static void on_interrupt(fuse_req_t req, void *data)
{
    struct nfs_call *c = data;
    /* Nothing of `c` is touched after the exchange: the loop side may
     * free it as soon as it sees the flag. */
    if (!atomic_exchange(&c->replied, true))
        fuse_reply_err(req, EINTR);
}

void nfs_call_end(struct nfs_call *c)
{
    for (size_t i = 0; i < 2; i++)
        if (c->kept[i])
            node_put(c->kept[i]);
    free(c);
}

bool nfs_call_claim(struct nfs_call *c)
{
    if (atomic_exchange(&c->replied, true))
        return false;
    /* Waits for an interrupt handler running now (it finds the flag
     * taken) and keeps later ones from being called. */
    fuse_req_interrupt_func(c->req, NULL, NULL);
    return true;
}

bool nfs_call_live(struct nfs_call *c)
{
    return !atomic_load(&c->replied);
}

void nfs_call_reply_err(struct nfs_call *c, int err)
{
    if (nfs_call_claim(c))
        fuse_reply_err(c->req, err < 0 ? -err : err);
    nfs_call_end(c);
}

void nfs_call_start(struct nfs_call *c, fuse_req_t req, loop_fn run,
                    struct node *a, struct node *b)
{
    c->req = req;
    atomic_init(&c->replied, false);
    /* The request's own hold (ops.c) ends when its handler returns. */
    c->kept[0] = a ? node_hold(a->ino) : NULL;
    c->kept[1] = b && b != a ? node_hold(b->ino) : NULL;
    /* Answers at once if the request was interrupted already. */
    fuse_req_interrupt_func(req, on_interrupt, c);
    if (atomic_load(&c->replied)) {
        nfs_call_end(c);
        return;
    }
    if (loop_post(fs_global->loop, run, c) < 0)
        nfs_call_reply_err(c, -ENOMEM);
}

/* Allocate a zeroed call state of `size` bytes, or answer ENOMEM. */
static void *call_alloc(fuse_req_t req, size_t size)
{
    void *p = calloc(1, size);
    if (!p)
        fuse_reply_err(req, ENOMEM);
    return p;
}

/* ---- helpers ----------------------------------------------------------- */

static char *child_rel(struct node *dir, const char *name)
{
    char *rel = NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (asprintf(&rel, "%s/%s", dir->relpath, name) < 0)
        rel = NULL;
    pthread_mutex_unlock(&fs_global->tree_lock);
    return rel;
}

static char *node_rel(struct node *n)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    char *rel = strdup(n->relpath);
    pthread_mutex_unlock(&fs_global->tree_lock);
    return rel;
}

static bool bad_name(const char *name)
{
    return !*name || strchr(name, '/') || strlen(name) > 255;
}

/* The entry of the child `name` of `dir` whose attributes are `a`:
 * finds or makes its node (one kernel lookup counted: the caller has
 * claimed the reply and sends the entry). */
static int make_entry(struct node *dir, const char *name,
                      const struct nfs_dir_attr *a,
                      struct fuse_entry_param *e)
{
    struct node *n = node_nfs_child(dir, name, S_ISDIR(a->mode)
                                    ? NODE_NFSDIR : NODE_NFSFILE);
    if (!n)
        return -ENOMEM;
    memset(e, 0, sizeof *e);
    nfs_node_stat(n, a, &e->attr);
    e->ino = n->ino;
    e->attr_timeout = ATTR_TIMEOUT;
    e->entry_timeout = ATTR_TIMEOUT;
    return 0;
}

/* ---- lookup ------------------------------------------------------------ */

struct lookup_call {
    struct nfs_call c;
    struct node *dir;
    struct node *fixed;         /* a top-level entry: this node */
    char name[];
};

static void lookup_done(void *opaque, const struct nfs_dir_result *res)
{
    struct lookup_call *l = opaque;
    if (!nfs_call_claim(&l->c)) {
        nfs_call_end(&l->c);
        return;
    }
    struct fuse_entry_param e;
    int r = res->err;
    if (r == 0 && l->fixed) {
        memset(&e, 0, sizeof e);
        nfs_node_stat(l->fixed, res->attr, &e.attr);
        e.ino = l->fixed->ino;
        e.attr_timeout = e.entry_timeout = ATTR_TIMEOUT;
    } else if (r == 0) {
        r = make_entry(l->dir, l->name, res->attr, &e);
    }
    if (r < 0)
        fuse_reply_err(l->c.req, -r);
    else
        fuse_reply_entry(l->c.req, &e);
    nfs_call_end(&l->c);
}

static void lookup_on_loop(void *opaque)
{
    struct lookup_call *l = opaque;
    struct node *n = l->fixed ? l->fixed : l->dir;
    char *rel = !nfs_call_live(&l->c) ? NULL
              : l->fixed ? node_rel(n) : child_rel(n, l->name);
    if (!rel) {
        nfs_call_reply_err(&l->c, -ENOMEM);
        return;
    }
    nfs_dir_stat(nfs_export_dir(n->exp), rel, lookup_done, l);
    free(rel);
}

void nfsdir_op_lookup_fixed(fuse_req_t req, struct node *n)
{
    struct lookup_call *l = call_alloc(req, sizeof *l + 1);
    if (!l)
        return;
    l->fixed = n;
    nfs_call_start(&l->c, req, lookup_on_loop, n, NULL);
}

void nfsdir_op_lookup(fuse_req_t req, struct node *dir, const char *name)
{
    struct lookup_call *l = call_alloc(req, sizeof *l + strlen(name) + 1);
    if (!l)
        return;
    l->dir = dir;
    strcpy(l->name, name);
    nfs_call_start(&l->c, req, lookup_on_loop, dir, NULL);
}

/* ---- opendir: the listing ------------------------------------------- */

struct list_call {
    struct nfs_call c;
    struct node *dir;
    struct dirlist *l;
    struct fuse_file_info fi;
};

static void list_done(void *opaque, const struct nfs_dir_result *res)
{
    struct list_call *lc = opaque;
    int r = res->err;
    if (!nfs_call_claim(&lc->c)) {
        dirlist_free(lc->l);
        nfs_call_end(&lc->c);
        return;
    }
    for (size_t i = 0; i < res->n && r == 0; i++) {
        const struct nfs_dir_entry *d = &res->entries[i];
        r = dirlist_add(lc->l, d->name, d->mode,
                        nfs_export_ino(lc->dir->exp, d->fsid, d->fileid));
    }
    if (r < 0) {
        dirlist_free(lc->l);
        fuse_reply_err(lc->c.req, -r);
    } else {
        lc->fi.fh = (uint64_t)(uintptr_t)lc->l;
        if (fuse_reply_open(lc->c.req, &lc->fi) != 0)
            dirlist_free(lc->l);
    }
    nfs_call_end(&lc->c);
}

static void list_on_loop(void *opaque)
{
    struct list_call *lc = opaque;
    char *rel = nfs_call_live(&lc->c) ? node_rel(lc->dir) : NULL;
    if (!rel) {
        dirlist_free(lc->l);
        nfs_call_reply_err(&lc->c, -ENOMEM);
        return;
    }
    nfs_dir_list(nfs_export_dir(lc->dir->exp), rel, list_done, lc);
    free(rel);
}

void nfsdir_op_opendir(fuse_req_t req, struct node *dir, struct dirlist *l,
                       struct fuse_file_info *fi)
{
    struct list_call *lc = call_alloc(req, sizeof *lc);
    if (!lc) {
        dirlist_free(l);
        return;
    }
    lc->dir = dir;
    lc->l = l;
    lc->fi = *fi;
    nfs_call_start(&lc->c, req, list_on_loop, dir, NULL);
}

/* ---- create / mkdir ---------------------------------------------------- */

/* A create or mkdir: make the entry, give it to the creator, look it up,
 * then answer (create: after opening it, like any image open). */
struct make_call {
    struct nfs_call c;
    struct node *dir;
    bool is_dir;
    mode_t mode;
    uid_t uid;                  /* the creating process */
    gid_t gid;
    gid_t give_gid;             /* gid the entry gets */
    struct fuse_file_info fi;   /* create only */
    bool write;
    bool existed;               /* create found the file there */
    int err;                    /* why the entry is being removed again */
    struct fuse_entry_param e;
    struct node *node;
    char *rel;
    char name[];
};

static void make_looked_up(void *opaque, const struct nfs_dir_result *res);

/* Look the new entry up to answer with it. */
static void make_lookup(struct make_call *m)
{
    nfs_dir_stat(nfs_export_dir(m->dir->exp), m->rel, make_looked_up, m);
}

static void make_end(struct make_call *m)
{
    free(m->rel);
    nfs_call_end(&m->c);
}

static void make_fail(struct make_call *m, int err)
{
    free(m->rel);
    nfs_call_reply_err(&m->c, err);
}

/* The entry could not be given away and is removed again: answer with
 * why it could not. */
static void make_removed(void *opaque, const struct nfs_dir_result *res)
{
    (void)res;
    struct make_call *m = opaque;
    make_fail(m, m->err);
}

static void make_chowned(void *opaque, const struct nfs_dir_result *res)
{
    struct make_call *m = opaque;
    if (res->err) {
        struct nfs_dir *d = nfs_export_dir(m->dir->exp);
        m->err = res->err;
        if (m->is_dir)
            nfs_dir_rmdir(d, m->rel, make_removed, m);
        else
            nfs_dir_unlink(d, m->rel, make_removed, m);
        return;
    }
    make_lookup(m);
}

/* The directory's attributes: a set-group-ID directory gives its group
 * to new entries, as a local file system would. */
static void make_dir_statted(void *opaque, const struct nfs_dir_result *res)
{
    struct make_call *m = opaque;
    if (res->err) {
        m->err = res->err;
        make_chowned(m, res);
        return;
    }
    m->give_gid = (res->attr->mode & S_ISGID) ? (gid_t)res->attr->gid
                                              : m->gid;
    if (m->uid == getuid() && m->give_gid == getgid()) {
        make_lookup(m);
        return;
    }
    nfs_dir_chown(nfs_export_dir(m->dir->exp), m->rel, m->uid, m->give_gid,
                  make_chowned, m);
}

/* The entry was made (or, for create, found).  It is given to the
 * process that made it: the nfs_dir creates with the mount's own NFS
 * identity (AUTH_SYS with the mount process's uid and gid); a chown as
 * root makes later permission checks (the kernel's, the server's and
 * job_check_access) match the creator.  If it cannot be given away, it
 * is removed again. */
static void make_made(void *opaque, const struct nfs_dir_result *res)
{
    struct make_call *m = opaque;
    if (res->err == -EEXIST && !m->is_dir && !(m->fi.flags & O_EXCL)) {
        m->existed = true;
        make_lookup(m);
        return;
    }
    if (res->err) {
        make_fail(m, res->err);
        return;
    }
    char *drel = node_rel(m->dir);
    if (!drel) {
        struct nfs_dir_result oom = { .err = -ENOMEM };
        make_dir_statted(m, &oom);
        return;
    }
    nfs_dir_stat(nfs_export_dir(m->dir->exp), drel, make_dir_statted, m);
    free(drel);
}

static void created_open(void *opaque, int err)
{
    struct make_call *m = opaque;
    handle_reply_opened(m->c.req, m->node, m->write, err, &m->fi, &m->e);
    make_end(m);
}

static void make_looked_up(void *opaque, const struct nfs_dir_result *res)
{
    struct make_call *m = opaque;
    int r = res->err;
    if (r == 0 && !m->is_dir && !S_ISREG(res->attr->mode))
        r = -EISDIR;
    if (r < 0) {
        make_fail(m, r);
        return;
    }
    if (!nfs_call_claim(&m->c)) {
        make_end(m);
        return;
    }
    r = make_entry(m->dir, m->name, res->attr, &m->e);
    if (r == 0 && !m->is_dir) {
        m->node = node_get(m->e.ino);
        if (node_busy_for_write(m->node))
            r = -EBUSY;
    }
    if (r < 0) {
        fuse_reply_err(m->c.req, -r);
        make_end(m);
        return;
    }
    if (m->is_dir) {
        fuse_reply_entry(m->c.req, &m->e);
        make_end(m);
        return;
    }
    node_open(m->node, m->write, (m->fi.flags & O_TRUNC) != 0, created_open,
              m);
}

static void make_on_loop(void *opaque)
{
    struct make_call *m = opaque;
    if (!nfs_call_live(&m->c)) {
        make_end(m);
        return;
    }
    m->rel = child_rel(m->dir, m->name);
    if (!m->rel) {
        make_fail(m, -ENOMEM);
        return;
    }
    struct nfs_dir *d = nfs_export_dir(m->dir->exp);
    if (m->is_dir)
        nfs_dir_mkdir(d, m->rel, m->mode, make_made, m);
    else
        nfs_dir_create(d, m->rel, m->mode, make_made, m);
}

static void make_start(fuse_req_t req, struct node *dir, const char *name,
                       mode_t mode, bool is_dir, struct fuse_file_info *fi)
{
    if (bad_name(name)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (dir->read_only || fs_global->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    struct make_call *m = call_alloc(req, sizeof *m + strlen(name) + 1);
    if (!m)
        return;
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    m->dir = dir;
    m->is_dir = is_dir;
    m->mode = mode;
    m->uid = ctx->uid;
    m->gid = ctx->gid;
    if (fi) {
        m->fi = *fi;
        m->write = (fi->flags & O_ACCMODE) != O_RDONLY;
    }
    strcpy(m->name, name);
    nfs_call_start(&m->c, req, make_on_loop, dir, NULL);
}

void nfsdir_op_create(fuse_req_t req, struct node *dir, const char *name,
                      mode_t mode, struct fuse_file_info *fi)
{
    make_start(req, dir, name, mode ? mode : 0644, false, fi);
}

void nfsdir_op_mkdir(fuse_req_t req, struct node *dir, const char *name,
                     mode_t mode)
{
    make_start(req, dir, name, mode, true, NULL);
}

/* ---- unlink / rmdir / rename ------------------------------------------ */

/* An unlink, rmdir or rename. */
struct remove_call {
    struct nfs_call c;
    struct node *dir, *newdir;  /* newdir: rename only */
    bool is_dir, rename;
    char *name, *newname;
};

static void remove_end(struct remove_call *r, int err)
{
    free(r->name);
    free(r->newname);
    nfs_call_reply_err(&r->c, err);
}

/* Rewrite relpaths of `n` and, for directories, of everything below it
 * (tree_lock held). */
static int move_locked(struct node *n, struct node *newdir,
                       const char *newname)
{
    char *newrel, *newnm = strdup(newname);
    if (!newnm || asprintf(&newrel, "%s/%s", newdir->relpath, newname) < 0) {
        free(newnm);
        return -ENOMEM;
    }
    size_t oldlen = strlen(n->relpath);
    for (size_t i = 0; i < fs_global->nnodes; i++) {
        struct node *x = fs_global->nodes[i];
        if (x == n || x->exp != n->exp || !x->relpath)
            continue;
        if (!strncmp(x->relpath, n->relpath, oldlen) &&
            x->relpath[oldlen] == '/') {
            char *s;
            if (asprintf(&s, "%s%s", newrel, x->relpath + oldlen) >= 0) {
                free(x->relpath);
                x->relpath = s;
            }
        }
    }
    free(n->relpath);
    n->relpath = newrel;
    free(n->name);
    n->name = newnm;
    n->parent = newdir;
    return 0;
}

static void removed(void *opaque, const struct nfs_dir_result *res)
{
    struct remove_call *r = opaque;
    int err = res->err;
    if (err == 0) {
        /* The nodes as they are now (the loop thread frees nodes, so
         * these stay valid while this callback runs). */
        struct node *n = node_child(r->dir, r->name);
        struct node *old = r->rename ? node_child(r->newdir, r->newname)
                                     : NULL;
        pthread_mutex_lock(&fs_global->tree_lock);
        if (!r->rename && n)
            n->unlinked = true;
        if (old && old != n)
            old->unlinked = true;
        if (r->rename && n)
            err = move_locked(n, r->newdir, r->newname);
        pthread_mutex_unlock(&fs_global->tree_lock);
    }
    remove_end(r, err);
}

static void remove_on_loop(void *opaque)
{
    struct remove_call *r = opaque;
    if (!nfs_call_live(&r->c)) {
        remove_end(r, 0);
        return;
    }
    char *rel = child_rel(r->dir, r->name);
    char *to = r->rename ? child_rel(r->newdir, r->newname) : NULL;
    struct nfs_dir *d = nfs_export_dir(r->dir->exp);
    if (!rel || (r->rename && !to))
        remove_end(r, -ENOMEM);
    else if (r->rename)
        nfs_dir_rename(d, rel, to, removed, r);
    else if (r->is_dir)
        nfs_dir_rmdir(d, rel, removed, r);
    else
        nfs_dir_unlink(d, rel, removed, r);
    free(rel);
    free(to);
}

static bool busy(struct node *n)
{
    return n && (atomic_load(&n->job_writers) ||
                 atomic_load(&n->job_readers));
}

void nfsdir_op_unlink(fuse_req_t req, struct node *dir, const char *name,
                      bool is_dir)
{
    if (dir->read_only || fs_global->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (busy(node_child(dir, name))) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    struct remove_call *r = call_alloc(req, sizeof *r);
    if (!r)
        return;
    r->dir = dir;
    r->is_dir = is_dir;
    r->name = strdup(name);
    if (!r->name) {
        free(r);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nfs_call_start(&r->c, req, remove_on_loop, dir, NULL);
}

void nfsdir_op_rename(fuse_req_t req, struct node *dir, const char *name,
                      struct node *newdir, const char *newname)
{
    if (newdir->kind != NODE_NFSDIR || newdir->exp != dir->exp) {
        fuse_reply_err(req, EXDEV);
        return;
    }
    if (bad_name(newname)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (dir->read_only || fs_global->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (busy(node_child(dir, name)) || busy(node_child(newdir, newname))) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    struct remove_call *r = call_alloc(req, sizeof *r);
    if (!r)
        return;
    r->dir = dir;
    r->rename = true;
    r->name = strdup(name);
    r->newname = strdup(newname);
    r->newdir = newdir;
    if (!r->name || !r->newname) {
        free(r->name);
        free(r->newname);
        free(r);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nfs_call_start(&r->c, req, remove_on_loop, dir, newdir);
}

/* ---- statfs ------------------------------------------------------------ */

struct statfs_call {
    struct nfs_call c;
    struct nfs_export *e;
};

/* No NFS answer: the images' total size, nothing free. */
static void images_statvfs(struct statvfs *sv)
{
    uint64_t total = 0;
    pthread_mutex_lock(&fs_global->tree_lock);
    for (size_t i = 0; i < fs_global->nnodes; i++)
        if (fs_global->nodes[i]->kind == NODE_IMAGE)
            total += fs_global->nodes[i]->fixed_size;
    size_t files = fs_global->nnodes;
    pthread_mutex_unlock(&fs_global->tree_lock);
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = sv->f_frsize = 4096;
    sv->f_blocks = (total + 4095) / 4096;
    sv->f_files = files;
    sv->f_namemax = 255;
}

static void statfs_done(void *opaque, const struct nfs_dir_result *res)
{
    struct statfs_call *s = opaque;
    if (nfs_call_claim(&s->c)) {
        struct statvfs sv;
        if (res->err == 0)
            sv = *res->vfs;
        else
            images_statvfs(&sv);
        fuse_reply_statfs(s->c.req, &sv);
    }
    nfs_call_end(&s->c);
}

static void statfs_on_loop(void *opaque)
{
    struct statfs_call *s = opaque;
    if (!nfs_call_live(&s->c)) {
        nfs_call_end(&s->c);
        return;
    }
    nfs_dir_statvfs(nfs_export_dir(s->e), statfs_done, s);
}

void nfsdir_op_statfs(fuse_req_t req, struct node *n)
{
    struct nfs_export *e = n && n->exp ? n->exp
                         : fs_global->nexports ? fs_global->exports[0] : NULL;
    if (!e) {
        struct statvfs sv;
        images_statvfs(&sv);
        fuse_reply_statfs(req, &sv);
        return;
    }
    struct statfs_call *s = call_alloc(req, sizeof *s);
    if (!s)
        return;
    s->e = e;
    nfs_call_start(&s->c, req, statfs_on_loop, NULL, NULL);
}
