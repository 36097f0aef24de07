#!/bin/sh
# End-to-end tests of a built daemon against a fresh SoftHSM2 token.
#
#   sh tests/integration.sh ./kmip2pkcs11        (from the repository root)
#
# Makes a temporary directory with a token, a configuration and a state directory,
# starts the daemon on a free port of 127.0.0.1, checks its TLS face with openssl(1),
# runs build/e2e in every mode and the PyKMIP life cycle against it, restarts it between
# the phases that need a restart, and ends with one line "N passed, N failed" (then
# ", N skipped" when a program could not make some checks) that sums the checks made here
# and the lines that every test program prints.  A skip is never counted as passed.  Every step is
# bounded by timeout(1); nothing listens or connects beyond 127.0.0.1.
#
# Environment: E2E (default build/e2e), KEEP_TMP=1 keeps the temporary directory.
# TOKEN=softhsm (default) or TOKEN=tpm: the same tests on tpm2-pkcs11 over a software TPM
# (tests/tpm-token.sh); the phases that test the daemon rather than the token (parallel
# load, RSA-4096 meanwhile, connection limits, log rotation) run on SoftHSM2 only.
set -u

DAEMON=${1:-./kmip2pkcs11}
E2E=${E2E:-build/e2e}
PY=/usr/bin/python3
LABEL=k2p
PIN=1234
SOPIN=5678

passed=0 failed=0 skipped=0
daemon_pid=

T=$(mktemp -d "${TMPDIR:-/tmp}/k2p-it.XXXXXX") || exit 1
TOKEN=${TOKEN:-softhsm}
cleanup() {
	stop_daemon
	[ "$TOKEN" = tpm ] && sh "$TPM_SH" stop "$T/tpm"
	if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM HUP

ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL integration: $*"; }
check() {	# check NAME COMMAND...: one check, passed when COMMAND succeeds
	name=$1; shift
	if "$@"; then ok; else bad "$name"; fi
}

log_tail() {
	echo "---- daemon log (tail) ----"
	tail -n 30 "$T/daemon.log" 2>/dev/null
	echo "---------------------------"
}

# ---- set-up: token, port, configuration ----------------------------------------------

TOKEN_SH=$(dirname "$0")/../dist/softhsm-token.sh
TPM_SH=$(dirname "$0")/tpm-token.sh
case "$TOKEN" in
tpm) LIB=$(sh "$TPM_SH" --lib) ;;
*)   LIB=$(sh "$TOKEN_SH" --lib) ;;
esac
if [ -z "$LIB" ] || [ ! -x "$DAEMON" ]; then
	[ -n "$LIB" ] || echo "FAIL integration: the PKCS#11 module of token $TOKEN not found"
	[ -x "$DAEMON" ] || echo "FAIL integration: daemon $DAEMON not built"
	echo "0 passed, 1 failed"
	exit 1
fi

mkdir -p "$T/state"
if [ "$TOKEN" = tpm ]; then
	tpm_start=$(date +%s)
	if ! timeout 60 sh "$TPM_SH" start "$T/tpm" "$LABEL" "$PIN" "$SOPIN" 2> "$T/init.log"; then
		cat "$T/init.log"
		echo "FAIL integration: tests/tpm-token.sh start"
		echo "0 passed, 1 failed"
		exit 1
	fi
	. "$T/tpm/tpm.env"
	echo "NOTE tpm: swtpm, tpm2-abrmd and the token made in $(($(date +%s) - tpm_start)) s"
elif ! SOFTHSM2_CONF=$(timeout 30 sh "$TOKEN_SH" "$T" "$LABEL" "$PIN" "$SOPIN" 2> "$T/init.log"); then
	cat "$T/init.log"
	echo "FAIL integration: softhsm2-util --init-token"
	echo "0 passed, 1 failed"
	exit 1
else
	export SOFTHSM2_CONF
fi

. "$(dirname "$0")/netlib.sh"     # free_port, wait_port_on, tally
PORT=$(free_port)

