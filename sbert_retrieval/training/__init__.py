"""Training: SBERT bi-encoder objectives, cross-encoders, data loaders, and a resumable loop.

Quick start (fine-tune all-MiniLM-L6-v2 on SciFact train with in-batch negatives)::

    from sbert_retrieval.training import BiEncoderTrainer, TrainingConfig, load_scifact

    pairs = load_scifact("../shared/data").pairs()
    config = TrainingConfig("runs/minilm-scifact", epochs=1, batch_size=64)
    BiEncoderTrainer("sentence-transformers/all-MiniLM-L6-v2", pairs, config, loss="mnrl").train()

The saved folder loads in :class:`~sbert_retrieval.encoding.BiEncoder` and in
``sentence_transformers.SentenceTransformer``. The CLI runs the same through
``sbert-retrieval train bi-encoder|cross-encoder`` (see :mod:`sbert_retrieval.training.recipes`).
"""

from __future__ import annotations

from sbert_retrieval.training.data import (
    SNLI_LABELS,
    Example,
    GroupExample,
    PairExample,
    RetrievalData,
    TripletExample,
    bce_examples,
    group_pairs,
    load_answer_selection,
    load_msrp,
    load_scifact,
    load_snli,
    load_squad,
    load_stsb,
    make_triplets,
    mine_hard_negatives,
    positive_pairs,
    sample_examples,
    triplet_examples,
)
from sbert_retrieval.training.evaluators import (
    BeirEvaluator,
    Evaluator,
    RerankingEvaluator,
    StsEvaluator,
)
from sbert_retrieval.training.losses import (
    BI_ENCODER_LOSSES,
    CROSS_ENCODER_LOSSES,
    BiEncoderLoss,
    CosineSimilarityLoss,
    CrossEncoderBCELoss,
    CrossEncoderLoss,
    CrossEncoderMSELoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    TripletLoss,
    make_bi_encoder_loss,
    make_cross_encoder_loss,
)
from sbert_retrieval.training.model_card import append_evaluation, write_model_card
from sbert_retrieval.training.saving import (
    init_cross_encoder_from_bi_encoder,
    save_bi_encoder,
    save_cross_encoder,
)
from sbert_retrieval.training.trainer import (
    BiEncoderTrainer,
    CrossEncoderTrainer,
    TrainingConfig,
    TrainingResult,
    latest_checkpoint,
    set_seed,
)

__all__ = [
    "BI_ENCODER_LOSSES",
    "CROSS_ENCODER_LOSSES",
    "SNLI_LABELS",
    "BeirEvaluator",
    "BiEncoderLoss",
    "BiEncoderTrainer",
    "CosineSimilarityLoss",
    "CrossEncoderBCELoss",
    "CrossEncoderLoss",
    "CrossEncoderMSELoss",
    "CrossEncoderTrainer",
    "Evaluator",
    "Example",
    "GroupExample",
    "MultipleNegativesRankingLoss",
    "PairExample",
    "RerankingEvaluator",
    "RetrievalData",
    "SoftmaxLoss",
    "StsEvaluator",
    "TrainingConfig",
    "TrainingResult",
    "TripletExample",
    "TripletLoss",
    "append_evaluation",
    "bce_examples",
    "group_pairs",
    "init_cross_encoder_from_bi_encoder",
    "latest_checkpoint",
    "load_answer_selection",
    "load_msrp",
    "load_scifact",
    "load_snli",
    "load_squad",
    "load_stsb",
    "make_bi_encoder_loss",
    "make_cross_encoder_loss",
    "make_triplets",
    "mine_hard_negatives",
    "positive_pairs",
    "sample_examples",
    "save_bi_encoder",
    "save_cross_encoder",
    "set_seed",
    "triplet_examples",
    "write_model_card",
]
