#!/bin/bash
# fuse-files.sh — images as files on a real FUSE mount: an NFS file, the
# NFS export as a directory, iSCSI LUNs (512- and 4096-byte blocks) and a
# local file.  Checked with tools we did not write: stat/ls sizes,
# sha256sum and cmp against the originals, dd writes read back through the
# network (qemu-img), LUN fixed-size-file semantics (fixed size; truncate
# within it zeroes the tail, beyond it is refused; O_TRUNC discards; writes
# past the end fail), a write error reaching the writer
# (write-behind: at write, fsync or close), NFS directory operations against the
# export directory, qemu-img info/compare on mounted files, fio
# --verify=crc32c (sequential and random, 4 KiB–1 MiB) on a mounted NFS file
# and a mounted LUN.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
new_lun 64M 512 thin;  LUN512=$LUN_URL;  LUN512_FILE=$LUN_FILE
new_lun 32M 4096 thin; LUN4K=$LUN_URL

head -c $((24 * MiB)) /dev/urandom > "$SCRATCH/nfs.raw"
NFSF=$(nfs_name file.raw)
nfs_put "$SCRATCH/nfs.raw" "$NFSF"
head -c $((8 * MiB)) /dev/urandom > "$SCRATCH/local.raw"
cp "$SCRATCH/local.raw" "$SCRATCH/local.img"

MNT=$SCRATCH/mnt
fuse_mount "$MNT" "f=$(nfs_url "$NFSF")" "d=$(nfs_url "")" \
    "lun=$LUN512" "lun4k=$LUN4K" "loc=$SCRATCH/local.img"

log "sizes"
[[ $(stat -c %s "$MNT/f") == $((24 * MiB)) ]] || fail "size of f: $(stat -c %s "$MNT/f")"
[[ $(stat -c %s "$MNT/lun") == $((64 * MiB)) ]] || fail "size of lun"
[[ $(stat -c %s "$MNT/lun4k") == $((32 * MiB)) ]] || fail "size of lun4k"
[[ $(stat -c %s "$MNT/loc") == $((8 * MiB)) ]] || fail "size of loc"
[[ $(stat -c %s "$MNT/d/$NFSF") == $((24 * MiB)) ]] || fail "size of d/$NFSF"
ls -l "$MNT" "$MNT/control" >/dev/null
[[ -d $MNT/d && -d $MNT/control ]] || fail "directories missing"
stat -f "$MNT" >/dev/null || fail "statfs"

log "contents equal the originals"
[[ $(sha256sum < "$MNT/f") == $(sha256sum < "$SCRATCH/nfs.raw") ]] || fail "sha256 of f"
check_cmp "$SCRATCH/nfs.raw" "$MNT/d/$NFSF"
check_cmp "$SCRATCH/local.raw" "$MNT/loc"

log "dd onto LUNs, read back through the network"
head -c $((64 * MiB)) /dev/urandom > "$SCRATCH/lun.raw"
dd if="$SCRATCH/lun.raw" of="$MNT/lun" bs=1M conv=fsync status=none || fail "dd to lun"
[[ $(lun_hash "$LUN512") == $(lun_hash "$SCRATCH/lun.raw") ]] || fail "LUN content after dd differs"
check_cmp "$SCRATCH/lun.raw" "$LUN512_FILE"
head -c $((32 * MiB)) /dev/urandom > "$SCRATCH/lun4k.raw"
dd if="$SCRATCH/lun4k.raw" of="$MNT/lun4k" bs=64k oflag=direct status=none || fail "dd to lun4k"
dd if="$MNT/lun4k" of="$SCRATCH/lun4k.back" bs=1M iflag=direct status=none
check_cmp "$SCRATCH/lun4k.raw" "$SCRATCH/lun4k.back"
[[ $(lun_hash "$LUN4K") == $(lun_hash "$SCRATCH/lun4k.raw") ]] || fail "LUN4K content differs"
# An unaligned write on a 4K LUN (read-modify-write).
printf 'imgfs-unaligned' | dd of="$MNT/lun4k" bs=1 seek=5000 conv=notrunc status=none
printf 'imgfs-unaligned' | dd of="$SCRATCH/lun4k.raw" bs=1 seek=5000 conv=notrunc status=none
sync "$MNT/lun4k"
[[ $(lun_hash "$LUN4K") == $(lun_hash "$SCRATCH/lun4k.raw") ]] || fail "unaligned write"

log "LUNs are fixed-size files"
# truncate to S <= the LUN's size makes [S, end) read as zeroes; the size
# stays; beyond the LUN's size it fails and changes nothing.
truncate -s 60M "$MNT/lun" || fail "truncate a LUN to 60M"
[[ $(stat -c %s "$MNT/lun") == $((64 * MiB)) ]] || fail "LUN size changed"
truncate -s 60M "$SCRATCH/lun.raw" && truncate -s 64M "$SCRATCH/lun.raw"
sync "$MNT/lun"
[[ $(lun_hash "$LUN512") == $(lun_hash "$SCRATCH/lun.raw") ]] || fail "LUN after truncate to 60M"
expect_fail "truncate a LUN beyond its size" truncate -s 65M "$MNT/lun"
[[ $(lun_hash "$LUN512") == $(lun_hash "$SCRATCH/lun.raw") ]] || fail "a refused truncate changed the LUN"
expect_fail "write past the end of a LUN" \
    dd if=/dev/zero of="$MNT/lun" bs=1M seek=64 count=1 conv=notrunc status=none
