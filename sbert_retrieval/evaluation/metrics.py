"""Retrieval metrics with exactly trec_eval's definitions, as MTEB uses them.

MTEB scores retrieval with ``pytrec_eval`` (Python bindings of trec_eval 9.x) and the measures
``ndcg_cut.K``, ``map_cut.K``, ``recall.K`` and ``P.K``, and adds MRR@K. This module gives the same
numbers without the C extension. Each sum is built in the same order as in trec_eval's C code, so
per-query values match pytrec_eval to the last bit, not just to rounding.

The semantics, as trec_eval 9.0.x has them with ``relevance_level`` 1 and
``judged_docs_only_flag`` off (pytrec_eval's defaults):

* **Ranking.** A run's documents are re-sorted by score, highest first. Equal scores are broken by
  document id in *descending* order (``strcmp``; for ``str`` ids Python's order is the same as
  comparing UTF-8 bytes). The order in which the scores were given never matters.
* **Relevance.** A document is relevant when its qrels value is ≥ 1. Value 0 means judged
  non-relevant. A negative value means "in the pool, not judged" (trec_eval's infAP convention):
  such a document is non-relevant, adds no gain and is not counted anywhere. A document that
  isn't in the qrels is non-relevant.
* **nDCG@K** (``ndcg_cut``). DCG = Σ over ranks r ≤ K of rel_r / log2(r + 1). The gain is the raw
  relevance value (linear, not 2^rel − 1), and only positive values count. The ideal DCG takes
  every positive relevance value in the query's qrels, retrieved or not, sorts them in descending
  order, cuts them at K and applies the same discount.
* **AP@K** (``map_cut``). The sum of precision@r over the ranks r ≤ K that hold a relevant
  document, divided by the number of relevant documents in the qrels (not by min(K, R)). So a
  perfect ranking with R > K relevant documents scores K / R.
* **recall@K** (``recall``). Relevant documents in the top K / relevant documents in the qrels.
* **precision@K** (``P``). Relevant documents in the top K / K, even when fewer than K documents
  were retrieved (trec_eval counts the missing ranks as non-relevant).
* **MRR@K**. 1 / rank of the first relevant document within the top K, else 0.
* **A query with no relevant document** in its qrels (all 0 or negative) scores 0 for every
  measure. trec_eval does not skip it: map, recall and nDCG return 0 when there is nothing to
  find, and P and MRR are 0 because no retrieved document is relevant. Such a query still counts
  in the mean.
* **Which queries.** Only queries that are both in the qrels and in the run are evaluated.
  pytrec_eval skips a run query that has no qrels or empty ones (``{}``), and it never sees a qrels
  query the run leaves out, so that query is *not* scored 0 (give it an empty score mapping in the
  run to have it count as 0). Means are taken over the evaluated queries, in the run's
  order, with Python's ``sum``, as MTEB does (MTEB then rounds to 5 decimals; this module doesn't).
"""

from __future__ import annotations

import heapq
import math
import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_K_VALUES",
    "MEASURES",
    "RELEVANCE_LEVEL",
    "RetrievalScores",
    "average_precision_at_k",
    "evaluate",
    "ndcg_at_k",
    "precision_at_k",
    "rank_documents",
    "recall_at_k",
    "reciprocal_rank_at_k",
]

RELEVANCE_LEVEL: Final = 1
"""A document is relevant when its qrels value is at least this (pytrec_eval's default)."""

DEFAULT_K_VALUES: Final = (1, 3, 5, 10, 100, 1000)
"""The cutoffs :func:`evaluate` reports when given none."""

MEASURES: Final = ("ndcg", "map", "recall", "precision", "mrr")
"""Measure names, in the order :func:`evaluate` reports them; keys look like ``"ndcg@10"``."""

# The relevance given to a retrieved document that the qrels don't mention. Any value below 1
# would do: it is neither relevant nor a gain. trec_eval uses -1 (RELVALUE_NONPOOL) too.
_NOT_JUDGED: Final = -1


