#!/bin/bash
# security-backing.sh — the backing file named inside a qcow2 image is
# confined to the image's NFS server and export (or, for local images, the
# directory of the image the user named).
#
# Real qcow2 images (qemu-img create -b NAME -F raw|qcow2) named *.qcow2 on
# NFS whose backing name escapes: /etc/passwd, ../../../etc/passwd, ".."
# past the export root, an absolute path outside the export (the export's
# directory on the server's disk), iscsi://127.0.0.1/IQN/1 (a real LUN),
# file:/etc/passwd, nfs://localhost/... (another server name that reaches
# the same server, so following it would work), a loop a → b → a and a
# chain that leaves the export in its third link; and a local image whose
# backing leaves its directory.  Each copy onto a LUN holding known data
# fails with one line naming the image and the stored name, and the LUN
# keeps its sha256.  A good chain (relative names, "..", inside the export)
# copies; --allow-backing PREFIX (and the job key allow-backing) lets the
# nfs://localhost, iscsi:// and local cases through, checked with qemu-img
# compare against what the backing file holds.  The test servers have one
# export, so "same server, other export" is covered by the unit tests only.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
command -v qemu-img >/dev/null || { log "qemu-img not installed; skipping"; exit 77; }

MiB=1048576
SIZE=$((8 * MiB))

