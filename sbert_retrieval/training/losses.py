"""Training objectives: the SBERT bi-encoder losses and the cross-encoder losses.

Bi-encoder losses (Reimers & Gurevych 2019, plus multiple-negatives ranking) take pooled sentence
embeddings, exactly what the model outputs (after its ``Normalize`` module if it has one):

* :class:`SoftmaxLoss`: a linear classifier over ``concat(u, v, |u − v|)``, cross-entropy.
* :class:`CosineSimilarityLoss`: mean squared error between ``cos(u, v)`` and a gold score.
* :class:`TripletLoss`: ``max(‖a − p‖ − ‖a − n‖ + margin, 0)`` with Euclidean distance.
* :class:`MultipleNegativesRankingLoss`: in-batch negatives; cross-entropy over scaled cosine
  similarities, the positive of anchor ``i`` being column ``i``.

Cross-encoder losses take the classifier's logits:

* :class:`CrossEncoderBCELoss`: binary cross-entropy with logits on (query, passage, label).
* :class:`CrossEncoderMSELoss`: mean squared error between ``sigmoid(logit)`` and a gold score in
  ``[0, 1]`` (STS regression; at inference the saved model applies the same sigmoid).

Every loss is a ``torch.nn.Module`` whose :meth:`forward` takes named tensors; trainers call
:meth:`compute` with the embedding columns (or logits) and labels of a batch. All return the
mean over the batch as a 0-dim float32 tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BI_ENCODER_LOSSES",
    "CROSS_ENCODER_LOSSES",
    "BiEncoderLoss",
    "CosineSimilarityLoss",
    "CrossEncoderBCELoss",
    "CrossEncoderListwiseLoss",
    "CrossEncoderLoss",
    "CrossEncoderMSELoss",
    "MultipleNegativesRankingLoss",
    "SoftmaxLoss",
    "TripletLoss",
    "make_bi_encoder_loss",
    "make_cross_encoder_loss",
]

BI_ENCODER_LOSSES = ("mnrl", "cosine", "softmax", "triplet")
CROSS_ENCODER_LOSSES = ("bce", "mse", "listwise")


def _check_batch(columns: Sequence[Tensor], expected: int, name: str) -> None:
    if len(columns) != expected:
        raise ValueError(f"{name} takes {expected} embedding columns, got {len(columns)}")
    rows = {int(c.shape[0]) for c in columns}
    if len(rows) != 1 or any(c.ndim != 2 for c in columns):
        shapes = ", ".join(str(tuple(c.shape)) for c in columns)
        raise ValueError(f"{name} needs (batch, dim) columns of one batch size, got {shapes}")


def _need_labels(labels: Tensor | None, rows: int, name: str) -> Tensor:
    if labels is None:
        raise ValueError(f"{name} needs labels (one per pair)")
    if labels.numel() != rows:
        raise ValueError(f"{name} needs {rows} labels (one per pair), got {labels.numel()}")
    return labels.reshape(-1)


class BiEncoderLoss(nn.Module):
    """Base of the bi-encoder objectives: a loss over the pooled embeddings of text columns.

    Attributes:
        name: The short name used by the CLI (``mnrl``, ``cosine``, ``softmax``, ``triplet``).
        columns: Text columns per example: 2 for pairs, 3 for triplets, ``0`` for "2 or 3".
        needs_labels: Whether each example carries a label the loss uses.
    """

    name: ClassVar[str] = ""
    columns: ClassVar[int] = 2
    needs_labels: ClassVar[bool] = False

    def compute(self, embeddings: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        """The loss of one batch.

        Args:
            embeddings: One ``(batch, dim)`` tensor per text column, in column order.
            labels: ``(batch,)`` labels, or ``None`` for losses without labels.

        Returns:
            The batch mean, a 0-dim tensor.

        Thread safety: pure computation; safe when the module's parameters are not being
        updated concurrently.
        """
        raise NotImplementedError


class SoftmaxLoss(BiEncoderLoss):
    """SBERT's classification objective: ``softmax(W · concat(u, v, |u − v|))``, cross-entropy.

    The classifier ``W`` (``3·dim → num_labels``, with bias) is trained with the encoder and
    discarded afterwards, as in the SBERT paper.

    Args:
        dimension: Width of the sentence embeddings.
        num_labels: Number of classes (3 for NLI).
        seed: Seeds the classifier's initialization (the global RNG is left untouched).
    """

    name = "softmax"
    needs_labels = True

    def __init__(self, dimension: int, num_labels: int, *, seed: int = 0) -> None:
        super().__init__()
        if dimension < 1:
            raise ValueError(f"dimension must be >= 1, got {dimension}")
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2 for a softmax classifier, got {num_labels}")
        self.dimension = dimension
        self.num_labels = num_labels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.classifier = nn.Linear(3 * dimension, num_labels)

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the classifier over ``concat(u, v, |u − v|)``.

        Args:
            u: ``(batch, dim)`` embeddings of the first sentences.
            v: ``(batch, dim)`` embeddings of the second sentences.
            labels: ``(batch,)`` integer classes in ``[0, num_labels)``.

        Thread safety: pure computation on its inputs.
        """
        features = torch.cat([u, v, torch.abs(u - v)], dim=1)
        logits = self.classifier(features)
        return F.cross_entropy(logits, labels.long())

    def compute(self, embeddings: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        """See :meth:`BiEncoderLoss.compute`. Thread safety: as :meth:`BiEncoderLoss.compute`."""
        _check_batch(embeddings, 2, "SoftmaxLoss")
        return self.forward(
            embeddings[0],
            embeddings[1],
            _need_labels(labels, embeddings[0].shape[0], "SoftmaxLoss"),
        )


class CosineSimilarityLoss(BiEncoderLoss):
    """SBERT's regression objective: ``mean((cos(u, v) − gold)²)``.

    Gold scores are expected in ``[0, 1]`` (STSb: score / 5).
    """

    name = "cosine"
    needs_labels = True

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        """Mean squared error between the pairs' cosine similarities and ``labels``.

        Args:
            u: ``(batch, dim)`` embeddings of the first sentences.
            v: ``(batch, dim)`` embeddings of the second sentences.
            labels: ``(batch,)`` gold similarities.

        Thread safety: pure computation on its inputs.
        """
        return F.mse_loss(F.cosine_similarity(u, v, dim=1), labels.to(u.dtype))

    def compute(self, embeddings: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        """See :meth:`BiEncoderLoss.compute`. Thread safety: as :meth:`BiEncoderLoss.compute`."""
        _check_batch(embeddings, 2, "CosineSimilarityLoss")
        rows = embeddings[0].shape[0]
        return self.forward(
            embeddings[0], embeddings[1], _need_labels(labels, rows, "CosineSimilarityLoss")
        )


class TripletLoss(BiEncoderLoss):
    """SBERT's triplet objective: ``mean(max(‖a − p‖ − ‖a − n‖ + margin, 0))``.

    Distances are Euclidean, computed as ``torch.nn.functional.pairwise_distance`` (which adds
    ``1e-6`` to each coordinate difference, as sentence-transformers does, so the gradient is
    defined when two embeddings coincide).

    Args:
        margin: How much closer the positive must be than the negative (default 1, the paper's).
    """

    name = "triplet"
    columns = 3

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = margin

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        """The hinge on the distance gap of each triplet, averaged.

        Args:
            anchor: ``(batch, dim)`` anchor embeddings.
            positive: ``(batch, dim)`` embeddings that should be near the anchors.
            negative: ``(batch, dim)`` embeddings that should be at least ``margin`` farther.

        Thread safety: pure computation on its inputs.
        """
        to_positive = F.pairwise_distance(anchor, positive, p=2)
        to_negative = F.pairwise_distance(anchor, negative, p=2)
        return F.relu(to_positive - to_negative + self.margin).mean()

    def compute(self, embeddings: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        """See :meth:`BiEncoderLoss.compute`. Thread safety: as :meth:`BiEncoderLoss.compute`."""
        _check_batch(embeddings, 3, "TripletLoss")
        return self.forward(embeddings[0], embeddings[1], embeddings[2])


class MultipleNegativesRankingLoss(BiEncoderLoss):
    """In-batch negatives ranking loss (Henderson et al. 2017), as sentence-transformers has it.

    For anchors ``a_1..a_B`` and positives ``p_1..p_B``, the scores are
    ``scale · cos(a_i, c_j)`` over the candidates ``c = p_1..p_B`` followed by any hard
    negatives; the loss is the cross-entropy with target ``j = i``. Every other positive, and
    every hard negative of every anchor, is a negative for ``a_i``.

    Args:
        scale: Inverse temperature of the cosine similarities (default 20).
    """

    name = "mnrl"
    columns = 0  # pairs, or triplets whose third column is a hard negative

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    def scores(self, anchors: Tensor, positives: Tensor, negatives: Tensor | None = None) -> Tensor:
        """The ``(batch, batch + negatives)`` matrix of scaled cosine similarities.

        Thread safety: pure function of its inputs.
        """
        candidates = positives
        if negatives is not None:
            candidates = torch.cat([positives, negatives.reshape(-1, positives.shape[1])], dim=0)
        left = F.normalize(anchors, p=2, dim=1)
        right = F.normalize(candidates, p=2, dim=1)
        return self.scale * left @ right.T

    def forward(
        self, anchors: Tensor, positives: Tensor, negatives: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy of each anchor's scores with its own positive as the target.

        Args:
            anchors: ``(batch, dim)``.
            positives: ``(batch, dim)``; row ``i`` is the positive of anchor ``i``.
            negatives: Hard negatives, ``(m, dim)`` for any ``m`` (e.g. ``batch · k`` for ``k``
                per anchor), appended as extra candidate columns shared by every anchor.

        Thread safety: pure computation on its inputs.
        """
        if anchors.shape != positives.shape:
            raise ValueError(
                f"anchors and positives must have one shape, got {tuple(anchors.shape)} and"
                f" {tuple(positives.shape)}"
            )
        scores = self.scores(anchors, positives, negatives)
        targets = torch.arange(anchors.shape[0], device=anchors.device)
        return F.cross_entropy(scores, targets)

    def compute(self, embeddings: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        """See :meth:`BiEncoderLoss.compute`; columns after the second are hard negatives.

        Thread safety: as :meth:`BiEncoderLoss.compute`.
        """
        if len(embeddings) < 2:
            raise ValueError(
                f"MultipleNegativesRankingLoss takes >= 2 columns, got {len(embeddings)}"
            )
        _check_batch(embeddings, len(embeddings), "MultipleNegativesRankingLoss")
        negatives = torch.cat(list(embeddings[2:]), dim=0) if len(embeddings) > 2 else None
        return self.forward(embeddings[0], embeddings[1], negatives)


class CrossEncoderLoss(nn.Module):
    """Base of the cross-encoder objectives: a loss over ``(batch, 1)`` logits and labels.

    Attributes:
        name: The short name used by the CLI (``bce`` or ``mse``).
    """

    name: ClassVar[str] = ""

    def compute(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The loss of one batch of ``(batch, 1)`` or ``(batch,)`` logits.

        Thread safety: pure computation.
        """
        raise NotImplementedError


def _flat_logits(logits: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if logits.ndim == 2 and logits.shape[1] != 1:
        raise ValueError(f"{name} needs a model with 1 output label, got {logits.shape[1]} logits")
    flat = logits.reshape(-1)
    if labels.numel() != flat.numel():
        raise ValueError(f"{name} needs one label per pair: {flat.numel()} pairs, {labels.numel()}")
    return flat, labels.reshape(-1).to(flat.dtype)


class CrossEncoderBCELoss(CrossEncoderLoss):
    """Binary cross-entropy with logits: relevant pairs (label 1) against irrelevant (label 0).

    Soft labels in ``[0, 1]`` are accepted (e.g. STSb score / 5).

    Args:
        pos_weight: Weight of the positive class (e.g. negatives per positive), ``None`` for 1.
    """

    name = "bce"

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``mean(−w·y·log σ(x) − (1 − y)·log(1 − σ(x)))`` over the batch.

        Args:
            logits: ``(batch, 1)`` or ``(batch,)`` raw scores.
            labels: ``(batch,)`` targets in ``[0, 1]``.

        Thread safety: pure computation on its inputs.
        """
        flat, target = _flat_logits(logits, labels, "CrossEncoderBCELoss")
        weight = None
        if self.pos_weight is not None:
            weight = torch.tensor(self.pos_weight, dtype=flat.dtype, device=flat.device)
        return F.binary_cross_entropy_with_logits(flat, target, pos_weight=weight)

    def compute(self, logits: Tensor, labels: Tensor) -> Tensor:
        """See :meth:`CrossEncoderLoss.compute`. Thread safety: pure computation."""
        return self.forward(logits, labels)


class CrossEncoderMSELoss(CrossEncoderLoss):
    """Regression on scored pairs: ``mean((σ(logit) − gold)²)`` with gold in ``[0, 1]``.

    The sigmoid is the activation the saved model declares, so predictions at inference are
    on the scale of the gold scores (STSb: score / 5).
    """

    name = "mse"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean squared error between ``sigmoid(logits)`` and ``labels``.

        Args:
            logits: ``(batch, 1)`` or ``(batch,)`` raw scores.
            labels: ``(batch,)`` gold scores in ``[0, 1]``.

        Thread safety: pure computation on its inputs.
        """
        flat, target = _flat_logits(logits, labels, "CrossEncoderMSELoss")
        return F.mse_loss(torch.sigmoid(flat), target)

    def compute(self, logits: Tensor, labels: Tensor) -> Tensor:
        """See :meth:`CrossEncoderLoss.compute`. Thread safety: pure computation."""
        return self.forward(logits, labels)


class CrossEncoderListwiseLoss(CrossEncoderLoss):
    """Softmax cross-entropy over each group's scores with the positive as the target.

    The localized contrastive estimation of Gao et al. (2021, "Rethink Training of BERT
    Rerankers in Multi-Stage Retrieval Pipeline"): each query's positive competes with its
    negatives (mined from the first stage), so the model learns to order a candidate list
    rather than to calibrate each pair alone. Takes :class:`GroupExample` batches.
    """

    name = "listwise"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``mean(−log softmax(logits)[target])`` over the groups.

        Args:
            logits: ``(groups, size)`` scores; padding (groups with fewer negatives) is ``-inf``.
            labels: ``(groups,)`` column of each group's positive.

        Thread safety: pure computation on its inputs.
        """
        if logits.ndim != 2:
            raise ValueError(f"the listwise loss needs (groups, size) logits, got {logits.shape}")
        return F.cross_entropy(logits.float(), labels.long())

    def compute(self, logits: Tensor, labels: Tensor) -> Tensor:
        """See :meth:`CrossEncoderLoss.compute`. Thread safety: pure computation."""
        return self.forward(logits, labels)


def make_bi_encoder_loss(
    name: str, *, dimension: int, num_labels: int | None = None, seed: int = 0
) -> BiEncoderLoss:
    """Build a bi-encoder loss by its CLI name.

    Args:
        name: One of :data:`BI_ENCODER_LOSSES`.
        dimension: Embedding width (for ``softmax``'s classifier).
        num_labels: Classes (``softmax`` only; required there).
        seed: Seeds ``softmax``'s classifier.

    Raises:
        ValueError: An unknown name (the message lists the valid ones), or ``softmax`` without
            ``num_labels``.

    Thread safety: pure factory.
    """
    if name == "mnrl":
        return MultipleNegativesRankingLoss()
    if name == "cosine":
        return CosineSimilarityLoss()
    if name == "triplet":
        return TripletLoss()
    if name == "softmax":
        if num_labels is None:
            raise ValueError("the softmax loss needs num_labels (the number of classes)")
        return SoftmaxLoss(dimension, num_labels, seed=seed)
    raise ValueError(f"unknown bi-encoder loss {name!r}; valid: {', '.join(BI_ENCODER_LOSSES)}")


def make_cross_encoder_loss(name: str, *, pos_weight: float | None = None) -> CrossEncoderLoss:
    """Build a cross-encoder loss by its CLI name (one of :data:`CROSS_ENCODER_LOSSES`).

    Raises:
        ValueError: An unknown name; the message lists the valid ones.

    Thread safety: pure factory.
    """
    if name == "bce":
        return CrossEncoderBCELoss(pos_weight)
    if name == "mse":
        return CrossEncoderMSELoss()
    if name == "listwise":
        return CrossEncoderListwiseLoss()
    raise ValueError(
        f"unknown cross-encoder loss {name!r}; valid: {', '.join(CROSS_ENCODER_LOSSES)}"
    )
