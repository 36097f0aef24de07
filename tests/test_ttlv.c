/*
 * Tests for sections 2-4: buffers, the TTLV codec, the KMIP vocabulary and messages.
 * Run from the repository root: the KMIP vectors are read from tests/vectors.
 */
#include "../kmip2pkcs11.c"

#include <dirent.h>
#include <sys/stat.h>

#include "check.h"
#include "kreq.h"

#define VECTORS "tests/vectors"

static struct ttlv items[TTLV_MAX_ITEMS];

static int decode(struct ttlv_doc *d, const uint8_t *p, size_t n)
{
	d->it = items;
	d->cap = TTLV_MAX_ITEMS;
	d->n = 0;
	return ttlv_decode(d, p, n, TTLV_DEFAULT_DEPTH);
}

/* Hex literal (spaces allowed) to bytes; aborts the test on a typo. */
static size_t unhex(uint8_t *dst, size_t cap, const char *s)
{
	char clean[8192];
	size_t k = 0;
	for (; *s; s++)
		if (*s != ' ' && *s != '\n' && k < sizeof clean - 1)
			clean[k++] = *s;
	int n = hex_parse(dst, cap, clean, k);
	if (n < 0) {
		printf("bad hex literal in test\n");
		exit(2);
	}
	return (size_t)n;
}

/* Whole file into a malloc'ed buffer of exactly its size (so ASan sees over-reads). */
static uint8_t *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
	*n = fread(b, 1, sz > 0 ? (size_t)sz : 0, f);
	fclose(f);
	return b;
}

/* A .hex vector file as bytes, exactly sized. */
static uint8_t *read_hex(const char *path, size_t *n)
{
	size_t tn;
	char *t = (char *)read_file(path, &tn);
	if (t == NULL)
		return NULL;
	while (tn > 0 && (t[tn - 1] == '\n' || t[tn - 1] == '\r' || t[tn - 1] == ' '))
		tn--;
	uint8_t *b = malloc(tn / 2 + 1);
	int k = hex_parse(b, tn / 2 + 1, t, tn);
	free(t);
	if (k < 0) {
		free(b);
		return NULL;
	}
	uint8_t *exact = malloc(k > 0 ? (size_t)k : 1);
	memcpy(exact, b, (size_t)k);
	free(b);
	*n = (size_t)k;
	return exact;
}

/* ---- every vector: decode, frame, re-encode byte for byte, truncations ---- */

static int n_vectors, n_roundtrip, n_requests, n_req_ok;

static void check_vector(const char *path)
{
	size_t n;
	uint8_t *m = read_hex(path, &n);
	struct ttlv_doc d;

	CHECK(m != NULL, "vector %s is hex", path);
	if (m == NULL)
		return;
	n_vectors++;
	int rc = decode(&d, m, n);
	CHECK(rc == 0, "vector %s decodes (%s)", path, ttlv_strerror(rc));
	CHECK(ttlv_frame(m, n) == (long)n, "vector %s frames to its size", path);
	if (rc == 0) {
		uint8_t *out = malloc(n);
		struct ttlv_enc e;
		ttlv_enc_init(&e, out, n);
		ttlv_put_item(&e, &d, &d.it[0]);
		int same = e.err == 0 && e.len == n && memcmp(out, m, n) == 0;
		CHECK(same, "vector %s re-encodes byte for byte", path);
		n_roundtrip += same;
		free(out);

		if (strstr(path, ".req.hex")) {
			static struct kmip_request r;
			const char *why = NULL;
			uint32_t rr = kmip_parse_request(&d, &r, &why);
			n_requests++;
			n_req_ok += rr == 0;
			/* valid KMIP 1.0-1.2 requests: the message level accepts every one */
			CHECK(rr == 0, "vector %s parses as a Request Message (refused: %s, %s)", path,
			      rr ? kmip_reason_name(rr) : "-", why ? why : "");
		}
	}
	/* Every truncation: the frame says "need more", decoding the short buffer fails
	 * cleanly (exact-size copies, so that ASan sees any read past the end). */
	int trunc_ok = 1;
	for (size_t k = 0; k < n; k++) {
		uint8_t *c = malloc(k ? k : 1);
		memcpy(c, m, k);
		long f = ttlv_frame(c, k);
		if (!(f == TTLV_NEED_MORE || (f > (long)k)))
			trunc_ok = 0;
		if (decode(&d, c, k) >= 0)
			trunc_ok = 0;
		/* and with the outer Length patched to match the cut, so that the cut lands
		 * inside the children: an error, or (cut between items) a valid shorter message */
		if (k >= 8 && k % 8 == 0) {
			buf_put_be32(c + 4, (uint32_t)(k - 8));
			int r2 = decode(&d, c, k);
			if (r2 > 0 || r2 == TTLV_NEED_MORE)
				trunc_ok = 0;
		}
		free(c);
	}
	CHECK(trunc_ok, "vector %s: every truncation needs more / fails cleanly", path);
	free(m);
}

static void walk(const char *dir)
{
	DIR *dp = opendir(dir);
	struct dirent *de;
	char path[4096];
	if (dp == NULL)
		return;
	/* sorted order is not needed; every file is visited once */
	while ((de = readdir(dp)) != NULL) {
		struct stat st;
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (stat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode))
			walk(path);
		else if (strlen(de->d_name) > 4 &&
		         strcmp(de->d_name + strlen(de->d_name) - 4, ".hex") == 0)
			check_vector(path);
	}
	closedir(dp);
}

static void test_vectors(void)
{
	walk(VECTORS);
	printf("vectors: %d decoded, %d re-encoded byte for byte; %d requests, %d accepted\n",
	       n_vectors, n_roundtrip, n_requests, n_req_ok);
	CHECK(n_vectors >= 380, "all vectors found (%d)", n_vectors);
	CHECK(n_roundtrip == n_vectors, "all vectors round trip");
}

/* ---- dumper against the PyKMIP capture dumps ---- */

/* The expected text with the Password value masked as the dumper does. */
/* The capture's text as the dumper masks it: the Password's value as '***', and its length
 * and those of the structures holding it as len=* (they would tell the PIN's length). */
