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
 *
 * Formats.  The bytes of an image belong to whoever wrote them (a guest
 * writes byte 0 of its LUN), so the format is the operator's statement,
 * never the image's.  IMAGE_FORMAT_AUTO (sources, and backing files whose
 * header gives no backing format) means:
 *   - iscsi://, block devices, null:, zero: are raw; no byte is read;
 *   - NFS and local regular files go by their name (the path before any
 *     "?query" of an nfs:// URL; suffixes case-insensitive):
 *       *.qcow2   qcow2; without the qcow2 magic the open is refused
 *                 ("NAME: named *.qcow2 but has no qcow2 header; state
 *                 the format ...");
 *       *.raw     raw, nothing read;
 *       other     the header is read: no qcow2 magic → raw; the magic →
 *                 refused ("NAME has a qcow2 header but is not named
 *                 *.qcow2: state the format ...").
 * An explicit format (--source-format, job key source-format, a qcow2
 * header's backing format) always wins: a LUN opened as qcow2 is qcow2.
 * So a qcow2 image, and with it a backing chain, is only ever followed
 * when the operator said qcow2, by the option or by the *.qcow2 name.
 *
 * Backing files (qcow2).  Names stored in an image are resolved and
 * confined (backing-policy.h) before anything is opened:
 *   - relative names from the naming image's own directory; ".", ".."
 *     and "//" normalized;
 *   - NFS images: the backing file must be on the same server (URL host
 *     and query string) and inside the same export; an absolute name is a
 *     path on that server; ".." past the export root is refused;
 *   - local images: inside the directory of the chain's top image (the
 *     one the user named), also after following symbolic links;
 *   - refused: any other URL scheme in the name (iscsi://, nfs:// to
 *     another server or export, file:, null:, zero:, anything with
 *     "://"), and every backing name of a qcow2 image on a LUN;
 *   - ...unless the resolved, normalized name starts with one of the
 *     prefixes in image_open_opts.allow_backing (--allow-backing PREFIX,
 *     job key allow-backing), which applies to every level of the chain;
 *   - a loop (an image already in the chain, by identity, image-id.h,
 *     and by resolved name) is refused with -ELOOP, a chain deeper than
 *     64 images too.
 * A refusal is -EPERM with "IMAGE: backing file 'NAME' <rule broken>
 * (allow it with --allow-backing PREFIX)", IMAGE being the image that
 * stores NAME.  It happens while the source is opened, before any target
 * is, so no target byte is touched; iSCSI CHAP credentials are only sent
 * to portals the user named.
 */
#ifndef IMGFS_IMAGE_OPEN_H
#define IMGFS_IMAGE_OPEN_H

#include "image.h"

enum image_format {
    IMAGE_FORMAT_AUTO = 0,  /* by the rule above (name, then header) */
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
     * the user allowed explicitly (--allow-backing), or NULL.  Compared
     * with the resolved, normalized name as a plain string prefix (end a
     * directory prefix with "/"); local relative names are also compared
     * in their absolute form. */
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

/* What IMAGE_FORMAT_AUTO makes of `url` by its name alone (rule above):
 * IMAGE_NAME_RAW (iscsi://, null:, zero:, *.raw), IMAGE_NAME_QCOW2
 * (*.qcow2, the magic must be there) or IMAGE_NAME_PROBE (read the
 * header; block devices are raw, found by stat at open). */
enum image_name_kind {
    IMAGE_NAME_RAW,
    IMAGE_NAME_QCOW2,
    IMAGE_NAME_PROBE,
};
enum image_name_kind image_name_kind(const char *url);

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
int image_parse_size(const char *s, uint64_t *out);

#endif
