#!/usr/bin/env bash
# CI check: banned C functions and SQL built with printf-style formatting (shared/design/STYLE.md, rule 7).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/check-banned.sh [--help] [FILE...]

Scans the C sources (*.c, *.h) under common/ services/ tools/ bench/ tests/ -- tracked and untracked files
that git does not ignore, so build trees and generated protobuf-c code (build*/, gen/, *.pb-c.[ch]) are
skipped -- or only the FILEs given, and prints file:line for every hit. Exits 1 if there is any hit.

Banned everywhere:         sprintf vsprintf strcpy strcat strncpy strtok sscanf atoi atol atoll gets
Banned outside config:     getenv secure_getenv  (allowed in common/base/config.c and tests/support/)
Banned in common/crypto/:  memcmp bcmp           (use CRYPTO_memcmp for anything secret)
SQL heuristic:             a snprintf/vsnprintf/asprintf call whose format contains SELECT, INSERT,
                           UPDATE or DELETE (upper case, whole word) is reported as SQL built by string
                           formatting: use PQexecParams with $1.. parameters. Best effort only: it cannot see
                           SQL assembled in other ways (memcpy, loops, macros), so review still matters.

Matching is word-boundary aware (snprintf, strtok_r, fgets and my_atoi are not hits) and ignores comments
and the inside of string literals. A line that really needs a banned call can carry a comment
`alma-allow-banned: <reason>`; the reason is required and the line is still listed in the output as allowed.
EOF
}

files=()
for a in "$@"; do
    case "$a" in
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        echo "check-banned.sh: unknown option: $a (see --help)" >&2
        exit 2
        ;;
    *) files+=("$a") ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
command -v perl >/dev/null 2>&1 || {
    echo "check-banned.sh: perl not found (perl-base is part of every Debian system)" >&2
    exit 2
}

is_generated() {
    case "$1" in
    build/* | build-*/* | */gen/* | gen/* | *.pb-c.c | *.pb-c.h | node_modules/* | .stack/*) return 0 ;;
    *) return 1 ;;
    esac
}

if [ "${#files[@]}" -eq 0 ]; then
    dirs=()
    for d in common services tools bench tests; do
        [ -d "$d" ] && dirs+=("$d")
    done
    [ "${#dirs[@]}" -gt 0 ] || {
        echo "check-banned.sh: no source directories found"
        exit 0
    }
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        mapfile -t listed < <(git ls-files -co --exclude-standard -- "${dirs[@]}" | grep -E '\.[ch]$' || true)
    else
        mapfile -t listed < <(find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' \) | sort)
    fi
    for f in "${listed[@]}"; do
        if ! is_generated "$f" && [ -f "$f" ]; then
            files+=("$f")
        fi
    done
fi

if [ "${#files[@]}" -eq 0 ]; then
    echo "check-banned.sh: no C sources to check"
    exit 0
fi

# The scanner: reads every file, blanks comments (and the inside of string literals for the function checks)
# while keeping line numbers, then applies the rules line by line.
perl -e '
use strict;
use warnings;

my @always = qw(sprintf vsprintf strcpy strcat strncpy strtok sscanf atoi atol atoll gets);
my $always_re = join("|", @always);
my $hits = 0;
my $allowed = 0;

sub blank { my $s = shift; $s =~ s/[^\n]/ /g; return $s; }

for my $file (@ARGV) {
    open(my $fh, "<", $file) or die "check-banned.sh: cannot read $file: $!\n";
    local $/;
    my $raw = <$fh>;
    close $fh;

    # Comments out (newlines kept); string and char literals kept in $nocomment, emptied in $code.
    my $nocomment = $raw;
    $nocomment =~ s{ (//[^\n]*) | (/\*.*?\*/) | ("(?:\\.|[^"\\\n])*") | (\x27(?:\\.|[^\x27\\\n])*\x27) }
                   { defined $1 || defined $2 ? blank($&) : $& }gsex;
    my $code = $nocomment;
    $code =~ s{ ("(?:\\.|[^"\\\n])*") | (\x27(?:\\.|[^\x27\\\n])*\x27) }
              { substr($&, 0, 1) . blank(substr($&, 1, -1)) . substr($&, -1) }gsex;

    my @raw_lines = split /\n/, $raw, -1;
    my @code_lines = split /\n/, $code, -1;
    my $getenv_ok = ($file =~ m{(^|/)common/base/config\.c$} || $file =~ m{(^|/)tests/support/});
    my $in_crypto = ($file =~ m{(^|/)common/crypto/});

    my $report = sub {
        my ($line, $what) = @_;
        my $text = $raw_lines[$line - 1] // "";
        if ($text =~ /alma-allow-banned:\s*\S/) {
            $allowed++;
            print "$file:$line: allowed: $what\n";
            return;
        }
        $hits++;
        (my $shown = $text) =~ s/^\s+//;
        print "$file:$line: $what\n    $shown\n";
    };

    for my $i (0 .. $#code_lines) {
        my $l = $code_lines[$i];
        my $n = $i + 1;
        while ($l =~ /(?<![A-Za-z0-9_])($always_re)\s*\(/g) {
            $report->($n, "banned function $1()");
        }
        if (!$getenv_ok) {
            while ($l =~ /(?<![A-Za-z0-9_])((?:secure_)?getenv)\s*\(/g) {
                $report->($n, "$1() outside config loading (common/base/config.c, tests/support/)");
            }
        }
        if ($in_crypto) {
            while ($l =~ /(?<![A-Za-z0-9_])(memcmp|bcmp)\s*\(/g) {
                $report->($n, "$1() in common/crypto: use CRYPTO_memcmp (constant time)");
            }
        }
    }

    # SQL heuristic: a formatting call whose string literals (up to the end of the statement) hold an SQL verb.
    while ($nocomment =~ /(?<![A-Za-z0-9_])(v?snprintf|v?asprintf)\s*\(/g) {
        my $start = $-[0];
        my $fn = $1;
        my $end = index($nocomment, ";", $start);
        $end = length($nocomment) if $end < 0;
        my $stmt = substr($nocomment, $start, $end - $start);
        my $sql = 0;
        while ($stmt =~ /"((?:\\.|[^"\\\n])*)"/g) {
            if ($1 =~ /\b(SELECT|INSERT|UPDATE|DELETE)\b/) { $sql = 1; last; }
        }
        next unless $sql;
        my $line = 1 + (substr($nocomment, 0, $start) =~ tr/\n//);
        $report->($line, "SQL built with $fn(): use PQexecParams with \$1.. parameters");
    }
}

my $n = scalar @ARGV;
if ($hits) {
    print "check-banned.sh: $hits hit(s) in $n file(s) checked\n";
    exit 1;
}
print "check-banned.sh: $n file(s) clean" . ($allowed ? ", $allowed allowed line(s)" : "") . "\n";
exit 0;
' -- "${files[@]}"
