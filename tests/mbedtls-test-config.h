/*
 * kmip2pkcs11: Mbed TLS configuration of the cross-built tests (`make cross-check`).
 *
 * The native tests link Debian's libmbedtls; a cross build has none for the target, so
 * dist/build-mbedtls.sh builds one from the same source with this file.  It is the
 * library's own default configuration, which the script copies next to this file, plus
 * what Debian's package turns on in its rules and the tests rely on: threads (the
 * daemon's workers share the PSA core with the event loop).  Unlike
 * dist/mbedtls-config.h it keeps the TLS client and TLS 1.2 that the test clients use.
 */
#include "mbedtls-default-config.h"

#define MBEDTLS_THREADING_C
#define MBEDTLS_THREADING_PTHREAD
