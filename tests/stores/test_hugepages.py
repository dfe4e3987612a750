"""Huge-page advice for hnswlib's memory: the range arithmetic against a set model, the parsing
of /proc/self/maps, and (on Linux with THP) that the advice reaches the kernel for the memory an
HnswStore's graph allocates, and for nothing allocated outside the advised calls."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbert_retrieval.stores import HnswStore, _hugepages
from sbert_retrieval.stores._hugepages import anonymous_ranges, huge_pages, new_ranges
from tests.stores.contract import SPEC, brute_force, make_records, unit_vectors


def _disjoint(points: list[int]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent ranges from a list of boundaries."""
    edges = sorted(set(points))
    return [(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2)]


def _addresses(ranges: list[tuple[int, int]]) -> set[int]:
    return {a for start, end in ranges for a in range(start, end)}


@given(st.lists(st.integers(0, 200), max_size=12), st.lists(st.integers(0, 200), max_size=12))
def test_new_ranges_are_exactly_the_addresses_only_after_holds(
    before_edges: list[int], after_edges: list[int]
) -> None:
    before, after = _disjoint(before_edges), _disjoint(after_edges)
    found = new_ranges(before, after)
    assert _addresses(found) == _addresses(after) - _addresses(before)
    assert found == sorted(found) and all(start < end for start, end in found)


def test_new_ranges_hand_cases() -> None:
    assert new_ranges([], [(0, 100)]) == [(0, 100)]
    # Merged with a neighbour that was already there: only the new part.
    assert new_ranges([(0, 40)], [(0, 100)]) == [(40, 100)]
    assert new_ranges([(10, 20), (30, 40)], [(0, 100)]) == [(0, 10), (20, 30), (40, 100)]
    # Moved (a realloc's mremap): the new place only.
    assert new_ranges([(0, 50)], [(100, 150)]) == [(100, 150)]
    assert new_ranges([(0, 50), (60, 70)], [(0, 50), (60, 70)]) == []


def test_anonymous_ranges_keep_private_writable_anonymous_mappings_and_the_heap() -> None:
    maps = "\n".join(
        [
            "55d0a000-55d0b000 r--p 00000000 08:01 1234 /usr/bin/python3",
            "55d0c000-55d0e000 rw-p 00000000 00:00 0 [heap]",
            "7f0000000000-7f0040000000 rw-p 00000000 00:00 0",
            "7f0040000000-7f0040001000 ---p 00000000 00:00 0",
            "7f0050000000-7f0060000000 rw-s 00000000 00:01 77 /dev/zero (deleted)",
            "7f0070000000-7f0070200000 rw-p 00000000 00:00 0 ",
        ]
    )
    assert anonymous_ranges(maps) == [
        (0x55D0C000, 0x55D0E000),
        (0x7F0000000000, 0x7F0040000000),
        (0x7F0070000000, 0x7F0070200000),
    ]


def _thp_usable() -> bool:
    return sys.platform == "linux" and _hugepages._thp_available()


needs_thp = pytest.mark.skipif(
    not _thp_usable(), reason="needs Linux with transparent huge pages not set to never"
)


def _advised_ranges() -> list[tuple[int, int]]:
    """This process's mappings flagged ``hg`` (MADV_HUGEPAGE) in /proc/self/smaps, as sorted
    ``[start, end)`` ranges with neighbours merged."""
    ranges: list[tuple[int, int]] = []
    current = (0, 0)
    for line in Path("/proc/self/smaps").read_text(encoding="ascii", errors="replace").splitlines():
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if "-" in first and not first.endswith(":"):
            start, end = (int(x, 16) for x in first.split("-"))
            current = (start, end)
        elif first == "VmFlags:" and " hg" in f" {line.split(':', 1)[1]}":
            if ranges and ranges[-1][1] == current[0]:
                ranges[-1] = (ranges[-1][0], current[1])
            else:
                ranges.append(current)
    return ranges


