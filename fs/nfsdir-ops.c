/* nfsdir-ops.c — entries of NFS directories: lookup, listing, create,
 * mkdir, unlink, rmdir, rename.  Metadata goes through the export's meta
 * context (nfs-meta.c) on the FUSE thread; the open that follows a create
 * goes to the loop thread like any image open. */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *child_rel(struct node *dir, const char *name)
{
    char *rel = NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (asprintf(&rel, "%s/%s", dir->relpath, name) < 0)
        rel = NULL;
    pthread_mutex_unlock(&fs_global->tree_lock);
    return rel;
}

static bool bad_name(const char *name)
{
    return !*name || strchr(name, '/') || strlen(name) > 255;
}

/* Look `name` up on the server and fill `e`.  Returns 0 or -errno. */
static int lookup_entry(struct node *dir, const char *name,
                        struct fuse_entry_param *e)
{
    char *rel = child_rel(dir, name);
    if (!rel)
        return -ENOMEM;
    struct stat st;
    int r = nfs_meta_stat(dir->exp, rel, &st);
    free(rel);
    if (r < 0)
        return r;
    struct node *n = node_nfs_child(dir, name, S_ISDIR(st.st_mode)
                                    ? NODE_NFSDIR : NODE_NFSFILE);
    if (!n)
        return -ENOMEM;
    memset(e, 0, sizeof *e);
    r = node_attr(n, &e->attr);
    if (r < 0)
        return r;
    e->ino = n->ino;
    e->attr_timeout = ATTR_TIMEOUT;
    e->entry_timeout = ATTR_TIMEOUT;
    return 0;
}

void nfsdir_op_lookup(fuse_req_t req, struct node *dir, const char *name)
{
    struct fuse_entry_param e;
    int r = lookup_entry(dir, name, &e);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_entry(req, &e);
}

int nfsdir_list(struct node *dir, struct dirlist *l)
{
    char *rel;
    pthread_mutex_lock(&fs_global->tree_lock);
    rel = strdup(dir->relpath);
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (!rel)
        return -ENOMEM;
    struct nfs_meta_dirent *v;
    size_t n;
    int r = nfs_meta_list(dir->exp, rel, &v, &n);
    free(rel);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && r == 0; i++)
        r = dirlist_add(l, v[i].name, v[i].mode, v[i].ino);
    nfs_meta_list_free(v, n);
    return r;
}

/* ---- create / mkdir ---------------------------------------------------- */

/* Give the entry `rel` that the meta context has just created in `dir` to
 * the process behind `req`, as a local file system would: its uid, and
 * its gid unless `dir` is set-group-ID (then the entry keeps the
 * directory's group).  The meta context creates with the mount's own NFS
 * identity (AUTH_SYS with the mount process's uid and gid); a chown as
 * root makes later permission checks (the kernel's, the server's and
 * job_check_access) match the creator.  If the entry cannot be given
 * away, it is removed again.  Returns 0 or -errno. */
static int give_to_creator(fuse_req_t req, struct node *dir, const char *rel,
                           bool is_dir)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct stat dst;
    int r = node_attr(dir, &dst);
    gid_t gid = ctx->gid;
    if (r == 0 && (dst.st_mode & S_ISGID))
        gid = dst.st_gid;
    if (r == 0 && (ctx->uid != getuid() || gid != getgid()))
        r = nfs_meta_chown(dir->exp, rel, ctx->uid, gid);
    if (r < 0) {
        if (is_dir)
            nfs_meta_rmdir(dir->exp, rel);
        else
            nfs_meta_unlink(dir->exp, rel);
    }
    return r;
}

struct create_ctx {
    fuse_req_t req;
    struct node *node;
    struct fuse_file_info fi;
    struct fuse_entry_param e;
    bool write;
};

static void created_open(void *opaque, int err)
{
    struct create_ctx *c = opaque;
    handle_reply_opened(c->req, c->node, c->write, err, &c->fi, &c->e);
    free(c);
}

