#!/bin/bash
# faults-kill.sh — a mount job outlives its mount: the fault matrix's
# "mount SIGKILLed and remounted" (case=kill) and "unmount during a job"
# (case=unmount) cells, NFS -> LUN with a raw and a qcow2 source and
# LUN -> NFS with a raw target (a file the job creates, published when
# complete).  Each case
# starts a job held slow by its rate limit, waits until its state file
# (-o state=DIR) holds a durable watermark W > 0, then
#   kill:    kill -9 of the `imgfs mount -f` process (and a lazy unmount),
#   unmount: fusermount3 -u (the mount process must exit 0),
# mounts again with the same state directory: the job is listed as
# interrupted at W, the target's bytes below W equal the source's (cmp),
# `imgfs wait` refuses it; touch control/NAME.job resumes it (its rate
# lifted through control/NAME.rate), `imgfs wait` follows it to done,
# resumed-from = W, its state file is gone and the target is identical
# (qemu-img compare).  No sanitizer report in any mount's log.  Each case
# prints a MATRIX line (fault-proxy.sh's format; outcome
# failed-then-resumed, detect "-": the fault is the test's own act).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

# Checkpoints often: a durable watermark > 0 exists soon after the start.
export IMGFS_CHECKPOINT_INTERVAL=0.2
# Slow enough to be stopped part-way on any machine, lifted after resume.
RATE=4M

SIZE=$((24 * 1048576))
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
dd if=/dev/zero of="$SCRATCH/src.raw" bs=1M seek=8 count=4 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$SCRATCH/src.raw" "$SCRATCH/src.qcow2"
src=$(nfs_name src.raw)
src_qcow2=$(nfs_name src.qcow2)
nfs_put "$SCRATCH/src.raw" "$src"
nfs_put "$SCRATCH/src.qcow2" "$src_qcow2"
new_lun 24M 512 thin
lun=$LUN_URL lun_file=$LUN_FILE
new_lun 24M 512 thin
lun_raw=$LUN_URL
fill_lun "$lun_raw" "$SCRATCH/src.raw"
truncate -s $SIZE "$SCRATCH/zero.raw"

MNT=$SCRATCH/mnt
STATE=$SCRATCH/state

# mount_it: imgfs mount -f with the state directory: dd the export, ld
# the target LUN, rd the LUN holding the raw image.
mount_it() {
    fuse_mount_fg "$MNT" -o "state=$STATE" "dd=$(nfs_url "")" "ld=$lun" "rd=$lun_raw"
}

# no_sanitizer_report: the log of the mount that just ended is clean.
no_sanitizer_report() {
    ! grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$FUSE_LOG" ||
        fail "$1: sanitizer report in the mount: $(cat "$FUSE_LOG")"
}

