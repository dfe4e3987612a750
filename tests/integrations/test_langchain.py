"""The LangChain adapter: LangChain's standard suites, CLI interoperability, retrieval chains.

The standard vector-store suite runs twice per backend (HNSW on disk, exact, Qdrant local mode):

* on the main path, ``SbertVectorStore(store, BiEncoder)`` with the tiny random model: the
  suite's queries ("foo", "bar", "new foo") are verbatim copies of stored texts, and the tiny
  model has no prefixes, so the query and passage vectors coincide and the expected ranking holds;
* on the suite's own ``get_embeddings()`` (``DeterministicFakeEmbedding``), which the adapter
  accepts as any LangChain ``Embeddings`` over a store made with ``embeddings_spec``.

Nothing in the standard suites is skipped or overridden (their ``test_no_overrides`` check runs).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="needs the [langchain] extra (langchain-core)")
pytest.importorskip("langchain_tests", reason="needs langchain-tests (the [test] extra)")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from sbert_retrieval.cli import main
from sbert_retrieval.documents import Document as SourceDocument
from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.errors import InvalidFilterError, ModelMismatchError
from sbert_retrieval.integrations.langchain import (
    SbertEmbeddings,
    SbertRetriever,
    SbertVectorStore,
    embeddings_spec,
    to_point_id,
)
from sbert_retrieval.pipeline import IngestionPipeline, point_id
from sbert_retrieval.retrieval import Retriever
from sbert_retrieval.stores import ExactStore, HnswStore
from sbert_retrieval.stores.base import VectorStore as Store
from sbert_retrieval.stores.factory import StoreConfig
from sbert_retrieval.stores.qdrant import QdrantStore

FAKE_DIMENSION = 6  # langchain_tests.integration_tests.vectorstores.EMBEDDING_SIZE


def qdrant_memory(spec: Any) -> QdrantStore:
    return QdrantStore(f"lc-{uuid.uuid4().hex[:8]}", spec, location=":memory:")


# -- LangChain's standard suites: main path (our BiEncoder) --------------------------------------


class TestHnswStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tiny_encoder: BiEncoder, tmp_path: Path) -> Iterator[VectorStore]:
        store = SbertVectorStore(HnswStore(tmp_path / "index", tiny_encoder.spec()), tiny_encoder)
        try:
            yield store
        finally:
            store.close()


class TestExactStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tiny_encoder: BiEncoder) -> Iterator[VectorStore]:
        store = SbertVectorStore(ExactStore(None, tiny_encoder.spec()), tiny_encoder)
        try:
            yield store
        finally:
            store.close()


class TestQdrantLocalStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tiny_encoder: BiEncoder) -> Iterator[VectorStore]:
        store = SbertVectorStore(qdrant_memory(tiny_encoder.spec()), tiny_encoder)
        try:
            yield store
        finally:
            store.close()


# -- LangChain's standard suites: the suite's own fake embeddings --------------------------------


class TestHnswFakeEmbeddingsStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        embeddings = self.get_embeddings()
        spec = embeddings_spec(embeddings, FAKE_DIMENSION)
        store = SbertVectorStore(HnswStore(None, spec), embeddings)
        try:
            yield store
        finally:
            store.close()


class TestQdrantLocalFakeEmbeddingsStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        embeddings = self.get_embeddings()
        store = SbertVectorStore(
            qdrant_memory(embeddings_spec(embeddings, FAKE_DIMENSION)), embeddings
        )
        try:
            yield store
        finally:
            store.close()


# -- LangChain's standard embeddings suites -------------------------------------------------------


class _TinyModelParams:
    model_dir: Path

    @pytest.fixture(autouse=True)
    def _tiny_model(self, tiny_model_dir: Path) -> None:
        type(self).model_dir = tiny_model_dir

    @property
    def embeddings_class(self) -> type[SbertEmbeddings]:
        return SbertEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": str(self.model_dir), "device": "cpu", "dtype": "float32"}


class TestSbertEmbeddingsUnit(_TinyModelParams, EmbeddingsUnitTests):
    pass


class TestSbertEmbeddingsIntegration(_TinyModelParams, EmbeddingsIntegrationTests):
    pass


# -- our own cases --------------------------------------------------------------------------------


def test_embeddings_apply_the_asymmetric_prefixes(tiny_encoder: BiEncoder) -> None:
    embeddings = SbertEmbeddings(encoder=tiny_encoder, query_prefix="q: ", passage_prefix="p: ")
    texts = ["cats purr", "dogs bark"]
    np.testing.assert_allclose(
        embeddings.embed_documents(texts), tiny_encoder.encode(texts, prefix="p: "), atol=1e-6
    )
    np.testing.assert_allclose(
        embeddings.embed_query("cats"), tiny_encoder.encode(["cats"], prefix="q: ")[0], atol=1e-6
    )
    assert embeddings.embed_query("cats") != embeddings.embed_documents(["cats"])[0]
    assert asyncio.run(embeddings.aembed_query("cats")) == embeddings.embed_query("cats")
    assert asyncio.run(embeddings.aembed_documents(texts)) == embeddings.embed_documents(texts)
    spec = embeddings.spec()
    assert (spec.query_prefix, spec.passage_prefix) == ("q: ", "p: ")


def test_store_prefixes_are_used_and_mismatches_refused(tiny_encoder: BiEncoder) -> None:
    spec = tiny_encoder.spec(query_prefix="query: ", passage_prefix="passage: ")
    vector_store = SbertVectorStore(ExactStore(None, spec), tiny_encoder)
    assert isinstance(vector_store.embeddings, SbertEmbeddings)
    assert vector_store.embeddings.query_prefix == "query: "
    [doc_id] = vector_store.add_texts(["cats purr"])
    [record] = vector_store.store.get([to_point_id(doc_id)])
    np.testing.assert_allclose(
        record.vector, tiny_encoder.encode(["cats purr"], prefix="passage: ")[0], atol=1e-6
    )
    wrong = SbertEmbeddings(encoder=tiny_encoder)  # the tiny model has no prompts: no prefixes
    with pytest.raises(ModelMismatchError, match="query_prefix"):
        SbertVectorStore(ExactStore(None, spec), wrong)


DOCS = [
    {"id": "cats", "text": "Cats purr when they are content.", "lang": "en", "year": 2020},
    {"id": "dogs", "text": "Dogs bark at the mail carrier.", "lang": "en", "year": 2018},
    {"id": "katzen", "text": "Katzen schnurren, wenn sie zufrieden sind.", "lang": "de"},
]


def write_jsonl(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n", encoding="utf-8")
    return path


def test_index_built_by_the_cli_is_searchable_through_langchain(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_encoder: BiEncoder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = tmp_path / "index"
    jsonl = write_jsonl(tmp_path / "d.jsonl")
    argv = ["ingest", str(jsonl), "--index", str(index), "--model", str(tiny_model_dir), "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    with HnswStore(index, read_only=True) as store:
        vector_store = SbertVectorStore(store, tiny_encoder)
        pairs = vector_store.similarity_search_with_score("Cats purr when they are content.", k=3)
        hits = Retriever(tiny_encoder, store).search("Cats purr when they are content.", k=3)
        # The same ranking and scores as our own retriever.
        assert [d.page_content for d, _ in pairs] == [h.text for h in hits]
        np.testing.assert_allclose([s for _, s in pairs], [h.score for h in hits], atol=1e-6)
        top = pairs[0][0]
        assert top.metadata == {"lang": "en", "year": 2020}
        assert top.id == point_id("cats", 0, DOCS[0]["text"])  # the pipeline's point id
        assert vector_store.get_by_ids([top.id]) == [top]
        only_de = vector_store.similarity_search("cats", k=3, filter={"lang": "de"})
        assert [d.page_content for d in only_de] == [DOCS[2]["text"]]
        recent = vector_store.similarity_search("cats", k=3, filter={"year": {"$gte": 2019}})
        assert [d.page_content for d in recent] == [DOCS[0]["text"]]
        by_doc = vector_store.similarity_search("x", k=3, filter={"doc_id": "dogs"})
        assert [d.page_content for d in by_doc] == [DOCS[1]["text"]]
        with_fields = SbertVectorStore(store, tiny_encoder, chunk_fields=True)
        [doc] = with_fields.similarity_search("x", k=1, filter={"doc_id": "dogs"})
        assert doc.metadata["doc_id"] == "dogs" and doc.metadata["chunk_index"] == 0
        assert (doc.metadata["start"], doc.metadata["end"]) == (0, len(DOCS[1]["text"]))


def test_texts_added_through_langchain_are_found_by_the_cli(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_encoder: BiEncoder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = tmp_path / "index"
    vector_store = SbertVectorStore.from_texts(
        ["Cats purr when they are content.", "Dogs bark at the mail carrier."],
        tiny_encoder,
        metadatas=[{"lang": "en"}, {"lang": "en", "kind": "dog"}],
        ids=["cats", "dogs"],
        store_config=StoreConfig(backend="hnsw", index=str(index)),
    )
    vector_store.close()
    assert main(["search", "Dogs bark at the mail carrier.", "--index", str(index),
                 "--model", str(tiny_model_dir), "--json", "-k", "1"]) == 0  # fmt: skip
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["doc_id"] == "dogs"
    assert hit["metadata"] == {"lang": "en", "kind": "dog"}
    assert (hit["chunk_index"], hit["start"], hit["end"]) == (0, 0, len(hit["text"]))
    # And the pipeline sees the same documents: re-ingesting "dogs" replaces its point.
    with HnswStore(index, tiny_encoder.spec()) as store:
        assert store.ids_by_document(["dogs"]) == {"dogs": {to_point_id("dogs")}}
        report = IngestionPipeline(tiny_encoder, store).ingest_records(
            [SourceDocument("dogs", "Dogs bark loudly.", {"lang": "en"})]
        )
        assert (report.updated, report.deleted) == (1, 1)
        assert store.count() == 2


def test_qdrant_index_built_by_the_pipeline_is_searchable(tiny_encoder: BiEncoder) -> None:
    store = qdrant_memory(tiny_encoder.spec())
    IngestionPipeline(tiny_encoder, store).ingest_records(
        [SourceDocument(d["id"], d["text"], {"lang": d["lang"]}) for d in DOCS]
    )
    vector_store = SbertVectorStore(store, tiny_encoder)
    [doc] = vector_store.similarity_search(DOCS[1]["text"], k=1, filter={"lang": "en"})
    assert doc.page_content == DOCS[1]["text"]
    assert doc.id == point_id("dogs", 0, DOCS[1]["text"])
    assert vector_store.delete_documents(["dogs"]) == 1
    remaining = {d.page_content for d in vector_store.similarity_search("x", k=5)}
    assert remaining == {DOCS[0]["text"], DOCS[2]["text"]}
    assert store.count() == 2
    vector_store.close()


def test_ids_are_deterministic(tiny_encoder: BiEncoder) -> None:
    vector_store = SbertVectorStore(ExactStore(None, tiny_encoder.spec()), tiny_encoder)
    first = vector_store.add_texts(["a", "b"], [{"n": 1}, {"n": 2}])
    again = vector_store.add_texts(["a", "b"], [{"n": 1}, {"n": 2}])
    assert first == again and vector_store.store.count() == 2
    other = vector_store.add_texts(["a"], [{"n": 3}])  # other metadata, another point
    assert other[0] not in first and vector_store.store.count() == 3
    assert all(str(uuid.UUID(i)) == i for i in first)
    given_uuid = "6F0E3C1E-5B7A-4C1F-9A53-2D4B1C7E8A90"
    assert vector_store.add_texts(["c"], ids=[given_uuid]) == [given_uuid]
    assert vector_store.get_by_ids([given_uuid])[0].id == given_uuid
    assert to_point_id(given_uuid) == given_uuid.lower()
    assert to_point_id("1") == to_point_id("1") != to_point_id("2")


def test_bad_arguments_are_actionable(tiny_encoder: BiEncoder) -> None:
    vector_store = SbertVectorStore(ExactStore(None, tiny_encoder.spec()), tiny_encoder)
    vector_store.add_texts(["a"])
    with pytest.raises(InvalidFilterError, match=r"unknown operator.*valid: \$eq"):
        vector_store.similarity_search("a", filter={"lang": {"$like": "e%"}})
    with pytest.raises(ValueError, match=r"unknown search argument.*valid: k, filter, doc_level"):
        vector_store.similarity_search("a", filters={"lang": "en"})
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        vector_store.similarity_search("a", k=0)
    with pytest.raises(ValueError, match="delete needs the ids"):
        vector_store.delete()
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        vector_store.add_texts(["a", "b"], [{}])
    with pytest.raises(ValueError, match="not JSON-serializable"):
        vector_store.add_texts(["a"], [{"x": object()}])
    with pytest.raises(TypeError, match="BiEncoder, SbertEmbeddings or LangChain Embeddings"):
        SbertVectorStore(ExactStore(None, tiny_encoder.spec()), object())  # type: ignore[arg-type]


def test_fake_embeddings_store_refuses_our_encoder(tiny_encoder: BiEncoder) -> None:
    spec = embeddings_spec(DeterministicFakeEmbedding(size=32), 32)
    with pytest.raises(ModelMismatchError):
        SbertVectorStore(ExactStore(None, spec), tiny_encoder)


class PreferWord:
    """A reranker that scores passages by whether they contain a word (and records calls)."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.calls: list[tuple[str, int]] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append((query, len(passages)))
        return [1.0 if self.word in p else 0.0 for p in passages]


