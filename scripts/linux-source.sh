#!/usr/bin/env bash
# Fetch (once) a Debian linux-source package that the machine's own apt
# sources do not carry, and print "<package version> <path of its tarball>".
#
#   scripts/linux-source.sh 7.3
#
# linux-source-7.3 is in trixie-backports. It is fetched with a private sources
# list and private package lists under the cache, so the machine's apt
# configuration is neither read for sources nor changed; the archive keys are
# the machine's (debian-archive-keyring), so apt still checks the signatures.
# The package is architecture-independent: the tarball is all we take from it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

say() { printf '[linux-source] %s\n' "$*" >&2; }
die() { printf '[linux-source] ERROR: %s\n' "$*" >&2; exit 1; }

line=${1:-}
case "$line" in
    7.3) suite=trixie-backports ;;
    *) die "usage: $0 7.3" ;;
esac
pkg=linux-source-$line
mirror=${CMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}

dir=$CMA_CACHE/src/apt-$suite
stamp=$dir/$pkg.ready
# Fetched already: nothing to write (the cache may be read-only, as in the
# test VM).
if [ -e "$stamp" ]; then
    cat "$stamp"
    exit 0
fi
mkdir -p "$dir"
exec 8>"$dir/.lock"
flock 8

if [ ! -e "$stamp" ]; then
    mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/deb"
    echo "deb $mirror $suite main" >"$dir/sources.list"
    opts=(-o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
          -o Dir::State::Lists="$dir/lists" -o Dir::Cache::archives="$dir/archives"
          -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
    say "fetching the package lists of $suite from $mirror"
    apt-get "${opts[@]}" -q update >&2 || die "apt-get update ($suite) failed"
    ver=$(apt-cache "${opts[@]}" show "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
    [ -n "$ver" ] || die "$pkg is not in $suite"
    say "downloading $pkg $ver"
    rm -f "$dir/deb/"*.deb
    (cd "$dir/deb" && apt-get "${opts[@]}" -q download "$pkg=$ver" >&2) || die "apt-get download $pkg failed"
    deb=$(ls "$dir/deb/${pkg}_"*.deb)
    rm -rf "$dir/x"
    dpkg-deb -x "$deb" "$dir/x" || die "dpkg-deb -x $deb failed"
    tarball=$(ls "$dir/x/usr/src/$pkg.tar."*)
    rm -f "$deb"
    printf '%s %s\n' "$ver" "$tarball" >"$stamp"
fi
cat "$stamp"
