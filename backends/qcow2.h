/* qcow2.h — the qcow2 format layer, stacked on a protocol image. */
#ifndef IMGFS_QCOW2_H
#define IMGFS_QCOW2_H

#include "image-open.h"

/* True if the first bytes `hdr` (at least 4) carry the qcow2 magic. */
bool qcow2_probe(const uint8_t *hdr, size_t len);

/* Open the qcow2 image stored in `proto` (which the new image takes over,
 * also on failure).  Opens backing files through image_open with names
 * resolved by image_resolve_relative against proto->name, unless
 * opts->no_backing (then only this layer is opened: see image-open.h and
 * EXTENT_BACKING).  Refuses
 * encryption, external data files, unknown incompatible features, the
 * corrupt bit and malformed metadata with -EINVAL/-ENOTSUP and a message
 * naming the field.  Read-only unless opts->write. */
int qcow2_open(struct image *proto, const struct image_open_opts *opts,
               struct image **out, struct errmsg *err);

/* Write a new, empty v3 qcow2 image of `virtual_size` bytes into `proto`
 * (which must read as zeroes or be empty; taken over, also on failure) and
 * return it opened for writing.  opts->cluster_size, ->compress, ->backing
 * apply. */
int qcow2_create(struct image *proto, uint64_t virtual_size,
                 const struct image_open_opts *opts, struct image **out,
                 struct errmsg *err);

/* The backing file name stored in the header of `img` (as written there,
 * unresolved) and its backing format ("raw", "qcow2"; "" when the header
 * gives none).  NULL when `img` is not a qcow2 image or names no backing
 * file.  Valid until the image is closed. */
const char *qcow2_backing_name(const struct image *img);
const char *qcow2_backing_format(const struct image *img);

#endif
