#!/usr/bin/env bash
# Runs inside the test VM, as root, from the repository root, with cma.ko
# loaded (tests/guest.sh calls it): real MPI stacks from Debian's packages,
# unmodified, through libcma-preload.so. KTAP on stdout.
#
# Each test checks the data the program moved (the program's own checks:
# tests/c/mpi_check.c, fi_pingpong -c) and the preload library's report
# (CMA_PRELOAD_STATS): every process that loaded it reports no fallback to
# the system call and no failed call, and together they made single-copy
# transfers through /dev/cma.
set -u
top=$PWD
lib=$top/out/lib/libcma-preload.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The jobs run as nobody write their reports here, and have a home here.
chmod 777 "$tmp"  # not sticky: fs.protected_regular would refuse O_CREAT of the root-made report files
mkdir -m 777 "$tmp/home"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's vader BTL with CMA as its single-copy mechanism, nothing else.
ompi=(mpirun.openmpi --oversubscribe --bind-to none --mca btl self,vader --mca pml ob1
      --mca btl_vader_single_copy_mechanism cma -x LD_PRELOAD="$lib" -x CMA_PRELOAD_STATS)
ucx_env=(UCX_TLS=posix,cma UCX_RNDV_SCHEME=get_zcopy UCX_WARN_UNUSED_ENV_VARS=n)
n=0 pass=0 fail=0

# The report lines of processes named $1, all of them if $1 is empty.
reports() { grep "^cma-preload: .*comm=${1:-[^ ]*} " "$CMA_PRELOAD_STATS" || true; }
# Sum of field $1 over report lines on stdin.
field_sum() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" | awk '{ s += $1 } END { print s + 0 }'; }

# verdict NAME WHY REPORTS: test $n passes if WHY is empty; else it fails,
# showing the end of its output ($tmp/out), the reports and why.
verdict() {
    local name=$1 why=$2 reports=$3
    if [ -z "$why" ]; then
        pass=$((pass + 1)); echo "ok $n $name"
    else
        fail=$((fail + 1))
        sed 's/^/#   /' "$tmp/out" | tail -n 40
        sed 's/^/#   /' "$reports"
        echo "# $why"; echo "not ok $n $name"
    fi
}

# check NAME COMM EXPECT MINBYTES -- CMD...: runs CMD with a fresh report
# file; passes if it exits 0, prints a line matching EXPECT, and the reports
# of the processes named COMM show at least MINBYTES moved through /dev/cma,
# no fallback and no failure (and, if $need names a field of the report,
# a non-zero sum of it: a check the library answered, a launcher named).
check() {
    local name=$1 comm=$2 expect=$3 min=$4; shift 5
    n=$((n + 1))
    export CMA_PRELOAD_STATS=$tmp/$name.stats
    : > "$CMA_PRELOAD_STATS"
    chmod 666 "$CMA_PRELOAD_STATS"
    local status=0 why=""
    # A function of this script (it has its own timeout) or a command.
    if declare -F "$1" > /dev/null; then
        "$@" > "$tmp/out" 2>&1 || status=$?
    else
        timeout 600 "$@" > "$tmp/out" 2>&1 || status=$?
    fi
    local lines calls bytes fb failed answered needed=1
    lines=$(reports "$comm")
    calls=$(field_sum cma <<<"$lines")
    bytes=$(field_sum bytes <<<"$lines")
    fb=$(field_sum fallback <<<"$lines")
    failed=$(field_sum failed <<<"$lines")
    answered=$(field_sum answered.ptrace_scope <<<"$lines")
    [ -z "${need:-}" ] || needed=$(field_sum "$need" <<<"$lines")
    if [ "$status" != 0 ]; then why="exit status $status"
    elif ! grep -qE "$expect" "$tmp/out"; then why="no line matching '$expect'"
    elif [ -z "$lines" ]; then why="no report from a $comm process (was the library loaded?)"
    elif [ "$bytes" -lt "$min" ]; then why="$bytes bytes through /dev/cma, fewer than the $min the test moves"
    elif [ "$fb" != 0 ] || [ "$failed" != 0 ]; then why="$fb fallbacks, $failed failed calls"
    elif [ "$needed" = 0 ]; then
        why="no report has a non-zero $need"
    fi
    echo "# $name: $(wc -l <<<"$lines") processes, $calls calls through /dev/cma ($bytes bytes; $(field_sum mapped <<<"$lines") calls from maps), $fb fallbacks, $failed failed, $answered ptrace_scope checks answered"
    verdict "$name" "$why" "$CMA_PRELOAD_STATS"
}

