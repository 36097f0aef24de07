/*
 * Section 7 (operations) through op_handle(), in-process, without TLS: whole Request
 * Messages in, whole Response Messages out, decoded and checked field by field.
 *
 *   - the main process loads SoftHSM2 (a token "optest", user PIN 1234, made in a temporary
 *     directory) and runs the OASIS vectors, Query, the error table of KMIP 1.2 section 11,
 *     batches, and the key life cycle with every signature verified by Mbed TLS (RSA,
 *     ECDSA) or the openssl CLI (Ed25519);
 *   - a forked child loads build/nullp11.so with NULLP11_FAIL set (nullp11 reads it when
 *     the module is loaded, at C_GetFunctionList) to check how CK_RV failures become Result
 *     Reasons.  PKCS#11 state is global, one module per process, hence the fork.  The child
 *     hands its counts back through a pipe; the last line is the sum of both.
 *
 * Run from the repository root (make build/nullp11.so build/test_op; build/test_op).  The
 * KMIP vectors are read from tests/vectors at run time.  SoftHSM2's own leaks are
 * suppressed below (the same list as tests/lsan.supp), so no LSAN_OPTIONS are needed.
 */
#include "../kmip2pkcs11.c"
#include "check.h"

#include <ctype.h>

#include <mbedtls/md.h>
#include <mbedtls/rsa.h>

#define VECTORS "tests/vectors/oasis-1.0-1.1"
#define USER "optest"
#define PIN "1234"

/* Allocations that SoftHSM2 and its OpenSSL keep after C_Finalize / dlclose are theirs
 * (tests/lsan.supp); nothing of ours is suppressed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libcrypto.so\nleak:libsofthsm2.so\n";
}

static char tmpdir[] = "/tmp/k2p-op-XXXXXX";
static struct op_env env;
static struct op_thread *th;

#include "p11test.h"
#include "kreq.h"

/* ---- building requests (tests/kreq.h), into one buffer ---- */

/* Not const: the nullp11 child points them at its token "null". */
static struct kreq_hdr H12 = { 1, 2, USER, PIN, -1, 0, 1 };     /* Cascade's Sign, Query */
static struct kreq_hdr H10 = { 1, 0, USER, PIN, -1, 0, 1 };     /* Cascade's other ops */

static uint8_t req_buf[16384];
static struct ttlv_enc req_e, *E = &req_e;

static void begin(struct kreq_hdr h)
{
	kreq_begin(E, req_buf, sizeof req_buf, &h);
}

static void item(uint32_t op, const char *bid)
{
	kreq_item(E, op, bid);
}

static void item_end(void)
{
	kreq_item_end(E);
}

/* ---- the response ---- */

static uint8_t resp[65536];
static size_t resp_len;
static struct ttlv resp_items[TTLV_MAX_ITEMS];
static struct ttlv_doc RD = { resp_items, 0, TTLV_MAX_ITEMS };
static int resp_ok;          /* the response decoded as a Response Message */

/* Every request, however broken, is answered with a Response Message that decodes. */
static void handle(const uint8_t *in, size_t n)
{
	resp_len = op_handle(th, in, n, resp, sizeof resp);
	resp_ok = resp_len > 0 && ttlv_decode(&RD, resp, resp_len, 0) == 0 &&
	          RD.it[0].tag == KT_RESPONSE_MESSAGE;
	if (!resp_ok)
		CHECK(0, "the answer to a %zu-byte request is a Response Message (%zu bytes that "
		      "do not decode)", n, resp_len);
}

/* Close the Request Message and hand it to op_handle. */
static void transmit(void)
{
	size_t n = kreq_end(E);
	if (n == 0) {
		CHECK(0, "the request fits the test's buffer of %zu bytes", sizeof req_buf);
		resp_ok = 0;
		return;
	}
	handle(req_buf, n);
}

static const struct ttlv *child(const struct ttlv *p, uint32_t tag)
{
	return p ? ttlv_find(&RD, p, tag) : NULL;
}

static const struct ttlv *nth(const struct ttlv *p, uint32_t tag, int n)
{
	if (!p || p->type != TT_STRUCT)
		return NULL;
	for (int i = p->child; i >= 0; i = RD.it[i].next)
		if (RD.it[i].tag == tag && n-- == 0)
			return &RD.it[i];
	return NULL;
}

static int count_of(const struct ttlv *p, uint32_t tag)
{
	int n = 0;
	while (nth(p, tag, n))
		n++;
	return n;
}

static const struct ttlv *r_header(void)
{
	return resp_ok ? child(&RD.it[0], KT_RESPONSE_HEADER) : NULL;
}

static const struct ttlv *r_item(int i)
{
	return resp_ok ? nth(&RD.it[0], KT_BATCH_ITEM, i) : NULL;
}

static int r_items(void)
{
	return resp_ok ? count_of(&RD.it[0], KT_BATCH_ITEM) : -1;
}

static int64_t num(const struct ttlv *t)
{
	return t ? t->num : -1;
}

/* Header fields: Batch Count; Protocol Version as major * 10 + minor. */
static int64_t r_batch_count(void)
{
	return num(child(r_header(), KT_BATCH_COUNT));
}

static int64_t r_version(void)
{
	const struct ttlv *v = child(r_header(), KT_PROTOCOL_VERSION);
	return v ? num(child(v, KT_PROTOCOL_VERSION_MAJOR)) * 10 +
	           num(child(v, KT_PROTOCOL_VERSION_MINOR)) : -1;
}

static int64_t r_op(int i) { return num(child(r_item(i), KT_OPERATION)); }
static int64_t r_status(int i) { return num(child(r_item(i), KT_RESULT_STATUS)); }
static int64_t r_reason(int i) { return num(child(r_item(i), KT_RESULT_REASON)); }
static const struct ttlv *r_payload(int i) { return child(r_item(i), KT_RESPONSE_PAYLOAD); }

/* A Text String as a C string (empty if absent), in one of four rotating buffers. */
static const char *str(const struct ttlv *t)
{
	static char buf[4][1024];
	static int k;
	char *s = buf[k++ & 3];
	size_t n = t && (t->type == TT_TEXT || t->type == TT_BYTES) ? t->len : 0;
	if (n >= sizeof buf[0])
		n = sizeof buf[0] - 1;
	if (n)
		memcpy(s, t->val, n);
	s[n] = '\0';
	return s;
}

static const char *r_msg(int i) { return str(child(r_item(i), KT_RESULT_MESSAGE)); }

/* Operation Failed with this reason, in item i. */
static int failed(int i, uint32_t reason)
{
	if (r_status(i) == RS_OPERATION_FAILED && r_reason(i) == reason)
		return 1;
	printf("  item %d: status %lld reason 0x%llx message '%s'\n", i, (long long)r_status(i),
	       (long long)r_reason(i), r_msg(i));
	return 0;
}

static int succeeded(int i)
{
	if (r_status(i) == RS_SUCCESS && !child(r_item(i), KT_RESULT_REASON))
		return 1;
	printf("  item %d: status %lld reason 0x%llx message '%s'\n", i, (long long)r_status(i),
	       (long long)r_reason(i), r_msg(i));
	return 0;
}

/* ---- one-item requests ---- */

static void one_uid(struct kreq_hdr h, uint32_t op, const char *uid)
{
	begin(h);
	item(op, NULL);
	if (uid)
		kreq_uid(E, uid);
	item_end();
	transmit();
}

static void get(const char *uid, uint32_t kft)
{
	begin(H10);
	item(OP_GET, NULL);
	kreq_uid(E, uid);
	if (kft)
		ttlv_put_enum(E, KT_KEY_FORMAT_TYPE, kft);
	item_end();
	transmit();
}

/* Sign: Cryptographic Parameters with the nonzero fields among hash, alg, pad, dsa (all
 * zero: no Cryptographic Parameters at all); data NULL: no Data. */
static void sign(const char *uid, uint32_t hash, uint32_t alg, uint32_t pad, uint32_t dsa,
                 const char *data)
{
	begin(H12);
	item(OP_SIGN, NULL);
	if (uid)
		kreq_uid(E, uid);
	if (hash || alg || pad || dsa)
		kreq_crypto_params(E, pad, hash, dsa, alg);
	if (data)
		ttlv_put_bytes(E, KT_DATA, (const uint8_t *)data, strlen(data));
	item_end();
	transmit();
}

/* Create Key Pair as Cascade sends it: common Cryptographic Algorithm (and Length, and
 * Recommended Curve when nonzero), private Name + Usage Mask Sign, public Name + Verify. */
static void ckp_request(struct kreq_hdr h, uint32_t alg, int32_t len, uint32_t curve,
                        const char *priv_name, const char *pub_name)
{
	begin(h);
	item(OP_CREATE_KEY_PAIR, NULL);
	kreq_create_key_pair(E, alg, len, curve, priv_name, pub_name);
	item_end();
}

/* Create a pair; the UIDs go to priv / pub (each 64 bytes or more).  0 on success. */
static int ckp(struct kreq_hdr h, uint32_t alg, int32_t len, const char *name, char *priv, char *pub)
{
	char pn[64], kn[64];
	snprintf(pn, sizeof pn, "%s-pub", name);
	snprintf(kn, sizeof kn, "%s-pri", name);
	ckp_request(h, alg, len, 0, kn, pn);
	transmit();
	snprintf(priv, 64, "%s", str(child(r_payload(0), KT_PRIVATE_KEY_UNIQUE_IDENTIFIER)));
	snprintf(pub, 64, "%s", str(child(r_payload(0), KT_PUBLIC_KEY_UNIQUE_IDENTIFIER)));
	return r_status(0) == RS_SUCCESS && priv[0] && pub[0] ? 0 : -1;
}

/* The Key Material of a Get response (Byte String or Structure), or NULL. */
static const struct ttlv *key_material(void)
{
	const struct ttlv *kb = child(child(r_payload(0), KT_PUBLIC_KEY), KT_KEY_BLOCK);
	return child(child(kb, KT_KEY_VALUE), KT_KEY_MATERIAL);
}

/* Get of uid in format (0: the default) succeeds with exactly want as its Key Material. */
static int got_key(const char *uid, uint32_t format, const uint8_t *want, size_t len)
{
	get(uid, format);
	const struct ttlv *km = key_material();
	return succeeded(0) && km && km->type == TT_BYTES && km->len == len && memcmp(km->val, want, len) == 0;
}

static int64_t key_block_field(uint32_t tag)
{
	return num(child(child(child(r_payload(0), KT_PUBLIC_KEY), KT_KEY_BLOCK), tag));
}

/* 40 upper-case hex digits and the suffix: the original's UID for a 20-byte CKA_ID. */
static int uid_shape(const char *uid, const char *suffix)
{
	size_t n = strlen(uid), k = strlen(suffix);
	if (n != 40 + k || strcmp(uid + 40, suffix) != 0)
		return 0;
	for (size_t i = 0; i < 40; i++)
		if (!strchr("0123456789ABCDEF", uid[i]))
			return 0;
	return 1;
}

