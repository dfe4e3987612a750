"""The cross-encoder reranker against sentence-transformers' CrossEncoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sbert_retrieval.reranking import CrossEncoderReranker
from tests.conftest import copy_minilm_tokenizer, tiny_bert_config

PAIRS = [
    ("what do cats eat?", "Cats eat mice, birds and commercial cat food."),
    ("what do cats eat?", "The stock market fell on Monday."),
    ("", "An empty query."),
    ("long passage", "word " * 600),  # beyond 128 tokens: truncated
    ("unicode", "naïve café 中文 🚀"),
]


def build_cross_encoder(target: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A tiny random BERT sequence classifier with MiniLM's tokenizer."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_bert_config(max_position_embeddings=512, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(target)
    copy_minilm_tokenizer(target)
    return target


@pytest.mark.parametrize("num_labels", [1, 3])
def test_scores_equal_sentence_transformers(tmp_path: Path, num_labels: int) -> None:
    from sentence_transformers import CrossEncoder

    model_dir = build_cross_encoder(tmp_path / "ce", num_labels)
    ours = CrossEncoderReranker(model_dir, device="cpu", max_length=128, batch_size=2)
    reference = CrossEncoder(str(model_dir), device="cpu", max_length=128)
    expected = reference.predict(PAIRS, batch_size=3)
    got = ours.predict(PAIRS)
    if num_labels == 1:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    else:
        np.testing.assert_allclose(got, np.asarray(expected)[:, -1], atol=1e-5)
    assert ours.truncated == 1


def test_score_follows_the_reranker_protocol(tmp_path: Path) -> None:
    reranker = CrossEncoderReranker(build_cross_encoder(tmp_path / "ce"), device="cpu")
    scores = reranker.score("q", ["a", "b", "c"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert reranker.predict([]).shape == (0,)


def test_bad_settings_list_the_valid_choices(tmp_path: Path) -> None:
    model_dir = build_cross_encoder(tmp_path / "ce", num_labels=3)
    with pytest.raises(ValueError, match="valid: auto, sigmoid"):
        CrossEncoderReranker(model_dir, activation="relu")
    with pytest.raises(ValueError, match="valid: label_0"):
        CrossEncoderReranker(model_dir, label="relevant")
    assert CrossEncoderReranker(model_dir, label="LABEL_0").label == 0


def test_max_length_never_exceeds_the_position_table(tmp_path: Path) -> None:
    import torch
    from transformers import BertForSequenceClassification

    from tests.conftest import copy_minilm_tokenizer, tiny_bert_config

    torch.manual_seed(0)
    target = tmp_path / "short"
    BertForSequenceClassification(
        tiny_bert_config(max_position_embeddings=64, num_labels=1)
    ).save_pretrained(target)
    copy_minilm_tokenizer(target)  # its tokenizer says 512
    reranker = CrossEncoderReranker(target, device="cpu")
    assert reranker.max_length == 64
    assert len(reranker.score("q", ["word " * 300])) == 1


def test_the_shipped_reranker_loads_by_name_and_ranks_the_answer_first() -> None:
    from sentence_transformers import CrossEncoder

    from sbert_retrieval.models import DEFAULT_RERANKER, SHIPPED_MODELS

    reranker = CrossEncoderReranker("default", device="cpu", dtype="float32")
    assert reranker.path == SHIPPED_MODELS / DEFAULT_RERANKER.rsplit("/", 1)[1]
    assert CrossEncoderReranker(DEFAULT_RERANKER, device="cpu").path == reranker.path
    # The weight chosen on dev travels with the model.
    assert 0 < reranker.rerank_weight <= 1
    assert CrossEncoderReranker("default", device="cpu", rerank_weight=1.0).rerank_weight == 1
    query = "what is the capital of france"
    passages = [
        "Paris is the capital and most populous city of France.",
        "The capital of Germany is Berlin.",
        "France is famous for its cheese and wine.",
        "Bananas are rich in potassium.",
    ]
    ours = reranker.predict([(query, p) for p in passages])
    assert int(np.argmax(ours)) == 0 and int(np.argmin(ours)) == 3
    # The weights are stored in float16; both sides compute in float32.
    reference = CrossEncoder(
        str(reranker.path), device="cpu", model_kwargs={"torch_dtype": torch.float32}
    ).predict([(query, p) for p in passages])
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"rerank_weight must be in \(0, 1\]"):
        CrossEncoderReranker("default", device="cpu", rerank_weight=0.0)
