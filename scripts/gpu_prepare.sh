#!/usr/bin/env bash
# Build .gpu/ (git-ignored): everything a device-machine session needs
# that the working tree does not carry. Run here, once per session, before run(carry=[".gpu"]).
#
#   .gpu/minilm/        all-MiniLM-L6-v2 in fp16 safetensors (~44 MiB; the carry limit is 64)
#   .gpu/data/          scifact, stsb, train/{squad_v1.1,wikiqa,trecqa} from ../shared/data
#   .gpu/pkgs/          hnswlib's sdist (no wheel exists; built there in ~35 s) and tenacity
#
# The device image already has torch, transformers, tokenizers and sentence-transformers.
# Then, on the device: scripts/gpu_session.sh STAGE... (see that file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf .gpu && mkdir -p .gpu/data/train .gpu/pkgs
cp -r ../shared/data/scifact ../shared/data/stsb .gpu/data/
cp -r ../shared/data/train/squad_v1.1 ../shared/data/train/wikiqa ../shared/data/train/trecqa \
  .gpu/data/train/
"$PY" - <<'PYEOF'
from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.training import save_bi_encoder

save_bi_encoder(BiEncoder(device="cpu"), ".gpu/minilm", dtype="float16")
PYEOF
sdist=https://files.pythonhosted.org/packages/cf/7a/1a9b1405f2eb59515f06c3074750b03e0e96edf7fee0f6dd6df81d9c21d7/hnswlib-0.8.0.tar.gz
curl -sSLf -o .gpu/pkgs/hnswlib-0.8.0.tar.gz "$sdist"
echo "cb6d037eedebb34a7134e7dc78966441dfd04c9cf5ee93911be911ced951c44c  .gpu/pkgs/hnswlib-0.8.0.tar.gz" \
  | sha256sum -c -
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .gpu/pkgs "tenacity>=8"
du -sh .gpu
