"""Tokens never reach the logs, however a client cuts them: any `eyJ…` run is scrubbed, whole
or truncated (a JWT's header always starts `eyJ`, the base64url of `{"`)."""

from __future__ import annotations

import pytest

from engine.logs import scrub
from tests.conftest import make_jwt, wait_until
from tests.gateway_support import refused


@pytest.mark.parametrize("cut", [3, 10, 36, 37, 50, 80, 120, None])
def test_a_token_cut_anywhere_is_scrubbed(cut):
    token = make_jwt("alice")[:cut]
    scrubbed = scrub(f"connection refused (invalid token {token}) from 127.0.0.1")
    assert "eyJ" not in scrubbed
    assert scrubbed == "connection refused (invalid token [token]) from 127.0.0.1"


def test_a_cut_token_sent_by_a_client_does_not_reach_the_web_log(mysql_backend, start_web):
    web = start_web(mysql_backend, LOG_LEVEL="DEBUG")
    web.token("alice")
    cut = make_jwt("alice")[:80]
    assert refused(web.url, cut) == "invalid token"
    assert refused(f"{web.url}?token={cut}") == "invalid token"
    wait_until(lambda: "connection refused" in web.process.log(), 5,
               what="the refusals to be logged")
    log = web.process.log()
    assert cut[:12] not in log and cut[37:60] not in log
