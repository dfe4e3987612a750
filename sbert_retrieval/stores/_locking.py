"""Locks for local stores: a readers–writer lock between threads, a lock file between processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sbert_retrieval.errors import StoreLockedError

__all__ = ["ReadWriteLock", "WriterLockFile"]


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers, so writes never starve.

    Thread safety: that is its purpose. Not re-entrant: a thread holding the write lock must not
    take the read lock.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class WriterLockFile:
    """An exclusive ``flock`` on ``DIR/LOCK`` holding the writer's pid.

    The kernel drops a ``flock`` when its process dies, so a lock left by a killed writer is
    never stale: the next writer simply takes it. Readers never take it.

    Raises:
        StoreLockedError: Another open writer (this process or another) holds it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "LOCK"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"{directory} is open for writing by process {holder}; close that writer first,"
                " or open this store with read_only=True"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Release the lock. Idempotent."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
