#!/usr/bin/env bash
# `make bench-mpi`, inside the test VM (scripts/vm.sh bench-mpi starts it, as
# root, from the repository root, cma.ko loaded): the seed's HPCC table
# reproduced. HPCC (Debian's, on Open MPI 4.1) runs with 2 ranks three ways:
#
#   Base  btl/vader without single copy (btl_vader_single_copy_mechanism none)
#   CMA   btl/vader with CMA: process_vm_readv, the system call
#   cma   the same binary and settings, through libcma-preload.so (/dev/cma)
#
# each REPS times in an interleaved order, and the three b_eff rows (naturally
# and randomly ordered ring bandwidth, max ping-pong bandwidth) are printed as
# medians with their spread and the ratios cma/Base and cma/CMA, beside the
# seed's POWER6 figures. Then ucx_perftest tag_bw (UCX_TLS=posix,cma,
# rendezvous by get) through process_vm_readv and through /dev/cma (with the
# preload's maps, its default, and with CMA_PRELOAD_MAPS=0: every call an
# ioctl), and the XPMEM path: UCX built --with-xpmem over cma's libxpmem.so
# (posix,xpmem). Last, tests/c/mpi_coll_bench: MPI_Scatter and MPI_Alltoall
# of 4 MiB per rank, each call timed, buffers malloc'd and freed around each
# call with glibc told to give them back (MALLOC_MMAP_THRESHOLD_), so that
# the pages a copy cached are unmapped under it every time: the median call
# and the slowest, through process_vm_readv and through /dev/cma.
# Everything measured goes to out/bench-mpi.json; the table to stdout.
#
#   scripts/bench-mpi.sh [--reps N] [--hpl-n N] [--ucx-only] [--coll-only]
set -euo pipefail
top=$PWD
lib=$top/out/lib/libcma-preload.so
reps=3 hpl_n=1000 hpcc=1 ucx=1
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps=$2; shift 2 ;;
        --hpl-n) hpl_n=$2; shift 2 ;;
        --ucx-only) hpcc=0; shift ;;
        --coll-only) hpcc=0 ucx=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$work/raw.tsv
: > "$raw"

# HPCC's input: Debian's example with a small HPL problem on a 1x2 grid (the
# other kernels size themselves from it), so that a run takes about a minute
# under TCG; b_eff, the part the table is about, does not depend on it.
sed -e "6s/^[0-9]*/$hpl_n/" -e '11s/^[0-9]*/1/' -e '12s/^[0-9]*/2/' \
    /usr/share/doc/hpcc/examples/_hpccinf.txt > "$work/hpccinf.txt"

hpcc_run() { # config rep
    local config=$1 rep=$2 mech=cma
    local -a env=()
    case "$config" in
        Base) mech=none ;;
        cma) env=(-x LD_PRELOAD="$lib" -x CMA_PRELOAD_STATS="$work/stats.$rep") ;;
    esac
    rm -f "$work/hpccoutf.txt"
    (cd "$work" && mpirun.openmpi --oversubscribe --bind-to none -np 2 \
        --mca btl self,vader --mca pml ob1 --mca btl_vader_single_copy_mechanism "$mech" \
        "${env[@]}" hpcc > "$work/hpcc.log" 2>&1) || {
        echo "hpcc failed ($config):" >&2; tail -20 "$work/hpcc.log" >&2; return 1; }
    for key in NaturallyOrderedRingBandwidth_GBytes RandomlyOrderedRingBandwidth_GBytes \
               MaxPingPongBandwidth_GBytes; do
        printf 'hpcc\t%s\t%s\t%s\t%s\n' "$config" "$key" "$rep" \
            "$(sed -n "s/^$key=//p" "$work/hpccoutf.txt")" >> "$raw"
    done
    if [ "$config" = cma ]; then
        # The library's report: every single copy went through /dev/cma.
        grep 'comm=hpcc ' "$work/stats.$rep" | sed 's/^/# /' >&2
    fi
}

