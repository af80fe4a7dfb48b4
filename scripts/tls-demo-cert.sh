#!/usr/bin/env bash
# Make a certificate and key for trying Cave over HTTPS (the compose demo, a local node): a throw-away demo CA
# and a server certificate it signs.
#
#   scripts/tls-demo-cert.sh            # writes tls/ca.pem, tls/cert.pem, tls/key.pem (tls/ is git-ignored)
#   scripts/tls-demo-cert.sh DIR        # into DIR instead
#
# The server certificate is valid for a year for localhost, 127.0.0.1, ::1 and the demo's node names (node1,
# node2, node3). Clients trust the CA: `curl --cacert tls/ca.pem https://localhost:2001/healthz`; a browser
# warns until ca.pem is imported (or the warning is accepted once). The CA's key is deleted once it has
# signed: it can sign nothing else.
#
# For the demo only: the node's key is made readable by everyone (0644) so that the image's unprivileged
# user (10001) can read it through the bind mount. A real deployment gives the key to the node's user alone
# (0600, owned by that user) and a certificate from its own CA. Needs openssl (Debian: apt-get install openssl).
set -euo pipefail

dir=${1:-"$(dirname "$0")/../tls"}
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/openssl.cnf" <<'CONF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = cave demo CA
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:node1, DNS:node2, DNS:node3, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CONF
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086 # $ec is several arguments
openssl req -x509 -config "$work/openssl.cnf" -extensions ca $ec -days 365 \
    -keyout "$work/ca.key" -out "$dir/ca.pem" 2>/dev/null
# shellcheck disable=SC2086
openssl req -new -config "$work/openssl.cnf" -subj "/CN=cave demo node" $ec \
    -keyout "$dir/key.pem" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$dir/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -CAserial "$work/ca.srl" \
    -extfile "$work/openssl.cnf" -extensions server -days 365 -out "$dir/cert.pem" 2>/dev/null
chmod 0644 "$dir/ca.pem" "$dir/cert.pem" "$dir/key.pem"
echo "wrote $dir/ca.pem (trust this), $dir/cert.pem and $dir/key.pem (give these to the node):"
openssl x509 -in "$dir/cert.pem" -noout -subject -enddate -fingerprint -sha256
