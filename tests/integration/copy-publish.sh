#!/bin/bash
# copy-publish.sh — a target imgfs creates is published under its name only
# when the copy is complete.
#   1. imgfs copy --create, NFS and local targets, raw and qcow2, stopped
#      mid-copy (an NFS outage through delay-proxy, or SIGKILL while the
#      copy is stalled): the target name does not exist, or with
#      --overwrite still holds the old file (sha256 before/after); the
#      hidden partial file .NAME.imgfs-partial exists;
#   2. raw: the command the error names resumes the partial file and
#      publishes it (qemu-img compare identical, partial file gone);
#      qcow2: the error says to rerun the same command, which completes
#      (qemu-img check clean, compare identical);
#   3. a successful copy leaves no partial file and a 0600 target;
#   4. a mount job backing up into an NFS directory: the same while it
#      runs and after a cancel; resume = yes continues the partial file.
# PUBLISH_CASES (default: all) picks some of nfs-raw local-raw
# local-qcow2 nfs-qcow2 plain job.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
PROXY=$BUILD_DIR/scripts/delay-proxy
[[ -x $PROXY ]] || fail "$PROXY not built"

export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=5
CASES=${PUBLISH_CASES:-nfs-raw local-raw local-qcow2 nfs-qcow2 plain job}
want() { [[ " $CASES " == *" $1 "* ]]; }
MiB=1048576
SIZE=$((24 * MiB))
FAULT_AT=$((2 * SIZE / 3))

rm_partials() { rm -f -- "${NFS_EXPORT_DIR:?}/.$TEST_NAME-$$-"*; }
on_exit rm_partials

# ---- the proxy in front of the NFS server (as faults-copy.sh) ----------
rpc_port() {
    rpcinfo -p 127.0.0.1 | awk -v p="$1" '$1 == p && $2 == 3 && $3 == "tcp" { print $4; exit }'
}
nfs_port=$(rpc_port 100003)
mnt_port=$(rpc_port 100005)
[[ -n $nfs_port && -n $mnt_port ]] || fail "rpcbind does not know nfsd/mountd"
out=$SCRATCH/proxy.out
ctl_pipe=$SCRATCH/proxy.ctl
"$PROXY" -c "$ctl_pipe" "0:127.0.0.1:$mnt_port" "0:127.0.0.1:$nfs_port" > "$out" &
proxy_pid=$!
stop_proxy() { kill "$proxy_pid" 2>/dev/null || true; }
on_exit stop_proxy
for _ in $(seq 100); do
    grep -qx ready "$out" && break
    kill -0 "$proxy_pid" 2>/dev/null || fail "delay-proxy exited: $(cat "$out")"
    sleep 0.05
done
grep -qx ready "$out" || fail "delay-proxy not ready"
port_for() { awk -v t="127.0.0.1:$1" '$1 == "listen" && $3 == t { print $2; exit }' "$out"; }
p_mnt=$(port_for "$mnt_port") p_nfs=$(port_for "$nfs_port")
ctl() {
    local n
    n=$(grep -c '^ctl ' "$out" || true)
    echo "$1" > "$ctl_pipe"
    for _ in $(seq 200); do
        (( $(grep -c '^ctl ' "$out" || true) > n )) && break
        sleep 0.02
    done
    grep -q "^ctl \(ok\|armed\) $1\$" "$out" || fail "proxy did not take '$1': $(grep '^ctl ' "$out" | tail -n 3)"
}
fired_count() { grep -c '^ctl fired ' "$out" || true; }
nfs_via_proxy() { echo "$NFS_URL/$1?nfsport=$p_nfs&mountport=$p_mnt"; }

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

