"""Loaders for evaluation data: BEIR retrieval datasets and STS sentence-pair files.

Evaluation data must be complete, so these loaders are strict: any malformed line raises
:class:`~sbert_retrieval.errors.InvalidRecordError`, which names the file and line (``path:line
12: reason``). Files are read line by line, so memory holds only the parsed result. Each file may
be gzip-compressed (a ``.gz`` suffix), is decoded as UTF-8, and may start with a byte-order mark.
Lines end at ``\\n`` only (a ``\\r`` before it is dropped), so a stray ``\\r`` or any other Unicode
line separator inside a sentence stays part of the sentence.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_retrieval.documents import Document, load_beir_corpus
from sbert_retrieval.errors import InvalidRecordError

__all__ = [
    "BeirDataset",
    "StsPairs",
    "load_beir_dataset",
    "load_beir_qrels",
    "load_beir_queries",
    "load_sts_tsv",
]

_QRELS_HEADER = ("query-id", "corpus-id", "score")
_STS_COLUMNS = ("score", "sentence1", "sentence2")


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR dataset, ready to evaluate.

    Attributes:
        corpus: Document id → document, title and text joined with one space as BEIR and MTEB
            do (the title is also kept in ``metadata["title"]``).
        queries: Query id → text, only for the queries judged in this split.
        qrels: Query id → document id → graded relevance, as in ``qrels/{split}.tsv``.
        split: The split's name, e.g. ``"test"``.
        path: The dataset folder.
    """

    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str
    path: Path


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with their gold similarity scores, in file order.

    Attributes:
        sentences1: The first sentence of each pair.
        sentences2: The second sentence of each pair.
        scores: float64 gold scores, one per pair, read-only (STS Benchmark uses 0 to 5).
    """

    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]
    scores: np.ndarray

    def __post_init__(self) -> None:
        """Check that the three columns line up and freeze the scores."""
        lengths = {len(self.sentences1), len(self.sentences2), int(self.scores.shape[0])}
        if len(lengths) != 1 or self.scores.ndim != 1:
            raise ValueError(
                f"StsPairs columns differ in length: {len(self.sentences1)} sentences1, "
                f"{len(self.sentences2)} sentences2, scores of shape {self.scores.shape}"
            )
        scores = np.array(self.scores, dtype=np.float64)  # A copy: the caller's stays writable.
        scores.flags.writeable = False
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        """The number of pairs."""
        return len(self.sentences1)


def _open_binary(path: Path) -> gzip.GzipFile | io.BufferedReader:
    source = str(path)
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        return path.open("rb")
    except FileNotFoundError:
        raise InvalidRecordError(source, "", "no such file") from None
    except IsADirectoryError:
        raise InvalidRecordError(source, "", "is a folder, not a file") from None
    except OSError as exc:
        raise InvalidRecordError(source, "", f"cannot open: {exc.strerror or exc}") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text without its line ending)`` for each line, blank ones too."""
    source = str(path)
    with _open_binary(path) as handle:
        lineno = 0
        while True:
            lineno += 1
            try:
                raw = handle.readline()
            except (OSError, EOFError) as exc:  # A truncated or corrupt .gz ends up here.
                raise InvalidRecordError(source, f"line {lineno}", f"read failed: {exc}") from None
            if not raw:
                return
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRecordError(
                    source, f"line {lineno}", f"not valid UTF-8 at byte {exc.start} ({exc.reason})"
                ) from None
            if text.endswith("\n"):
                text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
            yield lineno, text