/* A vector file's hex into a malloc'ed buffer; NULL if it cannot be read. */
static uint8_t *read_vector(const char *name, size_t *len)
{
	char path[512], *hex;
	long n;
	snprintf(path, sizeof path, "%s/%s", VECTORS, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	hex = malloc((size_t)n + 1);
	uint8_t *b = malloc((size_t)n / 2 + 1);
	size_t k = hex ? fread(hex, 1, (size_t)n, f) : 0;
	fclose(f);
	while (k > 0 && (hex[k - 1] == '\n' || hex[k - 1] == '\r' || hex[k - 1] == ' '))
		k--;
	int got = hex && b ? hex_parse(b, (size_t)n / 2 + 1, hex, k) : -1;
	free(hex);
	if (got <= 0) {
		free(b);
		return NULL;
	}
	*len = (size_t)got;
	return b;
}

/* ---- verification with Mbed TLS ---- */

/* Verify with a public key given as DER (PKCS#1 or SubjectPublicKeyInfo). */
static int pk_verify(const uint8_t *der, size_t derlen, mbedtls_md_type_t md,
                     const char *data, const uint8_t *sig, size_t siglen)
{
	mbedtls_pk_context pk;
	uint8_t h[64];
	const mbedtls_md_info_t *mi = mbedtls_md_info_from_type(md);
	int ok;

	mbedtls_pk_init(&pk);
	ok = mi && mbedtls_md(mi, (const uint8_t *)data, strlen(data), h) == 0 &&
	     mbedtls_pk_parse_public_key(&pk, der, derlen) == 0 &&
	     mbedtls_pk_verify(&pk, md, h, mbedtls_md_get_size(mi), sig, siglen) == 0;
	mbedtls_pk_free(&pk);
	return ok;
}

/* 1 if der is exactly one SubjectPublicKeyInfo of this pk type. */
static int is_spki(const uint8_t *der, size_t n, mbedtls_pk_type_t type)
{
	mbedtls_pk_context pk;
	unsigned char *p = (unsigned char *)der;
	int ok;

	mbedtls_pk_init(&pk);
	ok = mbedtls_pk_parse_subpubkey(&p, p + n, &pk) == 0 && p == der + n &&
	     mbedtls_pk_get_type(&pk) == type;
	mbedtls_pk_free(&pk);
	return ok;
}

/* ==== OASIS vectors: Discover Versions, test case 16.1 ==== */

/* Offset of the Time Stamp's value in a decoded response, or 0. */
static size_t time_stamp_at(const struct ttlv_doc *d, const uint8_t *base)
{
	for (int i = 0; i < d->n; i++)
		if (d->it[i].tag == KT_TIME_STAMP && d->it[i].depth == 2)
			return (size_t)(d->it[i].val - base);
	return 0;
}

/*
 * Feed the request vector; compare the response with the expected vector byte for byte,
 * the Time Stamp's 8 value bytes taken from the expected file.  If add12 is set, the
 * expected payload first gets a Protocol Version 1.2 in front (see test_vectors).
 */
static void vector_pair(const char *req_name, const char *resp_name, int add12)
{
	static struct ttlv exp_items[256];
	struct ttlv_doc ed = { exp_items, 0, 256 };
	size_t rn = 0, en = 0;
	uint8_t *rq = read_vector(req_name, &rn), *ex = read_vector(resp_name, &en);

	CHECK(rq && ex, "vectors %s and %s readable from %s", req_name, resp_name, VECTORS);
	if (!rq || !ex)
		goto out;
	if (add12) {
		/* 40 bytes: Protocol Version { Major 1, Minor 2 }; lengths of the Response
		 * Message, Batch Item and Response Payload grow by as much. */
		static const uint8_t v12[] = {
			0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20,
			0x42, 0x00, 0x6A, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0,
			0x42, 0x00, 0x6B, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 2, 0, 0, 0, 0 };
		uint8_t *big = malloc(en + sizeof v12);
		CHECK(ttlv_decode(&ed, ex, en, 0) == 0, "expected vector decodes");
		const struct ttlv *bi = NULL, *pl = NULL;
		for (int i = 0; i < ed.n; i++) {
			if (ed.it[i].tag == KT_BATCH_ITEM) bi = &ed.it[i];
			if (ed.it[i].tag == KT_RESPONSE_PAYLOAD) pl = &ed.it[i];
		}
		if (!big || !bi || !pl) {
			free(big);
			goto out;
		}
		size_t at = (size_t)(pl->val - ex), bi_len = (size_t)(bi->val - ex) - 4,
		       pl_len = at - 4;
		memcpy(big, ex, at);
		memcpy(big + at, v12, sizeof v12);
		memcpy(big + at + sizeof v12, ex + at, en - at);
		buf_put_be32(big + 4, buf_be32(big + 4) + sizeof v12);
		buf_put_be32(big + bi_len, buf_be32(big + bi_len) + sizeof v12);
		buf_put_be32(big + pl_len, buf_be32(big + pl_len) + sizeof v12);
		free(ex);
		ex = big;
		en += sizeof v12;
	}
	CHECK(ttlv_decode(&ed, ex, en, 0) == 0, "expected response decodes");
	handle(rq, rn);
	size_t ours = resp_ok ? time_stamp_at(&RD, resp) : 0, theirs = time_stamp_at(&ed, ex);
	int64_t ts = ours ? (int64_t)buf_be64(resp + ours) : 0;
	CHECK(ours && theirs && ts >= (int64_t)time(NULL) - 5 && ts <= (int64_t)time(NULL) + 5,
	      "%s: a Time Stamp of now", resp_name);
	if (ours && theirs)
		memcpy(resp + ours, ex + theirs, 8);
	int same = resp_len == en && memcmp(resp, ex, en) == 0;
	CHECK(same, "%s: response byte for byte%s", resp_name, add12 ? " (with 1.2 added)" : "");
	if (!same) {
		printf("  ours:     ");
		for (size_t i = 0; i < resp_len; i++) printf("%02X", resp[i]);
		printf("\n  expected: ");
		for (size_t i = 0; i < en; i++) printf("%02X", ex[i]);
		printf("\n");
	}
out:
	free(rq);
	free(ex);
}

/* Protocol Versions of a Discover Versions answer as "1.1,1.0". */
static const char *versions(void)
{
	static char s[128];
	const struct ttlv *pl = r_payload(0), *v;
	s[0] = '\0';
	for (int i = 0; (v = nth(pl, KT_PROTOCOL_VERSION, i)); i++)
		snprintf(s + strlen(s), sizeof s - strlen(s), "%s%lld.%lld", i ? "," : "",
		         (long long)num(child(v, KT_PROTOCOL_VERSION_MAJOR)),
		         (long long)num(child(v, KT_PROTOCOL_VERSION_MINOR)));
	return s;
}

static void discover(struct kreq_hdr h, const int *minors, int n)
{
	begin(h);
	item(OP_DISCOVER_VERSIONS, NULL);
	for (int i = 0; i < n; i++)
		kreq_version(E, minors[i] / 100, minors[i] % 100);
	item_end();
	transmit();
}

/*
 * OASIS KMIP Test Cases 1.1, 16.1 (Discover Versions), four request/response pairs, sent
 * by a 1.1 client.  The server speaks 1.2, 1.1 and 1.0 and answers in the request's
 * version (1.1 here), so:
 *   time 1 (list {1.0}), time 2 ({1.1}), time 3 ({9.31}, empty answer): byte for byte;
 *   time 0 (no list): OASIS's 1.1 server answers {1.1, 1.0}; ours lists every version it
 *   speaks, newest first, {1.2, 1.1, 1.0} (spec 4.26), so the expected bytes get a
 *   Protocol Version 1.2 in front and are compared byte for byte after that.
 * Then the overlap logic with lists built here.
 */
static void test_vectors(void)
{
	vector_pair("kmip_1_1_testcase_16_1_time_0_discover_versions_no_versions_provided_request.req.hex",
	            "kmip_1_1_testcase_16_1_time_0_discover_versions_v11_v10_response.resp.hex", 1);
	vector_pair("kmip_1_1_testcase_16_1_time_1_discover_versionswith_v10_request.req.hex",
	            "kmip_1_1_testcase_16_1_time_1_discover_versions_v10_response.resp.hex", 0);
	vector_pair("kmip_1_1_testcase_16_1_time_2_discover_versions_with_v11_request.req.hex",
	            "kmip_1_1_testcase_16_1_time_2_discover_versions_v11_response.resp.hex", 0);
	vector_pair("kmip_1_1_testcase_16_1_time_3_discover_versions_with_v931_request.req.hex",
	            "kmip_1_1_testcase_16_1_time_3_discover_versions_no_versions_response.resp.hex", 0);

	struct kreq_hdr anon = { 1, 2, NULL, NULL, -1, 0, 1 };
	static const int v11_v10[] = { 101, 100 }, v931[] = { 931 }, v10_v12[] = { 100, 102 },
	                 v13_v12[] = { 103, 102 }, v20_v11[] = { 200, 101 };
	discover(anon, v11_v10, 2);
	CHECK(succeeded(0) && strcmp(versions(), "1.1,1.0") == 0,
	      "Discover Versions {1.1, 1.0} -> {1.1, 1.0}: %s", versions());
	discover(anon, v931, 1);
	CHECK(succeeded(0) && r_payload(0) && r_payload(0)->len == 0,
	      "Discover Versions {9.31} -> empty payload, Success");
	discover(anon, NULL, 0);
	CHECK(succeeded(0) && strcmp(versions(), "1.2,1.1,1.0") == 0,
	      "Discover Versions with no list -> {1.2, 1.1, 1.0}: %s", versions());
	discover(anon, v10_v12, 2);
	CHECK(strcmp(versions(), "1.0,1.2") == 0, "overlap in the client's order {1.0, 1.2}: %s",
	      versions());
	discover(anon, v13_v12, 2);
	CHECK(strcmp(versions(), "1.2") == 0, "{1.3, 1.2} -> {1.2}: %s", versions());
	discover(anon, v20_v11, 2);
	CHECK(strcmp(versions(), "1.1") == 0, "{2.0, 1.1} -> {1.1}: %s", versions());
	discover(anon, v11_v10, 2);
	CHECK(r_version() == 12 && r_op(0) == OP_DISCOVER_VERSIONS,
	      "answered in the request's version 1.2, Operation echoed");
}

/* ==== Query ==== */

static void query(struct kreq_hdr h, int ops, int objs, int info)
{
	begin(h);
	item(OP_QUERY, NULL);
	if (ops)
		ttlv_put_enum(E, KT_QUERY_FUNCTION, QF_QUERY_OPERATIONS);
	if (objs)
		ttlv_put_enum(E, KT_QUERY_FUNCTION, QF_QUERY_OBJECTS);
	if (info)
		ttlv_put_enum(E, KT_QUERY_FUNCTION, QF_QUERY_SERVER_INFORMATION);
	item_end();
	transmit();
}

static void test_query(void)
{
	/* Cascade's `cascade hsm add`: operations, objects, server information; 1.2. */
	query(H12, 1, 1, 1);
	const struct ttlv *pl = r_payload(0);
	CHECK(succeeded(0) && r_op(0) == OP_QUERY, "Query succeeds with the Operation echoed");
	int all = 1;
	for (size_t i = 0; i < ARRAY_LEN(op_defs); i++) {
		int found = 0;
		for (int k = 0; nth(pl, KT_OPERATION, k); k++)
			found |= nth(pl, KT_OPERATION, k)->num == op_defs[i].op;
		if (!found) {
			all = 0;
			printf("  operation %s not listed\n", kmip_enum_name(KT_OPERATION, op_defs[i].op));
		}
	}
	CHECK(all && count_of(pl, KT_OPERATION) == (int)ARRAY_LEN(op_defs),
	      "Query Operations lists every operation of the table, once: %d", count_of(pl, KT_OPERATION));
	CHECK(count_of(pl, KT_OBJECT_TYPE) == 2 && nth(pl, KT_OBJECT_TYPE, 0)->num == OT_PUBLIC_KEY &&
	      nth(pl, KT_OBJECT_TYPE, 1)->num == OT_PRIVATE_KEY,
	      "Query Objects lists Public Key and Private Key");
	const char *vi = str(child(pl, KT_VENDOR_IDENTIFICATION));
	CHECK(strstr(vi, "kmip2pkcs11 " K2P_VERSION) && strstr(vi, "token: 'optest'") &&
	      strstr(vi, "SoftHSM") && env.module[0] && strstr(vi, env.module),
	      "Vendor Identification names daemon, version, token and module: '%s'", vi);
	CHECK(r_version() == 12, "Query answered in 1.2");

	struct kreq_hdr anon = { 1, 2, NULL, NULL, -1, 0, 1 };
	query(anon, 0, 0, 1);
	vi = str(child(r_payload(0), KT_VENDOR_IDENTIFICATION));
	CHECK(succeeded(0) && strstr(vi, "kmip2pkcs11 " K2P_VERSION) && !strstr(vi, "token:"),
	      "Query without a credential: no token in the Vendor Identification: '%s'", vi);

	struct kreq_hdr badpin = { 1, 2, USER, "0000", -1, 0, 1 };
	login_calls = 0;
	query(badpin, 1, 0, 0);
	CHECK(succeeded(0) && login_calls == 0, "Query needs no login: a wrong PIN does not matter");

	query(H12, 1, 0, 0);
	CHECK(count_of(r_payload(0), KT_OBJECT_TYPE) == 0 &&
	      !child(r_payload(0), KT_VENDOR_IDENTIFICATION),
	      "Query Operations alone: nothing else in the payload");
}

/* ==== errors, KMIP 1.2 section 11 ==== */

/* A message-level refusal: header (version as given) and one item without Operation. */
static int message_refused(uint32_t reason, int64_t version)
{
	return resp_ok && r_batch_count() == 1 && r_items() == 1 && r_op(0) == -1 &&
	       failed(0, reason) && r_version() == version;
}

static void test_message_errors(void)
{
	/* A Request Message whose only child has the tag 0x990000: not a KMIP tag. */
	static const uint8_t bad_tag[] = { 0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x10,
		0x99, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0 };
	handle(bad_tag, sizeof bad_tag);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12),
	      "undecodable message -> header + one item without Operation, Invalid Message");
	/* Cut short: Length says 0x60, 8 bytes follow. */
	static const uint8_t cut[] = { 0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x60,
		0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00, 0x58 };
	handle(cut, sizeof cut);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12), "truncated message -> Invalid Message");
	handle(cut, 3);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12), "three bytes -> Invalid Message");

	struct kreq_hdr v20 = { 2, 0, USER, PIN, -1, 0, 1 };
	query(v20, 1, 0, 0);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12),
	      "major version 2 -> Invalid Message, answered as 1.2, no Operation");
	struct kreq_hdr v0 = { 0, 9, USER, PIN, -1, 0, 1 };
	query(v0, 1, 0, 0);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12), "major version 0 -> Invalid Message");

	struct kreq_hdr v13 = { 1, 3, USER, PIN, -1, 0, 1 };
	query(v13, 1, 0, 0);
	CHECK(succeeded(0) && r_version() == 12, "minor version 1.3 -> served, answered as 1.2");

	struct kreq_hdr count2 = { 1, 2, USER, PIN, -1, 0, 2 };
	query(count2, 1, 0, 0);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12), "Batch Count 2 with one item -> Invalid Message");

	/* Response Message instead of a Request Message. */
	begin(H12);
	item(OP_QUERY, NULL);
	item_end();
	ttlv_close(E);
	req_buf[2] = 0x7B;
	handle(req_buf, E->len);
	CHECK(message_refused(RR_INVALID_MESSAGE, 12), "a Response Message as request -> Invalid Message");

	begin(H12);
	item(0x7F, NULL);
	item_end();
	transmit();
	CHECK(r_items() == 1 && r_op(0) == 0x7F && failed(0, RR_OPERATION_NOT_SUPPORTED),
	      "unknown operation 0x7F -> Operation Not Supported, Operation echoed");
	CHECK(!strstr(r_msg(0), "(null)"), "its Result Message names no NULL: '%s'", r_msg(0));

	begin(H12);
	item(OP_REKEY, NULL);
	item_end();
	transmit();
	CHECK(r_op(0) == OP_REKEY && failed(0, RR_OPERATION_NOT_SUPPORTED) &&
	      strstr(r_msg(0), "REKEY"), "Rekey -> Operation Not Supported: '%s'", r_msg(0));
}

static void test_auth_errors(void)
{
	static const char *unknown = "00112233445566778899AABBCCDDEEFF00112233_pub";

	struct kreq_hdr nocred = { 1, 0, NULL, NULL, -1, 0, 1 };
	one_uid(nocred, OP_GET, unknown);
	CHECK(r_op(0) == OP_GET && failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL),
	      "Get without a credential -> Authentication Not Successful");
	struct kreq_hdr nopass = { 1, 0, USER, NULL, -1, 0, 1 };
	one_uid(nopass, OP_GET, unknown);
	CHECK(failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL),
	      "Get with a Username and no Password -> Authentication Not Successful");

	one_uid(H10, OP_GET, unknown);
	CHECK(failed(0, RR_ITEM_NOT_FOUND),
	      "the right PIN is accepted (then Item Not Found for an unknown key)");
	login_calls = 0;
	one_uid(H10, OP_GET, unknown);
	CHECK(failed(0, RR_ITEM_NOT_FOUND) && login_calls == 0,
	      "the right PIN again: checked without another C_Login (%d)", login_calls);
	login_calls = 0;
	struct kreq_hdr wrong = { 1, 0, USER, "4321", -1, 0, 1 };
	one_uid(wrong, OP_GET, unknown);
	CHECK(failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL),
	      "wrong PIN after a right one -> Authentication Not Successful");
	CHECK(login_calls == 0, "... and no C_Login was made for it (%d)", login_calls);
	struct kreq_hdr prefix = { 1, 0, USER, "12345", -1, 0, 1 };
	one_uid(prefix, OP_GET, unknown);
	CHECK(failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL) && login_calls == 0,
	      "the right PIN with one more digit -> Authentication Not Successful, no C_Login");
	struct kreq_hdr empty = { 1, 0, USER, "", -1, 0, 1 };
	one_uid(empty, OP_GET, unknown);
	CHECK(failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL) && login_calls == 0,
	      "empty PIN -> Authentication Not Successful, no C_Login");
	struct kreq_hdr nouser = { 1, 0, "nosuchtoken", PIN, -1, 0, 1 };
	one_uid(nouser, OP_GET, unknown);
	CHECK(failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL),
	      "unknown username -> Authentication Not Successful");
	struct kreq_hdr blank = { 1, 0, "", PIN, -1, 0, 1 };
	one_uid(blank, OP_GET, unknown);
	CHECK(failed(0, RR_AUTHENTICATION_NOT_SUCCESSFUL),
	      "empty username -> Authentication Not Successful");
	char slot[32];
	struct p11_slot *s = NULL;
	if (p11_slot_lookup(USER, strlen(USER), &s) == CKR_OK) {
		snprintf(slot, sizeof slot, "%lu", s->id);
		struct kreq_hdr byid = { 1, 0, slot, PIN, -1, 0, 1 };
		one_uid(byid, OP_GET, unknown);
		CHECK(failed(0, RR_ITEM_NOT_FOUND), "username = slot ID %s -> served", slot);
	}
}

static void test_uid_errors(void)
{
	char overlong[400];
	memset(overlong, 'A', sizeof overlong - 5);
	strcpy(overlong + sizeof overlong - 5, "_pub");
	const char *bad[] = {
		"00000000000000000000000000000000000000AA_pub",    /* unknown */
		"00000000000000000000000000000000000000AA_priv",
		"XYZ_pub", "XYZ_priv",                              /* not hex */
		"0_pub",                                            /* odd hex */
		"",                                                 /* empty */
		"_pub", "_priv",                                    /* suffix only */
		overlong,                                           /* 399 characters */
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const char *shown = strlen(bad[i]) > 50 ? "(overlong)" : bad[i];
		one_uid(H10, OP_GET, bad[i]);
		CHECK(failed(0, RR_ITEM_NOT_FOUND), "Get '%s' -> Item Not Found", shown);
		sign(bad[i], HASH_SHA_256, 0, 0, 0, "data");
		CHECK(failed(0, RR_ITEM_NOT_FOUND), "Sign '%s' -> Item Not Found", shown);
		one_uid(H10, OP_DESTROY, bad[i]);
		CHECK(failed(0, RR_ITEM_NOT_FOUND), "Destroy '%s' -> Item Not Found", shown);
		one_uid(H10, OP_ACTIVATE, bad[i]);
		CHECK(failed(0, RR_ITEM_NOT_FOUND), "Activate '%s' -> Item Not Found", shown);
	}
	/* A Unique Identifier that is not a Text String. */
	begin(H10);
	item(OP_GET, NULL);
	ttlv_put_bytes(E, KT_UNIQUE_IDENTIFIER, (const uint8_t *)"AB", 2);
	item_end();
	transmit();
	CHECK(failed(0, RR_INVALID_MESSAGE), "Unique Identifier as a Byte String -> Invalid Message");
	one_uid(H10, OP_GET, NULL);
	CHECK(failed(0, RR_MISSING_DATA), "Get with no UID and no ID Placeholder -> Missing Data");
}

static void test_ckp_errors(void)
{
	ckp_request(H10, 0, 2048, 0, "x-pri", "x-pub");
	transmit();
	CHECK(r_op(0) == OP_CREATE_KEY_PAIR && failed(0, RR_INVALID_MESSAGE),
	      "Create Key Pair without Cryptographic Algorithm -> Invalid Message");
	ckp_request(H10, ALG_RSA, 512, 0, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "RSA length 512 -> Invalid Field");
	ckp_request(H10, ALG_RSA, 8192, 0, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "RSA length 8192 -> Invalid Field");
	ckp_request(H10, ALG_RSA, 0, 0, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "RSA without a length -> Invalid Field");
	ckp_request(H10, ALG_ECDSA, 224, 0, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "ECDSA length 224 -> Invalid Field");
	ckp_request(H10, ALG_ECDSA, 256, CURVE_P_384, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "length 256 with curve P-384 -> Invalid Field");
	ckp_request(H10, ALG_AES, 256, 0, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "AES key pair -> Invalid Field");
	CHECK(!strstr(r_msg(0), "(null)"), "its Result Message names the algorithm: '%s'", r_msg(0));
	ckp_request(H10, 0x99, 256, 0, "x-pri", "x-pub");
	transmit();
	CHECK(failed(0, RR_INVALID_FIELD), "unknown algorithm 0x99 -> Invalid Field");
	CHECK(!strstr(r_msg(0), "(null)"), "its Result Message names no NULL: '%s'", r_msg(0));
}

/* ==== batches ==== */

static void test_batches(void)
{
	static const char *unknown = "00000000000000000000000000000000000000AA_pub";

	struct kreq_hdr two = { 1, 2, USER, PIN, -1, 0, 2 };
	begin(two);
	item(OP_QUERY, "A1");
	ttlv_put_enum(E, KT_QUERY_FUNCTION, QF_QUERY_OBJECTS);
	item_end();
	item(OP_DISCOVER_VERSIONS, "B2");
	item_end();
	transmit();
	CHECK(r_batch_count() == 2 && r_items() == 2 && succeeded(0) && succeeded(1) &&
	      r_op(0) == OP_QUERY && r_op(1) == OP_DISCOVER_VERSIONS &&
	      strcmp(str(child(r_item(0), KT_UNIQUE_BATCH_ITEM_ID)), "A1") == 0 &&
	      strcmp(str(child(r_item(1), KT_UNIQUE_BATCH_ITEM_ID)), "B2") == 0,
	      "two items with IDs: both answered in order, IDs and Operations echoed");

	begin(two);
	item(OP_QUERY, "A1");
	item_end();
	item(OP_QUERY, NULL);
	item_end();
	transmit();
	CHECK(message_refused(RR_INVALID_MESSAGE, 12),
	      "two items, one without Unique Batch Item ID -> Invalid Message");

	/* Batch Error Continuation: a failing Get, then a Query. */
	for (int k = 0; k < 3; k++) {
		uint32_t bec = k == 0 ? 0 : k == 1 ? BEC_STOP : BEC_CONTINUE;
		struct kreq_hdr h = { 1, 2, USER, PIN, -1, bec, 2 };
		begin(h);
		item(OP_GET, "g");
		kreq_uid(E, unknown);
		item_end();
		item(OP_QUERY, "q");
		ttlv_put_enum(E, KT_QUERY_FUNCTION, QF_QUERY_OBJECTS);
		item_end();
		transmit();
		if (bec == BEC_CONTINUE)
			CHECK(r_batch_count() == 2 && r_items() == 2 && failed(0, RR_ITEM_NOT_FOUND) &&
			      succeeded(1) && strcmp(str(child(r_item(0), KT_UNIQUE_BATCH_ITEM_ID)), "g") == 0,
			      "Continue: the item after a failed one is answered");
		else
			CHECK(r_batch_count() == 1 && r_items() == 1 && failed(0, RR_ITEM_NOT_FOUND) &&
			      r_op(0) == OP_GET && strcmp(str(child(r_item(0), KT_UNIQUE_BATCH_ITEM_ID)), "g") == 0,
			      "%s: only the failed item is answered, Batch Count 1",
			      bec ? "Stop" : "no option (Stop by default)");
	}

	/* ID Placeholder: Create Key Pair, then Activate and Get Attributes without UID. */
	struct kreq_hdr four = { 1, 0, USER, PIN, -1, 0, 4 };
	begin(four);
	item(OP_CREATE_KEY_PAIR, "1");
	ttlv_open(E, KT_COMMON_TEMPLATE_ATTRIBUTE);
	kreq_attr_enum(E, "Cryptographic Algorithm", ALG_ECDSA);
	kreq_attr_int(E, "Cryptographic Length", 256);
	ttlv_close(E);
	item_end();
	item(OP_ACTIVATE, "2");
	item_end();
	item(OP_GET_ATTRIBUTES, "3");
	ttlv_put_text(E, KT_ATTRIBUTE_NAME, "Object Type", 11);
	item_end();
	item(OP_GET, "4");
	item_end();
	transmit();
	char priv[64], pub[64];
	snprintf(priv, sizeof priv, "%s", str(child(r_payload(0), KT_PRIVATE_KEY_UNIQUE_IDENTIFIER)));
	snprintf(pub, sizeof pub, "%s", str(child(r_payload(0), KT_PUBLIC_KEY_UNIQUE_IDENTIFIER)));
	CHECK(succeeded(0) && uid_shape(priv, "_priv") && uid_shape(pub, "_pub") &&
	      memcmp(priv, pub, 40) == 0, "batch: Create Key Pair gives %s / %s", priv, pub);
	CHECK(succeeded(1) && strcmp(str(child(r_payload(1), KT_UNIQUE_IDENTIFIER)), priv) == 0,
	      "ID Placeholder: Activate without UID acts on the created private key");
	const struct ttlv *a = child(r_payload(2), KT_ATTRIBUTE);
	CHECK(succeeded(2) && strcmp(str(child(r_payload(2), KT_UNIQUE_IDENTIFIER)), priv) == 0 &&
	      num(child(a, KT_ATTRIBUTE_VALUE)) == OT_PRIVATE_KEY,
	      "ID Placeholder: Get Attributes without UID: the private key's Object Type");
	CHECK(failed(3, RR_PERMISSION_DENIED) && r_batch_count() == 4,
	      "ID Placeholder: Get without UID is the private key: Permission Denied");

	one_uid(H10, OP_ACTIVATE, NULL);
	CHECK(failed(0, RR_MISSING_DATA),
	      "the ID Placeholder does not leak into the next request: Missing Data");

	one_uid(H10, OP_DESTROY, priv);
	CHECK(succeeded(0), "batch key: private half destroyed");
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "batch key: public half destroyed");

	/* Maximum Response Size, as OASIS use case 12.1: a Query that does not fit 256. */
	struct kreq_hdr small = { 1, 2, USER, PIN, 256, 0, 1 };
	query(small, 1, 1, 1);
	CHECK(message_refused(RR_RESPONSE_TOO_LARGE, 12) && resp_len <= 256,
	      "Maximum Response Size 256 < the Query answer -> Response Too Large (%zu bytes)",
	      resp_len);
	struct kreq_hdr big = { 1, 2, USER, PIN, 4096, 0, 1 };
	query(big, 1, 1, 1);
	CHECK(succeeded(0), "Maximum Response Size 4096 -> the Query answer");
	struct kreq_hdr v10small = { 1, 0, USER, PIN, 100, 0, 1 };
	query(v10small, 1, 1, 1);
	CHECK(message_refused(RR_RESPONSE_TOO_LARGE, 10),
	      "Response Too Large is answered in the request's version 1.0");
}

