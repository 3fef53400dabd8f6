/* access.c — permission checks for what a job does on behalf of the
 * process that wrote its job file.
 *
 * With default_permissions the kernel checks every open, create and unlink
 * through the mount against the owners and modes the mount reports.  A job
 * opens its images itself, with the mount's own rights, so the same check
 * is made here against the job writer's credentials (recorded by control.c
 * from the FUSE request that wrote the job text): read on the source, write
 * on the target (or write + search on the directory a new target is
 * created in), search on every directory above them. */
#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void access_cred_from_req(fuse_req_t req, struct access_cred *c)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    memset(c, 0, sizeof *c);
    c->uid = ctx->uid;
    c->gid = ctx->gid;
    int n = fuse_req_getgroups(req, ACCESS_MAX_GROUPS, c->groups);
    if (n < 0 || n > ACCESS_MAX_GROUPS) {
        c->groups_incomplete = true;
        n = n < 0 ? 0 : ACCESS_MAX_GROUPS;
    }
    c->ngroups = (unsigned)n;
}

static bool in_group(const struct access_cred *c, gid_t gid)
{
    if (c->gid == gid)
        return true;
    for (unsigned i = 0; i < c->ngroups; i++)
        if (c->groups[i] == gid)
            return true;
    return false;
}

int access_permitted(const struct access_cred *c, const struct stat *st,
                     int mask)
{
    mask &= R_OK | W_OK | X_OK;
    if (c->uid == 0) {
        /* Root reads and writes anything; it executes a file only if
         * someone may, and searches any directory. */
        if ((mask & X_OK) && !S_ISDIR(st->st_mode) &&
            !(st->st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)))
            return -EACCES;
        return 0;
    }
    unsigned bits;
    if (c->uid == st->st_uid)
        bits = (st->st_mode >> 6) & 7;
    else if (in_group(c, st->st_gid))
        bits = (st->st_mode >> 3) & 7;
    else if (c->groups_incomplete)
        return -EACCES;         /* it might be in the group: be strict */
    else
        bits = st->st_mode & 7;
    unsigned want = (mask & R_OK ? 4u : 0) | (mask & W_OK ? 2u : 0) |
                    (mask & X_OK ? 1u : 0);
    return (bits & want) == want ? 0 : -EACCES;
}

/* Whether `c` may search every directory from the root down to `n`'s
 * parent.  0, -EACCES, or another -errno from the server. */
static int may_reach(const struct access_cred *c, struct node *n)
{
    for (struct node *d = n->parent; d; d = d->parent) {
        struct stat st;
        int r = node_attr(d, &st);
        if (r < 0)
            return r;
        r = access_permitted(c, &st, X_OK);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Whether `c` may open `n` for `mask` (R_OK or W_OK).  A target that does
 * not exist yet (an NFS file a job will create) needs write and search on
 * its directory instead.  0 or -errno. */
static int may_open(const struct access_cred *c, struct node *n, int mask)
{
    int r = may_reach(c, n);
    if (r < 0)
        return r;
    struct stat st;
    r = node_attr(n, &st);
    if (r == -ENOENT && (mask & W_OK) && n->kind == NODE_NFSFILE &&
        n->parent) {
        r = node_attr(n->parent, &st);
        if (r < 0)
            return r;
        return access_permitted(c, &st, W_OK | X_OK);
    }
    if (r < 0)
        return r;
    return access_permitted(c, &st, mask);
}

int job_check_access(struct job *j, struct node *src, struct node *dst,
                     struct errmsg *em)
{
    struct access_cred c;
    pthread_mutex_lock(&fs_global->jobs_lock);
    c = j->writer;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    struct { struct node *n; int mask; const char *verb, *what; } ends[] = {
        { src, R_OK, "read", "source" },
        { dst, W_OK, "write", "target" },
    };
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        int r = may_open(&c, ends[i].n, ends[i].mask);
        if (r == 0)
            continue;
        char *path = node_path(ends[i].n);
        if (r == -EACCES)
            errmsg_set(em, "permission denied: uid %u may not %s %s '%s'",
                       (unsigned)c.uid, ends[i].verb, ends[i].what,
                       path ? path : "?");
        else
            errmsg_set(em, "%s '%s': %s", ends[i].what, path ? path : "?",
                       strerror(-r));
        free(path);
        return r;
    }
    return 0;
}
