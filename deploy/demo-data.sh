#!/usr/bin/env bash
# Demo data for `make run` (called by deploy/stack.sh with .stack/stack.env exported). It must be safe to
# run again on every start. Only synthetic records, never real patient data:
#   echo   holds no data: one real mTLS call through alma-cli shows the stack answers.
#   audit  a handful of events of tenant demo-clinic with made-up pseudonymous patients, appended through
#          alma-cli audit-append with the test-client certificate (the audit service takes appends only
#          from the suite's services and the test-client and bench identities). The log is append-only, so
#          they are appended once: only when the tenant has no event of the demo clinician yet. The check
#          is a ListEvents call, which the audit log itself records (one query event per start).
#   vault  two synthetic patients of tenant demo-clinic with a few clinical items each, readable by a demo
#          clinician `dr.demo` (pcp_clinician) through care relationships made by a demo care coordinator
#          `coord.demo` (care_coordinator). The two users are made once by the demo admin (login with the TOTP
#          code oathtool computes from .stack/secrets/demo-admin.txt; only when a user is still missing), with
#          random passwords in .stack/secrets/demo-clinician.txt and demo-coordinator.txt (mode 600, one line:
#          usable as --password-file). dr.demo logs in on every start: its access token goes to
#          .stack/secrets/demo-clinician.token, its session (refresh secret) to demo-clinician.session. The
#          patients are registered once: only when FindPatients by their MRN finds nothing. Passwords and
#          tokens only ever go to those files, never to the terminal. Anything missing (the vault not built or
#          not running, oathtool, the admin's secrets): a message, and `make run` goes on.
#   guideline  after the vault part, as dr.demo: one Referral Review from the vault for each demo patient
#          (referral demo-ckd-a: diabetic CKD with an eGFR of 27 -> refer to nephrology; demo-ckd-b:
#          hypertensive CKD G3a A2 -> manage in primary care), and an accept decision of the first. The first
#          demo items did not fit a pathway of the first bundle, so the CKD problem, an eGFR and a urine ACR
#          are added to each patient first (only when the patient has no eGFR yet). Once only: a referral
#          whose history already holds a review is not reviewed again (its outcome is shown), and the decision
#          is recorded only when the history has none. One line per review with its outcome. Anything missing
#          (the guideline service, the vault part, dr.demo's token): a message, and `make run` goes on.
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

# ------------------------------------------------------------------------------------------------ vault

secrets="${ALMA_STACK_DIR:-$root/.stack}/secrets"
rel() { echo "${1#"$root"/}"; }
clin_pw="$secrets/demo-clinician.txt"
coord_pw="$secrets/demo-coordinator.txt"
clin_token="$secrets/demo-clinician.token"
clin_session="$secrets/demo-clinician.session"
admin_token="$secrets/.demo-admin.token"
coord_token="$secrets/.demo-coordinator.token"
VAULT_MRN_A=DEMO-0001
VAULT_MRN_B=DEMO-0002

skip_vault() {
    echo "demo-data: vault: $* - no vault demo data"
}

