/* qcow2-open.c — qcow2_probe, qcow2_open (header, L1, backing chain
 * unless no_backing), the image vtable, close, and the backing name
 * accessors. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backing-policy.h"
#include "qcow2-internal.h"

/* The chain being opened on this thread (backing files are opened from
 * inside qcow2_open through image_open), for depth and loop checks. */
static __thread unsigned chain_depth;
static __thread const char *chain_names[QCOW2_MAX_CHAIN_DEPTH + 1];
/* The protocol image of each level being opened (identity loop check;
 * [0] is the chain's top, whose directory confines local backing files). */
static __thread const struct image *chain_protos[QCOW2_MAX_CHAIN_DEPTH + 1];
/* A backing file was refused by the confinement; the message names the
 * image that stores it (level chain_refused_depth) and is passed up. */
static __thread bool chain_refused;
static __thread unsigned chain_refused_depth;
/* Opening the backing chain of a new qcow2 target (qcow2_create): the
 * names were given by the operator (--keep-backing records the source's,
 * whose chain was vetted when the source was opened), so they are not
 * confined again here. */
static __thread bool chain_vetted;

bool qcow2_probe(const uint8_t *hdr, size_t len)
{
    return len >= 4 && qcow2_be32(hdr) == QCOW2_MAGIC;
}

static const struct image_ops qcow2_ops;

void qcow2_set_geometry(struct qcow2_state *s)
{
    s->cluster_bits = s->h.cluster_bits;
    s->cluster_size = 1ull << s->cluster_bits;
    s->l2_entry_bytes = s->h.extended_l2 ? 16 : 8;
    s->l2_entries = s->cluster_size / s->l2_entry_bytes;
}

void qcow2_state_free(struct qcow2_state *s)
{
    if (!s)
        return;
    qcow2_l2cache_free(s);
    free(s->l1);
    free(s->zbuf);
    free(s);
}

struct image *qcow2_image_new(struct qcow2_state *s, const char *name)
{
    struct image *img = image_alloc(&qcow2_ops, s->proto->loop, name);
    if (!img)
        return NULL;
    s->img = img;
    img->priv = s;
    /* The layer is its protocol image; the backing image stays owned by
     * `s` (closed with it), the shell only points at it for chain walks. */
    img->id = s->proto->id;
    img->backing = s->backing;
    img->size = s->h.size;
    img->block_size = 1;
    img->max_request = 0;
    img->read_only = true;
    s->zbuf_offset = UINT64_MAX;
    s->zbuf = malloc(s->cluster_size);
    if (!s->zbuf || qcow2_l2cache_init(s) < 0) {
        image_free_shell(img);
        s->img = NULL;
        return NULL;
    }
    return img;
}

static int close_image(struct image *img)
{
    struct qcow2_state *s = img->priv;
    int r = 0;
    if (s->w)
        r = qcow2_writer_close(s);
    if (s->backing)
        image_close(s->backing);
    /* image_close frees the protocol image, its name and last_error
     * included: keep the name, and say why by the errno alone. */
    char *proto_name = strdup(s->proto->name);
    int r2 = image_close(s->proto);
    s->proto = NULL;
    if (!r && r2) {
        r = r2;
        image_set_error(img, "closing %s: %s",
                        proto_name ? proto_name : "the qcow2 file",
                        strerror(-r2));
    }
    free(proto_name);
    qcow2_state_free(s);
    image_free_shell(img);
    return r;
}

static void read_only_write(struct image *img, const void *buf,
                            uint64_t offset, size_t len, image_io_cb cb,
                            void *opaque)
{
    struct qcow2_state *s = img->priv;
    if (s->w) {
        qcow2_write(img, buf, offset, len, cb, opaque);
        return;
    }
    image_set_error(img, "qcow2 image opened read-only");
    qcow2_complete(s, cb, opaque, -EROFS);
}

static void read_only_zeroes(struct image *img, uint64_t offset, uint64_t len,
                             unsigned flags, image_io_cb cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    if (s->w) {
        qcow2_write_zeroes(img, offset, len, flags, cb, opaque);
        return;
    }
    image_set_error(img, "qcow2 image opened read-only");
    qcow2_complete(s, cb, opaque, -EROFS);
}

