# tests/integration/lib.sh — helpers for integration test scripts.
#
# Source it first thing:   . "$(dirname "$0")/lib.sh"
# It turns on `set -eu -o pipefail` and installs an EXIT trap (use on_exit to
# add your own cleanup, never `trap ... EXIT`).  Meson runs the scripts with
# IMGFS (the imgfs binary), SOURCE_DIR, BUILD_DIR; IMGFS_TEST_ROOT selects the
# test-server instance (default /tmp/imgfs-test).
#
#   need_servers            load $IMGFS_TEST_ROOT/servers.env into exported
#                           variables (NFS_URL, ISCSI_THIN512, ... — see
#                           scripts/test-servers); exit 77 (skip) if absent.
#   SCRATCH                 per-test scratch dir under $IMGFS_TEST_ROOT/scratch,
#                           removed on exit.
#   on_exit CMD...          run CMD at exit (last registered runs first).
#   nfs_url NAME            nfs:// URL of NAME in the export ("$NFS_URL/NAME$NFS_QUERY").
#   nfs_qemu_url NAME       the same URL for qemu-img/qemu-io: QEMU's nfs driver
#                           has no port options, so no query (rpcbind knows
#                           the ports of the one ganesha that runs).
#   nfs_path NAME           local path of NAME in the export dir: for READING and
#                           checking only; create/change files through NFS.
#   nfs_name NAME           a unique export-relative name for this test
#                           (<test>-<pid>-NAME); all such names are removed
#                           at exit.
#   nfs_put LOCAL NAME      copy a local file into the export via NFS (nfs-cp),
#                           replacing NAME if it exists.
#   nfs_get NAME LOCAL      copy NAME from the export via NFS (nfs-cp).
#   nfs_rm NAME             remove NAME from the export (NFSv3 has no command
#                           line tool for REMOVE; done in the export dir, which
#                           ganesha does not cache: see scripts/test-servers).
#   new_lun SIZE BS thin|thick
#                           new iSCSI target with one LUN (SIZE like 64M, 2G;
#                           BS 512|4096); sets LUN_URL and LUN_FILE (backing
#                           file, read-only use); deleted at exit.
#   lun_hash URL|FILE       sha256 of the whole content of an iscsi:// or
#                           nfs:// URL (read through the network with
#                           qemu-img / nfs-cat) or a local file.
#   fail MSG                print "FAIL: MSG" to stderr and exit 1.
#   check_cmp A B           cmp two local files; fail naming the first difference.
#   expect_fail DESC CMD... run CMD; require non-zero status and exactly one
#                           non-empty line on stderr (shown).
#   log MSG                 print MSG (to stderr, shown in meson's log).
#   copy_ok DESC ARGS...    run `$IMGFS copy -q ARGS...`; fail with its output.
#   fill_lun URL FILE       overwrite the LUN with FILE (qemu-img, not imgfs).
#   same_as_lun FILE URL DESC
#                           the LUN holds exactly FILE (qemu-img compare).

set -eu -o pipefail

IMGFS_TEST_ROOT=${IMGFS_TEST_ROOT:-/tmp/imgfs-test}
export IMGFS_TEST_ROOT
TEST_NAME=$(basename "$0" .sh)
# servers.env names the script that started the servers; without it, ours.
TEST_SERVERS=${TEST_SERVERS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts" && pwd)/test-servers}

# Sanitizer builds: LeakSanitizer leaves out only the leaks inside
# libiscsi that tests/lsan-libiscsi.supp names (and says why they are
# libiscsi's).  Its frames are seen only by the slow unwinder, which a
# test that provokes those leaks turns on (lsan_slow_unwind); the others
# keep fast mallocs, and a libiscsi leak there still fails them.
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lsan-libiscsi.supp
export LSAN_OPTIONS
lsan_slow_unwind() { export LSAN_OPTIONS=$LSAN_OPTIONS:fast_unwind_on_malloc=0; }

log() { echo "$TEST_NAME: $*" >&2; }
fail() { echo "FAIL: $TEST_NAME: $*" >&2; exit 1; }

_lib_exit_cmds=()
on_exit() { _lib_exit_cmds+=("$(printf '%q ' "$@")"); }
_lib_cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#_lib_exit_cmds[@]} - 1; i >= 0; i--)); do
        eval "${_lib_exit_cmds[i]}"
    done
    exit $rc
}
trap _lib_cleanup EXIT
# meson's timeout sends SIGTERM to the test's process group (SIGKILL 0.5 s
# later): exit through the EXIT trap so the cleanup still gets its chance.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

mkdir -p "$IMGFS_TEST_ROOT/scratch"
SCRATCH=$(mktemp -d "$IMGFS_TEST_ROOT/scratch/$TEST_NAME.XXXXXX")
on_exit rm -rf "$SCRATCH"

