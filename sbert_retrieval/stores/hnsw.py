"""The embedded default store: SQLite for the truth, an hnswlib HNSW graph derived from it."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores._hugepages import huge_pages
from sbert_retrieval.stores.local import SNAPSHOT_MIN_TAIL, LocalStore, _decode_rows, exact_top_k
from sbert_retrieval.stores.quantized import Int8Codes

__all__ = ["HnswParams", "HnswStore"]

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024
#: Exact filtered search rescores at least this many int8 candidates per query (and 4k).
_RESCORE_MIN = 64


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters.

    Attributes:
        m: Links per node (default 16); more is better recall, more memory.
        ef_construction: Candidate list size while building (default 200).
        ef_search: Candidate list size while searching (default 128; ``max(ef_search, k)`` is
            used). Unlike hnswlib itself, this store saves it with the index.
        exact_threshold: A filter matching at most this many points is answered by exact search
            over them (default 20,000): an int8 scan of the matches, its best candidates
            rescored with the float32 vectors. A graph walk that skips most nodes is both slow
            (hnswlib calls back into Python per node) and loses recall; at 1M points a 1%
            filter (10,000 matches) took 136 ms through the graph, under 10 ms exactly.
    """

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 128
    exact_threshold: int = 20_000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"HnswParams.{name} must be >= 1, got {value}")


