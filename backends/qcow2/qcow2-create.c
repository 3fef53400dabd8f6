/* qcow2-create.c — qcow2_create: lay out a new, empty v3 image and return
 * it opened for writing.
 *
 * Layout: cluster 0 the header (dirty bit set, see qcow2-writer.h), then
 * the refcount table, then the L1 table; everything else (L2 tables, data,
 * compressed data, refcount blocks) is appended as the image is written.
 * The refcount table is sized up front for the worst case (every guest
 * cluster written twice plus all metadata), so it never moves. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-writer.h"

#define DEFAULT_CLUSTER_SIZE (64u * 1024u)
#define COMPRESS_WORKERS 2

static int write_zero_region(struct image *proto, uint64_t off, uint64_t len,
                             struct errmsg *err)
{
    size_t chunk = 1u << 20;
    uint8_t *z = calloc(1, chunk);
    if (!z) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    int r = 0;
    while (len && r == 0) {
        size_t n = len < chunk ? (size_t)len : chunk;
        r = image_write_sync(proto, z, off, n);
        off += n;
        len -= n;
    }
    free(z);
    if (r < 0)
        errmsg_set(err, "writing the new qcow2 metadata: %s",
                   proto->last_error.text);
    return r;
}

/* Where a new image's metadata goes: cluster size, L1 and refcount table
 * sizes. */
struct layout {
    uint64_t cs;                /* cluster size */
    unsigned cb;                /* cluster bits */
    uint64_t l1_entries, l1_clusters;
    uint64_t rt_clusters;       /* refcount table */
};

/* Plan the layout of an image of `virtual_size` on `proto` with the
 * cluster size of `opts` (default 64 KiB), the refcount table sized for
 * the worst case.  0, or -EINVAL / -ENOTSUP with `err` set (bad cluster
 * size, block device protocol, tables over their limits). */
static int plan_layout(const struct image *proto, uint64_t virtual_size,
                       const struct image_open_opts *opts, struct layout *l,
                       struct errmsg *err)
{
    uint64_t cs = opts->cluster_size ? opts->cluster_size
                                     : DEFAULT_CLUSTER_SIZE;
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
        errmsg_set(err, "invalid qcow2 cluster size %" PRIu64 " (a power "
                   "of two from 512 to 2M)", cs);
        return -EINVAL;
    }
    if (proto->block_size > 1) {
        errmsg_set(err, "qcow2 targets need a byte-addressable protocol "
                   "(a file or NFS), not one with %" PRIu32 "-byte blocks",
                   proto->block_size);
        return -ENOTSUP;
    }
    unsigned cb = (unsigned)__builtin_ctzll(cs);
    if (virtual_size > (1ull << 56)) {
        errmsg_set(err, "virtual size %" PRIu64 " too large", virtual_size);
        return -EINVAL;
    }
    uint64_t l1_entries = qcow2_l1_entries_needed(virtual_size, cb, false);
    if (l1_entries * 8 > QCOW2_MAX_L1_BYTES) {
        errmsg_set(err, "virtual size %" PRIu64 " needs an L1 table larger "
                   "than 32 MiB; use a larger cluster size", virtual_size);
        return -EINVAL;
    }
    uint64_t data_clusters = (virtual_size + cs - 1) / cs;
    uint64_t l1_clusters = (l1_entries * 8 + cs - 1) / cs;   /* 0 if empty */
    uint64_t epb = cs / 2;
    uint64_t base = 1 + l1_clusters + l1_entries + 2 * data_clusters + 64;
    uint64_t rt_clusters = 1, blocks = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t total = base + rt_clusters + blocks;
        blocks = (total + epb - 1) / epb + 1;
        rt_clusters = (blocks * 8 + cs - 1) / cs;
    }
    if (rt_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        errmsg_set(err, "virtual size %" PRIu64 " needs a refcount table "
                   "larger than 8 MiB; use a larger cluster size",
                   virtual_size);
        return -EINVAL;
    }
    *l = (struct layout){ .cs = cs, .cb = cb, .l1_entries = l1_entries,
                          .l1_clusters = l1_clusters,
                          .rt_clusters = rt_clusters };
    return 0;
}

/* Fill the header of `s` for layout `l` and the backing file of `opts`
 * (names checked for length), allocate the in-memory L1 table and the
 * writer `w`'s refcount tables, start compression threads if asked, and
 * open the backing file.  0, or -errno with `err` set; what was allocated
 * stays in `s` and `w` for the caller to free. */
