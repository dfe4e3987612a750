"""Ready-made training runs over ``../shared/data``: what ``sbert-retrieval train`` executes.

Which training examples each dataset gives each loss:

=======  ==========================================  =========================================
loss     datasets                                    examples
=======  ==========================================  =========================================
mnrl     scifact, squad                              (query, positive) pairs, or triplets with
                                                     a mined hard negative when mining is on
         snli, wikiqa, trecqa                        triplets: a labelled negative of the anchor
         stsb, msrp                                  positive pairs (STSb: score >= 4)
triplet  scifact, squad                              mined negatives, else random ones
         snli, wikiqa, trecqa, msrp                  labelled negatives, else random ones
cosine   stsb, wikiqa, trecqa, msrp                  pairs with score / 5 or 0/1
softmax  snli (3 classes), wikiqa, trecqa, msrp (2)  labelled pairs; one dataset per run
bce/mse  scifact, squad                              positives + mined hard negatives (label 0)
(cross)  wikiqa, trecqa, msrp                        labelled pairs
         stsb                                        pairs with score / 5 (soft labels)
=======  ==========================================  =========================================

SNLI pairs are entailment 1 / contradiction 0 for triplets. Dev evaluation (``dev="auto"``):
STSb dev for bi-encoders and STSb-only cross-encoders, else WikiQA dev (TrecQA dev when trained on
TrecQA alone). No test split is ever read.
"""

from __future__ import annotations

import gc
import json
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbert_retrieval.models import DEFAULT_MODEL, default_prefixes, resolve_model_path
from sbert_retrieval.training.data import (
    Example,
    PairExample,
    RetrievalData,
    bce_examples,
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
from sbert_retrieval.training.evaluators import Evaluator, RerankingEvaluator, StsEvaluator
from sbert_retrieval.training.model_card import write_model_card
from sbert_retrieval.training.trainer import BiEncoderTrainer, CrossEncoderTrainer, TrainingConfig

__all__ = [
    "BI_ENCODER_DATA",
    "CROSS_ENCODER_DATA",
    "DATASETS",
    "DEV_SETS",
    "MiningConfig",
    "bi_encoder_examples",
    "cross_encoder_examples",
    "dev_evaluator",
    "train_bi_encoder",
    "train_cross_encoder",
]

DATASETS = ("scifact", "stsb", "snli", "wikiqa", "trecqa", "squad", "msrp")
DEV_SETS = ("auto", "none", "stsb", "wikiqa", "trecqa")
BI_ENCODER_DATA: dict[str, tuple[str, ...]] = {
    "mnrl": DATASETS,
    "triplet": ("scifact", "squad", "snli", "wikiqa", "trecqa", "msrp"),
    "cosine": ("stsb", "wikiqa", "trecqa", "msrp"),
    "softmax": ("snli", "wikiqa", "trecqa", "msrp"),
}
CROSS_ENCODER_DATA: dict[str, tuple[str, ...]] = {
    "bce": ("scifact", "squad", "wikiqa", "trecqa", "msrp", "stsb"),
    "mse": ("scifact", "squad", "wikiqa", "trecqa", "msrp", "stsb"),
}
_RETRIEVAL = ("scifact", "squad")
_SYMMETRIC = ("stsb", "msrp")


@dataclass(frozen=True)
class MiningConfig:
    """How hard negatives are mined for SciFact and SQuAD (see :func:`mine_hard_negatives`).

    Attributes:
        model: The bi-encoder that retrieves (default all-MiniLM-L6-v2).
        num_negatives: Negatives per query (0: no mining).
        top_k: Candidate depth after removing positives (default 30).
        skip_top: Leading candidates skipped (default 0).
        sampling: ``top`` or ``random``.
        relative_margin: Keep candidates scoring at most ``(1 − m) ×`` the lowest positive.
        device: Where the miner runs (default: as training).
        batch_size: Texts per forward pass (default 128).
        cache_dir: Reuse the miner's corpus vectors from this embedding cache (the one
            ``eval beir`` fills), so mining the same corpus twice encodes it once.
    """

    model: str = DEFAULT_MODEL
    num_negatives: int = 0
    top_k: int = 30
    skip_top: int = 0
    sampling: str = "top"
    relative_margin: float | None = None
    device: str | None = None
    batch_size: int = 128
    cache_dir: str | os.PathLike[str] | None = None


def _check_datasets(datasets: Sequence[str], loss: str, table: dict[str, tuple[str, ...]]) -> None:
    if loss not in table:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(table)}")
    if not datasets:
        raise ValueError(f"no dataset given; valid: {', '.join(DATASETS)}")
    for name in datasets:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
        if name not in table[loss]:
            raise ValueError(
                f"dataset {name!r} cannot train the {loss} loss; valid for {loss}:"
                f" {', '.join(table[loss])}"
            )
    if len(set(datasets)) != len(datasets):
        raise ValueError(f"a dataset is repeated in {list(datasets)}")


