/* qcow2-header.c — parse and validate the qcow2 header cluster (header,
 * header extensions, backing file name) and encode new v3 headers.
 *
 * Every refusal names the field so that a user can tell what is wrong
 * without a hex editor.  Nothing here allocates memory or trusts a length
 * before checking it against the buffer and the file size. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "qcow2-internal.h"

int qcow2_header_cluster_bits(const uint8_t *buf, size_t len,
                              struct errmsg *err)
{
    if (len < 72) {
        errmsg_set(err, "file too small for a qcow2 header (%zu bytes, "
                   "need at least 72)", len);
        return -EINVAL;
    }
    if (qcow2_be32(buf) != QCOW2_MAGIC) {
        errmsg_set(err, "not a qcow2 image (bad magic)");
        return -EINVAL;
    }
    uint32_t version = qcow2_be32(buf + 4);
    if (version != 2 && version != 3) {
        errmsg_set(err, "unsupported qcow2 version %" PRIu32
                   " (only versions 2 and 3 are supported)", version);
        return -ENOTSUP;
    }
    uint32_t cb = qcow2_be32(buf + 20);
    if (cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS) {
        errmsg_set(err, "invalid cluster_bits %" PRIu32 " (must be %d..%d)",
                   cb, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
        return -EINVAL;
    }
    return (int)cb;
}

uint64_t qcow2_l1_entries_needed(uint64_t size, uint32_t cluster_bits,
                                 bool extended_l2)
{
    uint32_t l2_bits = cluster_bits - (extended_l2 ? 4 : 3);
    uint32_t shift = cluster_bits + l2_bits;
    if (shift >= 64)
        return size ? 1 : 0;
    uint64_t span = 1ull << shift;
    return size / span + (size % span ? 1 : 0);
}

/* Name of an incompatible feature from the feature-name table, or NULL. */
static const char *feature_name(const uint8_t *table, size_t table_len,
                                unsigned bit, char *out, size_t outlen)
{
    for (size_t i = 0; table && i + 48 <= table_len; i += 48) {
        if (table[i] == 0 && table[i + 1] == bit) {
            size_t n = strnlen((const char *)table + i + 2, 46);
            if (n >= outlen)
                n = outlen - 1;
            for (size_t k = 0; k < n; k++) {
                char c = (char)table[i + 2 + k];
                out[k] = (c >= 32 && c < 127) ? c : '?';
            }
            out[n] = '\0';
            return out;
        }
    }
    return NULL;
}

/* Do [a, a+alen) and [b, b+blen) overlap? */
static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

static int check_table(const char *what, uint64_t off, uint64_t bytes,
                       uint64_t cluster_size, uint64_t file_size,
                       struct errmsg *err)
{
    if (off % cluster_size) {
        errmsg_set(err, "%s offset 0x%" PRIx64 " is not aligned to the "
                   "cluster size %" PRIu64, what, off, cluster_size);
        return -EINVAL;
    }
    if (off == 0) {
        errmsg_set(err, "%s offset is 0 (overlaps the header)", what);
        return -EINVAL;
    }
    if (off > file_size || bytes > file_size - off) {
        errmsg_set(err, "%s at offset 0x%" PRIx64 " (%" PRIu64 " bytes) "
                   "extends past the end of the file (%" PRIu64 " bytes)",
                   what, off, bytes, file_size);
        return -EINVAL;
    }
    return 0;
}

static int parse_extensions(const uint8_t *buf, size_t end, size_t start,
                            struct qcow2_header *h, const uint8_t **ftable,
                            size_t *ftable_len, struct errmsg *err)
{
    size_t off = start;
    while (off + 8 <= end) {
        uint32_t type = qcow2_be32(buf + off);
        uint32_t len = qcow2_be32(buf + off + 4);
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - off - 8) {
            errmsg_set(err, "header extension 0x%08" PRIx32 " at offset %zu: "
                       "length %" PRIu32 " overruns the header area",
                       type, off, len);
            return -EINVAL;
        }
        const uint8_t *data = buf + off + 8;
        if (type == QCOW2_EXT_BACKING_FORMAT) {
            if (len >= sizeof h->backing_format) {
                errmsg_set(err, "backing file format extension too long "
                           "(%" PRIu32 " bytes)", len);
                return -EINVAL;
            }
            memcpy(h->backing_format, data, len);
            h->backing_format[len] = '\0';
            if (strlen(h->backing_format) != len) {
                errmsg_set(err, "backing file format name contains a NUL "
                           "byte");
                return -EINVAL;
            }
        } else if (type == QCOW2_EXT_FEATURE_TABLE) {
            *ftable = data;
            *ftable_len = len;
        }
        size_t step = 8 + (((size_t)len + 7) & ~(size_t)7);
        if (step > end - off)
            break;  /* padding runs into the end: nothing more to parse */
        off += step;
    }
    return 0;
}