static void mask_password(char *s)
{
	char *line[512], *p = s;
	int depth[512], mask[512], n = 0;
	static char out[65536];
	size_t o = 0;

	while (*p && n < 512) {
		line[n] = p;
		depth[n] = (int)strspn(p, " ") / 2;
		mask[n] = 0;
		if (strncmp(p + 2 * depth[n], "PASSWORD (4200A1) ", 18) == 0) {
			mask[n] = 2;
			for (int k = n - 1, want = depth[n] - 1; k >= 0 && want >= 0; k--)
				if (depth[k] == want) {
					mask[k] = 1;
					want--;
				}
		}
		n++;
		char *eol = strchr(p, '\n');
		p = eol ? eol + 1 : p + strlen(p);
	}
	for (int i = 0; i < n; i++) {
		char *eol = strchr(line[i], '\n');
		size_t len = eol ? (size_t)(eol - line[i]) + 1 : strlen(line[i]);
		char *l = strstr(line[i], " len=");
		if (!mask[i] || !l || (eol && l > eol)) {
			memcpy(out + o, line[i], len);
			o += len;
			continue;
		}
		size_t head = (size_t)(l - line[i]) + 5;
		memcpy(out + o, line[i], head);
		o += head;
		out[o++] = '*';
		if (mask[i] == 2) {
			memcpy(out + o, " = '***'\n", 9);
			o += eol ? 9 : 8;
		} else {
			const char *rest = line[i] + head + strspn(line[i] + head, "0123456789");
			memcpy(out + o, rest, len - (size_t)(rest - line[i]));
			o += len - (size_t)(rest - line[i]);
		}
	}
	out[o] = '\0';
	strcpy(s, out);
}

static void test_dump(void)
{
	static const char *const names[] = {
		"01_discover_versions", "02_query", "03_create", "04_create_key_pair",
		"05_activate", "06_activate", "07_get", "08_get_attributes", "09_sign",
		"10_signature_verify", "11_locate", "12_locate", "13_revoke", "14_revoke",
		"15_destroy", "16_destroy", "17_destroy", "18_get",
	};
	static const char *const dirs[] = { "req", "resp" };
	static const char *const conns[] = { "c2", "c4" };
	static char out[65536];
	int compared = 0;

	for (size_t c = 0; c < ARRAY_LEN(conns); c++)
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
	for (size_t k = 0; k < 2; k++) {
		char hp[512], tp[512];
		snprintf(hp, sizeof hp, VECTORS "/pykmip-0.10-capture/%s_%s.%s.hex", conns[c],
		         names[i], dirs[k]);
		snprintf(tp, sizeof tp, VECTORS "/pykmip-0.10-capture/%s_%s.%s.txt", conns[c],
		         names[i], dirs[k]);
		size_t n, tn;
		uint8_t *m = read_hex(hp, &n);
		char *want = (char *)read_file(tp, &tn);
		CHECK(m && want, "capture %s present", hp);
		if (m && want) {
			struct ttlv_doc d;
			want = realloc(want, tn + 1);
			want[tn] = '\0';
			mask_password(want);
			CHECK(decode(&d, m, n) == 0, "capture %s decodes", hp);
			kmip_dump(&d, out, sizeof out);
			int same = strcmp(out, want) == 0;
			CHECK(same, "kmip_dump(%s) equals the capture's .txt", hp);
			if (!same)
				printf("--- got\n%s--- want\n%s", out, want);
			compared++;
		}
		free(m);
		free(want);
	}
	printf("dumper: %d capture files compared\n", compared);

	/* masking: the c4 requests carry the password 's3cret', which must not appear */
	size_t n;
	uint8_t *m = read_hex(VECTORS "/pykmip-0.10-capture/c4_09_sign.req.hex", &n);
	struct ttlv_doc d;
	if (m && decode(&d, m, n) == 0) {
		kmip_dump(&d, out, sizeof out);
		CHECK(strstr(out, "s3cret") == NULL, "dump masks the password");
		CHECK(strstr(out, "PASSWORD (4200A1) TextString len=* = '***'\n") != NULL &&
		      strstr(out, "CREDENTIAL_VALUE (420025) Structure len=*\n") != NULL &&
		      strstr(out, "REQUEST_MESSAGE (420078) Structure len=*\n") != NULL &&
		      strstr(out, "BATCH_COUNT (42000D) Integer len=4 = 1\n") != NULL,
		      "dump prints the masked password line, and no length that holds it");
		/* a small output buffer: cut, NUL-terminated, no overflow */
		char small[40];
		memset(small, 'x', sizeof small);
		kmip_dump(&d, small, 30);
		CHECK(strlen(small) == 29 && small[30] == 'x', "dump cut at the buffer size");
	} else
		CHECK(0, "c4_09_sign.req.hex reads and decodes");
	free(m);

	/* other types and an unknown tag, encoded by us */
	uint8_t buf[512];
	struct ttlv_enc e;
	ttlv_enc_init(&e, buf, sizeof buf);
	ttlv_open(&e, 0x540001);
	ttlv_put_long(&e, KT_USAGE_LIMITS_TOTAL, -5);
	ttlv_put_bool(&e, KT_FRESH, 1);
	ttlv_put_interval(&e, KT_LEASE_TIME, 3600);
	static const uint8_t mag[] = { 0x80, 0x01 };
	ttlv_put_bigint(&e, KT_MODULUS, mag, 2);
	ttlv_put_text(&e, KT_NAME_VALUE, "a'b\n", 4);
	ttlv_put_datetime(&e, KT_INITIAL_DATE, 0);
	ttlv_close(&e);
	CHECK(e.err == 0 && decode(&d, buf, e.len) == 0, "own message of every type decodes");
	kmip_dump(&d, out, sizeof out);
	CHECK(strcmp(out,
		"0x540001 (540001) Structure len=96\n"
		"  USAGE_LIMITS_TOTAL (420097) LongInteger len=8 = -5\n"
		"  FRESH (4200A8) Boolean len=8 = True\n"
		"  LEASE_TIME (420049) Interval len=4 = 3600\n"
		"  MODULUS (420052) BigInteger len=8 = 0000000000008001\n"
		"  NAME_VALUE (420055) TextString len=4 = 'a\\x27b\\x0a'\n"
		"  INITIAL_DATE (420039) DateTime len=8 = 1970-01-01T00:00:00Z\n") == 0,
		"dump of every type:\n%s", out);
}

/* ---- one malformed item per strictness rule ---- */

