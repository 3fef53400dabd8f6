#!/bin/bash
# fuse-resume.sh — `resume = yes` in a mount job continues a stopped job at
# its watermark: a slow job is cancelled (rm) once it has passed a few MiB,
# the same job text plus `resume = yes` is written again, and its status
# says `resumed-from: WATERMARK` (bytes-done starts there) and the target
# ends identical to the source.  For a LUN target (written in place) and a
# raw file the job creates in an NFS directory (which, resumed, must not be
# refused as "exists and is not empty" nor recreated; until complete it
# is the hidden partial file .NAME.imgfs-partial, which the resume
# continues).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
new_lun 64M 512 thin; LUN=$LUN_URL
head -c $((64 * MiB)) /dev/urandom > "$SCRATCH/src.raw"
OUT=$(nfs_name out.raw)

MNT=$SCRATCH/mnt
fuse_mount "$MNT" "src=$SCRATCH/src.raw" "lun=$LUN" "d=$(nfs_url "")"

# A job slow enough to be stopped half-way: one 4 KiB request at a time.
slow_job() {
    printf 'source = src\ntarget = %s\norder = strict\nrequests = 1\nrequest-size = 4K\nsparse = 0\n%s' "$1" "${2:-}"
}

# cancel_midway JOB: wait until JOB's watermark passed 4 MiB, rm it; prints
# the watermark it stopped at (0 if it finished first).
cancel_midway() {
    local job=$1 i wm=0
    for ((i = 0; i < 600; i++)); do
        wm=$(job_field "$MNT" "$job" watermark)
        (( wm >= 4 * MiB )) && break
        sleep 0.05
    done
    rm "$MNT/control/$job.job"
    [[ $(job_field "$MNT" "$job" state) == cancelled ]] || { echo 0; return; }
    job_field "$MNT" "$job" watermark
}

resume_case() {
    local target=$1 check=$2 partial=${3:-$2}
    log "resume onto $target"
    put_job "$MNT" r "$(slow_job "$target")" || fail "slow job refused: $(cat "$SCRATCH/cp.err")"
    local wm
    wm=$(cancel_midway r)
    if (( wm == 0 || wm >= 64 * MiB )); then
        log "the job finished before it could be cancelled; resume not exercised"
        rm -f "$MNT/control/r.status"
        return
    fi
    log "cancelled at watermark $wm"
    cmp -n "$wm" "$SCRATCH/src.raw" "$partial" || fail "bytes below the watermark differ"
    put_job "$MNT" r "source = src
target = $target
resume = yes" || fail "resume job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/r.job" >/dev/null || fail "resumed job failed: $(job_field "$MNT" r error)"
    local from
    from=$(job_field "$MNT" r resumed-from)
    [[ $from == "$wm" ]] || fail "resumed at '$from', expected the watermark $wm"
    check_cmp "$SCRATCH/src.raw" "$check"
    rm "$MNT/control/r.job"
}

resume_case lun "$MNT/lun"
resume_case "d/$OUT" "$MNT/d/$OUT" "$(nfs_path ".$OUT.imgfs-partial")"

log "without resume = yes a stopped job's NFS target is not replaced"
put_job "$MNT" r "$(slow_job "d/$OUT")" && fail "a job replaced a non-empty file without overwrite"
grep -q "File exists" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
exit 0
