#!/bin/sh
# Builds cma.ko for DKMS (dkms.conf's MAKE): `dkms-make.sh KDIR KVER`, in the
# source copy DKMS made. A Rust module must be built with the very rustc the
# kernel was built with, bindgen, and the kernel's compiler (LLVM for a
# clang-built kernel, GCC otherwise, as Debian and Ubuntu build theirs; bindgen
# uses libclang either way); this finds them
# and fails with a clear message when the kernel or the machine lacks them.
# KRUSTC=, BINDGEN= and LLVM= override what it finds.
set -eu
kdir=$1 kver=$2
die() { echo "cma (dkms): $*" >&2; exit 1; }
config=$kdir/.config
[ -r "$config" ] || die "no kernel build tree for $kver at $kdir (install its headers package)"
grep -q '^CONFIG_RUST=y' "$config" ||
    die "kernel $kver has no CONFIG_RUST=y: cma is a Rust module and needs a Rust-enabled kernel"
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$config")
found=""
for r in ${KRUSTC:-} /usr/bin/rustc /usr/local/bin/rustc $(command -v rustc 2>/dev/null || true); do
    [ -x "$r" ] || continue
    if [ "$($r --version 2>/dev/null)" = "$want" ]; then found=$r; break; fi
done
[ -n "$found" ] ||
    die "kernel $kver was built with '$want'; no such rustc here (tried ${KRUSTC:-} /usr/bin/rustc, PATH). Install it or set KRUSTC="
bindgen=${BINDGEN:-}
if [ -z "$bindgen" ]; then
    for b in $(command -v bindgen 2>/dev/null || true) "${XDG_CACHE_HOME:-$HOME/.cache}/cma/tools/bin/bindgen" \
             /root/.cache/cma/tools/bin/bindgen /usr/local/bin/bindgen; do
        [ -x "$b" ] && { bindgen=$b; break; }
    done
fi
[ -n "$bindgen" ] || die "bindgen not found (cargo install bindgen-cli, or set BINDGEN=)"
llvm=${LLVM:-}
if [ -z "$llvm" ] && grep -q '^CONFIG_CC_IS_CLANG=y' "$config"; then
    v=$(sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)$/\1/p' "$config")
    major=$((v / 10000))
    if command -v "clang-$major" >/dev/null 2>&1; then llvm=-$major; else llvm=1; fi
fi
if [ -z "$llvm" ]; then
    grep -q '^CONFIG_CC_IS_GCC=y' "$config" || die "kernel $kver was built with neither clang nor GCC (set LLVM=)"
    command -v gcc >/dev/null 2>&1 || die "kernel $kver was built with GCC; install gcc"
fi
# bindgen evaluates the header's _IOR() numbers with libclang: the kernel's
# LLVM's for a clang-built kernel, the newest installed for a GCC-built one.
if [ -z "${LIBCLANG_PATH:-}" ]; then
    if [ -n "${major:-}" ] && [ -d "/usr/lib/llvm-$major/lib" ]; then
        export LIBCLANG_PATH=/usr/lib/llvm-$major/lib
    else
        d=$(ls -d /usr/lib/llvm-*/lib 2>/dev/null | sort -V | tail -n 1)
        [ -n "$d" ] && export LIBCLANG_PATH=$d
    fi
fi
echo "cma (dkms): building for $kver with $found ($want), $bindgen, ${llvm:+LLVM=$llvm}${llvm:-GCC}${LIBCLANG_PATH:+, libclang from $LIBCLANG_PATH}"
exec make -C "$kdir" M="$PWD" ${llvm:+LLVM="$llvm"} RUSTC="$found" BINDGEN="$bindgen" modules
