"""Exact (brute-force) search: the reference every approximate store is measured against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbert_retrieval.stores.local import LocalStore, exact_top_k, write_durably

__all__ = ["ExactStore"]


class ExactStore(LocalStore):
    """All vectors in one float32 matrix; every search scores them all.

    Exact by construction, so it is the ground truth for recall measurements and fine up to a few
    hundred thousand vectors. Takes the same arguments as
    :class:`~sbert_retrieval.stores.local.LocalStore`.

    Thread safety: concurrent searches; writes are exclusive.
    """

    FORMAT = "sbert-retrieval/exact"

    def _init_vectors(self, params: Mapping[str, Any]) -> None:
        self._matrix = np.zeros((0, self.dimension), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)
        # (labels, their rows) of every live vector, built on the first unfiltered search after
        # a write, so single-query searches do not gather the matrix each time.
        self._live_view: tuple[np.ndarray, np.ndarray] | None = None

    def _grow(self, size: int) -> None:
        if size <= len(self._matrix):
            return
        capacity = max(size, 2 * len(self._matrix), 1024)
        matrix = np.zeros((capacity, self.dimension), dtype=np.float32)
        matrix[: len(self._matrix)] = self._matrix
        live = np.zeros(capacity, dtype=bool)
        live[: len(self._live)] = self._live
        self._matrix, self._live = matrix, live

    def _add_vectors(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if self.metric == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1, norms)
        self._grow(int(labels.max()) + 1)
        self._matrix[labels] = vectors
        self._live[labels] = True
        self._live_view = None

    def _delete_vectors(self, labels: Sequence[int]) -> None:
        self._live[list(labels)] = False
        self._live_view = None

    def _get_vectors(self, labels: Sequence[int]) -> np.ndarray:
        return self._matrix[list(labels)].copy()

    def _search_vectors(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:
            return self._exact_search(queries, k, allowed)
        view = self._live_view
        if view is None:
            labels = np.flatnonzero(self._live)
            # Readers share the lock: two may build the view at once; both build the same one.
            view = self._live_view = (labels, self._matrix[labels])
        rows, scores = exact_top_k(queries, view[1], k)
        return view[0][rows], scores

    def _save_vectors(self, generation: int, live_labels: list[int]) -> dict[str, Any]:
        assert self.path is not None
        rows = self._matrix[live_labels]

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.save(handle, rows, allow_pickle=False)

        return write_durably(self.path / f"vectors-{generation}.npy", write)

    def _load_vectors(self, manifest: Mapping[str, Any], file: Path, labels: list[int]) -> None:
        rows = np.load(file, allow_pickle=False)
        if rows.shape != (len(labels), self.dimension):
            raise ValueError(
                f"vectors file has shape {rows.shape}, expected {(len(labels), self.dimension)}"
            )
        self._init_vectors({})
        if labels:
            self._add_vectors(np.asarray(labels, dtype=np.int64), rows)
