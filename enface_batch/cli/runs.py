"""The commands that analyse archives into the lake: `enface action`, `apply`, `run` (the scan flow), `dedup`,
`enrol`, `reindex`, `schedule`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .. import imaging
from . import (
    EXIT_STORAGE,
    Bbox,
    BboxPro,
    FeatureCheck,
    Features,
    LakeOpt,
    ListId,
    Multi,
    Quiet,
    SquareMin,
    Threshold,
    Thumb,
    YawMax,
    _analyzer,
    _fail,
    _features,
    _lake,
    _print,
    _run,
    _writes,
    app,
)
from .progress import Reporter


@app.command("action")
@_writes
def action_cmd(
    images: Annotated[list[str], typer.Argument(help="Images or folders")],
    group_id: Annotated[str | None, typer.Option("--group-id")] = None,
    source_id: Annotated[str | None, typer.Option("--source-id")] = None,
    person_list_search: Annotated[list[str] | None, typer.Option("--person-list-search", help="Repeatable")] = None,
    person_list_add: Annotated[list[str] | None, typer.Option("--person-list-add", help="Repeatable")] = None,
    new_person_threshold: Threshold = None,
    new_person_square_min: SquareMin = None,
    new_person_yaw_max: YawMax = None,
    features: Features = None,
    feature_check: FeatureCheck = None,
    results: Annotated[int, typer.Option("--results", help="Matches to return per face, 1..100")] = 1,
    multi: Multi = False,
    drop_image: Annotated[
        bool, typer.Option("--drop-image", help="Do not keep the image in the actions history")
    ] = False,
    bbox: Bbox = False,
    bbox_pro: BboxPro = False,
    thumb: Thumb = False,
    all_files: Annotated[bool, typer.Option("--all-files")] = False,
    lake: LakeOpt = None,
) -> None:
    """Search faces in the group's person lists and create persons where the source's rules allow."""
    from ..ops.action import action

    wanted = _features(features, feature_check)
    uris = list(imaging.list_images(images, all_files=all_files))
    if not uris:
        _fail(f"no images found under {' '.join(images)}")
    _run(
        action,
        _lake(lake),
        _analyzer(),
        uris,
        results=results,
        multi=multi,
        bbox=bbox,
        bbox_pro=bbox_pro,
        thumb=thumb,
        drop_image=drop_image,
        group_id=group_id,
        source_id=source_id,
        person_list_search=person_list_search,
        person_list_add=person_list_add,
        new_person_threshold=new_person_threshold,
        new_person_square_min=new_person_square_min,
        new_person_yaw_max=new_person_yaw_max,
        feature_check=wanted,
    )


@app.command("apply")
@_writes
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="YAML file of lists, groups and sources (see configs/example.yaml)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing")] = False,
    lake: LakeOpt = None,
) -> None:
    """Create or update the person lists, groups and sources a YAML file describes; unchanged ones stay as they are."""
    from ..lake.store import Lake
    from ..ops import config

    def run() -> dict:
        cfg = config.load(file)  # a bad file fails here, before the lake is opened (or created)
        # --dry-run does not create a missing lake: it plans against the seed's defaults.
        return config.apply(Lake(lake, create=False) if dry_run else _lake(lake), cfg, dry_run=dry_run)

    _run(run)


def _offline_prefect() -> None:
    """Prefect must not phone home: this tool runs where only the package registries are reachable."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _flow(flow_, **kwargs):
    """Run a flow the way `enface run` runs the scan: recorded by the configured Prefect server, or else by a
    temporary one that starts with the command and stops after it (its runs stay in PREFECT_HOME's database)."""
    from ..flows import prefect_server

    return prefect_server.run_flow(flow_, **kwargs)


def _start_prefect() -> None:
    """Launch the temporary Prefect server first, so its start-up overlaps the imports and model loading."""
    _offline_prefect()
    from ..flows import prefect_server

    prefect_server.start()


def _flow_analyzer() -> None:
    """Load the models the flows share (flows.scan.worker_analyzer) up front: a missing or bad pack is a
    one-line error here rather than a failed flow run."""
    from ..flows.scan import worker_analyzer
    from ..models import PackError
    from ..models.fetch import ModelFetchError

    try:
        worker_analyzer()
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), 1)