/* ==== answers that do not fit the response buffer ==== */

/*
 * Ten Gets of an RSA-2048 public key in Transparent form (about 330 bytes each), then a Get
 * of an unknown UID, Continue: answered into buffers of every size from the smallest
 * error answer to the whole.  Each answer must decode as a Response Message whose Batch
 * Count is its number of items; either all eleven items in order (each a Get answer or
 * Response Too Large, the last Item Not Found), or one message-level Response Too Large
 * when not even a failure item fits.
 */
static void gets_batch(uint32_t bec, const char *pub, const char *unknown)
{
	struct kreq_hdr h = { 1, 2, USER, PIN, -1, bec, 11 };
	begin(h);
	for (int i = 0; i < 11; i++) {
		char bid[12];
		snprintf(bid, sizeof bid, "%d", i);
		item(OP_GET, bid);
		kreq_uid(E, i < 10 ? pub : unknown);
		ttlv_put_enum(E, KT_KEY_FORMAT_TYPE, KFT_TRANSPARENT_RSA_PUBLIC_KEY);
		item_end();
	}
	ttlv_close(E);
}

static void test_response_sizes(void)
{
	static const char *unknown = "00000000000000000000000000000000000000AB_pub";
	char priv[64], pub[64];
	uint8_t req[8192];
	size_t req_len;
	static uint8_t out[8192];

	int made = ckp(H10, ALG_RSA, 2048, "sizes", priv, pub) == 0;
	CHECK(made, "RSA-2048 pair for the size test");
	if (!made)
		return;
	gets_batch(BEC_CONTINUE, pub, unknown);
	req_len = E->len;
	memcpy(req, req_buf, req_len);

	size_t whole = op_handle(th, req, req_len, out, sizeof out);
	int sizes = 0, well_formed = 0, per_item = 0, msg_level = 0, partial = 0;
	for (size_t cap = 64; cap <= whole + 8; cap += cap < 600 ? 8 : 4) {
		size_t n = op_handle(th, req, req_len, out, cap);
		sizes++;
		memcpy(resp, out, n);
		resp_len = n;
		resp_ok = n > 0 && n <= cap && ttlv_decode(&RD, resp, n, 0) == 0 &&
			  RD.it[0].tag == KT_RESPONSE_MESSAGE;
		if (!resp_ok) {
			if (n == 0 && cap < 200)
				well_formed++;  /* not even an error answer fits: nothing sent */
			else
				printf("  cap %zu: %zu bytes, not a Response Message\n", cap, n);
			continue;
		}
		int items = r_items();
		if (items != r_batch_count()) {
			printf("  cap %zu: Batch Count %lld, %d items\n", cap,
			       (long long)r_batch_count(), items);
			continue;
		}
		if (items == 1 && r_op(0) < 0 && r_reason(0) == RR_RESPONSE_TOO_LARGE) {
			msg_level++;
			well_formed++;
			continue;
		}
		int ok = items == 11;
		for (int i = 0; ok && i < 11; i++) {
			char bid[12];
			snprintf(bid, sizeof bid, "%d", i);
			ok = r_op(i) == OP_GET && strcmp(str(child(r_item(i), KT_UNIQUE_BATCH_ITEM_ID)), bid) == 0;
			if (ok && i == 10)
				ok = r_status(i) == RS_OPERATION_FAILED && r_reason(i) == RR_ITEM_NOT_FOUND;
			else if (ok && r_status(i) != RS_SUCCESS)
				ok = r_reason(i) == RR_RESPONSE_TOO_LARGE;
			else if (ok)
				ok = child(child(r_payload(i), KT_PUBLIC_KEY), KT_KEY_BLOCK) != NULL;
		}
		if (ok) {
			well_formed++;
			per_item++;
			partial += r_status(0) == RS_SUCCESS && r_status(9) != RS_SUCCESS;
		} else {
			printf("  cap %zu: items not as asked\n", cap);
		}
	}
	CHECK(whole > 3000 && whole < sizeof out, "the whole answer fits 8 KiB (%zu bytes)", whole);
	CHECK(well_formed == sizes, "%d of %d buffer sizes give a well-formed answer", well_formed, sizes);
	CHECK(partial > 500 && msg_level > 0,
	      "Response Too Large per item where some Gets fit (%d sizes), message-level where "
	      "no item fits (%d)", partial, msg_level);

	/* Stop: the first item that does not fit ends the batch */
	gets_batch(BEC_STOP, pub, unknown);
	resp_len = op_handle(th, req_buf, E->len, resp, 2000);
	resp_ok = resp_len > 0 && ttlv_decode(&RD, resp, resp_len, 0) == 0;
	int k = resp_ok ? r_items() : 0;
	CHECK(resp_ok && k > 1 && k < 11 && r_batch_count() == k && succeeded(0) &&
	      failed(k - 1, RR_RESPONSE_TOO_LARGE),
	      "Stop: %d items into 2000 bytes, the last one Response Too Large", k);

	one_uid(H10, OP_DESTROY, priv);
	CHECK(succeeded(0), "size test key: private half destroyed");
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "size test key: public half destroyed");
}

/* ==== key life cycle on SoftHSM ==== */

static void lifecycle_rsa(void)
{
	char priv[64], pub[64];
	const char *data = "example.org. 3600 IN DNSKEY ... the RRSIG signing input";

	CHECK(ckp(H10, ALG_RSA, 2048, "rsa", priv, pub) == 0, "Create Key Pair RSA-2048, header 1.0");
	CHECK(r_version() == 10 && r_op(0) == OP_CREATE_KEY_PAIR, "answered in 1.0, Operation echoed");
	CHECK(uid_shape(priv, "_priv") && uid_shape(pub, "_pub") && memcmp(priv, pub, 40) == 0,
	      "UIDs are the original's: 40 hex digits of one CKA_ID, _priv / _pub: %s", priv);

	/* Get, no Key Format Type: PKCS#1 RSAPublicKey. */
	get(pub, 0);
	const struct ttlv *km = key_material();
	uint8_t pkcs1[600];
	size_t pkcs1_len = km && km->type == TT_BYTES && km->len <= sizeof pkcs1 ? km->len : 0;
	if (pkcs1_len)
		memcpy(pkcs1, km->val, pkcs1_len);
	CHECK(succeeded(0) && num(child(r_payload(0), KT_OBJECT_TYPE)) == OT_PUBLIC_KEY &&
	      strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), pub) == 0,
	      "Get: Object Type Public Key and the UID");
	CHECK(key_block_field(KT_KEY_FORMAT_TYPE) == KFT_PKCS_1 &&
	      key_block_field(KT_CRYPTOGRAPHIC_ALGORITHM) == ALG_RSA &&
	      key_block_field(KT_CRYPTOGRAPHIC_LENGTH) == 2048,
	      "Get RSA default: PKCS#1, RSA, 2048");
	static const uint8_t pkcs1_head[] = { 0x30, 0x82, 0x01, 0x0A, 0x02, 0x82, 0x01, 0x01, 0x00 };
	mbedtls_pk_context pk;
	mbedtls_pk_init(&pk);
	CHECK(pkcs1_len == 270 && memcmp(pkcs1, pkcs1_head, sizeof pkcs1_head) == 0 &&
	      !is_spki(pkcs1, pkcs1_len, MBEDTLS_PK_RSA) &&
	      mbedtls_pk_parse_public_key(&pk, pkcs1, pkcs1_len) == 0 &&
	      mbedtls_pk_get_type(&pk) == MBEDTLS_PK_RSA && mbedtls_pk_get_bitlen(&pk) == 2048,
	      "PKCS#1 RSAPublicKey of 270 bytes parses (Mbed TLS)");
	mbedtls_pk_free(&pk);

	get(pub, KFT_X_509);
	km = key_material();
	CHECK(succeeded(0) && key_block_field(KT_KEY_FORMAT_TYPE) == KFT_X_509 && km &&
	      km->type == TT_BYTES && is_spki(km->val, km->len, MBEDTLS_PK_RSA) && km->len == 294 &&
	      memcmp(km->val + 24, pkcs1, pkcs1_len) == 0,
	      "Get X.509: an RSA SubjectPublicKeyInfo around the same PKCS#1 key");
	get(pub, KFT_RAW);
	km = key_material();
	CHECK(succeeded(0) && key_block_field(KT_KEY_FORMAT_TYPE) == KFT_RAW && km &&
	      is_spki(km->val, km->len, MBEDTLS_PK_RSA), "Get Raw: an RSA SubjectPublicKeyInfo");

	get(pub, KFT_TRANSPARENT_RSA_PUBLIC_KEY);
	km = key_material();
	const struct ttlv *mod = child(km, KT_MODULUS), *pexp = child(km, KT_PUBLIC_EXPONENT);
	CHECK(succeeded(0) && key_block_field(KT_KEY_FORMAT_TYPE) == KFT_TRANSPARENT_RSA_PUBLIC_KEY &&
	      km && km->type == TT_STRUCT, "Get Transparent RSA Public Key: a Key Material structure");
	CHECK(mod && mod->type == TT_BIGINT && mod->len == 264 && mod->val[0] == 0 &&
	      mod->val[7] == 0 && (mod->val[8] & 0x80) && memcmp(mod->val + 8, pkcs1 + 9, 256) == 0,
	      "Modulus: Big Integer of 264 bytes, sign-padded with zeros, the PKCS#1 modulus");
	static const uint8_t e65537[] = { 0, 0, 0, 0, 0, 0x01, 0x00, 0x01 };
	CHECK(pexp && pexp->type == TT_BIGINT && pexp->len == 8 && memcmp(pexp->val, e65537, 8) == 0,
	      "Public Exponent: Big Integer 65537 in 8 bytes");

	get(pub, KFT_OPAQUE);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED), "Get Opaque -> Key Format Type Not Supported");
	get(pub, KFT_PKCS_8);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED), "Get PKCS#8 -> Key Format Type Not Supported");
	get(pub, KFT_TRANSPARENT_ECDSA_PUBLIC_KEY);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED),
	      "Get Transparent ECDSA of an RSA key -> Key Format Type Not Supported");
	get(priv, 0);
	CHECK(failed(0, RR_PERMISSION_DENIED), "Get on a _priv UID -> Permission Denied");
	char bare[41];
	memcpy(bare, pub, 40);
	bare[40] = '\0';
	get(bare, 0);
	CHECK(succeeded(0) && strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), pub) == 0,
	      "Get with a bare hex CKA_ID reaches the public key, answers with its _pub UID");
	char lower[64];
	for (size_t i = 0; i <= strlen(pub); i++)
		lower[i] = (char)(i < 40 ? tolower((unsigned char)pub[i]) : pub[i]);
	get(lower, 0);
	CHECK(succeeded(0), "Get with lower-case hex reaches the key");

	one_uid(H10, OP_ACTIVATE, priv);
	CHECK(succeeded(0) && r_op(0) == OP_ACTIVATE &&
	      strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), priv) == 0,
	      "Activate the private key: Success, UID echoed");

	/* Modify Attribute Name, as Cascade does, then Get Attributes. */
	begin(H10);
	item(OP_MODIFY_ATTRIBUTE, NULL);
	kreq_uid(E, pub);
	kreq_attr_name(E, "cascade-example.org-12345-ksk-pub");
	item_end();
	transmit();
	CHECK(succeeded(0) && strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), pub) == 0 &&
	      child(r_payload(0), KT_ATTRIBUTE), "Modify Attribute Name: Success, Attribute echoed");
	begin(H10);
	item(OP_GET_ATTRIBUTES, NULL);
	kreq_uid(E, pub);
	ttlv_put_text(E, KT_ATTRIBUTE_NAME, "Name", 4);
	item_end();
	transmit();
	const struct ttlv *a = child(r_payload(0), KT_ATTRIBUTE);
	CHECK(succeeded(0) && strcmp(str(child(a, KT_ATTRIBUTE_NAME)), "Name") == 0 &&
	      strcmp(str(child(child(a, KT_ATTRIBUTE_VALUE), KT_NAME_VALUE)),
	             "cascade-example.org-12345-ksk-pub") == 0,
	      "Get Attributes shows the new Name");
	begin(H10);
	item(OP_MODIFY_ATTRIBUTE, NULL);
	kreq_uid(E, pub);
	kreq_attr_int(E, "Cryptographic Usage Mask", UM_SIGN | UM_VERIFY);
	item_end();
	transmit();
	CHECK(failed(0, RR_PERMISSION_DENIED),
	      "Modify Attribute of Cryptographic Usage Mask -> Permission Denied");

	one_uid(H10, OP_GET_ATTRIBUTES, priv);
	const struct ttlv *pl = r_payload(0);
	int64_t alg = -1, len = -1, mask = -1;
	for (int i = 0; (a = nth(pl, KT_ATTRIBUTE, i)); i++) {
		const char *n = str(child(a, KT_ATTRIBUTE_NAME));
		if (!strcmp(n, "Cryptographic Algorithm")) alg = num(child(a, KT_ATTRIBUTE_VALUE));
		if (!strcmp(n, "Cryptographic Length")) len = num(child(a, KT_ATTRIBUTE_VALUE));
		if (!strcmp(n, "Cryptographic Usage Mask")) mask = num(child(a, KT_ATTRIBUTE_VALUE));
	}
	CHECK(succeeded(0) && alg == ALG_RSA && len == 2048 && mask == UM_SIGN,
	      "Get Attributes of the private key: RSA, 2048, Sign (%lld %lld %lld)",
	      (long long)alg, (long long)len, (long long)mask);

	/* Sign as Cascade: RSA, SHA-256, PKCS#1 v1.5, raw data. */
	sign(priv, HASH_SHA_256, ALG_RSA, PAD_PKCS1_V1_5, 0, data);
	const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && r_op(0) == OP_SIGN && sd && sd->len == 256 &&
	      strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), priv) == 0,
	      "Sign RSA SHA-256 PKCS#1 v1.5: 256 bytes");
	CHECK(sd && pk_verify(pkcs1, pkcs1_len, MBEDTLS_MD_SHA256, data, sd->val, sd->len),
	      "the RSA signature verifies (Mbed TLS)");
	sign(priv, 0, 0, 0, DSA_SHA256_WITH_RSA_ENCRYPTION, data);
	sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && sd && pk_verify(pkcs1, pkcs1_len, MBEDTLS_MD_SHA256, data, sd->val, sd->len),
	      "Sign via Digital Signature Algorithm sha256WithRSAEncryption verifies");
	sign(priv, 0, 0, 0, DSA_SHA512_WITH_RSA_ENCRYPTION, data);
	sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && sd && pk_verify(pkcs1, pkcs1_len, MBEDTLS_MD_SHA512, data, sd->val, sd->len),
	      "Sign via sha512WithRSAEncryption verifies with SHA-512");
	sign(priv, 0, 0, 0, 0, data);
	sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && sd && pk_verify(pkcs1, pkcs1_len, MBEDTLS_MD_SHA256, data, sd->val, sd->len),
	      "Sign without Cryptographic Parameters: RSA PKCS#1 v1.5 SHA-256");

	sign(priv, HASH_SHA_256, ALG_ECDSA, 0, 0, data);
	CHECK(failed(0, RR_INVALID_FIELD), "Sign RSA key with algorithm ECDSA -> Invalid Field");
	sign(priv, HASH_SHA_256, ALG_RSA, PAD_PSS, 0, data);
	CHECK(failed(0, RR_INVALID_FIELD), "Sign RSA key with PSS padding -> Invalid Field");
	sign(priv, 0, 0, 0, DSA_ECDSA_WITH_SHA256, data);
	CHECK(failed(0, RR_INVALID_FIELD), "Sign RSA key with ecdsa-with-SHA256 -> Invalid Field");
	sign(priv, HASH_MD5, ALG_RSA, 0, 0, data);
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED), "Sign with MD5 -> Feature Not Supported");
	sign(priv, HASH_SHA_256, ALG_RSA, 0, 0, NULL);
	CHECK(failed(0, RR_MISSING_DATA), "Sign without Data -> Missing Data");
	sign(pub, HASH_SHA_256, ALG_RSA, 0, 0, data);
	CHECK(failed(0, RR_PERMISSION_DENIED), "Sign with the public key -> Permission Denied");

	/* Destroy: a bare CKA_ID is refused and removes nothing. */
	one_uid(H10, OP_DESTROY, bare);
	CHECK(failed(0, RR_ITEM_NOT_FOUND), "Destroy with a bare hex UID -> refused (Item Not Found)");
	get(pub, 0);
	CHECK(succeeded(0), "... and the key is still there");
	one_uid(H10, OP_DESTROY, priv);
	CHECK(succeeded(0) && r_op(0) == OP_DESTROY &&
	      strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), priv) == 0,
	      "Destroy the private key");
	sign(priv, HASH_SHA_256, 0, 0, 0, data);
	CHECK(failed(0, RR_ITEM_NOT_FOUND), "Sign after Destroy -> Item Not Found");
	get(pub, 0);
	CHECK(succeeded(0), "the public half outlives its private half");
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "Destroy the public key");
	get(pub, 0);
	CHECK(failed(0, RR_ITEM_NOT_FOUND), "Get after Destroy -> Item Not Found");
	one_uid(H10, OP_DESTROY, pub);
	CHECK(failed(0, RR_ITEM_NOT_FOUND), "Destroy twice -> Item Not Found");
}

