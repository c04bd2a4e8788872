#!/usr/bin/env bash
# CI check: every tracked C source and header is formatted as .clang-format says.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/check-format.sh [--untracked] [--fix] [--help] [FILE...]

Runs `clang-format --dry-run --Werror` (style from the repository's .clang-format) on every *.c and *.h that
git tracks -- or on the FILEs given -- except generated code (build*/, gen/, *.pb-c.[ch]), lists the files
that differ and exits 1 if there is any.

  --untracked  also check new files that are not yet tracked (and not ignored)
  --fix        rewrite the offending files in place (clang-format -i) instead of failing
  --help       this text

The formatting depends on the clang-format version; CI uses Debian 12's (clang-format 14).
EOF
}

untracked=0
fix=0
files=()
for a in "$@"; do
    case "$a" in
    -h | --help)
        usage
        exit 0
        ;;
    --untracked) untracked=1 ;;
    --fix) fix=1 ;;
    -*)
        echo "check-format.sh: unknown option: $a (see --help)" >&2
        exit 2
        ;;
    *) files+=("$a") ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
command -v clang-format >/dev/null 2>&1 || {
    echo "check-format.sh: clang-format not found (run deploy/deps.sh)" >&2
    exit 2
}
[ -f .clang-format ] || {
    echo "check-format.sh: no .clang-format in $REPO" >&2
    exit 2
}

if [ "${#files[@]}" -eq 0 ]; then
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
        echo "check-format.sh: not a git work tree; give the files to check" >&2
        exit 2
    }
    if [ "$untracked" -eq 1 ]; then
        mapfile -t listed < <(git ls-files -co --exclude-standard -- '*.c' '*.h' | sort -u)
    else
        mapfile -t listed < <(git ls-files -- '*.c' '*.h' | sort -u)
    fi
    for f in "${listed[@]}"; do
        case "$f" in
        build/* | build-*/* | gen/* | */gen/* | *.pb-c.c | *.pb-c.h | node_modules/* | .stack/*) continue ;;
        *) ;;
        esac
        [ -f "$f" ] && files+=("$f")
    done
fi

if [ "${#files[@]}" -eq 0 ]; then
    echo "check-format.sh: no C files to check"
    exit 0
fi

bad=()
for f in "${files[@]}"; do
    if ! clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
        bad+=("$f")
    fi
done

if [ "${#bad[@]}" -eq 0 ]; then
    echo "check-format.sh: ${#files[@]} file(s) formatted ($(clang-format --version | head -n1))"
    exit 0
fi

if [ "$fix" -eq 1 ]; then
    for f in "${bad[@]}"; do
        clang-format --style=file -i "$f"
        echo "check-format.sh: reformatted $f"
    done
    exit 0
fi

echo "check-format.sh: ${#bad[@]} of ${#files[@]} file(s) not formatted per .clang-format:"
for f in "${bad[@]}"; do
    echo "  $f"
done
echo "See the differences with: clang-format --style=file FILE | diff FILE -   (or run deploy/check-format.sh --fix)"
exit 1
