"""The web process's realtime layer, one module per protocol layer, as engine.io and socket.io
name theirs: HTTP limits and the websocket handshake (`handler`), websocket framing
(`transport`), engine.io sessions (`engineio_session`), socket.io events (`events`), rooms
(`rooms`), the packet guard (`packet_guard`), and the one module that touches the libraries'
internals (`internals`). Flask's parts (app factory, auth, REST API, CLI, admin) live beside
it in `webapp/`.
"""
