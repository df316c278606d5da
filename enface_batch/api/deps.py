"""Per-request dependencies: the request's lake snapshot and its caller (the token in the header, the query,
a form field or a JSON field)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery

from .. import auth
from ..lake.reader import Snapshot
from .state import AppState

header_token = APIKeyHeader(
    name="token",
    scheme_name="temporaryToken",
    auto_error=False,
    description="Temporary token: the JWT POST /user/login returns.",
)
query_token = APIKeyQuery(
    name="token",
    scheme_name="permanentToken",
    auto_error=False,
    description="Permanent token (uuid) from POST /token/create or `enface token create`; also accepted as a "
    "form or JSON field named token.",
)


def state_of(request: Request) -> AppState:
    return request.app.state.enface


def snapshot(request: Request) -> Snapshot:
    """One snapshot per request (FastAPI caches it, so auth and the route share it)."""
    return state_of(request).reader.snapshot()


class Caller:
    def __init__(
        self,
        request: Request,
        snap: Annotated[Snapshot, Depends(snapshot)],
        header: Annotated[str | None, Security(header_token)] = None,
        query: Annotated[str | None, Security(query_token)] = None,
    ) -> None:
        self.state, self.snap, self.header, self.query = state_of(request), snap, header, query

    def user(self, body_token: str | None = None) -> dict:
        """The authenticated user, or 401."""
        return auth.authenticate(
            self.snap, header=self.header, param=self.query or body_token, secret=self.state.secret
        )


CallerDep = Annotated[Caller, Depends()]
