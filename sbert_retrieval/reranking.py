"""Second-stage reranking with a BERT cross-encoder: (query, passage) → relevance score."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sbert_retrieval.encoding.bi_encoder import _resolve_device, _resolve_dtype
from sbert_retrieval.models import resolve_model_path

__all__ = ["ACTIVATIONS", "CrossEncoderReranker"]

ACTIVATIONS = ("auto", "sigmoid", "identity", "softmax")


def _saved_activation(config: dict[str, Any]) -> str | None:
    saved = (config.get("sentence_transformers") or {}).get("activation_fn") or ""
    name = str(saved).rsplit(".", 1)[-1].lower()
    return {"sigmoid": "sigmoid", "identity": "identity", "softmax": "softmax"}.get(name)


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a transformers sequence-classification checkpoint.

    Scores equal sentence-transformers' ``CrossEncoder.predict`` on the same checkpoint.

    Args:
        model: Hub id or local directory of a sequence-classification model.
        device: ``cpu``, ``cuda``, ``auto`` (default: CUDA when available).
        dtype: ``float32``, ``float16``, ``bfloat16`` or ``auto`` (fp16 on CUDA, fp32 on CPU).
        max_length: Tokens per pair, special tokens included (default: the tokenizer's limit).
            Longer pairs are truncated, longest side first, and counted in ``truncated``.
        batch_size: Pairs per forward pass (default 32).
        activation: ``auto`` (what the checkpoint saved, else sigmoid for one label, identity
            for more), ``sigmoid``, ``identity`` or ``softmax``.
        label: With several labels, which one is the relevance score (index or name; default:
            the last, the "relevant"/"entailment" class by convention).

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
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = resolve_model_path(model)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(self.path))
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(
            str(self.path), dtype=self.dtype
        )
        self.model.to(self.device).eval()
        config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        self.num_labels = int(self.model.config.num_labels)
        if activation == "auto":
            activation = _saved_activation(config) or (
                "sigmoid" if self.num_labels == 1 else "identity"
            )
        self.activation = activation
        self.label = self._label_index(label)
        # The tokenizer's limit can exceed the model's position table (e.g. 512 vs 128).
        limits = [int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            limits.append(positions)
        self.max_length = int(max_length or min(limits))
        self.batch_size = batch_size
        self.truncated = 0
        self._lock = threading.Lock()

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

        Pairs are batched by token length to cut padding. Thread safety: serialized.
        """
        scores = np.empty(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        with self._lock:
            encoded = self.tokenizer(
                [q for q, _ in pairs],
                [p for _, p in pairs],
                truncation=True,
                max_length=self.max_length,
                padding=False,
                return_attention_mask=False,
            )
            self.truncated += sum(1 for enc in encoded.encodings if enc.overflowing)
            ids = encoded["input_ids"]
            types = encoded.get("token_type_ids")
            order = np.argsort([-len(x) for x in ids], kind="stable")
            pad = int(self.tokenizer.pad_token_id or 0)
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    width = max(len(ids[i]) for i in rows)
                    input_ids = np.full((len(rows), width), pad, dtype=np.int64)
                    mask = np.zeros((len(rows), width), dtype=np.int64)
                    token_types = np.zeros((len(rows), width), dtype=np.int64)
                    for r, i in enumerate(rows):
                        input_ids[r, : len(ids[i])] = ids[i]
                        mask[r, : len(ids[i])] = 1
                        if types is not None:
                            token_types[r, : len(types[i])] = types[i]
                    features = {
                        "input_ids": torch.from_numpy(input_ids).to(self.device),
                        "attention_mask": torch.from_numpy(mask).to(self.device),
                    }
                    if types is not None:
                        features["token_type_ids"] = torch.from_numpy(token_types).to(self.device)
                    logits = self.model(**features).logits.float()
                    scores[rows] = self._activate(logits).cpu().numpy()
        return scores

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.activation == "sigmoid":
            logits = torch.sigmoid(logits)
        elif self.activation == "softmax":
            logits = torch.softmax(logits, dim=-1)
        return logits[:, self.label] if logits.shape[-1] > 1 else logits[:, 0]

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Scores of ``passages`` for ``query``: the ``Reranker`` protocol of the retriever."""
        return [float(s) for s in self.predict([(query, p) for p in passages])]
