"""Request bodies and form fields of the seed's routes, and reading uploaded images within the limits."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Form, UploadFile
from pydantic import BaseModel, Field

from .. import auth
from ..ops.errors import BadRequest
from ..settings import get_settings
from .limits import check_pixel_budget

TOKEN_FIELD = "Permanent token (uuid), when no temporary token is in the 'token' header"


class LoginBody(BaseModel):
    email: str = Field(..., max_length=320, description="User's email address", examples=["user@example.com"])
    password: str = Field(..., min_length=6, max_length=1024, description="User's password")
    valid_days: int = Field(1, ge=1, le=auth.MAX_DAYS, description="Temporary token expiration days")


class TokenCreateBody(BaseModel):
    valid_days: float | None = Field(None, ge=1, le=auth.MAX_DAYS, description="Valid days count (default 1)")
    expires: str | None = Field(None, max_length=64, description='"never" or an ISO 8601 time')
    token: str | None = Field(None, description=TOKEN_FIELD)


class SourcesBody(BaseModel):
    group_id: str = Field(..., description="Sources group id (uuid)")
    token: str | None = Field(None, description=TOKEN_FIELD)


class PersonBody(BaseModel):
    person_id: str = Field(..., description="Person id (uuid)")
    list_id: str | None = Field(None, description="Person list id; the default list when left out")
    token: str | None = Field(None, description=TOKEN_FIELD)


Flag = Annotated[bool, Form()]
Strings = Annotated[list[str] | None, Form()]
FormToken = Annotated[str | None, Form(description=TOKEN_FIELD)]


def strings(values: list[str] | None) -> list[str] | None:
    """Repeated form fields, a JSON array in one field, or a comma-separated list."""
    if not values:
        return None
    out: list[str] = []
    for v in values:
        v = v.strip()
        if v.startswith("["):
            try:
                items = json.loads(v)
            except json.JSONDecodeError:
                raise BadRequest(f"not a JSON array: {v[:80]!r}") from None
            if not isinstance(items, list):
                raise BadRequest(f"not a JSON array: {v[:80]!r}")
            out.extend(str(x) for x in items)
        else:
            out.extend(x.strip() for x in v.split(","))
    return [x for x in out if x] or None


def read_uploads(files: list[UploadFile]) -> list[tuple[str, bytes]]:
    """The uploads' bytes, within the request byte limit and the request's decoded-pixel budget."""
    limit = get_settings().api_max_request_bytes
    out, total = [], 0
    for i, f in enumerate(files):
        data = f.file.read(limit + 1 - total)
        total += len(data)
        if total > limit:
            raise BadRequest(f"images are over {limit:,} bytes in one request (ENFACE_API_MAX_REQUEST_BYTES)")
        out.append((f.filename or f"image{i + 1}", data))
    check_pixel_budget(out)
    return out