ucx_run() { # config size rep
    local config=$1 size=$2 rep=$3
    local -a pre=() env=(UCX_TLS=posix,cma UCX_RNDV_SCHEME=get_zcopy UCX_WARN_UNUSED_ENV_VARS=n)
    local perftest=ucx_perftest
    case "$config" in
        cma) pre=(env LD_PRELOAD="$lib" CMA_PRELOAD_STATS="$work/ucx-stats") ;;
        cma-ioctl) pre=(env LD_PRELOAD="$lib" CMA_PRELOAD_MAPS=0) ;;
    esac
    if [ "$config" = xpmem ]; then
        # UCX rebuilt --with-xpmem over cma's libxpmem.so (make ucx-xpmem):
        # the rendezvous reads an attachment of the sender's buffer.
        env=(UCX_TLS=posix,xpmem UCX_WARN_UNUSED_ENV_VARS=n
             LD_LIBRARY_PATH="$top/out/ucx-xpmem/lib:$top/out/lib")
        perftest=$top/out/ucx-xpmem/bin/ucx_perftest
    fi
    env "${env[@]}" "${pre[@]}" "$perftest" -p 13390 > "$work/server.log" 2>&1 &
    local spid=$!
    sleep 1
    env "${env[@]}" "${pre[@]}" "$perftest" 127.0.0.1 -p 13390 -t tag_bw -s "$size" -n 200 -w 20 \
        > "$work/client.log" 2>&1 || { cat "$work/client.log" >&2; kill "$spid"; return 1; }
    wait "$spid" || true
    if [ "$config" = cma ]; then
        grep 'comm=ucx_perftest ' "$work/ucx-stats" | sed "s/^/# $size: /" >&2
        rm -f "$work/ucx-stats"
    fi
    # Final: iterations, latency 50%, avg, overall, bandwidth avg, overall (MB/s), ...
    printf 'ucx\t%s\t%s\t%s\t%s\n' "$config" "$size" "$rep" \
        "$(awk '/Final:/ { print $7 }' "$work/client.log")" >> "$raw"
}

coll_run() { # config rep
    local config=$1 rep=$2
    local -a env=(-x MALLOC_MMAP_THRESHOLD_=1048576)
    [ "$config" = cma ] && env+=(-x LD_PRELOAD="$lib")
    local stats=/sys/class/misc/cma/stats before
    before=$(cat "$stats/cache_misses" "$stats/cache_invalidations")
    (cd "$work" && mpirun.openmpi --oversubscribe --bind-to none -np 2 \
        --mca btl self,vader --mca pml ob1 --mca btl_vader_single_copy_mechanism cma \
        "${env[@]}" "$top/tests/c/mpi_coll_bench" $((4 << 20)) 40 > "$work/coll.log" 2>&1) &&
        grep -q 'mpi_coll_bench: ok' "$work/coll.log" || {
        echo "mpi_coll_bench failed ($config):" >&2; tail -20 "$work/coll.log" >&2; return 1; }
    if [ "$config" = cma ]; then
        # Cache misses (pins) and invalidations of this run: in steady state
        # each call's freed buffers are invalidated and its new ones pinned.
        paste <(echo "$before") <(cat "$stats/cache_misses" "$stats/cache_invalidations") |
            awk -v r="$rep" '{ d[NR] = $2 - $1 } END {
                printf "# coll, repetition %s: %d cache misses, %d invalidations\n", r, d[1], d[2] }' >&2
    fi
    # "scatter median_us=... max_us=... over4x=... calls=..."
    awk -v c="$config" -v r="$rep" '/^(scatter|alltoall) / {
        split($2, m, "="); split($3, x, "=");
        printf "coll\t%s\t%s\t%s\t%s\t%s\n", c, $1, r, m[2], x[2] }' "$work/coll.log" >> "$raw"
}

