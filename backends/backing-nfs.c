/* backing-nfs.c — backing_nfs_export: which export an nfs:// image lives
 * in, for the backing-file confinement.  See backing-policy.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backing-policy.h"
#include "nfs-image.h"

int backing_nfs_export(const char *url, char **export, struct errmsg *err)
{
    *export = NULL;
    struct nfs_mounted m = { 0 };
    int r = nfs_mount_url(url, &m, err);
    if (r < 0)
        return r;
    bool escapes;
    *export = backing_normalize_path(m.export && m.export[0] ? m.export : "/",
                                     &escapes);
    nfs_mounted_release(&m);
    if (!*export) {
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    return 0;
}
