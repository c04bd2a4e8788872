#!/usr/bin/env bash
# bench/vault.sh: what a PHI vault call costs. PutItem and GetPatient (token authorisation, envelope
# encryption, a durable audit event per call) against the runtime's echo baseline and a plain single-row
# INSERT of the same row size (pgbench), same Postgres, same durability, same run; and the AES-GCM share of
# the vault's CPU time from a perf profile. See docs/benchmarks.md ("Vault") for what the numbers mean.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/vault.sh [--runs R] [--duration S] [--warmup S] [--concurrency N] [--profile-seconds S]
                      [--pki DIR] [--help]

Builds BUILD (default build-bench/; RelWithDebInfo as shipped, -DALMA_BENCH=ON: alma-loadgen, alma-echo,
alma-audit, alma-identity, alma-vault, alma-admin, alma-cli), makes the dev PKI with deploy/pki.sh if needed,
starts a private PostgreSQL with full durability (tests/harness/pg.sh) and a private Redis
(tests/harness/redis.sh), alma-audit, alma-identity and alma-vault with their shipped settings (the
superuser as runtime role and owner), bootstraps tenant bench-clinic and its administrator with alma-admin,
creates a pcp_clinician (bench-pcp) and a care_coordinator (bench-coord) with alma-cli, registers synthetic
patients (CreatePatient through alma-loadgen for one second, one call in flight) and gives bench-pcp a
primary-care relationship with the first one. Then R times, in alternating order:

  echo    alma-echo Echo (the worker path), mTLS
  get     alma-vault GetPatient of that patient, purpose TREATMENT, mTLS as "bench" with bench-pcp's token
          (refreshed before each run: tokens live 5 minutes): authorisation (token, view, relationship),
          one row read, 4 AES-256-GCM opens (data key, demographic, contact, identifier), one durable audit
          event before the answer
  put     alma-vault PutItem of a new Observation each call (LOINC 33914-3 eGFR 52 mL/min/{1.73_m2}) for that
          patient: authorisation, one durable audit event (the intent), a fresh data key, 2 AES-256-GCM
          seals, one INSERT committed
  insert  pgbench -M prepared -c N -j 2 -f bench/pg_insert_vault.sql: one autocommitted single-row INSERT per
          transaction into a copy of the vault's records table (columns, checks, indexes, foreign key),
          carrying a wrapped data key and a sealed part taken from the vault in the same run

N calls (or pgbench clients) in flight each. Reports calls/s, p50 and p99 per workload, the ratios get/echo
and put/min(echo, insert) per run and their medians, and whether the issue's aims (get/echo >= 0.5,
put/min(echo, insert) >= 0.7) are met. Then, once, alma-vault is profiled with `perf record -g -p` for
--profile-seconds during a put load and during a get load (not measured runs): the share of its samples in
AES-GCM functions, its top symbols, and the CPU each process used in that window. Progress goes to stderr;
stdout gets the markdown tables. Everything listens on 127.0.0.1; every process started is stopped,
Postgres and Redis included.

  --runs R               runs (default 3, max 20)
  --duration S           measured seconds per workload and run (default 10, max 300)
  --warmup S             unrecorded seconds before each measurement (default 1, max 60)
  --concurrency N        calls in flight / pgbench clients (default 64, max 120)
  --profile-seconds S    perf record time per profiled workload (default 5, max 60; 0: no profile)
  --pki DIR              dev PKI directory (default BUILD/pki)

Environment: BUILD=DIR builds and runs from DIR instead of build-bench/ (an absolute path, or relative to
the repository).
EOF
}

PROG=vault.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/suite.sh
. "$(dirname "${BASH_SOURCE[0]}")/suite.sh"

runs=3
duration=10
warmup=1
concurrency=64
profile_s=5
pki=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --runs | --duration | --warmup | --concurrency | --profile-seconds | --pki)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --runs) runs=$(int_arg --runs "$2" 1 20) ;;
        --duration) duration=$(int_arg --duration "$2" 1 300) ;;
        --warmup) warmup=$(int_arg --warmup "$2" 0 60) ;;
        # Postgres max_connections is 200; the three services keep 64 of them open.
        --concurrency) concurrency=$(int_arg --concurrency "$2" 1 120) ;;
        --profile-seconds) profile_s=$(int_arg --profile-seconds "$2" 0 60) ;;
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
echo_bin="$build/services/echo/alma-echo"
audit_bin="$build/services/audit/alma-audit"
identity_bin="$build/services/identity/alma-identity"
vault_bin="$build/services/vault/alma-vault"
admin_bin="$build/tools/alma-admin"
cli_bin="$build/tools/alma-cli"
pg_sh="$root/tests/harness/pg.sh"
redis_sh="$root/tests/harness/redis.sh"
insert_sql="$root/bench/pg_insert_vault.sql"
tenant=bench-clinic
idn_schema=bench_vault_identity
audit_schema=bench_vault_audit
vault_schema=bench_vault
ins_schema=bench_vault_insert
put_method=/alma.vault.v1.Vault/PutItem
get_method=/alma.vault.v1.Vault/GetPatient
create_method=/alma.vault.v1.Vault/CreatePatient

