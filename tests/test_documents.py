"""Document loaders against real files: JSONL, text folders, BEIR corpora and the dispatcher.

Loaders must stream and never raise on a bad record: each one becomes an
:class:`InvalidRecordError` (yielded) naming the file, the place in it and a reason.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sbert_retrieval.documents import (
    Document,
    LoadedRecord,
    iter_documents,
    load_beir_corpus,
    load_jsonl,
    load_text_folder,
)
from sbert_retrieval.errors import InvalidRecordError, SbertRetrievalError

T = TypeVar("T")
LINUX_ONLY = pytest.mark.skipif(
    sys.platform != "linux", reason="needs a file system that takes any bytes in names"
)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _docs(records: list[LoadedRecord]) -> list[Document]:
    return [r for r in records if isinstance(r, Document)]


def _errors(records: list[LoadedRecord]) -> list[InvalidRecordError]:
    return [r for r in records if isinstance(r, InvalidRecordError)]


def _only_error(records: list[LoadedRecord]) -> InvalidRecordError:
    errors = _errors(records)
    assert len(errors) == 1, records
    return errors[0]


# --------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------


def test_jsonl_good_records(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "docs.jsonl",
        [
            json.dumps(
                {"id": "a", "text": "alpha text", "title": "Alpha", "lang": "en", "year": 2020}
            ),
            json.dumps({"_id": "b", "text": "beta text"}),
            json.dumps({"id": 7, "text": "int id"}),
            json.dumps({"id": 0, "text": "zero is a valid id"}),
            json.dumps(
                {"id": "n", "text": "nested", "author": {"name": "Ann"}, "tags": ["x", "y"]}
            ),
        ],
    )
    records = list(load_jsonl(path))
    assert _errors(records) == []
    a, b, seven, zero, nested = _docs(records)
    assert a == Document("a", "alpha text", {"title": "Alpha", "lang": "en", "year": 2020})
    assert b == Document("b", "beta text", {})
    assert seven.id == "7" and isinstance(seven.id, str)
    assert zero.id == "0"
    assert nested.metadata == {"author": {"name": "Ann"}, "tags": ["x", "y"]}
    # id keys and text never leak into metadata
    for doc in _docs(records):
        assert not {"id", "_id", "text"} & set(doc.metadata)


def test_jsonl_accepts_str_path_and_id_wins_over_underscore_id(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "d.jsonl", [json.dumps({"id": "first", "_id": "second", "text": "t"})]
    )
    (doc,) = load_jsonl(str(path))
    assert isinstance(doc, Document)
    assert doc.id == "first"


def test_jsonl_join_title(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps({"_id": "1", "title": "The Title", "text": "the body"}),
            json.dumps({"_id": "2", "title": "", "text": "no title"}),
            json.dumps({"_id": "3", "text": "title missing"}),
            json.dumps({"_id": "4", "title": "Only title", "text": ""}),
        ],
    )
    joined = list(load_jsonl(path, join_title=True))
    assert [d.text for d in _docs(joined)] == [
        "The Title the body",
        "no title",
        "title missing",
        "Only title",
    ]
    # title stays in metadata either way
    assert _docs(joined)[0].metadata == {"title": "The Title"}
    plain = list(load_jsonl(path))
    assert [r.text if isinstance(r, Document) else None for r in plain] == [
        "the body",
        "no title",
        "title missing",
        None,  # without joining, doc 4's text is empty
    ]


def test_jsonl_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n"
        + json.dumps({"id": "a", "text": "x"})
        + "\n   \n\t\n"
        + "not json\n"
        + json.dumps({"id": "b", "text": "y"})
        + "\n\n",
        encoding="utf-8",
    )
    records = list(load_jsonl(path))
    assert [d.id for d in _docs(records)] == ["a", "b"]
    error = _only_error(records)
    assert error.location == "line 5"  # blank lines still count towards line numbers


def test_jsonl_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\r\n{"id": "b", "text": "y"}\r\n')
    assert [d.id for d in _docs(list(load_jsonl(path)))] == ["a", "b"]


def test_jsonl_gz(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "g", "title": "T", "text": "gzipped"}) + "\n")
        handle.write("{broken\n")
    records = list(load_jsonl(path, join_title=True))
    assert records[0] == Document("g", "T gzipped", {"title": "T"})
    error = _only_error(records)
    assert error.source == str(path) and error.location == "line 2"


def test_jsonl_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    error = _only_error(list(load_jsonl(path)))
    assert error.source == str(path)
    assert "cannot open" in error.reason


def test_invalid_record_error_is_a_value_error_with_location_in_message() -> None:
    error = InvalidRecordError("f.jsonl", "line 3", "boom")
    assert isinstance(error, ValueError) and isinstance(error, SbertRetrievalError)
    assert str(error) == "f.jsonl:line 3: boom"
    assert str(InvalidRecordError("f.txt", "", "empty text")) == "f.txt: empty text"


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        ("{not json", "invalid JSON"),
        ('{"id": "a", "text": "x"', "invalid JSON"),
        ('{"id": "a", "text": "x"} trailing', "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ("42", "expected a JSON object, got int"),
        ("null", "expected a JSON object, got NoneType"),
        ('{"text": "no id"}', "missing id"),
        ('{"id": null, "text": "null id"}', "missing id"),
        ('{"id": "", "text": "empty id"}', "missing id"),
        ('{"id": "   ", "text": "blank id"}', "missing id"),
        ('{"id": 1.5, "text": "float id"}', "id must be a string or integer"),
        ('{"id": true, "text": "bool id"}', "id must be a string or integer"),
        ('{"id": ["a"], "text": "list id"}', "id must be a string or integer"),
        ('{"id": "a"}', "'text' must be a string"),
        ('{"id": "a", "text": null}', "'text' must be a string"),
        ('{"id": "a", "text": 12}', "'text' must be a string"),
        ('{"id": "a", "text": ["x"]}', "'text' must be a string"),
        ('{"id": "a", "text": ""}', "empty text"),
        ('{"id": "a", "text": "  \\n\\t "}', "empty text"),
        ('{"id": "a", "text": "x", "title": 5}', "'title' must be a string"),
    ],
)
def test_jsonl_bad_record(tmp_path: Path, line: str, reason_part: str) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps({"id": "ok", "text": "fine"}), line])
    records = list(load_jsonl(path))
    assert len(records) == 2
    assert records[0] == Document("ok", "fine", {})
    error = records[1]
    assert isinstance(error, InvalidRecordError)
    assert error.source == str(path)
    assert error.location == "line 2"
    assert reason_part in error.reason
    assert str(path) in str(error) and "line 2" in str(error)


def test_jsonl_bad_record_names_document_id(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps({"id": "doc-42", "text": "   "})])
    assert "doc-42" in _only_error(list(load_jsonl(path))).reason


def test_jsonl_deeply_nested_json_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(
        "[" * 100_000
        + "\n"
        + '{"a":' * 100_000
        + "\n"
        + json.dumps({"id": "after", "text": "still read"})
        + "\n",
        encoding="utf-8",
    )
    records = list(load_jsonl(path))
    assert [r.location for r in _errors(records)] == ["line 1", "line 2"]
    assert all("nested too deeply" in e.reason for e in _errors(records))
    assert [d.id for d in _docs(records)] == ["after"]


def test_jsonl_moderately_nested_metadata_is_kept(tmp_path: Path) -> None:
    nested: object = "leaf"
    for _ in range(50):
        nested = {"k": nested}
    path = _write_lines(
        tmp_path / "d.jsonl", [json.dumps({"id": "a", "text": "x", "deep": nested})]
    )
    (doc,) = load_jsonl(path)
    assert isinstance(doc, Document)
    assert doc.metadata["deep"] == nested


def test_jsonl_raw_nul_byte_is_invalid_json_and_escaped_nul_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_bytes(
        b'{"id": "raw", "text": "a\x00b"}\n'  # a raw control character inside a JSON string
        b"\x00\x00\x00\n"
        b'{"id": "escaped", "text": "a\\u0000b"}\n'
    )
    records = list(load_jsonl(path))
    assert [e.location for e in _errors(records)] == ["line 1", "line 2"]
    assert all("invalid JSON" in e.reason for e in _errors(records))
    # Documented behaviour: a JSON-escaped NUL is valid JSON and is kept in the text (the text
    # folder loader, which sees raw bytes, rejects NUL instead).
    (doc,) = _docs(records)
    assert doc.id == "escaped" and doc.text == "a\x00b"


def test_jsonl_bom_on_first_line_is_rejected_as_invalid_json(tmp_path: Path) -> None:
    # Documented behaviour: JSONL is read as strict UTF-8 (not utf-8-sig), so a BOM makes line 1
    # invalid JSON; following lines still load.
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n')
    records = list(load_jsonl(path))
    assert _only_error(records).location == "line 1"
    assert [d.id for d in _docs(records)] == ["b"]


def test_jsonl_invalid_utf8_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "good"}\n'
        b'{"id": "b", "text": "bad \xff byte"}\n'
        b'{"id": "c", "text": "after"}\n'
    )
    records = list(load_jsonl(path))
    assert isinstance(records[0], Document) and records[0].id == "a"
    error = records[1]
    assert isinstance(error, InvalidRecordError)
    assert error.location == "line 2"
    assert "not valid UTF-8" in error.reason


def test_jsonl_huge_integer_literal_is_reported(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "bigint.jsonl",
        ['{"id": "a", "text": "x", "n": ' + "9" * 5000 + "}", json.dumps({"id": "b", "text": "y"})],
    )
    records = list(load_jsonl(path))
    assert _only_error(records).location == "line 1"
    assert [d.id for d in _docs(records)] == ["b"]


def test_jsonl_lone_surrogates_are_rejected(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "surrogate.jsonl",
        [
            '{"id": "a", "text": "lone \\udc00 surrogate"}',
            '{"id": "\\ud800", "text": "bad id"}',
            '{"id": "c", "text": "x", "title": "\\udfff"}',
        ],
    )
    records = list(load_jsonl(path))
    assert [e.location for e in _errors(records)] == ["line 1", "line 2", "line 3"]


def test_jsonl_nan_metadata_is_rejected(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "nan.jsonl", ['{"id": "a", "text": "x", "score": NaN}'])
    records = list(load_jsonl(path))
    for record in records:
        if isinstance(record, Document):
            json.dumps(dict(record.metadata), allow_nan=False)


# --------------------------------------------------------------------------------------------
# Text folders
# --------------------------------------------------------------------------------------------


def _make_tree(root: Path) -> None:
    (root / "notes" / "deep").mkdir(parents=True)
    (root / "b.txt").write_text("bee", encoding="utf-8")
    (root / "a.md").write_text("intro line\n# The Title  \n\nbody\n# Second\n", encoding="utf-8")
    (root / "notes" / "c.rst").write_text("see", encoding="utf-8")
    (root / "notes" / "deep" / "d.markdown").write_text(
        "#not a heading\n#  Spaced\n", encoding="utf-8"
    )
    (root / "notes" / "e.MD").write_text("# Upper suffix\n", encoding="utf-8")
    (root / "skip.py").write_text("print('not text')", encoding="utf-8")
    (root / "data.jsonl").write_text(
        json.dumps({"id": "j", "text": "json"}) + "\n", encoding="utf-8"
    )


def _folder_id(root: Path, rel: str) -> str:
    """The id a file at ``rel`` below ``root`` must get: resolved root + relative POSIX path."""
    return f"{root.resolve().as_posix()}/{rel}"


def _rels(root: Path, docs: list[Document]) -> list[str]:
    prefix = root.resolve().as_posix() + "/"
    assert all(d.id.startswith(prefix) for d in docs), [d.id for d in docs]
    return [d.id.removeprefix(prefix) for d in docs]


def test_text_folder_recursive_sorted_with_absolute_posix_ids(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    records = list(load_text_folder(tmp_path))
    assert _errors(records) == []
    docs = _docs(records)
    assert _rels(tmp_path, docs) == [
        "a.md",
        "b.txt",
        "notes/c.rst",
        "notes/deep/d.markdown",
        "notes/e.MD",
    ]
    by_rel = dict(zip(_rels(tmp_path, docs), docs, strict=True))
    assert by_rel["a.md"].id == (tmp_path.resolve() / "a.md").as_posix()
    assert by_rel["a.md"].metadata == {"source": "a.md", "title": "The Title"}
    assert by_rel["a.md"].text == "intro line\n# The Title  \n\nbody\n# Second\n"  # untouched
    assert by_rel["b.txt"].metadata == {"source": "b.txt"}  # no title for .txt
    assert by_rel["notes/c.rst"].metadata == {"source": "notes/c.rst"}
    assert by_rel["notes/deep/d.markdown"].metadata == {
        "source": "notes/deep/d.markdown",
        "title": "Spaced",
    }
    assert by_rel["notes/e.MD"].metadata["title"] == "Upper suffix"


def test_text_folder_ids_differ_across_roots_and_are_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(f"# {name}\nabout {name}", encoding="utf-8")
    (a_doc,) = _docs(list(load_text_folder(tmp_path / "a")))
    (b_doc,) = _docs(list(load_text_folder(tmp_path / "b")))
    assert a_doc.id != b_doc.id
    assert a_doc.id == _folder_id(tmp_path / "a", "README.md")
    assert b_doc.id == _folder_id(tmp_path / "b", "README.md")
    # The same folder, named relatively, through a symlink, or with "..": the same id.
    (tmp_path / "alias").symlink_to(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    for spelling in ("a", "./a", "alias", "b/../a", str(tmp_path / "a")):
        assert [d.id for d in _docs(list(load_text_folder(spelling)))] == [a_doc.id], spelling
    assert [d.id for d in _docs(list(iter_documents(["a"])))] == [a_doc.id]


def test_text_folder_symlink_inside_root_keeps_its_own_path(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "real.md").write_text("# Real\nbody", encoding="utf-8")
    (tmp_path / "link.md").symlink_to("notes/real.md")
    (tmp_path / "notes-alias").symlink_to("notes")  # a folder link inside the root: not followed
    records = list(load_text_folder(tmp_path))
    assert _errors(records) == []
    docs = _docs(records)
    assert _rels(tmp_path, docs) == ["link.md", "notes/real.md"]
    assert docs[0].metadata == {"source": "link.md", "title": "Real"}
    assert docs[0].text == docs[1].text == "# Real\nbody"


def test_text_folder_suffix_filter(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    assert _rels(tmp_path, _docs(list(load_text_folder(tmp_path, suffixes=[".txt", ".PY"])))) == [
        "b.txt",
        "skip.py",
    ]
    assert list(load_text_folder(tmp_path, suffixes=[".none"])) == []


def test_text_folder_md_without_heading_has_no_title(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("## Only a level-two heading\nbody", encoding="utf-8")
    (doc,) = load_text_folder(tmp_path)
    assert isinstance(doc, Document)
    assert doc.metadata == {"source": "x.md"}


def test_text_folder_strips_utf8_bom(tmp_path: Path) -> None:
    (tmp_path / "bom.md").write_bytes("\ufeff# Titled\nbody".encode())
    (doc,) = load_text_folder(tmp_path)
    assert isinstance(doc, Document)
    assert doc.text == "# Titled\nbody"
    assert doc.metadata["title"] == "Titled"


def test_text_folder_reports_bad_files_and_keeps_going(tmp_path: Path) -> None:
    (tmp_path / "1-latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    binary_bytes = b"PK\x03\x04 looks like text\x00\x00 but is not"
    (tmp_path / "2-binary.txt").write_bytes(binary_bytes)
    (tmp_path / "3-empty.txt").write_bytes(b"")
    (tmp_path / "4-blank.md").write_text(" \n\t\n", encoding="utf-8")
    (tmp_path / "5-good.txt").write_text("good", encoding="utf-8")
    records = list(load_text_folder(tmp_path))
    assert len(records) == 5
    latin1, binary, empty, blank, good = records
    assert isinstance(latin1, InvalidRecordError)
    assert latin1.source == str(tmp_path / "1-latin1.txt")
    assert latin1.location == "byte 3" and "not valid UTF-8" in latin1.reason
    assert isinstance(binary, InvalidRecordError)
    assert binary.source == str(tmp_path / "2-binary.txt")
    assert binary.location == f"char {binary_bytes.index(0)}" and "NUL" in binary.reason
    for error, name in ((empty, "3-empty.txt"), (blank, "4-blank.md")):
        assert isinstance(error, InvalidRecordError)
        assert error.source == str(tmp_path / name)
        assert error.location == "" and error.reason == "empty text"
    assert good == Document(_folder_id(tmp_path, "5-good.txt"), "good", {"source": "5-good.txt"})


def test_text_folder_missing_folder_yields_nothing(tmp_path: Path) -> None:
    # Documented behaviour: load_text_folder does not report a missing folder; iter_documents does.
    assert list(load_text_folder(tmp_path / "absent")) == []


# --------------------------------------------------------------------------------------------
# BEIR
# --------------------------------------------------------------------------------------------


def _beir_folder(root: Path, *, gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"_id": "d1", "title": "Title one", "text": "Body one."}),
        json.dumps({"_id": "d2", "title": "", "text": "Body two."}),
    ]
    if gz:
        with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    else:
        _write_lines(root / "corpus.jsonl", lines)
    _write_lines(root / "queries.jsonl", [json.dumps({"_id": "q1", "text": "query"})])
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_beir_folder_and_file(tmp_path: Path, gz: bool) -> None:
    folder = _beir_folder(tmp_path / "ds", gz=gz)
    expected = [
        Document("d1", "Title one Body one.", {"title": "Title one"}),
        Document("d2", "Body two.", {"title": ""}),
    ]
    assert list(load_beir_corpus(folder)) == expected
    corpus_file = folder / ("corpus.jsonl.gz" if gz else "corpus.jsonl")
    assert list(load_beir_corpus(corpus_file)) == expected
    assert list(load_beir_corpus(str(corpus_file))) == expected


def test_beir_folder_without_corpus(tmp_path: Path) -> None:
    error = _only_error(list(load_beir_corpus(tmp_path)))
    assert error.source == str(tmp_path)
    assert "corpus.jsonl" in error.reason


def test_beir_real_scifact_corpus(shared_data: Path) -> None:
    folder = shared_data / "scifact"
    records = list(load_beir_corpus(folder))
    assert len(records) == 5183
    assert _errors(records) == []
    ids = [r.id for r in _docs(records)]
    assert len(set(ids)) == 5183
    first = records[0]
    assert isinstance(first, Document)
    assert first.id == "4983"
    title = "Microstructural development of human newborn cerebral white matter assessed in vivo by"
    assert first.metadata["title"].startswith(title)
    assert first.text.startswith(first.metadata["title"] + " Alterations of the architecture")
    # every document is title + " " + body when it has a title
    for doc in _docs(records)[:200]:
        if doc.metadata.get("title"):
            assert doc.text.startswith(doc.metadata["title"] + " ")


# --------------------------------------------------------------------------------------------
# iter_documents dispatch
# --------------------------------------------------------------------------------------------


def test_iter_documents_beir_folder(tmp_path: Path) -> None:
    folder = _beir_folder(tmp_path / "ds")
    (folder / "readme.txt").write_text("ignored in a BEIR folder", encoding="utf-8")
    docs = list(iter_documents([folder]))
    assert [d.id for d in _docs(docs)] == ["d1", "d2"]  # title joined, queries and txt ignored
    assert docs[0] == Document("d1", "Title one Body one.", {"title": "Title one"})


def test_iter_documents_gz_beir_folder(tmp_path: Path) -> None:
    folder = _beir_folder(tmp_path / "ds", gz=True)
    assert [d.id for d in _docs(list(iter_documents([folder])))] == ["d1", "d2"]


def test_iter_documents_plain_folder_reads_text_files_then_jsonl(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    (tmp_path / "notes" / "more.jsonl").write_text(
        json.dumps({"id": "k", "title": "K", "text": "nested jsonl"}) + "\n", encoding="utf-8"
    )
    records = list(iter_documents([tmp_path]))
    assert _errors(records) == []
    assert [d.id for d in _docs(records)] == [
        *(
            _folder_id(tmp_path, rel)
            for rel in ("a.md", "b.txt", "notes/c.rst", "notes/deep/d.markdown", "notes/e.MD")
        ),
        "j",  # JSONL ids come from the records
        "k",
    ]
    # plain JSONL (not corpus.*) is not title-joined
    assert _docs(records)[-1] == Document("k", "nested jsonl", {"title": "K"})


def test_iter_documents_files_and_missing_paths(tmp_path: Path) -> None:
    jsonl = _write_lines(
        tmp_path / "x.jsonl", [json.dumps({"id": "x", "title": "T", "text": "body"})]
    )
    corpus = _write_lines(
        tmp_path / "corpus.jsonl", [json.dumps({"_id": "c", "title": "T", "text": "body"})]
    )
    text = tmp_path / "note.txt"
    text.write_text("a note", encoding="utf-8")
    missing = tmp_path / "nope"
    records = list(iter_documents([jsonl, str(corpus), text, missing]))
    assert records[0] == Document("x", "body", {"title": "T"})
    assert records[1] == Document("c", "T body", {"title": "T"})  # corpus.* file → BEIR joining
    assert records[2] == Document(
        (tmp_path / "note.txt").resolve().as_posix(), "a note", {"source": "note.txt"}
    )
    error = records[3]
    assert isinstance(error, InvalidRecordError)
    assert error.source == str(missing)
    assert "no such file" in error.reason
    assert len(records) == 4


def test_iter_documents_single_file_id_is_its_resolved_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real.txt"
    real.write_text("hello", encoding="utf-8")
    (tmp_path / "alias.txt").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    docs = _docs(list(iter_documents(["real.txt", str(real), "alias.txt"])))
    assert [d.id for d in docs] == [real.resolve().as_posix()] * 3
    assert [d.metadata["source"] for d in docs] == ["real.txt", "real.txt", "alias.txt"]


def test_iter_documents_empty_input() -> None:
    assert list(iter_documents([])) == []


def test_loaders_stream_lazily(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "d.jsonl", [json.dumps({"id": str(i), "text": "t"}) for i in range(1000)]
    )
    stream = iter_documents([path])
    first = next(stream)
    assert isinstance(first, Document) and first.id == "0"


# --------------------------------------------------------------------------------------------
# Entries a folder walk must report and skip without opening them
# --------------------------------------------------------------------------------------------


def without_blocking(load: Callable[[], T], seconds: float = 30.0) -> T:
    """``load()`` in a daemon thread: a failure, not a hung suite, if it opens a FIFO."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(load())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds}s (a FIFO was opened?)"
    if errors:
        raise errors[0]
    return results[0]


