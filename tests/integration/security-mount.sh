#!/bin/bash
# security-mount.sh — a mount shared with other local users (allow_other)
# lets each of them do only what the owners and modes it shows allow.
#
# An unprivileged user (and a group it is in) is created for the test and
# removed at exit; commands run as it with setpriv.
#  1. -o allow_other with the defaults (owner = the mounting user, umask
#     077): the user can neither write nor read a LUN, start a job, nor
#     remove a root-owned NFS file; modes shown are 700/600.
#  2. -o allow_other,gid=G,umask=007: the user writes the LUN (checked with
#     qemu-img compare), runs a job (imgfs wait + qemu-img compare), reads a
#     root-owned 0644 NFS file but cannot write or remove it (the server's
#     modes), nor read a 0600 one; jobs naming such files are refused with
#     EACCES and "permission denied" in the status, leaving them unchanged;
#     files and directories it creates in an NFS directory are its own on
#     the server, and its jobs may write them.
#  3. -o allow_other,umask=022: the user reads the LUN but can neither
#     write it nor put a job into the 0755 control/; allow_root alone also
#     brings default_permissions.
#  4. Bad uid/gid/umask values are refused at mount time with one line.
# Every check runs; the test fails at the end if any failed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
[[ $(id -u) == 0 ]] || { log "needs root (useradd, allow_other); skipping"; exit 77; }

MiB=1048576
FAILS=0
bad() { echo "FAIL: $TEST_NAME: $*" >&2; FAILS=$((FAILS + 1)); }
ok() { log "ok: $*"; }

# ---- the other user -------------------------------------------------------
U=isec$$
G=isecg$$
groupadd "$G" || fail "groupadd $G"
on_exit groupdel "$G"
useradd --no-create-home --user-group --groups "$G" --shell /usr/sbin/nologin \
    "$U" || fail "useradd $U"
on_exit userdel "$U"
UID_U=$(id -u "$U")
GID_U=$(id -g "$U")
GID_G=$(getent group "$G" | cut -d: -f3)
# Run "$@" as the user (its primary and supplementary groups), from /.
as_user() { (cd / && setpriv --reuid="$UID_U" --regid="$GID_U" --init-groups -- "$@"); }
# as_user_denied DESC CMD...: CMD must fail with "Permission denied".
as_user_denied() {
    local desc=$1 err=$SCRATCH/denied.err
    shift
    if as_user "$@" >/dev/null 2>"$err"; then
        bad "$desc: succeeded as $U"
    elif grep -q "Permission denied" "$err"; then
        ok "$desc: $(head -n 1 "$err")"
    else
        bad "$desc: failed, but not with EACCES: $(head -c 500 "$err")"
    fi
}
# shows PATH MODE OWNER GROUP: what stat reports through the mount.
shows() {
    local got
    got=$(stat -c '%a %U %G' "$1") || { bad "stat $1"; return; }
    [[ $got == "$2 $3 $4" ]] && ok "$1 shows $got" || bad "$1 shows $got, expected $2 $3 $4"
}

# The user must reach the mount points and the job files.
chmod 0755 "$SCRATCH"
mkdir -m 0755 "$SCRATCH/jobs"
job_file() { printf '%s\n' "$2" > "$SCRATCH/jobs/$1.job"; chmod 0644 "$SCRATCH/jobs/$1.job"; }
user_cp_job() { as_user cp "$SCRATCH/jobs/$2.job" "$1/control/$2.job"; }

# ---- images ----------------------------------------------------------------
head -c $((8 * MiB)) /dev/urandom > "$SCRATCH/lun.orig"
new_lun 8M 512 thin; LUN=$LUN_URL
fill_lun "$LUN" "$SCRATCH/lun.orig"
new_lun 8M 512 thin; TGT=$LUN_URL
head -c $((8 * MiB)) /dev/urandom > "$SCRATCH/src.raw"     # job source (local file)

# An NFS directory owned by root (0755) with a root-owned 0644 file, a
# root-owned 0600 file and a directory everyone may write in (0777).
D=$(nfs_name dir)
DIR=$(nfs_path "$D")
mkdir -m 0755 "$DIR"
head -c $((4 * MiB)) /dev/urandom > "$SCRATCH/pub.raw"
head -c $((4 * MiB)) /dev/urandom > "$SCRATCH/secret.raw"
nfs_put "$SCRATCH/pub.raw" "$D/pub.raw"
nfs_put "$SCRATCH/secret.raw" "$D/secret.raw"
chown root:root "$DIR" "$DIR/pub.raw" "$DIR/secret.raw"
chmod 0644 "$DIR/pub.raw"
chmod 0600 "$DIR/secret.raw"
mkdir -m 0777 "$DIR/open"
pub_hash=$(sha256sum < "$DIR/pub.raw")
secret_hash=$(sha256sum < "$DIR/secret.raw")

