"""Fan encoding out over several devices: one worker process per device.

Each worker loads its own copy of the model on its device and runs the overlapped engine there;
the parent cuts the stream into chunks, hands them out through one shared queue (a free worker
takes the next chunk, so a slower device simply takes fewer) and puts the results back in input
order. Processes rather than threads: each device then has its own Python interpreter feeding
it, so no GIL is shared between the devices' tokenizers and launch loops.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from sbert_retrieval.encoding.engine import EncodedChunk, EngineConfig

__all__ = ["MultiDeviceEncoder"]

_STOP = None


def _worker(setup: dict[str, Any], inbox: Any, outbox: Any) -> None:
    """One device's loop; ``setup`` holds the encoder factory, device and engine (picklable)."""
    make_encoder, device, engine = setup["make_encoder"], setup["device"], setup["engine"]
    try:
        import torch

        if torch.device(device).type == "cuda":
            # The worker's current device must be its own: otherwise streams, events and any
            # allocation without an explicit device land on cuda:0.
            torch.cuda.set_device(torch.device(device))
        # Each worker encodes on its own device only: no fan-out from inside a worker.
        encoder = make_encoder(device=device, engine=EngineConfig(**{**engine, "devices": ()}))
    except BaseException as error:  # reported to the parent, which raises it
        outbox.put((-1, error))
        return
    outbox.put((-1, encoder.dimension))  # ready
    while (task := inbox.get()) is not _STOP:
        tag, texts, prefix, batch_size = task
        try:
            vectors, truncated = encoder.engine.encode(texts, prefix=prefix, batch_size=batch_size)
            outbox.put((tag, EncodedChunk(vectors, truncated)))
        except BaseException as error:
            outbox.put((tag, error))


class MultiDeviceEncoder:
    """Encode on several devices at once, one process each.

    Args:
        make_encoder: A picklable callable that each worker calls with ``device=`` and
            ``engine=`` to build its encoder (an object with ``dimension`` and an ``engine``:
            ``BiEncoder`` passes ``functools.partial(BiEncoder, path, **its settings)``).
        devices: Devices to use, e.g. ``["cuda:0", "cuda:1"]`` (``"cpu"`` entries work too,
            which is how the tests run it).
        engine: The engine settings each worker uses; its ``chunk_size`` is also the unit of
            work handed to a worker.

    Thread safety: safe; streams are serialized (the workers share one queue, so a second
    stream waits for the first to end or be closed rather than take its results).
    Call :meth:`close` (or use ``with``) to stop the workers; they are daemons, so they also
    end with the parent process.
    """

    def __init__(
        self,
        make_encoder: Callable[..., Any],
        devices: Sequence[str],
        *,
        engine: EngineConfig | None = None,
    ) -> None:
        if len(devices) < 1:
            raise ValueError("devices must name at least one device, e.g. ['cuda:0', 'cuda:1']")
        self.devices = list(devices)
        self.engine = engine or EngineConfig()
        # spawn: CUDA cannot be initialized again in a forked child.
        context = multiprocessing.get_context("spawn")
        self._inbox: Any = context.Queue()
        self._outbox: Any = context.Queue()
        worker_engine = asdict(self.engine)
        self._processes = [
            context.Process(
                target=_worker,
                args=(
                    {"make_encoder": make_encoder, "device": device, "engine": worker_engine},
                    self._inbox,
                    self._outbox,
                ),
                name=f"sbert-encoder-{device}",
                daemon=True,
            )
            for device in self.devices
        ]
        for process in self._processes:
            process.start()
        self.dimension = 0
        self._streams = itertools.count()
        self._stream_lock = threading.Lock()
        try:
            for _ in self._processes:
                _, ready = self._receive()
                if isinstance(ready, BaseException):
                    raise ready
                self.dimension = int(ready)
        except BaseException:
            self.close()
            raise

    def _receive(self) -> tuple[Any, Any]:
        while True:
            try:
                item: tuple[Any, Any] = self._outbox.get(timeout=1.0)
                return item
            except queue.Empty:
                dead = [p.name for p in self._processes if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"encoder worker(s) {', '.join(dead)} exited unexpectedly"
                    ) from None

    def encode_stream(
        self, texts: Iterable[str], *, prefix: str = "", batch_size: int | None = None
    ) -> Iterator[EncodedChunk]:
        """Like :meth:`BiEncoder.encode_stream`, spread over the devices; output in order.

        Thread safety: one stream runs at a time; others wait for it to end (or be closed).
        """
        with self._stream_lock:
            yield from self._stream(iter(texts), prefix, batch_size)

    def _stream(
        self, iterator: Iterator[str], prefix: str, batch_size: int | None
    ) -> Iterator[EncodedChunk]:
        # Results of a stream abandoned half-way may still arrive: each task carries its
        # stream's number, and anything from another stream is dropped.
        stream = next(self._streams)
        window = 2 * len(self._processes)  # enough to keep each worker busy, bounded memory
        done: dict[int, EncodedChunk] = {}
        sent = emitted = 0
        exhausted = False
        while True:
            while not exhausted and sent - emitted < window:
                chunk = list(itertools.islice(iterator, self.engine.chunk_size))
                if not chunk:
                    exhausted = True
                    break
                self._inbox.put(((stream, sent), chunk, prefix, batch_size))
                sent += 1
            if emitted == sent and exhausted:
                return
            (origin, sequence), result = self._receive()
            if origin != stream:
                continue
            if isinstance(result, BaseException):
                raise result
            done[sequence] = result
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1

    def encode(self, texts: Sequence[str], *, prefix: str = "") -> np.ndarray:
        """``(len(texts), dimension)`` float32, in the order of ``texts``."""
        parts = [chunk.vectors for chunk in self.encode_stream(texts, prefix=prefix)]
        if not parts:
            return np.empty((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for process in self._processes:
            if process.is_alive():
                self._inbox.put(_STOP)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()

    def __enter__(self) -> MultiDeviceEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
