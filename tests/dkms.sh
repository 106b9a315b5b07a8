#!/usr/bin/env bash
# Runs on the host after the guest's suites (scripts/vm.sh test calls it):
# `dkms build` of the source tree, as a release would ship it, against the
# test kernel's build tree, and dkms-make.sh's refusals of kernels it cannot
# build for. DKMS builds where the kernel's headers are, not where the module
# is loaded, so this needs no guest: under TCG the same build took 6.5 minutes
# per kernel in the guest, and takes one here. KTAP on stdout.
#
#   tests/dkms.sh KERNEL FLAVOUR     (6.12|7.3, normal|debug)
set -u
cd "$(dirname "$0")/.."
kernel=$1 flavour=$2
top=$PWD
version=$(cat VERSION)
kdir=$(scripts/kernel.sh --kernel "$kernel" --flavour "$flavour" --print-dir)
kver=$(cat "$kdir/include/config/kernel.release")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/ktap.sh

dkms_build() {
    local tree=$tmp/dkms src=$tmp/src
    mkdir -p "$tree" "$src/cma-$version"
    # The source as a release would ship it: tracked and new files, no build products.
    (cd "$top" && git ls-files --cached --others --exclude-standard) |
        grep -E '^(Kbuild|Makefile|VERSION|dkms.conf|include/|rust/|scripts/)' |
        (cd "$top" && xargs cp --parents -t "$src/cma-$version")
    dkms add --dkmstree "$tree" --sourcetree "$src" -m cma -v "$version" &&
        dkms build --dkmstree "$tree" --sourcetree "$src" -m cma -v "$version" -k "$kver" \
            --kernelsourcedir "$kdir" &&
        find "$tree/cma/$version/$kver" -name 'cma.ko*' | grep -q . ||
        { tail -n 25 "$tree/cma/$version/build/make.log"; return 1; }
}

dkms_clear_errors() {
    local fake=$tmp/fake-kernel
    mkdir -p "$fake"
    echo 'CONFIG_MODULES=y' > "$fake/.config"
    sh scripts/dkms-make.sh "$fake" 9.9.9 2>&1 | grep -q 'has no CONFIG_RUST=y' || return 1
    printf 'CONFIG_RUST=y\nCONFIG_RUSTC_VERSION_TEXT="rustc 0.0.1 (none)"\n' > "$fake/.config"
    sh scripts/dkms-make.sh "$fake" 9.9.9 2>&1 |
        grep -q "was built with 'rustc 0.0.1 (none)'; no such rustc here" || return 1
}

echo "TAP version 13"
echo "# dkms: the $flavour $kernel kernel ($kver), on the host"
check dkms_refuses_kernels_it_cannot_build_for dkms_clear_errors
check dkms_build_against_test_kernel dkms_build
echo "1..$n"
totals
