"""The embedded stores: SQLite holds the truth, an in-memory index derived from it answers queries.

Chroma's split, for the same reasons: durability belongs to a real database engine, not to a
home-made file format, and a vector index is cheap to derive again. A store directory holds::

    store.sqlite3 (-wal, -shm)  the truth (WAL mode): spec, points (id, doc id, payload, text,
                                vector), one row per filterable metadata value, and a log of
                                deletions
    graph-<n>.hnsw              HnswStore only: a snapshot of the hnswlib graph, named in the
                                database with how far into the points table it reaches
    lexical/                    the BM25 index over chunk text (tantivy), derived from the
                                database like the graph, committed after every write
    LOCK                        flock held by the one open writer

Every :meth:`~LocalStore.upsert`, :meth:`~LocalStore.delete` and
:meth:`~LocalStore.set_payloads` is one SQLite transaction, committed with ``synchronous=FULL``
before it returns: durable at once, so :meth:`~LocalStore.flush` costs nothing in proportion to
the store's size. Point labels (the graph's ids) are SQLite row ids that are never reused: a
point whose vector or text changes gets a new label and its old one is deleted, so a label
always names one immutable vector and text. Opening loads the newest graph snapshot, checks it
against its checksum, and catches it up from the database (points with labels past the snapshot,
deletions logged after it); a missing or damaged snapshot is rebuilt from the database.
Snapshots are written on :meth:`~LocalStore.close`, and by :meth:`~LocalStore.flush` once the
part of the database the snapshot does not cover passes :data:`SNAPSHOT_MIN_TAIL` points and
half the covered ones (amortized O(1) per point).

Readers (``read_only=True``, any number, in any process) never take the writer's lock, never
block it and are never blocked: each sees the last committed state, and catches up before a
search when the database changed (``PRAGMA data_version``), or on :meth:`~LocalStore.refresh`.

The lexical index (:mod:`~sbert_retrieval.stores.lexical_index`) is caught up by the writer
right after each write's commit, from the database (points past its mark, deletions logged
after it), and the mark is recorded in the database with the next write: a crash in between
only makes the next open replay a stretch it already holds, which changes nothing. Readers
search the writer's on-disk index (seeing its commits, a moment after the database's); a reader
of a store without one (written by a version before it) derives one in memory.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sbert_retrieval.errors import StoreCorruptedError, StoreError
from sbert_retrieval.fusion import DEFAULT_RRF_K, fuse
from sbert_retrieval.lexical import ANALYZER
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores._locking import ReadWriteLock, WriterLockFile
from sbert_retrieval.stores.base import (
    FusedRecord,
    Record,
    ScoredRecord,
    ValidRecord,
    VectorStore,
    check_hybrid_args,
    check_lexical_args,
    check_spec,
    validate_payload,
    validate_queries,
    validate_records,
)
from sbert_retrieval.stores.filters import (
    Filter,
    FilterLike,
    compile_label_select,
    compile_sql,
    parse_filter,
    payload_fields,
)
from sbert_retrieval.stores.lexical_index import LEXICAL_DIRECTORY, LexicalIndex

__all__ = [
    "DATABASE",
    "LEGACY_MANIFEST",
    "METRICS",
    "SNAPSHOT_MIN_TAIL",
    "LocalStore",
    "exact_top_k",
    "stored_meta",
]

logger = logging.getLogger(__name__)

METRICS = ("cosine", "ip")
DATABASE = "store.sqlite3"
#: The file of the format before SQLite (version 1): such a directory must be converted.
LEGACY_MANIFEST = "manifest.json"
SCHEMA_VERSION = 3
#: By default a flush snapshots the graph once this many points (or deletions) are past it.
SNAPSHOT_MIN_TAIL = 100_000
#: Points added to the graph per step; in-process searches wait at most one step for a writer.
_GRAPH_STEP = 2_048
#: SQLite's default limit on ``?`` parameters in one statement is far above this.
_IN_CHUNK = 500
#: Points handed to the lexical index per commit while it catches up.
_LEXICAL_STEP = 10_000
#: A snapshot's files: the graph, and companions beside it (``graph-N.<part>``).
_SNAPSHOT_FILE = re.compile(r"^graph-(\d+)\.[a-z0-9.]+?(\.tmp)?$")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE points (
    label INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    text TEXT,
    vector BLOB NOT NULL
);
CREATE INDEX points_by_doc ON points(doc_id);
CREATE TABLE fields (
    label INTEGER NOT NULL, key TEXT NOT NULL, kind INTEGER NOT NULL, value NOT NULL
);
CREATE INDEX fields_lookup ON fields(key, kind, value, label);
CREATE INDEX fields_by_label ON fields(label);
CREATE TABLE tombstones (rowid INTEGER PRIMARY KEY AUTOINCREMENT, label INTEGER NOT NULL);
CREATE TRIGGER points_deleted AFTER DELETE ON points BEGIN
    DELETE FROM fields WHERE label = old.label;
    INSERT INTO tombstones(label) VALUES (old.label);
END;
"""

