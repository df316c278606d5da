"""Progress of long commands (detect, run, enrol, dedup) on stderr, only when stderr is a terminal.

Operations report through a plain callback, `(stage, done, total, faces)`, and know nothing of rich; this module
renders it. Piped, redirected or with `--quiet` nothing is drawn, so logs and captured stderr stay clean, and
stdout (the JSON) is never touched.
"""

from __future__ import annotations

import logging

from rich.file_proxy import FileProxy
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from . import err


class _Rate(ProgressColumn):
    """Items per second over the whole task (rich's own speed is a short window, jumpy for chunked work)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text("- /s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.1f} {task.fields.get('unit', '')}/s", style="progress.data.speed")


class _AboveBar(FileProxy):
    """Lines written here print above the bar. A rich Console unwraps a plain FileProxy back to the file it
    wraps (`rich_proxied_file`), which would undo the redirection for Prefect's console: this one stays."""

    @property
    def rich_proxied_file(self) -> _AboveBar:
        return self


class Reporter:
    """A context manager and a progress callback: one bar per stage (per source for `enface run`). A stage's
    clock starts at its first call: callers report (stage, 0, total) before the work starts."""

    def __init__(self, quiet: bool = False, unit: str = "images", prefect_logs: bool = False) -> None:
        self.enabled = not quiet and err.is_terminal
        self.prefect_logs = prefect_logs
        self._moved: list = []
        self.unit = unit
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[faces_text]}"),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            redirect_stdout=False,  # the JSON result goes to stdout, never into the bar's console (stderr)
            disable=not self.enabled,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> Reporter:
        self.progress.__enter__()
        return self

    def _take_prefect_console(self) -> None:
        """Prefect's console handler holds the stderr it found when its logging was set up (again when a flow
        starts), so its lines would cut through the bar; while the bar shows they go through the bar's console
        and print above it."""
        for handler in _prefect_console_handlers():
            if not isinstance(handler.console.file, _AboveBar):
                self._moved.append((handler, handler.console.file))
                handler.console.file = _AboveBar(err, handler.console.file)

    def __exit__(self, *exc: object) -> None:
        for handler, file in self._moved:
            handler.console.file.flush()
            handler.console.file = file
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, faces: int | None = None, unit: str | None = None) -> None:
        if not self.enabled:
            return
        if self.prefect_logs:
            self._take_prefect_console()
        faces_text = "" if faces is None else f"{faces} faces"
        if stage not in self._tasks:
            self._tasks[stage] = self.progress.add_task(
                stage, total=total, completed=done, unit=unit or self.unit, faces_text=faces_text
            )
        self.progress.update(self._tasks[stage], completed=done, total=total, faces_text=faces_text)


def _prefect_console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers, if Prefect is loaded (found by class name: Prefect need not be imported)."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    found = {}
    for lg in loggers:
        for h in lg.handlers:
            if type(h).__name__ == "PrefectConsoleHandler" and hasattr(h, "console"):
                found[id(h)] = h
    return list(found.values())
