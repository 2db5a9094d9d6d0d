"""Reading a JSON request body, with a refusal that says what was wrong with it.

A body must be JSON in UTF-8 (RFC 8259), sent as `application/json`. Each way it can fail has
its own answer: not JSON at all, JSON that is not UTF-8 (UTF-16 and UTF-32 among it: some
parsers guess the encoding, Tributary does not), invalid JSON (with where), or nesting deeper
than the parser's limit. Each is a ValidationError on `body`, a 400 from the error handler.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import request

from engine.errors import ValidationError

#: Nesting levels a body may have (orjson's limit; far beyond any message).
MAX_DEPTH = 1024

_BYTE_ORDER_MARKS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def json_body() -> Any:
    """The request's body, parsed; ValidationError("body", why) when it cannot be."""
    if not request.is_json:
        raise ValidationError("body", "must be JSON, sent with Content-Type: application/json")
    data = request.get_data(cache=True)
    if not data:
        raise ValidationError("body", "is empty; send a JSON document")
    if data.startswith(_BYTE_ORDER_MARKS) or b"\x00" in data[:4]:
        raise ValidationError("body", "must be encoded in UTF-8 (this looks like UTF-16 or "
                              "UTF-32, or starts with a byte-order mark)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("body", f"is not valid UTF-8 (at byte {exc.start})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise ValidationError("body", f"is nested too deeply (more than {MAX_DEPTH} "
                                  "levels)") from None
    try:  # the standard parser takes what orjson does not: NaN and Infinity, which validation
        return json.loads(text)  # refuses by field ("value: must be a finite number")
    except json.JSONDecodeError as exc:
        raise ValidationError("body", f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValidationError("body", f"is nested too deeply (more than {MAX_DEPTH} "
                              "levels)") from None
