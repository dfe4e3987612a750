"""The encoding core: its layering, and that every runner computes the same vectors on it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.encoding.encoder_model import EncoderModel

TEXTS = ["one", "a longer text than the first one", "mid length text", ""]


def _imports(module: str) -> set[str]:
    """Every ``sbert_retrieval`` module that ``module``'s source imports, anywhere in it."""
    source = Path(importlib.import_module(module).__file__ or "").read_text(encoding="utf-8")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("sbert_retrieval")}


@pytest.mark.parametrize(
    ("module", "must_not_import"),
    [
        ("sbert_retrieval.encoding.encoder_model", ("bi_encoder", "engine", "multi_device")),
        ("sbert_retrieval.encoding.engine", ("bi_encoder", "multi_device")),
        ("sbert_retrieval.encoding.multi_device", ("bi_encoder",)),
    ],
)
def test_the_runners_build_on_the_core_without_an_import_cycle(
    module: str, must_not_import: tuple[str, ...]
) -> None:
    imported = _imports(module)
    for name in must_not_import:
        assert f"sbert_retrieval.encoding.{name}" not in imported, imported


def test_the_core_alone_encodes_what_the_bi_encoder_does(tiny_model_dir: Path) -> None:
    encoder = BiEncoder(tiny_model_dir, device="cpu", backend="torch", dtype="float32")
    core = EncoderModel(
        encoder.path,
        device=torch.device("cpu"),
        backend="torch",
        dtype=torch.float32,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
        input_names=tuple(encoder.tokenizer.model_input_names),
        pad_id=int(encoder.tokenizer.pad_token_id or 0),
    )
    ids = encoder.tokenize(TEXTS).input_ids
    with core.lock, torch.inference_mode():
        got = core.forward_ids(ids)
    np.testing.assert_allclose(got, encoder.encode(TEXTS), atol=1e-6, rtol=0)
    input_ids, mask = core.pad(ids)
    assert input_ids.shape == mask.shape == (len(TEXTS), max(len(row) for row in ids))
    assert mask.sum(dim=1).tolist() == [len(row) for row in ids]


def test_the_engine_runs_the_encoders_core(tiny_model_dir: Path) -> None:
    encoder = BiEncoder(tiny_model_dir, device="cpu", backend="torch", dtype="float32")
    assert encoder.engine.core is encoder.core
    vectors, truncated = encoder.engine.encode(TEXTS)
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS), atol=1e-6, rtol=0)
    assert truncated == 0
