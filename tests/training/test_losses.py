"""Each loss against values computed by hand on 2×2 (or 2×1) inputs."""

from __future__ import annotations

import math

import pytest
import torch

from sbert_retrieval.training.losses import (
    CosineSimilarityLoss,
    CrossEncoderBCELoss,
    CrossEncoderListwiseLoss,
    CrossEncoderMSELoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    TripletLoss,
    make_bi_encoder_loss,
    make_cross_encoder_loss,
)

SQRT_HALF = 1 / math.sqrt(2)  # 0.70710678


def leaf(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True)


def assert_grads(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_cosine_similarity_loss() -> None:
    u = leaf([[1, 0], [0, 1]])
    v = leaf([[1, 0], [1, 1]])
    gold = torch.tensor([1.0, 0.5])
    # cos(u0, v0) = 1;  cos(u1, v1) = (0·1 + 1·1) / (1 · √2) = 0.70710678
    # MSE = ((1 − 1)² + (0.70710678 − 0.5)²) / 2 = 0.04289322 / 2 = 0.02144661
    loss = CosineSimilarityLoss()(u, v, gold)
    assert loss.item() == pytest.approx((SQRT_HALF - 0.5) ** 2 / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.02144661, abs=1e-7)
    loss.backward()
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad[1].abs().sum() > 0


def test_triplet_loss_euclidean_margin_one() -> None:
    anchor = leaf([[0, 0], [1, 1]])
    positive = leaf([[3, 4], [1, 2]])
    negative = leaf([[0, 1], [4, 5]])
    # row 0: ‖a−p‖ = √(9+16) = 5, ‖a−n‖ = 1      → max(5 − 1 + 1, 0) = 5
    # row 1: ‖a−p‖ = 1,          ‖a−n‖ = √(9+16) = 5 → max(1 − 5 + 1, 0) = 0
    # mean = 2.5 (pairwise_distance's 1e-6 offset moves it by ~1e-6)
    loss = TripletLoss()(anchor, positive, negative)
    assert TripletLoss().margin == 1.0
    assert loss.item() == pytest.approx(2.5, abs=1e-5)
    loss.backward()
    assert_grads(anchor, positive, negative)
    assert positive.grad is not None and positive.grad[1].abs().sum() == 0  # hinge inactive


def test_multiple_negatives_ranking_loss() -> None:
    anchors = leaf([[1, 0], [0, 1]])
    positives = leaf([[1, 0], [1, 1]])
    mnrl = MultipleNegativesRankingLoss()
    assert mnrl.scale == 20
    # cos = [[1, 1/√2], [0, 1/√2]]; scores = 20·cos = [[20, 14.1421356], [0, 14.1421356]]
    # row 0 (target 0): −20 + log(e^20 + e^14.1421356) = log(1 + e^−5.8578644) = 0.00285326
    # row 1 (target 1): −14.1421356 + log(e^0 + e^14.1421356) = log(1 + e^−14.1421356) = 7.2e-7
    # mean = 0.00142699
    expected = (
        math.log1p(math.exp(20 * SQRT_HALF - 20)) + math.log1p(math.exp(-20 * SQRT_HALF))
    ) / 2
    assert expected == pytest.approx(0.00142699, abs=1e-8)
    scores = mnrl.scores(anchors, positives)
    torch.testing.assert_close(
        scores, torch.tensor([[20, 20 * SQRT_HALF], [0, 20 * SQRT_HALF]]), atol=1e-5, rtol=0
    )
    loss = mnrl(anchors, positives)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert_grads(anchors, positives)


def test_multiple_negatives_ranking_loss_with_hard_negatives() -> None:
    anchors = leaf([[1, 0], [0, 1]])
    positives = leaf([[1, 0], [1, 1]])
    negatives = leaf([[0, 1]])
    mnrl = MultipleNegativesRankingLoss()
    # candidates: p0, p1, n0 → scores = 20·[[1, 1/√2, 0], [0, 1/√2, 1]]
    # row 0 (target 0): log(e^20 + e^14.1421356 + e^0) − 20            = 0.00285327
    # row 1 (target 1): log(e^0 + e^14.1421356 + e^20) − 14.1421356    = 5.86071764
    # mean = 2.93178546
    scores = mnrl.scores(anchors, positives, negatives)
    assert scores.shape == (2, 3)
    loss = mnrl(anchors, positives, negatives)
    assert loss.item() == pytest.approx(2.93178546, abs=1e-5)
    loss.backward()
    assert_grads(anchors, positives, negatives)
    # Through compute(): a third column of hard negatives, one per anchor → (2, 4) scores.
    columns = [torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)]
    assert mnrl.scores(columns[0], columns[1], columns[2]).shape == (2, 4)
    assert torch.isfinite(mnrl.compute(columns, None))
    # k = 2 negatives per anchor, flattened: (batch · k, dim) → batch + batch·k columns.
    assert mnrl.scores(torch.randn(3, 4), torch.randn(3, 4), torch.randn(6, 4)).shape == (3, 9)