# alma-cli over mTLS as alma-cli to identity or the vault, with a token file or none.
idn_cli() { "$cli" --addr "$ALMA_STACK_IDENTITY_API" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" --ca "$pki/ca.pem" "$@"; }
vlt_cli() { "$cli" --addr "$ALMA_STACK_VAULT_API" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" --ca "$pki/ca.pem" "$@"; }

# login USER PASSWORD_FILE TOKEN_FILE [identity-login options...]: the token into TOKEN_FILE (mode 600), never
# on the terminal; stderr (session and expiry, or the error) shown only on failure.
login() {
    local user=$1 pwfile=$2 tok=$3 err
    shift 3
    err=$(
        umask 077
        idn_cli identity-login --tenant "$DEMO_TENANT" --username "$user" --password-file "$pwfile" "$@" \
            2>&1 >"$tok.tmp"
    ) && [ -s "$tok.tmp" ] && mv -f "$tok.tmp" "$tok" && return 0
    rm -f "$tok.tmp"
    if [ -n "$err" ]; then printf '%s\n' "$err" | sed 's/^/demo-data: vault: /' >&2; fi
    return 1
}

# The demo admin's token (platform_admin, security_admin: MFA), from the password and the otpauth secret
# that deploy/stack.sh's bootstrap wrote to demo-admin.txt. A TOTP code works once: when this step's code was
# used already (a restart within 30 s), wait for the next step and try once more.
admin_login() {
    local file="$secrets/demo-admin.txt" pw secret code try err=""
    [ -s "$file" ] || {
        skip_vault "$(rel "$file") is missing (made by the identity bootstrap of deploy/stack.sh)"
        return 1
    }
    command -v oathtool >/dev/null 2>&1 || {
        skip_vault "oathtool is not installed (deploy/deps.sh installs it): cannot compute the demo admin's TOTP code"
        return 1
    }
    pw=$(sed -n 's/^tenant [^,]*, username admin, password //p' "$file" | head -n 1)
    secret=$(grep -o 'otpauth://[^[:space:]]*' "$file" | head -n 1 | sed -n 's/.*[?&]secret=\([A-Z2-7=]*\).*/\1/p')
    if [ -z "$pw" ] || [ -z "$secret" ]; then
        skip_vault "$(rel "$file") holds no password or TOTP secret"
        return 1
    fi
    for try in 1 2; do
        code=$(printf '%s\n' "$secret" | oathtool --totp -b -) || break
        if err=$(login admin <(printf '%s\n' "$pw") "$admin_token" --totp "$code" 2>&1); then
            return 0
        fi
        if [ "$try" = 1 ]; then
            echo "demo-data: vault: the demo admin's login failed; trying the next TOTP code in $((31 - $(date +%s) % 30)) s"
            sleep $((31 - $(date +%s) % 30))
        fi
    done
    [ -n "$err" ] && echo "$err" >&2
    skip_vault "the demo admin could not log in"
    return 1
}

logout() { # logout TOKEN_FILE: end that session (best effort) and remove the file
    if [ -s "$1" ]; then
        idn_cli --token-file "$1" identity-logout >/dev/null 2>&1 || true
    fi
    rm -f "$1"
}

# make_user USER ROLE DISPLAY PASSWORD_FILE: once, as the admin; the random password kept in PASSWORD_FILE.
make_user() {
    local user=$1 role=$2 display=$3 pwfile=$4 err
    [ -s "$pwfile" ] && return 0
    [ -s "$admin_token" ] || admin_login || return 1
    (
        umask 077
        openssl rand -base64 24 >"$pwfile.tmp"
    ) || return 1
    if err=$(idn_cli --token-file "$admin_token" identity-create-user --username "$user" --display-name "$display" \
        --role "$role" --password-file "$pwfile.tmp" 2>&1 >/dev/null); then
        mv -f "$pwfile.tmp" "$pwfile"
        echo "demo-data: vault: made the demo user $user ($role); password in $(rel "$pwfile")"
        return 0
    fi
    rm -f "$pwfile.tmp"
    echo "$err" | sed 's/^/demo-data: vault: /' >&2
    case "$err" in
    *ALREADY_EXISTS*) skip_vault "the user $user exists but $(rel "$pwfile") is gone: its password is unknown" ;;
    *) skip_vault "cannot make the demo user $user" ;;
    esac
    return 1
}

# put REF ARGS...: one item as dr.demo. The care relationship reaches the vault within a second (Redis
# mirror): a first PERMISSION_DENIED is retried for a few seconds.
put() {
    local ref=$1 try err
    shift
    for try in 1 2 3 4 5 6 7 8 9 10; do
        if err=$(vlt_cli --token-file "$clin_token" vault-put-item --tenant "$DEMO_TENANT" --patient "$ref" "$@" 2>&1 >/dev/null); then
            return 0
        fi
        case "$err" in *PERMISSION_DENIED*) [ "$try" -lt 10 ] && sleep 0.5 ;; *) break ;; esac
    done
    echo "$err" | sed 's/^/demo-data: vault: /' >&2
    return 1
}

