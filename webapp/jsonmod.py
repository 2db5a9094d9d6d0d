"""JSON in the web app: the module socket.io encodes and decodes packets with (orjson behind the
stdlib names), and the provider Flask parses request bodies with.

python-socketio calls `dumps(data, separators=...)` and `loads(text)`; orjson ignores the
formatting arguments (its output is already compact). Numbers orjson cannot represent (integers
beyond 64 bits) fall back to the standard library, so a client sending one gets a validation
error rather than a dropped packet. JSON nested deeper than orjson goes (1,024 levels) raises
`NestedTooDeeply`, a ValueError that says so, rather than a RecursionError from the fallback.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

from engine.errors import NestedTooDeeply


def dumps(obj: Any, **_kwargs: Any) -> str:
    return dumpb(obj).decode()


def dumpb(obj: Any) -> bytes:
    """`obj` as compact JSON in UTF-8 bytes, ready to be written out."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def loads(text: str | bytes, **_kwargs: Any) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise NestedTooDeeply("JSON nested too deeply") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise NestedTooDeeply("JSON nested too deeply") from None


class FlaskJSON(DefaultJSONProvider):
    """Flask's JSON, keeping keys in the order they were built, and reporting a body nested too
    deeply to parse as invalid JSON (a ValueError, which `get_json(silent=True)` turns into
    None) rather than letting RecursionError through as a server error."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise NestedTooDeeply("JSON nested too deeply") from None
