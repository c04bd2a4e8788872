#!/usr/bin/env bash
# Demo data for `make run` (called by deploy/stack.sh with .stack/stack.env exported). It must be safe to
# run again on every start. Today the only service is echo, which holds no data: this makes one real mTLS
# call through alma-cli to show the stack answers. The domain services add their synthetic demo records
# here (never real patient data).
set -euo pipefail
if [ "${1:-}" = "--help" ]; then
    echo "usage: deploy/demo-data.sh   (run by deploy/stack.sh; loads synthetic demo data, idempotent)"
    exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ALMA_BUILD_DIR:-$root/build}
cli="$build/tools/alma-cli"
pki="$root/.stack/pki"
if [ -x "$cli" ] && [ -n "${ALMA_STACK_ECHO_API:-}" ]; then
    "$cli" --addr "$ALMA_STACK_ECHO_API" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" \
        --ca "$pki/ca.pem" echo "demo: the stack answers over mTLS" >/dev/null
    echo "demo-data: echo answered over mTLS; no domain services yet, so no records to load"
else
    echo "demo-data: nothing to load yet"
fi
