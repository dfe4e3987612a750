"""Transparent huge pages for the memory hnswlib allocates (Linux; a no-op elsewhere).

hnswlib keeps every element's vector and level-0 links in one ``malloc``'d block (N x 1,676
bytes at 384-d and M 16) that each insert and each search reads at random. With 4 KiB pages a
1.6 GiB block spans ~400,000 pages, far past the TLB's reach: on this project's 2-core VM a
random read in 1.7 GiB measured 490 ns with 4 KiB pages and 297 ns with 2 MiB ones
(BENCHMARKS.md, "Store at scale"). Where the kernel's THP mode is ``madvise`` (Debian's and
Ubuntu's default) no huge page is used unless the memory is advised, and hnswlib has no allocator
hook. So the store notes the process's anonymous mappings before an hnswlib call that allocates
(``init_index``, ``resize_index``, ``load_index``), and advises the large ones the call created:
``MADV_HUGEPAGE`` for the pages still to be touched, and, where asked, ``MADV_COLLAPSE``
(Linux 6.1+) for those already written (a resize moves them). Collapsing costs ~2.5-3.5 s per
GiB at once (3.95-6 s for a 1M-point graph here) and pays back within two 10k-point batches
(~25% faster each at 1M), so a resize collapses; a load only advises, and the kernel's
khugepaged collapses the loaded graph in the background (slowly: 16 MiB per 10 s by default).
Both are advice: a kernel that refuses them leaves the memory as it was, and nothing but speed
depends on them. Collapsing never populates untouched pages (measured: RSS unchanged on a
half-written 1 GiB block).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["anonymous_ranges", "huge_pages", "new_ranges"]

logger = logging.getLogger(__name__)

#: Only mappings at least this large are advised (bytes; default 64 MiB, ~40,000 elements at
#: 384-d): below it the TLB covers the block anyway, and smaller mappings made by other threads
#: during the call are left alone.
MIN_BYTES = 64 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

Range = tuple[int, int]


def _thp_available() -> bool:
    """Linux with THP ``always`` or ``madvise`` (not ``never``)."""
    if sys.platform != "linux":
        return False
    try:
        mode = _THP_MODE.read_text(encoding="ascii")
    except OSError:
        return False
    return "[never]" not in mode


def anonymous_ranges(maps: str | None = None) -> list[Range]:
    """The process's private, writable, anonymous mappings (the heap included) as ``[start,
    end)`` byte addresses, read from ``/proc/self/maps`` (or the given text of one)."""
    if maps is None:
        maps = Path("/proc/self/maps").read_text(encoding="ascii", errors="replace")
    ranges = []
    for line in maps.splitlines():
        fields = line.split()
        # address perms offset dev inode [path]: anonymous = inode 0 and no path, or the brk
        # heap (where malloc puts blocks under its mmap threshold, which grows up to 32 MiB).
        if len(fields) < 5 or fields[4] != "0" or fields[5:] not in ([], ["[heap]"]):
            continue
        if not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        start, end = fields[0].split("-")
        ranges.append((int(start, 16), int(end, 16)))
    return ranges


def new_ranges(before: Sequence[Range], after: Sequence[Range]) -> list[Range]:
    """Address ranges mapped in ``after`` and not in ``before`` (both sorted, non-overlapping):
    the memory a call created, whether the kernel merged it with a neighbour or not."""
    out: list[Range] = []
    i = 0
    for start, end in after:
        cursor = start
        while i < len(before) and before[i][1] <= cursor:
            i += 1
        j = i
        while j < len(before) and before[j][0] < end:
            if before[j][0] > cursor:
                out.append((cursor, before[j][0]))
            cursor = max(cursor, before[j][1])
            j += 1
        if cursor < end:
            out.append((cursor, end))
    return out


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library the process already runs on (its symbols, ``madvise`` among them), set up
    once: every store open and graph resize passes through :func:`huge_pages`."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return libc


def _advise(libc: ctypes.CDLL, ranges: Sequence[Range], collapse: bool) -> None:
    for start, end in ranges:
        # Huge pages sit at 2 MiB-aligned addresses: advise the aligned inside of the range.
        first = -(-start // _HUGE_PAGE) * _HUGE_PAGE
        last = end // _HUGE_PAGE * _HUGE_PAGE
        if last - first < MIN_BYTES:
            continue
        address, length = ctypes.c_void_p(first), last - first
        if libc.madvise(address, length, _MADV_HUGEPAGE) != 0:
            logger.debug("MADV_HUGEPAGE refused (errno %d)", ctypes.get_errno())
            continue
        if collapse:
            # Best effort: untouched 2 MiB stretches and a busy kernel fail this, harmlessly.
            libc.madvise(address, length, _MADV_COLLAPSE)


@contextmanager
def huge_pages(*, collapse: bool = True) -> Iterator[None]:
    """Advise huge pages for the large anonymous memory allocated inside the ``with`` block.

    Args:
        collapse: Also move the pages already written into huge pages now (default ``True``);
            ``False`` leaves that to khugepaged, for memory a caller may not use for long (a
            graph loaded to answer one search).

    Mappings another thread creates meanwhile may be advised too; advice changes only speed.
    """
    libc = _libc() if _thp_available() else None
    if libc is None:
        yield
        return
    before = anonymous_ranges()
    yield
    _advise(libc, new_ranges(before, anonymous_ranges()), collapse)
