/* STUB, being written. */
#include "engine.h"
#include <errno.h>
#include <string.h>
void copy_options_init(struct copy_options *o)
{
    memset(o, 0, sizeof *o);
    o->requests = COPY_DEFAULT_REQUESTS;
    o->request_size = COPY_DEFAULT_REQUEST_SIZE;
    o->order = COPY_ORDER_PIPELINED;
    o->sparse = COPY_DEFAULT_SPARSE;
}
int copy_run(struct image *src, struct image *dst,
             const struct copy_options *opts,
             void (*tick)(void *opaque, const struct copy_progress *p),
             void *opaque, unsigned tick_ms, struct copy_progress *final,
             struct errmsg *err)
{
    (void)src; (void)dst; (void)opts; (void)tick; (void)opaque; (void)tick_ms; (void)final;
    errmsg_set(err, "engine not built yet");
    return -ENOTSUP;
}
