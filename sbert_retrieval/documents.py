"""Documents, chunks, and the loaders that read them from JSONL, text folders and BEIR corpora.

Loaders stream: they yield a :class:`Document` per good record and an
:class:`~sbert_retrieval.errors.InvalidRecordError` (yielded, not raised) per bad one, naming the
file and line, so one bad record never stops a batch.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import stat
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sbert_retrieval.errors import InvalidRecordError

__all__ = [
    "TEXT_SUFFIXES",
    "Chunk",
    "Document",
    "LoadedRecord",
    "iter_documents",
    "load_beir_corpus",
    "load_jsonl",
    "load_text_folder",
]

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
_ID_KEYS = ("id", "_id")


@dataclass(frozen=True)
class Document:
    """A unit of source text with a stable id.

    Attributes:
        id: Unique, stable id (re-ingesting the same id replaces the document).
        text: The full text; chunk offsets index into it (Python ``str`` positions).
        metadata: JSON-serializable fields carried onto every hit (e.g. ``title``, ``source``).
    """

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A token window of a document.

    Attributes:
        doc_id: The document's id.
        index: Position of the chunk within its document, from 0.
        text: ``document.text[start:end]``.
        start: Character offset of the first character, inclusive.
        end: Character offset after the last character, exclusive.
        token_count: Tokens in the window, special tokens excluded.
        metadata: The document's metadata.
    """

    doc_id: str
    index: int
    text: str
    start: int
    end: int
    token_count: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


LoadedRecord = Document | InvalidRecordError


