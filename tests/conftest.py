"""Shared fixtures: a tiny random SBERT model (fast), the real all-MiniLM-L6-v2, data paths."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from sbert_retrieval.encoding.bi_encoder import CPU_BF16_ENV, ONNX_ENV
from sbert_retrieval.models import DEFAULT_MODEL, resolve_model_path

# "auto" precision depends on the CPU (bfloat16 where it is native): the suite pins float32 so
# its numbers are the same on every machine (subprocesses inherit it). Tests of the choice
# itself set the variable themselves.
os.environ[CPU_BF16_ENV] = "0"
# Likewise "auto" takes ONNX Runtime where it is installed: pinned off (tests of it opt in).
os.environ[ONNX_ENV] = "0"

# Property and stateful tests draw fresh examples on every run ("explore", the default), so a
# developer's runs keep searching for new failures, each printed with the blob that replays it.
# CI passes --hypothesis-profile=ci (.ci/run): the examples are derived from each test's source
# instead, so a red CI run is caused by the change under test, not by an unlucky new draw.
settings.register_profile("explore", print_blob=True)
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("explore")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def tiny_transformer_settings(**overrides: object) -> dict[str, object]:
    """Sizes of a 2-layer, 32-wide transformer over MiniLM's vocabulary (any architecture)."""
    return {
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        **overrides,
    }


def tiny_bert_config(**overrides: object):  # type: ignore[no-untyped-def]
    """A 2-layer, 32-wide BERT config over MiniLM's vocabulary."""
    from transformers import BertConfig

    return BertConfig(**tiny_transformer_settings(**overrides))


def copy_minilm_tokenizer(target: Path) -> None:
    """Give ``target`` the real all-MiniLM-L6-v2 tokenizer files."""
    source = resolve_model_path(DEFAULT_MODEL)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, target / name)


def build_tiny_model(
    target: Path,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """A tiny random BERT with MiniLM's tokenizer, in sentence-transformers layout."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(tiny_bert_config()).save_pretrained(target)
    copy_minilm_tokenizer(target)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "1_Pooling").mkdir(exist_ok=True)
    flags = {
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": pooling == "mean_sqrt_len",
        "pooling_mode_lasttoken": pooling == "lasttoken",
    }
    (target / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, **flags})
    )
    (target / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random model (mean pooling, normalized, 64 tokens)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    """A BiEncoder on the tiny model, CPU float32."""
    from sbert_retrieval.encoding import BiEncoder

    return BiEncoder(tiny_model_dir, device="cpu", dtype="float32", batch_size=16)


@pytest.fixture(scope="session")
def minilm_encoder():  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2 from its PyPI package, CPU float32."""
    from sbert_retrieval.encoding import BiEncoder

    return BiEncoder(DEFAULT_MODEL, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"evaluation data not found at {SHARED_DATA}; the checkout must sit beside shared/"
        )
    return SHARED_DATA
