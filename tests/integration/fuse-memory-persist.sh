#!/bin/bash
# fuse-memory-persist.sh — a queued job outlives the mount: with
# -o max_jobs=1, a slow job (rate limit) runs and a second one waits as
# queued; its state file says "queued" from the moment it was accepted.
#  (a) kill -9 of the `imgfs mount -f` process: the next mount with the
#      same -o state=DIR starts the queued job by itself (the running one
#      comes back interrupted, as before); it ends done and its target
#      equals its source (cmp, qemu-img compare); no state file is left;
#  (b) the same after `fusermount3 -u` while it is queued;
#  (c) a queued job removed (rm) loses its state file and does not come
#      back.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
head -c $((32 * MiB)) /dev/urandom > "$SCRATCH/slow-src.raw"
head -c $((24 * MiB)) /dev/urandom > "$SCRATCH/src.raw"
MNT=$SCRATCH/mnt
STATE=$SCRATCH/state
mkdir -p "$MNT"

# Fresh targets of the sources' sizes (written in place: top-level images).
fresh_targets() {
    head -c $((32 * MiB)) /dev/zero > "$SCRATCH/slow-dst.raw"
    head -c $((24 * MiB)) /dev/zero > "$SCRATCH/dst.raw"
}

mount_fg() {
    fuse_mount_fg "$MNT" -o "state=$STATE,max_jobs=1" \
        "slowsrc=$SCRATCH/slow-src.raw" "slowdst=$SCRATCH/slow-dst.raw" \
        "src=$SCRATCH/src.raw" "dst=$SCRATCH/dst.raw"
    PID=$FUSE_PID
}

state_file() { ls "$STATE"/*/"$1".state 2>/dev/null | head -n 1; }
state_field() { sed -n "s/^$2: //p" "$(state_file "$1")" | head -n 1; }

# Start the slow job and the one queued behind it (max_jobs=1).
start_two() {
    put_job "$MNT" slow 'source = slowsrc
target = slowdst
rate = 1M' || fail "slow job refused: $(cat "$SCRATCH/cp.err")"
    put_job "$MNT" q 'source = src
target = dst' || fail "second job refused: $(cat "$SCRATCH/cp.err")"
    [[ $(job_field "$MNT" slow state) == running ]] || fail "slow job: $(cat "$MNT/control/slow.status")"
    [[ $(job_field "$MNT" q state) == queued ]] || fail "second job: $(cat "$MNT/control/q.status")"
    grep -q '^queued: waiting for max_jobs' "$MNT/control/q.status" || fail "second job status: $(cat "$MNT/control/q.status")"
    [[ -n $(state_file q) ]] || fail "the queued job has no state file"
    [[ $(state_field q state) == queued ]] || fail "the queued job's state file says '$(state_field q state)'"
}

# After a remount: the queued job runs by itself to done, its target is its
# source; the slow one is interrupted.
check_requeued() {
    local i st
    for ((i = 0; i < 600; i++)); do
        st=$(job_field "$MNT" q state)
        [[ $st == done || $st == failed || $st == cancelled ]] && break
        sleep 0.1
    done
    [[ $st == done ]] || fail "the queued job after the remount: $(cat "$MNT/control/q.status" 2>&1)"
    [[ $(job_field "$MNT" slow state) == interrupted ]] || fail "slow job after the remount: $(job_field "$MNT" slow state)"
    cmp "$SCRATCH/src.raw" "$SCRATCH/dst.raw" || fail "the queued job's target differs from its source"
    qemu-img compare -q -f raw -F raw "$SCRATCH/src.raw" "$SCRATCH/dst.raw" || fail "qemu-img compare: differ"
    [[ -z $(state_file q) ]] || fail "the done job left its state file"
}

log "(a) kill -9 of the mount while a job is queued"
fresh_targets
mount_fg
start_two
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
fusermount3 -u -z "$MNT"
mount_fg
check_requeued
rm "$MNT/control/q.job" "$MNT/control/slow.job"
fusermount3 -u "$MNT"; wait "$PID" || fail "imgfs mount exited $?"

log "(b) fusermount3 -u while a job is queued"
fresh_targets
mount_fg
start_two
fusermount3 -u "$MNT"; wait "$PID" || fail "imgfs mount exited $? at unmount"
[[ $(state_field q state) == queued ]] || fail "after unmount the queued job's state file says '$(state_field q state)'"
mount_fg
check_requeued
rm "$MNT/control/q.job" "$MNT/control/slow.job"

log "(c) rm of a queued job forgets its state file"
fresh_targets
start_two
rm "$MNT/control/q.job"
[[ -z $(state_file q) ]] || fail "rm of the queued job left its state file"
fusermount3 -u "$MNT"; wait "$PID" || true
mount_fg
[[ ! -e $MNT/control/q.status ]] || fail "a removed queued job came back"
cmp -n $((24 * MiB)) /dev/zero "$SCRATCH/dst.raw" || fail "the removed queued job wrote its target"
fusermount3 -u "$MNT"; wait "$PID" || true
log "ok"