def load_beir_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Load a BEIR ``queries.jsonl``: one ``{"_id": ..., "text": ...}`` object per line.

    Blank lines are skipped; other keys (``metadata``) are ignored. An integer ``_id`` becomes its
    decimal string, as BEIR's own loader does.

    Args:
        path: The file (``.jsonl`` or ``.jsonl.gz``).

    Returns:
        Query id → text, in file order.

    Raises:
        InvalidRecordError: The file can't be read, or a line isn't a JSON object with a
            non-empty ``_id`` and a non-empty string ``text``, or an id repeats (the message
            gives the line of both).
    """
    file = Path(path)
    source = str(file)
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, line in _lines(file):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise InvalidRecordError(source, where, f"invalid JSON: {reason}") from None
        if not isinstance(record, dict):
            raise InvalidRecordError(
                source, where, f"expected a JSON object, got {type(record).__name__}"
            )
        query_id = record.get("_id")
        if isinstance(query_id, bool) or not isinstance(query_id, (str, int)):
            raise InvalidRecordError(
                source, where, f"'_id' must be a string or integer, got {query_id!r}"
            )
        query_id = str(query_id)
        if not query_id.strip():
            raise InvalidRecordError(source, where, "'_id' is empty")
        text = record.get("text")
        if not isinstance(text, str):
            raise InvalidRecordError(
                source, where, f"query {query_id}: 'text' must be a string, got {text!r}"
            )
        if not text.strip():
            raise InvalidRecordError(source, where, f"query {query_id}: empty text")
        if query_id in queries:
            raise InvalidRecordError(
                source,
                where,
                f"query id {query_id!r} repeats (first on line {first_line[query_id]}); "
                "each query must appear once",
            )
        queries[query_id] = text
        first_line[query_id] = lineno
    return queries


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_beir_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Load BEIR qrels: a TSV with the columns ``query-id``, ``corpus-id``, ``score``.

    Fields are split on tabs only. The header line is optional: a first line whose ``score``
    field holds no digit is taken for one. Blank lines are skipped, and a line that repeats a
    pair with the same score is accepted. Rows with score 0 or a negative score are kept:
    :func:`sbert_retrieval.evaluation.metrics.evaluate` counts only scores ≥ 1 as relevant.

    Args:
        path: The file (``.tsv`` or ``.tsv.gz``).

    Returns:
        Query id → document id → score, in file order.

    Raises:
        InvalidRecordError: The file can't be read, or a line hasn't exactly 3 tab-separated
            fields, has an empty id or a score that isn't an integer, or gives a pair a second,
            different score (the message gives both lines).
    """
    file = Path(path)
    source = str(file)
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    seen_content = False
    for lineno, line in _lines(file):
        if not line.strip():
            continue
        where = f"line {lineno}"
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 3:
            raise InvalidRecordError(
                source,
                where,
                f"expected 3 tab-separated fields (query-id, corpus-id, score), got "
                f"{len(fields)}: {line[:80]!r}",
            )
        query_id, doc_id, score_text = fields
        if not seen_content:
            seen_content = True
            if not any(char.isdigit() for char in score_text):
                continue  # The header, e.g. "query-id\tcorpus-id\tscore".
        if not query_id or not doc_id:
            raise InvalidRecordError(source, where, "empty query-id or corpus-id")
        if not _is_int(score_text):
            raise InvalidRecordError(source, where, f"score must be an integer, got {score_text!r}")
        score = int(score_text)
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != score:
            raise InvalidRecordError(
                source,
                where,
                f"query {query_id!r}, document {doc_id!r}: score {score} contradicts score "
                f"{judged[doc_id]} on line {first_line[(query_id, doc_id)]}",
            )
        judged[doc_id] = score
        first_line.setdefault((query_id, doc_id), lineno)
    return qrels


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def load_beir_dataset(folder: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load one split of a BEIR dataset folder.

    The folder holds ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]`` and ``qrels/{split}.tsv[.gz]``.
    The queries file usually holds every split's queries; only those judged in ``split`` are
    kept.

    Args:
        folder: The dataset folder.
        split: The qrels file to use, e.g. ``"test"``, ``"dev"`` or ``"train"``.

    Returns:
        The corpus, the split's queries and its qrels.

    Raises:
        InvalidRecordError: A file is missing (for the qrels, the message lists the splits that
            exist), any corpus, query or qrels line is malformed, a document id repeats in the
            corpus, or the qrels judge a query that isn't in the queries file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidRecordError(str(root), "", "no such folder (expected a BEIR dataset folder)")
    qrels_dir = root / "qrels"
    qrels_file = _find(qrels_dir, (f"{split}.tsv", f"{split}.tsv.gz"))
    if qrels_file is None:
        available = sorted(
            {p.name.split(".")[0] for p in qrels_dir.glob("*.tsv*") if p.is_file()}
            if qrels_dir.is_dir()
            else set()
        )
        choice = (
            f"available splits: {', '.join(available)}; pass one of them as split"
            if available
            else "the folder has no qrels/*.tsv at all"
        )
        raise InvalidRecordError(
            str(qrels_dir / f"{split}.tsv"), "", f"no qrels for split {split!r}: {choice}"
        )
    qrels = load_beir_qrels(qrels_file)

    queries_file = _find(root, ("queries.jsonl", "queries.jsonl.gz"))
    if queries_file is None:
        raise InvalidRecordError(str(root / "queries.jsonl"), "", "no such file")
    all_queries = load_beir_queries(queries_file)
    missing = [query_id for query_id in qrels if query_id not in all_queries]
    if missing:
        shown = ", ".join(repr(query_id) for query_id in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidRecordError(
            str(qrels_file),
            "",
            f"judges {len(missing)} query id(s) absent from {queries_file.name}: {shown}{more}",
        )
    queries = {query_id: all_queries[query_id] for query_id in qrels}

    corpus: dict[str, Document] = {}
    for record in load_beir_corpus(root):
        if isinstance(record, InvalidRecordError):
            raise record
        if record.id in corpus:
            raise InvalidRecordError(
                str(root / "corpus.jsonl"), "", f"document id {record.id!r} appears twice"
            )
        corpus[record.id] = record
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, split=split, path=root)


