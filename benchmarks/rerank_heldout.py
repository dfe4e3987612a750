"""Does the reranker help, or at least not hurt, on data it was not trained on? (issue 5, #4)

    python benchmarks/rerank_heldout.py --reranker runs/reranker/minilm-l6-scifact

Dense all-MiniLM-L6-v2 retrieval vs the same top ``--depth`` reranked by the cross-encoder, on:

* ``stsb``: STS Benchmark *test* made into retrieval. The corpus is every distinct sentence of
  the split; each first sentence of a pair scored >= 4.0 (near-paraphrase) is a query, its
  partner relevant; a query's own sentence is never counted as a hit (BEIR's rule).
* ``squad``: SQuAD v1.1 *dev* questions (a seeded sample) against all 2,067 dev paragraphs.
* ``wikiqa`` / ``trecqa``: answer selection on the *dev* splits: each question's candidate
  sentences ranked by bi-encoder cosine vs by the cross-encoder (questions with no correct
  candidate are left out, as is usual).

Use it only with a reranker trained on none of these splits (ours: SciFact train, plus WikiQA
and TrecQA *train*; those two dev rows are then in-domain and are marked so).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, machine


def stsb_retrieval(threshold: float) -> Any:
    from sbert_retrieval.documents import Document
    from sbert_retrieval.evaluation.data import BeirDataset, load_sts_tsv

    pairs = load_sts_tsv(SHARED_DATA / "stsb" / "test.tsv")
    ids: dict[str, str] = {}
    for sentence in (*pairs.sentences1, *pairs.sentences2):
        ids.setdefault(sentence, f"s{len(ids)}")
    corpus = {i: Document(i, s) for s, i in ids.items()}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for first, second, score in zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True):
        if score >= threshold and first != second:
            # The query's id is its own sentence's id, so finding itself is not a hit.
            queries[ids[first]] = first
            qrels[ids[first]][ids[second]] = 1
    return BeirDataset(corpus, queries, dict(qrels), "test", SHARED_DATA / "stsb")


def squad_retrieval(queries: int, seed: int) -> Any:
    from sbert_retrieval.documents import Document
    from sbert_retrieval.evaluation.data import BeirDataset
    from sbert_retrieval.training.data import load_squad

    data = load_squad(SHARED_DATA, "dev")
    chosen = random.Random(seed).sample(sorted(data.queries), min(queries, len(data.queries)))
    return BeirDataset(
        {d: Document(d, text) for d, text in data.corpus.items()},
        {q: data.queries[q] for q in chosen},
        {q: dict.fromkeys(data.positives[q], 1) for q in chosen},
        "dev",
        SHARED_DATA / "train" / "squad_v1.1",
    )


def retrieval_row(
    name: str, dataset: Any, encoder: Any, reranker: Any, depth: int
) -> dict[str, Any]:
    from sbert_retrieval.evaluation.beir import evaluate_beir

    dense = evaluate_beir(dataset, encoder, top_k=100)
    reranked = evaluate_beir(dataset, encoder, top_k=100, reranker=reranker, rerank_depth=depth)
    out = {"dataset": name, "queries": dense.queries, "docs": dense.docs, "depth": depth}
    for metric in ("ndcg@10", "mrr@10", "recall@10"):
        before, after = dense.scores.metrics[metric], reranked.scores.metrics[metric]
        out[metric] = {"dense": round(before, 4), "reranked": round(after, 4)}
    return out


def answer_selection_row(name: str, encoder: Any, reranker: Any) -> dict[str, Any]:
    from sbert_retrieval.evaluation.metrics import evaluate
    from sbert_retrieval.training.data import load_answer_selection

    grouped: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for pair in load_answer_selection(SHARED_DATA, name, "dev"):
        grouped[pair.a].append((pair.b, float(pair.label)))
    questions = [q for q, cands in grouped.items() if any(label >= 1 for _, label in cands)]
    qrels, dense_run, rerank_run = {}, {}, {}
    for n, question in enumerate(questions):
        qid = f"q{n}"
        candidates = grouped[question]
        texts = [c for c, _ in candidates]
        cids = [f"{qid}/{i}" for i in range(len(candidates))]
        qrels[qid] = {cid: int(label) for cid, (_, label) in zip(cids, candidates, strict=True)}
        vectors = encoder.encode([question, *texts])
        dense = vectors[1:] @ vectors[0]
        dense_run[qid] = dict(zip(cids, map(float, dense), strict=True))
        rerank_run[qid] = dict(zip(cids, reranker.score(question, texts), strict=True))
    before = evaluate(qrels, dense_run, k_values=(10, 100)).metrics
    after = evaluate(qrels, rerank_run, k_values=(10, 100)).metrics
    out = {"dataset": f"{name}-dev", "queries": len(questions)}
    for metric in ("map@100", "mrr@10", "ndcg@10"):
        out[metric] = {"dense": round(before[metric], 4), "reranked": round(after[metric], 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reranker", required=True, help="cross-encoder path")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=20, help="top N reranked (default 20)")
    parser.add_argument("--squad-queries", type=int, default=300)
    parser.add_argument("--stsb-threshold", type=float, default=4.0)
    parser.add_argument("--datasets", nargs="+", default=["stsb", "squad", "wikiqa", "trecqa"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.reranking import CrossEncoderReranker

    encoder = BiEncoder(args.model, device=args.device)
    reranker = CrossEncoderReranker(args.reranker, device=args.device)
    rows = []
    for name in args.datasets:
        if name == "stsb":
            row = retrieval_row(
                "stsb-test-retrieval",
                stsb_retrieval(args.stsb_threshold),
                encoder,
                reranker,
                args.depth,
            )
        elif name == "squad":
            row = retrieval_row(
                "squad-dev",
                squad_retrieval(args.squad_queries, args.seed),
                encoder,
                reranker,
                args.depth,
            )
        else:
            row = answer_selection_row(name, encoder, reranker)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"machine": machine(), "settings": vars(args), "results": rows}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
