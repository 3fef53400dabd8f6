#!/bin/bash
# fuse-readahead.sh — the mount's own sequential read-ahead (fs/readahead.h:
# image files are opened with FOPEN_DIRECT_IO and sequential reads are
# answered from chunks read ahead of the reader) on a real FUSE mount of an
# NFS file (size not a multiple of 1 MiB), a file in a mounted NFS
# directory and an iSCSI LUN.  Checked with cmp against local originals:
#   1. sequential readers get the original bytes: dd bs=1M, 4M, 4k, 3000
#      (unaligned), cat, and dd starting at an unaligned offset;
#   2. a write through the mount while a reader holds the file open and
#      has read ahead: the reader then sees the new bytes — written by a
#      new opener (dd of=) and through an fd opened before the reader
#      (pwrite on it: only the write itself can invalidate);
#   3. a job (control/*.job) and copy_file_range (cp inside the mount, and
#      copy_file_range onto an fd that was open before the reader read
#      ahead) writing the image while a reader has read ahead: the reader
#      then sees the job's / copy's bytes;
#   4. close-to-open: another client (imgfs copy straight to the server)
#      changes the image while a warm reader holds it open; a new open
#      sees the new bytes;
#   5. truncate (truncate(1), and truncate(2) by path, which opens
#      nothing) smaller and larger again under a warm reader: the reader
#      sees the kept bytes, then zeroes;
#   6. several readers of one file at once (as many as the read-ahead
#      follows, and more): each part equals the original;
#   7. `-o page_cache` (the kernel caches image files): reads equal the
#      originals, a write reads back through the mount and on the server.
# "Warm" means the reader has read 2-3 MiB sequentially from an open fd, so
# its read-ahead already holds the next 4-8 MiB; every change is 1-6 MiB
# ahead of the reader, so a missing invalidation would serve the old bytes
# (seen: with any one node_cache_drop call of fs/ removed, its case fails).
# Cases 2-4 run on the NFS file and the LUN, case 5 on the NFS directory.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
NFS_SIZE=$((40 * MiB + 12345))

head -c "$NFS_SIZE" /dev/urandom > "$SCRATCH/nfs.raw"
NFSF=$(nfs_name f.raw)
nfs_put "$SCRATCH/nfs.raw" "$NFSF"
head -c $((24 * MiB)) /dev/urandom > "$SCRATCH/trunc.raw"
TRF=$(nfs_name trunc.raw)
nfs_put "$SCRATCH/trunc.raw" "$TRF"
new_lun 64M 512 thin
LUN=$LUN_URL
head -c $((64 * MiB)) /dev/urandom > "$SCRATCH/lun.raw"
fill_lun "$LUN" "$SCRATCH/lun.raw"
# Sources of jobs and copies inside the mount (local images).
head -c $((64 * MiB)) /dev/urandom > "$SCRATCH/srca.raw"
head -c $((64 * MiB)) /dev/urandom > "$SCRATCH/srcb.raw"
head -c "$NFS_SIZE" /dev/urandom > "$SCRATCH/srcf.raw"
cp "$SCRATCH/srca.raw" "$SCRATCH/srca.img"
cp "$SCRATCH/srcb.raw" "$SCRATCH/srcb.img"
cp "$SCRATCH/srcf.raw" "$SCRATCH/srcf.img"

MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" "f=$(nfs_url "$NFSF")" "d=$(nfs_url "")" "lun=$LUN" \
    "srca=$SCRATCH/srca.img" "srcb=$SCRATCH/srcb.img" "srcf=$SCRATCH/srcf.img"
# The open fds of the warm readers must not keep the mount busy at exit;
# if the mount died, its messages (sanitizer reports) are in its log.
close_fds() {
    exec 8<&- 9<&-
    kill -0 "$FUSE_PID" 2>/dev/null || { log "imgfs mount died:"; cat "$FUSE_LOG" >&2; }
}
on_exit close_fds

# The local files that hold what MNT/f and MNT/lun should contain now.
F_WANT=$SCRATCH/f.want
LUN_WANT=$SCRATCH/lun.want
cp "$SCRATCH/nfs.raw" "$F_WANT"
cp "$SCRATCH/lun.raw" "$LUN_WANT"

# read8 OUT N: read N MiB from fd 8 (dd shares its file offset) onto the
# end of OUT.
read8() {
    dd bs=1M count="$2" iflag=fullblock status=none <&8 >> "$1" ||
        fail "reading $2 MiB from fd 8 failed"
}

# expect_bytes GOT WANT OFF LEN DESC: bytes [OFF, OFF+LEN) of GOT equal
# those of WANT.
expect_bytes() {
    local out
    out=$(cmp -n "$4" -i "$3:$3" -- "$1" "$2" 2>&1) ||
        fail "$5: bytes from offset $3 differ (counted from there): $out"
}

