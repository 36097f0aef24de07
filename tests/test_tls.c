/*
 * Section 9 (TLS): the server side driven as the event loop will drive it (non-blocking
 * sockets, poll, repeat-on-WANT), talking to kclient.h, openssl s_client and Python's
 * ssl module.  Needs the openssl CLI for the configured-certificate and client-certificate
 * tests; the Python checks run when /usr/bin/python3 exists.
 */
#include "../kmip2pkcs11.c"

#include <malloc.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>

#include "check.h"
#include "kclient.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#endif
#ifdef TEST_ASAN
/* <sanitizer/allocator_interface.h> is not installed with every compiler. */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* ---- An echo server on the tls_ API ---------------------------------------------- */

#define MAXC      64
#define MAX_MSG   (4u << 20)

enum { C_FREE, C_HS, C_READ, C_WRITE };

struct tconn {
	struct tls_conn tc;
	int fd, state, want;
	uint8_t hdr[8];
	uint8_t *msg;              /* whole message once the header is in; NULL when idle */
	size_t have, need, off;
};

struct stats {
	int hs_ok, hs_fail, hs_closed, want_read, want_write, pending, echoed, clean_close,
	    errors, open, last_err;
	char peer[256];
};

struct tsrv {
	struct tls_server *tls;
	int lfd, port, wake[2], sndbuf;
	pthread_t th;
	pthread_mutex_t mu;
	struct stats st;
	struct tconn c[MAXC];
};

static void ts_count(struct tsrv *s, int *field, int by)
{
	pthread_mutex_lock(&s->mu);
	*field += by;
	pthread_mutex_unlock(&s->mu);
}

static struct stats ts_stats(struct tsrv *s)
{
	struct stats st;
	pthread_mutex_lock(&s->mu);
	st = s->st;
	pthread_mutex_unlock(&s->mu);
	return st;
}

static void tc_close(struct tsrv *s, struct tconn *c)
{
	tls_conn_free(&c->tc);
	close(c->fd);
	free(c->msg);
	memset(c, 0, sizeof *c);
	c->state = C_FREE;
	ts_count(s, &s->st.open, -1);
}

static void tc_want(struct tsrv *s, struct tconn *c, int r)
{
	c->want = r;
	ts_count(s, r == TLS_WANT_WRITE ? &s->st.want_write : &s->st.want_read, 1);
}

static void tc_fail(struct tsrv *s, struct tconn *c, int r)
{
	pthread_mutex_lock(&s->mu);
	s->st.errors++;
	s->st.last_err = r;
	pthread_mutex_unlock(&s->mu);
	tc_close(s, c);
}

/* Advance one connection until it would block or has echoed one message: one message
 * per wake-up, as a fair event loop does, which leaves later records inside Mbed TLS
 * where only tls_pending() can see them. */
static void tc_step(struct tsrv *s, struct tconn *c)
{
	for (;;) {
		int r;
		switch (c->state) {
		case C_HS:
			r = tls_handshake(&c->tc);
			if (r == 0) {
				pthread_mutex_lock(&s->mu);
				s->st.hs_ok++;
				tls_peer_subject(&c->tc, s->st.peer, sizeof s->st.peer);
				pthread_mutex_unlock(&s->mu);
				c->state = C_READ;
				continue;
			}
			if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
				tc_want(s, c, r);
				return;
			}
			pthread_mutex_lock(&s->mu);
			if (r == TLS_CLOSED)
				s->st.hs_closed++;
			else
				s->st.hs_fail++, s->st.last_err = r;
			pthread_mutex_unlock(&s->mu);
			tc_close(s, c);
			return;
		case C_READ:
			if (c->have < 8)
				r = tls_read(&c->tc, c->hdr + c->have, 8 - c->have);
			else
				r = tls_read(&c->tc, c->msg + c->have, c->need - c->have);
			if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
				tc_want(s, c, r);
				return;
			}
			if (r == 0) {
				ts_count(s, &s->st.clean_close, 1);
				(void)tls_close_notify(&c->tc);
				tc_close(s, c);
				return;
			}
			if (r < 0) {
				tc_fail(s, c, r);
				return;
			}
			c->have += (size_t)r;
			if (c->have == 8 && c->msg == NULL) {
				uint32_t len = (uint32_t)c->hdr[4] << 24 | (uint32_t)c->hdr[5] << 16 |
				               (uint32_t)c->hdr[6] << 8 | c->hdr[7];
				if (len > MAX_MSG || (c->msg = malloc(8 + (size_t)len)) == NULL) {
					tc_fail(s, c, -1);
					return;
				}
				memcpy(c->msg, c->hdr, 8);
				c->need = 8 + (size_t)len;
			}
			if (c->msg != NULL && c->have == c->need) {
				c->state = C_WRITE;
				c->off = 0;
			}
			continue;
		case C_WRITE:
			/* After TLS_WANT_WRITE the same pointer and length come back here. */
			r = tls_write(&c->tc, c->msg + c->off, c->need - c->off);
			if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
				tc_want(s, c, r);
				return;
			}
			if (r < 0) {
				tc_fail(s, c, r);
				return;
			}
			c->off += (size_t)r;
			if (c->off == c->need) {
				free(c->msg);
				c->msg = NULL;
				c->have = c->need = c->off = 0;
				c->state = C_READ;
				c->want = TLS_WANT_READ;
				ts_count(s, &s->st.echoed, 1);
				return;
			}
			continue;
		default:
			return;
		}
	}
}

static void ts_accept(struct tsrv *s)
{
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), i;
		if (fd < 0)
			return;
		if (s->sndbuf > 0)
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s->sndbuf, sizeof s->sndbuf);
		for (i = 0; i < MAXC && s->c[i].state != C_FREE; i++)
			;
		if (i == MAXC || tls_conn_init(s->tls, &s->c[i].tc, fd) != 0) {
			close(fd);
			continue;
		}
		s->c[i].fd = fd;
		s->c[i].state = C_HS;
		ts_count(s, &s->st.open, 1);
		tc_step(s, &s->c[i]);
	}
}

