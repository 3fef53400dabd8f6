#!/bin/bash
# fuse-rw-coherence.sh — read-your-writes through the mount: once write(2)
# or ftruncate(2) returned, every read from any descriptor sees it, holes
# read as zeroes, whatever is still in write-behind or read-ahead.
#   1. the extending-write case: ftruncate(0), pwrite 1 MiB at 4 MiB, then
#      pread 100000 bytes at 2 MiB must give 100000 zero bytes (20 times;
#      the write is still in write-behind when the read comes);
#   2. rw-exerciser (random unaligned writes and reads, extending writes,
#      truncates, fsync, close/reopen with and without O_TRUNC, a second
#      descriptor, sequential readers and whole-file re-reads, each read
#      checked against its in-memory model) on an NFS file and on LUNs
#      (512 and 4096-byte blocks: fixed size, truncate zeroes the tail,
#      O_TRUNC zeroes everything), 20,000 operations per file (a random
#      seed, printed; RW_OPS overrides the count);
#   3. the end state of each file equals, on the server (nfs-cat /
#      qemu-img, not through the mount), the last whole-file read through
#      the mount.
# All of it in both mount modes: default (direct I/O, the mount's own
# read-ahead) and -o page_cache (the 4096-byte LUN in the default only).
# Seen failing before the fix: case 1 read EOF in 10 of 20 tries, and
# the exerciser's first seed failed at its 35th operation (an O_TRUNC
# reopen ignored while the other descriptor was open for writing).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
EXERCISER=$BUILD_DIR/tests/integration/rw-exerciser
[[ -x $EXERCISER ]] || fail "$EXERCISER not built"

MiB=1048576
OPS=${RW_OPS:-20000}

NFSF=$(nfs_name f.raw)
: > "$SCRATCH/empty"
nfs_put "$SCRATCH/empty" "$NFSF"
new_lun 8M 512 thin
LUN512=$LUN_URL
new_lun 8M 4096 thick
LUN4K=$LUN_URL

# extending_write_reads_zeroes FILE: case 1.
extending_write_reads_zeroes() {
    python3 - "$1" <<'PY' || fail "$1: a read missed an extending write"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
data = os.urandom(1 << 20)
for i in range(20):
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 4 << 20)
    got = os.pread(fd, 100000, 2 << 20)
    if got != bytes(100000):
        sys.exit("try %d: pread 100000 at 2 MiB after a write at 4 MiB: "
                 "%d bytes, %d of them non-zero"
                 % (i, len(got), sum(1 for b in got if b)))
    if os.pread(fd, 1 << 20, 4 << 20) != data:
        sys.exit("try %d: the written MiB reads back different" % i)
    if os.fstat(fd).st_size != 5 << 20:
        sys.exit("try %d: size %d" % (i, os.fstat(fd).st_size))
os.close(fd)
PY
}

# exercise MODE FILE [--lun]: case 2 with seeds from the mode, then case 3
# against the server URL.
exercise() {
    local mode=$1 file=$2 url=$3
    shift 3
    local seed=$((RANDOM * 32768 + RANDOM))
    log "$mode: rw-exerciser $* --ops $OPS $(basename "$file") $seed"
    "$EXERCISER" "$@" --ops "$OPS" "$file" "$seed" >&2 ||
        fail "$mode: $(basename "$file"): mismatch (seed $seed)"
    cat "$file" > "$SCRATCH/through-mount"
    case $url in
        nfs://*) nfs-cat "$url" > "$SCRATCH/on-server" ;;
        *) LIBISCSI_CHAP_PASSWORD=${LIBISCSI_CHAP_PASSWORD:-} \
               qemu-img convert -f raw -O raw "$url" "$SCRATCH/on-server" ||
               fail "qemu-img convert $url failed" ;;
    esac
    check_cmp "$SCRATCH/through-mount" "$SCRATCH/on-server"
    log "ok: $mode: $(basename "$file"): $OPS operations, server agrees"
}

# fuse_mount_fg runs "$IMGFS" mount -f MNT SPEC...; options go before MNT.
IMGFS_BIN=$IMGFS
imgfs_page_cache() { "$IMGFS_BIN" "$1" -o page_cache "${@:2}"; }

for mode in default page_cache; do
    MNT=$SCRATCH/mnt-$mode
    IMGFS=$IMGFS_BIN
    [[ $mode == page_cache ]] && IMGFS=imgfs_page_cache
    fuse_mount_fg "$MNT" "f=$(nfs_url "$NFSF")" "lun512=$LUN512" \
        "lun4k=$LUN4K"
    IMGFS=$IMGFS_BIN
    # Which mode the files are in: only page-cache files can be mapped
    # shared (direct I/O files refuse with ENODEV).
    shared=$(python3 -c 'import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ).close()
    print("page_cache")
except OSError:
    print("default")' "$MNT/lun512")
    [[ $shared == "$mode" ]] || fail "$mode mount: files behave as in $shared mode"
    extending_write_reads_zeroes "$MNT/f"
    log "ok: $mode: reads see an extending write still in write-behind"
    exercise "$mode" "$MNT/f" "$(nfs_url "$NFSF")"
    exercise "$mode" "$MNT/lun512" "$LUN512" --lun
    # 4096-byte blocks: more read-modify-write, the same in both modes.
    [[ $mode == default ]] && exercise "$mode" "$MNT/lun4k" "$LUN4K" --lun
    fuse_umount "$MNT"
    (( FUSE_RC == 0 )) || { cat "$FUSE_LOG" >&2; fail "$mode: mount exited with $FUSE_RC"; }
done
log "all ok"
