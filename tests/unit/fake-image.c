/* fake-image.c — in-memory image test double.  See fake-image.h. */
#include "fake-image.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_SHIFT 16
#define PAGE_SIZE (1u << PAGE_SHIFT)
#define L2_SHIFT 12
#define L2_LEN (1u << L2_SHIFT)

struct fake_req {
    struct fake_image *f;
    enum fake_op op;
    void *rbuf;
    const void *wbuf;
    uint64_t offset, length;
    unsigned flags;
    int err;
    bool may_answer_zeroes;         /* read_or_zeroes */
    unsigned rounds;
    image_io_cb cb;
    image_extents_cb ecb;
    void *opaque;
};

struct fake_image *fake_of(struct image *img)
{
    return img->priv;
}

static uint64_t rnd(struct fake_image *f)
{
    uint64_t x = f->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f->rng = x;
    return x;
}

/* ---- sparse storage ---------------------------------------------------- */

static unsigned char *page_get(struct fake_image *f, uint64_t pageno,
                               bool create)
{
    uint64_t i1 = pageno >> L2_SHIFT, i2 = pageno & (L2_LEN - 1);
    if (i1 >= f->l1_len)
        return NULL;
    if (!f->pages[i1]) {
        if (!create)
            return NULL;
        f->pages[i1] = calloc(L2_LEN, sizeof **f->pages);
        if (!f->pages[i1])
            abort();
    }
    if (!f->pages[i1][i2]) {
        if (!create)
            return NULL;
        f->pages[i1][i2] = calloc(1, PAGE_SIZE);
        if (!f->pages[i1][i2])
            abort();
    }
    return f->pages[i1][i2];
}

static void store(struct fake_image *f, uint64_t off, const void *buf,
                  size_t len)
{
    const unsigned char *b = buf;
    while (len) {
        size_t in = off & (PAGE_SIZE - 1);
        size_t n = PAGE_SIZE - in < len ? PAGE_SIZE - in : len;
        bool zero = true;
        for (size_t i = 0; b && i < n && zero; i++)
            zero = b[i] == 0;
        unsigned char *p = page_get(f, off >> PAGE_SHIFT, !zero);
        if (p) {
            if (b)
                memcpy(p + in, b, n);
            else
                memset(p + in, 0, n);
        }
        off += n;
        if (b)
            b += n;
        len -= n;
    }
}

static void load(struct fake_image *f, uint64_t off, void *buf, size_t len)
{
    unsigned char *b = buf;
    while (len) {
        size_t in = off & (PAGE_SIZE - 1);
        size_t n = PAGE_SIZE - in < len ? PAGE_SIZE - in : len;
        unsigned char *p = page_get(f, off >> PAGE_SHIFT, false);
        if (p)
            memcpy(b, p + in, n);
        else
            memset(b, 0, n);
        off += n;
        b += n;
        len -= n;
    }
}

void fake_image_poke(struct fake_image *f, uint64_t offset, const void *buf,
                     size_t len)
{
    store(f, offset, buf, len);
}

void fake_image_peek(struct fake_image *f, uint64_t offset, void *buf,
                     size_t len)
{
    load(f, offset, buf, len);
}

size_t fake_image_pages(const struct fake_image *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->l1_len; i++)
        for (size_t j = 0; f->pages[i] && j < L2_LEN; j++)
            n += f->pages[i][j] != NULL;
    return n;
}

/* ---- completion machinery ---------------------------------------------- */

static void inflight_add(struct fake_image *f, enum fake_op op, int d)
{
    struct fake_stats *s = &f->stats;
    if (op == FAKE_READ) {
        s->reads_inflight += d;
        if (s->reads_inflight > s->max_reads_inflight)
            s->max_reads_inflight = s->reads_inflight;
    } else if (op == FAKE_WRITE || op == FAKE_WRITE_ZEROES) {
        s->writes_inflight += d;
        if (s->writes_inflight > s->max_writes_inflight)
            s->max_writes_inflight = s->writes_inflight;
    } else {
        s->other_inflight += d;
    }
}