state_file() { ls "$STATE"/*/"$1".state 2>/dev/null | head -n 1; }
state_field() { sed -n "s/^$2: //p" "$(state_file "$1")" | head -n 1; }

# wait_durable CASE JOB: until JOB's state file holds a watermark > 0.
wait_durable() {
    local case=$1 job=$2 f i
    for ((i = 0; i < 600; i++)); do
        f=$(state_file "$job")
        [[ -n $f ]] && (( $(state_field "$job" watermark) > 0 )) && return 0
        [[ $(job_field "$MNT" "$job" state) == running ]] ||
            fail "$case: the job is $(job_field "$MNT" "$job" state): $(job_field "$MNT" "$job" error)"
        sleep 0.1
    done
    fail "$case: no durable watermark in the state file"
}

# (as in fault-proxy.sh, which this test does not need)
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
matrix() { echo "MATRIX $*" >&2; }

mount_it

# one_case FAULT DIR FMT
one_case() {
    local fault=$1 dir=$2 fmt=$3 case job text target_file check w why t0 out=""
    case="$fault during a mount job, $dir, $fmt"
    job=k-$fault-$dir-$fmt
    if [[ $dir == nfs-to-lun ]]; then
        fill_lun "$lun" "$SCRATCH/zero.raw"
        [[ $fmt == raw ]] && text="source = dd/$src" || text="source = dd/$src_qcow2"
        text+="
target = ld"
        target_file=$lun_file
    else
        out=$(nfs_name "out-$fault.raw")
        text="source = rd
target = dd/$out"
        # published when complete: until then the hidden partial file
        target_file=$(nfs_path ".$out.imgfs-partial")
    fi
    text+="
rate = $RATE"
    t0=$(now)
    put_job "$MNT" "$job" "$text" || fail "$case: job refused: $(cat "$SCRATCH/cp.err")"
    wait_durable "$case" "$job"
    if [[ $fault == kill ]]; then
        kill -9 "$FUSE_PID"
        wait "$FUSE_PID" 2>/dev/null || true
        fusermount3 -u -z "$MNT"
        why="mount ended"
    else
        fuse_umount "$MNT"
        (( FUSE_RC == 0 )) || fail "$case: imgfs mount exited $FUSE_RC at unmount: $(cat "$FUSE_LOG")"
        [[ $(state_field "$job" state) == interrupted ]] ||
            fail "$case: after unmount the state file says '$(state_field "$job" state)'"
        why="unmounted"
    fi
    no_sanitizer_report "$case"
    mount_it
    [[ -e $MNT/control/$job.status ]] || fail "$case: after the remount the job is gone"
    [[ $(job_field "$MNT" "$job" state) == interrupted ]] ||
        fail "$case: after the remount the job is '$(job_field "$MNT" "$job" state)', not interrupted"
    [[ -n $(state_file "$job") ]] || fail "$case: the interrupted job has no state file"
    w=$(state_field "$job" watermark)
    [[ $(job_field "$MNT" "$job" watermark) == "$w" ]] ||
        fail "$case: status watermark $(job_field "$MNT" "$job" watermark), state file $w"
    job_field "$MNT" "$job" error | grep -q "$why" ||
        fail "$case: error: $(job_field "$MNT" "$job" error)"
    (( w > 0 && w < SIZE )) || fail "$case: watermark $w"
    cmp -n "$w" "$SCRATCH/src.raw" "$target_file" ||
        fail "$case: the target's bytes below the durable watermark $w differ"
    [[ -z $out || ! -e $(nfs_path "$out") ]] || fail "$case: $out published before the job ended"
    "$IMGFS" wait "$MNT/control/$job.job" 2> "$SCRATCH/wait.err" &&
        fail "$case: imgfs wait succeeded on an interrupted job"
    grep -q "interrupted.*resume with: touch $MNT/control/$job.job" "$SCRATCH/wait.err" ||
        fail "$case: wait said: $(cat "$SCRATCH/wait.err")"
    touch "$MNT/control/$job.job" || fail "$case: touch did not resume: $(job_field "$MNT" "$job" error)"
    echo 0 > "$MNT/control/$job.rate" || fail "$case: cannot lift the rate limit"
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2> "$SCRATCH/wait.err" ||
        fail "$case: the resumed job failed: $(job_field "$MNT" "$job" error)"
    [[ $(job_field "$MNT" "$job" resumed-from) == "$w" ]] ||
        fail "$case: resumed-from '$(job_field "$MNT" "$job" resumed-from)', expected $w"
    [[ -z $(state_file "$job") ]] || fail "$case: the done job left its state file"
    if [[ $dir == nfs-to-lun ]]; then
        same_as_lun "$SCRATCH/src.raw" "$lun" "$case"
    else
        check=$(qemu-img compare -f raw -F raw "$SCRATCH/src.raw" "$(nfs_qemu_url "$out")" 2>&1) ||
            fail "$case: $out differs from the source: $check"
    fi
    log "ok: $case: interrupted at $w, resumed, identical"
    matrix "case=$fault tool=mount src=$fmt dir=${dir/-to-/->} side=mount${out:+ target=raw} outcome=failed-then-resumed detect=- total=$(secs "$t0" "$(now)")s"
    rm "$MNT/control/$job.job"
}

for fault in kill unmount; do
    one_case "$fault" nfs-to-lun raw
    one_case "$fault" nfs-to-lun qcow2
    one_case "$fault" lun-to-nfs raw
done
fuse_umount "$MNT"
(( FUSE_RC == 0 )) || fail "imgfs mount exited $FUSE_RC: $(cat "$FUSE_LOG")"
no_sanitizer_report "the last mount"
