#!/usr/bin/env bash
# Train the project's MiniLM-L6 cross-encoders (issue 5) -- meant for the GPU machine.
#
#   scripts/train_reranker.sh [relevance|sts|eval|all]      (default: all)
#
# relevance: the SciFact reranker. A BertForSequenceClassification is initialised from the
#   all-MiniLM-L6-v2 encoder (every transformer weight copied, head seeded), then trained with
#   binary cross-entropy on (query, passage, 0/1): SciFact train (809 claims, 919 positives) and
#   SQuAD v1.1 train (capped at MAX_QUERIES questions), each positive plus HARD_NEGATIVES
#   negatives mined by all-MiniLM-L6-v2 from the same corpus (top MINE_TOP_K, never a positive),
#   plus WikiQA and TrecQA train with their labelled candidates. fp16 autocast + gradient scaler;
#   final weights saved in fp16. Dev: WikiQA dev (MAP). Never reads a test split.
# sts: the STSb cross-encoder (acceptance 3), sentence-transformers' recipe: same initialisation,
#   binary cross-entropy on score/5 (STS_LOSS=mse: MSE of sigmoid(logit)) over both orders of
#   each STSb train pair, 4 epochs of 719 steps; STSb dev after each epoch, the best one is kept.
# Every trained model gets a model card (README.md: data, settings, dev metrics, the command);
# eval appends the test scores to it.
# eval: acceptance 1 (dense all-MiniLM-L6-v2 top-100 on SciFact test, reranked) and acceptance 3
#   (STSb test Spearman of the STS cross-encoder).
#
# Settings (environment):
#   BASE_MODEL  bi-encoder to start from and mine with (default sentence-transformers/all-MiniLM-L6-v2)
#   STS_MODEL   bi-encoder the STSb cross-encoder starts from (default BASE_MODEL; e.g.
#               sentence-transformers/all-mpnet-base-v2); STS_EPOCHS, STS_BATCH, STS_LOSS,
#               STS_EVAL_STEPS (0: evaluate at the end only)
#   DATA_DIR    data root with scifact/, stsb/, train/ (default ../shared/data)
#   OUT_DIR     where the models go (default runs/reranker); RELEVANCE_OUT, STS_OUT override each
#   DEVICE      cuda (default), cpu; DTYPE float16 (default on cuda), bfloat16, float32
#   EPOCHS BATCH LR MAX_LEN HARD_NEGATIVES MINE_TOP_K MAX_QUERIES SEED: see the defaults below
#   EXTRA_ARGS  appended to every train command (e.g. "--max-examples 8 --max-steps 2" to smoke)
#   DRY_RUN=1   print the commands only
#
# On the device machine (see /work/.library/device/README.md): ../shared does not travel and
# nothing can be downloaded there, so carry what the run needs in an ignored folder, e.g. here:
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/data/train
#   cp -r ../shared/data/scifact ../shared/data/stsb .gpu/data/
#   cp -r ../shared/data/train/{squad_v1.1,wikiqa,trecqa} .gpu/data/train/
#   .venv/bin/python -c "from sbert_retrieval.encoding import BiEncoder; from sbert_retrieval.training import save_bi_encoder; save_bi_encoder(BiEncoder(device='cpu'), '.gpu/minilm', dtype='float16')"
# (the fp16 copy, ~44 MiB, keeps the carry under 64 MiB; for bit-exact fp32 weights carry two
# halves of model.safetensors in two calls instead and `cat` them there), then
#   run(carry=[".gpu"], command="BASE_MODEL=.gpu/minilm DATA_DIR=.gpu/data scripts/train_reranker.sh relevance")
# and bring the model back in pieces under 16 MiB:
#   split -b 15M runs/reranker/minilm-l6-scifact/model.safetensors $OUT/model.safetensors.part-
# hnswlib has no binary wheel and is not on that machine; training never builds an HNSW index,
# so when it is missing this script puts an empty stand-in module on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."

stage=${1:-all}
case "$stage" in relevance|sts|eval|all) ;; *)
  echo "usage: $0 [relevance|sts|eval|all]" >&2; exit 2 ;;
esac

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
if ! "$PY" -c "import hnswlib" 2>/dev/null; then
  stub=$(mktemp -d); : > "$stub/hnswlib.py"; export PYTHONPATH="$stub:$PYTHONPATH"
  echo "note: hnswlib missing; using an empty stand-in (training uses exact search only)" >&2
fi

