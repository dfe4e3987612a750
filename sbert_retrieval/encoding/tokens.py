"""Tokenization shared by the encoder engine and the reranker: the Rust tokenizer, used directly.

The transformers wrapper re-configures the tokenizer and builds Python objects on every call;
at GPU rates that per-call work costs more than the tokenization itself. These helpers hold one
configured Rust tokenizer and move ids around as flat numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pad_into", "rust_tokenizer", "tokenizer_settings"]


def tokenizer_settings(tokenizer: Any, max_length: int) -> tuple[str, int, str]:
    """What :func:`rust_tokenizer` takes, read from a transformers fast tokenizer once: its
    ``tokenizer.json`` text, ``max_length`` and its truncation side (the tuple pickles, so the
    engine's tokenizer workers get it as is)."""
    direction = str(getattr(tokenizer, "truncation_side", "right"))
    return tokenizer.backend_tokenizer.to_str(), max_length, direction


def rust_tokenizer(tokenizer_json: str, max_length: int, direction: str) -> Any:
    """A private Rust tokenizer from ``tokenizer.json`` text: truncating, never padding.

    Thread safety: configured once here and never mutated afterwards, so it may be shared.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer_json)
    # tokenizer.json files often carry their own truncation and padding (all-MiniLM-L6-v2's:
    # 128 tokens, padded); the encoder's max_seq_length wins, and padding happens in collation.
    backend.no_padding()
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=direction)
    return backend


def pad_into(flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """Scatter each text's ids into the rows of ``out`` (already filled with the pad id).

    Args:
        flat: Every text's ids back to back.
        offsets: Where each row's text starts in ``flat``.
        lengths: Each row's length; ``out`` is at least ``lengths.max()`` wide.
        out: ``(len(lengths), width)``, written in place.
    """
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = flat[np.repeat(offsets, lengths) + cols]
