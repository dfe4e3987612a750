"""Cross-encoder reranking: our CrossEncoderReranker vs sentence-transformers' CrossEncoder.predict.

    # this CPU: p50 latency of reranking one query's top 20 (SciFact train claims x abstracts),
    # ours at auto precision against sentence-transformers in float32 (its default)
    python benchmarks/rerank_throughput.py --model default --dtype auto --queries 40
    # H100: pairs/s over 20k (claim, ~200-token abstract) pairs, both in fp16
    python benchmarks/rerank_throughput.py --model MODEL --device cuda --dtype float16 \\
        --reference-dtype float16 --throughput-pairs 20000 --batch-size 256 --queries 0

Pairs: each SciFact *train* claim with the 20 abstracts all-MiniLM-L6-v2 ranks first for it
(dense top-20, the reranker's usual input), so lengths are realistic; no test split is read.
Both sides score the same pairs with the same model, alternating; the max abs difference of
their scores is reported alongside the timings, and, when ours runs below float32, that of our
float32 path too (the exactness check).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, machine, model_arguments


def top20_pairs(
    queries: int, depth: int, retriever: str, device: str
) -> list[list[tuple[str, str]]]:
    """For each of the first ``queries`` SciFact train claims, its dense top-``depth`` pairs."""
    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.encoding.cache import EmbeddingCache
    from sbert_retrieval.models import cache_dir
    from sbert_retrieval.training.data import load_scifact

    dataset = load_scifact(SHARED_DATA, split="train")
    texts = list(dataset.corpus.values())
    encoder = BiEncoder(retriever, device=device)
    # The same cache `eval beir` and hard-negative mining fill: the corpus is encoded once.
    corpus, _ = EmbeddingCache(cache_dir() / "embeddings").encode(encoder, texts)
    claims = list(dataset.queries.values())[:queries]
    scores = encoder.encode(claims) @ corpus.T
    return [
        [(claim, texts[i]) for i in np.argsort(-row, kind="stable")[:depth]]
        for claim, row in zip(claims, scores, strict=True)
    ]


def main() -> None:
    parser = model_arguments(__doc__, batch_size=32)
    parser.add_argument("--queries", type=int, default=40, help="queries timed for latency")
    parser.add_argument("--depth", type=int, default=20, help="passages reranked per query")
    parser.add_argument("--throughput-pairs", type=int, default=0, help="0: skip")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument(
        "--retriever",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="bi-encoder that picks each claim's top passages",
    )
    parser.add_argument(
        "--reference-dtype", default="float32", help="sentence-transformers' dtype (float32)"
    )
    args = parser.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    from sbert_retrieval.encoding.bi_encoder import DTYPES
    from sbert_retrieval.reranking import CrossEncoderReranker

    ours = CrossEncoderReranker(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    # The anchor runs as its users run it: float32 unless --reference-dtype says otherwise.
    reference = CrossEncoder(
        str(ours.path),
        device=args.device,
        max_length=ours.max_length,
        model_kwargs={"torch_dtype": DTYPES[args.reference_dtype]},
    )
    wanted = max(args.queries, 1)
    if args.throughput_pairs:
        wanted = max(wanted, -(-args.throughput_pairs // args.depth))
    groups = top20_pairs(wanted, args.depth, args.retriever, args.device)
    result: dict[str, Any] = {"machine": machine(), "settings": vars(args)}

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    if args.queries:
        latency: dict[str, list[float]] = {"ours": [], "sentence_transformers": []}
        max_diff = 0.0
        ours.predict(groups[0])  # warm-up
        ours.predict(groups[min(1, len(groups) - 1)][:7])  # another shape
        reference.predict(groups[0], batch_size=args.batch_size)
        for n, pairs in enumerate(groups[: args.queries]):
            sides: list[tuple[str, Any]] = [
                ("ours", lambda p=pairs: ours.predict(p)),
                (
                    "sentence_transformers",
                    lambda p=pairs: reference.predict(p, batch_size=args.batch_size),
                ),
            ]
            outputs = {}
            for side, fn in sides if n % 2 == 0 else sides[::-1]:
                sync()
                started = time.perf_counter()
                outputs[side] = np.asarray(fn(), dtype=np.float32)
                sync()
                latency[side].append((time.perf_counter() - started) * 1000)
            max_diff = max(
                max_diff, float(np.abs(outputs["ours"] - outputs["sentence_transformers"]).max())
            )
        result["latency_ms"] = {
            side: {
                "p50": round(statistics.median(times), 1),
                "p90": round(float(np.percentile(times, 90)), 1),
                "queries": len(times),
                "pairs_per_query": args.depth,
            }
            for side, times in latency.items()
        }
        result["max_abs_score_diff"] = max_diff
        result["precision"] = {
            "ours": str(ours.dtype).removeprefix("torch."),
            "sentence_transformers": args.reference_dtype,
        }
        if ours.dtype != torch.float32:
            # Scores of our float32 path on the same pairs: the exactness check.
            exact = CrossEncoderReranker(
                ours.path, device=args.device, dtype="float32", max_length=ours.max_length
            )
            result["float32_max_abs_score_diff"] = max(
                float(
                    np.abs(
                        exact.predict(p) - np.asarray(reference.predict(p), dtype=np.float32)
                    ).max()
                )
                for p in groups[: min(10, args.queries)]
            )
        print(json.dumps(result["latency_ms"]), flush=True)
    if args.throughput_pairs:
        pairs = [p for group in groups for p in group][: args.throughput_pairs]
        rates = {}
        for side, fn in (
            ("ours", lambda: ours.predict(pairs)),
            ("sentence_transformers", lambda: reference.predict(pairs, batch_size=args.batch_size)),
        ):
            fn()  # warm-up at full size
            sync()
            started = time.perf_counter()
            fn()
            sync()
            rates[side] = round(len(pairs) / (time.perf_counter() - started), 1)
        result["pairs_per_s"] = rates | {"pairs": len(pairs)}
        print(json.dumps(result["pairs_per_s"]), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
