"""BM25 over chunk text for the embedded stores: a tantivy index derived from the database.

SQLite holds the text (the truth); this index is derived from it like the HNSW graph and is
rebuilt from it when missing or unusable. `tantivy <https://github.com/quickwit-oss/tantivy>`_
(the Rust engine behind Quickwit and ParadeDB, through its maintained Python binding) is used
instead of SQLite FTS5 for one measured reason: FTS5's ``bm25()`` scores every row that holds
any query word before it sorts, about 1 µs a row, so a 10-word question over 100,000 chunks took
29-87 ms; tantivy's top-k search skips blocks that cannot reach the top k (block-max WAND) and
answered the same questions with the same top 5 in 1.2 ms.

* **Analysis** is this package's own (:func:`sbert_retrieval.lexical.analyze`: unicode61-like
  folding and splitting, Porter stems), handed to tantivy as pre-tokenized text; queries are
  analysed the same way, less English stopwords (:func:`~sbert_retrieval.lexical.query_terms`).
  The Qdrant backend uses the same functions, so every backend matches the same words; nothing
  a user types is query syntax.
* **Scores** are tantivy's BM25, Lucene's formula: ``idf · tf · (k1 + 1) / (tf + k1 · (1 - b
  + b · dl / avgdl))`` with ``idf = ln(1 + (N - n + 0.5) / (n + 0.5))``, k1 = 1.2, b = 0.75,
  ``N`` the documents with text, ``avgdl`` their mean token count. As in Lucene, a document's
  length is stored in one byte: exact up to 40 tokens, then rounded (within a few percent), and
  a deleted document still counts in ``n`` until its segment is merged.
* **Labels**: one document per point with text, keyed by the point's label (a label names one
  immutable vector and text: the store gives a point whose text changes a new label).
  :meth:`LexicalIndex.apply` deletes before it adds, in one commit, so replaying a range that is
  already indexed changes nothing.

Thread safety: :meth:`~LexicalIndex.search` may run in any number of threads alongside one
thread calling :meth:`~LexicalIndex.apply` (searches see the last commit).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tantivy

from sbert_retrieval.lexical import analyze, query_terms

__all__ = ["LEXICAL_DIRECTORY", "LexicalIndex"]

#: The index's directory inside a store directory.
LEXICAL_DIRECTORY = "lexical"
#: tantivy refuses terms over 65,530 bytes; such a token (no word is that long) is left out.
_MAX_TERM_BYTES = 65_000
#: Filters matching at most this many labels are answered by one query holding them all; wider
#: ones by widening an unfiltered top-k until k of its hits pass.
_TERM_SET_MAX = 50_000
_WRITER_HEAP_BYTES = 64_000_000
_U64_MAX = 2**64 - 1


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("label", stored=False, indexed=True, fast=True)
    # Frequencies without positions: BM25 needs no more.
    builder.add_text_field("text", stored=False, tokenizer_name="raw", index_option="freq")
    return builder.build()


def _indexable(terms: Iterable[str]) -> list[str]:
    """``terms`` less those tantivy cannot hold (see :data:`_MAX_TERM_BYTES`)."""
    return [term for term in terms if len(term.encode("utf-8")) <= _MAX_TERM_BYTES]


def terms(text: str) -> list[str]:
    """The index terms of ``text``, in order, repeats kept."""
    return _indexable(analyze(text))


class LexicalIndex:
    """A tantivy BM25 index of ``(label, text)`` documents.

    Args:
        directory: Where the index lives (created or opened); ``None`` keeps it in memory.
        writable: Open a writer (the store's writer process, or an in-memory index); a
            read-only index sees the writer's commits after :meth:`reload`.
        create: Start an empty index in ``directory`` (see :meth:`rebuilt`); otherwise one must
            be there.

    Raises:
        ValueError, OSError: The directory holds no usable index, or it cannot be opened; the
            store then rebuilds it (writer) or derives one in memory (reader).
    """

    def __init__(self, directory: Path | None, *, writable: bool, create: bool = False) -> None:
        self.directory = directory
        self._schema = _schema()
        if directory is None:
            self._index = tantivy.Index(self._schema)
        elif create:
            directory.mkdir(parents=True)
            self._index = tantivy.Index(self._schema, path=str(directory), reuse=False)
        else:
            if not (directory / "meta.json").is_file():
                raise ValueError(f"{directory} holds no lexical index")
            self._index = tantivy.Index.open(str(directory))
        if self._index.schema != self._schema:
            raise ValueError(f"{directory} holds a lexical index of another schema")
        self._writer = (
            self._index.writer(heap_size=_WRITER_HEAP_BYTES, num_threads=1) if writable else None
        )
        self._index.reload()

    @classmethod
    def rebuilt(cls, directory: Path | None) -> LexicalIndex:
        """A new, empty, writable index in ``directory`` (whatever was there is removed), or in
        memory for ``None``."""
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        return cls(directory, writable=True, create=directory is not None)

    def apply(self, added: Sequence[tuple[int, str]], dead: Sequence[int], after: int) -> None:
        """Delete labels ``dead`` and every label past ``after``, add ``added``, commit.

        ``added`` holds ``(label, text)`` with labels past ``after``: deleting first makes a
        replay of a range the index already holds change nothing.
        """
        assert self._writer is not None, "read-only lexical index"
        query = tantivy.Query
        self._writer.delete_documents_by_query(
            query.range_query(
                self._schema, "label", tantivy.FieldType.Unsigned, after + 1, _U64_MAX
            )
        )
        for start in range(0, len(dead), _TERM_SET_MAX):
            part = [int(label) for label in dead[start : start + _TERM_SET_MAX]]
            self._writer.delete_documents_by_query(
                query.term_set_query(self._schema, "label", part)
            )
        for label, text in added:
            document = tantivy.Document()
            document.add_unsigned("label", int(label))
            tokens = [tantivy.Token(term, i, 0, 0) for i, term in enumerate(terms(text))]
            document.add_pre_tokenized_text("text", tantivy.PreTokenizedString("", tokens))
            self._writer.add_document(document)
        self._writer.commit()
        self._index.reload()

    def reload(self) -> None:
        """See the last commit (of this process's writer or another's)."""
        self._index.reload()

    @property
    def documents(self) -> int:
        """Documents in the last commit this index sees."""
        return int(self._index.searcher().num_docs)

    def search(
        self, text: str, k: int, allowed: np.ndarray | None = None
    ) -> tuple[list[int], list[float]]:
        """BM25 top-``k`` for free text: ``(labels, scores)``, best first.

        ``allowed`` (sorted unique labels) restricts the hits; scores stay the unfiltered ones
        (the whole index's statistics), so a filtered result is the unfiltered ranking cut to
        the allowed labels.
        """
        words = _indexable(query_terms(text))
        if not words or (allowed is not None and len(allowed) == 0):
            return [], []
        query = tantivy.Query
        occur = tantivy.Occur
        matched = query.boolean_query(
            [(occur.Should, query.term_query(self._schema, "text", word)) for word in words]
        )
        searcher = self._index.searcher()
        if allowed is None or len(allowed) <= _TERM_SET_MAX:
            if allowed is not None:
                labels = query.term_set_query(self._schema, "label", allowed.tolist())
                matched = query.boolean_query(
                    [(occur.Must, matched), (occur.Must, query.const_score_query(labels, 0.0))]
                )
            hits = searcher.search(matched, k, count=False).hits
            return _labels(searcher, hits).tolist(), [float(score) for score, _ in hits]
        # A wide filter: at least len(allowed) / documents of any top list passes it.
        depth = max(2 * k, int(2 * k * searcher.num_docs / len(allowed)))
        while True:
            hits = searcher.search(matched, depth, count=False).hits
            found = _labels(searcher, hits)
            keep = np.isin(found, allowed)
            if keep.sum() >= k or len(hits) < depth:
                kept = np.flatnonzero(keep)[:k]
                return found[kept].tolist(), [float(hits[i][0]) for i in kept]
            depth *= 4

    def close(self) -> None:
        """Let background merges finish and release the writer. Idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.wait_merging_threads()


def _labels(searcher: tantivy.Searcher, hits: list[tuple[float, tantivy.DocAddress]]) -> np.ndarray:
    """The labels of search hits (from the fast field: no stored document is read)."""
    return np.asarray(
        searcher.fast_field_values("label", [address for _, address in hits]), dtype=np.int64
    )
