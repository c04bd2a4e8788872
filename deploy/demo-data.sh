#!/usr/bin/env bash
# Demo data for `make run` (called by deploy/stack.sh with .stack/stack.env exported). It must be safe to
# run again on every start. Only synthetic records, never real patient data:
#   echo   holds no data: one real mTLS call through alma-cli shows the stack answers.
#   audit  a handful of events of tenant demo-clinic with made-up pseudonymous patients, appended through
#          alma-cli audit-append with the test-client certificate (the audit service takes appends only
#          from the suite's services and the test-client and bench identities). The log is append-only, so
#          they are appended once: only when the tenant has no event of the demo clinician yet. The check
#          is a ListEvents call, which the audit log itself records (one query event per start).
set -euo pipefail
if [ "${1:-}" = "--help" ]; then
    echo "usage: deploy/demo-data.sh   (run by deploy/stack.sh; loads synthetic demo data, idempotent)"
    exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ALMA_BUILD_DIR:-$root/build}
cli="$build/tools/alma-cli"
pki="${ALMA_STACK_DIR:-$root/.stack}/pki"

if [ ! -x "$cli" ]; then
    echo "demo-data: $cli is not built: nothing to load"
    exit 0
fi

if [ -n "${ALMA_STACK_ECHO_API:-}" ]; then
    "$cli" --addr "$ALMA_STACK_ECHO_API" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" \
        --ca "$pki/ca.pem" echo "demo: the stack answers over mTLS" >/dev/null
    echo "demo-data: echo answered over mTLS"
fi

# ------------------------------------------------------------------------------------------------ audit

DEMO_TENANT=demo-clinic
DEMO_CLINICIAN=dr-demo-rivera # the marker: the demo events are loaded once this actor has an event
# Made-up pseudonymous references ("pt_" + 32 hex): they stand for no one.
DEMO_PATIENT_A=pt_0d3e5a7c1b9f4e2a8c6d0b3f5e7a9c1d
DEMO_PATIENT_B=pt_7f2b4d6e8a0c1e3f5a7b9d1c3e5f7a9b

audit_cli() { # audit_cli alma-cli|test-client ARGS... (mTLS to the audit service as that identity)
    local who=$1
    shift
    "$cli" --addr "$ALMA_STACK_AUDIT_API" --cert "$pki/$who.pem" --key "$pki/$who-key.pem" --ca "$pki/ca.pem" "$@"
}

appended=0
append() { # append ARGS... (audit-append of tenant demo-clinic as test-client)
    audit_cli test-client audit-append --tenant "$DEMO_TENANT" "$@" >/dev/null
    appended=$((appended + 1))
}

load_audit_events() {
    append --actor "$DEMO_CLINICIAN" --role clinician --action login --purpose treatment
    append --actor "$DEMO_CLINICIAN" --role clinician --action read --purpose treatment \
        --patient "$DEMO_PATIENT_A" --resource-type Patient --resource-id demo-patient-1001
    append --actor "$DEMO_CLINICIAN" --role clinician --action create --purpose treatment \
        --patient "$DEMO_PATIENT_A" --resource-type Referral --resource-id demo-referral-1 \
        --detail specialty=cardiology
    append --actor "$DEMO_CLINICIAN" --role clinician --action disclose --purpose public-health \
        --patient "$DEMO_PATIENT_A" --recipient "State Public Health Registry" --basis public-health \
        --phi-description "immunization history"
    append --actor "$DEMO_CLINICIAN" --role clinician --action disclose --purpose treatment \
        --patient "$DEMO_PATIENT_A" --recipient "Demo Cardiology Associates" \
        --basis treatment-payment-operations --phi-description "referral summary"
    append --actor nurse-demo-chen --role nurse --action read --purpose treatment --outcome denied \
        --severity high --patient "$DEMO_PATIENT_B" --resource-type Patient --resource-id demo-patient-1002
    append --actor svc.guideline --action recommend --purpose treatment --patient "$DEMO_PATIENT_B" \
        --resource-type Recommendation --resource-id demo-review-1 \
        --guideline-engine-version 0.1.0 --guideline-bundle-id demo-bundle --guideline-bundle-version 2026.1 \
        --guideline-bundle-hash sha256:5f1c0a9e3b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e \
        --guideline-source "Synthetic demo guideline 2026, section 1"
    append --actor "$DEMO_CLINICIAN" --role clinician --action decide --purpose treatment \
        --patient "$DEMO_PATIENT_B" --resource-type Recommendation --resource-id demo-review-1 \
        --detail decision=accept
}

audit_serving() {
    [ -n "${ALMA_STACK_AUDIT_API:-}" ] && [ -n "${ALMA_STACK_AUDIT_ADMIN:-}" ] &&
        "$cli" --insecure --addr "$ALMA_STACK_AUDIT_ADMIN" --timeout-ms 3000 health >/dev/null 2>&1
}

if ! audit_serving; then
    echo "demo-data: the audit service is not running: no audit events to load"
    exit 0
fi
# Output (an event line, and on stderr a next-page hint) only when the demo clinician has events.
if ! existing=$(audit_cli alma-cli audit-list --tenant "$DEMO_TENANT" --actor "$DEMO_CLINICIAN" --page-size 1 2>&1); then
    echo "$existing" >&2
    echo "demo-data: cannot query the audit log" >&2
    exit 1
fi
if [ -z "$existing" ]; then
    load_audit_events
    echo "demo-data: appended $appended synthetic audit events of tenant $DEMO_TENANT (patients $DEMO_PATIENT_A, $DEMO_PATIENT_B)"
else
    echo "demo-data: the audit demo events of tenant $DEMO_TENANT are already in the log: none appended"
fi
# The latest signed checkpoint (signed at most once a second after new events: wait for it to cover them).
sleep 1.2
audit_cli alma-cli audit-checkpoint | sed -n 's/^\(tree_size\|root\|vkey\|signature\)=/demo-data: audit checkpoint \1=/p'
echo "demo-data: try: alma-cli audit-list --tenant $DEMO_TENANT; alma-cli audit-accounting --tenant $DEMO_TENANT --patient $DEMO_PATIENT_A"
