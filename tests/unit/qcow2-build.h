/* qcow2-build.h — build small qcow2 images byte by byte for tests.
 *
 * The image: 4 KiB clusters, 1 MiB virtual size, header at 0, refcount
 * table at 4096, L1 at 8192, one L2 table at 12288, data clusters from
 * 16384.  Tests then poke fields to make it malformed. */
#ifndef IMGFS_QCOW2_BUILD_H
#define IMGFS_QCOW2_BUILD_H

#include <stdint.h>
#include <string.h>

#define TB_CS 4096u
#define TB_L2 12288u
#define TB_DATA 16384u
#define TB_LEN (8 * TB_CS)

static inline void tb_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline void tb_be64(uint8_t *p, uint64_t v)
{
    tb_be32(p, (uint32_t)(v >> 32));
    tb_be32(p + 4, (uint32_t)v);
}

/* A valid v3 image with L1[0] → L2 at TB_L2 (all entries unallocated). */
static inline void tb_make(uint8_t *b, size_t len)
{
    memset(b, 0, len);
    memcpy(b, "QFI\xfb", 4);
    tb_be32(b + 4, 3);              /* version */
    tb_be32(b + 20, 12);            /* cluster_bits */
    tb_be64(b + 24, 1u << 20);      /* size */
    tb_be32(b + 36, 1);             /* l1_size */
    tb_be64(b + 40, 2 * TB_CS);     /* l1_table_offset */
    tb_be64(b + 48, TB_CS);         /* refcount_table_offset */
    tb_be32(b + 56, 1);             /* refcount_table_clusters */
    tb_be32(b + 96, 4);             /* refcount_order */
    tb_be32(b + 100, 112);          /* header_length */
    tb_be64(b + 2 * TB_CS, TB_L2 | (1ull << 63));
}

/* Set L2 entry i (standard 8-byte entries). */
static inline void tb_l2(uint8_t *b, unsigned i, uint64_t e)
{
    tb_be64(b + TB_L2 + 8 * i, e);
}

/* Put a header extension at byte `off` (after the 112-byte header). */
static inline size_t tb_ext(uint8_t *b, size_t off, uint32_t type,
                            const void *data, uint32_t len)
{
    tb_be32(b + off, type);
    tb_be32(b + off + 4, len);
    memcpy(b + off + 8, data, len);
    return off + 8 + ((len + 7) & ~7u);
}

/* Name a backing file (stored at byte 512 of the header cluster). */
static inline void tb_backing(uint8_t *b, const char *name)
{
    size_t n = strlen(name);
    tb_be64(b + 8, 512);
    tb_be32(b + 16, (uint32_t)n);
    memcpy(b + 512, name, n);
}

#endif
