"""Padding-free forward passes against transformers' padded ones: same states, same vectors,
same logits; used where they apply, and only there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding import BiEncoder, encoder_model
from sbert_retrieval.encoding.packed import (
    PACKED_ENV,
    packable,
    packable_classifier,
    packed_logits,
    packed_states,
    packs,
    padding_fraction,
)
from tests.conftest import tiny_bert_config


def _bert(dtype: torch.dtype = torch.float32, **overrides: Any) -> Any:
    from transformers import BertModel

    torch.manual_seed(0)
    model = BertModel(tiny_bert_config(**overrides))
    return model.to(dtype).eval()


def _batch(lengths: list[int], width: int, *, left: bool = False) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(len(lengths))
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        span = slice(width - length, width) if left else slice(0, length)
        ids[row, span] = torch.randint(5, 30_000, (length,), generator=generator)
        mask[row, span] = 1
        # A pair: the second half of each text is segment B.
        types[row, span] = (torch.arange(length) >= length // 2).long()
    return ids, mask, types


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_packed_states_equal_the_padded_forward(left: bool) -> None:
    model = _bert()
    ids, mask, types = _batch([1, 7, 23, 40, 40, 12], 40, left=left)
    with torch.inference_mode():
        padded = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        packed = packed_states(model, ids, mask, types)
    real = mask.bool()
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed[real], padded[real], atol=1e-5, rtol=1e-5)
    assert not packed[~real].any()  # zeros at the padding, which pooling ignores


def test_packed_states_in_bfloat16_stay_close() -> None:
    model = _bert(torch.bfloat16)
    ids, mask, _ = _batch([3, 18, 31], 31)
    with torch.inference_mode():
        padded = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        packed = packed_states(model, ids, mask).float()
    real = mask.bool()
    cosine = torch.nn.functional.cosine_similarity(packed[real], padded[real], dim=-1)
    assert float(cosine.min()) > 0.999


@pytest.mark.parametrize("lengths", [[9, 30, 4, 17], [30, 30], [1]], ids=["mixed", "full", "one"])
def test_packed_logits_equal_the_classifier(lengths: list[int]) -> None:
    """Padding-free, and the last layer for the pooled first token only: same logits."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2)).eval()
    assert packable_classifier(model)
    ids, mask, types = _batch(lengths, max(lengths))
    with torch.inference_mode():
        padded = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        packed = packed_logits(model, ids, mask, types)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)


def test_packed_logits_refuse_left_padding() -> None:
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_bert_config(num_labels=1)).eval()
    ids, mask, types = _batch([3, 8], 8, left=True)
    with pytest.raises(ValueError, match="right padding"):
        packed_logits(model, ids, mask, types)


def test_only_the_models_it_was_written_for_are_packed() -> None:
    from transformers import BertForSequenceClassification, MPNetConfig, MPNetModel

    from tests.conftest import tiny_transformer_settings

    assert packable(_bert())
    assert not packable(_bert(is_decoder=True))
    assert not packable(_bert(chunk_size_feed_forward=4))
    assert not packable(MPNetModel(MPNetConfig(**tiny_transformer_settings())))
    assert not packable(BertForSequenceClassification(tiny_bert_config()))
    assert not packable_classifier(_bert())


def test_a_row_without_tokens_is_refused() -> None:
    ids, mask, _ = _batch([4, 4], 4)
    mask[1] = 0
    with pytest.raises(ValueError, match="at least one real token"):
        packed_states(_bert(), ids, mask)


def test_padding_fraction() -> None:
    _, mask, _ = _batch([1, 3], 4)
    assert padding_fraction(mask) == pytest.approx(0.5)
    assert padding_fraction(torch.ones((2, 3))) == 0.0


def test_the_encoder_packs_padded_batches_only(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = BiEncoder(tiny_model_dir, device="cpu", backend="torch", dtype="float32")
    calls: list[tuple[int, int]] = []

    def counted(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(ids.shape))  # type: ignore[arg-type]
        return packed_states(model, ids, mask)

    monkeypatch.setattr(encoder_model, "packed_states", counted)
    texts = ["a", "a much longer text than the first one, with many more tokens in it", "mid one"]
    packed = encoder.encode(texts)
    assert calls, "a batch of mixed lengths did not run padding-free"
    calls.clear()
    encoder.encode(["one text alone has no padding"])
    assert not calls
    with torch.enable_grad():  # the trainer's path: the padded forward, with gradients
        ids, mask = encoder.core.pad([[101, 2000, 102], [101, 102]])
        encoder.core.embed_tensors(ids, mask).sum().backward()
    assert not calls
    monkeypatch.setenv(PACKED_ENV, "0")
    padded = encoder.encode(texts)
    assert not calls
    np.testing.assert_allclose(packed, padded, atol=1e-6, rtol=0)


def test_the_reranker_packs_padded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from sbert_retrieval import reranking
    from sbert_retrieval.reranking import CrossEncoderReranker

    reranker = CrossEncoderReranker("default", backend="torch", dtype="float32")
    calls: list[int] = []
    original = reranking.packed_logits

    def counted(model: Any, *args: Any) -> torch.Tensor:
        calls.append(1)
        return original(model, *args)

    monkeypatch.setattr(reranking, "packed_logits", counted)
    pairs = [
        ("what is a cell", "a cell is the basic unit of life"),
        ("q", " ".join(["a long passage about proteins and cells"] * 12)),
        ("another question", "short"),
    ]
    packed = reranker.predict(pairs)
    assert calls
    calls.clear()
    reranker.predict(pairs[:1])  # no padding at all: the pooled-token-only last layer still pays
    assert calls
    monkeypatch.setenv(PACKED_ENV, "0")
    np.testing.assert_allclose(reranker.predict(pairs), packed, atol=1e-5, rtol=0)


def test_packing_runs_on_cpu_at_inference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertForSequenceClassification

    encoder = _bert()
    classifier = BertForSequenceClassification(tiny_bert_config(num_labels=1)).eval()
    _, padded, _ = _batch([2, 9], 9)
    full = torch.ones((2, 9), dtype=torch.long)
    with torch.inference_mode():
        assert packs(encoder, padded)
        assert not packs(encoder, full)  # no padding: nothing to gain
        assert packs(classifier, full, classifier=True)  # the last layer gains anyway
        _, left, _ = _batch([2, 9], 9, left=True)
        assert not packs(classifier, left, classifier=True)
        # Another device: the index ops would make the host wait for it (meta stands in).
        assert not packs(encoder, padded.to("meta"))
        assert not packs(classifier, full.to("meta"), classifier=True)
        monkeypatch.setenv(PACKED_ENV, "0")
        assert not packs(encoder, padded)
        monkeypatch.delenv(PACKED_ENV)
        encoder.train()
        assert not packs(encoder, padded)
    encoder.eval()
    assert not packs(encoder, padded)  # gradients on: the trainer's padded forward
