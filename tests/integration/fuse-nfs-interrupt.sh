#!/bin/bash
# fuse-nfs-interrupt.sh — requests on an NFS directory of `imgfs mount`
# while the server does not answer: a signal ends the waiting process at
# once (the mount answers FUSE_INTERRUPT with EINTR), and without a signal
# the request fails once request + reconnect timeout have passed instead
# of hanging; when the server answers again, so does the directory.
#
# The export is mounted through scripts/delay-proxy (fault-proxy.sh); its
# control pipe makes the proxy a black hole (it forwards nothing) and lets
# it pass again.
#   1. IMGFS_REQUEST_TIMEOUT=20, IMGFS_RECONNECT_TIMEOUT=20: `ls` of a
#      directory (and `stat` of a new name in it) started in the black
#      hole, then SIGINT / SIGTERM: the process must be gone within 10 s
#      (killed by its signal, or failed with EINTR), long before the 40 s
#      the mount would take to give up.  (Without interrupt handling the
#      kernel waits for the mount's answer whatever the signal.)
#   2. IMGFS_REQUEST_TIMEOUT=2, IMGFS_RECONNECT_TIMEOUT=3: `ls` in the
#      black hole fails with EIO (`timeout 60` only guards against a
#      hang); after `pass`, `ls` lists the directory again, and a file
#      written before reads back identical (cmp).
# Times are logged, not asserted (the 10 s above is a hang guard far from
# both outcomes).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
. "$(dirname "$0")/fault-proxy.sh"

DIR=$(nfs_name dir)
head -c 65536 /dev/urandom > "$SCRATCH/f"
proxied="np=$NFS_URL/?nfsport=$p_nfs&mountport=$p_mnt"

# lists_f MNT: the directory lists exactly the file f.
lists_f() { [[ $(ls "$1/np/$DIR" 2>&1) == f ]]; }

# signal_case MNT SIG CMD...: run CMD (its signal dispositions reset to
# the default: a background job of a script ignores SIGINT) in the black
# hole, send SIG once it waits, expect it gone within the guard.
signal_case() {
    local mnt=$1 sig=$2 pid rc=0 t0 t1 i
    shift 2
    env --default-signal "$@" > /dev/null 2> "$SCRATCH/sig.err" &
    pid=$!
    # It must be waiting on the mount, not finished already.
    sleep 1
    kill -0 "$pid" 2>/dev/null ||
        fail "$* ended in a black hole before any signal: $(cat "$SCRATCH/sig.err")"
    t0=$(now)
    kill -s "$sig" "$pid"
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null
        fail "$* still waiting 10 s after SIG$sig (the interrupt was not answered)"
    fi
    wait "$pid" || rc=$?
    t1=$(now)
    (( rc != 0 )) || fail "$* succeeded in a black hole"
    log "ok: $* ended $(secs "$t0" "$t1") s after SIG$sig (status $rc)"
}

# ---- 1. signals, long timeouts -------------------------------------------
export IMGFS_REQUEST_TIMEOUT=20 IMGFS_RECONNECT_TIMEOUT=20
MNT=$SCRATCH/mnt1
fuse_mount_fg "$MNT" "$proxied"
mkdir "$MNT/np/$DIR" || fail "mkdir through the mount failed"
cp "$SCRATCH/f" "$MNT/np/$DIR/f" || fail "cp into the directory failed"
lists_f "$MNT" || fail "ls before the black hole: $(ls "$MNT/np/$DIR" 2>&1)"
ctl "blackhole 600"
signal_case "$MNT" INT ls "$MNT/np/$DIR"
signal_case "$MNT" TERM ls "$MNT/np/$DIR"
signal_case "$MNT" TERM stat "$MNT/np/$DIR/no-such-name"
ctl pass
fuse_umount "$MNT"
(( FUSE_RC == 0 )) || fail "mount 1 exited with $FUSE_RC: $(tail -n 5 "$FUSE_LOG")"
if grep -q "ERROR: AddressSanitizer\|runtime error" "$FUSE_LOG"; then
    fail "mount 1: sanitizer: $(grep -m1 -A5 'ERROR\|runtime error' "$FUSE_LOG")"
fi

# ---- 2. no signal, short timeouts ---------------------------------------
export IMGFS_REQUEST_TIMEOUT=2 IMGFS_RECONNECT_TIMEOUT=3
MNT=$SCRATCH/mnt2
fuse_mount_fg "$MNT" "$proxied"
lists_f "$MNT" || fail "ls of mount 2 before the black hole: $(ls "$MNT/np/$DIR" 2>&1)"
ctl "blackhole 600"
t0=$(now)
lsrc=0
timeout 60 ls "$MNT/np/$DIR" > /dev/null 2> "$SCRATCH/ls.err" || lsrc=$?
t1=$(now)
ctl pass
(( lsrc != 0 )) || fail "ls in a black hole succeeded"
(( lsrc != 124 )) || fail "ls in a black hole hung (killed by timeout 60)"
grep -q "Input/output error" "$SCRATCH/ls.err" ||
    fail "ls in a black hole: expected EIO: $(cat "$SCRATCH/ls.err")"
log "ok: ls in a black hole failed after $(secs "$t0" "$t1") s: $(head -n 1 "$SCRATCH/ls.err")"
lists_f "$MNT" || fail "ls after the black hole: $(ls "$MNT/np/$DIR" 2>&1)"
cmp "$SCRATCH/f" "$MNT/np/$DIR/f" || fail "the file differs after the black hole"
fuse_umount "$MNT"
(( FUSE_RC == 0 )) || fail "mount 2 exited with $FUSE_RC: $(tail -n 5 "$FUSE_LOG")"
if grep -q "ERROR: AddressSanitizer\|runtime error" "$FUSE_LOG"; then
    fail "mount 2: sanitizer: $(grep -m1 -A5 'ERROR\|runtime error' "$FUSE_LOG")"
fi
log "NFS directory requests answer signals at once and fail within request + reconnect timeout"