static int init_state(struct qcow2_state *s, struct qcow2_writer *w,
                      uint64_t virtual_size,
                      const struct image_open_opts *opts,
                      const struct layout *l, struct errmsg *err)
{
    struct qcow2_header *h = &s->h;
    h->version = 3;
    h->cluster_bits = l->cb;
    h->size = virtual_size;
    h->l1_size = (uint32_t)l->l1_entries;
    h->reftable_offset = l->cs;
    h->reftable_clusters = (uint32_t)l->rt_clusters;
    h->l1_offset = l->cs * (1 + l->rt_clusters);
    h->refcount_order = 4;
    h->header_length = 112;
    if (opts->backing) {
        if (strlen(opts->backing) > QCOW2_MAX_BACKING_NAME) {
            errmsg_set(err, "backing file name too long");
            return -EINVAL;
        }
        strcpy(h->backing_name, opts->backing);
        if (opts->backing_format) {
            if (strlen(opts->backing_format) >= sizeof h->backing_format) {
                errmsg_set(err, "backing format name too long");
                return -EINVAL;
            }
            strcpy(h->backing_format, opts->backing_format);
        }
    }
    qcow2_set_geometry(s);
    s->l1_entries = l->l1_entries;
    s->l1 = calloc(l->l1_entries ? l->l1_entries : 1, sizeof *s->l1);
    w->reftable_entries = l->rt_clusters * l->cs / 8;
    w->refblocks = calloc(w->reftable_entries, sizeof *w->refblocks);
    w->zeroes = calloc(1, l->cs);
    w->rc_dirty_from = UINT64_MAX;
    w->compress = opts->compress;
    if (!s->l1 || !w->refblocks || !w->zeroes) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    if (w->compress) {
        w->workers = qcow2_workers_new(COMPRESS_WORKERS);
        if (!w->workers) {
            errmsg_set(err, "cannot start compression threads");
            return -ENOMEM;
        }
    }
    if (h->backing_name[0]) {
        int r = qcow2_open_backing(s, err);
        if (r < 0) {
            errmsg_prefix(err, "the backing file is needed to fill "
                          "partially written clusters");
            return r;
        }
    }
    return 0;
}

/* Allocate the metadata clusters of `img` (header, refcount table, L1)
 * and write them to its protocol image: the tables zeroed, the header
 * with the dirty bit set.  0, or -errno with `err` set. */
static int write_initial_metadata(struct qcow2_state *s, struct image *img,
                                  const struct layout *l, struct errmsg *err)
{
    struct qcow2_writer *w = s->w;
    struct image *proto = s->proto;
    uint64_t cs = l->cs;
    /* The first allocation is at offset 0: check the error instead. */
    qcow2_alloc_clusters(s, 1 + l->rt_clusters + l->l1_clusters, 1);
    if (w->err) {
        errmsg_set(err, "%s", img->last_error.text);
        return w->err;
    }
    s->file_size = w->alloc_end;
    int r = write_zero_region(proto, cs,
                              (l->rt_clusters + l->l1_clusters) * cs, err);
    if (r < 0)
        return r;
    uint8_t *hbuf = calloc(1, cs);
    if (!hbuf) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    struct qcow2_header hd = s->h;
    hd.incompat |= QCOW2_INCOMPAT_DIRTY;
    r = qcow2_header_encode(&hd, hbuf, cs);
    if (r < 0)
        errmsg_set(err, "backing file name does not fit in the header "
                   "cluster");
    else if ((r = image_write_sync(proto, hbuf, 0, cs)) < 0)
        errmsg_set(err, "writing the qcow2 header: %s",
                   proto->last_error.text);
    free(hbuf);
    return r;
}

/* Free a writer that was never committed (NULL is fine). */
static void writer_free(struct qcow2_writer *w)
{
    if (!w)
        return;
    qcow2_workers_free(w->workers);
    free(w->rc);
    free(w->refblocks);
    free(w->zeroes);
    free(w);
}

int qcow2_create(struct image *proto, uint64_t virtual_size,
                 const struct image_open_opts *opts, struct image **out,
                 struct errmsg *err)
{
    *out = NULL;
    struct qcow2_state *s = NULL;
    struct qcow2_writer *w = NULL;
    struct layout l;
    int r = plan_layout(proto, virtual_size, opts, &l, err);
    if (r < 0)
        goto fail;
    s = calloc(1, sizeof *s);
    w = s ? calloc(1, sizeof *w) : NULL;
    if (!w) {
        r = -ENOMEM;
        errmsg_set(err, "out of memory");
        goto fail;
    }
    s->proto = proto;
    s->w = w;
    r = init_state(s, w, virtual_size, opts, &l, err);
    if (r < 0)
        goto fail;
    struct image *img = qcow2_image_new(s, proto->name);
    if (!img) {
        r = -ENOMEM;
        errmsg_set(err, "out of memory");
        goto fail;
    }
    img->read_only = false;
    img->reads_as_zero = s->backing == NULL;
    img->can_unmap = true;
    r = write_initial_metadata(s, img, &l, err);
    if (r < 0) {
        errmsg_prefix(err, "%s", proto->name);
        /* Drop the writer without committing. */
        writer_free(w);
        s->w = NULL;
        image_close(img);
        return r;
    }
    w->header_clean_on_disk = false;
    w->meta_changed = true;
    w->l1_dirty = true;
    *out = img;
    return 0;
fail:
    errmsg_prefix(err, "%s", proto->name);
    writer_free(w);
    if (s) {
        if (s->backing)
            image_close(s->backing);
        s->w = NULL;
        qcow2_state_free(s);
    }
    image_close(proto);
    return r;
}
