#!/bin/bash
# faults-mount.sh — jobs in `imgfs mount` ride through NFS and iSCSI
# network faults, and NFS directories answer while the server does not.
# The mount holds the export and each LUN twice: once through
# scripts/delay-proxy (dp; lp, rp, qp) and once directly (dd; ld, rd, qd).
# Jobs copy a raw image and the same image as qcow2, NFS -> LUN (source
# dX/SRC, target lX) and LUN -> NFS (source rX, or qX with source-format
# = qcow2, target dX/NAME, a raw file the job creates), with the side of
# the faulty protocol through the proxy (X = p) and the other direct
# (X = d).  The proxy's control pipe lands the fault once two thirds of
# the image crossed it:
#   reset, short stall (< request timeout), long stall (> request timeout,
#   < request + reconnect timeout)
#                  -> `imgfs wait` succeeds, the LUN holds the image;
#   outage         (black hole far past request + reconnect timeout)
#                  -> the job fails, its status says failed with the
#                  connection lost and a watermark; the black hole is
#                  lifted and the job written again with `resume = yes`
#                  completes (resumed-from = the watermark) identical.
# Results are checked with qemu-img compare.  Each case prints a MATRIX
# line (fault-proxy.sh; scripts/fault-matrix).  Then, with the proxy in a
# black hole, `ls` of the proxied NFS directory returns an error (a
# listing is bounded by the request timeout; `timeout 60` only guards
# against a hang) and works again once the black hole is lifted.
# Times (job end after the fault, ls) are logged, not asserted.
# Short timeouts: IMGFS_REQUEST_TIMEOUT=2, IMGFS_RECONNECT_TIMEOUT=4.
# FAULTS_SIDES=nfs (or iscsi, or empty) runs the job cases of one side,
# FAULTS_DIRS=nfs-to-lun (or lun-to-nfs) one direction, FAULTS_FORMATS=raw
# (or qcow2) one source format.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"

export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=4
SHORT_STALL=0.5
LONG_STALL=3
OUTAGE=120

. "$(dirname "$0")/fault-proxy.sh"

# ---- images and the mount -----------------------------------------------
SIZE=$((24 * 1048576))
fault_sources $SIZE
new_lun 24M 512 thin
lun=$LUN_URL
# LUN -> NFS sources: the raw image, and a LUN holding the qcow2 file.
new_lun 24M 512 thin
lun_raw=$LUN_URL
fill_lun "$lun_raw" "$SCRATCH/src.raw"
qsize=$(stat -c %s "$SCRATCH/src.qcow2")
new_lun $(( (qsize + 1048575) / 1048576 ))M 512 thin
lun_qcow2=$LUN_URL
qemu-img convert -n -f raw -O raw "$SCRATCH/src.qcow2" "$lun_qcow2" ||
    fail "cannot write the qcow2 file to $lun_qcow2"
truncate -s $SIZE "$SCRATCH/zero.raw"
FAULT_AT=$((2 * SIZE / 3))

MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" \
    "dp=$NFS_URL/?nfsport=$p_nfs&mountport=$p_mnt" "dd=$(nfs_url "")" \
    "lp=$(lun_via_proxy "$lun")" "ld=$lun" \
    "rp=$(lun_via_proxy "$lun_raw")" "rd=$lun_raw" \
    "qp=$(lun_via_proxy "$lun_qcow2")" "qd=$lun_qcow2"

# wait_job JOB T0: `imgfs wait` on it (started at T0); sets rc,
# after_fault (s from the fault to the end of the job), took (s from T0)
# and detect (fault-proxy.sh: a reconnect, or the job's failed state).
wait_job() {
    local job=$1 t0=$2 pid t1 tfail=""
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2> "$SCRATCH/wait.err" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        fw_poll
        if [[ -z $tfail && $(job_field "$MNT" "$job" state) == failed ]]; then tfail=$(now); fi
        sleep 0.05
    done
    rc=0
    wait "$pid" || rc=$?
    t1=$(now)
    fw_end
    after_fault=$(secs "${fw_tf:-$t1}" "$t1")
    took=$(secs "$t0" "$t1")
    if (( rc != 0 )); then detect=$(fw_detect "${tfail:-$t1}"); else detect=$(fw_detect); fi
}

