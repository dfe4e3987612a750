"""Durability: ingestion killed with SIGKILL at random moments, re-run each time, ends exact.

A real subprocess ingests 2,000 documents (tiny model, a flush every 100 chunks so kills land
before, during and after flushes). The harness waits until the child reports that ingestion has
started, sleeps a seeded random time of up to a tenth of a clean run, and SIGKILLs it: each run
resumes where the last left off and is killed part-way, until 20 kills have landed (a run that
finishes first is not counted); then a last run finishes. The result must equal a clean run's:
the same documents, each exactly once, the same point ids and the same vectors, and a store that
opens without error.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.errors import StoreLockedError
from sbert_retrieval.stores import HnswStore
from tests.stores.contract import SPEC

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20
DOCS = 2000

CHILD = """
import json, sys, time
from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
from sbert_retrieval.stores import HnswStore
from sbert_retrieval.chunking import ChunkingConfig

corpus, index, model = sys.argv[1:4]
encoder = BiEncoder(model, device="cpu", batch_size=32)
config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=24, overlap=4), doc_batch_size=50,
                      flush_every=100)
# Snapshots every few flushes, so kills land mid-snapshot too.
with HnswStore(index, encoder.spec(), snapshot_min_tail=150) as store:
    print("READY", flush=True)
    started = time.perf_counter()
    report = IngestionPipeline(encoder, store, config).ingest([corpus])
    seconds = time.perf_counter() - started
    print(json.dumps({**report.to_dict(), "ingest_seconds": seconds}), flush=True)
"""


def write_corpus(path: Path) -> None:
    rng = random.Random(7)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "theta",
        "kappa",
        "lambda",
        "sigma",
        "omega",
        "river",
        "stone",
    ]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(DOCS):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 120)))
            handle.write(
                json.dumps({"id": f"doc-{i}", "text": f"Document {i}. {text}", "n": i}) + "\n"
            )


def start_child(corpus: Path, index: Path, model: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(corpus), str(index), str(model)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_to_completion(corpus: Path, index: Path, model: Path) -> dict[str, float]:
    child = start_child(corpus, index, model)
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def snapshot(index: Path) -> dict[str, np.ndarray]:
    store = HnswStore(index, read_only=True)
    doc_ids = store.document_ids()
    ids = sorted(pid for pids in store.ids_by_document(doc_ids).values() for pid in pids)
    assert len(ids) == store.count(), "a point belongs to no document or to two"
    return {record.id: record.vector for record in store.get(ids)}


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus)
    clean_report = run_to_completion(corpus, tmp_path / "clean", tiny_model_dir)
    assert clean_report["added"] == DOCS
    clean = snapshot(tmp_path / "clean")
    full_run = clean_report["ingest_seconds"]

    rng = random.Random(20261123)
    crashed = tmp_path / "crashed"
    kills = attempts = 0
    while kills < KILLS and attempts < 3 * KILLS:
        attempts += 1
        child = start_child(corpus, crashed, tiny_model_dir)
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready.strip() == "READY", child.stderr.read() if child.stderr else ready
        time.sleep(rng.uniform(0.0, full_run / 10))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait(timeout=60)
    final = run_to_completion(corpus, crashed, tiny_model_dir)
    recovered = snapshot(crashed)

    print(
        f"\ncrash harness: {kills} SIGKILLs in {attempts} runs, ingesting {DOCS} docs"
        f" ({len(clean)} chunks; a clean run ingests in {full_run:.1f} s); final run added"
        f" {final['added']}, kept {final['unchanged']} unchanged"
    )
    assert kills == KILLS, f"only {kills} of {attempts} runs were killed before finishing"
    assert final["failed"] == 0
    assert final["added"] + final["unchanged"] + final["updated"] == DOCS
    assert sorted(recovered) == sorted(clean)
    for point_id, vector in clean.items():
        np.testing.assert_allclose(recovered[point_id], vector, atol=1e-6)
    store = HnswStore(crashed, read_only=True)
    assert len(store.document_ids()) == DOCS


HOLDER = """
import sys, time
from sbert_retrieval.stores import HnswStore
from tests.stores.contract import SPEC
store = HnswStore(sys.argv[1], SPEC)
print("HOLDING", flush=True)
time.sleep(60)
"""


def test_second_writer_process_gets_the_holder_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HOLDING"
        with pytest.raises(StoreLockedError, match=f"process {holder.pid}"):
            HnswStore(tmp_path, SPEC)
    finally:
        holder.kill()
        holder.wait()
    # The holder died without closing: its lock went with it.
    HnswStore(tmp_path, SPEC).close()
