/*
 * kmip2pkcs11: Mbed TLS 3.6 configuration for the small static build (`make static`).
 *
 * dist/build-mbedtls.sh builds Mbed TLS with this file as MBEDTLS_CONFIG_FILE and
 * installs it as build/mbedtls-static/include/mbedtls/mbedtls_config.h, so the daemon,
 * compiled with -I build/mbedtls-static/include, sees the same configuration as the
 * library (the structures in the headers depend on it).
 *
 * What the daemon needs and nothing else:
 *   - a TLS 1.3 server: ephemeral (EC)DHE key exchange only (no PSK, no tickets, no
 *     early data), groups X25519, secp256r1, secp384r1, suites AES-128/256-GCM and
 *     ChaCha20-Poly1305; no TLS 1.2, no DTLS, no client;
 *   - X.509: parse the configured certificate and key (EC or RSA, PEM or DER), verify an
 *     optional client certificate chain, and write the self-signed P-256 certificate
 *     made at first start (x509write_crt, pk_write, PEM write, ECDSA sign);
 *   - SHA-256/384/512 in software (MD and the direct SHA functions) for tokens that lack
 *     a combined hash-and-sign mechanism;
 *   - PSA crypto, which TLS 1.3 in 3.6 is built on (MBEDTLS_USE_PSA_CRYPTO), with the
 *     algorithms named in the PSA section below (MBEDTLS_PSA_CRYPTO_CONFIG): derived
 *     from the legacy options, as before, the set would also hold TLS 1.2 key
 *     derivations, RSA encryption and raw block and stream ciphers, which nothing here
 *     calls.
 *
 * The library's own check_config.h (pulled in by build_info.h) rejects a combination
 * that lacks a prerequisite, at the first compile.
 *
 * Every option name is documented in Mbed TLS's include/mbedtls/mbedtls_config.h.
 *
 * Size: what each choice saves in the stripped `make static` binary (GCC 12, each
 * measured on top of the ones above it; text + data, since the file itself moves in
 * 4 KiB steps, its segments starting on page boundaries):
 *                                                    x86-64  aarch64  mips
 *   MBEDTLS_X509_REMOVE_INFO                          3.9     3.9      2.5 KiB
 *   PSA algorithms named, not derived (PSA section)   3.8     4.1      3.6
 *   no MBEDTLS_CIPHER_C                               3.0     3.1      2.4
 *   MBEDTLS_SSL_CIPHERSUITES: the three suites only   0.8     0.8      0.9
 * and the Makefile's flags for Mbed TLS and the daemon alike: -Oz (x86-64 3.8 KiB; the
 * same code as -Os on the other targets), -fno-plt on x86-64 (1.2 KiB), one LTO
 * partition (x86-64 1.3, aarch64 0.8 KiB; left out on mips, where it costs 8 KiB).
 * Measured and left as they are: MBEDTLS_ECP_NIST_OPTIM off would save 2.7 KiB, but
 * P-256 ECDSA and ECDH take twice and P-384 three times as long; MBEDTLS_HMAC_DRBG_C
 * instead of MBEDTLS_CTR_DRBG_C adds 0.3 KiB; without MBEDTLS_MD_C nothing changes
 * (the library keeps the part it uses either way). Of the linker's options,
 * -z pack-relative-relocs would save 8 KiB on x86-64 but needs glibc 2.36 (no Ubuntu
 * 22.04), and -z noseparate-code 8 KiB of page padding, but makes the headers and
 * read-only data executable.
 */
#ifndef K2P_MBEDTLS_CONFIG_H
#define K2P_MBEDTLS_CONFIG_H

/* Marker: the daemon's static build checks for it, so that it cannot silently compile
 * against the system's Mbed TLS headers (other configuration, other structure layout). */
#define K2P_MBEDTLS_CONFIG 1

/* ---- System support ------------------------------------------------------------ */
/* The bignum inline assembly is MIPS32 code, which a MIPS16 build (`make static` for
 * mips*: -mips16) cannot assemble; the portable C then multiplies through 64-bit
 * integers. */
#if !defined(__mips16)
#define MBEDTLS_HAVE_ASM
#endif
#define MBEDTLS_HAVE_TIME
#define MBEDTLS_HAVE_TIME_DATE          /* certificate validity checks */
#define MBEDTLS_FS_IO                   /* x509_crt_parse_file, pk_parse_keyfile */
#define MBEDTLS_THREADING_C             /* worker threads may hash / encode keys while */
#define MBEDTLS_THREADING_PTHREAD       /* the event loop runs TLS on the shared PSA core */

