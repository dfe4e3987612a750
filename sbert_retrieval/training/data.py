"""Training examples, loaders for ``../shared/data`` training sets, and hard-negative mining.

Every loader takes the data root (the folder holding ``scifact/``, ``stsb/`` and ``train/``, see
``train/README.md`` there) and is strict: a malformed line raises
:class:`~sbert_retrieval.errors.InvalidRecordError` naming the file and line. Test splits are
refused: they are for scoring only.

========  ==================================================  ===================================
name      examples                                            label
========  ==================================================  ===================================
scifact   (claim, title + " " + abstract) per train qrel      1 (positives only; mine negatives)
stsb      (sentence1, sentence2)                              score / 5, float in [0, 1]
snli      (premise, hypothesis), dev + test splits            contradiction 0, entailment 1,
                                                              neutral 2 (SBERT's mapping)
wikiqa    (question, sentence) candidates                     1 answer, 0 not
trecqa    (question, sentence) candidates                     1 answer, 0 not
squad     (question, paragraph) per question                  1 (positives only; mine negatives)
msrp      (sentence1, sentence2)                              1 paraphrase, 0 not
========  ==================================================  ===================================
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from sbert_retrieval.errors import InvalidRecordError

if TYPE_CHECKING:
    from sbert_retrieval.encoding.bi_encoder import BiEncoder

__all__ = [
    "ANSWER_SELECTION",
    "SNLI_LABELS",
    "Example",
    "GroupExample",
    "PairExample",
    "RetrievalData",
    "TripletExample",
    "bce_examples",
    "examples_fingerprint",
    "group_pairs",
    "load_answer_selection",
    "load_msrp",
    "load_scifact",
    "load_snli",
    "load_squad",
    "load_stsb",
    "make_triplets",
    "mine_hard_negatives",
    "positive_pairs",
    "sample_examples",
    "triplet_examples",
]

SNLI_LABELS = ("contradiction", "entailment", "neutral")
ANSWER_SELECTION = ("wikiqa", "trecqa")
SAMPLING = ("top", "random")


@dataclass(frozen=True)
class PairExample:
    """Two texts and a label.

    Attributes:
        a: The first text (query, claim, premise, sentence 1).
        b: The second text (passage, abstract, hypothesis, sentence 2).
        label: A class (``int``) or a score (``float``); ``1`` for a positive pair.
    """

    a: str
    b: str
    label: float | int = 1

    def __post_init__(self) -> None:
        """Check the field types, so a bad loader fails here and not mid-training."""
        if not isinstance(self.a, str) or not isinstance(self.b, str):
            raise TypeError(f"PairExample texts must be str, got {type(self.a)}, {type(self.b)}")
        if isinstance(self.label, bool) or not isinstance(self.label, (int, float)):
            raise TypeError(f"PairExample label must be an int or float, got {self.label!r}")


@dataclass(frozen=True)
class TripletExample:
    """An anchor, a text that belongs with it, and one that does not.

    Attributes:
        anchor: The query or sentence.
        positive: Relevant to / similar to the anchor.
        negative: Irrelevant / dissimilar (ideally hard: close but wrong).
    """

    anchor: str
    positive: str
    negative: str

    def __post_init__(self) -> None:
        """Check the field types."""
        if not all(isinstance(t, str) for t in (self.anchor, self.positive, self.negative)):
            raise TypeError("TripletExample texts must all be str")


@dataclass(frozen=True)
class GroupExample:
    """One query with one relevant passage and its negatives (listwise training).

    Attributes:
        query: The query text.
        positive: A relevant passage.
        negatives: Passages that are not relevant, hardest first.
    """

    query: str
    positive: str
    negatives: tuple[str, ...]

    def __post_init__(self) -> None:
        """Check the field types and that there is a negative."""
        texts = (self.query, self.positive, *self.negatives)
        if not isinstance(self.negatives, tuple) or not all(isinstance(t, str) for t in texts):
            raise TypeError("GroupExample needs str query and positive, a tuple of str negatives")
        if not self.negatives:
            raise ValueError(f"GroupExample for {self.query[:60]!r} has no negative")


Example: TypeAlias = PairExample | TripletExample | GroupExample


@dataclass(frozen=True)
class RetrievalData:
    """Queries, a corpus and the relevant documents of each query (positives only).

    Attributes:
        queries: Query id → text, in file order.
        corpus: Document id → text (title and text joined with a space for BEIR corpora).
        positives: Query id → ids of its relevant documents, in qrels order.
        name: Where the data came from, e.g. ``"scifact/train"``.
    """

    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    positives: Mapping[str, tuple[str, ...]]
    name: str = ""

    def pairs(self) -> list[PairExample]:
        """One ``(query, document, 1)`` pair per relevant document, in query order.

        Thread safety: read-only; safe from any thread.
        """
        return [
            PairExample(self.queries[qid], self.corpus[doc_id], 1)
            for qid in self.queries
            for doc_id in self.positives.get(qid, ())
        ]

    def sample(self, count: int | None, seed: int) -> RetrievalData:
        """A seeded sample of ``count`` queries, in file order (all when ``count`` is ``None``
        or not below the query count). A smaller ``count`` with the same seed draws a subset
        of a larger one's sample.

        Thread safety: read-only; safe from any thread.
        """
        ids = list(self.queries)
        if count is None or count >= len(ids):
            return self
        return self.subset(
            [ids[i] for i in sorted(random.Random(seed).sample(range(len(ids)), count))]
        )

    def subset(self, query_ids: Sequence[str]) -> RetrievalData:
        """The same corpus with only these queries (in the given order).

        Thread safety: read-only; safe from any thread.
        """
        unknown = [q for q in query_ids if q not in self.queries]
        if unknown:
            raise ValueError(f"unknown query ids {unknown[:5]} in {self.name or 'the data'}")
        return RetrievalData(
            queries={q: self.queries[q] for q in query_ids},
            corpus=self.corpus,
            positives={q: self.positives.get(q, ()) for q in query_ids},
            name=self.name,
        )


def _refuse_test(split: str, dataset: str) -> None:
    if split.lower() == "test":
        raise ValueError(
            f"{dataset}: the test split is for scoring only and is never trained on; use 'train'"
            " (or 'dev' where the dataset has one)"
        )


def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line without its ending)``; UTF-8, optional BOM, optional gzip."""
    if not path.is_file():
        raise InvalidRecordError(str(path), "", "no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="\n") as handle:
        for lineno, line in enumerate(handle, 1):
            yield lineno, line.rstrip("\n").rstrip("\r")


def _tsv_rows(path: Path, header: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """Rows of a tab-separated file whose first line is exactly ``header``."""
    source = str(path)
    seen_header = False
    for lineno, line in _open_text(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if not seen_header:
            if [f.strip() for f in fields] != list(header):
                raise InvalidRecordError(
                    source, f"line {lineno}", f"expected the header {list(header)}, got {line!r}"
                )
            seen_header = True
            continue
        if len(fields) != len(header):
            raise InvalidRecordError(
                source,
                f"line {lineno}",
                f"expected {len(header)} tab-separated fields, got {len(fields)}: {line[:80]!r}",
            )
        yield lineno, fields


def _binary_label(text: str, source: str, lineno: int) -> int:
    value = text.strip()
    if value not in ("0", "1"):
        raise InvalidRecordError(source, f"line {lineno}", f"label must be 0 or 1, got {text!r}")
    return int(value)


def load_scifact(data_dir: str | os.PathLike[str], split: str = "train") -> RetrievalData:
    """SciFact's claims, its whole corpus, and the relevant abstracts of each claim.

    Args:
        data_dir: The data root, holding ``scifact/`` (BEIR layout).
        split: The qrels split (``train``; ``test`` is refused).

    Returns:
        For ``train``: 809 queries, 919 positives, 5,183 documents (title + " " + abstract).

    Raises:
        ValueError: ``split`` is ``test``.
        InvalidRecordError: A file is missing or malformed.

    Thread safety: reads files only; safe from any thread.
    """
    from sbert_retrieval.evaluation.data import load_beir_dataset

    _refuse_test(split, "scifact")
    dataset = load_beir_dataset(Path(data_dir) / "scifact", split=split)
    positives = {
        qid: tuple(doc for doc, score in judged.items() if score >= 1)
        for qid, judged in dataset.qrels.items()
    }
    missing = [d for docs in positives.values() for d in docs if d not in dataset.corpus]
    if missing:
        raise InvalidRecordError(
            str(dataset.path / "qrels" / f"{split}.tsv"),
            "",
            f"judges unknown documents {missing[:5]}",
        )
    return RetrievalData(
        queries=dict(dataset.queries),
        corpus={doc_id: doc.text for doc_id, doc in dataset.corpus.items()},
        positives=positives,
        name=f"scifact/{split}",
    )


def load_squad(data_dir: str | os.PathLike[str], split: str = "train") -> RetrievalData:
    """SQuAD v1.1 questions with their paragraph as the one positive.

    Args:
        data_dir: The data root, holding ``train/squad_v1.1/squad-v1.1-{split}.jsonl.gz``.
        split: ``train`` (87,599 questions, 18,896 paragraphs) or ``dev``.

    Returns:
        Query ids are ``"{title}/{para_idx}/{n}"`` (``n``: the question's rank in its paragraph);
        document ids ``"{title}/{para_idx}"``; the corpus is every paragraph of the split.

    Raises:
        ValueError: ``split`` is ``test`` (SQuAD has none here).
        InvalidRecordError: A missing file or a malformed line.

    Thread safety: reads files only; safe from any thread.
    """
    _refuse_test(split, "squad")
    path = Path(data_dir) / "train" / "squad_v1.1" / f"squad-v1.1-{split}.jsonl.gz"
    source = str(path)
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    positives: dict[str, tuple[str, ...]] = {}
    counts: dict[str, int] = {}
    for lineno, line in _open_text(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            title, para, context, question = (
                str(record["title"]),
                int(record["para_idx"]),
                record["context"],
                record["question"],
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidRecordError(source, f"line {lineno}", f"bad record: {exc}") from None
        if not isinstance(context, str) or not isinstance(question, str) or not question.strip():
            raise InvalidRecordError(source, f"line {lineno}", "context/question must be text")
        doc_id = f"{title}/{para}"
        if corpus.setdefault(doc_id, context) != context:
            raise InvalidRecordError(
                source, f"line {lineno}", f"paragraph {doc_id} has two different contexts"
            )
        n = counts.get(doc_id, 0)
        counts[doc_id] = n + 1
        qid = f"{doc_id}/{n}"
        queries[qid] = question
        positives[qid] = (doc_id,)
    return RetrievalData(queries, corpus, positives, name=f"squad/{split}")


def load_stsb(data_dir: str | os.PathLike[str], split: str = "train") -> list[PairExample]:
    """STS Benchmark pairs with the gold score scaled to ``[0, 1]`` (score / 5).

    Args:
        data_dir: The data root, holding ``stsb/{split}.tsv``.
        split: ``train`` (5,749 pairs) or ``dev`` (1,500); ``test`` is refused.

    Thread safety: reads files only; safe from any thread.
    """
    from sbert_retrieval.evaluation.data import load_sts_tsv

    _refuse_test(split, "stsb")
    pairs = load_sts_tsv(Path(data_dir) / "stsb" / f"{split}.tsv")
    return [
        PairExample(s1, s2, float(score) / 5.0)
        for s1, s2, score in zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True)
    ]


def load_snli(
    data_dir: str | os.PathLike[str], splits: Sequence[str] = ("dev", "test")
) -> list[PairExample]:
    """SNLI (premise, hypothesis, class) with SBERT's label ids: contradiction 0, entailment 1,
    neutral 2 (:data:`SNLI_LABELS`).

    Only SNLI's dev and test splits exist offline (9,842 + 9,824 pairs); the data's README allows
    training on them as long as nobody reports SNLI accuracy.

    Args:
        data_dir: The data root, holding ``train/snli/snli-{split}.tsv``.
        splits: Which of ``dev`` and ``test`` to read, concatenated in this order.

    Thread safety: reads files only; safe from any thread.
    """
    examples: list[PairExample] = []
    for split in splits:
        if split not in ("dev", "test"):
            raise ValueError(f"unknown SNLI split {split!r}; valid: dev, test")
        path = Path(data_dir) / "train" / "snli" / f"snli-{split}.tsv"
        for lineno, (premise, hypothesis, label) in _tsv_rows(
            path, ("premise", "hypothesis", "label")
        ):
            if label not in SNLI_LABELS:
                raise InvalidRecordError(
                    str(path),
                    f"line {lineno}",
                    f"unknown label {label!r}; valid: {', '.join(SNLI_LABELS)}",
                )
            examples.append(PairExample(premise, hypothesis, SNLI_LABELS.index(label)))
    return examples


def load_answer_selection(
    data_dir: str | os.PathLike[str], name: str, split: str = "train"
) -> list[PairExample]:
    """WikiQA or TrecQA (question, candidate sentence, 0/1), in file order.

    Args:
        data_dir: The data root, holding ``train/{name}/{name}-{split}.tsv``.
        name: ``wikiqa`` (train 8,672 pairs / 1,040 positive) or ``trecqa`` (4,718 / 348).
        split: ``train`` or ``dev``.

    Thread safety: reads files only; safe from any thread.
    """
    if name not in ANSWER_SELECTION:
        raise ValueError(
            f"unknown answer-selection set {name!r}; valid: {', '.join(ANSWER_SELECTION)}"
        )
    _refuse_test(split, name)
    path = Path(data_dir) / "train" / name / f"{name}-{split}.tsv"
    return [
        PairExample(question, sentence, _binary_label(label, str(path), lineno))
        for lineno, (_, question, sentence, label) in _tsv_rows(
            path, ("qid", "question", "sentence", "label")
        )
    ]


def load_msrp(data_dir: str | os.PathLike[str]) -> list[PairExample]:
    """Microsoft Research Paraphrase train pairs (4,076; 1 = paraphrase).

    Thread safety: reads files only; safe from any thread.
    """
    path = Path(data_dir) / "train" / "msrp" / "msr_paraphrase_train.txt"
    return [
        PairExample(first, second, _binary_label(quality, str(path), lineno))
        for lineno, (quality, _, _, first, second) in _tsv_rows(
            path, ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
        )
    ]


# -- conversions ----------------------------------------------------------------------------


def positive_pairs(pairs: Sequence[PairExample], min_label: float = 1) -> list[PairExample]:
    """The pairs whose label is at least ``min_label``, relabelled ``1`` (for MNRL).

    Thread safety: pure function.
    """
    return [PairExample(p.a, p.b, 1) for p in pairs if p.label >= min_label]


def group_pairs(pairs: Sequence[PairExample]) -> dict[str, list[tuple[str, float | int]]]:
    """First text → its ``(second text, label)`` candidates, in first-seen order.

    Thread safety: pure function.
    """
    groups: dict[str, list[tuple[str, float | int]]] = {}
    for pair in pairs:
        groups.setdefault(pair.a, []).append((pair.b, pair.label))
    return groups


def make_triplets(
    pairs: Sequence[PairExample],
    *,
    seed: int = 0,
    positive_label: float | int = 1,
    negative_label: float | int = 0,
) -> list[TripletExample]:
    """One triplet per positive pair, its negative drawn from the same anchor's negatives.

    An anchor without a labelled negative gets a random positive text of another anchor (an
    easy negative). Draws are seeded per anchor, so the result does not depend on order.

    Args:
        pairs: Labelled pairs, e.g. WikiQA candidates or SNLI (entailment 1, contradiction 0).
        seed: Seeds the draws.
        positive_label: The label of the positives.
        negative_label: The label of the in-group negatives.

    Raises:
        ValueError: No positive pair, or a random negative is needed and only one anchor exists.

    Thread safety: pure function.
    """
    groups = group_pairs(pairs)
    all_positives = [
        (a, b) for a, rows in groups.items() for b, lab in rows if lab == positive_label
    ]
    if not all_positives:
        raise ValueError(f"no pair has the positive label {positive_label!r}")
    triplets: list[TripletExample] = []
    for anchor, rows in groups.items():
        positives = [b for b, lab in rows if lab == positive_label]
        negatives = [b for b, lab in rows if lab == negative_label]
        rng = random.Random(f"{seed}\x1f{anchor}")
        for positive in positives:
            if negatives:
                negative = rng.choice(negatives)
            else:
                others = [b for a, b in all_positives if a != anchor and b != positive]
                if not others:
                    raise ValueError("a random negative needs positives of at least two anchors")
                negative = rng.choice(others)
            triplets.append(TripletExample(anchor, positive, negative))
    return triplets


def sample_examples(
    examples: Sequence[Example], limit: int | None, *, seed: int = 0
) -> list[Example]:
    """At most ``limit`` examples, a seeded sample that keeps the original order.

    Thread safety: pure function.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the examples' texts and labels, in order (a resumed run must see the same).

    Thread safety: pure function.
    """
    digest = hashlib.sha256()
    for example in examples:
        parts: tuple[str, ...]
        if isinstance(example, PairExample):
            parts = ("P", example.a, example.b, repr(example.label))
        elif isinstance(example, GroupExample):
            parts = ("G", example.query, example.positive, *example.negatives)
        else:
            parts = ("T", example.anchor, example.positive, example.negative)
        digest.update("\x1f".join(parts).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


# -- hard negatives -------------------------------------------------------------------------


def mine_hard_negatives(
    encoder: BiEncoder,
    data: RetrievalData,
    *,
    num_negatives: int = 4,
    top_k: int = 30,
    skip_top: int = 0,
    sampling: str = "top",
    relative_margin: float | None = None,
    seed: int = 0,
    query_prefix: str = "",
    passage_prefix: str = "",
    query_batch_size: int = 512,
    show_progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, list[str]]:
    """Hard negatives: documents the bi-encoder ranks high for a query that are not positives.

    The corpus is encoded into an in-memory :class:`~sbert_retrieval.stores.ExactStore` (cosine);
    each query retrieves its top ``top_k`` non-positive documents (a document whose text equals
    a positive's is a positive too), the first ``skip_top`` are dropped (likely unlabelled
    positives), and ``num_negatives`` are kept: the best ones (``sampling="top"``) or a seeded
    random draw from the rest (``"random"``).

    Args:
        encoder: The bi-encoder that retrieves (e.g. all-MiniLM-L6-v2).
        data: Queries, corpus and positives.
        num_negatives: Negatives per query (default 4).
        top_k: Depth of the candidate list, counted after removing positives (default 30).
        skip_top: Leading candidates skipped (default 0).
        sampling: ``top`` or ``random``.
        relative_margin: When set, a candidate is kept only if its cosine is at most
            ``(1 − relative_margin) ×`` the query's lowest positive cosine (guards against
            unlabelled positives; sentence-transformers' ``relative_margin``).
        seed: Seeds ``random`` sampling (per query, independent of order).
        query_prefix / passage_prefix: Prefixes for asymmetric encoders.
        query_batch_size: Queries searched at once (bounds the score matrix in memory).
        show_progress: Show progress bars while encoding.
        cache_dir: An :class:`~sbert_retrieval.encoding.cache.EmbeddingCache` directory for
            the corpus vectors (default: none; encode every time).

    Returns:
        Query id → negative document ids, best ranked first; every query of ``data`` is a key.

    Raises:
        ValueError: Bad counts or an unknown ``sampling`` (the message lists the valid ones).

    Thread safety: uses ``encoder`` (whose calls are serialized); otherwise self-contained.
    """
    from sbert_retrieval.pipeline import point_id
    from sbert_retrieval.stores.base import Record
    from sbert_retrieval.stores.exact import ExactStore

    if sampling not in SAMPLING:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLING)}")
    if num_negatives < 1 or top_k < 1 or skip_top < 0 or query_batch_size < 1:
        raise ValueError(
            "need num_negatives >= 1, top_k >= 1, skip_top >= 0 and query_batch_size >= 1, got"
            f" {num_negatives}, {top_k}, {skip_top}, {query_batch_size}"
        )
    if skip_top + num_negatives > top_k:
        raise ValueError(
            f"skip_top + num_negatives ({skip_top} + {num_negatives}) exceeds top_k ({top_k})"
        )
    if relative_margin is not None and not 0 <= relative_margin < 1:
        raise ValueError(f"relative_margin must be in [0, 1), got {relative_margin}")
    doc_ids = list(data.corpus)
    texts = [data.corpus[d] for d in doc_ids]
    row_of = {d: i for i, d in enumerate(doc_ids)}
    if cache_dir is not None:
        from sbert_retrieval.encoding.cache import EmbeddingCache

        vectors, _ = EmbeddingCache(cache_dir).encode(
            encoder, texts, prefix=passage_prefix, show_progress=show_progress
        )
    else:
        vectors = encoder.encode(texts, prefix=passage_prefix, show_progress=show_progress)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1, norms)
    query_ids = list(data.queries)
    query_vectors = encoder.encode(
        [data.queries[q] for q in query_ids], prefix=query_prefix, show_progress=show_progress
    )
    qnorms = np.linalg.norm(query_vectors, axis=1, keepdims=True)
    query_unit = query_vectors / np.where(qnorms == 0, 1, qnorms)

    store = ExactStore(None, encoder.spec(query_prefix=query_prefix, passage_prefix=passage_prefix))
    try:
        for start in range(0, len(doc_ids), 1000):
            store.upsert(
                [
                    Record(point_id(d, 0, data.corpus[d]), vectors[start + i], {"doc_id": d})
                    for i, d in enumerate(doc_ids[start : start + 1000])
                ]
            )
        most_positives = max((len(p) for p in data.positives.values()), default=0)
        depth = min(len(doc_ids), top_k + most_positives)
        mined: dict[str, list[str]] = {}
        for start in range(0, len(query_ids), query_batch_size):
            batch = query_ids[start : start + query_batch_size]
            results = store.search(query_vectors[start : start + len(batch)], depth)
            for offset, (qid, hits) in enumerate(zip(batch, results, strict=True)):
                positives = [p for p in data.positives.get(qid, ()) if p in row_of]
                positive_texts = {data.corpus[p] for p in positives}
                candidates = [
                    (str(h.payload["doc_id"]), h.score)
                    for h in hits
                    if str(h.payload["doc_id"]) not in positives
                    and data.corpus[str(h.payload["doc_id"])] not in positive_texts
                ][:top_k]
                if relative_margin is not None and positives:
                    q = query_unit[start + offset]
                    floor = min(float(unit[row_of[p]] @ q) for p in positives)
                    limit = floor * (1 - relative_margin)
                    candidates = [(d, s) for d, s in candidates if s <= limit]
                pool = candidates[skip_top:]
                if sampling == "random" and len(pool) > num_negatives:
                    rng = random.Random(f"{seed}\x1f{qid}")
                    keep = sorted(rng.sample(range(len(pool)), num_negatives))
                    pool = [pool[i] for i in keep]
                mined[qid] = [d for d, _ in pool[:num_negatives]]
    finally:
        store.close()
    return mined


def bce_examples(data: RetrievalData, negatives: Mapping[str, Sequence[str]]) -> list[PairExample]:
    """Cross-encoder BCE data: each query's positives (label 1) then its negatives (label 0).

    Thread safety: pure function.
    """
    examples: list[PairExample] = []
    for qid, query in data.queries.items():
        examples.extend(PairExample(query, data.corpus[d], 1) for d in data.positives.get(qid, ()))
        examples.extend(PairExample(query, data.corpus[d], 0) for d in negatives.get(qid, ()))
    return examples


def triplet_examples(
    data: RetrievalData, negatives: Mapping[str, Sequence[str]]
) -> list[TripletExample]:
    """Bi-encoder data with hard negatives: one triplet per positive, negatives in turn.

    Positive ``j`` of a query is paired with its negative ``j mod k``; queries without a mined
    negative are left out.

    Thread safety: pure function.
    """
    triplets: list[TripletExample] = []
    for qid, query in data.queries.items():
        negs = list(negatives.get(qid, ()))
        if not negs:
            continue
        for j, doc in enumerate(data.positives.get(qid, ())):
            triplets.append(
                TripletExample(query, data.corpus[doc], data.corpus[negs[j % len(negs)]])
            )
    return triplets
