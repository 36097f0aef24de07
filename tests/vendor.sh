#!/bin/sh
# End-to-end tests of the daemon against vendor behaviours: build/vendorp11.so (a module
# that wraps SoftHSM2 and behaves as another vendor's module, see tests/vendorp11.c), one
# behaviour at a time, each with a fresh SoftHSM2 token, its own daemon on a free port of
# 127.0.0.1 and Cascade's sequence (build/e2e cascade) with the credentials that vendor's
# users give, plus what that behaviour needs checked.  Ends with "N passed, N failed".
#
#   sh tests/vendor.sh [./kmip2pkcs11] [BEHAVIOUR...]      (from the repository root)
#
# Environment: E2E (default build/e2e), KEEP_TMP=1 keeps the temporary directory.
set -u

DAEMON=${1:-./kmip2pkcs11}
[ $# -gt 0 ] && shift
E2E=${E2E:-build/e2e}
MODULE=$(pwd)/build/vendorp11.so
PY=/usr/bin/python3
LABEL=k2p
SOPIN=5678

passed=0 failed=0 skipped=0
daemon_pid=
T=$(mktemp -d "${TMPDIR:-/tmp}/k2p-vendor.XXXXXX") || exit 1
cleanup() {
	stop_daemon
	if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM HUP

ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL vendor $V: $*"; }
check() { name=$1; shift; if "$@"; then ok; else bad "$name"; fi; }

SOFTHSM=$(sh dist/softhsm-token.sh --lib)
for f in "$DAEMON" "$E2E" "$MODULE"; do
	[ -e "$f" ] || { echo "FAIL vendor: $f not built"; echo "0 passed, 1 failed"; exit 1; }
done
[ -n "$SOFTHSM" ] || { echo "FAIL vendor: libsofthsm2.so not found"; echo "0 passed, 1 failed"; exit 1; }

. "$(dirname "$0")/netlib.sh"     # free_port, tally

wait_ready() {	# the daemon listens and has its certificate, at most 10 s
	i=0
	while [ $i -lt 100 ]; do
		# only this start's lines: the log holds the earlier daemons' "ready" too
		[ -s "$D/state/cert.pem" ] &&
			tail -n "+$((log_lines + 1))" "$D/daemon.log" 2>/dev/null | grep -q "ready" &&
			return 0
		kill -0 "$daemon_pid" 2>/dev/null || return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

stop_daemon() {
	[ -n "$daemon_pid" ] || return 0
	pid=$daemon_pid
	daemon_pid=
	kill -TERM "$pid" 2>/dev/null
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid"
}

# setup PIN [CONFIG LINES]: a token, a configuration, no daemon yet.
setup() {
	D=$T/$V
	mkdir -p "$D/state"
	SOFTHSM2_CONF=$(timeout 30 sh dist/softhsm-token.sh "$D" "$LABEL" "$1" "$SOPIN" 2> "$D/init.log") ||
		{ bad "softhsm2-util --init-token"; cat "$D/init.log"; return 1; }
	export SOFTHSM2_CONF
	PORT=$(free_port)
	cat > "$D/config.toml" <<EOF
version = "v1"

[pkcs11]
lib-path = "$MODULE"
workers = 2
${2:-}

[server]
addr = "127.0.0.1:$PORT"

[daemon]
log-level = "info"
state-dir = "$D/state"
EOF
}

start() {
	log_lines=$(cat "$D/daemon.log" 2>/dev/null | wc -l)
	env VENDORP11="$V" VENDORP11_LIB="$SOFTHSM" "$@" "$DAEMON" -c "$D/config.toml" \
		>> "$D/daemon.log" 2>&1 &
	daemon_pid=$!
	if wait_ready; then ok; return 0; fi
	bad "the daemon starts"
	tail -n 20 "$D/daemon.log"
	stop_daemon
	return 1
}

# e2e NAME SECONDS USER PASSWORD MODE [ARGS]: a test program whose counts are added.
e2e() {
	name=$1 secs=$2 user=$3 pass=$4
	shift 4
	start_s=$(date +%s)
	timeout -k 5 "$secs" "$E2E" 127.0.0.1 "$PORT" "$D/state/cert.pem" "$user" "$pass" "$@" \
		> "$D/$name.out" 2>&1
	rc=$?
	tally "$D/$name.out"
	[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	grep -E '^(FAIL|SKIP|NOTE .*(refuse|Modify|RSA-2048 Create))' "$D/$name.out" | sed "s/^/  [$V] /" | head -n 20
	[ "$f" -ne 0 ] && tail -n 5 "$D/$name.out" && tail -n 15 "$D/daemon.log"
	printf '  %-12s %-14s %4d passed, %d failed, %d skipped  (%ss)\n' "$V" "$name" "$p" "$f" \
		"$s" $(($(date +%s) - start_s))
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

logged() {	# logged TEXT: the daemon's log has a line with TEXT
	check "the daemon logs '$1'" grep -q -F "$1" "$D/daemon.log"
}

end() {
	check "the daemon is alive at the end" kill -0 "$daemon_pid"
	check "the daemon exits 0 within 5 s of SIGTERM" stop_daemon
}

# ---- the behaviours ----------------------------------------------------------------------

# YubiHSM 2: PIN = authentication key ID 0001 + password; template checked attribute by
# attribute; RSA 2048/3072/4096 only; key generation slow (1 s here).
t_yubihsm() {
	setup password1 || return
	start VENDORP11_KEYGEN_MS=1000 || return
	e2e cascade 120 "$LABEL" 0001password1 cascade
	e2e auth 60 "$LABEL" 0001password1 auth
	e2e refuse 30 "$LABEL" 0001password1 refuse rsa 1024 0x7 "CKA_MODULUS_BITS 1024"
	end
	# A module that does not know one of the template's attributes (CKA_EXTRACTABLE here):
	# Feature Not Supported, the optional attributes sent named.
	start VENDORP11_KEYGEN_MS=0 VENDORP11_UNKNOWN_ATTR=0x162 || return
	e2e refuse-type 30 "$LABEL" 0001password1 refuse ec 256 0x8 \
		"CKR_ATTRIBUTE_TYPE_INVALID: an attribute the token does not know; optional ones sent: CKA_SENSITIVE CKA_EXTRACTABLE"
	end
}

# YubiHSM 2 module before 2.4.0: CKA_ID kept as 2 bytes.  The UIDs are those 2 bytes, and
# the keys are reachable by them, also after a restart.
t_yubihsm_old() {
	setup password1 || return
	start VENDORP11_KEYGEN_MS=200 || return
	e2e cascade 120 "$LABEL" 0001password1 cascade
	e2e keep 60 "$LABEL" 0001password1 keep
	logged "the token kept a 2-byte CKA_ID instead of the 20 bytes asked for"
	uids=$(sed -n 's/^UID //p' "$D/keep.out" | tr '\n' ' ')
	for u in $uids; do
		check "UID $u is 2 bytes of hex and _priv" test "${#u}" -eq 9
	done
	stop_daemon
	start VENDORP11_KEYGEN_MS=200 || return
	# shellcheck disable=SC2086
	[ -n "$uids" ] && e2e restart 60 "$LABEL" 0001password1 sign $uids
	end
}

# Nitrokey NetHSM: sessions logged in by the module (operator of its configuration); the
# guide's username "0" and any password; labels read-only (Modify Attribute Name is
# Permission Denied naming CKA_LABEL, the rest of the sequence works).
t_nethsm() {
	setup operator-pass || return
	start VENDORP11_PIN=operator-pass || return
	E2E_LABELS_READ_ONLY=1 e2e cascade 120 0 "not used" cascade
	e2e auth 60 0 "not used" auth
	logged "does not require login"
	logged "the module logged the session in by itself"
	check "the daemon never logged a session out" sh -c "! grep -q 'logging out' '$D/daemon.log'"
	end
}

# Thales Luna: Cryptoki 2.20, three sessions at most, CKR_USER_ALREADY_LOGGED_IN on a second
# login.
t_luna() {
	setup 1234 || return
	start || return
	logged "Cryptoki 2.20"
	e2e cascade 120 "$LABEL" 1234 cascade
	logged "max sessions 3"
	e2e auth 60 "$LABEL" 1234 auth
	end
}

# SmartCard-HSM through OpenSC: the label ends in " (UserPIN)"; username "0" or that label;
# PIN 6 to 15 characters.
t_sc_hsm() {
	setup 123456 || return
	start || return
	e2e cascade 120 "$LABEL (UserPIN)" 123456 cascade
	e2e cascade-0 120 0 123456 cascade
	e2e auth 60 0 123456 auth
	end
}

# No combined hash-and-sign mechanisms: the daemon hashes, the token signs the hash.
t_nohash() {
	setup 1234 || return
	start || return
	e2e cascade 120 "$LABEL" 1234 cascade
	end
}

# A PIN pad (CKF_PROTECTED_AUTHENTICATION_PATH): the KMIP password is still passed.
t_pinpad() {
	setup 1234 || return
	start VENDORP11_PIN=1234 || return
	e2e cascade 120 "$LABEL" 1234 cascade
	e2e auth 60 "$LABEL" 1234 auth
	end
}

# A module that reads its configuration from C_Initialize's pReserved: [pkcs11] init-args.
t_initargs() {
	setup 1234 'init-args = "slot=k2p debug=0"' || return
	start VENDORP11_INIT_ARGS="slot=k2p debug=0" || return
	logged "initialized with [pkcs11] init-args (16 bytes)"
	e2e cascade 120 "$LABEL" 1234 cascade
	end
	# Without init-args that module does not start, and the daemon says what may be missing.
	sed -i '/^init-args/d' "$D/config.toml"
	timeout 20 env VENDORP11="$V" VENDORP11_LIB="$SOFTHSM" VENDORP11_INIT_ARGS="slot=k2p debug=0" \
		"$DAEMON" -c "$D/config.toml" > "$D/noargs.log" 2>&1
	rc=$?
	check "without init-args the daemon exits 1 (status $rc)" [ "$rc" -eq 1 ]
	check "and names init-args" grep -q "C_Initialize: CKR_ARGUMENTS_BAD (does the module want \[pkcs11\] init-args?)" "$D/noargs.log"
}

all="yubihsm yubihsm-old nethsm luna sc-hsm nohash pinpad initargs"
for V in ${*:-$all}; do
	fn=t_$(echo "$V" | tr '-' '_')
	echo "vendor: $V"
	$fn
	stop_daemon
	if grep -q -E 'AddressSanitizer|runtime error:' "$T/$V/daemon.log" 2>/dev/null; then
		bad "sanitizer report in the daemon log"
	fi
done

if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
