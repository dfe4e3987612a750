"""Padding-free inference for BERT-family encoders: every token-wise layer runs on the real
tokens only.

A padded batch spends its linear layers, layer norms and activations on pad tokens too. For
texts of mixed lengths (queries coalesced by the HTTP service, reranking pairs) that is most
of the work: 32 STSb queries average 11.5 tokens and pad to about 25, and on CPU a forward
pass costs time in proportion to the tokens it carries (all-MiniLM-L6-v2, bfloat16:
36 ms for 32 × 12 tokens, 67 ms for 32 × 28). Here the batch's real tokens are packed into
one ``(tokens, hidden)`` matrix; the embeddings, and in each layer the query/key/value
projections, the attention output block and the feed-forward block (transformers' own
modules, called as they are) run on it; only the attention itself is computed on the padded
layout, with the same key-padding mask transformers gives its SDPA attention. This is the
"unpadding" of FlashAttention's BERT and of transformers' padding-free training, done with
plain torch ops so it runs on any device.

Only the model class it was written against is packed (transformers' ``BertModel`` as an
encoder: absolute positions, no cross-attention, no feed-forward chunking);
:func:`packable` says so, and anything else keeps the padded forward.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "PACKED_ENV",
    "PACK_MIN_PADDING",
    "packable",
    "packable_classifier",
    "packed_logits",
    "packed_states",
    "packing_enabled",
    "packs",
    "padding_fraction",
]

#: ``SBERT_RETRIEVAL_PACKED=0`` keeps the padded forward pass (for A/B measurements).
PACKED_ENV = "SBERT_RETRIEVAL_PACKED"

#: Pack a batch when at least this share of its positions is padding (default 0.1). Packing
#: adds a scatter and a gather of q, k, v and the attention output per layer; below this the
#: padded forward is as fast.
PACK_MIN_PADDING = 0.1


def packing_enabled() -> bool:
    """Whether :data:`PACKED_ENV` allows padding-free forward passes (default: yes)."""
    return os.environ.get(PACKED_ENV, "1") != "0"


def packs(model: nn.Module, attention_mask: torch.Tensor, *, classifier: bool = False) -> bool:
    """Whether a batch runs padding-free: the one rule the encoder and the reranker share.

    - CPU tensors only: measured there; on CUDA, ``nonzero`` and the padding count would make
      the host wait for the device, which the overlapped engine is built to avoid.
    - Inference only (no gradient, eval mode), and :data:`PACKED_ENV` not ``0``.
    - An encoder: a :func:`packable` model and at least :data:`PACK_MIN_PADDING` padding.
    - A classifier (``classifier=True``): a :func:`packable_classifier` model and right padding,
      at any padding (its pooled-token-only last layer pays without any).
    """
    if (
        attention_mask.device.type != "cpu"
        or torch.is_grad_enabled()
        or model.training
        or not packing_enabled()
    ):
        return False
    if classifier:
        return packable_classifier(model) and bool(attention_mask[:, 0].bool().all())
    return packable(model) and padding_fraction(attention_mask) >= PACK_MIN_PADDING


def packable(model: nn.Module) -> bool:
    """Whether :func:`packed_states` computes ``model``'s forward pass (a transformers
    ``BertModel`` used as an encoder, attention heads of equal size)."""
    try:
        from transformers import BertModel
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return False
    if type(model) is not BertModel:
        return False
    config = model.config
    return (
        not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
        and not getattr(config, "chunk_size_feed_forward", 0)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and config.hidden_size % config.num_attention_heads == 0
    )


def packable_classifier(model: nn.Module) -> bool:
    """Whether :func:`packed_logits` computes ``model``'s forward pass (a transformers
    ``BertForSequenceClassification``, a cross-encoder, over a :func:`packable` encoder)."""
    try:
        from transformers import BertForSequenceClassification
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return False
    return (
        type(model) is BertForSequenceClassification
        and packable(model.bert)
        and model.bert.pooler is not None
    )


def packed_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model``'s logits (a model :func:`packable_classifier` accepts, in eval mode):
    ``(batch, num_labels)``, through its own pooler, dropout and classifier.

    The pooler reads one token per text, the first column's, so the last layer computes only
    that token's row: its keys and values over every token, its query, attention output and
    feed-forward for the first token alone. That is the same arithmetic for the token the
    pooler reads, and it skips most of one layer (measured: 14% of a 20 × 256-token rerank).

    Raises:
        ValueError: A row's first column is padding (left padding): the padded forward's
            pooler reads a pad token's state there, which this path does not compute.
    """
    if not bool(attention_mask[:, 0].bool().all()):
        raise ValueError("packed_logits needs right padding: a row's first token is padding")
    first, _ = _forward(model.bert, input_ids, attention_mask, token_type_ids, first_only=True)
    pooled = model.bert.pooler(first.unsqueeze(1))  # BertPooler reads [:, 0]
    logits: torch.Tensor = model.classifier(model.dropout(pooled))
    return logits


