"""Converting an index of the older format (manifest + JSON lines), through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from sbert_retrieval.cli import main
from sbert_retrieval.errors import StoreError
from sbert_retrieval.stores import ExactStore, HnswStore
from tests.stores.contract import SPEC, make_records, pid, unit_vectors


def write_old_format(directory: Path, kind: str, count: int = 30) -> list[np.ndarray]:
    """The files the version-1 store wrote: what a user upgrading has on disk."""
    directory.mkdir()
    vectors = unit_vectors(count)
    records = make_records(vectors)
    labels = list(range(count))
    with (directory / "points-3.jsonl").open("w", encoding="utf-8") as handle:
        for label, record in zip(labels, records, strict=True):
            handle.write(json.dumps({"label": label, "id": record.id, "payload": record.payload}))
            handle.write("\n")
    if kind == "hnsw":
        index = hnswlib.Index(space="cosine", dim=SPEC.dimension)
        index.init_index(max_elements=count, M=16, ef_construction=200)
        index.add_items(vectors, labels)
        index.save_index(str(directory / "index-3.bin"))
        vectors_entry = {"name": "index-3.bin"}
        params = {"m": 16, "ef_construction": 200, "ef_search": 128, "exact_threshold": 2000}
    else:
        np.save(directory / "vectors-3.npy", vectors, allow_pickle=False)
        vectors_entry = {"name": "vectors-3.npy"}
        params = {}
    manifest = {
        "format": f"sbert-retrieval/{kind}",
        "version": 1,
        "generation": 3,
        "spec": SPEC.to_dict(),
        "metric": "cosine",
        "params": params,
        "count": count,
        "next_label": count,
        "files": {"points": {"name": "points-3.jsonl"}, "vectors": vectors_entry},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return list(vectors)


@pytest.mark.parametrize(("kind", "store_type"), [("hnsw", HnswStore), ("exact", ExactStore)])
def test_old_index_is_refused_then_converted_by_the_named_command(
    tmp_path: Path, kind: str, store_type: type[HnswStore] | type[ExactStore], capsys
) -> None:  # type: ignore[no-untyped-def]
    index = tmp_path / "index"
    vectors = write_old_format(index, kind)
    with pytest.raises(StoreError, match="migrate-index"):
        store_type(index, SPEC)
    assert main(["migrate-index", str(index), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["points"] == 30 and report["format"] == f"sbert-retrieval/{kind}"
    assert not (index / "manifest.json").exists() and not list(index.glob("points-*"))
    with store_type(index, SPEC) as store:
        assert store.count() == 30
        assert store.search(vectors[11], 1)[0][0].id == pid(11)
        [record] = store.get([pid(4)])
        np.testing.assert_allclose(record.vector, vectors[4], atol=1e-6)
        assert record.payload["metadata"]["author"] == {"name": "a0"}
        assert len(store.search(vectors[0], 30, filter={"lang": "de"})[0]) == 10
    # Nothing left to convert: a second run says so.
    assert main(["migrate-index", str(index)]) == 1
