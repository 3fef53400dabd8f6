#!/bin/bash
# security-names.sh — names and secrets, against the real servers:
#  - scripts/imgfs-backup and imgfs-deploy refuse a NAME, --order or URL
#    that would change the job file or the target path ('#' cut the name,
#    a newline added job keys, '..' left the directory): exit 2, one line
#    naming the argument and the character, no mount, nothing written
#    (the NFS directory listed, the LUN hashed, before and after);
#  - job files in the mount: source/target with '..' components or
#    control characters and job names with control characters are refused
#    (cp fails, nothing created, nothing started);
#  - the CHAP secret file is refused when group or others may reach it or
#    when it is not a regular file, accepted at 0600/0400;
#  - every file imgfs creates is mode 0600 (imgfs copy --create raw/qcow2
#    on NFS and local, imgfs-backup's output, a mount job's NFS target).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fuse-helpers.sh"
need_servers
: "${IMGFS:?set IMGFS to the imgfs binary}"
: "${SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
DEPLOY=$SOURCE_DIR/scripts/imgfs-deploy
BACKUP=$SOURCE_DIR/scripts/imgfs-backup
export IMGFS TMPDIR=$SCRATCH
unset IMGFS_ISCSI_PASSWORD IMGFS_ISCSI_SECRET_FILE
# A permissive umask: a file created without an explicit 0600 shows it.
umask 022

MiB=1048576

# A directory of our own in the export, made through NFS (a mount's mkdir),
# so that its listing is ours alone while other tests use the export.
SUB=$(nfs_name dir)
MNT=$SCRATCH/mnt
fuse_mount "$MNT" "e=$(nfs_url "")"
mkdir "$MNT/e/$SUB" || fail "mkdir $SUB through the mount"
fuse_umount "$MNT"
SUB_URL=$(nfs_url "$SUB/")
ESCAPE=$(nfs_name escape.raw)      # a file a '..' would create beside SUB

# State that must not change when an argument is refused.
listing() {
    (cd "$(nfs_path "$SUB")" && find . -printf '%p %s\n' | LC_ALL=C sort)
    [[ ! -e $(nfs_path "$ESCAPE") ]] || echo "ESCAPED: $ESCAPE"
}
leftovers() {
    ls -A "$SCRATCH" | grep -E '^(imgfs-backup|imgfs-deploy|backup\.job|deploy\.job)\.' || true
    grep -F "$SCRATCH/imgfs-" /proc/mounts || true
}

new_lun 8M 512 thin
LUN=$LUN_URL
head -c $((8 * MiB)) /dev/urandom > "$SCRATCH/lun.raw"
fill_lun "$LUN" "$SCRATCH/lun.raw"
# The template has zero runs, so that an injected `sparse = 0` or a skipped
# run shows on the LUN.
head -c $((2 * MiB)) /dev/urandom > "$SCRATCH/tpl.raw"
truncate -s $((8 * MiB)) "$SCRATCH/tpl.raw"
TPL=$(nfs_name tpl.raw)
nfs_put "$SCRATCH/tpl.raw" "$TPL"

lun_before=$(lun_hash "$LUN")
list_before=$(listing)

# expect_refused DESC FRAGMENT CMD...: CMD exits 2 with exactly one line on
# stderr that contains FRAGMENT; no mount, no temporary file, no change in
# our NFS directory or on the LUN.
expect_refused() {
    local desc=$1 fragment=$2 rc=0 lines
    shift 2
    "$@" >/dev/null 2>"$SCRATCH/err" || rc=$?
    (( rc == 2 )) || fail "$desc: exit status $rc, expected 2: $(head -c 2000 "$SCRATCH/err")"
    lines=$(grep -c '' "$SCRATCH/err" || true)
    (( lines == 1 )) || fail "$desc: expected one line on stderr, got $lines: $(head -c 2000 "$SCRATCH/err")"
    grep -qF -- "$fragment" "$SCRATCH/err" || fail "$desc: message does not say \"$fragment\": $(cat "$SCRATCH/err")"
    [[ -z $(leftovers) ]] || fail "$desc: something was started: $(leftovers)"
    [[ $(listing) == "$list_before" ]] || fail "$desc: the NFS directory changed: $(listing)"
    log "ok, refused ($desc): $(cat "$SCRATCH/err")"
}

