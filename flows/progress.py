"""The caller's progress callback for a flow run in this process.

A callable is no flow parameter (Prefect records parameters as JSON), so the CLI puts its progress bar here
for the length of the run and the flow's loops report through `report`. With nothing set (a deployment run,
a piped CLI) reporting is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_HOOK: Callable[..., None] | None = None


def hook() -> Callable[..., None] | None:
    """The callback set by `reporting`, for operations that take an `on_progress` argument."""
    return _HOOK


def report(*args, **kwargs) -> None:
    if _HOOK is not None:
        _HOOK(*args, **kwargs)


@contextmanager
def reporting(callback: Callable[..., None] | None) -> Iterator[None]:
    global _HOOK
    saved, _HOOK = _HOOK, callback
    try:
        yield
    finally:
        _HOOK = saved
