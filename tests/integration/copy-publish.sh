#!/bin/bash
# copy-publish.sh — a target imgfs creates is published under its name only
# when the copy is complete; an existing raw file is overwritten in place.
#   1. imgfs copy --create of a NEW name (NFS and local, raw and qcow2),
#      stopped mid-copy (an NFS outage through delay-proxy, or SIGKILL
#      while the copy is stalled): the name does not exist; raw: the
#      hidden partial file .NAME.imgfs-partial exists, the message names
#      it and the command that continues it, and that command completes;
#   2. qcow2 (new name, or replacing an old file with --overwrite): the
#      message says qcow2 targets restart from 0 and to rerun the same
#      command, advises no --resume-from, the old file is untouched (sha256)
#      until the rerun completes;
#   3. --create --overwrite of an EXISTING raw file: written in place — the
#      same inode, a hard link to it sees the new bytes, no partial file;
#      the advised --resume-from W --overwrite completes it;
#   4. every published target: qemu-img compare identical to the source,
#      qemu-img check clean (qcow2), no partial file left, mode 0600 for a
#      created file;
#   5. mount jobs into an NFS directory: a new raw name is a partial file
#      while the job runs (status shows the final name) and after a
#      cancel; resume = yes continues it (resumed-from = watermark); a
#      qcow2 job restarts on resume; overwrite = yes of an existing raw file
#      writes it in place (same inode, no partial file); a job failed by an
#      NFS outage says in its status error where the bytes are and that
#      resume = yes continues them, which it does.
#   6. --state: a copy of a new name killed (SIGKILL) while stalled resumes
#      with the same command line at the state file's durable watermark
#      (raw: "resuming at W", only the rest copied) or restarts (qcow2:
#      "restarting from 0", all copied); published as in 4.
# PUBLISH_CASES (default: all) picks some of nfs-raw local-inplace
# local-qcow2 nfs-qcow2 plain state job.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"

export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=5
CASES=${PUBLISH_CASES:-nfs-raw local-inplace local-qcow2 nfs-qcow2 plain state job}
want() { [[ " $CASES " == *" $1 "* ]]; }
MiB=1048576
SIZE=$((24 * MiB))
FAULT_AT=$((2 * SIZE / 3))

rm_partials() { rm -f -- "${NFS_EXPORT_DIR:?}/.$TEST_NAME-$$-"*; }
on_exit rm_partials

. "$(dirname "$0")/fault-proxy.sh"

# ---- images ------------------------------------------------------------
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
dd if=/dev/zero of="$SCRATCH/src.raw" bs=1M seek=8 count=4 conv=notrunc status=none
src_nfs=$(nfs_name src.raw)
nfs_put "$SCRATCH/src.raw" "$src_nfs"
head -c $((3 * MiB)) /dev/urandom > "$SCRATCH/old.raw"
old_hash=$(sha256sum < "$SCRATCH/old.raw")
LOCAL=$SCRATCH/dir
mkdir -p "$LOCAL"

# partial_of PATH: the hidden partial file next to PATH.
partial_of() { echo "$(dirname "$1")/.$(basename "$1").imgfs-partial"; }

# stopped_state CASE PATH: after a stopped copy of a new raw name, PATH (a
# local path, or the export path of an NFS target) does not exist and its
# partial file does.
stopped_state() {
    local case=$1 path=$2
    [[ ! -e $path ]] || fail "$case: $path exists after an interrupted copy"
    [[ -f $(partial_of "$path") ]] || fail "$case: no partial file $(partial_of "$path")"
}

# published CASE PATH FMT [MODE]: PATH holds the source, has MODE (default
# 600: created by imgfs), and no partial file is left.
published() {
    local case=$1 path=$2 fmt=$3 mode=${4:-600} o
    [[ -f $path ]] || fail "$case: $path was not published"
    [[ $(stat -c %a "$path") == "$mode" ]] || fail "$case: $path has mode $(stat -c %a "$path"), not $mode"
    [[ ! -e $(partial_of "$path") ]] || fail "$case: the partial file is left over"
    if [[ $fmt == qcow2 ]]; then
        o=$(qemu-img check -f qcow2 "$path" 2>&1) || fail "$case: qemu-img check: $o"
    fi
    o=$(qemu-img compare -f raw -F "$fmt" "$SCRATCH/src.raw" "$path" 2>&1) ||
        fail "$case: $path differs from the source: $o"
}

# outage_copy CASE SRC DST ARGS...: copy while the NFS side goes dark
# after FAULT_AT bytes; the copy must fail; sets msg.  The dark is lifted.
outage_copy() {
    local case=$1 src=$2 dst=$3 fired rc=0
    shift 3
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 120"
    "$IMGFS" copy -q "$@" "$src" "$dst" 2> "$SCRATCH/copy.err" || rc=$?
    ctl pass
    (( $(fired_count) > fired )) || fail "$case: the fault never fired"
    msg=$(cat "$SCRATCH/copy.err")
    (( rc != 0 )) || fail "$case: the copy succeeded through the outage"
    [[ $(grep -c '' "$SCRATCH/copy.err") -eq 1 ]] || fail "$case: expected one line: $msg"
    log "$case: stopped: $msg"
}

