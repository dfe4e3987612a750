"""CPU inference side by side, in one process: our backends against every CPU anchor we can run.

    pip install -e '.[bench,onnx]' && pip install --no-deps fastembed loguru mmh3 \\
        py-rust-stemmers pillow    # fastembed without re-pinning numpy/tokenizers
    python benchmarks/cpu_anchors.py [--sentences 2000] [--abstracts 200] [--queries 200]

Contenders, each built once, then timed in rounds whose order alternates (forward, reversed):

* ``sentence-transformers torch``: ``SentenceTransformer.encode`` in float32, its default;
* ``fastembed``: fastembed's ``TextEmbedding`` (mean pooling, normalized) over our locally
  exported ONNX graph of the same checkpoint, ``plain`` and ``optimized`` (the graph after ONNX
  Runtime's transformer fusions, ``onnxruntime.transformers.optimizer``). This is also what
  sentence-transformers' ``backend="onnx"`` (plain / O-levels) runs, an ONNX Runtime session
  over the graph; it cannot be loaded here: its optimum dependency needs transformers < 4.58;
* ours: ``auto`` and each backend (``torch`` float32, ``torch`` bfloat16, ``onnx``, and the
  lossy opt-in ``onnx-int8``, listed but never a lossless contender).

Workloads: STSb sentences (distinct, train first) and SciFact abstracts (title + text, cut at
256 tokens), batch 32, texts/s best of ``--rounds``; one short query (the first 10 words of a
SciFact train claim) at a time, after the round's throughput runs, each contender's block
after 20 warm-up queries (order alternating), p50/p90 over ``--queries`` calls, best round. Every
contender's vectors are compared with sentence-transformers' float32 ones: min cosine (lossless
means ≥ 0.9999). The JSON names the machine with its CPU flags and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, machine, scifact_abstracts, stsb_sentences

Encode = Callable[[list[str]], np.ndarray]


def short_queries(count: int) -> list[str]:
    """The first 10 words of SciFact train claims (the split the scores never use)."""
    folder = SHARED_DATA / "scifact"
    with (folder / "qrels" / "train.tsv").open(encoding="utf-8") as fh:
        train = {line.split("\t")[0] for line in fh}
    found: list[str] = []
    with (folder / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if str(record["_id"]) in train:
                found.append(" ".join(record["text"].split()[:10]))
    return [found[i % len(found)] for i in range(count)]


def fastembed_dir(model_path: Path, graph: Path, target: Path, max_length: int) -> Path:
    """A folder fastembed loads: the graph plus the checkpoint's tokenizer files."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(graph, target / "model.onnx")
    for name in ("config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt"):
        if (model_path / name).is_file():
            shutil.copy(model_path / name, target / name)
    config = json.loads((model_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["model_max_length"] = max_length  # cut where sentence-transformers cuts
    (target / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


def contenders(args: argparse.Namespace, work: Path) -> dict[str, Encode]:
    from sentence_transformers import SentenceTransformer

    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.encoding.onnx_backend import exported_graph

    found: dict[str, Encode] = {}
    st = SentenceTransformer(args.model, device="cpu")
    ours_auto = BiEncoder(args.model, device="cpu", batch_size=args.batch_size)
    path = ours_auto.path
    max_length = ours_auto.max_seq_length
    found["sentence-transformers torch float32"] = lambda t: st.encode(
        t, batch_size=args.batch_size, convert_to_numpy=True
    )
    for name, model in (
        (f"ours auto ({ours_auto.backend} {str(ours_auto.dtype)[6:]})", ours_auto),
        (
            "ours torch float32",
            BiEncoder(args.model, device="cpu", backend="torch", dtype="float32"),
        ),
        (
            "ours torch bfloat16",
            BiEncoder(args.model, device="cpu", backend="torch", dtype="bfloat16"),
        ),
        ("ours onnx float32", BiEncoder(args.model, device="cpu", backend="onnx")),
        # Lossy (opt-in): listed, never counted as a lossless contender.
        ("ours onnx int8", BiEncoder(args.model, device="cpu", backend="onnx-int8")),
    ):
        found[name] = lambda t, m=model: m.encode(t, batch_size=args.batch_size)
    try:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType
    except ImportError as exc:
        print(f"fastembed not measured: {exc}", file=sys.stderr)
        return found
    from onnxruntime.transformers.optimizer import optimize_model

    plain = exported_graph(path, "feature-extraction")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    optimized = work / "optimized.onnx"
    optimize_model(
        str(plain),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
    ).save_model_to_file(str(optimized))
    for label, graph in (("plain", plain), ("optimized", optimized)):
        name = f"local/{path.name}-{label}"
        TextEmbedding.add_custom_model(
            model=name,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf=name),
            dim=int(config["hidden_size"]),
            model_file="model.onnx",
        )
        embedder = TextEmbedding(
            name,
            specific_model_path=str(fastembed_dir(path, graph, work / label, max_length)),
            threads=None,
        )
        found[f"fastembed {label} graph"] = lambda t, e=embedder: np.stack(
            list(e.embed(t, batch_size=args.batch_size))
        )
    return found


def checks(
    names: list[str],
    rates: dict[str, dict[str, float]],
    latency: dict[str, dict[str, float]],
    quality: dict[str, float],
) -> dict[str, Any]:
    """Issue 13's ratios: ours auto against the fastest lossless anchor, and fastembed's query."""
    ours = next(n for n in names if n.startswith("ours auto"))
    anchors = [n for n in names if not n.startswith("ours") and quality[n] >= 0.9999]
    out: dict[str, Any] = {"ours": ours, "lossless_anchors": anchors}
    for workload, target in (("stsb_sentences", 1.2), ("scifact_abstracts", 1.0)):
        best = max(anchors, key=lambda n: rates[n][workload])
        ratio = rates[ours][workload] / rates[best][workload]
        out[workload] = {"fastest_anchor": best, "ratio": round(ratio, 3), "target": target}
    fastembed = [n for n in names if n.startswith("fastembed")]
    if fastembed:
        best = min(fastembed, key=lambda n: latency[n]["p50_ms"])
        ratio = latency[ours]["p50_ms"] / latency[best]["p50_ms"]
        out["query_p50"] = {"fastembed": best, "ratio": round(ratio, 3), "target": 1.2}
    return out


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--abstracts", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    from sbert_retrieval.models import resolve_model_path

    args.model = str(resolve_model_path(args.model))
    work = Path(tempfile.mkdtemp(prefix="cpu-anchors-"))
    try:
        found = contenders(args, work)
        workloads = {
            "stsb_sentences": stsb_sentences(args.sentences),
            "scifact_abstracts": scifact_abstracts(args.abstracts),
        }
        queries = short_queries(args.queries)
        names = list(found)
        reference = {w: found[names[0]](texts) for w, texts in workloads.items()}
        quality: dict[str, float] = {}
        for name in names:  # warm-up, and each contender's distance to the reference
            cosines = []
            for workload, texts in workloads.items():
                got = found[name](texts)
                got = got / np.linalg.norm(got, axis=1, keepdims=True)
                ref = reference[workload] / np.linalg.norm(
                    reference[workload], axis=1, keepdims=True
                )
                cosines.append(float(np.min(np.sum(got * ref, axis=1))))
            quality[name] = min(cosines)
            found[name](queries[:5])
        rates: dict[str, dict[str, float]] = {n: {} for n in names}
        latency: dict[str, dict[str, float]] = {n: {} for n in names}
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                encode = found[name]
                gc.collect()
                for workload, texts in workloads.items():
                    started = time.perf_counter()
                    encode(texts)
                    rate = len(texts) / (time.perf_counter() - started)
                    rates[name][workload] = max(rates[name].get(workload, 0.0), rate)
                print(f"round {round_ + 1} {name}: {rates[name]}", flush=True)
            # Queries in blocks, each after 20 warm-up queries of its own: interleaving them
            # query by query measured every contender 3-5x slower (each call finds the caches
            # and thread pools of another model), which no user sees.
            for name in names if round_ % 2 == 0 else names[::-1]:
                for query in queries[:20]:
                    found[name]([query])
                times = []
                for query in queries:
                    started = time.perf_counter()
                    found[name]([query])
                    times.append((time.perf_counter() - started) * 1000)
                p50 = statistics.median(times)
                if p50 < latency[name].get("p50_ms", float("inf")):
                    latency[name] = {"p50_ms": p50, "p90_ms": float(np.percentile(times, 90))}
            print(f"round {round_ + 1} queries: {latency}", flush=True)
        result = {
            "checks": checks(names, rates, latency, quality),
            "machine": machine(),
            "settings": vars(args),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "contenders": {
                name: {
                    **{f"{w}_per_s": round(r, 1) for w, r in rates[name].items()},
                    **{k: round(v, 2) for k, v in latency[name].items()},
                    "min_cosine_to_st_fp32": round(quality[name], 6),
                }
                for name in names
            },
        }
        print(json.dumps(result, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
