"""The read-only endpoint: the Enface REST API's query routes over the lake, also under /v1, plus a few GET
routes and one HTML page for browsing. It never changes face data; the only rows it writes are permanent
tokens (/token/create).

Every request reads one snapshot of the lake (one Delta version per table, pinned on first use) and new
commits are picked up at the next request. Models load once per process, on the first request that needs
them. Auth: a temporary token (JWT from /user/login) in the `token` header, or a permanent token as the
`token` parameter (query, form field or JSON field).
"""

from __future__ import annotations

import json
import math
import threading
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from deltalake import DeltaTable
from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import auth
from ..analyze import Analyzer, FeatureUnavailable
from ..lake.reader import LakeReader, Snapshot
from ..lake.schemas import TABLES
from ..lake.store import Lake
from ..ops import browse, catalog, persons, uploads, validate
from ..ops.errors import BadRequest, EnfaceError, Forbidden
from ..settings import get_settings
from .images import image_response
from .limits import BodyGate, check_pixel_budget
from .searcher import LiveIndexes
from .security import LoginThrottle, SecurityHeaders, Throttled

MAX_DETECT_IMAGES = 100
FORM_SLACK = 256 * 1024  # multipart headers and text fields on top of the images

# The seed's write routes and the command that does their job here.
WRITE_ROUTES: dict[str, tuple[str, str]] = {
    "/person/create": (
        "POST",
        "enface person create IMAGE --list-id LIST_ID [--field TEXT]  (or enface enrol, or the scan flow: enface run)",
    ),
    "/person/update": ("POST", "enface person update --person-id PERSON_ID [--list-id LIST_ID] [--field TEXT]"),
    "/person/delete": ("DELETE", "enface person delete --person-id PERSON_ID [--list-id LIST_ID]"),
    "/person/list/create": ("POST", "enface list create NAME"),
    "/source/create": ("POST", "enface source create NAME --group-id GROUP_ID  (or enface apply CONFIG.yaml)"),
    "/source/group/create": ("POST", "enface group create NAME --person-list-search LIST_ID"),
}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class ModelsUnavailable(EnfaceError):
    status_code = 503


# -- state shared by the requests of one process ------------------------------------------------------------
class AppState:
    def __init__(self, lake: str | None = None, *, secret: str | None = None, analyzer: Analyzer | None = None):
        self.secret = secret or auth.jwt_secret()
        self.lake = open_lake(lake)
        self.reader = LakeReader(self.lake)
        self._analyzer = analyzer
        self._live: LiveIndexes | None = None
        self._load_lock = threading.Lock()
        self.write_lock = threading.Lock()
        # Few analyses at once: onnxruntime already spreads one over every core; queueing the rest here keeps
        # latency predictable instead of thrashing the cores (ENFACE_API_MODEL_SLOTS, see bench/api_load.py).
        self.model_slots = threading.BoundedSemaphore(get_settings().api_model_slots)
        self.throttle = LoginThrottle()

    def analyzer(self) -> Analyzer:
        if self._analyzer is None:
            with self._load_lock:
                if self._analyzer is None:
                    from ..models import PackError, load_pack
                    from ..models.fetch import ModelFetchError

                    try:
                        self._analyzer = Analyzer(load_pack())
                    except (ModelFetchError, PackError) as exc:
                        raise ModelsUnavailable(f"models could not be loaded: {exc}") from exc
        return self._analyzer

    def live(self) -> LiveIndexes:
        if self._live is None:
            dim = self.analyzer().pack.embedder.dim
            with self._load_lock:
                if self._live is None:
                    self._live = LiveIndexes(self.reader, dim)
        return self._live


