#!/bin/bash
# fuse-forget.sh — the mount frees the nodes of NFS entries the kernel has
# forgotten.  Rounds of create/stat/rm of many files in an NFS directory
# of the mount, and stats of files that stay, then drop_caches (the kernel
# evicts its inodes and sends FORGET): the mount's node count (the
# read-only extended attribute user.imgfs.nodes of the mount root) must
# come back to what it was before the round, and the mount's RSS must not
# grow with the rounds (checked when imgfs is built without ASan).
# Entries that stay are still right after their nodes were freed and made
# anew (content checked with cmp, size and st_ino against the server's).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
[[ -w /proc/sys/vm/drop_caches ]] || fail "needs root (drop_caches)"

FILES=400
ROUNDS=5

DIR=$(nfs_name dir)
MNT=$SCRATCH/mnt
fuse_mount_fg "$MNT" "d=$(nfs_url "")"

nodes() {
    python3 -c 'import os, sys
print(os.getxattr(sys.argv[1], "user.imgfs.nodes").decode())' "$MNT"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$FUSE_PID/status"
}

# Evict what the kernel caches of the mount, then wait for the FORGETs to
# be handled: the count is polled until it reaches `want` (the bound is
# only how long to keep trying, not an assertion on time).
forget_all() {
    local want=$1 i n
    for ((i = 0; i < 100; i++)); do
        sync
        echo 2 > /proc/sys/vm/drop_caches
        n=$(nodes)
        ((n <= want)) && { echo "$n"; return 0; }
        sleep 0.2
    done
    echo "$n"
}

# The count once drop_caches changes it no more.
settle() {
    local prev=-1 n i
    for ((i = 0; i < 50; i++)); do
        sync
        echo 2 > /proc/sys/vm/drop_caches
        sleep 0.2
        n=$(nodes)
        ((n == prev)) && break
        prev=$n
    done
    echo "$n"
}

mkdir "$MNT/d/$DIR" || fail "mkdir through the mount"
head -c 300000 /dev/urandom > "$SCRATCH/keep.raw"
cp "$SCRATCH/keep.raw" "$MNT/d/$DIR/keep" || fail "cp into the mount"
KEEP_INO=$(stat -c %i "$MNT/d/$DIR/keep")
BASE=$(settle)
log "nodes at rest: $BASE"

# One process does the rounds' file operations (a shell would spend the
# time forking).
churn() {
    python3 - "$MNT/d/$DIR" "$FILES" <<'PY' || fail "create/stat/rm through the mount"
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    p = os.path.join(d, "f%d" % i)
    with open(p, "wb") as f:
        f.write(b"%d\n" % i)
    if os.stat(p).st_size != len(b"%d\n" % i):
        sys.exit("wrong size of " + p)
    os.unlink(p)
PY
}

RSS=()
for ((r = 1; r <= ROUNDS; r++)); do
    churn
    during=$(nodes)
    after=$(forget_all "$BASE")
    RSS+=("$(rss_kib)")
    log "round $r: $during nodes after the round, $after after drop_caches, RSS ${RSS[-1]} KiB"
    ((after <= BASE)) || fail "round $r: $after nodes after drop_caches, $BASE before the round"
done

# Files that stay: looked up once, forgotten, looked up again (new nodes,
# maybe reused inode numbers) — what the mount shows is still theirs.
python3 - "$MNT/d/$DIR" <<'PY' || fail "creating files that stay"
import os, sys
for i in range(300):
    with open(os.path.join(sys.argv[1], "s%d" % i), "wb") as f:
        f.write(b"stay %d\n" % i)
PY
for ((i = 0; i < 300; i += 37)); do
    stat -c %s "$MNT/d/$DIR/s$i" > /dev/null || fail "stat s$i"
done
after=$(forget_all "$BASE")
((after <= BASE)) || fail "$after nodes after drop_caches with 300 files that stay, $BASE before"
for ((i = 0; i < 300; i += 37)); do
    [[ $(cat "$MNT/d/$DIR/s$i") == "stay $i" ]] || fail "content of s$i after its node was freed"
    [[ $(stat -c %s "$MNT/d/$DIR/s$i") == $(stat -c %s "$(nfs_path "$DIR/s$i")") ]] ||
        fail "size of s$i differs from the server's"
done
check_cmp "$SCRATCH/keep.raw" "$MNT/d/$DIR/keep"
# st_ino comes from the server's file, not from node numbers (reused):
# the same before and after its node was freed and made anew.
[[ $(stat -c %i "$MNT/d/$DIR/keep") == "$KEEP_INO" ]] || fail "st_ino of keep changed"

# RSS: the rounds after the second must not each add what the nodes of a
# round took without freeing (FILES nodes of about 350 bytes each in a
# release build): the bound is 100 bytes per file of those rounds.  The
# first rounds grow the allocator's pools; later ones reuse them.
# Not under ASan, whose allocator makes RSS grow by about 1.6 KiB per
# file created and removed whether nodes are freed or not (the node
# count above is the check there).
growth=$((RSS[ROUNDS - 1] - RSS[1]))     # round 2 to the last
if [[ $(ldd "$IMGFS") == *libasan* ]]; then
    log "RSS growth from round 2 to round $ROUNDS: $growth KiB (ASan build: not checked)"
else
    log "RSS growth from round 2 to round $ROUNDS: $growth KiB"
    bound=$(((ROUNDS - 2) * FILES * 100 / 1024))
    ((growth < bound)) || fail "RSS grew by $growth KiB from round 2 to round $ROUNDS (${RSS[*]} KiB)"
fi

fuse_umount "$MNT"
[[ $FUSE_RC == 0 ]] || { cat "$FUSE_LOG" >&2; fail "imgfs mount exited with $FUSE_RC"; }
if grep -q "ERROR: \|runtime error" "$FUSE_LOG"; then
    cat "$FUSE_LOG" >&2
    fail "sanitizer report in the mount's stderr"
fi
log "ok"
