/*
 * vendorp11 - a PKCS#11 module that wraps SoftHSM2 and behaves as another vendor's module
 * does, so that the daemon meets those behaviours in `make check` without the hardware.
 *
 * It loads the wrapped module (dlopen), copies its function list and replaces the entries
 * that the chosen behaviour changes; everything else is SoftHSM2's own.  Each behaviour is
 * described beside its code with the source it was checked against.
 *
 * Environment (read by C_GetFunctionList):
 *   VENDORP11            yubihsm | yubihsm-old | nethsm | luna | sc-hsm | nohash | pinpad |
 *                        initargs (empty: SoftHSM2 as it is)
 *   VENDORP11_LIB        the module wrapped (default: Debian's libsofthsm2.so)
 *   VENDORP11_PIN        nethsm, pinpad: the PIN the module itself logs in with (its own
 *                        configuration file, or the PIN pad)
 *   VENDORP11_INIT_ARGS  initargs: the string C_Initialize must find in pReserved
 *   VENDORP11_KEYGEN_MS  yubihsm: milliseconds a key generation takes (default 1500)
 *   VENDORP11_UNKNOWN_ATTR  yubihsm: an attribute type (e.g. 0x162, CKA_EXTRACTABLE) taken
 *                        out of the accepted lists, as a module that does not know it
 *
 * Build: cc -shared -fPIC -I. tests/vendorp11.c -o build/vendorp11.so -ldl -lpthread
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pkcs11/pkcs11.h"

#define EXPORT __attribute__((visibility("default")))

enum mode { M_PLAIN, M_YUBIHSM, M_YUBIHSM_OLD, M_NETHSM, M_LUNA, M_SCHSM, M_NOHASH, M_PINPAD,
	    M_INITARGS };
static const char *const mode_name[] = { "", "yubihsm", "yubihsm-old", "nethsm", "luna",
	"sc-hsm", "nohash", "pinpad", "initargs" };

static enum mode mode;
static void *dl;
static CK_FUNCTION_LIST *under;          /* SoftHSM2's list */
static CK_FUNCTION_LIST list;            /* ours: a copy with some entries replaced */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define U (under)

static const char *env(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return v && *v ? v : dflt;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static void pad(CK_UTF8CHAR *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);
	memset(dst, ' ', cap);
	memcpy(dst, s, n < cap ? n : cap);
}

/* ---- per-session state ------------------------------------------------------------------ */

#define MAX_SESS 256
static struct { CK_SESSION_HANDLE h; int bad_login; } sess[MAX_SESS];
static int nsess;

static int sess_find(CK_SESSION_HANDLE h)
{
	for (int i = 0; i < nsess; i++)
		if (sess[i].h == h)
			return i;
	return -1;
}

static int sess_bad(CK_SESSION_HANDLE h)
{
	pthread_mutex_lock(&lock);
	int i = sess_find(h), bad = i >= 0 && sess[i].bad_login;
	pthread_mutex_unlock(&lock);
	return bad;
}

/* ---- C_Initialize, C_GetInfo ------------------------------------------------------------- */

/*
 * initargs: modules that read their configuration from CK_C_INITIALIZE_ARGS.pReserved (NSS's
 * softoken: "configdir='...' certPrefix='' ..."; the YubiHSM 2 module: "connector=http://..."
 * in yubihsm_pkcs11.c C_Initialize) fail without it.  Here: the string must equal
 * VENDORP11_INIT_ARGS, else CKR_ARGUMENTS_BAD.  SoftHSM2 itself refuses a non-NULL pReserved,
 * so it gets the arguments without it.
 */
static CK_RV v_Initialize(CK_VOID_PTR p)
{
	CK_C_INITIALIZE_ARGS a, *in = p;
	if (mode == M_INITARGS) {
		const char *want = env("VENDORP11_INIT_ARGS", "");
		if (!in || !in->pReserved || strcmp((const char *)in->pReserved, want) != 0) {
			fprintf(stderr, "vendorp11: C_Initialize: pReserved is not \"%s\"\n", want);
			return CKR_ARGUMENTS_BAD;
		}
	}
	if (!in)
		return U->C_Initialize(NULL);
	a = *in;
	a.pReserved = NULL;
	return U->C_Initialize(&a);
}

/* luna: a Cryptoki 2.20 library (Thales Luna / DPoD client: cryptoki.h of 2.20, no
 * C_GetInterface, which this module never exports). */