static void lifecycle_ec(int bits)
{
	char priv[64], pub[64], name[16];
	const char *data = "example.org. 3600 IN DNSKEY 257 3 13 ...";
	mbedtls_md_type_t md = bits == 256 ? MBEDTLS_MD_SHA256 : MBEDTLS_MD_SHA384;
	uint32_t hash = bits == 256 ? HASH_SHA_256 : HASH_SHA_384;
	uint32_t dsa = bits == 256 ? DSA_ECDSA_WITH_SHA256 : DSA_ECDSA_WITH_SHA384;
	size_t field = bits / 8, spki_len = bits == 256 ? 91 : 120;

	snprintf(name, sizeof name, "p%d", bits);
	CHECK(ckp(H10, ALG_ECDSA, bits, name, priv, pub) == 0, "Create Key Pair ECDSA P-%d", bits);
	get(pub, 0);
	const struct ttlv *km = key_material();
	uint8_t spki[160];
	size_t n = km && km->type == TT_BYTES && km->len <= sizeof spki ? km->len : 0;
	if (n)
		memcpy(spki, km->val, n);
	CHECK(succeeded(0) && key_block_field(KT_KEY_FORMAT_TYPE) == KFT_RAW &&
	      key_block_field(KT_CRYPTOGRAPHIC_ALGORITHM) == ALG_ECDSA &&
	      key_block_field(KT_CRYPTOGRAPHIC_LENGTH) == bits,
	      "Get P-%d default: Raw, ECDSA, %d", bits, bits);
	mbedtls_pk_context pk;
	mbedtls_pk_init(&pk);
	CHECK(n == spki_len && is_spki(spki, n, MBEDTLS_PK_ECKEY) &&
	      mbedtls_pk_parse_public_key(&pk, spki, n) == 0 && mbedtls_pk_get_bitlen(&pk) == (size_t)bits &&
	      spki[n - 2 * field - 1] == 0x04,
	      "Raw key material is a P-%d SubjectPublicKeyInfo, uncompressed point (%zu bytes)", bits, n);
	mbedtls_pk_free(&pk);
	CHECK(got_key(pub, KFT_X_509, spki, n), "Get X.509: the same SubjectPublicKeyInfo");
	get(pub, KFT_TRANSPARENT_ECDSA_PUBLIC_KEY);
	km = key_material();
	const struct ttlv *q = child(km, KT_Q_STRING);
	CHECK(succeeded(0) && key_block_field(KT_KEY_FORMAT_TYPE) == KFT_TRANSPARENT_ECDSA_PUBLIC_KEY &&
	      num(child(km, KT_RECOMMENDED_CURVE)) == (bits == 256 ? CURVE_P_256 : CURVE_P_384) &&
	      q && q->type == TT_BYTES && q->len == 2 * field + 1 &&
	      memcmp(q->val, spki + n - q->len, q->len) == 0,
	      "Get Transparent ECDSA: Recommended Curve and Q String, the SPKI's point");
	get(pub, KFT_PKCS_1);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED), "Get PKCS#1 of an EC key -> not supported");
	get(pub, KFT_TRANSPARENT_RSA_PUBLIC_KEY);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED),
	      "Get Transparent RSA of an EC key -> not supported");

	one_uid(H10, OP_ACTIVATE, priv);
	CHECK(succeeded(0), "Activate P-%d", bits);

	int ok = 1, minimal = 1;
	for (int i = 0; i < 8; i++) {
		uint32_t how = i % 4;     /* hash + alg; dsa; nothing; hash only */
		sign(priv, how == 0 || how == 3 ? hash : 0, how == 0 ? ALG_ECDSA : 0, 0,
		     how == 1 ? dsa : 0, data);
		const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
		if (!succeeded(0) || !sd || !pk_verify(spki, n, md, data, sd->val, sd->len)) {
			ok = 0;
			printf("  P-%d signature %d does not verify\n", bits, i);
		}
		minimal &= sd && sd->len <= 2 * field + 8 && der_minimal(sd->val, sd->len);
	}
	CHECK(ok, "P-%d ECDSA signatures verify (Hashing Algorithm, Digital Signature Algorithm, "
	      "defaults; Mbed TLS)", bits);
	CHECK(minimal, "P-%d signatures are minimal DER", bits);
	sign(priv, HASH_SHA_256, ALG_RSA, 0, 0, data);
	CHECK(failed(0, RR_INVALID_FIELD), "Sign EC key with algorithm RSA -> Invalid Field");
	sign(priv, 0, 0, 0, DSA_SHA256_WITH_RSA_ENCRYPTION, data);
	CHECK(failed(0, RR_INVALID_FIELD), "Sign EC key with sha256WithRSAEncryption -> Invalid Field");

	one_uid(H10, OP_DESTROY, priv);
	CHECK(succeeded(0), "Destroy P-%d private key", bits);
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "Destroy P-%d public key", bits);
	get(pub, 0);
	CHECK(failed(0, RR_ITEM_NOT_FOUND), "P-%d: Get after Destroy -> Item Not Found", bits);
}

static void lifecycle_ed25519(void)
{
	char priv[64], pub[64];
	const char *data = "example.org. 3600 IN DNSKEY 257 3 15 ...";
	struct p11_slot *s = NULL;

	if (p11_slot_lookup(USER, strlen(USER), &s) != CKR_OK ||
	    !(s->mechs & P11_MBIT(EC_EDWARDS_KEY_PAIR_GEN))) {
		SKIP("Ed25519 life cycle: the token has no CKM_EC_EDWARDS_KEY_PAIR_GEN");
		return;
	}
	CHECK(ckp(H10, ALG_ED25519, 0, "ed", priv, pub) == 0,
	      "Create Key Pair Ed25519 (Cryptographic Algorithm 0x37)");
	get(pub, 0);
	const struct ttlv *km = key_material();
	static const uint8_t head[] = { 0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70,
	                                0x03, 0x21, 0x00 };
	uint8_t spki[44];
	int shape = km && km->type == TT_BYTES && km->len == 44 && memcmp(km->val, head, 12) == 0;
	if (shape)
		memcpy(spki, km->val, 44);
	CHECK(succeeded(0) && key_block_field(KT_KEY_FORMAT_TYPE) == KFT_RAW &&
	      key_block_field(KT_CRYPTOGRAPHIC_ALGORITHM) == ALG_ED25519 && shape,
	      "Get Ed25519: Raw, algorithm 0x37, a 44-byte RFC 8410 SubjectPublicKeyInfo");
	get(pub, KFT_TRANSPARENT_ECDSA_PUBLIC_KEY);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED),
	      "Get Transparent ECDSA of an Ed25519 key -> Key Format Type Not Supported");
	CHECK(!strstr(r_msg(0), "(null)"), "its Result Message names the algorithm: '%s'", r_msg(0));
	sign(priv, 0, 0, 0, 0, data);
	const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && sd && sd->len == 64, "Sign Ed25519 without parameters: 64 bytes");
	CHECK(shape && sd && verify_ed25519_spki(spki, 44, (const uint8_t *)data, strlen(data),
	                                         sd->val, sd->len),
	      "the Ed25519 signature verifies (openssl pkeyutl)");
	sign(priv, 0, ALG_ED25519, 0, 0, data);
	CHECK(succeeded(0), "Sign Ed25519 with Cryptographic Algorithm 0x37");
	sign(priv, HASH_SHA_256, 0, 0, 0, data);
	CHECK(failed(0, RR_INVALID_FIELD), "Sign Ed25519 with a Hashing Algorithm -> Invalid Field");
	one_uid(H10, OP_DESTROY, priv);
	CHECK(succeeded(0), "Destroy Ed25519 private key");
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "Destroy Ed25519 public key");
}

/*
 * A key pair made the way the original Rust bridge makes it, straight through PKCS#11
 * without our code: CKA_ID 20 random bytes, its templates (public: TOKEN, VERIFY, ENCRYPT
 * false, WRAP false; private: TOKEN, PRIVATE, SENSITIVE, SIGN, DECRYPT false; no UNWRAP,
 * no EXTRACTABLE), CKA_LABEL from the Name.  Its UIDs HEX_pub / HEX_priv must work here.
 */
static void original_key(CK_KEY_TYPE type)
{
	struct p11_slot *s = NULL;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = 1024;
	CK_BYTE e[] = { 1, 0, 1 };
	uint8_t id[20];
	char label[] = "original", hex[41], pub[64], priv[64];
	CK_MECHANISM mech = { type == CKK_RSA ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN,
	                      NULL, 0 };
	CK_OBJECT_HANDLE hpub, hpriv;
	const char *data = "signed by a key of the original bridge";
	const char *what = type == CKK_RSA ? "RSA-1024" : "P-256";

	one_uid(H10, OP_ACTIVATE, NULL);      /* logs the token in, as the original would */
	if (p11_slot_lookup(USER, strlen(USER), &s) != CKR_OK ||
	    p11.fl->C_OpenSession(s->id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h) != CKR_OK ||
	    p11.fl->C_GenerateRandom(h, id, sizeof id) != CKR_OK) {
		CHECK(0, "session for the original's key");
		return;
	}
	CK_ATTRIBUTE pt[] = {
		{ CKA_TOKEN, &yes, 1 }, { CKA_VERIFY, &yes, 1 }, { CKA_ENCRYPT, &no, 1 },
		{ CKA_WRAP, &no, 1 }, { CKA_ID, id, sizeof id }, { CKA_LABEL, label, 8 },
		{ type == CKK_RSA ? CKA_MODULUS_BITS : CKA_EC_PARAMS,
		  type == CKK_RSA ? (void *)&bits : (void *)p11_oid_p256,
		  type == CKK_RSA ? sizeof bits : sizeof p11_oid_p256 },
		{ CKA_PUBLIC_EXPONENT, e, sizeof e },
	};
	CK_ATTRIBUTE kt[] = {
		{ CKA_TOKEN, &yes, 1 }, { CKA_PRIVATE, &yes, 1 }, { CKA_SENSITIVE, &yes, 1 },
		{ CKA_SIGN, &yes, 1 }, { CKA_DECRYPT, &no, 1 }, { CKA_ID, id, sizeof id },
		{ CKA_LABEL, label, 8 },
	};
	CK_RV rv = p11.fl->C_GenerateKeyPair(h, &mech, pt, type == CKK_RSA ? 8 : 7, kt, 7,
	                                     &hpub, &hpriv);
	CHECK(rv == CKR_OK, "original-style %s key generated by C_GenerateKeyPair: %s", what,
	      p11_rv_name(rv));
	hex_upper(hex, id, sizeof id);
	snprintf(pub, sizeof pub, "%s_pub", hex);
	snprintf(priv, sizeof priv, "%s_priv", hex);

	get(pub, 0);
	const struct ttlv *km = key_material();
	uint8_t der[400];
	size_t n = km && km->type == TT_BYTES && km->len <= sizeof der ? km->len : 0;
	if (n)
		memcpy(der, km->val, n);
	CHECK(succeeded(0) && n && strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), pub) == 0,
	      "original %s key: Get %s", what, pub);
	one_uid(H10, OP_ACTIVATE, priv);
	CHECK(succeeded(0), "original %s key: Activate %s", what, priv);
	sign(priv, HASH_SHA_256, type == CKK_RSA ? ALG_RSA : ALG_ECDSA,
	     type == CKK_RSA ? PAD_PKCS1_V1_5 : 0, 0, data);
	const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && sd && pk_verify(der, n, MBEDTLS_MD_SHA256, data, sd->val, sd->len),
	      "original %s key: Sign as Cascade does, signature verifies", what);
	if (type == CKK_EC) {
		/* Another program removes the key: the daemon's cached handle must not sign. */
		CHECK(p11.fl->C_DestroyObject(h, hpriv) == CKR_OK, "private key removed outside");
		sign(priv, HASH_SHA_256, ALG_ECDSA, 0, 0, data);
		CHECK(failed(0, RR_ITEM_NOT_FOUND),
		      "a key destroyed by another program: Sign answers Item Not Found");
		/* ... and makes a new pair with the same CKA_ID: the UID reaches the new key. */
		CK_OBJECT_HANDLE hpub2, hpriv2;
		sign(priv, HASH_SHA_256, ALG_ECDSA, 0, 0, data);        /* nothing cached now */
		rv = p11.fl->C_GenerateKeyPair(h, &mech, pt, 7, kt, 7, &hpub2, &hpriv2);
		CHECK(rv == CKR_OK, "a new pair under the same CKA_ID: %s", p11_rv_name(rv));
		sign(priv, HASH_SHA_256, ALG_ECDSA, 0, 0, data);
		CHECK(succeeded(0), "the UID signs with the new key");
		CHECK(p11.fl->C_DestroyObject(h, hpriv2) == CKR_OK, "new private key removed outside");
		rv = p11.fl->C_GenerateKeyPair(h, &mech, pt, 7, kt, 7, &hpub2, &hpriv2);
		sign(priv, HASH_SHA_256, ALG_ECDSA, 0, 0, data);
		CHECK(rv == CKR_OK && succeeded(0),
		      "a cached handle that went stale is looked up again: Sign succeeds");
		p11.fl->C_DestroyObject(h, hpriv2);
		p11.fl->C_DestroyObject(h, hpub2);
	} else {
		one_uid(H10, OP_DESTROY, priv);
		CHECK(succeeded(0), "original %s key: Destroy %s", what, priv);
	}
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "original %s key: Destroy %s", what, pub);
	p11.fl->C_CloseSession(h);
}

/* A label another tool wrote in bytes that are not UTF-8 cannot be a KMIP Name: Get
 * Attributes leaves the Name out rather than send a Text String no client can decode. */
static void label_not_utf8(void)
{
	char priv[64], pub[64];
	uint8_t id[P11_ID_MAX];
	struct p11_slot *s = NULL;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE o;
	static const char bad[] = "\xff\xfe key";

	if (ckp(H10, ALG_ECDSA, 256, "utf8", priv, pub) != 0 ||
	    p11_slot_lookup(USER, strlen(USER), &s) != CKR_OK ||
	    p11.fl->C_OpenSession(s->id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h) != CKR_OK) {
		CHECK(0, "key and session for the label test");
		return;
	}
	int n = hex_parse(id, sizeof id, priv, strlen(priv) - 5);
	CHECK(n > 0 && p11_find_key(h, id, (size_t)n, CKO_PRIVATE_KEY, &o) == CKR_OK &&
	      p11_set_label(h, o, bad, sizeof bad - 1) == CKR_OK, "label set to bytes that are not UTF-8");
	one_uid(H10, OP_GET_ATTRIBUTES, priv);
	const struct ttlv *pl = r_payload(0);
	int names = 0;
	for (int i = pl ? pl->child : -1; i >= 0; i = RD.it[i].next) {
		const struct ttlv *a = &RD.it[i];
		const struct ttlv *an = a->tag == KT_ATTRIBUTE ? child(a, KT_ATTRIBUTE_NAME) : NULL;
		names += an && kmip_text_is(an, "Name");
	}
	CHECK(succeeded(0) && pl && names == 0,
	      "Get Attributes of a key whose label is not UTF-8: answered, without a Name");
	one_uid(H10, OP_DESTROY, priv);
	one_uid(H10, OP_DESTROY, pub);
	p11.fl->C_CloseSession(h);
}

/* Locate: the UIDs of the keys matching every attribute given, of the ones a token can
 * search on (Object Type, Name, Cryptographic Algorithm). */
static int located(const char *uid)
{
	const struct ttlv *pl = r_payload(0);
	for (int i = 0; pl && i < count_of(pl, KT_UNIQUE_IDENTIFIER); i++)
		if (strcmp(str(nth(pl, KT_UNIQUE_IDENTIFIER, i)), uid) == 0)
			return 1;
	return 0;
}

static void locate_begin(int32_t max)
{
	begin(H12);
	item(OP_LOCATE, NULL);
	if (max)
		ttlv_put_int(E, KT_MAXIMUM_ITEMS, max);
}

