/*
 * kclient.h - a small blocking TLS 1.3 KMIP client for the tests and the benchmark.
 *
 * Header-only, independent of the daemon's code (only Mbed TLS and POSIX).  One struct kc
 * is one connection with its own Mbed TLS configuration and certificates, so threads may
 * each use their own struct kc without locking; random numbers come from PSA's DRBG,
 * which Mbed TLS guards with its own mutex (MBEDTLS_THREADING_C), and PSA is initialised
 * once per process (pthread_once).
 *
 *   struct kc c;
 *   if (kc_connect(&c, "127.0.0.1", 5696, "cert.pem", NULL, NULL) != 0)
 *           fprintf(stderr, "%s\n", c.err);
 *   long n = kc_roundtrip(&c, req, req_len, resp, sizeof resp);
 *   kc_close(&c);
 *
 * Every function returns 0 / a length on success and -1 on failure, with a message in
 * c.err and the Mbed TLS or errno-derived code in c.ret.
 */
#ifndef K2P_KCLIENT_H
#define K2P_KCLIENT_H

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/psa_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>

struct kc_opts {
	int tls12_only;               /* offer TLS 1.2 only (the refusal test) */
	int timeout_ms;               /* send/receive timeout; 0: 30 s */
	const char *server_name;      /* name checked against the certificate; NULL: host.
	                                 Only used when a CA file is given. */
};

struct kc {
	int fd;
	int ready;                    /* the Mbed TLS structures are initialised */
	int ret;                      /* last Mbed TLS error (negative) or 0 */
	char err[256];
	mbedtls_ssl_context ssl;
	mbedtls_ssl_config conf;
	mbedtls_x509_crt ca, cert;
	mbedtls_pk_context key;
};

static pthread_once_t kc_psa_once = PTHREAD_ONCE_INIT;
static psa_status_t kc_psa_status;

static void kc_psa_init(void)
{
	kc_psa_status = psa_crypto_init();
}

static void kc_fail(struct kc *c, int ret, const char *what)
{
	char msg[160] = "";
	c->ret = ret;
	if (ret != 0) {
		mbedtls_strerror(ret, msg, sizeof msg);
		snprintf(c->err, sizeof c->err, "%s: %s (-0x%04X)", what, msg, (unsigned)-ret);
	} else {
		snprintf(c->err, sizeof c->err, "%s", what);
	}
}

/* Blocking socket with SO_RCVTIMEO / SO_SNDTIMEO: EAGAIN here means the time-out hit. */
static int kc_bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	for (;;) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_TIMEOUT;
		if (errno == EPIPE || errno == ECONNRESET)
			return MBEDTLS_ERR_NET_CONN_RESET;
		return MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

