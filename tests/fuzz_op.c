/*
 * Fuzz target for the whole request path (sections 3-7): bytes in, op_handle(), answer out,
 * against build/nullp11.so (a PKCS#11 module that answers at once, token "null", PIN
 * "1234"; tests/nullp11.c).
 *
 * Each input is answered into 64 KiB, into two buffers of 0..4095 bytes that the input
 * picks, and (a request that parses) into 64 KiB with one PKCS#11 function failing; always
 * with guard bytes behind the buffer, which must stay intact, and the length within it.
 * The answer must be a Response Message that our own decoder accepts (so every Text String
 * is UTF-8), whose Batch Count is the number of its Batch Items, every item with a Result
 * Status (and a Result Reason when it failed), the request's Operation and Unique Batch
 * Item ID echoed in order, never more items than the request had (all of them with
 * Continue), no "(null)" in a Result Message (a NULL for %s) unless the client sent it, and
 * no Private Key, Credential or Password unless a Batch Item of the request held one.  A
 * request that does not parse gets one Batch Item without Operation.
 *
 * nullp11 keeps state: key generation gives the fixed pairs new CKA_IDs, C_Logout logs
 * out.  Before every call the fuzzer puts it back (IDs 11 / 22 / 33 for the RSA / P-256 /
 * Ed25519 pairs, user logged in), so that an input means the same thing every time.
 *
 *   libFuzzer:  clang -g -O1 -fsanitize=fuzzer,address,undefined -DK2P_TEST -DK2P_FUZZ \
 *                     -Itests -I. tests/fuzz_op.c -o build/fuzz_op -lmbedtls ... -ldl
 *               build/fuzz_op build/corpus-op tests/corpus/op
 *   replay:     cc ... -DK2P_TEST -DK2P_FUZZ_REPLAY tests/fuzz_op.c -o build/fuzz_op_replay
 *               build/fuzz_op_replay tests/corpus/op [more files or directories]
 *               build/fuzz_op_replay -seeds DIR   writes the seed corpus (our own encoder)
 *               (ends with "N passed, N failed": one per input; tests/fuzz_replay.h)
 *   The module is build/nullp11.so next to the executable, or $K2P_NULLP11.
 */
#include "../kmip2pkcs11.c"

#include <libgen.h>

#define FZ_OUT_CAP  (64 * 1024)
#define FZ_GUARD    64

static struct op_env fz_env;
static struct op_thread *fz_thread;
static CK_SESSION_HANDLE fz_sess;
static uint8_t fz_out[FZ_OUT_CAP + FZ_GUARD];
static struct ttlv fz_req_items[TTLV_MAX_ITEMS], fz_resp_items[TTLV_MAX_ITEMS];
static struct kmip_request fz_req;
static int fz_failed;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_fail(const char *what)
{
	fprintf(stderr, "FAIL invariant: %s\n", what);
#ifndef K2P_FUZZ_REPLAY
	abort();
#endif
	fz_failed++;
}

/*
 * Faults: the third answer to each input is made with one PKCS#11 function failing, the
 * one the input's bytes pick (nullp11 reads NULLP11_FAIL in C_GetFunctionList, which
 * refills the same function list in place).  Lost sessions drive the retry paths.
 */
static const char *const fz_faults[] = {
	"C_Sign=0xB3",                  /* CKR_SESSION_HANDLE_INVALID: reopen and retry */
	"C_FindObjectsInit=0xB0",       /* CKR_SESSION_CLOSED */
	"C_GetSessionInfo=0xE0",        /* CKR_TOKEN_NOT_PRESENT, at login */
	"C_OpenSession=0x30",           /* CKR_DEVICE_ERROR */
	"C_Login=0xA4",                 /* CKR_PIN_LOCKED */
	"C_GetAttributeValue=0x30",
	"C_GenerateKeyPair=0x31",       /* CKR_DEVICE_MEMORY */
	"C_GenerateRandom=0x30",
	"C_SetAttributeValue=0x10",     /* CKR_ATTRIBUTE_READ_ONLY */
	"C_DestroyObject=0x82",         /* CKR_OBJECT_HANDLE_INVALID */
	"C_SignInit=0x68",              /* CKR_KEY_FUNCTION_NOT_PERMITTED */
	"C_GetSlotList=0x30",
	"C_GetTokenInfo=0x30",
	"C_FindObjects=0xB3",
};

