/* Section 5: the configuration file and the command line. */
#include "../kmip2pkcs11.c"
#include "check.h"

static struct cfg C;
static char E[512];

static int parse(const char *text)
{
	E[0] = '\0';
	return cfg_parse_text(&C, "k.toml", text, strlen(text), E, sizeof E);
}

/* The text must fail with an error that starts with "k.toml:<line>: " and contains want. */
static void bad(const char *name, const char *text, int line, const char *want)
{
	char prefix[32];
	if (line > 0)
		snprintf(prefix, sizeof prefix, "k.toml:%d: ", line);
	else
		snprintf(prefix, sizeof prefix, "k.toml: ");
	int r = parse(text);
	CHECK(r == -1 && strncmp(E, prefix, strlen(prefix)) == 0 && strstr(E, want) != NULL,
	      "%s: want \"%s...%s\", got %d \"%s\"", name, prefix, want, r, E);
}

#define MIN "version = \"v1\"\n[pkcs11]\nlib-path = \"/usr/lib/softhsm/libsofthsm2.so\"\n"

static int sa_port(const struct cfg *c)
{
	if (c->listen_sa.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&c->listen_sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&c->listen_sa)->sin6_port);
}

static void test_defaults(void)
{
	CHECK(parse(MIN) == 0, "minimal file: %s", E);
	CHECK(strcmp(C.version, "v1") == 0, "version stored");
	CHECK(strcmp(C.lib_path, "/usr/lib/softhsm/libsofthsm2.so") == 0, "lib-path stored");
	CHECK(C.workers == CFG_WORKERS_AUTO, "workers default: automatic");
	CHECK(strcmp(C.addr, "127.0.0.1:5696") == 0, "addr default text");
	CHECK(C.listen_sa.ss_family == AF_INET && sa_port(&C) == 5696 &&
	      C.listen_salen == sizeof(struct sockaddr_in), "addr default parsed");
	CHECK(ntohl(((struct sockaddr_in *)&C.listen_sa)->sin_addr.s_addr) == 0x7f000001,
	      "addr default is loopback");
	CHECK(C.max_connections == 1024, "max-connections default");
	CHECK(C.max_message_size == 65536, "max-message-size default");
	CHECK(C.handshake_timeout == 10, "handshake-timeout default");
	CHECK(C.idle_timeout == 120, "idle-timeout default");
	CHECK(C.max_conn_per_source == 32, "max-connections-per-source default");
	CHECK(C.first_request_timeout == 10, "first-request-timeout default");
	CHECK(C.cert_path[0] == 0 && C.key_path[0] == 0 && C.client_ca_path[0] == 0,
	      "no identity by default");
	CHECK(C.log_level == LV_INFO, "log-level default info");
	CHECK(C.log_target == LOG_TO_STDERR && C.log_file[0] == 0, "log-target default stderr");
	CHECK(C.daemonize == 0, "daemonize default false");
	CHECK(C.pid_file[0] == 0 && C.user[0] == 0 && C.group[0] == 0 && C.chroot_dir[0] == 0,
	      "pid-file, identity, chroot unset");
	CHECK(strcmp(C.state_dir, "/var/lib/kmip2pkcs11") == 0, "state-dir default");
	CHECK(C.set[CFG_K_VERSION] && C.set[CFG_K_LIB_PATH] && !C.set[CFG_K_ADDR] &&
	      !C.set[CFG_K_WORKERS], "set[] marks the keys given");
	CHECK(C.line[CFG_K_VERSION] == 1 && C.line[CFG_K_LIB_PATH] == 3 && C.line[CFG_K_ADDR] == 0,
	      "line[] records where");
}

/* The original's documented example, as in its manual. */
static void test_original_example(void)
{
	const char *t =
		"version = \"v1\"\n"
		"\n"
		"[daemon]\n"
		"log-level = \"info\"\n"
		"log-target = { type = \"syslog\" }\n"
		"daemonize = true\n"
		"pid-file = \"/var/run/cascade-hsm-bridge.pid\"\n"
		"identity = \"cascade-hsm-bridge:cascade-hsm-bridge\"\n"
		"\n"
		"[pkcs11]\n"
		"lib-path = \"/path/to/your/pkcs11.so\"\n"
		"\n"
		"[server]\n"
		"addr = \"127.0.0.1:5696\"\n"
		"\n"
		"[server.identity]\n"
		"cert-path = \"/path/to/cert.pem\"\n"
		"key-path = \"/path/to/key.pem\"\n";
	CHECK(parse(t) == 0, "original example parses: %s", E);
	CHECK(C.log_target == LOG_TO_SYSLOG && C.daemonize == 1, "original example: daemon");
	CHECK(strcmp(C.pid_file, "/var/run/cascade-hsm-bridge.pid") == 0, "original: pid-file");
	CHECK(strcmp(C.user, "cascade-hsm-bridge") == 0 && strcmp(C.group, "cascade-hsm-bridge") == 0,
	      "original: identity");
	CHECK(strcmp(C.cert_path, "/path/to/cert.pem") == 0 &&
	      strcmp(C.key_path, "/path/to/key.pem") == 0, "original: server identity");

	/* the reference page's example, with its trailing comments */
	const char *r =
		"version = \"v1\"                              # required\n"
		"[pkcs11]\n"
		"lib-path = \"/usr/lib/softhsm/libsofthsm2.so\" # required\n"
		"[server]\n"
		"addr = \"127.0.0.1:5696\"                     # default\n"
		"[server.identity]                           # optional; absent = self-signed\n"
		"cert-path = \"/etc/kmip2pkcs11/cert.pem\"\n"
		"key-path  = \"/etc/kmip2pkcs11/key.pem\"\n"
		"[daemon]\n"
		"log-level = \"info\"                          # trace|debug|info|warning|error\n"
		"log-target = { type = \"stderr\" }            # or { type = \"syslog\" }\n"
		"daemonize = false\n"
		"pid-file = \"/var/run/kmip2pkcs11.pid\"       # used with daemonize\n"
		"identity = \"user:group\"                     # privilege drop, with daemonize\n";
	CHECK(parse(r) == 0, "reference example parses: %s", E);
	CHECK(strcmp(C.user, "user") == 0 && strcmp(C.group, "group") == 0, "user:group split");

	/* its upstream test: literal strings, indentation */
	CHECK(parse("\n            version = 'v1'\n\n            [pkcs11]\n"
	            "            lib-path = '/some/path'\n        ") == 0,
	      "upstream parse_v1 test input: %s", E);
	CHECK(strcmp(C.lib_path, "/some/path") == 0, "literal string");
}