# check_target KIND NAME DESC: the LUN, or the NFS file NAME, holds the
# source image.
check_target() {
    local out
    if [[ $1 == lun ]]; then
        same_as_lun "$SCRATCH/src.raw" "$lun" "$3"
    else
        out=$(qemu-img compare -f raw -F raw "$SCRATCH/src.raw" "$(nfs_qemu_url "$2")" 2>&1) ||
            fail "$3: $2 differs from the source: $out"
    fi
}

# one_case SIDE DIR FORMAT NAME FAULT
one_case() {
    local side=$1 dir=$2 fmt=$3 name=$4 fault=$5 case job from to fired state wm error
    local x kind out="" text m t0
    case="$side fault, mount job, $dir $fmt, $name"
    m="case=${name// /-} tool=mount src=$fmt dir=${dir/-to-/->} side=$side"
    job=j-$side-$dir-$fmt-${name// /-}
    if [[ $dir == nfs-to-lun ]]; then
        [[ $side == nfs ]] && x=p || x=d
        [[ $fmt == raw ]] && from=d$x/$src || from=d$x/$src_qcow2
        [[ $side == iscsi ]] && x=p || x=d
        to=l$x kind=lun
        fill_lun "$lun" "$SCRATCH/zero.raw"
        text="source = $from
target = $to"
    else
        [[ $side == iscsi ]] && x=p || x=d
        [[ $fmt == raw ]] && from=r$x || from=q$x
        [[ $side == nfs ]] && x=p || x=d
        out=$(nfs_name "out-$side-$fmt-${name// /-}.raw")
        to=d$x/$out kind=nfs
        text="source = $from
target = $to"
        [[ $fmt == raw ]] || text+="
source-format = qcow2"
    fi
    fired=$(fired_count)
    fw_begin
    ctl "after $FAULT_AT $fault"
    t0=$(now)
    put_job "$MNT" "$job" "$text" || fail "$case: job refused: $(cat "$SCRATCH/cp.err")"
    wait_job "$job" "$t0"
    (( $(fired_count) > fired )) || fail "$case: the fault never fired"
    if [[ $name != outage ]]; then
        (( rc == 0 )) || fail "$case: job failed: $(job_field "$MNT" "$job" error)"
        check_target "$kind" "$out" "$case"
        log "ok: $case: completed identical ($after_fault s after the fault)"
        matrix "$m outcome=completed detect=$detect total=${took}s"
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
    put_job "$MNT" "$job" "$text
resume = yes" || fail "$case: resume job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2>&1 ||
        fail "$case: resumed job failed: $(job_field "$MNT" "$job" error)"
    if (( wm > 0 )); then
        [[ $(job_field "$MNT" "$job" resumed-from) == "$wm" ]] ||
            fail "$case: resumed from '$(job_field "$MNT" "$job" resumed-from)', expected $wm"
    fi
    check_target "$kind" "$out" "$case (resumed)"
    log "ok: $case: resumed from $wm, identical"
    matrix "$m outcome=failed-then-resumed detect=$detect total=${took}s"
    rm "$MNT/control/$job.job"
}

for side in ${FAULTS_SIDES-nfs iscsi}; do
    for dir in ${FAULTS_DIRS-nfs-to-lun lun-to-nfs}; do
        for fmt in ${FAULTS_FORMATS-raw qcow2}; do
            one_case $side $dir $fmt reset "reset"
            one_case $side $dir $fmt "short stall" "blackhole $SHORT_STALL"
            one_case $side $dir $fmt "long stall" "blackhole $LONG_STALL"
            one_case $side $dir $fmt outage "blackhole $OUTAGE"
        done
    done
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