static void fz_fault(const char *spec)
{
	CK_C_GetFunctionList get;
	CK_FUNCTION_LIST_PTR fl;
	*(void **)&get = dlsym(p11.dl, "C_GetFunctionList");
	setenv("NULLP11_FAIL", spec, 1);
	if (!get || get(&fl) != CKR_OK)     /* the faults live in nullp11's own table */
		fatal("nullp11: C_GetFunctionList failed");
}

/* nullp11 as after C_GetFunctionList: fixed CKA_IDs, the user logged in. */
static void fz_reset(void)
{
	static const CK_MECHANISM_TYPE mech[3] = { CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN,
		CKM_EC_EDWARDS_KEY_PAIR_GEN };
	static const CK_BYTE ids[3] = { 0x11, 0x22, 0x33 };
	CK_RV rv = P11_F->C_Login(fz_sess, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4);
	if (rv == CKR_SESSION_HANDLE_INVALID) {
		/* The daemon re-initialised the module (a slot-level fault): a new session. */
		rv = P11_F->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &fz_sess);
		if (rv == CKR_OK)
			rv = P11_F->C_Login(fz_sess, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4);
	}
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		fatal("nullp11 C_Login: %s", p11_rv_name(rv));
	for (int i = 0; i < 3; i++) {
		CK_MECHANISM m = { mech[i], NULL, 0 };
		CK_BYTE id = ids[i];
		CK_ATTRIBUTE t[] = { { CKA_ID, &id, 1 } };
		CK_OBJECT_HANDLE pub, priv;
		rv = P11_F->C_GenerateKeyPair(fz_sess, &m, t, 1, NULL, 0, &pub, &priv);
		if (rv != CKR_OK)
			fatal("nullp11 C_GenerateKeyPair: %s", p11_rv_name(rv));
	}
}

static void fz_init(void)
{
	static int ready;
	char path[PATH_MAX], err[PATH_MAX + 512];

	if (ready)
		return;
	ready = 1;
	const char *env = getenv("K2P_NULLP11");
	if (env) {
		snprintf(path, sizeof path, "%s", env);
	} else {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0)
			fatal("readlink /proc/self/exe: %s", strerror(errno));
		exe[n] = '\0';
		snprintf(path, sizeof path, "%s/nullp11.so", dirname(exe));
	}
	/* every log line is formatted (trace: the request dump too), none is kept */
	log_state.file = fopen("/dev/null", "w");
	log_state.target = LOG_TO_FILE;
	log_state.level = LV_TRACE;
	if (getenv("K2P_FUZZ_LOG"))     /* to see them and the answers: K2P_FUZZ_LOG=1 */
		log_state.target = LOG_TO_STDERR;
	if (p11_load(path, err, sizeof err) != CKR_OK)
		fatal("%s (make build/nullp11.so, or set K2P_NULLP11)", err);
	p11_reinit_gap_ms = 0;  /* every stuck-module fault re-initialises: the same each run */
	snprintf(fz_env.module, sizeof fz_env.module, "%s", p11.module);
	fz_thread = op_thread_new(&fz_env, NULL, 0);
	if (!fz_thread)
		fatal("out of memory");
	CK_RV rv = P11_F->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &fz_sess);
	if (rv != CKR_OK)
		fatal("nullp11 C_OpenSession: %s", p11_rv_name(rv));
}

/* Tags that an answer never carries unless it echoes them (Modify Attribute echoes the
 * client's Attribute as it came). */
static int fz_req_secret;

static int fz_secret_tag(uint32_t tag)
{
	return tag == KT_PRIVATE_KEY || tag == KT_CREDENTIAL || tag == KT_PASSWORD ||
	       tag == KT_AUTHENTICATION;
}

/* The answer in out[0..len) to the request that fz_req describes when req_ok; in_null:
 * the request holds "(null)" itself. */