# find_patient MRN: the first ref FindPatients finds (none: empty output); fails when the call fails, so a
# broken vault never looks like "not registered yet".
find_patient() {
    local out
    out=$(vlt_cli --token-file "$clin_token" vault-find-patients --tenant "$DEMO_TENANT" --mrn "$1" 2>/dev/null) ||
        return 1
    head -n 1 <<<"$out"
}

create_patient() { # create_patient ARGS...: the new ref on stdout
    local out
    out=$(vlt_cli --token-file "$clin_token" vault-create-patient --tenant "$DEMO_TENANT" "$@") || return 1
    sed -n 's/^patient_ref: //p' <<<"$out"
}

relate() { # relate REF: a primary-care relationship of dr.demo with the patient, as coord.demo
    if [ ! -s "$coord_token" ]; then
        login coord.demo "$coord_pw" "$coord_token" || return 1
    fi
    idn_cli --token-file "$coord_token" identity-relationship-create --clinician "$clin_id" --patient "$1" \
        --kind primary-care >/dev/null
}

load_patient_a() {
    local ref note
    ref=$(create_patient --family Testperson --given Avery --given Lee --birth-date 1961-04-17 --sex female \
        --mrn "$VAULT_MRN_A" --phone +15555550101 --email avery.testperson@example.org \
        --address-line "100 Example Street" --city Springfield --state IL --postal-code 62701 \
        --payer-id demo-payer --plan-name "Demo Health Plan Gold" --member-id DEMOM0001 \
        --coverage-start 2024-01-01) && [ -n "$ref" ] || return 1
    relate "$ref" || return 1
    note=$(mktemp "$secrets/.demo-note.XXXXXX") || return 1
    printf '%s\n' "Synthetic demo note: follow-up for type 2 diabetes. Reports good adherence to metformin." \
        "Plan: repeat HbA1c in three months; diet and exercise counselling given." >"$note"
    put "$ref" --problem E11.9 --display "Type 2 diabetes mellitus without complications" --onset 2019-03-01 &&
        put "$ref" --observation 4548-4 --display "Hemoglobin A1c" --value 7.4 --unit % --date 2024-05-01 &&
        put "$ref" --medication "Metformin 500 mg oral tablet" --rxnorm 861007 --dose "500 mg twice daily" \
            --start 2019-03-02 &&
        put "$ref" --note-file "$note" --title "Diabetes follow-up" --date 2024-05-02
    local rc=$?
    rm -f "$note"
    [ "$rc" -eq 0 ] && echo "$ref"
    return "$rc"
}

load_patient_b() {
    local ref
    ref=$(create_patient --family Sampleton --given Jordan --birth-date 1975-11-02 --sex male \
        --mrn "$VAULT_MRN_B" --email jordan.sampleton@example.org) && [ -n "$ref" ] || return 1
    relate "$ref" || return 1
    put "$ref" --problem I10 --display "Essential (primary) hypertension" --onset 2016-07-12 &&
        put "$ref" --observation 8480-6 --display "Systolic blood pressure" --value 142 --unit "mm[Hg]" \
            --date 2024-04-18 &&
        put "$ref" --medication "Lisinopril 10 mg oral tablet" --rxnorm 314076 --dose "10 mg once daily" \
            --start 2016-07-15 || return 1
    echo "$ref"
}