# servers.env is KEY=VALUE without quoting: read it, never `source` it.
need_servers() {
    local env=$IMGFS_TEST_ROOT/servers.env key value
    if [[ ! -f $env ]]; then
        log "test servers not running ($env missing; scripts/test-servers start); skipping"
        exit 77
    fi
    while IFS='=' read -r key value; do
        [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
        export "$key=$value"
    done < "$env"
    [[ -n ${NFS_URL:-} && -n ${ISCSI_PORTAL:-} ]] || fail "incomplete $env"
    on_exit _lib_rm_nfs_names
}

nfs_url() { echo "$NFS_URL/$1${NFS_QUERY:-}"; }
nfs_qemu_url() { echo "$NFS_URL/$1"; }
nfs_path() { echo "$NFS_EXPORT_DIR/$1"; }

nfs_name() { echo "$TEST_NAME-$$-$1"; }
_lib_rm_nfs_names() { rm -rf -- "${NFS_EXPORT_DIR:?}/$TEST_NAME-$$-"*; }

nfs_rm() { rm -rf -- "${NFS_EXPORT_DIR:?}/$1"; }

nfs_put() {
    [[ -e $NFS_EXPORT_DIR/$2 ]] && nfs_rm "$2"
    nfs-cp "$1" "$(nfs_url "$2")" >/dev/null || fail "nfs-cp $1 -> $(nfs_url "$2") failed"
}

nfs_get() {
    rm -f "$2"
    nfs-cp "$(nfs_url "$1")" "$2" >/dev/null || fail "nfs-cp $(nfs_url "$1") -> $2 failed"
}

new_lun() {
    (( $# == 3 )) || fail "usage: new_lun SIZE BS thin|thick"
    local name out
    name=$(echo "t-$TEST_NAME-$$-$RANDOM" | tr 'A-Z_' 'a-z-' | tr -cd 'a-z0-9.-' | cut -c1-60)
    out=$("$TEST_SERVERS" add-lun "$name" "$1" "$2" "$3") || fail "add-lun $name $* failed"
    on_exit "$TEST_SERVERS" del-lun "$name"
    LUN_URL=${out% *}
    LUN_FILE=${out#* }
}

lun_hash() {
    local src=$1 tmp
    case $src in
        iscsi://*)
            tmp=$(mktemp "$SCRATCH/hash.XXXXXX")
            LIBISCSI_CHAP_PASSWORD=${LIBISCSI_CHAP_PASSWORD:-$(_chap_password)} \
                qemu-img convert -f raw -O raw "$src" "$tmp" || fail "qemu-img convert $src failed"
            sha256sum < "$tmp" | cut -d' ' -f1
            rm -f "$tmp" ;;
        nfs://*)
            nfs-cat "$src" | sha256sum | cut -d' ' -f1 ;;
        *)
            sha256sum < "$src" | cut -d' ' -f1 ;;
    esac
}

_chap_password() { [[ -r ${ISCSI_CHAP_SECRET_FILE:-} ]] && head -n 1 "$ISCSI_CHAP_SECRET_FILE" || true; }

check_cmp() {
    local out
    out=$(cmp -- "$1" "$2" 2>&1) || fail "files differ: $out"
}

expect_fail() {
    local desc=$1 err rc=0 lines
    shift
    err=$(mktemp "$SCRATCH/stderr.XXXXXX")
    "$@" >/dev/null 2>"$err" || rc=$?
    (( rc != 0 )) || fail "$desc: expected failure, but succeeded: $*"
    lines=$(grep -c '' "$err" || true)
    [[ -s $err && $lines -eq 1 ]] ||
        fail "$desc: expected one line on stderr, got $lines: $(head -c 2000 "$err")"
    log "ok, fails as expected ($desc, status $rc): $(cat "$err")"
    rm -f "$err"
}

copy_ok() {
    local desc=$1 out
    shift
    out=$("$IMGFS" copy -q "$@" 2>&1) || fail "$desc: imgfs copy $* failed: $out"
    log "ok: $desc"
}

fill_lun() {
    qemu-img convert -n -f raw -O raw "$2" "$1" || fail "qemu-img could not fill $1"
}

same_as_lun() {
    local out
    out=$(qemu-img compare -f raw -F raw "$1" "$2" 2>&1) ||
        fail "$3: $2 differs from $1: $out"
}

_lib_stop_pid() { kill "$1" 2>/dev/null || true; }

# start_delay_proxy OUT ARGS...: run scripts/delay-proxy ARGS with its
# listen lines in OUT, stopped when the test exits; waits for "ready".
# DELAY_PROXY_PID is its pid.
start_delay_proxy() {
    local out=$1
    shift
    "$BUILD_DIR/scripts/delay-proxy" "$@" > "$out" &
    DELAY_PROXY_PID=$!
    on_exit _lib_stop_pid "$DELAY_PROXY_PID"
    for _ in $(seq 100); do
        grep -qx ready "$out" && return 0
        kill -0 "$DELAY_PROXY_PID" 2>/dev/null || fail "delay-proxy exited: $(cat "$out")"
        sleep 0.05
    done
    fail "delay-proxy not ready"
}

# proxy_port OUT PORT: the port the proxy whose listen lines are in OUT
# listens on for 127.0.0.1:PORT.
proxy_port() {
    awk -v t="127.0.0.1:$2" '$1 == "listen" && $3 == t { print $2; exit }' "$1"
}

# server_ports: set nfs_port and mnt_port (what rpcbind has for nfsd and
# mountd version 3, TCP) and iscsi_port (the portal's), for delay proxies.
server_ports() {
    local rpc
    rpc=$(rpcinfo -p 127.0.0.1) || fail "rpcinfo -p 127.0.0.1 failed"
    nfs_port=$(awk '$1 == 100003 && $2 == 3 && $3 == "tcp" { print $4; exit }' <<< "$rpc")
    mnt_port=$(awk '$1 == 100005 && $2 == 3 && $3 == "tcp" { print $4; exit }' <<< "$rpc")
    iscsi_port=${ISCSI_PORTAL##*:}
    [[ -n $nfs_port && -n $mnt_port ]] || fail "rpcbind does not know nfsd/mountd"
}
