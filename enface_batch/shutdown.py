"""Leaving cleanly on SIGTERM or SIGINT: the writer lock released, the temporary Prefect server stopped.

Python's default for SIGTERM ends the process on the spot: no `finally`, no exit handlers, so `enface run` left
its temporary Prefect server running and its writer lock behind. Here the first signal raises
:class:`Terminated` in the main thread, so every `with` block unwinds (the lock is released, Prefect marks the
flow run crashed) and the command exits 128 + signal. If unwinding takes longer than ``grace`` seconds (a
worker still finishing a chunk), or a second signal arrives, the emergency cleanups run and the process leaves
at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

# Run on the way out after a signal: before the interpreter joins worker threads, and on the forced exit.
cleanups: list[Callable[[], None]] = []


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM or SIGINT; its exit code is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def run_cleanups() -> None:
    for fn in cleanups:
        try:
            fn()
        except Exception as exc:  # one failing cleanup must not keep the others from running
            print(f"cleanup {getattr(fn, '__name__', fn)} failed: {exc}", file=sys.stderr)


def _leave_now(signum: int) -> None:
    run_cleanups()
    sys.stderr.flush()
    os._exit(128 + signum)


def install(grace: float = 30.0) -> None:
    """Handle SIGTERM and SIGINT in this (main) thread as described above."""
    received: list[int] = []

    def watchdog(signum: int) -> None:
        threading.Event().wait(grace)
        print(f"still stopping after {grace:g} s; leaving now", file=sys.stderr)
        _leave_now(signum)

    def handler(signum: int, frame: object) -> None:
        if received:  # a second signal: the user means it
            _leave_now(signum)
        received.append(signum)
        print(f"stopping ({signal.Signals(signum).name}) ...", file=sys.stderr)
        threading.Thread(target=watchdog, args=(signum,), name="shutdown-watchdog", daemon=True).start()
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
