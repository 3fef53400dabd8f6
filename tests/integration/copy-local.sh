#!/bin/bash
# copy-local.sh — `imgfs copy` between local files, null: and zero:
# (no servers needed).  Results are checked with cmp, sha256sum, stat and
# `qemu-img compare`; failures must leave targets untouched and print
# exactly one line on stderr.
. "$(dirname "$0")/lib.sh"

IMGFS=${IMGFS:?IMGFS must name the imgfs binary}
S=$SCRATCH

sha() { sha256sum < "$1" | cut -d' ' -f1; }
blocks() { stat -c %b "$1"; }

# Expect `imgfs copy ...` to fail with status $1, one stderr line matching
# the pattern $2.
copy_fails() {
    local want_rc=$1 pattern=$2 rc=0
    shift 2
    "$IMGFS" copy "$@" >"$S/out" 2>"$S/err" || rc=$?
    (( rc == want_rc )) || fail "imgfs copy $*: status $rc, expected $want_rc: $(cat "$S/err")"
    [[ $(grep -c '' "$S/err") -eq 1 ]] || fail "imgfs copy $*: expected one stderr line, got: $(cat "$S/err")"
    grep -Eq -- "^imgfs copy: .*($pattern)" "$S/err" ||
        fail "imgfs copy $*: message does not match '$pattern': $(cat "$S/err")"
    [[ ! -s $S/out ]] || fail "imgfs copy $*: unexpected stdout: $(cat "$S/out")"
    log "ok, fails as expected: $(cat "$S/err")"
}

same_image() {
    check_cmp "$1" "$2"
    qemu-img compare -q -f raw -F raw "$1" "$2" || fail "qemu-img compare $1 $2 differ"
}

# ---- a source with random data, holes and an allocated run of zeroes -----
# Size deliberately not a multiple of any request size used below.
SRC=$S/src.raw
SIZE=$((37 * 1024 * 1024 + 1234))
truncate -s $SIZE "$SRC"
put_random() {  # OFFSET LENGTH
    head -c "$2" /dev/urandom | dd of="$SRC" bs=64K seek="$1" oflag=seek_bytes conv=notrunc status=none
}
put_random 0 1000000
put_random $((3 * 1024 * 1024 + 17)) 5000000
put_random $((20 * 1024 * 1024)) 65536
put_random $((SIZE - 4000)) 4000
# 4 MiB of written (allocated) zeroes, which the copy should turn into a hole.
head -c $((4 * 1024 * 1024)) /dev/zero |
    dd of="$SRC" bs=1M seek=$((24 * 1024 * 1024)) oflag=seek_bytes conv=notrunc status=none
sync "$SRC"
SRC_SHA=$(sha "$SRC")

# ---- file -> file in every order mode -------------------------------------
for order in strict pipelined any; do
    dst=$S/dst-$order.raw
    "$IMGFS" copy -q --create --order $order "$SRC" "$dst" > "$S/out"
    [[ ! -s $S/out ]] || fail "-q printed: $(cat "$S/out")"
    same_image "$SRC" "$dst"
    # Holes and the zero run stay unallocated in the copy.
    (( $(blocks "$dst") < $(blocks "$SRC") )) ||
        fail "$order: target not sparse ($(blocks "$dst") vs $(blocks "$SRC") blocks)"
    log "ok: order $order"
done

# Odd request sizes and few requests, no zero detection.
"$IMGFS" copy -q --create --requests 3 --request-size 12345 --sparse 0 \
    "$SRC" "$S/dst-odd.raw"
same_image "$SRC" "$S/dst-odd.raw"
# A request size below the default zero-run size (which then follows it).
"$IMGFS" copy -q --create --requests 8 --request-size 1000 --order any \
    "$SRC" "$S/dst-1000.raw"
same_image "$SRC" "$S/dst-1000.raw"
"$IMGFS" copy -q --create --requests 1 --request-size 4K --order strict \
    --sparse 512 "$SRC" "$S/dst-small.raw"
same_image "$SRC" "$S/dst-small.raw"

