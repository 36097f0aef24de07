#!/usr/bin/python3
# The daemon's log as an operator reads it (README "Logs"), checked against a log file that
# tests/integration.sh made: a daemon at --log-level trace served e2e's keep, sign and auth
# modes for the token USER with the PIN PIN, and was sent SIGUSR1 after keep and again at
# the end, each time once every connection had closed.
#
#   tests/log_lines.py LOGFILE USER PIN
#
# Checks: the fields of every request line; a Create Key Pair, a Sign and a wrong PIN each
# have theirs; authentication failures at warning with peer and username; connection
# numbers shared by the connect, request and close lines; the counters lines agree with
# the request lines before them; the PIN never appears, and the trace dump masks the
# Password.  Ends with "N passed, N failed".
import collections
import math
import re
import sys

path, user, pin = sys.argv[1], sys.argv[2], sys.argv[3]
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL log-lines: " + what)


with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
lines = text.splitlines()

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
REQUEST = re.compile(STAMP + r" \[info\] request conn=(\d+) peer=(127\.0\.0\.1:\d+) user=(\S+) "
                     r"op=([A-Z_,+0-9x]+) uid=(\S+) result=([A-Z_,]+) usec=(\d+)$")
CONNECT = re.compile(STAMP + r" \[info\] connect conn=(\d+) peer=(\S+)$")
CLOSE = re.compile(STAMP + r" \[info\] close conn=(\d+) peer=(\S+) requests=(\d+)$")
AUTH = re.compile(STAMP + r" \[warning\] auth-fail conn=(\d+) peer=(127\.0\.0\.1:\d+) "
                  r"user=(\S+) result=([A-Z_]+) why=\"([^\"]*)\"$")
COUNTERS = re.compile(STAMP + r" \[info\] counters (.*)$")

# ---- the request lines ----

requests, auths, counters = [], [], []
connects, closes = {}, {}
for i, l in enumerate(lines):
    if " request conn=" in l:
        m = REQUEST.match(l)
        check(m is not None, "request line has every field in order: " + l)
        if m:
            requests.append((i, m))
    elif m := CONNECT.match(l):
        connects[m.group(1)] = (i, m.group(2))
    elif m := CLOSE.match(l):
        closes[m.group(1)] = (i, m.group(2), int(m.group(3)))
    elif m := AUTH.match(l):
        auths.append((i, m))
    elif m := COUNTERS.match(l):
        counters.append((i, dict(kv.split("=", 1) for kv in m.group(1).split())))

check(len(requests) > 30, "request lines logged (%d)" % len(requests))
UID = re.compile(r"^[0-9A-F]{40}_priv$")
created = [m for _, m in requests if m.group(4) == "CREATE_KEY_PAIR" and m.group(6) == "SUCCESS"]
check(len(created) >= 3, "Create Key Pair: request lines with result=SUCCESS (%d)" % len(created))
check(all(m.group(3) == user for m in created), "Create Key Pair: user=%s" % user)
check(all(UID.match(m.group(5)) for m in created),
      "Create Key Pair: uid= is the new private key's UID (HEX_priv)")
new_uids = {m.group(5) for m in created}
signs = [m for _, m in requests if m.group(4) == "SIGN" and m.group(6) == "SUCCESS"]
check(len(signs) > 0, "Sign: request lines with result=SUCCESS")
check(all(m.group(5) in new_uids for m in signs), "Sign: uid= is a key Create Key Pair made")
check(all(m.group(3) == user for m in signs), "Sign: user=%s" % user)
wrong = [m for _, m in requests if m.group(6) == "AUTHENTICATION_NOT_SUCCESSFUL"]
check(any(m.group(3) == user for m in wrong),
      "wrong PIN: request line with user=%s result=AUTHENTICATION_NOT_SUCCESSFUL" % user)
check(any(m.group(3) == "no-such-token" for m in wrong),
      "unknown username: request line names it (user=no-such-token)")
check(any(m.group(3) == "-" for m in wrong), "no credential: user=-")
check(all(int(m.group(7)) > 0 for _, m in requests), "usec= is positive")

# ---- authentication failures at warning ----

check(len(auths) == len(wrong), "one warning per failed authentication (%d warnings, %d "
      "request lines)" % (len(auths), len(wrong)))
check(any(m.group(3) == user and "CKR_PIN_INCORRECT" in m.group(5) for _, m in auths),
      "wrong PIN: warning with user=%s and the module's reason" % user)
