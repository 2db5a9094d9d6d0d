"""The websocket frame reader's fast unmask gives exactly what gevent-websocket's own does."""

from __future__ import annotations

import os

import pytest
from geventwebsocket.websocket import Header

from webapp.websocket import unmask


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 150, 4096, 65537])
def test_the_fast_unmask_matches_gevent_websocket_for_every_length(size):
    payload, mask = os.urandom(size), os.urandom(4)
    header = Header(fin=1, opcode=1, flags=0, length=size)
    header.mask = mask
    assert unmask(payload, mask) == bytes(header.unmask_payload(payload))


def test_unmasking_twice_gives_the_payload_back():
    payload, mask = os.urandom(1000), os.urandom(4)
    assert unmask(unmask(payload, mask), mask) == payload