# Summary line and --verify.
"$IMGFS" copy --create --verify "$SRC" "$S/dst-verify.raw" > "$S/out"
grep -q "^copied $SIZE bytes .*, verified$" "$S/out" || fail "summary: $(cat "$S/out")"
same_image "$SRC" "$S/dst-verify.raw"

# -p when stderr is not a terminal: a few plain lines ending at 100%.
"$IMGFS" copy -p --create "$SRC" "$S/dst-progress.raw" > /dev/null 2> "$S/err"
tail -n 1 "$S/err" | grep -q "^imgfs copy: 100% (" || fail "-p output: $(cat "$S/err")"
(( $(grep -c '' "$S/err") <= 10 )) || fail "-p printed too much: $(cat "$S/err")"
same_image "$SRC" "$S/dst-progress.raw"

# ---- create / overwrite rules ---------------------------------------------
T=$S/existing.raw
head -c 100000 /dev/urandom > "$T"
T_SHA=$(sha "$T")
copy_fails 1 "exists and is not empty; use --overwrite" "$SRC" "$T"
copy_fails 1 "exists and is not empty; use --overwrite" --create "$SRC" "$T"
[[ $(sha "$T") == "$T_SHA" ]] || fail "refused target was changed"

# Too small (opened in place with --overwrite): refused before any write.
copy_fails 1 "too small" --overwrite "$SRC" "$T"
[[ $(sha "$T") == "$T_SHA" ]] || fail "too-small target was changed"

# --overwrite --create replaces it.
"$IMGFS" copy -q --overwrite --create "$SRC" "$T"
same_image "$SRC" "$T"

# --overwrite alone onto a bigger target writes in place and keeps the tail.
BIG=$S/bigger.raw
head -c $((SIZE + 5000)) /dev/urandom > "$BIG"
tail -c 5000 "$BIG" > "$S/tail.want"
"$IMGFS" copy -q --overwrite "$SRC" "$BIG"
[[ $(stat -c %s "$BIG") -eq $((SIZE + 5000)) ]] || fail "bigger target changed size"
cmp -n $SIZE "$SRC" "$BIG" || fail "bigger target: copied part differs"
tail -c 5000 "$BIG" | cmp - "$S/tail.want" || fail "bigger target: tail changed"

# The source named as its own target (also through another path): refused
# before the target open could truncate it.
copy_fails 1 "are the same image" --overwrite --create "$SRC" "$SRC"
ln -s "$SRC" "$S/src-link.raw"
copy_fails 1 "are the same image" --overwrite --create "$S/src-link.raw" "$SRC"
[[ $(sha "$SRC") == "$SRC_SHA" ]] || fail "the source was changed"

# Missing target without --create: nothing is created.
copy_fails 1 "no such file; use --create to create it" "$SRC" "$S/missing.raw"
[[ ! -e $S/missing.raw ]] || fail "missing target was created"

# Missing source: the target is not created either.
copy_fails 1 "no-such-source.raw: no such file" --create "$S/no-such-source.raw" "$S/never.raw"
[[ ! -e $S/never.raw ]] || fail "target created although the source is missing"

# Malformed URLs.
copy_fails 1 "unsupported URL scheme 'ftp'" --create "ftp://host/x" "$S/never.raw"
copy_fails 1 "expected zero:SIZE" --create "zero:lots" "$S/never.raw"
# libiscsi explains a bad URL over several lines; still one line here.
copy_fails 1 "iscsi://" --create "iscsi://" "$S/never.raw"
[[ ! -e $S/never.raw ]] || fail "target created although the source is bad"

