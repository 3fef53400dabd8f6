#!/bin/bash
# security-alias.sh — a target that is the source under another name is
# refused before a byte of it changes: `imgfs copy --create --overwrite`
# once zeroed nfs://h/e/v.raw when the target was spelled
# 'nfs://h/e/v.raw?nfsport=2049' (the check compared strings).
#
# imgfs copy (exit status non-zero, one line on stderr naming both, the
# source's sha256 unchanged), each spelling of the source as the target:
#   NFS    ?nfsport= / ?nfsport=&mountport=, `//` and `./` in the path,
#          localhost for 127.0.0.1, a hard link and a symlink in the export;
#          a backing file of a qcow2 source (also spelled via localhost)
#   iSCSI  iscsi://localhost/IQN/1 for iscsi://127.0.0.1:3260/IQN/1
#   local  a symlink to the source, with --create --overwrite
# and the mount (imgfs mount with two names for one export, plus the file
# itself as a top-level name, and two names for one LUN):
#   `cp a/X b/X`, `cp f b/X` and `cp l1 l2` fail with cp's "are the same
#   file" (st_ino from the server's fileid, or from the LUN's identity) and
#   nothing changes; copy_file_range(2) between two names of one file or
#   one LUN fails with EINVAL.
# Positive controls: a copy to a different file works, and the mount shows
# different files with different inode numbers.
# Files created by --create (NFS, local) are mode 0600.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
FAILS=0
bad() { echo "FAIL: $TEST_NAME: $*" >&2; FAILS=$((FAILS + 1)); }

# refused DESC PATTERN CMD...: CMD exits non-zero with exactly one line on
# stderr that matches PATTERN (grep -E).
refused() {
    local desc=$1 pattern=$2 rc=0 lines
    shift 2
    "$@" >/dev/null 2>"$SCRATCH/err" || rc=$?
    lines=$(grep -c '' "$SCRATCH/err" || true)
    if ((rc == 0)); then
        bad "$desc: succeeded: $*"
    elif ((lines != 1)); then
        bad "$desc: $lines lines on stderr: $(head -c 1000 "$SCRATCH/err")"
    elif ! grep -Eq -- "$pattern" "$SCRATCH/err"; then
        bad "$desc: message does not match '$pattern': $(cat "$SCRATCH/err")"
    else
        log "ok, refused ($desc, status $rc): $(cat "$SCRATCH/err")"
    fi
}

# unchanged DESC WANT_HASH URL|FILE
unchanged() {
    local now
    now=$(lun_hash "$3")
    [[ $now == "$2" ]] || bad "$1: $3 changed (sha256 $now, was $2)"
}

