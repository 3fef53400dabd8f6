/* ops.c — the fuse_lowlevel_ops table: routes each request by the kind of
 * node it concerns to image-ops.c, nfsdir-ops.c or control.c; directory
 * listings; statfs; connection setup (init). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "backends/vec.h"

#define MAX_WRITE (1024u * 1024u)
/* Kernel readahead with -o page_cache (16 MiB). */
#define PAGE_CACHE_READAHEAD (16u << 20)

int dirlist_add(struct dirlist *l, const char *name, mode_t mode,
                uint64_t ino)
{
    struct dirlist_entry *v = vec_room(l->v, l->n, &l->cap, sizeof *v, 16);
    if (!v)
        return -ENOMEM;
    l->v = v;
    l->v[l->n].name = strdup(name);
    if (!l->v[l->n].name)
        return -ENOMEM;
    l->v[l->n].mode = mode;
    l->v[l->n].ino = ino;
    l->n++;
    return 0;
}

void dirlist_free(struct dirlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    free(l);
}

static bool is_image(const struct node *n)
{
    return n->kind == NODE_IMAGE || n->kind == NODE_NFSFILE;
}

static bool is_control_file(const struct node *n)
{
    return n->kind == NODE_JOBFILE || n->kind == NODE_STATUSFILE ||
           n->kind == NODE_RATEFILE || n->kind == NODE_JSONFILE;
}

/* With -o page_cache, raise the mount's readahead (bdi read_ahead_kb, 16
 * MiB) so the kernel keeps many reads in flight for a sequential reader.
 * After INIT was answered (the INIT reply would clamp it): done once, at
 * the first lookup. */
static void tune_bdi(void)
{
    if (!fs_global->page_cache || atomic_exchange(&fs_global->bdi_tuned, true))
        return;
    struct stat st;
    if (!fs_global->mountpoint || stat(fs_global->mountpoint, &st) < 0)
        return;
    char path[128];
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb",
             major(st.st_dev), minor(st.st_dev));
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%u\n", PAGE_CACHE_READAHEAD / 1024);
        fclose(f);
    }
}

/* The node of `ino` with a hold for this request (fs.h, "Node
 * lifecycle"): the caller node_put()s it once the handler returned.  On
 * NULL, ENOENT was answered. */