static void flush_image(struct image *img, image_io_cb cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    if (s->w) {
        qcow2_flush(img, cb, opaque);
        return;
    }
    qcow2_complete(s, cb, opaque, 0);
}

static const struct image_ops qcow2_ops = {
    .name = "qcow2",
    .read = qcow2_read,
    .write = read_only_write,
    .write_zeroes = read_only_zeroes,
    .flush = flush_image,
    .block_status = qcow2_block_status,
    .close = close_image,
};

const char *qcow2_backing_name(const struct image *img)
{
    if (!img || img->ops != &qcow2_ops)
        return NULL;
    const struct qcow2_state *s = img->priv;
    return s->h.backing_name[0] ? s->h.backing_name : NULL;
}

const char *qcow2_backing_format(const struct image *img)
{
    if (!qcow2_backing_name(img))
        return NULL;
    const struct qcow2_state *s = img->priv;
    return s->h.backing_format;
}

/* Is `img` (just opened as a backing file of the image at chain level
 * `depth`, or its own backing chain) an image already in the chain?  By
 * identity (image-id.h), whatever names led there. */
static const struct image *chain_has(const struct image *img, unsigned depth)
{
    for (unsigned i = 0; i <= depth && i <= QCOW2_MAX_CHAIN_DEPTH; i++) {
        const struct image *p = chain_protos[i];
        if (p && !image_id_empty(&p->id) && image_chain_find(img, &p->id))
            return p;
    }
    return NULL;
}

/* Resolve s->h.backing_name against s->proto->name and apply the
 * backing-file confinement (backing-policy.h) with `allow`.  Returns the
 * resolved name (malloc'd) or NULL with `err` set and *r = -errno. */
static char *confined_backing_name(struct qcow2_state *s,
                                   const char *const *allow, int *r,
                                   struct errmsg *err)
{
    const char *base = s->proto->name;
    const char *stored = s->h.backing_name;
    bool escapes;
    char *name = backing_resolve(base, stored, &escapes);
    char *root = NULL;
    *r = -ENOMEM;
    if (!name) {
        errmsg_set(err, "out of memory");
        return NULL;
    }
    *r = 0;
    if (chain_vetted)
        return name;
    if (!backing_allowed(name, allow)) {
        if (strncmp(base, "nfs://", 6) == 0) {
            *r = backing_nfs_export(base, &root, err);
            if (*r < 0)
                errmsg_prefix(err, "finding the export of %s", base);
        } else if (!strstr(base, "://")) {
            const struct image *top = chain_protos[0] ? chain_protos[0]
                                                      : s->proto;
            root = backing_local_dir(top->name);
            if (!root) {
                *r = -ENOMEM;
                errmsg_set(err, "out of memory");
            }
        }
    }
    if (*r == 0)
        *r = backing_check(base, stored, name, escapes, root ? root : "",
                           allow, err);
    free(root);
    if (*r < 0) {
        if (*r == -EPERM && !chain_refused) {
            chain_refused = true;
            chain_refused_depth = chain_depth;
        }
        free(name);
        return NULL;
    }
    return name;
}

/* qcow2_open_backing with the user's allowed prefixes, which are passed
 * on to every level of the chain. */