static void block_status_answer(struct fake_req *q)
{
    struct fake_image *f = q->f;
    uint64_t end = q->offset + q->length;
    if (end > f->img->size)
        end = f->img->size;
    size_t cap = f->cfg.max_extents_per_reply ? f->cfg.max_extents_per_reply
                                              : 2 * f->map_len + 2;
    struct extent *out = calloc(cap, sizeof *out);
    size_t n = 0;
    uint64_t at = q->offset;
    size_t i = 0;
    while (i < f->map_len && f->map[i].offset + f->map[i].length <= at)
        i++;
    while (at < end && n < cap) {
        struct extent e = { at, end - at, EXTENT_DATA };
        if (i < f->map_len && f->map[i].offset <= at) {
            uint64_t mend = f->map[i].offset + f->map[i].length;
            e.length = (mend < end ? mend : end) - at;
            e.type = f->map[i].type;
            i++;
        } else if (i < f->map_len && f->map[i].offset < end) {
            e.length = f->map[i].offset - at;     /* gap: data */
        }
        out[n++] = e;
        at += e.length;
    }
    q->ecb(q->opaque, 0, out, n);
    free(out);
}

/* Whether [off, off+len) of the image reads as zeroes. */
static bool range_is_zero(struct fake_image *f, uint64_t off, uint64_t len)
{
    unsigned char b[4096];
    while (len) {
        size_t n = len < sizeof b ? (size_t)len : sizeof b;
        load(f, off, b, n);
        for (size_t i = 0; i < n; i++)
            if (b[i])
                return false;
        off += n;
        len -= n;
    }
    return true;
}

static void finish(void *p)
{
    struct fake_req *q = p;
    struct fake_image *f = q->f;
    if (q->rounds) {
        q->rounds--;
        loop_defer(f->img->loop, finish, q);
        return;
    }
    inflight_add(f, q->op, -1);
    if (!q->err) {
        switch (q->op) {
        case FAKE_READ:
            if (q->may_answer_zeroes && f->cfg.answers_zeroes &&
                range_is_zero(f, q->offset, q->length)) {
                q->err = IMAGE_READ_ZEROES;     /* rbuf stays as it was */
                f->stats.zero_answers++;
            } else {
                load(f, q->offset, q->rbuf, q->length);
            }
            break;
        case FAKE_WRITE:
            store(f, q->offset, q->wbuf, q->length);
            if (f->corrupt_offset >= 0 &&
                (uint64_t)f->corrupt_offset >= q->offset &&
                (uint64_t)f->corrupt_offset < q->offset + q->length) {
                unsigned char c;
                load(f, (uint64_t)f->corrupt_offset, &c, 1);
                c ^= 0xff;
                store(f, (uint64_t)f->corrupt_offset, &c, 1);
            }
            break;
        case FAKE_WRITE_ZEROES:
            store(f, q->offset, NULL, q->length);
            break;
        default:
            break;
        }
    }
    if (q->op == FAKE_BLOCK_STATUS) {
        if (q->err)
            q->ecb(q->opaque, q->err, NULL, 0);
        else
            block_status_answer(q);
    } else {
        q->cb(q->opaque, q->err);
    }
    free(q);
}

static bool touches(const struct fake_req *q, uint64_t off)
{
    uint64_t len = q->length ? q->length : 1;
    return off >= q->offset && off - q->offset < len;
}

/* Lane model (fake-image.h): the op's delay in ms from now, or -1 when
 * the model is off or does not apply to this op. */
static int lane_delay_ms(struct fake_image *f, const struct fake_req *q)
{
    unsigned lanes = f->cfg.lanes;
    if (!lanes || (q->op != FAKE_READ && q->op != FAKE_WRITE &&
                   q->op != FAKE_WRITE_ZEROES))
        return -1;
    if (lanes > FAKE_MAX_LANES)
        lanes = FAKE_MAX_LANES;
    if (!f->lane_free_ns) {
        f->lane_free_ns = calloc(FAKE_MAX_LANES, sizeof *f->lane_free_ns);
        if (!f->lane_free_ns)
            abort();
    }
    unsigned best = 0;
    for (unsigned i = 1; i < lanes; i++)
        if (f->lane_free_ns[i] < f->lane_free_ns[best])
            best = i;
    uint64_t now = loop_now_ns();
    uint64_t start = f->lane_free_ns[best] > now ? f->lane_free_ns[best] : now;
    uint64_t service = (uint64_t)f->cfg.lane_latency_us * 1000;
    if (f->cfg.lane_bytes_per_sec)
        service += q->length * 1000000000ull / f->cfg.lane_bytes_per_sec;
    f->lane_free_ns[best] = start + service;
    return (int)((start + service - now + 999999) / 1000000);
}