static struct node *get(fuse_req_t req, fuse_ino_t ino)
{
    struct node *n = node_hold(ino);
    if (!n)
        fuse_reply_err(req, ENOENT);
    return n;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_write = MAX_WRITE;
    if (fs_global->page_cache)
        conn->max_readahead = PAGE_CACHE_READAHEAD; /* kernel keeps the lower */
    conn->max_background = 128;
    conn->congestion_threshold = 96;
    unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_ATOMIC_O_TRUNC |
                    FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_DIO;
    conn->want |= want & conn->capable;
    /* Sizes come from the servers: no writeback cache (it would make the
     * kernel trust its own i_size over a LUN's fixed size). */
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
    conn->want &= ~(unsigned)(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    tune_bdi();
    struct node *dir = get(req, parent);
    if (!dir)
        return;
    switch (dir->kind) {
    case NODE_ROOT: {
        /* Children of the root are fixed: no lookup count to keep. */
        struct node *n = node_child(dir, name);
        if (!n) {
            fuse_reply_err(req, ENOENT);
            break;
        }
        if (n->kind == NODE_NFSDIR || n->kind == NODE_NFSFILE) {
            /* Asked of the server on the loop (nfsdir-ops.c). */
            nfsdir_op_lookup_fixed(req, n);
            break;
        }
        struct fuse_entry_param e = { .ino = n->ino,
                                      .attr_timeout = ATTR_TIMEOUT,
                                      .entry_timeout = ATTR_TIMEOUT };
        int r = node_attr(n, &e.attr);
        if (r < 0)
            fuse_reply_err(req, -r);
        else
            fuse_reply_entry(req, &e);
        break;
    }
    case NODE_CONTROL:
        control_op_lookup(req, name);
        break;
    case NODE_NFSDIR:
        nfsdir_op_lookup(req, dir, name);
        break;
    default:
        fuse_reply_err(req, ENOTDIR);
    }
    node_put(dir);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    node_forget(ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
                            struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        node_forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* The one extended attribute: "user.imgfs.nodes" on the mount root, the
 * number of nodes the mount keeps (node_count), in decimal — how tests see
 * that forgotten entries are freed.  Read-only; no other attributes. */
#define NODES_XATTR "user.imgfs.nodes"

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        size_t size)
{
    if (ino != FUSE_ROOT_ID || strcmp(name, NODES_XATTR)) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%zu", node_count());
    if (size == 0)
        fuse_reply_xattr(req, (size_t)len);
    else if (size < (size_t)len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, buf, (size_t)len);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        control_op_getattr(req, n);
    else
        image_op_getattr(req, n);
    node_put(n);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                       int to_set, struct fuse_file_info *fi)
{
    (void)fi;
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        control_op_setattr(req, n, attr, to_set);
    else if (is_image(n))
        image_op_setattr(req, n, attr, to_set);
    else if (to_set & FUSE_SET_ATTR_SIZE)
        fuse_reply_err(req, EISDIR);
    else
        image_op_getattr(req, n);
    node_put(n);
}

/* ---- directories ------------------------------------------------------- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct node *n = get(req, ino);
    if (!n)
        return;
    struct dirlist *l = calloc(1, sizeof *l);
    if (!l) {
        fuse_reply_err(req, ENOMEM);
        node_put(n);
        return;
    }
    fuse_ino_t parent = n->parent ? n->parent->ino : n->ino;
    int r = dirlist_add(l, ".", S_IFDIR, n->ino);
    if (r == 0)
        r = dirlist_add(l, "..", S_IFDIR, parent);
    switch (n->kind) {
    case NODE_ROOT:
        pthread_mutex_lock(&fs_global->tree_lock);
        for (size_t i = 0; i < fs_global->nnodes && r == 0; i++) {
            struct node *c = fs_global->nodes[i];
            if (c->parent == n && !c->unlinked)
                r = dirlist_add(l, c->name,
                                c->kind == NODE_IMAGE || c->kind ==
                                NODE_NFSFILE ? S_IFREG : S_IFDIR, c->ino);
        }
        pthread_mutex_unlock(&fs_global->tree_lock);
        break;
    case NODE_CONTROL:
        if (r == 0)
            r = control_list(l);
        break;
    case NODE_NFSDIR:
        if (r == 0) {
            /* Listed on the loop; answered from there (l goes along). */
            nfsdir_op_opendir(req, n, l, fi);
            node_put(n);
            return;
        }
        break;
    default:
        r = -ENOTDIR;
    }
    node_put(n);
    if (r < 0) {
        dirlist_free(l);
        fuse_reply_err(req, -r);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)l;
    if (fuse_reply_open(req, fi) != 0)
        dirlist_free(l);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
                       off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    struct dirlist *l = (struct dirlist *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t pos = 0;
    for (size_t i = (size_t)off; i < l->n; i++) {
        struct stat st = { .st_ino = l->v[i].ino, .st_mode = l->v[i].mode };
        size_t need = fuse_add_direntry(req, buf + pos, size - pos,
                                        l->v[i].name, &st, (off_t)(i + 1));
        if (need > size - pos)
            break;
        pos += need;
    }
    fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    (void)ino;
    dirlist_free((struct dirlist *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode)
{
    struct node *dir = get(req, parent);
    if (!dir)
        return;
    if (dir->kind == NODE_NFSDIR)
        nfsdir_op_mkdir(req, dir, name, mode);
    else
        fuse_reply_err(req, EPERM);
    node_put(dir);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct node *dir = get(req, parent);
    if (!dir)
        return;
    if (dir->kind == NODE_CONTROL)
        control_op_unlink(req, name);
    else if (dir->kind == NODE_NFSDIR)
        nfsdir_op_unlink(req, dir, name, false);
    else
        fuse_reply_err(req, EPERM);
    node_put(dir);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct node *dir = get(req, parent);
    if (!dir)
        return;
    if (dir->kind == NODE_NFSDIR)
        nfsdir_op_unlink(req, dir, name, true);
    else
        fuse_reply_err(req, EPERM);
    node_put(dir);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname,
                      unsigned int flags)
{
    struct node *dir = get(req, parent);
    if (!dir)
        return;
    struct node *nd = get(req, newparent);
    if (!nd) {
        node_put(dir);
        return;
    }
    if (flags)
        fuse_reply_err(req, EINVAL);
    else if (dir->kind == NODE_NFSDIR)
        nfsdir_op_rename(req, dir, name, nd, newname);
    else
        fuse_reply_err(req, EPERM);
    node_put(nd);
    node_put(dir);
}

/* ---- files ------------------------------------------------------------- */

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
                      mode_t mode, struct fuse_file_info *fi)
{
    struct node *dir = get(req, parent);
    if (!dir)
        return;
    if (dir->kind == NODE_CONTROL)
        control_op_create(req, name, fi);
    else if (dir->kind == NODE_NFSDIR)
        nfsdir_op_create(req, dir, name, mode, fi);
    else
        fuse_reply_err(req, EPERM);
    node_put(dir);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_image(n))
        image_op_open(req, n, fi);
    else if (is_control_file(n))
        control_op_open(req, n, fi);
    else
        fuse_reply_err(req, EISDIR);
    node_put(n);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        control_op_read(req, n, size, off, fi);
    else
        image_op_read(req, n, size, off);
    node_put(n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
                     size_t size, off_t off, struct fuse_file_info *fi)
{
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        control_op_write(req, n, buf, size, off, fi);
    else
        image_op_write(req, n, buf, size, off);
    node_put(n);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino,
                     struct fuse_file_info *fi)
{
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        control_op_flush(req, n, fi);
    else
        image_op_flush(req, n, false);
    node_put(n);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                     struct fuse_file_info *fi)
{
    (void)datasync;
    (void)fi;
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        fuse_reply_err(req, 0);
    else
        image_op_flush(req, n, true);
    node_put(n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct node *n = get(req, ino);
    if (!n)
        return;
    if (is_control_file(n))
        control_op_release(req, n, fi);
    else
        image_op_release(req, n, fi);
    node_put(n);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in,
                               off_t off_in, struct fuse_file_info *fi_in,
                               fuse_ino_t ino_out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len,
                               int flags)
{
    (void)fi_in;
    (void)fi_out;
    struct node *in = get(req, ino_in);
    if (!in)
        return;
    struct node *out = get(req, ino_out);
    if (!out) {
        node_put(in);
        return;
    }
    if (flags || !is_image(in) || !is_image(out))
        fuse_reply_err(req, EOPNOTSUPP);
    else
        fs_copy_range(req, in, off_in, out, off_out, len);
    node_put(out);
    node_put(in);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct node *n = node_hold(ino);
    /* The export's FSSTAT, on the loop (nfsdir-ops.c). */
    nfsdir_op_statfs(req, n);
    if (n)
        node_put(n);
}

const struct fuse_lowlevel_ops imgfs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getxattr = op_getxattr,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .create = op_create,
    .copy_file_range = op_copy_file_range,
};
