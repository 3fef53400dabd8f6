/* TEMP */
#include <errno.h>
#include "qcow2-internal.h"
void qcow2_write(struct image *img, const void *buf, uint64_t offset,
                 size_t len, image_io_cb cb, void *opaque)
{ (void)buf; (void)offset; (void)len; qcow2_complete(img->priv, cb, opaque, -ENOTSUP); }
void qcow2_write_zeroes(struct image *img, uint64_t offset, uint64_t len,
                        unsigned flags, image_io_cb cb, void *opaque)
{ (void)flags; (void)offset; (void)len; qcow2_complete(img->priv, cb, opaque, -ENOTSUP); }
void qcow2_flush(struct image *img, image_io_cb cb, void *opaque)
{ qcow2_complete(img->priv, cb, opaque, -ENOTSUP); }
int qcow2_writer_close(struct qcow2_state *s) { (void)s; return 0; }
int qcow2_create(struct image *proto, uint64_t virtual_size,
                 const struct image_open_opts *opts, struct image **out,
                 struct errmsg *err)
{
    (void)opts; (void)virtual_size; *out = NULL;
    errmsg_set(err, "%s: qcow2 not supported yet", proto->name);
    image_close(proto);
    return -ENOTSUP;
}