static void *ts_main(void *arg)
{
	struct tsrv *s = arg;
	struct pollfd pfd[MAXC + 2];
	int idx[MAXC + 2];

	for (;;) {
		int n = 2, busy = 0;
		pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		for (int i = 0; i < MAXC; i++) {
			struct tconn *c = &s->c[i];
			if (c->state == C_FREE)
				continue;
			if (c->state != C_HS && tls_pending(&c->tc))
				busy = 1;
			pfd[n].fd = c->fd;
			pfd[n].events = c->want == TLS_WANT_WRITE ? POLLOUT : POLLIN;
			pfd[n].revents = 0;
			idx[n++] = i;
		}
		if (poll(pfd, (nfds_t)n, busy ? 0 : 1000) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		for (int k = 2; k < n; k++) {
			struct tconn *c = &s->c[idx[k]];
			if (c->state == C_FREE)
				continue;
			if (pfd[k].revents) {
				tc_step(s, c);
			} else if (c->state != C_HS && tls_pending(&c->tc)) {
				ts_count(s, &s->st.pending, 1);
				tc_step(s, c);
			}
		}
		if (pfd[1].revents)
			ts_accept(s);
	}
	for (int i = 0; i < MAXC; i++)
		if (s->c[i].state != C_FREE)
			tc_close(s, &s->c[i]);
	return NULL;
}

static int ts_start(struct tsrv *s, struct tls_server *tls, int sndbuf)
{
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	int one = 1;

	memset(s, 0, sizeof *s);
	s->tls = tls;
	s->sndbuf = sndbuf;
	pthread_mutex_init(&s->mu, NULL);
	if (pipe(s->wake) != 0)
		return -1;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->lfd, 128) != 0 ||
	    getsockname(s->lfd, (struct sockaddr *)&a, &al) != 0)
		return -1;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->th, NULL, ts_main, s) == 0 ? 0 : -1;
}

static void ts_stop(struct tsrv *s)
{
	if (write(s->wake[1], "x", 1) != 1)
		return;
	pthread_join(s->th, NULL);
	close(s->lfd);
	close(s->wake[0]);
	close(s->wake[1]);
	pthread_mutex_destroy(&s->mu);
}

/* Wait up to ms for *field (read under the lock) to reach at least want. */
static int ts_wait(struct tsrv *s, const int *field, int want, int ms)
{
	for (int t = 0; t < ms; t += 5) {
		pthread_mutex_lock(&s->mu);
		int v = *field;
		pthread_mutex_unlock(&s->mu);
		if (v >= want)
			return 1;
		usleep(5000);
	}
	return 0;
}

static int ts_wait_open(struct tsrv *s, int want, int ms)
{
	for (int t = 0; t < ms; t += 5) {
		if (ts_stats(s).open == want)
			return 1;
		usleep(5000);
	}
	return 0;
}

/* ---- Helpers ------------------------------------------------------------------- */

static char tmpdir[64];

static const char *path_in(char *buf, const char *name)
{
	snprintf(buf, PATH_MAX, "%s/%s", tmpdir, name);
	return buf;
}

/* stdout+stderr of a shell command; returns the exit status. */
static int capture(const char *cmd, char *out, size_t cap)
{
	char full[2048];
	size_t n = 0;
	snprintf(full, sizeof full, "( %s ) 2>&1", cmd);
	FILE *f = popen(full, "r");
	if (f == NULL)
		return -1;
	while (n + 1 < cap) {
		size_t r = fread(out + n, 1, cap - 1 - n, f);
		if (r == 0)
			break;
		n += r;
	}
	out[n] = '\0';
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A shell command run in the temporary directory; its exit status. */
static int run(const char *cmd)
{
	char full[2048], out[4096];
	snprintf(full, sizeof full, "cd %s && %s", tmpdir, cmd);
	int rc = capture(full, out, sizeof out);
	if (rc != 0)
		printf("command failed (%d): %s\n%s\n", rc, full, out);
	return rc;
}

static int have_exe(const char *p)
{
	return access(p, X_OK) == 0;
}

/* A TTLV-framed message: header tag 0x420078 (Request Message), Structure, length n,
 * then n bytes of a pattern. */
static size_t ttlv_msg(uint8_t *buf, size_t n, unsigned seed)
{
	buf[0] = 0x42; buf[1] = 0x00; buf[2] = 0x78; buf[3] = 0x01;
	buf[4] = (uint8_t)(n >> 24); buf[5] = (uint8_t)(n >> 16);
	buf[6] = (uint8_t)(n >> 8); buf[7] = (uint8_t)n;
	for (size_t i = 0; i < n; i++)
		buf[8 + i] = (uint8_t)(i * 31 + seed);
	return n + 8;
}

static size_t mem_in_use(void)
{
#ifdef TEST_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	return mallinfo2().uordblks;
#endif
}

static int mode_of(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

/* ---- Tests --------------------------------------------------------------------- */

static void test_self_signed(char *cert_pem)
{
	char state[PATH_MAX], key_pem[PATH_MAX], err[512] = "", fp1[TLS_FP_LEN];
	struct tls_server s;
	struct tls_opts o = { 0 };

	path_in(state, "state");
	o.state_dir = state;
	o.listen_host = "127.0.0.1";
	path_in(cert_pem, "state/cert.pem");
	path_in(key_pem, "state/key.pem");

	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "self-signed init: %s", err);
	CHECK(mode_of(state) == 0700, "state dir created 0700 (%o)", mode_of(state));
	CHECK(mode_of(cert_pem) >= 0, "cert.pem written");
	CHECK(mode_of(key_pem) == 0600, "key.pem mode 0600 (%o)", mode_of(key_pem));
	CHECK(strlen(s.fingerprint) == 95 && s.fingerprint[2] == ':' &&
	      s.fingerprint[94] != ':', "fingerprint AA:BB:... form: %s", s.fingerprint);
	memcpy(fp1, s.fingerprint, sizeof fp1);
	tls_server_free(&s);

	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "second init: %s", err);
	CHECK(strcmp(fp1, s.fingerprint) == 0, "second start reuses the certificate");
	tls_server_free(&s);

	/* The fingerprint is the SHA-256 of the DER, as openssl computes it. */
	char cmd[PATH_MAX + 64], out[512];
	snprintf(cmd, sizeof cmd, "openssl x509 -in %s -noout -fingerprint -sha256", cert_pem);
	int rc = capture(cmd, out, sizeof out);
	char *eq = rc == 0 ? strchr(out, '=') : NULL;
	CHECK(eq && strncmp(eq + 1, fp1, 95) == 0, "fingerprint equals openssl's: %s", out);

	/* What the certificate says. */
	mbedtls_x509_crt crt;
	mbedtls_x509_crt_init(&crt);
	CHECK(mbedtls_x509_crt_parse_file(&crt, cert_pem) == 0, "cert.pem parses");
	int dns_localhost = 0, ip_loopback = 0;
	for (const mbedtls_x509_sequence *cur = &crt.subject_alt_names; cur && cur->buf.p;
	     cur = cur->next) {
		mbedtls_x509_subject_alternative_name san;
		if (mbedtls_x509_parse_subject_alt_name(&cur->buf, &san) != 0)
			continue;
		const mbedtls_x509_buf *u = &san.san.unstructured_name;
		if (san.type == MBEDTLS_X509_SAN_DNS_NAME && u->len == 9 &&
		    memcmp(u->p, "localhost", 9) == 0)
			dns_localhost = 1;
		if (san.type == MBEDTLS_X509_SAN_IP_ADDRESS && u->len == 4 &&
		    memcmp(u->p, "\x7f\0\0\x01", 4) == 0)
			ip_loopback = 1;
		mbedtls_x509_free_subject_alt_name(&san);
	}
	CHECK(dns_localhost, "SAN has DNS:localhost");
	CHECK(ip_loopback, "SAN has IP:127.0.0.1");
	char subj[128];
	mbedtls_x509_dn_gets(subj, sizeof subj, &crt.subject);
	CHECK(strcmp(subj, "CN=kmip2pkcs11") == 0, "subject CN=kmip2pkcs11 (%s)", subj);
	CHECK(!crt.MBEDTLS_PRIVATE(ca_istrue), "basic constraints CA:FALSE");
	CHECK(crt.valid_to.year - crt.valid_from.year >= 9, "valid about 10 years");
	CHECK(mbedtls_pk_get_type(&crt.pk) == MBEDTLS_PK_ECKEY &&
	      mbedtls_pk_get_bitlen(&crt.pk) == 256, "P-256 key");
	CHECK(crt.serial.len == 16, "16-byte serial");
	uint32_t flags = 0;
	CHECK(mbedtls_x509_crt_verify(&crt, &crt, NULL, "127.0.0.1", &flags, NULL, NULL) == 0,
	      "Mbed TLS verifies it as its own anchor for 127.0.0.1 (flags %x)", flags);
	mbedtls_x509_crt_free(&crt);

	/* Only a key left behind (crash between the renames): a new pair is made. */
	unlink(cert_pem);
	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "init with key.pem only: %s", err);
	CHECK(strcmp(fp1, s.fingerprint) != 0, "a new certificate replaced the half pair");
	tls_server_free(&s);

	/* No state directory, no certificate. */
	o.state_dir = NULL;
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, "state directory"),
	      "no cert and no state dir is an error: %s", err);
}

