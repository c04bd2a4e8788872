#!/usr/bin/env bash
# bench/guideline.sh: what a guideline review costs. ReviewReferral from a stateless input (token
# authorisation, the care relationship, a durable audit event before the answer, rule evaluation, the review
# stored) against the runtime's echo baseline in the same run; and the rule evaluation alone, in-process
# (alma-guideline-eval-bench). See docs/benchmarks.md ("The guideline engine") for what the numbers mean.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/guideline.sh [--runs R] [--duration S] [--warmup S] [--concurrency N] [--eval-n N]
                          [--pki DIR] [--help]

Builds BUILD (default build-bench/; RelWithDebInfo as shipped, -DALMA_BENCH=ON: alma-loadgen, alma-echo,
alma-audit, alma-identity, alma-guideline, alma-guideline-eval-bench, alma-admin, alma-cli), makes the dev
PKI with deploy/pki.sh if needed, starts a private PostgreSQL with full durability (tests/harness/pg.sh) and
a private Redis (tests/harness/redis.sh), alma-audit, alma-identity and alma-guideline with their shipped
settings (the superuser as runtime role and owner; alma-guideline with
--bundle-file services/guideline/bundles/alma-referral-core-1.0.0.json and no vault), bootstraps tenant
bench-clinic and its administrator with alma-admin, creates a pcp_clinician (bench-pcp) and a
care_coordinator (bench-coord) with alma-cli, and gives bench-pcp a primary-care relationship with one fixed
synthetic patient_ref (no vault patient: the review's input is stateless). Then R times, in alternating
order:

  echo    alma-echo Echo (the worker path), mTLS
  review  alma-guideline ReviewReferral, mTLS as "bench" with bench-pcp's token (refreshed before each run:
          tokens live 5 minutes): referral "bench-ref-1", specialty nephrology, reason N18.4, input_json the
          input of the vignette "CKD eGFR 27 (G4): refer" (tests/guideline/vignettes/ckd-nephrology.json);
          authorisation (token, referral.review, the relationship), one durable audit event (RECOMMEND)
          before the answer, the evaluation, one review row stored (group-committed)

N calls in flight each. Reports calls/s, p50 and p99 per workload, the ratio review/echo per run and its
median, and whether the issue's aim (review/echo >= 0.33) is met. Then, once, the rule evaluation alone:
alma-guideline-eval-bench on the same bundle and input (one thread, --eval-n evaluations): median, p99,
evaluations/s, against the aim "microseconds, not milliseconds". Progress goes to stderr; stdout gets the
markdown tables. Everything listens on 127.0.0.1; every process started is stopped, Postgres and Redis
included.

  --runs R               runs (default 3, max 20)
  --duration S           measured seconds per workload and run (default 10, max 300)
  --warmup S             unrecorded seconds before each measurement (default 1, max 60)
  --concurrency N        calls in flight (default 64, max 120)
  --eval-n N             in-process evaluations (default 200000, max 10000000)
  --pki DIR              dev PKI directory (default BUILD/pki)

Environment: BUILD=DIR builds and runs from DIR instead of build-bench/ (an absolute path, or relative to
the repository).
USAGE
}

PROG=guideline.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/suite.sh
. "$(dirname "${BASH_SOURCE[0]}")/suite.sh"

runs=3
duration=10
warmup=1
concurrency=64
eval_n=200000
pki=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --runs | --duration | --warmup | --concurrency | --eval-n | --pki)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --runs) runs=$(int_arg --runs "$2" 1 20) ;;
        --duration) duration=$(int_arg --duration "$2" 1 300) ;;
        --warmup) warmup=$(int_arg --warmup "$2" 0 60) ;;
        # Postgres max_connections is 200; the three services keep some 64 of them open.
        --concurrency) concurrency=$(int_arg --concurrency "$2" 1 120) ;;
        --eval-n) eval_n=$(int_arg --eval-n "$2" 1 10000000) ;;
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
deadline_ms=5000
loadgen="$build/bench/alma-loadgen"
eval_bin="$build/bench/alma-guideline-eval-bench"
echo_bin="$build/services/echo/alma-echo"
audit_bin="$build/services/audit/alma-audit"
identity_bin="$build/services/identity/alma-identity"
guideline_bin="$build/services/guideline/alma-guideline"
admin_bin="$build/tools/alma-admin"
cli_bin="$build/tools/alma-cli"
pg_sh="$root/tests/harness/pg.sh"
redis_sh="$root/tests/harness/redis.sh"
bundle_file="$root/services/guideline/bundles/alma-referral-core-1.0.0.json"
vignettes="$root/tests/guideline/vignettes"
vignette_name="CKD eGFR 27 (G4): refer"
tenant=bench-clinic
idn_schema=bench_guideline_identity
audit_schema=bench_guideline_audit
gl_schema=bench_guideline
# A fixed synthetic patient reference (no such patient anywhere: the review's input is stateless).
patient_ref=pt_0123456789abcdef0123456789abcdef
review_method=/alma.guideline.v1.Guideline/ReviewReferral

