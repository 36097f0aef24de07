#!/bin/sh
# bench.sh - run build/bench against two fresh kmip2pkcs11 daemons on 127.0.0.1: one on a
# SoftHSM2 token made for the run, one on build/nullp11.so (no crypto).  `make bench` runs
# this after building ./kmip2pkcs11, build/bench and build/nullp11.so.
#
#   sh tests/bench.sh [bench options]      e.g. --conns 10 --time 5 --algs p256,rsa2048
#
# Options may also come from the environment (make bench BENCH_TIME=2 ...):
#   BENCH_CONNS (10)  BENCH_TIME (5 s)  BENCH_ONE_TIME (2 s)  BENCH_NULL_REQUESTS (30000)
#   BENCH_IDLE_CONNS (1000)  BENCH_HS_THREADS (4)  BENCH_DATA_SIZE (128)  BENCH_ALGS
#   BENCH_SECTIONS (12345: throughput, one connection, nullp11 CPU, memory, handshakes)
#   BENCH_EXTRA_KEYS (0: P-256 key pairs put in the token before measuring)
#   BENCH_SUITES (cascade: AES-256-GCM first as rustls; mbedtls: ChaCha20 first)
#   BENCH_WORKERS ([pkcs11] workers of both daemons; unset: the daemon's default)
#   BENCH_LOG_LEVEL (warning: no line per request; info: each daemon logs one line per
#                    request to a file in the temporary directory)
#   K2P (./kmip2pkcs11)  SOFTHSM_LIB (searched)
#
# Everything is bounded in time; the daemons are stopped whatever happens.  The exit
# status is the bench's: 0 unless a measurement could not run.

set -u

top=$(cd "$(dirname "$0")/.." && pwd)
K2P=${K2P:-$top/kmip2pkcs11}
BENCH=${BENCH:-$top/build/bench}
NULLP11=${NULLP11:-$top/build/nullp11.so}

SOFTHSM_LIB=${SOFTHSM_LIB:-$(sh "$top/dist/softhsm-token.sh" --lib)}
for f in "$K2P" "$BENCH" "$NULLP11"; do
	if [ ! -x "$f" ] && [ ! -f "$f" ]; then
		echo "bench.sh: $f is missing (make kmip2pkcs11 build/bench build/nullp11.so)" >&2
		exit 1
	fi
done
if [ -z "${SOFTHSM_LIB:-}" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
	echo "bench.sh: SoftHSM2 is missing (sh dist/deps.sh installs it)" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/k2p-bench.XXXXXX") || exit 1
pid1=
pid2=

stop() {
	for p in $pid1 $pid2; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in $pid1 $pid2; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	pid1=
	pid2=
}
cleanup() {
	stop
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A thousand connections need descriptors, on both sides.  The daemon inherits this.
hard=$(ulimit -Hn 2>/dev/null || echo 1024)
if [ "$hard" = unlimited ]; then hard=65536; fi
ulimit -n "$hard" 2>/dev/null || true

# ---- the SoftHSM2 token ----
mkdir -p "$tmp/state1" "$tmp/state2"
if ! SOFTHSM2_CONF=$(sh "$top/dist/softhsm-token.sh" "$tmp" bench 1234 5678 2>"$tmp/init.log"); then
	echo "bench.sh: softhsm2-util --init-token failed:" >&2
	cat "$tmp/init.log" >&2
	exit 1
fi
export SOFTHSM2_CONF
softhsm_version=$(softhsm2-util --version 2>/dev/null | head -n 1)

# ---- two daemons ----
ports=$("$BENCH" --free-ports) || { echo "bench.sh: no free ports" >&2; exit 1; }
port1=${ports% *}
port2=${ports#* }

config() {  # lib-path port state-dir [log file]
	echo 'version = "v1"'
	echo '[pkcs11]'
	echo "lib-path = \"$1\""
	if [ -n "${BENCH_WORKERS:-}" ]; then echo "workers = $BENCH_WORKERS"; fi
	echo '[server]'
	echo "addr = \"127.0.0.1:$2\""
	echo 'max-connections = 2000'
	echo 'max-connections-per-source = 2000'   # every client is 127.0.0.1
	echo 'first-request-timeout = 600'         # --idle-conns never send one
	echo 'idle-timeout = 600'
	echo '[daemon]'
	echo "state-dir = \"$3\""
	echo "log-level = \"${BENCH_LOG_LEVEL:-warning}\""
	if [ -n "${BENCH_LOG_LEVEL:-}" ]; then echo "log-target = { type = \"file\", path = \"$4\" }"; fi
}
config "$SOFTHSM_LIB" "$port1" "$tmp/state1" "$tmp/k2p-softhsm.file.log" > "$tmp/k2p-softhsm.conf"
config "$NULLP11" "$port2" "$tmp/state2" "$tmp/k2p-null.file.log" > "$tmp/k2p-null.conf"

"$K2P" -c "$tmp/k2p-softhsm.conf" 2>"$tmp/k2p-softhsm.log" &
pid1=$!
"$K2P" -c "$tmp/k2p-null.conf" 2>"$tmp/k2p-null.log" &
pid2=$!
for p in "$port1:$tmp/k2p-softhsm.log" "$port2:$tmp/k2p-null.log"; do
	if ! "$BENCH" --wait "${p%%:*}" 15; then
		echo "bench.sh: the daemon on port ${p%%:*} did not come up; its log:" >&2
		cat "${p#*:}" >&2
		exit 1
	fi
done

# ---- the measurements ----
set -- --port "$port1" --pid "$pid1" --lib "$SOFTHSM_LIB" --user bench --pin 1234 \
	--null-port "$port2" --null-pid "$pid2" --null-user null --null-pin 1234 \
	--softhsm-version "SoftHSM $softhsm_version" \
	${BENCH_CONNS:+--conns "$BENCH_CONNS"} ${BENCH_TIME:+--time "$BENCH_TIME"} \
	${BENCH_ONE_TIME:+--one-time "$BENCH_ONE_TIME"} \
	${BENCH_NULL_REQUESTS:+--null-requests "$BENCH_NULL_REQUESTS"} \
	${BENCH_IDLE_CONNS:+--idle-conns "$BENCH_IDLE_CONNS"} \
	${BENCH_HS_THREADS:+--hs-threads "$BENCH_HS_THREADS"} \
	${BENCH_DATA_SIZE:+--data-size "$BENCH_DATA_SIZE"} ${BENCH_ALGS:+--algs "$BENCH_ALGS"} \
	${BENCH_SECTIONS:+--sections "$BENCH_SECTIONS"} \
	${BENCH_EXTRA_KEYS:+--extra-keys "$BENCH_EXTRA_KEYS"} \
	${BENCH_SUITES:+--suites "$BENCH_SUITES"} \
	"$@"
"$BENCH" "$@"
rc=$?
for l in "$tmp/k2p-softhsm.log" "$tmp/k2p-null.log"; do
	if [ -s "$l" ]; then
		echo "daemon log $(basename "$l") (last lines):"
		tail -n 5 "$l"
	fi
done
exit $rc
