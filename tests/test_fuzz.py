"""Hostile input cannot break the store: fuzz the loaders and the chunker.

Whatever bytes sit in the input files, the loaders never raise: each item they yield is either
a well-formed :class:`Document` (non-empty str id and text, UTF-8-clean, JSON-serializable
metadata, chunkable) or an :class:`InvalidRecordError` with a non-empty reason that names the
file it came from. The chunker never raises on any text and keeps its offset invariants.

Every crash fuzzing found (lone surrogates, NaN literals, huge integers, nesting the stores
could not write back, corrupt gzip streams, undecodable file names) is fixed in the loaders and
kept here as an ``@example`` regression of its own test.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sbert_retrieval.chunking import TokenChunker
from sbert_retrieval.documents import (
    TEXT_SUFFIXES,
    Document,
    LoadedRecord,
    iter_documents,
    load_jsonl,
    load_text_folder,
)
from sbert_retrieval.errors import InvalidRecordError

# CI runs 100 examples per test; benchmarks/fuzz_loaders.py raises it for a long run.
FUZZ = settings(
    max_examples=int(os.environ.get("SBERT_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------
# invariants
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _utf8_clean(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_record(record: object, sources: Collection[str]) -> None:
    """One loader item is a well-formed Document or a well-formed InvalidRecordError."""
    if isinstance(record, Document):
        assert isinstance(record.id, str) and record.id.strip()
        assert isinstance(record.text, str) and record.text.strip()
        assert isinstance(record.metadata, Mapping)
        assert _utf8_clean(record.id), f"id {record.id!r} is not valid Unicode"
        assert _utf8_clean(record.text), "text is not valid Unicode"
        # what the stores do with a payload: strict JSON, written as UTF-8
        payload = json.dumps(
            {"doc_id": record.id, "metadata": dict(record.metadata)},
            allow_nan=False,
            ensure_ascii=False,
        )
        assert _utf8_clean(payload), "metadata is not valid Unicode"
        return
    assert isinstance(record, InvalidRecordError), f"unexpected item {record!r}"
    assert isinstance(record.reason, str) and record.reason.strip()
    assert isinstance(record.location, str)
    assert record.source in sources, f"{record.source!r} not in {sorted(sources)}"
    assert _utf8_clean(str(record)), "the error message cannot be printed"


def check_chunkable(tokenizer: Any, docs: list[Document], chunk_tokens: int = 16) -> None:
    """The chunker accepts every loaded document and keeps offsets exact."""
    chunker = TokenChunker(tokenizer, chunk_tokens=chunk_tokens, overlap=chunk_tokens // 4)
    for doc, chunks in zip(docs, chunker.chunk_many(docs), strict=True):
        for index, chunk in enumerate(chunks):
            assert chunk.index == index and chunk.doc_id == doc.id
            assert doc.text[chunk.start : chunk.end] == chunk.text
            assert 1 <= chunk.token_count <= chunk_tokens


def _split(records: Iterable[LoadedRecord]) -> tuple[list[Document], list[InvalidRecordError]]:
    docs: list[Document] = []
    errors: list[InvalidRecordError] = []
    for record in records:
        (docs if isinstance(record, Document) else errors).append(record)  # type: ignore[arg-type]
    return docs, errors


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3",  # truncated two-byte sequence
    b"\xc0\xaf",  # overlong
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80abc",
    b"caf\xe9",  # Latin-1
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_texts = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", " ", "\n\t", "\x00", "ok", "\u200b", "😀 emoji", "e\u0301"]),
)
records = st.builds(
    lambda base, extra: {**extra, **base},
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(max_size=10), st.integers(), json_values),
            "_id": st.one_of(st.text(max_size=10), st.integers(), json_values),
            "text": st.one_of(_texts, json_values),
            "title": st.one_of(_texts, json_values),
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)


@st.composite
def huge_lines(draw: st.DrawFn) -> bytes:
    """Long or deeply nested lines (long digit runs excluded: see the big-integer regression)."""
    n = draw(st.integers(1_000, 50_000))
    kind = draw(
        st.sampled_from(
            ["open_list", "open_object", "closed_list", "doc", "string", "spaces", "repeat"]
        )
    )
    if kind == "open_list":
        return b"[" * n
    if kind == "open_object":
        return b'{"a":' * (n // 5)
    if kind == "closed_list":
        return b"[" * n + b"]" * n
    if kind == "doc":
        return json.dumps({"id": "big", "text": "word " * (n // 5)}).encode()
    if kind == "string":
        return b'"' + b"a" * n + b'"'
    if kind == "spaces":
        return b" " * n + b'{"id": "s", "text": "padded"}'
    segment = draw(st.binary(min_size=1, max_size=20).filter(lambda b: b.strip(b"0123456789")))
    return segment * (n // len(segment))


@st.composite
def deep_records(draw: st.DrawFn) -> bytes:
    """A valid record with nested metadata, shallow enough to serialize anywhere."""
    depth = draw(st.integers(1, 200))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"k":', b"}")]))
    return b'{"id": "deep", "text": "t", "m": ' + opener * depth + b"1" + closer * depth + b"}"


lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),
    records.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    st.sampled_from(INVALID_UTF8),
    st.sampled_from([b"", b" ", b"\x00", b"\x00" * 10, b"{", b"}", b"null", b"\xef\xbb\xbf{}"]),
    huge_lines(),
    deep_records(),
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    chosen = draw(st.lists(lines, max_size=12))
    separator = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    data = separator.join(chosen)
    if draw(st.booleans()):
        data += separator
    return data


def _write(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# load_jsonl
# --------------------------------------------------------------------------------------------


@FUZZ
@given(data=jsonl_files())
@example(data=b"[" * 100_000 + b"\n" + b'{"id": 1, "text": "after"}')
@example(data=b'{"id": 1, "text": "a"}\n' + b"\xff\xfe" + b"\n" + b'{"id": 2, "text": "b"}')
@example(data=b"\x00\x00\n\x00{}\n")
@example(data=b'{"id": "x", "text": "a\\u0000b"}')
def test_fuzz_load_jsonl(tokenizer: Any, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "fuzz.jsonl", data)
        items = list(load_jsonl(path))
        items_joined = list(load_jsonl(path, join_title=True))
    for item in [*items, *items_joined]:
        check_record(item, {str(path)})
    assert len(items) == len(items_joined)
    assert len(items) <= max(1, data.count(b"\n") + data.count(b"\r") + 1)
    numbers = [int(e.location.removeprefix("line ")) for e in _split(items)[1]]
    assert numbers == sorted(set(numbers)), "one error per line, in order"
    docs = _split(items)[0] + _split(items_joined)[0]
    check_chunkable(tokenizer, [d for d in docs if len(d.text) <= 20_000])


@FUZZ
@given(
    data=jsonl_files(), flips=st.lists(st.tuples(st.integers(0), st.integers(1, 255)), max_size=6)
)
def test_fuzz_load_jsonl_gzip_valid_container(data: bytes, flips: list[tuple[int, int]]) -> None:
    """Well-formed gzip around hostile lines, possibly truncated (truncation is an OSError)."""
    compressed = gzip.compress(data)
    if flips:  # cut the stream instead of corrupting it (corruption: see the zlib regression)
        compressed = compressed[: flips[0][0] % (len(compressed) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "fuzz.jsonl.gz", compressed)
        for item in load_jsonl(path):
            check_record(item, {str(path)})


@FUZZ
@given(data=st.binary(max_size=500))
@example(data=b"\x1f\x8b")  # a gzip magic number and nothing else
@example(data=b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # header only
def test_fuzz_load_jsonl_gzip_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "fuzz.jsonl.gz", data)
        for item in load_jsonl(path):
            check_record(item, {str(path)})


def _corrupt(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    """gzip ``data``, then XOR bytes after the 10-byte header."""
    buffer = bytearray(gzip.compress(data))
    for position, mask in flips:
        buffer[10 + position % max(1, len(buffer) - 10)] ^= mask
    return bytes(buffer)


_VALID_GZIP = gzip.compress(
    b"".join(json.dumps({"id": i, "text": "x" * 50}).encode() + b"\n" for i in range(200))
)
_CORRUPT_GZIP = _VALID_GZIP[:20] + bytes(b ^ 0x55 for b in _VALID_GZIP[20:60]) + _VALID_GZIP[60:]
_flips = st.lists(st.tuples(st.integers(0), st.integers(1, 255)), min_size=1, max_size=8)


@FUZZ
@given(compressed=st.builds(_corrupt, jsonl_files(), _flips))
@example(compressed=_CORRUPT_GZIP)
def test_fuzz_load_jsonl_gzip_corrupt_stream(compressed: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "fuzz.jsonl.gz", compressed)
        for item in load_jsonl(path):
            check_record(item, {str(path)})


@FUZZ
@given(digits=st.integers(4_301, 20_000), inside_record=st.booleans())
@example(digits=5_000, inside_record=True)
def test_fuzz_load_jsonl_huge_integer(digits: int, inside_record: bool) -> None:
    number = b"9" * digits
    line = b'{"id": "a", "text": "x", "n": ' + number + b"}" if inside_record else number
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "fuzz.jsonl", line + b"\n" + b'{"id": "b", "text": "y"}\n')
        for item in load_jsonl(path):
            check_record(item, {str(path)})


@FUZZ
@given(
    surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    field=st.sampled_from(["id", "text", "title", "meta"]),
)
@example(surrogate="\udc00", field="text")
def test_fuzz_load_jsonl_lone_surrogates(tokenizer: Any, surrogate: str, field: str) -> None:
    record: dict[str, Any] = {"id": "a", "text": "some text"}
    record[field] = f"x{surrogate}y"
    line = json.dumps(record)  # ensure_ascii: the surrogate is written as a \\udXXX escape
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "fuzz.jsonl", line.encode("ascii") + b"\n")
        items = list(load_jsonl(path))
    for item in items:
        check_record(item, {str(path)})
    check_chunkable(tokenizer, _split(items)[0])


@FUZZ
@given(value=st.sampled_from(["NaN", "Infinity", "-Infinity", "[1, NaN]", '{"x": Infinity}']))
@example(value="NaN")
def test_fuzz_load_jsonl_non_finite_numbers(value: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(
            Path(tmp), "fuzz.jsonl", f'{{"id": "a", "text": "x", "m": {value}}}\n'.encode()
        )
        items = list(load_jsonl(path))
    for item in items:
        check_record(item, {str(path)})


def _call_at_depth(depth: int, func: Any) -> Any:
    return func() if depth <= 0 else _call_at_depth(depth - 1, func)


def test_load_jsonl_metadata_too_deep_for_the_store() -> None:
    depth = 850  # json.loads accepts ~994 levels from the top of the stack
    line = b'{"id": "deep", "text": "t", "m": ' + b"[" * depth + b"]" * depth + b"}"
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "deep.jsonl", line + b"\n")
        items = list(load_jsonl(path))
    for item in items:
        check_record(item, {str(path)})
        if isinstance(item, Document):
            # the store serializes payloads below a few more frames than the loader parsed them
            _call_at_depth(200, lambda item=item: json.dumps(dict(item.metadata)))


# --------------------------------------------------------------------------------------------
# text folders
# --------------------------------------------------------------------------------------------

_name_chars = st.sampled_from([*"abcXYZ019-_ .é漢ü", "😀"])
_component = st.text(_name_chars, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_suffix = st.sampled_from([*TEXT_SUFFIXES, ".MD", ".TXT", ".jsonl", ".bin", ""])
_rel_names = st.builds(
    lambda parts, suffix: "/".join(parts) + suffix,
    st.lists(_component, min_size=1, max_size=3),
    _suffix,
)
file_contents = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    st.text(max_size=100).map(lambda s: b"\xef\xbb\xbf" + s.encode("utf-8")),
    st.text(max_size=100).map(lambda s: ("# " + s + "\nbody").encode("utf-8")),
    st.builds(lambda a, bad: a.encode() + bad, st.text(max_size=50), st.sampled_from(INVALID_UTF8)),
    st.builds(lambda a: a.encode() + b"\x00", st.text(max_size=50)),
    st.sampled_from([b"", b" \n", b"\x00", b"\xef\xbb\xbf"]),
)


def _make_files(root: Path, files: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """Create what can be created (a name that clashes with a folder is skipped)."""
    written: dict[str, bytes] = {}
    for rel, data in files:
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            path.write_bytes(data)
        except OSError:
            continue
        written[rel] = data
    return written


def _is_text(rel: str) -> bool:
    return rel.lower().endswith(TEXT_SUFFIXES)


@FUZZ
@given(files=st.lists(st.tuples(_rel_names, file_contents), max_size=8))
@example(
    files=[("a.txt", b"\xff\xfe"), ("b.md", b"# T\x00"), ("c.rst", b""), ("d.txt", b"\xef\xbb\xbf")]
)
def test_fuzz_load_text_folder(files: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        written = _make_files(root, files)
        items = list(load_text_folder(root))
        expected = sorted(root / rel for rel in written if _is_text(rel))
    assert len(items) == len(expected)
    for item, path in zip(items, expected, strict=True):
        rel = path.relative_to(root).as_posix()
        check_record(item, {str(path)})
        if isinstance(item, Document):
            assert item.id == f"{root.resolve().as_posix()}/{rel}"
            assert item.metadata["source"] == rel
            assert item.text == written[rel].decode("utf-8-sig")
            assert "\x00" not in item.text
            if "title" in item.metadata:
                assert path.suffix.lower() in (".md", ".markdown")
        else:
            assert item.source == str(path)


def test_text_folder_symlink_loops_and_special_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "sub" / "up").symlink_to("..")
    (tmp_path / "self").symlink_to(tmp_path)
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere")
    (tmp_path / "folder.txt").mkdir()
    os.mkfifo(tmp_path / "pipe.txt")
    items = list(load_text_folder(tmp_path))
    a_id = f"{tmp_path.resolve().as_posix()}/sub/a.txt"
    assert [(d.id, d.text) for d in items if isinstance(d, Document)] == [(a_id, "hello")]
    # The dangling link and the FIFO are named in the report, never opened.
    failures = sorted(Path(e.source).name for e in items if isinstance(e, InvalidRecordError))
    assert failures == ["dangling.txt", "pipe.txt"]
    for item in iter_documents([tmp_path]):
        if isinstance(item, Document):
            check_record(item, {str(tmp_path / "sub" / "a.txt")})


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")
@FUZZ
@given(bad=st.sampled_from(INVALID_UTF8))
@example(bad=b"caf\xe9")
def test_fuzz_text_folder_undecodable_file_names(bad: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        name = os.fsencode(tmp) + b"/" + bad.replace(b"/", b"_") + b".txt"
        with open(name, "wb") as handle:
            handle.write(b"hello")
        items = list(load_text_folder(tmp))
    assert len(items) == 1
    (item,) = items
    sources = {os.fsdecode(name), os.fsdecode(name).encode("utf-8", "backslashreplace").decode()}
    check_record(item, sources)


# --------------------------------------------------------------------------------------------
# iter_documents over mixed inputs
# --------------------------------------------------------------------------------------------


@FUZZ
@given(
    files=st.lists(st.tuples(_rel_names, st.one_of(file_contents, jsonl_files())), max_size=6),
    standalone=st.tuples(
        st.sampled_from(["x.jsonl", "corpus.jsonl", "y.txt", "z.bin", "n.ndjson"]), jsonl_files()
    ),
    beir=st.one_of(st.none(), jsonl_files()),
)
def test_fuzz_iter_documents(
    tokenizer: Any,
    files: list[tuple[str, bytes]],
    standalone: tuple[str, bytes],
    beir: bytes | None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = root / "tree"
        tree.mkdir()
        _make_files(tree, files)
        single = _write(root, *standalone)
        paths: list[Path] = [tree, single, root / "missing"]
        if beir is not None:
            (root / "beir").mkdir()
            _write(root / "beir", "corpus.jsonl", beir)
            paths.append(root / "beir")
        all_files = {str(p) for p in root.rglob("*")} | {str(root / "missing"), str(root / "beir")}
        items = list(iter_documents(paths))
    for item in items:
        check_record(item, all_files)
    errors = _split(items)[1]
    assert any(e.source == str(root / "missing") for e in errors)
    check_chunkable(tokenizer, [d for d in _split(items)[0] if len(d.text) <= 20_000])


# --------------------------------------------------------------------------------------------
# the chunker on any text
# --------------------------------------------------------------------------------------------

_hostile_chars = st.sampled_from(
    [
        "\x00",
        "\x01",
        "\x1b[31m",
        "\x7f",
        "\u0301",
        "\u200b",
        "\u200d",
        "\u202e",  # right-to-left override
        "\ufeff",
        "\ufffd",
        "\U0001f600",
        "👩\u200d👩\u200d👧",
        "\U000e0041",  # tag character
        "漢",
        "ﷺ",  # a ligature that expands under NFKC
        "İ",
        "\n",
        "\t",
        "##",
        "[CLS]",
        "[SEP]",
        "[UNK]",
        "[PAD]",
    ]
)


@st.composite
def hostile_texts(draw: st.DrawFn) -> str:
    base = draw(
        st.one_of(
            st.text(max_size=400),
            st.lists(st.one_of(_hostile_chars, st.text(max_size=5)), max_size=80).map("".join),
        )
    )
    if draw(st.integers(0, 9)) == 0:  # now and then, a huge text
        base = (base or "x") * (draw(st.integers(1_000, 50_000)) // max(1, len(base)))
    return base


@FUZZ
@given(
    text=hostile_texts(),
    chunk_tokens=st.integers(1, 62),
    overlap_seed=st.integers(0, 61),
    align=st.booleans(),
)
@example(text="[CLS] [SEP] [PAD]" * 10, chunk_tokens=1, overlap_seed=0, align=True)
@example(text="a" * 500 + " " + "xqzjvkwpyr" * 9, chunk_tokens=2, overlap_seed=1, align=True)
@example(text="\x00\u200b\u0301 \ufeff", chunk_tokens=5, overlap_seed=3, align=False)
def test_fuzz_chunker(
    tokenizer: Any, text: str, chunk_tokens: int, overlap_seed: int, align: bool
) -> None:
    overlap = overlap_seed % chunk_tokens
    chunker = TokenChunker(
        tokenizer, chunk_tokens=chunk_tokens, overlap=overlap, align_to_words=align
    )
    doc = Document("fuzz", text)
    chunks = chunker.chunk(doc)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    if not offsets:
        assert chunks == []
        return
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == offsets[0][0]
    assert chunks[-1].end == offsets[-1][1]
    assert sum(c.token_count for c in chunks) >= len(offsets)
    assert len(chunks) <= len(offsets)
    for before, after in itertools.pairwise(chunks):
        assert before.start <= after.start and before.end <= after.end
    # every token lies inside some chunk (windows are in order, so one pass suffices)
    k = 0
    for token_start, token_end in offsets:
        while k < len(chunks) and chunks[k].end < token_end:
            k += 1
        assert k < len(chunks), "a token after the last chunk"
        assert any(
            c.start <= token_start and token_end <= c.end for c in chunks[max(0, k - 1) : k + 2]
        )
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert 1 <= chunk.token_count <= chunk_tokens
