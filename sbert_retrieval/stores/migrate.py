"""Convert an index of the older file format (manifest + JSON lines, version 1) to SQLite.

The old format kept points in ``points-<gen>.jsonl`` and vectors in ``index-<gen>.bin``
(hnswlib) or ``vectors-<gen>.npy`` (exact), named by ``manifest.json``. The conversion builds
the new store in ``DIR/.migrating/``, then moves its database into ``DIR`` (one rename: the
commit point), then removes the old files. Killed at any moment, it is simply run again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from sbert_retrieval.errors import StoreCorruptedError, StoreError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.base import Record
from sbert_retrieval.stores.exact import ExactStore
from sbert_retrieval.stores.hnsw import HnswParams, HnswStore
from sbert_retrieval.stores.local import DATABASE, LEGACY_MANIFEST, LocalStore

__all__ = ["MigrationReport", "migrate_index"]

_BATCH = 10_000


@dataclass(frozen=True)
class MigrationReport:
    """What a conversion did: the directory, the store kind and the points moved."""

    path: str
    format: str
    points: int


def _old_points(directory: Path, manifest: dict[str, Any]) -> Iterator[tuple[int, str, Any]]:
    with (directory / manifest["files"]["points"]["name"]).open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield int(row["label"]), str(row["id"]), row["payload"]


def _batches(directory: Path, manifest: dict[str, Any]) -> Iterator[list[Record]]:
    vectors_file = directory / manifest["files"]["vectors"]["name"]
    spec = EmbeddingSpec.from_dict(manifest["spec"])
    if manifest["format"] == HnswStore.FORMAT:
        index = hnswlib.Index(
            space="cosine" if manifest["metric"] == "cosine" else "ip", dim=spec.dimension
        )
        index.load_index(str(vectors_file))

        def vectors(labels: list[int], rows: list[int]) -> np.ndarray:
            return np.asarray(index.get_items(labels, return_type="numpy"), dtype=np.float32)
    else:
        matrix = np.load(vectors_file, allow_pickle=False)

        def vectors(labels: list[int], rows: list[int]) -> np.ndarray:
            return np.asarray(matrix[rows], dtype=np.float32)

    # The exact store wrote its rows in the points file's (sorted-label) order.
    batch: list[tuple[int, int, str, Any]] = []
    for row, (label, point_id, payload) in enumerate(_old_points(directory, manifest)):
        batch.append((row, label, point_id, payload))
        if len(batch) == _BATCH:
            yield _records(batch, vectors)
            batch = []
    if batch:
        yield _records(batch, vectors)


def _records(batch: list[tuple[int, int, str, Any]], vectors: Any) -> list[Record]:
    found = vectors([label for _, label, _, _ in batch], [row for row, _, _, _ in batch])
    return [
        Record(point_id, found[i], payload) for i, (_, _, point_id, payload) in enumerate(batch)
    ]


def migrate_index(path: str | os.PathLike[str]) -> MigrationReport:
    """Convert the old-format index in ``path`` in place; see the module docstring.

    Raises:
        StoreError: ``path`` holds no old-format index, or a new store already.
        StoreCorruptedError: The old files cannot be read.
    """
    directory = Path(path)
    manifest_file = directory / LEGACY_MANIFEST
    if (directory / DATABASE).is_file():
        raise StoreError(f"{directory} already holds a store of the current format")
    if not manifest_file.is_file():
        raise StoreError(f"{directory} holds no index of the older format (no {LEGACY_MANIFEST})")
    work = directory / ".migrating"
    shutil.rmtree(work, ignore_errors=True)
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        spec = EmbeddingSpec.from_dict(manifest["spec"])
        store: LocalStore
        if manifest["format"] == HnswStore.FORMAT:
            params = HnswParams(**manifest.get("params", {}))
            store = HnswStore(work, spec, params=params, metric=manifest["metric"])
        elif manifest["format"] == ExactStore.FORMAT:
            store = ExactStore(work, spec, metric=manifest["metric"])
        else:
            raise StoreError(f"{directory} holds an unknown format {manifest['format']!r}")
        with store:
            for records in _batches(directory, manifest):
                store.upsert(records)
            points = store.count()
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise StoreCorruptedError(f"{directory}: the old index cannot be read ({exc})") from exc
    for file in work.glob("graph-*.hnsw"):
        file.replace(directory / file.name)
    (work / DATABASE).replace(directory / DATABASE)  # the commit point
    shutil.rmtree(work, ignore_errors=True)
    for file in directory.iterdir():
        if file.name == LEGACY_MANIFEST or file.suffix in (".jsonl", ".bin", ".npy"):
            file.unlink()
    return MigrationReport(str(directory), str(manifest["format"]), points)