# Bad arguments: status 2, nothing touched.
copy_fails 2 "unknown option '--fast'" --fast "$SRC" "$T"
copy_fails 2 "--order: 'random' is not strict, pipelined or any" --order random "$SRC" "$T"
copy_fails 2 "expected SOURCE and TARGET" "$SRC"
# --create --resume-from continues a created target: an existing raw file
# in place (it still needs --overwrite; nothing is truncated, the file
# stays the same file), a new one's partial file (without one there is
# nothing to resume, and nothing is created); a created qcow2 target
# restarts, so its resume is refused up front.
copy_fails 1 "exists and is not empty; use --overwrite" --create --resume-from 4096 "$SRC" "$T"
ino=$(stat -c %i "$T")
"$IMGFS" copy -q --create --overwrite --resume-from 4096 "$SRC" "$T"
[[ $(stat -c %i "$T") == "$ino" ]] || fail "a resume in place replaced $T"
copy_fails 1 "no partial file .*to resume" --create --resume-from 4096 "$SRC" "$S/never.raw"
[[ ! -e $S/never.raw && ! -e $S/.never.raw.imgfs-partial ]] || fail "a resume without a partial file created one"
copy_fails 2 "restarts from 0 \\(rerun the command without --resume-from\\)" --create --target-format qcow2 --resume-from 4096 "$SRC" "$S/never.qcow2"
same_image "$SRC" "$T"

# ---- zero: and null: ------------------------------------------------------
"$IMGFS" copy -q --create zero:10M "$S/zeros.raw"
head -c $((10 * 1024 * 1024)) /dev/zero > "$S/zeros.want"
same_image "$S/zeros.want" "$S/zeros.raw"
(( $(blocks "$S/zeros.raw") == 0 )) || fail "zero: copy allocated $(blocks "$S/zeros.raw") blocks"
# zero: onto an existing file full of data really zeroes it.
head -c $((10 * 1024 * 1024)) /dev/urandom > "$S/zeroed.raw"
"$IMGFS" copy -q --overwrite zero:10M "$S/zeroed.raw"
same_image "$S/zeros.want" "$S/zeroed.raw"

"$IMGFS" copy "$SRC" null: > "$S/out"
grep -q "^copied $SIZE bytes" "$S/out" || fail "file -> null: summary: $(cat "$S/out")"
[[ $(sha "$SRC") == "$SRC_SHA" ]] || fail "the source was changed"

# ---- resume ---------------------------------------------------------------
# A target whose first part is right and whose rest is garbage: resuming
# from a block inside the good part fixes the rest.
R=$S/resume.raw
cp "$SRC" "$R"
RESUME_AT=$((8 * 1024 * 1024))
head -c $((SIZE - RESUME_AT)) /dev/urandom |
    dd of="$R" bs=1M seek=$RESUME_AT oflag=seek_bytes conv=notrunc status=none
"$IMGFS" copy -q --overwrite --resume-from $RESUME_AT "$SRC" "$R"
same_image "$SRC" "$R"
copy_fails 1 "past the end" --overwrite --resume-from $((SIZE + 1)) "$SRC" "$R"

# A copy that fails part-way (writes beyond RLIMIT_FSIZE fail with EFBIG)
# names the failing write and the watermark; resuming from it completes
# the copy.
F=$S/fail.raw
truncate -s $SIZE "$F"
rc=0
( ulimit -f 10240; trap '' XFSZ; exec "$IMGFS" copy --overwrite "$SRC" "$F" ) \
    > "$S/out" 2> "$S/err" || rc=$?
(( rc == 1 )) || fail "copy over the file size limit: status $rc: $(cat "$S/err")"
[[ $(grep -c '' "$S/err") -eq 1 ]] || fail "failed copy: stderr: $(cat "$S/err")"
grep -q "File too large" "$S/err" || fail "failed copy: message: $(cat "$S/err")"
at=$(sed -n 's/^imgfs copy: .* (bytes before \([0-9]*\) are copied; resume with --resume-from \1 --overwrite)$/\1/p' "$S/err")
# (The source holds no data between 8 MiB and 20 MiB, and zeroing the
# target's existing blocks there is not limited, so the first failing
# write is at 20 MiB at the latest.)
[[ -n $at ]] && (( at <= 20 * 1024 * 1024 )) || fail "failed copy: watermark: $(cat "$S/err")"
log "failed as expected at watermark $at: $(cat "$S/err")"
cmp -n "$at" "$SRC" "$F" || fail "bytes below the watermark $at differ"
"$IMGFS" copy -q --overwrite --resume-from "$at" "$SRC" "$F"
same_image "$SRC" "$F"

