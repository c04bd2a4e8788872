#!/usr/bin/env bash
# bench/identity.sh: what identity costs a call. The in-process authorisation every service makes
# (authz_authorize, common/authz: alma-authz-bench, one thread) and the identity service's Check and Login
# RPCs (alma-loadgen) against the runtime's echo baseline, in the same run. See docs/benchmarks.md
# ("Identity") for what the numbers mean.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/identity.sh [--runs R] [--duration S] [--warmup S] [--check-concurrency N]
                         [--login-concurrency N] [--authz-iterations N] [--pki DIR] [--help]

Builds BUILD (default build-bench/; RelWithDebInfo as shipped, -DALMA_BENCH=ON: alma-loadgen, alma-echo,
alma-audit, alma-identity, alma-admin, alma-cli, alma-authz-bench), makes the dev PKI with deploy/pki.sh if
needed, starts a private PostgreSQL with full durability (tests/harness/pg.sh) and a private Redis
(tests/harness/redis.sh), alma-audit (identity audits every login) and alma-identity with its shipped
settings (argon2id 64 MiB, 3 passes, 2 at a time), bootstraps a tenant and its platform administrator with
alma-admin, creates a pcp_clinician user with alma-cli and logs it in. Then R times, in alternating order:

  echo    alma-echo Echo (the worker path), mTLS, --check-concurrency calls in flight
  check   alma-identity Check of the user's own referral.review (a role permission), mTLS as the "bench"
          identity with the user's access token (refreshed before each run: tokens live 5 minutes),
          --check-concurrency calls in flight
  login   alma-identity Login of that user (password, no second factor), --login-concurrency in flight
  authz   alma-authz-bench against the same Redis: authz_authorize() calls per second on one thread, for a
          role permission and for a patient-scoped one (median of its own 5 runs)

and once at the end Login against alma-identity restarted with --argon2-m-kib 8 --argon2-t 1 (a user
created by that server, so its hash has those parameters), at --login-concurrency and at
--check-concurrency in flight: the service's own cost of a login without the password hash.

Reports calls/s, p50 and p99 per workload, the ratios check/echo and login/echo per run and their medians,
and the micro-benchmark's calls/s. Progress goes to stderr; stdout gets the markdown tables. Everything
listens on 127.0.0.1; every process started is stopped, Postgres and Redis included.

  --runs R                 runs (default 3, max 20)
  --duration S             measured seconds per workload and run (default 10, max 300)
  --warmup S               unrecorded seconds before each measurement (default 1, max 60)
  --check-concurrency N    calls in flight for echo and Check (default 64, max 1000)
  --login-concurrency N    calls in flight for Login (default 8, max 64)
  --authz-iterations N     calls per alma-authz-bench run (default 20000, max 1000000)
  --pki DIR                dev PKI directory (default BUILD/pki)

Environment: BUILD=DIR builds and runs from DIR instead of build-bench/ (an absolute path, or relative to
the repository).
EOF
}

PROG=identity.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/suite.sh
. "$(dirname "${BASH_SOURCE[0]}")/suite.sh"