static void test_strict(void)
{
	static const struct {
		const char *hex;
		int err;
		const char *what;
	} cases[] = {
		/* good ones first */
		{ "42006A 02 00000004 00000001 00000000", 0, "Integer" },
		{ "420099 07 00000005 616C696365 000000", 0, "Text String 'alice'" },
		{ "420099 07 00000002 C3A9 000000000000", 0, "Text String U+00E9" },
		{ "420099 07 00000004 F09F9880 00000000", 0, "Text String U+1F600" },
		{ "420052 04 00000008 FF00000000000001", 0, "negative Big Integer" },
		{ "540001 01 00000000", 0, "empty extension Structure" },
		/* one rule each */
		{ "", TTLV_E_TRUNCATED, "empty input" },
		{ "42006A 02 000000", TTLV_E_TRUNCATED, "header cut short" },
		{ "42006A 02 00000004 00000001", TTLV_E_TRUNCATED, "Integer without its padding" },
		{ "42006A 02 00000004 00000001 00000000 00", TTLV_E_TRAILING, "a byte after the item" },
		{ "43006A 02 00000004 00000001 00000000", TTLV_E_TAG, "tag prefix 0x43" },
		{ "42006A 0B 00000004 00000001 00000000", TTLV_E_TYPE, "type 0x0B" },
		{ "42006A 00 00000004 00000001 00000000", TTLV_E_TYPE, "type 0x00" },
		{ "42006A 02 00000008 0000000000000001", TTLV_E_LENGTH, "Integer of length 8" },
		{ "42005C 05 00000008 0000000000000001", TTLV_E_LENGTH, "Enumeration of length 8" },
		{ "420049 0A 00000008 0000000000000001", TTLV_E_LENGTH, "Interval of length 8" },
		{ "420097 03 00000004 00000001 00000000", TTLV_E_LENGTH, "Long Integer of length 4" },
		{ "4200A8 06 00000004 00000001 00000000", TTLV_E_LENGTH, "Boolean of length 4" },
		{ "420092 09 00000004 00000001 00000000", TTLV_E_LENGTH, "Date-Time of length 4" },
		{ "42006A 02 00000004 00000001 00000001", TTLV_E_PADDING, "Integer padding not zero" },
		{ "420099 07 00000005 616C696365 000100", TTLV_E_PADDING, "Text padding not zero" },
		{ "4200C2 08 00000001 AA 00000000000080", TTLV_E_PADDING, "Byte String padding not zero" },
		{ "420052 04 00000004 00000001 00000000", TTLV_E_BIGINT, "Big Integer of length 4" },
		{ "420052 04 00000000", TTLV_E_BIGINT, "Big Integer of length 0" },
		{ "4200A8 06 00000008 0000000000000002", TTLV_E_BOOL, "Boolean 2" },
		{ "420099 07 00000003 610062 0000000000", TTLV_E_TEXT_NUL, "NUL in Text" },
		{ "420099 07 00000002 C0AF 000000000000", TTLV_E_UTF8, "overlong '/' (C0 AF)" },
		{ "420099 07 00000003 E080AF 0000000000", TTLV_E_UTF8, "overlong 3-byte" },
		{ "420099 07 00000003 EDA080 0000000000", TTLV_E_UTF8, "surrogate U+D800" },
		{ "420099 07 00000001 80 00000000000000", TTLV_E_UTF8, "stray continuation byte" },
		{ "420099 07 00000002 E282 000000000000", TTLV_E_UTF8, "sequence cut short" },
		{ "420099 07 00000004 F4908080 00000000", TTLV_E_UTF8, "above U+10FFFF" },
		{ "420099 07 00000001 FF 00000000000000", TTLV_E_UTF8, "byte 0xFF" },
		{ "420078 01 00000010 42006A 02 00000008 00000001 00000000", TTLV_E_LENGTH,
		  "bad child inside a Structure" },
		{ "420078 01 00000010 42006A 02 00000004 00000001 00000000 42006B 02 00000004"
		  " 00000002 00000000", TTLV_E_TRAILING, "second item after the Structure" },
		{ "420078 01 00000010 420077 01 00000010 42006A 02 00000004 00000001 00000000",
		  TTLV_E_OVERRUN, "child overruns its parent" },
		{ "420078 01 00000008 42006A 02 00000004", TTLV_E_OVERRUN,
		  "child header fits, its value overruns the parent" },
		{ "420078 01 0000000C 42006A 02 00000004 00000001", TTLV_E_STRUCT_LEN,
		  "Structure length 12" },
		{ "420078 01 00000020 42006A 02 00000004 00000001 00000000", TTLV_E_TRUNCATED,
		  "Structure longer than the input" },
	};
	uint8_t b[512];
	struct ttlv_doc d;

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		size_t n = unhex(b, sizeof b, cases[i].hex);
		uint8_t *exact = malloc(n ? n : 1);
		memcpy(exact, b, n);
		int rc = decode(&d, exact, n);
		CHECK(rc == cases[i].err, "strict: %s gives %d (%s), got %d (%s)", cases[i].what,
		      cases[i].err, ttlv_strerror(cases[i].err), rc, ttlv_strerror(rc));
		free(exact);
	}

	/* every error code has its own message */
	static const int codes[] = {
		TTLV_NEED_MORE, TTLV_E_TRUNCATED, TTLV_E_TRAILING, TTLV_E_TAG, TTLV_E_TYPE,
		TTLV_E_LENGTH, TTLV_E_PADDING, TTLV_E_BIGINT, TTLV_E_BOOL, TTLV_E_TEXT_NUL,
		TTLV_E_UTF8, TTLV_E_DEPTH, TTLV_E_COUNT, TTLV_E_OVERRUN, TTLV_E_STRUCT_LEN,
		TTLV_E_NOT_STRUCT, TTLV_E_TOO_BIG,
	};
	int distinct = 1;
	for (size_t i = 0; i < ARRAY_LEN(codes); i++)
		for (size_t j = 0; j < i; j++)
			if (codes[i] == codes[j] || strcmp(ttlv_strerror(codes[i]),
			                                   ttlv_strerror(codes[j])) == 0)
				distinct = 0;
	CHECK(distinct, "each TTLV error has its own code and message");

	/* depth: 4 nested structures pass with max 4, fail with max 3 */
	size_t n = unhex(b, sizeof b, "420078 01 00000018 420077 01 00000010 420069 01 00000008"
	                              " 42000C 01 00000000");
	d.it = items;
	d.cap = TTLV_MAX_ITEMS;
	CHECK(ttlv_decode(&d, b, n, 4) == 0 && d.n == 4, "depth 4 allowed with max 4");
	CHECK(ttlv_decode(&d, b, n, 3) == TTLV_E_DEPTH, "depth 4 refused with max 3");
	/* item count: 4 items do not fit an array of 3 */
	d.cap = 3;
	CHECK(ttlv_decode(&d, b, n, 4) == TTLV_E_COUNT, "item count over the array refused");
	d.cap = TTLV_MAX_ITEMS;
	/* a deep chain beyond TTLV_MAX_DEPTH is refused even with max_depth 0 */
	{
		static uint8_t deep[8 * 40];
		for (int i = 0; i < 40; i++) {
			buf_put_be32(deep + 8 * i, 0x42000100 | TT_STRUCT);
			buf_put_be32(deep + 8 * i + 4, (uint32_t)(8 * (39 - i)));
		}
		CHECK(ttlv_decode(&d, deep, sizeof deep, 0) == TTLV_E_DEPTH,
		      "nesting deeper than TTLV_MAX_DEPTH refused");
	}

	/* framing */
	n = unhex(b, sizeof b, "420078 01 00000010");
	CHECK(ttlv_frame(b, 0) == TTLV_NEED_MORE, "frame: nothing yet");
	CHECK(ttlv_frame(b, 7) == TTLV_NEED_MORE, "frame: 7 bytes");
	CHECK(ttlv_frame(b, 8) == 24, "frame: 8 + Length");
	n = unhex(b, sizeof b, "160303");
	CHECK(ttlv_frame(b, n) == TTLV_E_TAG, "frame: TLS record (not TTLV) refused at once");
	n = unhex(b, sizeof b, "420078 02 00000004");
	CHECK(ttlv_frame(b, n) == TTLV_E_NOT_STRUCT, "frame: not a Structure");
	n = unhex(b, sizeof b, "420078 01 7FFFFFF0");
	CHECK(ttlv_frame(b, n) == 0x7FFFFFF8L, "frame: 2 GiB - 8 reported, not buffered");
	n = unhex(b, sizeof b, "420078 01 FFFFFFF8");
