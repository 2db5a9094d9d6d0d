"""The Tributary web app: Flask + Flask-SocketIO on gevent.

Importing this package imports nothing else, so that `python -m webapp` can let gevent patch
the standard library before Flask, redis-py and friends are loaded. The factory itself lives in
webapp/app.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: dict[str, Any] | None = None, settings: Any = None) -> Flask:
    """Build the app; see webapp.app.create_app."""
    from webapp.app import create_app as build

    return build(config, settings)
