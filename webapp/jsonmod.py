"""The JSON module socket.io encodes and decodes packets with: orjson behind the stdlib names.

python-socketio calls `dumps(data, separators=...)` and `loads(text)`; orjson ignores the
formatting arguments (its output is already compact). Numbers orjson cannot represent (integers
beyond 64 bits) fall back to the standard library, so a client sending one gets a validation
error rather than a dropped packet.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any, **_kwargs: Any) -> str:
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"))


def loads(text: str | bytes, **_kwargs: Any) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
