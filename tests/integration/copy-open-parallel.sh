#!/bin/bash
# copy-open-parallel.sh — an existing target opens while the source does.
# The source's NFS servers sit behind scripts/delay-proxy (100 ms each way),
# the LUN is reached directly: strace shows the target's iSCSI connect
# before the source's NFS connection (the open's later round trips) —
# opened one after the other, every source connect came first.  The bytes
# are checked with qemu-img compare / cmp; errors of either side still
# name that side, a bad source wins over a bad target, and the target
# named through another spelling of the source is refused with nothing
# written.  No timing is asserted.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
PROXY=$BUILD_DIR/scripts/delay-proxy
[[ -x $PROXY ]] || fail "$PROXY not built"
command -v strace >/dev/null || { log "no strace; skipping"; exit 77; }

MiB=1048576
server_ports

out=$SCRATCH/proxy.out
start_delay_proxy "$out" -d 100 "0:127.0.0.1:$mnt_port" "0:127.0.0.1:$nfs_port"
p_mnt=$(proxy_port "$out" "$mnt_port") p_nfs=$(proxy_port "$out" "$nfs_port")
[[ -n $p_mnt && -n $p_nfs ]] || fail "proxy ports missing: $(cat "$out")"
slow() { echo "$NFS_URL/$1?nfsport=$p_nfs&mountport=$p_mnt"; }

# A qcow2 source (the deploy case) and its raw bytes.
head -c $((8 * MiB)) /dev/urandom > "$SCRATCH/src.raw"
dd if=/dev/zero of="$SCRATCH/src.raw" bs=1M seek=2 count=3 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$SCRATCH/src.raw" "$SCRATCH/src.qcow2" || fail "qemu-img convert"
SRC=$(nfs_name src.qcow2)
nfs_put "$SCRATCH/src.qcow2" "$SRC"
new_lun 8M 512 thin
LUN=$LUN_URL

# ---- the target's open overlaps the source's -------------------------------
# (LeakSanitizer does not run under ptrace: the leak check is the run below.)
trace=$SCRATCH/connects
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    strace -f -qq -e trace=connect -o "$trace" "$IMGFS" copy -q "$(slow "$SRC")" "$LUN" ||
    fail "copy under strace failed"
same_as_lun "$SCRATCH/src.raw" "$LUN" "qcow2 on NFS -> LUN (traced)"
line_of() { grep -n "sin_port=htons($1)" "$trace" | head -n 1 | cut -d: -f1; }
l_iscsi=$(line_of "$iscsi_port") l_mnt=$(line_of "$p_mnt") l_nfs=$(line_of "$p_nfs")
[[ -n $l_iscsi && -n $l_mnt && -n $l_nfs ]] ||
    fail "connects missing from the trace: $(cat "$trace")"
((l_mnt < l_nfs)) || fail "the source's mount connect after its NFS connect?"
((l_iscsi < l_nfs)) ||
    fail "the target's iSCSI connect came after the source's NFS connect: opened one after the other: $(grep -E "htons\(($iscsi_port|$p_mnt|$p_nfs)\)" "$trace")"
log "ok: iSCSI connect (line $l_iscsi) before the source's NFS connect (line $l_nfs)"

# The same with LeakSanitizer, onto a LUN with other bytes and onto an
# existing NFS file (written in place: --overwrite without --create).
qemu-io -f raw -c 'write -P 0x33 0 8M' "$LUN" >/dev/null || fail "qemu-io $LUN"
copy_ok "qcow2 on NFS -> LUN" "$(slow "$SRC")" "$LUN"
same_as_lun "$SCRATCH/src.raw" "$LUN" "qcow2 on NFS -> LUN"
DST=$(nfs_name dst.raw)
head -c $((8 * MiB)) /dev/urandom > "$SCRATCH/old.raw"
nfs_put "$SCRATCH/old.raw" "$DST"
copy_ok "qcow2 on NFS -> existing NFS file" --overwrite "$(slow "$SRC")" "$(nfs_url "$DST")"
check_cmp "$SCRATCH/src.raw" "$(nfs_path "$DST")"

