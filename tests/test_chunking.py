"""TokenChunker against MiniLM's real tokenizer (via the tiny encoder) and real SciFact text.

The invariants every chunking must satisfy (checked by :func:`check_chunks`):

* offsets: ``doc.text[c.start:c.end] == c.text``; indices ``0..n-1``; metadata carried;
* size: ``1 <= token_count <= chunk_tokens``;
* coverage: the token windows are contiguous-or-overlapping and cover tokens ``0..total``;
* progress: window starts strictly increase, ends never decrease;
* overlap: ``prev_end - next_start >= min(overlap, prev_window_len - 1)``, or else (word
  alignment only) the previous window began with a word that the next window skips whole;
* word alignment: a window starts inside a word only when the previous window started inside
  that same word (a word longer than the window), and ends inside a word only when that word
  began at or before the window's start (or the previous window's end).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sbert_retrieval.chunking import DEFAULT_OVERLAP, ChunkingConfig, TokenChunker
from sbert_retrieval.documents import Chunk, Document, load_beir_corpus

# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def default_chunker(tiny_encoder: Any) -> TokenChunker:
    """The encoder's default budget (62 = 64 - [CLS] - [SEP]), default overlap."""
    return TokenChunker.for_encoder(tiny_encoder)


@pytest.fixture(scope="module")
def scifact_docs(shared_data: Path) -> list[Document]:
    records = itertools.islice(load_beir_corpus(shared_data / "scifact"), 150)
    docs = [r for r in records if isinstance(r, Document)]
    assert len(docs) == 150
    return docs


def _word_start(word_ids: list[int | None], i: int) -> int:
    while i > 0 and word_ids[i] == word_ids[i - 1]:
        i -= 1
    return i


def check_chunks(
    tokenizer: Any,
    doc: Document,
    chunks: list[Chunk],
    *,
    chunk_tokens: int,
    overlap: int,
    align: bool = True,
) -> list[tuple[int, int]]:
    """Assert the invariants of the module docstring; return each chunk's token span."""
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    offsets: list[tuple[int, int]] = enc["offset_mapping"]
    word_ids: list[int | None] = enc.word_ids()
    total = len(offsets)
    if total == 0:
        assert chunks == []
        return []
    assert chunks, "a text with tokens must give at least one chunk"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    spans: list[tuple[int, int]] = []
    previous = -1
    for c in chunks:
        assert c.doc_id == doc.id
        assert c.metadata == doc.metadata
        assert 0 <= c.start < c.end <= len(doc.text)
        assert doc.text[c.start : c.end] == c.text
        assert 1 <= c.token_count <= chunk_tokens
        # Find the token span [i, i + token_count) whose character range is the chunk's.
        first = next(
            (
                i
                for i in range(previous + 1, total - c.token_count + 1)
                if offsets[i][0] == c.start and offsets[i + c.token_count - 1][1] == c.end
            ),
            None,
        )
        assert first is not None, f"chunk {c.index} does not match a token window"
        spans.append((first, first + c.token_count))
        previous = first
    # coverage: starts at the first token, ends at the last, no gap in between
    assert spans[0][0] == 0
    assert spans[-1][1] == total
    assert chunks[-1].end == offsets[-1][1]
    prev_end = 0
    for k, ((s0, e0), (s1, e1)) in enumerate(itertools.pairwise(spans)):
        assert s0 < s1 <= e0, f"windows {k} and {k + 1} leave a gap or make no progress"
        assert e1 >= e0
        if e0 - s1 < min(overlap, e0 - s0 - 1):
            # Only allowed when the overlap point fell inside the word that began the previous
            # window, and the next window skipped to the following word start instead.
            assert align, "overlap smaller than configured"
            assert len(set(word_ids[s0:s1])) == 1 and word_ids[s1] != word_ids[s1 - 1], (
                "overlap smaller than configured"
            )
        if not align:
            assert e0 - s0 == chunk_tokens
            assert s1 - s0 == chunk_tokens - overlap
        else:
            if word_ids[s1] == word_ids[s1 - 1]:  # starts inside a word ...
                assert word_ids[s0] == word_ids[s1], "window starts mid-word without need"
            if word_ids[e0] == word_ids[e0 - 1]:  # ... ends inside a word
                assert _word_start(word_ids, e0) <= max(s0, prev_end), "window ends mid-word"
        prev_end = e0
    return spans


