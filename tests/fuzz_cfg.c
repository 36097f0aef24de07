/*
 * Fuzz target for section 5: cfg_parse_text() on arbitrary bytes, then the invariants a
 * caller relies on.
 *
 *   On success: version "v1"; lib-path set; every string field NUL-terminated inside its
 *   array (and non-empty where the key is set); every integer within its row of CFG_KEYS;
 *   enumerations and booleans in range; the listen address parsed (family and length
 *   agree, and re-parsing the text gives the same sockaddr); cert-path and key-path both
 *   or neither; an identity has both names and no ':' in the group; set[] and line[]
 *   agree, and every line[] is a line of the input.
 *   On failure: "NAME:N: message" with 1 <= N <= lines of the input, or "NAME: message".
 *   Always: the result does not depend on the error buffer's size (a 1-byte, a 16-byte
 *   and a 0-byte buffer give the same answer and write nothing past their end), and a
 *   second parse gives a byte-identical struct cfg (no state kept between calls).
 *
 *   libFuzzer:  clang -g -O1 -fsanitize=fuzzer,address,undefined -DK2P_TEST -DK2P_FUZZ \
 *                     -Itests -I. tests/fuzz_cfg.c -o build/fuzz_cfg -lmbedcrypto ...
 *               build/fuzz_cfg -dict=tests/cfg.dict build/corpus-cfg tests/corpus/cfg
 *   replay:     cc ... -DK2P_TEST -DK2P_FUZZ_REPLAY tests/fuzz_cfg.c -o build/fuzz_cfg_replay
 *               build/fuzz_cfg_replay tests/corpus/cfg [more files or directories]
 *               (ends with "N passed, N failed": one per input; tests/fuzz_replay.h)
 */
#include "../kmip2pkcs11.c"

#define FZ_NAME "fuzz.toml"