load_vault() {
    if [ -z "${ALMA_STACK_VAULT_API:-}" ] || [ -z "${ALMA_STACK_IDENTITY_API:-}" ]; then
        skip_vault "no vault or identity endpoint in stack.env"
        return 0
    fi
    if ! "$cli" vault-get-patient --help >/dev/null 2>&1; then
        skip_vault "this alma-cli has no vault commands (rebuild)"
        return 0
    fi
    local svc
    for svc in identity vault; do
        local admin_var="ALMA_STACK_${svc^^}_ADMIN"
        if ! "$cli" --insecure --addr "${!admin_var:-}" --timeout-ms 3000 health >/dev/null 2>&1; then
            skip_vault "the $svc service is not running"
            return 0
        fi
    done
    mkdir -p "$secrets"
    rm -f "$admin_token" "$coord_token"
    local made=0
    make_user dr.demo pcp_clinician "Dr. Demo Rivera (synthetic)" "$clin_pw" &&
        make_user coord.demo care_coordinator "Demo Care Coordinator (synthetic)" "$coord_pw" || made=1
    logout "$admin_token"
    [ "$made" -eq 0 ] || return 0
    login dr.demo "$clin_pw" "$clin_token" --session-out "$clin_session" || {
        skip_vault "dr.demo could not log in"
        return 0
    }
    clin_id=$(idn_cli --token-file "$clin_token" identity-get-user 2>/dev/null | sed -n 's/^principal_id: //p') ||
        clin_id=""
    [ -n "$clin_id" ] || {
        skip_vault "cannot read dr.demo's principal id"
        return 0
    }
    local ref_a ref_b loaded=()
    if ! ref_a=$(find_patient "$VAULT_MRN_A") || ! ref_b=$(find_patient "$VAULT_MRN_B"); then
        skip_vault "FindPatients failed (log: $(rel "${ALMA_STACK_DIR:-$root/.stack}")/logs/vault.log)"
        return 0
    fi
    if [ -z "$ref_a" ]; then
        ref_a=$(load_patient_a) || ref_a=""
        if [ -n "$ref_a" ]; then loaded+=("$ref_a"); fi
    fi
    if [ -z "$ref_b" ]; then
        ref_b=$(load_patient_b) || ref_b=""
        if [ -n "$ref_b" ]; then loaded+=("$ref_b"); fi
    fi
    logout "$coord_token"
    if [ -z "$ref_a" ] || [ -z "$ref_b" ]; then
        skip_vault "registering the demo patients failed (see above)"
        return 0
    fi
    local what read
    read="$(rel "$build")/tools/alma-cli --addr $ALMA_STACK_VAULT_API --cert $(rel "$pki")/alma-cli.pem --key $(rel "$pki")/alma-cli-key.pem --ca $(rel "$pki")/ca.pem --token-file $(rel "$clin_token") vault-get-patient --tenant $DEMO_TENANT --patient $ref_a --purpose treatment"
    if [ "${#loaded[@]}" -gt 0 ]; then
        what="registered ${#loaded[@]} synthetic patient(s) with problems, observations, medications and a note, each in a care relationship with dr.demo"
    else
        what="the 2 synthetic demo patients are already registered: none added"
    fi
    echo "demo-data: vault: $what ($ref_a, $ref_b; dr.demo's token in $(rel "$clin_token"), renewed by identity-refresh --session-file $(rel "$clin_session")); read one: $read"
}

if ! load_vault; then
    skip_vault "an unexpected step failed (see above)"
fi

# ------------------------------------------------------------------------------------------------ guideline

GL_REFERRAL_A=demo-ckd-a
GL_REFERRAL_B=demo-ckd-b

skip_guideline() {
    echo "demo-data: guideline: $* - no demo reviews"
}

gl_cli() { "$cli" --addr "$ALMA_STACK_GUIDELINE_API" --cert "$pki/alma-cli.pem" --key "$pki/alma-cli-key.pem" --ca "$pki/ca.pem" --token-file "$clin_token" "$@"; }

# demo_ckd_items REF PROBLEM EGFR: the CKD problem, an eGFR (30 days ago, so inside every data window) and a
# urine ACR of 45 mg/g, as dr.demo; only when the patient has no eGFR (LOINC 33914-3) yet.
demo_ckd_items() {
    local ref=$1 problem=$2 egfr=$3 items day
    items=$(vlt_cli --token-file "$clin_token" vault-list-items --tenant "$DEMO_TENANT" --patient "$ref" \
        --purpose treatment --kind observation --all 2>/dev/null) || return 1
    if grep -q $'\t33914-3 ' <<<"$items"; then return 0; fi
    day=$(date -u -d '30 days ago' +%Y-%m-%d) || return 1
    put "$ref" --problem "$problem" --display "Chronic kidney disease (synthetic demo)" --onset 2023-01-10 &&
        put "$ref" --observation 33914-3 --display "eGFR (synthetic demo)" --value "$egfr" \
            --unit "mL/min/{1.73_m2}" --date "$day" &&
        put "$ref" --observation 9318-7 --display "Urine albumin/creatinine ratio (synthetic demo)" --value 45 \
            --unit mg/g --date "$day"
}