@dataclass(frozen=True)
class RetrievalScores:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: The mean over the evaluated queries of each measure, keyed ``"{measure}@{k}"``
            for each measure in :data:`MEASURES` and each cutoff in ``k_values``, e.g.
            ``"ndcg@10"``, ``"map@100"``, ``"recall@100"``, ``"precision@10"``, ``"mrr@10"``.
        per_query: Query id → the same keys → that query's value, for each evaluated query, in
            the run's order.
        queries: How many queries were evaluated: those both in the qrels and in the run.
        k_values: The cutoffs, ascending and without duplicates.
    """

    metrics: Mapping[str, float]
    per_query: Mapping[str, Mapping[str, float]]
    queries: int
    k_values: tuple[int, ...]

    def __getitem__(self, key: str) -> float:
        """Return the mean of one measure, e.g. ``scores["ndcg@10"]``.

        Raises:
            KeyError: ``key`` is not a measure of these scores; the message lists the keys.
        """
        try:
            return self.metrics[key]
        except KeyError:
            raise KeyError(f"no measure {key!r}; available: {', '.join(self.metrics)}") from None


@dataclass(frozen=True)
class _Judgments:
    """One query's qrels, validated, with the counts every measure needs."""

    rels: Mapping[str, int]
    num_rel: int
    # ideal_dcg[i] = the DCG of the best possible ranking's first i documents.
    ideal_dcg: tuple[float, ...]


@dataclass(frozen=True)
class _Cumulative:
    """Prefix sums over a ranking: entry i covers its first i documents (i = 0 … n)."""

    hits: tuple[int, ...]
    dcg: tuple[float, ...]
    precision_sum: tuple[float, ...]
    first_hit: int  # The rank (from 1) of the first relevant document, 0 if there is none.


