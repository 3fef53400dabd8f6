/* readahead.c — sequential read-ahead for one open image (see readahead.h
 * for the model and the contract).
 *
 * A stream's chunks form a contiguous, ascending list [head, tail]; they
 * are added at the tail (ahead of the reader) and freed from the head once
 * read, so a stream never has gaps.  A chunk that leaves its stream while
 * a read of it is in flight or a waiting read uses it (invalidate, a
 * reader jumping elsewhere, an error) becomes an orphan: it answers the
 * reads already waiting on it and is freed when the last of them is
 * answered and its image read has completed. */
#include "readahead.h"
#include "mem-budget.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backends/image.h"

enum chunk_state { CH_INFLIGHT, CH_READY, CH_FAILED };

struct stream;

struct chunk {
    struct chunk *next;         /* in the stream, or in ra->orphans */
    struct readahead *ra;
    struct stream *stream;      /* NULL: orphan */
    uint64_t off;
    size_t len;
    uint8_t *buf;
    enum chunk_state state;
    int err;
    unsigned pending;           /* image reads of this chunk in flight */
    unsigned refs;              /* waiting reads that use this chunk */
    uint64_t served;            /* bytes answered from it */
};

struct waiter {
    struct waiter *next;
    uint64_t off;
    size_t size;
    ra_reply_fn reply;
    void *opaque;
    unsigned nch;
    struct iovec *iov;          /* nch entries, after ch[] */
    struct chunk *ch[];         /* the chunks covering the read, in order */
};

struct stream {
    bool used;
    uint64_t next;              /* end of the furthest read seen */
    uint64_t last_use;          /* for replacing the least recently used */
    unsigned window;            /* chunks to keep ahead; 0: not sequential */
    struct chunk *head, *tail;
    unsigned nchunks;
};

struct readahead {
    /* Recursive: image_read is called with it held, and a backend that
     * failed at once could call back on this thread. */
    pthread_mutex_t lock;
    struct image *img;
    size_t chunk;
    unsigned max_chunks;
    struct stream streams[RA_STREAMS];
    struct chunk *orphans;
    struct waiter *waiters;     /* reads waiting for chunks */
    unsigned inflight;          /* chunks whose image reads are in flight */
    uint64_t tick;
    ra_idle_fn idle;
    void *idle_opaque;
};

static atomic_size_t total_bytes;

size_t readahead_bytes_total(void)
{
    return atomic_load(&total_bytes);
}

unsigned readahead_inflight(struct readahead *ra)
{
    pthread_mutex_lock(&ra->lock);
    unsigned n = ra->inflight;
    pthread_mutex_unlock(&ra->lock);
    return n;
}