new_lun 8M 512 thin; TARGET_LUN=$LUN_URL
new_lun 8M 512 thin; OTHER_LUN=$LUN_URL
head -c $SIZE /dev/urandom > "$SCRATCH/target.raw"
head -c $SIZE /dev/urandom > "$SCRATCH/other.raw"
head -c $SIZE /dev/urandom > "$SCRATCH/base.raw"
fill_lun "$OTHER_LUN" "$SCRATCH/other.raw"
other_iqn=${OTHER_LUN#iscsi://*/}
other_iqn=${other_iqn%/*}

# The export's path as mounted (nfs://HOST/EXPORT) and the same server
# under another name.
export_path=${NFS_URL#nfs://*/}
export_path=/${export_path%/}
other_host_url=nfs://localhost/${NFS_URL#nfs://*/}

# Layout on the export: D/base.raw, D/sub/*.qcow2.
D=$(nfs_name chain)
mkdir -p "$(nfs_path "$D")/sub"      # the directories only; files via NFS
nfs_put "$SCRATCH/base.raw" "$D/base.raw"

# put_top NAME BACKING FMT: a qcow2 of SIZE with that backing name, put at
# D/sub/NAME (no data of its own: it reads as its backing file).
put_top() {
    rm -f "$SCRATCH/$1"
    qemu-img create -q -u -f qcow2 -b "$2" -F "$3" "$SCRATCH/$1" $SIZE ||
        fail "qemu-img create $1 -b $2"
    nfs_put "$SCRATCH/$1" "$D/sub/$1"
}

fill_lun "$TARGET_LUN" "$SCRATCH/target.raw"
target_sum=$(lun_hash "$TARGET_LUN")

# refused DESC REGEX ARGS...: `imgfs copy ARGS` fails with one stderr line
# matching REGEX; the target LUN keeps its bytes.
refused() {
    local desc=$1 regex=$2 rc=0 err=$SCRATCH/refused.err
    shift 2
    "$IMGFS" copy -q "$@" >/dev/null 2>"$err" || rc=$?
    (( rc != 0 )) || fail "$desc: imgfs copy $* succeeded"
    (( rc < 128 )) || fail "$desc: imgfs copy died of signal $((rc - 128))"
    [[ $(grep -c '' "$err") -eq 1 ]] ||
        fail "$desc: expected one line on stderr: $(head -c 2000 "$err")"
    grep -Eq -- "$regex" "$err" ||
        fail "$desc: message does not match /$regex/: $(cat "$err")"
    [[ $(lun_hash "$TARGET_LUN") == "$target_sum" ]] ||
        fail "$desc: the target LUN changed"
    log "ok, refused ($desc): $(cat "$err")"
}

# re_quote TEXT: TEXT as an extended regex matching itself.
re_quote() { printf '%s' "$1" | sed -e 's/[][\\.*^$?+(){}|]/\\&/g'; }

# escape CASE BACKING REASON: the top naming BACKING is refused for REASON.
escape() {
    local top=esc-$1.qcow2
    put_top "$top" "$2" raw
    refused "$1" "sub/$top[^ ]*: backing file '$(re_quote "$2")' $3.*\(allow it with --allow-backing PREFIX\)" \
        "$(nfs_url "$D/sub/$top")" "$TARGET_LUN"
}

log "a good chain: sub/good.qcow2 → ../base.raw (inside the export)"
put_top good.qcow2 ../base.raw raw
copy_ok "good chain" "$(nfs_url "$D/sub/good.qcow2")" "$TARGET_LUN"
same_as_lun "$SCRATCH/base.raw" "$TARGET_LUN" "good chain"
fill_lun "$TARGET_LUN" "$SCRATCH/target.raw"

log "escapes"
escape etc-passwd /etc/passwd "leaves the export $export_path"
escape dotdot-etc ../../../etc/passwd "leaves the export $export_path"
escape past-root ../../../../../../../base.raw "leaves the export $export_path"
escape abs-outside "$NFS_EXPORT_DIR/$D/base.raw" "leaves the export $export_path"
escape iscsi "iscsi://127.0.0.1/$other_iqn/1" "names another protocol \(iscsi:\)"
escape file file:/etc/passwd "names another protocol \(file:\)"
escape other-server "$other_host_url/$D/base.raw$NFS_QUERY" "is on another NFS server \(localhost\)"
escape other-host nfs://other-host/x "is on another NFS server \(other-host\)"
log "same server, other export: the test servers have one export (unit-tested)"

log "a loop: a.qcow2 → b.qcow2 → a.qcow2"
put_top a.qcow2 b.qcow2 qcow2
put_top b.qcow2 a.qcow2 qcow2
refused "loop" "backing chain loop" "$(nfs_url "$D/sub/a.qcow2")" "$TARGET_LUN"

log "a chain that leaves the export in its third link"
put_top l3.qcow2 ../../../../etc/passwd raw
put_top l2.qcow2 l3.qcow2 qcow2
put_top l1.qcow2 l2.qcow2 qcow2
refused "third link" "sub/l3\.qcow2[^ ]*: backing file '\.\./\.\./\.\./\.\./etc/passwd' leaves the export" \
    "$(nfs_url "$D/sub/l1.qcow2")" "$TARGET_LUN"

log "a local image whose backing file leaves its directory"
mkdir -p "$SCRATCH/local/sub"
cp "$SCRATCH/base.raw" "$SCRATCH/local/base.raw"
qemu-img create -q -f qcow2 -b ../base.raw -F raw "$SCRATCH/local/sub/top.qcow2" $SIZE
refused "local ../" "sub/top\.qcow2: backing file '\.\./base\.raw' leaves" \
    "$SCRATCH/local/sub/top.qcow2" "$TARGET_LUN"
qemu-img create -q -u -f qcow2 -b /etc/passwd -F raw "$SCRATCH/local/sub/etc.qcow2" $SIZE
refused "local /etc/passwd" "backing file '/etc/passwd' leaves" \
    "$SCRATCH/local/sub/etc.qcow2" "$TARGET_LUN"

log "--allow-backing lets named places through"
if ! "$IMGFS" copy --help 2>&1 | grep -q -- --allow-backing; then
    fail "imgfs copy has no --allow-backing"
fi
copy_ok "allowed other server name" --allow-backing "$other_host_url/" \
    "$(nfs_url "$D/sub/esc-other-server.qcow2")" "$TARGET_LUN"
same_as_lun "$SCRATCH/base.raw" "$TARGET_LUN" "allowed other server name"
copy_ok "allowed iscsi" --allow-backing "iscsi://127.0.0.1/$other_iqn/" \
    "$(nfs_url "$D/sub/esc-iscsi.qcow2")" "$TARGET_LUN"
same_as_lun "$SCRATCH/other.raw" "$TARGET_LUN" "allowed iscsi"
fill_lun "$TARGET_LUN" "$SCRATCH/target.raw"
copy_ok "allowed local" --allow-backing "$SCRATCH/local/" \
    "$SCRATCH/local/sub/top.qcow2" "$TARGET_LUN"
same_as_lun "$SCRATCH/base.raw" "$TARGET_LUN" "allowed local"
fill_lun "$TARGET_LUN" "$SCRATCH/target.raw"
# A prefix that does not cover the name changes nothing.
refused "prefix not covering" "is on another NFS server" \
    --allow-backing "$other_host_url/elsewhere/" \
    "$(nfs_url "$D/sub/esc-other-server.qcow2")" "$TARGET_LUN"

log "mount jobs: refused by default, allowed with the job key"
MNT=$SCRATCH/mnt
fuse_mount "$MNT" "target=$TARGET_LUN" "d=$(nfs_url "")"
if put_job "$MNT" esc "source = d/$D/sub/esc-other-server.qcow2
target = target"; then
    "$IMGFS" wait "$MNT/control/esc.job" >/dev/null 2>&1 &&
        fail "a job with an escaping backing file succeeded"
fi
job_field "$MNT" esc error | grep -q "is on another NFS server" ||
    fail "job status error: $(job_field "$MNT" esc error)"
rm -f "$MNT/control/esc.job"
[[ $(lun_hash "$TARGET_LUN") == "$target_sum" ]] || fail "a refused job changed the target"
put_job "$MNT" ok "source = d/$D/sub/esc-other-server.qcow2
target = target
allow-backing = $other_host_url/" || fail "allowed job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/ok.job" >/dev/null || fail "allowed job failed: $(job_field "$MNT" ok error)"
rm "$MNT/control/ok.job"
same_as_lun "$SCRATCH/base.raw" "$TARGET_LUN" "allowed job"

log "every escaping backing name refused before the target changed"