@pytest.fixture
def animals(tiny_encoder: BiEncoder) -> SbertVectorStore:
    texts = [f"note {i}: the cat sat on mat number {i}" for i in range(8)]
    texts.append("a dog barked all night")
    return SbertVectorStore.from_texts(
        texts, tiny_encoder, metadatas=[{"n": i} for i in range(len(texts))]
    )


def test_retrieval_chain_from_langchain_core_pieces(animals: SbertVectorStore) -> None:
    retriever = animals.as_retriever(search_kwargs={"k": 3})
    assert isinstance(retriever, SbertRetriever)

    def format_docs(docs: list[Document]) -> str:
        return "\n".join(f"[{d.metadata['n']}] {d.page_content}" for d in docs)

    chain = retriever | RunnableLambda(format_docs)
    query = "note 2: the cat sat on mat number 2"
    expected = animals.similarity_search(query, k=3)
    output = chain.invoke(query)
    assert output == format_docs(expected)
    assert output.splitlines()[0] == "[2] " + query  # the verbatim text is the top hit
    assert asyncio.run(chain.ainvoke(query)) == output


def test_retriever_reranks_with_any_scorer(animals: SbertVectorStore) -> None:
    reranker = PreferWord("dog")
    retriever = animals.as_retriever(search_kwargs={"k": 2}, reranker=reranker, rerank_depth=50)
    docs = retriever.invoke("note 1: the cat sat on mat number 1")
    assert docs[0].page_content == "a dog barked all night"
    assert docs[0].metadata["rerank_score"] == 1.0 and docs[1].metadata["rerank_score"] == 0.0
    assert len(docs) == 2 and reranker.calls == [("note 1: the cat sat on mat number 1", 9)]
    stored = animals.get_by_ids([docs[0].id or ""])[0]
    assert "rerank_score" not in stored.metadata  # the stored document is unchanged
    adocs = asyncio.run(retriever.ainvoke("note 1: the cat sat on mat number 1"))
    assert adocs == docs
    filtered = animals.as_retriever(
        search_kwargs={"k": 2, "filter": {"n": {"$lt": 3}}}, reranker=reranker
    ).invoke("cat")
    assert {d.metadata["n"] for d in filtered} <= {0, 1, 2}
    with pytest.raises(ValueError, match="score"):
        animals.as_retriever(reranker=object())  # type: ignore[arg-type]