BASE_MODEL=${BASE_MODEL:-sentence-transformers/all-MiniLM-L6-v2}
DATA_DIR=${DATA_DIR:-../shared/data}
OUT_DIR=${OUT_DIR:-runs/reranker}
RELEVANCE_OUT=${RELEVANCE_OUT:-$OUT_DIR/minilm-l6-scifact}
STS_OUT=${STS_OUT:-$OUT_DIR/minilm-l6-stsb}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-$([ "$DEVICE" = cpu ] && echo float32 || echo float16)}
SAVE_DTYPE=$([ "$DEVICE" = cpu ] && echo float32 || echo float16)
SEED=${SEED:-42}
EXTRA_ARGS=${EXTRA_ARGS:-}

run() {
  echo "+ $*" >&2
  if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}
cli() { run "$PY" -m sbert_retrieval.cli "$@"; }

if [ "$stage" = relevance ] || [ "$stage" = all ]; then
  # shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
  cli train cross-encoder \
    --model "$BASE_MODEL" --miner "$BASE_MODEL" \
    --data scifact squad wikiqa trecqa --data-dir "$DATA_DIR" \
    --loss bce --hard-negatives "${HARD_NEGATIVES:-8}" --mine-top-k "${MINE_TOP_K:-30}" \
    --max-examples "${MAX_QUERIES:-20000}" \
    --epochs "${EPOCHS:-2}" --batch-size "${BATCH:-32}" --lr "${LR:-2e-5}" --warmup-ratio 0.1 \
    --max-seq-length "${MAX_LEN:-512}" --seed "$SEED" \
    --device "$DEVICE" --dtype "$DTYPE" --save-dtype "$SAVE_DTYPE" \
    --eval-steps 2000 --save-steps 2000 --save-total-limit 1 \
    --output "$RELEVANCE_OUT" --progress --json $EXTRA_ARGS
fi

if [ "$stage" = sts ] || [ "$stage" = all ]; then
  # shellcheck disable=SC2086
  cli train cross-encoder \
    --model "${STS_MODEL:-$BASE_MODEL}" --data stsb --data-dir "$DATA_DIR" --loss "${STS_LOSS:-bce}" --both-orders \
    --epochs "${STS_EPOCHS:-4}" --batch-size "${STS_BATCH:-16}" --lr "${LR:-2e-5}" --warmup-ratio 0.1 \
    --max-seq-length 128 --seed "$SEED" --eval-steps "${STS_EVAL_STEPS:-719}" --keep-best \
    --device "$DEVICE" --dtype "$DTYPE" --save-dtype "$SAVE_DTYPE" \
    --output "$STS_OUT" --progress --json $EXTRA_ARGS
fi

if [ "$stage" = eval ] || [ "$stage" = all ]; then
  # Each model is scored only if it has been trained (so `relevance` then `eval` works alone).
  if [ -f "$RELEVANCE_OUT/model.safetensors" ] || [ -n "${DRY_RUN:-}" ]; then
    # Acceptance 1: nDCG@10 >= 0.70 (dense alone 0.645).
    report=$(mktemp)
    cli eval beir "$DATA_DIR/scifact" --model "$BASE_MODEL" --device "$DEVICE" --no-cache \
      --rerank "$RELEVANCE_OUT" --rerank-depth 100 --json | tee "$report"
    if [ -z "${DRY_RUN:-}" ]; then
      "$PY" - "$report" "$RELEVANCE_OUT" <<'EOF'
import json, sys
from sbert_retrieval.training import append_evaluation
report = json.load(open(sys.argv[1]))
metrics = {k: report[k] for k in ("ndcg@10", "mrr@10", "recall@100") if k in report}
append_evaluation(sys.argv[2], "SciFact test, dense all-MiniLM-L6-v2 top-100 reranked", metrics)
EOF
    fi
    rm -f "$report"
  else
    echo "skip: no model in $RELEVANCE_OUT (run the relevance stage)" >&2
  fi
  if [ -f "$STS_OUT/model.safetensors" ] || [ -n "${DRY_RUN:-}" ]; then
    # Acceptance 3: STSb test Spearman >= 0.85 (scored once, at the end; never trained on).
    run "$PY" - "$DATA_DIR/stsb/test.tsv" "$STS_OUT" "$DEVICE" <<'EOF'
import json, sys
from sbert_retrieval.evaluation.data import load_sts_tsv
from sbert_retrieval.reranking import CrossEncoderReranker
from sbert_retrieval.training import StsEvaluator, append_evaluation
path, model, device = sys.argv[1:4]
scores = StsEvaluator(load_sts_tsv(path))(CrossEncoderReranker(model, device=device))
print(json.dumps({"model": model, "stsb_test": scores}))
append_evaluation(model, "STSb test", scores)
EOF
  else
    echo "skip: no model in $STS_OUT (run the sts stage)" >&2
  fi
fi