static void test_every_key(void)
{
	const char *t =
		"# every key\r\n"
		"version = \"v1\"\r\n"
		"[pkcs11]\n"
		"lib-path = \"/opt/hsm/lib \\\"x\\\".so\"\n"
		"workers = 0\n"
		"init-args = \"connector=http://127.0.0.1:12345 debug\"\n"
		"[server]\n"
		"addr = \"[::1]:1569\"\n"
		"max-connections = 10\n"
		"max-connections-per-source = 3\n"
		"max-message-size = 1_024\n"
		"handshake-timeout = +5\n"
		"first-request-timeout = 7\n"
		"idle-timeout = 60\n"
		"[server.identity]\n"
		"cert-path = 'C:\\cert.pem'\n"
		"key-path = \"/k\\u00e9y\\U0001F511.pem\"\n"
		"client-ca-path = \"/ca.pem\"\n"
		"[daemon]\n"
		"log-level = \"trace\"\n"
		"log-target = { type = \"file\" , path = \"/var/log/k2p.log\" }\n"
		"daemonize = true\n"
		"pid-file = \"/run/k.pid\"\n"
		"identity = \"kmip\"\n"
		"chroot = \"/var/empty\"\n"
		"state-dir = \"/srv/k2p\"\n";
	CHECK(parse(t) == 0, "every key: %s", E);
	CHECK(strcmp(C.lib_path, "/opt/hsm/lib \"x\".so") == 0, "escaped quotes");
	CHECK(C.workers == 0, "workers 0 = inline");
	CHECK(strcmp(C.init_args, "connector=http://127.0.0.1:12345 debug") == 0, "init-args");
	CHECK(C.listen_sa.ss_family == AF_INET6 && sa_port(&C) == 1569 &&
	      C.listen_salen == sizeof(struct sockaddr_in6), "IPv6 addr");
	CHECK(C.max_connections == 10 && C.max_message_size == 1024 && C.handshake_timeout == 5 &&
	      C.idle_timeout == 60, "integers, with underscore and plus sign");
	CHECK(C.max_conn_per_source == 3 && C.first_request_timeout == 7,
	      "max-connections-per-source, first-request-timeout");
	CHECK(strcmp(C.cert_path, "C:\\cert.pem") == 0, "literal string keeps backslashes");
	CHECK(strcmp(C.key_path, "/k\xc3\xa9y\xf0\x9f\x94\x91.pem") == 0, "\\u and \\U to UTF-8");
	CHECK(strcmp(C.client_ca_path, "/ca.pem") == 0, "client-ca-path");
	CHECK(C.log_level == LV_TRACE, "log-level trace");
	CHECK(C.log_target == LOG_TO_FILE && strcmp(C.log_file, "/var/log/k2p.log") == 0,
	      "file log target");
	CHECK(C.daemonize == 1 && strcmp(C.pid_file, "/run/k.pid") == 0, "daemonize, pid-file");
	CHECK(strcmp(C.user, "kmip") == 0 && strcmp(C.group, "kmip") == 0,
	      "identity without group: group of the same name");
	CHECK(strcmp(C.chroot_dir, "/var/empty") == 0 && strcmp(C.state_dir, "/srv/k2p") == 0,
	      "chroot, state-dir");
	int all = 1;
	for (int k = 0; k < CFG_NKEYS; k++)
		all &= C.set[k];
	CHECK(all, "every key marked set");

	CHECK(parse(MIN "[server.identity]\nclient-ca-path = \"/ca.pem\"\n") == 0,
	      "client-ca-path alone is fine (self-signed server certificate): %s", E);
	CHECK(parse(MIN "[server]\naddr = \"0.0.0.0:5696\"\n") == 0, "any address");
	CHECK(parse(MIN "[server]\naddr = \"[::]:1\"\n") == 0, "IPv6 any, port 1");
	CHECK(parse("version = \"v1\"\n[server.identity]\n[server]\n[pkcs11]\nlib-path = \"x\"\n") == 0,
	      "sub-table before its parent: %s", E);
	CHECK(parse("version=\"v1\"\n[ pkcs11 ]\nlib-path='x'") == 0,
	      "no spaces, spaces in header, no final newline: %s", E);
	CHECK(parse(MIN "[daemon]\nlog-target = \"file:/tmp/x.log\"\n") == 0 &&
	      C.log_target == LOG_TO_FILE && strcmp(C.log_file, "/tmp/x.log") == 0,
	      "log-target in the command line's form");
	CHECK(parse(MIN "[daemon]\nlog-level = \"warning\"\n") == 0 && C.log_level == LV_WARNING,
	      "log-level warning");
	CHECK(parse(MIN "[daemon]\nlog-level = \"error\"\n") == 0 && C.log_level == LV_ERROR,
	      "log-level error");
	CHECK(parse(MIN "[daemon]\nidentity = \"0:0\"\n") == 0 && strcmp(C.user, "0") == 0,
	      "numeric identity accepted");
	CHECK(parse(MIN "[pkcs11]\n") != 0, "(pkcs11 twice is an error, see below)");
	CHECK(parse(MIN "[daemon]\nlog-target = {type=\"syslog\"}\n") == 0 &&
	      C.log_target == LOG_TO_SYSLOG, "compact inline table");
}

