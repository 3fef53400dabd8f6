/* nfs-meta.c — NFS metadata (stat, list, create, unlink, rename,
 * truncate, statvfs) through one synchronous libnfs context per export.
 *
 * Data never goes through this context: file contents are read and
 * written through images (image_open of the file's URL) on the loop
 * thread.  The meta context is used from FUSE worker threads, one call at
 * a time under the export's mutex (libnfs contexts are not thread-safe).
 * Every function returns 0 or a negative errno.
 *
 * Each RPC of a call is bounded by $IMGFS_REQUEST_TIMEOUT (io-timeouts.h;
 * 0: no bound), like the data path's requests: a server that does not
 * answer (down, or a network that drops everything) fails the call with
 * -EIO after that long instead of holding the worker thread, the
 * export's lock and every FUSE request queued behind it.  The mount at
 * open has its own bound (META_MOUNT_TIMEOUT_MS). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/time.h>

#include <nfsc/libnfs.h>

#include "../backends/io-timeouts.h"
#include "../backends/nfs-id.h"

/* Connecting and mounting the export when the mount starts. */
#define META_MOUNT_TIMEOUT_MS 60000

/* The libnfs RPC timeout (ms, -1: none) of a mounted meta context. */
static int meta_request_timeout_ms(void)
{
    unsigned s = image_request_timeout_s();
    if (s == 0)
        return -1;
    return s > 600000 ? 600000000 : (int)s * 1000;
}

int nfs_export_open(const char *url, bool is_dir, struct nfs_export **out,
                    char **file, struct errmsg *err)
{
    *out = NULL;
    if (file)
        *file = NULL;
    struct nfs_export *e = calloc(1, sizeof *e);
    if (!e) {
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    pthread_mutex_init(&e->lock, NULL);
    const char *q = strchr(url, '?');
    size_t base_len = q ? (size_t)(q - url) : strlen(url);
    while (base_len > strlen("nfs://") && url[base_len - 1] == '/')
        base_len--;
    char *clean = NULL;
    int r = -ENOMEM;
    if (asprintf(&clean, "%.*s%s", (int)base_len, url, q ? q : "") < 0) {
        clean = NULL;
        goto fail_msg;
    }
    e->query = strdup(q ? q : "");
    if (!e->query)
        goto fail_msg;
    e->nfs = nfs_init_context();
    if (!e->nfs)
        goto fail_msg;
    nfs_set_dircache(e->nfs, 0);
    nfs_set_timeout(e->nfs, META_MOUNT_TIMEOUT_MS);
    struct nfs_url *u = is_dir ? nfs_parse_url_dir(e->nfs, clean)
                               : nfs_parse_url_full(e->nfs, clean);
    if (!u) {
        errmsg_set(err, "%s: bad NFS URL: %s", url, nfs_get_error(e->nfs));
        r = -EINVAL;
        goto fail;
    }
    if (!is_dir && (!u->file || !u->file[0])) {
        errmsg_set(err, "%s: NFS URL names no file", url);
        nfs_destroy_url(u);
        r = -EINVAL;
        goto fail;
    }
    r = nfs_mount(e->nfs, u->server, u->path);
    if (r < 0) {
        errmsg_set(err, "%s: mounting %s:%s: %s", url, u->server, u->path,
                   nfs_get_error(e->nfs));
        nfs_destroy_url(u);
        r = r < -1 ? r : -EIO;
        goto fail;
    }
    /* Files' st_ino derive from the server's (address, fsid, fileid),
     * the same through every spelling of the server. */
    if (nfs_server_address(e->nfs, u->server, e->server_addr,
                           sizeof e->server_addr) < 0)
        snprintf(e->server_addr, sizeof e->server_addr, "%s", u->server);
    /* url_prefix = "nfs://server" + export path. */
    if (asprintf(&e->url_prefix, "nfs://%s%s", u->server, u->path) < 0) {
        e->url_prefix = NULL;
        nfs_destroy_url(u);
        goto fail_msg;
    }
    while (strlen(e->url_prefix) > 6 &&
           e->url_prefix[strlen(e->url_prefix) - 1] == '/')
        e->url_prefix[strlen(e->url_prefix) - 1] = '\0';
    if (file && !is_dir) {
        *file = strdup(u->file);
        if (!*file) {
            nfs_destroy_url(u);
            goto fail_msg;
        }
    }
    nfs_destroy_url(u);
    free(clean);
    nfs_set_timeout(e->nfs, meta_request_timeout_ms());
    *out = e;
    return 0;

fail_msg:
    errmsg_set(err, "%s: out of memory", url);
    r = -ENOMEM;
fail:
    free(clean);
    nfs_export_close(e);
    return r;
}

void nfs_export_close(struct nfs_export *e)
{
    if (!e)
        return;
    if (e->nfs)
        nfs_destroy_context(e->nfs);
    pthread_mutex_destroy(&e->lock);
    free(e->url_prefix);
    free(e->query);
    free(e);
}

static const char *p(const char *rel)
{
    return rel[0] ? rel : "/";
}

/* libnfs's result as 0 or -errno: an unanswered RPC (libnfs 4.0's sync
 * calls report it as -EINTR, or -ETIMEDOUT) and libnfs's bare -1 become
 * -EIO.  Nothing else interrupts these calls. */
static int fix(int r)
{
    if (r >= 0)
        return 0;
    return r < -1 && r != -ETIMEDOUT && r != -EINTR ? r : -EIO;
}

uint64_t nfs_meta_ino(const struct nfs_export *e, uint64_t fsid,
                      uint64_t fileid)
{
    return NFS_INO_FLAG |
           ((fileid ^ nfs_fs_key(e->server_addr, fsid)) & ~NFS_INO_FLAG);
}

int nfs_meta_stat(struct nfs_export *e, const char *rel, struct stat *st)
{
    struct nfs_stat_64 s;
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_stat64(e->nfs, p(rel), &s));
    pthread_mutex_unlock(&e->lock);
    if (r < 0)
        return r;
    memset(st, 0, sizeof *st);
    st->st_ino = (ino_t)nfs_meta_ino(e, s.nfs_dev, s.nfs_ino);
    st->st_mode = (mode_t)s.nfs_mode;
    st->st_nlink = (nlink_t)s.nfs_nlink;
    st->st_uid = (uid_t)s.nfs_uid;
    st->st_gid = (gid_t)s.nfs_gid;
    st->st_size = (off_t)s.nfs_size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((s.nfs_used + 511) / 512);
    st->st_atim.tv_sec = (time_t)s.nfs_atime;
    st->st_atim.tv_nsec = (long)s.nfs_atime_nsec;
    st->st_mtim.tv_sec = (time_t)s.nfs_mtime;
    st->st_mtim.tv_nsec = (long)s.nfs_mtime_nsec;
    st->st_ctim.tv_sec = (time_t)s.nfs_ctime;
    st->st_ctim.tv_nsec = (long)s.nfs_ctime_nsec;
    return 0;
}

