"""What the requests of one process share: the lake and its reader, the models (loaded on first use), the live
search indexes, the model slots and the login throttle."""

from __future__ import annotations

import threading

from .. import auth
from ..analyze import Analyzer
from ..lake.reader import LakeReader
from ..lake.schemas import TABLES
from ..lake.store import Lake
from ..ops.errors import EnfaceError
from ..settings import get_settings
from .searcher import LiveIndexes
from .security import LoginThrottle


class ModelsUnavailable(EnfaceError):
    status_code = 503


class AppState:
    def __init__(self, lake: str | None = None, *, secret: str | None = None, analyzer: Analyzer | None = None):
        self.secret = secret or auth.jwt_secret()
        self.lake = open_lake(lake)
        self.reader = LakeReader(self.lake)
        self._analyzer = analyzer
        self._live: LiveIndexes | None = None
        self._load_lock = threading.Lock()
        self.write_lock = threading.Lock()
        # Few analyses at once: onnxruntime already spreads one over every core; queueing the rest here keeps
        # latency predictable instead of thrashing the cores (ENFACE_API_MODEL_SLOTS, see bench/api_load.py).
        self.model_slots = threading.BoundedSemaphore(get_settings().api_model_slots)
        self.throttle = LoginThrottle()

    def analyzer(self) -> Analyzer:
        if self._analyzer is None:
            with self._load_lock:
                if self._analyzer is None:
                    from ..models import PackError, load_pack
                    from ..models.fetch import ModelFetchError

                    try:
                        self._analyzer = Analyzer(load_pack())
                    except (ModelFetchError, PackError) as exc:
                        raise ModelsUnavailable(f"models could not be loaded: {exc}") from exc
        return self._analyzer

    def live(self) -> LiveIndexes:
        if self._live is None:
            dim = self.analyzer().pack.embedder.dim
            with self._load_lock:
                if self._live is None:
                    self._live = LiveIndexes(self.reader, dim)
        return self._live


def open_lake(uri: str | None) -> Lake:
    """The lake to serve; a missing lake is an error (a typo must not serve an empty new lake)."""
    lake = Lake(uri, create=False)
    if not lake.has_table("persons"):
        raise auth.ConfigError(
            f"no lake at {lake.uri} (ENFACE_LAKE or --lake): create one with any enface command, "
            f"e.g. `enface list ls --lake {lake.uri}`"
        )
    if not all(lake.has_table(t) for t in TABLES):
        lake = Lake(lake.uri)  # tables added since the lake was made: create the missing ones
    return lake
