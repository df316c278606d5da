"""Scanning a source: list its files, skip what is done, analyse the rest, apply the action rules, commit.

Listing, hashing and planning are in scan_plan.py. This module has no Prefect in it: flows/scan.py only decides
where `analyze_chunk` runs (threads, processes, a Dask cluster) and feeds the results to one `ScanWriter`, the
single writer of the lake.

Idempotence and crash safety: a file whose (path, size, mtime) is unchanged is not read again; a file is hashed
and a content already in the source's images table is not analysed again (renames and copies), while an edited
file is. Each commit (every 256 images, spaced in the flow so commits stay ~10 % of the writer's time, or
every 10 s) writes persons, faces and actions first and the images rows last: an images row is the "done"
marker. A run killed at any point leaves rows whose image has no marker; the next run deletes exactly those
before it starts (`recover`), then redoes their images, so nothing is duplicated or lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from .analyze import Analyzer, ImageResult
from .imaging import TRANSIENT_REASONS
from .index import EXACT_MAX
from .lake.protocols import ReadLake
from .lake.schemas import TABLES
from .lake.store import Lake, now
from .models.attributes import attribute_columns
from .ops.action import ActionEngine, Rules, resolve_rules
from .ops.catalog import list_sources
from .ops.search import Searcher
from .scan_plan import Plan, plan


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
    writer_seconds: float = 0.0  # the writer's own work (search, enrolment, staging, commits) within `seconds`
    recovered_rows: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.files_unchanged + self.duplicates

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped"] = self.skipped
        d["images_per_second"] = round(self.images_new / self.seconds, 2) if self.seconds else None
        # Busy share of the single writer: near 1, more workers would not make the scan faster.
        d["writer_busy"] = round(self.writer_seconds / self.seconds, 3) if self.seconds else None
        d["writer_seconds"] = round(self.writer_seconds, 2)
        return d


CHUNK_IMAGES = 64
CHUNK_BYTES = 16 << 20
COMMIT_IMAGES = 256
COMMIT_SECONDS = 10.0
# Lists of at least this many persons give the writer approximate candidates, re-ranked exactly (index.py
# use_candidates): an exact search costs ~0.28 ms of a core per face at 100k persons, ~2.8 ms at 1M. The same
# size from which "auto" indexes turn approximate (IVF) for single queries.
CANDIDATES_FROM = EXACT_MAX
COMMIT_SHARE = 0.1  # the scan flow spaces commits so they take at most ~this share of the writer's time
# Staged rows of a table are turned into Arrow from this many on (ActionEngine.seal): 1, after every chunk.
# Rows held over several chunks survive into the garbage collector's older generations and make its full
# collections scan them again: holding 512 rows cost ~12 % of the writer at 1,000 persons (4,137 against
# 4,669-5,076 images/s with the collector off), sealing each chunk nothing measurable.
SEAL_ROWS = 1


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
        commit_share: float | None = None,
    ) -> None:
        self.lake, self.plan = lake, plan
        # Rows are staged and committed together once either bound is reached: every commit costs the same
        # few tens of ms and leaves one small Parquet file per table, so committing each chunk made a
        # 4,000-photo import write ~1,200 commits and as many tiny files for analysts to read.
        # With many workers feeding it, 256 images arrive in a fraction of a second, and a commit costs a fixed
        # ~0.1-0.4 s of CPU: with commit_share, the next commit waits until the last one's cost is at most that
        # share of the time since, so commits hold more images exactly when images come fast.
        self.commit_images, self.commit_seconds = commit_images, commit_seconds
        self.commit_share = commit_share
        self._commit_cost = 0.0
        self._faces: list[pa.Table] = []  # staged faces rows, turned into Arrow (SEAL_ROWS, ActionEngine.seal)
        self._face_rows: list[dict] = []
        self._images: list[dict] = []
        self._last_commit = time.perf_counter()
        self.run_id = run_id or str(uuid.uuid4())
        # Exact flat indexes: a writer searches a chunk's faces in one batch, where one GEMM over the list beats
        # IVF at the recall it needs on face embeddings (index.py), and moves templates in place.
        searcher = Searcher(lake, analyzer.pack.embedder.dim, kind="flat", candidates_from=CANDIDATES_FROM)
        self.engine = ActionEngine(lake, analyzer, searcher)
        self.batched = True  # False: search face after face (the reference the batched path is tested against)
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
        t0 = time.perf_counter()
        try:
            self._write(results)
        finally:
            self.summary.writer_seconds += time.perf_counter() - t0

    def _write(self, results: list[ImageResult]) -> None:
        sid, t = self.plan.source["source_id"], now()
        kept = []
        for res in results:
            if res.reason in TRANSIENT_REASONS:
                # Not the file's state: no images or files row, so the next run reads it again.
                self.summary.storage_errors += 1
                self.storage_messages.append(res.error or res.uri)
            else:
                kept.append(res)
        with_faces = [r for r in kept if r.faces]
        done = self.engine.process_chunk(with_faces, self.rules, results=1, run_id=self.run_id, batched=self.batched)
        outcome_of = {id(r): o for r, o in zip(with_faces, done, strict=True)}
        self.engine.seal(SEAL_ROWS)
        faces = self._face_rows
        for res in kept:
            # The plan's key when decoding could not hash the bytes (empty, unreadable, too large): the files
            # rows are written under it, so an unchanged bad file is skipped on the next run, not re-recorded.
            sha = res.sha256 or self.plan.key(res.uri)
            outcomes = outcome_of.get(id(res), [])
            for face in res.faces:
                faces.append(
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
                        "embedding": face.embedding,  # Arrow converts an array ~8x faster than a list
                        **attribute_columns(face.features),
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
        if len(faces) >= SEAL_ROWS:
            self._seal_faces()
        elapsed = time.perf_counter() - self._last_commit
        spaced = not self.commit_share or self._commit_cost <= self.commit_share * (elapsed + self._commit_cost)
        if (len(self._images) >= self.commit_images and spaced) or elapsed >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Rows that point at the images first; the images rows, the "done" markers, last."""
        if not self._images:
            return
        t0 = time.perf_counter()
        self.engine.commit_persons()
        self._seal_faces()
        if self._faces:
            self.lake.append("faces", pa.concat_tables(self._faces))
        self.engine.commit_actions()
        self.lake.append("images", self._images)
        self._write_files({r["image_sha256"] for r in self._images})
        self._faces, self._images = [], []
        self._last_commit = time.perf_counter()
        self._commit_cost = self._last_commit - t0

    def _seal_faces(self) -> None:
        if self._face_rows:
            self._faces.append(pa.Table.from_pylist(self._face_rows, TABLES["faces"]))
            self._face_rows = []

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
        # A file the table has no row for is appended: a MERGE scans the whole files table, which grows with
        # the archive (57-69 ms against 3-12 ms for 64 rows into a 200k-row table), once per commit.
        recorded = self.plan.recorded
        new = [r for r in rows if r["uri"] not in recorded]
        seen = [r for r in rows if r["uri"] in recorded]
        if new:
            self.lake.append("files", new)
            recorded.update(r["uri"] for r in new)  # written now: a later commit of this run replaces it
        if seen:
            self.lake.upsert("files", seen, keys=["uri", "source_id"])

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
        t0 = time.perf_counter()
        self._stage_refused()
        self.commit()
        analysed = {sha or f"unreadable:{uri}" for uri, sha in self.plan.analyse}
        analysed |= {f"unreadable:{e.uri}" for e in self.plan.refused}
        known = {sha for sha in self.plan.aliases if sha not in analysed}
        self.summary.duplicates = sum(len(self.plan.aliases[s]) for s in known) + sum(
            len(self.plan.aliases[s]) - 1 for s in analysed if s in self.plan.aliases
        )
        self._write_files(known)
        self.summary.writer_seconds += time.perf_counter() - t0
        self.summary.seconds = round(time.perf_counter() - self._t0, 2)
        return self.summary


def sources_to_scan(lake: ReadLake, sources: list[str] | None) -> list[dict]:
    """The sources a scan runs, in its order: by id or name; none given = every source that has a uri."""
    all_sources = [s for s in list_sources(lake) if s["uri"]]
    if not sources:
        return all_sources
    picked = []
    for key in sources:
        match = [s for s in all_sources if key in (s["source_id"], s["name"])]
        if not match:
            raise ValueError(f"no source with a uri named or identified {key!r}; see `enface source ls`")
        picked.extend(match)
    return picked


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
