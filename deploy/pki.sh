#!/usr/bin/env bash
# Development PKI for the Alma suite: one dev root CA, one mTLS certificate per service with its SPIFFE
# identity, a few client certificates, and an unrelated "rogue" CA for negative tests.
# Never committed: regenerated whenever a file is missing, invalid or close to expiry.
set -euo pipefail

SERVICES=(echo audit identity vault guideline signaling breach gateway)
CLIENTS=(test-client alma-cli bench intruder)
CA_DAYS=825
LEAF_DAYS=397
RENEW_SECONDS=$((7 * 24 * 3600))

usage() {
    cat <<EOF
Usage: deploy/pki.sh DIR [--trust-domain DOMAIN] [--namespace NS] [--force] [--help]

Creates (or completes) a development PKI in DIR. Existing files are kept when they are valid, match their
key, carry the expected identity and do not expire within 7 days; anything else is regenerated (a new CA
re-issues every leaf). Prints one line per file it writes. Uses the openssl CLI (OpenSSL 3).

  --trust-domain DOMAIN  SPIFFE trust domain (default alma.local)
  --namespace NS         Kubernetes namespace in the SPIFFE id and DNS names (default alma)
  --force                regenerate everything
  --help                 this text

Files (all EC P-256, SHA-256; keys mode 600):
  ca.pem ca-key.pem                 "Alma dev CA" root, ${CA_DAYS} days
  <svc>.pem <svc>-key.pem           for svc in: ${SERVICES[*]}
                                    serverAuth+clientAuth, ${LEAF_DAYS} days, SAN
                                    URI:spiffe://DOMAIN/ns/NS/sa/<svc>, DNS:<svc>, DNS:<svc>.NS.svc,
                                    DNS:<svc>.NS.svc.cluster.local, DNS:localhost, IP:127.0.0.1
  <name>.pem <name>-key.pem         client-only (clientAuth) for name in: ${CLIENTS[*]}
                                    SAN URI:spiffe://DOMAIN/ns/NS/sa/<name>
                                    (intruder: valid cert of our CA that no method allows)
  rogue-ca.pem rogue-ca-key.pem     an unrelated CA
  rogue-client.pem rogue-client-key.pem
                                    signed by the rogue CA, SPIFFE id of test-client
EOF
}

die() {
    echo "pki.sh: $*" >&2
    exit 1
}

dir=""
trust_domain="alma.local"
namespace="alma"
force=0
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --trust-domain)
        [ $# -ge 2 ] || die "--trust-domain needs a value"
        trust_domain="$2"
        shift 2
        ;;
    --trust-domain=*)
        trust_domain="${1#*=}"
        shift
        ;;
    --namespace)
        [ $# -ge 2 ] || die "--namespace needs a value"
        namespace="$2"
        shift 2
        ;;
    --namespace=*)
        namespace="${1#*=}"
        shift
        ;;
    --force)
        force=1
        shift
        ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *)
        [ -z "$dir" ] || die "only one DIR may be given"
        dir="$1"
        shift
        ;;
    esac
