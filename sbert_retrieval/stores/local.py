"""What the embedded stores share: ids, payloads, locking and crash-consistent files on disk.

On-disk layout of a store directory (no pickle anywhere)::

    manifest.json          the committed state: generation, spec, parameters, file checksums
    points-<gen>.jsonl     one line per live point: {"label", "id", "payload"}
    <vectors>-<gen>.<ext>  the backend's vectors (hnswlib index, or .npy)
    LOCK                   held (flock) by the one open writer; holds its pid

A flush writes the next generation's files (temp file, fsync, rename), then replaces
``manifest.json`` the same way, then deletes the previous generation. A crash at any moment
leaves the last committed manifest pointing at complete files, so opening always recovers the
last flushed state; leftovers of an unfinished flush are removed by the next writer.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sbert_retrieval.errors import StoreCorruptedError, StoreError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores._locking import ReadWriteLock, WriterLockFile
from sbert_retrieval.stores.base import (
    Record,
    ScoredRecord,
    VectorStore,
    check_spec,
    validate_queries,
)
from sbert_retrieval.stores.filters import FilterLike, parse_filter

__all__ = ["METRICS", "LocalStore", "exact_top_k"]

METRICS = ("cosine", "ip")
MANIFEST = "manifest.json"
_GENERATION_FILE = re.compile(r"^[a-z]+-(\d+)\.[a-z]+(\.tmp)?$")


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k``: ``(rows, scores)``, each ``(n_queries, k)``, best first."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_durably(path: Path, write: Callable[[Path], None]) -> dict[str, Any]:
    """Have ``write`` fill a temp file, fsync it, rename it to ``path``; return its checksum entry.

    Raises:
        StoreError: The disk is full or the directory is not writable (the message says which).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


