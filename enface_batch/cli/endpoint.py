"""The endpoint's users and tokens (`enface user`, `enface token`) and the endpoint itself (`enface serve`)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from . import LakeOpt, _fail, _lake, _run, _writes, app, token_app, user_app


@user_app.command("add")
@_writes
def user_add(
    email: Annotated[str, typer.Argument(help="The user's email: the login name")],
    lake: LakeOpt = None,
) -> None:
    """Create a user of the endpoint; the password comes from ENFACE_PASSWORD or a prompt (stored argon2-hashed)."""
    from ..auth import add_user

    password = os.environ.get("ENFACE_PASSWORD") or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(add_user, _lake(lake), email, password)


def _user_id(lake, email: str) -> str:
    from ..auth import find_user
    from ..ops.errors import EnfaceError

    try:
        user = find_user(lake, email)
    except EnfaceError as exc:
        _fail(exc.message)
    if user is None:
        _fail(f"no user {email}; create it with `enface user add {email}`", 4)
    return user["user_id"]


@token_app.command("create")
@_writes
def token_create(
    email: Annotated[str, typer.Option("--email", help="The user the token acts for")],
    valid_days: Annotated[
        float | None, typer.Option("--valid-days", help="Days the token is valid (default 1)")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help='"never" or an ISO 8601 time (UTC unless it has a zone)')
    ] = None,
    lake: LakeOpt = None,
) -> None:
    """Create a permanent token (a uuid, printed once; the lake keeps only its hash)."""
    from ..auth import create_token

    lk = _lake(lake)
    _run(create_token, lk, _user_id(lk, email), valid_days=valid_days, expires=expires)


@token_app.command("ls")
def token_ls(email: Annotated[str, typer.Option("--email")], lake: LakeOpt = None) -> None:
    """A user's permanent tokens: ids, creation and expiry."""
    from ..auth import list_tokens

    lk = _lake(lake)
    _run(list_tokens, lk, _user_id(lk, email))


@user_app.command("remove")
@_writes
def user_remove(email: Annotated[str, typer.Argument(help="The user to remove")], lake: LakeOpt = None) -> None:
    """Remove a user and their permanent tokens; their temporary tokens (JWTs) stop working at once."""
    from ..auth import remove_user

    _run(remove_user, _lake(lake), email)


@user_app.command("passwd")
@_writes
def user_passwd(email: Annotated[str, typer.Argument(help="The user")], lake: LakeOpt = None) -> None:
    """Set a new password (ENFACE_PASSWORD or a prompt); the user's earlier temporary tokens stop working."""
    from ..auth import set_password

    password = os.environ.get("ENFACE_PASSWORD") or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(set_password, _lake(lake), email, password)


@token_app.command("revoke")
@_writes
def token_revoke(
    token_id: Annotated[str | None, typer.Argument(help="The token's id (enface token ls)")] = None,
    email: Annotated[str | None, typer.Option("--email", help="With --all: the user whose tokens to revoke")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every permanent token of --email")] = False,
    lake: LakeOpt = None,
) -> None:
    """Revoke a permanent token by id, or every token of a user (--email E --all). To end a user's temporary
    tokens (JWTs) too, set a new password (enface user passwd) or remove the user."""
    from ..auth import revoke_token, revoke_tokens

    if (token_id is None) == (not all_):
        _fail("give a TOKEN_ID, or --email EMAIL --all")
    lk = _lake(lake)
    if all_:
        if not email:
            _fail("--all needs --email")
        _run(revoke_tokens, lk, _user_id(lk, email))
    else:
        _run(revoke_token, lk, token_id)


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8000,
    lake: LakeOpt = None,
) -> None:
    """Serve the read-only endpoint (the Enface API's query routes, /v1 too, and a page at /ui) over the lake."""
    import uvicorn

    from ..api import create_app
    from ..auth import ConfigError

    try:
        api = create_app(lake)
    except ConfigError as exc:
        _fail(str(exc))
    uvicorn.run(api, host=host, port=port, log_level="info", access_log=False)
