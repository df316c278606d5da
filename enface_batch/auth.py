"""Users, passwords, temporary (JWT) and permanent (uuid) tokens: the seed's /user/login, /tokens, /token/create.

- Passwords are hashed with argon2id (argon2-cffi); only the hash is stored, in the ``users`` table.
- ``login`` returns a JWT temporary token signed with ``ENFACE_JWT_SECRET`` (HS256), valid ``valid_days``.
  The secret comes from settings only; there is no default.
- A permanent token is a random uuid4 that expires after ``valid_days`` or at ``expires`` (a time, or "never").
  The ``tokens`` table keeps its sha256, never the token itself (a random uuid has 122 bits of entropy, so a
  plain hash cannot be brute-forced and lookups stay a single equality match); the token is shown once.
- A request carries a temporary token in the ``token`` header, or a permanent token as the ``token``
  parameter; anything else is 401.
- Revocation: a JWT names its user and a fingerprint of the user's password hash, both checked on every
  request, so removing the user (``remove_user``) or setting a new password (``set_password``) ends every JWT
  issued before; permanent tokens are rows, deleted by ``revoke_token``/``revoke_tokens``/``remove_user``.
  This needs no column beyond the existing ``users`` and ``tokens`` tables.
- A permanent token made with another credential (the endpoint's /token/create) never outlives it:
  ``create_token(..., not_after=...)`` caps its expiry. Tokens made by the operator (the CLI) are not capped.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .lake.protocols import ReadLake
from .lake.store import Lake, now
from .ops.errors import BadRequest, Forbidden, NotFound, Unauthorized
from .settings import get_settings

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "enface-batch"
MIN_SECRET_CHARS = 32
MIN_PASSWORD = 6
MAX_PASSWORD = 1024
MAX_DAYS = 36_500  # a hundred years: beyond that, say "never"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()
# Verified when the email is unknown, so a wrong email costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class ConfigError(RuntimeError):
    """A setting the endpoint needs is missing or unusable; the message names it."""


def jwt_secret() -> str:
    """The JWT signing key from ENFACE_JWT_SECRET; refuses to run without one (there is no default)."""
    secret = get_settings().jwt_secret
    value = secret.get_secret_value() if secret is not None else ""
    if not value:
        raise ConfigError(
            "ENFACE_JWT_SECRET is not set: the endpoint signs temporary tokens with it. Set it to a random value "
            'of at least 32 characters, e.g. export ENFACE_JWT_SECRET="$(python -c '
            "'import secrets; print(secrets.token_urlsafe(48))')\""
        )
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"ENFACE_JWT_SECRET is {len(value)} characters; use at least {MIN_SECRET_CHARS}")
    return value


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else None


def normalise_email(email: object) -> str:
    if not isinstance(email, str) or not _EMAIL.match(email.strip()) or len(email) > 320:
        raise BadRequest(f"email must be an email address, got {email!r}")
    return email.strip().lower()


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"password must be a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def find_user(lake: ReadLake, email: str) -> dict | None:
    rows = lake.read("users", where={"email": normalise_email(email)}).to_pylist()
    return rows[0] if rows else None


def get_user(lake: ReadLake, user_id: str) -> dict | None:
    rows = lake.read("users", where={"user_id": user_id}, columns=["user_id", "email"]).to_pylist()
    return rows[0] if rows else None


def password_stamp(password_hash: str) -> str:
    """A short fingerprint of a password hash, carried in JWTs: a new password (a new salted hash) ends them."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _require_user(lake: ReadLake, email: str) -> dict:
    user = find_user(lake, email)
    if user is None:
        raise NotFound(f"no user {normalise_email(email)}")
    return user


def set_password(lake: Lake, email: str, password: str) -> dict:
    """A new password for a user; every temporary token (JWT) issued before stops working."""
    user = _require_user(lake, email)
    row = {**user, "password_hash": _hasher.hash(check_password(password))}
    lake.upsert("users", [row], keys=["user_id"])
    return {
        "status": "ok",
        "message": "password changed; earlier temporary tokens no longer work",
        "email": user["email"],
    }


