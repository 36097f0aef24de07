/*
 * nullp11 - a PKCS#11 module that does no cryptography, for measuring the daemon's own cost
 * and for fuzzing and fault tests.
 *
 * One slot (ID 1) with a token labelled "null"; the user PIN is "1234".  Key generation
 * returns fixed handles (RSA-2048 pair 1/2, P-256 pair 3/4, Ed25519 pair 5/6) with fixed
 * public values; a pair takes the CKA_ID of the last generation's template.  C_Sign returns
 * fixed bytes of the right length.  Not thread-safe beyond what the benchmarks need: the
 * object table has a lock, and search / sign state is per thread (one session per thread).
 *
 * Environment:
 *   NULLP11_FAIL="C_Sign=0x30,C_Login=0xA0"  those functions return those codes
 *   NULLP11_NULL="C_Sign"                    that entry of the function list is NULL
 *   NULLP11_NO_V3=1                          C_GetInterface fails: a 2.40 module
 *   NULLP11_MECHS="0x1,0x1041"               the mechanism list (default: RSA, EC and
 *                                            Edwards generation and signing)
 *   NULLP11_DELAY="C_GetSlotList=3000"       those functions sleep that many ms first
 * All are read by C_GetFunctionList.  C_GetMechanismInfo gives a TPM 2.0's key sizes: RSA
 * 1024..4096, EC 256..384 bits.  C_GetInterface ("PKCS 11", Cryptoki 3.0) gives the
 * same functions in a 3.0 list, so that the daemon's 3.0 path is exercised; SoftHSM 2.6
 * has only C_GetFunctionList, which covers the other one.
 *
 * At run time (tests find these with dlsym in the loaded module):
 *   nullp11_ctl("fail C_Sign=0x30*2,C_Login=0xA0")  as NULLP11_FAIL, *N: the next N calls
 *                                    only; "fail" alone clears every fault
 *   nullp11_ctl("remove")            the token is pulled: not in C_GetSlotList(TRUE),
 *                                    CKR_TOKEN_NOT_PRESENT; sessions and login are gone
 *   nullp11_ctl("insert")            it is back, in the same slot; "insert-new-slot": in a
 *                                    slot with the next slot ID (as after a re-plug)
 *   nullp11_ctl("reinsert-at C_SignInit")  that function's next call finds the token
 *                                    removed and re-inserted (same slot) and answers
 *                                    CKR_SESSION_HANDLE_INVALID; "reinsert-new-at": in
 *                                    a new slot
 *   nullp11_ctl("stuck")             slot and session calls fail with CKR_GENERAL_ERROR
 *                                    until C_Initialize (after C_Finalize)
 *   nullp11_ctl("sticky-sign")       a failed C_Sign leaves the operation active, as some
 *                                    vendor modules do; C_SignInit(NULL) (3.0) or closing
 *                                    the session ends it
 *   nullp11_ctl("store-gone")        as SoftHSM2 with its token directory gone: searches
 *                                    find nothing, objects' handles are invalid and
 *                                    C_GetTokenInfo fails with CKR_GENERAL_ERROR, until
 *                                    nullp11_ctl("store-back")
 *   nullp11_ctl("reuse-handles")     the RSA pair (CKA_ID 11, handles 1 and 2) is deleted
 *                                    and its handles given to a new pair, CKA_ID 44
 *   nullp11_calls("C_DestroyObject") how many times that function was called
 *
 * Build: cc -shared -fPIC -I. tests/nullp11.c -o build/nullp11.so
 */
#define _GNU_SOURCE 1
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pkcs11/pkcs11.h"

#define EXPORT __attribute__((visibility("default")))
#define SLOT 1UL

/* ---- fault injection ---- */

#define NULLP11_FNS(X) X(Initialize) X(GetSlotList) X(GetTokenInfo) X(GetMechanismList) \
	X(OpenSession) X(GetSessionInfo) X(Login) X(GenerateKeyPair) X(GetAttributeValue) \
	X(FindObjectsInit) X(FindObjects) X(SignInit) X(Sign) X(DestroyObject) \
	X(SetAttributeValue) X(GenerateRandom) X(Finalize) X(CloseSession)
