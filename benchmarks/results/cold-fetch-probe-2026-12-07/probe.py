"""Probe: what a search pays to read its hits' rows when they are not in the page cache, read
one after another (today) or ten at once from ten threads with their own connections.

    python probe.py build STORE POINTS     # a store_scale-shaped store of POINTS points
    python probe.py fetch STORE            # drop the file's pages, then time the row reads

The page cache is emptied with posix_fadvise(DONTNEED) on the database file (its pages are
clean and unmapped), which is what the VM's DAMON pageout does to pages idle for 60 s.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import store_scale as S

from sbert_retrieval.stores.local import DATABASE, LocalStore, _connect


def drop_cache(directory: Path) -> None:
    for name in os.listdir(directory):
        file = directory / name
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def build(path: str, points: int) -> None:
    ours = S.Ours(path)
    ours.create()
    for start, count in S.spans(points, 10_000):
        ours.write(ours.records(start, count, points))
    ours.close()


def fetch(path: str) -> None:
    ours = S.Ours(path)
    ours.open(read_only=True)
    store = ours.store
    queries = S.query_vectors(400)
    labels, _ = store._search_vectors(store._compared(queries), 10, None)
    database = Path(path) / DATABASE
    local = threading.local()

    def connection() -> object:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = _connect(database, read_only=True)
        return c

    def one(label: int) -> object:
        return (
            connection()
            .execute("SELECT label, id, payload, text FROM points WHERE label = ?", (label,))
            .fetchone()
        )

    def touch(label: int) -> object:
        return (
            connection()
            .execute("SELECT length(payload), length(text) FROM points WHERE label = ?", (label,))
            .fetchone()
        )

    pool = ThreadPoolExecutor(max_workers=10)

    def sequential(row: np.ndarray) -> None:
        LocalStore._point_rows(connection(), row.tolist())

    def parallel(row: np.ndarray) -> None:
        list(pool.map(one, row.tolist()))

    def read_ahead(row: np.ndarray) -> None:
        # Fire and forget: other threads fault the rows' pages in while this one reads them.
        for label in row.tolist()[1:]:
            pool.submit(touch, label)
        LocalStore._point_rows(connection(), row.tolist())

    def timed(f: object, rows: np.ndarray) -> np.ndarray:
        out = []
        for row in rows:
            t = time.perf_counter()
            f(row)  # type: ignore[operator]
            out.append(time.perf_counter() - t)
        return np.array(out) * 1000

    report = []
    variants = {
        "sequential": (sequential, labels[:130]),
        "parallel": (parallel, labels[130:260]),
        "read-ahead": (read_ahead, labels[260:390]),
    }
    for name, (f, rows) in variants.items():
        # Fresh connections (SQLite caches pages per connection) and a dropped page cache.
        pool.shutdown()
        pool = ThreadPoolExecutor(max_workers=10)
        local.c = None
        list(pool.map(lambda _: connection(), range(40)))  # threads and their connections up
        connection()
        drop_cache(Path(path))
        cold = timed(f, rows)
        warm = timed(f, rows)
        report.append(
            f"{name:10s} cold p50 {np.median(cold):.3f} p99 {np.percentile(cold, 99):.3f} ms"
            f" | warm p50 {np.median(warm):.3f} p99 {np.percentile(warm, 99):.3f} ms"
        )
    drop_cache(Path(path))
    whole = timed(lambda q: ours.search(q, False), queries[:200])
    whole2 = timed(lambda q: ours.search(q, False), queries[:200])
    cold, again = np.median(whole), np.median(whole2)
    report.append(f"store.search cold p50 {cold:.3f} | again {again:.3f} ms")
    print("\n".join(report), flush=True)
    pool.shutdown()
    ours.close()


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], int(sys.argv[3]))
    else:
        fetch(sys.argv[2])
