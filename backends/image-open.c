/* image-open.c — URL dispatch, format detection, name resolution.
 * See image-open.h. */
#include "image-open.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "protocols.h"
#include "qcow2.h"

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int image_open_protocol(struct loop *loop, const char *url,
                        const struct image_open_opts *opts,
                        struct image **out, struct errmsg *err)
{
    *out = NULL;
    if (!url || !*url) {
        errmsg_set(err, "empty image name");
        return -EINVAL;
    }
    if (has_prefix(url, "nfs://"))
        return nfs_image_open(loop, url, opts, out, err);
    if (has_prefix(url, "iscsi://"))
        return iscsi_image_open(loop, url, opts, out, err);
    if (strcmp(url, "null:") == 0 || has_prefix(url, "null:"))
        return null_image_open(loop, url, opts, out, err);
    if (has_prefix(url, "zero:"))
        return zero_image_open(loop, url, opts, out, err);
    const char *colon = strstr(url, "://");
    if (colon) {
        errmsg_set(err, "%s: unsupported URL scheme '%.*s' (use nfs://, "
                   "iscsi://, null:, zero:SIZE or a local path)",
                   url, (int)(colon - url), url);
        return -EINVAL;
    }
    return file_image_open(loop, url, opts, out, err);
}

enum image_name_kind image_name_kind(const char *url)
{
    if (has_prefix(url, "iscsi://") || has_prefix(url, "null:") ||
        has_prefix(url, "zero:"))
        return IMAGE_NAME_RAW;
    size_t len = strlen(url);
    if (has_prefix(url, "nfs://"))
        len = strcspn(url, "?");
    static const char qcow2[] = ".qcow2", raw[] = ".raw";
    if (len >= sizeof qcow2 - 1 &&
        strncasecmp(url + len - (sizeof qcow2 - 1), qcow2,
                    sizeof qcow2 - 1) == 0)
        return IMAGE_NAME_QCOW2;
    if (len >= sizeof raw - 1 &&
        strncasecmp(url + len - (sizeof raw - 1), raw, sizeof raw - 1) == 0)
        return IMAGE_NAME_RAW;
    return IMAGE_NAME_PROBE;
}

/* Does `img` start with the qcow2 magic?  Reads its first block. */
static int has_qcow2_magic(struct image *img, bool *magic, struct errmsg *err)
{
    *magic = false;
    if (img->size < 4)
        return 0;
    uint32_t bs = img->block_size ? img->block_size : 1;
    size_t len = bs < 512 ? 512 : bs;
    if (len > img->size)
        len = bs == 1 ? (size_t)img->size : 0;
    if (len == 0)
        return 0;
    uint8_t *buf = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
    if (!buf) {
        errmsg_set(err, "%s: out of memory", img->name);
        return -ENOMEM;
    }
    int r = image_read_sync(img, buf, 0, len);
    if (r < 0)
        errmsg_set(err, "%s: reading header at offset 0: %s%s%s", img->name,
                   strerror(-r), img->last_error.text[0] ? ": " : "",
                   img->last_error.text);
    else
        *magic = qcow2_probe(buf, len);
    free(buf);
    return r < 0 ? r : 0;
}

/* The format of `img` (opened from `url`) under IMAGE_FORMAT_AUTO: the
 * rule stated in image-open.h. */
static int auto_format(const char *url, struct image *img,
                       enum image_format *fmt, struct errmsg *err)
{
    *fmt = IMAGE_FORMAT_RAW;
    enum image_name_kind kind = image_name_kind(url);
    struct stat st;
    if (kind == IMAGE_NAME_RAW)
        return 0;
    if (!strstr(url, "://") && stat(url, &st) == 0 && S_ISBLK(st.st_mode))
        return 0;
    bool magic;
    int r = has_qcow2_magic(img, &magic, err);
    if (r < 0)
        return r;
    if (kind == IMAGE_NAME_QCOW2 && !magic) {
        errmsg_set(err, "%s: named *.qcow2 but has no qcow2 header; state "
                   "the format (--source-format raw, job key source-format "
                   "= raw)", url);
        return -EINVAL;
    }
    if (kind == IMAGE_NAME_PROBE && magic) {
        errmsg_set(err, "%s has a qcow2 header but is not named *.qcow2: "
                   "state the format (--source-format qcow2 or raw; job key "
                   "source-format)", url);
        return -EINVAL;
    }
    if (magic)
        *fmt = IMAGE_FORMAT_QCOW2;
    return 0;
}

int image_open(struct loop *loop, const char *url,
               const struct image_open_opts *opts, struct image **out,
               struct errmsg *err)
{
    struct image_open_opts o = *opts;
    enum image_format fmt = opts->format;
    bool create_qcow2 = opts->create && fmt == IMAGE_FORMAT_QCOW2;
    if (create_qcow2) {
        o.create_size = 0;      /* the qcow2 layer grows the file */
        o.growable = true;
    }
    struct image *proto;
    int r = image_open_protocol(loop, url, &o, &proto, err);
    if (r < 0)
        return r;
    if (create_qcow2)
        return qcow2_create(proto, opts->create_size, opts, out, err);
    if (fmt == IMAGE_FORMAT_AUTO && !opts->create) {
        r = auto_format(url, proto, &fmt, err);
        if (r < 0) {
            image_close(proto);
            return r;
        }
    }
    if (fmt == IMAGE_FORMAT_QCOW2)
        return qcow2_open(proto, opts, out, err);
    *out = proto;
    return 0;
}

char *image_resolve_relative(const char *base, const char *name)
{
    if (name[0] == '/' || strstr(name, "://") || has_prefix(name, "null:") ||
        has_prefix(name, "zero:")) {
        /* URLs stay as they are.  An absolute path named by an nfs://
         * image is taken on the same server (export paths are absolute
         * on the server too); for local images it is a local path. */
        if (name[0] == '/' && has_prefix(base, "nfs://")) {
            const char *host = strstr(base, "://");
            const char *slash = host ? strchr(host + 3, '/') : NULL;
            const char *query = strchr(base, '?');
            size_t hostlen = slash ? (size_t)(slash - base) : strlen(base);
            char *s;
            if (asprintf(&s, "%.*s%s%s", (int)hostlen, base, name,
                         query ? query : "") < 0)
                return NULL;
            return s;
        }
        return strdup(name);
    }
    const char *query = has_prefix(base, "nfs://") ? strchr(base, '?') : NULL;
    size_t baselen = query ? (size_t)(query - base) : strlen(base);
    const char *last = memrchr(base, '/', baselen);
    size_t dirlen = last ? (size_t)(last - base) + 1 : 0;
    char *s;
    if (asprintf(&s, "%.*s%s%s", (int)dirlen, base, name,
                 query ? query : "") < 0)
        return NULL;
    return s;
}

int image_format_parse(const char *s, bool allow_auto, enum image_format *out)
{
    if (allow_auto && strcmp(s, "auto") == 0)
        *out = IMAGE_FORMAT_AUTO;
    else if (strcmp(s, "raw") == 0)
        *out = IMAGE_FORMAT_RAW;
    else if (strcmp(s, "qcow2") == 0)
        *out = IMAGE_FORMAT_QCOW2;
    else
        return -EINVAL;
    return 0;
}

int image_parse_size(const char *s, uint64_t *out)
{
    if (!s)
        return -EINVAL;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    default: break;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}
