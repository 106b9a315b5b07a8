#!/usr/bin/env bash
# Build (or reuse) the Rust-enabled test kernel, cached outside the clone.
#
#   scripts/kernel.sh [--kernel 6.12|7.3] [--flavour normal|debug]   build if needed, print the build dir
#   scripts/kernel.sh [--kernel K] [--flavour F] --print-dir         print the build dir, build nothing
#
# Two kernel lines, both from Debian's source packages: 6.12 (the LTS line,
# linux-source-6.12, built with LLVM as before) and 7.3 (the newest,
# linux-source-7.3 from trixie-backports, fetched by scripts/linux-source.sh
# and built with GCC, as Debian and Ubuntu build theirs). Both get the same
# fragments: tests/config (the test kernel and the distribution hardening),
# and tests/config.debug for the debug flavour.
#
# The build lives in $CMA_CACHE/kernel/<flavour>-<version>-<key>/, where <key> hashes
# the kernel source package version, the config fragments, the toolchain versions
# and this script, so that every clone (and CI) reuses one build and any change to
# what goes into it makes a new one. Progress goes to stderr, the directory to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/env.sh"

flavour=normal
kernel=${KERNEL:-6.12}
print_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --flavour) flavour=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --print-dir) print_only=1; shift ;;
        *) echo "usage: $0 [--kernel 6.12|7.3] [--flavour normal|debug] [--print-dir]" >&2; exit 2 ;;
    esac
done

say() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] ERROR: %s\n' "$*" >&2; exit 1; }

fragments=("$top/tests/config")
case "$flavour" in
    normal) ;;
    debug) fragments+=("$top/tests/config.debug") ;;
    *) die "unknown flavour '$flavour' (normal or debug)" ;;
esac
for f in "${fragments[@]}"; do [ -r "$f" ] || die "missing config fragment $f"; done

case "$kernel" in
    6.12)
        # Installed by scripts/deps.sh from the machine's own apt sources.
        tarball=/usr/src/linux-source-6.12.tar.xz
        pkgver=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) \
            || die "linux-source-6.12 is not installed: run scripts/deps.sh"
        [ -r "$tarball" ] || die "$tarball missing: run scripts/deps.sh"
        # LLVM, as before: the debug flavour's KASAN needs clang for Rust.
        compiler=(LLVM="$KLLVM")
        compiler_id=$(clang-19 --version | head -1)
        ;;
    7.3)
        # Not in bookworm: fetched (and cached) from trixie-backports without
        # touching the machine's apt sources. Prints "<version> <tarball>".
        read -r pkgver tarball < <("$here/linux-source.sh" 7.3) \
            || die "could not fetch linux-source-7.3 (scripts/linux-source.sh)"
        # GCC, as distributions build their kernels: the module's Kbuild, glue and
        # bindgen steps must not assume clang. bindgen still uses libclang.
        compiler=(CC=gcc HOSTCC=gcc)
        compiler_id=$(gcc --version | head -1)
        ;;
    *) die "unknown kernel '$kernel' (6.12 or 7.3)" ;;
esac

bindgen=$CMA_TOOLS/bin/bindgen
[ -x "$bindgen" ] || die "bindgen not found at $bindgen: run scripts/deps.sh"

# How a kernel is configured and built below (tinyconfig, the fragments merged,
# olddefconfig, `make all`). Bump it when that procedure changes: the key
# hashes it rather than this whole script, so that teaching the script a new
# kernel line does not throw away the builds of the others.
recipe=2
key=$( {
    echo "pkg $pkgver"
    cat "${fragments[@]}"
    "$KRUSTC" --version
    echo "$compiler_id"
    "$bindgen" --version
    echo "recipe $recipe: ${compiler[*]}"
} | sha256sum | cut -c1-12)
ver=${pkgver%%-*}
out=$CMA_CACHE/kernel/$flavour-$ver-$key
if [ $print_only = 1 ]; then echo "$out/build"; exit 0; fi

mkdir -p "$CMA_CACHE/kernel" "$CMA_CACHE/src"
# One lock per build, so that different kernels can build at once (.ci/run
# builds the later suites' kernels at idle priority while the first suite
# runs), and one per source tree for its extraction.
exec 9>"$out.lock"
flock 9

if [ -e "$out/.done" ]; then
    say "reusing cached $flavour kernel: $out/build"
    echo "$out/build"
    exit 0
fi

src=$CMA_CACHE/src/linux-source-$pkgver
exec 8>"$src.lock"
flock 8
if [ ! -e "$src/.extracted" ]; then
    say "extracting $tarball into $src"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xf "$tarball" -C "$src.tmp" --strip-components=1
    touch "$src.tmp/.extracted"
    mv "$src.tmp" "$src"
fi
exec 8>&-

kmake() {
    make -C "$src" O="$out/build" "${compiler[@]}" RUSTC="$KRUSTC" RUSTDOC="$KRUSTDOC" \
        HOSTRUSTC="$KRUSTC" BINDGEN="$bindgen" "$@"
}

say "configuring the $flavour kernel in $out/build"
rm -rf "$out"
mkdir -p "$out/build"
kmake -s tinyconfig >&2
"$src/scripts/kconfig/merge_config.sh" -m -O "$out/build" "$out/build/.config" "${fragments[@]}" >"$out/config.log" 2>&1 \
    || { cat "$out/config.log" >&2; die "merge_config.sh failed"; }
kmake -s olddefconfig >&2
if ! grep -q '^CONFIG_RUST=y' "$out/build/.config"; then
    kmake rustavailable >&2 || true
    die "CONFIG_RUST did not stick in the kernel config (see rustavailable above)"
fi
# Every option of the fragments must have stuck; report the ones that did not.
for f in "${fragments[@]}"; do
    grep -E '^CONFIG_[A-Z0-9_]+=' "$f" | while IFS= read -r line; do
        opt=${line%%=*}; val=${line#*=}
        if [ "$val" = n ]; then
            if grep -q "^$opt=" "$out/build/.config"; then say "note: $opt=n did not stick"; fi
        elif ! grep -qx "$line" "$out/build/.config"; then
            say "note: $line did not stick"
        fi
    done
done

jobs=$(( $(nproc) + 1 ))
say "building the $flavour $kernel kernel with -j$jobs (about 15 minutes on 2 cores)"
start=$(date +%s)
kmake -j"$jobs" all >"$out/build.log" 2>&1 || { tail -40 "$out/build.log" >&2; die "kernel build failed (log: $out/build.log)"; }
touch "$out/.done"
say "built in $(( $(date +%s) - start )) s: $out/build"
echo "$out/build"
