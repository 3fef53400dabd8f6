#!/bin/bash
# fuse-memory.sh — the mount's memory budget: with -o memory=32M, four
# jobs that each want 16M (job key memory) never run more than two at a
# time; the others show state "queued" with the reason in x.status, start
# in order as memory frees, and every target ends equal to the source.
# A job that could never fit the whole budget (requests × request-size, or
# one request of an adaptive job, above -o memory) fails at once: the cp
# of its job file fails, its status is failed with an error naming the
# job keys and the mount's limit, and its target keeps every byte.
# Then -o max_jobs=1 runs such jobs one at a time, a queued job takes a
# new rate limit (x.rate) that applies when it starts, and a queued job
# cancelled by rm never starts (its target keeps its bytes).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"

MiB=1048576
LUNS=()
for i in 1 2 3 4; do
    new_lun 16M 512 thin
    LUNS+=("$LUN_URL")
done
head -c $((16 * MiB)) /dev/urandom > "$SCRATCH/src.raw"
SRC=$(nfs_name src.raw)
nfs_put "$SCRATCH/src.raw" "$SRC"

# A job slow enough (rate limit) that the four overlap.
job_text() {
    printf 'source = src\ntarget = t%s\nmemory = 16M\nrate = 4M\n' "$1"
}

# The four jobs' states in one line ("gone" once forgotten).
states() {
    local i out=
    for i in 1 2 3 4; do
        if [[ -e $MNT/control/j$i.status ]]; then
            out+="$(job_field "$MNT" "j$i" state) "
        else
            out+="gone "
        fi
    done
    echo "$out"
}

# Poll until every job ended; fail if more than $1 run at once; remember
# whether a queued job said why.  The status files are read one after the
# other, so a job may end and another start between two reads: a reading
# counts only when two passes in a row agree (states only move forward, so
# every job was then in its state at the moment between the passes).
watch_jobs() {
    local limit=$1 a b n_run i
    SAW_QUEUED_WHY=no
    for ((t = 0; t < 1200; t++)); do
        for i in 1 2 3 4; do
            if grep -qs '^queued: waiting for \(memory\|max_jobs\)' \
                    "$MNT/control/j$i.status"; then
                SAW_QUEUED_WHY=yes
            fi
        done
        a=$(states)
        b=$(states)
        if [[ $a == "$b" ]]; then
            n_run=$(tr ' ' '\n' <<< "$a" | grep -c '^running$' || true)
            (( n_run <= limit )) || fail "$n_run jobs running at once (limit $limit): $a"
            [[ $a =~ (queued|running|starting) ]] || return 0
        fi
        sleep 0.1
    done
    fail "the jobs did not end"
}

MNT=$SCRATCH/mnt
fuse_mount "$MNT" -o memory=32M "src=$(nfs_url "$SRC")" "t1=${LUNS[0]}" \
    "t2=${LUNS[1]}" "t3=${LUNS[2]}" "t4=${LUNS[3]}"

log "memory=32M, four jobs of 16M: at most two at once"
for i in 1 2 3 4; do
    put_job "$MNT" "j$i" "$(job_text "$i")" || fail "cp of job $i failed: $(cat "$SCRATCH/cp.err")"
done
watch_jobs 2
[[ $SAW_QUEUED_WHY == yes ]] || fail "no job showed 'queued' with its reason"
for i in 1 2 3 4; do
    [[ $(job_field "$MNT" "j$i" state) == done ]] || fail "job $i: $(cat "$MNT/control/j$i.status")"
    cmp -n $((16 * MiB)) "$SCRATCH/src.raw" "$MNT/t$i" || fail "target $i differs"
    rm "$MNT/control/j$i.job"
done

log "memory=32M: jobs that can never fit fail at once"
before=$(lun_hash "${LUNS[0]}")
put_job "$MNT" big1 "$(printf 'source = src\ntarget = t1\nrequests = 64\nrequest-size = 1M')" &&
    fail "a job needing 64 MiB of 32 MiB was accepted: $(cat "$MNT/control/big1.status")"
