"""The ONNX Runtime backend against torch and sentence-transformers, and how ``auto`` picks it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding import BiEncoder, onnx_backend
from sbert_retrieval.encoding.bi_encoder import CPU_BF16_ENV, ONNX_ENV, resolve_backend
from sbert_retrieval.encoding.onnx_backend import OnnxModel, exported_graph
from sbert_retrieval.reranking import CrossEncoderReranker
from tests.conftest import build_tiny_model
from tests.test_reranking import PAIRS, build_cross_encoder

pytest.importorskip("onnxruntime", reason="the [onnx] extra is part of the test extra")

TEXTS = [
    "",
    "short",
    "a somewhat longer sentence with more tokens in it",
    "naïve café 中文 🚀",
    "word " * 300,  # truncated at the model's 64 tokens
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test exports into its own cache, so none sees another's graphs."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SBERT_RETRIEVAL_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_onnx_vectors_match_torch_and_sentence_transformers(tmp_path: Path, pooling: str) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir = build_tiny_model(tmp_path / "m", pooling=pooling)
    onnx = BiEncoder(model_dir, device="cpu", backend="onnx")
    assert (onnx.backend, onnx.dtype) == ("onnx", torch.float32)
    got = onnx.encode(TEXTS, batch_size=2)  # padded batches of different widths
    torch_fp32 = BiEncoder(model_dir, device="cpu", backend="torch", dtype="float32")
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(got, torch_fp32.encode(TEXTS), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)


def test_an_mpnet_checkpoint_exports_too(tmp_path: Path) -> None:
    # all-mpnet-base-v2's architecture: relative position buckets, no token_type_ids input.
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from tests.conftest import tiny_transformer_settings

    bert = build_tiny_model(tmp_path / "bert")
    model_dir = tmp_path / "mpnet"
    torch.manual_seed(0)
    MPNetModel(
        MPNetConfig(**tiny_transformer_settings(max_position_embeddings=130))
    ).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(
        str(bert), model_input_names=["input_ids", "attention_mask"]
    ).save_pretrained(model_dir)
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling", "2_Normalize"):
        source = bert / name
        if source.is_dir():
            shutil.copytree(source, model_dir / name)
        elif source.exists():
            shutil.copy(source, model_dir / name)
    got = BiEncoder(model_dir, device="cpu", backend="onnx").encode(TEXTS, batch_size=2)
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)


def test_minilm_through_onnx_matches_sentence_transformers(shared_data: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from tests.encoding.test_bi_encoder import EDGE_CASES, scifact_abstracts

    encoder = BiEncoder(device="cpu", backend="onnx")
    texts = EDGE_CASES + scifact_abstracts(shared_data, 8)
    reference = SentenceTransformer(str(encoder.path), device="cpu").encode(texts, batch_size=32)
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5, rtol=0)


def test_the_graph_is_exported_once_per_checkpoint(tmp_path: Path, private_cache: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "m")
    graph = exported_graph(model_dir, "feature-extraction")
    assert graph.parent.parent == private_cache / "onnx"
    stamp = graph.stat().st_mtime_ns
    BiEncoder(model_dir, device="cpu", backend="onnx")  # finds it: no second export
    assert exported_graph(model_dir, "feature-extraction") == graph
    assert graph.stat().st_mtime_ns == stamp
    assert [p.name for p in graph.parent.parent.iterdir()] == [graph.parent.name]  # no leftovers
    # Other weights, another graph: a stale export is never served for a changed checkpoint.
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert exported_graph(other, "feature-extraction") != graph
    a = BiEncoder(model_dir, device="cpu", backend="onnx").encode(["cats"])
    b = BiEncoder(other, device="cpu", backend="onnx").encode(["cats"])
    assert not np.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("num_labels", [1, 3])
def test_onnx_cross_encoder_scores_equal_sentence_transformers(
    tmp_path: Path, num_labels: int
) -> None:
    from sentence_transformers import CrossEncoder

    model_dir = build_cross_encoder(tmp_path / "ce", num_labels)
    ours = CrossEncoderReranker(model_dir, device="cpu", max_length=128, backend="onnx")
    assert ours.backend == "onnx"
    expected = CrossEncoder(str(model_dir), device="cpu", max_length=128).predict(PAIRS)
    expected = np.asarray(expected) if num_labels == 1 else np.asarray(expected)[:, -1]
    np.testing.assert_allclose(ours.predict(PAIRS), expected, atol=1e-5)
    assert ours.truncated == 1


def test_auto_sends_queries_through_onnx_runtime_and_bulk_through_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(ONNX_ENV, raising=False)
    for native, dtype in (("0", torch.float32), ("1", torch.bfloat16)):
        monkeypatch.setenv(CPU_BF16_ENV, native)
        assert resolve_backend("auto", cpu, None) == ("torch+onnx", dtype)
        assert resolve_backend("auto", cpu, "auto") == ("torch+onnx", dtype)
    # An explicit dtype, a GPU, or the opt-out keep torch alone.
    assert resolve_backend("auto", cpu, "float32") == ("torch", torch.float32)
    assert resolve_backend("auto", cuda, None) == ("torch", torch.float16)
    monkeypatch.setenv(ONNX_ENV, "0")
    assert resolve_backend("auto", cpu, None) == ("torch", torch.bfloat16)
    assert resolve_backend("onnx", cpu, None) == ("onnx", torch.float32)
    # Without the extra, auto falls back and onnx says how to install it.
    monkeypatch.delenv(ONNX_ENV)
    monkeypatch.setattr(onnx_backend, "onnx_runtime_available", lambda: False)
    assert resolve_backend("auto", cpu, None) == ("torch", torch.bfloat16)
    with pytest.raises(ValueError, match=r"pip install 'sbert-retrieval\[onnx\]'"):
        resolve_backend("onnx", cpu, None)


def test_auto_routes_by_forward_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONNX_ENV, raising=False)
    model_dir = build_tiny_model(tmp_path / "m")
    encoder = BiEncoder(model_dir, device="cpu")
    assert (encoder.backend, encoder.dtype) == ("torch+onnx", torch.float32)
    assert encoder.core.onnx is None  # made on the first small pass: ingestion never exports
    calls: list[int] = []
    original = OnnxModel.__call__

    def counted(
        self: OnnxModel, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None = None
    ) -> np.ndarray:
        calls.append(ids.size)
        return original(self, ids, mask, types)

    monkeypatch.setattr(OnnxModel, "__call__", counted)
    query = encoder.encode(["what do cats eat"])  # 6 tokens: ONNX Runtime
    assert calls == [6] and encoder.core.onnx is not None
    bulk = [f"sentence {i} " * 10 for i in range(8)]  # 8 × 22 tokens: torch
    got = encoder.encode(bulk, batch_size=8)
    assert calls == [6]
    reference = BiEncoder(model_dir, device="cpu", backend="torch", dtype="float32")
    np.testing.assert_allclose(query, reference.encode(["what do cats eat"]), atol=1e-5)
    np.testing.assert_allclose(got, reference.encode(bulk, batch_size=8), atol=1e-5)
    # The cross-encoder reranks many long pairs at once: auto keeps it on torch.
    reranker = CrossEncoderReranker(build_cross_encoder(tmp_path / "ce"), device="cpu")
    assert reranker.backend == "torch" and reranker._onnx is None


def test_auto_falls_back_to_torch_where_the_export_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(ONNX_ENV, raising=False)
    model_dir = build_tiny_model(tmp_path / "m")
    encoder = BiEncoder(model_dir, device="cpu")

    def unexportable(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(OnnxModel, "__init__", unexportable)
    got = encoder.encode(["a query"])
    assert encoder.backend == "torch"
    assert "no ONNX export (unsupported operator); encoding with torch only" in caplog.text
    reference = BiEncoder(model_dir, device="cpu", backend="torch", dtype="float32")
    np.testing.assert_allclose(got, reference.encode(["a query"]), atol=1e-6)


def test_auto_records_its_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sbert_retrieval.evaluation.data import StsPairs
    from sbert_retrieval.evaluation.sts import evaluate_sts

    monkeypatch.delenv(ONNX_ENV, raising=False)
    encoder = BiEncoder(build_tiny_model(tmp_path / "m"), device="cpu")
    assert encoder.backend == "torch+onnx"
    pairs = StsPairs(
        ("a cat", "a dog", "rain"), ("a kitten", "a car", "snow"), np.array([4, 1, 3.0])
    )
    report = evaluate_sts(pairs, encoder).to_dict()
    assert (report["inference"], report["precision"]) == ("torch+onnx", "float32")


def test_bad_backend_settings_say_what_is_valid(tmp_path: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "m")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; valid: auto, torch, onnx"):
        BiEncoder(model_dir, device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="computes float32, not bfloat16"):
        BiEncoder(model_dir, device="cpu", backend="onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match="runs on CPU only, not cuda"):
        CrossEncoderReranker(build_cross_encoder(tmp_path / "ce"), device="cuda", backend="onnx")
    with pytest.raises(ValueError, match="unknown ONNX task 'ner'; valid: feature-extraction"):
        exported_graph(model_dir, "ner")


def test_the_trainer_never_encodes_through_an_exported_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sbert_retrieval.training.data import PairExample
    from sbert_retrieval.training.trainer import BiEncoderTrainer, TrainingConfig

    monkeypatch.delenv(ONNX_ENV, raising=False)
    trainer = BiEncoderTrainer(
        build_tiny_model(tmp_path / "m"),
        [PairExample("a", "b"), PairExample("c", "d")],
        TrainingConfig(output_dir=str(tmp_path / "out"), batch_size=2, epochs=1),
    )
    assert trainer.encoder.backend == "torch"


def test_the_cli_takes_the_inference_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sbert_retrieval import cli

    model_dir = build_tiny_model(tmp_path / "m")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Cats eat mice.")
    index = ["--index", str(tmp_path / "index"), "--inference-backend", "onnx"]
    assert cli.main(["ingest", str(tmp_path / "docs"), "--model", str(model_dir), *index]) == 0
    capsys.readouterr()
    assert cli.main(["search", *index, "what do cats eat", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["text"] for h in hits] == ["Cats eat mice."]
    with pytest.raises(SystemExit):
        cli.main(["search", "--index", str(tmp_path / "index"), "q", "--inference-backend", "x"])


def test_int8_is_an_opt_in_quantized_graph_that_stays_close_to_float32(
    tmp_path: Path, shared_data: Path
) -> None:
    import onnx

    from sbert_retrieval.encoding.cache import EmbeddingCache
    from tests.encoding.test_bi_encoder import scifact_abstracts

    cpu = torch.device("cpu")
    assert resolve_backend("onnx-int8", cpu, None) == ("onnx-int8", torch.float32)
    with pytest.raises(ValueError, match="onnx-int8 backend runs on CPU only"):
        resolve_backend("onnx-int8", torch.device("cuda"), None)
    with pytest.raises(ValueError, match="computes float32, not bfloat16"):
        resolve_backend("onnx-int8", cpu, "bfloat16")
    int8 = BiEncoder(device="cpu", backend="onnx-int8")
    fp32 = BiEncoder(device="cpu", backend="onnx")
    assert int8.precision == "int8" and fp32.precision == "float32"
    graph = int8.core.onnx.graph if int8.core.onnx is not None else None
    assert graph is not None and graph.name == "model-int8.onnx"
    operators = {node.op_type for node in onnx.load(str(graph)).graph.node}
    assert "MatMulInteger" in operators or "DynamicQuantizeMatMul" in operators, operators
    texts = ["what do cats eat", *scifact_abstracts(shared_data, 8)]
    got, want = int8.encode(texts), fp32.encode(texts)
    cosines = np.sum(got * want, axis=1)  # both normalized
    assert cosines.min() > 0.98, cosines  # close (measured 0.989 on MiniLM) ...
    assert not np.allclose(got, want, atol=1e-4)  # ... and really quantized
    # Cached int8 vectors are never served to a float32 encoder, nor the other way round.
    assert EmbeddingCache.key(int8, texts, "") != EmbeddingCache.key(fp32, texts, "")


def test_the_reranker_refuses_int8_and_the_cli_gives_it_auto(tmp_path: Path) -> None:
    from sbert_retrieval.reranking import reranker_backend

    model_dir = build_cross_encoder(tmp_path / "ce")
    with pytest.raises(ValueError, match=r"bi-encoders only.*valid for a reranker: auto, torch"):
        CrossEncoderReranker(model_dir, device="cpu", backend="onnx-int8")
    assert reranker_backend("onnx-int8") == "auto"
    assert [reranker_backend(b) for b in ("auto", "torch", "onnx")] == ["auto", "torch", "onnx"]


def test_int8_workers_on_several_devices_compute_the_encoders_vectors(tmp_path: Path) -> None:
    from sbert_retrieval.encoding import EngineConfig
    from sbert_retrieval.evaluation.data import StsPairs
    from sbert_retrieval.evaluation.sts import evaluate_sts

    model_dir = build_tiny_model(tmp_path / "m")
    texts = [f"text number {i} " * (1 + i % 5) for i in range(20)]
    alone = BiEncoder(model_dir, device="cpu", backend="onnx-int8", engine=False)
    fanned = BiEncoder(
        model_dir,
        device="cpu",
        backend="onnx-int8",
        batch_size=4,
        engine=EngineConfig(chunk_size=6, devices=("cpu", "cpu")),
    )
    try:
        # Dynamic int8 quantizes activations per batch: other batches move vectors by ~1e-4
        # (float32 workers are off by 3e-3 on this tiny model).
        np.testing.assert_allclose(fanned.encode(texts), alone.encode(texts), atol=5e-4)
        assert fanned._multi_device is not None  # the workers encoded it
    finally:
        fanned.close()
    pairs = StsPairs(("a cat", "a dog"), ("a kitten", "a car"), np.array([4.0, 1.0]))
    assert evaluate_sts(pairs, alone).precision == "int8"
