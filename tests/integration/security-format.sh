#!/bin/bash
# security-format.sh — a guest cannot choose the format of its own disk.
#
# A guest writes a qcow2 header at byte 0 of its disk (made with qemu-img
# create -f qcow2 -b NAME -F raw, then written over random data) naming
# as its backing file /etc/passwd, ../../etc/passwd, another real LUN
# (iscsi://127.0.0.1/IQN/1, also with the CHAP user and the CHAP secret
# available to imgfs) or nfs://other-host/x.  With the disk on a LUN, in an
# NFS file named *.raw and in a local *.raw file:
#   - `imgfs copy` backup (LUN → new NFS file), deploy (*.raw → LUN) and
#     mount jobs (cp of a job file into MOUNT/control/) produce exactly the
#     disk's raw bytes (cmp, qemu-img compare);
#   - the same bytes in a file named otherwise (*.img) are refused with one
#     line naming the problem, the target LUN unchanged (sha256), and a
#     mount job naming it fails the same way;
#   - --source-format raw reads such a file as raw; --source-format qcow2 on
#     the LUN reads the header, whose backing name is refused (a qcow2 on a
#     LUN names no backing files), target unchanged;
#   - a *.qcow2 name without the qcow2 magic is refused, target unchanged.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
command -v qemu-img >/dev/null || { log "qemu-img not installed; skipping"; exit 77; }

MiB=1048576
SIZE=$((8 * MiB))
# The CHAP secret is there for the taking: an attack that reached the
# CHAP target would log in.
if [[ -n ${ISCSI_CHAP_SECRET_FILE:-} ]]; then
    export IMGFS_ISCSI_SECRET_FILE=$ISCSI_CHAP_SECRET_FILE
fi

