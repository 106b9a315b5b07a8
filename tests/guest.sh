#!/usr/bin/env bash
# Runs inside the test VM, as root, from the repository root (scripts/vm.sh
# starts it): loads cma.ko, runs every KTAP suite, unloads the module, and
# prints the kernel log for the host to check (tests/summarise.sh).
# The runner's own checks are a KTAP block of their own.
set -u
ko=$PWD/${CMA_KO:-cma.ko}
# Each entry is a command line (split on spaces).
suites=(
    "userspace/target/release/cma-selftest"
    "tests/c/cma_abi_test"
    "tests/c/libcma_test"
    "tests/c/xpmem_test"
)
# The preload library against the system call, and real MPI stacks through
# it; not in narrowed runs (CMA_TESTS, e.g. `make fuzz`).
if [ -z "${CMA_TESTS:-}" ]; then
    suites+=(
        "env LD_PRELOAD=$PWD/out/lib/libcma-preload.so userspace/target/release/cma-selftest --preload"
        "tests/mpi.sh"
        "tests/doctor.sh"
    )
    # make install and its administrator's steps: the scripts are the same on
    # both flavours, and under KASAN and TCG Kbuild's modules_install alone
    # takes three minutes; the normal kernels of both lines run them.
    [ "${CMA_FLAVOUR:-normal}" = normal ] && suites+=("tests/install.sh")
fi
tmp=$(mktemp -d)
pass=0 fail=0 n=0
check() { # name, then a command: a runner-level test
    local name=$1; shift
    n=$((n + 1))
    if "$@" >"$tmp/out" 2>&1; then
        pass=$((pass + 1)); echo "ok $n runner.$name"
    else
        fail=$((fail + 1)); sed 's/^/# /' "$tmp/out"; echo "not ok $n runner.$name"
    fi
}
# Pages pinned and not yet unpinned, system-wide, from one read of /proc/vmstat,
# after folding every CPU's pending counts into the totals (vm.stat_refresh):
# unfolded, either counter may lag by a per-CPU threshold, and one reading
# came out at -9 (released ahead of acquired), a baseline no balanced run
# can meet.
outstanding_pins() {
    echo 1 > /proc/sys/vm/stat_refresh 2>/dev/null
    awk '$1 == "nr_foll_pin_acquired" { a = $2 } $1 == "nr_foll_pin_released" { r = $2 }
         END { print a - r }' /proc/vmstat
}

echo "# guest: Linux $(uname -r), $(nproc) CPUs, accelerator ${CMA_ACCEL:-unknown}"
# The baseline: the fewest outstanding pins seen while the guest is quiet
# (its own 9p I/O pins pages briefly, so one read may catch one in flight).
pins0=$(outstanding_pins)
for _ in $(seq 20); do
    [ "$pins0" = 0 ] && break
    sleep 0.1
    now=$(outstanding_pins)
    [ "$now" -lt "$pins0" ] && pins0=$now
done

# kmemleak (debug kernel): forget what boot leaked, so that what is reported
# later was allocated while the suites ran.
kmemleak=/sys/kernel/debug/kmemleak
if grep -q debugfs /proc/filesystems; then
    mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
fi
[ -w "$kmemleak" ] && echo clear > "$kmemleak"

echo "TAP version 13"
check insmod insmod "$ko"
for s in "${suites[@]}"; do
    echo "# ===== suite $s"
    # CMA_TESTS (names or parts of names) narrows the Rust suite, e.g. to "fuzz".
    args=()
    [ "$(basename "$s")" = cma-selftest ] && [ -n "${CMA_TESTS:-}" ] && read -ra args <<<"$CMA_TESTS"
    read -ra cmd <<<"$s"
    started=$SECONDS
    CMA_KO=$ko "${cmd[@]}" "${args[@]}" 2>&1 | tee "$tmp/suite"
    status=${PIPESTATUS[0]}
    echo "# ===== suite $s exited with $status after $((SECONDS - started)) s"
    # A suite that died before its totals would hide its failures.
    name=$(basename -- "${cmd[-1]}")
    [ "${cmd[-1]}" = --preload ] && name=cma-selftest-preload
    check "$name.completed" grep -q '^# Totals:' "$tmp/suite"
