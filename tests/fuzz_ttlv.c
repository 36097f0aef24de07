/*
 * Fuzz target for sections 2-4: frame, decode, parse as a request, dump, re-encode and
 * compare, and answer it (response encoder into a tight buffer with guard bytes).
 *
 *   libFuzzer:  clang -g -O1 -fsanitize=fuzzer,address,undefined -DK2P_TEST -DK2P_FUZZ \
 *                     -Itests -I. tests/fuzz_ttlv.c -o build/fuzz_ttlv -lmbedcrypto
 *               build/fuzz_ttlv -dict=tests/ttlv.dict tests/corpus/ttlv
 *   replay:     cc ... -DK2P_TEST -DK2P_FUZZ_REPLAY tests/fuzz_ttlv.c -o build/fuzz_ttlv_replay
 *               build/fuzz_ttlv_replay tests/corpus/ttlv [more files or directories]
 *               build/fuzz_ttlv_replay -seeds DIR   writes the seed corpus (our own encoder)
 *               (ends with "N passed, N failed": one per input; tests/fuzz_replay.h)
 */
#include "../kmip2pkcs11.c"

static struct ttlv fz_items[512];
static struct kmip_request fz_req;
static char fz_text[1 << 16];
static uint8_t fz_out[1 << 16];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ttlv_doc d = { fz_items, 0, (int)ARRAY_LEN(fz_items) };
	struct ttlv_enc e;
	const char *why;

	/* framing on every prefix length that matters: header bytes and the whole input */
	for (size_t k = 0; k <= size && k <= TTLV_HDR; k++)
		(void)ttlv_frame(data, k);
	long f = ttlv_frame(data, size);

	int rc = ttlv_decode(&d, data, size, TTLV_DEFAULT_DEPTH);
	if (rc != 0) {
		(void)ttlv_strerror(rc);
		return 0;
	}
	/* a message that decodes is framed to exactly its size, if it is a Structure */
	if (d.it[0].type == TT_STRUCT && f != (long)size)
		abort();

	/* strict decoding means canonical encoding: the round trip is byte for byte */
	if (size <= sizeof fz_out) {
		ttlv_enc_init(&e, fz_out, size);
		ttlv_put_item(&e, &d, &d.it[0]);
		if (e.err || e.len != size || memcmp(fz_out, data, size) != 0)
			abort();
	}

	kmip_dump(&d, fz_text, sizeof fz_text);
	kmip_dump(&d, fz_text, 17);

	/* a request: answer every item the way section 7 will, into a tight buffer */
	uint32_t rr = kmip_parse_request(&d, &fz_req, &why);
	size_t cap = size % 700;
	uint8_t *out = malloc(cap + 8);
	memset(out, 0xA5, cap + 8);
	ttlv_enc_init(&e, out, cap);
	if (rr) {
		kmip_resp_error(&e, fz_req.major, fz_req.minor, 0, rr, why);
	} else {
		kmip_resp_begin(&e, fz_req.major, fz_req.minor, (uint32_t)fz_req.n, 0);
		for (int i = 0; i < fz_req.n; i++) {
			const struct kmip_item *it = &fz_req.item[i];
			if (it->reason) {
				kmip_item_begin(&e, it->op, it, RS_OPERATION_FAILED, it->reason, it->why);
			} else {
				kmip_item_begin(&e, it->op, it, RS_SUCCESS, 0, NULL);
				ttlv_open(&e, KT_RESPONSE_PAYLOAD);
				const char *s;
				uint32_t n;
				if (kmip_get_text(&d, it->payload, KT_UNIQUE_IDENTIFIER, &s, &n) == 0)
					ttlv_put_text(&e, KT_UNIQUE_IDENTIFIER, s, n);
				const struct ttlv *tmpl = NULL, *v;
				(void)kmip_get_struct(&d, it->payload, KT_TEMPLATE_ATTRIBUTE, &tmpl);
				(void)kmip_get_struct(&d, it->payload, KT_COMMON_TEMPLATE_ATTRIBUTE, &tmpl);
				for (int k = 0; (v = kmip_attr_value(&d, tmpl, "Name", k)) != NULL; k++)
					ttlv_put_item(&e, &d, v);
				ttlv_close(&e);
			}
			ttlv_close(&e);
		}
		kmip_resp_end(&e);
	}
	if (e.len > cap)
		abort();
	for (size_t g = cap; g < cap + 8; g++)
		if (out[g] != 0xA5)
			abort();
	if (!e.err) {
		struct ttlv_doc d2 = { fz_items, 0, (int)ARRAY_LEN(fz_items) };
		if (ttlv_decode(&d2, out, e.len, TTLV_MAX_DEPTH) != 0)
			abort();       /* what we write, we must read back */
	}
	free(out);
	return 0;
}