#if LONG_MAX > 0xFFFFFFFFL
	CHECK(ttlv_frame(b, n) == 8 + 0xFFFFFFF8L, "frame: huge length reported, not buffered");
#else	/* 32-bit long (mips, armhf): 8 + Length does not fit the return value */
	CHECK(ttlv_frame(b, n) == TTLV_E_TOO_BIG, "frame: huge length refused, not wrapped");
#endif
	n = unhex(b, sizeof b, "420078 01 00000011");
	CHECK(ttlv_frame(b, n) == TTLV_E_STRUCT_LEN, "frame: odd Structure length");
}

/* ---- encoder ---- */

/* A Get response with one Unique Identifier, encoded into buf of cap bytes. */
static void get_response(struct ttlv_enc *e, const struct kmip_item *it, uint8_t *buf,
                         size_t cap)
{
	ttlv_enc_init(e, buf, cap);
	kmip_resp_begin(e, 1, 2, 1, 1700000000);
	kmip_item_begin(e, OP_GET, it, RS_SUCCESS, 0, NULL);
	ttlv_open(e, KT_RESPONSE_PAYLOAD);
	ttlv_put_text(e, KT_UNIQUE_IDENTIFIER, "0123456789ABCDEF_pub", 20);
	ttlv_close(e);
	ttlv_close(e);
	kmip_resp_end(e);
}

static void test_encoder(void)
{
	uint8_t b[256];
	struct ttlv_enc e;
	size_t n;
	uint8_t want[256];

	ttlv_enc_init(&e, b, sizeof b);
	ttlv_open(&e, KT_PROTOCOL_VERSION);
	ttlv_put_int(&e, KT_PROTOCOL_VERSION_MAJOR, 1);
	ttlv_put_int(&e, KT_PROTOCOL_VERSION_MINOR, 2);
	ttlv_close(&e);
	n = unhex(want, sizeof want, "420069 01 00000020 42006A 02 00000004 00000001 00000000"
	                             " 42006B 02 00000004 00000002 00000000");
	CHECK(e.err == 0 && e.len == n && memcmp(b, want, n) == 0, "Protocol Version encoding");

	ttlv_enc_init(&e, b, sizeof b);
	ttlv_put_text(&e, KT_USERNAME, "alice", 5);
	n = unhex(want, sizeof want, "420099 07 00000005 616C696365 000000");
	CHECK(e.len == n && memcmp(b, want, n) == 0, "Text String padded with zeros");

	static const uint8_t m1[] = { 0x00, 0x00, 0x80 }, m0[] = { 0 };
	ttlv_enc_init(&e, b, sizeof b);
	ttlv_put_bigint(&e, KT_MODULUS, m1, 3);
	ttlv_put_bigint(&e, KT_PUBLIC_EXPONENT, m0, 1);
	n = unhex(want, sizeof want, "420052 04 00000008 0000000000000080"
	                             " 42006C 04 00000008 0000000000000000");
	CHECK(e.len == n && memcmp(b, want, n) == 0, "Big Integer sign-padded to 8");
	{
		uint8_t mag[256];
		memset(mag, 0xC5, sizeof mag);
		uint8_t big[300];
		ttlv_enc_init(&e, big, sizeof big);
		ttlv_put_bigint(&e, KT_MODULUS, mag, 256);
		CHECK(e.err == 0 && buf_be32(big + 4) == 264 && big[8] == 0 && big[15] == 0 &&
		      big[16] == 0xC5, "2048-bit modulus with top bit set is 264 bytes");
	}

	/* overflow: every size from 0 to the full length, with guard bytes after cap */
	static struct kmip_item it = { OP_GET, (const uint8_t *)"\x01\x02", 2, NULL, 0, NULL };
	uint8_t full[512];
	get_response(&e, &it, full, sizeof full);
	CHECK(e.err == 0 && e.depth == 0, "response fits 512 bytes");
	size_t total = e.len;
	int guards_ok = 1, errs_ok = 1;
	for (size_t cap = 0; cap < total; cap++) {
		uint8_t *mem = malloc(cap + 16);
		memset(mem, 0xEE, cap + 16);
		get_response(&e, &it, mem, cap);
		if (!e.err || e.len > cap)
			errs_ok = 0;
		for (size_t g = cap; g < cap + 16; g++)
			if (mem[g] != 0xEE)
				guards_ok = 0;
		free(mem);
	}
	CHECK(errs_ok, "too small a buffer reports err, len stays within cap");
	CHECK(guards_ok, "nothing written past cap (guard bytes intact)");

	/* mark / rewind: replace a payload that does not fit by an error item */
	uint8_t small[160];
	ttlv_enc_init(&e, small, sizeof small);
	kmip_resp_begin(&e, 1, 2, 1, 1700000000);
	struct ttlv_mark mk = ttlv_enc_mark(&e);
	kmip_item_begin(&e, OP_GET, &it, RS_SUCCESS, 0, NULL);
	ttlv_open(&e, KT_RESPONSE_PAYLOAD);
	ttlv_put_bytes(&e, KT_KEY_MATERIAL, full, 200);
	CHECK(e.err != 0, "a 200-byte payload overflows 160 bytes");
	ttlv_enc_rewind(&e, mk);
	kmip_item_begin(&e, 0, &it, RS_OPERATION_FAILED, RR_RESPONSE_TOO_LARGE, NULL);
	ttlv_close(&e);
	kmip_resp_end(&e);
	struct ttlv_doc d;
	CHECK(e.err == 0 && decode(&d, small, e.len) == 0, "rewound response is well formed");

	/* a mark taken after an overflow keeps it: rewinding there cannot hide the error */
	ttlv_enc_init(&e, small, sizeof small);
	kmip_resp_begin(&e, 1, 2, 2, 1700000000);
	ttlv_put_bytes(&e, KT_KEY_MATERIAL, full, 200);
	struct ttlv_mark late = ttlv_enc_mark(&e);
	kmip_item_begin(&e, 0, &it, RS_OPERATION_FAILED, RR_ITEM_NOT_FOUND, NULL);
	ttlv_enc_rewind(&e, late);
	CHECK(e.err != 0, "rewind to a mark taken after an overflow leaves the overflow raised");

	/* close without open is an error, not a write */
	ttlv_enc_init(&e, b, sizeof b);
	ttlv_close(&e);
	CHECK(e.err != 0 && e.len == 0, "close without open flagged");
	/* open beyond TTLV_MAX_DEPTH */
	ttlv_enc_init(&e, b, sizeof b);
	for (int i = 0; i <= TTLV_MAX_DEPTH; i++)
		ttlv_open(&e, KT_ATTRIBUTE);
	CHECK(e.err != 0, "nesting deeper than TTLV_MAX_DEPTH flagged");

	/* buffers */
	uint8_t mem[8];
	CHECK(buf_has(mem + 4, mem + 2, 0) == 0, "buf_has: cursor past end is refused");
	CHECK(buf_has(mem, mem + 8, SIZE_MAX) == 0, "buf_has: huge need is refused");
	CHECK(buf_room(8, 9, 0) == 0 && buf_room(8, 4, 4) == 1 && buf_room(8, 4, 5) == 0,
	      "buf_room");
}

