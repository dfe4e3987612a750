"""SBERT pooling: token states → one vector per text, exactly as sentence-transformers pools."""

from __future__ import annotations

import torch

from sbert_retrieval.models import POOLING_MODES

__all__ = ["pool"]


def pool(token_states: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states into sentence vectors.

    Args:
        token_states: ``(batch, tokens, dim)`` last hidden states.
        attention_mask: ``(batch, tokens)``, 1 for real tokens, 0 for padding.
        mode: One of ``mean``, ``cls``, ``max``, ``mean_sqrt_len``, ``lasttoken``.

    Returns:
        ``(batch, dim)`` in the dtype of ``token_states``.

    Thread safety: pure function, safe from any thread.
    """
    if mode == "cls":
        return token_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    if mode in ("mean", "mean_sqrt_len"):
        summed = (token_states * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)
    if mode == "max":
        masked = token_states.masked_fill(
            mask == 0, -1e9 if token_states.dtype == torch.float32 else -1e4
        )
        return masked.max(dim=1).values
    if mode == "lasttoken":
        # Works for left and right padding: the last position whose mask is 1.
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask * positions).argmax(dim=1)
        return token_states[torch.arange(token_states.shape[0], device=token_states.device), last]
    raise ValueError(f"unknown pooling mode {mode!r}; valid modes: {', '.join(POOLING_MODES)}")
