"""The embedding cache: same inputs hit, any change misses, corrupt entries are re-encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbert_retrieval.encoding.cache import EmbeddingCache


def test_hits_only_for_the_same_texts_prefix_and_model(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    cache = EmbeddingCache(tmp_path)
    texts = ["first text", "second text"]
    vectors, hit = cache.encode(tiny_encoder, texts)
    assert not hit
    np.testing.assert_allclose(vectors, tiny_encoder.encode(texts), atol=1e-6)
    again, hit = cache.encode(tiny_encoder, texts)
    assert hit
    np.testing.assert_array_equal(again, vectors)
    assert not cache.encode(tiny_encoder, texts, prefix="query: ")[1]
    assert not cache.encode(tiny_encoder, [*texts[:1], "changed"])[1]
    assert not cache.encode(tiny_encoder, texts[::-1])[1]


def test_given_tokenization_is_used_and_corrupt_entries_are_rewritten(
    tmp_path: Path, tiny_encoder
) -> None:  # type: ignore[no-untyped-def]
    cache = EmbeddingCache(tmp_path)
    texts = ["a text"]
    tokenized = tiny_encoder.tokenize(texts, prefix="p: ")
    vectors, _ = cache.encode(tiny_encoder, texts, prefix="p: ", tokenized=tokenized)
    np.testing.assert_allclose(vectors, tiny_encoder.encode(texts, prefix="p: "), atol=1e-6)
    [entry] = list(tmp_path.glob("*.npy"))
    entry.write_bytes(b"not a numpy file")
    rewritten, hit = cache.encode(tiny_encoder, texts, prefix="p: ")
    assert not hit
    np.testing.assert_allclose(rewritten, vectors, atol=1e-6)
    assert cache.encode(tiny_encoder, texts, prefix="p: ")[1]
