/* image-id.h — what an open image IS, independent of how it was spelled.
 *
 * Two URLs may name one image (`nfs://h/e/v.raw` and
 * `nfs://h/e/v.raw?nfsport=2049`, `//` and `./` in paths, two mount names
 * for one export, a hard link, a symlink, `localhost` and `127.0.0.1`, two
 * portals of one iSCSI target).  Strings cannot tell; the protocols can.
 * Each protocol fills image->id when it opens an image:
 *
 *   NFS    "nfs:ADDR:FH"      ADDR the server's numeric address, FH the
 *                             NFSv3 file handle in hex (handles are unique
 *                             per server, whatever export or path led there)
 *   iSCSI  "iscsi:IQN:LUN"    the target name and LUN (portal-independent),
 *          "lu:TYPE:HEX"      and, in the second key, the LU's device
 *                             identifier from VPD page 0x83 when the target
 *                             reports a globally unique one (two targets
 *                             exporting one LU; see iscsi_lu_identity)
 *   local  "file:DEV:INO"     st_dev and st_ino of a regular file
 *          "blk:RDEV"         st_rdev of a block device
 *   null:, zero:              no key (never the same as anything)
 *
 * Format layers (qcow2) copy their protocol image's id and set
 * image->backing to their opened backing image (NULL when none), so a
 * whole chain can be walked.
 */
#ifndef IMGFS_IMAGE_ID_H
#define IMGFS_IMAGE_ID_H

#include <stdbool.h>

#define IMAGE_ID_KEYS     2
#define IMAGE_ID_KEY_MAX  200

struct image;

/* Up to IMAGE_ID_KEYS identity keys; unused keys are empty strings.  Two
 * ids denote the same image when any non-empty key of one equals any
 * non-empty key of the other. */
struct image_id {
    char key[IMAGE_ID_KEYS][IMAGE_ID_KEY_MAX];
};

/* Add `key` (printf format) to the first free slot of `id`.  Keys longer
 * than IMAGE_ID_KEY_MAX - 1 are truncated (still a stable identity);
 * a full id ignores further keys.  Never fails. */
void image_id_add(struct image_id *id, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* True when `a` and `b` share a non-empty key. */
bool image_id_same(const struct image_id *a, const struct image_id *b);

/* True when `img` has no identity key (null:, zero:). */
bool image_id_empty(const struct image_id *id);

/* The image of `chain` (img, img->backing, img->backing->backing, ...)
 * that is the same image as `id`, or NULL.  `chain` may be NULL. */
const struct image *image_chain_find(const struct image *chain,
                                     const struct image_id *id);

struct errmsg;

/* Refuse a target: when `id` (of the image `name` being opened) is the
 * same image as `source` or as an image of its backing chain, fill `err`
 * ("NAME and SOURCE are the same image" / "NAME is the backing file B of
 * SOURCE") and return -EINVAL; else return 0.  `source` NULL or an empty
 * `id`: 0. */
int image_id_check_distinct(const struct image_id *id, const char *name,
                            const struct image *source, struct errmsg *err);

#endif