log "imgfs-backup: bad NAMEs"
backup_name() { "$BACKUP" -- "$LUN" "$SUB_URL" "$1"; }
expect_refused "NAME with '#'" "NAME 'bk2.raw#junk' contains '#'" backup_name 'bk2.raw#junk'
expect_refused "NAME with '/'" "NAME 'a/b' contains '/'" backup_name 'a/b'
expect_refused "NAME '..'" "NAME '..' contains '..'" backup_name '..'
expect_refused "NAME '.'" "NAME '.' is '.'" backup_name '.'
expect_refused "NAME with '..' inside" "NAME 'x..y' contains '..'" backup_name 'x..y'
expect_refused "NAME '../escape'" "NAME '../$ESCAPE' contains '..'" backup_name "../$ESCAPE"
expect_refused "NAME with a newline and a job key" \
    "NAME \$'bk3.raw\\nsparse = 0' contains a control character: newline (0x0a)" \
    backup_name $'bk3.raw\nsparse = 0'
expect_refused "NAME with a tab" "NAME \$'a\\tb' contains a control character: tab (0x09)" \
    backup_name $'a\tb'
expect_refused "NAME with an escape" "NAME \$'a\\E[2Jb' contains a control character: 0x1b" \
    backup_name $'a\e[2Jb'
expect_refused "NAME with DEL" "contains a control character: 0x7f" backup_name $'a\x7f'
expect_refused "NAME '-rf' after --" "NAME '-rf' starts with '-'" backup_name -rf
expect_refused "NAME '-rf' as an option" "unknown option '-rf'" "$BACKUP" "$LUN" "$SUB_URL" -rf
expect_refused "empty NAME" "NAME is empty" backup_name ''
expect_refused "backup --order with a job key" \
    "--order \$'any\\nsparse = 0' is not strict, pipelined or any" \
    "$BACKUP" --order $'any\nsparse = 0' "$LUN" "$SUB_URL" ok.raw
expect_refused "backup LUN_URL with a newline" "LUN_URL \$'$LUN\\ntarget' contains a control character: newline" \
    "$BACKUP" "$LUN"$'\ntarget' "$SUB_URL" ok.raw
expect_refused "backup NFS_DIR_URL with a CR" "NFS_DIR_URL" \
    "$BACKUP" "$LUN" "$SUB_URL"$'\r' ok.raw

log "imgfs-deploy: bad --order and URLs"
expect_refused "deploy --order with a job key" \
    "--order \$'pipelined\\nsparse = 0' is not strict, pipelined or any" \
    "$DEPLOY" --order $'pipelined\nsparse = 0' "$(nfs_url "$TPL")" "$LUN"
expect_refused "deploy --order with a comment" "--order any#x is not strict, pipelined or any" \
    "$DEPLOY" --order 'any#x' "$(nfs_url "$TPL")" "$LUN"
expect_refused "deploy TEMPLATE_URL with a newline" \
    "TEMPLATE_URL \$'$(nfs_url "$TPL")\\nsparse = 0' contains a control character: newline (0x0a)" \
    "$DEPLOY" "$(nfs_url "$TPL")"$'\nsparse = 0' "$LUN"
expect_refused "deploy LUN_URL with a tab" "LUN_URL \$'$LUN\\t' contains a control character: tab (0x09)" \
    "$DEPLOY" "$(nfs_url "$TPL")" "$LUN"$'\t'
[[ $(lun_hash "$LUN") == "$lun_before" ]] || fail "a refused deploy or backup changed the LUN"

