"""The websocket transport's frame reader and writer (webapp/realtime/transport.py): the fast
unmask gives exactly what gevent-websocket's own does, and `Connection` follows RFC 6455 over a
real socket."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
from geventwebsocket.websocket import Header

from webapp.realtime.transport import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    MAX_PENDING_BYTES,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Connection,
    decode_header,
    unmask,
)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 150, 4096, 65537])
def test_the_fast_unmask_matches_gevent_websocket_for_every_length(size):
    payload, mask = os.urandom(size), os.urandom(4)
    header = Header(fin=1, opcode=1, flags=0, length=size)
    header.mask = mask
    assert unmask(payload, mask) == bytes(header.unmask_payload(payload))


def test_unmasking_twice_gives_the_payload_back():
    payload, mask = os.urandom(1000), os.urandom(4)
    assert unmask(unmask(payload, mask), mask) == payload


# --- the frame reader and writer, over a real socket pair -------------------------------------

def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
                 rsv: int = 0) -> bytes:
    """A frame as a client sends it: masked unless told otherwise."""
    size = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 65536:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + unmask(payload, mask)


class Peer:
    """The client end of a socket pair whose other end is a `Connection`."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, timeout: float = 5) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; unmasked, as servers send them."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buffer) >= 2:
                size, start = self.buffer[1] & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(self.buffer[2:4], "big"), 4
                elif size == 127:
                    size, start = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) >= start + size:
                    opcode = self.buffer[0] & 0x0F
                    payload = self.buffer[start:start + size]
                    self.buffer = self.buffer[start + size:]
                    return opcode, payload
            chunk = self.sock.recv(65536)
            assert chunk, "the connection ended before a whole frame arrived"
            self.buffer += chunk

    def close_code(self) -> int:
        """Read up to the server's close frame and give its status code."""
        while True:
            opcode, payload = self.frame()
            if opcode == OP_CLOSE:
                return int.from_bytes(payload[:2], "big")


@pytest.fixture
def pair():
    """(Connection, Peer) over a gevent socket pair."""
    import gevent.socket

    server_end, client_end = gevent.socket.socketpair()
    websocket = SimpleNamespace(
        handler=SimpleNamespace(socket=server_end, rfile=server_end.makefile("rb")),
        environ={"REMOTE_ADDR": "peer"}, closed=False)
    connection = Connection(websocket, max_message_bytes=1000)
    connection.owner = lambda: "alice"  # a user's connection: every warning is written
    yield connection, Peer(client_end)
    connection.close()
    client_end.close()
    server_end.close()


def send_in_pieces(peer: Peer, data: bytes, piece: int) -> None:
    """Send `data` a few bytes at a time from another greenlet, yielding between pieces so
    that the reader sees each one separately."""
    import gevent

    def trickle() -> None:
        for start in range(0, len(data), piece):
            peer.send(data[start:start + piece])
            gevent.sleep(0.001)

    gevent.spawn(trickle)


def test_messages_arrive_whole_however_the_network_splits_them(pair):
    connection, peer = pair
    text = "é" * 450  # 900 bytes: near the limit of 1,000, and read in many pieces
    send_in_pieces(peer, client_frame(OP_TEXT, text.encode())
                   + client_frame(OP_BINARY, b"\x00\xff" * 450), piece=7)
    assert connection.receive() == text
    assert connection.receive() == b"\x00\xff" * 450
    assert not connection.closed


def test_a_fragmented_message_is_joined_and_pings_between_its_fragments_are_answered(pair):
    connection, peer = pair
    peer.send(client_frame(OP_TEXT, b"42[\"da", fin=False)
              + client_frame(OP_PING, b"are you there")
              + client_frame(OP_CONTINUATION, b"ta\",", fin=False)
              + client_frame(OP_CONTINUATION, b"1]"))
    assert connection.receive() == '42["data",1]'
    assert peer.frame() == (OP_PONG, b"are you there")


