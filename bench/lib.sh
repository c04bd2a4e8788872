# bench/lib.sh: helpers shared by bench/run.sh and bench/audit.sh. Sourced, not run; the caller uses bash
# with `set -euo pipefail`, sets PROG (its name in messages) before sourcing, and kills what it started with
# kill_started (from its EXIT trap). Servers it starts go into started_pids so that they are.
# shellcheck shell=bash

started_pids=()

die() {
    echo "$PROG: $*" >&2
    exit 2
}
log() { echo "$PROG: $*" >&2; }

# int_arg NAME VALUE MIN MAX: a plain decimal in range, else exit.
int_arg() {
    [[ "$2" =~ ^[0-9]{1,9}$ ]] || die "$1: expected a number, got '$2'"
    local v=$((10#$2))
    ((v >= $3 && v <= $4)) || die "$1: $2 is out of range [$3, $4]"
    echo "$v"
}

# build_targets BUILD_DIR LOG TARGET...: configure BUILD_DIR (RelWithDebInfo, as the Dockerfile ships, -DALMA_BENCH=ON) and build the targets,
# output appended to LOG. Returns cmake's status; the caller decides what a failure means.
build_targets() {
    local build="$1" logf="$2" root
    shift 2
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    { cmake -S "$root" -B "$build" -DALMA_BENCH=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
        cmake --build "$build" --target "$@" -j "$(nproc)"; } >>"$logf" 2>&1
}

# make_pki DIR FILE...: the dev PKI in DIR (deploy/pki.sh), then check that each FILE is in it.
make_pki() {
    local dir="$1" root f
    shift
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    [ -x "$root/deploy/pki.sh" ] || die "deploy/pki.sh is missing: cannot make the dev PKI"
    "$root/deploy/pki.sh" "$dir" >/dev/null || die "deploy/pki.sh $dir failed"
    for f in "$@"; do
        [ -s "$dir/$f" ] || die "$dir/$f is missing after deploy/pki.sh"
    done
}

# True when something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port nobody listens on (a small race with other programs is possible; the servers bind with
# SO_REUSEPORT off, so a clash fails loudly instead of sharing the port).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! port_open "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free loopback port found"
}

# wait_listening PID PORT: up to 15 s for the port to accept connections while PID lives.
wait_listening() {
    for _ in $(seq 1 150); do
        kill -0 "$1" 2>/dev/null || return 1
        port_open "$2" && return 0
        sleep 0.1
    done
    return 1
}

# stop_server PID: SIGTERM, up to 10 s to exit, then SIGKILL; PID leaves started_pids.
stop_server() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        log "server $1 ignored SIGTERM for 10 s: killing it"
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${started_pids[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    started_pids=("${keep[@]+"${keep[@]}"}")
}

# kill_started: SIGKILL every server still in started_pids (for the EXIT trap).
kill_started() {
    local p
    for p in "${started_pids[@]+"${started_pids[@]}"}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    started_pids=()
}

# json_num KEY FILE: a numeric field of alma-loadgen's --json line.
json_num() { sed -n "s/.*\"$1\":\([0-9.][0-9.]*\).*/\1/p" "$2" | head -n 1; }

# median VALUES...: one decimal; "-" when there are none.
median() {
    printf '%s\n' "$@" | sed '/^$/d' | sort -g |
        awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) printf "%.1f\n", a[(NR+1)/2];
                              else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'
}

# start_durable_pg PG_SH DIR: start a private PostgreSQL (tests/harness/pg.sh) in DIR, refuse to go on unless
# it is fully durable (fsync and synchronous_commit on), and set pg_uri, pg_settings, pg_version. The caller
# sets pg_started=1 first, so its cleanup trap stops the server whatever happens. Defines psql_q SQL: one
# statement as the superuser, unaligned tuples only, errors fatal to the statement.
start_durable_pg() {
    "$1" start "$2" >&2 || die "could not start PostgreSQL"
    pg_uri=$(cat "$2/pg.uri")
    pg_settings=$(psql_q "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
                          WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
                                         'commit_delay', 'shared_buffers', 'wal_level')")
    # shellcheck disable=SC2034 # pg_version is for the caller's report
    pg_version=$(psql_q "SHOW server_version" | cut -d' ' -f1)
    case "$pg_settings" in
    *fsync=on*synchronous_commit=on*) ;;
    *) die "PostgreSQL is not fully durable: $pg_settings" ;;
    esac
}
psql_q() { timeout -k 5 120 psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$pg_uri" -c "$1"; }
