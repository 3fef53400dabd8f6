/* STUB, being written. */
#include "../qcow2.h"
#include <errno.h>
#include <string.h>
bool qcow2_probe(const uint8_t *hdr, size_t len)
{
    return len >= 4 && memcmp(hdr, "QFI\xfb", 4) == 0;
}
int qcow2_open(struct image *proto, const struct image_open_opts *opts,
               struct image **out, struct errmsg *err)
{
    (void)opts; *out = NULL;
    errmsg_set(err, "%s: qcow2 not supported yet", proto->name);
    image_close(proto);
    return -ENOTSUP;
}
int qcow2_create(struct image *proto, uint64_t virtual_size,
                 const struct image_open_opts *opts, struct image **out,
                 struct errmsg *err)
{
    (void)opts; (void)virtual_size; *out = NULL;
    errmsg_set(err, "%s: qcow2 not supported yet", proto->name);
    image_close(proto);
    return -ENOTSUP;
}