static void test_errors(void)
{
	bad("unknown key", MIN "lib_path = \"x\"\n", 4, "unknown key 'lib_path' in [pkcs11]");
	bad("unknown top-level key", "verzion = \"v1\"\n", 1, "unknown key 'verzion'");
	bad("key of another table", MIN "addr = \"127.0.0.1:1\"\n", 4,
	    "unknown key 'addr' in [pkcs11]");
	bad("unknown table", MIN "\n[servers]\n", 5, "unknown table [servers]");
	bad("unknown sub-table", MIN "[server.identity.x]\n", 4, "unknown table [server.identity.x]");
	bad("table twice", MIN "[server]\n[pkcs11]\n", 5, "table [pkcs11] defined twice");
	bad("duplicate key", "version = \"v1\"\n[server]\naddr = \"127.0.0.1:1\"\n"
	    "addr = \"127.0.0.1:2\"\n", 4, "duplicate key 'addr'");
	bad("wrong type bool", MIN "[daemon]\n\n\n\ndaemonize = \"yes\"\n", 8,
	    "'daemonize' must be a boolean");
	bad("wrong type string", MIN "[server]\naddr = 5696\n", 5, "'addr' must be a string");
	bad("wrong type int", MIN "workers = \"4\"\n", 4, "'workers' must be an integer");
	bad("missing version", "[pkcs11]\nlib-path = \"x\"\n", 0, "missing required key 'version'");
	bad("wrong version", "version = \"v2\"\n", 1, "unsupported configuration version");
	bad("version not a string", "version = 1\n", 1, "'version' must be a string");
	bad("missing lib-path", "version = \"v1\"\n[pkcs11]\n", 2,
	    "missing required key 'lib-path' in [pkcs11]");
	bad("missing lib-path and table", "version = \"v1\"\n", 0,
	    "missing required key 'lib-path' in [pkcs11]");
	bad("empty lib-path", "version = \"v1\"\n[pkcs11]\nlib-path = \"\"\n", 3,
	    "'lib-path' must not be empty");
	bad("cert-path only", MIN "[server.identity]\ncert-path = \"/c\"\n", 5,
	    "'cert-path' needs 'key-path'");
	bad("key-path only", MIN "[server.identity]\n\nkey-path = \"/k\"\n", 6,
	    "'key-path' needs 'cert-path'");
	bad("addr without port", MIN "[server]\naddr = \"127.0.0.1\"\n", 5, "'addr' must be an IP");
	bad("addr port 70000", MIN "[server]\naddr = \"127.0.0.1:70000\"\n", 5, "'addr' must be");
	bad("addr port 0", MIN "[server]\naddr = \"127.0.0.1:0\"\n", 5, "'addr' must be");
	bad("addr garbage", MIN "[server]\naddr = \"nonsense\"\n", 5, "'addr' must be");
	bad("addr host name", MIN "[server]\naddr = \"localhost:5696\"\n", 5, "'addr' must be");
	bad("addr bare IPv6", MIN "[server]\naddr = \"::1:5696\"\n", 5, "'addr' must be");
	bad("addr port sign", MIN "[server]\naddr = \"1.2.3.4:+80\"\n", 5, "'addr' must be");
	bad("addr empty brackets", MIN "[server]\naddr = \"[]:80\"\n", 5, "'addr' must be");
	bad("addr IPv4 in brackets", MIN "[server]\naddr = \"[1.2.3.4]:80\"\n", 5, "'addr' must be");
	bad("bad log-level", MIN "[daemon]\nlog-level = \"verbose\"\n", 5,
	    "'log-level' must be one of");
	bad("bad log-target type", MIN "[daemon]\nlog-target = { type = \"stdout\" }\n", 5,
	    "log-target type must be");
	bad("file target without path", MIN "[daemon]\nlog-target = { type = \"file\" }\n", 5,
	    "needs a 'path'");
	bad("path with stderr", MIN "[daemon]\nlog-target = { type = \"stderr\", path = \"/x\" }\n",
	    5, "goes only with type \"file\"");
	bad("log-target without type", MIN "[daemon]\nlog-target = { path = \"/x\" }\n", 5,
	    "needs a 'type'");
	bad("log-target unknown key", MIN "[daemon]\nlog-target = { type = \"file\", file = \"/x\" }\n",
	    5, "unknown key 'file' in log-target");
	bad("log-target duplicate key",
	    MIN "[daemon]\nlog-target = { type = \"file\", type = \"file\" }\n", 5,
	    "duplicate key 'type' in inline table");
	bad("log-target number", MIN "[daemon]\nlog-target = 1\n", 5, "must be an inline table");
	bad("inline table trailing comma", MIN "[daemon]\nlog-target = { type = \"stderr\", }\n", 5,
	    "trailing comma");
	bad("inline table over lines", MIN "[daemon]\nlog-target = { type = \"stderr\"\n}\n", 5,
	    "one line");
	bad("inline table nested", MIN "[daemon]\nlog-target = { type = { a = 1 } }\n", 5,
	    "nested inline tables are not supported");
	bad("inline table where not wanted", MIN "workers = { a = 1 }\n", 4,
	    "'workers' must be an integer");
	bad("unterminated string", MIN "[daemon]\npid-file = \"/run/x\n", 5, "unterminated string");
	bad("unterminated literal", MIN "[daemon]\npid-file = '/run/x", 5, "unterminated string");
	bad("string at end of file", "version = \"v1\\", 1, "unterminated string");
	bad("bad escape", MIN "[daemon]\npid-file = \"C:\\run\\x\"\n", 5, "invalid escape '\\x'");
	bad("bad escape q", MIN "[daemon]\npid-file = \"\\q\"\n", 5, "invalid escape '\\q'");
	bad("short \\u", MIN "[daemon]\npid-file = \"\\u12\"\n", 5, "needs 4 hex digits");
	bad("surrogate \\u", MIN "[daemon]\npid-file = \"\\uD800\"\n", 5, "not an allowed");
	bad("NUL escape", MIN "[daemon]\npid-file = \"\\u0000\"\n", 5, "not an allowed");
	bad("too big \\U", MIN "[daemon]\npid-file = \"\\U00110000\"\n", 5, "not an allowed");
	bad("control character", MIN "[daemon]\npid-file = \"a\x01\"\n", 5, "control character");
	bad("integer overflow", MIN "workers = 9223372036854775808\n", 4, "integer out of range");
	bad("integer overflow negative", MIN "workers = -9223372036854775809\n", 4,
	    "integer out of range");
	bad("integer min fits, then range", MIN "workers = -9223372036854775808\n", 4,
	    "'workers' must be between 0 and");
	bad("workers negative", MIN "workers = -1\n", 4, "'workers' must be between 0 and 256");
	bad("workers too many", MIN "workers = 257\n", 4, "'workers' must be between");
	bad("max-message-size too small", MIN "[server]\nmax-message-size = 1023\n", 5,
	    "'max-message-size' must be between 1024 and");
	bad("max-connections zero", MIN "[server]\nmax-connections = 0\n", 5,
	    "'max-connections' must be between 1");
	bad("idle-timeout zero", MIN "[server]\nidle-timeout = 0\n", 5, "must be between 1");
	bad("leading zero", MIN "workers = 01\n", 4, "leading zeros");
	bad("double underscore", MIN "workers = 1__0\n", 4, "misplaced '_'");
	bad("trailing underscore", MIN "workers = 10_\n", 4, "misplaced '_'");
	bad("hex", MIN "workers = 0x10\n", 4, "hexadecimal");
	bad("float", MIN "workers = 1.5\n", 4, "floats are not supported");
	bad("float exponent", MIN "workers = 1e3\n", 4, "floats are not supported");
	bad("float negative exponent", MIN "workers = 1e-5\n", 4, "floats are not supported");
	bad("float inf", MIN "workers = inf\n", 4, "floats are not supported");
	bad("date", MIN "workers = 1979-05-27\n", 4, "dates and times are not supported");
	bad("time", MIN "workers = 07:32:00\n", 4, "dates and times are not supported");
	bad("not a number", MIN "workers = 12ab\n", 4, "invalid integer");
	bad("array", MIN "workers = [1, 2]\n", 4, "arrays are not supported");
	bad("array of tables", MIN "[[server]]\n", 4, "arrays of tables are not supported");
	bad("multi-line string", MIN "[daemon]\npid-file = \"\"\"x\"\"\"\n", 5,
	    "multi-line strings are not supported");
	bad("multi-line literal", MIN "[daemon]\npid-file = '''x'''\n", 5,
	    "multi-line strings are not supported");
	bad("quoted key", "\"version\" = \"v1\"\n", 1, "quoted keys are not supported");
	bad("dotted key", "pkcs11.lib-path = \"x\"\n", 1, "dotted keys are not supported");
	bad("unquoted string", MIN "[daemon]\nlog-level = info\n", 5, "strings must be quoted");
	bad("capital True", MIN "[daemon]\ndaemonize = True\n", 5, "strings must be quoted");
	bad("trailing garbage", MIN "[daemon]\ndaemonize = true false\n", 5,
	    "unexpected characters at the end of the line");
	bad("garbage after header", MIN "[daemon] x\n", 4, "unexpected characters");
	bad("no equals", MIN "workers 4\n", 4, "expected '=' after key 'workers'");
	bad("no value", MIN "workers =\n", 4, "expected a value");
	bad("no value, comment", MIN "workers = # none\n", 4, "expected a value");
	bad("line noise", MIN "=\n", 4, "expected a key");
	bad("unclosed header", MIN "[daemon\n", 4, "expected ']'");
	bad("empty header", MIN "[]\n", 4, "expected a key");
	bad("lone CR", MIN "workers = 1\r[daemon]\n", 4, "unexpected characters");
	bad("bad identity", MIN "[daemon]\nidentity = \"a:b:c\"\n", 5, "'identity' must be");
	bad("identity empty group", MIN "[daemon]\nidentity = \"a:\"\n", 5, "'identity' must be");
	bad("identity with space", MIN "[daemon]\nidentity = \"a b\"\n", 5, "'identity' must be");
	/* A numeric ID that does not fit uid_t / gid_t once wrapped to 0 (root): refused. */
	bad("uid 2^32", MIN "[daemon]\nidentity = \"4294967296\"\n", 5,
	    "'identity': user ID 4294967296 is out of range (0 to 4294967294)");
	bad("uid -0", MIN "[daemon]\nidentity = \"-0\"\n", 5,
	    "'identity': user \"-0\" is neither a name nor a number");
	bad("gid 2^32", MIN "[daemon]\nidentity = \"kmip:4294967296\"\n", 5,
	    "'identity': group ID 4294967296 is out of range");
	bad("uid -1", MIN "[daemon]\nidentity = \"4294967295\"\n", 5,
	    "'identity': user ID 4294967295 is out of range");
	bad("gid +1", MIN "[daemon]\nidentity = \"kmip:+1\"\n", 5,
	    "'identity': group \"+1\" is neither a name nor a number");
	bad("huge uid", MIN "[daemon]\nidentity = \"18446744073709551616\"\n", 5,
	    "out of range");
	CHECK(parse(MIN "[daemon]\nidentity = \"4294967294:65534\"\n") == 0,
	      "largest uid accepted: %s", E);

	/* a NUL byte, and a file that is too large */
	static const char nul[] = "version = \"v1\"\n[pkcs11]\0\n";
	int r = cfg_parse_text(&C, "k.toml", nul, sizeof nul - 1, E, sizeof E);
	CHECK(r == -1 && strcmp(E, "k.toml:2: NUL byte in file") == 0, "NUL byte: %s", E);
	static char big[CFG_FILE_MAX + 2];
	memset(big, '\n', sizeof big - 1);
	r = cfg_parse_text(&C, "k.toml", big, sizeof big - 1, E, sizeof E);
	CHECK(r == -1 && strstr(E, "file too large") != NULL, "file too large: %s", E);

	/* a string longer than a path */
	static char longs[CFG_PATH_MAX + 128];
	int n = snprintf(longs, sizeof longs, "version = \"v1\"\n[pkcs11]\nlib-path = \"");
	memset(longs + n, 'a', CFG_PATH_MAX);
	memcpy(longs + n + CFG_PATH_MAX, "\"\n", 3);
	bad("string too long", longs, 3, "string too long");
	longs[n + CFG_PATH_MAX - 1] = '"';
	longs[n + CFG_PATH_MAX] = '\n';
	longs[n + CFG_PATH_MAX + 1] = '\0';
	CHECK(parse(longs) == 0 && strlen(C.lib_path) == CFG_PATH_MAX - 1, "longest path: %s", E);

	/* a tiny error buffer is not overrun */
	char tiny[8];
	r = cfg_parse_text(&C, "k.toml", "x", 1, tiny, sizeof tiny);
	CHECK(r == -1 && strlen(tiny) == 7, "error truncated to its buffer");
}

