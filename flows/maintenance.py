"""Enrol, dedup and reindex flows: thin Prefect wrappers over enface_batch.ops, with a summary artifact.

`enface enrol`, `enface dedup` and `enface reindex` run these (recorded like `enface run`'s scan).

Retries, deliberately: rebuilding the indexes only reads the tables and overwrites derived files, so a
transient storage error (throttling, a reset connection: fsio.is_transient) is retried twice, after 10 s and
60 s; any other error fails at once. Enrol and dedup are not retried: each commit they made stands, and a
write that failed half-way is worth a look before the command is run again (which carries on from what the
lake holds). The scan's own tasks are in flows/scan.py.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from enface_batch.fsio import is_transient
from enface_batch.lake.store import Lake
from enface_batch.ops.enrol import enrol
from enface_batch.ops.errors import EnfaceError
from enface_batch.ops.search import reindex

from .progress import hook
from .scan import worker_analyzer


def _report(key: str, title: str, result: dict) -> dict:
    shown = {k: v for k, v in result.items() if k not in ("merged", "errors", "skipped")}
    body = f"# {title}\n\n```json\n{json.dumps(shown, indent=2, default=str)}\n```\n"
    create_markdown_artifact(body, key=key, description=title)
    get_run_logger().info(f"{title}: {shown}")
    return result


def _refused(exc: EnfaceError) -> State:
    """A request the seed would answer 4xx (unknown list, bad threshold): the run fails with that one line
    instead of a traceback, and the caller still gets the exception (the CLI prints its JSON and exit code)."""
    return Failed(message=f"{exc.status_code}: {exc.message}", data=exc)


@flow(name="enrol", log_prints=True)
def enrol_flow(
    source: str,
    list_id: str | None = None,
    lake: str | None = None,
    drop_image: bool = False,
    new_person_threshold: str | None = None,
) -> dict:
    """Persons from a folder-per-person tree or a CSV manifest."""
    try:
        with Lake(lake, create=False).writer_lock("enface enrol flow"):
            result = enrol(
                Lake(lake),
                worker_analyzer(),
                source,
                list_id=list_id,
                drop_image=drop_image,
                new_person_threshold=new_person_threshold,
                on_progress=hook(),
            )
    except EnfaceError as exc:
        return _refused(exc)
    return _report("enrol-summary", "Enrolment", result)


@flow(name="dedup", log_prints=True)
def dedup_flow(list_id: str, lake: str | None = None, threshold: str = "90", dry_run: bool = False) -> dict:
    """Merge persons of a list that are the same person; every merge is recorded in the merges table."""
    from enface_batch.ops.dedup import dedup

    try:
        if dry_run:  # writes nothing
            result = dedup(Lake(lake), list_id, threshold=threshold, dry_run=True, on_progress=hook())
            return _report("dedup-summary", "Dedup", result)
        with Lake(lake, create=False).writer_lock("enface dedup flow"):
            result = dedup(Lake(lake), list_id, threshold=threshold, on_progress=hook())
    except EnfaceError as exc:
        return _refused(exc)
    return _report("dedup-summary", "Dedup", result)


def _transient(task_, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


@task(name="write-indexes", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_transient)
def reindex_task(lake: str | None, dim: int, list_ids: list[str] | None) -> dict:
    return reindex(Lake(lake), dim, list_ids)


@flow(name="reindex", log_prints=True)
def reindex_flow(lake: str | None = None, list_ids: list[str] | None = None) -> dict:
    """Rebuild the FAISS indexes from the persons table."""
    dim = worker_analyzer().pack.embedder.dim
    try:
        with Lake(lake, create=False).writer_lock("enface reindex flow"):
            result = reindex_task(lake, dim, list_ids)
    except EnfaceError as exc:
        return _refused(exc)
    return _report("reindex-summary", "Reindex", result)