def padding_fraction(attention_mask: torch.Tensor) -> float:
    """The share of a ``(batch, width)`` mask's positions that are padding (0 when none)."""
    total = attention_mask.numel()
    return 0.0 if total == 0 else 1.0 - float(attention_mask.sum()) / total


def packed_states(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model``'s last hidden states for a padded batch, computed on its real tokens only.

    Args:
        model: A model :func:`packable` accepts, in eval mode.
        input_ids: ``(batch, width)`` integer token ids, right- or left-padded.
        attention_mask: ``(batch, width)``, 1 for real tokens and 0 for padding; every row
            holds at least one real token.
        token_type_ids: ``(batch, width)`` segment ids (a cross-encoder's pairs); default
            all 0.

    Returns:
        ``(batch, width, hidden)`` states as the padded forward returns them at the real
        tokens, zeros at the padding (which pooling ignores).

    Raises:
        ValueError: A row of the mask holds no real token.
    """
    states, index = _forward(model, input_ids, attention_mask, token_type_ids, first_only=False)
    batch, width = input_ids.shape
    full = states.new_zeros(batch * width, states.shape[-1])
    full.index_copy_(0, index, states)
    return full.view(batch, width, -1)


def _forward(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    *,
    first_only: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed forward pass: ``(real tokens, hidden)`` states in row-major order, or with
    ``first_only`` each row's first real token's ``(batch, hidden)`` (the last layer then
    computes only those rows); and the real tokens' flat positions in ``(batch * width)``."""
    batch, width = input_ids.shape
    mask = attention_mask.bool()
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every row of attention_mask needs at least one real token")
    config = model.config
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_size = hidden // heads
    # Flat positions of the real tokens in the (batch * width) layout, and each one's column:
    # the position id the padded forward gives it (transformers numbers the columns, pads
    # included, so left padding shifts a text's positions there and here alike).
    index = mask.reshape(-1).nonzero().squeeze(1)
    columns = torch.arange(width, device=input_ids.device).expand(batch, width)
    positions = columns.reshape(-1)[index]
    ids = input_ids.reshape(-1)[index]
    types = (
        torch.zeros_like(ids)
        if token_type_ids is None
        else token_type_ids.reshape(-1)[index].to(torch.long)
    )
    states: torch.Tensor = model.embeddings(
        input_ids=ids.to(torch.long).unsqueeze(0),
        position_ids=positions.unsqueeze(0),
        token_type_ids=types.unsqueeze(0),
    ).squeeze(0)
    # SDPA's boolean mask: True where a key may be attended to (every real token).
    keys = mask.view(batch, 1, 1, width)

    def padded_heads(packed: torch.Tensor) -> torch.Tensor:
        full = packed.new_zeros(batch * width, hidden)
        full.index_copy_(0, index, packed)
        return full.view(batch, width, heads, head_size).transpose(1, 2)

    layers = list(model.encoder.layer)
    for number, layer in enumerate(layers):
        attention = layer.attention.self
        tokens = states  # every real token: the keys and values come from all of them
        last = first_only and number == len(layers) - 1
        if last:
            # Only each row's first real token goes on (in packed order: after the real tokens
            # of the rows before it).
            lengths = mask.sum(dim=1)
            states = tokens.index_select(0, torch.cumsum(lengths, dim=0) - lengths)
            query = attention.query(states).view(batch, 1, heads, head_size).transpose(1, 2)
        else:
            query = padded_heads(attention.query(tokens))
        context = functional.scaled_dot_product_attention(
            query,
            padded_heads(attention.key(tokens)),
            padded_heads(attention.value(tokens)),
            attn_mask=keys,
            scale=attention.scaling,
        )
        context = context.transpose(1, 2).reshape(-1, hidden)
        if not last:
            context = context.index_select(0, index)
        states = layer.attention.output(context, states)
        states = layer.output(layer.intermediate(states), states)
    return states, index
