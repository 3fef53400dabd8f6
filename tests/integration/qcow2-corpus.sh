#!/bin/bash
# qcow2-corpus.sh — a qcow2 corpus made now with qemu-img/qemu-io, copied
# by imgfs to raw, to qcow2 and to compressed qcow2, and checked with
# `qemu-img compare` (every output) and `qemu-img check` (qcow2 outputs:
# 0 errors, 0 leaks).
#
# Copiers: the qcow2 layer on its own ($BUILD_DIR/tests/fuzz/qcow2-convert,
# image_open + block_status + pipelined writes; also to raw with odd
# 12345-byte requests, 13 in flight) and, when the CLI has
# --target-format, `$IMGFS copy`.  Cases: v2 (compat=0.10) and v3; cluster
# sizes 512, 4K, 64K, 2M; compressed; zero clusters; subclusters; relative
# backing chains (3 and 9 deep, raw and qcow2 bases); virtual sizes not a
# multiple of the cluster size; 0-byte and one-sector images; an image
# larger than its backing.  With the test servers running, the chain is
# also read from NFS (relative names resolved on the export), written back
# to NFS as compressed qcow2 and deployed to an iSCSI LUN; without them
# that part is skipped with a message.
. "$(dirname "$0")/lib.sh"

TEST_SERVERS=${TEST_SERVERS:-$SOURCE_DIR/scripts/test-servers}  # for new_lun
HELPER=$BUILD_DIR/tests/fuzz/qcow2-convert
[[ -x $HELPER ]] || fail "missing $HELPER (build first)"
command -v qemu-img >/dev/null || { log "qemu-img not installed; skipping"; exit 77; }

C=$SCRATCH/corpus
OUT=$SCRATCH/out
mkdir -p "$C" "$OUT"

copiers=(layer)
if "$IMGFS" copy --help 2>&1 | grep -q -- --target-format; then
    copiers+=(cli)
else
    log "imgfs copy has no --target-format yet: checking the qcow2 layer only"
fi

# copy COPIER SRC DST raw|qcow2|compressed
copy() {
    local how=$1 src=$2 dst=$3 kind=$4 args=()
    case $how:$kind in
        layer:raw) args=() ;;
        layer:raw-odd) args=(-r 12345 -n 13) ;;     # unaligned reads
        layer:qcow2) args=(-O qcow2) ;;
        layer:compressed) args=(-O qcow2 -c) ;;
        cli:raw) args=(--target-format raw) ;;
        cli:qcow2) args=(--target-format qcow2) ;;
        cli:compressed) args=(--target-format qcow2 --compress) ;;
    esac
    if [[ $how == layer ]]; then
        "$HELPER" "${args[@]}" "$src" "$dst"
    else
        "$IMGFS" copy --create --overwrite --quiet "${args[@]}" "$src" "$dst"
    fi
}

passed=0
failed=()
# check_case NAME SRC: every copier × every output kind.
check_case() {
    local name=$1 src=$2 how kind out
    for how in "${copiers[@]}"; do
        local kinds=(raw qcow2 compressed)
        [[ $how == layer ]] && kinds+=(raw-odd)
        for kind in "${kinds[@]}"; do
            out=$OUT/$name.$how.$kind
            rm -f "$out"
            if ! copy "$how" "$src" "$out" "$kind" 2>"$OUT/err"; then
                failed+=("$name/$how/$kind: copy failed: $(head -c 300 "$OUT/err")")
                continue
            fi
            if [[ $kind != raw* ]] && ! qemu-img check -q "$out" >"$OUT/err" 2>&1; then
                failed+=("$name/$how/$kind: qemu-img check: $(head -c 300 "$OUT/err")")
                continue
            fi
            if [[ $kind != raw* ]] && qemu-img info "$out" | grep -q "cleanly shut down: no"; then
                failed+=("$name/$how/$kind: finished copy left the dirty bit set")
                continue
            fi
            local fmt=raw
            [[ $kind == raw* ]] || fmt=qcow2
            if ! qemu-img compare -q -F "$fmt" "$src" "$out" >"$OUT/err" 2>&1; then
                failed+=("$name/$how/$kind: qemu-img compare: $(head -c 300 "$OUT/err")")
                continue
            fi
            passed=$((passed + 1))
            rm -f "$out"
        done
    done
    log "case $name done"
}

