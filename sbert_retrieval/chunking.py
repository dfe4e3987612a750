"""Token-window chunking measured with the encoder's own tokenizer, keeping character offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sbert_retrieval.documents import Chunk, Document

__all__ = ["ChunkingConfig", "TokenChunker", "check_window"]

DEFAULT_OVERLAP = 32


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents are cut into windows.

    Attributes:
        chunk_tokens: Content tokens per window (special tokens and the passage prefix are not
            counted). ``None`` (default) uses everything the encoder keeps:
            ``max_seq_length`` minus special tokens minus the prefix.
        overlap: Tokens shared by consecutive windows (default 32); must be < the window, be it
            ``chunk_tokens`` or the one derived from the encoder (checked there, by
            :meth:`TokenChunker.for_encoder`).
        align_to_words: Move window edges back to word starts so no word is split across windows
            (default ``True``; a single word longer than a window is still cut).

    Raises:
        ValueError: ``chunk_tokens < 1``, ``overlap < 0``, or ``overlap >= chunk_tokens``.
    """

    chunk_tokens: int | None = None
    overlap: int = DEFAULT_OVERLAP
    align_to_words: bool = True

    def __post_init__(self) -> None:
        if self.chunk_tokens is not None:
            check_window(self.chunk_tokens, self.overlap)
        elif self.overlap < 0:
            raise ValueError(f"overlap must be >= 0 tokens, got {self.overlap}")


