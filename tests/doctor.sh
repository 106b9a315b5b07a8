#!/usr/bin/env bash
# Runs inside the test VM, as root, from the repository root, with cma.ko
# loaded (tests/guest.sh calls it): `cma doctor` as an unprivileged user on a
# host where single copy through /dev/cma works, and on hosts where it
# cannot (the node closed to the user, the module's policy off, the module
# not loaded), each with the verdict, exit status and failed check it must
# give; Yama 1 and 2, and a seccomp filter refusing process_vm_readv with
# EPERM or ENOSYS, keep the verdict (process_vm_readv refused, /dev/cma still
# works). KTAP on stdout.
set -u
cma=$PWD/userspace/target/release/cma
tmp=$(mktemp -d)
scope=/proc/sys/kernel/yama/ptrace_scope
scope0=$(cat "$scope" 2>/dev/null || echo 0)
restore() {
    chmod 0666 /dev/cma 2>/dev/null
    [ -w /sys/module/cma/parameters/policy ] && echo consent > /sys/module/cma/parameters/policy
    [ -w "$scope" ] && echo "$scope0" > "$scope"
    rm -rf "$tmp"
}
trap restore EXIT
. tests/ktap.sh
as_user() { setpriv --reuid=1000 --regid=1000 --clear-groups "$@"; }
# The doctor's JSON as the user; `field verdict`, `level NAME` read it.
doctor() {
    as_user "$cma" doctor --json > "$tmp/json"
    echo $? > "$tmp/rc"
    cat "$tmp/json"
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/json" "$1"; }
level() {
    python3 -c 'import json,sys
c=[c for c in json.load(open(sys.argv[1]))["checks"] if c["name"]==sys.argv[2]]
print(c[0]["level"] if c else "missing")' "$tmp/json" "$1"
}
expect() { # what got want
    [ "$2" = "$3" ] || { echo "$1: got '$2', want '$3'"; return 1; }
}

works() {
    doctor || true
    expect verdict "$(field verdict)" cma && expect exit "$(cat "$tmp/rc")" 0 &&
        expect cma_copy "$(level cma_copy)" ok && expect device "$(level device)" ok
}
# The text report says the same, in a line a person reads.
works_text() {
    as_user "$cma" doctor > "$tmp/text"
    local rc=$?
    cat "$tmp/text"
    expect exit $rc 0 && grep -q '^verdict: cma (single copy works through /dev/cma' "$tmp/text"
}
yama() { # level: process_vm_readv refused between siblings, /dev/cma still works
    echo "$1" > "$scope" || return 1
    doctor || true
    echo "$scope0" > "$scope"
    expect verdict "$(field verdict)" cma && expect process_vm_readv "$(level process_vm_readv)" warn &&
        expect yama "$(level yama)" warn
}
# With Yama at 0, so that process_vm_readv works and the verdict says so.
yama0() { [ -w "$scope" ] && echo 0 > "$scope"; return 0; }
# A seccomp filter refusing process_vm_readv (as a container runtime's
# profile does), with EPERM or ENOSYS: /dev/cma still works.
seccomp() { # eperm|enosys
    as_user tests/c/seccomp_deny "$1" "$cma" doctor --json > "$tmp/json"
    echo $? > "$tmp/rc"
    cat "$tmp/json"
    local want=EPERM
    [ "$1" = enosys ] && want=ENOSYS
    expect verdict "$(field verdict)" cma && expect exit "$(cat "$tmp/rc")" 0 &&
        expect seccomp "$(level seccomp)" warn && expect process_vm_readv "$(level process_vm_readv)" warn &&
        grep -q "refused between sibling processes: $want" "$tmp/json"
}
node_closed() {
    chmod 0600 /dev/cma || return 1
    yama0
    doctor || true
    echo "$scope0" > "$scope" 2>/dev/null
    chmod 0666 /dev/cma
    expect verdict "$(field verdict)" process_vm_readv && expect exit "$(cat "$tmp/rc")" 1 &&
        expect device "$(level device)" fail && grep -q 'usermod -aG' "$tmp/json"
}
policy_off() {
    echo off > /sys/module/cma/parameters/policy || return 1
    yama0
    doctor || true
    echo "$scope0" > "$scope" 2>/dev/null
    echo consent > /sys/module/cma/parameters/policy
    expect verdict "$(field verdict)" process_vm_readv && expect exit "$(cat "$tmp/rc")" 1 &&
        expect policy "$(level policy)" fail && expect cma_copy "$(level cma_copy)" fail
}
# Nothing at all: no module, and Yama 2 refusing process_vm_readv too.
nothing_works() {
    rmmod cma || return 1
    echo 2 > "$scope"
    doctor || true
    echo "$scope0" > "$scope"
    insmod "${CMA_KO:?}" || return 1
    expect verdict "$(field verdict)" none && expect exit "$(cat "$tmp/rc")" 1 &&
        expect module "$(level module)" fail && grep -q 'modprobe cma' "$tmp/json"
}

echo "TAP version 13"
check doctor_single_copy_works works
check doctor_text_report works_text
if [ -w "$scope" ]; then
    check doctor_yama_1_still_cma yama 1
    check doctor_yama_2_still_cma yama 2
fi
check doctor_seccomp_eperm_still_cma seccomp eperm
check doctor_seccomp_enosys_still_cma seccomp enosys
check doctor_node_closed_to_user node_closed
check doctor_policy_off policy_off
[ -w "$scope" ] && check doctor_nothing_works nothing_works
totals
[ "$fail" = 0 ]
