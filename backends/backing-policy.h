/* backing-policy.h — where a qcow2 image's backing file may be opened from.
 *
 * A backing-file name is written into an image by whoever made it, not by
 * the operator, so it is confined (the rules are stated in image-open.h,
 * "Backing files"):
 *   - NFS images: the same server (URL host and query string) and the
 *     same export; relative names from the image's own directory,
 *     absolute names are paths on that server;
 *   - local images: inside `root`, the directory of the chain's top image;
 *   - images on a LUN, null:, zero:: no backing file at all;
 *   - names carrying a URL scheme: only nfs:// on the same server/export.
 * A name whose resolved, normalized form starts with one of the prefixes
 * the user allowed (--allow-backing) is opened wherever it is.
 *
 * These functions only look at strings (plus realpath() for local files);
 * finding an NFS image's export needs the server and is done by the
 * caller (backing_nfs_export).
 */
#ifndef IMGFS_BACKING_POLICY_H
#define IMGFS_BACKING_POLICY_H

#include <stdbool.h>

#include "errmsg.h"

/* Normalize a path lexically: "//" becomes "/", "." segments go, ".."
 * removes the segment before it; a trailing "/" is dropped (except for
 * "/").  Absolute paths stay absolute, relative ones relative ("" for
 * an empty result) and keep the ".." segments they start with
 * ("a/../../b" → "../b").  *escapes is set when a ".." of an absolute
 * path climbed above "/" ("/../etc" → "/etc").  Returns a malloc'd
 * string, or NULL on ENOMEM. */
char *backing_normalize_path(const char *path, bool *escapes);

/* True when `name` carries a URL scheme: it contains "://" or starts
 * with letters/digits/"+-." followed by ':' (file:, null:, zero:...). */
bool backing_has_scheme(const char *name);

/* True when `path` is `dir` itself or lies below it ("/a/b" is below "/a"
 * and "/", not below "/ab").  Both must be normalized; `dir` "" (the
 * current directory) contains every relative path. */
bool backing_path_inside(const char *path, const char *dir);

/* True when `name` starts with one of the NULL-terminated `allow`
 * prefixes (`allow` may be NULL). */
bool backing_allowed(const char *name, const char *const *allow);

/* Resolve `stored` (as written in the image) against `image`, the URL or
 * path of the image that stores it, and normalize the result:
 *   - a name with a scheme: as it is, the path of a "scheme://host/path"
 *     URL normalized;
 *   - nfs:// images: "nfs://HOST" + (absolute name, or the image's
 *     directory + name), normalized, + the image's "?query";
 *   - other URLs (iscsi://...): the image's directory + name, normalized;
 *   - local images: the image's directory + name (relative stays
 *     relative), normalized.
 * *escapes is set when a ".." climbed above "/" (or above the start of a
 * relative local path).  Returns a malloc'd string or NULL on ENOMEM. */
char *backing_resolve(const char *image, const char *stored, bool *escapes);

/* Decide whether `resolved` (backing_resolve of `stored` against `image`)
 * may be opened.  `root`: for an nfs:// image, the export path the image
 * lives in (e.g. "/vol"); for a local image, the directory of the chain's
 * top image ("" for the current directory); ignored otherwise.  Allowed
 * prefixes win over every rule.  Local names are also checked after
 * resolving symbolic links (realpath), so a link inside `root` cannot lead
 * out of it; a name that does not exist is left to the open to report.
 * Returns 0, or -EPERM with `err` naming the image, the stored name, the
 * rule broken and the --allow-backing way out; -ENOMEM. */
int backing_check(const char *image, const char *stored,
                  const char *resolved, bool escapes, const char *root,
                  const char *const *allow, struct errmsg *err);

/* The directory part of local path `path` ("" when it has no '/', "/"
 * for "/x"), normalized.  Returns a malloc'd string or NULL on ENOMEM. */
char *backing_local_dir(const char *path);

/* The export an nfs:// URL's file lives in ("/vol" for
 * nfs://h/vol/dir/f when /vol is what the server exports), found by
 * mounting as the NFS backend does.  Returns 0 and a malloc'd *export,
 * or -errno with `err` saying why. */
int backing_nfs_export(const char *url, char **export, struct errmsg *err);

#endif