def test_retriever_with_our_cross_encoder(animals: SbertVectorStore, tmp_path: Path) -> None:
    from sbert_retrieval.reranking import CrossEncoderReranker
    from tests.test_reranking import build_cross_encoder

    reranker = CrossEncoderReranker(build_cross_encoder(tmp_path / "ce"), device="cpu")
    query = "where did the dog bark?"
    docs = animals.as_retriever(search_kwargs={"k": 4}, reranker=reranker).invoke(query)
    scores = [d.metadata["rerank_score"] for d in docs]
    assert len(docs) == 4 and scores == sorted(scores, reverse=True)
    expected = reranker.score(query, [d.page_content for d in docs])
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_mmr_threshold_and_doc_level(animals: SbertVectorStore) -> None:
    query = "note 3: the cat sat on mat number 3"
    mmr = animals.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 9})
    docs = mmr.invoke(query)
    assert len(docs) == 3 and docs[0].page_content == query
    threshold = animals.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.999, "k": 5}
    )
    assert [d.page_content for d in threshold.invoke(query)] == [query]
    relevance = animals.similarity_search_with_relevance_scores(query, k=9)
    assert all(0.0 <= s <= 1.0 for _, s in relevance)
    store = SbertVectorStore(ExactStore(None, animals.store.spec), animals.embeddings)
    store.add_texts(["alpha one", "alpha two", "beta"], ids=["a1", "a2", "b"])
    store.store.upsert(  # a second chunk of document "a1", as the pipeline would write it
        [
            rec.__class__(
                point_id("a1", 1, "alpha three"),
                rec.vector,
                {**rec.payload, "chunk_index": 1, "text": "alpha three"},
            )
            for rec in store.store.get([to_point_id("a1")])
        ]
    )
    chunks = store.similarity_search("alpha one", k=3)
    per_doc = store.similarity_search("alpha one", k=3, doc_level=True)
    assert len(chunks) == 3 and len(per_doc) == 3
    assert len({d.id for d in per_doc}) == 3
    assert sum(1 for d in chunks if d.page_content.startswith("alpha")) >= 2


