/*
 * bench - how fast and how big a running kmip2pkcs11 is, next to what the same PKCS#11
 * module does when called in-process.  tests/bench.sh makes the token, the configuration
 * and the two daemons (one on SoftHSM2, one on build/nullp11.so) and runs this program;
 * `make bench` runs tests/bench.sh.
 *
 *   build/bench [options]            run the measurements, print the tables
 *     --port P --pid PID --lib MODULE   the daemon on the real module (SoftHSM2), its pid
 *     --user LABEL --pin PIN            its credentials (bench / 1234)
 *     --null-port P --null-pid PID      the daemon on nullp11 (user null, PIN 1234)
 *     --conns K (10)  --time S (5)  --one-time S (2)  --null-requests N (30000)
 *     --idle-conns N (1000)  --hs-threads T (4)  --data-size BYTES (128)
 *     --algs p256,rsa2048,p384,ed25519  --sections 12345  --extra-keys N (0: P-256 pairs
 *     added to the token first, to see how the daemon's per-request lookup scales)
 *     --suites cascade|mbedtls  the client's cipher suite order (below)
 *   build/bench --free-ports         print two free TCP ports on 127.0.0.1
 *   build/bench --wait PORT SECONDS  exit 0 once PORT accepts a TLS 1.3 handshake
 *
 * Measurements (each for a fixed time or count, all against 127.0.0.1):
 *   1. Signatures per second over K persistent TLS 1.3 connections (Cascade keeps a pool of
 *      10), p50 / p99 latency; baseline: threads in this process, each with its own session
 *      on the same module and the same key, doing the work the daemon asks of the module
 *      for one Sign (below), run with 1, 2, as many as CPUs and K threads (half the
 *      daemon's time each); the best rate is the baseline.  Ratio daemon / baseline.
 *   2. One connection: median latency of a Sign, against the in-process median of the same
 *      module work plus the median round trip of a plain TCP echo over 127.0.0.1 with the
 *      KMIP request and response sizes; the excess is what the daemon adds.
 *   3. Daemon CPU per Sign against nullp11 (the module answers at once): utime + stime of
 *      the daemon (/proc/PID/stat) before and after N requests over K connections, and its
 *      ratio to the CPU the client (this process) spent on the same requests.
 *   4. Memory: VmRSS idle, and with 1000 idle TLS connections (per-connection cost); the
 *      CPU per request of section 3 right before opening them and with them open.
 *   5. Full TLS 1.3 handshakes per second (a new TCP + TLS connection each time), the
 *      daemon's CPU per handshake against the crypto floor; and the Sign latency on one
 *      connection opened before, quiet and during a handshake storm.
 * The report ends with the targets, one row per measure, met or not.
 *
 * The baseline's module work mirrors section 6 (p11_sign): RSA with CKM_SHA256_RSA_PKCS
 * (or CKM_SHA384_RSA_PKCS) when the token lists it, else the hash in software and
 * CKM_RSA_PKCS over the DigestInfo; ECDSA with CKM_ECDSA_SHA256 / _SHA384 when listed, else
 * the hash in software (PSA, the same Mbed TLS) and CKM_ECDSA (SoftHSM 2.6 lists no
 * CKM_ECDSA_SHA*, so this is what both sides do there); Ed25519 with CKM_EDDSA over the
 * data.  Each signature is C_SignInit + C_Sign on an already found key handle; the
 * daemon's own per-request calls (slot lookup, C_GetSessionInfo, C_FindObjects*,
 * C_GetAttributeValue) are left out of the baseline on purpose: they are the daemon's cost.
 *
 * A benchmark prints figures, it does not judge them: targets are printed beside them,
 * and a target not met never changes the exit status.  Exit status 0 unless a
 * measurement could not run at all.
 */
#include "../kmip2pkcs11.c"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <dirent.h>

/*
 * Cipher suites offered by the benchmark's client.  Mbed TLS's server takes the first
 * suite of the client's list that it supports, and Mbed TLS's own client lists
 * ChaCha20-Poly1305 first, while Cascade's client (rustls) lists AES-256-GCM first,
 * then AES-128-GCM, then ChaCha20-Poly1305.  kclient.h sets no list, so the bench puts
 * one into every configuration right before mbedtls_ssl_setup(): rustls's order by
 * default (--suites cascade), Mbed TLS's default with --suites mbedtls.
 */
static const int bench_suites_cascade[] = {
	MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
	MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
	MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
	0
};
static const int *bench_suites = bench_suites_cascade;

static int bench_ssl_setup(mbedtls_ssl_context *ssl, const mbedtls_ssl_config *conf)
{
	if (bench_suites)       /* the conf is the caller's own, not const in its struct kc */
		mbedtls_ssl_conf_ciphersuites((mbedtls_ssl_config *)conf, bench_suites);
	return mbedtls_ssl_setup(ssl, conf);
}
#define mbedtls_ssl_setup bench_ssl_setup
#include "kclient.h"
#include "kreq.h"
#undef mbedtls_ssl_setup

/* ==== options ============================================================= */

static struct {
	const char *host;
	int port, null_port;            /* daemon on the real module; daemon on nullp11 */
	long pid, null_pid;
	const char *lib;                /* the module the first daemon uses (SoftHSM2) */
	const char *user, *pin, *null_user, *null_pin;
	int conns;                      /* K */
	double secs;                    /* per throughput measurement */
	double one_secs;                /* per one-connection measurement */
	long null_requests;             /* N */
	int idle_conns;
	int hs_threads;
	size_t data_size;
	const char *algs;
	const char *softhsm_version;
	const char *sections;           /* which of the five measurements run */
	int extra_keys;                 /* P-256 pairs added to the token first */
} opt = {
	"127.0.0.1", 0, 0, 0, 0, NULL, "bench", "1234", "null", "1234",
	10, 5.0, 2.0, 30000, 1000, 4, 128, "p256,rsa2048,p384,ed25519", NULL,
	"12345", 0,
};

/* ==== small helpers ======================================================= */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* A growable list of latencies in nanoseconds. */
struct lat {
	uint64_t *v;
	size_t n, cap;
};

static void lat_add(struct lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4096;
		uint64_t *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return;         /* drop the sample; the count still counts */
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = ns;
}

static void lat_merge(struct lat *dst, const struct lat *src)
{
	for (size_t i = 0; i < src->n; i++)
		lat_add(dst, src->v[i]);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Percentile p (0..100) in microseconds, nearest rank; 0 without samples. */
static double lat_pct(struct lat *l, double p)
{
	if (l->n == 0)
		return 0;
	qsort(l->v, l->n, sizeof *l->v, cmp_u64);
	size_t k = (size_t)(p / 100.0 * (double)l->n);
	if (k >= l->n)
		k = l->n - 1;
	return (double)l->v[k] / 1000.0;
}

/* A whole file (small, /proc) into buf, NUL-terminated; -1 if unreadable. */
static int read_small(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

/* utime + stime of a process, in clock ticks; -1 if unreadable. */
static long long proc_ticks(long pid)
{
	char path[64], buf[2048];
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if (read_small(path, buf, sizeof buf) != 0)
		return -1;
	char *p = strrchr(buf, ')');     /* comm may hold blanks; fields follow the last ')' */
	if (!p)
		return -1;
	/* fields from 3 (state) on; utime is 14, stime 15 */
	unsigned long long ut = 0, st = 0;
	int field = 2;
	for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
		field++;
		if (field == 14)
			ut = strtoull(tok, NULL, 10);
		if (field == 15) {
			st = strtoull(tok, NULL, 10);
			return (long long)(ut + st);
		}
	}
	return -1;
}

/* Sum over the process's threads of the time on CPU (schedstat, nanoseconds): the same
 * quantity as proc_ticks at a finer grain; -1 where the kernel has no schedstat. */
static long long proc_sched_ns(long pid)
{
	char path[320], buf[256];
	long long sum = 0;
	snprintf(path, sizeof path, "/proc/%ld/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	struct dirent *e;
	int any = 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/%ld/task/%s/schedstat", pid, e->d_name);
		if (read_small(path, buf, sizeof buf) == 0) {
			sum += strtoll(buf, NULL, 10);
			any = 1;
		}
	}
	closedir(d);
	return any ? sum : -1;
}

/* A "Name:   value kB" line of /proc/PID/status, in KiB; -1 if absent. */
static long proc_status_kb(long pid, const char *name)
{
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	if (read_small(path, buf, sizeof buf) != 0)
		return -1;
	size_t n = strlen(name);
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, name, n) == 0 && l[n] == ':')
			return strtol(l + n + 1, NULL, 10);
	return -1;
}

/* The soft limit on open files of a process, from /proc/PID/limits; -1 if unknown. */
static long proc_nofile(long pid)
{
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/%ld/limits", pid);
	if (read_small(path, buf, sizeof buf) != 0)
		return -1;
	char *l = strstr(buf, "Max open files");
	return l ? strtol(l + strlen("Max open files"), NULL, 10) : -1;
}

static void cpu_model(char *out, size_t cap)
{
	static char buf[65536];
	snprintf(out, cap, "?");
	if (read_small("/proc/cpuinfo", buf, sizeof buf) != 0)
		return;
	char *l = strstr(buf, "model name");
	if (!l || !(l = strchr(l, ':')))
		return;
	l += 2;
	size_t n = strcspn(l, "\n");
	snprintf(out, cap, "%.*s", (int)n, l);
}

/* ==== the targets ================================================= */

/*
 * One row per measure of the closing summary, in the order of the sections.  Every row
 * is printed, measured or not; the sections print the same target next to their figure
 * (goal_target), so that each limit is written here only.
 */
enum {
	G_TPUT_P256, G_TPUT_RSA2048, G_LAT_P256, G_LAT_RSA2048,
	G_NULL_P256, G_NULL_RSA2048, G_NULL_ED25519,
	G_IDLE_CPU, G_IDLE_MEM, G_HS_FLOOR, G_HS_DELAY, G_HS_DELAY_1, G_COUNT, G_NONE = -1
};

