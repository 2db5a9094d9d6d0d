"""The error hierarchy: every error Tributary raises on purpose is a TributaryError, grouped by
concept; outages of Redis and of the database share one parent; the cold-stop exception is a
BaseException, so that a second stop signal is never swallowed by an `except Exception`."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from collections.abc import Iterator

import pytest

from engine import errors
from engine.errors import (
    AuthError,
    RedisUnavailable,
    StopRequested,
    StopTimedOut,
    StorageUnavailable,
    TributaryError,
    Unavailable,
    UsernameTaken,
)
from engine.settings import Settings
from engine.sweeper import Sweeper
from tests.conftest import TEST_DATABASE_URL, TEST_JWT_SECRET


def test_every_error_but_the_cold_stop_is_a_tributary_error():
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, BaseException) and cls.__module__ == errors.__name__]

    strays = [cls.__name__ for cls in classes
              if not issubclass(cls, TributaryError) and not issubclass(cls, StopRequested)]

    assert strays == []
    assert {AuthError, UsernameTaken, Unavailable} <= set(classes)
    assert all(cls.__doc__ for cls in classes), "each error says what it means in one line"


def test_redis_and_database_outages_share_one_unavailable_parent():
    assert issubclass(RedisUnavailable, Unavailable)
    assert issubclass(StorageUnavailable, Unavailable)
    assert issubclass(Unavailable, TributaryError)
    with pytest.raises(Unavailable):
        raise StorageUnavailable("database gone")


def test_refused_tokens_and_taken_usernames_are_tributary_errors():
    assert issubclass(AuthError, TributaryError)
    assert issubclass(UsernameTaken, TributaryError)


def test_the_cold_stop_is_not_an_exception_that_except_exception_could_swallow():
    assert issubclass(StopRequested, BaseException)
    assert not issubclass(StopRequested, Exception)
    assert issubclass(StopTimedOut, StopRequested)
    assert not issubclass(StopRequested, TributaryError)


@pytest.fixture
def sweeper(mysql_backend) -> Iterator[Sweeper]:
    """An engine in this process with its signal handlers installed; they are put back after."""
    settings = Settings.load(environ={"REDIS_URL": mysql_backend.redis_url,
                                      "DATABASE_URL": TEST_DATABASE_URL,
                                      "JWT_SECRET_KEY": TEST_JWT_SECRET,
                                      "STOP_TIMEOUT": "60"}, env_file=None)
    saved = {signum: signal.getsignal(signum)
             for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    engine = Sweeper(settings)
    engine.install_signal_handlers()
    try:
        yield engine
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        engine.storage.close()
        engine.redis.close()


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_stop_signal_gets_through_a_catch_all_except_exception(sweeper, second):
    os.kill(os.getpid(), signal.SIGTERM)  # the first: a warm stop, only a flag
    assert sweeper.stop_requested

    with pytest.raises(StopRequested) as stopped, contextlib.suppress(Exception):
        os.kill(os.getpid(), second)  # its handler runs here, inside a catch-all

    assert stopped.value.args == (signal.Signals(second).name,)
