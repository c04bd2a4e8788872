#!/usr/bin/env bash
# Test harness: a throw-away PostgreSQL on a free loopback port, for the ctest fixture "pg".
#
#   pg.sh start   DIR          initdb into DIR/pg and start it (or reuse the one already running for DIR);
#                              writes DIR/pg.uri (postgresql://postgres@127.0.0.1:PORT/postgres) and DIR/pg.port
#   pg.sh stop    DIR          fast shutdown, then remove the data directory (no-op when none runs)
#   pg.sh restart DIR [MODE]   restart on the same port keeping the data. MODE is fast (default: a clean
#                              shutdown) or immediate (no shutdown checkpoint: the next start replays the WAL,
#                              as after a crash)
#   pg.sh status  DIR          exit 0 when the server for DIR accepts connections
#
# The server listens on 127.0.0.1 only (plus a unix socket inside DIR), runs with fsync=on and full durability
# (later tests measure it), and trusts the superuser "postgres" on loopback; any other role must log in with
# its SCRAM password, as in the deployed stack. initdb refuses to run as root, so as root (CI) the server runs
# as the "postgres" system user and owns DIR/pg; otherwise it runs as the calling user.
#
# Two build trees (build/, build-asan/) may run their tests at the same time, each with its own DIR: the
# port is picked at random among free ones and another is tried when a concurrent start wins the race for
# it. Calls for the same DIR are serialised with flock(1). Errors print the tail of the server log.
set -euo pipefail

PROG=pg.sh
START_TIMEOUT_S=60
STOP_TIMEOUT_S=60
PORT_ATTEMPTS=25
# Below Linux's default ephemeral range (32768-60999), so client sockets rarely hold our candidates.
PORT_MIN=20000
PORT_SPAN=12000
# sun_path holds 108 bytes; the socket file name ".s.PGSQL.NNNNN" and its ".lock" take up to 20 of them.
MAX_SOCKDIR_LEN=80

LOG=

die() {
    echo "$PROG: $*" >&2
    log_tail
    exit 1
}

usage() {
    echo "usage: $PROG start|stop|status DIR | $PROG restart DIR [fast|immediate]" >&2
    exit 2
}

log_tail() {
    if [[ -n $LOG && -s $LOG ]]; then
        echo "--- last lines of $LOG ---" >&2
        tail -n 30 "$LOG" >&2
    fi
}

