/* image-rename.c — rename and remove created files: local files with
 * rename(2)/unlink(2), nfs:// files through a mount of their export
 * (nfs-mount.c).  See image-rename.h. */
#include "image-rename.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "nfs-image.h"

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

bool image_url_is_file(const char *url)
{
    if (has_prefix(url, "nfs://"))
        return true;
    return *url && !strstr(url, "://") && !has_prefix(url, "null:") &&
           !has_prefix(url, "zero:");
}

/* The directory part of local `path` ("." when it has none) and, in
 * *to, `new_name` in that directory; both malloc'd.  Returns 0 or
 * -ENOMEM. */
static int local_names(const char *path, const char *new_name, char **dir,
                       char **to)
{
    const char *slash = strrchr(path, '/');
    int n = slash ? (int)(slash - path) : 1;     /* none: "." */
    *dir = *to = NULL;
    if (slash && n == 0)
        n = 1;                              /* "/file": the root */
    if (asprintf(dir, "%.*s", n, slash ? path : ".") < 0) {
        *dir = NULL;
        return -ENOMEM;
    }
    if (asprintf(to, "%.*s%s", slash ? (int)(slash - path) + 1 : 0, path,
                 new_name) < 0) {
        *to = NULL;
        free(*dir);
        *dir = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* rename(2) without replacing `to`. */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    /* The file system has no RENAME_NOREPLACE: look, then rename. */
    struct stat st;
    if (lstat(to, &st) == 0)
        return -EEXIST;
    return rename(from, to) == 0 ? 0 : -errno;
}

static int local_rename(const char *path, const char *new_name, bool replace,
                        struct errmsg *err)
{
    char *dir, *to;
    if (local_names(path, new_name, &dir, &to) < 0) {
        errmsg_set(err, "%s: out of memory", path);
        return -ENOMEM;
    }
    int r = replace ? (rename(path, to) == 0 ? 0 : -errno)
                    : rename_noreplace(path, to);
    if (r < 0) {
        errmsg_set(err, "renaming %s to %s: %s%s", path, to, strerror(-r),
                   r == -EEXIST ? " (use --overwrite to replace it)" : "");
        goto out;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        r = -errno;
        errmsg_set(err, "renamed %s to %s, but syncing directory %s: %s",
                   path, to, dir, strerror(-r));
    }
    if (fd >= 0)
        close(fd);
out:
    free(dir);
    free(to);
    return r;
}

/* ---- NFS files -------------------------------------------------------- */

static int nfs_file_rename(const char *url, const char *new_name,
                           bool replace, struct errmsg *err)
{
    struct nfs_mounted m = { 0 };
    int r = nfs_mount_url(url, &m, err);
    if (r < 0)
        return r;
    const char *slash = strrchr(m.file, '/');
    int dirlen = slash ? (int)(slash - m.file) : 0;
    char *to;
    if (asprintf(&to, "%.*s/%s", dirlen, m.file, new_name) < 0) {
        nfs_mounted_release(&m);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    struct nfs_stat_64 st;
    if (!replace && nfs_stat64(m.nfs, to, &st) == 0) {
        errmsg_set(err, "renaming %s to %s: %s exists (use --overwrite to "
                   "replace it)", url, new_name, to);
        r = -EEXIST;
    } else {
        r = nfs_rename(m.nfs, m.file, to);
        if (r < 0)
            errmsg_set(err, "renaming %s to %s on export %s: %s", m.file, to,
                       m.export, nfs_get_error(m.nfs));
    }
    free(to);
    nfs_mounted_release(&m);
    return r;
}

static int nfs_file_remove(const char *url, struct errmsg *err)
{
    struct nfs_mounted m = { 0 };
    int r = nfs_mount_url(url, &m, err);
    if (r < 0)
        return r;
    r = nfs_unlink(m.nfs, m.file);
    if (r == -ENOENT)
        r = 0;
    else if (r < 0)
        errmsg_set(err, "removing %s on export %s: %s", m.file, m.export,
                   nfs_get_error(m.nfs));
    nfs_mounted_release(&m);
    return r;
}

/* ---- both ------------------------------------------------------------- */

int image_rename_created(const char *url, const char *new_name, bool replace,
                         struct errmsg *err)
{
    if (!*new_name || strchr(new_name, '/')) {
        errmsg_set(err, "%s: cannot rename to '%s': not a name in the same "
                   "directory", url, new_name);
        return -EINVAL;
    }
    if (!image_url_is_file(url)) {
        errmsg_set(err, "%s: not a file: cannot be renamed", url);
        return -EOPNOTSUPP;
    }
    if (has_prefix(url, "nfs://"))
        return nfs_file_rename(url, new_name, replace, err);
    return local_rename(url, new_name, replace, err);
}

int image_remove_created(const char *url, struct errmsg *err)
{
    if (!image_url_is_file(url)) {
        errmsg_set(err, "%s: not a file: cannot be removed", url);
        return -EOPNOTSUPP;
    }
    if (has_prefix(url, "nfs://"))
        return nfs_file_remove(url, err);
    if (unlink(url) < 0 && errno != ENOENT) {
        int e = errno;
        errmsg_set(err, "removing %s: %s", url, strerror(e));
        return -e;
    }
    return 0;
}
