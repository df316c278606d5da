"""Beyond the seed: GET routes for browsing a lake (pages of persons, a person's faces and photos, a source's
images, a photo itself)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..ops import browse, validate
from .deps import CallerDep
from .images import image_response
from .responses import EnfaceJSON
from .seed_routes import ERRORS

router = APIRouter(default_response_class=EnfaceJSON)
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=browse.MAX_PAGE)]
NOT_FOUND = {**ERRORS, 404: {"description": "Not Found"}}


@router.get("/browse/lists/{list_id}/persons", tags=["browse"], responses=NOT_FOUND)
def browse_persons(
    caller: CallerDep,
    list_id: str,
    offset: Offset = 0,
    limit: Limit = 50,
    thumbs: bool = True,
    sort: Annotated[Literal["photos", "created"], Query(description="photos: most photos, then newest")] = "photos",
):
    """A page of a list's persons (most photos first, or oldest first with sort=created), each with its name
    (first field), fields, face and photo counts and 112x112 thumb (base64 JPEG)."""
    caller.user()
    return browse.list_persons(caller.snap, list_id, offset=offset, limit=limit, thumbs=thumbs, sort=sort)


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


@router.get("/browse/lists/{list_id}/persons/{person_id}/photos", tags=["browse"], responses=NOT_FOUND)
def browse_person_photos(
    caller: CallerDep, list_id: str, person_id: str, offset: Offset = 0, limit: Limit = 50, thumbs: bool = True
):
    """A page of every photo the person is in, newest first: each face's thumb, how it came to the person, its
    match score, and the photo (served by /browse/images/{sha256})."""
    caller.user()
    lid = validate.uuid_str(list_id, "list_id")
    return browse.person_photos(caller.snap, person_id, lid, offset=offset, limit=limit, thumbs=thumbs)


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
