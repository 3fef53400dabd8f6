/* protocols.h — open functions of each protocol backend.  Called by
 * image_open_protocol(); same contract as image_open() (see image-open.h),
 * with `spec` being the URL/path without the scheme dispatch done. */
#ifndef IMGFS_PROTOCOLS_H
#define IMGFS_PROTOCOLS_H

#include "image-open.h"

/* Local file or block device at `path`. */
int file_image_open(struct loop *loop, const char *path,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err);

/* nfs://server/export/path[?nfsport=&mountport=] */
int nfs_image_open(struct loop *loop, const char *url,
                   const struct image_open_opts *opts, struct image **out,
                   struct errmsg *err);

/* iscsi://[user@]host[:port]/iqn/lun */
int iscsi_image_open(struct loop *loop, const char *url,
                     const struct image_open_opts *opts, struct image **out,
                     struct errmsg *err);

/* "null:" — discards writes; size = opts->create_size or INT64_MAX. */
int null_image_open(struct loop *loop, const char *url,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err);

/* "zero:SIZE" — reads zeroes, read-only, block status says HOLE. */
int zero_image_open(struct loop *loop, const char *url,
                    const struct image_open_opts *opts, struct image **out,
                    struct errmsg *err);

#endif