def open_lake(uri: str | None) -> Lake:
    """The lake to serve; a missing lake is an error (a typo must not serve an empty new lake)."""
    lake = Lake(uri, create=False)
    if not DeltaTable.is_deltatable(lake.table_uri("persons"), storage_options=lake.options):
        raise auth.ConfigError(
            f"no lake at {lake.uri} (ENFACE_LAKE or --lake): create one with any enface command, "
            f"e.g. `enface list ls --lake {lake.uri}`"
        )
    if not all(DeltaTable.is_deltatable(lake.table_uri(t), storage_options=lake.options) for t in TABLES):
        lake = Lake(lake.uri)  # tables added since the lake was made: create the missing ones
    return lake


# -- responses ----------------------------------------------------------------------------------------------
def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return None
    return str(obj)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class EnfaceJSON(JSONResponse):
    """JSON without FastAPI's re-encoding pass; numpy scalars become numbers, NaN/inf become null."""

    def render(self, content) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, default=_plain)
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, default=_plain)
        return text.encode()


def error(status: int, message: str, headers: dict | None = None) -> EnfaceJSON:
    return EnfaceJSON({"status": "error", "message": message}, status_code=status, headers=headers)


# -- auth and per-request snapshot ---------------------------------------------------------------------------
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


# -- request bodies ------------------------------------------------------------------------------------------
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


def _strings(values: list[str] | None) -> list[str] | None:
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


def _read(files: list[UploadFile]) -> list[tuple[str, bytes]]:
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


def _analysis(caller: Caller, fn, *args, **kwargs):
    state = caller.state
    analyzer = state.analyzer()
    with state.model_slots:
        try:
            return fn(analyzer, *args, **kwargs)
        except FeatureUnavailable as exc:
            raise BadRequest(str(exc)) from exc


# -- routes ---------------------------------------------------------------------------------------------------
router = APIRouter(default_response_class=EnfaceJSON)
ERRORS = {400: {"description": "Bad Request"}, 401: {"description": "Unauthorized"}}


@router.post("/user/login", tags=["users"], responses={400: ERRORS[400], 403: {"description": "Invalid credentials"}})
def user_login(body: LoginBody, snap: Annotated[Snapshot, Depends(snapshot)], request: Request):
    """User login: a JWT temporary token valid `valid_days` days, to send in the `token` header. Failed logins
    are throttled per account and per client address: 429 with Retry-After while locked."""
    state = state_of(request)
    account = auth.normalise_email(body.email)
    address = request.client.host if request.client else "unknown"
    try:
        state.throttle.check(account, address)
    except Throttled as exc:
        return error(429, str(exc), {"Retry-After": str(exc.retry_after)})
    try:
        out = auth.login(snap, account, body.password, body.valid_days, secret=state.secret)
    except Forbidden:
        state.throttle.failed(account, address)
        raise
    state.throttle.succeeded(account)
    return out


@router.get("/tokens", tags=["tokens"], responses={401: ERRORS[401]})
def tokens(caller: CallerDep):
    """The user's permanent tokens (ids and expiry; tokens are stored hashed and shown only when created)."""
    user = caller.user()
    return auth.list_tokens(caller.snap, user["user_id"])


@router.post("/token/create", tags=["tokens"], status_code=201, responses=ERRORS)
def token_create(body: TokenCreateBody, caller: CallerDep):
    """Create a permanent token valid `valid_days` days (default 1) or until `expires` (a time or "never"), but
    never past the expiry of the token that asks for it (then `capped` is true): only the operator's CLI
    (`enface token create`) makes tokens that outlive every other credential."""
    user = caller.user(body.token)
    with caller.state.write_lock:
        return auth.create_token(
            caller.state.lake,
            user["user_id"],
            valid_days=body.valid_days,
            expires=body.expires,
            not_after=user["expires"],
        )


@router.get("/source/groups", tags=["data source groups"], responses={401: ERRORS[401]})
def source_groups(caller: CallerDep):
    """All data-source groups."""
    caller.user()
    return catalog.list_groups(caller.snap)


@router.post("/sources", tags=["data sources"], responses={**ERRORS, 404: {"description": "Group not found"}})
def sources(body: SourcesBody, caller: CallerDep):
    """The data sources of a group."""
    caller.user(body.token)
    return catalog.list_sources(caller.snap, validate.uuid_str(body.group_id, "group_id"))