# advised_command CASE: the command the message names, run with $IMGFS.
run_advised() {
    local case=$1 cmd
    cmd=$(sed -n 's/.*resume with: imgfs \(copy --resume-from [0-9]* .*\)$/\1/p' <<< "$msg")
    [[ -n $cmd ]] || fail "$case: no resume command in: $msg"
    # "ERROR (bytes before W are copied; ... COMMAND)": the parenthesis is
    # the message's (an argument ending in one would be quoted)
    [[ $msg == *"(bytes before "* ]] && cmd=${cmd%)}
    eval "\"\$IMGFS\" $cmd -q" 2> "$SCRATCH/resume.err" ||
        fail "$case: the advised command failed: $(cat "$SCRATCH/resume.err")"
}

# ---- 1+2: raw, NFS target, stopped by an outage, resumed --------------
if want nfs-raw; then
t=$(nfs_name out.raw)
# few requests in flight: the answers lag little behind the data, so the
# watermark at the fault is well above 0
outage_copy "raw NFS target" "$SCRATCH/src.raw" "$(nfs_via_proxy "$t")" --create --requests 2
stopped_state "raw NFS target" "$(nfs_path "$t")"
grep -q "$(basename "$(partial_of "$t")")" <<< "$msg" || fail "the message does not name the partial file: $msg"
run_advised "raw NFS target"
published "raw NFS target (resumed)" "$(nfs_path "$t")" raw

fi

# ---- raw, existing local file with --overwrite: written in place -------
if want local-inplace; then
t=$LOCAL/out.raw
cp "$SCRATCH/old.raw" "$t"
chmod 644 "$t"
ln "$t" "$LOCAL/out-link.raw"
ino=$(stat -c %i "$t")
args=(--create --overwrite)
outage_copy "raw local target, in place" "$(nfs_via_proxy "$src_nfs")" "$t" "${args[@]}"
[[ $(stat -c %i "$t") == "$ino" ]] || fail "in place: $t was replaced by another file"
[[ ! -e $(partial_of "$t") ]] || fail "in place: a partial file was made"
w=$(sed -n 's/.*(bytes before \([0-9]*\) are copied; resume with --resume-from \1 --overwrite)$/\1/p' <<< "$msg")
[[ -n $w ]] || fail "in place: no resume advice in: $msg"
cmp -n "$w" "$SCRATCH/src.raw" "$t" || fail "in place: the bytes below the watermark $w differ"
copy_ok "raw local target, in place, resumed" "${args[@]}" --resume-from "$w" --overwrite "$(nfs_via_proxy "$src_nfs")" "$t"
[[ $(stat -c %i "$t") == "$ino" ]] || fail "in place: the resume replaced $t"
published "raw local target, in place (resumed)" "$t" raw 644
cmp "$t" "$LOCAL/out-link.raw" || fail "in place: the hard link does not see the new bytes"

fi

# ---- qcow2, local target replacing an old file: restarts ---------------
if want local-qcow2; then
t=$LOCAL/out.qcow2
cp "$SCRATCH/old.raw" "$t"
args=(--create --overwrite --target-format qcow2)
outage_copy "qcow2 local target" "$(nfs_via_proxy "$src_nfs")" "$t" "${args[@]}"
grep -q "qcow2 targets restart from 0: rerun the same command" <<< "$msg" ||
    fail "qcow2: the message does not say to rerun: $msg"
! grep -q -- "--resume-from" <<< "$msg" || fail "qcow2: a resume offset is advised: $msg"
[[ $(sha256sum < "$t") == "$old_hash" ]] || fail "qcow2: the old target changed"
[[ ! -e $(partial_of "$t") ]] || fail "qcow2: the partial file of a failed copy is left over"
copy_ok "qcow2 local target, rerun" "${args[@]}" "$(nfs_via_proxy "$src_nfs")" "$t"
published "qcow2 local target (rerun)" "$t" qcow2

fi

# ---- qcow2, NFS target, SIGKILL while stalled: rerun -------------------
if want nfs-qcow2; then
t=$(nfs_name out.qcow2)
args=(--create --target-format qcow2)
fired=$(fired_count)
ctl "after $FAULT_AT blackhole 120"
"$IMGFS" copy -q "${args[@]}" "$SCRATCH/src.raw" "$(nfs_via_proxy "$t")" 2> "$SCRATCH/copy.err" &
pid=$!
for _ in $(seq 600); do
    (( $(fired_count) > fired )) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
