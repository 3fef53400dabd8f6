#!/bin/bash
# faults-restart.sh — `imgfs copy` and a mount job, NFS -> LUN, ride
# through a restart of the NFS server (scripts/test-servers restart-nfs)
# in the middle of the copy, with reads (NFS -> LUN) or writes (LUN -> NFS,
# a backup) in flight: the NFS side goes through scripts/delay-proxy,
# which stalls every connection once two thirds of the bytes crossed it;
# the server is stopped, the stall lifted (reconnects are refused while
# the server is down), and the server started again on the same export:
# the copy reconnects, re-sends what was lost with the same file handles
# and completes identical (qemu-img compare).  NFS -> LUN: raw and qcow2
# sources, for `imgfs copy` and a mount job; LUN -> NFS: a raw and a
# qcow2 target (a file the copy creates), for both too.  The time from
# the stop to the end of the copy is logged, not asserted; each case
# prints a MATRIX line (fault-proxy.sh; detect: from the stop to the
# first new connection through the proxy).
#
# It restarts the shared nfs-ganesha: run it when no other test uses the
# servers (meson runs integration tests one at a time; by hand, hold the
# test lock exclusively: flock -x LOCK meson test ... faults-restart).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
[[ -f $IMGFS_TEST_ROOT/run/ganesha.pid ]] ||
    { log "this instance shares another's nfs-ganesha; cannot restart it"; exit 77; }

# Long enough for ganesha to come back (it waits for its grace checks).
export IMGFS_REQUEST_TIMEOUT=10 IMGFS_RECONNECT_TIMEOUT=90

. "$(dirname "$0")/fault-proxy.sh"

SIZE=$((48 * 1048576))
fault_sources $SIZE nohole
new_lun 48M 512 thin
lun=$LUN_URL
# LUN -> NFS source: a LUN holding the raw image.
new_lun 48M 512 thin
lun_raw=$LUN_URL
fill_lun "$lun_raw" "$SCRATCH/src.raw"
truncate -s $SIZE "$SCRATCH/zero.raw"
FAULT_AT=$((2 * SIZE / 3))
RESTART=(restart-nfs "stopped nfs-ganesha")   # restart_during VERB STOPPED

# ---- imgfs copy, NFS -> LUN, raw and qcow2 sources -----------------------
for fmt in raw qcow2; do
    case="copy NFS -> LUN, $fmt source, NFS server restart"
    [[ $fmt == raw ]] && name=$src || name=$src_qcow2
    fill_lun "$lun" "$SCRATCH/zero.raw"
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 600"
    err=$SCRATCH/copy.err
    t_start=$(now)
    "$IMGFS" copy -q "$(nfs_via_proxy "$name")" "$(lun_via_proxy "$lun")" 2> "$err" &
    copy_pid=$!
    restart_during "$case" "$copy_pid" "${RESTART[@]}"
    rc=0
    wait "$copy_pid" || rc=$?
    (( rc == 0 )) || fail "$case: the copy did not survive the restart ($rc): $(cat "$err")"
    same_as_lun "$SCRATCH/src.raw" "$lun" "$case"
    log "ok: $case: completed identical $after_stop s after the server was stopped"
    matrix "case=nfs-restart tool=copy src=$fmt dir=nfs->lun side=nfs outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done

# ---- imgfs copy, LUN -> NFS, raw and qcow2 targets -----------------------
for tfmt in raw qcow2; do
    case="copy LUN -> NFS, $tfmt target, NFS server restart"
    out=$(nfs_name "out-copy.$tfmt")
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 600"
    err=$SCRATCH/copy.err
    t_start=$(now)
    "$IMGFS" copy -q --create --target-format "$tfmt" "$lun_raw" "$(nfs_via_proxy "$out")" 2> "$err" &
    copy_pid=$!
    restart_during "$case" "$copy_pid" "${RESTART[@]}"
    rc=0
    wait "$copy_pid" || rc=$?
    (( rc == 0 )) || fail "$case: the copy did not survive the restart ($rc): $(cat "$err")"
    same_as_nfs "$SCRATCH/src.raw" "$out" "$tfmt" "$case"
    log "ok: $case: completed identical $after_stop s after the server was stopped"
    matrix "case=nfs-restart tool=copy src=raw target=$tfmt dir=lun->nfs side=nfs outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done

# ---- mount jobs ----------------------------------------------------------
MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" "dp=$NFS_URL/?nfsport=$p_nfs&mountport=$p_mnt" "ld=$lun" "rd=$lun_raw"
for fmt in raw qcow2; do
    case="mount job NFS -> LUN, $fmt source, NFS server restart"
    [[ $fmt == raw ]] && name=$src || name=$src_qcow2
    fill_lun "$lun" "$SCRATCH/zero.raw"
    mount_job_case "$case" "r-$fmt" "source = dp/$name
target = ld"
    same_as_lun "$SCRATCH/src.raw" "$lun" "$case"
    log "ok: $case: completed identical $after_stop s after the server was stopped"
    matrix "case=nfs-restart tool=mount src=$fmt dir=nfs->lun side=nfs outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done
for tfmt in raw qcow2; do
    case="mount job LUN -> NFS, $tfmt target, NFS server restart"
    out=$(nfs_name "out-job.$tfmt")
    mount_job_case "$case" "b-$tfmt" "source = rd
target = dp/$out
target-format = $tfmt"
    same_as_nfs "$SCRATCH/src.raw" "$out" "$tfmt" "$case"
    log "ok: $case: completed identical $after_stop s after the server was stopped"
    matrix "case=nfs-restart tool=mount src=raw target=$tfmt dir=lun->nfs side=nfs outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done
fuse_umount "$MNT"
! grep -q "ERROR: AddressSanitizer\|runtime error:" "$FUSE_LOG" || fail "memory error in the mount: $(cat "$FUSE_LOG")"
