#!/bin/bash
# faults-copy.sh — `imgfs copy` rides through NFS and iSCSI network
# faults.  One side of every copy goes through scripts/delay-proxy, whose
# control pipe injects the fault once two thirds of the image have crossed
# it ("after BYTES ..."), so each fault lands mid-copy; the other side
# connects directly.  NFS faults: the NFS side (MOUNT and NFS) goes
# through the proxy; iSCSI faults: the LUN side (its portal) does:
#   reset        every connection reset      -> completes, identical
#   short stall  black hole < request timeout -> completes, identical
#   long stall   request timeout < black hole < request + reconnect
#                timeout: imgfs reconnects   -> completes, identical
#   outage       black hole longer than request + reconnect timeout
#                -> fails with a watermark; the black hole is lifted and
#                `--resume-from WATERMARK` completes, identical (watermark
#                0: the copy is run again from the start)
# for NFS -> LUN and LUN -> NFS, with a raw and a qcow2 source, faults on
# either side.  Results are checked with qemu-img compare.  Times (how
# long the copy took, how long after the fault it completed or failed)
# are logged, not asserted.
# Short timeouts keep it quick: IMGFS_REQUEST_TIMEOUT=2,
# IMGFS_RECONNECT_TIMEOUT=4.  Each case prints a MATRIX line
# (fault-proxy.sh; scripts/fault-matrix).  FAULTS_SIDES=iscsi (or nfs) runs one side only.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"

export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=4
SHORT_STALL=0.5      # < request timeout
LONG_STALL=3        # > request timeout, < request + reconnect timeout
OUTAGE=120          # far longer; lifted by hand once the copy failed

. "$(dirname "$0")/fault-proxy.sh"

# ---- images ------------------------------------------------------------
SIZE=$((24 * 1048576))
fault_sources $SIZE
src_raw=$src
# LUN -> NFS sources: one LUN with the raw image, one holding the qcow2 file.
new_lun 24M 512 thin
lun_raw=$LUN_URL
fill_lun "$lun_raw" "$SCRATCH/src.raw"
qsize=$(stat -c %s "$SCRATCH/src.qcow2")
new_lun $(( (qsize + 1048575) / 1048576 ))M 512 thin
lun_qcow2=$LUN_URL
qemu-img convert -n -f raw -O raw "$SCRATCH/src.qcow2" "$lun_qcow2" ||
    fail "cannot write the qcow2 file to $lun_qcow2"
# NFS -> LUN target, cleared before each copy.
new_lun 24M 512 thin
lun_target=$LUN_URL
truncate -s $SIZE "$SCRATCH/zero.raw"

# The fault lands after two thirds of the image crossed the proxy: mid-
# copy, and late enough that, with LUN -> NFS, the first writes have been
# answered (the answers lag the data by the writes in flight), so an
# outage leaves a watermark above zero.
FAULT_AT=$((2 * SIZE / 3))

# check_result CASE KIND TARGET: the target holds the source image.
check_result() {
    local case=$1 kind=$2 target=$3 out
    if [[ $kind == lun ]]; then
        same_as_lun "$SCRATCH/src.raw" "$target" "$case"
    else
        out=$(qemu-img compare -f raw -F raw "$SCRATCH/src.raw" "$(nfs_qemu_url "$target")" 2>&1) ||
            fail "$case: $target differs from the source: $out"
    fi
}

# run_copy CASE FAULT SRC DST ARGS...: arm FAULT, copy SRC -> DST with
# ARGS; sets rc, err (stderr), took (s), after_fault (s from the fault to
# the end).  Fails the test if the fault did not fire during the copy.
run_copy() {
    local case=$1 fault=$2 src=$3 dst=$4 t0 t1 tf fired
    shift 4
    fired=$(fired_count)
    fw_begin
    ctl "after $FAULT_AT $fault"
    t0=$(now)
    err=$SCRATCH/copy.err
    "$IMGFS" copy -q "$@" "$src" "$dst" 2> "$err" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        fw_poll
        sleep 0.05
    done
    rc=0
    wait "$pid" || rc=$?
    t1=$(now)
    fw_end
    (( $(fired_count) > fired )) || fail "$case: the fault never fired (the copy moved fewer than $FAULT_AT bytes?)"
    tf=${fw_tf:-$t1}
    took=$(secs "$t0" "$t1")
    after_fault=$(secs "$tf" "$t1")
    if (( rc != 0 )); then detect=$(fw_detect "$t1"); else detect=$(fw_detect); fi
}

