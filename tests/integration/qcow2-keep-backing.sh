#!/bin/bash
# qcow2-keep-backing.sh — `imgfs copy --keep-backing` writes only the
# source's top qcow2 layer and records its backing file, so that the target
# read through that backing equals the source.
#
# Chains are made with qemu-img/qemu-io: a raw base, a qcow2 middle layer,
# and top layers with data over backing data, zero clusters over backing
# data (`write -z`), data that is all zeroes, partial clusters, unallocated
# ranges, subclusters (extended_l2) and a top larger than its backing.
# Each is copied locally (target next to the source: the stored relative
# name is kept; target elsewhere: an absolute name) with several target
# cluster sizes, and on NFS (source and target on the export).  Checked
# with tools we did not write: `qemu-img compare SRC TARGET` (qemu reads
# both through their chains), `qemu-img check TARGET`, `qemu-img info
# --backing-chain` (backing name and format), and `qemu-img map` (the
# target allocates no more than the top layer, far less than the
# flattened image).  Bad combinations fail with one line and create
# nothing.  The local chain leaves the top's directory (sub/mid.qcow2
# names ../base.raw), so local copies pass --allow-backing for it.
. "$(dirname "$0")/lib.sh"

command -v qemu-img >/dev/null || { log "qemu-img not installed; skipping"; exit 77; }
command -v python3 >/dev/null || { log "python3 not installed; skipping"; exit 77; }

C=$SCRATCH/chain
mkdir -p "$C/sub" "$C/elsewhere"
qio() { qemu-io -f qcow2 "$@" >/dev/null; }

# Bytes allocated (data, not zero) in the image's own layer, per qemu-img map.
own_data_bytes() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin)
          if e["depth"] == 0 and e["data"]))'
}

