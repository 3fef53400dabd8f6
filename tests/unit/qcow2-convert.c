/* qcow2-convert.c — test helper: copy an image through the image layer
 * (image_open + block_status + pipelined reads/writes) without the copy
 * engine, so the qcow2 layer can be checked against qemu-img on its own.
 *
 *   qcow2-convert [-O raw|qcow2] [-c] [-s CLUSTER] [-n REQS] [-r REQSIZE]
 *                 [-b BACKING] SRC DST
 *   qcow2-convert -m SRC        print the block-status map (offset length
 *                               type per line)
 *
 * Zero and hole extents are skipped (the new target reads as zeroes);
 * data extents are read and written with up to REQS requests in flight,
 * writes issued in offset order.  Exit status 0 on success. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/image-open.h"

struct req {
    struct job *job;
    uint8_t *buf;
    uint64_t off;
    size_t len;
    uint64_t seq;
    bool busy, read_done, writing;
};

struct job {
    struct image *src, *dst;
    struct req *reqs;
    unsigned nreq;
    size_t reqsize;
    uint64_t cursor;        /* next offset to plan */
    uint64_t ext_end;       /* end of the current data extent */
    enum extent_type ext_type;
    bool status_pending;
    uint64_t plan_seq, write_seq;   /* writes are issued in plan order */
    unsigned inflight;
    int err;
    bool done;
};

static void pump(struct job *j);

static void status_cb(void *opaque, int err, const struct extent *e, size_t n)
{
    struct job *j = opaque;
    j->status_pending = false;
    if (err) {
        fprintf(stderr, "block_status at %" PRIu64 ": %s: %s\n", j->cursor,
                strerror(-err), j->src->last_error.text);
        j->err = err;
    } else {
        (void)n;
        j->ext_end = e[0].offset + e[0].length;
        j->ext_type = e[0].type;
    }
    pump(j);
}

static void write_cb(void *opaque, int err)
{
    struct req *r = opaque;
    struct job *j = r->job;
    if (err && !j->err) {
        fprintf(stderr, "write at %" PRIu64 ": %s: %s\n", r->off,
                strerror(-err), j->dst->last_error.text);
        j->err = err;
    }
    r->busy = false;
    j->inflight--;
    pump(j);
}

static void zero_cb(void *opaque, int err)
{
    struct job *j = opaque;
    if (err && !j->err) {
        fprintf(stderr, "write_zeroes: %s: %s\n", strerror(-err),
                j->dst->last_error.text);
        j->err = err;
    }
    j->inflight--;
    pump(j);
}

static void read_cb(void *opaque, int err)
{
    struct req *r = opaque;
    struct job *j = r->job;
    if (err && !j->err) {
        fprintf(stderr, "read at %" PRIu64 ": %s: %s\n", r->off,
                strerror(-err), j->src->last_error.text);
        j->err = err;
    }
    r->read_done = true;
    pump(j);
}

static void pump(struct job *j)
{
    /* Issue writes in the order the reads were planned. */
    for (;;) {
        struct req *next = NULL;
        for (unsigned i = 0; i < j->nreq; i++)
            if (j->reqs[i].busy && j->reqs[i].seq == j->write_seq)
                next = &j->reqs[i];
        if (!next || !next->read_done || next->writing)
            break;
        next->writing = true;
        j->write_seq++;
        if (j->err) {
            next->busy = false;
            j->inflight--;
            continue;
        }
        image_write(j->dst, next->buf, next->off, next->len, write_cb, next);
    }
    while (!j->err && j->cursor < j->src->size && !j->status_pending) {
        if (j->cursor >= j->ext_end) {
            j->status_pending = true;
            image_block_status(j->src, j->cursor, j->src->size - j->cursor,
                               status_cb, j);
            break;
        }
        if (j->ext_type != EXTENT_DATA) {
            /* Skipped when the new target reads as zeroes. */
            if (!j->dst->reads_as_zero) {
                j->inflight++;
                image_write_zeroes(j->dst, j->cursor, j->ext_end - j->cursor,
                                   IMAGE_ZERO_MAY_UNMAP, zero_cb, j);
            }
            j->cursor = j->ext_end;
            continue;
        }
        struct req *r = NULL;
        for (unsigned i = 0; i < j->nreq; i++)
            if (!j->reqs[i].busy)
                r = &j->reqs[i];
        if (!r)
            break;
        uint64_t len = j->ext_end - j->cursor;
        if (len > j->reqsize)
            len = j->reqsize;
        r->busy = true;
        r->read_done = false;
        r->writing = false;
        r->seq = j->plan_seq++;
        r->off = j->cursor;
        r->len = (size_t)len;
        j->cursor += len;
        j->inflight++;
        image_read(j->src, r->buf, r->off, r->len, read_cb, r);
    }
    if (j->inflight == 0 && !j->status_pending &&
        (j->err || j->cursor >= j->src->size))
        j->done = true;
}