def test_a_message_over_the_limit_is_refused_from_its_header_alone(pair):
    connection, peer = pair
    # Only the header of a 1 MB frame: the payload is never sent, and never waited for.
    peer.send(client_frame(OP_TEXT, b"", masked=False)[:1] + bytes((0x80 | 127,))
              + (1_000_000).to_bytes(8, "big") + os.urandom(4))
    assert connection.receive() is None
    assert peer.close_code() == CLOSE_TOO_BIG


def test_fragments_adding_up_to_more_than_the_limit_are_refused(pair):
    connection, peer = pair
    peer.send(client_frame(OP_TEXT, b"x" * 600, fin=False)
              + client_frame(OP_CONTINUATION, b"x" * 600))
    assert connection.receive() is None
    assert peer.close_code() == CLOSE_TOO_BIG


@pytest.mark.parametrize(("data", "code"), [
    (client_frame(OP_TEXT, b"hello", masked=False), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_TEXT, b"hello", rsv=0x40), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_PING, b"x" * 126), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_PING, b"x", fin=False), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_CONTINUATION, b"x"), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), CLOSE_PROTOCOL_ERROR),
    (client_frame(3, b"x"), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_TEXT, b"\xff\xfe"), CLOSE_INVALID_DATA),
], ids=["unmasked", "reserved bits", "long ping", "fragmented ping", "lone continuation",
        "message inside a message", "unknown opcode", "invalid UTF-8"])
def test_a_frame_breaking_the_protocol_closes_the_connection_with_its_status(pair, data, code,
                                                                             caplog):
    connection, peer = pair
    peer.send(data)
    assert connection.receive() is None
    assert peer.close_code() == code
    assert any("closing the connection" in r.getMessage() for r in caplog.records)


def test_a_close_frame_is_answered_with_its_own_code_and_ends_the_connection(pair):
    connection, peer = pair
    peer.send(client_frame(OP_CLOSE, (4001).to_bytes(2, "big") + b"bye"))
    assert connection.receive() is None
    assert peer.close_code() == 4001
    assert connection.closed
    connection.send("too late")  # dropped, not raised


def test_nothing_more_is_read_once_the_connection_is_closed(pair):
    connection, peer = pair
    peer.send(client_frame(OP_TEXT, b"1") + client_frame(OP_TEXT, b"40"))
    assert connection.receive() == "1"
    connection.close()
    assert connection.receive() is None  # "40" was in the buffer already


def test_the_peer_going_away_ends_the_connection(pair):
    connection, peer = pair
    peer.sock.close()
    assert connection.receive() is None
    assert connection.closed


def test_writes_go_out_in_order_even_when_the_kernel_cannot_take_them_at_once(pair):
    import gevent

    connection, peer = pair
    messages = [(b"%06d" % number) * 1000 for number in range(100)]  # 600 KB in all
    for message in messages:
        connection.send_text(message)  # never blocks, though nobody reads yet
    received = []
    for _ in messages:
        gevent.sleep(0)  # let the drain greenlet write while this one reads
        opcode, payload = peer.frame()
        assert opcode == OP_TEXT
        received.append(payload)
    assert received == messages
    assert not connection.closed


def test_a_client_that_stops_reading_is_closed_once_too_much_is_unsent(pair, caplog):
    import gevent

    connection, peer = pair
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = b"x" * 60_000
    sent = 0
    while not connection.closed:
        connection.send_text(chunk)
        sent += len(chunk)
        gevent.sleep(0)
        assert sent < 64 * MAX_PENDING_BYTES, "the connection was never closed"
    assert any("is not reading" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 1 << 40])
def test_a_frame_header_decodes_only_once_it_is_all_in(size):
    header = client_frame(OP_BINARY, b"")[:2]  # the first two bytes, with a length to replace
    if size < 126:
        encoded, start = bytes((header[0], 0x80 | size)), 2
    elif size < 65536:
        encoded, start = bytes((header[0], 0x80 | 126)) + size.to_bytes(2, "big"), 4
    else:
        encoded, start = bytes((header[0], 0x80 | 127)) + size.to_bytes(8, "big"), 10
    for cut in range(len(encoded)):
        assert decode_header(encoded[:cut]) is None
    assert decode_header(encoded) == (size, start)
    assert decode_header(encoded + b"more") == (size, start)