for t in psql pgbench openssl timeout base64 protoc; do
    command -v "$t" >/dev/null 2>&1 ||
        die "$t is required (apt-get install postgresql-client openssl coreutils protobuf-compiler)"
done
[ -x "$pg_sh" ] || die "$pg_sh is missing"
[ -x "$redis_sh" ] || die "$redis_sh is missing"
[ -s "$insert_sql" ] || die "$insert_sql is missing"
[ -s /usr/include/google/protobuf/timestamp.proto ] ||
    die "/usr/include/google/protobuf/timestamp.proto is missing (apt-get install libprotobuf-dev)"

# Only the settings given here reach the programs started (they read ALMA_* from the environment).
for v in "${!ALMA_@}"; do unset "$v"; done
umask 077 # passwords, tokens, sessions, master keys: all in $tmp, mode 600
tmp=$(mktemp -d "${TMPDIR:-/tmp}/alma-bench-vault.XXXXXX")
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
if ! build_targets "$build" "$build/bench-build.log" alma-loadgen alma-echo alma-audit alma-identity alma-vault \
    alma-admin alma-cli; then
    grep -E 'error|Error' "$build/bench-build.log" | tail -n 20 >&2 || true
    die "build failed (see $build/bench-build.log)"
fi
for b in "$loadgen" "$echo_bin" "$audit_bin" "$identity_bin" "$vault_bin" "$admin_bin" "$cli_bin"; do
    [ -x "$b" ] || die "$b was not built"
done
make_pki "$pki" ca.pem echo.pem echo-key.pem audit.pem audit-key.pem identity.pem identity-key.pem vault.pem \
    vault-key.pem bench.pem bench-key.pem alma-cli.pem alma-cli-key.pem

log "starting a private PostgreSQL (tests/harness/pg.sh, fsync=on, synchronous_commit=on) and Redis"
pg_started=1
start_durable_pg "$pg_sh" "$tmp/pg"
redis_started=1
"$redis_sh" start "$tmp/redis" >&2 || die "could not start Redis"
redis_port=$(cat "$tmp/redis/redis.port")
log "PostgreSQL $pg_version: $pg_settings; Redis on 127.0.0.1:$redis_port"

openssl genpkey -algorithm ed25519 -out "$tmp/audit-signing-key.pem" 2>/dev/null || die "openssl genpkey failed"
openssl genpkey -algorithm ed25519 -out "$tmp/vault-cert-key.pem" 2>/dev/null || die "openssl genpkey failed"
openssl rand -base64 32 >"$tmp/identity-master.key" || die "openssl rand failed"
openssl rand -base64 32 >"$tmp/vault-master.key" || die "openssl rand failed"
chmod 600 "$tmp/vault-master.key"

# ---- servers -----------------------------------------------------------------------------------------------
server_pid=""
server_port=""
# start_server echo|audit|identity|vault LOGFILE [FLAG...]: sets server_pid and server_port (every port is :0,
# read back from the ready-file). Secrets and database URIs go by environment, as deployed; the superuser is
# both the runtime role and the owner (each service migrates its schema and grants itself the runtime rights).
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
    vault)
        ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_uri" ALMA_MASTER_KEY="file:$tmp/vault-master.key" \
            ALMA_SIGNING_KEY="$tmp/vault-cert-key.pem" ALMA_AUDIT_ADDR="127.0.0.1:$audit_port" \
            ALMA_IDENTITY_ADDR="127.0.0.1:$identity_port" ALMA_REDIS_ADDR="127.0.0.1:$redis_port" \
            "$vault_bin" "${args[@]}" "--pg-schema=$vault_schema" "$@" >"$logf" 2>&1 &
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

log "starting alma-vault (shipped settings, schema $vault_schema)"
start_server vault "$tmp/vault.log" || die "alma-vault did not start"
vault_pid=$server_pid
vault_port=$server_port

# encode MESSAGE TEXTFILE OUT: a serialized alma.vault.v1 request from its text format.
encode() {
    protoc "--encode=alma.vault.v1.$1" -I "$root/proto" -I /usr/include "$root/proto/vault/v1/vault.proto" \
        <"$2" >"$3" 2>"$3.err" || die "protoc --encode=alma.vault.v1.$1 failed: $(tail -c 400 "$3.err")"
}