static void test_load(void)
{
	char path[] = "/tmp/test_cfg_XXXXXX";
	int fd = mkstemp(path);
	const char *t = MIN "[server]\nworkers = 1\n";
	CHECK(fd >= 0 && write(fd, t, strlen(t)) == (ssize_t)strlen(t), "(temp file)");
	close(fd);
	CHECK(cfg_load(&C, path, E, sizeof E) == -1 && strncmp(E, path, strlen(path)) == 0 &&
	      strstr(E, ":5: unknown key 'workers' in [server]") != NULL,
	      "cfg_load: file:line: message: %s", E);
	unlink(path);
	CHECK(cfg_load(&C, path, E, sizeof E) == -1 && strstr(E, path) == E &&
	      strstr(E, ": No such file or directory") != NULL, "missing file: %s", E);
	CHECK(cfg_load(&C, "/", E, sizeof E) == -1 && strcmp(E, "/: Is a directory") == 0,
	      "directory: %s", E);
}

/* config.example parses, documents every key with the table's doc line, shows the defaults;
 * the man page names every key. */
static void test_docs(void)
{
	static char ex[CFG_FILE_MAX + 1], man[256 * 1024];
	FILE *f = fopen("config.example", "r");
	size_t n = f ? fread(ex, 1, sizeof ex - 1, f) : 0;
	if (f)
		fclose(f);
	ex[n] = '\0';
	CHECK(n > 0, "config.example readable (run from the repository root)");
	CHECK(cfg_load(&C, "config.example", E, sizeof E) == 0, "config.example loads: %s", E);
	f = fopen("dist/kmip2pkcs11.8", "r");
	size_t m = f ? fread(man, 1, sizeof man - 1, f) : 0;
	if (f)
		fclose(f);
	man[m] = '\0';
	CHECK(m > 0, "dist/kmip2pkcs11.8 readable");

	for (int k = 0; k < CFG_NKEYS; k++) {
		const struct cfg_key *key = &cfg_keys[k];
		char want[512];
		snprintf(want, sizeof want, "\n# %s\n", key->doc);
		CHECK(strstr(ex, want) != NULL, "config.example: doc line for '%s': %s", key->key,
		      key->doc);
		if (key->def) {
			snprintf(want, sizeof want, "\n#%s = %s\n", key->key, key->def);
			char want2[512];
			snprintf(want2, sizeof want2, "\n%s = %s\n", key->key, key->def);
			CHECK(strstr(ex, want) || strstr(ex, want2),
			      "config.example shows the default of '%s' as '%s'", key->key, key->def);
		} else {
			snprintf(want, sizeof want, "\n#%s = ", key->key);
			char want2[512];
			snprintf(want2, sizeof want2, "\n%s = ", key->key);
			CHECK(strstr(ex, want) || strstr(ex, want2), "config.example shows '%s'",
			      key->key);
		}
		/* the man page: ".TP\n.B key" or "\fBkey\fR"; hyphens are escaped in roff */
		char roff[128], *o = roff;
		for (const char *q = key->key; *q && o < roff + sizeof roff - 3; q++) {
			if (*q == '-')
				*o++ = '\\';
			*o++ = *q;
		}
		*o = '\0';
		snprintf(want, sizeof want, ".B %s\n", roff);
		CHECK(strstr(man, want) != NULL, "man page documents '%s' (as '.B %s')", key->key, roff);
	}
	/* every long option: in the man page (roff: "\-\-name") and in config.example */
	for (const struct option *o = cfg_longopts; o->name; o++) {
		char roff[96] = "\\-\\-", *q = roff + strlen(roff), plain[80];
		for (const char *c = o->name; *c && q < roff + sizeof roff - 3; c++) {
			if (*c == '-')
				*q++ = '\\';
			*q++ = *c;
		}
		*q = '\0';
		CHECK(strstr(man, roff) != NULL, "man page names --%s (as %s)", o->name, roff);
		snprintf(plain, sizeof plain, "--%s", o->name);
		CHECK(strstr(ex, plain) != NULL || strcmp(o->name, "help") == 0 ||
		      strcmp(o->name, "version") == 0 || strcmp(o->name, "config") == 0,
		      "config.example names %s", plain);
	}
	/* every table too */
	for (int t = 1; t < CT_COUNT; t++) {
		char want[64];
		snprintf(want, sizeof want, "[%s]", cfg_table_names[t]);
		CHECK(strstr(ex, want) != NULL, "config.example shows %s", want);
	}
}

