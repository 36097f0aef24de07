#!/usr/bin/python3
"""Connection limits of a running kmip2pkcs11, from outside.

    limits.py PORT CA_CERT LOG_FILE [MODE]        last line: N passed, N failed

MODE limits (the default): the daemon runs with max-connections = 4,
max-connections-per-source = 3, handshake-timeout = 1, first-request-timeout = 2 and
idle-timeout = 4 (tests/integration.sh).  Clients come from several loopback addresses
(127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to lo), so that "one source" and
"another client" are what the daemon sees.

MODE cheap: the daemon runs on tests/nullp11.c with workers = 2 (two event loops and one
slow-pool thread), NULLP11_DELAY making
C_GetSlotList take 3 s (a Query with a credential looks the token up, so it is such a
slow call) and every other function but C_Initialize 0.5 s (so that a request answered
within 200 ms made no module call), max-connections = 16, max-connections-per-source =
16, first-request-timeout = 2 and idle-timeout = 2.
"""
import socket
import ssl
import struct
import sys
import threading
import time

port, ca, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mode = sys.argv[4] if len(sys.argv) > 4 else "limits"
passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL limits: %s %s" % (name, detail))


def tls_connect(src="127.0.0.1"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw)


def try_connect(src="127.0.0.1"):
    """A TLS connection, or None when the daemon closes it before or at the handshake."""
    try:
        return tls_connect(src)
    except (OSError, ssl.SSLError):
        return None


