/* iscsi-id.c — identity keys of a LUN (image-id.h): the target name and
 * LUN, and the logical unit's own designator from VPD page 0x83. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "iscsi-priv.h"

/* Longest designator written out in full; longer ones (SCSI name strings
 * may take 255 bytes) are cut and followed by a hash of the whole, so the
 * key stays below IMAGE_ID_KEY_MAX and distinct names stay distinct. */
#define DESIGNATOR_HEX_MAX 64
/* Shortest vendor-specific part of a T10 vendor id taken as unique. */
#define T10_VENDOR_SPECIFIC_MIN 16

void iscsi_target_identity(const char *iqn, int lun, struct image_id *id)
{
    /* iSCSI names are case-insensitive (RFC 3722 folds them to lower
     * case); so is the key. */
    char lower[IMAGE_ID_KEY_MAX];
    size_t n = 0;
    for (; iqn[n] && n < sizeof lower - 1; n++)
        lower[n] = (char)tolower((unsigned char)iqn[n]);
    lower[n] = '\0';
    image_id_add(id, "iscsi:%s:%d", lower, lun);
}

/* Length of designator `d` without trailing NUL and space padding (ASCII
 * designators are padded: tgtd sends 36 bytes for "IET     00010001"). */
static size_t designator_len(const struct scsi_inquiry_device_designator *d)
{
    size_t len = (size_t)d->designator_length;
    if (d->code_set == SCSI_CODESET_BINARY)
        return len;
    while (len && (d->designator[len - 1] == '\0' ||
                   d->designator[len - 1] == ' '))
        len--;
    return len;
}

/* Designators that name one LU in the world, not just on one target
 * host: targets also report numbers of their own (tgtd: NAA 6 with IEEE
 * company id 0 and T10 "IET     00010001", i.e. target 1 LUN 1, equal on
 * every tgtd host), and two LUs that merely share such a number must not
 * be called the same image. */
static bool globally_unique(const struct scsi_inquiry_device_designator *d)
{
    const unsigned char *p = (const unsigned char *)d->designator;
    size_t len = designator_len(d);
    switch (d->designator_type) {
    case SCSI_DESIGNATOR_TYPE_NAA: {
        /* NAA 2 (IEEE extended), 5 (registered), 6 (registered extended)
         * carry an IEEE company id; 3 (locally assigned) is not unique. */
        unsigned naa = p[0] >> 4;
        if (naa == 2)
            return len >= 8 && (p[2] | p[3] | p[4]);
        if (naa == 5 || naa == 6)
            return len >= 8 && ((p[0] & 0x0f) | p[1] | p[2] | (p[3] & 0xf0));
        return false;
    }
    case SCSI_DESIGNATOR_TYPE_EUI_64:
        return len >= 8 && (p[0] | p[1] | p[2]);
    case SCSI_DESIGNATOR_TYPE_SCSI_NAME_STRING:
        return len > 4;
    case SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID:
        /* 8 bytes of vendor, then the vendor's own id: only a long one
         * (a serial number, a UUID) is taken as unique. */
        return len >= 8 + T10_VENDOR_SPECIFIC_MIN;
    default:
        return false;
    }
}

/* Rank of a logical-unit designator type: lower is preferred, -1 unused. */
static int designator_rank(enum scsi_designator_type t)
{
    switch (t) {
    case SCSI_DESIGNATOR_TYPE_NAA: return 0;
    case SCSI_DESIGNATOR_TYPE_EUI_64: return 1;
    case SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID: return 2;
    case SCSI_DESIGNATOR_TYPE_SCSI_NAME_STRING: return 3;
    default: return -1;
    }
}

static const char *designator_word(enum scsi_designator_type t)
{
    switch (t) {
    case SCSI_DESIGNATOR_TYPE_NAA: return "naa";
    case SCSI_DESIGNATOR_TYPE_EUI_64: return "eui64";
    case SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID: return "t10";
    default: return "name";
    }
}

void iscsi_lu_identity(const struct scsi_inquiry_device_identification *di,
                       struct image_id *id)
{
    const struct scsi_inquiry_device_designator *best = NULL;
    int best_rank = 0;
    for (const struct scsi_inquiry_device_designator *d = di->designators;
         d; d = d->next) {
        int rank = designator_rank(d->designator_type);
        if (d->association != SCSI_ASSOCIATION_LOGICAL_UNIT || rank < 0 ||
            d->designator_length <= 0 || !d->designator ||
            !globally_unique(d))
            continue;
        if (!best || rank < best_rank) {
            best = d;
            best_rank = rank;
        }
    }
    if (!best)
        return;
    const unsigned char *p = (const unsigned char *)best->designator;
    size_t len = designator_len(best);
    size_t shown = len > DESIGNATOR_HEX_MAX ? DESIGNATOR_HEX_MAX : len;
    char hex[2 * DESIGNATOR_HEX_MAX + 1];
    for (size_t i = 0; i < shown; i++)
        snprintf(hex + 2 * i, 3, "%02x", p[i]);
    hex[2 * shown] = '\0';
    if (shown == len) {
        image_id_add(id, "lu:%s:%s", designator_word(best->designator_type),
                     hex);
        return;
    }
    uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a of the whole */
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    image_id_add(id, "lu:%s:%s:%016llx",
                 designator_word(best->designator_type), hex,
                 (unsigned long long)h);
}
