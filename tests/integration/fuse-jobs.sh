#!/bin/bash
# fuse-jobs.sh — jobs through control/ on a real FUSE mount: a good job
# (cp + imgfs wait, result checked with cmp), jobs into an NFS directory
# (create, overwrite rules), refused jobs (bad text, unknown image, target
# too small, busy target: cp fails with the errno, x.status says why, the
# target is untouched), two jobs at once, cancel by rm (bytes below the
# watermark equal the source), `cp A B` inside the mount through
# copy_file_range (strace), resume from a watermark, a backing = keep job
# (checked with qemu-img check/info/compare/map), and unmount while a
# job runs.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
new_lun 64M 512 thin;  LUN_A=$LUN_URL
new_lun 64M 4096 thin; LUN_B=$LUN_URL
new_lun 16M 512 thin;  LUN_SMALL=$LUN_URL
new_lun 256M 512 thin; LUN_SLOW=$LUN_URL
new_lun 16M 512 thin;  LUN_HOLES=$LUN_URL

head -c $((48 * MiB)) /dev/urandom > "$SCRATCH/src.raw"
SRC=$(nfs_name src.raw)
nfs_put "$SCRATCH/src.raw" "$SRC"
head -c $((256 * MiB)) /dev/urandom > "$SCRATCH/big.raw"
SLOW_JOB="source = big
target = slow
order = strict
requests = 1
request-size = 4K
sparse = 0"

MNT=$SCRATCH/mnt
fuse_mount "$MNT" "src=$(nfs_url "$SRC")" "d=$(nfs_url "")" "a=$LUN_A" \
    "b=$LUN_B" "small=$LUN_SMALL" "slow=$LUN_SLOW" "big=$SCRATCH/big.raw" \
    "holes=$LUN_HOLES"

log "a good job"
put_job "$MNT" deploy "# deploy the source
source = src
target = a
verify = yes" || fail "cp of a good job failed: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/deploy.job" > "$SCRATCH/wait.out" || fail "imgfs wait: job failed"
grep -q done "$SCRATCH/wait.out" || fail "imgfs wait output: $(cat "$SCRATCH/wait.out")"
for key in state source target bytes-total bytes-done watermark rate elapsed eta error; do
    grep -q "^$key: " "$MNT/control/deploy.status" || fail "status has no '$key'"
done
[[ $(job_field "$MNT" deploy state) == done ]] || fail "state: $(job_field "$MNT" deploy state)"
[[ $(job_field "$MNT" deploy bytes-total) == $((48 * MiB)) ]] || fail "bytes-total"
[[ $(job_field "$MNT" deploy bytes-done) == $((48 * MiB)) ]] || fail "bytes-done"
cmp -n $((48 * MiB)) "$SCRATCH/src.raw" "$MNT/a" || fail "target differs from source"
grep -qx 'target = a' "$MNT/control/deploy.job" || fail "job file text not readable"
rm "$MNT/control/deploy.job"
[[ ! -e $MNT/control/deploy.status ]] || fail "rm of a finished job did not forget it"

log "a job into the NFS directory creates the target; overwrite rules"
OUT=$(nfs_name out.raw)
put_job "$MNT" backup "source = a
target = d/$OUT" || fail "backup job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/backup.job" >/dev/null || fail "backup job failed"
[[ $(stat -c %s "$(nfs_path "$OUT")") == $((64 * MiB)) ]] || fail "created size"
cmp "$MNT/a" "$(nfs_path "$OUT")" || fail "backup differs"
if put_job "$MNT" backup "source = src
target = d/$OUT"; then fail "replacing a non-empty file without overwrite started"; fi
grep -q "File exists" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
cmp "$MNT/a" "$(nfs_path "$OUT")" || fail "refused job touched the target"
put_job "$MNT" backup "source = src
target = d/$OUT
overwrite = yes" || fail "overwrite job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/backup.job" >/dev/null || fail "overwrite job failed"
check_cmp "$SCRATCH/src.raw" "$(nfs_path "$OUT")"

