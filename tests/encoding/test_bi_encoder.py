"""The bi-encoder against sentence-transformers, the reference implementation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.encoding.bi_encoder import CPU_BF16_ENV, cpu_native_bf16
from sbert_retrieval.encoding.encoder_model import _resolve_dtype
from sbert_retrieval.reranking import CrossEncoderReranker
from tests.conftest import build_tiny_model

EDGE_CASES = [
    "",
    " ",
    "  leading and trailing spaces  ",
    "Unicode: naïve café, Ελληνικά, 中文, emoji 🚀🔥",
    "A" * 5,
    "word " * 400,  # beyond max_seq_length: truncated the same way
    "Tabs\tand\nnewlines\r\nmixed",
]


def scifact_abstracts(shared_data: Path, count: int) -> list[str]:
    texts = []
    with gzip.open(shared_data / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(f"{record['title']} {record['text']}".strip())
            if len(texts) == count:
                break
    return texts


@pytest.fixture(scope="module")
def st_minilm(minilm_encoder):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_encoder.path), device="cpu")


def test_minilm_matches_sentence_transformers(minilm_encoder, st_minilm, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    texts = EDGE_CASES + scifact_abstracts(shared_data, 40)
    ours = minilm_encoder.encode(texts)
    reference = st_minilm.encode(texts, convert_to_numpy=True, batch_size=32)
    assert ours.dtype == np.float32
    assert ours.shape == (len(texts), 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_minilm_settings_come_from_its_config(minilm_encoder) -> None:  # type: ignore[no-untyped-def]
    assert (minilm_encoder.max_seq_length, minilm_encoder.pooling, minilm_encoder.normalize) == (
        256,
        "mean",
        True,
    )
    assert minilm_encoder.dimension == 384


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt_len", "lasttoken"])
@pytest.mark.parametrize("normalize", [True, False])
def test_every_pooling_mode_matches_sentence_transformers(
    tmp_path: Path, pooling: str, normalize: bool
) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir = build_tiny_model(tmp_path / "m", pooling=pooling, normalize=normalize)
    texts = [*EDGE_CASES, "short", "a somewhat longer sentence with more tokens in it"]
    ours = BiEncoder(model_dir, device="cpu").encode(texts, batch_size=3)
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        texts, convert_to_numpy=True
    )
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_order_and_batch_size_do_not_change_vectors(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    texts = [f"sentence number {i} " * (1 + i % 9) for i in range(50)]
    whole = tiny_encoder.encode(texts, batch_size=64)
    np.testing.assert_allclose(tiny_encoder.encode(texts, batch_size=1), whole, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode(texts[::-1])[::-1], whole, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode([texts[7]])[0], whole[7], atol=1e-5)


def test_one_string_gives_one_vector(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    one = tiny_encoder.encode("a single query")
    assert one.shape == (tiny_encoder.dimension,)
    assert np.allclose(one, tiny_encoder.encode(["a single query"])[0], atol=1e-6)


def test_empty_input_gives_an_empty_matrix(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_truncation_is_counted(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    batch = tiny_encoder.tokenize(["short text", "word " * 62, "word " * 63, "word " * 1000])
    # 64 tokens max: 62 words + [CLS] + [SEP] fit; 63 do not.
    assert batch.truncated == 2
    assert [len(ids) for ids in batch.input_ids] == [4, 64, 64, 64]


def test_prefix_is_prepended(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(
        tiny_encoder.encode(["the text"], prefix="query: "),
        tiny_encoder.encode(["query: the text"]),
        atol=1e-6,
    )


def test_bfloat16_stays_close_to_float32(tiny_model_dir: Path) -> None:
    texts = [f"bfloat16 check {i} " * (1 + i % 5) for i in range(20)]
    reference = BiEncoder(tiny_model_dir, device="cpu", dtype="float32").encode(texts)
    low = BiEncoder(tiny_model_dir, device="cpu", dtype="bfloat16").encode(texts)
    assert low.dtype == np.float32
    cosines = np.sum(low * reference, axis=1)
    assert cosines.min() >= 0.995


def cpuinfo_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}


def test_auto_precision_follows_the_cpu(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(CPU_BF16_ENV)
    flags = cpuinfo_flags()
    if flags:  # the probe agrees with the kernel's view of the CPU
        assert cpu_native_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert _resolve_dtype("auto", cpu) == _resolve_dtype(None, cpu) == torch.bfloat16
    assert _resolve_dtype("float32", cpu) == torch.float32
    assert _resolve_dtype("auto", cuda) == torch.float16
    encoder = BiEncoder(tiny_model_dir, device="cpu")
    assert encoder.dtype == torch.bfloat16
    assert encoder.encode(["a check"]).dtype == np.float32
    # The reranker follows the same rule.
    assert CrossEncoderReranker(tiny_model_dir, device="cpu").dtype == torch.bfloat16
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert BiEncoder(tiny_model_dir, device="cpu").dtype == torch.float32
    assert CrossEncoderReranker(tiny_model_dir, device="cpu").dtype == torch.float32


def test_bad_settings_list_the_valid_choices(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="valid: auto, bf16"):
        BiEncoder(tiny_model_dir, dtype="float8")
    with pytest.raises(ValueError, match="mean_sqrt_len"):
        BiEncoder(tiny_model_dir, pooling="median")
    with pytest.raises(ValueError, match="batch_size"):
        BiEncoder(tiny_model_dir, batch_size=0)


def test_explicit_arguments_override_the_config(tiny_model_dir: Path) -> None:
    encoder = BiEncoder(tiny_model_dir, max_seq_length=16, pooling="cls", normalize=False)
    assert (encoder.max_seq_length, encoder.pooling, encoder.normalize) == (16, "cls", False)
    assert encoder.tokenize(["word " * 40]).truncated == 1
    assert encoder.spec().pooling == "cls"


class OutOfMemoryAbove(torch.nn.Module):
    """Fault injection: the real model, but batches above ``limit`` texts raise CUDA's OOM error."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = model
        self.limit = limit
        self.batch_sizes: list[int] = []
        self.succeeded: list[int] = []

    def forward(self, **features: torch.Tensor):  # type: ignore[no-untyped-def]
        size = int(features["input_ids"].shape[0])
        self.batch_sizes.append(size)
        if size > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {size} texts do not fit")
        self.succeeded.append(size)
        return self.inner(**features)


