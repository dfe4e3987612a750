"""``sbert-retrieval train``: smoke runs on the tiny model and the real training files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbert_retrieval.cli import build_parser, main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict)
    return report


def test_train_bi_encoder_smoke(
    tiny_model_dir: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bi"
    common = ["--model", str(tiny_model_dir), "--data", "wikiqa", "stsb", "--output", str(out)]
    report = run_json(
        capsys,
        "train",
        "bi-encoder",
        *common,
        "--data-dir",
        str(shared_data),
        "--max-examples",
        "16",
        "--batch-size",
        "8",
        "--max-dev-examples",
        "40",
        "--save-steps",
        "2",
        "--seed",
        "1",
        "--json",
    )
    # wikiqa → 16 triplets (labelled negatives), stsb → 16 positive pairs (score ≥ 4): 4 steps.
    assert (report["steps"], report["examples"], report["triplets"], report["pairs"]) == (
        4,
        32,
        16,
        16,
    )
    assert (report["loss"], report["dev_set"], report["dev_metric"]) == (
        "mnrl",
        "stsb-dev",
        "spearman",
    )
    assert isinstance(report["dev_score"], float) and isinstance(report["seconds"], float)
    assert report["output"] == str(out) and (out / "checkpoint-2").is_dir()

    from sbert_retrieval.encoding import BiEncoder

    assert BiEncoder(out, device="cpu").encode(["it loads"]).shape == (1, 32)
    # The same run resumed from its checkpoint finishes with the same score.
    resumed = run_json(
        capsys,
        "train",
        "bi-encoder",
        *common,
        "--data-dir",
        str(shared_data),
        "--max-examples",
        "16",
        "--batch-size",
        "8",
        "--max-dev-examples",
        "40",
        "--seed",
        "1",
        "--resume-from",
        str(out / "checkpoint-2"),
        "--json",
    )
    assert resumed["resumed_from"] == str(out / "checkpoint-2")
    assert resumed["dev_score"] == pytest.approx(report["dev_score"], abs=1e-6)


def test_train_cross_encoder_smoke_from_a_bi_encoder(
    tiny_model_dir: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ce"
    report = run_json(
        capsys,
        "train",
        "cross-encoder",
        "--model",
        str(tiny_model_dir),
        "--data",
        "trecqa",
        "--data-dir",
        str(shared_data),
        "--output",
        str(out),
        "--max-examples",
        "16",
        "--batch-size",
        "8",
        "--max-dev-examples",
        "5",
        "--max-seq-length",
        "96",
        "--eval-steps",
        "1",
        "--keep-best",
        "--json",
    )
    assert report["initialized_from_bi_encoder"] is True
    # TrecQA labels are 0/1: every example is counted as a positive or a negative.
    assert report["soft_labels"] == 0
    assert report["positives"] + report["negatives"] == report["examples"] == 16
    # --keep-best: the saved model is the evaluation with the highest dev score.
    scores = {h["step"]: h["metrics"]["map@100"] for h in report["history"]}
    assert sorted(scores) == [1, 2]
    assert report["dev_score"] == max(scores.values()) == scores[report["selected_step"]]
    card = (out / "README.md").read_text()
    assert "sbert-retrieval train cross-encoder --model" in card and "--keep-best" in card
    assert "| dev_set | trecqa-dev |" in card and "`bce` loss on trecqa" in card
    assert f"| dev_score | {report['dev_score']:.4f} |" in card
    assert (report["steps"], report["dev_set"], report["dev_metric"]) == (
        2,
        "trecqa-dev",
        "map@100",
    )
    from sbert_retrieval.reranking import CrossEncoderReranker

    reranker = CrossEncoderReranker(out, device="cpu")
    assert reranker.max_length == 96
    assert len(reranker.score("who wrote it?", ["a", "b"])) == 2


def test_train_errors_list_the_valid_choices(
    tiny_model_dir: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "--model",
        str(tiny_model_dir),
        "--data-dir",
        str(shared_data),
        "--output",
        str(tmp_path),
    ]
    assert main(["train", "bi-encoder", *base, "--data", "scifact", "--loss", "cosine"]) == 1
    assert "valid for cosine: stsb, wikiqa, trecqa, msrp" in capsys.readouterr().err
    assert (
        main(["train", "cross-encoder", *base, "--data", "scifact", "--hard-negatives", "0"]) == 1
    )
    assert "needs mined negatives" in capsys.readouterr().err
    args = ["train", "bi-encoder", *base, "--data", "stsb", "--device", "cpu", "--dtype", "float16"]
    assert main([*args, "--max-examples", "4"]) == 1
    assert "CUDA only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "bi-encoder", *base, "--data", "msmarco"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'msmarco'" in capsys.readouterr().err


def test_train_parser_defaults() -> None:
    args = build_parser().parse_args(
        ["train", "cross-encoder", "--data", "scifact", "--output", "o"]
    )
    assert (args.loss, args.lr, args.warmup_ratio, args.hard_negatives, args.data_dir) == (
        "bce",
        2e-5,
        0.1,
        4,
        "../shared/data",
    )
    args = build_parser().parse_args(["train", "bi-encoder", "--data", "stsb", "--output", "o"])
    assert (args.loss, args.hard_negatives, args.dtype, args.epochs) == ("mnrl", 0, "auto", 1)