static struct goal {
	const char *what;
	int prec;                       /* decimals of the value and of the limit */
	const char *unit;               /* after the number: " %", " us", "x", "" */
	int at_most;                    /* met when value <= limit; else when value >= limit */
	double limit;
	int measured;
	double value;
} goals[G_COUNT] = {
	[G_TPUT_P256] = { "1. P-256 signatures/s, daemon / best in-process",
		1, " %", 0, 90, 0, 0 },
	[G_TPUT_RSA2048] = { "1. RSA-2048 signatures/s, daemon / best in-process",
		1, " %", 0, 97, 0, 0 },
	[G_LAT_P256] = { "2. P-256 one-connection latency excess",
		1, " us", 1, 15, 0, 0 },
	[G_LAT_RSA2048] = { "2. RSA-2048 one-connection latency excess",
		1, " us", 1, 15, 0, 0 },
	[G_NULL_P256] = { "3. nullp11 P-256: daemon CPU / client CPU",
		2, "", 1, 1.0, 0, 0 },
	[G_NULL_RSA2048] = { "3. nullp11 RSA-2048: daemon CPU / client CPU",
		2, "", 1, 1.0, 0, 0 },
	[G_NULL_ED25519] = { "3. nullp11 Ed25519: daemon CPU / client CPU",
		2, "", 1, 1.0, 0, 0 },
	[G_IDLE_CPU] = { "4. CPU/request, idle connections open / none",
		2, "x", 1, 1.1, 0, 0 },
	[G_IDLE_MEM] = { "4. memory per idle connection (VmRSS)",
		1, " KiB", 1, 48, 0, 0 },
	[G_HS_FLOOR] = { "5. handshakes: crypto floor / daemon CPU",
		1, " %", 0, 95, 0, 0 },
	[G_HS_DELAY] = { "5. delay to others: storm p99 - quiet p50",
		2, " ms", 1, 2, 0, 0 },
	[G_HS_DELAY_1] = { "5. the same, storm from one client thread",
		2, " ms", 1, 2, 0, 0 },
};

static void goal_set(int g, double value)
{
	if (g == G_NONE)
		return;
	goals[g].measured = 1;
	goals[g].value = value;
}

/* A value of goal g with its unit: "12.3 us". */
static const char *goal_value(int g, double v, char *buf, size_t cap)
{
	snprintf(buf, cap, "%.*f%s", goals[g].prec, v, goals[g].unit);
	return buf;
}

/* "<= 15.0 us", ">= 90.0 %"; "-" for no goal. */
static const char *goal_target(int g, char *buf, size_t cap)
{
	char lim[24];
	if (g == G_NONE) {
		snprintf(buf, cap, "-");
		return buf;
	}
	snprintf(buf, cap, "%s %s", goals[g].at_most ? "<=" : ">=",
	         goal_value(g, goals[g].limit, lim, sizeof lim));
	return buf;
}

static const char *goal_status(int g)
{
	if (!goals[g].measured)
		return "not measured";
	if (goals[g].at_most ? goals[g].value <= goals[g].limit : goals[g].value >= goals[g].limit)
		return "met";
	return "not met";
}

/* ==== KMIP requests ======================================================= */

enum { A_P256, A_RSA2048, A_P384, A_ED25519, A_COUNT };

static const struct alg {
	const char *key, *name;
	uint32_t kmip_alg;              /* Cryptographic Algorithm */
	int bits;                       /* Cryptographic Length at Create Key Pair */
	uint32_t hash;                  /* Hashing Algorithm in Sign; 0: none */
	CK_KEY_TYPE type;
	int g_tput, g_lat, g_null;      /* its rows of goals[] in sections 1, 2, 3; G_NONE */
} algs[A_COUNT] = {
	{ "p256", "ECDSA P-256", ALG_ECDSA, 256, HASH_SHA_256, CKK_EC,
	  G_TPUT_P256, G_LAT_P256, G_NULL_P256 },
	{ "rsa2048", "RSA-2048", ALG_RSA, 2048, HASH_SHA_256, CKK_RSA,
	  G_TPUT_RSA2048, G_LAT_RSA2048, G_NULL_RSA2048 },
	{ "p384", "ECDSA P-384", ALG_ECDSA, 384, HASH_SHA_384, CKK_EC, G_NONE, G_NONE, G_NONE },
	{ "ed25519", "Ed25519", ALG_ED25519, 0, 0, CKK_EC_EDWARDS, G_NONE, G_NONE, G_NULL_ED25519 },
};

#define REQ_CAP 4096
#define RESP_CAP 65536

struct msg {
	uint8_t b[REQ_CAP];
	size_t n;
};

/* Create Key Pair as Cascade sends it (1.0; tests/kreq.h): common { algorithm, [length] },
 * private { Name, Usage Mask Sign }, public { Name, Usage Mask Verify }. */
static void rq_create(struct msg *m, const struct alg *a, const char *user, const char *pin)
{
	struct kreq_hdr h = { 1, 0, user, pin, -1, 0, 1 };
	struct ttlv_enc e;
	char priv_name[64], pub_name[64];
	snprintf(priv_name, sizeof priv_name, "bench-%s-%ld-pri", a->key, (long)getpid());
	snprintf(pub_name, sizeof pub_name, "bench-%s-%ld-pub", a->key, (long)getpid());
	kreq_one(&e, m->b, sizeof m->b, &h, OP_CREATE_KEY_PAIR);
	kreq_create_key_pair(&e, a->kmip_alg, a->bits, 0, priv_name, pub_name);
	m->n = kreq_one_end(&e);
}

/* Sign as Cascade sends it (1.2): UID, Cryptographic Parameters { [Padding Method PKCS1
 * v1.5], [Hashing Algorithm], Cryptographic Algorithm }, Data (raw signing input). */
static void rq_sign(struct msg *m, const struct alg *a, const char *uid, const char *user,
                    const char *pin, const uint8_t *data, size_t n)
{
	struct kreq_hdr h = { 1, 2, user, pin, -1, 0, 1 };
	struct ttlv_enc e;
	kreq_one(&e, m->b, sizeof m->b, &h, OP_SIGN);
	kreq_uid(&e, uid);
	kreq_crypto_params(&e, a->kmip_alg == ALG_RSA ? PAD_PKCS1_V1_5 : 0, a->hash, 0,
	                   a->kmip_alg);
	ttlv_put_bytes(&e, KT_DATA, data, n);
	m->n = kreq_one_end(&e);
}

/* Result Status of the (only) batch item, found by its bytes so that checking each answer
 * costs the client next to nothing (the client shares the CPUs with the daemon): -1 when
 * the answer has none. */
static long resp_status(const uint8_t *r, size_t n)
{
	static const uint8_t pat[] = { 0x42, 0x00, 0x7F, TT_ENUM, 0, 0, 0, 4 };
	const uint8_t *p = memmem(r, n, pat, sizeof pat);
	if (!p || (size_t)(p - r) + 12 > n)
		return -1;
	return (long)((uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11]);
}

/* Result Reason and Message of a failed answer, for the report. */
static void resp_why(const uint8_t *r, size_t n, char *out, size_t cap)
{
	static struct ttlv items[TTLV_MAX_ITEMS];
	struct ttlv_doc d = { items, 0, TTLV_MAX_ITEMS };
	snprintf(out, cap, "undecodable answer");
	if (ttlv_decode(&d, r, n, TTLV_MAX_DEPTH) != 0)
		return;
	const struct ttlv *bi = ttlv_find(&d, &d.it[0], KT_BATCH_ITEM);
	const struct ttlv *rr = bi ? ttlv_find(&d, bi, KT_RESULT_REASON) : NULL;
	const struct ttlv *rm = bi ? ttlv_find(&d, bi, KT_RESULT_MESSAGE) : NULL;
	snprintf(out, cap, "%s: %.*s", rr ? kmip_enum_name(KT_RESULT_REASON, (uint32_t)rr->num) : "?",
	         rm ? (int)rm->len : 0, rm ? (const char *)rm->val : "");
}

/* A text field of the answer's payload into out ("" if absent). */
static void resp_text(const uint8_t *r, size_t n, uint32_t tag, char *out, size_t cap)
{
	static struct ttlv items[TTLV_MAX_ITEMS];
	struct ttlv_doc d = { items, 0, TTLV_MAX_ITEMS };
	out[0] = '\0';
	if (ttlv_decode(&d, r, n, TTLV_MAX_DEPTH) != 0)
		return;
	const struct ttlv *bi = ttlv_find(&d, &d.it[0], KT_BATCH_ITEM);
	const struct ttlv *pl = bi ? ttlv_find(&d, bi, KT_RESPONSE_PAYLOAD) : NULL;
	const struct ttlv *t = pl ? ttlv_find(&d, pl, tag) : NULL;
	if (t && t->type == TT_TEXT && t->len < cap) {
		memcpy(out, t->val, t->len);
		out[t->len] = '\0';
	}
}

static int connect_to(struct kc *c, int port)
{
	struct kc_opts o = { 0, 30000, NULL };
	if (kc_connect_opts(c, opt.host, port, NULL, NULL, NULL, &o) == 0)
		return 0;
	fprintf(stderr, "bench: connect to %s:%d: %s\n", opt.host, port, c->err);
	return -1;
}

/* Create a key pair through the daemon; its private UID into uid. 0 or -1. */
static int make_key(int port, const struct alg *a, const char *user, const char *pin,
                    char *uid, size_t cap)
{
	static struct msg m;
	static uint8_t resp[RESP_CAP];
	struct kc c;
	char why[256];
	if (connect_to(&c, port) != 0)
		return -1;
	rq_create(&m, a, user, pin);
	long n = kc_roundtrip(&c, m.b, m.n, resp, sizeof resp);
	kc_close(&c);
	if (n < 0 || resp_status(resp, (size_t)n) != RS_SUCCESS) {
		if (n >= 0)
			resp_why(resp, (size_t)n, why, sizeof why);
		fprintf(stderr, "bench: Create Key Pair %s: %s\n", a->name, n < 0 ? c.err : why);
		return -1;
	}
	resp_text(resp, (size_t)n, KT_PRIVATE_KEY_UNIQUE_IDENTIFIER, uid, cap);
	return uid[0] ? 0 : -1;
}

