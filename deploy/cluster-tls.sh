#!/bin/sh
# Makes the mutual-TLS material of the Docker Compose cluster's link between nodes: a CA, and
# for each node a key and a certificate the CA signed, naming the node's service name (the host
# its peers dial, cluster.advertise_host) and usable as both server and client.
#
#   deploy/cluster-tls.sh                          # otpd-1 otpd-2 otpd-3, into deploy/secrets/cluster/
#   deploy/cluster-tls.sh -o DIR node-a node-b     # other nodes, another folder
#
# It writes ca.pem, ca.key and <node>.pem, <node>.key for each node. deploy/secrets/ is ignored
# by git and by the image build: never commit a key. ca.key is mounted nowhere; keep it (to add
# a node later: run again with -o on a copy, or sign by hand) or delete it. Certificates last
# 825 days; run again to renew (every node at once: a new CA replaces the old).
#
# The nodes run as uid 10001 and read their key through a bind mount (a Compose secret), so
# the key must be readable by that uid and by nobody else (a node refuses a key group or others
# may read): every key is left 0600, and run as root (sudo) the node keys are chowned to 10001;
# otherwise the script prints the chown to run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=$here/secrets/cluster
if [ "${1:-}" = "-o" ]; then
  [ $# -ge 2 ] || { echo "usage: $0 [-o DIR] [NODE...]" >&2; exit 2; }
  out=$2
  shift 2
fi
[ $# -gt 0 ] || set -- otpd-1 otpd-2 otpd-3
command -v openssl >/dev/null || { echo "$0: openssl is needed" >&2; exit 1; }

mkdir -p "$out"
cd "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=otpd cluster CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.pem 2>"$work/openssl.log" || { cat "$work/openssl.log" >&2; exit 1; }

for node in "$@"; do
  case $node in
    *[!A-Za-z0-9._-]*|"") echo "$0: $node: a node's host name is A-Z a-z 0-9 . _ -" >&2; exit 2 ;;
  esac
  printf '%s\n' \
    "subjectAltName=DNS:$node" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "keyUsage=critical,digitalSignature" \
    "basicConstraints=critical,CA:FALSE" >"$work/$node.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$node" \
    -keyout "$node.key" -out "$work/$node.csr" 2>"$work/openssl.log" || { cat "$work/openssl.log" >&2; exit 1; }
  openssl x509 -req -in "$work/$node.csr" -CA ca.pem -CAkey ca.key -CAserial "$work/ca.srl" -CAcreateserial \
    -days 825 -extfile "$work/$node.ext" -out "$node.pem" 2>"$work/openssl.log" || { cat "$work/openssl.log" >&2; exit 1; }
done

chmod 0644 ca.pem
chmod 0600 ca.key
for node in "$@"; do
  chmod 0644 "$node.pem"
  chmod 0600 "$node.key"
  if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$node.key"
  fi
done
echo "cluster TLS for $* written to $out"
if [ "$(id -u)" != 0 ]; then
  echo "note: the containers run as uid 10001; let them read their keys: sudo chown 10001 $out/*.key" >&2
  echo "      (not as root, so not done: the keys stay 0600, as a node requires)" >&2
fi
