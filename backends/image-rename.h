/* image-rename.h — name operations on files imgfs creates: publish a
 * file under its final name, remove a leftover one.
 *
 * Targets that imgfs creates are written under a temporary name in the
 * directory of their final name and renamed when complete (see
 * copier/copy-open.h).  These helpers work on local files and nfs://
 * files; other URLs (iscsi://, null:, zero:) have no names to change and
 * get -EOPNOTSUPP.  They are synchronous: an NFS URL is mounted for the
 * call (nfs-mount.c) and released again.
 */
#ifndef IMGFS_IMAGE_RENAME_H
#define IMGFS_IMAGE_RENAME_H

#include <stdbool.h>

#include "errmsg.h"

/* Does `url` name a file (local path or nfs://) that these helpers, and
 * image_open_opts.create, can create, rename and remove? */
bool image_url_is_file(const char *url);

/* Rename the file `url` to `new_name` in the same directory (`new_name`
 * is a plain file name, no '/').  An existing file of that name is
 * replaced only when `replace`; else -EEXIST (local files: atomically, by
 * RENAME_NOREPLACE where the file system has it; NFSv3 has no such
 * operation: the name is looked up just before the rename).  Local files:
 * the directory is fsync'd after the rename, so the new name is durable.
 * Returns 0 or -errno with `err` naming both names. */
int image_rename_created(const char *url, const char *new_name, bool replace,
                         struct errmsg *err);

/* Remove the file `url` (the name itself: a symbolic link is removed, not
 * followed).  A missing file is success.  Returns 0 or -errno with `err`
 * set. */
int image_remove_created(const char *url, struct errmsg *err);

#endif
