#!/usr/bin/env bash
# bench/run.sh: our echo service against the C++ async greeter, plaintext and mTLS, same machine, same run.
# See docs/benchmarks.md for what the numbers mean.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/run.sh [--runs R] [--duration S] [--warmup S] [--concurrency N] [--pki DIR] [--help]

Builds build-bench/ (RelWithDebInfo as shipped, -DALMA_BENCH=ON), makes the dev PKI with deploy/pki.sh if needed, then for
plaintext and for mTLS, R times: the C++ async greeter and our echo service (build-bench/services/echo/alma-echo),
one after the other and in alternating order, each started on free loopback ports, loaded by alma-loadgen,
and stopped with SIGTERM. Prints the median of the R runs per server and mode: a text table, then the same as
a markdown table for the README. Progress goes to stderr, results to stdout.

  --runs R         runs per mode (default 3, max 20)
  --duration S     measured seconds per load run (default 10, max 300)
  --warmup S       unrecorded seconds before each measurement (default 1, max 60)
  --concurrency N  calls in flight (default 64, max 10000)
  --pki DIR        dev PKI directory (default build-bench/pki)
EOF
}

PROG=run.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=3
duration=10
warmup=1
concurrency=64
pki=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --runs | --duration | --warmup | --concurrency | --pki)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --runs) runs=$(int_arg --runs "$2" 1 20) ;;
        --duration) duration=$(int_arg --duration "$2" 1 300) ;;
        --warmup) warmup=$(int_arg --warmup "$2" 0 60) ;;
        --concurrency) concurrency=$(int_arg --concurrency "$2" 1 10000) ;;
        --pki) pki="$2" ;;
        esac
        shift 2
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build-bench"
[ -n "$pki" ] || pki="$build/pki"
deadline_ms=5000
loadgen="$build/bench/alma-loadgen"
greeter="$build/bench/greeter_async_server"
echo_bin="$build/services/echo/alma-echo"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/alma-bench.XXXXXX")
cleanup() {
    kill_started
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build and PKI -----------------------------------------------------------------------------------------
log "configuring and building $build (log: $build/bench-build.log)"
mkdir -p "$build"
: >"$build/bench-build.log"
if ! build_targets "$build" "$build/bench-build.log" alma-loadgen greeter_async_server; then
    tail -n 30 "$build/bench-build.log" >&2
    die "build failed (see $build/bench-build.log)"
fi
have_echo=1
if ! cmake --build "$build" --target alma-echo -j "$(nproc)" >>"$build/bench-build.log" 2>&1 || [ ! -x "$echo_bin" ]; then
    have_echo=0
    log "our echo service ($echo_bin) does not build yet: measuring the C++ peer only"
fi

make_pki "$pki" ca.pem echo.pem echo-key.pem bench.pem bench-key.pem

# ---- servers -----------------------------------------------------------------------------------------------
server_pid=""
server_port=""
# start_server peer|echo plaintext|mtls LOGFILE: sets server_pid and server_port.
start_server() {
    local kind="$1" mode="$2" logf="$3"
    if [ "$kind" = peer ]; then
        local args=(--addr 127.0.0.1:0)
        [ "$mode" = mtls ] && args+=(--tls --cert "$pki/echo.pem" --key "$pki/echo-key.pem" --ca "$pki/ca.pem")
        "$greeter" "${args[@]}" >"$logf.out" 2>"$logf" &
        server_pid=$!
        started_pids+=("$server_pid")
        server_port=""
        for _ in $(seq 1 150); do
            server_port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$logf.out" 2>/dev/null)
            [ -n "$server_port" ] && break
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
    else
        server_port=$(free_port)
        local admin metrics
        admin=$(free_port)
        metrics=$(free_port)
        local args=(--api-addr "127.0.0.1:$server_port" --admin-addr "127.0.0.1:$admin"
            --metrics-addr "127.0.0.1:$metrics" --tls-cert "$pki/echo.pem" --tls-key "$pki/echo-key.pem"
            --tls-ca "$pki/ca.pem" --trust-domain alma.local --drain-seconds 2)
        [ "$mode" = plaintext ] && args+=(--insecure-api true)
        "$echo_bin" "${args[@]}" >"$logf.out" 2>"$logf" &
        server_pid=$!
        started_pids+=("$server_pid")
    fi
    if [ -z "$server_port" ] || ! wait_listening "$server_pid" "$server_port"; then
        log "$kind ($mode) did not start; its log:"
        tail -n 20 "$logf" >&2 || true
        stop_server "$server_pid"
        return 1
    fi
}

# ---- runs --------------------------------------------------------------------------------------------------
declare -A qps p50 p99 okruns
# one_run peer|echo plaintext|mtls RUN
one_run() {
    local kind="$1" mode="$2" run="$3" method target_args=()
    local logf="$tmp/$kind-$mode-$run.log" out="$tmp/$kind-$mode-$run.json"
    case "$kind" in
    peer) method=/helloworld.Greeter/SayHello ;;
    inline) method=/alma.echo.v1.Echo/EchoInline ;; # the runtime's one-batch fast path
    *) method=/alma.echo.v1.Echo/Echo ;;            # a worker thread, as handlers that block use
    esac
    start_server "$kind" "$mode" "$logf" || return 0
    [ "$mode" = mtls ] && target_args=(--tls --cert "$pki/bench.pem" --key "$pki/bench-key.pem" --ca "$pki/ca.pem"
        --server-name localhost)
    local rc=0 limit=$((warmup + duration + 2 * deadline_ms / 1000 + 30))
    timeout -k 5 "$limit" "$loadgen" --target "127.0.0.1:$server_port" --method "$method" \
        --concurrency "$concurrency" --duration "$duration" --warmup "$warmup" --deadline-ms "$deadline_ms" \
        "${target_args[@]+"${target_args[@]}"}" --json >"$out" 2>"$out.err" || rc=$?
    stop_server "$server_pid"
    local q
    q=$(json_num calls_per_s "$out")
    if [ "$rc" -ne 0 ] || [ -z "$q" ]; then
        log "$mode $kind run $run FAILED (alma-loadgen exit $rc): $(tail -c 400 "$out" "$out.err" 2>/dev/null | tr '\n' ' ')"
        return 0
    fi
    qps["$mode,$kind"]+=" $q"
    p50["$mode,$kind"]+=" $(json_num p50_us "$out")"
    p99["$mode,$kind"]+=" $(json_num p99_us "$out")"
    okruns["$mode,$kind"]=$((${okruns["$mode,$kind"]:-0} + 1))
    log "$mode $kind run $run: $q calls/s, p50 $(json_num p50_us "$out") us, p99 $(json_num p99_us "$out") us"
}

