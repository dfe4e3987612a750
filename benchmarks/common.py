"""Helpers shared by the benchmarks: real texts from ../shared/data, timing, machine facts."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SHARED_DATA = Path(
    os.environ.get("SBERT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def scifact_abstracts(limit: int | None = None) -> list[str]:
    """SciFact documents as MTEB encodes them: title and text joined by one space."""
    texts: list[str] = []
    with gzip.open(SHARED_DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(f"{record['title']} {record['text']}".strip())
            if limit is not None and len(texts) >= limit:
                break
    return texts


def stsb_sentences(limit: int | None = None) -> list[str]:
    """Distinct STS Benchmark sentences, train then dev then test."""
    seen: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        with (SHARED_DATA / "stsb" / f"{split}.tsv").open(encoding="utf-8") as handle:
            next(handle)
            for line in handle:
                _, first, second = line.rstrip("\n").split("\t")
                seen.setdefault(first)
                seen.setdefault(second)
    texts = list(seen)
    return texts[:limit] if limit else texts


def model_arguments(description: str | None, *, batch_size: int) -> argparse.ArgumentParser:
    """A parser with the options every encoding benchmark takes: model, device, dtype, batch."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    return parser


def repeat_to(texts: list[str], count: int) -> list[str]:
    """``texts`` cycled to ``count`` items."""
    return [texts[i % len(texts)] for i in range(count)]


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
