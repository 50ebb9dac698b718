#!/usr/bin/env bash
# One pass over everything that needs a GPU, for a CUDA machine with PyTorch installed and no package
# registry: the device-relevant tests, `sct bench` inference and `--train` at 24x224 (fp32, bf16, bf16 +
# torch.compile), the peak memory of a training step at the paper's batch sizes (32 / 16 / 8 clips for
# SCT-S / M / L) and a 50-step `sct train` on the synthetic set. Every result goes to $OUT as JSON and
# Markdown (bench.json / bench.md per run, summary.md over all of them). Sized for at most 8 minutes on
# one H100/H200; each step has its own time limit, and a failing step is recorded and does not stop the rest.
#
#   OUT=/tmp/out benchmarks/device_check.sh                       # on the GPU machine
#   OUT=/tmp/out benchmarks/device_check.sh --wheels wheels/      # first install PyAV etc. from local wheels
#   OUT=/tmp/out benchmarks/device_check.sh --device cpu --tiny   # the same code paths on a CPU, tiny sizes
set -uo pipefail

DEVICE=cuda
TINY=0
WHEELS=""
PYTHON=${PYTHON:-python}
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --wheels) WHEELS=$2; shift 2 ;;
    *) echo "device_check.sh: unknown option $1 (use --device cpu|cuda, --tiny, --wheels DIR)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

if [ -n "$WHEELS" ]; then
  "$PYTHON" -m pip install --no-index --find-links "$WHEELS" av einops safetensors pyyaml tqdm matplotlib \
    transformers pytest || exit 1
  "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e . || exit 1
fi
SCT=("$PYTHON" -m sct)

if [ "$TINY" = 1 ]; then
  FRAMES=2; SIZE=32; BATCHES=(2 2 2); REPEATS=2; STEPS=4; LIMIT=900
  MODELS=(sct_s xvit_b16 hf:timesformer)
else
  FRAMES=24; SIZE=224; BATCHES=(32 16 8); REPEATS=10; STEPS=50; LIMIT=240
  MODELS=(sct_s sct_m sct_l xvit_b16 timesformer_b16 hf:timesformer hf:vivit hf:videomae)
fi
COMPILED=(sct_s xvit_b16)
SUMMARY="$OUT/summary.md"
echo "# device_check on $DEVICE ($(date -u +%FT%TZ))" > "$SUMMARY"
"$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" >> "$SUMMARY"

# step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the outcome.
step() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "- $name: exit $rc in $((SECONDS - start)) s" >> "$SUMMARY"
  [ -f "$OUT/$name/bench.md" ] && { echo; cat "$OUT/$name/bench.md"; echo; } >> "$SUMMARY"
  return 0
}

# Tests of the code the GPU runs: attention kernels (LSH's explicit path off the CPU), checkpointing,
# compile fallback, bench.
step tests "$LIMIT" "$PYTHON" -m pytest -q -x tests/test_lsh.py tests/test_grad_checkpointing.py \
  tests/test_compiled.py tests/test_bench.py tests/test_chunk_attention.py tests/test_shifted_attention.py

COMMON=(--device "$DEVICE" --frames "$FRAMES" --size "$SIZE" --batch 1 --repeats "$REPEATS" --warmup 2 --timeout "$LIMIT")
for dtype in fp32 bf16; do
  step "infer_$dtype" "$LIMIT" "${SCT[@]}" bench "${MODELS[@]}" "${COMMON[@]}" --dtype "$dtype" --out "$OUT/infer_$dtype"
  step "train_$dtype" "$LIMIT" "${SCT[@]}" bench "${MODELS[@]}" "${COMMON[@]}" --dtype "$dtype" --train \
    --out "$OUT/train_$dtype"
done
step infer_bf16_compile "$LIMIT" "${SCT[@]}" bench "${COMPILED[@]}" "${COMMON[@]}" --dtype bf16 --compile \
  --out "$OUT/infer_bf16_compile"
step train_bf16_compile "$LIMIT" "${SCT[@]}" bench "${COMPILED[@]}" "${COMMON[@]}" --dtype bf16 --compile --train \
  --out "$OUT/train_bf16_compile"

# Peak memory of a training step at the paper's batch sizes, with and without gradient checkpointing.
for i in 0 1 2; do
  model=(sct_s sct_m sct_l); model=${model[$i]}
  for ckpt in "" --grad-checkpointing; do
    step "memory_${model}${ckpt:+_ckpt}" "$LIMIT" "${SCT[@]}" bench "$model" --device "$DEVICE" --frames "$FRAMES" \
      --size "$SIZE" --batch "${BATCHES[$i]}" --repeats 3 --warmup 1 --dtype bf16 --train $ckpt \
      --out "$OUT/memory_${model}${ckpt:+_ckpt}"
  done
done

# A short real training run on the synthetic set.
step synth "$LIMIT" "${SCT[@]}" synth "$OUT/synth_data" --videos-per-class 20 --frames 16 --size 32 \
  --classes move_right,move_left,grow,shrink
step train_run "$LIMIT" "${SCT[@]}" train model.name=sct_tiny model.chunk_size=8 "data.root=$OUT/synth_data" \
  "output_dir=$OUT/train_run" data.num_frames=8 data.sampling_rate=2 data.crop_size=32 data.flip=false \
  optim.name=adamw optim.lr=0.0003 "train.device=$DEVICE" "train.max_steps=$STEPS" train.epochs=1000 \
  train.batch_size=8 train.num_workers=2 train.log_every_steps=10 train.eval_every_epochs=0
[ -f "$OUT/train_run/summary.json" ] && { echo; echo '```'; cat "$OUT/train_run/summary.json"; echo '```'; } >> "$SUMMARY"
cat "$SUMMARY"
