#!/usr/bin/env bash
# The GPU checks of the pretraining issue, as one short run for a lent device machine:
#
#   run(command="bash bench/gpu_checks.sh", timeout_s=540)      # the device tool; results in $OUT
#
# 1. forward+backward of the ~1.6B preset (configs/pretrain.py:1b's shape: bf16, remat "dots",
#    4 x 2048 tokens) under each attention implementation: cudnn, flash, xla (bench/forward_backward.py);
# 2. Hugging Face transformers + PyTorch training the same shape on the same GPU (bf16 autocast,
#    fp32 parameters and AdamW: bench/reference/torch_train_step.py --device=cuda);
# 3. the whole trainer (bench/train_step.py --config=configs/pretrain.py:1b) when the machine's
#    Python has Grain and ml_collections (the device image may not: the line then says why).
#
# Every result is one JSON line in $OUT/gpu_checks.jsonl (stderr of failures in $OUT/gpu_checks.log).
# It uses the machine's own python3 (its image holds JAX with CUDA, flax, optax, torch,
# transformers); PY, TORCH_PY, PRESET, BATCH, SEQ and IMPLS override the defaults (e.g. a CPU dry run:
# `PY=.venv/bin/python TORCH_PY=.venv-ref/bin/python PRESET=tiny BATCH=2 SEQ=256 IMPLS=flash
#  OUT=/tmp/g DATA=/tmp/g/data bash bench/gpu_checks.sh`; DATA: where the corpus is made).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
TORCH_PY=${TORCH_PY:-$PY}  # the interpreter holding torch + transformers
PRESET=${PRESET:-1b}
BATCH=${BATCH:-4}
SEQ=${SEQ:-2048}
IMPLS=${IMPLS:-cudnn flash xla}
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
RESULTS=$OUT/gpu_checks.jsonl LOG=$OUT/gpu_checks.log
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
note() { echo "{\"check\": \"$1\", \"failed\": \"$2\"}" >>"$RESULTS"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1

for impl in $IMPLS; do
  $PY bench/forward_backward.py --preset="$PRESET" --batch_size="$BATCH" --seq_len="$SEQ" \
      --compute_dtype=bfloat16 --remat=dots --attention_impl="$impl" --iters=5 \
      >>"$RESULTS" 2>>"$LOG" || note "forward_backward $impl" "exit $? (see gpu_checks.log)"
done

SHAPE=$($PY -c "import json, sys; from seedcoder_jax import model; from seedcoder_jax.interop import hf
print(json.dumps(hf.config_to_hf(model.preset(sys.argv[1]))))" "$PRESET")
DEVICE=cuda
$TORCH_PY -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || DEVICE=cpu
$TORCH_PY bench/reference/torch_train_step.py --shape="$SHAPE" --batch_size="$BATCH" --seq_len="$SEQ" \
    --steps=10 --warmup=3 --dtypes=bfloat16 --lr=3e-4 --device=$DEVICE \
    >>"$RESULTS" 2>>"$LOG" || note "torch_train_step" "exit $? (see gpu_checks.log)"

if $PY -c "import grain, ml_collections, array_record" 2>>"$LOG"; then
  DATA=${DATA:-workdir/data}  # a stdlib corpus and a 512-token tokenizer, made if missing
  if [ ! -d "$DATA/stdlib_corpus" ]; then
    $PY data/make_corpus.py --output="$DATA/stdlib_corpus" >>"$LOG" 2>&1
    $PY data/train_tokenizer.py --input="$DATA/stdlib_corpus" --vocab_size=512 \
        --max_chars=5000000 --output="$DATA/tokenizer/tiny.model" >>"$LOG" 2>&1
  fi
  VARIANT=$PRESET
  [ "$PRESET" = 1b ] || VARIANT=tiny
  $PY bench/train_step.py --config=configs/pretrain.py:$VARIANT --steps=10 --warmup=3 \
      --config.data.batch_size="$BATCH" --config.data.seq_len="$SEQ" \
      --config.data.corpora="('$DATA/stdlib_corpus',)" \
      --config.data.tokenizer="spm:$DATA/tokenizer/tiny.model" 2>>"$LOG" \
      | tail -n 1 >>"$RESULTS" || note "train_step" "exit $? (see gpu_checks.log)"
else
  note "train_step" "grain, ml_collections or array_record missing in $PY: carry their wheels"
fi
cat "$RESULTS"
