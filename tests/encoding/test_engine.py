"""The overlapped engine against the plain encoding loop (itself held to sentence-transformers)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding import BiEncoder, EncodingEngine, EngineConfig
from sbert_retrieval.encoding.engine import _init_worker, _tokenize_chunk
from tests.encoding.test_bi_encoder import EDGE_CASES, OutOfMemoryAbove

TEXTS = EDGE_CASES + [f"text number {i} " * (1 + i % 9) for i in range(60)]


@pytest.fixture(scope="module")
def plain(tiny_model_dir: Path) -> BiEncoder:
    return BiEncoder(tiny_model_dir, device="cpu", batch_size=8, engine=False)


def test_tokenizer_workers_give_the_encoder_tokenizers_ids(plain: BiEncoder) -> None:
    reference = plain.tokenize(TEXTS, prefix="query: ")
    _init_worker(plain.tokenizer.backend_tokenizer.to_str(), plain.max_seq_length, "right")
    tokenized = _tokenize_chunk(["query: " + t for t in TEXTS])
    offsets = np.concatenate([[0], np.cumsum(tokenized.lengths)])
    ids = [tokenized.flat_ids[a:b].tolist() for a, b in itertools.pairwise(offsets)]
    assert ids == reference.input_ids
    assert tokenized.truncated == reference.truncated > 0


@pytest.mark.parametrize(
    "config",
    [
        EngineConfig(chunk_size=7, tokenizer_workers=2),
        EngineConfig(chunk_size=1000),
        EngineConfig(chunk_size=5, tokenizer_workers=2, worker_type="process", prefetch=1),
    ],
    ids=["threads-small-chunks", "one-chunk", "processes"],
)
def test_engine_equals_the_plain_loop(plain: BiEncoder, config: EngineConfig) -> None:
    reference = plain.encode(TEXTS, prefix="passage: ")
    engine = EncodingEngine(plain, config)
    vectors, truncated = engine.encode(TEXTS, prefix="passage: ")
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, reference, atol=1e-6)
    assert truncated == plain.tokenize(TEXTS, prefix="passage: ").truncated


def test_stream_yields_chunks_in_input_order_with_their_truncation(plain: BiEncoder) -> None:
    long_text = "word " * 200
    texts = ["short"] * 5 + [long_text] * 3 + ["short"] * 4  # chunks of 5: 0, 3 and 0 cut
    chunks = list(EncodingEngine(plain, EngineConfig(chunk_size=5)).stream(texts))
    assert [len(c.vectors) for c in chunks] == [5, 5, 2]
    assert [c.truncated for c in chunks] == [0, 3, 0]
    np.testing.assert_allclose(
        np.concatenate([c.vectors for c in chunks]), plain.encode(texts), atol=1e-6
    )


def test_stream_reads_its_input_lazily_and_stops_when_closed(plain: BiEncoder) -> None:
    pulled = itertools.count()
    pulled_total = [0]

    def endless() -> Iterator[str]:
        for i in pulled:
            pulled_total[0] = i + 1
            yield f"sentence {i}"

    config = EngineConfig(chunk_size=10, prefetch=2, tokenizer_workers=1)
    threads_before = threading.active_count()
    stream = EncodingEngine(plain, config).stream(endless())
    first = [next(stream) for _ in range(3)]
    assert all(len(c.vectors) == 10 for c in first)
    # Bounded read-ahead: the chunks yielded, the prefetch queue, the tokenizer tasks in flight
    # and the one being collated.
    assert pulled_total[0] <= 10 * (3 + config.prefetch + config.tokenizer_workers + 2)
    stream.close()
    assert threading.active_count() == threads_before  # collator and workers are gone


def test_an_error_in_the_input_reaches_the_caller(plain: BiEncoder) -> None:
    def broken() -> Iterator[str]:
        yield from ["fine"] * 12
        raise OSError("the source went away")

    engine = EncodingEngine(plain, EngineConfig(chunk_size=5))
    with pytest.raises(OSError, match="went away"):
        list(engine.stream(broken()))


def test_empty_input(plain: BiEncoder) -> None:
    vectors, truncated = EncodingEngine(plain).encode([])
    assert vectors.shape == (0, plain.dimension) and truncated == 0


def test_out_of_memory_splits_batches_in_the_engine(tiny_model_dir: Path) -> None:
    texts = [f"out of memory text {i} " * (1 + i % 6) for i in range(40)]
    reference = BiEncoder(tiny_model_dir, device="cpu", engine=False).encode(texts)
    encoder = BiEncoder(tiny_model_dir, device="cpu", batch_size=32, engine=True)
    faulty = OutOfMemoryAbove(encoder.model, limit=5)
    encoder.model = faulty
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)
    assert faulty.batch_sizes[0] == 32
    assert max(faulty.succeeded) <= 5 and sum(faulty.succeeded) == len(texts)
    faulty.batch_sizes.clear()
    encoder.encode(texts)
    assert max(faulty.batch_sizes) <= 5  # later batches start from the size that fitted


def test_one_text_that_does_not_fit_raises_from_the_engine(tiny_model_dir: Path) -> None:
    encoder = BiEncoder(tiny_model_dir, device="cpu", engine=True)
    encoder.model = OutOfMemoryAbove(encoder.model, limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        encoder.engine.encode(["anything"])


def test_encoder_uses_the_engine_as_asked(tiny_model_dir: Path, plain: BiEncoder) -> None:
    assert BiEncoder(tiny_model_dir, device="cpu")._use_engine is False  # CPU default: plain
    engined = BiEncoder(
        tiny_model_dir, device="cpu", batch_size=8, engine=EngineConfig(chunk_size=3)
    )
    assert engined._use_engine and engined.engine.config.chunk_size == 3
    engine_calls: list[int] = []
    original = engined.engine.encode

    def counting(texts, **kwargs):  # type: ignore[no-untyped-def]
        engine_calls.append(len(texts))
        return original(texts, **kwargs)

    engined.engine.encode = counting  # type: ignore[method-assign]
    engined.encode(TEXTS[:8])  # no more than one batch: the plain loop, no threads to start
    assert engine_calls == []
    np.testing.assert_allclose(engined.encode(TEXTS), plain.encode(TEXTS), atol=1e-6)
    assert engine_calls == [len(TEXTS)]
    streamed = np.concatenate([c.vectors for c in engined.encode_stream(iter(TEXTS))])
    np.testing.assert_allclose(streamed, plain.encode(TEXTS), atol=1e-6)


def test_bad_engine_settings_list_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="thread, process"):
        EngineConfig(worker_type="fork")
    with pytest.raises(ValueError, match="chunk_size"):
        EngineConfig(chunk_size=0)


def test_fan_out_over_two_devices_equals_one(tiny_model_dir: Path, plain: BiEncoder) -> None:
    """Two worker processes (both on the CPU here; one per GPU on a multi-GPU machine)."""
    config = EngineConfig(chunk_size=6, devices=("cpu", "cpu"))
    encoder = BiEncoder(tiny_model_dir, device="cpu", batch_size=8, engine=config)
    try:
        assert encoder.bulk_devices == ["cpu", "cpu"]
        np.testing.assert_allclose(
            encoder.encode(TEXTS, prefix="passage: "),
            plain.encode(TEXTS, prefix="passage: "),
            atol=1e-6,
        )
        chunks = list(encoder.encode_stream(iter(TEXTS)))
        assert [len(c.vectors) for c in chunks[:-1]] == [6] * (len(chunks) - 1)
        assert sum(c.truncated for c in chunks) == plain.tokenize(TEXTS).truncated
        # A stream abandoned half-way does not leak results into the next one.
        abandoned = encoder.encode_stream(iter(TEXTS))
        next(abandoned)
        abandoned.close()
        np.testing.assert_allclose(encoder.encode(TEXTS), plain.encode(TEXTS), atol=1e-6)
        # Concurrent bulk encodes share the workers' queue: each gets its own vectors.
        with ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(encoder.encode, TEXTS[i:] + TEXTS[:i], prefix="passage: ")
                for i in range(3)
            ]
            for i, future in enumerate(futures):
                expected = plain.encode(TEXTS[i:] + TEXTS[:i], prefix="passage: ")
                np.testing.assert_allclose(future.result(timeout=120), expected, atol=1e-6)
        workers = encoder.multi_device._processes
    finally:
        encoder.close()
    assert not any(p.is_alive() for p in workers)


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_task_carries_its_texts_not_the_tokenizer(
    plain: BiEncoder, worker_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker gets the tokenizer once (the pool's initializer), not with every chunk."""
    import pickle

    engine = EncodingEngine(
        plain, EngineConfig(chunk_size=5, tokenizer_workers=2, worker_type=worker_type)
    )
    sizes: list[int] = []
    make_pool = engine._executor

    def spying_pool():  # type: ignore[no-untyped-def]
        pool = make_pool()
        submit = pool.submit

        def recorded(fn, *args):  # type: ignore[no-untyped-def]
            sizes.append(len(pickle.dumps(args)))
            return submit(fn, *args)

        pool.submit = recorded  # type: ignore[method-assign]
        return pool

    monkeypatch.setattr(engine, "_executor", spying_pool)
    vectors, _ = engine.encode(TEXTS)
    assert np.allclose(vectors, plain.encode(TEXTS), atol=1e-5)
    tokenizer_bytes = len(plain.tokenizer.backend_tokenizer.to_str())
    assert len(sizes) == -(-len(TEXTS) // 5)
    assert max(sizes) < tokenizer_bytes / 10


def test_a_cuda_worker_takes_its_device_before_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker for cuda:N makes cuda:N current first (streams, events, allocations)."""
    import queue
    from dataclasses import asdict

    from sbert_retrieval.encoding import multi_device

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))

    class Loaded:
        dimension = 3

        def __init__(self, *, device: str, engine: EngineConfig) -> None:
            calls.append(("load", device))

    inbox: queue.Queue[object] = queue.Queue()
    outbox: queue.Queue[object] = queue.Queue()
    inbox.put(multi_device._STOP)
    setup = {"make_encoder": Loaded, "device": "cuda:1", "engine": asdict(EngineConfig())}
    multi_device._worker(setup, inbox, outbox)
    assert calls == [("set_device", "cuda:1"), ("load", "cuda:1")]
    assert outbox.get_nowait() == (-1, 3)
    calls.clear()
    inbox.put(multi_device._STOP)
    multi_device._worker({**setup, "device": "cpu"}, inbox, outbox)
    assert calls == [("load", "cpu")]