# ---- the patient, its relationship, the requests -------------------------------------------------------------
# Synthetic data only. Every category of a patient record: demographic, contact, identifier and financial
# (the treating view withholds the last, so GetPatient decrypts three parts).
cat >"$tmp/create.txt" <<EOF
tenant_id: "$tenant"
patient {
  demographics { family_name: "Benchmark" given_names: "Synthetic" given_names: "Test"
                 birth_date: "1961-04-18" sex: ADMINISTRATIVE_SEX_FEMALE }
  contact { address { lines: "100 Example Street" city: "Springfield" state: "IL" postal_code: "62701"
                      country: "US" }
            phone: "+15555550123" email: "synthetic.patient@example.org" }
  identifiers { mrn: "BENCH-000001" }
  coverage { payer_id: "bench-payer" plan_name: "Synthetic Health Plan" member_id: "M000000001"
             group_number: "G100" start_date: "2023-01-01" }
}
EOF
encode CreatePatientRequest "$tmp/create.txt" "$tmp/create.bin"

# alma-loadgen cannot make a given number of calls: one call in flight for one second registers the patients
# (the same synthetic person, a few hundred times), and the first one registered is the benchmark's.
log "CreatePatient: one in flight for 1 s (alma-loadgen), the first patient is the benchmark's"
refresh bench-pcp || die "refreshing bench-pcp's token failed: $(tail -c 400 "$tmp/bench-pcp.err")"
saved_duration=$duration
saved_warmup=$warmup
duration=1
warmup=0
load "$vault_port" "$create_method" 1 "$tmp/create.json" --request-file "$tmp/create.bin" \
    --authorization-file "$tmp/bench-pcp.token" ||
    die "CreatePatient failed: $(tail -c 600 "$tmp/create.json" "$tmp/create.json.err" 2>/dev/null | tr '\n' ' ')"