int nfs_meta_create(struct nfs_export *e, const char *rel, mode_t mode)
{
    struct nfsfh *fh = NULL;
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_create(e->nfs, rel, O_CREAT | O_EXCL | O_RDWR,
                           (int)(mode & 07777), &fh));
    if (r == 0)
        nfs_close(e->nfs, fh);
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_unlink(struct nfs_export *e, const char *rel)
{
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_unlink(e->nfs, rel));
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_rmdir(struct nfs_export *e, const char *rel)
{
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_rmdir(e->nfs, rel));
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_mkdir(struct nfs_export *e, const char *rel, mode_t mode)
{
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_mkdir2(e->nfs, rel, (int)(mode & 07777)));
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_chown(struct nfs_export *e, const char *rel, uid_t uid,
                   gid_t gid)
{
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_chown(e->nfs, p(rel), (int)uid, (int)gid));
    pthread_mutex_unlock(&e->lock);
    return r;
}


int nfs_meta_rename(struct nfs_export *e, const char *from, const char *to)
{
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_rename(e->nfs, from, to));
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_truncate(struct nfs_export *e, const char *rel, uint64_t size)
{
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_truncate(e->nfs, rel, size));
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_utimes(struct nfs_export *e, const char *rel,
                    const struct timespec times[2])
{
    struct timeval tv[2];
    for (int i = 0; i < 2; i++) {
        tv[i].tv_sec = times[i].tv_sec;
        tv[i].tv_usec = times[i].tv_nsec / 1000;
    }
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_utimes(e->nfs, p(rel), tv));
    pthread_mutex_unlock(&e->lock);
    return r;
}

int nfs_meta_statvfs(struct nfs_export *e, struct statvfs *sv)
{
    struct nfs_statvfs_64 s;
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_statvfs64(e->nfs, "/", &s));
    pthread_mutex_unlock(&e->lock);
    if (r < 0)
        return r;
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = s.f_bsize;
    sv->f_frsize = s.f_frsize ? s.f_frsize : s.f_bsize;
    sv->f_blocks = s.f_blocks;
    sv->f_bfree = s.f_bfree;
    sv->f_bavail = s.f_bavail;
    sv->f_files = s.f_files;
    sv->f_ffree = s.f_ffree;
    sv->f_favail = s.f_favail;
    sv->f_namemax = s.f_namemax ? s.f_namemax : 255;
    return 0;
}

int nfs_meta_list(struct nfs_export *e, const char *rel,
                  struct nfs_meta_dirent **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct nfsdir *dir = NULL;
    pthread_mutex_lock(&e->lock);
    int r = fix(nfs_opendir(e->nfs, p(rel), &dir));
    if (r < 0) {
        pthread_mutex_unlock(&e->lock);
        return r;
    }
    struct nfs_meta_dirent *v = NULL;
    size_t cnt = 0, cap = 0;
    struct nfsdirent *d;
    while ((d = nfs_readdir(e->nfs, dir)) != NULL) {
        if (!strcmp(d->name, ".") || !strcmp(d->name, ".."))
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 32;
            struct nfs_meta_dirent *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                r = -ENOMEM;
                break;
            }
            v = nv;
        }
        v[cnt].name = strdup(d->name);
        if (!v[cnt].name) {
            r = -ENOMEM;
            break;
        }
        v[cnt].ino = nfs_meta_ino(e, d->dev, d->inode);
        /* type: NF3REG = 1, NF3DIR = 2 (libnfs-raw-nfs.h) */
        v[cnt].mode = (mode_t)(d->mode & 07777) |
                      (d->type == 2 ? S_IFDIR : d->type == 1 ? S_IFREG : 0);
        cnt++;
    }
    nfs_closedir(e->nfs, dir);
    pthread_mutex_unlock(&e->lock);
    if (r < 0) {
        nfs_meta_list_free(v, cnt);
        return r;
    }
    *out = v;
    *n = cnt;
    return 0;
}

void nfs_meta_list_free(struct nfs_meta_dirent *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}