[[ $# -ge 2 && $# -le 3 ]] || usage
CMD=$1
DIR=$2
MODE=${3:-fast}
[[ -n $DIR ]] || usage
[[ $# -eq 2 || $CMD == restart ]] || usage
[[ $MODE == fast || $MODE == immediate ]] || usage

# The PostgreSQL server programs: ALMA_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else PATH.
find_bindir() {
    local d
    if [[ -n ${ALMA_PG_BINDIR:-} ]]; then
        echo "$ALMA_PG_BINDIR"
        return
    fi
    while read -r d; do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            echo "$d"
            return
        fi
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
    d=$(command -v initdb 2>/dev/null) || return 1
    dirname "$d"
}
BINDIR=$(find_bindir) || die "PostgreSQL server programs (initdb, pg_ctl) not found: apt-get install postgresql"
for p in initdb pg_ctl pg_isready; do
    [[ -x $BINDIR/$p ]] || die "$BINDIR/$p not found (set ALMA_PG_BINDIR to the PostgreSQL bin directory)"
done

mkdir -p "$DIR" || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd)
# The server's own files (data, log, socket) live where the server user can reach them: DIR itself, or,
# when a parent of DIR is private (a clone under a mode-700 temporary directory, say), a directory of
# their own under /tmp named after DIR. DIR keeps the lock, the URI and the port.
SRV=$DIR
SRVFILE=$DIR/pg.srvdir
URIFILE=$DIR/pg.uri
PORTFILE=$DIR/pg.port
SOCKFILE=$DIR/pg.sockdir # where the unix socket directory is, when it is not DIR/pg-sock

# Run a server program as the user that owns the cluster. The server must not inherit the lock on fd 9
# (flock below), or it would hold it for its whole life.
if [[ $(id -u) -eq 0 ]]; then
    PGOS_USER=postgres
    id "$PGOS_USER" >/dev/null 2>&1 || die "running as root but there is no '$PGOS_USER' system user to run the server as"
    if command -v runuser >/dev/null 2>&1; then
        as_pg() { (cd / && runuser -u "$PGOS_USER" -- "$@" 9>&-); }
    elif command -v setpriv >/dev/null 2>&1; then
        as_pg() { (cd / && setpriv --reuid="$PGOS_USER" --regid="$PGOS_USER" --init-groups -- "$@" 9>&-); }
    else
        die "running as root and neither runuser nor setpriv is available to drop to '$PGOS_USER'"
    fi
    give_to_pg() { chown "$PGOS_USER:" "$@"; }
else
    PGOS_USER=$(id -un)
    as_pg() { "$@" 9>&-; }
    give_to_pg() { :; }
fi

# One caller at a time per DIR (ctest may start the fixture while a developer runs the script by hand).
exec 9>"$DIR/pg.lock"
flock -w 120 9 || die "timed out waiting for the lock on $DIR/pg.lock"

if [[ -s $SRVFILE ]]; then
    SRV=$(cat "$SRVFILE")
elif [[ $(id -u) -eq 0 ]]; then
    chmod a+x "$DIR" 2>/dev/null || true
    if ! as_pg test -x "$DIR"; then
        SRV=/tmp/alma-pgsrv.$(printf '%s' "$DIR" | sha256sum | cut -c1-16)
        mkdir -p -m 755 "$SRV"
        echo "$SRV" >"$SRVFILE"
    fi
fi
DATA=$SRV/pg
LOG=$SRV/pg.log

port_in_use() { # PORT -> 0 when something listens on it or accepts connections
    if command -v ss >/dev/null 2>&1 && [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; then
        return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

random_port() {
    local r
    r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    echo $((PORT_MIN + r % PORT_SPAN))
}

sockdir() {
    if [[ -s $SOCKFILE ]]; then
        cat "$SOCKFILE"
    else
        echo "$SRV/pg-sock"
    fi
}

ready() { # PORT -> 0 when the server accepts connections
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

wait_ready() { # PORT
    local i
    for ((i = 0; i < START_TIMEOUT_S * 5; i++)); do
        ready "$1" && return 0
        sleep 0.2
    done
    return 1
}

running() { # -> 0 when a postmaster runs on DATA
    [[ -f $DATA/PG_VERSION ]] || return 1
    as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

conf_quote() { # a value for a single-quoted postgresql.conf string
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}

write_files() { # PORT
    echo "$1" >"$PORTFILE.tmp"
    mv "$PORTFILE.tmp" "$PORTFILE"
    echo "postgresql://postgres@127.0.0.1:$1/postgres" >"$URIFILE.tmp"
    mv "$URIFILE.tmp" "$URIFILE"
}

do_stop() {
    local pid
    if running; then
        if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t "$STOP_TIMEOUT_S" stop >/dev/null 2>&1; then
            echo "$PROG: fast shutdown failed; trying immediate" >&2
            if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w -t 10 stop >/dev/null 2>&1; then
                pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
                if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres* ]]; then
                    echo "$PROG: postmaster (pid $pid) ignored shutdown; sending SIGKILL" >&2
                    kill -KILL "$pid" 2>/dev/null || true
                    sleep 0.5
                fi
            fi
        fi
    fi
}

remove_files() {
    local sd
    sd=$(sockdir)
    rm -rf "$DATA" "$URIFILE" "$URIFILE.tmp" "$PORTFILE" "$PORTFILE.tmp" "$SRV/pg-sock" "$SRV/pg.initdb.log"
    # A socket directory outside DIR is ours only when we made it (mktemp below).
    if [[ $sd == /tmp/alma-pg.* ]]; then
        rm -rf "$sd"
    fi
    rm -f "$SOCKFILE"
}

init_cluster() {
    local sd
    # The server user must be able to reach SRV: it owns SRV/pg, the log and the socket directory only.
    as_pg test -x "$SRV" || die "user '$PGOS_USER' cannot reach $SRV (a parent directory is not searchable)"
    remove_files
    mkdir -m 700 "$DATA"
    give_to_pg "$DATA"
    : >"$LOG"
    give_to_pg "$LOG"
    sd=$SRV/pg-sock
    if ((${#sd} > MAX_SOCKDIR_LEN)); then
        sd=$(mktemp -d /tmp/alma-pg.XXXXXX)
        echo "$sd" >"$SOCKFILE"
    else
        mkdir -m 700 "$sd"
    fi
    give_to_pg "$sd"
    # -N: do not fsync initdb's own files (seconds per run); the server itself runs with fsync=on.
    if ! as_pg "$BINDIR/initdb" -D "$DATA" -U postgres --auth=trust --locale=C --encoding=UTF8 -N \
        >"$SRV/pg.initdb.log" 2>&1; then
        cat "$SRV/pg.initdb.log" >&2
        die "initdb failed for $DATA"
    fi
    # Loopback only: trust for the test superuser, passwords for every other role.
    as_pg tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by tests/harness/pg.sh
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 trust
local   all       all                      scram-sha-256
host    all       postgres  127.0.0.1/32   trust
host    all       all       127.0.0.1/32   scram-sha-256
EOF
    echo "include 'alma.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
}

write_conf() { # PORT
    as_pg tee "$DATA/alma.conf" >/dev/null <<EOF
# Written by tests/harness/pg.sh
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = $(conf_quote "$(sockdir)")
password_encryption = 'scram-sha-256'
# Durability is part of what the tests measure: never trade it for speed here.
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
shared_buffers = 32MB
log_line_prefix = '%m [%p] '
log_connections = off
EOF
}

# Try to start on PORT. 0: up and accepting; 1: the port was taken (try another); 2: failed otherwise.
try_start() {
    local port=$1 off
    write_conf "$port"
    off=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
    if as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$START_TIMEOUT_S" -s start >/dev/null 2>&1 &&
        wait_ready "$port"; then
        return 0
    fi
    if tail -c +"$((off + 1))" "$LOG" | grep -Eq 'could not bind|Address already in use|could not create any TCP/IP sockets'; then
        do_stop
        return 1
    fi
    echo "$PROG: the server did not start on 127.0.0.1:$port within ${START_TIMEOUT_S}s" >&2
    return 2
}

do_start() {
    local port attempt rc
    if running; then
        port=$(cat "$PORTFILE" 2>/dev/null || true)
        if [[ $port =~ ^[0-9]+$ ]] && wait_ready "$port"; then
            write_files "$port"
            echo "$PROG: reusing PostgreSQL on 127.0.0.1:$port ($DIR)"
            return 0
        fi
        echo "$PROG: a server runs for $DIR but does not accept connections; replacing it" >&2
        do_stop
    fi
    # Left over from a run that was not stopped: the cluster is throw-away, start from a clean one.
    init_cluster
    for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
        port=$(random_port)
        port_in_use "$port" && continue
        rc=0
        try_start "$port" || rc=$?
        case $rc in
        0)
            write_files "$port"
            echo "$PROG: PostgreSQL on 127.0.0.1:$port ($DIR, fsync=on)"
            return 0
            ;;
        1) ;;
        *)
            do_stop
            die "could not start PostgreSQL (see the server log below)"
            ;;
        esac
    done
    do_stop
    die "no free port found for PostgreSQL after $PORT_ATTEMPTS attempts"
}

do_restart() {
    local port
    port=$(cat "$PORTFILE" 2>/dev/null || true)
    [[ $port =~ ^[0-9]+$ && -f $DATA/PG_VERSION ]] || die "no PostgreSQL set up in $DIR: run '$PROG start $DIR' first"
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -m "$MODE" -w -t "$START_TIMEOUT_S" -s restart \
        >/dev/null 2>&1; then
        die "restart ($MODE) of PostgreSQL on 127.0.0.1:$port failed"
    fi
    wait_ready "$port" || die "PostgreSQL on 127.0.0.1:$port does not accept connections after the restart"
    write_files "$port"
    echo "$PROG: PostgreSQL restarted ($MODE) on 127.0.0.1:$port ($DIR)"
}

case $CMD in
start)
    do_start
    ;;
stop)
    do_stop
    remove_files
    if [[ $SRV != "$DIR" ]]; then
        rm -rf "$SRV" "$SRVFILE"
    fi
    echo "$PROG: stopped ($DIR)"
    ;;
restart)
    do_restart
    ;;
status)
    port=$(cat "$PORTFILE" 2>/dev/null || true)
    if [[ $port =~ ^[0-9]+$ ]] && running && ready "$port"; then
        echo "$PROG: running on 127.0.0.1:$port ($DIR)"
    else
        LOG= die "not running ($DIR)"
    fi
    ;;
*)
    usage
    ;;
esac
