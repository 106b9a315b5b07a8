#!/usr/bin/env bash
# Install everything cma needs on a Debian 12 (bookworm) machine. Idempotent:
# each step checks first and only installs what is missing.
#
#   scripts/deps.sh          install what is missing
#   scripts/deps.sh --check  only report; exit 1 if anything is missing
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/env.sh
. "$here/env.sh"

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

say() { printf '[deps] %s\n' "$*"; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

APT_PKGS=(
    # Rust toolchain that matches Debian's rust-src, required by the kernel build.
    rustc-web cargo-web rust-web-src rustfmt-web rust-web-clippy
    # LLVM 19: the kernel is built with LLVM=-19, bindgen needs libclang.
    clang-19 lld-19 llvm-19 libclang-19-dev
    # Kernel sources and build tools.
    linux-source-6.12 bc flex bison libelf-dev libssl-dev cpio xz-utils make
    # The test VM: QEMU, and udev (virtme-ng's guest init uses the host's udevd).
    qemu-system-x86 udev
    # insmod/rmmod/modinfo for the guest (it runs on the host's root filesystem).
    kmod
    # C tests and the userspace crates' bindgen step.
    gcc libc6-dev python3-venv pkg-config
    # make install: man pages (help2man), DKMS (dkms), the guest's group tools.
    help2man dkms passwd
    # The real clients of libcma-preload.so, run in the guest by the tests
    # and `make bench-mpi`: Open MPI 4.1 (btl/vader), UCX 1.13 (ucx_perftest),
    # MPICH 4.0 (ch4:ucx), libfabric 1.17 (the shm provider), HPCC.
    openmpi-bin libopenmpi-dev ucx-utils mpich libmpich-dev libfabric-bin hpcc
    # UCX rebuilt from Debian's source package --with-xpmem over libxpmem.so
    # (scripts/ucx-xpmem.sh): dpkg-source, the autotools, a C++ compiler.
    dpkg-dev autoconf automake libtool g++
)

missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    [ $check_only = 1 ] && { say "missing Debian packages: ${missing[*]}"; exit 1; }
    if [ ! -r /etc/debian_version ] || ! grep -q '^12' /etc/debian_version; then
        say "warning: this is not Debian 12; package names may differ"
    fi
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: install as root: ${missing[*]}"
        SUDO="sudo"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q || die "apt-get update failed"
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed for: ${missing[*]}"
else
    say "Debian packages: all present"
fi

# bindgen-cli, pinned: Debian's is 0.60 and the 6.12 kernel needs >= 0.65.1.
if [ -x "$CMA_TOOLS/bin/bindgen" ] && "$CMA_TOOLS/bin/bindgen" --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
    say "bindgen $BINDGEN_VERSION: present ($CMA_TOOLS/bin/bindgen)"
else
    [ $check_only = 1 ] && { say "missing bindgen $BINDGEN_VERSION"; exit 1; }
    say "installing bindgen-cli $BINDGEN_VERSION from crates.io into $CMA_TOOLS"
    command -v cargo >/dev/null || die "cargo not found (install rustup's or Debian's cargo-web)"
    LIBCLANG_PATH=$LIBCLANG_PATH cargo install --locked --root "$CMA_TOOLS" \
        bindgen-cli --version "$BINDGEN_VERSION" || die "cargo install bindgen-cli failed"
fi

# virtme-ng, pinned, in its own venv.
if [ -x "$CMA_VENV/bin/vng" ] && "$CMA_VENV/bin/pip" show virtme-ng 2>/dev/null | grep "^Version: $VNG_VERSION\$" >/dev/null; then
    say "virtme-ng $VNG_VERSION: present ($CMA_VENV)"
else
    [ $check_only = 1 ] && { say "missing virtme-ng $VNG_VERSION"; exit 1; }
    say "installing virtme-ng $VNG_VERSION from PyPI into $CMA_VENV"
    python3 -m venv "$CMA_VENV" || die "python3 -m venv failed"
    "$CMA_VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION" || die "pip install virtme-ng failed"
fi

say "all dependencies present"
