"""Second-stage reranking with a BERT cross-encoder: (query, passage) → relevance score."""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sbert_retrieval.encoding.batching import longest_first
from sbert_retrieval.encoding.encoder_model import resolve_backend, resolve_device
from sbert_retrieval.encoding.onednn import use_onednn_linear
from sbert_retrieval.encoding.onnx_backend import OnnxModel
from sbert_retrieval.encoding.packed import packed_logits, packs
from sbert_retrieval.encoding.tokens import pad_into, rust_tokenizer, tokenizer_settings
from sbert_retrieval.models import DEFAULT_RERANKER, resolve_model_path

__all__ = ["ACTIVATIONS", "CrossEncoderReranker", "check_rerank_weight", "reranker_backend"]

ACTIVATIONS = ("auto", "sigmoid", "identity", "softmax")


def _saved_activation(config: dict[str, Any]) -> str | None:
    saved = (config.get("sentence_transformers") or {}).get("activation_fn") or ""
    name = str(saved).rsplit(".", 1)[-1].lower()
    return {"sigmoid": "sigmoid", "identity": "identity", "softmax": "softmax"}.get(name)


def reranker_backend(inference_backend: str) -> str:
    """The reranker's backend where the encoder runs ``inference_backend`` (the CLI's and the
    service's one setting for both): the same, except ``onnx-int8``, which is for bi-encoders
    only, and gives the reranker ``auto``."""
    return "auto" if inference_backend == "onnx-int8" else inference_backend


def check_rerank_weight(weight: float) -> float:
    """``weight`` if it is a valid rerank weight, in (0, 1]; else ``ValueError``."""
    if not 0 < weight <= 1:
        raise ValueError(f"rerank_weight must be in (0, 1], got {weight}")
    return weight


