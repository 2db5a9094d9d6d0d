"""Login floods: throttled per address and per username before any password is hashed, and
the hashes that are computed run off the event loop, so connected clients keep their acks."""

from __future__ import annotations

import gevent
import requests
from werkzeug.security import check_password_hash, generate_password_hash

from tests.conftest import wait_until
from webapp import passwords

GOOD = "password-for-tests"


def login(web, username: str, password: str, address: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return requests.post(f"{web.url}/api/auth/login", timeout=30, headers=headers,
                         json={"username": username, "password": password})


def assert_throttled(answer: requests.Response) -> None:
    assert answer.status_code == 429, answer.text
    wait = int(answer.headers["Retry-After"])
    assert wait >= 1
    assert answer.json() == {"error": f"too many attempts; retry in {wait} s",
                             "retry_after": wait}


def test_attempts_from_one_address_are_throttled_before_the_password_is_checked(
        mysql_backend, start_web):
    web = start_web(mysql_backend, LOGIN_ADDRESS_LIMIT=5, LOGIN_ADDRESS_WINDOW=600)
    web.token("alice")
    for _ in range(5):
        assert login(web, "alice", "wrong password").status_code == 401
    # The sixth attempt is refused before the password is even looked at: the right one too.
    assert_throttled(login(web, "alice", GOOD))
    assert_throttled(requests.post(f"{web.url}/api/auth/register", timeout=10,
                                   json={"username": "newcomer", "password": GOOD}))


def test_failed_logins_of_one_username_are_throttled_whatever_the_address(
        mysql_backend, start_web):
    web = start_web(mysql_backend, TRUSTED_PROXY_HOPS=1, LOGIN_USERNAME_LIMIT=3,
                    LOGIN_USERNAME_WINDOW=600)
    web.token("alice")
    web.token("bob")
    for n in range(3):
        assert login(web, "alice", "wrong password", f"203.0.113.{n}").status_code == 401
    assert_throttled(login(web, "alice", GOOD, "198.51.100.7"))
    # Other accounts, and successful logins, are not affected.
    assert login(web, "bob", GOOD, "198.51.100.7").status_code == 200
    assert login(web, "bob", GOOD, "198.51.100.7").status_code == 200


def test_the_address_is_the_peer_unless_proxies_are_trusted(mysql_backend, start_web):
    web = start_web(mysql_backend, LOGIN_ADDRESS_LIMIT=2, LOGIN_ADDRESS_WINDOW=600)
    web.token("alice")
    for n in range(2):
        assert login(web, "alice", "wrong", f"203.0.113.{n}").status_code == 401
    # A forged X-Forwarded-For does not buy a fresh bucket when no proxy is trusted.
    assert_throttled(login(web, "alice", "wrong", "203.0.113.99"))


def test_the_throttle_lets_logins_through_again_once_it_refills(mysql_backend, start_web):
    web = start_web(mysql_backend, LOGIN_ADDRESS_LIMIT=1, LOGIN_ADDRESS_WINDOW=2)
    web.token("alice")
    assert login(web, "alice", GOOD).status_code == 200
    assert_throttled(login(web, "alice", GOOD))
    wait_until(lambda: login(web, "alice", GOOD).status_code == 200, 10,
               what="the bucket to refill")


def test_password_hashes_run_off_the_event_loop():
    """While passwords are verified, the other greenlets of the process keep running: the
    hashes run in the pool's threads (hashlib releases the GIL), not in the event loop."""
    stored = generate_password_hash("the right password")
    ticks: list[int] = []

    def ticker() -> None:
        while True:
            ticks.append(1)
            gevent.sleep(0.001)

    passwords.configure(1)
    try:
        beating = gevent.spawn(ticker)
        gevent.sleep(0.01)
        before = len(ticks)
        results = [passwords.verify_password(stored, "a wrong one") for _ in range(3)]
        during = len(ticks) - before
        beating.kill()
    finally:
        passwords._pool = None
    assert results == [False, False, False]
    # Three scrypt verifications take well over 100 ms; the event loop ran meanwhile.
    assert during >= 10, f"the event loop ran {during} times while hashing"


def test_without_the_pool_a_hash_would_block_the_event_loop():
    """The control for the test above: the same work inline stops every other greenlet."""
    stored = generate_password_hash("the right password")
    ticks: list[int] = []

    def ticker() -> None:
        while True:
            ticks.append(1)
            gevent.sleep(0.001)

    beating = gevent.spawn(ticker)
    gevent.sleep(0.01)
    before = len(ticks)
    for _ in range(3):
        check_password_hash(stored, "a wrong one")
    inline = len(ticks) - before
    beating.kill()
    assert inline == 0