class HnswStore(LocalStore):
    """Approximate nearest-neighbour search with hnswlib, persisted on disk.

    Covers hnswlib's sharp edges: query widths are validated, ``k`` is clamped to the live count,
    capacity grows automatically, ``ef_search`` is persisted, deleted slots are reused, and a
    readers–writer lock keeps additions and searches apart (hnswlib's add and query must not run
    concurrently). Beside the graph it holds an int8 copy of the vectors (a quarter of their
    float32 size: :class:`~sbert_retrieval.stores.quantized.Int8Codes`), saved with each graph
    snapshot, for exact search over the points a selective filter matches. While the store is
    open those codes live in an unnamed file in its directory, read through a memory map (the
    page cache holds them, not the process's heap; in memory where the directory takes no file).

    Args:
        path: Directory, or ``None`` for an in-memory index.
        spec: See :class:`~sbert_retrieval.stores.local.LocalStore`.
        params: Graph parameters for a new index; an existing index keeps its own, except
            ``ef_search`` and ``exact_threshold`` when given explicitly.
        read_only: Open without the writer lock.
        metric: ``"cosine"`` or ``"ip"``.
        num_threads: Threads hnswlib uses for a batch add or a batch query (default: all cores).
        snapshot_min_tail: See :class:`~sbert_retrieval.stores.local.LocalStore`.

    Thread safety: concurrent searches; writes are exclusive.
    """

    FORMAT = "sbert-retrieval/hnsw"
    _codes: Int8Codes

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        spec: EmbeddingSpec | None = None,
        *,
        params: HnswParams | None = None,
        read_only: bool = False,
        metric: str = "cosine",
        num_threads: int = -1,
        snapshot_min_tail: int = SNAPSHOT_MIN_TAIL,
    ) -> None:
        self._requested = params
        self.params = params or HnswParams()
        self.num_threads = num_threads
        self._index: Any = None
        super().__init__(
            path,
            spec,
            read_only=read_only,
            metric=metric,
            snapshot_min_tail=snapshot_min_tail,
        )

    # -- LocalStore hooks ------------------------------------------------------------------
    KEEPS_SNAPSHOTS = True

    def _params_for_new(self) -> dict[str, Any]:
        return asdict(self.params)

    def _adopt_params(self, params: Mapping[str, Any]) -> None:
        stored = HnswParams(**params) if params else self.params
        if self._requested is not None:
            # Graph shape is fixed once built; search-time settings may change.
            stored = HnswParams(
                m=stored.m,
                ef_construction=stored.ef_construction,
                ef_search=self._requested.ef_search,
                exact_threshold=self._requested.exact_threshold,
            )
        self.params = stored

    def _new_index(self) -> Any:
        return hnswlib.Index(
            space="cosine" if self.metric == "cosine" else "ip", dim=self.dimension
        )

    def _new_codes(self, snapshot: Path | None = None) -> Int8Codes:
        """Empty int8 codes, or those saved in ``snapshot``, spilled to a file in the index's
        directory (see :class:`Int8Codes`); on the heap where that directory takes no file (a
        read-only mount)."""
        self._drop_codes()

        def make(spill: Path | None) -> Int8Codes:
            if snapshot is not None:
                return Int8Codes.load(snapshot, self.dimension, spill)
            return Int8Codes(self.dimension, spill)

        try:
            return make(self.path)
        except PermissionError as exc:
            logger.info("%s: keeping the int8 codes in memory (%s)", self.path, exc)
            return make(None)

    def _drop_codes(self) -> None:
        """Release the codes' file now, not when the garbage collector gets to them."""
        codes: Int8Codes | None = getattr(self, "_codes", None)
        if codes is not None:
            codes.close()

    def _release(self) -> None:
        super()._release()
        self._drop_codes()

    def _free_index(self) -> None:
        self._index = None

    def _init_index(self, capacity: int) -> None:
        self._codes = self._new_codes()
        self._index = self._new_index()
        with huge_pages():
            self._index.init_index(
                max_elements=max(capacity, _INITIAL_CAPACITY),
                M=self.params.m,
                ef_construction=self.params.ef_construction,
                random_seed=100,
                allow_replace_deleted=True,
            )
        self._index.set_ef(self.params.ef_search)

    def _save_snapshot(self, file: Path) -> list[Path]:
        codes = file.with_name(file.name.replace(".hnsw", ".codes.npy"))
        self._codes.save(codes)
        self._index.save_index(str(file))
        # hnswlib writes through an unchecked std::ofstream: on a full disk it leaves a short
        # file and reports nothing, so the size is checked before the file may replace anything.
        expected = int(self._index.index_file_size())
        written = file.stat().st_size
        if written != expected:
            raise OSError(
                errno.ENOSPC, f"wrote {written:,} of {expected:,} bytes (is the disk full?)"
            )
        return [codes]

    def _load_snapshot(self, file: Path, capacity: int, companions: Sequence[Path]) -> None:
        index = self._new_index()
        # Advised, not collapsed: collapsing a loaded 1M-point graph took 4-6 s here, more than
        # the load itself, and a store is often opened for one search (the CLI). The kernel's
        # khugepaged collapses it in the background; a later resize collapses it at once.
        with huge_pages(collapse=False):
            index.load_index(
                str(file), max_elements=max(capacity, _INITIAL_CAPACITY), allow_replace_deleted=True
            )
        if index.dim != self.dimension:
            raise ValueError(f"the snapshot holds {index.dim}-d vectors, not {self.dimension}-d")
        index.set_ef(self.params.ef_search)
        codes = [part for part in companions if part.name.endswith(".codes.npy")]
        if codes:
            self._codes = self._new_codes(codes[0])
        else:
            # A snapshot from before the int8 copy: derive it once from the database.
            logger.info("%s: building the int8 copy of the vectors from the database", self.path)
            self._codes = self._new_codes()
            ids = index.get_ids_list()
            last = max(ids) if ids else 0
            cursor = self._reader().execute(
                "SELECT label, vector FROM points WHERE label <= ? ORDER BY label", (last,)
            )
            while rows := cursor.fetchmany(_INITIAL_CAPACITY * 8):
                labels, vectors = _decode_rows(rows, self.dimension)
                self._codes.add(labels, self._compared(vectors))
        self._index = index

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        needed = self._index.get_current_count() + len(labels)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            with huge_pages():
                self._index.resize_index(max(needed, 2 * capacity))
        # hnswlib normalizes for cosine inside; the int8 copy must hold what it compares. The
        # codes go first: their write can fail (a full disk), and then the graph is untouched.
        self._codes.add(labels, self._compared(vectors))
        try:
            # Labels are always new (a changed vector gets a new label), so replace_deleted
            # only reuses the slots of deleted points: never the ghost-node path of re-adding.
            self._index.add_items(
                vectors, labels, num_threads=self.num_threads, replace_deleted=True
            )
        except BaseException:
            self._codes.discard_from(int(labels[0]))
            raise

    def _index_delete(self, labels: Sequence[int]) -> None:
        for label in labels:
            self._index.mark_deleted(int(label))
        self._codes.delete(np.asarray(labels, dtype=np.int64))

    def _index_vectors(self, labels: Sequence[int]) -> np.ndarray:
        if not len(labels):
            return np.empty((0, self.dimension), dtype=np.float32)
        return np.asarray(
            self._index.get_items(list(labels), return_type="numpy"), dtype=np.float32
        )

    def _search_vectors(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None and len(allowed) <= max(self.params.exact_threshold, k):
            return self._filtered_exact(queries, k, allowed)
        allowed_set = None if allowed is None else set(allowed.tolist())
        try:
            labels, distances = self._index.knn_query(
                queries,
                k=k,
                num_threads=self.num_threads,
                filter=None if allowed_set is None else allowed_set.__contains__,
            )
        except RuntimeError:
            # hnswlib could not reach k live (or allowed) points through the graph: answer exactly.
            if allowed is None:
                allowed = self._live_labels()
            return self._filtered_exact(queries, k, allowed)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def _filtered_exact(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among ``allowed``: int8 scan, then the float32 rescore of the best.

        Each query rescores its max(4k, 64) best int8 candidates with the stored float32
        vectors, so the scores are exact and so is the order, unless the int8 error (about
        0.4% of a score) reorders points across that depth.
        """
        depth = max(4 * k, _RESCORE_MIN)
        candidates = self._codes.top(queries, allowed, depth)
        labels, vectors = self._stored_vectors(np.unique(candidates))
        if not len(labels):
            empty = np.empty((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        row_of = {label: row for row, label in enumerate(labels.tolist())}
        width = min(k, candidates.shape[1])
        out_labels = np.full((len(queries), width), -1, dtype=np.int64)
        out_scores = np.full((len(queries), width), -np.inf, dtype=np.float32)
        for i, (query, row) in enumerate(zip(queries, candidates, strict=True)):
            rows = np.fromiter(
                (row_of[label] for label in row.tolist() if label in row_of), dtype=np.int64
            )
            best, scores = exact_top_k(query[None, :], vectors[rows], min(width, len(rows)))
            out_labels[i, : best.shape[1]] = labels[rows[best[0]]]
            out_scores[i, : best.shape[1]] = scores[0]
        return out_labels, out_scores