log "refused jobs"
small_before=$(lun_hash "$LUN_SMALL")
if put_job "$MNT" bad "source = src
target = a
ordr = any"; then fail "a job with an unknown key started"; fi
grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
[[ $(job_field "$MNT" bad state) == failed ]] || fail "bad job state"
job_field "$MNT" bad error | grep -q "ordr" || fail "status error: $(job_field "$MNT" bad error)"
if put_job "$MNT" bad "source = nosuch
target = a"; then fail "a job with an unknown source started"; fi
grep -q "No such file or directory" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
job_field "$MNT" bad error | grep -q "nosuch" || fail "status error: $(job_field "$MNT" bad error)"
if put_job "$MNT" bad "source = src
target = small"; then fail "a job onto a too small target started"; fi
grep -q "No space left on device" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
job_field "$MNT" bad error | grep -q "too small" || fail "status error: $(job_field "$MNT" bad error)"
[[ $(lun_hash "$LUN_SMALL") == "$small_before" ]] || fail "a refused job touched the target"
if put_job "$MNT" bad "source = src"; then fail "a job without target started"; fi
grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"

log "a slow job, a busy target, two jobs at once"
put_job "$MNT" slow "$SLOW_JOB" || fail "slow job refused: $(cat "$SCRATCH/cp.err")"
state=$(job_field "$MNT" slow state)
[[ $state == running || $state == done ]] || fail "slow job state: $state"
if [[ $state == running ]]; then
    if put_job "$MNT" busy "source = src
target = slow"; then fail "a second job onto a busy target started"; fi
    grep -q "Device or resource busy" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
    job_field "$MNT" busy error | grep -q "busy" || fail "status: $(job_field "$MNT" busy error)"
    if dd if=/dev/zero of="$MNT/slow" bs=4k count=1 conv=notrunc status=none 2> "$SCRATCH/dd.err"; then
        fail "writing a running job's target was allowed"
    fi
    grep -q "Device or resource busy" "$SCRATCH/dd.err" || fail "dd message: $(cat "$SCRATCH/dd.err")"
    if put_job "$MNT" slow "$SLOW_JOB"; then fail "rewriting a running job's file was allowed"; fi
else
    log "the slow job finished before the busy checks (fast machine); skipped them"
fi
put_job "$MNT" second "source = src
target = b" || fail "second job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/second.job" >/dev/null || fail "second job failed"
cmp -n $((48 * MiB)) "$SCRATCH/src.raw" "$MNT/b" || fail "second job result differs"

log "cancel by rm"
rm "$MNT/control/slow.job"
state=$(job_field "$MNT" slow state)
wm=$(job_field "$MNT" slow watermark)
if [[ $state == cancelled ]]; then
    job_field "$MNT" slow error | grep -q . || fail "cancelled job has no error text"
    if "$IMGFS" wait "$MNT/control/slow.job" 2> "$SCRATCH/wait.err"; then
        fail "imgfs wait succeeded on a cancelled job"
    fi
    grep -q "cancelled" "$SCRATCH/wait.err" || fail "imgfs wait message: $(cat "$SCRATCH/wait.err")"
    (( wm > 0 && wm < 256 * MiB )) || log "watermark at $wm"
else
    [[ $state == done ]] || fail "state after rm: $state"
    wm=$((256 * MiB))
fi
log "slow job $state at watermark $wm"
cmp -n "$wm" "$SCRATCH/big.raw" "$MNT/slow" || fail "bytes below the watermark $wm differ"
[[ ! -e $MNT/control/slow.job ]] || fail "slow.job still listed after rm"
if [[ $state == cancelled ]]; then
    log "resume from the watermark"
    put_job "$MNT" slow "source = big
target = slow
resume = yes" || fail "resume job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/slow.job" >/dev/null || fail "resumed job failed"
    cmp "$SCRATCH/big.raw" "$MNT/slow" || fail "resumed copy differs"
    rm "$MNT/control/slow.job"
fi
[[ ! -e $MNT/control/slow.status ]] || rm "$MNT/control/slow.status"
ls "$MNT/control" | grep -q '^slow\.' && fail "forgotten job still listed"

log "cp inside the mount goes through copy_file_range"
C1=$(nfs_name cfr.raw)
strace -f -e trace=copy_file_range -o "$SCRATCH/strace.out" cp "$MNT/src" "$MNT/d/$C1" ||
    fail "cp inside the mount failed"