/* ---- Symmetric crypto ---------------------------------------------------------- */
#define MBEDTLS_AES_C
#define MBEDTLS_AESNI_C                 /* AES-NI on x86-64, compiled out elsewhere */
#define MBEDTLS_AESCE_C                 /* Armv8 crypto extensions, compiled out elsewhere */
#define MBEDTLS_AES_FEWER_TABLES        /* 2 KiB of tables instead of 8 */
#define MBEDTLS_BLOCK_CIPHER_NO_DECRYPT /* GCM and CTR_DRBG only ever encrypt */
#define MBEDTLS_GCM_C
#define MBEDTLS_CHACHA20_C
#define MBEDTLS_POLY1305_C
#define MBEDTLS_CHACHAPOLY_C
/* No MBEDTLS_CIPHER_C: PSA drives GCM and ChaCha20-Poly1305 directly, and GCM reaches
 * AES through the small block cipher layer that Mbed TLS enables for it by itself. */

/* ---- Hashes, MAC, KDF ---------------------------------------------------------- */
#define MBEDTLS_MD_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA384_C
#define MBEDTLS_SHA512_C
/* Rolled loops: about 3 KiB less code for some 30% of hashing speed, which nothing
 * here is bound by (handshake transcripts, DNSSEC-sized data to sign). */
#define MBEDTLS_SHA256_SMALLER
#define MBEDTLS_SHA512_SMALLER
/* HKDF for TLS 1.3 is PSA's: PSA_WANT_ALG_HKDF_EXTRACT / _EXPAND below. */

/* ---- Random numbers ------------------------------------------------------------ */
#define MBEDTLS_ENTROPY_C               /* getrandom(); MBEDTLS_PLATFORM_DEV_RANDOM without it */
#define MBEDTLS_CTR_DRBG_C

/* ---- Public key ---------------------------------------------------------------- */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_MPI_MAX_SIZE 512        /* RSA up to 4096 bits, PSA's own limit as well */
#define MBEDTLS_RSA_C
#define MBEDTLS_PKCS1_V15               /* sha256WithRSAEncryption certificate signatures */
#define MBEDTLS_PKCS1_V21               /* RSA-PSS: TLS 1.3 CertificateVerify with RSA */
#define MBEDTLS_ECP_C
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_DP_SECP384R1_ENABLED
#define MBEDTLS_ECP_DP_CURVE25519_ENABLED
#define MBEDTLS_ECP_NIST_OPTIM          /* fast reduction for P-256 / P-384 */
/* No precomputed base-point tables: 10 KiB less, and a handshake's ECDSA signature
 * and ephemeral key cost about 1 ms more on x86-64 (a few tens of ms on a small Arm
 * board). KMIP clients keep their connections, so handshakes are rare. */
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 0
#define MBEDTLS_ECDH_C
#define MBEDTLS_ECDSA_C
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_OID_C
#define MBEDTLS_BASE64_C
#define MBEDTLS_PEM_PARSE_C
#define MBEDTLS_PEM_WRITE_C

/* ---- PSA crypto ---------------------------------------------------------------- */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_USE_PSA_CRYPTO
/* Key slots grow on demand: every TLS 1.3 connection holds PSA keys (traffic keys,
 * the ephemeral ECDH key during the handshake); a fixed table of 32 would cap the
 * number of connections. */
#define MBEDTLS_PSA_KEY_STORE_DYNAMIC

/* The PSA algorithms and key types, named here rather than derived from the legacy
 * options above (which would add TLS 1.2's PRF and PSK and EC J-PAKE key derivations,
 * RSA OAEP and PKCS#1 v1.5 encryption, ECB and a raw ChaCha20 stream cipher, and EC key
 * derivation). The PSA configuration file that build_info.h reads next is this file
 * again, which its include guard turns into nothing: the list below is the whole of it.
 * Mbed TLS builds with MBEDTLS_CONFIG_FILE naming this file; the daemon includes it as
 * the installed mbedtls/mbedtls_config.h. A curve, hash or algorithm added above needs
 * its line here as well: TLS and the daemon's PSA calls see only what is named here. */
#define MBEDTLS_PSA_CRYPTO_CONFIG
#if defined(MBEDTLS_CONFIG_FILE)
#define MBEDTLS_PSA_CRYPTO_CONFIG_FILE MBEDTLS_CONFIG_FILE
#else
#define MBEDTLS_PSA_CRYPTO_CONFIG_FILE "mbedtls/mbedtls_config.h"
#endif
/* Hashes: TLS 1.3 transcripts, certificate signatures, the daemon's own hashing. */
#define PSA_WANT_ALG_SHA_256                    1
#define PSA_WANT_ALG_SHA_384                    1
#define PSA_WANT_ALG_SHA_512                    1
/* TLS 1.3 key schedule. */
#define PSA_WANT_ALG_HMAC                       1
#define PSA_WANT_KEY_TYPE_HMAC                  1
#define PSA_WANT_ALG_HKDF_EXTRACT               1
#define PSA_WANT_ALG_HKDF_EXPAND                1
/* Records: the three suites. */
#define PSA_WANT_ALG_GCM                        1
#define PSA_WANT_ALG_CHACHA20_POLY1305          1
#define PSA_WANT_KEY_TYPE_AES                   1
#define PSA_WANT_KEY_TYPE_CHACHA20              1
/* Key exchange (X25519, P-256, P-384) and signatures: ECDSA, RSA-PSS in
 * CertificateVerify, RSA PKCS#1 v1.5 in certificate chains. */
