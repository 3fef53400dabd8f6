/* nfs-image.h — private to the nfs backend (nfs.c: data path,
 * nfs-mount.c: connect and mount, nfs-open.c: open rules).  Not a shared
 * contract.
 *
 * One libnfs context per image (libnfs is not thread safe); the context is
 * used synchronously only while opening and closing, and through the async
 * API on the image's loop thread otherwise.
 */
#ifndef IMGFS_NFS_IMAGE_H
#define IMGFS_NFS_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "loop.h"

struct nfs_context;
struct nfsfh;

struct nfs_image {
    struct image *img;          /* back pointer; img->priv == this */
    struct nfs_context *nfs;
    struct nfsfh *fh;
    uint64_t readmax;           /* largest READ3 the server takes (> 0) */
    uint64_t writemax;          /* largest WRITE3 the server takes (> 0) */
    bool growable;              /* writes past img->size extend the file */
    bool dead;                  /* nfs_service failed for good */
    struct loop_poller poller;
    int64_t service_timer;      /* periodic nfs_service(0), 0 = none */
};

/* A mounted export (nfs-mount.c): the context, what was mounted and the
 * file's path inside it. */
struct nfs_mounted {
    struct nfs_context *nfs;
    char *server;
    char *export;       /* what was mounted, e.g. "/export" */
    char *file;         /* path inside the export, e.g. "/dir/f.img" */
};

/* Connect to the server of `url` and mount the export holding its file
 * (the URL's directory, else the nearest parent the server accepts).
 * Returns 0 and fills `m`, or -errno with `err` naming the URL and what
 * failed (connection, mount). */
int nfs_mount_url(const char *url, struct nfs_mounted *m, struct errmsg *err);

/* Destroy the context (if any) and free the strings; `m` becomes empty. */
void nfs_mounted_release(struct nfs_mounted *m);

/* The vtable of nfs images (nfs.c). */
extern const struct image_ops nfs_image_ops;

/* Attach `ni` to its image's loop: the poller and the periodic service
 * timer that drives libnfs timeouts.  Called once by nfs_image_open after
 * the file is open. */
void nfs_image_attach(struct nfs_image *ni);

#endif
