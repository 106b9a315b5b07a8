#!/usr/bin/env bash
# Boot the test kernel with virtme-ng and run something inside it.
#
#   (--kernel 6.12|7.3, or KERNEL=..., picks the test kernel; 6.12 by default)
#   scripts/vm.sh [--flavour normal|debug] test   load cma.ko, run the suites, unload,
#                                                 check the kernel log; ends "N passed, N failed"
#   scripts/vm.sh [--flavour normal|debug] run    load cma.ko and run the CLI
#   scripts/vm.sh [--flavour normal|debug] bench [ARGS]  load cma.ko and run `cma bench ARGS`
#                                                 (results in out/)
#   scripts/vm.sh [--flavour normal|debug] bench-mpi [ARGS]  load cma.ko and run
#                                                 scripts/bench-mpi.sh ARGS (HPCC, ucx_perftest)
#   CMA_INSMOD_ARGS="engine=usercopy" ...           module parameters for bench and bench-mpi
#   scripts/vm.sh [--flavour normal|debug] shell -- CMD...   run CMD in the guest
#
# KVM is used when it works on this machine (probed with a real boot) and TCG
# (software emulation) otherwise; CMA_ACCEL=kvm|tcg forces one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/env.sh"

flavour=normal
kernel=${KERNEL:-6.12}
while [ $# -gt 0 ]; do
    case "$1" in
        --flavour) flavour=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        *) break ;;
    esac
done
mode=${1:-}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

say() { printf '[vm] %s\n' "$*" >&2; }
die() { printf '[vm] ERROR: %s\n' "$*" >&2; exit 1; }

kdir=${KDIR:-$("$here/kernel.sh" --kernel "$kernel" --flavour "$flavour" --print-dir)}
bzimage=$kdir/arch/x86/boot/bzImage
[ -r "$bzimage" ] || die "no kernel at $bzimage: run 'make kernel' (or set KDIR)"
vng=$CMA_VENV/bin/vng
export PATH=$CMA_VENV/bin:$PATH
[ -x "$vng" ] || die "virtme-ng not installed: run scripts/deps.sh"
# The module built for this flavour (see MODDIR in the Makefile), relative
# to the repository, which is the guest's working directory too.
case "$kernel-$flavour" in
    6.12-normal) ko=cma.ko ;;
    6.12-*) ko=out/module-$flavour/cma.ko ;;
    *) ko=out/module-$kernel-$flavour/cma.ko ;;
esac
[ -r "$top/$ko" ] || die "$ko not built: run 'make module KERNEL=$kernel FLAVOUR=$flavour'"

# Does KVM work here? /dev/kvm can exist and still fail (nested virtualisation
# that aborts on MSR writes, or crawls): boot the kernel with no root and see
# whether it gets as far as looking for one, quickly.
probe_kvm() {
    [ -w /dev/kvm ] || { echo "no writable /dev/kvm"; return 1; }
    local out
    out=$(timeout 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 \
        -nographic -no-reboot -kernel "$bzimage" \
        -append "console=ttyS0 panic=-1 root=/dev/nonexistent" 2>&1 || true)
    if grep -q "Kernel panic\|VFS: Unable to mount root\|Waiting for root" <<<"$out"; then
        return 0
    fi
    echo "$(grep -m1 -i 'error\|failed' <<<"$out" || echo 'did not boot within 30 s')"
    return 1
}

accel=${CMA_ACCEL:-}
if [ -z "$accel" ]; then
    if why=$(probe_kvm); then accel=kvm; else accel=tcg; say "KVM unusable here ($why): using TCG"; fi