static int cli(struct cfg_cli *o, ...)
{
	char *argv[16];
	int argc = 0;
	va_list ap;
	va_start(ap, o);
	argv[argc++] = (char *)"kmip2pkcs11";
	for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	return cfg_cli_parse(argc, argv, o);
}

static void test_cli(void)
{
	struct cfg_cli o;

	CHECK(cli(&o, NULL) == CFG_CLI_RUN && strcmp(o.config, "/etc/kmip2pkcs11/config.toml") == 0 &&
	      o.log_level == -1 && o.log_target == -1 && o.daemonize == 0, "no arguments");
	CHECK(cli(&o, "-c", "/x.toml", NULL) == CFG_CLI_RUN && strcmp(o.config, "/x.toml") == 0, "-c");
	CHECK(cli(&o, "--config", "/y.toml", NULL) == CFG_CLI_RUN && strcmp(o.config, "/y.toml") == 0,
	      "--config PATH");
	CHECK(cli(&o, "--config=/z.toml", NULL) == CFG_CLI_RUN && strcmp(o.config, "/z.toml") == 0,
	      "--config=PATH (the original's systemd unit)");
	CHECK(cli(&o, "-c/w.toml", NULL) == CFG_CLI_RUN && strcmp(o.config, "/w.toml") == 0, "-cPATH");
	CHECK(cli(&o, "--check-config", NULL) == CFG_CLI_CHECK, "--check-config");
	CHECK(cli(&o, "--log-level", "debug", NULL) == CFG_CLI_RUN && o.log_level == LV_DEBUG,
	      "--log-level");
	CHECK(cli(&o, "--log-level=warning", NULL) == CFG_CLI_RUN && o.log_level == LV_WARNING,
	      "--log-level=LEVEL");
	CHECK(cli(&o, "-l", "syslog", NULL) == CFG_CLI_RUN && o.log_target == LOG_TO_SYSLOG, "-l");
	CHECK(cli(&o, "--log", "stderr", NULL) == CFG_CLI_RUN && o.log_target == LOG_TO_STDERR,
	      "--log stderr");
	CHECK(cli(&o, "--log=file:/var/log/k.log", NULL) == CFG_CLI_RUN &&
	      o.log_target == LOG_TO_FILE && strcmp(o.log_file, "/var/log/k.log") == 0, "--log=file:");
	CHECK(cli(&o, "-d", NULL) == CFG_CLI_RUN && o.daemonize == 1, "-d");
	CHECK(cli(&o, "--daemonize", NULL) == CFG_CLI_RUN && o.daemonize == 1, "--daemonize");
	CHECK(cli(&o, "-h", NULL) == CFG_CLI_HELP, "-h");
	CHECK(cli(&o, "--help", NULL) == CFG_CLI_HELP, "--help");
	CHECK(cli(&o, "-V", NULL) == CFG_CLI_VERSION, "-V");
	CHECK(cli(&o, "--version", NULL) == CFG_CLI_VERSION, "--version");
	CHECK(cli(&o, "-d", "-c", "/a", "--log-level", "error", "-l", "file:/l", "--check-config",
	          NULL) == CFG_CLI_CHECK && o.daemonize && strcmp(o.config, "/a") == 0 &&
	      o.log_level == LV_ERROR && o.log_target == LOG_TO_FILE && strcmp(o.log_file, "/l") == 0,
	      "all combined");
	CHECK(cli(&o, "-dc", "/b", NULL) == CFG_CLI_RUN && o.daemonize && strcmp(o.config, "/b") == 0,
	      "bundled short options");
	CHECK(cli(&o, "--check-config", "-h", NULL) == CFG_CLI_HELP, "help wins");

	CHECK(cli(&o, "-x", NULL) == CFG_CLI_USAGE && strstr(o.err, "unknown option -x"), "-x: %s",
	      o.err);
	CHECK(cli(&o, "--bogus", NULL) == CFG_CLI_USAGE && strstr(o.err, "unknown option --bogus"),
	      "--bogus: %s", o.err);
	CHECK(cli(&o, "-c", NULL) == CFG_CLI_USAGE && strstr(o.err, "-c needs an argument"),
	      "-c without PATH: %s", o.err);
	CHECK(cli(&o, "--config", NULL) == CFG_CLI_USAGE && strstr(o.err, "--config needs"),
	      "--config without PATH: %s", o.err);
	CHECK(cli(&o, "--log-level", NULL) == CFG_CLI_USAGE && strstr(o.err, "needs an argument"),
	      "--log-level without LEVEL: %s", o.err);
	CHECK(cli(&o, "--log-level", "loud", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "invalid log level"), "bad level: %s", o.err);
	CHECK(cli(&o, "-l", "stdout", NULL) == CFG_CLI_USAGE && strstr(o.err, "invalid log target"),
	      "bad target: %s", o.err);
	CHECK(cli(&o, "-l", "file:", NULL) == CFG_CLI_USAGE, "file: without a path");
	CHECK(cli(&o, "-c", "/a", "-c", "/b", NULL) == CFG_CLI_USAGE && strstr(o.err, "twice"),
	      "-c twice");
	CHECK(cli(&o, "--daemonize=yes", NULL) == CFG_CLI_USAGE &&
	      strcmp(o.err, "option --daemonize takes no argument") == 0, "flag with a value: %s", o.err);
	CHECK(cli(&o, "--bogus=1", NULL) == CFG_CLI_USAGE &&
	      strcmp(o.err, "unknown option --bogus=1") == 0, "unknown with a value: %s", o.err);
	CHECK(cli(&o, "-dx", NULL) == CFG_CLI_USAGE && strcmp(o.err, "unknown option -x") == 0,
	      "unknown in a bundle: %s", o.err);
	CHECK(cli(&o, "extra", NULL) == CFG_CLI_USAGE && strstr(o.err, "unexpected argument 'extra'"),
	      "positional argument: %s", o.err);
	CHECK(cli(&o, "-d", NULL) == CFG_CLI_RUN, "parser usable again after an error");

	/* precedence: command line over file over defaults */
	CHECK(parse(MIN "[daemon]\nlog-level = \"error\"\nlog-target = { type = \"syslog\" }\n") == 0,
	      "(file)");
	CHECK(cli(&o, "--log-level", "debug", "-l", "file:/tmp/o.log", "-d", NULL) == CFG_CLI_RUN,
	      "(cli)");
	CHECK(cfg_cli_apply(&C, &o, E, sizeof E) == 0, "apply");
	CHECK(C.log_level == LV_DEBUG && C.log_target == LOG_TO_FILE &&
	      strcmp(C.log_file, "/tmp/o.log") == 0 && C.daemonize == 1,
	      "command line overrides the file");
	CHECK(parse(MIN "[daemon]\nlog-level = \"error\"\ndaemonize = true\n") == 0, "(file)");
	CHECK(cli(&o, NULL) == CFG_CLI_RUN && cfg_cli_apply(&C, &o, E, sizeof E) == 0 &&
	      C.log_level == LV_ERROR && C.daemonize == 1 && C.log_target == LOG_TO_STDERR,
	      "no options: the file stands");

	/* cfg_main's exit statuses (prints to stdout/stderr) */
	char *a1[] = { (char *)"k", (char *)"--check-config", (char *)"-c",
	               (char *)"config.example", NULL };
	CHECK(cfg_main(4, a1, &C) == CFG_MAIN_CHECK, "--check-config on config.example: valid, "
	      "main checks what start-up would load");
	char *a2[] = { (char *)"k", (char *)"--check-config", (char *)"-c", (char *)"/nonexistent",
	               NULL };
	CHECK(cfg_main(4, a2, &C) == 1, "--check-config on a missing file: exit 1");
	char *a3[] = { (char *)"k", (char *)"-x", NULL };
	CHECK(cfg_main(2, a3, &C) == 2, "usage error: exit 2");
	char *a4[] = { (char *)"k", (char *)"-V", NULL };
	CHECK(cfg_main(2, a4, &C) == 0, "version: exit 0");
	char *a5[] = { (char *)"k", (char *)"-c", (char *)"config.example", (char *)"-d", NULL };
	CHECK(cfg_main(4, a5, &C) == CFG_MAIN_RUN && C.daemonize == 1,
	      "run: CFG_MAIN_RUN, configuration loaded");
}

