# bench/suite.sh: the suite inside a service benchmark, for bench/vault.sh, bench/guideline.sh and
# bench/identity.sh (sourced after lib.sh): waiting for a started server, alma-cli against identity, the
# bootstrapped administrator, users with a role and a token, load runs as "bench" and their records, and the
# report's arithmetic.
# They read the caller's globals: tmp, pki, tenant, pg_uri, idn_schema, cli_bin, admin_bin, loadgen,
# identity_port, warmup, duration, deadline_ms, concurrency, runs, started_pids, and the qps/p50/p99
# associative arrays; await_server sets server_pid and server_port.
# shellcheck shell=bash disable=SC2154,SC2004  # (globals and associative arrays are the caller's)

# await_server KIND LOGFILE READYFILE: after `"$bin" ... &`, record the child and wait for its ready-file's
# API port and for it to listen; on failure show its log, stop it and return 1.
await_server() {
    local kind="$1" logf="$2" ready="$3"
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

# cli ARGS...: alma-cli against identity as the alma-cli identity, bounded.
cli() {
    timeout -k 5 60 "$cli_bin" --addr "127.0.0.1:$identity_port" --cert "$pki/alma-cli.pem" \
        --key "$pki/alma-cli-key.pem" --ca "$pki/ca.pem" --server-name localhost "$@"
}

# bootstrap_admin: alma-admin bootstrap of $tenant with platform administrator bench-admin, logged in with a
# recovery code; its session in $tmp/admin.session, a token in $tmp/admin.token.
bootstrap_admin() {
    log "alma-admin bootstrap: tenant $tenant, platform administrator bench-admin"
    openssl rand -base64 24 >"$tmp/admin.pw"
    ALMA_PG_URI="$pg_uri" ALMA_MASTER_KEY_FILE="$tmp/identity-master.key" timeout -k 5 120 "$admin_bin" bootstrap \
        --pg-schema="$idn_schema" --tenant="$tenant" --display-name="Bench Clinic" --username=bench-admin \
        --password-file="$tmp/admin.pw" >"$tmp/bootstrap.txt" 2>"$tmp/bootstrap.err" ||
        die "alma-admin bootstrap failed: $(tail -c 400 "$tmp/bootstrap.err")"
    # The administrator needs MFA: the first of its recovery codes stands in for an authenticator.
    local recovery
    recovery=$(sed -n '/^recovery codes/,$ s/^  \([A-Za-z0-9-][A-Za-z0-9-]*\)$/\1/p' "$tmp/bootstrap.txt" | head -n 1)
    [ -n "$recovery" ] || die "alma-admin bootstrap printed no recovery code"
    cli identity-login --tenant "$tenant" --username bench-admin --password-file "$tmp/admin.pw" \
        --recovery-code "$recovery" --session-out "$tmp/admin.session" >"$tmp/admin.token" 2>"$tmp/admin.err" ||
        die "the administrator's login failed: $(tail -c 400 "$tmp/admin.err")"
}

# admin_token: a fresh administrator token (its session outlives the 5-minute tokens).
admin_token() {
    cli identity-refresh --session-file "$tmp/admin.session" >"$tmp/admin.token.new" 2>"$tmp/admin.err" &&
        mv -f "$tmp/admin.token.new" "$tmp/admin.token"
}

# make_user USERNAME ROLE: a user with ROLE and a random password in $tmp/USERNAME.pw; its principal id in
# $tmp/USERNAME.principal. Logged in, with its session in $tmp/USERNAME.session and a token in
# $tmp/USERNAME.token.
make_user() {
    local user="$1" role="$2" out="$tmp/$1.user" principal
    openssl rand -base64 24 >"$tmp/$user.pw"
    admin_token || die "refreshing the administrator's token failed: $(tail -c 400 "$tmp/admin.err")"
    if ! cli --token-file "$tmp/admin.token" identity-create-user --username "$user" \
        --display-name "Bench $user" --password-file "$tmp/$user.pw" --role "$role" >"$out" 2>"$tmp/create.err"; then
        # The service grants a role only to a caller that holds every permission of it (no escalation by
        # grant), and no built-in administrator role holds the clinical PHI permissions: nobody can hand out
        # pcp_clinician or care_coordinator through the API. Until that is settled, the user is created
        # without the role through the API and the grant is written as the schema owner (as identity.sh does).
        log "identity-create-user --role $role refused ($(tr '\n' ' ' <"$tmp/create.err"))"
        log "creating $user without the role and granting $role in the database"
        cli --token-file "$tmp/admin.token" identity-create-user --username "$user" --display-name "Bench $user" \
            --password-file "$tmp/$user.pw" >"$out" 2>"$tmp/create.err" ||
            die "identity-create-user failed: $(tail -c 400 "$tmp/create.err")"
        principal=$(sed -n 's/^principal_id: \(usr_[0-9a-f]*\)$/\1/p' "$out")
        [ -n "$principal" ] || die "identity-create-user printed no principal id"
        psql_q "INSERT INTO $idn_schema.grants (tenant_id, principal_id, role_tenant_id, role_id, granted_by)
                VALUES ('$tenant', '$principal', '', '$role', 'system:bench')" >/dev/null ||
            die "granting $role in the database failed"
    fi
    principal=$(sed -n 's/^principal_id: \(usr_[0-9a-f]*\)$/\1/p' "$out")
    [ -n "$principal" ] || die "identity-create-user printed no principal id"
    echo "$principal" >"$tmp/$user.principal"
    cli identity-login --tenant "$tenant" --username "$user" --password-file "$tmp/$user.pw" \
        --session-out "$tmp/$user.session" >"$tmp/$user.token" 2>"$tmp/$user.err" ||
        die "$user's login failed: $(tail -c 400 "$tmp/$user.err")"
    grep -q 'MFA is required' "$tmp/$user.err" && die "$user needs MFA: it cannot call the service without a second factor"
    return 0
}

# refresh USER: a fresh token for USER in $tmp/USER.token (tokens live 5 minutes).
refresh() {
    cli identity-refresh --session-file "$tmp/$1.session" >"$tmp/$1.token.new" 2>"$tmp/$1.err" &&
        mv -f "$tmp/$1.token.new" "$tmp/$1.token"
}

# ---- runs' plumbing ----------------------------------------------------------------------------------------
# load TARGET_PORT METHOD CONCURRENCY OUT [alma-loadgen args...]: one closed-loop mTLS run as "bench".
load() {
    local port="$1" method="$2" conc="$3" out="$4" rc=0 limit=$((warmup + duration + 2 * deadline_ms / 1000 + 30))
    shift 4
    timeout -k 5 "$limit" "$loadgen" --target "127.0.0.1:$port" --method "$method" --concurrency "$conc" \
        --duration "$duration" --warmup "$warmup" --deadline-ms "$deadline_ms" --tls --cert "$pki/bench.pem" \
        --key "$pki/bench-key.pem" --ca "$pki/ca.pem" --server-name localhost "$@" --json >"$out" \
        2>"$out.err" || rc=$?
    return "$rc"
}

# record KIND RUN OUT RC [UNIT]: the run's numbers from alma-loadgen's JSON, or a logged failure; UNIT
# (default calls/s) names the rate in the log line.
record() {
    local kind="$1" run="$2" out="$3" rc="$4" unit="${5:-calls/s}" q
    q=$(json_num calls_per_s "$out")
    if [ "$rc" -ne 0 ] || [ -z "$q" ]; then
        log "$kind run $run FAILED (alma-loadgen exit $rc): $(tail -c 600 "$out" "$out.err" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    qps[$kind,$run]=$q
    p50[$kind,$run]=$(json_num p50_us "$out")
    p99[$kind,$run]=$(json_num p99_us "$out")
    log "$kind run $run: $q $unit, p50 ${p50[$kind,$run]} us, p99 ${p99[$kind,$run]} us"
}

one_echo() { # RUN: echo at $concurrency in flight, counted in okruns_echo
    local run="$1" out="$tmp/echo-$1.json" rc=0
    start_server echo "$tmp/echo-$run.log" || return 0
    load "$server_port" /alma.echo.v1.Echo/Echo "$concurrency" "$out" || rc=$?
    stop_server "$server_pid"
    record echo "$run" "$out" "$rc" && okruns_echo=$((okruns_echo + 1))
    return 0
}

# ---- report ------------------------------------------------------------------------------------------------
ratio() { # A B [DECIMALS]: A/B, DECIMALS (default 3) decimals; "-" when either is missing
    if [ -n "$1" ] && [ -n "$2" ] && [ "$1" != "-" ] && [ "$2" != "-" ]; then
        awk -v a="$1" -v b="$2" -v f="%.${3:-3}f" 'BEGIN {if (b > 0) printf f, a / b; else print "-"}'
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

verdict() { # RATIO AIM
    if [ "$1" = "-" ]; then echo "not measured"; else
        awk -v r="$1" -v a="$2" 'BEGIN {print (r >= a ? "**met**" : "**not met**")}'
    fi
}
