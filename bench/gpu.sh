#!/usr/bin/env bash
# The first minutes on a CUDA machine, in one command (under 10 minutes on one GPU): training throughput of the three
# models (a few hundred steps each), half-precision sampling of both tabs and of the cascade (with the upsampler's
# host-sync check and the same seed on CPU and GPU), then `python -m bench --device cuda`. Everything goes to ONE
# results file, one JSON object or log line per line.
#
#   bash bench/gpu.sh                      # writes bench/results_gpu.txt
#   bash bench/gpu.sh /tmp/gpu.txt         # elsewhere
#   GPU_SMOKE=1 bash bench/gpu.sh /tmp/x   # a few steps of everything on the CPU: checks the script itself, in minutes
#
# Data: 1,024 synthetic shapes at 32 and 128 px, drawn in seconds (throughput does not depend on the pictures; loading
# the 21,413 real pictures would take a minute of the ten); GPU_DATA=data/emoji-multi trains on the real ones
# (README "The data"). Runs go to a temporary folder; weights/ is only read. Each stage has a time limit, and all
# of them together stop at 9.5 minutes, so one stage that hangs cannot take the others' minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results_gpu.txt}"
WORK="$(mktemp -d /tmp/gpu_bench.XXXXXX)"
STEPS="${GPU_TRAIN_STEPS:-300}"
SMOKE="${GPU_SMOKE:-0}"
DEVICE=cuda
BENCH_ARGS=(--device cuda --dtype float16 --out "$WORK/bench.json")
if [ "$SMOKE" = 1 ]; then
  STEPS=2
  DEVICE=cpu
  BENCH_ARGS=(--tiny --out "$WORK/bench.json")
fi
DEADLINE=$((SECONDS + 570))
: >"$OUT"
log() { echo "$*" | tee -a "$OUT"; }
stage() {  # stage NAME SECONDS COMMAND...: the command's output into the results file, its exit status logged
  local name="$1" limit="$2"
  shift 2
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    log "== $name: skipped, the 9.5 minutes are spent"
    return
  fi
  log "== $name (limit ${limit}s): $*"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v -E '[0-9]+/[0-9]+ \[[0-9:]+<' | tee -a "$OUT"  # no progress bars
  log "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started))s"
}

log "== started $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null), work folder $WORK"
stage environment 60 python -c "import torch, diffusers, accelerate; print({'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'diffusers': diffusers.__version__, 'accelerate': accelerate.__version__})"
command -v nvidia-smi >/dev/null && stage nvidia-smi 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
if [ "$DEVICE" = cuda ] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  log "== no CUDA device: stopping (GPU_SMOKE=1 checks the script on the CPU)"
  exit 1
fi

DATA="${GPU_DATA:-$WORK/data}"
if [ -n "${GPU_DATA:-}" ]; then
  log "== data: $DATA"
else
  stage synthetic-data 60 python -m bench.gpu_checks data "$DATA" --count "$([ "$SMOKE" = 1 ] && echo 64 || echo 1024)"
fi

# training throughput: each model's CPU config (bf16 autocast; accelerate takes the GPU by itself), one checkpoint and
# one sample grid, at the last step
TRAIN_FLAGS=(--max-steps "$STEPS" --warmup-steps 20 --checkpoint-every 100000 --sample-every 100000 --log-every 10)
stage train-uncond 100 python -m uncond.train --data "$DATA/32" --out "$WORK/uncond" \
  --config configs/uncond_cpu32.json "${TRAIN_FLAGS[@]}"
stage train-txt2img 100 python -m txt2img.train --data "$DATA/32" --out "$WORK/txt2img" \
  --config configs/txt2img_cpu32.json --clip weights/clip "${TRAIN_FLAGS[@]}"
stage train-upscale 100 python -m uncond.train_upscale --data "$DATA/128" --out "$WORK/upscale" \
  --config configs/upscale_cpu128.json "${TRAIN_FLAGS[@]}"
stage throughput 30 python -m bench.gpu_checks throughput "$WORK/uncond" "$WORK/txt2img" "$WORK/upscale"

# sampling in half precision: both tabs' default requests alone and through the (just trained) upsampler
if [ "$SMOKE" = 1 ]; then
  stage sampling 300 python -m bench.gpu_checks sampling --upscale "$WORK/upscale" --device cpu --dtype float32 \
    --upscale-steps 2 --repeats 1
else
  stage sampling 100 python -m bench.gpu_checks sampling --upscale "$WORK/upscale" --device cuda --dtype float16
fi

# the benchmark against diffusers, with its own host-sync check of the base loops
stage bench 200 python -m bench "${BENCH_ARGS[@]}"
if [ -f "$WORK/bench.json" ]; then
  log "== bench JSON (every run's time, FLOP counts, host waits):"
  python -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$WORK/bench.json" | tee -a "$OUT"
fi
log "== finished $(date -u +%FT%TZ); results in $OUT"