cat > "$T/config.toml" <<EOF
version = "v1"

[pkcs11]
lib-path = "$LIB"
workers = 2

[server]
addr = "127.0.0.1:$PORT"
# e2e parallel opens 100 connections at once, all from 127.0.0.1
max-connections-per-source = 128

[daemon]
log-level = "info"
state-dir = "$T/state"
EOF

CERT=$T/state/cert.pem

# ---- the daemon ----------------------------------------------------------------------

# Waits until 127.0.0.1:PORT accepts a TCP connection, at most 10 s.
wait_port() { wait_port_on "$PORT"; }

# Waits until state-dir/cert.pem is there (the daemon may write it after it listens).
wait_cert() {
	i=0
	while [ ! -s "$CERT" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -s "$CERT" ]
}

start_daemon() {	# start_daemon PHASE
	echo "=== start daemon ($1)" >> "$T/daemon.log"
	"$DAEMON" -c "$T/config.toml" >> "$T/daemon.log" 2>&1 &
	daemon_pid=$!
	if wait_port && wait_cert && kill -0 "$daemon_pid" 2>/dev/null; then
		ok
		return 0
	fi
	bad "daemon accepts connections on 127.0.0.1:$PORT within 10 s ($1)"
	log_tail
	stop_daemon
	return 1
}

# Stops the daemon with SIGTERM; returns 0 if it ended with status 0 within 5 s.
stop_daemon() {
	[ -n "$daemon_pid" ] || return 0
	pid=$daemon_pid
	daemon_pid=
	kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 1; }
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 1
	fi
	wait "$pid"
}

