"""Exact (brute-force) search: the reference every approximate store is measured against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sbert_retrieval.stores.local import LocalStore, exact_top_k

__all__ = ["ExactStore"]


class ExactStore(LocalStore):
    """All live vectors in one dense float32 matrix; every search scores them all.

    Exact by construction, so it is the ground truth for recall measurements and fine up to a few
    hundred thousand vectors. The database is as for every local store; the matrix is rebuilt
    from it on open (reading vectors is faster than any snapshot would be). Memory is one row
    per live point: a delete moves the last row into the freed one. Takes the same arguments as
    :class:`~sbert_retrieval.stores.local.LocalStore`.

    Thread safety: concurrent searches; writes are exclusive.
    """

    FORMAT = "sbert-retrieval/exact"

    def _init_index(self, capacity: int) -> None:
        # Sized by live points as they come, not by the labels ever issued (``capacity``).
        self._matrix = np.zeros((1024, self.dimension), dtype=np.float32)
        self._row_labels = np.zeros(len(self._matrix), dtype=np.int64)
        self._rows: dict[int, int] = {}

    def _free_index(self) -> None:
        matrix: np.ndarray | None = getattr(self, "_matrix", None)
        if matrix is not None:  # (a store that failed to open may have none)
            self._matrix = np.zeros((0, matrix.shape[1]), dtype=np.float32)
            self._row_labels = np.zeros(0, dtype=np.int64)
            self._rows = {}

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        vectors = self._compared(vectors)
        size = len(self._rows)
        needed = size + len(labels)
        if needed > len(self._matrix):
            capacity = max(needed, 2 * len(self._matrix), 1024)
            matrix = np.zeros((capacity, self.dimension), dtype=np.float32)
            matrix[:size] = self._matrix[:size]
            row_labels = np.zeros(capacity, dtype=np.int64)
            row_labels[:size] = self._row_labels[:size]
            self._matrix, self._row_labels = matrix, row_labels
        self._matrix[size:needed] = vectors
        self._row_labels[size:needed] = labels
        self._rows.update(zip(labels.tolist(), range(size, needed), strict=True))

    def _index_delete(self, labels: Sequence[int]) -> None:
        for label in labels:
            row = self._rows.pop(int(label))
            last = len(self._rows)
            if row != last:
                moved = int(self._row_labels[last])
                self._matrix[row] = self._matrix[last]
                self._row_labels[row] = moved
                self._rows[moved] = row

    def _index_vectors(self, labels: Sequence[int]) -> np.ndarray:
        return self._matrix[[self._rows[int(label)] for label in labels]]

    def _search_vectors(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:
            return self._exact_search(queries, k, allowed)
        size = len(self._rows)
        rows, scores = exact_top_k(queries, self._matrix[:size], k)
        return self._row_labels[rows], scores