static void submit(struct fake_image *f, struct fake_req *q)
{
    uint32_t bs = f->img->block_size;
    if (f->on_issue)
        f->on_issue(f->on_issue_opaque, f, q->op, q->offset, q->length);
    if (q->op == FAKE_READ || q->op == FAKE_WRITE ||
        q->op == FAKE_WRITE_ZEROES) {
        uint64_t end = q->offset + q->length;
        if (q->offset % bs || (q->length % bs && end != f->img->size)) {
            f->stats.misaligned++;
            q->err = -EINVAL;
        } else if (q->op != FAKE_WRITE_ZEROES && f->cfg.max_request &&
                   q->length > f->cfg.max_request) {
            f->stats.too_long++;
            q->err = -EINVAL;
        } else if (end > f->img->size || end < q->offset) {
            q->err = q->op == FAKE_READ ? -EINVAL : -ENOSPC;
        } else if (q->op != FAKE_READ && f->img->read_only) {
            q->err = -EROFS;
        }
    }
    if (!q->err && f->error_count && f->error_op == q->op &&
        (q->op == FAKE_FLUSH || touches(q, f->error_offset))) {
        f->error_count--;
        q->err = f->error_errno ? f->error_errno : -EIO;
        if (f->error_detail)
            image_set_error(f->img, "%s", f->error_detail);
    }
    inflight_add(f, q->op, +1);

    int ms = lane_delay_ms(f, q);
    if (ms < 0 && f->cfg.latency)
        ms = f->cfg.latency(f->cfg.latency_opaque, q->op, q->offset,
                            q->length);
    if (ms < 0 && f->cfg.max_delay_ms)
        ms = (int)(rnd(f) % (f->cfg.max_delay_ms + 1));
    if (f->cfg.max_delay_rounds)
        q->rounds = (unsigned)(rnd(f) % (f->cfg.max_delay_rounds + 1));
    if (ms > 0) {
        if (loop_add_timer(f->img->loop, (unsigned)ms, finish, q) < 0)
            abort();
    } else if (loop_defer(f->img->loop, finish, q) < 0) {
        abort();
    }
}

static struct fake_req *req_new(struct image *img, enum fake_op op,
                                uint64_t offset, uint64_t len)
{
    struct fake_req *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    q->f = img->priv;
    q->op = op;
    q->offset = offset;
    q->length = len;
    return q;
}

static void log_op(struct fake_image *f, enum fake_op op, uint64_t offset,
                   uint64_t len, unsigned flags)
{
    struct fake_stats *s = &f->stats;
    if (s->log_len == s->log_cap) {
        s->log_cap = s->log_cap ? 2 * s->log_cap : 256;
        s->log = realloc(s->log, s->log_cap * sizeof *s->log);
        if (!s->log)
            abort();
    }
    s->log[s->log_len++] = (struct fake_log_entry){ op, offset, len, flags };
}

/* ---- the vtable ---------------------------------------------------------- */

static void read_req(struct image *img, void *buf, uint64_t offset,
                     size_t len, bool may_answer_zeroes, image_io_cb cb,
                     void *opaque)
{
    struct fake_image *f = img->priv;
    struct fake_req *q = req_new(img, FAKE_READ, offset, len);
    q->rbuf = buf;
    q->cb = cb;
    q->opaque = opaque;
    q->may_answer_zeroes = may_answer_zeroes;
    f->stats.reads++;
    f->stats.bytes_read += len;
    submit(f, q);
}

static void fake_read(struct image *img, void *buf, uint64_t offset,
                      size_t len, image_io_cb cb, void *opaque)
{
    read_req(img, buf, offset, len, false, cb, opaque);
}

static void fake_read_or_zeroes(struct image *img, void *buf,
                                uint64_t offset, size_t len, image_io_cb cb,
                                void *opaque)
{
    read_req(img, buf, offset, len, true, cb, opaque);
}

static void fake_write(struct image *img, const void *buf, uint64_t offset,
                       size_t len, image_io_cb cb, void *opaque)
{
    struct fake_image *f = img->priv;
    struct fake_req *q = req_new(img, FAKE_WRITE, offset, len);
    q->wbuf = buf;
    q->cb = cb;
    q->opaque = opaque;
    f->stats.writes++;
    f->stats.bytes_written += len;
    log_op(f, FAKE_WRITE, offset, len, 0);
    submit(f, q);
}