/* ==== the daemon side: K connections ===================================== */

struct dworker {
	pthread_t th;
	int port;
	const struct msg *req;
	pthread_barrier_t *ready, *start;   /* all warmed up; the clock runs */
	const uint64_t *deadline;       /* stop when the clock passes it; 0: use count */
	long count;                     /* with deadline 0: requests to send */
	int warmup;
	/* results */
	long done, failed;
	uint64_t end;                   /* when the last answer came */
	size_t resp_len;
	char why[256];
	struct lat lat;
	int conn_ok;
	struct kc c;
};

static void *dworker_main(void *arg)
{
	struct dworker *w = arg;
	uint8_t *resp = malloc(RESP_CAP);
	w->conn_ok = resp && connect_to(&w->c, w->port) == 0;
	for (int i = 0; w->conn_ok && i < w->warmup; i++) {
		long n = kc_roundtrip(&w->c, w->req->b, w->req->n, resp, RESP_CAP);
		if (n < 0) {
			w->conn_ok = 0;
			snprintf(w->why, sizeof w->why, "%s", w->c.err);
		} else if (resp_status(resp, (size_t)n) != RS_SUCCESS) {
			w->conn_ok = 0;
			resp_why(resp, (size_t)n, w->why, sizeof w->why);
		}
	}
	pthread_barrier_wait(w->ready);
	pthread_barrier_wait(w->start);
	uint64_t deadline = *w->deadline;
	if (w->conn_ok) {
		for (;;) {
			uint64_t t0 = now_ns();
			if (deadline ? t0 >= deadline : w->done + w->failed >= w->count)
				break;
			long n = kc_roundtrip(&w->c, w->req->b, w->req->n, resp, RESP_CAP);
			uint64_t t1 = now_ns();
			if (n < 0) {
				snprintf(w->why, sizeof w->why, "%s", w->c.err);
				w->failed++;
				break;
			}
			if (resp_status(resp, (size_t)n) != RS_SUCCESS) {
				if (!w->failed)
					resp_why(resp, (size_t)n, w->why, sizeof w->why);
				w->failed++;
			} else {
				w->done++;
				w->resp_len = (size_t)n;
			}
			lat_add(&w->lat, t1 - t0);
			w->end = t1;
		}
	}
	kc_close(&w->c);
	free(resp);
	return NULL;
}

struct run {
	double rate;                    /* per second */
	double p50, p99;                /* microseconds */
	long done, failed;
	size_t resp_len;
	char why[256];
	int ok;
	double self_cpu_us;             /* this process's CPU per request (client, or baseline) */
	double daemon_cpu_us;           /* the daemon's CPU per request (when its pid is known) */
};

/* CPU time of this process (all threads), for the client's share of the machine. */
static uint64_t self_cpu0;

static uint64_t self_cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

static void self_cpu_before(void)
{
	self_cpu0 = self_cpu_ns();
}

static double self_cpu_after(long requests)
{
	return requests > 0 ? (double)(self_cpu_ns() - self_cpu0) / 1000.0 / (double)requests : 0;
}

/* The rate over the clock from t0 to the last answer, and the percentiles of all. */
static void run_end(struct run *r, struct lat *all, uint64_t t0, uint64_t tend)
{
	r->rate = tend > t0 ? (double)r->done * 1e9 / (double)(tend - t0) : 0;
	r->p50 = lat_pct(all, 50);
	r->p99 = lat_pct(all, 99);
	free(all->v);
}

/* K connections to port, each sending req until secs have passed (or count requests in
 * all when secs is 0).  before / after: called right before the start and after the end
 * (the CPU readings of the nullp11 run). */
static struct run run_daemon(int port, long pid, const struct msg *req, int k, double secs,
                             long count, void (*before)(void), void (*after)(void))
{
	long long d0 = -1, d1 = -1;
	struct run r;
	struct dworker *w = calloc((size_t)k, sizeof *w);
	pthread_barrier_t ready, start;
	uint64_t deadline = 0;
	struct lat all = { 0 };

	memset(&r, 0, sizeof r);
	if (!w)
		return r;
	pthread_barrier_init(&ready, NULL, (unsigned)k + 1);
	pthread_barrier_init(&start, NULL, (unsigned)k + 1);
	for (int i = 0; i < k; i++) {
		w[i].port = port;
		w[i].req = req;
		w[i].ready = &ready;
		w[i].start = &start;
		w[i].deadline = &deadline;
		w[i].warmup = 3;
		w[i].count = count / k + (i < count % k);
		pthread_create(&w[i].th, NULL, dworker_main, &w[i]);
	}
	pthread_barrier_wait(&ready);   /* connected and warmed up */
	if (before)
		before();
	d0 = pid ? proc_sched_ns(pid) : -1;
	self_cpu_before();
	uint64_t t0 = now_ns();
	if (secs > 0)
		deadline = t0 + (uint64_t)(secs * 1e9);
	pthread_barrier_wait(&start);
	uint64_t tend = t0;
	r.ok = 1;
	for (int i = 0; i < k; i++) {
		pthread_join(w[i].th, NULL);
		if (!w[i].conn_ok) {
			r.ok = 0;
			if (!r.why[0])
				snprintf(r.why, sizeof r.why, "%s", w[i].why);
		}
		r.done += w[i].done;
		r.failed += w[i].failed;
		if (w[i].failed && !r.why[0])
			snprintf(r.why, sizeof r.why, "%s", w[i].why);
		if (w[i].end > tend)
			tend = w[i].end;
		if (w[i].resp_len)
			r.resp_len = w[i].resp_len;
		lat_merge(&all, &w[i].lat);
		free(w[i].lat.v);
	}
	r.self_cpu_us = self_cpu_after(r.done + r.failed);
	d1 = pid ? proc_sched_ns(pid) : -1;
	r.daemon_cpu_us = d0 >= 0 && d1 >= 0 && r.done + r.failed > 0 ?
	                  (double)(d1 - d0) / 1000.0 / (double)(r.done + r.failed) : 0;
	if (after)
		after();
	pthread_barrier_destroy(&ready);
	pthread_barrier_destroy(&start);
	free(w);
	run_end(&r, &all, t0, tend);
	return r;
}

/* ==== the baseline: the same module, in this process ====================== */

static struct {
	void *dl;
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slot;
	int ready;
	CK_MECHANISM_TYPE mechs[512];
	CK_ULONG nmechs;
} mod;

static int mod_has(CK_MECHANISM_TYPE m)
{
	for (CK_ULONG i = 0; i < mod.nmechs; i++)
		if (mod.mechs[i] == m)
			return 1;
	return 0;
}

/* Load the module with the daemon's own p11_load (dlopen, C_Initialize with OS locking), so
 * that the in-process run of op_handle below uses it too; find the token by label.  0 or -1. */
static int mod_load(const char *path, const char *label)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	char err[512];

	log_state.level = LV_ERROR;
	if (p11_load(path, err, sizeof err) != CKR_OK) {
		fprintf(stderr, "bench: %s\n", err);
		return -1;
	}
	mod.f = p11.fl;
	if (mod.f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return -1;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char lab[33];
		if (mod.f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		p11_text(lab, sizeof lab, ti.label, sizeof ti.label);
		if (strcmp(lab, label) == 0) {
			mod.slot = slots[i];
			mod.nmechs = ARRAY_LEN(mod.mechs);
			if (mod.f->C_GetMechanismList(mod.slot, mod.mechs, &mod.nmechs) != CKR_OK)
				mod.nmechs = 0;
			mod.ready = 1;
			return 0;
		}
	}
	fprintf(stderr, "bench: no token labelled '%s' in %s\n", label, path);
	return -1;
}

/* What the daemon asks of the module for one Sign with this algorithm (see the top). */
struct plan {
	CK_MECHANISM_TYPE mech;
	psa_algorithm_t soft_hash;      /* 0: the module hashes (or EdDSA) */
	const uint8_t *prefix;          /* DigestInfo prefix for CKM_RSA_PKCS */
	const char *what;
};

static struct plan plan_for(const struct alg *a)
{
	struct plan p = { 0, 0, NULL, "" };
	int sha384 = a->hash == HASH_SHA_384;
	switch (a->type) {
	case CKK_RSA:
		if (mod_has(sha384 ? CKM_SHA384_RSA_PKCS : CKM_SHA256_RSA_PKCS)) {
			p.mech = sha384 ? CKM_SHA384_RSA_PKCS : CKM_SHA256_RSA_PKCS;
			p.what = sha384 ? "CKM_SHA384_RSA_PKCS" : "CKM_SHA256_RSA_PKCS";
		} else {
			p.mech = CKM_RSA_PKCS;
			p.soft_hash = sha384 ? PSA_ALG_SHA_384 : PSA_ALG_SHA_256;
			p.prefix = sha384 ? p11_di_sha384 : p11_di_sha256;
			p.what = sha384 ? "SHA-384 (PSA) + CKM_RSA_PKCS" : "SHA-256 (PSA) + CKM_RSA_PKCS";
		}
		break;
	case CKK_EC:
		if (mod_has(sha384 ? CKM_ECDSA_SHA384 : CKM_ECDSA_SHA256)) {
			p.mech = sha384 ? CKM_ECDSA_SHA384 : CKM_ECDSA_SHA256;
			p.what = sha384 ? "CKM_ECDSA_SHA384" : "CKM_ECDSA_SHA256";
		} else {
			p.mech = CKM_ECDSA;
			p.soft_hash = sha384 ? PSA_ALG_SHA_384 : PSA_ALG_SHA_256;
			p.what = sha384 ? "SHA-384 (PSA) + CKM_ECDSA" : "SHA-256 (PSA) + CKM_ECDSA";
		}
		break;
	default:
		p.mech = CKM_EDDSA;
		p.what = "CKM_EDDSA";
		break;
	}
	return p;
}

