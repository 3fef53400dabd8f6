#!/bin/bash
# faults-mount.sh — jobs in `imgfs mount` ride through NFS and iSCSI
# network faults, and NFS directories answer while the server does not.
# The mount holds each export and the LUN twice: once through
# scripts/delay-proxy (dp, lp) and once directly (dd, ld).  A job copies
# the same raw image NFS -> LUN with the faulty side through the proxy:
#   NFS faults     source dp/SRC, target ld
#   iSCSI faults   source dd/SRC, target lp
# The proxy's control pipe lands the fault once two thirds of the image
# crossed it:
#   reset, short stall (< request timeout), long stall (> request timeout,
#   < request + reconnect timeout)
#                  -> `imgfs wait` succeeds, the LUN holds the image;
#   outage         (black hole far past request + reconnect timeout)
#                  -> the job fails, its status says failed with the
#                  connection lost and a watermark; the black hole is
#                  lifted and the job written again with `resume = yes`
#                  completes (resumed-from = the watermark) identical.
# Results are checked with qemu-img compare.  Then, with the proxy in a
# black hole, `ls` of the proxied NFS directory returns an error (a
# listing is bounded by the request timeout; `timeout 60` only guards
# against a hang) and works again once the black hole is lifted.
# Times (job end after the fault, ls) are logged, not asserted.
# Short timeouts: IMGFS_REQUEST_TIMEOUT=2, IMGFS_RECONNECT_TIMEOUT=5.
# FAULTS_SIDES=nfs (or iscsi, or empty) runs the job cases of one side.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"

export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=5
SHORT_STALL=0.5
LONG_STALL=4
OUTAGE=120

. "$(dirname "$0")/fault-proxy.sh"

# ---- images and the mount -----------------------------------------------
SIZE=$((24 * 1048576))
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
dd if=/dev/zero of="$SCRATCH/src.raw" bs=1M seek=8 count=4 conv=notrunc status=none
src=$(nfs_name src.raw)
nfs_put "$SCRATCH/src.raw" "$src"
new_lun 24M 512 thin
lun=$LUN_URL
truncate -s $SIZE "$SCRATCH/zero.raw"
FAULT_AT=$((2 * SIZE / 3))

MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" \
    "dp=$NFS_URL/?nfsport=$p_nfs&mountport=$p_mnt" "dd=$(nfs_url "")" \
    "lp=iscsi://127.0.0.1:$p_iscsi/${lun#iscsi://*/}" "ld=$lun"

# wait_job JOB: `imgfs wait` on it; sets rc, and tf/after_fault (s from
# the fault to the end of the job).
wait_job() {
    local job=$1 fired=$2 pid t1
    tf=""
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2> "$SCRATCH/wait.err" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [[ -z $tf ]] && (( $(fired_count) > fired )); then tf=$(now); fi
        sleep 0.05
    done
    rc=0
    wait "$pid" || rc=$?
    t1=$(now)
    [[ -n $tf ]] || tf=$t1
    after_fault=$(secs "$tf" "$t1")
}

# one_case SIDE NAME FAULT
one_case() {
    local side=$1 name=$2 fault=$3 case job from to fired state wm error
    case="$side fault, mount job, $name"
    job=j-$side-${name// /-}
    if [[ $side == nfs ]]; then from=dp/$src to=ld; else from=dd/$src to=lp; fi
    fill_lun "$lun" "$SCRATCH/zero.raw"
    fired=$(fired_count)
    ctl "after $FAULT_AT $fault"
    put_job "$MNT" "$job" "source = $from
target = $to" || fail "$case: job refused: $(cat "$SCRATCH/cp.err")"
    wait_job "$job" "$fired"
    (( $(fired_count) > fired )) || fail "$case: the fault never fired"
    if [[ $name != outage ]]; then
        (( rc == 0 )) || fail "$case: job failed: $(job_field "$MNT" "$job" error)"
        same_as_lun "$SCRATCH/src.raw" "$lun" "$case"
        log "ok: $case: completed identical ($after_fault s after the fault)"
        rm "$MNT/control/$job.job"
        return
    fi
    (( rc != 0 )) || fail "$case: the job succeeded through a ${OUTAGE}s outage"
    state=$(job_field "$MNT" "$job" state)
    wm=$(job_field "$MNT" "$job" watermark)
    error=$(job_field "$MNT" "$job" error)
    ctl pass
    [[ $state == failed ]] || fail "$case: state '$state', expected failed"
    [[ $wm =~ ^[0-9]+$ ]] || fail "$case: no watermark in the status: $(cat "$MNT/control/$job.status")"
    grep -q "iSCSI session lost\|NFS connection lost" <<< "$error" ||
        fail "$case: the error does not say the connection was lost: $error"
    log "ok: $case: failed $after_fault s after the fault at watermark $wm: $error"
    put_job "$MNT" "$job" "source = $from
target = $to
resume = yes" || fail "$case: resume job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2>&1 ||
        fail "$case: resumed job failed: $(job_field "$MNT" "$job" error)"
    if (( wm > 0 )); then
        [[ $(job_field "$MNT" "$job" resumed-from) == "$wm" ]] ||
            fail "$case: resumed from '$(job_field "$MNT" "$job" resumed-from)', expected $wm"
    fi
    same_as_lun "$SCRATCH/src.raw" "$lun" "$case (resumed)"
    log "ok: $case: resumed from $wm, identical"
    rm "$MNT/control/$job.job"
}

for side in ${FAULTS_SIDES-nfs iscsi}; do
    one_case $side reset "reset"
    one_case $side "short stall" "blackhole $SHORT_STALL"
    one_case $side "long stall" "blackhole $LONG_STALL"
    one_case $side outage "blackhole $OUTAGE"
done

# ---- an NFS directory while the server does not answer -------------------
ls "$MNT/dp" > /dev/null || fail "ls $MNT/dp failed before the black hole"
ctl "blackhole $OUTAGE"
t0=$(now)
lsrc=0
timeout 60 ls "$MNT/dp/" > /dev/null 2> "$SCRATCH/ls.err" || lsrc=$?
t1=$(now)
ctl pass
(( lsrc != 0 )) || fail "ls of an NFS directory succeeded in a black hole"
(( lsrc != 124 )) || fail "ls of an NFS directory hung in a black hole (killed by timeout 60)"
grep -q "Input/output error" "$SCRATCH/ls.err" ||
    fail "ls in a black hole: expected EIO: $(cat "$SCRATCH/ls.err")"
log "ok: ls of the proxied NFS directory in a black hole failed after $(secs "$t0" "$t1") s: $(head -n 1 "$SCRATCH/ls.err")"
ls "$MNT/dp" > /dev/null || fail "ls $MNT/dp failed after the black hole"
fuse_umount "$MNT"
log "jobs rode through resets and stalls; outages fail with a watermark and resume; NFS directories answer within the request timeout"
