"""Int8Codes (the HNSW store's int8 copy) and the exact filtered search built on it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.stores import HnswParams, HnswStore
from sbert_retrieval.stores.quantized import Int8Codes
from tests.stores.contract import SPEC, brute_force, make_records, pid, unit_vectors


@pytest.fixture(params=["heap", "spilled"])
def spill(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where codes keep their blocks: the heap, or a file (every codes test runs both)."""
    return None if request.param == "heap" else tmp_path_factory.mktemp("spill")


def test_codes_approximate_inner_products_and_rank_like_them(spill: Path | None) -> None:
    vectors = unit_vectors(2000, dim=64)
    codes = Int8Codes(64, spill)
    codes.add(np.arange(1, 2001), vectors)
    queries = unit_vectors(5, seed=3, dim=64)
    exact = queries @ vectors.T
    top = codes.top(queries, np.arange(1, 2001), 50)
    for row, query_scores in zip(top, exact, strict=True):
        # The 10 best exact neighbours are among the 50 best int8 candidates.
        best = set((np.argsort(-query_scores)[:10] + 1).tolist())
        assert best <= set(row.tolist())


def test_codes_rows_skip_unknown_and_deleted_labels_and_compact(spill: Path | None) -> None:
    codes = Int8Codes(8, spill)
    codes.add(np.array([2, 5, 9, 12]), unit_vectors(4, dim=8))
    assert codes.rows(np.array([12, 3, 5, 100, 1])).tolist() == [3, 1]
    codes.delete(np.array([5, 77]))
    assert len(codes) == 3
    assert codes.rows(np.array([5, 9])).tolist() == [2]
    codes.delete(np.array([2]))  # half the rows dead: compacted
    assert len(codes) == 2 and codes.rows(np.array([9, 12])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="increasing"):
        codes.add(np.array([12]), unit_vectors(1, dim=8))
    codes.add(np.array([13, 20]), unit_vectors(2, seed=1, dim=8))
    assert codes.rows(np.array([20, 13, 12])).tolist() == [3, 2, 1]


def test_codes_survive_save_and_load(tmp_path: Path, spill: Path | None) -> None:
    vectors = unit_vectors(300, dim=16)
    codes = Int8Codes(16, spill)
    codes.add(np.arange(10, 310), vectors)
    codes.delete(np.arange(10, 60))
    codes.save(tmp_path / "c.npy")
    loaded = Int8Codes.load(tmp_path / "c.npy", 16, spill)
    assert len(loaded) == 250 and loaded.spilled == (spill is not None)
    queries = unit_vectors(3, seed=5, dim=16)
    labels = np.arange(0, 400)
    assert np.array_equal(
        np.sort(loaded.top(queries, labels, 20), axis=1),
        np.sort(codes.top(queries, labels, 20), axis=1),
    )
    with pytest.raises(ValueError, match="32-d"):
        Int8Codes.load(tmp_path / "c.npy", 32)


FILTER = {"tags": "even"}  # half the points


def _ids_and_scores(store: HnswStore, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    hits = store.search(query, k, filter=FILTER)[0]
    return [h.id for h in hits], np.array([h.score for h in hits])


def test_filtered_search_under_the_threshold_is_exact(tmp_path: Path) -> None:
    vectors = unit_vectors(3000)
    records = make_records(vectors)
    queries = unit_vectors(10, seed=7)
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records)
        store.delete([pid(i) for i in range(0, 3000, 7)])
        live = [r for i, r in enumerate(records) if i % 7]
        for query in queries:
            ids, scores = _ids_and_scores(store, query, 10)
            assert ids == brute_force(live, query, 10, FILTER)
            by_id = {r.id: r.vector for r in live}
            assert np.allclose(scores, [float(by_id[i] @ query) for i in ids], atol=1e-6)
    # Reopened from the snapshot (graph + codes), then after the codes file is lost from an
    # older snapshot entry, the answers stay exact.
    assert sorted(p.name for p in tmp_path.glob("graph-*")) == ["graph-1.codes.npy", "graph-1.hnsw"]
    with HnswStore(tmp_path, SPEC, read_only=True) as reader:
        assert [_ids_and_scores(reader, q, 10)[0] for q in queries] == [
            brute_force(live, q, 10, FILTER) for q in queries
        ]
    database = sqlite3.connect(tmp_path / "store.sqlite3")
    (entry,) = database.execute("SELECT value FROM meta WHERE key = 'snapshot'").fetchone()
    old_style = {k: v for k, v in json.loads(entry).items() if k != "companions"}
    with database:
        database.execute(
            "UPDATE meta SET value = ? WHERE key = 'snapshot'", (json.dumps(old_style),)
        )
    database.close()
    (tmp_path / "graph-1.codes.npy").unlink()
    with HnswStore(tmp_path, SPEC) as store:
        assert [_ids_and_scores(store, q, 10)[0] for q in queries] == [
            brute_force(live, q, 10, FILTER) for q in queries
        ]