/* ---- vocabulary ---- */

static void test_vocabulary(void)
{
	int ordered = 1;
	CHECK(ARRAY_LEN(kmip_tag_names) == KT_LAST - KT_FIRST + 1, "all 211 tags named");
	CHECK(strcmp(kmip_tag_name(KT_ACTIVATION_DATE), "ACTIVATION_DATE") == 0, "first tag");
	CHECK(strcmp(kmip_tag_name(0x4200D3), "ATTESTATION_CAPABLE_INDICATOR") == 0, "last tag");
	CHECK(kmip_tag_name(0x4200D4) == NULL && kmip_tag_name(0x540000) == NULL,
	      "unknown tags have no name");
#define X(name, val) if (kmip_tag_name(val) == NULL || strcmp(kmip_tag_name(val), #name)) ordered = 0;
	KMIP_TAGS(X)
#undef X
	CHECK(ordered, "tag table in value order");
	CHECK(KT_UNIQUE_IDENTIFIER == 0x420094 && KT_REQUEST_PAYLOAD == 0x420079 &&
	      KT_PASSWORD == 0x4200A1 && KT_X_509_CERTIFICATE_IDENTIFIER == 0x4200B5,
	      "tag constants");
	CHECK(OP_CREATE_KEY_PAIR == 2 && OP_SIGN == 0x21 && OP_DISCOVER_VERSIONS == 0x1E &&
	      OP_JOIN_SPLIT_KEY == 0x29, "operation constants");
	CHECK(RR_ITEM_NOT_FOUND == 1 && RR_GENERAL_FAILURE == 0x100 &&
	      RR_FEATURE_NOT_SUPPORTED == 8, "result reasons");
	CHECK(ALG_RSA == 4 && ALG_ECDSA == 6 && ALG_EC == 0x1A && ALG_3DES == 2, "algorithms");
	CHECK(KFT_RAW == 1 && KFT_PKCS_1 == 3 && KFT_PKCS_8 == 4 && KFT_X_509 == 5 &&
	      KFT_TRANSPARENT_RSA_PUBLIC_KEY == 0x0B, "key format types");
	CHECK(CURVE_P_256 == 7 && HASH_SHA_256 == 6 && PAD_PKCS1_V1_5 == 8 && NT_URI == 2 &&
	      CT_USERNAME_AND_PASSWORD == 1 && QF_QUERY_SERVER_INFORMATION == 3 &&
	      DSA_ECDSA_WITH_SHA256 == 0x0E && ST_PRE_ACTIVE == 1 && REV_KEY_COMPROMISE == 2 &&
	      BEC_STOP == 2 && UM_SIGN == 1 && UM_VERIFY == 2 && LT_PUBLIC_KEY_LINK == 0x102 &&
	      KCT_EC_PUBLIC_KEY_TYPE_UNCOMPRESSED == 1 && AT_SAML_ASSERTION == 3 &&
	      OT_PRIVATE_KEY == 4 && RS_OPERATION_FAILED == 1, "other enumerations");
	CHECK(strcmp(kmip_enum_name(KT_OPERATION, OP_SIGN), "SIGN") == 0 &&
	      strcmp(kmip_enum_name(KT_RESULT_REASON, RR_GENERAL_FAILURE), "GENERAL_FAILURE") == 0 &&
	      strcmp(kmip_enum_name(KT_RECOMMENDED_CURVE, CURVE_P_256), "P_256") == 0 &&
	      kmip_enum_name(KT_OPERATION, 0x2A) == NULL &&
	      kmip_enum_name(KT_UNIQUE_IDENTIFIER, 1) == NULL, "enumeration names");
}

