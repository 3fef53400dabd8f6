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
#   fw_begin, fw_poll, fw_detect, matrix
#                         the fault matrix's detection time and its line
#                         (see the end of this file)
#   restart_during CASE PID VERB STOPPED
#                         a server restart (test-servers VERB) under a tool
#                         held in a black hole (see the end of this file)
#   mount_job_case, same_as_nfs
#                         the restart tests' mount job and NFS check
#   proxy_out, proxy_ctl  the proxy's output (listen/ready/ctl lines) and
#                         its control pipe
: "${BUILD_DIR:?set BUILD_DIR to the build directory}"
PROXY=$BUILD_DIR/scripts/delay-proxy
[[ -x $PROXY ]] || fail "$PROXY not built"

server_ports

proxy_out=$SCRATCH/proxy.out
proxy_ctl=$SCRATCH/proxy.ctl
start_delay_proxy "$proxy_out" -c "$proxy_ctl" "0:127.0.0.1:$mnt_port" \
    "0:127.0.0.1:$nfs_port" "0:127.0.0.1:$iscsi_port"
p_mnt=$(proxy_port "$proxy_out" "$mnt_port")
p_nfs=$(proxy_port "$proxy_out" "$nfs_port")
p_iscsi=$(proxy_port "$proxy_out" "$iscsi_port")

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