/* The fields at fixed offsets into `h` (zeroed by the caller): version
 * 2's 72 bytes, version 3's 104 and its compression type byte.
 * `area_end` is the end of the header area (the first cluster, or the
 * file if shorter).  0, or -EINVAL with `err` set. */
static int parse_fields(const uint8_t *buf, size_t len, size_t area_end,
                        struct qcow2_header *h, struct errmsg *err)
{
    h->version = qcow2_be32(buf + 4);
    h->backing_offset = qcow2_be64(buf + 8);
    h->backing_len = qcow2_be32(buf + 16);
    h->size = qcow2_be64(buf + 24);
    h->crypt_method = qcow2_be32(buf + 32);
    h->l1_size = qcow2_be32(buf + 36);
    h->l1_offset = qcow2_be64(buf + 40);
    h->reftable_offset = qcow2_be64(buf + 48);
    h->reftable_clusters = qcow2_be32(buf + 56);
    h->nb_snapshots = qcow2_be32(buf + 60);
    h->snapshots_offset = qcow2_be64(buf + 64);
    h->refcount_order = 4;
    h->header_length = 72;

    if (h->version == 3) {
        if (len < 104) {
            errmsg_set(err, "file too small for a version 3 header "
                       "(%zu bytes, need 104)", len);
            return -EINVAL;
        }
        h->incompat = qcow2_be64(buf + 72);
        h->compat = qcow2_be64(buf + 80);
        h->autoclear = qcow2_be64(buf + 88);
        h->refcount_order = qcow2_be32(buf + 96);
        h->header_length = qcow2_be32(buf + 100);
        if (h->header_length < 104 || h->header_length % 8 ||
            h->header_length > area_end) {
            errmsg_set(err, "invalid header_length %" PRIu32 " (must be a "
                       "multiple of 8, at least 104 and within the first "
                       "cluster of %zu bytes)", h->header_length, area_end);
            return -EINVAL;
        }
        if (h->header_length > 104)
            h->compression_type = buf[104];
    }
    return 0;
}

/* Refuse what the known header fields say imgfs cannot read: encryption,
 * the corrupt bit, external data files, refcount_order > 6, compression
 * other than zlib, extended L2 entries with clusters under 16 KiB.  Sets
 * h->extended_l2.  0, or -EINVAL / -ENOTSUP with `err` set. */
