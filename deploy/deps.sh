#!/usr/bin/env bash
# Installs the Debian packages that the build, the tests and the local stack need, and only those that are
# missing. Safe to run again and again: when everything is present it runs no apt-get at all.
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
                servers, promtool, valgrind, clang-format, node
  --check       install nothing; list what is missing and exit 1 if anything is
  --help        this text

Runs as root, or through sudo when it is available.
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

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps.sh: all ${#pkgs[@]} packages present"
    exit 0
fi

if [ "$check_only" -eq 1 ]; then
    echo "deps.sh: missing: ${missing[*]}"
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "deps.sh: installing: ${missing[*]}"

# Keep package maintainer scripts from starting system services (invoke-rc.d honours policy-rc.d; exit 101
# means "not allowed"). Only when no policy exists already, and removed again afterwards.
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
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, written by alma deploy/deps.sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    policy_added=1
fi

log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
run_quiet() {
    if ! "$@" >"$log" 2>&1; then
        echo "deps.sh: failed: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

echo "deps.sh: apt-get update"
run_quiet "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update
run_quiet "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "${missing[@]}"

still=()
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
echo "deps.sh: done"