engine=$(cat /sys/module/cma/parameters/engine 2>/dev/null || echo unknown)
echo "# bench-mpi: $(date -u +%F), $(uname -r), $(nproc) CPUs, accelerator ${CMA_ACCEL:-unknown}, cma engine $engine" >&2
echo "# $(mpirun.openmpi --version 2>&1 | head -1), hpcc $(dpkg-query -W -f='${Version}' hpcc 2>/dev/null), HPL N=$hpl_n, $reps repetitions" >&2
configs=(Base CMA cma)
for rep in $(seq "$reps"); do
    # A different order each repetition, so that drift does not favour one.
    order=$(printf '%s\n' "${configs[@]}" | shuf --random-source=<(yes "$rep"))
    for config in $order; do
        [ "$hpcc" = 1 ] || break
        echo "# hpcc: $config, repetition $rep" >&2
        hpcc_run "$config" "$rep"
    done
    for size in 65536 1048576 4194304; do
        [ "$ucx" = 1 ] || break
        for config in $(printf 'pvm\ncma\ncma-ioctl\nxpmem\n' | shuf --random-source=<(yes "$rep$size")); do
            ucx_run "$config" "$size" "$rep"
        done
    done
    for config in $(printf 'pvm\ncma\n' | shuf --random-source=<(yes "c$rep")); do
        coll_run "$config" "$rep"
    done
done

python3 - "$raw" "$top/out/bench-mpi.json" "${CMA_ACCEL:-unknown}" "$hpl_n" "$engine" <<'EOF'
import json, statistics, sys, datetime, platform
raw, out, accel, hpl_n, engine = sys.argv[1:6]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
hpcc, ucx, coll = {}, {}, {}
for r in rows:
    if r[0] == "hpcc":
        hpcc.setdefault((r[1], r[2]), []).append(float(r[4]) * 1000)  # GB/s -> MB/s
    elif r[0] == "coll":
        coll.setdefault((r[1], r[2]), []).append((float(r[4]), float(r[5])))
    else:
        ucx.setdefault((r[1], int(r[2])), []).append(float(r[4]))
def stat(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "samples": v}
keys = [("NaturallyOrderedRingBandwidth_GBytes", "Naturally ordered ring", (1235, 4741)),
        ("RandomlyOrderedRingBandwidth_GBytes", "Randomly ordered ring", (1227, 4666)),
        ("MaxPingPongBandwidth_GBytes", "Max ping-pong", (2028, 7424))]
doc = {"date": datetime.date.today().isoformat(), "kernel": platform.release(),
       "accelerator": accel, "engine": engine, "hpl_n": int(hpl_n), "ranks": 2,
       "hpcc": [], "ucx_perftest": [], "collectives": []}
if hpcc:
    print(f"HPCC b_eff, Open MPI 4.1 btl/vader, 2 ranks, {accel.upper()} guest, cma engine {engine} "
          f"(MB/s, median of {len(next(iter(hpcc.values())))}; min-max)")
    print(f"{'':24} {'Base':>17} {'CMA':>17} {'cma':>17} | {'cma/Base':>8} {'cma/CMA':>8} | seed (POWER6, 4 procs): Base, CMA, CMA/Base")
for key, name, seed in keys if hpcc else []:
    s = {c: stat(hpcc[(c, key)]) for c in ("Base", "CMA", "cma")}
    cell = lambda c: f"{s[c]['median']:7.0f} ({s[c]['min']:.0f}-{s[c]['max']:.0f})"
    rb = s["cma"]["median"] / s["Base"]["median"]
    rc = s["cma"]["median"] / s["CMA"]["median"]
    print(f"{name:24} {cell('Base'):>17} {cell('CMA'):>17} {cell('cma'):>17} | {rb:8.2f} {rc:8.2f} | {seed[0]}, {seed[1]}, {seed[1]/seed[0]:.1f}x")
    doc["hpcc"].append({"row": name, "key": key, "MBps": s, "cma_over_base": rb,
                        "cma_over_cma_syscall": rc, "seed_MBps": {"Base": seed[0], "CMA": seed[1]}})