@router.get("/person/lists", tags=["person lists"], responses={401: ERRORS[401]})
def person_lists(caller: CallerDep):
    """All person lists with their person counts."""
    caller.user()
    return catalog.list_lists(caller.snap)


@router.post("/person", tags=["persons"], responses={**ERRORS, 404: {"description": "Not Found"}})
def person(body: PersonBody, caller: CallerDep):
    """A person record by id (in the default list unless list_id is given)."""
    caller.user(body.token)
    return persons.get_person(caller.snap, body.person_id, body.list_id)


@router.post("/detect", tags=["actions"], responses=ERRORS)
def detect(
    caller: CallerDep,
    images: Annotated[list[UploadFile], File(description="1 to 100 images, up to 10 MB together")],
    bbox: Flag = False,
    bbox_pro: Flag = False,
    multi: Flag = False,
    thumb: Flag = False,
    feature_check: Strings = None,
    token: FormToken = None,
):
    """Faces and their features on each image (only the largest face unless multi)."""
    caller.user(token)
    if not 1 <= len(images) <= MAX_DETECT_IMAGES:
        raise BadRequest(f"detect takes 1 to {MAX_DETECT_IMAGES} images, got {len(images)}")
    files = _read(images)
    return _analysis(
        caller,
        uploads.detect_uploads,
        files,
        features=_strings(feature_check),
        multi=multi,
        bbox=bbox,
        bbox_pro=bbox_pro,
        thumb=thumb,
    )


@router.post("/compare", tags=["actions"], responses=ERRORS)
def compare(
    caller: CallerDep,
    images: Annotated[list[UploadFile], File(description="Exactly 2 images")],
    bbox: Flag = False,
    bbox_pro: Flag = False,
    multi: Flag = False,
    thumb: Flag = False,
    token: FormToken = None,
):
    """Faces of image 1 against faces of image 2, with Enface % scores; `score` is the best pair."""
    caller.user(token)
    if len(images) != 2:
        raise BadRequest(f"compare takes exactly 2 images, got {len(images)}")
    files = _read(images)
    return _analysis(caller, uploads.compare_uploads, files, multi=multi, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)


Threshold = Literal["80", "85", "90", "95", "no_match", "never"]


@router.post("/action", tags=["actions"], responses={**ERRORS, 404: {"description": "List, group or source"}})
def action(
    caller: CallerDep,
    image: Annotated[UploadFile, File(description="Image to search (up to 10 MB)")],
    bbox: Flag = False,
    bbox_pro: Flag = False,
    multi: Flag = False,
    thumb: Flag = False,
    drop_image: Flag = False,
    feature_check: Strings = None,
    group_id: Annotated[str | None, Form()] = None,
    source_id: Annotated[str | None, Form()] = None,
    person_list_search: Strings = None,
    results: Annotated[int, Form(ge=1, le=100)] = 1,
    new_person_threshold: Annotated[
        Threshold | None, Form(description="Only 'never' here: this endpoint creates no persons")
    ] = None,
    person_list_add: Annotated[
        list[str] | None, Form(description="Refused: persons are created by the scan flow or the CLI")
    ] = None,
    new_person_yaw_max: Annotated[int | None, Form()] = None,
    new_person_square_min: Annotated[int | None, Form()] = None,
    token: FormToken = None,
):
    """Search each face (the largest unless multi) in the group's or the given person lists: the best
    `results` matches with Enface % scores. Creates nothing: asking for creation (new_person_threshold other
    than never, or person_list_add) is a 400 that says where persons are created."""
    caller.user(token)
    if new_person_yaw_max is not None:
        validate.angle(new_person_yaw_max)
    if new_person_square_min is not None:
        validate.square(new_person_square_min)
    if uploads.asks_for_creation(new_person_threshold, _strings(person_list_add)):
        raise BadRequest(uploads.SEARCH_ONLY)
    (upload,) = _read([image])
    searcher = caller.state.live().bind(caller.snap)
    return _analysis(
        caller,
        lambda an: uploads.search_upload(
            caller.snap,
            an,
            searcher,
            upload,
            results=results,
            multi=multi,
            bbox=bbox,
            bbox_pro=bbox_pro,
            thumb=thumb,
            group_id=group_id,
            source_id=source_id,
            person_list_search=_strings(person_list_search),
            feature_check=_strings(feature_check),
        ),
    )


