/* qcow2-map.c — translate a guest offset through the L1 and L2 entries
 * into "unallocated / zero / data at host offset / compressed", validating
 * each entry it uses. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2-internal.h"

int qcow2_l1_lookup(struct qcow2_state *s, uint64_t off, uint64_t *l2_offset)
{
    uint64_t span_bits = s->cluster_bits +
        (uint64_t)__builtin_ctzll(s->l2_entries);
    uint64_t idx = span_bits >= 64 ? 0 : off >> span_bits;
    *l2_offset = 0;
    if (idx >= s->l1_entries)
        return 0;
    uint64_t e = s->l1[idx];
    uint64_t l2 = e & QCOW2_OFFSET_MASK;
    if (l2 == 0)
        return 0;
    if (l2 % s->cluster_size || (e & 0x1ff)) {
        image_set_error(s->img, "L1 entry %" PRIu64 ": L2 table offset "
                        "0x%" PRIx64 " is not cluster aligned", idx, l2);
        return -EINVAL;
    }
    uint64_t l1_bytes = (uint64_t)s->h.l1_size * 8;
    uint64_t rt_bytes = (uint64_t)s->h.reftable_clusters * s->cluster_size;
    if (l2 < s->cluster_size ||
        (l2 < s->h.l1_offset + l1_bytes && s->h.l1_offset < l2 + s->cluster_size) ||
        (l2 < s->h.reftable_offset + rt_bytes &&
         s->h.reftable_offset < l2 + s->cluster_size)) {
        image_set_error(s->img, "L1 entry %" PRIu64 ": L2 table at 0x%" PRIx64
                        " overlaps the header, the L1 table or the refcount "
                        "table", idx, l2);
        return -EINVAL;
    }
    if (l2 >= s->file_size) {
        image_set_error(s->img, "L1 entry %" PRIu64 ": L2 table at 0x%" PRIx64
                        " lies past the end of the file", idx, l2);
        return -EINVAL;
    }
    *l2_offset = l2;
    return 0;
}

static int bad_entry(struct qcow2_state *s, uint64_t off, uint64_t e,
                     const char *why)
{
    image_set_error(s->img, "L2 entry for guest offset %" PRIu64
                    " (0x%016" PRIx64 "): %s", off, e, why);
    return -EINVAL;
}

int qcow2_map(struct qcow2_state *s, const struct qcow2_l2_slot *slot,
              uint64_t off, struct qcow2_mapping *m)
{
    uint64_t cs = s->cluster_size;
    uint64_t in_cluster = off & (cs - 1);
    m->length = cs - in_cluster;
    m->host_offset = m->comp_offset = m->comp_len = 0;
    if (!slot) {    /* no L2 table: the whole table span is unallocated */
        uint64_t span = cs * s->l2_entries;
        m->kind = QK_UNALLOC;
        m->length = span - (off & (span - 1));
        return 0;
    }
    uint64_t i = (off >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t e = qcow2_l2_entry(s, slot, i);
    if (e & QCOW2_OFLAG_COMPRESSED) {
        unsigned x = 62 - (s->cluster_bits - 8);
        uint64_t coff = e & ((1ull << x) - 1);
        uint64_t nsec = (e >> x) & ((1ull << (s->cluster_bits - 8)) - 1);
        m->kind = QK_COMPRESSED;
        m->comp_offset = coff;
        m->comp_len = (nsec + 1) * 512 - (coff & 511);
        if (coff < cs || coff >= s->file_size)
            return bad_entry(s, off, e, "compressed data offset out of "
                             "range");
        return 0;
    }
    uint64_t host = e & QCOW2_OFFSET_MASK;
    if (s->l2_entry_bytes == 16) {
        uint64_t bm = qcow2_l2_bitmap(s, slot, i);
        uint32_t alloc = (uint32_t)bm, zero = (uint32_t)(bm >> 32);
        if (alloc & zero)
            return bad_entry(s, off, e, "subcluster both allocated and zero");
        uint64_t scs = cs / QCOW2_SUBCLUSTERS;
        unsigned sc = (unsigned)(in_cluster / scs);
        enum qcow2_kind k = (alloc >> sc) & 1 ? QK_DATA :
                            (zero >> sc) & 1 ? QK_ZERO : QK_UNALLOC;
        unsigned end = sc + 1;
        while (end < QCOW2_SUBCLUSTERS) {
            enum qcow2_kind k2 = (alloc >> end) & 1 ? QK_DATA :
                                 (zero >> end) & 1 ? QK_ZERO : QK_UNALLOC;
            if (k2 != k)
                break;
            end++;
        }
        m->kind = k;
        m->length = end * scs - in_cluster;
        if (k != QK_DATA)
            return 0;
        if (host == 0)
            return bad_entry(s, off, e, "allocated subcluster without a "
                             "host offset");
    } else {
        if (e & QCOW2_OFLAG_ZERO) {
            m->kind = QK_ZERO;
            return 0;
        }
        if (host == 0) {
            m->kind = QK_UNALLOC;
            return 0;
        }
        m->kind = QK_DATA;
    }
    if (host % cs || (e & 0x1fe))
        return bad_entry(s, off, e, "data cluster offset not aligned");
    if (host < cs || host >= s->file_size)
        return bad_entry(s, off, e, "data cluster offset out of range");
    m->host_offset = host + in_cluster;
    return 0;
}
