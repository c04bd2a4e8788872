#!/usr/bin/env bash
# bench/audit.sh: durable audit appends per second (alma-audit AppendEvent, group commit) against the runtime's
# echo baseline and against a plain single-row INSERT of the same event size (pgbench), same Postgres, same
# durability, same run. See docs/benchmarks.md ("The audit log") for what the numbers mean.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/audit.sh [--runs R] [--duration S] [--warmup S] [--concurrency N] [--pki DIR]
                      [--audit-args "ARGS"] [--help]

Builds build-bench/ (RelWithDebInfo as shipped, -DALMA_BENCH=ON: alma-loadgen, alma-echo, alma-audit), makes the dev PKI with
deploy/pki.sh if needed, starts a private PostgreSQL with full durability (tests/harness/pg.sh: fsync=on,
synchronous_commit=on) and an Ed25519 signing key (openssl genpkey), then R times, in alternating order:

  echo    alma-echo Echo (the worker path), mTLS, loaded by alma-loadgen
  audit   alma-audit AppendEvent, mTLS as the "bench" identity, alma-loadgen --payload audit-event; a fresh
          server and a fresh log (schema bench_audit_rN) per run
  insert  pgbench -M prepared -c N -j 2 -f bench/pg_insert.sql: one autocommitted INSERT per transaction into
          a table with the columns, checks and indexes of the audit log's events table (schema bench_insert,
          recreated per run), with a real entry as long as the audit run's average

N calls (or pgbench clients) in flight each. Reports calls/s, p50 and p99 per workload, the ratios
audit/echo and audit/INSERT per run and their medians, and the events per group commit the audit store
achieved (events / distinct logged_at: one batch, one commit time). Progress goes to stderr; stdout gets the
markdown tables. Everything listens on 127.0.0.1; every process started is stopped, Postgres included.

  --runs R             runs (default 3, max 20)
  --duration S         measured seconds per workload and run (default 10, max 300)
  --warmup S           unrecorded seconds before each measurement (default 1, max 60)
  --concurrency N      calls in flight / pgbench clients (default 64, max 150)
  --pki DIR            dev PKI directory (default build-bench/pki)
  --audit-args "ARGS"  extra alma-audit flags, e.g. "--workers 64 --batch-wait-us 0" (default none: the
                       shipped defaults)
EOF
}

PROG=audit.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=3
duration=10
warmup=1
concurrency=64
pki=""
audit_args=()
audit_args_text=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --runs | --duration | --warmup | --concurrency | --pki | --audit-args)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --runs) runs=$(int_arg --runs "$2" 1 20) ;;
        --duration) duration=$(int_arg --duration "$2" 1 300) ;;
        --warmup) warmup=$(int_arg --warmup "$2" 0 60) ;;
        --concurrency) concurrency=$(int_arg --concurrency "$2" 1 150) ;; # Postgres max_connections is 200
        --pki) pki="$2" ;;
        --audit-args)
            audit_args_text="$2"
            read -r -a audit_args <<<"$2"
            for a in "${audit_args[@]+"${audit_args[@]}"}"; do
                [[ "$a" =~ ^--[a-z0-9-]+(=.*)?$ || "$a" =~ ^[A-Za-z0-9._:/-]+$ ]] ||
                    die "--audit-args: '$a' is neither a flag nor a plain value"
            done
            ;;
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
echo_bin="$build/services/echo/alma-echo"
audit_bin="$build/services/audit/alma-audit"
pg_sh="$root/tests/harness/pg.sh"
insert_sql="$root/bench/pg_insert.sql"

for t in pgbench psql openssl timeout; do
    command -v "$t" >/dev/null 2>&1 || die "$t is required (apt-get install postgresql-client openssl coreutils)"
