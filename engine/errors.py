"""Tributary's exceptions: one base class, one subclass per thing that can go wrong, grouped by
concept (configuration, bad input, a dependency unavailable, refused data, access, protocol).
The cold-stop exception alone stands outside it, as a BaseException."""

from __future__ import annotations


class TributaryError(Exception):
    """Base class for every error Tributary raises on purpose."""


class ConfigError(TributaryError):
    """A setting is missing or has a value Tributary cannot use."""


class StartupCheckError(TributaryError):
    """A dependency is reachable but not fit to run on (Redis eviction policy, schema version)."""


class ValidationError(TributaryError):
    """A client message is malformed; the text names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Unavailable(TributaryError):
    """A service Tributary depends on is down or did not answer in time; retry later."""


class RedisUnavailable(Unavailable):
    """Redis could not be reached or did not answer in time; a write that timed out may still
    have happened, so a client resends with the same msg_id (one row per user_id, msg_id)."""


class StorageUnavailable(Unavailable):
    """The database could not be reached, timed out or refused writes; retry later."""


class AuthError(TributaryError):
    """A token was refused; the text is what the client is told."""


class UsernameTaken(TributaryError):
    """Another account already has this username."""


class RowRejected(TributaryError):
    """The database refused a row for a data reason; retrying the same row will fail again."""


class StopRequested(BaseException):
    """A second stop signal asked the engine to exit at once, abandoning the batch in hand.

    A BaseException, outside TributaryError like KeyboardInterrupt, so that no `except
    Exception` (ours or a library's) can swallow it."""


class StopTimedOut(StopRequested):
    """A warm stop outlasted STOP_TIMEOUT; the engine exits at once, as on a second signal."""


class MalformedPacket(TributaryError):
    """A client sent what its protocol does not allow at that point (a packet that does not
    decode, one only servers send, an event without a name or before joining); the text says
    what, and the client is disconnected."""


class NestedTooDeeply(TributaryError, ValueError):
    """JSON nested deeper than the parser goes; refused like any other invalid input."""


class ClientTooSlow(TributaryError, TimeoutError):
    """A client did not send its request line and headers, or its body, within the time
    allowed (HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT)."""
