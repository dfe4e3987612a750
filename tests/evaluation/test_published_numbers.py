"""all-MiniLM-L6-v2 reproduces MTEB's published figures (shared/data/README.md), exact search.

Slow on 2 CPU cores (SciFact encodes 5,183 abstracts: ~10 min), but it is the check that the
whole chain (model resolution, tokenization, pooling, loaders, metrics) is right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sbert_retrieval.evaluation import evaluate_beir, evaluate_sts, load_beir_dataset, load_sts_tsv

PUBLISHED_SCIFACT_NDCG10 = 0.6451
PUBLISHED_STSB_SPEARMAN = 0.8203
TOLERANCE = 0.003


@pytest.mark.slow
def test_stsb_test_spearman(minilm_encoder, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    result = evaluate_sts(load_sts_tsv(shared_data / "stsb" / "test.tsv"), minilm_encoder)
    assert result.pairs == 1379
    assert result.spearman == pytest.approx(PUBLISHED_STSB_SPEARMAN, abs=TOLERANCE)


@pytest.mark.slow
def test_scifact_ndcg_at_10_exact_and_hnsw(
    minilm_encoder, shared_data: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    dataset = load_beir_dataset(shared_data / "scifact", split="test")
    exact = evaluate_beir(dataset, minilm_encoder, backend="exact", cache_dir=tmp_path)
    assert (exact.queries, exact.docs) == (300, 5183)
    assert exact.scores["ndcg@10"] == pytest.approx(PUBLISHED_SCIFACT_NDCG10, abs=TOLERANCE)
    hnsw = evaluate_beir(dataset, minilm_encoder, backend="hnsw", cache_dir=tmp_path)
    assert hnsw.cached
    assert exact.scores["ndcg@10"] - hnsw.scores["ndcg@10"] <= 0.002
