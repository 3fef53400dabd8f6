#!/bin/bash
# fuse-persist.sh — jobs outlive the mount: a slow job onto a LUN, then
#  (a) kill -9 of the `imgfs mount -f` process: the next mount with the same
#      -o state=DIR lists the job as interrupted with its durable watermark
#      W > 0 (the one its state file holds); `imgfs wait` refuses it naming
#      `touch`; touch control/r.job resumes it; resumed-from == W, done, the
#      LUN equals the source (sha256 through qemu-img);
#  (b) the same after `fusermount3 -u` during the job (a clean unmount
#      keeps it as interrupted);
#  (c) rm control/r.job forgets an interrupted job and its state file;
#  (d) the state directory is 0700 and its files 0600.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
# Checkpoints often, so that a durable watermark > 0 exists long before the
# slow job ends, whatever the machine's speed.
export IMGFS_CHECKPOINT_INTERVAL=0.2

MiB=1048576
SIZE=$((96 * MiB))
new_lun 96M 512 thin; LUN=$LUN_URL
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
SRC_HASH=$(sha256sum < "$SCRATCH/src.raw" | cut -d' ' -f1)
MNT=$SCRATCH/mnt
STATE=$SCRATCH/state
mkdir -p "$MNT"

# mount_fg: imgfs mount -f with the state directory, in the background.
mount_fg() {
    fuse_mount_fg "$MNT" -o "state=$STATE" "$@" "src=$SCRATCH/src.raw" "lun=$LUN"
    PID=$FUSE_PID
}

state_file() { ls "$STATE"/*/r.state 2>/dev/null | head -n 1; }
state_field() { sed -n "s/^$1: //p" "$(state_file)" | head -n 1; }

# A job slow enough to be stopped part-way: one 4 KiB request at a time.
JOB='source = src
target = lun
order = strict
requests = 1
request-size = 4K
sparse = 0'

# start_and_wait_durable: start the slow job; return once its state file
# holds a durable watermark > 0 (a checkpoint completed).
start_and_wait_durable() {
    put_job "$MNT" r "$JOB" || fail "slow job refused: $(cat "$SCRATCH/cp.err")"
    local i
    for ((i = 0; i < 600; i++)); do
        local f
        f=$(state_file)
        [[ -n $f ]] && (( $(state_field watermark) > 0 )) && break
        [[ $(job_field "$MNT" r state) == running ]] || fail "the job is $(job_field "$MNT" r state): $(job_field "$MNT" r error)"
        sleep 0.1
    done
    (( $(state_field watermark) > 0 )) || fail "no durable watermark in the state file"
    [[ $(state_field state) == running ]] || fail "state file says $(state_field state)"
}

# resume_and_check: after a remount, the job is interrupted at the state
# file's watermark; touch resumes it to done and the LUN is the source.
resume_and_check() {
    local why=$1 w
    w=$(state_field watermark)
    [[ $(job_field "$MNT" r state) == interrupted ]] || fail "status says $(job_field "$MNT" r state), expected interrupted"
    [[ $(job_field "$MNT" r watermark) == "$w" ]] || fail "status watermark $(job_field "$MNT" r watermark), state file $w"
    job_field "$MNT" r error | grep -q "$why" || fail "error: $(job_field "$MNT" r error)"
    (( w > 0 && w < SIZE )) || fail "watermark $w"
    log "interrupted at durable watermark $w"
    cmp -n "$w" "$SCRATCH/src.raw" "$LUN_FILE" || fail "bytes below the durable watermark differ"
    "$IMGFS" wait "$MNT/control/r.job" 2> "$SCRATCH/wait.err" && fail "imgfs wait succeeded on an interrupted job"
    grep -q "interrupted.*resume with: touch $MNT/control/r.job" "$SCRATCH/wait.err" || fail "wait said: $(cat "$SCRATCH/wait.err")"
    touch "$MNT/control/r.job" || fail "touch did not resume: $(job_field "$MNT" r error)"
    "$IMGFS" wait "$MNT/control/r.job" > /dev/null || fail "resumed job failed: $(job_field "$MNT" r error)"
    [[ $(job_field "$MNT" r resumed-from) == "$w" ]] || fail "resumed-from '$(job_field "$MNT" r resumed-from)', expected $w"
    [[ -z $(state_file) ]] || fail "a done job left its state file"
    [[ $(lun_hash "$LUN") == "$SRC_HASH" ]] || fail "the LUN differs from the source"
}

log "(a) kill -9 of the mount during the job"
mount_fg
start_and_wait_durable
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
fusermount3 -u -z "$MNT"
# (d) modes
f=$(state_file)
[[ $(stat -c %a "$(dirname "$f")") == 700 ]] || fail "state dir mode $(stat -c %a "$(dirname "$f")")"
[[ $(stat -c %a "$f") == 600 ]] || fail "state file mode $(stat -c %a "$f")"
mount_fg
resume_and_check "mount ended"
fusermount3 -u "$MNT"; wait "$PID" || fail "imgfs mount exited $?"

log "(b) fusermount3 -u during the job"
head -c $SIZE /dev/zero > "$SCRATCH/zero.raw"; fill_lun "$LUN" "$SCRATCH/zero.raw"
mount_fg
start_and_wait_durable
fusermount3 -u "$MNT"; wait "$PID" || fail "imgfs mount exited $? at unmount"
[[ $(state_field state) == interrupted ]] || fail "after unmount the state file says $(state_field state)"
mount_fg
resume_and_check "unmounted"

log "(c) rm forgets an interrupted job and its state file"
start_and_wait_durable
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
fusermount3 -u -z "$MNT"
mount_fg
[[ $(job_field "$MNT" r state) == interrupted ]] || fail "not interrupted"
rm "$MNT/control/r.job"
[[ -z $(state_file) ]] || fail "rm left the state file"
[[ ! -e $MNT/control/r.status ]] || fail "rm left the status file"
fusermount3 -u "$MNT"; wait "$PID" || true
mount_fg
[[ ! -e $MNT/control/r.status ]] || fail "a forgotten job came back"
exit 0