# patch FILE PATTERN OFF: put PATTERN's bytes at offset OFF of FILE.
patch() {
    dd if="$2" of="$1" bs=1M seek="$3" oflag=seek_bytes conv=notrunc status=none ||
        fail "dd into $1"
}

# pwrite_fd FD FILE OFF: write FILE's bytes at OFF through the open fd FD
# (no open of its own), then fsync it.
pwrite_fd() {
    python3 - "$@" <<'PY' || fail "pwrite on fd $1 failed"
import os, sys
fd, data, off = int(sys.argv[1]), open(sys.argv[2], "rb").read(), int(sys.argv[3])
done = 0
while done < len(data):
    done += os.pwrite(fd, data[done:], off + done)
os.fsync(fd)
PY
}

# reader_warm PATH OUT [MODE]: open fd 8 on PATH (read-only, or "rw"),
# read 2 MiB into a new OUT; the read-ahead then holds up to 6 MiB.
reader_warm() {
    if [[ ${3:-} == rw ]]; then exec 8<> "$1"; else exec 8< "$1"; fi
    : > "$2"
    read8 "$2" 2
}

pattern() { head -c "$2" /dev/urandom > "$SCRATCH/$1"; }

# ---- 1 --------------------------------------------------------------------
log "1. sequential readers get the original bytes"
for target in f lun; do
    if [[ $target == f ]]; then orig=$SCRATCH/nfs.raw; else orig=$SCRATCH/lun.raw; fi
    for bs in 1M 4M; do
        dd if="$MNT/$target" of="$SCRATCH/got" bs=$bs status=none || fail "dd bs=$bs $target"
        out=$(cmp -- "$orig" "$SCRATCH/got" 2>&1) || fail "dd bs=$bs of $target: $out"
    done
    # Small reads cost a FUSE request each: 16 MiB with bs=4k, the last
    # 12 MiB (up to the end) with bs=3000.
    dd if="$MNT/$target" of="$SCRATCH/got" bs=4k count=4096 status=none || fail "dd bs=4k $target"
    expect_bytes "$SCRATCH/got" "$orig" 0 $((16 * MiB)) "dd bs=4k of $target"
    [[ $(stat -c %s "$SCRATCH/got") == $((16 * MiB)) ]] || fail "dd bs=4k of $target: short"
    skip=$(($(stat -c %s "$orig") - 12 * MiB - 12345))
    dd if="$MNT/$target" of="$SCRATCH/got" bs=3000 skip=$skip iflag=skip_bytes status=none ||
        fail "dd bs=3000 $target"
    tail -c +$((skip + 1)) "$orig" > "$SCRATCH/want"
    out=$(cmp -- "$SCRATCH/want" "$SCRATCH/got" 2>&1) || fail "dd bs=3000 from offset $skip of $target: $out"
    cat "$MNT/$target" > "$SCRATCH/got" || fail "cat $target"
    check_cmp "$orig" "$SCRATCH/got"
    [[ $(sha256sum < "$MNT/$target") == $(sha256sum < "$orig") ]] || fail "sha256 of $target"
    for skip in 1234567 $((3 * MiB + 1)); do
        dd if="$MNT/$target" of="$SCRATCH/got" bs=1M skip=$skip iflag=skip_bytes status=none ||
            fail "dd skip=$skip $target"
        tail -c +$((skip + 1)) "$orig" > "$SCRATCH/want"
        out=$(cmp -- "$SCRATCH/want" "$SCRATCH/got" 2>&1) ||
            fail "dd from offset $skip of $target: $out"
    done
    [[ $(stat -c %s "$MNT/$target") == $(stat -c %s "$orig") ]] || fail "size of $target"
done

# ---- 2 --------------------------------------------------------------------
log "2. writes through the mount while a reader has read ahead"
for target in f lun; do
    if [[ $target == f ]]; then want=$F_WANT; else want=$LUN_WANT; fi
    # A writer that opens the file after the reader read ahead.
    pattern w1 $MiB
    reader_warm "$MNT/$target" "$SCRATCH/got"
    dd if="$SCRATCH/w1" of="$MNT/$target" bs=1M seek=4 count=1 conv=notrunc,fsync status=none ||
        fail "dd into $target"
    patch "$want" "$SCRATCH/w1" $((4 * MiB))
    read8 "$SCRATCH/got" 4
    exec 8<&-
    expect_bytes "$SCRATCH/got" "$want" $((4 * MiB)) $MiB "$target: MiB 4 after dd of= while read ahead"
    expect_bytes "$SCRATCH/got" "$want" 0 $((6 * MiB)) "$target: 6 MiB read around dd of="

    # A writer whose fd was open before the reader read ahead: only the
    # write itself can invalidate; unaligned, 2.5 MiB ahead of the reader.
    pattern w2 $((MiB + 777))
    exec 9<> "$MNT/$target"
    reader_warm "$MNT/$target" "$SCRATCH/got"
    read8 "$SCRATCH/got" 1             # 3 MiB read: window 8 MiB
    pwrite_fd 9 "$SCRATCH/w2" $((5 * MiB + 512 * 1024 + 100))
    patch "$want" "$SCRATCH/w2" $((5 * MiB + 512 * 1024 + 100))
    read8 "$SCRATCH/got" 5
    exec 8<&- 9<&-
    expect_bytes "$SCRATCH/got" "$want" 0 $((8 * MiB)) "$target: 8 MiB read around a pwrite on an older fd"