(( $(fired_count) > fired )) || fail "qcow2 NFS target: the fault never fired"
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
ctl pass
stopped_state "qcow2 NFS target, killed" "$(nfs_path "$t")"
copy_ok "qcow2 NFS target, rerun" "${args[@]}" "$SCRATCH/src.raw" "$(nfs_url "$t")"
published "qcow2 NFS target (rerun)" "$(nfs_path "$t")" qcow2

fi

# ---- 3: plain successful copies --------------------------------------
if want plain; then
for fmt in raw qcow2; do
    t=$(nfs_name plain.$fmt)
    copy_ok "plain NFS $fmt" --create --target-format $fmt "$SCRATCH/src.raw" "$(nfs_url "$t")"
    published "plain NFS $fmt" "$(nfs_path "$t")" $fmt
    copy_ok "plain local $fmt" --create --target-format $fmt "$SCRATCH/src.raw" "$LOCAL/plain.$fmt"
    published "plain local $fmt" "$LOCAL/plain.$fmt" $fmt
done

fi

# ---- --state: a killed copy of a new name resumes its partial file (raw)
# or restarts (qcow2) with the same command line ---------------------------
if want state; then
export IMGFS_CHECKPOINT_INTERVAL=0.2
for fmt in raw qcow2; do
    t=$LOCAL/state.$fmt st=$SCRATCH/copy-$fmt.state
    cmd=("$IMGFS" copy --create --target-format $fmt --state "$st"
         "$(nfs_via_proxy "$src_nfs")" "$t")
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 120"
    "${cmd[@]}" > /dev/null 2> "$SCRATCH/state.err" &
    pid=$!
    w=0
    for _ in $(seq 600); do
        [[ -e $st ]] && w=$(sed -n 's/^watermark: //p' "$st")
        (( $(fired_count) > fired && w > 0 )) && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    (( $(fired_count) > fired && w > 0 )) || fail "--state $fmt: no stall with a durable watermark: $(cat "$SCRATCH/state.err")"
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    ctl pass
    w=$(sed -n 's/^watermark: //p' "$st")
    stopped_state "--state $fmt, killed" "$t"
    "${cmd[@]}" > "$SCRATCH/state.out" 2> "$SCRATCH/state.err" ||
        fail "--state $fmt: the same command failed: $(cat "$SCRATCH/state.err")"
    if [[ $fmt == raw ]]; then
        grep -q "resuming at $w" "$SCRATCH/state.err" || fail "--state raw: no 'resuming at $w': $(cat "$SCRATCH/state.err")"
        grep -q "^copied $((SIZE - w)) bytes" "$SCRATCH/state.out" || fail "--state raw: not only the rest: $(cat "$SCRATCH/state.out")"
    else
        grep -q "restarting from 0: .* stopped at $w, but qcow2 targets restart" "$SCRATCH/state.err" ||
            fail "--state qcow2: no restart notice: $(cat "$SCRATCH/state.err")"
        grep -q "^copied $SIZE bytes" "$SCRATCH/state.out" || fail "--state qcow2: not all: $(cat "$SCRATCH/state.out")"
    fi
    [[ ! -e $st ]] || fail "--state $fmt: the state file stayed after success"
    published "--state $fmt (same command)" "$t" $fmt
    log "ok: --state $fmt: killed at durable watermark $w, the same command completed"
done
unset IMGFS_CHECKPOINT_INTERVAL
fi

# ---- 5: mount jobs writing into an NFS directory -----------------------
if want job; then
MNT=$SCRATCH/mnt
fuse_mount "$MNT" "src=$SCRATCH/src.raw" "d=$(nfs_url "")"
slow_job() {
    printf 'source = src\ntarget = %s\norder = strict\nrequests = 1\nrequest-size = 4K\nsparse = 0\n%s' "$1" "${2:-}"
}
# progressed JOB: wait until JOB's watermark passed 4 MiB.
progressed() {
    local wm=0
    for _ in $(seq 600); do
        wm=$(job_field "$MNT" "$1" watermark)
        (( wm >= 4 * MiB )) && return
        sleep 0.05
    done
    fail "mount job $1: no progress"
}
# A new raw name: a partial file until complete; resume = yes continues it.
t=$(nfs_name job.raw)
put_job "$MNT" j "$(slow_job "d/$t")" || fail "job refused: $(cat "$SCRATCH/cp.err")"
progressed j
[[ $(job_field "$MNT" j target) == "d/$t" ]] || fail "mount job: status target '$(job_field "$MNT" j target)'"
stopped_state "mount job, running" "$(nfs_path "$t")"
rm "$MNT/control/j.job"
[[ $(job_field "$MNT" j state) == cancelled ]] || fail "mount job: not cancelled: $(job_field "$MNT" j state)"
wm=$(job_field "$MNT" j watermark)
stopped_state "mount job, cancelled" "$(nfs_path "$t")"
cmp -n "$wm" "$SCRATCH/src.raw" "$(partial_of "$(nfs_path "$t")")" ||
    fail "mount job: the partial file's bytes below the watermark $wm differ"