static int open_backing_allow(struct qcow2_state *s,
                              const char *const *allow, struct errmsg *err)
{
    const char *base = s->proto->name;
    int r;
    char *name = confined_backing_name(s, allow, &r, err);
    if (!name)
        return r;
    for (unsigned i = 0; i <= chain_depth && i < QCOW2_MAX_CHAIN_DEPTH; i++) {
        if (chain_names[i] && strcmp(chain_names[i], name) == 0) {
            errmsg_set(err, "backing chain loop: %s names %s, which is "
                       "already in the chain", base, name);
            free(name);
            return -ELOOP;
        }
    }
    if (chain_depth + 1 >= QCOW2_MAX_CHAIN_DEPTH) {
        errmsg_set(err, "backing chain deeper than %d images at %s",
                   QCOW2_MAX_CHAIN_DEPTH, name);
        free(name);
        return -ELOOP;
    }
    struct image_open_opts o = { .allow_backing = allow };
    if (strcmp(s->h.backing_format, "raw") == 0)
        o.format = IMAGE_FORMAT_RAW;
    else if (strcmp(s->h.backing_format, "qcow2") == 0)
        o.format = IMAGE_FORMAT_QCOW2;
    else if (s->h.backing_format[0]) {
        errmsg_set(err, "unsupported backing file format '%s' for %s",
                   s->h.backing_format, name);
        free(name);
        return -ENOTSUP;
    }
    const struct image *saved_proto = chain_protos[chain_depth];
    chain_protos[chain_depth] = s->proto;
    chain_depth++;
    chain_names[chain_depth] = name;
    struct errmsg berr;
    errmsg_clear(&berr);
    r = image_open(s->proto->loop, name, &o, &s->backing, &berr);
    chain_names[chain_depth] = NULL;
    chain_protos[chain_depth] = NULL;
    chain_depth--;
    const struct image *again = r == 0 ? chain_has(s->backing, chain_depth)
                                       : NULL;
    chain_protos[chain_depth] = saved_proto;
    if (again) {
        errmsg_set(err, "backing chain loop: %s names %s, which is "
                   "already in the chain (as %s)", base, name, again->name);
        image_close(s->backing);
        s->backing = NULL;
        free(name);
        return -ELOOP;
    }
    if (r < 0) {
        if (r == -ELOOP || chain_refused)
            errmsg_set(err, "%s", berr.text);
        else
            errmsg_set(err, "opening backing file %s: %s", name, berr.text);
        free(name);
        return r;
    }
    free(name);
    return 0;
}

int qcow2_open_backing(struct qcow2_state *s, struct errmsg *err)
{
    if (chain_depth == 0)
        chain_refused = false;
    bool outer = chain_vetted;
    chain_vetted = true;
    int r = open_backing_allow(s, NULL, err);
    chain_vetted = outer;
    return r;
}

/* A source opened with no_backing (keep-backing) is a chain all the same:
 * its backing names are confined now, before any target records and opens
 * them.  The chain is opened to read the deeper names and closed again; a
 * backing file that cannot be opened is not an error here (the layer is
 * read without it), a refused name or a loop is. */
static int vet_backing_chain(struct qcow2_state *s,
                             const char *const *allow, struct errmsg *err)
{
    chain_names[0] = s->proto->name;
    chain_protos[0] = s->proto;
    chain_refused = false;
    int r = open_backing_allow(s, allow, err);
    chain_names[0] = NULL;
    chain_protos[0] = NULL;
    if (s->backing) {
        image_close(s->backing);
        s->backing = NULL;
    }
    if (r < 0 && r != -ELOOP && !chain_refused) {
        errmsg_clear(err);
        r = 0;
    }
    return r;
}

/* Synchronous read of [off, off+len) for open-time metadata, aligned to
 * the protocol block size through a bounce buffer when needed. */
static int read_sync_aligned(struct image *p, uint8_t *buf, uint64_t off,
                             size_t len)
{
    uint64_t bs = p->block_size ? p->block_size : 1;
    uint64_t a = off / bs * bs;
    uint64_t e = (off + len + bs - 1) / bs * bs;
    if (e > p->size)
        e = p->size;
    if (a == off && e == off + len)
        return image_read_sync(p, buf, off, len);
    size_t blen = (size_t)(e - a);
    uint8_t *b = aligned_alloc(4096, (blen + 4095) / 4096 * 4096);
    if (!b)
        return -ENOMEM;
    int r = image_read_sync(p, b, a, blen);
    if (r == 0)
        memcpy(buf, b + (off - a), len);
    free(b);
    return r;
}

static int load_l1(struct qcow2_state *s, struct errmsg *err)
{
    uint64_t n = qcow2_l1_entries_needed(s->h.size, s->cluster_bits,
                                         s->h.extended_l2);
    s->l1_entries = n;
    s->l1 = calloc(n ? n : 1, sizeof *s->l1);
    if (!s->l1) {
        errmsg_set(err, "out of memory for the L1 table (%" PRIu64
                   " entries)", n);
        return -ENOMEM;
    }
    if (!n)
        return 0;
    uint8_t *raw = malloc(n * 8);
    if (!raw) {
        errmsg_set(err, "out of memory for the L1 table");
        return -ENOMEM;
    }
    int r = read_sync_aligned(s->proto, raw, s->h.l1_offset, n * 8);
    if (r < 0) {
        errmsg_set(err, "reading the L1 table at 0x%" PRIx64 ": %s",
                   s->h.l1_offset, s->proto->last_error.text);
    } else {
        for (uint64_t i = 0; i < n; i++)
            s->l1[i] = qcow2_be64(raw + i * 8);
    }
    free(raw);
    return r;
}