/* ---- request parsing ---- */

/* Build a request with our encoder; variants switch on one defect at a time. */
enum { V_GOOD, V_MAJOR2, V_COUNT_MISMATCH, V_NO_BID, V_CRITICAL_EXT, V_NONCRIT_EXT,
       V_UNKNOWN_HDR_12, V_UNKNOWN_HDR_13, V_NO_OP, V_WRONG_TYPE, V_OUT_OF_ORDER,
       V_TOO_MANY, V_BAD_BEC, V_NOT_REQUEST, V_NO_PAYLOAD };

static size_t build_request(uint8_t *b, size_t cap, int v)
{
	struct ttlv_enc e;
	int items_n = v == V_NO_BID || v == V_GOOD ? 2 : v == V_TOO_MANY ? KMIP_MAX_BATCH + 1 : 1;
	ttlv_enc_init(&e, b, cap);
	ttlv_open(&e, v == V_NOT_REQUEST ? KT_RESPONSE_MESSAGE : KT_REQUEST_MESSAGE);
	ttlv_open(&e, KT_REQUEST_HEADER);
	kreq_version(&e, v == V_MAJOR2 ? 2 : 1, v == V_UNKNOWN_HDR_13 ? 3 : 2);
	if (v == V_OUT_OF_ORDER)
		ttlv_put_int(&e, KT_BATCH_COUNT, items_n);
	ttlv_put_int(&e, KT_MAXIMUM_RESPONSE_SIZE, 4096);
	if (v == V_UNKNOWN_HDR_12 || v == V_UNKNOWN_HDR_13)
		ttlv_put_text(&e, 0x420105, "client-correlation", 18);
	kreq_credential(&e, "token1", "1234");
	ttlv_put_enum(&e, KT_BATCH_ERROR_CONTINUATION_OPTION, v == V_BAD_BEC ? 9 : BEC_CONTINUE);
	if (v != V_OUT_OF_ORDER)
		ttlv_put_int(&e, KT_BATCH_COUNT, v == V_COUNT_MISMATCH ? 2 : items_n);
	ttlv_close(&e);
	for (int i = 0; i < items_n; i++) {
		ttlv_open(&e, KT_BATCH_ITEM);
		if (v == V_WRONG_TYPE)
			ttlv_put_int(&e, KT_OPERATION, OP_GET);
		else if (v != V_NO_OP)
			ttlv_put_enum(&e, KT_OPERATION, i ? OP_ACTIVATE : OP_GET);
		if (items_n > 1 && !(v == V_NO_BID && i == 1)) {
			uint8_t id[4];
			buf_put_be32(id, (uint32_t)i);
			ttlv_put_bytes(&e, KT_UNIQUE_BATCH_ITEM_ID, id, 4);
		}
		if (v != V_NO_PAYLOAD) {
			ttlv_open(&e, KT_REQUEST_PAYLOAD);
			kreq_uid(&e, "00AA_pub");
			ttlv_close(&e);
		}
		if (v == V_CRITICAL_EXT || v == V_NONCRIT_EXT) {
			ttlv_open(&e, KT_MESSAGE_EXTENSION);
			ttlv_put_text(&e, KT_VENDOR_IDENTIFICATION, "ACME", 4);
			ttlv_put_bool(&e, KT_CRITICALITY_INDICATOR, v == V_CRITICAL_EXT);
			ttlv_open(&e, KT_VENDOR_EXTENSION);
			ttlv_close(&e);
			ttlv_close(&e);
		}
		ttlv_close(&e);
	}
	ttlv_close(&e);
	return e.err ? 0 : e.len;
}