for t in psql openssl timeout protoc python3; do
    command -v "$t" >/dev/null 2>&1 ||
        die "$t is required (apt-get install postgresql-client openssl coreutils protobuf-compiler python3)"
done
[ -x "$pg_sh" ] || die "$pg_sh is missing"
[ -x "$redis_sh" ] || die "$redis_sh is missing"
[ -s "$bundle_file" ] || die "$bundle_file is missing"
[ -d "$vignettes" ] || die "$vignettes is missing"
[ -s /usr/include/google/protobuf/timestamp.proto ] ||
    die "/usr/include/google/protobuf/timestamp.proto is missing (apt-get install libprotobuf-dev)"

# Only the settings given here reach the programs started (they read ALMA_* from the environment).
for v in "${!ALMA_@}"; do unset "$v"; done
umask 077 # passwords, tokens, sessions, master keys: all in $tmp, mode 600
tmp=$(mktemp -d "${TMPDIR:-/tmp}/alma-bench-guideline.XXXXXX")
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
if ! build_targets "$build" "$build/bench-build.log" alma-loadgen alma-echo alma-audit alma-identity \
    alma-guideline alma-guideline-eval-bench alma-admin alma-cli; then
    grep -E 'error|Error' "$build/bench-build.log" | tail -n 20 >&2 || true
    die "build failed (see $build/bench-build.log)"
fi
for b in "$loadgen" "$eval_bin" "$echo_bin" "$audit_bin" "$identity_bin" "$guideline_bin" "$admin_bin" "$cli_bin"; do
    [ -x "$b" ] || die "$b was not built"
done
make_pki "$pki" ca.pem echo.pem echo-key.pem audit.pem audit-key.pem identity.pem identity-key.pem guideline.pem \
    guideline-key.pem bench.pem bench-key.pem alma-cli.pem alma-cli-key.pem

# The request's input: the vignette's "input", as JSON (one line).
python3 - "$vignettes" "$vignette_name" >"$tmp/input.json" <<'PY' || die "no vignette named '$vignette_name' in $vignettes"
import glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    with open(path) as f:
        doc = json.load(f)
    for v in doc if isinstance(doc, list) else doc.get("vignettes", []):
        if isinstance(v, dict) and v.get("name") == sys.argv[2]:
            print(json.dumps(v["input"], separators=(",", ":"), sort_keys=True))
            sys.exit(0)
sys.exit(1)
PY
[ -s "$tmp/input.json" ] || die "no vignette named '$vignette_name' in $vignettes"

log "starting a private PostgreSQL (tests/harness/pg.sh, fsync=on, synchronous_commit=on) and Redis"
pg_started=1
start_durable_pg "$pg_sh" "$tmp/pg"
redis_started=1
"$redis_sh" start "$tmp/redis" >&2 || die "could not start Redis"
redis_port=$(cat "$tmp/redis/redis.port")
log "PostgreSQL $pg_version: $pg_settings; Redis on 127.0.0.1:$redis_port"

openssl genpkey -algorithm ed25519 -out "$tmp/audit-signing-key.pem" 2>/dev/null || die "openssl genpkey failed"
openssl rand -base64 32 >"$tmp/identity-master.key" || die "openssl rand failed"