done
# Scan for leaks while the module is still loaded, so that its allocations
# are attributed to it ([cma] in the backtrace).
no_module_leaks() {
    echo scan > "$kmemleak"; sleep 1; echo scan > "$kmemleak"
    cat "$kmemleak" > "$tmp/leaks"
    echo "kmemleak: $(grep -c '^unreferenced object' "$tmp/leaks") unreferenced objects in all"
    if grep -q '\[cma\]' "$tmp/leaks"; then
        cat "$tmp/leaks"
        return 1
    fi
}
[ -w "$kmemleak" ] && check kmemleak_no_module_leaks no_module_leaks
check rmmod rmmod cma
# The page-to-page copy routine is chosen by timing at load; where the CPU
# has AVX, run the data tests again with the other choice forced, so that
# both routines are tested whichever wins here.
other_copy_routine() {
    local want=avx param=1
    dmesg | grep 'page copies by' | tail -1 | grep -q 'by avx' && { want=memcpy; param=0; }
    insmod "$ko" simd_copy=$param || return 1
    if ! dmesg | grep 'page copies by' | tail -1 | grep -q "by $want"; then
        echo "simd_copy=$param did not give $want: $(dmesg | grep 'page copies by' | tail -1)"
        rmmod cma
        return 1
    fi
    echo "page copies by $want"
    CMA_KO=$ko userspace/target/release/cma-selftest sizes_and_unaligned scatter_gather \
        large_buffer thp_buffers partial_ copy1
    local s=$?
    rmmod cma || return 1
    return $s
}
grep -qw avx /proc/cpuinfo && check other_copy_routine other_copy_routine
# The engine (pinned or usercopy) is chosen by timing at load too: run the
# data, direct-path and race tests again under the other one.
other_engine() {
    local want
    want=$(dmesg | grep -o 'engine [a-z]*' | tail -1 | awk '{print $2}')
    case "$want" in pinned) want=usercopy ;; usercopy) want=pinned ;; *) echo "no engine in the log"; return 1 ;; esac
    insmod "$ko" engine=$want || return 1
    if [ "$(cat /sys/module/cma/parameters/engine)" != "$want" ]; then
        echo "engine=$want did not stick: $(cat /sys/module/cma/parameters/engine)"
        rmmod cma
        return 1
    fi
    echo "engine $want"
    CMA_KO=$ko userspace/target/release/cma-selftest sizes_and_unaligned scatter_gather \
        large_buffer thp_buffers partial_ copy1 direct race_
    local s=$?
    rmmod cma || return 1
    return $s
}
check other_engine other_engine
# Every page the suites pinned must be unpinned. The guest's own I/O (9p)
# pins pages briefly too, so let in-flight I/O finish before concluding.
pins_balanced() {
    local now i
    for i in $(seq 20); do
        now=$(outstanding_pins)
        [ "$now" -le "$pins0" ] && { echo "outstanding pins: $now, before the suites: $pins0"; return 0; }
        sleep 0.5
    done
    echo "outstanding pins: $now, before the suites: $pins0"
    grep foll_pin /proc/vmstat
    return 1
}
check pins_balanced pins_balanced
echo "1..$n"
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:0 error:0"

# Yama's scope 3 (no process may attach to another, root included) cannot be
# undone until reboot, so its MPI runs come last, with the module loaded again.
if [ -z "${CMA_TESTS:-}" ] && [ "${CMA_FLAVOUR:-normal}" = normal ] &&
    [ -w /proc/sys/kernel/yama/ptrace_scope ]; then
    echo "# ===== suite tests/mpi.sh yama3"
    insmod "$ko" && CMA_KO=$ko tests/mpi.sh yama3
    rmmod cma
fi

echo "===== dmesg begin"
dmesg
echo "===== dmesg end"
rm -rf "$tmp"