done
[ -n "$dir" ] || {
    usage >&2
    exit 2
}
# Both end up in certificate names: keep them to what DNS labels and SPIFFE ids allow.
[[ "$trust_domain" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "invalid trust domain: $trust_domain"
[[ "$namespace" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "invalid namespace: $namespace"
command -v openssl >/dev/null 2>&1 || die "openssl not found (run deploy/deps.sh)"
case "$(openssl version)" in
OpenSSL\ 3.*) ;;
*) die "needs OpenSSL 3, found: $(openssl version)" ;;
esac

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
umask 077

# Two runs at once (ctest and stack.sh) must not interleave.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.pki.lock"
    flock 9
fi

work=$(mktemp -d "$dir/.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT

spiffe_id() {
    echo "spiffe://${trust_domain}/ns/${namespace}/sa/$1"
}

new_key() { # new_key OUT
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

random_serial() {
    # Positive 127-bit serial (RFC 5280: at most 20 octets, positive).
    echo "0x$(openssl rand -hex 16 | sed 's/^./7/')"
}

# Moves a finished file into place and reports it.
install_file() { # install_file TMP NAME MODE
    chmod "$3" "$1"
    mv -f "$1" "$dir/$2"
    echo "pki.sh: wrote $dir/$2"
}

# True when KEY holds the private key of CERT's public key.
key_matches() { # key_matches CERT KEY
    local a b
    a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
    b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
    [ -n "$a" ] && [ "$a" = "$b" ]
}

# True when CERT+KEY exist, match, and CERT is valid for at least RENEW_SECONDS more.
pair_fresh() { # pair_fresh NAME
    local c="$dir/$1.pem" k="$dir/$1-key.pem"
    [ "$force" -eq 0 ] && [ -s "$c" ] && [ -s "$k" ] &&
        openssl x509 -in "$c" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1 &&
        key_matches "$c" "$k"
}

# True when a leaf is fresh, chains to CA, and carries the expected SPIFFE id and EKU.
leaf_ok() { # leaf_ok NAME CA_NAME SPIFFE_ID EKU_TEXT
    local c="$dir/$1.pem" exts
    pair_fresh "$1" || return 1
    openssl verify -x509_strict -CAfile "$dir/$2.pem" "$c" >/dev/null 2>&1 || return 1
    exts=$(openssl x509 -in "$c" -noout -ext subjectAltName,extendedKeyUsage 2>/dev/null) || return 1
    grep -qF "URI:$3" <<<"$exts" || return 1
    grep -qxF "    $4" <<<"$exts" || return 1
    # A service certificate must name this namespace in its DNS SANs too.
    case "$4" in
    *Server*) grep -qF "DNS:$1.${namespace}.svc.cluster.local" <<<"$exts" || return 1 ;;
    *) ;;
    esac
}

make_ca() { # make_ca NAME CN
    local name="$1" cn="$2"
    cat >"$work/$name.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = Alma dev
CN = $cn
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    new_key "$work/$name-key.pem"
    openssl req -x509 -new -config "$work/$name.cnf" -extensions v3_ca -key "$work/$name-key.pem" \
        -sha256 -days "$CA_DAYS" -set_serial "$(random_serial)" -out "$work/$name.pem" 2>/dev/null ||
        die "could not create $name"
    install_file "$work/$name-key.pem" "$name-key.pem" 600
    install_file "$work/$name.pem" "$name.pem" 644
}

make_leaf() { # make_leaf NAME CA_NAME SPIFFE_ID server|client
    local name="$1" ca="$2" id="$3" kind="$4" san eku
    if [ "$kind" = server ]; then
        eku="serverAuth, clientAuth"
        san="URI:$id, DNS:$name, DNS:$name.$namespace.svc, DNS:$name.$namespace.svc.cluster.local"
        san="$san, DNS:localhost, IP:127.0.0.1"
    else
        eku="clientAuth"
        san="URI:$id"
    fi
    cat >"$work/$name.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = Alma dev
CN = $name
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    new_key "$work/$name-key.pem"
    openssl req -new -config "$work/$name.cnf" -key "$work/$name-key.pem" -out "$work/$name.csr" 2>/dev/null ||
        die "could not create the request for $name"
    openssl x509 -req -in "$work/$name.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca-key.pem" \
        -set_serial "$(random_serial)" -sha256 -days "$LEAF_DAYS" \
        -extfile "$work/$name.cnf" -extensions leaf -out "$work/$name.pem" 2>/dev/null ||
        die "could not sign $name"
    openssl verify -x509_strict -CAfile "$dir/$ca.pem" "$work/$name.pem" >/dev/null ||
        die "$name does not verify against $ca.pem"
    install_file "$work/$name-key.pem" "$name-key.pem" 600
    install_file "$work/$name.pem" "$name.pem" 644
}

ensure_ca() { # ensure_ca NAME CN
    if pair_fresh "$1" && openssl verify -x509_strict -CAfile "$dir/$1.pem" "$dir/$1.pem" >/dev/null 2>&1; then
        return 0
    fi
    make_ca "$1" "$2"
}

ensure_leaf() { # ensure_leaf NAME CA_NAME SPIFFE_ID server|client
    local eku_text="TLS Web Client Authentication"
    [ "$4" = server ] && eku_text="TLS Web Server Authentication, TLS Web Client Authentication"
    if leaf_ok "$1" "$2" "$3" "$eku_text"; then
        chmod 600 "$dir/$1-key.pem"
        return 0
    fi
    make_leaf "$@"
}

ensure_ca ca "Alma dev CA"
for svc in "${SERVICES[@]}"; do
    ensure_leaf "$svc" ca "$(spiffe_id "$svc")" server
done
for c in "${CLIENTS[@]}"; do
    ensure_leaf "$c" ca "$(spiffe_id "$c")" client
done
ensure_ca rogue-ca "Alma rogue CA (not trusted)"
ensure_leaf rogue-client rogue-ca "$(spiffe_id test-client)" client

# Final check of the whole set, whatever was kept or made.
for n in "${SERVICES[@]}" "${CLIENTS[@]}"; do
    openssl verify -x509_strict -CAfile "$dir/ca.pem" "$dir/$n.pem" >/dev/null || die "$n.pem does not verify"
done
openssl verify -x509_strict -CAfile "$dir/rogue-ca.pem" "$dir/rogue-client.pem" >/dev/null ||
    die "rogue-client.pem does not verify against rogue-ca.pem"
if openssl verify -CAfile "$dir/ca.pem" "$dir/rogue-client.pem" >/dev/null 2>&1; then
    die "rogue-client.pem must not verify against ca.pem"
fi
chmod 600 "$dir"/*-key.pem
echo "pki.sh: $dir ready (trust domain $trust_domain, namespace $namespace)"
