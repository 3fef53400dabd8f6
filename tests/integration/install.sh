#!/bin/bash
# install.sh — what `meson install` and the Debian package put on a
# machine, and that it works there.
#
# 1. `meson install --destdir` of the build: the binary, the deploy and
#    backup scripts, the fuse.imgfs mount helper, the systemd template
#    unit, bash completion and the man pages are in place; every man page
#    renders (man -l), is clean for mandoc -Tlint (warnings and errors) and
#    has a NAME line lexgrog reads; every option that a --help lists is in
#    its man page; every --help gives the exit status; --version is the
#    version of meson.build and debian/changelog; completion completes.
# 2. As root: the build installed into the system (with the mount helper
#    linked into /sbin when the prefix is not /usr, as README says), then
#    `mount -t fuse.imgfs` with a NAME=URL source, the documented fstab
#    line with a configuration file (mount --fstab), and the helper given
#    only the configuration file as the systemd unit runs it: each mount
#    reads an NFS image equal to its source (cmp) and unmounts; then
#    `systemd-analyze verify` of an instance of the installed unit, and the
#    install is removed again (ninja uninstall).
# 3. As root: dpkg-buildpackage -us -uc -b from a copy of the source tree
#    (DEB_BUILD_OPTIONS=nocheck), lintian without errors, the package
#    installs, `imgfs --version` and `man imgfs` work, mount -t fuse.imgfs
#    through the packaged helper reads the image, and the package removes
#    cleanly (no file of it left).
# Parts 2 and 3 are skipped (with a log line) when not root; the test then
# ends with status 77 after part 1.
. "$(dirname "$0")/lib.sh"

SRC=${SOURCE_DIR:?}
BUILD=${BUILD_DIR:?}
[[ -x $IMGFS ]] || fail "no imgfs binary ($IMGFS)"

version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$SRC/meson.build" | head -n 1)
[[ -n $version ]] || fail "no version in meson.build"

# check_version BINARY [plain]: its --version and -V print "imgfs VERSION"
# and exit 0; with the git description when built from a checkout, never
# with plain (a build from a copy of the tree).
check_version() {
    local out opt re="^imgfs ${version//./\\.}"
    [[ ${2:-} == plain ]] || re+='( \(git [^)]+\))?'
    for opt in --version -V; do
        out=$("$1" "$opt") || fail "$1 $opt failed"
        [[ $out =~ $re$ ]] || fail "$1 $opt printed '$out', expected 'imgfs $version'${2:+ alone}"
    done
    log "ok: $1 --version: $out"
}

# check_man PAGE: renders, lint-clean, NAME line readable.
check_man() {
    local page=$1 out
    out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) ||
        fail "man -l $page failed: $out"
    [[ -z $out ]] || fail "man -l $page warns: $out"
    out=$(mandoc -Tlint -Wwarning "$page" 2>&1) ||
        fail "mandoc -Tlint $page: $out"
    lexgrog "$page" >/dev/null || fail "lexgrog finds no NAME line in $page"
    MANWIDTH=80 man -l "$page" 2>/dev/null | grep -q '^EXIT STATUS\|^SEE ALSO' ||
        fail "$page renders without its sections"
}

