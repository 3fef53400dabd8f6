/* tree.c — the inode table: root, control/, images, NFS entries.
 *
 * Nodes are never freed while mounted (an unlinked NFS entry keeps its
 * node, marked `unlinked`, so late requests on it find a valid struct);
 * the number of nodes is bounded by the names ever seen. */
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/vec.h"

struct imgfs *fs_global;

struct node *node_new(enum node_kind kind, struct node *parent,
                      const char *name)
{
    struct node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    n->parent = parent;
    n->name = strdup(name ? name : "");
    if (!n->name) {
        free(n);
        return NULL;
    }
    pthread_mutex_lock(&fs_global->tree_lock);
    struct node **v = vec_room(fs_global->nodes, fs_global->nnodes,
                               &fs_global->cap, sizeof *v, 64);
    if (!v) {
        pthread_mutex_unlock(&fs_global->tree_lock);
        free(n->name);
        free(n);
        return NULL;
    }
    fs_global->nodes = v;
    fs_global->nodes[fs_global->nnodes++] = n;
    n->ino = fs_global->nnodes;
    pthread_mutex_unlock(&fs_global->tree_lock);
    return n;
}

struct node *node_get(fuse_ino_t ino)
{
    struct node *n = NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (ino >= 1 && ino <= fs_global->nnodes)
        n = fs_global->nodes[ino - 1];
    pthread_mutex_unlock(&fs_global->tree_lock);
    return n;
}

static struct node *child_locked(struct node *parent, const char *name)
{
    for (size_t i = 0; i < fs_global->nnodes; i++) {
        struct node *n = fs_global->nodes[i];
        if (n->parent == parent && !n->unlinked && !strcmp(n->name, name))
            return n;
    }
    return NULL;
}

struct node *node_child(struct node *parent, const char *name)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    struct node *n = child_locked(parent, name);
    pthread_mutex_unlock(&fs_global->tree_lock);
    return n;
}

struct node *node_nfs_child(struct node *dir, const char *name,
                            enum node_kind kind)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    struct node *n = child_locked(dir, name);
    if (n && n->kind != kind)
        n->unlinked = true;     /* type changed on the server */
    else if (n) {
        pthread_mutex_unlock(&fs_global->tree_lock);
        return n;
    }
    char *rel;
    if (asprintf(&rel, "%s/%s", dir->relpath, name) < 0) {
        pthread_mutex_unlock(&fs_global->tree_lock);
        return NULL;
    }
    pthread_mutex_unlock(&fs_global->tree_lock);
    n = node_new(kind, dir, name);
    if (!n) {
        free(rel);
        return NULL;
    }
    n->exp = dir->exp;
    n->relpath = rel;
    n->read_only = dir->read_only;
    return n;
}

struct node *node_resolve(const char *path, bool create_ok)
{
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    struct node *cur = fs_global->root;
    char *save = NULL;
    char *part = strtok_r(copy, "/", &save);
    while (cur && part) {
        char *next = strtok_r(NULL, "/", &save);
        if (!strcmp(part, ".")) {
            part = next;
            continue;
        }
        if (cur->kind == NODE_ROOT) {
            cur = node_child(cur, part);
            if (cur && cur->kind == NODE_CONTROL)
                cur = NULL;     /* control/ files are not images */
        } else if (cur->kind == NODE_NFSDIR) {
            struct stat st;
            char *rel;
            if (asprintf(&rel, "%s/%s", cur->relpath, part) < 0) {
                cur = NULL;
                break;
            }
            int r = nfs_export_stat_wait(cur->exp, rel, &st);
            free(rel);
            if (r == 0)
                cur = node_nfs_child(cur, part, S_ISDIR(st.st_mode)
                                     ? NODE_NFSDIR : NODE_NFSFILE);
            else if (r == -ENOENT && create_ok && !next)
                cur = node_nfs_child(cur, part, NODE_NFSFILE);
            else
                cur = NULL;
        } else {
            cur = NULL;
        }
        part = next;
    }
    free(copy);
    return cur;
}

uint64_t node_id_ino(const struct image *img)
{
    const char *key = img->id.key[0];
    if (!key[0])
        return 0;
    uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a of the first key */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return NFS_INO_FLAG | h;
}

void node_static_attr(const struct node *n, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = n->id_ino ? n->id_ino : n->ino;
    st->st_uid = fs_global->uid;
    st->st_gid = fs_global->gid;
    st->st_blksize = 4096;
    st->st_atim = st->st_mtim = st->st_ctim = fs_global->mount_time;
    switch (n->kind) {
    /* Owner, group and modes from -o uid/gid/umask: with
     * default_permissions the kernel checks every access against them. */
    case NODE_ROOT:
    case NODE_CONTROL:
        st->st_mode = S_IFDIR | (0777 & ~fs_global->umask);
        st->st_nlink = 2;
        break;
    default:
        st->st_mode = S_IFREG | ((n->read_only ? 0444 : 0666) &
                                 ~fs_global->umask);
        st->st_nlink = 1;
        st->st_size = (off_t)n->fixed_size;
        st->st_blocks = (blkcnt_t)((n->fixed_size + 511) / 512);
        st->st_blksize = IMAGE_BLKSIZE;
        break;
    }
}

char *node_url(const struct node *n)
{
    char *s = NULL;
    if (n->kind == NODE_IMAGE)
        return strdup(n->url);
    if (n->kind != NODE_NFSFILE)
        return NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (asprintf(&s, "%s%s%s", n->exp->url_prefix, n->relpath,
                 n->exp->query) < 0)
        s = NULL;
    pthread_mutex_unlock(&fs_global->tree_lock);
    return s;
}

char *node_path(const struct node *n)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    size_t len = 1;
    for (const struct node *p = n; p && p->kind != NODE_ROOT; p = p->parent)
        len += strlen(p->name) + 1;
    char *s = malloc(len);
    if (s) {
        size_t pos = len - 1;
        s[pos] = '\0';
        for (const struct node *p = n; p && p->kind != NODE_ROOT;
             p = p->parent) {
            size_t l = strlen(p->name);
            if (pos != len - 1)
                s[--pos] = '/';
            pos -= l;
            memcpy(s + pos, p->name, l);
        }
        memmove(s, s + pos, len - pos);
    }
    pthread_mutex_unlock(&fs_global->tree_lock);
    return s;
}
