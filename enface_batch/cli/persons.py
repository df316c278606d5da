"""`enface person`: create, get, photos, update, delete."""

from __future__ import annotations

from typing import Annotated

import typer

from ..lake.schemas import ACTION_DEFAULTS
from . import (
    Bbox,
    BboxPro,
    FeatureCheck,
    Features,
    LakeOpt,
    ListId,
    Multi,
    Thumb,
    _analyzer,
    _call,
    _features,
    _lake,
    _print,
    _run,
    _writes,
    person_app,
)
from .formats import Format, FormatOpt, emit_rows


@person_app.command("create")
@_writes
def person_create(
    image: str,
    list_id: ListId = None,
    replace_person_id: Annotated[str | None, typer.Option("--replace-person-id")] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", help="A string stored with the person; repeatable")
    ] = None,
    multi: Multi = False,
    drop_image: Annotated[bool, typer.Option("--drop-image", help="Keep only the embedding, no face image")] = False,
    new_person_threshold: Annotated[str, typer.Option("--new-person-threshold")] = ACTION_DEFAULTS[
        "new_person_threshold"
    ],
    new_person_yaw_max: Annotated[int, typer.Option("--new-person-yaw-max")] = ACTION_DEFAULTS["new_person_angle_max"],
    new_person_square_min: Annotated[int, typer.Option("--new-person-square-min")] = ACTION_DEFAULTS[
        "new_person_square_min"
    ],
    features: Features = None,
    feature_check: FeatureCheck = None,
    bbox: Bbox = False,
    bbox_pro: BboxPro = False,
    thumb: Thumb = False,
    lake: LakeOpt = None,
) -> None:
    """Create (or, with --replace-person-id, replace) a person from the faces of an image."""
    from ..ops.persons import create_person

    wanted = _features(features, feature_check)
    _run(
        create_person,
        _lake(lake),
        _analyzer(),
        image,
        list_id=list_id,
        replace_person_id=replace_person_id,
        fields=field,
        multi=multi,
        drop_image=drop_image,
        new_person_threshold=new_person_threshold,
        new_person_yaw_max=new_person_yaw_max,
        new_person_square_min=new_person_square_min,
        feature_check=wanted,
        bbox=bbox,
        bbox_pro=bbox_pro,
        thumb=thumb,
    )


@person_app.command("get")
def person_get(
    person_id: Annotated[str, typer.Option("--person-id")], list_id: ListId = None, lake: LakeOpt = None
) -> None:
    """A person record."""
    from ..ops.persons import get_person

    _run(get_person, _lake(lake), person_id, list_id)


@person_app.command("ls")
def person_ls(list_id: ListId = None, fmt: FormatOpt = Format.json, lake: LakeOpt = None) -> None:
    """A list's persons with how many photos and faces each is in, most photos first (then newest).

    JSON: a bare array of {person_id, list_id, fields, photos, faces, status, source_id, created, updated}.
    """
    from ..ops.persons import persons_of

    rows = _call(persons_of, _lake(lake), list_id)
    if fmt is Format.json:
        _print(rows)
        return
    cols = ["person_id", "fields", "photos", "faces", "created"]
    emit_rows(rows, cols if fmt is Format.table else [*cols, "updated", "status", "source_id", "list_id"], fmt)


@person_app.command("photos")
def person_photos(
    person_id: Annotated[str, typer.Option("--person-id")],
    list_id: ListId = None,
    fmt: FormatOpt = Format.json,
    lake: LakeOpt = None,
) -> None:
    """Every photo a person is in: each face, the paths its photo was seen at, how it came to the person.

    csv and table print one row per path, with match_score the face's Enface % against the person.
    """
    from ..ops.persons import person_photos as photos

    out = _call(photos, _lake(lake), person_id, list_id)
    if fmt is Format.json:
        _print(out)
        return
    rows = [{"path": path, **p, "match_score": p["score"]} for p in out["photos"] for path in p["paths"] or [None]]
    cols = ["path", "face_index", "how", "match_score", "added"]
    if fmt is Format.csv:
        cols = [*cols, "image_sha256", "source_id"]
    title = (
        f"{' | '.join(out['fields']) or out['person_id']}: {out['photos_total']} photo(s), {out['faces_total']} face(s)"
    )
    emit_rows(rows, cols, fmt, title=title)


@person_app.command("update")
@_writes
def person_update(
    person_id: Annotated[str, typer.Option("--person-id")],
    list_id: ListId = None,
    field: Annotated[list[str] | None, typer.Option("--field", help="Replaces the person's fields; repeatable")] = None,
    drop_image: Annotated[bool, typer.Option("--drop-image", help="Remove the stored face image")] = False,
    lake: LakeOpt = None,
) -> None:
    """Update a person's fields, or drop its image."""
    from ..ops.persons import update_person

    _run(update_person, _lake(lake), person_id, list_id=list_id, fields=field, drop_image=drop_image)


@person_app.command("delete")
@_writes
def person_delete(
    person_id: Annotated[str, typer.Option("--person-id")], list_id: ListId = None, lake: LakeOpt = None
) -> None:
    """Delete a person from a list."""
    from ..ops.persons import delete_person

    _run(delete_person, _lake(lake), person_id, list_id=list_id)