SPECS=("lun=$LUN" "tgt=$TGT" "src=$SCRATCH/src.raw" "d=$(nfs_url "$D/")")
mount_o() {             # MNT OPTIONS: mount SPECS there with -o OPTIONS
    mkdir -p "$1"
    "$IMGFS" mount -o "$2" "$1" "${SPECS[@]}" || fail "imgfs mount -o $2 failed"
    on_exit _fuse_cleanup "$1" ""
}

# ---- 1. allow_other, defaults ---------------------------------------------
M1=$SCRATCH/m1
mount_o "$M1" allow_other
grep -q "^imgfs $M1 .*default_permissions" /proc/mounts ||
    bad "allow_other mount without default_permissions: $(grep " $M1 " /proc/mounts)"
shows "$M1" 700 root root
shows "$M1/lun" 600 root root
shows "$M1/control" 700 root root
lun_before=$(lun_hash "$LUN")
tgt_before=$(lun_hash "$TGT")

as_user_denied "default mount: dd onto the LUN" \
    dd if=/dev/urandom of="$M1/lun" bs=64k count=4 conv=notrunc,fsync status=none
[[ $(lun_hash "$LUN") == "$lun_before" ]] && ok "LUN unchanged" || bad "the LUN changed"
as_user_denied "default mount: read the LUN" dd if="$M1/lun" of=/dev/null bs=1M count=1 status=none
job_file deploy "source = src
target = tgt"
as_user_denied "default mount: cp a job file into control/" \
    cp "$SCRATCH/jobs/deploy.job" "$M1/control/deploy.job"
[[ -z $(ls -A "$M1/control") ]] && ok "no job in control/" ||
    bad "control/ holds $(ls -A "$M1/control")"
sleep 1     # let a job that started anyway write
[[ $(lun_hash "$TGT") == "$tgt_before" ]] && ok "job target unchanged" || bad "the job target changed"
as_user_denied "default mount: rm of a root-owned NFS file" rm -f "$M1/d/pub.raw"
[[ -e $DIR/pub.raw ]] && ok "NFS file still there" || bad "the NFS file was removed"
fuse_umount "$M1"

# ---- 2. allow_other,gid=G,umask=007 ---------------------------------------
M2=$SCRATCH/m2
mount_o "$M2" "allow_other,gid=$GID_G,umask=007"
shows "$M2" 770 root "$G"
shows "$M2/lun" 660 root "$G"
shows "$M2/control" 770 root "$G"
shows "$M2/d" 755 root root
shows "$M2/d/pub.raw" 644 root root
shows "$M2/d/secret.raw" 600 root root

# The LUN: the group may write it.
head -c $((2 * MiB)) /dev/urandom > "$SCRATCH/patch"
chmod 0644 "$SCRATCH/patch"
if as_user dd if="$SCRATCH/patch" of="$M2/lun" bs=1M seek=3 conv=notrunc,fsync status=none; then
    cp "$SCRATCH/lun.orig" "$SCRATCH/lun.want"
    dd if="$SCRATCH/patch" of="$SCRATCH/lun.want" bs=1M seek=3 conv=notrunc status=none
    out=$(qemu-img compare -f raw -F raw "$SCRATCH/lun.want" "$LUN" 2>&1) &&
        ok "dd as $U wrote the LUN" || bad "LUN after dd as $U: $out"
else
    bad "dd onto the LUN as $U (group $G, umask 007) failed"
fi

# A job the user may run.
if user_cp_job "$M2" deploy; then
    if as_user "$IMGFS" wait "$M2/control/deploy.job" >/dev/null; then
        out=$(qemu-img compare -f raw -F raw "$SCRATCH/src.raw" "$TGT" 2>&1) &&
            ok "job as $U copied src to tgt" || bad "tgt after the job: $out"
    else
        bad "job as $U failed: $(cat "$M2/control/deploy.status")"
    fi
    shows "$M2/control/deploy.job" 660 root "$G"
    shows "$M2/control/deploy.status" 440 root "$G"
else
    bad "cp of a job file as $U (group $G, umask 007) failed"
fi

# The NFS directory: the server's owners and modes decide.
out=$(as_user cmp "$SCRATCH/pub.raw" "$M2/d/pub.raw" 2>&1) &&
    ok "$U reads a 0644 NFS file" || bad "reading d/pub.raw as $U: $out"
as_user_denied "read a root 0600 NFS file" dd if="$M2/d/secret.raw" of=/dev/null bs=1M count=1 status=none
as_user_denied "dd onto a root 0644 NFS file" \
    dd if=/dev/zero of="$M2/d/pub.raw" bs=64k count=1 conv=notrunc status=none
as_user_denied "rm of a root-owned NFS file in a 0755 root directory" rm -f "$M2/d/pub.raw"
as_user_denied "create a file in a 0755 root directory" cp "$SCRATCH/patch" "$M2/d/new.raw"

