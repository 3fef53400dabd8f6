#!/bin/bash
# fuse-empty-job.sh — an empty job file fails at once instead of staying
# queued: a 0-byte file, one of blank lines and comments only (cp fails with
# EINVAL), `touch` of a new job and `> x.job` over a finished one (their
# close's error is ignored by touch and the shell): x.status says
# "failed" and names what a job needs; `imgfs wait` returns 1 (`timeout`
# only guards against the hang this used to be) and the target LUN is
# untouched (sha256).  A job with text still runs after them.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

new_lun 4M 512 thin
head -c $((4 * 1048576)) /dev/urandom > "$SCRATCH/src.raw"
LUN_HASH=$(lun_hash "$LUN_URL")
MNT=$SCRATCH/mnt
fuse_mount "$MNT" "src=$SCRATCH/src.raw" "lun=$LUN_URL"

# empty_fails JOB DESC: after JOB's file was closed empty.
empty_fails() {
    local job=$1 desc=$2 rc=0
    [[ $(job_field "$MNT" "$job" state) == failed ]] ||
        fail "$desc: state '$(job_field "$MNT" "$job" state)', expected failed"
    job_field "$MNT" "$job" error | grep -q "empty job file: a job needs 'source = IMAGE' and 'target = IMAGE'" ||
        fail "$desc: error '$(job_field "$MNT" "$job" error)'"
    timeout 20 "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2> "$SCRATCH/wait.err" || rc=$?
    (( rc != 124 )) || fail "$desc: imgfs wait hung on an empty job"
    (( rc == 1 )) || fail "$desc: imgfs wait exited $rc: $(cat "$SCRATCH/wait.err")"
    log "ok: $desc: $(job_field "$MNT" "$job" error)"
}

: > "$SCRATCH/zero.job"
cp "$SCRATCH/zero.job" "$MNT/control/zero.job" 2> "$SCRATCH/cp.err" &&
    fail "cp of a 0-byte job file succeeded"
grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
empty_fails zero "0-byte job file"

put_job "$MNT" comments "# only a comment

   # and blanks" && fail "cp of a comments-only job file succeeded"
grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
empty_fails comments "job file of comments and blank lines"

# (touch's status is not checked: it closes a duplicate of the descriptor
# first and ignores that close's error)
touch "$MNT/control/touched.job" 2> /dev/null || true
empty_fails touched "touch of a new job file"
[[ $(lun_hash "$LUN_URL") == "$LUN_HASH" ]] || fail "an empty job changed the target LUN"

put_job "$MNT" good "source = src
target = lun" || fail "good job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/good.job" > /dev/null || fail "good job failed: $(job_field "$MNT" good error)"
same_as_lun "$SCRATCH/src.raw" "$LUN_URL" "good job"
( : > "$MNT/control/good.job" ) 2> /dev/null || true    # the shell ignores close's error
empty_fails good "a finished job's file emptied with >"
same_as_lun "$SCRATCH/src.raw" "$LUN_URL" "after emptying the finished job's file"
log "empty job files fail at once naming what a job needs"
