"""Authentication: the /api/auth blueprint, token checks for HTTP and socket.io, revocation.

Tokens are HS256 JWTs from Flask-JWT-Extended, decoded with an explicit algorithm list, so
`alg: none` and every other algorithm are refused. The subject is the username. Logout puts the
token's jti on a Redis denylist until the token would have expired anyway.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import jwt as pyjwt
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    decode_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from redis.exceptions import RedisError

from engine import keys
from engine.errors import UnavailableError, ValidationError
from engine.settings import Settings
from webapp.errors import error_response
from webapp.extensions import jwt, services
from webapp.users import (
    User,
    UsernameTaken,
    authenticate,
    check_password,
    check_username,
    create_user,
    find_user,
)

ALGORITHM = "HS256"

bp = Blueprint("auth", __name__, url_prefix="/api/auth")


class AuthError(Exception):
    """A token was refused; the text is what the client is told."""


def configure_jwt(app: Flask, settings: Settings) -> None:
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret(),
        JWT_ALGORITHM=ALGORITHM,
        JWT_DECODE_ALGORITHMS=[ALGORITHM],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=dt.timedelta(minutes=settings.JWT_ACCESS_TOKEN_MINUTES),
        JWT_REFRESH_TOKEN_EXPIRES=dt.timedelta(days=settings.JWT_REFRESH_TOKEN_DAYS),
        JWT_ERROR_MESSAGE_KEY="error",
    )
    jwt.init_app(app)


def issue_tokens(user: User) -> dict[str, Any]:
    claims = {"role": user.role}
    lifetime = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return {"access_token": create_access_token(user.username, additional_claims=claims),
            "refresh_token": create_refresh_token(user.username, additional_claims=claims),
            "token_type": "Bearer", "expires_in": int(lifetime.total_seconds())}


def is_revoked(jti: str) -> bool:
    try:
        return bool(services().redis.exists(keys.revoked_token(jti)))
    except RedisError as exc:
        raise UnavailableError("cannot check token revocation") from exc


def revoke(claims: dict[str, Any]) -> None:
    ttl = max(1, int(claims["exp"] - time.time()) + 1)
    try:
        services().redis.set(keys.revoked_token(claims["jti"]), 1, ex=ttl)
    except RedisError as exc:
        raise UnavailableError("cannot revoke token") from exc


def authenticate_token(token: object) -> User:
    """The user an access token belongs to, or AuthError saying why it is refused."""
    if not isinstance(token, str) or not token:
        raise AuthError("missing token")
    try:
        claims = decode_token(token)
    except pyjwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except (pyjwt.InvalidTokenError, JWTExtendedException, ValueError):
        raise AuthError("invalid token") from None
    if claims.get("type") != "access":
        raise AuthError("invalid token")
    if is_revoked(claims["jti"]):
        raise AuthError("token revoked")
    user = find_user(services().db, claims["sub"])
    if user is None:
        raise AuthError("invalid token")
    if user.disabled:
        raise AuthError("account disabled")
    return user


@jwt.token_in_blocklist_loader
def _blocklisted(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    return is_revoked(claims["jti"])


@jwt.user_lookup_loader
def _load_user(_header: dict[str, Any], claims: dict[str, Any]) -> User | None:
    user = find_user(services().db, claims["sub"])
    return None if user is None or user.disabled else user


@jwt.user_lookup_error_loader
def _no_user(_header: dict[str, Any], _claims: dict[str, Any]) -> tuple[Response, int]:
    return error_response(401, "account disabled or removed")


@jwt.expired_token_loader
def _expired(_header: dict[str, Any], _claims: dict[str, Any]) -> tuple[Response, int]:
    return error_response(401, "token expired")


@jwt.revoked_token_loader
def _revoked(_header: dict[str, Any], _claims: dict[str, Any]) -> tuple[Response, int]:
    return error_response(401, "token revoked")


@jwt.invalid_token_loader
def _invalid(_reason: str) -> tuple[Response, int]:
    return error_response(401, "invalid token")


@jwt.unauthorized_loader
def _missing(_reason: str) -> tuple[Response, int]:
    return error_response(401, "missing token")


@jwt.needs_fresh_token_loader
def _not_fresh(_header: dict[str, Any], _claims: dict[str, Any]) -> tuple[Response, int]:
    return error_response(401, "fresh token required")


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


@bp.post("/register")
def register() -> tuple[Response, int]:
    if not services().settings.REGISTRATION_OPEN:
        return error_response(403, "registration is closed")
    body = _json_body()
    username = check_username(body.get("username"))
    password = check_password(body.get("password"))
    try:
        user = create_user(services().db, username, password)
    except UsernameTaken:
        return error_response(409, "username: already taken")
    return jsonify({"id": user.id, "username": user.username, "role": user.role}), 201


@bp.post("/login")
def login() -> tuple[Response, int]:
    body = _json_body()
    user = authenticate(services().db, body.get("username"), body.get("password"))
    if user is None:
        return error_response(401, "invalid username or password")
    return jsonify(issue_tokens(user)), 200


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh() -> tuple[Response, int]:
    user = find_user(services().db, get_jwt_identity())
    if user is None or user.disabled:
        return error_response(401, "account disabled or removed")
    lifetime = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    token = create_access_token(user.username, additional_claims={"role": user.role})
    return jsonify({"access_token": token, "token_type": "Bearer",
                    "expires_in": int(lifetime.total_seconds())}), 200


@bp.post("/logout")
@jwt_required(verify_type=False)
def logout() -> tuple[Response, int]:
    """Revoke the presented token, and the refresh token in the body if one is given."""
    revoked = [get_jwt()]
    body = request.get_json(silent=True)
    if isinstance(body, dict) and body.get("refresh_token"):
        try:
            other = decode_token(body["refresh_token"], allow_expired=True)
        except (pyjwt.InvalidTokenError, JWTExtendedException, ValueError):
            return error_response(400, "refresh_token: invalid token")
        if other.get("sub") != get_jwt_identity():
            return error_response(400, "refresh_token: belongs to another user")
        revoked.append(other)
    for claims in revoked:
        revoke(claims)
    return jsonify({"revoked": len(revoked)}), 200


@bp.get("/me")
@jwt_required()
def me() -> tuple[Response, int]:
    user = find_user(services().db, get_jwt_identity())
    assert user is not None  # the user lookup loader already refused a missing user
    return jsonify({"id": user.id, "username": user.username, "role": user.role}), 200
