"""Analyse a scan's first chunks while the temporary Prefect API starts, on the core that would wait for it.

`enface run` launches the temporary Prefect server first (prefect_server.py); its start-up (~4-5 s, mostly its
imports, one core) outlasts ours (imports and models, ~3.4 s), so one core idles until the flow can start. With
the threads runner the flow's workers are threads of this very process sharing one Analyzer, so the chunks they
would analyse first can be analysed here meanwhile: `HeadStart` plans the first source (plan() only reads the
lake and the files), and analyses its chunks in order on one thread until the flow begins. The flow's task for
such a chunk then takes the result instead of analysing the images again (`take`), so the run, its tasks and
its tables are what they would be without it. Nothing is written here; a chunk the flow cuts differently (a
file changed in between) is simply analysed by the task as usual.

It must not slow the server's start, which is what the command waits for: the thread lowers its own priority
(nice +10, Linux), so it runs on what the server and the other jobs leave idle. It analyses through its own
Analyzer over the same models: that Analyzer's embed pool is made here, so its threads inherit the low priority,
while the workers' pool (made by a worker thread later) keeps the usual one.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future

from enface_batch.analyze import Analyzer, ImageResult
from enface_batch.lake.store import Lake
from enface_batch.ops.action import resolve_rules
from enface_batch.scan import analyze_chunk, chunks, plan, sources_to_scan
from enface_batch.scoring import calibration_for

log = logging.getLogger(__name__)

Key = tuple[tuple[str, ...], tuple[str, ...]]


class HeadStart:
    """Chunks analysed ahead of the flow, handed over once (`take`); `stop` ends the look-ahead."""

    def __init__(self, analyzer: Analyzer, lake: str | None, sources: list[str] | None, chunk_size: int) -> None:
        self.analyzer, self.lake, self.sources, self.chunk_size = analyzer, lake, sources, chunk_size
        self._results: dict[Key, Future] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="head-start", daemon=True)

    def start(self) -> HeadStart:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No chunk is started after this; the one being analysed finishes and can still be taken."""
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> None:
        """Until the look-ahead has ended (stopped, or every chunk of the first source analysed)."""
        self._thread.join(timeout)

    def take(self, uris: list[str], features: list[str]) -> list[ImageResult] | None:
        """The chunk's results if it was analysed (or is being analysed) ahead, else None; each is given once."""
        with self._lock:
            fut = self._results.pop((tuple(uris), tuple(features)), None)
        return None if fut is None else fut.result()

    @property
    def done(self) -> int:
        """Chunks analysed ahead and not taken yet."""
        with self._lock:
            return sum(f.done() for f in self._results.values())

    def _run(self) -> None:
        _lower_priority()
        # Its own Analyzer over the same models (and batch size): its embed pool threads are niced like this one.
        src = self.analyzer
        an = Analyzer(src.pack, batch_size=src.batch_size, decode_max_side=src.decode_max_side)
        try:
            lk = Lake(self.lake, create=False)
            wanted = sources_to_scan(lk, self.sources)  # the flow scans them in this order
            if not wanted:
                return
            source_id = wanted[0]["source_id"]
            calibration = calibration_for(self.analyzer.pack.models["embedder"])
            features = list(resolve_rules(lk, calibration, source_id=source_id).feature_check)
            for chunk in chunks(plan(lk, source_id), self.chunk_size):
                fut: Future = Future()
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self._results[(tuple(chunk), tuple(features))] = fut
                try:
                    fut.set_result(analyze_chunk(an, chunk, features))
                except BaseException as exc:  # the flow's task gets the same error it would have got itself
                    fut.set_exception(exc)
        except Exception as exc:  # planning failed: the flow plans again and reports the error itself
            log.debug("head start gave up: %s", exc)


def _lower_priority(step: int = 10) -> None:
    """Nice this thread (Linux threads have their own nice value; threads it starts inherit it)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the usual priority
        pass
