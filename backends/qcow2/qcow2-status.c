/* qcow2-status.c — block_status from L1/L2 entries and the backing chain.
 *
 * Types: data and compressed clusters → EXTENT_DATA; zero clusters and
 * zero subclusters → EXTENT_ZERO; unallocated → whatever the backing
 * reports for that range (EXTENT_HOLE where the backing is unallocated
 * too, or past its end), EXTENT_HOLE without a backing, EXTENT_BACKING
 * when the header names a backing file that was not opened (no_backing).
 * So a copy never reads a cluster that reads as zeroes.
 *
 * One answer covers the L2 tables that are already cached (at most
 * MAX_EXTENTS extents); an unallocated run is answered on its own with the
 * backing's extents.  Callers ask again for the rest. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-internal.h"

#define MAX_EXTENTS IMAGE_MAX_EXTENTS

struct bs {
    struct qcow2_state *s;
    uint64_t start, end, cursor;
    image_extents_cb cb;
    void *opaque;
    struct qcow2_l2_waiter w;
    struct extent ext[MAX_EXTENTS + 1];
    size_t n;
    uint64_t unalloc_end;   /* end of an unallocated run to ask the backing */
};

static void answer(struct bs *b, int err)
{
    image_extents_cb cb = b->cb;
    void *op = b->opaque;
    struct bs copy = *b;
    free(b);
    cb(op, err, err ? NULL : copy.ext, err ? 0 : copy.n);
}

static void add(struct bs *b, uint64_t off, uint64_t len, enum extent_type t)
{
    if (b->n && b->ext[b->n - 1].type == t &&
        b->ext[b->n - 1].offset + b->ext[b->n - 1].length == off) {
        b->ext[b->n - 1].length += len;
        return;
    }
    b->ext[b->n++] = (struct extent){ off, len, t };
}

static void backing_done(void *opaque, int err, const struct extent *ext,
                         size_t n)
{
    struct bs *b = opaque;
    struct qcow2_state *s = b->s;
    if (err) {
        if (s->backing->last_error.text[0])
            image_set_error(s->img, "%s", s->backing->last_error.text);
        answer(b, err);
        return;
    }
    uint64_t pos = b->cursor;
    for (size_t i = 0; i < n && b->n < MAX_EXTENTS; i++) {
        if (ext[i].offset != pos || ext[i].length == 0)
            break;
        uint64_t len = ext[i].length;
        if (len > b->unalloc_end - pos)
            len = b->unalloc_end - pos;
        add(b, pos, len, ext[i].type);
        pos += len;
        if (pos >= b->unalloc_end)
            break;
    }
    /* Past the backing's end the run reads as a hole: one more extent,
     * unless the answer is full (then the next question starts there). */
    if (pos >= s->backing->size && pos < b->unalloc_end &&
        (b->n < MAX_EXTENTS || b->ext[b->n - 1].type == EXTENT_HOLE))
        add(b, pos, b->unalloc_end - pos, EXTENT_HOLE);
    if (b->n == 0) {
        image_set_error(s->img, "backing file answered block status with "
                        "no extent at offset %" PRIu64, b->cursor);
        answer(b, -EIO);
        return;
    }
    answer(b, 0);
}

static void ask_backing(struct bs *b)
{
    struct qcow2_state *s = b->s;
    if (b->cursor >= s->backing->size) {
        add(b, b->cursor, b->unalloc_end - b->cursor, EXTENT_HOLE);
        answer(b, 0);
        return;
    }
    uint64_t end = b->unalloc_end < s->backing->size ? b->unalloc_end
                                                     : s->backing->size;
    image_block_status(s->backing, b->cursor, end - b->cursor, backing_done,
                       b);
}

static void walk(struct bs *b);