runs=3
duration=10
warmup=1
check_conc=64
login_conc=8
authz_iterations=20000
pki=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --runs | --duration | --warmup | --check-concurrency | --login-concurrency | --authz-iterations | --pki)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --runs) runs=$(int_arg --runs "$2" 1 20) ;;
        --duration) duration=$(int_arg --duration "$2" 1 300) ;;
        --warmup) warmup=$(int_arg --warmup "$2" 0 60) ;;
        --check-concurrency) check_conc=$(int_arg --check-concurrency "$2" 1 1000) ;;
        --login-concurrency) login_conc=$(int_arg --login-concurrency "$2" 1 64) ;;
        --authz-iterations) authz_iterations=$(int_arg --authz-iterations "$2" 100 1000000) ;;
        --pki) pki="$2" ;;
        esac
        shift 2
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="${BUILD:-$root/build-bench}"
case "$build" in
/*) ;;
*) build="$root/$build" ;;
esac
[ -n "$pki" ] || pki="$build/pki"
concurrency=$check_conc # suite.sh's one_echo: echo runs at the Check concurrency
deadline_ms=5000
loadgen="$build/bench/alma-loadgen"
echo_bin="$build/services/echo/alma-echo"
audit_bin="$build/services/audit/alma-audit"
identity_bin="$build/services/identity/alma-identity"
admin_bin="$build/tools/alma-admin"
cli_bin="$build/tools/alma-cli"
authz_bench="$build/common/authz/alma-authz-bench"
pg_sh="$root/tests/harness/pg.sh"
redis_sh="$root/tests/harness/redis.sh"
tenant=bench-clinic
idn_schema=bench_identity
check_method=/alma.identity.v1.Identity/Check
login_method=/alma.identity.v1.Identity/Login

for t in psql openssl timeout base64; do
    command -v "$t" >/dev/null 2>&1 || die "$t is required (apt-get install postgresql-client openssl coreutils)"
done
[ -x "$pg_sh" ] || die "$pg_sh is missing"
[ -x "$redis_sh" ] || die "$redis_sh is missing"

# Only the settings given here reach the programs started (they read ALMA_* from the environment).
for v in "${!ALMA_@}"; do unset "$v"; done
umask 077 # passwords, tokens, the session's refresh secret, the master key: all in $tmp
tmp=$(mktemp -d "${TMPDIR:-/tmp}/alma-bench-identity.XXXXXX")
pg_started=0
redis_started=0
cleanup() {
    kill_started
    if [ "$pg_started" -eq 1 ]; then
        "$pg_sh" stop "$tmp/pg" >/dev/null 2>&1 || log "stopping PostgreSQL ($tmp/pg) failed"
    fi
    if [ "$redis_started" -eq 1 ]; then
        "$redis_sh" stop "$tmp/redis" >/dev/null 2>&1 || log "stopping Redis ($tmp/redis) failed"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build, PKI, Postgres, Redis, keys ---------------------------------------------------------------------
log "configuring and building $build (log: $build/bench-build.log)"
mkdir -p "$build"
: >"$build/bench-build.log"
if ! build_targets "$build" "$build/bench-build.log" alma-loadgen alma-echo alma-audit alma-identity alma-admin \
    alma-cli alma-authz-bench; then
    grep -E 'error|Error' "$build/bench-build.log" | tail -n 20 >&2 || true
    die "build failed (see $build/bench-build.log)"
fi
for b in "$loadgen" "$echo_bin" "$audit_bin" "$identity_bin" "$admin_bin" "$cli_bin" "$authz_bench"; do
    [ -x "$b" ] || die "$b was not built"
done
make_pki "$pki" ca.pem echo.pem echo-key.pem audit.pem audit-key.pem identity.pem identity-key.pem bench.pem \
    bench-key.pem alma-cli.pem alma-cli-key.pem

log "starting a private PostgreSQL (tests/harness/pg.sh, fsync=on, synchronous_commit=on) and Redis"
pg_started=1
start_durable_pg "$pg_sh" "$tmp/pg"
redis_started=1
"$redis_sh" start "$tmp/redis" >&2 || die "could not start Redis"
redis_port=$(cat "$tmp/redis/redis.port")
log "PostgreSQL $pg_version: $pg_settings; Redis on 127.0.0.1:$redis_port"

openssl genpkey -algorithm ed25519 -out "$tmp/signing-key.pem" 2>/dev/null || die "openssl genpkey failed"
openssl rand -base64 32 >"$tmp/identity-master.key" || die "openssl rand failed"

# ---- servers -----------------------------------------------------------------------------------------------
server_pid=""
server_port=""
# start_server echo|audit|identity LOGFILE [FLAG...]: sets server_pid and server_port (every port is :0, read
# back from the ready-file). Secrets and database URIs go by environment, as deployed; the superuser is both
# the runtime role and the owner (each service migrates its schema and grants itself the runtime rights).
start_server() {
    local kind="$1" logf="$2" ready="$2.ready"
    shift 2
    local args=(--api-addr=127.0.0.1:0 --admin-addr=127.0.0.1:0 --metrics-addr=127.0.0.1:0
        "--tls-key=$pki/$kind-key.pem" "--tls-cert=$pki/$kind.pem" "--tls-ca=$pki/ca.pem"
        --trust-domain=alma.local --drain-seconds=2 "--ready-file=$ready")
    rm -f "$ready"
    case "$kind" in
    audit)
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_SIGNING_KEY="$tmp/signing-key.pem" \
            "$audit_bin" "${args[@]}" --pg-schema=bench_identity_audit --origin=bench.alma.local/audit \
            "$@" >"$logf" 2>&1 &
        ;;
    identity)
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_MASTER_KEY_FILE="$tmp/identity-master.key" \
            "$identity_bin" "${args[@]}" "--pg-schema=$idn_schema" "--redis-addr=127.0.0.1:$redis_port" \
            "--audit-addr=127.0.0.1:$audit_port" "$@" >"$logf" 2>&1 &
        ;;
    *)
        "$echo_bin" "${args[@]}" "$@" >"$logf" 2>&1 &
        ;;
    esac
    await_server "$kind" "$logf" "$ready"
}

log "starting alma-audit and alma-identity (shipped settings)"
start_server audit "$tmp/audit.log" || die "alma-audit did not start"
audit_pid=$server_pid
audit_port=$server_port
start_server identity "$tmp/identity.log" || die "alma-identity did not start"
identity_pid=$server_pid
identity_port=$server_port

# ---- tenant, administrator, the benchmark's users ------------------------------------------------------------
bootstrap_admin

# bench-pcp is created through the identity server that runs now (so its password hash has that server's
# argon2 parameters) and logged in: its session in $tmp/bench-pcp.session, a token in $tmp/bench-pcp.token.
log "alma-cli identity-create-user bench-pcp (pcp_clinician), identity-login"
make_user bench-pcp pcp_clinician
cli --token-file "$tmp/bench-pcp.token" identity-check --permission referral.review >"$tmp/check.out" 2>&1 ||
    die "bench-pcp is not allowed referral.review: $(tr '\n' ' ' <"$tmp/check.out")"
log "bench-pcp: $(tr '\n' ' ' <"$tmp/check.out")"

# ---- runs --------------------------------------------------------------------------------------------------
declare -A qps p50 p99 authz
okruns_echo=0
okruns_check=0
okruns_login=0
okruns_authz=0

# one_echo (suite.sh) runs echo at $concurrency, the Check concurrency.
one_check() { # RUN
    local run="$1" out="$tmp/check-$1.json" rc=0
    # A fresh token for the run (5-minute lifetime); the refresh also restarts the session's idle timeout.
    if ! refresh bench-pcp; then
        log "check run $run FAILED: identity-refresh: $(tail -c 300 "$tmp/bench-pcp.err")"
        return 0
    fi
    load "$identity_port" "$check_method" "$check_conc" "$out" --payload identity-check \
        --check-permission referral.review --authorization-file "$tmp/bench-pcp.token" || rc=$?
    record check "$run" "$out" "$rc" && okruns_check=$((okruns_check + 1))
    return 0
}

# login_run KIND RUN CONCURRENCY USERNAME: Login of USERNAME against identity_port.
login_run() {
    local kind="$1" run="$2" conc="$3" user="$4" out="$tmp/$1-$2.json" rc=0
    load "$identity_port" "$login_method" "$conc" "$out" --payload identity-login --login-tenant "$tenant" \
        --login-username "$user" --login-password-file "$tmp/$user.pw" || rc=$?
    record "$kind" "$run" "$out" "$rc" logins/s
}

one_login() { # RUN
    login_run login "$1" "$login_conc" bench-pcp && okruns_login=$((okruns_login + 1))
    return 0
}

# alma-authz-bench prints one line per measurement, "<label>  median <N> calls/s (...)"; every such line is
# kept under its label (authz[label|run]), in the order first seen (authz_labels), whatever the labels are.
authz_labels=()
one_authz() { # RUN
    local run="$1" out="$tmp/authz-$1.out" rc=0 limit=$((authz_iterations / 100 + 120)) label n k found=0
    timeout -k 5 "$limit" "$authz_bench" --redis-port "$redis_port" --iterations "$authz_iterations" \
        >"$out" 2>&1 || rc=$?
    while IFS='|' read -r label n; do
        if [ -z "$label" ] || [ -z "$n" ]; then continue; fi
        authz["$label|$run"]=$n
        found=$((found + 1))
        local seen=0
        for k in "${authz_labels[@]+"${authz_labels[@]}"}"; do [ "$k" = "$label" ] && seen=1; done
        [ "$seen" -eq 1 ] || authz_labels+=("$label")
    done < <(sed -n 's/^\(authz[^|]*[^ |]\)  *median  *\([0-9][0-9]*\) calls\/s.*/\1|\2/p' "$out")
    if [ "$rc" -ne 0 ] || [ "$found" -lt 3 ]; then
        log "authz run $run FAILED (exit $rc): $(tail -c 400 "$out" | tr '\n' ' ')"
        return 0
    fi
    okruns_authz=$((okruns_authz + 1))
    log "authz run $run (one thread): $(sed -n 's/^\(authz[^|]*[^ |]\)  *median  *\([0-9][0-9]*\) calls\/s.*/\1 \2\/s;/p' "$out" | tr '\n' ' ')"
}