class _Miner:
    """Loads the mining bi-encoder once, on first use."""

    def __init__(self, config: MiningConfig | None, seed: int, device: str | None) -> None:
        self.config = config
        self.seed = seed
        self.device = config.device if config and config.device else device
        self.encoder: Any = None
        self.mined = 0

    @property
    def enabled(self) -> bool:
        return self.config is not None and self.config.num_negatives > 0

    def negatives(self, data: RetrievalData) -> dict[str, list[str]]:
        from sbert_retrieval.encoding.bi_encoder import BiEncoder

        assert self.config is not None
        if self.encoder is None:
            self.encoder = BiEncoder(
                self.config.model, device=self.device, batch_size=self.config.batch_size
            )
        query_prefix, passage_prefix = default_prefixes(self.encoder.prompts)
        found = mine_hard_negatives(
            self.encoder,
            data,
            num_negatives=self.config.num_negatives,
            top_k=self.config.top_k,
            skip_top=self.config.skip_top,
            sampling=self.config.sampling,
            relative_margin=self.config.relative_margin,
            seed=self.seed,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            cache_dir=self.config.cache_dir,
        )
        self.mined += sum(len(v) for v in found.values())
        return found

    def release(self) -> None:
        """Drop the mining encoder, stopping its multi-device workers first (they would leak)."""
        if self.encoder is not None:
            self.encoder.close()
        self.encoder = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def _retrieval(name: str, data_dir: Path, limit: int | None, seed: int) -> RetrievalData:
    data = load_scifact(data_dir) if name == "scifact" else load_squad(data_dir)
    return data.sample(limit, seed)


def _labelled(name: str, data_dir: Path) -> list[PairExample]:
    if name == "stsb":
        return load_stsb(data_dir, "train")
    if name == "snli":
        return load_snli(data_dir)
    if name in ("wikiqa", "trecqa"):
        return load_answer_selection(data_dir, name, "train")
    return load_msrp(data_dir)


def bi_encoder_examples(
    datasets: Sequence[str],
    loss: str,
    data_dir: str | os.PathLike[str],
    *,
    max_examples: int | None = None,
    seed: int = 0,
    mining: MiningConfig | None = None,
    device: str | None = None,
) -> list[Example]:
    """The bi-encoder training examples of ``datasets`` for ``loss`` (see the module table).

    Args:
        datasets: Names from :data:`DATASETS`.
        loss: A name from :data:`BI_ENCODER_DATA`.
        data_dir: The data root (``scifact/``, ``stsb/``, ``train/``).
        max_examples: At most this many examples (queries for SciFact/SQuAD) per dataset, a
            seeded sample (smoke runs, balancing).
        seed: Seeds sampling, random negatives and mining.
        mining: Hard-negative mining for SciFact/SQuAD (``num_negatives`` 0: none).
        device: Where the miner runs when ``mining.device`` is unset.

    Raises:
        ValueError: A dataset that cannot train ``loss`` (the message lists those that can), or
            ``softmax`` over more than one dataset.

    Thread safety: reads files and may run the miner; safe from any one thread.
    """
    _check_datasets(datasets, loss, BI_ENCODER_DATA)
    if loss == "softmax" and len(datasets) > 1:
        raise ValueError("the softmax loss trains one classifier: give exactly one dataset")
    root = Path(data_dir)
    miner = _Miner(mining, seed, device)
    examples: list[Example] = []
    try:
        for name in datasets:
            part: list[Example]
            if name in _RETRIEVAL:
                data = _retrieval(name, root, max_examples, seed)
                if miner.enabled and loss in ("mnrl", "triplet"):
                    part = list(triplet_examples(data, miner.negatives(data)))
                elif loss == "triplet":
                    part = list(make_triplets(data.pairs(), seed=seed))
                else:
                    part = list(data.pairs())
                examples.extend(part)
                continue
            pairs = _labelled(name, root)
            if loss == "triplet" or (loss == "mnrl" and name in ("snli", "wikiqa", "trecqa")):
                part = list(make_triplets(pairs, seed=seed))
            elif loss == "mnrl":
                part = list(positive_pairs(pairs, 0.8 if name == "stsb" else 1))
            elif loss == "cosine":
                part = [PairExample(p.a, p.b, float(p.label)) for p in pairs]
            else:
                part = list(pairs)
            examples.extend(sample_examples(part, max_examples, seed=seed))
    finally:
        miner.release()
    return examples