# ---- servers -----------------------------------------------------------------------------------------------
server_pid=""
server_port=""
# start_server echo|audit|identity|guideline LOGFILE [FLAG...]: sets server_pid and server_port (every port is
# :0, read back from the ready-file). Secrets and database URIs go by environment, as deployed; the superuser
# is both the runtime role and the owner (each service migrates its schema and grants itself the runtime
# rights).
start_server() {
    local kind="$1" logf="$2" ready="$2.ready"
    shift 2
    local args=(--api-addr=127.0.0.1:0 --admin-addr=127.0.0.1:0 --metrics-addr=127.0.0.1:0
        "--tls-key=$pki/$kind-key.pem" "--tls-cert=$pki/$kind.pem" "--tls-ca=$pki/ca.pem"
        --trust-domain=alma.local --drain-seconds=2 "--ready-file=$ready")
    rm -f "$ready"
    case "$kind" in
    audit)
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_SIGNING_KEY="$tmp/audit-signing-key.pem" \
            "$audit_bin" "${args[@]}" "--pg-schema=$audit_schema" --origin=bench.alma.local/audit \
            "$@" >"$logf" 2>&1 &
        ;;
    identity)
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_MASTER_KEY_FILE="$tmp/identity-master.key" \
            "$identity_bin" "${args[@]}" "--pg-schema=$idn_schema" "--redis-addr=127.0.0.1:$redis_port" \
            "--audit-addr=127.0.0.1:$audit_port" "$@" >"$logf" 2>&1 &
        ;;
    guideline)
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_AUDIT_ADDR="127.0.0.1:$audit_port" \
            ALMA_IDENTITY_ADDR="127.0.0.1:$identity_port" ALMA_REDIS_ADDR="127.0.0.1:$redis_port" \
            ALMA_BUNDLE_FILE="$bundle_file" \
            "$guideline_bin" "${args[@]}" "--pg-schema=$gl_schema" "$@" >"$logf" 2>&1 &
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

log "alma-cli identity-create-user bench-pcp (pcp_clinician) and bench-coord (care_coordinator), logins"
make_user bench-pcp pcp_clinician
make_user bench-coord care_coordinator
pcp_principal=$(cat "$tmp/bench-pcp.principal")

log "alma-cli identity-relationship-create: bench-pcp primary care of $patient_ref (as bench-coord)"
refresh bench-coord || die "refreshing bench-coord's token failed: $(tail -c 400 "$tmp/bench-coord.err")"
cli --token-file "$tmp/bench-coord.token" identity-relationship-create --clinician "$pcp_principal" \
    --patient "$patient_ref" --kind primary-care >"$tmp/rel.out" 2>"$tmp/rel.err" ||
    die "identity-relationship-create failed: $(tail -c 400 "$tmp/rel.err")"
log "relationship: $(sed -n 's/^relationship_id: //p' "$tmp/rel.out")"

log "starting alma-guideline (shipped settings, schema $gl_schema, bundle-file $(basename "$bundle_file"), no vault)"
start_server guideline "$tmp/guideline.log" || die "alma-guideline did not start"
guideline_pid=$server_pid
guideline_port=$server_port

# ---- the request -------------------------------------------------------------------------------------------
# input_json is a protobuf text-format string: the JSON escaped (backslashes and double quotes; it is one line
# of ASCII, as json.dumps writes it).
input_esc=$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' "$tmp/input.json")
cat >"$tmp/review.txt" <<TXT
tenant_id: "$tenant"
referral_id: "bench-ref-1"
patient_ref: "$patient_ref"
specialty: "nephrology"
reason_codes: "N18.4"
input_json: "$input_esc"
TXT
protoc --encode=alma.guideline.v1.ReviewReferralRequest -I "$root/proto" -I /usr/include \
    "$root/proto/guideline/v1/guideline.proto" <"$tmp/review.txt" >"$tmp/review.bin" 2>"$tmp/review.bin.err" ||
    die "protoc --encode=alma.guideline.v1.ReviewReferralRequest failed: $(tail -c 400 "$tmp/review.bin.err")"
log "request: ReviewReferral $(wc -c <"$tmp/review.bin") bytes (input_json $(wc -c <"$tmp/input.json") bytes)"

# ---- runs --------------------------------------------------------------------------------------------------
declare -A qps p50 p99
okruns_echo=0
okruns_review=0

