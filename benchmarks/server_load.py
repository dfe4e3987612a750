"""Load test of the HTTP service: concurrent clients searching a 10k-chunk HNSW index.

    python benchmarks/server_load.py                   # 50 clients, 30 s, all-MiniLM-L6-v2
    python benchmarks/server_load.py --clients 10 --duration 10 --out runs/load.json

Index: ``--chunks`` distinct STS Benchmark sentences (train, dev, test order; 15,487 exist),
one document and one point each (ids ``stsb-<n>``, metadata ``{"split_index": n % 10}``;
ingested whole, ``doc_mode="truncate"``, so a short model window never splits one),
ingested with the pipeline into an HNSW index under ``runs/`` (reused when it already holds
exactly that many chunks of that model). Queries: the sentences that follow them (not in the
index), cycled. The index is built in this process; the service then runs as a subprocess
(``python -m sbert_retrieval.cli serve``) on 127.0.0.1 with an API key, so every request also
pays for the key check.

Load: ``--clients`` coroutines, one httpx client and connection each, each sending ``POST /search``
(``k=10``) back to back for ``--duration`` seconds, after ``--warmup`` sequential requests.
Reported as JSON: requests, errors (any non-200 or transport error; must be 0), throughput,
latency percentiles (client-side, ms), CPU seconds used by the service and by the load client
during the run, the index size and the machine. Client and service share the machine's cores,
so the figures are a lower bound of what the service alone does.
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, stsb_sentences

REPO = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def build_index(index: Path, model: str, chunks: int, batch_size: int) -> dict[str, Any]:
    """Ingest ``chunks`` STSb sentences into ``index`` unless it already holds exactly them."""
    from sbert_retrieval.documents import Document
    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
    from sbert_retrieval.stores import HnswStore
    from sbert_retrieval.stores.factory import StoreConfig, stored_spec

    sentences = stsb_sentences()
    if chunks > len(sentences):
        raise SystemExit(f"--chunks {chunks}: only {len(sentences)} distinct STSb sentences")
    started = time.perf_counter()
    encoder = BiEncoder(model, device="cpu", batch_size=batch_size)
    existing = stored_spec(StoreConfig(index=str(index)))
    with HnswStore(index, encoder.spec()) as store:
        if existing is not None and store.count() == chunks:
            return {"built": False, "count": store.count(), "seconds": 0.0}
        documents = [
            Document(f"stsb-{n}", text, {"split_index": n % 10})
            for n, text in enumerate(sentences[:chunks])
        ]
        # One point per sentence whatever the model's window (truncate mode).
        config = IngestConfig(doc_mode="truncate", show_progress=True)
        report = IngestionPipeline(encoder, store, config).ingest_records(documents)
        wanted = {d.id for d in documents}
        stale = [d for d in store.document_ids() if d not in wanted]
        store.delete_documents(stale)
        count = store.count()
    if count != chunks:
        raise SystemExit(f"index holds {count} chunks, expected {chunks}: {report.failures[:3]}")
    return {"built": True, "count": count, "seconds": round(time.perf_counter() - started, 1)}


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_server(args: argparse.Namespace, api_key: str, log: Path) -> tuple[Any, str]:
    command = [
        sys.executable, "-m", "sbert_retrieval.cli", "serve",
        "--index", str(args.index), "--model", args.model, "--device", "cpu",
        "--host", "127.0.0.1", "--port", "0", "--no-access-log",
        "--threads", str(args.threads), "--batch-size", str(args.batch_size),
    ]  # fmt: skip
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    if args.dtype:
        command += ["--dtype", args.dtype]
    command += ["--inference-backend", args.inference_backend]
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SBERT_RETRIEVAL_API_KEY": api_key},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        match = RUNNING.search(log.read_text(errors="replace"))
        if match:
            return process, f"http://127.0.0.1:{match.group(1)}"
        if process.poll() is not None:
            raise SystemExit(f"the service exited:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not start within 300 s")


async def run_load(
    url: str, api_key: str, queries: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    headers = {"X-API-Key": api_key}
    latencies: list[float] = []
    errors: list[str] = []
    # One client (one keep-alive connection) per simulated user: a single pooled client with
    # 50 connections costs the load generator several times more CPU per request.
    clients = [
        httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=args.timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(args.clients)
    ]
    try:
        for n, query in enumerate(queries[: args.warmup]):
            response = await clients[n % len(clients)].post(
                "/search", json={"query": query, "k": args.k}
            )
            response.raise_for_status()
        started = time.perf_counter()
        deadline = started + args.duration

        async def worker(offset: int) -> None:
            client = clients[offset]
            n = offset
            while time.perf_counter() < deadline:
                query = queries[n % len(queries)]
                n += args.clients
                sent = time.perf_counter()
                try:
                    response = await client.post("/search", json={"query": query, "k": args.k})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 200 or len(response.json()["hits"]) != args.k:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(worker(i) for i in range(args.clients)))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "requests": len(latencies) + sum(1 for e in errors if not e.startswith("HTTP")),
        "errors": len(errors),
        "zero_errors": not errors,
        "error_samples": errors[:5],
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p90": round(float(np.percentile(ms, 90)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1),
            "mean": round(float(ms.mean()), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--index", type=Path, default=REPO / "runs" / "server_load_index")
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--warmup", type=int, default=20, help="sequential requests first")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4, help="service worker threads")
    parser.add_argument("--batch-size", type=int, default=32, help="most queries per forward")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="service's torch CPU threads"
    )
    parser.add_argument(
        "--dtype", default=None, help="service's compute dtype (default: the service's auto)"
    )
    parser.add_argument(
        "--inference-backend", default="auto", help="service's encoder backend (default auto)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if not 1 <= args.clients <= 500 or not 0 < args.duration <= 600:
        raise SystemExit("--clients must be in [1, 500] and --duration in (0, 600]")

    load_before = os.getloadavg()[0]
    index_info = build_index(args.index, args.model, args.chunks, args.batch_size)
    queries = stsb_sentences()[args.chunks :] or stsb_sentences()
    api_key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        process, url = start_server(args, api_key, log)
        try:
            server_cpu, client_cpu = process_cpu_seconds(process.pid), own_cpu_seconds()
            load = asyncio.run(run_load(url, api_key, queries, args))
            server_after = process_cpu_seconds(process.pid)
            client_cpu = own_cpu_seconds() - client_cpu
            # CPU seconds used during warm-up and load: where the machine's cores went.
            load["cpu_seconds"] = {
                "service": None
                if server_cpu is None or server_after is None
                else round(server_after - server_cpu, 1),
                "load_client": round(client_cpu, 1),
            }
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    result = {
        "benchmark": "server_load",
        "index": {
            "backend": "hnsw",
            "chunks": index_info["count"],
            "contents": "distinct STS Benchmark sentences, one chunk each",
            "model": args.model,
            "built_now": index_info["built"],
            "build_seconds": index_info["seconds"],
        },
        "request": {"endpoint": "POST /search", "k": args.k, "auth": "X-API-Key"},
        "service": {
            "threads": args.threads,
            "query_batch": args.batch_size,
            "torch_threads": args.torch_threads or "default (one per core)",
            "device": "cpu",
        },
        "load": load,
        "machine": {
            **machine(),
            "cores": os.cpu_count(),
            "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if not load["zero_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