@app.command("run")
@_writes
def run_cmd(
    sources: Annotated[
        list[str] | None, typer.Argument(help="Source names or ids; none = every source with a uri")
    ] = None,
    runner: Annotated[str, typer.Option("--runner", help="threads, processes or dask")] = "threads",
    workers: Annotated[int | None, typer.Option("--workers", help="Analysis workers (default: one per core)")] = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Scheduler of an existing Dask cluster (tcp://host:8786)")
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="At most this many images (and 16 MB of files) per worker task")
    ] = 64,
    lake: LakeOpt = None,
    quiet: Quiet = False,
) -> None:
    """Run the scan flow: analyse every new image of the sources, search and auto-enrol, write the tables."""
    _offline_prefect()
    from ..flows import prefect_server

    prefect_server.start()  # before the heavy imports below, so the server's start-up overlaps them
    from ..flows.scan import run_scan
    from ..scan import StorageFailure

    report = Reporter(quiet, prefect_logs=True)
    try:
        with report:
            summaries = run_scan(
                sources or None,
                lake=lake,
                runner=runner,
                workers=workers,
                dask_address=dask_address,
                chunk_size=chunk_size,
                on_progress=report if report.enabled else None,
            )
    except ValueError as exc:
        _fail(str(exc))
    except StorageFailure as exc:
        _print(
            {"status": "error", "code": 503, "reason": "storage_error", "message": str(exc), "sources": exc.summaries}
        )
        _fail(str(exc), EXIT_STORAGE, printed=True)
    except Exception as exc:  # the store failed outright (listing a source, or the lake itself)
        from ..fsio import is_transient

        if not is_transient(exc):
            raise
        _fail(
            f"the storage failed ({type(exc).__name__}: {exc}); the run stopped, what it committed is kept, and the "
            "next run carries on",
            EXIT_STORAGE,
        )
    _print({"status": "ok", "sources": summaries})


@app.command("dedup")
@_writes
def dedup_cmd(
    list_id: Annotated[str, typer.Option("--list-id", help="The person list to deduplicate")],
    threshold: Annotated[
        str, typer.Option("--threshold", help="Enface score two persons must reach to merge: 80, 85, 90, 95, no_match")
    ] = "90",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the merges; write nothing")] = False,
    lake: LakeOpt = None,
    quiet: Quiet = False,
) -> None:
    """Merge the persons of a list that are the same person into the oldest of them (faces and fields kept)."""
    _start_prefect()
    from ..flows.maintenance import dedup_flow
    from ..flows.progress import reporting

    with Reporter(quiet, unit="faces", prefect_logs=True) as report, reporting(report if report.enabled else None):
        _run(_flow, dedup_flow, list_id=list_id, lake=lake, threshold=threshold, dry_run=dry_run)


@app.command("enrol")
@_writes
def enrol_cmd(
    source: Annotated[str, typer.Argument(help="Folder-per-person tree, or a CSV manifest (image,list,fields,person)")],
    list_id: ListId = None,
    drop_image: Annotated[bool, typer.Option("--drop-image")] = False,
    new_person_threshold: Annotated[
        str | None, typer.Option("--new-person-threshold", help="Skip faces already matching someone (80..95)")
    ] = None,
    lake: LakeOpt = None,
    quiet: Quiet = False,
) -> None:
    """Create persons from a folder-per-person tree or a CSV manifest."""
    _start_prefect()
    from ..flows.maintenance import enrol_flow
    from ..flows.progress import reporting

    _flow_analyzer()
    with Reporter(quiet, prefect_logs=True) as report, reporting(report if report.enabled else None):
        _run(
            _flow,
            enrol_flow,
            source=source,
            list_id=list_id,
            lake=lake,
            drop_image=drop_image,
            new_person_threshold=new_person_threshold,
        )


@app.command("reindex")
@_writes
def reindex_cmd(
    list_id: Annotated[list[str] | None, typer.Option("--list-id", help="Only these lists; repeatable")] = None,
    lake: LakeOpt = None,
) -> None:
    """Rebuild the FAISS indexes of person lists from the persons table."""
    _start_prefect()
    from ..flows.maintenance import reindex_flow

    _flow_analyzer()
    _run(_flow, reindex_flow, lake=lake, list_ids=list_id)


@app.command("schedule")
def schedule_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="Source names or ids; none = all with a uri")] = None,
    cron: Annotated[
        str, typer.Option("--cron", help="When to scan, cron syntax (default: nightly at 02:00)")
    ] = "0 2 * * *",
    name: Annotated[str, typer.Option("--name", help="Deployment name")] = "nightly-scan",
    runner: Annotated[str, typer.Option("--runner")] = "threads",
    workers: Annotated[int | None, typer.Option("--workers")] = None,
    lake: LakeOpt = None,
) -> None:
    """Serve the scan flow on a schedule (a long-running process; point PREFECT_API_URL at a Prefect server)."""
    _offline_prefect()
    from ..flows.scan import make_runner, scan

    flow_ = scan.with_options(task_runner=make_runner(runner, workers))
    flow_.serve(
        name=name,
        cron=cron,
        pause_on_shutdown=False,
        parameters={"sources": sources or None, "lake": lake, "workers": workers},
    )