def cross_encoder_examples(
    datasets: Sequence[str],
    loss: str,
    data_dir: str | os.PathLike[str],
    *,
    max_examples: int | None = None,
    seed: int = 0,
    mining: MiningConfig | None = None,
    device: str | None = None,
    both_orders: bool = False,
) -> list[PairExample]:
    """The cross-encoder ``(query, passage, label)`` examples of ``datasets``.

    SciFact and SQuAD give each query's positives (label 1) followed by ``mining.num_negatives``
    mined hard negatives (label 0); they need mining. Arguments as for
    :func:`bi_encoder_examples`; ``max_examples`` caps queries for SciFact/SQuAD.
    ``both_orders`` adds ``(b, a)`` after each ``(a, b)`` of the symmetric datasets (STSb,
    MSRP): a cross-encoder sees its inputs in order, and similarity does not depend on it
    (sentence-transformers' STSb cross-encoder example trains this way).

    Raises:
        ValueError: An unsuitable dataset, or SciFact/SQuAD without mining.

    Thread safety: reads files and may run the miner; safe from any one thread.
    """
    _check_datasets(datasets, loss, CROSS_ENCODER_DATA)
    root = Path(data_dir)
    miner = _Miner(mining, seed, device)
    examples: list[PairExample] = []
    try:
        for name in datasets:
            if name in _RETRIEVAL:
                if not miner.enabled:
                    raise ValueError(
                        f"{name} has positives only: a cross-encoder needs mined negatives"
                        " (hard negatives >= 1)"
                    )
                data = _retrieval(name, root, max_examples, seed)
                examples.extend(bce_examples(data, miner.negatives(data)))
                continue
            pairs = [PairExample(p.a, p.b, float(p.label)) for p in _labelled(name, root)]
            for pair in sample_examples(pairs, max_examples, seed=seed):
                if not isinstance(pair, PairExample):
                    continue
                examples.append(pair)
                if both_orders and name in _SYMMETRIC:
                    examples.append(PairExample(pair.b, pair.a, pair.label))
    finally:
        miner.release()
    return examples


def _sample_groups(pairs: list[PairExample], limit: int | None, seed: int) -> list[PairExample]:
    queries = list(dict.fromkeys(p.a for p in pairs if p.label >= 1))
    if limit is None or limit >= len(queries):
        return pairs
    keep = set(random.Random(seed).sample(queries, limit))
    return [p for p in pairs if p.a in keep]


def dev_evaluator(
    kind: str,
    dev: str,
    datasets: Sequence[str],
    data_dir: str | os.PathLike[str],
    *,
    max_examples: int | None = None,
    seed: int = 0,
) -> tuple[str, Evaluator | None]:
    """The dev set and evaluator for a run.

    Args:
        kind: ``bi-encoder`` or ``cross-encoder``.
        dev: One of :data:`DEV_SETS` (``auto``: see the module docstring; ``none``: no
            evaluation).
        datasets: The training datasets (for ``auto``).
        data_dir: The data root.
        max_examples: At most this many STS pairs, or questions for WikiQA/TrecQA (seeded).
        seed: Seeds that sample.

    Returns:
        ``(dev set name, evaluator)``; ``("none", None)`` without evaluation.

    Thread safety: reads files only.
    """
    if dev not in DEV_SETS:
        raise ValueError(f"unknown dev set {dev!r}; valid: {', '.join(DEV_SETS)}")
    if dev == "auto":
        if kind == "bi-encoder" or list(datasets) == ["stsb"]:
            dev = "stsb"
        else:
            dev = "trecqa" if list(datasets) == ["trecqa"] else "wikiqa"
    root = Path(data_dir)
    if dev == "none":
        return dev, None
    if dev == "stsb":
        pairs = load_stsb(root, "dev")
        sampled = [
            p for p in sample_examples(pairs, max_examples, seed=seed) if isinstance(p, PairExample)
        ]
        return "stsb-dev", StsEvaluator(sampled)
    pairs = load_answer_selection(root, dev, "dev")
    return f"{dev}-dev", RerankingEvaluator(_sample_groups(pairs, max_examples, seed))


