# Sourced by the test scripts (after PY=/usr/bin/python3): ports on 127.0.0.1, and the
# counts a test program prints last.

# The last "N passed, N failed[, N skipped]" line of the file $1 into last, and its counts
# into p, f and s (0, 0, 0 when there is none: the caller counts a death as a failure).
tally() {
	last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
	p=$(echo "$last" | sed -n 's/^\([0-9]*\) passed, .*/\1/p')
	f=$(echo "$last" | sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p')
	s=$(echo "$last" | sed -n 's/^[0-9]* passed, [0-9]* failed, \([0-9]*\) skipped.*/\1/p')
	[ -n "$p" ] || { p=0; f=0; }
	[ -n "$s" ] || s=0
}

# A port of 127.0.0.1 that nothing listens on now.
free_port() {
	timeout 5 $PY -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 10 s for 127.0.0.1:$1 to accept a TCP connection; 0 when it did.
wait_port_on() {
	timeout 12 $PY - "$1" <<'PYEOF'
import socket, sys, time
end = time.monotonic() + 10
while time.monotonic() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PYEOF
}
