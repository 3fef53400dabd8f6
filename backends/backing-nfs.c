/* backing-nfs.c — backing_nfs_export: which export an nfs:// image lives
 * in, for the backing-file confinement.  See backing-policy.h.
 *
 * Servers let clients mount directories inside an export, so the
 * directory nfs_mount_url ends up mounting is not necessarily the export:
 * its parents are tried in turn, and the highest one the server still
 * mounts is the export (a server that mounts "/" exports everything).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backing-policy.h"
#include "nfs-image.h"

/* The directory nfs_mount_url mounts for `url`, normalized; NULL with
 * *r = -errno on failure. */
static char *mounted_dir(const char *url, int *r, struct errmsg *err)
{
    struct nfs_mounted m = { 0 };
    *r = nfs_mount_url(url, &m, err);
    if (*r < 0)
        return NULL;
    bool escapes;
    char *dir = backing_normalize_path(m.export && m.export[0] ? m.export
                                                                : "/",
                                       &escapes);
    nfs_mounted_release(&m);
    if (!dir) {
        *r = -ENOMEM;
        errmsg_set(err, "%s: out of memory", url);
    }
    return dir;
}

/* True when the server of `url` mounts directory `dir` itself. */
static bool mounts_itself(const char *url, const char *dir)
{
    const char *host_end = strchr(url + strlen("nfs://"), '/');
    const char *query = strchr(url, '?');
    if (!host_end || (query && query < host_end))
        return false;
    char *probe;
    if (asprintf(&probe, "%.*s%s/.export-probe%s", (int)(host_end - url),
                 url, strcmp(dir, "/") == 0 ? "" : dir,
                 query ? query : "") < 0)
        return false;
    struct errmsg ignored;
    int r;
    char *got = mounted_dir(probe, &r, &ignored);
    free(probe);
    bool same = got && strcmp(got, dir) == 0;
    free(got);
    return same;
}

int backing_nfs_export(const char *url, char **export, struct errmsg *err)
{
    int r;
    *export = mounted_dir(url, &r, err);
    if (!*export)
        return r;
    while (strcmp(*export, "/") != 0) {
        char *parent = backing_local_dir(*export);
        if (!parent) {
            errmsg_set(err, "%s: out of memory", url);
            free(*export);
            *export = NULL;
            return -ENOMEM;
        }
        if (!mounts_itself(url, parent)) {
            free(parent);
            break;
        }
        free(*export);
        *export = parent;
    }
    return 0;
}
