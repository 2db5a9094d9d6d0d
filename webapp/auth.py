"""Authentication: the /api/auth blueprint, token checks for HTTP and socket.io, revocation.

Tokens are HS256 JWTs from Flask-JWT-Extended, decoded with an explicit algorithm list, so
`alg: none` and every other algorithm are refused (over HTTP by Flask-JWT-Extended, at a
socket.io connect by `AccessTokens`, with PyJWT directly and the same checks). The subject is
the username. Beyond the signature and expiry, every token must have the exact shape Tributary
issues (`claims_problem`): a signed token with a string `exp`, an unknown `type` or a subject
that is not a username is refused all the same. Logout revokes the token (webapp/revocation.py),
which also ends the live connections it authenticated. Logins are throttled before any password
is hashed (webapp/throttle.py), and hashes are computed off the event loop (webapp/passwords.py).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

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
from pydantic import BaseModel, Field
from spectree import Response as Responses

from engine.errors import AuthError, RedisUnavailable, UsernameTaken, ValidationError
from engine.keys import USER_ID_PATTERN
from engine.settings import Settings
from webapp import offenders, revocation
from webapp.bodies import json_body
from webapp.errors import error_response
from webapp.extensions import jwt, services
from webapp.openapi import BEARER, errors, spec
from webapp.users import (
    User,
    account_record,
    authenticate,
    cached_account,
    check_password,
    check_username,
    create_user,
    find_user,
)

if TYPE_CHECKING:
    from webapp.accounts import AccountLoader
    from webapp.gateway import Gateway

ALGORITHM = "HS256"
#: The only algorithm a token may be signed with: `alg: none` and every other are refused.
DECODE_ALGORITHMS = [ALGORITHM]

bp = Blueprint("auth", __name__, url_prefix="/api/auth")


class Credentials(BaseModel):
    username: str = Field(description="1-64 of A-Z a-z 0-9 _ . -")
    password: str = Field(description="8 to 1024 characters")


class Tokens(BaseModel):
    access_token: str
    refresh_token: str | None = None
    token_type: str = "Bearer"
    expires_in: int = Field(description="seconds the access token lasts")


class Account(BaseModel):
    id: int
    username: str
    role: str


class LogoutBody(BaseModel):
    refresh_token: str | None = Field(None, description="also revoke this refresh token")


class Revoked(BaseModel):
    revoked: int


def configure_jwt(app: Flask, settings: Settings) -> None:
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret(),
        JWT_ALGORITHM=ALGORITHM,
        JWT_DECODE_ALGORITHMS=DECODE_ALGORITHMS,
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


def claims_problem(claims: dict[str, Any]) -> str | None:
    """What is wrong with the claims of a token whose signature and expiry checked out, or
    None when they have exactly the shape Tributary issues."""
    for name in ("exp", "iat"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name}: must be a number"
    if claims.get("type") not in ("access", "refresh"):
        return "type: must be access or refresh"
    subject = claims.get("sub")
    if not isinstance(subject, str) or not USER_ID_PATTERN.fullmatch(subject):
        return "sub: must be a username"
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        return "jti: must be a string"
    return None


class AccessTokens:
    """Checks the access tokens of connecting clients with PyJWT directly: the key is read
    once, a token is decoded once (flask-jwt-extended's `decode_token` decodes it three times
    and needs an app context), and the checks are those of `decode_token` as `configure_jwt`
    sets it up: HS256 only, signature, `exp`, `nbf`, `iat`, a string `sub`, no audience or
    issuer and no leeway; then `claims_problem`, and the type must be `access`."""

    __slots__ = ("_decoder", "_key")

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        # flask-jwt-extended verifies `aud` only when JWT_DECODE_AUDIENCE is set (it is not).
        self._decoder = pyjwt.PyJWT({"verify_aud": False})

    def claims(self, token: object) -> dict[str, Any]:
        """The claims of a well-formed, unexpired access token this service signed; AuthError
        saying why not. Revocation and the account are checked by the callers."""
        if not isinstance(token, str) or not token:
            raise AuthError("missing token")
        try:
            claims = self._decoder.decode(token, self._key, algorithms=DECODE_ALGORITHMS)
        except pyjwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except (pyjwt.InvalidTokenError, ValueError, TypeError):
            raise AuthError("invalid token") from None
        if not isinstance(claims, dict) or "sub" not in claims:
            raise AuthError("invalid token")
        # What decode_token fills in for a claim left out.
        claims.setdefault("type", "access")
        claims.setdefault("fresh", False)
        claims.setdefault("jti", None)
        if claims_problem(claims) is not None or claims["type"] != "access":
            raise AuthError("invalid token")
        return claims


def admit_connection(gateway: Gateway, access: AccessTokens, accounts: AccountLoader,
                     token: object, sid: str) -> tuple[User, dict[str, Any]]:
    """Authenticate a socket.io connect and record it, in one Redis round trip: the token's
    revocation, the user's revoked-before record, the cached account (users.account_record)
    and open.lua go together, and nothing is counted or created for a refused connect. Only
    an account not cached yet costs a database query (shared with the other connects missing
    the cache at that moment: webapp/accounts.py) and a second round trip, which caches the
    account as it opens the connection.

    The user is the canonical account found by exact name: what a connection uses from here
    on, never the raw subject. No cache weakens the refusals: a revoked token or a disabled
    account is refused on the very next connect (revocations are read in the same round trip,
    and a change of the account drops its cached copy)."""
    claims = access.claims(token)
    username = claims["sub"]
    status, detail = gateway.connected(sid, username, claims["jti"], float(claims["iat"]))
    if status == "uncached":
        found = accounts.load(username)
        if found is None:
            raise AuthError("invalid token")
        status, detail = gateway.connected(sid, username, claims["jti"], float(claims["iat"]),
                                           account=account_record(found))
    if status == "open":
        user = cached_account(username, detail)
        assert user is not None  # open.lua opens only for an enabled account
        return user, claims
    if status == "revoked":
        raise AuthError(revocation.TOKEN_REVOKED)
    if status == "voided":
        raise AuthError(str(detail))
    if status == "disabled":
        raise AuthError("account disabled")
    raise RedisUnavailable(f"a connect was answered {status!r}")


@jwt.token_in_blocklist_loader
def _blocklisted(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    return revocation.revocation(services().redis, claims) is not None


@jwt.token_verification_loader
def _well_formed(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    return claims_problem(claims) is None


@jwt.token_verification_failed_loader
def _malformed(_header: dict[str, Any], _claims: dict[str, Any]) -> tuple[Response, int]:
    return error_response(401, "invalid token")


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
def _revoked(_header: dict[str, Any], claims: dict[str, Any]) -> tuple[Response, int]:
    return error_response(401, revocation.revocation(services().redis, claims) or
                          revocation.TOKEN_REVOKED)


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
    body = json_body()
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _throttled(wait: int) -> tuple[Response, int]:
    response, status = error_response(429, f"too many attempts; retry in {wait} s",
                                      retry_after=wait)
    response.headers["Retry-After"] = str(wait)
    # Closed after the answer, and counted as an offence of the address: a flood's next
    # attempt costs it a new connection, and each refused one as many as an offence, which the
    # per-address admission limit counts (webapp/admission.py).
    response.headers["Connection"] = "close"
    offenders.offence(request.remote_addr)
    return response, status


@bp.post("/register")
@spec.validate(json=Credentials, skip_validation=True, tags=["auth"],
               resp=Responses(HTTP_201=Account, **errors(400, 403, 409, 429)))
def register() -> tuple[Response, int]:
    if not services().settings.REGISTRATION_OPEN:
        return error_response(403, "registration is closed")
    body = _json_body()
    username = check_username(body.get("username"))
    password = check_password(body.get("password"))
    wait = services().throttle.attempt(request.remote_addr)
    if wait:
        return _throttled(wait)
    try:
        user = create_user(services().db, username, password)
    except UsernameTaken:
        return error_response(409, "username: already taken")
    return jsonify({"id": user.id, "username": user.username, "role": user.role}), 201


@bp.post("/login")
@spec.validate(json=Credentials, skip_validation=True, tags=["auth"],
               resp=Responses(HTTP_200=Tokens, **errors(400, 401, 429)))
def login() -> tuple[Response, int]:
    body = _json_body()
    username, password = body.get("username"), body.get("password")
    throttle = services().throttle
    named = username if isinstance(username, str) and USER_ID_PATTERN.fullmatch(username) \
        else None
    wait = throttle.attempt(request.remote_addr, named)
    if wait:
        return _throttled(wait)
    user = authenticate(services().db, username, password)
    if user is None:
        if named is not None:
            throttle.failed(named)
        return error_response(401, "invalid username or password")
    return jsonify(issue_tokens(user)), 200


@bp.post("/refresh")
@spec.validate(skip_validation=True, security=BEARER, tags=["auth"],
               resp=Responses(HTTP_200=Tokens, **errors(401)))
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
@spec.validate(json=LogoutBody, skip_validation=True, security=BEARER, tags=["auth"],
               resp=Responses(HTTP_200=Revoked, **errors(400, 401)))
@jwt_required(verify_type=False)
def logout() -> tuple[Response, int]:
    """Revoke the presented token, and the refresh token in the body if one is given."""
    revoked = [get_jwt()]
    body = request.get_json(silent=True)
    if isinstance(body, dict) and body.get("refresh_token"):
        try:
            other = decode_token(body["refresh_token"], allow_expired=True)
        except (pyjwt.InvalidTokenError, JWTExtendedException, ValueError, TypeError):
            return error_response(400, "refresh_token: invalid token")
        if claims_problem(other) is not None:
            return error_response(400, "refresh_token: invalid token")
        if other.get("sub") != get_jwt_identity():
            return error_response(400, "refresh_token: belongs to another user")
        revoked.append(other)
    for claims in revoked:
        revocation.revoke_token(services().redis, claims)
    return jsonify({"revoked": len(revoked)}), 200


@bp.get("/me")
@spec.validate(skip_validation=True, security=BEARER, tags=["auth"],
               resp=Responses(HTTP_200=Account, **errors(401)))
@jwt_required()
def me() -> tuple[Response, int]:
    user = find_user(services().db, get_jwt_identity())
    assert user is not None  # the user lookup loader already refused a missing user
    return jsonify({"id": user.id, "username": user.username, "role": user.role}), 200