[[ $(job_field "$MNT" big1 state) == failed ]] || fail "big1: $(cat "$MNT/control/big1.status")"
err=$(job_field "$MNT" big1 error)
log "big1: $err"
[[ $err == *"requests = 64 × request-size = 1M"* && $err == *"-o memory"* && $err == *"32.0 MiB"* ]] ||
    fail "big1's error does not name its keys and the mount's limit: $err"
put_job "$MNT" big2 "$(printf 'source = src\ntarget = t1\nrequest-size = 64M\nmemory = 64M')" &&
    fail "a job whose one request is 64 MiB of 32 MiB was accepted: $(cat "$MNT/control/big2.status")"
[[ $(job_field "$MNT" big2 state) == failed ]] || fail "big2: $(cat "$MNT/control/big2.status")"
err=$(job_field "$MNT" big2 error)
log "big2: $err"
[[ $err == *"request-size = 64M"* && $err == *"-o memory"* && $err == *"32.0 MiB"* ]] ||
    fail "big2's error does not name its keys and the mount's limit: $err"
rm "$MNT/control/big1.job" "$MNT/control/big2.job"
[[ $(lun_hash "${LUNS[0]}") == "$before" ]] || fail "a refused job wrote its target"
fuse_umount "$MNT"

log "max_jobs=1: one at a time; a queued job removed never starts"
head -c $((16 * MiB)) /dev/urandom > "$SCRATCH/other.raw"
fill_lun "${LUNS[3]}" "$SCRATCH/other.raw"
before=$(lun_hash "${LUNS[3]}")
fuse_mount "$MNT" -o max_jobs=1 "src=$(nfs_url "$SRC")" "t1=${LUNS[0]}" \
    "t2=${LUNS[1]}" "t3=${LUNS[2]}" "t4=${LUNS[3]}"
for i in 1 2 3 4; do
    put_job "$MNT" "j$i" "$(job_text "$i")" || fail "cp of job $i failed: $(cat "$SCRATCH/cp.err")"
done
[[ $(job_field "$MNT" j4 state) == queued ]] || fail "job 4: $(cat "$MNT/control/j4.status")"
grep -q '^queued: waiting for max_jobs' "$MNT/control/j4.status" || fail "job 4 status: $(cat "$MNT/control/j4.status")"
# A queued job's x.rate reads its job text's limit and takes a new one,
# which applies when it starts (job 1 runs 4 s at 4M/s: job 3 waits).
[[ $(job_field "$MNT" j3 state) == queued ]] || fail "job 3: $(cat "$MNT/control/j3.status")"
[[ $(cat "$MNT/control/j3.rate") == 4M ]] || fail "queued job 3's rate reads '$(cat "$MNT/control/j3.rate")'"
echo 16M > "$MNT/control/j3.rate" || fail "a queued job refused a new rate"
[[ $(cat "$MNT/control/j3.rate") == 16M ]] || fail "queued job 3's new rate reads '$(cat "$MNT/control/j3.rate")'"
rm "$MNT/control/j4.job"
watch_jobs 1
for i in 1 2 3; do
    [[ $(job_field "$MNT" "j$i" state) == done ]] || fail "job $i: $(cat "$MNT/control/j$i.status")"
    cmp -n $((16 * MiB)) "$SCRATCH/src.raw" "$MNT/t$i" || fail "target $i differs"
done
grep -q '^rate-limit: 16M/s' "$MNT/control/j3.status" ||
    fail "job 3 did not run with the rate set while it was queued: $(cat "$MNT/control/j3.status")"
[[ $(lun_hash "${LUNS[3]}") == "$before" ]] || fail "the removed queued job wrote its target"
fuse_umount "$MNT"
log "ok"