def _check_k(k: object, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be a positive int, got {k!r}")
    if k < 1:
        raise ValueError(f"{name} must be at least 1 (trec_eval cutoffs are positive), got {k}")
    return k


def _check_k_values(k_values: Iterable[int]) -> tuple[int, ...]:
    if isinstance(k_values, (str, bytes)):
        raise TypeError(f"k_values must be an iterable of positive ints, got {k_values!r}")
    values = tuple(sorted({_check_k(k, "each of k_values") for k in k_values}))
    if not values:
        raise ValueError("k_values is empty: give at least one cutoff, e.g. (10,)")
    return values


def _relevance(value: object, query: str | None, doc_id: str) -> int:
    where = f"query {query!r}, document {doc_id!r}" if query is not None else f"document {doc_id!r}"
    if isinstance(value, bool):
        raise TypeError(f"qrels: {where}: relevance must be an int, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]  # numpy integers
    except TypeError:
        raise TypeError(
            f"qrels: {where}: relevance must be an int, got {value!r} "
            "(trec_eval's grades are integers; convert them when loading)"
        ) from None


def _judgments(qrels: Mapping[str, int], query: str | None = None) -> _Judgments:
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must map document id → relevance, got {type(qrels).__name__}")
    rels: dict[str, int] = {}
    for doc_id, value in qrels.items():
        if not isinstance(doc_id, str):
            where = f" of query {query!r}" if query is not None else ""
            raise TypeError(f"qrels: document ids{where} must be str, got {doc_id!r}")
        rels[doc_id] = _relevance(value, query, doc_id)
    num_rel = sum(1 for rel in rels.values() if rel >= RELEVANCE_LEVEL)
    # trec_eval walks the relevance levels from the highest down, so the ideal ranking's gains
    # are the positive values in descending order.
    gains = sorted((rel for rel in rels.values() if rel > 0), reverse=True)
    ideal = [0.0]
    total = 0.0
    for i, gain in enumerate(gains):
        total += gain / math.log2(i + 2)
        ideal.append(total)
    return _Judgments(rels=rels, num_rel=num_rel, ideal_dcg=tuple(ideal))


def _cumulate(ranked_rels: Sequence[int]) -> _Cumulative:
    hits = [0]
    dcg = [0.0]
    precision_sum = [0.0]
    found = 0
    dcg_total = 0.0
    precision_total = 0.0
    first_hit = 0
    for i, rel in enumerate(ranked_rels):
        if rel >= RELEVANCE_LEVEL:
            found += 1
            precision_total += found / (i + 1)
            if not first_hit:
                first_hit = i + 1
        if rel > 0:
            # Doc i has rank i + 1, so the discount is log2(rank + 1) = log2(i + 2).
            dcg_total += rel / math.log2(i + 2)
        hits.append(found)
        dcg.append(dcg_total)
        precision_sum.append(precision_total)
    return _Cumulative(
        hits=tuple(hits),
        dcg=tuple(dcg),
        precision_sum=tuple(precision_sum),
        first_hit=first_hit,
    )


def _ndcg(cum: _Cumulative, judged: _Judgments, k: int) -> float:
    ideal = judged.ideal_dcg[min(k, len(judged.ideal_dcg) - 1)]
    # trec_eval leaves the plain DCG when the ideal is 0; the DCG is then 0 too, since a
    # retrieved document can only gain what the qrels give it.
    return cum.dcg[min(k, len(cum.dcg) - 1)] / ideal if ideal > 0.0 else 0.0


def _average_precision(cum: _Cumulative, judged: _Judgments, k: int) -> float:
    if judged.num_rel == 0:
        return 0.0
    return cum.precision_sum[min(k, len(cum.precision_sum) - 1)] / judged.num_rel


def _recall(cum: _Cumulative, judged: _Judgments, k: int) -> float:
    if judged.num_rel == 0:
        return 0.0
    return cum.hits[min(k, len(cum.hits) - 1)] / judged.num_rel


def _precision(cum: _Cumulative, judged: _Judgments, k: int) -> float:
    del judged  # Precision needs no qrels count: it always divides by k.
    return cum.hits[min(k, len(cum.hits) - 1)] / k


def _reciprocal_rank(cum: _Cumulative, judged: _Judgments, k: int) -> float:
    del judged
    return 1.0 / cum.first_hit if 0 < cum.first_hit <= k else 0.0


_MEASURE_FUNCTIONS: Final = (
    ("ndcg", _ndcg),
    ("map", _average_precision),
    ("recall", _recall),
    ("precision", _precision),
    ("mrr", _reciprocal_rank),
)


def _ranked_rels(ranking: Sequence[str], judged: _Judgments, k: int) -> list[int]:
    """Validate a ranking and return the relevance of each of its first ``k`` documents."""
    if isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence):
        raise TypeError(
            f"ranking must be a sequence of document ids, best first, got {type(ranking).__name__}"
        )
    seen: set[str] = set()
    for doc_id in ranking:
        if not isinstance(doc_id, str):
            raise TypeError(f"ranking: document ids must be str, got {doc_id!r}")
        if doc_id in seen:
            raise ValueError(
                f"ranking: document {doc_id!r} appears twice (trec_eval refuses duplicate "
                "documents; keep each document once, at its best rank)"
            )
        seen.add(doc_id)
    return [judged.rels.get(doc_id, _NOT_JUDGED) for doc_id in ranking[:k]]


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k of one query, as trec_eval's ``ndcg_cut.k``.

    Args:
        ranking: Document ids, best first (see :func:`rank_documents` to order a run's scores).
        qrels: The query's judgments: document id → graded relevance.
        k: The cutoff, at least 1.

    Returns:
        The DCG of the top ``k`` documents, with gain = relevance and discount log2(rank + 1),
        divided by the DCG of the best ranking of the judged documents cut at ``k``. The value is
        0 when nothing in ``qrels`` is relevant.

    Raises:
        TypeError: An id isn't a ``str`` or a relevance isn't an ``int``.
        ValueError: ``k`` < 1, or a document appears twice in ``ranking``.
    """
    k = _check_k(k)
    judged = _judgments(qrels)
    return _ndcg(_cumulate(_ranked_rels(ranking, judged, k)), judged, k)


def average_precision_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """AP@k of one query, as trec_eval's ``map_cut.k``.

    The sum of precision@r over each rank r ≤ ``k`` that holds a relevant document, divided by the
    number of relevant documents in ``qrels`` (not by min(k, R)). Arguments and errors are as for
    :func:`ndcg_at_k`. The value is 0 when nothing in ``qrels`` is relevant.
    """
    k = _check_k(k)
    judged = _judgments(qrels)
    return _average_precision(_cumulate(_ranked_rels(ranking, judged, k)), judged, k)


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Recall@k of one query, as trec_eval's ``recall.k``.

    The relevant documents in the top ``k`` divided by the relevant documents in ``qrels``.
    Arguments and errors are as for :func:`ndcg_at_k`. The value is 0 when nothing in ``qrels``
    is relevant.
    """
    k = _check_k(k)
    judged = _judgments(qrels)
    return _recall(_cumulate(_ranked_rels(ranking, judged, k)), judged, k)


def precision_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Precision@k of one query, as trec_eval's ``P.k``.

    The relevant documents in the top ``k`` divided by ``k``, even when ``ranking`` holds fewer
    than ``k`` documents. Arguments and errors are as for :func:`ndcg_at_k`.
    """
    k = _check_k(k)
    judged = _judgments(qrels)
    return _precision(_cumulate(_ranked_rels(ranking, judged, k)), judged, k)


def reciprocal_rank_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (MRR@k of one query).

    Returns 0 when no document of the top ``k`` is relevant. Arguments and errors are as for
    :func:`ndcg_at_k`.
    """
    k = _check_k(k)
    judged = _judgments(qrels)
    return _reciprocal_rank(_cumulate(_ranked_rels(ranking, judged, k)), judged, k)


def _score(value: object, query: str | None, doc_id: str) -> float:
    where = f"query {query!r}, document {doc_id!r}" if query is not None else f"document {doc_id!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"run: {where}: score must be a real number, got {value!r}")
    score = float(value)
    if math.isnan(score):
        raise ValueError(
            f"run: {where}: score is NaN, which has no rank (trec_eval's sort is undefined "
            "then); check the embeddings for NaN"
        )
    return score


def _rank(scores: Mapping[str, float], top: int | None, query: str | None) -> list[str]:
    if not isinstance(scores, Mapping):
        where = f" of query {query!r}" if query is not None else ""
        raise TypeError(
            f"run: the scores{where} must map document id → score, got {type(scores).__name__}"
        )
    keyed: list[tuple[float, str]] = []
    for doc_id, value in scores.items():
        # Exact type checks first: the ABC checks in _score are slow, and runs are large.
        if type(doc_id) is not str and not isinstance(doc_id, str):
            where = f" of query {query!r}" if query is not None else ""
            raise TypeError(f"run: document ids{where} must be str, got {doc_id!r}")
        if type(value) is not float or math.isnan(value):
            value = _score(value, query, doc_id)
        keyed.append((value, doc_id))
    # (score, id) descending is trec_eval's order: score first, then id descending. Ids are
    # unique, so no two keys are equal and the sort's stability never matters. A heap wins only
    # when few of many documents are kept.
    if top is not None and top * 10 < len(keyed):
        chosen = heapq.nlargest(top, keyed)
    else:
        chosen = sorted(keyed, reverse=True)[:top]
    return [doc_id for _, doc_id in chosen]


def rank_documents(scores: Mapping[str, float], *, top: int | None = None) -> list[str]:
    """Order one query's scored documents as trec_eval does.

    Args:
        scores: Document id → score; higher is better.
        top: Keep only this many documents (all when ``None``).

    Returns:
        The ids by score, highest first, with equal scores broken by id in descending order
        (``"b"`` before ``"a"``, ``"10"`` before ``"1"``).

    Raises:
        TypeError: An id isn't a ``str`` or a score isn't a real number.
        ValueError: A score is NaN, or ``top`` < 1.
    """
    if top is not None:
        top = _check_k(top, "top")
    return _rank(scores, top, None)


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    *,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
) -> RetrievalScores:
    """Score a run against qrels as MTEB does with pytrec_eval (see the module docstring).

    Args:
        qrels: Query id → document id → graded relevance (an ``int``; ≥ 1 is relevant).
        run: Query id → document id → score (higher is better). It may hold any number of
            documents per query; only the top ``max(k_values)`` count.
        k_values: The cutoffs, each at least 1. Duplicates are dropped and the rest sorted.

    Returns:
        Means and per-query values of nDCG, MAP, recall, precision and MRR at each cutoff,
        over the queries that are both in ``qrels`` and in ``run``.

    Raises:
        TypeError: An id isn't a ``str``, a relevance isn't an ``int``, or a score isn't a real
            number.
        ValueError: A cutoff is below 1, a score is NaN, or no query of ``run`` is in ``qrels``
            (the message shows a few ids of each, since mismatched ids are the usual cause).
    """
    ks = _check_k_values(k_values)
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must map query id → judgments, got {type(qrels).__name__}")
    if not isinstance(run, Mapping):
        raise TypeError(f"run must map query id → scores, got {type(run).__name__}")
    deepest = ks[-1]
    per_query: dict[str, dict[str, float]] = {}
    for query, scores in run.items():
        if not isinstance(query, str):
            raise TypeError(f"run: query ids must be str, got {query!r}")
        query_qrels = qrels.get(query)
        if not query_qrels:
            # pytrec_eval skips a run query without judgments, and one whose judgments are
            # empty (``{}``) too.
            continue
        judged = _judgments(query_qrels, query)
        ranking = _rank(scores, deepest, query)
        cum = _cumulate([judged.rels.get(doc_id, _NOT_JUDGED) for doc_id in ranking])
        per_query[query] = {
            f"{name}@{k}": function(cum, judged, k)
            for name, function in _MEASURE_FUNCTIONS
            for k in ks
        }
    if not per_query:
        raise ValueError(
            "no query of the run has qrels, so there is nothing to average: "
            f"run has {len(run)} queries (e.g. {_sample(run)}), qrels {len(qrels)} "
            f"(e.g. {_sample(qrels)}); check that both use the same query ids"
        )
    keys = [f"{name}@{k}" for name, _ in _MEASURE_FUNCTIONS for k in ks]
    count = len(per_query)
    metrics = {key: sum(values[key] for values in per_query.values()) / count for key in keys}
    return RetrievalScores(metrics=metrics, per_query=per_query, queries=count, k_values=ks)


def _sample(mapping: Mapping[str, object], size: int = 3) -> str:
    ids = [repr(key) for _, key in zip(range(size), mapping, strict=False)]
    return ", ".join(ids) if ids else "none"