def _run_report(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**extra, **result}


def train_bi_encoder(
    model: str,
    datasets: Sequence[str],
    config: TrainingConfig,
    *,
    loss: str = "mnrl",
    data_dir: str | os.PathLike[str] = "../shared/data",
    dev: str = "auto",
    max_examples: int | None = None,
    max_dev_examples: int | None = None,
    mining: MiningConfig | None = None,
    resume_from: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Load the data, train a bi-encoder, save it to ``config.output_dir``; return the report.

    The report is :meth:`TrainingResult.to_dict` plus ``kind``, ``model``, ``data``, ``loss``,
    ``dev_set``, and how many ``pairs`` and ``triplets`` were trained on. A model card
    (``README.md``, :mod:`~sbert_retrieval.training.model_card`) is written next to the model;
    ``command`` is the command line it shows under "Reproduce".

    Thread safety: one run per process at a time (seeds global RNGs).
    """
    examples = bi_encoder_examples(
        datasets,
        loss,
        data_dir,
        max_examples=max_examples,
        seed=config.seed,
        mining=mining,
        device=config.device,
    )
    dev_name, evaluator = dev_evaluator(
        "bi-encoder", dev, datasets, data_dir, max_examples=max_dev_examples, seed=config.seed
    )
    trainer = BiEncoderTrainer(model, examples, config, loss=loss, evaluator=evaluator)
    result = trainer.train(resume_from=resume_from).to_dict()
    report = _run_report(
        result,
        kind="bi-encoder",
        model=str(model),
        data=list(datasets),
        loss=loss,
        dev_set=dev_name,
        pairs=sum(1 for e in examples if isinstance(e, PairExample)),
        triplets=sum(1 for e in examples if not isinstance(e, PairExample)),
    )
    write_model_card(config.output_dir, report, config.to_dict(), command=command)
    return report


def _is_cross_encoder(path: Path) -> bool:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def train_cross_encoder(
    model: str,
    datasets: Sequence[str],
    config: TrainingConfig,
    *,
    loss: str = "bce",
    data_dir: str | os.PathLike[str] = "../shared/data",
    dev: str = "auto",
    max_examples: int | None = None,
    max_dev_examples: int | None = None,
    mining: MiningConfig | None = None,
    resume_from: str | None = None,
    both_orders: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Load the data, train a cross-encoder, save it to ``config.output_dir``; return the report.

    When ``model`` is not a sequence-classification checkpoint (e.g. all-MiniLM-L6-v2), the
    cross-encoder is first initialized from its transformer with
    :func:`~sbert_retrieval.training.saving.init_cross_encoder_from_bi_encoder` (head seeded by
    ``config.seed``) in a temporary folder; the report says so in ``initialized_from_bi_encoder``.
    A model card (``README.md``) is written next to the model, showing ``command``.

    Thread safety: one run per process at a time (seeds global RNGs).
    """
    from sbert_retrieval.training.saving import init_cross_encoder_from_bi_encoder

    mining = mining if mining is not None else MiningConfig(num_negatives=4)
    examples = cross_encoder_examples(
        datasets,
        loss,
        data_dir,
        max_examples=max_examples,
        seed=config.seed,
        mining=mining,
        device=config.device,
        both_orders=both_orders,
    )
    dev_name, evaluator = dev_evaluator(
        "cross-encoder", dev, datasets, data_dir, max_examples=max_dev_examples, seed=config.seed
    )
    source = resolve_model_path(model)
    initialized = not _is_cross_encoder(source)
    with tempfile.TemporaryDirectory(prefix="sbert-cross-init-") as tmp:
        start: Path = source
        if initialized:
            start = init_cross_encoder_from_bi_encoder(
                source, Path(tmp) / "init", seed=config.seed, max_length=config.max_seq_length
            )
        trainer = CrossEncoderTrainer(start, examples, config, loss=loss, evaluator=evaluator)
        result = trainer.train(resume_from=resume_from).to_dict()
    report = _run_report(
        result,
        kind="cross-encoder",
        model=str(model),
        data=list(datasets),
        loss=loss,
        dev_set=dev_name,
        initialized_from_bi_encoder=initialized,
        both_orders=both_orders,
        positives=sum(1 for e in examples if e.label >= 1),
        negatives=sum(1 for e in examples if e.label == 0),
        soft_labels=sum(1 for e in examples if 0 < e.label < 1),
    )
    write_model_card(config.output_dir, report, config.to_dict(), command=command)
    return report
