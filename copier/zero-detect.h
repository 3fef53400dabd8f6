/* zero-detect.h — split a data buffer into data pieces and zero runs
 * (internal to the copier).
 *
 * A buffer holds image bytes [base, base+len).  The image is cut into
 * chunks of `gran` bytes at absolute offsets that are multiples of `gran`.
 * A zero piece is a maximal run of whole chunks lying inside the buffer
 * whose bytes are all zero (so it is at least `gran` long and starts and
 * ends on a multiple of `gran`).  Everything else is data: partial chunks
 * at either edge of the buffer are always data, even when zero.  Data
 * pieces are additionally cut every `max_data` bytes (0: no cap), so a
 * writer can honour a backend's max_request.
 */
#ifndef IMGFS_ZERO_DETECT_H
#define IMGFS_ZERO_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct zero_piece {
    size_t offset;      /* from the buffer start */
    size_t length;      /* > 0 */
    bool zero;          /* true: every byte is zero */
};

/* True if all `len` bytes at `p` are zero (len 0: true). */
bool zero_detect_buffer(const void *p, size_t len);

/* Describe the piece of `buf` (image bytes [base, base+len)) that starts
 * at buffer position `pos` (< len).  `gran` > 0.  Pieces returned for
 * pos = 0, then pos = previous offset + length, ... tile the buffer
 * exactly, and a zero piece is never followed by another zero piece. */
struct zero_piece zero_detect_next(const void *buf, uint64_t base, size_t len,
                                   size_t pos, uint64_t gran,
                                   size_t max_data);

#endif