def closed_by_peer(sock, within):
    """True when the server closes the connection within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
        return True
    except socket.timeout:
        return False


def log_text():
    with open(log, errors="replace") as f:
        return f.read()


def log_has(text):
    return text in log_text()


def log_count(text):
    return sum(1 for line in log_text().splitlines() if text in line)


# ---- KMIP requests, written out in TTLV (KMIP 1.2 section 9.1) ----------------------

def item(tag, typ, value):
    pad = (8 - len(value) % 8) % 8
    return struct.pack(">IBI", tag, typ, len(value))[1:] + value + b"\0" * pad


def st(tag, *children):
    return item(tag, 0x01, b"".join(children))


def integer(tag, v):
    return item(tag, 0x02, struct.pack(">i", v))


def enum(tag, v):
    return item(tag, 0x05, struct.pack(">I", v))


def text(tag, s):
    return item(tag, 0x07, s.encode())


def request(op, payload=(), user=None, password=None):
    """Request Message: Request Header (Protocol Version 1.2, [Authentication], Batch
    Count 1), one Batch Item (Operation, Request Payload)."""
    header = [st(0x420069, integer(0x42006A, 1), integer(0x42006B, 2))]
    if user is not None:
        header.append(st(0x42000C, st(0x420023, enum(0x420024, 1),
                                      st(0x420025, text(0x420099, user),
                                         text(0x4200A1, password)))))
    header.append(integer(0x42000D, 1))
    return st(0x420078, st(0x420077, *header),
              st(0x42000F, enum(0x42005C, op), st(0x420079, *payload)))


DISCOVER_VERSIONS = request(0x1E)
QUERY_OPERATIONS = request(0x18, [enum(0x420074, 1)])
RESULT_SUCCESS = enum(0x42007F, 0)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += part
    return buf


def read_response(sock):
    head = read_exact(sock, 8)
    return head + read_exact(sock, struct.unpack(">I", head[4:])[0])


def call(sock, req, within=5):
    """The response to req (bytes), or None when the connection fails."""
    sock.settimeout(within)
    try:
        sock.sendall(req)
        return read_response(sock)
    except (OSError, ssl.SSLError, ConnectionError):
        return None


def succeeds(sock, req=DISCOVER_VERSIONS):
    r = call(sock, req)
    return r is not None and RESULT_SUCCESS in r


# ---- mode limits ----------------------------------------------------------------------

def mode_limits():
    time.sleep(0.3)     # integration.sh's port probe has gone

    # max-connections-per-source = 3: three connections from one address, each sends a
    # request (so that none is closed to make room below); a fourth is closed at once.
    a = [try_connect("127.0.0.2") for _ in range(3)]
    check(all(s is not None for s in a), "three connections from one source")
    check(all(s is not None and succeeds(s) for s in a),
          "each answers a request (Discover Versions)")
    t0 = time.monotonic()
    s = try_connect("127.0.0.2")
    check(s is None or closed_by_peer(s, 2), "a fourth from that source is closed")
    check(time.monotonic() - t0 < 1.5, "... at once", time.monotonic() - t0)
    # ... and refusals from that address are logged at most once a second.
    for _ in range(4):
        s = try_connect("127.0.0.2")
        check(s is None or closed_by_peer(s, 2), "more from that source are closed too")
    time.sleep(0.2)
    refusal = "127.0.0.2:"
    lines = [l for l in log_text().splitlines()
             if refusal in l and "max-connections-per-source (3) reached" in l]
    check(len(lines) == 1, "five refusals within a second: one log line", lines)
    time.sleep(1.0)
    s = try_connect("127.0.0.2")
    check(s is None or closed_by_peer(s, 2), "a refusal a second later is closed")
    time.sleep(0.2)
    lines = [l for l in log_text().splitlines()
             if refusal in l and "max-connections-per-source (3) reached" in l]
    check(len(lines) == 2 and "and 4 more from there not logged" in lines[-1],
          "a second later: one more line, counting the four left out", lines)
    # One source holds 3 of the 4 places: another client is served.
    b = try_connect("127.0.0.3")
    check(b is not None and succeeds(b), "another source is served beside it")

    # Table full of connections that have all sent a request: a newcomer is refused.
    s = try_connect("127.0.0.4")
    check(s is None or closed_by_peer(s, 2), "table full, every connection busy: refused")
    time.sleep(0.2)
    check(log_has("max-connections (4) reached and every connection has sent a request"),
          "that refusal is logged")
    for s in a + [b]:
        if s:
            s.close()
    time.sleep(0.3)

    # Table full of idle connections that never sent a request (one source at its
    # per-source limit, another one): a client still gets in, and the oldest idler goes.
    idle = [try_connect("127.0.0.5") for _ in range(3)] + [try_connect("127.0.0.6")]
    check(all(s is not None for s in idle), "four idle connections fill the table")
    if not all(idle):
        return
    time.sleep(0.1)
    c = try_connect("127.0.0.7")
    check(c is not None and succeeds(c), "table full of idle connections: a newcomer is served")
    check(closed_by_peer(idle[0], 1), "... and the oldest idle connection was closed for it")
    check(not closed_by_peer(idle[1], 0.2), "... only that one")
    d = try_connect("127.0.0.8")
    check(d is not None and succeeds(d), "and the next newcomer too")
    check(closed_by_peer(idle[1], 1), "... closing the next oldest idle connection")
    time.sleep(0.2)
    check(log_has("127.0.0.5:") and log_has("closed to make room for 127.0.0.7:"),
          "closing to make room is logged")
    for s in idle + [c, d]:
        if s:
            s.close()
    time.sleep(0.3)

    # first-request-timeout = 2, idle-timeout = 4: a connection that never sends a request
    # is closed after about 2 s; one that has sent a request stays for about 4 s.
    quiet = tls_connect("127.0.0.9")
    busy = tls_connect("127.0.0.9")
    check(succeeds(busy), "a request on the second connection")
    t0 = time.monotonic()
    check(closed_by_peer(quiet, 3.5), "a connection without a request is closed")
    t = time.monotonic() - t0
    check(1.5 <= t < 3.0, "... after about first-request-timeout (2 s)", t)
    check(not closed_by_peer(busy, 3.0 - t), "one that sent a request stays open past it")
    check(closed_by_peer(busy, 3.0), "... and is closed after idle-timeout (4 s)")
    t = time.monotonic() - t0
    check(3.3 <= t < 5.5, "... not before it", t)
    time.sleep(0.2)
    check(log_has("first-request time-out"), "the first-request time-out is logged")
    check(log_has("idle time-out"), "the idle time-out is logged")
    quiet.close()
    busy.close()

    # handshake-timeout = 1: a TCP connection that never starts TLS is closed.
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    check(closed_by_peer(raw, 4.0), "a connection without a handshake is closed")
    check(time.monotonic() - t0 < 3.5, "... within about handshake-timeout",
          time.monotonic() - t0)
    raw.close()
    time.sleep(0.2)
    check(log_has("handshake time-out"), "the handshake time-out is logged")

    # After all of this the daemon still serves.
    s = try_connect()
    check(s is not None and s.version() == "TLSv1.3" and succeeds(s),
          "a new connection is served afterwards")
    if s:
        s.close()


# ---- mode cheap -----------------------------------------------------------------------

def slow_query(results, i):
    """A Query that needs the module: credential plus Query Server Information."""
    t0 = time.monotonic()
    s = try_connect()
    r = call(s, request(0x18, [enum(0x420074, 3)], "null", "1234"), 15) if s else None
    results[i] = (r is not None and RESULT_SUCCESS in r, time.monotonic() - t0)
    if s:
        s.close()


def mode_cheap():
    time.sleep(0.3)
    s = try_connect()
    check(s is not None and succeeds(s), "a Discover Versions before the test")
    # Both slow Queries in the slow pool (one running a 3 s module call, one queued) ...
    slow = [None, None]
    threads = [threading.Thread(target=slow_query, args=(slow, i)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # ... a Query without a credential and a Discover Versions are answered at once.
    worst = 0.0
    ok = s is not None
    for req in (QUERY_OPERATIONS, DISCOVER_VERSIONS, QUERY_OPERATIONS):
        t0 = time.monotonic()
        ok = ok and succeeds(s, req)
        worst = max(worst, time.monotonic() - t0)
    busy = any(t.is_alive() for t in threads)
    print("NOTE cheap: Query / Discover Versions while the slow pool is in a 3 s call: "
          "slowest %.1f ms" % (worst * 1000))
    check(ok, "Query and Discover Versions succeed while the slow pool is busy")
    check(busy, "... and the slow calls were still running")
    check(worst < 0.2, "... each answered within 200 ms", "%.3f s" % worst)
    for t in threads:
        t.join()
    check(all(r and r[0] for r in slow), "the slow Queries succeed", slow)
    check(all(r and r[1] >= 2.5 for r in slow), "... after the module's delay", slow)
    if s:
        s.close()

    # A connection that waits for a job (all 8 taken) gets its own time when it gets one.
    # 8 holders connect; then W; then each holder makes a request (so that its idle-timeout,
    # 2 s, starts after W's first-request-timeout, 2 s) and sends a header and part of a
    # body, taking every job; W sends its header and waits.  The holders are closed at
    # their time-out, after W's own deadline has passed: W must still have time to send
    # its body.  (Handshakes come first: they may be slow, and must not eat W's time.)
    holders = [tls_connect() for _ in range(8)]
    w = tls_connect()
    tw = time.monotonic()
    time.sleep(0.2)
    req = DISCOVER_VERSIONS
    check(all(succeeds(h) for h in holders), "eight connections make a request")
    for h in holders:
        h.sendall(req[:16])
    time.sleep(0.1)
    w.sendall(req[:8])
    check(time.monotonic() - tw < 1.5, "W waits for a job well within its time-out",
          time.monotonic() - tw)
    gone = closed_by_peer(holders[0], 4)
    check(gone, "connections stuck inside a request are closed at their time-out")
    check(time.monotonic() - tw > 2.0, "... after W's own deadline", time.monotonic() - tw)
    time.sleep(0.3)
    r = call(w, req[8:], 3)
    check(r is not None and RESULT_SUCCESS in r,
          "a connection that waited for a job is served when it gets one")
    for h in holders:
        h.close()
    w.close()

    # A loop inside a module call that hangs gets no new connection.  A's Get with a
    # credential holds its loop in the module (its loop has not looked the token up yet:
    # C_GetSlotList, 3 s); C, opened right after A, is on the other loop; B connects while
    # A waits, and is served at once by C's loop, not after A's call.
    time.sleep(0.5)
    a, c = try_connect(), try_connect()
    held = threading.Thread(target=call, args=(a, request(0x0A, [text(0x420094, "00_priv")],
                                                          "null", "1234"), 15))
    held.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    b = try_connect()
    ok = b is not None and succeeds(b)
    dt = time.monotonic() - t0
    busy = held.is_alive()
    check(ok and busy and dt < 1.0, "a connection made while one loop sits in a 3 s module "
          "call is served by another loop at once", "%.3f s, call still running: %s" % (dt, busy))
    held.join()
    for x in (a, b, c):
        if x:
            x.close()


if mode == "cheap":
    mode_cheap()
else:
    mode_limits()
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
