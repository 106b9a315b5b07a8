#!/usr/bin/env bash
# Runs inside the test VM, as root, from the repository root, with cma.ko
# loaded (tests/guest.sh calls it): `make install` into the guest's own /usr,
# /lib and /etc (writable overlays), then what an administrator would do:
# modprobe by name, the node with the udev rule's group and mode, a member of
# the group copies and a non-member cannot open it, modprobe -r, and
# `make uninstall` leaving none of the files behind. (DKMS is tested on the
# host: tests/dkms.sh.) KTAP on stdout.
set -u
flavour=${CMA_FLAVOUR:-normal}
ko=${CMA_KO:?}
prefix=/usr/local
manifest=$prefix/share/cma/installed-files
kver=$(uname -r)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/ktap.sh
cma_gid() { getent group cma | cut -d: -f3; }
as_member() { setpriv --reuid=65534 --regid=65534 --groups="$(cma_gid)" "$@"; }
as_outsider() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
node_is() { # group mode: waits for udev to apply the rule
    for _ in $(seq 100); do
        [ "$(stat -c '%G %a' /dev/cma 2>/dev/null)" = "$1 $2" ] && return 0
        sleep 0.1
    done
    stat -c 'found: %G %a' /dev/cma
    return 1
}
outsider_refused() {
    ! as_outsider $prefix/bin/cma info && as_outsider $prefix/bin/cma info 2>&1 | grep -qi 'permission denied'
}
left_behind() {
    local f bad=0
    while read -r f; do [ -e "$f" ] || [ -L "$f" ] && { echo "left behind: $f"; bad=1; }; done < "$tmp/manifest"
    return $bad
}
echo "TAP version 13"
# virtme-ng links /lib/modules/<release> to a read-only tree of its own; a
# real machine has a directory there, which the test gives the guest too.
link=$(readlink "/lib/modules/$kver" 2>/dev/null || true)
if [ -n "$link" ]; then
    rm "/lib/modules/$kver" && mkdir -p "/lib/modules/$kver"
fi
restore_modules_dir() {
    [ -n "$link" ] && rm -rf "/lib/modules/$kver" && ln -s "$link" "/lib/modules/$kver"
}
check make_install make -s install KERNEL="${CMA_KERNEL:-6.12}" FLAVOUR="$flavour" PREFIX=$prefix
cp "$manifest" "$tmp/manifest" 2>/dev/null
echo "# installed: $(tr '\n' ' ' < "$tmp/manifest" 2>/dev/null)"
check module_in_updates test -f "/lib/modules/$kver/updates/cma.ko"
check depmod_finds_it sh -c "modinfo -n cma | grep -q /updates/cma.ko"
# The module the runner loaded makes way for the installed one, by name.
rmmod cma
udevadm control --reload 2>/dev/null
check modprobe_by_name modprobe cma
check node_group_cma_mode_660 node_is cma 660
check installed_cli_runs $prefix/bin/cma info
check group_member_copies as_member $prefix/bin/cma demo
check outsider_cannot_open outsider_refused
check man_pages sh -c "man -M $prefix/share/man -w 1 cma && man -M $prefix/share/man -w 4 cma"
check pkg_config sh -c "PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs cma \
    | grep -q -- '-I$prefix/include/cma'"
check modprobe_r modprobe -r cma
check make_uninstall make -s uninstall KERNEL="${CMA_KERNEL:-6.12}" FLAVOUR="$flavour" PREFIX=$prefix
check nothing_left_behind left_behind
check depmod_forgot_it sh -c "! modinfo -n cma 2>/dev/null | grep -q /updates/"
restore_modules_dir
# The runner's module again, for the checks that follow.
insmod "$ko"
echo "1..$n"
totals