daemon_alive() { [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; }

# wait_closed LOG: until LOG has a close line for every connect line, at most 5 s.
wait_closed() {
	i=0
	while [ $i -lt 50 ]; do
		[ "$(grep -c ' connect conn=' "$1")" = "$(grep -c ' close conn=' "$1")" ] && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# usr1 LOG N: SIGUSR1 to the daemon, then until LOG holds N counters lines, at most 5 s.
usr1() {
	kill -USR1 "$daemon_pid" 2>/dev/null || return 1
	i=0
	while [ "$(grep -c '\] counters ' "$1")" -lt "$2" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ "$(grep -c '\] counters ' "$1")" -eq "$2" ]
}

# ---- test programs -------------------------------------------------------------------

# sub NAME SECONDS COMMAND...: runs a test program that ends with "N passed, N failed" and
# adds its counts.  A program that dies, times out, or exits non-zero with no failure
# counted, counts one more failure.
sub() {
	name=$1 secs=$2; shift 2
	start=$(date +%s)
	timeout -k 5 "$secs" "$@" > "$T/$name.out" 2>&1
	rc=$?
	end=$(date +%s)
	tally "$T/$name.out"
	grep -E '^(FAIL|SKIP|NOTE)' "$T/$name.out" | head -n 40
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		[ "$rc" -eq 124 ] && echo "FAIL $name: timed out after ${secs}s"
		grep -v -E "^(FAIL|SKIP|NOTE)" "$T/$name.out" | tail -n 15
	fi
	if [ "$s" -gt 0 ]; then sk=", $s skipped"; else sk=; fi
	printf '  %-16s %4d passed, %d failed%s  (%ss)\n' "$name" "$p" "$f" "$sk" $((end - start))
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
	if [ "$f" -ne 0 ] && ! daemon_alive; then
		echo "FAIL $name: the daemon is gone"
		log_tail
	fi
}

have_e2e() { [ -x "$E2E" ]; }
e2e() {	# e2e NAME SECONDS MODE [ARGS...]
	name=$1 secs=$2; shift 2
	if have_e2e; then
		sub "$name" "$secs" "$E2E" 127.0.0.1 "$PORT" "$CERT" "$LABEL" "$PIN" "$@"
	else
		bad "$name: $E2E not built"
	fi
}

# ---- TLS face ------------------------------------------------------------------------

s_client() {	# s_client OPTIONS...: one handshake, no data, output on stdout
	timeout 10 openssl s_client -connect "127.0.0.1:$PORT" "$@" < /dev/null 2>&1
}

served_fingerprint() {
	timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -tls1_3 < /dev/null 2>/dev/null \
		| openssl x509 -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//; s/://g'
}

file_fingerprint() {
	openssl x509 -in "$CERT" -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//; s/://g'
}

tls_checks() {
	out=$(s_client -tls1_2)
	rc=$?
	check "TLS 1.2 handshake is refused" [ "$rc" -ne 0 ]
	case "$out" in
	*"protocol version"*|*"alert number 70"*) ok ;;
	*) bad "TLS 1.2 is refused with a protocol_version alert"; echo "$out" | grep -i -E 'alert|error' | head -n 3 ;;
	esac

	out=$(s_client -tls1_3 -CAfile "$CERT" -verify_return_error)
	rc=$?
	check "TLS 1.3 handshake succeeds" [ "$rc" -eq 0 ]
	case "$out" in
	*"TLSv1.3"*) ok ;;
	*) bad "TLS 1.3 is the protocol negotiated" ;;
	esac
	case "$out" in
	*"Verify return code: 0 (ok)"*) ok ;;
	*) bad "the served certificate verifies against state-dir/cert.pem" ;;
	esac

	out=$(s_client -tls1_3 -CAfile "$CERT" -verify_return_error -verify_ip 127.0.0.1)
	rc=$?
	check "the certificate names the listening address 127.0.0.1 (iPAddress SAN)" [ "$rc" -eq 0 ]
	[ "$rc" -eq 0 ] || openssl x509 -in "$CERT" -noout -ext subjectAltName 2>&1 | tail -n 1

	check "state-dir/cert.pem and key.pem exist" test -s "$CERT" -a -s "$T/state/key.pem"
	fp=$(file_fingerprint)
	check "state-dir/cert.pem is readable X.509" [ -n "$fp" ]
	served=$(served_fingerprint)
	check "the daemon serves state-dir/cert.pem" test -n "$fp" -a "$served" = "$fp"
	logged=$(tr -d ':' < "$T/daemon.log" | tr 'a-f' 'A-F' | grep -c "$fp")
	if [ -n "$fp" ] && [ "$logged" -gt 0 ]; then ok; else
		bad "the daemon logs the SHA-256 fingerprint of its certificate ($fp)"
		grep -i -E 'fingerprint|sha-?256|cert' "$T/daemon.log" | head -n 3
	fi
	key_mode=$(stat -c %a "$T/state/key.pem" 2>/dev/null)
	case "$key_mode" in
	600|400) ok ;;
	*) bad "state-dir/key.pem is private to the daemon's user (mode $key_mode)" ;;
	esac
}

# A client's TLS 1.3 KeyUpdate (openssl s_client sends one for a line "k"): Mbed TLS 3.6
# cannot process it, so the daemon closes with an unexpected_message alert and says why.
keyupdate_check() {
	out=$( (sleep 1; echo k; sleep 2) | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" \
		-tls1_3 -CAfile "$CERT" 2>&1)
	case "$out" in
	*"KEYUPDATE"*) ok ;;
	*) bad "openssl s_client sent a KeyUpdate"; echo "$out" | tail -n 5 ;;
	esac
	case "$out" in
	*"unexpected message"*|*"unexpected_message"*) ok ;;
	*) bad "a KeyUpdate is answered with an unexpected_message alert"; echo "$out" | tail -n 5 ;;
	esac
	sleep 0.2
	check "a KeyUpdate's closing is logged, naming it" \
		grep -q "the client sent a TLS KeyUpdate" "$T/daemon.log"
	check "the daemon is alive after a KeyUpdate" daemon_alive
}

# ---- the run -------------------------------------------------------------------------

echo "integration: daemon $DAEMON, port $PORT, token $LABEL ($TOKEN) in $T"
fp_first= started=0

# ---- --list-slots: the module loaded, its slots listed, nothing served -----------------