enum {
#define E(n) F_##n,
	NULLP11_FNS(E)
#undef E
	F_COUNT
};
static const char *const fn_name[] = {
#define N(n) "C_" #n,
	NULLP11_FNS(N)
#undef N
};
static CK_RV fail_rv[F_COUNT];
static int fail_left[F_COUNT];          /* > 0: the fault stops after that many calls */
static unsigned long calls[F_COUNT];
static unsigned long delay_ms[F_COUNT];

static void nap(unsigned long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* The token and the module's state, for the removal and stuck-module knobs. */
static CK_SLOT_ID slot_id = SLOT;
static int present = 1, stuck, sticky_sign, reinsert_at = -1, reinsert_new, store_gone;
static unsigned long sess_epoch = 1;    /* sessions opened before a removal are gone */
static int logged_in;

static int fn_index(const char *s, size_t n)
{
	for (int i = 0; i < F_COUNT; i++)
		if (strlen(fn_name[i]) == n && !memcmp(fn_name[i], s, n))
			return i;
	return -1;
}

/* Each "C_Name=value" of the comma-separated list e, with the function's index. */
static void parse_each(const char *e, void (*set)(int i, const char *value))
{
	while (e && *e) {
		const char *eq = strchr(e, '=');
		if (!eq)
			break;
		int i = fn_index(e, (size_t)(eq - e));
		if (i >= 0)
			set(i, eq + 1);
		e = strchr(eq, ',');
		e = e ? e + 1 : NULL;
	}
}

/* "C_Name=rv[*n],..." (NULLP11_FAIL): those functions fail with rv (n times; 0: always). */
static void set_fail(int i, const char *v)
{
	char *end;
	fail_rv[i] = strtoul(v, &end, 0);
	fail_left[i] = *end == '*' ? atoi(end + 1) : 0;
}

static void parse_fail(const char *e)
{
	memset(fail_rv, 0, sizeof fail_rv);
	memset(fail_left, 0, sizeof fail_left);
	parse_each(e, set_fail);
}

/* "C_Name=ms,..." (NULLP11_DELAY): those functions sleep that long first. */
static void set_delay(int i, const char *v)
{
	delay_ms[i] = strtoul(v, NULL, 0);
}

static void parse_delay(const char *e)
{
	memset(delay_ms, 0, sizeof delay_ms);
	parse_each(e, set_delay);
}

/* The token is pulled: its sessions and the login go. */
static void token_remove(void)
{
	present = 0;
	logged_in = 0;
	sess_epoch++;
}

/* Every entry point starts here: count, then an injected fault or a planned re-insertion. */
static CK_RV enter(int f)
{
	__atomic_fetch_add(&calls[f], 1, __ATOMIC_RELAXED);
	if (delay_ms[f])
		nap(delay_ms[f]);
	if (f == reinsert_at) {
		reinsert_at = -1;
		token_remove();
		present = 1;
		if (reinsert_new)
			slot_id++;
		return CKR_SESSION_HANDLE_INVALID;
	}
	CK_RV rv = fail_rv[f];
	if (rv && fail_left[f] > 0 && --fail_left[f] == 0)
		fail_rv[f] = 0;
	return rv;
}
#define FAULT(n) do { CK_RV f_ = enter(F_##n); if (f_) return f_; } while (0)

/* A session call: the module stuck, or a session from before a removal. */
#define EPOCH(e) ((e) & ((CK_ULONG)-1 >> 20))   /* what fits above a handle's 20 bits */
#define SESSION(h) do { if (stuck) return CKR_GENERAL_ERROR; \
	if ((h) >> 20 != EPOCH(sess_epoch)) return CKR_SESSION_HANDLE_INVALID; } while (0)

static void reuse_handles(void);