struct readahead *readahead_new(struct image *img, size_t chunk,
                                unsigned max_chunks, ra_idle_fn idle,
                                void *idle_opaque)
{
    if (!chunk || !max_chunks)
        return NULL;
    struct readahead *ra = calloc(1, sizeof *ra);
    if (!ra)
        return NULL;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    int r = pthread_mutex_init(&ra->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (r != 0) {
        free(ra);
        return NULL;
    }
    ra->img = img;
    ra->chunk = chunk;
    ra->max_chunks = max_chunks;
    ra->idle = idle;
    ra->idle_opaque = idle_opaque;
    return ra;
}

/* ---- chunks ------------------------------------------------------------- */

static void chunk_free(struct chunk *ch)
{
    atomic_fetch_sub(&total_bytes, ch->len);
    mem_budget_ra_give(ch->len);
    free(ch->buf);
    free(ch);
}

static uint64_t stream_end(const struct stream *st)
{
    return st->tail ? st->tail->off + st->tail->len : 0;
}

/* Free an orphan if nothing needs it any more. */
static void orphan_maybe_free(struct chunk *ch)
{
    if (ch->state == CH_INFLIGHT || ch->refs)
        return;
    struct readahead *ra = ch->ra;
    for (struct chunk **pp = &ra->orphans; *pp; pp = &(*pp)->next) {
        if (*pp == ch) {
            *pp = ch->next;
            chunk_free(ch);
            return;
        }
    }
}

/* Take `ch` (already unlinked from its stream) out of the streams: freed
 * now if nothing uses it, else kept as an orphan. */
static void orphan(struct chunk *ch)
{
    ch->stream = NULL;
    if (ch->state != CH_INFLIGHT && !ch->refs) {
        chunk_free(ch);
        return;
    }
    ch->next = ch->ra->orphans;
    ch->ra->orphans = ch;
}

/* Remove every chunk of `st` (its history stays). */
static void stream_drop_chunks(struct stream *st)
{
    struct chunk *ch = st->head;
    while (ch) {
        struct chunk *next = ch->next;
        orphan(ch);
        ch = next;
    }
    st->head = st->tail = NULL;
    st->nchunks = 0;
}

/* Remove every chunk of `st` and forget its history. */
static void stream_reset(struct stream *st)
{
    stream_drop_chunks(st);
    memset(st, 0, sizeof *st);
}

/* Free (or orphan) chunks at the head of `st` that the reader is done
 * with: read completely, or wholly before `pos` (the reader has moved
 * past them).  Chunks still in use by a waiting read stay. */
static void stream_trim(struct stream *st, uint64_t pos)
{
    while (st->head && !st->head->refs) {
        struct chunk *h = st->head;
        bool passed = h->off + h->len <= pos;
        bool done = h->state == CH_READY && h->served >= h->len;
        if (!passed && !done)
            break;
        st->head = h->next;
        if (!st->head)
            st->tail = NULL;
        st->nchunks--;
        orphan(h);
    }
}

static void chunk_read_done(void *opaque, int err);

/* Append one chunk to `st`; false when the stream or the budget is full
 * (or out of memory). */
static bool stream_extend(struct readahead *ra, struct stream *st,
                          uint64_t start)
{
    struct image *img = ra->img;
    uint64_t off = st->tail ? stream_end(st) : start;
    if (off >= img->size || st->nchunks >= ra->max_chunks)
        return false;
    size_t len = img->size - off < ra->chunk ? (size_t)(img->size - off)
                                             : ra->chunk;
    if (atomic_load(&total_bytes) + len > RA_BUDGET)
        return false;
    /* The mount's budget, shared with the jobs' buffers. */
    if (!mem_budget_ra_take(len))
        return false;
    struct chunk *ch = calloc(1, sizeof *ch);
    uint8_t *buf = ch ? aligned_alloc(4096, (len + 4095) / 4096 * 4096)
                      : NULL;
    if (!buf) {
        free(ch);
        mem_budget_ra_give(len);
        return false;
    }
    atomic_fetch_add(&total_bytes, len);
    ch->ra = ra;
    ch->stream = st;
    ch->off = off;
    ch->len = len;
    ch->buf = buf;
    ch->state = CH_INFLIGHT;
    if (st->tail)
        st->tail->next = ch;
    else
        st->head = ch;
    st->tail = ch;
    st->nchunks++;
    ra->inflight++;

    size_t piece = img->max_request ? img->max_request : len;
    ch->pending = 1;            /* guard: no completion before the loop */
    for (size_t pos = 0; pos < len; pos += piece) {
        size_t l = len - pos < piece ? len - pos : piece;
        ch->pending++;
        image_read(img, buf + pos, off + pos, l, chunk_read_done, ch);
    }
    chunk_read_done(ch, 0);
    /* A backend breaking the no-inline-completion rule with a failure
     * would have reset the stream: stop extending rather than loop. */
    return st->tail != NULL;
}

/* ---- waiting reads ------------------------------------------------------ */

/* A waiting read of [off, off+size) on the chunks of `st` covering it
 * (each gets a reference), or NULL when out of memory. */
static struct waiter *waiter_new(struct stream *st, uint64_t off,
                                 size_t size, ra_reply_fn reply, void *opaque)
{
    uint64_t end = off + size;
    unsigned nch = 0;
    for (struct chunk *ch = st->head; ch && ch->off < end; ch = ch->next)
        if (ch->off + ch->len > off)
            nch++;
    struct waiter *w = calloc(1, sizeof *w + nch * sizeof w->ch[0] +
                                     nch * sizeof *w->iov);
    if (!w)
        return NULL;
    w->iov = (struct iovec *)(void *)&w->ch[nch];
    for (struct chunk *ch = st->head; ch && ch->off < end; ch = ch->next)
        if (ch->off + ch->len > off) {
            ch->refs++;
            w->ch[w->nch++] = ch;
        }
    w->off = off;
    w->size = size;
    w->reply = reply;
    w->opaque = opaque;
    return w;
}

/* Answer `w` (all its chunks finished) and release its chunks. */
static void waiter_answer(struct waiter *w)
{
    int err = 0;
    for (unsigned i = 0; i < w->nch; i++)
        if (w->ch[i]->state == CH_FAILED && !err)
            err = w->ch[i]->err ? w->ch[i]->err : -EIO;
    struct iovec *iov = w->iov;
    uint64_t pos = w->off, end = w->off + w->size;
    for (unsigned i = 0; i < w->nch; i++) {
        struct chunk *ch = w->ch[i];
        uint64_t e = ch->off + ch->len < end ? ch->off + ch->len : end;
        iov[i].iov_base = ch->buf + (pos - ch->off);
        iov[i].iov_len = (size_t)(e - pos);
        pos = e;
    }
    w->reply(w->opaque, err, err ? NULL : iov, err ? 0 : (int)w->nch);
    struct stream *st = NULL;
    for (unsigned i = 0; i < w->nch; i++) {
        struct chunk *ch = w->ch[i];
        ch->refs--;
        if (!err)
            ch->served += iov[i].iov_len;
        if (ch->stream)
            st = ch->stream;
        else
            orphan_maybe_free(ch);      /* may free ch */
    }
    if (st)
        stream_trim(st, 0);
    free(w);
}

static bool waiter_ready(const struct waiter *w)
{
    for (unsigned i = 0; i < w->nch; i++)
        if (w->ch[i]->state == CH_INFLIGHT)
            return false;
    return true;
}

/* Answer every waiting read whose chunks have all finished. */
static void run_waiters(struct readahead *ra)
{
    struct waiter **pp = &ra->waiters;
    while (*pp) {
        struct waiter *w = *pp;
        if (!waiter_ready(w)) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        waiter_answer(w);
    }
}

static void chunk_read_done(void *opaque, int err)
{
    struct chunk *ch = opaque;
    if (err && !ch->err)
        ch->err = err;
    if (--ch->pending)
        return;
    struct readahead *ra = ch->ra;
    pthread_mutex_lock(&ra->lock);
    ra->inflight--;
    ch->state = ch->err ? CH_FAILED : CH_READY;
    ch->refs++;                 /* keep ch while answering */
    if (ch->state == CH_FAILED && ch->stream) {
        /* Later reads must read the range again: drop the stream's
         * chunks (the failed one answers its waiters first). */
        stream_reset(ch->stream);
    }
    run_waiters(ra);
    ch->refs--;
    if (!ch->stream)
        orphan_maybe_free(ch);
    else
        stream_trim(ch->stream, 0);
    bool idle = !ra->inflight && ra->idle;
    pthread_mutex_unlock(&ra->lock);
    if (idle)
        ra->idle(ra->idle_opaque);     /* may free ra: nothing after this */
}

/* ---- reads -------------------------------------------------------------- */

static struct stream *find_stream(struct readahead *ra, uint64_t off)
{
    for (unsigned i = 0; i < RA_STREAMS; i++) {
        struct stream *st = &ra->streams[i];
        if (!st->used)
            continue;
        if (off == st->next)
            return st;
        if (st->head && off >= st->head->off && off < stream_end(st))
            return st;
    }
    return NULL;
}

static struct stream *new_stream(struct readahead *ra)
{
    struct stream *victim = &ra->streams[0];
    for (unsigned i = 0; i < RA_STREAMS; i++) {
        struct stream *st = &ra->streams[i];
        if (!st->used) {
            victim = st;
            break;
        }
        if (st->last_use < victim->last_use)
            victim = st;
    }
    stream_reset(victim);
    victim->used = true;
    return victim;
}

static bool read_locked(struct readahead *ra, uint64_t off, size_t size,
                        ra_reply_fn reply, void *opaque)
{
    uint64_t end = off + size;
    ra->tick++;
    struct stream *st = find_stream(ra, off);
    if (!st) {
        st = new_stream(ra);
        st->next = end;
        st->last_use = ra->tick;
        return false;
    }
    st->last_use = ra->tick;
    uint64_t first = off / ra->chunk, last = (end - 1) / ra->chunk;
    if (last - first + 1 > ra->max_chunks)
        return false;           /* could never be covered */
    st->window = st->window ? st->window * 2 : RA_START_CHUNKS;
    if (st->window > ra->max_chunks)
        st->window = ra->max_chunks;
    if (end > st->next)
        st->next = end;

    /* Restart the window where the reader is when it left the chunks. */
    if (st->head && (off < st->head->off || off >= stream_end(st)))
        stream_drop_chunks(st);
    stream_trim(st, off);
    uint64_t start = off / ra->chunk * ra->chunk;
    uint64_t want = end + (uint64_t)st->window * ra->chunk;
    while (stream_end(st) < want || !st->head) {
        if (!stream_extend(ra, st, start))
            break;
    }
    /* Covered? */
    if (!st->head || st->head->off > off || stream_end(st) < end)
        return false;
    struct waiter *w = waiter_new(st, off, size, reply, opaque);
    if (!w)
        return false;
    if (waiter_ready(w)) {
        waiter_answer(w);
        return true;
    }
    w->next = ra->waiters;
    ra->waiters = w;
    return true;
}

bool readahead_read(struct readahead *ra, uint64_t off, size_t size,
                    ra_reply_fn reply, void *opaque)
{
    pthread_mutex_lock(&ra->lock);
    bool taken = read_locked(ra, off, size, reply, opaque);
    pthread_mutex_unlock(&ra->lock);
    return taken;
}

/* The stream whose ready chunks cover [off, end), or NULL. */
static struct stream *covering_stream(struct readahead *ra, uint64_t off,
                                      uint64_t end)
{
    for (unsigned i = 0; i < RA_STREAMS; i++) {
        struct stream *st = &ra->streams[i];
        if (!st->used || !st->head || off < st->head->off ||
            end > stream_end(st))
            continue;
        for (struct chunk *ch = st->head; ch && ch->off < end; ch = ch->next)
            if (ch->off + ch->len > off && ch->state != CH_READY)
                return NULL;
        return st;
    }
    return NULL;
}

bool readahead_try_answer(struct readahead *ra, uint64_t off, size_t size,
                          ra_reply_fn reply, void *opaque, bool *refill)
{
    uint64_t end = off + size;
    *refill = false;
    if (!size)
        return false;
    pthread_mutex_lock(&ra->lock);
    struct stream *st = covering_stream(ra, off, end);
    if (!st) {
        pthread_mutex_unlock(&ra->lock);
        return false;
    }
    struct waiter *w = waiter_new(st, off, size, reply, opaque);
    if (!w) {
        pthread_mutex_unlock(&ra->lock);
        return false;
    }
    for (unsigned i = 0; i < w->nch; i++)
        if (end >= w->ch[i]->off + w->ch[i]->len)
            *refill = true;     /* a chunk is used up: read further */
    ra->tick++;
    st->last_use = ra->tick;
    if (end > st->next)
        st->next = end;
    waiter_answer(w);           /* every chunk is ready (covering_stream) */
    pthread_mutex_unlock(&ra->lock);
    return true;
}

void readahead_refill(struct readahead *ra, uint64_t pos)
{
    pthread_mutex_lock(&ra->lock);
    for (unsigned i = 0; i < RA_STREAMS; i++) {
        struct stream *st = &ra->streams[i];
        if (!st->used || !st->head || !st->window || pos < st->head->off ||
            pos > st->next)
            continue;
        stream_trim(st, pos);
        uint64_t start = pos / ra->chunk * ra->chunk;
        uint64_t want = st->next + (uint64_t)st->window * ra->chunk;
        while (stream_end(st) < want && stream_extend(ra, st, start))
            ;
        break;
    }
    pthread_mutex_unlock(&ra->lock);
}

static void invalidate_locked(struct readahead *ra)
{
    for (unsigned i = 0; i < RA_STREAMS; i++)
        stream_reset(&ra->streams[i]);
}

void readahead_invalidate(struct readahead *ra)
{
    pthread_mutex_lock(&ra->lock);
    invalidate_locked(ra);
    pthread_mutex_unlock(&ra->lock);
}

void readahead_free(struct readahead *ra)
{
    if (!ra)
        return;
    invalidate_locked(ra);
    while (ra->orphans) {
        struct chunk *ch = ra->orphans;
        ra->orphans = ch->next;
        chunk_free(ch);
    }
    pthread_mutex_destroy(&ra->lock);
    free(ra);
}
