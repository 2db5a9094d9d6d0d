"""A web process whose flushes give every user an ingest.lua call of its own, as before a call
carried up to `engine.streams.USERS_PER_APPEND` users: the baseline of `python -m bench
packing` (bench/variants.py). Otherwise exactly what `python -m webapp` serves."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from engine import streams  # noqa: E402

streams.USERS_PER_APPEND = 1

if __name__ == "__main__":
    from webapp.server import main

    sys.exit(main())