EXPORT int nullp11_ctl(const char *cmd);
EXPORT int nullp11_ctl(const char *cmd)
{
	if (strncmp(cmd, "fail", 4) == 0)
		parse_fail(cmd[4] == ' ' ? cmd + 5 : NULL);
	else if (strcmp(cmd, "remove") == 0)
		token_remove();
	else if (strcmp(cmd, "insert") == 0)
		present = 1;
	else if (strcmp(cmd, "insert-new-slot") == 0)
		present = 1, slot_id++;
	else if (strncmp(cmd, "reinsert-at ", 12) == 0)
		reinsert_at = fn_index(cmd + 12, strlen(cmd + 12)), reinsert_new = 0;
	else if (strncmp(cmd, "reinsert-new-at ", 16) == 0)
		reinsert_at = fn_index(cmd + 16, strlen(cmd + 16)), reinsert_new = 1;
	else if (strcmp(cmd, "stuck") == 0)
		stuck = 1;
	else if (strcmp(cmd, "sticky-sign") == 0)
		sticky_sign = 1;
	else if (strcmp(cmd, "store-gone") == 0)
		store_gone = 1;
	else if (strcmp(cmd, "store-back") == 0)
		store_gone = 0;
	else if (strcmp(cmd, "reuse-handles") == 0)
		reuse_handles();
	else
		return -1;
	return 0;
}

EXPORT unsigned long nullp11_calls(const char *fn);
EXPORT unsigned long nullp11_calls(const char *fn)
{
	int i = fn_index(fn, strlen(fn));
	return i >= 0 ? __atomic_load_n(&calls[i], __ATOMIC_RELAXED) : 0;
}

/* ---- objects ---- */

struct obj {
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE type;
	CK_BYTE id[64];
	CK_ULONG id_len;
};
static struct obj objs[7];
static struct obj objs_init[7] = {      /* index = handle; 0 is CK_INVALID_HANDLE */
	{ 0, 0, { 0 }, 0 },
	{ CKO_PUBLIC_KEY, CKK_RSA, { 0x11 }, 1 }, { CKO_PRIVATE_KEY, CKK_RSA, { 0x11 }, 1 },
	{ CKO_PUBLIC_KEY, CKK_EC, { 0x22 }, 1 }, { CKO_PRIVATE_KEY, CKK_EC, { 0x22 }, 1 },
	{ CKO_PUBLIC_KEY, CKK_EC_EDWARDS, { 0x33 }, 1 },
	{ CKO_PRIVATE_KEY, CKK_EC_EDWARDS, { 0x33 }, 1 },
};
static struct obj objs_init[7];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_SESSION_HANDLE next_session = 1;
static __thread CK_OBJECT_HANDLE found[7];
static __thread CK_ULONG nfound, found_pos;
static __thread CK_OBJECT_HANDLE sign_key;
static __thread int sign_active;

static void reuse_handles(void)
{
	pthread_mutex_lock(&lock);
	objs[1].id[0] = objs[2].id[0] = 0x44;
	pthread_mutex_unlock(&lock);
}

static CK_BYTE modulus[256];
static const CK_BYTE exponent[] = { 1, 0, 1 };
static const CK_BYTE p256_oid[] = { 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07 };
static const CK_BYTE ed25519_oid[] = { 0x06, 0x03, 0x2B, 0x65, 0x70 };
/* The P-256 base point G, in its OCTET STRING: a valid public key. */
static const CK_BYTE p256_point[] = { 0x04, 0x41, 0x04,
	0x6B, 0x17, 0xD1, 0xF2, 0xE1, 0x2C, 0x42, 0x47, 0xF8, 0xBC, 0xE6, 0xE5, 0x63, 0xA4, 0x40, 0xF2,
	0x77, 0x03, 0x7D, 0x81, 0x2D, 0xEB, 0x33, 0xA0, 0xF4, 0xA1, 0x39, 0x45, 0xD8, 0x98, 0xC2, 0x96,
	0x4F, 0xE3, 0x42, 0xE2, 0xFE, 0x1A, 0x7F, 0x9B, 0x8E, 0xE7, 0xEB, 0x4A, 0x7C, 0x0F, 0x9E, 0x16,
	0x2B, 0xCE, 0x33, 0x57, 0x6B, 0x31, 0x5E, 0xCE, 0xCB, 0xB6, 0x40, 0x68, 0x37, 0xBF, 0x51, 0xF5 };
static CK_BYTE ed25519_point[34] = { 0x04, 0x20, 0x58 };

static CK_RV Initialize(CK_VOID_PTR a)
{
	(void)a;
	FAULT(Initialize);
	stuck = 0;
	logged_in = 0;
	sess_epoch++;
	return CKR_OK;
}

static CK_RV Finalize(CK_VOID_PTR a)
{
	(void)a;
	FAULT(Finalize);
	logged_in = 0;
	sess_epoch++;
	return CKR_OK;
}