/* The spellings of the original's published manual page (its daemon base library). */
static void test_cli_manual(void)
{
	struct cfg_cli o;

	CHECK(cli(&o, "--detach", NULL) == CFG_CLI_RUN && o.daemonize == 1, "--detach = -d");
	CHECK(cli(&o, "-v", NULL) == CFG_CLI_RUN && o.verbose == 1, "-v");
	CHECK(cli(&o, "-vv", NULL) == CFG_CLI_RUN && o.verbose == 2, "-vv");
	CHECK(cli(&o, "--verbose", "-q", "-q", "--quiet", NULL) == CFG_CLI_RUN && o.verbose == -2,
	      "--verbose, -q, --quiet add up");
	CHECK(cli(&o, "--stderr", NULL) == CFG_CLI_RUN && o.log_target == LOG_TO_STDERR,
	      "--stderr");
	CHECK(cli(&o, "--syslog", NULL) == CFG_CLI_RUN && o.log_target == LOG_TO_SYSLOG,
	      "--syslog");
	CHECK(cli(&o, "--logfile", "/var/log/k.log", NULL) == CFG_CLI_RUN &&
	      o.log_target == LOG_TO_FILE && strcmp(o.log_file, "/var/log/k.log") == 0,
	      "--logfile PATH");
	CHECK(cli(&o, "--syslog", "--syslog-facility", "local3", NULL) == CFG_CLI_RUN &&
	      o.syslog_facility == LOG_LOCAL3, "--syslog-facility local3");
	CHECK(cli(&o, "--syslog-facility=user", NULL) == CFG_CLI_RUN &&
	      o.syslog_facility == LOG_USER, "--syslog-facility=user");
	CHECK(cli(&o, "--pid-file", "/run/k.pid", "--working-dir", "/var/lib/k", "--chroot",
	          "/srv/k", "--user", "kmip", "--group", "softhsm", NULL) == CFG_CLI_RUN &&
	      strcmp(o.pid_file, "/run/k.pid") == 0 && strcmp(o.working_dir, "/var/lib/k") == 0 &&
	      strcmp(o.chroot_dir, "/srv/k") == 0 && strcmp(o.user, "kmip") == 0 &&
	      strcmp(o.group, "softhsm") == 0, "process options");

	CHECK(cli(&o, "--syslog", "--stderr", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "more than one log target"), "two targets: %s", o.err);
	CHECK(cli(&o, "-l", "stderr", "--logfile", "/x", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "more than one log target"), "-l and --logfile: %s", o.err);
	CHECK(cli(&o, "--syslog-facility", "mars", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "unknown syslog facility 'mars'"), "bad facility: %s", o.err);
	CHECK(cli(&o, "--user", "4294967296", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "--user: '4294967296' is not a user name or a number"),
	      "--user out of range: %s", o.err);
	CHECK(cli(&o, "--group", "-0", NULL) == CFG_CLI_USAGE && strstr(o.err, "--group: '-0'"),
	      "--group -0: %s", o.err);
	CHECK(cli(&o, "--user", "a:b", NULL) == CFG_CLI_USAGE, "--user with a colon");
	CHECK(cli(&o, "--chroot", "", NULL) == CFG_CLI_USAGE && strstr(o.err, "must not be empty"),
	      "--chroot empty: %s", o.err);
	CHECK(cli(&o, "--pid-file", "/a", "--pid-file", "/b", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "--pid-file given twice"), "--pid-file twice: %s", o.err);
	CHECK(cli(&o, "--detach=1", NULL) == CFG_CLI_USAGE &&
	      strcmp(o.err, "option --detach takes no argument") == 0, "--detach=1: %s", o.err);
	CHECK(cli(&o, "--list-slots=1", NULL) == CFG_CLI_USAGE &&
	      strcmp(o.err, "option --list-slots takes no argument") == 0, "--list-slots=1: %s",
	      o.err);
	/* every flag that takes no argument says so when given one */
	for (const struct option *lo = cfg_longopts; lo->name; lo++) {
		char arg[64];
		if (lo->has_arg != no_argument)
			continue;
		snprintf(arg, sizeof arg, "--%s=x", lo->name);
		CHECK(cli(&o, arg, NULL) == CFG_CLI_USAGE && strstr(o.err, "takes no argument"),
		      "%s: %s", arg, o.err);
	}

	/* applied: -v/-q move from the file's level, stop at trace and error */
	CHECK(parse(MIN "[daemon]\nlog-level = \"warning\"\nidentity = \"a:b\"\n") == 0, "(file)");
	CHECK(cli(&o, "-v", NULL) == CFG_CLI_RUN && cfg_cli_apply(&C, &o, E, sizeof E) == 0 &&
	      C.log_level == LV_INFO, "-v: warning -> info");
	CHECK(parse(MIN) == 0 && cli(&o, "-vvvv", NULL) == CFG_CLI_RUN &&
	      cfg_cli_apply(&C, &o, E, sizeof E) == 0 && C.log_level == LV_TRACE,
	      "-vvvv stops at trace");
	CHECK(parse(MIN) == 0 && cli(&o, "-qq", NULL) == CFG_CLI_RUN &&
	      cfg_cli_apply(&C, &o, E, sizeof E) == 0 && C.log_level == LV_ERROR,
	      "-qq from info: errors only");
	CHECK(parse(MIN) == 0 && cli(&o, "--log-level", "debug", "-q", NULL) == CFG_CLI_RUN &&
	      cfg_cli_apply(&C, &o, E, sizeof E) == 0 && C.log_level == LV_INFO,
	      "-q after --log-level debug: info");
	CHECK(parse(MIN) == 0 && C.syslog_facility == LOG_DAEMON, "facility default daemon");
	CHECK(cli(&o, "--logfile", "/l", "--syslog-facility", "local7", "--pid-file", "/p",
	          "--chroot", "/c", "--working-dir", "/w", "--user", "u", NULL) == CFG_CLI_RUN &&
	      cfg_cli_apply(&C, &o, E, sizeof E) == 0, "(apply)");
	CHECK(C.log_target == LOG_TO_FILE && strcmp(C.log_file, "/l") == 0 &&
	      C.syslog_facility == LOG_LOCAL7 && strcmp(C.pid_file, "/p") == 0 &&
	      strcmp(C.chroot_dir, "/c") == 0 && strcmp(C.working_dir, "/w") == 0 &&
	      strcmp(C.user, "u") == 0 && strcmp(C.group, "u") == 0,
	      "applied: --user alone takes the user's group, as identity = \"u\"");
	CHECK(parse(MIN "[daemon]\nidentity = \"a:b\"\n") == 0 &&
	      cli(&o, "--group", "g", NULL) == CFG_CLI_RUN &&
	      cfg_cli_apply(&C, &o, E, sizeof E) == 0 && strcmp(C.user, "a") == 0 &&
	      strcmp(C.group, "g") == 0, "--group replaces the group of identity");
	CHECK(parse(MIN) == 0 && cli(&o, "--group", "g", NULL) == CFG_CLI_RUN &&
	      cfg_cli_apply(&C, &o, E, sizeof E) == -1 && strstr(E, "--group needs a user"),
	      "--group without a user: %s", E);
}