/* One signature: the software hash if the plan says so, C_SignInit, C_Sign. */
static CK_RV mod_sign_once(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE key, const struct plan *p,
                           const uint8_t *data, size_t n)
{
	uint8_t in[19 + 64], sig[1024];
	CK_ULONG siglen = sizeof sig;
	CK_MECHANISM mech = { p->mech, NULL, 0 };
	const uint8_t *msg = data;
	size_t len = n, hl = 0, off = 0;

	if (p->soft_hash) {
		if (p->prefix) {
			memcpy(in, p->prefix, 19);
			off = 19;
		}
		if (psa_hash_compute(p->soft_hash, data, n, in + off, sizeof in - off, &hl) !=
		    PSA_SUCCESS)
			return CKR_GENERAL_ERROR;
		msg = in;
		len = off + hl;
	}
	CK_RV rv = mod.f->C_SignInit(h, &mech, key);
	if (rv == CKR_OK)
		rv = mod.f->C_Sign(h, (CK_BYTE_PTR)msg, (CK_ULONG)len, sig, &siglen);
	return rv;
}

/* A session of this thread, logged in, and the private key of uid (HEX_priv). */
static CK_RV mod_session(const char *uid, CK_SESSION_HANDLE *h, CK_OBJECT_HANDLE *key)
{
	uint8_t id[128];
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	size_t hexlen = strlen(uid) - strlen("_priv");
	int idlen = hex_parse(id, sizeof id, uid, hexlen);
	CK_ULONG got = 0;

	if (idlen <= 0)
		return CKR_ARGUMENTS_BAD;
	CK_RV rv = mod.f->C_OpenSession(mod.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, h);
	if (rv != CKR_OK)
		return rv;
	rv = mod.f->C_Login(*h, CKU_USER, (CK_UTF8CHAR_PTR)opt.pin, (CK_ULONG)strlen(opt.pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		return rv;
	CK_ATTRIBUTE t[] = { { CKA_ID, id, (CK_ULONG)idlen }, { CKA_CLASS, &cls, sizeof cls } };
	rv = mod.f->C_FindObjectsInit(*h, t, 2);
	if (rv != CKR_OK)
		return rv;
	rv = mod.f->C_FindObjects(*h, key, 1, &got);
	mod.f->C_FindObjectsFinal(*h);
	if (rv == CKR_OK && got != 1)
		rv = CKR_KEY_HANDLE_INVALID;
	return rv;
}

struct bworker {
	pthread_t th;
	const struct msg *req;          /* non-NULL: run the daemon's op_handle on it instead */
	const char *uid;
	const struct plan *plan;
	const uint8_t *data;
	size_t n;
	pthread_barrier_t *ready, *start;
	const uint64_t *deadline;
	long done;
	uint64_t end;
	CK_RV rv;
	struct lat lat;
	struct op_thread *t;            /* req: this thread's op_handle() context */
	uint8_t *out;
	CK_SESSION_HANDLE h;            /* no req: this thread's session and key */
	CK_OBJECT_HANDLE key;
};

/* The daemon's whole request path minus TLS, sockets and threads: op_handle() of
 * section 7 on the KMIP request, with this thread's own sessions, as a worker runs it. */
static CK_RV bworker_op_once(struct bworker *w)
{
	size_t n = op_handle(w->t, w->req->b, w->req->n, w->out, RESP_CAP);
	return resp_status(w->out, n) == RS_SUCCESS ? CKR_OK : CKR_FUNCTION_FAILED;
}

static CK_RV bworker_sign_once(struct bworker *w)
{
	return mod_sign_once(w->h, w->key, w->plan, w->data, w->n);
}

/* Three calls of once() to warm up, then, once the clock runs, one after the other until
 * the deadline or the first failure. */
static void bworker_measure(struct bworker *w, CK_RV (*once)(struct bworker *))
{
	for (int i = 0; w->rv == CKR_OK && i < 3; i++)
		w->rv = once(w);
	pthread_barrier_wait(w->ready);
	pthread_barrier_wait(w->start);
	uint64_t deadline = *w->deadline;
	while (w->rv == CKR_OK) {
		uint64_t t0 = now_ns();
		if (t0 >= deadline)
			break;
		w->rv = once(w);
		uint64_t t1 = now_ns();
		if (w->rv != CKR_OK)
			break;
		w->done++;
		lat_add(&w->lat, t1 - t0);
		w->end = t1;
	}
}

static void *bworker_main(void *arg)
{
	static struct op_env env;
	struct bworker *w = arg;

	if (w->req) {
		w->t = op_thread_new(&env, NULL, 0);
		w->out = malloc(RESP_CAP);
		w->rv = w->t && w->out ? CKR_OK : CKR_HOST_MEMORY;
		bworker_measure(w, bworker_op_once);
		if (w->t)
			op_thread_free(w->t);
		free(w->out);
		return NULL;
	}
	w->h = CK_INVALID_HANDLE;
	w->key = CK_INVALID_HANDLE;
	w->rv = mod_session(w->uid, &w->h, &w->key);
	bworker_measure(w, bworker_sign_once);
	if (w->h != CK_INVALID_HANDLE)
		mod.f->C_CloseSession(w->h);
	return NULL;
}

static struct run run_baseline(const char *uid, const struct plan *p, const uint8_t *data,
                               size_t n, int k, double secs, const struct msg *req)
{
	struct run r;
	struct bworker *w = calloc((size_t)k, sizeof *w);
	pthread_barrier_t ready, start;
	uint64_t deadline = 0;
	struct lat all = { 0 };

	memset(&r, 0, sizeof r);
	if (!w)
		return r;
	pthread_barrier_init(&ready, NULL, (unsigned)k + 1);
	pthread_barrier_init(&start, NULL, (unsigned)k + 1);
	for (int i = 0; i < k; i++) {
		w[i] = (struct bworker){ .req = req, .uid = uid, .plan = p, .data = data, .n = n,
		                         .ready = &ready, .start = &start, .deadline = &deadline };
		pthread_create(&w[i].th, NULL, bworker_main, &w[i]);
	}
	pthread_barrier_wait(&ready);   /* sessions open, key found, warmed up */
	self_cpu_before();
	uint64_t t0 = now_ns();
	deadline = t0 + (uint64_t)(secs * 1e9);
	pthread_barrier_wait(&start);
	uint64_t tend = t0;
	r.ok = 1;
	for (int i = 0; i < k; i++) {
		pthread_join(w[i].th, NULL);
		if (w[i].rv != CKR_OK) {
			r.ok = 0;
			snprintf(r.why, sizeof r.why, "%s", req ? "op_handle failed" : p11_rv_name(w[i].rv));
		}
		r.done += w[i].done;
		if (w[i].end > tend)
			tend = w[i].end;
		lat_merge(&all, &w[i].lat);
		free(w[i].lat.v);
	}
	r.self_cpu_us = self_cpu_after(r.done);
	pthread_barrier_destroy(&ready);
	pthread_barrier_destroy(&start);
	free(w);
	run_end(&r, &all, t0, tend);
	return r;
}

/* ==== loopback TCP echo with the KMIP sizes =============================== */

struct echo {
	int lfd, port;
	size_t req, resp;
	int cpu;                        /* pin the echo thread here; -1: no pinning */
	pthread_t th;
};

/* Pin the calling thread to one CPU, or (cpu < 0) let it run on all of them again. */
static void pin_self(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (cpu >= 0) {
		CPU_SET(cpu, &set);
	} else {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		for (long i = 0; i < n && i < CPU_SETSIZE; i++)
			CPU_SET((int)i, &set);
	}
	pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static int read_full(int fd, uint8_t *b, size_t n)
{
	while (n > 0) {
		ssize_t r = recv(fd, b, n, 0);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *b, size_t n)
{
	while (n > 0) {
		ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One connection: read req bytes, answer resp bytes, until the peer closes. */
static void *echo_main(void *arg)
{
	struct echo *e = arg;
	uint8_t buf[RESP_CAP];
	int one = 1;
	if (e->cpu >= 0)
		pin_self(e->cpu);
	int fd = accept(e->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	memset(buf, 0x5A, sizeof buf);
	while (read_full(fd, buf, e->req) == 0 && write_full(fd, buf, e->resp) == 0)
		;
	close(fd);
	return NULL;
}

static int listen_any(int *port)
{
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

/* Median round trip, in microseconds, of req bytes out and resp bytes back over a plain
 * TCP connection on 127.0.0.1 (TCP_NODELAY on both ends, a thread echoing).  place: 0 no
 * pinning, 1 both threads on CPU 0, 2 the client on CPU 0 and the echo on CPU 1. */
static double tcp_rtt(size_t req, size_t resp, double secs, int place)
{
	struct echo e = { -1, 0, req, resp, place == 0 ? -1 : place == 1 ? 0 : 1, 0 };
	struct lat l = { 0 };
	uint8_t buf[RESP_CAP];
	struct sockaddr_in a;
	int one = 1;
	double med = 0;

	if (req > sizeof buf || resp > sizeof buf || (e.lfd = listen_any(&e.port)) < 0)
		return 0;
	if (place == 2 && sysconf(_SC_NPROCESSORS_ONLN) < 2)
		e.cpu = 0;
	if (place)
		pin_self(0);
	pthread_create(&e.th, NULL, echo_main, &e);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)e.port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		memset(buf, 0xA5, sizeof buf);
		uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
		for (int i = 0; i < 100000000; i++) {
			uint64_t t0 = now_ns();
			if (t0 >= end)
				break;
			if (write_full(fd, buf, req) != 0 || read_full(fd, buf, resp) != 0)
				break;
			if (i >= 10)
				lat_add(&l, now_ns() - t0);
		}
		med = lat_pct(&l, 50);
	}
	if (fd >= 0)
		close(fd);
	pthread_join(e.th, NULL);
	close(e.lfd);
	free(l.v);
	if (place)
		pin_self(-1);
	return med;
}

/* ==== CPU readings around the nullp11 runs ================================ */

static long long cpu_t0, cpu_t1, sched_t0, sched_t1;

static void cpu_before(void)
{
	cpu_t0 = proc_ticks(opt.null_pid);
	sched_t0 = proc_sched_ns(opt.null_pid);
}

static void cpu_after(void)
{
	cpu_t1 = proc_ticks(opt.null_pid);
	sched_t1 = proc_sched_ns(opt.null_pid);
}

/* Daemon CPU per request, microseconds (utime + stime), and the schedstat figure. */
static void cpu_per(long requests, double *us, double *us_sched)
{
	double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
	*us = requests > 0 && cpu_t0 >= 0 && cpu_t1 >= 0 ?
	      (double)(cpu_t1 - cpu_t0) * tick_us / (double)requests : -1;
	*us_sched = requests > 0 && sched_t0 >= 0 && sched_t1 >= 0 ?
	            (double)(sched_t1 - sched_t0) / 1000.0 / (double)requests : -1;
}

/* The figure the ratios use: schedstat (nanoseconds) where the kernel has it, since a few
 * thousand requests are only a few clock ticks; else utime + stime. */
static double cpu_best(double us, double us_sched)
{
	return us_sched >= 0 ? us_sched : us;
}

/* ==== many idle connections, handshakes =================================== */

struct opener {
	pthread_t th;
	struct kc *c;
	int from, to, port, failed;
	char err[256];
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;
	for (int i = o->from; i < o->to; i++)
		if (connect_to(&o->c[i], o->port) != 0) {
			o->c[i].fd = -1;
			if (!o->failed++)
				snprintf(o->err, sizeof o->err, "%s", o->c[i].err);
		}
	return NULL;
}

/* Open n TLS connections to port with a few threads; returns how many succeeded. */
static int open_many(struct kc *c, int n, int port, int threads)
{
	struct opener *o = calloc((size_t)threads, sizeof *o);
	int ok = n;
	for (int t = 0; t < threads; t++) {
		o[t] = (struct opener){ .c = c, .from = n * t / threads, .to = n * (t + 1) / threads,
		                        .port = port };
		pthread_create(&o[t].th, NULL, opener_main, &o[t]);
	}
	for (int t = 0; t < threads; t++) {
		pthread_join(o[t].th, NULL);
		ok -= o[t].failed;
		if (o[t].failed)
			fprintf(stderr, "bench: %d of the idle connections failed: %s\n", o[t].failed,
			        o[t].err);
	}
	free(o);
	return ok;
}

struct hsworker {
	pthread_t th;
	int port;
	uint64_t deadline;
	long done, failed;
	char err[256];
};

static void *hsworker_main(void *arg)
{
	struct hsworker *w = arg;
	while (now_ns() < w->deadline) {
		struct kc c;
		struct kc_opts o = { 0, 10000, NULL };
		if (kc_connect_opts(&c, opt.host, w->port, NULL, NULL, NULL, &o) != 0) {
			if (!w->failed++)
				snprintf(w->err, sizeof w->err, "%s", c.err);
			continue;
		}
		kc_close(&c);
		w->done++;
	}
	return NULL;
}

/* n threads making full handshakes with port until end; NULL if out of memory. */
/* From /proc/stat's first line: v[0] idle + iowait ticks, v[1] all ticks. */
static void cpu_idle(long long v[2])
{
	char buf[512];
	long long t[10] = { 0 };
	v[0] = v[1] = 0;
	if (read_small("/proc/stat", buf, sizeof buf) != 0)
		return;
	if (sscanf(buf, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &t[0], &t[1], &t[2], &t[3],
	           &t[4], &t[5], &t[6], &t[7]) < 4)
		return;
	v[0] = t[3] + t[4];
	for (int i = 0; i < 8; i++)
		v[1] += t[i];
}

static struct hsworker *storm_start(int n, int port, uint64_t end)
{
	struct hsworker *hw = calloc((size_t)n, sizeof *hw);
	for (int i = 0; hw && i < n; i++) {
		hw[i].port = port;
		hw[i].deadline = end;
		pthread_create(&hw[i].th, NULL, hsworker_main, &hw[i]);
	}
	return hw;
}

/* Wait for the storm's threads; handshakes made into *done, failed into *failed. */
static void storm_join(struct hsworker *hw, int n, long *done, long *failed)
{
	*done = *failed = 0;
	for (int i = 0; hw && i < n; i++) {
		pthread_join(hw[i].th, NULL);
		*done += hw[i].done;
		*failed += hw[i].failed;
		if (hw[i].failed)
			printf("NOTE handshake failures: %s\n", hw[i].err);
	}
	free(hw);
}

/* req on the open connection c, back to back, until the deadline; each latency into l.
 * Returns the number of failed requests (the first one's reason into why); the connection
 * is given up at the first transport error. */
static long probe(struct kc *c, const struct msg *req, uint64_t deadline, struct lat *l,
                  char *why, size_t cap)
{
	static uint8_t resp[RESP_CAP];
	long failed = 0;
	for (;;) {
		uint64_t t0 = now_ns();
		if (t0 >= deadline)
			break;
		long n = kc_roundtrip(c, req->b, req->n, resp, sizeof resp);
		uint64_t t1 = now_ns();
		if (n < 0) {
			if (!failed++)
				snprintf(why, cap, "%s", c->err);
			break;
		}
		if (resp_status(resp, (size_t)n) != RS_SUCCESS) {
			if (!failed++)
				resp_why(resp, (size_t)n, why, cap);
			continue;
		}
		lat_add(l, t1 - t0);
	}
	return failed;
}

/* ==== the handshake's crypto floor ======================================== */

/* This thread's CPU time, nanoseconds. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Microseconds per (X25519 key pair + X25519 shared secret + ECDSA P-256 signature of a
 * hash), one thread, PSA: the asymmetric work of one TLS 1.3 server handshake with our
 * key exchange and certificate; the rest (HKDF, AES-GCM, X.509) is small beside it.  It
 * runs for secs of the clock but counts this thread's CPU time, as the daemon's figure
 * does, so that other load on the machine does not inflate the floor. */
static double hs_crypto_floor(double secs)
{
	psa_key_attributes_t ka = PSA_KEY_ATTRIBUTES_INIT, sa = PSA_KEY_ATTRIBUTES_INIT;
	psa_key_id_t sig = 0, peer = 0;
	uint8_t peer_pub[32], pub[32], secret[32], hash[32] = { 1 }, sigbuf[64];
	size_t n;
	long count = 0;
	double us = 0;

	psa_set_key_type(&ka, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_MONTGOMERY));
	psa_set_key_bits(&ka, 255);
	psa_set_key_usage_flags(&ka, PSA_KEY_USAGE_DERIVE | PSA_KEY_USAGE_EXPORT);
	psa_set_key_algorithm(&ka, PSA_ALG_ECDH);
	psa_set_key_type(&sa, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1));
	psa_set_key_bits(&sa, 256);
	psa_set_key_usage_flags(&sa, PSA_KEY_USAGE_SIGN_HASH);
	psa_set_key_algorithm(&sa, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
	if (psa_generate_key(&sa, &sig) != PSA_SUCCESS || psa_generate_key(&ka, &peer) != PSA_SUCCESS ||
	    psa_export_public_key(peer, peer_pub, sizeof peer_pub, &n) != PSA_SUCCESS)
		goto out;
	uint64_t c0 = thread_cpu_ns(), end = now_ns() + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		psa_key_id_t eph = 0;
		if (psa_generate_key(&ka, &eph) != PSA_SUCCESS ||
		    psa_export_public_key(eph, pub, sizeof pub, &n) != PSA_SUCCESS ||
		    psa_raw_key_agreement(PSA_ALG_ECDH, eph, peer_pub, sizeof peer_pub, secret,
		                          sizeof secret, &n) != PSA_SUCCESS ||
		    psa_sign_hash(sig, PSA_ALG_ECDSA(PSA_ALG_SHA_256), hash, sizeof hash, sigbuf,
		                  sizeof sigbuf, &n) != PSA_SUCCESS) {
			psa_destroy_key(eph);
			goto out;
		}
		psa_destroy_key(eph);
		count++;
	}
	us = count ? (double)(thread_cpu_ns() - c0) / 1000.0 / (double)count : 0;
out:
	psa_destroy_key(sig);
	psa_destroy_key(peer);
	return us;
}

/* ==== the report ========================================================== */

static void line(void)
{
	printf("-----------------------------------------------------------------------------"
	       "---------------------\n");
}

static const char *pct(double a, double b, char *buf, size_t cap)
{
	if (a <= 0 || b <= 0)
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.1f %%", 100.0 * a / b);
	return buf;
}

/* The closing table: every measure of the issue, its value in this run and its target. */
static void print_goals(void)
{
	char v[32], tg[32];
	printf("\nIssue targets (this run; a target not met does not change the exit status)\n");
	line();
	printf("%-52s | %11s | %11s | %s\n", "measure", "measured", "target", "status");
	line();
	for (int g = 0; g < G_COUNT; g++) {
		if (goals[g].measured)
			goal_value(g, goals[g].value, v, sizeof v);
		else
			snprintf(v, sizeof v, "-");
		printf("%-52s | %11s | %11s | %s\n", goals[g].what, v, goal_target(g, tg, sizeof tg),
		       goal_status(g));
	}
	line();
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: bench --port P --pid PID --lib MODULE [--null-port P --null-pid PID]\n"
	        "             [--user LABEL] [--pin PIN] [--conns K] [--time S] [--one-time S]\n"
	        "             [--null-requests N] [--idle-conns N] [--hs-threads T]\n"
	        "             [--data-size BYTES] [--algs p256,rsa2048,p384,ed25519]\n"
	        "             [--sections 12345] [--extra-keys N] [--suites cascade|mbedtls]\n"
	        "       bench --free-ports | --wait PORT SECONDS\n");
	exit(2);
}

static void on_alarm(int sig)
{
	static const char m[] = "bench: time limit reached, giving up\n";
	(void)sig;
	ssize_t r = write(2, m, sizeof m - 1);
	(void)r;
	_exit(3);
}

static int mode_free_ports(void)
{
	int p1, p2;
	int f1 = listen_any(&p1), f2 = listen_any(&p2);
	if (f1 < 0 || f2 < 0)
		return 1;
	printf("%d %d\n", p1, p2);
	close(f1);
	close(f2);
	return 0;
}

static int mode_wait(int port, double secs)
{
	uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		struct kc c;
		struct kc_opts o = { 0, 2000, NULL };
		if (kc_connect_opts(&c, opt.host, port, NULL, NULL, NULL, &o) == 0) {
			kc_close(&c);
			return 0;
		}
		sleep_ms(100);
	}
	return 1;
}

static int want_sec(char c)
{
	return strchr(opt.sections, c) != NULL;
}

static void print_load(const char *when)
{
	char buf[256];
	if (read_small("/proc/loadavg", buf, sizeof buf) == 0)
		printf("load average %s: %.*s\n", when, (int)strcspn(buf, "\n"), buf);
}

/* 1, 2, the CPUs online and K, each once, ascending: the baseline's thread counts. */
static int thread_counts(int thr[4])
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int cand[4] = { 1, 2, ncpu > 0 ? (int)ncpu : 1, opt.conns }, most = 0, n = 0;
	for (int i = 0; i < 4; i++)
		if (cand[i] > most)
			most = cand[i];
	for (int c = 1; c <= most; c++)
		for (int i = 0; i < 4; i++)
			if (cand[i] == c) {
				thr[n++] = c;
				break;
			}
	return n;
}

static int want_alg(const char *key)
{
	size_t n = strlen(key);
	for (const char *p = opt.algs; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (strncmp(p, key, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	static uint8_t data[65536];
	char buf1[32], cpu[128];
	int ran = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && ++i)
		if (strcmp(a, "--free-ports") == 0)
			return mode_free_ports();
		if (strcmp(a, "--rtt") == 0) {
			for (int k = 0; k < 3; k++)
				printf("rtt place %d: %.1f %.1f %.1f us\n", k, tcp_rtt(408, 272, 1, k),
				       tcp_rtt(408, 272, 1, k), tcp_rtt(408, 272, 1, k));
			return 0;
		}
		else if (strcmp(a, "--wait") == 0 && i + 2 < argc)
			return mode_wait(atoi(argv[i + 1]), atof(argv[i + 2]));
		else if (ARG("--host")) opt.host = v;
		else if (ARG("--port")) opt.port = atoi(v);
		else if (ARG("--null-port")) opt.null_port = atoi(v);
		else if (ARG("--pid")) opt.pid = atol(v);
		else if (ARG("--null-pid")) opt.null_pid = atol(v);
		else if (ARG("--lib")) opt.lib = v;
		else if (ARG("--user")) opt.user = v;
		else if (ARG("--pin")) opt.pin = v;
		else if (ARG("--null-user")) opt.null_user = v;
		else if (ARG("--null-pin")) opt.null_pin = v;
		else if (ARG("--conns")) opt.conns = atoi(v);
		else if (ARG("--time")) opt.secs = atof(v);
		else if (ARG("--one-time")) opt.one_secs = atof(v);
		else if (ARG("--null-requests")) opt.null_requests = atol(v);
		else if (ARG("--idle-conns")) opt.idle_conns = atoi(v);
		else if (ARG("--hs-threads")) opt.hs_threads = atoi(v);
		else if (ARG("--data-size")) opt.data_size = (size_t)atol(v);
		else if (ARG("--algs")) opt.algs = v;
		else if (ARG("--sections")) opt.sections = v;
		else if (ARG("--suites")) bench_suites = strcmp(v, "mbedtls") == 0 ? NULL :
		                                        bench_suites_cascade;
		else if (ARG("--extra-keys")) opt.extra_keys = atoi(v);
		else if (ARG("--softhsm-version")) opt.softhsm_version = v;
		else
			usage();
#undef ARG
	}
	if (!opt.port || !opt.pid || !opt.lib || opt.conns < 1 || opt.secs <= 0 ||
	    opt.one_secs <= 0 || opt.data_size < 1 || opt.data_size > sizeof data ||
	    opt.hs_threads < 1 || opt.idle_conns < 0)
		usage();

	/* The in-process baseline of section 1 runs with each of these thread counts, for half
	 * the daemon's time each (at most 4 runs: twice the daemon's time in all). */
	int thr[4];
	int nthr = thread_counts(thr);
	double sweep_secs = opt.secs / 2;

	/* Everything below is bounded: a hung daemon must not hang `make bench`.  Per
	 * algorithm: the daemon, the thread counts and op_handle (4 x time), three one-thread
	 * runs and the round trips (4.5 x one-time); the nullp11 runs of sections 3 and 4 (five
	 * of N requests, three of one-time and their round trips); section 5 (time, two
	 * one-time runs, one second of floor). */
	double budget = 60 + A_COUNT * (4 * opt.secs + 5 * opt.one_secs + 30) + 2 * opt.secs +
	                9 * opt.one_secs + opt.null_requests / 1000.0 + opt.idle_conns / 20.0 +
	                opt.extra_keys * 0.5;
	signal(SIGALRM, on_alarm);
	alarm((unsigned)budget);

	/* 1000 idle connections need as many descriptors here. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (psa_crypto_init() != PSA_SUCCESS) {
		fprintf(stderr, "bench: psa_crypto_init failed\n");
		return 1;
	}
	for (size_t i = 0; i < opt.data_size; i++)
		data[i] = (uint8_t)(i * 131 + 7);

	/* ---- header ---- */
	time_t t = time(NULL);
	char date[64];
	strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
	struct utsname un;
	uname(&un);
	cpu_model(cpu, sizeof cpu);
	printf("kmip2pkcs11 benchmark, %s\n", date);
	printf("machine: %ld CPUs, %s, %s %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu, un.sysname,
	       un.release);
	printf("module: %s (%s); Mbed TLS %s\n", opt.lib,
	       opt.softhsm_version ? opt.softhsm_version : "version unknown", MBEDTLS_VERSION_STRING);
	printf("K = %d connections / threads, %.1f s per throughput run, %.1f s per latency run, "
	       "Data %zu bytes\n", opt.conns, opt.secs, opt.one_secs, opt.data_size);
	printf("in-process baseline with ");
	for (int j = 0; j < nthr; j++)
		printf("%s%d", j == 0 ? "" : j == nthr - 1 ? " and " : ", ", thr[j]);
	printf(" threads (1, 2, CPUs, K), %.1f s each (half the throughput run); the best rate is "
	       "the baseline\n", sweep_secs);
	{
		struct kc c;
		if (connect_to(&c, opt.port) == 0) {
			printf("TLS: %s, %s (client offers %s)\n", mbedtls_ssl_get_version(&c.ssl),
			       mbedtls_ssl_get_ciphersuite(&c.ssl), bench_suites ?
			       "AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305 as Cascade's rustls does" :
			       "Mbed TLS's default list");
			kc_close(&c);
		}
	}
	long nofile = proc_nofile(opt.pid);
	if (nofile >= 0 && nofile < opt.idle_conns + 64)
		printf("NOTE the daemon's open-file limit is %ld: too low for %d connections\n",
		       nofile, opt.idle_conns);
	long rss_idle = proc_status_kb(opt.pid, "VmRSS");
	print_load("at start");

	/* ---- keys, through the daemon ---- */
	char uid[A_COUNT][128];
	int have[A_COUNT], any = 0;
	if (opt.extra_keys > 0 && (want_sec('1') || want_sec('2'))) {
		int made = 0;
		for (int i = 0; i < opt.extra_keys; i++)
			made += make_key(opt.port, &algs[A_P256], opt.user, opt.pin, uid[0],
			                 sizeof uid[0]) == 0;
		printf("the token holds %d extra P-256 key pairs (%d objects) besides the bench's keys\n",
		       made, 2 * made);
	}
	for (int a = 0; a < A_COUNT; a++) {
		have[a] = (want_sec('1') || want_sec('2')) && want_alg(algs[a].key) &&
		          make_key(opt.port, &algs[a], opt.user, opt.pin, uid[a], sizeof uid[a]) == 0;
		any |= have[a];
	}
	if (any && mod_load(opt.lib, opt.user) != 0)
		return 1;
	if (!any)
		ran = 1;

	/* ---- 1. throughput, 2. one connection ---- */
	struct run dr[A_COUNT], br[A_COUNT], or[A_COUNT], d1[A_COUNT], b1[A_COUNT], o1[A_COUNT];
	struct run bs[A_COUNT][4];      /* the baseline at each thread count; br: the best */
	int bbest[A_COUNT];             /* its thread count */
	struct plan pl[A_COUNT];
	size_t reqlen[A_COUNT];
	double rtt[A_COUNT][3];
	memset(dr, 0, sizeof dr);
	memset(br, 0, sizeof br);
	memset(or, 0, sizeof or);
	memset(d1, 0, sizeof d1);
	memset(b1, 0, sizeof b1);
	memset(o1, 0, sizeof o1);
	memset(bs, 0, sizeof bs);
	memset(bbest, 0, sizeof bbest);
	memset(rtt, 0, sizeof rtt);
	for (int a = 0; a < A_COUNT; a++) {
		static struct msg m;
		if (!have[a])
			continue;
		pl[a] = plan_for(&algs[a]);
		rq_sign(&m, &algs[a], uid[a], opt.user, opt.pin, data, opt.data_size);
		reqlen[a] = m.n;
		dr[a] = run_daemon(opt.port, opt.pid, &m, opt.conns, opt.secs, 0, NULL, NULL);
		for (int j = 0; j < nthr; j++) {
			bs[a][j] = run_baseline(uid[a], &pl[a], data, opt.data_size, thr[j], sweep_secs,
			                        NULL);
			if (!bs[a][j].ok)
				printf("NOTE %s, baseline with %d threads could not run: %s\n", algs[a].name,
				       thr[j], bs[a][j].why);
			else if (!br[a].ok || bs[a][j].rate > br[a].rate) {
				br[a] = bs[a][j];
				bbest[a] = thr[j];
			}
		}
		or[a] = run_baseline(uid[a], &pl[a], data, opt.data_size, opt.conns, opt.secs, &m);
		d1[a] = run_daemon(opt.port, opt.pid, &m, 1, opt.one_secs, 0, NULL, NULL);
		b1[a] = run_baseline(uid[a], &pl[a], data, opt.data_size, 1, opt.one_secs, NULL);
		o1[a] = run_baseline(uid[a], &pl[a], data, opt.data_size, 1, opt.one_secs, &m);
		for (int place = 0; place < 3 && d1[a].resp_len; place++)
			rtt[a][place] = tcp_rtt(reqlen[a], d1[a].resp_len, opt.one_secs / 2, place);
		ran |= dr[a].ok && br[a].ok;
		for (int i = 0; i < 6; i++) {
			static const char *const what[] = { "daemon", "baseline", "op_handle in-process",
				"daemon, one connection", "baseline, one thread", "op_handle, one thread" };
			struct run *r = i == 0 ? &dr[a] : i == 1 ? &br[a] : i == 2 ? &or[a] :
			                i == 3 ? &d1[a] : i == 4 ? &b1[a] : &o1[a];
			if (i == 1 && !r->ok)
				continue;       /* said above, thread count by thread count */
			if (!r->ok || r->failed)
				printf("NOTE %s, %s: %s%s\n", algs[a].name, what[i],
				       r->ok ? "" : "could not run: ", r->why);
		}
	}
	long rss_after = proc_status_kb(opt.pid, "VmRSS");

	printf("\n1. Signatures per second, K = %d: daemon over K TLS 1.3 connections; baseline: the "
	       "best in-process rate\n   of C_SignInit + C_Sign over %d thread counts (threads: the "
	       "count that gave it)\n", opt.conns, nthr);
	line();
	printf("%-12s | %9s %8s %8s | %9s %7s %7s %7s | %7s | %s\n", "algorithm", "daemon/s",
	       "p50 us", "p99 us", "inproc/s", "threads", "p50 us", "p99 us", "ratio", "target");
	line();
	for (int a = 0; a < A_COUNT; a++) {
		if (!have[a])
			continue;
		char tg[32];
		printf("%-12s | %9.0f %8.0f %8.0f | %9.0f %7d %7.0f %7.0f | %7s | %s\n", algs[a].name,
		       dr[a].rate, dr[a].p50, dr[a].p99, br[a].rate, bbest[a], br[a].p50, br[a].p99,
		       pct(dr[a].rate, br[a].rate, buf1, sizeof buf1),
		       goal_target(algs[a].g_tput, tg, sizeof tg));
		if (dr[a].ok && br[a].ok && dr[a].rate > 0 && br[a].rate > 0)
			goal_set(algs[a].g_tput, 100.0 * dr[a].rate / br[a].rate);
	}
	line();
	printf("in-process signatures/s by thread count, %.1f s each:\n", sweep_secs);
	for (int a = 0; a < A_COUNT; a++) {
		if (!have[a])
			continue;
		printf("  %-12s", algs[a].name);
		for (int j = 0; j < nthr; j++)
			if (bs[a][j].ok)
				printf("  %d: %.0f", thr[j], bs[a][j].rate);
			else
				printf("  %d: -", thr[j]);
		printf("\n");
	}
	printf("baseline per signature: ");
	for (int a = 0, first = 1; a < A_COUNT; a++)
		if (have[a]) {
			printf("%s%s: %s", first ? "" : "; ", algs[a].name, pl[a].what);
			first = 0;
		}
	printf("\n");

	printf("\n1b. Where the CPU goes at K = %d (same runs; us of CPU per signature, all "
	       "threads).  op_handle: the daemon's\n    request path in-process (TTLV, slot lookup, "
	       "PIN check, C_FindObjects, C_GetAttributeValue, sign), no TLS\n", opt.conns);
	line();
	printf("%-12s | %10s %10s | %10s %9s %7s | %10s %7s\n", "algorithm", "daemon CPU",
	       "client CPU", "op_handle/s", "CPU/sig", "ratio", "best base", "CPU/sig");
	line();
	for (int a = 0; a < A_COUNT; a++) {
		if (!have[a])
			continue;
		printf("%-12s | %10.1f %10.1f | %10.0f %9.1f %7s | %10.0f %7.1f\n", algs[a].name,
		       dr[a].daemon_cpu_us, dr[a].self_cpu_us, or[a].rate, or[a].self_cpu_us,
		       pct(or[a].rate, br[a].rate, buf1, sizeof buf1), br[a].rate, br[a].self_cpu_us);
	}
	line();

	printf("\n2. One connection: median latency of one Sign vs. in-process C_SignInit + C_Sign + "
	       "loopback TCP round trip\n   (plain TCP echo with the KMIP request / response sizes;"
	       " sum and excess use the unpinned round trip)\n");
	line();
	printf("%-12s | %9s | %9s %8s %11s %8s | %8s | %9s | %s\n", "algorithm", "daemon us",
	       "inproc us", "TCP rtt", "(req/resp B)", "sum us", "excess", "op_handle", "target");
	line();
	for (int a = 0; a < A_COUNT; a++) {
		if (!have[a])
			continue;
		char sz[32];
		snprintf(sz, sizeof sz, "%zu/%zu", reqlen[a], d1[a].resp_len);
		double sum = b1[a].p50 + rtt[a][0];
		char tg[32];
		printf("%-12s | %9.1f | %9.1f %8.1f %11s %8.1f | %8.1f | %9.1f | %s\n", algs[a].name,
		       d1[a].p50, b1[a].p50, rtt[a][0], sz, sum, d1[a].p50 - sum, o1[a].p50,
		       goal_target(algs[a].g_lat, tg, sizeof tg));
		if (d1[a].ok && b1[a].ok && d1[a].p50 > 0 && b1[a].p50 > 0 && rtt[a][0] > 0)
			goal_set(algs[a].g_lat, d1[a].p50 - sum);
	}
	line();
	printf("TCP round trip by placement (us): ");
	for (int a = 0, first = 1; a < A_COUNT; a++)
		if (have[a]) {
			printf("%s%s %.1f / %.1f / %.1f", first ? "" : "; ", algs[a].name, rtt[a][0],
			       rtt[a][1], rtt[a][2]);
			first = 0;
		}
	printf("  (unpinned / both on CPU 0 / CPU 0 and CPU 1)\n");

	/* ---- 3. CPU per request against nullp11 ---- */
	if (opt.null_port && opt.null_pid) {
		long null_rss_idle = proc_status_kb(opt.null_pid, "VmRSS");
		int p256_ok = 0;
		char p256_uid[128] = "";
		char nuid[128];
		static struct msg nm;
		static const int null_algs[] = { A_P256, A_RSA2048, A_ED25519 };
		/* The P-256 key for sections 4 and 5 comes from here. */
		if (!want_sec('3') && (want_sec('4') || want_sec('5')) &&
		    make_key(opt.null_port, &algs[A_P256], opt.null_user, opt.null_pin, p256_uid,
		             sizeof p256_uid) == 0)
			p256_ok = 1;
		if (want_sec('3')) {
			printf("\n3. Daemon CPU per Sign request against nullp11 (no crypto in the module), "
			       "K = %d connections, %ld requests\n", opt.conns, opt.null_requests);
			line();
			printf("%-12s | %10s %11s | %10s %6s %8s | %8s | %10s %8s\n", "algorithm",
			       "CPU us/req", "(schedstat)", "client CPU", "ratio", "target", "req/s",
			       "1-conn p50", "TCP rtt");
			line();
			for (size_t i = 0; i < ARRAY_LEN(null_algs); i++) {
				const struct alg *a = &algs[null_algs[i]];
				if (make_key(opt.null_port, a, opt.null_user, opt.null_pin, nuid, sizeof nuid) != 0)
					continue;
				rq_sign(&nm, a, nuid, opt.null_user, opt.null_pin, data, opt.data_size);
				struct run r = run_daemon(opt.null_port, 0, &nm, opt.conns, 0, opt.null_requests,
				                          cpu_before, cpu_after);
				double us, us_s;
				cpu_per(r.done + r.failed, &us, &us_s);
				struct run one = run_daemon(opt.null_port, 0, &nm, 1, opt.one_secs, 0, NULL, NULL);
				double rt = one.resp_len ? tcp_rtt(nm.n, one.resp_len, opt.one_secs / 2, 0) : 0;
				if (!r.ok || r.failed)
					printf("NOTE %s on nullp11: %s\n", a->name, r.why);
				double ratio = cpu_best(us, us_s) > 0 && r.self_cpu_us > 0 ?
				               cpu_best(us, us_s) / r.self_cpu_us : -1;
				char tg[32], rs[16] = "-";
				if (ratio >= 0)
					snprintf(rs, sizeof rs, "%.2f", ratio);
				printf("%-12s | %10.1f %11.1f | %10.1f %6s %8s | %8.0f | %10.1f %8.1f\n", a->name,
				       us, us_s, r.self_cpu_us, rs, goal_target(a->g_null, tg, sizeof tg), r.rate,
				       one.p50, rt);
				if (r.ok && !r.failed && ratio >= 0)
					goal_set(a->g_null, ratio);
				if (null_algs[i] == A_P256 && r.ok) {
					p256_ok = 1;
					snprintf(p256_uid, sizeof p256_uid, "%s", nuid);
				}
			}
			line();
			printf("CPU: utime + stime of all the daemon's threads from /proc/PID/stat (%ld ticks/s);"
			       " schedstat: the same in ns.\nClient CPU: this process (the K client "
			       "connections, TLS included) per request.  Ratio: daemon / client, from the\n"
			       "schedstat figure where there is one.\n", sysconf(_SC_CLK_TCK));
		}

		if (want_sec('4')) {
			/* ---- 4. memory ---- */
			printf("\n4. Memory (VmRSS, VmData from /proc/PID/status), %d idle TLS 1.3 connections\n",
			       opt.idle_conns);
			line();
			printf("daemon on %s: idle at start %ld KiB, after the signing runs %ld KiB\n",
			       opt.lib, rss_idle, rss_after);
			/* The CPU per request right before opening the idle connections and with them
			 * open: the same P-256 Sign, K connections, N requests. */
			double idle_cpu0 = -1;
			if (p256_ok) {
				rq_sign(&nm, &algs[A_P256], p256_uid, opt.null_user, opt.null_pin, data,
				        opt.data_size);
				struct run r = run_daemon(opt.null_port, 0, &nm, opt.conns, 0, opt.null_requests,
				                          cpu_before, cpu_after);
				double us, us_s;
				cpu_per(r.done + r.failed, &us, &us_s);
				if (!r.ok || r.failed)
					printf("NOTE ECDSA P-256 on nullp11: %s\n", r.why);
				else
					idle_cpu0 = cpu_best(us, us_s);
				printf("ECDSA P-256 on nullp11, no idle connection: %.1f us CPU per request "
				       "(schedstat %.1f), %.0f req/s\n", us, us_s, r.rate);
			}
			long data0 = proc_status_kb(opt.null_pid, "VmData");
			long rss0 = proc_status_kb(opt.null_pid, "VmRSS");
			struct kc *cs = calloc((size_t)opt.idle_conns + 1, sizeof *cs);
			int opened = cs ? open_many(cs, opt.idle_conns, opt.null_port, opt.hs_threads) : 0;
			sleep_ms(300);
			long rss1 = proc_status_kb(opt.null_pid, "VmRSS");
			long data1 = proc_status_kb(opt.null_pid, "VmData");
			printf("daemon on nullp11: idle at start %ld KiB, before opening %ld KiB, with %d idle "
			       "connections %ld KiB\n", null_rss_idle, rss0, opened, rss1);
			if (opened > 0) {
				char tg[32];
				printf("per idle connection: %.1f KiB resident (VmRSS), %.1f KiB of heap "
				       "(VmData)   target %s\n", (double)(rss1 - rss0) / opened,
				       (double)(data1 - data0) / opened, goal_target(G_IDLE_MEM, tg, sizeof tg));
				if (rss0 >= 0 && rss1 >= 0)
					goal_set(G_IDLE_MEM, (double)(rss1 - rss0) / opened);
			}
			/* With the idle connections still open: the CPU per request again. */
			if (p256_ok && opened > 0) {
				struct run r = run_daemon(opt.null_port, 0, &nm, opt.conns, 0, opt.null_requests,
				                          cpu_before, cpu_after);
				double us, us_s;
				char tg[32];
				cpu_per(r.done + r.failed, &us, &us_s);
				if (!r.ok || r.failed)
					printf("NOTE ECDSA P-256 on nullp11 with idle connections: %s\n", r.why);
				printf("ECDSA P-256 on nullp11 with the %d idle connections open: %.1f us CPU per "
				       "request (schedstat %.1f), %.0f req/s\n", opened, us, us_s, r.rate);
				if (r.ok && !r.failed && idle_cpu0 > 0 && cpu_best(us, us_s) > 0) {
					double ratio = cpu_best(us, us_s) / idle_cpu0;
					printf("CPU per request with / without the idle connections: %.2fx   target "
					       "%s\n", ratio, goal_target(G_IDLE_CPU, tg, sizeof tg));
					goal_set(G_IDLE_CPU, ratio);
				}
			}
			for (int i = 0; cs && i < opt.idle_conns; i++)
				if (cs[i].fd >= 0 || cs[i].ready)
					kc_close(&cs[i]);
			free(cs);
			sleep_ms(300);
			printf("after closing them: %ld KiB resident\n", proc_status_kb(opt.null_pid, "VmRSS"));
			line();
		}

		if (want_sec('5')) {
			/* ---- 5. handshakes ---- */
			long done = 0, failed = 0;
			cpu_before();
			self_cpu_before();
			uint64_t t0 = now_ns();
			struct hsworker *hw = storm_start(opt.hs_threads, opt.null_port,
			                                  t0 + (uint64_t)(opt.secs * 1e9));
			storm_join(hw, opt.hs_threads, &done, &failed);
			double el = (double)(now_ns() - t0) / 1e9;
			cpu_after();
			double client_us = self_cpu_after(done);
			double us, us_s;
			cpu_per(done, &us, &us_s);
			double floor_us = hs_crypto_floor(1.0);
			double hs_us = cpu_best(us, us_s);
			char tg[32];
			printf("\n5. Full TLS 1.3 handshakes (new TCP connection each, X25519, server P-256 "
			       "certificate), %d client threads, %.1f s\n", opt.hs_threads, opt.secs);
			line();
			printf("%-22s | %12s | %14s %11s | %14s\n", "", "handshakes/s", "daemon CPU us",
			       "client CPU", "one core at this");
			line();
			printf("%-22s | %12.0f | %14.0f %11.0f | %14.0f\n", "daemon", done / el, us_s, client_us,
			       us_s > 0 ? 1e6 / us_s : 0);
			printf("%-22s | %12s | %14.0f %11s | %14.0f\n", "crypto floor (in-proc)", "-", floor_us,
			       "-", floor_us > 0 ? 1e6 / floor_us : 0);
			line();
			printf("crypto floor: what a TLS 1.3 server must compute per full handshake, with the same "
			       "Mbed TLS in this process:\nX25519 key pair + X25519 shared secret + ECDSA P-256 "
			       "signature (PSA), CPU time of one thread.  %ld handshakes failed.\n", failed);
			printf("handshake throughput against the floor: floor %.0f us / daemon %.0f us CPU per "
			       "handshake = %s   target %s\n", floor_us, hs_us,
			       pct(floor_us, hs_us, buf1, sizeof buf1), goal_target(G_HS_FLOOR, tg, sizeof tg));
			if (done > 0 && floor_us > 0 && hs_us > 0)
				goal_set(G_HS_FLOOR, 100.0 * floor_us / hs_us);

			/* ---- 5b. one open connection, quiet, then during handshake storms ---- */
			if (p256_ok) {
				struct kc pc;
				struct lat quiet = { 0 }, storm[2] = { { 0 } }, warm = { 0 };
				char why[256] = "";
				long qf = -1, sf[2] = { -1, -1 }, sdone[2] = { 0, 0 }, sfailed = 0;
				double sel[2] = { 0, 0 }, idle[2] = { 0, 0 };
				int nth[2] = { 1, opt.hs_threads };
				rq_sign(&nm, &algs[A_P256], p256_uid, opt.null_user, opt.null_pin, data,
				        opt.data_size);
				if (connect_to(&pc, opt.null_port) == 0) {
					probe(&pc, &nm, now_ns() + 100000000u, &warm, why, sizeof why);
					qf = probe(&pc, &nm, now_ns() + (uint64_t)(opt.one_secs * 1e9), &quiet, why,
					           sizeof why);
					for (int k = 0; k < 2; k++) {
						uint64_t s0 = now_ns(), send = s0 + (uint64_t)(opt.one_secs * 1e9);
						long long i0[2], i1[2];
						cpu_idle(i0);
						hw = storm_start(nth[k], opt.null_port, send);
						sf[k] = probe(&pc, &nm, send, &storm[k], why, sizeof why);
						storm_join(hw, nth[k], &sdone[k], &sfailed);
						cpu_idle(i1);
						sel[k] = (double)(now_ns() - s0) / 1e9;
						idle[k] = i1[1] > i0[1] ? 100.0 * (double)(i1[0] - i0[0]) /
						                           (double)(i1[1] - i0[1]) : 0;
					}
					kc_close(&pc);
				}
				if (qf != 0 || sf[0] != 0 || sf[1] != 0)
					printf("NOTE the Sign requests on the open connection: %s\n",
					       qf < 0 ? "could not connect" : why);
				double q50 = lat_pct(&quiet, 50), q99 = lat_pct(&quiet, 99);
				printf("\n5b. Sign latency (ECDSA P-256, nullp11) on one connection opened before, "
				       "requests back to back:\n    %.1f s quiet, then %.1f s during a storm of "
				       "full handshakes from 1 and from %d client threads\n", opt.one_secs,
				       opt.one_secs, opt.hs_threads);
				line();
				printf("%-24s | %10s | %10s %10s | %12s | %9s\n", "", "requests", "p50 us",
				       "p99 us", "handshakes/s", "CPU idle");
				line();
				printf("%-24s | %10zu | %10.1f %10.1f | %12s | %9s\n", "quiet (just before)",
				       quiet.n, q50, q99, "-", "-");
				for (int k = 0; k < 2; k++) {
					char lbl[40];
					double s50 = lat_pct(&storm[k], 50), s99 = lat_pct(&storm[k], 99);
					snprintf(lbl, sizeof lbl, "storm, %d thread%s", nth[k], nth[k] > 1 ? "s" : "");
					printf("%-24s | %10zu | %10.1f %10.1f | %12.0f | %7.1f %%\n", lbl, storm[k].n,
					       s50, s99, sel[k] > 0 ? sdone[k] / sel[k] : 0, idle[k]);
					if (qf == 0 && sf[k] == 0 && quiet.n > 0 && storm[k].n > 0)
						goal_set(k ? G_HS_DELAY : G_HS_DELAY_1, (s99 - q50) / 1000.0);
				}
				line();
				for (int k = 0; k < 2; k++)
					printf("delay to others, storm from %d thread%s: p99 during it - p50 quiet = "
					       "%.2f ms   target %s\n", nth[k], nth[k] > 1 ? "s" : "",
					       (lat_pct(&storm[k], 99) - q50) / 1000.0,
					       goal_target(G_HS_DELAY, tg, sizeof tg));
				printf("(the bench's handshake threads share the CPUs with this connection's "
				       "client and the daemon; CPU idle: of all CPUs, from /proc/stat; %ld "
				       "handshakes failed)\n", sfailed);
				free(warm.v);
				free(quiet.v);
				free(storm[0].v);
				free(storm[1].v);
			} else {
				printf("NOTE no P-256 key on nullp11: the latency during the storm is not "
				       "measured\n");
			}
		}
	}
	print_goals();
	print_load("at the end");
	return ran ? 0 : 1;
}