static void pad(CK_UTF8CHAR *dst, size_t n, const char *s)
{
	memset(dst, ' ', n);
	memcpy(dst, s, strlen(s));
}

static CK_RV GetInfo(CK_INFO_PTR i)
{
	memset(i, 0, sizeof *i);
	i->cryptokiVersion.major = 2;
	i->cryptokiVersion.minor = 40;
	pad(i->manufacturerID, 32, "kmip2pkcs11 tests");
	pad(i->libraryDescription, 32, "nullp11");
	i->libraryVersion.major = 1;
	return CKR_OK;
}

static CK_RV GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR list, CK_ULONG_PTR n)
{
	FAULT(GetSlotList);
	if (stuck)
		return CKR_GENERAL_ERROR;
	CK_ULONG want = present || !tokenPresent ? 1 : 0;
	if (list && *n < want) { *n = want; return CKR_BUFFER_TOO_SMALL; }
	if (list && want)
		list[0] = slot_id;
	*n = want;
	return CKR_OK;
}

static CK_RV GetTokenInfo(CK_SLOT_ID id, CK_TOKEN_INFO_PTR t)
{
	FAULT(GetTokenInfo);
	if (stuck || store_gone)
		return CKR_GENERAL_ERROR;
	if (id != slot_id)
		return CKR_SLOT_ID_INVALID;
	if (!present)
		return CKR_TOKEN_NOT_PRESENT;
	memset(t, 0, sizeof *t);
	pad(t->label, 32, "null");
	pad(t->manufacturerID, 32, "kmip2pkcs11 tests");
	pad(t->model, 16, "null");
	pad(t->serialNumber, 16, "1");
	t->flags = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
	return CKR_OK;
}

static const CK_MECHANISM_TYPE mechs[] = { CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS,
	CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS, CKM_EC_KEY_PAIR_GEN,
	CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA };

/* NULLP11_MECHS="0x1,0x1041": the token lists these mechanisms instead (read at load). */
static CK_MECHANISM_TYPE mech_list[32];
static CK_ULONG mech_count;

static void parse_mechs(void)
{
	const char *e = getenv("NULLP11_MECHS");
	mech_count = 0;
	if (!e) {
		memcpy(mech_list, mechs, sizeof mechs);
		mech_count = sizeof mechs / sizeof mechs[0];
		return;
	}
	while (*e && mech_count < 32) {
		char *end;
		mech_list[mech_count++] = strtoul(e, &end, 0);
		e = *end == ',' ? end + 1 : end;
		if (end == e && *e)
			break;
	}
}

static CK_RV GetMechanismList(CK_SLOT_ID id, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR n)
{
	(void)id;
	FAULT(GetMechanismList);
	if (list && *n < mech_count) { *n = mech_count; return CKR_BUFFER_TOO_SMALL; }
	if (list)
		memcpy(list, mech_list, mech_count * sizeof *mech_list);
	*n = mech_count;
	return CKR_OK;
}

/* Key sizes as a TPM 2.0 gives them: RSA 1024..4096, EC 256..384 bits (no P-521). */
static CK_RV GetMechanismInfo(CK_SLOT_ID id, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	if (id != SLOT)
		return CKR_SLOT_ID_INVALID;
	memset(info, 0, sizeof *info);
	if (type == CKM_RSA_PKCS_KEY_PAIR_GEN || type == CKM_RSA_PKCS) {
		info->ulMinKeySize = 1024;
		info->ulMaxKeySize = 4096;
	} else if (type == CKM_EC_KEY_PAIR_GEN || type == CKM_ECDSA) {
		info->ulMinKeySize = 256;
		info->ulMaxKeySize = 384;
	}
	return CKR_OK;
}

static CK_RV OpenSession(CK_SLOT_ID id, CK_FLAGS f, CK_VOID_PTR app, CK_NOTIFY cb,
                         CK_SESSION_HANDLE_PTR h)
{
	(void)f; (void)app; (void)cb;
	FAULT(OpenSession);
	if (stuck)
		return CKR_GENERAL_ERROR;
	if (id != slot_id)
		return CKR_SLOT_ID_INVALID;
	if (!present)
		return CKR_TOKEN_NOT_PRESENT;
	pthread_mutex_lock(&lock);
	*h = EPOCH(sess_epoch) << 20 | (next_session++ & 0xFFFFF);
	pthread_mutex_unlock(&lock);
	sign_active = 0;
	return CKR_OK;
}