# ---- fixtures ---------------------------------------------------------------
new_lun 8M 512 thin;  GUEST_LUN=$LUN_URL
new_lun 8M 512 thin;  TARGET_LUN=$LUN_URL
new_lun 8M 512 thin;  OTHER_LUN=$LUN_URL
# The other LUN holds bytes that must never show up in a copy.
head -c $SIZE /dev/zero | tr '\0' '\251' > "$SCRATCH/other.raw"
fill_lun "$OTHER_LUN" "$SCRATCH/other.raw"
other_iqn=${OTHER_LUN#iscsi://*/}
other_iqn=${other_iqn%/*}
chap_iqn=${ISCSI_CHAP#iscsi://*/}
chap_iqn=${chap_iqn%/*}

backing_names=(
    /etc/passwd
    ../../etc/passwd
    "iscsi://127.0.0.1/$other_iqn/1"
    "iscsi://${ISCSI_CHAP_USER:-imgfs}@127.0.0.1/$chap_iqn/1"
    nfs://other-host/x
)

# guest_disk N NAME: $SCRATCH/guest-N.raw = random data with a qcow2 header
# naming NAME at byte 0.
guest_disk() {
    local hdr=$SCRATCH/hdr-$1.qcow2 out=$SCRATCH/guest-$1.raw
    rm -f "$hdr"
    qemu-img create -q -u -f qcow2 -b "$2" -F raw "$hdr" $SIZE ||
        fail "qemu-img create with backing $2"
    head -c $SIZE /dev/urandom > "$out"
    dd if="$hdr" of="$out" conv=notrunc status=none
    [[ $(head -c 4 "$out") == $'QFI\xfb' ]] || fail "no qcow2 magic in $out"
    cmp -s -n $SIZE "$out" "$SCRATCH/other.raw" && fail "fixture clash"
    true
}

# target_hash: sha256 of the deploy target LUN (must not change on refusal).
target_sum() { lun_hash "$TARGET_LUN"; }

# refused REGEX DESC ARGS...: `imgfs copy ARGS` fails with one stderr line
# matching REGEX and leaves the target LUN as it was.
refused() {
    local regex=$1 desc=$2 before rc=0 err=$SCRATCH/refused.err
    shift 2
    before=$(target_sum)
    "$IMGFS" copy -q "$@" >/dev/null 2>"$err" || rc=$?
    (( rc != 0 )) || fail "$desc: imgfs copy $* succeeded"
    (( rc < 128 )) || fail "$desc: imgfs copy died of signal $((rc - 128))"
    [[ $(grep -c '' "$err") -eq 1 ]] ||
        fail "$desc: expected one line on stderr: $(head -c 2000 "$err")"
    grep -Eq -- "$regex" "$err" ||
        fail "$desc: message does not match /$regex/: $(cat "$err")"
    [[ $(target_sum) == "$before" ]] || fail "$desc: the target LUN changed"
    log "ok, refused ($desc): $(cat "$err")"
}

MNT=$SCRATCH/mnt
fuse_mount "$MNT" "guest=$GUEST_LUN" "target=$TARGET_LUN" "d=$(nfs_url "")"

n=0
for name in "${backing_names[@]}"; do
    n=$((n + 1))
    log "guest header naming '$name'"
    guest_disk $n "$name"
    G=$SCRATCH/guest-$n.raw

    # --- on a LUN: backup to a new NFS file
    fill_lun "$GUEST_LUN" "$G"
    out=$(nfs_name backup-$n.img)
    copy_ok "backup of the guest LUN ($name)" --create "$GUEST_LUN" "$(nfs_url "$out")"
    check_cmp "$G" "$(nfs_path "$out")"
    out2=$(nfs_name backup-$n.qcow2.raw)
    copy_ok "backup into a *.raw file ($name)" --create "$GUEST_LUN" "$(nfs_url "$out2")"
    check_cmp "$G" "$(nfs_path "$out2")"

    # --- an NFS file named *.raw: deploy to a LUN
    src=$(nfs_name guest-$n.raw)
    nfs_put "$G" "$src"
    copy_ok "deploy of an NFS *.raw ($name)" "$(nfs_url "$src")" "$TARGET_LUN"
    same_as_lun "$G" "$TARGET_LUN" "deploy of an NFS *.raw ($name)"

    # --- a local *.raw: deploy to a LUN (clear it first so the check bites)
    fill_lun "$TARGET_LUN" "$SCRATCH/other.raw"
    copy_ok "deploy of a local *.raw ($name)" "$G" "$TARGET_LUN"
    same_as_lun "$G" "$TARGET_LUN" "deploy of a local *.raw ($name)"

    # --- mount jobs: LUN → NFS file, NFS *.raw → LUN
    out3=$(nfs_name job-$n.img)
    put_job "$MNT" backup$n "source = guest
target = d/$out3" || fail "backup job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/backup$n.job" >/dev/null ||
        fail "backup job failed: $(job_field "$MNT" backup$n error)"
    rm "$MNT/control/backup$n.job"
    check_cmp "$G" "$(nfs_path "$out3")"
    fill_lun "$TARGET_LUN" "$SCRATCH/other.raw"
    put_job "$MNT" deploy$n "source = d/$src
target = target" || fail "deploy job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/deploy$n.job" >/dev/null ||
        fail "deploy job failed: $(job_field "$MNT" deploy$n error)"
    rm "$MNT/control/deploy$n.job"
    same_as_lun "$G" "$TARGET_LUN" "deploy job ($name)"

    # --- the same bytes under another name: refused, target unchanged
    img=$(nfs_name guest-$n.img)
    nfs_put "$G" "$img"
    fill_lun "$TARGET_LUN" "$SCRATCH/other.raw"
    refused "has a qcow2 header but is not named \*\.qcow2: state the format" \
        "NFS *.img with a qcow2 header ($name)" "$(nfs_url "$img")" "$TARGET_LUN"
    cp "$G" "$SCRATCH/guest-$n.img"
    refused "has a qcow2 header but is not named \*\.qcow2: state the format" \
        "local *.img with a qcow2 header ($name)" "$SCRATCH/guest-$n.img" "$TARGET_LUN"
    before=$(target_sum)
    if put_job "$MNT" bad$n "source = d/$img
target = target"; then
        "$IMGFS" wait "$MNT/control/bad$n.job" >/dev/null 2>&1 &&
            fail "a job from a *.img with a qcow2 header succeeded"
    fi
    job_field "$MNT" bad$n error | grep -q "not named \*\.qcow2" ||
        fail "job status error: $(job_field "$MNT" bad$n error)"
    rm -f "$MNT/control/bad$n.job"
    [[ $(target_sum) == "$before" ]] || fail "a refused job changed the target"

    # --- stated formats: raw reads the bytes; qcow2 on a LUN refuses its
    # backing name
    copy_ok "--source-format raw ($name)" --source-format raw "$(nfs_url "$img")" "$TARGET_LUN"
    same_as_lun "$G" "$TARGET_LUN" "--source-format raw ($name)"
    fill_lun "$TARGET_LUN" "$SCRATCH/other.raw"
    refused "backing file '.*' is refused: a qcow2 image on a LUN" \
        "--source-format qcow2 on the guest LUN ($name)" \
        --source-format qcow2 "$GUEST_LUN" "$TARGET_LUN"
done

log "a *.qcow2 name without the qcow2 magic"
head -c $SIZE /dev/urandom > "$SCRATCH/plain.raw"
plain=$(nfs_name plain.qcow2)
nfs_put "$SCRATCH/plain.raw" "$plain"
refused "named \*\.qcow2 but has no qcow2 header; state the format" \
    "NFS *.qcow2 without magic" "$(nfs_url "$plain")" "$TARGET_LUN"
cp "$SCRATCH/plain.raw" "$SCRATCH/plain.qcow2"
refused "named \*\.qcow2 but has no qcow2 header; state the format" \
    "local *.qcow2 without magic" "$SCRATCH/plain.qcow2" "$TARGET_LUN"
copy_ok "*.qcow2 without magic, --source-format raw" --source-format raw \
    "$(nfs_url "$plain")" "$TARGET_LUN"
same_as_lun "$SCRATCH/plain.raw" "$TARGET_LUN" "--source-format raw on *.qcow2"

log "every guest header was copied as raw bytes; every misnamed image refused"
