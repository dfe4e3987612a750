"""A content-addressed cache of encoded corpora, so repeated evaluations encode once.

The key covers everything that changes the vectors: the model's fingerprint, pooling,
normalization, max_seq_length, compute dtype (and int8 quantization), the prefix and every text
in order. Entries are plain ``.npy`` files written atomically; a corrupt or mismatched entry is
ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sbert_retrieval.encoding.bi_encoder import BiEncoder, TokenizedBatch

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """Caches :meth:`BiEncoder.encode` results on disk.

    Args:
        directory: Where entries live (created on first write).

    Thread safety: safe; concurrent writers of one key both write the same bytes and the last
    rename wins.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(encoder: BiEncoder, texts: Sequence[str], prefix: str) -> str:
        """The cache key of encoding ``texts`` with ``encoder`` and ``prefix``."""
        digest = hashlib.sha256()
        spec = encoder.spec()
        for part in (
            spec.fingerprint,
            spec.pooling,
            spec.normalize,
            spec.max_seq_length,
            encoder.dtype,
            prefix,
            # int8 vectors differ from float32 ones of the same dtype (older keys unchanged).
            *(("int8",) if encoder.precision == "int8" else ()),
        ):
            digest.update(repr(part).encode())
            digest.update(b"\x00")
        digest.update(str(len(texts)).encode())
        for text in texts:
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\x1e")
        return digest.hexdigest()[:32]

    def encode(
        self,
        encoder: BiEncoder,
        texts: Sequence[str],
        *,
        prefix: str = "",
        show_progress: bool = False,
        tokenized: TokenizedBatch | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Encode through the cache.

        Args:
            encoder: The encoder; its settings are part of the key.
            texts: The texts, in order.
            prefix: Prepended to every text.
            show_progress: Progress bar while encoding on a miss.
            tokenized: ``encoder.tokenize(texts, prefix=prefix)``, when the caller already has it.

        Returns:
            ``(vectors, hit)``; ``hit`` is True when the vectors were read from disk.
        """
        file = self.directory / f"{self.key(encoder, texts, prefix)}.npy"
        if file.is_file():
            with contextlib.suppress(OSError, ValueError):
                cached = np.load(file, allow_pickle=False)
                if cached.shape == (len(texts), encoder.dimension) and cached.dtype == np.float32:
                    return cached, True
        if tokenized is None:
            tokenized = encoder.tokenize(texts, prefix=prefix)
        vectors = encoder.encode_tokenized(tokenized, show_progress=show_progress)
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp")
            with tmp.open("wb") as handle:
                np.save(handle, vectors, allow_pickle=False)
            tmp.replace(file)
        return vectors, False
