#!/usr/bin/env bash
# ctest valgrind_echo_daemon: one whole life of alma-echo under valgrind -- start, calls of every kind
# (Echo, EchoInline, Expand, Chat over mTLS; a refused client certificate; health on the admin port and over
# mTLS; a metrics scrape), then SIGTERM while a call is in flight -- and require valgrind's exit status to be
# 0: no definite leak and no memory error (99 = one was found; the report is printed).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: tests/echo/valgrind_daemon.sh ALMA_ECHO ALMA_CLI PKI_DIR

Runs ALMA_ECHO under valgrind (--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99),
drives it with ALMA_CLI using the dev PKI in PKI_DIR (deploy/pki.sh), stops it with SIGTERM and exits 0
only when valgrind reported nothing. Environment: ALMA_VALGRIND (valgrind binary), ALMA_VALGRIND_SUPP
(suppression file; default tests/echo/valgrind.supp beside this script).
EOF
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac
[ $# -eq 3 ] || {
    usage >&2
    exit 2
}

echo_bin=$1
cli=$2
pki=$3
valgrind=${ALMA_VALGRIND:-valgrind}
supp=${ALMA_VALGRIND_SUPP:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/valgrind.supp}
# valgrind is slow: generous bounds everywhere.
ready_timeout=60
stop_timeout=120
call_timeout_ms=30000

# Only the settings given below reach the daemon and the CLI.
while IFS= read -r v; do
    unset "$v"
done < <(compgen -e | grep '^ALMA_' || true)

work=$(mktemp -d "${TMPDIR:-/tmp}/alma-valgrind.XXXXXX")
pid=
slow=
run=none
cleanup() {
    [ -n "$slow" ] && kill -KILL "$slow" 2>/dev/null
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "valgrind_daemon.sh: $*" >&2
    echo "--- alma-echo log (tail)" >&2
    tail -n 20 "$work/$run.log" >&2 || true
    echo "--- valgrind report" >&2
    cat "$work/$run.valgrind" >&2 || true
    exit 1
}

# start_daemon RUN [FLAGS...]: alma-echo under valgrind, log in $work/RUN.log, report in $work/RUN.valgrind;
# sets pid, api, admin, metrics.
start_daemon() {
    run=$1
    shift
    rm -f "$work/ready"
    "$valgrind" --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --track-fds=no \
        --num-callers=40 --suppressions="$supp" --log-file="$work/$run.valgrind" \
        "$echo_bin" --api-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
        --tls-cert "$pki/echo.pem" --tls-key "$pki/echo-key.pem" --tls-ca "$pki/ca.pem" \
        --workers 2 --ready-file "$work/ready" "$@" 2>"$work/$run.log" &
    pid=$!
    for ((i = 0; i < ready_timeout * 10; i++)); do
        [ -s "$work/ready" ] && break
        kill -0 "$pid" 2>/dev/null || fail "alma-echo exited before it was ready"
        sleep 0.1
    done
    [ -s "$work/ready" ] || fail "no ready-file within ${ready_timeout}s"
    read -r ready <"$work/ready"
    api=${ready#api=}
    api=${api%% *}
    admin=${ready#*admin=}
    admin=${admin%% *}
    metrics=${ready#*metrics=}
    metrics=${metrics%% *}
    echo "$run: alma-echo under valgrind: api=$api admin=$admin metrics=$metrics"
}

expect_out() { # expect_out WANTED_SUBSTRING CLI_ARGS...
    local want=$1 out
    shift
    out=$("$cli" "$@") || fail "alma-cli $* failed"
    grep -qF -- "$want" <<<"$out" || fail "alma-cli $* printed: $out"
}

scrape() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 30 "http://127.0.0.1:$metrics/metrics"
    else
        exec 3<>"/dev/tcp/127.0.0.1/$metrics"
        printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
        cat <&3
        exec 3<&-
    fi
}

# start_slow_call: an Echo with a delay in the background ($slow), returned once the server counts it.
start_slow_call() {
    "$cli" "${mtls[@]}" echo slow --delay-ms 3000 >"$work/$run.slow" 2>&1 &
    slow=$!
    for ((i = 0; i < 300; i++)); do
        scrape 2>/dev/null | grep -q '^alma_rpc_server_inflight_calls{service="echo"} 1' && return 0
        sleep 0.1
    done
    fail "the slow call never showed as in flight"
}

# stop_daemon: SIGTERM, wait (bounded), then valgrind's verdict from its exit status.
stop_daemon() {
    local status=
    kill -TERM "$pid"
    for ((i = 0; i < stop_timeout * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            set +e
            wait "$pid"
            status=$?
            set -e
            break
        fi
        sleep 0.1
    done
    [ -n "$status" ] || fail "alma-echo did not exit within ${stop_timeout}s of SIGTERM"
    pid=
    grep -q '"msg":"stopped"' "$work/$run.log" || fail "no \"stopped\" line in the log"
    case "$status" in
    0)
        echo "$run: valgrind found no definite leak and no memory error"
        grep -E "definitely lost|indirectly lost|possibly lost|ERROR SUMMARY" "$work/$run.valgrind" || true
        ;;
    99) fail "valgrind found a definite leak or a memory error" ;;
    *) fail "alma-echo under valgrind exited with status $status" ;;
    esac
}

# Run 1: every kind of call, then SIGTERM with a call in flight that the drain lets finish.
start_daemon calls --drain-seconds 60
mtls=(--addr "127.0.0.1:$api" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" --ca "$pki/ca.pem"
    --timeout-ms "$call_timeout_ms")
plain=(--addr "127.0.0.1:$admin" --insecure --timeout-ms "$call_timeout_ms")
expect_out "message: hello" "${mtls[@]}" echo hello
expect_out "message: fast" "${mtls[@]}" echo fast --inline
expect_out "4: tick" "${mtls[@]}" expand tick 5
expect_out "2: three" "${mtls[@]}" chat one two three
expect_out "SERVING" "${plain[@]}" health
expect_out "SERVING" "${mtls[@]}" health echo
# Failures take other paths through the server: a bad argument, a refused certificate.
if "$cli" "${mtls[@]}" echo x --delay-ms 600000 2>/dev/null; then
    fail "an out-of-range delay was accepted"
fi
if "$cli" --addr "127.0.0.1:$api" --cert "$pki/rogue-client.pem" --key "$pki/rogue-client-key.pem" \
    --ca "$pki/ca.pem" --timeout-ms "$call_timeout_ms" echo rogue 2>/dev/null; then
    fail "a client certificate from another CA was accepted"
fi
page=$(scrape) || fail "metrics scrape failed"
grep -q 'alma_rpc_server_calls_total{service="echo",method="/alma.echo.v1.Echo/Chat",code="OK"}' <<<"$page" ||
    fail "metrics page lacks the Chat call"
start_slow_call
stop_daemon
wait "$slow" || fail "the call in flight during the drain failed: $(cat "$work/$run.slow")"
slow=

# Run 2: --drain-seconds 0, so SIGTERM cancels the call in flight (the teardown path of cancelled calls).
start_daemon cancel --drain-seconds 0
mtls=(--addr "127.0.0.1:$api" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" --ca "$pki/ca.pem"
    --timeout-ms "$call_timeout_ms")
start_slow_call
stop_daemon
if wait "$slow"; then
    fail "the call in flight survived a stop without drain time"
fi
slow=
grep -q '"msg":"stopped","count":"1"' "$work/$run.log" || fail "the stop did not cancel exactly one call"