static void test_locate(void)
{
	char apriv[64], apub[64], bpriv[64], bpub[64];
	if (ckp(H10, ALG_RSA, 1024, "loc-a", apriv, apub) != 0 ||
	    ckp(H10, ALG_ECDSA, 256, "loc-b", bpriv, bpub) != 0) {
		CHECK(0, "keys for the Locate tests");
		return;
	}
	locate_begin(0);
	kreq_attr_name(E, "loc-a-pri");
	item_end();
	transmit();
	CHECK(succeeded(0) && count_of(r_payload(0), KT_UNIQUE_IDENTIFIER) == 1 && located(apriv),
	      "Locate by Name finds exactly that key: %s", apriv);

	locate_begin(0);
	kreq_attr_enum(E, "Object Type", OT_PUBLIC_KEY);
	kreq_attr_enum(E, "Cryptographic Algorithm", ALG_ECDSA);
	item_end();
	transmit();
	CHECK(succeeded(0) && located(bpub) && !located(apub) && !located(bpriv),
	      "Locate by Object Type and Cryptographic Algorithm: EC public keys only");

	locate_begin(1);
	kreq_attr_enum(E, "Object Type", OT_PRIVATE_KEY);
	item_end();
	transmit();
	CHECK(succeeded(0) && count_of(r_payload(0), KT_UNIQUE_IDENTIFIER) == 1,
	      "Locate honours Maximum Items");

	locate_begin(0);
	kreq_attr_name(E, "no-such-key");
	item_end();
	transmit();
	CHECK(succeeded(0) && count_of(r_payload(0), KT_UNIQUE_IDENTIFIER) == 0,
	      "Locate with no match: Success, no Unique Identifier");

	locate_begin(0);
	kreq_attr_int(E, "Cryptographic Length", 256);
	item_end();
	transmit();
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED),
	      "Locate by an attribute the token cannot search on: Feature Not Supported");

	/* Locate sets the ID Placeholder: a Sign without UID in the same batch uses it. */
	begin((struct kreq_hdr){ 1, 2, USER, PIN, -1, 0, 2 });
	item(OP_LOCATE, "1");
	kreq_attr_name(E, "loc-b-pri");
	item_end();
	item(OP_SIGN, "2");
	ttlv_put_bytes(E, KT_DATA, (const uint8_t *)"located", 7);
	item_end();
	transmit();
	CHECK(r_items() == 2 && succeeded(0) && succeeded(1) &&
	      strcmp(str(child(r_payload(1), KT_UNIQUE_IDENTIFIER)), bpriv) == 0,
	      "Locate then Sign without UID in one batch signs with the located key");

	one_uid(H10, OP_DESTROY, apriv);
	one_uid(H10, OP_DESTROY, apub);
	one_uid(H10, OP_DESTROY, bpriv);
	one_uid(H10, OP_DESTROY, bpub);
}

/* Revoke takes the key's function away in the HSM: no more signatures, State Deactivated. */
static int64_t r_state(void)
{
	const struct ttlv *pl = r_payload(0);
	for (int i = 0; pl && i < count_of(pl, KT_ATTRIBUTE); i++) {
		const struct ttlv *a = nth(pl, KT_ATTRIBUTE, i);
		if (kmip_text_is(child(a, KT_ATTRIBUTE_NAME), "State"))
			return num(child(a, KT_ATTRIBUTE_VALUE));
	}
	return -1;
}

static void revoke_key(const char *uid, int with_reason)
{
	begin(H12);
	item(OP_REVOKE, NULL);
	kreq_uid(E, uid);
	if (with_reason) {
		ttlv_open(E, KT_REVOCATION_REASON);
		ttlv_put_enum(E, KT_REVOCATION_REASON_CODE, REV_KEY_COMPROMISE);
		ttlv_close(E);
	}
	item_end();
	transmit();
}

static void test_revoke(void)
{
	char priv[64], pub[64];
	if (ckp(H10, ALG_ECDSA, 256, "revoke", priv, pub) != 0) {
		CHECK(0, "key for the Revoke tests");
		return;
	}
	one_uid(H10, OP_GET_ATTRIBUTES, priv);
	CHECK(r_state() == ST_ACTIVE, "a new key is Active");
	revoke_key(priv, 0);
	CHECK(failed(0, RR_INVALID_MESSAGE), "Revoke without a Revocation Reason -> Invalid Message");
	revoke_key(priv, 1);
	CHECK(succeeded(0) && strcmp(str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)), priv) == 0,
	      "Revoke (key compromise) of the private key succeeds");
	sign(priv, HASH_SHA_256, ALG_ECDSA, 0, 0, "after revoke");
	CHECK(failed(0, RR_PERMISSION_DENIED), "a revoked key does not sign: Permission Denied (%s)",
	      r_msg(0));
	one_uid(H10, OP_GET_ATTRIBUTES, priv);
	CHECK(r_state() == ST_DEACTIVATED, "a revoked key's State is Deactivated");
	one_uid(H10, OP_GET_ATTRIBUTES, pub);
	CHECK(r_state() == ST_ACTIVE, "its public half is still Active");
	one_uid(H10, OP_DESTROY, priv);
	CHECK(succeeded(0), "a revoked key can be destroyed");
	one_uid(H10, OP_DESTROY, pub);
}

/* ==== Register: keys made by openssl(1), stored in the token ==== */

/* A file of tmpdir into buf; its length, or 0. */
static size_t reg_file(const char *name, uint8_t *buf, size_t cap)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, cap, f);
	fclose(f);
	return n < cap ? n : 0;
}

/* Register object type ot (a Private Key or Public Key object; another tag for other
 * types) holding Key Material der in format kft; alg / len in the Key Block when nonzero;
 * the Template-Attribute with a Name when name and a Usage Mask when mask >= 0.  The
 * Request Payload is left open for the caller (reg_end). */
static void reg_begin(uint32_t ot, const char *name, int32_t mask)
{
	begin(H12);
	item(OP_REGISTER, NULL);
	ttlv_put_enum(E, KT_OBJECT_TYPE, ot);
	ttlv_open(E, KT_TEMPLATE_ATTRIBUTE);
	if (name)
		kreq_attr_name(E, name);
	if (mask >= 0)
		kreq_attr_int(E, "Cryptographic Usage Mask", mask);
	ttlv_close(E);
}

/* Key Block up to the Key Value, which is left open. */
static void reg_block(uint32_t ot, uint32_t kft)
{
	ttlv_open(E, ot == OT_PRIVATE_KEY ? KT_PRIVATE_KEY : ot == OT_PUBLIC_KEY ? KT_PUBLIC_KEY :
		  ot == OT_SYMMETRIC_KEY ? KT_SYMMETRIC_KEY : KT_CERTIFICATE);
	ttlv_open(E, KT_KEY_BLOCK);
	ttlv_put_enum(E, KT_KEY_FORMAT_TYPE, kft);
	ttlv_open(E, KT_KEY_VALUE);
}

static void reg_end(uint32_t alg, int32_t len)
{
	ttlv_close(E);                  /* Key Value */
	if (alg)
		ttlv_put_enum(E, KT_CRYPTOGRAPHIC_ALGORITHM, alg);
	if (len)
		ttlv_put_int(E, KT_CRYPTOGRAPHIC_LENGTH, len);
	ttlv_close(E);                  /* Key Block */
	ttlv_close(E);                  /* the object */
	item_end();
	transmit();
}

static void reg_der(uint32_t ot, uint32_t kft, uint32_t alg, int32_t len, const uint8_t *der,
		    size_t n, const char *name, int32_t mask)
{
	reg_begin(ot, name, mask);
	reg_block(ot, kft);
	ttlv_put_bytes(E, KT_KEY_MATERIAL, der, n);
	reg_end(alg, len);
}

/* The UID of a successful Register, or "". */
static const char *reg_uid(void)
{
	return r_status(0) == RS_SUCCESS ? str(child(r_payload(0), KT_UNIQUE_IDENTIFIER)) : "";
}

/* The same hex with the other suffix. */
static void reg_pub_of(const char *priv, char *pub, size_t cap)
{
	size_t n = strlen(priv);
	snprintf(pub, cap, "%.*s_pub", (int)(n > 5 ? n - 5 : 0), priv);
}

/* Get X.509 of pub equals spki; Sign with priv verifies with spki (the original public
 * key, from openssl). */
static void reg_works(const char *what, const char *priv, const uint8_t *spki, size_t spki_len,
		      mbedtls_md_type_t md)
{
	char pub[80];
	const char *data = "example.org. 3600 IN DNSKEY 257 3 8 imported";
	reg_pub_of(priv, pub, sizeof pub);
	CHECK(got_key(pub, KFT_X_509, spki, spki_len),
	      "%s: Get of %s gives openssl's SubjectPublicKeyInfo byte for byte", what, pub);
	sign(priv, md == MBEDTLS_MD_SHA384 ? HASH_SHA_384 : HASH_SHA_256, 0, 0, 0, data);
	const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
	CHECK(succeeded(0) && sd && pk_verify(spki, spki_len, md, data, sd->val, sd->len),
	      "%s: Sign through the daemon verifies with the original public key", what);
	get(priv, 0);
	CHECK(failed(0, RR_PERMISSION_DENIED), "%s: Get of the private key -> Permission Denied",
	      what);
}

/* CKA_SENSITIVE true, CKA_EXTRACTABLE false, CKA_TOKEN true, CKA_SIGN as asked, and the
 * private value unreadable, as the token itself reports them. */
static void reg_p11_flags(const char *what, const char *priv, int sign_expected)
{
	struct p11_slot *s = NULL;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
	uint8_t id[P11_ID_MAX];
	CK_BBOOL sens = 0, ext = 1, tok = 0, sgn = 2;
	uint8_t secret[600];
	int idlen = hex_parse(id, sizeof id, priv, strlen(priv) > 5 ? strlen(priv) - 5 : 0);
	CK_ATTRIBUTE t[] = {
		{ CKA_SENSITIVE, &sens, 1 }, { CKA_EXTRACTABLE, &ext, 1 }, { CKA_TOKEN, &tok, 1 },
		{ CKA_SIGN, &sgn, 1 },
	};
	CK_ATTRIBUTE v = { CKA_VALUE, secret, sizeof secret };
	CK_ATTRIBUTE pe = { CKA_PRIVATE_EXPONENT, secret, sizeof secret };
	CK_KEY_TYPE type = 0;
	CK_ATTRIBUTE kt = { CKA_KEY_TYPE, &type, sizeof type };
	int ok = idlen > 0 && p11_slot_lookup(USER, strlen(USER), &s) == CKR_OK &&
		 p11_session_open(s, &h) == CKR_OK &&
		 p11_find_key(h, id, (size_t)idlen, CKO_PRIVATE_KEY, &o) == CKR_OK &&
		 P11_F->C_GetAttributeValue(h, o, t, 4) == CKR_OK &&
		 P11_F->C_GetAttributeValue(h, o, &kt, 1) == CKR_OK;
	CHECK(ok && sens == CK_TRUE && ext == CK_FALSE && tok == CK_TRUE &&
	      sgn == (sign_expected ? CK_TRUE : CK_FALSE),
	      "%s: in the token: CKA_SENSITIVE true, CKA_EXTRACTABLE false, CKA_TOKEN true, "
	      "CKA_SIGN %s", what, sign_expected ? "true" : "false");
	CK_RV rv = ok ? P11_F->C_GetAttributeValue(h, o, type == CKK_RSA ? &pe : &v, 1) : CKR_OK;
	CHECK(rv == CKR_ATTRIBUTE_SENSITIVE, "%s: the token refuses to read the private value (%s)",
	      what, p11_rv_name(rv));
	p11_session_close(h);
}

static void reg_destroy(const char *priv)
{
	char pub[80];
	reg_pub_of(priv, pub, sizeof pub);
	one_uid(H10, OP_DESTROY, priv);
	int a = succeeded(0);
	one_uid(H10, OP_DESTROY, pub);
	CHECK(a && succeeded(0), "Destroy of the imported pair %s", priv);
}

static void reg_bigint(uint32_t tag, const mbedtls_mpi *m)
{
	uint8_t b[600];
	size_t n = mbedtls_mpi_size(m);
	if (n < sizeof b && mbedtls_mpi_write_binary(m, b, n) == 0)
		ttlv_put_bigint(E, tag, b, n);
}