# O_TRUNC discards the LUN (it then reads as zeroes); the size stays.
printf 'head' > "$MNT/lun"
[[ $(stat -c %s "$MNT/lun") == $((64 * MiB)) ]] || fail "O_TRUNC changed the LUN size"
truncate -s 0 "$SCRATCH/lun.raw" && printf 'head' > "$SCRATCH/lun.raw" &&
    truncate -s 64M "$SCRATCH/lun.raw"
sync "$MNT/lun"
[[ $(lun_hash "$LUN512") == $(lun_hash "$SCRATCH/lun.raw") ]] || fail "LUN after O_TRUNC write"

log "NFS directory: create, write, truncate, rename, unlink, mkdir"
N1=$(nfs_name new.raw)
cp "$SCRATCH/local.raw" "$MNT/d/$N1" || fail "cp into the NFS directory"
check_cmp "$SCRATCH/local.raw" "$(nfs_path "$N1")"
dd if="$SCRATCH/lun.raw" of="$MNT/d/$N1" bs=1M count=16 conv=fsync status=none
head -c $((16 * MiB)) "$SCRATCH/lun.raw" > "$SCRATCH/n1.raw"
check_cmp "$SCRATCH/n1.raw" "$(nfs_path "$N1")"
truncate -s 3M "$MNT/d/$N1"
[[ $(stat -c %s "$(nfs_path "$N1")") == $((3 * MiB)) ]] || fail "truncate did not reach the server"
[[ $(stat -c %s "$MNT/d/$N1") == $((3 * MiB)) ]] || fail "size after truncate"
N2=$(nfs_name renamed.raw)
mv "$MNT/d/$N1" "$MNT/d/$N2"
[[ -e $(nfs_path "$N2") && ! -e $(nfs_path "$N1") ]] || fail "rename"
head -c $((3 * MiB)) "$SCRATCH/n1.raw" > "$SCRATCH/n2.raw"
check_cmp "$SCRATCH/n2.raw" "$MNT/d/$N2"
ls "$MNT/d" | grep -qx "$N2" || fail "readdir does not list $N2"
rm "$MNT/d/$N2"
[[ ! -e $(nfs_path "$N2") ]] || fail "unlink"
D1=$(nfs_name dir)
mkdir "$MNT/d/$D1" && [[ -d $(nfs_path "$D1") ]] || fail "mkdir"
cp "$SCRATCH/local.raw" "$MNT/d/$D1/inner.raw"
check_cmp "$SCRATCH/local.raw" "$(nfs_path "$D1")/inner.raw"
rm "$MNT/d/$D1/inner.raw" && rmdir "$MNT/d/$D1"
[[ ! -e $(nfs_path "$D1") ]] || fail "rmdir"

log "qemu-img on mounted files"
Q=$(nfs_name image.qcow2)
qemu-img convert -f raw -O qcow2 "$SCRATCH/local.raw" "$SCRATCH/image.qcow2"
nfs_put "$SCRATCH/image.qcow2" "$Q"
qemu-img info "$MNT/d/$Q" | grep -q '^file format: qcow2' || fail "qemu-img info"
qemu-img info --output=json "$MNT/d/$Q" | grep -q "\"virtual-size\": $((8 * MiB))" ||
    fail "qemu-img info virtual size"
qemu-img compare "$MNT/d/$Q" "$SCRATCH/local.raw" || fail "qemu-img compare"
qemu-img check "$MNT/d/$Q" || fail "qemu-img check"

log "a write error reaches the writer (LUN made read-only on the target)"
lun_name=${LUN4K##*:}
lun_name=${lun_name%/*}
tid=$("$TEST_SERVERS" status 2>&1 | sed -n "s/^$lun_name: tid //p")
[[ -n $tid ]] || fail "no tid for $lun_name"
set_readonly() {
    "$TGTADM" -C "${TGTADM_CONTROL_PORT:-0}" --lld iscsi --op update \
        --mode logicalunit --tid "$tid" --lun 1 --params "readonly=$1"
}
on_exit set_readonly 0
exec 7<>"$MNT/lun4k"
set_readonly 1
if dd if=/dev/urandom of=/dev/fd/7 bs=1M count=4 conv=notrunc,fsync status=none \
        2> "$SCRATCH/dd.err"; then
    fail "writes to a write-protected LUN succeeded"
fi
exec 7>&-
grep -q "Read-only file system" "$SCRATCH/dd.err" || fail "dd message: $(cat "$SCRATCH/dd.err")"
set_readonly 0
dd if="$SCRATCH/lun4k.raw" of="$MNT/lun4k" bs=1M conv=notrunc,fsync status=none ||
    fail "writing after the target became writable again"
[[ $(lun_hash "$LUN4K") == $(lun_hash "$SCRATCH/lun4k.raw") ]] || fail "LUN4K content after rewrite"

log "fio --verify=crc32c"
# fio writes state files (*-verify.state) into its working directory
# unless told not to: run it in the scratch directory as well.
cd "$SCRATCH"
for target in "$MNT/f" "$MNT/lun"; do
    for rw in write randwrite; do
        fio --name=verify --filename="$target" --rw=$rw --bsrange=4k-1m \
            --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
            --ioengine=psync --output=/dev/null ||
            fail "fio $rw on $target"
    done
    fio --name=verify-aio --filename="$target" --rw=randwrite --bs=4k \
        --size=8M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --ioengine=libaio --direct=1 --iodepth=16 --output=/dev/null ||
        fail "fio libaio direct on $target"
done
log "ok"
