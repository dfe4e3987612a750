"""The ONNX Runtime backend: a checkpoint exported here with torch's own exporter, run by ORT.

Why ONNX Runtime: per query its CPU session costs less than torch's eager forward (one STSb
sentence through all-MiniLM-L6-v2 on a 2-core AMD EPYC: 3.4 ms against 5.6 in bfloat16 and 10.1
in float32, BENCHMARKS.md), so ``backend="auto"`` sends small forward passes here. Why torch's
exporter: optimum's needs transformers < 4.58, and nothing here may be downloaded; the graph is
exported locally from the checkpoint, once, and cached under
:func:`~sbert_retrieval.models.cache_dir` by the checkpoint's content fingerprint (every weight
file hashed), so a changed checkpoint is exported anew.

Install with ``pip install 'sbert-retrieval[onnx]'`` (onnxruntime and onnx).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sbert_retrieval.models import cache_dir, model_fingerprint

__all__ = ["MISSING_EXTRA", "ONNX_TASKS", "OnnxModel", "exported_graph", "onnx_runtime_available"]

#: What a graph computes: ``feature-extraction`` (token states, for the bi-encoder's pooling)
#: or ``sequence-classification`` (logits, for the cross-encoder).
ONNX_TASKS = ("feature-extraction", "sequence-classification")
_OPSET = 18
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MISSING_EXTRA = (
    "the onnx backend needs onnxruntime and onnx: pip install 'sbert-retrieval[onnx]'"
    " (or choose backend='torch')"
)


def onnx_runtime_available() -> bool:
    """Whether onnxruntime and onnx are importable (the ``[onnx]`` extra is installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _check_task(task: str) -> None:
    if task not in ONNX_TASKS:
        raise ValueError(f"unknown ONNX task {task!r}; valid: {', '.join(ONNX_TASKS)}")


def exported_graph(
    checkpoint: str | os.PathLike[str],
    task: str,
    *,
    cache: str | os.PathLike[str] | None = None,
    int8: bool = False,
) -> Path:
    """The ONNX graph of ``checkpoint`` for ``task``, exported on first use and cached.

    ``int8``: the same graph with its weights quantized to int8 by ONNX Runtime's dynamic
    quantization (``quantize_dynamic``: per-channel weight scales, weight matmuls only,
    activations quantized per batch at run time), cached beside the float32 one as
    ``model-int8.onnx``. Lossy: BENCHMARKS.md has its cost.

    The graph takes ``input_ids``, ``attention_mask`` and (where the tokenizer makes them)
    ``token_type_ids``, int64 of any batch size and length, and returns float32
    ``last_hidden_state`` or ``logits``. Exported in float32 from a fresh copy of the model
    (torch's TorchScript exporter alters the module it traces).

    Args:
        checkpoint: A local transformers checkpoint directory.
        task: One of :data:`ONNX_TASKS`.
        cache: Root of the graph cache (default ``cache_dir() / "onnx"``).

    Raises:
        ValueError: An unknown task, or the ``[onnx]`` extra is missing.

    Thread safety: safe, across processes too: each export writes a private directory and
    renames it into place; a concurrent exporter's finished graph is kept.
    """
    _check_task(task)
    if not onnx_runtime_available():
        raise ValueError(MISSING_EXTRA)
    path = Path(checkpoint)
    root = Path(cache) if cache is not None else cache_dir() / "onnx"
    target = root / f"{model_fingerprint(path)}-{task}"
    graph = target / "model.onnx"
    if int8:
        return _quantized(exported_graph(path, task, cache=cache))
    if graph.is_file():
        return graph
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        _export(path, task, partial / "model.onnx")
        try:
            partial.rename(target)
        except OSError:
            if not graph.is_file():  # not a finished concurrent export: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return graph


def _quantized(graph: Path) -> Path:
    """``graph`` with int8 weights, made once beside it (a private temporary file renamed into
    place, so a concurrent or killed run never leaves a partial graph)."""
    quantized = graph.with_name("model-int8.onnx")
    if quantized.is_file():
        return quantized
    from onnxruntime.quantization import QuantType, quantize_dynamic

    handle, name = tempfile.mkstemp(prefix=".model-int8.", suffix=".onnx", dir=graph.parent)
    os.close(handle)
    partial = Path(name)
    try:
        # Per-channel weight scales, and only weight matmuls: per-tensor scales, or quantizing
        # attention's activation x activation matmuls too, gave MiniLM a min cosine of 0.898 to
        # float32; this gives 0.989 (sentence-transformers' own int8 export: 0.988).
        quantize_dynamic(
            str(graph),
            str(partial),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
        partial.replace(quantized)
    finally:
        partial.unlink(missing_ok=True)
    return quantized


def _export(checkpoint: Path, task: str, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    loader: Any = AutoModel if task == "feature-extraction" else AutoModelForSequenceClassification
    model = loader.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    made = AutoTokenizer.from_pretrained(str(checkpoint)).model_input_names
    # What the tokenizer makes and the model takes (MPNet takes no token_type_ids).
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in _INPUTS if n in made and n in accepted]
    output = "last_hidden_state" if task == "feature-extraction" else "logits"

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            named = dict(zip(names, inputs, strict=True))
            result: torch.Tensor = getattr(self.model(**named), output)
            return result

    # A padded example, so the traced graph keeps the attention mask's arithmetic.
    ids = torch.tensor([[101, 2023, 2003, 102, 0], [101, 2023, 2003, 1037, 102]])
    example = {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "token_type_ids": torch.zeros_like(ids),
    }
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch", 1: "sequence"} if task == "feature-extraction" else {0: "batch"}
    # The TorchScript exporter warns that it is deprecated and that negative gather indices
    # would export wrongly (BERT's indices are positions and ids: never negative).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Graph(),
            tuple(example[n] for n in names),
            str(out),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )


class OnnxModel:
    """One exported graph in an ONNX Runtime CPU session.

    Args:
        checkpoint: A local transformers checkpoint directory (exported on first use).
        task: One of :data:`ONNX_TASKS`.
        threads: Intra-op threads (default: torch's thread count, as the torch backend uses).
        int8: Run the int8-quantized graph (:func:`exported_graph`).

    Thread safety: :meth:`__call__` is safe from several threads (ORT sessions are).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        task: str,
        *,
        threads: int | None = None,
        int8: bool = False,
    ) -> None:
        graph = exported_graph(checkpoint, task, int8=int8)
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.graph = graph
        self.task = task
        self._session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = tuple(i.name for i in self._session.get_inputs())

    def __call__(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """Token states ``(batch, length, hidden)`` or logits ``(batch, labels)``, float32."""
        types = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": types}
        feeds = {n: np.ascontiguousarray(given[n], dtype=np.int64) for n in self.input_names}
        result: np.ndarray = self._session.run(None, feeds)[0]
        return result