static void test_parse_request(void)
{
	static struct kmip_request r;
	struct ttlv_doc d;
	const char *why;
	size_t n;
	uint32_t rr;

	/* a real PyKMIP request with credentials */
	uint8_t *m = read_hex(VECTORS "/pykmip-0.10-capture/c4_09_sign.req.hex", &n);
	CHECK(m && decode(&d, m, n) == 0, "c4_09_sign decodes");
	if (m) {
		rr = kmip_parse_request(&d, &r, &why);
		CHECK(rr == 0, "c4_09_sign accepted (%s)", why ? why : "");
		CHECK(r.major == 1 && r.minor == 2, "version 1.2");
		CHECK(r.has_cred && r.user_len == 5 && memcmp(r.user, "alice", 5) == 0 &&
		      r.pass_len == 6 && memcmp(r.pass, "s3cret", 6) == 0, "username and password");
		CHECK(r.max_resp == -1 && r.async == 0 && r.err_cont == BEC_STOP &&
		      r.batch_count == 1 && r.n == 1, "header defaults");
		CHECK(r.item[0].op == OP_SIGN && r.item[0].bid == NULL && r.item[0].reason == 0 &&
		      r.item[0].payload && r.item[0].payload->tag == KT_REQUEST_PAYLOAD,
		      "batch item: Sign with payload");
		const char *uid;
		uint32_t ul, hash;
		const uint8_t *data;
		const struct ttlv *cp;
		CHECK(kmip_get_text(&d, r.item[0].payload, KT_UNIQUE_IDENTIFIER, &uid, &ul) == 0 &&
		      ul == 1 && uid[0] == '9', "kmip_get_text: Unique Identifier");
		CHECK(kmip_get_bytes(&d, r.item[0].payload, KT_DATA, &data, &ul) == 0 && ul == 10 &&
		      memcmp(data, "hello kmip", 10) == 0, "kmip_get_bytes: Data");
		CHECK(kmip_get_struct(&d, r.item[0].payload, KT_CRYPTOGRAPHIC_PARAMETERS, &cp) == 0 &&
		      kmip_get_enum(&d, cp, KT_HASHING_ALGORITHM, &hash) == 0 && hash == HASH_SHA_256,
		      "kmip_get_enum: Hashing Algorithm");
		CHECK(kmip_get_text(&d, r.item[0].payload, KT_DATA, &uid, &ul) == KMIP_BAD_TYPE,
		      "kmip_get_text on a Byte String: bad type");
		CHECK(kmip_get_enum(&d, r.item[0].payload, KT_OBJECT_TYPE, &hash) == KMIP_ABSENT,
		      "kmip_get_enum on a missing field: absent");
	}
	free(m);

	/* attributes of a real Create Key Pair */
	m = read_hex(VECTORS "/pykmip-0.10-capture/c4_04_create_key_pair.req.hex", &n);
	if (m && decode(&d, m, n) == 0 && kmip_parse_request(&d, &r, &why) == 0) {
		const struct ttlv *pl = r.item[0].payload, *common, *priv, *v;
		int32_t len;
		CHECK(kmip_get_struct(&d, pl, KT_COMMON_TEMPLATE_ATTRIBUTE, &common) == 0 &&
		      kmip_get_struct(&d, pl, KT_PRIVATE_KEY_TEMPLATE_ATTRIBUTE, &priv) == 0,
		      "Create Key Pair templates");
		v = kmip_attr_value(&d, common, "Cryptographic Algorithm", 0);
		CHECK(v && v->type == TT_ENUM && v->num == ALG_RSA, "attr: Cryptographic Algorithm");
		v = kmip_attr_value(&d, common, "Cryptographic Length", 0);
		CHECK(v && v->type == TT_INT && v->num == 2048, "attr: Cryptographic Length");
		v = kmip_attr_value(&d, priv, "Name", 0);
		const char *nm;
		uint32_t nl;
		CHECK(v && kmip_get_text(&d, v, KT_NAME_VALUE, &nm, &nl) == 0 && nl == 8 &&
		      memcmp(nm, "rsa-priv", 8) == 0, "attr: Name value");
		CHECK(kmip_attr_value(&d, priv, "Name", 1) == NULL, "attr: no second Name");
		CHECK(kmip_attr_value(&d, priv, "Nam", 0) == NULL, "attr: prefix does not match");
		v = kmip_attr_value(&d, priv, "Cryptographic Usage Mask", 0);
		CHECK(v && v->type == TT_INT && v->num == UM_SIGN, "attr: private Usage Mask Sign");
		/* Cryptographic Length is an attribute in the template, not a payload field */
		CHECK(kmip_get_int(&d, pl, KT_CRYPTOGRAPHIC_LENGTH, &len) == KMIP_ABSENT,
		      "kmip_get_int on a missing field: absent");
	} else
		CHECK(0, "c4_04_create_key_pair parses");
	free(m);

	static const struct {
		int v;
		uint32_t rr;      /* whole message */
		uint32_t item_rr; /* item 0 */
		const char *what;
	} cases[] = {
		{ V_GOOD, 0, 0, "good batch of two" },
		{ V_MAJOR2, RR_INVALID_MESSAGE, 0, "major version 2" },
		{ V_COUNT_MISMATCH, RR_INVALID_MESSAGE, 0, "Batch Count 2, one item" },
		{ V_NO_BID, RR_INVALID_MESSAGE, 0, "batch of two, one without ID" },
		{ V_CRITICAL_EXT, 0, RR_FEATURE_NOT_SUPPORTED, "critical extension" },
		{ V_NONCRIT_EXT, 0, 0, "non-critical extension ignored" },
		{ V_UNKNOWN_HDR_12, RR_INVALID_FIELD, 0, "unknown header field in 1.2" },
		{ V_UNKNOWN_HDR_13, 0, 0, "unknown header field in 1.3 ignored" },
		{ V_NO_OP, 0, RR_INVALID_MESSAGE, "item without Operation" },
		{ V_WRONG_TYPE, 0, RR_INVALID_MESSAGE, "Operation as Integer" },
		{ V_OUT_OF_ORDER, RR_INVALID_MESSAGE, 0, "Batch Count before the others" },
		{ V_TOO_MANY, RR_FEATURE_NOT_SUPPORTED, 0, "65 batch items" },
		{ V_BAD_BEC, RR_INVALID_FIELD, 0, "Batch Error Continuation Option 9" },
		{ V_NOT_REQUEST, RR_INVALID_MESSAGE, 0, "a Response Message" },
		{ V_NO_PAYLOAD, 0, RR_INVALID_MESSAGE, "item without payload" },
	};
	static uint8_t b[16384];
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		n = build_request(b, sizeof b, cases[i].v);
		CHECK(n > 0 && decode(&d, b, n) == 0, "request '%s' built", cases[i].what);
		why = NULL;
		rr = kmip_parse_request(&d, &r, &why);
		CHECK(rr == cases[i].rr, "request '%s': reason 0x%X, want 0x%X (%s)", cases[i].what,
		      rr, cases[i].rr, why ? why : "");
		CHECK(rr != 0 || r.item[0].reason == cases[i].item_rr,
		      "request '%s': item reason 0x%X, want 0x%X", cases[i].what, r.item[0].reason,
		      cases[i].item_rr);
		CHECK(rr == 0 || why != NULL, "request '%s': refusal explained", cases[i].what);
	}
	n = build_request(b, sizeof b, V_GOOD);
	decode(&d, b, n);
	rr = kmip_parse_request(&d, &r, &why);
	CHECK(rr == 0 && r.n == 2 && r.item[1].op == OP_ACTIVATE && r.item[1].bid_len == 4 &&
	      r.item[1].bid[3] == 1 && r.err_cont == BEC_CONTINUE && r.max_resp == 4096 &&
	      r.user_len == 6 && r.pass_len == 4, "good batch: fields");
	n = build_request(b, sizeof b, V_UNKNOWN_HDR_13);
	decode(&d, b, n);
	rr = kmip_parse_request(&d, &r, &why);
	CHECK(rr == 0 && r.minor == 3, "1.3 request accepted as such");

	/* the response to a refused message, and the version cap */
	uint8_t out[512];
	struct ttlv_enc e;
	ttlv_enc_init(&e, out, sizeof out);
	kmip_resp_error(&e, 1, 3, 1700000000, RR_INVALID_MESSAGE, "bad");
	CHECK(e.err == 0 && decode(&d, out, e.len) == 0, "error response decodes");
	static char txt[4096];
	kmip_dump(&d, txt, sizeof txt);
	CHECK(strcmp(txt,
		"RESPONSE_MESSAGE (42007B) Structure len=136\n"
		"  RESPONSE_HEADER (42007A) Structure len=72\n"
		"    PROTOCOL_VERSION (420069) Structure len=32\n"
		"      PROTOCOL_VERSION_MAJOR (42006A) Integer len=4 = 1\n"
		"      PROTOCOL_VERSION_MINOR (42006B) Integer len=4 = 2\n"
		"    TIME_STAMP (420092) DateTime len=8 = 2023-11-14T22:13:20Z\n"
		"    BATCH_COUNT (42000D) Integer len=4 = 1\n"
		"  BATCH_ITEM (42000F) Structure len=48\n"
		"    RESULT_STATUS (42007F) Enumeration len=4 = 0x00000001\n"
		"    RESULT_REASON (42007E) Enumeration len=4 = 0x00000004\n"
		"    RESULT_MESSAGE (42007D) TextString len=3 = 'bad'\n") == 0,
	      "error response: 1.3 answered as 1.2, no Operation:\n%s", txt);
	ttlv_enc_init(&e, out, sizeof out);
	kmip_resp_begin(&e, 1, 0, 1, 0);
	kmip_resp_end(&e);
	decode(&d, out, e.len);
	CHECK(d.n > 4 && d.it[4].tag == KT_PROTOCOL_VERSION_MINOR && d.it[4].num == 0,
	      "1.0 request answered in 1.0");
}

