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

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>

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

static struct {
	int level;              /* messages above this level are dropped */
	int target;             /* LOG_TO_* */
	FILE *file;             /* LOG_TO_FILE */
} log_state = { LV_INFO, LOG_TO_STDERR, NULL };

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

static void log_vmsg(int lv, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);
static void log_vmsg(int lv, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };
	char line[1024];

	if (lv > log_state.level)
		return;
	vsnprintf(line, sizeof line, fmt, ap);
	if (log_state.target == LOG_TO_SYSLOG) {
		syslog(prio[lv], "%s", line);
		return;
	}
	FILE *f = log_state.target == LOG_TO_FILE && log_state.file ? log_state.file : stderr;
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "%s.%03ldZ [%s] %s\n", when, ts.tv_nsec / 1000000L, log_level_names[lv], line);
	fflush(f);
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

