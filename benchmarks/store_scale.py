"""The embedded HnswStore at scale, and side by side with chromadb and qdrant-client local mode.

    python benchmarks/store_scale.py                       # 1,000,000 points; anchor at 100,000
    python benchmarks/store_scale.py --points 30000 --anchor-points 10000 --json out.json

Data: random unit float32 vectors of width 384 (MiniLM's), each with a pipeline-shaped payload
(doc_id, chunk_index, ~400-character text, start, end, metadata {lang, bucket}); ``bucket == 0``
holds exactly 1% of the points. Vectors are regenerated batch by batch from fixed seeds, so no
process holds the whole data set: the store's peak RSS is the store's.

At ``--points`` (our HnswStore, M / ef_construction / ef_search 16 / 200 / 128):
  * upsert + flush in batches of 10,000, every batch timed: first-5 and last-5 medians, their
    ratio, the slowest batch, and how much of each batch was hnswlib's insert (the graph) and
    the rest (SQLite, the lexical index, the int8 codes); then one point + flush, 20 times;
  * close; then, in a fresh process, reopen (read-write, then read-only);
  * peak RSS (VmHWM) of the building process vs vectors + graph = N*dim*4 + N*M*2*4 bytes;
  * the share of the store's files in the page cache when it is reopened and when the queries
    start (a cold store pays a disk read per hit);
  * single-query top-10 latency p50/p99 over 200 queries, unfiltered and with {"bucket": 0},
    then over the same queries again (their hits' rows now read once: the store's own cost
    without first-touch disk reads), and recall@10 of 50 of them against exact brute force;
  * the kernel's proactive reclaim, where one runs (DAMON pageout of idle file pages: it is
    why a store written minutes ago is partly cold).
At ``--anchor-points``, each in its own processes (fresh RSS): our HnswStore, chromadb
``PersistentClient`` (same HNSW settings via the collection's ``hnsw:*`` metadata) and
qdrant-client local mode (``QdrantClient(path=...)``, brute force by design), as ratios to ours.
Internally the script re-runs itself with ``--worker`` for every measured process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, hnswlib_build, machine, proactive_reclaim
from store_throughput import percentiles

DIM = 384
M, EF_CONSTRUCTION, EF_SEARCH = 16, 200, 128
SINGLES = 20
K = 10
SEED = 20_260_101
FILTER = {"bucket": 0}
LANGS = ("en", "de", "fr")
NAMESPACE = uuid.UUID("6f1c7a52-6b39-4f7e-9a49-5a1f3c2e8d10")

# Targets: figure key -> the most it may be (every figure here is better when lower).
TARGETS = {
    "batch_last5_over_first5": 2.0,
    "single_point_flush_s": 0.2,
    "reopen_s": 10.0,
    "rss_over_vectors_graph": 1.5,
    "p50_ms": 2.0,
    "filtered_p50_ms": 10.0,
}


# -- data: the same points in every process, regenerated from seeds ---------------------------
def spans(points: int, batch: int) -> list[tuple[int, int]]:
    return [(start, min(batch, points - start)) for start in range(0, points, batch)]


def unit_vectors(start: int, count: int) -> np.ndarray:
    vectors = np.random.default_rng([SEED, 0, start]).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def query_vectors(count: int) -> np.ndarray:
    vectors = np.random.default_rng([SEED, 1]).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _text_pool() -> list[str]:
    rng = np.random.default_rng([SEED, 2])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(2, 11, size=4000)]
    pool = []
    for _ in range(512):
        text = ""
        while len(text) < 420:
            text += " ".join(rng.choice(words, size=20)) + ". "
        pool.append(text)
    return pool


TEXTS = _text_pool()


def point_id(i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, str(i)))


def bucket(i: int, points: int) -> int:
    """``i % 100`` for the first ``points`` points (1% in bucket 0); 100 for later single points."""
    return i % 100 if i < points else 100


def payload(i: int, points: int) -> dict[str, Any]:
    text = f"Passage {i}: {TEXTS[i % len(TEXTS)]}"[:400]
    return {
        "doc_id": f"doc-{i // 8}",
        "chunk_index": i % 8,
        "text": text,
        "start": (i % 8) * 400,
        "end": (i % 8) * 400 + len(text),
        "metadata": {"lang": LANGS[i % 3], "bucket": bucket(i, points)},
    }


def ground_truth(points: int, singles: int, batch: int, queries: np.ndarray) -> dict[str, Any]:
    """Exact top-k ids per query, unfiltered and with FILTER, streaming over the batches."""
    best: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    chunks = [*spans(points, batch), *((points + j, 1) for j in range(singles))]
    for start, count in chunks:
        vectors = unit_vectors(start, count)
        labels = np.arange(start, start + count)
        keep = np.array([bucket(i, points) == FILTER["bucket"] for i in labels])
        for name, mask in (("all", None), ("filtered", keep)):
            v, lab = (vectors, labels) if mask is None else (vectors[mask], labels[mask])
            if not len(lab):
                continue
            scores = queries @ v.T
            old_scores, old_labels = best.get(name, (np.empty((len(queries), 0)), None))
            all_scores = np.concatenate([old_scores, scores], axis=1)
            all_labels = (
                np.broadcast_to(lab, scores.shape)
                if old_labels is None
                else np.concatenate([old_labels, np.broadcast_to(lab, scores.shape)], axis=1)
            )
            order = np.argsort(-all_scores, axis=1, kind="stable")[:, :K]
            best[name] = (
                np.take_along_axis(all_scores, order, axis=1),
                np.take_along_axis(all_labels, order, axis=1),
            )
    return {
        name: [[point_id(int(i)) for i in row] for row in lab] for name, (_, lab) in best.items()
    }


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    return round(float(np.mean(hits)), 4)


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` (the high-water mark of its own memory image).

    ``ru_maxrss`` is not used for the target: on Linux it keeps the spawning parent's RSS across
    ``exec`` (~300 MiB of the benchmark's driver here), which is not the store's memory. It is
    still reported, as ``ru_maxrss_bytes``. Off Linux, ``ru_maxrss`` (KiB) is all there is.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return ru_maxrss_bytes()


def ru_maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def page_cache_resident(directory: Path) -> float:
    """Share of the bytes of the files under ``directory`` that the page cache holds now
    (``mincore`` on a private mapping of each file, which reads nothing). Latencies measured
    on a cold store include a disk read per hit; this says which state a run measured."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    page = os.sysconf("SC_PAGE_SIZE")
    total = resident = 0
    for file in sorted(directory.rglob("*")):
        size = file.stat().st_size if file.is_file() else 0
        if not size:
            continue
        pages = -(-size // page)
        with (
            file.open("rb") as handle,
            mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as mapped,
        ):
            vector = (ctypes.c_ubyte * pages)()
            view = ctypes.c_char.from_buffer(mapped)
            try:
                if libc.mincore(ctypes.addressof(view), size, vector) != 0:
                    raise OSError(ctypes.get_errno(), f"mincore failed on {file}")
            finally:
                del view  # the mapping cannot close while a ctypes view holds it
        total += pages
        resident += int(np.count_nonzero(np.frombuffer(vector, dtype=np.uint8) & 1))
    return round(resident / total, 3) if total else 1.0


# -- the systems: build / reopen+query, each run inside a worker process ----------------------
class Ours:
    name = "sbert_retrieval HnswStore"

    def __init__(self, path: str) -> None:
        from sbert_retrieval.models import EmbeddingSpec
        from sbert_retrieval.stores import HnswParams, HnswStore, Record

        class TimedStore(HnswStore):
            """Adds up the seconds spent in hnswlib's insert: the graph's share of a batch."""

            graph_s = 0.0

            def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
                started = time.perf_counter()
                try:
                    super()._index_add(labels, vectors)
                finally:
                    self.graph_s += time.perf_counter() - started

        self.Store, self.Record = TimedStore, Record
        self.path = path
        self.spec = EmbeddingSpec("bench", DIM, "mean", True, 256, "bench")  # as store_throughput
        self.params = HnswParams(m=M, ef_construction=EF_CONSTRUCTION, ef_search=EF_SEARCH)
        self.store: Any = None

    def create(self) -> None:
        self.store = self.Store(self.path, self.spec, params=self.params)

    def records(self, start: int, count: int, points: int) -> Any:
        vectors = unit_vectors(start, count)
        return [
            self.Record(point_id(start + j), vectors[j], payload(start + j, points))
            for j in range(count)
        ]

    def write(self, records: Any) -> None:
        self.store.upsert(records)
        self.store.flush()

    def graph_s(self) -> float:
        """Seconds this store has spent in hnswlib's insert so far."""
        return float(self.store.graph_s)

    def close(self) -> None:
        self.store.close()

    def open(self, read_only: bool = False) -> None:
        self.store = self.Store(self.path, self.spec, params=self.params, read_only=read_only)

    def count(self) -> int:
        return int(self.store.count())

    def search(self, query: np.ndarray, filtered: bool) -> list[str]:
        hits = self.store.search(query, K, filter=FILTER if filtered else None)[0]
        return [hit.id for hit in hits]


class Chroma:
    name = "chromadb PersistentClient"

    def __init__(self, path: str) -> None:
        import chromadb

        self.chromadb = chromadb
        self.path = path
        self.version = chromadb.__version__
        self.client: Any = None
        self.collection: Any = None

    def create(self) -> None:
        self.client = self.chromadb.PersistentClient(path=self.path)
        self.collection = self.client.get_or_create_collection(
            "bench",
            metadata={
                "hnsw:space": "cosine",
                "hnsw:M": M,
                "hnsw:construction_ef": EF_CONSTRUCTION,
                "hnsw:search_ef": EF_SEARCH,
            },
            embedding_function=None,
        )

    def records(self, start: int, count: int, points: int) -> Any:
        payloads = [payload(start + j, points) for j in range(count)]
        metadatas = [  # chroma metadata is flat
            {
                "doc_id": p["doc_id"],
                "chunk_index": p["chunk_index"],
                "start": p["start"],
                "end": p["end"],
                **p["metadata"],
            }
            for p in payloads
        ]
        ids = [point_id(start + j) for j in range(count)]
        return ids, unit_vectors(start, count), [p["text"] for p in payloads], metadatas

    def write(self, records: Any) -> None:
        ids, vectors, documents, metadatas = records
        step = self.client.get_max_batch_size()
        for s in range(0, len(ids), step):
            self.collection.upsert(
                ids=ids[s : s + step],
                embeddings=vectors[s : s + step],
                documents=documents[s : s + step],
                metadatas=metadatas[s : s + step],
            )

    def close(self) -> None:
        if hasattr(self.client, "close"):
            self.client.close()

    def open(self, read_only: bool = False) -> None:
        self.client = self.chromadb.PersistentClient(path=self.path)
        self.collection = self.client.get_collection("bench", embedding_function=None)

    def count(self) -> int:
        return int(self.collection.count())

    def search(self, query: np.ndarray, filtered: bool) -> list[str]:
        result = self.collection.query(
            query_embeddings=query[None, :], n_results=K, where=FILTER if filtered else None
        )
        return list(result["ids"][0])


class Qdrant:
    name = "qdrant-client local path= (brute force)"

    def __init__(self, path: str) -> None:
        from importlib.metadata import version

        from qdrant_client import QdrantClient, models

        self.QdrantClient, self.models = QdrantClient, models
        self.path = path
        self.version = version("qdrant-client")
        self.client: Any = None
        self.filter = models.Filter(
            must=[models.FieldCondition(key="metadata.bucket", match=models.MatchValue(value=0))]
        )

    def create(self) -> None:
        self.client = self.QdrantClient(path=self.path)
        self.client.create_collection(
            "bench",
            vectors_config=self.models.VectorParams(size=DIM, distance=self.models.Distance.COSINE),
            hnsw_config=self.models.HnswConfigDiff(m=M, ef_construct=EF_CONSTRUCTION),
        )

    def records(self, start: int, count: int, points: int) -> Any:
        return self.models.Batch(
            ids=[point_id(start + j) for j in range(count)],
            vectors=unit_vectors(start, count).tolist(),
            payloads=[payload(start + j, points) for j in range(count)],
        )

    def write(self, records: Any) -> None:
        self.client.upsert("bench", points=records, wait=True)

    def close(self) -> None:
        self.client.close()

    def open(self, read_only: bool = False) -> None:
        self.client = self.QdrantClient(path=self.path)

    def count(self) -> int:
        return int(self.client.count("bench").count)

    def search(self, query: np.ndarray, filtered: bool) -> list[str]:
        hits = self.client.query_points(
            "bench",
            query=query.tolist(),
            limit=K,
            with_payload=True,
            query_filter=self.filter if filtered else None,
        ).points
        return [str(hit.id) for hit in hits]


SYSTEMS = {"ours": Ours, "chroma": Chroma, "qdrant": Qdrant}


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def worker_build(args: argparse.Namespace) -> dict[str, Any]:
    baseline = peak_rss_bytes()
    system = SYSTEMS[args.system](args.dir)
    baseline = max(baseline, peak_rss_bytes())  # after the imports
    system.create()
    batch_s, graph_s = [], []
    graph_total = getattr(system, "graph_s", None)
    for n, (start, count) in enumerate(spans(args.points, args.batch)):
        records = system.records(start, count, args.points)
        graph_before = graph_total() if graph_total else 0.0
        started = time.perf_counter()
        system.write(records)
        batch_s.append(time.perf_counter() - started)
        if graph_total:
            graph_s.append(graph_total() - graph_before)
        if n % 10 == 9:
            log(f"{args.system}: {start + count:,} points, last batch {batch_s[-1]:.2f} s")
    single_s = []
    for j in range(args.singles):
        records = system.records(args.points + j, 1, args.points)
        started = time.perf_counter()
        system.write(records)
        single_s.append(time.perf_counter() - started)
    count = system.count()
    started = time.perf_counter()
    system.close()
    close_s = time.perf_counter() - started
    return {
        "count": count,
        "batch_s": [round(s, 4) for s in batch_s],
        "graph_s": [round(s, 4) for s in graph_s],
        "single_s": [round(s, 4) for s in single_s],
        "close_s": round(close_s, 3),
        "peak_rss_bytes": peak_rss_bytes(),
        "ru_maxrss_bytes": ru_maxrss_bytes(),
        "baseline_rss_bytes": baseline,
        "disk_bytes": sum(f.stat().st_size for f in Path(args.dir).rglob("*") if f.is_file()),
        "version": getattr(system, "version", None),
    }


def worker_query(args: argparse.Namespace) -> dict[str, Any]:
    system = SYSTEMS[args.system](args.dir)
    queries = query_vectors(args.queries)
    cached_at_reopen = page_cache_resident(Path(args.dir))
    started = time.perf_counter()
    system.open()
    reopen_s = time.perf_counter() - started
    started = time.perf_counter()
    system.search(queries[0], False)
    first_query_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "reopen_s": round(reopen_s, 3),
        "reopen_first_query_s": round(reopen_s + first_query_s, 3),
        "count": system.count(),
        "page_cache_at_reopen": cached_at_reopen,
    }
    if args.system == "ours":  # read-only reopen: only our store has one
        system.close()
        started = time.perf_counter()
        system.open(read_only=True)
        result["reopen_read_only_s"] = round(time.perf_counter() - started, 3)
        system.search(queries[0], False)
    result["page_cache_at_queries"] = page_cache_resident(Path(args.dir))
    for filtered in (False, True):
        prefix = "filtered_" if filtered else ""
        for query in queries[:5]:  # warm up
            system.search(query, filtered)
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            ids = system.search(query, filtered)
            latencies.append(time.perf_counter() - started)
            found.append(ids)
        result.update({prefix + key: value for key, value in percentiles(latencies).items()})
        result[prefix + "ids"] = found[: args.recall_queries]
        if args.system != "ours":  # (qdrant's local mode would take minutes more)
            continue
        again = []
        for query in queries:  # the same queries: their hits' pages were read once just now
            started = time.perf_counter()
            system.search(query, filtered)
            again.append(time.perf_counter() - started)
        result.update(
            {f"{prefix}second_pass_{key}": value for key, value in percentiles(again).items()}
        )
    system.close()
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


