#!/bin/bash
# copy-bad-input.sh — `imgfs copy` refuses bad input cleanly: unreachable
# servers, a missing export / file / target / LUN, a target too small,
# malformed URLs, an existing file without --overwrite.  Each attempt must
# exit non-zero with exactly one non-empty line on stderr that says what is
# wrong, and leave every target's bytes unchanged (sha256 before and after).
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576

# rejects REGEX DESC ARGS...: `imgfs copy ARGS` fails with one stderr line
# matching REGEX (extended, case-insensitive).
rejects() {
    local regex=$1 desc=$2 err rc=0 lines
    shift 2
    err=$SCRATCH/stderr
    timeout 120 "$IMGFS" copy "$@" >/dev/null 2>"$err" || rc=$?
    (( rc != 0 )) || fail "$desc: imgfs copy $* succeeded"
    (( rc != 124 )) || fail "$desc: imgfs copy $* hung (killed after 120 s)"
    (( rc < 128 )) || fail "$desc: imgfs copy $* died of signal $((rc - 128))"
    lines=$(grep -c '' "$err" || true)
    [[ -s $err && $lines -eq 1 ]] ||
        fail "$desc: expected one line on stderr, got $lines: $(head -c 2000 "$err")"
    grep -Eqi -- "$regex" "$err" ||
        fail "$desc: message does not match /$regex/: $(cat "$err")"
    log "ok ($desc, exit $rc): $(cat "$err")"
}

# A TCP port on 127.0.0.1 where nothing listens.
closed_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- fixtures: targets holding known data --------------------------------
head -c $((16 * MiB)) /dev/urandom > "$SCRATCH/src16.raw"
head -c $((32 * MiB)) /dev/urandom > "$SCRATCH/src32.raw"

new_lun 16M 512 thin
lun=$LUN_URL
head -c $((16 * MiB)) /dev/urandom > "$SCRATCH/lun-content.raw"
qemu-img convert -n -f raw -O raw "$SCRATCH/lun-content.raw" "$lun" ||
    fail "qemu-img could not fill $lun"
lun_sum=$(lun_hash "$lun")

existing=$(nfs_name existing.raw)
head -c $((3 * MiB + 7)) /dev/urandom > "$SCRATCH/existing.raw"
nfs_put "$SCRATCH/existing.raw" "$existing"
nfs_sum=$(lun_hash "$(nfs_path "$existing")")

cp "$SCRATCH/existing.raw" "$SCRATCH/local-existing.raw"
local_sum=$(lun_hash "$SCRATCH/local-existing.raw")

src_url=$(nfs_name src16.raw)
nfs_put "$SCRATCH/src16.raw" "$src_url"
src_url=$(nfs_url "$src_url")

check_targets() {
    [[ $(lun_hash "$lun") == "$lun_sum" ]] || fail "$1: the LUN's bytes changed"
    [[ $(lun_hash "$(nfs_path "$existing")") == "$nfs_sum" ]] ||
        fail "$1: the existing NFS file's bytes changed"
    [[ $(lun_hash "$SCRATCH/local-existing.raw") == "$local_sum" ]] ||
        fail "$1: the existing local file's bytes changed"
}

