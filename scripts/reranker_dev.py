"""Choose the reranker's recommended rerank weight on dev sets, and report every dev figure.

    python scripts/reranker_dev.py --reranker runs/reranker-minilm-l6 [--write] [--dtype auto]

Dev sets (no test split is read), each reranking a first stage's top ``--depth``: ``--first-stage
dense`` (default; all-MiniLM-L6-v2, the product default, exact) or ``hybrid`` (that dense top 100
and BM25's top 100 fused by reciprocal rank, k 60, as ``--mode hybrid`` does):

* WikiQA dev in the BEIR view (126 questions over its 1,119 candidate sentences);
* the SciFact train claims the recipe held out (same seed, share and ``--scifact-dev-by`` split
  as training); ``--scifact leak-free`` keeps only those that cite no abstract a training
  claim cites (51 of the shipped model's 121);
* SQuAD v1.1 dev paragraph retrieval: a seeded sample of ``--squad-queries`` questions over all
  2,067 dev paragraphs, reranking the dense top ``--squad-depth``.

Each reranker score set is computed once; the weight grid (0.1 … 1, where 1 is pure reranking)
interpolates it with the first stage's scores. The weight with the best mean nDCG@10 over the
three sets is recommended for that first stage; ``--write`` records it in the model's
config.json (``sbert_retrieval.rerank_weights``), where ``CrossEncoderReranker`` reads its
default. Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import SHARED_DATA, machine  # noqa: E402


def main() -> None:
    from sbert_retrieval.training.reranker import SCIFACT_DEV_SPLITS, RerankerRecipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reranker", required=True, help="model directory or name")
    parser.add_argument("--dtype", default="auto", help="reranker dtype (default auto)")
    parser.add_argument("--depth", type=int, default=100, help="candidates reranked (100)")
    parser.add_argument(
        "--max-length",
        type=int,
        help="tokens per (query, passage) pair (default: the checkpoint's limit)",
    )
    parser.add_argument("--first-stage", choices=("dense", "hybrid"), default="dense")
    parser.add_argument("--squad-queries", type=int, default=500)
    parser.add_argument("--squad-depth", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42, help="the recipe's seed (42)")
    parser.add_argument(
        "--scifact-dev-by",
        choices=SCIFACT_DEV_SPLITS,
        default=RerankerRecipe.scifact_dev_by,
        help="as trained",
    )
    parser.add_argument(
        "--scifact",
        choices=("heldout", "leak-free"),
        default="heldout",
        help="every held-out claim, or only those sharing no positive with training (heldout)",
    )
    parser.add_argument(
        "--sets",
        default="wikiqa,scifact,squad",
        help="comma-separated dev sets to score (default all three; the weight is their mean)",
    )
    parser.add_argument("--write", action="store_true", help="record the chosen weight")
    parser.add_argument("--out", help="results JSON (default: benchmarks/results/)")
    args = parser.parse_args()
    stage = "" if args.first_stage == "dense" else f"-{args.first_stage}"
    out = Path(
        args.out or ROOT / "benchmarks" / "results" / f"reranker-dev{stage}-{date.today()}.json"
    )

    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.models import cache_dir, default_prefixes
    from sbert_retrieval.reranking import CrossEncoderReranker
    from sbert_retrieval.retrieval import default_candidates
    from sbert_retrieval.training.data import RetrievalData, load_scifact, load_squad
    from sbert_retrieval.training.reranker import (
        Candidates,
        FirstStageRerankingEvaluator,
        bm25_candidates,
        choose_rerank_weight,
        dense_candidates,
        hybrid_candidates,
        leak_free,
        load_answer_selection_retrieval,
        recommend_rerank_weight,
        scifact_dev_split,
    )

    encoder = BiEncoder()
    query_prefix, passage_prefix = default_prefixes(encoder.prompts)

    def first_stage(data: RetrievalData, depth: int) -> Candidates:
        # Hybrid fuses each branch's top default_candidates(10) (the retriever's branch depth).
        branch = max(depth, default_candidates(10))
        dense = dense_candidates(
            encoder,
            data,
            depth if args.first_stage == "dense" else branch,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            cache_dir=cache_dir() / "embeddings",
        )
        if args.first_stage == "dense":
            return dense
        return hybrid_candidates(dense, bm25_candidates(data, branch), depth)

    sets = set(args.sets.split(","))
    unknown = sets - {"wikiqa", "scifact", "squad"}
    if unknown:
        parser.error(f"unknown dev sets {sorted(unknown)}; valid: wikiqa, scifact, squad")
    if args.write and (sets != {"wikiqa", "scifact", "squad"} or args.scifact != "heldout"):
        parser.error("--write records the best mean over all three held-out dev sets only")
    evaluators = {}
    if "wikiqa" in sets:
        wikiqa = load_answer_selection_retrieval(SHARED_DATA, "wikiqa", "dev")
        evaluators["wikiqa-dev"] = FirstStageRerankingEvaluator(
            wikiqa, first_stage(wikiqa, args.depth), depth=args.depth, name="wikiqa"
        )
    if "scifact" in sets:
        trained, scifact = scifact_dev_split(
            load_scifact(SHARED_DATA, "train"),
            RerankerRecipe().scifact_dev,
            args.seed,
            by=args.scifact_dev_by,
        )
        name = "scifact-heldout-train"
        if args.scifact == "leak-free":
            scifact, name = leak_free(scifact, trained), "scifact-heldout-leak-free"
        evaluators[name] = FirstStageRerankingEvaluator(
            scifact, first_stage(scifact, args.depth), depth=args.depth, name="scifact"
        )
    if "squad" in sets:
        squad = load_squad(SHARED_DATA, "dev").sample(args.squad_queries, 0)
        evaluators["squad-dev"] = FirstStageRerankingEvaluator(
            squad, first_stage(squad, args.squad_depth), depth=args.squad_depth, name="squad"
        )
    encoder.close()
    reranker = CrossEncoderReranker(args.reranker, dtype=args.dtype, max_length=args.max_length)
    started = time.perf_counter()
    weight, per_set = choose_rerank_weight(evaluators, reranker)
    report = {
        "reranker": str(reranker.path),
        "precision": str(reranker.dtype).removeprefix("torch."),
        "max_length": reranker.max_length,
        "first_stage": args.first_stage,
        "chosen_rerank_weight": weight,
        "dev": per_set,
        "seconds": round(time.perf_counter() - started, 1),
        "settings": vars(args),
        "machine": machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"chosen_rerank_weight": weight, "dev": per_set}, indent=1))
    if args.write:
        recommend_rerank_weight(reranker.path, weight, first_stage=args.first_stage)
        print(f"recorded the {args.first_stage} rerank weight {weight} in {reranker.path}")


if __name__ == "__main__":
    main()