def _newly_advised_bytes(before: list[tuple[int, int]]) -> int:
    """Bytes advised now at addresses that were not advised in ``before``: memory advised
    elsewhere and freed meanwhile (a collected numpy array of an earlier test, which numpy
    advises itself from 4 MiB up) cannot hide what the call under test advised."""
    return sum(end - start for start, end in new_ranges(before, _advised_ranges()))


ROOT = Path(__file__).resolve().parents[2]


def _in_fresh_process(probe: str, *args: str) -> None:
    """Run ``probe``, a function of this module, in a new interpreter and fail with its error.

    A long test session leaves large free chunks in the C heap, and glibc serves even a request
    above its mmap threshold from such a chunk: memory already mapped, perhaps advised by an
    earlier test, at addresses that are not new. Only a fresh process can tell whether an
    allocation was advised (a full-suite run failed so, with nothing newly advised).
    """
    code = f"import sys; from tests.stores import test_hugepages as t; t.{probe}(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{probe} failed:\n{result.stderr[-4000:]}"


def _expect_advised(before: list[tuple[int, int]], at_least: int, what: str) -> None:
    found = _newly_advised_bytes(before)
    assert found >= at_least, f"{what}: {found} bytes newly advised, expected >= {at_least}"


def probe_malloc_advice() -> None:
    """Memory malloc'd inside :func:`huge_pages` is advised and memory malloc'd outside is not.

    Through libc's malloc, as hnswlib allocates (numpy advises its own large arrays).
    """
    _hugepages.MIN_BYTES = 4 << 20  # as in a store: only large mappings are advised
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20
    start = _advised_ranges()
    outside = libc.malloc(size)
    assert outside
    ctypes.memset(outside, 1, size)
    try:
        assert _newly_advised_bytes(start) == 0, "memory malloc'd outside huge_pages() is advised"
        with huge_pages():
            inside = libc.malloc(size)
        assert inside
        try:
            _expect_advised(start, size - (4 << 20), "malloc inside huge_pages()")
            ctypes.memset(inside, 2, size)
            assert ctypes.string_at(inside + size - 3, 3) == b"\x02\x02\x02"
        finally:
            libc.free(inside)
    finally:
        libc.free(outside)


def probe_graph_advice(directory: str) -> None:
    """An HnswStore's graph memory is advised when created, resized and loaded (writer, reader).

    8,192-d: 1,024 elements (the initial capacity) take ~34 MB, so the advice threshold is
    lowered to 4 MiB as :func:`probe_malloc_advice` does.
    """
    _hugepages.MIN_BYTES = 4 << 20
    spec = replace(SPEC, dimension=8192)
    vectors = unit_vectors(1100, dim=8192)
    records = make_records(vectors)
    path = Path(directory) / "s"
    # Counted by address: memory freed elsewhere cannot hide what each call advised.
    start = _advised_ranges()
    store = HnswStore(path, spec)
    _expect_advised(start, 24 << 20, "create")
    store.upsert(records)  # past 1,024: resized to 2,048 elements (~67 MB, realloc'd, moved)
    _expect_advised(start, 56 << 20, "resize")
    query = vectors[7]
    hits = [hit.id for hit in store.search(query, 5)[0]]
    assert hits == brute_force(records, query, 5), "search after the resize"
    store.close()
    released = _advised_ranges()
    # Loaded from the snapshot close() wrote, at 1,100 elements' capacity (~36 MB).
    reopened = HnswStore(path, spec)
    _expect_advised(released, 24 << 20, "reopen")
    assert [hit.id for hit in reopened.search(query, 5)[0]] == hits, "search after reopening"
    before_reader = _advised_ranges()
    reader = HnswStore(path, spec, read_only=True)
    _expect_advised(before_reader, 24 << 20, "read-only open")
    assert [hit.id for hit in reader.search(query, 5)[0]] == hits, "search in the reader"
    reader.close()
    reopened.close()


@needs_thp
def test_memory_allocated_inside_is_advised_and_outside_is_not() -> None:
    _in_fresh_process("probe_malloc_advice")


@needs_thp
def test_hnsw_graph_memory_is_advised_on_create_resize_and_reopen(tmp_path: Path) -> None:
    _in_fresh_process("probe_graph_advice", str(tmp_path))