port=$(closed_port)
iqn_lun=${lun#iscsi://*/}            # iqn.../1 of our LUN

# ---- unreachable servers ---------------------------------------------------
rejects 'refused|unreachable|connect|mount' "unreachable NFS server (source)" \
    "$NFS_URL/x.raw?nfsport=$port&mountport=$port" "$lun"
rejects 'refused|unreachable|connect|mount' "unreachable NFS server (source), --overwrite target" \
    --overwrite "$NFS_URL/x.raw?nfsport=$port&mountport=$port" "$(nfs_url "$existing")"
rejects 'refused|unreachable|connect|login' "unreachable iSCSI portal (source), --overwrite target" \
    --overwrite "iscsi://127.0.0.1:$port/$iqn_lun" "$(nfs_url "$existing")"
rejects 'refused|unreachable|connect|login' "unreachable iSCSI portal (target)" \
    "$SCRATCH/src16.raw" "iscsi://127.0.0.1:$port/$iqn_lun"
check_targets "unreachable servers"

# ---- missing export, file, target, LUN -------------------------------------
rejects 'export|mount|no such|not found|noent|exist|denied' "missing NFS export" \
    "nfs://127.0.0.1/no-such-export/file.raw" "$lun"
rejects 'no such|not found|noent|exist' "missing NFS file (source)" \
    "$(nfs_url "$(nfs_name no-such-file.raw)")" "$lun"
rejects 'no such|not found|noent|exist' "missing NFS file (source), --overwrite target" \
    --overwrite "$(nfs_url "$(nfs_name no-such-file.raw)")" "$(nfs_url "$existing")"
rejects 'no such|not found|noent|exist|create' "missing NFS target without --create" \
    "$SCRATCH/src16.raw" "$(nfs_url "$(nfs_name not-there.raw)")"
[[ ! -e $(nfs_path "$(nfs_name not-there.raw)") ]] ||
    fail "a missing target without --create was created"
rejects 'no such|not found|noent|exist' "missing local source file" \
    "$SCRATCH/no-such-file.raw" "$lun"
rejects 'target|login|not found|no such|exist|lun' "missing iSCSI target name" \
    "$SCRATCH/src16.raw" "iscsi://$ISCSI_PORTAL/$ISCSI_IQN_PREFIX:no-such-target/1"
rejects 'target|login|not found|no such|exist|lun' "missing iSCSI target name (source)" \
    --overwrite "iscsi://$ISCSI_PORTAL/$ISCSI_IQN_PREFIX:no-such-target/1" "$(nfs_url "$existing")"
rejects 'lun|not found|no such|exist|support' "missing LUN number on an existing target" \
    "$SCRATCH/src16.raw" "${lun%/1}/7"
check_targets "missing things"

# ---- target too small --------------------------------------------------------
rejects 'too small|smaller|size' "32 MiB file onto a 16 MiB LUN" \
    "$SCRATCH/src32.raw" "$lun"
src32=$(nfs_name src32.raw)
nfs_put "$SCRATCH/src32.raw" "$src32"
rejects 'too small|smaller|size' "32 MiB NFS file onto a 16 MiB LUN" \
    --order any "$(nfs_url "$src32")" "$lun"
check_targets "target too small"

# ---- malformed URLs ------------------------------------------------------------
for bad in "nfs://" "nfs:///imgfs/file.raw" "iscsi://" "iscsi://127.0.0.1/" \
           "iscsi://$ISCSI_PORTAL/$ISCSI_IQN_PREFIX:thin512" \
           "iscsi://127.0.0.1:notaport/$iqn_lun" "iscsi://$ISCSI_PORTAL/$iqn_lun/x" \
           "zero:" "zero:12Q"; do
    rejects '.' "malformed source URL $bad" "$bad" "$lun"
done
rejects 'invalid portal' "iSCSI port that is not a number" \
    "iscsi://127.0.0.1:notaport/$iqn_lun" "$lun"
rejects '.' "malformed target URL" "$SCRATCH/src16.raw" "iscsi://127.0.0.1/"
rejects '.' "malformed target URL, --overwrite" --overwrite "$src_url" "nfs://"
check_targets "malformed URLs"

# ---- existing file without --overwrite --------------------------------------
rejects 'overwrite|exist' "existing NFS file without --overwrite" \
    "$SCRATCH/src16.raw" "$(nfs_url "$existing")"
rejects 'overwrite|exist' "existing NFS file with --create, without --overwrite" \
    --create "$src_url" "$(nfs_url "$existing")"
rejects 'overwrite|exist' "existing local file without --overwrite" \
    "$src_url" "$SCRATCH/local-existing.raw"
rejects 'overwrite|exist' "existing local file with --create, without --overwrite" \
    --create "$lun" "$SCRATCH/local-existing.raw"
check_targets "existing files"

# The fixtures still copy fine (the failures above were about the input).
out=$("$IMGFS" copy -q "$src_url" "$lun" 2>&1) || fail "good copy failed: $out"
[[ $(lun_hash "$lun") == "$(lun_hash "$SCRATCH/src16.raw")" ]] ||
    fail "good copy onto the LUN does not match its source"
log "every bad input was refused and left the targets untouched"
