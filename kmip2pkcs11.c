/*
 * kmip2pkcs11 - a KMIP 1.2 server over TLS 1.3 that serves keys from any PKCS#11 module.
 *
 * One translation unit, in numbered sections; each uses only what stands above it.
 *
 *    1. Utilities and logging
 *    2. Buffers
 *    3. TTLV codec
 *    4. KMIP vocabulary and messages
 *    5. Configuration and command line
 *    6. PKCS#11
 *    7. Operations
 *    8. Workers
 *    9. TLS
 *   10. Connections and the event loop
 *   11. Daemon and main
 *
 * SPDX-License-Identifier: BSD-3-Clause
 */
#define _GNU_SOURCE 1

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/psa_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>

#if defined(K2P_TEST_NO_THREADING)     /* tests: the daemon as built on an Mbed TLS */
#undef MBEDTLS_THREADING_C              /* without threads (tests/service.sh) */
#endif

#if defined(K2P_STATIC_MBEDTLS) && !defined(K2P_MBEDTLS_CONFIG)
#error "static build is not using build/mbedtls-static/include (dist/mbedtls-config.h)"
#endif

#include "pkcs11/pkcs11.h"

#ifndef K2P_VERSION
#define K2P_VERSION "0.1.0"
#endif

/* ==== 1. Utilities and logging ============================================ */

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#define PRINTF_LIKE(f, a)
#endif

enum { LV_ERROR, LV_WARNING, LV_INFO, LV_DEBUG, LV_TRACE };

static const char *const log_level_names[] = { "error", "warning", "info", "debug", "trace" };

enum { LOG_TO_STDERR, LOG_TO_SYSLOG, LOG_TO_FILE };

/* The longest message: a trace dump of a request (section 7) with its first line. */
#define LOG_LINE_MAX 17408

static struct {
	int level;              /* messages above this level are dropped */
	int target;             /* LOG_TO_* */
	FILE *file;             /* LOG_TO_FILE */
	int journal;            /* stderr is journald's stream: -1 not yet known, 0 no, 1 yes */
} log_state = { LV_INFO, LOG_TO_STDERR, NULL, -1 };

/* Level name to LV_*, or -1.  "warn" is accepted beside the original's "warning". */
static int log_level_parse(const char *s)
{
	for (size_t i = 0; i < ARRAY_LEN(log_level_names); i++)
		if (strcmp(s, log_level_names[i]) == 0)
			return (int)i;
	if (strcmp(s, "warn") == 0)
		return LV_WARNING;
	return -1;
}

/*
 * systemd connects a service's stderr to journald and says so in JOURNAL_STREAM,
 * "DEVICE:INODE" of that stream (systemd.exec(5)); a stderr that someone redirected since
 * no longer matches.  On the journal's stream journald stamps each line itself, and reads
 * its priority from a "<N>" prefix (sd-daemon(3)).
 */
static int log_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	char tail;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* One message at level lv, whatever the configured level. */
static void log_vemit(int lv, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);
static void log_vemit(int lv, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };
	static __thread char line[LOG_LINE_MAX];
	static __thread time_t when_sec = -1;
	static __thread char when[24];

	FILE *f = NULL;
	int journal = 0;
	size_t h = 0;
	if (log_state.target != LOG_TO_SYSLOG) {
		f = log_state.target == LOG_TO_FILE && log_state.file ? log_state.file : stderr;
		if (f == stderr) {
			journal = __atomic_load_n(&log_state.journal, __ATOMIC_RELAXED);
			if (journal < 0) {
				journal = log_stderr_is_journal();
				__atomic_store_n(&log_state.journal, journal, __ATOMIC_RELAXED);
			}
		}
	}
	if (f && !journal) {    /* the date is formatted once a second */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		if (ts.tv_sec != when_sec) {
			struct tm tm;
			gmtime_r(&ts.tv_sec, &tm);
			strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
			when_sec = ts.tv_sec;
		}
		h = (size_t)snprintf(line, 64, "%s.%03ldZ [%s] ", when, ts.tv_nsec / 1000000L,
				     log_level_names[lv]);
	}
	size_t cap = sizeof line - h - 1;       /* room for the newline */
	int n = vsnprintf(line + h, cap, fmt, ap);
	size_t len = n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
	if (!f) {
		syslog(prio[lv], "%s", line);
		return;
	}
	if (journal) {  /* every line of a dump gets the priority, or journald uses its own */
		const char *p = line;
		flockfile(f);
		fprintf(f, "<%d>[%s] ", prio[lv], log_level_names[lv]);
		for (const char *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1)
			fprintf(f, "%.*s\n<%d>", (int)(nl - p), p, prio[lv]);
		fprintf(f, "%s\n", p);
		fflush(f);
		funlockfile(f);
		return;
	}
	line[h + len] = '\n';  /* one write per line: lines of threads never mix */
	fwrite(line, 1, h + len + 1, f);
	fflush(f);
}

static void log_vmsg(int lv, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);
static void log_vmsg(int lv, const char *fmt, va_list ap)
{
	if (lv <= log_state.level)
		log_vemit(lv, fmt, ap);
}

/* What an operator asked for (SIGUSR1): at info, even when the level is lower. */
static void log_report(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void log_report(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vemit(LV_INFO, fmt, ap);
	va_end(ap);
}

static void log_msg(int lv, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void log_msg(int lv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(lv, fmt, ap);
	va_end(ap);
}

#define log_error(...) log_msg(LV_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LV_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg(LV_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LV_DEBUG, __VA_ARGS__)
#define log_trace(...) log_msg(LV_TRACE, __VA_ARGS__)

static char log_path[PATH_MAX];
/* The log file's directory, opened before chroot, and the file's name in it: SIGHUP
 * reopens the same file after chroot; -1 when the path could not be split. */
static int log_dirfd = -1;
static char log_name[NAME_MAX + 1];

/* SIGHUP: a rotated log file is reopened under its name.  Other threads may be writing to the
 * stream at this moment, so the stream stays and only the descriptor under it is
 * replaced (dup2 is atomic). */
static void log_reopen(void)
{
	if (log_state.target != LOG_TO_FILE)
		return;
	int fd = log_dirfd >= 0 ?
		openat(log_dirfd, log_name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640) :
		open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_msg(LV_ERROR, "cannot reopen log file %s: %s", log_path, strerror(errno));
		return;
	}
	fflush(log_state.file);
	dup2(fd, fileno(log_state.file));
	close(fd);
	log_msg(LV_INFO, "log file reopened");
}

/* Start-up, configuration and broken invariants only: never for peer input. */
static void fatal(const char *fmt, ...) PRINTF_LIKE(1, 2) NORETURN;
static void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LV_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

/*
 * The service manager's notification socket (sd_notify(3)'s protocol, written here so that
 * no libsystemd is needed): NOTIFY_SOCKET names an AF_UNIX datagram socket, a path or, with
 * a leading '@', an abstract name.  Each message is one datagram of "KEY=value" lines.
 * notify_init reads and removes the variable (a module must not inherit it); without it
 * notify_send does nothing.  Main thread only.
 */
static struct {
	int fd;
	struct sockaddr_un sa;
	socklen_t salen;
} notify = { -1, { 0 }, 0 };

static int notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n = e ? strlen(e) : 0;

	if (n == 0)
		return 0;
	if ((e[0] != '/' && e[0] != '@') || n >= sizeof notify.sa.sun_path) {
		unsetenv("NOTIFY_SOCKET");
		return -1;
	}
	notify.sa.sun_family = AF_UNIX;
	memcpy(notify.sa.sun_path, e, n);
	if (e[0] == '@')
		notify.sa.sun_path[0] = '\0';
	notify.salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	notify.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	unsetenv("NOTIFY_SOCKET");
	return notify.fd < 0 ? -1 : 1;
}

static void notify_send(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void notify_send(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (notify.fd < 0)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof msg)
		return;
	while (sendto(notify.fd, msg, (size_t)n, MSG_NOSIGNAL,
	              (const struct sockaddr *)&notify.sa, notify.salen) < 0 && errno == EINTR)
		;
}

static void wipe(void *p, size_t n)
{
	mbedtls_platform_zeroize(p, n);
}

/* 1 if equal; time depends on n only. */
static int ct_equal(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;
	for (size_t i = 0; i < n; i++)
		d |= (uint8_t)(x[i] ^ y[i]);
	return d == 0;
}

/* Upper-case hex of n bytes: 2n characters and a NUL into dst. */
static void hex_upper(char *dst, const uint8_t *src, size_t n)
{
	static const char digits[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = digits[src[i] >> 4];
		dst[2 * i + 1] = digits[src[i] & 15];
	}
	dst[2 * n] = '\0';
}

static int hex_digit(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* Hex (either case, even length) to bytes: the count, or -1 on a bad digit or no room. */
static int hex_parse(uint8_t *dst, size_t cap, const char *src, size_t n)
{
	if (n % 2 != 0 || n / 2 > cap || n / 2 > INT_MAX)
		return -1;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hex_digit((unsigned char)src[i]), lo = hex_digit((unsigned char)src[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		dst[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(n / 2);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * A value a peer chose (username, UID) as one word of a log line: bytes outside printable
 * ASCII, and the blank, quote, backslash, '=' and ',' that delimit fields, become \xNN, so
 * that no peer can forge a field or a line.  quoted: the value goes between double quotes,
 * where blanks, '=' and ',' may stay.  Cut (NUL-terminated) when dst is full; "-" stands
 * for nothing.
 */
static void log_word(char *dst, size_t cap, const uint8_t *s, size_t n, int quoted)
{
	size_t o = 0;
	if (cap == 0)
		return;
	if (n == 0 && cap > 1 && !quoted)
		dst[o++] = '-';
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\' &&
		    (quoted || (c != ' ' && c != '=' && c != ','))) {
			if (o + 1 >= cap)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= cap)
				break;
			snprintf(dst + o, 5, "\\x%02x", c);
			o += 4;
		}
	}
	dst[o] = '\0';
}

/* ---- counters, for the line SIGUSR1 asks for ---------------------------- */

/* Counters are bumped by any thread and read by the one that reports them; relaxed
 * atomics suffice, as no counter orders anything else. */
static void stat_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t stat_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/*
 * Request latency in microseconds, in a fixed log-scale histogram: values below 8 have a
 * bucket each, every power of two above is split in four, so a bucket's upper bound is at
 * most 25 % above any value in it.  The 252 buckets reach 2^64 us.
 */
#define HIST_BUCKETS 252

static uint64_t hist_req[HIST_BUCKETS];

static unsigned hist_bucket(uint64_t us)
{
	if (us < 8)
		return (unsigned)us;
	unsigned msb = 63u - (unsigned)__builtin_clzll(us);        /* 3 and up */
	return 4u * (msb - 1u) + (unsigned)((us >> (msb - 2u)) & 3u);
}

/* The largest value that falls into bucket b. */
static uint64_t hist_upper(unsigned b)
{
	if (b < 8)
		return b;
	unsigned msb = b / 4u + 1u, sub = b % 4u;
	if (msb >= 63u && sub == 3u)
		return UINT64_MAX;
	return ((uint64_t)(5u + sub) << (msb - 2u)) - 1u;
}

static void hist_add(uint64_t us)
{
	stat_add(&hist_req[hist_bucket(us)], 1);
}

/* The upper bound of the bucket that holds the value of rank ceil(q * count) (nearest
 * rank), 0 with no values.  q in (0, 1]. */
static uint64_t hist_quantile(const uint64_t hist[HIST_BUCKETS], double q)
{
	uint64_t total = 0, seen = 0;
	for (unsigned b = 0; b < HIST_BUCKETS; b++)
		total += hist[b];
	if (total == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)total);
	if ((double)rank < q * (double)total)
		rank++;
	if (rank == 0)
		rank = 1;
	for (unsigned b = 0; b < HIST_BUCKETS; b++) {
		seen += hist[b];
		if (seen >= rank)
			return hist_upper(b);
	}
	return hist_upper(HIST_BUCKETS - 1);
}

/* ==== 2. Buffers ========================================================== */

/*
 * Every read of bytes that came from a peer goes through buf_has(): the one bounds check,
 * written so that neither the comparison nor the subtraction can overflow or wrap, even
 * when a cursor was pushed past its end by a bug elsewhere.  Readers (struct buf_rd) take
 * bytes from a [p, end) window; a nested structure gets its own window, never the outer
 * one.  Writers check room with buf_room() before touching memory.
 */

/* 1 if `need` bytes are readable at p before end. */
static int buf_has(const uint8_t *p, const uint8_t *end, size_t need)
{
	if (p > end || need > (size_t)(end - p))
		return 0;
	return 1;
}

/* 1 if `need` more bytes fit after `len` in a buffer of `cap` bytes. */
static int buf_room(size_t cap, size_t len, size_t need)
{
	if (len > cap || need > cap - len)
		return 0;
	return 1;
}

static uint32_t buf_be24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static uint32_t buf_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t buf_be64(const uint8_t *p)
{
	return (uint64_t)buf_be32(p) << 32 | buf_be32(p + 4);
}

static void buf_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void buf_put_be64(uint8_t *p, uint64_t v)
{
	buf_put_be32(p, (uint32_t)(v >> 32));
	buf_put_be32(p + 4, (uint32_t)v);
}

/* A read cursor over peer bytes. */
struct buf_rd {
	const uint8_t *p, *end;
};

static void buf_rd_init(struct buf_rd *r, const uint8_t *p, size_t n)
{
	r->p = p;
	r->end = p + n;
}

/* Bytes left to read (0 for a broken cursor). */
static size_t buf_rd_left(const struct buf_rd *r)
{
	return r->p > r->end ? 0 : (size_t)(r->end - r->p);
}

/* The next n bytes, advancing the cursor; NULL (cursor unchanged) if they are not there. */
static const uint8_t *buf_take(struct buf_rd *r, size_t n)
{
	const uint8_t *q = r->p;
	if (!buf_has(r->p, r->end, n))
		return NULL;
	r->p += n;
	return q;
}

/*
 * The little DER the daemon writes: SubjectPublicKeyInfo and PKCS#1 RSAPublicKey for Get,
 * and the ECDSA-Sig-Value SEQUENCE { INTEGER r, INTEGER s } for Sign (X.690 8.1, 8.3).
 * Lengths are known before the content is written, so everything goes forwards; a writer
 * that runs out of room sets err and writes nothing more.
 */
struct der {
	uint8_t *p;
	size_t cap, len;
	int err;
};

/* Header bytes for a content of n bytes (definite form, at most 4 length octets). */
static size_t der_hdr_len(size_t n)
{
	return n < 0x80 ? 2 : n < 0x100 ? 3 : n < 0x10000 ? 4 : 5;
}

static void der_bytes(struct der *d, const uint8_t *b, size_t n)
{
	if (d->err || !buf_room(d->cap, d->len, n)) {
		d->err = 1;
		return;
	}
	if (n)
		memcpy(d->p + d->len, b, n);
	d->len += n;
}

static void der_hdr(struct der *d, uint8_t tag, size_t n)
{
	uint8_t h[5];
	size_t k = der_hdr_len(n);
	h[0] = tag;
	if (k == 2) {
		h[1] = (uint8_t)n;
	} else {
		h[1] = (uint8_t)(0x80 | (k - 2));
		for (size_t i = 0; i < k - 2; i++)
			h[k - 1 - i] = (uint8_t)(n >> (8 * i));
	}
	der_bytes(d, h, k);
}

/* Content length of a non-negative INTEGER of magnitude mag: leading zeros dropped, one
 * 0x00 put back before a first byte >= 0x80 (X.690 8.3.2: minimal). */
static size_t der_uint_content(const uint8_t **mag, size_t *n)
{
	while (*n > 1 && (*mag)[0] == 0) {
		(*mag)++;
		(*n)--;
	}
	if (*n == 0)
		return 1;
	return *n + ((*mag)[0] & 0x80 ? 1 : 0);
}

/* Whole encoded size of that INTEGER. */
static size_t der_uint_size(const uint8_t *mag, size_t n)
{
	size_t c = der_uint_content(&mag, &n);
	return der_hdr_len(c) + c;
}

static void der_uint(struct der *d, const uint8_t *mag, size_t n)
{
	static const uint8_t zero = 0;
	size_t c = der_uint_content(&mag, &n);
	der_hdr(d, 0x02, c);
	if (n == 0 || mag[0] & 0x80)
		der_bytes(d, &zero, 1);
	der_bytes(d, mag, n);
}

/* SEQUENCE { INTEGER a, INTEGER b }: RSAPublicKey (n, e) and ECDSA-Sig-Value (r, s). */
static void der_uint_pair(struct der *d, const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	der_hdr(d, 0x30, der_uint_size(a, an) + der_uint_size(b, bn));
	der_uint(d, a, an);
	der_uint(d, b, bn);
}

/* SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
 * with the AlgorithmIdentifier given as its whole DER (a constant per key type). */
static void der_spki(struct der *d, const uint8_t *alg, size_t alg_len, const uint8_t *key, size_t key_len)
{
	static const uint8_t unused_bits = 0;
	size_t bits = der_hdr_len(key_len + 1) + key_len + 1;
	der_hdr(d, 0x30, alg_len + bits);
	der_bytes(d, alg, alg_len);
	der_hdr(d, 0x03, key_len + 1);
	der_bytes(d, &unused_bits, 1);
	der_bytes(d, key, key_len);
}
/* ==== 3. TTLV codec ======================================================= */

/*
 * KMIP 1.2 section 9.1.1, Tag-Type-Length-Value encoding:
 *
 *   Tag (3 bytes) | Type (1 byte) | Length (4 bytes) | Value (Length bytes) | padding
 *
 *   all big-endian; Tag 0x42XXXX (defined) or 0x54XXXX (extensions);
 *   01 Structure       Length = everything inside, padding included
 *   02 Integer         4 bytes, signed, + 4 padding bytes not counted in Length
 *   03 Long Integer    8 bytes, signed
 *   04 Big Integer     two's complement, sign-extended to a multiple of 8 (counted)
 *   05 Enumeration     4 bytes, unsigned, + 4 padding
 *   06 Boolean         8 bytes, 0 or 1
 *   07 Text String     UTF-8, padded with zeros to a multiple of 8 (not counted)
 *   08 Byte String     padded with zeros to a multiple of 8 (not counted)
 *   09 Date-Time       8 bytes, signed POSIX seconds
 *   0A Interval        4 bytes, unsigned seconds, + 4 padding
 *
 * The decoder is strict: it accepts exactly the encodings that the encoder produces, so a
 * decoded message re-encodes byte for byte.  In particular padding bytes must be zero: the
 * specification says they are zero, no known client sends anything else, and accepting
 * junk there would let two different byte strings mean the same message.
 *
 * Decoding fills a caller-provided array of struct ttlv in document (pre-)order; every item
 * points into the input, nothing is copied or allocated.
 */

enum {
	TT_STRUCT = 1, TT_INT, TT_LONG, TT_BIGINT, TT_ENUM, TT_BOOL, TT_TEXT, TT_BYTES,
	TT_DATETIME, TT_INTERVAL
};

#define TTLV_HDR 8
#define TTLV_MAX_DEPTH 32          /* hard ceiling: encoder stack, decoder recursion */
#define TTLV_DEFAULT_DEPTH 16      /* KMIP 1.2 messages nest 9 deep at most in practice */
#define TTLV_MAX_ITEMS 4096        /* a sensible size for a caller's item array */

struct ttlv {                /* one decoded item; points into the input, no copy */
	uint32_t tag;            /* 24 bits */
	uint8_t  type;           /* TT_* */
	uint32_t len;            /* value length as in the header */
	const uint8_t *val;      /* value bytes (len of them) */
	int64_t  num;            /* Integer, Long, Enumeration(unsigned), Boolean, Date-Time, Interval */
	int32_t  child, next;    /* index of first child / next sibling in doc->it, -1 none */
	uint16_t depth;          /* root 0 */
};

struct ttlv_doc {            /* it[0] is the root */
	struct ttlv *it;
	int n, cap;
};

#define TTLV_ERRORS(X) \
	X(TTLV_NEED_MORE,      -1, "need more bytes") \
	X(TTLV_E_TRUNCATED,    -2, "message shorter than its length says") \
	X(TTLV_E_TRAILING,     -3, "bytes after the end of the message") \
	X(TTLV_E_TAG,          -4, "tag does not start with 0x42 or 0x54") \
	X(TTLV_E_TYPE,         -5, "unknown item type") \
	X(TTLV_E_LENGTH,       -6, "wrong length for a fixed-size type") \
	X(TTLV_E_PADDING,      -7, "nonzero padding byte") \
	X(TTLV_E_BIGINT,       -8, "Big Integer length not a positive multiple of 8") \
	X(TTLV_E_BOOL,         -9, "Boolean neither 0 nor 1") \
	X(TTLV_E_TEXT_NUL,    -10, "NUL character in a Text String") \
	X(TTLV_E_UTF8,        -11, "Text String is not valid UTF-8") \
	X(TTLV_E_DEPTH,       -12, "structures nested too deeply") \
	X(TTLV_E_COUNT,       -13, "too many items") \
	X(TTLV_E_OVERRUN,     -14, "item runs past the end of its structure") \
	X(TTLV_E_STRUCT_LEN,  -15, "Structure length not a multiple of 8") \
	X(TTLV_E_NOT_STRUCT,  -16, "message is not a Structure") \
	X(TTLV_E_TOO_BIG,     -17, "message length not representable")

enum {
#define X(name, val, msg) name = val,
	TTLV_ERRORS(X)
#undef X
};

static const char *ttlv_strerror(int err)
{
	switch (err) {
	case 0: return "ok";
#define X(name, val, msg) case name: return msg;
	TTLV_ERRORS(X)
#undef X
	}
	return "unknown TTLV error";
}

/* Padding after a value of n bytes, to the next multiple of 8. */
static size_t ttlv_pad(size_t n)
{
	return (8 - (n & 7)) & 7;
}

static int ttlv_tag_ok(const uint8_t *p)
{
	return p[0] == 0x42 || p[0] == 0x54;
}

/*
 * Framing: how many bytes the message that starts at p needs (8 + Length of the outer
 * Structure), from its 8-byte header, so that the caller can refuse an oversize message
 * before buffering it.  TTLV_NEED_MORE until 8 bytes are there; a negative error as soon as
 * the bytes seen cannot start a message.
 */
static long ttlv_frame(const uint8_t *p, size_t n)
{
	if (n >= 1 && p[0] != 0x42 && p[0] != 0x54)
		return TTLV_E_TAG;
	if (n >= 4 && p[3] != TT_STRUCT)
		return p[3] >= TT_STRUCT && p[3] <= TT_INTERVAL ? TTLV_E_NOT_STRUCT : TTLV_E_TYPE;
	if (n < TTLV_HDR)
		return TTLV_NEED_MORE;
	uint32_t len = buf_be32(p + 4);
	if (len % 8 != 0)
		return TTLV_E_STRUCT_LEN;
#if LONG_MAX < 0xFFFFFFFFL + TTLV_HDR     /* 32-bit long: 8 + Length may not fit */
	if (len > (uint32_t)(LONG_MAX - TTLV_HDR))
		return TTLV_E_TOO_BIG;
#endif
	return (long)len + TTLV_HDR;
}

/*
 * UTF-8 (RFC 3629) without NUL: no stray continuation bytes, no overlong forms, no UTF-16
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no sequence cut short.
 */
static int ttlv_check_utf8(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint8_t lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */
		if (c == 0)
			return TTLV_E_TEXT_NUL;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			k = 1;
		else if (c >= 0xE0 && c <= 0xEF) {
			k = 2;
			if (c == 0xE0) lo = 0xA0;       /* overlong */
			if (c == 0xED) hi = 0x9F;       /* surrogates */
		} else if (c >= 0xF0 && c <= 0xF4) {
			k = 3;
			if (c == 0xF0) lo = 0x90;       /* overlong */
			if (c == 0xF4) hi = 0x8F;       /* above U+10FFFF */
		} else
			return TTLV_E_UTF8;             /* 80..C1 (stray, overlong), F5..FF */
		if (k > n - i - 1)
			return TTLV_E_UTF8;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return TTLV_E_UTF8;
		for (size_t j = 2; j <= k; j++)
			if ((s[i + j] & 0xC0) != 0x80)
				return TTLV_E_UTF8;
		i += k + 1;
	}
	return 0;
}

static int ttlv_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

struct ttlv_dec {
	struct ttlv_doc *d;
	int max_depth;
};

/*
 * Decode the items in [r->p, r->end) as siblings under `parent` (-1 for the top level),
 * at nesting level `depth`.  Each item must fit entirely inside this window: at the top
 * level a short window means a truncated message, inside a Structure an item that
 * overruns its parent.
 */
static int ttlv_dec_seq(struct ttlv_dec *x, struct buf_rd *r, int parent, int depth)
{
	int prev = -1;
	int overrun = parent < 0 ? TTLV_E_TRUNCATED : TTLV_E_OVERRUN;

	while (buf_rd_left(r) > 0) {
		const uint8_t *h = buf_take(r, TTLV_HDR);
		if (h == NULL)
			return overrun;
		if (!ttlv_tag_ok(h))
			return TTLV_E_TAG;
		uint8_t type = h[3];
		uint32_t len = buf_be32(h + 4);
		if (type < TT_STRUCT || type > TT_INTERVAL)
			return TTLV_E_TYPE;

		size_t want = len, pad = 0;      /* bytes of value + padding that follow */
		switch (type) {
		case TT_INT: case TT_ENUM: case TT_INTERVAL:
			if (len != 4) return TTLV_E_LENGTH;
			pad = 4;
			break;
		case TT_LONG: case TT_BOOL: case TT_DATETIME:
			if (len != 8) return TTLV_E_LENGTH;
			break;
		case TT_BIGINT:
			if (len == 0 || len % 8 != 0) return TTLV_E_BIGINT;
			break;
		case TT_STRUCT:
			if (len % 8 != 0) return TTLV_E_STRUCT_LEN;
			break;
		default:         /* Text String, Byte String */
			pad = ttlv_pad(len);
			break;
		}
		const uint8_t *v = buf_take(r, want);
		if (v == NULL)
			return overrun;
		const uint8_t *padding = buf_take(r, pad);
		if (padding == NULL)
			return overrun;
		if (!ttlv_zero(padding, pad))
			return TTLV_E_PADDING;

		if (depth > x->max_depth)
			return TTLV_E_DEPTH;
		struct ttlv_doc *d = x->d;
		if (d->n >= d->cap)
			return TTLV_E_COUNT;
		int idx = d->n++;
		struct ttlv *t = &d->it[idx];
		t->tag = buf_be24(h);
		t->type = type;
		t->len = len;
		t->val = v;
		t->num = 0;
		t->child = t->next = -1;
		t->depth = (uint16_t)(depth - 1);
		if (prev >= 0)
			d->it[prev].next = idx;
		else if (parent >= 0)
			d->it[parent].child = idx;
		prev = idx;

		switch (type) {
		case TT_INT:
			t->num = (int32_t)buf_be32(v);
			break;
		case TT_ENUM: case TT_INTERVAL:
			t->num = buf_be32(v);
			break;
		case TT_LONG: case TT_DATETIME:
			t->num = (int64_t)buf_be64(v);
			break;
		case TT_BOOL: {
			uint64_t b = buf_be64(v);
			if (b > 1)
				return TTLV_E_BOOL;
			t->num = (int64_t)b;
			break;
		}
		case TT_TEXT: {
			int e = ttlv_check_utf8(v, len);
			if (e)
				return e;
			break;
		}
		case TT_STRUCT: {
			struct buf_rd inner;
			buf_rd_init(&inner, v, len);
			int e = ttlv_dec_seq(x, &inner, idx, depth + 1);
			if (e)
				return e;
			break;
		}
		default:
			break;
		}
		if (parent < 0 && buf_rd_left(r) > 0)
			return TTLV_E_TRAILING;
	}
	return 0;
}

/*
 * Decode exactly one item (a whole message) of n bytes into d (d->it and d->cap set by the
 * caller).  max_depth: deepest nesting allowed, the root being level 1; 0 or more than
 * TTLV_MAX_DEPTH means TTLV_MAX_DEPTH.  Returns 0 or a negative TTLV_E_ code; on error d->n
 * tells how far it got and the items must not be used.
 */
static int ttlv_decode(struct ttlv_doc *d, const uint8_t *p, size_t n, int max_depth)
{
	struct ttlv_dec x = { d, max_depth };
	struct buf_rd r;

	if (max_depth <= 0 || max_depth > TTLV_MAX_DEPTH)
		x.max_depth = TTLV_MAX_DEPTH;
	d->n = 0;
	if (n == 0 || p == NULL)
		return TTLV_E_TRUNCATED;
	buf_rd_init(&r, p, n);
	return ttlv_dec_seq(&x, &r, -1, 1);
}

/* First direct child of parent with this tag, or NULL. */
static const struct ttlv *ttlv_find(const struct ttlv_doc *d, const struct ttlv *parent,
                                    uint32_t tag)
{
	if (parent == NULL || parent->type != TT_STRUCT)
		return NULL;
	for (int i = parent->child; i >= 0; i = d->it[i].next)
		if (d->it[i].tag == tag)
			return &d->it[i];
	return NULL;
}

/* ---- encoder ---- */

/*
 * The encoder writes into a fixed buffer.  Every put is all or nothing: if the whole item
 * (header, value, padding) does not fit, nothing is written and e->err is set; once set,
 * every later call does nothing, so a caller checks e->err once at the end.  Structures
 * are opened with a zero Length that ttlv_close() fills in.
 */
struct ttlv_enc {
	uint8_t *p;
	size_t cap, len;
	int err;
	size_t open[TTLV_MAX_DEPTH];
	int depth;
};

/* A point to come back to (e.g. to replace a payload that did not fit by an error).  It
 * holds the error state too: rewinding to a mark taken after an overflow keeps the
 * overflow, so an error once raised stays raised. */
struct ttlv_mark {
	size_t len;
	int depth;
	int err;
};

static void ttlv_enc_init(struct ttlv_enc *e, uint8_t *buf, size_t cap)
{
	e->p = buf;
	e->cap = cap;
	e->len = 0;
	e->err = 0;
	e->depth = 0;
}

static struct ttlv_mark ttlv_enc_mark(const struct ttlv_enc *e)
{
	struct ttlv_mark m = { e->len, e->depth, e->err };
	return m;
}

/* Forget everything written since the mark, and an overflow that happened since. */
static void ttlv_enc_rewind(struct ttlv_enc *e, struct ttlv_mark m)
{
	e->len = m.len;
	e->depth = m.depth;
	e->err = m.err;
}

/* Header + value + zero padding as one unit; pad is counted outside Length. */
static void ttlv_put_raw(struct ttlv_enc *e, uint32_t tag, uint8_t type, const void *val,
                         size_t n, size_t pad)
{
	if (e->err)
		return;
	if (n > UINT32_MAX || !buf_room(e->cap, e->len, TTLV_HDR) ||
	    !buf_room(e->cap, e->len + TTLV_HDR, n) ||
	    !buf_room(e->cap, e->len + TTLV_HDR + n, pad)) {
		e->err = -1;
		return;
	}
	uint8_t *q = e->p + e->len;
	buf_put_be32(q, tag << 8 | type);
	buf_put_be32(q + 4, (uint32_t)n);
	if (n)
		memcpy(q + TTLV_HDR, val, n);
	memset(q + TTLV_HDR + n, 0, pad);
	e->len += TTLV_HDR + n + pad;
}

static void ttlv_open(struct ttlv_enc *e, uint32_t tag)
{
	if (e->err)
		return;
	if (e->depth >= TTLV_MAX_DEPTH) {
		e->err = -1;
		return;
	}
	size_t at = e->len;
	ttlv_put_raw(e, tag, TT_STRUCT, NULL, 0, 0);
	if (e->err)
		return;
	e->open[e->depth++] = at;
}

static void ttlv_close(struct ttlv_enc *e)
{
	if (e->err || e->depth <= 0) {
		if (!e->err)
			e->err = -1;         /* close without open: a bug, reported as overflow */
		return;
	}
	size_t at = e->open[--e->depth];
	size_t n = e->len - at - TTLV_HDR;
	if (n > UINT32_MAX) {
		e->err = -1;
		return;
	}
	buf_put_be32(e->p + at + 4, (uint32_t)n);
}

static void ttlv_put_int(struct ttlv_enc *e, uint32_t tag, int32_t v)
{
	uint8_t b[4];
	buf_put_be32(b, (uint32_t)v);
	ttlv_put_raw(e, tag, TT_INT, b, 4, 4);
}

static void ttlv_put_long(struct ttlv_enc *e, uint32_t tag, int64_t v)
{
	uint8_t b[8];
	buf_put_be64(b, (uint64_t)v);
	ttlv_put_raw(e, tag, TT_LONG, b, 8, 0);
}

static void ttlv_put_enum(struct ttlv_enc *e, uint32_t tag, uint32_t v)
{
	uint8_t b[4];
	buf_put_be32(b, v);
	ttlv_put_raw(e, tag, TT_ENUM, b, 4, 4);
}

static void ttlv_put_bool(struct ttlv_enc *e, uint32_t tag, int v)
{
	uint8_t b[8];
	buf_put_be64(b, v ? 1 : 0);
	ttlv_put_raw(e, tag, TT_BOOL, b, 8, 0);
}

static void ttlv_put_datetime(struct ttlv_enc *e, uint32_t tag, int64_t v)
{
	uint8_t b[8];
	buf_put_be64(b, (uint64_t)v);
	ttlv_put_raw(e, tag, TT_DATETIME, b, 8, 0);
}

static void ttlv_put_interval(struct ttlv_enc *e, uint32_t tag, uint32_t v)
{
	uint8_t b[4];
	buf_put_be32(b, v);
	ttlv_put_raw(e, tag, TT_INTERVAL, b, 4, 4);
}

static void ttlv_put_text(struct ttlv_enc *e, uint32_t tag, const char *s, size_t n)
{
	ttlv_put_raw(e, tag, TT_TEXT, s, n, ttlv_pad(n));
}

static void ttlv_put_bytes(struct ttlv_enc *e, uint32_t tag, const uint8_t *b, size_t n)
{
	ttlv_put_raw(e, tag, TT_BYTES, b, n, ttlv_pad(n));
}

/*
 * Big Integer from an unsigned big-endian magnitude: leading zeros dropped, then zero
 * bytes in front so that the sign bit is clear and the length a multiple of 8 (0 is
 * eight zero bytes).  The zero extension is counted in Length (spec 9.1.1.4).
 */
static void ttlv_put_bigint(struct ttlv_enc *e, uint32_t tag, const uint8_t *mag, size_t n)
{
	if (e->err)
		return;
	while (n > 0 && mag[0] == 0) {
		mag++;
		n--;
	}
	size_t body = n + (n > 0 && (mag[0] & 0x80) ? 1 : 0);
	size_t total = body + ttlv_pad(body);
	if (total == 0)
		total = 8;
	if (total < n || total > UINT32_MAX || !buf_room(e->cap, e->len, TTLV_HDR) ||
	    !buf_room(e->cap, e->len + TTLV_HDR, total)) {
		e->err = -1;
		return;
	}
	uint8_t *q = e->p + e->len;
	buf_put_be32(q, tag << 8 | TT_BIGINT);
	buf_put_be32(q + 4, (uint32_t)total);
	memset(q + TTLV_HDR, 0, total - n);
	if (n)
		memcpy(q + TTLV_HDR + total - n, mag, n);
	e->len += TTLV_HDR + total;
}

/*
 * Re-encode a decoded item and everything under it.  Primitive values go through the
 * typed put functions (so the round trip exercises them); a Big Integer is copied as it
 * is, since its sign extension is part of the value.
 */
static void ttlv_put_item(struct ttlv_enc *e, const struct ttlv_doc *d, const struct ttlv *t)
{
	switch (t->type) {
	case TT_STRUCT:
		ttlv_open(e, t->tag);
		for (int i = t->child; i >= 0; i = d->it[i].next)
			ttlv_put_item(e, d, &d->it[i]);
		ttlv_close(e);
		break;
	case TT_INT:      ttlv_put_int(e, t->tag, (int32_t)t->num); break;
	case TT_LONG:     ttlv_put_long(e, t->tag, t->num); break;
	case TT_ENUM:     ttlv_put_enum(e, t->tag, (uint32_t)t->num); break;
	case TT_BOOL:     ttlv_put_bool(e, t->tag, (int)t->num); break;
	case TT_DATETIME: ttlv_put_datetime(e, t->tag, t->num); break;
	case TT_INTERVAL: ttlv_put_interval(e, t->tag, (uint32_t)t->num); break;
	case TT_TEXT:     ttlv_put_text(e, t->tag, (const char *)t->val, t->len); break;
	case TT_BYTES:    ttlv_put_bytes(e, t->tag, t->val, t->len); break;
	case TT_BIGINT:   ttlv_put_raw(e, t->tag, TT_BIGINT, t->val, t->len, 0); break;
	default:          e->err = -1; break;
	}
}
/* ==== 4. KMIP vocabulary and messages ===================================== */

/*
 * The KMIP 1.2 vocabulary as tables (X-macro lists): every tag of section 9.1.3.1
 * (0x420001..0x4200D3) and the enumerations that this server reads or writes, each value
 * with its specification name upper-cased (spaces, hyphens and dots -> '_').  From each
 * list come the constants (KT_, OP_, RR_ ...), the names for logs and the dumper.
 *
 * Then the messages of sections 6 and 7: parsing a Request Message into a struct
 * kmip_request whose fields point into the decoded document, and writing the fixed parts
 * of a Response Message.
 */

#define KMIP_MAJOR 1
#define KMIP_MINOR 2             /* newest version spoken; 1.0 and 1.1 are answered too */
#define KMIP_MAX_BATCH 64        /* batch items per request */

/* Tags, spec 9.1.3.1, in value order (kmip_tag_name indexes this list). */
#define KMIP_TAGS(X) \
	X(ACTIVATION_DATE,                        0x420001) \
	X(APPLICATION_DATA,                       0x420002) \
	X(APPLICATION_NAMESPACE,                  0x420003) \
	X(APPLICATION_SPECIFIC_INFORMATION,       0x420004) \
	X(ARCHIVE_DATE,                           0x420005) \
	X(ASYNCHRONOUS_CORRELATION_VALUE,         0x420006) \
	X(ASYNCHRONOUS_INDICATOR,                 0x420007) \
	X(ATTRIBUTE,                              0x420008) \
	X(ATTRIBUTE_INDEX,                        0x420009) \
	X(ATTRIBUTE_NAME,                         0x42000A) \
	X(ATTRIBUTE_VALUE,                        0x42000B) \
	X(AUTHENTICATION,                         0x42000C) \
	X(BATCH_COUNT,                            0x42000D) \
	X(BATCH_ERROR_CONTINUATION_OPTION,        0x42000E) \
	X(BATCH_ITEM,                             0x42000F) \
	X(BATCH_ORDER_OPTION,                     0x420010) \
	X(BLOCK_CIPHER_MODE,                      0x420011) \
	X(CANCELLATION_RESULT,                    0x420012) \
	X(CERTIFICATE,                            0x420013) \
	X(CERTIFICATE_IDENTIFIER,                 0x420014) \
	X(CERTIFICATE_ISSUER,                     0x420015) \
	X(CERTIFICATE_ISSUER_ALTERNATIVE_NAME,    0x420016) \
	X(CERTIFICATE_ISSUER_DISTINGUISHED_NAME,  0x420017) \
	X(CERTIFICATE_REQUEST,                    0x420018) \
	X(CERTIFICATE_REQUEST_TYPE,               0x420019) \
	X(CERTIFICATE_SUBJECT,                    0x42001A) \
	X(CERTIFICATE_SUBJECT_ALTERNATIVE_NAME,   0x42001B) \
	X(CERTIFICATE_SUBJECT_DISTINGUISHED_NAME, 0x42001C) \
	X(CERTIFICATE_TYPE,                       0x42001D) \
	X(CERTIFICATE_VALUE,                      0x42001E) \
	X(COMMON_TEMPLATE_ATTRIBUTE,              0x42001F) \
	X(COMPROMISE_DATE,                        0x420020) \
	X(COMPROMISE_OCCURRENCE_DATE,             0x420021) \
	X(CONTACT_INFORMATION,                    0x420022) \
	X(CREDENTIAL,                             0x420023) \
	X(CREDENTIAL_TYPE,                        0x420024) \
	X(CREDENTIAL_VALUE,                       0x420025) \
	X(CRITICALITY_INDICATOR,                  0x420026) \
	X(CRT_COEFFICIENT,                        0x420027) \
	X(CRYPTOGRAPHIC_ALGORITHM,                0x420028) \
	X(CRYPTOGRAPHIC_DOMAIN_PARAMETERS,        0x420029) \
	X(CRYPTOGRAPHIC_LENGTH,                   0x42002A) \
	X(CRYPTOGRAPHIC_PARAMETERS,               0x42002B) \
	X(CRYPTOGRAPHIC_USAGE_MASK,               0x42002C) \
	X(CUSTOM_ATTRIBUTE,                       0x42002D) \
	X(D,                                      0x42002E) \
	X(DEACTIVATION_DATE,                      0x42002F) \
	X(DERIVATION_DATA,                        0x420030) \
	X(DERIVATION_METHOD,                      0x420031) \
	X(DERIVATION_PARAMETERS,                  0x420032) \
	X(DESTROY_DATE,                           0x420033) \
	X(DIGEST,                                 0x420034) \
	X(DIGEST_VALUE,                           0x420035) \
	X(ENCRYPTION_KEY_INFORMATION,             0x420036) \
	X(G,                                      0x420037) \
	X(HASHING_ALGORITHM,                      0x420038) \
	X(INITIAL_DATE,                           0x420039) \
	X(INITIALIZATION_VECTOR,                  0x42003A) \
	X(ISSUER,                                 0x42003B) \
	X(ITERATION_COUNT,                        0x42003C) \
	X(IV_COUNTER_NONCE,                       0x42003D) \
	X(J,                                      0x42003E) \
	X(KEY,                                    0x42003F) \
	X(KEY_BLOCK,                              0x420040) \
	X(KEY_COMPRESSION_TYPE,                   0x420041) \
	X(KEY_FORMAT_TYPE,                        0x420042) \
	X(KEY_MATERIAL,                           0x420043) \
	X(KEY_PART_IDENTIFIER,                    0x420044) \
	X(KEY_VALUE,                              0x420045) \
	X(KEY_WRAPPING_DATA,                      0x420046) \
	X(KEY_WRAPPING_SPECIFICATION,             0x420047) \
	X(LAST_CHANGE_DATE,                       0x420048) \
	X(LEASE_TIME,                             0x420049) \
	X(LINK,                                   0x42004A) \
	X(LINK_TYPE,                              0x42004B) \
	X(LINKED_OBJECT_IDENTIFIER,               0x42004C) \
	X(MAC_SIGNATURE,                          0x42004D) \
	X(MAC_SIGNATURE_KEY_INFORMATION,          0x42004E) \
	X(MAXIMUM_ITEMS,                          0x42004F) \
	X(MAXIMUM_RESPONSE_SIZE,                  0x420050) \
	X(MESSAGE_EXTENSION,                      0x420051) \
	X(MODULUS,                                0x420052) \
	X(NAME,                                   0x420053) \
	X(NAME_TYPE,                              0x420054) \
	X(NAME_VALUE,                             0x420055) \
	X(OBJECT_GROUP,                           0x420056) \
	X(OBJECT_TYPE,                            0x420057) \
	X(OFFSET,                                 0x420058) \
	X(OPAQUE_DATA_TYPE,                       0x420059) \
	X(OPAQUE_DATA_VALUE,                      0x42005A) \
	X(OPAQUE_OBJECT,                          0x42005B) \
	X(OPERATION,                              0x42005C) \
	X(OPERATION_POLICY_NAME,                  0x42005D) \
	X(P,                                      0x42005E) \
	X(PADDING_METHOD,                         0x42005F) \
	X(PRIME_EXPONENT_P,                       0x420060) \
	X(PRIME_EXPONENT_Q,                       0x420061) \
	X(PRIME_FIELD_SIZE,                       0x420062) \
	X(PRIVATE_EXPONENT,                       0x420063) \
	X(PRIVATE_KEY,                            0x420064) \
	X(PRIVATE_KEY_TEMPLATE_ATTRIBUTE,         0x420065) \
	X(PRIVATE_KEY_UNIQUE_IDENTIFIER,          0x420066) \
	X(PROCESS_START_DATE,                     0x420067) \
	X(PROTECT_STOP_DATE,                      0x420068) \
	X(PROTOCOL_VERSION,                       0x420069) \
	X(PROTOCOL_VERSION_MAJOR,                 0x42006A) \
	X(PROTOCOL_VERSION_MINOR,                 0x42006B) \
	X(PUBLIC_EXPONENT,                        0x42006C) \
	X(PUBLIC_KEY,                             0x42006D) \
	X(PUBLIC_KEY_TEMPLATE_ATTRIBUTE,          0x42006E) \
	X(PUBLIC_KEY_UNIQUE_IDENTIFIER,           0x42006F) \
	X(PUT_FUNCTION,                           0x420070) \
	X(Q,                                      0x420071) \
	X(Q_STRING,                               0x420072) \
	X(QLENGTH,                                0x420073) \
	X(QUERY_FUNCTION,                         0x420074) \
	X(RECOMMENDED_CURVE,                      0x420075) \
	X(REPLACED_UNIQUE_IDENTIFIER,             0x420076) \
	X(REQUEST_HEADER,                         0x420077) \
	X(REQUEST_MESSAGE,                        0x420078) \
	X(REQUEST_PAYLOAD,                        0x420079) \
	X(RESPONSE_HEADER,                        0x42007A) \
	X(RESPONSE_MESSAGE,                       0x42007B) \
	X(RESPONSE_PAYLOAD,                       0x42007C) \
	X(RESULT_MESSAGE,                         0x42007D) \
	X(RESULT_REASON,                          0x42007E) \
	X(RESULT_STATUS,                          0x42007F) \
	X(REVOCATION_MESSAGE,                     0x420080) \
	X(REVOCATION_REASON,                      0x420081) \
	X(REVOCATION_REASON_CODE,                 0x420082) \
	X(KEY_ROLE_TYPE,                          0x420083) \
	X(SALT,                                   0x420084) \
	X(SECRET_DATA,                            0x420085) \
	X(SECRET_DATA_TYPE,                       0x420086) \
	X(SERIAL_NUMBER,                          0x420087) \
	X(SERVER_INFORMATION,                     0x420088) \
	X(SPLIT_KEY,                              0x420089) \
	X(SPLIT_KEY_METHOD,                       0x42008A) \
	X(SPLIT_KEY_PARTS,                        0x42008B) \
	X(SPLIT_KEY_THRESHOLD,                    0x42008C) \
	X(STATE,                                  0x42008D) \
	X(STORAGE_STATUS_MASK,                    0x42008E) \
	X(SYMMETRIC_KEY,                          0x42008F) \
	X(TEMPLATE,                               0x420090) \
	X(TEMPLATE_ATTRIBUTE,                     0x420091) \
	X(TIME_STAMP,                             0x420092) \
	X(UNIQUE_BATCH_ITEM_ID,                   0x420093) \
	X(UNIQUE_IDENTIFIER,                      0x420094) \
	X(USAGE_LIMITS,                           0x420095) \
	X(USAGE_LIMITS_COUNT,                     0x420096) \
	X(USAGE_LIMITS_TOTAL,                     0x420097) \
	X(USAGE_LIMITS_UNIT,                      0x420098) \
	X(USERNAME,                               0x420099) \
	X(VALIDITY_DATE,                          0x42009A) \
	X(VALIDITY_INDICATOR,                     0x42009B) \
	X(VENDOR_EXTENSION,                       0x42009C) \
	X(VENDOR_IDENTIFICATION,                  0x42009D) \
	X(WRAPPING_METHOD,                        0x42009E) \
	X(X,                                      0x42009F) \
	X(Y,                                      0x4200A0) \
	X(PASSWORD,                               0x4200A1) \
	X(DEVICE_IDENTIFIER,                      0x4200A2) \
	X(ENCODING_OPTION,                        0x4200A3) \
	X(EXTENSION_INFORMATION,                  0x4200A4) \
	X(EXTENSION_NAME,                         0x4200A5) \
	X(EXTENSION_TAG,                          0x4200A6) \
	X(EXTENSION_TYPE,                         0x4200A7) \
	X(FRESH,                                  0x4200A8) \
	X(MACHINE_IDENTIFIER,                     0x4200A9) \
	X(MEDIA_IDENTIFIER,                       0x4200AA) \
	X(NETWORK_IDENTIFIER,                     0x4200AB) \
	X(OBJECT_GROUP_MEMBER,                    0x4200AC) \
	X(CERTIFICATE_LENGTH,                     0x4200AD) \
	X(DIGITAL_SIGNATURE_ALGORITHM,            0x4200AE) \
	X(CERTIFICATE_SERIAL_NUMBER,              0x4200AF) \
	X(DEVICE_SERIAL_NUMBER,                   0x4200B0) \
	X(ISSUER_ALTERNATIVE_NAME,                0x4200B1) \
	X(ISSUER_DISTINGUISHED_NAME,              0x4200B2) \
	X(SUBJECT_ALTERNATIVE_NAME,               0x4200B3) \
	X(SUBJECT_DISTINGUISHED_NAME,             0x4200B4) \
	X(X_509_CERTIFICATE_IDENTIFIER,           0x4200B5) \
	X(X_509_CERTIFICATE_ISSUER,               0x4200B6) \
	X(X_509_CERTIFICATE_SUBJECT,              0x4200B7) \
	X(KEY_VALUE_LOCATION,                     0x4200B8) \
	X(KEY_VALUE_LOCATION_VALUE,               0x4200B9) \
	X(KEY_VALUE_LOCATION_TYPE,                0x4200BA) \
	X(KEY_VALUE_PRESENT,                      0x4200BB) \
	X(ORIGINAL_CREATION_DATE,                 0x4200BC) \
	X(PGP_KEY,                                0x4200BD) \
	X(PGP_KEY_VERSION,                        0x4200BE) \
	X(ALTERNATIVE_NAME,                       0x4200BF) \
	X(ALTERNATIVE_NAME_VALUE,                 0x4200C0) \
	X(ALTERNATIVE_NAME_TYPE,                  0x4200C1) \
	X(DATA,                                   0x4200C2) \
	X(SIGNATURE_DATA,                         0x4200C3) \
	X(DATA_LENGTH,                            0x4200C4) \
	X(RANDOM_IV,                              0x4200C5) \
	X(MAC_DATA,                               0x4200C6) \
	X(ATTESTATION_TYPE,                       0x4200C7) \
	X(NONCE,                                  0x4200C8) \
	X(NONCE_ID,                               0x4200C9) \
	X(NONCE_VALUE,                            0x4200CA) \
	X(ATTESTATION_MEASUREMENT,                0x4200CB) \
	X(ATTESTATION_ASSERTION,                  0x4200CC) \
	X(IV_LENGTH,                              0x4200CD) \
	X(TAG_LENGTH,                             0x4200CE) \
	X(FIXED_FIELD_LENGTH,                     0x4200CF) \
	X(COUNTER_LENGTH,                         0x4200D0) \
	X(INITIAL_COUNTER_VALUE,                  0x4200D1) \
	X(INVOCATION_FIELD_LENGTH,                0x4200D2) \
	X(ATTESTATION_CAPABLE_INDICATOR,          0x4200D3)

enum {
#define X(name, val) KT_##name = val,
	KMIP_TAGS(X)
#undef X
	KT_FIRST = 0x420001, KT_LAST = 0x4200D3
};

/*
 * Names live in one pool of characters, reached by 16-bit offsets: a table of pointers
 * costs a pointer and, in a position-independent binary, a relocation (24 bytes on a 64-bit
 * target) per name, some 14 KiB for the tags and enumerations together.
 */
static const struct kmip_tag_pool {
#define X(name, val) char s_##name[sizeof #name];
	KMIP_TAGS(X)
#undef X
} kmip_tag_pool = {
#define X(name, val) #name,
	KMIP_TAGS(X)
#undef X
};

static const uint16_t kmip_tag_names[] = {      /* offsets into kmip_tag_pool */
#define X(name, val) offsetof(struct kmip_tag_pool, s_##name),
	KMIP_TAGS(X)
#undef X
};

/*
 * Enumerations, spec 9.1.3.2, KMIP 1.2 values only.  Each list is X(P, NAME, value) with P
 * the constant prefix.
 */

/* Operation */
#define KMIP_OPERATIONS(X, P) \
	X(P, CREATE,               0x01) \
	X(P, CREATE_KEY_PAIR,      0x02) \
	X(P, REGISTER,             0x03) \
	X(P, REKEY,                0x04) \
	X(P, DERIVE_KEY,           0x05) \
	X(P, CERTIFY,              0x06) \
	X(P, RECERTIFY,            0x07) \
	X(P, LOCATE,               0x08) \
	X(P, CHECK,                0x09) \
	X(P, GET,                  0x0A) \
	X(P, GET_ATTRIBUTES,       0x0B) \
	X(P, GET_ATTRIBUTE_LIST,   0x0C) \
	X(P, ADD_ATTRIBUTE,        0x0D) \
	X(P, MODIFY_ATTRIBUTE,     0x0E) \
	X(P, DELETE_ATTRIBUTE,     0x0F) \
	X(P, OBTAIN_LEASE,         0x10) \
	X(P, GET_USAGE_ALLOCATION, 0x11) \
	X(P, ACTIVATE,             0x12) \
	X(P, REVOKE,               0x13) \
	X(P, DESTROY,              0x14) \
	X(P, ARCHIVE,              0x15) \
	X(P, RECOVER,              0x16) \
	X(P, VALIDATE,             0x17) \
	X(P, QUERY,                0x18) \
	X(P, CANCEL,               0x19) \
	X(P, POLL,                 0x1A) \
	X(P, NOTIFY,               0x1B) \
	X(P, PUT,                  0x1C) \
	X(P, REKEY_KEY_PAIR,       0x1D) \
	X(P, DISCOVER_VERSIONS,    0x1E) \
	X(P, ENCRYPT,              0x1F) \
	X(P, DECRYPT,              0x20) \
	X(P, SIGN,                 0x21) \
	X(P, SIGNATURE_VERIFY,     0x22) \
	X(P, MAC,                  0x23) \
	X(P, MAC_VERIFY,           0x24) \
	X(P, RNG_RETRIEVE,         0x25) \
	X(P, RNG_SEED,             0x26) \
	X(P, HASH,                 0x27) \
	X(P, CREATE_SPLIT_KEY,     0x28) \
	X(P, JOIN_SPLIT_KEY,       0x29)

/* Result Status */
#define KMIP_RESULT_STATUSES(X, P) \
	X(P, SUCCESS,           0x00) \
	X(P, OPERATION_FAILED,  0x01) \
	X(P, OPERATION_PENDING, 0x02) \
	X(P, OPERATION_UNDONE,  0x03)

/* Result Reason */
#define KMIP_RESULT_REASONS(X, P) \
	X(P, ITEM_NOT_FOUND,                      0x01) \
	X(P, RESPONSE_TOO_LARGE,                  0x02) \
	X(P, AUTHENTICATION_NOT_SUCCESSFUL,       0x03) \
	X(P, INVALID_MESSAGE,                     0x04) \
	X(P, OPERATION_NOT_SUPPORTED,             0x05) \
	X(P, MISSING_DATA,                        0x06) \
	X(P, INVALID_FIELD,                       0x07) \
	X(P, FEATURE_NOT_SUPPORTED,               0x08) \
	X(P, OPERATION_CANCELED_BY_REQUESTER,     0x09) \
	X(P, CRYPTOGRAPHIC_FAILURE,               0x0A) \
	X(P, ILLEGAL_OPERATION,                   0x0B) \
	X(P, PERMISSION_DENIED,                   0x0C) \
	X(P, OBJECT_ARCHIVED,                     0x0D) \
	X(P, INDEX_OUT_OF_BOUNDS,                 0x0E) \
	X(P, APPLICATION_NAMESPACE_NOT_SUPPORTED, 0x0F) \
	X(P, KEY_FORMAT_TYPE_NOT_SUPPORTED,       0x10) \
	X(P, KEY_COMPRESSION_TYPE_NOT_SUPPORTED,  0x11) \
	X(P, ENCODING_OPTION_ERROR,               0x12) \
	X(P, KEY_VALUE_NOT_PRESENT,               0x13) \
	X(P, ATTESTATION_REQUIRED,                0x14) \
	X(P, ATTESTATION_FAILED,                  0x15) \
	X(P, GENERAL_FAILURE,                     0x100)

/* Object Type */
#define KMIP_OBJECT_TYPES(X, P) \
	X(P, CERTIFICATE,   0x01) \
	X(P, SYMMETRIC_KEY, 0x02) \
	X(P, PUBLIC_KEY,    0x03) \
	X(P, PRIVATE_KEY,   0x04) \
	X(P, SPLIT_KEY,     0x05) \
	X(P, TEMPLATE,      0x06) \
	X(P, SECRET_DATA,   0x07) \
	X(P, OPAQUE_DATA,   0x08) \
	X(P, PGP_KEY,       0x09)

/* Cryptographic Algorithm */
#define KMIP_CRYPTO_ALGORITHMS(X, P) \
	X(P, DES,         0x01) \
	X(P, 3DES,        0x02) \
	X(P, AES,         0x03) \
	X(P, RSA,         0x04) \
	X(P, DSA,         0x05) \
	X(P, ECDSA,       0x06) \
	X(P, HMAC_SHA1,   0x07) \
	X(P, HMAC_SHA224, 0x08) \
	X(P, HMAC_SHA256, 0x09) \
	X(P, HMAC_SHA384, 0x0A) \
	X(P, HMAC_SHA512, 0x0B) \
	X(P, HMAC_MD5,    0x0C) \
	X(P, DH,          0x0D) \
	X(P, ECDH,        0x0E) \
	X(P, ECMQV,       0x0F) \
	X(P, BLOWFISH,    0x10) \
	X(P, CAMELLIA,    0x11) \
	X(P, CAST5,       0x12) \
	X(P, IDEA,        0x13) \
	X(P, MARS,        0x14) \
	X(P, RC2,         0x15) \
	X(P, RC4,         0x16) \
	X(P, RC5,         0x17) \
	X(P, SKIPJACK,    0x18) \
	X(P, TWOFISH,     0x19) \
	X(P, EC,          0x1A)

/* Key Format Type */
#define KMIP_KEY_FORMAT_TYPES(X, P) \
	X(P, RAW,                           0x01) \
	X(P, OPAQUE,                        0x02) \
	X(P, PKCS_1,                        0x03) \
	X(P, PKCS_8,                        0x04) \
	X(P, X_509,                         0x05) \
	X(P, EC_PRIVATE_KEY,                0x06) \
	X(P, TRANSPARENT_SYMMETRIC_KEY,     0x07) \
	X(P, TRANSPARENT_DSA_PRIVATE_KEY,   0x08) \
	X(P, TRANSPARENT_DSA_PUBLIC_KEY,    0x09) \
	X(P, TRANSPARENT_RSA_PRIVATE_KEY,   0x0A) \
	X(P, TRANSPARENT_RSA_PUBLIC_KEY,    0x0B) \
	X(P, TRANSPARENT_DH_PRIVATE_KEY,    0x0C) \
	X(P, TRANSPARENT_DH_PUBLIC_KEY,     0x0D) \
	X(P, TRANSPARENT_ECDSA_PRIVATE_KEY, 0x0E) \
	X(P, TRANSPARENT_ECDSA_PUBLIC_KEY,  0x0F) \
	X(P, TRANSPARENT_ECDH_PRIVATE_KEY,  0x10) \
	X(P, TRANSPARENT_ECDH_PUBLIC_KEY,   0x11) \
	X(P, TRANSPARENT_ECMQV_PRIVATE_KEY, 0x12) \
	X(P, TRANSPARENT_ECMQV_PUBLIC_KEY,  0x13)

/* Hashing Algorithm */
#define KMIP_HASHING_ALGORITHMS(X, P) \
	X(P, MD2,         0x01) \
	X(P, MD4,         0x02) \
	X(P, MD5,         0x03) \
	X(P, SHA_1,       0x04) \
	X(P, SHA_224,     0x05) \
	X(P, SHA_256,     0x06) \
	X(P, SHA_384,     0x07) \
	X(P, SHA_512,     0x08) \
	X(P, RIPEMD_160,  0x09) \
	X(P, TIGER,       0x0A) \
	X(P, WHIRLPOOL,   0x0B) \
	X(P, SHA_512_224, 0x0C) \
	X(P, SHA_512_256, 0x0D)

/* Padding Method */
#define KMIP_PADDING_METHODS(X, P) \
	X(P, NONE,       0x01) \
	X(P, OAEP,       0x02) \
	X(P, PKCS5,      0x03) \
	X(P, SSL3,       0x04) \
	X(P, ZEROS,      0x05) \
	X(P, ANSI_X9_23, 0x06) \
	X(P, ISO_10126,  0x07) \
	X(P, PKCS1_V1_5, 0x08) \
	X(P, X9_31,      0x09) \
	X(P, PSS,        0x0A)

/* Name Type */
#define KMIP_NAME_TYPES(X, P) \
	X(P, UNINTERPRETED_TEXT_STRING, 0x01) \
	X(P, URI,                       0x02)

/* Credential Type */
#define KMIP_CREDENTIAL_TYPES(X, P) \
	X(P, USERNAME_AND_PASSWORD, 0x01) \
	X(P, DEVICE,                0x02) \
	X(P, ATTESTATION,           0x03)

/* Query Function */
#define KMIP_QUERY_FUNCTIONS(X, P) \
	X(P, QUERY_OPERATIONS,             0x01) \
	X(P, QUERY_OBJECTS,                0x02) \
	X(P, QUERY_SERVER_INFORMATION,     0x03) \
	X(P, QUERY_APPLICATION_NAMESPACES, 0x04) \
	X(P, QUERY_EXTENSION_LIST,         0x05) \
	X(P, QUERY_EXTENSION_MAP,          0x06) \
	X(P, QUERY_ATTESTATION_TYPES,      0x07)

/* Recommended Curve */
#define KMIP_RECOMMENDED_CURVES(X, P) \
	X(P, P_192,            0x01) \
	X(P, K_163,            0x02) \
	X(P, B_163,            0x03) \
	X(P, P_224,            0x04) \
	X(P, K_233,            0x05) \
	X(P, B_233,            0x06) \
	X(P, P_256,            0x07) \
	X(P, K_283,            0x08) \
	X(P, B_283,            0x09) \
	X(P, P_384,            0x0A) \
	X(P, K_409,            0x0B) \
	X(P, B_409,            0x0C) \
	X(P, P_521,            0x0D) \
	X(P, K_571,            0x0E) \
	X(P, B_571,            0x0F) \
	X(P, SECP112R1,        0x10) \
	X(P, SECP112R2,        0x11) \
	X(P, SECP128R1,        0x12) \
	X(P, SECP128R2,        0x13) \
	X(P, SECP160K1,        0x14) \
	X(P, SECP160R1,        0x15) \
	X(P, SECP160R2,        0x16) \
	X(P, SECP191K1,        0x17) \
	X(P, SECP224K1,        0x18) \
	X(P, SECP256K1,        0x19) \
	X(P, SECT113R1,        0x1A) \
	X(P, SECT113R2,        0x1B) \
	X(P, SECT131R1,        0x1C) \
	X(P, SECT131R2,        0x1D) \
	X(P, SECT163R1,        0x1E) \
	X(P, SECT193R1,        0x1F) \
	X(P, SECT193R2,        0x20) \
	X(P, SECT239K1,        0x21) \
	X(P, ANSIX9P192V2,     0x22) \
	X(P, ANSIX9P192V3,     0x23) \
	X(P, ANSIX9P239V1,     0x24) \
	X(P, ANSIX9P239V2,     0x25) \
	X(P, ANSIX9P239V3,     0x26) \
	X(P, ANSIX9C2PNB163V1, 0x27) \
	X(P, ANSIX9C2PNB163V2, 0x28) \
	X(P, ANSIX9C2PNB163V3, 0x29) \
	X(P, ANSIX9C2PNB176V1, 0x2A) \
	X(P, ANSIX9C2TNB191V1, 0x2B) \
	X(P, ANSIX9C2TNB191V2, 0x2C) \
	X(P, ANSIX9C2TNB191V3, 0x2D) \
	X(P, ANSIX9C2PNB208W1, 0x2E) \
	X(P, ANSIX9C2TNB239V1, 0x2F) \
	X(P, ANSIX9C2TNB239V2, 0x30) \
	X(P, ANSIX9C2TNB239V3, 0x31) \
	X(P, ANSIX9C2PNB272W1, 0x32) \
	X(P, ANSIX9C2PNB304W1, 0x33) \
	X(P, ANSIX9C2TNB359V1, 0x34) \
	X(P, ANSIX9C2PNB368W1, 0x35) \
	X(P, ANSIX9C2TNB431R1, 0x36) \
	X(P, BRAINPOOLP160R1,  0x37) \
	X(P, BRAINPOOLP160T1,  0x38) \
	X(P, BRAINPOOLP192R1,  0x39) \
	X(P, BRAINPOOLP192T1,  0x3A) \
	X(P, BRAINPOOLP224R1,  0x3B) \
	X(P, BRAINPOOLP224T1,  0x3C) \
	X(P, BRAINPOOLP256R1,  0x3D) \
	X(P, BRAINPOOLP256T1,  0x3E) \
	X(P, BRAINPOOLP320R1,  0x3F) \
	X(P, BRAINPOOLP320T1,  0x40) \
	X(P, BRAINPOOLP384R1,  0x41) \
	X(P, BRAINPOOLP384T1,  0x42) \
	X(P, BRAINPOOLP512R1,  0x43) \
	X(P, BRAINPOOLP512T1,  0x44)

/* Digital Signature Algorithm */
#define KMIP_SIGNATURE_ALGORITHMS(X, P) \
	X(P, MD2_WITH_RSA_ENCRYPTION,    0x01) \
	X(P, MD5_WITH_RSA_ENCRYPTION,    0x02) \
	X(P, SHA1_WITH_RSA_ENCRYPTION,   0x03) \
	X(P, SHA224_WITH_RSA_ENCRYPTION, 0x04) \
	X(P, SHA256_WITH_RSA_ENCRYPTION, 0x05) \
	X(P, SHA384_WITH_RSA_ENCRYPTION, 0x06) \
	X(P, SHA512_WITH_RSA_ENCRYPTION, 0x07) \
	X(P, RSASSA_PSS,                 0x08) \
	X(P, DSA_WITH_SHA1,              0x09) \
	X(P, DSA_WITH_SHA224,            0x0A) \
	X(P, DSA_WITH_SHA256,            0x0B) \
	X(P, ECDSA_WITH_SHA1,            0x0C) \
	X(P, ECDSA_WITH_SHA224,          0x0D) \
	X(P, ECDSA_WITH_SHA256,          0x0E) \
	X(P, ECDSA_WITH_SHA384,          0x0F) \
	X(P, ECDSA_WITH_SHA512,          0x10)

/* State */
#define KMIP_STATES(X, P) \
	X(P, PRE_ACTIVE,            0x01) \
	X(P, ACTIVE,                0x02) \
	X(P, DEACTIVATED,           0x03) \
	X(P, COMPROMISED,           0x04) \
	X(P, DESTROYED,             0x05) \
	X(P, DESTROYED_COMPROMISED, 0x06)

/* Revocation Reason Code */
#define KMIP_REVOCATION_REASONS(X, P) \
	X(P, UNSPECIFIED,            0x01) \
	X(P, KEY_COMPROMISE,         0x02) \
	X(P, CA_COMPROMISE,          0x03) \
	X(P, AFFILIATION_CHANGED,    0x04) \
	X(P, SUPERSEDED,             0x05) \
	X(P, CESSATION_OF_OPERATION, 0x06) \
	X(P, PRIVILEGE_WITHDRAWN,    0x07)

/* Batch Error Continuation Option */
#define KMIP_BATCH_ERROR_OPTIONS(X, P) \
	X(P, CONTINUE, 0x01) \
	X(P, STOP,     0x02) \
	X(P, UNDO,     0x03)

/* Key Compression Type */
#define KMIP_KEY_COMPRESSION_TYPES(X, P) \
	X(P, EC_PUBLIC_KEY_TYPE_UNCOMPRESSED,           0x01) \
	X(P, EC_PUBLIC_KEY_TYPE_X9_62_COMPRESSED_PRIME, 0x02) \
	X(P, EC_PUBLIC_KEY_TYPE_X9_62_COMPRESSED_CHAR2, 0x03) \
	X(P, EC_PUBLIC_KEY_TYPE_X9_62_HYBRID,           0x04)

/* Link Type */
#define KMIP_LINK_TYPES(X, P) \
	X(P, CERTIFICATE_LINK,            0x101) \
	X(P, PUBLIC_KEY_LINK,             0x102) \
	X(P, PRIVATE_KEY_LINK,            0x103) \
	X(P, DERIVATION_BASE_OBJECT_LINK, 0x104) \
	X(P, DERIVED_KEY_LINK,            0x105) \
	X(P, REPLACEMENT_OBJECT_LINK,     0x106) \
	X(P, REPLACED_OBJECT_LINK,        0x107) \
	X(P, PARENT_LINK,                 0x108) \
	X(P, CHILD_LINK,                  0x109) \
	X(P, PREVIOUS_LINK,               0x10A) \
	X(P, NEXT_LINK,                   0x10B)

/* Attestation Type */
#define KMIP_ATTESTATION_TYPES(X, P) \
	X(P, TPM_QUOTE,            0x01) \
	X(P, TCG_INTEGRITY_REPORT, 0x02) \
	X(P, SAML_ASSERTION,       0x03)

/* Cryptographic Usage Mask (bits) */
#define KMIP_USAGE_MASK_BITS(X, P) \
	X(P, SIGN,                0x01) \
	X(P, VERIFY,              0x02) \
	X(P, ENCRYPT,             0x04) \
	X(P, DECRYPT,             0x08) \
	X(P, WRAP_KEY,            0x10) \
	X(P, UNWRAP_KEY,          0x20) \
	X(P, EXPORT,              0x40) \
	X(P, MAC_GENERATE,        0x80) \
	X(P, MAC_VERIFY,          0x100) \
	X(P, DERIVE_KEY,          0x200) \
	X(P, CONTENT_COMMITMENT,  0x400) \
	X(P, KEY_AGREEMENT,       0x800) \
	X(P, CERTIFICATE_SIGN,    0x1000) \
	X(P, CRL_SIGN,            0x2000) \
	X(P, GENERATE_CRYPTOGRAM, 0x4000) \
	X(P, VALIDATE_CRYPTOGRAM, 0x8000) \
	X(P, TRANSLATE_ENCRYPT,   0x10000) \
	X(P, TRANSLATE_DECRYPT,   0x20000) \
	X(P, TRANSLATE_WRAP,      0x40000) \
	X(P, TRANSLATE_UNWRAP,    0x80000)

#define KMIP_CONST(p, name, val) p##name = val,
enum { KMIP_OPERATIONS(KMIP_CONST, OP_) };
enum { KMIP_RESULT_STATUSES(KMIP_CONST, RS_) };
enum { KMIP_RESULT_REASONS(KMIP_CONST, RR_) };
enum { KMIP_OBJECT_TYPES(KMIP_CONST, OT_) };
enum { KMIP_CRYPTO_ALGORITHMS(KMIP_CONST, ALG_) };
enum { KMIP_KEY_FORMAT_TYPES(KMIP_CONST, KFT_) };
enum { KMIP_HASHING_ALGORITHMS(KMIP_CONST, HASH_) };
enum { KMIP_PADDING_METHODS(KMIP_CONST, PAD_) };
enum { KMIP_NAME_TYPES(KMIP_CONST, NT_) };
enum { KMIP_CREDENTIAL_TYPES(KMIP_CONST, CT_) };
enum { KMIP_QUERY_FUNCTIONS(KMIP_CONST, QF_) };
enum { KMIP_RECOMMENDED_CURVES(KMIP_CONST, CURVE_) };
enum { KMIP_SIGNATURE_ALGORITHMS(KMIP_CONST, DSA_) };
enum { KMIP_STATES(KMIP_CONST, ST_) };
enum { KMIP_REVOCATION_REASONS(KMIP_CONST, REV_) };
enum { KMIP_BATCH_ERROR_OPTIONS(KMIP_CONST, BEC_) };
enum { KMIP_KEY_COMPRESSION_TYPES(KMIP_CONST, KCT_) };
enum { KMIP_LINK_TYPES(KMIP_CONST, LT_) };
enum { KMIP_ATTESTATION_TYPES(KMIP_CONST, AT_) };
enum { KMIP_USAGE_MASK_BITS(KMIP_CONST, UM_) };
#undef KMIP_CONST

struct kmip_name {
	uint32_t val;
	uint16_t off;           /* of the name in kmip_enum_pool */
};

#define KMIP_ENUM_LISTS(X) \
	KMIP_OPERATIONS(X, OP_) KMIP_RESULT_STATUSES(X, RS_) KMIP_RESULT_REASONS(X, RR_) \
	KMIP_OBJECT_TYPES(X, OT_) KMIP_CRYPTO_ALGORITHMS(X, ALG_) KMIP_KEY_FORMAT_TYPES(X, KFT_) \
	KMIP_HASHING_ALGORITHMS(X, HASH_) KMIP_PADDING_METHODS(X, PAD_) KMIP_NAME_TYPES(X, NT_) \
	KMIP_CREDENTIAL_TYPES(X, CT_) KMIP_QUERY_FUNCTIONS(X, QF_) \
	KMIP_RECOMMENDED_CURVES(X, CURVE_) KMIP_SIGNATURE_ALGORITHMS(X, DSA_) \
	KMIP_STATES(X, ST_) KMIP_REVOCATION_REASONS(X, REV_) KMIP_BATCH_ERROR_OPTIONS(X, BEC_) \
	KMIP_KEY_COMPRESSION_TYPES(X, KCT_) KMIP_LINK_TYPES(X, LT_) KMIP_ATTESTATION_TYPES(X, AT_)

static const struct kmip_enum_pool {
#define KMIP_POOL_MEMBER(p, name, val) char s_##p##name[sizeof #name];
	KMIP_ENUM_LISTS(KMIP_POOL_MEMBER)
#undef KMIP_POOL_MEMBER
} kmip_enum_pool = {
#define KMIP_POOL_TEXT(p, name, val) #name,
	KMIP_ENUM_LISTS(KMIP_POOL_TEXT)
#undef KMIP_POOL_TEXT
};

static const char *kmip_name_text(const struct kmip_name *e)
{
	return (const char *)&kmip_enum_pool + e->off;
}

#define KMIP_NAME(p, name, val) { val, offsetof(struct kmip_enum_pool, s_##p##name) },
static const struct kmip_name kmip_op_names[] = { KMIP_OPERATIONS(KMIP_NAME, OP_) };
static const struct kmip_name kmip_rs_names[] = { KMIP_RESULT_STATUSES(KMIP_NAME, RS_) };
static const struct kmip_name kmip_rr_names[] = { KMIP_RESULT_REASONS(KMIP_NAME, RR_) };
static const struct kmip_name kmip_ot_names[] = { KMIP_OBJECT_TYPES(KMIP_NAME, OT_) };
static const struct kmip_name kmip_alg_names[] = { KMIP_CRYPTO_ALGORITHMS(KMIP_NAME, ALG_) };
static const struct kmip_name kmip_kft_names[] = { KMIP_KEY_FORMAT_TYPES(KMIP_NAME, KFT_) };
static const struct kmip_name kmip_hash_names[] = { KMIP_HASHING_ALGORITHMS(KMIP_NAME, HASH_) };
static const struct kmip_name kmip_pad_names[] = { KMIP_PADDING_METHODS(KMIP_NAME, PAD_) };
static const struct kmip_name kmip_nt_names[] = { KMIP_NAME_TYPES(KMIP_NAME, NT_) };
static const struct kmip_name kmip_ct_names[] = { KMIP_CREDENTIAL_TYPES(KMIP_NAME, CT_) };
static const struct kmip_name kmip_qf_names[] = { KMIP_QUERY_FUNCTIONS(KMIP_NAME, QF_) };
static const struct kmip_name kmip_curve_names[] = { KMIP_RECOMMENDED_CURVES(KMIP_NAME, CURVE_) };
static const struct kmip_name kmip_dsa_names[] = { KMIP_SIGNATURE_ALGORITHMS(KMIP_NAME, DSA_) };
static const struct kmip_name kmip_st_names[] = { KMIP_STATES(KMIP_NAME, ST_) };
static const struct kmip_name kmip_rev_names[] = { KMIP_REVOCATION_REASONS(KMIP_NAME, REV_) };
static const struct kmip_name kmip_bec_names[] = { KMIP_BATCH_ERROR_OPTIONS(KMIP_NAME, BEC_) };
static const struct kmip_name kmip_kct_names[] = { KMIP_KEY_COMPRESSION_TYPES(KMIP_NAME, KCT_) };
static const struct kmip_name kmip_lt_names[] = { KMIP_LINK_TYPES(KMIP_NAME, LT_) };
static const struct kmip_name kmip_at_names[] = { KMIP_ATTESTATION_TYPES(KMIP_NAME, AT_) };
#undef KMIP_NAME

/* Which tag carries which enumeration. */
static const struct {
	uint32_t tag;
	const struct kmip_name *names;
	size_t n;
} kmip_enum_tables[] = {
#define T(tag, tab) { tag, tab, ARRAY_LEN(tab) }
	T(KT_OPERATION, kmip_op_names),
	T(KT_RESULT_STATUS, kmip_rs_names),
	T(KT_RESULT_REASON, kmip_rr_names),
	T(KT_OBJECT_TYPE, kmip_ot_names),
	T(KT_CRYPTOGRAPHIC_ALGORITHM, kmip_alg_names),
	T(KT_KEY_FORMAT_TYPE, kmip_kft_names),
	T(KT_HASHING_ALGORITHM, kmip_hash_names),
	T(KT_PADDING_METHOD, kmip_pad_names),
	T(KT_NAME_TYPE, kmip_nt_names),
	T(KT_CREDENTIAL_TYPE, kmip_ct_names),
	T(KT_QUERY_FUNCTION, kmip_qf_names),
	T(KT_RECOMMENDED_CURVE, kmip_curve_names),
	T(KT_DIGITAL_SIGNATURE_ALGORITHM, kmip_dsa_names),
	T(KT_STATE, kmip_st_names),
	T(KT_REVOCATION_REASON_CODE, kmip_rev_names),
	T(KT_BATCH_ERROR_CONTINUATION_OPTION, kmip_bec_names),
	T(KT_KEY_COMPRESSION_TYPE, kmip_kct_names),
	T(KT_LINK_TYPE, kmip_lt_names),
	T(KT_ATTESTATION_TYPE, kmip_at_names),
#undef T
};

/* Upper snake name of a KMIP 1.2 tag ("UNIQUE_IDENTIFIER"), or NULL for any other tag. */
static const char *kmip_tag_name(uint32_t tag)
{
	if (tag < KT_FIRST || tag > KT_LAST)
		return NULL;
	return (const char *)&kmip_tag_pool + kmip_tag_names[tag - KT_FIRST];
}

static const char *kmip_name_of(const struct kmip_name *t, size_t n, uint32_t v)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].val == v)
			return kmip_name_text(&t[i]);
	return NULL;
}

/* Name of an enumeration value carried by `tag` ("CREATE_KEY_PAIR"), or NULL. */
static const char *kmip_enum_name(uint32_t tag, uint32_t value)
{
	for (size_t i = 0; i < ARRAY_LEN(kmip_enum_tables); i++)
		if (kmip_enum_tables[i].tag == tag)
			return kmip_name_of(kmip_enum_tables[i].names, kmip_enum_tables[i].n, value);
	return NULL;
}

/* Result Reason name for logs; never NULL. */
static const char *kmip_reason_name(uint32_t rr)
{
	const char *s = kmip_name_of(kmip_rr_names, ARRAY_LEN(kmip_rr_names), rr);
	return s ? s : "UNKNOWN_REASON";
}

/* ---- typed access to children ---- */

enum { KMIP_ABSENT = -1, KMIP_BAD_TYPE = -2 };

/*
 * The first direct child of parent with this tag, checked to be of this type: 0 and *out
 * set, KMIP_ABSENT (-1) if there is none, KMIP_BAD_TYPE (-2) if it has another type.
 * Outputs are left alone unless 0 is returned.
 */
static int kmip_get(const struct ttlv_doc *d, const struct ttlv *parent, uint32_t tag,
                    uint8_t type, const struct ttlv **out)
{
	const struct ttlv *t = ttlv_find(d, parent, tag);
	if (t == NULL)
		return KMIP_ABSENT;
	if (t->type != type)
		return KMIP_BAD_TYPE;
	*out = t;
	return 0;
}

/* Text String child; not NUL-terminated. */
static int kmip_get_text(const struct ttlv_doc *d, const struct ttlv *parent, uint32_t tag,
                         const char **s, uint32_t *len)
{
	const struct ttlv *t;
	int rc = kmip_get(d, parent, tag, TT_TEXT, &t);
	if (rc == 0) {
		*s = (const char *)t->val;
		*len = t->len;
	}
	return rc;
}

static int kmip_get_bytes(const struct ttlv_doc *d, const struct ttlv *parent, uint32_t tag,
                          const uint8_t **b, uint32_t *len)
{
	const struct ttlv *t;
	int rc = kmip_get(d, parent, tag, TT_BYTES, &t);
	if (rc == 0) {
		*b = t->val;
		*len = t->len;
	}
	return rc;
}

static int kmip_get_int(const struct ttlv_doc *d, const struct ttlv *parent, uint32_t tag,
                        int32_t *v)
{
	const struct ttlv *t;
	int rc = kmip_get(d, parent, tag, TT_INT, &t);
	if (rc == 0)
		*v = (int32_t)t->num;
	return rc;
}

static int kmip_get_enum(const struct ttlv_doc *d, const struct ttlv *parent, uint32_t tag,
                         uint32_t *v)
{
	const struct ttlv *t;
	int rc = kmip_get(d, parent, tag, TT_ENUM, &t);
	if (rc == 0)
		*v = (uint32_t)t->num;
	return rc;
}

static int kmip_get_struct(const struct ttlv_doc *d, const struct ttlv *parent, uint32_t tag,
                           const struct ttlv **s)
{
	return kmip_get(d, parent, tag, TT_STRUCT, s);
}

/* 1 if a Text String item holds exactly the C string s. */
static int kmip_text_is(const struct ttlv *t, const char *s)
{
	size_t n = strlen(s);
	return t->type == TT_TEXT && t->len == n && memcmp(t->val, s, n) == 0;
}

/*
 * Template-Attribute (spec 2.1.8), and any structure that lists attributes:
 *
 *   Template-Attribute: Name*, Attribute*
 *   Attribute:          Attribute Name (Text String), Attribute Index (Integer, optional),
 *                       Attribute Value (type depends on the name)
 *
 * The Attribute Value of the index-th (0-based, in message order) Attribute named `name`
 * directly under tmpl, or NULL.  `index` counts occurrences, it does not match the
 * Attribute Index field: templates in requests seldom carry one.
 */
static const struct ttlv *kmip_attr_value(const struct ttlv_doc *d, const struct ttlv *tmpl,
                                          const char *name, int index)
{
	if (tmpl == NULL || tmpl->type != TT_STRUCT)
		return NULL;
	for (int i = tmpl->child; i >= 0; i = d->it[i].next) {
		const struct ttlv *a = &d->it[i];
		if (a->tag != KT_ATTRIBUTE || a->type != TT_STRUCT)
			continue;
		const struct ttlv *nm = ttlv_find(d, a, KT_ATTRIBUTE_NAME);
		if (nm == NULL || !kmip_text_is(nm, name))
			continue;
		if (index-- == 0)
			return ttlv_find(d, a, KT_ATTRIBUTE_VALUE);
	}
	return NULL;
}

/* ---- request parsing ---- */

struct kmip_item {           /* one request batch item */
	uint32_t op;             /* 0 if missing */
	const uint8_t *bid;      /* Unique Batch Item ID or NULL */
	uint32_t bid_len;
	const struct ttlv *payload;             /* Request Payload or NULL */
	uint32_t reason;         /* nonzero: this item is malformed, answer with this reason */
	const char *why;         /* ... and this Result Message */
};

struct kmip_request {
	int major, minor;
	int64_t max_resp;        /* Maximum Response Size, -1 if absent */
	int has_cred;            /* Username and Password credential present */
	const uint8_t *user, *pass;             /* pass NULL if the credential has none */
	uint32_t user_len, pass_len;
	int async;
	uint32_t err_cont;       /* Batch Error Continuation Option, BEC_STOP by default */
	uint32_t batch_count;
	int n;
	struct kmip_item item[KMIP_MAX_BATCH];
};

/* One field of a structure: its tag, type and whether it may repeat; the table order is
 * the order the specification gives. */
struct kmip_field {
	uint32_t tag;
	uint8_t type;
	uint8_t repeat;
};

/*
 * Check the direct children of s against a field table: known fields of the right type,
 * in table order, not repeated unless allowed.  found[i] receives the first occurrence of
 * field i (or NULL).  Unknown fields: ignored when `lenient` (the request is of a newer
 * minor version than ours, spec 11 "Protocol minor version mismatch"), Invalid Field
 * otherwise (a field that the request's own version does not define).
 * Returns 0 or a Result Reason, with *why set.
 */
static uint32_t kmip_check_fields(const struct ttlv_doc *d, const struct ttlv *s,
                                  const struct kmip_field *f, size_t nf, int lenient,
                                  const struct ttlv **found, const char *where,
                                  const char **why)
{
	size_t last = 0;
	int any = 0;

	for (size_t k = 0; k < nf; k++)
		found[k] = NULL;
	for (int i = s->child; i >= 0; i = d->it[i].next) {
		const struct ttlv *t = &d->it[i];
		size_t k;
		for (k = 0; k < nf; k++)
			if (f[k].tag == t->tag)
				break;
		if (k == nf) {
			if (lenient)
				continue;
			*why = where;
			return RR_INVALID_FIELD;
		}
		if (t->type != f[k].type) {
			*why = where;
			return RR_INVALID_MESSAGE;
		}
		if (found[k] && !f[k].repeat) {
			*why = where;
			return RR_INVALID_MESSAGE;
		}
		if (any && k < last) {
			*why = where;
			return RR_INVALID_MESSAGE;
		}
		if (!found[k])
			found[k] = t;
		last = k;
		any = 1;
	}
	return 0;
}

/*
 * Batch Item of a Request Message (spec 7.2):
 *
 *   Operation              Enumeration  required
 *   Unique Batch Item ID   Byte String  required if Batch Count > 1
 *   Request Payload        Structure    required
 *   Message Extension      Structure    optional
 *
 * Message Extension (spec 6.16): Vendor Identification (Text String), Criticality
 * Indicator (Boolean), Vendor Extension (Structure).  This server understands no
 * extension: a critical one fails the item with Feature Not Supported (OASIS TC-72-12),
 * a non-critical one is ignored (TC-71-12).
 */
static void kmip_parse_item(const struct ttlv_doc *d, const struct ttlv *bi, int lenient,
                            struct kmip_item *it)
{
	static const struct kmip_field fields[] = {
		{ KT_OPERATION, TT_ENUM, 0 },
		{ KT_UNIQUE_BATCH_ITEM_ID, TT_BYTES, 0 },
		{ KT_REQUEST_PAYLOAD, TT_STRUCT, 0 },
		{ KT_MESSAGE_EXTENSION, TT_STRUCT, 0 },
	};
	static const struct kmip_field ext_fields[] = {
		{ KT_VENDOR_IDENTIFICATION, TT_TEXT, 0 },
		{ KT_CRITICALITY_INDICATOR, TT_BOOL, 0 },
		{ KT_VENDOR_EXTENSION, TT_STRUCT, 0 },
	};
	const struct ttlv *f[ARRAY_LEN(fields)], *ef[ARRAY_LEN(ext_fields)], *t;

	memset(it, 0, sizeof *it);
	/* Operation and ID first, so that even a malformed item can be echoed. */
	if (kmip_get(d, bi, KT_OPERATION, TT_ENUM, &t) == 0)
		it->op = (uint32_t)t->num;
	if (kmip_get(d, bi, KT_UNIQUE_BATCH_ITEM_ID, TT_BYTES, &t) == 0) {
		it->bid = t->val;
		it->bid_len = t->len;
	}
	it->reason = kmip_check_fields(d, bi, fields, ARRAY_LEN(fields), lenient, f,
	                               "malformed Batch Item", &it->why);
	if (it->reason)
		return;
	if (f[0] == NULL) {
		it->reason = RR_INVALID_MESSAGE;
		it->why = "Batch Item without Operation";
		return;
	}
	if (f[2] == NULL) {
		it->reason = RR_INVALID_MESSAGE;
		it->why = "Batch Item without Request Payload";
		return;
	}
	it->payload = f[2];
	if (f[3] != NULL) {
		it->reason = kmip_check_fields(d, f[3], ext_fields, ARRAY_LEN(ext_fields), lenient,
		                               ef, "malformed Message Extension", &it->why);
		if (it->reason)
			return;
		if (ef[0] == NULL || ef[1] == NULL || ef[2] == NULL) {
			it->reason = RR_INVALID_MESSAGE;
			it->why = "incomplete Message Extension";
			return;
		}
		if (ef[1]->num) {
			it->reason = RR_FEATURE_NOT_SUPPORTED;
			it->why = "critical Message Extension not supported";
			return;
		}
	}
}

/*
 * Authentication (spec 6.6) and Credential (spec 2.1.2):
 *
 *   Authentication:   Credential                 Structure (one in 1.2)
 *   Credential:       Credential Type            Enumeration
 *                     Credential Value           varies by type
 *   Username and Password (type 1) value:
 *                     Username                   Text String, required
 *                     Password                   Text String, optional
 *
 * Other credential types are accepted and ignored (has_cred stays 0, so that the
 * operations answer Authentication Not Successful where they need one).
 */
static uint32_t kmip_parse_auth(const struct ttlv_doc *d, const struct ttlv *auth, int lenient,
                                struct kmip_request *r, const char **why)
{
	static const struct kmip_field auth_fields[] = { { KT_CREDENTIAL, TT_STRUCT, 1 } };
	static const struct kmip_field up_fields[] = {
		{ KT_USERNAME, TT_TEXT, 0 },
		{ KT_PASSWORD, TT_TEXT, 0 },
	};
	const struct ttlv *af[1], *uf[2], *t;
	uint32_t rr;

	rr = kmip_check_fields(d, auth, auth_fields, 1, lenient, af, "malformed Authentication", why);
	if (rr)
		return rr;
	if (af[0] == NULL) {
		*why = "Authentication without Credential";
		return RR_INVALID_MESSAGE;
	}
	for (int i = auth->child; i >= 0; i = d->it[i].next) {
		const struct ttlv *cred = &d->it[i];
		uint32_t ct;
		if (cred->tag != KT_CREDENTIAL)
			continue;
		if (kmip_get_enum(d, cred, KT_CREDENTIAL_TYPE, &ct) != 0 ||
		    (t = ttlv_find(d, cred, KT_CREDENTIAL_VALUE)) == NULL) {
			*why = "Credential without Credential Type or Value";
			return RR_INVALID_MESSAGE;
		}
		if (ct != CT_USERNAME_AND_PASSWORD || r->has_cred)
			continue;
		if (t->type != TT_STRUCT) {
			*why = "Username and Password credential is not a Structure";
			return RR_INVALID_MESSAGE;
		}
		rr = kmip_check_fields(d, t, up_fields, 2, lenient, uf, "malformed Credential Value",
		                       why);
		if (rr)
			return rr;
		if (uf[0] == NULL) {
			*why = "Credential without Username";
			return RR_INVALID_MESSAGE;
		}
		r->has_cred = 1;
		r->user = uf[0]->val;
		r->user_len = uf[0]->len;
		if (uf[1]) {
			r->pass = uf[1]->val;
			r->pass_len = uf[1]->len;
		}
	}
	return 0;
}

/*
 * Request Message (spec 7.1): Request Header, then one or more Batch Items.
 *
 * Request Header (spec 7.2):
 *   Protocol Version                  Structure    required (Major, Minor: Integers)
 *   Maximum Response Size             Integer      optional
 *   Asynchronous Indicator            Boolean      optional
 *   Attestation Capable Indicator     Boolean      optional (1.2)
 *   Attestation Type                  Enumeration  optional, repeated (1.2)
 *   Authentication                    Structure    optional
 *   Batch Error Continuation Option   Enumeration  optional, default Stop
 *   Batch Order Option                Boolean      optional
 *   Time Stamp                        Date-Time    optional (ignored)
 *   Batch Count                       Integer      required
 *
 * Returns 0, or a Result Reason for the whole message (spec 11: answered with a header
 * and one batch item without Operation, Operation Failed / reason), *why saying what.
 * Decisions, following spec 11 and reference/kmip-notes.md:
 *   - not a Request Message, header or version missing, a wrong type, a field twice or
 *     out of the specified order, major version other than 1: Invalid Message;
 *   - minor version 0..2: an unknown field is Invalid Field; minor > 2: unknown fields are
 *     ignored and the request is treated as 1.2;
 *   - Batch Count missing or not the number of Batch Items, or Batch Count > 1 with an
 *     item lacking its Unique Batch Item ID: Invalid Message;
 *   - more than KMIP_MAX_BATCH items: Feature Not Supported (a limit of this server, the
 *     message itself is valid);
 *   - Batch Error Continuation Option outside Continue/Stop/Undo: Invalid Field.  Whether
 *     Undo can be honoured is for the operations to decide.
 * Problems inside one Batch Item only fail that item (item[i].reason).
 */
static uint32_t kmip_parse_request(const struct ttlv_doc *d, struct kmip_request *r,
                                   const char **why)
{
	static const struct kmip_field hdr_fields[] = {
		{ KT_PROTOCOL_VERSION, TT_STRUCT, 0 },
		{ KT_MAXIMUM_RESPONSE_SIZE, TT_INT, 0 },
		{ KT_ASYNCHRONOUS_INDICATOR, TT_BOOL, 0 },
		{ KT_ATTESTATION_CAPABLE_INDICATOR, TT_BOOL, 0 },
		{ KT_ATTESTATION_TYPE, TT_ENUM, 1 },
		{ KT_AUTHENTICATION, TT_STRUCT, 0 },
		{ KT_BATCH_ERROR_CONTINUATION_OPTION, TT_ENUM, 0 },
		{ KT_BATCH_ORDER_OPTION, TT_BOOL, 0 },
		{ KT_TIME_STAMP, TT_DATETIME, 0 },
		{ KT_BATCH_COUNT, TT_INT, 0 },
	};
	enum { H_VER, H_MAXRESP, H_ASYNC, H_ATT_CAP, H_ATT_TYPE, H_AUTH, H_BEC, H_BOO, H_TS,
	       H_COUNT };
	const struct ttlv *hf[ARRAY_LEN(hdr_fields)], *root, *hdr, *ver;
	int32_t major, minor;
	uint32_t rr;
	int lenient;
	const char *dummy;

	if (why == NULL)
		why = &dummy;
	*why = NULL;
	memset(r, 0, offsetof(struct kmip_request, item));
	r->max_resp = -1;
	r->err_cont = BEC_STOP;
	r->major = KMIP_MAJOR;
	r->minor = KMIP_MINOR;

	if (d->n < 1 || d->it[0].tag != KT_REQUEST_MESSAGE || d->it[0].type != TT_STRUCT) {
		*why = "not a Request Message";
		return RR_INVALID_MESSAGE;
	}
	root = &d->it[0];
	hdr = root->child >= 0 ? &d->it[root->child] : NULL;
	if (hdr == NULL || hdr->tag != KT_REQUEST_HEADER || hdr->type != TT_STRUCT) {
		*why = "Request Message does not start with a Request Header";
		return RR_INVALID_MESSAGE;
	}
	if (kmip_get_struct(d, hdr, KT_PROTOCOL_VERSION, &ver) != 0 ||
	    kmip_get_int(d, ver, KT_PROTOCOL_VERSION_MAJOR, &major) != 0 ||
	    kmip_get_int(d, ver, KT_PROTOCOL_VERSION_MINOR, &minor) != 0) {
		*why = "missing or malformed Protocol Version";
		return RR_INVALID_MESSAGE;
	}
	if (major != KMIP_MAJOR) {
		*why = "unsupported protocol major version";
		return RR_INVALID_MESSAGE;
	}
	if (minor < 0) {
		*why = "negative protocol minor version";
		return RR_INVALID_MESSAGE;
	}
	r->major = major;
	r->minor = minor;
	lenient = minor > KMIP_MINOR;

	rr = kmip_check_fields(d, hdr, hdr_fields, ARRAY_LEN(hdr_fields), lenient, hf,
	                       "malformed Request Header", why);
	if (rr)
		return rr;
	if (hf[H_COUNT] == NULL) {
		*why = "Request Header without Batch Count";
		return RR_INVALID_MESSAGE;
	}
	if (hf[H_COUNT]->num < 1) {
		*why = "Batch Count less than 1";
		return RR_INVALID_MESSAGE;
	}
	r->batch_count = (uint32_t)hf[H_COUNT]->num;
	if (hf[H_MAXRESP])
		r->max_resp = hf[H_MAXRESP]->num;
	if (hf[H_ASYNC])
		r->async = (int)hf[H_ASYNC]->num;
	if (hf[H_BEC]) {
		r->err_cont = (uint32_t)hf[H_BEC]->num;
		if (r->err_cont < BEC_CONTINUE || r->err_cont > BEC_UNDO) {
			*why = "unknown Batch Error Continuation Option";
			return RR_INVALID_FIELD;
		}
	}
	if (hf[H_AUTH]) {
		rr = kmip_parse_auth(d, hf[H_AUTH], lenient, r, why);
		if (rr)
			return rr;
	}

	for (int i = hdr->next; i >= 0; i = d->it[i].next) {
		const struct ttlv *t = &d->it[i];
		if (t->tag != KT_BATCH_ITEM) {
			if (t->tag == KT_REQUEST_HEADER) {
				*why = "second Request Header";
				return RR_INVALID_MESSAGE;
			}
			if (lenient)
				continue;
			*why = "unknown field in Request Message";
			return RR_INVALID_FIELD;
		}
		if (t->type != TT_STRUCT) {
			*why = "Batch Item is not a Structure";
			return RR_INVALID_MESSAGE;
		}
		if (r->n >= KMIP_MAX_BATCH) {
			*why = "too many Batch Items";
			return RR_FEATURE_NOT_SUPPORTED;
		}
		kmip_parse_item(d, t, lenient, &r->item[r->n++]);
	}
	if (r->n == 0) {
		*why = "Request Message without Batch Item";
		return RR_INVALID_MESSAGE;
	}
	if (r->batch_count != (uint32_t)r->n) {
		*why = "Batch Count does not match the number of Batch Items";
		return RR_INVALID_MESSAGE;
	}
	if (r->n > 1)
		for (int i = 0; i < r->n; i++)
			if (r->item[i].bid == NULL) {
				*why = "Batch Item without Unique Batch Item ID in a batch of several";
				return RR_INVALID_MESSAGE;
			}
	return 0;
}

/* ---- response writing ---- */

/*
 * Response Message (spec 7.1) and Response Header (spec 7.2):
 *
 *   Response Header:  Protocol Version, Time Stamp, Batch Count
 *
 * The version is the request's (a client may break on fields of a version it did not
 * ask for), capped to 1.2; anything other than major 1 is answered as 1.2.
 * Leaves the Response Message open for the batch items.
 */
static void kmip_resp_begin(struct ttlv_enc *e, int major, int minor, uint32_t batch_count,
                            int64_t now)
{
	if (major != KMIP_MAJOR || minor < 0) {
		major = KMIP_MAJOR;
		minor = KMIP_MINOR;
	} else if (minor > KMIP_MINOR) {
		minor = KMIP_MINOR;
	}
	ttlv_open(e, KT_RESPONSE_MESSAGE);
	ttlv_open(e, KT_RESPONSE_HEADER);
	ttlv_open(e, KT_PROTOCOL_VERSION);
	ttlv_put_int(e, KT_PROTOCOL_VERSION_MAJOR, major);
	ttlv_put_int(e, KT_PROTOCOL_VERSION_MINOR, minor);
	ttlv_close(e);
	ttlv_put_datetime(e, KT_TIME_STAMP, now);
	ttlv_put_int(e, KT_BATCH_COUNT, (int32_t)batch_count);
	ttlv_close(e);
}

/*
 * Response Batch Item (spec 7.2), up to the payload:
 *
 *   Operation              Enumeration  if it was in the request (op 0: omitted)
 *   Unique Batch Item ID   Byte String  if it was in the request
 *   Result Status          Enumeration
 *   Result Reason          Enumeration  required when the status is a failure (0: omitted)
 *   Result Message         Text String  optional (NULL: omitted)
 *
 * The caller adds a Response Payload if any and ttlv_close()s the item.
 */
static void kmip_item_begin(struct ttlv_enc *e, uint32_t op, const struct kmip_item *it,
                            uint32_t status, uint32_t reason, const char *msg)
{
	ttlv_open(e, KT_BATCH_ITEM);
	if (op)
		ttlv_put_enum(e, KT_OPERATION, op);
	if (it && it->bid)
		ttlv_put_bytes(e, KT_UNIQUE_BATCH_ITEM_ID, it->bid, it->bid_len);
	ttlv_put_enum(e, KT_RESULT_STATUS, status);
	if (reason)
		ttlv_put_enum(e, KT_RESULT_REASON, reason);
	if (msg)
		ttlv_put_text(e, KT_RESULT_MESSAGE, msg, strlen(msg));
}

/* Bytes of the smallest failure item for it (no Result Message): what a batch keeps in
 * reserve for each item still to come, so that an earlier answer cannot take its room. */
static size_t kmip_fail_item_size(const struct kmip_item *it)
{
	size_t n = TTLV_HDR + 2 * (TTLV_HDR + 8);        /* Batch Item, Status, Reason */
	if (it->op)
		n += TTLV_HDR + 8;
	if (it->bid)
		n += TTLV_HDR + it->bid_len + ttlv_pad(it->bid_len);
	return n;
}

static void kmip_resp_end(struct ttlv_enc *e)
{
	ttlv_close(e);
}

/*
 * The whole answer to a message that kmip_parse_request() refused: header and one batch
 * item without Operation, Operation Failed with the reason (spec 11).
 */
static void kmip_resp_error(struct ttlv_enc *e, int major, int minor, int64_t now,
                            uint32_t reason, const char *msg)
{
	kmip_resp_begin(e, major, minor, 1, now);
	kmip_item_begin(e, 0, NULL, RS_OPERATION_FAILED, reason, msg);
	ttlv_close(e);
	kmip_resp_end(e);
}

/* ---- dumper ---- */

struct kmip_out {
	char *p;
	size_t cap, len;
};

static void kmip_out(struct kmip_out *o, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void kmip_out(struct kmip_out *o, const char *fmt, ...)
{
	va_list ap;
	if (o->len + 1 >= o->cap)
		return;
	va_start(ap, fmt);
	int k = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	o->len += (size_t)k < o->cap - o->len ? (size_t)k : o->cap - o->len - 1;
}

/* Hex of a byte value, the first 20 bytes then "...(N bytes)" (the PyKMIP dump style). */
static void kmip_out_hex(struct kmip_out *o, const uint8_t *b, uint32_t n)
{
	uint32_t show = n > 20 ? 20 : n;
	for (uint32_t i = 0; i < show; i++)
		kmip_out(o, "%02x", b[i]);
	if (n > show)
		kmip_out(o, "...(%u bytes)", (unsigned)n);
}

static const char *const kmip_type_names[] = {
	"?", "Structure", "Integer", "LongInteger", "BigInteger", "Enumeration", "Boolean",
	"TextString", "ByteString", "DateTime", "Interval"
};

/*
 * Any decoded message as indented text, one item a line, in the format of the PyKMIP 0.10
 * capture dumps (shared/kmip-vectors/pykmip-0.10-capture/ *.txt):
 *
 *   NAME (TAG) Type len=N = value
 *
 * two spaces of indent per level; Integer, Long Integer and Interval in decimal,
 * Enumeration 0x%08X, Boolean True/False, Date-Time ISO 8601 UTC, Text String quoted
 * (control bytes, quote and backslash as \xNN), Byte String and Big Integer in lower-case
 * hex cut after 20 bytes.  The Password is printed as '***', and its length as len=*, as
 * are the lengths of the structures that hold it (which would tell the PIN's length to
 * within 8 bytes); every Byte String and Big Integer inside a Private Key, Symmetric Key,
 * Secret Data or Split Key object (their key material, in any format) is '***' too.  Tags
 * outside KMIP 1.2 are named by their hex value.  Output is cut (NUL-terminated) when out
 * is full.
 */
static int kmip_holds_password(const struct ttlv_doc *d, int i)
{
	if (d->it[i].tag == KT_PASSWORD)
		return 1;
	if (d->it[i].type != TT_STRUCT)
		return 0;
	for (int j = i + 1; j < d->n && d->it[j].depth > d->it[i].depth; j++)
		if (d->it[j].tag == KT_PASSWORD)
			return 1;
	return 0;
}

static void kmip_dump(const struct ttlv_doc *d, char *out, size_t cap)
{
	struct kmip_out o = { out, cap, 0 };
	int secret = -1;        /* depth of the secret object being dumped, -1: none */

	if (cap == 0)
		return;
	out[0] = '\0';
	for (int i = 0; i < d->n; i++) {
		const struct ttlv *t = &d->it[i];
		const char *name = kmip_tag_name(t->tag);
		if (secret >= 0 && t->depth <= secret)
			secret = -1;
		if (secret < 0 && (t->tag == KT_PRIVATE_KEY || t->tag == KT_SYMMETRIC_KEY ||
		                   t->tag == KT_SECRET_DATA || t->tag == KT_SPLIT_KEY))
			secret = t->depth;
		kmip_out(&o, "%*s", 2 * t->depth, "");
		if (name)
			kmip_out(&o, "%s", name);
		else
			kmip_out(&o, "0x%06X", (unsigned)t->tag);
		kmip_out(&o, " (%06X) %s len=", (unsigned)t->tag,
		         kmip_type_names[t->type <= TT_INTERVAL ? t->type : 0]);
		if (kmip_holds_password(d, i))
			kmip_out(&o, "*");
		else
			kmip_out(&o, "%u", (unsigned)t->len);
		switch (t->type) {
		case TT_INT:
		case TT_LONG:
			kmip_out(&o, " = %lld", (long long)t->num);
			break;
		case TT_INTERVAL:
			kmip_out(&o, " = %llu", (unsigned long long)t->num);
			break;
		case TT_ENUM:
			kmip_out(&o, " = 0x%08X", (unsigned)t->num);
			break;
		case TT_BOOL:
			kmip_out(&o, " = %s", t->num ? "True" : "False");
			break;
		case TT_DATETIME: {
			time_t s = (time_t)t->num;
			struct tm tm;
			char when[64];
			if ((int64_t)s == t->num && gmtime_r(&s, &tm) &&
			    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0)
				kmip_out(&o, " = %s", when);
			else
				kmip_out(&o, " = %lld", (long long)t->num);
			break;
		}
		case TT_TEXT:
			if (t->tag == KT_PASSWORD) {
				kmip_out(&o, " = '***'");
				break;
			}
			kmip_out(&o, " = '");
			for (uint32_t k = 0; k < t->len; k++) {
				uint8_t c = t->val[k];
				if (c < 0x20 || c == 0x7F || c == '\'' || c == '\\')
					kmip_out(&o, "\\x%02x", c);
				else
					kmip_out(&o, "%c", c);
			}
			kmip_out(&o, "'");
			break;
		case TT_BYTES:
		case TT_BIGINT:
			if (secret >= 0) {
				kmip_out(&o, " = ***");
				break;
			}
			kmip_out(&o, " = ");
			kmip_out_hex(&o, t->val, t->len);
			break;
		default:
			break;
		}
		kmip_out(&o, "\n");
	}
}
/* ==== 5. Configuration and command line =================================== */

/*
 * The configuration file is the original's (NLnet Labs kmip2pkcs11 / cascade-hsm-bridge):
 * TOML, keys in kebab-case, unknown keys and tables rejected.  Every key is one row of
 * CFG_KEYS below; parsing, defaults, the `set` and `line` bookkeeping and the test that
 * config.example and the man page document every key are all driven by that table.
 *
 * Our own keys (extensions, absent from the original): [pkcs11] workers, init-args, [server]
 * max-connections, max-connections-per-source, max-message-size, handshake-timeout,
 * first-request-timeout, idle-timeout, [server.identity]
 * client-ca-path, [daemon] state-dir.  [daemon] chroot is the original's (rarely used).
 */

#define CFG_DEFAULT_PATH  "/etc/kmip2pkcs11/config.toml"
#define CFG_FILE_MAX      (64 * 1024)   /* larger configuration files are refused */
#define CFG_PATH_MAX      PATH_MAX      /* every path, including its NUL */
#define CFG_NAME_MAX      256           /* user and group names of `identity` */
#define CFG_ADDR_MAX      64            /* "[ffff:...:255.255.255.255]:65535" fits */
#define CFG_KEY_MAX       64            /* bare keys and table names */
#define CFG_INLINE_MAX    4             /* keys in one inline table */
#define CFG_WORKERS_AUTO  (-1)          /* `workers` absent: CPU count, capped by the token */
#define CFG_WORKERS_MAX   256

/* Tables of the file. */
enum { CT_ROOT, CT_PKCS11, CT_SERVER, CT_SERVER_IDENTITY, CT_DAEMON, CT_COUNT };
static const char *const cfg_table_names[CT_COUNT] = {
	"", "pkcs11", "server", "server.identity", "daemon"
};

/* Value types: how a key's TOML value is checked and stored. */
enum {
	CV_VERSION,     /* string, "v1" only */
	CV_PATH,        /* non-empty string into a char[CFG_PATH_MAX] */
	CV_TEXT,        /* non-empty string, not a file name, into a char[CFG_PATH_MAX] */
	CV_INT,         /* integer within [min, max] into an int */
	CV_BOOL,        /* boolean into an int */
	CV_LEVEL,       /* log level name into an int LV_* */
	CV_TARGET,      /* { type = "stderr" | "syslog" | "file", path = "..." } */
	CV_ADDR,        /* "a.b.c.d:port" or "[v6]:port" */
	CV_IDENTITY     /* "user:group" or "user" */
};

/*
 * The keys.  X(ID, table, key, type, field, min, max, default, doc)
 * default: the value as written in TOML (applied by cfg_defaults through the same parser),
 *          NULL if the key has none.
 * doc:     the first comment line above the key in config.example (checked by the tests).
 */
#define CFG_KEYS(X) \
	X(VERSION, CT_ROOT, "version", CV_VERSION, version, 0, 0, NULL, \
	  "The configuration file format version; \"v1\" is the only one (required).") \
	X(LIB_PATH, CT_PKCS11, "lib-path", CV_PATH, lib_path, 0, 0, NULL, \
	  "The PKCS#11 module to load (required).") \
	X(WORKERS, CT_PKCS11, "workers", CV_INT, workers, 0, CFG_WORKERS_MAX, NULL, \
	  "Event loops, each a thread serving its own connections (extension).") \
	X(INIT_ARGS, CT_PKCS11, "init-args", CV_TEXT, init_args, 0, 0, NULL, \
	  "A string for the module's C_Initialize, in pReserved (extension).") \
	X(ADDR, CT_SERVER, "addr", CV_ADDR, addr, 0, 0, "\"127.0.0.1:5696\"", \
	  "The IP address and TCP port to listen on.") \
	X(MAX_CONNECTIONS, CT_SERVER, "max-connections", CV_INT, max_connections, 1, 65535, \
	  "1024", "Connections served at the same time (extension).") \
	X(MAX_CONN_PER_SOURCE, CT_SERVER, "max-connections-per-source", CV_INT, \
	  max_conn_per_source, 1, 65535, "32", \
	  "Connections one client address may hold at the same time (extension).") \
	X(MAX_MESSAGE_SIZE, CT_SERVER, "max-message-size", CV_INT, max_message_size, 1024, \
	  16777216, "65536", "The largest KMIP request accepted, in bytes (extension).") \
	X(HANDSHAKE_TIMEOUT, CT_SERVER, "handshake-timeout", CV_INT, handshake_timeout, 1, 3600, \
	  "10", "Seconds a client has to complete the TLS handshake (extension).") \
	X(FIRST_REQUEST_TIMEOUT, CT_SERVER, "first-request-timeout", CV_INT, \
	  first_request_timeout, 1, 86400, "10", \
	  "Seconds a new connection has to send its first request (extension).") \
	X(IDLE_TIMEOUT, CT_SERVER, "idle-timeout", CV_INT, idle_timeout, 1, 86400, "120", \
	  "Seconds an idle connection is kept open (extension).") \
	X(CERT_PATH, CT_SERVER_IDENTITY, "cert-path", CV_PATH, cert_path, 0, 0, NULL, \
	  "The server certificate (chain), PEM.") \
	X(KEY_PATH, CT_SERVER_IDENTITY, "key-path", CV_PATH, key_path, 0, 0, NULL, \
	  "The private key of the server certificate, PEM.") \
	X(CLIENT_CA_PATH, CT_SERVER_IDENTITY, "client-ca-path", CV_PATH, client_ca_path, 0, 0, \
	  NULL, "Require client certificates issued by these CAs, PEM (extension).") \
	X(LOG_LEVEL, CT_DAEMON, "log-level", CV_LEVEL, log_level, 0, 0, "\"info\"", \
	  "The least severe messages that are logged.") \
	X(LOG_TARGET, CT_DAEMON, "log-target", CV_TARGET, log_target, 0, 0, \
	  "{ type = \"stderr\" }", "Where log messages go.") \
	X(DAEMONIZE, CT_DAEMON, "daemonize", CV_BOOL, daemonize, 0, 0, "false", \
	  "Fork into the background at start.") \
	X(PID_FILE, CT_DAEMON, "pid-file", CV_PATH, pid_file, 0, 0, NULL, \
	  "A file to write the process ID to.") \
	X(IDENTITY, CT_DAEMON, "identity", CV_IDENTITY, user, 0, 0, NULL, \
	  "The user (and group) to run as after start-up.") \
	X(CHROOT, CT_DAEMON, "chroot", CV_PATH, chroot_dir, 0, 0, NULL, \
	  "A directory to chroot into after start-up.") \
	X(STATE_DIR, CT_DAEMON, "state-dir", CV_PATH, state_dir, 0, 0, \
	  "\"/var/lib/kmip2pkcs11\"", \
	  "Where the generated self-signed certificate and its key are kept (extension).")

#define CFG_ENUM(id, t, k, ty, f, mn, mx, d, doc) CFG_K_##id,
enum { CFG_KEYS(CFG_ENUM) CFG_NKEYS };
#undef CFG_ENUM

/* All settings; cfg_defaults() gives a valid configuration except for the required keys. */
struct cfg {
	char version[8];                        /* "v1" */
	/* [pkcs11] */
	char lib_path[CFG_PATH_MAX];
	int workers;                            /* CFG_WORKERS_AUTO, or 0 (inline) .. MAX */
	char init_args[CFG_PATH_MAX];           /* "" when not set */
	/* [server] */
	char addr[CFG_ADDR_MAX];                /* as written, for messages */
	struct sockaddr_storage listen_sa;      /* addr parsed: AF_INET or AF_INET6 */
	socklen_t listen_salen;
	int max_connections;
	int max_conn_per_source;                /* per IPv4 address or IPv6 /64 */
	int max_message_size;                   /* bytes */
	int handshake_timeout;                  /* seconds */
	int first_request_timeout;              /* seconds */
	int idle_timeout;                       /* seconds */
	/* [server.identity]; "" when not set */
	char cert_path[CFG_PATH_MAX];
	char key_path[CFG_PATH_MAX];
	char client_ca_path[CFG_PATH_MAX];
	/* [daemon] */
	int log_level;                          /* LV_* */
	int log_target;                         /* LOG_TO_* */
	char log_file[CFG_PATH_MAX];            /* LOG_TO_FILE */
	int daemonize;
	char pid_file[CFG_PATH_MAX];            /* "" when not set */
	char user[CFG_NAME_MAX];                /* identity; "" when not set */
	char group[CFG_NAME_MAX];               /* "user" alone means group = user */
	char chroot_dir[CFG_PATH_MAX];          /* "" when not set */
	char state_dir[CFG_PATH_MAX];
	/* command line only (the original's manual page): no key in the file */
	char working_dir[CFG_PATH_MAX];         /* --working-dir; "" when not set */
	int syslog_facility;                    /* --syslog-facility: LOG_*, LOG_DAEMON */
	/* bookkeeping, indexed by CFG_K_* */
	const char *file;                       /* the file loaded, for "file:line:" messages */
	unsigned char set[CFG_NKEYS];           /* given in the file or on the command line */
	int line[CFG_NKEYS];                    /* line in the file, 0 if not from the file */
	const char *import[3];                  /* --import FILE, --username, --name (argv) */
};

struct cfg_key {
	uint8_t table, type;
	const char *key;
	size_t off, size;                       /* the field in struct cfg */
	long min, max;                          /* CV_INT */
	const char *def;                        /* TOML text or NULL */
#ifdef K2P_TEST
	const char *doc;        /* checked against config.example; the daemon has no use for it */
#define CFG_DOC(dc) , dc
#else
#define CFG_DOC(dc)
#endif
};

#define CFG_ROW(id, t, k, ty, f, mn, mx, d, dc) \
	{ t, ty, k, offsetof(struct cfg, f), sizeof(((struct cfg *)0)->f), mn, mx, d CFG_DOC(dc) },
static const struct cfg_key cfg_keys[CFG_NKEYS] = { CFG_KEYS(CFG_ROW) };
#undef CFG_ROW

/* ---- values ---- */

enum { VK_STR, VK_INT, VK_BOOL, VK_TABLE };

struct cfg_scalar {
	int kind;                               /* VK_STR, VK_INT or VK_BOOL */
	int64_t i;                              /* VK_INT, VK_BOOL */
	char s[CFG_PATH_MAX];                   /* VK_STR, NUL-terminated, no NUL inside */
};

struct cfg_val {
	struct cfg_scalar v;                    /* kind VK_TABLE: v unused, kv[0..n) hold it */
	int n;
	struct { char key[CFG_KEY_MAX]; struct cfg_scalar v; } kv[CFG_INLINE_MAX];
};

struct cfg_parser {
	const char *name;                       /* file name for messages */
	const char *p, *end;
	int line;
	int table;                              /* CT_* of the current table */
	int table_line[CT_COUNT];               /* line of its header, 0: not (yet) defined */
	struct cfg *c;
	char *err;
	size_t errsz;
	struct cfg_val val;                     /* the value being parsed (large: kept here) */
};

static int cfg_error(struct cfg_parser *ps, int line, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int cfg_error(struct cfg_parser *ps, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->errsz == 0)
		return -1;
	if (line > 0)
		n = snprintf(ps->err, ps->errsz, "%s:%d: ", ps->name, line);
	else
		n = snprintf(ps->err, ps->errsz, "%s: ", ps->name);
	if (n < 0 || (size_t)n >= ps->errsz)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errsz - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* " in [pkcs11]", or "" for the top level: appended to messages about a key. */
static const char *cfg_in(int table, char *buf, size_t n)
{
	if (table == CT_ROOT)
		return "";
	snprintf(buf, n, " in [%s]", cfg_table_names[table]);
	return buf;
}

/* ---- the semantic parsers, shared by the file, the defaults and the command line ---- */

/* "a.b.c.d:port" or "[v6]:port" (as Rust's SocketAddr: IP literals only, no host names). */
static int cfg_addr_parse(const char *s, struct sockaddr_storage *sa, socklen_t *salen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *h = s;
	size_t hn;

	memset(sa, 0, sizeof *sa);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		h = s + 1;
		hn = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
			return -1;              /* no port, or a bare IPv6 address */
		hn = (size_t)(colon - s);
	}
	if (hn == 0 || hn >= sizeof host)
		return -1;
	memcpy(host, h, hn);
	host[hn] = '\0';

	const char *d = colon + 1;
	long port = 0;
	if (*d == '\0' || strlen(d) > 5)
		return -1;
	for (; *d; d++) {
		if (*d < '0' || *d > '9')
			return -1;
		port = port * 10 + (*d - '0');
	}
	if (port < 1 || port > 65535)
		return -1;

	if (s[0] == '[') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
		if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
			return -1;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*salen = sizeof *a6;
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
		if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
			return -1;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*salen = sizeof *a4;
	}
	return 0;
}

/*
 * A user or group of `identity` as a number: 1 with *id set when s is all decimal digits
 * and fits, 0 when s is a name, -1 when it is neither (a sign, or a number out of range).
 * uid_t and gid_t are 32 bits on Linux and (uid_t)-1 means "no change" to setresuid, so
 * 0 .. 4294967294; a wider number must not wrap to 0 (root).
 */
#define CFG_ID_MAX 4294967294UL

static int cfg_id_number(const char *s, unsigned long *id)
{
	unsigned long v = 0;

	if (s[0] == '-' || s[0] == '+')
		return -1;
	if (s[0] == '\0' || strspn(s, "0123456789") != strlen(s))
		return 0;
	for (const char *q = s; *q; q++) {
		if (v > (CFG_ID_MAX - (unsigned long)(*q - '0')) / 10)
			return -1;
		v = v * 10 + (unsigned long)(*q - '0');
	}
	*id = v;
	return 1;
}

/* "user:group" or "user": names or numeric IDs, resolved at start-up by the daemon. */
static int cfg_identity_parse(const char *s, char *user, char *group)
{
	const char *colon = strchr(s, ':');
	size_t un = colon ? (size_t)(colon - s) : strlen(s);
	const char *g = colon ? colon + 1 : s;
	size_t gn = colon ? strlen(g) : un;

	if (un == 0 || gn == 0 || un >= CFG_NAME_MAX || gn >= CFG_NAME_MAX || strchr(g, ':'))
		return -1;
	for (const char *q = s; *q; q++)
		if ((unsigned char)*q <= ' ' || *q == 0x7f)
			return -1;
	memcpy(user, s, un);
	user[un] = '\0';
	memcpy(group, g, gn);
	group[gn] = '\0';
	return 0;
}

/* Copy a path into a char[CFG_PATH_MAX]: -1 if empty or too long. */
static int cfg_path_set(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= cap)
		return -1;
	memcpy(dst, s, n + 1);
	return 0;
}

/* The command line's form of a log target: "stderr", "syslog" or "file:PATH". */
static int cfg_target_parse(const char *s, int *target, const char **path)
{
	*path = NULL;
	if (strcmp(s, "stderr") == 0)
		*target = LOG_TO_STDERR;
	else if (strcmp(s, "syslog") == 0)
		*target = LOG_TO_SYSLOG;
	else if (strncmp(s, "file:", 5) == 0 && s[5] != '\0') {
		*target = LOG_TO_FILE;
		*path = s + 5;
	} else
		return -1;
	return 0;
}

/*
 * log-target = { type = "stderr" } | { type = "syslog" } | { type = "file", path = "..." }
 * The command-line form ("stderr", "syslog", "file:PATH") is also accepted as a string.
 */
static int cfg_set_target(struct cfg_parser *ps, int line, const struct cfg_val *v)
{
	struct cfg *c = ps->c;
	const char *type = NULL, *path = NULL;
	int target;

	if (v->v.kind == VK_STR) {
		if (cfg_target_parse(v->v.s, &target, &path) < 0)
			return cfg_error(ps, line, "'log-target' must be { type = \"stderr\" }, "
			                 "{ type = \"syslog\" } or { type = \"file\", path = \"...\" }");
		goto store;
	}
	if (v->v.kind != VK_TABLE)
		return cfg_error(ps, line, "'log-target' must be an inline table, "
		                 "e.g. { type = \"stderr\" }");
	for (int i = 0; i < v->n; i++) {
		const char *k = v->kv[i].key;
		if (strcmp(k, "type") != 0 && strcmp(k, "path") != 0)
			return cfg_error(ps, line, "unknown key '%s' in log-target", k);
		if (v->kv[i].v.kind != VK_STR)
			return cfg_error(ps, line, "'%s' in log-target must be a string", k);
		if (k[0] == 't')
			type = v->kv[i].v.s;
		else
			path = v->kv[i].v.s;
	}
	if (type == NULL)
		return cfg_error(ps, line, "log-target needs a 'type'");
	if (strcmp(type, "stderr") == 0)
		target = LOG_TO_STDERR;
	else if (strcmp(type, "syslog") == 0)
		target = LOG_TO_SYSLOG;
	else if (strcmp(type, "file") == 0)
		target = LOG_TO_FILE;
	else
		return cfg_error(ps, line, "log-target type must be \"stderr\", \"syslog\" or \"file\"");
	if (target == LOG_TO_FILE && path == NULL)
		return cfg_error(ps, line, "log-target type \"file\" needs a 'path'");
	if (target != LOG_TO_FILE && path != NULL)
		return cfg_error(ps, line, "'path' in log-target goes only with type \"file\"");
store:
	if (path != NULL && cfg_path_set(c->log_file, sizeof c->log_file, path) < 0)
		return cfg_error(ps, line, "the log-target path must not be empty");
	c->log_target = target;
	return 0;
}

/* Check one value against its key's type and store it. */
static int cfg_set(struct cfg_parser *ps, int k, int line, const struct cfg_val *v)
{
	const struct cfg_key *key = &cfg_keys[k];
	struct cfg *c = ps->c;
	char *field = (char *)c + key->off;
	const char *name = key->key;

	if (key->type == CV_TARGET)
		return cfg_set_target(ps, line, v);
	if (key->type == CV_INT) {
		if (v->v.kind != VK_INT)
			return cfg_error(ps, line, "'%s' must be an integer", name);
		if (v->v.i < key->min || v->v.i > key->max)
			return cfg_error(ps, line, "'%s' must be between %ld and %ld", name,
			                 key->min, key->max);
		*(int *)(void *)field = (int)v->v.i;
		return 0;
	}
	if (key->type == CV_BOOL) {
		if (v->v.kind != VK_BOOL)
			return cfg_error(ps, line, "'%s' must be a boolean (true or false)", name);
		*(int *)(void *)field = (int)v->v.i;
		return 0;
	}
	if (v->v.kind != VK_STR)
		return cfg_error(ps, line, "'%s' must be a string", name);
	const char *s = v->v.s;
	switch (key->type) {
	case CV_VERSION:
		if (strcmp(s, "v1") != 0)
			return cfg_error(ps, line, "unsupported configuration version "
			                 "(only \"v1\" is known)");
		memcpy(field, "v1", 3);
		return 0;
	case CV_PATH:
	case CV_TEXT:
		if (s[0] == '\0')
			return cfg_error(ps, line, "'%s' must not be empty", name);
		if (cfg_path_set(field, key->size, s) < 0)
			return cfg_error(ps, line, "'%s' is too long", name);
		return 0;
	case CV_LEVEL: {
		int lv = log_level_parse(s);
		if (lv < 0)
			return cfg_error(ps, line, "'%s' must be one of trace, debug, info, "
			                 "warning, error", name);
		c->log_level = lv;
		return 0;
	}
	case CV_ADDR:
		if (strlen(s) >= sizeof c->addr ||
		    cfg_addr_parse(s, &c->listen_sa, &c->listen_salen) < 0)
			return cfg_error(ps, line, "'%s' must be an IP address and port, "
			                 "e.g. \"127.0.0.1:5696\" or \"[::1]:5696\"", name);
		memcpy(c->addr, s, strlen(s) + 1);
		return 0;
	case CV_IDENTITY: {
		if (cfg_identity_parse(s, c->user, c->group) < 0)
			return cfg_error(ps, line, "'%s' must be \"user:group\" or \"user\"", name);
		const char *who[2] = { c->user, c->group }, *what[2] = { "user", "group" };
		for (int i = 0; i < 2; i++) {
			unsigned long id;
			if (cfg_id_number(who[i], &id) >= 0)
				continue;
			if (who[i][0] == '-' || who[i][0] == '+')
				return cfg_error(ps, line, "'%s': %s \"%s\" is neither a name nor a "
				                 "number", name, what[i], who[i]);
			return cfg_error(ps, line, "'%s': %s ID %s is out of range (0 to %lu)",
			                 name, what[i], who[i], CFG_ID_MAX);
		}
		return 0;
	}
	}
	return cfg_error(ps, line, "internal error: key '%s' has no type", name);
}

/* ---- the TOML subset ---- */

/*
 * Accepted grammar (a subset of TOML 1.0; anything else is refused with a message):
 *
 *   file         = *line
 *   line         = ws [ table / keyval ] ws [ comment ] ( LF / CRLF / end of file )
 *   table        = "[" ws key *( ws "." ws key ) ws "]"
 *   keyval       = key ws "=" ws value
 *   key          = 1*( ALPHA / DIGIT / "-" / "_" )           ; bare keys only
 *   value        = basic-string / literal-string / integer / boolean / inline-table
 *   basic-string = '"' *( char / escape ) '"'                ; one line
 *   escape       = "\" ( '"' / "\" / "b" / "t" / "n" / "f" / "r"
 *                      / "u" 4HEXDIG / "U" 8HEXDIG )         ; a Unicode scalar, not NUL
 *   literal-str  = "'" *char-but-quote "'"                   ; one line, no escapes
 *   integer      = [ "+" / "-" ] ( "0" / DIGIT1 *( ["_"] DIGIT ) )   ; fits in 64 bits
 *   boolean      = "true" / "false"
 *   inline-table = "{" ws [ keyval-s *( ws "," ws keyval-s ) ] ws "}"  ; one line
 *   keyval-s     = key ws "=" ws ( basic-string / literal-string / integer / boolean )
 *   comment      = "#" *( any byte but LF )
 *   ws           = *( SP / HTAB )
 *
 * Not supported: arrays, arrays of tables, floats, dates and times, multi-line strings,
 * quoted and dotted keys, hexadecimal / octal / binary integers, nested inline tables.
 */

/* Bare keys: A-Z a-z 0-9 - _ */
static int cfg_iskey(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

/* ws: spaces and tabs. */
static void cfg_ws(struct cfg_parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

/* The byte i ahead, or -1 past the end. */
static int cfg_peek(const struct cfg_parser *ps, size_t i)
{
	return (size_t)(ps->end - ps->p) > i ? (unsigned char)ps->p[i] : -1;
}

/* A bare key into out[CFG_KEY_MAX]. */
static int cfg_key_parse(struct cfg_parser *ps, char *out)
{
	size_t n = 0;
	int ch = cfg_peek(ps, 0);

	if (ch == '"' || ch == '\'')
		return cfg_error(ps, ps->line, "quoted keys are not supported");
	while (ps->p < ps->end && cfg_iskey((unsigned char)*ps->p)) {
		if (n + 1 >= CFG_KEY_MAX)
			return cfg_error(ps, ps->line, "key too long");
		out[n++] = *ps->p++;
	}
	out[n] = '\0';
	if (n == 0)
		return cfg_error(ps, ps->line, "expected a key");
	return 0;
}

/* After an item: spaces, an optional comment, then the end of the line. */
static int cfg_eol(struct cfg_parser *ps)
{
	cfg_ws(ps);
	if (ps->p < ps->end && *ps->p == '#')
		while (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r')
			ps->p++;
	if (ps->p == ps->end)
		return 0;
	if (*ps->p == '\r' && cfg_peek(ps, 1) == '\n')
		ps->p++;
	if (*ps->p != '\n')
		return cfg_error(ps, ps->line, "unexpected characters at the end of the line");
	ps->p++;
	ps->line++;
	return 0;
}

/* Append code point u (a Unicode scalar value) as UTF-8. */
static int cfg_put_utf8(struct cfg_parser *ps, char *s, size_t *n, uint32_t u)
{
	uint8_t b[4];
	size_t k;

	if (u < 0x80) {
		b[0] = (uint8_t)u; k = 1;
	} else if (u < 0x800) {
		b[0] = (uint8_t)(0xC0 | u >> 6); b[1] = (uint8_t)(0x80 | (u & 0x3F)); k = 2;
	} else if (u < 0x10000) {
		b[0] = (uint8_t)(0xE0 | u >> 12); b[1] = (uint8_t)(0x80 | (u >> 6 & 0x3F));
		b[2] = (uint8_t)(0x80 | (u & 0x3F)); k = 3;
	} else {
		b[0] = (uint8_t)(0xF0 | u >> 18); b[1] = (uint8_t)(0x80 | (u >> 12 & 0x3F));
		b[2] = (uint8_t)(0x80 | (u >> 6 & 0x3F)); b[3] = (uint8_t)(0x80 | (u & 0x3F)); k = 4;
	}
	if (*n + k >= CFG_PATH_MAX)
		return cfg_error(ps, ps->line, "string too long (at most %d bytes)", CFG_PATH_MAX - 1);
	memcpy(s + *n, b, k);
	*n += k;
	return 0;
}

/* A basic ("...") or literal ('...') string, opening quote at ps->p. */
static int cfg_string(struct cfg_parser *ps, struct cfg_scalar *out)
{
	const char q = *ps->p;
	size_t n = 0;

	if (cfg_peek(ps, 1) == q && cfg_peek(ps, 2) == q)
		return cfg_error(ps, ps->line, "multi-line strings are not supported");
	ps->p++;
	for (;;) {
		if (ps->p == ps->end || *ps->p == '\n' || *ps->p == '\r')
			return cfg_error(ps, ps->line, "unterminated string");
		unsigned char ch = (unsigned char)*ps->p++;
		uint32_t u = ch;
		if (ch == (unsigned char)q)
			break;
		if ((ch < 0x20 && ch != '\t') || ch == 0x7F)
			return cfg_error(ps, ps->line, "control character in string");
		if (ch == '\\' && q == '"') {
			int e = cfg_peek(ps, 0), digits = 0;
			if (e < 0)
				return cfg_error(ps, ps->line, "unterminated string");
			ps->p++;
			switch (e) {
			case '"': u = '"'; break;
			case '\\': u = '\\'; break;
			case 'b': u = '\b'; break;
			case 't': u = '\t'; break;
			case 'n': u = '\n'; break;
			case 'f': u = '\f'; break;
			case 'r': u = '\r'; break;
			case 'u': digits = 4; break;
			case 'U': digits = 8; break;
			default:
				if (e >= 0x21 && e < 0x7F)
					return cfg_error(ps, ps->line, "invalid escape '\\%c' in string", e);
				return cfg_error(ps, ps->line, "invalid escape in string");
			}
			if (digits) {
				u = 0;
				for (int i = 0; i < digits; i++) {
					int h = ps->p < ps->end ? hex_digit((unsigned char)*ps->p) : -1;
					if (h < 0)
						return cfg_error(ps, ps->line, "invalid escape: \\%c needs %d "
						                 "hex digits", e, digits);
					u = u << 4 | (uint32_t)h;
					ps->p++;
				}
				if (u == 0 || u > 0x10FFFF || (u >= 0xD800 && u <= 0xDFFF))
					return cfg_error(ps, ps->line, "invalid escape: \\%c%0*lX is not "
					                 "an allowed character", e, digits, (unsigned long)u);
				if (cfg_put_utf8(ps, out->s, &n, u) < 0)
					return -1;
				continue;
			}
		}
		if (n + 1 >= CFG_PATH_MAX)
			return cfg_error(ps, ps->line, "string too long (at most %d bytes)",
			                 CFG_PATH_MAX - 1);
		out->s[n++] = (char)u;
	}
	out->s[n] = '\0';
	out->kind = VK_STR;
	return 0;
}

/* An integer or boolean, or a clear refusal of the other bare values. */
static int cfg_bare(struct cfg_parser *ps, struct cfg_scalar *out)
{
	const char *t = ps->p, *e = ps->p;
	while (e < ps->end && (cfg_iskey((unsigned char)*e) || *e == '+' || *e == '.' ||
	                       *e == ':'))
		e++;
	size_t n = (size_t)(e - t);

	if (n == 0)
		return cfg_error(ps, ps->line, "expected a value");
	if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 5 && memcmp(t, "false", 5) == 0)) {
		out->kind = VK_BOOL;
		out->i = n == 4;
		ps->p = e;
		return 0;
	}
	const char *d = t;
	int neg = 0;
	if (*d == '+' || *d == '-')
		neg = *d++ == '-';
	size_t dn = (size_t)(e - d);
	if ((dn == 3 && (memcmp(d, "inf", 3) == 0 || memcmp(d, "nan", 3) == 0)))
		return cfg_error(ps, ps->line, "floats are not supported");
	if (dn == 0 || *d < '0' || *d > '9')
		return cfg_error(ps, ps->line, "invalid value (strings must be quoted)");
	if (dn > 1 && d[0] == '0' && (d[1] == 'x' || d[1] == 'o' || d[1] == 'b'))
		return cfg_error(ps, ps->line, "hexadecimal, octal and binary integers are not "
		                 "supported");
	if ((dn >= 5 && d[4] == '-') || (dn >= 3 && d[2] == ':'))
		return cfg_error(ps, ps->line, "dates and times are not supported");
	for (const char *q = d; q < e; q++)
		if (*q == '.' || *q == 'e' || *q == 'E')
			return cfg_error(ps, ps->line, "floats are not supported");

	/* decimal: digits, single underscores between digits, no leading zero */
	uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	if (dn > 1 && d[0] == '0')
		return cfg_error(ps, ps->line, "leading zeros are not allowed in integers");
	for (const char *q = d; q < e; q++) {
		if (*q == '_') {
			if (q == d || q + 1 == e || q[-1] == '_' || q[1] < '0' || q[1] > '9')
				return cfg_error(ps, ps->line, "misplaced '_' in integer");
			continue;
		}
		if (*q < '0' || *q > '9')
			return cfg_error(ps, ps->line, "invalid integer");
		unsigned dig = (unsigned)(*q - '0');
		if (v > (lim - dig) / 10)
			return cfg_error(ps, ps->line, "integer out of range");
		v = v * 10 + dig;
	}
	out->kind = VK_INT;
	out->i = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
	ps->p = e;
	return 0;
}

static int cfg_scalar_value(struct cfg_parser *ps, struct cfg_scalar *out)
{
	int ch = cfg_peek(ps, 0);

	if (ch == '"' || ch == '\'')
		return cfg_string(ps, out);
	if (ch == '[')
		return cfg_error(ps, ps->line, "arrays are not supported");
	if (ch == '{')
		return cfg_error(ps, ps->line, "nested inline tables are not supported");
	if (ch < 0 || ch == '\n' || ch == '\r' || ch == '#')
		return cfg_error(ps, ps->line, "expected a value");
	return cfg_bare(ps, out);
}

/* inline-table, opening brace at ps->p. */
static int cfg_inline_table(struct cfg_parser *ps, struct cfg_val *v)
{
	ps->p++;
	v->v.kind = VK_TABLE;
	v->n = 0;
	cfg_ws(ps);
	if (cfg_peek(ps, 0) == '}') {
		ps->p++;
		return 0;
	}
	for (;;) {
		char key[CFG_KEY_MAX];
		cfg_ws(ps);
		if (cfg_key_parse(ps, key) < 0)
			return -1;
		for (int i = 0; i < v->n; i++)
			if (strcmp(v->kv[i].key, key) == 0)
				return cfg_error(ps, ps->line, "duplicate key '%s' in inline table", key);
		if (v->n == CFG_INLINE_MAX)
			return cfg_error(ps, ps->line, "too many keys in inline table");
		cfg_ws(ps);
		if (cfg_peek(ps, 0) == '.')
			return cfg_error(ps, ps->line, "dotted keys are not supported");
		if (cfg_peek(ps, 0) != '=')
			return cfg_error(ps, ps->line, "expected '=' after key '%s'", key);
		ps->p++;
		cfg_ws(ps);
		memcpy(v->kv[v->n].key, key, sizeof key);
		if (cfg_scalar_value(ps, &v->kv[v->n].v) < 0)
			return -1;
		v->n++;
		cfg_ws(ps);
		int ch = cfg_peek(ps, 0);
		ps->p += ch >= 0;
		if (ch == '}')
			return 0;
		if (ch != ',')
			return cfg_error(ps, ps->line, "expected ',' or '}' in inline table "
			                 "(it must be on one line)");
		cfg_ws(ps);
		if (cfg_peek(ps, 0) == '}')
			return cfg_error(ps, ps->line, "trailing comma in inline table");
	}
}

/* table: "[a]" or "[a.b]", at ps->p. */
static int cfg_table_header(struct cfg_parser *ps)
{
	char name[2 * CFG_KEY_MAX + 1] = "", part[CFG_KEY_MAX];

	if (cfg_peek(ps, 1) == '[')
		return cfg_error(ps, ps->line, "arrays of tables are not supported");
	ps->p++;
	for (;;) {
		cfg_ws(ps);
		if (cfg_key_parse(ps, part) < 0)
			return -1;
		if (strlen(name) + 1 + strlen(part) >= sizeof name)
			return cfg_error(ps, ps->line, "table name too long");
		if (name[0])
			strcat(name, ".");
		strcat(name, part);
		cfg_ws(ps);
		int ch = cfg_peek(ps, 0);
		ps->p += ch >= 0;
		if (ch == ']')
			break;
		if (ch != '.')
			return cfg_error(ps, ps->line, "expected ']' after the table name");
	}
	int t;
	for (t = 1; t < CT_COUNT; t++)
		if (strcmp(cfg_table_names[t], name) == 0)
			break;
	if (t == CT_COUNT)
		return cfg_error(ps, ps->line, "unknown table [%s]", name);
	if (ps->table_line[t])
		return cfg_error(ps, ps->line, "table [%s] defined twice (first on line %d)", name,
		                 ps->table_line[t]);
	ps->table_line[t] = ps->line;
	ps->table = t;
	return cfg_eol(ps);
}

/* keyval, at ps->p: find the key's row in the current table, parse, check, store. */
static int cfg_keyval(struct cfg_parser *ps)
{
	char key[CFG_KEY_MAX], in[CFG_KEY_MAX + 8];
	int line = ps->line, k;

	if (cfg_key_parse(ps, key) < 0)
		return -1;
	cfg_ws(ps);
	if (cfg_peek(ps, 0) == '.')
		return cfg_error(ps, line, "dotted keys are not supported");
	if (cfg_peek(ps, 0) != '=')
		return cfg_error(ps, line, "expected '=' after key '%s'", key);
	ps->p++;
	for (k = 0; k < CFG_NKEYS; k++)
		if (cfg_keys[k].table == ps->table && strcmp(cfg_keys[k].key, key) == 0)
			break;
	if (k == CFG_NKEYS)
		return cfg_error(ps, line, "unknown key '%s'%s", key,
		                 ps->table == CT_ROOT ? " at the top level (before any [table])" :
		                 cfg_in(ps->table, in, sizeof in));
	if (ps->c->line[k])
		return cfg_error(ps, line, "duplicate key '%s'%s (first on line %d)", key,
		                 cfg_in(ps->table, in, sizeof in), ps->c->line[k]);
	cfg_ws(ps);
	struct cfg_val *v = &ps->val;
	if (cfg_peek(ps, 0) == '{') {
		if (cfg_inline_table(ps, v) < 0)
			return -1;
	} else if (cfg_scalar_value(ps, &v->v) < 0)
		return -1;
	if (cfg_eol(ps) < 0)
		return -1;
	if (cfg_set(ps, k, line, v) < 0)
		return -1;
	ps->c->line[k] = line;
	ps->c->set[k] = 1;
	return 0;
}

/* Checks that need the whole file. */
static int cfg_check(struct cfg_parser *ps)
{
	const struct cfg *c = ps->c;
	char in[CFG_KEY_MAX + 8];

	if (!c->set[CFG_K_VERSION])
		return cfg_error(ps, 0, "missing required key 'version' (version = \"v1\")");
	if (!c->set[CFG_K_LIB_PATH])
		return cfg_error(ps, ps->table_line[CT_PKCS11],
		                 "missing required key 'lib-path'%s",
		                 cfg_in(CT_PKCS11, in, sizeof in));
	if (c->set[CFG_K_CERT_PATH] != c->set[CFG_K_KEY_PATH]) {
		int have = c->set[CFG_K_CERT_PATH] ? CFG_K_CERT_PATH : CFG_K_KEY_PATH;
		int miss = have == CFG_K_CERT_PATH ? CFG_K_KEY_PATH : CFG_K_CERT_PATH;
		return cfg_error(ps, c->line[have], "'%s' needs '%s' as well%s",
		                 cfg_keys[have].key, cfg_keys[miss].key,
		                 cfg_in(CT_SERVER_IDENTITY, in, sizeof in));
	}
	return 0;
}

/* Defaults of every key; the required ones (version, lib-path) stay empty. */
static void cfg_defaults(struct cfg *c)
{
	struct cfg_parser ps;
	char err[256];

	memset(c, 0, sizeof *c);
	c->workers = CFG_WORKERS_AUTO;
	c->log_level = LV_INFO;
	c->log_target = LOG_TO_STDERR;
	c->syslog_facility = LOG_DAEMON;
	memset(&ps, 0, sizeof ps);
	ps.name = "(defaults)";
	ps.c = c;
	ps.err = err;
	ps.errsz = sizeof err;
	for (int k = 0; k < CFG_NKEYS; k++) {
		const char *d = cfg_keys[k].def;
		if (d == NULL)
			continue;
		ps.p = d;
		ps.end = d + strlen(d);
		ps.table = cfg_keys[k].table;
		int r = ps.p[0] == '{' ? cfg_inline_table(&ps, &ps.val)
		                       : cfg_scalar_value(&ps, &ps.val.v);
		if (r < 0 || cfg_set(&ps, k, 0, &ps.val) < 0)
			fatal("bad default for '%s': %s", cfg_keys[k].key, err);
	}
}

/* Defaults, then the n bytes of text (a whole file named `name`, for messages). */
static int cfg_parse_text(struct cfg *c, const char *name, const char *text, size_t n,
                          char *err, size_t errsz)
{
	struct cfg_parser ps;

	cfg_defaults(c);
	c->file = name;
	memset(&ps, 0, sizeof ps);
	ps.name = name;
	ps.p = text;
	ps.end = text + n;
	ps.line = 1;
	ps.table = CT_ROOT;
	ps.c = c;
	ps.err = err;
	ps.errsz = errsz;
	if (n > CFG_FILE_MAX)
		return cfg_error(&ps, 0, "file too large (at most %d bytes)", CFG_FILE_MAX);
	const char *nul = memchr(text, '\0', n);
	if (nul != NULL) {
		int line = 1;
		for (const char *q = text; q < nul; q++)
			line += *q == '\n';
		return cfg_error(&ps, line, "NUL byte in file");
	}
	while (ps.p < ps.end) {
		cfg_ws(&ps);
		int ch = cfg_peek(&ps, 0);
		int r = ch < 0 || ch == '#' || ch == '\n' || ch == '\r' ? cfg_eol(&ps)
		        : ch == '[' ? cfg_table_header(&ps) : cfg_keyval(&ps);
		if (r < 0)
			return -1;
	}
	return cfg_check(&ps);
}

/* Defaults, then the file at path.  0, or -1 with "path:line: message" (or "path: ...") in
 * err.  On error *c holds defaults and part of the file: use it for nothing. */
static int cfg_load(struct cfg *c, const char *path, char *err, size_t errsz)
{
	char buf[CFG_FILE_MAX + 1];
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (n < sizeof buf) {
		ssize_t r = read(fd, buf + n, sizeof buf - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errsz, "%s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	return cfg_parse_text(c, path, buf, n, err, errsz);
}

/* ---- command line ---- */

/* What main does after cfg_cli_parse(). */
enum {
	CFG_CLI_RUN,            /* load the configuration, apply the overrides, serve */
	CFG_CLI_CHECK,          /* --check-config: load, validate, report, exit 0 / 1 */
	CFG_CLI_LIST_SLOTS,     /* --list-slots: load, then main lists the module's slots */
	CFG_CLI_IMPORT,         /* --import FILE --username LABEL: load, main imports the key */
	CFG_CLI_HELP,           /* -h: usage on stdout, exit 0 */
	CFG_CLI_VERSION,        /* -V: "kmip2pkcs11 VERSION" on stdout, exit 0 */
	CFG_CLI_USAGE           /* bad command line: cli->err and usage on stderr, exit 2 */
};

struct cfg_cli {
	const char *config;     /* -c PATH, or CFG_DEFAULT_PATH */
	int log_level;          /* --log-level: LV_*, or -1 */
	int verbose;            /* each -v +1, each -q -1: applied after log_level */
	int log_target;         /* -l, --stderr, --syslog, --logfile: LOG_TO_*, or -1 */
	const char *log_file;   /* -l file:PATH or --logfile PATH: PATH (points into argv) */
	int syslog_facility;    /* --syslog-facility: LOG_*, or -1 */
	int daemonize;          /* -d, --daemonize, --detach: 1 */
	const char *pid_file;   /* --pid-file PATH, or NULL; the same for the three below */
	const char *working_dir;        /* --working-dir PATH */
	const char *chroot_dir;         /* --chroot PATH */
	const char *user;               /* --user USER */
	const char *group;              /* --group GROUP */
	const char *import[3];  /* --import FILE, --username LABEL, --name NAME (argv) */
	char err[256];          /* CFG_CLI_USAGE: what was wrong */
};

/* Long options without a short one.  The second group are the spellings of the original's
 * published manual page (its daemon base library), accepted with the same meaning. */
enum {
	CFG_OPT_CHECK = 256, CFG_OPT_LOG_LEVEL, CFG_OPT_LIST_SLOTS,
	CFG_OPT_STDERR, CFG_OPT_SYSLOG, CFG_OPT_FACILITY, CFG_OPT_LOGFILE, CFG_OPT_PID_FILE,
	CFG_OPT_WORKING_DIR, CFG_OPT_CHROOT, CFG_OPT_USER, CFG_OPT_GROUP,
	CFG_OPT_IMPORT, CFG_OPT_USERNAME, CFG_OPT_NAME      /* --import (issue 12) */
};

/* syslog(3) facilities by name, for --syslog-facility. */
#define CFG_FACILITIES(X) \
	X("kern", LOG_KERN) X("user", LOG_USER) X("mail", LOG_MAIL) X("daemon", LOG_DAEMON) \
	X("auth", LOG_AUTH) X("syslog", LOG_SYSLOG) X("lpr", LOG_LPR) X("news", LOG_NEWS) \
	X("uucp", LOG_UUCP) X("cron", LOG_CRON) X("authpriv", LOG_AUTHPRIV) X("ftp", LOG_FTP) \
	X("local0", LOG_LOCAL0) X("local1", LOG_LOCAL1) X("local2", LOG_LOCAL2) \
	X("local3", LOG_LOCAL3) X("local4", LOG_LOCAL4) X("local5", LOG_LOCAL5) \
	X("local6", LOG_LOCAL6) X("local7", LOG_LOCAL7)

static int cfg_facility_parse(const char *s)
{
#define CFG_FAC(name, v) if (strcmp(s, name) == 0) return v;
	CFG_FACILITIES(CFG_FAC)
#undef CFG_FAC
	return -1;
}

#define CFG_MAIN_LIST_SLOTS (-2)   /* cfg_main(): main lists the slots and exits */
#define CFG_MAIN_IMPORT     (-4)   /* cfg_main(): main imports c->import[0] and exits */

static const char cfg_usage_text[] =
	"usage: kmip2pkcs11 [-dhqvV] [-c PATH] [--check-config] [--list-slots] [--log-level LEVEL]\n"
	"                   [-l TARGET]\n"
	"                   [--stderr | --syslog | --logfile PATH] [--syslog-facility NAME]\n"
	"                   [--pid-file PATH] [--working-dir PATH] [--chroot PATH]\n"
	"                   [--user USER] [--group GROUP]\n"
	"       kmip2pkcs11 [-c PATH] --import FILE.pem --username LABEL [--name NAME]\n"
	"\n"
	"  -c, --config PATH      the configuration file (default " CFG_DEFAULT_PATH ")\n"
	"      --check-config     check the configuration and what start-up would load, and\n"
	"                         exit: 0 if it would start, 1 if not\n"
	"      --list-slots       load the module, list its slots and tokens, and exit\n"
	"      --import FILE.pem  store the key in the token of --username (PIN from\n"
	"                         KMIP2PKCS11_PIN or the terminal), print its UIDs, exit\n"
	"      --name NAME        the imported key's name (CKA_LABEL)\n"
	"      --log-level LEVEL  trace, debug, info, warning or error (overrides log-level)\n"
	"  -v, --verbose          one level more verbose (twice: two levels)\n"
	"  -q, --quiet            one level less verbose (twice: errors only)\n"
	"  -l, --log TARGET       stderr, syslog or file:PATH (overrides log-target)\n"
	"      --stderr           the same as -l stderr\n"
	"      --syslog           the same as -l syslog\n"
	"      --logfile PATH     the same as -l file:PATH\n"
	"      --syslog-facility NAME  daemon (default), user, local0 .. local7, ...\n"
	"  -d, --daemonize, --detach  fork into the background (overrides daemonize)\n"
	"      --pid-file PATH    overrides pid-file\n"
	"      --working-dir PATH the working directory once started\n"
	"      --chroot PATH      overrides chroot\n"
	"      --user USER        the user to run as (overrides the user of identity)\n"
	"      --group GROUP      the group to run as (overrides the group of identity)\n"
	"  -h, --help             print this help and exit\n"
	"  -V, --version          print the version and exit\n";

/* Usage to stdout for -h, to stderr after a bad command line. */
static void cfg_usage(FILE *f)
{
	fputs(cfg_usage_text, f);
}

/* The message for a bad option; arg is the argument that getopt stopped at. */
static void cfg_cli_bad(struct cfg_cli *cli, const char *arg, const char *what)
{
	static const char *const flags[] = { "check-config", "daemonize", "detach", "help",
	                                     "version", "verbose", "quiet", "stderr", "syslog",
	                                     "list-slots" };

	if (strncmp(arg, "--", 2) != 0) {       /* short option: getopt names it in optopt */
		snprintf(cli->err, sizeof cli->err, "%s -%c", what ? "option" : "unknown option",
		         optopt);
		if (what)
			snprintf(cli->err + strlen(cli->err), sizeof cli->err - strlen(cli->err),
			         " %s", what);
		return;
	}
	size_t n = strcspn(arg, "=");
	if (what == NULL && arg[n] == '=')
		for (size_t i = 0; i < ARRAY_LEN(flags); i++)
			if (strlen(flags[i]) == n - 2 && strncmp(arg + 2, flags[i], n - 2) == 0)
				what = "takes no argument";
	if (what)
		snprintf(cli->err, sizeof cli->err, "option %.*s %s", (int)(n > 64 ? 64 : n), arg,
		         what);
	else
		snprintf(cli->err, sizeof cli->err, "unknown option %.64s", arg);
}

/* Every long option (the man page and config.example name each: tests/test_cfg.c). */
static const struct option cfg_longopts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "check-config", no_argument, NULL, CFG_OPT_CHECK },
	{ "list-slots", no_argument, NULL, CFG_OPT_LIST_SLOTS },
	{ "log-level", required_argument, NULL, CFG_OPT_LOG_LEVEL },
	{ "log", required_argument, NULL, 'l' },
	{ "daemonize", no_argument, NULL, 'd' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ "detach", no_argument, NULL, 'd' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "stderr", no_argument, NULL, CFG_OPT_STDERR },
	{ "syslog", no_argument, NULL, CFG_OPT_SYSLOG },
	{ "syslog-facility", required_argument, NULL, CFG_OPT_FACILITY },
	{ "logfile", required_argument, NULL, CFG_OPT_LOGFILE },
	{ "pid-file", required_argument, NULL, CFG_OPT_PID_FILE },
	{ "working-dir", required_argument, NULL, CFG_OPT_WORKING_DIR },
	{ "chroot", required_argument, NULL, CFG_OPT_CHROOT },
	{ "user", required_argument, NULL, CFG_OPT_USER },
	{ "group", required_argument, NULL, CFG_OPT_GROUP },
	{ "import", required_argument, NULL, CFG_OPT_IMPORT },
	{ "username", required_argument, NULL, CFG_OPT_USERNAME },
	{ "name", required_argument, NULL, CFG_OPT_NAME },
	{ NULL, 0, NULL, 0 }
};

/* A path option (--pid-file and the like): set once, not empty. */
static int cfg_cli_path(struct cfg_cli *cli, const char **dst, const char *opt)
{
	if (*dst != NULL) {
		snprintf(cli->err, sizeof cli->err, "--%s given twice", opt);
		return -1;
	}
	if (optarg[0] == '\0' || strlen(optarg) >= CFG_PATH_MAX) {
		snprintf(cli->err, sizeof cli->err, "--%s: the path must not be %s", opt,
		         optarg[0] ? "this long" : "empty");
		return -1;
	}
	*dst = optarg;
	return 0;
}

/* --user, --group: a name or a number that fits uid_t / gid_t, as in `identity`. */
static int cfg_cli_id(struct cfg_cli *cli, const char **dst, const char *opt)
{
	char u[CFG_NAME_MAX], g[CFG_NAME_MAX];
	unsigned long id;

	if (cfg_cli_path(cli, dst, opt) < 0)
		return -1;
	if (strchr(optarg, ':') || cfg_identity_parse(optarg, u, g) < 0 ||
	    cfg_id_number(optarg, &id) < 0) {
		snprintf(cli->err, sizeof cli->err, "--%s: '%.64s' is not a %s name or a number "
		         "from 0 to %lu", opt, optarg, opt, CFG_ID_MAX);
		return -1;
	}
	return 0;
}

/* -l, --stderr, --syslog, --logfile: one log target. */
static int cfg_cli_target(struct cfg_cli *cli, int target, const char *path)
{
	if (cli->log_target >= 0) {
		snprintf(cli->err, sizeof cli->err, "more than one log target (-l, --stderr, "
		         "--syslog, --logfile)");
		return -1;
	}
	cli->log_target = target;
	cli->log_file = path;
	return 0;
}

/*
 * The original's command line (clap): -c/--config PATH, --check-config, --log-level LEVEL,
 * -l/--log TARGET, -d/--daemonize, -h/--help, -V/--version; and the spellings of its
 * published manual page: -d/--detach, -v/--verbose, -q/--quiet, --stderr, --syslog,
 * --syslog-facility, --logfile, --pid-file, --working-dir, --chroot, --user, --group.
 * --opt=value works; an option that takes a value may not be given twice; -h and -V end
 * the parsing where they stand.  Resets getopt, so it may be called more than once (tests).
 * Never exits.
 */
static int cfg_cli_parse(int argc, char **argv, struct cfg_cli *cli)
{
	int action = CFG_CLI_RUN, opt, seen_c = 0;

	memset(cli, 0, sizeof *cli);
	cli->config = CFG_DEFAULT_PATH;
	cli->log_level = -1;
	cli->log_target = -1;
	cli->syslog_facility = -1;
	optind = 0;             /* glibc: full re-initialisation */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":c:l:dhqvV", cfg_longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			if (seen_c++) {
				snprintf(cli->err, sizeof cli->err, "--config given twice");
				return CFG_CLI_USAGE;
			}
			cli->config = optarg;
			break;
		case CFG_OPT_CHECK:
			action = CFG_CLI_CHECK;
			break;
		case CFG_OPT_LIST_SLOTS:
			action = CFG_CLI_LIST_SLOTS;
			break;
		case CFG_OPT_IMPORT:
		case CFG_OPT_USERNAME:
		case CFG_OPT_NAME:
			if (cli->import[opt - CFG_OPT_IMPORT]) {
				static const char *const names[] = { "import", "username", "name" };
				snprintf(cli->err, sizeof cli->err, "--%s given twice",
				         names[opt - CFG_OPT_IMPORT]);
				return CFG_CLI_USAGE;
			}
			cli->import[opt - CFG_OPT_IMPORT] = optarg;
			break;
		case CFG_OPT_LOG_LEVEL:
			if (cli->log_level >= 0) {
				snprintf(cli->err, sizeof cli->err, "--log-level given twice");
				return CFG_CLI_USAGE;
			}
			cli->log_level = log_level_parse(optarg);
			if (cli->log_level < 0) {
				snprintf(cli->err, sizeof cli->err, "invalid log level '%.64s' (trace, "
				         "debug, info, warning or error)", optarg);
				return CFG_CLI_USAGE;
			}
			break;
		case 'l': {
			int target;
			const char *path;
			if (cfg_target_parse(optarg, &target, &path) < 0) {
				snprintf(cli->err, sizeof cli->err, "invalid log target '%.64s' (stderr, "
				         "syslog or file:PATH)", optarg);
				return CFG_CLI_USAGE;
			}
			if (cfg_cli_target(cli, target, path) < 0)
				return CFG_CLI_USAGE;
			break;
		}
		case CFG_OPT_STDERR:
		case CFG_OPT_SYSLOG:
			if (cfg_cli_target(cli, opt == CFG_OPT_STDERR ? LOG_TO_STDERR : LOG_TO_SYSLOG,
			                   NULL) < 0)
				return CFG_CLI_USAGE;
			break;
		case CFG_OPT_LOGFILE:
			if (optarg[0] == '\0') {
				snprintf(cli->err, sizeof cli->err, "--logfile: the path must not be empty");
				return CFG_CLI_USAGE;
			}
			if (cfg_cli_target(cli, LOG_TO_FILE, optarg) < 0)
				return CFG_CLI_USAGE;
			break;
		case CFG_OPT_FACILITY:
			if (cli->syslog_facility >= 0) {
				snprintf(cli->err, sizeof cli->err, "--syslog-facility given twice");
				return CFG_CLI_USAGE;
			}
			cli->syslog_facility = cfg_facility_parse(optarg);
			if (cli->syslog_facility < 0) {
				snprintf(cli->err, sizeof cli->err, "unknown syslog facility '%.64s' "
				         "(daemon, user, local0 .. local7, ...)", optarg);
				return CFG_CLI_USAGE;
			}
			break;
		case CFG_OPT_PID_FILE:
			if (cfg_cli_path(cli, &cli->pid_file, "pid-file") < 0)
				return CFG_CLI_USAGE;
			break;
		case CFG_OPT_WORKING_DIR:
			if (cfg_cli_path(cli, &cli->working_dir, "working-dir") < 0)
				return CFG_CLI_USAGE;
			break;
		case CFG_OPT_CHROOT:
			if (cfg_cli_path(cli, &cli->chroot_dir, "chroot") < 0)
				return CFG_CLI_USAGE;
			break;
		case CFG_OPT_USER:
			if (cfg_cli_id(cli, &cli->user, "user") < 0)
				return CFG_CLI_USAGE;
			break;
		case CFG_OPT_GROUP:
			if (cfg_cli_id(cli, &cli->group, "group") < 0)
				return CFG_CLI_USAGE;
			break;
		case 'v':
			cli->verbose++;
			break;
		case 'q':
			cli->verbose--;
			break;
		case 'd':
			cli->daemonize = 1;
			break;
		case 'h':
			return CFG_CLI_HELP;
		case 'V':
			return CFG_CLI_VERSION;
		case ':':
			cfg_cli_bad(cli, argv[optind - 1], "needs an argument");
			return CFG_CLI_USAGE;
		default:
			cfg_cli_bad(cli, argv[optind - 1], NULL);
			return CFG_CLI_USAGE;
		}
	}
	if (optind < argc) {
		snprintf(cli->err, sizeof cli->err, "unexpected argument '%.64s'", argv[optind]);
		return CFG_CLI_USAGE;
	}
	if ((cli->import[1] || cli->import[2]) && !cli->import[0]) {
		snprintf(cli->err, sizeof cli->err, "--username and --name go with --import");
		return CFG_CLI_USAGE;
	}
	if (cli->import[0] && (!cli->import[1] || action != CFG_CLI_RUN)) {
		snprintf(cli->err, sizeof cli->err, "--import needs --username%s",
		         action != CFG_CLI_RUN ? ", and no --check-config or --list-slots" : "");
		return CFG_CLI_USAGE;
	}
	return cli->import[0] ? CFG_CLI_IMPORT : action;
}

/*
 * The command line wins over the file.  0, or -1 with a message (a path too long, --group
 * with no user to go with it).  -v and -q move from the level of the file or --log-level,
 * one step each, and stop at trace and at error.
 */
static int cfg_cli_apply(struct cfg *c, const struct cfg_cli *cli, char *err, size_t errsz)
{
	if (cli->log_level >= 0) {
		c->log_level = cli->log_level;
		c->set[CFG_K_LOG_LEVEL] = 1;
	}
	if (cli->verbose != 0) {
		int lv = c->log_level + cli->verbose;
		c->log_level = lv < LV_ERROR ? LV_ERROR : lv > LV_TRACE ? LV_TRACE : lv;
		c->set[CFG_K_LOG_LEVEL] = 1;
	}
	if (cli->syslog_facility >= 0)
		c->syslog_facility = cli->syslog_facility;
	const struct { const char *v; char *dst; size_t cap; int k; const char *opt; } paths[] = {
		{ cli->pid_file, c->pid_file, sizeof c->pid_file, CFG_K_PID_FILE, "--pid-file" },
		{ cli->chroot_dir, c->chroot_dir, sizeof c->chroot_dir, CFG_K_CHROOT, "--chroot" },
		{ cli->working_dir, c->working_dir, sizeof c->working_dir, -1, "--working-dir" },
	};
	for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
		if (paths[i].v == NULL)
			continue;
		if (cfg_path_set(paths[i].dst, paths[i].cap, paths[i].v) < 0) {
			snprintf(err, errsz, "%s: the path is too long", paths[i].opt);
			return -1;
		}
		if (paths[i].k >= 0)
			c->set[paths[i].k] = 1;
	}
	/* --user alone takes that user's group, as identity = "user" does */
	if (cli->group && !cli->user && !c->user[0]) {
		snprintf(err, errsz, "--group needs a user: --user, or identity in the file");
		return -1;
	}
	if (cli->user) {
		snprintf(c->user, sizeof c->user, "%s", cli->user);
		snprintf(c->group, sizeof c->group, "%s", cli->group ? cli->group : cli->user);
		c->set[CFG_K_IDENTITY] = 1;
	} else if (cli->group) {
		snprintf(c->group, sizeof c->group, "%s", cli->group);
		c->set[CFG_K_IDENTITY] = 1;
	}
	if (cli->log_target >= 0) {
		if (cli->log_file && cfg_path_set(c->log_file, sizeof c->log_file, cli->log_file) < 0) {
			snprintf(err, errsz, "--log: the file name is too long");
			return -1;
		}
		c->log_target = cli->log_target;
		c->set[CFG_K_LOG_TARGET] = 1;
	}
	if (cli->daemonize) {
		c->daemonize = 1;
		c->set[CFG_K_DAEMONIZE] = 1;
	}
	return 0;
}

/* cfg_main's results besides an exit status. */
#define CFG_MAIN_RUN    (-1)    /* serve with the configuration */
#define CFG_MAIN_CHECK  (-3)    /* --check-config: the file is valid; main checks the rest */

/*
 * The start of main: parse the command line, load the configuration, apply the overrides.
 * Returns CFG_MAIN_RUN or CFG_MAIN_CHECK with *c loaded, else the exit status after it
 * printed what the action asks for (help, version, usage error, load error).
 */
static int cfg_main(int argc, char **argv, struct cfg *c)
{
	struct cfg_cli cli;
	char err[512];
	int action = cfg_cli_parse(argc, argv, &cli);

	switch (action) {
	case CFG_CLI_HELP:
		cfg_usage(stdout);
		return 0;
	case CFG_CLI_VERSION:
		printf("kmip2pkcs11 %s\n", K2P_VERSION);
		return 0;
	case CFG_CLI_USAGE:
		fprintf(stderr, "kmip2pkcs11: %s\n", cli.err);
		cfg_usage(stderr);
		return 2;
	}
	if (cfg_load(c, cli.config, err, sizeof err) < 0 || cfg_cli_apply(c, &cli, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	memcpy(c->import, cli.import, sizeof c->import);
	return action == CFG_CLI_CHECK ? CFG_MAIN_CHECK :
	       action == CFG_CLI_LIST_SLOTS ? CFG_MAIN_LIST_SLOTS :
	       action == CFG_CLI_IMPORT ? CFG_MAIN_IMPORT : CFG_MAIN_RUN;
}
/* ==== 6. PKCS#11 ========================================================== */

/*
 * Everything the daemon asks of the vendor module goes through this section.  It keeps no
 * key state of its own: the HSM's objects and attributes are the only truth.  What it does
 * keep, per slot, is what makes every request cheap and safe: the token's mechanism list,
 * and the salted digest of the PIN that logged the token in, so a later request with a
 * different PIN is refused without calling C_Login (which would count against the token's
 * retry limit or, worse, be served).
 *
 * Results are CK_RV values.  Besides the specification's CKR_* codes, the section has a few
 * of its own, in a range no module returns (P11_E_*); p11_rv_reason() maps both to a KMIP
 * Result Reason and p11_rv_name() names both.
 *
 * API (for section 7, operations, and section 8, workers):
 *
 *   CK_RV p11_load(const char *path, char *err, size_t errsz);
 *         dlopen, C_GetInterface("PKCS 11") or C_GetFunctionList, check every function the
 *         daemon uses, C_Initialize(CKF_OS_LOCKING_OK), log CK_INFO.  Start-up only, one
 *         thread.  On failure err holds "path: what is wrong" and nothing stays loaded.
 *   void  p11_unload(void);              C_Finalize (if we initialized it), dlclose
 *   int   p11_set_init_args(const char *s);  before p11_load: a string for the module in
 *                                        CK_C_INITIALIZE_ARGS.pReserved ([pkcs11] init-args)
 *
 *   const char *p11_rv_name(CK_RV rv);   "CKR_PIN_INCORRECT", "P11_E_NOT_FOUND",
 *                                        "CKR_VENDOR_DEFINED+0x12", "CKR_0x777"
 *   uint32_t p11_rv_reason(CK_RV rv);    KMIP Result Reason (RR_*), 0 for CKR_OK
 *
 *   CK_RV p11_slot_lookup(const char *user, size_t len, struct p11_slot **out);
 *   CK_RV p11_slot_lookup_at(..., const char **call);   the same, naming the failed call
 *         Username -> slot as the original bridge: token label, then decimal slot ID,
 *         then index into C_GetSlotList(FALSE).  P11_E_NO_SLOT when nothing matches; the
 *         label of a token served before that is gone: CKR_TOKEN_NOT_PRESENT (or the
 *         failing C_GetTokenInfo's code).  The slot state lives until p11_unload or
 *         p11_reinit; the pointer may be kept until then (see p11_epoch).
 *   CK_RV p11_session_open(const struct p11_slot *s, CK_SESSION_HANDLE *h);  R/W session
 *   void  p11_session_close(CK_SESSION_HANDLE h);
 *   int   p11_session_lost(CK_RV rv);    1: the session is gone; reopen once and retry
 *   CK_RV p11_auth(struct p11_slot *s, CK_SESSION_HANDLE h, const uint8_t *pin, size_t len);
 *         On every request that needs login.  CKR_OK, or CKR_PIN_INCORRECT (and the other
 *         C_Login errors) -> Authentication Not Successful.
 *
 *   CK_RV p11_generate(CK_SESSION_HANDLE h, const struct p11_slot *s,
 *                      const struct p11_keygen *g, uint8_t id[P11_ID_LEN],
 *                      CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv);
 *   CK_RV p11_find_key(CK_SESSION_HANDLE h, const uint8_t *id, size_t idlen,
 *                      CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *out);  P11_E_NOT_FOUND
 *   CK_RV p11_key_info(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, struct p11_key_info *ki);
 *   CK_RV p11_sign(CK_SESSION_HANDLE h, const struct p11_slot *s, const char **call,
 *                  CK_OBJECT_HANDLE key, CK_KEY_TYPE type, int hash, const uint8_t *data,
 *                  size_t len, uint8_t *out, size_t cap, size_t *outlen);
 *         RSA: PKCS#1 v1.5 signature; EC: DER ECDSA-Sig-Value with minimal INTEGERs;
 *         Ed25519: 64 bytes.  hash is P11_HASH_* (P11_HASH_NONE for EdDSA only).  *call:
 *         the call that failed.  An operation the module left active is ended.
 *   CK_RV p11_import(CK_SESSION_HANDLE h, const struct p11_import *im, uint8_t id[P11_ID_LEN],
 *                    CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv, CK_OBJECT_CLASS *failed);
 *         C_CreateObject of a key given in the clear (Register): the private key, not
 *         extractable, and its public key, sharing a fresh CKA_ID; or a public key alone.
 *   CK_RV p11_destroy(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o);
 *   CK_RV p11_set_label(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, const char *s, size_t n);
 *   CK_RV p11_random(CK_SESSION_HANDLE h, uint8_t *buf, size_t n);
 *
 * Failures and recovery (the module's failures are seen and survived, not only reported):
 *   void  p11_warn(const char *call, const struct p11_slot *s, CK_RV rv);
 *         log a failed call with its slot: at warning when the code says the module,
 *         token or session failed, once per second per call and code; else at debug
 *   int   p11_trouble(CK_RV rv, int slot_level);   P11_T_*: what to do before a retry
 *   CK_RV p11_token_check(const struct p11_slot *s);  C_GetTokenInfo: does it still answer
 *   void  p11_enter(void), p11_leave(void);   a request holds the module's gate (read)
 *   unsigned p11_epoch(void);            re-initialisations so far
 *   int   p11_reinit(unsigned seen, const char *call, CK_RV why);
 *         C_Finalize + C_Initialize with every request quiesced (the caller holds no
 *         gate), at most once per P11_REINIT_GAP_MS; slot state is dropped, and threads
 *         forget sessions and slots from an older epoch
 *
 * Threads: after p11_load, every function may be called from any event loop or slow-pool
 * thread, holding the gate (p11_enter); each uses its own sessions.  Slot creation is serialized by one
 * lock, logins by a lock per slot, a re-initialisation by the gate's write side.
 */

/* Codes of our own, beside CK_RV values; the spec assigns nothing in this range and vendor
 * codes start at CKR_VENDOR_DEFINED (0x80000000). */
#define P11_E_BASE        0x7FFF0000UL
#define P11_E_NOT_FOUND   (P11_E_BASE + 1)   /* no key with that CKA_ID and class */
#define P11_E_NO_SLOT     (P11_E_BASE + 2)   /* the username names no slot */
#define P11_E_BAD_INPUT   (P11_E_BASE + 3)   /* a request value outside what we accept */
#define P11_E_UNSUPPORTED (P11_E_BASE + 4)   /* key type, curve or hash we do not handle */
#define P11_E_BAD_VALUE   (P11_E_BASE + 5)   /* the module returned something malformed */

#define P11_MAX_SLOTS     64     /* slots with state (a token we served) */
#define P11_SLOT_LIST_MAX 256    /* C_GetSlotList entries considered */
#define P11_MECH_LIST_MAX 4096   /* C_GetMechanismList entries considered */
#define P11_ID_LEN        20     /* CKA_ID of the keys we create, as the original */
#define P11_ID_MAX        128    /* CKA_ID of keys created by other tools */
#define P11_LABEL_MAX     255    /* CKA_LABEL bytes kept */
#define P11_MODULUS_MAX   1024   /* RSA up to 8192 bits */
#define P11_EXPONENT_MAX  32
#define P11_EC_PARAMS_MAX 64     /* a named curve: OID or PrintableString */
#define P11_EC_POINT_MAX  160    /* P-521 uncompressed, in its OCTET STRING: 3 + 133 */
#define P11_SIG_MAX       1024   /* RSA-8192 */
#define P11_RSA_MIN_BITS  1024
#define P11_RSA_MAX_BITS  4096
#define P11_PIN_SALT_LEN  16
#define P11_WARN_KEYS     32     /* call + CK_RV pairs whose warnings are rate-limited */
#define P11_WARN_GAP_MS   1000   /* one warning per call + CK_RV per second */
#define P11_REINIT_GAP_MS 5000   /* at most one module re-initialisation per 5 s */

/* ---- return values: one table ------------------------------------------------------------ */

/*
 * Every CK_RV of the base specification 3.0 with the KMIP 1.2 Result Reason it becomes.
 * The rules: what the token lacks (mechanism, curve, function) is Feature Not Supported;
 * a request value out of range or in conflict (template, key size, data length) is Invalid
 * Field; a refused credential is Authentication Not Successful; a key or object handle that
 * does not resolve is Item Not Found; attribute or key policy is Permission Denied; a token
 * or device that failed is Cryptographic Failure; what only a bug on our side or an
 * exhausted resource can cause is General Failure.
 * The third column is 1 for the codes that say the module, token or session failed rather
 * than the request: they are logged at warning (p11_warn), the others at debug.
 */
#define P11_RV_TABLE(X) \
	X(CKR_OK,                               0,                           0) \
	X(CKR_CANCEL,                           RR_GENERAL_FAILURE,          0) \
	X(CKR_HOST_MEMORY,                      RR_GENERAL_FAILURE,          1) \
	X(CKR_SLOT_ID_INVALID,                  RR_AUTHENTICATION_NOT_SUCCESSFUL, 1) \
	X(CKR_GENERAL_ERROR,                    RR_GENERAL_FAILURE,          1) \
	X(CKR_FUNCTION_FAILED,                  RR_CRYPTOGRAPHIC_FAILURE,    1) \
	X(CKR_ARGUMENTS_BAD,                    RR_GENERAL_FAILURE,          1) \
	X(CKR_NO_EVENT,                         RR_GENERAL_FAILURE,          0) \
	X(CKR_NEED_TO_CREATE_THREADS,           RR_GENERAL_FAILURE,          0) \
	X(CKR_CANT_LOCK,                        RR_GENERAL_FAILURE,          1) \
	X(CKR_ATTRIBUTE_READ_ONLY,              RR_PERMISSION_DENIED,        0) \
	X(CKR_ATTRIBUTE_SENSITIVE,              RR_PERMISSION_DENIED,        0) \
	X(CKR_ATTRIBUTE_TYPE_INVALID,           RR_FEATURE_NOT_SUPPORTED,    0) \
	X(CKR_ATTRIBUTE_VALUE_INVALID,          RR_INVALID_FIELD,            0) \
	X(CKR_ACTION_PROHIBITED,                RR_PERMISSION_DENIED,        0) \
	X(CKR_DATA_INVALID,                     RR_INVALID_FIELD,            0) \
	X(CKR_DATA_LEN_RANGE,                   RR_INVALID_FIELD,            0) \
	X(CKR_DEVICE_ERROR,                     RR_CRYPTOGRAPHIC_FAILURE,    1) \
	X(CKR_DEVICE_MEMORY,                    RR_GENERAL_FAILURE,          1) \
	X(CKR_DEVICE_REMOVED,                   RR_CRYPTOGRAPHIC_FAILURE,    1) \
	X(CKR_ENCRYPTED_DATA_INVALID,           RR_INVALID_FIELD,            0) \
	X(CKR_ENCRYPTED_DATA_LEN_RANGE,         RR_INVALID_FIELD,            0) \
	X(CKR_AEAD_DECRYPT_FAILED,              RR_CRYPTOGRAPHIC_FAILURE,    0) \
	X(CKR_FUNCTION_CANCELED,                RR_GENERAL_FAILURE,          0) \
	X(CKR_FUNCTION_NOT_PARALLEL,            RR_GENERAL_FAILURE,          0) \
	X(CKR_FUNCTION_NOT_SUPPORTED,           RR_FEATURE_NOT_SUPPORTED,    0) \
	X(CKR_KEY_HANDLE_INVALID,               RR_ITEM_NOT_FOUND,           0) \
	X(CKR_KEY_SIZE_RANGE,                   RR_INVALID_FIELD,            0) \
	X(CKR_KEY_TYPE_INCONSISTENT,            RR_INVALID_FIELD,            0) \
	X(CKR_KEY_NOT_NEEDED,                   RR_GENERAL_FAILURE,          0) \
	X(CKR_KEY_CHANGED,                      RR_GENERAL_FAILURE,          0) \
	X(CKR_KEY_NEEDED,                       RR_GENERAL_FAILURE,          0) \
	X(CKR_KEY_INDIGESTIBLE,                 RR_GENERAL_FAILURE,          0) \
	X(CKR_KEY_FUNCTION_NOT_PERMITTED,       RR_PERMISSION_DENIED,        0) \
	X(CKR_KEY_NOT_WRAPPABLE,                RR_PERMISSION_DENIED,        0) \
	X(CKR_KEY_UNEXTRACTABLE,                RR_PERMISSION_DENIED,        0) \
	X(CKR_MECHANISM_INVALID,                RR_FEATURE_NOT_SUPPORTED,    0) \
	X(CKR_MECHANISM_PARAM_INVALID,          RR_INVALID_FIELD,            0) \
	X(CKR_OBJECT_HANDLE_INVALID,            RR_ITEM_NOT_FOUND,           0) \
	X(CKR_OPERATION_ACTIVE,                 RR_GENERAL_FAILURE,          1) \
	X(CKR_OPERATION_NOT_INITIALIZED,        RR_GENERAL_FAILURE,          1) \
	X(CKR_PIN_INCORRECT,                    RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_PIN_INVALID,                      RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_PIN_LEN_RANGE,                    RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_PIN_EXPIRED,                      RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_PIN_LOCKED,                       RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_SESSION_CLOSED,                   RR_GENERAL_FAILURE,          1) \
	X(CKR_SESSION_COUNT,                    RR_GENERAL_FAILURE,          1) \
	X(CKR_SESSION_HANDLE_INVALID,           RR_GENERAL_FAILURE,          1) \
	X(CKR_SESSION_PARALLEL_NOT_SUPPORTED,   RR_GENERAL_FAILURE,          0) \
	X(CKR_SESSION_READ_ONLY,                RR_PERMISSION_DENIED,        0) \
	X(CKR_SESSION_EXISTS,                   RR_GENERAL_FAILURE,          0) \
	X(CKR_SESSION_READ_ONLY_EXISTS,         RR_GENERAL_FAILURE,          0) \
	X(CKR_SESSION_READ_WRITE_SO_EXISTS,     RR_GENERAL_FAILURE,          0) \
	X(CKR_SIGNATURE_INVALID,                RR_CRYPTOGRAPHIC_FAILURE,    0) \
	X(CKR_SIGNATURE_LEN_RANGE,              RR_CRYPTOGRAPHIC_FAILURE,    0) \
	X(CKR_TEMPLATE_INCOMPLETE,              RR_INVALID_FIELD,            0) \
	X(CKR_TEMPLATE_INCONSISTENT,            RR_INVALID_FIELD,            0) \
	X(CKR_TOKEN_NOT_PRESENT,                RR_CRYPTOGRAPHIC_FAILURE,    1) \
	X(CKR_TOKEN_NOT_RECOGNIZED,             RR_CRYPTOGRAPHIC_FAILURE,    1) \
	X(CKR_TOKEN_WRITE_PROTECTED,            RR_PERMISSION_DENIED,        0) \
	X(CKR_UNWRAPPING_KEY_HANDLE_INVALID,    RR_ITEM_NOT_FOUND,           0) \
	X(CKR_UNWRAPPING_KEY_SIZE_RANGE,        RR_INVALID_FIELD,            0) \
	X(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, RR_INVALID_FIELD,            0) \
	X(CKR_USER_ALREADY_LOGGED_IN,           RR_GENERAL_FAILURE,          0) \
	X(CKR_USER_NOT_LOGGED_IN,               RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_USER_PIN_NOT_INITIALIZED,         RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_USER_TYPE_INVALID,                RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_USER_ANOTHER_ALREADY_LOGGED_IN,   RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_USER_TOO_MANY_TYPES,              RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_WRAPPED_KEY_INVALID,              RR_INVALID_FIELD,            0) \
	X(CKR_WRAPPED_KEY_LEN_RANGE,            RR_INVALID_FIELD,            0) \
	X(CKR_WRAPPING_KEY_HANDLE_INVALID,      RR_ITEM_NOT_FOUND,           0) \
	X(CKR_WRAPPING_KEY_SIZE_RANGE,          RR_INVALID_FIELD,            0) \
	X(CKR_WRAPPING_KEY_TYPE_INCONSISTENT,   RR_INVALID_FIELD,            0) \
	X(CKR_RANDOM_SEED_NOT_SUPPORTED,        RR_FEATURE_NOT_SUPPORTED,    0) \
	X(CKR_RANDOM_NO_RNG,                    RR_FEATURE_NOT_SUPPORTED,    0) \
	X(CKR_DOMAIN_PARAMS_INVALID,            RR_INVALID_FIELD,            0) \
	X(CKR_CURVE_NOT_SUPPORTED,              RR_FEATURE_NOT_SUPPORTED,    0) \
	X(CKR_BUFFER_TOO_SMALL,                 RR_GENERAL_FAILURE,          1) \
	X(CKR_SAVED_STATE_INVALID,              RR_GENERAL_FAILURE,          0) \
	X(CKR_INFORMATION_SENSITIVE,            RR_PERMISSION_DENIED,        0) \
	X(CKR_STATE_UNSAVEABLE,                 RR_GENERAL_FAILURE,          0) \
	X(CKR_CRYPTOKI_NOT_INITIALIZED,         RR_GENERAL_FAILURE,          1) \
	X(CKR_CRYPTOKI_ALREADY_INITIALIZED,     RR_GENERAL_FAILURE,          0) \
	X(CKR_MUTEX_BAD,                        RR_GENERAL_FAILURE,          1) \
	X(CKR_MUTEX_NOT_LOCKED,                 RR_GENERAL_FAILURE,          1) \
	X(CKR_NEW_PIN_MODE,                     RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_NEXT_OTP,                         RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_EXCEEDED_MAX_ITERATIONS,          RR_CRYPTOGRAPHIC_FAILURE,    0) \
	X(CKR_FIPS_SELF_TEST_FAILED,            RR_CRYPTOGRAPHIC_FAILURE,    1) \
	X(CKR_LIBRARY_LOAD_FAILED,              RR_GENERAL_FAILURE,          1) \
	X(CKR_PIN_TOO_WEAK,                     RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(CKR_PUBLIC_KEY_INVALID,               RR_INVALID_FIELD,            0) \
	X(CKR_FUNCTION_REJECTED,                RR_PERMISSION_DENIED,        0) \
	X(CKR_TOKEN_RESOURCE_EXCEEDED,          RR_GENERAL_FAILURE,          1) \
	X(CKR_OPERATION_CANCEL_FAILED,          RR_GENERAL_FAILURE,          0) \
	X(P11_E_NOT_FOUND,                      RR_ITEM_NOT_FOUND,           0) \
	X(P11_E_NO_SLOT,                        RR_AUTHENTICATION_NOT_SUCCESSFUL, 0) \
	X(P11_E_BAD_INPUT,                      RR_INVALID_FIELD,            0) \
	X(P11_E_UNSUPPORTED,                    RR_FEATURE_NOT_SUPPORTED,    0) \
	X(P11_E_BAD_VALUE,                      RR_CRYPTOGRAPHIC_FAILURE,    1)

/* The names in one pool, reached by offsets (as section 4's: no pointer to relocate). */
static const struct p11_rv_pool {
#define P11_RV_MEMBER(rv, reason, warn) char s_##rv[sizeof #rv];
	P11_RV_TABLE(P11_RV_MEMBER)
#undef P11_RV_MEMBER
} p11_rv_pool = {
#define P11_RV_TEXT(rv, reason, warn) #rv,
	P11_RV_TABLE(P11_RV_TEXT)
#undef P11_RV_TEXT
};

static const struct p11_rv_entry {
	CK_RV rv;
	uint32_t reason;
	uint16_t warn;
	uint16_t off;                   /* of the name in p11_rv_pool */
} p11_rv_table[] = {
#define P11_RV_ROW(rv, reason, warn) { rv, reason, warn, offsetof(struct p11_rv_pool, s_##rv) },
	P11_RV_TABLE(P11_RV_ROW)
#undef P11_RV_ROW
};

#define P11_RV_TEXT(e) ((const char *)&p11_rv_pool + (e)->off)

static const struct p11_rv_entry *p11_rv_find(CK_RV rv)
{
	for (size_t i = 0; i < ARRAY_LEN(p11_rv_table); i++)
		if (p11_rv_table[i].rv == rv)
			return &p11_rv_table[i];
	return NULL;
}

/* The name of a return value for logs and Result Messages.  Unknown values are formatted
 * into a per-thread buffer, so the pointer is good until the thread's next call. */
static const char *p11_rv_name(CK_RV rv)
{
	static __thread char buf[48];
	const struct p11_rv_entry *e = p11_rv_find(rv);

	if (e)
		return P11_RV_TEXT(e);
	if (rv >= CKR_VENDOR_DEFINED)
		snprintf(buf, sizeof buf, "CKR_VENDOR_DEFINED+0x%lx", rv - CKR_VENDOR_DEFINED);
	else
		snprintf(buf, sizeof buf, "CKR_0x%lx", rv);
	return buf;
}

/* KMIP Result Reason for a failed call; vendor and unknown codes are General Failure. */
static uint32_t p11_rv_reason(CK_RV rv)
{
	const struct p11_rv_entry *e = p11_rv_find(rv);
	return e ? e->reason : RR_GENERAL_FAILURE;
}

/* ---- the module -------------------------------------------------------------------------- */

/* Mechanisms whose presence changes what we do; one bit each in struct p11_slot.mechs. */
#define P11_MECHS(X) \
	X(RSA_PKCS_KEY_PAIR_GEN) X(RSA_PKCS) \
	X(SHA256_RSA_PKCS) X(SHA384_RSA_PKCS) X(SHA512_RSA_PKCS) \
	X(EC_KEY_PAIR_GEN) X(ECDSA) X(ECDSA_SHA256) X(ECDSA_SHA384) X(ECDSA_SHA512) \
	X(EC_EDWARDS_KEY_PAIR_GEN) X(EDDSA)

enum {
#define P11_MI_ENUM(m) P11_MI_##m,
	P11_MECHS(P11_MI_ENUM)
#undef P11_MI_ENUM
	P11_MI_COUNT
};

static const CK_MECHANISM_TYPE p11_mech_type[P11_MI_COUNT] = {
#define P11_MI_TYPE(m) CKM_##m,
	P11_MECHS(P11_MI_TYPE)
#undef P11_MI_TYPE
};

static const char *const p11_mech_name[P11_MI_COUNT] = {
#define P11_MI_NAME(m) "CKM_" #m,
	P11_MECHS(P11_MI_NAME)
#undef P11_MI_NAME
};

#define P11_MBIT(m) (1u << P11_MI_##m)

/* ---- algorithms: the facts that cross the KMIP / PKCS#11 boundary ------------------------ */

enum { P11_CURVE_NONE, P11_CURVE_P256, P11_CURVE_P384, P11_CURVE_P521, P11_CURVE_ED25519 };
enum { P11_HASH_NONE, P11_HASH_SHA256, P11_HASH_SHA384, P11_HASH_SHA512 };

#define ALG_ED25519 0x37        /* KMIP 2.0 Cryptographic Algorithm; accepted in 1.x too */

/*
 * CKA_EC_PARAMS is the DER of X9.62 ECParameters, for a named curve the choice
 * namedCurve OBJECT IDENTIFIER.  For Edwards curves 3.0 also allows a PrintableString with
 * the curve name ("edwards25519", RFC 8410's OID being the other form); SoftHSM 2.6.1 takes
 * the OID.
 */
static const uint8_t p11_oid_p256[] = { 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07 };
static const uint8_t p11_oid_p384[] = { 0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t p11_oid_p521[] = { 0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23 };
static const uint8_t p11_oid_ed25519[] = { 0x06, 0x03, 0x2B, 0x65, 0x70 };
static const uint8_t p11_name_ed25519[] = {
	0x13, 0x0C, 'e', 'd', 'w', 'a', 'r', 'd', 's', '2', '5', '5', '1', '9'
};

/*
 * SubjectPublicKeyInfo's AlgorithmIdentifier, whole DER: rsaEncryption with NULL
 * parameters (RFC 3279 2.3.1); id-ecPublicKey with the named curve (RFC 5480 2.1.1);
 * id-Ed25519 without parameters (RFC 8410 3).
 */
static const uint8_t p11_spki_rsa[] = { 0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7,
	0x0D, 0x01, 0x01, 0x01, 0x05, 0x00 };
static const uint8_t p11_spki_p256[] = { 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D,
	0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07 };
static const uint8_t p11_spki_p384[] = { 0x30, 0x10, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D,
	0x02, 0x01, 0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t p11_spki_p521[] = { 0x30, 0x10, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D,
	0x02, 0x01, 0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23 };
static const uint8_t p11_spki_ed25519[] = { 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70 };

/*
 * One row per kind of key the daemon serves: everything that maps a KMIP algorithm and
 * curve to PKCS#11 and back.  Key creation, Get, Sign, Locate, Query, the slot listing and
 * a slot's capabilities all read from here.
 *
 *   kmip_alg     Cryptographic Algorithm that Get and Get Attributes report (ECDSA for EC
 *                keys; a request may also say EC)
 *   kmip_curve   Recommended Curve (Transparent ECDSA Public Key), 0 where KMIP 1.2 has none
 *   der          CKA_EC_PARAMS as the daemon writes it; alt_der another form it accepts
 *   field        bytes of a coordinate (Ed25519: of the key)
 *   bits         Cryptographic Length; 0 for RSA, whose modulus says
 *   hash         the hash a Sign without parameters uses (P-384: SHA-384, as FIPS 186-5
 *                pairs them; Ed25519 hashes inside the mechanism)
 *   gen, sign    P11_MI_* of the key generation and of the raw signing mechanism
 *   hashed       P11_MBIT()s of the combined hash-and-sign mechanisms, used where the token
 *                has them (p11_hashes says which hash each is)
 */
#define P11_RSA_HASHED (P11_MBIT(SHA256_RSA_PKCS) | P11_MBIT(SHA384_RSA_PKCS) | P11_MBIT(SHA512_RSA_PKCS))
#define P11_EC_HASHED  (P11_MBIT(ECDSA_SHA256) | P11_MBIT(ECDSA_SHA384) | P11_MBIT(ECDSA_SHA512))
#define P11_ALGS(X) \
	X(RSA,     "RSA",     CKK_RSA,        P11_CURVE_NONE,    ALG_RSA,     0,           NULL,            0,                        NULL,             0,                        0,  0,   P11_HASH_SHA256, RSA_PKCS_KEY_PAIR_GEN,   RSA_PKCS, P11_RSA_HASHED, p11_spki_rsa) \
	X(P256,    "P-256",   CKK_EC,         P11_CURVE_P256,    ALG_ECDSA,   CURVE_P_256, p11_oid_p256,    sizeof p11_oid_p256,      NULL,             0,                        32, 256, P11_HASH_SHA256, EC_KEY_PAIR_GEN,         ECDSA,    P11_EC_HASHED,  p11_spki_p256) \
	X(P384,    "P-384",   CKK_EC,         P11_CURVE_P384,    ALG_ECDSA,   CURVE_P_384, p11_oid_p384,    sizeof p11_oid_p384,      NULL,             0,                        48, 384, P11_HASH_SHA384, EC_KEY_PAIR_GEN,         ECDSA,    P11_EC_HASHED,  p11_spki_p384) \
	X(P521,    "P-521",   CKK_EC,         P11_CURVE_P521,    ALG_ECDSA,   CURVE_P_521, p11_oid_p521,    sizeof p11_oid_p521,      NULL,             0,                        66, 521, P11_HASH_SHA512, EC_KEY_PAIR_GEN,         ECDSA,    P11_EC_HASHED,  p11_spki_p521) \
	X(ED25519, "Ed25519", CKK_EC_EDWARDS, P11_CURVE_ED25519, ALG_ED25519, 0,           p11_oid_ed25519, sizeof p11_oid_ed25519,   p11_name_ed25519, sizeof p11_name_ed25519,  32, 255, P11_HASH_NONE,   EC_EDWARDS_KEY_PAIR_GEN, EDDSA,    0,              p11_spki_ed25519)

enum {
#define P11_ALG_ENUM(id, ...) P11_ALG_##id,
	P11_ALGS(P11_ALG_ENUM)
#undef P11_ALG_ENUM
	P11_ALG_COUNT
};

static const struct p11_alg {
	const char *name;
	CK_KEY_TYPE type;
	int curve;
	uint32_t kmip_alg, kmip_curve;
	const uint8_t *der;
	size_t der_len;
	const uint8_t *alt_der;
	size_t alt_der_len;
	size_t field;
	unsigned bits;
	int hash;
	int gen, sign;                  /* P11_MI_* */
	uint32_t hashed;
	const uint8_t *spki_alg;
	size_t spki_alg_len;
} p11_algs[P11_ALG_COUNT] = {
#define P11_ALG_ROW(id, name, type, curve, kalg, kcurve, der, dlen, alt, alen, field, bits, hash, gen, sign, \
		    hashed, spki) \
	{ name, type, curve, kalg, kcurve, der, dlen, alt, alen, field, bits, hash, P11_MI_##gen, P11_MI_##sign, \
	  hashed, spki, sizeof spki },
	P11_ALGS(P11_ALG_ROW)
#undef P11_ALG_ROW
};

/* The row of a curve (P11_CURVE_*), or NULL for none. */
static const struct p11_alg *p11_curve_by_id(int curve)
{
	for (size_t i = 0; i < ARRAY_LEN(p11_algs); i++)
		if (curve != P11_CURVE_NONE && p11_algs[i].curve == curve)
			return &p11_algs[i];
	return NULL;
}

/* The row whose CKA_EC_PARAMS (either form) these are, or NULL. */
static const struct p11_alg *p11_curve_by_der(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < ARRAY_LEN(p11_algs); i++) {
		const struct p11_alg *a = &p11_algs[i];
		if ((a->der && a->der_len == n && memcmp(a->der, p, n) == 0) ||
		    (a->alt_der && a->alt_der_len == n && memcmp(a->alt_der, p, n) == 0))
			return a;
	}
	return NULL;
}

/* The row of a key: its CKA_KEY_TYPE and, for EC and Edwards keys, its curve. */
static const struct p11_alg *p11_alg_of(CK_KEY_TYPE type, int curve)
{
	for (size_t i = 0; i < ARRAY_LEN(p11_algs); i++)
		if (p11_algs[i].type == type && (type == CKK_RSA || p11_algs[i].curve == curve))
			return &p11_algs[i];
	return NULL;
}

/* Does a KMIP Cryptographic Algorithm name this row's kind of key?  EC and ECDSA both
 * name the Weierstrass curves. */
static int p11_alg_is(const struct p11_alg *a, uint32_t kmip_alg)
{
	return kmip_alg == a->kmip_alg || (a->type == CKK_EC && kmip_alg == ALG_EC);
}

/* What we know of one slot's token; created on first use, kept until p11_unload. */
struct p11_slot {
	CK_SLOT_ID id;
	char label[33];             /* token label, trailing blanks trimmed */
	uint32_t mechs;             /* P11_MBIT() of the mechanisms the token lists */
	CK_ULONG key_min[P11_MI_COUNT], key_max[P11_MI_COUNT]; /* C_GetMechanismInfo, 0: unknown */
	CK_ULONG max_sessions;      /* ulMaxSessionCount: 0 (CK_EFFECTIVELY_INFINITE) = no limit */
	int login_required;         /* CKF_LOGIN_REQUIRED; clear: sessions may open logged in */
	pthread_rwlock_t login_lock; /* readers: the PIN check; writer: a login */
	int logged_in;              /* we logged the token in; pin_digest is that PIN's */
	uint8_t pin_digest[32];     /* SHA-256(salt || PIN) */
};

/*
 * Can the token make keys of row a (RSA: of this many bits)?  0 yes, or -1 with the reason,
 * naming the mechanism.  A token whose mechanism list could not be read is left to decide
 * itself; a size range from C_GetMechanismInfo is used where it reads as bits (some
 * modules give bytes, or nothing, for Edwards keys: those are not checked).
 */
static int p11_slot_can_generate(const struct p11_slot *s, const struct p11_alg *a,
                                 unsigned bits, char *why, size_t cap)
{
	CK_ULONG lo = s->key_min[a->gen], hi = s->key_max[a->gen];
	CK_ULONG size = a->type == CKK_RSA ? bits : a->bits;

	if (s->mechs == 0)
		return 0;
	if (!(s->mechs & 1u << a->gen)) {
		snprintf(why, cap, "the token has no %s: no %s keys", p11_mech_name[a->gen], a->name);
		return -1;
	}
	if (a->type != CKK_EC_EDWARDS && hi >= 192 && (size < lo || size > hi)) {
		snprintf(why, cap, "%s %lu bits: the token's %s makes %lu..%lu-bit keys", a->name,
		         (unsigned long)size, p11_mech_name[a->gen], (unsigned long)lo,
		         (unsigned long)hi);
		return -1;
	}
	return 0;
}

/* Can the token sign with keys of row a: the raw mechanism or a combined one.  1 or 0. */
static int p11_slot_can_sign(const struct p11_slot *s, const struct p11_alg *a)
{
	return s->mechs == 0 || (s->mechs & (1u << a->sign | a->hashed)) != 0;
}

/* The functions the daemon calls: each must be present in the module's list. */
#define P11_REQUIRED(X) \
	X(Initialize) X(Finalize) X(GetInfo) X(GetSlotList) X(GetTokenInfo) \
	X(GetMechanismList) X(OpenSession) X(CloseSession) X(GetSessionInfo) X(Login) X(Logout) \
	X(DestroyObject) X(GetAttributeValue) X(SetAttributeValue) \
	X(FindObjectsInit) X(FindObjects) X(FindObjectsFinal) X(SignInit) X(Sign) \
	X(GenerateKeyPair) X(GenerateRandom)

static struct {
	void *dl;
	/* The 2.40 list; a 3.0 list starts with the same members in the same order, so it is
	 * called through this view as well. */
	CK_FUNCTION_LIST *fl;
	int v3;                     /* the list came from C_GetInterface with version >= 3.0 */
	char module[80];            /* manufacturer, description and version, for Query */
	int we_initialized;         /* C_Initialize returned CKR_OK, so C_Finalize is ours */
	char init_args[PATH_MAX];   /* for pReserved; "" for none */
	uint8_t salt[P11_PIN_SALT_LEN];
	pthread_mutex_t slots_lock;
	int nslots;
	struct p11_slot *slot[P11_MAX_SLOTS];
	/* Labels of the tokens served since start-up; they outlive a re-initialisation, so
	 * that a token that went away is told apart from a username that never named one. */
	int nknown;
	char known[P11_MAX_SLOTS][33];
	/* Re-initialisation (p11_reinit): requests hold p11_gate for reading, a
	 * re-initialisation for writing; epoch counts re-initialisations, so that a thread
	 * knows its session handles and cached slots are from before one. */
	unsigned epoch;                 /* read and written atomically */
	uint64_t reinit_ms;             /* mono_ms() of the last one; 0: none yet */
	pthread_mutex_t warn_lock;
	struct p11_warned {
		const char *call;
		CK_RV rv;
		uint64_t ms;
		unsigned skipped;
	} warned[P11_WARN_KEYS];
} p11 = { .slots_lock = PTHREAD_MUTEX_INITIALIZER, .warn_lock = PTHREAD_MUTEX_INITIALIZER };

/* Apart from p11, whose initializer is all zeros and so costs the binary nothing. */
#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
/* A re-initialisation must not wait for a moment with no request in flight. */
static pthread_rwlock_t p11_gate = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
#else
static pthread_rwlock_t p11_gate = PTHREAD_RWLOCK_INITIALIZER;
#endif
static uint64_t p11_reinit_gap_ms = P11_REINIT_GAP_MS;  /* at most one per this many ms */

#define P11_F (p11.fl)

/* Copy a blank-padded Cryptoki text field into a C string, trailing blanks (and NULs, which
 * some modules pad with) removed. */
static void p11_text(char *dst, size_t cap, const CK_UTF8CHAR *src, size_t n)
{
	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * A failed call, logged: at warning when the code says the module, token or session failed
 * (third column of P11_RV_TABLE, and every vendor or unknown code), else at debug.  A
 * failing token can fail every request, so a warning for one call and code is written at
 * most once per P11_WARN_GAP_MS, with the count of those left out since.  s may be NULL.
 */
static void p11_warn(const char *call, const struct p11_slot *s, CK_RV rv)
{
	const struct p11_rv_entry *e = p11_rv_find(rv);
	char where[64] = "";

	if (s)
		snprintf(where, sizeof where, "slot %lu (\"%s\"): ", s->id, s->label);
	if (e && !e->warn) {
		log_debug("%s%s: %s", where, call, P11_RV_TEXT(e));
		return;
	}
	uint64_t now = mono_ms();
	unsigned skipped = 0;
	struct p11_warned *w = NULL, *oldest = &p11.warned[0];
	pthread_mutex_lock(&p11.warn_lock);
	for (int i = 0; i < P11_WARN_KEYS && !w; i++) {
		struct p11_warned *k = &p11.warned[i];
		if (k->call && k->rv == rv && strcmp(k->call, call) == 0)
			w = k;
		else if (k->ms < oldest->ms)
			oldest = k;
	}
	if (!w) {
		w = oldest;             /* a new pair takes the least recent place */
		*w = (struct p11_warned){ call, rv, 0, 0 };
	} else if (now - w->ms < P11_WARN_GAP_MS) {
		w->skipped++;
		w = NULL;
	}
	if (w) {
		skipped = w->skipped;
		w->ms = now;
		w->skipped = 0;
	}
	pthread_mutex_unlock(&p11.warn_lock);
	if (!w)
		return;
	if (skipped)
		log_warn("%s%s: %s (and %u more since the last report)", where, call,
		         p11_rv_name(rv), skipped);
	else
		log_warn("%s%s: %s", where, call, p11_rv_name(rv));
}

static void p11_log_info(const char *path)
{
	CK_INFO info;
	char manuf[33], descr[33];

	memset(&info, 0, sizeof info);
	CK_RV rv = P11_F->C_GetInfo(&info);
	if (rv != CKR_OK) {
		log_warn("%s: C_GetInfo: %s", path, p11_rv_name(rv));
		return;
	}
	p11_text(manuf, sizeof manuf, info.manufacturerID, sizeof info.manufacturerID);
	p11_text(descr, sizeof descr, info.libraryDescription, sizeof info.libraryDescription);
	snprintf(p11.module, sizeof p11.module, "%s %s %u.%u", manuf, descr,
	         info.libraryVersion.major, info.libraryVersion.minor);
	log_info("PKCS#11 module %s: \"%s\" by \"%s\", version %u.%u, Cryptoki %u.%u%s", path,
	         descr, manuf, info.libraryVersion.major, info.libraryVersion.minor,
	         info.cryptokiVersion.major, info.cryptokiVersion.minor,
	         p11.v3 ? " (3.0 interface)" : "");
}

/* C_Initialize with CKF_OS_LOCKING_OK, no mutex callbacks, and [pkcs11] init-args (if
 * any) in pReserved; at load and at every re-initialisation. */
static CK_RV p11_initialize(void)
{
	CK_C_INITIALIZE_ARGS args;
	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK;
	args.pReserved = p11.init_args[0] ? (CK_VOID_PTR)p11.init_args : NULL;
	return P11_F->C_Initialize(&args);
}

/*
 * [pkcs11] init-args.  The base specification says pReserved "should be NULL_PTR", but
 * several modules read their configuration from it as a NUL-terminated string: NSS's
 * softoken ("configdir='...' certPrefix='' ..."), the YubiHSM 2 module ("connector=URL
 * debug ..."; yubihsm_pkcs11.c C_Initialize).  The daemon passes the string as it is, or
 * NULL when there is none.  Returns -1 when it is too long.
 */
static int p11_set_init_args(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n >= sizeof p11.init_args)
		return -1;
	memcpy(p11.init_args, s ? s : "", n + 1);
	return 0;
}

/*
 * Load the module.  Cryptoki 3.0 (section 5.2): C_GetInterface("PKCS 11", NULL, ..., 0)
 * returns the module's default interface; older modules export only C_GetFunctionList.
 * C_Initialize with CKF_OS_LOCKING_OK and no mutex callbacks: the module may be called from
 * several threads and uses the OS's own locking.  CKR_CRYPTOKI_ALREADY_INITIALIZED (another
 * user in this process) is accepted, and then C_Finalize is left to that user.
 */
static CK_RV p11_load(const char *path, char *err, size_t errsz)
{
	CK_RV rv = CKR_LIBRARY_LOAD_FAILED;
	const char *missing = NULL;

	err[0] = '\0';
	if (p11.dl) {
		snprintf(err, errsz, "%s: a PKCS#11 module is already loaded", path);
		return CKR_CRYPTOKI_ALREADY_INITIALIZED;
	}
	if (psa_crypto_init() != PSA_SUCCESS ||
	    psa_generate_random(p11.salt, sizeof p11.salt) != PSA_SUCCESS) {
		snprintf(err, errsz, "%s: cannot initialize PSA crypto for the PIN digest", path);
		return CKR_GENERAL_ERROR;
	}
	p11.dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!p11.dl) {
		const char *why = dlerror();
		snprintf(err, errsz, "%s: cannot load: %s", path, why ? why : "unknown reason");
		return CKR_LIBRARY_LOAD_FAILED;
	}

	/* dlsym returns void *; POSIX guarantees the conversion to a function pointer. */
	CK_C_GetInterface get_if;
	CK_C_GetFunctionList get_fl;
	*(void **)&get_if = dlsym(p11.dl, "C_GetInterface");
	*(void **)&get_fl = dlsym(p11.dl, "C_GetFunctionList");
	p11.fl = NULL;
	p11.v3 = 0;
	if (get_if) {
		static CK_UTF8CHAR name[] = "PKCS 11";
		CK_INTERFACE *ifc = NULL;
		rv = get_if(name, NULL, &ifc, 0);
		if (rv == CKR_OK && ifc && ifc->pFunctionList) {
			p11.fl = ifc->pFunctionList;
			p11.v3 = p11.fl->version.major >= 3;
		} else {
			log_warn("%s: C_GetInterface(\"PKCS 11\"): %s; trying C_GetFunctionList", path,
			         p11_rv_name(rv));
		}
	}
	if (!p11.fl && get_fl) {
		rv = get_fl(&p11.fl);
		if (rv != CKR_OK || !p11.fl) {
			snprintf(err, errsz, "%s: C_GetFunctionList: %s", path,
			         rv != CKR_OK ? p11_rv_name(rv) : "returned no list");
			p11.fl = NULL;
			goto fail;
		}
	}
	if (!p11.fl) {
		if (!get_if)
			snprintf(err, errsz, "%s: not a PKCS#11 module (exports neither "
			         "C_GetInterface nor C_GetFunctionList)", path);
		else
			snprintf(err, errsz, "%s: C_GetInterface gave no function list", path);
		rv = CKR_LIBRARY_LOAD_FAILED;
		goto fail;
	}

#define P11_CHECK_FN(n) if (!missing && !P11_F->C_##n) missing = "C_" #n;
	P11_REQUIRED(P11_CHECK_FN)
#undef P11_CHECK_FN
	if (missing) {
		snprintf(err, errsz, "%s: the module's function list has no %s, which kmip2pkcs11 "
		         "needs", path, missing);
		rv = CKR_FUNCTION_NOT_SUPPORTED;
		goto fail;
	}

	rv = p11_initialize();
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		log_warn("%s: already initialized in this process", path);
		p11.we_initialized = 0;
	} else if (rv != CKR_OK) {
		snprintf(err, errsz, "%s: C_Initialize: %s%s", path, p11_rv_name(rv),
		         rv == CKR_CANT_LOCK ? " (the module cannot use OS locking, which "
		         "kmip2pkcs11's threads need)" : rv != CKR_ARGUMENTS_BAD ? "" :
		         p11.init_args[0] ? " (with [pkcs11] init-args)" :
		         " (does the module want [pkcs11] init-args?)");
		goto fail;
	} else {
		p11.we_initialized = 1;
	}
	p11_log_info(path);
	if (p11.init_args[0])
		log_info("%s: initialized with [pkcs11] init-args (%zu bytes)", path,
		         strlen(p11.init_args));
	return CKR_OK;

fail:
	dlclose(p11.dl);
	p11.dl = NULL;
	p11.fl = NULL;
	return rv;
}

/* Slot state goes; the PIN digests are wiped. */
static void p11_slots_free(void)
{
	pthread_mutex_lock(&p11.slots_lock);
	for (int i = 0; i < p11.nslots; i++) {
		pthread_rwlock_destroy(&p11.slot[i]->login_lock);
		wipe(p11.slot[i], sizeof *p11.slot[i]);
		free(p11.slot[i]);
		p11.slot[i] = NULL;
	}
	p11.nslots = 0;
	pthread_mutex_unlock(&p11.slots_lock);
}

/* At exit: the loops and the slow pool have closed their sessions. */
static void p11_unload(void)
{
	if (!p11.dl)
		return;
	p11_slots_free();
	p11.nknown = 0;
	p11.reinit_ms = 0;
	pthread_mutex_lock(&p11.warn_lock);
	memset(p11.warned, 0, sizeof p11.warned);
	pthread_mutex_unlock(&p11.warn_lock);
	if (p11.we_initialized)
		P11_F->C_Finalize(NULL);
	p11.we_initialized = 0;
	p11.fl = NULL;
	dlclose(p11.dl);
	p11.dl = NULL;
	wipe(p11.salt, sizeof p11.salt);
}

/* ---- failures and recovery --------------------------------------------------------------- */

/*
 * What a failed call says about the module, and so what section 7 does before it runs the
 * request once more:
 *   P11_T_NONE     the request's own failure (a wrong PIN, an unknown mechanism): nothing;
 *   P11_T_SESSION  the session is gone or unusable: forget it (CKR_OPERATION_ACTIVE: a
 *                  module that left a failed operation open; then close it), open another
 *                  and log in again;
 *   P11_T_TOKEN    the token went away (removed, re-inserted, perhaps under a new slot
 *                  ID): also forget the slot, and resolve the username again;
 *   P11_T_MODULE   the module itself is stuck: a slot-level call (C_GetSlotList,
 *                  C_GetTokenInfo, C_OpenSession) failed in a way no request can cause,
 *                  or the module says it is not initialized: re-initialise it.  Section 7
 *                  also treats a username lookup that fails for a token served before
 *                  so: a module such as SoftHSM2 sees a token re-created under the same
 *                  label (in a new slot) only once it is initialized again.
 * slot_level: the failed call was one of the slot-level calls.
 */
enum { P11_T_NONE, P11_T_SESSION, P11_T_TOKEN, P11_T_MODULE };

static int p11_trouble(CK_RV rv, int slot_level)
{
	switch (rv) {
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return P11_T_MODULE;
	case CKR_SESSION_HANDLE_INVALID: case CKR_SESSION_CLOSED: case CKR_OPERATION_ACTIVE:
		return P11_T_SESSION;
	case CKR_TOKEN_NOT_PRESENT: case CKR_DEVICE_REMOVED: case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SLOT_ID_INVALID:
		return P11_T_TOKEN;
	case CKR_GENERAL_ERROR: case CKR_DEVICE_ERROR: case CKR_DEVICE_MEMORY:
	case CKR_FUNCTION_FAILED: case CKR_HOST_MEMORY:
		return slot_level ? P11_T_MODULE : P11_T_NONE;
	}
	return P11_T_NONE;
}

/* A request holds the gate (for reading) while it calls the module. */
static void p11_enter(void)
{
	pthread_rwlock_rdlock(&p11_gate);
}

static void p11_leave(void)
{
	pthread_rwlock_unlock(&p11_gate);
}

/* Re-initialisations so far: a thread whose sessions are from an older epoch forgets them
 * (without C_CloseSession: the handles may now be someone else's). */
static unsigned p11_epoch(void)
{
	return __atomic_load_n(&p11.epoch, __ATOMIC_ACQUIRE);
}

/*
 * C_Finalize and C_Initialize, with every request quiesced: the caller holds no gate; the
 * write lock waits for the requests in flight and holds back new ones.  seen is the epoch
 * the caller's failure happened in: if another thread re-initialised the module since,
 * that one counts.  At most one per p11_reinit_gap_ms (P11_REINIT_GAP_MS); call and why
 * name the failure that asked for it, for the log.  Every slot's state goes (the
 * sessions and logins went with C_Finalize; slot IDs may change).  1: the module was
 * re-initialised (by us or another thread) since seen; 0: not now.
 */
static int p11_reinit(unsigned seen, const char *call, CK_RV why)
{
	int done = 0;

	if (!p11.dl)
		return 0;
	pthread_rwlock_wrlock(&p11_gate);
	if (p11_epoch() != seen) {
		done = 1;
		goto out;
	}
	uint64_t now = mono_ms();
	if (p11.reinit_ms && now - p11.reinit_ms < p11_reinit_gap_ms) {
		p11_warn("module re-initialisation postponed (at most one per 5 s); the last "
		         "failure", NULL, why);
		goto out;
	}
	p11.reinit_ms = now;
	log_warn("re-initialising the PKCS#11 module (C_Finalize, C_Initialize) after %s: %s",
	         call, p11_rv_name(why));
	if (p11.we_initialized) {
		CK_RV frv = P11_F->C_Finalize(NULL);
		if (frv != CKR_OK)
			log_warn("C_Finalize: %s", p11_rv_name(frv));
	}
	CK_RV rv = p11_initialize();
	p11.we_initialized = rv == CKR_OK;
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
		log_warn("C_Initialize: %s (another user in this process): sessions and slots "
		         "are opened afresh, the module is not", p11_rv_name(rv));
	else if (rv != CKR_OK)
		log_error("C_Initialize: %s; the module stays unusable until the next attempt",
		          p11_rv_name(rv));
	else
		log_warn("PKCS#11 module re-initialised");
	p11_slots_free();
	__atomic_store_n(&p11.epoch, seen + 1, __ATOMIC_RELEASE);
	done = rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED;
out:
	pthread_rwlock_unlock(&p11_gate);
	return done;
}

/* The token in slot s still answers; after C_FindObjects found nothing, this tells "no
 * such key" from "the token could not look" (SoftHSM2 with its token directory gone finds
 * nothing, and fails C_GetTokenInfo). */
static CK_RV p11_token_check(const struct p11_slot *s)
{
	CK_TOKEN_INFO ti;
	return P11_F->C_GetTokenInfo(s->id, &ti);
}

/* ---- slots ------------------------------------------------------------------------------- */

/* The smallest session limit among the tokens present at start-up (0: no limit), which
 * caps the number of event loops and slow-pool threads: each opens one session per token it
 * serves. */
static unsigned long p11_session_limit(void)
{
	CK_SLOT_ID ids[P11_SLOT_LIST_MAX];
	CK_ULONG n = P11_SLOT_LIST_MAX;
	unsigned long lim = 0;
	if (P11_F->C_GetSlotList(CK_TRUE, ids, &n) != CKR_OK)
		return 0;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (P11_F->C_GetTokenInfo(ids[i], &ti) != CKR_OK ||
		    ti.ulMaxSessionCount == CK_EFFECTIVELY_INFINITE ||
		    ti.ulMaxSessionCount == CK_UNAVAILABLE_INFORMATION)
			continue;
		if (lim == 0 || ti.ulMaxSessionCount < lim)
			lim = ti.ulMaxSessionCount;
	}
	return lim;
}

/* Read the token's label, session limit and mechanisms into a new state.  The mechanism list
 * is read once: a token does not learn mechanisms while the daemon runs. */
static CK_RV p11_slot_new(CK_SLOT_ID id, struct p11_slot **out)
{
	CK_TOKEN_INFO ti;
	CK_MECHANISM_TYPE *list = NULL;
	CK_ULONG n = 0;
	struct p11_slot *s = NULL;
	CK_RV rv;

	memset(&ti, 0, sizeof ti);
	rv = P11_F->C_GetTokenInfo(id, &ti);
	if (rv != CKR_OK)
		return rv;
	s = calloc(1, sizeof *s);
	if (!s)
		return CKR_HOST_MEMORY;
	s->id = id;
	p11_text(s->label, sizeof s->label, ti.label, sizeof ti.label);
	s->max_sessions = ti.ulMaxSessionCount;
	s->login_required = (ti.flags & CKF_LOGIN_REQUIRED) != 0;
	if (!s->login_required)
		log_warn("slot %lu: token \"%s\" does not require login (no CKF_LOGIN_REQUIRED): "
		         "its module may log sessions in with credentials of its own; see p11_auth",
		         id, s->label);

	/* A failed mechanism list is not fatal: the software-hash paths need only CKM_RSA_PKCS
	 * and CKM_ECDSA, which every signing token has. */
	rv = P11_F->C_GetMechanismList(id, NULL, &n);
	if (rv == CKR_OK && n > 0 && n <= P11_MECH_LIST_MAX) {
		list = calloc(n, sizeof *list);
		if (list && P11_F->C_GetMechanismList(id, list, &n) == CKR_OK) {
			for (CK_ULONG i = 0; i < n; i++)
				for (int m = 0; m < P11_MI_COUNT; m++)
					if (list[i] == p11_mech_type[m])
						s->mechs |= 1u << m;
		}
		free(list);
		for (int m = 0; m < P11_MI_COUNT && P11_F->C_GetMechanismInfo; m++) {
			CK_MECHANISM_INFO mi;
			if ((s->mechs & 1u << m) &&
			    P11_F->C_GetMechanismInfo(id, p11_mech_type[m], &mi) == CKR_OK &&
			    mi.ulMaxKeySize >= mi.ulMinKeySize) {
				s->key_min[m] = mi.ulMinKeySize;
				s->key_max[m] = mi.ulMaxKeySize;
			}
		}
	} else if (rv != CKR_OK) {
		log_warn("slot %lu: C_GetMechanismList: %s", id, p11_rv_name(rv));
	}
	pthread_rwlock_init(&s->login_lock, NULL);
	log_info("slot %lu: token \"%s\", max sessions %lu, mechanisms 0x%x", id, s->label,
	         s->max_sessions, s->mechs);
	int known = 0;
	for (int i = 0; i < p11.nknown && !known; i++)
		known = strcmp(p11.known[i], s->label) == 0;
	if (!known && s->label[0] && p11.nknown < P11_MAX_SLOTS)
		memcpy(p11.known[p11.nknown++], s->label, sizeof s->label);
	*out = s;
	return CKR_OK;
}

/* The state of slot id, created on first use. */
static CK_RV p11_slot_get(CK_SLOT_ID id, struct p11_slot **out)
{
	CK_RV rv = CKR_OK;

	pthread_mutex_lock(&p11.slots_lock);
	for (int i = 0; i < p11.nslots; i++) {
		if (p11.slot[i]->id == id) {
			*out = p11.slot[i];
			goto out;
		}
	}
	if (p11.nslots == P11_MAX_SLOTS) {
		log_error("more than %d slots in use", P11_MAX_SLOTS);
		rv = CKR_HOST_MEMORY;
		goto out;
	}
	rv = p11_slot_new(id, out);
	if (rv == CKR_OK)
		p11.slot[p11.nslots++] = *out;
out:
	pthread_mutex_unlock(&p11.slots_lock);
	return rv;
}

/* The username is the label of a token served since start-up. */
static int p11_label_known(const char *user, size_t len)
{
	int known = 0;
	pthread_mutex_lock(&p11.slots_lock);
	for (int i = 0; i < p11.nknown && !known; i++)
		known = strlen(p11.known[i]) == len && memcmp(p11.known[i], user, len) == 0;
	pthread_mutex_unlock(&p11.slots_lock);
	return known;
}

/* Username -> slot, in the original bridge's order:
 *   1. a token label equal to the username (trailing blanks of the label ignored), among
 *      the slots with a token, C_GetSlotList(CK_TRUE);
 *   2. a slot ID equal to the username read as a decimal number;
 *   3. the username as an index into C_GetSlotList(CK_FALSE).
 * A module with more than P11_SLOT_LIST_MAX slots answers CKR_BUFFER_TOO_SMALL, and the
 * list's contents are then undefined: that is an error, not a list to look at.
 * The label of a token served before that is not found now is not "no such user": the
 * token is gone, for now.  Then the error of a token whose C_GetTokenInfo failed (it may
 * be that one) or CKR_TOKEN_NOT_PRESENT is returned, and *call names the call.  call may
 * be NULL. */
static CK_RV p11_slot_lookup_at(const char *user, size_t len, struct p11_slot **out,
                                const char **call)
{
	CK_SLOT_ID list[P11_SLOT_LIST_MAX];
	CK_ULONG n = P11_SLOT_LIST_MAX;
	CK_RV rv, info_rv = CKR_OK;
	const char *dummy;

	*out = NULL;
	if (!call)
		call = &dummy;
	*call = "C_GetSlotList";
	if (len == 0)
		return P11_E_NO_SLOT;   /* would match an uninitialized token's empty label */
	/* More slots than the list holds leaves its contents undefined (PKCS#11 5.5). */
	rv = P11_F->C_GetSlotList(CK_TRUE, list, &n);
	if (rv != CKR_OK)
		return rv;
	if (len <= 32) {
		for (CK_ULONG i = 0; i < n; i++) {
			CK_TOKEN_INFO ti;
			char label[33];
			CK_RV r = P11_F->C_GetTokenInfo(list[i], &ti);
			if (r != CKR_OK) {
				info_rv = r;
				continue;
			}
			p11_text(label, sizeof label, ti.label, sizeof ti.label);
			if (strlen(label) == len && memcmp(label, user, len) == 0) {
				*call = "C_GetTokenInfo";
				return p11_slot_get(list[i], out);
			}
		}
		if (p11_label_known(user, len)) {
			*call = info_rv != CKR_OK ? "C_GetTokenInfo" : "C_GetSlotList";
			return info_rv != CKR_OK ? info_rv : CKR_TOKEN_NOT_PRESENT;
		}
	}

	/* A decimal number: no sign, no blanks, no overflow. */
	unsigned long num = 0;
	int numeric = len > 0 && len <= 20;
	for (size_t i = 0; numeric && i < len; i++) {
		unsigned d = (unsigned)(user[i] - '0');
		if (d > 9 || num > (ULONG_MAX - d) / 10)
			numeric = 0;
		else
			num = num * 10 + d;
	}
	if (!numeric)
		return P11_E_NO_SLOT;
	n = P11_SLOT_LIST_MAX;
	rv = P11_F->C_GetSlotList(CK_FALSE, list, &n);
	if (rv != CKR_OK)
		return rv;
	*call = "C_GetTokenInfo";
	for (CK_ULONG i = 0; i < n; i++)
		if (list[i] == num)
			return p11_slot_get(list[i], out);
	if (num < n)
		return p11_slot_get(list[num], out);
	return P11_E_NO_SLOT;
}

static CK_RV p11_slot_lookup(const char *user, size_t len, struct p11_slot **out)
{
	return p11_slot_lookup_at(user, len, out, NULL);
}

/*
 * A username that reaches no slot, logged at warning with the token labels there are, so
 * an operator sees the typo; at most once a second (an unauthenticated client chooses it).
 */
static void p11_log_unknown_user(const char *user, size_t len)
{
	static uint64_t last_ms;
	uint64_t now = mono_ms();
	CK_SLOT_ID list[P11_SLOT_LIST_MAX];
	CK_ULONG n = P11_SLOT_LIST_MAX;
	char labels[256] = "", shown[80];
	size_t at = 0;

	uint64_t prev = __atomic_load_n(&last_ms, __ATOMIC_RELAXED);
	if ((prev && now < prev + 1000) ||
	    !__atomic_compare_exchange_n(&last_ms, &prev, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	if (P11_F->C_GetSlotList(CK_TRUE, list, &n) == CKR_OK)
		for (CK_ULONG i = 0; i < n && at < sizeof labels - 40; i++) {
			CK_TOKEN_INFO ti;
			char label[33];
			if (P11_F->C_GetTokenInfo(list[i], &ti) != CKR_OK)
				continue;
			p11_text(label, sizeof label, ti.label, sizeof ti.label);
			int k = snprintf(labels + at, sizeof labels - at, "%s\"%s\"", at ? ", " : "", label);
			at += k > 0 ? (size_t)k : 0;
		}
	/* the username is the peer's: printable ASCII only, cut short */
	size_t m = 0;
	for (size_t i = 0; i < len && m < sizeof shown - 1; i++)
		shown[m++] = user[i] >= 0x20 && user[i] < 0x7F ? user[i] : '?';
	shown[m] = '\0';
	log_warn("no slot for username \"%s\": token labels are %s; a slot ID or index also works",
		 shown, at ? labels : "(none)");
}

/*
 * --list-slots: what an operator needs to write the configuration and Cascade's `hsm add`:
 * per slot its index and ID, the token's label, manufacturer, model and serial, flags and
 * sessions, which keys the daemon can make and sign with there (from the mechanism list,
 * through the same table and checks the operations use), and the usernames that reach it.
 * The module must be loaded.  0, or 1 when the slot list cannot be read.
 */
static int p11_list_slots(FILE *f)
{
	CK_SLOT_ID list[P11_SLOT_LIST_MAX];
	CK_ULONG n = P11_SLOT_LIST_MAX;
	CK_RV rv = P11_F->C_GetSlotList(CK_FALSE, list, &n);

	if (rv != CKR_OK) {
		fprintf(stderr, "kmip2pkcs11: C_GetSlotList: %s\n", p11_rv_name(rv));
		return 1;
	}
	fprintf(f, "module: %s\n%lu slot(s)\n", p11.module, (unsigned long)n);
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char label[33], manuf[33], model[17], serial[17], num[24];
		struct p11_slot *s, *via;
		fprintf(f, "\nslot %lu: id %lu\n", (unsigned long)i, (unsigned long)list[i]);
		rv = P11_F->C_GetTokenInfo(list[i], &ti);
		if (rv != CKR_OK) {
			fprintf(f, "  no token (%s)\n", p11_rv_name(rv));
			continue;
		}
		p11_text(label, sizeof label, ti.label, sizeof ti.label);
		p11_text(manuf, sizeof manuf, ti.manufacturerID, sizeof ti.manufacturerID);
		p11_text(model, sizeof model, ti.model, sizeof ti.model);
		p11_text(serial, sizeof serial, ti.serialNumber, sizeof ti.serialNumber);
		fprintf(f, "  label         \"%s\"\n  token         %s, %s, serial %s\n", label, manuf,
			model, serial);
		fprintf(f, "  flags        %s%s%s%s\n", ti.flags & CKF_TOKEN_INITIALIZED ? " initialized" : "",
			ti.flags & CKF_LOGIN_REQUIRED ? " login-required" : " no-login-required",
			ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH ? " protected-authentication-path" : "",
			ti.flags & CKF_USER_PIN_LOCKED ? " user-pin-locked" : "");
		fprintf(f, "  sessions      ");
		if (ti.ulSessionCount == CK_UNAVAILABLE_INFORMATION)
			fprintf(f, "? open");
		else
			fprintf(f, "%lu open", (unsigned long)ti.ulSessionCount);
		if (ti.ulMaxSessionCount == CK_EFFECTIVELY_INFINITE ||
		    ti.ulMaxSessionCount == CK_UNAVAILABLE_INFORMATION)
			fprintf(f, ", no limit given\n");
		else
			fprintf(f, " of at most %lu\n", (unsigned long)ti.ulMaxSessionCount);
		if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
			fprintf(f, "  (not initialized: no keys here until it is)\n");
			continue;
		}
		if (p11_slot_get(list[i], &s) != CKR_OK)
			continue;
		fprintf(f, "  generate     ");
		int any = 0;
		for (size_t a = 0; a < ARRAY_LEN(p11_algs); a++) {
			const struct p11_alg *al = &p11_algs[a];
			char why[120];
			unsigned bits = al->type == CKK_RSA ? 2048 : al->bits;
			if (p11_slot_can_generate(s, al, bits, why, sizeof why) != 0)
				continue;
			if (al->type == CKK_RSA) {   /* the token's range within the daemon's */
				CK_ULONG lo = s->key_min[al->gen], hi = s->key_max[al->gen];
				lo = lo > P11_RSA_MIN_BITS ? lo : P11_RSA_MIN_BITS;
				hi = hi && hi < P11_RSA_MAX_BITS ? hi : P11_RSA_MAX_BITS;
				fprintf(f, "%s RSA %lu..%lu bits", any ? "," : "", (unsigned long)lo,
					(unsigned long)hi);
			} else {
				fprintf(f, "%s %s", any ? "," : "", al->name);
			}
			any = 1;
		}
		fprintf(f, "%s\n  sign         ", any ? "" : " nothing");
		any = 0;
		for (size_t a = 0; a < ARRAY_LEN(p11_algs); a++) {
			const struct p11_alg *al = &p11_algs[a];
			if (!p11_slot_can_sign(s, al))
				continue;
			fprintf(f, "%s %s (%s)", any ? "," : "", al->name, al->type == CKK_EC_EDWARDS ?
				p11_mech_name[al->sign] : s->mechs & al->hashed ? "hash in the token" :
				"hash in software");
			any = 1;
		}
		fprintf(f, "%s\n  usernames    ", any ? "" : " nothing");
		/* those of label, slot ID and index that the lookup really resolves to this slot */
		char prev[24] = "";
		for (int k = 0; k < 3; k++) {
			const char *u = num;
			if (k == 0)
				u = label;
			else
				snprintf(num, sizeof num, "%lu", k == 1 ? (unsigned long)list[i] : (unsigned long)i);
			if (*u && strcmp(u, prev) != 0 && p11_slot_lookup(u, strlen(u), &via) == CKR_OK &&
			    via == s)
				fprintf(f, " \"%s\"", u);
			if (k > 0)
				snprintf(prev, sizeof prev, "%s", num);
		}
		fprintf(f, "\n");
	}
	return 0;
}

/* ---- sessions and login ------------------------------------------------------------------ */

/* A read/write session: key generation, labels and destruction need one. */
static CK_RV p11_session_open(const struct p11_slot *s, CK_SESSION_HANDLE *h)
{
	*h = CK_INVALID_HANDLE;
	return P11_F->C_OpenSession(s->id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, h);
}

static void p11_session_close(CK_SESSION_HANDLE h)
{
	if (h != CK_INVALID_HANDLE)
		P11_F->C_CloseSession(h);
}

/* The session handle no longer works (closed, token removed or re-inserted): the caller
 * opens a new session once and repeats the request, which logs in again if needed. */
static int p11_session_lost(CK_RV rv)
{
	return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
	       rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED;
}

/* SHA-256(salt || PIN); the salt is random per process, so a digest leaked from memory
 * helps with nothing but a dictionary attack on this very process. */
static int p11_pin_digest(const uint8_t *pin, size_t len, uint8_t out[32])
{
	psa_hash_operation_t op = PSA_HASH_OPERATION_INIT;
	size_t n = 0;
	int ok = psa_hash_setup(&op, PSA_ALG_SHA_256) == PSA_SUCCESS &&
	         psa_hash_update(&op, p11.salt, sizeof p11.salt) == PSA_SUCCESS &&
	         psa_hash_update(&op, pin, len) == PSA_SUCCESS &&
	         psa_hash_finish(&op, out, 32, &n) == PSA_SUCCESS && n == 32;
	psa_hash_abort(&op);
	return ok ? 0 : -1;
}

static int p11_user_state(CK_STATE st)
{
	return st == CKS_RO_USER_FUNCTIONS || st == CKS_RW_USER_FUNCTIONS;
}

/*
 * Check the PIN of one request.  PKCS#11 login is per application and token, not per
 * session (base spec 5.6): once any session logged in, all of them are.  So:
 *   - the token is in a user state and we logged it in: the offered PIN must have the same
 *     salted digest as the one that logged in; a different PIN is refused without C_Login;
 *   - the token is in a user state but not by our doing (another login in this process):
 *     C_Logout, then C_Login, so that this PIN is really checked by the token;
 *   - unless the token has no CKF_LOGIN_REQUIRED: then the module logged the session in
 *     with credentials of its own (Nitrokey NetHSM: the operator of its configuration file,
 *     nethsm-pkcs11 LoginCtx::new), and C_Login would replace them with the KMIP password
 *     for that session (LoginCtx::login), failing everything when it is not the NetHSM's
 *     (Cascade's NetHSM guide says the password "isn't actually used").  The daemon does
 *     not log such a session out or in; the first password seen is kept as if it had
 *     logged in, and every later request must carry the same one (a warning says so);
 *   - the token is not logged in (never, or it dropped the login: power, removal, a module
 *     that logs out when the last session closes): C_Login, and keep the digest on success.
 * C_Login's own errors (CKR_PIN_INCORRECT, CKR_PIN_LOCKED, ...) are returned as they are.
 */
static CK_RV p11_auth(struct p11_slot *s, CK_SESSION_HANDLE h, const uint8_t *pin, size_t len)
{
	uint8_t d[32];
	CK_SESSION_INFO si;
	CK_RV rv = CKR_GENERAL_ERROR;

	if (len > 0xFFFF)
		return CKR_PIN_LEN_RANGE;
	if (p11_pin_digest(pin, len, d) != 0)
		return CKR_GENERAL_ERROR;
	/* The common case, a token we logged in: the threads check PINs side by side. */
	pthread_rwlock_rdlock(&s->login_lock);
	rv = P11_F->C_GetSessionInfo(h, &si);
	if (rv == CKR_OK && p11_user_state(si.state) && s->logged_in)
		rv = ct_equal(d, s->pin_digest, sizeof d) ? CKR_OK : CKR_PIN_INCORRECT;
	else if (rv == CKR_OK)
		rv = CKR_USER_NOT_LOGGED_IN;
	pthread_rwlock_unlock(&s->login_lock);
	if (rv != CKR_USER_NOT_LOGGED_IN) {
		wipe(d, sizeof d);
		return rv;
	}

	/* A login: one at a time, and the state looked at again under the write lock. */
	pthread_rwlock_wrlock(&s->login_lock);
	rv = P11_F->C_GetSessionInfo(h, &si);
	if (rv != CKR_OK)
		goto out;
	if (p11_user_state(si.state) && s->logged_in) {
		rv = ct_equal(d, s->pin_digest, sizeof d) ? CKR_OK : CKR_PIN_INCORRECT;
		goto out;
	}
	if (s->logged_in) {
		log_info("slot %lu: the token dropped our login; logging in again", s->id);
		s->logged_in = 0;
		wipe(s->pin_digest, sizeof s->pin_digest);
	}
	if (p11_user_state(si.state) && !s->login_required) {
		log_warn("slot %lu: the module logged the session in by itself; the KMIP password "
		         "is not given to the token: requests must carry the password of this "
		         "first one", s->id);
		memcpy(s->pin_digest, d, sizeof d);
		s->logged_in = 1;
		rv = CKR_OK;
		goto out;
	}
	if (p11_user_state(si.state)) {
		log_info("slot %lu: logged in by someone else; logging out to check the PIN", s->id);
		P11_F->C_Logout(h);
	}
	rv = P11_F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)len);
	if (rv == CKR_USER_ALREADY_LOGGED_IN) {
		/* Logged in between C_GetSessionInfo and C_Login, by a login that is not ours. */
		P11_F->C_Logout(h);
		rv = P11_F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)len);
	}
	if (rv == CKR_OK) {
		memcpy(s->pin_digest, d, sizeof d);
		s->logged_in = 1;
	}
out:
	pthread_rwlock_unlock(&s->login_lock);
	wipe(d, sizeof d);
	return rv;
}

/* ---- objects ----------------------------------------------------------------------------- */

#define P11_ATTR(t, p, n) { (t), (void *)(p), (CK_ULONG)(n) }

/* C_FindObjectsInit / C_FindObjects / C_FindObjectsFinal: up to max matching handles into
 * found, their number into *count (a key lookup asks for 2, to tell "one" from "more"). */
static CK_RV p11_find(CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *found,
                      CK_ULONG max, CK_ULONG *count)
{
	CK_ULONG got = 0;
	CK_RV rv;

	*count = 0;
	rv = P11_F->C_FindObjectsInit(h, t, n);
	if (rv != CKR_OK)
		return rv;
	rv = P11_F->C_FindObjects(h, found, max, &got);
	CK_RV rv2 = P11_F->C_FindObjectsFinal(h);
	if (rv == CKR_OK)
		rv = rv2;
	if (rv != CKR_OK)
		return rv;
	if (got > max)
		return P11_E_BAD_VALUE;
	*count = got;
	return CKR_OK;
}

/* The key with this CKA_ID and CKA_CLASS (CKO_PUBLIC_KEY or CKO_PRIVATE_KEY).  Two objects
 * with the same pair are a token-side mess, not a reason to fail: the first one serves. */
static CK_RV p11_find_key(CK_SESSION_HANDLE h, const uint8_t *id, size_t idlen,
                          CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *out)
{
	CK_ATTRIBUTE t[] = {
		P11_ATTR(CKA_ID, id, idlen),
		P11_ATTR(CKA_CLASS, &cls, sizeof cls),
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG count = 0;

	if (idlen == 0 || idlen > P11_ID_MAX)
		return P11_E_NOT_FOUND;
	CK_RV rv = p11_find(h, t, ARRAY_LEN(t), found, 2, &count);
	if (rv != CKR_OK)
		return rv;
	if (count == 0)
		return P11_E_NOT_FOUND;
	*out = found[0];
	if (count > 1) {
		char hex[2 * P11_ID_MAX + 1];
		hex_upper(hex, id, idlen);
		log_warn("more than one %s key with CKA_ID %s; using the first",
		         cls == CKO_PRIVATE_KEY ? "private" : "public", hex);
	}
	return CKR_OK;
}

static CK_RV p11_random(CK_SESSION_HANDLE h, uint8_t *buf, size_t n)
{
	if (n > 0xFFFF)
		return P11_E_BAD_INPUT;
	return P11_F->C_GenerateRandom(h, buf, (CK_ULONG)n);
}

static CK_RV p11_destroy(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
	return P11_F->C_DestroyObject(h, o);
}

static CK_RV p11_set_label(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, const char *s, size_t n)
{
	CK_ATTRIBUTE t[] = { P11_ATTR(CKA_LABEL, s, n) };
	if (n > P11_LABEL_MAX)
		return P11_E_BAD_INPUT;
	return P11_F->C_SetAttributeValue(h, o, t, 1);
}

/* CKA_SIGN or CKA_VERIFY (modifiable after creation, PKCS#11 table 10 note 8). */
static CK_RV p11_set_bool(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE a, int v)
{
	CK_BBOOL b = v ? CK_TRUE : CK_FALSE;
	CK_ATTRIBUTE t[] = { P11_ATTR(a, &b, sizeof b) };
	return P11_F->C_SetAttributeValue(h, o, t, 1);
}

/*
 * C_GetAttributeValue for a template whose attributes may not all exist.  The spec (5.7)
 * has the module process every attribute and mark each failed one with
 * CK_UNAVAILABLE_INFORMATION, returning CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID
 * or CKR_BUFFER_TOO_SMALL.  Some modules stop at the first failure instead, so in those
 * three cases each attribute is read again on its own.  CKR_OK then means: look at each
 * ulValueLen.
 */
static CK_RV p11_get_attrs(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, size_t n)
{
	CK_ULONG cap[16];
	CK_RV rv;

	if (n > ARRAY_LEN(cap))
		return CKR_ARGUMENTS_BAD;
	for (size_t i = 0; i < n; i++)
		cap[i] = t[i].ulValueLen;
	rv = P11_F->C_GetAttributeValue(h, o, t, (CK_ULONG)n);
	if (rv != CKR_OK) {
		if (rv != CKR_ATTRIBUTE_SENSITIVE && rv != CKR_ATTRIBUTE_TYPE_INVALID &&
		    rv != CKR_BUFFER_TOO_SMALL)
			return rv;
		for (size_t i = 0; i < n; i++) {
			t[i].ulValueLen = cap[i];
			rv = P11_F->C_GetAttributeValue(h, o, &t[i], 1);
			if (p11_session_lost(rv) || rv == CKR_OBJECT_HANDLE_INVALID)
				return rv;
			if (rv != CKR_OK)
				t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
		}
	}
	/* A length beyond our buffer would be a module bug; never let it reach a memcpy. */
	for (size_t i = 0; i < n; i++)
		if (t[i].ulValueLen > cap[i])
			t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
	return CKR_OK;
}

static int p11_have(const CK_ATTRIBUTE *a)
{
	return a->ulValueLen != CK_UNAVAILABLE_INFORMATION;
}

/*
 * CKA_EC_POINT is, by the spec, the DER OCTET STRING holding the point (X9.62 uncompressed
 * 04||X||Y, or the 32 bytes of an Ed25519 key); some modules return the bare point.  A bare
 * uncompressed point also starts with 0x04, so the expected bare size decides first:
 * 2*field+1 for Weierstrass curves, 32 for Ed25519.  Returns the point's length in place
 * (moved to the front of p), or 0 if it is neither form.
 */
static size_t p11_ec_point_unwrap(uint8_t *p, size_t n, const struct p11_alg *c)
{
	size_t bare = c->curve == P11_CURVE_ED25519 ? 32 : 2 * c->field + 1;
	size_t hdr, len;

	if (n == bare && (c->curve == P11_CURVE_ED25519 || p[0] == 0x04))
		return n;
	if (n < 2 || p[0] != 0x04)
		return 0;
	if (p[1] < 0x80) {
		hdr = 2;
		len = p[1];
	} else if (p[1] == 0x81 && n >= 3 && p[2] >= 0x80) {
		hdr = 3;
		len = p[2];
	} else {
		return 0;
	}
	if (len != n - hdr || len != bare)
		return 0;
	memmove(p, p + hdr, len);
	return len;
}

/* ---- key attributes ---------------------------------------------------------------------- */

/* What the operations need to know about a key; lengths are 0 and flags -1 when the module
 * would not tell. */
struct p11_key_info {
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE type;
	uint8_t id[P11_ID_MAX];
	size_t id_len;
	char label[P11_LABEL_MAX + 1];     /* NUL-terminated copy; label_len is exact */
	size_t label_len;
	int sign, verify;                  /* CKA_SIGN / CKA_VERIFY: 1, 0, or -1 unknown */
	CK_MECHANISM_TYPE gen_mech;        /* CK_UNAVAILABLE_INFORMATION if unreadable */
	unsigned bits;                     /* RSA modulus bits, or the curve's size */
	uint8_t modulus[P11_MODULUS_MAX];  /* RSA, big-endian */
	size_t modulus_len;
	uint8_t exponent[P11_EXPONENT_MAX];
	size_t exponent_len;
	int curve;                         /* P11_CURVE_*: EC and Edwards keys */
	uint8_t ec_params[P11_EC_PARAMS_MAX];
	size_t ec_params_len;
	uint8_t ec_point[P11_EC_POINT_MAX]; /* bare: 04||X||Y, or 32 bytes for Ed25519 */
	size_t ec_point_len;
};

/* RSA CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_MODULUS_BITS; EC CKA_EC_PARAMS, CKA_EC_POINT.
 * Public material only: these are never sensitive, though a private key may lack them. */
static CK_RV p11_read_public(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, struct p11_key_info *ki)
{
	CK_ULONG bits = 0;
	CK_RV rv;

	if (ki->type == CKK_RSA) {
		CK_ATTRIBUTE t[] = {
			P11_ATTR(CKA_MODULUS, ki->modulus, sizeof ki->modulus),
			P11_ATTR(CKA_PUBLIC_EXPONENT, ki->exponent, sizeof ki->exponent),
			P11_ATTR(CKA_MODULUS_BITS, &bits, sizeof bits),
		};
		rv = p11_get_attrs(h, o, t, ARRAY_LEN(t));
		if (rv != CKR_OK)
			return rv;
		ki->modulus_len = p11_have(&t[0]) ? t[0].ulValueLen : 0;
		ki->exponent_len = p11_have(&t[1]) ? t[1].ulValueLen : 0;
		if (p11_have(&t[2]) && t[2].ulValueLen == sizeof bits && bits <= 8 * P11_MODULUS_MAX) {
			ki->bits = (unsigned)bits;
		} else if (ki->modulus_len > 0) {
			/* Bits of the big-endian modulus: count from its first nonzero byte. */
			size_t i = 0;
			while (i < ki->modulus_len && ki->modulus[i] == 0)
				i++;
			unsigned b = 0;
			if (i < ki->modulus_len)
				for (uint8_t top = ki->modulus[i]; top; top >>= 1)
					b++;
			ki->bits = i < ki->modulus_len ? (unsigned)(8 * (ki->modulus_len - i - 1)) + b : 0;
		}
		return CKR_OK;
	}
	CK_ATTRIBUTE t[] = {
		P11_ATTR(CKA_EC_PARAMS, ki->ec_params, sizeof ki->ec_params),
		P11_ATTR(CKA_EC_POINT, ki->ec_point, sizeof ki->ec_point),
	};
	rv = p11_get_attrs(h, o, t, ARRAY_LEN(t));
	if (rv != CKR_OK)
		return rv;
	ki->ec_params_len = p11_have(&t[0]) ? t[0].ulValueLen : 0;
	const struct p11_alg *c = p11_curve_by_der(ki->ec_params, ki->ec_params_len);
	ki->curve = c ? c->curve : P11_CURVE_NONE;
	ki->bits = c ? c->bits : 0;
	ki->ec_point_len = 0;
	if (c && p11_have(&t[1]))
		ki->ec_point_len = p11_ec_point_unwrap(ki->ec_point, t[1].ulValueLen, c);
	return CKR_OK;
}

/* Everything about one key.  A private key's public material (an EC private key has no
 * CKA_EC_POINT at all; some HSMs hide an RSA private key's modulus) comes from the public
 * key with the same CKA_ID, when there is one. */
static CK_RV p11_key_info(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, struct p11_key_info *ki)
{
	CK_BBOOL sign = 0, verify = 0;
	CK_RV rv;

	memset(ki, 0, sizeof *ki);
	ki->gen_mech = CK_UNAVAILABLE_INFORMATION;
	CK_ATTRIBUTE t[] = {
		P11_ATTR(CKA_CLASS, &ki->cls, sizeof ki->cls),
		P11_ATTR(CKA_KEY_TYPE, &ki->type, sizeof ki->type),
		P11_ATTR(CKA_ID, ki->id, sizeof ki->id),
		P11_ATTR(CKA_LABEL, ki->label, P11_LABEL_MAX),
		P11_ATTR(CKA_SIGN, &sign, sizeof sign),
		P11_ATTR(CKA_VERIFY, &verify, sizeof verify),
		/* Not supported by some HSMs (Nitrokey NetHSM): optional. */
		P11_ATTR(CKA_KEY_GEN_MECHANISM, &ki->gen_mech, sizeof ki->gen_mech),
	};
	rv = p11_get_attrs(h, o, t, ARRAY_LEN(t));
	if (rv != CKR_OK)
		return rv;
	if (!p11_have(&t[0]) || t[0].ulValueLen != sizeof ki->cls ||
	    !p11_have(&t[1]) || t[1].ulValueLen != sizeof ki->type)
		return P11_E_BAD_VALUE;
	if (ki->cls != CKO_PUBLIC_KEY && ki->cls != CKO_PRIVATE_KEY)
		return P11_E_UNSUPPORTED;
	ki->id_len = p11_have(&t[2]) ? t[2].ulValueLen : 0;
	ki->label_len = p11_have(&t[3]) ? t[3].ulValueLen : 0;
	ki->label[ki->label_len] = '\0';
	ki->sign = p11_have(&t[4]) && t[4].ulValueLen == 1 ? sign != 0 : -1;
	ki->verify = p11_have(&t[5]) && t[5].ulValueLen == 1 ? verify != 0 : -1;
	if (!p11_have(&t[6]) || t[6].ulValueLen != sizeof ki->gen_mech)
		ki->gen_mech = CK_UNAVAILABLE_INFORMATION;
	if (ki->type != CKK_RSA && ki->type != CKK_EC && ki->type != CKK_EC_EDWARDS)
		return CKR_OK;   /* the caller decides what to do with a key type we cannot use */

	rv = p11_read_public(h, o, ki);
	if (rv != CKR_OK)
		return rv;
	int complete = ki->type == CKK_RSA ? ki->modulus_len > 0 && ki->exponent_len > 0
	                                   : ki->ec_point_len > 0;
	if (!complete && ki->cls == CKO_PRIVATE_KEY && ki->id_len > 0) {
		CK_OBJECT_HANDLE pub;
		if (p11_find_key(h, ki->id, ki->id_len, CKO_PUBLIC_KEY, &pub) == CKR_OK) {
			struct p11_key_info tmp = *ki;
			rv = p11_read_public(h, pub, &tmp);
			if (rv == CKR_OK && tmp.type == ki->type)
				*ki = tmp;
		}
	}
	return CKR_OK;
}

/* ---- key generation ---------------------------------------------------------------------- */

/* What to generate.  type CKK_RSA uses bits; CKK_EC and CKK_EC_EDWARDS use curve. */
struct p11_keygen {
	CK_KEY_TYPE type;
	unsigned bits;                  /* RSA: P11_RSA_MIN_BITS..P11_RSA_MAX_BITS */
	int curve;                      /* P11_CURVE_*: P-256/384/521 for CKK_EC, Ed25519 */
	const char *pub_label, *priv_label;      /* KMIP Names; NULL: no CKA_LABEL */
	size_t pub_label_len, priv_label_len;
	int sign, verify;               /* usage mask: CKA_SIGN (private), CKA_VERIFY (public) */
};

/* A fresh CKA_ID: 20 random bytes from the token (as the original), not used by any object
 * yet.  A collision at 160 bits means a broken RNG; three tries, then fail. */
static CK_RV p11_new_id(CK_SESSION_HANDLE h, uint8_t id[P11_ID_LEN])
{
	for (int tries = 0; tries < 3; tries++) {
		CK_ATTRIBUTE t[] = { P11_ATTR(CKA_ID, id, P11_ID_LEN) };
		CK_OBJECT_HANDLE o;
		CK_ULONG count = 0;
		CK_RV rv = p11_random(h, id, P11_ID_LEN);
		if (rv != CKR_OK)
			return rv;
		rv = p11_find(h, t, 1, &o, 1, &count);
		if (rv != CKR_OK)
			return rv;
		if (count == 0)
			return CKR_OK;
	}
	log_error("C_GenerateRandom gave a used CKA_ID three times");
	return CKR_FUNCTION_FAILED;
}

/*
 * C_GenerateKeyPair.  The templates ask only for what a signing key pair needs; everything
 * else is the token's default, because tokens refuse or reinterpret the rest (the halves
 * share CKA_ID):
 *   mechanism  CKM_RSA_PKCS_KEY_PAIR_GEN (no parameter), public CKA_MODULUS_BITS and
 *              CKA_PUBLIC_EXPONENT 65537 (bytes 01 00 01: YubiHSM 2 takes no other);
 *              CKM_EC_KEY_PAIR_GEN, public CKA_EC_PARAMS = the curve's DER OID;
 *              CKM_EC_EDWARDS_KEY_PAIR_GEN, public CKA_EC_PARAMS = OID 1.3.101.112.
 *   public     CKA_TOKEN true, CKA_VERIFY (usage), CKA_ID, CKA_LABEL (a Name was given).
 *   private    CKA_TOKEN true, CKA_PRIVATE true, CKA_SIGN (usage), CKA_ID, CKA_LABEL,
 *              CKA_SENSITIVE true, CKA_EXTRACTABLE false: the private key never leaves the
 *              HSM (the original bridge left both to the token's default).  Every module
 *              checked takes them: YubiHSM 2 (yubihsm-shell parse_*_generate_template
 *              requires SENSITIVE true and reads EXTRACTABLE as its exportable-under-wrap
 *              capability), tpm2-pkcs11 (handle_sensitive, handle_extractable), SoftHSM2.
 * Left out, each for a module that motivated it:
 *   CKA_ENCRYPT / CKA_DECRYPT false (the original bridge set them): tpm2-pkcs11 keeps one
 *     TPM object per pair whose attribute bits tie VERIFY to DECRYPT and SIGN to ENCRYPT
 *     (tpm.c tpm_handlers, attr_conditional_add); SIGN true with ENCRYPT false is
 *     "attr mismatch", CKR_GENERAL_ERROR, for every pair.  On SoftHSM2 the halves can then
 *     also encrypt / decrypt, which no KMIP operation of the daemon offers.
 *   CKA_WRAP / CKA_UNWRAP false: YubiHSM 2 modules before 2.4.0 refused UNWRAP false
 *     (CKR_DEVICE_ERROR); the current one turns UNWRAP true into a wrap key; WRAP is
 *     ENCRYPT's kin on the TPM.
 *   CKA_CLASS, CKA_KEY_TYPE: implied by the mechanism; some modules check them against it.
 *   CKA_MODIFIABLE, CKA_DERIVE, CKA_ALWAYS_AUTHENTICATE: not needed; YubiHSM 2 answers an
 *     attribute outside its list with CKR_ATTRIBUTE_TYPE_INVALID.
 * When a module refuses the template, p11_template_hint() names what may be the cause.
 */
static CK_RV p11_generate(CK_SESSION_HANDLE h, const struct p11_slot *s,
                          const struct p11_keygen *g, uint8_t id[P11_ID_LEN],
                          CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BBOOL sign = g->sign ? CK_TRUE : CK_FALSE, verify = g->verify ? CK_TRUE : CK_FALSE;
	CK_ULONG bits = g->bits;
	CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_ATTRIBUTE pt[6], kt[7];
	CK_ULONG np = 0, nk = 0;
	const struct p11_alg *c = p11_alg_of(g->type, g->curve);
	CK_RV rv;

	if (!c)
		return P11_E_UNSUPPORTED;
	if (g->type == CKK_RSA && (g->bits < P11_RSA_MIN_BITS || g->bits > P11_RSA_MAX_BITS))
		return P11_E_BAD_INPUT;
	mech.mechanism = p11_mech_type[c->gen];
	/* An empty list means C_GetMechanismList failed: let the token decide then. */
	if (s->mechs != 0 && !(s->mechs & 1u << c->gen))
		return CKR_MECHANISM_INVALID;
	if ((g->pub_label && g->pub_label_len > P11_LABEL_MAX) ||
	    (g->priv_label && g->priv_label_len > P11_LABEL_MAX))
		return P11_E_BAD_INPUT;

	rv = p11_new_id(h, id);
	if (rv != CKR_OK)
		return rv;

	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_TOKEN, &yes, 1);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_VERIFY, &verify, 1);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_ID, id, P11_ID_LEN);
	if (g->pub_label)
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_LABEL, g->pub_label, g->pub_label_len);
	if (g->type == CKK_RSA) {
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_MODULUS_BITS, &bits, sizeof bits);
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PUBLIC_EXPONENT, exponent, sizeof exponent);
	} else {
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EC_PARAMS, c->der, c->der_len);
	}

	kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_TOKEN, &yes, 1);
	kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PRIVATE, &yes, 1);
	kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_SIGN, &sign, 1);
	kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_ID, id, P11_ID_LEN);
	if (g->priv_label)
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_LABEL, g->priv_label, g->priv_label_len);
	kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_SENSITIVE, &yes, 1);
	kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EXTRACTABLE, &no, 1);

	*pub = *priv = CK_INVALID_HANDLE;
	return P11_F->C_GenerateKeyPair(h, &mech, pt, np, kt, nk, pub, priv);
}

/* ---- key import -------------------------------------------------------------------------- */

/* Key material given in the clear (Register), as PKCS#11 attributes want it: big-endian
 * magnitudes without leading zeros, the EC point bare (04||X||Y, or 32 bytes for Ed25519).
 * The caller fills it, and wipes it after p11_import. */
struct p11_import {
	CK_KEY_TYPE type;               /* CKK_RSA, CKK_EC, CKK_EC_EDWARDS */
	int curve;                      /* P11_CURVE_*: EC and Edwards keys */
	int has_private;                /* 0: a public key alone */
	uint8_t n[P11_MODULUS_MAX], e[P11_EXPONENT_MAX], d[P11_MODULUS_MAX];
	uint8_t p[P11_MODULUS_MAX / 2], q[P11_MODULUS_MAX / 2];
	uint8_t dp[P11_MODULUS_MAX / 2], dq[P11_MODULUS_MAX / 2], qinv[P11_MODULUS_MAX / 2];
	size_t n_len, e_len, d_len, p_len, q_len, dp_len, dq_len, qinv_len;
	uint8_t point[P11_EC_POINT_MAX];
	size_t point_len;
	uint8_t scalar[66];             /* EC private value, the curve's field size */
	size_t scalar_len;
	const char *label;              /* KMIP Name; NULL: no CKA_LABEL */
	size_t label_len;
	int sign, verify;               /* CKA_SIGN (private), CKA_VERIFY (public) */
};

/* Today as a CK_DATE ("YYYYMMDD", UTC): CKA_START_DATE of an imported key, which Get
 * Attributes answers as its Initial Date. */
static void p11_today(CK_DATE *dt)
{
	char s[9];
	time_t now = time(NULL);
	struct tm tm;
	if (!gmtime_r(&now, &tm) || strftime(s, sizeof s, "%Y%m%d", &tm) != 8) {
		memset(dt, '0', sizeof *dt);
		return;
	}
	memcpy(dt->year, s, 4);
	memcpy(dt->month, s + 4, 2);
	memcpy(dt->day, s + 6, 2);
}

/*
 * C_CreateObject of a key given in the clear: the private key (when there is one) and its
 * public key, sharing a fresh CKA_ID as p11_generate's halves do, so that the UIDs and
 * everything else work on them as on generated keys.  The templates are p11_generate's
 * with the key material added (PKCS#11 2.40 sections 2.1.2-2.1.4, 2.3.3-2.3.4):
 *   private    CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_SIGN,
 *              CKA_EXTRACTABLE false, CKA_DECRYPT false (not Edwards), CKA_ID, CKA_LABEL,
 *              CKA_START_DATE; RSA CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT
 *              and, when known, CKA_PRIME_1/2, CKA_EXPONENT_1/2, CKA_COEFFICIENT; EC and
 *              Edwards CKA_EC_PARAMS (the curve's OID), CKA_VALUE (the private value).
 *   public     CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN, CKA_VERIFY, CKA_ENCRYPT / CKA_WRAP false
 *              (not Edwards), CKA_ID, CKA_LABEL, CKA_START_DATE; RSA CKA_MODULUS,
 *              CKA_PUBLIC_EXPONENT; EC CKA_EC_PARAMS, CKA_EC_POINT (DER OCTET STRING).
 * The private key is made first; if the public key then fails, the private one is
 * destroyed again, so a failure leaves nothing behind; *failed says which half the token
 * refused.  *priv is CK_INVALID_HANDLE for a public key alone.
 */
static CK_RV p11_import(CK_SESSION_HANDLE h, const struct p11_import *im, uint8_t id[P11_ID_LEN],
                        CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv, CK_OBJECT_CLASS *failed)
{
	CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE type = im->type;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BBOOL sign = im->sign ? CK_TRUE : CK_FALSE, verify = im->verify ? CK_TRUE : CK_FALSE;
	CK_DATE today;
	CK_ATTRIBUTE pt[16], kt[24];
	CK_ULONG np = 0, nk = 0;
	uint8_t point[P11_EC_POINT_MAX + 3];
	const struct p11_alg *c = NULL;
	CK_RV rv;

	*pub = *priv = CK_INVALID_HANDLE;
	if (!P11_F->C_CreateObject)
		return CKR_FUNCTION_NOT_SUPPORTED;
	if (im->label && im->label_len > P11_LABEL_MAX)
		return P11_E_BAD_INPUT;
	if (type == CKK_RSA) {
		if (!im->n_len || !im->e_len || (im->has_private && !im->d_len))
			return P11_E_BAD_INPUT;
	} else if (type == CKK_EC || type == CKK_EC_EDWARDS) {
		c = p11_alg_of(type, im->curve);
		if (!c ||
		    im->point_len == 0 || im->point_len > P11_EC_POINT_MAX ||
		    (im->has_private && !im->scalar_len))
			return P11_E_BAD_INPUT;
		/* CKA_EC_POINT: DER OCTET STRING around the point (a short or one-byte length). */
		size_t k = 0;
		point[k++] = 0x04;
		if (im->point_len >= 0x80)
			point[k++] = 0x81;
		point[k++] = (uint8_t)im->point_len;
		memcpy(point + k, im->point, im->point_len);
		k += im->point_len;
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EC_POINT, point, k);
	} else {
		return P11_E_UNSUPPORTED;
	}
	p11_today(&today);
	rv = p11_new_id(h, id);
	if (rv != CKR_OK)
		return rv;

	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_CLASS, &pub_cls, sizeof pub_cls);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_KEY_TYPE, &type, sizeof type);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_TOKEN, &yes, 1);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_VERIFY, &verify, 1);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_ID, id, P11_ID_LEN);
	pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_START_DATE, &today, sizeof today);
	if (im->label)
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_LABEL, im->label, im->label_len);
	if (type == CKK_RSA) {
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_MODULUS, im->n, im->n_len);
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PUBLIC_EXPONENT, im->e, im->e_len);
	} else {
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EC_PARAMS, c->der, c->der_len);
	}
	if (type != CKK_EC_EDWARDS) {
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_ENCRYPT, &no, 1);
		pt[np++] = (CK_ATTRIBUTE)P11_ATTR(CKA_WRAP, &no, 1);
	}

	if (im->has_private) {
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_CLASS, &priv_cls, sizeof priv_cls);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_KEY_TYPE, &type, sizeof type);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_TOKEN, &yes, 1);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PRIVATE, &yes, 1);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_SENSITIVE, &yes, 1);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EXTRACTABLE, &no, 1);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_SIGN, &sign, 1);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_ID, id, P11_ID_LEN);
		kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_START_DATE, &today, sizeof today);
		if (im->label)
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_LABEL, im->label, im->label_len);
		if (type != CKK_EC_EDWARDS)
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_DECRYPT, &no, 1);
		if (type == CKK_RSA) {
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_MODULUS, im->n, im->n_len);
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PUBLIC_EXPONENT, im->e, im->e_len);
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PRIVATE_EXPONENT, im->d, im->d_len);
			if (im->p_len && im->q_len && im->dp_len && im->dq_len && im->qinv_len) {
				kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PRIME_1, im->p, im->p_len);
				kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_PRIME_2, im->q, im->q_len);
				kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EXPONENT_1, im->dp, im->dp_len);
				kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EXPONENT_2, im->dq, im->dq_len);
				kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_COEFFICIENT, im->qinv, im->qinv_len);
			}
		} else {
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_EC_PARAMS, c->der, c->der_len);
			kt[nk++] = (CK_ATTRIBUTE)P11_ATTR(CKA_VALUE, im->scalar, im->scalar_len);
		}
		*failed = CKO_PRIVATE_KEY;
		rv = P11_F->C_CreateObject(h, kt, nk, priv);
		if (rv != CKR_OK) {
			*priv = CK_INVALID_HANDLE;
			return rv;
		}
	}
	*failed = CKO_PUBLIC_KEY;
	rv = P11_F->C_CreateObject(h, pt, np, pub);
	if (rv != CKR_OK) {
		*pub = CK_INVALID_HANDLE;
		if (*priv != CK_INVALID_HANDLE)
			P11_F->C_DestroyObject(h, *priv);
		*priv = CK_INVALID_HANDLE;
	}
	return rv;
}

/*
 * What a refused key template may have been refused for, for the Result Message (NULL: the
 * code says nothing about the template).  A module names no attribute in its answer, and
 * probing by retrying would make keys (slowly: seconds on a YubiHSM 2 or a TPM), so the
 * hint names what the daemon sent that the code can concern:
 *   CKR_ATTRIBUTE_TYPE_INVALID   an attribute the module does not know: the optional ones
 *                                (CKA_TOKEN, CKA_SIGN, CKA_VERIFY, CKA_ID and the key's
 *                                parameters are what any module must know)
 *   CKR_ATTRIBUTE_VALUE_INVALID  the key's parameters (YubiHSM 2: RSA 2048/3072/4096 only)
 *   CKR_TEMPLATE_INCONSISTENT,   the boolean attributes as sent (tpm2-pkcs11 answered its
 *   CKR_GENERAL_ERROR            SIGN / ENCRYPT conflict with CKR_GENERAL_ERROR)
 *   CKR_TEMPLATE_INCOMPLETE      the module wants an attribute the daemon does not send
 */
static const char *p11_template_hint(CK_RV rv, const struct p11_keygen *g, char *buf, size_t cap)
{
	const struct p11_alg *c = p11_alg_of(g->type, g->curve);

	switch (rv) {
	case CKR_ATTRIBUTE_TYPE_INVALID:
		snprintf(buf, cap, "an attribute the token does not know; optional ones sent: "
		         "CKA_SENSITIVE CKA_EXTRACTABLE%s", g->priv_label || g->pub_label ?
		         " CKA_LABEL" : "");
		break;
	case CKR_ATTRIBUTE_VALUE_INVALID:
		if (g->type == CKK_RSA)
			snprintf(buf, cap, "CKA_MODULUS_BITS %u or CKA_PUBLIC_EXPONENT 65537 refused",
			         g->bits);
		else
			snprintf(buf, cap, "CKA_EC_PARAMS of %s refused", c ? c->name : "the curve");
		break;
	case CKR_TEMPLATE_INCONSISTENT:
	case CKR_GENERAL_ERROR:
		snprintf(buf, cap, "template sent: public CKA_VERIFY %d, private CKA_SIGN %d "
		         "CKA_PRIVATE 1 CKA_SENSITIVE 1 CKA_EXTRACTABLE 0", !!g->verify, !!g->sign);
		break;
	case CKR_TEMPLATE_INCOMPLETE:
		snprintf(buf, cap, "the token wants an attribute the daemon does not send");
		break;
	default:
		return NULL;
	}
	return buf;
}

/*
 * The CKA_ID a token kept for a pair just generated, which names it from now on.  Tokens
 * keep the one asked for, except YubiHSM 2 modules before 2.4.0, where CKA_ID is the 16-bit
 * object ID: they kept 2 bytes of it.  id holds the one asked for, len its length; both
 * change only when the private half reads back another one, no longer than P11_ID_LEN,
 * which the public half must share.
 */
static void p11_kept_id(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE pub, CK_OBJECT_HANDLE priv,
                        uint8_t id[P11_ID_LEN], size_t *len)
{
	uint8_t a[P11_ID_MAX], b[P11_ID_MAX];
	CK_ATTRIBUTE ta = P11_ATTR(CKA_ID, a, sizeof a), tb = P11_ATTR(CKA_ID, b, sizeof b);

	if (P11_F->C_GetAttributeValue(h, priv, &ta, 1) != CKR_OK || ta.ulValueLen == 0 ||
	    ta.ulValueLen > P11_ID_LEN || (ta.ulValueLen == *len && !memcmp(a, id, *len)))
		return;
	if (P11_F->C_GetAttributeValue(h, pub, &tb, 1) != CKR_OK || tb.ulValueLen != ta.ulValueLen ||
	    memcmp(a, b, ta.ulValueLen) != 0)
		log_warn("the token gave the halves of a new pair different CKA_IDs");
	log_warn("the token kept a %lu-byte CKA_ID instead of the %zu bytes asked for; the "
	         "key pair is named by the one kept", (unsigned long)ta.ulValueLen, *len);
	memcpy(id, a, ta.ulValueLen);
	*len = ta.ulValueLen;
}

/* ---- signing ----------------------------------------------------------------------------- */

/*
 * PKCS#1 v1.5 (RFC 8017, 9.2 note 1): the signature covers DER DigestInfo ::= SEQUENCE {
 * AlgorithmIdentifier { hash OID, NULL }, OCTET STRING hash }; these are its bytes before
 * the hash value, for SHA-256 / 384 / 512.
 */
static const uint8_t p11_di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48,
	0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
static const uint8_t p11_di_sha384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48,
	0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 };
static const uint8_t p11_di_sha512[] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48,
	0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 };
#define P11_DI_PREFIX_LEN 19

static const struct p11_hash {
	int hash;
	psa_algorithm_t alg;
	size_t len;
	const uint8_t *digest_info;
	uint32_t rsa_bit, ec_bit;                   /* the combined mechanisms */
	CK_MECHANISM_TYPE rsa_mech, ec_mech;
} p11_hashes[] = {
	{ P11_HASH_SHA256, PSA_ALG_SHA_256, 32, p11_di_sha256, P11_MBIT(SHA256_RSA_PKCS),
	  P11_MBIT(ECDSA_SHA256), CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256 },
	{ P11_HASH_SHA384, PSA_ALG_SHA_384, 48, p11_di_sha384, P11_MBIT(SHA384_RSA_PKCS),
	  P11_MBIT(ECDSA_SHA384), CKM_SHA384_RSA_PKCS, CKM_ECDSA_SHA384 },
	{ P11_HASH_SHA512, PSA_ALG_SHA_512, 64, p11_di_sha512, P11_MBIT(SHA512_RSA_PKCS),
	  P11_MBIT(ECDSA_SHA512), CKM_SHA512_RSA_PKCS, CKM_ECDSA_SHA512 },
};

/*
 * CKM_ECDSA gives r || s, each as long as the group order; DNSSEC and most others want
 * ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } in DER, where an INTEGER is minimal:
 * no leading 0x00 bytes except one in front of a byte >= 0x80 (it is positive).
 * Returns the DER length, or 0 if it does not fit or the input is not two equal halves.
 */
static size_t p11_ecdsa_der(const uint8_t *rs, size_t n, uint8_t *out, size_t cap)
{
	const uint8_t *v[2];
	size_t vl[2], il[2];

	if (n == 0 || n % 2 != 0 || n > 2 * 66)
		return 0;
	for (int k = 0; k < 2; k++) {
		v[k] = rs + (size_t)k * (n / 2);
		vl[k] = n / 2;
		while (vl[k] > 1 && v[k][0] == 0) {
			v[k]++;
			vl[k]--;
		}
		il[k] = vl[k] + (v[k][0] >= 0x80);       /* content bytes of the INTEGER */
	}
	size_t body = 2 + il[0] + 2 + il[1];         /* each INTEGER is at most 67 < 128 bytes */
	size_t hdr = body < 128 ? 2 : 3;
	if (hdr + body > cap)
		return 0;
	size_t o = 0;
	out[o++] = 0x30;
	if (hdr == 3)
		out[o++] = 0x81;
	out[o++] = (uint8_t)body;
	for (int k = 0; k < 2; k++) {
		out[o++] = 0x02;
		out[o++] = (uint8_t)il[k];
		if (il[k] > vl[k])
			out[o++] = 0x00;
		memcpy(out + o, v[k], vl[k]);
		o += vl[k];
	}
	return o;
}

/*
 * End a signing operation that a module left active.  Cryptoki 3.0 (5.11, C_SignInit):
 * C_SignInit with a NULL mechanism terminates an active operation.  A 2.40 module has no
 * such call; only closing the session ends it, which the caller does when C_SignInit
 * answers CKR_OPERATION_ACTIVE.  1: the operation is over (or was not active).
 */
static int p11_sign_end(CK_SESSION_HANDLE h)
{
	if (!p11.v3)
		return 0;
	CK_RV rv = P11_F->C_SignInit(h, NULL, CK_INVALID_HANDLE);
	return rv == CKR_OK || rv == CKR_OPERATION_NOT_INITIALIZED;
}

/*
 * Sign data with key.  RSA: PKCS#1 v1.5 with CKM_SHA*_RSA_PKCS when the token has it, else
 * the hash in software and CKM_RSA_PKCS over the DigestInfo.  EC: CKM_ECDSA_SHA* when the
 * token has it, else the hash in software and CKM_ECDSA; the result is DER-encoded.  Edwards:
 * CKM_EDDSA over the raw data (Ed25519 hashes internally), 64 bytes as they are.
 * The signature goes to a buffer big enough for any key we accept, so C_Sign never ends in
 * CKR_BUFFER_TOO_SMALL (which would leave the operation active on the session).  *call
 * names the call that failed, C_SignInit or C_Sign (call may be NULL).
 */
static CK_RV p11_sign(CK_SESSION_HANDLE h, const struct p11_slot *s, const char **call,
                      CK_OBJECT_HANDLE key, CK_KEY_TYPE type, int hash, const uint8_t *data,
                      size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
	const char *dummy;
	uint8_t in[P11_DI_PREFIX_LEN + 64];
	uint8_t sig[P11_SIG_MAX];
	CK_ULONG siglen = sizeof sig;
	CK_MECHANISM mech = { 0, NULL, 0 };
	const uint8_t *msg = data;
	size_t msglen = len;
	const struct p11_hash *ph = NULL;
	CK_RV rv;

	*outlen = 0;
	if (!call)
		call = &dummy;
	*call = "Sign";                 /* a refusal before the module is asked */
	if (len > (size_t)0xFFFFFFFFu)
		return P11_E_BAD_INPUT;
	for (size_t i = 0; i < ARRAY_LEN(p11_hashes); i++)
		if (p11_hashes[i].hash == hash)
			ph = &p11_hashes[i];

	if (type == CKK_RSA || type == CKK_EC) {
		if (!ph)
			return P11_E_UNSUPPORTED;
		uint32_t bit = type == CKK_RSA ? ph->rsa_bit : ph->ec_bit;
		if (s->mechs & bit) {
			mech.mechanism = type == CKK_RSA ? ph->rsa_mech : ph->ec_mech;
		} else {
			size_t off = type == CKK_RSA ? P11_DI_PREFIX_LEN : 0, hl = 0;
			if (type == CKK_RSA)
				memcpy(in, ph->digest_info, P11_DI_PREFIX_LEN);
			if (psa_hash_compute(ph->alg, data, len, in + off, sizeof in - off, &hl) !=
			    PSA_SUCCESS || hl != ph->len)
				return CKR_GENERAL_ERROR;
			mech.mechanism = type == CKK_RSA ? CKM_RSA_PKCS : CKM_ECDSA;
			msg = in;
			msglen = off + hl;
		}
	} else if (type == CKK_EC_EDWARDS) {
		if (hash != P11_HASH_NONE)
			return P11_E_UNSUPPORTED;
		mech.mechanism = CKM_EDDSA;
	} else {
		return P11_E_UNSUPPORTED;
	}

	*call = "C_SignInit";
	rv = P11_F->C_SignInit(h, &mech, key);
	if (rv == CKR_OPERATION_ACTIVE && p11_sign_end(h))
		rv = P11_F->C_SignInit(h, &mech, key);
	if (rv != CKR_OK)
		return rv;      /* CKR_OPERATION_ACTIVE still: the caller closes the session */
	*call = "C_Sign";
	rv = P11_F->C_Sign(h, (CK_BYTE_PTR)msg, (CK_ULONG)msglen, sig, &siglen);
	if (rv == CKR_BUFFER_TOO_SMALL) {
		/* A signature over 8192 bits: end the operation with a call that succeeds. */
		uint8_t *big = siglen <= 65536 ? malloc(siglen) : NULL;
		if (big)
			P11_F->C_Sign(h, (CK_BYTE_PTR)msg, (CK_ULONG)msglen, big, &siglen);
		free(big);
		return CKR_BUFFER_TOO_SMALL;
	}
	if (rv != CKR_OK) {
		/* C_Sign's failure ends the operation (PKCS#11 5.2), but some modules leave it
		 * active, and every later C_SignInit on the session would fail. */
		p11_sign_end(h);
		return rv;
	}
	if (siglen > sizeof sig)
		return P11_E_BAD_VALUE;

	if (type == CKK_EC) {
		*outlen = p11_ecdsa_der(sig, siglen, out, cap);
		return *outlen ? CKR_OK : (siglen % 2 || siglen > 132 ? P11_E_BAD_VALUE
		                                                      : CKR_BUFFER_TOO_SMALL);
	}
	if (siglen > cap)
		return CKR_BUFFER_TOO_SMALL;
	memcpy(out, sig, siglen);
	*outlen = siglen;
	return CKR_OK;
}

/* ---- call counters ------------------------------------------------------- */

/*
 * How often the daemon calls the module and how long the module takes, for the counters
 * that SIGUSR1 logs: once the module is loaded, p11_count_calls() puts a copy of its
 * function list in front of it whose entries count, time and forward each call.  Nothing
 * else changes: every call site still goes through P11_F.
 *
 * X(function, parameters, arguments): the functions the daemon calls while serving.
 */
#define P11_COUNTED(X) \
	X(GetInfo, (CK_INFO_PTR a), (a)) \
	X(GetSlotList, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c)) \
	X(GetTokenInfo, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b)) \
	X(GetMechanismList, (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, CK_ULONG_PTR c), (a, b, c)) \
	X(OpenSession, (CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d, \
			CK_SESSION_HANDLE_PTR e), (a, b, c, d, e)) \
	X(CloseSession, (CK_SESSION_HANDLE a), (a)) \
	X(GetSessionInfo, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b)) \
	X(Login, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d), \
		(a, b, c, d)) \
	X(Logout, (CK_SESSION_HANDLE a), (a)) \
	X(DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b)) \
	X(GetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, \
			      CK_ULONG d), (a, b, c, d)) \
	X(SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, \
			      CK_ULONG d), (a, b, c, d)) \
	X(FindObjectsInit, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c)) \
	X(FindObjects, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c, \
			CK_ULONG_PTR d), (a, b, c, d)) \
	X(FindObjectsFinal, (CK_SESSION_HANDLE a), (a)) \
	X(SignInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c)) \
	X(Sign, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, \
		 CK_ULONG_PTR e), (a, b, c, d, e)) \
	X(GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, \
			    CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f, CK_OBJECT_HANDLE_PTR g, \
			    CK_OBJECT_HANDLE_PTR h), (a, b, c, d, e, f, g, h)) \
	X(GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))

static struct {
	uint64_t calls, ns;             /* stat_add / stat_get */
} p11_stats;

static CK_FUNCTION_LIST *p11_counted;   /* the module's own list, which the copy calls */
static CK_FUNCTION_LIST p11_counting;   /* the copy: P11_F once p11_count_calls() ran */

static CK_RV p11_count_end(uint64_t t0, CK_RV rv)
{
	stat_add(&p11_stats.ns, mono_ns() - t0);
	stat_add(&p11_stats.calls, 1);
	return rv;
}

#define P11_COUNT_FN(name, params, args) \
static CK_RV p11_count_##name params \
{ \
	uint64_t t0 = mono_ns(); \
	return p11_count_end(t0, p11_counted->C_##name args); \
}
P11_COUNTED(P11_COUNT_FN)
#undef P11_COUNT_FN

/* After p11_load, before any event loop or slow-pool thread runs. */
static void p11_count_calls(void)
{
	if (!P11_F || P11_F == &p11_counting)
		return;
	p11_counted = P11_F;
	p11_counting = *P11_F;
#define P11_COUNT_SET(name, params, args) p11_counting.C_##name = p11_count_##name;
	P11_COUNTED(P11_COUNT_SET)
#undef P11_COUNT_SET
	p11.fl = &p11_counting;
}

/* ==== 7. Operations ======================================================= */

/*
 * One request message in, one response message out: op_handle() decodes, authenticates,
 * runs each batch item through the operation table and encodes the answer.  It runs on a
 * worker thread (or inline with workers = 0) and is the only caller of section 6 on the
 * request path.  It keeps nothing between requests but the thread's PKCS#11 sessions.
 *
 * Key UIDs are the original bridge's: upper-case hex of CKA_ID, then "_pub" or "_priv".
 * A bare hex CKA_ID reaches keys that other tools created; the operation says which half
 * it means (Get: public, Sign: private).
 */

#define OP_UID_MAX (2 * P11_ID_MAX + 6)

struct wrk_pool;

/* What every thread shares: read-only after start-up. */
struct op_env {
	char module[160];       /* the module's description, for Query */
};

/* One PKCS#11 session per slot, owned by one thread. */
struct op_sess {
	const struct p11_slot *slot;
	CK_SESSION_HANDLE h;
};

/*
 * Each PKCS#11 call costs a module like SoftHSM2 a file read, so a thread remembers what
 * the requests it served resolved to: usernames to slots, and UIDs to object handles with
 * their key type.  Handles of token objects are valid in every session of the process.
 * A cached handle is used as it is for OP_KEY_RECHECK_MS, then checked again with one
 * C_GetAttributeValue (class and CKA_ID), so that a key deleted by another program is
 * noticed even by a module that reuses handles; a Destroy made here empties every
 * thread's cache (op_generation), and a lost session empties this thread's.  Before a
 * call that changes or removes an object (Destroy, Revoke, Modify Attribute), the handle
 * is checked again whatever its age (op_confirm).  A module re-initialisation empties
 * every thread's caches and forgets its sessions (op_sync, by p11_epoch).
 */
#define OP_USER_CACHE     4
#define OP_USER_NAME_MAX  64
#define OP_KEY_CACHE      32
#define OP_KEY_RECHECK_MS 1000

/* The "call" of a lookup that found nothing on a token that then failed C_GetTokenInfo. */
static const char OP_EMPTY_FIND[] = "C_GetTokenInfo after C_FindObjects found nothing";

struct op_user {
	struct p11_slot *slot;
	size_t len;
	char name[OP_USER_NAME_MAX];
};

struct op_cached_key {
	const struct p11_slot *slot;    /* NULL: free */
	CK_OBJECT_CLASS cls;
	CK_OBJECT_HANDLE obj;
	CK_KEY_TYPE type;
	int curve;                      /* P11_CURVE_* of an EC or Edwards key */
	int sign;                       /* a private key's CKA_SIGN: 1, 0, or -1 unknown */
	uint64_t checked_ms;
	size_t id_len;
	uint8_t id[P11_ID_MAX];
};

/* Bumped by every Destroy and Revoke; read and written atomically. */
static unsigned op_generation;

/*
 * What one request message was, for its log line (section 10 writes it, knowing the peer,
 * the connection and the time taken): the username, and per batch item the operation,
 * the UID it concerned and its result.  Filled by op_handle() into the record its caller
 * points t->rec at; no secret goes into it.
 */
#define OP_REC_ITEMS 8          /* items named in the log line; more are counted */
#define OP_REC_UIDS  384        /* the UIDs of those items, logged form, comma-separated */

struct op_rec {
	unsigned long conn;             /* set by the caller, kept: the connection number */
	int has_user;
	size_t user_len;
	uint8_t user[OP_USER_NAME_MAX];
	int parsed;                     /* a well-formed request message */
	uint32_t msg_rr;                /* the whole message failed with this reason, or 0 */
	uint32_t auth_rr;               /* the login failed with this reason, or 0 */
	char auth_msg[160];
	int n;                          /* batch items answered */
	uint32_t op[OP_REC_ITEMS], rr[OP_REC_ITEMS];
	char uids[OP_REC_UIDS];
};

/* Since start: batch items per operation (the last slot: an operation KMIP 1.2 does not
 * name), failures per Result Reason (the last: any other reason). */
static struct {
	uint64_t items[ARRAY_LEN(kmip_op_names) + 1];
	uint64_t fails[ARRAY_LEN(kmip_rr_names) + 1];
} op_stats;

static size_t op_stat_index(const struct kmip_name *t, size_t n, uint32_t v)
{
	size_t i = 0;
	while (i < n && t[i].val != v)
		i++;
	return i;
}

static void op_stat_fail(uint32_t rr)
{
	stat_add(&op_stats.fails[op_stat_index(kmip_rr_names, ARRAY_LEN(kmip_rr_names), rr)], 1);
}

struct op_thread {
	struct op_env *env;
	struct wrk_pool *pool;
	int id, nsess, nusers, next_key;
	unsigned generation;            /* op_generation when the key cache was last valid */
	struct op_rec *rec;             /* where op_handle() describes the request it serves */
	struct op_rec own_rec;          /* ... unless the caller points it elsewhere */
	unsigned epoch;                 /* p11_epoch() when the sessions and caches were made */
	int gated;                      /* this thread holds the module's gate (op_enter) */
	int defer;                      /* an event loop's: OPX_SLOW requests are not run here */
	struct op_sess sess[P11_MAX_SLOTS];
	struct op_user users[OP_USER_CACHE];
	struct op_cached_key keys[OP_KEY_CACHE];
	struct ttlv items[TTLV_MAX_ITEMS];
};

/* One batch item being answered. */
struct op_req {
	struct op_thread *t;
	const struct ttlv_doc *d;
	const struct kmip_request *r;
	struct ttlv_enc *e;
	struct p11_slot *slot;          /* set once the request is authenticated */
	CK_SESSION_HANDLE h;
	CK_RV rv;                       /* the last PKCS#11 failure, for the retry on a lost session */
	const char *call;               /* the call that failed with rv */
	int trouble;                    /* P11_T_*: what rv says of the module, and what op_recover does */
	const char *msg;                /* Result Message of a failure */
	char msgbuf[160];
	char *placeholder;              /* ID Placeholder: last created UID in this batch */
	int cached;                     /* a key handle came from the thread's cache */
};

static struct op_thread *op_thread_new(struct op_env *env, struct wrk_pool *pool, int id)
{
	struct op_thread *t = calloc(1, sizeof *t);
	if (t) {
		t->env = env;
		t->pool = pool;
		t->id = id;
		t->rec = &t->own_rec;
		t->epoch = p11_epoch();
	}
	return t;
}

/* Sessions from before a re-initialisation are not closed: their handles may now be
 * another thread's. */
static void op_thread_free(struct op_thread *t)
{
	p11_enter();
	if (t->epoch == p11_epoch())
		for (int i = 0; i < t->nsess; i++)
			p11_session_close(t->sess[i].h);
	p11_leave();
	free(t);
}

/* This thread's session on the slot, opened on first use. */
static CK_RV op_session(struct op_thread *t, const struct p11_slot *s, CK_SESSION_HANDLE *h)
{
	for (int i = 0; i < t->nsess; i++)
		if (t->sess[i].slot == s) {
			*h = t->sess[i].h;
			return CKR_OK;
		}
	if (t->nsess == P11_MAX_SLOTS)
		return CKR_SESSION_COUNT;
	CK_RV rv = p11_session_open(s, h);
	if (rv == CKR_OK)
		t->sess[t->nsess++] = (struct op_sess){ s, *h };
	return rv;
}

static void op_cache_clear(struct op_thread *t)
{
	t->nusers = 0;
	memset(t->keys, 0, sizeof t->keys);
}

/* After a re-initialisation (by any thread): the sessions and slots this thread knew are
 * gone.  Called with the gate held. */
static void op_sync(struct op_thread *t)
{
	unsigned e = p11_epoch();
	if (t->epoch == e)
		return;
	t->nsess = 0;
	op_cache_clear(t);
	t->epoch = e;
}

/*
 * Before a request's first call into the module (op_login, a Query naming a token): the
 * module's gate, held for reading until the request ends (op_handle), so that a
 * re-initialisation (op_recover) waits for it; then what this thread knew from before a
 * re-initialisation is dropped.  Requests that need no module (Discover Versions, Query
 * without a credential, malformed messages) never take it, so they never wait for a re-initialisation or the requests it waits for.
 */
static void op_enter(struct op_thread *t)
{
	if (t->gated)
		return;
	p11_enter();
	t->gated = 1;
	op_sync(t);
}

/* Forget a session the module says is gone (token removed, module reset), and what was
 * learnt through it.  A lost session's handle is not closed (the module may give it to
 * another session); close: the session works but is unusable (an operation left active). */
static void op_session_drop(struct op_thread *t, CK_SESSION_HANDLE h, int close)
{
	op_cache_clear(t);
	for (int i = 0; i < t->nsess; i++)
		if (t->sess[i].h == h) {
			if (close)
				p11_session_close(h);
			t->sess[i] = t->sess[--t->nsess];
			return;
		}
}

/* A token that went away: its sessions are gone, and the username may name another slot
 * when the token comes back. */
static void op_slot_forget(struct op_thread *t, const struct p11_slot *s)
{
	op_cache_clear(t);
	for (int i = 0; i < t->nsess; i++)
		if (t->sess[i].slot == s)
			t->sess[i--] = t->sess[--t->nsess];
}

/* Username -> slot, as section 6 resolves it, remembered by this thread.  *call: the call
 * that failed. */
static CK_RV op_slot(struct op_thread *t, const uint8_t *user, size_t len, struct p11_slot **out,
                     const char **call)
{
	for (int i = 0; i < t->nusers; i++)
		if (t->users[i].len == len && memcmp(t->users[i].name, user, len) == 0) {
			*out = t->users[i].slot;
			return CKR_OK;
		}
	CK_RV rv = p11_slot_lookup_at((const char *)user, len, out, call);
	if (rv == CKR_OK && len <= OP_USER_NAME_MAX) {
		struct op_user *u = &t->users[t->nusers < OP_USER_CACHE ? t->nusers++ : 0];
		u->slot = *out;
		u->len = len;
		memcpy(u->name, user, len);
	}
	return rv;
}

static uint32_t op_fail(struct op_req *q, uint32_t reason, const char *fmt, ...) PRINTF_LIKE(3, 4);
static uint32_t op_fail(struct op_req *q, uint32_t reason, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(q->msgbuf, sizeof q->msgbuf, fmt, ap);
	va_end(ap);
	/* Cut short (a long UID in it), the message must not end inside a UTF-8 sequence:
	 * a Text String that is not UTF-8 makes the whole answer undecodable. */
	if (n >= (int)sizeof q->msgbuf) {
		size_t len = strlen(q->msgbuf), i = len;
		while (i > 0 && ((unsigned char)q->msgbuf[i - 1] & 0xC0) == 0x80)
			i--;
		if (i > 0 && (unsigned char)q->msgbuf[i - 1] >= 0xC0) {
			unsigned char lead = (unsigned char)q->msgbuf[i - 1];
			size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
			if (len - (i - 1) < need)
				q->msgbuf[i - 1] = '\0';
		}
	}
	q->msg = q->msgbuf;
	return reason;
}

/* A PKCS#11 failure: the one table of section 6 gives the reason, its name the message.
 * It is logged (at warning when the module failed), and classed for op_recover(). */
static uint32_t op_fail_rv(struct op_req *q, CK_RV rv, const char *what)
{
	uint32_t rr = p11_rv_reason(rv);
	q->rv = rv;
	q->call = what;
	q->trouble = p11_trouble(rv, 0);
	p11_warn(what, q->slot, rv);
	return op_fail(q, rr ? rr : RR_GENERAL_FAILURE, "%s: %s", what, p11_rv_name(rv));
}

/* The same for a slot-level call (C_GetSlotList, C_GetTokenInfo, C_OpenSession), whose
 * failure may mean that the module is stuck. */
static uint32_t op_fail_slot(struct op_req *q, CK_RV rv, const char *what)
{
	uint32_t rr = op_fail_rv(q, rv, what);
	q->trouble = p11_trouble(rv, 1);
	return rr;
}

/*
 * Before a request runs again after a failure: act on what the failure said (q->trouble).
 * A lost session is forgotten, one left unusable closed; a token that went away takes its
 * slot with it, so the username is resolved again; a stuck module is re-initialised (at
 * most once per P11_REINIT_GAP_MS), for which this thread lets go of the gate.  The caller
 * then logs in again (op_login).  0: run it again; -1: there is nothing to try.
 */
static int op_recover(struct op_req *q)
{
	struct op_thread *t = q->t;

	switch (q->trouble) {
	case P11_T_SESSION:
		op_session_drop(t, q->h, q->rv == CKR_OPERATION_ACTIVE);
		return 0;
	case P11_T_TOKEN:
		op_slot_forget(t, q->slot);
		q->slot = NULL;
		return 0;
	case P11_T_MODULE: {
		/* Not re-initialised now: the username is looked up again next time. */
		op_cache_clear(t);
		q->slot = NULL;
		unsigned seen = t->epoch;
		p11_leave();
		int done = p11_reinit(seen, q->call ? q->call : "a failure", q->rv);
		p11_enter();
		op_sync(t);
		return done ? 0 : -1;
	}
	}
	return -1;
}

/* An enumeration value's name for a message, never NULL (which %s must not get): a value
 * outside the 1.2 tables, such as an unknown Operation from the client, as hex. */
static const char *op_enum_name(uint32_t tag, uint32_t v, char buf[12])
{
	const char *s = kmip_enum_name(tag, v);
	if (s)
		return s;
	if (tag == KT_CRYPTOGRAPHIC_ALGORITHM && v == ALG_ED25519)
		return "ED25519";
	snprintf(buf, 12, "0x%08X", (unsigned)v);
	return buf;
}

/* ---- UIDs ---------------------------------------------------------------- */

struct op_key {
	uint8_t id[P11_ID_MAX];
	size_t id_len;
	CK_OBJECT_CLASS cls;
	CK_OBJECT_HANDLE obj;
	CK_KEY_TYPE type;
	int curve;                      /* P11_CURVE_* of an EC or Edwards key */
	int sign;                       /* a private key's CKA_SIGN: 1, 0, or -1 unknown */
	char uid[OP_UID_MAX + 1];       /* as the client wrote it, NUL-terminated */
};

static struct op_cached_key *op_cache_find(struct op_req *q, const struct op_key *k)
{
	struct op_thread *t = q->t;
	unsigned gen = __atomic_load_n(&op_generation, __ATOMIC_ACQUIRE);
	if (t->generation != gen) {
		memset(t->keys, 0, sizeof t->keys);
		t->generation = gen;
	}
	for (int i = 0; i < OP_KEY_CACHE; i++) {
		struct op_cached_key *c = &t->keys[i];
		if (c->slot == q->slot && c->cls == k->cls && c->id_len == k->id_len &&
		    memcmp(c->id, k->id, k->id_len) == 0)
			return c;
	}
	return NULL;
}

/* Is the cached handle still the key (class and CKA_ID)?  1 yes, 0 no. */
static int op_cache_check(struct op_req *q, struct op_cached_key *c)
{
	CK_OBJECT_CLASS cls = 0;
	CK_BBOOL sign = CK_FALSE;
	uint8_t id[P11_ID_MAX];
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof cls },
		{ CKA_ID, id, sizeof id },
		{ CKA_SIGN, &sign, sizeof sign },       /* private keys only */
	};
	CK_ULONG n = c->cls == CKO_PRIVATE_KEY ? 3 : 2;
	if (P11_F->C_GetAttributeValue(q->h, c->obj, t, n) != CKR_OK ||
	    cls != c->cls || t[1].ulValueLen != c->id_len || memcmp(id, c->id, c->id_len) != 0) {
		c->slot = NULL;
		return 0;
	}
	if (n == 3)
		c->sign = t[2].ulValueLen == sizeof sign ? sign != CK_FALSE : -1;
	c->checked_ms = mono_ms();
	return 1;
}

/* The key type (and curve) of a handle just found: CKA_EC_PARAMS only where it exists, as
 * asking a module for an attribute the object lacks costs a second round of calls. */
static CK_RV op_key_type(struct op_req *q, struct op_key *k)
{
	uint8_t params[P11_EC_PARAMS_MAX];
	CK_BBOOL sign = CK_FALSE;
	CK_ATTRIBUTE two[] = {
		{ CKA_KEY_TYPE, &k->type, sizeof k->type },
		{ CKA_SIGN, &sign, sizeof sign },       /* in the same call: a private key's */
	};
	CK_ULONG n = k->cls == CKO_PRIVATE_KEY ? 2 : 1;
	CK_RV rv = P11_F->C_GetAttributeValue(q->h, k->obj, two, n);
	if (n == 2 && (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE)) {
		two[1].ulValueLen = CK_UNAVAILABLE_INFORMATION;         /* the type alone, then */
		rv = P11_F->C_GetAttributeValue(q->h, k->obj, two, 1);
	}
	if (rv != CKR_OK)
		return rv;
	k->sign = k->cls == CKO_PRIVATE_KEY && two[1].ulValueLen == sizeof sign ? sign != CK_FALSE : -1;
	CK_ATTRIBUTE t;
	k->curve = P11_CURVE_NONE;
	if (k->type == CKK_EC || k->type == CKK_EC_EDWARDS) {
		t = (CK_ATTRIBUTE){ CKA_EC_PARAMS, params, sizeof params };
		if (P11_F->C_GetAttributeValue(q->h, k->obj, &t, 1) == CKR_OK &&
		    t.ulValueLen <= sizeof params) {
			const struct p11_alg *c = p11_curve_by_der(params, t.ulValueLen);
			k->curve = c ? c->curve : P11_CURVE_NONE;
		}
	}
	return CKR_OK;
}

/* Look the key up in the token (not the cache) and remember it.  Nothing found is
 * P11_E_NOT_FOUND only when the token still answers C_GetTokenInfo: a token whose store
 * could not be read finds nothing too, and a client told Item Not Found may conclude that
 * the key is gone.  *call: the call that failed. */
static CK_RV op_key_lookup(struct op_req *q, struct op_key *k, const char **call)
{
	*call = "C_FindObjects";
	CK_RV rv = p11_find_key(q->h, k->id, k->id_len, k->cls, &k->obj);
	if (rv == P11_E_NOT_FOUND) {
		CK_RV trv = p11_token_check(q->slot);
		if (trv != CKR_OK) {
			*call = OP_EMPTY_FIND;
			return trv;
		}
	}
	if (rv == CKR_OK) {
		*call = "C_GetAttributeValue";
		rv = op_key_type(q, k);
	}
	if (rv != CKR_OK)
		return rv;
	struct op_thread *t = q->t;
	struct op_cached_key *c = &t->keys[t->next_key];
	t->next_key = (t->next_key + 1) % OP_KEY_CACHE;
	*c = (struct op_cached_key){ q->slot, k->cls, k->obj, k->type, k->curve, k->sign,
				     mono_ms(), k->id_len, { 0 } };
	memcpy(c->id, k->id, k->id_len);
	return CKR_OK;
}

/* Look the key up anew; the failure, answered: Item Not Found only when the token said so. */
static uint32_t op_key_find(struct op_req *q, struct op_key *k)
{
	const char *call;
	CK_RV rv = op_key_lookup(q, k, &call);
	if (rv == CKR_OK)
		return 0;
	if (rv == P11_E_NOT_FOUND)
		return op_fail(q, RR_ITEM_NOT_FOUND, "no such key '%s'", k->uid);
	if (call == OP_EMPTY_FIND)
		return op_fail_slot(q, rv, call);
	return op_fail_rv(q, rv, call);
}

/*
 * Right before a call that changes or removes the object (C_DestroyObject,
 * C_SetAttributeValue): is k->obj still the key the UID names, by class and CKA_ID?  A
 * handle from the thread's cache may be up to OP_KEY_RECHECK_MS old, and a module may
 * give a deleted key's handle to a new object; a Destroy or Revoke must never reach
 * another key.  If not, the key is looked up anew.
 */
static uint32_t op_confirm(struct op_req *q, struct op_key *k)
{
	CK_OBJECT_CLASS cls = 0;
	uint8_t id[P11_ID_MAX];
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof cls },
		{ CKA_ID, id, sizeof id },
	};
	CK_RV rv = P11_F->C_GetAttributeValue(q->h, k->obj, t, ARRAY_LEN(t));
	if (rv == CKR_OK && t[0].ulValueLen == sizeof cls && cls == k->cls &&
	    t[1].ulValueLen == k->id_len && memcmp(id, k->id, k->id_len) == 0)
		return 0;
	if (q->cached)
		log_info("the cached handle of %s names another object now; looking again", k->uid);
	op_cache_clear(q->t);
	q->cached = 0;
	return op_key_find(q, k);
}

static void op_put_uid(struct ttlv_enc *e, uint32_t tag, const uint8_t *id, size_t n,
		       CK_OBJECT_CLASS cls)
{
	char s[OP_UID_MAX + 1];
	hex_upper(s, id, n);
	strcpy(s + 2 * n, cls == CKO_PRIVATE_KEY ? "_priv" : "_pub");
	ttlv_put_text(e, tag, s, strlen(s));
}

/*
 * The Unique Identifier of the payload (or the batch's ID Placeholder when it has none),
 * parsed and looked up.  prefer: the class a bare hex CKA_ID means for this operation, or
 * 0 when a bare one is refused.
 */
static uint32_t op_find(struct op_req *q, const struct ttlv *pl, CK_OBJECT_CLASS prefer,
			struct op_key *k)
{
	const char *s = NULL;
	uint32_t n = 0;
	int rc = pl ? kmip_get_text(q->d, pl, KT_UNIQUE_IDENTIFIER, &s, &n) : KMIP_ABSENT;
	if (rc == KMIP_BAD_TYPE)
		return op_fail(q, RR_INVALID_MESSAGE, "Unique Identifier must be a Text String");
	if (rc == KMIP_ABSENT) {
		if (!q->placeholder[0])
			return op_fail(q, RR_MISSING_DATA, "no Unique Identifier and no ID Placeholder");
		s = q->placeholder;
		n = (uint32_t)strlen(s);
	}
	if (n > OP_UID_MAX)
		return op_fail(q, RR_ITEM_NOT_FOUND, "no such key (UID too long)");
	memcpy(k->uid, s, n);
	k->uid[n] = '\0';
	size_t hexlen = n;
	k->cls = prefer;
	if (n > 4 && memcmp(s + n - 4, "_pub", 4) == 0) {
		hexlen = n - 4;
		k->cls = CKO_PUBLIC_KEY;
	} else if (n > 5 && memcmp(s + n - 5, "_priv", 5) == 0) {
		hexlen = n - 5;
		k->cls = CKO_PRIVATE_KEY;
	} else if (prefer == 0) {
		return op_fail(q, RR_ITEM_NOT_FOUND, "UID '%s' must name a half: _pub or _priv",
			       k->uid);
	}
	int len = hex_parse(k->id, sizeof k->id, s, hexlen);
	if (len <= 0)
		return op_fail(q, RR_ITEM_NOT_FOUND, "no such key '%s'", k->uid);
	k->id_len = (size_t)len;
	struct op_cached_key *c = op_cache_find(q, k);
	if (c && (mono_ms() - c->checked_ms < OP_KEY_RECHECK_MS || op_cache_check(q, c))) {
		k->obj = c->obj;
		k->type = c->type;
		k->curve = c->curve;
		k->sign = c->sign;
		q->cached = 1;
		return 0;
	}
	return op_key_find(q, k);
}

/* ---- attributes of keys, as KMIP names them ------------------------------ */

static uint32_t op_alg_of(const struct p11_key_info *ki)
{
	const struct p11_alg *a = p11_alg_of(ki->type, ki->curve);
	return a ? a->kmip_alg : 0;
}

/* The SubjectPublicKeyInfo of a key (RFC 5280 4.1; RFC 3279 RSA, RFC 5480 EC, RFC 8410
 * Ed25519), or 0 if it does not fit. */
static size_t op_spki(const struct p11_key_info *ki, uint8_t *out, size_t cap)
{
	const struct p11_alg *a = p11_alg_of(ki->type, ki->curve);
	struct der d = { out, cap, 0, 0 };
	uint8_t tmp[P11_MODULUS_MAX + P11_EXPONENT_MAX + 32];

	if (!a)
		return 0;
	if (ki->type == CKK_RSA) {
		struct der pk = { tmp, sizeof tmp, 0, 0 };
		der_uint_pair(&pk, ki->modulus, ki->modulus_len, ki->exponent, ki->exponent_len);
		if (pk.err)
			return 0;
		der_spki(&d, a->spki_alg, a->spki_alg_len, tmp, pk.len);
	} else {
		der_spki(&d, a->spki_alg, a->spki_alg_len, ki->ec_point, ki->ec_point_len);
	}
	return d.err ? 0 : d.len;
}

/* SHA-256 of a key's SubjectPublicKeyInfo (a private key's: its public half's), the
 * Digest an operator compares across HSMs with `openssl pkey -pubout -outform DER |
 * sha256sum`.  0, or -1 when the public key is not known. */
static int op_key_digest(const struct p11_key_info *ki, uint8_t out[32])
{
	uint8_t spki[P11_MODULUS_MAX + P11_EXPONENT_MAX + 64];
	size_t n = op_spki(ki, spki, sizeof spki), hl = 0;
	if (n == 0 || psa_hash_compute(PSA_ALG_SHA_256, spki, n, out, 32, &hl) != PSA_SUCCESS ||
	    hl != 32)
		return -1;
	return 0;
}

/* The KMIP Recommended Curve of a key's curve, 0 for none. */
static uint32_t op_kmip_curve(int curve)
{
	const struct p11_alg *a = p11_curve_by_id(curve);
	return a ? a->kmip_curve : 0;
}

/* ---- the operations ------------------------------------------------------ */

/*
 * Discover Versions (spec 4.26).  Request: Protocol Version*, the client's in order of
 * preference.  Response: Protocol Version*: with no list, all we speak, newest first;
 * else those of the list that we speak, in the client's order (none: an empty payload).
 */
static uint32_t op_discover_versions(struct op_req *q, const struct ttlv *pl)
{
	int any = 0;
	if (pl)
		for (int i = pl->child; i >= 0; i = q->d->it[i].next) {
			const struct ttlv *v = &q->d->it[i];
			int32_t major, minor;
			if (v->tag != KT_PROTOCOL_VERSION)
				continue;
			any = 1;
			if (v->type != TT_STRUCT ||
			    kmip_get_int(q->d, v, KT_PROTOCOL_VERSION_MAJOR, &major) != 0 ||
			    kmip_get_int(q->d, v, KT_PROTOCOL_VERSION_MINOR, &minor) != 0)
				return op_fail(q, RR_INVALID_MESSAGE, "malformed Protocol Version");
			if (major != KMIP_MAJOR || minor < 0 || minor > KMIP_MINOR)
				continue;
			ttlv_open(q->e, KT_PROTOCOL_VERSION);
			ttlv_put_int(q->e, KT_PROTOCOL_VERSION_MAJOR, major);
			ttlv_put_int(q->e, KT_PROTOCOL_VERSION_MINOR, minor);
			ttlv_close(q->e);
		}
	if (!any)
		for (int minor = KMIP_MINOR; minor >= 0; minor--) {
			ttlv_open(q->e, KT_PROTOCOL_VERSION);
			ttlv_put_int(q->e, KT_PROTOCOL_VERSION_MAJOR, KMIP_MAJOR);
			ttlv_put_int(q->e, KT_PROTOCOL_VERSION_MINOR, minor);
			ttlv_close(q->e);
		}
	return 0;
}

static void op_put_operations(struct ttlv_enc *e, const struct p11_slot *s);

/*
 * Query (spec 4.25).  Request: Query Function*.  Response, in this order: Operation*,
 * Object Type*, Vendor Identification, (Server Information, Application Namespace*,
 * Extension Information*: none here).  Needs no login.  With a username, the answer is
 * that token's: Create Key Pair and Sign only where its mechanisms allow some kind of key,
 * key objects only where it can sign, and its label in the vendor identification (Cascade
 * prints it at `cascade hsm add`).
 */
static uint32_t op_query(struct op_req *q, const struct ttlv *pl)
{
	int ops = 0, objs = 0, info = 0;
	struct p11_slot *s = NULL;
	if (q->r->has_cred && q->r->user_len > 0 && q->r->user_len < 256) {
		op_enter(q->t);
		if (p11_slot_lookup((const char *)q->r->user, q->r->user_len, &s) != CKR_OK)
			s = NULL;
	}
	if (pl)
		for (int i = pl->child; i >= 0; i = q->d->it[i].next) {
			const struct ttlv *f = &q->d->it[i];
			if (f->tag != KT_QUERY_FUNCTION)
				continue;
			if (f->type != TT_ENUM)
				return op_fail(q, RR_INVALID_MESSAGE, "Query Function must be an Enumeration");
			ops |= f->num == QF_QUERY_OPERATIONS;
			objs |= f->num == QF_QUERY_OBJECTS;
			info |= f->num == QF_QUERY_SERVER_INFORMATION;
		}
	int can_sign = !s;
	for (size_t i = 0; s && i < ARRAY_LEN(p11_algs); i++)
		can_sign |= p11_slot_can_sign(s, &p11_algs[i]);
	if (ops)
		op_put_operations(q->e, s);
	if (objs && can_sign) {
		ttlv_put_enum(q->e, KT_OBJECT_TYPE, OT_PUBLIC_KEY);
		ttlv_put_enum(q->e, KT_OBJECT_TYPE, OT_PRIVATE_KEY);
	}
	if (info) {
		char v[400];
		const char *label = s ? s->label : "";
		int n = snprintf(v, sizeof v, "kmip2pkcs11 %s%s%s%s; PKCS#11 module: %s", K2P_VERSION,
				 *label ? "; token: '" : "", label, *label ? "'" : "", q->t->env->module);
		size_t len = n < 0 ? 0 : (size_t)n < sizeof v ? (size_t)n : sizeof v - 1;
		/* Token and module texts come from the module: keep the answer valid UTF-8. */
		if (ttlv_check_utf8((const uint8_t *)v, len) != 0)
			for (size_t i = 0; i < len; i++)
				if ((unsigned char)v[i] >= 0x80)
					v[i] = '?';
		ttlv_put_text(q->e, KT_VENDOR_IDENTIFICATION, v, len);
	}
	return 0;
}

/* An attribute for one half of a pair: its own template first, then the common one. */
static const struct ttlv *op_tmpl_attr(struct op_req *q, const struct ttlv *own,
				       const struct ttlv *common, const char *name)
{
	const struct ttlv *v = kmip_attr_value(q->d, own, name, 0);
	return v ? v : kmip_attr_value(q->d, common, name, 0);
}

/* Name attribute value: Name Value (Text String), Name Type (Enumeration). */
static uint32_t op_name(struct op_req *q, const struct ttlv *v, const char **s, size_t *n)
{
	uint32_t len;
	if (!v) {
		*s = NULL;
		*n = 0;
		return 0;
	}
	if (v->type != TT_STRUCT || kmip_get_text(q->d, v, KT_NAME_VALUE, s, &len) != 0)
		return op_fail(q, RR_INVALID_FIELD, "Name needs a Name Value text string");
	if (len > P11_LABEL_MAX)
		return op_fail(q, RR_INVALID_FIELD, "Name longer than %d bytes", P11_LABEL_MAX);
	*n = len;
	return 0;
}

/* Usage mask of one half: the bit that half needs (Sign, Verify), default set. */
static uint32_t op_usage(struct op_req *q, const struct ttlv *v, uint32_t bit, int *on)
{
	*on = 1;
	if (!v)
		return 0;
	if (v->type != TT_INT)
		return op_fail(q, RR_INVALID_FIELD, "Cryptographic Usage Mask must be an Integer");
	*on = ((uint32_t)v->num & bit) != 0;
	return 0;
}

/*
 * Create Key Pair (spec 4.2).  Request: Common Template-Attribute, Private Key
 * Template-Attribute, Public Key Template-Attribute (each optional).  Attributes read:
 * Cryptographic Algorithm (RSA, ECDSA or EC, Ed25519), Cryptographic Length (RSA bits;
 * EC 256, 384 or 521), Cryptographic Domain Parameters / Recommended Curve (EC), Name
 * (-> CKA_LABEL of that half), Cryptographic Usage Mask (Sign -> CKA_SIGN, Verify ->
 * CKA_VERIFY).  Response: Private Key Unique Identifier, Public Key Unique Identifier.
 */
static uint32_t op_create_key_pair(struct op_req *q, const struct ttlv *pl)
{
	const struct ttlv *common = NULL, *priv = NULL, *pub = NULL, *v;
	struct p11_keygen g;
	uint32_t alg, rr;

	memset(&g, 0, sizeof g);
	if (pl) {
		common = ttlv_find(q->d, pl, KT_COMMON_TEMPLATE_ATTRIBUTE);
		priv = ttlv_find(q->d, pl, KT_PRIVATE_KEY_TEMPLATE_ATTRIBUTE);
		pub = ttlv_find(q->d, pl, KT_PUBLIC_KEY_TEMPLATE_ATTRIBUTE);
	}
	v = op_tmpl_attr(q, priv, common, "Cryptographic Algorithm");
	if (!v)
		v = op_tmpl_attr(q, pub, common, "Cryptographic Algorithm");
	if (!v)
		return op_fail(q, RR_INVALID_MESSAGE, "Cryptographic Algorithm is required");
	if (v->type != TT_ENUM)
		return op_fail(q, RR_INVALID_FIELD, "Cryptographic Algorithm must be an Enumeration");
	alg = (uint32_t)v->num;
	int32_t len = 0;
	v = op_tmpl_attr(q, priv, common, "Cryptographic Length");
	if (!v)
		v = op_tmpl_attr(q, pub, common, "Cryptographic Length");
	if (v) {
		if (v->type != TT_INT)
			return op_fail(q, RR_INVALID_FIELD, "Cryptographic Length must be an Integer");
		len = (int32_t)v->num;
	}
	uint32_t curve = 0;
	v = op_tmpl_attr(q, priv, common, "Cryptographic Domain Parameters");
	if (!v)
		v = op_tmpl_attr(q, pub, common, "Cryptographic Domain Parameters");
	if (v && (v->type != TT_STRUCT || kmip_get_enum(q->d, v, KT_RECOMMENDED_CURVE, &curve) == KMIP_BAD_TYPE))
		return op_fail(q, RR_INVALID_FIELD, "malformed Cryptographic Domain Parameters");

	/* The row: RSA by its length, EC by its curve or else its length (none: P-256). */
	const struct p11_alg *a = NULL;
	for (size_t i = 0; i < ARRAY_LEN(p11_algs) && !a; i++) {
		const struct p11_alg *r = &p11_algs[i];
		if (p11_alg_is(r, alg) && (r->type != CKK_EC || (curve ? curve == r->kmip_curve :
		    len == (int32_t)r->bits || (len == 0 && r->curve == P11_CURVE_P256))))
			a = r;
	}
	if (!a && (alg == ALG_ECDSA || alg == ALG_EC))
		return op_fail(q, RR_INVALID_FIELD, "EC keys are P-256, P-384 or P-521");
	if (!a)
		return op_fail(q, RR_INVALID_FIELD, "Cryptographic Algorithm %s: RSA, ECDSA, EC or "
			       "Ed25519 key pairs only",
			       op_enum_name(KT_CRYPTOGRAPHIC_ALGORITHM, alg, (char[12]){ 0 }));
	if (a->type == CKK_RSA) {
		if (len < P11_RSA_MIN_BITS || len > P11_RSA_MAX_BITS || len % 8 != 0)
			return op_fail(q, RR_INVALID_FIELD, "RSA Cryptographic Length must be %d..%d bits",
				       P11_RSA_MIN_BITS, P11_RSA_MAX_BITS);
		g.bits = (unsigned)len;
	} else if (a->type == CKK_EC_EDWARDS && len && len != 255 && len != 256) {
		return op_fail(q, RR_INVALID_FIELD, "Ed25519 keys have 255 bits");
	} else if (a->type == CKK_EC && curve && len && (unsigned)len != a->bits) {
		return op_fail(q, RR_INVALID_FIELD, "Cryptographic Length disagrees with the curve");
	}
	g.type = a->type;
	g.curve = a->curve;
	/* Names and usage belong to one half each; a common Name would give both the same. */
	if ((rr = op_name(q, op_tmpl_attr(q, priv, common, "Name"), &g.priv_label, &g.priv_label_len)) ||
	    (rr = op_name(q, op_tmpl_attr(q, pub, common, "Name"), &g.pub_label, &g.pub_label_len)) ||
	    (rr = op_usage(q, op_tmpl_attr(q, priv, common, "Cryptographic Usage Mask"), UM_SIGN, &g.sign)) ||
	    (rr = op_usage(q, op_tmpl_attr(q, pub, common, "Cryptographic Usage Mask"), UM_VERIFY, &g.verify)))
		return rr;

	char why[120];
	if (p11_slot_can_generate(q->slot, a, g.bits, why, sizeof why) < 0)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "%s", why);
	uint8_t id[P11_ID_LEN];
	size_t idlen = sizeof id;
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_RV rv = p11_generate(q->h, q->slot, &g, id, &hpub, &hpriv);
	if (rv != CKR_OK) {
		char hint[112];
		if (!p11_template_hint(rv, &g, hint, sizeof hint))
			return op_fail_rv(q, rv, "C_GenerateKeyPair");
		uint32_t reason = p11_rv_reason(rv);
		q->rv = rv;
		return op_fail(q, reason ? reason : RR_GENERAL_FAILURE, "C_GenerateKeyPair: %s: %s",
			       p11_rv_name(rv), hint);
	}
	p11_kept_id(q->h, hpub, hpriv, id, &idlen);
	op_put_uid(q->e, KT_PRIVATE_KEY_UNIQUE_IDENTIFIER, id, idlen, CKO_PRIVATE_KEY);
	op_put_uid(q->e, KT_PUBLIC_KEY_UNIQUE_IDENTIFIER, id, idlen, CKO_PUBLIC_KEY);
	hex_upper(q->placeholder, id, idlen);
	strcat(q->placeholder, "_priv");
	log_info("created %s key pair %s (%s)", a->name, q->placeholder,
		 g.priv_label ? "named" : "unnamed");
	return 0;
}

/* ---- Register: keys given in the clear ------------------------------------ */

/* A Big Integer (two's complement, sign-extended: spec 9.1.1.4) as the magnitude PKCS#11
 * wants, leading zeros dropped.  0, or -1 if negative, empty or longer than cap. */
static int op_bigint(const struct ttlv *t, uint8_t *out, size_t cap, size_t *len)
{
	if (!t || t->type != TT_BIGINT || t->len == 0 || (t->val[0] & 0x80))
		return -1;
	const uint8_t *p = t->val;
	size_t n = t->len;
	while (n > 1 && p[0] == 0) {
		p++;
		n--;
	}
	if (n > cap || (n == 1 && p[0] == 0))
		return -1;
	memcpy(out, p, n);
	*len = n;
	return 0;
}

/* An MPI of Mbed TLS as a big-endian magnitude; 0, or -1 if it does not fit. */
static int op_mpi_out(const mbedtls_mpi *m, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = mbedtls_mpi_size(m);
	if (n == 0 || n > cap || mbedtls_mpi_write_binary(m, out, n) != 0)
		return -1;
	*len = n;
	return 0;
}

/* An RSA key of Mbed TLS into im: n and e, and with priv d, p, q, dp, dq, qinv. */
static uint32_t op_rsa_out(struct op_req *q, mbedtls_rsa_context *rsa, int priv,
			   struct p11_import *im)
{
	mbedtls_mpi m[8];
	uint32_t rr = 0;

	for (int i = 0; i < 8; i++)
		mbedtls_mpi_init(&m[i]);
	/* m: N, P, Q, D, E, DP, DQ, QP */
	if (mbedtls_rsa_export(rsa, &m[0], priv ? &m[1] : NULL, priv ? &m[2] : NULL,
			       priv ? &m[3] : NULL, &m[4]) != 0 ||
	    (priv && mbedtls_rsa_export_crt(rsa, &m[5], &m[6], &m[7]) != 0)) {
		rr = op_fail(q, RR_INVALID_FIELD, "incomplete RSA key");
		goto out;
	}
	size_t bits = mbedtls_mpi_bitlen(&m[0]);
	if (bits < P11_RSA_MIN_BITS || bits > P11_RSA_MAX_BITS) {
		rr = op_fail(q, RR_INVALID_FIELD, "RSA keys of %d..%d bits only, not %zu",
			     P11_RSA_MIN_BITS, P11_RSA_MAX_BITS, bits);
		goto out;
	}
	im->type = CKK_RSA;
	im->has_private = priv;
	if (op_mpi_out(&m[0], im->n, sizeof im->n, &im->n_len) ||
	    op_mpi_out(&m[4], im->e, sizeof im->e, &im->e_len) ||
	    (priv && (op_mpi_out(&m[3], im->d, sizeof im->d, &im->d_len) ||
		      op_mpi_out(&m[1], im->p, sizeof im->p, &im->p_len) ||
		      op_mpi_out(&m[2], im->q, sizeof im->q, &im->q_len) ||
		      op_mpi_out(&m[5], im->dp, sizeof im->dp, &im->dp_len) ||
		      op_mpi_out(&m[6], im->dq, sizeof im->dq, &im->dq_len) ||
		      op_mpi_out(&m[7], im->qinv, sizeof im->qinv, &im->qinv_len))))
		rr = op_fail(q, RR_INVALID_FIELD, "RSA key parts out of range");
out:
	for (int i = 0; i < 8; i++)
		mbedtls_mpi_free(&m[i]);        /* zeroizes */
	return rr;
}

/* One DER tag and definite length (at most 4 length octets) from r; the content's length
 * into *len, checked to be there.  0, or -1. */
static int op_der_tl(struct buf_rd *r, uint8_t tag, size_t *len)
{
	const uint8_t *t = buf_take(r, 2);
	if (!t || t[0] != tag)
		return -1;
	size_t n = t[1];
	if (n & 0x80) {
		size_t k = n & 0x7F;
		const uint8_t *l = k >= 1 && k <= 4 ? buf_take(r, k) : NULL;
		if (!l)
			return -1;
		n = 0;
		for (size_t i = 0; i < k; i++)
			n = n << 8 | l[i];
	}
	*len = n;
	return buf_has(r->p, r->end, n) ? 0 : -1;
}

/*
 * An EC key into im, through PSA, which checks that the private value d is one of the
 * curve, or that the point is on it.  With d, im->point becomes the public key computed
 * from it, and a point given as well (SEC1's optional publicKey) must be that one.
 * d: big-endian, at most the field's size; NULL for a public key alone.
 */
static uint32_t op_ec_key(struct op_req *q, int curve, const uint8_t *d, size_t dlen,
			  const uint8_t *point, size_t plen, struct p11_import *im)
{
	const struct p11_alg *c = p11_alg_of(CKK_EC, curve);
	psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
	mbedtls_svc_key_id_t kid = MBEDTLS_SVC_KEY_ID_INIT;
	uint32_t rr = 0;

	/* PSA's secp_r1 family holds every Weierstrass curve of p11_algs. */
	if (!c)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "EC curve not supported (P-256, P-384, "
			       "P-521 only)");
	im->type = CKK_EC;
	im->curve = curve;
	im->has_private = d != NULL;
	psa_set_key_bits(&a, c->bits);
	psa_set_key_type(&a, d ? PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1)
			       : PSA_KEY_TYPE_ECC_PUBLIC_KEY(PSA_ECC_FAMILY_SECP_R1));
	if (d) {
		if (dlen > c->field)
			return op_fail(q, RR_INVALID_FIELD, "EC private value longer than its curve");
		/* PKCS#11 and PSA both take d at exactly the field's size. */
		memset(im->scalar, 0, c->field);
		memcpy(im->scalar + c->field - dlen, d, dlen);
		im->scalar_len = c->field;
	}
	psa_status_t st = d ? psa_import_key(&a, im->scalar, im->scalar_len, &kid)
			    : psa_import_key(&a, point, plen, &kid);
	if (st == PSA_ERROR_NOT_SUPPORTED)
		rr = op_fail(q, RR_FEATURE_NOT_SUPPORTED, "EC curve not supported by this build");
	else if (st != PSA_SUCCESS ||
		 psa_export_public_key(kid, im->point, sizeof im->point, &im->point_len) != PSA_SUCCESS)
		rr = op_fail(q, RR_INVALID_FIELD, "EC key not valid for its curve");
	else if (d && point && (plen != im->point_len || memcmp(point, im->point, plen) != 0))
		rr = op_fail(q, RR_INVALID_FIELD, "the public key given with the private key "
			     "does not match it");
	psa_destroy_key(kid);
	psa_reset_key_attributes(&a);
	return rr;
}

/*
 * A key parsed by Mbed TLS (RSA or EC) into im.  An EC key is read back from the DER Mbed
 * TLS writes of it, whatever form it came in:
 *   SubjectPublicKeyInfo (RFC 5480): SEQUENCE { SEQUENCE { id-ecPublicKey, namedCurve OID },
 *                                               subjectPublicKey BIT STRING }
 *   ECPrivateKey (RFC 5915):         SEQUENCE { version INTEGER, privateKey OCTET STRING, ... }
 * The point is the one the key material gave (or Mbed TLS computed when it gave none).
 */
static uint32_t op_pk_out(struct op_req *q, mbedtls_pk_context *pk, int priv, struct p11_import *im)
{
	if (mbedtls_pk_get_type(pk) == MBEDTLS_PK_RSA) {
		mbedtls_rsa_context *rsa = mbedtls_pk_rsa(*pk);
		if (priv && mbedtls_rsa_check_privkey(rsa) != 0)
			return op_fail(q, RR_INVALID_FIELD, "RSA private key is not consistent");
		return op_rsa_out(q, rsa, priv, im);
	}
	if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "RSA and EC keys only");

	uint8_t spki[P11_EC_POINT_MAX + 64], sec1[P11_EC_POINT_MAX + 128];
	struct buf_rd r, alg;
	size_t len, alen, plen = 0, dlen = 0;
	const uint8_t *point = NULL, *d = NULL;
	const struct p11_alg *c = NULL;
	uint32_t rr;
	int n = mbedtls_pk_write_pubkey_der(pk, spki, sizeof spki);   /* at the buffer's end */
	if (n > 0) {
		buf_rd_init(&r, spki + sizeof spki - n, (size_t)n);
		if (op_der_tl(&r, 0x30, &len) == 0 && op_der_tl(&r, 0x30, &alen) == 0) {
			buf_rd_init(&alg, buf_take(&r, alen), alen);
			if (op_der_tl(&alg, 0x06, &len) == 0 && buf_take(&alg, len))
				c = p11_curve_by_der(alg.p, buf_rd_left(&alg));
			if (op_der_tl(&r, 0x03, &len) == 0 && len > 1 && buf_take(&r, 1)) {
				plen = len - 1;
				point = buf_take(&r, plen);
			}
		}
	}
	if (!point)
		return op_fail(q, RR_INVALID_FIELD, "EC key without a public key");
	if (priv) {
		n = mbedtls_pk_write_key_der(pk, sec1, sizeof sec1);
		buf_rd_init(&r, sec1 + sizeof sec1 - (n > 0 ? n : 0), n > 0 ? (size_t)n : 0);
		if (n <= 0 || op_der_tl(&r, 0x30, &len) != 0 || op_der_tl(&r, 0x02, &len) != 0 ||
		    !buf_take(&r, len) || op_der_tl(&r, 0x04, &dlen) != 0 || !(d = buf_take(&r, dlen))) {
			wipe(sec1, sizeof sec1);
			return op_fail(q, RR_INVALID_FIELD, "EC private key not readable");
		}
	}
	rr = op_ec_key(q, c ? c->curve : P11_CURVE_NONE, d, dlen, point, plen, im);
	wipe(sec1, sizeof sec1);
	return rr;
}

/* 1 if der is an EncryptedPrivateKeyInfo (RFC 5208 section 6): SEQUENCE { encryption-
 * Algorithm AlgorithmIdentifier, encryptedData OCTET STRING }, where a PrivateKeyInfo,
 * an RSAPrivateKey or an ECPrivateKey starts with its version INTEGER instead. */
static int op_der_encrypted(const uint8_t *der, size_t n)
{
	struct buf_rd r;
	const uint8_t *t;

	buf_rd_init(&r, der, n);
	if (!(t = buf_take(&r, 2)) || t[0] != 0x30)
		return 0;
	size_t lb = (t[1] & 0x80) ? (size_t)(t[1] & 0x7F) : 0;
	if (lb > 4 || (lb && !buf_take(&r, lb)))
		return 0;
	return (t = buf_take(&r, 1)) != NULL && t[0] == 0x30;
}

/* What a DER key says its algorithm is, read where each form keeps it, for a clear
 * refusal of what Mbed TLS did not parse:
 *   PrivateKeyInfo (RFC 5208, 5958): SEQUENCE { version INTEGER, SEQUENCE { algorithm OID,
 *                                    parameters }, privateKey OCTET STRING, ... }
 *   SubjectPublicKeyInfo (RFC 5280): SEQUENCE { SEQUENCE { algorithm OID, parameters },
 *                                    subjectPublicKey BIT STRING }
 *   ECPrivateKey (RFC 5915):         SEQUENCE { version INTEGER, privateKey OCTET STRING,
 *                                    [0] parameters (a namedCurve OID), ... }
 * Returns OP_DER_ED25519 / OP_DER_ED448 (RFC 8410), OP_DER_EC_CURVE (an EC key of a
 * named curve the daemon does not serve), OP_DER_OTHER_ALG (neither RSA nor EC), or 0. */
enum { OP_DER_ED25519 = 1, OP_DER_ED448, OP_DER_EC_CURVE, OP_DER_OTHER_ALG };

static int op_der_alg(const uint8_t *der, size_t n)
{
	static const uint8_t ec_oid[] = { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01 };
	static const uint8_t rsa_oid[] = { 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01 };
	struct buf_rd r, a;
	size_t len;
	const uint8_t *oid = NULL, *v;

	buf_rd_init(&r, der, n);
	if (op_der_tl(&r, 0x30, &len) != 0)
		return 0;
	if (r.p < r.end && r.p[0] == 0x02 && (op_der_tl(&r, 0x02, &len) != 0 || !buf_take(&r, len)))
		return 0;
	if (r.p < r.end && r.p[0] == 0x04) {            /* ECPrivateKey: to its [0] */
		if (op_der_tl(&r, 0x04, &len) != 0 || !buf_take(&r, len) ||
		    op_der_tl(&r, 0xA0, &len) != 0)
			return 0;
		buf_rd_init(&a, r.p, len);
	} else {
		if (op_der_tl(&r, 0x30, &len) != 0)
			return 0;
		buf_rd_init(&a, r.p, len);
		if (op_der_tl(&a, 0x06, &len) != 0 || !(oid = buf_take(&a, len)))
			return 0;
		if (len == 3 && oid[0] == 0x2B && oid[1] == 0x65 && (oid[2] == 0x70 || oid[2] == 0x71))
			return oid[2] == 0x70 ? OP_DER_ED25519 : OP_DER_ED448;
		if (len == sizeof rsa_oid && memcmp(oid, rsa_oid, len) == 0)
			return 0;
		if (len != sizeof ec_oid || memcmp(oid, ec_oid, len) != 0)
			return OP_DER_OTHER_ALG;
	}
	/* The EC parameters: a namedCurve OID that is one of ours, or a curve we do not serve. */
	v = a.p;
	if (op_der_tl(&a, 0x06, &len) != 0 || !buf_take(&a, len))
		return OP_DER_EC_CURVE;             /* explicit parameters, or none */
	return p11_curve_by_der(v, (size_t)(a.p - v)) ? 0 : OP_DER_EC_CURVE;
}

/* An Edwards public key's SubjectPublicKeyInfo (RFC 8410 section 4), which Mbed TLS does
 * not parse: SEQUENCE { the row's AlgorithmIdentifier, BIT STRING { 0 unused bits, the
 * key } }.  The row, with the key's offset in *off, or NULL. */
static const struct p11_alg *op_edwards_spki(const uint8_t *der, size_t n, size_t *off)
{
	for (size_t i = 0; i < ARRAY_LEN(p11_algs); i++) {
		const struct p11_alg *a = &p11_algs[i];
		size_t k = a->spki_alg_len;
		if (a->type != CKK_EC_EDWARDS || n != 2 + k + 3 + a->field || n >= 0x80)
			continue;
		if (der[0] == 0x30 && der[1] == n - 2 && memcmp(der + 2, a->spki_alg, k) == 0 &&
		    der[2 + k] == 0x03 && der[3 + k] == a->field + 1 && der[4 + k] == 0) {
			*off = 5 + k;
			return a;
		}
	}
	return NULL;
}

/*
 * The Ed25519 public key of a private key (RFC 8032 section 5.1.5), which Mbed TLS does not
 * compute: h = SHA-512(seed); the scalar s = h[0..31] little-endian with bits 0-2 and 255
 * cleared and bit 254 set; A = [s]B on the twisted Edwards curve -x^2 + y^2 = 1 + d x^2 y^2
 * over p = 2^255 - 19; the key is y little-endian with x's low bit in the top bit.  Points
 * in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z, added with the
 * complete formula of RFC 8032 section 5.1.4 (also used for doubling).  Not constant-time:
 * it runs once per import, on a key the requester holds already.
 */
struct op_ed_pt {
	mbedtls_mpi x, y, z, t;
};

static int op_ed_mod(mbedtls_mpi *r, const mbedtls_mpi *p)
{
	return mbedtls_mpi_mod_mpi(r, r, p);
}

static int op_ed_mul(mbedtls_mpi *r, const mbedtls_mpi *a, const mbedtls_mpi *b, const mbedtls_mpi *p)
{
	int ret = mbedtls_mpi_mul_mpi(r, a, b);
	return ret ? ret : op_ed_mod(r, p);
}

/* r = p1 + p2 (r may be either); d2 = 2d mod p; tmp: 8 initialized MPIs. */
static int op_ed_add(struct op_ed_pt *r, const struct op_ed_pt *p1, const struct op_ed_pt *p2,
		     const mbedtls_mpi *d2, const mbedtls_mpi *p, mbedtls_mpi *tmp)
{
	mbedtls_mpi *a = &tmp[0], *b = &tmp[1], *c = &tmp[2], *d = &tmp[3], *e = &tmp[4],
		    *f = &tmp[5], *g = &tmp[6], *h = &tmp[7];
	int ret = 0;
	ret |= mbedtls_mpi_sub_mpi(a, &p1->y, &p1->x);          /* A = (Y1-X1)(Y2-X2) */
	ret |= mbedtls_mpi_sub_mpi(e, &p2->y, &p2->x);
	ret |= op_ed_mul(a, a, e, p);
	ret |= mbedtls_mpi_add_mpi(b, &p1->y, &p1->x);          /* B = (Y1+X1)(Y2+X2) */
	ret |= mbedtls_mpi_add_mpi(e, &p2->y, &p2->x);
	ret |= op_ed_mul(b, b, e, p);
	ret |= op_ed_mul(c, &p1->t, &p2->t, p);                 /* C = T1 2d T2 */
	ret |= op_ed_mul(c, c, d2, p);
	ret |= op_ed_mul(d, &p1->z, &p2->z, p);                 /* D = Z1 2 Z2 */
	ret |= mbedtls_mpi_shift_l(d, 1);
	ret |= mbedtls_mpi_sub_mpi(e, b, a);                    /* E = B-A, F = D-C */
	ret |= mbedtls_mpi_sub_mpi(f, d, c);                    /* G = D+C, H = B+A */
	ret |= mbedtls_mpi_add_mpi(g, d, c);
	ret |= mbedtls_mpi_add_mpi(h, b, a);
	ret |= op_ed_mul(&r->x, e, f, p);                       /* X3 = EF, Y3 = GH */
	ret |= op_ed_mul(&r->y, g, h, p);                       /* T3 = EH, Z3 = FG */
	ret |= op_ed_mul(&r->t, e, h, p);
	ret |= op_ed_mul(&r->z, f, g, p);
	return ret;
}

static int op_ed25519_public(const uint8_t seed[32], uint8_t pub[32])
{
	/* p, d and the base point B = (x, 4/5) of RFC 8032 section 5.1, big-endian. */
	static const uint8_t ed[4][32] = {
		{
		  0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
		  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
		  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
		  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xED,
		},
		{
		  0x52, 0x03, 0x6C, 0xEE, 0x2B, 0x6F, 0xFE, 0x73,
		  0x8C, 0xC7, 0x40, 0x79, 0x77, 0x79, 0xE8, 0x98,
		  0x00, 0x70, 0x0A, 0x4D, 0x41, 0x41, 0xD8, 0xAB,
		  0x75, 0xEB, 0x4D, 0xCA, 0x13, 0x59, 0x78, 0xA3,
		},
		{
		  0x21, 0x69, 0x36, 0xD3, 0xCD, 0x6E, 0x53, 0xFE,
		  0xC0, 0xA4, 0xE2, 0x31, 0xFD, 0xD6, 0xDC, 0x5C,
		  0x69, 0x2C, 0xC7, 0x60, 0x95, 0x25, 0xA7, 0xB2,
		  0xC9, 0x56, 0x2D, 0x60, 0x8F, 0x25, 0xD5, 0x1A,
		},
		{
		  0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
		  0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
		  0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
		  0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x58,
		},
	};
	mbedtls_mpi k[4], tmp[8], s, zi;            /* k: p, 2d, Bx, By */
	struct op_ed_pt q, b;
	uint8_t h[64];
	size_t hl = 0;
	int ret = psa_hash_compute(PSA_ALG_SHA_512, seed, 32, h, sizeof h, &hl) == PSA_SUCCESS &&
		  hl == 64 ? 0 : -1;

	mbedtls_mpi_init(&s);
	mbedtls_mpi_init(&zi);
	for (int i = 0; i < 4; i++)
		mbedtls_mpi_init(&k[i]);
	for (int i = 0; i < 8; i++)
		mbedtls_mpi_init(&tmp[i]);
	mbedtls_mpi *pts[] = { &q.x, &q.y, &q.z, &q.t, &b.x, &b.y, &b.z, &b.t };
	for (size_t i = 0; i < ARRAY_LEN(pts); i++)
		mbedtls_mpi_init(pts[i]);
	h[0] &= 248;
	h[31] &= 127;
	h[31] |= 64;
	for (int i = 0; i < 4 && !ret; i++)
		ret = mbedtls_mpi_read_binary(&k[i], ed[i], 32);
	if (!ret)
		ret = mbedtls_mpi_read_binary_le(&s, h, 32) | mbedtls_mpi_shift_l(&k[1], 1) |
		      op_ed_mod(&k[1], &k[0]) |
		      mbedtls_mpi_copy(&b.x, &k[2]) | mbedtls_mpi_copy(&b.y, &k[3]) |
		      mbedtls_mpi_lset(&b.z, 1) | op_ed_mul(&b.t, &k[2], &k[3], &k[0]) |
		      mbedtls_mpi_lset(&q.x, 0) | mbedtls_mpi_lset(&q.y, 1) |
		      mbedtls_mpi_lset(&q.z, 1) | mbedtls_mpi_lset(&q.t, 0);
	for (int i = 254; i >= 0 && !ret; i--) {
		ret = op_ed_add(&q, &q, &q, &k[1], &k[0], tmp);
		if (!ret && mbedtls_mpi_get_bit(&s, (size_t)i))
			ret = op_ed_add(&q, &q, &b, &k[1], &k[0], tmp);
	}
	if (!ret)
		ret = mbedtls_mpi_inv_mod(&zi, &q.z, &k[0]) | op_ed_mul(&q.x, &q.x, &zi, &k[0]) |
		      op_ed_mul(&q.y, &q.y, &zi, &k[0]) | mbedtls_mpi_write_binary_le(&q.y, pub, 32);
	if (!ret)
		pub[31] |= (uint8_t)(mbedtls_mpi_get_bit(&q.x, 0) << 7);
	wipe(h, sizeof h);
	mbedtls_mpi_free(&s);                   /* mbedtls_mpi_free zeroizes */
	mbedtls_mpi_free(&zi);
	for (int i = 0; i < 4; i++)
		mbedtls_mpi_free(&k[i]);
	for (int i = 0; i < 8; i++)
		mbedtls_mpi_free(&tmp[i]);
	for (size_t i = 0; i < ARRAY_LEN(pts); i++)
		mbedtls_mpi_free(pts[i]);
	return ret ? -1 : 0;
}

/*
 * An Ed25519 private key in PKCS#8 (RFC 8410 section 7, RFC 5958):
 *   OneAsymmetricKey ::= SEQUENCE { version INTEGER, privateKeyAlgorithm SEQUENCE { id-Ed25519 },
 *       privateKey OCTET STRING { CurvePrivateKey OCTET STRING (32 bytes) },
 *       attributes [0] OPTIONAL, publicKey [1] IMPLICIT BIT STRING OPTIONAL }
 * into im, with the public key computed from it (and a given one checked against it).
 */
static uint32_t op_ed25519_key(struct op_req *q, const uint8_t *der, size_t n, struct p11_import *im)
{
	const struct p11_alg *row = p11_alg_of(CKK_EC_EDWARDS, P11_CURVE_ED25519);
	struct buf_rd r;
	size_t len, klen;
	const uint8_t *seed = NULL, *given = NULL;

	buf_rd_init(&r, der, n);
	if (row && op_der_tl(&r, 0x30, &len) == 0 && op_der_tl(&r, 0x02, &len) == 0 &&
	    buf_take(&r, len) && op_der_tl(&r, 0x30, &len) == 0 && buf_take(&r, len) &&
	    op_der_tl(&r, 0x04, &len) == 0 && op_der_tl(&r, 0x04, &klen) == 0 && klen == 32)
		seed = buf_take(&r, 32);
	if (seed && r.p < r.end && r.p[0] == 0xA0 && (op_der_tl(&r, 0xA0, &len) != 0 ||
						      !buf_take(&r, len)))
		seed = NULL;
	if (seed && r.p < r.end && (op_der_tl(&r, 0x81, &len) != 0 || len != 33 ||
				    !(given = buf_take(&r, 33)) || given[0] != 0))
		seed = NULL;
	if (!seed || r.p != r.end)
		return op_fail(q, RR_INVALID_FIELD, "Key Material is not an Ed25519 private key "
			       "in PKCS#8 (RFC 8410)");
	im->type = CKK_EC_EDWARDS;
	im->curve = P11_CURVE_ED25519;
	im->has_private = 1;
	memcpy(im->scalar, seed, 32);
	im->scalar_len = 32;
	if (op_ed25519_public(im->scalar, im->point) != 0)
		return op_fail(q, RR_GENERAL_FAILURE, "cannot compute the Ed25519 public key");
	im->point_len = 32;
	if (given && memcmp(given + 1, im->point, 32) != 0)
		return op_fail(q, RR_INVALID_FIELD, "the public key given with the private key "
			       "does not match it");
	return 0;
}

/* Key Material as a Byte String: DER that Mbed TLS parses (PKCS#8 PrivateKeyInfo, PKCS#1
 * RSAPrivateKey, SEC1 / RFC 5915 ECPrivateKey; SubjectPublicKeyInfo, PKCS#1 RSAPublicKey),
 * and Ed25519 public keys, which it does not know. */
static uint32_t op_der_key(struct op_req *q, const uint8_t *der, size_t n, int priv,
			   struct p11_import *im)
{
	mbedtls_pk_context pk;
	int ret;
	uint32_t rr;

	size_t off;
	const struct p11_alg *ed = priv ? NULL : op_edwards_spki(der, n, &off);
	if (ed) {
		im->type = ed->type;
		im->curve = ed->curve;
		memcpy(im->point, der + off, ed->field);
		im->point_len = ed->field;
		return 0;
	}
	if (priv && op_der_encrypted(der, n))
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "encrypted PKCS#8 key material is not "
			       "supported: decrypt it first");
	int alg = op_der_alg(der, n);
	if (priv && alg == OP_DER_ED25519)
		return op_ed25519_key(q, der, n, im);
	if (alg == OP_DER_ED25519 || alg == OP_DER_ED448)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "%s keys are not supported (Ed25519 "
			       "private keys in PKCS#8, and Ed25519 public keys as SPKI)",
			       alg == OP_DER_ED448 ? "Ed448" : "Ed25519 public");
	if (alg == OP_DER_EC_CURVE)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "EC curve not supported (P-256, P-384, "
			       "P-521 only)");
	if (alg == OP_DER_OTHER_ALG)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "key algorithm not supported (RSA, EC and "
			       "Ed25519 keys)");
	mbedtls_pk_init(&pk);
	ret = priv ? mbedtls_pk_parse_key(&pk, der, n, NULL, 0, mbedtls_psa_get_random,
					  MBEDTLS_PSA_RANDOM_STATE)
		   : mbedtls_pk_parse_public_key(&pk, der, n);
	if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED)
		rr = op_fail(q, RR_FEATURE_NOT_SUPPORTED, "encrypted key material is not supported");
	else if (ret == MBEDTLS_ERR_PK_UNKNOWN_PK_ALG)
		rr = op_fail(q, RR_FEATURE_NOT_SUPPORTED, "key algorithm not supported (RSA, EC and "
			     "Ed25519 keys)");
	else if (ret == MBEDTLS_ERR_PK_UNKNOWN_NAMED_CURVE || ret == MBEDTLS_ERR_ECP_FEATURE_UNAVAILABLE ||
		 ret == MBEDTLS_ERR_PK_FEATURE_UNAVAILABLE)
		rr = op_fail(q, RR_FEATURE_NOT_SUPPORTED, "EC curve not supported (P-256, P-384, "
			     "P-521 only)");
	else if (ret != 0)
		rr = op_fail(q, RR_INVALID_FIELD, "Key Material is not a %s key in DER (-0x%04X)",
			     priv ? "private" : "public", (unsigned)-ret);
	else
		rr = op_pk_out(q, &pk, priv, im);
	mbedtls_pk_free(&pk);
	return rr;
}

/*
 * Key Material as a Structure (spec 2.1.7):
 *   Transparent RSA Private Key    Modulus, Private Exponent, Public Exponent, P, Q, Prime
 *                                  Exponent P, Prime Exponent Q, CRT Coefficient (Big
 *                                  Integers; Modulus required, then the Private Exponent
 *                                  or P and Q; the Public Exponent is needed here, as the
 *                                  public key is stored too)
 *   Transparent RSA Public Key     Modulus, Public Exponent
 *   Transparent ECDSA Private Key  Recommended Curve (Enumeration), D (Big Integer)
 *   Transparent ECDSA Public Key   Recommended Curve, Q String (Byte String: X9.62 point)
 */
static uint32_t op_transparent_key(struct op_req *q, const struct ttlv *m, uint32_t kft,
				   struct p11_import *im)
{
	uint32_t rr = 0;

	if (kft == KFT_TRANSPARENT_RSA_PRIVATE_KEY || kft == KFT_TRANSPARENT_RSA_PUBLIC_KEY) {
		int priv = kft == KFT_TRANSPARENT_RSA_PRIVATE_KEY;
		const struct ttlv *tn = ttlv_find(q->d, m, KT_MODULUS),
				  *te = ttlv_find(q->d, m, KT_PUBLIC_EXPONENT),
				  *td = ttlv_find(q->d, m, KT_PRIVATE_EXPONENT),
				  *tp = ttlv_find(q->d, m, KT_P), *tq = ttlv_find(q->d, m, KT_Q);
		if (!tn || !te || (priv && !td && !(tp && tq)))
			return op_fail(q, RR_INVALID_FIELD, "Transparent RSA key needs Modulus, "
				       "Public Exponent%s", priv ? " and Private Exponent or P and Q" : "");
		/* Each part into its slot of im first (bounds and sign checked), then Mbed TLS
		 * completes and checks the key. */
		if (op_bigint(tn, im->n, sizeof im->n, &im->n_len) ||
		    op_bigint(te, im->e, sizeof im->e, &im->e_len) ||
		    (td && op_bigint(td, im->d, sizeof im->d, &im->d_len)) ||
		    (tp && op_bigint(tp, im->p, sizeof im->p, &im->p_len)) ||
		    (tq && op_bigint(tq, im->q, sizeof im->q, &im->q_len)))
			return op_fail(q, RR_INVALID_FIELD, "Transparent RSA key part out of range");
		mbedtls_rsa_context rsa;
		mbedtls_rsa_init(&rsa);
		if (mbedtls_rsa_import_raw(&rsa, im->n, im->n_len, im->p_len ? im->p : NULL, im->p_len,
					   im->q_len ? im->q : NULL, im->q_len,
					   priv && im->d_len ? im->d : NULL, im->d_len,
					   im->e, im->e_len) != 0 ||
		    mbedtls_rsa_complete(&rsa) != 0 ||
		    (priv ? mbedtls_rsa_check_privkey(&rsa) : mbedtls_rsa_check_pubkey(&rsa)) != 0)
			rr = op_fail(q, RR_INVALID_FIELD, "Transparent RSA %s key is not consistent",
				     priv ? "private" : "public");
		else
			rr = op_rsa_out(q, &rsa, priv, im);
		mbedtls_rsa_free(&rsa);
		return rr;
	}

	/* ECDSA: the curve, then op_ec_key checks the value and computes or checks the point. */
	int priv = kft == KFT_TRANSPARENT_ECDSA_PRIVATE_KEY;
	uint32_t curve = 0, qs_len = 0;
	const uint8_t *qs = NULL;
	uint8_t d[66];
	size_t dl = 0;
	if (kmip_get_enum(q->d, m, KT_RECOMMENDED_CURVE, &curve) != 0)
		return op_fail(q, RR_INVALID_FIELD, "Transparent ECDSA key needs a Recommended Curve");
	int c = P11_CURVE_NONE;
	for (size_t i = 0; i < ARRAY_LEN(p11_algs); i++)
		if (curve && p11_algs[i].kmip_curve == curve)
			c = p11_algs[i].curve;
	if (c == P11_CURVE_NONE)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "EC curve %s not supported (P-256, "
			       "P-384, P-521 only)",
			       op_enum_name(KT_RECOMMENDED_CURVE, curve, (char[12]){ 0 }));
	if (priv && op_bigint(ttlv_find(q->d, m, KT_D), d, sizeof d, &dl) != 0)
		return op_fail(q, RR_INVALID_FIELD, "Transparent ECDSA Private Key needs D");
	if (!priv && kmip_get_bytes(q->d, m, KT_Q_STRING, &qs, &qs_len) != 0)
		return op_fail(q, RR_INVALID_FIELD, "Transparent ECDSA Public Key needs a Q String");
	rr = op_ec_key(q, c, priv ? d : NULL, dl, qs, qs_len, im);
	wipe(d, sizeof d);
	return rr;
}

/* Key Format Types Register reads, for private keys and public keys alone. */
static int op_kft_ok(uint32_t kft, int priv)
{
	if (priv)
		return kft == KFT_RAW || kft == KFT_PKCS_1 || kft == KFT_PKCS_8 ||
		       kft == KFT_EC_PRIVATE_KEY || kft == KFT_TRANSPARENT_RSA_PRIVATE_KEY ||
		       kft == KFT_TRANSPARENT_ECDSA_PRIVATE_KEY;
	return kft == KFT_RAW || kft == KFT_X_509 || kft == KFT_PKCS_1 ||
	       kft == KFT_TRANSPARENT_RSA_PUBLIC_KEY || kft == KFT_TRANSPARENT_ECDSA_PUBLIC_KEY;
}

/*
 * The key of a Private Key or Public Key object (spec 2.2.3, 2.2.4: a Key Block) into im.
 *
 *   Key Block (2.1.3):  Key Format Type          Enumeration  required
 *                       Key Compression Type     Enumeration  optional
 *                       Key Value                Byte String (wrapped) or Structure
 *                       Cryptographic Algorithm  Enumeration  optional here
 *                       Cryptographic Length     Integer      optional here
 *                       Key Wrapping Data        Structure    optional
 *   Key Value (2.1.4):  Key Material             Byte String or Structure (2.1.7)
 *                       Attribute*               optional (ignored)
 *
 * A PKCS#1 key must be RSA and an ECPrivateKey EC; Raw takes any DER form.  Algorithm and
 * length, when given, must be those of the key.
 */
static uint32_t op_key_block(struct op_req *q, const struct ttlv *obj, int priv,
			     struct p11_import *im)
{
	const struct ttlv *kb, *kv, *km;
	uint32_t kft, kct = 0, alg = 0, rr;
	int32_t len = 0;

	if (kmip_get_struct(q->d, obj, KT_KEY_BLOCK, &kb) != 0)
		return op_fail(q, RR_INVALID_MESSAGE, "the key object needs a Key Block");
	if (ttlv_find(q->d, kb, KT_KEY_WRAPPING_DATA))
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "wrapped key material (Key Wrapping "
			       "Data) is not supported");
	if (kmip_get_enum(q->d, kb, KT_KEY_FORMAT_TYPE, &kft) != 0)
		return op_fail(q, RR_INVALID_MESSAGE, "Key Block needs a Key Format Type");
	if (kmip_get_enum(q->d, kb, KT_KEY_COMPRESSION_TYPE, &kct) == KMIP_BAD_TYPE ||
	    kmip_get_enum(q->d, kb, KT_CRYPTOGRAPHIC_ALGORITHM, &alg) == KMIP_BAD_TYPE ||
	    kmip_get_int(q->d, kb, KT_CRYPTOGRAPHIC_LENGTH, &len) == KMIP_BAD_TYPE)
		return op_fail(q, RR_INVALID_MESSAGE, "malformed Key Block");
	if (kct && kct != KCT_EC_PUBLIC_KEY_TYPE_UNCOMPRESSED)
		return op_fail(q, RR_KEY_COMPRESSION_TYPE_NOT_SUPPORTED, "compressed keys are not "
			       "supported");
	if (!op_kft_ok(kft, priv))
		return op_fail(q, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED, "a %s key in %s is not "
			       "supported", priv ? "private" : "public",
			       op_enum_name(KT_KEY_FORMAT_TYPE, kft, (char[12]){ 0 }));
	if (!(kv = ttlv_find(q->d, kb, KT_KEY_VALUE)))
		return op_fail(q, RR_INVALID_MESSAGE, "Key Block needs a Key Value");
	if (kv->type == TT_BYTES)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "wrapped key material is not supported");
	if (kv->type != TT_STRUCT || !(km = ttlv_find(q->d, kv, KT_KEY_MATERIAL)))
		return op_fail(q, RR_INVALID_MESSAGE, "Key Value needs Key Material");

	int transparent = kft >= KFT_TRANSPARENT_SYMMETRIC_KEY;
	if (transparent != (km->type == TT_STRUCT) || (!transparent && km->type != TT_BYTES))
		return op_fail(q, RR_INVALID_MESSAGE, "Key Material of the wrong type for %s",
			       op_enum_name(KT_KEY_FORMAT_TYPE, kft, (char[12]){ 0 }));
	rr = transparent ? op_transparent_key(q, km, kft, im)
			 : op_der_key(q, km->val, km->len, priv, im);
	if (rr)
		return rr;
	if (priv && !im->has_private)
		return op_fail(q, RR_INVALID_FIELD, "a Private Key object holds a public key");
	if ((kft == KFT_PKCS_1 && im->type != CKK_RSA) ||
	    (kft == KFT_EC_PRIVATE_KEY && im->type != CKK_EC))
		return op_fail(q, RR_INVALID_FIELD, "Key Material is not what %s holds",
			       op_enum_name(KT_KEY_FORMAT_TYPE, kft, (char[12]){ 0 }));

	const struct p11_alg *row = p11_alg_of(im->type, im->curve);
	unsigned bits = row ? row->bits : 0;
	if (im->type == CKK_RSA) {
		/* n has no leading zero byte (op_mpi_out); count the bits of its first one. */
		bits = (unsigned)(8 * im->n_len);
		for (unsigned top = im->n[0]; top && !(top & 0x80); top <<= 1)
			bits--;
	}
	if (alg && row && !p11_alg_is(row, alg))
		return op_fail(q, RR_INVALID_FIELD, "Cryptographic Algorithm %s does not match the "
			       "key material", op_enum_name(KT_CRYPTOGRAPHIC_ALGORITHM, alg,
							    (char[12]){ 0 }));
	if (len && (unsigned)len != bits && !(im->type == CKK_EC_EDWARDS && len == 256))
		return op_fail(q, RR_INVALID_FIELD, "Cryptographic Length %d does not match the key "
			       "material (%u bits)", (int)len, bits);
	return 0;
}

/*
 * Register (spec 4.3).
 *
 *   Request payload:   Object Type             Enumeration  required
 *                      Template-Attribute      Structure    required (may be empty)
 *                      Certificate, Symmetric Key, Private Key, Public Key, Split Key,
 *                      Template, Secret Data or Opaque Object: the object, required
 *   Response payload:  Unique Identifier       Text String  required
 *                      Template-Attribute      Structure    optional (none here)
 *
 * A Private Key is stored as a key pair: the private key, sensitive and not extractable,
 * and the public key computed from it (by Mbed TLS; an Ed25519 one here, RFC 8032),
 * sharing a fresh CKA_ID; the Unique Identifier is the private key's, the public one the
 * same hex with _pub.  A Public Key alone is stored
 * as a public key (its UID _pub).  Template attributes read: Name (-> CKA_LABEL of both
 * halves), Cryptographic Usage Mask (Sign -> CKA_SIGN; Verify or Sign -> CKA_VERIFY of the
 * public half; without a mask, both).  Other objects are refused: the daemon serves key
 * pairs.  Every copy of the key material made here is wiped; the request buffer is wiped
 * when its job is returned (wrk_job_put).
 */
static uint32_t op_register(struct op_req *q, const struct ttlv *pl)
{
	struct p11_import im;
	const struct ttlv *tmpl = NULL, *obj, *v;
	uint32_t ot = 0, rr;
	char otn[12];

	if (!pl || kmip_get_enum(q->d, pl, KT_OBJECT_TYPE, &ot) != 0)
		return op_fail(q, RR_INVALID_MESSAGE, "Register needs an Object Type");
	if (ot != OT_PRIVATE_KEY && ot != OT_PUBLIC_KEY)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "%s objects cannot be registered: "
			       "private and public keys only", op_enum_name(KT_OBJECT_TYPE, ot, otn));
	int priv = ot == OT_PRIVATE_KEY;
	if (kmip_get_struct(q->d, pl, priv ? KT_PRIVATE_KEY : KT_PUBLIC_KEY, &obj) != 0)
		return op_fail(q, RR_INVALID_MESSAGE, "Register of a %s needs that object",
			       op_enum_name(KT_OBJECT_TYPE, ot, otn));
	if (kmip_get_struct(q->d, pl, KT_TEMPLATE_ATTRIBUTE, &tmpl) == KMIP_BAD_TYPE)
		return op_fail(q, RR_INVALID_MESSAGE, "malformed Template-Attribute");

	memset(&im, 0, sizeof im);
	im.sign = im.verify = 1;
	if ((rr = op_name(q, kmip_attr_value(q->d, tmpl, "Name", 0), &im.label, &im.label_len)))
		goto out;
	if ((v = kmip_attr_value(q->d, tmpl, "Cryptographic Usage Mask", 0))) {
		if (v->type != TT_INT) {
			rr = op_fail(q, RR_INVALID_FIELD, "Cryptographic Usage Mask must be an Integer");
			goto out;
		}
		im.sign = (v->num & UM_SIGN) != 0;
		im.verify = (v->num & (priv ? UM_SIGN | UM_VERIFY : UM_VERIFY)) != 0;
	}
	if ((rr = op_key_block(q, obj, priv, &im)))
		goto out;

	const struct p11_alg *row = p11_alg_of(im.type, im.curve);
	if (priv && row && !p11_slot_can_sign(q->slot, row)) {
		rr = op_fail(q, RR_FEATURE_NOT_SUPPORTED, "the token cannot sign with %s keys",
			     row->name);
		goto out;
	}
	uint8_t id[P11_ID_LEN];
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_OBJECT_CLASS failed = 0;
	CK_RV rv = p11_import(q->h, &im, id, &hpub, &hpriv, &failed);
	if (rv != CKR_OK) {
		/* Some tokens import no keys at all (tpm2-pkcs11 makes RSA public keys only),
		 * and say so with a template error: name the half they refused. */
		rr = op_fail_rv(q, rv, failed == CKO_PRIVATE_KEY ? "C_CreateObject of the private "
				"key (does the token import keys?)" : "C_CreateObject of the public key");
		goto out;
	}
	CK_OBJECT_CLASS cls = priv ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, id, sizeof id, cls);
	hex_upper(q->placeholder, id, sizeof id);
	strcat(q->placeholder, priv ? "_priv" : "_pub");
	log_info("registered %s %s %s (%s)", row ? row->name : "?", priv ? "key pair" :
		 "public key", q->placeholder, im.label ? "named" : "unnamed");
out:
	wipe(&im, sizeof im);
	return rr;
}

/*
 * Get (spec 4.11).  Request: Unique Identifier, Key Format Type, Key Compression Type, Key
 * Wrapping Specification (all optional).  Response: Object Type, Unique Identifier, and
 * the object: Public Key { Key Block { Key Format Type, Key Value { Key Material },
 * Cryptographic Algorithm, Cryptographic Length } }.
 *
 * Formats: PKCS#1 RSAPublicKey (RSA's default: Cascade and PyKMIP both read it), X.509
 * SubjectPublicKeyInfo, Raw (a SubjectPublicKeyInfo: EC's default, the only EC form
 * Cascade reads), Transparent RSA Public Key, Transparent ECDSA Public Key.  Private keys
 * never leave the HSM.
 */
static uint32_t op_get(struct op_req *q, const struct ttlv *pl)
{
	struct op_key k;
	struct p11_key_info ki;
	uint32_t kft = 0, rr;
	const struct ttlv *ignored;

	if ((rr = op_find(q, pl, CKO_PUBLIC_KEY, &k)))
		return rr;
	if (k.cls == CKO_PRIVATE_KEY)
		return op_fail(q, RR_PERMISSION_DENIED, "private key material does not leave the HSM");
	if (pl && kmip_get_enum(q->d, pl, KT_KEY_FORMAT_TYPE, &kft) == KMIP_BAD_TYPE)
		return op_fail(q, RR_INVALID_MESSAGE, "Key Format Type must be an Enumeration");
	if (pl && kmip_get_struct(q->d, pl, KT_KEY_WRAPPING_SPECIFICATION, &ignored) != KMIP_ABSENT)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "key wrapping is not supported");
	if (pl && ttlv_find(q->d, pl, KT_KEY_COMPRESSION_TYPE))
		return op_fail(q, RR_KEY_COMPRESSION_TYPE_NOT_SUPPORTED, "keys are sent uncompressed");
	CK_RV rv = p11_key_info(q->h, k.obj, &ki);
	if (rv != CKR_OK)
		return op_fail_rv(q, rv, "C_GetAttributeValue");
	uint32_t alg = op_alg_of(&ki);
	int complete = ki.type == CKK_RSA ? ki.modulus_len && ki.exponent_len : ki.ec_point_len > 0;
	if (!alg || !complete)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "key type the daemon cannot export");
	if (!kft)
		kft = ki.type == CKK_RSA ? KFT_PKCS_1 : KFT_RAW;

	uint8_t mat[P11_MODULUS_MAX + P11_EXPONENT_MAX + 64];
	size_t n = 0;
	int transparent = 0;
	if (kft == KFT_PKCS_1 && ki.type == CKK_RSA) {
		struct der d = { mat, sizeof mat, 0, 0 };
		der_uint_pair(&d, ki.modulus, ki.modulus_len, ki.exponent, ki.exponent_len);
		n = d.err ? 0 : d.len;
	} else if (kft == KFT_X_509 || kft == KFT_RAW) {
		n = op_spki(&ki, mat, sizeof mat);
	} else if ((kft == KFT_TRANSPARENT_RSA_PUBLIC_KEY && ki.type == CKK_RSA) ||
		   (kft == KFT_TRANSPARENT_ECDSA_PUBLIC_KEY && ki.type == CKK_EC && op_kmip_curve(ki.curve))) {
		transparent = 1;
	} else {
		return op_fail(q, RR_KEY_FORMAT_TYPE_NOT_SUPPORTED, "%s of a %s key is not supported",
			       op_enum_name(KT_KEY_FORMAT_TYPE, kft, (char[12]){ 0 }),
			       op_enum_name(KT_CRYPTOGRAPHIC_ALGORITHM, alg, (char[12]){ 0 }));
	}
	if (!transparent && n == 0)
		return op_fail(q, RR_GENERAL_FAILURE, "public key does not fit");

	ttlv_put_enum(q->e, KT_OBJECT_TYPE, OT_PUBLIC_KEY);
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, CKO_PUBLIC_KEY);
	ttlv_open(q->e, KT_PUBLIC_KEY);
	ttlv_open(q->e, KT_KEY_BLOCK);
	ttlv_put_enum(q->e, KT_KEY_FORMAT_TYPE, kft);
	ttlv_open(q->e, KT_KEY_VALUE);
	if (!transparent) {
		ttlv_put_bytes(q->e, KT_KEY_MATERIAL, mat, n);
	} else if (ki.type == CKK_RSA) {
		ttlv_open(q->e, KT_KEY_MATERIAL);
		ttlv_put_bigint(q->e, KT_MODULUS, ki.modulus, ki.modulus_len);
		ttlv_put_bigint(q->e, KT_PUBLIC_EXPONENT, ki.exponent, ki.exponent_len);
		ttlv_close(q->e);
	} else {
		ttlv_open(q->e, KT_KEY_MATERIAL);
		ttlv_put_enum(q->e, KT_RECOMMENDED_CURVE, op_kmip_curve(ki.curve));
		ttlv_put_bytes(q->e, KT_Q_STRING, ki.ec_point, ki.ec_point_len);
		ttlv_close(q->e);
	}
	ttlv_close(q->e);
	ttlv_put_enum(q->e, KT_CRYPTOGRAPHIC_ALGORITHM, alg);
	ttlv_put_int(q->e, KT_CRYPTOGRAPHIC_LENGTH, (int32_t)ki.bits);
	ttlv_close(q->e);
	ttlv_close(q->e);
	return 0;
}

/*
 * Activate (spec 4.19).  Request and response: Unique Identifier.  Keys are usable from
 * creation in PKCS#11 and no state is kept outside the HSM, so this confirms the key exists.
 */
static uint32_t op_activate(struct op_req *q, const struct ttlv *pl)
{
	struct op_key k;
	uint32_t rr = op_find(q, pl, CKO_PRIVATE_KEY, &k);
	if (rr)
		return rr;
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, k.cls);
	return 0;
}

/*
 * Modify Attribute (spec 4.16).  Request: Unique Identifier, Attribute { Attribute Name,
 * Attribute Index, Attribute Value }.  Response: Unique Identifier, Attribute (as set).
 * Name is the one attribute with a home in the HSM (CKA_LABEL).
 */
static uint32_t op_modify_attribute(struct op_req *q, const struct ttlv *pl)
{
	struct op_key k;
	const struct ttlv *a, *nm, *v;
	const char *s;
	size_t n;
	uint32_t rr;

	if ((rr = op_find(q, pl, CKO_PRIVATE_KEY, &k)))
		return rr;
	if (kmip_get_struct(q->d, pl, KT_ATTRIBUTE, &a) != 0 ||
	    !(nm = ttlv_find(q->d, a, KT_ATTRIBUTE_NAME)) || !(v = ttlv_find(q->d, a, KT_ATTRIBUTE_VALUE)))
		return op_fail(q, RR_INVALID_MESSAGE, "Modify Attribute needs an Attribute");
	if (!kmip_text_is(nm, "Name"))
		return op_fail(q, RR_PERMISSION_DENIED, "only the Name of a key can be modified");
	if ((rr = op_name(q, v, &s, &n)) || (rr = op_confirm(q, &k)))
		return rr;
	CK_RV rv = p11_set_label(q->h, k.obj, s, n);
	if (rv != CKR_OK)     /* NetHSM: CKR_ATTRIBUTE_READ_ONLY, its labels are its key IDs */
		return op_fail_rv(q, rv, "C_SetAttributeValue CKA_LABEL");
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, k.cls);
	ttlv_put_item(q->e, q->d, a);
	return 0;
}

/* The hash of Cryptographic Parameters, by Hashing Algorithm or Digital Signature
 * Algorithm; -1 for one we do not sign with. */
static int op_hash(uint32_t hash, uint32_t dsa)
{
	switch (hash) {
	case HASH_SHA_256: return P11_HASH_SHA256;
	case HASH_SHA_384: return P11_HASH_SHA384;
	case HASH_SHA_512: return P11_HASH_SHA512;
	case 0: break;
	default: return -1;
	}
	switch (dsa) {
	case DSA_SHA256_WITH_RSA_ENCRYPTION: case DSA_ECDSA_WITH_SHA256: return P11_HASH_SHA256;
	case DSA_SHA384_WITH_RSA_ENCRYPTION: case DSA_ECDSA_WITH_SHA384: return P11_HASH_SHA384;
	case DSA_SHA512_WITH_RSA_ENCRYPTION: case DSA_ECDSA_WITH_SHA512: return P11_HASH_SHA512;
	case 0: return P11_HASH_NONE;
	}
	return -1;
}

/*
 * Sign (spec 4.31).  Request: Unique Identifier, Cryptographic Parameters { Padding
 * Method, Hashing Algorithm, Cryptographic Algorithm, Digital Signature Algorithm, ... },
 * Data (the raw message; the hash is made here or by the token).  Response: Unique Identifier,
 * Signature Data.  Without parameters: RSA PKCS#1 v1.5 with SHA-256, ECDSA with the
 * curve's hash (P-256: SHA-256), Ed25519 (PureEdDSA).
 */
static uint32_t op_sign(struct op_req *q, const struct ttlv *pl)
{
	struct op_key k;
	const struct ttlv *cp = NULL;
	const uint8_t *data;
	uint32_t len, hash = 0, dsa = 0, pad = 0, alg = 0, rr;

	if ((rr = op_find(q, pl, CKO_PRIVATE_KEY, &k)))
		return rr;
	if (k.cls != CKO_PRIVATE_KEY)
		return op_fail(q, RR_PERMISSION_DENIED, "a public key cannot sign");
	/* Revoke clears CKA_SIGN; not every module checks it before signing (tpm2-pkcs11's
	 * C_Sign does not), so the daemon does, from the attribute read with the key. */
	if (k.sign == 0)
		return op_fail(q, RR_PERMISSION_DENIED, "the key may not sign (CKA_SIGN is false: "
			       "revoked, or made without the Sign usage)");
	int rc = kmip_get_bytes(q->d, pl, KT_DATA, &data, &len);
	if (rc != 0)
		return op_fail(q, rc == KMIP_ABSENT ? RR_MISSING_DATA : RR_INVALID_MESSAGE,
			       "Sign needs Data (Byte String)");
	if (kmip_get_struct(q->d, pl, KT_CRYPTOGRAPHIC_PARAMETERS, &cp) == KMIP_BAD_TYPE ||
	    (cp && (kmip_get_enum(q->d, cp, KT_HASHING_ALGORITHM, &hash) == KMIP_BAD_TYPE ||
		    kmip_get_enum(q->d, cp, KT_DIGITAL_SIGNATURE_ALGORITHM, &dsa) == KMIP_BAD_TYPE ||
		    kmip_get_enum(q->d, cp, KT_PADDING_METHOD, &pad) == KMIP_BAD_TYPE ||
		    kmip_get_enum(q->d, cp, KT_CRYPTOGRAPHIC_ALGORITHM, &alg) == KMIP_BAD_TYPE)))
		return op_fail(q, RR_INVALID_MESSAGE, "malformed Cryptographic Parameters");

	int h = op_hash(hash, dsa);
	if (h < 0)
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "hashing algorithm not supported for Sign");
	switch (k.type) {
	case CKK_RSA:
		if ((alg && alg != ALG_RSA) || (pad && pad != PAD_PKCS1_V1_5) ||
		    (dsa && dsa != DSA_SHA256_WITH_RSA_ENCRYPTION && dsa != DSA_SHA384_WITH_RSA_ENCRYPTION &&
		     dsa != DSA_SHA512_WITH_RSA_ENCRYPTION))
			return op_fail(q, RR_INVALID_FIELD, "an RSA key signs with PKCS#1 v1.5 padding");
		if (h == P11_HASH_NONE)
			h = P11_HASH_SHA256;
		break;
	case CKK_EC:
		if ((alg && alg != ALG_ECDSA && alg != ALG_EC) ||
		    (dsa && dsa != DSA_ECDSA_WITH_SHA256 && dsa != DSA_ECDSA_WITH_SHA384 &&
		     dsa != DSA_ECDSA_WITH_SHA512))
			return op_fail(q, RR_INVALID_FIELD, "an EC key signs with ECDSA");
		if (h == P11_HASH_NONE && p11_alg_of(k.type, k.curve))
			h = p11_alg_of(k.type, k.curve)->hash;
		if (h == P11_HASH_NONE)
			h = P11_HASH_SHA256;
		break;
	case CKK_EC_EDWARDS:
		if ((alg && alg != ALG_ED25519) || dsa || h != P11_HASH_NONE)
			return op_fail(q, RR_INVALID_FIELD, "an Ed25519 key signs the message itself "
				       "(no hashing algorithm)");
		break;
	default:
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "key type 0x%lx cannot sign here",
			       (unsigned long)k.type);
	}
	uint8_t sig[P11_SIG_MAX];
	size_t siglen;
	const char *call;
	CK_RV rv = p11_sign(q->h, q->slot, &call, k.obj, k.type, h, data, len, sig, sizeof sig,
			    &siglen);
	if (rv != CKR_OK)
		return op_fail_rv(q, rv, call);
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, k.cls);
	ttlv_put_bytes(q->e, KT_SIGNATURE_DATA, sig, siglen);
	return 0;
}

/*
 * Destroy (spec 4.21).  Request and response: Unique Identifier.  The half the UID names
 * is removed from the token (Cascade destroys the private, then the public key); a bare
 * CKA_ID is refused, so that one request never removes what the client did not name.
 */
static uint32_t op_destroy(struct op_req *q, const struct ttlv *pl)
{
	struct op_key k;
	uint32_t rr = op_find(q, pl, 0, &k);
	if (rr || (rr = op_confirm(q, &k)))
		return rr;
	CK_RV rv = p11_destroy(q->h, k.obj);
	if (rv != CKR_OK)
		return op_fail_rv(q, rv, "C_DestroyObject");
	__atomic_fetch_add(&op_generation, 1, __ATOMIC_RELEASE);
	log_info("destroyed %s", k.uid);
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, k.cls);
	return 0;
}

/*
 * Locate (spec 4.9).  Request: Maximum Items, Storage Status Mask, Object Group Member,
 * Attribute*.  Response: Unique Identifier* of the keys that match every attribute given.
 * The attributes a token can search on: Object Type (-> CKA_CLASS), Name (-> CKA_LABEL),
 * Cryptographic Algorithm (-> CKA_KEY_TYPE); and Digest { Hashing Algorithm SHA-256,
 * Digest Value }, compared here with the SHA-256 of each candidate's public key (at most
 * OP_LOCATE_MAX candidates of each class); another one is Feature Not Supported rather
 * than a silently wider answer.  Objects without a CKA_ID have no UID and are left out.
 * The first UID found becomes the batch's ID Placeholder.
 */
#define OP_LOCATE_MAX 256

static uint32_t op_locate(struct op_req *q, const struct ttlv *pl)
{
	CK_OBJECT_CLASS classes[2] = { CKO_PRIVATE_KEY, CKO_PUBLIC_KEY };
	CK_KEY_TYPE type = 0;
	int nclasses = 2, have_type = 0;
	const char *label = NULL;
	size_t label_len = 0;
	int32_t max = OP_LOCATE_MAX;
	uint32_t rr, dh = 0;
	const uint8_t *digest = NULL;
	uint32_t digest_len = 0;

	if (pl && kmip_get_int(q->d, pl, KT_MAXIMUM_ITEMS, &max) == KMIP_BAD_TYPE)
		return op_fail(q, RR_INVALID_MESSAGE, "Maximum Items must be an Integer");
	if (max <= 0 || max > OP_LOCATE_MAX)
		max = OP_LOCATE_MAX;
	if (pl && ttlv_find(q->d, pl, KT_OBJECT_GROUP_MEMBER))
		return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "object groups are not supported");
	for (int i = pl ? pl->child : -1; i >= 0; i = q->d->it[i].next) {
		const struct ttlv *a = &q->d->it[i], *nm, *v;
		if (a->tag != KT_ATTRIBUTE)
			continue;
		if (a->type != TT_STRUCT || !(nm = ttlv_find(q->d, a, KT_ATTRIBUTE_NAME)) ||
		    !(v = ttlv_find(q->d, a, KT_ATTRIBUTE_VALUE)))
			return op_fail(q, RR_INVALID_MESSAGE, "malformed Attribute");
		if (kmip_text_is(nm, "Object Type") && v->type == TT_ENUM) {
			if (v->num != OT_PUBLIC_KEY && v->num != OT_PRIVATE_KEY)
				return 0;       /* no other objects live here */
			classes[0] = v->num == OT_PUBLIC_KEY ? CKO_PUBLIC_KEY : CKO_PRIVATE_KEY;
			nclasses = 1;
		} else if (kmip_text_is(nm, "Name")) {
			if ((rr = op_name(q, v, &label, &label_len)))
				return rr;
		} else if (kmip_text_is(nm, "Cryptographic Algorithm") && v->type == TT_ENUM) {
			have_type = 0;
			for (size_t j = 0; j < ARRAY_LEN(p11_algs) && !have_type; j++)
				if (p11_alg_is(&p11_algs[j], (uint32_t)v->num)) {
					type = p11_algs[j].type;
					have_type = 1;
				}
			if (!have_type)
				return 0;       /* no key of another algorithm is served */
		} else if (kmip_text_is(nm, "Digest")) {
			if (v->type != TT_STRUCT ||
			    kmip_get_bytes(q->d, v, KT_DIGEST_VALUE, &digest, &digest_len) != 0 ||
			    kmip_get_enum(q->d, v, KT_HASHING_ALGORITHM, &dh) == KMIP_BAD_TYPE)
				return op_fail(q, RR_INVALID_FIELD, "Digest needs a Digest Value");
			if (dh != HASH_SHA_256)
				return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "Digest: SHA-256 only");
		} else {
			char n[64];
			snprintf(n, sizeof n, "%.*s", (int)(nm->len < 48 ? nm->len : 48), (const char *)nm->val);
			return op_fail(q, RR_FEATURE_NOT_SUPPORTED, "Locate by '%s' is not supported", n);
		}
	}

	int found_any = 0;
	for (int c = 0; c < nclasses && max > 0; c++) {
		CK_OBJECT_HANDLE obj[OP_LOCATE_MAX];
		CK_ATTRIBUTE t[3] = { { CKA_CLASS, &classes[c], sizeof classes[c] } };
		CK_ULONG nt = 1, count;
		if (label)
			t[nt++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label, label_len };
		if (have_type)
			t[nt++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &type, sizeof type };
		CK_RV rv = p11_find(q->h, t, nt, obj, digest ? OP_LOCATE_MAX : (CK_ULONG)max, &count);
		if (rv != CKR_OK)
			return op_fail_rv(q, rv, "C_FindObjects");
		for (CK_ULONG i = 0; i < count && max > 0; i++) {
			uint8_t id[P11_ID_MAX];
			CK_ATTRIBUTE ta = { CKA_ID, id, sizeof id };
			if (P11_F->C_GetAttributeValue(q->h, obj[i], &ta, 1) != CKR_OK ||
			    ta.ulValueLen == 0 || ta.ulValueLen > sizeof id)
				continue;
			if (digest) {
				struct p11_key_info ki;
				uint8_t dv[32];
				if (p11_key_info(q->h, obj[i], &ki) != CKR_OK ||
				    op_key_digest(&ki, dv) != 0 || digest_len != sizeof dv ||
				    memcmp(dv, digest, sizeof dv) != 0)
					continue;
			}
			op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, id, ta.ulValueLen, classes[c]);
			if (!found_any++) {
				hex_upper(q->placeholder, id, ta.ulValueLen);
				strcat(q->placeholder, classes[c] == CKO_PRIVATE_KEY ? "_priv" : "_pub");
			}
			max--;
		}
	}
	if (!found_any) {
		/* Nothing, or a token that could not look: see op_key_lookup. */
		CK_RV rv = p11_token_check(q->slot);
		if (rv != CKR_OK)
			return op_fail_slot(q, rv, OP_EMPTY_FIND);
	}
	return 0;
}

/*
 * Revoke (spec 4.20).  Request: Unique Identifier, Revocation Reason { Revocation Reason
 * Code, Revocation Message }, Compromise Occurrence Date.  Response: Unique Identifier.
 * The state lives in the HSM: the key loses its function (CKA_SIGN false on a private
 * key, CKA_VERIFY false on a public one), so the token itself refuses to sign with it
 * from now on, and its State reads Deactivated.  A token that will not change the
 * attribute answers Permission Denied.
 */
static uint32_t op_revoke(struct op_req *q, const struct ttlv *pl)
{
	struct op_key k;
	const struct ttlv *reason;
	uint32_t rr = op_find(q, pl, 0, &k);
	if (rr)
		return rr;
	if (!pl || kmip_get_struct(q->d, pl, KT_REVOCATION_REASON, &reason) != 0)
		return op_fail(q, RR_INVALID_MESSAGE, "Revoke needs a Revocation Reason");
	if ((rr = op_confirm(q, &k)))
		return rr;
	CK_RV rv = p11_set_bool(q->h, k.obj, k.cls == CKO_PRIVATE_KEY ? CKA_SIGN : CKA_VERIFY, 0);
	if (rv != CKR_OK)
		return op_fail_rv(q, rv, "C_SetAttributeValue");
	__atomic_fetch_add(&op_generation, 1, __ATOMIC_RELEASE);     /* every CKA_SIGN cached */
	log_info("revoked %s", k.uid);
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, k.cls);
	return 0;
}

/* Attributes a key has, by KMIP name, in the order Get Attribute List gives them.  Those
 * from OP_ATTR_BY_NAME on are answered when asked for by name (and listed by Get Attribute
 * List), not in a Get Attributes without names: a client that reads the whole answer may
 * not know them (PyKMIP 0.10 cannot decode a Link). */
static const char *const op_attr_names[] = {
	"Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
	"Cryptographic Usage Mask", "State", "Name", "Link", "Digest", "Initial Date",
};
enum { OP_ATTR_NAME = 6, OP_ATTR_LINK, OP_ATTR_DIGEST, OP_ATTR_INITIAL_DATE,
       OP_ATTR_BY_NAME = OP_ATTR_LINK };

/* The attributes a migration compares, which cost PKCS#11 calls or a hash: read only
 * when asked for. */
struct op_attr_extra {
	int link;                       /* the other half of the pair exists */
	int digest;                     /* digest holds SHA-256 of the public key's SPKI */
	uint8_t digest_value[32];
	int initial;                    /* CKA_START_DATE is set: initial_date */
	int64_t initial_date;
};

/* CK_DATE "YYYYMMDD" as POSIX seconds at 00:00 UTC; -1 if empty or not a date. */
static int64_t op_ck_date(const CK_DATE *d)
{
	uint8_t c[8];
	int v[8];
	memcpy(c, d->year, 4);
	memcpy(c + 4, d->month, 2);
	memcpy(c + 6, d->day, 2);
	for (int i = 0; i < 8; i++) {
		if (c[i] < '0' || c[i] > '9')
			return -1;
		v[i] = c[i] - '0';
	}
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3] - 1900;
	tm.tm_mon = v[4] * 10 + v[5] - 1;
	tm.tm_mday = v[6] * 10 + v[7];
	if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31)
		return -1;
	return (int64_t)timegm(&tm);
}

/* Link, Digest and Initial Date of a key.  CKA_START_DATE is read from the key, else
 * from its other half: SoftHSM 2.6 answers CKR_GENERAL_ERROR for it on a private key
 * that has one (both halves of an imported pair carry the same date). */
static CK_RV op_attr_extra(struct op_req *q, const struct op_key *k,
			   const struct p11_key_info *ki, struct op_attr_extra *x)
{
	CK_OBJECT_HANDLE other = CK_INVALID_HANDLE;
	CK_DATE date;
	CK_ATTRIBUTE t = { CKA_START_DATE, &date, sizeof date };

	memset(x, 0, sizeof *x);
	CK_RV rv = p11_find_key(q->h, k->id, k->id_len,
				k->cls == CKO_PRIVATE_KEY ? CKO_PUBLIC_KEY : CKO_PRIVATE_KEY, &other);
	if (rv != CKR_OK && rv != P11_E_NOT_FOUND)
		return rv;
	x->link = rv == CKR_OK;
	x->digest = op_key_digest(ki, x->digest_value) == 0;
	rv = P11_F->C_GetAttributeValue(q->h, k->obj, &t, 1);
	if (rv != CKR_OK && !p11_session_lost(rv) && x->link) {
		t.ulValueLen = sizeof date;
		rv = P11_F->C_GetAttributeValue(q->h, other, &t, 1);
	}
	if (p11_session_lost(rv))
		return rv;
	x->initial_date = rv == CKR_OK && t.ulValueLen == sizeof date ? op_ck_date(&date) : -1;
	x->initial = x->initial_date >= 0;
	return CKR_OK;
}

/* A key's CKA_LABEL is its Name, when it is a Text String KMIP can carry: another tool may
 * have labelled it with bytes that are not UTF-8. */
static int op_has_name(const struct p11_key_info *ki)
{
	return ki->label_len > 0 &&
	       ttlv_check_utf8((const uint8_t *)ki->label, ki->label_len) == 0;
}

/* Active while the key may do its half's job (sign, verify); Revoke takes that away. */
static uint32_t op_state(const struct op_key *k, const struct p11_key_info *ki)
{
	int able = k->cls == CKO_PRIVATE_KEY ? ki->sign : ki->verify;
	return able == 0 ? ST_DEACTIVATED : ST_ACTIVE;
}

/* Does the key have attribute `which`? */
static int op_has_attr(const struct p11_key_info *ki, const struct op_attr_extra *x, size_t which)
{
	switch (which) {
	case 2: return op_alg_of(ki) != 0;
	case 3: return ki->bits != 0;
	case OP_ATTR_NAME: return op_has_name(ki);
	case OP_ATTR_LINK: return x->link;
	case OP_ATTR_DIGEST: return x->digest;
	case OP_ATTR_INITIAL_DATE: return x->initial;
	}
	return 1;
}

/*
 * One attribute of a key into an Attribute structure; 0 if the key does not have it.
 *   Link (spec 3.35):   Link Type (Enumeration: Public Key Link from a private key, Private
 *                       Key Link from a public one), Linked Object Identifier (Text String)
 *   Digest (3.17):      Hashing Algorithm (SHA-256), Digest Value (Byte String), Key Format
 *                       Type (X.509: of the SubjectPublicKeyInfo hashed; 1.1 on)
 *   Initial Date (3.23): Date-Time, from CKA_START_DATE
 */
static int op_put_attr(struct op_req *q, const struct op_key *k, const struct p11_key_info *ki,
		       const struct op_attr_extra *x, size_t which)
{
	const char *name = op_attr_names[which];
	if (!op_has_attr(ki, x, which))
		return 0;
	ttlv_open(q->e, KT_ATTRIBUTE);
	ttlv_put_text(q->e, KT_ATTRIBUTE_NAME, name, strlen(name));
	switch (which) {
	case 0: op_put_uid(q->e, KT_ATTRIBUTE_VALUE, k->id, k->id_len, k->cls); break;
	case 1: ttlv_put_enum(q->e, KT_ATTRIBUTE_VALUE, k->cls == CKO_PRIVATE_KEY ?
			      OT_PRIVATE_KEY : OT_PUBLIC_KEY); break;
	case 2: ttlv_put_enum(q->e, KT_ATTRIBUTE_VALUE, op_alg_of(ki)); break;
	case 3: ttlv_put_int(q->e, KT_ATTRIBUTE_VALUE, (int32_t)ki->bits); break;
	case 4: ttlv_put_int(q->e, KT_ATTRIBUTE_VALUE, (ki->sign == 1 ? UM_SIGN : 0) |
			     (ki->verify == 1 ? UM_VERIFY : 0)); break;
	case 5: ttlv_put_enum(q->e, KT_ATTRIBUTE_VALUE, op_state(k, ki)); break;
	case OP_ATTR_NAME:
		ttlv_open(q->e, KT_ATTRIBUTE_VALUE);
		ttlv_put_text(q->e, KT_NAME_VALUE, ki->label, ki->label_len);
		ttlv_put_enum(q->e, KT_NAME_TYPE, NT_UNINTERPRETED_TEXT_STRING);
		ttlv_close(q->e);
		break;
	case OP_ATTR_LINK:
		ttlv_open(q->e, KT_ATTRIBUTE_VALUE);
		ttlv_put_enum(q->e, KT_LINK_TYPE, k->cls == CKO_PRIVATE_KEY ? LT_PUBLIC_KEY_LINK :
			      LT_PRIVATE_KEY_LINK);
		op_put_uid(q->e, KT_LINKED_OBJECT_IDENTIFIER, k->id, k->id_len,
			   k->cls == CKO_PRIVATE_KEY ? CKO_PUBLIC_KEY : CKO_PRIVATE_KEY);
		ttlv_close(q->e);
		break;
	case OP_ATTR_DIGEST:
		ttlv_open(q->e, KT_ATTRIBUTE_VALUE);
		ttlv_put_enum(q->e, KT_HASHING_ALGORITHM, HASH_SHA_256);
		ttlv_put_bytes(q->e, KT_DIGEST_VALUE, x->digest_value, sizeof x->digest_value);
		if (q->r->minor >= 1)
			ttlv_put_enum(q->e, KT_KEY_FORMAT_TYPE, KFT_X_509);
		ttlv_close(q->e);
		break;
	case OP_ATTR_INITIAL_DATE:
		ttlv_put_datetime(q->e, KT_ATTRIBUTE_VALUE, x->initial_date);
		break;
	}
	ttlv_close(q->e);
	return 1;
}

/*
 * Get Attributes (spec 4.12).  Request: Unique Identifier, Attribute Name*.  Response:
 * Unique Identifier, Attribute*: those asked for that the key has (all, with no names);
 * a name we do not know is left out, as the spec says.
 * Get Attribute List (4.13) shares the lookup and answers with the names only.
 */
static uint32_t op_attributes(struct op_req *q, const struct ttlv *pl, int names_only)
{
	struct op_key k;
	struct p11_key_info ki;
	uint32_t rr = op_find(q, pl, CKO_PRIVATE_KEY, &k);
	if (rr)
		return rr;
	CK_RV rv = p11_key_info(q->h, k.obj, &ki);
	if (rv != CKR_OK)
		return op_fail_rv(q, rv, "C_GetAttributeValue");
	/* The costly attributes only when named (or listed). */
	struct op_attr_extra x;
	int extra = names_only;
	memset(&x, 0, sizeof x);
	for (int i = pl ? pl->child : -1; i >= 0 && !extra; i = q->d->it[i].next)
		for (size_t w = OP_ATTR_BY_NAME; w < ARRAY_LEN(op_attr_names); w++)
			if (q->d->it[i].tag == KT_ATTRIBUTE_NAME && kmip_text_is(&q->d->it[i], op_attr_names[w]))
				extra = 1;
	if (extra && (rv = op_attr_extra(q, &k, &ki, &x)) != CKR_OK)
		return op_fail_rv(q, rv, "C_GetAttributeValue");
	op_put_uid(q->e, KT_UNIQUE_IDENTIFIER, k.id, k.id_len, k.cls);
	int asked = 0;
	if (!names_only)
		for (int i = pl->child; i >= 0; i = q->d->it[i].next) {
			const struct ttlv *a = &q->d->it[i];
			if (a->tag != KT_ATTRIBUTE_NAME)
				continue;
			asked = 1;
			for (size_t w = 0; w < ARRAY_LEN(op_attr_names); w++)
				if (kmip_text_is(a, op_attr_names[w]))
					op_put_attr(q, &k, &ki, &x, w);
		}
	if (asked)
		return 0;
	for (size_t w = 0; w < ARRAY_LEN(op_attr_names); w++) {
		if (!names_only) {
			if (w < OP_ATTR_BY_NAME)
				op_put_attr(q, &k, &ki, &x, w);
		} else if (op_has_attr(&ki, &x, w)) {
			const char *s = op_attr_names[w];
			ttlv_put_text(q->e, KT_ATTRIBUTE_NAME, s, strlen(s));
		}
	}
	return 0;
}

static uint32_t op_get_attributes(struct op_req *q, const struct ttlv *pl)
{
	return op_attributes(q, pl, 0);
}

static uint32_t op_get_attribute_list(struct op_req *q, const struct ttlv *pl)
{
	return op_attributes(q, pl, 1);
}

/* ---- the table ----------------------------------------------------------- */

/* Where an operation runs (the table's last column).  The event loop that read the
 * request runs it, with that loop's sessions and caches, unless the operation may keep
 * the module busy for seconds: key generation on a USB token, an import, a search of the
 * whole token, a Query that asks the token for everything it can do.  Those go to the
 * small pool of section 8, so that they stall only the request that asked (section 10). */
enum {
	OPX_LOOP,       /* on the loop that read the request */
	OPX_SLOW,       /* on the slow pool */
	OPX_SLOW_CRED   /* on the slow pool when the message carries a credential (Query:
			 * then it names the user's token and what it can do) */
};

/* X(operation, function, needs login, where it runs) */
#define OP_TABLE(X) \
	X(OP_CREATE_KEY_PAIR,       op_create_key_pair,    1, OPX_SLOW) \
	X(OP_REGISTER,              op_register,           1, OPX_SLOW) \
	X(OP_GET,                   op_get,                1, OPX_LOOP) \
	X(OP_GET_ATTRIBUTES,        op_get_attributes,     1, OPX_LOOP) \
	X(OP_GET_ATTRIBUTE_LIST,    op_get_attribute_list, 1, OPX_LOOP) \
	X(OP_MODIFY_ATTRIBUTE,      op_modify_attribute,   1, OPX_LOOP) \
	X(OP_ACTIVATE,              op_activate,           1, OPX_LOOP) \
	X(OP_DESTROY,               op_destroy,            1, OPX_LOOP) \
	X(OP_REVOKE,                op_revoke,             1, OPX_LOOP) \
	X(OP_LOCATE,                op_locate,             1, OPX_SLOW) \
	X(OP_QUERY,                 op_query,              0, OPX_SLOW_CRED) \
	X(OP_DISCOVER_VERSIONS,     op_discover_versions,  0, OPX_LOOP) \
	X(OP_SIGN,                  op_sign,               1, OPX_LOOP)

static const struct op_def {
	uint32_t op;
	uint32_t (*fn)(struct op_req *, const struct ttlv *);
	int login;
	int where;                      /* OPX_* */
} op_defs[] = {
#define OP_ROW(op, fn, login, where) { op, fn, login, where },
	OP_TABLE(OP_ROW)
#undef OP_ROW
};

/* The operations of the table; with a slot, Create Key Pair and Sign only where its token
 * can make, or sign with, some kind of key. */
static void op_put_operations(struct ttlv_enc *e, const struct p11_slot *s)
{
	int gen = !s, sign = !s;
	char why[120];
	for (size_t i = 0; s && i < ARRAY_LEN(p11_algs); i++) {
		const struct p11_alg *a = &p11_algs[i];
		gen |= p11_slot_can_generate(s, a, 2048, why, sizeof why) == 0;
		sign |= p11_slot_can_sign(s, a);
	}
	for (size_t i = 0; i < ARRAY_LEN(op_defs); i++)
		if ((op_defs[i].op != OP_CREATE_KEY_PAIR || gen) && (op_defs[i].op != OP_SIGN || sign))
			ttlv_put_enum(e, KT_OPERATION, op_defs[i].op);
}

static const struct op_def *op_lookup(uint32_t op)
{
	for (size_t i = 0; i < ARRAY_LEN(op_defs); i++)
		if (op_defs[i].op == op)
			return &op_defs[i];
	return NULL;
}

/* ---- one request --------------------------------------------------------- */

/*
 * Username -> slot, a session on it, Password -> user PIN checked (section 6 compares a
 * salted digest when the token is already logged in, so a wrong PIN is refused without
 * C_Login).  Also after a failure that op_recover() acted on, so that a request run again
 * on a new session (a re-inserted token, a re-initialised module) is logged in again.
 * The module's failures are recovered from here as well, a few times: a lost session
 * (and a login that fails for another reason than the PIN gets a new session once), a
 * token that went away, a stuck module.
 */
#define OP_LOGIN_TRIES 4

static uint32_t op_login(struct op_req *q)
{
	const struct kmip_request *r = q->r;
	uint32_t rr = RR_GENERAL_FAILURE;

	if (!r->has_cred || !r->pass)
		return op_fail(q, RR_AUTHENTICATION_NOT_SUCCESSFUL,
			       "a Username and Password credential is required");
	if (r->user_len > 255)
		return op_fail(q, RR_AUTHENTICATION_NOT_SUCCESSFUL, "no slot for that username");
	op_enter(q->t);
	for (int attempt = 0; attempt < OP_LOGIN_TRIES; attempt++) {
		const char *call = "C_GetSlotList";
		CK_RV rv = op_slot(q->t, r->user, r->user_len, &q->slot, &call);
		if (rv == P11_E_NO_SLOT) {
			p11_log_unknown_user((const char *)r->user, r->user_len);
			return op_fail(q, RR_AUTHENTICATION_NOT_SUCCESSFUL, "no slot for that username");
		}
		if (rv != CKR_OK) {
			rr = op_fail_slot(q, rv, call);
			q->trouble = P11_T_MODULE;      /* the lookup was made afresh */
		} else if ((rv = op_session(q->t, q->slot, &q->h)) != CKR_OK) {
			rr = op_fail_slot(q, rv, "C_OpenSession");
		} else if ((rv = p11_auth(q->slot, q->h, r->pass, r->pass_len)) == CKR_OK) {
			return 0;
		} else if (p11_rv_reason(rv) == RR_AUTHENTICATION_NOT_SUCCESSFUL &&
			   p11_trouble(rv, 0) == P11_T_NONE) {
			return op_fail(q, RR_AUTHENTICATION_NOT_SUCCESSFUL, "login refused: %s",
				       p11_rv_name(rv));
		} else {
			rr = op_fail_rv(q, rv, "C_Login");
			if (q->trouble == P11_T_NONE && attempt == 0)
				q->trouble = P11_T_SESSION;
		}
		if (op_recover(q) != 0)
			break;
	}
	return rr;
}

/*
 * An answered item into the counters and the request's record.  Its UID: the one the
 * request names, else for a key operation the batch's ID Placeholder (the pair Create Key
 * Pair just made).  Formatting UIDs is skipped when no line at info will show them.
 */
static void op_rec_item(struct op_req *q, const struct kmip_item *it, const struct op_def *def,
			uint32_t rr)
{
	struct op_rec *g = q->t->rec;
	stat_add(&op_stats.items[op_stat_index(kmip_op_names, ARRAY_LEN(kmip_op_names), it->op)], 1);
	if (rr)
		op_stat_fail(rr);
	int i = g->n++;
	if (i >= OP_REC_ITEMS)
		return;
	g->op[i] = it->op;
	g->rr[i] = rr;
	if (log_state.level < LV_INFO)
		return;
	const char *uid = "";
	uint32_t n = 0;
	if (!it->payload || kmip_get_text(q->d, it->payload, KT_UNIQUE_IDENTIFIER, &uid, &n) != 0) {
		uid = def && def->login ? q->placeholder : "";
		n = (uint32_t)strlen(uid);
	}
	size_t used = strlen(g->uids);
	if (i > 0 && used + 1 < sizeof g->uids)
		g->uids[used++] = ',';
	log_word(g->uids + used, sizeof g->uids - used, (const uint8_t *)uid, n, 0);
}

/*
 * One batch item: its own answer, or a failure item in its place.  Returns 0 (success),
 * -1 (a failure item) or OP_ITEM_NO_ROOM when not even the failure item fits: then the
 * encoder is back at the item's start with its overflow raised.  An answer that does not
 * fit the response buffer is a failure item with Response Too Large.
 */
#define OP_ITEM_NO_ROOM (-2)

static int op_item(struct op_req *q, const struct kmip_item *it, uint32_t auth_rr,
		   const char *auth_msg)
{
	const struct op_def *def = op_lookup(it->op);
	uint32_t rr;
	struct ttlv_mark m = ttlv_enc_mark(q->e);

	q->msg = NULL;
	q->rv = CKR_OK;
	q->trouble = P11_T_NONE;
	q->cached = 0;
	if (it->reason) {
		rr = it->reason;
		q->msg = it->why;
	} else if (!def) {
		rr = op_fail(q, RR_OPERATION_NOT_SUPPORTED, "operation %s is not supported",
			     op_enum_name(KT_OPERATION, it->op, (char[12]){ 0 }));
	} else if (def->login && auth_rr) {
		rr = auth_rr;
		q->msg = auth_msg;
	} else {
		for (int attempt = 0;; attempt++) {
			kmip_item_begin(q->e, it->op, it, RS_SUCCESS, 0, NULL);
			ttlv_open(q->e, KT_RESPONSE_PAYLOAD);
			rr = def->fn(q, it->payload);
			if (rr == 0) {
				ttlv_close(q->e);
				ttlv_close(q->e);
				if (!q->e->err) {
					op_rec_item(q, it, def, 0);
					return 0;
				}
				ttlv_enc_rewind(q->e, m);
				rr = op_fail(q, RR_RESPONSE_TOO_LARGE,
					     "the answer exceeds the response buffer (%zu bytes)",
					     q->e->cap);
				break;
			}
			ttlv_enc_rewind(q->e, m);
			if (attempt > 0 || !def->login)
				break;
			if (q->cached && (q->rv == CKR_OBJECT_HANDLE_INVALID ||
					  q->rv == CKR_KEY_HANDLE_INVALID)) {
				op_cache_clear(q->t);   /* a key changed behind our back: look again */
				q->cached = 0;
				continue;
			}
			/* The module failed (session, token, module): recover, log in again. */
			if (q->trouble == P11_T_NONE || op_recover(q) != 0)
				break;
			uint32_t lr = op_login(q);
			if (lr) {
				rr = lr;
				break;
			}
		}
	}
	log_debug("conn=%lu %s failed: %s: %s", q->t->rec->conn,
		  op_enum_name(KT_OPERATION, it->op, (char[12]){ 0 }), kmip_reason_name(rr),
		  q->msg ? q->msg : "");
	kmip_item_begin(q->e, it->op, it, RS_OPERATION_FAILED, rr, q->msg);
	ttlv_close(q->e);
	op_rec_item(q, it, def, rr);
	if (q->e->err && q->msg) {      /* the reason without its message, then */
		ttlv_enc_rewind(q->e, m);
		kmip_item_begin(q->e, it->op, it, RS_OPERATION_FAILED, rr, NULL);
		ttlv_close(q->e);
	}
	if (q->e->err) {
		struct ttlv_mark full = { m.len, m.depth, -1 };
		ttlv_enc_rewind(q->e, full);
		return OP_ITEM_NO_ROOM;
	}
	return -1;
}

/* Does some item of this request go to the slow pool (OPX_SLOW)? */
static int op_is_slow(const struct kmip_request *r)
{
	for (int i = 0; i < r->n; i++) {
		const struct op_def *def = op_lookup(r->item[i].op);
		if (def && !r->item[i].reason &&
		    (def->where == OPX_SLOW || (def->where == OPX_SLOW_CRED && r->has_cred)))
			return 1;
	}
	return 0;
}

/* A whole answer for a message that cannot be served: header, one item, no Operation. */
static size_t op_error_response(uint8_t *out, size_t cap, uint32_t reason, const char *why)
{
	struct ttlv_enc e;
	ttlv_enc_init(&e, out, cap);
	kmip_resp_error(&e, KMIP_MAJOR, KMIP_MINOR, (int64_t)time(NULL), reason, why);
	return e.err ? 0 : e.len;
}

/* A whole message refused before its items: into the record and the counters. */
static uint32_t op_rec_msg(struct op_thread *t, uint32_t rr)
{
	t->rec->msg_rr = rr;
	op_stat_fail(rr);
	return rr;
}

/* op_handle's answer on an event loop's thread for a request that the slow pool serves. */
#define OP_DEFERRED ((size_t)-1)

/* The request message, as op_handle() serves it. */
static size_t op_serve(struct op_thread *t, const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	struct kmip_request r;
	struct ttlv_doc d = { t->items, 0, TTLV_MAX_ITEMS };
	struct ttlv_enc e;
	char placeholder[OP_UID_MAX + 1] = "";
	struct op_req q = { .t = t, .d = &d, .r = &r, .e = &e, .placeholder = placeholder };
	const char *why = NULL;
	int64_t now = (int64_t)time(NULL);

	memset(&r, 0, sizeof r);
	int rc = ttlv_decode(&d, in, n, TTLV_DEFAULT_DEPTH);
	if (rc != 0) {
		log_debug("conn=%lu undecodable request: %s", t->rec->conn, ttlv_strerror(rc));
		op_rec_msg(t, RR_INVALID_MESSAGE);
		return op_error_response(out, cap, RR_INVALID_MESSAGE, ttlv_strerror(rc));
	}
	if (log_state.level >= LV_TRACE) {     /* kmip_dump masks the Password */
		static __thread char dump[16384];
		kmip_dump(&d, dump, sizeof dump);
		log_trace("conn=%lu request:\n%s", t->rec->conn, dump);
	}
	uint32_t rr = kmip_parse_request(&d, &r, &why);
	if (r.has_cred && r.user) {
		struct op_rec *g = t->rec;
		g->has_user = 1;
		g->user_len = r.user_len < sizeof g->user ? r.user_len : sizeof g->user;
		memcpy(g->user, r.user, g->user_len);
	}
	ttlv_enc_init(&e, out, cap);
	if (rr) {
		kmip_resp_error(&e, r.major, r.minor, now, op_rec_msg(t, rr), why);
		return e.err ? 0 : e.len;
	}
	t->rec->parsed = 1;
	if (t->defer && op_is_slow(&r))
		return OP_DEFERRED;     /* before any module call: the slow pool starts afresh */

	/* One login for the message, before the first item that needs it. */
	uint32_t auth_rr = 0;
	char auth_msg[sizeof q.msgbuf] = "";
	for (int i = 0; i < r.n; i++) {
		const struct op_def *def = op_lookup(r.item[i].op);
		if (def && def->login && !r.item[i].reason) {
			auth_rr = op_login(&q);
			if (auth_rr) {     /* section 10 logs it, with the peer */
				snprintf(auth_msg, sizeof auth_msg, "%s", q.msg ? q.msg : "");
				t->rec->auth_rr = auth_rr;
				snprintf(t->rec->auth_msg, sizeof t->rec->auth_msg, "%s", auth_msg);
			}
			break;
		}
	}

	/* Every item's answer is checked against the buffer as it is written (op_item): one
	 * that does not fit becomes Response Too Large for that item, and the batch goes on
	 * or stops as its option says.  While an item runs, the buffer's end is moved back by
	 * the smallest failure answer of every later item, so that each can still be
	 * answered.  Only when not even that fits is the whole answer replaced by a
	 * message-level Response Too Large. */
	size_t reserve = 0;
	for (int i = 0; i < r.n; i++)
		reserve += kmip_fail_item_size(&r.item[i]);
	kmip_resp_begin(&e, r.major, r.minor, (uint32_t)r.n, now);
	size_t count_at = e.len - 8;    /* Batch Count's value: the header's last item */
	int answered = 0;
	for (int i = 0; i < r.n && !e.err; i++) {
		reserve -= kmip_fail_item_size(&r.item[i]);
		e.cap = reserve < cap - e.len ? cap - reserve : e.len;
		answered++;
		int irc = op_item(&q, &r.item[i], auth_rr, auth_msg);
		e.cap = cap;
		if (irc != 0 && r.err_cont != BEC_CONTINUE)
			break;          /* Stop (and Undo, which we cannot) end the batch here */
	}
	if (answered != r.n && !e.err)
		buf_put_be32(out + count_at, (uint32_t)answered);
	kmip_resp_end(&e);

	if (e.err)
		return op_error_response(out, cap, op_rec_msg(t, RR_RESPONSE_TOO_LARGE),
					 "response exceeds the server's buffer");
	if (r.max_resp >= 0 && e.len > (uint64_t)r.max_resp) {
		ttlv_enc_init(&e, out, cap);
		kmip_resp_error(&e, r.major, r.minor, now, op_rec_msg(t, RR_RESPONSE_TOO_LARGE), NULL);
		return e.err ? 0 : e.len;
	}
	return e.len;
}

/*
 * Request Message in, Response Message out (its length; 0 only if even an error answer
 * does not fit, which a sane out_cap rules out).  t->rec describes the request afterwards;
 * at debug the response is logged too (it holds no secret: private keys never leave the
 * HSM, and byte strings are cut after 20 bytes).  A request that calls the module holds
 * its gate from its first such call to here (op_enter).  On an event loop's context
 * (t->defer) a request with an item for the slow pool gets no answer but OP_DEFERRED,
 * before any module call; the pool then serves it whole.
 */
static size_t op_handle(struct op_thread *t, const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	struct op_rec *g = t->rec;
	g->has_user = 0;
	g->user_len = 0;
	g->msg_rr = g->auth_rr = 0;
	g->parsed = 0;
	g->auth_msg[0] = '\0';
	g->n = 0;
	g->uids[0] = '\0';
	t->gated = 0;
	size_t len = op_serve(t, in, n, out, cap);
	if (t->gated)
		p11_leave();
	t->gated = 0;
	if (log_state.level >= LV_DEBUG && len > 0 && len != OP_DEFERRED) {
		static __thread char dump[16384];
		struct ttlv_doc d = { t->items, 0, TTLV_MAX_ITEMS };
		if (ttlv_decode(&d, out, len, TTLV_MAX_DEPTH) == 0) {
			kmip_dump(&d, dump, sizeof dump);
			log_debug("conn=%lu response:\n%s", g->conn, dump);
		}
	}
	return len;
}

/* ==== 8. Workers ========================================================== */

/*
 * A request is served by the event loop that read it (section 10): decoded, run against
 * the module with that loop's own sessions and caches, encoded and written by one thread.
 * What may keep the module busy for seconds (the operation table's OPX_SLOW rows: key
 * generation above all) must not stall the loop's other connections: the loop hands such
 * a request to this small pool as a job.  A pool thread runs it with its own context,
 * sends the response itself (the deliver hook, section 10) and gives the job back to the
 * connection's loop.
 *
 * Jobs and their buffers are allocated once at start-up, a store per loop: a connection
 * holds a job only from the moment its request header has arrived until its response is
 * written, so idle connections cost no buffer space, and the number of jobs bounds the
 * memory in flight.
 */

struct wrk_job {
	struct wrk_job *next;
	void *owner;                    /* the connection, opaque here */
	uint8_t *in, *out;
	size_t in_len, out_len, out_cap;
	struct op_rec rec;              /* what the request was, for its log line */
};

/* One loop's jobs; only that loop's thread takes and returns them. */
struct wrk_store {
	struct wrk_job *jobs, *free;
	uint8_t *arena;
	size_t in_cap, out_cap;
	int njobs, nfree;
};

struct wrk_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct wrk_job *todo, *todo_tail;
	int nthreads, stop;
	pthread_t *th;
	struct op_thread **ctx;         /* one per thread */
	void (*deliver)(struct wrk_job *); /* sends the response and returns the job */
};

/* njobs jobs, each with a request buffer of in_cap bytes and a response buffer of out_cap. */
static int wrk_store_init(struct wrk_store *s, int njobs, size_t in_cap, size_t out_cap)
{
	memset(s, 0, sizeof *s);
	/* On a 32-bit target 128 jobs of two 16 MiB buffers would wrap size_t to 0, and
	 * malloc(0) would succeed. */
	if (njobs < 1 || in_cap + out_cap < in_cap || in_cap + out_cap == 0 ||
	    (size_t)njobs > SIZE_MAX / (in_cap + out_cap)) {
		errno = EOVERFLOW;      /* main checks first, with a message naming the keys */
		return -1;
	}
	size_t per = in_cap + out_cap;
	s->in_cap = in_cap;
	s->out_cap = out_cap;
	s->jobs = calloc((size_t)njobs, sizeof *s->jobs);
	s->arena = malloc((size_t)njobs * per);
	if (!s->jobs || !s->arena)
		return -1;
	for (int i = 0; i < njobs; i++) {
		struct wrk_job *j = &s->jobs[i];
		j->in = s->arena + (size_t)i * per;
		j->out = j->in + in_cap;
		j->out_cap = out_cap;
		j->next = s->free;
		s->free = j;
	}
	s->njobs = s->nfree = njobs;
	return 0;
}

static void wrk_store_free(struct wrk_store *s)
{
	free(s->jobs);
	free(s->arena);
}

/* A free job for a connection whose request header has arrived, or NULL: then it waits. */
static struct wrk_job *wrk_job_get(struct wrk_store *s, void *owner)
{
	struct wrk_job *j = s->free;
	if (!j)
		return NULL;
	s->free = j->next;
	s->nfree--;
	j->owner = owner;
	j->in_len = j->out_len = 0;
	return j;
}

/* The request held the PIN: wipe it before the buffer waits for the next one. */
static void wrk_job_put(struct wrk_store *s, struct wrk_job *j)
{
	wipe(j->in, j->in_len);
	j->owner = NULL;
	j->next = s->free;
	s->free = j;
	s->nfree++;
}

static void *wrk_main(void *arg)
{
	struct op_thread *ctx = arg;
	struct wrk_pool *w = ctx->pool;

	for (;;) {
		pthread_mutex_lock(&w->mu);
		while (!w->todo && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->stop) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		struct wrk_job *j = w->todo;
		w->todo = j->next;
		if (!w->todo)
			w->todo_tail = NULL;
		pthread_mutex_unlock(&w->mu);

		ctx->rec = &j->rec;
		j->out_len = op_handle(ctx, j->in, j->in_len, j->out, j->out_cap);
		w->deliver(j);
	}
	op_thread_free(ctx);
	return NULL;
}

/* nthreads threads, each with its own op_thread; 0: no pool. */
static int wrk_init(struct wrk_pool *w, struct op_env *env, int nthreads)
{
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->ctx = calloc((size_t)nthreads + 1, sizeof *w->ctx);
	w->th = calloc((size_t)nthreads + 1, sizeof *w->th);
	if (!w->ctx || !w->th)
		return -1;
	for (int i = 0; i < nthreads; i++) {
		w->ctx[i] = op_thread_new(env, w, i);
		if (!w->ctx[i] || pthread_create(&w->th[i], NULL, wrk_main, w->ctx[i]) != 0)
			return -1;
		w->nthreads++;
	}
	return 0;
}

static void wrk_submit(struct wrk_pool *w, struct wrk_job *j)
{
	j->next = NULL;
	pthread_mutex_lock(&w->mu);
	if (w->todo_tail)
		w->todo_tail->next = j;
	else
		w->todo = j;
	w->todo_tail = j;
	pthread_mutex_unlock(&w->mu);
	pthread_cond_signal(&w->cv);    /* after unlocking: the woken thread need not wait */
}

/* A job still queued is dropped: its connection is not served any more either. */
static void wrk_stop(struct wrk_pool *w)
{
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->nthreads; i++)
		pthread_join(w->th[i], NULL);
	free(w->th);
	free(w->ctx);
}

/* ==== 9. TLS ============================================================== */

/*
 * TLS 1.3 server on Mbed TLS 3.6, driven by the event loop over non-blocking sockets.
 *
 * One struct tls_server holds what all connections share (configuration, certificate,
 * key, client CA); a struct tls_conn is one mbedtls_ssl_context on one socket.  The step
 * functions never block: they return TLS_WANT_READ / TLS_WANT_WRITE when the socket
 * would block, and the caller polls for that event and repeats the same call.
 *
 * Only TLS 1.3 is offered: Cascade's documentation promises it, and it leaves out the
 * TLS 1.2 attack surface (renegotiation, CBC suites, RSA key exchange).  A TLS 1.2-only
 * client gets a protocol_version alert, so its log says why.
 *
 * Without a configured certificate the server makes a self-signed P-256 one at first
 * start and keeps it in the state directory, so that clients can pin it (or use it as
 * their CA file) instead of running without verification, as the original forced them to.
 *
 * Memory per idle connection is dominated by the record buffers that Mbed TLS allocates
 * in mbedtls_ssl_setup(): MBEDTLS_SSL_IN_CONTENT_LEN + MBEDTLS_SSL_OUT_CONTENT_LEN plus
 * record overhead.  The handshake state is freed by Mbed TLS itself when the handshake
 * ends.  Measured per idle TLS 1.3 connection after the handshake (tests/test_tls.c):
 * ~41 KiB with Debian's library (IN 16384, OUT 16384; ~37.5 KiB of it allocated by
 * mbedtls_ssl_setup), ~29 KiB with dist/mbedtls-config.h (IN 16384, OUT 8192); plus
 * sizeof(struct tls_conn), 840 bytes, wherever the caller keeps it.
 */

/* Step results besides "done" (0 or a byte count) and errors.  They are Mbed TLS's own
 * codes, so that they can never collide with an error code passed through. */
#define TLS_WANT_READ  MBEDTLS_ERR_SSL_WANT_READ
#define TLS_WANT_WRITE MBEDTLS_ERR_SSL_WANT_WRITE
#define TLS_CLOSED     MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY   /* peer went away (handshake) */
#define TLS_POST_HS    MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE  /* see tls_read */
#define TLS_MORE       1              /* see tls_handshake_step */

#define TLS_FP_LEN     (32 * 3)       /* "AA:BB:...:FF" of SHA-256 plus NUL */

#define TLS_SELF_DAYS  3650           /* validity of the self-signed certificate */

struct tls_opts {
	const char *cert_path;        /* PEM or DER; NULL with key_path NULL: self-signed */
	const char *key_path;
	const char *client_ca_path;   /* NULL: no client certificates asked for */
	const char *state_dir;        /* where the self-signed pair lives */
	const char *listen_host;      /* for the self-signed SAN; NULL or "" for none */
};

struct tls_server {
	mbedtls_ssl_config conf;
	mbedtls_x509_crt cert;        /* own chain, leaf first */
	mbedtls_pk_context key;
	mbedtls_x509_crt client_ca;
	int verify_clients;
	int ready;                    /* all of the above initialised: free is safe */
	char fingerprint[TLS_FP_LEN]; /* SHA-256 of the leaf's DER */
};

struct tls_conn {
	mbedtls_ssl_context ssl;      /* must not move after tls_conn_init */
	int fd;                       /* owned by the caller; not closed here */
};

/* Cipher suites, groups and signature algorithms.  Mbed TLS keeps pointers to these
 * lists, so they are static. */
static const int tls_suites[] = {
	MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
	MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
	MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
	0
};

static const uint16_t tls_groups[] = {
	MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
	MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
	MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1,
	MBEDTLS_SSL_IANA_TLS_GROUP_NONE
};

/* CertificateVerify with ECDSA P-256 / P-384 or RSA-PSS keys (ours and a client's).
 * The rsa_pkcs1 entries are for certificate signatures only (RFC 8446 4.2.3): a client
 * chain issued by a classic RSA CA would otherwise be refused. */
static const uint16_t tls_sig_algs[] = {
	MBEDTLS_TLS1_3_SIG_ECDSA_SECP256R1_SHA256,
	MBEDTLS_TLS1_3_SIG_ECDSA_SECP384R1_SHA384,
	MBEDTLS_TLS1_3_SIG_ECDSA_SECP521R1_SHA512,
	MBEDTLS_TLS1_3_SIG_RSA_PSS_RSAE_SHA256,
	MBEDTLS_TLS1_3_SIG_RSA_PSS_RSAE_SHA384,
	MBEDTLS_TLS1_3_SIG_RSA_PSS_RSAE_SHA512,
	MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA256,
	MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA384,
	MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA512,
	MBEDTLS_TLS1_3_SIG_NONE
};

/* Text for an Mbed TLS error code; a static buffer, so for the event loop thread only. */
#if !defined(MBEDTLS_ERROR_C)
/* Without Mbed TLS's own texts (14 KiB; the static build leaves them out), the codes an
 * operator meets, in our words; any other is printed in hex. */
#define TLS_ERR_TEXTS(X) \
	X(MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE,   "the peer sent a fatal alert") \
	X(MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION,  "the peer offers no TLS 1.3") \
	X(MBEDTLS_ERR_SSL_HANDSHAKE_FAILURE,     "no parameters in common with the peer") \
	X(MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE, "the peer sent no client certificate") \
	X(MBEDTLS_ERR_SSL_BAD_CERTIFICATE,       "the peer's certificate is unusable") \
	X(MBEDTLS_ERR_X509_CERT_VERIFY_FAILED,   "certificate verification failed") \
	X(MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE,    "unexpected TLS message") \
	X(MBEDTLS_ERR_SSL_DECODE_ERROR,          "malformed TLS message") \
	X(MBEDTLS_ERR_SSL_INVALID_RECORD,        "malformed TLS record") \
	X(MBEDTLS_ERR_SSL_INVALID_MAC,           "TLS record authentication failed") \
	X(MBEDTLS_ERR_SSL_CONN_EOF,              "connection closed") \
	X(MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY,     "the peer closed the connection") \
	X(MBEDTLS_ERR_NET_CONN_RESET,            "connection reset by the peer") \
	X(MBEDTLS_ERR_NET_SEND_FAILED,           "send failed") \
	X(MBEDTLS_ERR_NET_RECV_FAILED,           "receive failed") \
	X(MBEDTLS_ERR_SSL_ALLOC_FAILED,          "out of memory") \
	X(MBEDTLS_ERR_PK_KEY_INVALID_FORMAT,     "not a private key (PEM or DER)") \
	X(MBEDTLS_ERR_PK_PASSWORD_REQUIRED,      "the key is encrypted") \
	X(MBEDTLS_ERR_PK_TYPE_MISMATCH,          "the key does not fit the certificate") \
	X(MBEDTLS_ERR_PK_FILE_IO_ERROR,          "cannot read the key file") \
	X(MBEDTLS_ERR_X509_INVALID_FORMAT,       "not an X.509 certificate") \
	X(MBEDTLS_ERR_X509_FILE_IO_ERROR,        "cannot read the certificate file")
#endif

static const char *tls_strerror(int ret)
{
	static __thread char msg[160];
#if defined(MBEDTLS_ERROR_C) || defined(MBEDTLS_ERROR_STRERROR_DUMMY)
	mbedtls_strerror(ret, msg, sizeof msg);
#else
	const char *text = NULL;
	switch (ret) {
#define TLS_ERR_CASE(code, s) case code: text = s; break;
	TLS_ERR_TEXTS(TLS_ERR_CASE)
#undef TLS_ERR_CASE
	}
	if (text)
		snprintf(msg, sizeof msg, "%s (Mbed TLS -0x%04X)", text, (unsigned)-ret);
	else
		snprintf(msg, sizeof msg, "Mbed TLS error -0x%04X", (unsigned)-ret);
#endif
	return msg;
}

/* A start-up message into the caller's buffer: printf-style, then ": " and the Mbed TLS
 * text when ret is nonzero.  Truncates silently (it is a message); appends by hand so
 * that no snprintf of one buffer into another sits where gcc's truncation check, after
 * inlining, would see both sizes. */
static void tls_err(char *err, size_t errsz, int ret, const char *fmt, ...) PRINTF_LIKE(4, 5);
static void tls_err(char *err, size_t errsz, int ret, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (errsz == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
	if (ret == 0)
		return;
	n = strlen(err);
	for (const char *m = ": "; *m && n + 1 < errsz; m++)
		err[n++] = *m;
	for (const char *m = tls_strerror(ret); *m && n + 1 < errsz; m++)
		err[n++] = *m;
	err[n] = '\0';
}

/* ---- Non-blocking BIO ---------------------------------------------------------- */

/* The fd travels in the context pointer itself, so the callbacks need no memory of
 * their own.  MSG_NOSIGNAL: a peer that vanishes mid-write must cost a connection, not
 * the daemon (SIGPIPE). */
static int tls_bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	for (;;) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_WRITE;
		if (errno == EPIPE || errno == ECONNRESET)
			return MBEDTLS_ERR_NET_CONN_RESET;
		return MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

static int tls_bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	for (;;) {
		ssize_t n = recv(fd, buf, len, 0);
		if (n >= 0)
			return (int)n;       /* 0: EOF, Mbed TLS reports MBEDTLS_ERR_SSL_CONN_EOF */
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_READ;
		if (errno == ECONNRESET)
			return MBEDTLS_ERR_NET_CONN_RESET;
		return MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

/* ---- Self-signed certificate --------------------------------------------------- */

/* Write data to path so that a reader sees the old file or the whole new one, never a
 * part: a temporary file in the same directory (mkstemp creates it 0600), fsync, then
 * rename over path. */
static int tls_write_file_atomic(const char *path, const void *data, size_t n, mode_t mode,
                                 char *err, size_t errsz)
{
	char tmp[PATH_MAX];
	const uint8_t *p = data;
	int fd, rc = -1;

	if ((size_t)snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= sizeof tmp) {
		tls_err(err, errsz, 0, "%s: path too long", path);
		return -1;
	}
	fd = mkstemp(tmp);
	if (fd < 0) {
		tls_err(err, errsz, 0, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	if (fchmod(fd, mode) != 0)
		goto fail;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto fail;
		p += w;
		n -= (size_t)w;
	}
	if (fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto fail;
	return 0;
fail:
	tls_err(err, errsz, 0, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

/* "YYYYMMDDhhmmss" in UTC, the form mbedtls_x509write_crt_set_validity wants. */
static void tls_x509_time(char out[16], time_t t)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

/*
 * Make a P-256 key and a self-signed certificate for it, PEM into key_pem / crt_pem.
 *
 *   subject = issuer = CN=kmip2pkcs11, serial 16 random bytes, valid from an hour ago
 *   (clock skew) for TLS_SELF_DAYS days, SAN = DNS:localhost + the listen address,
 *   basicConstraints CA:FALSE, extKeyUsage serverAuth.
 *
 * CA:FALSE and no keyUsage: OpenSSL (Python, PyKMIP) and Mbed TLS both accept a
 * self-signed end-entity certificate given as its own trust anchor, and rustls/webpki
 * refuse a CA:TRUE certificate as a server certificate.  A keyUsage without keyCertSign
 * would make OpenSSL stop treating the certificate as self-issued, so none is written.
 */
static int tls_make_self_signed(const char *host, unsigned char *key_pem, size_t key_cap,
                                unsigned char *crt_pem, size_t crt_cap, char *err, size_t errsz)
{
	psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
	mbedtls_svc_key_id_t kid = MBEDTLS_SVC_KEY_ID_INIT;
	mbedtls_pk_context pk;
	mbedtls_x509write_cert crt;
	mbedtls_x509_san_list san[2];
	unsigned char serial[16], ip[16];
	char host_buf[256], dns_buf[256];
	char not_before[16], not_after[16];
	time_t now = time(NULL);
	int ret, rc = -1;

	mbedtls_pk_init(&pk);
	mbedtls_x509write_crt_init(&crt);

	/* PSA generates the key (it works whether Mbed TLS keeps EC keys in PSA or in legacy
	 * structures), then PK gets a copy for signing and writing. */
	psa_set_key_type(&attr, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1));
	psa_set_key_bits(&attr, 256);
	psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_EXPORT | PSA_KEY_USAGE_SIGN_HASH);
	psa_set_key_algorithm(&attr, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
	if (psa_generate_key(&attr, &kid) != PSA_SUCCESS) {
		tls_err(err, errsz, 0, "cannot generate a P-256 key");
		goto done;
	}
	ret = mbedtls_pk_copy_from_psa(kid, &pk);
	psa_destroy_key(kid);
	if (ret != 0) {
		tls_err(err, errsz, ret, "cannot use the generated key");
		goto done;
	}

	/* Subject alternative names: localhost always, the listen address when it names one
	 * host (a wildcard address names none).  "[::1]" loses its brackets. */
	memset(san, 0, sizeof san);
	san[0].node.type = MBEDTLS_X509_SAN_DNS_NAME;
	san[0].node.san.unstructured_name.p = (unsigned char *)"localhost";
	san[0].node.san.unstructured_name.len = 9;
	snprintf(host_buf, sizeof host_buf, "%s", host ? host : "");
	if (host_buf[0] == '[') {
		char *end = strchr(host_buf, ']');
		if (end)
			*end = '\0';
		memmove(host_buf, host_buf + 1, strlen(host_buf));
	}
	if (inet_pton(AF_INET, host_buf, ip) == 1) {
		if (memcmp(ip, "\0\0\0\0", 4) != 0) {
			san[1].node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
			san[1].node.san.unstructured_name.p = ip;
			san[1].node.san.unstructured_name.len = 4;
		}
	} else if (inet_pton(AF_INET6, host_buf, ip) == 1) {
		static const unsigned char any6[16];
		if (memcmp(ip, any6, 16) != 0) {
			san[1].node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
			san[1].node.san.unstructured_name.p = ip;
			san[1].node.san.unstructured_name.len = 16;
		}
	} else if (host_buf[0] != '\0' && strcmp(host_buf, "localhost") != 0) {
		snprintf(dns_buf, sizeof dns_buf, "%s", host_buf);
		san[1].node.type = MBEDTLS_X509_SAN_DNS_NAME;
		san[1].node.san.unstructured_name.p = (unsigned char *)dns_buf;
		san[1].node.san.unstructured_name.len = strlen(dns_buf);
	}
	if (san[1].node.type != 0)
		san[0].next = &san[1];

	/* A positive 16-byte serial, never starting with a zero byte (DER would shorten it). */
	if (psa_generate_random(serial, sizeof serial) != PSA_SUCCESS) {
		tls_err(err, errsz, 0, "no random numbers for the certificate serial");
		goto done;
	}
	serial[0] = (unsigned char)((serial[0] & 0x7F) | 0x40);

	tls_x509_time(not_before, now - 3600);
	tls_x509_time(not_after, now + (time_t)TLS_SELF_DAYS * 86400);

	mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&crt, &pk);
	mbedtls_x509write_crt_set_issuer_key(&crt, &pk);
	if ((ret = mbedtls_x509write_crt_set_subject_name(&crt, "CN=kmip2pkcs11")) != 0 ||
	    (ret = mbedtls_x509write_crt_set_issuer_name(&crt, "CN=kmip2pkcs11")) != 0 ||
	    (ret = mbedtls_x509write_crt_set_serial_raw(&crt, serial, sizeof serial)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_validity(&crt, not_before, not_after)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_basic_constraints(&crt, 0, -1)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_subject_alternative_name(&crt, san)) != 0) {
		tls_err(err, errsz, ret, "cannot build the self-signed certificate");
		goto done;
	}
	{
		/* extKeyUsage = serverAuth, built by hand: one OID in a SEQUENCE. */
		static const unsigned char server_auth[] = MBEDTLS_OID_SERVER_AUTH;
		mbedtls_asn1_sequence eku = { { MBEDTLS_ASN1_OID, sizeof server_auth - 1,
		                                (unsigned char *)server_auth }, NULL };
		if ((ret = mbedtls_x509write_crt_set_ext_key_usage(&crt, &eku)) != 0) {
			tls_err(err, errsz, ret, "cannot build the self-signed certificate");
			goto done;
		}
	}
	if ((ret = mbedtls_x509write_crt_pem(&crt, crt_pem, crt_cap, mbedtls_psa_get_random,
	                                     MBEDTLS_PSA_RANDOM_STATE)) != 0 ||
	    (ret = mbedtls_pk_write_key_pem(&pk, key_pem, key_cap)) != 0) {
		tls_err(err, errsz, ret, "cannot encode the self-signed certificate");
		goto done;
	}
	rc = 0;
done:
	mbedtls_x509write_crt_free(&crt);
	mbedtls_pk_free(&pk);
	psa_reset_key_attributes(&attr);
	return rc;
}

/*
 * Make sure state_dir/cert.pem and state_dir/key.pem exist: reuse them when both are
 * there, else make a new pair.  The directory is created 0700 when missing; the key is
 * written 0600, the certificate 0644; both atomically, key first, so that a crash
 * leaves at worst a key without certificate, which the next start replaces.
 */
static int tls_self_signed(const char *dir, const char *host, char *cert_path,
                           char *key_path, size_t pathsz, char *err, size_t errsz)
{
	unsigned char key_pem[512], crt_pem[2048];
	struct stat st;
	int have_cert, have_key, rc = -1;

	if (dir == NULL || dir[0] == '\0') {
		tls_err(err, errsz, 0, "no certificate configured and no state directory for a "
		         "self-signed one");
		return -1;
	}
	if ((size_t)snprintf(cert_path, pathsz, "%s/cert.pem", dir) >= pathsz ||
	    (size_t)snprintf(key_path, pathsz, "%s/key.pem", dir) >= pathsz) {
		tls_err(err, errsz, 0, "%s: path too long", dir);
		return -1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		tls_err(err, errsz, 0, "cannot create state directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		tls_err(err, errsz, 0, "state directory %s is not a directory", dir);
		return -1;
	}
	have_cert = stat(cert_path, &st) == 0;
	have_key = stat(key_path, &st) == 0;
	if (have_key && (st.st_mode & 077) != 0)
		log_warn("%s is readable by group or others (mode %03o)", key_path,
		         (unsigned)(st.st_mode & 0777));
	if (have_cert && have_key)
		return 0;
	if (have_cert || have_key)
		log_warn("state directory %s holds only one of cert.pem and key.pem: making a "
		         "new pair", dir);

	if (tls_make_self_signed(host, key_pem, sizeof key_pem, crt_pem, sizeof crt_pem,
	                         err, errsz) != 0)
		goto done;
	if (tls_write_file_atomic(key_path, key_pem, strlen((char *)key_pem), 0600,
	                          err, errsz) != 0 ||
	    tls_write_file_atomic(cert_path, crt_pem, strlen((char *)crt_pem), 0644,
	                          err, errsz) != 0)
		goto done;
	log_info("made a self-signed certificate %s (key %s)", cert_path, key_path);
	rc = 0;
done:
	wipe(key_pem, sizeof key_pem);
	return rc;
}

/* "AA:BB:..." of the SHA-256 of der: what a client pins. */
static int tls_fingerprint(const unsigned char *der, size_t n, char out[TLS_FP_LEN])
{
	uint8_t h[32];
	size_t hl = 0;
	if (psa_hash_compute(PSA_ALG_SHA_256, der, n, h, sizeof h, &hl) != PSA_SUCCESS ||
	    hl != sizeof h)
		return -1;
	for (size_t i = 0; i < sizeof h; i++) {
		hex_upper(out + 3 * i, h + i, 1);
		out[3 * i + 2] = i + 1 < sizeof h ? ':' : '\0';
	}
	return 0;
}

/* ---- Server -------------------------------------------------------------------- */

static void tls_server_free(struct tls_server *s)
{
	if (!s->ready)
		return;
	mbedtls_ssl_config_free(&s->conf);
	mbedtls_x509_crt_free(&s->cert);
	mbedtls_pk_free(&s->key);
	mbedtls_x509_crt_free(&s->client_ca);
	s->ready = 0;
}

/*
 * Load the identity, build the shared configuration.  0, or -1 with a message naming
 * the file at fault in err.  PSA stays initialised after tls_server_free: other
 * sections hash with it, and main may call mbedtls_psa_crypto_free at exit.
 */
static int tls_server_init(struct tls_server *s, const struct tls_opts *o, char *err,
                           size_t errsz)
{
	char self_cert[PATH_MAX], self_key[PATH_MAX];
	const char *cert_path = o->cert_path, *key_path = o->key_path;
	int ret;

	memset(s, 0, sizeof *s);
	mbedtls_ssl_config_init(&s->conf);
	mbedtls_x509_crt_init(&s->cert);
	mbedtls_pk_init(&s->key);
	mbedtls_x509_crt_init(&s->client_ca);
	s->ready = 1;

	if (psa_crypto_init() != PSA_SUCCESS) {
		tls_err(err, errsz, 0, "PSA crypto initialisation failed (no entropy source?)");
		goto fail;
	}

	if ((cert_path == NULL) != (key_path == NULL)) {
		tls_err(err, errsz, 0, "a certificate needs its key and a key its certificate: "
		         "set both cert-path and key-path, or neither");
		goto fail;
	}
	if (cert_path == NULL) {
		if (tls_self_signed(o->state_dir, o->listen_host, self_cert, self_key,
		                    sizeof self_cert, err, errsz) != 0)
			goto fail;
		cert_path = self_cert;
		key_path = self_key;
	}

	/* Both parsers accept PEM and DER. */
	if ((ret = mbedtls_x509_crt_parse_file(&s->cert, cert_path)) != 0) {
		tls_err(err, errsz, ret, "certificate %s", cert_path);
		goto fail;
	}
	if ((ret = mbedtls_pk_parse_keyfile(&s->key, key_path, NULL, mbedtls_psa_get_random,
	                                    MBEDTLS_PSA_RANDOM_STATE)) != 0) {
		tls_err(err, errsz, ret, "private key %s", key_path);
		goto fail;
	}
	if ((ret = mbedtls_pk_check_pair(&s->cert.pk, &s->key, mbedtls_psa_get_random,
	                                 MBEDTLS_PSA_RANDOM_STATE)) != 0) {
		tls_err(err, errsz, 0, "private key %s does not match certificate %s", key_path,
		         cert_path);
		goto fail;
	}
	if (tls_fingerprint(s->cert.raw.p, s->cert.raw.len, s->fingerprint) != 0) {
		tls_err(err, errsz, 0, "cannot hash certificate %s", cert_path);
		goto fail;
	}

	if (o->client_ca_path != NULL) {
		if ((ret = mbedtls_x509_crt_parse_file(&s->client_ca, o->client_ca_path)) != 0) {
			tls_err(err, errsz, ret, "client CA file %s", o->client_ca_path);
			goto fail;
		}
		s->verify_clients = 1;
		log_info("TLS client certificates required, CA %s", o->client_ca_path);
	}

	if ((ret = mbedtls_ssl_config_defaults(&s->conf, MBEDTLS_SSL_IS_SERVER,
	                                       MBEDTLS_SSL_TRANSPORT_STREAM,
	                                       MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		tls_err(err, errsz, ret, "TLS configuration");
		goto fail;
	}
	mbedtls_ssl_conf_min_tls_version(&s->conf, MBEDTLS_SSL_VERSION_TLS1_3);
	mbedtls_ssl_conf_max_tls_version(&s->conf, MBEDTLS_SSL_VERSION_TLS1_3);
	mbedtls_ssl_conf_ciphersuites(&s->conf, tls_suites);
	mbedtls_ssl_conf_groups(&s->conf, tls_groups);
	mbedtls_ssl_conf_sig_algs(&s->conf, tls_sig_algs);
	/* Fresh (EC)DHE every time: no PSK, hence no resumption and no tickets to manage. */
	mbedtls_ssl_conf_tls13_key_exchange_modes(&s->conf,
	                                          MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL);
#if defined(MBEDTLS_SSL_SESSION_TICKETS) && defined(MBEDTLS_SSL_SRV_C)
	mbedtls_ssl_conf_new_session_tickets(&s->conf, 0);
#endif
	mbedtls_ssl_conf_rng(&s->conf, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
	if ((ret = mbedtls_ssl_conf_own_cert(&s->conf, &s->cert, &s->key)) != 0) {
		tls_err(err, errsz, ret, "certificate %s", cert_path);
		goto fail;
	}
	if (s->verify_clients) {
		mbedtls_ssl_conf_ca_chain(&s->conf, &s->client_ca, NULL);
		mbedtls_ssl_conf_authmode(&s->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	} else {
		mbedtls_ssl_conf_authmode(&s->conf, MBEDTLS_SSL_VERIFY_NONE);
	}

	log_info("TLS certificate %s, SHA-256 fingerprint %s", cert_path, s->fingerprint);
	return 0;
fail:
	tls_server_free(s);
	return -1;
}

/* ---- Connections --------------------------------------------------------------- */

/* fd must be non-blocking; c must stay where it is until tls_conn_free. */
static int tls_conn_init(struct tls_server *s, struct tls_conn *c, int fd)
{
	int ret;
	mbedtls_ssl_init(&c->ssl);
	c->fd = fd;
	if ((ret = mbedtls_ssl_setup(&c->ssl, &s->conf)) != 0) {
		mbedtls_ssl_free(&c->ssl);
		return ret;
	}
	mbedtls_ssl_set_bio(&c->ssl, (void *)(intptr_t)fd, tls_bio_send, tls_bio_recv, NULL);
	return 0;
}

/* Leaves the fd to the caller. */
static void tls_conn_free(struct tls_conn *c)
{
	mbedtls_ssl_free(&c->ssl);
}

/* One step of the handshake: 0 when it is done, TLS_MORE when the next step can follow
 * at once, TLS_WANT_READ / TLS_WANT_WRITE, TLS_CLOSED when the peer left before
 * finishing (scanners, health checks: not worth an error line), or a negative Mbed TLS
 * error.  One step at a time, because a whole server flight costs a millisecond of CPU
 * (two X25519 multiplications and an ECDSA signature), a step at most a third of it: the
 * loop serves other connections' requests in between. */
static int tls_handshake_step(struct tls_conn *c)
{
	int ret = mbedtls_ssl_is_handshake_over(&c->ssl) ? 0 : mbedtls_ssl_handshake_step(&c->ssl);
	if (ret == 0)
		return mbedtls_ssl_is_handshake_over(&c->ssl) ? 0 : TLS_MORE;
	switch (ret) {
	case MBEDTLS_ERR_SSL_WANT_READ:
	case MBEDTLS_ERR_SSL_WANT_WRITE:
		return ret;
	case MBEDTLS_ERR_SSL_CONN_EOF:
	case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
	case MBEDTLS_ERR_NET_CONN_RESET:
		return TLS_CLOSED;
	default:
		return ret;
	}
}

#ifdef K2P_TEST
/* The whole handshake, as far as it goes without waiting. */
static int tls_handshake(struct tls_conn *c)
{
	int r;
	while ((r = tls_handshake_step(c)) == TLS_MORE)
		;
	return r;
}
#endif

/*
 * Bytes read (> 0), 0 when the peer closed (close_notify or plain EOF), TLS_WANT_*,
 * TLS_POST_HS, or a negative error.
 *
 * TLS_POST_HS: the client sent a handshake message after the handshake.  From a client
 * that is a KeyUpdate (RFC 8446 4.6.3), which Mbed TLS 3.6 cannot process: it fails the
 * read without telling the peer.  The connection cannot go on (the client now encrypts
 * with keys we do not have), so it ends here with an unexpected_message alert, and the
 * caller logs why.  Clients rekey on their own only after very many records (OpenSSL:
 * never by default), so this costs a connection at most, and it reconnects.
 */
static int tls_read(struct tls_conn *c, uint8_t *buf, size_t n)
{
	for (;;) {
		int ret = mbedtls_ssl_read(&c->ssl, buf, n);
		if (ret >= 0)
			return ret;          /* 0 only at EOF */
		switch (ret) {
		case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
		case MBEDTLS_ERR_SSL_CONN_EOF:
			return 0;
		case MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE:
			/* best effort: a full socket buffer just loses the alert */
			(void)mbedtls_ssl_send_alert_message(&c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
							     MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE);
			return TLS_POST_HS;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
		case MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET:
			continue;            /* client side only; harmless to retry */
#endif
		default:
			return ret;
		}
	}
}

/* Bytes accepted (> 0; may be fewer than n: call again for the rest), TLS_WANT_*, or a
 * negative error.  After TLS_WANT_WRITE the caller repeats the call with the same buf
 * and n: Mbed TLS has already encrypted part of them into its out buffer. */
static int tls_write(struct tls_conn *c, const uint8_t *buf, size_t n)
{
	int ret = mbedtls_ssl_write(&c->ssl, buf, n);
	if (ret == MBEDTLS_ERR_NET_CONN_RESET)
		return TLS_CLOSED;
	return ret;
}

/* Nonzero when Mbed TLS holds bytes that poll() cannot see: decrypted data not yet
 * read, or a record already in its input buffer.  The loop must call tls_read again
 * before it waits. */
static int tls_pending(const struct tls_conn *c)
{
	return mbedtls_ssl_get_bytes_avail(&c->ssl) > 0 || mbedtls_ssl_check_pending(&c->ssl);
}

/* 0 when the alert is out (or the peer is gone: nothing more to say), TLS_WANT_WRITE,
 * or a negative error. */
static int tls_close_notify(struct tls_conn *c)
{
	int ret = mbedtls_ssl_close_notify(&c->ssl);
	if (ret == MBEDTLS_ERR_NET_CONN_RESET)
		return 0;
	return ret;
}

/* The verified client certificate's subject ("CN=..."), or "" without one. */
static void tls_peer_subject(const struct tls_conn *c, char *out, size_t cap)
{
	const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&c->ssl);
	out[0] = '\0';
	if (peer != NULL && mbedtls_x509_dn_gets(out, cap, &peer->subject) < 0)
		out[0] = '\0';
}
/* ==== 10. Connections and the event loop ================================== */

/*
 * N event loops (workers = N), each a thread that owns its connections, its PKCS#11
 * sessions and its caches (an op_thread).  A request is read, decoded, run against the
 * module, encoded and written by the loop that owns its connection: no hand-off between
 * threads on the way.  Each loop waits with epoll, so that an idle connection costs
 * nothing per request; poll() serves where epoll is missing and with workers = 0, where
 * one loop on the main thread does everything.
 *
 * Loop 0, the main thread, accepts: it checks the limits, picks the loop that owns the
 * fewest connections and hands the new one over through that loop's inbox (a list and an
 * eventfd); the TLS handshake then runs on the owner.  Loop 0 serves no connection itself
 * (but with workers = 0), so that a module call that hangs never holds up new ones.  A request whose operation
 * may keep the module busy for seconds (section 7's OPX_SLOW rows) goes to the slow pool
 * of section 8, which answers it and hands the connection back through the same inbox.
 *
 * A connection is a small state machine:
 *
 *   HANDSHAKE -> READ_HEAD -> (WAIT_JOB) -> READ_BODY -> (BUSY) -> WRITE -> READ_HEAD ...
 *                                                  refused message: WRITE -> DRAIN -> closed
 *
 * While BUSY a slow-pool thread holds the connection: it runs the request and sends the
 * response itself; the loop neither watches nor times out the connection until it comes
 * back.  Every limit (connections, message size, time-outs) costs one connection when it
 * is hit, never the daemon, and no client can keep others out: a source address holds at
 * most max-connections-per-source connections; a connection has first-request-timeout
 * (short) to send its first request; and when the table is full, the oldest connection
 * that has not sent a request yet makes room for the newcomer.  Those counts span every
 * loop: a registry of all connections under one mutex, touched at accept and at close.
 * Refusals are logged at most once a second per source address.
 */

enum { CS_HANDSHAKE, CS_READ_HEAD, CS_WAIT_JOB, CS_READ_BODY, CS_BUSY, CS_WRITE, CS_DRAIN,
       CS_CLOSED };

/* After refusing a message, what the client still sends is read and dropped for this long:
 * closing a socket with unread data makes the kernel send a reset, and the client would
 * lose the answer that says why. */
#define EV_DRAIN_MS 2000

#define EV_MAX_LISTEN 8
#define EV_BURST      4         /* answers in a row on one connection before the others' turn */
#define EV_EVENTS     64        /* epoll events taken per wait */
#define EV_HANDSHAKES 1         /* handshake turns per round, after the requests */
#define EV_HS_SLICE_NS 100000   /* a handshake's turn: steps until this much time is used */
#define EV_STUCK_MS   50        /* a loop this long in one request gets no new connection */

#define EV_NOTES   64           /* source addresses whose last refusal line is remembered */
#define EV_NOTE_MS 1000         /* at most one refusal line a second per source */
#define EV_POLL_RETRY_MS 10     /* pause before waiting again after EAGAIN / ENOMEM */

/* epoll data of what is not a connection (a connection's is its pointer) */
enum { EV_TAG_WAKE = 1, EV_TAG_SIG, EV_TAG_LISTEN };

/* Where a connection comes from, for max-connections-per-source: an IPv4 address (also
 * when mapped into IPv6), or the /64 prefix of an IPv6 address, which one host usually
 * has whole. */
struct conn_src {
	uint8_t v6;
	uint8_t a[8];
};

/* Owned by its loop's thread, except while BUSY (then by a slow-pool thread). */
struct conn {
	struct conn *next_wait;         /* WAIT_JOB queue */
	struct conn *next_post;         /* an inbox; then the list of the closed */
	struct ev *ev;                  /* the loop that owns it */
	struct tls_conn tls;
	struct wrk_job *job;
	uint64_t deadline;              /* monotonic ms: handshake, first-request or idle time-out */
	uint64_t since;                 /* monotonic ms: accepted */
	size_t head_len, need, off;     /* bytes of head read; message length; progress */
	int fd, state, want_write;      /* want_write: TLS needs POLLOUT to progress */
	int idx;                        /* place in the registry; -1: taken out (under srv->mu) */
	int lidx;                       /* place in its loop's list */
	int pfd;                        /* poll: place in ev->pfd of this round, or -1 */
	uint32_t watched;               /* epoll: the events registered for it, 0: none */
	int close_after;                /* close once the response is written */
	int corked;                     /* TCP_CORK set: the server's flight goes out whole */
	int requested;                  /* has sent a well-formed request message */
	int again;                      /* to be stepped next round without waiting (EV_BURST
					 * answers given, or a handshake step done): its place in
					 * ev->againv + 1; 0: not there */
	int started;                    /* atomic: a request has begun (loop 0 reads it) */
	int evict;                      /* atomic: loop 0 closed it to make room */
	struct conn_src src;
	unsigned long id, nreq;         /* connection number (log lines), requests answered */
	uint64_t t0_ns, t1_ns;          /* monotonic: request read whole; response written */
	uint8_t head[8];
	char peer[64];
};

struct ev_note {
	struct conn_src src;
	uint64_t at;                    /* when a line about src was last logged; 0: unused */
	unsigned long quiet;            /* lines left out since */
};

/* One event loop. */
struct ev {
	struct ev_srv *srv;
	struct op_thread *ctx;          /* its sessions and caches */
	struct wrk_store store;         /* its jobs */
	pthread_t th;
	int id, epfd, efd;              /* epfd -1: poll(); efd: the inbox's eventfd */
	struct conn **conns;            /* the nconn connections it owns, densely */
	int nconn, cap, nagain;
	struct conn **againv;           /* the nagain connections with c->again */
	struct pollfd *pfd;             /* poll(): cap + EV_MAX_LISTEN + 2 entries */
	struct conn **pfd_conn;
	struct conn *wait_head, *wait_tail, *dead;
	uint64_t next_due;              /* no deadline of its connections comes earlier */
	uint64_t poll_warned;           /* when a failing wait was last logged */
	pthread_mutex_t mu;             /* the inbox: */
	struct conn *in_new, *in_done;  /*   connections handed over; back from the slow pool */
	int in_evict, woken;            /*   some connection was evicted; efd written */
	int nown;                       /* atomic: connections owned or handed over */
	uint64_t busy_since;            /* atomic: monotonic ms a request began running; 0: none */
	unsigned long served, requests; /* atomic: answers written, requests logged */
};

/* What the loops share.  The caller sets the first group, ev_start the rest. */
struct ev_srv {
	struct tls_server *tls;
	int lfd[EV_MAX_LISTEN], nlisten, sig_fd;
	int max_conn, max_per_src;
	size_t max_msg;
	uint64_t handshake_ms, first_ms, idle_ms;
	uint64_t watchdog_ms;           /* WATCHDOG=1 every watchdog_ms; 0: none */

	struct ev *loops;
	int nloops, stop;               /* stop: atomic */
	int serve;                      /* the first loop that serves connections: 1 when loop 0
					 * only accepts, 0 when it does everything (workers = 0) */
	struct wrk_pool slow;
	pthread_mutex_t mu;             /* the registry: */
	struct conn **conns;            /*   every open connection, densely */
	int nconn;
	/* loop 0's own */
	uint64_t accept_after;          /* out of descriptors: accept again from then on */
	uint64_t watchdog_at, start_ms;
	int listening, next_loop;       /* listening: the sockets are in loop 0's epoll set */
	unsigned long refused, evicted, notes_lost, conn_total;
	struct ev_note notes[EV_NOTES];
};

static volatile sig_atomic_t ev_stop_signal, ev_hup_signal, ev_usr1_signal;
static int ev_sig_pipe[2] = { -1, -1 };

static void ev_on_signal(int sig)
{
	int saved = errno;
	if (sig == SIGHUP)
		ev_hup_signal = 1;
	else if (sig == SIGUSR1)
		ev_usr1_signal = 1;
	else
		ev_stop_signal = 1;
	if (ev_sig_pipe[1] >= 0) {
		ssize_t r = write(ev_sig_pipe[1], "", 1);
		(void)r;
	}
	errno = saved;
}

static void conn_src_of(const struct sockaddr_storage *ss, struct conn_src *s)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	memset(s, 0, sizeof *s);
	if (ss->ss_family == AF_INET) {
		memcpy(s->a, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
		if (memcmp(a, mapped, sizeof mapped) == 0) {
			memcpy(s->a, a + 12, 4);
		} else {
			s->v6 = 1;
			memcpy(s->a, a, 8);
		}
	}
}

static int conn_src_eq(const struct conn_src *a, const struct conn_src *b)
{
	return a->v6 == b->v6 && memcmp(a->a, b->a, sizeof a->a) == 0;
}

/*
 * A line about src, at most one a second per source address: a client that opens
 * connections in a loop must not fill the log.  Lines left out are counted, and the next
 * line says how many.  Loop 0 only: it accepts.  When all EV_NOTES remembered sources
 * were logged within the second, a new source stays quiet too (counted in notes_lost,
 * reported at exit).
 */
static void ev_note(struct ev_srv *ev, const struct conn_src *src, int level, const char *fmt, ...)
	PRINTF_LIKE(4, 5);
static void ev_note(struct ev_srv *ev, const struct conn_src *src, int level, const char *fmt, ...)
{
	uint64_t now = mono_ms();
	struct ev_note *n = NULL, *oldest = NULL;
	unsigned long quiet = 0;
	char line[256];
	va_list ap;

	for (int i = 0; i < EV_NOTES && !n; i++) {
		struct ev_note *e = &ev->notes[i];
		if (e->at && conn_src_eq(&e->src, src))
			n = e;
		else if (!oldest || e->at < oldest->at)
			oldest = e;
	}
	if (n) {
		if (now - n->at < EV_NOTE_MS) {
			n->quiet++;
			return;
		}
		quiet = n->quiet;
	} else {
		if (oldest->at && now - oldest->at < EV_NOTE_MS) {
			ev->notes_lost++;
			return;
		}
		n = oldest;
		n->src = *src;
	}
	n->at = now;
	n->quiet = 0;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (quiet)
		log_msg(level, "%s (and %lu more from there not logged)", line, quiet);
	else
		log_msg(level, "%s", line);
}

static void conn_peer_name(const struct sockaddr_storage *ss, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
		port = ntohs(a->sin_port);
		snprintf(out, n, "%s:%d", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
		port = ntohs(a->sin6_port);
		snprintf(out, n, "[%s]:%d", host, port);
	} else {
		snprintf(out, n, "peer");
	}
}

/* ---- the inbox, the registry, watching --------------------------------------------- */

static void ev_wake(struct ev *l)
{
	uint64_t one = 1;
	ssize_t r = write(l->efd, &one, sizeof one);
	(void)r;                /* a full eventfd counter still wakes the loop */
}

/* Put c on one of l's inbox lists (another thread's doing), or with c NULL say that one of
 * l's connections was evicted; wake l, once per batch. */
static void ev_post(struct ev *l, struct conn **list, struct conn *c)
{
	pthread_mutex_lock(&l->mu);
	if (c) {
		c->next_post = *list;
		*list = c;
	} else {
		l->in_evict = 1;
	}
	int woken = l->woken;
	l->woken = 1;
	pthread_mutex_unlock(&l->mu);
	if (!woken)
		ev_wake(l);
}

/* Under srv->mu. */
static void ev_reg_del(struct ev_srv *s, struct conn *c)
{
	if (c->idx < 0)
		return;
	struct conn *last = s->conns[s->nconn - 1];
	s->conns[c->idx] = last;
	last->idx = c->idx;
	c->idx = -1;
	__atomic_store_n(&s->nconn, s->nconn - 1, __ATOMIC_RELAXED);
}

/* The earliest deadline is kept, so that the loop looks at time-outs only when one is due:
 * with a thousand idle connections, a request does not walk them all. */
static void conn_due(struct ev *ev, struct conn *c, uint64_t at)
{
	c->deadline = at;
	if (at < ev->next_due)
		ev->next_due = at;
}

static void conn_close(struct ev *ev, struct conn *c);

/* On (1) or off (0) the list of connections that the next round steps without waiting:
 * what Mbed TLS has buffered, or a handshake's next step, no socket event announces. */
static void conn_again(struct ev *ev, struct conn *c, int on)
{
	if (on == (c->again > 0))
		return;
	if (on) {
		ev->againv[ev->nagain++] = c;
		c->again = ev->nagain;
		return;
	}
	struct conn *last = ev->againv[--ev->nagain];
	ev->againv[c->again - 1] = last;
	last->again = c->again;
	c->again = 0;
}

/* epoll: register what c waits for, when that changed.  A connection the slow pool holds,
 * or that waits for a job, is not watched (level-triggered, its readiness would spin). */
static void ev_watch(struct ev *ev, struct conn *c)
{
	if (ev->epfd < 0 || c->state == CS_CLOSED)
		return;
	uint32_t want = c->state == CS_BUSY || c->state == CS_WAIT_JOB ? 0 :
			c->want_write ? EPOLLOUT : EPOLLIN;
	if (want == c->watched)
		return;
	struct epoll_event e;
	memset(&e, 0, sizeof e);        /* a 32-bit pointer fills half of data */
	e.events = want;
	e.data.ptr = c;
	int op = !c->watched ? EPOLL_CTL_ADD : !want ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
	if (epoll_ctl(ev->epfd, op, c->fd, &e) != 0) {
		log_warn("%s: epoll_ctl: %s; connection closed", c->peer, strerror(errno));
		conn_close(ev, c);
		return;
	}
	c->watched = want;
}

/* The connection leaves the loop: its descriptor, TLS state and job now; the memory at
 * the end of the round, since this round's events may still name it. */
static void conn_close(struct ev *ev, struct conn *c)
{
	struct ev_srv *s = ev->srv;
	if (c->state == CS_WAIT_JOB) {  /* unlink from the wait queue */
		struct conn **pp = &ev->wait_head, *prev = NULL;
		while (*pp && *pp != c) {
			prev = *pp;
			pp = &(*pp)->next_wait;
		}
		if (*pp) {
			*pp = c->next_wait;
			if (ev->wait_tail == c)
				ev->wait_tail = prev;
		}
	}
	if (c->job) {
		if (c->state == CS_READ_BODY)   /* a request cut off: what came may hold a PIN */
			c->job->in_len = c->off;
		wrk_job_put(&ev->store, c->job);
		c->job = NULL;
	}
	if (c->pfd >= 0)                /* polled in this round: its entry must not be used */
		ev->pfd_conn[c->pfd] = NULL;
	conn_again(ev, c, 0);
	tls_conn_free(&c->tls);
	close(c->fd);                   /* also takes it out of the epoll set */
	pthread_mutex_lock(&s->mu);
	ev_reg_del(s, c);
	pthread_mutex_unlock(&s->mu);
	if (c->lidx >= 0) {
		ev->conns[c->lidx] = ev->conns[--ev->nconn];
		ev->conns[c->lidx]->lidx = c->lidx;
	}
	__atomic_sub_fetch(&ev->nown, 1, __ATOMIC_RELAXED);
	log_info("close conn=%lu peer=%s requests=%lu", c->id, c->peer, c->nreq);
	c->state = CS_CLOSED;
	c->next_post = ev->dead;
	ev->dead = c;
}

/* "NAME:count,..." of the nonzero counters c[i] named by t[i] (the last: OTHER), or "-". */
static void ev_counts(char *out, size_t cap, const uint64_t *c, const struct kmip_name *t,
		      size_t n)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i <= n && o < cap; i++) {
		uint64_t v = stat_get(&c[i]);
		if (v == 0)
			continue;
		int w = snprintf(out + o, cap - o, "%s%s:%llu", o ? "," : "", i < n ? kmip_name_text(&t[i]) : "OTHER",
				 (unsigned long long)v);
		if (w < 0)
			break;
		o += (size_t)w;
	}
	if (o == 0)
		snprintf(out, cap, "-");
}

/* Requests logged (what = 0) or answers written (1) by all loops. */
static unsigned long ev_sum(const struct ev_srv *s, int what)
{
	unsigned long n = 0;
	for (int i = 0; i < s->nloops; i++)
		n += __atomic_load_n(what ? &s->loops[i].served : &s->loops[i].requests,
				     __ATOMIC_RELAXED);
	return n;
}

/*
 * SIGUSR1: one line of counters since start.  Latency is that of the request lines, from
 * the request read whole to the response written, as the upper bound of its histogram
 * bucket (at most 25 % above).
 */
static void ev_report(struct ev_srv *s)
{
	static char ops[2048], fails[2048];
	uint64_t hist[HIST_BUCKETS];
	for (unsigned b = 0; b < HIST_BUCKETS; b++)
		hist[b] = stat_get(&hist_req[b]);
	ev_counts(ops, sizeof ops, op_stats.items, kmip_op_names, ARRAY_LEN(kmip_op_names));
	ev_counts(fails, sizeof fails, op_stats.fails, kmip_rr_names, ARRAY_LEN(kmip_rr_names));
	log_report("counters uptime_s=%llu conn_open=%d conn_total=%lu conn_refused=%lu "
		   "requests=%lu ops=%s fails=%s p11_calls=%llu p11_usec=%llu p50_usec=%llu "
		   "p99_usec=%llu", (unsigned long long)((mono_ms() - s->start_ms) / 1000),
		   __atomic_load_n(&s->nconn, __ATOMIC_RELAXED), s->conn_total, s->refused,
		   ev_sum(s, 0), ops, fails,
		   (unsigned long long)stat_get(&p11_stats.calls),
		   (unsigned long long)(stat_get(&p11_stats.ns) / 1000),
		   (unsigned long long)hist_quantile(hist, 0.5),
		   (unsigned long long)hist_quantile(hist, 0.99));
}

/*
 * A response is out (or its write failed): the request's line at info, an authentication
 * failure at warning, the latency into the histogram.  The line's fields, in this order:
 *   request conn=N peer=ADDR:PORT user=NAME op=OP[,OP...] uid=UID[,UID...]
 *           result=SUCCESS|REASON[,...] usec=N
 */
static void conn_log_request(struct ev *ev, struct conn *c)
{
	const struct op_rec *g = &c->job->rec;
	uint64_t end = c->t1_ns ? c->t1_ns : mono_ns();
	unsigned long long us = (unsigned long long)((end - c->t0_ns) / 1000u);
	hist_add(us);
	__atomic_add_fetch(&ev->requests, 1, __ATOMIC_RELAXED);
	c->nreq++;
	if (log_state.level < LV_WARNING || (log_state.level < LV_INFO && !g->auth_rr))
		return;

	char user[4 * OP_USER_NAME_MAX + 1];
	log_word(user, sizeof user, g->user, g->has_user ? g->user_len : 0, 0);
	if (g->auth_rr) {
		char why[4 * sizeof g->auth_msg];
		log_word(why, sizeof why, (const uint8_t *)g->auth_msg, strlen(g->auth_msg), 1);
		log_warn("auth-fail conn=%lu peer=%s user=%s result=%s why=\"%s\"", c->id, c->peer,
			 user, kmip_reason_name(g->auth_rr), why);
	}
	if (log_state.level < LV_INFO)
		return;
	/* One item, the common case, needs no list. */
	char opname[12], ops[OP_REC_ITEMS * 28 + 16], res[OP_REC_ITEMS * 36 + 16];
	const char *op = "-", *result = g->msg_rr ? kmip_reason_name(g->msg_rr) : "-";
	if (g->n == 1) {
		op = op_enum_name(KT_OPERATION, g->op[0], opname);
		if (!g->msg_rr)
			result = g->rr[0] ? kmip_reason_name(g->rr[0]) : "SUCCESS";
	} else if (g->n > 1) {
		size_t no = 0, nr = 0;
		int shown = g->n < OP_REC_ITEMS ? g->n : OP_REC_ITEMS;
		for (int i = 0; i < shown; i++) {
			const char *sep = i ? "," : "";
			no += (size_t)snprintf(ops + no, sizeof ops - no, "%s%s", sep,
					       op_enum_name(KT_OPERATION, g->op[i], opname));
			nr += (size_t)snprintf(res + nr, sizeof res - nr, "%s%s", sep,
					       g->rr[i] ? kmip_reason_name(g->rr[i]) : "SUCCESS");
		}
		if (g->n > shown)
			snprintf(ops + no, sizeof ops - no, ",+%d", g->n - shown);
		op = ops;
		if (!g->msg_rr)
			result = res;
	}
	log_info("request conn=%lu peer=%s user=%s op=%s uid=%s result=%s usec=%llu", c->id,
		 c->peer, user, op, g->uids[0] ? g->uids : "-", result, us);
}

/*
 * A short answer for a message that is not read whole (oversize, or a header that cannot
 * start a KMIP message); the connection then closes.  It needs a job for its buffer;
 * without one the connection just closes.
 */
static void conn_refuse(struct ev *ev, struct conn *c, uint32_t reason, const char *why)
{
	log_info("%s: %s", c->peer, why);
	op_stat_fail(reason);
	if (!c->job)
		c->job = wrk_job_get(&ev->store, c);
	if (!c->job) {
		conn_close(ev, c);
		return;
	}
	c->job->in_len = 0;
	c->job->rec = (struct op_rec){ .conn = c->id, .msg_rr = reason };
	c->t0_ns = mono_ns();
	c->t1_ns = 0;
	c->job->out_len = op_error_response(c->job->out, c->job->out_cap, reason, why);
	c->state = CS_WRITE;
	c->off = 0;
	c->close_after = 1;
}

/* How long the client may take to send (the rest of) a request: shorter before its first. */
static uint64_t conn_patience(const struct ev_srv *s, const struct conn *c)
{
	return c->requested || s->first_ms > s->idle_ms ? s->idle_ms : s->first_ms;
}

static void conn_idle(struct ev *ev, struct conn *c)
{
	c->state = CS_READ_HEAD;
	c->head_len = 0;
	conn_due(ev, c, mono_ms() + conn_patience(ev->srv, c));
}

/* Queue c until a job is free (bounds the memory in flight). */
static void conn_wait_job(struct ev *ev, struct conn *c)
{
	c->state = CS_WAIT_JOB;
	c->next_wait = NULL;
	if (ev->wait_tail)
		ev->wait_tail->next_wait = c;
	else
		ev->wait_head = c;
	ev->wait_tail = c;
}

/* The request is complete: serve it here and now, or, when an operation of it may keep
 * the module busy for seconds, hand it to the slow pool. */
static void conn_dispatch(struct ev *ev, struct conn *c)
{
	struct wrk_job *j = c->job;
	c->t0_ns = mono_ns();
	c->t1_ns = 0;
	c->off = 0;
	j->rec.conn = c->id;
	ev->ctx->rec = &j->rec;
	__atomic_store_n(&ev->busy_since, c->t0_ns / 1000000u, __ATOMIC_RELAXED);
	j->out_len = op_handle(ev->ctx, j->in, j->in_len, j->out, j->out_cap);
	__atomic_store_n(&ev->busy_since, 0, __ATOMIC_RELAXED);
	c->requested |= j->rec.parsed;
	if (j->out_len == OP_DEFERRED) {
		c->state = CS_BUSY;
		wrk_submit(&ev->srv->slow, j);
		return;
	}
	c->state = CS_WRITE;
	conn_due(ev, c, mono_ms() + ev->srv->idle_ms);
}

/*
 * On the slow pool's thread, as soon as the response is encoded: send it, so that the
 * answer does not wait for the loop to wake up, then give the connection back to its
 * loop, which takes over whatever is left (TLS wanting to wait, or an error).
 */
static void conn_deliver(struct wrk_job *j)
{
	struct conn *c = j->owner;
	while (c->off < j->out_len) {
		int r = tls_write(&c->tls, j->out + c->off, j->out_len - c->off);
		if (r <= 0)
			break;
		c->off += (size_t)r;
	}
	if (c->off == j->out_len)
		c->t1_ns = mono_ns();
	ev_post(c->ev, &c->ev->in_done, c);
}

/* Head complete: check the size before buffering anything more. */
static void conn_got_head(struct ev *ev, struct conn *c)
{
	long total = ttlv_frame(c->head, sizeof c->head);
	if (total < 0) {
		conn_refuse(ev, c, RR_INVALID_MESSAGE, "not a KMIP message (bad TTLV header)");
		return;
	}
	if ((size_t)total > ev->srv->max_msg) {
		char why[96];
		snprintf(why, sizeof why, "message of %ld bytes exceeds max-message-size %zu",
			 total, ev->srv->max_msg);
		conn_refuse(ev, c, RR_INVALID_MESSAGE, why);
		return;
	}
	c->need = (size_t)total;
	__atomic_store_n(&c->started, 1, __ATOMIC_RELAXED);
	c->job = wrk_job_get(&ev->store, c);
	if (!c->job) {
		conn_wait_job(ev, c);
		return;
	}
	memcpy(c->job->in, c->head, sizeof c->head);
	c->off = sizeof c->head;
	c->state = CS_READ_BODY;
}

static void conn_log_post_hs(const struct conn *c)
{
	log_info("%s: closed: the client sent a TLS KeyUpdate (or another post-handshake "
		 "message), which Mbed TLS cannot process; answered with an unexpected_message "
		 "alert", c->peer);
}

/* TLS wants the socket readable or writable before it can go on: poll for that. */
static int conn_must_wait(struct conn *c, int r)
{
	if (r != TLS_WANT_READ && r != TLS_WANT_WRITE)
		return 0;
	c->want_write = r == TLS_WANT_WRITE;
	return 1;
}

/*
 * Advance c as far as it goes without blocking.  Returns when TLS wants the socket
 * (c->want_write tells which way), when a job is needed or running, after closing, or
 * after EV_BURST answers: a client that streams requests must not hold the loop; c->again
 * then has the loop come back to it in the next round without waiting for the socket (what
 * Mbed TLS has buffered, epoll cannot see).  A handshake takes turns the same way.
 */
static void conn_advance(struct ev *ev, struct conn *c)
{
	int answered = 0;
	uint64_t slice = 0;             /* monotonic ns: this turn's handshake work began */
	conn_again(ev, c, 0);
	for (;;) {
		int r;
		c->want_write = 0;
		switch (c->state) {
		case CS_HANDSHAKE:
			if (!slice)
				slice = mono_ns();
			r = tls_handshake_step(&c->tls);
			if (r == TLS_MORE) {
				if (mono_ns() - slice < EV_HS_SLICE_NS)
					break;
				conn_again(ev, c, 1);
				return;
			}
			if (c->corked && r != TLS_WANT_WRITE) {
				/* the flight is written (or failed): out with it */
				int off = 0;
				setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
				c->corked = 0;
			}
			if (conn_must_wait(c, r))
				return;
			if (r < 0) {
				log_msg(r == TLS_CLOSED ? LV_DEBUG : LV_INFO, "%s: TLS handshake failed: %s",
					c->peer, tls_strerror(r));
				conn_close(ev, c);
				return;
			}
			if (ev->srv->tls->verify_clients) {
				char subject[256];
				tls_peer_subject(&c->tls, subject, sizeof subject);
				log_info("%s: client certificate %s", c->peer, subject);
			} else {
				log_debug("%s: TLS handshake done", c->peer);
			}
			conn_idle(ev, c);
			break;
		case CS_READ_HEAD:
			r = tls_read(&c->tls, c->head + c->head_len, sizeof c->head - c->head_len);
			if (conn_must_wait(c, r))
				return;
			if (r <= 0) {
				if (r == TLS_POST_HS)
					conn_log_post_hs(c);
				else if (r < 0 && c->head_len)
					log_info("%s: read failed: %s", c->peer, tls_strerror(r));
				conn_close(ev, c);
				return;
			}
			c->head_len += (size_t)r;
			if (c->head_len == sizeof c->head)
				conn_got_head(ev, c);
			break;
		case CS_READ_BODY:
			r = tls_read(&c->tls, c->job->in + c->off, c->need - c->off);
			if (conn_must_wait(c, r))
				return;
			if (r <= 0) {
				if (r == TLS_POST_HS)
					conn_log_post_hs(c);
				else
					log_info("%s: connection lost inside a request", c->peer);
				conn_close(ev, c);
				return;
			}
			c->off += (size_t)r;
			if (c->off == c->need) {
				c->job->in_len = c->need;
				conn_dispatch(ev, c);
			}
			break;
		case CS_WRITE:
			if (c->off == c->job->out_len) {
				conn_log_request(ev, c);
				wrk_job_put(&ev->store, c->job);
				c->job = NULL;
				__atomic_add_fetch(&ev->served, 1, __ATOMIC_RELAXED);
				if (c->close_after) {
					tls_close_notify(&c->tls);
					shutdown(c->fd, SHUT_WR);
					c->state = CS_DRAIN;
					conn_due(ev, c, mono_ms() + EV_DRAIN_MS);
					break;
				}
				conn_idle(ev, c);
				if (++answered == EV_BURST) {
					conn_again(ev, c, 1);
					return;
				}
				/* The client is usually still reading this answer: a read now
				 * would find nothing, one system call for naught.  The socket
				 * says when its next request comes; Mbed TLS's buffer, not. */
				if (!tls_pending(&c->tls))
					return;
				break;
			}
			r = tls_write(&c->tls, c->job->out + c->off, c->job->out_len - c->off);
			if (conn_must_wait(c, r))
				return;
			if (r < 0) {
				conn_log_request(ev, c);
				log_info("%s: write failed: %s", c->peer, tls_strerror(r));
				conn_close(ev, c);
				return;
			}
			c->off += (size_t)r;
			conn_due(ev, c, mono_ms() + ev->srv->idle_ms);
			break;
		case CS_DRAIN: {
			uint8_t sink[4096];
			ssize_t n = recv(c->fd, sink, sizeof sink, 0);
			if (n > 0)
				break;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				return;
			conn_close(ev, c);      /* the client closed too, or failed */
			return;
		}
		default:                /* WAIT_JOB, BUSY, CLOSED: nothing to do here */
			return;
		}
	}
}

static void conn_step(struct ev *ev, struct conn *c)
{
	conn_advance(ev, c);
	ev_watch(ev, c);
}

/* ---- accepting, on loop 0 ------------------------------------------------------------ */

/* Connections open from src.  Under srv->mu. */
static int ev_from_src(const struct ev_srv *s, const struct conn_src *src)
{
	int n = 0;
	for (int i = 0; i < s->nconn; i++)
		n += conn_src_eq(&s->conns[i]->src, src);
	return n;
}

/* The connection to close when the table is full and a newcomer knocks: the oldest one
 * that has not begun a request since it connected (still in its handshake, or waiting
 * for its first request), or NULL when every connection has.  Under srv->mu. */
static struct conn *ev_victim(const struct ev_srv *s)
{
	struct conn *v = NULL;
	for (int i = 0; i < s->nconn; i++) {
		struct conn *c = s->conns[i];
		if (__atomic_load_n(&c->started, __ATOMIC_RELAXED))
			continue;
		if (!v || c->since < v->since)
			v = c;
	}
	return v;
}

/* The loop that owns the fewest connections; among equals, the next in turn.  A loop that
 * has been inside one request for EV_STUCK_MS (a module call that hangs) is passed over
 * while another is not: the newcomer's handshake would wait for it. */
static struct ev *ev_pick(struct ev_srv *s)
{
	struct ev *best = NULL;
	int least = INT_MAX;
	uint64_t now = mono_ms();
	int n = s->nloops - s->serve;
	for (int k = 0; k < n; k++) {
		struct ev *l = &s->loops[s->serve + (s->next_loop + k) % n];
		uint64_t busy = __atomic_load_n(&l->busy_since, __ATOMIC_RELAXED);
		int own = __atomic_load_n(&l->nown, __ATOMIC_RELAXED);
		if (busy && now > busy + EV_STUCK_MS)
			own = own > INT_MAX / 2 ? INT_MAX - 1 : INT_MAX / 2 + own;
		if (own < least) {
			least = own;
			best = l;
		}
	}
	s->next_loop = (best->id - s->serve + 1) % n;
	return best;
}

/* A new connection joins its loop, on that loop's thread: the handshake starts.  A loop
 * owns at most max-connections registered ones plus as many evicted ones not yet closed,
 * so its list (twice max-connections) cannot be full; were it, the newcomer goes. */
static void ev_adopt(struct ev *ev, struct conn *c)
{
	if (ev->nconn == ev->cap) {
		c->lidx = -1;
		conn_close(ev, c);
		return;
	}
	c->lidx = ev->nconn;
	ev->conns[ev->nconn++] = c;
	conn_due(ev, c, c->since + ev->srv->handshake_ms);
	ev_watch(ev, c);        /* its ClientHello is taken in a round, in its turn */
}

/* Is there room for a newcomer from src?  1: yes, after closing *victim if set (taken out
 * of the registry already); 0: refused, and said so.  Under srv->mu. */
static int ev_admit(struct ev_srv *s, const struct conn_src *src, const char *peer,
		    struct conn **victim)
{
	*victim = NULL;
	if (ev_from_src(s, src) >= s->max_per_src) {
		s->refused++;
		ev_note(s, src, LV_WARNING, "%s: refused, max-connections-per-source (%d) reached",
			peer, s->max_per_src);
		return 0;
	}
	if (s->nconn < s->max_conn)
		return 1;
	struct conn *old = ev_victim(s);
	if (!old) {
		s->refused++;
		ev_note(s, src, LV_WARNING, "%s: refused, max-connections (%d) reached and every "
			"connection has sent a request", peer, s->max_conn);
		return 0;
	}
	s->evicted++;
	ev_note(s, &old->src, LV_INFO, "%s: closed to make room for %s: max-connections (%d) "
		"reached, and it has sent no request in %llu ms", old->peer, peer, s->max_conn,
		(unsigned long long)(mono_ms() - old->since));
	ev_reg_del(s, old);
	__atomic_store_n(&old->evict, 1, __ATOMIC_RELAXED);
	*victim = old;
	return 1;
}

/* A connection loop 0 took out of the registry is closed by its owner, here or there. */
static void ev_evict(struct ev *ev, struct conn *c)
{
	if (c->state == CS_BUSY) {      /* began a request after all: close once answered */
		c->close_after = 1;
		return;
	}
	if (c->state == CS_READ_HEAD)
		tls_close_notify(&c->tls);
	conn_close(ev, c);
}

static void ev_accept(struct ev *ev, int lfd)
{
	struct ev_srv *s = ev->srv;
	for (;;) {
		struct sockaddr_storage ss = { 0 };
		socklen_t sl = sizeof ss;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The listening socket stays readable: stop watching it a while. */
				log_warn("accept: %s; pausing new connections for 1 s", strerror(errno));
				s->accept_after = mono_ms() + 1000;
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				log_warn("accept: %s", strerror(errno));
			}
			return;
		}
		char peer[64];
		struct conn_src src;
		struct conn *old;
		conn_peer_name(&ss, peer, sizeof peer);
		conn_src_of(&ss, &src);
		pthread_mutex_lock(&s->mu);
		int ok = ev_admit(s, &src, peer, &old);
		struct ev *owner = old ? old->ev : NULL;
		pthread_mutex_unlock(&s->mu);
		if (old && owner == ev) {
			ev_evict(ev, old);
		} else if (old) {
			ev_post(owner, NULL, NULL);
		}
		if (!ok) {
			close(fd);
			continue;
		}
		/* Corked until the server's first flight is written: ServerHello to Finished
		 * then leave in as few segments as they fit, not one each. */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		int corked = setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0;
		struct conn *c = calloc(1, sizeof *c);
		if (!c || tls_conn_init(s->tls, &c->tls, fd) != 0) {
			log_warn("%s: out of memory, connection refused", peer);
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->corked = corked;
		c->pfd = -1;
		c->src = src;
		c->state = CS_HANDSHAKE;
		c->since = mono_ms();
		memcpy(c->peer, peer, sizeof peer);
		c->id = ++s->conn_total;
		c->ev = ev_pick(s);
		__atomic_add_fetch(&c->ev->nown, 1, __ATOMIC_RELAXED);
		pthread_mutex_lock(&s->mu);
		c->idx = s->nconn;
		s->conns[s->nconn] = c;
		__atomic_store_n(&s->nconn, s->nconn + 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&s->mu);
		log_info("connect conn=%lu peer=%s", c->id, c->peer);
		if (c->ev == ev)
			ev_adopt(ev, c);
		else
			ev_post(c->ev, &c->ev->in_new, c);
	}
}

/* ---- a loop's round ------------------------------------------------------------------ */

/* What other threads left: new connections, connections back from the slow pool (the
 * response sent, or some of it), evictions. */
static void ev_inbox(struct ev *ev)
{
	uint64_t n;
	ssize_t r = read(ev->efd, &n, sizeof n);
	(void)r;
	pthread_mutex_lock(&ev->mu);
	struct conn *fresh = ev->in_new, *done = ev->in_done, *next;
	int evict = ev->in_evict;
	ev->in_new = ev->in_done = NULL;
	ev->in_evict = ev->woken = 0;
	pthread_mutex_unlock(&ev->mu);
	for (struct conn *c = fresh; c; c = next) {
		next = c->next_post;
		ev_adopt(ev, c);
	}
	for (struct conn *c = done; c; c = next) {
		next = c->next_post;
		c->state = CS_WRITE;
		conn_due(ev, c, mono_ms() + ev->srv->idle_ms);
		if (__atomic_load_n(&c->evict, __ATOMIC_RELAXED))
			c->close_after = 1;
		conn_step(ev, c);
	}
	for (int i = ev->nconn - 1; evict && i >= 0; i--) {     /* closing moves the last here */
		struct conn *c = ev->conns[i];
		if (c->state != CS_BUSY && __atomic_load_n(&c->evict, __ATOMIC_RELAXED))
			ev_evict(ev, c);
	}
}

/* Give freed jobs to the connections that wait for one, oldest first. */
static void ev_feed_waiting(struct ev *ev)
{
	while (ev->wait_head && ev->store.nfree > 0) {
		struct conn *c = ev->wait_head;
		ev->wait_head = c->next_wait;
		if (!ev->wait_head)
			ev->wait_tail = NULL;
		c->job = wrk_job_get(&ev->store, c);
		memcpy(c->job->in, c->head, sizeof c->head);
		c->off = sizeof c->head;
		c->state = CS_READ_BODY;
		/* The wait was the server's doing: the client's time starts now. */
		conn_due(ev, c, mono_ms() + conn_patience(ev->srv, c));
		conn_step(ev, c);
	}
}

/* Only when the earliest deadline has come: then every connection is looked at, and the
 * earliest deadline of those left is remembered. */
static void ev_timeouts(struct ev *ev, uint64_t now)
{
	if (now < ev->next_due)
		return;
	uint64_t next = UINT64_MAX;
	for (int i = ev->nconn - 1; i >= 0; i--) {      /* closing moves the last one here */
		struct conn *c = ev->conns[i];
		if (c->state == CS_BUSY || c->state == CS_WAIT_JOB)
			continue;
		if (c->deadline > now) {
			if (c->deadline < next)
				next = c->deadline;
			continue;
		}
		if (c->state != CS_DRAIN)
			log_info("%s: %s time-out", c->peer,
				 c->state == CS_HANDSHAKE ? "handshake" :
				 c->requested ? "idle" : "first-request");
		conn_close(ev, c);
	}
	ev->next_due = next;
}

#ifdef K2P_TEST
/* Test hook: the next ev_test_poll_fails waits (poll or epoll) fail with ev_test_poll_errno. */
static int ev_test_poll_fails, ev_test_poll_errno;
#endif

/*
 * Wait for events: epoll_wait into evs (returns their count), or poll over ev->pfd's
 * first npfd entries.  A failure is retried: EINTR is a signal (a debugger attaching
 * causes one too), EAGAIN and ENOMEM the kernel short of memory for a moment (logged at
 * most once a second, with a pause so that the loop does not spin).  Anything else
 * (EBADF, EFAULT, EINVAL) is a broken invariant of this loop.
 */
static int ev_wait(struct ev *ev, struct epoll_event *evs, nfds_t npfd, int timeout)
{
	int r;
#ifdef K2P_TEST
	/* one failure taken, by one loop: two loops taking the last would leave -1 */
	int left = __atomic_load_n(&ev_test_poll_fails, __ATOMIC_SEQ_CST);
	while (left > 0 && !__atomic_compare_exchange_n(&ev_test_poll_fails, &left, left - 1, 0,
							 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		;
	if (left > 0) {
		errno = __atomic_load_n(&ev_test_poll_errno, __ATOMIC_SEQ_CST);
		r = -1;
	} else
#endif
	r = ev->epfd >= 0 ? epoll_wait(ev->epfd, evs, EV_EVENTS, timeout) :
			    poll(ev->pfd, npfd, timeout);
	if (r >= 0 || errno == EINTR)
		return r < 0 ? 0 : r;
	int err = errno;
	const char *what = ev->epfd >= 0 ? "epoll_wait" : "poll";
	if (err != EAGAIN && err != ENOMEM)
		fatal("%s: %s", what, strerror(err));
	uint64_t now = mono_ms();
	if (!ev->poll_warned || now - ev->poll_warned >= EV_NOTE_MS) {
		ev->poll_warned = now;
		log_warn("%s: %s; retrying", what, strerror(err));
	}
	struct timespec pause = { 0, EV_POLL_RETRY_MS * 1000L * 1000L };
	nanosleep(&pause, NULL);
	return 0;
}

/* Loop 0: signals' flags, the watchdog, the listening sockets; the wait's end (ms). */
static uint64_t ev_chores(struct ev *ev, uint64_t now, uint64_t next)
{
	struct ev_srv *s = ev->srv;
	if (ev_hup_signal) {
		ev_hup_signal = 0;
		log_reopen();
	}
	if (ev_usr1_signal) {
		ev_usr1_signal = 0;
		ev_report(s);
	}
	if (s->watchdog_ms) {
		if (now >= s->watchdog_at) {
			notify_send("WATCHDOG=1");
			s->watchdog_at = now + s->watchdog_ms;
		}
		if (s->watchdog_at < next)
			next = s->watchdog_at;
	}
	int listen = now >= s->accept_after;
	if (!listen && s->accept_after < next)
		next = s->accept_after;
	if (ev->epfd >= 0 && listen != s->listening) {
		for (int i = 0; i < s->nlisten; i++) {
			struct epoll_event e = { .events = EPOLLIN };
			e.data.u64 = EV_TAG_LISTEN + (uint64_t)i;
			epoll_ctl(ev->epfd, listen ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, s->lfd[i], &e);
		}
		s->listening = listen;
	}
	return next;
}

/*
 * One event of this round: tag is an EV_TAG_* or a connection.  Handshakes come second
 * (pass 1): a full handshake costs a millisecond of CPU, a request some microseconds, so
 * every ready request is served first and then EV_HANDSHAKES handshake steps; the others
 * stay ready for the next round.  So a storm of new connections delays an established
 * one by about one handshake, not by all of them.
 */
static void ev_event(struct ev *ev, uint64_t tag, struct conn *c, int pass, int *hs)
{
	if (c) {
		if (c->state == CS_CLOSED ||    /* closed earlier in this round */
		    (c->state == CS_HANDSHAKE) != pass || (pass && ++*hs > EV_HANDSHAKES))
			return;
		conn_step(ev, c);
	} else if (pass) {
		return;
	} else if (tag == EV_TAG_WAKE) {
		ev_inbox(ev);
	} else if (tag == EV_TAG_SIG) {
		char drain[16];
		while (read(ev->srv->sig_fd, drain, sizeof drain) > 0)
			;
	} else if (tag >= EV_TAG_LISTEN) {
		ev_accept(ev, ev->srv->lfd[tag - EV_TAG_LISTEN]);
	}
}

/* The memory of the connections closed in this round. */
static void ev_bury(struct ev *ev)
{
	while (ev->dead) {
		struct conn *c = ev->dead;
		ev->dead = c->next_post;
		free(c);
	}
}

/* Wait once, then serve what is ready. */
static void ev_round(struct ev *ev)
{
	struct ev_srv *s = ev->srv;
	struct epoll_event evs[EV_EVENTS];
	uint64_t now = mono_ms(), next = now + 60000;
	if (ev->id == 0)
		next = ev_chores(ev, now, next);
	if (ev->next_due < next)
		next = ev->next_due;
	if (ev->nagain)
		next = now;
	nfds_t n = 0, first_conn = 0;
	if (ev->epfd < 0) {             /* poll: the set is made anew each round */
		ev->pfd[n] = (struct pollfd){ .fd = ev->efd, .events = POLLIN };
		ev->pfd_conn[n++] = NULL;
		for (int i = 0; ev->id == 0 && i <= s->nlisten; i++) {
			int fd = i == s->nlisten ? s->sig_fd : now >= s->accept_after ? s->lfd[i] : -1;
			ev->pfd[n] = (struct pollfd){ .fd = fd, .events = POLLIN };
			ev->pfd_conn[n++] = NULL;
		}
		first_conn = n;
		for (int i = 0; i < ev->nconn; i++) {
			struct conn *c = ev->conns[i];
			c->pfd = -1;
			if (c->state == CS_BUSY || c->state == CS_WAIT_JOB)
				continue;
			c->pfd = (int)n;
			ev->pfd[n] = (struct pollfd){ .fd = c->fd,
				.events = c->want_write ? POLLOUT : POLLIN };
			ev->pfd_conn[n++] = c;
		}
	}
	int r = ev_wait(ev, evs, n, next > now ? (int)(next - now) : 0), hs = 0;
	for (int pass = 0; pass < 2; pass++) {
		/* backwards: stepping one takes it off, and moves the last (seen) to its place;
		 * one put back goes to the end, not seen again in this pass */
		for (int i = ev->nagain - 1; i >= 0; i--) {
			struct conn *c = ev->againv[i];
			if ((c->state == CS_HANDSHAKE) == pass && (!pass || ++hs <= EV_HANDSHAKES))
				conn_step(ev, c);
		}
		if (r <= 0)
			continue;
		if (ev->epfd >= 0) {
			for (int i = 0; i < r; i++)
				ev_event(ev, evs[i].data.u64, evs[i].data.u64 >= 4096 ?
					 evs[i].data.ptr : NULL, pass, &hs);
			continue;
		}
		for (nfds_t i = 0; i < first_conn; i++)
			if (ev->pfd[i].revents)
				ev_event(ev, i == 0 ? EV_TAG_WAKE : i == first_conn - 1 ?
					 EV_TAG_SIG : EV_TAG_LISTEN + i - 1, NULL, pass, &hs);
		for (nfds_t i = first_conn; i < n; i++) {
			struct conn *c = ev->pfd_conn[i];
			/* NULL: closed in this round (conn_close clears its entry) */
			if (c && ev->pfd[i].revents)
				ev_event(ev, 0, c, pass, &hs);
		}
	}
	/* time-outs first: the jobs they free go to waiting connections in this round, not
	 * whenever something else wakes the loop (a waiting connection is not watched) */
	ev_timeouts(ev, mono_ms());
	ev_feed_waiting(ev);
	ev_bury(ev);
}

/* ---- the loops ------------------------------------------------------------------------ */

/* Closes what the loop still owns but the slow pool holds: those are left to the end. */
static void ev_close_all(struct ev *ev)
{
	for (int i = ev->nconn - 1; i >= 0; i--)
		if (ev->conns[i]->state != CS_BUSY)
			conn_close(ev, ev->conns[i]);
	ev_bury(ev);
}

static void *ev_thread(void *arg)
{
	struct ev *ev = arg;
	while (!__atomic_load_n(&ev->srv->stop, __ATOMIC_RELAXED))
		ev_round(ev);
	ev_close_all(ev);
	return NULL;
}

/* epoll: add fd under tag. */
static int ev_add(struct ev *ev, int fd, uint64_t tag)
{
	struct epoll_event e = { .events = EPOLLIN };
	e.data.u64 = tag;
	return epoll_ctl(ev->epfd, EPOLL_CTL_ADD, fd, &e);
}

/*
 * nloops loops that serve connections, jobs spread over them, and a slow pool of nslow
 * threads (0: slow operations run on the loops too).  threads: each serving loop on a
 * thread of its own (the caller blocks signals first) and loop 0, ev_run's caller, only
 * accepts, so that a module call that hangs never holds up new connections; else nloops
 * is 1 and loop 0 does everything.  epoll: 0 uses poll() (and so does a kernel without
 * epoll).  The caller has set s's first group of fields.
 */
static int ev_start(struct ev_srv *s, struct op_env *env, int nloops, int nslow, int njobs,
		    size_t in_cap, size_t out_cap, int threads, int epoll)
{
	pthread_mutex_init(&s->mu, NULL);
	s->serve = threads ? 1 : 0;
	s->nloops = nloops + s->serve;
	s->start_ms = mono_ms();
	s->conns = calloc((size_t)s->max_conn, sizeof *s->conns);
	s->loops = calloc((size_t)s->nloops, sizeof *s->loops);
	if (!s->conns || !s->loops || wrk_init(&s->slow, env, nslow) != 0)
		return -1;
	s->slow.deliver = conn_deliver;
	for (int i = 0; i < s->nloops; i++) {
		struct ev *ev = &s->loops[i];
		ev->srv = s;
		ev->id = i;
		ev->next_due = UINT64_MAX;
		ev->cap = 2 * s->max_conn;
		pthread_mutex_init(&ev->mu, NULL);
		ev->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		ev->epfd = epoll ? epoll_create1(EPOLL_CLOEXEC) : -1;
		size_t npfd = (size_t)ev->cap + EV_MAX_LISTEN + 2;
		ev->conns = calloc((size_t)ev->cap, sizeof *ev->conns);
		ev->againv = calloc((size_t)ev->cap, sizeof *ev->againv);
		ev->pfd = ev->epfd < 0 ? calloc(npfd, sizeof *ev->pfd) : NULL;
		ev->pfd_conn = ev->epfd < 0 ? calloc(npfd, sizeof *ev->pfd_conn) : NULL;
		if (ev->efd < 0 || !ev->conns || !ev->againv || (ev->epfd < 0 && !ev->pfd_conn))
			return -1;
		if (i >= s->serve) {    /* sessions, caches and jobs: only where requests run */
			int jobs = (njobs + nloops - 1) / nloops;
			ev->ctx = op_thread_new(env, NULL, nslow + i);
			if (!ev->ctx || wrk_store_init(&ev->store, jobs < 2 ? 2 : jobs, in_cap,
						       out_cap) != 0)
				return -1;
			ev->ctx->defer = nslow > 0;
		}
		if (ev->epfd >= 0 && (ev_add(ev, ev->efd, EV_TAG_WAKE) != 0 ||
				      (i == 0 && ev_add(ev, s->sig_fd, EV_TAG_SIG) != 0)))
			return -1;
	}
	for (int i = 1; i < s->nloops; i++)
		if (pthread_create(&s->loops[i].th, NULL, ev_thread, &s->loops[i]) != 0)
			return -1;
	return 0;
}

/* Runs loop 0 until SIGTERM or SIGINT, then stops the others; connections in flight are
 * closed. */
static int ev_run(struct ev_srv *s)
{
	struct ev *ev = &s->loops[0];
	while (!ev_stop_signal)
		ev_round(ev);
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
	for (int i = 1; i < s->nloops; i++) {
		ev_wake(&s->loops[i]);
		pthread_join(s->loops[i].th, NULL);
	}
	log_info("stopping: %lu requests served, %lu connections refused, %lu closed to make "
		 "room, %d open", ev_sum(s, 1), s->refused, s->evicted, s->nconn);
	if (s->notes_lost)
		log_info("%lu refusal lines were not logged (too many sources at once)",
			 s->notes_lost);
	ev_close_all(ev);
	return 0;
}

/* After ev_run: the slow pool finishes what it runs, then everything goes. */
static void ev_free(struct ev_srv *s)
{
	wrk_stop(&s->slow);
	for (int i = 0; s->loops && i < s->nloops; i++) {
		struct ev *ev = &s->loops[i];
		if (ev->ctx)
			op_thread_free(ev->ctx);
		wrk_store_free(&ev->store);
		free(ev->conns);
		free(ev->againv);
		free(ev->pfd);
		free(ev->pfd_conn);
		if (ev->epfd >= 0)
			close(ev->epfd);
		if (ev->efd >= 0)
			close(ev->efd);
	}
	free(s->loops);
	free(s->conns);
}

/* ==== 11. Daemon and main ================================================= */

/*
 * Start-up order, and why:
 *   1. command line and configuration (nothing else happens on an error); --check-config
 *      ends here, after main_check has tried what start-up would load;
 *   2. no core dumps from here on (the process will hold PINs); logging; signals;
 *   3. with daemonize, fork: the parent waits on a pipe until the child is ready and
 *      exits with the child's status, after removing what a failed child left behind;
 *   4. TLS: the certificate and key (read while still privileged; a generated one is
 *      written to state-dir before any client can connect);
 *   5. the listening socket (systemd's, or bound here while still root);
 *   6. the pid file;
 *   7. chroot, working directory, an empty capability bounding set, then `identity` and
 *      no_new_privs, so that the vendor's module never runs as root;
 *   8. load the PKCS#11 module, start the event loops and the slow pool, every signal
 *      blocked in their threads (and in the module's), so that only the main thread takes
 *      SIGTERM or SIGHUP;
 *   9. ready: READY=1 to the service manager, a byte to the waiting parent; serve until
 *      SIGTERM or SIGINT; STOPPING=1.
 * A start that fails removes the pid file and a state directory, certificate and key it
 * created (the log keeps the reason).  Files are named through descriptors of their
 * directories opened before chroot, so that this, SIGHUP's reopening of the log file and
 * the pid file's removal at exit still find them afterwards.
 */

/* A file named by a descriptor of its directory, opened before chroot. */
struct main_path {
	int dirfd;                      /* -1: not in use */
	int existed;                    /* there before start-up */
	char rel[PATH_MAX];             /* the name under dirfd */
	char shown[PATH_MAX];           /* the name given, for messages */
};

/* Split path into its directory and last component; "." for a bare name. */
static int main_split(const char *path, char *dir, size_t dsz, char *base, size_t bsz)
{
	const char *slash = strrchr(path, '/');
	size_t dn = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
	const char *b = slash ? slash + 1 : path;

	if (b[0] == '\0' || strlen(b) >= bsz || dn + 2 > dsz)
		return -1;
	if (slash == NULL)
		memcpy(dir, ".", 2);
	else {
		memcpy(dir, path, dn);
		dir[dn] = '\0';
	}
	memcpy(base, b, strlen(b) + 1);
	return 0;
}

/* path's directory opened; rel = its last component followed by more ("" or "/x"). */
static int main_path_at(struct main_path *p, const char *path, const char *more)
{
	char dir[PATH_MAX], base[NAME_MAX + 1];
	struct stat st;

	p->dirfd = -1;
	snprintf(p->shown, sizeof p->shown, "%s%s", path, more);
	if (main_split(path, dir, sizeof dir, base, sizeof base) < 0 ||
	    (size_t)snprintf(p->rel, sizeof p->rel, "%s%s", base, more) >= sizeof p->rel) {
		errno = ENAMETOOLONG;
		return -1;
	}
	p->dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (p->dirfd < 0)
		return -1;
	p->existed = fstatat(p->dirfd, p->rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
	return 0;
}

/* Remove p if start-up made it; flags 0 or AT_REMOVEDIR. */
static void main_path_remove_new(struct main_path *p, int flags)
{
	if (p->dirfd < 0 || p->existed)
		return;
	if (unlinkat(p->dirfd, p->rel, flags) != 0 && errno != ENOENT)
		log_warn("a failed start leaves %s behind: %s", p->shown, strerror(errno));
}

static void main_path_close(struct main_path *p)
{
	if (p->dirfd >= 0)
		close(p->dirfd);
	p->dirfd = -1;
}

/* What start-up may create; removed again when it fails. */
enum { MAIN_NEW_KEY, MAIN_NEW_CERT, MAIN_NEW_STATE_DIR, MAIN_NEW_COUNT };
static struct main_path main_new[MAIN_NEW_COUNT];     /* dirfd -1 from main_paths_init() */
static struct main_path main_pid;

/* Not in static initializers: 36 KiB of path buffers would go into the binary's data. */
static void main_paths_init(void)
{
	for (int i = 0; i < MAIN_NEW_COUNT; i++)
		main_new[i].dirfd = -1;
	main_pid.dirfd = -1;
}
static int main_pid_fd = -1;            /* the pid file, kept open to empty it if need be */
static pid_t main_pid_owner;            /* the process that wrote it */
static int main_ready;                  /* set once serving: no more start-up clean-up */
static int main_ready_fd = -1;          /* daemonize: the pipe to the waiting parent */

/* "file:line" of a key, or "file" when it has no line (a default, the command line). */
static const char *main_where(const struct cfg *c, int key, char *buf, size_t n)
{
	if (key >= 0 && c->line[key] > 0)
		snprintf(buf, n, "%s:%d", c->file ? c->file : "(configuration)", c->line[key]);
	else
		snprintf(buf, n, "%s", c->file ? c->file : "(configuration)");
	return buf;
}

/* ---- identity ---- */

/* `identity` to IDs: names first, then numbers (range-checked by cfg_id_number); "user"
 * alone (group == user) takes the user's primary group, or the group of that name for a
 * numeric user.  0, or -1 with a message. */
static int main_ids(const struct cfg *c, uid_t *uid, gid_t *gid, char *err, size_t errsz)
{
	unsigned long v;
	struct passwd *pw = getpwnam(c->user);
	struct group *gr;

	if (pw) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
	} else if (cfg_id_number(c->user, &v) == 1) {
		*uid = (uid_t)v;
		*gid = (gid_t)v;
	} else {
		snprintf(err, errsz, "identity: no user '%s'", c->user);
		return -1;
	}
	if (c->group[0] && strcmp(c->group, c->user) != 0) {
		if ((gr = getgrnam(c->group)) != NULL)
			*gid = gr->gr_gid;
		else if (cfg_id_number(c->group, &v) == 1)
			*gid = (gid_t)v;
		else {
			snprintf(err, errsz, "identity: no group '%s'", c->group);
			return -1;
		}
	} else if (pw == NULL && (gr = getgrnam(c->user)) != NULL) {
		*gid = gr->gr_gid;
	}
	return 0;
}

/* ---- workers and their buffers ---- */

/* Threads of the slow pool beside nworkers event loops: a quarter as many and one more,
 * within the token's session limit (cap, 0: none); 0 (workers = 0, or no session left):
 * slow operations run on the loop. */
static int main_slow(int nworkers, unsigned long cap)
{
	int n = nworkers > 0 ? 1 + nworkers / 4 : 0;
	if (cap && (unsigned long)(nworkers + n) > cap)
		n = cap > (unsigned long)nworkers ? (int)(cap - (unsigned long)nworkers) : 0;
	return n;
}

/* workers absent: one event loop per CPU, but loops and slow-pool threads together no
 * more than the token allows sessions (cap, 0: no limit), each having one per token it
 * serves.  Threads need an Mbed TLS built with MBEDTLS_THREADING_C. */
static int main_workers(const struct cfg *c, unsigned long cap)
{
#if !defined(MBEDTLS_THREADING_C)
	if (c->workers == CFG_WORKERS_AUTO)
		return 0;
#endif
	if (c->workers != CFG_WORKERS_AUTO)
		return c->workers;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	while (n > 1 && cap && (unsigned long)n + (unsigned long)main_slow((int)n, 0) > cap)
		n--;
	return (int)n;
}

/* Requests in flight: four per event loop, at least 8, at most max-connections. */
static int main_jobs(const struct cfg *c, int nworkers)
{
	int njobs = nworkers > 0 ? 4 * nworkers : 4;
	if (njobs < 8)
		njobs = 8;
	if (njobs > c->max_connections)
		njobs = c->max_connections;
	return njobs;
}

/* Each job holds a request and a response of max-message-size: njobs * 2 * msg bytes,
 * which must not exceed limit (SIZE_MAX; a smaller one in tests, for a 32-bit target). */
static int main_job_bytes(int njobs, size_t msg, size_t limit, size_t *total)
{
	if (njobs < 1 || msg > limit / 2 || (size_t)njobs > limit / (2 * msg))
		return -1;
	*total = (size_t)njobs * 2 * msg;
	return 0;
}

/* ---- --check-config ---- */

static void main_problem(int *n, const struct cfg *c, int key, const char *fmt, ...)
	PRINTF_LIKE(4, 5);
static void main_problem(int *n, const struct cfg *c, int key, const char *fmt, ...)
{
	char where[PATH_MAX + 16];
	va_list ap;

	fprintf(stderr, "%s: ", main_where(c, key, where, sizeof where));
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	(*n)++;
}

/* A file start-up reads: open it for reading, so that the OS says what is wrong. */
static int main_check_readable(int *n, const struct cfg *c, int key, const char *what,
                               const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0) {
		main_problem(n, c, key, "%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	int isdir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
	close(fd);
	if (isdir) {
		main_problem(n, c, key, "%s %s: %s", what, path, strerror(EISDIR));
		return -1;
	}
	return 0;
}

/* A directory that must exist (and be writable when w). */
static int main_check_dir(int *n, const struct cfg *c, int key, const char *what,
                          const char *dir, int w)
{
	struct stat st;
	if (stat(dir, &st) != 0) {
		main_problem(n, c, key, "%s %s: %s", what, dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		main_problem(n, c, key, "%s %s: %s", what, dir, strerror(ENOTDIR));
		return -1;
	}
	if (w && access(dir, W_OK | X_OK) != 0) {
		main_problem(n, c, key, "%s %s: not writable: %s", what, dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* A file start-up creates or appends to (pid file, log file): writable if it exists,
 * else its directory writable. */
static void main_check_creatable(int *n, const struct cfg *c, int key, const char *what,
                                 const char *path)
{
	char dir[PATH_MAX], base[NAME_MAX + 1];
	if (access(path, F_OK) == 0) {
		if (access(path, W_OK) != 0)
			main_problem(n, c, key, "%s %s: not writable: %s", what, path, strerror(errno));
		return;
	}
	if (main_split(path, dir, sizeof dir, base, sizeof base) < 0) {
		main_problem(n, c, key, "%s %s: %s", what, path, strerror(ENAMETOOLONG));
		return;
	}
	struct stat st;
	int e = stat(dir, &st) != 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
	if (e)
		main_problem(n, c, key, "%s %s: directory %s: %s", what, path, dir, strerror(e));
	else if (access(dir, W_OK | X_OK) != 0)
		main_problem(n, c, key, "%s %s: directory %s not writable: %s", what, path, dir,
		             strerror(errno));
}

/* The module: a loadable library that hands out a PKCS#11 function list with every
 * function the daemon calls.  C_Initialize is not called: for a network HSM it connects,
 * for others it may create or lock files as the user who runs the check, and a check run
 * by root would prove nothing about the daemon's user (see the README). */
static void main_check_module(int *n, const struct cfg *c)
{
	char path[2 * PATH_MAX];
	snprintf(path, sizeof path, "%s%s", c->chroot_dir, c->lib_path);
	if (main_check_readable(n, c, CFG_K_LIB_PATH, "lib-path", path) < 0)
		return;
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		const char *why = dlerror();
		main_problem(n, c, CFG_K_LIB_PATH, "lib-path %s: cannot load: %s", path,
		             why ? why : "unknown reason");
		return;
	}
	CK_C_GetInterface get_if;
	CK_C_GetFunctionList get_fl;
	CK_FUNCTION_LIST *fl = NULL;
	*(void **)&get_if = dlsym(dl, "C_GetInterface");
	*(void **)&get_fl = dlsym(dl, "C_GetFunctionList");
	if (get_if) {
		static CK_UTF8CHAR name[] = "PKCS 11";
		CK_INTERFACE *ifc = NULL;
		if (get_if(name, NULL, &ifc, 0) == CKR_OK && ifc && ifc->pFunctionList)
			fl = ifc->pFunctionList;
	}
	if (fl == NULL && get_fl && get_fl(&fl) != CKR_OK)
		fl = NULL;
	const char *missing = NULL;
	if (fl == NULL)
		main_problem(n, c, CFG_K_LIB_PATH, "lib-path %s: not a PKCS#11 module (%s)", path,
		             get_if || get_fl ? "it gives no function list" :
		             "it exports neither C_GetInterface nor C_GetFunctionList");
	else {
#define MAIN_CHECK_FN(f) if (!missing && !fl->C_##f) missing = "C_" #f;
		P11_REQUIRED(MAIN_CHECK_FN)
#undef MAIN_CHECK_FN
		if (missing)
			main_problem(n, c, CFG_K_LIB_PATH, "lib-path %s: the module's function list "
			             "has no %s, which kmip2pkcs11 needs", path, missing);
	}
	dlclose(dl);
}

/* The certificate and key (configured, or kept in state-dir), the client CA. */
static void main_check_tls(int *n, const struct cfg *c)
{
	char cert[PATH_MAX + 16], key[PATH_MAX + 16];
	int kc = CFG_K_CERT_PATH, kk = CFG_K_KEY_PATH, ret;

	if (c->cert_path[0]) {
		snprintf(cert, sizeof cert, "%s", c->cert_path);
		snprintf(key, sizeof key, "%s", c->key_path);
	} else {
		/* start-up makes the directory (not its parents) and a pair when none is there */
		struct stat st;
		char dir[PATH_MAX], base[NAME_MAX + 1];
		kc = kk = CFG_K_STATE_DIR;
		if (stat(c->state_dir, &st) != 0) {
			if (errno != ENOENT)
				main_problem(n, c, kc, "state-dir %s: %s", c->state_dir, strerror(errno));
			else if (main_split(c->state_dir, dir, sizeof dir, base, sizeof base) == 0)
				main_check_dir(n, c, kc, "state-dir does not exist; its parent", dir, 1);
			return;
		}
		if (main_check_dir(n, c, kc, "state-dir", c->state_dir, 1) < 0)
			return;
		snprintf(cert, sizeof cert, "%s/cert.pem", c->state_dir);
		snprintf(key, sizeof key, "%s/key.pem", c->state_dir);
		if (access(cert, F_OK) != 0 || access(key, F_OK) != 0)
			return;                 /* a new pair is made at start */
	}
	if (psa_crypto_init() != PSA_SUCCESS) {
		main_problem(n, c, -1, "PSA crypto initialisation failed (no entropy source?)");
		return;
	}
	mbedtls_x509_crt crt, ca;
	mbedtls_pk_context pk;
	mbedtls_x509_crt_init(&crt);
	mbedtls_x509_crt_init(&ca);
	mbedtls_pk_init(&pk);
	int crt_ok = 0, pk_ok = 0;
	if (main_check_readable(n, c, kc, "certificate", cert) == 0) {
		if ((ret = mbedtls_x509_crt_parse_file(&crt, cert)) != 0)
			main_problem(n, c, kc, "certificate %s: not a PEM or DER certificate: %s", cert,
			             tls_strerror(ret));
		else
			crt_ok = 1;
	}
	if (main_check_readable(n, c, kk, "private key", key) == 0) {
		if ((ret = mbedtls_pk_parse_keyfile(&pk, key, NULL, mbedtls_psa_get_random,
		                                    MBEDTLS_PSA_RANDOM_STATE)) != 0)
			main_problem(n, c, kk, "private key %s: not a PEM or DER private key "
			             "(or encrypted): %s", key, tls_strerror(ret));
		else
			pk_ok = 1;
	}
	if (crt_ok && pk_ok && mbedtls_pk_check_pair(&crt.pk, &pk, mbedtls_psa_get_random,
	                                             MBEDTLS_PSA_RANDOM_STATE) != 0)
		main_problem(n, c, kk, "private key %s does not match certificate %s", key, cert);
	if (c->client_ca_path[0] &&
	    main_check_readable(n, c, CFG_K_CLIENT_CA_PATH, "client-ca-path",
	                        c->client_ca_path) == 0 &&
	    (ret = mbedtls_x509_crt_parse_file(&ca, c->client_ca_path)) != 0)
		main_problem(n, c, CFG_K_CLIENT_CA_PATH, "client-ca-path %s: not PEM or DER "
		             "certificates: %s", c->client_ca_path, tls_strerror(ret));
	mbedtls_x509_crt_free(&crt);
	mbedtls_x509_crt_free(&ca);
	mbedtls_pk_free(&pk);
}

/*
 * --check-config: what start-up would load or need, tried without binding the address,
 * initialising the module or creating anything.  Each problem is one line on stderr,
 * "file:line: message" with the OS's reason.  Returns the exit status: 0 or 1.
 */
static int main_check(const struct cfg *c)
{
	int n = 0;
	char err[512], dir[2 * PATH_MAX];

	main_check_module(&n, c);
	main_check_tls(&n, c);
	if (c->user[0]) {
		uid_t uid;
		gid_t gid;
		if (main_ids(c, &uid, &gid, err, sizeof err) < 0)
			main_problem(&n, c, CFG_K_IDENTITY, "%s", err);
	}
	if (c->chroot_dir[0])
		main_check_dir(&n, c, CFG_K_CHROOT, "chroot", c->chroot_dir, 0);
	if (c->working_dir[0]) {
		snprintf(dir, sizeof dir, "%s%s", c->chroot_dir, c->working_dir);
		main_check_dir(&n, c, -1, "--working-dir", dir, 0);
	}
	if (c->pid_file[0])
		main_check_creatable(&n, c, CFG_K_PID_FILE, "pid-file", c->pid_file);
	if (c->log_target == LOG_TO_FILE)
		main_check_creatable(&n, c, CFG_K_LOG_TARGET, "log file", c->log_file);
#if !defined(MBEDTLS_THREADING_C)
	if (c->workers > 0)
		main_problem(&n, c, CFG_K_WORKERS, "workers = %d: this build's Mbed TLS has no "
		             "MBEDTLS_THREADING_C, so only workers = 0 works", c->workers);
#endif
	size_t total;
	int nw = main_workers(c, 0), nj = main_jobs(c, nw);
	if (main_job_bytes(nj, (size_t)c->max_message_size, SIZE_MAX, &total) < 0)
		main_problem(&n, c, CFG_K_MAX_MESSAGE_SIZE, "max-message-size %d: %d requests in "
		             "flight need 2 x %d bytes each, more than this system can address",
		             c->max_message_size, nj, c->max_message_size);
	if (n) {
		fprintf(stderr, "%d problem%s: the daemon would not start\n", n, n == 1 ? "" : "s");
		return 1;
	}
	printf("configuration OK\n");
	return 0;
}

/* ---- start-up ---- */

/* The configured log target; for a file, appended to and reopened on SIGHUP. */
static void log_open(const struct cfg *c)
{
	log_state.level = c->log_level;
	log_state.target = c->log_target;
	if (c->log_target == LOG_TO_SYSLOG)
		openlog("kmip2pkcs11", LOG_PID | LOG_NDELAY, c->syslog_facility);
	if (c->log_target == LOG_TO_FILE) {
		char dir[PATH_MAX];
		snprintf(log_path, sizeof log_path, "%s", c->log_file);
		int fd = -1;
		if (main_split(log_path, dir, sizeof dir, log_name, sizeof log_name) == 0 &&
		    (log_dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) >= 0)
			fd = openat(log_dirfd, log_name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
			            0640);
		if (fd >= 0)
			log_state.file = fdopen(fd, "a");
		if (!log_state.file) {
			log_state.target = LOG_TO_STDERR;
			fatal("cannot open log file %s: %s", log_path, strerror(errno));
		}
	}
}

/* systemd socket activation: LISTEN_PID is us and LISTEN_FDS sockets start at fd 3. */
static int main_listen_systemd(struct ev_srv *ev)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	long n = strtol(fds, NULL, 10);
	if (n < 1 || n > EV_MAX_LISTEN)
		fatal("LISTEN_FDS=%s: between 1 and %d sockets are supported", fds, EV_MAX_LISTEN);
	for (int i = 0; i < n; i++) {
		int fd = 3 + i;
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
			fatal("socket %d from systemd: %s", fd, strerror(errno));
		ev->lfd[ev->nlisten++] = fd;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	log_info("listening on %ld socket(s) from systemd", n);
	return 1;
}

static void main_listen(struct ev_srv *ev, const struct cfg *c)
{
	if (main_listen_systemd(ev))
		return;
	int fd = socket(c->listen_sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0)
		fatal("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (c->listen_sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)&c->listen_sa, c->listen_salen) < 0)
		fatal("cannot listen on %s: %s", c->addr, strerror(errno));
	if (listen(fd, SOMAXCONN) < 0)
		fatal("listen on %s: %s", c->addr, strerror(errno));
	ev->lfd[ev->nlisten++] = fd;
	log_info("listening on %s", c->addr);
}

/* The pid file holds pid (a stale one from an earlier run is no match). */
static int main_pid_file_holds(pid_t pid)
{
	char buf[32];
	int fd = openat(main_pid.dirfd, main_pid.rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	ssize_t r = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (r <= 0)
		return 0;
	buf[r] = '\0';
	return strtol(buf, NULL, 10) == (long)pid;
}

/* At exit, by the process that wrote it.  After the privilege drop its directory may not
 * be writable: then the file is emptied through the descriptor kept open. */
static void main_pid_remove(void)
{
	if (main_pid_fd < 0 || getpid() != main_pid_owner)
		return;
	if (unlinkat(main_pid.dirfd, main_pid.rel, 0) != 0 && errno != ENOENT) {
		int e = errno;
		if (ftruncate(main_pid_fd, 0) == 0)
			log_warn("cannot remove pid file %s (%s): emptied it instead; let the user "
			         "of identity write to its directory", main_pid.shown, strerror(e));
		else
			log_warn("cannot remove pid file %s: %s", main_pid.shown, strerror(e));
	}
	close(main_pid_fd);
	main_pid_fd = -1;
}

static void main_pid_write(void)
{
	if (main_pid.dirfd < 0)
		return;
	int fd = openat(main_pid.dirfd, main_pid.rel,
	                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		fatal("cannot write pid file %s: %s", main_pid.shown, strerror(errno));
	main_pid_fd = fd;
	main_pid_owner = getpid();
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (write(fd, buf, (size_t)n) != n)
		fatal("cannot write pid file %s: %s", main_pid.shown, strerror(errno));
}

/* atexit: the pid file goes; after a failed start, what start-up created goes too. */
static void main_at_exit(void)
{
	if (main_ready_fd >= 0)
		return;                 /* the child of daemonize: the waiting parent, still root
		                         * and outside any chroot, cleans up */
	if (main_pid_owner != 0 && getpid() != main_pid_owner)
		return;
	main_pid_remove();
	if (!main_ready) {
		main_path_remove_new(&main_new[MAIN_NEW_KEY], 0);
		main_path_remove_new(&main_new[MAIN_NEW_CERT], 0);
		main_path_remove_new(&main_new[MAIN_NEW_STATE_DIR], AT_REMOVEDIR);
	}
}

/*
 * daemonize: fork; the parent waits for the child's "ready" byte and exits 0, or, when the
 * pipe closes without it, waits for the child, removes what it left behind, and exits
 * with its status.  The child returns, in a new session, with main_ready_fd set.
 */
static void main_fork(void)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		fatal("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		fatal("fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		main_ready_fd = pfd[1];
		if (setsid() < 0)
			fatal("setsid: %s", strerror(errno));
		return;
	}
	close(pfd[1]);
	char b;
	ssize_t r;
	while ((r = read(pfd[0], &b, 1)) < 0 && errno == EINTR)
		;
	if (r == 1)
		_exit(0);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (main_pid.dirfd >= 0 && main_pid_file_holds(pid))
		unlinkat(main_pid.dirfd, main_pid.rel, 0);
	main_path_remove_new(&main_new[MAIN_NEW_KEY], 0);
	main_path_remove_new(&main_new[MAIN_NEW_CERT], 0);
	main_path_remove_new(&main_new[MAIN_NEW_STATE_DIR], AT_REMOVEDIR);
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (log_state.target != LOG_TO_STDERR)
		fprintf(stderr, "kmip2pkcs11: start-up failed (exit status %d); the log says why\n",
		        code);
	_exit(code ? code : 1);
}

/* Serving: tell the service manager and the waiting parent; the child of daemonize
 * leaves the terminal. */
static void main_ready_now(const struct cfg *c, int nworkers)
{
	main_ready = 1;
	for (int i = 0; i < MAIN_NEW_COUNT; i++)
		main_path_close(&main_new[i]);
	notify_send("READY=1\nSTATUS=serving KMIP on %s with %d event loop(s)\nMAINPID=%ld",
	            c->addr, nworkers ? nworkers : 1, (long)getpid());
	if (main_ready_fd >= 0) {
		int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			dup2(fd, STDOUT_FILENO);
			if (log_state.target != LOG_TO_STDERR)
				dup2(fd, STDERR_FILENO);
			if (fd > STDERR_FILENO)
				close(fd);
		}
		ssize_t r = write(main_ready_fd, "R", 1);
		(void)r;
		close(main_ready_fd);
		main_ready_fd = -1;
	}
}

/* Every capability out of the bounding set: nothing executed later can regain one.  Needs
 * CAP_SETPCAP, so it is done while still root; without it (started as a user, e.g. by
 * systemd with User=) the unit's CapabilityBoundingSet= does this. */
static void main_drop_caps(void)
{
	int dropped = 0;
	for (unsigned long cap = 0; cap < 64; cap++) {
		int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (r < 0)
			break;          /* EINVAL: past the last capability this kernel knows */
		if (r == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
			if (errno != EPERM)
				log_warn("cannot drop capability %lu from the bounding set: %s", cap,
				         strerror(errno));
			return;
		}
		dropped += r == 1;
	}
	log_debug("%d capabilities dropped from the bounding set", dropped);
}

/* chroot, working directory, `identity` with the user's supplementary groups from the
 * group database (e.g. softhsm, for SoftHSM2's token store; read before chroot); then
 * no_new_privs, and no core dumps again (a change of user resets the flag). */
static void main_drop(const struct cfg *c)
{
	uid_t uid = 0;
	gid_t gid = 0, groups[64];
	int ngroups = 1;
	char err[512];

	if (c->user[0] && main_ids(c, &uid, &gid, err, sizeof err) < 0)
		fatal("%s", err);
	groups[0] = gid;
	struct passwd *pw = c->user[0] ? getpwnam(c->user) : NULL;
	if (pw) {
		int n = (int)ARRAY_LEN(groups);
		if (getgrouplist(pw->pw_name, gid, groups, &n) >= 0 && n >= 1)
			ngroups = n;
		else {
			groups[0] = gid;
			log_warn("%s is in more than %d groups: only group %ld is kept", c->user,
			         (int)ARRAY_LEN(groups), (long)gid);
		}
	}
	if (c->chroot_dir[0]) {
		if (chroot(c->chroot_dir) < 0 || chdir("/") < 0)
			fatal("chroot %s: %s", c->chroot_dir, strerror(errno));
		log_info("chrooted to %s", c->chroot_dir);
	}
	if (c->working_dir[0] && chdir(c->working_dir) < 0)
		fatal("--working-dir %s: %s", c->working_dir, strerror(errno));
	main_drop_caps();
	if (c->user[0]) {
		if (setgroups((size_t)ngroups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			fatal("cannot become %s: %s", c->user, strerror(errno));
		if (uid != 0 && (getuid() == 0 || geteuid() == 0 || setuid(0) == 0))
			fatal("still root after becoming uid %ld", (long)uid);
		log_info("running as uid %ld, gid %ld", (long)uid, (long)gid);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		log_warn("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* Every asynchronous signal blocked; threads created meanwhile inherit the mask. */
static void main_block_signals(sigset_t *old)
{
	static const int sync_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT,
	                                 SIGSYS };
	sigset_t all;
	sigfillset(&all);
	for (size_t i = 0; i < ARRAY_LEN(sync_sigs); i++)
		sigdelset(&all, sync_sigs[i]);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

/*
 * --import FILE.pem --username LABEL [--name NAME]: a key made or exported elsewhere into
 * the token, through the very path a KMIP client's Register takes: the PEM's DER goes into
 * a Register request (a Private Key or Public Key object by the PEM label, Name from
 * --name), which op_handle() answers as it would over TLS.  The PIN comes from
 * KMIP2PKCS11_PIN or from the terminal with echo off, never from argv.  Prints the UIDs;
 * 0, or 1 with the refusal's Result Reason and message.  Every buffer that held the key
 * or the PIN is wiped.
 */
static const struct {
	const char *label;              /* what follows "-----BEGIN " */
	uint32_t ot, kft;
} main_pem_kinds[] = {
	{ "PRIVATE KEY", OT_PRIVATE_KEY, KFT_PKCS_8 },
	{ "ENCRYPTED PRIVATE KEY", OT_PRIVATE_KEY, KFT_PKCS_8 },   /* refused, with the reason */
	{ "RSA PRIVATE KEY", OT_PRIVATE_KEY, KFT_PKCS_1 },
	{ "EC PRIVATE KEY", OT_PRIVATE_KEY, KFT_EC_PRIVATE_KEY },
	{ "PUBLIC KEY", OT_PUBLIC_KEY, KFT_X_509 },
	{ "RSA PUBLIC KEY", OT_PUBLIC_KEY, KFT_PKCS_1 },
};

#define MAIN_IMPORT_MAX 65536   /* a PEM key file; RSA-8192 PKCS#8 is about 6.5 KB */
#define MAIN_PIN_MAX    256

/* The PIN: KMIP2PKCS11_PIN, else asked on the terminal without echo.  Its length, or -1. */
static int main_pin(char *pin, size_t cap)
{
	const char *env = getenv("KMIP2PKCS11_PIN");
	if (env) {
		size_t n = strlen(env);
		if (n >= cap)
			return -1;
		memcpy(pin, env, n + 1);
		return (int)n;
	}
	FILE *tty = fopen("/dev/tty", "r+e");
	struct termios old, quiet;
	if (!tty || tcgetattr(fileno(tty), &old) != 0) {
		if (tty)
			fclose(tty);
		fprintf(stderr, "kmip2pkcs11: set KMIP2PKCS11_PIN or run on a terminal\n");
		return -1;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	quiet.c_lflag |= ICANON;
	/* Echo off before the prompt: input typed after the prompt is never shown, and
	 * TCSAFLUSH drops only what was typed before it. */
	tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
	fputs("User PIN: ", tty);
	fflush(tty);
	char *got = fgets(pin, (int)cap, tty);
	tcsetattr(fileno(tty), TCSAFLUSH, &old);
	fputs("\n", tty);
	fclose(tty);
	if (!got)
		return -1;
	size_t n = strcspn(pin, "\r\n");
	pin[n] = '\0';
	return (int)n;
}

static int main_import(const struct cfg *c)
{
	static uint8_t file[MAIN_IMPORT_MAX + 1], req[MAIN_IMPORT_MAX + 4096], resp[8192];
	static struct ttlv items[64];
	const char *path = c->import[0], *user = c->import[1], *name = c->import[2];
	char pin[MAIN_PIN_MAX], head[64], foot[64], err[PATH_MAX + 512];
	mbedtls_pem_context pem;
	struct op_env env;
	struct op_thread *t = NULL;
	struct ttlv_enc e;
	size_t n = 0, used = 0, rn = 0;
	int rc = 1, kind = -1, pinlen = -1;

	/* The process will hold a private key and a PIN: no core file, no ptrace (as main). */
	struct rlimit no_core = { 0, 0 };
	setrlimit(RLIMIT_CORE, &no_core);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	mbedtls_pem_init(&pem);
	memset(&env, 0, sizeof env);
	log_state.level = LV_WARNING;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r = 0;
	while (fd >= 0 && n < MAIN_IMPORT_MAX && (r = read(fd, file + n, MAIN_IMPORT_MAX - n)) > 0)
		n += (size_t)r;
	if (fd < 0 || r < 0 || n == MAIN_IMPORT_MAX) {
		fprintf(stderr, "kmip2pkcs11: %s: %s\n", path, fd < 0 || r < 0 ? strerror(errno) :
			"too large for a key");
		goto out;
	}
	file[n] = '\0';
	for (size_t i = 0; i < ARRAY_LEN(main_pem_kinds) && kind < 0; i++) {
		snprintf(head, sizeof head, "-----BEGIN %s-----", main_pem_kinds[i].label);
		snprintf(foot, sizeof foot, "-----END %s-----", main_pem_kinds[i].label);
		int pr = mbedtls_pem_read_buffer(&pem, head, foot, file, NULL, 0, &used);
		if (pr == 0)
			kind = (int)i;
		else if (pr != MBEDTLS_ERR_PEM_NO_HEADER_FOOTER_PRESENT) {
			fprintf(stderr, "kmip2pkcs11: %s: %s: %s\n", path, head,
				pr == MBEDTLS_ERR_PEM_PASSWORD_REQUIRED ?
				"encrypted; decrypt it first (openssl pkey)" : "not valid PEM");
			goto out;
		}
	}
	if (kind < 0) {
		fprintf(stderr, "kmip2pkcs11: %s: no PEM key (PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE "
			"KEY, PUBLIC KEY or RSA PUBLIC KEY)\n", path);
		goto out;
	}
	if ((pinlen = main_pin(pin, sizeof pin)) < 0)
		goto out;

	/* Register as a client sends it: header with the credential, one batch item. */
	uint32_t ot = main_pem_kinds[kind].ot;
	ttlv_enc_init(&e, req, sizeof req);
	ttlv_open(&e, KT_REQUEST_MESSAGE);
	ttlv_open(&e, KT_REQUEST_HEADER);
	ttlv_open(&e, KT_PROTOCOL_VERSION);
	ttlv_put_int(&e, KT_PROTOCOL_VERSION_MAJOR, KMIP_MAJOR);
	ttlv_put_int(&e, KT_PROTOCOL_VERSION_MINOR, KMIP_MINOR);
	ttlv_close(&e);
	ttlv_open(&e, KT_AUTHENTICATION);
	ttlv_open(&e, KT_CREDENTIAL);
	ttlv_put_enum(&e, KT_CREDENTIAL_TYPE, CT_USERNAME_AND_PASSWORD);
	ttlv_open(&e, KT_CREDENTIAL_VALUE);
	ttlv_put_text(&e, KT_USERNAME, user, strlen(user));
	ttlv_put_text(&e, KT_PASSWORD, pin, (size_t)pinlen);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_put_int(&e, KT_BATCH_COUNT, 1);
	ttlv_close(&e);
	ttlv_open(&e, KT_BATCH_ITEM);
	ttlv_put_enum(&e, KT_OPERATION, OP_REGISTER);
	ttlv_open(&e, KT_REQUEST_PAYLOAD);
	ttlv_put_enum(&e, KT_OBJECT_TYPE, ot);
	ttlv_open(&e, KT_TEMPLATE_ATTRIBUTE);
	if (name) {
		ttlv_open(&e, KT_ATTRIBUTE);
		ttlv_put_text(&e, KT_ATTRIBUTE_NAME, "Name", 4);
		ttlv_open(&e, KT_ATTRIBUTE_VALUE);
		ttlv_put_text(&e, KT_NAME_VALUE, name, strlen(name));
		ttlv_put_enum(&e, KT_NAME_TYPE, NT_UNINTERPRETED_TEXT_STRING);
		ttlv_close(&e);
		ttlv_close(&e);
	}
	ttlv_close(&e);
	ttlv_open(&e, ot == OT_PRIVATE_KEY ? KT_PRIVATE_KEY : KT_PUBLIC_KEY);
	ttlv_open(&e, KT_KEY_BLOCK);
	ttlv_put_enum(&e, KT_KEY_FORMAT_TYPE, main_pem_kinds[kind].kft);
	ttlv_open(&e, KT_KEY_VALUE);
	size_t der_len = 0;
	const uint8_t *der = mbedtls_pem_get_buffer(&pem, &der_len);
	ttlv_put_bytes(&e, KT_KEY_MATERIAL, der, der_len);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	ttlv_close(&e);
	if (e.err) {
		fprintf(stderr, "kmip2pkcs11: %s: the key does not fit a request\n", path);
		goto out;
	}

	if (p11_load(c->lib_path, err, sizeof err) != CKR_OK) {
		fprintf(stderr, "kmip2pkcs11: %s\n", err);
		goto out;
	}
	snprintf(env.module, sizeof env.module, "%s", p11.module);
	if ((t = op_thread_new(&env, NULL, 0)) != NULL)
		rn = op_handle(t, req, e.len, resp, sizeof resp);

	/* The answer: Result Status, and the UID or the Result Reason and Message. */
	struct ttlv_doc d = { items, 0, ARRAY_LEN(items) };
	const struct ttlv *bi = NULL, *pl, *v;
	if (rn > 0 && ttlv_decode(&d, resp, rn, TTLV_DEFAULT_DEPTH) == 0)
		bi = ttlv_find(&d, &d.it[0], KT_BATCH_ITEM);
	const char *uid = NULL, *msg = "";
	uint32_t uid_len = 0, msg_len = 0, status = RS_OPERATION_FAILED, reason = RR_GENERAL_FAILURE;
	if (bi) {
		kmip_get_enum(&d, bi, KT_RESULT_STATUS, &status);
		kmip_get_enum(&d, bi, KT_RESULT_REASON, &reason);
		kmip_get_text(&d, bi, KT_RESULT_MESSAGE, &msg, &msg_len);
		if ((pl = ttlv_find(&d, bi, KT_RESPONSE_PAYLOAD)) &&
		    (v = ttlv_find(&d, pl, KT_UNIQUE_IDENTIFIER)) && v->type == TT_TEXT) {
			uid = (const char *)v->val;
			uid_len = v->len;
		}
	}
	if (status == RS_SUCCESS && uid && uid_len > 5) {
		if (ot == OT_PRIVATE_KEY)
			printf("private key: %.*s\npublic key: %.*s_pub\n", (int)uid_len, uid,
			       (int)(uid_len - 5), uid);
		else
			printf("public key: %.*s\n", (int)uid_len, uid);
		rc = 0;
	} else {
		fprintf(stderr, "kmip2pkcs11: %s: import refused: %s: %.*s\n", path,
			kmip_reason_name(reason), (int)msg_len, msg);
	}
	op_thread_free(t);
	p11_unload();
out:
	if (fd >= 0)
		close(fd);
	mbedtls_pem_free(&pem);                 /* zeroizes */
	wipe(file, sizeof file);
	wipe(req, sizeof req);
	wipe(pin, sizeof pin);
	return rc;
}

#ifndef K2P_TEST
int main(int argc, char **argv)
{
	static struct cfg cfg;
	static struct tls_server tls;
	static struct op_env env;
	static struct ev_srv ev;
	char err[PATH_MAX + 1024], where[PATH_MAX + 16];

	main_paths_init();
	int r = cfg_main(argc, argv, &cfg);
	if (r == CFG_MAIN_CHECK)
		return main_check(&cfg);
	if (r >= 0)
		return r;
	if (r == CFG_MAIN_IMPORT)
		return main_import(&cfg);
	if (r == CFG_MAIN_LIST_SLOTS) {
		log_state.level = LV_WARNING;
		if (p11_load(cfg.lib_path, err, sizeof err) != CKR_OK) {
			fprintf(stderr, "kmip2pkcs11: %s\n", err);
			return 1;
		}
		r = p11_list_slots(stdout);
		p11_unload();
		return r;
	}

	/* The process will hold PINs: no core file, and no ptrace by the same user. */
	struct rlimit no_core = { 0, 0 };
	setrlimit(RLIMIT_CORE, &no_core);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	int notifying = notify_init();
	if (notifying < 0)
		fprintf(stderr, "kmip2pkcs11: NOTIFY_SOCKET is not usable; no notifications\n");
	log_open(&cfg);
	log_info("kmip2pkcs11 %s starting", K2P_VERSION);
	/* Under systemd the process it started must stay the one that serves: a forked
	 * child's READY=1 would not count, and the parent's exit would end the service. */
	if (notifying > 0 && cfg.daemonize) {
		log_warn("daemonize ignored: started by systemd (NOTIFY_SOCKET), which supervises "
		         "this process");
		cfg.daemonize = 0;
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	if (pipe2(ev_sig_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
		fatal("pipe: %s", strerror(errno));
	sa.sa_handler = ev_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

#if !defined(MBEDTLS_THREADING_C)
	if (cfg.workers > 0)
		fatal("%s: workers = %d: this build's Mbed TLS has no MBEDTLS_THREADING_C, so only "
		      "workers = 0 works", main_where(&cfg, CFG_K_WORKERS, where, sizeof where),
		      cfg.workers);
#endif
	/* The buffers' size, checked before anything is made (workers at most as many as
	 * the CPUs: the token may only lower the count). */
	size_t job_bytes;
	int njobs = main_jobs(&cfg, main_workers(&cfg, 0));
	if (main_job_bytes(njobs, (size_t)cfg.max_message_size, SIZE_MAX, &job_bytes) < 0)
		fatal("%s: max-message-size %d: %d requests in flight need 2 x %d bytes each, "
		      "more than this system can address",
		      main_where(&cfg, CFG_K_MAX_MESSAGE_SIZE, where, sizeof where),
		      cfg.max_message_size, njobs, cfg.max_message_size);

	/* What start-up may create, named before anything is; removed if it fails. */
	if (cfg.pid_file[0] && main_path_at(&main_pid, cfg.pid_file, "") < 0)
		fatal("pid file %s: %s", cfg.pid_file, strerror(errno));
	if (!cfg.cert_path[0]) {
		main_path_at(&main_new[MAIN_NEW_STATE_DIR], cfg.state_dir, "");
		main_path_at(&main_new[MAIN_NEW_CERT], cfg.state_dir, "/cert.pem");
		main_path_at(&main_new[MAIN_NEW_KEY], cfg.state_dir, "/key.pem");
	}
	atexit(main_at_exit);
	if (cfg.daemonize)
		main_fork();

	/* The certificate first: a client that connects as soon as the port is open finds
	 * a generated one already on disk. */
	char host[INET6_ADDRSTRLEN] = "";
	const void *ip = cfg.listen_sa.ss_family == AF_INET6 ?
		(const void *)&((const struct sockaddr_in6 *)&cfg.listen_sa)->sin6_addr :
		(const void *)&((const struct sockaddr_in *)&cfg.listen_sa)->sin_addr;
	inet_ntop(cfg.listen_sa.ss_family, ip, host, sizeof host);
	struct tls_opts to = {
		.cert_path = cfg.cert_path[0] ? cfg.cert_path : NULL,
		.key_path = cfg.key_path[0] ? cfg.key_path : NULL,
		.client_ca_path = cfg.client_ca_path[0] ? cfg.client_ca_path : NULL,
		.state_dir = cfg.state_dir,
		.listen_host = host,
	};
	/* Mbed TLS says only "read/write of file failed": the OS says which and why. */
	const char *files[] = { to.cert_path, to.key_path, to.client_ca_path };
	const int file_keys[] = { CFG_K_CERT_PATH, CFG_K_KEY_PATH, CFG_K_CLIENT_CA_PATH };
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		int fd = files[i] ? open(files[i], O_RDONLY | O_CLOEXEC) : -1;
		if (files[i] && fd < 0)
			fatal("%s: %s %s: %s", main_where(&cfg, file_keys[i], where, sizeof where),
			      cfg_keys[file_keys[i]].key, files[i], strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	if (tls_server_init(&tls, &to, err, sizeof err) != 0)
		fatal("TLS: %s", err);

	/* Every connection is a descriptor: take what the hard limit allows. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)cfg.max_connections + 64)
		log_warn("open file limit %lu is low for max-connections %d",
			 (unsigned long)rl.rlim_cur, cfg.max_connections);

	main_listen(&ev, &cfg);
	if (cfg.daemonize && chdir("/") < 0)
		fatal("chdir /: %s", strerror(errno));
	main_pid_write();
	main_drop(&cfg);

	/* The module's threads and ours take no signal: the loop's thread does. */
	sigset_t old_mask;
	main_block_signals(&old_mask);
	notify_send("STATUS=loading the PKCS#11 module %s", cfg.lib_path);
	p11_set_init_args(cfg.init_args);     /* the configuration's limit is the same */
	if (p11_load(cfg.lib_path, err, sizeof err) != CKR_OK) {
		/* the usual causes lie outside the daemon: say where to look */
		if (strstr(err, "C_Initialize") != NULL)
			fatal("%s; check that the daemon's user (uid %ld) can read the module's "
			      "configuration file and read and write its token store (SoftHSM2: "
			      "SOFTHSM2_CONF or /etc/softhsm/softhsm2.conf, /var/lib/softhsm/tokens, "
			      "group softhsm), and that the vendor's environment variables are set "
			      "(under systemd: EnvironmentFile=)", err, (long)getuid());
		fatal("%s", err);
	}
	p11_count_calls();
	snprintf(env.module, sizeof env.module, "%s", p11.module);
	unsigned long cap = p11_session_limit();
	int nworkers = main_workers(&cfg, cap), nslow = main_slow(nworkers, cap);
	njobs = main_jobs(&cfg, nworkers);
	ev.tls = &tls;
	ev.max_conn = cfg.max_connections;
	ev.max_per_src = cfg.max_conn_per_source;
	ev.first_ms = (uint64_t)cfg.first_request_timeout * 1000u;
	ev.max_msg = (size_t)cfg.max_message_size;
	ev.handshake_ms = (uint64_t)cfg.handshake_timeout * 1000u;
	ev.idle_ms = (uint64_t)cfg.idle_timeout * 1000u;
	ev.sig_fd = ev_sig_pipe[0];
	if (ev_start(&ev, &env, nworkers ? nworkers : 1, nslow, njobs, (size_t)cfg.max_message_size,
		     (size_t)cfg.max_message_size, nworkers > 0, nworkers > 0) != 0)
		fatal("cannot start the event loops: %s", strerror(errno));
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	log_info("%d event loop(s) (%s), %d thread(s) for slow operations, %d requests in "
		 "flight at most", nworkers ? nworkers : 1, ev.loops[0].epfd >= 0 ? "epoll" : "poll",
		 nslow, njobs);

	/* WATCHDOG=1 at half the interval systemd expects (sd_watchdog_enabled(3)) */
	const char *wd = getenv("WATCHDOG_USEC"), *wd_pid = getenv("WATCHDOG_PID");
	if (wd && (!wd_pid || strtol(wd_pid, NULL, 10) == (long)getpid())) {
		unsigned long long usec = strtoull(wd, NULL, 10);
		if (usec > 0) {
			ev.watchdog_ms = usec / 2000u ? usec / 2000u : 1;
			log_info("watchdog: a keep-alive every %llu ms", (unsigned long long)ev.watchdog_ms);
		}
	}
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	log_info("ready");
	main_ready_now(&cfg, nworkers);
	ev_run(&ev);

	notify_send("STOPPING=1\nSTATUS=stopping");
	ev_free(&ev);
	p11_unload();
	tls_server_free(&tls);
	log_info("stopped");
	return 0;               /* main_at_exit removes the pid file */
}
#endif
