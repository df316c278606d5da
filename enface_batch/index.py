"""A FAISS index over one person list: who in the list looks most like this face?

The index is a derived artifact. The persons table is the truth, and the index can always be rebuilt from
its rows (``PersonIndex.build``); ``version`` says which table version it reflects, so a caller that finds a
saved index older than the table either replays the changes (``add`` / ``remove``) or rebuilds.

Similarity is the inner product of L2-normalised float32 embeddings, i.e. the cosine similarity. Inputs are
normalised here, so callers may pass raw embedder output.

Index kinds:

* ``"flat"``: ``IndexFlatIP``, exact; a FAISS id is the row. A person already indexed is updated by writing
  its row in place (O(dim): a writer moves a template per matched face, and ``remove_ids`` + ``add`` on a flat
  index copies every row after it, O(n)); a removed person's row is zeroed and skipped (a tombstone) until
  ``_DEAD_MAX`` of them make the next change compact the rows.
* ``"ivf"``: ``IndexIVFFlat`` (inner product, spherical k-means), approximate. ``nlist ~ 4*sqrt(n)`` trained on
  a sample; later adds go to the trained lists, and only a rebuild retrains.
* ``"auto"``: flat below ``EXACT_MAX`` persons; from there on flat with PQ fast-scan candidates re-ranked
  exactly (``use_candidates(single=True)``), for single queries too (decided at build time). IVF only when
  asked for by name: at 200k persons, one query at a time on one core, flat 5.1 ms, IVF 8.6 ms (R@1 0.996),
  candidates 0.20 ms (R@1 0.995) (scratch /tmp/single.py over bench/search_scale.py's Faces, session 5).

Choice of index, measured with ``bench/search_scale.py`` on this project's 2-core AMD EPYC VM (shared with
other work, load 1-4 during the run; faiss-cpu 1.15.1, 2 FAISS threads). The data are synthetic 128-d "faces"
fitted to real SFace embeddings of lfw_dev: two faces of one person have cosine ~0.68 (p10 0.53), strangers
~0.09 +- 0.09, and the spectrum is nearly isotropic (PCA participation ratio 112 of 128 on the real ones).
R@1 is recall@1 against exact search, for queries of persons in the list / for all queries (10 % strangers)::

      persons  flat 1-query  IVF 1-query  IVF nlist/nprobe  IVF R@1 known/all  batch qps flat / IVF (k=10)
      1k       0.037 ms      0.037 ms     25 / 15           0.993 / 0.981      131k / 64k
      10k      0.24 ms       0.13 ms      256 / 154         - / 0.992
      50k      1.07 ms       0.80 ms      894 / 537         - / 0.986
      100k     5.1 ms        1.9 ms       1265 / 759        0.998 / 0.998      3.9k / 0.9k
      200k     10.2 ms       3.5 ms       1789 / 1074       - / 0.992
      1M       54 ms         16 ms        4000 / 2400       0.997 / 0.991      611 / 82-107

* Face embeddings are hard for IVF: a query's match is not a near-duplicate (cosine ~0.68, not ~0.95), so it
  often sits in another Voronoi cell. At 1M, probing 10 % of the lists finds the exact top-1 for only 0.91 of
  known persons, 25 % for 0.98, 60 % for 0.997 (0.991 of all queries). Hence ``IVF_PROBE_FRACTION = 0.6``,
  chosen for R@1 >= 0.99 at 1M; with so much probing IVF is only ~3x faster than flat for single queries at
  100k-1M, and for batches of queries it is 4-7x *slower* than flat (flat batches run as one GEMM).
  (On the real lfw_dev embeddings, 3k faces, IVF16 needed nprobe 8 = 50 % for R@1 0.976: the same regime.)
* Single queries: IVF becomes clearly (>= 1.2x) faster than flat from ~6k persons, but saves < 0.3 ms there.
  Flat stays cheap while the list fits the CPU cache (~50k persons x 512 B); past that it is memory-bound,
  ~55 ns per person per query (5 ms at 100k, 54 ms at 1M).
* ``EXACT_MAX = 100_000``: below it an exact query costs <= ~5 ms, small next to detecting and embedding a face
  on this box (~20-300 ms) and worth keeping for exact persons lists; above it flat grows linearly while IVF
  stays ~3x cheaper at R@1 >= 0.99. Callers that search large batches at once should ask for ``kind="flat"``.
* Batches of queries (the scan writer searches a chunk's faces at once) go through BLAS (``_blas_for``): exact
  search then costs ~0.28 ms of one core per face at 100k persons, ~2.8 ms at 1M, which beats every IVF
  setting that keeps R@1 >= 0.99 on these embeddings; the writer therefore asks for ``kind="flat"``. The one
  approximate index that beat it for batches at R@1 >= 0.99 was an exhaustive PQ fast scan re-ranked exactly
  (``PQ64x4fs,RFlat``, k_factor 8; ``bench/search_scale.py --extra``: 9-11x flat at 1M, R@1 0.990); a flat
  index offers it for batches with ``use_candidates()``, which the writer turns on from ``EXACT_MAX``.
* Alternatives measured with ``--extra`` (raw FAISS): IVF-SQ8 at the same nprobe is 4x smaller (136 B/person)
  and no faster at 1M (12 ms, R@1 0.997 known) -- 128-d fp32 is only 512 MB per million persons, so it is not
  worth the extra kind. HNSW32 (efConstruction 200) needs efSearch 512 for R@1 0.996 at 100k, where it is no
  faster than IVF (2.2 ms vs 1.9 ms) but builds 15x slower (42-49 s vs 3 s) and cannot ``remove_ids``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import uuid
from collections.abc import Collection, Iterator, Sequence

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_MAX = 100_000
"""Person lists with fewer persons than this get an exact flat index under ``kind="auto"`` (see module doc)."""

IVF_PROBE_FRACTION = 0.6
"""Share of the IVF lists probed per query (measured; face embeddings need far more than near-duplicates do)."""

KINDS = ("auto", "flat", "ivf")
FORMAT = "enface-person-index/2"  # /1 (IndexIDMap2 flat) files are rebuilt
THREADS_ENV = "ENFACE_FAISS_THREADS"

_ADD_CHUNK = 65_536  # rows normalised/added at a time, so a 1M-row add never holds a second full copy
_NLIST_MAX = 65_536
_MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this; we size nlist so training never goes under it
_TRAIN_POINTS_PER_CENTROID = 64
_DEAD_MAX = 256  # flat: tombstoned rows tolerated before compaction (searches over-fetch by their number)


def ivf_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ~4*sqrt(n), bounded so each list gets >= 39 training points."""
    if n <= 0:
        return 1
    return int(max(1, min(round(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CENTROID, _NLIST_MAX)))


def ivf_nprobe(nlist: int) -> int:
    """Lists probed per query: 60 % of them, for recall@1 >= 0.99 vs exact at 100k-1M (see module doc)."""
    return int(min(nlist, max(1, math.ceil(nlist * IVF_PROBE_FRACTION))))


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` (or $ENFACE_FAISS_THREADS) OpenMP threads inside the block; default: leave FAISS alone."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        threads = int(env) if env else 0
    if threads <= 0:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


_BLAS_FROM = 4  # queries per search from which exact search goes through BLAS (measured, see _blas_for)


@contextlib.contextmanager
def _blas_for(nq: int) -> Iterator[None]:
    """Exact search of a batch as one BLAS GEMM. faiss 1.15's default (distance_compute_blas_threshold 128000)
    keeps batches of up to ~1000 queries on its one-query-at-a-time kernel: a chunk of 128 faces against 100k
    persons then cost 1.8-2.0 ms of CPU per face, against 0.28 ms through BLAS (4 queries: 0.98 vs 1.8 ms;
    1 query: 3.8 vs 1.9 ms, so single queries keep the default). The setting is process-wide: a concurrent
    search may take the other kernel meanwhile, which changes its speed, never its answer."""
    if nq < _BLAS_FROM:
        yield
        return
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 1
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def _as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {x.shape}")
    return x


def _checked(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy of ``x`` with its norms kept; refuses NaN/inf and all-zero rows."""
    out = _normalised(x)
    return out * np.linalg.norm(np.asarray(x, np.float32), axis=1, keepdims=True)


def _normalised(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy of ``x`` with rows of unit L2 norm; refuses NaN/inf and all-zero rows."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("embeddings contain an all-zero row")
    out /= norms
    return out


class PersonIndex:
    """Inner product on L2-normalised float32 embeddings of one person list."""

    def __init__(self, dim: int, *, kind: str = "auto", threads: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.requested_kind = kind
        self.kind = "ivf" if kind == "ivf" else "flat"  # "auto" starts empty, i.e. small, i.e. flat
        self.version = 0
        self.threads = threads
        self.trained_size = 0  # IVF: how many vectors the lists were trained for
        self._index = self._new_flat() if self.kind == "flat" else None  # IVF: created on first add (training)
        self._slot: dict[str, int] = {}  # person id -> int64 FAISS id
        self._names = np.empty(0, dtype=object)  # FAISS id -> person id (None once removed)
        self._next = 0  # IVF: FAISS ids are never reused; flat: the number of rows (live and tombstoned)
        self._dead = 0  # flat: tombstoned rows
        self._view: tuple | None = None  # flat: (index, its rows as numpy) while they have not moved
        self._coarse: faiss.Index | None = None  # flat: PQ fast-scan codes of the rows (use_candidates)
        self.k_factor = 0
        self._candidates_from = _BLAS_FROM  # queries per search from which candidates are used

    # ----------------------------------------------------------------- construction
    def _new_flat(self) -> faiss.Index:
        return faiss.IndexFlatIP(self.dim)

    def _rows(self) -> np.ndarray:
        """Flat: the index's own vectors as a writable (rows, dim) view, remade after adds (which may move them)."""
        n = self._index.ntotal
        view = self._view
        if view is None or view[0] is not self._index or len(view[1]) != n:
            rows = faiss.rev_swig_ptr(self._index.get_xb(), n * self.dim).reshape(n, self.dim) if n else None
            self._view = view = (self._index, rows if n else np.zeros((0, self.dim), np.float32))
        return view[1]

    def set_row(self, person_id: str, vector: np.ndarray) -> None:
        """Flat: the new vector of one indexed person (a template that moved), written in place, kept as given."""
        v = np.asarray(vector, np.float32)
        if v.shape != (self.dim,) or not np.isfinite(v).all():
            raise ValueError(f"expected a finite vector of {self.dim} values")
        self._rows()[self._slot[person_id]] = v

    def vectors(self, person_ids: Sequence[str]) -> np.ndarray:
        """Flat: the indexed vectors of these persons (a copy), as searches score them."""
        if self.kind != "flat":
            raise ValueError("vectors() needs a flat index")
        return self._rows()[np.array([self._slot[p] for p in person_ids], np.int64)].copy()

    def _new_ivf(self, sample: np.ndarray, n: int) -> faiss.Index:
        nlist = ivf_nlist(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
        index.cp.spherical = True  # centroids on the unit sphere, as the data are
        index.cp.seed = 1234
        index.train(sample)
        index.nprobe = ivf_nprobe(nlist)
        self.trained_size = n
        return index

    @classmethod
    def build(
        cls,
        person_ids: Sequence[str],
        embeddings: np.ndarray,
        *,
        version: int,
        kind: str = "auto",
        threads: int | None = None,
        normalise: bool = True,
    ) -> PersonIndex:
        """A fresh index of these persons (one embedding each), reflecting table ``version``."""
        ids = list(person_ids)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise ValueError(f"need one embedding row per person id: {len(ids)} ids, embeddings {emb.shape}")
        self = cls(emb.shape[1], kind=kind, threads=threads)
        self.add(ids, emb, version=version, normalise=normalise)
        self.version = int(version)
        self._auto_candidates()
        return self

    def _auto_candidates(self) -> None:
        """``auto`` at EXACT_MAX persons or more: PQ candidates re-ranked exactly, for single queries too."""
        if self.requested_kind == "auto" and self.kind == "flat" and len(self) >= EXACT_MAX:
            self.use_candidates(single=True)

    # ----------------------------------------------------------------- state
    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, person_id: object) -> bool:
        return person_id in self._slot

    def __repr__(self) -> str:
        return f"PersonIndex(dim={self.dim}, kind={self.kind!r}, n={len(self)}, version={self.version})"

    @property
    def person_ids(self) -> list[str]:
        """The indexed person ids, in insertion order."""
        return list(self._slot)

    @property
    def nprobe(self) -> int | None:
        return int(self._index.nprobe) if self.kind == "ivf" and self._index is not None else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf" or self._index is None:
            raise ValueError("nprobe applies to a trained IVF index only")
        self._index.nprobe = int(value)

    @property
    def needs_rebuild(self) -> bool:
        """True when a rebuild from the table would give a better-suited index (kind, or IVF lists outgrown)."""
        n = len(self)
        if self.requested_kind == "auto" and self.approximate != (n >= EXACT_MAX):
            # hysteresis for shrinking, so a list hovering at EXACT_MAX does not flip back and forth
            return not self.approximate or n < EXACT_MAX // 2
        return self.kind == "ivf" and self.trained_size > 0 and n > 4 * self.trained_size

    # ----------------------------------------------------------------- changes
    def add(
        self, person_ids: Sequence[str], embeddings: np.ndarray, *, version: int | None = None, normalise: bool = True
    ) -> None:
        """Add persons; a person id already in the index is replaced (its old embedding is removed).

        normalise=False keeps the rows' norms: person templates are indexed as m / sqrt(|m|) (ops/identity.py).
        """
        ids = [str(p) for p in person_ids]
        emb = _as_matrix(embeddings, self.dim, "embeddings")
        if emb.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} person ids but {emb.shape[0]} embeddings")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate person ids in one add")
        rows = _normalised if normalise else _checked
        if self.kind == "flat" and all(p in self._slot for p in ids) and len(ids) <= _ADD_CHUNK:
            # Persons moved (a writer's template updates, face after face): rewrite their rows in place.
            self._rows()[np.array([self._slot[p] for p in ids], np.int64)] = rows(emb)
            if version is not None:
                self.version = int(version)
            return
        for s in range(0, len(ids), _ADD_CHUNK):  # refuse bad rows before changing anything
            _normalised(emb[s : s + _ADD_CHUNK])
        with _faiss_threads(self.threads):
            replaced = [p for p in ids if p in self._slot]
            if replaced and self.kind == "flat":  # rewrite their rows in place
                pos = {p: i for i, p in enumerate(ids)}
                at = [pos[p] for p in replaced]
                self._rows()[np.array([self._slot[p] for p in replaced], np.int64)] = rows(emb[at])
                new = [i for i, p in enumerate(ids) if p not in self._slot]
                ids, emb = [ids[i] for i in new], emb[new]
            elif replaced:
                self._remove(replaced)
            if ids:
                if self._index is None:  # IVF, first data: train on a sample of it
                    self._index = self._train_ivf(emb)
                keys = np.arange(self._next, self._next + len(ids), dtype=np.int64)
                for s in range(0, len(ids), _ADD_CHUNK):
                    if self.kind == "flat":  # ids are rows: appended in order
                        block = rows(emb[s : s + _ADD_CHUNK])
                        self._index.add(block)
                        if self._coarse is not None:
                            self._coarse.add(block)
                    else:
                        self._index.add_with_ids(rows(emb[s : s + _ADD_CHUNK]), keys[s : s + _ADD_CHUNK])
                self._grow_names(self._next + len(ids))
                self._names[self._next : self._next + len(ids)] = ids
                self._slot.update(zip(ids, keys.tolist(), strict=True))
                self._next += len(ids)
        if version is not None:
            self.version = int(version)

    def _train_ivf(self, emb: np.ndarray) -> faiss.Index:
        n = emb.shape[0]
        n_train = min(n, max(ivf_nlist(n) * _TRAIN_POINTS_PER_CENTROID, 20_000))
        pick = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False)) if n_train < n else slice(None)
        return self._new_ivf(_normalised(emb[pick]), n)

    def _grow_names(self, size: int) -> None:
        if size > len(self._names):
            grown = np.empty(max(size, 2 * len(self._names), 1024), dtype=object)
            grown[: len(self._names)] = self._names
            self._names = grown

    def remove(self, person_ids: Sequence[str], *, version: int | None = None) -> None:
        """Remove persons (deleted or about to be replaced); ids not in the index are ignored."""
        with _faiss_threads(self.threads):
            self._remove([str(p) for p in person_ids])
        if version is not None:
            self.version = int(version)

    def _remove(self, ids: list[str]) -> None:
        keys = np.array([self._slot.pop(p) for p in dict.fromkeys(ids) if p in self._slot], dtype=np.int64)
        if len(keys) and self.kind == "flat":
            self._rows()[keys] = 0.0  # a tombstone: scores 0 for every query, skipped by search
            self._names[keys] = None
            self._dead += len(keys)
            if self._dead > _DEAD_MAX:
                self._compact()
        elif len(keys):
            removed = self._index.remove_ids(faiss.IDSelectorBatch(keys))
            if removed != len(keys):  # cannot happen unless the id maps diverged; fail loudly, caller rebuilds
                raise RuntimeError(f"FAISS removed {removed} vectors for {len(keys)} person ids")
            self._names[keys] = None

    def _compact(self) -> None:
        """Flat: drop tombstoned rows; live persons keep their order, their rows (FAISS ids) are renumbered."""
        live = np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))
        live.sort()
        index = self._new_flat()
        rows = self._rows()
        for s in range(0, len(live), _ADD_CHUNK):
            index.add(np.ascontiguousarray(rows[live[s : s + _ADD_CHUNK]]))
        names = self._names[live]
        self._index = index
        self._names = np.empty(0, dtype=object)
        self._grow_names(len(live))
        self._names[: len(live)] = names
        self._slot = dict(zip(names.tolist(), range(len(live)), strict=True))
        self._next, self._dead = len(live), 0
        if self._coarse is not None:  # its ids are rows too: re-encode the kept rows with the same codebooks
            self._coarse.reset()
            self._coarse.add(self._rows())

    def use_candidates(self, k_factor: int = 8, *, train_max: int = 100_000, single: bool = False) -> None:
        """Flat: answer batches approximately, as a PQ fast scan's ``k * k_factor`` candidates re-ranked
        exactly against the rows (``bench/search_scale.py --extra``: PQ64x4fs with k_factor 8 finds the exact
        top-1 for 0.990 of queries at 1M persons, 0.999 at 200k, at 11x / 6x the batched exact rate).

        The codes are those of the rows when encoded: a row moved in place keeps its old code for picking
        candidates and is re-ranked with its new value; added rows are encoded as they come. Single queries
        stay exact unless ``single`` (a reader answering one photo at a time: at 1M persons ~1 ms against 54 ms
        exact and 16 ms for IVF at the same recall).
        """
        if self.kind != "flat":
            raise ValueError("use_candidates() needs a flat index")
        rows = self._rows()
        pick = np.random.default_rng(0).choice(len(rows), min(len(rows), train_max), replace=False)
        coarse = faiss.IndexPQFastScan(self.dim, self.dim // 2, 4, faiss.METRIC_INNER_PRODUCT)
        with _faiss_threads(self.threads):
            coarse.train(np.ascontiguousarray(rows[np.sort(pick)]))
            coarse.add(rows)
        self._coarse, self.k_factor = coarse, int(k_factor)
        self._candidates_from = 1 if single else _BLAS_FROM

    @property
    def approximate(self) -> bool:
        """Whether batched searches are approximate (use_candidates)."""
        return self._coarse is not None

    # ----------------------------------------------------------------- search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
    ) -> list[list[tuple[str, float]]]:
        """Per query, up to ``k`` ``(person_id, cosine similarity)``, best first; never a person in ``exclude``."""
        q = _as_matrix(queries, self.dim, "queries")
        nq = q.shape[0]
        if k <= 0 or nq == 0 or len(self) == 0:
            return [[] for _ in range(nq)]
        excluded = {self._slot[p] for p in exclude if p in self._slot}
        sims, keys, names = self.search_raw(q, k + len(excluded))  # over-fetch by the excluded ones
        out: list[list[tuple[str, float]]] = []
        for row_k, row_s, row_n in zip(keys.tolist(), sims.tolist(), names.tolist(), strict=True):
            hits: list[tuple[str, float]] = []
            for key, sim, name in zip(row_k, row_s, row_n, strict=True):
                if name is None or key in excluded:  # -1: IVF probed fewer; None: a tombstone
                    continue
                hits.append((name, sim))
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    def search_raw(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query the ``k`` best (plus tombstones) as (similarities, FAISS ids, person ids or None), best
        first: the batched form a writer resolves a chunk of faces with."""
        q = _as_matrix(queries, self.dim, "queries")
        kk = min(len(self) + self._dead, k + self._dead)
        if kk <= 0 or not len(q):
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), np.empty((len(q), 0), object)
        if self._coarse is not None and len(q) >= self._candidates_from:
            sims, keys = self._candidates(_normalised(q), kk)
        else:
            with _faiss_threads(self.threads), _blas_for(len(q)):
                sims, keys = self._index.search(_normalised(q), kk)
        np.clip(sims, -1.0, 1.0, out=sims)
        names = self._names[np.maximum(keys, 0)]
        names[keys < 0] = None
        return sims, keys, names

    def _candidates(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of each query among its PQ candidates, scored exactly against the rows.

        FAISS's IndexRefine over the two indexes (it owns neither, and is made per call since either may be
        replaced by a compaction): its C++ re-rank costs ~0.004 ms per query against ~0.013 ms for gathering
        the candidates' rows in numpy, and it reads the rows as they are now, moved templates included."""
        refine = faiss.IndexRefine(self._coarse, self._index)
        refine.k_factor = float(self.k_factor)
        with _faiss_threads(self.threads):
            sims, keys = refine.search(q, k)
        return sims, keys

    # ----------------------------------------------------------------- persistence
    def _meta(self) -> dict:
        return {
            "format": FORMAT,
            "dim": self.dim,
            "kind": self.kind,
            "requested_kind": self.requested_kind,
            "version": self.version,
            "n": len(self),
            "next_key": self._next,
            "trained_size": self.trained_size,
            "nprobe": self.nprobe,
            "faiss": faiss.__version__,
        }

    def _write(self, f) -> None:
        if self._dead:
            self._compact()
        keys = np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))
        ids = np.array([p.encode("utf-8") for p in self._slot], dtype=np.bytes_) if self._slot else np.zeros(0, "S1")
        blob = faiss.serialize_index(self._index) if self._index is not None else np.zeros(0, np.uint8)
        meta = np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)
        np.savez(f, meta=meta, keys=keys, ids=ids, faiss=blob)

    def save(self, path: str, *, fs=None) -> None:
        """Write the index to ``path`` (local or fsspec URI) in one file, atomically.

        One ``.npz`` holds the serialized FAISS index and its sidecar (person ids, FAISS ids, version, kind,
        dim), so index and ids can never be torn apart. Local: written under a temporary name beside ``path``,
        fsynced, then renamed over it. Other filesystems: one ``pipe_file`` (a single put, atomic on object
        stores).
        """
        if fs is None:
            from .fsio import url_to_fs

            fs, path = url_to_fs(path)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        local = "file" in _protocols(fs)
        if parent and local:
            fs.makedirs(parent, exist_ok=True)
        with _faiss_threads(self.threads):
            if local:
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                try:
                    with open(tmp, "wb") as f:
                        self._write(f)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            else:
                buf = io.BytesIO()
                self._write(buf)
                fs.pipe_file(path, buf.getvalue())

    @classmethod
    def load(cls, path: str, *, fs=None, threads: int | None = None) -> PersonIndex | None:
        """The index saved at ``path``, or None when it is absent or unreadable (the caller then rebuilds)."""
        try:
            if fs is None:
                from .fsio import url_to_fs

                fs, path = url_to_fs(path)
            with fs.open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                keys, ids, blob = z["keys"], z["ids"], z["faiss"]
            if meta.get("format") != FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            self = cls(int(meta["dim"]), kind=meta["requested_kind"], threads=threads)
            self.kind = meta["kind"]
            self.version = int(meta["version"])
            self.trained_size = int(meta["trained_size"])
            self._next = int(meta["next_key"])
            names = [b.decode("utf-8") for b in ids.tolist()]
            if not (len(names) == len(keys) == int(meta["n"])) or len(set(names)) != len(names):
                raise ValueError("person id sidecar is inconsistent")
            if len(keys) and (int(keys.min()) < 0 or int(keys.max()) >= self._next):
                raise ValueError("FAISS ids out of range")
            if blob.size:
                index = faiss.deserialize_index(blob)
                if index.d != self.dim or index.ntotal != len(keys) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
                    raise ValueError(f"FAISS index (d={index.d}, n={index.ntotal}) does not match its sidecar")
                if self.kind == "ivf":
                    if not isinstance(index, faiss.IndexIVF):
                        raise ValueError(f"expected an IVF index, found {type(index).__name__}")
                    index.nprobe = int(meta["nprobe"])
                elif not isinstance(index, faiss.IndexFlatIP) or sorted(keys.tolist()) != list(range(len(keys))):
                    raise ValueError(f"expected a compact flat IndexFlatIP, found {type(index).__name__}")
                self._index = index
            elif len(keys) or self.kind == "flat":
                raise ValueError("FAISS index missing")
            else:
                self._index = None  # an IVF index that never saw data
            self._grow_names(self._next)
            self._names[keys] = names
            self._slot = dict(zip(names, keys.tolist(), strict=True))
            self._auto_candidates()
            return self
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - any unreadable file means "rebuild"
            log.warning("person index at %s is unreadable, ignoring it (%s: %s)", path, type(e).__name__, e)
            return None


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)
