#!/usr/bin/env bash
# `make install` and `make uninstall` (the Makefile passes the variables):
#
#   scripts/install.sh install     copy what `make` built into DESTDIR/PREFIX,
#                                  list every file in the manifest, depmod
#   scripts/install.sh uninstall   remove every file the manifest lists, depmod
#
# Variables: DESTDIR (staging root, default none), PREFIX (/usr/local),
# SYSCONFDIR (/etc), UDEVRULESDIR (SYSCONFDIR/udev/rules.d), KDIR (the kernel
# build tree the module was built against), KO (the module), KVER (that
# kernel's release), TOP (the source tree). Nothing is built here: run `make`,
# `make userspace` first (`make install` does).
set -euo pipefail
mode=${1:?install or uninstall}
: "${TOP:?}" "${KDIR:?}" "${KO:?}"
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UDEVRULESDIR=${UDEVRULESDIR:-$SYSCONFDIR/udev/rules.d}
KVER=${KVER:-$(cat "$KDIR/include/config/kernel.release")}
manifest=$DESTDIR$PREFIX/share/cma/installed-files
say() { printf '[install] %s\n' "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

depmod_now() {
    command -v depmod >/dev/null || { say "no depmod; run it for $KVER yourself"; return 0; }
    if [ -n "$DESTDIR" ]; then depmod -b "$DESTDIR" "$KVER"; else depmod "$KVER"; fi
}

case "$mode" in
install)
    release=$TOP/userspace/target/release
    for f in "$KO" "$release/cma" "$TOP/out/lib/libcma.so.0" "$TOP/out/lib/libcma-preload.so" \
             "$TOP/out/man/cma.1" "$TOP/out/man/cma.4"; do
        [ -e "$f" ] || die "$f is not built (make; make userspace; make man)"
    done
    files=()
    put() { # mode source destination
        install -D -m "$1" "$2" "$DESTDIR$3"
        files+=("$3")
    }
    # The module, by Kbuild's own modules_install (into .../updates), which
    # runs depmod too.
    mkdir -p "$DESTDIR/lib/modules/$KVER/updates"
    make -s -C "$KDIR" M="$(dirname "$KO")" INSTALL_MOD_PATH="${DESTDIR:-/}" \
        INSTALL_MOD_DIR=updates modules_install >/dev/null
    files+=("/lib/modules/$KVER/updates/cma.ko")
    [ -e "$DESTDIR/lib/modules/$KVER/updates/cma.ko" ] || die "modules_install put no cma.ko"
    put 0755 "$release/cma" "$PREFIX/bin/cma"
    put 0644 "$TOP/include/uapi/cma.h" "$PREFIX/include/cma/uapi/cma.h"
    put 0644 "$TOP/include/libcma.h" "$PREFIX/include/cma/libcma.h"
    put 0755 "$TOP/out/lib/libcma.so.0" "$PREFIX/lib/libcma.so.0"
    ln -sf libcma.so.0 "$DESTDIR$PREFIX/lib/libcma.so"
    files+=("$PREFIX/lib/libcma.so")
    put 0755 "$TOP/out/lib/libcma-preload.so" "$PREFIX/lib/libcma-preload.so"
    mkdir -p "$DESTDIR$PREFIX/lib/pkgconfig"
    sed -e "s|@PREFIX@|$PREFIX|; s|@LIBDIR@|$PREFIX/lib|; s|@INCLUDEDIR@|$PREFIX/include/cma|; s|@VERSION@|$(cat "$TOP/VERSION")|" \
        "$TOP/scripts/cma.pc.in" > "$DESTDIR$PREFIX/lib/pkgconfig/cma.pc"
    files+=("$PREFIX/lib/pkgconfig/cma.pc")
    put 0644 "$TOP/out/man/cma.1" "$PREFIX/share/man/man1/cma.1"
    put 0644 "$TOP/out/man/cma.4" "$PREFIX/share/man/man4/cma.4"
    put 0644 "$TOP/install/60-cma.rules" "$UDEVRULESDIR/60-cma.rules"
    put 0644 "$TOP/install/modules-load.conf" "$SYSCONFDIR/modules-load.d/cma.conf"
    put 0644 "$TOP/install/modprobe.conf" "$SYSCONFDIR/modprobe.d/cma.conf"
    files+=("$PREFIX/share/cma/installed-files")
    mkdir -p "$(dirname "$manifest")"
    printf '%s\n' "${files[@]}" > "$manifest"
    # The group the udev rule names, on a live system.
    if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && ! getent group cma >/dev/null; then
        groupadd --system cma && say "created the system group cma (add users to it)"
    fi
    depmod_now
    say "installed ${#files[@]} files (list: $manifest)"
    ;;
uninstall)
    [ -r "$manifest" ] || die "nothing installed under $DESTDIR$PREFIX (no $manifest)"
    mapfile -t files < "$manifest"
    for f in "${files[@]}"; do
        rm -f "$DESTDIR$f"
        # Directories of ours under PREFIX that are left empty go too
        # (system directories such as /etc/modprobe.d stay).
        case "$f" in
        "$PREFIX"/include/cma/* | "$PREFIX"/share/cma/*)
            d=$(dirname "$DESTDIR$f")
            while [ "$d" != "$DESTDIR$PREFIX" ] && rmdir "$d" 2>/dev/null; do d=$(dirname "$d"); done ;;
        esac
    done
    depmod_now
    say "removed ${#files[@]} files"
    ;;
*) die "usage: $0 install|uninstall" ;;
esac