/* Job buffers: workers x 4 jobs x (request + response) of max-message-size.  On a 32-bit
 * target 1024 jobs x 2 x 16 MiB = 32 GiB wraps; the arithmetic is checked, and start-up and
 * --check-config refuse such a configuration with the key's line. */
static void test_job_bytes(void)
{
	size_t t = 0;
	CHECK(main_job_bytes(8, 65536, UINT32_MAX, &t) == 0 && t == 8u * 2 * 65536,
	      "defaults fit in 32 bits: %zu", t);
	CHECK(main_job_bytes(1024, 16777216, UINT32_MAX, &t) == -1,
	      "32-bit: 1024 jobs x 2 x 16 MiB does not fit");
	CHECK(main_job_bytes(127, 16777216, UINT32_MAX, &t) == 0 && t == 127u * 2 * 16777216,
	      "32-bit: 127 jobs x 2 x 16 MiB fits");
	CHECK(main_job_bytes(128, 16777216, UINT32_MAX, &t) == -1,
	      "32-bit: 128 jobs x 2 x 16 MiB = 4 GiB does not fit");
	CHECK(main_job_bytes(2, (size_t)-1 / 2 + 1, (size_t)-1, &t) == -1,
	      "2 x msg overflowing size_t is caught");
	CHECK(main_job_bytes(0, 65536, (size_t)-1, &t) == -1, "no jobs is an error");
	/* wrk_store_init checks too, before it allocates: no wrapped small arena */
	struct wrk_store w;
	errno = 0;
	CHECK(wrk_store_init(&w, 4, (size_t)-1 / 4, (size_t)-1 / 4) == -1 && errno == EOVERFLOW,
	      "wrk_store_init refuses buffers whose total wraps");
	/* the number of jobs for a configuration */
	CHECK(parse(MIN "workers = 256\n") == 0 && main_jobs(&C, main_workers(&C, 0)) == 1024,
	      "256 workers: 1024 jobs");
	CHECK(parse(MIN "workers = 0\n[server]\nmax-connections = 3\n") == 0 &&
	      main_jobs(&C, main_workers(&C, 0)) == 3, "jobs capped by max-connections");
}