static void test_register(void)
{
	static uint8_t der[8192], spki[1024], der2[1024];
	size_t n, spki_len;
	char cmd[2048], uid[80], pub[80];

	snprintf(cmd, sizeof cmd, "cd %s && ("
		 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem && "
		 "openssl pkey -in rsa.pem -outform DER -out rsa.p8 && "
		 "openssl rsa -in rsa.pem -traditional -outform DER -out rsa.p1 && "
		 "openssl pkey -in rsa.pem -pubout -outform DER -out rsa.spki && "
		 "openssl rsa -in rsa.pem -RSAPublicKey_out -outform DER -out rsa.pub1 && "
		 "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem && "
		 "openssl pkey -in ec.pem -outform DER -out ec.p8 && "
		 "openssl ec -in ec.pem -outform DER -out ec.sec1 && "
		 "openssl pkey -in ec.pem -pubout -outform DER -out ec.spki && "
		 "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.pem && "
		 "openssl ec -in ec384.pem -outform DER -out ec384.sec1 && "
		 "openssl pkey -in ec384.pem -pubout -outform DER -out ec384.spki && "
		 "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ecb.pem && "
		 "openssl ec -in ecb.pem -outform DER -out ecb.sec1 && "
		 "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 -out k1.pem && "
		 "openssl pkey -in k1.pem -outform DER -out k1.p8 && "
		 "openssl pkcs8 -topk8 -in ec.pem -outform DER -passout pass:secret -out enc.p8 && "
		 "openssl genpkey -algorithm ED25519 -out ed.pem && "
		 "openssl pkey -in ed.pem -outform DER -out ed.p8 && "
		 "openssl pkey -in ed.pem -pubout -outform DER -out ed.spki && "
		 "openssl genpkey -algorithm ED448 -outform DER -out ed448.p8"
		 ") >/dev/null 2>&1", tmpdir);
	int made = run(cmd) == 0;
	CHECK(made, "openssl made the keys to register");
	if (!made)
		return;

	/* RSA: PKCS#8, PKCS#1, Transparent. */
	spki_len = reg_file("rsa.spki", spki, sizeof spki);
	n = reg_file("rsa.p8", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, ALG_RSA, 2048, der, n, "imported-rsa", UM_SIGN);
	snprintf(uid, sizeof uid, "%s", reg_uid());
	CHECK(succeeded(0) && uid_shape(uid, "_priv") && r_op(0) == OP_REGISTER,
	      "Register RSA-2048 PKCS#8: Success, a UID HEX_priv: %s", uid);
	reg_works("RSA PKCS#8", uid, spki, spki_len, MBEDTLS_MD_SHA256);
	reg_p11_flags("RSA PKCS#8", uid, 1);
	one_uid(H10, OP_GET_ATTRIBUTES, uid);
	const struct ttlv *a = r_payload(0);
	int named = 0;
	for (int i = 0; nth(a, KT_ATTRIBUTE, i); i++) {
		const struct ttlv *at = nth(a, KT_ATTRIBUTE, i);
		if (strcmp(str(child(at, KT_ATTRIBUTE_NAME)), "Name") == 0 &&
		    strcmp(str(child(child(at, KT_ATTRIBUTE_VALUE), KT_NAME_VALUE)), "imported-rsa") == 0)
			named = 1;
	}
	CHECK(succeeded(0) && named, "the template's Name is the key's Name (CKA_LABEL)");
	reg_destroy(uid);

	n = reg_file("rsa.p1", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_1, ALG_RSA, 0, der, n, NULL, -1);
	snprintf(uid, sizeof uid, "%s", reg_uid());
	CHECK(succeeded(0) && uid_shape(uid, "_priv"), "Register RSA PKCS#1 (no template)");
	reg_works("RSA PKCS#1", uid, spki, spki_len, MBEDTLS_MD_SHA256);
	reg_destroy(uid);

	mbedtls_pk_context pk;
	mbedtls_pk_init(&pk);
	n = reg_file("rsa.p1", der, sizeof der);
	if (mbedtls_pk_parse_key(&pk, der, n, NULL, 0, mbedtls_psa_get_random,
				 MBEDTLS_PSA_RANDOM_STATE) == 0) {
		mbedtls_mpi N, P, Q, D, EE;
		mbedtls_mpi_init(&N); mbedtls_mpi_init(&P); mbedtls_mpi_init(&Q);
		mbedtls_mpi_init(&D); mbedtls_mpi_init(&EE);
		mbedtls_rsa_export(mbedtls_pk_rsa(pk), &N, &P, &Q, &D, &EE);
		reg_begin(OT_PRIVATE_KEY, "transparent-rsa", UM_SIGN | UM_VERIFY);
		reg_block(OT_PRIVATE_KEY, KFT_TRANSPARENT_RSA_PRIVATE_KEY);
		ttlv_open(E, KT_KEY_MATERIAL);
		reg_bigint(KT_MODULUS, &N);
		reg_bigint(KT_PRIVATE_EXPONENT, &D);
		reg_bigint(KT_PUBLIC_EXPONENT, &EE);
		ttlv_close(E);
		reg_end(ALG_RSA, 2048);
		snprintf(uid, sizeof uid, "%s", reg_uid());
		CHECK(succeeded(0) && uid_shape(uid, "_priv"),
		      "Register Transparent RSA Private Key (Modulus, Private and Public Exponent)");
		reg_works("RSA Transparent", uid, spki, spki_len, MBEDTLS_MD_SHA256);
		reg_p11_flags("RSA Transparent", uid, 1);
		reg_destroy(uid);

		/* A wrong Private Exponent: the parts do not make one key. */
		mbedtls_mpi_add_int(&D, &D, 2);
		reg_begin(OT_PRIVATE_KEY, NULL, -1);
		reg_block(OT_PRIVATE_KEY, KFT_TRANSPARENT_RSA_PRIVATE_KEY);
		ttlv_open(E, KT_KEY_MATERIAL);
		reg_bigint(KT_MODULUS, &N);
		reg_bigint(KT_PRIVATE_EXPONENT, &D);
		reg_bigint(KT_PUBLIC_EXPONENT, &EE);
		reg_bigint(KT_P, &P);
		reg_bigint(KT_Q, &Q);
		ttlv_close(E);
		reg_end(0, 0);
		CHECK(failed(0, RR_INVALID_FIELD), "Transparent RSA key whose parts disagree -> "
		      "Invalid Field: %s", r_msg(0));
		mbedtls_mpi_free(&N); mbedtls_mpi_free(&P); mbedtls_mpi_free(&Q);
		mbedtls_mpi_free(&D); mbedtls_mpi_free(&EE);
	}
	mbedtls_pk_free(&pk);

	/* EC P-256: PKCS#8, ECPrivateKey, Raw (holding an ECPrivateKey), Transparent. */
	spki_len = reg_file("ec.spki", spki, sizeof spki);
	static const struct { uint32_t kft; const char *file, *what; } ec_forms[] = {
		{ KFT_PKCS_8, "ec.p8", "EC P-256 PKCS#8" },
		{ KFT_EC_PRIVATE_KEY, "ec.sec1", "EC P-256 ECPrivateKey" },
		{ KFT_RAW, "ec.sec1", "EC P-256 Raw" },
	};
	for (size_t i = 0; i < ARRAY_LEN(ec_forms); i++) {
		n = reg_file(ec_forms[i].file, der, sizeof der);
		reg_der(OT_PRIVATE_KEY, ec_forms[i].kft, ALG_ECDSA, 256, der, n, "ec", UM_SIGN);
		snprintf(uid, sizeof uid, "%s", reg_uid());
		CHECK(succeeded(0) && uid_shape(uid, "_priv"), "Register %s", ec_forms[i].what);
		reg_works(ec_forms[i].what, uid, spki, spki_len, MBEDTLS_MD_SHA256);
		if (i == 0)
			reg_p11_flags(ec_forms[i].what, uid, 1);
		reg_destroy(uid);
	}
	/* ECPrivateKey ::= SEQUENCE { 02 01 01, 04 20 d (32 bytes), ... }: d at offset 7. */
	n = reg_file("ec.sec1", der, sizeof der);
	reg_begin(OT_PRIVATE_KEY, NULL, UM_SIGN);
	reg_block(OT_PRIVATE_KEY, KFT_TRANSPARENT_ECDSA_PRIVATE_KEY);
	ttlv_open(E, KT_KEY_MATERIAL);
	ttlv_put_enum(E, KT_RECOMMENDED_CURVE, CURVE_P_256);
	ttlv_put_bigint(E, KT_D, der + 7, 32);
	ttlv_close(E);
	reg_end(ALG_ECDSA, 256);
	snprintf(uid, sizeof uid, "%s", reg_uid());
	CHECK(n > 40 && der[5] == 0x04 && der[6] == 0x20 && succeeded(0) && uid_shape(uid, "_priv"),
	      "Register Transparent ECDSA Private Key (P-256, D): the public key computed");
	reg_works("EC Transparent", uid, spki, spki_len, MBEDTLS_MD_SHA256);
	reg_destroy(uid);

	/* P-384, and a Usage Mask without Sign: the token will not sign with it. */
	spki_len = reg_file("ec384.spki", spki, sizeof spki);
	n = reg_file("ec384.sec1", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_EC_PRIVATE_KEY, ALG_ECDSA, 384, der, n, NULL, UM_SIGN);
	snprintf(uid, sizeof uid, "%s", reg_uid());
	CHECK(succeeded(0), "Register EC P-384 ECPrivateKey");
	reg_works("EC P-384", uid, spki, spki_len, MBEDTLS_MD_SHA384);
	reg_destroy(uid);
	reg_der(OT_PRIVATE_KEY, KFT_EC_PRIVATE_KEY, 0, 0, der, n, NULL, UM_VERIFY);
	snprintf(uid, sizeof uid, "%s", reg_uid());
	reg_p11_flags("Usage Mask Verify only", uid, 0);
	sign(uid, 0, 0, 0, 0, "x");
	CHECK(failed(0, RR_PERMISSION_DENIED), "a key registered without Sign in its mask does "
	      "not sign -> Permission Denied");
	reg_destroy(uid);

	/* Public keys alone: SPKI (X.509 and Raw), PKCS#1, Transparent RSA / ECDSA, Ed25519. */
	spki_len = reg_file("rsa.spki", spki, sizeof spki);
	reg_der(OT_PUBLIC_KEY, KFT_X_509, ALG_RSA, 2048, spki, spki_len, "pub-only", -1);
	snprintf(pub, sizeof pub, "%s", reg_uid());
	CHECK(succeeded(0) && uid_shape(pub, "_pub"), "Register RSA Public Key X.509: a UID HEX_pub");
	CHECK(got_key(pub, KFT_X_509, spki, spki_len),
	      "Get returns the registered public key");
	snprintf(uid, sizeof uid, "%.40s_priv", pub);
	sign(uid, 0, 0, 0, 0, "x");
	CHECK(failed(0, RR_ITEM_NOT_FOUND), "a public key alone has no private half");
	one_uid(H10, OP_DESTROY, pub);
	CHECK(succeeded(0), "Destroy of the registered public key");

	n = reg_file("rsa.pub1", der, sizeof der);
	reg_der(OT_PUBLIC_KEY, KFT_PKCS_1, 0, 0, der, n, NULL, -1);
	snprintf(pub, sizeof pub, "%s", reg_uid());
	CHECK(got_key(pub, KFT_X_509, spki, spki_len),
	      "Register RSA Public Key PKCS#1, Get X.509: the same key");
	one_uid(H10, OP_DESTROY, pub);

	spki_len = reg_file("ec.spki", spki, sizeof spki);
	reg_der(OT_PUBLIC_KEY, KFT_RAW, ALG_ECDSA, 256, spki, spki_len, NULL, -1);
	snprintf(pub, sizeof pub, "%s", reg_uid());
	CHECK(got_key(pub, KFT_X_509, spki, spki_len),
	      "Register EC Public Key Raw (SPKI), Get X.509: the same key");
	one_uid(H10, OP_DESTROY, pub);

	reg_begin(OT_PUBLIC_KEY, NULL, -1);
	reg_block(OT_PUBLIC_KEY, KFT_TRANSPARENT_ECDSA_PUBLIC_KEY);
	ttlv_open(E, KT_KEY_MATERIAL);
	ttlv_put_enum(E, KT_RECOMMENDED_CURVE, CURVE_P_256);
	ttlv_put_bytes(E, KT_Q_STRING, spki + spki_len - 65, 65);
	ttlv_close(E);
	reg_end(0, 0);
	snprintf(pub, sizeof pub, "%s", reg_uid());
	CHECK(got_key(pub, KFT_X_509, spki, spki_len),
	      "Register Transparent ECDSA Public Key, Get X.509: the same key");
	one_uid(H10, OP_DESTROY, pub);

	spki_len = reg_file("ed.spki", spki, sizeof spki);
	reg_der(OT_PUBLIC_KEY, KFT_RAW, 0, 0, spki, spki_len, NULL, -1);
	snprintf(pub, sizeof pub, "%s", reg_uid());
	CHECK(got_key(pub, 0, spki, spki_len) &&
	      key_block_field(KT_CRYPTOGRAPHIC_ALGORITHM) == ALG_ED25519,
	      "Register Ed25519 Public Key (RFC 8410 SPKI), Get: the same key, algorithm 0x37");
	one_uid(H10, OP_DESTROY, pub);

	/* Ed25519 in PKCS#8: the public key is computed here (RFC 8032), equal to openssl's. */
	struct p11_slot *es = NULL;
	if (p11_slot_lookup(USER, strlen(USER), &es) == CKR_OK &&
	    !p11_slot_can_sign(es, p11_alg_of(CKK_EC_EDWARDS, P11_CURVE_ED25519))) {
		SKIP("Register Ed25519: the token cannot sign with Ed25519 keys");
	} else {
		const char *data = "example.org. 3600 IN DNSKEY 257 3 15 imported";
		spki_len = reg_file("ed.spki", spki, sizeof spki);
		n = reg_file("ed.p8", der, sizeof der);
		reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, ALG_ED25519, 0, der, n, "ed", UM_SIGN);
		snprintf(uid, sizeof uid, "%s", reg_uid());
		CHECK(succeeded(0) && uid_shape(uid, "_priv"), "Register Ed25519 PKCS#8 private key");
		reg_pub_of(uid, pub, sizeof pub);
		CHECK(got_key(pub, 0, spki, spki_len),
		      "Ed25519: the public key computed from the private key is openssl's");
		sign(uid, 0, 0, 0, 0, data);
		const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
		CHECK(succeeded(0) && sd && verify_ed25519_spki(spki, spki_len, (const uint8_t *)data,
								strlen(data), sd->val, sd->len),
		      "Ed25519: Sign through the daemon verifies with openssl's public key");
		reg_p11_flags("Ed25519", uid, 1);
		reg_destroy(uid);
		/* A wrong publicKey [1] (RFC 5958 v2): another key's. */
		static uint8_t v2[128];
		memcpy(v2, der, n);
		v2[1] = (uint8_t)(n - 2 + 35);
		v2[4] = 1;                      /* version v2 */
		v2[n] = 0x81;
		v2[n + 1] = 33;
		v2[n + 2] = 0;
		memcpy(v2 + n + 3, spki + spki_len - 32, 32);
		v2[n + 3] ^= 1;
		reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, 0, 0, v2, n + 35, NULL, -1);
		CHECK(n == 48 && failed(0, RR_INVALID_FIELD) && strstr(r_msg(0), "does not match"),
		      "Ed25519 PKCS#8 v2 with another public key -> Invalid Field: %s", r_msg(0));
		v2[n + 3] ^= 1;
		reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, 0, 0, v2, n + 35, NULL, -1);
		snprintf(uid, sizeof uid, "%s", reg_uid());
		CHECK(succeeded(0), "Ed25519 PKCS#8 v2 with its own public key: registered");
		if (uid[0])
			reg_destroy(uid);
	}

	/* Refusals, each with its reason. */
	n = reg_file("enc.p8", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "encrypted"),
	      "encrypted PKCS#8 -> Feature Not Supported: %s", r_msg(0));
	n = reg_file("ec.p8", der, sizeof der);
	reg_begin(OT_PRIVATE_KEY, NULL, -1);
	reg_block(OT_PRIVATE_KEY, KFT_PKCS_8);
	ttlv_put_bytes(E, KT_KEY_MATERIAL, der, n);
	ttlv_close(E);
	ttlv_open(E, KT_KEY_WRAPPING_DATA);
	ttlv_put_enum(E, KT_WRAPPING_METHOD, 1);
	ttlv_close(E);
	ttlv_close(E);
	ttlv_close(E);
	item_end();
	transmit();
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "Key Wrapping Data"),
	      "Key Wrapping Data -> Feature Not Supported: %s", r_msg(0));
	reg_begin(OT_CERTIFICATE, NULL, -1);
	ttlv_open(E, KT_CERTIFICATE);
	ttlv_put_enum(E, KT_CERTIFICATE_TYPE, 1);
	ttlv_put_bytes(E, KT_CERTIFICATE_VALUE, der, 16);
	ttlv_close(E);
	item_end();
	transmit();
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "CERTIFICATE"),
	      "Register of a Certificate -> Feature Not Supported: %s", r_msg(0));
	reg_der(OT_SYMMETRIC_KEY, KFT_RAW, ALG_AES, 128, der, 16, NULL, -1);
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "SYMMETRIC_KEY"),
	      "Register of a Symmetric Key -> Feature Not Supported: %s", r_msg(0));
	n = reg_file("k1.p8", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "curve"),
	      "a secp256k1 key -> Feature Not Supported: %s", r_msg(0));
	n = reg_file("ed448.p8", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "Ed448"),
	      "an Ed448 private key -> Feature Not Supported: %s", r_msg(0));
	/* ECPrivateKey of key A with the publicKey of key B (both P-256: the last 65 bytes). */
	n = reg_file("ec.sec1", der, sizeof der);
	size_t n2 = reg_file("ecb.sec1", der2, sizeof der2);
	if (n > 65 && n2 > 65)
		memcpy(der + n - 65, der2 + n2 - 65, 65);
	reg_der(OT_PRIVATE_KEY, KFT_EC_PRIVATE_KEY, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_INVALID_FIELD) && strstr(r_msg(0), "does not match"),
	      "a private key whose given public key is another's -> Invalid Field: %s", r_msg(0));
	n = reg_file("ec.sec1", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_1, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_INVALID_FIELD), "an EC key sent as PKCS#1 -> Invalid Field: %s", r_msg(0));
	reg_der(OT_PRIVATE_KEY, KFT_EC_PRIVATE_KEY, ALG_RSA, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_INVALID_FIELD), "Cryptographic Algorithm RSA for an EC key -> Invalid "
	      "Field: %s", r_msg(0));
	reg_der(OT_PRIVATE_KEY, KFT_OPAQUE, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED), "Opaque private key -> Key Format Type "
	      "Not Supported");
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, 0, 0, der, 20, NULL, -1);
	CHECK(failed(0, RR_INVALID_FIELD), "truncated DER -> Invalid Field: %s", r_msg(0));
	reg_der(OT_PUBLIC_KEY, KFT_X_509, 0, 0, der, n, NULL, -1);
	CHECK(failed(0, RR_INVALID_FIELD), "a private key as a Public Key -> Invalid Field");

	/* The trace dump of a Register never shows private key material. */
	n = reg_file("ec.sec1", der, sizeof der);
	reg_begin(OT_PRIVATE_KEY, NULL, -1);
	reg_block(OT_PRIVATE_KEY, KFT_TRANSPARENT_ECDSA_PRIVATE_KEY);
	ttlv_open(E, KT_KEY_MATERIAL);
	ttlv_put_enum(E, KT_RECOMMENDED_CURVE, CURVE_P_256);
	ttlv_put_bigint(E, KT_D, der + 7, 32);
	ttlv_close(E);
	ttlv_close(E);
	ttlv_close(E);
	ttlv_close(E);
	item_end();
	ttlv_close(E);
	static struct ttlv ditems[256];
	struct ttlv_doc dd = { ditems, 0, 256 };
	static char dump[16384];
	char dhex[17];
	hex_upper(dhex, der + 7, 8);
	for (char *c = dhex; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	int dec = ttlv_decode(&dd, req_buf, E->len, TTLV_DEFAULT_DEPTH) == 0;
	if (dec)
		kmip_dump(&dd, dump, sizeof dump);
	const char *dl = dec ? strstr(dump, "D (42002E) BigInteger len=") : NULL;
	const char *eol = dl ? strchr(dl, '\n') : NULL;
	CHECK(dl && eol && eol - dl > 5 && memcmp(eol - 5, "= ***", 5) == 0 && !strstr(dump, dhex) &&
	      strstr(dump, "PASSWORD (4200A1) TextString len=* = '***'"),
	      "the request dump masks the private key's D (and the Password)");
}

/* ==== Link, Digest, Initial Date; Locate by Digest ==== */

/* Get Attributes of uid naming one attribute (header h); its Attribute Value, or NULL. */
static const struct ttlv *attr_of(struct kreq_hdr h, const char *uid, const char *name)
{
	begin(h);
	item(OP_GET_ATTRIBUTES, NULL);
	kreq_uid(E, uid);
	ttlv_put_text(E, KT_ATTRIBUTE_NAME, name, strlen(name));
	item_end();
	transmit();
	const struct ttlv *a = child(r_payload(0), KT_ATTRIBUTE);
	return a && strcmp(str(child(a, KT_ATTRIBUTE_NAME)), name) == 0 ?
	       child(a, KT_ATTRIBUTE_VALUE) : NULL;
}

/* Locate by Digest (hash: Hashing Algorithm), with Object Type when ot != 0. */
static void locate_digest(const uint8_t *d, size_t n, uint32_t hash, uint32_t ot)
{
	begin(H12);
	item(OP_LOCATE, NULL);
	if (ot)
		kreq_attr_enum(E, "Object Type", ot);
	kreq_attr_begin(E, "Digest");
	ttlv_open(E, KT_ATTRIBUTE_VALUE);
	ttlv_put_enum(E, KT_HASHING_ALGORITHM, hash);
	ttlv_put_bytes(E, KT_DIGEST_VALUE, d, n);
	ttlv_close(E);
	ttlv_close(E);
	item_end();
	transmit();
}

static int listed(const char *name)
{
	for (int i = 0; nth(r_payload(0), KT_ATTRIBUTE_NAME, i); i++)
		if (strcmp(str(nth(r_payload(0), KT_ATTRIBUTE_NAME, i)), name) == 0)
			return 1;
	return 0;
}