static int kc_bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	for (;;) {
		ssize_t n = recv(fd, buf, len, 0);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_TIMEOUT;
		if (errno == ECONNRESET)
			return MBEDTLS_ERR_NET_CONN_RESET;
		return MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

static void kc_close(struct kc *c)
{
	if (c->ready) {
		if (c->fd >= 0)
			(void)mbedtls_ssl_close_notify(&c->ssl);
		mbedtls_ssl_free(&c->ssl);
		mbedtls_ssl_config_free(&c->conf);
		mbedtls_x509_crt_free(&c->ca);
		mbedtls_x509_crt_free(&c->cert);
		mbedtls_pk_free(&c->key);
		c->ready = 0;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int kc_tcp_connect(struct kc *c, const char *host, int port, int timeout_ms)
{
	struct addrinfo hints, *res = NULL, *ai;
	char portstr[16];
	struct timeval tv;
	int one = 1, rc;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof portstr, "%d", port);
	if ((rc = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		snprintf(c->err, sizeof c->err, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (c->fd < 0)
			continue;
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		snprintf(c->err, sizeof c->err, "connect %s:%d: %s", host, port, strerror(errno));
		close(c->fd);
		c->fd = -1;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		return -1;
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return 0;
}

/* Connect and finish the TLS handshake.  ca_pem: verify the server against this file
 * (PEM or DER) including its name; NULL: no verification.  client_cert / client_key:
 * present a client certificate (both or neither). */
static int kc_connect_opts(struct kc *c, const char *host, int port, const char *ca_pem,
                           const char *client_cert, const char *client_key,
                           const struct kc_opts *o)
{
	static const struct kc_opts dflt = { 0, 0, NULL };
	int ret;

	if (o == NULL)
		o = &dflt;
	memset(c, 0, sizeof *c);
	c->fd = -1;
	pthread_once(&kc_psa_once, kc_psa_init);
	if (kc_psa_status != PSA_SUCCESS) {
		kc_fail(c, 0, "psa_crypto_init failed");
		return -1;
	}
	mbedtls_ssl_init(&c->ssl);
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_x509_crt_init(&c->ca);
	mbedtls_x509_crt_init(&c->cert);
	mbedtls_pk_init(&c->key);
	c->ready = 1;

	if ((ret = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
	                                       MBEDTLS_SSL_TRANSPORT_STREAM,
	                                       MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		kc_fail(c, ret, "ssl_config_defaults");
		goto fail;
	}
	mbedtls_ssl_conf_rng(&c->conf, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
	if (o->tls12_only) {
		mbedtls_ssl_conf_min_tls_version(&c->conf, MBEDTLS_SSL_VERSION_TLS1_2);
		mbedtls_ssl_conf_max_tls_version(&c->conf, MBEDTLS_SSL_VERSION_TLS1_2);
	} else {
		mbedtls_ssl_conf_min_tls_version(&c->conf, MBEDTLS_SSL_VERSION_TLS1_3);
		mbedtls_ssl_conf_max_tls_version(&c->conf, MBEDTLS_SSL_VERSION_TLS1_3);
	}
	if (ca_pem != NULL) {
		if ((ret = mbedtls_x509_crt_parse_file(&c->ca, ca_pem)) != 0) {
			kc_fail(c, ret, ca_pem);
			goto fail;
		}
		mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	} else {
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
	}
	if (client_cert != NULL && client_key != NULL) {
		if ((ret = mbedtls_x509_crt_parse_file(&c->cert, client_cert)) != 0) {
			kc_fail(c, ret, client_cert);
			goto fail;
		}
		if ((ret = mbedtls_pk_parse_keyfile(&c->key, client_key, NULL,
		                                    mbedtls_psa_get_random,
		                                    MBEDTLS_PSA_RANDOM_STATE)) != 0) {
			kc_fail(c, ret, client_key);
			goto fail;
		}
		if ((ret = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key)) != 0) {
			kc_fail(c, ret, "ssl_conf_own_cert");
			goto fail;
		}
	}
	if ((ret = mbedtls_ssl_setup(&c->ssl, &c->conf)) != 0) {
		kc_fail(c, ret, "ssl_setup");
		goto fail;
	}
	/* Mbed TLS 3.6 refuses to verify without a name; NULL says "no name check" on
	 * purpose, as PyKMIP does when no CA file is used. */
	if ((ret = mbedtls_ssl_set_hostname(&c->ssl, ca_pem == NULL ? NULL :
	                                    o->server_name ? o->server_name : host)) != 0) {
		kc_fail(c, ret, "ssl_set_hostname");
		goto fail;
	}
	if (kc_tcp_connect(c, host, port, o->timeout_ms > 0 ? o->timeout_ms : 30000) != 0) {
		c->ret = 0;
		goto fail;
	}
	mbedtls_ssl_set_bio(&c->ssl, (void *)(intptr_t)c->fd, kc_bio_send, kc_bio_recv, NULL);
	while ((ret = mbedtls_ssl_handshake(&c->ssl)) != 0) {
		if (ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE) {
			kc_fail(c, ret, "handshake");
			goto fail;
		}
	}
	return 0;
fail:
	ret = c->ret;
	if (c->fd >= 0) {                 /* no close_notify on a failed handshake */
		close(c->fd);
		c->fd = -1;
	}
	kc_close(c);
	c->ret = ret;
	return -1;
}

static int kc_connect(struct kc *c, const char *host, int port, const char *ca_pem,
                      const char *client_cert, const char *client_key)
{
	return kc_connect_opts(c, host, port, ca_pem, client_cert, client_key, NULL);
}

static int kc_send(struct kc *c, const uint8_t *msg, size_t n)
{
	while (n > 0) {
		int ret = mbedtls_ssl_write(&c->ssl, msg, n);
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (ret < 0) {
			kc_fail(c, ret, "write");
			return -1;
		}
		msg += ret;
		n -= (size_t)ret;
	}
	return 0;
}

/* Exactly n bytes, or -1 (EOF counts as failure: a message was expected). */
static int kc_read_full(struct kc *c, uint8_t *buf, size_t n)
{
	while (n > 0) {
		int ret = mbedtls_ssl_read(&c->ssl, buf, n);
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
		if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
			continue;
#endif
		if (ret == 0) {
			kc_fail(c, MBEDTLS_ERR_SSL_CONN_EOF, "read");
			return -1;
		}
		if (ret < 0) {
			kc_fail(c, ret, "read");
			return -1;
		}
		buf += ret;
		n -= (size_t)ret;
	}
	return 0;
}

/* One TTLV message: the 8-byte header (tag 3, type 1, length 4, big-endian), then
 * length bytes.  Returns the whole message's length (8 + length), or -1 when it does
 * not fit in cap or the connection fails. */
static long kc_recv(struct kc *c, uint8_t *buf, size_t cap)
{
	uint32_t len;
	if (cap < 8) {
		kc_fail(c, 0, "receive buffer smaller than a TTLV header");
		return -1;
	}
	if (kc_read_full(c, buf, 8) != 0)
		return -1;
	len = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
	if (len > cap - 8) {
		snprintf(c->err, sizeof c->err, "response of %lu bytes does not fit in %zu",
		         (unsigned long)len + 8, cap);
		c->ret = 0;
		return -1;
	}
	if (kc_read_full(c, buf + 8, len) != 0)
		return -1;
	return (long)len + 8;
}

static long kc_roundtrip(struct kc *c, const uint8_t *req, size_t n, uint8_t *resp,
                         size_t cap)
{
	if (kc_send(c, req, n) != 0)
		return -1;
	return kc_recv(c, resp, cap);
}

#endif /* K2P_KCLIENT_H */