@dataclass(frozen=True)
class _PairTokens:
    """Tokenized pairs, flat: ids and token types back to back, with each pair's length and
    offset, and how many pairs were truncated."""

    ids: np.ndarray
    types: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    truncated: int


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a transformers sequence-classification checkpoint.

    Scores equal sentence-transformers' ``CrossEncoder.predict`` on the same checkpoint.

    Args:
        model: Hub id or local directory of a sequence-classification model; ``default`` is
            the reranker this project trained and ships
            (:data:`~sbert_retrieval.models.DEFAULT_RERANKER`).
        device: ``cpu``, ``cuda``, ``auto`` (default: CUDA when available).
        dtype: ``float32``, ``float16``, ``bfloat16`` or ``auto`` (fp16 on CUDA; on CPU bf16
            where the CPU computes it natively, else fp32: see ``cpu_native_bf16``).
        backend: ``auto`` (default: torch), ``torch`` or ``onnx`` (ONNX Runtime, float32, CPU:
            :func:`~sbert_retrieval.encoding.encoder_model.resolve_backend`); ``onnx-int8`` is
            refused.
        max_length: Tokens per pair, special tokens included (default: the tokenizer's limit).
            Longer pairs are truncated, longest side first, and counted in ``truncated``.
        batch_size: Pairs per forward pass (default 32).
        activation: ``auto`` (what the checkpoint saved, else sigmoid for one label, identity
            for more), ``sigmoid``, ``identity`` or ``softmax``.
        label: With several labels, which one is the relevance score (index or name; default:
            the last, the "relevant"/"entailment" class by convention).
        rerank_weight: The reranker's share of a reranked hit's final score, blended with the
            first stage's (:func:`~sbert_retrieval.retrieval.rerank_hits`), in (0, 1], after
            any first stage. Default: the weights the checkpoint recommends per first stage
            (``config.json`` ``sbert_retrieval.rerank_weights``, e.g. ``{"dense": 0.8,
            "hybrid": 0.5}``, chosen on dev when it was trained; ``rerank_weight`` there is
            the one for any other stage), else 1 (reranker order only).

    Thread safety: :meth:`predict` and :meth:`score` are serialized by an internal lock.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        activation: str = "auto",
        label: int | str | None = None,
        rerank_weight: float | None = None,
        backend: str = "auto",
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = resolve_model_path(DEFAULT_RERANKER if str(model) == "default" else model)
        self.device = resolve_device(device)
        # auto on CPU: bfloat16 where native, as the bi-encoder (2.3x the float32 speed here;
        # scores move by ~0.01 and dev nDCG@10 by <= 0.003, BENCHMARKS.md).
        if backend == "onnx-int8":
            # Measured: int8 moved this project's reranker scores by up to 0.58 (BENCHMARKS.md).
            raise ValueError(
                "the onnx-int8 backend is for bi-encoders only (int8 moved cross-encoder scores"
                " by up to 0.58); valid for a reranker: auto, torch, onnx"
            )
        self.backend, self.dtype = resolve_backend(backend, self.device, dtype)
        # Reranking scores a query's top 20-100 long pairs at once, where ONNX Runtime measured
        # no faster than torch (BENCHMARKS.md): auto reranks with torch alone.
        self.backend = "torch" if self.backend == "torch+onnx" else self.backend
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(self.path))
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(
            str(self.path), dtype=self.dtype
        )
        self.model.to(self.device).eval()
        if self.device.type == "cpu" and self.backend == "torch":
            # oneDNN GEMMs with the bias and GELU fused: 1.24x in float32, 1.1x in bfloat16 on
            # a SciFact top 20 (BENCHMARKS.md); the trainer's gradient steps still run nn.Linear.
            use_onednn_linear(self.model)
        self._onnx = (
            OnnxModel(self.path, "sequence-classification") if self.backend == "onnx" else None
        )
        config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        self.num_labels = int(self.model.config.num_labels)
        if activation == "auto":
            activation = _saved_activation(config) or (
                "sigmoid" if self.num_labels == 1 else "identity"
            )
        self.activation = activation
        self.label = self._label_index(label)
        ours = config.get("sbert_retrieval") or {}
        weight = float(rerank_weight if rerank_weight is not None else ours.get("rerank_weight", 1))
        check_rerank_weight(weight)
        self.rerank_weight = weight
        #: Recommended weight per first stage (empty when ``rerank_weight`` was given).
        self.rerank_weights: dict[str, float] = {}
        if rerank_weight is None:
            for stage, value in (ours.get("rerank_weights") or {}).items():
                self.rerank_weights[str(stage)] = check_rerank_weight(float(value))
        # The tokenizer's limit can exceed the model's position table (e.g. 512 vs 128).
        limits = [int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            limits.append(positions)
        self.max_length = int(max_length or min(limits))
        self.batch_size = batch_size
        self.truncated = 0
        self._lock = threading.Lock()
        # The Rust tokenizer itself, configured once: the wrapper's per-call Python work costs
        # more than the tokenization on short pairs.
        self._backend = rust_tokenizer(*tokenizer_settings(self.tokenizer, self.max_length))
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._pad_id = int(self.tokenizer.pad_token_id or 0)

    def rerank_weight_for(self, first_stage: str) -> float:
        """The share of this reranker's score after ``first_stage`` (``dense``, ``lexical``,
        ``hybrid``): the checkpoint's weight for that stage, else :attr:`rerank_weight`."""
        return self.rerank_weights.get(first_stage, self.rerank_weight)

    def _label_index(self, label: int | str | None) -> int:
        if label is None:
            return self.num_labels - 1
        if isinstance(label, int):
            if not 0 <= label < self.num_labels:
                raise ValueError(f"label {label} out of range for {self.num_labels} labels")
            return label
        names = {str(v).lower(): int(k) for k, v in self.model.config.id2label.items()}
        if label.lower() not in names:
            raise ValueError(f"unknown label {label!r}; valid: {', '.join(sorted(names))}")
        return names[label.lower()]

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Score pairs; returns ``(len(pairs),)`` float32 in input order, higher = more relevant.

        Pairs are tokenized in one call of the Rust tokenizer, sorted by length (least
        padding) and batched; on CUDA the inputs go through pinned memory without blocking and
        the scores stay on the device until the last batch, so the GPU never waits for the host
        between batches. Thread safety: serialized.
        """
        scores = np.empty(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        with self._lock:
            tokens = self._tokenize(pairs)
            self.truncated += tokens.truncated
            # Longest first, as the bi-encoder batches: each batch pads to its first pair.
            order = longest_first(tokens.lengths)
            cuda = self.device.type == "cuda"
            on_device = torch.empty(len(pairs), dtype=torch.float32, device=self.device)
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    features = self._features(tokens, rows, pin=cuda)
                    if self._onnx is not None:
                        logits = torch.from_numpy(
                            self._onnx(**{name: t.numpy() for name, t in features.items()})
                        )
                    else:
                        logits = self._logits(features).float()
                    host_rows = torch.from_numpy(rows.astype(np.int64))
                    if cuda:
                        host_rows = host_rows.pin_memory()
                    on_device[host_rows.to(self.device, non_blocking=True)] = self._activate(logits)
            scores[:] = on_device.cpu().numpy()
        return scores

    def _logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The torch model's logits of one batch: through
        :func:`~sbert_retrieval.encoding.packed.packed_logits` (padding-free, and the last
        layer for the pooled token only: worth it at any padding) where the model allows, else
        the padded forward pass."""
        mask = features["attention_mask"]
        if packs(self.model, mask, classifier=True):
            return packed_logits(
                self.model, features["input_ids"], mask, features.get("token_type_ids")
            )
        logits: torch.Tensor = self.model(**features).logits
        return logits

    def features(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """The model's inputs for ``pairs``, in input order, padded to the longest, on
        :attr:`device`: what :meth:`predict` feeds per batch, and what the trainer feeds with
        gradients on. Truncated pairs are counted in :attr:`truncated`.

        Thread safety: serialized with :meth:`predict`.
        """
        with self._lock:
            tokens = self._tokenize(pairs)
            self.truncated += tokens.truncated
        return self._features(tokens, np.arange(len(pairs)), pin=False)

    def _features(
        self, tokens: _PairTokens, rows: np.ndarray, *, pin: bool
    ) -> dict[str, torch.Tensor]:
        """``rows`` of ``tokens`` as padded model inputs on :attr:`device` (through pinned
        memory without blocking where ``pin``)."""
        width = int(tokens.lengths[rows].max())
        host_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.int32)
        host_types = torch.zeros((len(rows), width), dtype=torch.int32)
        offsets, lengths = tokens.offsets[rows], tokens.lengths[rows]
        pad_into(tokens.ids, offsets, lengths, host_ids.numpy())
        pad_into(tokens.types, offsets, lengths, host_types.numpy())
        host_lengths = torch.from_numpy(lengths.astype(np.int64))
        if pin:
            host_ids, host_types = host_ids.pin_memory(), host_types.pin_memory()
            host_lengths = host_lengths.pin_memory()
        batch_lengths = host_lengths.to(self.device, non_blocking=True)
        features = {
            "input_ids": host_ids.to(self.device, non_blocking=True).long(),
            "attention_mask": (
                torch.arange(width, device=self.device)[None, :] < batch_lengths[:, None]
            ).long(),
        }
        if self._uses_token_types:
            features["token_type_ids"] = host_types.to(self.device, non_blocking=True).long()
        return features

    def _tokenize(self, pairs: Sequence[tuple[str, str]]) -> _PairTokens:
        encodings = self._backend.encode_batch_fast([(q, p) for q, p in pairs])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(pairs))
        total = int(lengths.sum())
        ids = np.fromiter(
            itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total
        )
        types = np.fromiter(
            itertools.chain.from_iterable(e.type_ids for e in encodings),
            dtype=np.int32,
            count=total,
        )
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype(np.int64)
        # Truncation keeps what it cut as overflow: a non-empty overflow means the pair was cut.
        truncated = sum(1 for e in encodings if e.overflowing)
        return _PairTokens(ids, types, lengths, offsets, truncated)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.activation == "sigmoid":
            logits = torch.sigmoid(logits)
        elif self.activation == "softmax":
            logits = torch.softmax(logits, dim=-1)
        return logits[:, self.label] if logits.shape[-1] > 1 else logits[:, 0]

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Scores of ``passages`` for ``query``: the ``Reranker`` protocol of the retriever."""
        return [float(s) for s in self.predict([(query, p) for p in passages])]