grep -Eq 'copy_file_range\(.*\) = [1-9][0-9]*$' "$SCRATCH/strace.out" ||
    fail "cp did not use copy_file_range: $(cat "$SCRATCH/strace.out")"
check_cmp "$SCRATCH/src.raw" "$(nfs_path "$C1")"
strace -f -e trace=copy_file_range -o "$SCRATCH/strace.out" cp "$MNT/a" "$MNT/b" ||
    fail "cp LUN to LUN failed"
grep -Eq 'copy_file_range\(.*\) = [1-9][0-9]*$' "$SCRATCH/strace.out" || fail "no copy_file_range"
cmp "$MNT/a" "$MNT/b" || fail "LUN copy differs"
[[ $(lun_hash "$LUN_A") == $(lun_hash "$LUN_B") ]] || fail "LUN copy differs on the server"

log "cp of an NFS file with holes into a used LUN writes the zeroes too"
# A file with holes on the server (truncate, then data in the middle),
# a LUN full of 0xff: GNU cp must not take the source for sparse and seek
# over its zero blocks (the LUN would keep its 0xff there).
H=$(nfs_name holes.raw)
truncate -s $((16 * MiB)) "$MNT/d/$H"
dd if="$SCRATCH/src.raw" of="$MNT/d/$H" bs=1M count=4 seek=6 conv=notrunc,fsync status=none
(( $(stat -c %s "$(nfs_path "$H")") == 16 * MiB )) || fail "holey source size"
head -c $((16 * MiB)) /dev/zero | tr '\0' '\377' > "$SCRATCH/ff.raw"
dd if="$SCRATCH/ff.raw" of="$MNT/holes" bs=1M conv=fsync status=none
strace -f -e trace=copy_file_range -o "$SCRATCH/strace.out" cp "$MNT/d/$H" "$MNT/holes" ||
    fail "cp of the holey file failed"
grep -Eq 'copy_file_range\(.*\) = [1-9][0-9]*$' "$SCRATCH/strace.out" ||
    fail "cp of a file with holes did not use copy_file_range: $(cat "$SCRATCH/strace.out")"
{ head -c $((6 * MiB)) /dev/zero; head -c $((4 * MiB)) "$SCRATCH/src.raw"; head -c $((6 * MiB)) /dev/zero; } > "$SCRATCH/holes.want"
qemu-img convert -f raw -O raw "$LUN_HOLES" "$SCRATCH/holes.back"
cmp "$SCRATCH/holes.want" "$SCRATCH/holes.back" || fail "LUN after cp of a file with holes differs (stale data left?)"

log "copy_file_range of a partial range at offsets"
python3 - "$MNT/src" "$MNT/b" <<'PY'
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY)
want = 3 * 1048576
done = 0
while done < want:
    n = os.copy_file_range(src, dst, want - done, 5 * 1048576 + done,
                           9 * 1048576 + done)
    if n <= 0:
        sys.exit("copy_file_range returned %d" % n)
    done += n
os.close(src)
os.close(dst)
PY
cmp -n $((3 * MiB)) -i $((5 * MiB)):$((9 * MiB)) "$SCRATCH/src.raw" "$MNT/b" ||
    fail "partial copy_file_range differs"
cmp -n $((9 * MiB)) "$MNT/a" "$MNT/b" || fail "partial copy_file_range wrote before its range"
cmp -n $((52 * MiB)) -i $((12 * MiB)):$((12 * MiB)) "$MNT/a" "$MNT/b" ||
    fail "partial copy_file_range wrote after its range"

log "backing = keep: a qcow2 job copies only the source's top layer"
# Chain made with qemu-img/qemu-io: base.qcow2 <- top.qcow2 (relative name),
# top writes 1 MiB of data and 1 MiB of zeroes over base data.
KD=$(nfs_name keep)
mkdir -p "$SCRATCH/keep"
qemu-img create -q -f qcow2 "$SCRATCH/keep/base.qcow2" 16M
qemu-io -f qcow2 -c "write -P 0x11 0 8M" "$SCRATCH/keep/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$SCRATCH/keep/top.qcow2"
qemu-io -f qcow2 -c "write -P 0x22 1M 1M" -c "write -z 4M 1M" \
    "$SCRATCH/keep/top.qcow2" >/dev/null
