"""The training loop on tiny models: saving for sentence-transformers, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.models import load_model_config
from sbert_retrieval.reranking import CrossEncoderReranker
from sbert_retrieval.training import (
    BiEncoderTrainer,
    CrossEncoderTrainer,
    GroupExample,
    PairExample,
    RerankingEvaluator,
    StsEvaluator,
    TrainingConfig,
    TripletExample,
    init_cross_encoder_from_bi_encoder,
    latest_checkpoint,
    save_bi_encoder,
    save_cross_encoder,
)
from tests.conftest import build_tiny_model

TOPICS = ["cats", "stocks", "volcanoes", "football", "cooking", "planets", "music", "rivers"]
PAIRS = [
    PairExample(f"what about {t} {i}?", f"A passage on {t}, number {i}, with detail.", 1)
    for i in range(2)
    for t in TOPICS
]  # 16 positive pairs
TEXTS = ["short", "a somewhat longer sentence about cats", "naïve café 中文 🚀", "word " * 80]


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def config(tmp_path: Path, name: str, **overrides: object) -> TrainingConfig:
    settings: dict[str, object] = {"batch_size": 4, "lr": 1e-3, "seed": 7, "device": "cpu"}
    settings.update(overrides)
    return TrainingConfig(tmp_path / name, **settings)  # type: ignore[arg-type]


def test_bi_encoder_trains_and_loads_in_sentence_transformers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    trainer = BiEncoderTrainer(tiny_model_dir, PAIRS[:12], config(tmp_path, "out"), loss="mnrl")
    before = weights(trainer.module)
    result = trainer.train()
    assert (result.steps, result.examples) == (3, 12)
    after = weights(trainer.module)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    saved = Path(result.output_dir)
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "training_report.json",
    ):
        assert (saved / name).is_file(), name
    assert (saved / "2_Normalize").is_dir()
    settings = load_model_config(saved)
    assert (settings.pooling, settings.normalize, settings.max_seq_length) == ("mean", True, 64)

    ours = BiEncoder(saved, device="cpu").encode(TEXTS)
    reference = SentenceTransformer(str(saved), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    # The saved weights are the trained ones (not the starting model's).
    np.testing.assert_allclose(trainer.encoder.encode(TEXTS), ours, atol=1e-6, rtol=0)
    assert not np.allclose(BiEncoder(tiny_model_dir, device="cpu").encode(TEXTS), ours, atol=1e-4)


def test_save_keeps_pooling_normalization_and_prompts(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir = build_tiny_model(tmp_path / "cls", pooling="cls", normalize=False)
    encoder = BiEncoder(model_dir, device="cpu")
    saved = save_bi_encoder(encoder, tmp_path / "saved", prompts={"query": "query: "})
    assert not (saved / "2_Normalize").exists()
    reloaded = BiEncoder(saved, device="cpu")
    assert (reloaded.pooling, reloaded.normalize, reloaded.prompts) == (
        "cls",
        False,
        {"query": "query: "},
    )
    reference = SentenceTransformer(str(saved), device="cpu")
    assert reference.prompts.get("query") == "query: "
    np.testing.assert_allclose(
        reloaded.encode(TEXTS, prefix="query: "),
        reference.encode(TEXTS, prompt_name="query", convert_to_numpy=True),
        atol=1e-5,
        rtol=0,
    )
    half = save_bi_encoder(encoder, tmp_path / "half", dtype="float16")
    assert (half / "model.safetensors").stat().st_size < 0.6 * (
        saved / "model.safetensors"
    ).stat().st_size
    assert next(encoder.model.parameters()).dtype == torch.float32  # the source is untouched


def test_same_seed_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        trainer = BiEncoderTrainer(
            tiny_model_dir, PAIRS, config(tmp_path, name, seed=seed, max_steps=2), loss="mnrl"
        )
        trainer.train()
        runs.append(weights(trainer.module))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_resume_ends_with_the_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Softmax: the classifier's weights and its optimizer state must come back too.
    data = [PairExample(p.a, p.b, i % 3) for i, p in enumerate(PAIRS)]  # 4 steps

    def trainer(name: str, **overrides: object) -> BiEncoderTrainer:
        settings = {"save_steps": 2, **overrides}
        return BiEncoderTrainer(
            tiny_model_dir, data, config(tmp_path, name, **settings), loss="softmax"
        )

    whole = trainer("whole")
    whole.train()
    expected = weights(whole.module)
    expected_head = weights(whole.loss)

    class Interrupted(Exception):
        pass

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Interrupted

    broken = trainer("broken")
    with pytest.raises(Interrupted):
        broken.train(on_step=stop_at_3)
    checkpoint = latest_checkpoint(tmp_path / "broken")
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["total_steps"] == 4
    assert (checkpoint / "training_state.pt").is_file()
    assert BiEncoder(checkpoint, device="cpu").encode(["a checkpoint is a model"]).shape == (1, 32)

    resumed = trainer("broken")
    result = resumed.train(resume_from="latest")
    assert result.resumed_from == str(checkpoint) and result.steps == 4
    got = weights(resumed.module)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0)
    for key, value in expected_head.items():
        torch.testing.assert_close(weights(resumed.loss)[key], value, atol=1e-6, rtol=0)

    other = trainer("other", seed=8)
    with pytest.raises(ValueError, match="seed: checkpoint 7, now 8"):
        other.train(resume_from=checkpoint)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        other.train(resume_from=tmp_path)


def test_evaluation_every_n_steps_and_triplet_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    triplets = [TripletExample(p.a, p.b, PAIRS[(i + 1) % 16].b) for i, p in enumerate(PAIRS)]
    dev = [PairExample(p.a, p.b, (i % 5) / 4) for i, p in enumerate(PAIRS)]
    seen: list[int] = []
    trainer = BiEncoderTrainer(
        tiny_model_dir,
        triplets,
        config(tmp_path, "tri", eval_steps=2),
        loss="triplet",
        evaluator=StsEvaluator(dev),
    )
    result = trainer.train(on_evaluate=lambda step, metrics: seen.append(step))
    assert seen == [2, 4]
    assert result.main_metric == "spearman"
    assert (
        result.main_score == result.metrics["spearman"] == result.history[-1]["metrics"]["spearman"]
    )
    log = (tmp_path / "tri" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log if "eval" in line] == [2, 4]


def test_examples_must_fit_the_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, "x")
    with pytest.raises(ValueError, match="positive pairs only"):
        BiEncoderTrainer(tiny_model_dir, [PairExample("a", "b", 0)], cfg, loss="mnrl")
    with pytest.raises(ValueError, match="TripletExample only"):
        BiEncoderTrainer(tiny_model_dir, PAIRS, cfg, loss="triplet")
    with pytest.raises(ValueError, match=r"scores in \[0, 1\]"):
        BiEncoderTrainer(tiny_model_dir, [PairExample("a", "b", 3.0)], cfg, loss="cosine")
    with pytest.raises(ValueError, match="CUDA only"):
        BiEncoderTrainer(tiny_model_dir, PAIRS, config(tmp_path, "y", precision="float16"))
    with pytest.raises(ValueError, match="valid: auto, float32"):
        TrainingConfig(tmp_path, precision="fp8")


def test_init_cross_encoder_copies_the_encoder_exactly(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification

    first = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "a", seed=1)
    again = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "b", seed=1)
    other = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "c", seed=2)
    encoder = AutoModel.from_pretrained(str(tiny_model_dir)).state_dict()
    model = AutoModelForSequenceClassification.from_pretrained(str(first))
    assert model.config.num_labels == 1
    assert model.config.architectures == ["BertForSequenceClassification"]
    copied = model.bert.state_dict()
    assert set(copied) == set(encoder)
    assert all(torch.equal(copied[k], encoder[k]) for k in encoder)
    head = model.classifier.weight
    assert torch.equal(
        head, AutoModelForSequenceClassification.from_pretrained(str(again)).classifier.weight
    )
    assert not torch.equal(
        head, AutoModelForSequenceClassification.from_pretrained(str(other)).classifier.weight
    )
    # The tiny model has 128 positions: the saved tokenizer truncates pairs there.
    assert json.loads((first / "tokenizer_config.json").read_text())["model_max_length"] == 128
    config_json = json.loads((first / "config.json").read_text())
    assert config_json["sentence_transformers"]["activation_fn"].endswith("Sigmoid")


def test_a_saved_cross_encoder_tokenizer_file_truncates_at_its_limit_without_padding(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The source's tokenizer.json (MiniLM's) truncates at 128 and pads every text to 128; a
    # loader reading the saved file with `tokenizers` alone must see the cross-encoder's limit.
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    assert source["padding"] is not None and source["truncation"]["max_length"] == 128
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    out = save_cross_encoder(model, tokenizer, tmp_path / "ce", max_length=48)
    loaded = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert len(loaded.encode("short question", "short passage").ids) == 7
    assert len(loaded.encode("question " * 40, "passage " * 80).ids) == 48
    reranker = CrossEncoderReranker(out, device="cpu", dtype="float32")
    assert reranker.max_length == 48


def test_init_cross_encoder_from_an_mpnet_bi_encoder(tmp_path: Path) -> None:
    # MPNet (all-mpnet-base-v2's architecture) classifies through its own head: the encoder's
    # pooler has nowhere to go, every other weight is copied, and both rerankers agree.
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, MPNetConfig, MPNetModel

    from tests.conftest import copy_minilm_tokenizer, tiny_transformer_settings

    source = tmp_path / "mpnet"
    torch.manual_seed(0)
    # MPNet offsets positions by the padding id + 1, so 130 positions hold 128 tokens.
    tiny = MPNetConfig(**tiny_transformer_settings(max_position_embeddings=130))
    MPNetModel(tiny).save_pretrained(source)
    copy_minilm_tokenizer(source)
    out = init_cross_encoder_from_bi_encoder(source, tmp_path / "ce", seed=1)
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.architectures == ["MPNetForSequenceClassification"]
    encoder = MPNetModel.from_pretrained(str(source)).state_dict()
    copied = model.mpnet.state_dict()
    assert set(encoder) - set(copied) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert all(torch.equal(copied[k], encoder[k]) for k in copied)
    pairs = [("what do cats eat?", "Cats eat mice."), ("long", "word " * 300)]
    ours = CrossEncoderReranker(out, device="cpu").predict(pairs)
    np.testing.assert_allclose(
        ours, CrossEncoder(str(out), device="cpu").predict(pairs), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_cross_encoder_trains_and_loads_in_both_rerankers(
    tiny_model_dir: Path, tmp_path: Path, loss: str
) -> None:
    from sentence_transformers import CrossEncoder

    start = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "init", seed=0)
    labels = [1.0, 0.0] if loss == "bce" else [0.8, 0.2]
    examples = [
        PairExample(p.a, p.b if i % 2 == 0 else PAIRS[(i + 3) % 16].b, labels[i % 2])
        for i, p in enumerate(PAIRS)
    ]
    dev = RerankingEvaluator([PairExample(e.a, e.b, int(e.label > 0.5)) for e in examples])
    trainer = CrossEncoderTrainer(
        start, examples, config(tmp_path, "ce", max_steps=3), loss=loss, evaluator=dev
    )
    before = weights(trainer.module)
    result = trainer.train()
    assert result.steps == 3 and result.main_metric == "map@100"
    assert 0 <= result.metrics["map@100"] <= 1
    after = weights(trainer.module)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    pairs = [
        ("what do cats eat?", "Cats eat mice."),
        ("", "An empty query."),
        ("long", "word " * 300),  # beyond 128 tokens: truncated by both
        ("unicode", "naïve café 中文 🚀"),
    ]
    ours = CrossEncoderReranker(result.output_dir, device="cpu").predict(pairs)
    reference = CrossEncoder(result.output_dir, device="cpu").predict(pairs)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    assert np.all((ours > 0) & (ours < 1))  # sigmoid, as trained
    # The trainer's own reranker (the evaluated one) scores as the saved one does.
    np.testing.assert_allclose(trainer.reranker.predict(pairs), ours, atol=1e-6, rtol=0)


def test_cross_encoder_rejects_unsuitable_data(tiny_model_dir: Path, tmp_path: Path) -> None:
    start = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "init")
    with pytest.raises(ValueError, match=r"labels in \[0, 1\]"):
        CrossEncoderTrainer(start, [PairExample("q", "p", 2)], config(tmp_path, "x"))
    three = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "three", num_labels=3)
    with pytest.raises(ValueError, match="needs 1 output label"):
        CrossEncoderTrainer(three, PAIRS, config(tmp_path, "y"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_path_with_scaler_and_resume(
    tiny_model_dir: Path, tmp_path: Path, dtype: torch.dtype
) -> None:
    # The CUDA-only path (autocast, and a GradScaler for float16) forced onto CPU autocast.
    def trainer(name: str) -> BiEncoderTrainer:
        made = BiEncoderTrainer(tiny_model_dir, PAIRS, config(tmp_path, name, save_steps=2))
        made.autocast_dtype = dtype
        return made

    whole = trainer("amp")
    before = weights(whole.module)
    result = whole.train()
    assert result.precision == str(dtype).removeprefix("torch.")
    after = weights(whole.module)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = torch.load(tmp_path / "amp" / "checkpoint-2" / "training_state.pt", weights_only=True)
    assert (saved["scaler"] is not None) == (dtype == torch.float16)
    resumed = trainer("amp")
    resumed.train(resume_from=tmp_path / "amp" / "checkpoint-2")
    got = weights(resumed.module)
    for key, value in after.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0)


def test_precision_resolution() -> None:
    from sbert_retrieval.training.trainer import _resolve_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _resolve_precision("auto", cuda) == torch.float16
    assert _resolve_precision("auto", cpu) is None  # the suite pins CPU bfloat16 off
    assert _resolve_precision("bf16", cuda) == torch.bfloat16
    assert _resolve_precision("float32", cuda) is None
    assert _resolve_precision("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA only"):
        _resolve_precision("float16", cpu)


def test_precision_auto_on_cpu_follows_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    from sbert_retrieval.encoding.bi_encoder import CPU_BF16_ENV
    from sbert_retrieval.training.trainer import _resolve_precision

    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert _resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert _resolve_precision("auto", torch.device("cpu")) is None


class ScriptedEvaluator:
    """Dev scores in a fixed order, so which evaluation is best is known in advance."""

    main_metric = "spearman"

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)
        self.calls = 0

    def __call__(self, model: object) -> dict[str, float]:
        self.calls += 1
        return {"spearman": self.scores[self.calls - 1], "pearson": 0.0}


def test_keep_best_saves_the_best_evaluation_and_survives_a_resume(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = [PairExample(p.a, p.b, (i % 5) / 4) for i, p in enumerate(PAIRS)]  # 4 steps
    scores = [0.1, 0.9, 0.2, 0.3]  # evaluations at steps 1..4: step 2 is the best

    def trainer(name: str, evaluator: ScriptedEvaluator, **overrides: object) -> BiEncoderTrainer:
        settings = {"eval_steps": 1, "save_steps": 1, "keep_best": True, **overrides}
        cfg = config(tmp_path, name, **settings)
        return BiEncoderTrainer(tiny_model_dir, data, cfg, loss="cosine", evaluator=evaluator)

    whole = trainer("whole", ScriptedEvaluator(scores))
    result = whole.train()
    assert (result.selected_step, result.steps) == (2, 4)
    assert result.main_score == result.metrics["spearman"] == 0.9
    assert [h["metrics"]["spearman"] for h in result.history] == scores
    assert result.to_dict()["selected_step"] == 2
    step_2 = BiEncoder(tmp_path / "whole" / "checkpoint-2", device="cpu").encode(TEXTS)
    step_3 = BiEncoder(tmp_path / "whole" / "checkpoint-3", device="cpu").encode(TEXTS)
    saved = BiEncoder(tmp_path / "whole", device="cpu").encode(TEXTS)
    np.testing.assert_allclose(saved, step_2, atol=1e-6, rtol=0)
    assert not np.allclose(saved, step_3, atol=1e-4)
    assert not list((tmp_path / "whole").glob("best-*"))  # the waiting copy is cleaned up

    # Stopped after step 3 (the best, step 2, is on disk), resumed from checkpoint 3.
    class Interrupted(Exception):
        pass

    def stop_after_3(step: int, loss: float) -> None:
        if step == 4:
            raise Interrupted

    broken = trainer("broken", ScriptedEvaluator(scores))
    with pytest.raises(Interrupted):
        broken.train(on_step=stop_after_3)
    assert [p.name for p in (tmp_path / "broken").glob("best-*")] == ["best-2"]
    resumed = trainer("broken", ScriptedEvaluator(scores[3:]))
    again = resumed.train(resume_from=tmp_path / "broken" / "checkpoint-3")
    assert (again.selected_step, again.main_score) == (2, 0.9)
    np.testing.assert_allclose(
        BiEncoder(tmp_path / "broken", device="cpu").encode(TEXTS), step_2, atol=1e-6, rtol=0
    )

    # Without keep_best the last step's weights are saved, as before.
    last = trainer("last", ScriptedEvaluator(scores), keep_best=False).train()
    assert last.selected_step == 4 and last.main_score == 0.3


def test_keep_best_needs_an_evaluator(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_best needs an evaluator"):
        BiEncoderTrainer(tiny_model_dir, PAIRS, config(tmp_path, "x", keep_best=True))


def test_a_trained_cuda_encoder_never_fans_evaluation_out_to_workers(
    tiny_model_dir, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Worker processes load the starting weights from disk; evaluation must see trained ones."""
    import torch

    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.training.trainer import evaluation_engine

    assert evaluation_engine(torch.device("cpu")) is None
    encoder = BiEncoder(tiny_model_dir, device="cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(encoder, "_requested_device", "cuda")
    assert len(encoder.bulk_devices) == 2  # what a plain cuda encoder would fan out to
    config = evaluation_engine(torch.device("cuda", 1))
    assert config is not None and config.devices == ("cuda:1",)
    monkeypatch.setattr(encoder, "_engine_config", config)
    assert encoder.bulk_devices == ["cuda:1"]  # one device: encode stays in this process


def test_listwise_cross_encoder_trains_on_groups_and_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    start = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "init", seed=0)
    groups = [
        GroupExample(p.a, p.b, tuple(PAIRS[(i + j) % 16].b for j in (3, 5, 7)[: 1 + i % 3]))
        for i, p in enumerate(PAIRS)
    ]  # groups of 2 to 4 texts: the short ones are padded in the loss

    def trainer(name: str) -> CrossEncoderTrainer:
        settings = {"save_steps": 2, "group_by_length": True}
        return CrossEncoderTrainer(
            start, groups, config(tmp_path, name, **settings), loss="listwise"
        )

    whole = trainer("whole")
    plan = whole.plan()
    assert sorted(i for batch in plan for i in batch) == list(range(16))
    before = weights(whole.module)
    whole.train()
    expected = weights(whole.module)
    assert any(not torch.equal(before[k], expected[k]) for k in before)

    resumed = trainer("whole")
    resumed.train(resume_from=tmp_path / "whole" / "checkpoint-2")
    got = weights(resumed.module)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    with pytest.raises(ValueError, match="GroupExample"):
        CrossEncoderTrainer(start, PAIRS, config(tmp_path, "x"), loss="listwise")
    with pytest.raises(ValueError, match="PairExample"):
        CrossEncoderTrainer(start, groups, config(tmp_path, "y"), loss="bce")


def test_length_grouped_batches_pad_little_and_keep_every_example(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = [
        PairExample(f"q{i}", "word " * (1 + (i * 37) % 200), 1) for i in range(300)
    ]  # lengths scattered over 1..200 words
    grouped = BiEncoderTrainer(
        tiny_model_dir,
        data,
        config(tmp_path, "g", batch_size=4, group_by_length=True),
        loss="cosine",
    ).plan()
    plain = BiEncoderTrainer(
        tiny_model_dir, data, config(tmp_path, "p", batch_size=4), loss="cosine"
    ).plan()
    assert sorted(i for b in grouped for i in b) == list(range(300))

    def spread(batches: list[list[int]]) -> float:
        sizes = [[len(data[i].b) for i in b] for b in batches]
        return float(np.mean([max(s) - min(s) for s in sizes]))

    assert spread(grouped) < spread(plain) / 10
