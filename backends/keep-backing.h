/* keep-backing.h — the backing name a keep-backing copy records in its
 * qcow2 target (shared by `imgfs copy --keep-backing` and jobs with
 * `backing = keep` in a mount).
 *
 * A keep-backing copy opens the source with image_open_opts.no_backing,
 * copies with copy_options.skip_backing, and creates a qcow2 target
 * (image_open_opts.backing / .backing_format) from what keep_backing_name
 * returns, so the target reads the source's backing file where the copied
 * layer has no data.
 */
#ifndef IMGFS_KEEP_BACKING_H
#define IMGFS_KEEP_BACKING_H

#include "errmsg.h"
#include "image.h"

/* The backing name for a target at `target` (URL or local path) copied
 * from `source` (its URL or path), `src` being the source opened with
 * no_backing.  Rule: the source's stored name when it is relative and
 * resolves, from `target`, to the same image as from `source` (e.g. the
 * target sits in the source's directory); otherwise the name resolved
 * against `source`: a URL, or an absolute local path.  Local paths are the
 * same image when stat() says so, URLs when the strings are equal.
 * Returns 0 with *name malloc'd and *format the source's backing format
 * ("raw", "qcow2"; NULL when the source gives none; valid while `src` is
 * open), or -errno with `err` set (source not qcow2, no backing file,
 * target is the backing file itself, backing file not found, ENOMEM);
 * the messages name no option, callers prefix their own. */
int keep_backing_name(const char *source, const char *target,
                      struct image *src, char **name, const char **format,
                      struct errmsg *err);

#endif