# demo_review REF REFERRAL REASON_CODE EGFR ACCEPT(yes|no) PROBLEM: one review from the vault, once; prints one
# line with its outcome.
demo_review() {
    local ref=$1 referral=$2 reason=$3 egfr=$4 accept=$5 problem=$6 history out err outcome review what
    if ! history=$(gl_cli guideline-history --tenant "$DEMO_TENANT" --referral "$referral" 2>/dev/null); then
        echo "demo-data: guideline: cannot read the history of $referral (log: $(rel "${ALMA_STACK_DIR:-$root/.stack}")/logs/guideline.log)" >&2
        return 1
    fi
    if grep -q '^review' <<<"$history"; then
        outcome=$(grep '^review' <<<"$history" | head -n 1 | cut -f 4)
        review=$(grep '^review' <<<"$history" | head -n 1 | cut -f 3)
        what="already reviewed"
    else
        demo_ckd_items "$ref" "$problem" "$egfr" || {
            echo "demo-data: guideline: cannot add the CKD items of $ref" >&2
            return 1
        }
        if ! out=$(gl_cli guideline-review --tenant "$DEMO_TENANT" --referral "$referral" --patient "$ref" \
            --from-vault --specialty nephrology --reason-code "$reason" 2>&1); then
            echo "$out" | sed 's/^/demo-data: guideline: /' >&2
            return 1
        fi
        outcome=$(sed -n 's/^outcome: //p' <<<"$out")
        review=$(sed -n 's/^review_id: //p' <<<"$out")
        what="reviewed"
    fi
    if [ "$accept" = yes ] && ! grep -q '^decision' <<<"$history"; then
        if ! err=$(gl_cli guideline-decide --tenant "$DEMO_TENANT" --review "$review" --accept 2>&1 >/dev/null); then
            echo "$err" | sed 's/^/demo-data: guideline: /' >&2
            return 1
        fi
        what="$what, accepted"
    elif [ "$accept" = yes ]; then
        what="$what, decided"
    fi
    echo "demo-data: guideline: $referral ($ref, nephrology, $reason): $outcome ($what; $review)"
}

load_guideline() {
    if [ -z "${ALMA_STACK_GUIDELINE_API:-}" ] || [ -z "${ALMA_STACK_GUIDELINE_ADMIN:-}" ]; then
        skip_guideline "no guideline endpoint in stack.env"
        return 0
    fi
    if ! "$cli" guideline-review --help >/dev/null 2>&1; then
        skip_guideline "this alma-cli has no guideline commands (rebuild)"
        return 0
    fi
    if ! "$cli" --insecure --addr "$ALMA_STACK_GUIDELINE_ADMIN" --timeout-ms 3000 health >/dev/null 2>&1; then
        skip_guideline "the guideline service is not running"
        return 0
    fi
    if [ -z "${ALMA_STACK_VAULT_API:-}" ] || [ ! -s "$clin_token" ]; then
        skip_guideline "the vault demo data is not there (no dr.demo token)"
        return 0
    fi
    local ref_a ref_b
    if ! ref_a=$(find_patient "$VAULT_MRN_A") || ! ref_b=$(find_patient "$VAULT_MRN_B") || [ -z "$ref_a" ] ||
        [ -z "$ref_b" ]; then
        skip_guideline "the demo patients are not in the vault"
        return 0
    fi
    demo_review "$ref_a" "$GL_REFERRAL_A" E11.22 27 yes E11.22 || true
    demo_review "$ref_b" "$GL_REFERRAL_B" I12.9 48 no I12.9 || true
    echo "demo-data: guideline: try: alma-cli --addr $ALMA_STACK_GUIDELINE_API ... --token-file $(rel "$clin_token") guideline-history --tenant $DEMO_TENANT --referral $GL_REFERRAL_A"
}

if ! load_guideline; then
    skip_guideline "an unexpected step failed (see above)"
fi