def check_window(chunk_tokens: int, overlap: int, *, derived: str = "") -> None:
    """Raise ValueError unless ``chunk_tokens >= 1`` and ``0 <= overlap < chunk_tokens``.

    An overlap as large as the window would advance each window by one token (or none), so it
    is refused, with what to change.

    Args:
        chunk_tokens: Content tokens per window.
        overlap: Tokens shared by consecutive windows.
        derived: How ``chunk_tokens`` was derived from the encoder, when it was (it cannot be
            raised then, so only lowering the overlap is suggested).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if 0 <= overlap < chunk_tokens:
        return
    if overlap < 0:
        fix = "use an overlap >= 0"
    elif derived:
        fix = f"lower the overlap to at most {chunk_tokens - 1}"
    else:
        fix = (
            f"lower the overlap to at most {chunk_tokens - 1} or raise chunk_tokens above {overlap}"
        )
    window = f"chunk_tokens={chunk_tokens}" + (f" ({derived})" if derived else "")
    raise ValueError(
        f"overlap must be in [0, chunk_tokens={chunk_tokens}), got overlap={overlap} for"
        f" {window}: {fix}"
    )


class TokenChunker:
    """Cuts documents into overlapping token windows that each fit the encoder unchanged.

    Args:
        tokenizer: A transformers *fast* tokenizer (offsets are required). Give the chunker its
            own instance: fast tokenizers are not safe to share across threads.
        chunk_tokens: Content tokens per window, ≥ 1.
        overlap: Tokens shared by consecutive windows, 0 ≤ overlap < chunk_tokens.
        align_to_words: See :class:`ChunkingConfig`.

    Thread safety: not thread-safe (the tokenizer is not); use one chunker per thread.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        chunk_tokens: int,
        overlap: int = DEFAULT_OVERLAP,
        align_to_words: bool = True,
    ) -> None:
        check_window(chunk_tokens, overlap)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("TokenChunker needs a fast tokenizer (one with a tokenizer.json)")
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.align_to_words = align_to_words

    @classmethod
    def for_encoder(
        cls, encoder: Any, config: ChunkingConfig | None = None, *, prefix: str = ""
    ) -> TokenChunker:
        """A chunker whose windows fit ``encoder`` (a :class:`~sbert_retrieval.encoding.BiEncoder`).

        Loads a private copy of the encoder's tokenizer, so chunking and encoding can run in
        different threads.

        Raises:
            ValueError: ``config.chunk_tokens`` exceeds what the encoder keeps, or the overlap
                is not below the window (``config.chunk_tokens``, else the encoder's budget).
        """
        from transformers import AutoTokenizer

        config = config or ChunkingConfig()
        tokenizer = AutoTokenizer.from_pretrained(str(encoder.path))
        prefix_tokens = (
            len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
        )
        budget = encoder.max_seq_length - encoder.special_tokens_count - prefix_tokens
        chunk_tokens = budget if config.chunk_tokens is None else config.chunk_tokens
        if chunk_tokens > budget:
            raise ValueError(
                f"chunk_tokens={chunk_tokens} exceeds the encoder's budget of {budget} tokens"
                f" (max_seq_length {encoder.max_seq_length}"
                f" - {encoder.special_tokens_count} special"
                f" - {prefix_tokens} prefix); choose chunk_tokens <= {budget}"
            )
        if config.chunk_tokens is None:
            check_window(
                chunk_tokens,
                config.overlap,
                derived=(
                    f"the encoder's budget: max_seq_length {encoder.max_seq_length}"
                    f" - {encoder.special_tokens_count} special - {prefix_tokens} prefix"
                ),
            )
        return cls(
            tokenizer,
            chunk_tokens=chunk_tokens,
            overlap=config.overlap,
            align_to_words=config.align_to_words,
        )

    def chunk(self, document: Document) -> list[Chunk]:
        """Windows of one document; an empty list when it has no tokens."""
        return self.chunk_many([document])[0]

    def chunk_many(self, documents: Sequence[Document]) -> list[list[Chunk]]:
        """Windows of each document, tokenized in one batch (the tokenizer runs in parallel)."""
        if not documents:
            return []
        encoded = self.tokenizer(
            [doc.text for doc in documents],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,
        )
        return [
            self._windows(doc, enc.offsets, enc.word_ids)
            for doc, enc in zip(documents, encoded.encodings, strict=True)
        ]

    def _windows(
        self, document: Document, offsets: list[tuple[int, int]], word_ids: list[int | None]
    ) -> list[Chunk]:
        total = len(offsets)
        chunks: list[Chunk] = []
        start = previous_end = 0
        while start < total:
            end = min(start + self.chunk_tokens, total)
            if end < total and self.align_to_words:
                # Never back off to (or before) the previous window's end: each window adds tokens.
                end = self._word_start_at_or_before(
                    word_ids, end, floor=max(start, previous_end) + 1
                )
            first_char, last_char = offsets[start][0], offsets[end - 1][1]
            chunks.append(
                Chunk(
                    doc_id=document.id,
                    index=len(chunks),
                    text=document.text[first_char:last_char],
                    start=first_char,
                    end=last_char,
                    token_count=end - start,
                    metadata=document.metadata,
                )
            )
            if end >= total:
                break
            next_start = max(end - self.overlap, start + 1)
            if self.align_to_words:
                next_start = self._align_start(word_ids, next_start, floor=start + 1, end=end)
            previous_end = end
            start = next_start
        return chunks

    @classmethod
    def _align_start(
        cls, word_ids: list[int | None], position: int, *, floor: int, end: int
    ) -> int:
        """A word start for the next window: back from ``position``, else forward.

        Going forward shortens the overlap below the configured one, which is the price of
        never splitting a word that fits in a window.
        """
        aligned = cls._word_start_at_or_before(word_ids, position, floor=floor)
        if word_ids[aligned] is None or word_ids[aligned] != word_ids[aligned - 1]:
            return aligned
        forward = aligned
        while forward < end and word_ids[forward] == word_ids[forward - 1]:
            forward += 1
        # ``forward == end``: the word ends exactly where this window does, so the next window
        # may start there (no overlap, no split); a word running past ``end`` keeps the cut.
        if forward < end or word_ids[forward] != word_ids[forward - 1]:
            return forward
        return aligned

    @staticmethod
    def _word_start_at_or_before(word_ids: list[int | None], position: int, *, floor: int) -> int:
        """The nearest token index ≤ ``position`` that starts a word, never below ``floor``."""
        candidate = position
        while (
            candidate > floor
            and word_ids[candidate] is not None
            and word_ids[candidate] == word_ids[candidate - 1]
        ):
            candidate -= 1
        # A word longer than the window: cut inside it rather than make no progress.
        return (
            candidate
            if candidate > floor or word_ids[candidate] != word_ids[candidate - 1]
            else position
        )
