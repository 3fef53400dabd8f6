/* qcow2-l2cache.c — a bounded LRU cache of L2 tables.
 *
 * Memory is nslots × cluster_size whatever the image size.  A miss starts
 * one fill; later misses on the same table join its waiter list, so
 * concurrent readers share one protocol read.  When every slot is busy
 * (loading, or dirty and being written back) the waiter queues for a free
 * slot and retries when a fill or writeback finishes.  Dirty tables (only
 * in images we create) are written back when evicted or on flush.
 *
 * Callers never keep a slot across an asynchronous step: they read or
 * update the entries they need inside the callback. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-writer.h"

int qcow2_l2cache_init(struct qcow2_state *s)
{
    uint64_t budget = 4u << 20;      /* 4 MiB of tables, at least 16 */
    uint64_t n = budget / s->cluster_size;
    if (n < 16)
        n = 16;
    if (n > 1024)
        n = 1024;
    s->cache.slots = calloc(n, sizeof *s->cache.slots);
    if (!s->cache.slots)
        return -ENOMEM;
    s->cache.nslots = (unsigned)n;
    for (unsigned i = 0; i < n; i++)
        s->cache.slots[i].s = s;
    return 0;
}

void qcow2_l2cache_free(struct qcow2_state *s)
{
    for (unsigned i = 0; i < s->cache.nslots; i++)
        free(s->cache.slots[i].table);
    free(s->cache.slots);
    s->cache.slots = NULL;
    s->cache.nslots = 0;
}

uint64_t qcow2_l2_entry(struct qcow2_state *s, const struct qcow2_l2_slot *slot,
                        uint64_t i)
{
    return qcow2_be64(slot->table + i * s->l2_entry_bytes);
}

uint64_t qcow2_l2_bitmap(struct qcow2_state *s,
                         const struct qcow2_l2_slot *slot, uint64_t i)
{
    if (s->l2_entry_bytes != 16)
        return 0;
    return qcow2_be64(slot->table + i * 16 + 8);
}

void qcow2_l2_set(struct qcow2_state *s, struct qcow2_l2_slot *slot,
                  uint64_t i, uint64_t entry)
{
    qcow2_put_be64(slot->table + i * s->l2_entry_bytes, entry);
    slot->dirty = true;
    slot->gen++;
}

static void retry_slot_waiters(struct qcow2_state *s);

static void writeback_done(void *opaque, int err);

struct writeback {
    struct qcow2_l2_slot *slot;
    uint64_t gen;
};

static int start_writeback(struct qcow2_state *s, struct qcow2_l2_slot *slot)
{
    struct writeback *wb = malloc(sizeof *wb);
    if (!wb)
        return -ENOMEM;
    wb->slot = slot;
    wb->gen = slot->gen;
    slot->writing = true;
    s->cache.writebacks++;
    qcow2_proto_write(s, slot->table, slot->offset, s->cluster_size,
                      writeback_done, wb);
    return 0;
}

static struct qcow2_l2_slot *find(struct qcow2_state *s, uint64_t off)
{
    for (unsigned i = 0; i < s->cache.nslots; i++) {
        struct qcow2_l2_slot *sl = &s->cache.slots[i];
        if (sl->state != SLOT_FREE && sl->offset == off)
            return sl;
    }
    return NULL;
}

/* A slot that can be reused now, or NULL.  Starts a writeback of the least
 * recently used dirty slot when nothing is clean. */
static struct qcow2_l2_slot *victim(struct qcow2_state *s, int *err)
{
    struct qcow2_l2_slot *best = NULL, *dirty = NULL;
    *err = 0;
    for (unsigned i = 0; i < s->cache.nslots; i++) {
        struct qcow2_l2_slot *sl = &s->cache.slots[i];
        if (sl->state == SLOT_FREE)
            return sl;
        if (sl->state != SLOT_READY || sl->writing || sl->pins)
            continue;
        if (sl->dirty) {
            if (!dirty || sl->lru < dirty->lru)
                dirty = sl;
        } else if (!best || sl->lru < best->lru) {
            best = sl;
        }
    }
    if (best)
        return best;
    if (dirty)      /* after a write error, stop retrying: fail */
        *err = s->w && s->w->err ? s->w->err : start_writeback(s, dirty);
    return NULL;
}