def test_concurrent_async_use(animals: SbertVectorStore) -> None:
    async def scenario() -> tuple[list[list[Document]], list[list[str]]]:
        searches = [animals.asimilarity_search(f"cat {i}", k=2) for i in range(20)]
        writes = [animals.aadd_texts([f"new text {i}"], ids=[f"new-{i}"]) for i in range(5)]
        found = await asyncio.gather(*searches)
        ids = await asyncio.gather(*writes)
        return list(found), list(ids)

    found, ids = asyncio.run(scenario())
    assert all(len(docs) == 2 for docs in found)
    assert ids == [[f"new-{i}"] for i in range(5)]
    assert len(asyncio.run(animals.aget_by_ids([f"new-{i}" for i in range(5)]))) == 5
    assert asyncio.run(animals.adelete(["new-0"])) is True
    assert len(animals.get_by_ids(["new-0"])) == 0


def test_from_texts_with_other_stores(tiny_encoder: BiEncoder) -> None:
    store: Store = qdrant_memory(tiny_encoder.spec())
    vector_store = SbertVectorStore.from_texts(
        ["x", "y"], tiny_encoder, ids=["1", "2"], store=store
    )
    assert [d.id for d in vector_store.get_by_ids(["2", "1", "3"])] == ["2", "1"]
    fake = SbertVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=8), ids=["1"])
    assert fake.store.spec.dimension == 8 and fake.similarity_search("x", k=1)[0].id == "1"
    with pytest.raises(ValueError, match="store or store_config"):
        SbertVectorStore.from_texts(
            ["x"], tiny_encoder, store=store, store_config=StoreConfig(index="i")
        )