done
check_cmp "$F_WANT" "$(nfs_path "$NFSF")"
same_as_lun "$LUN_WANT" "$LUN" "lun after the writes"

# ---- 3 --------------------------------------------------------------------
log "3. a job and copy_file_range write the image under a warm reader"
reader_warm "$MNT/lun" "$SCRATCH/got"
put_job "$MNT" fill "source = srca
target = lun" || fail "job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/fill.job" >/dev/null || fail "job failed: $(job_field "$MNT" fill error)"
rm "$MNT/control/fill.job"
cp "$SCRATCH/srca.raw" "$LUN_WANT"
read8 "$SCRATCH/got" 6
exec 8<&-
expect_bytes "$SCRATCH/got" "$LUN_WANT" $((2 * MiB)) $((6 * MiB)) "lun: read on after a job wrote it"

reader_warm "$MNT/f" "$SCRATCH/got"
put_job "$MNT" fillf "source = srcf
target = f
overwrite = yes" || fail "job into f refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/fillf.job" >/dev/null || fail "job into f failed: $(job_field "$MNT" fillf error)"
rm "$MNT/control/fillf.job"
cp "$SCRATCH/srcf.raw" "$F_WANT"
read8 "$SCRATCH/got" 6
exec 8<&-
expect_bytes "$SCRATCH/got" "$F_WANT" $((2 * MiB)) $((6 * MiB)) "f: read on after a job wrote it"
check_cmp "$F_WANT" "$(nfs_path "$NFSF")"

reader_warm "$MNT/lun" "$SCRATCH/got"
cp "$MNT/srcb" "$MNT/lun" || fail "cp srcb lun inside the mount"
cp "$SCRATCH/srcb.raw" "$LUN_WANT"
read8 "$SCRATCH/got" 6
exec 8<&-
expect_bytes "$SCRATCH/got" "$LUN_WANT" $((2 * MiB)) $((6 * MiB)) "lun: read on after cp (copy_file_range)"

# copy_file_range onto the reader's own fd (open for writing before the
# reader read ahead): the copy is the only thing that can invalidate.
reader_warm "$MNT/lun" "$SCRATCH/got" rw
read8 "$SCRATCH/got" 1
python3 - "$MNT/srca" <<'PY' || fail "copy_file_range onto fd 8 failed"
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
M = 1048576
want, done = 4 * M + 4096, 0
while done < want:
    n = os.copy_file_range(src, 8, want - done, 10 * M + done, 4 * M + done)
    if n <= 0:
        sys.exit("copy_file_range returned %d" % n)
    done += n
os.close(src)
PY
dd if="$SCRATCH/srca.raw" of="$SCRATCH/cfr" bs=1M skip=10 count=$((4 * MiB + 4096)) \
    iflag=count_bytes status=none
patch "$LUN_WANT" "$SCRATCH/cfr" $((4 * MiB))
read8 "$SCRATCH/got" 6
exec 8<&-
expect_bytes "$SCRATCH/got" "$LUN_WANT" 0 $((9 * MiB)) "lun: read on after copy_file_range onto the reader's fd"
same_as_lun "$LUN_WANT" "$LUN" "lun after the job and the copies"

# ---- 4 --------------------------------------------------------------------
log "4. close-to-open: another client changes the image under a warm reader"
for target in f lun; do
    if [[ $target == f ]]; then
        want=$F_WANT url=$(nfs_url "$NFSF") over=--overwrite
    else
        want=$LUN_WANT url=$LUN over=
    fi
    pattern c2o $((2 * MiB))
    reader_warm "$MNT/$target" "$SCRATCH/got"
    read8 "$SCRATCH/got" 1             # at 3 MiB: read-ahead up to 11 MiB
    patch "$want" "$SCRATCH/c2o" $((5 * MiB))
    copy_ok "another client rewrites $target" $over "$want" "$url"
    # A new open: the whole file in 1 MiB reads.
    dd if="$MNT/$target" of="$SCRATCH/new" bs=1M status=none || fail "dd of $target"
    cmp -- "$want" "$SCRATCH/new" > "$SCRATCH/cmp.out" 2>&1 ||
        fail "$target: a new open does not see the other client's change: $(cat "$SCRATCH/cmp.out")"
    exec 8<&-
