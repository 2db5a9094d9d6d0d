"""`python -m tests.gc_web`: a web process that reports the cyclic garbage it made.

On SIGUSR1 it runs a full collection with `gc.DEBUG_SAVEALL` and prints one line,
`garbage <n> <json: the commonest types among them>`, where n is what `gc.collect()` found
unreachable since the previous collection; the objects are then freed. A test connects and
disconnects clients between two signals to see how much garbage a connection leaves that only
the collector can free (set in test-only code; the web process as shipped has no such hook).
"""

from gevent import monkey

monkey.patch_all()

import collections  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from webapp.server import main  # noqa: E402

#: What the process prints for each report; the tests read it.
REPORT = "garbage"


def report() -> None:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = collections.Counter(type(thing).__qualname__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    print(f"{REPORT} {found} {json.dumps(dict(kinds.most_common(12)))}", flush=True)


if __name__ == "__main__":
    gevent.signal_handler(signal.SIGUSR1, lambda: gevent.spawn(report))
    sys.exit(main())