static void test_echo(struct tsrv *ts, const char *ca)
{
	struct kc c;
	static uint8_t req[(1u << 20) + 16], resp[(1u << 20) + 16];
	struct stats before = ts_stats(ts);

	CHECK(kc_connect(&c, "127.0.0.1", ts->port, ca, NULL, NULL) == 0,
	      "kclient handshake verifying cert.pem: %s", c.err);
	if (c.fd < 0)
		return;
	CHECK(strcmp(mbedtls_ssl_get_version(&c.ssl), "TLSv1.3") == 0, "TLS 1.3 negotiated");
	CHECK(strcmp(mbedtls_ssl_get_ciphersuite(&c.ssl), "TLS1-3-AES-128-GCM-SHA256") == 0 ||
	      strcmp(mbedtls_ssl_get_ciphersuite(&c.ssl), "TLS1-3-AES-256-GCM-SHA384") == 0 ||
	      strcmp(mbedtls_ssl_get_ciphersuite(&c.ssl), "TLS1-3-CHACHA20-POLY1305-SHA256") == 0,
	      "one of the three suites: %s", mbedtls_ssl_get_ciphersuite(&c.ssl));

	size_t n = ttlv_msg(req, 120, 1);
	long r = kc_roundtrip(&c, req, n, resp, sizeof resp);
	CHECK(r == (long)n && memcmp(req, resp, n) == 0, "small message echoed (%ld)", r);

	/* 1 MiB through an 8 KiB server send buffer: the server must see TLS_WANT_WRITE and
	 * finish the write by repeating the call. */
	n = ttlv_msg(req, 1u << 20, 7);
	r = kc_roundtrip(&c, req, n, resp, sizeof resp);
	CHECK(r == (long)n && memcmp(req, resp, n) == 0, "1 MiB message echoed (%ld: %s)", r,
	      c.err);

	/* Two messages in one record: the second stays inside Mbed TLS after the first is
	 * echoed, and only tls_pending() tells the loop to go on. */
	size_t n1 = ttlv_msg(req, 40, 3);
	size_t n2 = ttlv_msg(req + n1, 64, 4);
	CHECK(kc_send(&c, req, n1 + n2) == 0, "two messages sent in one write");
	c.ret = 0;
	r = kc_recv(&c, resp, sizeof resp);
	CHECK(r == (long)n1 && memcmp(resp, req, n1) == 0, "first of two echoed");
	r = kc_recv(&c, resp, sizeof resp);
	CHECK(r == (long)n2 && memcmp(resp, req + n1, n2) == 0, "second of two echoed (%s)",
	      c.err);

	kc_close(&c);
	CHECK(ts_wait(ts, &ts->st.clean_close, before.clean_close + 1, 3000),
	      "close_notify from the client is a clean close on the server");
	struct stats after = ts_stats(ts);
	CHECK(after.want_read > before.want_read, "server saw TLS_WANT_READ");
	CHECK(after.want_write > before.want_write, "server saw TLS_WANT_WRITE");
	CHECK(after.pending > before.pending, "server found buffered records via tls_pending");
	CHECK(after.echoed == before.echoed + 4, "four echoes (%d)", after.echoed - before.echoed);
	CHECK(after.errors == before.errors, "no server-side errors (last %d)", after.last_err);

	/* Wrong trust anchor: verification fails on the client. */
	char other[PATH_MAX];
	if (access(path_in(other, "ec.pem"), R_OK) == 0) {
		CHECK(kc_connect(&c, "127.0.0.1", ts->port, other, NULL, NULL) != 0,
		      "a client trusting another certificate refuses the server");
		kc_close(&c);
	}
	/* Name check: the certificate is for localhost and 127.0.0.1, not for example.net. */
	struct kc_opts ko = { 0, 5000, "example.net" };
	CHECK(kc_connect_opts(&c, "127.0.0.1", ts->port, ca, NULL, NULL, &ko) != 0,
	      "name example.net does not match");
	kc_close(&c);
	ko.server_name = "localhost";
	CHECK(kc_connect_opts(&c, "127.0.0.1", ts->port, ca, NULL, NULL, &ko) == 0,
	      "name localhost matches: %s", c.err);
	kc_close(&c);
}