/* Read the first `len` bytes of the protocol image. */
static int read_head(struct image *proto, uint8_t *buf, size_t len,
                     struct errmsg *err)
{
    int r = read_sync_aligned(proto, buf, 0, len);
    if (r < 0)
        errmsg_set(err, "reading the header: %s", proto->last_error.text);
    return r;
}

int qcow2_open(struct image *proto, const struct image_open_opts *opts,
               struct image **out, struct errmsg *err)
{
    *out = NULL;
    struct qcow2_state *s = calloc(1, sizeof *s);
    uint8_t *hbuf = NULL;
    int r = -ENOMEM;
    if (!s) {
        errmsg_set(err, "out of memory");
        goto fail;
    }
    s->proto = proto;
    s->file_size = proto->size;
    if (chain_depth == 0)
        chain_refused = false;
    if (opts->write) {
        errmsg_set(err, "writing into an existing qcow2 image is not "
                   "supported (create a new one)");
        r = -ENOTSUP;
        goto fail;
    }
    size_t first = proto->size < 512 ? (size_t)proto->size : 512;
    uint8_t small[512];
    r = read_head(proto, small, first, err);
    if (r < 0)
        goto fail;
    r = qcow2_header_cluster_bits(small, first, err);
    if (r < 0)
        goto fail;
    uint64_t cs = 1ull << r;
    size_t hlen = proto->size < cs ? (size_t)proto->size : (size_t)cs;
    hbuf = malloc(hlen);
    if (!hbuf) {
        r = -ENOMEM;
        errmsg_set(err, "out of memory");
        goto fail;
    }
    r = read_head(proto, hbuf, hlen, err);
    if (r < 0)
        goto fail;
    r = qcow2_header_parse(hbuf, hlen, proto->size, &s->h, err);
    if (r < 0)
        goto fail;
    qcow2_set_geometry(s);
    r = load_l1(s, err);
    if (r < 0)
        goto fail;
    if (chain_depth > 0) {
        for (unsigned i = 0; i < chain_depth; i++) {
            const struct image *p = chain_protos[i];
            if (p && image_id_same(&p->id, &proto->id)) {
                errmsg_set(err, "backing chain loop: %s is already in the "
                           "chain (as %s)", proto->name, p->name);
                r = -ELOOP;
                goto fail;
            }
        }
    }
    if (s->h.backing_name[0] && opts->no_backing && chain_depth == 0 &&
        !chain_vetted) {
        r = vet_backing_chain(s, opts->allow_backing, err);
        if (r < 0)
            goto fail;
    }
    if (s->h.backing_name[0] && !opts->no_backing) {
        if (chain_depth == 0) {
            chain_names[0] = proto->name;
            chain_protos[0] = proto;
            chain_refused = false;
        }
        r = open_backing_allow(s, opts->allow_backing, err);
        if (chain_depth == 0) {
            chain_names[0] = NULL;
            chain_protos[0] = NULL;
        }
        if (r < 0)
            goto fail;
    }
    struct image *img = qcow2_image_new(s, proto->name);
    if (!img) {
        r = -ENOMEM;
        errmsg_set(err, "out of memory");
        goto fail;
    }
    free(hbuf);
    *out = img;
    return 0;
fail:
    /* Loop errors: name the top once.  Refusals name their image already;
     * the top adds its name when the refusal came from deeper. */
    if (chain_refused) {
        if (chain_depth == 0 && chain_refused_depth > 0)
            errmsg_prefix(err, "%s", proto->name);
    } else if (r != -ELOOP || chain_depth == 0) {
        errmsg_prefix(err, "%s", proto->name);
    }
    if (chain_depth == 0)
        chain_refused = false;
    free(hbuf);
    if (s && s->backing)
        image_close(s->backing);
    qcow2_state_free(s);
    image_close(proto);
    return r;
}
