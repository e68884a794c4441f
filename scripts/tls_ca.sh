#!/usr/bin/env bash
# Owns: a throw-away certificate authority for TLS tests (openssl CLI,
# Debian's `openssl`). Writes into DIR:
#   ca.pem      the CA certificate (what a client is told to trust)
#   ca.key      its key
#   server.pem  a server certificate signed by it, for localhost and 127.0.0.1
#   server.key  its key (unencrypted)
# EC P-256 keys, SHA-256, valid for DAYS (default 3650) from now. The
# server certificate is an end entity (CA:FALSE, serverAuth), as rustls and
# OpenSSL want. An existing set in DIR is kept unless --force.
#
# Usage: scripts/tls_ca.sh DIR [--force]     (env DAYS)
set -euo pipefail
die() { echo "tls_ca.sh: $*" >&2; exit 1; }
[[ -n "${1:-}" ]] || die "usage: $0 DIR [--force]"
DIR="$1"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
if [[ "${2:-}" != --force && -s "$DIR/ca.pem" && -s "$DIR/server.pem" && -s "$DIR/server.key" ]]; then
  exit 0
fi
DAYS="${DAYS:-3650}"
mkdir -p "$DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/ca.ext" <<'EXT'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
cat >"$tmp/server.ext" <<'EXT'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key" 2>/dev/null
openssl req -new -key "$tmp/ca.key" -subj "/O=outage tests/CN=outage test CA" -out "$tmp/ca.csr"
openssl x509 -req -in "$tmp/ca.csr" -signkey "$tmp/ca.key" -days "$DAYS" -sha256 \
  -extfile "$tmp/ca.ext" -out "$tmp/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key.ec" 2>/dev/null
# PKCS#8, which every TLS stack reads.
openssl pkcs8 -topk8 -nocrypt -in "$tmp/server.key.ec" -out "$tmp/server.key"
openssl req -new -key "$tmp/server.key" -subj "/O=outage tests/CN=localhost" -out "$tmp/server.csr"
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
  -days "$DAYS" -sha256 -extfile "$tmp/server.ext" -out "$tmp/server.pem" 2>/dev/null
openssl verify -CAfile "$tmp/ca.pem" "$tmp/server.pem" >/dev/null || die "the server certificate does not verify"
cp "$tmp/ca.pem" "$tmp/ca.key" "$tmp/server.pem" "$tmp/server.key" "$DIR/"
chmod 600 "$DIR/ca.key" "$DIR/server.key"
echo "tls_ca.sh: CA and server certificate for localhost/127.0.0.1 in $DIR" >&2