static void test_refusals(struct tsrv *ts, const char *ca)
{
	struct kc c;
	struct stats before = ts_stats(ts);
	struct kc_opts tls12 = { 1, 5000, NULL };

	CHECK(kc_connect_opts(&c, "127.0.0.1", ts->port, NULL, NULL, NULL, &tls12) != 0,
	      "TLS 1.2-only kclient is refused");
	CHECK(c.ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE,
	      "... with a fatal alert (%s)", c.err);
	CHECK(ts_wait(ts, &ts->st.hs_fail, before.hs_fail + 1, 3000),
	      "server counts the TLS 1.2 handshake as failed");

	/* A client that connects and leaves, and one that talks HTTP. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)ts->port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "raw connect");
	close(fd);
	CHECK(ts_wait(ts, &ts->st.hs_closed, before.hs_closed + 1, 3000),
	      "EOF before the handshake is TLS_CLOSED, not an error");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "raw connect");
	CHECK(write(fd, "GET / HTTP/1.0\r\n\r\n", 18) == 18, "HTTP sent");
	CHECK(ts_wait(ts, &ts->st.hs_fail, before.hs_fail + 2, 3000),
	      "HTTP instead of TLS fails the handshake");
	close(fd);

	if (!have_exe("/usr/bin/openssl"))
		return;
	char cmd[PATH_MAX + 256], out[16384];
	snprintf(cmd, sizeof cmd, "timeout 10 openssl s_client -connect 127.0.0.1:%d -tls1_2 "
	         "</dev/null", ts->port);
	capture(cmd, out, sizeof out);
	CHECK(strstr(out, "protocol version") != NULL,
	      "openssl s_client -tls1_2 gets alert protocol version:\n%s", out);

	static const struct { const char *args, *expect; int ok; } cases[] = {
		{ "-groups X25519", "Server Temp Key: X25519", 1 },
		{ "-groups P-256", "Server Temp Key: ECDH, prime256v1", 1 },
		{ "-groups P-384", "Server Temp Key: ECDH, secp384r1", 1 },
		{ "-groups P-521", NULL, 0 },
		{ "-groups ffdhe2048", NULL, 0 },
		{ "-ciphersuites TLS_AES_128_GCM_SHA256", "Cipher is TLS_AES_128_GCM_SHA256", 1 },
		{ "-ciphersuites TLS_AES_256_GCM_SHA384", "Cipher is TLS_AES_256_GCM_SHA384", 1 },
		{ "-ciphersuites TLS_CHACHA20_POLY1305_SHA256",
		  "Cipher is TLS_CHACHA20_POLY1305_SHA256", 1 },
		{ "-ciphersuites TLS_AES_128_CCM_SHA256", NULL, 0 },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		snprintf(cmd, sizeof cmd, "timeout 10 openssl s_client -connect 127.0.0.1:%d "
		         "-tls1_3 -CAfile %s %s </dev/null", ts->port, ca, cases[i].args);
		capture(cmd, out, sizeof out);
		int done = strstr(out, "Verify return code: 0 (ok)") != NULL &&
		           strstr(out, "TLSv1.3") != NULL;
		if (cases[i].ok)
			CHECK(done && strstr(out, cases[i].expect), "s_client %s: %s",
			      cases[i].args, done ? "ok" : out);
		else
			CHECK(!done, "s_client %s is refused", cases[i].args);
	}
}

static void test_python(struct tsrv *ts, const char *ca)
{
	/* Debian's python3 (what PyKMIP runs on) with its defaults, and with the verify flags
	 * that Python 3.13 sets by default (VERIFY_X509_STRICT, VERIFY_X509_PARTIAL_CHAIN),
	 * which refuse a certificate that lacks what RFC 5280 asks of a CA. */
	static const char *const flags[] = {
		"",
		"c.verify_flags|=ssl.VERIFY_X509_STRICT|ssl.VERIFY_X509_PARTIAL_CHAIN\n",
	};
	static const char *const how[] = { "default", "3.13's strict" };
	char cmd[PATH_MAX + 1024], out[4096];
	if (!have_exe("/usr/bin/python3")) {
		CHECK(0, "Debian's /usr/bin/python3 is installed (dist/deps.sh)");
		return;
	}
	for (size_t i = 0; i < ARRAY_LEN(flags); i++) {
		/* As PyKMIP: the certificate as CA file, no host name check. */
		snprintf(cmd, sizeof cmd, "timeout 20 /usr/bin/python3 -c \"import ssl,socket,sys\n"
		         "c=ssl.create_default_context(cafile=sys.argv[1]); c.check_hostname=False\n%s"
		         "s=c.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[2]))))\n"
		         "print(s.version(), s.cipher()[0]); s.close()\" %s %d",
		         flags[i], ca, ts->port);
		capture(cmd, out, sizeof out);
		CHECK(strncmp(out, "TLSv1.3 ", 8) == 0, "python3 ssl (%s flags) handshake, cert.pem "
		      "as cafile: %s", how[i], out);
		/* And with the host name checked against the IP address SAN. */
		snprintf(cmd, sizeof cmd, "timeout 20 /usr/bin/python3 -c \"import ssl,socket,sys\n"
		         "c=ssl.create_default_context(cafile=sys.argv[1])\n%s"
		         "s=c.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[2]))),"
		         "server_hostname='127.0.0.1')\n"
		         "print(s.version()); s.close()\" %s %d", flags[i], ca, ts->port);
		capture(cmd, out, sizeof out);
		CHECK(strncmp(out, "TLSv1.3", 7) == 0, "python3 (%s flags) verifies IP:127.0.0.1: %s",
		      how[i], out);
	}
}

/* kclient from several threads at once, one struct kc each: what the benchmark does. */
struct thr_arg { int port, ok; const char *ca; };

static void *thr_client(void *p)
{
	struct thr_arg *a = p;
	struct kc c;
	uint8_t req[600], resp[600];
	if (kc_connect(&c, "127.0.0.1", a->port, a->ca, NULL, NULL) != 0)
		return NULL;
	for (unsigned i = 0; i < 25; i++) {
		size_t n = ttlv_msg(req, 8 * (i + 1), i);
		if (kc_roundtrip(&c, req, n, resp, sizeof resp) != (long)n || memcmp(req, resp, n))
			break;
		a->ok++;
	}
	kc_close(&c);
	return NULL;
}

static void test_threads(struct tsrv *ts, const char *ca)
{
	enum { T = 8 };
	pthread_t th[T];
	struct thr_arg a[T];
	int ok = 0;
	for (int i = 0; i < T; i++) {
		a[i] = (struct thr_arg){ ts->port, 0, ca };
		pthread_create(&th[i], NULL, thr_client, &a[i]);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		ok += a[i].ok;
	}
	CHECK(ok == T * 25, "8 threads x 25 round trips, one struct kc each (%d)", ok);
}

/* Bytes a connection costs the server once idle after its handshake, measured with
 * Python clients in another process so that only the server's memory counts. */
