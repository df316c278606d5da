"""`enface list`, `enface group`, `enface source`: person lists, data-source groups and data sources."""

from __future__ import annotations

from typing import Annotated

import typer

from ..lake.schemas import SOURCE_DEFAULTS
from . import FeatureCheck, Features, LakeOpt, _features, _lake, _run, _writes, group_app, list_app, source_app


@list_app.command("create")
@_writes
def list_create(name: str, lake: LakeOpt = None) -> None:
    """Create a person list."""
    from ..ops.catalog import create_list

    _run(create_list, _lake(lake), name)


@list_app.command("ls")
def list_ls(lake: LakeOpt = None) -> None:
    """All person lists with their person counts."""
    from ..ops.catalog import list_lists

    _run(list_lists, _lake(lake))


@group_app.command("create")
@_writes
def group_create(
    name: str,
    person_list_search: Annotated[
        list[str] | None, typer.Option("--person-list-search", help="List id; repeatable")
    ] = None,
    lake: LakeOpt = None,
) -> None:
    """Create a data-source group that searches the given person lists."""
    from ..ops.catalog import create_group

    _run(create_group, _lake(lake), name, person_list_search)


@group_app.command("ls")
def group_ls(lake: LakeOpt = None) -> None:
    """All data-source groups."""
    from ..ops.catalog import list_groups

    _run(list_groups, _lake(lake))


@source_app.command("create")
@_writes
def source_create(
    name: str,
    group_id: Annotated[str, typer.Option("--group-id", help="The source's group")],
    uri: Annotated[str | None, typer.Option("--uri", help="Archive folder or URI (s3://bucket/prefix)")] = None,
    new_person_threshold: Annotated[str, typer.Option("--new-person-threshold")] = SOURCE_DEFAULTS[
        "new_person_threshold"
    ],
    new_person_square_min: Annotated[int, typer.Option("--new-person-square-min")] = SOURCE_DEFAULTS[
        "new_person_square_min"
    ],
    new_person_angle_max: Annotated[
        int, typer.Option("--new-person-angle-max", "--new-person-yaw-max")
    ] = SOURCE_DEFAULTS["new_person_angle_max"],
    person_list_add: Annotated[list[str] | None, typer.Option("--person-list-add", help="List id; repeatable")] = None,
    features: Features = None,
    feature_check: FeatureCheck = None,
    lake: LakeOpt = None,
) -> None:
    """Create a data source with the seed's auto-enrolment rules."""
    from ..ops.catalog import create_source

    wanted = _features(features, feature_check)
    _run(
        create_source,
        _lake(lake),
        name,
        group_id,
        uri=uri,
        new_person_threshold=new_person_threshold,
        new_person_square_min=new_person_square_min,
        new_person_angle_max=new_person_angle_max,
        person_list_add=person_list_add,
        feature_check=wanted,
    )


@source_app.command("ls")
def source_ls(
    group_id: Annotated[str | None, typer.Option("--group-id", help="Only this group's sources")] = None,
    lake: LakeOpt = None,
) -> None:
    """Data sources, all or of one group."""
    from ..ops.catalog import list_sources

    _run(list_sources, _lake(lake), group_id)