# Interrupt a deliberately slow copy.  Whether the signal lands before the
# end or not, the outcome must be consistent: either a clean finish, or
# status 130, one line naming the byte to resume from, and a resume that
# completes the copy.
C=$S/cancel.raw
P=$S/.cancel.raw.imgfs-partial     # C until the copy is complete
rc=0
"$IMGFS" copy --create --requests 1 --request-size 4K --order strict \
    "$SRC" "$C" > /dev/null 2> "$S/err" &
pid=$!
# Wait until the copy has written something, then interrupt it.
for _ in $(seq 500); do
    [[ -e $P ]] && (( $(blocks "$P") > 0 )) && break
    sleep 0.01
done
kill -INT $pid 2>/dev/null || true
wait $pid || rc=$?
if (( rc == 0 )); then
    log "copy finished before SIGINT arrived"
else
    (( rc == 130 )) || fail "interrupted copy: status $rc: $(cat "$S/err")"
    [[ $(grep -c '' "$S/err") -eq 1 ]] || fail "interrupted copy: stderr: $(cat "$S/err")"
    at=$(sed -n 's/^imgfs copy: cancelled at byte \([0-9]*\); the partial file .* holds the bytes before \1; resume with: imgfs copy --resume-from \1 .*$/\1/p' "$S/err")
    [[ -n $at ]] || fail "interrupted copy: message: $(cat "$S/err")"
    [[ ! -e $C ]] || fail "interrupted copy: $C exists before the copy completed"
    cmp -n "$at" "$SRC" "$P" || fail "bytes below the watermark $at differ"
    log "cancelled at $at; resuming"
    "$IMGFS" copy -q --create --resume-from "$at" "$SRC" "$C"
fi
same_image "$SRC" "$C"

# ---- block devices (a loop device over a scratch file, when permitted) -----
BDEV_FILE=$S/bdev.img
truncate -s 48M "$BDEV_FILE"
if dev=$(losetup -f --show "$BDEV_FILE" 2>/dev/null); then
    on_exit losetup -d "$dev"
    log "block device tests on $dev"
    # A device needs neither --create nor --overwrite (and ignores them).
    "$IMGFS" copy -q "$SRC" "$dev"
    cmp -n $SIZE "$SRC" "$dev" || fail "file -> $dev differs"
    "$IMGFS" copy -q --create "$dev" "$S/from-dev.raw"
    check_cmp "$dev" "$S/from-dev.raw"
    # Zeroing a whole device (WRITE ZEROES / BLKZEROOUT / written zeroes).
    "$IMGFS" copy -q --verify zero:48M "$dev"
    cmp -n $((48 * 1024 * 1024)) /dev/zero "$dev" || fail "$dev not zeroed"
    "$IMGFS" copy -q --sparse 0 --order any "$SRC" "$dev"
    cmp -n $SIZE "$SRC" "$dev" || fail "file -> $dev (sparse 0) differs"
    # Too small, and a resume offset off the 512-byte blocks: refused,
    # the device unchanged.
    DEV_SHA=$(sha "$dev")
    copy_fails 1 "too small" zero:49M "$dev"
    copy_fails 1 "not aligned|must be multiples" --resume-from 100 "$SRC" "$dev"
    [[ $(sha "$dev") == "$DEV_SHA" ]] || fail "$dev changed by a refused copy"
else
    log "no loop device available: block device tests skipped"
fi

# ---- help -----------------------------------------------------------------
"$IMGFS" copy --help > "$S/out" 2> "$S/err"
[[ ! -s $S/err ]] || fail "--help wrote to stderr"
for opt in --requests --request-size --order --sparse --target-is-zero \
           --verify --create --overwrite --source-format --target-format \
           --cluster-size --compress --keep-backing --resume-from -p -q; do
    grep -q -- "$opt" "$S/out" || fail "--help does not mention $opt"
done
head -n 1 "$S/out" | grep -q "^usage: imgfs copy" || fail "--help: $(head -n 1 "$S/out")"

log "all ok"