static void test_memory(struct tsrv *ts, const char *ca)
{
	enum { N = 40 };     /* more than PSA's former fixed 32 key slots */
	char cmd[PATH_MAX + 512];
	struct stats st0;

	if (!have_exe("/usr/bin/python3")) {
		CHECK(0, "Debian's /usr/bin/python3 is installed (dist/deps.sh)");
		return;
	}
	ts_wait_open(ts, 0, 3000);
	st0 = ts_stats(ts);
	usleep(100000);
	size_t before = mem_in_use();
	snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"import ssl,socket,sys\n"
	         "c=ssl.create_default_context(cafile=sys.argv[1]); c.check_hostname=False\n"
	         "l=[c.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[2]))))"
	         " for i in range(%d)]\n"
	         "sys.stdin.read()\" %s %d >/dev/null", N, ca, ts->port);
	FILE *p = popen(cmd, "w");
	CHECK(p != NULL, "python started");
	if (p == NULL)
		return;
	int ok = ts_wait(ts, &ts->st.hs_ok, st0.hs_ok + N, 20000);
	CHECK(ok, "%d concurrent handshakes", N);
	usleep(200000);
	size_t during = mem_in_use();
	pclose(p);
	CHECK(ts_wait_open(ts, 0, 5000), "all closed");
	usleep(100000);
	size_t after = mem_in_use();
	long per = ((long)during - (long)before) / N;
	printf("memory per idle TLS 1.3 connection: %ld bytes (%s; IN %d OUT %d); "
	       "leftover after close: %ld bytes\n", per,
#ifdef TEST_ASAN
	       "ASan allocated bytes",
#else
	       "mallinfo2 uordblks",
#endif
	       MBEDTLS_SSL_IN_CONTENT_LEN, MBEDTLS_SSL_OUT_CONTENT_LEN,
	       (long)after - (long)before);
	CHECK(ok && per <= 48 * 1024, "idle connection costs at most 48 KiB (%ld)", per);
	CHECK((long)after - (long)before < 16 * 1024, "memory returns after close (%ld)",
	      (long)after - (long)before);
}

static void test_configured(void)
{
	char ec_pem[PATH_MAX], ec_key[PATH_MAX], rsa_pem[PATH_MAX], rsa_key[PATH_MAX],
	     ec_der[PATH_MAX], ec_key_der[PATH_MAX], nope[PATH_MAX], err[512] = "";
	char cmd[PATH_MAX * 2], out[512];
	struct tls_server s;
	struct tls_opts o = { 0 };
	struct tsrv ts;
	struct kc c;

	path_in(ec_pem, "ec.pem");
	path_in(ec_key, "ec.key");
	path_in(rsa_pem, "rsa.pem");
	path_in(rsa_key, "rsa.key");
	path_in(ec_der, "ec.der");
	path_in(ec_key_der, "ec.key.der");
	path_in(nope, "nope.pem");

	/* P-384 pair, PEM and DER: loads, fingerprint as openssl says, served. */
	o.cert_path = ec_pem;
	o.key_path = ec_key;
	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "P-384 cert/key load: %s", err);
	snprintf(cmd, sizeof cmd, "openssl x509 -in %s -noout -fingerprint -sha256", ec_pem);
	int rc = capture(cmd, out, sizeof out);
	char *eq = rc == 0 ? strchr(out, '=') : NULL;
	CHECK(eq && strncmp(eq + 1, s.fingerprint, 95) == 0, "fingerprint as openssl's: %s", out);
	if (ts_start(&ts, &s, 0) == 0) {
		static uint8_t req[256], resp[256];
		size_t n = ttlv_msg(req, 100, 9);
		CHECK(kc_connect(&c, "127.0.0.1", ts.port, ec_pem, NULL, NULL) == 0,
		      "configured P-384 certificate served and verified: %s", c.err);
		CHECK(kc_roundtrip(&c, req, n, resp, sizeof resp) == (long)n, "echo over P-384");
		kc_close(&c);
		ts_stop(&ts);
	}
	tls_server_free(&s);

	o.cert_path = ec_der;
	o.key_path = ec_key_der;
	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "DER cert/key load: %s", err);
	tls_server_free(&s);

	/* RSA-2048: the server signs with RSA-PSS. */
	o.cert_path = rsa_pem;
	o.key_path = rsa_key;
	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "RSA cert/key load: %s", err);
	if (ts_start(&ts, &s, 0) == 0) {
		CHECK(kc_connect(&c, "127.0.0.1", ts.port, rsa_pem, NULL, NULL) == 0,
		      "RSA certificate served (RSA-PSS): %s", c.err);
		kc_close(&c);
		char cmdl[PATH_MAX + 128], outl[16384];
		snprintf(cmdl, sizeof cmdl, "timeout 10 openssl s_client -connect 127.0.0.1:%d "
		         "-CAfile %s </dev/null", ts.port, rsa_pem);
		capture(cmdl, outl, sizeof outl);
		CHECK(strstr(outl, "Peer signature type: RSA-PSS") != NULL,
		      "openssl sees an RSA-PSS signature");
		ts_stop(&ts);
	}
	tls_server_free(&s);

	/* Mistakes, each named. */
	o.cert_path = ec_pem;
	o.key_path = rsa_key;
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, "does not match") &&
	      strstr(err, rsa_key), "EC cert with RSA key: %s", err);
	o.key_path = path_in(out, "ca.key");
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, "does not match"),
	      "EC cert with another EC key: %s", err);
	o.cert_path = nope;
	o.key_path = ec_key;
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, nope),
	      "missing certificate named: %s", err);
	o.cert_path = ec_pem;
	o.key_path = nope;
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, nope),
	      "missing key named: %s", err);
	o.cert_path = ec_key;       /* a key where the certificate should be */
	o.key_path = ec_key;
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, ec_key),
	      "a key as certificate named: %s", err);
	o.cert_path = ec_pem;
	o.key_path = NULL;
	CHECK(tls_server_init(&s, &o, err, sizeof err) != 0 && strstr(err, "key-path"),
	      "certificate without key: %s", err);
}