#: Version 2 kept an FTS5 table, filled by triggers, which version 3 replaced by the tantivy index.
_MIGRATE_2_TO_3 = """
DROP TRIGGER IF EXISTS points_inserted;
DROP TRIGGER IF EXISTS points_text_changed;
DROP TRIGGER IF EXISTS points_deleted;
DROP TABLE IF EXISTS lexical;
CREATE TRIGGER points_deleted AFTER DELETE ON points BEGIN
    DELETE FROM fields WHERE label = old.label;
    INSERT INTO tombstones(label) VALUES (old.label);
END;
UPDATE meta SET value = '3' WHERE key = 'version';
"""


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k``: ``(rows, scores)``, each ``(n_queries, k)``, best first."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def stored_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings saved with the store in a directory (format, spec, ...); ``None`` if none.

    Reads the database without taking the writer's lock or loading any index.

    Raises:
        StoreError: The directory holds an index of the older (pre-SQLite) format.
        StoreCorruptedError: The database cannot be read.
    """
    directory = Path(path)
    if not (directory / DATABASE).is_file():
        if (directory / LEGACY_MANIFEST).is_file():
            raise StoreError(_legacy_message(directory))
        return None
    return _read_meta(directory) or None


def _legacy_message(directory: Path) -> str:
    return (
        f"{directory} holds an index in the older file format (manifest.json); convert it once"
        f" with: sbert-retrieval migrate-index {directory}"
    )


def _connect(file: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        uri = f"{file.resolve().as_uri()}?mode=ro"
        try:
            connection = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
            )
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            if os.access(file.parent, os.W_OK):
                raise
            # A directory nobody here can write to has no writer either, and a WAL reader cannot
            # create the -shm file there: read the database as the immutable file it is.
            connection = sqlite3.connect(
                f"{uri}&immutable=1",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
    else:
        connection = sqlite3.connect(
            file, check_same_thread=False, isolation_level=None, timeout=30
        )
    connection.execute("PRAGMA busy_timeout = 30000")
    return connection


def _read_meta(directory: Path) -> dict[str, Any]:
    connection = _connect(directory / DATABASE, read_only=True)
    try:
        return LocalStore._meta(connection)
    except sqlite3.DatabaseError as exc:
        raise StoreCorruptedError(
            f"{directory / DATABASE} cannot be read ({exc}); restore it from a backup, or delete"
            f" {directory} and re-ingest (ingestion is idempotent)"
        ) from exc
    finally:
        connection.close()


def _statements(script: str) -> Iterator[str]:
    """The complete SQL statements of a script (triggers hold ``;`` inside them).

    ``executescript`` would commit the open transaction first; creating a store must be atomic.
    """
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _label_array(
    connection: sqlite3.Connection, statement: str, parameters: Sequence[Any]
) -> np.ndarray:
    """The integer column ``statement`` selects, as int64.

    SQLite joins the labels into one string, which numpy parses: a third of the time of one
    Python row per label (1.0 ms against 2.7 ms for 10,000 labels).
    """
    (joined,) = connection.execute(
        f"SELECT group_concat(label) FROM ({statement})", parameters
    ).fetchone()
    if not joined:
        return np.empty(0, dtype=np.int64)
    return np.fromstring(joined, dtype=np.int64, sep=",")


def _decode_rows(
    rows: Sequence[tuple[int, bytes]], dimension: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, vectors)`` of ``(label, vector blob)`` rows read from ``points``."""
    labels = np.fromiter((label for label, _ in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(
        len(rows), dimension
    )
    return labels, vectors


def _snapshot_files(snapshot: Mapping[str, Any]) -> list[str]:
    """The file names of a snapshot entry: the graph, then its companions."""
    return [str(snapshot["file"]), *(str(part["file"]) for part in snapshot.get("companions", []))]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _payload(payload_json: str, text: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(payload_json)
    if text is not None:
        payload["text"] = text
    return payload


def _text(record: ValidRecord) -> str | None:
    """The record's chunk text (its payload's ``text`` when a string), as the text column holds."""
    text = record.payload.get("text")
    return text if isinstance(text, str) else None


def _split_text(record: ValidRecord) -> tuple[str, str | None]:
    """The payload as stored: JSON without a string ``text``, which has its own column."""
    text = _text(record)
    if text is None:
        return record.payload_json.decode("utf-8"), None
    rest = {key: value for key, value in record.payload.items() if key != "text"}
    return json.dumps(rest, ensure_ascii=False, separators=(",", ":")), text


class LocalStore(VectorStore, abc.ABC):
    """Base of the embedded stores; subclasses supply the in-memory vector index.

    Args:
        path: Directory of the store, created if missing; ``None`` keeps it in a temporary
            directory removed on :meth:`close`.
        spec: The embedding identity. Required for a new store; for an existing one it is
            checked against the stored spec (:class:`ModelMismatchError` on a difference), and
            ``None`` adopts the stored one.
        read_only: Open without the writer lock; writes raise :class:`StoreError`. A reader
            sees every committed write (it catches up before each search when the database
            changed).
        metric: ``"cosine"`` (default) or ``"ip"`` (inner product; same ranking for normalized
            vectors, skips normalization).
        snapshot_min_tail: A flush snapshots the graph once this many points and deletions
            (default :data:`SNAPSHOT_MIN_TAIL`), and half the covered points, are past the last
            snapshot. Lower bounds the catch-up after a crash; higher saves snapshot writes.

    Thread safety: searches and reads run concurrently with each other and with one writing
    thread; in the writing process a search waits while a write changes the in-memory index
    (at most one step of :data:`_GRAPH_STEP` points). Readers in other processes never wait.
    """

    FORMAT: ClassVar[str]

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        spec: EmbeddingSpec | None = None,
        *,
        read_only: bool = False,
        metric: str = "cosine",
        snapshot_min_tail: int = SNAPSHOT_MIN_TAIL,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        self._temporary: Path | None = None
        if path is None:
            if read_only:
                raise ValueError("read_only needs a path")
            self._temporary = Path(tempfile.mkdtemp(prefix="sbert-store-"))
            path = self._temporary
        self.path = Path(path)
        self.read_only = read_only
        if snapshot_min_tail < 1:
            raise ValueError(f"snapshot_min_tail must be >= 1, got {snapshot_min_tail}")
        self.snapshot_min_tail = snapshot_min_tail
        self._lock = ReadWriteLock()
        # Writes (and snapshots) run one at a time; searches go on under self._lock.
        self._write_lock = threading.RLock()
        self._writer_lock: WriterLockFile | None = None
        self._writer: sqlite3.Connection | None = None
        self._readers = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._data_version: int | None = None
        self._closed = False
        # The in-memory index covers points with labels <= _labels_covered and the deletions
        # logged up to _tombstones_covered; _count is its number of live points.
        self._labels_covered = 0
        self._tombstones_covered = 0
        self._count = 0
        self._snapshot: dict[str, Any] | None = None
        # The lexical index covers the same way, by its own marks.
        self._lexical: LexicalIndex | None = None
        self._lexical_labels = 0
        self._lexical_tombstones = 0
        try:
            self._open(spec, metric)
        except BaseException:
            self._release()
            raise

    # -- subclass hooks -----------------------------------------------------------------------
    def _params_for_new(self) -> dict[str, Any]:
        """Backend parameters to persist with a new store."""
        return {}

    def _adopt_params(self, params: Mapping[str, Any]) -> None:
        """Take the parameters persisted with an existing store."""

    @abc.abstractmethod
    def _init_index(self, capacity: int) -> None:
        """Create an empty in-memory index."""

    @abc.abstractmethod
    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new labels (called under the exclusive lock)."""

    @abc.abstractmethod
    def _index_delete(self, labels: Sequence[int]) -> None:
        """Forget labels present in the index (called under the exclusive lock)."""

    @abc.abstractmethod
    def _index_vectors(self, labels: Sequence[int]) -> np.ndarray:
        """``(len(labels), dim)`` float32 as the index compares them (under a shared lock)."""

    @abc.abstractmethod
    def _search_vectors(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, scores)``, ``(n, k)`` each, best first; ``allowed`` restricts the labels."""

    def _save_snapshot(self, file: Path) -> list[Path]:
        """Write the index to ``file`` (a ``graph-N.hnsw.tmp``) and return the companion files
        written beside it (each ``graph-N.<part>.tmp``); only stores that keep snapshots
        override it."""
        raise NotImplementedError

    def _load_snapshot(self, file: Path, capacity: int, companions: Sequence[Path]) -> None:
        """Load an index written by :meth:`_save_snapshot` (``companions`` verified, in order)."""
        raise NotImplementedError

    @abc.abstractmethod
    def _free_index(self) -> None:
        """Drop the in-memory index (called once, by :meth:`close`, under the exclusive lock)."""

    #: Whether the index is worth snapshotting (an exact matrix is rebuilt faster than read).
    KEEPS_SNAPSHOTS: ClassVar[bool] = False

    # -- connections --------------------------------------------------------------------------
    @property
    def _database(self) -> Path:
        return self.path / DATABASE

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: it never blocks the writer, nor is blocked)."""
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            if self._closed:
                raise StoreError("the store is closed")
            connection = _connect(self._database, read_only=True)
            connection.execute("PRAGMA query_only = 1")
            self._readers.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        assert self._writer is not None
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            yield self._writer
        except BaseException:
            self._writer.execute("ROLLBACK")
            raise
        self._writer.execute("COMMIT")

    @contextlib.contextmanager
    def _read_transaction(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot of the database for several statements."""
        connection = self._reader()
        connection.execute("BEGIN")
        try:
            yield connection
        finally:
            connection.execute("COMMIT")

    @contextlib.contextmanager
    def _search_transaction(self) -> Iterator[sqlite3.Connection]:
        """The shared lock and one read transaction, for a search of the index and the rows.

        A search that began before another thread's :meth:`close` finishes against the index;
        one that reaches the lock after it gets the closed store's error, never a freed index.
        """
        with self._lock.read():
            if self._closed:
                raise StoreError("the store is closed")
            with self._read_transaction() as connection:
                yield connection

    # -- opening ------------------------------------------------------------------------------
    def _open(self, spec: EmbeddingSpec | None, metric: str) -> None:
        if not self._database.is_file() and (self.path / LEGACY_MANIFEST).is_file():
            raise StoreError(_legacy_message(self.path))
        if self.read_only:
            if not self._database.is_file():
                raise StoreError(f"{self.path} holds no index ({DATABASE}); ingest into it first")
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create store directory {self.path}: {exc.strerror or exc}"
                ) from exc
            if not os.access(self.path, os.W_OK):
                raise StoreError(
                    f"{self.path} is not writable; open it with read_only=True to search"
                )
            self._writer_lock = WriterLockFile(self.path)
            try:
                self._writer = _connect(self._database, read_only=False)
                self._writer.execute("PRAGMA journal_mode = WAL")
                self._writer.execute("PRAGMA synchronous = FULL")
            except sqlite3.DatabaseError as exc:
                raise self._corrupted(exc) from exc
        try:
            meta = self._meta(self._writer or self._reader())
        except sqlite3.DatabaseError as exc:
            raise self._corrupted(exc) from exc
        if not meta:
            if spec is None:
                where = "an in-memory store" if self._temporary else str(self.path)
                raise ValueError(
                    f"{where} holds no index yet: pass the encoder's spec to create one"
                )
            if self.read_only:
                raise StoreError(f"{self.path} holds no index yet; ingest into it first")
            self._create(spec, metric)
            meta = self._meta(self._writer)  # type: ignore[arg-type]
        if meta.get("format") != self.FORMAT:
            raise StoreError(
                f"{self.path} holds a {meta.get('format')!r} store, not {self.FORMAT!r}"
            )
        if int(meta.get("version", 0)) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer sbert-retrieval; upgrade it")
        if int(meta.get("version", 0)) == 2 and self._writer is not None:
            with self._transaction() as connection:
                for statement in _statements(_MIGRATE_2_TO_3):
                    connection.execute(statement)
        try:
            self.spec = EmbeddingSpec.from_dict(meta["spec"])
            self.metric = str(meta["metric"])
            self._adopt_params(meta.get("params", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreCorruptedError(
                f"{self._database} has an unreadable spec ({exc}); delete {self.path} and re-ingest"
            ) from exc
        check_spec(self.spec, spec, f"index {self.path}")
        self._load_index(meta)
        self._open_lexical(meta)
        if not self.read_only:
            self._remove_stray_snapshots()

    def _open_lexical(self, meta: Mapping[str, Any]) -> None:
        """Open the lexical index the database names (rebuilding it when unusable), or, in a
        reader of a store without a usable one, derive one in memory; then catch it up."""
        entry = meta.get("lexical")
        directory = self.path / LEXICAL_DIRECTORY
        recorded = isinstance(entry, Mapping) and entry.get("analyzer") == ANALYZER
        index: LexicalIndex | None = None
        labels = tombstones = 0
        if recorded:
            assert isinstance(entry, Mapping)
            try:
                index = LexicalIndex(directory, writable=not self.read_only)
                labels, tombstones = int(entry["labels"]), int(entry["tombstones"])
            except (ValueError, OSError, KeyError, TypeError) as exc:
                logger.warning(
                    "%s: the lexical index is unusable (%s); %s",
                    self.path,
                    exc,
                    "deriving one in memory" if self.read_only else "rebuilding it",
                )
                index = None
        if index is None:
            index = LexicalIndex.rebuilt(None if self.read_only else directory)
            labels = tombstones = 0
        self._lexical = index
        self._lexical_labels, self._lexical_tombstones = labels, tombstones
        self._sync_lexical()
        if self._writer is not None:
            # Named at once, so readers opening now search it rather than derive their own.
            with self._transaction() as connection:
                self._record_lexical(connection)

    def _sync_lexical(self) -> None:
        """Bring the lexical index up to the database's last commit: the writer's (or a
        reader's in-memory) index adds the points past its mark and drops the deletions logged
        after it; a reader of the writer's on-disk index sees its last commit.

        A failure to write the index is logged, not raised: the write it follows is committed,
        and the next write (or open) catches up from the same mark.
        """
        index = self._lexical
        if index is None:
            return
        if self.read_only and index.directory is not None:
            index.reload()
            return
        with self._write_lock:
            try:
                self._catch_up_lexical(index)
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning(
                    "%s: the lexical index is behind the database (%s); the next write retries",
                    self.path,
                    exc,
                )

    def _catch_up_lexical(self, index: LexicalIndex) -> None:
        with self._read_transaction() as connection:
            pruned = int(self._meta(connection).get("pruned_through", 0))
            if self._lexical_tombstones < pruned and self._lexical_labels:
                # Deletions it has not seen were pruned: derive it again from the points.
                index.close()
                index = LexicalIndex.rebuilt(index.directory)
                self._lexical = index
                self._lexical_labels = self._lexical_tombstones = 0
            dead, labels, tombstones = self._pending(
                connection, self._lexical_labels, self._lexical_tombstones
            )
            cursor = connection.execute(
                "SELECT label, text FROM points WHERE label > ? AND text IS NOT NULL"
                " ORDER BY label",
                (self._lexical_labels,),
            )
            after = self._lexical_labels
            while True:
                rows = cursor.fetchmany(_LEXICAL_STEP)
                if rows or dead or after < labels:
                    index.apply(rows, dead, after)
                dead = []
                if len(rows) < _LEXICAL_STEP:
                    break
                after = int(rows[-1][0])
                self._lexical_labels = after
        self._lexical_labels, self._lexical_tombstones = labels, tombstones

    def _record_lexical(self, connection: sqlite3.Connection) -> None:
        """Name the writer's lexical index and its marks in the database (in a write's
        transaction: the marks are those of the index's last commit, never ahead of it)."""
        if self._lexical is None or self._lexical.directory is None or self.read_only:
            return
        entry = {
            "analyzer": ANALYZER,
            "labels": self._lexical_labels,
            "tombstones": self._lexical_tombstones,
        }
        connection.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('lexical', ?)", (json.dumps(entry),)
        )

    def _corrupted(self, exc: BaseException) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"{self._database} cannot be read ({exc}); restore it from a backup, or delete"
            f" {self.path} and re-ingest (ingestion is idempotent)"
        )

    @staticmethod
    def _meta(connection: sqlite3.Connection) -> dict[str, Any]:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not exists:
            return {}
        return {key: json.loads(value) for key, value in connection.execute("SELECT * FROM meta")}

    def _create(self, spec: EmbeddingSpec, metric: str) -> None:
        self.spec, self.metric = spec, metric
        values = {
            "format": self.FORMAT,
            "version": SCHEMA_VERSION,
            "spec": spec.to_dict(),
            "metric": metric,
            "params": self._params_for_new(),
            "pruned_through": 0,
        }
        with self._transaction() as connection:
            for statement in _statements(_SCHEMA):
                connection.execute(statement)
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    def _load_index(self, meta: Mapping[str, Any]) -> None:
        """Load the snapshot named in ``meta`` (or start empty), then catch up from SQLite."""
        snapshot = meta.get("snapshot") if self.KEEPS_SNAPSHOTS else None
        total = self._reader().execute("SELECT seq FROM sqlite_sequence WHERE name = 'points'")
        row = total.fetchone()
        capacity = max(int(row[0]) if row else 0, 1)
        loaded = False
        if snapshot:
            try:
                self._verify_snapshot(snapshot)
                graph, *companions = (self.path / name for name in _snapshot_files(snapshot))
                self._load_snapshot(graph, capacity, companions)
                self._labels_covered = int(snapshot["labels"])
                self._tombstones_covered = int(snapshot["tombstones"])
                self._count = int(snapshot["count"])
                self._snapshot = dict(snapshot)
                loaded = True
            except (StoreCorruptedError, RuntimeError, OSError, ValueError, KeyError) as exc:
                logger.warning(
                    "%s: the graph snapshot is unusable (%s); rebuilding it from the database",
                    self.path,
                    exc,
                )
        if not loaded:
            self._init_index(capacity)
            self._labels_covered = self._tombstones_covered = self._count = 0
        self._catch_up()

    def _verify_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        for part in (snapshot, *snapshot.get("companions", [])):
            file = self.path / str(part["file"])
            if not file.is_file():
                raise StoreCorruptedError(f"{file} is missing")
            if file.stat().st_size != int(part["bytes"]) or _sha256(file) != part["sha256"]:
                raise StoreCorruptedError(f"{file} does not match its checksum")

    def _catch_up(self) -> None:
        """Bring the in-memory index up to the database's last commit."""
        with self._write_lock:
            if self.read_only:
                self._data_version = self._current_data_version()
            with self._read_transaction() as connection:
                meta = self._meta(connection)
                pruned = int(meta.get("pruned_through", 0))
                if self._labels_covered and self._tombstones_covered < pruned:
                    # The deletions this index has not seen were pruned after a newer snapshot.
                    stale = True
                else:
                    stale = False
                    dead, labels, tombstones = self._pending(
                        connection, self._labels_covered, self._tombstones_covered
                    )
                    if dead:
                        with self._lock.write():
                            self._index_delete(dead)
                            self._count -= len(dead)
                    cursor = connection.execute(
                        "SELECT label, vector FROM points WHERE label > ? ORDER BY label",
                        (self._labels_covered,),
                    )
                    while rows := cursor.fetchmany(_GRAPH_STEP):
                        self._add_rows(rows)
                    self._labels_covered = labels
                    self._tombstones_covered = tombstones
            if stale:
                self._labels_covered = self._tombstones_covered = self._count = 0
                self._load_index(self._meta(self._reader()))
            elif self.read_only:
                self._sync_lexical()

    @classmethod
    def _pending(
        cls, connection: sqlite3.Connection, labels: int, tombstones: int
    ) -> tuple[list[int], int, int]:
        """What an index at marks ``(labels, tombstones)`` lacks: the labels it holds that were
        deleted since, and the database's marks (never below the index's)."""
        dead = [
            int(label)
            for (label,) in connection.execute(
                "SELECT label FROM tombstones WHERE rowid > ? AND label <= ?",
                (tombstones, labels),
            )
        ]
        row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'points'").fetchone()
        last_label = max(int(row[0]) if row else 0, labels)
        return dead, last_label, max(cls._last_tombstone(connection), tombstones)

    def _add_rows(self, rows: Sequence[tuple[int, bytes]]) -> None:
        labels, vectors = _decode_rows(rows, self.dimension)
        with self._lock.write():
            self._index_add(labels, vectors)
            self._count += len(rows)
            # Searches skip filter matches past this mark: they are not in the index yet.
            self._labels_covered = max(self._labels_covered, int(labels[-1]))

    def _current_data_version(self) -> int:
        return int(self._reader().execute("PRAGMA data_version").fetchone()[0])

    def refresh(self) -> None:
        """Catch up with every write committed since this store last looked.

        Thread safety: safe alongside searches (they wait while the index changes).
        """
        if self._closed:
            raise StoreError("the store is closed")
        if self.read_only:
            self._catch_up()

    def _refresh_if_changed(self) -> None:
        if not self.read_only:
            return
        with self._watch_lock:
            changed = self._current_data_version() != self._data_version
        if changed:
            self._catch_up()

    def _remove_stray_snapshots(self) -> None:
        current = set(_snapshot_files(self._snapshot)) if self._snapshot else set()
        for file in self.path.iterdir():
            if _SNAPSHOT_FILE.match(file.name) and file.name not in current:
                with contextlib.suppress(OSError):
                    file.unlink()

    # -- writes -------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only; reopen it without read_only to write")

    def _existing(
        self, connection: sqlite3.Connection, ids: Sequence[str]
    ) -> dict[str, tuple[int, bytes, str | None]]:
        """``id -> (label, vector blob, text)`` of the stored points among ``ids``."""
        found: dict[str, tuple[int, bytes, str | None]] = {}
        for part in _chunks(ids):
            for point_id, label, vector, text in connection.execute(
                "SELECT id, label, vector, text FROM points"
                f" WHERE id IN ({_placeholders(len(part))})",
                tuple(part),
            ):
                found[point_id] = (int(label), vector, text)
        return found

    @staticmethod
    def _write_fields(
        connection: sqlite3.Connection, rows: Iterable[tuple[int, Mapping[str, Any]]]
    ) -> None:
        connection.executemany(
            "INSERT INTO fields (label, key, kind, value) VALUES (?, ?, ?, ?)",
            (
                (label, key, kind, value)
                for label, payload in rows
                for key, kind, value in payload_fields(payload)
            ),
        )

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert records, replacing any with the same id; one transaction, durable on return.

        Every record is checked first (:func:`~sbert_retrieval.stores.base.validate_records`):
        a bad one is refused with its id and reason and nothing of the batch is written. A
        record whose vector and text are unchanged has only its payload rewritten.

        Thread safety: one writing thread at a time (others wait); searches go on.
        """
        self._check_writable()
        valid = validate_records(records, self.dimension)
        if valid:
            self._write(valid)

    def _write(self, valid: Sequence[ValidRecord]) -> None:
        """Upsert checked records (one transaction), then the in-memory and lexical indexes."""
        with self._write_lock:
            new: list[ValidRecord] = []
            replaced: list[int] = []
            with self._lock.write(), self._transaction() as connection:
                self._record_lexical(connection)
                existing = self._existing(connection, [r.id for r in valid])
                kept: list[tuple[int, ValidRecord]] = []
                for record in valid:
                    old = existing.get(record.id)
                    if (
                        old is not None
                        and old[1] == record.vector.tobytes()
                        and old[2] == _text(record)
                    ):
                        kept.append((old[0], record))
                        continue
                    if old is not None:
                        replaced.append(old[0])
                    new.append(record)
                connection.executemany(
                    "DELETE FROM points WHERE label = ?", [(label,) for label in replaced]
                )
                row = connection.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'points'"
                ).fetchone()
                first = (int(row[0]) if row else 0) + 1
                labels = np.arange(first, first + len(new), dtype=np.int64)
                # Rows are made as SQLite takes them: a batch's copy of every vector and payload
                # never exists at once (it was ~20 MB of a 10k batch's peak memory).
                connection.executemany(
                    "INSERT INTO points (label, id, doc_id, payload, text, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        (
                            label,
                            record.id,
                            record.payload["doc_id"],
                            *_split_text(record),
                            record.vector.tobytes(),
                        )
                        for label, record in zip(labels.tolist(), new, strict=True)
                    ),
                )
                self._rewrite_payloads(connection, kept)
                self._write_fields(
                    connection,
                    zip(labels.tolist(), (r.payload for r in new), strict=True),
                )
                if replaced:
                    self._index_delete(replaced)
                    self._count -= len(replaced)
                self._tombstones_covered = self._last_tombstone(connection)
            for start in range(0, len(new), _GRAPH_STEP):
                # One step's vectors stacked at a time, not the whole batch's.
                vectors = np.stack([r.vector for r in new[start : start + _GRAPH_STEP]])
                with self._lock.write():
                    part = labels[start : start + _GRAPH_STEP]
                    self._index_add(part, vectors)
                    self._count += len(part)
                    self._labels_covered = int(part[-1])
            self._sync_lexical()

    @staticmethod
    def _last_tombstone(connection: sqlite3.Connection) -> int:
        row = connection.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'tombstones'"
        ).fetchone()
        return int(row[0]) if row else 0

    def _rewrite_payloads(
        self, connection: sqlite3.Connection, rows: Sequence[tuple[int, ValidRecord]]
    ) -> None:
        """New payloads for points whose vector and text stay (so their label does)."""
        if not rows:
            return
        updates = []
        for label, record in rows:
            payload_json, _ = _split_text(record)
            updates.append((record.payload["doc_id"], payload_json, label))
        connection.executemany("UPDATE points SET doc_id = ?, payload = ? WHERE label = ?", updates)
        connection.executemany(
            "DELETE FROM fields WHERE label = ?", [(label,) for label, _ in rows]
        )
        self._write_fields(connection, ((label, r.payload) for label, r in rows))

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> int:
        """Replace the payloads of existing points in one transaction; vectors are kept.

        Unknown ids are ignored; returns how many points were updated.

        Raises:
            ValueError: A payload without a string ``doc_id``, not strict JSON, or too large
                (nothing is written then).

        Thread safety: as :meth:`upsert`.
        """
        self._check_writable()
        checked = {point_id: validate_payload(point_id, p) for point_id, p in payloads.items()}
        if not checked:
            return 0
        with self._write_lock:
            # The writer's own view: no other writer can change it in between.
            assert self._writer is not None
            existing = self._existing(self._writer, list(checked))
            # Through upsert's path with the stored vectors: a changed text gets a new label.
            valid = [
                ValidRecord(
                    point_id,
                    np.frombuffer(existing[point_id][1], dtype=np.float32),
                    *checked[point_id],
                )
                for point_id in checked
                if point_id in existing
            ]
            if valid:
                self._write(valid)
        return len(valid)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete points by id in one transaction; unknown ids are ignored. Returns the count.

        Thread safety: as :meth:`upsert`.
        """
        self._check_writable()
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        with self._write_lock:
            with self._lock.write(), self._transaction() as connection:
                self._record_lexical(connection)
                labels = [label for label, _, _ in self._existing(connection, unique).values()]
                connection.executemany("DELETE FROM points WHERE label = ?", [(x,) for x in labels])
                if labels:
                    self._index_delete(labels)
                    self._count -= len(labels)
                self._tombstones_covered = self._last_tombstone(connection)
            self._sync_lexical()
        return len(labels)

    # -- reads --------------------------------------------------------------------------------
    def get(self, ids: Iterable[str]) -> list[Record]:
        """The stored records (copies) for these ids, in the given order; unknown ids are left out.

        Thread safety: safe alongside searches and a writer.
        """
        wanted = list(ids)
        found: dict[str, tuple[str, str | None, bytes]] = {}
        connection = self._reader()
        for part in _chunks(list(dict.fromkeys(wanted))):
            for point_id, payload, text, vector in connection.execute(
                "SELECT id, payload, text, vector FROM points"
                f" WHERE id IN ({_placeholders(len(part))})",
                tuple(part),
            ):
                found[point_id] = (payload, text, vector)
        return [
            Record(
                point_id,
                np.frombuffer(found[point_id][2], dtype=np.float32).copy(),
                _payload(found[point_id][0], found[point_id][1]),
            )
            for point_id in wanted
            if point_id in found
        ]

    def get_payloads(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored payloads (copies) of these ids; unknown ids are left out.

        Thread safety: shared.
        """
        unique = list(dict.fromkeys(ids))
        result: dict[str, dict[str, Any]] = {}
        connection = self._reader()
        for part in _chunks(unique):
            for point_id, payload, text in connection.execute(
                f"SELECT id, payload, text FROM points WHERE id IN ({_placeholders(len(part))})",
                tuple(part),
            ):
                result[point_id] = _payload(payload, text)
        return result

    def ids_by_document(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """See :meth:`VectorStore.ids_by_document`. Thread safety: shared."""
        result: dict[str, set[str]] = {}
        connection = self._reader()
        for part in _chunks(list(dict.fromkeys(doc_ids))):
            for doc_id, point_id in connection.execute(
                f"SELECT doc_id, id FROM points WHERE doc_id IN ({_placeholders(len(part))})",
                tuple(part),
            ):
                result.setdefault(doc_id, set()).add(point_id)
        return result

    def document_ids(self) -> list[str]:
        """Every document id with at least one point. Thread safety: shared."""
        return [d for (d,) in self._reader().execute("SELECT DISTINCT doc_id FROM points")]

    def count(self) -> int:
        """Number of live points. Thread safety: shared."""
        self._refresh_if_changed()
        return self._count

    @staticmethod
    def _point_rows(
        connection: sqlite3.Connection, labels: Iterable[int]
    ) -> dict[int, tuple[str, str, str | None]]:
        """``label -> (id, payload JSON, text)`` of the stored points among ``labels``."""
        rows: dict[int, tuple[str, str, str | None]] = {}
        for part in _chunks(sorted({int(label) for label in labels})):
            for label, point_id, payload, text in connection.execute(
                "SELECT label, id, payload, text FROM points"
                f" WHERE label IN ({_placeholders(len(part))})",
                tuple(part),
            ):
                rows[int(label)] = (point_id, payload, text)
        return rows

    def _hits(
        self, connection: sqlite3.Connection, labels: np.ndarray, scores: np.ndarray
    ) -> list[list[ScoredRecord]]:
        rows = self._point_rows(connection, labels.ravel().tolist())
        # A point deleted by another process since this reader caught up is left out.
        return [
            [
                ScoredRecord(rows[label][0], float(score), _payload(rows[label][1], rows[label][2]))
                for label, score in zip(row_labels.tolist(), row_scores.tolist(), strict=True)
                if label in rows
            ]
            for row_labels, row_scores in zip(labels, scores, strict=True)
        ]

    def _allowed(self, connection: sqlite3.Connection, parsed: Filter) -> np.ndarray:
        """Labels in the index whose payload matches, by SQL over the indexed fields."""
        select = compile_label_select(parsed)
        if select is not None:
            # From the fields index alone: no lookup of each matching point's (wide) row.
            statement, parameters = select
            found = np.unique(_label_array(connection, statement, parameters))
            return found[found <= self._labels_covered]
        expression, parameters = compile_sql(parsed)
        return _label_array(
            connection,
            f"SELECT p.label FROM points p WHERE p.label <= ? AND ({expression})",
            [self._labels_covered, *parameters],
        )

    def search(
        self, vectors: np.ndarray, k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """See :meth:`VectorStore.search`; the filter is answered by SQL, inside the search.

        Thread safety: shared (concurrent searches run in parallel).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        queries = validate_queries(vectors, self.dimension)
        parsed = parse_filter(filter)
        if self._closed:
            raise StoreError("the store is closed")
        queries = self._compared(queries)
        self._refresh_if_changed()
        with self._search_transaction() as connection:
            allowed = None if parsed is None else self._allowed(connection, parsed)
            available = self._count if allowed is None else len(allowed)
            if available <= 0:
                return [[] for _ in range(len(queries))]
            labels, scores = self._search_vectors(queries, min(int(k), available), allowed)
            return self._hits(connection, labels, scores)

    def lexical_search(
        self, queries: Sequence[str], k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """BM25 top-``k`` over the payloads' ``text`` (tantivy; see
        :mod:`~sbert_retrieval.stores.lexical_index` for the formula and the analysis).

        Scores are BM25 with k1 = 1.2, b = 0.75 (higher is better). A query is read as plain
        words: any text is accepted, none is syntax. A filter restricts the hits, not the
        statistics: the result is the unfiltered ranking cut to the matching points.

        Thread safety: shared.
        """
        texts = check_lexical_args(queries, k)
        parsed = parse_filter(filter)
        if self._closed:
            raise StoreError("the store is closed")
        self._refresh_if_changed()
        index = self._lexical
        assert index is not None
        results: list[list[ScoredRecord]] = []
        with self._read_transaction() as connection:
            allowed = None if parsed is None else self._allowed(connection, parsed)
            for query in texts:
                labels, scores = index.search(query, int(k), allowed)
                results += self._hits(
                    connection,
                    np.array([labels], dtype=np.int64),
                    np.array([scores], dtype=np.float64),
                )
        return results

    def hybrid_search(
        self,
        vectors: np.ndarray,
        queries: Sequence[str],
        k: int,
        *,
        filter: FilterLike | None = None,
        candidates: int | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[list[FusedRecord]]:
        """See :meth:`VectorStore.hybrid_search`: the same branches and fusion, fused on labels
        inside one read, so that only the ``k`` winners' rows are read and decoded (not both
        branches' ``candidates``: at 100 each, most of a query's time).

        Thread safety: shared.
        """
        array, texts, depth = check_hybrid_args(
            vectors, queries, k, self.dimension, candidates=candidates, rrf_k=rrf_k
        )
        parsed = parse_filter(filter)
        if self._closed:
            raise StoreError("the store is closed")
        compared = self._compared(array)
        self._refresh_if_changed()
        index = self._lexical
        assert index is not None
        results: list[list[FusedRecord]] = []
        with self._search_transaction() as connection:
            allowed = None if parsed is None else self._allowed(connection, parsed)
            available = self._count if allowed is None else len(allowed)
            if available > 0:
                dense_labels, dense_scores = self._search_vectors(
                    compared, min(depth, available), allowed
                )
            for q, text in enumerate(texts):
                dense = (
                    list(zip(dense_labels[q].tolist(), dense_scores[q].tolist(), strict=True))
                    if available > 0
                    else []
                )
                labels, scores = index.search(text, depth, allowed)
                fused = fuse(dense, list(zip(labels, scores, strict=True)), rrf_k=rrf_k)[:k]
                rows = self._point_rows(connection, (item.key for item in fused))
                results.append(
                    [
                        FusedRecord.of(item, rows[item.key][0], _payload(*rows[item.key][1:]))
                        for item in fused
                        if item.key in rows
                    ]
                )
        return results

    def _stored_vectors(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, vectors)`` read from the database (this thread's read transaction), for
        the ``labels`` still stored, as the index compares them (normalized for cosine)."""
        rows: list[tuple[int, bytes]] = []
        connection = self._reader()
        for part in _chunks(sorted({int(label) for label in labels})):
            rows += connection.execute(
                f"SELECT label, vector FROM points WHERE label IN ({_placeholders(len(part))})",
                tuple(part),
            ).fetchall()
        found, vectors = _decode_rows(rows, self.dimension)
        return found, self._compared(vectors)

    def _compared(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as the index compares them: unit rows for cosine (zero rows kept), as
        given for inner product."""
        if self.metric != "cosine":
            return vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: np.ndarray = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
        return unit

    def _live_labels(self) -> np.ndarray:
        """Every label the index holds live (the database's, up to the index's mark)."""
        cursor = self._reader().execute(
            "SELECT label FROM points WHERE label <= ?", (self._labels_covered,)
        )
        return np.fromiter((label for (label,) in cursor), dtype=np.int64)

    def _exact_search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = exact_top_k(queries, self._index_vectors(allowed.tolist()), k)
        return allowed[rows], scores

    # -- durability ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Every write is already committed; snapshot the graph when the uncovered tail is long.

        Thread safety: safe alongside searches; waits for a running write.
        """
        if self.read_only or self._closed:
            return
        snapshot = self._snapshot or {"labels": 0, "tombstones": 0, "count": 0}
        with self._write_lock:
            tail = (self._labels_covered - int(snapshot["labels"])) + (
                self._tombstones_covered - int(snapshot["tombstones"])
            )
            if tail >= max(self.snapshot_min_tail, int(snapshot["count"]) // 2):
                self._write_snapshot()

    def _write_snapshot(self) -> None:
        """Save the graph and its companions (temp files, size check, fsync, rename), then name
        them in the database; the previous snapshot's files go once the new one is named."""
        if not self.KEEPS_SNAPSHOTS or self._writer is None:
            return
        with self._write_lock:
            previous = self._snapshot
            number = (int(str(previous["file"]).split("-")[1].split(".")[0]) if previous else 0) + 1
            file = self.path / f"graph-{number}.hnsw"
            tmp = file.with_name(file.name + ".tmp")
            written = [tmp]
            try:
                with self._lock.read():
                    written += self._save_snapshot(tmp)
                parts = []
                for part_tmp in written:
                    with part_tmp.open("rb+") as handle:
                        os.fsync(handle.fileno())
                    part = part_tmp.with_name(part_tmp.name.removesuffix(".tmp"))
                    part_tmp.replace(part)
                    parts.append(
                        {"file": part.name, "bytes": part.stat().st_size, "sha256": _sha256(part)}
                    )
                _fsync_dir(self.path)
                entry = {
                    **parts[0],
                    "companions": parts[1:],
                    "labels": self._labels_covered,
                    "tombstones": self._tombstones_covered,
                    "count": self._count,
                }
                # Deletions both the snapshot and the lexical index hold are no longer needed;
                # readers behind them rebuild.
                pruned = min(self._tombstones_covered, self._lexical_tombstones)
                with self._transaction() as connection:
                    self._record_lexical(connection)
                    connection.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('snapshot', ?)",
                        (json.dumps(entry),),
                    )
                    connection.execute("DELETE FROM tombstones WHERE rowid <= ?", (pruned,))
                    connection.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('pruned_through', ?)",
                        (json.dumps(pruned),),
                    )
            except (OSError, RuntimeError, ValueError, sqlite3.DatabaseError) as exc:
                # Whatever part of snapshot N was written (before or after its rename) goes.
                for leftover in self.path.glob(f"graph-{number}.*"):
                    if _SNAPSHOT_FILE.match(leftover.name):
                        with contextlib.suppress(OSError):
                            leftover.unlink()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise StoreError(
                    f"cannot write the graph snapshot {file}: {reason}; nothing is lost (the"
                    " database holds every point, and the next open rebuilds what is missing)"
                ) from exc
            self._snapshot = entry
            if previous is not None:
                for name in _snapshot_files(previous):
                    with contextlib.suppress(OSError):
                        (self.path / name).unlink()

    def close(self) -> None:
        """Snapshot the graph if the database is ahead of it, then release everything. Idempotent.

        Thread safety: call once, from one thread, after other threads' calls have returned.
        """
        if self._closed:
            return
        try:
            if not self.read_only and self._temporary is None:
                snapshot = self._snapshot or {"labels": 0, "tombstones": 0}
                if (self._labels_covered, self._tombstones_covered) != (
                    int(snapshot["labels"]),
                    int(snapshot["tombstones"]),
                ):
                    self._write_snapshot()
                with self._write_lock:
                    if self._lexical is not None and self._writer is not None:
                        with self._transaction() as connection:
                            self._record_lexical(connection)
                        self._lexical.close()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        # The index is most of a store's memory (1.7 GB at 1M points of 384-d in a graph): free
        # it now, not when the last reference to the closed store goes, so that a close and a
        # reopen of the same store never hold two.
        with self._lock.write():
            self._free_index()
        self._lexical = None
        with self._connections_lock:
            connections, self._connections = self._connections, []
        if self._writer is not None:
            connections.append(self._writer)
            self._writer = None
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def __del__(self) -> None:
        # Never snapshot from a finalizer (it may run at interpreter exit); just let go.
        with contextlib.suppress(Exception):
            if not self._closed:
                self._closed = True
                self._release()
