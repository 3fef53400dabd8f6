#!/bin/bash
# faults-restart.sh — `imgfs copy` NFS -> LUN rides through a restart of
# the NFS server (scripts/test-servers restart-nfs) in the middle of the
# copy, with reads in flight: the copy goes through scripts/delay-proxy,
# which stalls every connection once a third of the bytes crossed it; the
# server is stopped, the stall lifted (reconnects are refused while the
# server is down), and the server started again on the same export: the
# copy reconnects, re-sends what was lost with the same file handles and
# completes identical (qemu-img compare).  The time from the stop to the
# end of the copy is logged, not asserted.
#
# It restarts the shared nfs-ganesha: run it when no other test uses the
# servers (meson runs integration tests one at a time).
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
[[ -f $IMGFS_TEST_ROOT/run/ganesha.pid ]] ||
    { log "this instance shares another's nfs-ganesha; cannot restart it"; exit 77; }

# Long enough for ganesha to come back (it waits for its grace checks).
export IMGFS_REQUEST_TIMEOUT=10 IMGFS_RECONNECT_TIMEOUT=90

. "$(dirname "$0")/fault-proxy.sh"

SIZE=$((48 * 1048576))
head -c $SIZE /dev/urandom > "$SCRATCH/src.raw"
src=$(nfs_name src.raw)
nfs_put "$SCRATCH/src.raw" "$src"
new_lun 48M 512 thin

ctl "after $((2 * SIZE / 3)) blackhole 600"
err=$SCRATCH/copy.err
"$IMGFS" copy -q "$NFS_URL/$src?nfsport=$p_nfs&mountport=$p_mnt" \
    "iscsi://127.0.0.1:$p_iscsi/${LUN_URL#iscsi://*/}" 2> "$err" &
copy_pid=$!
for _ in $(seq 600); do grep -q '^ctl fired ' "$proxy_out" && break; sleep 0.05; done
grep -q '^ctl fired ' "$proxy_out" || fail "the stall never began: $(cat "$err")"
kill -0 "$copy_pid" 2>/dev/null || fail "the copy ended before the restart: $(cat "$err")"

t0=$(date +%s.%N)
# Stop ganesha, keep it down 2 s (lifting the stall meanwhile: the copy's
# reconnects are refused), start it again.
"$TEST_SERVERS" restart-nfs 2 2> "$SCRATCH/restart.log" &
restart_pid=$!
for _ in $(seq 300); do grep -q 'stopped nfs-ganesha' "$SCRATCH/restart.log" && break; sleep 0.05; done
grep -q 'stopped nfs-ganesha' "$SCRATCH/restart.log" || fail "ganesha did not stop: $(cat "$SCRATCH/restart.log")"
ctl pass
wait "$restart_pid" || fail "restart-nfs failed: $(cat "$SCRATCH/restart.log")"
rc=0
wait "$copy_pid" || rc=$?
t1=$(date +%s.%N)
(( rc == 0 )) || fail "the copy did not survive the restart ($rc): $(cat "$err")"
same_as_lun "$SCRATCH/src.raw" "$LUN_URL" "copy across an NFS server restart"
log "ok: completed identical $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s after the server was stopped"
