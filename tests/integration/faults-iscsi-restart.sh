#!/bin/bash
# faults-iscsi-restart.sh — `imgfs copy` and a mount job, NFS -> LUN, ride
# through a restart of the iSCSI target (scripts/test-servers
# restart-iscsi: tgtd killed with SIGKILL, down 2 s, started again with
# the same targets and LUNs on the same backing files) in the middle of
# the copy, with writes (NFS -> LUN) or reads (LUN -> NFS, a backup) in
# flight: the LUN side goes through scripts/delay-proxy, which stalls
# every connection once two thirds of the image crossed it; tgtd is
# killed, the stall lifted (logins are refused while tgtd is down), tgtd
# started again: the tool logs in again, re-sends what was lost and
# completes identical (qemu-img compare).  NFS -> LUN: raw and qcow2
# sources, for `imgfs copy` and a mount job; LUN -> NFS: a raw and a
# qcow2 target (a file the copy creates), for both too.  Times are
# logged, not asserted; each case prints a MATRIX line (fault-proxy.sh;
# detect: from the kill to the first new connection).
#
# It restarts the shared tgtd: run it when no other test uses the
# servers (meson runs integration tests one at a time; by hand, hold the
# test lock exclusively: flock -x LOCK meson test ... faults-iscsi-restart).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
[[ -f $IMGFS_TEST_ROOT/run/tgtd.pid ]] || { log "no tgtd of this instance"; exit 77; }

# A lost session is retried for far longer than tgtd needs to come back.
export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=60
# Any sanitizer report fails the test, leaks included: what libiscsi 1.19
# itself leaks when a reconnect's login is refused (tgtd down) is left out
# by tests/lsan-libiscsi.supp (lib.sh), nothing else.
lsan_slow_unwind

. "$(dirname "$0")/fault-proxy.sh"

SIZE=$((32 * 1048576))
fault_sources $SIZE
new_lun 32M 512 thin
lun=$LUN_URL
# LUN -> NFS source: a LUN holding the raw image.
new_lun 32M 512 thin
lun_raw=$LUN_URL
fill_lun "$lun_raw" "$SCRATCH/src.raw"
truncate -s $SIZE "$SCRATCH/zero.raw"
RESTART=(restart-iscsi "killed tgtd")        # restart_during VERB STOPPED
FAULT_AT=$((2 * SIZE / 3))

# copy_result CASE: wait for the copy $copy_pid (stderr in $err); set rc.
copy_result() {
    local case=$1
    rc=0
    wait "$copy_pid" || rc=$?
    ! grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$err" || fail "$case: sanitizer report: $(cat "$err")"
    (( rc == 0 )) || fail "$case: the copy did not survive the restart ($rc): $(cat "$err")"
}

# ---- imgfs copy, NFS -> LUN, raw and qcow2 sources -----------------------
err=$SCRATCH/copy.err
for fmt in raw qcow2; do
    case="copy NFS -> LUN, $fmt source, iSCSI target restart"
    [[ $fmt == raw ]] && name=$src || name=$src_qcow2
    fill_lun "$lun" "$SCRATCH/zero.raw"
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 600"
    t_start=$(now)
    "$IMGFS" copy -q "$(nfs_url "$name")" "$(lun_via_proxy "$lun")" 2> "$err" &
    copy_pid=$!
    restart_during "$case" "$copy_pid" "${RESTART[@]}"
    copy_result "$case"
    same_as_lun "$SCRATCH/src.raw" "$lun" "$case"
    log "ok: $case: completed identical $after_stop s after tgtd was killed"
    matrix "case=iscsi-restart tool=copy src=$fmt dir=nfs->lun side=iscsi outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done

# ---- imgfs copy, LUN -> NFS, raw and qcow2 targets -----------------------
for tfmt in raw qcow2; do
    case="copy LUN -> NFS, $tfmt target, iSCSI target restart"
    out=$(nfs_name "out-copy.$tfmt")
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 600"
    t_start=$(now)
    "$IMGFS" copy -q --create --target-format "$tfmt" "$(lun_via_proxy "$lun_raw")" "$(nfs_url "$out")" 2> "$err" &
    copy_pid=$!
    restart_during "$case" "$copy_pid" "${RESTART[@]}"
    copy_result "$case"
    same_as_nfs "$SCRATCH/src.raw" "$out" "$tfmt" "$case"
    log "ok: $case: completed identical $after_stop s after tgtd was killed"
    matrix "case=iscsi-restart tool=copy src=raw target=$tfmt dir=lun->nfs side=iscsi outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done

# ---- mount jobs ----------------------------------------------------------
MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" "dd=$(nfs_url "")" "lp=$(lun_via_proxy "$lun")" "rp=$(lun_via_proxy "$lun_raw")"
for fmt in raw qcow2; do
    case="mount job NFS -> LUN, $fmt source, iSCSI target restart"
    [[ $fmt == raw ]] && name=$src || name=$src_qcow2
    fill_lun "$lun" "$SCRATCH/zero.raw"
    mount_job_case "$case" "r-$fmt" "source = dd/$name
target = lp"
    same_as_lun "$SCRATCH/src.raw" "$lun" "$case"
    log "ok: $case: completed identical $after_stop s after tgtd was killed"
    matrix "case=iscsi-restart tool=mount src=$fmt dir=nfs->lun side=iscsi outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done
for tfmt in raw qcow2; do
    case="mount job LUN -> NFS, $tfmt target, iSCSI target restart"
    out=$(nfs_name "out-job.$tfmt")
    mount_job_case "$case" "b-$tfmt" "source = rp
target = dd/$out
target-format = $tfmt"
    same_as_nfs "$SCRATCH/src.raw" "$out" "$tfmt" "$case"
    log "ok: $case: completed identical $after_stop s after tgtd was killed"
    matrix "case=iscsi-restart tool=mount src=raw target=$tfmt dir=lun->nfs side=iscsi outcome=completed detect=$detect total=$(secs "$t_start" "$(now)")s"
done
fuse_umount "$MNT"
! grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$FUSE_LOG" || fail "sanitizer report in the mount: $(cat "$FUSE_LOG")"