# ---- errors name their side ---------------------------------------------------
# refused DESC PATTERN CMD...: fails with one line on stderr matching PATTERN.
refused() {
    local desc=$1 pattern=$2 rc=0 lines
    shift 2
    "$@" >/dev/null 2>"$SCRATCH/err" || rc=$?
    lines=$(grep -c '' "$SCRATCH/err" || true)
    ((rc != 0)) || fail "$desc: succeeded: $*"
    ((lines == 1)) || fail "$desc: $lines lines on stderr: $(head -c 1000 "$SCRATCH/err")"
    grep -Eq -- "$pattern" "$SCRATCH/err" ||
        fail "$desc: message does not match '$pattern': $(cat "$SCRATCH/err")"
    log "ok, refused ($desc, status $rc): $(cat "$SCRATCH/err")"
}
unchanged() {
    local now
    now=$(lun_hash "$3")
    [[ $now == "$2" ]] || fail "$1: $3 changed (sha256 $now, was $2)"
}
qemu-io -f raw -c 'write -P 0x44 0 8M' "$LUN" >/dev/null || fail "qemu-io $LUN"
LHASH=$(lun_hash "$LUN")
MISSING=$(nfs_name missing.qcow2)
BADLUN="iscsi://$ISCSI_PORTAL/$ISCSI_IQN_PREFIX:no-such-target-$$/1"

refused "bad source, good target" "$MISSING" \
    "$IMGFS" copy -q "$(slow "$MISSING")" "$LUN"
grep -q "no-such-target\|${LUN#iscsi://*/}" "$SCRATCH/err" &&
    fail "bad source, good target: the message names the target"
unchanged "bad source, good target" "$LHASH" "$LUN"

refused "good source, bad target" "no-such-target-$$" \
    "$IMGFS" copy -q "$(slow "$SRC")" "$BADLUN"
grep -q "$SRC" "$SCRATCH/err" && fail "good source, bad target: the message names the source"

refused "bad source, bad target" "$MISSING" \
    "$IMGFS" copy -q "$(slow "$MISSING")" "$BADLUN"
grep -q "no-such-target" "$SCRATCH/err" &&
    fail "bad source, bad target: the message names the target, not the source"

NOFILE=$(nfs_name nofile.raw)
refused "good source, missing NFS target" "$NOFILE.*use --create" \
    "$IMGFS" copy -q "$(slow "$SRC")" "$(nfs_url "$NOFILE")"

refused "good source, non-empty NFS target without --overwrite" "$DST.*use --overwrite" \
    "$IMGFS" copy -q "$(slow "$SRC")" "$(nfs_url "$DST")"

# ---- the target is the source, spelled otherwise: nothing written -----------
IQN_LUN=${LUN#iscsi://*/}
refused "LUN through localhost" "are the same image" \
    "$IMGFS" copy -q "$LUN" "iscsi://localhost:$iscsi_port/$IQN_LUN"
unchanged "LUN through localhost" "$LHASH" "$LUN"
V=$(nfs_name v.raw)
nfs_put "$SCRATCH/old.raw" "$V"
VHASH=$(sha256sum < "$SCRATCH/old.raw" | cut -d' ' -f1)
refused "NFS file through other ports and //" "are the same image" \
    "$IMGFS" copy -q --overwrite "$(slow "$V")" "nfs://localhost${NFS_URL#nfs://127.0.0.1}//$V"
unchanged "NFS file through other ports and //" "$VHASH" "$(nfs_path "$V")"
# A backing file of the source, as the target.
TOP=$(nfs_name top.qcow2)
cp "$SCRATCH/old.raw" "$SCRATCH/$V"
qemu-img create -q -f qcow2 -b "$V" -F raw "$SCRATCH/$TOP" $((8 * MiB)) || fail "qemu-img create"
nfs_put "$SCRATCH/$TOP" "$TOP"
refused "backing file of the source" "is the backing file .*$V" \
    "$IMGFS" copy -q --overwrite "$(slow "$TOP")" "nfs://localhost${NFS_URL#nfs://127.0.0.1}/$V"
unchanged "backing file of the source" "$VHASH" "$(nfs_path "$V")"
log "all ok"
