#!/usr/bin/env bash
# Build (once) UCX from Debian's source package with XPMEM support, the XPMEM
# library being cma's (out/xpmem: include/xpmem.h, libxpmem.so), and print
# its prefix. The tests run its ucx_perftest with UCX_TLS=posix,xpmem.
#
#   scripts/ucx-xpmem.sh            build if needed, print the prefix
#   scripts/ucx-xpmem.sh --print    print the prefix if built, else fail
#
# The source package is fetched with a private sources list (deb-src of the
# machine's mirror) and private lists under the cache, as linux-source.sh
# fetches 7.3; the build is cached under the cache, keyed on the package
# version, xpmem.h and this script's options (the library itself is linked at
# run time: out/lib, by its soname).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/env.sh"

say() { printf '[ucx-xpmem] %s\n' "$*" >&2; }
die() { printf '[ucx-xpmem] ERROR: %s\n' "$*" >&2; exit 1; }

pkg=ucx
suite=bookworm
mirror=${CMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Everything the build leaves out is what needs hardware or packages the
# guest has not; posix, sysv, cma and xpmem are the shared-memory transports.
configure_opts=(--disable-numa --without-verbs --without-rdmacm --without-knem --without-cuda
                --without-rocm --without-java --without-go --disable-doxygen-doc
                --disable-logging --disable-debug --disable-assertions --enable-cma
                --enable-mt --without-fuse3)

key=$( { cat "$top/include/xpmem.h"; printf '%s\n' "${configure_opts[@]}"; } | sha256sum | cut -c1-12)
src=$CMA_CACHE/src/apt-$suite-src
dir=$CMA_CACHE/ucx
if [ "${1:-}" = --print ]; then
    p=$(ls -d "$dir"/ucx-*-xpmem-"$key" 2>/dev/null | head -1)
    [ -n "$p" ] && [ -e "$p/.ready" ] || die "not built: run scripts/ucx-xpmem.sh"
    echo "$p"
    exit 0
fi
[ -e "$top/out/xpmem/lib/libxpmem.so" ] || die "no out/xpmem: run make libs first"
mkdir -p "$src" "$dir"
exec 8>"$dir/.lock"
flock 8

# The source package.
stamp=$src/$pkg.ready
if [ ! -e "$stamp" ]; then
    mkdir -p "$src/lists/partial" "$src/dl"
    echo "deb-src $mirror $suite main" >"$src/sources.list"
    opts=(-o Dir::Etc::sourcelist="$src/sources.list" -o Dir::Etc::sourceparts=/dev/null
          -o Dir::State::Lists="$src/lists" -o Debug::NoLocking=1
          -o APT::Sandbox::User="$(id -un)")
    say "fetching the source lists of $suite from $mirror"
    apt-get "${opts[@]}" -q update >&2 || die "apt-get update ($suite sources) failed"
    rm -rf "$src/dl" && mkdir -p "$src/dl"
    say "downloading the $pkg source package"
    (cd "$src/dl" && apt-get "${opts[@]}" -q source --download-only "$pkg" >&2) ||
        die "apt-get source $pkg failed"
    dsc=$(ls "$src/dl/${pkg}_"*.dsc)
    ver=$(sed -n 's/^Version: //p' "$dsc")
    rm -rf "$src/$pkg-$ver"
    dpkg-source -x "$dsc" "$src/$pkg-$ver" >&2 || die "dpkg-source -x $dsc failed"
    printf '%s %s\n' "$ver" "$src/$pkg-$ver" >"$stamp"
fi
read -r ver tree <"$stamp"
prefix=$dir/ucx-$ver-xpmem-$key
if [ -e "$prefix/.ready" ]; then
    echo "$prefix"
    exit 0
fi

build=$dir/build-$ver-$key
rm -rf "$build" "$prefix"
cp -a "$tree" "$build"
cd "$build"
say "building UCX $ver --with-xpmem=$top/out/xpmem into $prefix (several minutes)"
log=$dir/build-$ver-$key.log
{
    ./autogen.sh &&
    ./configure --prefix="$prefix" --with-xpmem="$top/out/xpmem" "${configure_opts[@]}" &&
    make -j"$(nproc)" &&
    make install
} >"$log" 2>&1 || { tail -40 "$log" >&2; die "UCX build failed (log: $log)"; }
# The build must have the transport: configure only warns when it is not found.
[ -e "$prefix/lib/ucx/libuct_xpmem.so" ] ||
    { grep -i xpmem "$log" | tail -10 >&2; die "UCX was built without xpmem (log: $log)"; }
rm -rf "$build"
touch "$prefix/.ready"
say "built: $prefix"
echo "$prefix"
