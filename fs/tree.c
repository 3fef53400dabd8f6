/* tree.c — the inode table: root, control/, images, NFS entries, and
 * their lifecycle (lookup counts, holds, freeing on the loop thread: see
 * "Node lifecycle" in fs.h).  An unlinked NFS entry keeps its node, marked
 * `unlinked`, until the kernel forgot it, so late requests on it find a
 * valid struct. */
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/vec.h"

struct imgfs *fs_global;

/* What a freed node's slot holds until its ino is reused: code that walks
 * the table sees an unlinked node of no directory and no export. */
static struct node freed_slot = {
    .kind = NODE_NFSFILE,
    .name = (char *)"",
    .unlinked = true,
    .fixed = true,
};

/* Whether `parent` makes its children freeable: entries inside NFS
 * directories are; everything else is a fixed part of the mount. */
static bool freeable_under(const struct node *parent)
{
    return parent && parent->kind == NODE_NFSDIR;
}

static int insert_locked(struct node *n);
static void node_free(struct node *n);

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
    n->fixed = !freeable_under(parent);
    pthread_mutex_lock(&fs_global->tree_lock);
    int r = insert_locked(n);
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (r < 0) {
        free(n->name);
        free(n);
        return NULL;
    }
    return n;
}

/* Put `n` in the table (tree_lock held): the oldest freed slot or a new
 * one.  0 or -ENOMEM. */
static int insert_locked(struct node *n)
{
    if (fs_global->free_head < fs_global->nfree) {
        size_t slot = fs_global->free_slots[fs_global->free_head++];
        if (fs_global->free_head == fs_global->nfree)
            fs_global->free_head = fs_global->nfree = 0;
        fs_global->nodes[slot] = n;
        n->ino = slot + 1;
        fs_global->nlive++;
        return 0;
    }
    struct node **v = vec_room(fs_global->nodes, fs_global->nnodes,
                               &fs_global->cap, sizeof *v, 64);
    if (!v)
        return -ENOMEM;
    fs_global->nodes = v;
    fs_global->nodes[fs_global->nnodes++] = n;
    n->ino = fs_global->nnodes;
    fs_global->nlive++;
    return 0;
}

struct node *node_get(fuse_ino_t ino)
{
    struct node *n = NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (ino >= 1 && ino <= fs_global->nnodes &&
        fs_global->nodes[ino - 1] != &freed_slot)
        n = fs_global->nodes[ino - 1];
    pthread_mutex_unlock(&fs_global->tree_lock);
    return n;
}

struct node *node_hold(fuse_ino_t ino)
{
    struct node *n = NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (ino >= 1 && ino <= fs_global->nnodes &&
        fs_global->nodes[ino - 1] != &freed_slot) {
        n = fs_global->nodes[ino - 1];
        n->holds++;
    }
    pthread_mutex_unlock(&fs_global->tree_lock);
    return n;
}

size_t node_count(void)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    size_t n = fs_global->nlive;
    pthread_mutex_unlock(&fs_global->tree_lock);
    return n;
}

/* True if some node in the table has `n` as its parent (tree_lock). */
static bool has_children_locked(const struct node *n)
{
    for (size_t i = 0; i < fs_global->nnodes; i++)
        if (fs_global->nodes[i]->parent == n)
            return true;
    return false;
}

/* Nothing on the FUSE side keeps `n` (tree_lock held). */
static bool unreferenced_locked(const struct node *n)
{
    return !n->fixed && !n->nlookup && !n->holds && !has_children_locked(n);
}

/* Loop thread: nothing of the loop side uses `n` (image-io.c, jobs.c). */
static bool loop_idle(const struct node *n)
{
    return !n->img && !n->opens && !n->writers && !n->opening &&
           !n->close_pending && !n->open_waiters && !n->inflight &&
           !n->parked_head && !n->reads_inflight && !n->ra &&
           !atomic_load(&n->job_readers) && !atomic_load(&n->job_writers);
}

/* Take `n` out of the table (tree_lock held); the caller frees it. */
static void unlink_slot_locked(struct node *n)
{
    struct imgfs *fs = fs_global;
    size_t slot = n->ino - 1;
    if (fs->free_head >= 64 && fs->free_head * 2 >= fs->nfree) {
        fs->nfree -= fs->free_head;     /* drop what was reused */
        memmove(fs->free_slots, fs->free_slots + fs->free_head,
                fs->nfree * sizeof *fs->free_slots);
        fs->free_head = 0;
    }
    size_t *v = vec_room(fs_global->free_slots, fs_global->nfree,
                         &fs_global->free_cap, sizeof *v, 64);
    fs_global->nodes[slot] = &freed_slot;
    fs_global->nlive--;
    if (!v)
        return;             /* the slot stays a placeholder for good */
    fs_global->free_slots = v;
    fs_global->free_slots[fs_global->nfree++] = slot;
}