static struct cfg fz_cfg, fz_cfg2;
static int fz_failed;           /* invariant violations of the current input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libFuzzer: stop at the first broken invariant.  Replay: count it and go on. */
static void fz_fail(const char *what, const char *detail)
{
	fprintf(stderr, "FAIL invariant: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
#ifndef K2P_FUZZ_REPLAY
	abort();
#endif
	fz_failed++;
}

/* A char array field: NUL inside it, no NUL-free tail. */
static int fz_cstr(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static void fz_check_ok(const struct cfg *c, int lines)
{
	if (strcmp(c->version, "v1") != 0)
		fz_fail("version is not v1", NULL);
	if (!c->set[CFG_K_VERSION] || !c->set[CFG_K_LIB_PATH])
		fz_fail("a required key is not set", NULL);
	for (int k = 0; k < CFG_NKEYS; k++) {
		const struct cfg_key *key = &cfg_keys[k];
		const char *field = (const char *)c + key->off;
		if (c->set[k] > 1)
			fz_fail("set[] is not 0 or 1", key->key);
		if (c->line[k] < 0 || c->line[k] > lines)
			fz_fail("line[] outside the input", key->key);
		if (c->line[k] > 0 && !c->set[k])
			fz_fail("line[] without set[]", key->key);
		switch (key->type) {
		case CV_INT: {
			int v;
			memcpy(&v, field, sizeof v);
			if (k == CFG_K_WORKERS && !c->set[k] && v == CFG_WORKERS_AUTO)
				break;
			if (v < key->min || v > key->max)
				fz_fail("integer outside its row's range", key->key);
			break;
		}
		case CV_BOOL: {
			int v;
			memcpy(&v, field, sizeof v);
			if (v != 0 && v != 1)
				fz_fail("boolean not 0 or 1", key->key);
			break;
		}
		case CV_VERSION: case CV_PATH: case CV_ADDR: case CV_IDENTITY:
			if (!fz_cstr(field, key->size))
				fz_fail("string field not NUL-terminated", key->key);
			else if (key->type == CV_PATH && c->set[k] && field[0] == '\0')
				fz_fail("a set path is empty", key->key);
			break;
		}
	}
	if (c->log_level < LV_ERROR || c->log_level > LV_TRACE)
		fz_fail("log_level out of range", NULL);
	if (c->log_target < LOG_TO_STDERR || c->log_target > LOG_TO_FILE)
		fz_fail("log_target out of range", NULL);
	if (!fz_cstr(c->log_file, sizeof c->log_file) || !fz_cstr(c->group, sizeof c->group))
		fz_fail("log_file or group not NUL-terminated", NULL);
	if (c->log_target == LOG_TO_FILE && c->log_file[0] == '\0')
		fz_fail("log target file without a path", NULL);
	if (c->set[CFG_K_CERT_PATH] != c->set[CFG_K_KEY_PATH] ||
	    (c->cert_path[0] == '\0') != (c->key_path[0] == '\0'))
		fz_fail("cert-path without key-path or the reverse", NULL);
	if ((c->user[0] == '\0') != (c->group[0] == '\0') || strchr(c->group, ':') ||
	    (c->user[0] && !c->set[CFG_K_IDENTITY]))
		fz_fail("identity half set", c->user);

	/* the listen address: as parsed, and as the text parses again */
	struct sockaddr_storage sa;
	socklen_t salen = 0;
	if (c->listen_sa.ss_family == AF_INET) {
		if (c->listen_salen != sizeof(struct sockaddr_in))
			fz_fail("AF_INET with the wrong length", c->addr);
	} else if (c->listen_sa.ss_family == AF_INET6) {
		if (c->listen_salen != sizeof(struct sockaddr_in6))
			fz_fail("AF_INET6 with the wrong length", c->addr);
	} else {
		fz_fail("listen address of no family", c->addr);
	}
	if (cfg_addr_parse(c->addr, &sa, &salen) != 0 || salen != c->listen_salen ||
	    memcmp(&sa, &c->listen_sa, salen) != 0)
		fz_fail("addr text and listen_sa disagree", c->addr);
	if (((const struct sockaddr_in *)&c->listen_sa)->sin_port == 0)
		fz_fail("port 0", c->addr);
}

/* "NAME:N: ..." with N a line of the input, or "NAME: ...". */
static void fz_check_err(const char *err, int lines)
{
	size_t nl = strlen(FZ_NAME);

	if (strncmp(err, FZ_NAME ":", nl + 1) != 0) {
		fz_fail("message does not start with the name", err);
		return;
	}
	const char *p = err + nl + 1;
	if (*p == ' ') {
		if (p[1] == '\0')
			fz_fail("empty message", err);
		return;
	}
	long n = 0;
	const char *q = p;
	while (*q >= '0' && *q <= '9' && n < 1000000)
		n = n * 10 + (*q++ - '0');
	if (q == p || *q != ':' || q[1] != ' ' || q[2] == '\0')
		fz_fail("message is neither NAME:N: nor NAME: ", err);
	else if (n < 1 || n > lines)
		fz_fail("line number outside the input", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char err[512], small[16 + 8];
	const char *text = (const char *)data;
	int lines = 1;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';

	memset(err, 0x5A, sizeof err);
	int rc = cfg_parse_text(&fz_cfg, FZ_NAME, text, size, err, sizeof err);
	if (rc != 0 && rc != -1)
		fz_fail("result is neither 0 nor -1", NULL);
	if (rc == 0)
		fz_check_ok(&fz_cfg, lines);
	else if (!fz_cstr(err, sizeof err))
		fz_fail("message not NUL-terminated", NULL);
	else
		fz_check_err(err, lines);

	/* same answer, same struct, whatever the error buffer */
	memset(small, 0x5A, sizeof small);
	int rc2 = cfg_parse_text(&fz_cfg2, FZ_NAME, text, size, small, 16);
	if (rc2 != rc)
		fz_fail("result depends on the error buffer's size", NULL);
	if (memcmp(&fz_cfg, &fz_cfg2, sizeof fz_cfg) != 0)
		fz_fail("two parses of the same text differ", NULL);
	for (size_t g = 16; g < sizeof small; g++)
		if (small[g] != 0x5A)
			fz_fail("message written past a 16-byte buffer", NULL);
	if (rc2 != 0 && (!fz_cstr(small, 16) || strncmp(small, err, strlen(small)) != 0))
		fz_fail("truncated message is not a prefix of the full one", small);
	memset(small, 0x5A, sizeof small);
	if (cfg_parse_text(&fz_cfg2, FZ_NAME, text, size, small, 1) != rc || small[1] != 0x5A)
		fz_fail("1-byte error buffer", NULL);
	if (rc != 0 && small[0] != '\0')
		fz_fail("1-byte error buffer not an empty string", NULL);
	memset(small, 0x5A, sizeof small);
	if (cfg_parse_text(&fz_cfg2, FZ_NAME, text, size, small, 0) != rc || small[0] != 0x5A)
		fz_fail("0-byte error buffer", NULL);
	return 0;
}

#ifdef K2P_FUZZ_REPLAY
#include "fuzz_replay.h"

int main(int argc, char **argv)
{
	return fz_replay_main("fuzz_cfg", argc, argv);
}
#endif