def _first_pieces(tokenizer: Any, doc: Document, spans: list[tuple[int, int]]) -> list[str]:
    """The document's word piece at the start of each window (``##...`` = inside a word)."""
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    )
    return [tokens[s] for s, _ in spans]


def _starts_inside_a_word(tokenizer: Any, doc: Document, spans: list[tuple[int, int]]) -> bool:
    return any(piece.startswith("##") for piece in _first_pieces(tokenizer, doc, spans))


def _split_words(
    tokenizer: Any, doc: Document, spans: list[tuple[int, int]], chunk_tokens: int
) -> list[str]:
    """Windows starting with a ``##`` piece of a word that would fit in one window."""
    enc = tokenizer(doc.text, add_special_tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    word_ids = enc.word_ids()
    bad = []
    for k, (s, _) in enumerate(spans):
        if tokens[s].startswith("##"):
            pieces = [t for t, w in zip(tokens, word_ids, strict=True) if w == word_ids[s]]
            if len(pieces) <= chunk_tokens:
                bad.append(f"window {k} starts inside {pieces}")
    return bad


# --------------------------------------------------------------------------------------------
# real text
# --------------------------------------------------------------------------------------------


def test_default_budget_and_overlap(tiny_encoder: Any, default_chunker: TokenChunker) -> None:
    assert tiny_encoder.max_seq_length == 64 and tiny_encoder.special_tokens_count == 2
    assert default_chunker.chunk_tokens == 62
    assert default_chunker.overlap == DEFAULT_OVERLAP == 32
    assert default_chunker.align_to_words is True
    # a private tokenizer, not the encoder's (thread safety)
    assert default_chunker.tokenizer is not tiny_encoder.tokenizer


def test_scifact_default_budget(
    default_chunker: TokenChunker, tiny_encoder: Any, scifact_docs: list[Document]
) -> None:
    per_doc = default_chunker.chunk_many(scifact_docs)
    assert len(per_doc) == len(scifact_docs)
    tokenizer = default_chunker.tokenizer
    all_chunks: list[Chunk] = []
    for doc, chunks in zip(scifact_docs, per_doc, strict=True):
        assert chunks == default_chunker.chunk(doc)  # batch and single agree
        spans = check_chunks(tokenizer, doc, chunks, chunk_tokens=62, overlap=32)
        for (_, e0), (s1, _) in itertools.pairwise(spans):
            assert e0 - s1 >= 32  # real text: the full configured overlap, or more
        assert not _starts_inside_a_word(tokenizer, doc, spans)
        all_chunks.extend(chunks)
    assert sum(len(c) > 1 for c in per_doc) > 100  # most abstracts need several windows
    texts = [c.text for c in all_chunks]
    # every window fits the encoder unchanged ...
    assert tiny_encoder.tokenize(texts).truncated == 0
    # ... and re-tokenizes to exactly its own tokens (edges are word boundaries)
    input_ids = tiny_encoder.tokenize(texts).input_ids
    assert [len(ids) - 2 for ids in input_ids] == [c.token_count for c in all_chunks]


@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(1, 0), (7, 0), (16, 0), (30, 3)])
def test_scifact_small_windows(
    tiny_encoder: Any, scifact_docs: list[Document], chunk_tokens: int, overlap: int
) -> None:
    chunker = TokenChunker.for_encoder(
        tiny_encoder, ChunkingConfig(chunk_tokens=chunk_tokens, overlap=overlap)
    )
    docs = scifact_docs[:20]
    for doc, chunks in zip(docs, chunker.chunk_many(docs), strict=True):
        spans = check_chunks(
            chunker.tokenizer, doc, chunks, chunk_tokens=chunk_tokens, overlap=overlap
        )
        assert _split_words(chunker.tokenizer, doc, spans, chunk_tokens) == []


@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(16, 5), (40, 39)])
def test_scifact_high_overlap_never_splits_short_words(
    tiny_encoder: Any, scifact_docs: list[Document], chunk_tokens: int, overlap: int
) -> None:
    chunker = TokenChunker.for_encoder(
        tiny_encoder, ChunkingConfig(chunk_tokens=chunk_tokens, overlap=overlap)
    )
    docs = scifact_docs[:20]
    for doc, chunks in zip(docs, chunker.chunk_many(docs), strict=True):
        spans = check_chunks(
            chunker.tokenizer, doc, chunks, chunk_tokens=chunk_tokens, overlap=overlap
        )
        assert _split_words(chunker.tokenizer, doc, spans, chunk_tokens) == [], doc.id


