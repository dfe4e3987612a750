"""Encoding throughput: our BiEncoder vs sentence-transformers, one process, the same texts.

    python benchmarks/encode_throughput.py    # CPU fp32: SciFact abstracts + STSb sentences
    python benchmarks/encode_throughput.py --dtype bfloat16 --abstracts 256 --sentences 2000

Runs alternate, and so does who goes first in each pair, so drift in machine load hits both
alike; the best and the median of ``--repeats`` runs are reported, with the max abs difference
between the two outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, machine, model_arguments, repeat_to, scifact_abstracts, stsb_sentences


def main() -> None:
    parser = model_arguments(__doc__, batch_size=32)
    parser.add_argument("--abstracts", type=int, default=512, help="SciFact abstracts per run")
    parser.add_argument("--sentences", type=int, default=4000, help="STSb sentences per run")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.encoding.bi_encoder import DTYPES

    ours = BiEncoder(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    reference = SentenceTransformer(str(ours.path), device=args.device)
    if DTYPES[args.dtype] != torch.float32:
        reference = reference.to(DTYPES[args.dtype])
    fp32 = (
        ours
        if DTYPES[args.dtype] == torch.float32
        else BiEncoder(args.model, device=args.device, batch_size=args.batch_size)
    )

    workloads = {
        "scifact_abstracts": repeat_to(scifact_abstracts(), args.abstracts),
        "stsb_sentences": repeat_to(stsb_sentences(), args.sentences),
    }
    results = []
    for name, texts in workloads.items():

        def ours_encode(texts: list[str] = texts) -> np.ndarray:
            return ours.encode(texts)

        def ref_encode(texts: list[str] = texts) -> np.ndarray:
            return reference.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

        ours.encode(texts[: args.batch_size])
        reference.encode(texts[: args.batch_size])
        ours_times: list[float] = []
        ref_times: list[float] = []
        ours_out = ref_out = None
        for repeat in range(args.repeats):
            # Alternate who goes first: the second run of a pair tends to be slower or faster.
            order = [("ours", ours_encode), ("reference", ref_encode)]
            if repeat % 2:
                order.reverse()
            for side, encode in order:
                seconds, out = best_of(encode, 1)
                if side == "ours":
                    ours_times.append(seconds)
                    ours_out = out
                else:
                    ref_times.append(seconds)
                    ref_out = out
        ours_best, ref_best = min(ours_times), min(ref_times)
        ours_median, ref_median = float(np.median(ours_times)), float(np.median(ref_times))
        assert ours_out is not None and ref_out is not None
        exact = fp32.encode(texts[:256]) if fp32 is not ours else ours_out[:256]
        cosine_vs_fp32 = float(np.min(np.sum(ours_out[:256] * exact, axis=1)))
        results.append(
            {
                "workload": name,
                "texts": len(texts),
                "ours_texts_per_s": round(len(texts) / ours_best, 1),
                "sentence_transformers_texts_per_s": round(len(texts) / ref_best, 1),
                "ratio": round(ref_best / ours_best, 3),
                "ratio_median": round(ref_median / ours_median, 3),
                "repeats": args.repeats,
                "max_abs_diff_vs_reference": float(np.abs(ours_out - ref_out).max()),
                "min_cosine_vs_fp32": round(cosine_vs_fp32, 6),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                "machine": machine(),
                "model": args.model,
                "device": args.device,
                "dtype": args.dtype,
                "batch_size": args.batch_size,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
