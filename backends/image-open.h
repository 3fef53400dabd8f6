/* image-open.h — open an image by URL: protocol by URL scheme, then format.
 *
 * URL spellings follow qemu-img's:
 *   nfs://server/export/dir/file[?nfsport=N&mountport=M]   (libnfs, NFSv3)
 *   iscsi://[user@]host[:port]/iqn/lun                       (libiscsi)
 *   null:            discards writes, reads zeroes, size = create_size or 2^63
 *   zero:SIZE        reads zeroes (SIZE with K/M/G/T suffix), read-only
 *   anything else    a local file or block device path
 *
 * CHAP: the password for iscsi://user@... comes from the file named by
 * $IMGFS_ISCSI_SECRET_FILE or from $IMGFS_ISCSI_PASSWORD, never from argv.
 */
#ifndef IMGFS_IMAGE_OPEN_H
#define IMGFS_IMAGE_OPEN_H

#include "image.h"

enum image_format {
    IMAGE_FORMAT_AUTO = 0,  /* detect (qcow2 magic, else raw); sources */
    IMAGE_FORMAT_RAW,
    IMAGE_FORMAT_QCOW2,
};

struct image_open_opts {
    bool write;             /* open read-write */
    /* Targets that are files (local or NFS):
     *  - missing and !create: -ENOENT ("use --create");
     *  - existing, size > 0 and !overwrite: -EEXIST, file untouched;
     *  - create: the file is created (or, with overwrite, truncated) to
     *    create_size bytes, sparse; the image then has reads_as_zero set.
     * Truncation happens only in image_open of a target, so callers open
     * and validate the source first. LUNs ignore create/overwrite. */
    bool create;
    bool overwrite;
    uint64_t create_size;
    bool growable;          /* files: writes past the end extend the file */
    enum image_format format;
    /* qcow2 sources: open only this layer, not the backing chain.
     * block_status then reports the clusters this layer leaves to its
     * backing as EXTENT_BACKING (zero clusters stay EXTENT_ZERO) and reads
     * of them return zeroes; qcow2_backing_name() still tells the name.
     * Ignored for raw images. */
    bool no_backing;
    /* qcow2 targets (format == IMAGE_FORMAT_QCOW2 with create): */
    uint32_t cluster_size;  /* 0: 64 KiB */
    bool compress;          /* deflate each cluster */
    const char *backing;    /* keep-backing: backing file name to record */
    const char *backing_format; /* "raw" / "qcow2" or NULL */
    /* Backing files a qcow2 image may open beyond the confined ones (see
     * "Backing files" above): NULL-terminated list of URL/path prefixes
     * the user allowed explicitly (--allow-backing), or NULL. */
    const char *const *allow_backing;
    /* Targets: refuse (-EINVAL, nothing created, truncated or written) when
     * the image opened is the same image (image-id.h) as `distinct_from`
     * or any image of its backing chain.  NULL: no check. */
    const struct image *distinct_from;
};

/* Open `url` on `loop` (synchronously: connects, logs in, mounts, reads
 * headers).  On success *out is the image (format layer on top of the
 * protocol when the format is qcow2) and 0 is returned.  On failure returns
 * -errno with `err` saying what and where; nothing was written. */
int image_open(struct loop *loop, const char *url,
               const struct image_open_opts *opts, struct image **out,
               struct errmsg *err);

/* Open only the protocol layer of `url` (no format detection). Same
 * contract as image_open. */
int image_open_protocol(struct loop *loop, const char *url,
                        const struct image_open_opts *opts,
                        struct image **out, struct errmsg *err);

/* Resolve `name` (a backing-file name stored in an image) against the URL
 * or path `base` of the image that names it: absolute paths and URLs are
 * returned as they are; relative names replace the last path component of
 * `base` (keeping nfs:// server/export and its query string).  Returns a
 * malloc'd string or NULL on ENOMEM. */
char *image_resolve_relative(const char *base, const char *name);

/* Parse a format name: "raw", "qcow2", and "auto" when `allow_auto`.
 * Returns 0 or -EINVAL. */
int image_format_parse(const char *s, bool allow_auto, enum image_format *out);

/* Parse a size: decimal with optional K, M, G, T (binary) suffix, optional
 * trailing "B"/"iB".  Returns 0 or -EINVAL. */
int parse_size(const char *s, uint64_t *out);

#endif
