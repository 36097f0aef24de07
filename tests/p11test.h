/*
 * What tests/test_p11.c and tests/test_op.c share: the modules they load, a function list
 * that counts C_Login and C_OpenSession in front of the module's, a SoftHSM2 token made by
 * dist/softhsm-token.sh, and the checks of a signature that do not use our own code.
 *
 * The including file includes ../kmip2pkcs11.c first and defines `static char tmpdir[]`
 * (a mkdtemp template), in which files are written and the token is made.  Run from the
 * repository root: the paths below are relative to it.
 */
#ifndef K2P_P11TEST_H
#define K2P_P11TEST_H

#include <sys/wait.h>

#define SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"
#ifndef NULLP11
#define NULLP11 "build/nullp11.so"   /* a cross build names build/<triplet>/nullp11.so */
#endif

/* Under qemu-user (make cross-check), SOFTHSM is the target's SoftHSM2 from the sysroot
 * that qemu -L maps it to.  Debian has none for some targets (mips): tests/cross.sh then
 * sets K2P_NO_SOFTHSM to the reason, and the SoftHSM2 checks are left out, said in a
 * NOTE and counted neither as passed nor as failed. */
static int softhsm_wanted(void)
{
	const char *why = getenv("K2P_NO_SOFTHSM");
	if (why && *why) {
		printf("NOTE: SoftHSM2 checks not run: %s\n", why);
		return 0;
	}
	return 1;
}

/* ---- C_Login and C_OpenSession counting: our function list in front of the module's ---- */

static CK_FUNCTION_LIST wrap;
static CK_C_Login real_login;
static CK_C_OpenSession real_open;
static int login_calls, open_calls;

static CK_RV counting_login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG n)
{
	login_calls++;
	return real_login(h, u, p, n);
}

static CK_RV counting_open(CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY cb,
                           CK_SESSION_HANDLE_PTR h)
{
	open_calls++;
	return real_open(s, f, a, cb, h);
}

static void wrap_module(void)
{
	wrap = *p11.fl;
	real_login = wrap.C_Login;
	real_open = wrap.C_OpenSession;
	wrap.C_Login = counting_login;
	wrap.C_OpenSession = counting_open;
	p11.fl = &wrap;
}

/* ---- files and commands ---- */

static int run(const char *cmd)
{
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *name, const void *p, size_t n)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	if (f) {
		fwrite(p, 1, n, f);
		fclose(f);
	}
}

/* The SoftHSM2 token LABEL (user PIN pin, SO PIN 5678) in tmpdir, SOFTHSM2_CONF set. */
static int make_token(const char *label, const char *pin)
{
	char conf[512], cmd[1024];
	snprintf(cmd, sizeof cmd, "sh dist/softhsm-token.sh %s %s %s 5678 >/dev/null",
	         tmpdir, label, pin);
	if (run(cmd) != 0)
		return -1;
	snprintf(conf, sizeof conf, "%s/softhsm2.conf", tmpdir);
	setenv("SOFTHSM2_CONF", conf, 1);
	return 0;
}

/* ---- signatures, checked without our code ---- */

/* DER ECDSA-Sig-Value with minimal, positive INTEGERs and nothing else. */
static int der_minimal(const uint8_t *p, size_t n)
{
	size_t o = 0, body;
	if (n < 8 || p[o++] != 0x30)
		return 0;
	if (p[o] == 0x81) {
		if (p[o + 1] < 0x80)
			return 0;
		body = p[o + 1];
		o += 2;
	} else if (p[o] < 0x80) {
		body = p[o++];
	} else {
		return 0;
	}
	if (o + body != n)
		return 0;
	for (int k = 0; k < 2; k++) {
		if (o + 2 > n || p[o] != 0x02)
			return 0;
		size_t l = p[o + 1];
		o += 2;
		if (l == 0 || o + l > n)
			return 0;
		if (p[o] & 0x80)
			return 0;                         /* negative */
		if (l > 1 && p[o] == 0 && !(p[o + 1] & 0x80))
			return 0;                         /* a needless leading zero */
		o += l;
	}
	return o == n;
}

/* Mbed TLS 3.6 has no Ed25519: the openssl CLI verifies against a SubjectPublicKeyInfo. */
static int verify_ed25519_spki(const uint8_t *spki, size_t spkilen, const uint8_t *data,
                               size_t n, const uint8_t *sig, size_t siglen)
{
	char cmd[512];
	write_file("ed.der", spki, spkilen);
	write_file("ed.dat", data, n);
	write_file("ed.sig", sig, siglen);
	snprintf(cmd, sizeof cmd, "openssl pkeyutl -verify -pubin -keyform DER -inkey %s/ed.der "
	         "-rawin -in %s/ed.dat -sigfile %s/ed.sig >/dev/null 2>&1", tmpdir, tmpdir, tmpdir);
	return run(cmd) == 0;
}
#endif