static CK_RV v_GetInfo(CK_INFO_PTR info)
{
	CK_RV rv = U->C_GetInfo(info);
	if (rv != CKR_OK)
		return rv;
	char d[40];
	snprintf(d, sizeof d, "vendorp11 %s", mode_name[mode]);
	pad(info->libraryDescription, sizeof info->libraryDescription, d);
	if (mode == M_LUNA) {
		info->cryptokiVersion.major = 2;
		info->cryptokiVersion.minor = 20;
	}
	return CKR_OK;
}

/* ---- tokens ------------------------------------------------------------------------------ */

#define LUNA_MAX_SESSIONS 3
static int luna_open;

static CK_RV v_GetTokenInfo(CK_SLOT_ID id, CK_TOKEN_INFO_PTR ti)
{
	CK_RV rv = U->C_GetTokenInfo(id, ti);
	if (rv != CKR_OK)
		return rv;
	switch (mode) {
	case M_NETHSM:
		/* nethsm-pkcs11 src/api/token.rs: CKF_LOGIN_REQUIRED only when the slot has no
		 * operator password in the module's configuration. */
		ti->flags &= ~(CK_FLAGS)CKF_LOGIN_REQUIRED;
		break;
	case M_LUNA:
		ti->ulMaxSessionCount = LUNA_MAX_SESSIONS;
		ti->ulSessionCount = (CK_ULONG)luna_open;
		break;
	case M_SCHSM: {
		/* OpenSC names the token after the card's label followed by the PIN's label in
		 * parentheses (src/pkcs11/framework-pkcs15.c); the SmartCard-HSM's PIN is
		 * "UserPIN", 6 to 15 characters (src/libopensc/pkcs15-sc-hsm.c: min_length 6,
		 * max_length 15). */
		char l[33];
		size_t n = sizeof ti->label;
		while (n > 0 && ti->label[n - 1] == ' ')
			n--;
		snprintf(l, sizeof l, "%.*s (UserPIN)", (int)(n > 22 ? 22 : n), (const char *)ti->label);
		pad(ti->label, sizeof ti->label, l);
		ti->ulMinPinLen = 6;
		ti->ulMaxPinLen = 15;
		break;
	}
	case M_PINPAD:
		ti->flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
		break;
	default:
		break;
	}
	return CKR_OK;
}

/* ---- sessions ---------------------------------------------------------------------------- */

static CK_RV v_OpenSession(CK_SLOT_ID id, CK_FLAGS f, CK_VOID_PTR app, CK_NOTIFY n,
                           CK_SESSION_HANDLE_PTR h)
{
	pthread_mutex_lock(&lock);
	if (mode == M_LUNA && luna_open >= LUNA_MAX_SESSIONS) {
		pthread_mutex_unlock(&lock);
		return CKR_SESSION_COUNT;
	}
	CK_RV rv = U->C_OpenSession(id, f, app, n, h);
	if (rv == CKR_OK) {
		luna_open++;
		if (nsess < MAX_SESS) {
			sess[nsess].h = *h;
			sess[nsess].bad_login = 0;
			nsess++;
		}
	}
	pthread_mutex_unlock(&lock);
	/* nethsm: every session opens logged in as the operator of the module's configuration
	 * (nethsm-pkcs11 src/backend/login.rs LoginCtx::new: CKS_RW_USER_FUNCTIONS when an
	 * operator is configured).  SoftHSM2's login is per token, so one C_Login does it. */
	if (rv == CKR_OK && mode == M_NETHSM) {
		const char *pin = env("VENDORP11_PIN", "");
		CK_RV lr = U->C_Login(*h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
		if (lr != CKR_OK && lr != CKR_USER_ALREADY_LOGGED_IN)
			fprintf(stderr, "vendorp11: nethsm: the configured operator PIN does not log in\n");
	}
	return rv;
}

static CK_RV v_CloseSession(CK_SESSION_HANDLE h)
{
	CK_RV rv = U->C_CloseSession(h);
	pthread_mutex_lock(&lock);
	int i = sess_find(h);
	if (rv == CKR_OK && i >= 0) {
		sess[i] = sess[--nsess];
		luna_open--;
	}
	pthread_mutex_unlock(&lock);
	return rv;
}

static CK_RV v_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR si)
{
	return U->C_GetSessionInfo(h, si);
}