static void l2_ready(struct qcow2_l2_waiter *w, int err,
                     struct qcow2_l2_slot *slot)
{
    struct bs *b = (struct bs *)((char *)w - offsetof(struct bs, w));
    (void)slot;
    if (err) {
        image_set_error(b->s->img, "reading L2 table at 0x%" PRIx64
                        " failed", w->offset);
        answer(b, err);
        return;
    }
    walk(b);
}

/* Classify from b->cursor.  Stops when an uncached table is needed after
 * some extents were found, at MAX_EXTENTS, or at an unallocated run that
 * the backing must describe. */
static void walk(struct bs *b)
{
    struct qcow2_state *s = b->s;
    uint64_t span = s->cluster_size * s->l2_entries;
    uint64_t pos = b->cursor;
    bool unalloc_run = false;
    while (pos < b->end && b->n < MAX_EXTENTS) {
        uint64_t l2off;
        int e = qcow2_l1_lookup(s, pos, &l2off);
        if (e < 0) {
            answer(b, e);
            return;
        }
        struct qcow2_l2_slot *slot = NULL;
        if (l2off) {
            b->w.fn = l2_ready;
            b->w.offset = l2off;
            b->w.is_new = false;
            if (b->n || unalloc_run) {
                /* Only continue through tables already in the cache. */
                struct qcow2_l2_slot *sl = NULL;
                for (unsigned i = 0; i < s->cache.nslots; i++)
                    if (s->cache.slots[i].state == SLOT_READY &&
                        s->cache.slots[i].offset == l2off)
                        sl = &s->cache.slots[i];
                if (!sl)
                    break;
            }
            e = qcow2_l2_get(s, &b->w, &slot);
            if (e == 0) {
                b->cursor = pos;
                return;
            }
            if (e < 0) {
                answer(b, e);
                return;
            }
        }
        uint64_t table_end = (pos / span + 1) * span;
        if (table_end > b->end || table_end == 0)
            table_end = b->end;
        bool stop = false;
        while (pos < table_end && b->n < MAX_EXTENTS) {
            struct qcow2_mapping m;
            e = qcow2_map(s, slot, pos, &m);
            if (e < 0) {
                answer(b, e);
                return;
            }
            uint64_t len = m.length < table_end - pos ? m.length
                                                      : table_end - pos;
            if (m.kind == QK_UNALLOC && s->backing) {
                if (b->n) {
                    stop = true;
                    break;
                }
                unalloc_run = true;
            } else if (unalloc_run) {
                stop = true;
                break;
            } else {
                enum extent_type t = EXTENT_DATA;
                if (m.kind == QK_ZERO)
                    t = EXTENT_ZERO;
                else if (m.kind == QK_UNALLOC)
                    t = s->h.backing_name[0] ? EXTENT_BACKING : EXTENT_HOLE;
                add(b, pos, len, t);
            }
            pos += len;
        }
        if (stop)
            break;
    }
    if (unalloc_run) {
        b->unalloc_end = pos;
        ask_backing(b);
        return;
    }
    if (b->n == 0) {    /* cannot happen: the first table is always loaded */
        answer(b, -EIO);
        return;
    }
    answer(b, 0);
}

static void start_walk(void *opaque)
{
    walk(opaque);
}

static void fail_later(struct image *img, image_extents_cb cb, void *opaque,
                       int err)
{
    image_extents_later(img, cb, opaque, err, NULL);
}

void qcow2_block_status(struct image *img, uint64_t offset, uint64_t length,
                        image_extents_cb cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    if (offset >= img->size || length == 0) {
        fail_later(img, cb, opaque, -EINVAL);
        return;
    }
    struct bs *b = calloc(1, sizeof *b);
    if (!b || loop_defer(img->loop, start_walk, b) < 0) {
        free(b);
        fail_later(img, cb, opaque, -ENOMEM);
        return;
    }
    uint64_t end = length > img->size - offset ? img->size : offset + length;
    b->s = s;
    b->start = b->cursor = offset;
    b->end = end;
    b->cb = cb;
    b->opaque = opaque;
}