def test_damaged_codes_rebuild_the_snapshot(tmp_path: Path) -> None:
    vectors = unit_vectors(500)
    records = make_records(vectors)
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records)
    codes = tmp_path / "graph-1.codes.npy"
    data = bytearray(codes.read_bytes())
    data[-3] ^= 0x55
    codes.write_bytes(bytes(data))
    query = unit_vectors(1, seed=11)[0]
    with HnswStore(tmp_path, SPEC) as store:
        assert _ids_and_scores(store, query, 5)[0] == brute_force(records, query, 5, FILTER)


def test_filters_above_the_threshold_walk_the_graph() -> None:
    vectors = unit_vectors(2000)
    records = make_records(vectors)
    with HnswStore(None, SPEC, params=HnswParams(exact_threshold=100)) as store:
        store.upsert(records)
        calls: list[int] = []
        original = store._filtered_exact
        store._filtered_exact = lambda *a: calls.append(1) or original(*a)  # type: ignore[method-assign]
        store.search(unit_vectors(1, seed=1)[0], 10, filter=FILTER)
        assert not calls  # 1,000 matches > 100: the graph with a filter
        store.search(unit_vectors(1, seed=1)[0], 10, filter={"year": 2003})
        assert calls  # 80 matches: exact


def test_codes_across_blocks_grow_compact_save_and_load(tmp_path: Path, spill: Path | None) -> None:
    """More rows than one block (65,536): gathers, compaction and files cross block edges."""
    count = 70_000
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((count, 4)).astype(np.float32)
    labels = np.arange(1, count + 1) * 2
    codes = Int8Codes(4, spill)
    for start in range(0, count, 30_000):  # batches that straddle the first block's end
        codes.add(labels[start : start + 30_000], vectors[start : start + 30_000])
    probe = labels[[0, 65_535, 65_536, 69_999]]
    rows = codes.rows(probe)
    assert rows.tolist() == [0, 65_535, 65_536, 69_999]
    approx = codes._gather(rows).astype(np.float32) * codes._scales[rows][:, None]
    assert np.allclose(approx, vectors[[0, 65_535, 65_536, 69_999]], atol=0.05)
    codes.save(tmp_path / "c.npy")
    assert np.load(tmp_path / "c.npy").shape == (count, 4 + 4 + 8)
    loaded = Int8Codes.load(tmp_path / "c.npy", 4, spill)
    assert np.array_equal(loaded._gather(loaded.rows(probe)), codes._gather(rows))
    codes.delete(labels[: count // 2 + 1])  # half dead: compacted into one block
    assert len(codes) == count // 2 - 1 and len(codes._blocks) == 1
    kept = labels[count // 2 + 1 :]
    assert codes.rows(kept).tolist() == list(range(len(kept)))
    again = codes._gather(codes.rows(kept[-3:])).astype(np.float32)
    assert np.allclose(
        again * codes._scales[codes.rows(kept[-3:])][:, None], vectors[-3:], atol=0.05
    )


def test_discard_from_undoes_the_last_adds(spill: Path | None) -> None:
    codes = Int8Codes(8, spill)
    codes.add(np.array([1, 2, 3]), unit_vectors(3, dim=8))
    codes.delete(np.array([3]))
    codes.add(np.array([7, 8]), unit_vectors(2, seed=2, dim=8))
    codes.discard_from(7)
    assert len(codes) == 2 and codes.last_label == 3
    codes.discard_from(3)  # a dead row: the live count stays
    assert len(codes) == 2 and codes.last_label == 2
    codes.add(np.array([7]), unit_vectors(1, seed=4, dim=8))  # labels may follow again
    assert codes.rows(np.array([1, 2, 7])).tolist() == [0, 1, 2]


def test_a_failed_spill_write_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from sbert_retrieval.stores import quantized

    codes = Int8Codes(8, tmp_path)
    codes.add(np.array([1, 2]), unit_vectors(2, dim=8))
    before = codes._gather(codes.rows(np.array([1, 2]))).copy()

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(quantized.os, "pwrite", full_disk)
    with pytest.raises(OSError, match="No space"):
        codes.add(np.array([3, 4]), unit_vectors(2, seed=1, dim=8))
    monkeypatch.undo()
    assert len(codes) == 2 and codes.last_label == 2
    codes.add(np.array([3]), unit_vectors(1, seed=1, dim=8))
    assert np.array_equal(codes._gather(codes.rows(np.array([1, 2]))), before)
    assert len(codes) == 3


def _rss_anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_spilled_codes_stay_out_of_the_process_memory(tmp_path: Path) -> None:
    """200,000 rows of 384-d codes (73 MiB): on the heap they are the process's own memory;
    spilled, the page cache holds them and the process maps only the pages a search reads."""
    rows, dim = 200_000, 384
    rng = np.random.default_rng(0)
    growth = {}
    for where in ("heap", "spilled"):
        codes = Int8Codes(dim, None if where == "heap" else tmp_path)
        before = _rss_anon_kib()
        for start in range(1, rows + 1, 10_000):
            batch = rng.standard_normal((10_000, dim), dtype=np.float32)
            codes.add(np.arange(start, start + 10_000), batch)
        growth[where] = (_rss_anon_kib() - before) / 1024
        # Searches still read every code (a filter over all the rows).
        query = rng.standard_normal((1, dim), dtype=np.float32)
        assert codes.top(query, np.arange(1, rows + 1), 5).shape == (1, 5)
        codes.close()
    assert growth["heap"] > 60, growth
    assert growth["spilled"] < 20, growth


def test_the_store_spills_its_codes_beside_the_index(tmp_path: Path) -> None:
    records = make_records(unit_vectors(300))
    with HnswStore(tmp_path / "index", SPEC) as store:
        store.upsert(records)
        assert store._codes.spilled
        # The block file has no name: nothing is left in the directory, even after a crash.
        assert not [p for p in (tmp_path / "index").iterdir() if p.name.startswith("codes-")]
    with HnswStore(None, SPEC) as memory:
        memory.upsert(records)
        assert memory._codes.spilled


def test_codes_stay_in_memory_where_the_index_directory_takes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sbert_retrieval.stores import quantized

    records = make_records(unit_vectors(300))
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records)

    def read_only_mount(**kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(quantized.tempfile, "TemporaryFile", read_only_mount)
    query = unit_vectors(1, seed=2)[0]
    with HnswStore(tmp_path, SPEC, read_only=True) as reader:
        assert not reader._codes.spilled
        assert _ids_and_scores(reader, query, 5)[0] == brute_force(records, query, 5, FILTER)


def test_a_failed_graph_insert_leaves_the_codes_as_the_graph(tmp_path: Path) -> None:
    vectors = unit_vectors(400)
    records = make_records(vectors)
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records[:200])
        graph = store._index

        class FailingGraph:
            """hnswlib's index, whose next insert runs out of memory."""

            def __getattr__(self, name: str) -> object:
                return getattr(graph, name)

            def add_items(self, *args: object, **kwargs: object) -> None:
                raise MemoryError("no room for the graph")

        store._index = FailingGraph()
        with pytest.raises(MemoryError):
            store.upsert(records[200:])
        store._index = graph
        assert len(store._codes) == graph.get_current_count() == 200
    # The database holds all 400: the next open catches the graph and the codes up.
    query = unit_vectors(1, seed=4)[0]
    with HnswStore(tmp_path, SPEC) as store:
        assert len(store._codes) == store.count() == 400
        assert _ids_and_scores(store, query, 10)[0] == brute_force(records, query, 10, FILTER)