"$DAEMON" -c "$T/config.toml" --list-slots > "$T/list-slots.out" 2>&1
check "--list-slots exits 0" [ $? -eq 0 ]
check "--list-slots: the token's label" grep -q "^  label  *\"$LABEL\"\$" "$T/list-slots.out"
check "--list-slots: the token's flags" grep -q '^  flags  *initialized login-required$' "$T/list-slots.out"
if [ "$TOKEN" = tpm ]; then
	# tpm2-pkcs11 on swtpm: no Ed25519, RSA up to 3072, the TPM hashes.
	gen='RSA 1024..3072 bits, P-256, P-384, P-521$'
	sig='RSA (hash in the token), P-256 (hash in the token),'
else
	gen='RSA 1024..4096 bits, P-256, P-384, P-521, Ed25519$'
	sig='RSA (hash in the token), P-256 (hash in software),'
fi
check "--list-slots: what the daemon can make there" \
	grep -q "^  generate  *$gen" "$T/list-slots.out"
check "--list-slots: how it signs there" \
	grep -q -F "$sig" "$T/list-slots.out"
check "--list-slots: label, slot ID and index reach the slot" \
	grep -q "^  usernames  *\"$LABEL\" \"[0-9]*\" \"0\"\$" "$T/list-slots.out"
check "--list-slots: the uninitialized slot is marked" grep -q 'not initialized' "$T/list-slots.out"
[ "$failed" -eq 0 ] || cat "$T/list-slots.out"
sed 's|^lib-path = .*|lib-path = "/nonexistent/libnothing.so"|' "$T/config.toml" > "$T/nolib.toml"
out=$("$DAEMON" -c "$T/nolib.toml" --list-slots 2>&1)
check "--list-slots with a module that does not load exits 1" [ $? -eq 1 ]
case "$out" in
*"/nonexistent/libnothing.so"*"cannot"*) ok ;;
*) bad "--list-slots says why the module did not load: $out" ;;
esac

if start_daemon "first start"; then
	tls_checks
	fp_first=$(file_fingerprint) started=1

	keyupdate_check
	e2e e2e-cascade  120 cascade
	e2e e2e-auth      60 auth
	check "an unknown username is logged at warning with the token labels there are" \
		grep -q "\[warning\] no slot for username \".*\": token labels are \"$LABEL\"" "$T/daemon.log"
	e2e e2e-errors    60 errors
	check "the daemon survives malformed input" daemon_alive
	if [ "$TOKEN" = softhsm ]; then
		e2e e2e-parallel 120 parallel 100
		e2e e2e-slow     180 slow
	fi
	OPENSSL_CONF=$T/openssl-tls13.cnf
	cat > "$OPENSSL_CONF" <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
