"""Evaluation: BEIR-style IR metrics and STS correlation, comparable to MTEB's numbers."""

from __future__ import annotations

from sbert_retrieval.evaluation.beir import BeirResult, evaluate_beir
from sbert_retrieval.evaluation.data import BeirDataset, StsPairs, load_beir_dataset, load_sts_tsv
from sbert_retrieval.evaluation.metrics import RetrievalScores, evaluate
from sbert_retrieval.evaluation.stats import pearson, spearman
from sbert_retrieval.evaluation.sts import StsResult, evaluate_sts

__all__ = [
    "BeirDataset",
    "BeirResult",
    "RetrievalScores",
    "StsPairs",
    "StsResult",
    "evaluate",
    "evaluate_beir",
    "evaluate_sts",
    "load_beir_dataset",
    "load_sts_tsv",
    "pearson",
    "spearman",
]