log "runs $runs, duration ${duration}s, warmup ${warmup}s; echo and Check $check_conc in flight, Login $login_conc"
kinds=(echo check login authz)
for run in $(seq 1 "$runs"); do
    # Alternate the order so slow drift (other load, Postgres' growth, thermal) does not favour one side.
    order=("${kinds[@]}")
    if [ $((run % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#kinds[@]} - 1; i >= 0; i--)); do order+=("${kinds[$i]}"); done
    fi
    for kind in "${order[@]}"; do
        "one_$kind" "$run"
    done
done

# The service's own cost of a login: identity restarted with cheap argon2 parameters and a user whose hash
# has them (a password is verified with its own hash's parameters: bench-pcp's would still cost the full hash).
log "Login once with --argon2-m-kib 8 --argon2-t 1 (identity restarted; user bench-fast created by it)"
stop_server "$identity_pid"
fast_ok=0
if start_server identity "$tmp/identity-fast.log" --argon2-m-kib=8 --argon2-t=1; then
    identity_pid=$server_pid
    identity_port=$server_port
    make_user bench-fast pcp_clinician
    login_run fastlogin 1 "$login_conc" bench-fast && fast_ok=$((fast_ok + 1))
    login_run fastlogin64 1 "$check_conc" bench-fast && fast_ok=$((fast_ok + 1))
    stop_server "$identity_pid"
else
    log "alma-identity with cheap argon2 parameters did not start: no fast-login numbers"
fi
stop_server "$audit_pid"

# The audit events the logins wrote: every Login is one durable append before it answers.
logins_audited=$(psql_q "SELECT count(*) FROM bench_identity_audit.events" 2>/dev/null || echo "?")

# ---- report ------------------------------------------------------------------------------------------------
authz_values() { # LABEL
    local run out=""
    for run in $(seq 1 "$runs"); do out+=" ${authz["$1|$run"]:-}"; done
    echo "$out"
}
median4() { # like median, 4 decimals
    printf '%s\n' "$@" | sed '/^$/d' | sort -g |
        awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) printf "%.4f\n", a[(NR+1)/2];
                              else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'
}
us_per_call() { # CALLS_PER_S
    if [ "$1" = "-" ]; then echo "-"; else awk -v q="$1" 'BEGIN {printf "%.1f", 1e6 / q}'; fi
}
r_check=""
r_login=""
for run in $(seq 1 "$runs"); do
    x=$(ratio "${qps[check,$run]:-}" "${qps[echo,$run]:-}" 4)
    [ "$x" != "-" ] && r_check+=" $x"
    x=$(ratio "${qps[login,$run]:-}" "${qps[echo,$run]:-}" 4)
    [ "$x" != "-" ] && r_login+=" $x"
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
grpc_version=$(pkg-config --modversion grpc++ 2>/dev/null || echo "?")
redis_version=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
when=$(date -u +%Y-%m-%d)

echo
echo "| workload | in flight | calls/s | p50 (µs) | p99 (µs) | runs ok |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
# shellcheck disable=SC2046 # word splitting of the value lists is intended
{
    echo "| alma-echo Echo (worker), mTLS | $check_conc | $(median $(values echo qps)) | $(median $(values echo p50)) |" \
        "$(median $(values echo p99)) | $okruns_echo/$runs |"
    echo "| alma-identity Check (role permission), mTLS + token | $check_conc | $(median $(values check qps)) |" \
        "$(median $(values check p50)) | $(median $(values check p99)) | $okruns_check/$runs |"
    echo "| alma-identity Login (argon2id 64 MiB, t=3, 2 at a time) | $login_conc | $(median $(values login qps)) |" \
        "$(median $(values login p50)) | $(median $(values login p99)) | $okruns_login/$runs |"
}
for k in fastlogin fastlogin64; do
    c=$login_conc
    [ "$k" = fastlogin64 ] && c=$check_conc
    echo "| alma-identity Login (argon2id 8 KiB, t=1), once | $c | ${qps[$k,1]:--} | ${p50[$k,1]:--} |" \
        "${p99[$k,1]:--} | $([ -n "${qps[$k,1]:-}" ] && echo 1/1 || echo 0/1) |"
done
echo
# shellcheck disable=SC2086 # word splitting of the value lists is intended
echo "Medians of the per-run ratios: Check/echo **$(median4 $r_check)**, Login/echo **$(median4 $r_login)**."
echo
echo "| in-process (alma-authz-bench: role permission referral.review, patient-scoped phi.read.clinical) | calls/s | µs/call | per run |"
echo "| --- | ---: | ---: | --- |"
for l in "${authz_labels[@]+"${authz_labels[@]}"}"; do
    # shellcheck disable=SC2046 # word splitting of the value lists is intended
    m=$(median $(authz_values "$l"))
    per_run=$(authz_values "$l" | sed 's/^ *//; s/  */, /g')
    echo "| $l | $m | $(us_per_call "$m") | $per_run |"
done
echo
echo "| run | order | echo calls/s | Check calls/s | Login logins/s | Check/echo | Login/echo |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
for run in $(seq 1 "$runs"); do
    if [ $((run % 2)) -eq 0 ]; then o="authz, login, check, echo"; else o="echo, check, login, authz"; fi
    echo "| $run | $o | ${qps[echo,$run]:--} | ${qps[check,$run]:--} | ${qps[login,$run]:--} |" \
        "$(ratio "${qps[check,$run]:-}" "${qps[echo,$run]:-}" 4) |" \
        "$(ratio "${qps[login,$run]:-}" "${qps[echo,$run]:-}" 4) |"
done
echo
echo "$runs runs, interleaved (order alternating), ${duration} s measured after ${warmup} s warmup; mTLS, 1 channel;" \
    "alma-identity and alma-audit with their shipped settings (pg-pool-size 16, workers default), one of each for" \
    "all runs; $logins_audited audit events written (each Login waits for its own, durably); PostgreSQL $pg_version ($pg_settings)," \
    "superuser for pg-uri and pg-owner-uri; Redis ${redis_version:-?}; $(nproc) cores ($cpu) shared by client," \
    "servers, PostgreSQL and Redis; gRPC $grpc_version; $when."
[ "$fast_ok" -eq 2 ] || log "the fast-login runs did not all succeed ($fast_ok of 2)"