/*
 * C_Login, per behaviour:
 *   yubihsm: the PIN is 4 hex digits of the authentication key's ID, then its password
 *     (yubihsm_pkcs11.c C_Login: an optional '@' or '#label#', then 4 characters of key ID,
 *     the rest is the password).  Here key 0001 only; SoftHSM2 gets the password.
 *   nethsm: C_Login replaces the configured operator password for this session
 *     (login.rs LoginCtx::login: operator_login_override = the PIN, then a user-status
 *     request with it); a wrong one fails as LoginError::UserNotPresent, which is
 *     CKR_USER_TYPE_INVALID, and the session keeps the wrong password: what it does next
 *     is refused (here CKR_USER_NOT_LOGGED_IN).  The right one: CKR_OK.  A second login
 *     is no error there.
 *   luna: a second login is CKR_USER_ALREADY_LOGGED_IN, as the base specification says.
 *   sc-hsm: a PIN outside 6..15 characters is CKR_PIN_LEN_RANGE.
 *   pinpad: no PIN (NULL): the PIN pad gives VENDORP11_PIN; a PIN given is used as it is
 *     (OpenSC uses the pad only when the application passes no PIN).
 */
static CK_RV v_Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
	const char *p = (const char *)pin;
	switch (mode) {
	case M_YUBIHSM:
	case M_YUBIHSM_OLD:
		if (!pin)
			return CKR_ARGUMENTS_BAD;
		if (len < 4 || memcmp(p, "0001", 4) != 0)
			return CKR_PIN_INCORRECT;
		return U->C_Login(h, u, pin + 4, len - 4);
	case M_NETHSM: {
		const char *want = env("VENDORP11_PIN", "");
		int right = pin && len == strlen(want) && memcmp(p, want, len) == 0;
		pthread_mutex_lock(&lock);
		int i = sess_find(h);
		if (i >= 0)
			sess[i].bad_login = !right;
		pthread_mutex_unlock(&lock);
		return right ? CKR_OK : CKR_USER_TYPE_INVALID;
	}
	case M_LUNA: {
		CK_SESSION_INFO si;
		if (U->C_GetSessionInfo(h, &si) == CKR_OK &&
		    (si.state == CKS_RW_USER_FUNCTIONS || si.state == CKS_RO_USER_FUNCTIONS))
			return CKR_USER_ALREADY_LOGGED_IN;
		return U->C_Login(h, u, pin, len);
	}
	case M_SCHSM:
		if (pin && (len < 6 || len > 15))
			return CKR_PIN_LEN_RANGE;
		return U->C_Login(h, u, pin, len);
	case M_PINPAD:
		if (!pin) {
			const char *pad_pin = env("VENDORP11_PIN", "");
			return U->C_Login(h, u, (CK_UTF8CHAR_PTR)pad_pin, strlen(pad_pin));
		}
		return U->C_Login(h, u, pin, len);
	default:
		return U->C_Login(h, u, pin, len);
	}
}

/* nethsm: C_Logout ends the operator state of the session (LoginCtx::logout); SoftHSM2's
 * would end it for every session, so it is not passed on. */
static CK_RV v_Logout(CK_SESSION_HANDLE h)
{
	if (mode == M_NETHSM) {
		pthread_mutex_lock(&lock);
		int i = sess_find(h);
		if (i >= 0)
			sess[i].bad_login = 1;
		pthread_mutex_unlock(&lock);
		return CKR_OK;
	}
	return U->C_Logout(h);
}

/* ---- key generation ---------------------------------------------------------------------- */

static int in_list(CK_ATTRIBUTE_TYPE t, const CK_ATTRIBUTE_TYPE *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (l[i] == t)
			return 1;
	return 0;
}

static const CK_ATTRIBUTE *find_attr(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
	for (CK_ULONG i = 0; i < n; i++)
		if (t[i].type == type)
			return &t[i];
	return NULL;
}

/*
 * yubihsm: the attributes util_pkcs11.c parse_rsa_generate_template / parse_ec_generate_template
 * accept (anything else: CKR_ATTRIBUTE_TYPE_INVALID), CKA_MODULUS_BITS 2048, 3072 or 4096 and
 * CKA_PUBLIC_EXPONENT 65537 (else CKR_ATTRIBUTE_VALUE_INVALID), CKA_SENSITIVE and CKA_PRIVATE
 * true on the private key (check_bool_attribute(..., true)).  The curves are not checked
 * here (the device has P-256, P-384, P-521 and more).
 */
