"""The ``sbert-retrieval`` command: ingest, search, eval beir, eval sts, serve, train.

Command names, flags and JSON keys are a contract other tools depend on. Errors print one line
``error: ...`` to stderr and exit 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sbert_retrieval.training.trainer import TrainingConfig

__all__ = ["main"]


def _quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:  # pragma: no cover
        pass


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {value}")
    return value


def _add_encoder_flags(parser: argparse.ArgumentParser, *, model_help: str) -> None:
    group = parser.add_argument_group("encoder")
    group.add_argument("--model", help=model_help)
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: auto)")
    group.add_argument(
        "--dtype", default=None, help="float32, float16, bfloat16 or auto (default: auto)"
    )
    group.add_argument(
        "--inference-backend",
        default="auto",
        choices=("auto", "torch", "onnx", "onnx-int8"),  # models.BACKENDS, without importing it
        help="encoder and reranker backend: auto (measured per machine), torch, onnx (ONNX"
        " Runtime, float32, CPU; the [onnx] extra) or onnx-int8 (the encoder's weights in int8:"
        " lossy, opt-in; the reranker then runs auto) (default: auto)",
    )
    group.add_argument(
        "--batch-size", type=_positive, default=32, help="texts per forward pass (default 32)"
    )
    group.add_argument(
        "--max-batch-tokens",
        type=_positive,
        default=None,
        help="also cap each forward pass at this many tokens, padding included (default: none)",
    )


def _add_query_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--query-model",
        default=None,
        help="a separate query encoder (two-tower models); recorded in and checked by the index",
    )


def _add_store_flags(
    parser: argparse.ArgumentParser, *, index_required: bool, backends: Sequence[str]
) -> None:
    group = parser.add_argument_group("store")
    group.add_argument("--index", required=False, help="index directory (hnsw and exact backends)")
    group.add_argument(
        "--backend", choices=backends, default=backends[0], help=f"default: {backends[0]}"
    )
    group.add_argument(
        "--qdrant-url", default=None, help="Qdrant server URL (API key from QDRANT_API_KEY)"
    )
    group.add_argument(
        "--qdrant-path", default=None, help="directory of an embedded Qdrant (local mode)"
    )
    group.add_argument(
        "--collection",
        default="sbert_retrieval",
        help="Qdrant collection (default sbert_retrieval)",
    )
    parser.set_defaults(_index_required=index_required)


def _add_prefix_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--query-prefix",
        default=None,
        help="text before each query (default: the model's 'query' prompt)",
    )
    parser.add_argument(
        "--passage-prefix",
        default=None,
        help="text before each passage (default: the model's 'passage'/'document' prompt)",
    )


def _add_rerank_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank",
        metavar="MODEL",
        default=None,
        help="cross-encoder to rerank with: hub id, path, or 'default' (the shipped reranker)",
    )
    parser.add_argument(
        "--rerank-depth", type=_positive, default=100, help="candidates reranked (default 100)"
    )
    parser.add_argument(
        "--rerank-weight",
        type=float,
        default=None,
        metavar="W",
        help="share of the reranker's score, blended with the first stage's (min-max of each):"
        " 1 = reranker order only (default: what the model recommends, else 1)",
    )


def _add_mode_flags(parser: argparse.ArgumentParser) -> None:
    from sbert_retrieval.fusion import DEFAULT_ALPHA, DEFAULT_RRF_K, FUSIONS
    from sbert_retrieval.retrieval import MODES

    group = parser.add_argument_group("retrieval mode")
    group.add_argument(
        "--mode",
        choices=MODES,
        default="dense",
        help="dense (vectors), lexical (BM25) or hybrid (both, fused); default dense",
    )
    group.add_argument(
        "--fusion", choices=FUSIONS, default="rrf", help="how hybrid fuses (default rrf)"
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"dense weight of weighted fusion, 0..1 (default {DEFAULT_ALPHA})",
    )
    group.add_argument(
        "--rrf-k", type=int, default=DEFAULT_RRF_K, help=f"RRF constant (default {DEFAULT_RRF_K})"
    )
    group.add_argument(
        "--candidates",
        type=_positive,
        default=None,
        help="depth of each hybrid branch (default max(100, 4k))",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="sbert-retrieval",
        description="Sentence-BERT retrieval: ingest documents, search them, evaluate models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="load, chunk, encode and store documents",
        description="Ingest JSONL files, BEIR corpora and folders of .txt/.md files.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to ingest")
    _add_store_flags(ingest, index_required=True, backends=("hnsw", "exact", "qdrant"))
    _add_encoder_flags(
        ingest,
        model_help="hub id or local path (default: the index's model, else all-MiniLM-L6-v2)",
    )
    _add_prefix_flags(ingest)
    _add_query_model_flag(ingest)
    ingest.add_argument(
        "--chunk-tokens",
        type=_positive,
        default=None,
        help="tokens per chunk (default: the model's window)",
    )
    ingest.add_argument(
        "--overlap",
        type=_non_negative,
        default=32,
        help="tokens shared by consecutive chunks (default 32)",
    )
    ingest.add_argument(
        "--doc-mode", choices=("chunk", "truncate"), default="chunk", help="default: chunk"
    )
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")
    ingest.add_argument("--progress", action="store_true", help="show a progress bar")

    search = commands.add_parser(
        "search", help="search an index", description="Print the top hits for a query."
    )
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=_positive, default=10, help="hits to return (default 10)")
    search.add_argument(
        "--filter", default=None, help='metadata filter as JSON, e.g. \'{"lang": "en"}\''
    )
    search.add_argument(
        "--doc-level", action="store_true", help="one hit per document (its best chunk)"
    )
    _add_store_flags(search, index_required=True, backends=("hnsw", "exact", "qdrant"))
    _add_encoder_flags(search, model_help="override the index's model path (same weights required)")
    _add_query_model_flag(search)
    _add_rerank_flags(search)
    _add_mode_flags(search)
    search.add_argument("--json", action="store_true", help="print hits as JSON")

    evaluate = commands.add_parser(
        "eval", help="evaluate a model", description="Evaluate on BEIR or STS data."
    )
    benchmarks = evaluate.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    beir = benchmarks.add_parser(
        "beir",
        help="BEIR retrieval (nDCG@10, MRR@10, Recall@100, MAP@100)",
        description="Evaluate retrieval on a BEIR dataset folder.",
    )
    beir.add_argument(
        "dataset", metavar="DIR", help="folder with corpus.jsonl[.gz], queries.jsonl, qrels/"
    )
    beir.add_argument("--split", default="test", help="qrels split to score (default test)")
    _add_store_flags(beir, index_required=False, backends=("exact", "hnsw", "qdrant"))
    _add_encoder_flags(beir, model_help="hub id or local path (default all-MiniLM-L6-v2)")
    _add_query_model_flag(beir)
    _add_prefix_flags(beir)
    _add_rerank_flags(beir)
    _add_mode_flags(beir)
    beir.add_argument(
        "--doc-mode",
        choices=("truncate", "chunk"),
        default="truncate",
        help="default: truncate (as MTEB)",
    )
    beir.add_argument(
        "--top-k", type=_positive, default=100, help="documents retrieved per query (default 100)"
    )
    beir.add_argument(
        "--cache-dir",
        default=None,
        help="embedding cache (default: ~/.cache/sbert_retrieval/embeddings)",
    )
    beir.add_argument("--no-cache", action="store_true", help="always encode the corpus")
    beir.add_argument("--json", action="store_true", help="print the scores as JSON")
    beir.add_argument("--progress", action="store_true", help="show progress bars")

    sts = benchmarks.add_parser(
        "sts",
        help="STS Spearman/Pearson of cosine similarity",
        description="Evaluate on a TSV with header score, sentence1, sentence2.",
    )
    sts.add_argument("file", metavar="FILE.tsv")
    _add_encoder_flags(sts, model_help="hub id or local path (default all-MiniLM-L6-v2)")
    sts.add_argument("--prefix", default="", help="text before each sentence")
    sts.add_argument("--json", action="store_true", help="print the scores as JSON")

    migrate = commands.add_parser(
        "migrate-index",
        help="convert a local index of the older file format to the current one",
        description=(
            "Convert, in place, a local index written before the SQLite format (a directory"
            " holding manifest.json). Safe to re-run if interrupted."
        ),
    )
    migrate.add_argument("index", help="the index directory")
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP search service",
        description=(
            "Serve POST /ingest, POST /search, DELETE /documents/{id} and GET /health over"
            " one index (OpenAPI at /docs). Needs the [server] extra."
        ),
    )
    _add_store_flags(serve, index_required=True, backends=("hnsw", "exact", "qdrant"))
    _add_encoder_flags(
        serve, model_help="hub id or local path (default: the index's model, else all-MiniLM-L6-v2)"
    )
    _add_prefix_flags(serve)
    _add_rerank_flags(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0: all)"
    )
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    serve.add_argument(
        "--api-key-env",
        default="SBERT_RETRIEVAL_API_KEY",
        metavar="NAME",
        help="environment variable holding the API key; no auth when unset or empty"
        " (default SBERT_RETRIEVAL_API_KEY)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=8 * 1024 * 1024,
        help="largest request body in bytes; larger gets 413 (default 8 MiB)",
    )
    serve.add_argument(
        "--max-k", type=_positive, default=1000, help="largest k a search may ask (default 1000)"
    )
    serve.add_argument(
        "--threads",
        type=_positive,
        default=4,
        help="worker threads for searches, reranking and writes (default 4)",
    )
    serve.add_argument(
        "--torch-threads",
        type=_positive,
        default=None,
        help="CPU threads per forward pass (default: one per core; 1 often wins on shared CPUs)",
    )
    serve.add_argument(
        "--read-only",
        action="store_true",
        help="search only (ingest/delete answer 403); the index is opened without its writer lock",
    )
    serve.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="default info",
    )
    serve.add_argument("--no-access-log", action="store_true", help="no line per request")
    _add_train_parser(commands)
    return parser


def _add_train_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sbert_retrieval.training.recipes import DATASETS, DEV_SETS

    train = commands.add_parser(
        "train",
        help="train a bi-encoder or a cross-encoder",
        description="Train on ../shared/data (train splits only) and save the model to --output.",
    )
    kinds = train.add_subparsers(dest="train_kind", required=True, metavar="KIND")
    for kind, losses, negatives, text in (
        (
            "bi-encoder",
            ("mnrl", "cosine", "softmax", "triplet"),
            0,
            "Fine-tune a sentence-transformers bi-encoder; saved in the sentence-transformers"
            " layout.",
        ),
        (
            "cross-encoder",
            ("bce", "mse"),
            4,
            "Train a one-label cross-encoder (a bi-encoder given as --model is turned into one"
            " first); saved as a transformers sequence-classification checkpoint.",
        ),
    ):
        sub = kinds.add_parser(kind, help=text.split(";")[0].lower(), description=text)
        sub.add_argument(
            "--model", default=None, help="hub id or local path (default all-MiniLM-L6-v2)"
        )
        sub.add_argument(
            "--data",
            nargs="+",
            required=True,
            choices=DATASETS,
            metavar="NAME",
            help=f"training sets, one or more of: {', '.join(DATASETS)}",
        )
        sub.add_argument(
            "--data-dir",
            default="../shared/data",
            help="data root with scifact/, stsb/, train/ (default ../shared/data)",
        )
        sub.add_argument("--loss", choices=losses, default=losses[0], help=f"default {losses[0]}")
        if kind == "cross-encoder":
            sub.add_argument(
                "--both-orders",
                action="store_true",
                help="also train on (b, a) for each (a, b) of the symmetric sets (stsb, msrp)",
            )
        sub.add_argument("--output", required=True, metavar="DIR", help="where the model goes")
        sub.add_argument("--epochs", type=_positive, default=1, help="default 1")
        sub.add_argument("--batch-size", type=_positive, default=32, help="default 32")
        sub.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (2e-5)")
        sub.add_argument(
            "--warmup-ratio", type=float, default=0.1, help="linear warm-up fraction (0.1)"
        )
        sub.add_argument("--weight-decay", type=float, default=0.01, help="default 0.01")
        sub.add_argument(
            "--max-grad-norm", type=float, default=1.0, help="clipping; 0 disables (1.0)"
        )
        sub.add_argument("--seed", type=int, default=42, help="default 42")
        sub.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default)")
        sub.add_argument(
            "--dtype",
            choices=("auto", "float32", "float16", "bfloat16"),
            default="auto",
            help="mixed precision: float16/bfloat16 autocast on CUDA only (default auto: float16"
            " on CUDA, float32 on CPU)",
        )
        sub.add_argument(
            "--max-seq-length", type=_positive, default=None, help="tokens per text / pair"
        )
        sub.add_argument(
            "--eval-steps", type=_non_negative, default=0, help="evaluate every N steps (0: end)"
        )
        sub.add_argument(
            "--save-steps", type=_non_negative, default=0, help="checkpoint every N steps (0: no)"
        )
        sub.add_argument(
            "--save-total-limit", type=_positive, default=None, help="keep the newest N"
        )
        sub.add_argument("--max-steps", type=_positive, default=None, help="stop after N steps")
        sub.add_argument(
            "--keep-best",
            action="store_true",
            help="save the weights of the best dev evaluation, not the last step's (evaluate"
            " with --eval-steps)",
        )
        sub.add_argument(
            "--resume-from",
            default=None,
            metavar="CHECKPOINT",
            help="a checkpoint-STEP folder, or 'latest' in --output",
        )
        sub.add_argument(
            "--max-examples",
            type=_positive,
            default=None,
            help="at most N examples (queries for scifact/squad) per dataset, for smoke runs",
        )
        sub.add_argument("--dev", choices=DEV_SETS, default="auto", help="dev set (default auto)")
        sub.add_argument("--max-dev-examples", type=_positive, default=None, help="cap the dev set")
        sub.add_argument(
            "--save-dtype",
            choices=("float32", "float16", "bfloat16"),
            default="float32",
            help="dtype of the final weights (default float32)",
        )
        mining = sub.add_argument_group("hard-negative mining (scifact, squad)")
        mining.add_argument(
            "--hard-negatives",
            type=_non_negative,
            default=negatives,
            help=f"mined negatives per query (default {negatives})",
        )
        mining.add_argument(
            "--miner", default=None, help="bi-encoder that mines (default all-MiniLM-L6-v2)"
        )
        mining.add_argument(
            "--mine-top-k", type=_positive, default=30, help="candidate depth (default 30)"
        )
        mining.add_argument(
            "--mine-skip", type=_non_negative, default=0, help="top candidates skipped (0)"
        )
        mining.add_argument(
            "--mine-sampling", choices=("top", "random"), default="top", help="default top"
        )
        mining.add_argument(
            "--mine-margin",
            type=float,
            default=None,
            help="keep candidates scoring <= (1 - margin) x the lowest positive",
        )
        mining.add_argument(
            "--cache-dir",
            default=None,
            help="reuse the miner's corpus vectors (default: ~/.cache/sbert_retrieval/embeddings)",
        )
        mining.add_argument(
            "--no-cache", action="store_true", help="always encode the corpus to mine"
        )
        sub.add_argument("--progress", action="store_true", help="progress bar and step logs")
        sub.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_reranker_parser(kinds)


def _add_reranker_parser(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sbert_retrieval.training.reranker import (
        RERANKER_TRAINING,
        SCIFACT_DEV_SPLITS,
        RerankerRecipe,
    )

    recipe = RerankerRecipe()
    sub = kinds.add_parser(
        "reranker",
        help="train the relevance reranker (the recipe the shipped one was trained with)",
        description=(
            "Mine first-stage negatives (dense and BM25 over each whole corpus) for SQuAD,"
            " WikiQA/TrecQA and SciFact train, then train a listwise cross-encoder from"
            " --model's transformer; dev: WikiQA dev and held-out SciFact train claims, dense"
            " top-100 reranked. Run it again after an interruption: it continues from the"
            " newest checkpoint in --output."
        ),
    )
    sub.add_argument("--output", required=True, metavar="DIR", help="where the model goes")
    sub.add_argument(
        "--model", default=None, help="bi-encoder to start from and mine with (all-MiniLM-L6-v2)"
    )
    sub.add_argument(
        "--data-dir", default="../shared/data", help="data root (default ../shared/data)"
    )
    for name, value, text in (
        ("--squad-sentences", recipe.squad_sentences, "SQuAD questions at sentence level"),
        ("--squad-paragraphs", recipe.squad_paragraphs, "SQuAD questions at paragraph level"),
        ("--qa-rounds", recipe.answer_selection_rounds, "passes over WikiQA/TrecQA questions"),
        ("--scifact-rounds", recipe.scifact_rounds, "passes over SciFact train claims"),
    ):
        sub.add_argument(name, type=_non_negative, default=value, help=f"{text} ({value})")
    sub.add_argument(
        "--scifact",
        action=argparse.BooleanOptionalAction,
        default=recipe.scifact,
        help=f"train on SciFact train claims, a share held out as dev ({recipe.scifact})",
    )
    sub.add_argument(
        "--scifact-dev-by",
        choices=SCIFACT_DEV_SPLITS,
        default=recipe.scifact_dev_by,
        help="hold SciFact dev claims out by cited abstract (abstract: no dev answer is trained"
        f" on; the shipped recipe) or one by one (claim) ({recipe.scifact_dev_by})",
    )
    defaults = RERANKER_TRAINING
    sub.add_argument("--epochs", type=_positive, default=defaults.epochs)
    sub.add_argument(
        "--batch-size",
        type=_positive,
        default=defaults.batch_size,
        help=f"query groups per step ({defaults.batch_size})",
    )
    sub.add_argument("--lr", type=float, default=defaults.lr, help=f"peak ({defaults.lr})")
    sub.add_argument(
        "--max-seq-length",
        type=_positive,
        default=defaults.max_seq_length,
        help=f"tokens per pair ({defaults.max_seq_length})",
    )
    sub.add_argument("--seed", type=int, default=defaults.seed, help=f"default {defaults.seed}")
    sub.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default)")
    sub.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="autocast (default auto: float16 on CUDA, bfloat16 on a CPU with native bf16)",
    )
    sub.add_argument(
        "--eval-steps", type=_non_negative, default=defaults.eval_steps, help="dev every N steps"
    )
    sub.add_argument(
        "--save-steps",
        type=_non_negative,
        default=defaults.save_steps,
        help=f"checkpoint every N steps, for resuming ({defaults.save_steps})",
    )
    sub.add_argument("--max-steps", type=_positive, default=None, help="stop after N steps")
    sub.add_argument(
        "--save-dtype",
        choices=("float32", "float16", "bfloat16"),
        default=defaults.save_dtype,
        help=f"dtype of the final weights ({defaults.save_dtype})",
    )
    sub.add_argument("--progress", action="store_true", help="progress bar and step logs")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")


def _cache_dir(args: argparse.Namespace) -> Path | None:
    """Where corpus vectors are cached (``--cache-dir``), or None with ``--no-cache``."""
    if args.no_cache:
        return None
    from sbert_retrieval.models import cache_dir as default_cache_dir

    return Path(args.cache_dir) if args.cache_dir else default_cache_dir() / "embeddings"


def _encoder(args: argparse.Namespace, model: str | None) -> Any:
    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.models import DEFAULT_MODEL

    return BiEncoder(
        model or DEFAULT_MODEL,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_batch_tokens=getattr(args, "max_batch_tokens", None),
        backend=args.inference_backend,
    )


def _query_encoder(args: argparse.Namespace) -> Any:
    query_model = getattr(args, "query_model", None)
    return _encoder(args, query_model) if query_model else None


def _prefixes(args: argparse.Namespace, encoder: Any) -> tuple[str, str]:
    from sbert_retrieval.models import default_prefixes

    return default_prefixes(encoder.prompts, args.query_prefix, args.passage_prefix)


def _store_config(args: argparse.Namespace) -> Any:
    from sbert_retrieval.stores.factory import StoreConfig

    if args.backend != "qdrant" and args.index is None and args._index_required:
        raise ValueError(f"--index DIR is required with --backend {args.backend}")
    return StoreConfig(
        backend=args.backend,
        index=args.index,
        qdrant_url=args.qdrant_url,
        qdrant_path=args.qdrant_path,
        collection=args.collection,
    )


def _reranker(args: argparse.Namespace) -> Any:
    if not args.rerank:
        return None
    from sbert_retrieval.reranking import CrossEncoderReranker, reranker_backend

    return CrossEncoderReranker(
        args.rerank,
        device=args.device,
        dtype=args.dtype,
        rerank_weight=args.rerank_weight,
        backend=reranker_backend(args.inference_backend),
    )


def _cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.chunking import ChunkingConfig
    from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
    from sbert_retrieval.stores.factory import open_store, stored_spec

    config = _store_config(args)
    existing = stored_spec(config)
    encoder = _encoder(args, args.model or (existing.model if existing else None))
    if existing is not None:
        query_prefix, passage_prefix = existing.query_prefix, existing.passage_prefix
        if (args.query_prefix, args.passage_prefix) != (None, None) and (
            (args.query_prefix or "", args.passage_prefix or "") != (query_prefix, passage_prefix)
        ):
            raise ValueError(
                f"the index uses query prefix {query_prefix!r} and passage prefix"
                f" {passage_prefix!r};"
                " prefixes cannot change once an index is built (ingest into a new index)"
            )
    else:
        query_prefix, passage_prefix = _prefixes(args, encoder)
    spec = encoder.spec(
        query_prefix=query_prefix, passage_prefix=passage_prefix, query_encoder=_query_encoder(args)
    )
    if existing is not None and not args.query_model:
        # Ingestion encodes passages only: keep whatever query tower the index records.
        spec = replace(spec, query_model=existing.query_model)
    ingest_config = IngestConfig(
        chunking=ChunkingConfig(chunk_tokens=args.chunk_tokens, overlap=args.overlap),
        doc_mode=args.doc_mode,
        show_progress=args.progress,
    )
    with open_store(config, spec) as store:
        report = IngestionPipeline(encoder, store, ingest_config).ingest(args.paths)
        total = store.count()
    result = report.to_dict()
    result["count"] = total
    return result


def _cmd_search(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sbert_retrieval.retrieval import Retriever
    from sbert_retrieval.stores.factory import open_store, stored_spec

    config = _store_config(args)
    spec = stored_spec(config)
    if spec is None:
        where = config.index if config.backend != "qdrant" else f"collection {config.collection}"
        raise ValueError(f"{where} holds no index; run 'sbert-retrieval ingest' first")
    encoder = _encoder(args, args.model or spec.model)
    filter_spec = json.loads(args.filter) if args.filter else None
    with open_store(config, read_only=config.backend != "qdrant") as store:
        retriever = Retriever(
            encoder,
            store,
            query_encoder=_query_encoder(args),
            reranker=_reranker(args),
            rerank_depth=args.rerank_depth,
            **_mode_settings(args),
        )
        hits = retriever.search(args.query, args.k, filter=filter_spec, doc_level=args.doc_level)
    return [h.to_dict() for h in hits]


def _mode_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": args.mode,
        "fusion": args.fusion,
        "alpha": args.alpha,
        "rrf_k": args.rrf_k,
        "candidates": args.candidates,
    }


def _cmd_eval_beir(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.evaluation.beir import evaluate_beir
    from sbert_retrieval.evaluation.data import load_beir_dataset
    from sbert_retrieval.stores.factory import StoreConfig, open_store

    dataset = load_beir_dataset(args.dataset, split=args.split)
    encoder = _encoder(args, args.model)
    query_prefix, passage_prefix = _prefixes(args, encoder)
    cache_dir = _cache_dir(args)
    factory = None
    if args.backend == "qdrant":
        config = _store_config(args)

        def factory(spec: Any) -> Any:
            return open_store(config, spec)
    elif args.index is not None:
        index_config = StoreConfig(backend=args.backend, index=args.index)

        def factory(spec: Any) -> Any:
            return open_store(index_config, spec)

    result = evaluate_beir(
        dataset,
        encoder,
        backend=args.backend,
        doc_mode=args.doc_mode,
        store_factory=factory,
        query_encoder=_query_encoder(args),
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        top_k=args.top_k,
        cache_dir=cache_dir,
        reranker=_reranker(args),
        rerank_depth=args.rerank_depth,
        show_progress=args.progress,
        **_mode_settings(args),
    )
    return result.to_dict()


def _cmd_eval_sts(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.evaluation.data import load_sts_tsv
    from sbert_retrieval.evaluation.sts import evaluate_sts

    pairs = load_sts_tsv(args.file)
    return evaluate_sts(pairs, _encoder(args, args.model), prefix=args.prefix).to_dict()


def _cmd_migrate_index(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.stores.migrate import migrate_index

    return asdict(migrate_index(args.index))


def _cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.errors import SbertRetrievalError

    try:
        from sbert_retrieval.integrations.server import ServerConfig, serve
    except ImportError as exc:
        raise SbertRetrievalError(
            f"{exc}; install the service with: pip install 'sbert-retrieval[server]'"
        ) from exc
    config = ServerConfig(
        store=_store_config(args),
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        inference_backend=args.inference_backend,
        batch_size=args.batch_size,
        query_prefix=args.query_prefix,
        passage_prefix=args.passage_prefix,
        api_key_env=args.api_key_env,
        max_body_bytes=args.max_body_bytes,
        max_k=args.max_k,
        rerank_model=args.rerank,
        rerank_depth=args.rerank_depth,
        rerank_weight=args.rerank_weight,
        read_only=args.read_only,
        threads=args.threads,
    )
    serve(
        config,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        torch_threads=args.torch_threads,
    )
    return {}


# TrainingConfig field → the ``train`` option holding it (absent options keep the base's).
_TRAINING_OPTIONS = {
    "output_dir": "output",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "seed": "seed",
    "device": "device",
    "precision": "dtype",
    "max_seq_length": "max_seq_length",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "max_steps": "max_steps",
    "save_dtype": "save_dtype",
    "show_progress": "progress",
    "keep_best": "keep_best",
}


def _training_config(args: argparse.Namespace, base: TrainingConfig) -> TrainingConfig:
    """``base`` with every setting the ``train`` command line gives; starts step logs with
    ``--progress``."""
    if args.progress:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = {f: getattr(args, o) for f, o in _TRAINING_OPTIONS.items() if hasattr(args, o)}
    return replace(base, **given)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    if args.train_kind == "reranker":
        return _train_reranker(args)
    from sbert_retrieval.models import DEFAULT_MODEL
    from sbert_retrieval.training.recipes import (
        MiningConfig,
        train_bi_encoder,
        train_cross_encoder,
    )
    from sbert_retrieval.training.trainer import TrainingConfig

    config = _training_config(args, TrainingConfig(output_dir=args.output))
    mining = MiningConfig(
        model=args.miner or DEFAULT_MODEL,
        num_negatives=args.hard_negatives,
        top_k=args.mine_top_k,
        skip_top=args.mine_skip,
        sampling=args.mine_sampling,
        relative_margin=args.mine_margin,
        cache_dir=_cache_dir(args),
    )
    common: dict[str, Any] = {
        "loss": args.loss,
        "data_dir": args.data_dir,
        "dev": args.dev,
        "max_examples": args.max_examples,
        "max_dev_examples": args.max_dev_examples,
        "mining": mining,
        "resume_from": args.resume_from,
        "command": getattr(args, "command_line", None),
    }
    if args.train_kind == "bi-encoder":
        return train_bi_encoder(args.model or DEFAULT_MODEL, args.data, config, **common)
    return train_cross_encoder(
        args.model or DEFAULT_MODEL, args.data, config, both_orders=args.both_orders, **common
    )


def _train_reranker(args: argparse.Namespace) -> dict[str, Any]:
    from sbert_retrieval.models import DEFAULT_MODEL
    from sbert_retrieval.training.reranker import (
        RERANKER_TRAINING,
        RerankerRecipe,
        train_reranker,
    )

    config = _training_config(args, RERANKER_TRAINING)
    recipe = replace(
        RerankerRecipe(),
        squad_sentences=args.squad_sentences,
        squad_paragraphs=args.squad_paragraphs,
        answer_selection_rounds=args.qa_rounds,
        scifact=args.scifact,
        scifact_rounds=args.scifact_rounds,
        scifact_dev_by=args.scifact_dev_by,
    )
    return train_reranker(
        config,
        recipe,
        model=args.model or DEFAULT_MODEL,
        data_dir=args.data_dir,
        command=getattr(args, "command_line", None),
    )


def _print_human(command: str, result: Any) -> None:
    if command == "search":
        for rank, hit in enumerate(result, 1):
            snippet = " ".join(hit["text"].split())[:160]
            print(
                f"{rank:>3}. {hit['score']:.4f}  {hit['doc_id']}"
                f" [{hit['start']}:{hit['end']}]  {snippet}"
            )
        if not result:
            print("no hits")
        return
    failures = result.pop("failures", None) if isinstance(result, dict) else None
    for key, value in result.items():
        if key == "metrics":
            continue
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    for failure in failures or []:
        print(f"skipped: {failure}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The exact invocation, for what records how it was made (a trained model's card).
    args.command_line = shlex.join(["sbert-retrieval", *(sys.argv[1:] if argv is None else argv)])
    _quiet_transformers()
    from sbert_retrieval.errors import SbertRetrievalError

    handlers = {
        "ingest": _cmd_ingest,
        "search": _cmd_search,
        "beir": _cmd_eval_beir,
        "sts": _cmd_eval_sts,
        "serve": _cmd_serve,
        "train": _cmd_train,
        "migrate-index": _cmd_migrate_index,
    }
    name = args.benchmark if args.command == "eval" else args.command
    try:
        result = handlers[name](args)
    except (SbertRetrievalError, ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result, ensure_ascii=False, indent=None if name == "search" else 1))
    else:
        _print_human(args.command, result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
