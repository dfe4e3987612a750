"""Model cards: rendered from a training report, held-out results appended."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbert_retrieval.training import TrainingConfig, append_evaluation, write_model_card
from sbert_retrieval.training.model_card import render_model_card

REPORT = {
    "kind": "cross-encoder",
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "data": ["stsb"],
    "loss": "bce",
    "both_orders": True,
    "positives": 0,
    "negatives": 12,
    "steps": 40,
    "selected_step": 30,
    "dev_set": "stsb-dev",
    "dev_metric": "spearman",
    "dev_score": 0.87654,
    "history": [
        {"step": 30, "metrics": {"spearman": 0.87654, "pearson": 0.8}},
        {"step": 40, "metrics": {"spearman": 0.8612, "pearson": 0.81}},
    ],
    "resumed_from": None,
}


def test_card_has_data_settings_results_and_command(tmp_path: Path) -> None:
    settings = TrainingConfig(tmp_path, epochs=4, batch_size=16, lr=2e-5, keep_best=True)
    settings_dict = settings.to_dict()
    path = write_model_card(tmp_path, REPORT, settings_dict, command="sbert-retrieval train x")
    card = path.read_text()
    assert path.name == "README.md"
    assert card.startswith("# cross-encoder trained with sbert_retrieval")
    assert "`sentence-transformers/all-MiniLM-L6-v2`" in card and "`bce` loss on stsb" in card
    assert "```bash\nsbert-retrieval train x\n```" in card
    rows = ("| both_orders | True |", "| epochs | 4 |", "| keep_best | True |", "| lr | 2e-05 |")
    for row in rows:
        assert row in card
    assert "| dev_score | 0.8765 |" in card and "| selected_step | 30 |" in card
    assert "| step | pearson | spearman |" in card and "| 40 | 0.8100 | 0.8612 |" in card
    assert "output_dir" not in card and "resumed_from" not in card  # None is left out
    assert "CrossEncoderReranker(PATH)" in card and "none yet" in card


def test_append_evaluation_adds_lines_and_needs_a_card(tmp_path: Path) -> None:
    settings = TrainingConfig(tmp_path).to_dict()
    write_model_card(tmp_path, {**REPORT, "kind": "bi-encoder"}, settings)
    append_evaluation(tmp_path, "stsb test", {"spearman": 0.85123})
    append_evaluation(tmp_path, "scifact test", {"ndcg@10": 0.7}, command="eval beir x")
    card = (tmp_path / "README.md").read_text()
    assert "none yet" not in card and "BiEncoder(PATH)" in card
    assert card.endswith(
        "- **stsb test**: spearman 0.8512\n- **scifact test**: ndcg@10 0.7000 (`eval beir x`)\n"
    )
    with pytest.raises(FileNotFoundError):
        append_evaluation(tmp_path / "missing", "x", {"a": 1.0})


def test_every_cross_encoder_kind_is_shown_loaded_as_a_reranker() -> None:
    card = render_model_card(
        {"kind": "cross-encoder (reranker)", "model": "m", "loss": "listwise"}, {}
    )
    assert "CrossEncoderReranker(" in card and "BiEncoder(" not in card