# xpmem_check NAME EXPECT MINATTACH -- CMD...: CMD, a program built with
# XPMEM support, runs over cma's libxpmem.so (no preload); passes if it exits
# 0, prints a line matching EXPECT, and the library's reports (CMA_XPMEM_STATS)
# show two or more processes that made segments and got each other's, at
# least MINATTACH bytes attached in all, and no call refused.
xpmem_check() {
    local name=$1 expect=$2 min=$3; shift 4
    n=$((n + 1))
    local stats=$tmp/$name.xpmem status=0 why="" lines procs gets bytes failed
    : > "$stats"
    chmod 666 "$stats"
    CMA_XPMEM_STATS=$stats "$@" > "$tmp/out" 2>&1 || status=$?
    lines=$(grep '^cma-xpmem: ' "$stats")
    procs=$(grep -c 'makes=[1-9]' <<<"$lines")
    gets=$(field_sum gets <<<"$lines")
    bytes=$(field_sum attached_bytes <<<"$lines")
    failed=$(field_sum failed <<<"$lines")
    if [ "$status" != 0 ]; then why="exit status $status"
    elif ! grep -qE "$expect" "$tmp/out"; then why="no line matching '$expect'"
    elif [ "$procs" -lt 2 ]; then why="$procs processes made a segment (libxpmem.so not used?)"
    elif [ "$gets" -lt 2 ] || [ "$bytes" -lt "$min" ]; then
        why="$gets segments got, $bytes bytes attached: fewer than the test needs"
    elif [ "$failed" != 0 ]; then why="$failed calls refused"
    fi
    echo "# $name: $procs processes made segments, $gets got, $bytes bytes attached, $failed refused"
    verdict "$name" "$why" "$stats"
}

# server_client SERVER... -- CLIENT...: the server in the background, then
# the client; whichever fails first stops the other (nobody is left to talk
# to it); the client's status decides, then the server's.
server_client() {
    local -a server=() client=()
    while [ "$1" != -- ]; do server+=("$1"); shift; done
    shift; client=("$@")
    # A file of its own: the server may run as another user than the last.
    local out
    out=$(mktemp "$tmp/server.XXXXXX")
    "${server[@]}" > "$out" 2>&1 &
    local spid=$!
    sleep 2
    "${client[@]}" &
    local cpid=$! ended first status=0 s=0
    wait -n -p ended "$spid" "$cpid"
    first=$?
    if [ "$ended" = "$cpid" ]; then
        status=$first
        [ "$status" = 0 ] || kill "$spid" 2>/dev/null
        wait "$spid" || s=$?
    else
        s=$first
        [ "$s" = 0 ] || kill "$cpid" 2>/dev/null
        wait "$cpid" || status=$?
    fi
    [ "$status" != 0 ] || status=$s
    echo "--- server"; cat "$out"
    return "$status"
}

