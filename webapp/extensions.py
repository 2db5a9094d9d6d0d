"""Extensions created once at import time and bound to an app in `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import current_app
from flask_jwt_extended import JWTManager
from flask_socketio import SocketIO
from redis import Redis

from engine.settings import Settings

if TYPE_CHECKING:
    from webapp.admission import Admission
    from webapp.gateway import Gateway
    from webapp.revocation import LiveTokens
    from webapp.throttle import LoginThrottle

socketio = SocketIO()
jwt = JWTManager()


@dataclass
class Services:
    """What the request handlers of one app share: settings, database, Redis, the gateway, the
    login throttle, the tokens of live connections and the per-address admission limits."""

    settings: Settings
    db: sa.engine.Engine
    redis: Redis
    gateway: Gateway
    throttle: LoginThrottle
    tokens: LiveTokens
    admission: Admission


def services() -> Services:
    return current_app.extensions["tributary"]  # type: ignore[no-any-return]
