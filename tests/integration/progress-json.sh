#!/bin/bash
# progress-json.sh — machine-readable progress, parsed with python3's json
# module: `imgfs copy --progress=json` (stdout holds only JSON lines, the
# fixed key set, bytes_done never decreasing, a final line with state
# done) and --progress=fd:N (the summary stays on stdout); an error whose
# text holds quotes, a backslash and a tab stays valid JSON and names the
# file exactly; `imgfs wait --json` on a mount job (with "job"), and
# control/NAME.json (one object, the same keys).  Copies are checked with
# cmp.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"

IMGFS=${IMGFS:?IMGFS must name the imgfs binary}
S=$SCRATCH

# check_json FILE MODE [ARGS]: every line of FILE is one JSON object with
# the documented keys; MODE says what else must hold (see the script).
check_json() {
    python3 - "$@" <<'PY' || fail "JSON check of $1 ($2) failed"
import json, sys
path, mode = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
keys = ["state", "bytes_done", "bytes_total", "watermark", "rate",
        "rate_limit", "eta_s", "error", "time"]
lines = open(path, encoding="utf-8").read().splitlines()
assert lines, "no lines"
objs = []
for l in lines:
    o = json.loads(l)
    want = (["job"] if mode.startswith("wait") else []) + keys
    assert list(o) == want, "keys %r" % list(o)
    for k in ("bytes_done", "bytes_total", "watermark", "rate", "rate_limit"):
        assert isinstance(o[k], int) and o[k] >= 0, (k, o[k])
    assert o["eta_s"] is None or isinstance(o["eta_s"], int)
    assert o["error"] is None or isinstance(o["error"], str)
    assert isinstance(o["time"], (int, float)) and o["time"] > 1e9
    objs.append(o)
last = objs[-1]
if mode in ("done", "wait-done"):
    done = [o["bytes_done"] for o in objs]
    assert done == sorted(done), "bytes_done decreased: %r" % done
    assert all(o["state"] in ("queued", "running", "flushing", "verifying")
               for o in objs[:-1]), [o["state"] for o in objs]
    assert last["state"] == "done", last
    assert last["bytes_done"] == last["bytes_total"] == int(args[0]), last
    assert last["watermark"] == last["bytes_total"], last
    assert last["error"] is None and last["eta_s"] == 0, last
    assert len(objs) >= int(args[1]), "only %d lines" % len(objs)
    if len(args) > 2:
        assert all(o["rate_limit"] == int(args[2]) for o in objs), objs
    if mode == "wait-done":
        assert all(o["job"] == args[3] for o in objs), objs
if mode in ("failed", "wait-failed"):
    assert last["state"] == "failed", last
    assert args[0] in last["error"], (args[0], last["error"])
if mode in ("one", "wait-one"):
    assert len(objs) == 1, len(objs)
    if args:
        assert last["state"] == args[0], last
    if len(args) > 1:
        assert last["rate_limit"] == int(args[1]), last
print("%s: %d JSON lines, last %s" % (path, len(objs), json.dumps(last)))
PY
}

M=$((1024 * 1024))
head -c $((24 * M)) /dev/urandom > "$S/src.raw"
truncate -s $((24 * M)) "$S/dst.raw"

# ---- imgfs copy --progress=json: JSON only on stdout ----------------------
"$IMGFS" copy --progress=json --interval 0.2 --rate 16M --overwrite \
    "$S/src.raw" "$S/dst.raw" > "$S/copy.json" 2> "$S/copy.err" ||
    fail "copy --progress=json failed: $(cat "$S/copy.err")"
[[ ! -s $S/copy.err ]] || fail "stderr: $(cat "$S/copy.err")"
check_json "$S/copy.json" done $((24 * M)) 3 $((16 * M))
check_cmp "$S/src.raw" "$S/dst.raw"

# ---- --progress=fd:N: JSON on N, the summary line on stdout --------------
rm -f "$S/dst.raw"; truncate -s $((24 * M)) "$S/dst.raw"
"$IMGFS" copy --progress=fd:7 --interval=0.1 --rate 32M --overwrite \
    "$S/src.raw" "$S/dst.raw" 7> "$S/fd.json" > "$S/fd.out" ||
    fail "copy --progress=fd:7 failed"
grep -q '^copied 25165824 bytes' "$S/fd.out" || fail "summary: $(cat "$S/fd.out")"
check_json "$S/fd.json" done $((24 * M)) 2 $((32 * M))
check_cmp "$S/src.raw" "$S/dst.raw"

# ---- an error text with quotes, a backslash and a tab stays valid JSON -----
BAD=$S/'no"such\	"file'
rc=0
"$IMGFS" copy --progress=json "$BAD" null: > "$S/err.json" 2> "$S/err.err" || rc=$?
(( rc == 1 )) || fail "copy of a missing file: status $rc"
[[ $(grep -c '' "$S/err.err") -eq 1 ]] || fail "stderr: $(cat "$S/err.err")"
check_json "$S/err.json" failed "$BAD"
check_json "$S/err.json" one failed

# ---- bad values are refused before anything runs --------------------------
expect_fail "--progress=xml" "$IMGFS" copy --progress=xml zero:1M null:
expect_fail "a descriptor not open" "$IMGFS" copy --progress=fd:250 zero:1M null:
expect_fail "--interval 0" "$IMGFS" copy --progress=json --interval 0 zero:1M null:
log "imgfs copy JSON progress ok"

# ---- a mount job: imgfs wait --json and control/NAME.json ----------------
need_servers
new_lun $((24 * M)) 512 thin
MNT=$S/mnt
fuse_mount "$MNT" -o nostate "src=$S/src.raw" "lun=$LUN_URL"
put_job "$MNT" deploy "source = src
target = lun
rate = 12M" || fail "job refused: $(cat "$SCRATCH/cp.err")"
cat "$MNT/control/deploy.json" > "$S/running.json"
check_json "$S/running.json" wait-one
"$IMGFS" wait --json --interval 0.2 "$MNT/control/deploy.job" > "$S/wait.json" ||
    fail "imgfs wait --json: $(job_field "$MNT" deploy error)"
check_json "$S/wait.json" wait-done $((24 * M)) 3 $((12 * M)) deploy
cat "$MNT/control/deploy.json" > "$S/done.json"
check_json "$S/done.json" wait-one done $((12 * M))
same_as_lun "$S/src.raw" "$LUN_URL" "job with rate = 12M"

# A refused job whose error quotes what the job file said, quotes, a
# backslash and all, reads as valid JSON in both places.
put_job "$MNT" bad 'source = no"such\image
target = lun' && fail "a job with a missing source was accepted"
cat "$MNT/control/bad.json" > "$S/bad.json"
check_json "$S/bad.json" wait-failed 'no"such\image'
rc=0
"$IMGFS" wait --json "$MNT/control/bad.job" > "$S/badwait.json" 2> /dev/null || rc=$?
(( rc == 1 )) || fail "imgfs wait --json on a failed job: status $rc"
check_json "$S/badwait.json" wait-failed 'no"such\image'
log "mount JSON status ok"
