#!/bin/bash
# faults-enospc.sh — a backup LUN -> NFS onto an export that runs out of
# space fails with a clear error and a watermark, and completes once space
# is freed.  The test servers' small export (48 MiB tmpfs, NFS_SMALL_URL)
# is filled with a filler file (nfs-cp) so that less room is left than
# the backup needs; then, for `imgfs copy --create` and for a mount job
# into the small export as an NFS directory, with a raw and a qcow2
# target:
#   the copy/job fails; its error names ENOSPC ("No space left on device"
#   or the server's NFS3ERR_NOSPC) and it
#   reports a watermark (copy: "bytes before W" / "--resume-from W" /
#   "watermark 0"; job: state failed, watermark: W); no sanitizer report;
#   the filler is removed through NFS (rm in an imgfs mount of the export:
#   ganesha keeps files it wrote open, a local rm would free nothing)
#   and the copy is resumed as its message says (copy) or the job written
#   again with `resume = yes`; a qcow2 target, which cannot be continued,
#   is removed and copied again from 0: it completes and qemu-img compare
#   finds the target identical to the source (qemu-img check: no errors).
# Then the qcow2 metadata: copies to a qcow2 target with a little more
# room than its data needs (32 MiB + 128..352 KiB in 32 KiB steps), so
# that some fail writing the data, some writing an L2 table, some
# committing the metadata at the end: every failure names ENOSPC (the
# server's status or the errno text), and at least one was a metadata
# write.
# Each case prints a MATRIX line (fault-proxy.sh's format; detect: from the
# moment the export's free space fell below 1 MiB, sampled every 50 ms, to
# the failure).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
if [[ -z ${NFS_SMALL_URL:-} || -z ${NFS_SMALL_DIR:-} ]]; then
    log "the test servers have no small export (scripts/test-servers --help); skipping"
    exit 77
fi
small_url() { echo "$NFS_SMALL_URL/$1${NFS_QUERY:-}"; }
small_free() { echo $(( $(stat -f -c '%a * %S' "$NFS_SMALL_DIR") )); }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
matrix() { echo "MATRIX $*" >&2; }

# The error must name ENOSPC by its errno text (also when libnfs split a
# WRITE into several RPCs and only its error text quotes the server's
# NFS3ERR_NOSPC(-28)).
ENOSPC_TEXT='No space left on device'

MiB=1048576
SIZE=$((32 * MiB))
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
new_lun 32M 512 thin
lun=$LUN_URL
fill_lun "$lun" "$SCRATCH/src.raw"

# The mount: the small export as an NFS directory (s), the source LUN.
MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" "lun=$lun" "s=$NFS_SMALL_URL/${NFS_QUERY:-}"
# Our files in the small export go through NFS at exit (before the unmount).
small_rm_ours() { rm -f -- "$MNT/s/$TEST_NAME-$$-"* "$MNT/s/.$TEST_NAME-$$-"*; }
on_exit small_rm_ours
# small_rm NAME: remove NAME (and its partial file, if any) through NFS.
small_rm() { rm -f -- "$MNT/s/$1" "$MNT/s/.$1.imgfs-partial"; }

# Leave 16 MiB free: half the backup fits.
free0=$(small_free)
(( free0 > SIZE )) || fail "the small export has only $free0 bytes free (others' files in $NFS_SMALL_DIR?)"
filler_size=$(( (free0 - 16 * MiB) / MiB * MiB ))
head -c $filler_size /dev/urandom > "$SCRATCH/filler"
filler=$TEST_NAME-$$-filler
put_filler() {
    small_rm "$filler"
    nfs-cp "$SCRATCH/filler" "$(small_url "$filler")" > /dev/null || fail "cannot write the filler"
}
free_space() { small_rm "$filler"; }

# watch PID [JOBNAME]: wait for PID; sets t_full (free space < 1 MiB
# first seen) and t_fail (the job's failed state first seen, else the end).
watch() {
    local pid=$1 job=${2:-}
    t_full="" t_fail=""
    while kill -0 "$pid" 2>/dev/null; do
        [[ -n $t_full ]] || (( $(small_free) >= MiB )) || t_full=$(now)
        if [[ -n $job && -z $t_fail && $(job_field "$MNT" "$job" state) == failed ]]; then t_fail=$(now); fi
        sleep 0.05
    done
    [[ -n $t_fail ]] || t_fail=$(now)
    [[ -n $t_full ]] || t_full=$t_fail
}

# check NAME FORMAT DESC: the target holds the source image (qemu-img's
# NFS driver has no port options: it finds the one ganesha through rpcbind).
check() {
    local out
    out=$(qemu-img compare -f raw -F "$2" "$SCRATCH/src.raw" "$NFS_SMALL_URL/$1" 2>&1) ||
        fail "$3: $1 differs from the source: $out"
    if [[ $2 == qcow2 ]]; then
        out=$(qemu-img check -f qcow2 "$NFS_SMALL_URL/$1" 2>&1) || fail "$3: qemu-img check: $out"
    fi
}

