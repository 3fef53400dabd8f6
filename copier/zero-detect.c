/* zero-detect.c — find aligned zero runs in a buffer.  See zero-detect.h. */
#include "zero-detect.h"

#include <string.h>

bool zero_detect_buffer(const void *p, size_t len)
{
    const unsigned char *b = p;
    /* Check a short head byte-wise, then compare the buffer with itself
     * shifted by 16 bytes: all zero iff the head is zero and every byte
     * equals the one 16 before it. */
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++)
        if (b[i])
            return false;
    return len <= 16 || memcmp(b, b + 16, len - 16) == 0;
}

/* Position (from the buffer start) of the first chunk boundary at or after
 * buffer position `pos`. */
static size_t next_boundary(uint64_t base, size_t pos, uint64_t gran)
{
    uint64_t abs = base + pos;
    uint64_t rem = abs % gran;
    return rem ? pos + (size_t)(gran - rem) : pos;
}

/* Is the whole chunk starting at buffer position `pos` (a boundary) inside
 * the buffer and all zero? */
static bool zero_chunk_at(const unsigned char *b, size_t len, size_t pos,
                          uint64_t gran)
{
    return pos < len && len - pos >= gran && zero_detect_buffer(b + pos, gran);
}

struct zero_piece zero_detect_next(const void *buf, uint64_t base, size_t len,
                                   size_t pos, uint64_t gran,
                                   size_t max_data)
{
    const unsigned char *b = buf;
    struct zero_piece piece = { pos, 0, false };

    if (next_boundary(base, pos, gran) == pos && zero_chunk_at(b, len, pos, gran)) {
        size_t end = pos + gran;
        while (zero_chunk_at(b, len, end, gran))
            end += gran;
        piece.length = end - pos;
        piece.zero = true;
        return piece;
    }

    /* Data: up to the next whole zero chunk, the buffer end or max_data. */
    size_t limit = len;
    if (max_data && len - pos > max_data)
        limit = pos + max_data;
    size_t end = next_boundary(base, pos, gran);
    if (end == pos)
        end += gran;            /* the chunk at pos is not zero */
    while (end < limit && !zero_chunk_at(b, len, end, gran))
        end += gran;
    if (end > limit)
        end = limit;
    piece.length = end - pos;
    return piece;
}