# stopped_state CASE PATH OLD: after a stopped copy, PATH (a local path,
# or the export path of an NFS target) is missing (OLD=no) or still the
# old file (OLD=yes); its partial file exists.
stopped_state() {
    local case=$1 path=$2 old=$3
    if [[ $old == yes ]]; then
        [[ $(sha256sum < "$path") == "$old_hash" ]] ||
            fail "$case: the old target changed before the copy completed"
    else
        [[ ! -e $path ]] || fail "$case: $path exists after an interrupted copy"
    fi
    [[ -f $(partial_of "$path") ]] || fail "$case: no partial file $(partial_of "$path")"
}

# published CASE PATH FMT: PATH holds the source, is 0600, and no partial
# file is left.
published() {
    local case=$1 path=$2 fmt=$3 o
    [[ -f $path ]] || fail "$case: $path was not published"
    [[ $(stat -c %a "$path") == 600 ]] || fail "$case: $path has mode $(stat -c %a "$path")"
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
stopped_state "raw NFS target" "$(nfs_path "$t")" no
grep -q "$(basename "$(partial_of "$t")")" <<< "$msg" || fail "the message does not name the partial file: $msg"
run_advised "raw NFS target"
published "raw NFS target (resumed)" "$(nfs_path "$t")" raw

fi

# ---- raw, local target replacing an old file, stopped by an outage -----
if want local-raw; then
t=$LOCAL/out.raw
cp "$SCRATCH/old.raw" "$t"
outage_copy "raw local target, --overwrite" "$(nfs_via_proxy "$src_nfs")" "$t" --create --overwrite
stopped_state "raw local target, --overwrite" "$t" yes
run_advised "raw local target, --overwrite"
published "raw local target (resumed)" "$t" raw

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
stopped_state "qcow2 NFS target, killed" "$(nfs_path "$t")" no
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

# ---- 4: a mount job backing up into an NFS directory ------------------
if want job; then
MNT=$SCRATCH/mnt
fuse_mount "$MNT" "src=$SCRATCH/src.raw" "d=$(nfs_url "")"
slow_job() {
    printf 'source = src\ntarget = %s\norder = strict\nrequests = 1\nrequest-size = 4K\nsparse = 0\n%s' "$1" "${2:-}"
}
t=$(nfs_name job.raw)
cp "$SCRATCH/old.raw" "$SCRATCH/job-old.raw"
nfs_put "$SCRATCH/job-old.raw" "$t"
put_job "$MNT" j "$(slow_job "d/$t" "overwrite = yes")" || fail "job refused: $(cat "$SCRATCH/cp.err")"
wm=0
for _ in $(seq 600); do
    wm=$(job_field "$MNT" j watermark)
    (( wm >= 4 * MiB )) && break
    sleep 0.05
done
(( wm >= 4 * MiB )) || fail "mount job: no progress"
[[ $(job_field "$MNT" j target) == "d/$t" ]] || fail "mount job: status target '$(job_field "$MNT" j target)'"
[[ $(sha256sum < "$(nfs_path "$t")") == "$old_hash" ]] || fail "mount job: the old target changed while the job runs"
rm "$MNT/control/j.job"
[[ $(job_field "$MNT" j state) == cancelled ]] || fail "mount job: not cancelled: $(job_field "$MNT" j state)"
wm=$(job_field "$MNT" j watermark)
stopped_state "mount job, cancelled" "$(nfs_path "$t")" yes
cmp -n "$wm" "$SCRATCH/src.raw" "$(partial_of "$(nfs_path "$t")")" ||
    fail "mount job: the partial file's bytes below the watermark $wm differ"
put_job "$MNT" j "source = src
target = d/$t
overwrite = yes
resume = yes" || fail "resume job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/j.job" >/dev/null || fail "resumed job failed: $(job_field "$MNT" j error)"
[[ $(job_field "$MNT" j resumed-from) == "$wm" ]] || fail "mount job: resumed from '$(job_field "$MNT" j resumed-from)', not $wm"
published "mount job (resumed)" "$(nfs_path "$t")" raw
check_cmp "$SCRATCH/src.raw" "$MNT/d/$t"
rm "$MNT/control/j.job"
fi
log "ok"
exit 0
