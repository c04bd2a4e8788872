#!/usr/bin/env bash
# The local Alma stack behind `make run` / `make stop`: a real PostgreSQL and Redis on loopback, the dev PKI,
# and every service binary that has been built, each with its own ports and certificate.
# State (data, logs, pid files, secrets) lives in <repo>/.stack/, which git ignores.
set -euo pipefail

SERVICES=(echo audit identity vault guideline signaling breach gateway)
API_BASE=7443
ADMIN_BASE=9090
METRICS_BASE=9190
PG_BASE=55432
REDIS_BASE=56379
TRUST_DOMAIN=alma.local
START_TIMEOUT=20
STOP_TIMEOUT=${ALMA_STACK_STOP_TIMEOUT:-30}

usage() {
    cat <<'EOF'
Usage: deploy/stack.sh start BUILD_DIR [--foreground]
       deploy/stack.sh stop [BUILD_DIR]
       deploy/stack.sh status [BUILD_DIR]
       deploy/stack.sh --help

start   Creates the dev PKI (.stack/pki), starts PostgreSQL (127.0.0.1:55432 or the next free port) and Redis
        (127.0.0.1:56379 or the next free port), creates for every service with a services/<svc>/db marker an
        owner role alma_<svc> (schema <svc> in database alma; runs the migrations) and a runtime role
        alma_<svc>_app (the service's own migrations grant it what it needs; passwords in
        .stack/secrets/<svc>.pgpass and <svc>-app.pgpass), creates the audit log's Ed25519 signing key,
        identity's and the vault's master keys and the vault's certificate key (.stack/secrets) if missing,
        then starts every built service binary BUILD_DIR/services/<svc>/alma-<svc> in the background
        and waits until its admin port accepts connections. Runs deploy/demo-data.sh if it exists, then
        prints every endpoint. Components that already run are left alone.
        --foreground: stay attached; Ctrl-C (or SIGTERM) stops the whole stack cleanly.
stop    Stops services (SIGTERM, waits for them to drain), then Redis, then PostgreSQL (fast shutdown).
status  Shows what runs; exit 0 when PostgreSQL, Redis and every started service run, 3 otherwise.

Ports per service, in the order echo audit identity vault guideline signaling breach gateway:
  API (mTLS) 7443+i, admin (plaintext gRPC health) 9090+i, metrics (Prometheus HTTP) 9190+i.
Environment: ALMA_STACK_DIR overrides the state directory (default <repo>/.stack);
             ALMA_STACK_STOP_TIMEOUT seconds a service gets to drain on stop (default 30).
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ALMA_STACK_DIR:-$REPO/.stack}
PKI="$STATE/pki"
RUN="$STATE/run"
LOGS="$STATE/logs"
SECRETS="$STATE/secrets"
PGDATA="$STATE/pg"
REDISDIR="$STATE/redis"

