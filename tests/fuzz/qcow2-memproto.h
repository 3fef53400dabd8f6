/* qcow2-memproto.h — a protocol image over a memory buffer, for qcow2
 * unit tests and the fuzz target.  Completions are deferred through the
 * loop like a real backend.  Growable: writes past the end extend it. */
#ifndef IMGFS_QCOW2_MEMPROTO_H
#define IMGFS_QCOW2_MEMPROTO_H

#include "backends/image.h"

/* Open a memory image (block_size 1; a test may set img->block_size to
 * make it refuse requests not aligned to it, like a LUN) holding a copy of `data` (`len` bytes).  Returns
 * NULL on ENOMEM. */
struct image *memproto_open(struct loop *loop, const char *name,
                            const void *data, size_t len, bool growable);

/* From now on, make every write fail with -EIO (fault injection). */
void memproto_fail_writes(struct image *img, bool fail);

/* The current contents (valid until the next write or close). */
const uint8_t *memproto_data(struct image *img, size_t *len);

#endif
