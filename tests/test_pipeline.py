"""Ingestion: idempotence, replacement of changed documents, bad records, concurrency."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.chunking import ChunkingConfig
from sbert_retrieval.documents import Document
from sbert_retrieval.errors import ModelMismatchError
from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline, point_id
from sbert_retrieval.retrieval import Retriever
from sbert_retrieval.stores import ExactStore, HnswStore

TOPICS = [
    "Cats are small carnivorous mammals that purr and hunt mice at night.",
    "The stock market fell sharply as inflation fears spread among investors.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "The violin is a string instrument played with a bow in orchestras.",
    "Volcanoes erupt when magma rises through cracks in the Earth's crust.",
]


def write_folder(root: Path) -> Path:
    folder = root / "docs"
    folder.mkdir()
    for i, topic in enumerate(TOPICS):
        (folder / f"doc{i}.md").write_text(
            f"# Topic {i}\n\n" + " ".join([topic] * (3 + 4 * i)), encoding="utf-8"
        )
    return folder


def test_reingesting_the_same_folder_adds_nothing(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    folder = write_folder(tmp_path)
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        first = IngestionPipeline(tiny_encoder, store).ingest([folder])
        count = store.count()
        assert (first.added, first.updated, first.unchanged, first.failed) == (5, 0, 0, 0)
        assert first.chunks == count > 5
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        second = IngestionPipeline(tiny_encoder, store).ingest([folder])
        assert (second.added, second.updated, second.unchanged, second.chunks, second.deleted) == (
            0,
            0,
            5,
            0,
            0,
        )
        assert store.count() == count


def test_editing_one_file_replaces_only_its_chunks(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    folder = write_folder(tmp_path)
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        pipeline = IngestionPipeline(
            tiny_encoder, store, IngestConfig(chunking=ChunkingConfig(chunk_tokens=24, overlap=4))
        )
        pipeline.ingest([folder])
        doc_ids = [f"doc{i}.md" for i in range(5)]
        before = store.ids_by_document(doc_ids)
        edited = folder / "doc3.md"
        edited.write_text(
            "# Topic 3\n\nA completely different text about glaciers and ice ages. " * 2,
            encoding="utf-8",
        )
        report = pipeline.ingest([folder])
        after = store.ids_by_document(doc_ids)
        assert (report.added, report.updated, report.unchanged) == (0, 1, 4)
        for doc_id in doc_ids:
            if doc_id == "doc3.md":
                assert not before[doc_id] & after[doc_id]
                assert report.deleted == len(before[doc_id])
                assert report.chunks == len(after[doc_id])
            else:
                assert after[doc_id] == before[doc_id]
        texts = [r.payload["text"] for r in store.get(sorted(after["doc3.md"]))]
        assert all("glaciers" in t or "ice" in t for t in texts)


def test_bad_records_are_named_and_the_rest_goes_in(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    huge_text = "Alpine glaciers retreat every summer. " * 28_000  # ~1 MB
    assert len(huge_text) >= 1_000_000
    source = tmp_path / "input.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "ok-1", "text": TOPICS[0], "lang": "en"}) + "\n")
        handle.write('{"id": "broken", "text": \n')
        handle.write(json.dumps({"id": "empty", "text": "   "}) + "\n")
        handle.write(json.dumps({"id": "huge", "text": huge_text}) + "\n")
        handle.write(json.dumps({"id": "ok-2", "text": TOPICS[1]}) + "\n")
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        report = IngestionPipeline(tiny_encoder, store).ingest([source])
        assert report.added == 3
        assert report.failed == 2
        reasons = [str(f) for f in report.failures]
        assert any("line 2" in r and "invalid JSON" in r for r in reasons)
        assert any("line 3" in r and "empty" in r for r in reasons)
        assert report.truncated == 0
        huge_ids = store.ids_by_document(["huge"])["huge"]
        chunks = store.get(sorted(huge_ids))
        assert len(chunks) > 100
        # Chunked in full: the windows reach the end of the text and none was cut.
        assert max(c.payload["end"] for c in chunks) == len(huge_text.rstrip())
        assert min(c.payload["start"] for c in chunks) == 0
        assert all(
            huge_text[c.payload["start"] : c.payload["end"]] == c.payload["text"] for c in chunks
        )


def test_truncate_mode_counts_what_it_cuts(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    docs = [Document("short", "A short text."), Document("long", "word " * 500)]
    with ExactStore(None, tiny_encoder.spec()) as store:
        report = IngestionPipeline(
            tiny_encoder, store, IngestConfig(doc_mode="truncate")
        ).ingest_records(docs)
        assert (report.added, report.chunks, report.truncated) == (2, 2, 1)


def test_duplicate_ids_in_one_run_are_reported(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    docs = [Document("a", TOPICS[0]), Document("a", TOPICS[1])]
    with ExactStore(None, tiny_encoder.spec()) as store:
        report = IngestionPipeline(tiny_encoder, store).ingest_records(docs)
    assert (report.added, report.failed) == (1, 1)
    assert "duplicate document id 'a'" in str(report.failures[0])


def test_stored_vectors_equal_direct_encoding(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    doc = Document("d", " ".join(TOPICS))
    with ExactStore(None, tiny_encoder.spec()) as store:
        IngestionPipeline(
            tiny_encoder, store, IngestConfig(chunking=ChunkingConfig(chunk_tokens=20, overlap=5))
        ).ingest_records([doc])
        records = store.get(sorted(store.ids_by_document(["d"])["d"]))
    for record in records:
        expected = tiny_encoder.encode([record.payload["text"]])[0]
        np.testing.assert_allclose(record.vector, expected, atol=1e-6)
        assert record.id == point_id("d", record.payload["chunk_index"], record.payload["text"])


def test_passage_prefix_is_applied(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    spec = tiny_encoder.spec(query_prefix="query: ", passage_prefix="passage: ")
    with ExactStore(None, spec) as store:
        IngestionPipeline(tiny_encoder, store).ingest_records([Document("d", TOPICS[2])])
        [record] = store.get(list(store.ids_by_document(["d"])["d"]))
    np.testing.assert_allclose(
        record.vector, tiny_encoder.encode([TOPICS[2]], prefix="passage: ")[0], atol=1e-6
    )


def test_pipeline_refuses_another_model(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from sbert_retrieval.encoding import BiEncoder
    from tests.conftest import build_tiny_model

    other = BiEncoder(build_tiny_model(tmp_path / "other", seed=1))
    with (
        ExactStore(None, tiny_encoder.spec()) as store,
        pytest.raises(ModelMismatchError, match="fingerprint"),
    ):
        IngestionPipeline(other, store)


def test_concurrent_search_while_ingesting(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    docs = [
        Document(f"doc-{i}", f"{TOPICS[i % 5]} Number {i}. " * (1 + i % 7), {"n": i})
        for i in range(400)
    ]
    errors: list[BaseException] = []
    searches = [0]
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        IngestionPipeline(tiny_encoder, store, IngestConfig(doc_batch_size=16)).ingest_records(
            docs[:16]
        )
        retriever = Retriever(tiny_encoder, store)
        stop = threading.Event()

        def search_loop(worker: int) -> None:
            try:
                while not stop.is_set():
                    hits = retriever.search(TOPICS[worker % 5], k=5, doc_level=worker % 2 == 0)
                    assert 1 <= len(hits) <= 5
                    for hit in hits:
                        assert hit.doc_id.startswith("doc-")
                        assert hit.text and hit.end > hit.start
                        assert -1.01 <= hit.score <= 1.01
                    searches[0] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=search_loop, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        try:
            report = IngestionPipeline(
                tiny_encoder, store, IngestConfig(doc_batch_size=16, flush_every=50)
            ).ingest_records(docs)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not errors, errors[:3]
        assert searches[0] > 8
        assert report.added == 384 and report.unchanged == 16
        assert len(store.document_ids()) == 400


class FailingUpsertStore(ExactStore):
    """The real exact store, except that upserts fail from the ``fail_at``-th call on."""

    def __init__(self, spec, fail_at: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(None, spec)
        self.fail_at = fail_at
        self.upserts = 0

    def upsert(self, records):  # type: ignore[no-untyped-def]
        self.upserts += 1
        if self.upserts >= self.fail_at:
            raise OSError(f"simulated: upsert {self.upserts} failed")
        super().upsert(records)


def many_docs(count: int) -> list[Document]:
    return [Document(f"doc-{i}", f"{TOPICS[i % 5]} Item {i}.") for i in range(count)]


def test_a_writer_failure_stops_the_run_and_keeps_what_was_written(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    store = FailingUpsertStore(tiny_encoder.spec(), fail_at=3)
    config = IngestConfig(doc_batch_size=10)
    threads_before = threading.active_count()
    with pytest.raises(OSError, match="upsert 3 failed"):
        IngestionPipeline(tiny_encoder, store, config).ingest_records(many_docs(200))
    stored = store.ids_by_document(f"doc-{i}" for i in range(200))
    assert sorted(stored, key=lambda d: int(d.split("-")[1])) == [f"doc-{i}" for i in range(20)]
    assert threading.active_count() == threads_before  # no stage left running


def test_an_error_from_the_input_stops_the_run(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    def records():  # type: ignore[no-untyped-def]
        yield from many_docs(30)
        raise OSError("simulated: the source went away")

    with ExactStore(None, tiny_encoder.spec()) as store, pytest.raises(OSError, match="went away"):
        IngestionPipeline(tiny_encoder, store, IngestConfig(doc_batch_size=10)).ingest_records(
            records()
        )


def test_an_encoder_failure_stops_the_run(tiny_model_dir: Path) -> None:
    import torch

    from sbert_retrieval.encoding import BiEncoder
    from tests.encoding.test_bi_encoder import OutOfMemoryAbove

    encoder = BiEncoder(tiny_model_dir, device="cpu")
    encoder.model = OutOfMemoryAbove(encoder.model, limit=0)  # nothing fits, not even one text
    with ExactStore(None, encoder.spec()) as store, pytest.raises(torch.OutOfMemoryError):
        IngestionPipeline(encoder, store).ingest_records(many_docs(50))


def test_batches_land_in_input_order_across_stages(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    docs = many_docs(120)
    with ExactStore(None, tiny_encoder.spec()) as store:
        pipeline = IngestionPipeline(tiny_encoder, store, IngestConfig(doc_batch_size=7))
        first = pipeline.ingest_records(docs[:60])
        # Unchanged, changed and new documents interleaved: plans with nothing to encode sit
        # between plans with chunks, and all of them must still be written.
        mixed = docs[:30] + [Document(d.id, d.text + " Edited.") for d in docs[30:60]] + docs[60:]
        second = pipeline.ingest_records(mixed)
        assert (first.added, second.unchanged, second.updated, second.added) == (60, 30, 30, 60)
        assert second.deleted == 30 and store.count() == 120
        for doc in mixed[::17]:
            [pid] = store.ids_by_document([doc.id])[doc.id]
            [record] = store.get([pid])
            assert record.payload["text"] == doc.text
            np.testing.assert_allclose(record.vector, tiny_encoder.encode([doc.text])[0], atol=1e-6)
