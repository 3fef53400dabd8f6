#!/bin/bash
# copy-state.sh — `imgfs copy --state FILE` outlives a kill -9: a slow copy
# onto a LUN is killed once FILE holds a durable watermark W > 0; FILE is
# mode 0600 and says running; the same command line again prints
# "resuming at W", copies only SIZE - W bytes, removes FILE, and the LUN equals the source
# (sha256 through qemu-img).  A state file of another copy is refused and
# changes nothing.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
# Checkpoints often, so that a durable watermark > 0 exists long before the
# slow job ends, whatever the machine's speed.
export IMGFS_CHECKPOINT_INTERVAL=0.2

MiB=1048576
SIZE=$((192 * MiB))
new_lun 192M 512 thin; LUN=$LUN_URL
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
SRC_HASH=$(sha256sum < "$SCRATCH/src.raw" | cut -d' ' -f1)
ST=$SCRATCH/copy.state
field() { sed -n "s/^$1: //p" "$ST" | head -n 1; }
CMD=("$IMGFS" copy -q --order strict --requests 1 --request-size 4K --sparse 0
     --state "$ST" "$SCRATCH/src.raw" "$LUN")

"${CMD[@]}" 2> "$SCRATCH/first.err" &
PID=$!
on_exit kill -9 "$PID"
for ((i = 0; i < 600; i++)); do
    [[ -e $ST ]] && (( $(field watermark) > 0 )) && break
    kill -0 "$PID" 2>/dev/null || fail "the copy ended before a checkpoint: $(cat "$SCRATCH/first.err")"
    sleep 0.1
done
kill -9 "$PID"
wait "$PID" 2>/dev/null && fail "the copy was not killed"
W=$(field watermark)
(( W > 0 && W < SIZE )) || fail "watermark '$W' in the state file"
[[ $(field state) == running ]] || fail "state file says '$(field state)'"
[[ $(stat -c %a "$ST") == 600 ]] || fail "state file mode $(stat -c %a "$ST")"
cmp -n "$W" "$SCRATCH/src.raw" "$LUN_FILE" || fail "bytes below the durable watermark differ"
log "killed; durable watermark $W"

log "a state file of another copy is refused"
cp "$ST" "$SCRATCH/saved.state"
expect_fail "state of another copy" "$IMGFS" copy -q --state "$ST" "$SCRATCH/src.raw" null:
cmp "$ST" "$SCRATCH/saved.state" || fail "the refused command changed the state file"

log "the same command (without -q, for its summary) resumes"
"${CMD[@]:0:2}" "${CMD[@]:3}" > "$SCRATCH/second.out" 2> "$SCRATCH/second.err" ||
    fail "resumed copy failed: $(cat "$SCRATCH/second.err")"
grep -q "^copied $((SIZE - W)) bytes" "$SCRATCH/second.out" || fail "it did not copy only the rest: $(cat "$SCRATCH/second.out")"
grep -q "resuming at $W" "$SCRATCH/second.err" || fail "no 'resuming at $W': $(cat "$SCRATCH/second.err")"
[[ ! -e $ST ]] || fail "the state file stayed after success"
[[ $(lun_hash "$LUN") == "$SRC_HASH" ]] || fail "the LUN differs from the source"
exit 0