def test_without_word_alignment_windows_are_exact(
    tiny_encoder: Any, scifact_docs: list[Document]
) -> None:
    chunker = TokenChunker.for_encoder(
        tiny_encoder, ChunkingConfig(chunk_tokens=10, overlap=3, align_to_words=False)
    )
    doc = scifact_docs[0]
    chunks = chunker.chunk(doc)
    spans = check_chunks(chunker.tokenizer, doc, chunks, chunk_tokens=10, overlap=3, align=False)
    assert [s for s, _ in spans] == list(range(0, 7 * len(spans), 7))


def test_metadata_and_ids_carried(default_chunker: TokenChunker) -> None:
    metadata = {"title": "T", "lang": "en", "nested": {"a": [1, 2]}}
    doc = Document("doc-1", "word " * 300, metadata)
    chunks = default_chunker.chunk(doc)
    assert len(chunks) > 3
    assert all(c.doc_id == "doc-1" and c.metadata == metadata for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_short_text_is_one_chunk(default_chunker: TokenChunker) -> None:
    doc = Document("d", "  Hello, world!  ")
    (chunk,) = default_chunker.chunk(doc)
    assert (chunk.start, chunk.end, chunk.text) == (2, 15, "Hello, world!")
    assert chunk.token_count == 4
    assert chunk.index == 0


@pytest.mark.parametrize(
    "text", ["", " ", " \n\t\r ", "\x00\x07\x7f", "\u200b\ufeff\u00ad", "\u0301"]
)
def test_text_without_tokens_gives_no_chunks(default_chunker: TokenChunker, text: str) -> None:
    assert default_chunker.chunk(Document("empty", text)) == []


def test_chunk_many_mixed_and_empty(default_chunker: TokenChunker) -> None:
    assert default_chunker.chunk_many([]) == []
    docs = [Document("a", "one two"), Document("b", "   "), Document("c", "three " * 100)]
    per_doc = default_chunker.chunk_many(docs)
    assert [len(c) for c in per_doc][:2] == [1, 0]
    assert len(per_doc[2]) > 1
    assert [c.doc_id for c in per_doc[2]] == ["c"] * len(per_doc[2])


def test_one_megabyte_document_is_chunked_in_full(
    default_chunker: TokenChunker, scifact_docs: list[Document]
) -> None:
    body = "\n\n".join(d.text for d in scifact_docs)
    text = (body * (1_000_000 // len(body) + 1))[:1_000_000].rstrip() + " final-word.  \n "
    assert len(text) >= 1_000_000
    doc = Document("big", text)
    chunks = default_chunker.chunk(doc)
    check_chunks(default_chunker.tokenizer, doc, chunks, chunk_tokens=62, overlap=32)
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text.rstrip())
    assert chunks[-1].text.endswith("final-word.")


# --------------------------------------------------------------------------------------------
# words longer than a window
# --------------------------------------------------------------------------------------------


def test_500_char_word_is_one_unknown_token(default_chunker: TokenChunker) -> None:
    # WordPiece maps any word over 100 characters to a single [UNK]: one token, one chunk.
    word = "a" * 500
    doc = Document("w", f"before {word} after")
    chunks = default_chunker.chunk(doc)
    check_chunks(default_chunker.tokenizer, doc, chunks, chunk_tokens=62, overlap=32)
    assert [(c.text, c.token_count) for c in chunks] == [(doc.text, 3)]
    small = TokenChunker(default_chunker.tokenizer, chunk_tokens=1, overlap=0)
    assert [c.text for c in small.chunk(doc)] == ["before", word, "after"]


def test_word_longer_than_the_window_is_cut_inside(tokenizer: Any) -> None:
    word = "xqzjvkwpyr" * 9  # 90 characters, 81 word pieces
    assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 81
    doc = Document("w", f"a b {word} c d")
    for chunk_tokens, overlap in [(10, 0), (10, 3), (10, 9), (62, 32), (2, 1)]:
        chunker = TokenChunker(tokenizer, chunk_tokens=chunk_tokens, overlap=overlap)
        chunks = chunker.chunk(doc)
        spans = check_chunks(tokenizer, doc, chunks, chunk_tokens=chunk_tokens, overlap=overlap)
        # the long word is cut, so some window starts with a continuation piece
        assert _starts_inside_a_word(tokenizer, doc, spans)
        assert chunks[0].text.startswith("a b")


def test_long_word_at_a_window_edge_is_kept_whole_when_it_fits(tokenizer: Any) -> None:
    doc = Document("w", "aa bb cc dd ee unbelievably ff gg")
    chunker = TokenChunker(tokenizer, chunk_tokens=6, overlap=0)
    chunks = chunker.chunk(doc)
    spans = check_chunks(tokenizer, doc, chunks, chunk_tokens=6, overlap=0)
    assert len(tokenizer("unbelievably", add_special_tokens=False)["input_ids"]) > 1
    # the multi-piece word would straddle the first window's edge; the window ends before it
    assert [c.text for c in chunks][:2] == ["aa bb cc dd ee", "unbelievably ff"]
    assert not _starts_inside_a_word(tokenizer, doc, spans)


def test_every_window_adds_new_tokens(tokenizer: Any) -> None:
    doc = Document("w", "a b c d e f g h i j " + "xqzjvkwpyr" * 3 + " k l m")
    chunker = TokenChunker(tokenizer, chunk_tokens=10, overlap=5)
    chunks = chunker.chunk(doc)
    spans = check_chunks(tokenizer, doc, chunks, chunk_tokens=10, overlap=5)
    for (_, e0), (s1, e1) in itertools.pairwise(spans):
        assert e1 > e0, f"window {spans.index((s1, e1))} adds no new token: {spans}"
        assert e0 - s1 >= 5


# --------------------------------------------------------------------------------------------
# validation and budget
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap", "message"),
    [
        (0, 0, "chunk_tokens must be >= 1"),
        (-3, 0, "chunk_tokens must be >= 1"),
        (5, 5, "overlap must be in [0, chunk_tokens=5)"),
        (5, 6, "overlap must be in"),
        (5, -1, "overlap must be in"),
        (1, 1, "overlap must be in"),
    ],
)
def test_constructor_validation(
    tokenizer: Any, chunk_tokens: int, overlap: int, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TokenChunker(tokenizer, chunk_tokens=chunk_tokens, overlap=overlap)


def test_tokenizer_without_offsets_is_rejected() -> None:
    # transformers 5 has only fast (tokenizers-backed) BERT tokenizers; any object that does not
    # say ``is_fast`` stands for a slow one.
    with pytest.raises(ValueError, match="fast tokenizer"):
        TokenChunker(object(), chunk_tokens=10, overlap=0)


def test_for_encoder_rejects_chunk_tokens_over_budget(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match=r"budget of 62 tokens") as info:
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=63))
    assert "max_seq_length 64" in str(info.value)
    assert "chunk_tokens <= 62" in str(info.value)
    # exactly the budget is fine
    assert (
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=62)).chunk_tokens == 62
    )