duration=$saved_duration
warmup=$saved_warmup
patients=$(psql_q "SELECT count(*) FROM $vault_schema.records WHERE kind = 1")
patient_ref=$(psql_q "SELECT record_id FROM $vault_schema.records WHERE kind = 1 ORDER BY created_at, record_id
                      LIMIT 1")
[[ "$patient_ref" =~ ^pt_[0-9a-f]{32}$ ]] || die "no patient in $vault_schema.records after CreatePatient"
log "$patients patients registered; the benchmark's is $patient_ref"

log "alma-cli identity-relationship-create: bench-pcp primary care of $patient_ref (as bench-coord)"
refresh bench-coord || die "refreshing bench-coord's token failed: $(tail -c 400 "$tmp/bench-coord.err")"
cli --token-file "$tmp/bench-coord.token" identity-relationship-create --clinician "$pcp_principal" \
    --patient "$patient_ref" --kind primary-care >"$tmp/rel.out" 2>"$tmp/rel.err" ||
    die "identity-relationship-create failed: $(tail -c 400 "$tmp/rel.err")"
log "relationship: $(sed -n 's/^relationship_id: //p' "$tmp/rel.out")"

cat >"$tmp/put.txt" <<EOF
tenant_id: "$tenant"
patient_ref: "$patient_ref"
item {
  observation {
    code { system: "http://loinc.org" code: "33914-3"
           display: "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)" }
    quantity: 52
    unit: "mL/min/{1.73_m2}"
    effective_date: "2024-01-10"
  }
}
EOF
cat >"$tmp/get.txt" <<EOF
tenant_id: "$tenant"
patient_ref: "$patient_ref"
purpose: PURPOSE_OF_USE_TREATMENT
EOF
encode PutItemRequest "$tmp/put.txt" "$tmp/put.bin"
encode GetPatientRequest "$tmp/get.txt" "$tmp/get.bin"
log "requests: PutItem $(wc -c <"$tmp/put.bin") bytes, GetPatient $(wc -c <"$tmp/get.bin") bytes"

# ---- the plain INSERT's table ----------------------------------------------------------------------------------
# bench_vault_insert: tenants and records with the columns, check constraints, indexes and foreign key of
# services/vault/migrations/0001_records.sql (the records_guard trigger fires on UPDATE and DELETE only, the
# other on TRUNCATE: neither on an INSERT). Made once; it grows over the runs as the vault's records do.
insert_ddl() {
    timeout -k 5 120 psql -X -q -v ON_ERROR_STOP=1 -d "$pg_uri" >/dev/null <<EOF
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS $ins_schema CASCADE;
CREATE SCHEMA $ins_schema;
SET search_path = $ins_schema;
CREATE TABLE tenants (
    tenant_id           text        COLLATE "C" PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}\$'),
    current_version     integer     NOT NULL CHECK (current_version >= 1),
    min_decrypt_version integer     NOT NULL DEFAULT 1 CHECK (min_decrypt_version BETWEEN 1 AND current_version),
    index_key_wrapped   bytea       CHECK (index_key_wrapped IS NULL OR length(index_key_wrapped) BETWEEN 28 AND 1024),
    provider_id         text        NOT NULL CHECK (length(provider_id) BETWEEN 1 AND 128),
    created_at          timestamptz NOT NULL DEFAULT now(),
    offboarded_at       timestamptz,
    CHECK ((index_key_wrapped IS NULL) = (offboarded_at IS NOT NULL))
);
INSERT INTO tenants (tenant_id, current_version, index_key_wrapped, provider_id)
VALUES ('$tenant', 1, decode(repeat('00', 60), 'hex'), 'file');
CREATE TABLE records (
    tenant_id       text        COLLATE "C" NOT NULL,
    record_id       text        COLLATE "C" NOT NULL CHECK (record_id ~ '^(pt|it)_[0-9a-f]{32}\$'),
    version         integer     NOT NULL CHECK (version >= 1),
    patient_ref     text        COLLATE "C" NOT NULL CHECK (patient_ref ~ '^pt_[0-9a-f]{32}\$'),
    kind            smallint    NOT NULL CHECK (kind BETWEEN 1 AND 6),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text        NOT NULL CHECK (length(created_by) BETWEEN 1 AND 128),
    amendment_request_id text   CHECK (amendment_request_id IS NULL OR amendment_request_id ~ '^am_[0-9a-f]{32}\$'),
    categories      smallint    NOT NULL CHECK (categories > 0 AND categories < 128 AND categories % 2 = 0),
    kek_version     integer     NOT NULL CHECK (kek_version >= 1),
    wrapped_dek     bytea       CHECK (wrapped_dek IS NULL OR length(wrapped_dek) = 60),
    shredded_at     timestamptz,
    part_demographic bytea,
    part_contact     bytea,
    part_identifier  bytea,
    part_clinical    bytea,
    part_sensitive   bytea,
    part_financial   bytea,
    PRIMARY KEY (tenant_id, record_id, version),
    FOREIGN KEY (tenant_id) REFERENCES tenants (tenant_id),
    CHECK ((wrapped_dek IS NULL) = (shredded_at IS NOT NULL)),
    CHECK (kind = 1 OR record_id <> patient_ref),
    CHECK (kind <> 1 OR record_id = patient_ref),
    CHECK ((part_demographic IS NOT NULL) = (categories & 2 <> 0)),
    CHECK ((part_contact IS NOT NULL) = (categories & 4 <> 0)),
    CHECK ((part_identifier IS NOT NULL) = (categories & 8 <> 0)),
    CHECK ((part_clinical IS NOT NULL) = (categories & 16 <> 0)),
    CHECK ((part_sensitive IS NOT NULL) = (categories & 32 <> 0)),
    CHECK ((part_financial IS NOT NULL) = (categories & 64 <> 0))
);
CREATE INDEX records_patient ON records (tenant_id, patient_ref, record_id, version);
CREATE INDEX records_kek ON records (tenant_id, kek_version, record_id, version) WHERE wrapped_dek IS NOT NULL;
CHECKPOINT;
EOF
}

# The row the INSERT carries: a real item version the vault stored (wrapped data key, sealed clinical part),
# the one whose part is closest to the average length.
part_hex=""
dek_hex=""
part_len=""
created_by=""
pick_row() {
    local row
    row=$(psql_q "SELECT length(part_clinical), encode(part_clinical, 'hex'), encode(wrapped_dek, 'hex'), created_by
                  FROM $vault_schema.records WHERE kind = 3 AND part_clinical IS NOT NULL
                  ORDER BY abs(length(part_clinical) - (SELECT avg(length(part_clinical)) FROM $vault_schema.records
                                                        WHERE kind = 3)), record_id LIMIT 1")
    [ -n "$row" ] || return 1
    IFS='|' read -r part_len part_hex dek_hex created_by <<<"$row"
}

# percentiles FILE: "p50 p99" (µs, nearest rank) of the latencies (µs, one per line) in FILE.
percentiles() {
    sort -n "$1" | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- -"; exit }
        r50 = int((NR * 500 + 999) / 1000); r99 = int((NR * 990 + 999) / 1000);
        printf "%.1f %.1f\n", a[r50 < 1 ? 1 : r50], a[r99 < 1 ? 1 : r99] }'
}

# ---- runs --------------------------------------------------------------------------------------------------
declare -A qps p50 p99
okruns_echo=0
okruns_get=0
okruns_put=0
okruns_insert=0

