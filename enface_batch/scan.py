"""Scanning a source: list its files, skip what is done, analyse the rest, apply the action rules, commit.

This module has no Prefect in it: flows/scan.py only decides where `analyze_chunk` runs (threads, processes,
a Dask cluster) and feeds the results to one `ScanWriter`, the single writer of the lake.

Idempotence and crash safety: a file whose (path, size, mtime) is unchanged is not read again; a file is hashed
and a content already in the source's images table is not analysed again (renames and copies), while an edited
file is. Each commit (every 256 images or 10 s) writes persons, faces and actions first and the images rows
last: an images row is the "done" marker. A run killed at any point leaves rows whose image has no marker; the next run
deletes exactly those before it starts (`recover`), then redoes their images, so nothing is duplicated or lost.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from . import fsio
from .analyze import Analyzer, ImageResult
from .imaging import TRANSIENT_REASONS
from .lake.store import Lake, now
from .ops.action import ActionEngine, Rules, resolve_rules
from .ops.catalog import get_source


@dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int
    mtime: str
    # Set when the listing already shows the file must not be read (a FIFO, a device, a link out of the
    # source): an imaging reason code and its message. Such files are recorded, never opened.
    refused: str | None = None
    message: str | None = None


class StorageFailure(RuntimeError):
    """A scan finished, but the storage failed for some reads: those files were not recorded and the next run
    retries them. Raised after everything else was committed, so the run (and `enface run`) reports failure."""

    def __init__(self, summaries: list[dict]) -> None:
        n = sum(s.get("storage_errors", 0) for s in summaries)
        super().__init__(
            f"{n} file(s) could not be read because the storage failed (connection, timeout or server error); "
            "they were not recorded, and the next run retries them"
        )
        self.summaries = summaries

    def __reduce__(self) -> tuple:
        return (type(self), (self.summaries,))


@dataclass
class Summary:
    source_id: str
    run_id: str
    files_seen: int = 0
    files_unchanged: int = 0
    duplicates: int = 0  # files whose content was already analysed (copies, renames, touched files)
    images_new: int = 0  # contents analysed in this run
    images_failed: int = 0
    files_refused: int = 0  # FIFOs, devices, links out of the source: recorded without being read
    storage_errors: int = 0  # reads the storage failed (refused, reset, 5xx, timeout): not recorded, retried
    images_no_faces: int = 0
    faces: int = 0
    persons_created: int = 0
    faces_matched: int = 0
    seconds: float = 0.0
    recovered_rows: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.files_unchanged + self.duplicates

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped"] = self.skipped
        d["images_per_second"] = round(self.images_new / self.seconds, 2) if self.seconds else None
        return d


def _mtime(info: dict) -> str:
    for key in ("mtime", "LastModified", "last_modified", "ETag", "etag", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def list_files(uri: str) -> list[FileEntry]:
    """Every non-hidden file under a source URI with its size and modification stamp, in sorted order.

    Local folders are walked without following links to folders; links to files are listed as what they point
    at, unless that is outside the source or not a regular file (see _local_entry).
    """
    if "://" not in uri and "::" not in uri:
        return _list_local(uri)
    fs, root = fsio.url_to_fs(uri)
    if fs.isfile(root):
        infos = {root: fs.info(root)}
    else:
        infos = fs.find(root, detail=True, withdirs=False)
    out = []
    prefix = uri[: len(uri) - len(uri.split("://", 1)[-1])] if "://" in uri else ""
    for path, info in sorted(infos.items()):
        rel = path[len(root.rstrip("/")) + 1 :] if path != root else path.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        full = prefix + path if prefix and not path.startswith(prefix) else path
        out.append(FileEntry(full, int(info.get("size") or 0), _mtime(info)))
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _local_entry(path: str, real_root: str | None) -> FileEntry:
    """A listed local file; refused (with a reason) when reading it could hang or leave the source."""
    try:
        lst = os.lstat(path)
    except OSError as exc:  # vanished since the walk: record why
        return FileEntry(path, 0, "", "unreadable", f"cannot read {path} ({exc.strerror})")
    link = stat.S_ISLNK(lst.st_mode)
    if link:
        target = os.path.realpath(path)
        try:
            st = os.stat(path)
        except OSError:
            return FileEntry(
                path, lst.st_size, str(lst.st_mtime), "unreadable", f"{path} is a broken symbolic link to {target}"
            )
    else:
        st = lst
    # Own size and time for refused entries: a link or FIFO left as it is stays skipped on later runs.
    own = (path, lst.st_size, str(lst.st_mtime))
    if not stat.S_ISREG(st.st_mode):
        what = f"a symbolic link to {target}, a" if link else "a"
        msg = f"{path} is {what} {fsio.file_kind(st.st_mode)}, not a regular file; only regular files are read"
        return FileEntry(*own, "not_a_regular_file", msg)
    if link and real_root is not None and not _inside(target, real_root):
        msg = (
            f"{path} is a symbolic link to {target}, outside the source folder; links out of a source are not followed"
        )
        return FileEntry(*own, "outside_source", msg)
    return FileEntry(path, st.st_size, str(st.st_mtime))  # what fsspec's local listing reported


def _list_local(uri: str) -> list[FileEntry]:
    root = os.path.abspath(uri)
    if not os.path.isdir(root):
        return [] if not os.path.lexists(root) else [_local_entry(root, None)]  # a single file: as named
    real_root = os.path.realpath(root)
    out: list[FileEntry] = []
    # followlinks=False: a linked folder is never walked into (no loops, no escaping the source); one that
    # points out of the source is recorded so its missing photos have an explanation.
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        keep = []
        for d in dirs:
            if d.startswith("."):
                continue
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                keep.append(d)
            elif not _inside(os.path.realpath(p), real_root):
                lst = os.lstat(p)
                msg = (
                    f"{p} is a symbolic link to the folder {os.path.realpath(p)}, outside the source folder; "
                    "links out of a source are not followed"
                )
                out.append(FileEntry(p, lst.st_size, str(lst.st_mtime), "outside_source", msg))
        dirs[:] = sorted(keep)
        out.extend(_local_entry(os.path.join(dirpath, n), real_root) for n in files if not n.startswith("."))
    return sorted(out, key=lambda e: e.uri)


def file_sha256(uri: str) -> str:
    """Hash in blocks: the archive may hold files far larger than memory should."""
    h = hashlib.sha256()
    for block in fsio.read_blocks(uri):
        h.update(block)
    return h.hexdigest()


def hash_files(
    entries: Iterable[FileEntry], threads: int = 8
) -> Iterator[tuple[FileEntry, str | None, Exception | None]]:
    """(entry, sha256, error) in input order. sha256 is None when the file cannot be read: then error says why
    (a bad file is analysed to record why; a storage failure is left for the next run)."""

    def one(e: FileEntry) -> tuple[FileEntry, str | None, Exception | None]:
        try:
            return e, file_sha256(e.uri), None
        except Exception as exc:  # fsspec back ends raise anything from OSError to botocore errors
            return e, None, exc

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash") as pool:
        yield from pool.map(one, entries)


@dataclass
class Plan:
    """What a run has to do for one source."""

    source: dict
    files: list[FileEntry]
    unchanged: list[FileEntry]
    analyse: list[tuple[str, str]]  # (uri, sha256) of contents never analysed, first path of each
    aliases: dict[str, list[FileEntry]]  # sha256 -> every changed file holding it (for the files table)
    refused: list[FileEntry] = field(default_factory=list)  # changed files recorded without reading them
    storage_failed: list[tuple[FileEntry, str]] = field(default_factory=list)  # (file, message): retried next run
    stale_errors: set[str] = field(default_factory=set)  # "unreadable:<uri>" image rows of files now readable

    def key(self, uri: str) -> str:
        """The images key a file of this plan is recorded under: its content hash, or unreadable:<uri>."""
        return self._keys.get(uri) or f"unreadable:{uri}"

    @cached_property
    def _keys(self) -> dict[str, str]:
        return {uri: sha for uri, sha in self.analyse if sha}


def plan(lake: Lake, source_id: str, *, hash_threads: int = 8) -> Plan:
    source = get_source(lake, source_id)
    if not source["uri"]:
        raise ValueError(f"source {source['name']!r} ({source_id}) has no uri to scan; set one with `enface apply`")
    files = list_files(source["uri"])
    sid = source["source_id"]
    known_files = {
        (r["uri"], r["size_bytes"], r["mtime"])
        for r in lake.read("files", where={"source_id": sid}, columns=["uri", "size_bytes", "mtime"]).to_pylist()
    }
    known = set(lake.read("images", where={"source_id": sid}, columns=["image_sha256"])["image_sha256"].to_pylist())
    unchanged = [f for f in files if (f.uri, f.size, f.mtime) in known_files]
    changed = [f for f in files if (f.uri, f.size, f.mtime) not in known_files]
    analyse: list[tuple[str, str]] = []
    aliases: dict[str, list[FileEntry]] = {}
    refused: list[FileEntry] = []
    storage_failed: list[tuple[FileEntry, str]] = []
    for entry in changed:
        if entry.refused:
            key = f"unreadable:{entry.uri}"
            if key not in known:
                refused.append(entry)
            aliases.setdefault(key, []).append(entry)
    readable = [f for f in changed if not f.refused]
    for entry, sha, error in hash_files(readable, threads=hash_threads):
        if error is not None and fsio.is_transient(error):
            # The storage failed, not the file: recording it would hide the file from every later run.
            storage_failed.append((entry, f"cannot read {entry.uri}: {type(error).__name__}: {error}"))
            continue
        key = sha or f"unreadable:{entry.uri}"
        if key not in known and key not in aliases:
            analyse.append((entry.uri, sha or ""))
        aliases.setdefault(key, []).append(entry)
    # Rows an earlier run wrote for files it could not read (storage outages before they were told apart):
    # replaced by the row of the content once it is read.
    stale = {f"unreadable:{e.uri}" for k, es in aliases.items() if not k.startswith("unreadable:") for e in es}
    stale &= known
    return Plan(source, files, unchanged, analyse, aliases, refused, storage_failed, stale)


CHUNK_IMAGES = 64
CHUNK_BYTES = 16 << 20
COMMIT_IMAGES = 256
COMMIT_SECONDS = 10.0


def chunks(plan: Plan, max_images: int = CHUNK_IMAGES, max_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """The URIs to analyse, in listing order, cut into worker tasks of at most max_images files and max_bytes.

    Each task costs the orchestrator ~0.1 s of CPU (Prefect's client and server), so small files go many to a
    task; the byte bound keeps a run of phone or crowd photos from landing in one task that a single worker
    would then chew on alone at the end of the scan.
    """
    sizes = {e.uri: e.size for e in plan.files}
    chunk: list[str] = []
    total = 0
    for uri, _ in plan.analyse:
        size = sizes.get(uri, 0)
        if chunk and (len(chunk) >= max_images or total + size > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(uri)
        total += size
    if chunk:
        yield chunk


def analyze_chunk(analyzer: Analyzer, uris: list[str], features: list[str]) -> list[ImageResult]:
    """The workers' job: every face of every image (multi), with the source's features."""
    return list(analyzer.analyze_uris(uris, features=features, multi=True))


class ScanWriter:
    """The single writer of a scan: applies the action rules to analysed images and commits chunk by chunk."""

    def __init__(
        self,
        lake: Lake,
        analyzer: Analyzer,
        plan: Plan,
        *,
        run_id: str | None = None,
        commit_images: int = COMMIT_IMAGES,
        commit_seconds: float = COMMIT_SECONDS,
    ) -> None:
        self.lake, self.plan = lake, plan
        # Rows are staged and committed together once either bound is reached: every commit costs the same
        # few tens of ms and leaves one small Parquet file per table, so committing each chunk made a
        # 4,000-photo import write ~1,200 commits and as many tiny files for analysts to read.
        self.commit_images, self.commit_seconds = commit_images, commit_seconds
        self._faces: list[dict] = []
        self._images: list[dict] = []
        self._last_commit = time.perf_counter()
        self.run_id = run_id or str(uuid.uuid4())
        self.engine = ActionEngine(lake, analyzer)
        self.rules: Rules = resolve_rules(lake, self.engine.calibration, source_id=plan.source["source_id"])
        self.model = analyzer.pack.version
        self.summary = Summary(
            plan.source["source_id"],
            self.run_id,
            files_seen=len(plan.files),
            files_unchanged=len(plan.unchanged),
            storage_errors=len(plan.storage_failed),
        )
        self.storage_messages: list[str] = [m for _, m in plan.storage_failed]
        self._t0 = time.perf_counter()

    @property
    def features(self) -> list[str]:
        return self.rules.feature_check

    def recover(self) -> dict[str, int]:
        """Delete rows a killed run left for images it never marked done (see the module docstring)."""
        sid = self.plan.source["source_id"]
        done = set(
            self.lake.read("images", where={"source_id": sid}, columns=["image_sha256"])["image_sha256"].to_pylist()
        )
        removed = {}
        for table in ("persons", "person_faces", "faces", "actions"):
            rows = self.lake.read(table, where={"source_id": sid}, columns=["image_sha256"])["image_sha256"]
            orphans = sorted({h for h in rows.to_pylist() if h not in done})
            if orphans:
                self.lake.delete(table, {"source_id": sid, "image_sha256": orphans})
                removed[table] = len(orphans)
        self.summary.recovered_rows = removed
        return removed

    def write(self, results: list[ImageResult]) -> None:
        """Search and enrol one chunk of analysed images (in the order given); commit when a bound is reached."""
        sid, t = self.plan.source["source_id"], now()
        for res in results:
            if res.reason in TRANSIENT_REASONS:
                # Not the file's state: no images or files row, so the next run reads it again.
                self.summary.storage_errors += 1
                self.storage_messages.append(res.error or res.uri)
                continue
            # The plan's key when decoding could not hash the bytes (empty, unreadable, too large): the files
            # rows are written under it, so an unchanged bad file is skipped on the next run, not re-recorded.
            sha = res.sha256 or self.plan.key(res.uri)
            outcomes = self.engine.process(res, self.rules, results=1, run_id=self.run_id) if res.faces else []
            for face in res.faces:
                self._faces.append(
                    {
                        "image_sha256": sha,
                        "uri": res.uri,
                        "source_id": sid,
                        "face_index": face.index,
                        "bbox": face.bbox,
                        "bbox_pro": face.bbox_pro,
                        "det_score": face.det_score,
                        "landmarks": face.landmarks,
                        "square": face.square,
                        "yaw": face.yaw,
                        "pitch": face.pitch,
                        "roll": face.roll,
                        "embedding": face.embedding.tolist(),
                        "gender": face.features.get("gender"),
                        "gender_score": face.features.get("gender_score"),
                        "age": face.features.get("age"),
                        "run_id": self.run_id,
                        "model": self.model,
                    }
                )
            self._images.append(
                {
                    "image_sha256": sha,
                    "uri": res.uri,
                    "source_id": sid,
                    "size_bytes": res.size_bytes,
                    "width": res.width,
                    "height": res.height,
                    "format": res.format,
                    "status": res.status,
                    "reason": res.reason,
                    "message": res.error,
                    "faces": len(res.faces),
                    "run_id": self.run_id,
                    "scanned": t,
                    "model": self.model,
                }
            )
            s = self.summary
            s.images_new += 1
            s.images_failed += res.status == "error"
            s.images_no_faces += res.status == "no_faces"
            s.faces += len(res.faces)
            s.persons_created += sum(len(o["persons_created"]) for o in outcomes)
            s.faces_matched += sum(o["decision"] == "matched" for o in outcomes)
        if len(self._images) >= self.commit_images or time.perf_counter() - self._last_commit >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Rows that point at the images first; the images rows, the "done" markers, last."""
        if not self._images:
            return
        self.engine.commit_persons()
        self.lake.append("faces", self._faces)
        self.engine.commit_actions()
        self.lake.append("images", self._images)
        self._write_files({r["image_sha256"] for r in self._images})
        self._faces, self._images = [], []
        self._last_commit = time.perf_counter()

    def _write_files(self, shas: set[str]) -> None:
        # An error row an earlier run left for a file that is now read: one images row per content, not both.
        stale = self.plan.stale_errors & {
            f"unreadable:{e.uri}"
            for sha in shas
            if not sha.startswith("unreadable:")
            for e in self.plan.aliases.get(sha, [])
        }
        if stale:
            self.lake.delete("images", {"source_id": self.plan.source["source_id"], "image_sha256": sorted(stale)})
        rows = [
            {
                "uri": e.uri,
                "source_id": self.plan.source["source_id"],
                "sha256": sha,
                "size_bytes": e.size,
                "mtime": e.mtime,
                "run_id": self.run_id,
                "seen": now(),
            }
            for sha in shas
            for e in self.plan.aliases.get(sha, [])
        ]
        if rows:
            self.lake.upsert("files", rows, keys=["uri", "source_id"])

    def _stage_refused(self) -> None:
        """Files the listing refused to read (FIFOs, devices, links out of the source): one error row each."""
        sid, t = self.plan.source["source_id"], now()
        for e in self.plan.refused:
            self._images.append(
                {
                    "image_sha256": f"unreadable:{e.uri}",
                    "uri": e.uri,
                    "source_id": sid,
                    "size_bytes": e.size,
                    "status": "error",
                    "reason": e.refused,
                    "message": e.message,
                    "faces": 0,
                    "run_id": self.run_id,
                    "scanned": t,
                    "model": self.model,
                }
            )
        self.summary.files_refused = len(self.plan.refused)

    def finish(self) -> Summary:
        """Commit what is staged, then record the files whose content was known already (copies, renames)."""
        self._stage_refused()
        self.commit()
        analysed = {sha or f"unreadable:{uri}" for uri, sha in self.plan.analyse}
        analysed |= {f"unreadable:{e.uri}" for e in self.plan.refused}
        known = {sha for sha in self.plan.aliases if sha not in analysed}
        self.summary.duplicates = sum(len(self.plan.aliases[s]) for s in known) + sum(
            len(self.plan.aliases[s]) - 1 for s in analysed if s in self.plan.aliases
        )
        self._write_files(known)
        self.summary.seconds = round(time.perf_counter() - self._t0, 2)
        return self.summary


def scan_source(
    lake: Lake,
    analyzer: Analyzer,
    source_id: str,
    *,
    chunk_size: int = CHUNK_IMAGES,
    run_id: str | None = None,
    on_chunk=None,
) -> Summary:
    """One source, in this process (the flow runs the same steps with chunks fanned out to workers)."""
    p = plan(lake, source_id)
    writer = ScanWriter(lake, analyzer, p, run_id=run_id)
    writer.recover()
    for chunk in chunks(p, chunk_size):
        writer.write(analyze_chunk(analyzer, chunk, writer.features))
        if on_chunk:
            on_chunk(len(chunk))
    return writer.finish()