# ---- the fault matrix ----------------------------------------------------
# Each case ends with one line for scripts/fault-matrix:
#   MATRIX case=C tool=copy|mount src=raw|qcow2 dir=nfs->lun|lun->nfs
#          side=nfs|iscsi outcome=completed|failed-then-resumed
#          detect=S total=S
# detect is how long after the fault the tool showed it noticed: the first
# new NFS or iSCSI connection it had established through the proxy after
# the fault (a reconnect; connections are sampled every 50 ms with ss, so
# this is approximate), or, for a case that fails,
# the failure itself (the copy's exit, the job's failed state) when that
# came first; "<0.1s" when the tool had reconnected and finished before
# the sample after the fault; "-" when it never had to (a stall shorter
# than the request timeout is ridden through on the same connections);
# "?" when the fault fired before any sample saw one of the tool's NFS or
# iSCSI connections (a reconnect could not be told from them).  total is from the
# start of the copy or job to its end (before any resume).
#   fw_begin          before the fault is armed: remember the connections
#   fw_poll           call every 50 ms while the tool runs: notes when the
#                     armed fault fired (fw_tf) and the first new connection
#                     after it (fw_td)
#   fw_end            call once the tool ended: a fault that fired and a
#                     reconnect that happened between the last two samples
#   fw_detect [END]   seconds ("1.2s") from the fault to fw_td, or to END (a failure
#                     timestamp) when that is earlier or there was none; "-"
#   matrix K=V...     print the MATRIX line
# _fw_ports: the local ports of the tool's NFS and iSCSI connections
# through the proxy (not MOUNT's: libnfs opens those now and then).
_fw_ports() {
    ss -Htn state established "( dport = :$p_nfs or dport = :$p_iscsi )" 2>/dev/null |
        awk '{ n = split($3, a, ":"); print a[n] }' | sort -u | tr '\n' ' '
}
fw_begin() { _fw_fired0=$(fired_count); fw_tf="" fw_td="" _fw_late="" _fw_pre=0; _fw_seen=" $(_fw_ports) "; }
fw_poll() {
    local p
    if [[ -z $fw_tf ]]; then
        if (( $(fired_count) > _fw_fired0 )); then
            fw_tf=$(now)
        else
            p=$(_fw_ports)
            _fw_seen+="$p "
            [[ -z ${p// /} ]] || _fw_pre=$((_fw_pre + 1))
            return 0
        fi
    fi
    [[ -z $fw_td ]] || return 0
    for p in $(_fw_ports); do
        [[ $_fw_seen == *" $p "* ]] || { fw_td=$(now); return 0; }
    done
}
fw_end() {
    local p
    [[ -z $fw_tf ]] && (( $(fired_count) > _fw_fired0 )) || return 0
    for p in $(_fw_ports); do
        [[ $_fw_seen == *" $p "* ]] || { _fw_late=1; return 0; }
    done
}
fw_detect() {
    local end=${1:-} t=$fw_td
    [[ -z $_fw_late ]] || { echo "<0.1s"; return; }
    [[ -n $fw_tf ]] || { echo -; return; }
    # The fault fired before a sample saw the tool's first connections:
    # a connection seen after it may be one of those.
    if [[ -z $end ]] && (( _fw_pre == 0 )); then echo "?"; return; fi
    if [[ -n $end ]] && { [[ -z $t ]] || awk -v a="$end" -v b="$t" 'BEGIN { exit !(a < b) }'; }; then
        t=$end
    fi
    if [[ -n $t ]]; then echo "$(secs "$fw_tf" "$t")s"; else echo -; fi
}
matrix() { echo "MATRIX $*" >&2; }

# restart_during CASE PID VERB STOPPED: a server restart under a tool in a
# stall.  With the tool (PID, still running) in a black hole the proxy
# began ("after BYTES blackhole 600", armed by the caller), run
# `test-servers VERB 2` (restart-nfs, restart-iscsi: the server is down
# for 2 s), lift the black hole once its log says STOPPED (the tool's
# reconnects are refused while the server is down), wait for the tool
# and the restart to end.  Sets after_stop (s from the stop to the end)
# and detect (from the stop to the tool's first new connection).
restart_during() {
    local case=$1 pid=$2 verb=$3 stopped=$4 t0 t1 restart_pid
    # This case's stall: the proxy's log keeps earlier cases' lines, so
    # the caller counts them (fired=$(fired_count)) before arming.
    for _ in $(seq 600); do (( $(fired_count) > ${fired:-0} )) && break; sleep 0.05; done
    (( $(fired_count) > ${fired:-0} )) || fail "$case: the stall never began"
    kill -0 "$pid" 2>/dev/null || fail "$case: ended before the restart"
    fw_begin
    t0=$(now)
    fw_tf=$t0 _fw_pre=1      # the tool's connections are there already
    "$TEST_SERVERS" "$verb" 2 2> "$SCRATCH/restart.log" &
    restart_pid=$!
    # (test-servers may first wait for its own lock: an add-lun of a large
    # thick LUN holds it while it writes the backing file)
    for _ in $(seq 2400); do grep -q "$stopped" "$SCRATCH/restart.log" && break; fw_poll; sleep 0.05; done
    grep -q "$stopped" "$SCRATCH/restart.log" || fail "$case: $verb: no '$stopped': $(cat "$SCRATCH/restart.log")"
    ctl pass
    while kill -0 "$pid" 2>/dev/null; do fw_poll; sleep 0.05; done
    wait "$restart_pid" || fail "$case: $verb failed: $(cat "$SCRATCH/restart.log")"
    t1=$(now)
    after_stop=$(secs "$t0" "$t1")
    detect=$(fw_detect)
}

# mount_job_case CASE JOB TEXT: write job JOB (TEXT) into $MNT/control with
# a stall armed at $FAULT_AT bytes, restart the server ("${RESTART[@]}":
# test-servers VERB and the line that says it stopped) under `imgfs
# wait`, which must succeed.  Sets t_start, after_stop, detect.
mount_job_case() {
    local case=$1 job=$2 wait_pid
    fired=$(fired_count)
    ctl "after $FAULT_AT blackhole 600"
    t_start=$(now)
    put_job "$MNT" "$job" "$3" || fail "$case: job refused: $(cat "$SCRATCH/cp.err")"
    "$IMGFS" wait "$MNT/control/$job.job" > /dev/null 2> "$SCRATCH/wait.err" &
    wait_pid=$!
    restart_during "$case" "$wait_pid" "${RESTART[@]}"
    wait "$wait_pid" || fail "$case: the job did not survive the restart: $(job_field "$MNT" "$job" error)"
}

# same_as_nfs FILE NAME FMT DESC: the NFS file NAME (format FMT) holds
# exactly FILE.
same_as_nfs() {
    local out
    out=$(qemu-img compare -f raw -F "$3" "$1" "$(nfs_qemu_url "$2")" 2>&1) ||
        fail "$4: $2 differs from $1: $out"
}

# fault_sources SIZE [nohole]: $SCRATCH/src.raw, SIZE random bytes with a
# zero run at 8-12 MiB (unless nohole), and its qcow2 conversion
# $SCRATCH/src.qcow2, both put on NFS; their names in $src and $src_qcow2.
fault_sources() {
    head -c "$1" /dev/urandom > "$SCRATCH/src.raw"
    [[ ${2:-} == nohole ]] ||
        dd if=/dev/zero of="$SCRATCH/src.raw" bs=1M seek=8 count=4 conv=notrunc status=none
    qemu-img convert -f raw -O qcow2 "$SCRATCH/src.raw" "$SCRATCH/src.qcow2"
    src=$(nfs_name src.raw)
    src_qcow2=$(nfs_name src.qcow2)
    nfs_put "$SCRATCH/src.raw" "$src"
    nfs_put "$SCRATCH/src.qcow2" "$src_qcow2"
}