echo "TAP version 13"
echo "# $(mpirun.openmpi --version 2>&1 | head -1); $(ucx_info -v 2>&1 | grep -m1 -o 'version=[^ ]*'); $(mpichversion 2>/dev/null | head -1); libfabric $(fi_info --version 2>/dev/null | head -1)"
# The stacks on an open host (all but `tests/mpi.sh yama3`).
if [ "${1:-}" != yama3 ]; then
    # mpi_check moves 16 KiB-16 MiB each way between each pair (over 21 MiB),
    # beyond vader's and UCX's eager sizes, plus the collectives.
    check openmpi_vader_2ranks mpi_check 'mpi_check: ok \(2 ranks' 40000000 -- \
        "${ompi[@]}" -np 2 tests/c/mpi_check
    check openmpi_vader_4ranks mpi_check 'mpi_check: ok \(4 ranks' 250000000 -- \
        "${ompi[@]}" -np 4 tests/c/mpi_check
    # 40 rendezvous messages of 4 MiB (and warm-up ones): at least 160 MiB.
    check ucx_perftest_tag_bw ucx_perftest 'Final:' 167772160 -- \
        env "${ucx_env[@]}" LD_PRELOAD="$lib" bash -c '
            server_client() { '"$(declare -f server_client | tail -n +2)"'; }
            tmp='"$tmp"'
            server_client ucx_perftest -p 13371 -- \
                ucx_perftest 127.0.0.1 -p 13371 -t tag_bw -s 4194304 -n 40'
    # UCX rebuilt from Debian's source package --with-xpmem over cma's
    # libxpmem.so (scripts/ucx-xpmem.sh), as nobody (consent, not
    # CAP_SYS_PTRACE), no preload: the rendezvous messages are read from an
    # attachment of the sender's buffer (rkey_ptr), a cma map.
    # (make ucx-xpmem copies it to out/ucx-xpmem; its libraries come first.)
    xpmem_check ucx_xpmem_perftest_tag_bw 'Final:' 4194304 -- \
        env UCX_TLS=posix,xpmem UCX_WARN_UNUSED_ENV_VARS=n \
        UCX_POSIX_USE_PROC_LINK=n HOME="$tmp/home" \
        LD_LIBRARY_PATH="$top/out/ucx-xpmem/lib:$top/out/lib" \
        timeout 300 bash -c '
            server_client() { '"$(declare -f server_client | tail -n +2)"'; }
            tmp='"$tmp"'
            u="setpriv --reuid=65534 --regid=65534 --clear-groups"
            p='"$top"'/out/ucx-xpmem/bin/ucx_perftest
            server_client $u "$p" -p 13387 -- $u "$p" 127.0.0.1 -p 13387 -t tag_bw -s 4194304 -n 40'
    # Through the CLI, as a user would: `cma run` sets LD_PRELOAD for mpiexec,
    # and Hydra passes the whole environment on to the ranks.
    check mpich_ucx_2ranks mpi_check_mpich 'mpi_check: ok \(2 ranks' 40000000 -- \
        env "${ucx_env[@]}" userspace/target/release/cma run --stats "$tmp/mpich_ucx_2ranks.stats" -- \
        mpiexec.mpich -launcher fork -n 2 tests/c/mpi_check_mpich
    # -S all: sizes up to 8 MiB, 20 round trips each.
    check libfabric_shm_pingpong fi_pingpong 'bytes' 300000000 -- \
        env FI_PROVIDER=shm LD_PRELOAD="$lib" bash -c '
            server_client() { '"$(declare -f server_client | tail -n +2)"'; }
            tmp='"$tmp"'
            server_client fi_pingpong -p shm -e rdm -c -I 20 -S all -B 13373 -- \
                fi_pingpong -p shm -e rdm -c -I 20 -S all -P 13373 127.0.0.1'
fi

