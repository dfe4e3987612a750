"""The package's exception hierarchy.

Every error raised on purpose by ``sbert_retrieval`` derives from :class:`SbertRetrievalError`,
so callers can catch the whole family with one clause. Errors caused by a bad argument also
derive from :class:`ValueError`, as the standard library would raise.
"""

from __future__ import annotations

__all__ = [
    "InvalidFilterError",
    "InvalidRecordError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "SbertRetrievalError",
    "StoreCorruptedError",
    "StoreError",
    "StoreLockedError",
]


class SbertRetrievalError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelNotFoundError(SbertRetrievalError, FileNotFoundError):
    """A model name could not be resolved to weights on this machine."""


class ModelMismatchError(SbertRetrievalError, ValueError):
    """An index was opened with an embedding model other than the one that built it."""


class InvalidRecordError(SbertRetrievalError, ValueError):
    """One input record (a JSON line, a file) cannot be turned into a document.

    Attributes:
        source: The file the record came from.
        location: Where in the file (``"line 12"``) or ``""`` for a whole file.
        reason: Why it was rejected.
    """

    def __init__(self, source: str, location: str, reason: str) -> None:
        self.source = source
        self.location = location
        self.reason = reason
        where = f"{source}:{location}" if location else source
        super().__init__(f"{where}: {reason}")


class InvalidFilterError(SbertRetrievalError, ValueError):
    """A metadata filter is malformed or uses an unknown operator."""


class StoreError(SbertRetrievalError):
    """A vector store operation failed."""


class StoreLockedError(StoreError):
    """The store is already opened for writing by another process."""


class StoreCorruptedError(StoreError):
    """The files of a store on disk are missing, truncated or inconsistent."""
