"""Password hashing off the event loop.

Hashing or verifying a password (werkzeug's scrypt) takes about 70 ms of a core. Done in the
gevent event loop that serves every connection of the process, a burst of logins would stall
every client's acks for as long. Here it runs in a small pool of real threads (hashlib releases
the GIL while it hashes), so the event loop goes on meanwhile; a login waits for its turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gevent.threadpool import ThreadPool
from werkzeug.security import check_password_hash, generate_password_hash

T = TypeVar("T")

_pool: ThreadPool | None = None


def configure(threads: int) -> None:
    """Hash in `threads` threads from now on (the web process calls this at start-up)."""
    global _pool
    if _pool is not None:
        _pool.kill()
    _pool = ThreadPool(threads)


def _run(function: Callable[..., T], *args: object) -> T:
    if _pool is None:  # a command-line tool: no connections to keep serving
        return function(*args)
    return _pool.apply(function, args)  # type: ignore[no-any-return]


def hash_password(password: str) -> str:
    return _run(generate_password_hash, password)


def verify_password(password_hash: str, password: str) -> bool:
    return _run(check_password_hash, password_hash, password)