EOF
	: > "$T/pykmip.conf"
	sub pykmip 120 env OPENSSL_CONF="$OPENSSL_CONF" $PY tests/pykmip_lifecycle.py \
		--host 127.0.0.1 --port "$PORT" --ca "$CERT" --user "$LABEL" --pin "$PIN" \
		--config "$T/pykmip.conf"
	# tpm2-pkcs11 creates RSA public keys only (C_CreateObject): its refusal of a private
	# key is checked, and the import counted as skipped.
	rgaps=
	[ "$TOKEN" = tpm ] && rgaps="--known-gap private-import"
	# shellcheck disable=SC2086
	sub pykmip-register 120 env OPENSSL_CONF="$OPENSSL_CONF" $PY tests/pykmip_register.py \
		--host 127.0.0.1 --port "$PORT" --ca "$CERT" --user "$LABEL" --pin "$PIN" \
		--config "$T/pykmip.conf" $rgaps

	# Keys made now must still sign after the restart below.
	e2e e2e-keep 60 keep
	uids=$(sed -n 's/^UID //p' "$T/e2e-keep.out" 2>/dev/null | tr '\n' ' ')
	# shellcheck disable=SC2086
	check "keep: two private key UIDs printed" test "$(echo $uids | wc -w)" -eq 2
	check "the daemon is alive after all tests" daemon_alive
	check "the daemon exits 0 within 5 s of SIGTERM" stop_daemon

	# The --import command line, while the daemon is stopped: a key made by openssl goes
	# into the token; the restarted daemon signs with it (checked below with PyKMIP).  The
	# TPM token imports no private keys (tpm2-pkcs11 creates RSA public keys only): there
	# its refusal is checked, the rest runs with the public key, and the import of the
	# private key is counted as skipped.
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/import.pem" 2>/dev/null
	openssl pkey -in "$T/import.pem" -pubout -out "$T/import-pub.pem"
	import_pem=$T/import.pem
	imported=
	if [ "$TOKEN" = tpm ]; then
		KMIP2PKCS11_PIN=$PIN "$DAEMON" -c "$T/config.toml" --import "$T/import.pem" \
			--username "$LABEL" > /dev/null 2> "$T/import.err"
		check "--import of a private key into a token that imports none exits 1" [ $? -eq 1 ]
		check "--import says the token refused the private key" \
			grep -q "import refused: .*C_CreateObject of the private key" "$T/import.err"
		echo "SKIP integration: --import of a private key (known gap: this token imports no private keys)"
		skipped=$((skipped + 1))
		import_pem=$T/import-pub.pem
		KMIP2PKCS11_PIN=$PIN "$DAEMON" -c "$T/config.toml" --import "$import_pem" \
			--username "$LABEL" --name imported > "$T/import.out" 2> "$T/import.err"
		check "--import of a public key exits 0" [ $? -eq 0 ]
		check "--import prints the public key's UID" \
			grep -q "^public key: [0-9A-F]\{40\}_pub\$" "$T/import.out"
	else
		KMIP2PKCS11_PIN=$PIN "$DAEMON" -c "$T/config.toml" --import "$T/import.pem" \
			--username "$LABEL" --name imported > "$T/import.out" 2> "$T/import.err"
		check "--import exits 0" [ $? -eq 0 ]
		imported=$(sed -n 's/^private key: \([0-9A-F]\{40\}_priv\)$/\1/p' "$T/import.out")
		check "--import prints the private key's UID" [ -n "$imported" ]
		check "--import prints the public key's UID" \
			grep -q "^public key: ${imported%_priv}_pub\$" "$T/import.out"
	fi
	KMIP2PKCS11_PIN=${PIN}9 "$DAEMON" -c "$T/config.toml" --import "$T/import.pem" \
		--username "$LABEL" > /dev/null 2> "$T/import-bad.err"
	check "--import with a wrong PIN exits 1" [ $? -eq 1 ]
	check "--import with a wrong PIN says why" \
		grep -q "import refused: AUTHENTICATION_NOT_SUCCESSFUL" "$T/import-bad.err"
	"$DAEMON" -c "$T/config.toml" --import "$T/import.pem" > /dev/null 2>&1
	check "--import without --username is a usage error (2)" [ $? -eq 2 ]
	# Without KMIP2PKCS11_PIN the PIN is asked on the terminal, and not echoed.
	check "--import asks the PIN on the terminal without echo" timeout 30 env -u KMIP2PKCS11_PIN \
		$PY - "$DAEMON" "$T/config.toml" "$import_pem" "$LABEL" "$PIN" <<'EOF'
import os, pty, sys
daemon, conf, pem, label, pin = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(daemon, [daemon, "-c", conf, "--import", pem, "--username", label])
out = b""
def read_until(marker):
    global out
    while marker not in out:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        out += chunk
read_until(b"User PIN: ")
asked = b"User PIN: " in out
os.write(fd, pin.encode() + b"\n")
read_until(b"_pub")
_, st = os.waitpid(pid, 0)
after = out.split(b"User PIN: ", 1)[-1]
ok = asked and pin.encode() not in after and b"public key: " in after and st == 0
if not ok:
    print("pty transcript:", out)
