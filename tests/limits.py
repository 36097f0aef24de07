#!/usr/bin/python3
"""Connection limits of a running kmip2pkcs11, from outside: max-connections, the
handshake time-out and the idle time-out.  The daemon under test runs with
max-connections = 3, handshake-timeout = 1 and idle-timeout = 2 (tests/integration.sh).

    limits.py PORT CA_CERT LOG_FILE        last line: N passed, N failed
"""
import socket
import ssl
import sys
import time

port, ca, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL limits: %s %s" % (name, detail))


def tls_connect():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw)


def closed_by_peer(sock, within):
    """True when the server closes the connection within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
        return True
    except socket.timeout:
        return False


def log_has(text):
    with open(log, errors="replace") as f:
        return text in f.read()


# max-connections = 3: three handshakes complete, a fourth connection is closed at once.
held, why = [], ""
try:
    for _ in range(3):
        held.append(tls_connect())
except OSError as e:
    why = e
check(len(held) == 3, "three connections up to max-connections", why)
try:
    fourth = tls_connect()
    refused = closed_by_peer(fourth, 2)
except OSError:
    refused = True          # closed during the handshake
check(refused, "a fourth connection is closed")
time.sleep(0.2)
check(log_has("max-connections (3) reached"), "the refusal is logged")

# idle-timeout = 2: an idle connection is closed after about two seconds, not before.
t0 = time.monotonic()
check(not closed_by_peer(held[0], 1.0), "an idle connection stays open within idle-timeout")
check(closed_by_peer(held[0], 4.0), "an idle connection is closed after idle-timeout")
check(time.monotonic() - t0 >= 1.5, "... not before it", time.monotonic() - t0)
for s in held:
    s.close()
time.sleep(0.2)
check(log_has("idle time-out"), "the idle time-out is logged")

# handshake-timeout = 1: a TCP connection that never starts TLS is closed.
raw = socket.create_connection(("127.0.0.1", port), timeout=5)
t0 = time.monotonic()
check(closed_by_peer(raw, 4.0), "a connection without a handshake is closed")
check(time.monotonic() - t0 < 3.5, "... within about handshake-timeout", time.monotonic() - t0)
raw.close()
time.sleep(0.2)
check(log_has("handshake time-out"), "the handshake time-out is logged")

# After all of this the daemon still serves.
try:
    s = tls_connect()
    check(s.version() == "TLSv1.3", "a new connection is served afterwards")
    s.close()
except OSError as e:
    check(False, "a new connection is served afterwards", e)

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
