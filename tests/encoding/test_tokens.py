"""The Rust-tokenizer helpers shared by the engine and the reranker."""

from __future__ import annotations

import numpy as np

from sbert_retrieval.encoding.tokens import pad_into, rust_tokenizer


def test_pad_into_scatters_rows_by_hand() -> None:
    flat = np.array([1, 2, 3, 4, 5, 6], dtype=np.int32)  # texts: [1 2 3] [4] [5 6]
    out = np.full((2, 3), -1, dtype=np.int32)
    pad_into(flat, np.array([4, 0]), np.array([2, 3]), out)  # rows: text 3, then text 1
    assert out.tolist() == [[5, 6, -1], [1, 2, 3]]


def test_rust_tokenizer_overrides_the_files_truncation_and_padding(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = tiny_encoder.tokenizer.backend_tokenizer
    tokenizer = rust_tokenizer(backend.to_str(), 8, "right")
    short, long = tokenizer.encode_batch_fast(["hi", "one two three four five six seven eight"])
    assert short.ids == tiny_encoder.tokenize(["hi"]).input_ids[0]  # no padding added
    assert len(long.ids) == 8 and long.ids[-1] == 102 and long.overflowing  # cut, [SEP] kept