def _sts_columns(header: list[str]) -> tuple[int, int, int] | None:
    names = [name.strip().lower() for name in header]
    if sorted(names) != sorted(_STS_COLUMNS):
        return None
    score, first, second = (names.index(column) for column in _STS_COLUMNS)
    return score, first, second


def load_sts_tsv(path: str | os.PathLike[str]) -> StsPairs:
    """Load STS sentence pairs from a TSV file with a header naming its three columns.

    The header holds ``score``, ``sentence1`` and ``sentence2`` in any order (e.g.
    ``score\\tsentence1\\tsentence2`` as in STS Benchmark, or ``sentence1\\tsentence2\\tscore``).
    Lines are split on TAB only, never with CSV quoting, because the sentences hold raw double
    quotes; sentences are kept exactly as written. Blank lines are skipped.

    Args:
        path: The file (``.tsv`` or ``.tsv.gz``).

    Returns:
        The pairs in file order.

    Raises:
        InvalidRecordError: The file can't be read, has no such header or no pair, or a line
            hasn't exactly 3 tab-separated fields, has an empty sentence, or a score that isn't a
            finite number.
    """
    file = Path(path)
    source = str(file)
    columns: tuple[int, int, int] | None = None
    sentences1: list[str] = []
    sentences2: list[str] = []
    scores: list[float] = []
    for lineno, line in _lines(file):
        if not line.strip():
            continue
        where = f"line {lineno}"
        fields = line.split("\t")
        if columns is None:
            columns = _sts_columns(fields)
            if columns is None:
                raise InvalidRecordError(
                    source,
                    where,
                    "expected a header naming the columns score, sentence1 and sentence2 "
                    f"(tab-separated, any order), got {line[:80]!r}",
                )
            continue
        if len(fields) != 3:
            raise InvalidRecordError(
                source,
                where,
                f"expected 3 tab-separated fields, got {len(fields)} (a sentence may not hold a "
                f"tab): {line[:80]!r}",
            )
        score_at, first_at, second_at = columns
        try:
            score = float(fields[score_at])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InvalidRecordError(
                source, where, f"score must be a finite number, got {fields[score_at]!r}"
            )
        first, second = fields[first_at], fields[second_at]
        if not first.strip() or not second.strip():
            raise InvalidRecordError(source, where, "empty sentence")
        sentences1.append(first)
        sentences2.append(second)
        scores.append(score)
    if columns is None:
        raise InvalidRecordError(source, "", "empty file: expected a header and sentence pairs")
    if not scores:
        raise InvalidRecordError(source, "", "no sentence pairs after the header")
    return StsPairs(
        sentences1=tuple(sentences1),
        sentences2=tuple(sentences2),
        scores=np.asarray(scores, dtype=np.float64),
    )