# review_run RUN [CONCURRENCY]: ReviewReferral as bench-pcp, with a fresh token.
review_run() {
    local run="$1" conc="${2:-$concurrency}" out="$tmp/review-$1.json" rc=0
    if ! refresh bench-pcp; then
        log "review run $run FAILED: identity-refresh: $(tail -c 300 "$tmp/bench-pcp.err")"
        return 1
    fi
    load "$guideline_port" "$review_method" "$conc" "$out" --request-file "$tmp/review.bin" \
        --authorization-file "$tmp/bench-pcp.token" || rc=$?
    record review "$run" "$out" "$rc"
}
one_review() {
    if review_run "$1"; then okruns_review=$((okruns_review + 1)); fi
}

# Calibration (not reported): checks that the service answers the request OK as bench-pcp (the relationship
# reaches alma-guideline through Redis within a second) and warms Postgres.
log "calibration: 2 s of ReviewReferral, one in flight (not reported)"
saved_duration=$duration
saved_warmup=$warmup
duration=2
warmup=0
calibrated=0
for attempt in 1 2 3 4 5; do
    if review_run calib 1; then
        calibrated=1
        break
    fi
    log "calibration attempt $attempt failed; trying again in 1 s"
    sleep 1
done
duration=$saved_duration
warmup=$saved_warmup
[ "$calibrated" -eq 1 ] ||
    die "alma-guideline refused the benchmark's calls: see the messages above and $(tail -n 5 "$tmp/guideline.log")"
reviews_calib=$(psql_q "SELECT count(*) FROM $gl_schema.reviews" 2>/dev/null || echo "?")
log "calibration: $reviews_calib reviews stored"

log "runs $runs, duration ${duration}s, warmup ${warmup}s, $concurrency in flight"
kinds=(echo review)
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

stop_server "$guideline_pid"
stop_server "$identity_pid"
stop_server "$audit_pid"
audit_stats=$(psql_q "SELECT count(*), round(count(*)::numeric / greatest(count(DISTINCT logged_at), 1), 1)
                      FROM $audit_schema.events" 2>/dev/null | tr '|' ' ' || echo "? ?")
review_stats=$(psql_q "SELECT count(*), round(count(*)::numeric / greatest(count(DISTINCT created_at), 1), 1)
                       FROM $gl_schema.reviews" 2>/dev/null | tr '|' ' ' || echo "? ?")
read -r reviews reviews_per_commit <<<"$review_stats"
read -r audit_events audit_per_commit <<<"$audit_stats"

# ---- the evaluation alone ----------------------------------------------------------------------------------
log "alma-guideline-eval-bench --n $eval_n (one thread, same bundle and input)"
eval_ok=0
eval_med=""
eval_p99=""
eval_rate=""
eval_what=""
# The request's specialty and reason codes replace the input's in the service: the same here. The
# recommendation JSON is built every time, as the service does (no --summary-only).
python3 - "$tmp/input.json" >"$tmp/eval-input.json" <<'PY' || die "preparing the evaluation's input failed"
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
d["specialty"] = "nephrology"
d["reason_codes"] = ["N18.4"]
print(json.dumps(d, separators=(",", ":"), sort_keys=True))
PY
if timeout -k 5 600 "$eval_bin" --n "$eval_n" "$bundle_file" "$tmp/eval-input.json" \
    >"$tmp/eval.out" 2>"$tmp/eval.err"; then
    eval_med=$(sed -n 's/^median: \([0-9.]*\) us$/\1/p' "$tmp/eval.out")
    eval_p99=$(sed -n 's/^p99: \([0-9.]*\) us$/\1/p' "$tmp/eval.out")
    eval_rate=$(sed -n 's/^evaluations\/s: \([0-9.]*\)$/\1/p' "$tmp/eval.out")
    eval_what=$(sed -n 's/^bundle //p' "$tmp/eval.out" | head -n 1)
    [ -n "$eval_med" ] && [ -n "$eval_p99" ] && eval_ok=1
fi
if [ "$eval_ok" -eq 1 ]; then
    log "evaluation: median $eval_med us, p99 $eval_p99 us, $eval_rate evaluations/s ($eval_what)"
else
    log "alma-guideline-eval-bench FAILED: $(tail -c 400 "$tmp/eval.out" "$tmp/eval.err" 2>/dev/null | tr '\n' ' ')"
fi

median3() { # like median, 3 decimals
    printf '%s\n' "$@" | sed '/^$/d' | sort -g |
        awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) printf "%.3f\n", a[(NR+1)/2];
                              else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'
}
r_review=""
for run in $(seq 1 "$runs"); do
    x=$(ratio "${qps[review,$run]:-}" "${qps[echo,$run]:-}")
    [ "$x" != "-" ] && r_review+=" $x"
done
# shellcheck disable=SC2086 # word splitting of the value list is intended
m_review=$(median3 $r_review)

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
grpc_version=$(pkg-config --modversion grpc++ 2>/dev/null || echo "?")
redis_version=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
bundle_version=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d.get("bundle_id", "?"), d.get("version", "?"))' \
    "$bundle_file" 2>/dev/null || echo "?")