static CK_RV yubihsm_check(CK_MECHANISM_PTR m, const CK_ATTRIBUTE *pt, CK_ULONG np,
                           const CK_ATTRIBUTE *kt, CK_ULONG nk)
{
	static const CK_ATTRIBUTE_TYPE pub_ok[] = { CKA_CLASS, CKA_KEY_TYPE, CKA_ID, CKA_LABEL,
		CKA_PUBLIC_EXPONENT, CKA_MODULUS_BITS, CKA_EC_PARAMS, CKA_EXTRACTABLE,
		CKA_DESTROYABLE, CKA_PRIVATE, CKA_SENSITIVE, CKA_MODIFIABLE, CKA_COPYABLE,
		CKA_DECRYPT, CKA_SIGN, CKA_DERIVE, CKA_SIGN_RECOVER, CKA_VERIFY_RECOVER,
		CKA_ALWAYS_AUTHENTICATE, CKA_TOKEN, CKA_WRAP, CKA_UNWRAP, CKA_VERIFY, CKA_ENCRYPT };
	static const CK_ATTRIBUTE_TYPE priv_ok[] = { CKA_CLASS, CKA_KEY_TYPE, CKA_ID, CKA_DECRYPT,
		CKA_SIGN, CKA_EXTRACTABLE, CKA_LABEL, CKA_TOKEN, CKA_SENSITIVE, CKA_PRIVATE,
		CKA_DESTROYABLE, CKA_WRAP, CKA_UNWRAP, CKA_DERIVE, CKA_ENCRYPT, CKA_SIGN_RECOVER,
		CKA_VERIFY, CKA_VERIFY_RECOVER, CKA_MODIFIABLE, CKA_COPYABLE };
	const char *u = getenv("VENDORP11_UNKNOWN_ATTR");
	CK_ATTRIBUTE_TYPE unknown = u && *u ? strtoul(u, NULL, 0) : (CK_ATTRIBUTE_TYPE)-1;
	for (CK_ULONG i = 0; i < np; i++)
		if (pt[i].type == unknown ||
		    !in_list(pt[i].type, pub_ok, sizeof pub_ok / sizeof pub_ok[0]))
			return CKR_ATTRIBUTE_TYPE_INVALID;
	for (CK_ULONG i = 0; i < nk; i++)
		if (kt[i].type == unknown ||
		    !in_list(kt[i].type, priv_ok, sizeof priv_ok / sizeof priv_ok[0]))
			return CKR_ATTRIBUTE_TYPE_INVALID;
	if (m->mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN) {
		const CK_ATTRIBUTE *b = find_attr(pt, np, CKA_MODULUS_BITS);
		const CK_ATTRIBUTE *e = find_attr(pt, np, CKA_PUBLIC_EXPONENT);
		CK_ULONG bits = b && b->ulValueLen == sizeof bits ? *(CK_ULONG *)b->pValue : 0;
		if (bits != 2048 && bits != 3072 && bits != 4096)
			return CKR_ATTRIBUTE_VALUE_INVALID;
		if (e && !(e->ulValueLen == 3 && memcmp(e->pValue, "\x01\x00\x01", 3) == 0) &&
		    !(e->ulValueLen == 4 && memcmp(e->pValue, "\x00\x01\x00\x01", 4) == 0))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	static const CK_ATTRIBUTE_TYPE must_true[] = { CKA_SENSITIVE, CKA_PRIVATE, CKA_TOKEN };
	for (size_t i = 0; i < sizeof must_true / sizeof must_true[0]; i++) {
		const CK_ATTRIBUTE *a = find_attr(kt, nk, must_true[i]);
		if (a && (a->ulValueLen != 1 || *(CK_BBOOL *)a->pValue != CK_TRUE))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	return CKR_OK;
}

#define MAX_TMPL 32

/*
 * yubihsm-old (modules before 2.4.0, as the notes have it; the current
 * parse_meta_id_template keeps a longer CKA_ID as metadata): CKA_ID became the 16-bit object
 * ID, so only its first 2 bytes were kept; and CKA_UNWRAP false was refused.  Here the
 * templates are copied with CKA_ID cut to 2 bytes, and CKA_UNWRAP false is
 * CKR_ATTRIBUTE_VALUE_INVALID.
 */
static CK_RV v_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
                               CK_ATTRIBUTE_PTR pt, CK_ULONG np, CK_ATTRIBUTE_PTR kt,
                               CK_ULONG nk, CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
	CK_ATTRIBUTE p2[MAX_TMPL], k2[MAX_TMPL];

	if (mode == M_NETHSM && sess_bad(h))
		return CKR_USER_NOT_LOGGED_IN;
	if (mode != M_YUBIHSM && mode != M_YUBIHSM_OLD)
		return U->C_GenerateKeyPair(h, m, pt, np, kt, nk, pub, priv);
	CK_RV rv = yubihsm_check(m, pt, np, kt, nk);
	if (rv != CKR_OK)
		return rv;
	/* Key generation on the device takes seconds (RSA-2048: some 5 s on a YubiHSM 2). */
	sleep_ms(atol(env("VENDORP11_KEYGEN_MS", "1500")));
	if (mode == M_YUBIHSM || np > MAX_TMPL || nk > MAX_TMPL)
		return U->C_GenerateKeyPair(h, m, pt, np, kt, nk, pub, priv);
	const CK_ATTRIBUTE *uw = find_attr(kt, nk, CKA_UNWRAP);
	if (uw && uw->ulValueLen == 1 && *(CK_BBOOL *)uw->pValue == CK_FALSE)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	memcpy(p2, pt, np * sizeof *pt);
	memcpy(k2, kt, nk * sizeof *kt);
	for (CK_ULONG i = 0; i < np; i++)
		if (p2[i].type == CKA_ID && p2[i].ulValueLen > 2)
			p2[i].ulValueLen = 2;
	for (CK_ULONG i = 0; i < nk; i++)
		if (k2[i].type == CKA_ID && k2[i].ulValueLen > 2)
			k2[i].ulValueLen = 2;
	return U->C_GenerateKeyPair(h, m, p2, np, k2, nk, pub, priv);
}

/* ---- attributes -------------------------------------------------------------------------- */

/*
 * nethsm: every key's CKA_LABEL is its NetHSM key ID (src/backend/db/object.rs: CKA_LABEL
 * and CKA_ID are both the ID's bytes); here the hex of CKA_ID, as the notes say.
 * CKA_KEY_GEN_MECHANISM reads CKR_OK with the value CK_UNAVAILABLE_INFORMATION
 * (object.rs: Attr::from_ck_mechanism_type(CK_UNAVAILABLE_INFORMATION)).
 */
static CK_RV v_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                 CK_ULONG n)
{
	if (mode != M_NETHSM)
		return U->C_GetAttributeValue(h, o, t, n);
	if (sess_bad(h))
		return CKR_USER_NOT_LOGGED_IN;
	CK_RV rv = U->C_GetAttributeValue(h, o, t, n);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE &&
	    rv != CKR_BUFFER_TOO_SMALL)
		return rv;
	for (CK_ULONG i = 0; i < n; i++) {
		if (t[i].type == CKA_KEY_GEN_MECHANISM) {
			if (t[i].pValue && t[i].ulValueLen >= sizeof(CK_MECHANISM_TYPE))
				*(CK_MECHANISM_TYPE *)t[i].pValue = CK_UNAVAILABLE_INFORMATION;
			t[i].ulValueLen = sizeof(CK_MECHANISM_TYPE);
		} else if (t[i].type == CKA_LABEL) {
			unsigned char id[128];
			CK_ATTRIBUTE a = { CKA_ID, id, sizeof id };
			if (U->C_GetAttributeValue(h, o, &a, 1) != CKR_OK)
				continue;
			CK_ULONG need = a.ulValueLen * 2;
			if (t[i].pValue && t[i].ulValueLen >= need)
				for (CK_ULONG k = 0; k < a.ulValueLen; k++)
					snprintf((char *)t[i].pValue + 2 * k, 3, "%02x", id[k]);
			else if (t[i].pValue)
				rv = CKR_BUFFER_TOO_SMALL;
			t[i].ulValueLen = need;
		}
	}
	return rv;
}

