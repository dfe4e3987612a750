"""Ingestion: idempotence, replacement of changed documents, bad records, concurrency."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.chunking import ChunkingConfig
from sbert_retrieval.cli import main
from sbert_retrieval.documents import Document
from sbert_retrieval.errors import ModelMismatchError
from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline, point_id
from sbert_retrieval.retrieval import Retriever
from sbert_retrieval.stores import ExactStore, HnswStore
from tests.test_documents import LINUX_ONLY, make_unsafe_entries, without_blocking

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
        doc_ids = [f"{folder.resolve().as_posix()}/doc{i}.md" for i in range(5)]
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
            if doc_id == doc_ids[3]:
                assert not before[doc_id] & after[doc_id]
                assert report.deleted == len(before[doc_id])
                assert report.chunks == len(after[doc_id])
            else:
                assert after[doc_id] == before[doc_id]
        texts = [r.payload["text"] for r in store.get(sorted(after[doc_ids[3]]))]
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


class EncoderSpy:
    """Records every text the pipeline streams into ``encoder.encode_stream``."""

    def __init__(self, encoder, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
        self.texts: list[str] = []
        original = encoder.encode_stream

        def encode_stream(texts, **kwargs):  # type: ignore[no-untyped-def]
            def seen():  # type: ignore[no-untyped-def]
                for text in texts:
                    self.texts.append(text)
                    yield text

            return original(seen(), **kwargs)

        monkeypatch.setattr(encoder, "encode_stream", encode_stream)


def stored_records(store, doc_id: str) -> dict[str, tuple[dict, np.ndarray]]:  # type: ignore[no-untyped-def]
    return {
        r.id: (dict(r.payload), r.vector)
        for r in store.get(store.ids_by_document([doc_id])[doc_id])
    }


def test_a_metadata_only_change_rewrites_payloads_without_encoding(
    tmp_path: Path,
    tiny_encoder,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=12, overlap=2))
    text = " ".join(TOPICS[:3])
    other = Document("other", TOPICS[3], {"lang": "en"})
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        first = IngestionPipeline(tiny_encoder, store, config).ingest_records(
            [Document("d", text, {"lang": "en"}), other]
        )
        assert first.added == 2
        before = stored_records(store, "d")
        assert len(before) > 1
    spy = EncoderSpy(tiny_encoder, monkeypatch)
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:
        report = IngestionPipeline(tiny_encoder, store, config).ingest_records(
            [Document("d", text, {"lang": "de", "year": 2024}), other]
        )
        assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
        assert (report.chunks, report.deleted, report.payloads_updated) == (0, 0, len(before))
        assert spy.texts == []  # nothing was encoded again
    with HnswStore(tmp_path / "index", tiny_encoder.spec()) as store:  # durable once closed
        after = stored_records(store, "d")
        assert after.keys() == before.keys()
        for pid, (payload, vector) in after.items():
            assert payload == {**before[pid][0], "metadata": {"lang": "de", "year": 2024}}
            np.testing.assert_array_equal(vector, before[pid][1])
        hits = Retriever(tiny_encoder, store).search(TOPICS[0], k=10, filter={"lang": "de"})
        assert hits and {h.doc_id for h in hits} == {"d"}
        again = IngestionPipeline(tiny_encoder, store, config).ingest_records(
            [Document("d", text, {"lang": "de", "year": 2024}), other]
        )
        assert (again.updated, again.unchanged, again.payloads_updated) == (0, 2, 0)
        assert spy.texts == []


def test_kept_chunks_of_an_edited_document_get_their_new_offsets(
    tiny_encoder,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    # "cat" → "elephant": one token for one, so every later window keeps its text (and its
    # point id) but starts 5 characters further on.
    config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=8, overlap=0))
    tail = " ".join(TOPICS[1:4])
    with ExactStore(None, tiny_encoder.spec()) as store:
        pipeline = IngestionPipeline(tiny_encoder, store, config)
        pipeline.ingest_records([Document("d", f"The cat sleeps. {tail}")])
        before = stored_records(store, "d")
        spy = EncoderSpy(tiny_encoder, monkeypatch)
        edited = Document("d", f"The elephant sleeps. {tail}")
        report = pipeline.ingest_records([edited])
        after = stored_records(store, "d")
        kept = before.keys() & after.keys()
        assert len(kept) == len(after) - 1 >= 2  # only the first window is new
        assert (report.updated, report.chunks, report.deleted) == (1, 1, 1)
        assert report.payloads_updated == len(kept)
        assert len(spy.texts) == 1 and spy.texts[0].startswith("The elephant sleeps.")
        for payload, _ in after.values():
            assert edited.text[payload["start"] : payload["end"]] == payload["text"]
        for pid in kept:
            assert after[pid][0]["start"] == before[pid][0]["start"] + 5
            np.testing.assert_array_equal(after[pid][1], before[pid][1])


def test_the_same_file_name_in_two_folders_is_two_documents(
    tmp_path: Path,
    tiny_encoder,  # type: ignore[no-untyped-def]
) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, topic in zip(folders, TOPICS, strict=False):
        folder.mkdir()
        (folder / "README.md").write_text(f"# Readme\n\n{topic}", encoding="utf-8")
    with ExactStore(None, tiny_encoder.spec()) as store:
        pipeline = IngestionPipeline(tiny_encoder, store)
        first, second = (pipeline.ingest([folder]) for folder in folders)
        assert (first.added, second.added, second.updated) == (1, 1, 0)
        ids = [f"{folder.resolve().as_posix()}/README.md" for folder in folders]
        assert sorted(store.document_ids()) == sorted(ids)
        for doc_id, topic in zip(ids, TOPICS, strict=False):
            [record] = store.get(list(store.ids_by_document([doc_id])[doc_id]))
            assert topic in record.payload["text"]
        assert pipeline.ingest(folders).unchanged == 2  # stable: the same ids again


@LINUX_ONLY
def test_cli_json_report_names_unsafe_entries(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "good.md").write_text("# Good\nCats purr and hunt mice.", encoding="utf-8")
    expected = make_unsafe_entries(root)
    direct = os.fsdecode(os.fsencode(tmp_path) + b"/direct\xff.txt")
    with open(direct, "w", encoding="utf-8") as handle:
        handle.write("given by name")
    argv = ["ingest", str(root), direct, "--index", str(tmp_path / "index")]
    argv += ["--model", str(tiny_model_dir), "--json"]
    assert without_blocking(lambda: main(argv), seconds=120) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # what a UTF-8 terminal or pipe must take
    report = json.loads(out)
    assert (report["added"], report["failed"]) == (1, len(expected) + 1)
    for source, reason in [*expected.items(), (f"{tmp_path}/direct\\udcff.txt", "UTF-8")]:
        assert any(f.startswith(f"{source}: ") and reason in f for f in report["failures"]), source


def test_chunk_documents_truncate_is_one_whole_chunk_and_modes_are_checked() -> None:
    from sbert_retrieval.pipeline import chunk_documents, whole_chunk

    doc = Document("d", "some text here", {"lang": "en"})
    [[chunk]] = chunk_documents([doc], "truncate", None)
    assert chunk == whole_chunk(doc)
    assert (chunk.doc_id, chunk.index, chunk.text, chunk.start, chunk.end) == (
        "d", 0, "some text here", 0, 14,
    )  # fmt: skip
    assert chunk.metadata == {"lang": "en"}
    with pytest.raises(ValueError, match="unknown doc_mode 'page'; valid: chunk, truncate"):
        chunk_documents([doc], "page", None)
    with pytest.raises(ValueError, match="needs a chunker"):
        chunk_documents([doc], "chunk", None)