qio() { qemu-io -f qcow2 "$@" >/dev/null; }

# Random data with zero runs, so outputs have data, holes and zeroes.
head -c $((6 * 1024 * 1024)) /dev/urandom >"$C/data.raw"
dd if=/dev/zero of="$C/data.raw" bs=64k seek=20 count=16 conv=notrunc status=none
dd if=/dev/zero of="$C/data.raw" bs=4k seek=1000 count=3 conv=notrunc status=none
truncate -s 8M "$C/data.raw"

# --- versions and cluster sizes
qemu-img convert -O qcow2 -o compat=0.10 "$C/data.raw" "$C/v2.qcow2"
check_case v2-64k "$C/v2.qcow2"
for cs in 512 4096 65536 2M; do
    qemu-img convert -O qcow2 -o compat=1.1,cluster_size=$cs "$C/data.raw" "$C/v3-$cs.qcow2"
    check_case "v3-$cs" "$C/v3-$cs.qcow2"
done
qemu-img convert -O qcow2 -o compat=0.10,cluster_size=512 "$C/data.raw" "$C/v2-512.qcow2"
check_case v2-512 "$C/v2-512.qcow2"

# --- compressed
for cs in 512 4096 65536 2M; do
    qemu-img convert -c -O qcow2 -o cluster_size=$cs "$C/data.raw" "$C/comp-$cs.qcow2"
    check_case "compressed-$cs" "$C/comp-$cs.qcow2"
done

# --- zero clusters (v3 zero flag over allocated and unallocated clusters)
cp "$C/v3-65536.qcow2" "$C/zero.qcow2"
qio -c "write -z 0 256k" -c "write -z 3M 1M" -c "write -z 7M 64k" "$C/zero.qcow2"
check_case zero-clusters "$C/zero.qcow2"

# --- subclusters
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k "$C/sub.qcow2" 4M
qio -c "write -P 0x11 4k 4k" -c "write -P 0x22 70k 10k" -c "write -z 8k 2k" \
    -c "write -P 0x33 1M 64k" -c "write -z 1M 8k" "$C/sub.qcow2"
check_case subclusters "$C/sub.qcow2"
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=32k -b v3-4096.qcow2 -F qcow2 "$C/sub-over.qcow2"
qio -c "write -P 0x44 1k 1k" -c "write -z 100k 3k" "$C/sub-over.qcow2"
check_case subclusters-on-backing "$C/sub-over.qcow2"

# --- backing chains with relative names
mkdir -p "$C/chain/sub"
head -c 3M /dev/urandom >"$C/chain/base.raw"
qemu-img create -q -f qcow2 -b ../base.raw -F raw "$C/chain/sub/mid.qcow2"
qio -c "write -P 0x55 1M 256k" -c "write -z 2M 128k" "$C/chain/sub/mid.qcow2"
# The top is the chain's outermost directory: backing files stay inside
# the directory of the image named (mid's "../base.raw" is chain/base.raw).
qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 "$C/chain/top.qcow2" 5M
qio -c "write -P 0x66 100k 4k" -c "write -P 0x67 4M 64k" "$C/chain/top.qcow2"
check_case chain-3 "$C/chain/top.qcow2"
prev=base.raw pf=raw
for i in 1 2 3 4 5 6 7 8 9; do
    qemu-img create -q -f qcow2 -b "$prev" -F "$pf" "$C/chain/d$i.qcow2" 3M
    qio -c "write -P $((i + 16)) $((i * 256))k 8k" "$C/chain/d$i.qcow2"
    prev=d$i.qcow2 pf=qcow2
done
check_case chain-9 "$C/chain/d9.qcow2"