def test_for_encoder_negative_settings_raise(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=-1))
    with pytest.raises(ValueError, match="overlap must be in"):
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=10, overlap=-1))


def test_for_encoder_rejects_zero_chunk_tokens(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=0))


@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(8, 8), (8, 9), (4, DEFAULT_OVERLAP)])
def test_config_rejects_an_overlap_not_below_chunk_tokens(chunk_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError) as info:
        ChunkingConfig(chunk_tokens=chunk_tokens, overlap=overlap)
    message = str(info.value)
    assert f"got overlap={overlap} for chunk_tokens={chunk_tokens}" in message
    assert f"lower the overlap to at most {chunk_tokens - 1}" in message
    assert f"or raise chunk_tokens above {overlap}" in message


def test_config_accepts_the_largest_overlap_below_chunk_tokens(tiny_encoder: Any) -> None:
    chunker = TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=8, overlap=7))
    assert (chunker.chunk_tokens, chunker.overlap) == (8, 7)
    chunks = chunker.chunk(Document("d", "one two three four five six seven eight nine ten"))
    assert [c.token_count for c in chunks] == [8, 8, 8]  # a stride of one token, as asked


def test_for_encoder_rejects_an_overlap_not_below_the_derived_window(tiny_encoder: Any) -> None:
    # chunk_tokens=None: the window is the encoder's budget, 64 - 2 special = 62 tokens.
    with pytest.raises(ValueError) as info:
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(overlap=62))
    message = str(info.value)
    assert "got overlap=62 for chunk_tokens=62" in message
    assert "max_seq_length 64 - 2 special - 0 prefix" in message
    assert "lower the overlap to at most 61" in message
    assert "raise chunk_tokens" not in message  # the budget cannot grow
    # A passage prefix shrinks the derived window, so the check must see it: 62 - 2 = 60.
    with pytest.raises(ValueError, match=r"got overlap=60 for chunk_tokens=60 .*2 prefix"):
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(overlap=60), prefix="passage: ")
    assert TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(overlap=61)).overlap == 61