done
[ -x "$pg_sh" ] || die "$pg_sh is missing"
[ -s "$insert_sql" ] || die "$insert_sql is missing"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/alma-bench-audit.XXXXXX")
pg_started=0
cleanup() {
    kill_started
    if [ "$pg_started" -eq 1 ]; then
        "$pg_sh" stop "$tmp/pg" >/dev/null 2>&1 || log "stopping PostgreSQL ($tmp/pg) failed"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build, PKI, Postgres, signing key ---------------------------------------------------------------------
log "configuring and building $build (log: $build/bench-build.log)"
mkdir -p "$build"
: >"$build/bench-build.log"
if ! build_targets "$build" "$build/bench-build.log" alma-loadgen alma-echo alma-audit; then
    grep -E 'error|Error' "$build/bench-build.log" | tail -n 20 >&2 || true
    die "build failed (see $build/bench-build.log)"
fi
for b in "$loadgen" "$echo_bin" "$audit_bin"; do
    [ -x "$b" ] || die "$b was not built"
done
make_pki "$pki" ca.pem echo.pem echo-key.pem audit.pem audit-key.pem bench.pem bench-key.pem

log "starting a private PostgreSQL (tests/harness/pg.sh, fsync=on, synchronous_commit=on)"
pg_started=1
start_durable_pg "$pg_sh" "$tmp/pg"
log "PostgreSQL $pg_version: $pg_settings"

openssl genpkey -algorithm ed25519 -out "$tmp/signing-key.pem" 2>/dev/null || die "openssl genpkey failed"

# ---- servers -----------------------------------------------------------------------------------------------
server_pid=""
server_port=""
# start_server echo|audit LOGFILE [SCHEMA]: sets server_pid and server_port. Every port is :0, read back from
# the ready-file. Both use the same runtime settings apart from alma-audit's --audit-args.
start_server() {
    local kind="$1" logf="$2" schema="${3:-}" ready="$2.ready"
    local args=(--api-addr=127.0.0.1:0 --admin-addr=127.0.0.1:0 --metrics-addr=127.0.0.1:0
        "--tls-key=$pki/$kind-key.pem" "--tls-cert=$pki/$kind.pem" "--tls-ca=$pki/ca.pem"
        --trust-domain=alma.local --drain-seconds=2 "--ready-file=$ready")
    rm -f "$ready"
    if [ "$kind" = audit ]; then
        # The superuser is both the runtime role (pg-uri) and the owner (pg-owner-uri): the owner migrates
        # the fresh schema and grants the runtime role, here itself. Secrets go by environment, as deployed.
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_SIGNING_KEY="$tmp/signing-key.pem" \
            "$audit_bin" "${args[@]}" "--pg-schema=$schema" --origin=bench.alma.local/audit \
            "${audit_args[@]+"${audit_args[@]}"}" >"$logf" 2>&1 &
    else
        "$echo_bin" "${args[@]}" >"$logf" 2>&1 &
    fi
    server_pid=$!
    started_pids+=("$server_pid")
    server_port=""
    for _ in $(seq 1 300); do
        [ -s "$ready" ] && server_port=$(sed -n 's/^api=\([0-9][0-9]*\) .*/\1/p' "$ready")
        [ -n "$server_port" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$server_port" ] || ! wait_listening "$server_pid" "$server_port"; then
        log "$kind did not start; its log:"
        tail -n 20 "$logf" >&2 || true
        stop_server "$server_pid"
        return 1
    fi
}

# load METHOD OUT [alma-loadgen args...]: one closed-loop mTLS run against server_port; returns its status.
load() {
    local method="$1" out="$2" rc=0 limit=$((warmup + duration + 2 * deadline_ms / 1000 + 30))
    shift 2
    timeout -k 5 "$limit" "$loadgen" --target "127.0.0.1:$server_port" --method "$method" \
        --concurrency "$concurrency" --duration "$duration" --warmup "$warmup" --deadline-ms "$deadline_ms" \
        --tls --cert "$pki/bench.pem" --key "$pki/bench-key.pem" --ca "$pki/ca.pem" --server-name localhost \
        "$@" --json >"$out" 2>"$out.err" || rc=$?
    return "$rc"
}

# ---- the plain INSERT ----------------------------------------------------------------------------------------
# bench_insert.events: the columns, check constraints and indexes of services/audit/migrations/0001_log.sql
# and 0002_subtrees.sql (events only; the append-only triggers fire on UPDATE/DELETE/TRUNCATE, never on an
# INSERT). seq comes from a sequence, as a plain application would number its rows.
insert_ddl() {
    timeout -k 5 120 psql -X -q -v ON_ERROR_STOP=1 -d "$pg_uri" >/dev/null <<'EOF'
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_insert CASCADE;
CREATE SCHEMA bench_insert;
CREATE SEQUENCE bench_insert.events_seq;
CREATE TABLE bench_insert.events (
    seq         bigint      PRIMARY KEY CHECK (seq >= 0),
    tenant_id   text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 64),
    logged_at   timestamptz NOT NULL,
    action      smallint    NOT NULL CHECK (action > 0),
    purpose     smallint    NOT NULL CHECK (purpose >= 0),
    outcome     smallint    NOT NULL CHECK (outcome > 0),
    patient_ref text        CHECK (patient_ref IS NULL OR patient_ref ~ '^pt_[0-9a-f]{32}$'),
    actor_id    text        NOT NULL CHECK (length(actor_id) BETWEEN 1 AND 128),
    entry       bytea       NOT NULL CHECK (length(entry) BETWEEN 1 AND 65536),
    leaf_hash   bytea       NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE INDEX events_tenant_time ON bench_insert.events (tenant_id, logged_at, seq);
CREATE INDEX events_tenant_patient ON bench_insert.events (tenant_id, patient_ref, logged_at)
    WHERE patient_ref IS NOT NULL;
CREATE INDEX events_tenant_actor ON bench_insert.events (tenant_id, actor_id, logged_at);
CREATE INDEX events_tenant_seq ON bench_insert.events (tenant_id, seq);
CHECKPOINT;
EOF
}

# The entry the INSERT carries: the real entry of the last audit log measured whose length is closest to
# that log's average (so the same bytes and size as the events the audit service stored), and its leaf hash.
entry_hex=""
leaf_hex=""
entry_len=""
pick_entry() { # SCHEMA
    local row
    row=$(psql_q "SELECT length(entry), encode(entry, 'hex'), encode(leaf_hash, 'hex') FROM $1.events
                  ORDER BY abs(length(entry) - (SELECT avg(length(entry)) FROM $1.events)), seq LIMIT 1")
    [ -n "$row" ] || return 1
    IFS='|' read -r entry_len entry_hex leaf_hex <<<"$row"
}

# percentiles FILE: "p50 p99" (µs, nearest rank) of the latencies (µs, one per line) in FILE.
percentiles() {
    sort -n "$1" | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- -"; exit }
        r50 = int((NR * 500 + 999) / 1000); r99 = int((NR * 990 + 999) / 1000);
        printf "%.1f %.1f\n", a[r50 < 1 ? 1 : r50], a[r99 < 1 ? 1 : r99] }'
}

# ---- runs --------------------------------------------------------------------------------------------------
declare -A qps p50 p99 batch ebytes
okruns_echo=0
okruns_audit=0
okruns_insert=0

one_echo() { # RUN
    local run="$1" out="$tmp/echo-$1.json"
    start_server echo "$tmp/echo-$run.log" || return 0
    local rc=0
    load /alma.echo.v1.Echo/Echo "$out" || rc=$?
    stop_server "$server_pid"
    local q
    q=$(json_num calls_per_s "$out")
    if [ "$rc" -ne 0 ] || [ -z "$q" ]; then
        log "echo run $run FAILED (alma-loadgen exit $rc): $(tail -c 400 "$out" "$out.err" 2>/dev/null | tr '\n' ' ')"
        return 0
    fi
    qps[echo,$run]=$q
    p50[echo,$run]=$(json_num p50_us "$out")
    p99[echo,$run]=$(json_num p99_us "$out")
    okruns_echo=$((okruns_echo + 1))
    log "echo run $run: $q calls/s, p50 ${p50[echo,$run]} us, p99 ${p99[echo,$run]} us"
}

# audit_stats SCHEMA: "events batches events/batch avg-entry-bytes" of one audit log.
audit_stats() {
    psql_q "SELECT count(*), count(DISTINCT logged_at),
                   round(count(*)::numeric / greatest(count(DISTINCT logged_at), 1), 1),
                   round(avg(length(entry)), 1) FROM $1.events" | tr '|' ' '
}

one_audit() { # RUN|calib
    local run="$1" out="$tmp/audit-$1.json" schema="bench_audit_r$1"
    start_server audit "$tmp/audit-$run.log" "$schema" || return 0
    local rc=0
    load /alma.audit.v1.Audit/AppendEvent "$out" --payload audit-event || rc=$?
    stop_server "$server_pid"
    local q events batches per_batch avg_entry
    q=$(json_num calls_per_s "$out")
    read -r events batches per_batch avg_entry <<<"$(audit_stats "$schema")"
    pick_entry "$schema" || true
    if [ "$rc" -ne 0 ] || [ -z "$q" ]; then
        log "audit run $run FAILED (alma-loadgen exit $rc): $(tail -c 400 "$out" "$out.err" 2>/dev/null | tr '\n' ' ')"
        return 0
    fi
    [ "$run" = calib ] && return 0
    qps[audit,$run]=$q
    p50[audit,$run]=$(json_num p50_us "$out")
    p99[audit,$run]=$(json_num p99_us "$out")
    batch[$run]=$per_batch
    ebytes[$run]=$avg_entry
    okruns_audit=$((okruns_audit + 1))
    log "audit run $run: $q appends/s, p50 ${p50[audit,$run]} us, p99 ${p99[audit,$run]} us;" \
        "$events events in $batches commits ($per_batch per commit), entry $avg_entry bytes on average"
}

one_insert() { # RUN
    local run="$1" dir="$tmp/pgbench-$1" rc=0
    if [ -z "$entry_hex" ]; then
        log "insert run $run skipped: no audit entry to size it by"
        return 0
    fi
    mkdir -p "$dir"
    insert_ddl || {
        log "insert run $run: creating bench_insert failed"
        return 0
    }
    local pgb=(pgbench -n -M prepared -c "$concurrency" -j 2 -f "$insert_sql" -D "entry_hex=$entry_hex"
        -D "leaf_hex=$leaf_hex")
    local limit=$((warmup + duration + 60))
    if [ "$warmup" -gt 0 ]; then
        (cd "$dir" && timeout -k 5 "$limit" "${pgb[@]}" -T "$warmup" "$pg_uri") >"$dir/warmup.out" 2>&1 || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        (cd "$dir" && timeout -k 5 "$limit" "${pgb[@]}" -T "$duration" -l --log-prefix=txn "$pg_uri") \
            >"$dir/out" 2>&1 || rc=$?
    fi
    local q failed
    q=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$dir/out" 2>/dev/null | head -n 1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/out" 2>/dev/null | head -n 1)
    if [ "$rc" -ne 0 ] || [ -z "$q" ] || [ "${failed:-0}" -ne 0 ]; then
        log "insert run $run FAILED (pgbench exit $rc): $(tail -c 400 "$dir/warmup.out" "$dir/out" 2>/dev/null | tr '\n' ' ')"
        return 0
    fi
    # Per-transaction log: client, transaction number, latency in µs, script, epoch s, µs.
    cat "$dir"/txn.* | awk '{print $3}' >"$dir/lat"
    local pct
    pct=$(percentiles "$dir/lat")
    qps[insert,$run]=$(awk -v q="$q" 'BEGIN {printf "%.1f", q}')
    p50[insert,$run]=${pct% *}
    p99[insert,$run]=${pct#* }
    okruns_insert=$((okruns_insert + 1))
    log "insert run $run: ${qps[insert,$run]} tps, p50 ${p50[insert,$run]} us, p99 ${p99[insert,$run]} us" \
        "($(wc -l <"$dir/lat") transactions, entry $entry_len bytes)"
    rm -f "$dir"/txn.*
}

log "runs $runs, duration ${duration}s, warmup ${warmup}s, concurrency $concurrency," \
    "alma-audit flags: ${audit_args_text:-(defaults)}"
# Calibration (not reported): checks that the audit service accepts the event and yields the entry the INSERT
# carries in run 1 if the INSERT goes first; also warms Postgres.
saved_duration=$duration
saved_warmup=$warmup
duration=2
warmup=0
log "calibration: 2 s of AppendEvent (not reported)"
one_audit calib
duration=$saved_duration
warmup=$saved_warmup
[ -n "$entry_hex" ] || die "the calibration run stored no event: see the logs above"
log "calibration: entry of $entry_len bytes"

kinds=(echo audit insert)
for run in $(seq 1 "$runs"); do
    # Alternate the order so slow drift (other load, Postgres' own growth, thermal) does not favour one side.
    order=("${kinds[@]}")
    if [ $((run % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#kinds[@]} - 1; i >= 0; i--)); do order+=("${kinds[$i]}"); done
    fi
    for kind in "${order[@]}"; do
        "one_$kind" "$run"
    done
done

# ---- report ------------------------------------------------------------------------------------------------
ratio() { # A B: A/B to 2 decimals, "-" when either is missing
    if [ -n "$1" ] && [ -n "$2" ] && [ "$1" != "-" ] && [ "$2" != "-" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'
    else
        echo "-"
    fi
}
values() { # KIND FIELD(qps|p50|p99): the values of every run, space-separated
    local run out=""
    for run in $(seq 1 "$runs"); do
        case "$2" in
        qps) out+=" ${qps[$1,$run]:-}" ;;
        p50) out+=" ${p50[$1,$run]:-}" ;;
        p99) out+=" ${p99[$1,$run]:-}" ;;
        esac
    done
    echo "$out"
}
r_echo=""
r_insert=""
all_batch=""
all_bytes=""
for run in $(seq 1 "$runs"); do
    a=${qps[audit,$run]:-}
    x=$(ratio "$a" "${qps[echo,$run]:-}")
    [ "$x" != "-" ] && r_echo+=" $x"
    x=$(ratio "$a" "${qps[insert,$run]:-}")
    [ "$x" != "-" ] && r_insert+=" $x"
    all_batch+=" ${batch[$run]:-}"
    all_bytes+=" ${ebytes[$run]:-}"
done
median2() { # like median, 2 decimals
    printf '%s\n' "$@" | sed '/^$/d' | sort -g |
        awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) printf "%.2f\n", a[(NR+1)/2];
                              else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
grpc_version=$(pkg-config --modversion grpc++ 2>/dev/null || echo "?")
when=$(date -u +%Y-%m-%d)
label() {
    case "$1" in
    echo) echo "alma-echo Echo (worker), mTLS" ;;
    audit) echo "alma-audit AppendEvent, mTLS" ;;
    *) echo "plain INSERT (pgbench)" ;;
    esac
}
okruns() {
    case "$1" in
    echo) echo "$okruns_echo/$runs" ;;
    audit) echo "$okruns_audit/$runs" ;;
    *) echo "$okruns_insert/$runs" ;;
    esac
}

