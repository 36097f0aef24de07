"""What the PyKMIP tests (pykmip_lifecycle.py, pykmip_register.py) share: the command
line, counted checks, client calls that must fail, and the closing line
"N passed, N failed[, N skipped]"."""
import argparse
import ssl
import sys

from kmip.pie import exceptions as pie_exc


def run(name, main):
    """Runs main() and exits with its status; Debian's PyKMIP 0.10 needs ssl.wrap_socket,
    which Python 3.12 removed: another interpreter is one failure, said so."""
    if not hasattr(ssl, "wrap_socket"):
        print("FAIL %s: this Python has no ssl.wrap_socket; run with Debian's /usr/bin/python3"
              % name)
        print("0 passed, 1 failed")
        sys.exit(1)
    sys.exit(main())


def arg_parser():
    """The options both scripts take: where the daemon is, its CA, the credential."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--pin", required=True)
    ap.add_argument("--config", default=None, help="PyKMIP config file (an empty one)")
    return ap


class Tally:
    """Counts checks; each failed one prints a FAIL line prefixed with the test's name."""

    def __init__(self, name):
        self.name = name
        self.passed = self.failed = self.skipped = 0

    def check(self, cond, name, detail=""):
        """One check: counts it and prints a FAIL line when cond is false."""
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s: %s%s" % (self.name, name,
                                     (" (" + str(detail) + ")") if detail else ""))
        return cond

    def attempt(self, name, fn, *args, **kwargs):
        """Runs fn; an exception is one failed check named name, and returns None."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure of the client is a finding
            self.check(False, name, "%s: %s" % (type(e).__name__, e))
            return None

    def skip(self, what):
        """A check that could not be made here: counted as skipped, never as passed."""
        self.skipped += 1
        print("SKIP %s: %s" % (self.name, what))

    def summary(self):
        """The closing line; the exit status: 1 when a check failed."""
        print("%d passed, %d failed%s" % (self.passed, self.failed,
                                          ", %d skipped" % self.skipped if self.skipped else ""))
        return 1 if self.failed else 0


def failure(fn, *args, **kwargs):
    """Runs fn, which must fail with KmipOperationFailure: (Result Reason, message), or a
    text naming what happened instead ("no error", or the exception)."""
    try:
        fn(*args, **kwargs)
    except pie_exc.KmipOperationFailure as e:
        return e.reason, str(e)
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e), ""
    return "no error", ""