sys.exit(0 if ok else 1)
EOF

	if start_daemon "restart"; then
		if [ -n "$imported" ]; then
			sub pykmip-import 60 env OPENSSL_CONF="$OPENSSL_CONF" $PY tests/pykmip_register.py \
				--host 127.0.0.1 --port "$PORT" --ca "$CERT" --user "$LABEL" --pin "$PIN" \
				--config "$T/pykmip.conf" --imported "$imported" --pem "$T/import.pem"
		fi
		check "the same certificate is kept across a restart" [ "$(file_fingerprint)" = "$fp_first" ]
		check "the same certificate is served after a restart" [ "$(served_fingerprint)" = "$fp_first" ]
		if [ -n "$uids" ]; then
			# shellcheck disable=SC2086
			e2e e2e-restart 60 sign $uids
		fi
		check "the daemon exits 0 within 5 s of SIGTERM (restart)" stop_daemon
	fi
fi
if [ "$TOKEN" = softhsm ] && [ "$started" = 1 ]; then
	# The module's failures, recovered without a restart: the token's store goes away and
	# comes back (SoftHSM2 then fails C_GetTokenInfo and finds nothing: the daemon must
	# answer a token failure, not Item Not Found), then the token is deleted and made again
	# under the same label, in a new slot (SoftHSM2 sees it only after C_Initialize).
	if start_daemon "recovery"; then
		e2e e2e-keep2 60 keep
		uids=$(sed -n 's/^UID //p' "$T/e2e-keep2.out" 2>/dev/null | tr '\n' ' ')
		mkdir -p "$T/away"
		mv "$T/tokens/"* "$T/away/"
		# shellcheck disable=SC2086
		e2e e2e-gone 60 gone $uids
		mv "$T/away/"* "$T/tokens/"
		# shellcheck disable=SC2086
		e2e e2e-back 60 back $uids
		rm -rf "$T/tokens/"*
		# shellcheck disable=SC2086
		e2e e2e-deleted 60 gone $uids
		if SOFTHSM2_CONF=$(timeout 30 sh "$TOKEN_SH" "$T" "$LABEL" "$PIN" "$SOPIN" 2>> "$T/init.log"); then
			ok
		else
			bad "the token is made again"
		fi
		e2e e2e-fresh 60 fresh
		check "the module failures are logged at warning" \
			grep -q '\[warning\] slot [0-9]* ("'"$LABEL"'"): C_GetTokenInfo after C_FindObjects found nothing: CKR_GENERAL_ERROR' "$T/daemon.log"
		check "the module re-initialisation is logged at warning" \
			grep -q '\[warning\] PKCS#11 module re-initialised' "$T/daemon.log"
		check "the daemon is alive after the token came back" daemon_alive
		check "the daemon exits 0 within 5 s of SIGTERM (recovery)" stop_daemon
	fi

	# Limits: a daemon with max-connections 4, max-connections-per-source 3,
	# handshake-timeout 1, first-request-timeout 2 and idle-timeout 4.
	sed -e '/^max-connections-per-source/d' -e 's/^addr = .*/&\nmax-connections = 4\nmax-connections-per-source = 3\nhandshake-timeout = 1\nfirst-request-timeout = 2\nidle-timeout = 4/' \
		"$T/config.toml" > "$T/limits.toml"
	"$DAEMON" -c "$T/limits.toml" -l "file:$T/limits.log" >> "$T/daemon.log" 2>&1 &
	daemon_pid=$!
	if wait_port; then
		sub limits 40 $PY tests/limits.py "$PORT" "$CERT" "$T/limits.log"
		check "the daemon exits 0 within 5 s of SIGTERM (limits)" stop_daemon
	else
		bad "daemon with limits accepts connections"
		stop_daemon
	fi

	# Cheap requests while the slow pool sits in slow module calls: nullp11 with a 3 s
	# C_GetSlotList, and every other function it has but C_Initialize taking 0.5 s, so
	# that a module call on the cheap path could not go unseen (tests/limits.py, mode cheap).
	delay=C_GetSlotList=3000
	for f in GetTokenInfo GetMechanismList OpenSession GetSessionInfo Login GenerateKeyPair \
		GetAttributeValue FindObjectsInit FindObjects SignInit Sign DestroyObject \
		SetAttributeValue GenerateRandom; do
		delay=$delay,C_$f=500
	done
	sed -e "s|^lib-path = .*|lib-path = \"$(pwd)/build/nullp11.so\"|" \
		-e '/^max-connections-per-source/d' -e 's/^addr = .*/&\nmax-connections = 16\nmax-connections-per-source = 16\nfirst-request-timeout = 2\nidle-timeout = 2/' \
		"$T/config.toml" > "$T/cheap.toml"
	if [ -f build/nullp11.so ]; then
		NULLP11_DELAY=$delay "$DAEMON" -c "$T/cheap.toml" -l "file:$T/cheap.log" \
			>> "$T/daemon.log" 2>&1 &
		daemon_pid=$!
		if wait_port; then
			sub cheap 60 $PY tests/limits.py "$PORT" "$CERT" "$T/cheap.log" cheap
			check "the daemon exits 0 within 5 s of SIGTERM (cheap)" stop_daemon
		else
			bad "daemon on nullp11 accepts connections"
			stop_daemon
		fi
	else
		bad "build/nullp11.so not built"
	fi

	# A response buffer that holds only part of a batch's answers (max-message-size 3000).
	sed -e 's/^addr = .*/&\nmax-message-size = 3000/' "$T/config.toml" > "$T/small.toml"
	"$DAEMON" -c "$T/small.toml" >> "$T/daemon.log" 2>&1 &
	daemon_pid=$!
	if wait_port; then
		e2e e2e-toolarge 60 toolarge
		check "the daemon exits 0 within 5 s of SIGTERM (max-message-size 3000)" stop_daemon
	else
		bad "daemon with max-message-size 3000 accepts connections"
		stop_daemon
	fi

	# workers = 0: one poll() loop on the main thread does everything (accepts, handshakes,
	# every module call, key generation included).
	sed -e 's/^workers = 2$/workers = 0/' "$T/config.toml" > "$T/inline.toml"
	"$DAEMON" -c "$T/inline.toml" -l "file:$T/inline.log" >> "$T/daemon.log" 2>&1 &
	daemon_pid=$!
	if wait_port; then
		check "workers = 0: one loop, poll()" grep -q "1 event loop(s) (poll), 0 thread(s)" "$T/inline.log"
		e2e e2e-inline 120 cascade
		e2e e2e-inline-parallel 120 parallel 100
		check "the daemon exits 0 within 5 s of SIGTERM (workers = 0)" stop_daemon
	else
		bad "daemon with workers = 0 accepts connections"
		stop_daemon
	fi

	# Log rotation: -l file:PATH, the file moved away, SIGHUP: a new file under the name.
	"$DAEMON" -c "$T/config.toml" -l "file:$T/rot.log" >> "$T/daemon.log" 2>&1 &
	daemon_pid=$!
	if wait_port; then
		mv "$T/rot.log" "$T/rot.log.1"
		kill -HUP "$daemon_pid"
		i=0
		while [ ! -s "$T/rot.log" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		check "SIGHUP reopens the log file under its name" grep -q "log file reopened" "$T/rot.log"
		check "the first log file kept what was written before" grep -q "ready" "$T/rot.log.1"
		check "the daemon is alive after SIGHUP" daemon_alive
		check "the daemon exits 0 within 5 s of SIGTERM (log rotation)" stop_daemon
	else
		bad "daemon with a log file accepts connections"
		stop_daemon
	fi

	# Logs (README "Logs"): the request lines, authentication failures, connection numbers
	# and SIGUSR1's counters, checked by tests/log_lines.py on a trace-level log.  A token
	# of its own, with a PIN that nothing else in the log can contain.
	LOGPIN=739164825
	if SOFTHSM2_CONF=$(timeout 30 sh "$TOKEN_SH" "$T" k2plog "$LOGPIN" "$SOPIN" 2>> "$T/init.log"); then
		"$DAEMON" -c "$T/config.toml" --log-level trace -l "file:$T/req.log" >> "$T/daemon.log" 2>&1 &
		daemon_pid=$!
		if wait_port; then
			sub logs-keep 60 "$E2E" 127.0.0.1 "$PORT" "$CERT" k2plog "$LOGPIN" keep
			check "logs: every connection closed before SIGUSR1" wait_closed "$T/req.log"
			check "logs: SIGUSR1 logs a counters line" usr1 "$T/req.log" 1
			log_uid=$(sed -n 's/^UID //p' "$T/logs-keep.out" | head -n 1)
			sub logs-sign 60 "$E2E" 127.0.0.1 "$PORT" "$CERT" k2plog "$LOGPIN" sign "$log_uid"
			sub logs-auth 60 "$E2E" 127.0.0.1 "$PORT" "$CERT" k2plog "$LOGPIN" auth
			check "logs: every connection closed before the second SIGUSR1" wait_closed "$T/req.log"
			check "logs: the second SIGUSR1 logs a second counters line" usr1 "$T/req.log" 2
			sub log-lines 30 $PY tests/log_lines.py "$T/req.log" k2plog "$LOGPIN"
			check "the daemon exits 0 within 5 s of SIGTERM (logs)" stop_daemon
		else
			bad "daemon at log level trace accepts connections"
			stop_daemon
		fi
	else
		bad "a second token for the log tests"
	fi

	# journald: with JOURNAL_STREAM naming stderr (device:inode), every line starts with
	# its syslog priority "<N>" and carries no timestamp of its own.
	: > "$T/journal.err"
	js=$(stat -L -c '%d:%i' "$T/journal.err")
	JOURNAL_STREAM=$js "$DAEMON" -c "$T/config.toml" --log-level debug 2>> "$T/journal.err" &
	daemon_pid=$!
	if wait_port; then
		e2e journal-auth 60 auth
		check "journald: SIGUSR1 logs a counters line" usr1 "$T/journal.err" 1
		check "the daemon exits 0 within 5 s of SIGTERM (journald)" stop_daemon
		J=$T/journal.err
		check "journald: every line starts with <N>" test -z "$(grep -v -E '^<[0-7]>' "$J")"
		check "journald: info is <6>" grep -q -E '^<6>\[info\] ready$' "$J"
		check "journald: warning is <4> (a wrong PIN)" grep -q -E '^<4>\[warning\] auth-fail conn=' "$J"
		check "journald: debug is <7>" grep -q -E '^<7>\[debug\] ' "$J"
		check "journald: every line of a dump has its priority" grep -q -E '^<7>RESPONSE_MESSAGE ' "$J"
		check "journald: request lines at <6>" grep -q -E '^<6>\[info\] request conn=[0-9]+ ' "$J"
		check "journald: no timestamp of our own" test -z "$(grep -E '^<[0-7]>[0-9]{4}-' "$J")"
	else
		bad "daemon under JOURNAL_STREAM accepts connections"
		stop_daemon
	fi
	# JOURNAL_STREAM naming another file: stderr is no longer the journal's, timestamps stay.
	: > "$T/notjournal.err"
	JOURNAL_STREAM=$js "$DAEMON" -c "$T/config.toml" 2>> "$T/notjournal.err" &
	daemon_pid=$!
	if wait_port; then
		check "the daemon exits 0 within 5 s of SIGTERM (JOURNAL_STREAM elsewhere)" stop_daemon
		check "JOURNAL_STREAM for another file: lines keep their timestamp, no <N>" \
			grep -q -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z \[info\] ready$' "$T/notjournal.err"
	else
		bad "daemon with a foreign JOURNAL_STREAM accepts connections"
		stop_daemon
	fi
fi

if grep -q -E 'AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$T/daemon.log"; then
	bad "sanitizer report in the daemon log"
	grep -E -A 5 'AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$T/daemon.log" | head -n 30
fi
if [ "$failed" -ne 0 ]; then log_tail; fi

if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