# vault_run KIND RUN: PutItem (put) or GetPatient (get) as bench-pcp, with a fresh token.
vault_run() {
    local kind="$1" run="$2" out="$tmp/$1-$2.json" rc=0 method="$get_method"
    [ "$kind" = put ] && method="$put_method"
    if ! refresh bench-pcp; then
        log "$kind run $run FAILED: identity-refresh: $(tail -c 300 "$tmp/bench-pcp.err")"
        return 1
    fi
    load "$vault_port" "$method" "$concurrency" "$out" --request-file "$tmp/$kind.bin" \
        --authorization-file "$tmp/bench-pcp.token" || rc=$?
    record "$kind" "$run" "$out" "$rc"
}
one_get() {
    if vault_run get "$1"; then okruns_get=$((okruns_get + 1)); fi
}
one_put() {
    if vault_run put "$1"; then okruns_put=$((okruns_put + 1)); fi
}

one_insert() { # RUN
    local run="$1" dir="$tmp/pgbench-$1" rc=0
    if [ -z "$part_hex" ]; then
        log "insert run $run skipped: no vault row to size it by"
        return 0
    fi
    mkdir -p "$dir"
    local pgb=(pgbench -n -M prepared -c "$concurrency" -j 2 -f "$insert_sql" -D "part_hex=$part_hex"
        -D "dek_hex=$dek_hex" -D "patient_ref=$patient_ref" -D "created_by=$created_by")
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
        "($(wc -l <"$dir/lat") transactions, part $part_len bytes)"
    rm -f "$dir"/txn.*
}

# Calibration (not reported): checks that the vault accepts both requests as bench-pcp (the relationship
# reaches the vault through Redis within a second), gives the INSERT its row, and warms Postgres.
log "calibration: 2 s of PutItem and GetPatient (not reported)"
saved_duration=$duration
saved_warmup=$warmup
duration=2
warmup=0
calibrated=0
for attempt in 1 2 3 4 5; do
    if vault_run get calib && vault_run put calib; then
        calibrated=1
        break
    fi
    log "calibration attempt $attempt failed; trying again in 1 s"
    sleep 1
done
duration=$saved_duration
warmup=$saved_warmup
[ "$calibrated" -eq 1 ] || die "the vault refused the benchmark's calls: see the messages above and $tmp/vault.log"
pick_row || die "the calibration stored no item to size the INSERT by"
log "calibration: sealed clinical part of $part_len bytes, wrapped data key $((${#dek_hex} / 2)) bytes"
insert_ddl || die "creating $ins_schema failed"

log "runs $runs, duration ${duration}s, warmup ${warmup}s, $concurrency in flight (pgbench: $concurrency clients)"
kinds=(echo get put insert)
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

# ---- profile -----------------------------------------------------------------------------------------------
# proc_ticks PID...: user + system clock ticks of the processes (0 for one that is gone).
proc_ticks() {
    local p t sum=0
    for p in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}
