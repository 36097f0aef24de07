#!/bin/sh
# The SoftHSM2 token of the demo, the tests and the benchmark, made in one place.
#
#   sh dist/softhsm-token.sh DIR LABEL PIN SOPIN
#       Writes DIR/softhsm2.conf (tokens in DIR/tokens) unless it is there, makes the token
#       LABEL (user PIN, SO PIN) unless that configuration has one, and prints the
#       configuration's path, for SOFTHSM2_CONF.  softhsm2-util's errors go to stderr;
#       the exit status is 0 only when the token is there.
#   sh dist/softhsm-token.sh --lib
#       Prints the path of libsofthsm2.so; exit status 1 when there is none.
set -u

if [ "${1:-}" = --lib ]; then
	for f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so \
	         /usr/lib64/pkcs11/libsofthsm2.so /usr/lib/pkcs11/libsofthsm2.so \
	         /usr/local/lib/softhsm/libsofthsm2.so; do
		[ -f "$f" ] && { echo "$f"; exit 0; }
	done
	f=$(dpkg -L softhsm2 2>/dev/null | grep '/libsofthsm2\.so$' | head -n 1)
	[ -n "$f" ] && echo "$f"
	exit
fi

if [ $# -ne 4 ]; then
	echo "usage: sh dist/softhsm-token.sh DIR LABEL PIN SOPIN | --lib" >&2
	exit 2
fi
label=$2 pin=$3 sopin=$4
mkdir -p "$1/tokens" && chmod 700 "$1/tokens" && dir=$(cd "$1" && pwd) || exit 1
SOFTHSM2_CONF=$dir/softhsm2.conf
export SOFTHSM2_CONF

if [ ! -f "$SOFTHSM2_CONF" ]; then
	cat > "$SOFTHSM2_CONF" <<EOF || exit 1
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
fi

if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *$label *\$"; then
	softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$sopin" \
		>/dev/null || exit 1
fi
echo "$SOFTHSM2_CONF"
