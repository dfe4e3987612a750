"""Dev-set evaluators called during training.

An evaluator is a callable ``evaluator(model) -> {metric: value}`` with a ``main_metric``
attribute naming the headline value. ``model`` is the :class:`~sbert_retrieval.encoding.BiEncoder`
being trained, or the :class:`~sbert_retrieval.reranking.CrossEncoderReranker` whose model is
being trained; the trainer puts the model in eval mode around the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.evaluation.data import BeirDataset, StsPairs
from sbert_retrieval.training.data import PairExample, group_pairs

__all__ = ["BeirEvaluator", "Evaluator", "RerankingEvaluator", "StsEvaluator"]


class Evaluator(Protocol):
    """What the trainers accept as ``evaluator``."""

    main_metric: str

    def __call__(self, model: Any) -> Mapping[str, float]:
        """Score ``model`` on the dev data."""
        ...


def _is_bi_encoder(model: Any) -> bool:
    return isinstance(model, BiEncoder)


class StsEvaluator:
    """Spearman and Pearson correlation with gold similarity scores.

    A bi-encoder is scored by the cosine of the two sentences' embeddings (as
    :func:`~sbert_retrieval.evaluation.sts.evaluate_sts`); a cross-encoder by its score of the
    pair.

    Args:
        pairs: Dev pairs: :class:`StsPairs`, or :class:`PairExample` with float labels.
        prefix: Text before each sentence (bi-encoder only).

    Thread safety: holds read-only data; calls are as thread-safe as the model's.
    """

    main_metric = "spearman"

    def __init__(self, pairs: StsPairs | Sequence[PairExample], *, prefix: str = "") -> None:
        if not isinstance(pairs, StsPairs):
            pairs = StsPairs(
                tuple(p.a for p in pairs),
                tuple(p.b for p in pairs),
                np.asarray([float(p.label) for p in pairs], dtype=np.float64),
            )
        if len(pairs) < 2:
            raise ValueError(f"an STS evaluation needs at least 2 pairs, got {len(pairs)}")
        self.pairs = pairs
        self.prefix = prefix

    def __call__(self, model: Any) -> dict[str, float]:
        """``{"spearman", "pearson"}`` on the dev pairs. Thread safety: see the class."""
        from sbert_retrieval.evaluation.stats import pearson, spearman
        from sbert_retrieval.evaluation.sts import evaluate_sts

        if _is_bi_encoder(model):
            result = evaluate_sts(self.pairs, model, prefix=self.prefix)
            return {"spearman": result.spearman, "pearson": result.pearson}
        scores = np.asarray(
            model.predict(list(zip(self.pairs.sentences1, self.pairs.sentences2, strict=True))),
            dtype=np.float64,
        )
        return {
            "spearman": spearman(scores, self.pairs.scores),
            "pearson": pearson(scores, self.pairs.scores),
        }


class RerankingEvaluator:
    """Ranks each query's labelled candidates (answer selection, reranking dev sets).

    Queries without a positive candidate are left out, as usual for WikiQA/TrecQA. A
    bi-encoder ranks by cosine, a cross-encoder by its score. Metrics are computed with
    :func:`~sbert_retrieval.evaluation.metrics.evaluate`.

    Args:
        pairs: ``(query, candidate, label)`` with label ``>= 1`` for relevant.
        main_metric: The headline key (default ``map@100``: MAP over all candidates).
        k_values: Cutoffs (default 1, 10, 100).
        query_prefix / passage_prefix: Prefixes for a bi-encoder.

    Thread safety: holds read-only data; calls are as thread-safe as the model's.
    """

    def __init__(
        self,
        pairs: Sequence[PairExample],
        *,
        main_metric: str = "map@100",
        k_values: Iterable[int] = (1, 10, 100),
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        groups = {
            query: rows
            for query, rows in group_pairs(pairs).items()
            if any(label >= 1 for _, label in rows)
        }
        if not groups:
            raise ValueError("no query has a relevant candidate (label >= 1)")
        self.queries = list(groups)
        self.candidates = [[text for text, _ in groups[q]] for q in self.queries]
        self.qrels = {
            f"q{i}": {f"d{j}": int(label >= 1) for j, (_, label) in enumerate(groups[q])}
            for i, q in enumerate(self.queries)
        }
        self.k_values = tuple(k_values)
        self.main_metric = main_metric
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix

    def _scores(self, model: Any) -> list[np.ndarray]:
        if _is_bi_encoder(model):
            passages = list(dict.fromkeys(t for rows in self.candidates for t in rows))
            row = {t: i for i, t in enumerate(passages)}
            p = model.encode(passages, prefix=self.passage_prefix)
            q = model.encode(self.queries, prefix=self.query_prefix)
            p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            return [p[[row[t] for t in rows]] @ q[i] for i, rows in enumerate(self.candidates)]
        flat = [(q, t) for q, rows in zip(self.queries, self.candidates, strict=True) for t in rows]
        scores = np.asarray(model.predict(flat), dtype=np.float64)
        out: list[np.ndarray] = []
        start = 0
        for rows in self.candidates:
            out.append(scores[start : start + len(rows)])
            start += len(rows)
        return out

    def __call__(self, model: Any) -> dict[str, float]:
        """``map@100``, ``mrr@10``, ``ndcg@10`` (for the default cutoffs) and the main metric.

        Thread safety: see the class.
        """
        from sbert_retrieval.evaluation.metrics import evaluate

        run = {
            f"q{i}": {f"d{j}": float(s) for j, s in enumerate(scores)}
            for i, scores in enumerate(self._scores(model))
        }
        metrics = evaluate(self.qrels, run, k_values=self.k_values).metrics
        keys = [k for k in ("map@100", "mrr@10", "ndcg@10") if k in metrics]
        if self.main_metric not in metrics:
            raise ValueError(
                f"unknown main_metric {self.main_metric!r}; valid: {', '.join(metrics)}"
            )
        return {k: float(metrics[k]) for k in dict.fromkeys([self.main_metric, *keys])}


class BeirEvaluator:
    """Retrieval on a BEIR dataset with :func:`~sbert_retrieval.evaluation.beir.evaluate_beir`
    (exact search, documents truncated as MTEB does). Bi-encoders only.

    Args:
        dataset: From :func:`~sbert_retrieval.evaluation.data.load_beir_dataset` (a dev split or
            held-out train queries: never score the test split you report).
        query_prefix / passage_prefix: Prefixes for asymmetric models.
        main_metric: Headline key (default ``ndcg@10``).

    Thread safety: holds read-only data; calls are as thread-safe as the model's.
    """

    def __init__(
        self,
        dataset: BeirDataset,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        main_metric: str = "ndcg@10",
    ) -> None:
        self.dataset = dataset
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.main_metric = main_metric

    def __call__(self, model: Any) -> dict[str, float]:
        """nDCG@10, MRR@10, Recall@100 and MAP@100. Thread safety: see the class."""
        from sbert_retrieval.evaluation.beir import evaluate_beir

        if not _is_bi_encoder(model):
            raise ValueError("BeirEvaluator scores bi-encoders; use RerankingEvaluator instead")
        result = evaluate_beir(
            self.dataset,
            model,
            query_prefix=self.query_prefix,
            passage_prefix=self.passage_prefix,
        )
        metrics = result.scores.metrics
        return {k: float(metrics[k]) for k in ("ndcg@10", "mrr@10", "recall@100", "map@100")}