def test_out_of_memory_splits_the_batch_instead_of_crashing(tiny_model_dir: Path) -> None:
    texts = [f"out of memory text {i} " * (1 + i % 6) for i in range(40)]
    reference = BiEncoder(tiny_model_dir, device="cpu", batch_size=64).encode(texts)
    encoder = BiEncoder(tiny_model_dir, device="cpu", batch_size=32)
    faulty = OutOfMemoryAbove(encoder.model, limit=5)
    encoder.model = faulty
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)
    assert faulty.batch_sizes[0] == 32  # tried as asked, then split: 16, 8, 4
    assert max(faulty.succeeded) <= 5
    assert sum(faulty.succeeded) == len(texts)
    # Later calls start from the size that worked instead of failing again.
    faulty.batch_sizes.clear()
    encoder.encode(texts)
    assert max(faulty.batch_sizes) <= 5


def test_a_single_text_that_does_not_fit_still_raises(tiny_model_dir: Path) -> None:
    encoder = BiEncoder(tiny_model_dir, device="cpu")
    encoder.model = OutOfMemoryAbove(encoder.model, limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        encoder.encode(["anything"])


def test_token_budget_sizes_batches_by_length(tiny_model_dir: Path) -> None:
    texts = ["word " * 60] * 4 + ["hi"] * 40  # 62 tokens vs 3 tokens with specials
    encoder = BiEncoder(tiny_model_dir, device="cpu", batch_size=64, max_batch_tokens=130)
    recorder = OutOfMemoryAbove(encoder.model, limit=10_000)
    encoder.model = recorder
    vectors = encoder.encode(texts)
    assert recorder.batch_sizes[:2] == [2, 2]  # 130 // 62 = 2 long texts per batch
    assert recorder.batch_sizes[2] == 40  # 130 // 3 = 43, capped by the 40 left
    reference = BiEncoder(tiny_model_dir, device="cpu").encode(texts)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BiEncoder(tiny_model_dir, max_batch_tokens=0)


def test_the_lazy_engine_is_created_once_under_concurrent_first_use(
    tiny_encoder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    from sbert_retrieval.encoding import bi_encoder

    created: list[object] = []

    class SlowEngine:
        def __init__(self, *args: object) -> None:
            time.sleep(0.05)  # widens the window two unlocked threads would both enter
            created.append(self)

    monkeypatch.setattr(bi_encoder, "EncodingEngine", SlowEngine)
    monkeypatch.setattr(tiny_encoder, "_engine", None)
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def first_use() -> None:
        barrier.wait()
        seen.append(tiny_encoder.engine)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1
    assert all(engine is created[0] for engine in seen)


def test_spec_takes_the_models_prompts_as_the_cli_does(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The Python quick start (``HnswStore(path, encoder.spec())``) and the CLI agree."""
    import json
    import shutil

    from sbert_retrieval.models import default_prefixes

    path = tmp_path / "prompted"
    shutil.copytree(tiny_model_dir, path)
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    encoder = BiEncoder(path)
    spec = encoder.spec()
    assert (spec.query_prefix, spec.passage_prefix) == default_prefixes(encoder.prompts)
    assert (spec.query_prefix, spec.passage_prefix) == ("query: ", "passage: ")
    explicit = encoder.spec(query_prefix="", passage_prefix="p: ")
    assert (explicit.query_prefix, explicit.passage_prefix) == ("", "p: ")