static void fill_done(void *opaque, int err)
{
    struct qcow2_l2_slot *slot = opaque;
    struct qcow2_state *s = slot->s;
    struct qcow2_l2_waiter *w = slot->waiters;
    slot->waiters = NULL;
    if (err) {
        slot->state = SLOT_FREE;
    } else {
        slot->state = SLOT_READY;
        slot->lru = ++s->cache.tick;
    }
    while (w) {
        struct qcow2_l2_waiter *next = w->next;
        w->fn(w, err, err ? NULL : slot);
        w = next;
    }
    retry_slot_waiters(s);
}

static void writeback_done(void *opaque, int err)
{
    struct writeback *wb = opaque;
    struct qcow2_l2_slot *slot = wb->slot;
    struct qcow2_state *s = slot->s;
    slot->writing = false;
    if (!err && slot->gen == wb->gen)
        slot->dirty = false;
    free(wb);
    s->cache.writebacks--;
    if (err) {
        /* Say why: the protocol's reason (e.g. the server's NOSPC), else
         * the errno's text. */
        image_set_error(s->img, "writing L2 table at 0x%" PRIx64 ": %s",
                        slot->offset, s->proto->last_error.text[0]
                                          ? s->proto->last_error.text
                                          : strerror(-err));
        if (s->w && !s->w->err)
            s->w->err = err;    /* commits must not go on */
    }
    retry_slot_waiters(s);
    if (s->cache.idle_cb)
        s->cache.idle_cb(s);
}

/* Claim `slot` for the table at w->offset and start filling it. */
static int claim(struct qcow2_state *s, struct qcow2_l2_slot *slot,
                 struct qcow2_l2_waiter *w, struct qcow2_l2_slot **out)
{
    if (!slot->table) {
        slot->table = aligned_alloc(4096, s->cluster_size < 4096 ? 4096 :
                                    s->cluster_size);
        if (!slot->table)
            return -ENOMEM;
    }
    slot->offset = w->offset;
    slot->dirty = false;
    slot->writing = false;
    slot->gen = 0;
    slot->pins = 0;
    slot->waiters = NULL;
    if (w->is_new) {
        memset(slot->table, 0, s->cluster_size);
        slot->state = SLOT_READY;
        slot->dirty = true;
        slot->lru = ++s->cache.tick;
        *out = slot;
        return 1;
    }
    slot->state = SLOT_LOADING;
    w->next = NULL;
    slot->waiters = w;
    qcow2_proto_read(s, slot->table, w->offset, s->cluster_size, fill_done,
                     slot);
    return 0;
}

int qcow2_l2_get(struct qcow2_state *s, struct qcow2_l2_waiter *w,
                 struct qcow2_l2_slot **out)
{
    struct qcow2_l2_slot *sl = find(s, w->offset);
    if (sl && sl->state == SLOT_READY) {
        sl->lru = ++s->cache.tick;
        *out = sl;
        return 1;
    }
    if (sl) {   /* loading: join */
        w->next = sl->waiters;
        sl->waiters = w;
        return 0;
    }
    int err;
    sl = victim(s, &err);
    if (err)
        return err;
    if (!sl) {
        w->next = s->cache.slot_waiters;
        s->cache.slot_waiters = w;
        return 0;
    }
    return claim(s, sl, w, out);
}

/* Slot waiters are retried in arrival order; those that still find no
 * slot queue again. */
static void retry_slot_waiters(struct qcow2_state *s)
{
    struct qcow2_l2_waiter *list = s->cache.slot_waiters, *rev = NULL;
    s->cache.slot_waiters = NULL;
    while (list) {      /* the list is LIFO: reverse it */
        struct qcow2_l2_waiter *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct qcow2_l2_waiter *w = rev;
        rev = rev->next;
        struct qcow2_l2_slot *slot;
        int r = qcow2_l2_get(s, w, &slot);
        if (r == 1)
            w->fn(w, 0, slot);
        else if (r < 0)
            w->fn(w, r, NULL);
    }
}

int qcow2_l2cache_start_flush(struct qcow2_state *s)
{
    int err = 0;
    for (unsigned i = 0; i < s->cache.nslots; i++) {
        struct qcow2_l2_slot *sl = &s->cache.slots[i];
        if (sl->state == SLOT_READY && sl->dirty && !sl->writing) {
            int r = start_writeback(s, sl);
            if (r < 0 && !err)
                err = r;
        }
    }
    return err;
}

bool qcow2_l2cache_clean(struct qcow2_state *s)
{
    if (s->cache.writebacks)
        return false;
    for (unsigned i = 0; i < s->cache.nslots; i++) {
        struct qcow2_l2_slot *sl = &s->cache.slots[i];
        if (sl->state == SLOT_READY && sl->dirty)
            return false;
    }
    return true;
}