/* --import FILE --username LABEL [--name NAME]: the key import of issue 12. */
static void test_cli_import(void)
{
	struct cfg_cli o;

	CHECK(cli(&o, "--import", "k.pem", "--username", "tok", NULL) == CFG_CLI_IMPORT &&
	      strcmp(o.import[0], "k.pem") == 0 && strcmp(o.import[1], "tok") == 0 && !o.import[2],
	      "--import FILE --username LABEL");
	CHECK(cli(&o, "-c", "/x.toml", "--import=k.pem", "--username=tok", "--name", "ksk", NULL) ==
	      CFG_CLI_IMPORT && strcmp(o.import[2], "ksk") == 0 && strcmp(o.config, "/x.toml") == 0,
	      "--import with --name and -c");
	CHECK(cli(&o, "--import", "k.pem", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "--import needs --username"), "--import without --username: %s", o.err);
	CHECK(cli(&o, "--username", "tok", NULL) == CFG_CLI_USAGE && strstr(o.err, "go with --import"),
	      "--username without --import: %s", o.err);
	CHECK(cli(&o, "--import", "a", "--import", "b", "--username", "t", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "--import given twice"), "--import twice: %s", o.err);
	CHECK(cli(&o, "--import", "a", "--username", "t", "--check-config", NULL) == CFG_CLI_USAGE,
	      "--import with --check-config: usage error");
	CHECK(cli(&o, "--import", "a", "--username", NULL) == CFG_CLI_USAGE &&
	      strstr(o.err, "needs an argument"), "--username without its argument: %s", o.err);
	CHECK(strstr(cfg_usage_text, "--import FILE.pem --username LABEL") != NULL,
	      "the usage names --import");
}

int main(void)
{
	test_defaults();
	test_original_example();
	test_every_key();
	test_errors();
	test_load();
	test_docs();
	test_cli();
	test_cli_import();
	test_cli_manual();
	test_job_bytes();
	return check_summary();
}
