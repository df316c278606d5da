"""The main job: scan sources, analyse new images on workers, apply the action rules, one writer commits.

    enface run [SOURCE ...] [--runner threads|processes|dask] [--workers N] [--dask-address tcp://...]

Workers only analyse (decode, detect, embed, attributes) chunks of images; the flow process is the single
writer of the lake (search, auto-enrolment and commits), as enface_batch.scan describes. At most
2 x workers chunks are in flight, so memory stays bounded however large the archive.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from enface_batch.analyze import Analyzer, ImageResult
from enface_batch.flows import prefect_server
from enface_batch.flows.head_start import HeadStart
from enface_batch.flows.progress import hook as progress_hook
from enface_batch.flows.progress import report as report_progress
from enface_batch.flows.progress import reporting
from enface_batch.lake import upkeep
from enface_batch.lake.store import Lake
from enface_batch.models import load_pack
from enface_batch.models.session import cores
from enface_batch.scan import (
    CHUNK_IMAGES,
    COMMIT_IMAGES,
    COMMIT_SHARE,
    ScanWriter,
    StorageFailure,
    Summary,
    analyze_chunk,
    chunks,
    plan,
    sources_to_scan,
)
from enface_batch.settings import get_settings

_ANALYZERS: dict[int | None, Analyzer] = {}
_HEAD: HeadStart | None = None  # chunks analysed while the Prefect API started (threads runner only)


def worker_analyzer(threads: int | None = None) -> Analyzer:
    """Models load once per worker process (and once in the flow process, shared by its threads)."""
    if threads not in _ANALYZERS:
        _ANALYZERS[threads] = Analyzer(load_pack(threads=threads))
    return _ANALYZERS[threads]


@task(name="analyze-chunk", retries=1, persist_result=False, log_prints=False)
def analyze_chunk_task(uris: list[str], features: list[str], threads: int | None) -> list[ImageResult]:
    ahead = _HEAD.take(uris, features) if _HEAD is not None else None
    return ahead if ahead is not None else analyze_chunk(worker_analyzer(threads), uris, features)


def worker_threads(workers: int | None) -> int:
    """onnxruntime threads per worker: the cores shared out, so workers never oversubscribe them."""
    return max(1, cores() // (workers or cores()))


def make_runner(kind: str = "threads", workers: int | None = None, dask_address: str | None = None) -> TaskRunner:
    workers = workers or cores()
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - the dask extra is part of the test setup
            raise RuntimeError("the dask runner needs the 'dask' extra: pip install 'enface-batch[dask]'") from exc
        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        )
    raise ValueError(f"runner must be threads, processes or dask, not {kind!r}")


def summary_markdown(summaries: list[Summary]) -> str:
    head = (
        "| source | files | unchanged | duplicates | analysed | failed | refused | storage errors | no faces | faces "
        "| persons created | faces matched | seconds | images/s | writer busy |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {s.source_id[:8]} | {s.files_seen} | {s.files_unchanged} | {s.duplicates} | {s.images_new} | "
        f"{s.images_failed} | {s.files_refused} | {s.storage_errors} | {s.images_no_faces} | {s.faces} | "
        f"{s.persons_created} | {s.faces_matched} | "
        f"{s.seconds} | {s.as_dict()['images_per_second'] or '-'} | {s.as_dict()['writer_busy'] or '-'} |\n"
        for s in summaries
    )
    return "# Scan summary\n\n" + head + rows


@flow(name="scan", log_prints=True)
def scan(
    sources: list[str] | None = None,
    lake: str | None = None,
    chunk_size: int = CHUNK_IMAGES,
    workers: int | None = None,
    commit_images: int = COMMIT_IMAGES,
) -> list[dict]:
    """Scan sources (ids or names; all with a uri when none given) into the lake.

    chunk_size: at most this many images (and 16 MB) per worker task; commit_images: images per lake commit
    (also committed every 10 s).
    """
    # One writer per lake: a second scan would analyse and commit the same new files again. Re-entrant, so
    # `enface run`, which took the lock already, shares its hold.
    with Lake(lake, create=False).writer_lock("enface scan flow"):
        lk = Lake(lake)
        summaries = _scan(sources, lk, chunk_size, workers, commit_images)
        state = upkeep_task(lk.uri, get_settings().optimize_every, return_state=True)
        if state.is_failed():  # the scan itself succeeded: its run stays Completed
            get_run_logger().warning(f"lake upkeep failed ({state.message}); the next scan tries again")
        return summaries


# Upkeep rewrites and deletes files: a transient store error (S3 throttling) is worth one more try after a
# pause, and both steps are idempotent (compacting compacted files does nothing; vacuum deletes only what no
# version within the retention uses). The timeout bounds a hung store call; the scan's rows are already
# committed, so a failed upkeep fails only this task (the flow logs a warning), and the next scan tries again
# (the run count is saved only once both steps are done).
@task(name="lake-upkeep", retries=1, retry_delay_seconds=30, timeout_seconds=3600, persist_result=False)
def upkeep_task(lake_uri: str, every: int) -> dict | None:
    done = upkeep.after_run(Lake(lake_uri, create=False), every)
    if done:
        opt = done["optimize"]["tables"]
        get_run_logger().info(
            f"lake upkeep: {sum(t['files_before'] for t in opt.values())} data files compacted to "
            f"{sum(t['files_after'] for t in opt.values())}; vacuum deleted {done['vacuum']['deleted']}"
        )
    return done


def _scan(sources: list[str] | None, lk: Lake, chunk_size: int, workers: int | None, commit_images: int) -> list[dict]:
    log = get_run_logger()
    if _HEAD is not None:
        _HEAD.stop()  # the workers take over; what it analysed is handed to their tasks
        log.debug(f"{_HEAD.done} chunk(s) analysed while the Prefect API started")
    workers = workers or cores()
    threads = worker_threads(workers)
    writer_analyzer = worker_analyzer(threads)
    summaries = []
    for source in sources_to_scan(lk, sources):
        p = plan(lk, source["source_id"])
        writer = ScanWriter(lk, writer_analyzer, p, commit_images=commit_images, commit_share=COMMIT_SHARE)
        recovered = writer.recover()
        if recovered:
            log.warning(f"source {source['name']}: removed rows of an interrupted run {recovered}; redoing them")
        todo = list(chunks(p, chunk_size))
        log.info(
            f"source {source['name']} ({p.source['uri']}): {len(p.files)} files, {len(p.unchanged)} unchanged, "
            f"{len(p.analyse)} new contents in {len(todo)} chunks"
        )
        progress = create_progress_artifact(0.0, description=f"scan of {source['name']}") if todo else None
        report_progress(source["name"], 0, len(p.analyse), 0)
        inflight: deque = deque()
        done = 0
        t0 = time.perf_counter()
        for chunk in todo:
            inflight.append((len(chunk), analyze_chunk_task.submit(chunk, writer.features, threads)))
            if len(inflight) >= 2 * workers:
                done += _drain_one(inflight, writer)
                _progress(progress, done, len(p.analyse), t0, log, source["name"], writer.summary.faces)
        while inflight:
            done += _drain_one(inflight, writer)
            _progress(progress, done, len(p.analyse), t0, log, source["name"], writer.summary.faces)
        summary = writer.finish()
        summaries.append(summary)
        log.info(f"source {source['name']}: {summary.as_dict()}")
        for message in writer.storage_messages[:5]:
            log.error(f"source {source['name']}: {message}")
    create_markdown_artifact(summary_markdown(summaries), key="scan-summary", description="enface scan summary")
    if any(s.storage_errors for s in summaries):
        raise StorageFailure([s.as_dict() for s in summaries])  # the flow run ends Failed
    return [s.as_dict() for s in summaries]


def _drain_one(inflight: deque, writer: ScanWriter) -> int:
    """Commit the oldest chunk: results are written in listing order, whatever order workers finish in."""
    n, fut = inflight.popleft()
    writer.write(fut.result())
    return n


def _progress(artifact_id, done: int, total: int, t0: float, log, name: str, faces: int) -> None:
    rate = done / max(time.perf_counter() - t0, 1e-6)
    if artifact_id:
        update_progress_artifact(artifact_id, progress=100.0 * done / max(total, 1))
    line = f"{name}: {done}/{total} images analysed, {faces} faces ({rate:.1f} images/s)"
    if progress_hook():  # a terminal shows the bar; the line still reaches the flow run's log in the Prefect API
        report_progress(name, done, total, faces)
        log.debug(line)
    else:
        log.info(line)


def run_scan(
    sources: list[str] | None = None,
    *,
    lake: str | None = None,
    runner: str = "threads",
    workers: int | None = None,
    dask_address: str | None = None,
    chunk_size: int = CHUNK_IMAGES,
    commit_images: int = COMMIT_IMAGES,
    on_progress: Callable[..., None] | None = None,
    head_start: bool = True,
) -> list[dict]:
    """Run the scan flow with the chosen task runner (a temporary Prefect server starts if none is set).

    ``on_progress(source_name, images_done, images_total, faces)`` is called after each chunk is written
    (the CLI draws it on a terminal); without it the flow logs a line per chunk instead. With the threads runner
    and ``head_start``, the first chunks are analysed while the Prefect API starts (flows/head_start.py).
    """
    global _HEAD
    prefect_server.start()
    analyzer = worker_analyzer(worker_threads(workers))  # the flow process needs the models too: load them meanwhile
    flow_ = scan.with_options(task_runner=make_runner(runner, workers, dask_address))
    kwargs = dict(sources=sources, lake=lake, chunk_size=chunk_size, workers=workers, commit_images=commit_images)
    if head_start and runner == "threads":
        _HEAD = HeadStart(analyzer, lake, sources, chunk_size).start()
    try:
        with reporting(on_progress):
            return prefect_server.run_flow(flow_, **kwargs)
    finally:
        if _HEAD is not None:
            _HEAD.stop()
        _HEAD = None