def test_modes_go_through_the_retriever(animals: SbertVectorStore, tiny_encoder: BiEncoder) -> None:
    query = "a dog barked"
    for settings in (
        {"mode": "lexical"},
        {"mode": "hybrid"},
        {"mode": "hybrid", "fusion": "weighted", "alpha": 0.2, "candidates": 5},
    ):
        pairs = animals.similarity_search_with_score(query, k=3, **settings)
        hits = Retriever(tiny_encoder, animals.store, **settings).search(query, k=3)
        assert [d.page_content for d, _ in pairs] == [h.text for h in hits]
        np.testing.assert_allclose([s for _, s in pairs], [h.score for h in hits], atol=1e-6)
        docs = animals.as_retriever(search_kwargs={"k": 3, **settings}).invoke(query)
        assert docs == [d for d, _ in pairs]
        assert (
            asyncio.run(animals.as_retriever(search_kwargs={"k": 3, **settings}).ainvoke(query))
            == docs
        )
    [lexical] = animals.similarity_search(query, k=3, mode="lexical")  # BM25: one text matches
    assert lexical.page_content == "a dog barked all night"
    de = animals.similarity_search("cat", k=9, mode="hybrid", filter={"n": {"$lt": 2}})
    assert {d.metadata["n"] for d in de} == {0, 1}


