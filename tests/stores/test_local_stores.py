"""The contract on the embedded stores, plus what is specific to their files and locks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.errors import StoreCorruptedError, StoreError, StoreLockedError
from sbert_retrieval.stores import ExactStore, HnswParams, HnswStore
from tests.stores.contract import SPEC, OpenStore, StoreContract, make_records, pid, unit_vectors


class TestHnswContract(StoreContract):
    min_recall = 0.98

    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda spec: HnswStore(tmp_path / "index", spec)


class TestHnswInMemoryContract(StoreContract):
    min_recall = 0.98

    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        # In-memory stores have nothing to reopen: hand back the same object, kept open.
        holder: dict[str, HnswStore] = {}

        class Reusable(HnswStore):
            def close(self) -> None:
                self.flush()

        def factory(spec):  # type: ignore[no-untyped-def]
            if "store" not in holder:
                holder["store"] = Reusable(None, spec)
            elif spec is not None:
                from sbert_retrieval.stores.base import check_spec

                check_spec(holder["store"].spec, spec, "the in-memory index")
            return holder["store"]

        return factory


class TestExactContract(StoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda spec: ExactStore(tmp_path / "index", spec)


def test_capacity_grows_and_ef_is_persisted(tmp_path: Path) -> None:
    vectors = unit_vectors(3000)
    with HnswStore(tmp_path, SPEC, params=HnswParams(ef_search=77)) as store:
        for start in range(0, 3000, 500):
            store.upsert(make_records(vectors[start : start + 500], offset=start))
        assert store.count() == 3000
    reopened = HnswStore(tmp_path, read_only=True)
    assert reopened.params.ef_search == 77
    assert reopened._index.ef == 77
    assert reopened.search(vectors[2999], 1)[0][0].id == pid(2999)


def test_deleted_slots_are_reused(tmp_path: Path) -> None:
    vectors = unit_vectors(200)
    with HnswStore(None, SPEC) as store:
        store.upsert(make_records(vectors[:100]))
        store.delete([pid(i) for i in range(100)])
        store.upsert(make_records(vectors[100:], offset=100))
        assert store.count() == 100
        assert store._index.get_current_count() == 100


def test_close_writes_one_snapshot_and_removes_the_previous(tmp_path: Path) -> None:
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(unit_vectors(10)))
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(unit_vectors(10, seed=1), offset=10))
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.sqlite3-"))
    assert names == ["LOCK", "graph-2.codes.npy", "graph-2.hnsw", "lexical", "store.sqlite3"]


def test_flush_is_a_commit_not_a_rewrite(tmp_path: Path) -> None:
    """Defect 7: a flush used to rewrite and re-hash every file (O(N) per flush)."""
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(unit_vectors(300)))
    snapshot = tmp_path / "graph-1.hnsw"
    before = snapshot.stat().st_mtime_ns, snapshot.read_bytes()
    with HnswStore(tmp_path, SPEC) as store:
        for i in range(5):
            store.upsert(make_records(unit_vectors(1, seed=100 + i), offset=300 + i))
            store.flush()
        # The graph file is untouched by small flushes; the points are durable in SQLite.
        assert (snapshot.stat().st_mtime_ns, snapshot.read_bytes()) == before
        assert HnswStore(tmp_path, read_only=True).count() == 305


def test_writes_are_durable_without_flush_or_close(tmp_path: Path) -> None:
    """A writer killed before any flush or close keeps every acknowledged upsert and delete."""
    code = (
        "import os\n"
        "from sbert_retrieval.stores import HnswStore\n"
        "from tests.stores.contract import SPEC, make_records, pid, unit_vectors\n"
        f"store = HnswStore({str(tmp_path)!r}, SPEC)\n"
        "store.upsert(make_records(unit_vectors(40)))\n"
        "store.delete([pid(3)])\n"
        "os._exit(0)\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
    with HnswStore(tmp_path, SPEC) as store:
        assert store.count() == 39
        assert store.get([pid(3)]) == []
        assert store.search(unit_vectors(40)[7], 1)[0][0].id == pid(7)


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(unit_vectors(5)))
    reader = HnswStore(tmp_path, read_only=True)
    with pytest.raises(StoreError, match="read-only"):
        reader.upsert(make_records(unit_vectors(1)))
    assert reader.count() == 5


def test_read_only_on_missing_index_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="ingest"):
        HnswStore(tmp_path / "nothing", read_only=True)


def test_second_writer_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    store = HnswStore(tmp_path, SPEC)
    with pytest.raises(StoreLockedError, match=str(os.getpid())):
        HnswStore(tmp_path, SPEC)
    # Readers are never blocked by the writer.
    store.upsert(make_records(unit_vectors(3)))
    store.flush()
    assert HnswStore(tmp_path, read_only=True).count() == 3
    store.close()
    HnswStore(tmp_path, SPEC).close()


def test_lock_of_a_killed_writer_is_not_stale(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from sbert_retrieval.stores import HnswStore\n"
        "from tests.stores.contract import SPEC\n"
        f"store = HnswStore({str(tmp_path)!r}, SPEC)\n"
        "os._exit(0)\n"  # dies holding the lock, without closing
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
    assert (tmp_path / "LOCK").read_text().strip().isdigit()
    HnswStore(tmp_path, SPEC).close()


def _search_ids(store: HnswStore, queries: np.ndarray) -> list[list[str]]:
    return [[h.id for h in row] for row in store.search(queries, 5)]


def test_damaged_snapshot_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    vectors = unit_vectors(200)
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(vectors))
        store.delete([pid(5)])
        expected = _search_ids(store, vectors[:20])
    snapshot = next(tmp_path.glob("graph-*.hnsw"))
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    with HnswStore(tmp_path, SPEC) as store:
        assert store.count() == 199
        assert _search_ids(store, vectors[:20]) == expected
    # Closing wrote a sound snapshot again.
    with HnswStore(tmp_path, SPEC) as store:
        assert store._snapshot is not None and store.count() == 199


def test_missing_snapshot_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    vectors = unit_vectors(50)
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(vectors))
    next(tmp_path.glob("graph-*.hnsw")).unlink()
    with HnswStore(tmp_path, read_only=True) as reader:
        assert reader.count() == 50
        assert reader.search(vectors[9], 1)[0][0].id == pid(9)


def test_damaged_database_is_named(tmp_path: Path) -> None:
    with ExactStore(tmp_path, SPEC) as store:
        store.upsert(make_records(unit_vectors(20)))
    database = tmp_path / "store.sqlite3"
    database.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorruptedError, match=r"store\.sqlite3"):
        ExactStore(tmp_path, SPEC)


def test_unfinished_snapshot_leftovers_are_ignored_and_removed(tmp_path: Path) -> None:
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(make_records(unit_vectors(20)))
    # What a crash while writing the next snapshot leaves behind.
    (tmp_path / "graph-2.hnsw.tmp").write_bytes(b"\x00" * 100)
    (tmp_path / "graph-2.hnsw").write_bytes(b"\x00" * 100)
    with HnswStore(tmp_path, SPEC) as store:
        assert store.count() == 20
        assert not (tmp_path / "graph-2.hnsw.tmp").exists()
        assert not (tmp_path / "graph-2.hnsw").exists()


def test_an_empty_database_file_is_a_new_store(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite3").write_bytes(b"")
    with HnswStore(tmp_path, SPEC) as store:
        assert store.count() == 0
    with HnswStore(tmp_path) as reopened:
        assert reopened.count() == 0 and reopened.spec == SPEC


def test_an_index_of_the_older_format_names_the_command_that_converts_it(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "sbert-retrieval/hnsw", "version": 1}')
    for read_only in (False, True):
        with pytest.raises(StoreError, match=f"sbert-retrieval migrate-index {tmp_path}"):
            HnswStore(tmp_path, SPEC, read_only=read_only)


def test_a_store_of_another_kind_is_refused(tmp_path: Path) -> None:
    ExactStore(tmp_path, SPEC).close()
    with pytest.raises(StoreError, match="sbert-retrieval/exact"):
        HnswStore(tmp_path, SPEC)


def test_uncreatable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create store directory"):
        HnswStore(blocker / "index", SPEC)


def test_read_only_directory_is_a_clear_error() -> None:
    """Run as an unprivileged user (root ignores directory permissions)."""
    # pytest's tmp_path sits under a 0700 folder the unprivileged user cannot enter.
    tmp_path = Path(tempfile.mkdtemp(prefix="sbert-ro-"))
    tmp_path.chmod(0o755)
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop privileges"
    with HnswStore(tmp_path / "index", SPEC) as store:
        store.upsert(make_records(unit_vectors(3)))
    tmp_path.chmod(0o755)
    (tmp_path / "index").chmod(0o555)
    code = (
        "from sbert_retrieval.stores import HnswStore\n"
        "from sbert_retrieval.errors import StoreError\n"
        "from tests.stores.contract import SPEC\n"
        f"print(HnswStore({str(tmp_path / 'index')!r}, read_only=True).count())\n"
        "try:\n"
        f"    HnswStore({str(tmp_path / 'index')!r}, SPEC)\n"
        "except StoreError as exc:\n"
        "    print('StoreError:', exc)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    shutil.rmtree(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "3"
    assert "not writable" in lines[1] and "read_only=True" in lines[1]


def test_disk_full_never_commits_a_partial_snapshot(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed to simulate a full disk")
    vectors = unit_vectors(50)
    store = HnswStore(tmp_path, SPEC)
    store.upsert(make_records(vectors))
    (tmp_path / "graph-1.hnsw.tmp").symlink_to("/dev/full")
    with pytest.raises(StoreError, match=r"disk full|No space left"):
        store.close()
    assert not list(tmp_path.glob("graph-*"))
    # Nothing acknowledged was lost: the database holds it, and the graph is rebuilt from it.
    with HnswStore(tmp_path, SPEC) as reopened:
        assert reopened.count() == 50
        assert reopened.search(vectors[4], 1)[0][0].id == pid(4)


def test_filtered_search_uses_the_graph_for_broad_filters(tmp_path: Path) -> None:
    vectors = unit_vectors(3000)
    records = make_records(vectors)
    with HnswStore(None, SPEC, params=HnswParams(exact_threshold=10)) as store:
        store.upsert(records)
        rows = store.search(unit_vectors(3, seed=9), 10, filter={"lang": "en"})
    for row in rows:
        assert len(row) == 10
        assert all(h.payload["metadata"]["lang"] == "en" for h in row)


def test_nan_vectors_are_rejected_with_the_record_id() -> None:
    vectors = unit_vectors(3)
    vectors[1, 0] = np.nan
    with HnswStore(None, SPEC) as store, pytest.raises(ValueError, match=pid(1)):
        store.upsert(make_records(vectors))


def test_concurrent_flushes_do_not_race(tmp_path: Path) -> None:
    import threading

    vectors = unit_vectors(400)
    store = HnswStore(tmp_path, SPEC)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for start in range(offset, offset + 200, 20):
                store.upsert(make_records(vectors[start : start + 20], offset=start))
                store.flush()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert not errors, errors
    assert HnswStore(tmp_path, read_only=True).count() == 400


@pytest.mark.parametrize("store_class", ["HnswStore", "ExactStore"])
def test_close_frees_the_index_while_the_closed_store_is_still_referenced(
    tmp_path: Path, store_class: str
) -> None:
    # A service that reopens its store (`self.store.close(); self.store = HnswStore(...)`) still
    # holds the old object while the new one loads: its index must be gone by then. 1,100
    # points of 8,192-d make an index of ~36 MB, which glibc and numpy map afresh (and unmap on
    # free) in a new process, where RssAnon shows it; a test session's heap would hide it.
    code = (
        "import gc, json, sys\n"
        "from dataclasses import replace\n"
        f"from sbert_retrieval.stores import {store_class} as Store\n"
        "from tests.stores.contract import SPEC, make_records, unit_vectors\n"
        "def anon():\n"
        "    status = open('/proc/self/status').read().split('RssAnon:')[1]\n"
        "    return int(status.split()[0]) * 1024\n"
        "spec = replace(SPEC, dimension=8192)\n"
        "path = sys.argv[1]\n"
        "with Store(path, spec) as store:\n"
        "    store.upsert(make_records(unit_vectors(1100, dim=8192)))\n"
        "del store\n"
        "gc.collect(); gc.disable()\n"
        "base = anon()\n"
        "first = Store(path, spec)\n"
        "one = anon() - base\n"
        "first.close()\n"
        "second = Store(path, spec)\n"
        "both = anon() - base\n"
        "hits = second.search(unit_vectors(1100, dim=8192)[7], 1)[0]\n"
        "print(json.dumps({'one': one, 'both': both, 'hit': hits[0].id}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")],
        check=True,
        cwd=root,
        capture_output=True,
        text=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    index_bytes = 1100 * 8192 * 4
    assert measured["one"] >= 0.8 * index_bytes  # the probe sees the loaded index
    assert measured["both"] <= measured["one"] + 0.25 * index_bytes, measured
    assert measured["hit"] == pid(7)


def test_a_closed_store_refuses_searches_with_the_closed_error(tmp_path: Path) -> None:
    store = HnswStore(tmp_path, SPEC)
    store.upsert(make_records(unit_vectors(20)))
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.search(unit_vectors(1)[0], 3)
    with pytest.raises(StoreError, match="closed"):
        store.hybrid_search(unit_vectors(1), ["x"], 3)


def test_close_waits_for_a_search_in_flight_before_freeing_the_index(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    class Paused(HnswStore):
        def _search_vectors(self, queries, k, allowed):  # type: ignore[no-untyped-def]
            entered.set()
            release.wait(10)
            return super()._search_vectors(queries, k, allowed)

    vectors = unit_vectors(30)
    store = Paused(tmp_path, SPEC)
    store.upsert(make_records(vectors))
    found: list[str] = []
    searching = threading.Thread(target=lambda: found.append(store.search(vectors[4], 1)[0][0].id))
    searching.start()
    assert entered.wait(10)
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # waiting for the search, not freeing the graph under it
    release.set()
    searching.join(10)
    closing.join(10)
    assert found == [pid(4)] and not closing.is_alive()
    with pytest.raises(StoreError, match="closed"):
        store.search(vectors[4], 1)