# nfs_side NAME / lun_side URL: the URL of that side of the copy, through
# the proxy when the faults are on its protocol ($side).
nfs_side() { if [[ $side == nfs ]]; then nfs_via_proxy "$1"; else nfs_url "$1"; fi; }
lun_side() { if [[ $side == iscsi ]]; then lun_via_proxy "$1"; else echo "$1"; fi; }

# one_case SIDE DIR FORMAT FAULT_NAME FAULT: SIDE (nfs|iscsi) is the
# protocol whose connections go through the proxy and take the fault.
one_case() {
    local side=$1 dir=$2 fmt=$3 name=$4 fault=$5 case src dst kind target args=() m
    case="$side fault, $dir $fmt, $name"
    m="case=${name// /-} tool=copy src=$fmt dir=${dir/-to-/->} side=$side"
    if [[ $dir == nfs-to-lun ]]; then
        [[ $fmt == raw ]] && src=$(nfs_side "$src_raw") || src=$(nfs_side "$src_qcow2")
        target=$lun_target kind=lun
        dst=$(lun_side "$lun_target")
        fill_lun "$lun_target" "$SCRATCH/zero.raw"     # no leftovers
    else
        [[ $fmt == raw ]] && src=$(lun_side "$lun_raw") || src=$(lun_side "$lun_qcow2")
        [[ $fmt == qcow2 ]] && args=(--source-format qcow2)
        target=$(nfs_name "out-$side-$fmt-${name// /-}.raw") kind=nfs
        dst=$(nfs_side "$target")
        args+=(--create)
    fi
    run_copy "$case" "$fault" "$src" "$dst" "${args[@]}"
    if [[ $name != outage ]]; then
        (( rc == 0 )) || fail "$case: copy failed ($rc): $(cat "$err")"
        check_result "$case" "$kind" "$target"
        log "ok: $case: completed identical in $took s ($after_fault s after the fault)"
        matrix "$m outcome=completed detect=$detect total=${took}s"
        return
    fi
    (( rc != 0 )) || fail "$case: the copy succeeded through a ${OUTAGE}s outage"
    local msg resume
    msg=$(cat "$err")
    # A memory error on the way out (the sanitizers' report) is a failure
    # even though the copy was meant to fail.  NFS: imgfs says one line.
    # iSCSI: libiscsi 1.19 leaks a few bytes when a session is given up
    # in the middle of its own reconnect, so only memory errors count.
    ! grep -q "ERROR: AddressSanitizer\|runtime error:" "$err" ||
        fail "$case: memory error: $msg"
    [[ $side == iscsi || $(grep -c '' "$err") -eq 1 ]] ||
        fail "$case: expected one line on stderr: $msg"
    ctl pass
    log "ok: $case: failed $after_fault s after the fault ($took s in all; request timeout $IMGFS_REQUEST_TIMEOUT s + reconnect timeout $IMGFS_RECONNECT_TIMEOUT s): $msg"
    resume=$(sed -n 's/.*resume with[: a-z]*--resume-from \([0-9]*\).*/\1/p' <<< "$msg")
    # Watermark 0 (no write answered before the fault; how far the
    # answers lag depends on the server's load): the copy starts over.
    grep -q "(watermark 0: nothing to resume)" <<< "$msg" && resume=0
    [[ -n $resume ]] || fail "$case: no watermark in: $msg"
    grep -q "iSCSI session lost\|NFS connection lost" <<< "$msg" ||
        fail "$case: the failure does not say the connection was lost: $msg"
    args=("${args[@]/--create/--overwrite}")
    if (( resume > 0 )); then
        copy_ok "$case: resumed from $resume" --resume-from "$resume" "${args[@]}" "$src" "$dst"
    else
        copy_ok "$case: copied again from the start" "${args[@]}" "$src" "$dst"
    fi
    check_result "$case (resumed)" "$kind" "$target"
    log "ok: $case: resumed from $resume, identical"
    matrix "$m outcome=failed-then-resumed detect=$detect total=${took}s"
}

for side in ${FAULTS_SIDES:-nfs iscsi}; do
    for dir in nfs-to-lun lun-to-nfs; do
        for fmt in raw qcow2; do
            one_case $side $dir $fmt reset "reset"
            one_case $side $dir $fmt "short stall" "blackhole $SHORT_STALL"
            one_case $side $dir $fmt "long stall" "blackhole $LONG_STALL"
            one_case $side $dir $fmt outage "blackhole $OUTAGE"
        done
    done
done

# The control pipe refuses what it does not understand.
echo "explode now" > "$proxy_ctl"
for _ in $(seq 100); do grep -q '^ctl bad explode now$' "$proxy_out" && break; sleep 0.02; done
grep -q '^ctl bad explode now$' "$proxy_out" || fail "proxy did not refuse a bad command"
log "rode through resets and stalls; outages fail with a watermark and resume"
