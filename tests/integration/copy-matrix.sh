#!/bin/bash
# copy-matrix.sh — `imgfs copy` between local files, NFS and iSCSI on the
# real test servers, in every order mode: file→nfs, nfs→iscsi, iscsi→nfs,
# iscsi→iscsi (512- to 4096-byte blocks), nfs→iscsi (4096-byte blocks),
# iscsi→file.  Sizes are not multiples of the request size.  Every LUN
# target is first filled with other random data (so a copy that writes
# nothing cannot pass), and every copy is checked against the source with
# cmp or `qemu-img compare`.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
ORDERS=(strict pipelined any)
# Not a multiple of 512, 4096 or the 1 MiB default request size.
FILE_SIZE=$((21 * MiB + 12345))
# LUN size: a multiple of 4096, not of 1 MiB nor of 192 KiB.
LUN_KIB=$((20 * 1024 + 12))
LUN_SIZE=$((LUN_KIB * 1024))

# random_file FILE BYTES: random data with a 2 MiB run of zeroes at 5 MiB
# (a zero run the engine may turn into a zero write).
random_file() {
    head -c "$2" /dev/urandom > "$1"
    dd if=/dev/zero of="$1" bs=1M seek=5 count=2 conv=notrunc status=none
}

random_file "$SCRATCH/odd.raw" "$FILE_SIZE"
random_file "$SCRATCH/lunsrc.raw" "$LUN_SIZE"
head -c "$LUN_SIZE" /dev/urandom > "$SCRATCH/junk.raw"

# ---- file → nfs (new file, odd size) ----------------------------------
for order in "${ORDERS[@]}"; do
    name=$(nfs_name "file-nfs-$order.raw")
    copy_ok "file→nfs --order $order" --order "$order" --create \
        "$SCRATCH/odd.raw" "$(nfs_url "$name")"
    check_cmp "$SCRATCH/odd.raw" "$(nfs_path "$name")"
done
# A request size that divides nothing here, with few requests.
name=$(nfs_name "file-nfs-small-requests.raw")
copy_ok "file→nfs, 3 × 192 KiB requests" --requests 3 --request-size 192K \
    --create "$SCRATCH/odd.raw" "$(nfs_url "$name")"
check_cmp "$SCRATCH/odd.raw" "$(nfs_path "$name")"

# ---- LUN pairs ----------------------------------------------------------
src=$(nfs_name src.raw)
nfs_put "$SCRATCH/lunsrc.raw" "$src"
new_lun "${LUN_KIB}K" 512 thin
lun512=$LUN_URL
new_lun "${LUN_KIB}K" 4096 thin
lun4k=$LUN_URL

for order in "${ORDERS[@]}"; do
    # nfs → iscsi (512-byte blocks)
    fill_lun "$lun512" "$SCRATCH/junk.raw"
    copy_ok "nfs→iscsi --order $order" --order "$order" "$(nfs_url "$src")" "$lun512"
    same_as_lun "$SCRATCH/lunsrc.raw" "$lun512" "nfs→iscsi --order $order"

    # iscsi → nfs (new file)
    name=$(nfs_name "iscsi-nfs-$order.raw")
    copy_ok "iscsi→nfs --order $order" --order "$order" --create "$lun512" "$(nfs_url "$name")"
    check_cmp "$SCRATCH/lunsrc.raw" "$(nfs_path "$name")"

    # iscsi → iscsi (512 → 4096-byte blocks)
    fill_lun "$lun4k" "$SCRATCH/junk.raw"
    copy_ok "iscsi→iscsi --order $order" --order "$order" "$lun512" "$lun4k"
    same_as_lun "$SCRATCH/lunsrc.raw" "$lun4k" "iscsi→iscsi --order $order"

    # iscsi (4096-byte blocks) → file (new file)
    out=$SCRATCH/iscsi-file-$order.raw
    copy_ok "iscsi→file --order $order" --order "$order" --create "$lun4k" "$out"
    check_cmp "$SCRATCH/lunsrc.raw" "$out"
    rm -f "$out"

    # nfs → iscsi (4096-byte blocks)
    fill_lun "$lun4k" "$SCRATCH/junk.raw"
    copy_ok "nfs→iscsi 4k --order $order" --order "$order" "$(nfs_url "$src")" "$lun4k"
    same_as_lun "$SCRATCH/lunsrc.raw" "$lun4k" "nfs→iscsi 4k --order $order"
done

# iscsi → iscsi the other way (4096 → 512), small requests.
fill_lun "$lun512" "$SCRATCH/junk.raw"
copy_ok "iscsi→iscsi 4k→512, 5 × 192 KiB requests" --requests 5 --request-size 192K \
    "$lun4k" "$lun512"
same_as_lun "$SCRATCH/lunsrc.raw" "$lun512" "iscsi→iscsi 4k→512"

log "all copies match their sources"
