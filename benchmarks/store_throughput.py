"""Store upsert throughput and search latency, ours vs qdrant-client's own calls, same data.

    python benchmarks/store_throughput.py            # 5,183 SciFact-sized points, dim 384

Data: one point per SciFact abstract (real texts as payloads, as the pipeline writes them) with
random unit vectors of MiniLM's width (store speed does not depend on the values). Reported:
points/s for upserting everything, and p50/p99 latency of single-query top-10 searches.
Backends: Qdrant local mode in memory and on disk — our QdrantStore.upsert vs the client's
``upload_points`` (same batch size) — and our HNSW and exact stores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, scifact_abstracts


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=5183)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    from qdrant_client import QdrantClient, models

    from sbert_retrieval.models import EmbeddingSpec
    from sbert_retrieval.pipeline import point_id
    from sbert_retrieval.stores import ExactStore, HnswStore, QdrantStore, Record

    texts = scifact_abstracts(args.points)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(args.queries, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [point_id(f"doc-{i}", 0, t) for i, t in enumerate(texts)]
    payloads = [
        {
            "doc_id": f"doc-{i}",
            "chunk_index": 0,
            "text": t,
            "start": 0,
            "end": len(t),
            "metadata": {"n": i},
        }
        for i, t in enumerate(texts)
    ]
    records = [Record(pid, v, p) for pid, v, p in zip(ids, vectors, payloads, strict=True)]
    spec = EmbeddingSpec("bench", 384, "mean", True, 256, "bench")
    results: list[dict[str, Any]] = []

    def measure_ours(name: str, store: Any) -> None:
        started = time.perf_counter()
        for start in range(0, len(records), args.batch):
            store.upsert(records[start : start + args.batch])
        store.flush()
        upsert_s = time.perf_counter() - started
        latencies = []
        for query in queries:
            t = time.perf_counter()
            store.search(query, 10)
            latencies.append(time.perf_counter() - t)
        results.append(
            {
                "store": name,
                "points": len(records),
                "upsert_points_per_s": round(len(records) / upsert_s, 1),
                **percentiles(latencies),
            }
        )
        print(json.dumps(results[-1]), flush=True)
        store.close()

    def measure_client(name: str, client: QdrantClient) -> None:
        client.create_collection(
            "bench", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
        )
        points = [
            models.PointStruct(id=pid, vector=v.tolist(), payload=p)
            for pid, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        started = time.perf_counter()
        client.upload_points("bench", points, batch_size=args.batch, wait=True)
        upsert_s = time.perf_counter() - started
        latencies = []
        for query in queries:
            t = time.perf_counter()
            client.query_points("bench", query=query.tolist(), limit=10, with_payload=True)
            latencies.append(time.perf_counter() - t)
        results.append(
            {
                "store": name,
                "points": len(records),
                "upsert_points_per_s": round(len(records) / upsert_s, 1),
                **percentiles(latencies),
            }
        )
        print(json.dumps(results[-1]), flush=True)
        client.close()

    with tempfile.TemporaryDirectory() as tmp:
        measure_client(
            "qdrant-client upload_points, local :memory:", QdrantClient(location=":memory:")
        )
        measure_ours(
            "sbert_retrieval QdrantStore, local :memory:",
            QdrantStore("bench", spec, location=":memory:"),
        )
        measure_client(
            "qdrant-client upload_points, local path=", QdrantClient(path=f"{tmp}/client")
        )
        measure_ours(
            "sbert_retrieval QdrantStore, local path=",
            QdrantStore("bench", spec, path=f"{tmp}/ours"),
        )
        measure_ours("sbert_retrieval HnswStore (disk)", HnswStore(f"{tmp}/hnsw", spec))
        measure_ours("sbert_retrieval ExactStore (disk)", ExactStore(f"{tmp}/exact", spec))
    print(
        json.dumps(
            {"machine": machine(), "dimension": 384, "batch": args.batch, "results": results},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