static int check_features(struct qcow2_header *h, struct errmsg *err)
{
    if (h->crypt_method != 0) {
        errmsg_set(err, "encrypted images are not supported (crypt_method "
                   "%" PRIu32 ")", h->crypt_method);
        return -ENOTSUP;
    }
    if (h->incompat & QCOW2_INCOMPAT_CORRUPT) {
        errmsg_set(err, "image is marked corrupt (incompatible feature bit 1"
                   "); repair it with qemu-img check -r all");
        return -EINVAL;
    }
    if (h->incompat & QCOW2_INCOMPAT_DATA_FILE) {
        errmsg_set(err, "external data files are not supported "
                   "(incompatible feature bit 2)");
        return -ENOTSUP;
    }
    if (h->refcount_order > 6) {
        errmsg_set(err, "invalid refcount_order %" PRIu32 " (at most 6)",
                   h->refcount_order);
        return -EINVAL;
    }
    if (h->compression_type != 0 ||
        (h->incompat & QCOW2_INCOMPAT_COMPRESSION)) {
        if (h->compression_type == 0)
            errmsg_set(err, "incompatible feature bit 3 (compression type) "
                       "set but compression_type is 0");
        else
            errmsg_set(err, "unsupported compression_type %u (%s); only "
                       "zlib is supported", h->compression_type,
                       h->compression_type == 1 ? "zstd" : "unknown");
        return -ENOTSUP;
    }
    h->extended_l2 = (h->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
    if (h->extended_l2 && h->cluster_bits < 14) {
        errmsg_set(err, "extended L2 entries need cluster_bits >= 14 "
                   "(cluster_bits %d)", (int)h->cluster_bits);
        return -EINVAL;
    }
    return 0;
}

/* The backing file name, if the header has one: it must lie inside the
 * header area (after the header, before `area_end`) and hold no NUL.
 * *ext_end is where the header extensions must end: the name's offset,
 * else `area_end`.  0, or -EINVAL with `err` set. */
static int parse_backing_name(const uint8_t *buf, size_t area_end,
                              struct qcow2_header *h, size_t *ext_end,
                              struct errmsg *err)
{
    *ext_end = area_end;
    if (!h->backing_offset)
        return 0;
    if (h->backing_len == 0 || h->backing_len > QCOW2_MAX_BACKING_NAME) {
        errmsg_set(err, "invalid backing_file_size %" PRIu32
                   " (must be 1..%d)", h->backing_len,
                   QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (h->backing_offset < h->header_length ||
        h->backing_offset > area_end ||
        h->backing_len > area_end - h->backing_offset) {
        errmsg_set(err, "backing_file_offset %" PRIu64 " (+%" PRIu32
                   " bytes) lies outside the header cluster",
                   h->backing_offset, h->backing_len);
        return -EINVAL;
    }
    memcpy(h->backing_name, buf + h->backing_offset, h->backing_len);
    h->backing_name[h->backing_len] = '\0';
    if (strlen(h->backing_name) != h->backing_len) {
        errmsg_set(err, "backing file name contains a NUL byte");
        return -EINVAL;
    }
    *ext_end = (size_t)h->backing_offset;
    return 0;
}

/* Refuse incompatible feature bits imgfs does not know, naming the first
 * one from the image's feature table (`ftable`, may be NULL) if it has a
 * name there.  0, or -ENOTSUP with `err` set. */
static int check_unknown_features(const struct qcow2_header *h,
                                  const uint8_t *ftable, size_t ftable_len,
                                  struct errmsg *err)
{
    uint64_t unknown = h->incompat & ~QCOW2_INCOMPAT_KNOWN;
    if (!unknown)
        return 0;
    unsigned bit = (unsigned)__builtin_ctzll(unknown);
    char name[48];
    const char *n = feature_name(ftable, ftable_len, bit, name, sizeof name);
    errmsg_set(err, "unknown incompatible feature bits 0x%" PRIx64
               " (bit %u%s%s%s)", unknown, bit, n ? ": \"" : "",
               n ? n : "", n ? "\"" : "");
    return -ENOTSUP;
}

/* The virtual size and the tables the header points at (L1, refcount
 * table, snapshot table): sizes within imgfs's limits, an L1 table large
 * enough for the virtual size, each table cluster-aligned inside a file of
 * `file_size` bytes, L1 and refcount table apart.  0, or -EINVAL with
 * `err` set. */
static int check_tables(const struct qcow2_header *h, uint64_t file_size,
                        struct errmsg *err)
{
    uint64_t cs = 1ull << h->cluster_bits;
    if (h->size > (1ull << 62)) {
        errmsg_set(err, "virtual size %" PRIu64 " is too large", h->size);
        return -EINVAL;
    }
    uint64_t needed = qcow2_l1_entries_needed(h->size, h->cluster_bits,
                                              h->extended_l2);
    if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        errmsg_set(err, "l1_size %" PRIu32 " is too large (limit %u "
                   "entries)", h->l1_size, QCOW2_MAX_L1_BYTES / 8);
        return -EINVAL;
    }
    if (h->l1_size < needed) {
        errmsg_set(err, "l1_size %" PRIu32 " is too small for the virtual "
                   "size %" PRIu64 " (needs %" PRIu64 " entries)",
                   h->l1_size, h->size, needed);
        return -EINVAL;
    }
    uint64_t l1_bytes = (uint64_t)h->l1_size * 8;
    int r;
    if (h->l1_size) {
        r = check_table("L1 table", h->l1_offset, l1_bytes, cs, file_size,
                        err);
        if (r < 0)
            return r;
    }
    uint64_t rt_bytes = (uint64_t)h->reftable_clusters * cs;
    if (rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
        errmsg_set(err, "refcount_table_clusters %" PRIu32 " is too large",
                   h->reftable_clusters);
        return -EINVAL;
    }
    if (h->reftable_clusters == 0) {
        errmsg_set(err, "refcount_table_clusters is 0");
        return -EINVAL;
    }
    r = check_table("refcount table", h->reftable_offset, rt_bytes, cs,
                    file_size, err);
    if (r < 0)
        return r;
    if (overlaps(h->l1_offset, l1_bytes, h->reftable_offset, rt_bytes)) {
        errmsg_set(err, "L1 table (0x%" PRIx64 ") overlaps the refcount "
                   "table (0x%" PRIx64 ")", h->l1_offset, h->reftable_offset);
        return -EINVAL;
    }
    if (h->nb_snapshots) {
        if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
            errmsg_set(err, "nb_snapshots %" PRIu32 " is too large",
                       h->nb_snapshots);
            return -EINVAL;
        }
        /* Each entry is at least 40 bytes. */
        r = check_table("snapshot table", h->snapshots_offset,
                        (uint64_t)h->nb_snapshots * 40, cs, file_size, err);
        if (r < 0)
            return r;
    }
    return 0;
}

int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                       struct qcow2_header *h, struct errmsg *err)
{
    memset(h, 0, sizeof *h);
    int cb = qcow2_header_cluster_bits(buf, len, err);
    if (cb < 0)
        return cb;
    uint64_t cs = 1ull << cb;
    h->cluster_bits = (uint32_t)cb;
    size_t area_end = len < cs ? len : (size_t)cs;
    int r = parse_fields(buf, len, area_end, h, err);
    if (r < 0)
        return r;
    r = check_features(h, err);
    if (r < 0)
        return r;
    size_t ext_end;
    r = parse_backing_name(buf, area_end, h, &ext_end, err);
    if (r < 0)
        return r;
    const uint8_t *ftable = NULL;
    size_t ftable_len = 0;
    r = parse_extensions(buf, ext_end, h->header_length, h, &ftable,
                         &ftable_len, err);
    if (r < 0)
        return r;
    r = check_unknown_features(h, ftable, ftable_len, err);
    if (r < 0)
        return r;
    return check_tables(h, file_size, err);
}

int qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf,
                        size_t len)
{
    size_t hlen = 112;     /* 104 + compression_type, padded to 8 */
    size_t fmtlen = strlen(h->backing_format);
    size_t namelen = strlen(h->backing_name);
    size_t ext = fmtlen ? 8 + ((fmtlen + 7) & ~(size_t)7) : 0;
    size_t need = hlen + ext + 8 + namelen;
    if (need > len || namelen > QCOW2_MAX_BACKING_NAME)
        return -EINVAL;
    memset(buf, 0, len);
    qcow2_put_be32(buf, QCOW2_MAGIC);
    qcow2_put_be32(buf + 4, 3);
    size_t name_off = hlen + ext + 8;
    if (namelen) {
        qcow2_put_be64(buf + 8, name_off);
        qcow2_put_be32(buf + 16, (uint32_t)namelen);
        memcpy(buf + name_off, h->backing_name, namelen);
    }
    qcow2_put_be32(buf + 20, h->cluster_bits);
    qcow2_put_be64(buf + 24, h->size);
    qcow2_put_be32(buf + 36, h->l1_size);
    qcow2_put_be64(buf + 40, h->l1_offset);
    qcow2_put_be64(buf + 48, h->reftable_offset);
    qcow2_put_be32(buf + 56, h->reftable_clusters);
    qcow2_put_be64(buf + 72, h->incompat);
    qcow2_put_be64(buf + 80, h->compat);
    qcow2_put_be64(buf + 88, h->autoclear);
    qcow2_put_be32(buf + 96, h->refcount_order);
    qcow2_put_be32(buf + 100, (uint32_t)hlen);
    size_t off = hlen;
    if (fmtlen) {
        qcow2_put_be32(buf + off, QCOW2_EXT_BACKING_FORMAT);
        qcow2_put_be32(buf + off + 4, (uint32_t)fmtlen);
        memcpy(buf + off + 8, h->backing_format, fmtlen);
        off += ext;
    }
    /* End-of-extensions marker (type 0, length 0) is already zero. */
    return 0;
}