def test_softmax_loss_over_u_v_and_their_difference() -> None:
    loss_fn = SoftmaxLoss(dimension=1, num_labels=2)
    assert loss_fn.classifier.in_features == 3
    with torch.no_grad():
        loss_fn.classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        loss_fn.classifier.bias.zero_()
    u = leaf([[1], [2]])
    v = leaf([[3], [1]])
    # features (u, v, |u−v|): row 0 = [1, 3, 2], row 1 = [2, 1, 1]
    # logits = W·f: row 0 = [1, 3], row 1 = [2, 1]; labels = [1, 1]
    # row 0: −3 + log(e^1 + e^3) = log(1 + e^−2) = 0.12692801
    # row 1: −1 + log(e^2 + e^1) = log(1 + e^1)  = 1.31326169
    # mean = 0.72009485
    loss = loss_fn(u, v, torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(0.72009485, abs=1e-6)
    loss.backward()
    assert_grads(u, v, loss_fn.classifier.weight)


def test_softmax_classifier_is_seeded_without_touching_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = SoftmaxLoss(4, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = SoftmaxLoss(4, 3, seed=7)
    c = SoftmaxLoss(4, 3, seed=8)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_cross_encoder_bce() -> None:
    logits = leaf([[0.0], [2.0]])
    labels = torch.tensor([1.0, 0.0])
    # row 0: −log σ(0) = log 2 = 0.69314718;  row 1: −log(1 − σ(2)) = log(1 + e²) = 2.12692801
    # mean = 1.41003760
    loss = CrossEncoderBCELoss()(logits, labels)
    assert loss.item() == pytest.approx(1.41003760, abs=1e-6)
    loss.backward()
    assert_grads(logits)
    # pos_weight 2 doubles the positive's term: (2·0.69314718 + 2.12692801) / 2 = 1.75661119
    weighted = CrossEncoderBCELoss(pos_weight=2.0)(logits.detach(), labels)
    assert weighted.item() == pytest.approx(1.75661119, abs=1e-6)


def test_cross_encoder_mse_on_the_sigmoid() -> None:
    logits = leaf([[0.0], [math.log(3.0)]])
    gold = torch.tensor([0.5, 1.0])
    # σ(0) = 0.5 → (0.5 − 0.5)² = 0;  σ(ln 3) = 3/4 → (0.75 − 1)² = 0.0625;  mean = 0.03125
    loss = CrossEncoderMSELoss()(logits, gold)
    assert loss.item() == pytest.approx(0.03125, abs=1e-7)
    loss.backward()
    assert logits.grad is not None and logits.grad[1, 0] < 0  # pushes the second logit up


def test_shape_and_name_errors_are_actionable() -> None:
    with pytest.raises(ValueError, match="valid: mnrl, cosine, softmax, triplet"):
        make_bi_encoder_loss("contrastive", dimension=4)
    with pytest.raises(ValueError, match="valid: bce, mse, listwise"):
        make_cross_encoder_loss("hinge")
    with pytest.raises(ValueError, match="num_labels"):
        make_bi_encoder_loss("softmax", dimension=4)
    with pytest.raises(ValueError, match="1 output label"):
        CrossEncoderBCELoss()(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="3 embedding columns"):
        TripletLoss().compute([torch.zeros(2, 3), torch.zeros(2, 3)], None)
    with pytest.raises(ValueError, match="needs labels"):
        CosineSimilarityLoss().compute([torch.zeros(2, 3), torch.zeros(2, 3)], None)
    assert isinstance(make_bi_encoder_loss("softmax", dimension=4, num_labels=3), SoftmaxLoss)


def test_cross_encoder_listwise_is_softmax_cross_entropy_per_group() -> None:
    # group 0: logits (2, 0, 0) → −log(e² / (e² + 2)) = log(1 + 2e⁻²) = 0.23954312
    # group 1: (0, 0, −inf) padding → −log(1/2) = 0.69314718;  mean = 0.46634515
    logits = leaf([[2.0, 0.0, 0.0], [0.0, 0.0, float("-inf")]])
    loss = CrossEncoderListwiseLoss()(logits, torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(0.46634515, abs=1e-6)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # the positive up, the negatives down
    assert logits.grad[1, 2] == 0  # padding takes no gradient
    with pytest.raises(ValueError, match="groups, size"):
        CrossEncoderListwiseLoss()(leaf([1.0, 2.0]), torch.tensor([0]))
    assert make_cross_encoder_loss("listwise").name == "listwise"