static CK_RV CloseSession(CK_SESSION_HANDLE h)
{
	FAULT(CloseSession);
	SESSION(h);
	sign_active = 0;
	return CKR_OK;
}

static CK_RV GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR i)
{
	FAULT(GetSessionInfo);
	SESSION(h);
	memset(i, 0, sizeof *i);
	i->slotID = slot_id;
	i->flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
	i->state = logged_in ? CKS_RW_USER_FUNCTIONS : CKS_RW_PUBLIC_SESSION;
	return CKR_OK;
}

static CK_RV Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, CK_ULONG n)
{
	(void)u;
	FAULT(Login);
	SESSION(h);
	if (logged_in)
		return CKR_USER_ALREADY_LOGGED_IN;
	if (n != 4 || memcmp(pin, "1234", 4) != 0)
		return CKR_PIN_INCORRECT;
	logged_in = 1;
	return CKR_OK;
}

static CK_RV Logout(CK_SESSION_HANDLE h)
{
	SESSION(h);
	if (!logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	logged_in = 0;
	return CKR_OK;
}

static CK_RV DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
	FAULT(DestroyObject);
	SESSION(h);
	return o >= 1 && o <= 6 ? CKR_OK : CKR_OBJECT_HANDLE_INVALID;
}

/* Copy one attribute value by the rules of C_GetAttributeValue. */
static CK_RV put(CK_ATTRIBUTE_PTR a, const void *v, CK_ULONG n)
{
	if (!a->pValue) { a->ulValueLen = n; return CKR_OK; }
	if (a->ulValueLen < n) { a->ulValueLen = CK_UNAVAILABLE_INFORMATION; return CKR_BUFFER_TOO_SMALL; }
	memcpy(a->pValue, v, n);
	a->ulValueLen = n;
	return CKR_OK;
}

static CK_RV GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                               CK_ULONG n)
{
	FAULT(GetAttributeValue);
	SESSION(h);
	if (o < 1 || o > 6 || store_gone)
		return CKR_OBJECT_HANDLE_INVALID;
	const struct obj *ob = &objs[o];
	int pub = ob->cls == CKO_PUBLIC_KEY;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = 2048;
	CK_MECHANISM_TYPE gen = ob->type == CKK_RSA ? CKM_RSA_PKCS_KEY_PAIR_GEN :
	                        ob->type == CKK_EC ? CKM_EC_KEY_PAIR_GEN : CKM_EC_EDWARDS_KEY_PAIR_GEN;
	CK_RV rv = CKR_OK, r;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_ATTRIBUTE_PTR a = &t[i];
		switch (a->type) {
		case CKA_CLASS: r = put(a, &ob->cls, sizeof ob->cls); break;
		case CKA_KEY_TYPE: r = put(a, &ob->type, sizeof ob->type); break;
		case CKA_ID: r = put(a, ob->id, ob->id_len); break;
		case CKA_LABEL: r = put(a, "null", 4); break;
		case CKA_SIGN: r = put(a, pub ? &no : &yes, 1); break;
		case CKA_VERIFY: r = put(a, pub ? &yes : &no, 1); break;
		case CKA_KEY_GEN_MECHANISM: r = put(a, &gen, sizeof gen); break;
		case CKA_MODULUS_BITS: r = ob->type == CKK_RSA ? put(a, &bits, sizeof bits) : CKR_ATTRIBUTE_TYPE_INVALID; break;
		case CKA_MODULUS: r = ob->type == CKK_RSA ? put(a, modulus, sizeof modulus) : CKR_ATTRIBUTE_TYPE_INVALID; break;
		case CKA_PUBLIC_EXPONENT: r = ob->type == CKK_RSA ? put(a, exponent, sizeof exponent) : CKR_ATTRIBUTE_TYPE_INVALID; break;
		case CKA_EC_PARAMS:
			r = ob->type == CKK_EC ? put(a, p256_oid, sizeof p256_oid) :
			    ob->type == CKK_EC_EDWARDS ? put(a, ed25519_oid, sizeof ed25519_oid) :
			    CKR_ATTRIBUTE_TYPE_INVALID;
			break;
		case CKA_EC_POINT:
			r = !pub ? CKR_ATTRIBUTE_TYPE_INVALID :
			    ob->type == CKK_EC ? put(a, p256_point, sizeof p256_point) :
			    ob->type == CKK_EC_EDWARDS ? put(a, ed25519_point, sizeof ed25519_point) :
			    CKR_ATTRIBUTE_TYPE_INVALID;
			break;
		default: r = CKR_ATTRIBUTE_TYPE_INVALID; break;
		}
		if (r == CKR_ATTRIBUTE_TYPE_INVALID)
			a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		if (r != CKR_OK)
			rv = r;
	}
	return rv;
}

