/*
 * The one KMIP request builder of the tests (test_op, test_ttlv, e2e, bench, fuzz_op,
 * fuzz_ttlv).  Included after ../kmip2pkcs11.c: it writes with the daemon's own TTLV
 * encoder (ttlv_open / ttlv_put_* / ttlv_close), so a test can go on with ttlv_put_* for
 * whatever a payload needs and for the deliberately malformed messages the tests send.
 * That encoder is not taken on trust: test_ttlv re-encodes every OASIS and PyKMIP vector
 * byte for byte, and checks that this builder reproduces two of those requests exactly
 * (an OASIS Destroy, and the PyKMIP capture of a Sign with a credential).
 *
 * A request is written in the order of the message:
 *
 *   kreq_begin(e, buf, cap, &hdr);       Request Message { Request Header { ... },
 *   kreq_item(e, OP_GET, NULL);            Batch Item { Operation, Request Payload {
 *   kreq_uid(e, uid);                        Unique Identifier
 *   kreq_item_end(e);                      } }
 *   n = kreq_end(e);                     }   (0: it did not fit)
 */
#ifndef K2P_KREQ_H
#define K2P_KREQ_H

/* What goes into the Request Header. */
struct kreq_hdr {
	int major, minor;           /* Protocol Version */
	const char *user, *pass;    /* user NULL: no Authentication; pass NULL: no Password */
	int32_t max_resp;           /* < 0: no Maximum Response Size */
	uint32_t bec;               /* 0: no Batch Error Continuation Option */
	int count;                  /* Batch Count */
};

/* Protocol Version { Protocol Version Major, Protocol Version Minor } */
static void kreq_version(struct ttlv_enc *e, int major, int minor)
{
	ttlv_open(e, KT_PROTOCOL_VERSION);
	ttlv_put_int(e, KT_PROTOCOL_VERSION_MAJOR, major);
	ttlv_put_int(e, KT_PROTOCOL_VERSION_MINOR, minor);
	ttlv_close(e);
}

/* Authentication { Credential { Credential Type Username and Password,
 *                               Credential Value { Username, [Password] } } } */
static void kreq_credential(struct ttlv_enc *e, const char *user, const char *pass)
{
	ttlv_open(e, KT_AUTHENTICATION);
	ttlv_open(e, KT_CREDENTIAL);
	ttlv_put_enum(e, KT_CREDENTIAL_TYPE, CT_USERNAME_AND_PASSWORD);
	ttlv_open(e, KT_CREDENTIAL_VALUE);
	ttlv_put_text(e, KT_USERNAME, user, strlen(user));
	if (pass != NULL)
		ttlv_put_text(e, KT_PASSWORD, pass, strlen(pass));
	ttlv_close(e);
	ttlv_close(e);
	ttlv_close(e);
}

/* Request Header { Protocol Version, [Maximum Response Size], [Authentication],
 *                  [Batch Error Continuation Option], Batch Count } */
static void kreq_header(struct ttlv_enc *e, const struct kreq_hdr *h)
{
	ttlv_open(e, KT_REQUEST_HEADER);
	kreq_version(e, h->major, h->minor);
	if (h->max_resp >= 0)
		ttlv_put_int(e, KT_MAXIMUM_RESPONSE_SIZE, h->max_resp);
	if (h->user != NULL)
		kreq_credential(e, h->user, h->pass);
	if (h->bec != 0)
		ttlv_put_enum(e, KT_BATCH_ERROR_CONTINUATION_OPTION, h->bec);
	ttlv_put_int(e, KT_BATCH_COUNT, h->count);
	ttlv_close(e);
}

/* Request Message { Request Header, ... left open for the Batch Items. */
static void kreq_begin(struct ttlv_enc *e, uint8_t *buf, size_t cap, const struct kreq_hdr *h)
{
	ttlv_enc_init(e, buf, cap);
	ttlv_open(e, KT_REQUEST_MESSAGE);
	kreq_header(e, h);
}

/* Batch Item { Operation, [Unique Batch Item ID], Request Payload { ... left open;
 * bid NULL: no ID. */
static void kreq_item_id(struct ttlv_enc *e, uint32_t op, const uint8_t *bid, size_t n)
{
	ttlv_open(e, KT_BATCH_ITEM);
	ttlv_put_enum(e, KT_OPERATION, op);
	if (bid != NULL)
		ttlv_put_bytes(e, KT_UNIQUE_BATCH_ITEM_ID, bid, n);
	ttlv_open(e, KT_REQUEST_PAYLOAD);
}

/* The same with a printable Unique Batch Item ID (its bytes without the NUL). */
static void kreq_item(struct ttlv_enc *e, uint32_t op, const char *bid)
{
	kreq_item_id(e, op, (const uint8_t *)bid, bid != NULL ? strlen(bid) : 0);
}

/* Closes the Request Payload and the Batch Item. */
static void kreq_item_end(struct ttlv_enc *e)
{
	ttlv_close(e);
	ttlv_close(e);
}

/* Closes the Request Message: its length, or 0 when it did not fit the buffer. */
static size_t kreq_end(struct ttlv_enc *e)
{
	ttlv_close(e);
	return e->err ? 0 : e->len;
}