# check_help_in_man PAGE HELP-COMMAND...: every --option and -x option that
# the help text lists at the start of a line, and every mount option it
# lists (a word indented by 5 spaces), is in PAGE's text: an option
# without its man page entry fails the test.
check_help_in_man() {
    local page=$1 text opt missing=()
    shift
    text=$(MANWIDTH=200 man -l "$page" 2>/dev/null)
    while read -r opt; do
        grep -qe "$opt" <<< "$text" || missing+=("$opt")
    done < <("$@" 2>/dev/null |
             grep -oE -- '^ +-[-a-zA-Z]+(, --[-a-z]+)?|^     [a-z_]+=?' |
             grep -v '^ *and$' | tr ',' '\n' | tr -d ' ' | sort -u)
    if (( ${#missing[@]} > 0 )); then
        fail "$(basename "$page") lacks options of '$*': ${missing[*]}"
    fi
}

# ---------------------------------------------------------------- 1. DESTDIR
dest=$SCRATCH/dest
out=$(meson install -C "$BUILD" --destdir "$dest" --no-rebuild 2>&1) ||
    fail "meson install --destdir failed: $out"
prefix=$(meson introspect --buildoptions "$BUILD" |
         python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
root=$dest$prefix
for f in bin/imgfs bin/imgfs-deploy bin/imgfs-backup sbin/mount.fuse.imgfs; do
    [[ -x $root/$f ]] || fail "meson install did not install $prefix/$f (executable)"
done
unit=$root/lib/systemd/system/imgfs-mount@.service
[[ -f $unit ]] || fail "meson install did not install the imgfs-mount@ unit"
completion=$root/share/bash-completion/completions/imgfs
[[ -f $completion ]] || fail "meson install did not install bash completion"
pages=(man1/imgfs.1 man1/imgfs-copy.1 man1/imgfs-mount.1 man1/imgfs-wait.1
       man1/imgfs-deploy.1 man1/imgfs-backup.1 man5/imgfs-job.5
       man8/mount.fuse.imgfs.8)
for p in "${pages[@]}"; do
    [[ -f $root/share/man/$p ]] || fail "meson install did not install $p"
    check_man "$root/share/man/$p"
done
log "ok: meson install --destdir: binary, scripts, helper, unit, completion, ${#pages[@]} man pages (lint-clean)"

check_version "$root/bin/imgfs"
changelog_version=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
[[ $changelog_version == "$version" || $changelog_version == "$version"-* ]] ||
    fail "debian/changelog is at $changelog_version, meson.build at $version"

for cmd in "" copy mount wait; do
    out=$("$root/bin/imgfs" $cmd --help) || fail "imgfs $cmd --help failed"
    grep -q '^Exit status: ' <<< "$out" || fail "imgfs $cmd --help lists no exit status"
done
check_help_in_man "$root/share/man/man1/imgfs-copy.1" "$root/bin/imgfs" copy --help
check_help_in_man "$root/share/man/man1/imgfs-mount.1" "$root/bin/imgfs" mount --help
check_help_in_man "$root/share/man/man1/imgfs.1" "$root/bin/imgfs" --help
check_help_in_man "$root/share/man/man1/imgfs-deploy.1" "$root/bin/imgfs-deploy" --help
check_help_in_man "$root/share/man/man1/imgfs-backup.1" "$root/bin/imgfs-backup" --help
check_help_in_man "$root/share/man/man1/imgfs-wait.1" "$root/bin/imgfs" wait --help
log "ok: every --help gives the exit status; the man pages name every option of --help"

# Completion: the command, then an option of imgfs copy (from its --help).
out=$(PATH=$root/bin:$PATH bash -c '
    . /usr/share/bash-completion/bash_completion && . "$1" || exit 1
    COMP_WORDS=(imgfs co); COMP_CWORD=1; COMP_LINE="imgfs co"; COMP_POINT=8
    _imgfs; echo "${COMPREPLY[*]}"
    COMP_WORDS=(imgfs copy --ver); COMP_CWORD=2; COMP_LINE="imgfs copy --ver"; COMP_POINT=16
    _imgfs; echo "${COMPREPLY[*]}"' bash "$completion" 2>&1) || fail "bash completion: $out"
[[ $out == $'copy\n--verify' ]] || fail "bash completion completed '$out', expected copy and --verify"
log "ok: bash completion"

if (( EUID != 0 )); then
    log "not root: the system install, mount -t and the package are not tested"
    exit 77
fi
for tool in dpkg-buildpackage lintian findmnt systemd-analyze; do
    command -v "$tool" >/dev/null || fail "$tool missing (scripts/install-deps)"
done
need_servers

# An NFS image the mounts show, and a mount point.
img=$SCRATCH/image.raw
head -c 3M /dev/urandom > "$img"
truncate -s 8M "$img"
name=$(nfs_name image.raw)
nfs_put "$img" "$name"
url=$(nfs_url "$name")
mnt=$SCRATCH/mnt
mkdir "$mnt"
on_exit umount_if_mounted "$mnt"
umount_if_mounted() { mountpoint -q "$1" && umount "$1"; true; }

# mounted_ok HOW: $mnt is an imgfs mount whose image 'img' equals $img;
# unmount it and check it is gone.
mounted_ok() {
    local fstype
    fstype=$(findmnt -n -o FSTYPE --mountpoint "$mnt") || fail "$1: nothing mounted on $mnt"
    [[ $fstype == fuse.imgfs ]] || fail "$1: $mnt is $fstype, not fuse.imgfs"
    check_cmp "$mnt/img" "$img"
    umount "$mnt" || fail "$1: umount $mnt failed"
    ! mountpoint -q "$mnt" || fail "$1: $mnt still mounted after umount"
    log "ok: $1: mounted as fuse.imgfs, image read equal, unmounted"
}

# A configuration file, as README and mount.fuse.imgfs(8) describe it.
conf=$SCRATCH/lab.conf
cat > "$conf" <<EOF
# test mount
mountpoint $mnt
options    nostate
image      img=$url
env        IMGFS_REQUEST_TIMEOUT=30
EOF
chmod 644 "$conf"
fstab=$SCRATCH/fstab
echo "$conf  $mnt  fuse.imgfs  _netdev,nofail,ro  0  0" > "$fstab"

# mount_all HOW SBIN: the three ways of mounting, SBIN the helper's dir.
mount_all() {
    local out
    out=$(mount -t fuse.imgfs -o nostate "img=$url" "$mnt" 2>&1) ||
        fail "$1: mount -t fuse.imgfs img=URL failed: $out"
    mounted_ok "$1: mount -t fuse.imgfs img=URL $mnt"
    out=$(mount --fstab "$fstab" "$mnt" 2>&1) || fail "$1: mount of the fstab line failed: $out"
    mounted_ok "$1: fstab line '$(cat "$fstab")'"
    out=$("$2/mount.fuse.imgfs" "$conf" 2>&1) ||
        fail "$1: mount.fuse.imgfs CONFIG (as the systemd unit runs it) failed: $out"
    mounted_ok "$1: mount.fuse.imgfs CONFIG"
}

# ---------------------------------------------------------- 2. system install
[[ ! -e /sbin/mount.fuse.imgfs && ! -e $prefix/bin/imgfs ]] ||
    fail "imgfs is installed on this machine already (/sbin/mount.fuse.imgfs or $prefix/bin/imgfs): remove it first"
system_installed=0
uninstall_if_installed() {
    (( system_installed )) && ninja -C "$BUILD" uninstall >/dev/null 2>&1
    system_installed=0
}
on_exit uninstall_if_installed
system_installed=1
out=$(meson install -C "$BUILD" --no-rebuild 2>&1) || fail "meson install failed: $out"
if [[ ! -e /sbin/mount.fuse.imgfs ]]; then
    ln -s "$prefix/sbin/mount.fuse.imgfs" /sbin/mount.fuse.imgfs
    on_exit rm -f /sbin/mount.fuse.imgfs
fi
check_version "$prefix/bin/imgfs"
mount_all "meson install" /sbin
units=$SCRATCH/units
mkdir "$units"
cp "$prefix/lib/systemd/system/imgfs-mount@.service" "$units/imgfs-mount@lab.service"
out=$(systemd-analyze verify --man=no "$units/imgfs-mount@lab.service" 2>&1) ||
    fail "systemd-analyze verify imgfs-mount@lab.service: $out"
[[ -z $out ]] || fail "systemd-analyze verify imgfs-mount@lab.service warns: $out"
log "ok: systemd-analyze verify imgfs-mount@lab.service"
out=$(ninja -C "$BUILD" uninstall 2>&1) || fail "ninja uninstall failed: $out"
system_installed=0
rm -f /sbin/mount.fuse.imgfs
[[ ! -e $prefix/bin/imgfs ]] || fail "ninja uninstall left $prefix/bin/imgfs"

# ------------------------------------------------------------- 3. the package
tree=$SCRATCH/pkg/imgfs-$version
mkdir -p "$tree"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$SRC" ls-files -z --cached --others --exclude-standard |
        (cd "$SRC" && tar --null -T - -cf -) | tar -xf - -C "$tree"
else
    tar -C "$SRC" --exclude='./build*' -cf - . | tar -xf - -C "$tree"
fi
log "building the package (dpkg-buildpackage -us -uc -b)"
(cd "$tree" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
    dpkg-buildpackage -us -uc -b > "$SCRATCH/pkg/build.log" 2>&1) ||
    fail "dpkg-buildpackage failed: $(tail -n 30 "$SCRATCH/pkg/build.log")"
debs=("$SCRATCH"/pkg/imgfs_"$version"*_*.deb)
[[ -f ${debs[0]} && ${#debs[@]} == 1 ]] || fail "no single imgfs_*.deb: ${debs[*]}"
deb=${debs[0]}
out=$(lintian --fail-on error,warning "$deb" 2>&1) ||
    fail "lintian finds errors in $(basename "$deb"): $out"
out=$(grep -v 'running with root privileges' <<< "$out" || true)
log "ok: $(basename "$deb") built; lintian: ${out:-clean}"

purge_if_installed() {
    [[ $(dpkg-query -W -f '${db:Status-Status}' imgfs 2>/dev/null) == installed ]] &&
        dpkg --purge imgfs >/dev/null 2>&1
    true
}
on_exit purge_if_installed
out=$(dpkg -i "$deb" 2>&1) || fail "dpkg -i failed: $out"
check_version /usr/bin/imgfs plain
out=$(MANWIDTH=80 MANPAGER=cat man imgfs 2>&1) || fail "man imgfs: $out"
grep -q 'imgfs - copy and mount' <<< "$out" || fail "man imgfs shows no NAME line"
for p in imgfs-copy imgfs-mount imgfs-wait imgfs-deploy imgfs-backup \
         mount.fuse.imgfs "5 imgfs-job"; do
    man -w $p >/dev/null || fail "man -w $p: not installed"
done
mount_all "Debian package" /usr/sbin
files=$(dpkg-query -L imgfs | while read -r f; do
             if [[ -f $f || -L $f ]]; then echo "$f"; fi
         done)
[[ -n $files ]] || fail "dpkg -L imgfs lists no file"
out=$(dpkg --purge imgfs 2>&1) || fail "dpkg --purge imgfs failed: $out"
left=$(while read -r f; do
            if [[ -e $f || -L $f ]]; then echo "$f"; fi
        done <<< "$files")
[[ -z $left ]] || fail "files left after dpkg --purge: $left"
! dpkg-query -W imgfs >/dev/null 2>&1 ||
    [[ $(dpkg-query -W -f '${db:Status-Status}' imgfs) == not-installed ]] ||
    fail "imgfs still known to dpkg after --purge"
log "ok: the package installs, works and removes cleanly"
