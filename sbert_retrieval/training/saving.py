"""Writing trained models in layouts other tools load.

* Bi-encoders: the sentence-transformers layout, the same files all-MiniLM-L6-v2 ships with —
  ``model.safetensors`` + ``config.json`` + tokenizer, ``modules.json`` (Transformer, Pooling,
  Normalize), ``1_Pooling/config.json``, ``sentence_bert_config.json`` (``max_seq_length``),
  ``2_Normalize/`` when normalized, ``config_sentence_transformers.json`` (prompts). Both
  ``sentence_transformers.SentenceTransformer(path)`` and our ``BiEncoder(path)`` load it and
  encode identically.
* Cross-encoders: a transformers sequence-classification checkpoint with its tokenizer;
  ``config.json`` names the activation under ``sentence_transformers.activation_fn`` (sigmoid for
  one label) and the tokenizer's ``model_max_length`` is the truncation length, so
  ``CrossEncoderReranker(path)`` and ``sentence_transformers.CrossEncoder(path)`` score alike.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sbert_retrieval.encoding.bi_encoder import DTYPES, BiEncoder
from sbert_retrieval.models import resolve_model_path

__all__ = [
    "SIGMOID",
    "init_cross_encoder_from_bi_encoder",
    "save_bi_encoder",
    "save_cross_encoder",
]

SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"
_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def _torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(sorted(DTYPES))}") from None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    versions: dict[str, str] = {"pytorch": str(torch.__version__)}
    for package in ("transformers", "sbert-retrieval"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package.replace("-", "_")] = metadata.version(package)
    return versions


def _save_transformers_model(model: Any, path: Path, dtype: str) -> None:
    target = _torch_dtype(dtype)
    source_dtype = next(model.parameters()).dtype
    if target != source_dtype:
        # Never cast the caller's model: training goes on in float32 after a save.
        model = copy.deepcopy(model).to(device="cpu", dtype=target)
    model.save_pretrained(str(path))


def save_bi_encoder(
    encoder: BiEncoder,
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    prompts: Mapping[str, str] | None = None,
) -> Path:
    """Save a bi-encoder in the sentence-transformers layout.

    Args:
        encoder: The encoder; its model, tokenizer, pooling, normalization and
            ``max_seq_length`` are written.
        path: Target directory (created; files of the same names are replaced).
        dtype: Weight dtype on disk: ``float32`` (default), ``float16`` or ``bfloat16``.
        prompts: Named prefixes for ``config_sentence_transformers.json`` (default: the
            encoder's own ``prompts``).

    Returns:
        The directory.

    Thread safety: reads the encoder's weights; do not run concurrently with training steps.
    """
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    _save_transformers_model(encoder.model, target, dtype)
    encoder.tokenizer.save_pretrained(str(target))
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if encoder.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (target / "2_Normalize").mkdir(exist_ok=True)
    _write_json(target / "modules.json", modules)
    (target / "1_Pooling").mkdir(exist_ok=True)
    pooling: dict[str, Any] = {"word_embedding_dimension": encoder.dimension}
    pooling.update({flag: encoder.pooling == mode for mode, flag in _POOLING_FLAGS.items()})
    pooling["include_prompt"] = True
    _write_json(target / "1_Pooling" / "config.json", pooling)
    _write_json(
        target / "sentence_bert_config.json",
        {"max_seq_length": encoder.max_seq_length, "do_lower_case": False},
    )
    chosen = dict(encoder.prompts if prompts is None else prompts)
    _write_json(
        target / "config_sentence_transformers.json",
        {
            "__version__": _versions(),
            "model_type": "SentenceTransformer",
            "prompts": chosen,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    return target


def save_cross_encoder(
    model: Any,
    tokenizer: Any,
    path: str | os.PathLike[str],
    *,
    max_length: int,
    dtype: str = "float32",
) -> Path:
    """Save a sequence-classification cross-encoder that both rerankers load alike.

    Args:
        model: A transformers ``*ForSequenceClassification`` model.
        tokenizer: Its tokenizer.
        path: Target directory (created; files of the same names are replaced).
        max_length: Tokens per (query, passage) pair, written as the tokenizer's limit
            (:func:`_set_tokenizer_limit`) so every loader truncates the same way.
        dtype: Weight dtype on disk: ``float32`` (default), ``float16`` or ``bfloat16``.

    Returns:
        The directory.

    Thread safety: reads the model's weights; do not run concurrently with training steps.
    """
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    num_labels = int(model.config.num_labels)
    settings = dict(getattr(model.config, "sentence_transformers", None) or {})
    settings["activation_fn"] = SIGMOID if num_labels == 1 else IDENTITY
    model.config.sentence_transformers = settings
    _save_transformers_model(model, target, dtype)
    tokenizer.save_pretrained(str(target))
    _set_tokenizer_limit(target, max_length)
    return target


def _set_tokenizer_limit(path: Path, max_length: int) -> None:
    """Write ``max_length`` everywhere a saved tokenizer keeps its limit: ``tokenizer_config.json``
    (``model_max_length``, what transformers and sentence-transformers truncate at) and
    ``tokenizer.json``'s own truncation, whose fixed padding is dropped.

    A tokenizer saved from a bi-encoder keeps whatever its source stored (all-MiniLM-L6-v2's
    file truncates at 128 and pads every text to 128). transformers and sentence-transformers
    override both per call, but a loader that reads the file with ``tokenizers`` alone (an ONNX
    or Rust server) would cut pairs at 128 and pad short ones, unlike the model card's limit.
    """
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    config["model_max_length"] = int(max_length)
    _write_json(config_file, config)
    file = path / "tokenizer.json"
    if not file.is_file():
        return
    data = json.loads(file.read_text(encoding="utf-8"))
    direction = (data.get("truncation") or {}).get("direction", "Right")
    data["truncation"] = {
        "direction": direction,
        "max_length": int(max_length),
        "strategy": "LongestFirst",
        "stride": 0,
    }
    data["padding"] = None
    _write_json(file, data)


def _position_limit(config: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    # RoBERTa-style models reserve two positions for the padding offset.
    return positions - 2 if positions in (514, 130) else positions


def init_cross_encoder_from_bi_encoder(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    num_labels: int = 1,
    *,
    seed: int = 0,
    max_length: int | None = None,
) -> Path:
    """A sequence-classification cross-encoder whose encoder is a bi-encoder's transformer.

    Every weight of the bi-encoder's transformer (embeddings, layers, BERT's pooler) is copied
    exactly (a pooler the classifier never reads, as in MPNet or RoBERTa, is left out); any
    architecture with a ``*ForSequenceClassification`` class works. The classification head is
    freshly initialized from ``seed`` (normal with the config's ``initializer_range``; the
    global RNG is left untouched). This is how the project's MiniLM cross-encoder starts from
    all-MiniLM-L6-v2.

    Args:
        model_dir: The bi-encoder (hub id or directory; sentence-transformers layout or plain).
        out_dir: Where to write the cross-encoder.
        num_labels: Outputs of the head (1: a relevance score).
        seed: Seeds the head.
        max_length: Tokens per pair (default: the tokenizer's limit, capped by the model's
            positions and 512).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: ``num_labels < 1``, or the bi-encoder's weights do not fit the model.

    Thread safety: self-contained; safe to call from any thread (loads its own copies).
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    source = resolve_model_path(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = AutoModel.from_pretrained(str(source), dtype=torch.float32)
        config = AutoConfig.from_pretrained(str(source), num_labels=num_labels)
        model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    missing, unexpected = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
    # MPNet's and RoBERTa's classifiers read the first token through their own head, without
    # the encoder's pooler: those weights have nowhere to go and are not needed.
    unexpected = [key for key in unexpected if not key.startswith("pooler.")]
    if missing or unexpected:
        raise ValueError(
            f"{source}: its transformer does not fit {type(model).__name__}: missing"
            f" {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.config.architectures = [type(model).__name__]
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    limit = int(getattr(tokenizer, "model_max_length", 512) or 512)
    if limit >= 1_000_000:
        limit = 512
    length = max_length or min(limit, _position_limit(model.config), 512)
    return save_cross_encoder(model, tokenizer, out_dir, max_length=length)