log "job files in the mount: '..' components and control characters"
fuse_mount "$MNT" "lun=$LUN" "d=$SUB_URL"
# expect_job_refused JOB FRAGMENT TEXT: cp of the job fails, its status says
# failed with FRAGMENT, nothing was written.
expect_job_refused() {
    local job=$1 fragment=$2 text=$3
    if put_job "$MNT" "$job" "$text"; then
        fail "job $job started: $(printf '%q' "$text")"
    fi
    grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "job $job: cp says: $(cat "$SCRATCH/cp.err")"
    [[ $(job_field "$MNT" "$job" state) == failed ]] || fail "job $job: state $(job_field "$MNT" "$job" state)"
    job_field "$MNT" "$job" error | grep -qF -- "$fragment" ||
        fail "job $job: error does not say \"$fragment\": $(job_field "$MNT" "$job" error)"
    (( $(job_field "$MNT" "$job" error | grep -c '') == 1 )) || fail "job $job: error is not one line"
    [[ $(listing) == "$list_before" ]] || fail "job $job: the NFS directory changed: $(listing)"
    log "ok, job refused: $(job_field "$MNT" "$job" error)"
    rm -f "$MNT/control/$job.job" "$MNT/control/$job.status"
}
expect_job_refused up "line 2: target: 'd/../$ESCAPE' is not a path without '..' components" \
"source = lun
target = d/../$ESCAPE"
expect_job_refused up2 "line 1: source: 'd/../$TPL' is not a path without '..' components" \
"source = d/../$TPL
target = lun"
expect_job_refused ctl "line 2: target: 'd/x\\x1b[2Jy' is not a path without control characters" \
"source = lun
target = d/x"$'\e'"[2Jy"
expect_job_refused tab "line 1: source: 'l\\x09un' is not a path without control characters" \
"source = l"$'\t'"un
target = d/tab.raw"
printf 'source = lun\ntarget = d/nl.raw\n' > "$SCRATCH/nl.job"
if cp "$SCRATCH/nl.job" "$MNT/control/"$'a\nb.job' 2> "$SCRATCH/cp.err"; then
    fail "a job named with a newline was created"
fi
grep -q "Invalid argument" "$SCRATCH/cp.err" || fail "cp of a job named with a newline: $(cat "$SCRATCH/cp.err")"
if cp "$SCRATCH/nl.job" "$MNT/control/"$'a\eb.job' 2> "$SCRATCH/cp.err"; then
    fail "a job named with an escape was created"
fi
[[ -z $(ls -A "$MNT/control") ]] || fail "control/ is not empty: $(ls -A "$MNT/control" | od -c | head)"
[[ $(listing) == "$list_before" ]] || fail "a refused job name changed the NFS directory: $(listing)"
fuse_umount "$MNT"
[[ $(lun_hash "$LUN") == "$lun_before" ]] || fail "a refused job changed the LUN"
log "ok, job names with control characters refused (EINVAL)"

log "CHAP secret file: only its owner may reach it"
SECRET=$SCRATCH/chap.secret
head -n 1 "$ISCSI_CHAP_SECRET_FILE" > "$SECRET"
chap_copy() { IMGFS_ISCSI_SECRET_FILE=$1 timeout 60 "$IMGFS" copy -q "$ISCSI_CHAP" null:; }
for mode in 644 640 604 620 660 602; do
    chmod "$mode" "$SECRET"
    expect_fail "secret file mode 0$mode" chap_copy "$SECRET"
    chap_copy "$SECRET" 2> "$SCRATCH/chap.err" || true
    grep -qF "IMGFS_ISCSI_SECRET_FILE $SECRET has mode 0$mode: it must not be accessible by group or others (chmod 600 $SECRET)" \
        "$SCRATCH/chap.err" || fail "mode 0$mode: message: $(cat "$SCRATCH/chap.err")"
done
mkfifo -m 600 "$SCRATCH/chap.fifo"
mkdir -m 700 "$SCRATCH/chap.dir"
for f in "$SCRATCH/chap.fifo" "$SCRATCH/chap.dir"; do
    expect_fail "secret file $(stat -c %F "$f")" chap_copy "$f"
    chap_copy "$f" 2> "$SCRATCH/chap.err" || true
    grep -qF "IMGFS_ISCSI_SECRET_FILE $f is not a regular file" "$SCRATCH/chap.err" ||
        fail "$f: message: $(cat "$SCRATCH/chap.err")"
done
for mode in 600 400 700; do
    chmod "$mode" "$SECRET"
    chap_copy "$SECRET" 2> "$SCRATCH/chap.err" || fail "secret file mode 0$mode refused: $(cat "$SCRATCH/chap.err")"
    log "ok, mode 0$mode accepted (CHAP login and copy done)"
done
# The accepted file is really what logs in: a wrong password at 0600 fails
# at the login, not at the mode check.
echo not-the-password > "$SCRATCH/wrong.secret"
chmod 600 "$SCRATCH/wrong.secret"
expect_fail "wrong password at 0600" chap_copy "$SCRATCH/wrong.secret"
chap_copy "$SCRATCH/wrong.secret" 2> "$SCRATCH/chap.err" || true
! grep -q "IMGFS_ISCSI_SECRET_FILE" "$SCRATCH/chap.err" ||
    fail "a 0600 secret file was refused: $(cat "$SCRATCH/chap.err")"

log "modes of the files imgfs creates (0600 whatever the umask)"
mode_is_600() {
    local m
    m=$(stat -c %a "$1")
    [[ $m == 600 ]] || fail "$2: created with mode $m, expected 600"
    log "ok, $2: mode 600"
}
copy_ok "copy --create raw to NFS" --create "$SCRATCH/tpl.raw" "$(nfs_url "$SUB/created.raw")"
mode_is_600 "$(nfs_path "$SUB/created.raw")" "imgfs copy --create raw on NFS"
copy_ok "copy --create qcow2 to NFS" --create --target-format qcow2 "$SCRATCH/tpl.raw" "$(nfs_url "$SUB/created.qcow2")"
mode_is_600 "$(nfs_path "$SUB/created.qcow2")" "imgfs copy --create qcow2 on NFS"
copy_ok "copy --create raw to a local file" --create "$SCRATCH/tpl.raw" "$SCRATCH/created.raw"
mode_is_600 "$SCRATCH/created.raw" "imgfs copy --create raw, local"
copy_ok "copy --create qcow2 to a local file" --create --target-format qcow2 "$SCRATCH/tpl.raw" "$SCRATCH/created.qcow2"
mode_is_600 "$SCRATCH/created.qcow2" "imgfs copy --create qcow2, local"
"$BACKUP" "$LUN" "$SUB_URL" backup.raw > /dev/null || fail "imgfs-backup failed"
check_cmp "$SCRATCH/lun.raw" "$(nfs_path "$SUB/backup.raw")"
mode_is_600 "$(nfs_path "$SUB/backup.raw")" "imgfs-backup output"
"$BACKUP" --qcow2 "$LUN" "$SUB_URL" backup.qcow2 > /dev/null || fail "imgfs-backup --qcow2 failed"
mode_is_600 "$(nfs_path "$SUB/backup.qcow2")" "imgfs-backup --qcow2 output"
fuse_mount "$MNT" "lun=$LUN" "d=$SUB_URL"
put_job "$MNT" mk "source = lun
target = d/job.raw" || fail "job refused: $(cat "$SCRATCH/cp.err")"
"$IMGFS" wait "$MNT/control/mk.job" > /dev/null || fail "job failed: $(job_field "$MNT" mk error)"
fuse_umount "$MNT"
check_cmp "$SCRATCH/lun.raw" "$(nfs_path "$SUB/job.raw")"
mode_is_600 "$(nfs_path "$SUB/job.raw")" "a mount job's target in an NFS directory"
log "ok"
