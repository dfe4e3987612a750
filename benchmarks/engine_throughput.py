"""The overlapped encoding engine vs sentence-transformers, and ingestion vs encode-only (issue 4).

    # H100 (fp16), texts repeated to 50k, ST at its best batch size of several:
    python benchmarks/engine_throughput.py --device cuda --dtype float16 --texts 50000 \\
        --st-batch-sizes 64 128 256 512 --max-batch-tokens 131072 --ingest-docs 50000
    # this 2-core CPU (fp32):
    python benchmarks/engine_throughput.py --texts 1000 --st-batch-sizes 32 --ingest-docs 300

One process, the same texts for both sides, runs alternating. Each row reports texts/s, the
ratio to sentence-transformers' best batch size, the minimum per-vector cosine to an fp32
reference (ours, plain loop, same device), and peak GPU memory and peak host RSS during the run.
``--ingest-docs N`` also times end-to-end ingestion (chunk + encode + HNSW upsert) of SciFact
repeated to N documents against encoding the same chunk texts alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, model_arguments, repeat_to, scifact_abstracts, stsb_sentences


def reset_peaks() -> None:
    """Zero the peak counters (GPU allocator; host RSS where Linux allows it)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS


def peaks() -> dict[str, float]:
    """Peak GPU memory allocated and peak host RSS since :func:`reset_peaks`, in MiB."""
    import torch

    out: dict[str, float] = {}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out["peak_rss_mib"] = round(int(line.split()[1]) / 1024, 1)
    return out


def timed(fn: Any) -> tuple[float, Any, dict[str, float]]:
    reset_peaks()
    started = time.perf_counter()
    result = fn()
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result, peaks()


def engine_encoder(args: argparse.Namespace) -> Any:
    """Our encoder with the engine settings from the command line."""
    from sbert_retrieval.encoding import BiEncoder, EngineConfig

    engine = EngineConfig(
        tokenizer_workers=args.tokenizer_workers,
        worker_type=args.worker_type,
        chunk_size=args.chunk_size,
        devices=tuple(args.devices),
    )
    return BiEncoder(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        engine=engine,
    )


def encode_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from sentence_transformers import SentenceTransformer

    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.encoding.bi_encoder import DTYPES

    ours = engine_encoder(args)
    fp32 = BiEncoder(args.model, device=args.device, dtype="float32", engine=False)
    reference = SentenceTransformer(str(ours.path), device=args.device)
    if DTYPES[args.dtype] != torch.float32:
        reference = reference.to(DTYPES[args.dtype])
    workloads = {
        "scifact_abstracts": scifact_abstracts(),
        "stsb_sentences": stsb_sentences(),
    }
    rows = []
    for name, unique in workloads.items():
        texts = repeat_to(unique, args.texts)
        ours.encode(texts[:2048])  # warm-up: kernels, allocator, worker threads
        reference.encode(texts[:2048], batch_size=max(args.st_batch_sizes))
        best: dict[str, tuple[float, dict[str, float]]] = {}
        ours_out = None
        for repeat in range(args.repeats):
            sides: list[tuple[str, Any]] = [("ours", lambda t=texts: ours.encode(t))]
            for size in args.st_batch_sizes:
                sides.append(
                    (
                        f"st_bs{size}",
                        lambda t=texts, s=size: reference.encode(
                            t, batch_size=s, convert_to_numpy=True
                        ),
                    )
                )
            if repeat % 2:
                sides.reverse()
            for side, fn in sides:
                seconds, out, memory = timed(fn)
                if side == "ours":
                    ours_out = out
                if side not in best or seconds < best[side][0]:
                    best[side] = (seconds, memory)
        assert ours_out is not None and ours_out.dtype == np.float32
        sample = min(len(unique), args.texts, 4096)
        exact = fp32.encode(texts[:sample])
        cosines = np.sum(ours_out[:sample] * exact, axis=1)
        st_sides = {k: v for k, v in best.items() if k.startswith("st_")}
        st_name, (st_seconds, st_memory) = min(st_sides.items(), key=lambda kv: kv[1][0])
        row = {
            "workload": name,
            "texts": len(texts),
            "ours_texts_per_s": round(len(texts) / best["ours"][0], 1),
            "st_best_texts_per_s": round(len(texts) / st_seconds, 1),
            "st_best_batch_size": int(st_name.removeprefix("st_bs")),
            "st_texts_per_s_by_batch": {
                k.removeprefix("st_bs"): round(len(texts) / v[0], 1) for k, v in st_sides.items()
            },
            "ratio_vs_st_best": round(st_seconds / best["ours"][0], 3),
            "min_cosine_vs_fp32": round(float(cosines.min()), 6),
            "ours_memory": best["ours"][1],
            "st_best_memory": st_memory,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def ingest_row(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.chunking import TokenChunker
    from sbert_retrieval.documents import Document
    from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
    from sbert_retrieval.stores import HnswStore

    corpus = scifact_abstracts()
    docs = [Document(f"{i}", corpus[i % len(corpus)]) for i in range(args.ingest_docs)]
    encoder = engine_encoder(args)
    config = IngestConfig(doc_batch_size=args.doc_batch_size, flush_every=10**9)
    chunker = TokenChunker.for_encoder(encoder, config.chunking)
    chunk_texts = [c.text for chunks in chunker.chunk_many(docs) for c in chunks]
    encoder.encode(chunk_texts[:2048])  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        store = HnswStore(Path(tmp) / "index", encoder.spec())
        ingest_seconds, report, ingest_memory = timed(
            lambda: IngestionPipeline(encoder, store, config).ingest_records(docs)
        )
        store.close()
    encode_seconds, _, encode_memory = timed(lambda: encoder.encode(chunk_texts))
    assert report.chunks == len(chunk_texts), (report.chunks, len(chunk_texts))
    row = {
        "workload": "ingest_scifact_hnsw",
        "documents": len(docs),
        "chunks": report.chunks,
        "ingest_chunks_per_s": round(report.chunks / ingest_seconds, 1),
        "ingest_docs_per_s": round(len(docs) / ingest_seconds, 1),
        "encode_only_chunks_per_s": round(len(chunk_texts) / encode_seconds, 1),
        "ingest_vs_encode_only": round(encode_seconds / ingest_seconds, 3),
        "ingest_memory": ingest_memory,
        "encode_memory": encode_memory,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = model_arguments(__doc__, batch_size=512)
    parser.add_argument("--texts", type=int, default=50_000, help="texts per workload")
    parser.add_argument("--st-batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    parser.add_argument("--tokenizer-workers", type=int, default=0, help="0: auto")
    parser.add_argument("--worker-type", default="thread", choices=["thread", "process"])
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument(
        "--devices", nargs="*", default=[], help="fan out, e.g. cuda:0 cuda:1 (default: auto)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingest-docs", type=int, default=0, help="0: skip the ingest row")
    parser.add_argument("--doc-batch-size", type=int, default=256)
    parser.add_argument("--skip-encode", action="store_true")
    args = parser.parse_args()

    rows = [] if args.skip_encode else encode_rows(args)
    if args.ingest_docs:
        rows.append(ingest_row(args))
    settings = {k: v for k, v in vars(args).items() if k != "skip_encode"}
    print(json.dumps({"machine": machine(), "settings": settings, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
