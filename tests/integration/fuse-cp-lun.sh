#!/bin/bash
# fuse-cp-lun.sh — `cp IMAGE MNT/lun` works as onto a file: afterwards the
# LUN reads as IMAGE followed by zeroes, whatever it held before.
#   1. a sparse image (data, holes, ending in a hole, size not a multiple
#      of 4 KiB: GNU cp seeks over the holes and ends with ftruncate) and a
#      dense one (cp writes every byte and never truncates), both smaller
#      than the LUN, onto LUNs full of other data (512-byte thin and
#      4096-byte thick blocks), on default and -o page_cache mounts:
#      the LUN, read with qemu-img (not through the mount), equals IMAGE
#      + zeroes built locally (qemu-img compare), and so does the mount;
#   2. st_size stays the LUN's size after the cp;
#   3. `: > MNT/lun` (O_TRUNC) leaves a LUN of zeroes;
#   4. truncate(1) beyond the LUN's size fails (one line, EFBIG) and
#      changes nothing; truncate to the LUN's size changes nothing.
# Seen failing before the fix: cp printed "failed to extend 'MNT/lun':
# Invalid argument" and left the old data in the holes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
LUN_SIZE=$((32 * MiB))

# The images: sparse (on the scratch file system, which keeps holes) and
# dense.
SPARSE=$SCRATCH/sparse.raw
truncate -s $((20 * MiB + 1000)) "$SPARSE"
for at in 0 3 7 11; do
    head -c $((MiB + 4097 * at)) /dev/urandom |
        dd of="$SPARSE" bs=4096 seek=$((at * 256 + 3)) conv=notrunc status=none
done
blocks=$(stat -c %b "$SPARSE")
(( blocks * 512 < 20 * MiB )) ||
    log "note: $SCRATCH keeps no holes; the sparse image is dense here"
DENSE=$SCRATCH/dense.raw
head -c $((12 * MiB + 777)) /dev/urandom > "$DENSE"
head -c "$LUN_SIZE" /dev/urandom > "$SCRATCH/old.raw"
head -c "$LUN_SIZE" /dev/zero > "$SCRATCH/zero.raw"

new_lun 32M 512 thin
LUN512=$LUN_URL
new_lun 32M 4096 thick
LUN4K=$LUN_URL

IMGFS_BIN=$IMGFS
# fuse_mount_fg runs "$IMGFS" mount -f MNT SPEC...; options go before MNT.
imgfs_page_cache() { "$IMGFS_BIN" "$1" -o page_cache "${@:2}"; }

# cp_onto MODE MNT NAME URL IMAGE: case 1 and 2.
cp_onto() {
    local mode=$1 mnt=$2 name=$3 url=$4 image=$5 want=$SCRATCH/want.raw
    fill_lun "$url" "$SCRATCH/old.raw"
    cp "$image" "$mnt/$name" || fail "$mode: cp $(basename "$image") onto $name failed"
    cp "$image" "$want"
    truncate -s "$LUN_SIZE" "$want"
    same_as_lun "$want" "$url" "$mode: cp $(basename "$image") onto $name"
    check_cmp "$want" "$mnt/$name"
    local size
    size=$(stat -c %s "$mnt/$name")
    (( size == LUN_SIZE )) || fail "$mode: $name: st_size $size after cp, not $LUN_SIZE"
    log "ok: $mode: cp $(basename "$image") onto $name: IMAGE + zeroes"
}

for mode in default page_cache; do
    MNT=$SCRATCH/mnt-$mode
    IMGFS=$IMGFS_BIN
    [[ $mode == page_cache ]] && IMGFS=imgfs_page_cache
    fuse_mount_fg "$MNT" "lun512=$LUN512" "lun4k=$LUN4K"
    IMGFS=$IMGFS_BIN
    for lun in lun512 lun4k; do
        url=$LUN512
        [[ $lun == lun4k ]] && url=$LUN4K
        cp_onto "$mode" "$MNT" "$lun" "$url" "$SPARSE"
        cp_onto "$mode" "$MNT" "$lun" "$url" "$DENSE"
    done

    fill_lun "$LUN512" "$SCRATCH/old.raw"
    : > "$MNT/lun512" || fail "$mode: ': > lun512' failed"
    same_as_lun "$SCRATCH/zero.raw" "$LUN512" "$mode: ': > lun512'"
    log "ok: $mode: ': > lun512' leaves zeroes"

    expect_fail "$mode: truncate beyond the LUN" truncate -s $((LUN_SIZE + 512)) "$MNT/lun4k"
    truncate -s "$LUN_SIZE" "$MNT/lun4k" || fail "$mode: truncate to the LUN's size failed"
    cp "$DENSE" "$SCRATCH/want.raw"
    truncate -s "$LUN_SIZE" "$SCRATCH/want.raw"
    same_as_lun "$SCRATCH/want.raw" "$LUN4K" "$mode: truncate beyond / to the LUN's size"
    log "ok: $mode: truncate beyond the LUN refused, to its size a no-op"
    fuse_umount "$MNT"
    (( FUSE_RC == 0 )) || { cat "$FUSE_LOG" >&2; fail "$mode: mount exited with $FUSE_RC"; }
done
log "all ok"
