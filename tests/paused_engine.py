"""`python -m tests.paused_engine SECONDS`: an engine that pauses SECONDS between each commit and
its XACK, and says so on its output, so that a test can stop, freeze or kill it at that point.

The pause is an after-commit hook (engine.sweeper.AfterCommit) set here, in test-only code;
the engine as shipped has no such setting.
"""

from __future__ import annotations

import sys
import time

from engine.logs import setup_logging
from engine.settings import Settings
from engine.sweeper import AfterCommit, Sweeper

#: What the engine prints when it pauses; the tests wait for it.
PAUSED = "paused after commit"


def pause_after_commit(seconds: float) -> AfterCommit:
    def pause(engine: Sweeper, handled: int) -> None:
        print(f"engine {engine.name}: {PAUSED} ({handled} entries)", file=sys.stderr, flush=True)
        time.sleep(seconds)

    return pause


def main() -> int:
    seconds = float(sys.argv[1])
    settings = Settings.load()
    setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    return Sweeper(settings, after_commit=[pause_after_commit(seconds)]).run()


if __name__ == "__main__":
    sys.exit(main())
