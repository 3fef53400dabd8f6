/* backing-policy.c — resolve and confine backing-file names.
 * See backing-policy.h. */
#include "backing-policy.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

char *backing_normalize_path(const char *path, bool *escapes)
{
    *escapes = false;
    size_t len = strlen(path);
    bool absolute = path[0] == '/';
    char *out = malloc(len + 2);
    if (!out)
        return NULL;
    size_t o = 0;               /* out[0..o) is the result so far */
    size_t i = 0;
    if (absolute)
        out[o++] = '/';
    size_t base = o;            /* segments start here */
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        size_t n = i - start;
        if (n == 0 || (n == 1 && path[start] == '.'))
            continue;
        bool dotdot = n == 2 && path[start] == '.' && path[start + 1] == '.';
        /* A relative path keeps the ".." segments it starts with. */
        bool kept = !absolute && o >= base + 2 && out[o - 1] == '.' &&
                    out[o - 2] == '.' && (o == base + 2 || out[o - 3] == '/');
        if (dotdot && o == base && absolute) {
            *escapes = true;
            continue;
        }
        if (dotdot && o > base && !kept) {
            while (o > base && out[o - 1] != '/')
                o--;
            if (o > base)
                o--;            /* the '/' before the removed segment */
            continue;
        }
        if (o > base)
            out[o++] = '/';
        memcpy(out + o, path + start, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

bool backing_has_scheme(const char *name)
{
    if (strstr(name, "://"))
        return true;
    if (!isalpha((unsigned char)name[0]))
        return false;
    for (const char *p = name; *p; p++) {
        if (*p == ':')
            return true;
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' &&
            *p != '.')
            return false;
    }
    return false;
}

bool backing_path_inside(const char *path, const char *dir)
{
    if (dir[0] == '\0')
        return path[0] != '/';
    if (strcmp(dir, "/") == 0)
        return path[0] == '/';
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool backing_allowed(const char *name, const char *const *allow)
{
    for (size_t i = 0; allow && allow[i]; i++)
        if (allow[i][0] && starts_with(name, allow[i]))
            return true;
    return false;
}

/* The parts of "scheme://host/path?query": host = [*host, *path), path =
 * [*path, *query), query = [*query, end).  False when `url` has no
 * "://". */
struct url_parts {
    size_t host, path, query, end;
};

static bool url_split(const char *url, struct url_parts *u)
{
    const char *sep = strstr(url, "://");
    if (!sep)
        return false;
    u->end = strlen(url);
    u->host = (size_t)(sep - url) + 3;
    const char *q = strchr(url + u->host, '?');
    u->query = q ? (size_t)(q - url) : u->end;
    const char *slash = memchr(url + u->host, '/', u->query - u->host);
    u->path = slash ? (size_t)(slash - url) : u->query;
    return true;
}

/* "PREFIX" + normalize("DIR/NAME" or "NAME") + "SUFFIX". */
static char *join_normalized(const char *prefix, size_t prefix_len,
                             const char *dir, size_t dir_len,
                             const char *name, const char *suffix,
                             bool *escapes)
{
    char *joined;
    if (asprintf(&joined, "%.*s%s%s", (int)dir_len, dir,
                 dir_len ? "/" : "", name) < 0)
        return NULL;
    char *norm = backing_normalize_path(joined, escapes);
    free(joined);
    if (!norm)
        return NULL;
    char *s;
    if (asprintf(&s, "%.*s%s%s", (int)prefix_len, prefix, norm, suffix) < 0)
        s = NULL;
    free(norm);
    return s;
}

/* Length of the directory part of [path, path+len): up to, not
 * including, the last '/' ("" when none, "/" kept for "/x"). */
static size_t dir_len_of(const char *path, size_t len)
{
    const char *slash = memrchr(path, '/', len);
    if (!slash)
        return 0;
    return slash == path ? 1 : (size_t)(slash - path);
}

char *backing_resolve(const char *image, const char *stored, bool *escapes)
{
    *escapes = false;
    struct url_parts u;
    if (backing_has_scheme(stored)) {
        if (!url_split(stored, &u) || u.path == u.query)
            return strdup(stored);
        char *path = strndup(stored + u.path, u.query - u.path);
        if (!path)
            return NULL;
        char *s = join_normalized(stored, u.path, "", 0, path,
                                  stored + u.query, escapes);
        free(path);
        return s;
    }
    if (url_split(image, &u)) {
        const char *path = image + u.path;
        size_t plen = u.query - u.path;
        size_t dlen = stored[0] == '/' ? 0 : dir_len_of(path, plen);
        return join_normalized(image, u.path, path, dlen, stored,
                               image + u.query, escapes);
    }
    if (backing_has_scheme(image))  /* null:, zero: */
        return strdup(stored);
    size_t dlen = stored[0] == '/' ? 0 : dir_len_of(image, strlen(image));
    return join_normalized("", 0, image, dlen, stored, "", escapes);
}

char *backing_local_dir(const char *path)
{
    size_t dlen = dir_len_of(path, strlen(path));
    char *dir = strndup(path, dlen);
    if (!dir)
        return NULL;
    bool escapes;
    char *norm = backing_normalize_path(dir, &escapes);
    free(dir);
    return norm;
}

/* `path` made absolute against the current directory, normalized. */
static char *absolute_path(const char *path)
{
    char *joined;
    if (path[0] == '/') {
        joined = strdup(path);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (!cwd)
            return NULL;
        if (asprintf(&joined, "%s/%s", cwd, path) < 0)
            joined = NULL;
        free(cwd);
    }
    if (!joined)
        return NULL;
    bool escapes;
    char *norm = backing_normalize_path(joined, &escapes);
    free(joined);
    return norm;
}

#define ALLOW_HINT "(allow it with --allow-backing PREFIX)"

/* The refusal: "IMAGE: backing file 'STORED' REASON (allow ...)". */
static int refuse(struct errmsg *err, const char *image, const char *stored,
                  const char *reason)
{
    errmsg_set(err, "%s: backing file '%s' %s " ALLOW_HINT, image, stored,
               reason);
    return -EPERM;
}

static int check_nfs(const char *image, const char *stored,
                     const char *resolved, bool escapes, const char *root,
                     struct errmsg *err)
{
    char reason[400];
    if (backing_has_scheme(stored) && !starts_with(stored, "nfs://")) {
        size_t n = strcspn(stored, ":");
        snprintf(reason, sizeof reason, "names another protocol (%.*s:); "
                 "backing files of an NFS image stay on its export",
                 (int)(n > 20 ? 20 : n), stored);
        return refuse(err, image, stored, reason);
    }
    struct url_parts ui, ur;
    if (!url_split(image, &ui) || !url_split(resolved, &ur))
        return refuse(err, image, stored, "is not an NFS URL");
    size_t hi = ui.path - ui.host, hr = ur.path - ur.host;
    if (hi != hr || strncmp(image + ui.host, resolved + ur.host, hi) != 0 ||
        !starts_with(resolved, "nfs://")) {
        snprintf(reason, sizeof reason, "is on another NFS server (%.*s)",
                 (int)(hr > 100 ? 100 : hr), resolved + ur.host);
        return refuse(err, image, stored, reason);
    }
    if (strcmp(image + ui.query, resolved + ur.query) != 0)
        return refuse(err, image, stored, "reaches the server with other "
                      "options (the URL query differs)");
    char *path = strndup(resolved + ur.path, ur.query - ur.path);
    if (!path) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    bool inside = !escapes && backing_path_inside(path, root);
    free(path);
    if (!inside) {
        snprintf(reason, sizeof reason, "leaves the export %s", root);
        return refuse(err, image, stored, reason);
    }
    return 0;
}

static int check_local(const char *image, const char *stored,
                       const char *resolved, bool escapes, const char *root,
                       struct errmsg *err)
{
    char reason[400];
    const char *shown = root[0] ? root : ".";
    if (backing_has_scheme(stored)) {
        size_t n = strcspn(stored, ":");
        snprintf(reason, sizeof reason, "names a URL (%.*s:); backing files "
                 "of a local image are paths inside %s",
                 (int)(n > 20 ? 20 : n), stored, shown);
        return refuse(err, image, stored, reason);
    }
    char *abs_root = absolute_path(root);
    char *abs_name = absolute_path(resolved);
    bool inside = abs_root && abs_name && !escapes &&
                  backing_path_inside(abs_name, abs_root);
    bool nomem = !abs_root || !abs_name;
    free(abs_root);
    free(abs_name);
    if (nomem) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    snprintf(reason, sizeof reason, "leaves %s, the directory of the image "
             "the chain starts from", shown);
    if (!inside)
        return refuse(err, image, stored, reason);
    /* Symbolic links: the real file must be inside the real root too. */
    char *real_root = realpath(root[0] ? root : ".", NULL);
    char *real_name = realpath(resolved, NULL);
    int e = errno;
    bool ok = !real_root || (!real_name && e == ENOENT) ||
              (real_name && backing_path_inside(real_name, real_root));
    if (!ok && real_name)
        snprintf(reason, sizeof reason, "leads out of %s through a symbolic "
                 "link (to %.200s)", shown, real_name);
    else if (!ok)
        snprintf(reason, sizeof reason, "cannot be resolved (%s)",
                 strerror(e));
    free(real_root);
    free(real_name);
    return ok ? 0 : refuse(err, image, stored, reason);
}

int backing_check(const char *image, const char *stored,
                  const char *resolved, bool escapes, const char *root,
                  const char *const *allow, struct errmsg *err)
{
    if (backing_allowed(resolved, allow))
        return 0;
    if (starts_with(image, "nfs://"))
        return check_nfs(image, stored, resolved, escapes, root, err);
    if (strstr(image, "://") || backing_has_scheme(image)) {
        bool lun = starts_with(image, "iscsi://");
        return refuse(err, image, stored, lun ?
                      "is refused: a qcow2 image on a LUN may not name "
                      "backing files" :
                      "is refused: this image may not name backing files");
    }
    if (!backing_has_scheme(stored) && !escapes) {
        char *abs_name = absolute_path(resolved);
        bool allowed = abs_name && backing_allowed(abs_name, allow);
        free(abs_name);
        if (allowed)
            return 0;
    }
    return check_local(image, stored, resolved, escapes, root, err);
}
