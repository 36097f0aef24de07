/*
 * Section 6 (PKCS#11) against a real SoftHSM2 token made in a temporary directory, and
 * against tests/nullp11 (built to build/nullp11.so first).
 *
 * Run from the repository root (nullp11.so is found as build/nullp11.so):
 *   gcc -shared -fPIC -I. tests/nullp11.c -o build/nullp11.so -lpthread
 *   LSAN_OPTIONS=suppressions=tests/lsan.supp build/test_p11
 * The suppressions cover allocations that SoftHSM2's OpenSSL keeps after C_Finalize (an
 * ASN1 string, 37 bytes); nothing of ours is suppressed.
 */
#include "../kmip2pkcs11.c"
#include "check.h"

#include <mbedtls/rsa.h>

static char tmpdir[] = "/tmp/k2p-p11-XXXXXX";

#include "p11test.h"

/* ---- helpers ---- */

static void sha(psa_algorithm_t alg, const uint8_t *d, size_t n, uint8_t *out, size_t *len)
{
	psa_hash_compute(alg, d, n, out, 64, len);
}

static int verify_rsa(const struct p11_key_info *ki, int hash, const uint8_t *data, size_t n,
                      const uint8_t *sig, size_t siglen)
{
	mbedtls_rsa_context rsa;
	uint8_t h[64];
	size_t hl = 0;
	psa_algorithm_t alg = hash == P11_HASH_SHA256 ? PSA_ALG_SHA_256 :
	                      hash == P11_HASH_SHA384 ? PSA_ALG_SHA_384 : PSA_ALG_SHA_512;
	mbedtls_md_type_t md = hash == P11_HASH_SHA256 ? MBEDTLS_MD_SHA256 :
	                       hash == P11_HASH_SHA384 ? MBEDTLS_MD_SHA384 : MBEDTLS_MD_SHA512;
	int ok;

	sha(alg, data, n, h, &hl);
	mbedtls_rsa_init(&rsa);
	ok = mbedtls_rsa_import_raw(&rsa, ki->modulus, ki->modulus_len, NULL, 0, NULL, 0, NULL, 0,
	                            ki->exponent, ki->exponent_len) == 0 &&
	     mbedtls_rsa_complete(&rsa) == 0 && mbedtls_rsa_get_len(&rsa) == siglen &&
	     mbedtls_rsa_pkcs1_verify(&rsa, md, (unsigned)hl, h, sig) == 0;
	mbedtls_rsa_free(&rsa);
	return ok;
}

/* PSA verifies r||s: mbedtls_ecdsa_der_to_raw is an independent DER reader. */
static int verify_ecdsa(const struct p11_key_info *ki, int hash, const uint8_t *data, size_t n,
                        const uint8_t *der, size_t derlen)
{
	psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
	psa_key_id_t key = 0;
	psa_algorithm_t halg = hash == P11_HASH_SHA256 ? PSA_ALG_SHA_256 :
	                       hash == P11_HASH_SHA384 ? PSA_ALG_SHA_384 : PSA_ALG_SHA_512;
	size_t bits = ki->curve == P11_CURVE_P256 ? 256 : ki->curve == P11_CURVE_P384 ? 384 : 521;
	uint8_t raw[132], h[64];
	size_t rawlen = 0, hl = 0;
	int ok;

	if (mbedtls_ecdsa_der_to_raw(bits, der, derlen, raw, sizeof raw, &rawlen) != 0)
		return 0;
	sha(halg, data, n, h, &hl);
	psa_set_key_type(&a, PSA_KEY_TYPE_ECC_PUBLIC_KEY(PSA_ECC_FAMILY_SECP_R1));
	psa_set_key_bits(&a, bits);
	psa_set_key_usage_flags(&a, PSA_KEY_USAGE_VERIFY_HASH);
	psa_set_key_algorithm(&a, PSA_ALG_ECDSA(halg));
	if (psa_import_key(&a, ki->ec_point, ki->ec_point_len, &key) != PSA_SUCCESS)
		return 0;
	ok = psa_verify_hash(key, PSA_ALG_ECDSA(halg), h, hl, raw, rawlen) == PSA_SUCCESS;
	psa_destroy_key(key);
	return ok;
}

