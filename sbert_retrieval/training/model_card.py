"""Model cards: the README.md saved next to a trained model, saying what it was trained on and how.

A card is written by the training recipes from the run's report (data, loss, example counts,
every setting, the dev metrics of the saved weights and their history) and the command that
reproduces it. Scores measured later on held-out test splits are appended with
:func:`append_evaluation`, so the card carries the numbers that matter next to the weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["CARD_NAME", "append_evaluation", "render_model_card", "write_model_card"]

CARD_NAME = "README.md"
_EVALUATION_HEADING = "## Evaluation (held-out test splits)"
_SCORED_AFTER = "Test splits are scored after training, never during it"

# Report keys shown under "Data" / "Results"; every other key is a setting.
_DATA_KEYS = (
    "data",
    "examples",
    "pairs",
    "triplets",
    "positives",
    "negatives",
    "soft_labels",
    "both_orders",
    "initialized_from_bi_encoder",
)
_RESULT_KEYS = (
    "steps",
    "selected_step",
    "seconds",
    "final_loss",
    "dev_set",
    "dev_metric",
    "dev_score",
    "history",
    "device",
    "precision",
    "resumed_from",
    "output",
)


def _value(value: Any) -> str:
    if isinstance(value, float):
        # Metrics read best at 4 decimals; tiny settings (a 2e-05 learning rate) as written.
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    return str(value)


def render_model_card(
    report: Mapping[str, Any],
    settings: Mapping[str, Any],
    *,
    command: str | None = None,
    date: str | None = None,
) -> str:
    """The card's Markdown.

    Args:
        report: The training report (:meth:`TrainingResult.to_dict` plus the recipe's keys:
            ``kind``, ``model``, ``data``, ``loss``, ``dev_set``, example counts).
        settings: The run's :meth:`TrainingConfig.to_dict`.
        command: The command line that reproduces the run, if known.
        date: ISO date of the run (default: today, UTC).

    Returns:
        Markdown text ending in a newline.

    Thread safety: pure function.
    """
    kind = str(report.get("kind", "model"))
    day = date or datetime.now(timezone.utc).date().isoformat()
    lines = [
        f"# {kind} trained with sbert_retrieval",
        "",
        f"Started from `{report.get('model')}`, trained with the `{report.get('loss')}` loss"
        f" on {_value(report.get('data', []))}; {day}.",
        "",
    ]
    if command:
        lines += ["## Reproduce", "", "```bash", command, "```", ""]
    lines += ["## Data", "", "| what | value |", "|---|---|"]
    lines += [f"| {key} | {_value(report[key])} |" for key in _DATA_KEYS if key in report]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [
        f"| {key} | {_value(value)} |"
        for key, value in settings.items()
        if key not in ("output_dir", "show_progress")
    ]
    lines += ["", "## Training results (dev split)", "", "| what | value |", "|---|---|"]
    lines += [
        f"| {key} | {_value(report[key])} |"
        for key in _RESULT_KEYS
        if key in report and key != "history" and report[key] is not None
    ]
    history = report.get("history") or []
    if history:
        names = sorted({name for entry in history for name in entry.get("metrics", {})})
        lines += ["", "| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for entry in history:
            metrics = entry.get("metrics", {})
            cells = [_value(metrics[n]) if n in metrics else "" for n in names]
            lines.append(f"| {entry.get('step')} | " + " | ".join(cells) + " |")
    loader = (
        "from sbert_retrieval.reranking import CrossEncoderReranker\n"
        "reranker = CrossEncoderReranker(PATH)\n"
        "# sentence-transformers: CrossEncoder(PATH)"
        if kind.startswith("cross-encoder")
        else "from sbert_retrieval.encoding import BiEncoder\n"
        "encoder = BiEncoder(PATH)\n"
        "# sentence-transformers: SentenceTransformer(PATH)"
    )
    lines += ["", "## Use", "", "```python", loader, "```", "", _EVALUATION_HEADING, ""]
    lines.append(f"{_SCORED_AFTER}; none yet.")
    return "\n".join(lines) + "\n"


def write_model_card(
    directory: str | os.PathLike[str],
    report: Mapping[str, Any],
    settings: Mapping[str, Any],
    *,
    command: str | None = None,
) -> Path:
    """Write ``README.md`` into the model's directory (replacing an older card); returns its path.

    Thread safety: writes one file; not concurrently with another writer of the same model.
    """
    path = Path(directory) / CARD_NAME
    path.write_text(render_model_card(report, settings, command=command), encoding="utf-8")
    return path


def append_evaluation(
    directory: str | os.PathLike[str],
    name: str,
    metrics: Mapping[str, float],
    *,
    command: str | None = None,
) -> Path:
    """Add one held-out result (e.g. ``"stsb test"``, ``{"spearman": 0.85}``) to the card.

    Raises:
        FileNotFoundError: The directory has no card (train it with sbert_retrieval first).

    Thread safety: read-modify-write of one file; not concurrently with another writer.
    """
    path = Path(directory) / CARD_NAME
    text = path.read_text(encoding="utf-8")
    text = text.replace(f"{_SCORED_AFTER}; none yet.\n", f"{_SCORED_AFTER}.\n")
    scores = ", ".join(f"{key} {_value(float(value))}" for key, value in metrics.items())
    line = f"- **{name}**: {scores}"
    if command:
        line += f" (`{command}`)"
    path.write_text(text.rstrip("\n") + "\n" + line + "\n", encoding="utf-8")
    return path
