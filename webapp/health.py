"""Health checks for load balancers and orchestrators.

`/healthz`: the process is up and serving (liveness; restart it if not). `/readyz`: it can do
its work, Redis and the database are reachable (readiness; send it traffic only then); a 503
names what is not.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify

from engine.connections import REDIS_FAILURES
from webapp.extensions import services

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks = {"redis": _redis_ok(), "database": _database_ok()}
    down = [name for name, ok in checks.items() if not ok]
    body = {"status": "ok" if not down else "unavailable",
            **{name: "ok" if ok else "unreachable" for name, ok in checks.items()}}
    if down:
        body["error"] = f"{' and '.join(down)} unreachable"
        return jsonify(body), 503
    return jsonify(body), 200


def _redis_ok() -> bool:
    try:
        return bool(services().redis.ping())
    except REDIS_FAILURES as exc:
        log.debug("readiness: Redis unreachable: %s", exc)
        return False


def _database_ok() -> bool:
    try:
        with services().db.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.SQLAlchemyError as exc:
        log.debug("readiness: database unreachable: %s", exc)
        return False