pg_pids() { # the postmaster and its children
    local pm
    pm=$(head -n 1 "$(psql_q "SHOW data_directory")/postmaster.pid" 2>/dev/null) || return 0
    echo "$pm"
    ps -o pid= --ppid "$pm" 2>/dev/null | tr -d ' ' || true
}
redis_pid=$(timeout 5 redis-cli -p "$redis_port" INFO server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')
hz=$(getconf CLK_TCK)

# AES-GCM and the EVP cipher calls around it (self time), by symbol name.
gcm_re='aesni_gcm|gcm_|_gcm|GCM|ghash|aesni_|aes_|AES_|EVP_.*(Cipher|Encrypt|Decrypt)'
declare -A prof_ok prof_total prof_gcm prof_gcm_asm prof_crypto prof_unres prof_top prof_cpu prof_calls prof_dso
libcrypto=$(ldd "$vault_bin" 2>/dev/null | awk '/libcrypto/ {print $3; exit}')
objdump=$(command -v objdump || true)
# profile KIND: a put or get load of warmup + profile_s + 3 s; perf record -g -p on alma-vault for
# profile_s of it, and the CPU every process of the stack used in the same window.
profile() {
    local kind="$1" method="$get_method" data="$tmp/perf-$1.data" rc=0 lg
    [ "$kind" = put ] && method="$put_method"
    if ! refresh bench-pcp; then
        log "profile $kind: identity-refresh failed"
        return 0
    fi
    local out="$tmp/profile-$kind.json" total_s=$((profile_s + 3))
    timeout -k 5 $((total_s + warmup + 30)) "$loadgen" --target "127.0.0.1:$vault_port" --method "$method" \
        --concurrency "$concurrency" --duration "$total_s" --warmup "$warmup" --deadline-ms "$deadline_ms" --tls \
        --cert "$pki/bench.pem" --key "$pki/bench-key.pem" --ca "$pki/ca.pem" --server-name localhost \
        --request-file "$tmp/$kind.bin" --authorization-file "$tmp/bench-pcp.token" --json >"$out" 2>"$out.err" &
    lg=$!
    started_pids+=("$lg")
    sleep $((warmup + 1))
    local lgp # alma-loadgen itself, timeout's child
    lgp=$(ps -o pid= --ppid "$lg" 2>/dev/null | tr -d ' ' | awk 'NR == 1')
    local pgp before_v before_a before_i before_r before_p before_l after_v after_a after_i after_r after_p after_l
    mapfile -t pgp < <(pg_pids)
    before_v=$(proc_ticks "$vault_pid")
    before_a=$(proc_ticks "$audit_pid")
    before_i=$(proc_ticks "$identity_pid")
    before_r=$(proc_ticks ${redis_pid:+"$redis_pid"})
    before_p=$(proc_ticks "${pgp[@]+"${pgp[@]}"}")
    before_l=$(proc_ticks ${lgp:+"$lgp"})
    timeout -k 5 $((profile_s + 30)) perf record -q -g -o "$data" -p "$vault_pid" -- sleep "$profile_s" \
        >"$data.out" 2>&1 || rc=$?
    after_v=$(proc_ticks "$vault_pid")
    after_a=$(proc_ticks "$audit_pid")
    after_i=$(proc_ticks "$identity_pid")
    after_r=$(proc_ticks ${redis_pid:+"$redis_pid"})
    after_p=$(proc_ticks "${pgp[@]+"${pgp[@]}"}")
    after_l=$(proc_ticks ${lgp:+"$lgp"})
    wait "$lg" 2>/dev/null || true
    local keep=() p
    for p in "${started_pids[@]}"; do [ "$p" = "$lg" ] || keep+=("$p"); done
    started_pids=("${keep[@]+"${keep[@]}"}")
    prof_calls[$kind]=$(json_num calls_per_s "$out")
    cores() { awk -v a="$1" -v b="$2" -v hz="$hz" -v s="$profile_s" 'BEGIN {printf "%.2f", (b - a) / hz / s}'; }
    prof_cpu[$kind]="alma-vault $(cores "$before_v" "$after_v"), PostgreSQL $(cores "$before_p" "$after_p")"
    prof_cpu[$kind]+=", alma-audit $(cores "$before_a" "$after_a"), alma-identity $(cores "$before_i" "$after_i")"
    prof_cpu[$kind]+=", Redis $(cores "$before_r" "$after_r"), alma-loadgen $(cores "$before_l" "$after_l")"
    if [ "$rc" -ne 0 ] || [ ! -s "$data" ]; then
        log "profile $kind: perf record could not attach to alma-vault (exit $rc): $(tail -c 300 "$data.out" | tr '\n' ' ')"
        prof_ok[$kind]=0
        return 0
    fi
    # One line per (dso, symbol): percent, samples, dso, [.]/[k], symbol (self time, no call graph).
    perf report -i "$data" --stdio --no-children -n --sort dso,sym -g none --percent-limit 0 2>/dev/null |
        awk '/^ *[0-9.]+%/ {pct=$1; n=$2; dso=$3; sym=""; for (i=5; i<=NF; i++) sym=sym (i > 5 ? " " : "") $i;
                            sub(/%$/, "", pct); printf "%s\t%s\t%s\t%s\n", pct, n, dso, sym}' >"$data.tsv"
    if [ ! -s "$data.tsv" ]; then
        log "profile $kind: perf report gave no samples"
        prof_ok[$kind]=0
        return 0
    fi
    prof_ok[$kind]=1
    # A fifth column: 1 an AES-GCM symbol by name, 2 an address in libcrypto without a symbol (the
    # distribution strips its local symbols, the assembly ones among them) whose neighbouring instructions
    # are AES-NI or carry-less multiplication (GHASH), 0 anything else.
    local pct n dso sym c a hits
    while IFS=$'\t' read -r pct n dso sym; do
        c=0
        if [[ "$sym" =~ $gcm_re ]]; then
            c=1
        elif [[ "$dso" == libcrypto* && "$sym" =~ ^0x[0-9a-f]+$ && -n "$objdump" && -n "$libcrypto" ]]; then
            a=$((sym))
            hits=$(objdump -d --no-show-raw-insn --start-address=$((a - 48)) --stop-address=$((a + 48)) \
                "$libcrypto" 2>/dev/null | grep -cE 'aes(enc|dec)|pclmul' || true)
            [ "${hits:-0}" -gt 0 ] && c=2
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$pct" "$n" "$dso" "$sym" "$c"
    done <"$data.tsv" >"$data.cls"
    prof_total[$kind]=$(awk -F'\t' '{n+=$2} END {print n+0}' "$data.cls")
    prof_gcm[$kind]=$(awk -F'\t' '$5 > 0 {p+=$1} END {printf "%.1f", p}' "$data.cls")
    prof_gcm_asm[$kind]=$(awk -F'\t' '$5 == 2 {p+=$1} END {printf "%.1f", p}' "$data.cls")
    prof_crypto[$kind]=$(awk -F'\t' '$3 ~ /libcrypto/ {p+=$1} END {printf "%.1f", p}' "$data.cls")
    prof_unres[$kind]=$(awk -F'\t' '$3 ~ /libcrypto/ && $4 ~ /^0x/ {p+=$1} END {printf "%.1f", p}' "$data.cls")
    prof_top[$kind]=$(sort -t$'\t' -k2,2nr "$data.cls" |
        awk -F'\t' 'NR <= 10 {printf "| %s | %s | `%s` | %s |\n", NR, $1 "%", $4,
                               $3 ($5 == 1 ? " (AES-GCM)" : ($5 == 2 ? " (AES-NI/GHASH assembly)" : ""))}')
    prof_dso[$kind]=$(awk -F'\t' '{p[$3]+=$1} END {for (d in p) printf "%.1f\t%s\n", p[d], d}' "$data.tsv" |
        sort -t$'\t' -k1,1nr | awk -F'\t' 'NR <= 6 {printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1}')
    log "profile $kind: ${prof_calls[$kind]:-?} calls/s; ${prof_total[$kind]} samples of alma-vault, AES-GCM" \
        "${prof_gcm[$kind]} %, libcrypto ${prof_crypto[$kind]} %; cores used: ${prof_cpu[$kind]}"
}