def _write_route(path: str, method: str, command: str):
    def refuse():
        return error(
            405,
            f"{path} is not served: this endpoint is read-only. Use the command line: {command}",
            {"Allow": ""},
        )

    refuse.__name__ = "refuse_" + path.strip("/").replace("/", "_")
    refuse.__doc__ = f"Not served (read-only endpoint): 405 naming the command that does it, `{command}`."
    router.add_api_route(
        path, refuse, methods=[method], tags=["not served"], responses={405: {"description": "Use the CLI"}}
    )
    others = [m for m in ALL_METHODS if m != method]
    router.add_api_route(path, refuse, methods=others, include_in_schema=False)


for _path, (_method, _command) in WRITE_ROUTES.items():
    _write_route(_path, _method, _command)


# -- beyond the seed: browsing ---------------------------------------------------------------------------------
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=browse.MAX_PAGE)]
NOT_FOUND = {**ERRORS, 404: {"description": "Not Found"}}


@router.get("/browse/lists/{list_id}/persons", tags=["browse"], responses=NOT_FOUND)
def browse_persons(caller: CallerDep, list_id: str, offset: Offset = 0, limit: Limit = 50, thumbs: bool = True):
    """A page of a list's persons, oldest first, with fields, face counts and 112x112 thumbs (base64 JPEG)."""
    caller.user()
    return browse.list_persons(caller.snap, list_id, offset=offset, limit=limit, thumbs=thumbs)


@router.get("/browse/lists/{list_id}/persons/{person_id}", tags=["browse"], responses=NOT_FOUND)
def browse_person(
    caller: CallerDep,
    list_id: str,
    person_id: str,
    thumbs: bool = True,
    appearances: Annotated[int, Query(ge=0, le=browse.MAX_PAGE)] = 50,
    min_score: Annotated[str | None, Query(description="Score in % or no_match (default)")] = None,
):
    """A person with every face (thumb, face crop, the image it came from) and the scanned photos whose faces
    matched it best (appearances, newest first, at min_score or more)."""
    caller.user()
    lid = validate.uuid_str(list_id, "list_id")
    return browse.person_detail(
        caller.snap, person_id, lid, thumbs=thumbs, appearances=appearances, min_score=min_score
    )


@router.get("/browse/sources/{source_id}/images", tags=["browse"], responses=NOT_FOUND)
def browse_images(
    caller: CallerDep,
    source_id: str,
    offset: Offset = 0,
    limit: Limit = 50,
    status: Annotated[Literal["faces", "no_faces", "error"] | None, Query()] = None,
):
    """A page of a source's scanned images (by uri) with their status and faces."""
    caller.user()
    return browse.source_images(caller.snap, source_id, offset=offset, limit=limit, status=status)


@router.get(
    "/browse/images/{sha256}",
    tags=["browse"],
    response_class=Response,
    responses={
        **NOT_FOUND,
        410: {"description": "The file changed since it was scanned"},
        200: {
            "content": {"image/jpeg": {}, "image/png": {}, "image/gif": {}, "image/webp": {}},
            "description": "The photo",
        },
    },
)
def browse_image(caller: CallerDep, sha256: str):
    """The photo with this content hash, read from where it was scanned or enrolled from, only if its bytes
    still hash to it and it is an image (see enface_batch/api/images.py)."""
    caller.user()
    return image_response(caller.snap, sha256)


# -- the app ---------------------------------------------------------------------------------------------------
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