static void test_client_certs(const char *self_state)
{
	char ca_pem[PATH_MAX], cl_pem[PATH_MAX], cl_key[PATH_MAX], rogue_pem[PATH_MAX],
	     rogue_key[PATH_MAX], cert_pem[PATH_MAX], err[512] = "";
	struct tls_server s;
	struct tls_opts o = { 0 };
	struct tsrv ts;
	struct kc c;
	static uint8_t req[256], resp[256];
	size_t n = ttlv_msg(req, 64, 5);

	path_in(ca_pem, "ca.pem");
	path_in(cl_pem, "cl.pem");
	path_in(cl_key, "cl.key");
	path_in(rogue_pem, "rogue.pem");
	path_in(rogue_key, "rogue.key");
	path_in(cert_pem, "state/cert.pem");

	o.state_dir = self_state;
	o.listen_host = "127.0.0.1";
	o.client_ca_path = ca_pem;
	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "client-CA init: %s", err);
	CHECK(s.verify_clients, "client certificates required");
	if (ts_start(&ts, &s, 0) != 0)
		return;

	/* TLS 1.3: the client may finish its side before the server has judged its
	 * certificate, so the refusal shows at the handshake or at the first read. */
	int r = kc_connect(&c, "127.0.0.1", ts.port, cert_pem, NULL, NULL);
	if (r == 0)
		r = kc_roundtrip(&c, req, n, resp, sizeof resp) == (long)n ? 0 : -1;
	CHECK(r != 0, "client without certificate refused");
	kc_close(&c);

	r = kc_connect(&c, "127.0.0.1", ts.port, cert_pem, rogue_pem, rogue_key);
	if (r == 0)
		r = kc_roundtrip(&c, req, n, resp, sizeof resp) == (long)n ? 0 : -1;
	CHECK(r != 0, "client with a certificate from another CA refused");
	kc_close(&c);

	CHECK(kc_connect(&c, "127.0.0.1", ts.port, cert_pem, cl_pem, cl_key) == 0,
	      "client with a certificate from the CA: %s", c.err);
	CHECK(kc_roundtrip(&c, req, n, resp, sizeof resp) == (long)n &&
	      memcmp(req, resp, n) == 0, "... is served: %s", c.err);
	kc_close(&c);
	struct stats st = ts_stats(&ts);
	CHECK(strcmp(st.peer, "CN=client1") == 0, "server sees the client subject (%s)",
	      st.peer);

	if (have_exe("/usr/bin/python3")) {
		char cmd[PATH_MAX * 4], out[4096];
		snprintf(cmd, sizeof cmd, "timeout 20 /usr/bin/python3 -c \"import ssl,socket,sys\n"
		         "c=ssl.create_default_context(cafile=sys.argv[1]); c.check_hostname=False\n"
		         "c.load_cert_chain(sys.argv[3], sys.argv[4])\n"
		         "s=c.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[2]))))\n"
		         "s.sendall(bytes.fromhex('4200780100000008')+b'12345678')\n"
		         "print(s.version(), len(s.recv(100))); s.close()\" %s %d %s %s",
		         cert_pem, ts.port, cl_pem, cl_key);
		capture(cmd, out, sizeof out);
		CHECK(strncmp(out, "TLSv1.3 16", 10) == 0, "Python with client cert: %s", out);
	}
	ts_stop(&ts);
	tls_server_free(&s);
}

/* ---- The event loop of section 10, run in this process ----------------------------- */

struct tloop {
	struct ev_srv srv;
	struct op_env env;
	pthread_t th;
	int port;
	const char *name;               /* "poll, no threads", "epoll", "epoll x2", ... */
};

static void *tl_main(void *arg)
{
	struct tloop *l = arg;
	ev_run(&l->srv);
	return NULL;
}

/* ev_run on 127.0.0.1:<free port> with nloops loops, no slow pool and 2 jobs of 4 KiB
 * per loop; epoll or poll(); threads: the loops on threads of their own, ev_run's thread
 * only accepting (workers > 0), else one loop doing everything (workers = 0). */
static int tl_start(struct tloop *l, struct tls_server *tls, int nloops, int threads, int epoll)
{
	struct sockaddr_in a;
	socklen_t al = sizeof a;

	memset(l, 0, sizeof *l);
	l->name = !threads ? "poll, no threads" : nloops == 1 ? (epoll ? "epoll" : "poll") :
		  epoll ? "epoll x2" : "poll x2";
	ev_stop_signal = 0;
	if (pipe2(ev_sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
		return -1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) != 0)
		return -1;
	l->port = ntohs(a.sin_port);
	l->srv.lfd[0] = fd;
	l->srv.nlisten = 1;
	l->srv.tls = tls;
	l->srv.max_conn = 8;
	l->srv.max_per_src = 8;
	l->srv.max_msg = 4096;
	l->srv.handshake_ms = l->srv.first_ms = l->srv.idle_ms = 10000;
	l->srv.sig_fd = ev_sig_pipe[0];
	if (ev_start(&l->srv, &l->env, nloops, 0, 2 * nloops, 4096, 4096, threads, epoll) != 0)
		return -1;
	return pthread_create(&l->th, NULL, tl_main, l) == 0 ? 0 : -1;
}

static void tl_stop(struct tloop *l)
{
	ev_stop_signal = 1;
	if (write(ev_sig_pipe[1], "", 1) != 1)
		perror("write");
	pthread_join(l->th, NULL);
	close(l->srv.lfd[0]);
	ev_free(&l->srv);
	close(ev_sig_pipe[0]);
	close(ev_sig_pipe[1]);
	ev_sig_pipe[0] = ev_sig_pipe[1] = -1;
}

/* Every loop leaves its wait and waits again (the test hook then makes that fail). */
static void tl_wake(struct tloop *l)
{
	if (write(ev_sig_pipe[1], "", 1) != 1)
		perror("write");
	for (int i = 0; i < l->srv.nloops; i++)
		ev_wake(&l->srv.loops[i]);
}

static int tl_nconn(struct tloop *l)
{
	return __atomic_load_n(&l->srv.nconn, __ATOMIC_SEQ_CST);
}

/* Waits up to ms for the loops to hold `want` connections. */
static int tl_wait_nconn(struct tloop *l, int want, int ms)
{
	for (int i = 0; i < ms / 10 && tl_nconn(l) != want; i++)
		usleep(10 * 1000);
	return tl_nconn(l) == want;
}

static int arena_has(struct tloop *l, const char *s)
{
	for (int i = 0; i < l->srv.nloops; i++) {
		const struct wrk_store *w = &l->srv.loops[i].store;
		if (w->arena && memmem(w->arena, (size_t)w->njobs * (w->in_cap + w->out_cap), s, strlen(s)))
			return 1;
	}
	return 0;
}

/* Discover Versions, KMIP 1.2, no credential: answered without the module. */
static const uint8_t tl_discover[] = {
	0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x60,
	0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00, 0x38,
	0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20,
	0x42, 0x00, 0x6A, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0,
	0x42, 0x00, 0x6B, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 2, 0, 0, 0, 0,
	0x42, 0x00, 0x0D, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0,
	0x42, 0x00, 0x0F, 0x01, 0x00, 0x00, 0x00, 0x18,
	0x42, 0x00, 0x5C, 0x05, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 0x1E, 0, 0, 0, 0,
	0x42, 0x00, 0x79, 0x01, 0x00, 0x00, 0x00, 0x00,
};

/* Result Status Success, as it stands in the answer. */
static const uint8_t tl_success[] = { 0x42, 0x00, 0x7F, 0x05, 0, 0, 0, 4, 0, 0, 0, 0 };

/* A Discover Versions round trip on a new connection succeeds. */
static int tl_served(struct tloop *l, const char *ca)
{
	struct kc c;
	uint8_t resp[1024];
	if (kc_connect(&c, "127.0.0.1", l->port, ca, NULL, NULL) != 0)
		return 0;
	long n = kc_roundtrip(&c, tl_discover, sizeof tl_discover, resp, sizeof resp);
	kc_close(&c);
	return n > 0 && memmem(resp, (size_t)n, tl_success, sizeof tl_success) != NULL;
}

/* A request cut off inside its body (the peer closes) is wiped from the job buffer: the
 * part that came may hold the PIN. */
