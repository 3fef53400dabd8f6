#!/bin/bash
# fuse-memory-cp.sh — `cp A B` inside the mount (copy_file_range through
# the copy engine) takes its buffers from the mount's memory budget
# (-o memory=32M):
#  (a) a rate-limited job holds 24 MiB (job key memory); cp of a 16 MiB NFS
#      file inside the mount uses copy_file_range, and the mount's peak
#      (status line mount-memory) rose above the job's 24 MiB — the copy
#      was counted — but not above 32 MiB; the copy equals its source;
#  (b) a second job takes the last 8 MiB: a cp now finds no room for one
#      request, answers EOPNOTSUPP, and the kernel's own copy (read and
#      write through the mount) still produces an identical file; the peak
#      stays within 32 MiB.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
head -c $((32 * MiB)) /dev/urandom > "$SCRATCH/slow.raw"
head -c $((32 * MiB)) /dev/zero > "$SCRATCH/out1.raw"
head -c $((32 * MiB)) /dev/zero > "$SCRATCH/out2.raw"
head -c $((16 * MiB)) /dev/urandom > "$SCRATCH/a.raw"
A=$(nfs_name a.raw)
nfs_put "$SCRATCH/a.raw" "$A"
B=$(nfs_name b.raw)
C=$(nfs_name c.raw)

MNT=$SCRATCH/mnt
fuse_mount "$MNT" -o memory=32M "slow=$SCRATCH/slow.raw" \
    "out1=$SCRATCH/out1.raw" "out2=$SCRATCH/out2.raw" "d=$(nfs_url "")"

# The mount's peak, in MiB, from a job's status.
peak() {
    sed -n 's/^mount-memory: .*, peak \([0-9.]*\) MiB$/\1/p' "$MNT/control/$1.status"
}
# Whether $1 > $2 (decimal MiB).
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

log "(a) a job holds 24 of 32 MiB; cp inside the mount"
put_job "$MNT" j1 'source = slow
target = out1
memory = 24M
rate = 1M' || fail "job 1 refused: $(cat "$SCRATCH/cp.err")"
[[ $(job_field "$MNT" j1 state) == running ]] || fail "job 1: $(cat "$MNT/control/j1.status")"
p=$(peak j1)
[[ $p == 24.0 ]] || fail "peak before the cp: '$p' ($(grep mount-memory "$MNT/control/j1.status"))"
strace -f -e trace=copy_file_range -o "$SCRATCH/strace.out" cp "$MNT/d/$A" "$MNT/d/$B" ||
    fail "cp inside the mount failed"
grep -Eq 'copy_file_range\(.*\) = [1-9][0-9]*$' "$SCRATCH/strace.out" ||
    fail "cp did not use copy_file_range: $(cat "$SCRATCH/strace.out")"
[[ $(job_field "$MNT" j1 state) == running ]] || fail "job 1 ended before the check: $(job_field "$MNT" j1 state)"
p=$(peak j1)
log "peak after the cp: $p MiB"
above "$p" 24 || fail "the cp's buffers were not taken from the budget (peak $p MiB)"
above "$p" 32 && fail "the budget was passed (peak $p MiB of 32)"
grep -q '^mount-memory: 24.0 of 32.0 MiB in use (jobs 24.0, copy_file_range 0.0' "$MNT/control/j1.status" ||
    fail "the cp did not give its memory back: $(grep mount-memory "$MNT/control/j1.status")"
check_cmp "$SCRATCH/a.raw" "$MNT/d/$B"
check_cmp "$SCRATCH/a.raw" "$(nfs_path "$B")"

log "(b) jobs hold all 32 MiB; cp inside the mount"
put_job "$MNT" j2 'source = slow
target = out2
memory = 8M
rate = 1M' || fail "job 2 refused: $(cat "$SCRATCH/cp.err")"
[[ $(job_field "$MNT" j2 state) == running ]] || fail "job 2: $(cat "$MNT/control/j2.status")"
strace -f -e trace=copy_file_range -o "$SCRATCH/strace.out" cp "$MNT/d/$A" "$MNT/d/$C" ||
    fail "cp inside the mount failed with a full budget"
log "with a full budget: $(grep copy_file_range "$SCRATCH/strace.out" | sed 's/^[0-9]* //' | paste -sd ' ')"
[[ $(job_field "$MNT" j1 state) == running && $(job_field "$MNT" j2 state) == running ]] ||
    fail "a job ended before the check: $(job_field "$MNT" j1 state) $(job_field "$MNT" j2 state)"
p=$(peak j2)
above "$p" 32 && fail "the budget was passed (peak $p MiB of 32)"
check_cmp "$SCRATCH/a.raw" "$MNT/d/$C"
check_cmp "$SCRATCH/a.raw" "$(nfs_path "$C")"
rm "$MNT/control/j1.job" "$MNT/control/j2.job"
fuse_umount "$MNT"
log "ok"