say() { echo "stack: $*"; }
warn() { echo "stack: $*" >&2; }
die() {
    echo "stack: error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------- helpers

# Display a path relative to the repository when it lies inside it (shorter example commands).
rel() {
    case "$1" in
    "$REPO"/*) echo "${1#"$REPO"/}" ;;
    *) echo "$1" ;;
    esac
}

port_in_use() { # port_in_use PORT
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

first_free_port() { # first_free_port BASE
    local p=$1
    while port_in_use "$p"; do
        p=$((p + 1))
        [ "$p" -lt $(($1 + 100)) ] || die "no free port in $1..$((p - 1))"
    done
    echo "$p"
}

tcp_accepts() { # tcp_accepts PORT
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

pid_alive() { # pid_alive PID
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

# PID from FILE if that process is alive and its command line contains PATTERN (guards against pid reuse).
pid_from_file() { # pid_from_file FILE PATTERN
    local pid
    [ -s "$1" ] || return 1
    pid=$(head -n1 "$1" | tr -dc '0-9')
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
    echo "$pid"
}

wait_gone() { # wait_gone PID SECONDS -> 0 when gone
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        pid_alive "$1" || return 0
        sleep 0.1
    done
    ! pid_alive "$1"
}

# --------------------------------------------------------------------------------------------- postgres

PG_BIN=""
find_pg_bin() {
    local d
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            PG_BIN=$d
            return 0
        fi
    done
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        PG_BIN=$(dirname "$(command -v pg_ctl)")
        return 0
    fi
    die "PostgreSQL server binaries (initdb, pg_ctl) not found: run deploy/deps.sh"
}

# initdb refuses to run as root: as root, every server-side Postgres command runs as the postgres user.
PG_OS_USER=""
as_pg() {
    if [ -n "$PG_OS_USER" ]; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

pg_setup_user() {
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user (installed with the postgresql package)"
        command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux)"
        PG_OS_USER=postgres
    fi
}

pg_port() { cat "$RUN/pg.port" 2>/dev/null || true; }
pg_sockdir() { cat "$RUN/pg.sockdir" 2>/dev/null || true; }

pg_running() {
    [ -d "$PGDATA" ] && [ -n "$(pg_port)" ] && [ -n "$PG_BIN" ] &&
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# psql as the local superuser over the unix socket (trust); SQL on stdin so that secrets never appear in
# a command line.
pg_psql() { # pg_psql DB [psql args...]
    local db=$1
    shift
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$(pg_sockdir)" -p "$(pg_port)" -U postgres -d "$db" "$@"
}

pg_init() {
    [ -s "$PGDATA/PG_VERSION" ] && return 0
    say "initdb $(rel "$PGDATA")"
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER:" "$PGDATA"
    if [ -n "$PG_OS_USER" ] && ! runuser -u "$PG_OS_USER" -- test -w "$PGDATA"; then
        die "the postgres OS user cannot write $PGDATA (a parent directory is not searchable by it); set ALMA_STACK_DIR to a directory it can reach"
    fi
    if ! as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$LOGS/initdb.log" 2>&1; then
        tail -n 20 "$LOGS/initdb.log" >&2
        die "initdb failed (log: $(rel "$LOGS/initdb.log"))"
    fi
    # Local superuser through the unix socket only; service roles with a password over loopback TCP, only to
    # database alma. The superuser has no password, so it cannot log in over TCP.
    cat >"$PGDATA/pg_hba.conf" <<'EOF'
# Written by deploy/stack.sh (dev stack).
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 trust
host    alma      all       127.0.0.1/32   scram-sha-256
EOF
    echo "include_if_exists = 'alma-stack.conf'" >>"$PGDATA/postgresql.conf"
    [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER:" "$PGDATA/pg_hba.conf"
}

pg_start() {
    find_pg_bin
    if pg_running; then
        say "postgres already running on 127.0.0.1:$(pg_port)"
        return 0
    fi
    pg_init
    local port sockdir
    port=$(first_free_port "$PG_BASE")
    sockdir="$STATE/pgsock"
    # A unix socket path is limited to 107 bytes.
    if [ $((${#sockdir} + 20)) -gt 100 ]; then
        sockdir=$(mktemp -d /tmp/alma-pgsock.XXXXXX)
    fi
    mkdir -p "$sockdir"
    chmod 700 "$sockdir"
    [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER:" "$sockdir"
    cat >"$PGDATA/alma-stack.conf" <<EOF
# Written by deploy/stack.sh at each start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockdir'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
log_min_error_statement = 'panic'
log_connections = off
EOF
    [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER:" "$PGDATA/alma-stack.conf"
    echo "$port" >"$RUN/pg.port"
    echo "$sockdir" >"$RUN/pg.sockdir"
    touch "$LOGS/postgres.log"
    [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER:" "$LOGS/postgres.log"
    say "starting postgres on 127.0.0.1:$port"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 start >/dev/null; then
        tail -n 20 "$LOGS/postgres.log" >&2
        die "postgres did not start (log: $(rel "$LOGS/postgres.log"))"
    fi
}

pg_bootstrap_db() {
    local exists
    exists=$(pg_psql postgres -tA <<<"SELECT 1 FROM pg_database WHERE datname = 'alma';")
    if [ "$exists" != 1 ]; then
        say "creating database alma"
        pg_psql postgres <<<"CREATE DATABASE alma;"
    fi
    # Least privilege: nobody gets anything by default; each service role gets CONNECT and its own schema.
    pg_psql alma <<'EOF'
SET client_min_messages = warning;
REVOKE ALL ON DATABASE alma FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
EOF
}

# A login role with a random password kept in .stack/secrets/<file>.pgpass (created once, reused).
pg_login_role() { # pg_login_role ROLE FILE SCHEMA
    local role=$1 file="$SECRETS/$2.pgpass" schema=$3 pw=""
    if [ -s "$file" ]; then
        pw=$(awk -F: 'NF == 5 { print $5; exit }' "$file")
    fi
    if ! [[ "$pw" =~ ^[0-9a-f]{32,}$ ]]; then
        pw=$(openssl rand -hex 24)
        (
            umask 077
            printf '127.0.0.1:*:alma:%s:%s\n' "$role" "$pw" >"$file.tmp"
        )
        mv -f "$file.tmp" "$file"
        say "new password for $role in $(rel "$file")"
    fi
    chmod 600 "$file"
    pg_psql alma <<EOF
SET client_min_messages = warning;
SET log_statement = 'none';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE $role;
  END IF;
END \$\$;
ALTER ROLE $role WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  CONNECTION LIMIT 64 PASSWORD '$pw';
ALTER ROLE $role SET search_path = $schema;
GRANT CONNECT ON DATABASE alma TO $role;
EOF
}

# Two roles per service with a services/<svc>/db marker: alma_<svc> owns schema <svc> and runs the
# migrations (ALMA_PG_OWNER_URI); alma_<svc>_app is what the service runs as (ALMA_PG_URI) and gets only
# the rights the service's own migrations grant it (e.g. INSERT and SELECT on the audit log).
pg_service_role() { # pg_service_role SVC
    local svc=$1
    [[ "$svc" =~ ^[a-z][a-z0-9_]*$ ]] || die "service name not usable as an SQL identifier: $svc"
    pg_login_role "alma_$svc" "$svc" "$svc"
    pg_login_role "alma_${svc}_app" "$svc-app" "$svc"
    pg_psql alma <<EOF
SET client_min_messages = warning;
-- The owner runs migrations, which may use temporary tables; the runtime role gets nothing here.
GRANT TEMPORARY ON DATABASE alma TO alma_$svc;
CREATE SCHEMA IF NOT EXISTS $svc AUTHORIZATION alma_$svc;
ALTER SCHEMA $svc OWNER TO alma_$svc;
REVOKE ALL ON SCHEMA $svc FROM PUBLIC;
EOF
    say "role alma_$svc owns schema $svc; the service runs as alma_${svc}_app"
}

# The audit log's Ed25519 checkpoint key and identity's master key (created once, kept in .stack/secrets).
signing_keys() {
    local master="$SECRETS/identity-master.key"
    if [ ! -s "$master" ]; then
        (
            umask 077
            openssl rand -base64 32 >"$master.tmp"
        ) || die "cannot create the identity master key"
        mv -f "$master.tmp" "$master"
        say "new identity master key in $(rel "$master")"
    fi
    chmod 600 "$master"
    local key="$SECRETS/audit-signing-key.pem"
    if [ ! -s "$key" ]; then
        (
            umask 077
            openssl genpkey -algorithm ed25519 -out "$key.tmp" 2>/dev/null
        ) || die "cannot create the audit signing key"
        mv -f "$key.tmp" "$key"
        say "new audit signing key in $(rel "$key")"
    fi
    chmod 600 "$key"
    # The vault: its master key (file provider: base64 of 32 bytes, mode 600) and the Ed25519 key that signs
    # destruction certificates.
    local vmaster="$SECRETS/vault-master.key"
    if [ ! -s "$vmaster" ]; then
        (
            umask 077
            openssl rand -base64 32 >"$vmaster.tmp"
        ) || die "cannot create the vault master key"
        mv -f "$vmaster.tmp" "$vmaster"
        say "new vault master key in $(rel "$vmaster")"
    fi
    chmod 600 "$vmaster"
    local vkey="$SECRETS/vault-certificate-key.pem"
    if [ ! -s "$vkey" ]; then
        (
            umask 077
            openssl genpkey -algorithm ed25519 -out "$vkey.tmp" 2>/dev/null
        ) || die "cannot create the vault certificate key"
        mv -f "$vkey.tmp" "$vkey"
        say "new vault certificate key in $(rel "$vkey")"
    fi
    chmod 600 "$vkey"
}

# The first tenant and its platform administrator (alma-admin bootstrap), once: the password is random, and it,
# the TOTP URI and the recovery codes go to .stack/secrets/demo-admin.txt (mode 600), never to the terminal.
bootstrap_identity() { # bootstrap_identity BUILD_DIR
    local admin="$1/tools/alma-admin" out="$SECRETS/demo-admin.txt" pw
    [ -x "$admin" ] && svc_pid identity >/dev/null || return 0
    [ -s "$out" ] && return 0
    pw=$(openssl rand -base64 18)
    (
        umask 077
        for v in "${!ALMA_@}"; do unset "$v"; done
        printf '%s\n' "$pw" >"$SECRETS/demo-admin.pw"
        {
            echo "tenant demo-clinic, username admin, password $pw"
            ALMA_PG_URI="postgresql://alma_identity:$(pg_password identity)@127.0.0.1:$(pg_port)/alma" \
                ALMA_MASTER_KEY_FILE="$SECRETS/identity-master.key" \
                "$admin" bootstrap --tenant demo-clinic --display-name "Demo Clinic" --username admin \
                --password-file "$SECRETS/demo-admin.pw"
        } >"$out.tmp"
    ) || {
        rm -f "$out.tmp" "$SECRETS/demo-admin.pw"
        say "identity: alma-admin bootstrap did not run (tenants exist already, or see above)"
        return 0
    }
    rm -f "$SECRETS/demo-admin.pw"
    mv -f "$out.tmp" "$out"
    say "identity: tenant demo-clinic with platform admin 'admin'; password, TOTP URI and recovery codes in $(rel "$out")"
}

pg_password() { # pg_password FILE (SVC or SVC-app)
    awk -F: 'NF == 5 { print $5; exit }' "$SECRETS/$1.pgpass"
}

pg_stop() {
    find_pg_bin
    if [ ! -s "$PGDATA/postmaster.pid" ]; then
        return 0
    fi
    if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        say "stopping postgres (fast)"
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null ||
            warn "postgres did not stop in time (log: $(rel "$LOGS/postgres.log"))"
    fi
    local sockdir
    sockdir=$(pg_sockdir)
    case "$sockdir" in
    /tmp/alma-pgsock.*) rm -rf "$sockdir" ;;
    *) ;;
    esac
}

# ------------------------------------------------------------------------------------------------ redis

redis_port() { cat "$RUN/redis.port" 2>/dev/null || true; }
redis_pid() { pid_from_file "$RUN/redis.pid" redis-server; }

redis_start() {
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found: run deploy/deps.sh"
    if redis_pid >/dev/null; then
        say "redis already running on 127.0.0.1:$(redis_port)"
        return 0
    fi
    rm -f "$RUN/redis.pid"
    local port i
    port=$(first_free_port "$REDIS_BASE")
    mkdir -p "$REDISDIR"
    chmod 700 "$REDISDIR"
    cat >"$REDISDIR/redis.conf" <<EOF
# Written by deploy/stack.sh at each start.
bind 127.0.0.1
port $port
protected-mode yes
daemonize yes
pidfile "$RUN/redis.pid"
logfile "$LOGS/redis.log"
dir "$REDISDIR"
appendonly yes
save 60 1
EOF
    echo "$port" >"$RUN/redis.port"
    say "starting redis on 127.0.0.1:$port"
    redis-server "$REDISDIR/redis.conf" >/dev/null 2>>"$LOGS/redis.log" ||
        die "redis-server failed (log: $(rel "$LOGS/redis.log"))"
    for ((i = 0; i < 100; i++)); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$LOGS/redis.log" >&2
    die "redis did not answer PING on 127.0.0.1:$port within 10 s"
}

redis_stop() {
    local pid
    if pid=$(redis_pid); then
        say "stopping redis"
        kill -TERM "$pid"
        wait_gone "$pid" 30 || {
            warn "redis did not exit in 30 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        }
    fi
    rm -f "$RUN/redis.pid"
}

# --------------------------------------------------------------------------------------------- services

svc_index() { # svc_index SVC
    local i
    for i in "${!SERVICES[@]}"; do
        [ "${SERVICES[$i]}" = "$1" ] && {
            echo "$i"
            return 0
        }
    done
    return 1
}
svc_api_port() { echo $((API_BASE + $(svc_index "$1"))); }
svc_admin_port() { echo $((ADMIN_BASE + $(svc_index "$1"))); }
svc_metrics_port() { echo $((METRICS_BASE + $(svc_index "$1"))); }
svc_has_db() { [ -d "$REPO/services/$1" ] && [ -e "$REPO/services/$1/db" ]; }
svc_pid() { pid_from_file "$RUN/$1.pid" "alma-$1"; }

svc_start() { # svc_start SVC BIN
    local svc=$1 bin=$2 pid api admin metrics p log="$LOGS/$1.log"
    if pid=$(svc_pid "$svc"); then
        say "$svc already running (pid $pid)"
        return 0
    fi
    rm -f "$RUN/$svc.pid"
    api=$(svc_api_port "$svc")
    admin=$(svc_admin_port "$svc")
    metrics=$(svc_metrics_port "$svc")
    for p in "$api" "$admin" "$metrics"; do
        if port_in_use "$p"; then
            die "port $p for $svc is taken by another process (see: ss -ltnp 'sport = :$p')"
        fi
    done
    local pg_uri="" rport
    rport=$(redis_port)
    local pg_owner_uri=""
    if svc_has_db "$svc"; then
        pg_uri="postgresql://alma_${svc}_app:$(pg_password "$svc-app")@127.0.0.1:$(pg_port)/alma"
        pg_owner_uri="postgresql://alma_$svc:$(pg_password "$svc")@127.0.0.1:$(pg_port)/alma"
    fi
    say "starting $svc (log: $(rel "$log"))"
    echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) started by deploy/stack.sh" >>"$log"
    (
        # Only the settings given here: nothing inherited from the caller's ALMA_* variables.
        for v in "${!ALMA_@}"; do unset "$v"; done
        export ALMA_API_ADDR="127.0.0.1:$api" ALMA_ADMIN_ADDR="127.0.0.1:$admin"
        export ALMA_METRICS_ADDR="127.0.0.1:$metrics"
        export ALMA_TLS_CERT="$PKI/$svc.pem" ALMA_TLS_KEY="$PKI/$svc-key.pem" ALMA_TLS_CA="$PKI/ca.pem"
        export ALMA_TRUST_DOMAIN="$TRUST_DOMAIN" ALMA_REDIS_ADDR="127.0.0.1:$rport"
        if [ -n "$pg_uri" ]; then export ALMA_PG_URI="$pg_uri" ALMA_PG_OWNER_URI="$pg_owner_uri"; fi
        if [ "$svc" = audit ]; then export ALMA_SIGNING_KEY="$SECRETS/audit-signing-key.pem"; fi
        if [ "$svc" = identity ]; then
            export ALMA_MASTER_KEY_FILE="$SECRETS/identity-master.key"
            export ALMA_AUDIT_ADDR="127.0.0.1:$(svc_api_port audit)"
        fi
        if [ "$svc" = guideline ]; then
            export ALMA_AUDIT_ADDR="127.0.0.1:$(svc_api_port audit)"
            export ALMA_IDENTITY_ADDR="127.0.0.1:$(svc_api_port identity)"
            export ALMA_VAULT_ADDR="127.0.0.1:$(svc_api_port vault)"
            export ALMA_BUNDLE_FILE="$REPO/services/guideline/bundles/alma-referral-core-1.0.0.json"
        fi
        if [ "$svc" = vault ]; then
            export ALMA_MASTER_KEY="file:$SECRETS/vault-master.key"
            export ALMA_SIGNING_KEY="$SECRETS/vault-certificate-key.pem"
            export ALMA_AUDIT_ADDR="127.0.0.1:$(svc_api_port audit)"
            export ALMA_IDENTITY_ADDR="127.0.0.1:$(svc_api_port identity)"
        fi
        # Own session: a Ctrl-C in the terminal reaches only this script, which stops things in order.
        exec setsid "$bin" </dev/null >>"$log" 2>&1
    ) &
    pid=$!
    # Not a job of this shell: no "Killed" notices, and it outlives the script.
    disown "$pid" 2>/dev/null || true
    echo "$pid" >"$RUN/$svc.pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! pid_alive "$pid"; then
            rm -f "$RUN/$svc.pid"
            tail -n 30 "$log" >&2
            die "$svc exited during start-up (log above: $(rel "$log"))"
        fi
        if tcp_accepts "$admin"; then
            say "$svc up (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$log" >&2
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/$svc.pid"
    die "$svc did not accept connections on its admin port 127.0.0.1:$admin within ${START_TIMEOUT} s (log above: $(rel "$log"))"
}

svc_stop_one() { # svc_stop_one SVC
    local svc=$1 pid
    if pid=$(svc_pid "$svc"); then
        say "stopping $svc (pid $pid, SIGTERM)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
            warn "$svc did not exit within ${STOP_TIMEOUT} s of SIGTERM, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || true
        fi
    fi
    rm -f "$RUN/$svc.pid"
}

# Reverse start order, one at a time: the gateway (which calls everyone) drains first and audit, which every
# service needs for its in-flight disclosures, near the end. Then anything else that left a pid file.
svc_stop_all() {
    local i f svc
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        svc_stop_one "${SERVICES[$i]}"
    done
    for f in "$RUN"/*.pid; do
        [ -e "$f" ] || continue
        svc=$(basename "$f" .pid)
        case "$svc" in redis | postgres) continue ;; *) ;; esac
        svc_stop_one "$svc"
    done
}

# ---------------------------------------------------------------------------------------------- commands

print_table() {
    local build=$1 svc pid state
    echo
    printf '%-12s %-22s %-22s %-22s %s\n' COMPONENT API ADMIN METRICS STATE
    printf '%-12s %-22s %-22s %-22s %s\n' postgres "127.0.0.1:$(pg_port)" "-" "-" \
        "$(pg_running && echo running || echo stopped)  database alma, socket $(rel "$(pg_sockdir)")"
    printf '%-12s %-22s %-22s %-22s %s\n' redis "127.0.0.1:$(redis_port)" "-" "-" \
        "$(redis_pid >/dev/null && echo running || echo stopped)"
    for svc in "${SERVICES[@]}"; do
        if pid=$(svc_pid "$svc"); then
            state="running (pid $pid)"
        elif [ -z "$build" ] || [ -x "$build/services/$svc/alma-$svc" ]; then
            state="stopped"
        else
            state="not built"
        fi
        svc_has_db "$svc" && state="$state, db role alma_$svc"
        printf '%-12s %-22s %-22s %-22s %s\n' "$svc" "127.0.0.1:$(svc_api_port "$svc")" \
            "127.0.0.1:$(svc_admin_port "$svc")" "127.0.0.1:$(svc_metrics_port "$svc")" "$state"
    done
}

print_examples() {
    local build=$1 cli tls
    cli="$(rel "$build")/tools/alma-cli"
    tls="--cert $(rel "$PKI")/alma-cli.pem --key $(rel "$PKI")/alma-cli-key.pem --ca $(rel "$PKI")/ca.pem"
    cat <<EOF

Try (from $REPO):
  $cli --addr 127.0.0.1:$API_BASE $tls echo hello
  $cli --addr 127.0.0.1:$API_BASE $tls health
  curl http://127.0.0.1:$METRICS_BASE/metrics
  psql -h $(pg_sockdir) -p $(pg_port) -U postgres alma        # superuser, unix socket only
  redis-cli -p $(redis_port)
Logs: $(rel "$LOGS")/   Stop: deploy/stack.sh stop $(rel "$build")
EOF
}

write_env_file() {
    # Endpoints only, never passwords: for demo-data.sh and other tools.
    cat >"$STATE/stack.env" <<EOF
ALMA_STACK_DIR=$STATE
ALMA_STACK_PKI=$PKI
ALMA_STACK_PG_HOST=127.0.0.1
ALMA_STACK_PG_PORT=$(pg_port)
ALMA_STACK_PG_SOCKET=$(pg_sockdir)
ALMA_STACK_REDIS_ADDR=127.0.0.1:$(redis_port)
EOF
    local svc
    for svc in "${SERVICES[@]}"; do
        echo "ALMA_STACK_${svc^^}_API=127.0.0.1:$(svc_api_port "$svc")" >>"$STATE/stack.env"
        echo "ALMA_STACK_${svc^^}_ADMIN=127.0.0.1:$(svc_admin_port "$svc")" >>"$STATE/stack.env"
    done
}

cmd_stop() {
    [ -d "$STATE" ] || {
        say "nothing to stop ($(rel "$STATE") does not exist)"
        return 0
    }
    mkdir -p "$RUN"
    pg_setup_user
    svc_stop_all
    redis_stop
    pg_stop
    say "stopped"
}

cmd_start() {
    local build=$1 foreground=$2 svc bin started=0
    [ -d "$build" ] || die "build directory $build does not exist (configure and build first: cmake -S . -B build && cmake --build build)"
    build=$(cd "$build" && pwd)
    mkdir -p "$STATE" "$RUN" "$LOGS"
    chmod 755 "$STATE"
    mkdir -p "$SECRETS"
    chmod 700 "$SECRETS"
    command -v openssl >/dev/null 2>&1 || die "openssl not found: run deploy/deps.sh"
    pg_setup_user

    bash "$REPO/deploy/pki.sh" "$PKI" --trust-domain "$TRUST_DOMAIN" --namespace alma |
        grep -v '^pki.sh: wrote' || true
    [ -s "$PKI/ca.pem" ] || die "dev PKI missing in $(rel "$PKI")"

    pg_start
    pg_bootstrap_db
    for svc in "${SERVICES[@]}"; do
        if svc_has_db "$svc"; then
            pg_service_role "$svc"
        fi
    done
    signing_keys
    redis_start
    write_env_file

    for svc in "${SERVICES[@]}"; do
        bin="$build/services/$svc/alma-$svc"
        if [ -x "$bin" ]; then
            svc_start "$svc" "$bin"
            started=$((started + 1))
        fi
    done
    [ "$started" -gt 0 ] || say "no service binaries in $(rel "$build")/services/*/ yet: only Postgres and Redis run"
    bootstrap_identity "$build"

    if [ -f "$REPO/deploy/demo-data.sh" ]; then
        say "loading demo data (deploy/demo-data.sh)"
        (
            set -a
            # shellcheck disable=SC1091
            . "$STATE/stack.env"
            set +a
            export ALMA_BUILD_DIR="$build"
            bash "$REPO/deploy/demo-data.sh" "$build"
        ) || die "deploy/demo-data.sh failed"
    fi

    print_table "$build"
    print_examples "$build"

    if [ "$foreground" -eq 1 ]; then
        foreground_wait "$build"
    fi
}

foreground_wait() {
    local build=$1 svc dead=" "
    on_signal() {
        trap - INT TERM
        echo
        say "stopping the stack"
        cmd_stop
        exit 0
    }
    trap on_signal INT TERM
    say "running in the foreground; Ctrl-C stops everything"
    while true; do
        sleep 2 &
        wait $! || true
        # `make stop` from another shell: nothing left to watch, so end quietly.
        if ! pg_running && ! redis_pid >/dev/null; then
            say "the stack was stopped (make stop); exiting"
            exit 0
        fi
        for svc in "${SERVICES[@]}"; do
            if [ -f "$RUN/$svc.pid" ] && ! svc_pid "$svc" >/dev/null && [[ "$dead" != *" $svc "* ]]; then
                warn "$svc has exited (log: $(rel "$LOGS/$svc.log"))"
                dead="$dead$svc "
            fi
        done
    done
}

cmd_status() {
    local build=${1:-} rc=0 svc
    if [ ! -d "$STATE" ]; then
        say "not started ($(rel "$STATE") does not exist)"
        return 3
    fi
    [ -z "$build" ] || [ ! -d "$build" ] || build=$(cd "$build" && pwd)
    pg_setup_user
    find_pg_bin
    pg_running || rc=3
    redis_pid >/dev/null || rc=3
    for svc in "${SERVICES[@]}"; do
        if [ -f "$RUN/$svc.pid" ] && ! svc_pid "$svc" >/dev/null; then
            rc=3
        fi
    done
    print_table "$build"
    return "$rc"
}

# ------------------------------------------------------------------------------------------------- main

cmd=${1:-}
case "$cmd" in
-h | --help | help)
    usage
    exit 0
    ;;
start)
    shift
    build=""
    fg=0
    for a in "$@"; do
        case "$a" in
        --foreground) fg=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*) die "unknown option: $a (see --help)" ;;
        *)
            [ -z "$build" ] || die "only one BUILD_DIR may be given"
            build=$a
            ;;
        esac
    done
    [ -n "$build" ] || die "usage: deploy/stack.sh start BUILD_DIR [--foreground]"
    cmd_start "$build" "$fg"
    ;;
stop)
    [ $# -le 2 ] || die "usage: deploy/stack.sh stop [BUILD_DIR]"
    cmd_stop
    ;;
status)
    [ $# -le 2 ] || die "usage: deploy/stack.sh status [BUILD_DIR]"
    rc=0
    cmd_status "${2:-}" || rc=$?
    exit "$rc"
    ;;
"")
    usage >&2
    exit 2
    ;;
*) die "unknown command: $cmd (see --help)" ;;
esac