static void test_loop_cut_off(struct tloop *l, const char *ca)
{
	static const char pin[] = "PIN-4711-never-kept";
	uint8_t part[8 + 40];
	struct kc c;

	memset(part, 0, sizeof part);
	memcpy(part, "\x42\x00\x78\x01\x00\x00\x01\x00", 8);   /* a 256-byte body follows */
	memcpy(part + 8 + 8, pin, sizeof pin - 1);
	CHECK(kc_connect(&c, "127.0.0.1", l->port, ca, NULL, NULL) == 0, "loop: connect: %s",
	      c.err);
	if (c.fd < 0)
		return;
	CHECK(kc_send(&c, part, sizeof part) == 0, "loop: part of a request sent");
	usleep(200 * 1000);
	CHECK(arena_has(l, pin), "loop: the part read so far is in a job buffer");
	kc_close(&c);
	CHECK(tl_wait_nconn(l, 0, 2000), "loop (%s): the connection is closed (%d open)", l->name,
	      tl_nconn(l));
	CHECK(!arena_has(l, pin), "loop (%s): a request cut off mid-body is wiped from the job "
	      "buffer", l->name);
}

/* poll() failing with EINTR, EAGAIN or ENOMEM (a debugger attaching, memory pressure) is
 * retried: the loop goes on serving, and says so in the log, once a second at most. */
static void test_loop_poll_errors(struct tloop *l, const char *ca)
{
	static const int errs[] = { EINTR, EAGAIN, ENOMEM };
	FILE *logf = tmpfile();
	int level = log_state.level;

	if (!logf)
		return;
	log_state.level = LV_INFO;
	log_state.target = LOG_TO_FILE;
	log_state.file = logf;
	CHECK(tl_served(l, ca), "loop: serves a request");
	for (size_t i = 0; i < ARRAY_LEN(errs); i++) {
		__atomic_store_n(&ev_test_poll_errno, errs[i], __ATOMIC_SEQ_CST);
		__atomic_store_n(&ev_test_poll_fails, 20, __ATOMIC_SEQ_CST);
		tl_wake(l);                     /* every loop waits again, and fails */
		for (int t = 0; t < 200 && __atomic_load_n(&ev_test_poll_fails, __ATOMIC_SEQ_CST); t++)
			usleep(10 * 1000);
		CHECK(__atomic_load_n(&ev_test_poll_fails, __ATOMIC_SEQ_CST) == 0,
		      "loop: poll failed 20 times with %s", strerror(errs[i]));
		CHECK(tl_served(l, ca), "loop: still serves after poll failed with %s",
		      strerror(errs[i]));
	}
	log_state.file = NULL;
	log_state.target = LOG_TO_STDERR;
	log_state.level = level;

	char text[4096] = "";
	rewind(logf);
	size_t n = fread(text, 1, sizeof text - 1, logf);
	text[n] = '\0';
	fclose(logf);
	char want[128];
	snprintf(want, sizeof want, "%s: %s; retrying", l->srv.loops[0].epfd >= 0 ? "epoll_wait" :
		 "poll", strerror(EAGAIN));
	CHECK(strstr(text, want) != NULL, "loop (%s): the failing wait is logged (%s)", l->name,
	      want);
	int lines = 0;
	for (const char *p = text; (p = strstr(p, "; retrying")) != NULL; p++)
		lines++;
	CHECK(lines >= 1 && lines <= 3 * l->srv.nloops, "loop (%s): 40 failures of the wait, at "
	      "most a line a second per loop (%d)", l->name, lines);
}

struct tl_pump {
	struct kc *c;
	const uint8_t *msg;
	size_t n;
	int ok;
};

static void *tl_pump_run(void *arg)
{
	struct tl_pump *p = arg;
	p->ok = kc_send(p->c, p->msg, p->n) == 0;
	return NULL;
}

/* A client that streams cheap requests (answered by the loop itself) cannot hold the
 * loop: with 1000 requests of client A already waiting in the socket, client B's one
 * request is taken after a few of A's (EV_BURST a turn), not after all of them. */
static void test_loop_burst(struct tloop *l, const char *ca)
{
	enum { N = 1000 };
	static uint8_t blob[N * sizeof tl_discover], resp[1024];
	struct kc a, b;
	struct tl_pump pump;
	pthread_t th;
	int level = log_state.level;

	for (size_t i = 0; i < N; i++)
		memcpy(blob + i * sizeof tl_discover, tl_discover, sizeof tl_discover);
	if (kc_connect(&a, "127.0.0.1", l->port, ca, NULL, NULL) != 0 ||
	    kc_connect(&b, "127.0.0.1", l->port, ca, NULL, NULL) != 0) {
		CHECK(0, "loop: burst: connect: %s %s", a.err, b.err);
		return;
	}
	FILE *logf = tmpfile();
	if (!logf)
		return;
	/* hold the loop (poll fails with EAGAIN) while both requests arrive */
	log_state.level = LV_TRACE;
	log_state.target = LOG_TO_FILE;
	log_state.file = logf;
	__atomic_store_n(&ev_test_poll_errno, EAGAIN, __ATOMIC_SEQ_CST);
	__atomic_store_n(&ev_test_poll_fails, 1000000, __ATOMIC_SEQ_CST);
	tl_wake(l);
	usleep(50 * 1000);
	pump = (struct tl_pump){ &a, blob, sizeof blob, 0 };
	pthread_create(&th, NULL, tl_pump_run, &pump);
	usleep(100 * 1000);
	uint8_t query[sizeof tl_discover];
	memcpy(query, tl_discover, sizeof query);
	query[91] = 0x18;                       /* the Operation: Query */
	CHECK(kc_send(&b, query, sizeof query) == 0, "loop: burst: B sends a Query");
	usleep(100 * 1000);
	unsigned long before = ev_sum(&l->srv, 1);
	__atomic_store_n(&ev_test_poll_fails, 0, __ATOMIC_SEQ_CST);
	long n = kc_recv(&b, resp, sizeof resp);
	pthread_join(th, NULL);
	for (int i = 0; i < 200 && ev_sum(&l->srv, 1) < before + N + 1; i++)
		usleep(10 * 1000);
	log_state.file = NULL;
	log_state.target = LOG_TO_STDERR;
	log_state.level = level;
	CHECK(pump.ok, "loop: burst: A's %d requests sent", N);
	CHECK(n > 0, "loop: burst: B answered: %s", b.err);

	/* the trace log dumps each request as the loop takes it: count A's before B's */
	static char text[N * 4096];
	rewind(logf);
	size_t len = fread(text, 1, sizeof text - 1, logf);
	text[len] = '\0';
	fclose(logf);
	int before_b = -1, all = 0;
	for (const char *p = text; (p = strstr(p, " request:\nREQUEST_MESSAGE")) != NULL; p++) {
		const char *op = strstr(p, "OPERATION (42005C)");
		const char *v = op ? strstr(op, "= 0x") : NULL;
		if (v && strncmp(v, "= 0x00000018", 12) == 0 && before_b < 0)
			before_b = all;
		else if (v && strncmp(v, "= 0x0000001E", 12) == 0)
			all++;
	}
	CHECK(before_b >= 0 && all == N, "loop: burst: the log shows B's request and A's %d (%d)", N, all);
	CHECK(before_b < 20, "loop: burst: B's request was taken after %d of A's (fewer than "
	      "20)", before_b);
	kc_close(&a);
	kc_close(&b);
	CHECK(tl_wait_nconn(l, 0, 2000), "loop: burst: both closed");
}