/* nethsm: C_SetAttributeValue changes CKA_ID only (src/api/object.rs set_attribute_value:
 * anything else is CKR_ATTRIBUTE_READ_ONLY). */
static CK_RV v_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                 CK_ULONG n)
{
	if (mode == M_NETHSM) {
		if (sess_bad(h))
			return CKR_USER_NOT_LOGGED_IN;
		for (CK_ULONG i = 0; i < n; i++)
			if (t[i].type != CKA_ID)
				return CKR_ATTRIBUTE_READ_ONLY;
	}
	return U->C_SetAttributeValue(h, o, t, n);
}

/* nethsm: what a session with a refused password does is refused. */
static CK_RV v_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	if (mode == M_NETHSM && sess_bad(h))
		return CKR_USER_NOT_LOGGED_IN;
	return U->C_FindObjectsInit(h, t, n);
}

static CK_RV v_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
	if (mode == M_NETHSM && sess_bad(h))
		return CKR_USER_NOT_LOGGED_IN;
	return U->C_DestroyObject(h, o);
}

/* ---- mechanisms and signing -------------------------------------------------------------- */

/* nohash: a token that signs only a hash made elsewhere: CKM_RSA_PKCS and CKM_ECDSA, none of
 * the combined hash-and-sign mechanisms (many smart cards; OpenSC's card drivers list the
 * combined ones only where the card hashes). */