def make_unsafe_entries(root: Path) -> dict[str, str]:
    """Fill ``root`` with entries to skip; returns each one's reported source → reason part.

    Symlinks leaving the root (to a file, to a folder, by a relative path, through another
    link, to a JSONL file), dangling and looping symlinks, FIFOs (text and JSONL names, and a
    link to one), a socket, a character device, and names that are not valid UTF-8 (a file, a
    JSONL file and a folder holding a text file). Targets outside the root go in its parent.
    """
    outside = root.parent
    (outside / "secret.txt").write_text("outside secret", encoding="utf-8")
    (outside / "secret.jsonl").write_text(
        json.dumps({"id": "leaked", "text": "outside record"}) + "\n", encoding="utf-8"
    )
    (outside / "elsewhere").mkdir()
    (outside / "elsewhere" / "x.md").write_text("outside folder", encoding="utf-8")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "relative-leak.md").symlink_to("../secret.txt")
    (root / "hop.txt").symlink_to("leak.txt")
    (root / "leak.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "elsewhere").symlink_to(outside / "elsewhere")
    (root / "dangling.txt").symlink_to(root / "nowhere.txt")
    (root / "loop.md").symlink_to("loop.md")
    os.mkfifo(root / "pipe.txt")
    os.mkfifo(root / "pipe.jsonl")
    os.mkfifo(root / "pipe.bin")  # not a wanted suffix: neither read nor reported
    (root / "to-pipe.txt").symlink_to("pipe.txt")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock.md"))
    server.close()  # the socket file stays
    os.mknod(root / "null.txt", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    raw = os.fsencode(root)
    for name in (b"bad\xff.txt", b"bad\xfe.jsonl", b"dir\xfe/inner.md"):
        if b"/" in name:
            os.mkdir(raw + b"/" + name.split(b"/")[0])
        fd = os.open(raw + b"/" + name, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, json.dumps({"id": "bad-name", "text": "hidden"}).encode())
        os.close(fd)
    outside_reason = "symlink points outside the ingest root"
    return {
        **{
            str(root / name): outside_reason
            for name in ("leak.txt", "relative-leak.md", "hop.txt", "leak.jsonl", "elsewhere")
        },
        str(root / "dangling.txt"): "dangling symlink",
        str(root / "loop.md"): "unresolvable symlink",
        str(root / "pipe.txt"): "FIFO",
        str(root / "pipe.jsonl"): "FIFO",
        str(root / "to-pipe.txt"): "FIFO",
        str(root / "sock.md"): "socket",
        str(root / "null.txt"): "character device",
        f"{root}/bad\\udcff.txt": "not valid UTF-8",
        f"{root}/bad\\udcfe.jsonl": "not valid UTF-8",
        f"{root}/dir\\udcfe/inner.md": "not valid UTF-8",
    }


@LINUX_ONLY
def test_folder_walk_reports_unsafe_entries_and_never_opens_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "good.md").write_text("# Good\ninside", encoding="utf-8")
    (root / "good.jsonl").write_text(
        json.dumps({"id": "ok", "text": "inside record"}) + "\n", encoding="utf-8"
    )
    expected = make_unsafe_entries(root)
    text_only = {k: v for k, v in expected.items() if not k.endswith(".jsonl")}
    good_md = _folder_id(root, "good.md")
    for records, wanted, ids in (
        (without_blocking(lambda: list(load_text_folder(root))), text_only, [good_md]),
        (without_blocking(lambda: list(iter_documents([root]))), expected, [good_md, "ok"]),
    ):
        assert [d.id for d in _docs(records)] == ids  # nothing from outside or unsafe entries
        reported = {e.source: e for e in _errors(records)}
        assert set(reported) == set(wanted)
        for source, reason in wanted.items():
            error = reported[source]
            assert reason in error.reason and "skipped" in error.reason, error
            assert error.location == ""
            # printable and JSON-dumpable as strict UTF-8, however odd the name
            json.dumps(str(error), ensure_ascii=False).encode("utf-8")


def test_symlink_error_names_the_link_and_its_target(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.txt").write_text("outside", encoding="utf-8")
    (tmp_path / "root" / "leak.txt").symlink_to("../secret.txt")
    error = _only_error(list(load_text_folder(tmp_path / "root")))
    assert str(error) == (
        f"{tmp_path / 'root' / 'leak.txt'}: symlink points outside the ingest root"
        f" ({(tmp_path / 'secret.txt').resolve()}); skipped"
    )


def test_fifos_given_directly_are_reported_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jsonl")
    os.mkfifo(tmp_path / "pipe.txt")
    direct = without_blocking(lambda: list(load_jsonl(tmp_path / "pipe.jsonl")))
    assert "cannot open: a FIFO (named pipe), not a regular file" in _only_error(direct).reason
    records = without_blocking(
        lambda: list(iter_documents([tmp_path / "pipe.jsonl", tmp_path / "pipe.txt"]))
    )
    assert [(e.source, "FIFO" in e.reason) for e in _errors(records)] == [
        (str(tmp_path / "pipe.jsonl"), True),
        (str(tmp_path / "pipe.txt"), True),
    ]
    assert len(records) == 2


@LINUX_ONLY
def test_undecodable_name_given_directly_is_reported(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/bad\xff.txt"
    fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"hello")
    os.close(fd)
    error = _only_error(list(iter_documents([os.fsdecode(name)])))
    assert error.source == f"{tmp_path}/bad\\udcff.txt"
    assert "not valid UTF-8" in error.reason
    str(error).encode("utf-8")
