# Sourced by the guest's shell suites (tests/install.sh, tests/doctor.sh):
# KTAP lines for tests that are commands. The suite sets $tmp (a scratch
# directory) before calling them.
n=0 pass=0 fail=0
check() { # name command...: a test that passes if the command does
    local name=$1; shift
    local start=$SECONDS
    n=$((n + 1))
    if "$@" > "$tmp/out" 2>&1; then
        pass=$((pass + 1)); echo "# $name: $((SECONDS - start)) s"; echo "ok $n $name"
    else
        fail=$((fail + 1)); sed 's/^/# /' "$tmp/out" | tail -n 40
        echo "# $name: $((SECONDS - start)) s"; echo "not ok $n $name"
    fi
}
totals() {
    echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:0 error:0"
}
