"""The read-only endpoint: the Enface REST API's query routes over the lake, also under /v1, plus a few GET
routes and one HTML page for browsing. It never changes face data; the only rows it writes are permanent
tokens (/token/create).

Every request reads one snapshot of the lake (one Delta version per table, pinned on first use) and new
commits are picked up at the next request. Models load once per process, on the first request that needs
them. Auth: a temporary token (JWT from /user/login) in the `token` header, or a permanent token as the
`token` parameter (query, form field or JSON field).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import auth
from ..analyze import Analyzer
from ..ops.errors import EnfaceError
from ..settings import get_settings
from . import browse_routes, seed_routes
from .limits import BodyGate
from .responses import EnfaceJSON, error
from .security import SecurityHeaders
from .state import AppState
from .write_routes import add_write_routes

FORM_SLACK = 256 * 1024  # multipart headers and text fields on top of the images


def routes() -> APIRouter:
    """Every route, in the order the schema lists them: the seed's, its write routes (405), then browsing."""
    router = APIRouter(default_response_class=EnfaceJSON)
    router.include_router(seed_routes.router)
    add_write_routes(router)
    router.include_router(browse_routes.router)
    return router


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header"))
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(lake: str | None = None, *, secret: str | None = None, analyzer: Analyzer | None = None) -> FastAPI:
    """The endpoint over a lake (ENFACE_LAKE by default); refuses to start without ENFACE_JWT_SECRET."""
    state = AppState(lake, secret=secret, analyzer=analyzer)
    app = FastAPI(
        title="enface-batch read-only endpoint",
        version="1.0",
        description=__doc__,
        default_response_class=EnfaceJSON,
        # Swagger/ReDoc pages load script from a CDN into the origin that holds the users' tokens; the schema
        # stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.enface = state
    router = routes()
    app.include_router(router)
    app.include_router(router, prefix="/v1", include_in_schema=False)

    @app.exception_handler(EnfaceError)
    async def enface_error(_: Request, exc: EnfaceError):
        headers = {"WWW-Authenticate": "token"} if exc.status_code == 401 else None
        return error(exc.status_code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        return error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.get("/health", include_in_schema=False)
    def health():
        return {"status": "ok", "models_loaded": state._analyzer is not None}

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/ui")

    @app.get("/ui", include_in_schema=False, response_class=HTMLResponse)
    def page():
        return HTMLResponse(_static("index.html"))

    # The page's script and style are files, not inline, so its Content-Security-Policy can forbid inline code.
    @app.get("/ui/app.js", include_in_schema=False)
    def page_script():
        return Response(_static("app.js"), media_type="text/javascript")

    @app.get("/ui/app.css", include_in_schema=False)
    def page_style():
        return Response(_static("app.css"), media_type="text/css")

    def authenticate(scope, header: str | None, param: str | None) -> None:
        auth.authenticate(state.reader.snapshot(), header=header, param=param, secret=state.secret)

    app.add_middleware(BodyGate, limit=get_settings().api_max_request_bytes + FORM_SLACK, authenticate=authenticate)
    app.add_middleware(SecurityHeaders)  # outermost: also on the gate's refusals
    return app


def _static(name: str) -> str:
    return resources.files("enface_batch.api").joinpath("static", name).read_text()