def test_ingestion_config_surfaces_the_overlap_error(tiny_encoder: Any) -> None:
    from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
    from sbert_retrieval.stores import ExactStore

    with (
        ExactStore(None, tiny_encoder.spec()) as store,
        pytest.raises(ValueError, match="lower the overlap to at most 61"),
    ):
        IngestionPipeline(tiny_encoder, store, IngestConfig(chunking=ChunkingConfig(overlap=100)))


def test_prefix_reduces_the_budget(tiny_encoder: Any, scifact_docs: list[Document]) -> None:
    prefix = "passage: "
    plain = TokenChunker.for_encoder(tiny_encoder)
    n_prefix = len(plain.tokenizer(prefix, add_special_tokens=False)["input_ids"])
    assert n_prefix == 2
    chunker = TokenChunker.for_encoder(tiny_encoder, prefix=prefix)
    assert chunker.chunk_tokens == 62 - n_prefix
    with pytest.raises(ValueError, match=f"budget of {62 - n_prefix} tokens") as info:
        TokenChunker.for_encoder(tiny_encoder, ChunkingConfig(chunk_tokens=62), prefix=prefix)
    assert f"{n_prefix} prefix" in str(info.value)
    texts = [c.text for doc in scifact_docs[:30] for c in chunker.chunk(doc)]
    assert tiny_encoder.tokenize(texts, prefix=prefix).truncated == 0
    # the same windows without the prefix budget would be truncated with the prefix
    full = [c.text for doc in scifact_docs[:30] for c in plain.chunk(doc)]
    assert tiny_encoder.tokenize(full, prefix=prefix).truncated > 0


# --------------------------------------------------------------------------------------------
# property test
# --------------------------------------------------------------------------------------------

_SPECIAL = [
    "\u0301",  # combining acute
    "\u0308",  # combining diaeresis
    "e\u0301",
    "😀",
    "👍🏽",
    "👩\u200d💻",  # ZWJ sequence
    "\u200b",
    "\ufeff",
    "\x00",
    "\x07",
    "\x1b",
    "\t",
    "\n",
    "\r\n",
    "\u2028",
    "漢字",
    "İ",
    "ß",
    "ﬁ",
    "Ω",
    "##",
    "#",
    "-",
    "'",
    "...",
    "٣",
    "ש",
    " ",
    "  ",
]
_WORDS = ["the", "unbelievably", "retrieval", "xqzjvkwpyr", "1234567", "a", "naïve", "co-op"]

_texts = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.one_of(st.sampled_from(_SPECIAL), st.sampled_from(_WORDS), st.characters()),
        max_size=120,
    ).map("".join),
    st.lists(st.sampled_from(_WORDS), max_size=80).map(" ".join),
)


@st.composite
def _windows(draw: st.DrawFn) -> tuple[int, int]:
    chunk_tokens = draw(st.integers(2, 40))
    overlap = draw(st.integers(0, chunk_tokens - 1))
    return chunk_tokens, overlap


@settings(max_examples=60, deadline=None)
@given(text=_texts, window=_windows(), align=st.booleans())
@example(text="xqzjvkwpyr" * 9, window=(2, 1), align=True)
@example(text="e\u0301" * 50 + " 👍🏽" * 20, window=(3, 2), align=True)
@example(text="\x00 \u200b \u0301", window=(2, 0), align=False)
def test_chunking_invariants_property(
    tokenizer: Any, text: str, window: tuple[int, int], align: bool
) -> None:
    chunk_tokens, overlap = window
    chunker = TokenChunker(
        tokenizer, chunk_tokens=chunk_tokens, overlap=overlap, align_to_words=align
    )
    doc = Document("p", text, {"k": "v"})
    chunks = chunker.chunk(doc)
    check_chunks(tokenizer, doc, chunks, chunk_tokens=chunk_tokens, overlap=overlap, align=align)