when=$(date -u +%Y-%m-%d)
label() {
    case "$1" in
    echo) echo "alma-echo Echo (worker), mTLS" ;;
    *) echo "alma-guideline ReviewReferral (input_json, audit append, review stored), mTLS + token" ;;
    esac
}
okruns() {
    case "$1" in
    echo) echo "$okruns_echo/$runs" ;;
    *) echo "$okruns_review/$runs" ;;
    esac
}

echo
echo "| workload | in flight | calls/s | p50 (µs) | p99 (µs) | runs ok |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for kind in echo review; do
    # shellcheck disable=SC2046 # word splitting of the value lists is intended
    echo "| $(label "$kind") | $concurrency | $(median $(values "$kind" qps)) | $(median $(values "$kind" p50)) |" \
        "$(median $(values "$kind" p99)) | $(okruns "$kind") |"
done
echo
echo "Median of the per-run ratios: ReviewReferral/echo **$m_review** (aim ≥ 0.33: $(verdict "$m_review" 0.33))."
echo
echo "| run | order | echo calls/s | ReviewReferral calls/s | echo p99 (µs) | ReviewReferral p99 (µs) | review/echo |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
for run in $(seq 1 "$runs"); do
    if [ $((run % 2)) -eq 0 ]; then o="review, echo"; else o="echo, review"; fi
    echo "| $run | $o | ${qps[echo,$run]:--} | ${qps[review,$run]:--} | ${p99[echo,$run]:--} |" \
        "${p99[review,$run]:--} | $(ratio "${qps[review,$run]:-}" "${qps[echo,$run]:-}") |"
done
echo
echo "### Rule evaluation alone (alma-guideline-eval-bench, in-process, one thread)"
echo
if [ "$eval_ok" -eq 1 ]; then
    verdict_eval=$(awk -v m="$eval_p99" 'BEGIN {print (m < 1000 ? "**met**" : "**not met**")}')
    echo "| evaluations | median (µs) | p99 (µs) | evaluations/s | result |"
    echo "| ---: | ---: | ---: | ---: | --- |"
    echo "| $eval_n | $eval_med | $eval_p99 | $eval_rate | ${eval_what:--} |"
    echo
    echo "Aim \"evaluation in microseconds, not milliseconds\" (p99 < 1000 µs): $verdict_eval."
else
    echo "alma-guideline-eval-bench failed: not measured."
fi
echo
echo "$runs runs, interleaved (order alternating); $concurrency calls in flight, ${duration} s measured after" \
    "${warmup} s warmup; mTLS, 1 channel; alma-guideline, alma-identity and alma-audit with their shipped" \
    "settings, one of each for all runs (the superuser for pg-uri and pg-owner-uri; no vault); bundle" \
    "$bundle_version; the input of the vignette \"$vignette_name\" ($(wc -c <"$tmp/input.json") bytes of JSON," \
    "request $(wc -c <"$tmp/review.bin") bytes); $reviews reviews stored ($reviews_per_commit per review commit); $audit_events audit events written" \
    "($audit_per_commit per audit commit); PostgreSQL $pg_version ($pg_settings); Redis ${redis_version:-?};" \
    "$(nproc) cores ($cpu) shared by client, servers, PostgreSQL and Redis; gRPC $grpc_version; $when."