static void test_register_attributes(void)
{
	static uint8_t der[8192];
	char cmd[1024], hex[80], priv[80], pub[80], gpriv[64], gpub[64];
	uint8_t want[32];
	size_t n;

	snprintf(cmd, sizeof cmd, "cd %s && openssl pkey -in rsa.pem -pubout -outform DER | "
		 "sha256sum > rsa.sha256", tmpdir);
	int made = run(cmd) == 0 && (n = reg_file("rsa.sha256", (uint8_t *)hex, sizeof hex)) >= 64;
	CHECK(made && hex_parse(want, sizeof want, hex, 64) == 32,
	      "openssl pkey -pubout -outform DER | sha256sum of the key file");
	if (!made)
		return;
	n = reg_file("rsa.p8", der, sizeof der);
	reg_der(OT_PRIVATE_KEY, KFT_PKCS_8, ALG_RSA, 2048, der, n, "migrated", UM_SIGN);
	snprintf(priv, sizeof priv, "%s", reg_uid());
	reg_pub_of(priv, pub, sizeof pub);
	time_t now = time(NULL);

	const struct ttlv *v = attr_of(H12, priv, "Link");
	CHECK(v && num(child(v, KT_LINK_TYPE)) == LT_PUBLIC_KEY_LINK &&
	      strcmp(str(child(v, KT_LINKED_OBJECT_IDENTIFIER)), pub) == 0,
	      "Link of the private key: Public Key Link to %s", pub);
	v = attr_of(H12, pub, "Link");
	CHECK(v && num(child(v, KT_LINK_TYPE)) == LT_PRIVATE_KEY_LINK &&
	      strcmp(str(child(v, KT_LINKED_OBJECT_IDENTIFIER)), priv) == 0,
	      "Link of the public key: Private Key Link to %s", priv);

	v = attr_of(H12, priv, "Digest");
	const struct ttlv *dv = child(v, KT_DIGEST_VALUE);
	CHECK(v && num(child(v, KT_HASHING_ALGORITHM)) == HASH_SHA_256 && dv && dv->len == 32 &&
	      memcmp(dv->val, want, 32) == 0 && num(child(v, KT_KEY_FORMAT_TYPE)) == KFT_X_509,
	      "Digest of the private key: SHA-256, equal to openssl's sha256sum, Key Format X.509");
	v = attr_of(H12, pub, "Digest");
	dv = child(v, KT_DIGEST_VALUE);
	CHECK(dv && dv->len == 32 && memcmp(dv->val, want, 32) == 0,
	      "Digest of the public key: the same value");
	v = attr_of(H10, pub, "Digest");
	CHECK(v && child(v, KT_DIGEST_VALUE) && !child(v, KT_KEY_FORMAT_TYPE),
	      "Digest in a 1.0 answer: no Key Format Type (a 1.1 field)");

	v = attr_of(H12, priv, "Initial Date");
	int64_t day = (int64_t)now / 86400 * 86400;
	CHECK(v && v->type == TT_DATETIME && (v->num == day || v->num == day - 86400),
	      "Initial Date of an imported key: today 00:00 UTC (CKA_START_DATE), %lld",
	      (long long)num(v));

	one_uid(H12, OP_GET_ATTRIBUTES, priv);
	CHECK(succeeded(0) && count_of(r_payload(0), KT_ATTRIBUTE) == 7,
	      "Get Attributes without names: the 7 attributes as before, no Link / Digest / "
	      "Initial Date (%d)", count_of(r_payload(0), KT_ATTRIBUTE));
	one_uid(H12, OP_GET_ATTRIBUTE_LIST, priv);
	CHECK(succeeded(0) && listed("Link") && listed("Digest") && listed("Initial Date"),
	      "Get Attribute List names Link, Digest, Initial Date");

	locate_digest(want, 32, HASH_SHA_256, 0);
	CHECK(succeeded(0) && count_of(r_payload(0), KT_UNIQUE_IDENTIFIER) == 2 &&
	      strcmp(str(nth(r_payload(0), KT_UNIQUE_IDENTIFIER, 0)), priv) == 0 &&
	      strcmp(str(nth(r_payload(0), KT_UNIQUE_IDENTIFIER, 1)), pub) == 0,
	      "Locate by Digest: the private and the public key, nothing else");
	locate_digest(want, 32, HASH_SHA_256, OT_PUBLIC_KEY);
	CHECK(succeeded(0) && count_of(r_payload(0), KT_UNIQUE_IDENTIFIER) == 1 &&
	      strcmp(str(nth(r_payload(0), KT_UNIQUE_IDENTIFIER, 0)), pub) == 0,
	      "Locate by Digest and Object Type Public Key: the public key");
	want[0] ^= 1;
	locate_digest(want, 32, HASH_SHA_256, 0);
	CHECK(succeeded(0) && count_of(r_payload(0), KT_UNIQUE_IDENTIFIER) == 0,
	      "Locate by another Digest: nothing");
	locate_digest(want, 20, HASH_SHA_1, 0);
	CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED), "Locate by a SHA-1 Digest -> Feature Not Supported");
	reg_destroy(priv);

	/* A generated key: Link and Digest as well (its Get X.509 hashed), no Initial Date. */
	if (ckp(H10, ALG_ECDSA, 256, "gen", gpriv, gpub) == 0) {
		get(gpub, KFT_X_509);
		const struct ttlv *km = key_material();
		uint8_t h[32];
		size_t hl = 0;
		int ok = km && psa_hash_compute(PSA_ALG_SHA_256, km->val, km->len, h, 32, &hl) ==
			 PSA_SUCCESS;
		v = attr_of(H12, gpriv, "Digest");
		dv = child(v, KT_DIGEST_VALUE);
		CHECK(ok && dv && dv->len == 32 && memcmp(dv->val, h, 32) == 0,
		      "Digest of a generated EC key: SHA-256 of its SubjectPublicKeyInfo");
		one_uid(H12, OP_GET_ATTRIBUTE_LIST, gpriv);
		CHECK(succeeded(0) && listed("Link") && listed("Digest") && !listed("Initial Date"),
		      "a generated key (no CKA_START_DATE): Link and Digest listed, no Initial Date");
		one_uid(H10, OP_DESTROY, gpub);
		v = attr_of(H12, gpriv, "Link");
		CHECK(succeeded(0) && !v, "no Link once the public key is destroyed");
		one_uid(H10, OP_DESTROY, gpriv);
	}
}

/* ==== SoftHSM: the main process ==== */

static void test_softhsm(void)
{
	char err[512];

	CHECK(make_token(USER, PIN) == 0, "softhsm2-util made the token '" USER "'");
	CHECK(p11_load(SOFTHSM, err, sizeof err) == CKR_OK, "SoftHSM loads: %s", err);
	if (!p11.dl)
		return;
	wrap_module();
	snprintf(env.module, sizeof env.module, "%s", p11.module);
	th = op_thread_new(&env, NULL, 0);
	if (!th) {
		CHECK(0, "a worker's op_thread on SoftHSM");
		return;
	}

	test_vectors();
	test_query();
	test_message_errors();
	test_auth_errors();
	test_uid_errors();
	test_ckp_errors();
	test_batches();
	test_response_sizes();
	lifecycle_rsa();
	lifecycle_ec(256);
	lifecycle_ec(384);
	lifecycle_ed25519();
	original_key(CKK_RSA);
	original_key(CKK_EC);
	label_not_utf8();
	test_locate();
	test_revoke();
	test_register();
	test_register_attributes();

	op_thread_free(th);
	th = NULL;
	p11_unload();
}

/* ==== nullp11 with injected faults: the forked child ==== */

/* Load nullp11 with NULLP11_FAIL = faults (read at load), a fresh thread context. */
static int null_load(const char *faults)
{
	char err[512];
	if (faults)
		setenv("NULLP11_FAIL", faults, 1);
	CK_RV rv = p11_load(NULLP11, err, sizeof err);
	unsetenv("NULLP11_FAIL");
	CHECK(rv == CKR_OK, "nullp11 loads with NULLP11_FAIL=%s: %s", faults ? faults : "", err);
	if (rv != CKR_OK)
		return -1;
	wrap_module();
	snprintf(env.module, sizeof env.module, "%s", p11.module);
	th = op_thread_new(&env, NULL, 0);
	if (!th)
		CHECK(0, "an op_thread on nullp11 (NULLP11_FAIL=%s)", faults ? faults : "");
	return th ? 0 : -1;
}

static void null_unload(void)
{
	if (th)
		op_thread_free(th);
	th = NULL;
	p11_unload();
}

static void test_nullp11(void)
{
	/* nullp11's token is "null" (PIN 1234); its fixed keys: RSA pair CKA_ID 11, P-256 22. */
	H12.user = H10.user = "null";
	if (null_load(NULL) == 0) {
		sign("11_priv", HASH_SHA_256, ALG_RSA, PAD_PKCS1_V1_5, 0, "x");
		const struct ttlv *sd = child(r_payload(0), KT_SIGNATURE_DATA);
		CHECK(succeeded(0) && sd && sd->len == 256, "nullp11 without faults: Sign 11_priv works");
		begin(H12);
		item(OP_SIGN, NULL);
		kreq_uid(E, "22_priv");
		ttlv_put_bytes(E, KT_DATA, (const uint8_t *)"x", 1);
		item_end();
		transmit();
		sd = child(r_payload(0), KT_SIGNATURE_DATA);
		CHECK(succeeded(0) && sd && der_minimal(sd->val, sd->len),
		      "nullp11: ECDSA signature DER-encoded minimally");
	}
	null_unload();

	static const struct {
		const char *faults;
		uint32_t op;
		const char *uid;
		uint32_t reason;
		const char *name;
	} cases[] = {
		{ "C_Sign=0x30", OP_SIGN, "11_priv", RR_CRYPTOGRAPHIC_FAILURE, "CKR_DEVICE_ERROR" },
		{ "C_Sign=0x68", OP_SIGN, "11_priv", RR_PERMISSION_DENIED,
		  "CKR_KEY_FUNCTION_NOT_PERMITTED" },
		{ "C_SignInit=0x68", OP_SIGN, "22_priv", RR_PERMISSION_DENIED,
		  "CKR_KEY_FUNCTION_NOT_PERMITTED" },
		{ "C_Login=0xA0", OP_GET, "11_pub", RR_AUTHENTICATION_NOT_SUCCESSFUL,
		  "CKR_PIN_INCORRECT" },
		{ "C_Login=0xA4", OP_GET, "11_pub", RR_AUTHENTICATION_NOT_SUCCESSFUL, "CKR_PIN_LOCKED" },
		{ "C_GetAttributeValue=0x30", OP_GET, "11_pub", RR_CRYPTOGRAPHIC_FAILURE,
		  "CKR_DEVICE_ERROR" },
		{ "C_DestroyObject=0x1B", OP_DESTROY, "11_pub", RR_PERMISSION_DENIED,
		  "CKR_ACTION_PROHIBITED" },
		{ "C_SetAttributeValue=0xE2", OP_MODIFY_ATTRIBUTE, "11_pub", RR_PERMISSION_DENIED,
		  "CKR_TOKEN_WRITE_PROTECTED" },
		{ "C_GenerateKeyPair=0x31", OP_CREATE_KEY_PAIR, NULL, RR_GENERAL_FAILURE,
		  "CKR_DEVICE_MEMORY" },
		{ "C_FindObjectsInit=0x30", OP_GET, "11_pub", RR_CRYPTOGRAPHIC_FAILURE,
		  "CKR_DEVICE_ERROR" },
		{ "C_OpenSession=0x30", OP_GET, "11_pub", RR_CRYPTOGRAPHIC_FAILURE,
		  "CKR_DEVICE_ERROR" },
		{ "C_GetSlotList=0x30", OP_GET, "11_pub", RR_CRYPTOGRAPHIC_FAILURE,
		  "CKR_DEVICE_ERROR" },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		if (null_load(cases[i].faults) != 0) {
			null_unload();
			continue;
		}
		if (cases[i].op == OP_CREATE_KEY_PAIR) {
			ckp_request(H12, ALG_RSA, 2048, 0, "k", "p");
		} else {
			begin(H12);
			item(cases[i].op, NULL);
			kreq_uid(E, cases[i].uid);
			if (cases[i].op == OP_SIGN)
				ttlv_put_bytes(E, KT_DATA, (const uint8_t *)"x", 1);
			if (cases[i].op == OP_MODIFY_ATTRIBUTE)
				kreq_attr_name(E, "new");
			item_end();
		}
		transmit();
		CHECK(r_op(0) == cases[i].op && failed(0, cases[i].reason) &&
		      strstr(r_msg(0), cases[i].name),
		      "%s -> Result Reason 0x%x, message names %s: '%s'", cases[i].faults,
		      cases[i].reason, cases[i].name, r_msg(0));
		null_unload();
	}

	/*
	 * A lost session: every C_FindObjectsInit says CKR_SESSION_HANDLE_INVALID.  op_item
	 * drops the session, opens a new one and runs the item once more; nullp11 fails again
	 * (the fault is fixed), so the second failure is the answer: General Failure naming
	 * the code.  Two C_OpenSession calls, no crash, and the thread goes on serving.
	 */
	if (null_load("C_FindObjectsInit=0xB3") == 0) {
		open_calls = 0;
		begin(H12);
		item(OP_GET, NULL);
		kreq_uid(E, "11_pub");
		item_end();
		transmit();
		CHECK(failed(0, RR_GENERAL_FAILURE) && strstr(r_msg(0), "CKR_SESSION_HANDLE_INVALID"),
		      "lost session twice -> General Failure naming CKR_SESSION_HANDLE_INVALID: '%s'",
		      r_msg(0));
		CHECK(open_calls == 2 && th->nsess == 1,
		      "lost session: reopened once and retried (%d C_OpenSession, %d kept)",
		      open_calls, th->nsess);
		query(H12, 1, 0, 0);
		CHECK(succeeded(0), "after a lost session the thread still serves");
		login_calls = 0;
		begin(H12);
		item(OP_ACTIVATE, NULL);
		kreq_uid(E, "11_priv");
		item_end();
		transmit();
		CHECK(failed(0, RR_GENERAL_FAILURE) && login_calls == 0,
		      "a later request on the reopened session: no second C_Login (%d)", login_calls);
	}
	null_unload();
}

/* ==== the module's failures and their recovery (nullp11's knobs, in the child) ==== */

static int (*nctl)(const char *);
static unsigned long (*ncalls)(const char *);

/* nullp11 loaded afresh with its knobs found, and the log going to a file of its own. */
static FILE *log_fp;

static int knobs_load(void)
{
	if (null_load(NULL) != 0)
		return -1;
	*(void **)&nctl = dlsym(p11.dl, "nullp11_ctl");
	*(void **)&ncalls = dlsym(p11.dl, "nullp11_calls");
	CHECK(nctl && ncalls, "nullp11 exports nullp11_ctl and nullp11_calls");
	if (!nctl || !ncalls)
		return -1;
	if (log_fp)
		fclose(log_fp);
	log_fp = tmpfile();
	log_state.file = log_fp;
	log_state.target = log_fp ? LOG_TO_FILE : LOG_TO_STDERR;
	log_state.level = LV_INFO;
	return log_fp ? 0 : -1;
}

static void knobs_unload(void)
{
	null_unload();
	log_state.target = LOG_TO_STDERR;
	log_state.level = LV_ERROR;
}

/* Lines of the log since knobs_load that contain every one of up to three strings. */
static int log_lines(const char *a, const char *b, const char *c)
{
	char line[1200];
	int n = 0;
	if (!log_fp)
		return -1;
	fflush(log_fp);
	rewind(log_fp);
	while (fgets(line, sizeof line, log_fp))
		if (strstr(line, a) && (!b || strstr(line, b)) && (!c || strstr(line, c)))
			n++;
	fseek(log_fp, 0, SEEK_END);
	return n;
}

static void sign11(void)
{
	sign("11_priv", 0, 0, 0, 0, "x");
}

/* A module that fails C_Sign and leaves the operation active (as some vendor libraries
 * do) must not leave the session failing with CKR_OPERATION_ACTIVE for good. */
static void sticky_sign(int v3)
{
	if (!v3)
		setenv("NULLP11_NO_V3", "1", 1);
	int rc = knobs_load();
	unsetenv("NULLP11_NO_V3");
	if (rc != 0) {
		knobs_unload();
		return;
	}
	const char *what = v3 ? "3.0 module" : "2.40 module";
	CHECK(p11.v3 == v3, "%s: loaded through the %s interface", what, v3 ? "3.0" : "2.40");
	nctl("sticky-sign");
	nctl("fail C_Sign=0x30*1");
	sign11();
	CHECK(failed(0, RR_CRYPTOGRAPHIC_FAILURE) && strcmp(r_msg(0), "C_Sign: CKR_DEVICE_ERROR") == 0,
	      "%s: C_Sign's failure answered, the message names C_Sign: '%s'", what, r_msg(0));
	CHECK(log_lines("[warning]", "slot 1 (\"null\"): C_Sign: CKR_DEVICE_ERROR", NULL) == 1,
	      "%s: C_Sign's CKR_DEVICE_ERROR logged at warning with the call and the slot", what);
	open_calls = 0;
	unsigned long closes = ncalls("C_CloseSession");
	sign11();
	CHECK(succeeded(0), "%s: the next Sign on that worker succeeds (not CKR_OPERATION_ACTIVE): "
	      "'%s'", what, r_msg(0));
	if (v3)
		CHECK(open_calls == 0 && ncalls("C_CloseSession") == closes,
		      "3.0: the operation is ended with C_SignInit(NULL), the session kept (%d opened)",
		      open_calls);
	else
		CHECK(open_calls == 1 && ncalls("C_CloseSession") == closes + 1,
		      "2.40: the session is closed and another opened (%d opened)", open_calls);
	sign11();
	CHECK(succeeded(0), "%s: and the one after", what);
	knobs_unload();
}