/* Section 1's helpers of the log lines: a peer's value as one word; the latency histogram. */
static void test_log_helpers(void)
{
	char w[64];
	log_word(w, sizeof w, (const uint8_t *)"k2p", 3, 0);
	CHECK(strcmp(w, "k2p") == 0, "log_word: a plain username stays");
	log_word(w, sizeof w, (const uint8_t *)"a b=c,d\"e\\f\n", 12, 0);
	CHECK(strcmp(w, "a\\x20b\\x3dc\\x2cd\\x22e\\x5cf\\x0a") == 0,
	      "log_word: blank, =, comma, quote, backslash, newline escaped (%s)", w);
	log_word(w, sizeof w, (const uint8_t *)"", 0, 0);
	CHECK(strcmp(w, "-") == 0, "log_word: nothing is -");
	log_word(w, sizeof w, (const uint8_t *)"login refused: x=1, \"y\"", 23, 1);
	CHECK(strcmp(w, "login refused: x=1, \\x22y\\x22") == 0,
	      "log_word quoted: blanks, = and comma stay, quotes escaped (%s)", w);
	log_word(w, 7, (const uint8_t *)"\n\n", 2, 0);
	CHECK(strcmp(w, "\\x0a") == 0, "log_word: cut before an escape that does not fit (%s)", w);
	log_word(w, sizeof w, (const uint8_t *)"\xc3\xa9", 2, 0);
	CHECK(strcmp(w, "\\xc3\\xa9") == 0, "log_word: bytes above ASCII escaped (%s)", w);

	int ok = 1;
	for (uint64_t v = 0; v < 200000 && ok; v++) {
		unsigned b = hist_bucket(v);
		ok = b < HIST_BUCKETS && v <= hist_upper(b) && (double)hist_upper(b) <= 1.25 * v + 1 &&
		     (b == 0 || hist_upper(b - 1) < v);
		if (!ok)
			printf("value %llu: bucket %u, upper %llu\n", (unsigned long long)v, b,
			       (unsigned long long)hist_upper(b));
	}
	CHECK(ok, "hist: each value below 200000 lies in its bucket, whose bound is <= 25 %% above");
	CHECK(hist_bucket(UINT64_MAX) == HIST_BUCKETS - 1 && hist_upper(HIST_BUCKETS - 1) == UINT64_MAX,
	      "hist: the last bucket ends at UINT64_MAX");
	uint64_t h[HIST_BUCKETS] = { 0 };
	CHECK(hist_quantile(h, 0.5) == 0, "hist: no values, p50 0");
	for (uint64_t v = 1; v <= 100; v++)
		h[hist_bucket(v)]++;
	CHECK(hist_quantile(h, 0.5) == hist_upper(hist_bucket(50)) &&
	      hist_quantile(h, 0.99) == hist_upper(hist_bucket(99)),
	      "hist: p50 and p99 of 1..100 are the bounds of 50's and 99's buckets (%llu, %llu)",
	      (unsigned long long)hist_quantile(h, 0.5), (unsigned long long)hist_quantile(h, 0.99));
}

/* ---- the tests' request builder (tests/kreq.h) against captured bytes ---- */

/* Every test that speaks KMIP builds its requests with kreq.h; here it must write two
 * requests that others wrote, byte for byte. */
static void test_builder(void)
{
	uint8_t b[1024], *m;
	size_t n, len;
	struct ttlv_enc e;

	/* OASIS KMIP 1.0 use case 3.1.2 step 4: Destroy, no credential */
	static const struct kreq_hdr v10 = { 1, 0, NULL, NULL, -1, 0, 1 };
	kreq_one(&e, b, sizeof b, &v10, OP_DESTROY);
	kreq_uid(&e, "61b10614-d8b5-46f9-8d17-2fa6ea1d747a");
	len = kreq_one_end(&e);
	m = read_hex(VECTORS "/oasis-1.0-1.1/"
	             "kmip_1_0_usecase_3_1_2_step_4_destroy_symmetric_key_request.req.hex", &n);
	CHECK(m != NULL && len == n && memcmp(b, m, n) == 0,
	      "kreq: the OASIS 3.1.2 Destroy request, byte for byte (%zu / %zu bytes)", len, n);
	free(m);

	/* PyKMIP 0.10 capture: Sign at 1.2 with Username and Password, as Cascade sends it */
	static const struct kreq_hdr alice = { 1, 2, "alice", "s3cret", -1, 0, 1 };
	kreq_one(&e, b, sizeof b, &alice, OP_SIGN);
	kreq_uid(&e, "9");
	kreq_crypto_params(&e, PAD_PKCS1_V1_5, HASH_SHA_256, 0, ALG_RSA);
	ttlv_put_bytes(&e, KT_DATA, (const uint8_t *)"hello kmip", 10);
	len = kreq_one_end(&e);
	m = read_hex(VECTORS "/pykmip-0.10-capture/c4_09_sign.req.hex", &n);
	CHECK(m != NULL && len == n && memcmp(b, m, n) == 0,
	      "kreq: PyKMIP's Sign with a credential, byte for byte (%zu / %zu bytes)", len, n);
	free(m);

	/* a request that does not fit is reported as 0 bytes, not cut short */
	kreq_one(&e, b, 64, &alice, OP_SIGN);
	kreq_uid(&e, "9");
	CHECK(kreq_one_end(&e) == 0, "kreq: a request larger than its buffer gives length 0");
}

int main(void)
{
	test_log_helpers();
	test_strict();
	test_encoder();
	test_vocabulary();
	test_parse_request();
	test_builder();
	test_dump();
	test_vectors();
	return check_summary();
}
