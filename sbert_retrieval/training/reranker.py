"""The reranker recipe: training data mined the way a first stage finds candidates, and dev
evaluation of reranked first-stage results against the first stage alone.

A cross-encoder trained only on the labelled candidates of answer-selection sets (sentences of
the question's own page) learns to rank on-topic sentences, yet reranking meets the first
stage's candidates, most of them from other pages. So every query here gets negatives of three
kinds: on-topic ones (other sentences of its paragraph, labelled WikiQA/TrecQA candidates),
dense ones (the bi-encoder's top hits over the whole corpus) and lexical ones (BM25's top hits),
never a known positive or a text equal to one.

Data views built here (``train`` for training, ``dev`` for choosing; no test split is read):

* :func:`load_answer_selection_retrieval`: WikiQA/TrecQA as retrieval (the BEIR view): the
  corpus is every candidate sentence of the split, the queries those with a correct answer.
* :func:`load_squad_sentences`: SQuAD v1.1 at sentence level: a question's positives are the
  sentences of its paragraph that contain an answer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbert_retrieval.fusion import DEFAULT_RRF_K, interpolate_scores, reciprocal_rank_fusion
from sbert_retrieval.models import DEFAULT_MODEL, resolve_model_path
from sbert_retrieval.reranking import check_rerank_weight
from sbert_retrieval.retrieval import MODES
from sbert_retrieval.training.data import (
    GroupExample,
    PairExample,
    RetrievalData,
    _refuse_test,
    load_answer_selection,
)
from sbert_retrieval.training.model_card import write_model_card
from sbert_retrieval.training.trainer import TrainingConfig

__all__ = [
    "RERANKER_TRAINING",
    "SCIFACT_DEV_SPLITS",
    "WEIGHT_GRID",
    "Candidates",
    "FirstStageRerankingEvaluator",
    "RerankerRecipe",
    "bm25_candidates",
    "choose_rerank_weight",
    "dense_candidates",
    "hybrid_candidates",
    "leak_free",
    "load_answer_selection_retrieval",
    "load_squad_sentences",
    "recommend_rerank_weight",
    "reranker_training_data",
    "scifact_dev_split",
    "train_reranker",
    "training_groups",
]

# Query id → (document id, first-stage score), best first.
Candidates = dict[str, list[tuple[str, float]]]

# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def load_answer_selection_retrieval(
    data_dir: str | os.PathLike[str], name: str, split: str = "dev"
) -> RetrievalData:
    """WikiQA or TrecQA as retrieval over all of the split's candidate sentences.

    Queries are the questions with at least one correct sentence (ids ``q0, q1, …`` in file
    order); the corpus is every distinct candidate sentence (``s0, s1, …``); a sentence is a
    positive of each question that labels it correct.

    Thread safety: reads files only.
    """
    rows = load_answer_selection(data_dir, name, split)
    corpus: dict[str, str] = {}
    sentence_ids: dict[str, str] = {}
    question_ids: dict[str, str] = {}
    positives: dict[str, list[str]] = {}
    for row in rows:
        sid = sentence_ids.setdefault(row.b, f"s{len(sentence_ids)}")
        corpus[sid] = row.b
        qid = question_ids.setdefault(row.a, f"q{len(question_ids)}")
        if float(row.label) >= 1:
            found = positives.setdefault(qid, [])
            if sid not in found:
                found.append(sid)
    queries = {qid: q for q, qid in question_ids.items() if qid in positives}
    return RetrievalData(
        queries=queries,
        corpus=corpus,
        positives={q: tuple(positives[q]) for q in queries},
        name=f"{name}/{split}",
    )


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (a rule for encyclopedic English: end mark, space, capital)."""
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def load_squad_sentences(
    data_dir: str | os.PathLike[str], split: str = "train"
) -> tuple[RetrievalData, dict[str, tuple[str, ...]]]:
    """SQuAD v1.1 at sentence level, and each query's on-topic negatives.

    The corpus is every sentence of every paragraph (ids ``"{title}/{para}/{n}"``); a question's
    positives are its paragraph's sentences containing one of its answers (questions whose
    answers cross a sentence boundary are left out). The second value maps each query id to the
    other sentences of its paragraph.

    Thread safety: reads files only.
    """
    _refuse_test(split, "squad")
    path = Path(data_dir) / "train" / "squad_v1.1" / f"squad-v1.1-{split}.jsonl.gz"
    corpus: dict[str, str] = {}
    paragraphs: dict[str, list[str]] = {}
    queries: dict[str, str] = {}
    positives: dict[str, tuple[str, ...]] = {}
    on_topic: dict[str, tuple[str, ...]] = {}
    counts: dict[str, int] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            para = f"{record['title']}/{int(record['para_idx'])}"
            if para not in paragraphs:
                ids = []
                for n, sentence in enumerate(split_sentences(record["context"])):
                    corpus[f"{para}/{n}"] = sentence
                    ids.append(f"{para}/{n}")
                paragraphs[para] = ids
            answers = [a for a in record.get("answers", []) if isinstance(a, str) and a.strip()]
            sentence_ids = paragraphs[para]
            found = tuple(s for s in sentence_ids if any(a in corpus[s] for a in answers))
            n = counts.get(para, 0)
            counts[para] = n + 1
            if not found:
                continue
            qid = f"{para}/q{n}"
            queries[qid] = record["question"]
            positives[qid] = found
            on_topic[qid] = tuple(s for s in sentence_ids if s not in found)
    data = RetrievalData(queries, corpus, positives, name=f"squad-sentences/{split}")
    return data, on_topic


