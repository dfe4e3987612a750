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
    info["cpu_flags"] = cpu_flags()["simd"]  # every figure names the SIMD it ran on
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


#: The flags that make a CPU x86-64-v3 (AVX2, FMA, F16C, BMI1/2, MOVBE, ...) as setup.sh checks.
X86_64_V3_FLAGS = ("avx2", "fma", "bmi2", "f16c", "movbe")


def cpu_flags() -> dict[str, Any]:
    """The CPU's SIMD flags (avx*, amx*, fma) from /proc/cpuinfo, and whether it is x86-64-v3."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "simd": sorted(f for f in flags if f.startswith(("avx", "amx")) or f == "fma"),
        "x86_64_v3": all(f in flags for f in X86_64_V3_FLAGS),
    }


def proactive_reclaim() -> list[dict[str, Any]]:
    """The kernel's DAMON-based proactive reclaim, where it runs (cloud VMs set it up).

    A ``pageout`` scheme drops pages idle longer than ``min_idle_s`` even with memory free, so a
    store's files leave the page cache a minute after they were last read or written, and the
    first query to touch such a page reads the disk. Latency figures say which state they met;
    this says why a store was cold. Empty where DAMON is absent or no kdamond is on.
    """
    root = Path("/sys/kernel/mm/damon/admin/kdamonds")

    def read(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return ""

    found: list[dict[str, Any]] = []
    for kdamond in sorted(root.glob("[0-9]*")):
        if read(kdamond / "state") != "on":
            continue
        for context in sorted((kdamond / "contexts").glob("[0-9]*")):
            aggregation_us = read(context / "monitoring_attrs" / "intervals" / "aggr_us")
            for scheme in sorted((context / "schemes").glob("[0-9]*")):
                age = read(scheme / "access_pattern" / "age" / "min")
                filters = [
                    f"{read(f / 'type')}: {'allow' if read(f / 'allow') == 'Y' else 'reject'}"
                    for folder in ("core_filters", "ops_filters", "filters")
                    for f in sorted((scheme / folder).glob("[0-9]*"))
                ]
                entry: dict[str, Any] = {
                    "operations": read(context / "operations"),
                    "action": read(scheme / "action"),
                    "filters": filters,
                }
                if age.isdigit() and aggregation_us.isdigit():
                    entry["min_idle_s"] = int(age) * int(aggregation_us) / 1e6
                found.append(entry)
    return found


def hnswlib_build() -> dict[str, Any]:
    """How the installed hnswlib was compiled, read from the extension's DWARF producer string.

    Without importing it: the compiler line (``GNU C++14 12.2.0 -march=x86-64-v3 ...``) is in
    the debug info that setup.py's ``-g`` leaves; ``march`` is ``None`` when it is not there.
    """
    import importlib.util
    import re

    found = importlib.util.find_spec("hnswlib")
    if found is None or not found.origin:
        return {"installed": False}
    info: dict[str, Any] = {"installed": True, "file": found.origin, "march": None}
    try:
        data = Path(found.origin).read_bytes()
    except OSError:
        return info
    producer = re.search(rb"GNU C\+\+\w* [^\x00]{0,2000}", data)
    if producer:
        text = producer.group().decode("ascii", "replace")
        info["compiler"] = text
        march = re.search(r"-march=(\S+)", text)
        info["march"] = march.group(1) if march else None
    return info
