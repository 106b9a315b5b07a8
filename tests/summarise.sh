#!/usr/bin/env bash
# Reads the log of a guest test run (tests/guest.sh) and prints the verdict:
# the sum of every KTAP "# Totals:" line, plus the host's own checks (the
# guest finished, its kernel log is clean). The last line is "N passed, N failed";
# the exit status is 0 only if nothing failed.
#
#   tests/summarise.sh LOG [GUEST_EXIT_STATUS]
set -uo pipefail
log=$1
status=${2:-0}
pass=0 fail=0 skip=0
while read -r p f s; do
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
done < <(sed -n 's/^# Totals: pass:\([0-9]*\) fail:\([0-9]*\) xfail:[0-9]* xpass:[0-9]* skip:\([0-9]*\).*/\1 \2 \3/p' "$log")

host_check() { # name, result (0 ok)
    if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok host.$1"; else fail=$((fail + 1)); echo "not ok host.$1"; fi
}

echo "# ----- host checks"
finished=1
grep -q '^===== dmesg end' "$log" && finished=0
[ "$finished" = 0 ] || echo "# the guest did not finish (exit status $status): crash, panic or timeout"
host_check guest_finished "$finished"

# Anything the kernel says when it is unhappy. Lines from the suites are not
# in this section, only the kernel's own log.
bad='Oops|BUG:|WARNING:|Kernel panic|general protection fault|Call Trace|KASAN:|UBSAN:|KFENCE:|suspected memory leak|possible recursive locking|circular locking dependency|inconsistent lock state|INFO: task .* blocked|soft lockup|hard LOCKUP|RCU stall|self-detected stall|refcount_t:|list_add corruption|list_del corruption|stack-protector|Unable to handle'
# The OOM killer's own report (a stack dump of the task that hit the limit)
# is expected where a test drives a memory cgroup into OOM on purpose: its
# lines, from "invoked oom-killer" to the kill, are left out.
dmesg_bad=$(sed -n '/^===== dmesg begin/,/^===== dmesg end/p' "$log" \
    | sed '/invoked oom-killer:/,/Killed process/d' | grep -E "$bad" || true)
if [ -n "$dmesg_bad" ]; then
    echo "# kernel log shows trouble:"
    sed 's/^/#   /' <<<"$dmesg_bad"
fi
[ -z "$dmesg_bad" ] && [ "$finished" = 0 ]
host_check kernel_log_clean $?

[ "$skip" -gt 0 ] && echo "# $skip skipped"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