def remove_user(lake: Lake, email: str) -> dict:
    """Delete a user and their permanent tokens; their temporary tokens stop working at once."""
    user = _require_user(lake, email)
    # Tokens first: a crash in between leaves a user without tokens, never tokens of a missing user.
    revoked = revoke_tokens(lake, user["user_id"])["revoked"]
    lake.delete("users", {"user_id": user["user_id"]})
    return {"status": "ok", "message": "user removed", "email": user["email"], "tokens_revoked": revoked}


def revoke_token(lake: Lake, token_id: str) -> dict:
    """Delete one permanent token by its id (as `enface token ls` and GET /tokens show it)."""
    try:
        tid = str(uuid.UUID(str(token_id)))
    except ValueError:
        raise BadRequest(f"token_id must be a uuid, got {token_id!r}") from None
    if not lake.read("tokens", where={"token_id": tid}, columns=["token_id"]).num_rows:
        raise NotFound(f"no token {tid}")
    lake.delete("tokens", {"token_id": tid})
    return {"status": "ok", "message": "token revoked", "token_id": tid}


def revoke_tokens(lake: Lake, user_id: str) -> dict:
    """Delete every permanent token of a user."""
    n = lake.read("tokens", where={"user_id": user_id}, columns=["token_id"]).num_rows
    if n:
        lake.delete("tokens", {"user_id": user_id})
    return {"status": "ok", "message": f"{n} token(s) revoked", "revoked": n}


def add_user(lake: Lake, email: str, password: str) -> dict:
    """Create a user; the email is the login name (case-insensitive) and must be new."""
    addr = normalise_email(email)
    pw = check_password(password)
    if find_user(lake, addr):
        raise BadRequest(f"user {addr} already exists")
    row = {"user_id": str(uuid.uuid4()), "email": addr, "password_hash": _hasher.hash(pw), "created": now()}
    lake.append("users", [row])
    return {"status": "ok", "message": "user created", "user_id": row["user_id"], "email": addr}


def _days(value: object, param: str, *, integer: bool) -> float:
    if isinstance(value, bool):
        value = None
    try:
        days = float(value) if not integer else int(value)
        if integer and float(value) != days:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{param} must be {'an integer' if integer else 'a number'} >= 1, got {value!r}") from None
    if not math.isfinite(days) or not 1 <= days <= MAX_DAYS:
        raise BadRequest(f"{param} must be from 1 to {MAX_DAYS}, got {value!r}")
    return days


def login(lake: ReadLake, email: str, password: str, valid_days: object = 1, *, secret: str | None = None) -> dict:
    """The seed's /user/login: a JWT temporary token for valid_days days; 403 for wrong credentials."""
    addr = normalise_email(email)
    pw = check_password(password)
    days = _days(valid_days, "valid_days", integer=True)
    user = find_user(lake, addr)
    try:
        _hasher.verify(user["password_hash"] if user else _DUMMY_HASH, pw)
        ok = user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise Forbidden("invalid user credentials")
    t = now()
    claims = {
        "sub": user["user_id"],
        "email": user["email"],
        "iat": t,
        "exp": t + timedelta(days=days),
        "iss": JWT_ISSUER,
        "typ": "temporary",
        "pwd": password_stamp(user["password_hash"]),
    }
    return {"status": "ok", "token": jwt.encode(claims, secret or jwt_secret(), algorithm=JWT_ALGORITHM)}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry(valid_days: object = None, expires: object = None, *, at: datetime | None = None) -> datetime | None:
    """When a permanent token expires: valid_days (a number >= 1, default 1) from now, or expires ("never" or
    an ISO 8601 time in the future; UTC when it has no zone). None means never."""
    t = at or now()
    if valid_days is not None and expires is not None:
        raise BadRequest("give valid_days or expires, not both")
    if expires is None:
        return t + timedelta(days=_days(1 if valid_days is None else valid_days, "valid_days", integer=False))
    if isinstance(expires, str) and expires.strip().lower() == "never":
        return None
    try:
        when = datetime.fromisoformat(str(expires).strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f'expires must be "never" or an ISO 8601 time, got {expires!r}') from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= t:
        raise BadRequest(f"expires {_iso(when)} is not in the future")
    return when


