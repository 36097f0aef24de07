#!/bin/sh
# `make demo`: a kmip2pkcs11 serving a SoftHSM2 token on 127.0.0.1:5696, in the foreground.
#
# Installs what is missing (dist/deps.sh), builds ./kmip2pkcs11, makes a SoftHSM2 token
# under ./demo (label "demo", user PIN 1234), writes ./demo/config.toml, prints how to
# point Cascade and PyKMIP at it, then runs the daemon until Ctrl-C.  Running it again
# reuses the token, the configuration and the certificate in ./demo/state.
#
#   DEMO_PORT=5697 make demo     another port
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=$ROOT/demo
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

if [ ! -f "$DIR/config.toml" ]; then
	cat > "$DIR/config.toml" <<EOF
# Written by dist/demo.sh; see config.example for every key.
version = "v1"

[pkcs11]
lib-path = "$LIB"

[server]
addr = "127.0.0.1:$PORT"

[daemon]
log-level = "info"
state-dir = "$DIR/state"
EOF
fi
PORT=$(sed -n 's/^addr = "127\.0\.0\.1:\([0-9]*\)"$/\1/p' "$DIR/config.toml")
PORT=${PORT:-5696}

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