HOST_URL=${NFS_URL#nfs://}          # 127.0.0.1/export
HOST=${HOST_URL%%/*}
EXPORT=/${HOST_URL#*/}
[[ $HOST == 127.0.0.1 ]] || { log "servers not on 127.0.0.1; skipping"; exit 77; }

# ---- NFS spellings ----------------------------------------------------------
head -c $((4 * MiB)) /dev/urandom > "$SCRATCH/v.raw"
V=$(nfs_name v.raw)
nfs_put "$SCRATCH/v.raw" "$V"
VHASH=$(sha256sum < "$SCRATCH/v.raw" | cut -d' ' -f1)
SRC="nfs://127.0.0.1$EXPORT/$V"
# A hard link and a symlink in the export, made in the export directory
# before first use (ganesha does not cache directory contents).
ln "$(nfs_path "$V")" "$(nfs_path "$(nfs_name hard.raw)")"
ln -s "$V" "$(nfs_path "$(nfs_name sym.raw)")"

for target in \
    "$SRC?nfsport=$NFS_PORT" \
    "$SRC?nfsport=$NFS_PORT&mountport=$NFS_MOUNT_PORT" \
    "nfs://127.0.0.1$EXPORT//$V" \
    "nfs://127.0.0.1$EXPORT/./$V" \
    "nfs://localhost$EXPORT/$V" \
    "nfs://localhost$EXPORT/./$V?mountport=$NFS_MOUNT_PORT" \
    "nfs://127.0.0.1$EXPORT/$(nfs_name hard.raw)" \
    "nfs://127.0.0.1$EXPORT/$(nfs_name sym.raw)"; do
    refused "nfs target $target" "are the same image" \
        "$IMGFS" copy -q --create --overwrite "$SRC" "$target"
    unchanged "nfs target $target" "$VHASH" "$(nfs_path "$V")"
    # Without --create the target is written over as it is: refused too.
    refused "nfs target $target (--overwrite)" "are the same image" \
        "$IMGFS" copy -q --overwrite "$SRC" "$target"
    unchanged "nfs target $target (--overwrite)" "$VHASH" "$(nfs_path "$V")"
done
# The other way round: the alias as the source.
refused "nfs source via localhost" "are the same image" \
    "$IMGFS" copy -q --create --overwrite "nfs://localhost$EXPORT/$V" "$SRC"
unchanged "nfs source via localhost" "$VHASH" "$(nfs_path "$V")"

# Positive control: another file of the same export is not the source.
OTHER=$(nfs_name other.raw)
copy_ok "copy to a different NFS file" --create "$SRC" \
    "nfs://localhost$EXPORT/$OTHER?nfsport=$NFS_PORT"
check_cmp "$SCRATCH/v.raw" "$(nfs_path "$OTHER")"

# ---- files created by --create are owner-only -----------------------------
mode=$(stat -c %a "$(nfs_path "$OTHER")")
[[ $mode == 600 ]] || bad "NFS file created by --create has mode $mode, not 600"
copy_ok "copy to a new local file" --create "$SRC" "$SCRATCH/new-local.raw"
mode=$(stat -c %a "$SCRATCH/new-local.raw")
[[ $mode == 600 ]] || bad "local file created by --create has mode $mode, not 600"
Q=$(nfs_name new.qcow2)
copy_ok "copy to a new qcow2 on NFS" --create --target-format qcow2 "$SRC" \
    "$(nfs_url "$Q")"
mode=$(stat -c %a "$(nfs_path "$Q")")
[[ $mode == 600 ]] || bad "qcow2 file created by --create has mode $mode, not 600"

# ---- a backing file of a qcow2 source --------------------------------------
BASE=$(nfs_name base.raw)
TOP=$(nfs_name top.qcow2)
cp "$SCRATCH/v.raw" "$SCRATCH/$BASE"
qemu-img create -q -f qcow2 -b "$BASE" -F raw "$SCRATCH/$TOP" $((4 * MiB)) ||
    fail "qemu-img create"
qemu-io -f qcow2 -c 'write -P 0x5a 1M 64k' "$SCRATCH/$TOP" >/dev/null || fail "qemu-io"
nfs_put "$SCRATCH/$BASE" "$BASE"
nfs_put "$SCRATCH/$TOP" "$TOP"
BHASH=$(lun_hash "$(nfs_path "$BASE")")
THASH=$(lun_hash "$(nfs_path "$TOP")")
for target in "nfs://127.0.0.1$EXPORT/$BASE" \
              "nfs://localhost$EXPORT//$BASE?nfsport=$NFS_PORT"; do
    refused "backing file $target" "is the backing file .*$BASE" \
        "$IMGFS" copy -q --create --overwrite "nfs://127.0.0.1$EXPORT/$TOP" "$target"
    unchanged "backing file $target" "$BHASH" "$(nfs_path "$BASE")"
done
refused "qcow2 source's own file" "are the same image" \
    "$IMGFS" copy -q --create --overwrite "nfs://127.0.0.1$EXPORT/$TOP" \
    "nfs://localhost$EXPORT/$TOP"
unchanged "qcow2 source's own file" "$THASH" "$(nfs_path "$TOP")"

# ---- one LUN, two spellings -------------------------------------------------
new_lun 16M 512 thin
head -c $((16 * MiB)) /dev/urandom > "$SCRATCH/lun.raw"
fill_lun "$LUN_URL" "$SCRATCH/lun.raw"
LHASH=$(sha256sum < "$SCRATCH/lun.raw" | cut -d' ' -f1)
IQN_LUN=${LUN_URL#iscsi://*/}       # iqn.../1
ALIAS="iscsi://localhost/$IQN_LUN"
refused "LUN by two spellings" "are the same image" \
    "$IMGFS" copy -q "$LUN_URL" "$ALIAS"
refused "LUN by two spellings (reverse)" "are the same image" \
    "$IMGFS" copy -q "$ALIAS" "$LUN_URL"
unchanged "LUN by two spellings" "$LHASH" "$LUN_URL"
LUN1=$LUN_URL
new_lun 16M 512 thin
LUN2=$LUN_URL
copy_ok "copy to a different LUN" "$LUN1" "$LUN2"
same_as_lun "$SCRATCH/lun.raw" "$LUN2" "copy to a different LUN"

# ---- local: a symlink to the source ----------------------------------------
cp "$SCRATCH/v.raw" "$SCRATCH/local.raw"
ln -s local.raw "$SCRATCH/local-link.raw"
refused "local symlink target" "are the same image" \
    "$IMGFS" copy -q --create --overwrite "$SCRATCH/local.raw" "$SCRATCH/local-link.raw"
refused "local ./ and // spelling" "are the same image" \
    "$IMGFS" copy -q --create --overwrite "$SCRATCH/local.raw" "$SCRATCH/.//local.raw"
unchanged "local symlink target" "$VHASH" "$SCRATCH/local.raw"

# ---- the mount ---------------------------------------------------------------
MNT=$SCRATCH/mnt
fuse_mount "$MNT" "a=nfs://127.0.0.1$EXPORT/" \
    "b=nfs://localhost$EXPORT/?nfsport=$NFS_PORT&mountport=$NFS_MOUNT_PORT" \
    "f=$SRC" "l1=$LUN1" "l2=iscsi://localhost/${LUN1#iscsi://*/}"
ino_a=$(stat -c %i "$MNT/a/$V")
ino_b=$(stat -c %i "$MNT/b/$V")
ino_f=$(stat -c %i "$MNT/f")
ino_h=$(stat -c %i "$MNT/b/$(nfs_name hard.raw)")
ino_o=$(stat -c %i "$MNT/a/$OTHER")
[[ $ino_a == "$ino_b" && $ino_a == "$ino_f" && $ino_a == "$ino_h" ]] ||
    bad "one file, several st_ino: a $ino_a b $ino_b f $ino_f hard link $ino_h"
[[ $ino_o != "$ino_a" ]] || bad "two files, one st_ino $ino_a"
for pair in "$MNT/a/$V $MNT/b/$V" "$MNT/f $MNT/b/$V" "$MNT/a/$V $MNT/f"; do
    # shellcheck disable=SC2086
    refused "cp $pair in the mount" "are the same file" cp $pair
    unchanged "cp $pair in the mount" "$VHASH" "$(nfs_path "$V")"
done
# Two names for one LUN: cp's O_TRUNC open would make the LUN read as
# zeroes; one st_ino (from the LUN's identity) stops cp before it.
[[ $(stat -c %i "$MNT/l1") == $(stat -c %i "$MNT/l2") ]] ||
    bad "one LUN, two st_ino: $(stat -c %i "$MNT/l1") $(stat -c %i "$MNT/l2")"
refused "cp between two names of one LUN" "are the same file" \
    cp "$MNT/l1" "$MNT/l2"
# What cp would do after its own check: copy_file_range between two open
# names of one image (the target opened without O_TRUNC).
crange() {
    python3 - "$1" "$2" <<'PY'
import os, sys
i = os.open(sys.argv[1], os.O_RDONLY)
o = os.open(sys.argv[2], os.O_WRONLY)
try:
    os.copy_file_range(i, o, 1 << 20, 0, 0)
except OSError as e:
    print(f"copy_file_range: {os.strerror(e.errno)}", file=sys.stderr)
    sys.exit(2 if e.errno == 22 else 3)
PY
}
refused "copy_file_range between two names of one NFS file" "Invalid argument" \
    crange "$MNT/a/$V" "$MNT/b/$V"
unchanged "copy_file_range NFS" "$VHASH" "$(nfs_path "$V")"
refused "copy_file_range between two names of one LUN" "Invalid argument" \
    crange "$MNT/l1" "$MNT/l2"
# Positive control: copy_file_range onto a different file still works.
crange "$MNT/f" "$MNT/b/$OTHER" || bad "copy_file_range onto another file failed"
fuse_umount "$MNT"
unchanged "copy_file_range LUN" "$LHASH" "$LUN1"
check_cmp "$SCRATCH/v.raw" "$(nfs_path "$OTHER")"

((FAILS == 0)) || fail "$FAILS check(s) failed"
log "all alias checks passed"
