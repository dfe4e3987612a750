"""Documents, chunks, and the loaders that read them from JSONL, text folders and BEIR corpora.

Loaders stream: they yield a :class:`Document` per good record and an
:class:`~sbert_retrieval.errors.InvalidRecordError` (yielded, not raised) per bad one, naming the
file and line, so one bad record never stops a batch.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _open_binary(path: Path) -> Any:
    # Binary, decoded line by line: a bad byte is reported on its own line and reading goes on.
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


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
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
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
    source = str(file)
    try:
        handle = _open_binary(file)
    except OSError as exc:
        yield InvalidRecordError(source, "", f"cannot open: {exc.strerror or exc}")
        return
    with handle:
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


def load_text_folder(
    path: str | os.PathLike[str], *, suffixes: Iterable[str] = TEXT_SUFFIXES
) -> Iterator[LoadedRecord]:
    """Stream one document per text file below a folder, recursively, in sorted order.

    The id is the file's path relative to the folder (``notes/a.md``); metadata holds
    ``source`` (that relative path) and, for Markdown, ``title`` from the first ``# `` heading.
    """
    root = Path(path)
    wanted = tuple(s.lower() for s in suffixes)
    for file in sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(wanted)
    ):
        rel = file.relative_to(root).as_posix()
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            shown = str(file).encode("utf-8", "backslashreplace").decode()
            yield InvalidRecordError(shown, "", "file name is not valid UTF-8")
            continue
        yield _document_from_file(file, rel)


def _document_from_file(file: Path, doc_id: str) -> LoadedRecord:
    source = str(file)
    try:
        raw = file.read_bytes()
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
    metadata: dict[str, Any] = {"source": doc_id}
    if file.suffix.lower() in (".md", ".markdown"):
        for line in text.splitlines():
            if line.startswith("# "):
                metadata["title"] = line[2:].strip()
                break
    return Document(id=doc_id, text=text, metadata=metadata)


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
                str(root), "", "no corpus.jsonl or corpus.jsonl.gz in this folder"
            )
            return
    yield from load_jsonl(root, join_title=True)


def iter_documents(paths: Iterable[str | os.PathLike[str]]) -> Iterator[LoadedRecord]:
    """Stream documents from any mix of JSONL files, BEIR folders, text folders and text files.

    A folder holding ``corpus.jsonl[.gz]`` is read as a BEIR corpus; any other folder as text
    files (and ``.jsonl`` files inside it as JSONL). A path that does not exist is reported as an
    invalid record.
    """
    for raw in paths:
        path = Path(raw)
        name = path.name.lower()
        if path.is_dir():
            if (path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file():
                yield from load_beir_corpus(path)
                continue
            yield from load_text_folder(path)
            for jsonl in sorted(
                p for p in path.rglob("*") if p.name.lower().endswith(_JSONL_SUFFIXES)
            ):
                yield from load_jsonl(jsonl)
        elif path.is_file() and name.endswith(_JSONL_SUFFIXES):
            yield from (load_beir_corpus(path) if name.startswith("corpus.") else load_jsonl(path))
        elif path.is_file():
            yield _document_from_file(path, path.name)
        else:
            yield InvalidRecordError(str(path), "", "no such file or folder")
