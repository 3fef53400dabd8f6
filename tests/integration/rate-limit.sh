#!/bin/bash
# rate-limit.sh — rate limits, for correctness only (how fast is for
# scripts/bench-rate): imgfs copy --rate, the job key `rate`, a mount's
# -o rate= shared fairly by two running jobs (equal shares; a job with a
# lower own limit keeps it and the other gets the rest), control/NAME.rate
# read and written with echo while the job runs, all shown in x.status;
# bad values refused with a clear error and nothing written; every copy
# identical to its source (cmp, qemu-img compare).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"

IMGFS=${IMGFS:?IMGFS must name the imgfs binary}
S=$SCRATCH
M=$((1024 * 1024))
sha() { sha256sum < "$1" | cut -d' ' -f1; }

head -c $((8 * M)) /dev/urandom > "$S/small.raw"
truncate -s $((8 * M)) "$S/dst.raw"

# ---- imgfs copy --rate ------------------------------------------------------
"$IMGFS" copy -q --rate 16M --overwrite "$S/small.raw" "$S/dst.raw" ||
    fail "copy --rate 16M failed"
check_cmp "$S/small.raw" "$S/dst.raw"
"$IMGFS" copy -q --rate=20M/s --order any --overwrite "$S/small.raw" "$S/dst.raw" ||
    fail "copy --rate=20M/s --order any failed"
check_cmp "$S/small.raw" "$S/dst.raw"
"$IMGFS" copy -q --rate 0 --order strict --overwrite "$S/small.raw" "$S/dst.raw" ||
    fail "copy --rate 0 failed"
check_cmp "$S/small.raw" "$S/dst.raw"

truncate -s 0 "$S/dst.raw"; truncate -s $((8 * M)) "$S/dst.raw"
before=$(sha "$S/dst.raw")
for bad in fast 1 -5M 2T 10X ''; do
    rc=0
    "$IMGFS" copy --rate "$bad" --overwrite "$S/small.raw" "$S/dst.raw" \
        > /dev/null 2> "$S/err" || rc=$?
    (( rc == 2 )) || fail "--rate '$bad': status $rc"
    grep -Eq "^imgfs copy: --rate: '.*' is (not a rate|out of range)" "$S/err" ||
        fail "--rate '$bad': $(cat "$S/err")"
    log "ok, refused: $(cat "$S/err")"
done
[[ $(sha "$S/dst.raw") == "$before" ]] || fail "a refused --rate wrote the target"

# ---- mount: -o rate= refused when bad ---------------------------------------
mkdir -p "$S/badmnt"
expect_fail "-o rate=fast" "$IMGFS" mount -o rate=fast "$S/badmnt" "src=$S/small.raw"
mountpoint -q "$S/badmnt" && fail "a mount with -o rate=fast was made"

# ---- mount: two jobs share -o rate=32M ---------------------------------------
need_servers
head -c $((48 * M)) /dev/urandom > "$S/src.raw"
new_lun $((48 * M)) 512 thin; LUN_A=$LUN_URL
new_lun $((48 * M)) 512 thin; LUN_B=$LUN_URL
MNT=$S/mnt
fuse_mount "$MNT" -o nostate,rate=32M "src=$S/src.raw" "a=$LUN_A" "b=$LUN_B"

# A bad rate key refuses the job; its target is untouched.
HASH_A=$(lun_hash "$LUN_A")
put_job "$MNT" badkey "source = src
target = a
rate = fast" && fail "a job with rate = fast was accepted"
grep -q "Invalid argument" "$S/cp.err" || fail "cp: $(cat "$S/cp.err")"
job_field "$MNT" badkey error | grep -q "line 3: rate: 'fast' is not a rate" ||
    fail "badkey error: $(job_field "$MNT" badkey error)"
[[ $(lun_hash "$LUN_A") == "$HASH_A" ]] || fail "a refused job wrote its target"

# status_limit JOB PATTERN: x.status's rate-limit line matches PATTERN.
status_limit() {
    local got
    got=$(job_field "$MNT" "$1" rate-limit)
    [[ $got =~ $2 ]] || fail "$1: rate-limit '$got', expected /$2/"
    log "ok: $1: rate-limit: $got"
}

put_job "$MNT" ja "source = src
target = a
rate = 4M" || fail "job ja refused: $(cat "$S/cp.err")"
put_job "$MNT" jb "source = src
target = b" || fail "job jb refused: $(cat "$S/cp.err")"
# ja keeps its own 4M, jb gets the rest of 32M.
[[ $(job_field "$MNT" ja state) == running && $(job_field "$MNT" jb state) == running ]] ||
    fail "jobs not running: $(job_field "$MNT" ja state) $(job_field "$MNT" jb state)"
status_limit ja '^4M/s \(job: 4M/s, mount: 32M/s '
status_limit jb '^28M/s \(job: unlimited, mount: 32M/s '
[[ $(cat "$MNT/control/ja.rate") == 4M ]] || fail "ja.rate: $(cat "$MNT/control/ja.rate")"
[[ $(cat "$MNT/control/jb.rate") == 0 ]] || fail "jb.rate: $(cat "$MNT/control/jb.rate")"

# Raise ja's own limit above the equal share: both get 16M.
echo 20M > "$MNT/control/ja.rate" || fail "echo 20M > ja.rate failed"
[[ $(cat "$MNT/control/ja.rate") == 20M ]] || fail "ja.rate after echo: $(cat "$MNT/control/ja.rate")"
status_limit ja '^16M/s \(job: 20M/s, mount: 32M/s '
status_limit jb '^16M/s \(job: unlimited, mount: 32M/s '

# Bad values: echo fails with a clear errno, the limit stays.
for bad in fast 1 2T; do
    rc=0
    ( echo "$bad" > "$MNT/control/ja.rate" ) 2> "$S/echo.err" || rc=$?
    (( rc != 0 )) || fail "echo $bad > ja.rate succeeded"
    grep -Eq "Invalid argument|out of range" "$S/echo.err" || fail "echo $bad: $(cat "$S/echo.err")"
    log "ok, refused: $(cat "$S/echo.err")"
done
[[ $(cat "$MNT/control/ja.rate") == 20M ]] || fail "ja.rate after bad writes: $(cat "$MNT/control/ja.rate")"
rm -f "$MNT/control/ja.rate" 2> /dev/null && fail "rm of ja.rate succeeded"

# Lift ja's limit; both finish and their LUNs equal the source.
printf '0' > "$MNT/control/ja.rate" || fail "printf 0 > ja.rate failed"
status_limit ja '^16M/s \(job: unlimited, mount: 32M/s '
"$IMGFS" wait "$MNT/control/ja.job" > /dev/null || fail "ja: $(job_field "$MNT" ja error)"
"$IMGFS" wait "$MNT/control/jb.job" > /dev/null || fail "jb: $(job_field "$MNT" jb error)"
same_as_lun "$S/src.raw" "$LUN_A" "job ja"
same_as_lun "$S/src.raw" "$LUN_B" "job jb"

# A finished job's limit cannot be changed.
rc=0
( echo 8M > "$MNT/control/ja.rate" ) 2> "$S/echo.err" || rc=$?
(( rc != 0 )) && grep -q "No such process" "$S/echo.err" ||
    fail "echo to a finished job's rate file: status $rc: $(cat "$S/echo.err")"
log "rate limits accepted, shown, shared and refused as documented"