static void node_free(struct node *n)
{
    free(n->name);
    free(n->relpath);
    free(n->url);
    free(n);
}

/* Loop thread: free `n` if nothing keeps it, then its parent likewise. */
static void node_reap(void *opaque)
{
    struct node *n = opaque;
    pthread_mutex_lock(&fs_global->tree_lock);
    n->reap_posted = false;
    while (n && !n->reap_posted && unreferenced_locked(n) && loop_idle(n)) {
        struct node *parent = n->parent;
        unlink_slot_locked(n);
        node_free(n);
        n = parent;
    }
    pthread_mutex_unlock(&fs_global->tree_lock);
}

/* Decide under tree_lock whether to queue a reap of `n`; the node cannot
 * be freed between this and post_reap(): only a queued reap frees it. */
static bool reap_wanted_locked(struct node *n)
{
    if (n->reap_posted || !unreferenced_locked(n))
        return false;
    n->reap_posted = true;
    return true;
}

static void post_reap(struct node *n)
{
    if (loop_post(fs_global->loop, node_reap, n) < 0) {
        pthread_mutex_lock(&fs_global->tree_lock);
        n->reap_posted = false;     /* stays until the next chance */
        pthread_mutex_unlock(&fs_global->tree_lock);
    }
}

void node_reap_later(struct node *n)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    bool post = reap_wanted_locked(n);
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (post)
        post_reap(n);
}

void node_put(struct node *n)
{
    pthread_mutex_lock(&fs_global->tree_lock);
    bool post = n->holds && --n->holds == 0 && reap_wanted_locked(n);
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (post)
        post_reap(n);
}

void node_forget(fuse_ino_t ino, uint64_t nlookup)
{
    struct node *n = NULL;
    pthread_mutex_lock(&fs_global->tree_lock);
    if (ino >= 1 && ino <= fs_global->nnodes)
        n = fs_global->nodes[ino - 1];
    bool post = false;
    if (n && !n->fixed) {       /* the placeholder of freed slots is fixed */
        n->nlookup = nlookup < n->nlookup ? n->nlookup - nlookup : 0;
        post = reap_wanted_locked(n);
    }
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (post)
        post_reap(n);
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

/* Find or create the child; with `lookup`, count a kernel lookup on it,
 * else take a hold (node_put), under the same tree_lock that found or
 * inserted it. */
static struct node *nfs_child(struct node *dir, const char *name,
                              enum node_kind kind, bool lookup)
{
    /* Made before the lock, filled before it is in the table: nobody sees
     * it half made; dropped if the child is there already. */
    struct node *fresh = calloc(1, sizeof *fresh);
    if (!fresh || !(fresh->name = strdup(name))) {
        free(fresh);
        return NULL;
    }
    fresh->kind = kind;
    fresh->parent = dir;
    fresh->exp = dir->exp;
    fresh->read_only = dir->read_only;
    fresh->fixed = !freeable_under(dir);
    pthread_mutex_lock(&fs_global->tree_lock);
    struct node *n = child_locked(dir, name);
    if (n && n->kind != kind) {
        n->unlinked = true;     /* type changed on the server */
        n = NULL;
    }
    if (!n) {
        if (asprintf(&fresh->relpath, "%s/%s", dir->relpath, name) < 0)
            fresh->relpath = NULL;
        else if (insert_locked(fresh) == 0)
            n = fresh, fresh = NULL;
    }
    if (n && lookup)
        n->nlookup++;
    else if (n)
        n->holds++;
    pthread_mutex_unlock(&fs_global->tree_lock);
    if (fresh)
        node_free(fresh);
    return n;
}

struct node *node_nfs_child(struct node *dir, const char *name,
                            enum node_kind kind)
{
    return nfs_child(dir, name, kind, true);
}

struct node *node_resolve(const char *path, bool create_ok)
{
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    struct node *cur = fs_global->root;
    struct node *held = NULL;   /* the NFS node `cur`, held while the next
                                 * component is looked up */
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
                cur = nfs_child(cur, part, S_ISDIR(st.st_mode)
                                ? NODE_NFSDIR : NODE_NFSFILE, false);
            else if (r == -ENOENT && create_ok && !next)
                cur = nfs_child(cur, part, NODE_NFSFILE, false);
            else
                cur = NULL;
            if (held)
                node_put(held); /* cur (a child) keeps it now */
            held = cur;
        } else {
            cur = NULL;
        }
        part = next;
    }
    free(copy);
    /* A node made here that the caller does not keep busy goes again (the
     * check runs on the loop after the current callback). */
    if (held)
        node_put(held);
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