/* max-connections-per-source counts an IPv4 address, or an IPv6 /64; a v4-mapped IPv6
 * address is its IPv4 address. */
static void test_loop_sources(void)
{
	static const struct { const char *a, *b; int same; } t[] = {
		{ "192.0.2.1", "192.0.2.1", 1 },
		{ "192.0.2.1", "192.0.2.2", 0 },
		{ "192.0.2.1", "::ffff:192.0.2.1", 1 },
		{ "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", 1 },
		{ "2001:db8:1:2::1", "2001:db8:1:3::1", 0 },
		{ "::1", "0.0.0.1", 0 },
	};
	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		struct sockaddr_storage sa[2];
		struct conn_src src[2];
		const char *txt[2] = { t[i].a, t[i].b };
		for (int k = 0; k < 2; k++) {
			memset(&sa[k], 0, sizeof sa[k]);
			struct sockaddr_in *v4 = (struct sockaddr_in *)&sa[k];
			struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa[k];
			if (inet_pton(AF_INET, txt[k], &v4->sin_addr) == 1)
				v4->sin_family = AF_INET;
			else if (inet_pton(AF_INET6, txt[k], &v6->sin6_addr) == 1)
				v6->sin6_family = AF_INET6;
			conn_src_of(&sa[k], &src[k]);
		}
		CHECK(conn_src_eq(&src[0], &src[1]) == t[i].same, "source of %s and %s: %s", t[i].a,
		      t[i].b, t[i].same ? "the same" : "different");
	}
}

/* New connections go to the loop that owns the fewest: four connections on two loops are
 * two each, and each is served by its own loop. */
static void test_loop_spread(struct tloop *l, const char *ca)
{
	struct kc c[4];
	int n = 0;
	for (int i = 0; i < 4; i++)
		n += kc_connect(&c[i], "127.0.0.1", l->port, ca, NULL, NULL) == 0;
	CHECK(n == 4 && tl_wait_nconn(l, 4, 2000), "loop (%s): four connections open", l->name);
	int own0 = __atomic_load_n(&l->srv.loops[l->srv.serve].nown, __ATOMIC_SEQ_CST);
	int own1 = __atomic_load_n(&l->srv.loops[l->srv.serve + 1].nown, __ATOMIC_SEQ_CST);
	CHECK(own0 == 2 && own1 == 2, "loop (%s): two connections on each loop (%d, %d)", l->name,
	      own0, own1);
	int ok = 0;
	for (int i = 0; i < 4; i++) {
		uint8_t resp[1024];
		long r = c[i].fd >= 0 ? kc_roundtrip(&c[i], tl_discover, sizeof tl_discover, resp,
						     sizeof resp) : -1;
		ok += r > 0 && memmem(resp, (size_t)r, tl_success, sizeof tl_success) != NULL;
	}
	CHECK(ok == 4, "loop (%s): each of the four answered (%d)", l->name, ok);
	for (int i = 0; i < 4; i++)
		kc_close(&c[i]);
	CHECK(tl_wait_nconn(l, 0, 2000), "loop (%s): all four closed", l->name);
}

/* One loop with poll() doing everything (workers = 0), one loop with epoll, and two loops
 * with each (the burst test needs both clients on one loop). */
static void test_loop(struct tls_server *tls, const char *ca)
{
	static const struct { int nloops, threads, epoll; } runs[] = {
		{ 1, 0, 0 }, { 1, 1, 1 }, { 2, 1, 1 }, { 2, 1, 0 } };
	test_loop_sources();
	for (size_t i = 0; i < ARRAY_LEN(runs); i++) {
		struct tloop l;
		if (tl_start(&l, tls, runs[i].nloops, runs[i].threads, runs[i].epoll) != 0) {
			CHECK(0, "loop: start %d loop(s), epoll %d", runs[i].nloops, runs[i].epoll);
			return;
		}
		test_loop_cut_off(&l, ca);
		test_loop_poll_errors(&l, ca);
		if (runs[i].nloops == 1)
			test_loop_burst(&l, ca);
		else
			test_loop_spread(&l, ca);
		tl_stop(&l);
	}
}

static int make_files(void)
{
	return run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 "
	           "-nodes -keyout ec.key -out ec.pem -subj /CN=configured -days 2 "
	           "-addext subjectAltName=IP:127.0.0.1,DNS:localhost") |
	       run("openssl x509 -in ec.pem -outform DER -out ec.der && "
	           "openssl pkey -in ec.key -outform DER -out ec.key.der") |
	       run("openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key "
	           "-out rsa.pem -subj /CN=rsa -days 2 -addext subjectAltName=IP:127.0.0.1") |
	       run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	           "-nodes -keyout ca.key -out ca.pem -subj /CN=test-ca -days 2") |
	       run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	           "-keyout cl.key -out cl.csr -subj /CN=client1 && "
	           "printf 'extendedKeyUsage=clientAuth\\n' > cl.ext && "
	           "openssl x509 -req -in cl.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	           "-out cl.pem -days 2 -extfile cl.ext") |
	       run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	           "-nodes -keyout rogue.key -out rogue.pem -subj /CN=rogue -days 2");
}

int main(void)
{
	char cert_pem[PATH_MAX], state[PATH_MAX], err[512] = "";
	struct tls_server s;
	struct tls_opts o = { 0 };
	struct tsrv ts;

	log_state.level = LV_WARNING;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/k2ptls.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	int have_openssl = have_exe("/usr/bin/openssl") && make_files() == 0;
	CHECK(have_openssl, "openssl CLI made the test certificates");

	test_self_signed(cert_pem);

	path_in(state, "state");
	o.state_dir = state;
	o.listen_host = "127.0.0.1";
	CHECK(tls_server_init(&s, &o, err, sizeof err) == 0, "server init: %s", err);
	CHECK(ts_start(&ts, &s, 4096) == 0, "echo server on 127.0.0.1:%d", ts.port);
	test_echo(&ts, cert_pem);
	test_refusals(&ts, cert_pem);
	test_python(&ts, cert_pem);
	test_threads(&ts, cert_pem);
	test_memory(&ts, cert_pem);
	ts_stop(&ts);
	test_loop(&s, cert_pem);
	tls_server_free(&s);

	if (have_openssl) {
		test_configured();
		test_client_certs(state);
	}

	mbedtls_psa_crypto_free();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		printf("could not remove %s\n", tmpdir);
	return check_summary();
}