static CK_RV SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                               CK_ULONG n)
{
	(void)t; (void)n;
	FAULT(SetAttributeValue);
	SESSION(h);
	return o >= 1 && o <= 6 ? CKR_OK : CKR_OBJECT_HANDLE_INVALID;
}

static CK_RV FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	FAULT(FindObjectsInit);
	SESSION(h);
	nfound = found_pos = 0;
	pthread_mutex_lock(&lock);
	for (CK_OBJECT_HANDLE o = 1; o <= 6 && !store_gone; o++) {
		int ok = 1;
		for (CK_ULONG i = 0; i < n && ok; i++) {
			if (t[i].type == CKA_ID)
				ok = t[i].ulValueLen == objs[o].id_len &&
				     !memcmp(t[i].pValue, objs[o].id, objs[o].id_len);
			else if (t[i].type == CKA_CLASS)
				ok = *(CK_OBJECT_CLASS *)t[i].pValue == objs[o].cls;
		}
		if (ok)
			found[nfound++] = o;
	}
	pthread_mutex_unlock(&lock);
	return CKR_OK;
}

static CK_RV FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
                         CK_ULONG_PTR n)
{
	FAULT(FindObjects);
	SESSION(h);
	*n = 0;
	while (found_pos < nfound && *n < max)
		out[(*n)++] = found[found_pos++];
	return CKR_OK;
}

static CK_RV FindObjectsFinal(CK_SESSION_HANDLE h) { (void)h; return CKR_OK; }

static CK_RV SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
	FAULT(SignInit);
	SESSION(h);
	if (!m) {               /* Cryptoki 3.0: end the active operation */
		if (!sign_active)
			return CKR_OPERATION_NOT_INITIALIZED;
		sign_active = 0;
		return CKR_OK;
	}
	if (sign_active)
		return CKR_OPERATION_ACTIVE;
	if (k < 1 || k > 6 || objs[k].cls != CKO_PRIVATE_KEY || store_gone)
		return CKR_KEY_HANDLE_INVALID;
	if (!logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	sign_key = k;
	sign_active = 1;
	return CKR_OK;
}

/* r = 00 00 81 .. and s = 7F ..: the DER encoder must strip zeros and pad the high bit. */
static CK_RV Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dn, CK_BYTE_PTR sig,
                  CK_ULONG_PTR n)
{
	(void)d; (void)dn;
	CK_RV f = enter(F_Sign);
	if (f) {
		if (!sticky_sign)
			sign_active = 0;
		return f;
	}
	SESSION(h);
	if (!sign_active)
		return CKR_OPERATION_NOT_INITIALIZED;
	CK_ULONG want = objs[sign_key].type == CKK_RSA ? 256 : 64;
	if (!sig) { *n = want; return CKR_OK; }
	if (*n < want) { *n = want; return CKR_BUFFER_TOO_SMALL; }
	sign_active = 0;
	memset(sig, 0x5A, want);
	if (objs[sign_key].type == CKK_EC) {
		sig[0] = sig[1] = 0;
		sig[2] = 0x81;
		sig[32] = 0x7F;
	}
	*n = want;
	return CKR_OK;
}