done
check_cmp "$F_WANT" "$(nfs_path "$NFSF")"

# ---- 5 --------------------------------------------------------------------
log "5. truncate smaller, then larger, under a warm reader"
TR=$MNT/d/$TRF
for how in truncate-1 truncate-2; do
    cut=$((6 * MiB + 1000))
    [[ $how == truncate-2 ]] && cut=$((5 * MiB + 4095))
    reader_warm "$TR" "$SCRATCH/got"
    read8 "$SCRATCH/got" 1             # at 3 MiB: read-ahead up to 11 MiB
    if [[ $how == truncate-1 ]]; then
        truncate -s $cut "$TR" || fail "truncate -s $cut"
        truncate -s $((24 * MiB)) "$TR" || fail "truncate -s 24M"
    else
        # truncate(2) by path: a setattr with no open file.
        python3 -c 'import os, sys
os.truncate(sys.argv[1], int(sys.argv[2]))
os.truncate(sys.argv[1], int(sys.argv[3]))' "$TR" $cut $((24 * MiB)) ||
            fail "truncate(2) of $TR"
    fi
    read8 "$SCRATCH/got" 7
    exec 8<&-
    { head -c $cut "$SCRATCH/trunc.raw"; head -c $((24 * MiB - cut)) /dev/zero; } > "$SCRATCH/trunc.want"
    cp "$SCRATCH/trunc.want" "$SCRATCH/trunc.raw"
    expect_bytes "$SCRATCH/got" "$SCRATCH/trunc.want" 0 $((10 * MiB)) "$how: read on after truncate to $cut and back"
    [[ $(stat -c %s "$(nfs_path "$TRF")") == $((24 * MiB)) ]] || fail "$how: size on the server"
    check_cmp "$SCRATCH/trunc.want" "$(nfs_path "$TRF")"
    dd if="$TR" of="$SCRATCH/new" bs=1M status=none || fail "dd of $TR"
    check_cmp "$SCRATCH/trunc.want" "$SCRATCH/new"
done

# ---- 6 --------------------------------------------------------------------
log "6. several readers of one file at once"
for readers in 4 6; do
    part=$((NFS_SIZE / readers / MiB + 1))     # MiB per reader
    pids=()
    for ((i = 0; i < readers; i++)); do
        bs=1M
        ((i % 3 == 1)) && bs=64k
        ((i % 3 == 2)) && bs=4k
        dd if="$MNT/f" of="$SCRATCH/part$i" bs=$bs skip=$((i * part * MiB)) \
            count=$((part * MiB)) iflag=skip_bytes,count_bytes status=none &
        pids+=($!)
    done
    for ((i = 0; i < readers; i++)); do
        wait "${pids[i]}" || fail "reader $i of $readers failed"
    done
    for ((i = 0; i < readers; i++)); do
        off=$((i * part * MiB))
        len=$(stat -c %s "$SCRATCH/part$i")
        want_len=$((NFS_SIZE - off < part * MiB ? NFS_SIZE - off : part * MiB))
        ((len == want_len)) || fail "reader $i of $readers read $len bytes, not $want_len"
        out=$(cmp -n "$len" -i "$off:0" -- "$F_WANT" "$SCRATCH/part$i" 2>&1) ||
            fail "reader $i of $readers (from offset $off): $out"
    done
    rm -f "$SCRATCH"/part*
done

# ---- 7 --------------------------------------------------------------------
log "7. -o page_cache: the kernel caches image files (and reads ahead)"
PC=$SCRATCH/pc
mkdir -p "$PC"
"$IMGFS" mount -o page_cache "$PC" "f=$(nfs_url "$NFSF")" "lun=$LUN" ||
    fail "imgfs mount -o page_cache failed"
on_exit _fuse_cleanup "$PC" ""
mount | grep -F " $PC " | grep -q page_cache &&
    fail "page_cache was passed on to the kernel as a mount option"
check_cmp "$F_WANT" "$PC/f"
[[ $(sha256sum < "$PC/lun") == $(sha256sum < "$LUN_WANT") ]] || fail "sha256 of lun (page_cache)"
# A write through the cached mount, read back through it and on the server.
head -c $((3 * MiB)) /dev/urandom > "$SCRATCH/pc.new"
dd if="$SCRATCH/pc.new" of="$PC/lun" bs=1M seek=7 conv=notrunc,fsync status=none ||
    fail "dd onto lun (page_cache)"
dd if="$SCRATCH/pc.new" of="$LUN_WANT" bs=1M seek=7 conv=notrunc status=none
check_cmp "$LUN_WANT" "$PC/lun"
same_as_lun "$LUN_WANT" "$LUN" "LUN after a write through -o page_cache"
fusermount3 -u "$PC" || fail "fusermount3 -u $PC"
log "ok"