# Jobs naming NFS files the user may not write, or read.
refused_job() {         # NAME DESC TEXT EXPECTED-ERROR
    job_file "$1" "$3"
    if user_cp_job "$M2" "$1" 2>"$SCRATCH/cp.err"; then
        bad "$2: the job started"
        as_user "$IMGFS" wait "$M2/control/$1.job" >/dev/null 2>&1 || true
        return
    fi
    grep -q "Permission denied" "$SCRATCH/cp.err" ||
        bad "$2: cp failed, but not with EACCES: $(cat "$SCRATCH/cp.err")"
    local err
    err=$(job_field "$M2" "$1" error 2>&1 || true)
    [[ $err == "$4" ]] && ok "$2: status says '$err'" ||
        bad "$2: status error '$err', expected '$4'"
}
refused_job w "job writing a root 0644 NFS file" "source = src
target = d/pub.raw
overwrite = yes" "permission denied: uid $UID_U may not write target 'd/pub.raw'"
refused_job c "job creating a file in a 0755 root directory" "source = src
target = d/made.raw" "permission denied: uid $UID_U may not write target 'd/made.raw'"
refused_job r "job reading a root 0600 NFS file" "source = d/secret.raw
target = lun" "permission denied: uid $UID_U may not read source 'd/secret.raw'"
sleep 1     # let a job that started anyway write
[[ $(sha256sum < "$DIR/pub.raw") == "$pub_hash" ]] && ok "d/pub.raw unchanged" || bad "d/pub.raw changed"
[[ $(sha256sum < "$DIR/secret.raw") == "$secret_hash" ]] || bad "d/secret.raw changed"
[[ ! -e $DIR/made.raw ]] && ok "d/made.raw not created" || bad "a refused job created d/made.raw"

# What the user creates in an NFS directory is its own on the server.
if as_user cp "$SCRATCH/patch" "$M2/d/open/mine.raw"; then
    got=$(stat -c '%U %G' "$DIR/open/mine.raw")
    [[ $got == "$U $U" ]] && ok "a file $U created is $got on the server" ||
        bad "a file $U created is $got on the server"
    check_cmp "$SCRATCH/patch" "$DIR/open/mine.raw"
else
    bad "cp into a 0777 NFS directory as $U failed"
fi
if as_user mkdir -m 0750 "$M2/d/open/sub"; then
    got=$(stat -c '%a %U %G' "$DIR/open/sub")
    [[ $got == "750 $U $U" ]] && ok "a directory $U made is $got on the server" ||
        bad "a directory $U made is $got on the server, expected 750 $U $U"
else
    bad "mkdir in a 0777 NFS directory as $U failed"
fi
job_file own "source = src
target = d/open/mine.raw
overwrite = yes"
if user_cp_job "$M2" own && as_user "$IMGFS" wait "$M2/control/own.job" >/dev/null; then
    check_cmp "$SCRATCH/src.raw" "$DIR/open/mine.raw"
    ok "job as $U overwrote its own NFS file"
else
    bad "job as $U onto its own NFS file: $(cat "$M2/control/own.status" 2>&1)"
fi
fuse_umount "$M2"

# ---- 3. umask=022: others may look, only the owner may change -------------
M4=$SCRATCH/m4
mount_o "$M4" "allow_other,umask=022"
shows "$M4/control" 755 root root
shows "$M4/lun" 644 root root
lun_before=$(lun_hash "$LUN")
out=$(as_user cmp -n $((8 * MiB)) "$M4/lun" "$SCRATCH/lun.want" 2>&1) &&
    ok "$U reads the LUN" || bad "reading the LUN as $U: $out"
as_user_denied "umask=022: dd onto the LUN" \
    dd if=/dev/zero of="$M4/lun" bs=64k count=1 conv=notrunc status=none
job_file again "source = src
target = lun"
as_user_denied "umask=022: cp a job file into a 0755 control/" \
    cp "$SCRATCH/jobs/again.job" "$M4/control/again.job"
[[ -z $(ls -A "$M4/control") ]] && ok "no job in control/" ||
    bad "control/ holds $(ls -A "$M4/control")"
sleep 1
[[ $(lun_hash "$LUN") == "$lun_before" ]] && ok "LUN unchanged" || bad "the LUN changed"
fuse_umount "$M4"

# allow_root alone also brings default_permissions.
M5=$SCRATCH/m5
mount_o "$M5" allow_root
grep -q "^imgfs $M5 .*default_permissions" /proc/mounts ||
    bad "allow_root mount without default_permissions: $(grep " $M5 " /proc/mounts)"
fuse_umount "$M5"

# ---- 4. bad values ----------------------------------------------------------
mkdir -p "$SCRATCH/m3"
for o in uid=abc gid=-1 uid=4294967295 uid= umask=0778 umask=12345 umask=-7; do
    expect_fail "-o $o" "$IMGFS" mount -o "$o" "$SCRATCH/m3" "x=zero:1M"
done
mountpoint -q "$SCRATCH/m3" && bad "a mount with a bad option happened"
"$IMGFS" mount --help | grep -q default_permissions ||
    bad "imgfs mount --help does not say what allow_other implies"

(( FAILS == 0 )) || fail "$FAILS checks failed"
log "all checks passed"
