"""Progress of long commands (detect, run, enrol, dedup) on stderr, only when stderr is a terminal.

Operations report through a plain callback, `(stage, done, total, faces)`, and know nothing of rich; this module
renders it. Piped, redirected or with `--quiet` nothing is drawn, so logs and captured stderr stay clean, and
stdout (the JSON) is never touched.
"""

from __future__ import annotations

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


class Reporter:
    """A context manager and a progress callback: one bar per stage (per source for `enface run`). A stage's
    clock starts at its first call: callers report (stage, 0, total) before the work starts."""

    def __init__(self, quiet: bool = False, unit: str = "images") -> None:
        self.enabled = not quiet and err.is_terminal
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

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, faces: int | None = None, unit: str | None = None) -> None:
        if not self.enabled:
            return
        faces_text = "" if faces is None else f"{faces} faces"
        if stage not in self._tasks:
            self._tasks[stage] = self.progress.add_task(
                stage, total=total, completed=done, unit=unit or self.unit, faces_text=faces_text
            )
        self.progress.update(self._tasks[stage], completed=done, total=total, faces_text=faces_text)
