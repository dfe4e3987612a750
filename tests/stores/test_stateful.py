"""Stateful (model-based) tests: random operation sequences against a plain dict model.

One :class:`RuleBasedStateMachine` per backend (HnswStore, ExactStore, QdrantStore in local
mode on disk) drives upserts of new and existing ids, batches with a repeated id, deletes
(existing, unknown, already deleted), re-upserts after a delete, ``set_payloads``, flushes and
reopens, and refused upserts (a bad payload), checking the store against the model
``{id: (vector, payload)}`` after every step: count, get, get_payloads, ids_by_document, and
search (no repeated ids; the exact brute-force top-k, compared by scores so ties cannot
matter), unfiltered and filtered, and lexical search (exactly the points whose text holds a
word, each once).

Ids come from a pool of 12, so the same ids are re-upserted and deleted often: the sequences
that leave hnswlib "ghost" nodes (a re-upsert landing in a deleted slot while the old node
stays live) are found within a few steps.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores import ExactStore, HnswParams, HnswStore
from sbert_retrieval.stores.base import Record, VectorStore
from sbert_retrieval.stores.filters import parse_filter
from tests.stores.contract import SPEC as CONTRACT_SPEC

DIM = 8
# The contract's spec at a smaller width: fewer dimensions make exact ties (and shrinking) likelier.
SPEC = dataclasses.replace(CONTRACT_SPEC, dimension=DIM)
POOL = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"stateful-{i}")) for i in range(12)]
#: A valid id that is never stored.
OUTSIDE = str(uuid.uuid5(uuid.NAMESPACE_OID, "stateful-outside"))
DOCS = [f"doc-{i}" for i in range(4)]
LANGS = ("en", "de", "fr")
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"lang": "de"},
    {"lang": {"$in": ["en", "fr"]}},
    {"doc_id": "doc-1"},
    {"n": {"$gte": 3}},
    {"lang": "de", "doc_id": "doc-2"},
]
SCORE_TOL = 1e-4
VECTOR_TOL = 1e-5

#: Sized so each backend's machine runs in well under 30 s on one core when nothing fails
#: (Qdrant local mode commits every write to SQLite, so it gets fewer sequences).
LOCAL_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    database=None,  # the working tree is shared: write no .hypothesis/ folder
)
QDRANT_SETTINGS = settings(LOCAL_SETTINGS, max_examples=60)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def make_payload(doc: int, lang: str, n: int) -> dict[str, Any]:
    return {
        "doc_id": DOCS[doc],
        "chunk_index": n,
        "text": f"text {n} {lang}",
        "start": 0,
        "end": 5,
        "metadata": {"lang": lang, "n": n, "tags": [lang, f"n{n}"]},
    }


id_indexes = st.integers(0, len(POOL) - 1)
seeds = st.integers(0, 2**16)
payloads = st.builds(
    make_payload, st.integers(0, len(DOCS) - 1), st.sampled_from(LANGS), st.integers(0, 5)
)
entries = st.tuples(id_indexes, seeds, payloads)
bad_metadata = st.sampled_from([{"lang": "\ud800"}, {"lang": "de", "score": float("nan")}])


class StoreMachine(RuleBasedStateMachine):
    """The store against ``self.model``; subclasses say how to open the store."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sbert-stateful-"))
        self.model: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        self.deleted: set[str] = set()
        self.steps = 0
        self.store: VectorStore = self.open(SPEC)

    def open(self, spec: EmbeddingSpec | None) -> VectorStore:
        raise NotImplementedError

    def teardown(self) -> None:
        # The failing step has already been reported; closing must not mask it.
        with contextlib.suppress(Exception):
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------
    def _apply(self, records: list[Record]) -> None:
        """Upsert and update the model the way a sequence of single upserts would."""
        self.store.upsert(records)
        for record in records:
            self.model[record.id] = (record.vector.copy(), copy.deepcopy(dict(record.payload)))
            self.deleted.discard(record.id)

    def _check_search(self, query: np.ndarray, k: int, flt: dict[str, Any] | None) -> None:
        [row] = self.store.search(query, k, filter=flt)
        parsed = parse_filter(flt)
        subset = {
            pid: entry
            for pid, entry in self.model.items()
            if parsed is None or parsed.matches(entry[1])
        }
        ids = [hit.id for hit in row]
        assert len(ids) == len(set(ids)), f"search returned an id twice: {ids}"
        unexpected = set(ids) - set(subset)
        assert not unexpected, f"ids not in the model (or the filter): {unexpected}"
        exact = sorted((float(np.dot(v, query)) for v, _ in subset.values()), reverse=True)[:k]
        assert len(row) == len(exact), (len(row), len(exact))
        for hit in row:
            vector, payload = subset[hit.id]
            assert abs(hit.score - float(np.dot(vector, query))) <= SCORE_TOL, hit
            assert dict(hit.payload) == payload, hit
        np.testing.assert_allclose([hit.score for hit in row], exact, atol=SCORE_TOL)
        if flt == {"lang": "de"}:
            assert all(hit.payload["metadata"]["lang"] == "de" for hit in row)

    # -- writes --------------------------------------------------------------------------------
    @rule(batch=st.lists(entries, min_size=1, max_size=6))
    def upsert(self, batch: list[tuple[int, int, dict[str, Any]]]) -> None:
        self._apply([Record(POOL[i], unit(seed), payload) for i, seed, payload in batch])

    @rule(
        i=id_indexes,
        first=st.tuples(seeds, payloads),
        others=st.lists(entries, max_size=3),
        last=st.tuples(seeds, payloads),
    )
    def upsert_batch_with_a_repeated_id(
        self,
        i: int,
        first: tuple[int, dict[str, Any]],
        others: list[tuple[int, int, dict[str, Any]]],
        last: tuple[int, dict[str, Any]],
    ) -> None:
        records = [
            Record(POOL[i], unit(first[0]), first[1]),
            *(Record(POOL[j], unit(seed), payload) for j, seed, payload in others),
            Record(POOL[i], unit(last[0]), last[1]),
        ]
        self._apply(records)

    @precondition(lambda self: self.model)
    @rule(
        data=st.data(),
        change=st.sampled_from(["vector", "payload", "both"]),
        seed=seeds,
        payload=payloads,
    )
    def reupsert_existing(
        self, data: st.DataObject, change: str, seed: int, payload: dict[str, Any]
    ) -> None:
        pid = data.draw(st.sampled_from(sorted(self.model)), label="id")
        vector, old_payload = self.model[pid]
        self._apply(
            [
                Record(
                    pid,
                    unit(seed) if change != "payload" else vector.copy(),
                    payload if change != "vector" else old_payload,
                )
            ]
        )

    @precondition(lambda self: self.deleted)
    @rule(data=st.data(), seed=seeds, payload=payloads)
    def reupsert_deleted(self, data: st.DataObject, seed: int, payload: dict[str, Any]) -> None:
        pid = data.draw(st.sampled_from(sorted(self.deleted)), label="id")
        self._apply([Record(pid, unit(seed), payload)])

    @rule(indexes=st.lists(id_indexes, max_size=4), unknown=st.booleans())
    def delete(self, indexes: list[int], unknown: bool) -> None:
        ids = [POOL[i] for i in indexes] + ([OUTSIDE] if unknown else [])
        expected = {pid for pid in ids if pid in self.model}
        assert self.store.delete(ids) == len(expected)
        for pid in expected:
            del self.model[pid]
            self.deleted.add(pid)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_existing(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.model)), label="id")
        assert self.store.delete([pid]) == 1
        del self.model[pid]
        self.deleted.add(pid)
        assert self.store.delete([pid]) == 0  # already deleted

    @rule(changes=st.dictionaries(id_indexes, payloads, max_size=4))
    def set_payloads(self, changes: dict[int, dict[str, Any]]) -> None:
        mapping = {POOL[i]: payload for i, payload in changes.items()}
        expected = [pid for pid in mapping if pid in self.model]
        assert self.store.set_payloads(mapping) == len(expected)
        for pid in expected:
            vector, _ = self.model[pid]
            self.model[pid] = (vector, copy.deepcopy(mapping[pid]))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), lang=st.sampled_from(LANGS), n=st.integers(0, 5))
    def set_metadata_of_existing(self, data: st.DataObject, lang: str, n: int) -> None:
        pid = data.draw(st.sampled_from(sorted(self.model)), label="id")
        vector, old = self.model[pid]
        new = {**old, "metadata": {**old["metadata"], "lang": lang, "n": n}}
        assert self.store.set_payloads({pid: new}) == 1
        self.model[pid] = (vector, copy.deepcopy(new))

    @rule(good=st.lists(entries, max_size=2), i=id_indexes, metadata=bad_metadata)
    def refused_upsert(
        self, good: list[tuple[int, int, dict[str, Any]]], i: int, metadata: dict[str, Any]
    ) -> None:
        bad = Record(POOL[i], unit(i), {"doc_id": DOCS[0], "text": "bad", "metadata": metadata})
        batch = [Record(POOL[j], unit(seed), payload) for j, seed, payload in good] + [bad]
        with pytest.raises(ValueError, match=POOL[i]):
            self.store.upsert(batch)
        # Nothing of the batch is stored: the invariant checks the model is still exact.

    @rule()
    def flush(self) -> None:
        self.store.flush()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open(None)
        assert self.store.spec == SPEC

    # -- reads ---------------------------------------------------------------------------------
    @rule(seed=seeds, k=st.integers(1, 15), flt=st.sampled_from(FILTERS))
    def search(self, seed: int, k: int, flt: dict[str, Any] | None) -> None:
        self._check_search(unit(seed), k, flt)

    @invariant()
    def store_matches_model(self) -> None:
        self.steps += 1
        store, model = self.store, self.model
        assert store.count() == len(model)
        got = store.get([*POOL, OUTSIDE])
        assert [r.id for r in got] == [pid for pid in POOL if pid in model]
        for record in got:
            vector, payload = model[record.id]
            np.testing.assert_allclose(record.vector, vector, atol=VECTOR_TOL)
            assert dict(record.payload) == payload, record.id
        assert store.get_payloads(POOL) == {pid: payload for pid, (_, payload) in model.items()}
        by_doc: dict[str, set[str]] = {}
        for pid, (_, payload) in model.items():
            by_doc.setdefault(payload["doc_id"], set()).add(pid)
        assert store.ids_by_document([*DOCS, "doc-none"]) == by_doc
        query = unit(1_000_000 + self.steps)
        self._check_search(query, 5, None)
        self._check_search(query, len(POOL), None)
        self._check_search(query, 4, {"lang": "de"})
        self._check_lexical(LANGS[self.steps % len(LANGS)], None)
        self._check_lexical(str(self.steps % 6), {"lang": "de"})

    def _check_lexical(self, word: str, flt: dict[str, Any] | None) -> None:
        """Lexical hits are exactly the model's points whose text holds ``word`` (each once,
        with its payload): a text change, delete or reopen the index missed shows up here."""
        [row] = self.store.lexical_search([word], len(POOL), filter=flt)
        parsed = parse_filter(flt)
        want = {
            pid
            for pid, (_, payload) in self.model.items()
            if word in payload["text"].split() and (parsed is None or parsed.matches(payload))
        }
        ids = [hit.id for hit in row]
        assert len(ids) == len(set(ids)), f"lexical search returned an id twice: {ids}"
        assert set(ids) == want, (word, flt, set(ids) ^ want)
        for hit in row:
            assert dict(hit.payload) == self.model[hit.id][1], hit


class HnswMachine(StoreMachine):
    def open(self, spec: EmbeddingSpec | None) -> VectorStore:
        return HnswStore(self.dir / "index", spec, params=HnswParams(ef_search=64), num_threads=1)


class ExactMachine(StoreMachine):
    def open(self, spec: EmbeddingSpec | None) -> VectorStore:
        return ExactStore(self.dir / "index", spec)


class QdrantMachine(StoreMachine):
    def open(self, spec: EmbeddingSpec | None) -> VectorStore:
        from sbert_retrieval.stores.qdrant import QdrantStore

        # Local mode locks its folder: reopen() closes the previous store (and client) first.
        return QdrantStore("stateful", spec, path=str(self.dir / "qdrant"))


TestHnswStateful = HnswMachine.TestCase
TestHnswStateful.settings = LOCAL_SETTINGS
TestExactStateful = ExactMachine.TestCase
TestExactStateful.settings = LOCAL_SETTINGS
TestQdrantStateful = QdrantMachine.TestCase
TestQdrantStateful.settings = QDRANT_SETTINGS