/* A Request Message of one Batch Item (h->count as given), its payload left open. */
static void kreq_one(struct ttlv_enc *e, uint8_t *buf, size_t cap, const struct kreq_hdr *h,
                     uint32_t op)
{
	kreq_begin(e, buf, cap, h);
	kreq_item(e, op, NULL);
}

/* Closes what kreq_one opened: its length, or 0 when it did not fit. */
static size_t kreq_one_end(struct ttlv_enc *e)
{
	kreq_item_end(e);
	return kreq_end(e);
}

/* ---- payload fields ---- */

static void kreq_uid(struct ttlv_enc *e, const char *uid)
{
	ttlv_put_text(e, KT_UNIQUE_IDENTIFIER, uid, strlen(uid));
}

/* Attribute { Attribute Name, Attribute Value ... left open. */
static void kreq_attr_begin(struct ttlv_enc *e, const char *name)
{
	ttlv_open(e, KT_ATTRIBUTE);
	ttlv_put_text(e, KT_ATTRIBUTE_NAME, name, strlen(name));
}

static void kreq_attr_enum(struct ttlv_enc *e, const char *name, uint32_t v)
{
	kreq_attr_begin(e, name);
	ttlv_put_enum(e, KT_ATTRIBUTE_VALUE, v);
	ttlv_close(e);
}

static void kreq_attr_int(struct ttlv_enc *e, const char *name, int32_t v)
{
	kreq_attr_begin(e, name);
	ttlv_put_int(e, KT_ATTRIBUTE_VALUE, v);
	ttlv_close(e);
}

/* Attribute "Name" { Name Value, Name Type Uninterpreted Text String } */
static void kreq_attr_name(struct ttlv_enc *e, const char *value)
{
	kreq_attr_begin(e, "Name");
	ttlv_open(e, KT_ATTRIBUTE_VALUE);
	ttlv_put_text(e, KT_NAME_VALUE, value, strlen(value));
	ttlv_put_enum(e, KT_NAME_TYPE, NT_UNINTERPRETED_TEXT_STRING);
	ttlv_close(e);
	ttlv_close(e);
}

/* Attribute "Cryptographic Domain Parameters" { Recommended Curve } */
static void kreq_attr_curve(struct ttlv_enc *e, uint32_t curve)
{
	kreq_attr_begin(e, "Cryptographic Domain Parameters");
	ttlv_open(e, KT_ATTRIBUTE_VALUE);
	ttlv_put_enum(e, KT_RECOMMENDED_CURVE, curve);
	ttlv_close(e);
	ttlv_close(e);
}

/* Cryptographic Parameters (KMIP 1.2 section 3.6, in its order): [Padding Method],
 * [Hashing Algorithm], [Digital Signature Algorithm], [Cryptographic Algorithm];
 * a zero leaves the field out. */
static void kreq_crypto_params(struct ttlv_enc *e, uint32_t pad, uint32_t hash, uint32_t dsa,
                               uint32_t alg)
{
	ttlv_open(e, KT_CRYPTOGRAPHIC_PARAMETERS);
	if (pad != 0)
		ttlv_put_enum(e, KT_PADDING_METHOD, pad);
	if (hash != 0)
		ttlv_put_enum(e, KT_HASHING_ALGORITHM, hash);
	if (dsa != 0)
		ttlv_put_enum(e, KT_DIGITAL_SIGNATURE_ALGORITHM, dsa);
	if (alg != 0)
		ttlv_put_enum(e, KT_CRYPTOGRAPHIC_ALGORITHM, alg);
	ttlv_close(e);
}

/*
 * Create Key Pair payload as Cascade sends it:
 *   Common Template-Attribute { [Cryptographic Algorithm], [Cryptographic Length],
 *                               [Cryptographic Domain Parameters { Recommended Curve }] }
 *   Private Key Template-Attribute { [Name], Cryptographic Usage Mask Sign }
 *   Public Key Template-Attribute { [Name], Cryptographic Usage Mask Verify }
 * A zero or NULL leaves the field out.
 */
static void kreq_create_key_pair(struct ttlv_enc *e, uint32_t alg, int32_t len, uint32_t curve,
                                 const char *priv_name, const char *pub_name)
{
	ttlv_open(e, KT_COMMON_TEMPLATE_ATTRIBUTE);
	if (alg != 0)
		kreq_attr_enum(e, "Cryptographic Algorithm", alg);
	if (len != 0)
		kreq_attr_int(e, "Cryptographic Length", len);
	if (curve != 0)
		kreq_attr_curve(e, curve);
	ttlv_close(e);
	ttlv_open(e, KT_PRIVATE_KEY_TEMPLATE_ATTRIBUTE);
	if (priv_name != NULL)
		kreq_attr_name(e, priv_name);
	kreq_attr_int(e, "Cryptographic Usage Mask", UM_SIGN);
	ttlv_close(e);
	ttlv_open(e, KT_PUBLIC_KEY_TEMPLATE_ATTRIBUTE);
	if (pub_name != NULL)
		kreq_attr_name(e, pub_name);
	kreq_attr_int(e, "Cryptographic Usage Mask", UM_VERIFY);
	ttlv_close(e);
}

#endif