struct map_wait {
    bool done;
    int err;
    struct extent e;
};

static void map_cb(void *o, int err, const struct extent *e, size_t n)
{
    struct map_wait *w = o;
    (void)n;
    w->err = err;
    if (!err)
        w->e = e[0];
    w->done = true;
}

static void map_image(struct image *img)
{
    uint64_t off = 0;
    while (off < img->size) {
        struct map_wait w = { 0 };
        image_block_status(img, off, img->size - off, map_cb, &w);
        loop_run_until(img->loop, &w.done);
        if (w.err) {
            fprintf(stderr, "block_status: %s\n", img->last_error.text);
            exit(1);
        }
        printf("%" PRIu64 " %" PRIu64 " %s\n", w.e.offset, w.e.length,
               w.e.type == EXTENT_DATA ? "data" :
               w.e.type == EXTENT_ZERO ? "zero" : "hole");
        off = w.e.offset + w.e.length;
    }
}

int main(int argc, char **argv)
{
    struct image_open_opts so = { 0 }, dopts = { 0 };
    unsigned nreq = 8;
    uint64_t reqsize = 1 << 20;
    bool map = false;
    int c;
    dopts.write = true;
    dopts.create = true;
    dopts.overwrite = true;
    dopts.format = IMAGE_FORMAT_RAW;
    while ((c = getopt(argc, argv, "O:cs:n:r:b:F:m")) != -1) {
        switch (c) {
        case 'O':
            dopts.format = strcmp(optarg, "qcow2") == 0 ? IMAGE_FORMAT_QCOW2
                                                       : IMAGE_FORMAT_RAW;
            break;
        case 'c': dopts.compress = true; break;
        case 's': {
            uint64_t v;
            if (image_parse_size(optarg, &v) < 0)
                return 2;
            dopts.cluster_size = (uint32_t)v;
            break;
        }
        case 'n': nreq = (unsigned)atoi(optarg); break;
        case 'r':
            if (image_parse_size(optarg, &reqsize) < 0)
                return 2;
            break;
        case 'b': dopts.backing = optarg; break;
        case 'F': dopts.backing_format = optarg; break;
        case 'm': map = true; break;
        default: return 2;
        }
    }
    if (argc - optind != (map ? 1 : 2)) {
        fprintf(stderr, "usage: qcow2-convert [-O fmt] [-c] [-s N] SRC DST "
                "| -m SRC\n");
        return 2;
    }
    struct loop *loop = loop_new();
    struct errmsg err;
    struct image *src, *dst;
    int r = image_open(loop, argv[optind], &so, &src, &err);
    if (r < 0) {
        fprintf(stderr, "%s\n", err.text);
        return 1;
    }
    if (map) {
        map_image(src);
        image_close(src);
        loop_free(loop);
        return 0;
    }
    dopts.create_size = src->size;
    r = image_open(loop, argv[optind + 1], &dopts, &dst, &err);
    if (r < 0) {
        fprintf(stderr, "%s\n", err.text);
        image_close(src);
        return 1;
    }
    struct job j = { .src = src, .dst = dst, .nreq = nreq,
                     .reqsize = (size_t)reqsize };
    j.reqs = calloc(nreq, sizeof *j.reqs);
    for (unsigned i = 0; i < nreq; i++) {
        j.reqs[i].job = &j;
        j.reqs[i].buf = aligned_alloc(4096, ((size_t)reqsize + 4095) / 4096 * 4096);
    }
    pump(&j);
    loop_run_until(loop, &j.done);
    if (!j.err) {
        r = image_flush_sync(dst);
        if (r < 0) {
            fprintf(stderr, "flush: %s\n", dst->last_error.text);
            j.err = r;
        }
    }
    image_close(src);
    r = image_close(dst);
    if (r < 0 && !j.err) {
        fprintf(stderr, "close: %s\n", dst->last_error.text);
        j.err = r;
    }
    for (unsigned i = 0; i < nreq; i++)
        free(j.reqs[i].buf);
    free(j.reqs);
    loop_free(loop);
    return j.err ? 1 : 0;
}
