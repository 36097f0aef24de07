#!/bin/sh
# Stop the build with a clear message when the Mbed TLS found has no TLS 1.3 server.
CC=${CC:-cc}
v=$(printf '#include <mbedtls/build_info.h>\nMBEDTLS_VERSION_STRING\n' | $CC $CPPFLAGS -E -P - 2>/dev/null | tail -n 1 | tr -d '"')
case "$v" in
""|MBEDTLS_VERSION_STRING)
	echo "kmip2pkcs11: Mbed TLS headers not found; run dist/deps.sh (needs Mbed TLS 3.6 or newer)" >&2
	exit 1 ;;
esac
if ! printf '#include <mbedtls/build_info.h>\n#if MBEDTLS_VERSION_NUMBER < 0x03060000 || !defined(MBEDTLS_SSL_PROTO_TLS1_3) || !defined(MBEDTLS_SSL_SRV_C)\n#error old\n#endif\n' \
	| $CC $CPPFLAGS -E - >/dev/null 2>&1; then
	echo "kmip2pkcs11: Mbed TLS $v found, but it has no TLS 1.3 server; 3.6 or newer is needed (dist/deps.sh installs it)" >&2
	exit 1
fi
echo "Mbed TLS $v"