static CK_RV GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt,
                             CK_ULONG pn, CK_ATTRIBUTE_PTR kt, CK_ULONG kn,
                             CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
	(void)kt; (void)kn;
	FAULT(GenerateKeyPair);
	SESSION(h);
	if (!logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	CK_OBJECT_HANDLE base = m->mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN ? 1 :
	                        m->mechanism == CKM_EC_KEY_PAIR_GEN ? 3 :
	                        m->mechanism == CKM_EC_EDWARDS_KEY_PAIR_GEN ? 5 : 0;
	if (!base)
		return CKR_MECHANISM_INVALID;
	pthread_mutex_lock(&lock);
	for (CK_ULONG i = 0; i < pn; i++) {
		if (pt[i].type == CKA_ID && pt[i].ulValueLen <= sizeof objs[0].id) {
			for (int k = 0; k < 2; k++) {
				memcpy(objs[base + k].id, pt[i].pValue, pt[i].ulValueLen);
				objs[base + k].id_len = pt[i].ulValueLen;
			}
		}
	}
	pthread_mutex_unlock(&lock);
	*pub = base;
	*priv = base + 1;
	return CKR_OK;
}

static CK_RV GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n)
{
	static uint64_t x = 88172645463325252ULL;   /* xorshift64: 64 bits on every target */
	FAULT(GenerateRandom);
	SESSION(h);
	pthread_mutex_lock(&lock);
	for (CK_ULONG i = 0; i < n; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		p[i] = (CK_BYTE)x;
	}
	pthread_mutex_unlock(&lock);
	return CKR_OK;
}

static CK_FUNCTION_LIST list;

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp)
{
	const char *nul = getenv("NULLP11_NULL");

	memset(modulus, 0x6B, sizeof modulus);
	modulus[0] = 0xC5;
	modulus[sizeof modulus - 1] = 0x01;
	memset(ed25519_point + 3, 0x66, 31);
	parse_fail(getenv("NULLP11_FAIL"));
	parse_delay(getenv("NULLP11_DELAY"));
	parse_mechs();
	/* A module loaded again starts afresh, even if it stayed mapped. */
	memset(calls, 0, sizeof calls);
	slot_id = SLOT;
	present = 1;
	stuck = sticky_sign = store_gone = 0;
	reinsert_at = -1;
	memcpy(objs, objs_init, sizeof objs);
	memset(&list, 0, sizeof list);
	list.version.major = 2;
	list.version.minor = 40;
#define SET(n) list.C_##n = n;
	SET(Initialize) SET(Finalize) SET(GetInfo) SET(GetSlotList) SET(GetTokenInfo)
	SET(GetMechanismList) SET(GetMechanismInfo) SET(OpenSession) SET(CloseSession) SET(GetSessionInfo) SET(Login)
	SET(Logout) SET(DestroyObject) SET(GetAttributeValue) SET(SetAttributeValue)
	SET(FindObjectsInit) SET(FindObjects) SET(FindObjectsFinal) SET(SignInit) SET(Sign)
	SET(GenerateKeyPair) SET(GenerateRandom)
#undef SET
	list.C_GetFunctionList = C_GetFunctionList;
	if (nul && strcmp(nul, "C_Sign") == 0)
		list.C_Sign = NULL;
	else if (nul && strcmp(nul, "C_Login") == 0)
		list.C_Login = NULL;
	*pp = &list;
	return CKR_OK;
}

static CK_FUNCTION_LIST_3_0 list3;
static CK_INTERFACE iface;

EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
                            CK_INTERFACE_PTR_PTR pp, CK_FLAGS flags)
{
	CK_FUNCTION_LIST_PTR l;
	(void)flags;
	if (!pp)
		return CKR_ARGUMENTS_BAD;
	if (getenv("NULLP11_NO_V3"))
		return CKR_FUNCTION_NOT_SUPPORTED;
	if ((name && strcmp((const char *)name, "PKCS 11") != 0) ||
	    (version && version->major != 3))
		return CKR_ARGUMENTS_BAD;       /* no other interface here */
	C_GetFunctionList(&l);
	/* A 3.0 list starts with the 2.40 members in the same order; the added ones stay NULL. */
	memset(&list3, 0, sizeof list3);
	memcpy(&list3, l, sizeof *l);
	list3.version.major = 3;
	list3.version.minor = 0;
	iface.pInterfaceName = (CK_CHAR *)"PKCS 11";
	iface.pFunctionList = &list3;
	*pp = &iface;
	return CKR_OK;
}
