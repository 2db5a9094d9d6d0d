"""The web process's request header parser (webapp/realtime/handler.py `parse_headers`) gives
exactly what gevent's own (http.client.parse_headers with the email package's parser) gives,
for plain header blocks it parses itself and for everything it hands over."""

from __future__ import annotations

import http.client
import io

from gevent.pywsgi import OldMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.realtime.handler import parse_headers


def both(block: bytes) -> tuple[OldMessage, OldMessage]:
    try:
        stock = http.client.parse_headers(io.BytesIO(block), _class=OldMessage)
    except http.client.LineTooLong:  # what gevent's headers_factory answers
        stock = OldMessage()
        stock.status = "Line too long"
    return parse_headers(io.BytesIO(block)), stock


def assert_same(block: bytes) -> None:
    ours, stock = both(block)
    assert ours.items() == stock.items(), block
    assert ours.status == stock.status
    assert ours.get_payload() == stock.get_payload(), block
    assert [type(d) for d in ours.defects] == [type(d) for d in stock.defects]


BLOCKS = [
    b"Host: x\r\n\r\n",
    b"\r\n",
    b"",
    b"Host: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"A:  spaced value  \r\nB:\r\nC:\tx\r\n\r\n",  # leading blanks dropped, trailing kept
    b"Host: x\nA: b\n\n",  # bare LF line ends
    b"Host: x\r\nX-Folded: one\r\n two\r\n\r\n",  # obsolete line folding
    b"Host: x\r\nno colon here\r\nB: c\r\n\r\n",  # a non-header line ends the headers
    b"Host: x\r\nBad Name: v\r\n\r\n",  # a space in the name
    b"Host: x\r\nA: b\rC: d\r\n\r\n",  # a stray CR splits the line for the email parser
    b"From nobody Mon Jan 1\r\nHost: x\r\n\r\n",  # a Unix From line
    b"Host: x\r\nA: cut sh",  # the block ends mid-line
    b"Host: x\r\nA: \xe9t\xe9 \xff\r\n\r\n",  # Latin-1 bytes
    b"Host: x\r\nA: b\r\nA: c\r\n\r\n",  # repeated names keep their order
    b"Host: x\r\n: empty name\r\n\r\n",
    b"Host: x\r\nLong: " + b"v" * 70_000 + b"\r\n\r\n",  # over http.client's line limit
]


def test_known_blocks_parse_as_gevent_parses_them():
    for block in BLOCKS:
        assert_same(block)


def test_the_usual_block_is_parsed_without_the_email_parser(monkeypatch):
    import email.parser

    def refuse(*_args, **_kwargs):
        raise AssertionError("the email parser was used")

    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    message = parse_headers(io.BytesIO(BLOCKS[3]))
    assert message["Upgrade"] == "websocket"
    assert message["sec-websocket-version"] == "13"


line = st.one_of(
    st.tuples(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=12),
              st.sampled_from([":", ": ", ":\t", ""]),
              st.text(st.characters(max_codepoint=0xff), max_size=20),
              st.sampled_from(["\r\n", "\n", "\r", ""]))
    .map(lambda parts: "".join(parts)),
    st.sampled_from([" folded\r\n", "\tfolded\r\n", "\r\n", "From x\r\n"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(line, max_size=8), st.sampled_from(["\r\n", "\n", ""]))
def test_any_block_parses_as_gevent_parses_it(lines, end):
    assert_same(("".join(lines) + end).encode("iso-8859-1"))