static int combined(CK_MECHANISM_TYPE m)
{
	switch (m) {
	case CKM_SHA1_RSA_PKCS: case CKM_SHA224_RSA_PKCS: case CKM_SHA256_RSA_PKCS:
	case CKM_SHA384_RSA_PKCS: case CKM_SHA512_RSA_PKCS: case CKM_ECDSA_SHA1:
	case CKM_ECDSA_SHA224: case CKM_ECDSA_SHA256: case CKM_ECDSA_SHA384: case CKM_ECDSA_SHA512:
		return 1;
	}
	return 0;
}

static CK_RV v_GetMechanismList(CK_SLOT_ID id, CK_MECHANISM_TYPE_PTR l, CK_ULONG_PTR n)
{
	CK_MECHANISM_TYPE all[512];
	CK_ULONG k = 512, out = 0;
	if (mode != M_NOHASH)
		return U->C_GetMechanismList(id, l, n);
	CK_RV rv = U->C_GetMechanismList(id, all, &k);
	if (rv != CKR_OK)
		return rv;
	for (CK_ULONG i = 0; i < k; i++)
		if (!combined(all[i])) {
			if (l && out < *n)
				l[out] = all[i];
			out++;
		}
	rv = l && out > *n ? CKR_BUFFER_TOO_SMALL : CKR_OK;
	*n = out;
	return rv;
}

static CK_RV v_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
	if (mode == M_NOHASH && m && combined(m->mechanism))
		return CKR_MECHANISM_INVALID;
	if (mode == M_NETHSM && sess_bad(h))
		return CKR_USER_NOT_LOGGED_IN;
	return U->C_SignInit(h, m, k);
}

/* ---- the function list ------------------------------------------------------------------- */

static const char *softhsm_paths[] = { "/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so" };

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	if (!out)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&lock);
	if (!under) {
		const char *m = env("VENDORP11", ""), *lib = getenv("VENDORP11_LIB");
		mode = M_PLAIN;
		for (size_t i = 0; i < sizeof mode_name / sizeof mode_name[0]; i++)
			if (strcmp(m, mode_name[i]) == 0)
				mode = (enum mode)i;
		if (*m && mode == M_PLAIN) {
			fprintf(stderr, "vendorp11: unknown VENDORP11=%s\n", m);
			pthread_mutex_unlock(&lock);
			return CKR_GENERAL_ERROR;
		}
		for (size_t i = 0; !dl && i < sizeof softhsm_paths / sizeof softhsm_paths[0]; i++)
			if (!lib || !*lib)
				dl = dlopen(softhsm_paths[i], RTLD_NOW | RTLD_LOCAL);
		if (lib && *lib)
			dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
		CK_C_GetFunctionList get = NULL;
		if (dl)
			*(void **)&get = dlsym(dl, "C_GetFunctionList");
		if (!get || get(&under) != CKR_OK || !under) {
			fprintf(stderr, "vendorp11: cannot load the wrapped module\n");
			under = NULL;
			pthread_mutex_unlock(&lock);
			return CKR_GENERAL_ERROR;
		}
		list = *under;
		list.C_Initialize = v_Initialize;
		list.C_GetInfo = v_GetInfo;
		list.C_GetTokenInfo = v_GetTokenInfo;
		list.C_OpenSession = v_OpenSession;
		list.C_CloseSession = v_CloseSession;
		list.C_GetSessionInfo = v_GetSessionInfo;
		list.C_Login = v_Login;
		list.C_Logout = v_Logout;
		list.C_GenerateKeyPair = v_GenerateKeyPair;
		list.C_GetAttributeValue = v_GetAttributeValue;
		list.C_SetAttributeValue = v_SetAttributeValue;
		list.C_FindObjectsInit = v_FindObjectsInit;
		list.C_DestroyObject = v_DestroyObject;
		list.C_GetMechanismList = v_GetMechanismList;
		list.C_SignInit = v_SignInit;
		if (mode == M_LUNA) {
			list.version.major = 2;
			list.version.minor = 20;
		}
	}
	pthread_mutex_unlock(&lock);
	*out = &list;
	return CKR_OK;
}