echo
echo "| workload | calls/s | p50 (µs) | p99 (µs) | runs ok |"
echo "| --- | ---: | ---: | ---: | ---: |"
for kind in echo audit insert; do
    # shellcheck disable=SC2046 # word splitting of the value lists is intended
    echo "| $(label "$kind") | $(median $(values "$kind" qps)) | $(median $(values "$kind" p50)) |" \
        "$(median $(values "$kind" p99)) | $(okruns "$kind") |"
done
echo
# shellcheck disable=SC2086 # word splitting of the value lists is intended
echo "Medians of the per-run values: audit/echo **$(median2 $r_echo)**, audit/INSERT **$(median2 $r_insert)**," \
    "$(median $all_batch) events per audit commit, entries of $(median $all_bytes) bytes."
echo
echo "| run | order | echo calls/s | audit appends/s | INSERT tps | audit/echo | audit/INSERT | events per commit | entry bytes |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for run in $(seq 1 "$runs"); do
    if [ $((run % 2)) -eq 0 ]; then o="insert, audit, echo"; else o="echo, audit, insert"; fi
    echo "| $run | $o | ${qps[echo,$run]:--} | ${qps[audit,$run]:--} | ${qps[insert,$run]:--} |" \
        "$(ratio "${qps[audit,$run]:-}" "${qps[echo,$run]:-}") | $(ratio "${qps[audit,$run]:-}" "${qps[insert,$run]:-}") |" \
        "${batch[$run]:--} | ${ebytes[$run]:--} |"
done
echo
echo "$runs runs, interleaved (order alternating); $concurrency calls in flight (pgbench: $concurrency clients," \
    "-j 2, -M prepared), ${duration} s measured after ${warmup} s warmup; mTLS, 1 channel; alma-audit flags:" \
    "${audit_args_text:-defaults}; PostgreSQL $pg_version ($pg_settings), superuser for pg-uri and pg-owner-uri;" \
    "$(nproc) cores ($cpu) shared by client, server and Postgres; gRPC $grpc_version; $when."