if ucx:
    print()
    print("ucx_perftest tag_bw (MB/s, median; min-max): pvm and cma UCX_TLS=posix,cma, rendezvous by get")
    print("(cma: the preload with its maps, repeated reads served by memcpy; cma-ioctl: CMA_PRELOAD_MAPS=0);")
    print("xpmem: UCX rebuilt --with-xpmem over cma's libxpmem.so, UCX_TLS=posix,xpmem (the sender's buffer attached)")
    print(f"{'size':>10} {'pvm':>20} {'cma-ioctl':>20} {'cma':>20} {'xpmem':>20} | {'cma-ioctl/pvm':>13} {'cma/pvm':>7} {'xpmem/pvm':>9} {'xpmem/cma':>9}")
for size in sorted({k[1] for k in ucx}):
    p, c, x = stat(ucx[("pvm", size)]), stat(ucx[("cma", size)]), stat(ucx[("xpmem", size)])
    i = stat(ucx[("cma-ioctl", size)])
    r = c["median"] / p["median"]
    cell = lambda v: f"{v['median']:8.0f} ({v['min']:.0f}-{v['max']:.0f})"
    print(f"{size:>10} {cell(p):>20} {cell(i):>20} {cell(c):>20} {cell(x):>20} | "
          f"{i['median'] / p['median']:13.2f} {r:7.2f} "
          f"{x['median'] / p['median']:9.2f} {x['median'] / c['median']:9.2f}")
    doc["ucx_perftest"].append({"size": size, "pvm_MBps": p, "cma_MBps": c, "xpmem_MBps": x,
                                "cma_ioctl_MBps": i, "cma_ioctl_over_pvm": i["median"] / p["median"],
                                "cma_over_pvm": r, "xpmem_over_pvm": x["median"] / p["median"],
                                "xpmem_over_cma": x["median"] / c["median"]})
if coll:
    print()
    print("Collectives, Open MPI btl/vader, 2 ranks, 4 MiB per rank, buffers allocated and freed (unmapped)")
    print("around each call (tests/c/mpi_coll_bench): us per call, median of the runs' medians; the slowest")
    print("call of all runs; pvm/cma is the speed-up of the median, slowest/median the worst stall")
    print(f"{'':10} {'pvm median':>11} {'slowest':>9} {'cma median':>11} {'slowest':>9} | {'pvm/cma':>7} "
          f"{'pvm slowest/median':>18} {'cma slowest/median':>18}")
    for name in ("scatter", "alltoall"):
        p, c = coll[("pvm", name)], coll[("cma", name)]
        pm, cm = statistics.median(m for m, _ in p), statistics.median(m for m, _ in c)
        px, cx = max(x for _, x in p), max(x for _, x in c)
        print(f"{name:10} {pm:11.0f} {px:9.0f} {cm:11.0f} {cx:9.0f} | {pm / cm:7.2f} "
              f"{px / pm:18.1f} {cx / cm:18.1f}")
        doc["collectives"].append({"collective": name, "bytes_per_rank": 4 << 20,
                                   "pvm_us": {"medians": [m for m, _ in p], "slowest": [x for _, x in p]},
                                   "cma_us": {"medians": [m for m, _ in c], "slowest": [x for _, x in c]},
                                   "pvm_over_cma": pm / cm, "pvm_slowest_over_median": px / pm,
                                   "cma_slowest_over_median": cx / cm})
if accel == "tcg" and engine == "usercopy":
    print("\nLike for like: cma's usercopy engine copies with the same user-copy routines as"
          "\nprocess_vm_readv (rep movsb, which QEMU emulates slowly); cma/CMA is structure.")
elif accel == "tcg":
    print("\nTCG: process_vm_readv copies with the user-copy routines (rep movsb, which QEMU"
          "\nemulates slowly) and cma page to page (memcpy or AVX); most of cma/CMA here is"
          "\nthat, not structure: CMA_INSMOD_ARGS=engine=usercopy gives like for like.")
json.dump(doc, open(out, "w"), indent=1)
print(f"\n(written to out/{out.split('/')[-1]})")
EOF