# ---- imgfs copy ----------------------------------------------------------
copy_case() {
    local fmt=$1 case name args=() msg rc=0 w t0 t1
    case="imgfs copy LUN -> NFS, $fmt target, ENOSPC"
    name=$TEST_NAME-$$-copy.$fmt
    args=(--create)
    [[ $fmt == qcow2 ]] && args+=(--target-format qcow2)
    put_filler
    t0=$(now)
    "$IMGFS" copy -q "${args[@]}" "$lun" "$(small_url "$name")" 2> "$SCRATCH/copy.err" &
    local pid=$!
    watch $pid
    wait $pid || rc=$?
    t1=$(now)
    msg=$(cat "$SCRATCH/copy.err")
    (( rc != 0 )) || fail "$case: the copy succeeded with $((free0 - filler_size)) bytes free"
    ! grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$SCRATCH/copy.err" ||
        fail "$case: sanitizer report: $msg"
    [[ $(grep -c '' "$SCRATCH/copy.err") -eq 1 ]] || fail "$case: expected one line on stderr: $msg"
    grep -q "$ENOSPC_TEXT" <<< "$msg" || fail "$case: the error does not name ENOSPC: $msg"
    grep -q "watermark 0\|bytes before [0-9]\|--resume-from [0-9]\|restart from 0" <<< "$msg" ||
        fail "$case: no watermark in: $msg"
    log "ok: $case: failed: $msg"
    free_space
    # Resume as the message says; a qcow2 target cannot be continued (its
    # metadata is written at the end): the copy starts again from 0.
    w=$(sed -n 's/.*--resume-from \([0-9]*\).*/\1/p' <<< "$msg")
    if [[ $fmt == qcow2 ]] || grep -q "rerun the same command" <<< "$msg"; then
        w=""
        small_rm "$name"
    elif [[ -e $NFS_SMALL_DIR/$name ]]; then
        args=("${args[@]/--create/--overwrite}")     # the target exists
    fi
    copy_ok "$case: resumed${w:+ from $w}" ${w:+--resume-from "$w"} "${args[@]}" "$lun" "$(small_url "$name")"
    check "$name" "$fmt" "$case"
    log "ok: $case: resumed${w:+ from $w}, identical"
    matrix "case=enospc tool=copy src=raw dir=lun->nfs side=nfs target=$fmt outcome=failed-then-resumed detect=$(secs "$t_full" "$t1")s total=$(secs "$t0" "$t1")s"
    small_rm "$name"
}

copy_case raw
copy_case qcow2

log "qcow2 metadata writes that run out of space"
meta_seen=0
for extra in 128 160 192 224 256 288 320 352; do
    name=$TEST_NAME-$$-meta.qcow2
    small_rm "$filler"
    head -c $(( $(small_free) - SIZE - extra * 1024 )) /dev/zero > "$SCRATCH/filler.meta"
    nfs-cp "$SCRATCH/filler.meta" "$(small_url "$filler")" > /dev/null || fail "cannot write the filler"
    rc=0
    "$IMGFS" copy -q --create --target-format qcow2 "$lun" "$(small_url "$name")" 2> "$SCRATCH/copy.err" || rc=$?
    msg=$(cat "$SCRATCH/copy.err")
    small_rm "$name"
    if (( rc == 0 )); then
        log "32 MiB + $extra KiB free: the copy fit"
        continue
    fi
    ! grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$SCRATCH/copy.err" ||
        fail "32 MiB + $extra KiB free: sanitizer report: $msg"
    grep -q "$ENOSPC_TEXT" <<< "$msg" || fail "32 MiB + $extra KiB free: the error does not name ENOSPC: $msg"
    grep -q "L2 table\|metadata\|refcount\|header" <<< "$msg" && meta_seen=$((meta_seen + 1))
    log "ok: 32 MiB + $extra KiB free: $msg"
done
small_rm "$filler"
(( meta_seen > 0 )) || fail "no qcow2 metadata write ran out of space (the sizes above need adjusting)"

# ---- a mount job ---------------------------------------------------------

job_case() {
    local fmt=$1 case name job text state wm error t0 t1
    case="mount job LUN -> NFS, $fmt target, ENOSPC"
    name=$TEST_NAME-$$-job.$fmt
    job=b-$fmt
    text="source = lun
target = s/$name
target-format = $fmt"
    put_filler
    t0=$(now)
    put_job "$MNT" "$job" "$text" || fail "$case: job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2>&1 &
    local pid=$!
    watch $pid "$job"
    wait $pid && fail "$case: the job succeeded with $((free0 - filler_size)) bytes free"
    t1=$t_fail
    state=$(job_field "$MNT" "$job" state)
    wm=$(job_field "$MNT" "$job" watermark)
    error=$(job_field "$MNT" "$job" error)
    [[ $state == failed ]] || fail "$case: state '$state', expected failed"
    [[ $wm =~ ^[0-9]+$ ]] || fail "$case: no watermark in the status: $(cat "$MNT/control/$job.status")"
    grep -q "$ENOSPC_TEXT" <<< "$error" || fail "$case: the error does not name ENOSPC: $error"
    log "ok: $case: failed at watermark $wm: $error"
    free_space
    if [[ $fmt == qcow2 ]]; then
        # A qcow2 target cannot be continued: the job runs again from 0.
        small_rm "$name"
    else
        text+="
resume = yes"
    fi
    put_job "$MNT" "$job" "$text" || fail "$case: resume job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2>&1 ||
        fail "$case: resumed job failed: $(job_field "$MNT" "$job" error)"
    check "$name" "$fmt" "$case"
    if [[ $fmt == qcow2 ]]; then
        log "ok: $case: copied again from 0, identical"
    else
        log "ok: $case: resumed (resumed-from: $(job_field "$MNT" "$job" resumed-from)), identical"
    fi
    matrix "case=enospc tool=mount src=raw dir=lun->nfs side=nfs target=$fmt outcome=failed-then-resumed detect=$(secs "$t_full" "$t1")s total=$(secs "$t0" "$t1")s"
    rm "$MNT/control/$job.job"
    small_rm "$name"
}

job_case raw
job_case qcow2
small_rm_ours
fuse_umount "$MNT"
! grep -q "ERROR: AddressSanitizer\|runtime error:" "$FUSE_LOG" || fail "sanitizer report in the mount: $(cat "$FUSE_LOG")"
log "ENOSPC fails naming it, with a watermark; freed, the backups complete identical"