# ---- Restricted hosts: process_vm_readv refused by Yama (ptrace_scope 2,
# where only CAP_SYS_PTRACE may) or by a container runtime's seccomp filter
# (tests/c/seccomp_deny). Each stack without the preload shows the refusal
# (Open MPI's failed reads and fallback, UCX's cma transport turned off); with
# it, the same job runs single-copy through /dev/cma. Normal kernels only:
# the debug kernel runs the same module paths in the runs above.
# without NAME -- CMD...: passes if CMD, run without the preload, exits 0.
without() {
    local name=$1; shift 2
    n=$((n + 1))
    if "$@" > "$tmp/out" 2>&1; then
        pass=$((pass + 1)); echo "ok $n $name"
    else
        fail=$((fail + 1)); sed 's/^/#   /' "$tmp/out" | tail -n 20; echo "not ok $n $name"
    fi
}
# Open MPI's own message when its process_vm_readv is refused (it then sends
# that fragment instead); PREFIX... runs it (a seccomp launcher).
ompi_refused() { # [PREFIX...]
    "$@" "${ompi_bare[@]}" -np 2 tests/c/mpi_check > "$tmp/ompi" 2>&1
    cat "$tmp/ompi"
    grep -qE 'Read -1, expected [0-9]+, errno = 1' "$tmp/ompi"
}
# UCX lists its cma transport only when it decided process_vm_readv works.
ucx_lacks_cma() { # [PREFIX...]
    "$@" env UCX_TLS=cma ucx_info -d > "$tmp/ucx" 2>&1
    cat "$tmp/ucx"
    ! grep -q 'Transport: cma' "$tmp/ucx"
}
# ucx_perftest, server and client each in a user namespace of its own as
# nobody, with LD_PRELOAD=$1 (or none); passes if it exits as the preload
# should (0 with it, not 0 without) and prints a line matching $2. UCX's
# posix transport finds its peer's shared memory through /proc/PID/fd by
# default, which needs ptrace access too: named files instead.
ucx_userns() { # PRELOAD PATTERN
    local ns="setpriv --reuid=65534 --regid=65534 --clear-groups unshare --user --map-current-user"
    local status=0
    env "${ucx_env[@]}" UCX_POSIX_USE_PROC_LINK=n HOME="$tmp/home" ${1:+LD_PRELOAD="$1"} \
        timeout 180 bash -c '
        server_client() { '"$(declare -f server_client | tail -n +2)"'; }
        tmp='"$tmp"'
        server_client '"$ns"' ucx_perftest -p 13383 -- \
            '"$ns"' ucx_perftest 127.0.0.1 -p 13383 -t tag_bw -s 4194304 -n 40' > "$tmp/userns" 2>&1 ||
        status=$?
    cat "$tmp/userns"
    grep -qE "$2" "$tmp/userns" || return 1
    if [ -n "$1" ]; then [ "$status" = 0 ]; else [ "$status" != 0 ]; fi
}
# UCX's message when its process_vm_readv or _writev is refused.
ucx_refused='process_vm_(read|write)v\(pid=[0-9]+ .* returned -1: Operation not permitted'
# Open MPI as nobody, each rank in a user namespace of its own, no preload,
# with MCA options $@: passes if it names the namespaces as why it has no CMA.
ompi_userns_refused() { # [MCA OPTION...]
    "${user[@]}" "${ompi_bare[@]}" "$@" -np 2 unshare --user --map-current-user \
        tests/c/mpi_check > "$tmp/ompi" 2>&1
    cat "$tmp/ompi"
    grep -q 'not available due to different user namespaces' "$tmp/ompi"
}
# MPICH over UCX as nobody, each rank in a user namespace of its own, no
# preload: passes if it fails, UCX naming the refused call.
mpich_userns_fails() {
    local status=0
    "${user[@]}" env "${ucx_env[@]}" UCX_POSIX_USE_PROC_LINK=n timeout 300 \
        mpiexec.mpich -launcher fork -n 2 unshare --user --map-current-user \
        tests/c/mpi_check_mpich > "$tmp/mpich" 2>&1 || status=$?
    cat "$tmp/mpich"
    [ "$status" != 0 ] && grep -qE "$ucx_refused" "$tmp/mpich"
}
ompi_bare=(mpirun.openmpi --oversubscribe --bind-to none --mca btl self,vader --mca pml ob1
           --mca btl_vader_single_copy_mechanism cma)
scope=/proc/sys/kernel/yama/ptrace_scope
# Under Yama 2 root may still (CAP_SYS_PTRACE): the jobs run as nobody.
user=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$tmp/home")
# The stacks under Yama's scope $1 (2 or 3: only CAP_SYS_PTRACE, or nobody,
# may), without the preload and with it.
under_yama() {
    local level=$1
    echo "$level" > "$scope" || return
    echo "# ptrace_scope $level"
    without yama${level}_openmpi_refused_without_preload -- ompi_refused "${user[@]}"
    without yama${level}_ucx_turns_cma_off_without_preload -- ucx_lacks_cma "${user[@]}"
    check yama${level}_openmpi_vader mpi_check 'mpi_check: ok \(2 ranks' 40000000 -- \
        "${user[@]}" "${ompi[@]}" -np 2 tests/c/mpi_check
    need=answered.ptrace_scope
    check yama${level}_ucx_perftest_tag_bw ucx_perftest 'Final:' 167772160 -- \
        "${user[@]}" env "${ucx_env[@]}" LD_PRELOAD="$lib" bash -c '
            server_client() { '"$(declare -f server_client | tail -n +2)"'; }
            tmp='"$tmp"'
            server_client ucx_perftest -p 13375 -- \
                ucx_perftest 127.0.0.1 -p 13375 -t tag_bw -s 4194304 -n 40'
    [ "$level" = 3 ] && { need=; return; }
    check yama${level}_mpich_ucx mpi_check_mpich 'mpi_check: ok \(2 ranks' 40000000 -- \
        "${user[@]}" env "${ucx_env[@]}" userspace/target/release/cma run \
        --stats "$tmp/yama${level}_mpich_ucx.stats" -- \
        mpiexec.mpich -launcher fork -n 2 tests/c/mpi_check_mpich
    need=
}
# libfabric asks nothing before its first copy (no prctl either): under
# scope 1 already its probe of a sibling is refused. Through the preload:
# PREFIX... runs the job; $fi_each (words) runs each of server and client.
libfabric_user() { # NAME PORT [PREFIX...]
    local name=$1 port=$2; shift 2
    check "$name" fi_pingpong 'bytes' 300000000 -- \
        "$@" "${user[@]}" env FI_PROVIDER=shm LD_PRELOAD="$lib" bash -c '
            server_client() { '"$(declare -f server_client | tail -n +2)"'; }
            tmp='"$tmp"'
            server_client '"${fi_each:-}"' fi_pingpong -p shm -e rdm -c -I 20 -S all -B '"$port"' -- \
                '"${fi_each:-}"' fi_pingpong -p shm -e rdm -c -I 20 -S all -P '"$port"' 127.0.0.1'
}
if [ "${1:-}" = yama3 ]; then
    # Scope 3 cannot be undone until reboot: tests/guest.sh runs this last.
    [ -w "$scope" ] && under_yama 3
