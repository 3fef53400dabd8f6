#!/bin/bash
# verify-sparse.sh — `imgfs copy --verify` of a sparse image onto thin LUNs.
#
# The verify pass skips ranges that both images report as reading as zeroes
# (the source file's holes via SEEK_HOLE, the LUN's unmapped blocks via GET
# LBA STATUS with LBPRZ) and reads and compares everything else.  Checked:
#   - onto a thin LUN full of 0xff: the copy unmaps the holes, verify passes,
#     and `qemu-img compare` agrees;
#   - the same LUN refilled with 0xff and a copy told --target-is-zero (a
#     lie: the holes keep their 0xff, and the LUN reports them mapped):
#     verify reads them and names the first one;
#   - onto a fresh thin LUN with 4096-byte blocks (all unmapped, so
#     --target-is-zero is true): verify passes, images identical;
#   - onto a thick LUN (no block status: everything is read): passes.
# The times of the thin and thick runs are logged for information only.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
SIZE_MIB=256
SIZE=$((SIZE_MIB * MiB))

# Source (MiB): 8 data runs of 1 MiB at 0, 33, 66, ... 231; written zeroes
# at [100,104); holes elsewhere.  The first hole byte is at 1 MiB.
SRC=$SCRATCH/sparse.raw
truncate -s "$SIZE" "$SRC"
for i in 0 1 2 3 4 5 6 7; do
    dd if=/dev/urandom of="$SRC" bs=1M seek=$((i * 33)) count=1 conv=notrunc status=none
done
dd if=/dev/zero of="$SRC" bs=1M seek=100 count=4 conv=notrunc status=none
head -c "$SIZE" /dev/zero | tr '\0' '\377' > "$SCRATCH/ff.raw"

# Bytes tgtd has read so far (its backing-file reads; /proc io rchar), or
# nothing if unknown.  For the log only: other clients of the shared tgtd
# add to it, and tgtd also reads while it writes.
tgtd_read() {
    local pid
    pid=$(cat "$IMGFS_TEST_ROOT/run/tgtd.pid" 2>/dev/null | head -n 1) || return 0
    awk '/^rchar:/ { print $2 }' "/proc/${pid%% *}/io" 2>/dev/null || true
}

# copy_verify DESC ARGS...: `imgfs copy --verify ARGS` succeeds and says
# it verified; logs the wall time (and what tgtd read, for information).
copy_verify() {
    local desc=$1 out t0 t1 r0 r1 read=""
    shift
    r0=$(tgtd_read)
    t0=$(date +%s%N)
    out=$("$IMGFS" copy --verify "$@" 2>&1) || fail "$desc: imgfs copy --verify $* failed: $out"
    t1=$(date +%s%N)
    r1=$(tgtd_read)
    [[ $out == *", verified" ]] || fail "$desc: no ', verified' in the summary: $out"
    [[ -n $r0 && -n $r1 ]] && read=", tgtd read $(( (r1 - r0) / MiB )) MiB"
    log "ok: $desc ($(( (t1 - t0) / 1000000 )) ms wall$read): $out"
}

# ---- thin LUN (512) full of 0xff ------------------------------------------
new_lun "${SIZE_MIB}M" 512 thin
thin=$LUN_URL
fill_lun "$thin" "$SCRATCH/ff.raw"
copy_verify "sparse file → thin LUN that held 0xff" "$SRC" "$thin"
same_as_lun "$SRC" "$thin" "sparse file → thin LUN"

# ---- the same LUN refilled, copy told the target reads as zeroes ---------
fill_lun "$thin" "$SCRATCH/ff.raw"
err=$SCRATCH/lie.err
rc=0
"$IMGFS" copy -q --verify --target-is-zero "$SRC" "$thin" 2>"$err" || rc=$?
(( rc == 1 )) || fail "--target-is-zero over 0xff: expected status 1, got $rc: $(cat "$err")"
grep -q "verify: images differ at byte offset $MiB\$" "$err" ||
    fail "--target-is-zero over 0xff: expected a difference at $MiB: $(cat "$err")"
log "ok, verify caught the unwritten holes: $(cat "$err")"
# The LUN really does differ there (checked with a tool we did not write).
if qemu-img compare -f raw -F raw "$SRC" "$thin" >/dev/null 2>&1; then
    fail "qemu-img compare finds no difference after the lying copy"
fi

# ---- fresh thin LUN (4096), all unmapped: --target-is-zero is true -------
new_lun "${SIZE_MIB}M" 4096 thin
copy_verify "sparse file → fresh thin 4k LUN, --target-is-zero" \
    --target-is-zero "$SRC" "$LUN_URL"
same_as_lun "$SRC" "$LUN_URL" "sparse file → fresh thin 4k LUN"

# ---- thick LUN: everything is read ---------------------------------------
new_lun "${SIZE_MIB}M" 512 thick
fill_lun "$LUN_URL" "$SCRATCH/ff.raw"
copy_verify "sparse file → thick LUN that held 0xff" "$SRC" "$LUN_URL"
same_as_lun "$SRC" "$LUN_URL" "sparse file → thick LUN"

log "verify passed on thin and thick LUNs and caught unwritten holes"
