"""The seed's query routes (the Enface REST API's, read-only): login, tokens, groups, sources, lists, persons,
detect, compare and a search-only action."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from .. import auth
from ..analyze import FeatureUnavailable
from ..lake.reader import Snapshot
from ..ops import catalog, persons, uploads, validate
from ..ops.errors import BadRequest, Forbidden
from .deps import Caller, CallerDep, snapshot, state_of
from .requests import (
    Flag,
    FormToken,
    LoginBody,
    PersonBody,
    SourcesBody,
    Strings,
    TokenCreateBody,
    read_uploads,
    strings,
)
from .responses import EnfaceJSON, error
from .security import Throttled

MAX_DETECT_IMAGES = 100


def _analysis(caller: Caller, fn, *args, **kwargs):
    state = caller.state
    analyzer = state.analyzer()
    with state.model_slots:
        try:
            return fn(analyzer, *args, **kwargs)
        except FeatureUnavailable as exc:
            raise BadRequest(str(exc)) from exc


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
    files = read_uploads(images)
    return _analysis(
        caller,
        uploads.detect_uploads,
        files,
        features=strings(feature_check),
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
    files = read_uploads(images)
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
    if uploads.asks_for_creation(new_person_threshold, strings(person_list_add)):
        raise BadRequest(uploads.SEARCH_ONLY)
    (upload,) = read_uploads([image])
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
            person_list_search=strings(person_list_search),
            feature_check=strings(feature_check),
        ),
    )
