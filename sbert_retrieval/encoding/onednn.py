"""oneDNN linear layers for CPU inference: prepacked weights, bias and GELU fused into the GEMM.

torch's CPU ``nn.Linear`` computes ``addmm``: it first copies the bias into every output row, then
runs the GEMM, and in float32 it goes through MKL, whose kernels run at ~175 GFLOP/s on the AMD
EPYC this project is measured on. ``torch.ops.mkldnn._linear_pointwise`` (the kernel inductor's
CPU freezing pass emits) runs oneDNN on a weight reordered once into its blocked layout, with the
bias and an exact GELU applied inside the GEMM's epilogue. Measured on that CPU with the
cross-encoder's shapes (5,120 rows): float32 1.24x per layer, bfloat16 1.08x, one query's
12 rows 1.6-1.9x, and a reranked top 20 18% faster end to end (BENCHMARKS.md).

:func:`use_onednn_linear` switches a model's ``nn.Linear`` layers to :class:`OneDnnLinear` in
place (class swap: same parameters, same ``state_dict``, still ``nn.Linear``). The fast path
runs only where it is exact to the plain one: CPU tensors, no gradient, no autocast, the
weight's own dtype. Anywhere else (training, CUDA, autocast) the layer is a plain
``nn.Linear``. The packed copy is rebuilt when the weight changes (an optimizer step, a
``load_state_dict``), so evaluation during training never sees stale weights.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from typing import Any, cast

import torch
from torch import nn

__all__ = ["ONEDNN_ENV", "OneDnnLinear", "onednn_supported", "use_onednn_linear"]

logger = logging.getLogger(__name__)

#: ``SBERT_RETRIEVAL_ONEDNN=0`` keeps torch's own linear layers (for A/B measurements).
ONEDNN_ENV = "SBERT_RETRIEVAL_ONEDNN"


def onednn_supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed linear runs ``dtype`` on this CPU: an x86-64 torch build with
    oneDNN, float32, or bfloat16 where oneDNN supports it (``_is_mkldnn_bf16_supported``), and
    :data:`ONEDNN_ENV` not ``0``."""
    if os.environ.get(ONEDNN_ENV, "1") == "0":
        return False
    return dtype in _native_dtypes()


@functools.cache
def _native_dtypes() -> frozenset[torch.dtype]:
    """The dtypes this machine's oneDNN runs natively (asked once: forward passes check it)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return frozenset()
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return frozenset({torch.float32, *((torch.bfloat16,) if bf16 else ())})


def _exact_gelu(module: Any) -> bool:
    """Whether ``module`` is the exact (erf) GELU oneDNN's ``gelu``/``none`` post-op computes."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    # transformers' GELUActivation ("gelu" in a config) wraps torch's exact gelu.
    return type(module).__name__ == "GELUActivation" and (
        getattr(module, "act", None) is nn.functional.gelu
    )


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` that runs oneDNN's packed GEMM for CPU inference; optionally followed by an
    exact GELU (``fused_gelu``), which the plain path applies too, so both compute the same
    function. Made by :func:`use_onednn_linear`, never constructed directly.

    Thread safety: not thread-safe (the packed weight is rebuilt lazily); callers serialize
    forward passes, as ``BiEncoder`` and ``CrossEncoderReranker`` do.
    """

    fused_gelu: bool
    _packed: torch.Tensor | None
    _packed_key: tuple[int, int, torch.dtype] | None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            input.device.type != "cpu"
            or weight.device.type != "cpu"
            or input.dtype != weight.dtype
            # A model cast after the swap (float16, or bfloat16 where oneDNN lacks it).
            or not onednn_supported(weight.dtype)
            or (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
            or torch.is_autocast_enabled("cpu")
        ):
            plain: torch.Tensor = super().forward(input)
            return nn.functional.gelu(plain) if self.fused_gelu else plain
        key = (weight.data_ptr(), weight._version, weight.dtype)
        if self._packed is None or self._packed_key != key:
            # The batch-size hint only tunes the layout; every batch size runs on it.
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 256)
            self._packed_key = key
        bias = self.bias.detach() if self.bias is not None else None
        attr, algorithm = ("gelu", "none") if self.fused_gelu else ("none", "")
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            input, self._packed, bias, attr, [], algorithm
        )
        return out

    def __getstate__(self) -> dict[str, Any]:
        # The packed tensor is an opaque oneDNN layout that neither pickles nor deep-copies
        # (saving deep-copies the model): copies rebuild it on first use.
        state = dict(self.__dict__)
        state["_packed"] = None
        state["_packed_key"] = None
        return state


def _swap(linear: nn.Linear, fused_gelu: bool) -> None:
    linear.__class__ = OneDnnLinear
    swapped = cast(OneDnnLinear, linear)
    swapped.fused_gelu = fused_gelu
    swapped._packed = None
    swapped._packed_key = None


def use_onednn_linear(model: nn.Module) -> int:
    """Switch ``model``'s linear layers to :class:`OneDnnLinear`, in place; returns how many.

    Does nothing (returns 0) where :func:`onednn_supported` says no for the model's dtype.
    Where a module pairs a linear layer ``dense`` with an exact-GELU ``intermediate_act_fn``
    (the feed-forward block of BERT, MPNet, RoBERTa, ...), the GELU moves into the GEMM.
    """
    parameter = next(model.parameters(), None)
    if parameter is None or not onednn_supported(parameter.dtype):
        return 0
    fused: set[int] = set()
    for module in model.modules():
        dense = getattr(module, "dense", None)
        act = getattr(module, "intermediate_act_fn", None)
        if type(dense) is nn.Linear and act is not None and _exact_gelu(act):
            _swap(dense, fused_gelu=True)
            module.intermediate_act_fn = nn.Identity()
            fused.add(id(dense))
    count = len(fused)
    for module in model.modules():
        if type(module) is nn.Linear:
            _swap(module, fused_gelu=False)
            count += 1
    logger.debug("oneDNN linear layers: %d (%d with GELU)", count, len(fused))
    return count
