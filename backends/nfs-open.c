/* nfs-open.c — open an nfs:// image: mount (nfs-mount.c), apply the open
 * rules of image-open.h to the file, then hand the context to the loop
 * (nfs.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nfsc/libnfs.h>

#include "nfs-id.h"
#include "nfs-image.h"
#include "protocols.h"

/* New files (targets, backups) are the owner's only: an image holds a
 * whole disk. */
#define CREATE_MODE 0600

/* Close *fh when `r` < 0; returns `r`. */
static int close_on_error(struct nfs_mounted *m, struct nfsfh **fh, int r)
{
    if (r < 0) {
        nfs_close(m->nfs, *fh);
        *fh = NULL;
    }
    return r;
}

/* Fill `id` with "nfs:ADDR:FH" of the open file `fh`.  Returns 0 or
 * -errno with `err` set. */
static int file_identity(const char *url, struct nfs_mounted *m,
                         struct nfsfh *fh, struct image_id *id,
                         struct errmsg *err)
{
    char addr[INET6_ADDRSTRLEN + 8], hex[2 * 64 + 1];
    int r = nfs_server_address(m->nfs, m->server, addr, sizeof addr);
    if (r < 0) {
        errmsg_set(err, "%s: cannot tell the address of server %s", url,
                   m->server);
        return r;
    }
    r = nfs_fh_hex(fh, hex, sizeof hex);
    if (r < 0) {
        errmsg_set(err, "%s: no file handle for %s", url, m->file);
        return r;
    }
    *id = (struct image_id){ 0 };
    image_id_add(id, "nfs:%s:%s", addr, hex);
    return 0;
}

/* Apply the source/target rules; on success *fh is open, *size set and
 * `id` filled.  An existing target is checked against
 * opts->distinct_from before it is truncated. */
static int open_file(const char *url, struct nfs_mounted *m,
                     const struct image_open_opts *opts, struct nfsfh **fh,
                     uint64_t *size, bool *created, struct image_id *id,
                     struct errmsg *err)
{
    struct nfs_stat_64 st;
    int r = nfs_stat64(m->nfs, m->file, &st);
    bool exists = r == 0;
    if (r < 0 && r != -ENOENT) {
        errmsg_set(err, "%s: cannot stat %s on export %s: %s", url, m->file,
                   m->export, nfs_get_error(m->nfs));
        return r;
    }
    if (exists && S_ISDIR(st.nfs_mode)) {
        errmsg_set(err, "%s: is a directory", url);
        return -EISDIR;
    }
    if (exists && !S_ISREG(st.nfs_mode)) {
        errmsg_set(err, "%s: not a regular file", url);
        return -EINVAL;
    }
    *created = false;
    if (!opts->write) {
        if (!exists) {
            errmsg_set(err, "%s: no such file (%s on export %s)", url,
                       m->file, m->export);
            return -ENOENT;
        }
        r = nfs_open(m->nfs, m->file, O_RDONLY, fh);
        if (r < 0) {
            errmsg_set(err, "%s: cannot open %s: %s", url, m->file,
                       nfs_get_error(m->nfs));
            return r;
        }
        *size = st.nfs_size;
        return close_on_error(m, fh, file_identity(url, m, *fh, id, err));
    }
    if (!exists && !opts->create) {
        errmsg_set(err, "%s: no such file (%s on export %s); use --create "
                   "to create it", url, m->file, m->export);
        return -ENOENT;
    }
    if (exists && st.nfs_size > 0 && !opts->overwrite) {
        errmsg_set(err, "%s exists and is not empty (%" PRIu64 " bytes); "
                   "use --overwrite to replace it", url,
                   (uint64_t)st.nfs_size);
        return -EEXIST;
    }
    int flags = O_RDWR | (exists ? 0 : O_CREAT);
    r = nfs_open2(m->nfs, m->file, flags, CREATE_MODE, fh);
    if (r < 0) {
        errmsg_set(err, "%s: cannot %s %s: %s", url,
                   exists ? "open" : "create", m->file,
                   nfs_get_error(m->nfs));
        return r;
    }
    r = file_identity(url, m, *fh, id, err);
    /* Before anything is truncated or written.  (A file just created
     * cannot be the source; checking it anyway covers one that appeared
     * between the stat and the create.) */
    if (r == 0)
        r = image_id_check_distinct(id, url, opts->distinct_from, err);
    if (r < 0)
        return close_on_error(m, fh, r);
    if (!opts->create) {
        *size = st.nfs_size;
        return 0;
    }
    /* Drop old contents first so the new size is all holes. */
    r = nfs_ftruncate(m->nfs, *fh, 0);
    if (r == 0 && opts->create_size)
        r = nfs_ftruncate(m->nfs, *fh, opts->create_size);
    if (r < 0) {
        errmsg_set(err, "%s: cannot set the size of %s to %" PRIu64 ": %s",
                   url, m->file, opts->create_size, nfs_get_error(m->nfs));
        nfs_close(m->nfs, *fh);
        *fh = NULL;
        return r;
    }
    *size = opts->create_size;
    *created = true;
    return 0;
}

int nfs_image_open(struct loop *loop, const char *url,
                   const struct image_open_opts *opts, struct image **out,
                   struct errmsg *err)
{
    *out = NULL;
    struct nfs_mounted m = { 0 };
    int r = nfs_mount_url(url, &m, err);
    if (r < 0)
        return r;

    struct nfsfh *fh = NULL;
    uint64_t size = 0;
    bool created = false;
    struct image_id id = { 0 };
    r = open_file(url, &m, opts, &fh, &size, &created, &id, err);
    if (r < 0) {
        nfs_mounted_release(&m);
        return r;
    }

    struct image *img = image_alloc(&nfs_image_ops, loop, url);
    struct nfs_image *ni = calloc(1, sizeof *ni);
    if (!img || !ni) {
        free(ni);
        image_free_shell(img);
        nfs_close(m.nfs, fh);
        nfs_mounted_release(&m);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    ni->img = img;
    ni->nfs = m.nfs;
    m.nfs = NULL;
    ni->fh = fh;
    ni->readmax = nfs_get_readmax(ni->nfs);
    ni->writemax = nfs_get_writemax(ni->nfs);
    if (ni->readmax == 0)
        ni->readmax = NFS_BLKSIZE;
    if (ni->writemax == 0)
        ni->writemax = NFS_BLKSIZE;
    ni->growable = opts->write && opts->growable;
    /* For a re-lookup after a stale handle (nfs-reconnect.c); without
     * the path a stale handle simply fails. */
    ni->path = strdup(m.file);
    ni->open_flags = opts->write ? O_RDWR : O_RDONLY;
    nfs_mounted_release(&m);

    img->priv = ni;
    img->id = id;
    img->size = size;
    img->block_size = 1;
    img->max_request = 0;       /* requests are split here */
    img->read_only = !opts->write;
    img->reads_as_zero = created;
    img->can_unmap = false;
    nfs_image_attach(ni);
    *out = img;
    return 0;
}