class LocalStore(VectorStore, abc.ABC):
    """Base of the embedded stores; subclasses supply vector storage and search.

    Args:
        path: Directory of the store, created if missing; ``None`` keeps it in memory only.
        spec: The embedding identity. Required for a new store; for an existing one it is
            checked against the stored spec (:class:`ModelMismatchError` on a difference), and
            ``None`` adopts the stored one.
        read_only: Open without the writer lock; writes raise :class:`StoreError`. Readers
            see the last flushed state.
        metric: ``"cosine"`` (default) or ``"ip"`` (inner product; same ranking for normalized
            vectors, skips normalization).

    Thread safety: searches and reads run concurrently; writes take an exclusive lock.
    """

    FORMAT: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        spec: EmbeddingSpec | None = None,
        *,
        read_only: bool = False,
        metric: str = "cosine",
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        self.path = Path(path) if path is not None else None
        self.read_only = read_only
        self._lock = ReadWriteLock()
        # Flushes run under the read lock (searches go on); this keeps two from racing.
        self._flush_lock = threading.Lock()
        self._writer_lock: WriterLockFile | None = None
        self._ids: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._payloads: dict[int, Mapping[str, Any]] = {}
        self._by_doc: dict[str, set[str]] = {}
        self._next_label = 0
        self._generation = 0
        self._dirty = False
        self._closed = False
        manifest = self._open_directory()
        if manifest is None:
            if spec is None:
                where = self.path or "an in-memory store"
                raise ValueError(
                    f"{where} holds no index yet: pass the encoder's spec to create one"
                )
            self.spec = spec
            self.metric = metric
            self._init_vectors(self._params_for_new())
            # Written on the first flush or close even if nothing is ever upserted, so a store
            # created empty reopens with its spec instead of "holds no index yet".
            self._dirty = self.path is not None
        else:
            self.spec = EmbeddingSpec.from_dict(manifest["spec"])
            check_spec(self.spec, spec, f"index {self.path}")
            self.metric = manifest["metric"]
            self._load(manifest)

    # -- subclass hooks -----------------------------------------------------------------------
    def _params_for_new(self) -> dict[str, Any]:
        """Backend parameters to persist in the manifest."""
        return {}

    @abc.abstractmethod
    def _init_vectors(self, params: Mapping[str, Any]) -> None:
        """Create empty vector storage."""

    @abc.abstractmethod
    def _add_vectors(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors (called under the write lock)."""

    @abc.abstractmethod
    def _delete_vectors(self, labels: Sequence[int]) -> None:
        """Forget vectors (called under the write lock)."""

    @abc.abstractmethod
    def _get_vectors(self, labels: Sequence[int]) -> np.ndarray:
        """``(len(labels), dim)`` float32 (called under a read lock)."""

    @abc.abstractmethod
    def _search_vectors(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, scores)``, ``(n, k)`` each, best first; ``allowed`` restricts the labels."""

    @abc.abstractmethod
    def _save_vectors(self, generation: int, live_labels: list[int]) -> dict[str, Any]:
        """Write the vectors durably for ``generation``; return the checksum entry."""

    @abc.abstractmethod
    def _load_vectors(self, manifest: Mapping[str, Any], file: Path, labels: list[int]) -> None:
        """Load vectors written by :meth:`_save_vectors`."""

    # -- opening ---------------------------------------------------------------------------
    def _open_directory(self) -> dict[str, Any] | None:
        if self.path is None:
            if self.read_only:
                raise ValueError("read_only needs a path")
            return None
        if self.read_only:
            if not (self.path / MANIFEST).is_file():
                raise StoreError(
                    f"{self.path} holds no index (no {MANIFEST}); ingest into it first"
                )
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create store directory {self.path}: {exc.strerror or exc}"
                ) from exc
            if not os.access(self.path, os.W_OK):
                raise StoreError(
                    f"{self.path} is not writable; open it with read_only=True to search"
                )
            self._writer_lock = WriterLockFile(self.path)
        manifest_file = self.path / MANIFEST
        if not manifest_file.is_file():
            self._remove_stale_files(keep=())
            return None
        try:
            manifest: dict[str, Any] = json.loads(manifest_file.read_text(encoding="utf-8"))
            if manifest.get("format") != self.FORMAT:
                raise StoreError(
                    f"{self.path} holds a {manifest.get('format')!r} store, not {self.FORMAT!r}"
                )
            if int(manifest.get("version", 0)) > self.VERSION:
                raise StoreError(f"{self.path} was written by a newer sbert-retrieval; upgrade it")
        except (OSError, ValueError, TypeError) as exc:
            self._release()
            raise StoreCorruptedError(
                f"{manifest_file} is unreadable ({exc}); delete {self.path} and re-ingest"
            ) from exc
        except StoreError:
            self._release()
            raise
        return manifest

    def _verify(self, entry: Mapping[str, Any]) -> Path:
        assert self.path is not None
        file = self.path / str(entry["name"])
        advice = (
            f"restore {self.path} from a backup, or delete it and re-ingest"
            " (ingestion is idempotent)"
        )
        if not file.is_file():
            raise StoreCorruptedError(f"{file} is missing; {advice}")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise StoreCorruptedError(f"{file} does not match its checksum (corrupted); {advice}")
        return file

    def _load(self, manifest: Mapping[str, Any]) -> None:
        try:
            points_file = self._verify(manifest["files"]["points"])
            vectors_file = self._verify(manifest["files"]["vectors"])
            labels: list[int] = []
            with points_file.open(encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    label = int(row["label"])
                    labels.append(label)
                    self._index_point(str(row["id"]), label, row["payload"])
            self._next_label = int(manifest["next_label"])
            self._generation = int(manifest["generation"])
            self._load_vectors(manifest, vectors_file, labels)
        except StoreCorruptedError:
            self._release()
            raise
        except (KeyError, ValueError, TypeError, RuntimeError, OSError) as exc:
            self._release()
            raise StoreCorruptedError(
                f"{self.path} cannot be loaded ({type(exc).__name__}: {exc});"
                " delete it and re-ingest"
            ) from exc
        if not self.read_only:
            self._remove_stale_files(keep=(points_file.name, vectors_file.name))

    def _remove_stale_files(self, keep: Iterable[str]) -> None:
        if self.path is None or self.read_only:
            return
        kept = set(keep)
        for file in self.path.iterdir():
            if file.name not in kept and _GENERATION_FILE.match(file.name):
                with contextlib.suppress(OSError):
                    file.unlink()

    # -- bookkeeping -----------------------------------------------------------------------
    def _index_point(self, point_id: str, label: int, payload: Mapping[str, Any]) -> None:
        self._ids[point_id] = label
        self._labels[label] = point_id
        self._payloads[label] = payload
        self._by_doc.setdefault(str(payload["doc_id"]), set()).add(point_id)

    def _forget_point(self, point_id: str) -> int:
        label = self._ids.pop(point_id)
        del self._labels[label]
        payload = self._payloads.pop(label)
        doc_ids = self._by_doc.get(str(payload["doc_id"]))
        if doc_ids is not None:
            doc_ids.discard(point_id)
            if not doc_ids:
                del self._by_doc[str(payload["doc_id"])]
        return label

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only; reopen it without read_only to write")

    # -- VectorStore -----------------------------------------------------------------------
    def upsert(self, records: Sequence[Record]) -> None:
        """See :meth:`VectorStore.upsert`. Thread safety: exclusive; waits for running searches."""
        self._check_writable()
        if not records:
            return
        vectors = np.asarray([r.vector for r in records], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors must have width {self.dimension}, got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            bad = next(r.id for r in records if not np.isfinite(r.vector).all())
            raise ValueError(f"record {bad}: vector contains NaN or infinity")
        for record in records:
            if not isinstance(record.payload.get("doc_id"), str):
                raise ValueError(f"record {record.id}: payload needs a string 'doc_id'")
            try:
                json.dumps(record.payload, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"record {record.id}: payload is not JSON-serializable ({exc})"
                ) from exc
        # A repeated id within one batch: the last one wins, as in a sequence of single upserts.
        last = {record.id: i for i, record in enumerate(records)}
        keep = sorted(last.values())
        with self._lock.write():
            labels = np.empty(len(keep), dtype=np.int64)
            for row, i in enumerate(keep):
                record = records[i]
                label = self._ids.get(record.id)
                if label is None:
                    label = self._next_label
                    self._next_label += 1
                else:
                    self._forget_point(record.id)
                self._index_point(record.id, label, dict(record.payload))
                labels[row] = label
            self._add_vectors(labels, vectors[keep])
            self._dirty = True

    def delete(self, ids: Iterable[str]) -> int:
        """See :meth:`VectorStore.delete`. Thread safety: exclusive."""
        self._check_writable()
        with self._lock.write():
            labels = [self._forget_point(pid) for pid in dict.fromkeys(ids) if pid in self._ids]
            if labels:
                self._delete_vectors(labels)
                self._dirty = True
        return len(labels)

    def get(self, ids: Iterable[str]) -> list[Record]:
        """See :meth:`VectorStore.get`. Thread safety: shared (concurrent with searches)."""
        with self._lock.read():
            found = [(pid, self._ids[pid]) for pid in ids if pid in self._ids]
            if not found:
                return []
            vectors = self._get_vectors([label for _, label in found])
            return [
                Record(pid, vectors[i], self._payloads[label])
                for i, (pid, label) in enumerate(found)
            ]

    def ids_by_document(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """See :meth:`VectorStore.ids_by_document`. Thread safety: shared."""
        with self._lock.read():
            return {d: set(self._by_doc[d]) for d in doc_ids if d in self._by_doc}

    def document_ids(self) -> list[str]:
        """Every document id with at least one point. Thread safety: shared."""
        with self._lock.read():
            return list(self._by_doc)

    def count(self) -> int:
        """See :meth:`VectorStore.count`. Thread safety: shared."""
        with self._lock.read():
            return len(self._ids)

    def search(
        self, vectors: np.ndarray, k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """See :meth:`VectorStore.search`.

        Thread safety: shared (concurrent searches run in parallel).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = validate_queries(vectors, self.dimension)
        parsed = parse_filter(filter)
        if self.metric == "cosine":
            norms = np.linalg.norm(queries, axis=1, keepdims=True)
            queries = queries / np.where(norms == 0, 1, norms)
        with self._lock.read():
            allowed: np.ndarray | None = None
            if parsed is not None:
                allowed = np.fromiter(
                    (label for label, p in self._payloads.items() if parsed.matches(p)),
                    dtype=np.int64,
                )
            available = len(self._ids) if allowed is None else len(allowed)
            if available == 0:
                return [[] for _ in range(len(queries))]
            labels, scores = self._search_vectors(queries, min(k, available), allowed)
            return [
                [
                    ScoredRecord(self._labels[int(label)], float(score), self._payloads[int(label)])
                    for label, score in zip(row_labels, row_scores, strict=True)
                ]
                for row_labels, row_scores in zip(labels, scores, strict=True)
            ]

    def _exact_search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = allowed if allowed is not None else np.fromiter(self._labels, dtype=np.int64)
        rows, scores = exact_top_k(queries, self._get_vectors(labels.tolist()), k)
        return labels[rows], scores

    def flush(self) -> None:
        """Write a new generation to disk if anything changed (see the module docstring).

        Thread safety: takes the read lock, so searches go on while it writes; writes wait,
        and concurrent flushes run one after the other.
        """
        if self.path is None or self.read_only or self._closed:
            return
        with self._flush_lock, self._lock.read():
            if not self._dirty:
                return
            generation = self._generation + 1
            live = sorted(self._labels)

            def write_points(tmp: Path) -> None:
                with tmp.open("w", encoding="utf-8") as handle:
                    for label in live:
                        handle.write(
                            json.dumps(
                                {
                                    "label": label,
                                    "id": self._labels[label],
                                    "payload": self._payloads[label],
                                },
                                ensure_ascii=False,
                            )
                        )
                        handle.write("\n")

            points = write_durably(self.path / f"points-{generation}.jsonl", write_points)
            vectors = self._save_vectors(generation, live)
            manifest = {
                "format": self.FORMAT,
                "version": self.VERSION,
                "generation": generation,
                "spec": self.spec.to_dict(),
                "metric": self.metric,
                "params": self._persisted_params(),
                "count": len(live),
                "next_label": self._next_label,
                "files": {"points": points, "vectors": vectors},
            }

            def write_manifest(tmp: Path) -> None:
                tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")

            write_durably(self.path / MANIFEST, write_manifest)
            _fsync_dir(self.path)
            self._generation = generation
            self._dirty = False
            self._remove_stale_files(keep=(points["name"], vectors["name"]))

    def _persisted_params(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Flush, then release the writer lock. Idempotent.

        Thread safety: call once, from one thread.
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    def __del__(self) -> None:
        # Never flush from a finalizer (it may run at interpreter exit); just drop the lock.
        with contextlib.suppress(Exception):
            self._release()