# Request lines come from one thread, each right after its warning: the next one is its own.
req_idx = [i for i, _ in requests]
req_at = dict(requests)
paired = True
for i, m in auths:
    nxt = next((j for j in req_idx if j > i), None)
    paired = paired and nxt is not None and req_at[nxt].group(1) == m.group(1) and \
        req_at[nxt].group(3) == m.group(3)
check(paired, "each warning is followed by its request line (same conn= and user=)")

# ---- connection numbers ----

per_conn = collections.Counter(m.group(1) for _, m in requests)
check(all(m.group(1) in connects and connects[m.group(1)][0] < i and
          connects[m.group(1)][1] == m.group(2) for i, m in requests), "every request line's conn= has an earlier connect line, "
      "same peer")
check(all(c in closes and closes[c][2] == n for c, n in per_conn.items()),
      "every connection that served requests has a close line counting them")
check(len(set(connects)) == len(connects) and
      sorted(int(c) for c in connects) == list(range(1, len(connects) + 1)),
      "connection numbers count up from 1")

# ---- counters (SIGUSR1) against the request lines before them ----

check(len(counters) == 2, "two counters lines, one per SIGUSR1 (%d)" % len(counters))
for n, (at, c) in enumerate(counters):
    name = "counters #%d: " % (n + 1)
    before = [m for i, m in requests if i < at]
    ops = collections.Counter(o for m in before for o in m.group(4).split(","))
    fails = collections.Counter(r for m in before for r in m.group(6).split(",")
                                if r != "SUCCESS")

    def parse(s):
        return {} if s == "-" else {k: int(v) for k, v in (x.split(":") for x in s.split(","))}

    for key in ("uptime_s", "conn_open", "conn_total", "conn_refused", "requests", "ops",
                "fails", "p11_calls", "p11_usec", "p50_usec", "p99_usec"):
        check(key in c, name + key + "= is there")
    if not all(k in c for k in ("ops", "fails", "requests", "p50_usec", "p99_usec")):
        continue
    check(parse(c["ops"]) == dict(ops), name + "ops=%s agrees with the request lines %s" %
          (c["ops"], dict(ops)))
    check(parse(c["fails"]) == dict(fails), name + "fails=%s agrees with the request lines %s"
          % (c["fails"], dict(fails)))
    check(int(c["requests"]) == len(before), name + "requests=%s, %d request lines" %
          (c["requests"], len(before)))
    nconn = sum(1 for i, _ in connects.values() if i < at)
    nclosed = sum(1 for v in closes.values() if v[0] < at)
    check(int(c.get("conn_total", -1)) == nconn, name + "conn_total=%s, %d connect lines" %
          (c.get("conn_total"), nconn))
    check(int(c.get("conn_open", -1)) == nconn - nclosed, name + "conn_open=%s, %d open" %
          (c.get("conn_open"), nconn - nclosed))
    check(c.get("conn_refused") == "0", name + "conn_refused=0")
    check(int(c.get("p11_calls", 0)) > 0 and int(c.get("p11_usec", 0)) > 0,
          name + "PKCS#11 calls and time counted")
    lat = sorted(int(m.group(7)) for m in before)
    for q, key in ((0.5, "p50_usec"), (0.99, "p99_usec")):
        v = lat[max(1, math.ceil(q * len(lat))) - 1]   # nearest rank
        got = int(c[key])
        check(v <= got <= v * 1.25 + 1, name + "%s=%d within 25 %% above the request lines' "
              "%d" % (key, got, v))
if counters:
    c = counters[0][1]
    check(c.get("ops") == "CREATE_KEY_PAIR:2,ACTIVATE:2" and c.get("requests") == "4" and
          c.get("fails") == "-", "counters #1 after e2e keep: 2 Create Key Pair, 2 Activate, "
          "no failure (%s)" % " ".join("%s=%s" % kv for kv in c.items()))

# ---- secrets ----

check(pin not in text, "the PIN never appears in the log")
check(pin[:-1] not in text, "no PIN with a digit less appears either")
check(re.search(r"PASSWORD \(4200A1\) TextString len=\* = '\*\*\*'", text) is not None,
      "the trace dump of a request shows the Password as '***', its length as len=*")
check(re.search(r"AUTHENTICATION \(42000C\) Structure len=\*\n.*\n.*\n.*\n.*\n *PASSWORD", text)
      is not None and
      re.search(r"AUTHENTICATION \(42000C\) Structure len=\d+\n.*\n.*\n.*\n.*\n *PASSWORD", text)
      is None,
      "nor do the lengths of the structures holding the Password (they tell the PIN's)")
check(re.search(r"\[debug\] conn=\d+ response:\nRESPONSE_MESSAGE", text) is not None,
      "at debug the response is logged too, with its conn=")

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