fi
append="root=/dev/root"
# Full preemption (the kernels are PREEMPT_DYNAMIC, tests/config) for the
# suites, where it shakes out more races; benchmarks keep the kernel's default.
case "$mode" in test | shell) append="$append preempt=${CMA_PREEMPT:-full}" ;; esac
# The debug kernel also panics on any WARN, so that no warning goes unnoticed.
[ "$flavour" = debug ] && append="$append panic_on_warn=1"
vng_args=(--run "$bzimage" --force-9p --user root --cpus 2 -m 2G --append "$append")
# CMA_VM_VERBOSE=1 shows the guest's console (boot log, oopses) as it happens.
[ -n "${CMA_VM_VERBOSE:-}" ] && vng_args+=(--verbose)
case "$accel" in
    kvm) say "accelerator: KVM" ;;
    tcg) say "accelerator: TCG (software emulation)"; vng_args+=(--disable-kvm) ;;
    *) die "CMA_ACCEL must be kvm or tcg" ;;
esac

guest() {
    # The guest sees the host's root filesystem; the working directory is the repo.
    (cd "$top" && timeout "${CMA_VM_TIMEOUT:-1800}" "$vng" "${vng_args[@]}" -- "$*")
}

case "$mode" in
    test)
        mkdir -p "$top/out"
        log=$top/out/vm-test-$kernel-$flavour.log
        say "running the suites in the guest (log: $log)"
        set +e
        # Pass the suite's knobs through to the guest.
        knobs="CMA_ACCEL=$accel CMA_KO=$ko CMA_FLAVOUR=$flavour CMA_KERNEL=$kernel"
        for v in CMA_TESTS CMA_TEST_TIMEOUT CMA_FUZZ_CALLS CMA_FUZZ_SEED CMA_STRESS_LOAD_SECS; do
            [ -n "${!v:-}" ] && knobs="$knobs $v='${!v}'"
        done
        guest "$knobs tests/guest.sh" 2>&1 | tee "$log"
        status=${PIPESTATUS[0]}
        # Once (in some 25 boots) vng returned 255 with no output at all: the
        # guest never reached the test script. That is no test result, so the
        # guest boots once more; the first attempt's output is kept.
        if [ "$status" = 255 ] && ! grep -q '^TAP version' "$log"; then
            mv "$log" "$log.no-start"
            say "the guest never started the suites (vng exit 255, no output; see $log.no-start): booting again"
            guest "$knobs tests/guest.sh" 2>&1 | tee "$log"
            status=${PIPESTATUS[0]}
        fi
        # DKMS builds against the kernel's tree on the host, as it would on a
        # user's machine; it needs no guest (only the normal flavours: the
        # build is the same for the debug kernel).
        if [ "$flavour" = normal ]; then
            echo "# ===== suite tests/dkms.sh (on the host)" | tee -a "$log"
            "$top/tests/dkms.sh" "$kernel" "$flavour" 2>&1 | tee -a "$log"
        fi
        set -e
        exec "$top/tests/summarise.sh" "$log" "$status"
        ;;
    run)
        guest "insmod $ko && userspace/target/release/cma info && userspace/target/release/cma demo; s=\$?; rmmod cma; exit \$s"
        ;;
    bench)
        mkdir -p "$top/out"
        vng_args+=(--rwdir "$top/out")
        guest "insmod $ko ${CMA_INSMOD_ARGS:-} && echo '# accelerator: $accel' && userspace/target/release/cma bench $* ; s=\$?; rmmod cma; exit \$s" \
            | tee "$top/out/bench-$accel.txt"
        ;;
    bench-mpi)
        mkdir -p "$top/out"
        vng_args+=(--rwdir "$top/out")
        guest "insmod $ko ${CMA_INSMOD_ARGS:-} && CMA_ACCEL=$accel scripts/bench-mpi.sh $* ; s=\$?; rmmod cma; exit \$s" \
            | tee "$top/out/bench-mpi-$accel.txt"
        ;;
    shell)
        [ $# -gt 0 ] || die "usage: $0 shell -- CMD..."
        guest "$*"
        ;;
    *)
        die "usage: $0 [--flavour normal|debug] test|run|shell -- CMD"
        ;;
esac
