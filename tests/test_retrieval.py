"""The retriever: hits, document-level results, filters, prefixes, reranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from sbert_retrieval.chunking import ChunkingConfig
from sbert_retrieval.documents import Document
from sbert_retrieval.errors import ModelMismatchError
from sbert_retrieval.fusion import interpolate_scores
from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
from sbert_retrieval.retrieval import Hit, Retriever, rerank_weight_after
from sbert_retrieval.stores import ExactStore, HnswStore

DOCS = [
    Document(
        "cats",
        "Cats purr. Cats hunt mice. Cats sleep all day long in the sun.",
        {"lang": "en", "year": 2020},
    ),
    Document(
        "market",
        "Stocks fell on inflation fears. Bonds rallied. Investors fled to gold.",
        {"lang": "en", "year": 2022},
    ),
    Document(
        "katzen",
        "Katzen schnurren und jagen Mäuse. Sie schlafen den ganzen Tag.",
        {"lang": "de", "year": 2021},
    ),
]


@pytest.fixture
def indexed(tiny_encoder):  # type: ignore[no-untyped-def]
    store = HnswStore(None, tiny_encoder.spec())
    config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=8, overlap=2))
    IngestionPipeline(tiny_encoder, store, config).ingest_records(DOCS)
    return store


def test_hits_carry_the_chunk_and_its_source(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    hits = Retriever(tiny_encoder, indexed).search("cats purring", k=50)
    assert len(hits) == indexed.count()
    texts = {d.id: d.text for d in DOCS}
    for hit in hits:
        assert isinstance(hit, Hit)
        assert texts[hit.doc_id][hit.start : hit.end] == hit.text
        assert hit.metadata["lang"] in ("en", "de")
        assert hit.first_stage_score == hit.score and hit.rerank_score is None
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    query = tiny_encoder.encode(["cats purring"])[0]
    [record] = indexed.get([hits[0].point_id])
    assert hits[0].score == pytest.approx(float(query @ record.vector), abs=1e-5)


def test_doc_level_returns_each_document_once(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    retriever = Retriever(tiny_encoder, indexed)
    chunk_hits = retriever.search("sleeping cats", k=50)
    doc_hits = retriever.search("sleeping cats", k=3, doc_level=True)
    assert sorted(h.doc_id for h in doc_hits) == ["cats", "katzen", "market"]
    best = {}
    for hit in chunk_hits:
        best.setdefault(hit.doc_id, hit.score)
    assert [h.score for h in doc_hits] == sorted(best.values(), reverse=True)


def test_filters_restrict_hits(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    retriever = Retriever(tiny_encoder, indexed)
    assert {h.doc_id for h in retriever.search("anything", k=50, filter={"lang": "de"})} == {
        "katzen"
    }
    assert {
        h.doc_id for h in retriever.search("anything", k=50, filter={"year": {"$gte": 2021}})
    } == {"market", "katzen"}


def test_query_prefix_is_applied(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    store = ExactStore(None, tiny_encoder.spec(query_prefix="query: ", passage_prefix="passage: "))
    IngestionPipeline(tiny_encoder, store).ingest_records(DOCS)
    [hit] = Retriever(tiny_encoder, store).search("cats", k=1)
    [record] = store.get([hit.point_id])
    expected = float(tiny_encoder.encode(["cats"], prefix="query: ")[0] @ record.vector)
    assert hit.score == pytest.approx(expected, abs=1e-5)


class KeywordOverlapReranker:
    """A real (if simple) reranker: scores passages by shared lowercase words."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        words = set(query.lower().split())
        return [float(len(words & set(p.lower().replace(".", " ").split()))) for p in passages]


def test_reranker_reorders_the_candidates(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    plain = Retriever(tiny_encoder, indexed).search("bonds rallied investors", k=50)
    reranked = Retriever(
        tiny_encoder, indexed, reranker=KeywordOverlapReranker(), rerank_depth=50
    ).search("bonds rallied investors", k=3)
    assert reranked[0].doc_id == "market"
    assert reranked[0].rerank_score == reranked[0].score >= 2
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    first = {h.point_id: h.score for h in plain}
    assert all(h.first_stage_score == pytest.approx(first[h.point_id]) for h in reranked)


class WeightedOverlapReranker(KeywordOverlapReranker):
    """The keyword reranker with a recommended share of the final score."""

    rerank_weight = 0.5


def test_a_rerank_weight_blends_both_stages_min_max(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    query = "bonds rallied investors"
    plain = Retriever(tiny_encoder, indexed).search(query, k=6)
    hits = Retriever(
        tiny_encoder, indexed, reranker=WeightedOverlapReranker(), rerank_depth=6
    ).search(query, k=6)
    first = [h.score for h in plain]
    overlap = KeywordOverlapReranker().score(query, [h.text for h in plain])

    def scaled(values: list[float]) -> list[float]:
        low, high = min(values), max(values)
        return [(v - low) / (high - low) if high > low else 1.0 for v in values]

    expected = {
        h.point_id: 0.5 * r + 0.5 * f
        for h, f, r in zip(plain, scaled(first), scaled(overlap), strict=True)
    }
    assert {h.point_id for h in hits} == set(expected)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.point_id], abs=1e-6)
        assert hit.rerank_score == overlap[[h.point_id for h in plain].index(hit.point_id)]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