perf_note=""
if [ "$profile_s" -gt 0 ]; then
    if command -v perf >/dev/null 2>&1; then
        log "profile: perf record -g -p alma-vault for ${profile_s}s under put, then get (not measured runs)"
        profile put
        profile get
    else
        perf_note="perf is not installed (apt-get install linux-perf): no profile."
        log "$perf_note"
    fi
fi

stop_server "$vault_pid"
stop_server "$identity_pid"
stop_server "$audit_pid"
audit_stats=$(psql_q "SELECT count(*), round(count(*)::numeric / greatest(count(DISTINCT logged_at), 1), 1)
                      FROM $audit_schema.events" 2>/dev/null | tr '|' ' ' || echo "? ?")
items=$(psql_q "SELECT count(*) FROM $vault_schema.records WHERE kind = 3" 2>/dev/null || echo "?")
read -r audit_events audit_per_commit <<<"$audit_stats"

minof() { # A B: the smaller, "-" when either is missing
    if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN {print (a < b ? a : b)}'; else echo "-"; fi
}
median3() { # like median, 3 decimals
    printf '%s\n' "$@" | sed '/^$/d' | sort -g |
        awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) printf "%.3f\n", a[(NR+1)/2];
                              else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'
}
r_get=""
r_put=""
declare -A base
for run in $(seq 1 "$runs"); do
    base[$run]=$(minof "${qps[echo,$run]:-}" "${qps[insert,$run]:-}")
    x=$(ratio "${qps[get,$run]:-}" "${qps[echo,$run]:-}")
    [ "$x" != "-" ] && r_get+=" $x"
    x=$(ratio "${qps[put,$run]:-}" "${base[$run]}")
    [ "$x" != "-" ] && r_put+=" $x"
done
# shellcheck disable=SC2086 # word splitting of the value lists is intended
{
    m_get=$(median3 $r_get)
    m_put=$(median3 $r_put)
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
grpc_version=$(pkg-config --modversion grpc++ 2>/dev/null || echo "?")
redis_version=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
openssl_version=$(openssl version 2>/dev/null | cut -d' ' -f2)
when=$(date -u +%Y-%m-%d)
label() {
    case "$1" in
    echo) echo "alma-echo Echo (worker), mTLS" ;;
    get) echo "alma-vault GetPatient (TREATMENT, 3 of 4 parts), mTLS + token" ;;
    put) echo "alma-vault PutItem (new Observation), mTLS + token" ;;
    *) echo "plain INSERT of a records row (pgbench)" ;;
    esac
}
okruns() {
    case "$1" in
    echo) echo "$okruns_echo/$runs" ;;
    get) echo "$okruns_get/$runs" ;;
    put) echo "$okruns_put/$runs" ;;
    *) echo "$okruns_insert/$runs" ;;
    esac
}

