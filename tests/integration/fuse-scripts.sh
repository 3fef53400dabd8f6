#!/bin/bash
# fuse-scripts.sh — scripts/imgfs-deploy and scripts/imgfs-backup end to
# end against the real servers: a qcow2 template on NFS deployed onto a
# LUN (checked with qemu-img compare and the LUN's hash), a LUN backed up
# into the NFS export as raw and as compressed qcow2 (qemu-img compare /
# check), and failures (target too small, bad arguments): non-zero exit,
# a message, the mount point gone.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
DEPLOY=$SOURCE_DIR/scripts/imgfs-deploy
BACKUP=$SOURCE_DIR/scripts/imgfs-backup
export IMGFS TMPDIR=$SCRATCH

MiB=1048576
"$DEPLOY" --help | grep -q "usage: imgfs-deploy" || fail "imgfs-deploy --help"
"$BACKUP" --help | grep -q "usage: imgfs-backup" || fail "imgfs-backup --help"
expect_fail "imgfs-deploy without arguments" "$DEPLOY"
expect_fail "imgfs-backup with a bad NAME" "$BACKUP" "iscsi://x/y/1" "$(nfs_url "")" "a/b"

log "deploy a qcow2 template onto a LUN"
# Template: data, a hole, data (so the qcow2 has unallocated clusters).
truncate -s $((32 * MiB)) "$SCRATCH/template.raw"
dd if=/dev/urandom of="$SCRATCH/template.raw" bs=1M count=5 conv=notrunc status=none
dd if=/dev/urandom of="$SCRATCH/template.raw" bs=1M seek=20 count=3 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$SCRATCH/template.raw" "$SCRATCH/template.qcow2"
TPL=$(nfs_name template.qcow2)
nfs_put "$SCRATCH/template.qcow2" "$TPL"
new_lun 32M 512 thin
LUN=$LUN_URL
# Fill the LUN first so the holes must really be written as zeroes.
head -c $((32 * MiB)) /dev/urandom > "$SCRATCH/junk.raw"
qemu-img convert -n -f raw -O raw "$SCRATCH/junk.raw" "$LUN"
"$DEPLOY" --verify "$(nfs_url "$TPL")" "$LUN" > "$SCRATCH/deploy.out" || fail "imgfs-deploy failed"
[[ $(lun_hash "$LUN") == $(lun_hash "$SCRATCH/template.raw") ]] || fail "deployed LUN differs"
[[ -z $(ls -A "$SCRATCH" | grep '^imgfs-deploy\.') ]] || fail "the temporary mount point was left"

log "deploy onto a too small LUN fails, names the reason"
new_lun 16M 512 thin
if "$DEPLOY" "$(nfs_url "$TPL")" "$LUN_URL" 2> "$SCRATCH/deploy.err"; then
    fail "deploy onto a 16M LUN succeeded"
fi
grep -q "too small" "$SCRATCH/deploy.err" || fail "message: $(cat "$SCRATCH/deploy.err")"
grep -qs "imgfs" /proc/mounts && grep -q "$SCRATCH/imgfs-deploy" /proc/mounts && fail "left mounted"

log "backup a LUN into the NFS export: raw, then compressed qcow2"
RAW=$(nfs_name backup.raw)
"$BACKUP" "$LUN" "$(nfs_url "")" "$RAW" >/dev/null || fail "imgfs-backup raw failed"
check_cmp "$SCRATCH/template.raw" "$(nfs_path "$RAW")"
if "$BACKUP" "$LUN" "$(nfs_url "")" "$RAW" 2> "$SCRATCH/backup.err"; then
    fail "backup over an existing file without --overwrite succeeded"
fi
grep -q "exists" "$SCRATCH/backup.err" || fail "message: $(cat "$SCRATCH/backup.err")"
"$BACKUP" --overwrite --verify "$LUN" "$(nfs_url "")" "$RAW" >/dev/null || fail "--overwrite failed"
check_cmp "$SCRATCH/template.raw" "$(nfs_path "$RAW")"
QC=$(nfs_name backup.qcow2)
"$BACKUP" --qcow2 --compress "$LUN" "$(nfs_url "")" "$QC" >/dev/null || fail "imgfs-backup qcow2 failed"
qemu-img check "$(nfs_path "$QC")" || fail "qemu-img check of the qcow2 backup"
qemu-img compare "$(nfs_path "$QC")" "$SCRATCH/template.raw" || fail "qcow2 backup differs"
log "ok"