#ifdef K2P_FUZZ_REPLAY
static int fz_failed;   /* stays 0: a broken invariant here aborts */
#include "fuzz_replay.h"
#include "kreq.h"

/* ---- seed corpus, written with our own encoder ---- */

static void seed_write(const char *dir, const char *name, const uint8_t *b, size_t n)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *fp = fopen(p, "wb");
	if (fp == NULL || fwrite(b, 1, n, fp) != n)
		fatal("cannot write %s", p);
	fclose(fp);
}

static void seed_header(struct ttlv_enc *e, int minor, int count, int cred)
{
	ttlv_open(e, KT_REQUEST_MESSAGE);
	ttlv_open(e, KT_REQUEST_HEADER);
	kreq_version(e, 1, minor);
	if (cred) {
		ttlv_put_int(e, KT_MAXIMUM_RESPONSE_SIZE, 8192);
		ttlv_put_bool(e, KT_ASYNCHRONOUS_INDICATOR, 0);
		kreq_credential(e, "token", "1234");
		ttlv_put_enum(e, KT_BATCH_ERROR_CONTINUATION_OPTION, BEC_STOP);
		ttlv_put_bool(e, KT_BATCH_ORDER_OPTION, 1);
		ttlv_put_datetime(e, KT_TIME_STAMP, 1700000000);
	}
	ttlv_put_int(e, KT_BATCH_COUNT, count);
	ttlv_close(e);
}

