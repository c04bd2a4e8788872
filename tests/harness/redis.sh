#!/usr/bin/env bash
# Test harness: a throw-away redis-server on a free loopback port, for the ctest fixture "redis".
#
#   redis.sh start   DIR   start one (or reuse the one already running for DIR); writes DIR/redis.port
#   redis.sh stop    DIR   shut it down and remove its files (no-op when none runs)
#   redis.sh restart DIR   stop and start again on the same port (reconnect tests)
#   redis.sh status  DIR   exit 0 when the instance for DIR answers PING
#
# Everything lives in DIR/redis (pidfile, log, working dir); nothing is persisted. The server binds 127.0.0.1
# only. Two build trees may run their tests at the same time: each DIR gets its own port, picked at random
# among free ones and retried when another process wins the race for it. Calls for the same DIR are
# serialised with flock(1).
set -euo pipefail

PROG=redis.sh
START_TIMEOUT_S=10
STOP_TIMEOUT_S=10
PORT_ATTEMPTS=25
PORT_MIN=20000
PORT_SPAN=30000

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $PROG start|stop|restart|status DIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
CMD=$1
DIR=$2
[[ -n $DIR ]] || usage

command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"

mkdir -p "$DIR" || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd)
RDIR=$DIR/redis
PORTFILE=$DIR/redis.port
PIDFILE=$RDIR/redis.pid
LOGFILE=$RDIR/redis.log

# One caller at a time per DIR (ctest may start the fixture while a developer runs the script by hand).
# The daemon must not inherit fd 9, or it would hold the lock for its whole life.
exec 9>"$DIR/redis.lock"
flock -w 60 9 || die "timed out waiting for the lock on $DIR/redis.lock"

log_tail() {
    if [[ -s $LOGFILE ]]; then
        echo "--- last lines of $LOGFILE ---" >&2
        tail -n 20 "$LOGFILE" >&2
    fi
}

ping_port() { # PORT -> 0 when a server answers PONG
    local out
    out=$(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) || return 1
    [[ $out == PONG ]]
}

port_in_use() { # PORT -> 0 when something accepts connections on it
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A zombie (exited, not yet reaped by whoever adopted the daemon) counts as gone.
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [[ $state != Z ]]
}

# The pid of our server when it is alive and really a redis-server (a stale pidfile may name a reused pid).
live_pid() {
    local pid comm
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == redis-server* ]] || return 1
    echo "$pid"
}

random_port() {
    local r
    r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    echo $((PORT_MIN + r % PORT_SPAN))
}

# Try to start on PORT. 0: up and answering; 1: the port was taken (try another); 2: failed for another reason.
try_start() {
    local port=$1 i
    mkdir -p "$RDIR"
    rm -f "$PIDFILE"
    : >"$LOGFILE"
    local extra=()
    # DEBUG SLEEP and friends help tests of timeouts; Redis 7 disables the command unless asked to.
    if redis-server --version | grep -Eq 'v=([7-9]|[1-9][0-9])\.'; then
        extra+=(--enable-debug-command local)
    fi
    if ! redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
        --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$RDIR" \
        --save "" --appendonly no --protected-mode yes --unixsocket "" \
        "${extra[@]}" >"$RDIR/start.out" 2>&1 9>&-; then
        echo "$PROG: redis-server refused to start:" >&2
        cat "$RDIR/start.out" >&2
        return 2
    fi
    for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
        # The pidfile is written after the listening socket is bound, so pidfile + PONG means it is ours.
        if [[ -s $PIDFILE ]] && ping_port "$port"; then
            return 0
        fi
        if grep -q 'Address already in use' "$LOGFILE" 2>/dev/null; then
            return 1
        fi
        if grep -Eqi 'fatal|aborting|bad directive' "$LOGFILE" 2>/dev/null; then
            return 2
        fi
        sleep 0.1
    done
    echo "$PROG: redis-server on port $port did not answer PING within ${START_TIMEOUT_S}s" >&2
    return 2
}

do_stop() {
    local pid port i
    pid=$(live_pid) || pid=
    if [[ -n $pid ]]; then
        port=$(cat "$PORTFILE" 2>/dev/null || true)
        if [[ $port =~ ^[0-9]+$ ]]; then
            timeout 5 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
        fi
        for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "$PROG: redis-server (pid $pid) ignored SHUTDOWN; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
}

do_start() { # [PORT]: a fixed port (restart) or empty for a random free one
    local fixed=${1:-} port attempt rc
    if [[ -z $fixed ]] && live_pid >/dev/null; then
        port=$(cat "$PORTFILE" 2>/dev/null || true)
        if [[ $port =~ ^[0-9]+$ ]] && ping_port "$port"; then
            echo "$PROG: reusing redis-server on 127.0.0.1:$port ($DIR)"
            return 0
        fi
        echo "$PROG: a redis-server runs for $DIR but does not answer; replacing it" >&2
        do_stop
    fi
    rm -f "$PORTFILE"
    for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
        if [[ -n $fixed ]]; then
            port=$fixed
        else
            port=$(random_port)
            port_in_use "$port" && continue
        fi
        rc=0
        try_start "$port" || rc=$?
        case $rc in
        0)
            echo "$port" >"$PORTFILE.tmp"
            mv "$PORTFILE.tmp" "$PORTFILE"
            echo "$PROG: redis-server on 127.0.0.1:$port ($DIR)"
            return 0
            ;;
        1)
            # Lost the race for this port; a restart waits for the old socket instead of moving.
            [[ -n $fixed ]] && sleep 0.2
            ;;
        *)
            log_tail
            do_stop
            die "could not start redis-server (see above)"
            ;;
        esac
    done
    log_tail
    do_stop
    if [[ -n $fixed ]]; then
        die "port $fixed stayed in use; cannot restart redis-server on it"
    fi
    die "no free port found for redis-server after $PORT_ATTEMPTS attempts"
}

case $CMD in
start)
    do_start
    ;;
stop)
    do_stop
    rm -rf "$RDIR" "$PORTFILE" "$PORTFILE.tmp"
    echo "$PROG: stopped ($DIR)"
    ;;
restart)
    port=$(cat "$PORTFILE" 2>/dev/null || true)
    [[ $port =~ ^[0-9]+$ ]] || die "no redis.port in $DIR: start it first"
    do_stop
    do_start "$port"
    ;;
status)
    port=$(cat "$PORTFILE" 2>/dev/null || true)
    if ! { [[ $port =~ ^[0-9]+$ ]] && live_pid >/dev/null && ping_port "$port"; }; then
        die "not running ($DIR)"
    fi
    echo "$PROG: running on 127.0.0.1:$port ($DIR)"
    ;;
*)
    usage
    ;;
esac