# -- the parent: runs the workers, compares, prints -------------------------------------------
def run_worker(
    python: str,
    kind: str,
    system: str,
    directory: Path,
    args: argparse.Namespace,
    points: int,
    singles: int,
) -> dict[str, Any]:
    command = [
        python,
        __file__,
        "--worker",
        kind,
        "--system",
        system,
        "--dir",
        str(directory),
        "--points",
        str(points),
        "--singles",
        str(singles),
        "--batch",
        str(args.batch),
        "--queries",
        str(args.queries),
        "--recall-queries",
        str(args.recall_queries),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{system} {kind} worker failed (exit {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(
    python: str,
    system: str,
    root: Path,
    args: argparse.Namespace,
    points: int,
    singles: int,
    truth: dict[str, Any],
) -> dict[str, Any]:
    directory = root / f"{system}-{points}"
    log(f"{system} at {points:,} points: building")
    built = run_worker(python, "build", system, directory, args, points, singles)
    log(f"{system} at {points:,} points: reopening and querying")
    queried = run_worker(python, "query", system, directory, args, points, singles)
    batches = built["batch_s"]
    result = {
        "system": SYSTEMS[system].name,
        "version": built["version"],
        "points": points,
        "count_after_build": built["count"],
        "count_after_reopen": queried["count"],
        "upsert_flush_total_s": round(sum(batches), 2),
        "points_per_s": round(points / sum(batches), 1),
        "batch_first5_median_s": round(statistics.median(batches[:5]), 3),
        "batch_last5_median_s": round(statistics.median(batches[-5:]), 3),
        "batch_max_s": round(max(batches), 3),
        "batch_s": batches,
        "close_s": built["close_s"],
        "build_peak_rss_bytes": built["peak_rss_bytes"],
        "build_ru_maxrss_bytes": built["ru_maxrss_bytes"],
        "build_baseline_rss_bytes": built["baseline_rss_bytes"],
        "query_peak_rss_bytes": queried["peak_rss_bytes"],
        "disk_bytes": built["disk_bytes"],
        "recall@10": recall(queried.pop("ids"), truth["all"]),
        "filtered_recall@10": recall(queried.pop("filtered_ids"), truth["filtered"]),
        **{k: v for k, v in queried.items() if k not in ("count", "peak_rss_bytes")},
    }
    result["batch_last5_over_first5"] = round(
        result["batch_last5_median_s"] / result["batch_first5_median_s"], 2
    )
    if built["graph_s"]:
        graph = built["graph_s"]
        rest = [b - g for b, g in zip(batches, graph, strict=True)]
        result["graph_s"] = graph
        for name, series in (("graph", graph), ("rest", rest)):
            result[f"{name}_first5_median_s"] = round(statistics.median(series[:5]), 3)
            result[f"{name}_last5_median_s"] = round(statistics.median(series[-5:]), 3)
    if built["single_s"]:
        result["single_point_flush_s"] = round(statistics.median(built["single_s"]), 4)
    vectors_graph = points * DIM * 4 + points * M * 2 * 4
    result["vectors_graph_bytes"] = vectors_graph
    result["rss_over_vectors_graph"] = round(built["peak_rss_bytes"] / vectors_graph, 2)
    result["rss_above_baseline_over_vectors_graph"] = round(
        (built["peak_rss_bytes"] - built["baseline_rss_bytes"]) / vectors_graph, 2
    )
    log(f"{system} at {points:,} points: done")
    return result


def verdict(key: str, value: float | None) -> str:
    if key not in TARGETS or value is None:
        return ""
    return f"target <= {TARGETS[key]:g}: {'PASS' if value <= TARGETS[key] else 'FAIL'}"


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def print_scale(r: dict[str, Any]) -> None:
    rows = [
        ("upsert+flush, batches of 10,000: first-5 median", f"{r['batch_first5_median_s']} s", ""),
        ("  last-5 median", f"{r['batch_last5_median_s']} s", ""),
        (
            "  last-5 / first-5",
            f"{r['batch_last5_over_first5']}x",
            verdict("batch_last5_over_first5", r["batch_last5_over_first5"]),
        ),
        ("  slowest batch", f"{r['batch_max_s']} s", ""),
        (
            "  of which hnswlib's insert: first-5 / last-5 median",
            f"{r.get('graph_first5_median_s')} / {r.get('graph_last5_median_s')} s",
            "",
        ),
        (
            "  the rest (SQLite, lexical, codes): first-5 / last-5",
            f"{r.get('rest_first5_median_s')} / {r.get('rest_last5_median_s')} s",
            "",
        ),
        (
            f"  all {len(r['batch_s'])} batches"
            + (" (< 10: first-5 and last-5 overlap)" if len(r["batch_s"]) < 10 else ""),
            f"{r['upsert_flush_total_s']} s ({r['points_per_s']:,} points/s)",
            "",
        ),
        (
            f"one point + flush at N (median of {SINGLES})",
            f"{r.get('single_point_flush_s')} s",
            verdict("single_point_flush_s", r.get("single_point_flush_s")),
        ),
        ("close", f"{r['close_s']} s", ""),
        ("reopen (fresh process)", f"{r['reopen_s']} s", verdict("reopen_s", r["reopen_s"])),
        ("reopen + first query", f"{r['reopen_first_query_s']} s", ""),
        ("reopen read-only", f"{r.get('reopen_read_only_s')} s", ""),
        (
            "store files in the page cache: at reopen / at the queries",
            f"{r.get('page_cache_at_reopen')} / {r.get('page_cache_at_queries')}",
            "",
        ),
        ("peak RSS (VmHWM) of the build process", mib(r["build_peak_rss_bytes"]), ""),
        (
            "  ru_maxrss (with the parent's, carried across exec)",
            mib(r["build_ru_maxrss_bytes"]),
            "",
        ),
        ("  vectors+graph = N*dim*4 + N*M*2*4", mib(r["vectors_graph_bytes"]), ""),
        (
            "  peak RSS / vectors+graph",
            f"{r['rss_over_vectors_graph']}x",
            verdict("rss_over_vectors_graph", r["rss_over_vectors_graph"]),
        ),
        (
            "  (peak - interpreter baseline " + mib(r["build_baseline_rss_bytes"]) + ") / v+g",
            f"{r['rss_above_baseline_over_vectors_graph']}x",
            "",
        ),
        ("peak RSS of the reopen+query process", mib(r["query_peak_rss_bytes"]), ""),
        ("on disk", mib(r["disk_bytes"]), ""),
        ("top-10 single query p50", f"{r['p50_ms']} ms", verdict("p50_ms", r["p50_ms"])),
        ("  p99", f"{r['p99_ms']} ms", ""),
        (
            f"  with {json.dumps(FILTER)} (1%) p50",
            f"{r['filtered_p50_ms']} ms",
            verdict("filtered_p50_ms", r["filtered_p50_ms"]),
        ),
        ("  with the filter p99", f"{r['filtered_p99_ms']} ms", ""),
        (
            "the same queries again: p50 / filtered p50",
            f"{r.get('second_pass_p50_ms')} / {r.get('filtered_second_pass_p50_ms')} ms",
            "",
        ),
        (
            "recall@10 vs brute force, unfiltered / filtered",
            f"{r['recall@10']} / {r['filtered_recall@10']}",
            "",
        ),
        (
            "points after build / after reopen",
            f"{r['count_after_build']:,} / {r['count_after_reopen']:,}",
            "",
        ),
    ]
    print(
        f"\n## Our HnswStore at {r['points']:,} points (M={M}, ef_construction={EF_CONSTRUCTION},"
        f" ef_search={EF_SEARCH})"
    )
    for label, value, target in rows:
        print(f"{label:<52} {value:>24}  {target}")


def print_anchor(rows: list[dict[str, Any]]) -> None:
    ours = rows[0]
    keys = [
        ("upsert+flush (s)", "upsert_flush_total_s"),
        ("reopen (s)", "reopen_s"),
        ("reopen+1st query (s)", "reopen_first_query_s"),
        ("p50 (ms)", "p50_ms"),
        ("filtered p50 (ms)", "filtered_p50_ms"),
        ("peak RSS build (MiB)", "build_peak_rss_bytes"),
    ]
    print(
        f"\n## Side by side at {ours['points']:,} points (ratio = theirs / ours; > 1: ours is"
        " faster or smaller)"
    )
    header = f"{'system':<42}" + "".join(f"{label:>24}" for label, _ in keys)
    print(header + f"{'recall@10 / filtered':>24}")
    for row in rows:
        cells = []
        for _, key in keys:
            value, base = row[key], ours[key]
            shown = f"{value / 2**20:,.0f}" if key.endswith("bytes") else f"{value:g}"
            cells.append(shown if row is ours else f"{shown} ({value / base:.2f}x)")
        name = row["system"] + (f" {row['version']}" if row.get("version") else "")
        print(
            f"{name:<42}"
            + "".join(f"{c:>24}" for c in cells)
            + f"{row['recall@10']:>12} / {row['filtered_recall@10']}"
        )


def imports(python: str, module: str) -> bool:
    return (
        subprocess.run(
            [python, "-c", f"import {module}"], check=False, capture_output=True
        ).returncode
        == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument(
        "--anchor-points",
        type=int,
        default=100_000,
        help="points for the side-by-side run (0: skip it)",
    )
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument(
        "--systems",
        default="chroma,qdrant",
        help="others measured at --anchor-points, comma-separated",
    )
    parser.add_argument(
        "--chroma-python",
        default=None,
        help="interpreter with chromadb (default: this one, else .venv-bench)",
    )
    parser.add_argument("--dir", default=None, help="where the stores are written (default: tmp)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        help="write the results as JSON to this file ('-' or no value: stdout)",
    )
    parser.add_argument("--worker", choices=("build", "query"), help=argparse.SUPPRESS)
    parser.add_argument("--system", choices=tuple(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--singles", type=int, default=SINGLES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        work = worker_build if args.worker == "build" else worker_query
        print(json.dumps(work(args)), flush=True)
        return

    info = {
        "machine": machine(),
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu_flags": cpu_flags(),
        "hnswlib": hnswlib_build(),
        "proactive_reclaim": proactive_reclaim(),
        "dimension": DIM,
        "hnsw": {"m": M, "ef_construction": EF_CONSTRUCTION, "ef_search": EF_SEARCH},
        "command": " ".join(["python", *sys.argv]),
    }
    print(f"# store_scale  {info['utc']} UTC  {info['machine']}")
    print(
        f"CPU SIMD flags: {' '.join(info['cpu_flags']['simd'])}"
        f"  (x86-64-v3: {info['cpu_flags']['x86_64_v3']})"
    )
    for scheme in info["proactive_reclaim"]:
        print(
            f"proactive reclaim: DAMON {scheme['action']} ({scheme['operations']}) of pages idle"
            f" >= {scheme.get('min_idle_s')} s, filters {', '.join(scheme['filters']) or 'none'}"
        )
    print(
        f"hnswlib build: -march={info['hnswlib'].get('march')}"
        f"  ({info['hnswlib'].get('compiler', 'compiler line not found')})"
    )

    others = [s for s in args.systems.split(",") if s] if args.anchor_points else []
    pythons = {"ours": sys.executable, "qdrant": sys.executable, "chroma": sys.executable}
    if "chroma" in others:
        bench_venv = Path(__file__).resolve().parents[1] / ".venv-bench" / "bin" / "python"
        candidates = [args.chroma_python] if args.chroma_python else [sys.executable, bench_venv]
        found = [str(p) for p in candidates if Path(p).exists() and imports(str(p), "chromadb")]
        if found:
            pythons["chroma"] = found[0]
        else:
            print("chromadb is not installed (pip install -e '.[bench]'): skipping it")
            others.remove("chroma")

    root = Path(args.dir or tempfile.mkdtemp(prefix="store-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    queries = query_vectors(args.queries)[: args.recall_queries]
    results: dict[str, Any] = {**info, "scale": None, "anchor": []}
    try:
        log(f"exact top-{K} of {args.recall_queries} queries at {args.points:,} points")
        truth = ground_truth(args.points, SINGLES, args.batch, queries)
        results["scale"] = measure(sys.executable, "ours", root, args, args.points, SINGLES, truth)
        print_scale(results["scale"])
        if args.anchor_points:
            truth = ground_truth(args.anchor_points, 0, args.batch, queries)
            for system in ["ours", *others]:
                results["anchor"].append(
                    measure(pythons[system], system, root, args, args.anchor_points, 0, truth)
                )
            print_anchor(results["anchor"])
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json == "-":
        print(json.dumps(results, indent=1))
    elif args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
