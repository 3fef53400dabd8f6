# fault-proxy.sh — scripts/delay-proxy in front of the test servers, with
# its control pipe, for the faults-*.sh tests.  Source it after lib.sh
# (and need_servers); BUILD_DIR names the build directory.  It starts the
# proxy mapping MOUNT, NFS and the iSCSI portal (stopped at exit) and
# defines:
#   p_mnt p_nfs p_iscsi   the proxy's ports for them
#   ctl CMD               send a fault command ("reset", "blackhole S",
#                         "pass", "after BYTES CMD"), wait for the proxy to
#                         acknowledge it; fail if it refuses
#   fired_count           how many armed ("after") faults have fired so far
#   nfs_via_proxy NAME    nfs:// URL of NAME in the export, through the proxy
#   lun_via_proxy URL     the LUN of iscsi:// URL, through the proxy
#   now                   a timestamp; secs T0 T1: seconds between two
#   proxy_out, proxy_ctl  the proxy's output (listen/ready/ctl lines) and
#                         its control pipe
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
PROXY=$BUILD_DIR/scripts/delay-proxy
[[ -x $PROXY ]] || fail "$PROXY not built"

rpc_port() {
    rpcinfo -p 127.0.0.1 | awk -v p="$1" '$1 == p && $2 == 3 && $3 == "tcp" { print $4; exit }'
}
nfs_port=$(rpc_port 100003)
mnt_port=$(rpc_port 100005)
iscsi_port=${ISCSI_PORTAL##*:}
[[ -n $nfs_port && -n $mnt_port ]] || fail "rpcbind does not know nfsd/mountd"

proxy_out=$SCRATCH/proxy.out
proxy_ctl=$SCRATCH/proxy.ctl
"$PROXY" -c "$proxy_ctl" "0:127.0.0.1:$mnt_port" "0:127.0.0.1:$nfs_port" \
    "0:127.0.0.1:$iscsi_port" > "$proxy_out" &
_fp_pid=$!
_fp_stop() { kill "$_fp_pid" 2>/dev/null || true; }
on_exit _fp_stop
for _ in $(seq 100); do
    grep -qx ready "$proxy_out" && break
    kill -0 "$_fp_pid" 2>/dev/null || fail "delay-proxy exited: $(cat "$proxy_out")"
    sleep 0.05
done
grep -qx ready "$proxy_out" || fail "delay-proxy not ready"
_fp_port_for() { awk -v t="127.0.0.1:$1" '$1 == "listen" && $3 == t { print $2; exit }' "$proxy_out"; }
p_mnt=$(_fp_port_for "$mnt_port") p_nfs=$(_fp_port_for "$nfs_port")
p_iscsi=$(_fp_port_for "$iscsi_port")

ctl() {
    local n
    n=$(grep -c '^ctl ' "$proxy_out" || true)
    echo "$1" > "$proxy_ctl"
    for _ in $(seq 200); do
        (( $(grep -c '^ctl ' "$proxy_out" || true) > n )) && break
        sleep 0.02
    done
    grep -q "^ctl \(ok\|armed\) $1\$" "$proxy_out" ||
        fail "proxy did not take '$1': $(grep '^ctl ' "$proxy_out" | tail -n 3)"
}
fired_count() { grep -c '^ctl fired ' "$proxy_out" || true; }
nfs_via_proxy() { echo "$NFS_URL/$1?nfsport=$p_nfs&mountport=$p_mnt"; }
lun_via_proxy() { echo "iscsi://127.0.0.1:$p_iscsi/${1#iscsi://*/}"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
