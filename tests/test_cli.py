"""The CLI contract: command names, flags, JSON keys, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sbert_retrieval.cli import main

TEXTS = {
    "a.md": "# Cats\nCats purr and hunt mice at night.",
    "b.txt": "The stock market fell on inflation fears.",
    "c.txt": "Volcanoes erupt when magma rises to the surface.",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TEXTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_ingest_then_search(
    folder: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = str(tmp_path / "index")
    report = run_json(
        capsys, "ingest", str(folder), "--index", index, "--model", str(tiny_model_dir), "--json"
    )
    assert isinstance(report, dict)
    assert {"added", "updated", "unchanged", "failed", "chunks", "truncated"} <= set(report)
    assert (report["added"], report["failed"], report["truncated"]) == (3, 0, 0)
    # What auto chose is in the report (the suite pins float32 and torch alone).
    assert (report["precision"], report["inference"]) == ("float32", "torch")
    again = run_json(capsys, "ingest", str(folder), "--index", index, "--json")
    assert isinstance(again, dict)
    assert (again["added"], again["unchanged"], again["chunks"]) == (0, 3, 0)
    hits = run_json(capsys, "search", "--index", index, "cats", "-k", "2", "--json")
    assert isinstance(hits, list) and len(hits) == 2
    for hit in hits:
        assert {"doc_id", "score", "text", "start", "end", "metadata"} <= set(hit)
        # A folder's file ids are the folder's resolved path joined with the relative path.
        relative = hit["metadata"]["source"]
        assert hit["doc_id"] == f"{folder.resolve().as_posix()}/{relative}"
        assert TEXTS[relative][hit["start"] : hit["end"]] == hit["text"]
    c_id = f"{folder.resolve().as_posix()}/c.txt"
    filtered = run_json(
        capsys,
        "search",
        "--index",
        index,
        "cats",
        "--filter",
        json.dumps({"doc_id": c_id}),
        "--json",
    )
    assert [h["doc_id"] for h in filtered] == [c_id]  # type: ignore[index]
    assert main(["search", "--index", index, "cats"]) == 0
    assert "a.md" in capsys.readouterr().out


def test_ingest_chunk_flags(
    folder: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(
        capsys,
        "ingest",
        str(folder),
        "--index",
        str(tmp_path / "i"),
        "--model",
        str(tiny_model_dir),
        "--chunk-tokens",
        "4",
        "--overlap",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--json",
    )
    assert isinstance(report, dict)
    assert report["chunks"] > 3


def test_eval_sts(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tsv = tmp_path / "sts.tsv"
    rows = [
        ("5.0", "A cat sits.", "A cat is sitting."),
        ("0.5", "A cat sits.", "Stocks fell."),
        ("2.5", 'He said "hi".', "He greeted them."),
        ("4.0", "Dogs bark.", "A dog barks."),
    ]
    tsv.write_text(
        "score\tsentence1\tsentence2\n" + "".join("\t".join(r) + "\n" for r in rows),
        encoding="utf-8",
    )
    result = run_json(capsys, "eval", "sts", str(tsv), "--model", str(tiny_model_dir), "--json")
    assert isinstance(result, dict)
    assert set(result) >= {"spearman", "pearson", "pairs"}
    assert result["pairs"] == 4
    assert -1 <= result["spearman"] <= 1


def write_beir(root: Path) -> Path:
    root.mkdir()
    corpus = [
        {"_id": f"d{i}", "title": f"Title {i}", "text": t} for i, t in enumerate(TEXTS.values())
    ]
    corpus.append({"_id": "q1", "title": "", "text": "A document whose id equals a query id."})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": "q0", "text": "cats at night"}, {"_id": "q1", "text": "volcano magma"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td2\t1\n")
    return root


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
@pytest.mark.parametrize("doc_mode", ["truncate", "chunk"])
def test_eval_beir(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    doc_mode: str,
) -> None:
    dataset = write_beir(tmp_path / "beir")
    result = run_json(
        capsys,
        "eval",
        "beir",
        str(dataset),
        "--model",
        str(tiny_model_dir),
        "--backend",
        backend,
        "--doc-mode",
        doc_mode,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
    )
    assert isinstance(result, dict)
    assert {"ndcg@10", "mrr@10", "recall@100", "map@100", "queries", "docs", "seconds"} <= set(
        result
    )
    assert (result["queries"], result["docs"]) == (2, 4)
    # Every relevant document is among only 3 candidates (the q1 self-hit is dropped).
    assert result["recall@100"] == 1.0


def test_errors_are_one_line_and_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "--index", str(tmp_path / "missing"), "q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "ingest" in err and "\n" not in err
    assert main(["eval", "beir", str(tmp_path), "--backend", "exact"]) == 1
    assert capsys.readouterr().err.startswith("error:")
    with pytest.raises(SystemExit) as usage:
        main(["search", "--index", str(tmp_path), "q", "-k", "0"])
    assert usage.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [[], ["ingest"], ["search"], ["eval"], ["eval", "beir"], ["eval", "sts"]],
    ids=lambda a: " ".join(a) or "top",
)
def test_help_on_every_command(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sbert_retrieval.cli", *argv, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: sbert-retrieval")


def test_search_with_rerank(
    folder: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_reranking import build_cross_encoder

    index = str(tmp_path / "index")
    assert main(["ingest", str(folder), "--index", index, "--model", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    cross_encoder = build_cross_encoder(tmp_path / "ce")
    hits = run_json(
        capsys,
        "search",
        "--index",
        index,
        "cats",
        "-k",
        "2",
        "--rerank",
        str(cross_encoder),
        "--rerank-depth",
        "3",
        "--json",
    )
    assert isinstance(hits, list) and len(hits) == 2
    assert all(h["rerank_score"] == h["score"] and h["first_stage_score"] is not None for h in hits)
    assert hits[0]["score"] >= hits[1]["score"]


def test_two_towers_and_token_budget_flags(
    folder: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import build_tiny_model

    query_tower = str(build_tiny_model(tmp_path / "query-tower", seed=5))
    index = str(tmp_path / "index")
    model = ["--model", str(tiny_model_dir), "--max-batch-tokens", "64"]
    report = run_json(
        capsys,
        "ingest",
        str(folder),
        "--index",
        index,
        *model,
        "--query-model",
        query_tower,
        "--json",
    )
    assert isinstance(report, dict) and report["added"] == 3
    # Re-ingesting needs no query tower: ingestion encodes passages only.
    assert run_json(capsys, "ingest", str(folder), "--index", index, "--json")["unchanged"] == 3  # type: ignore[index]
    hits = run_json(
        capsys, "search", "--index", index, "cats", "--query-model", query_tower, "--json"
    )
    assert isinstance(hits, list) and hits
    assert main(["search", "--index", index, "cats"]) == 1
    assert "query_model" in capsys.readouterr().err