def dense_candidates(
    encoder: Any,
    data: RetrievalData,
    depth: int,
    *,
    query_prefix: str = "",
    passage_prefix: str = "",
    batch: int = 1024,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Candidates:
    """Exact cosine top-``depth`` of the corpus for every query (the dense first stage).

    ``cache_dir``: an :class:`~sbert_retrieval.encoding.cache.EmbeddingCache` for the corpus
    vectors (the one ``eval beir`` fills), so a corpus is encoded once.

    Thread safety: uses ``encoder``; otherwise self-contained.
    """
    doc_ids = list(data.corpus)
    texts = [data.corpus[d] for d in doc_ids]
    if cache_dir is not None:
        from sbert_retrieval.encoding.cache import EmbeddingCache

        docs, _ = EmbeddingCache(cache_dir).encode(encoder, texts, prefix=passage_prefix)
    else:
        docs = encoder.encode(texts, prefix=passage_prefix)
    docs = docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
    query_ids = list(data.queries)
    found: Candidates = {}
    vectors = encoder.encode([data.queries[q] for q in query_ids], prefix=query_prefix)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    depth = min(depth, len(doc_ids))
    for start in range(0, len(query_ids), batch):
        scores = vectors[start : start + batch] @ docs.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        for row, qid in enumerate(query_ids[start : start + batch]):
            order = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
            found[qid] = [(doc_ids[i], float(scores[row, i])) for i in order]
    return found


def bm25_candidates(data: RetrievalData, depth: int) -> Candidates:
    """BM25 top-``depth`` of the corpus for every query, with the store's lexical index.

    Thread safety: self-contained (an in-memory index of its own).
    """
    from sbert_retrieval.stores.lexical_index import LexicalIndex

    doc_ids = list(data.corpus)
    index = LexicalIndex.rebuilt(None)
    try:
        index.apply([(i, data.corpus[d]) for i, d in enumerate(doc_ids)], [], -1)
        return {
            qid: [
                (doc_ids[label], score)
                for label, score in zip(*index.search(query, depth), strict=True)
            ]
            for qid, query in data.queries.items()
        }
    finally:
        index.close()


def hybrid_candidates(
    dense: Candidates, lexical: Candidates, depth: int, *, rrf_k: int = DEFAULT_RRF_K
) -> Candidates:
    """The hybrid first stage: each query's ``dense`` and ``lexical`` candidates fused by
    reciprocal rank (``Σ 1 / (rrf_k + rank)``, as the store's ``hybrid_search``), top ``depth``.

    Thread safety: pure function.
    """
    return {
        qid: [
            (item.key, item.score)
            for item in reciprocal_rank_fusion(
                [dense.get(qid, []), lexical.get(qid, [])], rrf_k=rrf_k
            )[:depth]
        ]
        for qid in dict.fromkeys([*dense, *lexical])
    }


def training_groups(
    data: RetrievalData,
    *,
    dense: Candidates,
    lexical: Candidates | None = None,
    on_topic: Mapping[str, Sequence[str]] | None = None,
    per_kind: Mapping[str, int],
    seed: int,
    skip_top: int = 0,
    pool: int = 30,
) -> list[GroupExample]:
    """One :class:`GroupExample` per (query, positive): negatives drawn per kind.

    ``per_kind`` says how many negatives of each kind a group gets: ``dense`` and ``lexical``
    are a seeded draw from the first ``pool`` candidates after ``skip_top`` (likely unlabelled
    positives sit at the very top), ``on_topic`` a draw from ``on_topic[qid]``. A document
    whose text equals a positive's is never a negative; a group holds no text twice.

    Thread safety: pure function.
    """
    kinds = {"dense": dense, "lexical": lexical or {}}
    groups: list[GroupExample] = []
    for qid, query in data.queries.items():
        positives = data.positives.get(qid, ())
        positive_texts = {data.corpus[p] for p in positives}
        rng = random.Random(f"{seed}\x1f{qid}")
        for positive in positives:
            chosen: list[str] = []
            seen = set(positive_texts)
            for kind, count in per_kind.items():
                if count <= 0:
                    continue
                if kind == "on_topic":
                    options = list((on_topic or {}).get(qid, ()))
                else:
                    options = [d for d, _ in kinds[kind].get(qid, [])][skip_top : skip_top + pool]
                options = [d for d in options if data.corpus[d] not in seen]
                rng.shuffle(options)
                for doc in options[:count]:
                    text = data.corpus[doc]
                    if text not in seen:
                        seen.add(text)
                        chosen.append(text)
            if chosen:
                groups.append(GroupExample(query, data.corpus[positive], tuple(chosen)))
    return groups


class FirstStageRerankingEvaluator:
    """nDCG@10 of a first stage's top ``depth``, reranked, and interpolated with it.

    Args:
        data: Dev queries, corpus and positives.
        candidates: The first stage's ranked candidates per query (e.g. from
            :func:`dense_candidates`).
        depth: Candidates reranked per query (default 100).
        weights: Rerank weights reported by
            :func:`~sbert_retrieval.fusion.interpolate_scores` besides 1 (pure reranking).
        name: Prefix of the metric keys.

    Thread safety: holds read-only data; calls are as thread-safe as the reranker's.
    """

    def __init__(
        self,
        data: RetrievalData,
        candidates: Candidates,
        *,
        depth: int = 100,
        weights: Sequence[float] = (0.3, 0.5, 0.7),
        name: str = "dev",
    ) -> None:
        self.data = data
        self.candidates = {q: c[:depth] for q, c in candidates.items() if q in data.queries}
        self.weights = tuple(weights)
        self.name = name
        self.main_metric = f"{name}_reranked_ndcg@10"
        self.qrels = {q: dict.fromkeys(data.positives.get(q, ()), 1) for q in self.candidates}

    def _ndcg(self, run: Mapping[str, Mapping[str, float]]) -> float:
        from sbert_retrieval.evaluation.metrics import evaluate

        return float(evaluate(self.qrels, dict(run), k_values=(10,)).metrics["ndcg@10"])

    def first_stage(self) -> float:
        """The first stage's own nDCG@10 (its full candidate list)."""
        return self._ndcg({q: dict(c) for q, c in self.candidates.items()})

    def scores(self, reranker: Any) -> dict[str, np.ndarray]:
        """The reranker's scores of every query's candidates, in candidate order."""
        flat = [
            (self.data.queries[q], self.data.corpus[d])
            for q, cands in self.candidates.items()
            for d, _ in cands
        ]
        scores = np.asarray(reranker.predict(flat), dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        start = 0
        for q, cands in self.candidates.items():
            out[q] = scores[start : start + len(cands)]
            start += len(cands)
        return out

    def report(
        self, scores: Mapping[str, np.ndarray], weights: Sequence[float] | None = None
    ) -> dict[str, float]:
        """Metrics of given rerank scores (see :meth:`scores`), interpolated at ``weights``
        (default: the evaluator's)."""
        result = {
            f"{self.name}_first_stage_ndcg@10": self.first_stage(),
            self.main_metric: self._ndcg(
                {
                    q: {d: float(s) for (d, _), s in zip(c, scores[q], strict=True)}
                    for q, c in self.candidates.items()
                }
            ),
        }
        for weight in self.weights if weights is None else weights:
            run = {
                q: dict(
                    zip(
                        [d for d, _ in c],
                        interpolate_scores([s for _, s in c], list(scores[q]), weight),
                        strict=True,
                    )
                )
                for q, c in self.candidates.items()
            }
            result[f"{self.name}_interpolated_{weight:g}_ndcg@10"] = self._ndcg(run)
        return result

    def __call__(self, reranker: Any) -> dict[str, float]:
        """Reranked, interpolated and first-stage nDCG@10 (the reranked one is the main)."""
        return self.report(self.scores(reranker))


# -- the recipe --------------------------------------------------------------------------------

#: Training settings of the shipped reranker (``output_dir`` is set per run). Checkpoints every
#: 100 steps (about 3 minutes on 2 CPU cores) so a killed run loses little.
RERANKER_TRAINING = TrainingConfig(
    output_dir="",
    epochs=1,
    batch_size=8,
    lr=5e-5,
    warmup_ratio=0.1,
    max_seq_length=256,
    eval_steps=0,
    save_steps=100,
    save_total_limit=2,
    group_by_length=True,
    save_dtype="float16",
)


@dataclass(frozen=True)
class RerankerRecipe:
    """What the reranker trains on; the defaults are the recipe chosen on dev (model card).

    Attributes:
        squad_sentences: SQuAD v1.1 train questions used at sentence level (seeded sample).
        squad_paragraphs: SQuAD v1.1 train questions used at paragraph level.
        answer_selection: WikiQA/TrecQA train sets, each question with its labelled candidates.
        answer_selection_rounds: Times each WikiQA/TrecQA question appears (new negatives each
            round).
        scifact: SciFact train claims are used (all but the ``scifact_dev`` share).
        scifact_rounds: Times each SciFact train claim appears (new negatives each round; 3 in
            the shipped model, chosen on dev over 1).
        scifact_dev: Share of SciFact train claims held out as dev (seeded), never trained on.
        scifact_dev_by: How they are held out (:func:`scifact_dev_split`): ``abstract``
            (the shipped model's recipe: no dev positive is a training positive) or ``claim``
            (the first shipped model's: 70 of its 121 dev claims share a positive with
            training).
        sentence_negatives: Negatives per group by kind for sentence-level sources.
        passage_negatives: Negatives per group by kind for paragraph/abstract sources.
        depth: First-stage candidates mined per query.
        skip_top: Leading candidates never used as negatives (likely unlabelled positives).
        pool: Candidates after ``skip_top`` that negatives are drawn from.
    """

    squad_sentences: int = 4000
    squad_paragraphs: int = 500
    answer_selection: tuple[str, ...] = ("wikiqa", "trecqa")
    answer_selection_rounds: int = 2
    scifact: bool = True
    scifact_rounds: int = 3
    scifact_dev: float = 0.15
    scifact_dev_by: str = "abstract"
    sentence_negatives: Mapping[str, int] = field(
        default_factory=lambda: {"on_topic": 1, "dense": 3, "lexical": 2}
    )
    passage_negatives: Mapping[str, int] = field(default_factory=lambda: {"dense": 4, "lexical": 3})
    depth: int = 50
    skip_top: int = 2
    pool: int = 30

    def sources(self) -> list[str]:
        """What the groups come from, in words (for reports and the model card)."""
        found = []
        if self.squad_sentences:
            found.append(f"SQuAD v1.1 train, {self.squad_sentences} questions at sentence level")
        if self.squad_paragraphs:
            found.append(f"SQuAD v1.1 train, {self.squad_paragraphs} questions at paragraph level")
        found += [f"{name} train x{self.answer_selection_rounds}" for name in self.answer_selection]
        if self.scifact:
            rounds = f" x{self.scifact_rounds}" if self.scifact_rounds != 1 else ""
            found.append(
                f"SciFact train claims{rounds} ({1 - self.scifact_dev:.0%}; the rest, held out"
                f" by {self.scifact_dev_by}, is dev)"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = asdict(self)
        data["sentence_negatives"] = dict(self.sentence_negatives)
        data["passage_negatives"] = dict(self.passage_negatives)
        data["answer_selection"] = list(self.answer_selection)
        return data


def _labelled_negatives(data: RetrievalData, rows: Sequence[PairExample]) -> dict[str, list[str]]:
    """Each question's labelled wrong candidates, as document ids of ``data``."""
    doc_of = {text: doc for doc, text in data.corpus.items()}
    query_of = {text: qid for qid, text in data.queries.items()}
    found: dict[str, list[str]] = {}
    for row in rows:
        if row.a in query_of and float(row.label) < 1:
            found.setdefault(query_of[row.a], []).append(doc_of[row.b])
    return found


class _Mined:
    """First-stage candidates per source, computed once and kept in a JSON file (for resume)."""

    def __init__(self, path: Path | None, encoder: Any, depth: int) -> None:
        self.path = path
        self.encoder = encoder
        self.depth = depth
        self.found: dict[str, Any] = {}
        if path is not None and path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                self.found = json.load(handle)

    @staticmethod
    def key(name: str, data: RetrievalData) -> str:
        """``name`` and a hash of the queries and corpus size: a changed sample is mined anew."""
        digest = hashlib.sha256("\x1f".join(data.queries).encode("utf-8", "surrogatepass"))
        return f"{name}/{len(data.queries)}/{len(data.corpus)}/{digest.hexdigest()[:12]}"

    def candidates(self, name: str, data: RetrievalData) -> tuple[Candidates, Candidates]:
        key = self.key(name, data)
        if key not in self.found:
            from sbert_retrieval.models import default_prefixes

            query_prefix, passage_prefix = default_prefixes(self.encoder.prompts)
            dense = dense_candidates(
                self.encoder,
                data,
                self.depth,
                query_prefix=query_prefix,
                passage_prefix=passage_prefix,
            )
            self.found[key] = {"dense": dense, "lexical": bm25_candidates(data, self.depth)}
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                partial = self.path.with_suffix(".partial")
                with gzip.open(partial, "wt", encoding="utf-8") as handle:
                    json.dump(self.found, handle)
                partial.replace(self.path)
        kinds = self.found[key]
        return (
            {q: [(d, float(s)) for d, s in c] for q, c in kinds["dense"].items()},
            {q: [(d, float(s)) for d, s in c] for q, c in kinds["lexical"].items()},
        )


#: How :func:`scifact_dev_split` holds claims out: ``claim`` (a seeded sample of claims) or
#: ``abstract`` (whole groups of claims that share a cited abstract, so no dev claim's positive
#: is ever a training positive).
SCIFACT_DEV_SPLITS = ("claim", "abstract")


def scifact_dev_split(
    claims: RetrievalData, share: float, seed: int, *, by: str = "claim"
) -> tuple[RetrievalData, RetrievalData]:
    """SciFact train claims split into (train, dev): a seeded ``share`` held out as dev.

    ``by="claim"`` samples claims (the first shipped reranker's recipe): 70 of its 121 dev claims
    cite an abstract that a training claim cites too, so that dev set partly measures
    remembered abstracts. ``by="abstract"`` holds out whole connected groups of claims linked
    by a shared positive abstract, seeded, until ``share`` of the claims is reached: no dev
    positive is a training positive.
    """
    if by not in SCIFACT_DEV_SPLITS:
        raise ValueError(f"unknown split {by!r}; valid: {', '.join(SCIFACT_DEV_SPLITS)}")
    ids = list(claims.queries)
    target = round(len(ids) * share)
    if by == "claim":
        held = set(random.Random(seed).sample(ids, target))
    else:
        groups = _claims_sharing_abstracts(claims)
        random.Random(seed).shuffle(groups)
        held = set()
        for group in groups:
            if len(held) >= target:
                break
            held.update(group)
    return (
        claims.subset([q for q in ids if q not in held]),
        claims.subset([q for q in ids if q in held]),
    )


def _claims_sharing_abstracts(claims: RetrievalData) -> list[list[str]]:
    """Claims grouped into connected components of "cites a positive abstract in common",
    each group in query order, groups in the order of their first claim."""
    parent = {q: q for q in claims.queries}

    def root(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    first_citer: dict[str, str] = {}
    for q in claims.queries:
        for doc in claims.positives.get(q, ()):
            if doc in first_citer:
                parent[root(q)] = root(first_citer[doc])
            else:
                first_citer[doc] = q
    groups: dict[str, list[str]] = {}
    for q in claims.queries:
        groups.setdefault(root(q), []).append(q)
    return list(groups.values())


def leak_free(dev: RetrievalData, train: RetrievalData) -> RetrievalData:
    """``dev`` without the queries that share a positive with any ``train`` query: what a
    model trained on ``train`` has not seen the answers of."""
    seen = {doc for q in train.queries for doc in train.positives.get(q, ())}
    return dev.subset([q for q in dev.queries if not seen.intersection(dev.positives.get(q, ()))])


def reranker_training_data(
    recipe: RerankerRecipe,
    data_dir: str | os.PathLike[str],
    encoder: Any,
    *,
    seed: int = 42,
    mined_path: Path | None = None,
) -> tuple[list[GroupExample], FirstStageRerankingEvaluator]:
    """The recipe's training groups and its dev evaluator (WikiQA dev, dense top 100).

    ``encoder`` is the first stage (the bi-encoder that mines and that reranking will follow);
    candidates are kept in ``mined_path`` so a resumed run mines nothing twice.

    Thread safety: uses ``encoder``; one call at a time.
    """
    from sbert_retrieval.training.data import load_scifact, load_squad

    root = Path(data_dir)
    mined = _Mined(mined_path, encoder, max(recipe.depth, 100))
    groups: list[GroupExample] = []

    def add(
        key: str,
        data: RetrievalData,
        per_kind: Mapping[str, int],
        *,
        rounds: int = 1,
        **extra: Any,
    ) -> None:
        """``data``'s groups, ``rounds`` times: round r draws its negatives with seed + r."""
        dense, lexical = mined.candidates(key, data)
        for round_ in range(rounds):
            groups.extend(
                training_groups(
                    data,
                    dense=dense,
                    lexical=lexical,
                    per_kind=per_kind,
                    skip_top=recipe.skip_top,
                    pool=recipe.pool,
                    seed=seed + round_,
                    **extra,
                )
            )

    if recipe.squad_sentences:
        sentences, on_topic = load_squad_sentences(root, "train")
        sample = sentences.sample(recipe.squad_sentences, seed)
        add("squad-sentences", sample, recipe.sentence_negatives, on_topic=on_topic)
    if recipe.squad_paragraphs:
        paragraphs = load_squad(root, "train").sample(recipe.squad_paragraphs, seed + 1)
        add("squad-paragraphs", paragraphs, recipe.passage_negatives)
    for name in recipe.answer_selection:
        data = load_answer_selection_retrieval(root, name, "train")
        labelled = _labelled_negatives(data, load_answer_selection(root, name, "train"))
        add(
            name,
            data,
            recipe.sentence_negatives,
            rounds=recipe.answer_selection_rounds,
            on_topic=labelled,
        )
    if recipe.scifact:
        train, _ = scifact_dev_split(
            load_scifact(root, "train"), recipe.scifact_dev, seed, by=recipe.scifact_dev_by
        )
        add("scifact-train", train, recipe.passage_negatives, rounds=recipe.scifact_rounds)
    # WikiQA dev only while training (short pairs: ~1 minute per evaluation on 2 cores); the
    # held-out SciFact claims and SQuAD dev are scored after training, where the rerank weight
    # is chosen (scripts/reranker_dev.py).
    wikiqa = load_answer_selection_retrieval(root, "wikiqa", "dev")
    dense, _ = mined.candidates("wikiqa-dev", wikiqa)
    return groups, FirstStageRerankingEvaluator(wikiqa, dense, name="wikiqa")


def train_reranker(
    config: TrainingConfig,
    recipe: RerankerRecipe | None = None,
    *,
    model: str = DEFAULT_MODEL,
    data_dir: str | os.PathLike[str] = "../shared/data",
    command: str | None = None,
) -> dict[str, Any]:
    """Mine, train (listwise) and save the reranker to ``config.output_dir``; return the report.

    The cross-encoder starts from ``model``'s transformer (a fresh one-logit head, seeded by
    ``config.seed``); the same bi-encoder mines the negatives. A killed run continues from its
    newest checkpoint when called again with the same arguments (mined candidates are kept in
    ``output_dir/mined.json.gz``). A model card is written next to the model.

    Thread safety: one run per process at a time (seeds global RNGs).
    """
    from sbert_retrieval.encoding.bi_encoder import BiEncoder
    from sbert_retrieval.training.saving import init_cross_encoder_from_bi_encoder
    from sbert_retrieval.training.trainer import CrossEncoderTrainer, latest_checkpoint

    recipe = recipe or RerankerRecipe()
    out = config.output_path
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    encoder = BiEncoder(model, device=config.device)
    try:
        groups, evaluator = reranker_training_data(
            recipe, data_dir, encoder, seed=config.seed, mined_path=out / "mined.json.gz"
        )
    finally:
        encoder.close()
    mining_seconds = time.perf_counter() - started
    start = out / "init"
    if not (start / "config.json").is_file():
        init_cross_encoder_from_bi_encoder(
            resolve_model_path(model), start, seed=config.seed, max_length=config.max_seq_length
        )
    trainer = CrossEncoderTrainer(start, groups, config, loss="listwise", evaluator=evaluator)
    resume = latest_checkpoint(out)
    result = trainer.train(resume_from=resume).to_dict()
    report = {
        "kind": "cross-encoder (reranker)",
        "model": model,
        "loss": "listwise",
        "data": recipe.sources(),
        "dev_set": "wikiqa-dev",
        "examples": len(groups),
        "pairs": sum(1 + len(g.negatives) for g in groups),
        "mining_seconds": round(mining_seconds, 1),
        "recipe": recipe.to_dict(),
        **result,
    }
    write_model_card(out, report, {**config.to_dict(), "recipe": recipe.to_dict()}, command=command)
    return report


#: Rerank weights tried when choosing the recommended one on dev.
WEIGHT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def choose_rerank_weight(
    evaluators: Mapping[str, FirstStageRerankingEvaluator],
    reranker: Any,
    grid: Sequence[float] = WEIGHT_GRID,
) -> tuple[float, dict[str, dict[str, float]]]:
    """The rerank weight with the best mean dev nDCG@10, and every dev set's metrics.

    Each evaluator's candidates are scored once; every weight of ``grid`` is then an
    interpolation of those scores (1 is pure reranking).

    Thread safety: uses ``reranker``.
    """
    per_set: dict[str, dict[str, float]] = {}
    means: dict[float, list[float]] = {w: [] for w in grid}
    for name, evaluator in evaluators.items():
        found = evaluator.report(evaluator.scores(reranker), [w for w in grid if w < 1])
        per_set[name] = found
        for weight in grid:
            key = (
                evaluator.main_metric
                if weight >= 1
                else f"{evaluator.name}_interpolated_{weight:g}_ndcg@10"
            )
            means[weight].append(found[key])
    best = max(grid, key=lambda w: (float(np.mean(means[w])), w))
    return float(best), per_set


def recommend_rerank_weight(
    model_dir: str | os.PathLike[str], weight: float, *, first_stage: str = "dense"
) -> None:
    """Record ``weight`` in the model's ``config.json`` as its recommended weight after
    ``first_stage`` (``sbert_retrieval.rerank_weights``), where
    :class:`~sbert_retrieval.reranking.CrossEncoderReranker` reads its defaults. The dense
    one is also ``sbert_retrieval.rerank_weight``, the weight for stages without their own.

    Thread safety: rewrites one file; not concurrently with a reader loading the model.
    """
    check_rerank_weight(weight)
    if first_stage not in MODES:
        raise ValueError(f"unknown first stage {first_stage!r}; valid: {', '.join(MODES)}")
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    ours = config.setdefault("sbert_retrieval", {})
    ours.setdefault("rerank_weights", {})[first_stage] = float(weight)
    if first_stage == "dense":
        ours["rerank_weight"] = float(weight)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