servers=(peer)
[ "$have_echo" -eq 1 ] && servers+=(inline worker)
log "runs $runs, duration ${duration}s, warmup ${warmup}s, concurrency $concurrency; servers: ${servers[*]}"
for mode in plaintext mtls; do
    for run in $(seq 1 "$runs"); do
        # Alternate who goes first so slow drift (thermal, other load) does not favour one side.
        order=("${servers[@]}")
        if [ $((run % 2)) -eq 0 ]; then
            order=()
            for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[$i]}"); done
        fi
        for kind in "${order[@]}"; do
            one_run "$kind" "$mode" "$run"
        done
    done
done

# ---- report ------------------------------------------------------------------------------------------------
declare -A cell
for mode in plaintext mtls; do
    for kind in peer inline worker; do
        k="$mode,$kind"
        # shellcheck disable=SC2086 # word splitting of the value lists is intended
        cell["$k,qps"]=$(median ${qps[$k]:-})
        # shellcheck disable=SC2086
        cell["$k,p50"]=$(median ${p50[$k]:-})
        # shellcheck disable=SC2086
        cell["$k,p99"]=$(median ${p99[$k]:-})
        cell["$k,ok"]="${okruns[$k]:-0}/$runs"
    done
    b=${cell["$mode,peer,qps"]}
    for kind in inline worker; do
        a=${cell["$mode,$kind,qps"]}
        if [ "$a" != "-" ] && [ "$b" != "-" ]; then
            cell["$mode,$kind,ratio"]=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')
        else
            cell["$mode,$kind,ratio"]="-"
        fi
    done
done
label() {
    case "$1" in
    peer) echo "C++ async greeter" ;;
    inline) echo "alma-echo EchoInline" ;;
    *) echo "alma-echo Echo (worker)" ;;
    esac
}
mode_label() { if [ "$1" = mtls ]; then echo "mTLS"; else echo "plaintext"; fi; }

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
grpc_version=$(pkg-config --modversion grpc++ 2>/dev/null || echo "?")
when=$(date -u +%Y-%m-%d)
echo
printf '%-10s %-24s %12s %10s %10s %8s %12s\n' mode server calls/s "p50 us" "p99 us" runs echo/peer
for mode in plaintext mtls; do
    for kind in peer inline worker; do
        r=""
        [ "$kind" != peer ] && r=${cell["$mode,$kind,ratio"]}
        printf '%-10s %-24s %12s %10s %10s %8s %12s\n' "$(mode_label "$mode")" "$(label "$kind")" \
            "${cell["$mode,$kind,qps"]}" "${cell["$mode,$kind,p50"]}" "${cell["$mode,$kind,p99"]}" \
            "${cell["$mode,$kind,ok"]}" "$r"
    done
done
echo
echo "Median of $runs runs, interleaved; unary, $concurrency calls in flight, 1 channel, 18-byte request," \
    "${duration} s measured after ${warmup} s warmup; $(nproc) cores ($cpu), gRPC $grpc_version, $when."
echo
echo "| mode | server | calls/s | p50 (µs) | p99 (µs) | runs ok | echo/peer calls/s |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for mode in plaintext mtls; do
    for kind in peer inline worker; do
        r=""
        [ "$kind" != peer ] && r=${cell["$mode,$kind,ratio"]}
        echo "| $(mode_label "$mode") | $(label "$kind") | ${cell["$mode,$kind,qps"]} | ${cell["$mode,$kind,p50"]} |" \
            "${cell["$mode,$kind,p99"]} | ${cell["$mode,$kind,ok"]} | $r |"
    done
done