static void make_seeds(const char *dir)
{
	static uint8_t b[8192];
	struct ttlv_enc e;
	static const uint8_t mod[] = { 0xC3, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };

	/* Discover Versions, 1.2, no credential */
	ttlv_enc_init(&e, b, sizeof b);
	seed_header(&e, 2, 1, 0);
	kreq_item(&e, OP_DISCOVER_VERSIONS, NULL);
	kreq_version(&e, 1, 1);
	kreq_item_end(&e);
	kreq_end(&e);
	seed_write(dir, "seed-discover-versions", b, e.len);

	/* Query with three functions, full header */
	ttlv_enc_init(&e, b, sizeof b);
	seed_header(&e, 2, 1, 1);
	kreq_item(&e, OP_QUERY, NULL);
	ttlv_put_enum(&e, KT_QUERY_FUNCTION, QF_QUERY_OPERATIONS);
	ttlv_put_enum(&e, KT_QUERY_FUNCTION, QF_QUERY_OBJECTS);
	ttlv_put_enum(&e, KT_QUERY_FUNCTION, QF_QUERY_SERVER_INFORMATION);
	kreq_item_end(&e);
	kreq_end(&e);
	seed_write(dir, "seed-query", b, e.len);

	/* Create Key Pair, Cascade style, version 1.0 */
	ttlv_enc_init(&e, b, sizeof b);
	seed_header(&e, 0, 1, 1);
	kreq_item(&e, OP_CREATE_KEY_PAIR, NULL);
	kreq_create_key_pair(&e, ALG_RSA, 2048, 0, "KSK0123456789ABCDEFGHIJKLMNOPQRSTUV",
	                     "KSK0123456789ABCDEFGHIJKLMNOPQRSTUV");
	kreq_item_end(&e);
	kreq_end(&e);
	seed_write(dir, "seed-create-key-pair", b, e.len);

	/* Sign, then Get, as a batch of two with IDs and a non-critical extension */
	ttlv_enc_init(&e, b, sizeof b);
	seed_header(&e, 2, 2, 1);
	kreq_item_id(&e, OP_SIGN, (const uint8_t *)"\x01", 1);
	kreq_uid(&e, "A1B2C3_priv");
	kreq_crypto_params(&e, PAD_PKCS1_V1_5, HASH_SHA_256, 0, ALG_RSA);
	ttlv_put_bytes(&e, KT_DATA, (const uint8_t *)"example.org. IN DNSKEY", 22);
	ttlv_close(&e);         /* Request Payload; a Message Extension follows */
	ttlv_open(&e, KT_MESSAGE_EXTENSION);
	ttlv_put_text(&e, KT_VENDOR_IDENTIFICATION, "NLnet Labs", 10);
	ttlv_put_bool(&e, KT_CRITICALITY_INDICATOR, 0);
	ttlv_open(&e, KT_VENDOR_EXTENSION);
	ttlv_put_text(&e, 0x540001, "x\xc3\xa9", 3);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	kreq_item_id(&e, OP_GET, (const uint8_t *)"\x02", 1);
	kreq_uid(&e, "A1B2C3_pub");
	ttlv_put_enum(&e, KT_KEY_FORMAT_TYPE, KFT_PKCS_1);
	kreq_item_end(&e);
	kreq_end(&e);
	seed_write(dir, "seed-batch-sign-get", b, e.len);

	/* a Get response with every primitive type (Transparent RSA public key) */
	ttlv_enc_init(&e, b, sizeof b);
	kmip_resp_begin(&e, 1, 2, 1, 1700000000);
	struct kmip_item it = { OP_GET, NULL, 0, NULL, 0, NULL };
	kmip_item_begin(&e, OP_GET, &it, RS_SUCCESS, 0, NULL);
	ttlv_open(&e, KT_RESPONSE_PAYLOAD);
	ttlv_put_enum(&e, KT_OBJECT_TYPE, OT_PUBLIC_KEY);
	ttlv_put_text(&e, KT_UNIQUE_IDENTIFIER, "A1B2C3_pub", 10);
	ttlv_open(&e, KT_PUBLIC_KEY);
	ttlv_open(&e, KT_KEY_BLOCK);
	ttlv_put_enum(&e, KT_KEY_FORMAT_TYPE, KFT_TRANSPARENT_RSA_PUBLIC_KEY);
	ttlv_open(&e, KT_KEY_VALUE);
	ttlv_open(&e, KT_KEY_MATERIAL);
	ttlv_put_bigint(&e, KT_MODULUS, mod, sizeof mod);
	ttlv_put_bigint(&e, KT_PUBLIC_EXPONENT, (const uint8_t *)"\x01\x00\x01", 3);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_put_enum(&e, KT_CRYPTOGRAPHIC_ALGORITHM, ALG_RSA);
	ttlv_put_int(&e, KT_CRYPTOGRAPHIC_LENGTH, 72);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_put_long(&e, KT_USAGE_LIMITS_TOTAL, -1);
	ttlv_put_interval(&e, KT_LEASE_TIME, 86400);
	ttlv_put_bool(&e, KT_FRESH, 1);
	ttlv_close(&e);
	ttlv_close(&e);
	kmip_resp_end(&e);
	seed_write(dir, "seed-get-response", b, e.len);

	/* a critical extension, KMIP 1.3 with an unknown header field */
	ttlv_enc_init(&e, b, sizeof b);
	ttlv_open(&e, KT_REQUEST_MESSAGE);
	ttlv_open(&e, KT_REQUEST_HEADER);
	kreq_version(&e, 1, 3);
	ttlv_put_text(&e, 0x420105, "corr", 4);
	ttlv_put_int(&e, KT_BATCH_COUNT, 1);
	ttlv_close(&e);
	kreq_item(&e, OP_DESTROY, NULL);
	kreq_uid(&e, "A1B2C3_priv");
	ttlv_close(&e);         /* Request Payload; a Message Extension follows */
	ttlv_open(&e, KT_MESSAGE_EXTENSION);
	ttlv_put_text(&e, KT_VENDOR_IDENTIFICATION, "ACME", 4);
	ttlv_put_bool(&e, KT_CRITICALITY_INDICATOR, 1);
	ttlv_open(&e, KT_VENDOR_EXTENSION);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	seed_write(dir, "seed-critical-extension-1.3", b, e.len);

	/* an error response, as sent for an unparseable message */
	ttlv_enc_init(&e, b, sizeof b);
	kmip_resp_error(&e, 2, 0, 1700000000, RR_INVALID_MESSAGE, "unsupported version");
	seed_write(dir, "seed-error-response", b, e.len);
	if (e.err)
		fatal("seed buffer too small");
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "-seeds") == 0) {
		make_seeds(argv[2]);
		return 0;
	}
	return fz_replay_main("fuzz_ttlv", argc, argv);
}
#endif
