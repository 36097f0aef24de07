# Sourced by the test scripts (after PY=/usr/bin/python3): ports on 127.0.0.1.

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
