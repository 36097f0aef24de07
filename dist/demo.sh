#!/bin/sh
# `make demo`: a kmip2pkcs11 serving a SoftHSM2 token on 127.0.0.1:5696, in the foreground.
#
# Installs what is missing (dist/deps.sh), builds ./kmip2pkcs11, makes a SoftHSM2 token
# under ./demo (label "demo", user PIN 1234), writes ./demo/config.toml, prints how to
# point Cascade and PyKMIP at it, then runs the daemon until Ctrl-C.  Running it again
# reuses the token and the certificate in ./demo/state; ./demo/config.toml is written
# anew at every run, so that DEMO_PORT takes effect.  `make demo-clean` removes ./demo.
#
#   DEMO_PORT=5697 make demo     another port
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${DEMO_DIR:-$ROOT/demo}     # DEMO_DIR: another place (the tests use one)
LABEL=demo
PIN=1234
SOPIN=12345678
PORT=${DEMO_PORT:-5696}

sh dist/deps.sh
make kmip2pkcs11

LIB=$(sh dist/softhsm-token.sh --lib) ||
	{ echo "demo: libsofthsm2.so not found (is softhsm2 installed?)" >&2; exit 1; }

mkdir -p "$DIR/state"
chmod 700 "$DIR" "$DIR/state"
SOFTHSM2_CONF=$(sh dist/softhsm-token.sh "$DIR" "$LABEL" "$PIN" "$SOPIN") ||
	{ echo "demo: cannot make the SoftHSM2 token \"$LABEL\" in $DIR/tokens" >&2; exit 1; }
export SOFTHSM2_CONF
echo "demo: the SoftHSM2 token \"$LABEL\" is in $DIR/tokens (made at the first run, then reused)"

case $PORT in
''|*[!0-9]*) echo "demo: DEMO_PORT=$PORT is not a port number" >&2; exit 1 ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
	echo "demo: DEMO_PORT=$PORT is not between 1 and 65535" >&2; exit 1
fi
# Say why before the daemon would: another demo, or another server, may hold the port.
if ! /usr/bin/python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$PORT" 2>/dev/null; then
	echo "demo: 127.0.0.1:$PORT is in use (another make demo?); try DEMO_PORT=$((PORT + 1)) make demo" >&2
	exit 1
fi

cat > "$DIR/config.toml" <<EOF
# Written by dist/demo.sh at every run (DEMO_PORT=$PORT); see config.example for every key.
version = "v1"

[pkcs11]
lib-path = "$LIB"

[server]
addr = "127.0.0.1:$PORT"

[daemon]
log-level = "info"
state-dir = "$DIR/state"
EOF
./kmip2pkcs11 --check-config -c "$DIR/config.toml" > /dev/null ||
	{ echo "demo: $DIR/config.toml does not check out (above)" >&2; exit 1; }

cat <<EOF

  KMIP server      127.0.0.1:$PORT (TLS 1.3 only)
  username         $LABEL          (the SoftHSM2 token label)
  password         $PIN            (the token's user PIN; SO PIN $SOPIN)
  CA certificate   $DIR/state/cert.pem  (self-signed, made at first start, then kept)
  SOFTHSM2_CONF    $SOFTHSM2_CONF

  Cascade:
    cascade hsm add --insecure --username $LABEL --password $PIN --port $PORT kmip2pkcs11 127.0.0.1
  (--insecure because the certificate is self-signed; if your Cascade can pin a server
   certificate, give it $DIR/state/cert.pem instead: see cascade hsm add --help)

  PyKMIP (Debian python3-pykmip, /usr/bin/python3):
    from kmip.pie.client import ProxyKmipClient
    c = ProxyKmipClient(hostname="127.0.0.1", port=$PORT, ca="$DIR/state/cert.pem",
                        ssl_version="PROTOCOL_TLS", username="$LABEL", password="$PIN")
  (no client certificate needed; OPENSSL_CONF with MinProtocol = TLSv1.3 forces TLS 1.3)

  Stop with Ctrl-C.

EOF
exec ./kmip2pkcs11 -c "$DIR/config.toml"