def create_token(
    lake: Lake,
    user_id: str,
    *,
    valid_days: object = None,
    expires: object = None,
    not_after: datetime | None = None,
) -> dict:
    """The seed's /token/create: a new permanent token (shown only here; the lake keeps its hash).

    not_after: the expiry of the credential that asks for it; the token expires then at the latest (its
    `capped` says so), so a short-lived credential cannot mint a longer-lived one."""
    t = now()
    until = expiry(valid_days, expires, at=t)
    capped = not_after is not None and (until is None or until > not_after)
    if capped:
        until = not_after
    token, token_id = str(uuid.uuid4()), str(uuid.uuid4())
    lake.append(
        "tokens",
        [{"token_id": token_id, "user_id": user_id, "token_hash": token_hash(token), "created": t, "expires": until}],
    )
    return {
        "status": "ok",
        "message": "new token created",
        "token": {
            "token": token,
            "token_id": token_id,
            "created": _iso(t),
            "expires": _iso(until) or "never",
            "capped": capped,
        },
    }


def list_tokens(lake: ReadLake, user_id: str) -> list[dict]:
    """The seed's /tokens: a user's permanent tokens (ids and expiry; the tokens themselves are not kept)."""
    rows = lake.read("tokens", where={"user_id": user_id}, columns=["token_id", "created", "expires"]).to_pylist()
    t = now()
    return [
        {
            "token_id": r["token_id"],
            "created": _iso(r["created"]),
            "expires": _iso(r["expires"]) or "never",
            "expired": r["expires"] is not None and r["expires"] <= t,
        }
        for r in sorted(rows, key=lambda r: r["created"])
    ]


MISSING = (
    "missing token: send a temporary token (from POST /user/login) in the 'token' header, or a permanent token "
    "(from POST /token/create or `enface token create`) as the 'token' parameter"
)


def authenticate(lake: ReadLake, *, header: str | None, param: str | None, secret: str) -> dict:
    """The user a request acts for: a JWT in the `token` header, or a permanent token as the `token` parameter.

    The result has the user's id and email, `via` and `expires` (when the credential ends; None = never)."""
    if header:
        try:
            claims = jwt.decode(
                header,
                secret,
                algorithms=[JWT_ALGORITHM],
                issuer=JWT_ISSUER,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("temporary token expired: log in again (POST /user/login)") from None
        except jwt.PyJWTError:
            raise Unauthorized("the 'token' header does not hold a valid temporary token") from None
        rows = lake.read("users", where={"user_id": str(claims["sub"])}).to_pylist()
        if not rows:
            raise Unauthorized("the temporary token's user no longer exists")
        if claims.get("pwd") != password_stamp(rows[0]["password_hash"]):
            raise Unauthorized("the temporary token was revoked (the password changed since): log in again")
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        return {"user_id": rows[0]["user_id"], "email": rows[0]["email"], "via": "temporary", "expires": expires}
    if param:
        try:
            token = str(uuid.UUID(param))
        except (ValueError, TypeError, AttributeError):
            raise Unauthorized("the 'token' parameter is not a permanent token (a uuid)") from None
        rows = lake.read("tokens", where={"token_hash": token_hash(token)}).to_pylist()
        if not rows:
            raise Unauthorized("unknown permanent token")
        row = rows[0]
        if row["expires"] is not None and row["expires"] <= now():
            raise Unauthorized(f"permanent token expired at {_iso(row['expires'])}")
        user = get_user(lake, row["user_id"])
        if user is None:
            raise Unauthorized("the permanent token's user no longer exists")
        return {**user, "via": "permanent", "expires": row["expires"]}
    raise Unauthorized(MISSING)