static void create_open_on_loop(void *opaque)
{
    struct create_ctx *c = opaque;
    bool trunc = (c->fi.flags & O_TRUNC) != 0;
    node_open(c->node, c->write, trunc, created_open, c);
}

void nfsdir_op_create(fuse_req_t req, struct node *dir, const char *name,
                      mode_t mode, struct fuse_file_info *fi)
{
    if (bad_name(name)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (dir->read_only || fs_global->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    char *rel = child_rel(dir, name);
    if (!rel) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int r = nfs_meta_create(dir->exp, rel, mode ? mode : 0644);
    if (r == 0)
        r = give_to_creator(req, dir, rel, false);
    free(rel);
    if (r == -EEXIST && (fi->flags & O_EXCL)) {
        fuse_reply_err(req, EEXIST);
        return;
    }
    if (r < 0 && r != -EEXIST) {
        fuse_reply_err(req, -r);
        return;
    }
    struct create_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    r = lookup_entry(dir, name, &c->e);
    if (r == 0 && !S_ISREG(c->e.attr.st_mode))
        r = -EISDIR;
    if (r < 0) {
        free(c);
        fuse_reply_err(req, -r);
        return;
    }
    c->node = node_get(c->e.ino);
    if (node_busy_for_write(c->node)) {
        free(c);
        fuse_reply_err(req, EBUSY);
        return;
    }
    c->req = req;
    c->fi = *fi;
    c->write = (fi->flags & O_ACCMODE) != O_RDONLY;
    if (fs_post(create_open_on_loop, c) < 0) {
        free(c);
        fuse_reply_err(req, ENOMEM);
    }
}

void nfsdir_op_mkdir(fuse_req_t req, struct node *dir, const char *name,
                     mode_t mode)
{
    if (bad_name(name)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (dir->read_only || fs_global->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    char *rel = child_rel(dir, name);
    int r = rel ? nfs_meta_mkdir(dir->exp, rel, mode) : -ENOMEM;
    if (r == 0)
        r = give_to_creator(req, dir, rel, true);
    free(rel);
    struct fuse_entry_param e;
    if (r == 0)
        r = lookup_entry(dir, name, &e);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_entry(req, &e);
}

/* ---- unlink / rmdir / rename ------------------------------------------ */

void nfsdir_op_unlink(fuse_req_t req, struct node *dir, const char *name,
                      bool is_dir)
{
    if (dir->read_only || fs_global->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    struct node *n = node_child(dir, name);
    if (n && (atomic_load(&n->job_writers) || atomic_load(&n->job_readers))) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    char *rel = child_rel(dir, name);
    int r = !rel ? -ENOMEM : is_dir ? nfs_meta_rmdir(dir->exp, rel)
                                    : nfs_meta_unlink(dir->exp, rel);
    free(rel);
    if (r == 0 && n) {
        pthread_mutex_lock(&fs_global->tree_lock);
        n->unlinked = true;
        pthread_mutex_unlock(&fs_global->tree_lock);
    }
    fuse_reply_err(req, -r);
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
    struct node *n = node_child(dir, name);
    struct node *old = node_child(newdir, newname);
    for (struct node *x = n; x; x = x == n ? old : NULL)
        if (atomic_load(&x->job_writers) || atomic_load(&x->job_readers)) {
            fuse_reply_err(req, EBUSY);
            return;
        }
    char *from = child_rel(dir, name), *to = child_rel(newdir, newname);
    int r = from && to ? nfs_meta_rename(dir->exp, from, to) : -ENOMEM;
    free(from);
    free(to);
    if (r == 0) {
        pthread_mutex_lock(&fs_global->tree_lock);
        if (old && old != n)
            old->unlinked = true;
        if (n)
            r = move_locked(n, newdir, newname);
        pthread_mutex_unlock(&fs_global->tree_lock);
    }
    fuse_reply_err(req, -r);
}
