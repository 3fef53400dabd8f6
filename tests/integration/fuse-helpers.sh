# fuse-helpers.sh — shared by the fuse-*.sh tests (source after lib.sh).
#
#   fuse_mount_fg MNT SPEC...   `imgfs mount -f` in the background; waits
#                               until MNT is a mount point; sets FUSE_PID and
#                               FUSE_LOG (its stderr); unmounted at exit.
#   fuse_mount MNT SPEC...      plain (daemonizing) `imgfs mount`; unmounted
#                               at exit.
#   fuse_umount MNT             fusermount3 -u; with a -f mount also waits for
#                               the process and sets FUSE_RC.
#   job_field MNT JOB KEY       value of KEY in MNT/control/JOB.status.
#   put_job MNT JOB TEXT        write TEXT to a local file and cp it to
#                               MNT/control/JOB.job; returns cp's status, cp's
#                               stderr in $SCRATCH/cp.err.

fuse_mount_fg() {
    local mnt=$1
    shift
    mkdir -p "$mnt"
    FUSE_LOG=$SCRATCH/mount-$(basename "$mnt").log
    "$IMGFS" mount -f "$mnt" "$@" 2> "$FUSE_LOG" &
    FUSE_PID=$!
    on_exit _fuse_cleanup "$mnt" "$FUSE_PID"
    local i
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$mnt" && return 0
        kill -0 "$FUSE_PID" 2>/dev/null || { cat "$FUSE_LOG" >&2; fail "imgfs mount -f $mnt exited"; }
        sleep 0.1
    done
    fail "$mnt did not become a mount point"
}

fuse_mount() {
    local mnt=$1
    shift
    mkdir -p "$mnt"
    "$IMGFS" mount "$mnt" "$@" || fail "imgfs mount $mnt $* failed"
    on_exit _fuse_cleanup "$mnt" ""
}

_fuse_cleanup() {
    if mountpoint -q "$1"; then
        fusermount3 -u "$1" 2>/dev/null || fusermount3 -u -z "$1"
    fi
    [[ -n $2 ]] && wait "$2" 2>/dev/null
    true
}

fuse_umount() {
    local mnt=$1
    fusermount3 -u "$mnt" || fail "fusermount3 -u $mnt failed"
    if [[ -n ${FUSE_PID:-} ]]; then
        FUSE_RC=0
        wait "$FUSE_PID" || FUSE_RC=$?
        FUSE_PID=
    fi
}

job_field() {
    sed -n "s/^$3: //p" "$1/control/$2.status"
}

put_job() {
    local mnt=$1 job=$2
    printf '%s\n' "$3" > "$SCRATCH/$job.job"
    cp "$SCRATCH/$job.job" "$mnt/control/$job.job" 2> "$SCRATCH/cp.err"
}
