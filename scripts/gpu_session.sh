#!/usr/bin/env bash
# Run on the device machine (H100/H200), over a tree carrying .gpu/ (scripts/gpu_prepare.sh):
#
#   run(carry=[".gpu"], command="scripts/gpu_session.sh engine rerank")
#
# Stages, in the order given; each writes $OUT/STAGE.json (and its log to $OUT/STAGE.log):
#   engine     benchmarks/engine_throughput.py: ours vs sentence-transformers (fp16, 50k texts
#              per workload, ST at batch 64/128/256/512) + ingestion of 50k SciFact docs into HNSW
#   engine-process  the same encode rows with tokenizer worker processes instead of threads
#              (ST at 512 only, no ingestion): the issue's "whichever measures faster"
#   rerank     benchmarks/rerank_throughput.py: pairs/s over 20k (claim, abstract) pairs, fp16
#   reranker   scripts/train_reranker.sh relevance, then eval (acceptance 1); the model goes to
#              $OUT in 15 MiB pieces (cat them back together here)
#   finetune   scripts/finetune_scifact.sh (acceptance 2)
#   sts        scripts/train_reranker.sh sts, then eval (acceptance 3)
# Device time is 30 minutes a session: engine ~8 min, engine-process ~4, rerank ~2, each
# training stage ~5-10.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true HF_HUB_OFFLINE=1
export SBERT_SHARED_DATA=$PWD/.gpu/data
if ! "$PY" -c "import hnswlib" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-build-isolation --no-deps --target /tmp/site \
    .gpu/pkgs/hnswlib-0.8.0.tar.gz .gpu/pkgs/tenacity-*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
MODEL=.gpu/minilm
common=(BASE_MODEL="$MODEL" DATA_DIR=.gpu/data DEVICE=cuda)

for stage in "$@"; do
  echo "== $stage" >&2
  case "$stage" in
    engine)
      "$PY" benchmarks/engine_throughput.py --model "$MODEL" --device cuda --dtype float16 \
        --texts 50000 --st-batch-sizes 64 128 256 512 --batch-size 1024 \
        --max-batch-tokens 131072 --ingest-docs 50000 --doc-batch-size 1024 \
        2> "$OUT/engine.log" > "$OUT/engine.json" ;;
    engine-process)
      "$PY" benchmarks/engine_throughput.py --model "$MODEL" --device cuda --dtype float16 \
        --texts 50000 --st-batch-sizes 512 --batch-size 1024 --max-batch-tokens 131072 \
        --worker-type process \
        2> "$OUT/engine-process.log" > "$OUT/engine-process.json" ;;
    rerank)
      "$PY" benchmarks/rerank_throughput.py --model "${RERANKER:-$MODEL}" --device cuda \
        --retriever "$MODEL" --dtype float16 --reference-dtype float16 --batch-size 256 --throughput-pairs 20000 --queries 0 \
        2> "$OUT/rerank.log" > "$OUT/rerank.json" ;;
    reranker)
      env "${common[@]}" scripts/train_reranker.sh relevance > "$OUT/reranker.json" 2> "$OUT/reranker.log"
      env "${common[@]}" scripts/train_reranker.sh eval >> "$OUT/reranker.json" 2>> "$OUT/reranker.log"
      split -b 15M runs/reranker/minilm-l6-scifact/model.safetensors "$OUT/reranker.safetensors.part-" ;;
    finetune)
      env "${common[@]}" scripts/finetune_scifact.sh > "$OUT/finetune.json" 2> "$OUT/finetune.log" ;;
    sts)
      env "${common[@]}" scripts/train_reranker.sh sts > "$OUT/sts.json" 2> "$OUT/sts.log"
      env "${common[@]}" scripts/train_reranker.sh eval >> "$OUT/sts.json" 2>> "$OUT/sts.log" ;;
    *) echo "unknown stage $stage; valid: engine engine-process rerank reranker finetune sts" >&2; exit 2 ;;
  esac
done