#define PSA_WANT_ALG_ECDH                       1
#define PSA_WANT_ALG_ECDSA                      1
#define PSA_WANT_ALG_RSA_PSS                    1
#define PSA_WANT_ALG_RSA_PKCS1V15_SIGN          1
#define PSA_WANT_ECC_SECP_R1_256                1
#define PSA_WANT_ECC_SECP_R1_384                1
#define PSA_WANT_ECC_MONTGOMERY_255             1
/* Keys: EC pairs are generated (self-signed certificate, ephemeral keys), imported and
 * exported (Register, mbedtls_pk_copy_from_psa); RSA pairs imported to sign. */
#define PSA_WANT_KEY_TYPE_ECC_PUBLIC_KEY        1
#define PSA_WANT_KEY_TYPE_ECC_KEY_PAIR_BASIC    1
#define PSA_WANT_KEY_TYPE_ECC_KEY_PAIR_IMPORT   1
#define PSA_WANT_KEY_TYPE_ECC_KEY_PAIR_EXPORT   1
#define PSA_WANT_KEY_TYPE_ECC_KEY_PAIR_GENERATE 1
#define PSA_WANT_KEY_TYPE_RSA_PUBLIC_KEY        1
#define PSA_WANT_KEY_TYPE_RSA_KEY_PAIR_BASIC    1
#define PSA_WANT_KEY_TYPE_RSA_KEY_PAIR_IMPORT   1
#define PSA_WANT_KEY_TYPE_RSA_KEY_PAIR_EXPORT   1

/* ---- X.509 --------------------------------------------------------------------- */
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C        /* includes chain verification */
/* Needed for RSA server certificates, not only for PSS-signed certificates: the
 * library's default TLS 1.3 signature algorithm list (ssl_tls.c) offers the
 * rsa_pss_rsae_* algorithms, the only ones TLS 1.3 allows in CertificateVerify for an
 * RSA key, only when this option is set. Without it an RSA certificate is never
 * selected and the handshake fails with "no suitable certificate". */
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT
#define MBEDTLS_X509_CREATE_C
#define MBEDTLS_X509_CRT_WRITE_C
/* No mbedtls_x509_crt_info and friends, and no names or descriptions in the OID tables
 * (the daemon prints a subject with mbedtls_x509_dn_gets, whose "CN=" short names
 * stay). */
#define MBEDTLS_X509_REMOVE_INFO

/* ---- TLS ----------------------------------------------------------------------- */
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_SRV_C
#define MBEDTLS_SSL_PROTO_TLS1_3
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE /* middleboxes; clients send a session id */
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE     /* required by TLS 1.3; client cert check */
#define MBEDTLS_SSL_ALL_ALERT_MESSAGES        /* tell the peer why, not just close */
/* The library's default suite list (the daemon sets its own, section 9's tls_suites):
 * these three, not the table of every suite Mbed TLS knows. */
#define MBEDTLS_SSL_CIPHERSUITES MBEDTLS_TLS1_3_AES_128_GCM_SHA256, \
	MBEDTLS_TLS1_3_AES_256_GCM_SHA384, MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256

/* Record buffers, allocated per connection.
 * IN: 16384, the TLS maximum. Peers (OpenSSL, rustls, Python) send full 16 KiB
 * records and none of them honours a smaller limit unless it was negotiated
 * (record_size_limit is not offered by OpenSSL clients), so anything smaller breaks
 * interoperability with a large request.
 * OUT: 8192. Mbed TLS splits application data into records by itself, so a KMIP
 * response of any size goes out in 8 KiB records; but each handshake message is
 * written whole into this buffer, and the server's Certificate message carries the
 * configured chain: the self-signed P-256 certificate is ~0.5 KiB, an RSA-4096 leaf,
 * intermediate and root together 3.9 KiB (tested). 4096 would leave no room for a
 * second intermediate or a certificate with many names, and such a chain would fail
 * at every handshake; 8192 does, and still saves 8 KiB per connection against the
 * default (buffers with record overhead: 16429 + 8237 bytes). */
#define MBEDTLS_SSL_IN_CONTENT_LEN  16384
#define MBEDTLS_SSL_OUT_CONTENT_LEN 8192

/* ---- Miscellaneous ------------------------------------------------------------- */
/* MBEDTLS_ERROR_C (mbedtls_strerror's texts, "X509 - Certificate verification failed")
 * is left out: 14 KiB, which the binary's budget no longer holds. Section 9
 * (tls_strerror) names the codes an operator meets in its own words and prints any other
 * in hex. Do not define MBEDTLS_ERROR_STRERROR_DUMMY instead: its "UNKNOWN ERROR CODE"
 * says less than hex. */
#define MBEDTLS_VERSION_C               /* mbedtls_version_get_string for --version */

#endif /* K2P_MBEDTLS_CONFIG_H */