put_job "$MNT" j "source = src
target = d/$t
resume = yes" || fail "resume job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/j.job" >/dev/null || fail "resumed job failed: $(job_field "$MNT" j error)"
[[ $(job_field "$MNT" j resumed-from) == "$wm" ]] || fail "mount job: resumed from '$(job_field "$MNT" j resumed-from)', not $wm"
published "mount job (resumed)" "$(nfs_path "$t")" raw
check_cmp "$SCRATCH/src.raw" "$MNT/d/$t"
rm "$MNT/control/j.job"

# qcow2: a new file each time; cancelled, its partial file goes, and
# resume = yes starts it again from 0.
t=$(nfs_name job.qcow2)
put_job "$MNT" q "$(slow_job "d/$t" "target-format = qcow2")" || fail "qcow2 job refused: $(cat "$SCRATCH/cp.err")"
progressed q
stopped_state "qcow2 mount job, running" "$(nfs_path "$t")"
rm "$MNT/control/q.job"
[[ ! -e $(nfs_path "$t") && ! -e $(partial_of "$(nfs_path "$t")") ]] ||
    fail "qcow2 mount job: cancelled, it left $t or its partial file"
put_job "$MNT" q "source = src
target = d/$t
target-format = qcow2
resume = yes" || fail "qcow2 resume job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/q.job" >/dev/null || fail "qcow2 job failed: $(job_field "$MNT" q error)"
[[ -z $(job_field "$MNT" q resumed-from) ]] || fail "qcow2 mount job: resumed instead of restarted"
published "qcow2 mount job (restarted)" "$(nfs_path "$t")" qcow2
rm "$MNT/control/q.job"

# overwrite = yes of an existing raw file: in place, the same file.
t=$(nfs_name job-old.raw)
nfs_put "$SCRATCH/old.raw" "$t"
ino=$(stat -c %i "$(nfs_path "$t")")
put_job "$MNT" o "$(slow_job "d/$t" "overwrite = yes")" || fail "overwrite job refused: $(cat "$SCRATCH/cp.err")"
progressed o
[[ ! -e $(partial_of "$(nfs_path "$t")") ]] || fail "overwrite job: a partial file was made"
"$IMGFS" wait "$MNT/control/o.job" >/dev/null || fail "overwrite job failed: $(job_field "$MNT" o error)"
[[ $(stat -c %i "$(nfs_path "$t")") == "$ino" ]] || fail "overwrite job: $t was replaced by another file"
o=$(qemu-img compare -f raw -F raw "$SCRATCH/src.raw" "$(nfs_path "$t")" 2>&1) ||
    fail "overwrite job: $t differs from the source: $o"
rm "$MNT/control/o.job"

# A job that fails (an NFS outage on the directory's side) says in its
# status what became of the new name, and the advised resume = yes
# continues the partial file.
MNTP=$SCRATCH/mntp
fuse_mount "$MNTP" "src=$SCRATCH/src.raw" "dp=$NFS_URL/?nfsport=$p_nfs&mountport=$p_mnt"
t=$(nfs_name job-fail.raw)
fired=$(fired_count)
ctl "after $FAULT_AT blackhole 120"
put_job "$MNTP" f "source = src
target = dp/$t
requests = 2" || fail "failing job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNTP/control/f.job" > /dev/null 2>&1 && fail "the job succeeded through an outage"
ctl pass
(( $(fired_count) > fired )) || fail "failing job: the fault never fired"
[[ $(job_field "$MNTP" f state) == failed ]] || fail "failing job: state '$(job_field "$MNTP" f state)'"
err=$(job_field "$MNTP" f error)
grep -qF "'dp/$t' is not published yet: the partial file .$t.imgfs-partial next to it keeps the bytes copied, and resume = yes continues it" <<< "$err" ||
    fail "failing job: the error does not say where the bytes are: $err"
wm=$(job_field "$MNTP" f watermark)
stopped_state "failing job" "$(nfs_path "$t")"
put_job "$MNTP" f "source = src
target = dp/$t
resume = yes" || fail "failing job: resume refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNTP/control/f.job" > /dev/null || fail "failing job: resumed job failed: $(job_field "$MNTP" f error)"
[[ $(job_field "$MNTP" f resumed-from) == "$wm" ]] || fail "failing job: resumed from '$(job_field "$MNTP" f resumed-from)', not $wm"
published "failing job (resumed)" "$(nfs_path "$t")" raw
rm "$MNTP/control/f.job"
fi
log "ok"
exit 0