echo
echo "| workload | in flight | calls/s | p50 (µs) | p99 (µs) | runs ok |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for kind in echo get put insert; do
    # shellcheck disable=SC2046 # word splitting of the value lists is intended
    echo "| $(label "$kind") | $concurrency | $(median $(values "$kind" qps)) | $(median $(values "$kind" p50)) |" \
        "$(median $(values "$kind" p99)) | $(okruns "$kind") |"
done
echo
echo "Medians of the per-run ratios: GetPatient/echo **$m_get** (aim ≥ 0.5: $(verdict "$m_get" 0.5))," \
    "PutItem/min(echo, INSERT) **$m_put** (aim ≥ 0.7: $(verdict "$m_put" 0.7))."
echo
echo "| run | order | echo calls/s | Get calls/s | Put calls/s | INSERT tps | Get/echo | Put/min(echo, INSERT) |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for run in $(seq 1 "$runs"); do
    if [ $((run % 2)) -eq 0 ]; then o="insert, put, get, echo"; else o="echo, get, put, insert"; fi
    echo "| $run | $o | ${qps[echo,$run]:--} | ${qps[get,$run]:--} | ${qps[put,$run]:--} | ${qps[insert,$run]:--} |" \
        "$(ratio "${qps[get,$run]:-}" "${qps[echo,$run]:-}") | $(ratio "${qps[put,$run]:-}" "${base[$run]}") |"
done
echo
echo "$runs runs, interleaved (order alternating); $concurrency calls in flight (pgbench: $concurrency clients," \
    "-j 2, -M prepared), ${duration} s measured after ${warmup} s warmup; mTLS, 1 channel; alma-vault," \
    "alma-identity and alma-audit with their shipped settings, one of each for all runs (the superuser for" \
    "pg-uri and pg-owner-uri); $patients synthetic patients registered, $items items stored; the INSERT row:" \
    "a ${part_len}-byte sealed part and a 60-byte wrapped data key from the vault; $audit_events audit events" \
    "written ($audit_per_commit per audit commit); PostgreSQL $pg_version ($pg_settings); Redis ${redis_version:-?};" \
    "OpenSSL ${openssl_version:-?}; $(nproc) cores ($cpu) shared by client, servers, PostgreSQL and Redis;" \
    "gRPC $grpc_version; $when."

if [ "$profile_s" -gt 0 ]; then
    echo
    echo "### AES-GCM share (perf record -g -p alma-vault, ${profile_s} s, $concurrency in flight)"
    echo
    if [ -n "$perf_note" ]; then
        echo "$perf_note"
    else
        echo "| workload | calls/s while profiled | alma-vault samples | AES-GCM (self) | of it, unnamed AES-NI/GHASH assembly | all of libcrypto | libcrypto without symbol | cores used in the window |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        for kind in put get; do
            if [ "${prof_ok[$kind]:-0}" -eq 1 ]; then
                echo "| $kind | ${prof_calls[$kind]:--} | ${prof_total[$kind]} | ${prof_gcm[$kind]} % |" \
                    "${prof_gcm_asm[$kind]} % | ${prof_crypto[$kind]} % | ${prof_unres[$kind]} % | ${prof_cpu[$kind]} |"
            else
                echo "| $kind | ${prof_calls[$kind]:--} | perf could not attach | - | - | - | - |" \
                    "${prof_cpu[$kind]:--} |"
            fi
        done
        echo
        echo "AES-GCM = self time of the symbols matching \`$gcm_re\` (OpenSSL's GCM and AES code, the EVP" \
            "cipher calls, our acrypto_gcm_* wrappers), plus the libcrypto addresses without a symbol" \
            "(${libcrypto:-libcrypto}'s assembly is stripped of its local symbols) whose instructions are AES-NI" \
            "or PCLMULQDQ ($([ -n "$objdump" ] && echo "objdump" || echo "not classified: objdump is missing"))," \
            "as a share of every sample of alma-vault's threads, kernel included. It counts the TLS record" \
            "encryption of the gRPC channels (AES-GCM too) along with the vault's envelope encryption: an upper" \
            "bound for the latter. Cores used: user + system CPU time of each process (PostgreSQL: the postmaster" \
            "and every backend) over the profiled window."
        for kind in put get; do
            [ "${prof_ok[$kind]:-0}" -eq 1 ] || continue
            echo
            echo "Top 10 symbols of alma-vault under $kind (self time; by library: ${prof_dso[$kind]}):"
            echo
            echo "| # | share | symbol | library |"
            echo "| ---: | ---: | --- | --- |"
            echo "${prof_top[$kind]}"
        done
    fi
fi
