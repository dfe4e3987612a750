"""An int8 copy of the vectors, for exact search over the points a filter selects.

hnswlib answers a filter through a callback per visited node and keeps its vectors where only
``get_items`` (~80 µs per vector) reaches them, so neither a graph walk with a selective filter
nor an exact scan over the matching points is fast. This copy is: 1 byte per dimension plus a
4-byte scale per point (a quarter of the float32 vectors), scanned with numpy, and its best
candidates are rescored with the exact float32 vectors. Qdrant's scalar quantization with
``rescore`` works the same way.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["Int8Codes"]

_INITIAL_ROWS = 1024
_BLOCK_BITS = 16
_BLOCK_ROWS = 1 << _BLOCK_BITS  # codes live in blocks of 65,536 rows (24 MiB at 384-d)
_SCAN_ROWS = 16_384  # rows converted to float32 at a time: 24 MiB at 384-d


class Int8Codes:
    """Per-vector scaled int8 codes, one row per live label, rows in label order.

    A row holds ``round(v * 127 / max|v|)`` and the scale ``max|v| / 127``, so
    ``codes @ q * scale`` approximates ``v @ q`` with a relative error of about 0.4% per
    component. Labels must be added in increasing order (the store's labels always are), which
    keeps the rows sorted and a label's row one binary search away. Deleted rows are dropped
    when they reach half the rows (amortized O(1) per delete). The codes are kept in fixed
    blocks of 65,536 rows, so growing never copies them (a doubling array would hold two copies
    at once: 1.2 GiB at 1M points of 384-d); saving and loading stream them block by block.

    With ``spill`` the blocks live in a file there instead of the heap (an unlinked temporary
    file: nothing is left behind, even after a crash). Codes are written with ``pwrite`` and
    read through a read-only memory map, so the page cache holds them and the process maps only
    the pages a filtered search reads: a bulk load never holds them in its own memory (366 MiB
    at 1M points of 384-d), and under memory pressure the kernel can drop them and read them
    back. Saving and compacting read whole blocks with ``pread``, never through the map.

    Args:
        dimension: Components per vector.
        spill: Directory for the block file (default: the heap).

    Raises:
        OSError: ``spill`` cannot hold a temporary file.

    Thread safety: none of its own; the store calls writes under its exclusive lock and reads
    under its shared lock.
    """

    def __init__(self, dimension: int, spill: Path | None = None) -> None:
        self.dimension = dimension
        self._blocks: list[np.ndarray] = []
        self._maps: list[mmap.mmap] = []
        self._file: IO[bytes] | None = None
        if spill is not None:
            # Closed by close(); the file has no name, so the kernel frees it with the process.
            self._file = tempfile.TemporaryFile(  # noqa: SIM115
                dir=spill, prefix="codes-", suffix=".tmp"
            )
        self._scales = np.zeros(_INITIAL_ROWS, dtype=np.float32)
        self._labels = np.zeros(_INITIAL_ROWS, dtype=np.int64)
        self._live = np.zeros(_INITIAL_ROWS, dtype=bool)
        self._size = 0
        self._dead = 0

    def __len__(self) -> int:
        """Live rows."""
        return self._size - self._dead

    @property
    def nbytes(self) -> int:
        """Bytes held (allocated capacity, not just the live rows; spilled blocks count, as
        file bytes)."""
        blocks = sum(block.nbytes for block in self._blocks)
        return int(blocks + self._scales.nbytes + self._labels.nbytes + self._live.nbytes)

    @property
    def spilled(self) -> bool:
        """Whether the codes live in a file (``spill``) rather than the heap."""
        return self._file is not None

    def close(self) -> None:
        """Release the block file and its maps (spilled codes only; idempotent). The codes
        are unusable afterwards."""
        self._blocks.clear()
        self._unmap_from(0)
        if self._file is not None:
            self._file.close()

    def _unmap_from(self, block: int) -> None:
        """Close the maps of block ``block`` and every one after it."""
        for view in self._maps[block:]:
            # A caller may still hold a view of a block (BufferError): the map then goes
            # when that view does.
            with contextlib.suppress(BufferError):
                view.close()
        del self._maps[block:]

    @property
    def last_label(self) -> int:
        """The largest label ever added and still held as a row (0 when empty)."""
        return int(self._labels[self._size - 1]) if self._size else 0

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Append ``vectors`` (float32, as the index compares them) under increasing ``labels``.

        Raises:
            ValueError: A label is not above every label already added.
        """
        labels = np.asarray(labels, dtype=np.int64)
        if not len(labels):
            return
        if not self._continues(labels):
            raise ValueError("int8 codes take labels in increasing order only")
        vectors = np.asarray(vectors, dtype=np.float32)
        peaks = np.abs(vectors).max(axis=1)
        scales = np.where(peaks > 0, peaks / 127.0, 1.0).astype(np.float32)
        codes = np.rint(vectors / scales[:, None]).clip(-127, 127).astype(np.int8)
        self._append(labels, scales, codes)

    def _continues(self, labels: np.ndarray) -> bool:
        """Whether ``labels`` increase and follow every label held."""
        return not ((self._size and labels[0] <= self.last_label) or np.any(np.diff(labels) <= 0))

    def _append(self, labels: np.ndarray, scales: np.ndarray, codes: np.ndarray) -> None:
        needed = self._size + len(labels)
        if needed > len(self._labels):
            self._grow(max(needed, 2 * len(self._labels)))
        # The codes first: a failed write (a full disk under ``spill``) changes nothing.
        self._write_codes(self._size, codes)
        part = slice(self._size, needed)
        self._scales[part], self._labels[part] = scales, labels
        self._live[part] = True
        self._size = needed

    def discard_from(self, label: int) -> None:
        """Forget every row of ``label`` and above (undoes an :meth:`add` whose caller failed
        afterwards)."""
        if not self._size:
            return
        keep = int(np.searchsorted(self._labels[: self._size], label))
        self._dead -= int(np.count_nonzero(~self._live[keep : self._size]))
        self._live[keep : self._size] = False
        self._size = keep

    def _write_codes(self, start: int, codes: np.ndarray) -> None:
        done = 0
        while done < len(codes):
            row = start + done
            block, offset = row >> _BLOCK_BITS, row & (_BLOCK_ROWS - 1)
            while block >= len(self._blocks):
                self._new_block()
            count = min(len(codes) - done, _BLOCK_ROWS - offset)
            if self._file is None:
                self._blocks[block][offset : offset + count] = codes[done : done + count]
            else:
                data = np.ascontiguousarray(codes[done : done + count]).tobytes()
                position = (block * _BLOCK_ROWS + offset) * self.dimension
                written = os.pwrite(self._file.fileno(), data, position)
                if written != len(data):
                    raise OSError(f"wrote {written} of {len(data)} bytes of int8 codes")
            done += count

    def _new_block(self) -> None:
        if self._file is None:
            self._blocks.append(np.empty((_BLOCK_ROWS, self.dimension), dtype=np.int8))
            return
        size = _BLOCK_ROWS * self.dimension
        start = len(self._blocks) * size
        fd = self._file.fileno()
        if os.fstat(fd).st_size < start + size:
            os.ftruncate(fd, start + size)
        # A shared read-only map: it sees every pwrite at once, and only the pages read are
        # ever mapped into this process.
        view = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ, offset=start)
        self._maps.append(view)
        block = np.frombuffer(view, dtype=np.int8).reshape(_BLOCK_ROWS, self.dimension)
        self._blocks.append(block)

    def _read_block(self, block: int, offsets: np.ndarray) -> np.ndarray:
        """Rows ``offsets`` of ``block``, read without mapping its pages (a ``pread`` of the
        block's rows up to the last one needed) where spilled."""
        if self._file is None or not len(offsets):
            found: np.ndarray = self._blocks[block][offsets]
            return found
        rows = int(offsets.max()) + 1
        size = rows * self.dimension
        data = os.pread(self._file.fileno(), size, block * _BLOCK_ROWS * self.dimension)
        if len(data) != size:
            raise OSError(f"read {len(data)} of {size} bytes of int8 codes")
        whole = np.frombuffer(data, dtype=np.int8).reshape(rows, self.dimension)
        picked: np.ndarray = whole[offsets]
        return picked

    def _gather(self, rows: np.ndarray, *, bulk: bool = False) -> np.ndarray:
        """The codes of ``rows`` (any order), as one ``(len(rows), dimension)`` int8 array.

        ``bulk`` (saving, compacting: every row once) reads spilled blocks with ``pread``
        (:meth:`_read_block`) instead of through the map, so their pages are never mapped into
        the process; searches read through the map.
        """
        blocks = rows >> _BLOCK_BITS
        offsets = rows & (_BLOCK_ROWS - 1)

        def fetch(block: int, at: np.ndarray) -> np.ndarray:
            found: np.ndarray = self._read_block(block, at) if bulk else self._blocks[block][at]
            return found

        if len(rows) and blocks.min() == blocks.max():
            return fetch(int(blocks[0]), offsets)
        out = np.empty((len(rows), self.dimension), dtype=np.int8)
        for block in np.unique(blocks).tolist():
            where = blocks == block
            out[where] = fetch(block, offsets[where])
        return out

    def delete(self, labels: np.ndarray) -> None:
        """Forget ``labels`` (those not held are ignored)."""
        rows = self.rows(np.asarray(labels, dtype=np.int64))  # live rows only
        self._live[rows] = False
        self._dead += len(rows)
        if self._dead and self._dead * 2 >= self._size:
            self._compact()

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """Rows of the live ``labels`` held (others are left out), in ``labels``' order."""
        if not self._size:
            return np.empty(0, dtype=np.int64)
        held = self._labels[: self._size]
        rows = np.minimum(np.searchsorted(held, labels), self._size - 1)
        rows = rows[held[rows] == labels]
        live: np.ndarray = rows[self._live[rows]]
        return live

    def top(self, queries: np.ndarray, labels: np.ndarray, depth: int) -> np.ndarray:
        """Labels of the ``depth`` best approximate scores per query among ``labels``.

        Returns ``(n, min(depth, matches))`` int64 labels, not ordered within a row.
        """
        rows = self.rows(np.asarray(labels, dtype=np.int64))
        depth = min(depth, len(rows))
        if depth == 0:
            return np.empty((len(queries), 0), dtype=np.int64)
        scores = np.empty((len(queries), len(rows)), dtype=np.float32)
        for start in range(0, len(rows), _SCAN_ROWS):
            part = rows[start : start + _SCAN_ROWS]
            block = self._gather(part).astype(np.float32)
            scores[:, start : start + len(part)] = (queries @ block.T) * self._scales[part]
        if depth < len(rows):
            best = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        else:
            best = np.broadcast_to(np.arange(len(rows)), (len(queries), len(rows)))
        found: np.ndarray = self._labels[rows[best]]
        return found

    def save(self, file: Path) -> None:
        """Write the live rows to ``file``: one ``.npy`` int8 array, a row per point holding its
        codes, its scale's 4 bytes and its label's 8 (little-endian), written block by block."""
        live = np.flatnonzero(self._live[: self._size])
        width = self.dimension + 4 + 8
        header = {"descr": "|i1", "fortran_order": False, "shape": (len(live), width)}
        with file.open("wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for start in range(0, len(live), _BLOCK_ROWS):
                rows = live[start : start + _BLOCK_ROWS]
                packed = np.empty((len(rows), width), dtype=np.int8)
                packed[:, : self.dimension] = self._gather(rows, bulk=True)
                scales = self._scales[rows].astype("<f4")
                packed[:, self.dimension : self.dimension + 4] = scales.view(np.int8).reshape(-1, 4)
                labels = self._labels[rows].astype("<i8")
                packed[:, self.dimension + 4 :] = labels.view(np.int8).reshape(-1, 8)
                handle.write(packed.tobytes())

    @classmethod
    def load(cls, file: Path, dimension: int, spill: Path | None = None) -> Int8Codes:
        """Read what :meth:`save` wrote, block by block (into a block file in ``spill``, as
        the constructor's).

        Raises:
            ValueError: The file is not codes of this dimension.
            OSError: It cannot be read, or ``spill`` written.
        """
        codes = cls(dimension, spill)
        try:
            codes._read_from(file)
        except BaseException:
            codes.close()
            raise
        return codes

    def _read_from(self, file: Path) -> None:
        """Append the rows :meth:`save` wrote to ``file`` (see :meth:`load`)."""
        dimension = self.dimension
        width = dimension + 4 + 8
        with file.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version != (1, 0):
                raise ValueError(f"{file.name} is not a version 1.0 .npy file")
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            if dtype != np.int8 or fortran or len(shape) != 2 or shape[1] != width:
                raise ValueError(f"{file.name} does not hold {dimension}-d int8 codes")
            remaining = int(shape[0])
            while remaining:
                count = min(remaining, _BLOCK_ROWS)
                packed = np.fromfile(handle, dtype=np.int8, count=count * width)
                if len(packed) != count * width:
                    raise ValueError(f"{file.name} is shorter than its header says")
                packed = packed.reshape(count, width)
                scales = np.ascontiguousarray(packed[:, dimension : dimension + 4]).view("<f4")
                labels = np.ascontiguousarray(packed[:, dimension + 4 :]).view("<i8")[:, 0]
                if not self._continues(labels):
                    raise ValueError(f"{file.name} holds labels out of order")
                self._append(labels, scales[:, 0], packed[:, :dimension])
                remaining -= count

    def _grow(self, capacity: int) -> None:
        size = self._size
        for name in ("_scales", "_labels", "_live"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:size] = old[:size]
            setattr(self, name, new)

    def _compact(self) -> None:
        live = np.flatnonzero(self._live[: self._size])
        count = len(live)
        # Live rows only move down (row i goes to its rank among the live), so copying them in
        # increasing order, a block at a time, never overwrites a row still to be read.
        for start in range(0, count, _BLOCK_ROWS):
            rows = live[start : start + _BLOCK_ROWS]
            self._write_codes(start, self._gather(rows, bulk=True))
        self._scales[:count] = self._scales[live]
        self._labels[:count] = self._labels[live]
        self._live[:count] = True
        self._live[count : self._size] = False
        self._size, self._dead = count, 0
        kept = (count + _BLOCK_ROWS - 1) >> _BLOCK_BITS
        del self._blocks[kept:]
        if self._file is not None:
            self._unmap_from(kept)
            # Unmapped first: a map past the end of its file faults on access.
            os.ftruncate(self._file.fileno(), kept * _BLOCK_ROWS * self.dimension)