/* The module gives the bare 32-byte point: openssl verifies against its SPKI. */
static int verify_ed25519(const struct p11_key_info *ki, const uint8_t *data, size_t n,
                          const uint8_t *sig, size_t siglen)
{
	static const uint8_t spki[] = { 0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
	                                0x03, 0x21, 0x00 };
	uint8_t der[sizeof spki + 32];

	if (ki->ec_point_len != 32 || siglen != 64)
		return 0;
	memcpy(der, spki, sizeof spki);
	memcpy(der + sizeof spki, ki->ec_point, 32);
	return verify_ed25519_spki(der, sizeof der, data, n, sig, siglen);
}

/* ---- tests ---- */

static void test_rv_table(void)
{
	CHECK(strcmp(p11_rv_name(CKR_OK), "CKR_OK") == 0, "name of CKR_OK");
	CHECK(strcmp(p11_rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT") == 0, "name of PIN_INCORRECT");
	CHECK(strcmp(p11_rv_name(CKR_OPERATION_CANCEL_FAILED), "CKR_OPERATION_CANCEL_FAILED") == 0,
	      "name of a 3.0 code");
	CHECK(strcmp(p11_rv_name(CKR_VENDOR_DEFINED + 0x12), "CKR_VENDOR_DEFINED+0x12") == 0,
	      "vendor code name");
	CHECK(strcmp(p11_rv_name(0x777), "CKR_0x777") == 0, "unknown code name");
	CHECK(strcmp(p11_rv_name(P11_E_NOT_FOUND), "P11_E_NOT_FOUND") == 0, "own code name");
	CHECK(p11_rv_reason(CKR_PIN_INCORRECT) == RR_AUTHENTICATION_NOT_SUCCESSFUL, "PIN -> auth");
	CHECK(p11_rv_reason(CKR_PIN_LEN_RANGE) == RR_AUTHENTICATION_NOT_SUCCESSFUL, "PIN len -> auth");
	CHECK(p11_rv_reason(CKR_USER_NOT_LOGGED_IN) == RR_AUTHENTICATION_NOT_SUCCESSFUL, "not logged in");
	/* NetHSM answers a password it does not take with CKR_USER_TYPE_INVALID (nethsm-pkcs11
	 * LoginError::UserNotPresent). */
	CHECK(p11_rv_reason(CKR_USER_TYPE_INVALID) == RR_AUTHENTICATION_NOT_SUCCESSFUL,
	      "user type invalid -> auth");
	CHECK(p11_rv_reason(CKR_KEY_HANDLE_INVALID) == RR_ITEM_NOT_FOUND, "key handle -> not found");
	CHECK(p11_rv_reason(CKR_OBJECT_HANDLE_INVALID) == RR_ITEM_NOT_FOUND, "object handle");
	CHECK(p11_rv_reason(CKR_MECHANISM_INVALID) == RR_FEATURE_NOT_SUPPORTED, "mechanism");
	CHECK(p11_rv_reason(CKR_TEMPLATE_INCONSISTENT) == RR_INVALID_FIELD, "template");
	CHECK(p11_rv_reason(CKR_DATA_LEN_RANGE) == RR_INVALID_FIELD, "data length");
	CHECK(p11_rv_reason(CKR_KEY_FUNCTION_NOT_PERMITTED) == RR_PERMISSION_DENIED, "key function");
	CHECK(p11_rv_reason(CKR_DEVICE_ERROR) == RR_CRYPTOGRAPHIC_FAILURE, "device error");
	CHECK(p11_rv_reason(CKR_FUNCTION_FAILED) == RR_CRYPTOGRAPHIC_FAILURE, "function failed");
	CHECK(p11_rv_reason(CKR_DEVICE_MEMORY) == RR_GENERAL_FAILURE, "device memory");
	CHECK(p11_rv_reason(CKR_VENDOR_DEFINED + 5) == RR_GENERAL_FAILURE, "vendor -> general");
	CHECK(p11_rv_reason(0x777) == RR_GENERAL_FAILURE, "unknown -> general");
	CHECK(p11_rv_reason(P11_E_NO_SLOT) == RR_AUTHENTICATION_NOT_SUCCESSFUL, "no slot -> auth");
	CHECK(p11_rv_reason(P11_E_NOT_FOUND) == RR_ITEM_NOT_FOUND, "not found -> item not found");
	int dup = 0;
	for (size_t i = 0; i < ARRAY_LEN(p11_rv_table); i++)
		for (size_t j = i + 1; j < ARRAY_LEN(p11_rv_table); j++)
			dup += p11_rv_table[i].rv == p11_rv_table[j].rv;
	CHECK(dup == 0, "no CK_RV twice in the table");
	CHECK(ARRAY_LEN(p11_rv_table) == 97 + 5, "every 3.0 return value and ours: %zu rows",
	      ARRAY_LEN(p11_rv_table));
}

static void test_ecdsa_der(void)
{
	uint8_t rs[64], out[80];
	size_t n;

	memset(rs, 0x11, 64);
	n = p11_ecdsa_der(rs, 64, out, sizeof out);
	CHECK(n == 70 && out[0] == 0x30 && out[1] == 68 && out[2] == 2 && out[3] == 32,
	      "plain r and s: 32-byte INTEGERs");
	memset(rs, 0x80, 64);
	n = p11_ecdsa_der(rs, 64, out, sizeof out);
	CHECK(n == 72 && out[3] == 33 && out[4] == 0 && out[5] == 0x80, "high bit gets a 00");
	memset(rs, 0, 64);
	rs[31] = 5;
	rs[63] = 0x90;
	n = p11_ecdsa_der(rs, 64, out, sizeof out);
	static const uint8_t want[] = { 0x30, 0x07, 0x02, 0x01, 0x05, 0x02, 0x02, 0x00, 0x90 };
	CHECK(n == sizeof want && memcmp(out, want, n) == 0, "leading zeros stripped");
	memset(rs, 0, 64);
	n = p11_ecdsa_der(rs, 64, out, sizeof out);
	CHECK(n == 8 && out[3] == 1 && out[4] == 0, "zero stays one 00 byte");
	uint8_t big[132], bigout[150];
	memset(big, 0xFF, sizeof big);
	n = p11_ecdsa_der(big, 132, bigout, sizeof bigout);
	CHECK(n == 3 + 2 * 69 && bigout[1] == 0x81 && bigout[2] == 138 && der_minimal(bigout, n),
	      "P-521 size uses the long length form");
	CHECK(p11_ecdsa_der(rs, 63, out, sizeof out) == 0, "odd length refused");
	CHECK(p11_ecdsa_der(rs, 64, out, 7) == 0, "no room refused");
}

static void test_ec_point(void)
{
	const struct p11_alg *c = p11_curve_by_id(P11_CURVE_P256);
	uint8_t p[70];
	memset(p, 0x3F, sizeof p);
	p[0] = 0x04;
	p[1] = 0x3F;  /* a bare point whose X starts like an OCTET STRING length would */
	CHECK(p11_ec_point_unwrap(p, 65, c) == 65 && p[1] == 0x3F, "bare point kept");
	p[0] = 0x04; p[1] = 0x41; p[2] = 0x04;
	CHECK(p11_ec_point_unwrap(p, 67, c) == 65 && p[0] == 0x04, "wrapped point unwrapped");
	p[0] = 0x04; p[1] = 0x40;
	CHECK(p11_ec_point_unwrap(p, 66, c) == 0, "wrong length refused");
	CHECK(p11_curve_by_der(p11_name_ed25519, sizeof p11_name_ed25519)->curve ==
	      P11_CURVE_ED25519, "edwards25519 by name");
}

static void test_load_errors(void)
{
	char err[512];
	CK_RV rv;

	rv = p11_load("/nonexistent/libnothing.so", err, sizeof err);
	CHECK(rv == CKR_LIBRARY_LOAD_FAILED && strstr(err, "/nonexistent/libnothing.so: cannot load"),
	      "missing file: %s", err);
	rv = p11_load("/bin/sh", err, sizeof err);
	CHECK(rv != CKR_OK && strstr(err, "/bin/sh: "), "executable: %s", err);
	rv = p11_load("libc.so.6", err, sizeof err);
	CHECK(rv == CKR_LIBRARY_LOAD_FAILED && strstr(err, "libc.so.6: not a PKCS#11 module"),
	      "libc: %s", err);
	setenv("NULLP11_NULL", "C_Sign", 1);
	rv = p11_load(NULLP11, err, sizeof err);
	CHECK(rv == CKR_FUNCTION_NOT_SUPPORTED && strstr(err, "has no C_Sign"),
	      "missing function named: %s", err);
	unsetenv("NULLP11_NULL");
	CHECK(p11.dl == NULL, "nothing stays loaded after a failure");
}

static void test_nullp11(void)
{
	char err[512];
	struct p11_slot *s = NULL;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE pub, priv, o;
	uint8_t id[P11_ID_LEN], sig[600];
	size_t siglen;
	struct p11_key_info ki;

	CHECK(p11_load(NULLP11, err, sizeof err) == CKR_OK, "nullp11 loads: %s", err);
	if (!p11.dl)
		return;
	CHECK(p11.v3 == 1 && p11.fl->version.major == 3,
	      "a module with C_GetInterface is used through its Cryptoki 3.0 function list");
	wrap_module();
	CHECK(p11_slot_lookup("null", 4, &s) == CKR_OK && s && s->id == 1, "nullp11 by label");
	CHECK(p11_slot_lookup("1", 1, &s) == CKR_OK && s->id == 1, "nullp11 by slot ID");
	CHECK(p11_slot_lookup("0", 1, &s) == CKR_OK && s->id == 1, "nullp11 by index");
	CHECK(p11_slot_lookup("2", 1, &s) == P11_E_NO_SLOT, "nullp11 index out of range");
	CHECK(p11_slot_lookup("nul", 3, &s) == P11_E_NO_SLOT, "label prefix is no match");
	CHECK(p11_slot_lookup("null", 4, &s) == CKR_OK, "slot again");
	CHECK((s->mechs & P11_MBIT(EDDSA)) && (s->mechs & P11_MBIT(SHA256_RSA_PKCS)),
	      "mechanism cache filled");
	CHECK(p11_session_open(s, &h) == CKR_OK, "nullp11 session");
	login_calls = 0;
	CHECK(p11_auth(s, h, (const uint8_t *)"1234", 4) == CKR_OK && login_calls == 1,
	      "nullp11 login: one C_Login (%d)", login_calls);
	CHECK(p11_auth(s, h, (const uint8_t *)"9999", 4) == CKR_PIN_INCORRECT && login_calls == 1,
	      "nullp11 wrong PIN refused without a C_Login (%d)", login_calls);
	struct p11_keygen g = { CKK_RSA, 2048, 0, "p", "k", 1, 1, 1, 1 };
	CHECK(p11_generate(h, s, &g, id, &pub, &priv) == CKR_OK && pub == 1 && priv == 2,
	      "nullp11 RSA keygen");
	CHECK(p11_find_key(h, id, sizeof id, CKO_PRIVATE_KEY, &o) == CKR_OK && o == 2,
	      "nullp11 find by generated id");
	CHECK(p11_key_info(h, 1, &ki) == CKR_OK && ki.modulus_len == 256 && ki.bits == 2048 &&
	      ki.exponent_len == 3, "nullp11 RSA public attributes");
	CHECK(p11_sign(h, s, NULL, 2, CKK_RSA, P11_HASH_SHA256, (const uint8_t *)"x", 1, sig, sizeof sig,
	               &siglen) == CKR_OK && siglen == 256, "nullp11 RSA sign");
	CHECK(p11_key_info(h, 4, &ki) == CKR_OK && ki.curve == P11_CURVE_P256 &&
	      ki.ec_point_len == 65 && ki.ec_point[1] == 0x6B, "nullp11 EC point via public half");
	CHECK(p11_sign(h, s, NULL, 4, CKK_EC, P11_HASH_SHA256, (const uint8_t *)"x", 1, sig, sizeof sig,
	               &siglen) == CKR_OK && der_minimal(sig, siglen) && sig[3] == 31 &&
	      sig[4] == 0 && sig[5] == 0x81, "nullp11 ECDSA DER: zeros stripped, 00 added");
	p11_session_close(h);
	p11_unload();

	setenv("NULLP11_FAIL", "C_Sign=0x30,C_GenerateKeyPair=0x31", 1);
	CHECK(p11_load(NULLP11, err, sizeof err) == CKR_OK, "nullp11 loads with faults");
	unsetenv("NULLP11_FAIL");
	if (!p11.dl)
		return;
	CHECK(p11_slot_lookup("null", 4, &s) == CKR_OK && p11_session_open(s, &h) == CKR_OK,
	      "slot and session");
	CHECK(p11_auth(s, h, (const uint8_t *)"1234", 4) == CKR_OK, "login after reload");
	CK_RV rv = p11_sign(h, s, NULL, 2, CKK_RSA, P11_HASH_SHA256, (const uint8_t *)"x", 1, sig,
	                    sizeof sig, &siglen);
	CHECK(rv == CKR_DEVICE_ERROR && p11_rv_reason(rv) == RR_CRYPTOGRAPHIC_FAILURE,
	      "injected C_Sign fault: %s", p11_rv_name(rv));
	rv = p11_generate(h, s, &g, id, &pub, &priv);
	CHECK(rv == CKR_DEVICE_MEMORY, "injected C_GenerateKeyPair fault: %s", p11_rv_name(rv));
	p11_session_close(h);
	p11_unload();
}

static void test_sign_rsa(CK_SESSION_HANDLE h, struct p11_slot *s)
{
	struct p11_keygen g = { CKK_RSA, 2048, 0, "rsa-pub", "rsa-pri", 7, 7, 1, 1 };
	uint8_t id[P11_ID_LEN], sig[600], sig2[600];
	size_t n = 0, n2 = 0;
	CK_OBJECT_HANDLE pub, priv, o;
	struct p11_key_info ki, kpriv;
	const uint8_t data[] = "the RRset signing input";
	CK_RV rv;

	rv = p11_generate(h, s, &g, id, &pub, &priv);
	CHECK(rv == CKR_OK, "RSA-2048 generated: %s", p11_rv_name(rv));
	g.bits = 512;
	CHECK(p11_generate(h, s, &g, id, &o, &o) == P11_E_BAD_INPUT, "RSA-512 refused");
	g.bits = 2048;
	CHECK(p11_find_key(h, id, sizeof id, CKO_PUBLIC_KEY, &o) == CKR_OK && o == pub, "find pub");
	CHECK(p11_find_key(h, id, sizeof id, CKO_PRIVATE_KEY, &o) == CKR_OK && o == priv, "find priv");
	CHECK(p11_key_info(h, pub, &ki) == CKR_OK, "RSA public attributes read");
	CHECK(ki.cls == CKO_PUBLIC_KEY && ki.type == CKK_RSA && ki.bits == 2048 &&
	      ki.modulus_len == 256 && ki.exponent_len == 3 && ki.exponent[0] == 1 &&
	      ki.verify == 1 && ki.label_len == 7 && strcmp(ki.label, "rsa-pub") == 0 &&
	      ki.id_len == P11_ID_LEN && memcmp(ki.id, id, P11_ID_LEN) == 0,
	      "RSA public attributes as generated");
	CHECK(ki.gen_mech == CKM_RSA_PKCS_KEY_PAIR_GEN, "CKA_KEY_GEN_MECHANISM read");
	CHECK(p11_key_info(h, priv, &kpriv) == CKR_OK && kpriv.cls == CKO_PRIVATE_KEY &&
	      kpriv.sign == 1 && kpriv.modulus_len == 256 && strcmp(kpriv.label, "rsa-pri") == 0,
	      "RSA private attributes");
	/* CKA_DECRYPT is the token's default now (tpm2-pkcs11 ties it to VERIFY): not asked. */
	CK_BBOOL ext = 1, sens = 0;
	CK_ATTRIBUTE t[] = { P11_ATTR(CKA_EXTRACTABLE, &ext, 1), P11_ATTR(CKA_SENSITIVE, &sens, 1) };
	CHECK(p11.fl->C_GetAttributeValue(h, priv, t, 2) == CKR_OK && !ext && sens,
	      "private key: not extractable, sensitive");
	char hint[112];
	CHECK(p11_template_hint(CKR_ATTRIBUTE_VALUE_INVALID, &g, hint, sizeof hint) &&
	      strstr(hint, "CKA_MODULUS_BITS 2048"), "template hint names the modulus size");
	CHECK(p11_template_hint(CKR_ATTRIBUTE_TYPE_INVALID, &g, hint, sizeof hint) &&
	      strstr(hint, "CKA_SENSITIVE CKA_EXTRACTABLE CKA_LABEL"),
	      "template hint names the optional attributes");
	CHECK(p11_template_hint(CKR_GENERAL_ERROR, &g, hint, sizeof hint) &&
	      strstr(hint, "CKA_SIGN 1"), "template hint shows the booleans sent");
	CHECK(p11_template_hint(CKR_PIN_INCORRECT, &g, hint, sizeof hint) == NULL,
	      "no template hint for a code about something else");

	static const int hashes[] = { P11_HASH_SHA256, P11_HASH_SHA384, P11_HASH_SHA512 };
	for (size_t i = 0; i < ARRAY_LEN(hashes); i++) {
		uint32_t saved = s->mechs;
		rv = p11_sign(h, s, NULL, priv, CKK_RSA, hashes[i], data, sizeof data - 1, sig, sizeof sig, &n);
		CHECK(rv == CKR_OK && n == 256 && verify_rsa(&ki, hashes[i], data, sizeof data - 1, sig, n),
		      "RSA hash %d, token's combined mechanism: %s", hashes[i], p11_rv_name(rv));
		s->mechs &= ~(P11_MBIT(SHA256_RSA_PKCS) | P11_MBIT(SHA384_RSA_PKCS) |
		              P11_MBIT(SHA512_RSA_PKCS));
		rv = p11_sign(h, s, NULL, priv, CKK_RSA, hashes[i], data, sizeof data - 1, sig2, sizeof sig2, &n2);
		s->mechs = saved;
		CHECK(rv == CKR_OK && n2 == 256 &&
		      verify_rsa(&ki, hashes[i], data, sizeof data - 1, sig2, n2),
		      "RSA hash %d, software hash + CKM_RSA_PKCS: %s", hashes[i], p11_rv_name(rv));
		CHECK(n == n2 && memcmp(sig, sig2, n) == 0, "both RSA paths give the same signature");
	}
	CHECK(p11_sign(h, s, NULL, priv, CKK_RSA, P11_HASH_SHA256, data, 5, sig, 100, &n) ==
	      CKR_BUFFER_TOO_SMALL, "small output buffer reported");
	CHECK(p11_sign(h, s, NULL, priv, CKK_RSA, P11_HASH_SHA256, data, 5, sig, sizeof sig, &n) == CKR_OK,
	      "session usable after a short buffer");
	CHECK(p11_sign(h, s, NULL, priv, CKK_RSA, P11_HASH_NONE, data, 5, sig, sizeof sig, &n) ==
	      P11_E_UNSUPPORTED, "RSA without a hash refused");
	CHECK(p11_sign(h, s, NULL, pub, CKK_RSA, P11_HASH_SHA256, data, 5, sig, sizeof sig, &n) != CKR_OK,
	      "signing with the public key fails");

	CHECK(p11_set_label(h, pub, "renamed", 7) == CKR_OK && p11_key_info(h, pub, &ki) == CKR_OK &&
	      strcmp(ki.label, "renamed") == 0, "label set");
	CHECK(p11_destroy(h, priv) == CKR_OK && p11_destroy(h, pub) == CKR_OK, "RSA pair destroyed");
	CHECK(p11_find_key(h, id, sizeof id, CKO_PRIVATE_KEY, &o) == P11_E_NOT_FOUND &&
	      p11_find_key(h, id, sizeof id, CKO_PUBLIC_KEY, &o) == P11_E_NOT_FOUND,
	      "destroyed pair not found");
}

static void test_sign_ec(CK_SESSION_HANDLE h, struct p11_slot *s, int curve, int hash)
{
	struct p11_keygen g = { CKK_EC, 0, curve, "ec-pub", "ec-pri", 6, 6, 1, 1 };
	uint8_t id[P11_ID_LEN], sig[160];
	size_t n = 0;
	CK_OBJECT_HANDLE pub, priv;
	struct p11_key_info ki, kpriv;
	uint8_t data[64];
	size_t field = curve == P11_CURVE_P256 ? 32 : 48;
	CK_RV rv;

	rv = p11_generate(h, s, &g, id, &pub, &priv);
	CHECK(rv == CKR_OK, "EC curve %d generated: %s", curve, p11_rv_name(rv));
	if (rv != CKR_OK)
		return;
	CHECK(p11_key_info(h, pub, &ki) == CKR_OK && ki.type == CKK_EC && ki.curve == curve &&
	      ki.ec_point_len == 2 * field + 1 && ki.ec_point[0] == 0x04,
	      "EC public point unwrapped from its OCTET STRING");
	CHECK(p11_key_info(h, priv, &kpriv) == CKR_OK && kpriv.ec_point_len == ki.ec_point_len &&
	      memcmp(kpriv.ec_point, ki.ec_point, ki.ec_point_len) == 0,
	      "EC private key info takes the point from the public half");
	int ok = 1, minimal = 1, padded = 0;
	uint32_t saved = s->mechs;
	for (int i = 0; i < 200; i++) {
		if (i == 100)   /* second half: software hash + CKM_ECDSA */
			s->mechs &= ~(P11_MBIT(ECDSA_SHA256) | P11_MBIT(ECDSA_SHA384) |
			              P11_MBIT(ECDSA_SHA512));
		memset(data, i, sizeof data);
		rv = p11_sign(h, s, NULL, priv, CKK_EC, hash, data, sizeof data, sig, sizeof sig, &n);
		if (rv != CKR_OK || !verify_ecdsa(&ki, hash, data, sizeof data, sig, n)) {
			ok = 0;
			printf("  signature %d: %s\n", i, p11_rv_name(rv));
		}
		minimal &= der_minimal(sig, n);
		padded |= sig[4] == 0 || sig[5 + sig[3]] == 0 || sig[6 + sig[3]] == 0;
	}
	s->mechs = saved;
	CHECK(ok, "200 ECDSA signatures (curve %d) verify, both paths", curve);
	CHECK(minimal, "every ECDSA signature is minimal DER");
	CHECK(padded, "some INTEGER needed its 00 pad (coverage)");
	CHECK(p11_destroy(h, priv) == CKR_OK && p11_destroy(h, pub) == CKR_OK, "EC pair destroyed");
}

static void test_sign_ed25519(CK_SESSION_HANDLE h, struct p11_slot *s)
{
	struct p11_keygen g = { CKK_EC_EDWARDS, 0, P11_CURVE_ED25519, "ed-pub", "ed-pri", 6, 6, 1, 1 };
	uint8_t id[P11_ID_LEN], sig[80];
	size_t n = 0;
	CK_OBJECT_HANDLE pub, priv;
	struct p11_key_info ki;
	const uint8_t data[] = "ed25519 signing input";
	CK_RV rv;

	if (!(s->mechs & P11_MBIT(EC_EDWARDS_KEY_PAIR_GEN))) {
		SKIP("Ed25519: the token has no CKM_EC_EDWARDS_KEY_PAIR_GEN");
		return;
	}
	rv = p11_generate(h, s, &g, id, &pub, &priv);
	CHECK(rv == CKR_OK, "Ed25519 generated: %s", p11_rv_name(rv));
	if (rv != CKR_OK)
		return;
	CHECK(p11_key_info(h, pub, &ki) == CKR_OK && ki.type == CKK_EC_EDWARDS &&
	      ki.curve == P11_CURVE_ED25519 && ki.ec_point_len == 32, "Ed25519 public key read");
	rv = p11_sign(h, s, NULL, priv, CKK_EC_EDWARDS, P11_HASH_NONE, data, sizeof data - 1, sig,
	              sizeof sig, &n);
	CHECK(rv == CKR_OK && n == 64, "Ed25519 signed: %s", p11_rv_name(rv));
	CHECK(verify_ed25519(&ki, data, sizeof data - 1, sig, n), "Ed25519 signature verifies (openssl)");
	CHECK(p11_sign(h, s, NULL, priv, CKK_EC_EDWARDS, P11_HASH_SHA256, data, 3, sig, sizeof sig, &n) ==
	      P11_E_UNSUPPORTED, "EdDSA with a pre-hash refused");
	p11_destroy(h, priv);
	p11_destroy(h, pub);
}

static void test_softhsm(void)
{
	char err[512], num[32];
	struct p11_slot *s = NULL, *s2 = NULL;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE, h2 = CK_INVALID_HANDLE;
	CK_SLOT_ID all[16];
	CK_ULONG nall = 16;
	CK_RV rv;

	CHECK(make_token("k2ptest", "1234") == 0, "softhsm2-util made the token");
	CHECK(p11_load(SOFTHSM, err, sizeof err) == CKR_OK, "SoftHSM loads: %s", err);
	CHECK(p11.dl && p11.v3 == 0,
	      "a module with only C_GetFunctionList (SoftHSM 2.6) is used through it");
	if (!p11.dl)
		return;
	wrap_module();

	CHECK(p11_slot_lookup("k2ptest", 7, &s) == CKR_OK && s && strcmp(s->label, "k2ptest") == 0,
	      "slot by token label");
	if (!s)
		return;
	snprintf(num, sizeof num, "%lu", s->id);
	CHECK(p11_slot_lookup(num, strlen(num), &s2) == CKR_OK && s2 == s, "slot by slot ID %s", num);
	CHECK(p11.fl->C_GetSlotList(CK_FALSE, all, &nall) == CKR_OK && nall >= 1, "slot list");
	CHECK(p11_slot_lookup("0", 1, &s2) == CKR_OK && s2->id == all[0], "slot by index 0");
	CHECK(p11_slot_lookup("nosuchtoken", 11, &s2) == P11_E_NO_SLOT, "unknown username");
	CHECK(p11_slot_lookup("99", 2, &s2) == P11_E_NO_SLOT, "index out of range");
	CHECK(p11_slot_lookup("", 0, &s2) == P11_E_NO_SLOT, "empty username");
	CHECK(p11_slot_lookup("k2ptest ", 8, &s2) == P11_E_NO_SLOT, "trailing blank in username");
	printf("SoftHSM mechanisms: 0x%x\n", s->mechs);

	CHECK(p11_session_open(s, &h) == CKR_OK && p11_session_open(s, &h2) == CKR_OK, "sessions");
	login_calls = 0;
	rv = p11_auth(s, h, (const uint8_t *)"1111", 4);
	CHECK(rv == CKR_PIN_INCORRECT && login_calls == 1, "wrong PIN before login: token says no");
	rv = p11_auth(s, h, (const uint8_t *)"1234", 4);
	CHECK(rv == CKR_OK && login_calls == 2 && s->logged_in, "right PIN logs in");
	rv = p11_auth(s, h2, (const uint8_t *)"1234", 4);
	CHECK(rv == CKR_OK && login_calls == 2, "right PIN again: no C_Login");
	rv = p11_auth(s, h2, (const uint8_t *)"4321", 4);
	CHECK(rv == CKR_PIN_INCORRECT && login_calls == 2, "wrong PIN after login: refused, no C_Login");
	rv = p11_auth(s, h2, (const uint8_t *)"12345", 5);
	CHECK(rv == CKR_PIN_INCORRECT && login_calls == 2, "longer PIN with the right prefix refused");
	rv = p11_auth(s, h2, (const uint8_t *)"", 0);
	CHECK(rv == CKR_PIN_INCORRECT && login_calls == 2, "empty PIN refused");

	p11.fl->C_Logout(h);   /* the token forgets the login underneath us */
	rv = p11_auth(s, h2, (const uint8_t *)"1234", 4);
	CHECK(rv == CKR_OK && login_calls == 3, "logged out underneath: logs in again");

	s->logged_in = 0;      /* as if another login in this process had happened */
	wipe(s->pin_digest, sizeof s->pin_digest);
	rv = p11_auth(s, h, (const uint8_t *)"4321", 4);
	CHECK(rv == CKR_PIN_INCORRECT && login_calls == 4, "foreign login: wrong PIN checked by token");
	rv = p11_auth(s, h, (const uint8_t *)"1234", 4);
	CHECK(rv == CKR_OK && login_calls == 5 && s->logged_in, "then the right PIN logs in");

	uint8_t rnd[32] = { 0 }, zero[32] = { 0 };
	CHECK(p11_random(h, rnd, sizeof rnd) == CKR_OK && memcmp(rnd, zero, 32) != 0, "random bytes");

	test_sign_rsa(h, s);
	test_sign_ec(h, s, P11_CURVE_P256, P11_HASH_SHA256);
	test_sign_ec(h, s, P11_CURVE_P384, P11_HASH_SHA384);
	test_sign_ed25519(h, s);

	p11_session_close(h2);
	CK_SESSION_INFO si;
	rv = p11.fl->C_GetSessionInfo(h2, &si);
	CHECK(p11_session_lost(rv), "closed session detected: %s", p11_rv_name(rv));
	CHECK(!p11_session_lost(CKR_PIN_INCORRECT), "other errors are not a lost session");
	p11_session_close(h);
	p11_unload();
	CHECK(p11.dl == NULL && p11.nslots == 0, "unloaded");
}

int main(void)
{
	char cmd[300];

	log_state.level = LV_WARNING;
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_rv_table();
	test_ecdsa_der();
	test_ec_point();
	test_load_errors();
	test_nullp11();
	if (softhsm_wanted())
		test_softhsm();
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	run(cmd);
	return check_summary();
}
