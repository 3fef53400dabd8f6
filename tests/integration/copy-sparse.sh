#!/bin/bash
# copy-sparse.sh — sparse sources onto targets that held data before.
#
# The source has data, holes and a run of written zeroes.  Every target
# (NFS file, local file, thin LUNs with 512- and 4096-byte blocks) is first
# filled with random data, so the holes must be written as zeroes (or
# unmapped) to read back right; each copy is checked with cmp or
# `qemu-img compare`.  On thin LUNs the backing file must have become sparse
# where the source had holes or zeroes (checked with SEEK_DATA on the
# backing file, which was fully allocated before the copy).
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
SIZE_MIB=32
SIZE=$((SIZE_MIB * MiB))
# Layout of the source (MiB):  [0,3) data  [3,11) hole  [11,14) data
# [14,18) written zeroes  [18,20) data  [20,32) hole (to the end).
ZERO_RANGES=("3 11" "14 18" "20 32")

make_sparse_source() {
    local f=$1
    rm -f "$f"
    truncate -s "$SIZE" "$f"
    dd if=/dev/urandom of="$f" bs=1M seek=0 count=3 conv=notrunc status=none
    dd if=/dev/urandom of="$f" bs=1M seek=11 count=3 conv=notrunc status=none
    dd if=/dev/zero of="$f" bs=1M seek=14 count=4 conv=notrunc status=none
    dd if=/dev/urandom of="$f" bs=1M seek=18 count=2 conv=notrunc status=none
}

# no_data_in FILE START_MIB END_MIB: FILE has no allocated data in the range.
no_data_in() {
    python3 - "$1" "$(($2 * MiB))" "$(($3 * MiB))" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
start, end = int(sys.argv[2]), int(sys.argv[3])
try:
    data = os.lseek(fd, start, os.SEEK_DATA)
except OSError as e:
    if e.errno != errno.ENXIO:
        raise
    data = None        # no data at or after start
sys.exit(0 if data is None or data >= end else 1)
EOF
}

# check_sparse_where_source_was_zero FILE DESC
check_sparse() {
    local r
    for r in "${ZERO_RANGES[@]}"; do
        # shellcheck disable=SC2086
        no_data_in "$1" $r || fail "$2: $1 still has data in MiB range [${r/ /,})"
    done
}

# check_allocated FILE DESC: the zero ranges are allocated (before a copy).
check_allocated() {
    local r
    for r in "${ZERO_RANGES[@]}"; do
        # shellcheck disable=SC2086
        ! no_data_in "$1" $r || fail "$2: $1 has a hole in [${r/ /,}) before the copy"
    done
}

make_sparse_source "$SCRATCH/sparse.raw"
head -c "$SIZE" /dev/urandom > "$SCRATCH/junk.raw"
# The source really is sparse where it should be (else the test proves less).
no_data_in "$SCRATCH/sparse.raw" 3 11 || log "note: scratch filesystem did not keep the source's holes"

# ---- file → NFS file that held data (each order mode) ------------------
for order in strict pipelined any; do
    t=$(nfs_name "target-$order.raw")
    nfs_put "$SCRATCH/junk.raw" "$t"
    copy_ok "file→nfs over data --order $order" --order "$order" --overwrite \
        "$SCRATCH/sparse.raw" "$(nfs_url "$t")"
    check_cmp "$SCRATCH/sparse.raw" "$(nfs_path "$t")"
done

# ---- file → thin LUN (512) that held data --------------------------------
new_lun "${SIZE_MIB}M" 512 thin
lun=$LUN_URL lun_file=$LUN_FILE
fill_lun "$lun" "$SCRATCH/junk.raw"
check_allocated "$lun_file" "thin LUN after filling"
copy_ok "file→thin LUN" "$SCRATCH/sparse.raw" "$lun"
same_as_lun "$SCRATCH/sparse.raw" "$lun" "file→thin LUN"
check_sparse "$lun_file" "file→thin LUN"

# ---- NFS (no block status: zero detection) → thin LUN that held data ----
src=$(nfs_name sparse-src.raw)
nfs_put "$SCRATCH/sparse.raw" "$src"
fill_lun "$lun" "$SCRATCH/junk.raw"
check_allocated "$lun_file" "thin LUN after refilling"
copy_ok "nfs→thin LUN" "$(nfs_url "$src")" "$lun"
same_as_lun "$SCRATCH/sparse.raw" "$lun" "nfs→thin LUN"
check_sparse "$lun_file" "nfs→thin LUN"

# ---- thin LUN (sparse now: GET LBA STATUS) → NFS file that held data ----
t=$(nfs_name from-lun.raw)
nfs_put "$SCRATCH/junk.raw" "$t"
copy_ok "thin LUN→nfs over data" --overwrite "$lun" "$(nfs_url "$t")"
check_cmp "$SCRATCH/sparse.raw" "$(nfs_path "$t")"

# ---- thin LUN → local file that held data --------------------------------
cp "$SCRATCH/junk.raw" "$SCRATCH/local-target.raw"
copy_ok "thin LUN→file over data" --overwrite "$lun" "$SCRATCH/local-target.raw"
check_cmp "$SCRATCH/sparse.raw" "$SCRATCH/local-target.raw"

# ---- file → thin LUN with 4096-byte blocks that held data ----------------
new_lun "${SIZE_MIB}M" 4096 thin
fill_lun "$LUN_URL" "$SCRATCH/junk.raw"
check_allocated "$LUN_FILE" "thin 4k LUN after filling"
copy_ok "file→thin 4k LUN, order any" --order any "$SCRATCH/sparse.raw" "$LUN_URL"
same_as_lun "$SCRATCH/sparse.raw" "$LUN_URL" "file→thin 4k LUN"
check_sparse "$LUN_FILE" "file→thin 4k LUN"

log "holes read back as zeroes everywhere; thin LUNs became sparse"