class StageWeightedOverlapReranker(KeywordOverlapReranker):
    """The keyword reranker with a share of the final score per first stage."""

    def rerank_weight_for(self, first_stage: str) -> float:
        return {"dense": 1.0, "hybrid": 0.25}[first_stage]


def test_the_rerank_weight_follows_the_first_stage(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    query = "bonds rallied investors"
    reranker = StageWeightedOverlapReranker()
    # Dense: weight 1, the reranker's order and scores alone.
    dense = Retriever(tiny_encoder, indexed, reranker=reranker, rerank_depth=6).search(query, k=6)
    assert all(h.score == h.rerank_score for h in dense)
    # Hybrid: weight 0.25 over the fused (RRF) scores.
    plain = Retriever(tiny_encoder, indexed, mode="hybrid").search(query, k=6)
    hits = Retriever(
        tiny_encoder, indexed, mode="hybrid", reranker=reranker, rerank_depth=6
    ).search(query, k=6)
    expected = dict(
        zip(
            [h.point_id for h in plain],
            interpolate_scores(
                [h.score for h in plain], reranker.score(query, [h.text for h in plain]), 0.25
            ),
            strict=True,
        )
    )
    assert {h.point_id: h.score for h in hits} == pytest.approx(expected)
    assert rerank_weight_after(reranker, "hybrid") == 0.25
    assert rerank_weight_after(KeywordOverlapReranker(), "hybrid") == 1.0
    assert rerank_weight_after(WeightedOverlapReranker(), "hybrid") == 0.5


def test_retriever_refuses_another_model(tmp_path, tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    from sbert_retrieval.encoding import BiEncoder
    from tests.conftest import build_tiny_model

    other = BiEncoder(build_tiny_model(tmp_path / "other", seed=7))
    with pytest.raises(ModelMismatchError):
        Retriever(other, indexed)


def test_batch_search_equals_single_searches(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    retriever = Retriever(tiny_encoder, indexed)
    queries = ["cats", "inflation", "Mäuse"]
    batch = retriever.search_batch(queries, k=4)
    for query, hits in zip(queries, batch, strict=True):
        single = retriever.search(query, k=4)
        assert [h.point_id for h in hits] == [h.point_id for h in single]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=1e-5)
    assert retriever.search_batch([], k=3) == []
    with pytest.raises(ValueError, match="k must be"):
        retriever.search("x", k=0)


def test_a_separate_query_tower_is_recorded_and_enforced(tmp_path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from sbert_retrieval.encoding import BiEncoder
    from tests.conftest import build_tiny_model

    query_tower = BiEncoder(build_tiny_model(tmp_path / "query-tower", seed=3))
    store = ExactStore(None, tiny_encoder.spec(query_encoder=query_tower))
    assert store.spec.query_model and store.spec.query_model != store.spec.fingerprint
    IngestionPipeline(tiny_encoder, store).ingest_records(DOCS)  # passages: the passage tower
    with pytest.raises(ModelMismatchError, match="query_model"):
        Retriever(tiny_encoder, store)  # queries would come from the wrong tower
    [hit] = Retriever(tiny_encoder, store, query_encoder=query_tower).search("cats", k=1)
    [record] = store.get([hit.point_id])
    assert hit.score == pytest.approx(
        float(query_tower.encode(["cats"])[0] @ record.vector), abs=1e-5
    )
    assert tiny_encoder.spec(query_encoder=tiny_encoder).query_model == ""


@pytest.mark.parametrize("store_type", [HnswStore, ExactStore])
def test_hybrid_with_a_filter_equals_fusing_the_exact_filtered_branches(
    tiny_encoder, store_type
) -> None:  # type: ignore[no-untyped-def]
    from sbert_retrieval.fusion import fuse

    store = store_type(None, tiny_encoder.spec())
    config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=8, overlap=2))
    IngestionPipeline(tiny_encoder, store, config).ingest_records(DOCS)
    query, flt = "cats sleep in the sun", {"lang": "en"}
    retriever = Retriever(tiny_encoder, store, mode="hybrid", fusion="weighted", alpha=0.3)
    hits = retriever.search(query, k=5, filter=flt)
    # Reference: brute force over the filtered points, BM25 from the store's own index.
    vector = tiny_encoder.encode([query])[0]
    ids = set().union(*store.ids_by_document([d.id for d in DOCS]).values())
    records = [r for r in store.get(sorted(ids)) if r.payload["metadata"]["lang"] == "en"]
    dense = sorted(((r.id, float(vector @ r.vector)) for r in records), key=lambda x: -x[1])
    lexical = [(r.id, r.score) for r in store.lexical_search([query], 100, filter=flt)[0]]
    expected = fuse(dense, lexical, fusion="weighted", alpha=0.3)[:5]
    assert [h.point_id for h in hits] == [e.key for e in expected]
    assert [h.score for h in hits] == pytest.approx([e.score for e in expected], abs=1e-5)
    assert all(h.metadata["lang"] == "en" for h in hits)
    assert all(h.dense_rank is not None for h in hits)


def test_lexical_mode_needs_no_vectors_and_answers_hostile_text(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    retriever = Retriever(tiny_encoder, indexed, mode="lexical")
    hits = retriever.search("cats", k=3)
    assert hits and all("Cats" in h.text for h in hits)
    assert hits[0].lexical_rank == 1 and hits[0].dense_score is None
    for text in ['cats AND "NEAR(', "\x00 * : ^ -", "x" * 50_000, "", "(("]:
        Retriever(tiny_encoder, indexed, mode="hybrid").search(text, k=3)
        retriever.search(text, k=3)


def test_unknown_mode_lists_the_valid_ones(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="valid: dense, lexical, hybrid"):
        Retriever(tiny_encoder, indexed, mode="sparse")


def test_without_an_encoder_queries_come_as_vectors(tiny_encoder, indexed) -> None:  # type: ignore[no-untyped-def]
    vectors = tiny_encoder.encode(["cats purring"])
    with_encoder = Retriever(tiny_encoder, indexed).search("cats purring", k=3)
    [hits] = Retriever(None, indexed).search_by_vectors(["cats purring"], vectors, k=3)
    assert [h.point_id for h in hits] == [h.point_id for h in with_encoder]
    assert Retriever(None, indexed, mode="lexical").search("cats", k=3)
    with pytest.raises(ValueError, match="dense mode needs an encoder for query texts"):
        Retriever(None, indexed).search("cats", k=3)


def test_to_dict_is_every_field_with_plain_metadata() -> None:
    from dataclasses import fields

    hit = Hit("d", 0.5, "t", 0, 1, metadata={"a": [1]}, point_id="p", dense_rank=1)
    data = hit.to_dict()
    assert list(data) == [f.name for f in fields(Hit)]
    assert type(data["metadata"]) is dict and data["metadata"] == {"a": [1]}
    assert (data["point_id"], data["dense_rank"], data["lexical_rank"]) == ("p", 1, None)


def _qdrant_store(spec):  # type: ignore[no-untyped-def]
    from sbert_retrieval.stores import QdrantStore

    return QdrantStore("retrieval", spec, location=":memory:")


@pytest.mark.parametrize(
    "make_store", [HnswStore, ExactStore, _qdrant_store], ids=["hnsw", "exact", "qdrant"]
)
def test_hybrid_rrf_with_a_filter_is_the_stores_fusion_of_the_exact_filtered_branches(
    tiny_encoder, make_store
) -> None:  # type: ignore[no-untyped-def]
    """RRF hybrid goes through ``store.hybrid_search`` (Qdrant: fused by Qdrant itself)."""
    from sbert_retrieval.fusion import reciprocal_rank_fusion
    from sbert_retrieval.stores import QdrantStore

    store = (
        _qdrant_store(tiny_encoder.spec())
        if make_store is _qdrant_store
        else make_store(None, tiny_encoder.spec())
    )
    config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=8, overlap=2))
    IngestionPipeline(tiny_encoder, store, config).ingest_records(DOCS)
    query, flt = "cats sleep in the sun", {"lang": "en"}
    hits = Retriever(tiny_encoder, store, mode="hybrid", rrf_k=10).search(query, k=5, filter=flt)
    vector = tiny_encoder.encode([query])[0]
    ids = set().union(*store.ids_by_document([d.id for d in DOCS]).values())
    records = [r for r in store.get(sorted(ids)) if r.payload["metadata"]["lang"] == "en"]
    dense = sorted(((r.id, float(vector @ r.vector)) for r in records), key=lambda x: -x[1])
    lexical = [(r.id, r.score) for r in store.lexical_search([query], 100, filter=flt)[0]]
    assert lexical  # the lexical branch takes part
    expected = reciprocal_rank_fusion([dense, lexical], rrf_k=10)[:5]
    assert [h.point_id for h in hits] == [e.key for e in expected]
    assert [h.score for h in hits] == pytest.approx([e.score for e in expected], abs=1e-6)
    assert all(h.metadata["lang"] == "en" for h in hits)
    fused_by_qdrant = isinstance(store, QdrantStore)
    assert all((h.dense_rank is None) == fused_by_qdrant for h in hits)
    for text in ['cats AND "NEAR(', "\x00 * : ^ -", "x" * 50_000, "", "(("]:
        Retriever(tiny_encoder, store, mode="hybrid").search(text, k=3, filter=flt)
        Retriever(tiny_encoder, store, mode="lexical").search(text, k=3)
