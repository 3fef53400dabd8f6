#!/bin/bash
# servers-smoke.sh — the test servers do what the other integration tests
# rely on, checked with independent tools only (nfs-cp, qemu-img, libiscsi's
# iscsi-* utilities, cmp).
. "$(dirname "$0")/lib.sh"
need_servers

# NFS: put/get round trip, byte for byte, also in a subdirectory (libnfs
# MOUNTs the URL's directory, so this checks subdirectory mounts).
head -c 3000000 /dev/urandom > "$SCRATCH/random"
name=$(nfs_name roundtrip)
nfs_put "$SCRATCH/random" "$name"
nfs_get "$name" "$SCRATCH/back"
check_cmp "$SCRATCH/random" "$SCRATCH/back"
check_cmp "$SCRATCH/random" "$(nfs_path "$name")"

dir=$(nfs_name dir)
mkdir "$(nfs_path "$dir")"
nfs_put "$SCRATCH/random" "$dir/sub-file"
nfs_get "$dir/sub-file" "$SCRATCH/back-sub"
check_cmp "$SCRATCH/random" "$SCRATCH/back-sub"
nfs-ls "$(nfs_url "$dir/")" | grep -q ' sub-file$' || fail "nfs-ls of a subdirectory does not list sub-file"

# Replacing an existing file through nfs_put.
head -c 4096 /dev/urandom > "$SCRATCH/small"
nfs_put "$SCRATCH/small" "$name"
nfs_get "$name" "$SCRATCH/back2"
check_cmp "$SCRATCH/small" "$SCRATCH/back2"

# qemu-img reads a qcow2 image over NFS (QEMU takes no port options:
# portmapper must know the ports).
qcow=$(nfs_name image.qcow2)
qemu-img create -q -f qcow2 "$SCRATCH/image.qcow2" 64M
nfs_put "$SCRATCH/image.qcow2" "$qcow"
info=$(qemu-img info --output=json "$(nfs_qemu_url "$qcow")") || fail "qemu-img info $(nfs_qemu_url "$qcow") failed"
grep -q '"format": "qcow2"' <<< "$info" || fail "qemu-img info over NFS: not qcow2: $info"
grep -q '"virtual-size": 67108864' <<< "$info" || fail "qemu-img info over NFS: wrong size: $info"

# iSCSI: sizes and block sizes as servers.env promises.
check_capacity() { # URL BLOCKSIZE BYTES
    local out
    out=$(iscsi-readcapacity16 "$1") || fail "iscsi-readcapacity16 $1 failed"
    grep -q "^LOGICAL BLOCK LENGTH IN BYTES:$2\$" <<< "$out" || fail "$1: block size is not $2: $out"
    grep -q "^Total size:$3\$" <<< "$out" || fail "$1: size is not $3: $out"
    echo "$out"
}
check_capacity "$ISCSI_THIN512" 512 268435456 > /dev/null
check_capacity "$ISCSI_THICK512" 512 268435456 > /dev/null
check_capacity "$ISCSI_THIN4K" 4096 268435456 > /dev/null
check_capacity "$ISCSI_THICK4K" 4096 268435456 > /dev/null
check_capacity "$ISCSI_SMALL" 512 16777216 > /dev/null

# Thin LUNs advertise logical block provisioning (LBPME), thick ones do not.
grep -q '^LBPME:1' <<< "$(check_capacity "$ISCSI_THIN4K" 4096 268435456)" || fail "thin4k: LBPME not set"
grep -q '^LBPME:1' <<< "$(check_capacity "$ISCSI_THIN512" 512 268435456)" || fail "thin512: LBPME not set"
grep -q '^LBPME:0' <<< "$(check_capacity "$ISCSI_THICK512" 512 268435456)" || fail "thick512: LBPME set"

info=$(qemu-img info --output=json "$ISCSI_THIN512") || fail "qemu-img info $ISCSI_THIN512 failed"
grep -q '"virtual-size": 268435456' <<< "$info" || fail "qemu-img info iscsi: wrong size: $info"

# A fresh LUN: data written through iSCSI lands in the backing file, and
# lun_hash reads the same bytes over the network.
new_lun 8M 4096 thin
check_capacity "$LUN_URL" 4096 8388608 > /dev/null
head -c 8388608 /dev/urandom > "$SCRATCH/lun-data"
qemu-img convert -n -f raw -O raw "$SCRATCH/lun-data" "$LUN_URL" || fail "qemu-img convert to $LUN_URL failed"
check_cmp "$SCRATCH/lun-data" "$LUN_FILE"
[[ $(lun_hash "$LUN_URL") == "$(lun_hash "$SCRATCH/lun-data")" ]] || fail "lun_hash over iSCSI differs from the data written"

# Unmapping on a thin LUN punches a hole in the backing file, and GET LBA
# STATUS (qemu-img map) reports it.
qemu-io -f raw -c 'write -z -u 0 4M' "$LUN_URL" > /dev/null || fail "qemu-io unmap on $LUN_URL failed"
map=$(qemu-img map -f raw --output=json "$LUN_URL") || fail "qemu-img map $LUN_URL failed"
grep -q '"start": 0, "length": 4194304, .*"data": false' <<< "$map" || fail "unmapped range not reported as a hole: $map"
(( $(du -k "$LUN_FILE" | cut -f1) <= 4200 )) || fail "unmap did not punch the backing file: $(du -k "$LUN_FILE")"

# CHAP: the wrong password is refused, the right one accepted.
[[ $(stat -c %a "$ISCSI_CHAP_SECRET_FILE") == 600 ]] || fail "$ISCSI_CHAP_SECRET_FILE is not mode 0600"
password=$(head -n 1 "$ISCSI_CHAP_SECRET_FILE")
wrong=${ISCSI_CHAP/"$ISCSI_CHAP_USER"@/"$ISCSI_CHAP_USER"%not-the-password@}
right=${ISCSI_CHAP/"$ISCSI_CHAP_USER"@/"$ISCSI_CHAP_USER"%$password@}
if iscsi-inq "$wrong" > /dev/null 2>&1; then fail "CHAP target accepted a wrong password"; fi
if iscsi-inq "${ISCSI_CHAP/"$ISCSI_CHAP_USER"@/}" > /dev/null 2>&1; then fail "CHAP target accepted a login without CHAP"; fi
iscsi-inq "$right" > /dev/null || fail "CHAP target refused the password from $ISCSI_CHAP_SECRET_FILE"

log "all server checks passed"