def test_mode_errors_are_actionable(animals: SbertVectorStore) -> None:
    with pytest.raises(ValueError, match="unknown mode 'sparse'; valid: dense, lexical, hybrid"):
        animals.as_retriever(search_kwargs={"mode": "sparse"})
    with pytest.raises(ValueError, match="unknown fusion 'max'; valid: rrf, weighted"):
        animals.as_retriever(search_kwargs={"mode": "hybrid", "fusion": "max"})
    with pytest.raises(ValueError, match="unknown mode 'sparse'"):
        animals.similarity_search("cat", mode="sparse")
    with pytest.raises(
        ValueError, match=r"need mode 'dense'.*or mode 'hybrid' with fusion 'weighted'"
    ):
        animals.similarity_search_with_relevance_scores("cat", mode="lexical")
    with pytest.raises(ValueError, match="mmr is dense only"):
        animals.max_marginal_relevance_search("cat", mode="hybrid")


def test_threshold_and_rerank_in_hybrid_mode(animals: SbertVectorStore) -> None:
    query = "a dog barked"
    weighted = {"mode": "hybrid", "fusion": "weighted", "alpha": 0.0}  # BM25 alone, in [0, 1]
    relevance = animals.similarity_search_with_relevance_scores(query, k=9, **weighted)
    assert relevance[0][1] == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for _, s in relevance)
    threshold = animals.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 5, "score_threshold": 0.5, **weighted},
    )
    assert [d.page_content for d in threshold.invoke(query)] == ["a dog barked all night"]
    reranker = PreferWord("number 7")
    reranked = animals.as_retriever(
        search_kwargs={"k": 2, "mode": "hybrid"}, reranker=reranker, rerank_depth=9
    ).invoke(query)
    assert reranked[0].page_content.endswith("number 7")
    assert reranked[0].metadata["rerank_score"] == 1.0 and len(reranked) == 2
    assert reranker.calls == [(query, 9)]
    with_threshold = animals.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 5, "score_threshold": 0.5, **weighted},
        reranker=reranker,
    ).invoke(query)
    assert [d.page_content for d in with_threshold] == ["a dog barked all night"]
    mmr = animals.as_retriever(
        search_type="mmr", search_kwargs={"k": 2, "fetch_k": 9}, reranker=reranker, rerank_depth=4
    ).invoke(query)
    assert len(mmr) == 2 and all("rerank_score" in d.metadata for d in mmr)


def test_modes_with_any_langchain_embeddings() -> None:
    fake = SbertVectorStore.from_texts(
        ["cats purr", "dogs bark", "birds sing"], DeterministicFakeEmbedding(size=8)
    )
    [doc] = fake.similarity_search("dogs", k=3, mode="lexical")
    assert doc.page_content == "dogs bark"
    hybrid = fake.similarity_search("dogs", k=3, mode="hybrid")
    assert len(hybrid) == 3 and hybrid[0].page_content == "dogs bark"