static void fz_check(const uint8_t *out, size_t len, size_t cap, int req_ok, int in_null)
{
	struct ttlv_doc d = { fz_resp_items, 0, TTLV_MAX_ITEMS };

	if (len > cap) {
		fz_fail("length beyond the buffer");
		return;
	}
	for (size_t g = cap; g < cap + FZ_GUARD; g++)
		if (out[g] != 0xA5) {
			fz_fail("guard bytes overwritten");
			return;
		}
	if (len == 0) {
		if (cap >= 512)
			fz_fail("no answer at all into a sane buffer");
		return;
	}
	int rc = ttlv_decode(&d, out, len, TTLV_MAX_DEPTH);
	if (rc != 0) {
		fprintf(stderr, "decode: %s\n", ttlv_strerror(rc));
		fz_fail("the answer does not decode");
		return;
	}
	if (log_state.target == LOG_TO_STDERR) {
		static char dump[1 << 16];
		kmip_dump(&d, dump, sizeof dump);
		fprintf(stderr, "answer (%zu of %zu bytes):\n%s\n", len, cap, dump);
	}
	const struct ttlv *root = &d.it[0];
	if (root->tag != KT_RESPONSE_MESSAGE || root->type != TT_STRUCT || root->next >= 0) {
		fz_fail("root is not one Response Message");
		return;
	}
	const struct ttlv *hdr = root->child >= 0 ? &d.it[root->child] : NULL;
	const struct ttlv *ver;
	int32_t count, major, minor;
	if (!hdr || hdr->tag != KT_RESPONSE_HEADER || hdr->type != TT_STRUCT ||
	    kmip_get_struct(&d, hdr, KT_PROTOCOL_VERSION, &ver) != 0 ||
	    kmip_get_int(&d, ver, KT_PROTOCOL_VERSION_MAJOR, &major) != 0 ||
	    kmip_get_int(&d, ver, KT_PROTOCOL_VERSION_MINOR, &minor) != 0 ||
	    !ttlv_find(&d, hdr, KT_TIME_STAMP) ||
	    kmip_get_int(&d, hdr, KT_BATCH_COUNT, &count) != 0) {
		fz_fail("malformed Response Header");
		return;
	}
	if (major != KMIP_MAJOR || minor < 0 || minor > KMIP_MINOR)
		fz_fail("answered in a version we do not speak");
	for (int i = 0; i < d.n && !fz_req_secret; i++)
		if (fz_secret_tag(d.it[i].tag))
			fz_fail("a secret's tag in the answer");

	int items = 0, whole_msg_error = 0, has_op_any = 0;
	for (int i = hdr->next; i >= 0; i = d.it[i].next) {
		const struct ttlv *bi = &d.it[i];
		uint32_t status, reason, op;
		const uint8_t *bid;
		uint32_t bid_len;
		if (bi->tag != KT_BATCH_ITEM || bi->type != TT_STRUCT) {
			fz_fail("something other than a Batch Item after the header");
			return;
		}
		if (kmip_get_enum(&d, bi, KT_RESULT_STATUS, &status) != 0) {
			fz_fail("Batch Item without Result Status");
			return;
		}
		int has_reason = kmip_get_enum(&d, bi, KT_RESULT_REASON, &reason) == 0;
		if (status != RS_SUCCESS && !has_reason)
			fz_fail("failed Batch Item without Result Reason");
		if (status == RS_SUCCESS && has_reason)
			fz_fail("successful Batch Item with a Result Reason");
		const char *msg;
		uint32_t msg_len;
		if (kmip_get_text(&d, bi, KT_RESULT_MESSAGE, &msg, &msg_len) == 0 &&
		    !in_null && memmem(msg, msg_len, "(null)", 6) != NULL)
			fz_fail("a NULL string in a Result Message");
		int has_op = kmip_get_enum(&d, bi, KT_OPERATION, &op) == 0;
		int has_bid = kmip_get_bytes(&d, bi, KT_UNIQUE_BATCH_ITEM_ID, &bid, &bid_len) == 0;
		has_op_any |= has_op;
		/* kmip_resp_error(): the request cannot be parsed, or its answer is too large */
		if (items == 0 && (!req_ok || (!has_op && !has_bid && has_reason &&
		                               reason == RR_RESPONSE_TOO_LARGE)))
			whole_msg_error = 1;
		if (req_ok && !whole_msg_error && items < fz_req.n) {
			const struct kmip_item *it = &fz_req.item[items];
			if (it->op && (!has_op || op != it->op))
				fz_fail("Operation not echoed");
			if (it->bid && (!has_bid || bid_len != it->bid_len ||
			                memcmp(bid, it->bid, bid_len) != 0))
				fz_fail("Unique Batch Item ID not echoed");
		}
		items++;
	}
	if (items != count)
		fz_fail("Batch Count is not the number of Batch Items");
	if (items < 1)
		fz_fail("no Batch Item");
	if (whole_msg_error && (items != 1 || has_op_any))
		fz_fail("an error answer with more than one Batch Item, or an Operation");
	if (req_ok && !whole_msg_error) {
		if (items > fz_req.n)
			fz_fail("more Batch Items than the request had");
		if (fz_req.err_cont == BEC_CONTINUE && items != fz_req.n)
			fz_fail("Continue, yet not every Batch Item answered");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ttlv_doc d = { fz_req_items, 0, TTLV_MAX_ITEMS };
	const char *why;

	fz_init();
	int req_ok = ttlv_decode(&d, data, size, TTLV_DEFAULT_DEPTH) == 0 &&
	             kmip_parse_request(&d, &fz_req, &why) == 0;
	int in_null = memmem(data, size, "(null)", 6) != NULL;     /* may be echoed */
	/* such a tag in a Batch Item (items are stored in pre-order: a subtree is the run of
	 * indices up to its next sibling); the header's credential must never come back */
	fz_req_secret = 0;
	for (int i = req_ok ? d.it[0].child : -1; i >= 0; i = d.it[i].next)
		for (int k = i; i > d.it[0].child && k < (d.it[i].next >= 0 ? d.it[i].next : d.n); k++)
			fz_req_secret |= fz_secret_tag(d.it[k].tag);

	/* on an event loop's context (section 10) a request with an item for the slow pool
	 * is left whole to the pool, before any item is run; anything else is answered */
	fz_reset();
	fz_thread->defer = 1;
	memset(fz_out, 0xA5, sizeof fz_out);
	size_t len = op_handle(fz_thread, data, size, fz_out, FZ_OUT_CAP);
	fz_thread->defer = 0;
	if (fz_thread->rec->parsed != req_ok)
		fz_fail("the record's parsed and the request parser disagree");
	if (len == OP_DEFERRED && (!req_ok || fz_thread->rec->n != 0))
		fz_fail("a deferred request was not a request, or had items run");
	if (len != OP_DEFERRED)
		fz_check(fz_out, len, FZ_OUT_CAP, req_ok, in_null);

	/* a roomy buffer */
	fz_reset();
	memset(fz_out, 0xA5, sizeof fz_out);
	len = op_handle(fz_thread, data, size, fz_out, FZ_OUT_CAP);
	fz_check(fz_out, len, FZ_OUT_CAP, req_ok, in_null);

	/* two tight ones of 0..4095 bytes that the input picks through a hash of all its
	 * bytes (a valid request ends in padding, so its own last bytes would be zero) */
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 16777619u;
	for (int k = 0; k < 2; k++) {
		size_t cap = k ? (h >> 20) & 4095 : (h >> 4) & 4095;
		fz_reset();
		memset(fz_out, 0xA5, cap + FZ_GUARD);
		len = op_handle(fz_thread, data, size, fz_out, cap);
		fz_check(fz_out, len, cap, req_ok, in_null);
	}

	/* a roomy buffer and a failing module: which function, the input's bytes say */
	if (req_ok) {
		fz_reset();
		fz_fault(fz_faults[h % ARRAY_LEN(fz_faults)]);
		memset(fz_out, 0xA5, sizeof fz_out);
		len = op_handle(fz_thread, data, size, fz_out, FZ_OUT_CAP);
		fz_fault("");
		fz_check(fz_out, len, FZ_OUT_CAP, req_ok, in_null);
	}
	return 0;
}

#ifdef K2P_FUZZ_REPLAY
#include "fuzz_replay.h"
#include "kreq.h"

/* ---- seed corpus, written with our own encoder ---- */

static const char *seed_dir;
static uint8_t seed_buf[16384];
static struct ttlv_enc seed_e;

static void seed_write(const char *name)
{
	char p[4096];
	if (seed_e.err)
		fatal("seed %s does not fit", name);
	snprintf(p, sizeof p, "%s/seed-%s", seed_dir, name);
	FILE *fp = fopen(p, "wb");
	if (fp == NULL || fwrite(seed_buf, 1, seed_e.len, fp) != seed_e.len)
		fatal("cannot write %s", p);
	fclose(fp);
}

/* Request Message and Header (tests/kreq.h), version 1.2; cred: 0 none, 1 token "null" /
 * PIN "1234", 2 a wrong PIN, 3 an unknown token, 4 a username without a password. */
static void seed_begin(int cred, int count, int bec)
{
	static const char *const user[] = { NULL, "null", "null", "nosuch", "null" };
	static const char *const pass[] = { NULL, "1234", "4321", "1234", NULL };
	struct kreq_hdr h = { 1, 2, user[cred], pass[cred], -1, (uint32_t)bec, count };
	kreq_begin(&seed_e, seed_buf, sizeof seed_buf, &h);
}

static void seed_end(const char *name)
{
	kreq_end(&seed_e);
	seed_write(name);
}

/* Sign payload: [UID], Cryptographic Parameters with the nonzero fields (all zero: none),
 * Data. */
static void seed_sign_payload(const char *uid, uint32_t pad, uint32_t hash, uint32_t alg,
			      uint32_t dsa)
{
	if (uid)
		kreq_uid(&seed_e, uid);
	if (pad || hash || alg || dsa)
		kreq_crypto_params(&seed_e, pad, hash, dsa, alg);
	ttlv_put_bytes(&seed_e, KT_DATA, (const uint8_t *)"example.org. 3600 IN DNSKEY 257 3 8", 35);
}

static void make_seeds(const char *dir)
{
	struct ttlv_enc *e = &seed_e;
	seed_dir = dir;

	/* Discover Versions: none listed; 1.0, 1.2 and 2.0 listed */
	seed_begin(0, 1, 0);
	kreq_item(e, OP_DISCOVER_VERSIONS, NULL);
	kreq_item_end(e);
	seed_end("discover-versions");
	seed_begin(0, 1, 0);
	kreq_item(e, OP_DISCOVER_VERSIONS, NULL);
	for (int v = 0; v < 3; v++)
		kreq_version(e, v == 2 ? 2 : 1, v == 1 ? 2 : 0);
	kreq_item_end(e);
	seed_end("discover-versions-list");

	/* Query: everything, with and without the token's name */
	for (int cred = 0; cred < 2; cred++) {
		seed_begin(cred, 1, 0);
		kreq_item(e, OP_QUERY, NULL);
		ttlv_put_enum(e, KT_QUERY_FUNCTION, QF_QUERY_OPERATIONS);
		ttlv_put_enum(e, KT_QUERY_FUNCTION, QF_QUERY_OBJECTS);
		ttlv_put_enum(e, KT_QUERY_FUNCTION, QF_QUERY_SERVER_INFORMATION);
		kreq_item_end(e);
		seed_end(cred ? "query-token" : "query");
	}

	/* Create Key Pair: RSA, ECDSA by curve, EC by length, Ed25519 */
	seed_begin(1, 1, 0);
	kreq_item(e, OP_CREATE_KEY_PAIR, NULL);
	kreq_create_key_pair(e, ALG_RSA, 2048, 0, "KSK example.org", "KSK example.org");
	kreq_item_end(e);
	seed_end("create-key-pair-rsa");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_CREATE_KEY_PAIR, NULL);
	kreq_create_key_pair(e, ALG_ECDSA, 256, CURVE_P_256, "ZSK example.org", "ZSK example.org");
	kreq_item_end(e);
	seed_end("create-key-pair-ecdsa-p256");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_CREATE_KEY_PAIR, NULL);
	kreq_create_key_pair(e, ALG_EC, 384, 0, NULL, NULL);
	kreq_item_end(e);
	seed_end("create-key-pair-ec-384");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_CREATE_KEY_PAIR, NULL);
	kreq_create_key_pair(e, ALG_ED25519, 0, 0, "ed", "ed");
	kreq_item_end(e);
	seed_end("create-key-pair-ed25519");

	/* Get: every Key Format Type, on the key types it fits and one it does not */
	static const struct { const char *uid; uint32_t kft; const char *name; } gets[] = {
		{ "11_pub", 0, "get-rsa-default" },
		{ "11_pub", KFT_PKCS_1, "get-rsa-pkcs1" },
		{ "11_pub", KFT_X_509, "get-rsa-x509" },
		{ "11_pub", KFT_RAW, "get-rsa-raw" },
		{ "11_pub", KFT_TRANSPARENT_RSA_PUBLIC_KEY, "get-rsa-transparent" },
		{ "11_pub", KFT_PKCS_8, "get-rsa-pkcs8" },
		{ "22_pub", 0, "get-ec-default" },
		{ "22_pub", KFT_X_509, "get-ec-x509" },
		{ "22_pub", KFT_TRANSPARENT_ECDSA_PUBLIC_KEY, "get-ec-transparent" },
		{ "22_pub", KFT_PKCS_1, "get-ec-pkcs1" },
		{ "33_pub", KFT_RAW, "get-ed25519-raw" },
		{ "33_pub", KFT_TRANSPARENT_ECDSA_PUBLIC_KEY, "get-ed25519-transparent" },
		{ "11_priv", KFT_PKCS_1, "get-private" },
		{ "22", 0, "get-bare-id" },
		{ "AB_pub", 0, "get-no-such-key" },
	};
	for (size_t i = 0; i < ARRAY_LEN(gets); i++) {
		seed_begin(1, 1, 0);
		kreq_item(e, OP_GET, NULL);
		kreq_uid(e, gets[i].uid);
		if (gets[i].kft)
			ttlv_put_enum(e, KT_KEY_FORMAT_TYPE, gets[i].kft);
		kreq_item_end(e);
		seed_end(gets[i].name);
	}
	seed_begin(1, 1, 0);
	kreq_item(e, OP_GET, NULL);
	kreq_uid(e, "11_pub");
	ttlv_open(e, KT_KEY_WRAPPING_SPECIFICATION);
	ttlv_close(e);
	kreq_item_end(e);
	seed_end("get-wrapped");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_GET, NULL);
	kreq_uid(e, "22_pub");
	ttlv_put_enum(e, KT_KEY_COMPRESSION_TYPE, 1);
	kreq_item_end(e);
	seed_end("get-compressed");

	/* Activate, Modify Attribute, Destroy */
	seed_begin(1, 1, 0);
	kreq_item(e, OP_ACTIVATE, NULL);
	kreq_uid(e, "11_priv");
	kreq_item_end(e);
	seed_end("activate");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_MODIFY_ATTRIBUTE, NULL);
	kreq_uid(e, "22_priv");
	kreq_attr_name(e, "renamed");
	kreq_item_end(e);
	seed_end("modify-attribute-name");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_MODIFY_ATTRIBUTE, NULL);
	kreq_uid(e, "22_pub");
	kreq_attr_int(e, "Cryptographic Usage Mask", UM_SIGN);
	kreq_item_end(e);
	seed_end("modify-attribute-mask");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_DESTROY, NULL);
	kreq_uid(e, "33_pub");
	kreq_item_end(e);
	seed_end("destroy");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_DESTROY, NULL);
	kreq_uid(e, "33");
	kreq_item_end(e);
	seed_end("destroy-bare-id");

	/* Sign: RSA with parameters, ECDSA by signature algorithm, Ed25519 bare, wrong ones */
	seed_begin(1, 1, 0);
	kreq_item(e, OP_SIGN, NULL);
	seed_sign_payload("11_priv", PAD_PKCS1_V1_5, HASH_SHA_256, ALG_RSA, 0);
	kreq_item_end(e);
	seed_end("sign-rsa");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_SIGN, NULL);
	seed_sign_payload("22_priv", 0, 0, 0, DSA_ECDSA_WITH_SHA384);
	kreq_item_end(e);
	seed_end("sign-ecdsa");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_SIGN, NULL);
	seed_sign_payload("33_priv", 0, 0, 0, 0);
	kreq_item_end(e);
	seed_end("sign-ed25519");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_SIGN, NULL);
	seed_sign_payload("33_priv", 0, HASH_SHA_512, ALG_ED25519, 0);
	kreq_item_end(e);
	seed_end("sign-ed25519-hash");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_SIGN, NULL);
	seed_sign_payload("11_pub", 0, 0, 0, 0);
	kreq_item_end(e);
	seed_end("sign-public");

	/* Get Attributes: named, all; Get Attribute List */
	seed_begin(1, 1, 0);
	kreq_item(e, OP_GET_ATTRIBUTES, NULL);
	kreq_uid(e, "11_priv");
	for (size_t i = 0; i < ARRAY_LEN(op_attr_names); i++)
		ttlv_put_text(e, KT_ATTRIBUTE_NAME, op_attr_names[i], strlen(op_attr_names[i]));
	ttlv_put_text(e, KT_ATTRIBUTE_NAME, "x-unknown", 9);
	kreq_item_end(e);
	seed_end("get-attributes-named");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_GET_ATTRIBUTES, NULL);
	kreq_uid(e, "22_pub");
	kreq_item_end(e);
	seed_end("get-attributes-all");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_GET_ATTRIBUTE_LIST, NULL);
	kreq_uid(e, "33_priv");
	kreq_item_end(e);
	seed_end("get-attribute-list");
	seed_begin(1, 1, 0);
	kreq_item(e, OP_LOCATE, NULL);
	ttlv_put_int(e, KT_MAXIMUM_ITEMS, 4);
	kreq_attr_enum(e, "Object Type", OT_PRIVATE_KEY);
	kreq_attr_enum(e, "Cryptographic Algorithm", ALG_ECDSA);
	kreq_attr_name(e, "k2p-ec-pri");
	kreq_item_end(e);
	seed_end("locate");
	seed_begin(1, 2, 0);
	kreq_item_id(e, OP_LOCATE, (const uint8_t *)"\x01", 1);
	kreq_attr_enum(e, "Object Type", OT_PUBLIC_KEY);
	kreq_item_end(e);
	kreq_item_id(e, OP_GET, (const uint8_t *)"\x02", 1);
	kreq_item_end(e);
	seed_end("batch-locate-get-placeholder");

	/* Batches of two with IDs: the second uses the ID Placeholder; Continue after a failure */
	seed_begin(1, 2, 0);
	kreq_item_id(e, OP_CREATE_KEY_PAIR, (const uint8_t *)"\x01", 1);
	kreq_create_key_pair(e, ALG_ECDSA, 0, CURVE_P_256, "placeholder", "placeholder");
	kreq_item_end(e);
	kreq_item_id(e, OP_SIGN, (const uint8_t *)"\x02", 1);
	seed_sign_payload(NULL, 0, 0, 0, 0);
	kreq_item_end(e);
	seed_end("batch-create-sign-placeholder");
	seed_begin(1, 2, BEC_CONTINUE);
	kreq_item_id(e, OP_GET, (const uint8_t *)"\x01", 1);
	kreq_uid(e, "FF_pub");
	kreq_item_end(e);
	kreq_item_id(e, OP_GET_ATTRIBUTES, (const uint8_t *)"\x02", 1);
	kreq_item_end(e);
	seed_end("batch-continue");
	seed_begin(1, 2, BEC_STOP);
	kreq_item_id(e, OP_SIGN, (const uint8_t *)"\x01", 1);
	seed_sign_payload("11_priv", 0, 0, ALG_ECDSA, 0);
	kreq_item_end(e);
	kreq_item_id(e, OP_DESTROY, (const uint8_t *)"\x02", 1);
	kreq_uid(e, "11_priv");
	kreq_item_end(e);
	seed_end("batch-stop");
	/* ten Gets that outgrow a small buffer, then one that fails: Response Too Large per
	 * item wherever the buffer the input picks holds some of them */
	for (int k = 0; k < 2; k++) {
		seed_begin(1, 11, k ? BEC_STOP : BEC_CONTINUE);
		for (int i = 0; i < 11; i++) {
			uint8_t bid = (uint8_t)(i + 1);
			kreq_item_id(e, OP_GET, &bid, 1);
			kreq_uid(e, i < 10 ? "11_pub" : "FF_pub");
			ttlv_put_enum(e, KT_KEY_FORMAT_TYPE, KFT_TRANSPARENT_RSA_PUBLIC_KEY);
			kreq_item_end(e);
		}
		seed_end(k ? "batch-gets-too-large-stop" : "batch-gets-too-large");
	}

	/* Authentication: wrong PIN, no credential, unknown token, no password */
	static const struct { int cred; const char *name; } auths[] = {
		{ 2, "wrong-pin" }, { 0, "no-credential" }, { 3, "unknown-token" },
		{ 4, "no-password" },
	};
	for (size_t i = 0; i < ARRAY_LEN(auths); i++) {
		seed_begin(auths[i].cred, 1, 0);
		kreq_item(e, OP_SIGN, NULL);
		seed_sign_payload("11_priv", 0, 0, 0, 0);
		kreq_item_end(e);
		seed_end(auths[i].name);
	}

	/* an operation we do not serve, and one that no version has */
	seed_begin(1, 1, 0);
	kreq_item(e, OP_LOCATE, NULL);
	kreq_item_end(e);
	seed_end("unknown-op-locate");
	seed_begin(1, 2, BEC_CONTINUE);
	kreq_item_id(e, 0x99, (const uint8_t *)"\x01", 1);
	kreq_item_end(e);
	kreq_item_id(e, OP_QUERY, (const uint8_t *)"\x02", 1);
	ttlv_put_enum(e, KT_QUERY_FUNCTION, QF_QUERY_OPERATIONS);
	kreq_item_end(e);
	seed_end("unknown-op-0x99");

	/* UIDs of 261 bytes whose echo in the Result Message is cut inside a UTF-8 sequence
	 * (2-byte and 4-byte characters): the answer must still decode */
	char uid[OP_UID_MAX + 1];
	uid[0] = 'a';
	for (int i = 0; i < 130; i++)
		memcpy(uid + 1 + 2 * i, "\xc3\xa9", 2);
	uid[261] = '\0';
	seed_begin(1, 1, 0);
	kreq_item(e, OP_GET, NULL);
	kreq_uid(e, uid);
	kreq_item_end(e);
	seed_end("regress-utf8-cut-2-byte");
	for (int i = 0; i < 65; i++)
		memcpy(uid + 1 + 4 * i, "\xf0\x9f\x98\x80", 4);
	uid[261] = '\0';
	seed_begin(1, 1, 0);
	kreq_item(e, OP_DESTROY, NULL);
	kreq_uid(e, uid);
	kreq_item_end(e);
	seed_end("regress-utf8-cut-4-byte");

	/* a Maximum Response Size the answer exceeds */
	static const struct kreq_hdr max200 = { 1, 1, NULL, NULL, 200, 0, 1 };
	kreq_begin(e, seed_buf, sizeof seed_buf, &max200);
	kreq_item(e, OP_QUERY, NULL);
	ttlv_put_enum(e, KT_QUERY_FUNCTION, QF_QUERY_OPERATIONS);
	kreq_item_end(e);
	seed_end("max-response-size");
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "-seeds") == 0) {
		make_seeds(argv[2]);
		return 0;
	}
	return fz_replay_main("fuzz_op", argc, argv);
}
#endif