static void test_recovery(void)
{
	/* The Result Message names the call that failed: C_SignInit, not C_Sign. */
	if (knobs_load() == 0) {
		nctl("fail C_SignInit=0x68");
		sign11();
		CHECK(failed(0, RR_PERMISSION_DENIED) &&
		      strcmp(r_msg(0), "C_SignInit: CKR_KEY_FUNCTION_NOT_PERMITTED") == 0,
		      "C_SignInit's failure is named C_SignInit: '%s'", r_msg(0));
		CHECK(log_lines("[warning]", "CKR_KEY_FUNCTION_NOT_PERMITTED", NULL) == 0 &&
		      log_lines("CKR_KEY_FUNCTION_NOT_PERMITTED", NULL, NULL) == 0,
		      "a request's own failure is not a warning (debug only)");
	}
	knobs_unload();
	sticky_sign(1);
	sticky_sign(0);

	/* A lost session reopened inside a request (the token was pulled and put back between
	 * the login and C_SignInit) is logged in again before the request runs once more. */
	if (knobs_load() == 0) {
		sign11();
		CHECK(succeeded(0), "first Sign");
		nctl("reinsert-at C_SignInit");
		login_calls = 0;
		sign11();
		CHECK(succeeded(0) && login_calls == 1,
		      "re-inserted token: the retried Sign logs in again and succeeds (%d C_Login): "
		      "'%s'", login_calls, r_msg(0));
		CHECK(log_lines("[warning]", "C_SignInit: CKR_SESSION_HANDLE_INVALID", NULL) == 1,
		      "the lost session is logged at warning");
		nctl("reinsert-new-at C_SignInit");
		login_calls = 0;
		sign11();
		CHECK(succeeded(0) && login_calls == 1 && th->nsess == 1 &&
		      th->sess[0].slot->id == 2,
		      "re-inserted under a new slot ID: the username is resolved again, logged in, "
		      "served (%d C_Login): '%s'", login_calls, r_msg(0));
	}
	knobs_unload();

	/* Removed between requests, then back in a new slot: no restart, and while it is out
	 * the client is told the token failed, not that its key or its credential is wrong. */
	if (knobs_load() == 0) {
		get("11_pub", 0);
		CHECK(succeeded(0), "Get before the token is removed");
		nctl("remove");
		get("11_pub", 0);
		CHECK(failed(0, RR_CRYPTOGRAPHIC_FAILURE) && strstr(r_msg(0), "CKR_TOKEN_NOT_PRESENT"),
		      "token removed: Cryptographic Failure naming CKR_TOKEN_NOT_PRESENT, not Item Not "
		      "Found or Authentication Not Successful: '%s'", r_msg(0));
		CHECK(log_lines("[warning]", "CKR_TOKEN_NOT_PRESENT", NULL) >= 1,
		      "the missing token is logged at warning");
		CHECK(ncalls("C_Initialize") <= 2, "at most one re-initialisation for it (%lu C_Initialize)",
		      ncalls("C_Initialize"));
		nctl("insert-new-slot");
		login_calls = 0;
		get("11_pub", 0);
		CHECK(succeeded(0) && login_calls == 1, "token back in a new slot: served again, "
		      "logged in again (%d C_Login): '%s'", login_calls, r_msg(0));
	}
	knobs_unload();

	/* A stuck module: slot and session calls fail with CKR_GENERAL_ERROR until it is
	 * initialized again. */
	if (knobs_load() == 0) {
		sign11();
		CHECK(succeeded(0), "Sign before the module is stuck");
		nctl("stuck");
		sign11();
		CHECK(succeeded(0) && ncalls("C_Finalize") == 1 && ncalls("C_Initialize") == 2,
		      "stuck module: re-initialised (%lu C_Finalize, %lu C_Initialize) and the "
		      "request served: '%s'", ncalls("C_Finalize"), ncalls("C_Initialize"), r_msg(0));
		CHECK(log_lines("[warning]", "re-initialising the PKCS#11 module", NULL) == 1 &&
		      log_lines("[warning]", "PKCS#11 module re-initialised", NULL) == 1,
		      "the re-initialisation is logged at warning");
		CHECK(log_lines("[warning] C_GetSlotList: CKR_GENERAL_ERROR", NULL, NULL) == 1,
		      "the failing C_GetSlotList is logged at warning");
		nctl("stuck");
		for (int i = 0; i < 5; i++) {
			sign11();
			CHECK(failed(0, RR_GENERAL_FAILURE) &&
			      strcmp(r_msg(0), "C_GetSlotList: CKR_GENERAL_ERROR") == 0,
			      "stuck again at once (%d): General Failure naming C_GetSlotList: '%s'", i,
			      r_msg(0));
		}
		CHECK(ncalls("C_Initialize") == 2,
		      "no second re-initialisation within %d ms (%lu C_Initialize)", P11_REINIT_GAP_MS,
		      ncalls("C_Initialize"));
		CHECK(log_lines("[warning] C_GetSlotList: CKR_GENERAL_ERROR", NULL, NULL) == 1,
		      "six failures of one call within a second: one warning (%d)",
		      log_lines("[warning] C_GetSlotList: CKR_GENERAL_ERROR", NULL, NULL));
		usleep(1100 * 1000);
		sign11();
		CHECK(log_lines("C_GetSlotList: CKR_GENERAL_ERROR (and 5 more since the last report)",
				NULL, NULL) == 1, "a second later: one more warning, with the count left out");
		p11.reinit_ms -= P11_REINIT_GAP_MS;    /* as if the bound had passed */
		sign11();
		CHECK(succeeded(0) && ncalls("C_Initialize") == 3,
		      "after the bound: re-initialised again, served again (%lu C_Initialize): '%s'",
		      ncalls("C_Initialize"), r_msg(0));
	}
	knobs_unload();

	/* A store that cannot be read (SoftHSM2 with its token directory gone) finds nothing:
	 * that is not Item Not Found. */
	if (knobs_load() == 0) {
		get("11_pub", 0);
		CHECK(succeeded(0), "Get before the store goes");
		p11.reinit_ms = mono_ms();             /* no re-initialisation in this test */
		nctl("store-gone");
		get("11_pub", 0);
		CHECK(failed(0, RR_GENERAL_FAILURE) &&
		      strcmp(r_msg(0), "C_GetTokenInfo after C_FindObjects found nothing: "
			     "CKR_GENERAL_ERROR") == 0,
		      "unreadable store: General Failure naming the failed call, not Item Not Found: "
		      "'%s'", r_msg(0));
		begin(H10);
		item(OP_LOCATE, NULL);
		item_end();
		transmit();
		CHECK(failed(0, RR_GENERAL_FAILURE) && strstr(r_msg(0), "C_GetTokenInfo"),
		      "unreadable store: Locate fails rather than finding nothing: '%s'", r_msg(0));
		nctl("store-back");
		get("11_pub", 0);
		CHECK(succeeded(0), "store back: served again");
		get("99_pub", 0);
		CHECK(failed(0, RR_ITEM_NOT_FOUND), "a key that is not there is still Item Not Found");
	}
	knobs_unload();

	/* Destroy, Revoke and Modify Attribute act on the object the UID names, never on what a
	 * cached handle names now: nullp11 deletes the pair 11 and gives its handles to a new
	 * pair 44 while this thread has them cached (each operation on a fresh module, so that
	 * no earlier Destroy has emptied the cache). */
	static const struct { uint32_t op; const char *uid, *call; } destructive[] = {
		{ OP_DESTROY, "11_priv", "C_DestroyObject" },
		{ OP_REVOKE, "11_pub", "C_SetAttributeValue" },
		{ OP_MODIFY_ATTRIBUTE, "11_pub", "C_SetAttributeValue" },
	};
	for (size_t i = 0; i < ARRAY_LEN(destructive); i++) {
		if (knobs_load() == 0) {
			get("11_pub", 0);
			one_uid(H10, OP_ACTIVATE, "11_priv");
			CHECK(succeeded(0), "Get 11_pub and Activate 11_priv cache handles 1 and 2");
			nctl("reuse-handles");
			begin(H10);
			item(destructive[i].op, NULL);
			kreq_uid(E, destructive[i].uid);
			if (destructive[i].op == OP_REVOKE) {
				ttlv_open(E, KT_REVOCATION_REASON);
				ttlv_put_enum(E, KT_REVOCATION_REASON_CODE, REV_KEY_COMPROMISE);
				ttlv_close(E);
			} else if (destructive[i].op == OP_MODIFY_ATTRIBUTE) {
				kreq_attr_name(E, "renamed");
			}
			item_end();
			transmit();
			CHECK(failed(0, RR_ITEM_NOT_FOUND) && ncalls(destructive[i].call) == 0,
			      "%s %s, its cached handle now another key's: Item Not Found and no %s (%lu)",
			      op_enum_name(KT_OPERATION, destructive[i].op, (char[12]){ 0 }),
			      destructive[i].uid, destructive[i].call, ncalls(destructive[i].call));
			if (destructive[i].op == OP_DESTROY) {
				one_uid(H10, OP_DESTROY, "44_priv");
				CHECK(succeeded(0) && ncalls("C_DestroyObject") == 1,
				      "Destroy 44_priv reaches the new key (%lu)", ncalls("C_DestroyObject"));
			}
		}
		knobs_unload();
	}
}

/* Two workers sign without pause while the module gets stuck again and again: each
 * re-initialisation waits for the requests in flight, and no worker uses a session or slot
 * from before one (the sanitizers would see a freed slot).  Every answer is a Response
 * Message, each a success or General Failure, and the workers end up served. */
struct hammer {
	struct op_thread *t;
	int ok, general, other, stop;
};

static void *hammer_run(void *arg)
{
	struct hammer *hm = arg;
	static const struct kreq_hdr hn = { 1, 2, "null", "1234", -1, 0, 1 };
	uint8_t in[1024], out[4096];
	struct ttlv it[64];
	struct ttlv_enc e;

	kreq_one(&e, in, sizeof in, &hn, OP_SIGN);
	kreq_uid(&e, "22_priv");
	ttlv_put_bytes(&e, KT_DATA, (const uint8_t *)"x", 1);
	size_t n = kreq_one_end(&e);
	while (!__atomic_load_n(&hm->stop, __ATOMIC_ACQUIRE)) {
		size_t len = op_handle(hm->t, in, n, out, sizeof out);
		struct ttlv_doc d = { it, 0, 64 };
		int64_t status = -1, reason = 0;
		if (ttlv_decode(&d, out, len, 0) == 0)
			for (int i = 0; i < d.n; i++) {
				if (d.it[i].tag == KT_RESULT_STATUS)
					status = d.it[i].num;
				if (d.it[i].tag == KT_RESULT_REASON)
					reason = d.it[i].num;
			}
		if (status == RS_SUCCESS)
			hm->ok++;
		else if (status == RS_OPERATION_FAILED && reason == RR_GENERAL_FAILURE)
			hm->general++;
		else
			hm->other++;
	}
	return NULL;
}

static void test_reinit_under_load(void)
{
	struct hammer hm[2];
	pthread_t tid[2];
	int started = 0;

	if (knobs_load() != 0) {
		knobs_unload();
		return;
	}
	p11_reinit_gap_ms = 0;          /* every stuck module is re-initialised at once */
	memset(hm, 0, sizeof hm);
	for (int i = 0; i < 2; i++) {
		hm[i].t = op_thread_new(&env, NULL, i + 1);
		if (hm[i].t && pthread_create(&tid[i], NULL, hammer_run, &hm[i]) == 0)
			started++;
	}
	CHECK(started == 2, "two workers started");
	for (int k = 0; k < 20 && started == 2; k++) {
		usleep(5000);
		nctl("stuck");
	}
	usleep(20000);
	for (int i = 0; i < started; i++) {
		__atomic_store_n(&hm[i].stop, 1, __ATOMIC_RELEASE);
		pthread_join(tid[i], NULL);
	}
	if (started == 2) {
		CHECK(hm[0].other == 0 && hm[1].other == 0,
		      "under load: every answer a success or General Failure (%d, %d others)",
		      hm[0].other, hm[1].other);
		printf("NOTE under load: %d and %d signatures, %d and %d General Failures, %lu "
		       "re-initialisations\n", hm[0].ok, hm[1].ok, hm[0].general, hm[1].general,
		       ncalls("C_Initialize") - 1);
		CHECK(hm[0].ok > 0 && hm[1].ok > 0 && ncalls("C_Initialize") > 2,
		      "under load: both workers served (%d and %d signatures, %d and %d failures) "
		      "across %lu re-initialisations", hm[0].ok, hm[1].ok, hm[0].general,
		      hm[1].general, ncalls("C_Initialize") - 1);
	}
	for (int i = 0; i < 2; i++)
		if (hm[i].t)
			op_thread_free(hm[i].t);
	p11_reinit_gap_ms = P11_REINIT_GAP_MS;
	knobs_unload();
}

/* A request runs on its own thread; done says when op_handle returned. */
struct gated_req {
	struct op_thread *t;
	uint8_t in[1024], out[4096];
	size_t n;
	int done;
};

static void *gated_run(void *arg)
{
	struct gated_req *g = arg;
	op_handle(g->t, g->in, g->n, g->out, sizeof g->out);
	__atomic_store_n(&g->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int gated_done_within(struct gated_req *g, int ms)
{
	for (int i = 0; i < ms / 10 && !__atomic_load_n(&g->done, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	return __atomic_load_n(&g->done, __ATOMIC_ACQUIRE);
}

/* While a re-initialisation holds the module's gate, a request that needs no module call
 * (the event loop answers those itself) is answered at once; one that needs the module
 * waits until the re-initialisation is over. */
static void test_gate_cheap(void)
{
	static struct gated_req cheap, dear;
	static const struct kreq_hdr anon = { 1, 2, NULL, NULL, -1, 0, 1 };
	static const struct kreq_hdr cred = { 1, 0, "null", "1234", -1, 0, 1 };
	struct ttlv_enc e;
	pthread_t a, b;

	if (knobs_load() != 0) {
		knobs_unload();
		return;
	}
	memset(&cheap, 0, sizeof cheap);
	memset(&dear, 0, sizeof dear);
	cheap.t = op_thread_new(&env, NULL, 1);
	dear.t = op_thread_new(&env, NULL, 2);
	kreq_one(&e, cheap.in, sizeof cheap.in, &anon, OP_QUERY);
	ttlv_put_enum(&e, KT_QUERY_FUNCTION, QF_QUERY_OPERATIONS);
	cheap.n = kreq_one_end(&e);
	kreq_one(&e, dear.in, sizeof dear.in, &cred, OP_GET);
	kreq_uid(&e, "11_pub");
	dear.n = kreq_one_end(&e);
	if (!cheap.t || !dear.t || !cheap.n || !dear.n) {
		CHECK(0, "gate test set up");
		knobs_unload();
		return;
	}
	pthread_rwlock_wrlock(&p11_gate);      /* as a re-initialisation does */
	int sa = pthread_create(&a, NULL, gated_run, &cheap);
	int sb = pthread_create(&b, NULL, gated_run, &dear);
	int cheap_done = sa == 0 && gated_done_within(&cheap, 2000);
	int dear_waited = sb == 0 && !gated_done_within(&dear, 200);
	pthread_rwlock_unlock(&p11_gate);
	if (sa == 0)
		pthread_join(a, NULL);
	if (sb == 0)
		pthread_join(b, NULL);
	CHECK(cheap_done, "a Query without a credential is answered while the module's gate is "
	      "held for a re-initialisation");
	CHECK(dear_waited && dear.done, "a Get waits for the re-initialisation, then is answered");
	op_thread_free(cheap.t);
	op_thread_free(dear.t);
	knobs_unload();
}

/* The PIN's length does not show in a trace dump: a request with a 4-byte PIN and one with
 * a 15-byte PIN dump alike. */
static void test_dump_pin(void)
{
	static char d1[8192], d2[8192];
	static uint8_t m1[1024];
	struct ttlv it[64];
	struct kreq_hdr h = H12;
	size_t n1;

	h.pass = "1234";
	begin(h);
	item(OP_QUERY, NULL);
	item_end();
	n1 = kreq_end(E);
	memcpy(m1, req_buf, n1 < sizeof m1 ? n1 : sizeof m1);
	struct ttlv_doc d = { it, 0, 64 };
	CHECK(ttlv_decode(&d, m1, n1, 0) == 0, "the 4-byte-PIN request decodes");
	kmip_dump(&d, d1, sizeof d1);
	h.pass = "123456789012345";
	begin(h);
	item(OP_QUERY, NULL);
	item_end();
	size_t n2 = kreq_end(E);
	d.n = 0;
	CHECK(n2 > 0 && ttlv_decode(&d, req_buf, n2, 0) == 0, "the 15-byte-PIN request decodes");
	kmip_dump(&d, d2, sizeof d2);
	CHECK(strstr(d1, "'***'") && strcmp(d1, d2) == 0,
	      "trace dumps of requests with PINs of 4 and 15 bytes are the same:\n%s---\n%s", d1, d2);
}

/*
 * What the token can do decides before anything is created: nullp11 without EC key
 * generation, and with a TPM's EC sizes (256..384 bits), with C_GenerateKeyPair made to
 * fail so that a call to it would show.  Query follows the token when a username is given.
 */
static int op_listed(int op)
{
	for (int i = 0; nth(r_payload(0), KT_OPERATION, i); i++)
		if (num(nth(r_payload(0), KT_OPERATION, i)) == op)
			return 1;
	return 0;
}

static void test_capabilities(void)
{
	setenv("NULLP11_MECHS", "0x0,0x1,0x40,0x1041", 1);  /* RSA gen, RSA_PKCS, SHA256_RSA, ECDSA */
	int loaded = null_load("C_GenerateKeyPair=0x30") == 0;
	unsetenv("NULLP11_MECHS");
	if (loaded) {
		ckp_request(H12, ALG_ECDSA, 256, 0, "k", "p");
		transmit();
		CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "CKM_EC_KEY_PAIR_GEN"),
		      "no CKM_EC_KEY_PAIR_GEN: P-256 Create Key Pair is Feature Not Supported naming "
		      "the mechanism, before C_GenerateKeyPair: '%s'", r_msg(0));
		ckp_request(H12, ALG_RSA, 2048, 0, "k", "p");
		transmit();
		CHECK(failed(0, RR_CRYPTOGRAPHIC_FAILURE) && strstr(r_msg(0), "C_GenerateKeyPair"),
		      "RSA is listed: the request reaches C_GenerateKeyPair ('%s')", r_msg(0));
		ckp_request(H12, ALG_ED25519, 0, 0, "k", "p");
		transmit();
		CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) &&
		      strstr(r_msg(0), "CKM_EC_EDWARDS_KEY_PAIR_GEN"),
		      "no Edwards generation: Ed25519 refused naming the mechanism: '%s'", r_msg(0));
		query(H12, 1, 1, 0);
		CHECK(succeeded(0) && op_listed(OP_CREATE_KEY_PAIR) && op_listed(OP_SIGN),
		      "Query for the token: Create Key Pair and Sign listed (RSA can do both)");
	}
	null_unload();

	setenv("NULLP11_MECHS", "0x1,0x1041", 1);           /* signing only, no generation */
	loaded = null_load(NULL) == 0;
	unsetenv("NULLP11_MECHS");
	if (loaded) {
		query(H12, 1, 0, 0);
		CHECK(succeeded(0) && !op_listed(OP_CREATE_KEY_PAIR) && op_listed(OP_SIGN) &&
		      op_listed(OP_GET), "Query for a token that cannot generate: no Create Key Pair");
		struct kreq_hdr anon = { 1, 2, NULL, NULL, -1, 0, 1 };
		query(anon, 1, 0, 0);
		CHECK(succeeded(0) && op_listed(OP_CREATE_KEY_PAIR),
		      "Query without a username: the server's whole list");
	}
	null_unload();

	if (null_load("C_GenerateKeyPair=0x30") == 0) {
		ckp_request(H12, ALG_ECDSA, 521, 0, "k", "p");
		transmit();
		CHECK(failed(0, RR_FEATURE_NOT_SUPPORTED) && strstr(r_msg(0), "256..384"),
		      "EC sizes 256..384 (C_GetMechanismInfo): P-521 refused with the range: '%s'",
		      r_msg(0));
		ckp_request(H12, ALG_ECDSA, 384, 0, "k", "p");
		transmit();
		CHECK(failed(0, RR_CRYPTOGRAPHIC_FAILURE),
		      "P-384 is within the range: C_GenerateKeyPair is called");
	}
	null_unload();
}

int main(int argc, char **argv)
{
	char cmd[300];
	int fds[2];

	(void)argc;
	(void)argv;
	log_state.level = LV_ERROR;
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}

	/* nullp11 first, in a child: p11 state is one module per process. */
	fflush(stdout);
	if (pipe(fds) != 0) {
		perror("pipe");
		return 1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		test_nullp11();
		test_recovery();
		test_reinit_under_load();
		test_gate_cheap();
		test_dump_pin();
		test_capabilities();
		int counts[3] = { check_passed, check_failed, check_skipped };
		ssize_t w = write(fds[1], counts, sizeof counts);
		(void)w;
		close(fds[1]);
		fflush(stdout);
		exit(0);
	}
	close(fds[1]);
	int counts[3] = { 0, 0, 0 }, st = 0;
	ssize_t got = read(fds[0], counts, sizeof counts);
	close(fds[0]);
	waitpid(pid, &st, 0);
	check_passed += counts[0];
	check_failed += counts[1];
	check_skipped += counts[2];
	CHECK(got == (ssize_t)sizeof counts && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "the nullp11 child ran to its end (status 0x%x)", st);
	if (softhsm_wanted())
		test_softhsm();

	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	run(cmd);
	return check_summary();
}
