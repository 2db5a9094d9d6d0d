"""Operator commands: `flask --app wsgi <command>`."""

from __future__ import annotations

import datetime as dt
import secrets

import click
from flask import Flask
from flask_jwt_extended import create_access_token

from engine.errors import UsernameTaken, ValidationError
from engine.schema import apply_schema
from webapp.extensions import services
from webapp.revocation import ACCOUNT_DISABLED, TOKEN_REVOKED, revoke_user
from webapp.users import (
    ROLES,
    create_user,
    find_user,
    set_disabled,
    set_password,
    set_role,
)


def init_app(app: Flask) -> None:
    for command in (init_db, create_admin, set_role_command, mint_token, replay_dead_letters,
                    disable_user, enable_user, revoke_tokens):
        app.cli.add_command(command)


def _existing(username: str) -> str:
    user = find_user(services().db, username)
    if user is None:
        raise click.BadParameter(f"no user named {username!r}")
    return user.username


def _revoke_all(username: str, reason: str) -> None:
    settings = services().settings
    revoke_user(services().redis, username, reason,
                keep_seconds=settings.JWT_REFRESH_TOKEN_DAYS * 86400)


@click.command("disable-user")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable an account: its tokens stop working and its live connections end at once."""
    username = _existing(username)
    set_disabled(services().db, username, True, redis=services().redis)
    _revoke_all(username, ACCOUNT_DISABLED)
    click.echo(f"{username} is disabled; its tokens are revoked and its connections ended")


@click.command("enable-user")
@click.argument("username")
def enable_user(username: str) -> None:
    """Enable a disabled account again (its old tokens stay revoked: it logs in afresh)."""
    username = _existing(username)
    set_disabled(services().db, username, False, redis=services().redis)
    click.echo(f"{username} is enabled")


@click.command("revoke-tokens")
@click.argument("username")
def revoke_tokens(username: str) -> None:
    """Revoke every token of a user issued until now; its live connections end at once."""
    username = _existing(username)
    _revoke_all(username, TOKEN_REVOKED)
    click.echo(f"every token of {username} issued until now is revoked")


@click.command("init-db")
def init_db() -> None:
    """Create the tables (idempotent) and record the schema version."""
    version = apply_schema(services().db)
    click.echo(f"schema version {version} is in place")


@click.command("create-admin")
@click.argument("username")
@click.option("--password", envvar="ADMIN_PASSWORD", default="",
              help="Password (default: $ADMIN_PASSWORD, or a random one printed once).")
def create_admin(username: str, password: str) -> None:
    """Create an admin account, or make an existing account an admin."""
    generated = not password
    password = password or secrets.token_urlsafe(12)
    db = services().db
    try:
        create_user(db, username, password, role="admin")
    except UsernameTaken:
        set_role(db, username, "admin", redis=services().redis)
        if not generated:
            set_password(db, username, password)
        click.echo(f"{username} is an admin" + ("" if generated else " (password updated)"))
        return
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"created admin {username}")
    if generated:
        click.echo(f"password (shown once): {password}")


@click.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def set_role_command(username: str, role: str) -> None:
    """Give an account a role: user (sends messages), viewer (sees the operator dashboard,
    changes nothing) or admin."""
    username = _existing(username)
    set_role(services().db, username, role, redis=services().redis)
    click.echo(f"{username} is now a {role}")


@click.command("mint-token")
@click.argument("username")
@click.option("--minutes", type=click.IntRange(min=1), default=None,
              help="Lifetime (default: JWT_ACCESS_TOKEN_MINUTES).")
def mint_token(username: str, minutes: int | None) -> None:
    """Print an access token for USERNAME, for scripts and load tests."""
    user = find_user(services().db, username)
    if user is None:
        raise click.BadParameter(f"no user named {username!r}")
    expires = dt.timedelta(minutes=minutes) if minutes else None
    click.echo(create_access_token(user.username, additional_claims={"role": user.role},
                                   expires_delta=expires))


@click.command("replay-dead-letters")
@click.option("--user", "user_id", default=None, help="Only this user's dead letters.")
@click.option("--id", "ids", multiple=True, type=int, help="Only these dead letter ids.")
def replay_dead_letters(user_id: str | None, ids: tuple[int, ...]) -> None:
    """Put dead letters back into their user's stream, to be written again."""
    from engine.deadletters import replay

    replayed = replay(services().settings, services().db, services().redis, user_id=user_id,
                      ids=list(ids) or None)
    click.echo(f"replayed {replayed} dead letter(s)")