elif [ "${CMA_FLAVOUR:-normal}" = normal ] && [ -w "$scope" ]; then
    echo 1 > "$scope"
    echo "# ptrace_scope 1"
    libfabric_user yama1_libfabric_shm_pingpong 13377
    under_yama 2
    echo 0 > "$scope"
    echo "# ptrace_scope 0; seccomp filters refusing process_vm_readv/writev"
    deny=(tests/c/seccomp_deny eperm)
    without seccomp_openmpi_refused_without_preload -- ompi_refused "${deny[@]}"
    without seccomp_ucx_turns_cma_off_without_preload -- ucx_lacks_cma "${deny[@]}"
    check seccomp_openmpi_vader mpi_check 'mpi_check: ok \(2 ranks' 40000000 -- \
        "${deny[@]}" "${ompi[@]}" -np 2 tests/c/mpi_check
    check seccomp_ucx_perftest_tag_bw ucx_perftest 'Final:' 167772160 -- \
        "${deny[@]}" env "${ucx_env[@]}" LD_PRELOAD="$lib" bash -c '
            server_client() { '"$(declare -f server_client | tail -n +2)"'; }
            tmp='"$tmp"'
            server_client ucx_perftest -p 13379 -- \
                ucx_perftest 127.0.0.1 -p 13379 -t tag_bw -s 4194304 -n 40'
    libfabric_user seccomp_enosys_libfabric_shm_pingpong 13381 tests/c/seccomp_deny enosys
    # Each rank in a user namespace of its own, all mapping the same uid (as
    # rootless containers and Apptainer run ranks): commoncap refuses
    # process_vm_readv between them. Open MPI compares the namespaces and
    # falls back (or aborts, with CMA asked for); UCX, which does not, fails
    # at its first rendezvous, and so does MPICH over it; libfabric's probe
    # of its peer fails and it falls back. Through the preload: a rank of a
    # launcher consents to the launcher's descendants (its sibling ranks) by
    # pidfd, Open MPI's namespace check is answered, and UCX's peers are
    # also named one by one as UCX opens their /proc/PID/stat.
    echo "# each process in a user namespace of its own, one kuid"
    in_ns=(unshare --user --map-current-user)
    without userns_openmpi_refused_without_preload -- \
        ompi_userns_refused
    need=answered.userns
    check userns_openmpi_vader mpi_check 'mpi_check: ok \(2 ranks' 40000000 -- \
        "${user[@]}" "${ompi[@]}" -np 2 "${in_ns[@]}" tests/c/mpi_check
    need=
    without userns_mpich_fails_without_preload -- mpich_userns_fails
    need=launcher
    check userns_mpich_ucx mpi_check_mpich 'mpi_check: ok \(2 ranks' 40000000 -- \
        "${user[@]}" env "${ucx_env[@]}" UCX_POSIX_USE_PROC_LINK=n userspace/target/release/cma run \
        --stats "$tmp/userns_mpich_ucx.stats" -- \
        mpiexec.mpich -launcher fork -n 2 "${in_ns[@]}" tests/c/mpi_check_mpich
    need=
    without userns_ucx_fails_without_preload -- ucx_userns "" "$ucx_refused"
    check userns_ucx_perftest_tag_bw ucx_perftest 'Final:' 167772160 -- \
        ucx_userns "$lib" 'Final:'
    # Server and client are children of one shell, their launcher here.
    need=launcher fi_each="${in_ns[*]}"
    libfabric_user userns_libfabric_shm_pingpong 13385 env CMA_PRELOAD_NAME_LAUNCHER=1
    need= fi_each=
fi
echo "1..$n"
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:0 error:0"