def _document_from_json(
    record: Any, source: str, location: str, *, join_title: bool
) -> LoadedRecord:
    if not isinstance(record, dict):
        return InvalidRecordError(
            source, location, f"expected a JSON object, got {type(record).__name__}"
        )
    doc_id: Any = next((record[k] for k in _ID_KEYS if k in record), None)
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return InvalidRecordError(source, location, "missing id (give an 'id' or '_id' field)")
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return InvalidRecordError(
            source, location, f"id must be a string or integer, got {doc_id!r}"
        )
    text = record.get("text")
    if not isinstance(text, str):
        return InvalidRecordError(source, location, f"document {doc_id}: 'text' must be a string")
    title = record.get("title") or ""
    if not isinstance(title, str):
        return InvalidRecordError(source, location, f"document {doc_id}: 'title' must be a string")
    if join_title and title:
        # BEIR/MTEB join title and body with one space; the body alone when there is no title.
        text = f"{title} {text}".strip()
    if not text.strip():
        return InvalidRecordError(source, location, f"document {doc_id}: empty text")
    metadata = {k: v for k, v in record.items() if k not in (*_ID_KEYS, "text")}
    return Document(id=str(doc_id), text=text, metadata=metadata)


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, only if it is a regular file.

    Opened non-blocking and checked with ``fstat`` before anything is read, so a FIFO (whose
    plain ``open`` waits forever for a writer), a socket or a device put in a file's place is
    refused at once.

    Raises:
        OSError: It cannot be opened, or it is not a regular file (``strerror`` says what it is).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{_file_kind(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file (see :func:`_open_regular`)."""
    with _open_regular(path) as handle:
        return handle.read()


def _decompressed(raw: BinaryIO, path: Path) -> Any:
    """A context manager giving ``raw``'s bytes, gunzipped when ``path`` ends with ``.gz``."""
    # Binary, decoded line by line: a bad byte is reported on its own line and reading goes on.
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return contextlib.nullcontext(raw)


MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _json_problem(value: Any) -> str | None:
    """Why a parsed record cannot be stored as JSON, or ``None``.

    One iterative walk (no recursion, so it is safe on any depth) for what ``json.loads``
    accepts but a store cannot write back: nesting deeper than :data:`MAX_JSON_DEPTH`, and
    strings holding lone surrogates (``"\\ud800"``), which are not valid Unicode.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(node, str):
            if not _is_utf8(node):
                return "a string holds a lone surrogate escape (invalid Unicode)"
        elif isinstance(node, dict):
            stack.extend((key, depth + 1) for key in node)
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
    return None


def load_jsonl(path: str | os.PathLike[str], *, join_title: bool = False) -> Iterator[LoadedRecord]:
    """Stream documents from a JSON Lines file (``.jsonl`` or ``.jsonl.gz``).

    Each line is an object with ``id`` or ``_id`` and ``text``; ``title`` and every other key
    become metadata. Blank lines are skipped.

    Args:
        path: The file.
        join_title: Prepend ``title`` to the text with one space (the BEIR convention).

    Yields:
        A :class:`Document` or an :class:`InvalidRecordError` for each non-blank line.
    """
    file = Path(path)
    source = _shown(file)
    try:
        raw = _open_regular(file)
    except OSError as exc:
        yield InvalidRecordError(source, "", f"cannot open: {exc.strerror or exc}")
        return
    with raw, _decompressed(raw, file) as handle:
        lineno = 0
        while True:
            lineno += 1
            try:
                raw = handle.readline()
            except (OSError, EOFError, zlib.error) as exc:
                yield InvalidRecordError(source, f"line {lineno}", f"read failed: {exc}")
                return
            if not raw:
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield InvalidRecordError(
                    source, f"line {lineno}", f"not valid UTF-8 ({exc.reason})"
                )
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_constant=_reject_constant)
            except RecursionError:
                yield InvalidRecordError(
                    source, f"line {lineno}", "invalid JSON: nested too deeply"
                )
                continue
            except ValueError as exc:
                # JSONDecodeError, NaN/Infinity, and integers past Python's digit limit.
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:200]
                yield InvalidRecordError(source, f"line {lineno}", f"invalid JSON: {reason}")
                continue
            problem = _json_problem(record)
            if problem is not None:
                yield InvalidRecordError(source, f"line {lineno}", f"invalid JSON: {problem}")
                continue
            yield _document_from_json(record, source, f"line {lineno}", join_title=join_title)


def _shown(path: str | os.PathLike[str]) -> str:
    """A printable, strictly UTF-8 form of a path, for reports.

    Bytes that are not UTF-8 reach Python as surrogate escapes (``b"\\xff"`` becomes
    ``"\\udcff"``); they are written out as that escape (``bad\\udcff.txt``) so a report can
    always be printed and dumped as JSON.
    """
    return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as strict UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (for skip reasons)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "an unknown kind of file"


@dataclass(frozen=True)
class _FoundFile:
    """A regular file to read as one document.

    Attributes:
        path: The file as found (below a folder: the folder as given joined with ``rel``).
        doc_id: Its document id (see :func:`load_text_folder` and :func:`iter_documents`).
        rel: Its path relative to the folder, POSIX form (a symlink keeps its own name); the
            file name for a file given directly. Stored as metadata ``source``.
    """

    path: Path
    doc_id: str
    rel: str


def _walk_folder(
    root: Path, suffixes: tuple[str, ...]
) -> Iterator[_FoundFile | InvalidRecordError]:
    """The regular files below ``root`` whose names end with ``suffixes``, depth first, sorted.

    Nothing is opened here: each entry is classified with ``lstat`` (and ``stat`` through a
    symlink), so FIFOs, sockets and devices never block the walk. Skipped with a report (an
    :class:`InvalidRecordError` naming the entry, printable even for undecodable names):
    symlinks that point outside the root (to a file or a folder), dangling or looping symlinks,
    special files, names that are not valid UTF-8, folders that cannot be listed. Symlinks to
    folders inside the root are not followed (what they hold is found under its real path, and
    loops cannot form). A root that does not exist yields nothing.
    """
    try:
        base = root.resolve(strict=True)
    except OSError:
        return
    walk = _Walk(base, base.as_posix(), suffixes)
    stack: list[_Listing] = []
    folder_to_enter: tuple[Path, str] | None = (root, "")
    while True:
        if folder_to_enter is not None:
            listed = _list_folder(*folder_to_enter)
            if isinstance(listed, InvalidRecordError):
                yield listed
            else:
                stack.append(listed)
        if not stack:
            return
        folder, prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            folder_to_enter = None
            continue
        item = walk.classify(entry, folder / entry.name, prefix + entry.name)
        # A subfolder is entered at once (depth first): the order of sorting the full paths.
        folder_to_enter = item if isinstance(item, tuple) else None
        if isinstance(item, (_FoundFile, InvalidRecordError)):
            yield item


_Listing = tuple[Path, str, Iterator["os.DirEntry[str]"]]


def _list_folder(folder: Path, prefix: str) -> _Listing | InvalidRecordError:
    """A folder's entries sorted by name (read at once: no handle stays open), or why not."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        return InvalidRecordError(
            _shown(folder), "", f"cannot list folder: {exc.strerror or exc}; skipped"
        )
    return folder, prefix, iter(entries)


@dataclass(frozen=True)
class _Walk:
    """One folder walk: the resolved root, its id prefix and the wanted name suffixes."""

    base: Path
    base_id: str
    suffixes: tuple[str, ...]

    def classify(
        self, entry: os.DirEntry[str], path: Path, rel: str
    ) -> _FoundFile | InvalidRecordError | tuple[Path, str] | None:
        """One entry: a file to read, a problem to report, a folder to enter, or nothing."""
        try:
            if entry.is_dir(follow_symlinks=False):
                return (path, rel + "/")
            is_link = entry.is_symlink()
        except OSError as exc:
            return InvalidRecordError(
                _shown(path), "", f"cannot stat: {exc.strerror or exc}; skipped"
            )
        wanted = entry.name.lower().endswith(self.suffixes)
        if is_link:
            try:
                info = path.stat()
            except OSError as exc:
                if not wanted:
                    return None
                try:
                    target = str(path.readlink())
                except OSError:
                    target = "?"
                what = "dangling" if isinstance(exc, FileNotFoundError) else "unresolvable"
                return InvalidRecordError(
                    _shown(path),
                    "",
                    f"{what} symlink (to '{_shown(target)}': {exc.strerror or exc}); skipped",
                )
            if not (wanted or stat.S_ISDIR(info.st_mode)):
                return None
            target_path = Path(os.path.realpath(path))
            if not target_path.is_relative_to(self.base):
                return InvalidRecordError(
                    _shown(path),
                    "",
                    f"symlink points outside the ingest root ({_shown(target_path)}); skipped",
                )
            if stat.S_ISDIR(info.st_mode):
                return None  # reached under its real path inside the root
        else:
            if not wanted:
                return None
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                return InvalidRecordError(
                    _shown(path), "", f"cannot stat: {exc.strerror or exc}; skipped"
                )
        if not stat.S_ISREG(info.st_mode):
            return InvalidRecordError(
                _shown(path),
                "",
                f"{_file_kind(info.st_mode)}, not a regular file; skipped unopened",
            )
        doc_id = f"{self.base_id}/{rel}"
        if not _is_utf8(doc_id):
            return InvalidRecordError(_shown(path), "", "file name is not valid UTF-8; skipped")
        return _FoundFile(path, doc_id, rel)


def load_text_folder(
    path: str | os.PathLike[str], *, suffixes: Iterable[str] = TEXT_SUFFIXES
) -> Iterator[LoadedRecord]:
    """Stream one document per text file below a folder, recursively, in sorted order.

    The id is the folder's resolved absolute path joined with the file's path relative to it,
    in POSIX form (``/data/docs/notes/a.md``): unique across folders, the same on every run for
    the same folder, and different once the folder moves. A symlink inside the folder keeps
    its own relative path. Metadata holds ``source`` (the path relative to the folder) and, for
    Markdown, ``title`` from the first ``# `` heading.

    Reported as an :class:`InvalidRecordError` and skipped, never opened: symlinks whose target
    leaves the folder, dangling symlinks, FIFOs, sockets and devices, and names that are not
    valid UTF-8 (shown with the bad bytes escaped, e.g. ``bad\\udcff.txt``). Symlinks to
    folders are not followed (one inside the folder is read under its real path). A folder
    that does not exist yields nothing.
    """
    wanted = tuple(s.lower() for s in suffixes)
    for item in _walk_folder(Path(path), wanted):
        yield item if isinstance(item, InvalidRecordError) else _document_from_file(item)


def _document_from_file(found: _FoundFile) -> LoadedRecord:
    source = _shown(found.path)
    try:
        raw = _read_regular(found.path)
    except OSError as exc:
        return InvalidRecordError(source, "", f"cannot read: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return InvalidRecordError(source, f"byte {exc.start}", f"not valid UTF-8 ({exc.reason})")
    if "\x00" in text:
        return InvalidRecordError(
            source, f"char {text.index(chr(0))}", "contains NUL bytes (binary file?)"
        )
    if not text.strip():
        return InvalidRecordError(source, "", "empty text")
    metadata: dict[str, Any] = {"source": found.rel}
    if found.path.suffix.lower() in (".md", ".markdown"):
        for line in text.splitlines():
            if line.startswith("# "):
                metadata["title"] = line[2:].strip()
                break
    return Document(id=found.doc_id, text=text, metadata=metadata)


def load_beir_corpus(path: str | os.PathLike[str]) -> Iterator[LoadedRecord]:
    """Stream a BEIR corpus: a dataset folder or its ``corpus.jsonl[.gz]`` file.

    Title and text are joined with one space, as BEIR and MTEB do.
    """
    root = Path(path)
    if root.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (root / name).is_file():
                root = root / name
                break
        else:
            yield InvalidRecordError(
                _shown(root), "", "no corpus.jsonl or corpus.jsonl.gz in this folder"
            )
            return
    yield from load_jsonl(root, join_title=True)


def iter_documents(paths: Iterable[str | os.PathLike[str]]) -> Iterator[LoadedRecord]:
    """Stream documents from any mix of JSONL files, BEIR folders, text folders and text files.

    A folder holding ``corpus.jsonl[.gz]`` is read as a BEIR corpus; any other folder as text
    files (ids as in :func:`load_text_folder`), then the ``.jsonl`` files inside it as JSONL.
    A text file given directly gets its resolved absolute path (POSIX form) as its id; JSONL
    and BEIR ids come from the records. A path that does not exist, is not a regular file or
    folder, or (for a text file) has a name that is not valid UTF-8 is reported as an invalid
    record, never opened.
    """
    for raw in paths:
        path = Path(raw)
        name = path.name.lower()
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            yield InvalidRecordError(_shown(path), "", "no such file or folder")
            continue
        except OSError as exc:
            yield InvalidRecordError(_shown(path), "", f"cannot stat: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(mode):
            if (path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file():
                yield from load_beir_corpus(path)
                continue
            found = list(_walk_folder(path, TEXT_SUFFIXES + _JSONL_SUFFIXES))
            jsonl = [f for f in found if isinstance(f, _FoundFile) and _is_jsonl(f.rel)]
            for item in found:
                if isinstance(item, InvalidRecordError):
                    yield item
                elif not _is_jsonl(item.rel):
                    yield _document_from_file(item)
            for item in jsonl:
                yield from load_jsonl(item.path)
        elif not stat.S_ISREG(mode):
            yield InvalidRecordError(
                _shown(path), "", f"{_file_kind(mode)}, not a regular file; skipped unopened"
            )
        elif name.endswith(_JSONL_SUFFIXES):
            yield from (load_beir_corpus(path) if name.startswith("corpus.") else load_jsonl(path))
        else:
            doc_id = path.resolve().as_posix()
            if not _is_utf8(doc_id):
                yield InvalidRecordError(_shown(path), "", "file name is not valid UTF-8; skipped")
                continue
            yield _document_from_file(_FoundFile(path, doc_id, path.name))


def _is_jsonl(name: str) -> bool:
    return name.lower().endswith(_JSONL_SUFFIXES)
