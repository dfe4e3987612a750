"""Hybrid (BM25 + dense, fused) query latency beside dense, on one local HnswStore of 100k chunks.

    python benchmarks/hybrid_latency.py                        # 100,000 chunks, 200 queries
    python benchmarks/hybrid_latency.py --chunks 20000 --json out.json

Corpus: real English text, so the BM25 index has real posting lists: SQuAD v1.1 train
paragraphs and SciFact abstracts from ../shared/data, cut into ~400-character windows on word
boundaries (a second pass shifted by half a window when one pass is not enough). Vectors:
random unit 384-d (MiniLM's width; a graph over random vectors is the slow case for HNSW, and
what is timed here is the store and the fusion, not the encoder). Queries: SQuAD v1.1 dev
questions, with random query vectors.

Each query runs through ``Retriever.search_by_vectors`` (the one query path: branches → fusion
→ hits) in four settings, in rotating order per query: dense, lexical, hybrid rrf and hybrid
weighted (k 10; each hybrid branch max(100, 4k) = 100 deep), and dense and hybrid again with a
1%-selective filter. p50/p99 over the queries after 10 warm-up queries, the store's files read
once first (page cache warm). Target: hybrid p50 ≤ dense p50 + 10 ms. Query encoding (one
MiniLM forward, the same for every mode) is not included.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, cpu_flags, hnswlib_build, machine, scifact_abstracts

DIM = 384
WINDOW = 400
K = 10
WARMUP = 10
SETTINGS = (
    ("dense", "dense", "rrf", None),
    ("lexical", "lexical", "rrf", None),
    ("hybrid rrf", "hybrid", "rrf", None),
    ("hybrid weighted", "hybrid", "weighted", None),
    ("dense, 1% filter", "dense", "rrf", {"bucket": 0}),
    ("hybrid rrf, 1% filter", "hybrid", "rrf", {"bucket": 0}),
)


def windows(text: str, shift: int) -> list[str]:
    """~WINDOW-character pieces of ``text`` cut at spaces, the first starting at ``shift``."""
    pieces = []
    start = shift
    while start < len(text):
        end = min(len(text), start + WINDOW)
        if end < len(text):
            space = text.rfind(" ", start + WINDOW // 2, end)
            end = space if space > 0 else end
        piece = text[start:end].strip()
        if len(piece) > 40:
            pieces.append(piece)
        start = end + 1
    return pieces


def squad(split: str) -> Iterator[dict[str, Any]]:
    """SQuAD v1.1 records (``context``, ``question``, ...) of ``train`` or ``dev``."""
    file = SHARED_DATA / "train" / "squad_v1.1" / f"squad-v1.1-{split}.jsonl.gz"
    with gzip.open(file, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def corpus(chunks: int) -> list[str]:
    texts = list(dict.fromkeys(record["context"] for record in squad("train")))
    texts += scifact_abstracts()
    out: list[str] = []
    for shift in (0, WINDOW // 2, WINDOW // 4, 3 * WINDOW // 4):
        for text in texts:
            out += windows(text, shift)
            if len(out) >= chunks:
                return out[:chunks]
    return out


def queries(count: int) -> list[str]:
    return [record["question"] for _, record in zip(range(count), squad("dev"), strict=False)]


def unit(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(path: Path, texts: list[str]) -> Any:
    from sbert_retrieval.models import EmbeddingSpec
    from sbert_retrieval.stores import HnswStore, Record

    spec = EmbeddingSpec("bench", DIM, "mean", True, 256, "bench")
    store = HnswStore(path, spec)
    rng = np.random.default_rng(7)
    for start in range(0, len(texts), 10_000):
        part = texts[start : start + 10_000]
        vectors = unit(rng, len(part))
        store.upsert(
            [
                Record(
                    f"00000000-0000-4000-8000-{start + i:012d}",
                    vectors[i],
                    {
                        "doc_id": f"d{(start + i) // 3}",
                        "chunk_index": (start + i) % 3,
                        "text": text,
                        "start": 0,
                        "end": len(text),
                        "metadata": {"bucket": (start + i) % 100},
                    },
                )
                for i, text in enumerate(part)
            ]
        )
    store.close()
    return spec


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--store", type=Path, help="build the store here and keep it (reused when it exists)"
    )
    args = parser.parse_args()

    from sbert_retrieval.retrieval import Retriever
    from sbert_retrieval.stores import HnswStore

    texts = corpus(args.chunks)
    asked = queries(args.queries + WARMUP)
    with tempfile.TemporaryDirectory(prefix="hybrid-latency-") as tmp:
        where = args.store or Path(tmp)
        started = time.perf_counter()
        if not (where / "store.sqlite3").exists():
            build(where, texts)
        build_s = time.perf_counter() - started
        # A reused store may have left the page cache (a larger benchmark in between): read its
        # files once, so what is timed is the store's work, not the disk's.
        for file in where.rglob("*"):
            if file.is_file():
                with file.open("rb") as handle:
                    while handle.read(1 << 24):
                        pass
        store = HnswStore(where, read_only=True)
        vectors = unit(np.random.default_rng(11), len(asked))
        retrievers = {
            name: (Retriever(None, store, mode=mode, fusion=fusion), flt)
            for name, mode, fusion, flt in SETTINGS
        }
        times: dict[str, list[float]] = {name: [] for name in retrievers}
        names = list(retrievers)
        for i, (text, vector) in enumerate(zip(asked, vectors, strict=True)):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                retriever, flt = retrievers[name]
                began = time.perf_counter()
                hits = retriever.search_by_vectors([text], vector[None, :], K, filter=flt)[0]
                elapsed = time.perf_counter() - began
                if i >= WARMUP:
                    times[name].append(elapsed * 1000)
                assert len(hits) <= K
        store.close()
    rows = {
        name: {
            "p50_ms": round(statistics.median(values), 2),
            "p99_ms": round(percentile(values, 99), 2),
        }
        for name, values in times.items()
    }
    dense = rows["dense"]["p50_ms"]
    for row in rows.values():
        row["p50_minus_dense_ms"] = round(row["p50_ms"] - dense, 2)
    result = {
        "benchmark": "hybrid_latency",
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "hnswlib": hnswlib_build(),
        "chunks": len(texts),
        "queries": args.queries,
        "k": K,
        "build_s": round(build_s, 1),
        "settings": rows,
        "target": "hybrid p50 <= dense p50 + 10 ms",
        "verdict": {
            name: ("PASS" if rows[name]["p50_ms"] <= dense + 10 else "FAIL")
            for name in ("hybrid rrf", "hybrid weighted")
        },
    }
    print(
        f"{len(texts):,} chunks, {args.queries} queries, k={K}; CPU flags:"
        f" {' '.join(result['cpu_flags']['simd'])}; hnswlib -march={result['hnswlib'].get('march')}"
    )
    print(f"{'setting':<24}{'p50 ms':>9}{'p99 ms':>9}{'p50 - dense':>13}")
    for name, row in rows.items():
        print(f"{name:<24}{row['p50_ms']:>9}{row['p99_ms']:>9}{row['p50_minus_dense_ms']:>13}")
    print("verdict (hybrid p50 <= dense p50 + 10 ms):", result["verdict"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