static void fake_write_zeroes(struct image *img, uint64_t offset,
                              uint64_t len, unsigned flags, image_io_cb cb,
                              void *opaque)
{
    struct fake_image *f = img->priv;
    struct fake_req *q = req_new(img, FAKE_WRITE_ZEROES, offset, len);
    q->flags = flags;
    q->cb = cb;
    q->opaque = opaque;
    f->stats.zero_ops++;
    f->stats.bytes_zeroed += len;
    log_op(f, FAKE_WRITE_ZEROES, offset, len, flags);
    submit(f, q);
}

static void fake_flush(struct image *img, image_io_cb cb, void *opaque)
{
    struct fake_image *f = img->priv;
    struct fake_req *q = req_new(img, FAKE_FLUSH, 0, 0);
    q->cb = cb;
    q->opaque = opaque;
    f->stats.flushes++;
    submit(f, q);
}

static void fake_block_status(struct image *img, uint64_t offset,
                              uint64_t length, image_extents_cb cb,
                              void *opaque)
{
    struct fake_image *f = img->priv;
    struct fake_req *q = req_new(img, FAKE_BLOCK_STATUS, offset, length);
    q->ecb = cb;
    q->opaque = opaque;
    f->stats.block_status_calls++;
    if (offset + length > f->stats.max_block_status_end)
        f->stats.max_block_status_end = offset + length;
    if (offset >= img->size || length == 0)
        q->err = -EINVAL;
    submit(f, q);
}

static void free_pages(struct fake_image *f)
{
    for (size_t i = 0; i < f->l1_len; i++) {
        for (size_t j = 0; f->pages[i] && j < L2_LEN; j++)
            free(f->pages[i][j]);
        free(f->pages[i]);
    }
    free(f->pages);
}

static int fake_close(struct image *img)
{
    struct fake_image *f = img->priv;
    const struct fake_stats *s = &f->stats;
    int r = s->reads_inflight || s->writes_inflight || s->other_inflight
                ? -EBUSY : 0;
    free_pages(f);
    free(f->map);
    free(f->lane_free_ns);
    free(f->stats.log);
    free(f);
    image_free_shell(img);
    return r;
}

static const struct image_ops fake_ops = {
    .name = "fake",
    .read = fake_read,
    .read_or_zeroes = fake_read_or_zeroes,
    .write = fake_write,
    .write_zeroes = fake_write_zeroes,
    .flush = fake_flush,
    .block_status = fake_block_status,
    .close = fake_close,
};

static const struct image_ops fake_ops_no_status = {
    .name = "fake",
    .read = fake_read,
    .read_or_zeroes = fake_read_or_zeroes,
    .write = fake_write,
    .write_zeroes = fake_write_zeroes,
    .flush = fake_flush,
    .block_status = NULL,
    .close = fake_close,
};

struct fake_image *fake_image_new(struct loop *loop, const char *name,
                                  const struct fake_config *cfg)
{
    struct fake_image *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->cfg = *cfg;
    f->img = image_alloc(cfg->no_block_status ? &fake_ops_no_status
                                              : &fake_ops, loop, name);
    uint64_t span = (uint64_t)PAGE_SIZE * L2_LEN;
    f->l1_len = (size_t)((cfg->size + span - 1) / span);
    f->pages = calloc(f->l1_len ? f->l1_len : 1, sizeof *f->pages);
    if (!f->img || !f->pages) {
        image_free_shell(f->img);
        free(f->pages);
        free(f);
        return NULL;
    }
    f->img->priv = f;
    f->img->size = cfg->size;
    f->img->block_size = cfg->block_size ? cfg->block_size : 1;
    f->img->max_request = cfg->max_request;
    f->img->read_only = cfg->read_only;
    f->img->reads_as_zero = cfg->reads_as_zero;
    f->img->can_unmap = true;
    f->corrupt_offset = -1;
    f->rng = cfg->seed * 2654435761u + 88172645463325252ull;
    return f;
}

int fake_image_close(struct fake_image *f)
{
    return image_close(f->img);
}

int fake_image_set_map(struct fake_image *f, const struct extent *map,
                       size_t n)
{
    struct extent *m = calloc(n ? n : 1, sizeof *m);
    if (!m)
        return -ENOMEM;
    memcpy(m, map, n * sizeof *m);
    free(f->map);
    f->map = m;
    f->map_len = n;
    return 0;
}
