#!/bin/sh
# A TPM 2.0 PKCS#11 token made from scratch for the tests: tpm2-pkcs11 on a software TPM.
#
#   sh tests/tpm-token.sh start DIR LABEL PIN SOPIN
#       Starts, all private to DIR and listening on 127.0.0.1 only:
#         swtpm          a TPM 2.0 simulator on two free TCP ports (command N, control N+1),
#                        state in DIR/tpm
#         dbus-daemon    a D-Bus session bus of our own, socket DIR/bus
#         tpm2-abrmd     the TPM2 access broker and resource manager, on that bus, talking to
#                        swtpm through the swtpm TCTI
#       then makes a tpm2_ptool store in DIR/store (primary object, token LABEL with the user
#       PIN and SO PIN).  Writes DIR/tpm.env, the variables a process using the token needs
#       (TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI, DBUS_SESSION_BUS_ADDRESS, TPM2TOOLS_TCTI), as
#       export lines for `.`.  Exit status 0 only when the token is there; on failure what
#       was started is stopped again.
#   sh tests/tpm-token.sh stop DIR
#       Stops what start started, each by the PID it recorded in DIR/*.pid.
#   sh tests/tpm-token.sh --lib
#       Prints the path of libtpm2_pkcs11.so; exit status 1 when there is none.
#
# Why a resource manager: without one, every tpm2-tools command that tpm2_ptool runs leaves
# its transient objects loaded in the TPM, and the third one fails with TPM_RC_OBJECT_MEMORY
# ("out of memory for object contexts", 0x902) while the token is being made.  The kernel's
# resource manager (/dev/tpmrm0) serves only a TPM device, not swtpm on a socket, so
# tpm2-abrmd does the job; it needs D-Bus, and a session bus of our own (its own socket, no
# system bus, no root) keeps parallel test runs apart.  The daemon under test reaches the
# TPM through the same broker (TPM2_PKCS11_TCTI=tabrmd:bus_type=session), which also
# serializes its worker threads' TPM commands.
set -u

if [ "${1:-}" = --lib ]; then
	for f in /usr/lib/*-linux-gnu/pkcs11/libtpm2_pkcs11.so /usr/lib/*-linux-gnu/libtpm2_pkcs11.so.1 \
	         /usr/lib64/pkcs11/libtpm2_pkcs11.so /usr/lib/pkcs11/libtpm2_pkcs11.so; do
		[ -f "$f" ] && { echo "$f"; exit 0; }
	done
	exit 1
fi

stop() {	# stop DIR: every process by its recorded PID, TERM then KILL after 3 s
	for name in abrmd dbus swtpm; do
		f=$1/$name.pid
		[ -s "$f" ] || continue
		pid=$(cat "$f")
		rm -f "$f"
		case "$pid" in ''|*[!0-9]*) continue ;; esac
		kill -TERM "$pid" 2>/dev/null || continue
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$pid" 2>/dev/null
	done
	return 0
}

if [ "${1:-}" = stop ] && [ $# -eq 2 ]; then
	stop "$2"
	exit 0
fi
if [ "${1:-}" != start ] || [ $# -ne 5 ]; then
	echo "usage: sh tests/tpm-token.sh start DIR LABEL PIN SOPIN | stop DIR | --lib" >&2
	exit 2
fi
label=$3 pin=$4 sopin=$5
mkdir -p "$2" && dir=$(cd "$2" && pwd) || exit 1
for t in swtpm dbus-daemon tpm2-abrmd tpm2_ptool; do
	command -v $t >/dev/null 2>&1 || { echo "tpm-token.sh: $t not installed (dist/deps.sh)" >&2; exit 1; }
done

fail() { echo "tpm-token.sh: $*" >&2; stop "$dir"; exit 1; }

# Two free consecutive ports on 127.0.0.1 (swtpm's TCTI takes the control port as N+1).
free_pair() {
	/usr/bin/python3 - <<'EOF'
import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    print(p)
    break
EOF
}

# swtpm: a fresh TPM, powered on and started (TPM2_Startup(CLEAR)) by swtpm itself.
mkdir -p "$dir/tpm" "$dir/store" || exit 1
tries=0
while :; do
	port=$(free_pair)
	[ -n "$port" ] || fail "no free port pair on 127.0.0.1"
	swtpm socket --tpm2 --tpmstate dir="$dir/tpm" \
		--server type=tcp,bindaddr=127.0.0.1,port="$port" \
		--ctrl type=tcp,bindaddr=127.0.0.1,port=$((port + 1)) \
		--flags not-need-init,startup-clear --pid file="$dir/swtpm.pid" \
		--log file="$dir/swtpm.log" --daemon 2>> "$dir/swtpm.log" && break
	tries=$((tries + 1))
	[ $tries -lt 3 ] || fail "swtpm did not start (see $dir/swtpm.log)"
done

# The session bus: its own configuration would do as well; the packaged session.conf
# with our socket address is the smallest correct one.
dbus-daemon --config-file=/usr/share/dbus-1/session.conf --address="unix:path=$dir/bus" \
	--fork --print-pid=1 > "$dir/dbus.pid" 2> "$dir/dbus.log" || fail "dbus-daemon did not start"
DBUS_SESSION_BUS_ADDRESS=unix:path=$dir/bus
export DBUS_SESSION_BUS_ADDRESS

# --allow-root: the tests run as root on CI machines; abrmd refuses root without it.
tpm2-abrmd --session --allow-root --tcti="swtpm:host=127.0.0.1,port=$port" \
	> "$dir/abrmd.log" 2>&1 &
echo $! > "$dir/abrmd.pid"

TPM2TOOLS_TCTI=tabrmd:bus_type=session
TPM2_PKCS11_TCTI=tabrmd:bus_type=session
TPM2_PKCS11_STORE=$dir/store
export TPM2TOOLS_TCTI TPM2_PKCS11_TCTI TPM2_PKCS11_STORE

# abrmd is ready when a command goes through it (it registers on the bus after start-up).
i=0
until tpm2_getrandom 4 > /dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 100 ] || fail "tpm2-abrmd did not answer within 10 s (see $dir/abrmd.log)"
	kill -0 "$(cat "$dir/abrmd.pid")" 2>/dev/null || fail "tpm2-abrmd ended (see $dir/abrmd.log)"
	sleep 0.1
done

tpm2_ptool init > "$dir/ptool.log" 2>&1 || { cat "$dir/ptool.log" >&2; fail "tpm2_ptool init"; }
tpm2_ptool addtoken --pid=1 --label="$label" --userpin="$pin" --sopin="$sopin" \
	>> "$dir/ptool.log" 2>&1 || { cat "$dir/ptool.log" >&2; fail "tpm2_ptool addtoken"; }

cat > "$dir/tpm.env" <<EOF
DBUS_SESSION_BUS_ADDRESS='$DBUS_SESSION_BUS_ADDRESS'
TPM2TOOLS_TCTI='$TPM2TOOLS_TCTI'
TPM2_PKCS11_TCTI='$TPM2_PKCS11_TCTI'
TPM2_PKCS11_STORE='$TPM2_PKCS11_STORE'
export DBUS_SESSION_BUS_ADDRESS TPM2TOOLS_TCTI TPM2_PKCS11_TCTI TPM2_PKCS11_STORE
EOF
exit 0