mkdir -p "$(nfs_path "$KD")"        # the directory only; files via NFS
nfs_put "$SCRATCH/keep/base.qcow2" "$KD/base.qcow2"
nfs_put "$SCRATCH/keep/top.qcow2" "$KD/top.qcow2"
put_job "$MNT" keep "source = d/$KD/top.qcow2
target = d/$KD/kept.qcow2
target-format = qcow2
backing = keep" || fail "keep-backing job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/keep.job" >/dev/null || fail "keep-backing job failed: $(job_field "$MNT" keep error)"
rm "$MNT/control/keep.job"
KEPT=$(nfs_path "$KD/kept.qcow2")
qemu-img check -q "$KEPT" || fail "qemu-img check of the kept target"
qemu-img info --output=json "$KEPT" > "$SCRATCH/keep.info"
python3 - "$SCRATCH/keep.info" <<'PY' || fail "kept target's backing: $(cat "$SCRATCH/keep.info")"
import json, sys
i = json.load(open(sys.argv[1]))
assert i["format"] == "qcow2", i["format"]
assert i.get("backing-filename") == "base.qcow2", i.get("backing-filename")
assert i.get("backing-filename-format") == "qcow2", i.get("backing-filename-format")
PY
qemu-img compare -q "$(nfs_path "$KD/top.qcow2")" "$KEPT" ||
    fail "kept target differs from the source through its backing"
# Only the top layer is in the target: its own clusters (depth 0) hold
# data or zeroes at 1M-2M and 4M-5M only; everything else comes from base.
qemu-img map --output=json "$KEPT" > "$SCRATCH/keep.map"
python3 - "$SCRATCH/keep.map" <<'PY' || fail "kept target's own layer: $(cat "$SCRATCH/keep.map")"
import json, sys
M = 1048576
own, data_own = set(), set()
for e in json.load(open(sys.argv[1])):
    if e["depth"] != 0:
        continue
    blocks = set(range(e["start"] // M, (e["start"] + e["length"] + M - 1) // M))
    own |= blocks
    if e["data"]:
        data_own |= blocks
assert data_own == {1}, ("own data in MiB blocks", sorted(data_own))
assert own == {1, 4}, ("own clusters in MiB blocks", sorted(own))
PY
if put_job "$MNT" keep2 "source = d/$KD/top.qcow2
target = d/$KD/kept-raw.raw
backing = keep"; then fail "backing = keep with a raw target started"; fi
grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "cp message: $(cat "$SCRATCH/cp.err")"
job_field "$MNT" keep2 error | grep -q "qcow2" || fail "status error: $(job_field "$MNT" keep2 error)"
if put_job "$MNT" keep2 "source = src
target = d/$KD/kept-2.qcow2
target-format = qcow2
backing = keep"; then fail "backing = keep from a raw source started"; fi
job_field "$MNT" keep2 error | grep -q "not a qcow2 image" || fail "status error: $(job_field "$MNT" keep2 error)"
[[ ! -e $(nfs_path "$KD/kept-raw.raw") && ! -e $(nfs_path "$KD/kept-2.qcow2") ]] ||
    fail "a refused keep-backing job created its target"
rm "$MNT/control/keep2.job"

log "unmount while a job runs"
MNT2=$SCRATCH/mnt2
fuse_mount_fg "$MNT2" "slow=$LUN_SLOW" "big=$SCRATCH/big.raw"
put_job "$MNT2" slow "$SLOW_JOB" || fail "slow job refused: $(cat "$SCRATCH/cp.err")"
fuse_umount "$MNT2"
(( FUSE_RC == 0 )) || fail "imgfs mount exited $FUSE_RC: $(cat "$FUSE_LOG")"
if grep -q "cancelled at watermark" "$FUSE_LOG"; then
    wm=$(sed -n 's/.*cancelled at watermark \([0-9]*\).*/\1/p' "$FUSE_LOG")
else
    log "the job ended before the unmount; checking all of it"
    wm=$((256 * MiB))
fi
log "job stopped by the unmount at watermark $wm"
qemu-img convert -f raw -O raw "$LUN_SLOW" "$SCRATCH/slow.back"
cmp -n "$wm" "$SCRATCH/big.raw" "$SCRATCH/slow.back" || fail "bytes below watermark $wm differ after unmount"
log "ok"