# Upper bound of the data a copy of IMAGE's own layer into CS-byte
# clusters may allocate: every target cluster that any range of IMAGE's own
# layer (data or zero) touches, in full (a partial cluster is completed
# from the backing; zero ranges may be written as data with --sparse 0).
own_cluster_bound() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
arg = sys.argv[1]
cs = int(arg[:-1]) * 1024 if arg.endswith("K") else int(arg)
touched = set()
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["present"]:
        touched.update(range(e["start"] // cs, (e["start"] + e["length"] - 1) // cs + 1))
print(len(touched) * cs)' "$2"
}

# The backing file name qemu-img sees in IMAGE.
backing_of() {
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
print(json.load(sys.stdin).get("backing-filename", ""))'
}

# --- the chain: base.raw ← sub/mid.qcow2 ← sub/top*.qcow2 (relative names)
head -c $((16 * 1024 * 1024)) /dev/urandom >"$C/base.raw"
qemu-img create -q -f qcow2 -b ../base.raw -F raw "$C/sub/mid.qcow2" 16M
qio -c "write -P 0x4d 2M 3M" -c "write -z 9M 1M" "$C/sub/mid.qcow2"

# top: data over backing data, zero clusters over backing data, data that
# reads as zeroes, a partial cluster, unallocated ranges in between.
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$C/sub/top.qcow2" 16M
qio -c "write -P 0x71 1M 512k" -c "write -z 3M 256k" -c "write -P 0 5M 64k" \
    -c "write -P 0x72 6M 4k" -c "write -z 9M 64k" -c "write -P 0x73 12345678 1000" \
    -c "write -z 15M 1M" "$C/sub/top.qcow2"

# top-sub: subclusters (extended_l2), so one cluster mixes own data,
# zeroes and inherited ranges.
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k \
    -b mid.qcow2 -F qcow2 "$C/sub/top-sub.qcow2" 16M
qio -c "write -P 0x74 8k 4k" -c "write -z 20k 8k" -c "write -P 0x75 1M 64k" \
    -c "write -z 3M 4k" "$C/sub/top-sub.qcow2"

# top-big: larger than its backing (the tail is inherited from nothing).
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$C/sub/top-big.qcow2" 24M
qio -c "write -P 0x76 20M 64k" -c "write -P 0x77 4M 4k" "$C/sub/top-big.qcow2"

flat_size=$((16 * 1024 * 1024))
passed=0
failed=()

# keep_case NAME SRC TARGET WANT_BACKING BOUND_CS [imgfs options...]
# BOUND_CS "-": the target may hold no more data than the source's own
# layer; else at most own_cluster_bound SRC BOUND_CS.
keep_case() {
    local name=$1 src=$2 dst=$3 want=$4 bound_cs=$5
    shift 5
    rm -f "$dst"
    if ! "$IMGFS" copy --create --quiet --target-format qcow2 --keep-backing \
            --allow-backing "$C/" "$@" "$src" "$dst" 2>"$SCRATCH/err"; then
        failed+=("$name: copy failed: $(head -c 300 "$SCRATCH/err")")
        return
    fi
    if ! qemu-img check -q "$dst" >"$SCRATCH/err" 2>&1; then
        failed+=("$name: qemu-img check: $(head -c 300 "$SCRATCH/err")")
        return
    fi
    if ! qemu-img compare -q "$src" "$dst" >"$SCRATCH/err" 2>&1; then
        failed+=("$name: qemu-img compare: $(head -c 300 "$SCRATCH/err")")
        return
    fi
    local got
    got=$(backing_of "$dst")
    if [[ $got != "$want" ]]; then
        failed+=("$name: backing file '$got', expected '$want'")
        return
    fi
    if ! qemu-img info --backing-chain "$dst" | grep -q "^backing file format: qcow2"; then
        failed+=("$name: backing format not recorded")
        return
    fi
    # Only the top layer is in the target: never more data than the
    # source's own layer (data clusters that read as zeroes may become
    # zero clusters) or the target clusters it touches, and far less than
    # the flattened image.
    local bound kept_own
    if [[ $bound_cs == - ]]; then
        bound=$(own_data_bytes "$src")
    else
        bound=$(own_cluster_bound "$src" "$bound_cs")
    fi
    kept_own=$(own_data_bytes "$dst")
    if (( kept_own > bound || kept_own == 0 || kept_own * 4 > flat_size )); then
        failed+=("$name: target holds $kept_own data bytes; at most $bound expected, flattened $flat_size")
        return
    fi
    passed=$((passed + 1))
}

# --- local: target next to the source keeps the relative name
keep_case "local top" "$C/sub/top.qcow2" "$C/sub/kept-64K.qcow2" mid.qcow2 -
for cs in 4K 256K; do
    keep_case "local top cs=$cs" "$C/sub/top.qcow2" "$C/sub/kept-$cs.qcow2" \
        mid.qcow2 "$cs" --cluster-size "$cs"
done
keep_case "local subclusters" "$C/sub/top-sub.qcow2" "$C/sub/kept-sub.qcow2" \
    mid.qcow2 64K
keep_case "local subclusters cs=4K" "$C/sub/top-sub.qcow2" "$C/sub/kept-sub4k.qcow2" \
    mid.qcow2 4K --cluster-size 4K
keep_case "local larger than backing" "$C/sub/top-big.qcow2" "$C/sub/kept-big.qcow2" \
    mid.qcow2 -
keep_case "local strict, sparse 0" "$C/sub/top.qcow2" "$C/sub/kept-strict.qcow2" \
    mid.qcow2 64K --order strict --sparse 0 --request-size 64K
keep_case "local any order, 3 requests" "$C/sub/top.qcow2" "$C/sub/kept-any.qcow2" \
    mid.qcow2 - --order any --requests 3 --request-size 128K
keep_case "local compressed" "$C/sub/top.qcow2" "$C/sub/kept-comp.qcow2" \
    mid.qcow2 - --compress
# --- local: target in another directory records an absolute name
keep_case "local elsewhere" "$C/sub/top.qcow2" "$C/elsewhere/kept.qcow2" \
    "$(realpath "$C/sub/mid.qcow2")" -
# --- a relative source path, target beside it
pushd "$C" >/dev/null
keep_case "relative paths" sub/top.qcow2 sub/kept-rel.qcow2 mid.qcow2 -
popd >/dev/null

# Reading the kept target back through its chain with imgfs gives the
# source's bytes (imgfs's own chain reader, checked against qemu-img's).
if "$IMGFS" copy --create --quiet --allow-backing "$C/" "$C/sub/kept-64K.qcow2" "$SCRATCH/kept.raw" 2>"$SCRATCH/err" &&
   qemu-img convert -O raw "$C/sub/top.qcow2" "$SCRATCH/top.raw" &&
   cmp -s "$SCRATCH/kept.raw" "$SCRATCH/top.raw"; then
    passed=$((passed + 1))
else
    failed+=("kept target read back by imgfs differs: $(head -c 300 "$SCRATCH/err")")
fi
rm -f "$SCRATCH/kept.raw" "$SCRATCH/top.raw"

# --- refusals: one line, no target created
expect_fail "raw source" \
    "$IMGFS" copy --create --target-format qcow2 --keep-backing "$C/base.raw" "$C/x.qcow2"
qemu-img create -q -f qcow2 "$C/alone.qcow2" 1M
expect_fail "qcow2 source without a backing" \
    "$IMGFS" copy --create --target-format qcow2 --keep-backing "$C/alone.qcow2" "$C/x.qcow2"
expect_fail "raw target" \
    "$IMGFS" copy --create --keep-backing --allow-backing "$C/" "$C/sub/top.qcow2" "$C/x.raw"
expect_fail "with --verify" \
    "$IMGFS" copy --create --target-format qcow2 --keep-backing --verify --allow-backing "$C/" "$C/sub/top.qcow2" "$C/x.qcow2"
expect_fail "target is the backing file" \
    "$IMGFS" copy --create --overwrite --target-format qcow2 --keep-backing --allow-backing "$C/" "$C/sub/top.qcow2" "$C/sub/mid.qcow2"
[[ ! -e $C/x.qcow2 && ! -e $C/x.raw ]] || failed+=("a refused copy created its target")
qemu-img check -q "$C/sub/mid.qcow2" || failed+=("the backing file was damaged by a refused copy")

# --- NFS: the chain on the export, the target beside the source
if [[ -f $IMGFS_TEST_ROOT/servers.env ]]; then
    need_servers
    dir=$(nfs_name chain)
    mkdir -p "$(nfs_path "$dir")/sub"   # directory only; files go via NFS
    nfs_put "$C/base.raw" "$dir/base.raw"
    nfs_put "$C/sub/mid.qcow2" "$dir/sub/mid.qcow2"
    nfs_put "$C/sub/top.qcow2" "$dir/sub/top.qcow2"
    nfs_put "$C/sub/top-sub.qcow2" "$dir/sub/top-sub.qcow2"
    for top in top top-sub; do
        dst=$dir/sub/kept-$top.qcow2
        if "$IMGFS" copy --create --quiet --target-format qcow2 --keep-backing \
                "$(nfs_url "$dir/sub/$top.qcow2")" "$(nfs_url "$dst")" 2>"$SCRATCH/err"; then
            keep_check=$(nfs_path "$dst")
            if ! qemu-img check -q "$keep_check" >"$SCRATCH/err" 2>&1; then
                failed+=("nfs $top: qemu-img check: $(head -c 300 "$SCRATCH/err")")
            elif ! qemu-img compare -q "$C/sub/$top.qcow2" "$keep_check" >"$SCRATCH/err" 2>&1; then
                failed+=("nfs $top: qemu-img compare: $(head -c 300 "$SCRATCH/err")")
            elif [[ $(backing_of "$keep_check") != mid.qcow2 ]]; then
                failed+=("nfs $top: backing file '$(backing_of "$keep_check")'")
            elif (( $(own_data_bytes "$keep_check") > $(own_cluster_bound "$C/sub/$top.qcow2" 65536) )); then
                failed+=("nfs $top: target holds more than the top layer")
            else
                passed=$((passed + 1))
            fi
        else
            failed+=("nfs $top: copy failed: $(head -c 300 "$SCRATCH/err")")
        fi
    done
    # NFS source, local target elsewhere: the backing is recorded as the
    # source's resolved nfs:// URL, which imgfs reads back through.
    dst=$C/elsewhere/from-nfs.qcow2
    if "$IMGFS" copy --create --quiet --target-format qcow2 --keep-backing \
            "$(nfs_url "$dir/sub/top.qcow2")" "$dst" 2>"$SCRATCH/err" &&
       [[ $(backing_of "$dst") == "$(nfs_url "$dir/sub/mid.qcow2")" ]] &&
       "$IMGFS" copy --create --quiet --allow-backing "$NFS_URL/$dir/" "$dst" "$SCRATCH/from-nfs.raw" 2>>"$SCRATCH/err" &&
       qemu-img compare -q -F raw "$C/sub/top.qcow2" "$SCRATCH/from-nfs.raw" 2>>"$SCRATCH/err"; then
        passed=$((passed + 1))
    else
        failed+=("nfs → local elsewhere: $(head -c 300 "$SCRATCH/err") (backing '$(backing_of "$dst" 2>/dev/null)')")
    fi
else
    log "test servers not running: NFS cases skipped"
fi

log "$passed cases passed"
if (( ${#failed[@]} )); then
    printf 'FAIL: %s\n' "${failed[@]}" >&2
    fail "${#failed[@]} keep-backing case(s) failed"
fi