# --- sizes
qemu-img create -q -f qcow2 -o cluster_size=4096 "$C/odd.qcow2" 1000123
qio -c "write -P 0x77 0 4k" -c "write -P 0x78 995000 5123" "$C/odd.qcow2"
check_case odd-size "$C/odd.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=2M "$C/odd2m.qcow2" 3000001
qio -c "write -P 0x79 2999000 1001" "$C/odd2m.qcow2"
check_case odd-size-2m "$C/odd2m.qcow2"
qemu-img create -q -f qcow2 "$C/empty.qcow2" 0
check_case zero-bytes "$C/empty.qcow2"
qemu-img create -q -f qcow2 "$C/sector.qcow2" 512
qio -c "write -P 0x7a 0 512" "$C/sector.qcow2"
check_case one-sector "$C/sector.qcow2"

# --- larger than its backing
qemu-img create -q -f qcow2 "$C/small-base.qcow2" 1M
qio -c "write -P 0x7b 0 1M" "$C/small-base.qcow2"
qemu-img create -q -f qcow2 -b small-base.qcow2 -F qcow2 "$C/bigger.qcow2" 6M
qio -c "write -P 0x7c 5M 4k" "$C/bigger.qcow2"
check_case larger-than-backing "$C/bigger.qcow2"

# --- keep-backing (layer): only the top layer is written, the backing
# name recorded; the result compares equal to the source.
"$HELPER" -O qcow2 -b sub/mid.qcow2 -F qcow2 "$C/chain/top.qcow2" "$C/chain/kept.qcow2" \
    || failed+=("keep-backing: copy failed")
if [[ -f $C/chain/kept.qcow2 ]]; then
    qemu-img check -q "$C/chain/kept.qcow2" || failed+=("keep-backing: check")
    qemu-img compare -q "$C/chain/top.qcow2" "$C/chain/kept.qcow2" \
        || failed+=("keep-backing: compare")
    qemu-img info "$C/chain/kept.qcow2" | grep -q "backing file: sub/mid.qcow2" \
        || failed+=("keep-backing: backing name not recorded")
fi

# --- NFS and iSCSI
if [[ -f $IMGFS_TEST_ROOT/servers.env ]]; then
    need_servers
    dir=$(nfs_name chain)
    mkdir -p "$(nfs_path "$dir")/sub"   # directory only; files go via NFS
    nfs_put "$C/chain/base.raw" "$dir/base.raw"
    nfs_put "$C/chain/sub/mid.qcow2" "$dir/sub/mid.qcow2"
    nfs_put "$C/chain/top.qcow2" "$dir/top.qcow2"
    src=$(nfs_url "$dir/top.qcow2")
    for how in "${copiers[@]}"; do
        out=$OUT/nfs-top.$how.raw
        if copy "$how" "$src" "$out" raw 2>"$OUT/err" &&
           qemu-img compare -q "$C/chain/top.qcow2" "$out" 2>>"$OUT/err"; then
            passed=$((passed + 1))
        else
            failed+=("nfs chain → local raw ($how): $(head -c 300 "$OUT/err")")
        fi
        dst=$dir/backup.$how.qcow2
        if copy "$how" "$src" "$(nfs_url "$dst")" compressed 2>"$OUT/err" &&
           qemu-img check -q "$(nfs_path "$dst")" 2>>"$OUT/err" &&
           qemu-img compare -q "$C/chain/top.qcow2" "$(nfs_path "$dst")" 2>>"$OUT/err"; then
            passed=$((passed + 1))
        else
            failed+=("nfs chain → nfs compressed qcow2 ($how): $(head -c 300 "$OUT/err")")
        fi
        new_lun 8M 512 thin
        if copy "$how" "$src" "$LUN_URL" raw 2>"$OUT/err" &&
           qemu-img compare -q -f qcow2 -F raw "$C/chain/top.qcow2" "$LUN_FILE" 2>>"$OUT/err"; then
            passed=$((passed + 1))
        else
            failed+=("nfs chain → iscsi raw ($how): $(head -c 300 "$OUT/err")")
        fi
    done
    log "NFS/iSCSI part done"
else
    log "test servers not running: NFS/iSCSI part skipped (scripts/test-servers start)"
fi

log "$passed copies identical and clean"
if ((${#failed[@]})); then
    printf 'FAIL: %s\n' "${failed[@]}" >&2
    fail "${#failed[@]} corpus copies failed"
fi
