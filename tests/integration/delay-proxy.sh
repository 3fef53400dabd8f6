#!/bin/bash
# delay-proxy.sh — the benchmark's plumbing carries data faithfully:
# scripts/delay-proxy (with a delay, in front of rpcbind, mountd, nfsd and
# the iSCSI portal) and the connect-shim that routes qemu-img's nfs:// driver
# through it.  Bytes are checked with cmp / qemu-img compare; imgfs reaches
# the servers only through the proxy's ports, and the shim's debug lines
# show qemu-img's redirections.  No timing is asserted.
. "$(dirname "$0")/lib.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
PROXY=$BUILD_DIR/scripts/delay-proxy
SHIM=$BUILD_DIR/scripts/connect-shim.so
[[ -x $PROXY && -f $SHIM ]] || fail "$PROXY or $SHIM not built"

server_ports

# Bad invocations are refused.
if "$PROXY" 2>/dev/null; then fail "delay-proxy without mappings succeeded"; fi
if "$PROXY" -d x 1:127.0.0.1:2 2>/dev/null; then fail "delay-proxy -d x succeeded"; fi
if "$PROXY" 99999:127.0.0.1:2 2>/dev/null; then fail "delay-proxy with port 99999 succeeded"; fi

out=$SCRATCH/proxy.out
start_delay_proxy "$out" -d 5 -P "$SCRATCH/proxy.pid" 0:127.0.0.1:111 \
    "0:127.0.0.1:$mnt_port" "0:127.0.0.1:$nfs_port" "0:127.0.0.1:$iscsi_port"
proxy_pid=$DELAY_PROXY_PID
[[ $(cat "$SCRATCH/proxy.pid") == "$proxy_pid" ]] || fail "pid file does not hold the proxy's pid"
p_rpc=$(proxy_port "$out" 111) p_mnt=$(proxy_port "$out" "$mnt_port")
p_nfs=$(proxy_port "$out" "$nfs_port") p_iscsi=$(proxy_port "$out" "$iscsi_port")
[[ -n $p_rpc && -n $p_mnt && -n $p_nfs && -n $p_iscsi ]] || fail "proxy ports missing: $(cat "$out")"

head -c $((24 * 1048576 + 4096)) /dev/urandom > "$SCRATCH/src.raw"
dd if=/dev/zero of="$SCRATCH/src.raw" bs=1M seek=3 count=5 conv=notrunc status=none
src=$(nfs_name src.raw)
nfs_put "$SCRATCH/src.raw" "$src"
new_lun 24580K 512 thin
lun_via_proxy="iscsi://127.0.0.1:$p_iscsi/${LUN_URL#iscsi://*/}"

# imgfs through the proxy on both sides: NFS by ?nfsport=&mountport=, iSCSI
# by the portal port.
"$IMGFS" copy -q "$NFS_URL/$src?nfsport=$p_nfs&mountport=$p_mnt" "$lun_via_proxy" ||
    fail "imgfs copy through the proxy failed"
qemu-img compare -q -f raw -F raw "$SCRATCH/src.raw" "$LUN_URL" ||
    fail "LUN written through the proxy differs from the source"
"$IMGFS" copy -q --create "$lun_via_proxy" "$SCRATCH/back.raw" ||
    fail "imgfs copy from the LUN through the proxy failed"
check_cmp "$SCRATCH/src.raw" "$SCRATCH/back.raw"

# qemu-img's nfs:// driver (no port options) through the shim.
err=$SCRATCH/shim.err
IMGFS_CONNECT_DEBUG=1 LD_PRELOAD=$SHIM \
    IMGFS_CONNECT_MAP="111:$p_rpc,$mnt_port:$p_mnt,$nfs_port:$p_nfs" \
    qemu-img convert -f raw -O raw "$(nfs_qemu_url "$src")" "$SCRATCH/qemu.raw" 2> "$err" ||
    fail "qemu-img through the shim failed: $(cat "$err")"
check_cmp "$SCRATCH/src.raw" "$SCRATCH/qemu.raw"
grep -q "^connect-shim: port $nfs_port -> $p_nfs\$" "$err" ||
    fail "qemu-img's NFS connection did not go through the proxy: $(cat "$err")"
grep -q "^connect-shim: port $mnt_port -> $p_mnt\$" "$err" ||
    fail "qemu-img's MOUNT connection did not go through the proxy: $(cat "$err")"

# A bad map is reported and ignored (the connection goes direct).
IMGFS_CONNECT_MAP="nonsense" LD_PRELOAD=$SHIM \
    qemu-img info "$(nfs_qemu_url "$src")" > /dev/null 2> "$err" ||
    fail "qemu-img with a bad map failed: $(cat "$err")"
grep -q "bad IMGFS_CONNECT_MAP" "$err" || fail "bad map not reported: $(cat "$err")"

# Fault commands (-c): a black hole holds a connection open without
# forwarding until `pass`; a bad command is refused; `after` arms.
ctl_pipe=$SCRATCH/ctl
cout=$SCRATCH/ctl.out
"$PROXY" -c "$ctl_pipe" "0:127.0.0.1:$iscsi_port" > "$cout" &
ctl_pid=$!
on_exit kill "$ctl_pid"
for _ in $(seq 100); do grep -qx ready "$cout" && break; sleep 0.05; done
p_ctl=$(awk '$1 == "listen" { print $2; exit }' "$cout")
[[ -n $p_ctl ]] || fail "control proxy not ready: $(cat "$cout")"
acked() { for _ in $(seq 200); do grep -qx "ctl $1" "$cout" && return 0; sleep 0.02; done; return 1; }
echo "blackhole 600" > "$ctl_pipe"
acked "ok blackhole 600" || fail "blackhole not acknowledged: $(cat "$cout")"
qemu-img info "iscsi://127.0.0.1:$p_ctl/${LUN_URL#iscsi://*/}" > "$SCRATCH/info.out" 2>&1 &
info_pid=$!
sleep 1
kill -0 "$info_pid" 2>/dev/null || fail "qemu-img got through a black hole: $(cat "$SCRATCH/info.out")"
echo pass > "$ctl_pipe"
acked "ok pass" || fail "pass not acknowledged"
wait "$info_pid" || fail "qemu-img failed after the black hole: $(cat "$SCRATCH/info.out")"
echo "explode" > "$ctl_pipe"
acked "bad explode" || fail "a bad command was not refused"
echo "after 10 reset" > "$ctl_pipe"
acked "armed after 10 reset" || fail "after not acknowledged"
if qemu-img convert -f raw -O raw "iscsi://127.0.0.1:$p_ctl/${LUN_URL#iscsi://*/}" \
        "$SCRATCH/reset.raw" 2> "$SCRATCH/reset.err"; then
    acked "fired reset" || fail "after 10 reset never fired"
    log "qemu-img rode through the reset itself"
else
    acked "fired reset" || fail "qemu-img failed but the reset never fired: $(cat "$SCRATCH/reset.err")"
fi
log "fault commands: blackhole, pass, after, bad command"

# SIGTERM ends the proxy with status 0.
kill -TERM "$proxy_pid"
rc=0
wait "$proxy_pid" || rc=$?
(( rc == 0 )) || fail "delay-proxy exited with $rc on SIGTERM"
log "proxy and shim carried every byte"
