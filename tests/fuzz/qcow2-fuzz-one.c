/* qcow2-fuzz-one.c — see qcow2-fuzz-one.h. */
#include "qcow2-fuzz-one.h"

#include <stdlib.h>
#include <string.h>

#include "backends/qcow2.h"
#include "backends/qcow2/qcow2-internal.h"
#include "qcow2-memproto.h"

#define READ_CHUNK (256u * 1024u)
#define MAX_STATUS_CALLS 64

struct status_wait {
    bool done;
    int err;
    uint64_t end;
};

static void status_cb(void *opaque, int err, const struct extent *e, size_t n)
{
    struct status_wait *w = opaque;
    w->err = err;
    if (!err && n)
        w->end = e[n - 1].offset + e[n - 1].length;
    w->done = true;
}

static void exercise(struct image *q, uint8_t *buf)
{
    /* Reads: the start, the end and one spot in the middle. */
    uint64_t spots[3] = { 0, q->size / 2, q->size > READ_CHUNK ?
                          q->size - READ_CHUNK : 0 };
    for (int i = 0; i < 3; i++) {
        uint64_t off = spots[i];
        if (off >= q->size && q->size)
            continue;
        size_t len = q->size - off < READ_CHUNK ? (size_t)(q->size - off)
                                                 : READ_CHUNK;
        if (len)
            image_read_sync(q, buf, off, len);
    }
    /* Unaligned read crossing a cluster boundary. */
    if (q->size > 1000)
        image_read_sync(q, buf, 511, q->size - 511 < 777 ?
                        (size_t)(q->size - 511) : 777);
    uint64_t off = 0;
    for (int i = 0; i < MAX_STATUS_CALLS && off < q->size; i++) {
        struct status_wait w = { false, 0, 0 };
        image_block_status(q, off, q->size - off, status_cb, &w);
        if (loop_run_until(q->loop, &w.done) < 0 || w.err || w.end <= off)
            break;
        off = w.end;
    }
}

int qcow2_fuzz_one(const uint8_t *data, size_t size)
{
    struct qcow2_header h;
    struct errmsg err;
    size_t cut = size < (2u << 20) ? size : (2u << 20);
    qcow2_header_parse(data, cut, size, &h, &err);

    /* Do not follow backing files: clear backing_file_offset. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return -1;
    memcpy(copy, data, size);
    if (size >= 16)
        memset(copy + 8, 0, 8);
    struct loop *loop = loop_new();
    struct image *p = loop ? memproto_open(loop, "fuzz.qcow2", copy, size,
                                           false) : NULL;
    free(copy);
    if (!p) {
        if (loop)
            loop_free(loop);
        return -1;
    }
    struct image_open_opts o = { 0 };
    struct image *q = NULL;
    int r = qcow2_open(p, &o, &q, &err);
    if (r == 0) {
        uint8_t *buf = malloc(READ_CHUNK);
        if (buf)
            exercise(q, buf);
        free(buf);
        image_close(q);
    }
    loop_free(loop);
    return r;
}
