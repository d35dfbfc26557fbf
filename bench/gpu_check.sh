#!/usr/bin/env bash
# The GPU check of hdmap_train: GPU tests, bench/gpu.py for four models (plus a profile and bf16 / channels_last /
# TF32 variants of DRAEM), a warm single run, and a sweep at jobs_per_gpu 1 and 4 with GPU utilisation sampled.
# One summary: $OUT/summary.md; logs and the sweeps' records: $OUT/logs.tar.gz.
#
#   On the GPU machine (device tool), from the repository root, carrying the wheels the image lacks in .whl/
#   (README "GPU check"; the list: ../shared/gpu/wheels.txt):
#       bash bench/gpu_check.sh
#   Here, a CPU dry run of the whole script at tiny sizes with .venv's Python (no wheels, no nvidia-smi):
#       DRY_RUN=1 bash bench/gpu_check.sh
#
# STAGES picks stages (default: all, in this order); DEADLINE (seconds, default 540) ends every stage by then so
# that one stuck stage cannot eat the lease; each stage has its own limit too, and a failing stage does not stop
# the next. BENCH_N sets the bench's training images (default 500); SWEEP_EPOCHS the sweep jobs' epochs (3).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/.gpu_check}; mkdir -p "$OUT"
W=$(mktemp -d /tmp/gpu_check.XXXX); LOGS=$W/logs; mkdir -p "$LOGS"
STAGES=${STAGES:-"env tests bench profile variants devcache precision warm sweep1 sweep4"}
BENCH_N=${BENCH_N:-500}; QUICK_EXTRA=""
if [[ -n "${DRY_RUN:-}" ]]; then
  PY=${PY:-$ROOT/.venv/bin/python}; TRAINER=cpu; SIZE=tiny; BENCH_N=20
  BENCH_EXTRA="--tiny --trainer cpu --n-test 4 --train-batches 3 --warmup 1"; SWEEP_DOMAINS=A,B
  DEADLINE=${DEADLINE:-2400}; SWEEP_EPOCHS=1; QUICK_EXTRA="model.max_epochs=1"; LIMIT_SCALE=4  # a CPU is slower
else
  PY=${PY:-python3}; TRAINER=gpu; SIZE=cpu; BENCH_EXTRA="--random-weights --n-test 100"; SWEEP_DOMAINS=A,B,C,D
fi
DEADLINE=${DEADLINE:-540}; SWEEP_EPOCHS=${SWEEP_EPOCHS:-3}
START=$(date +%s)
say() { echo "$*" | tee -a "$OUT/summary.md"; }
stage() {  # stage NAME SECONDS COMMAND...: run in the repository root, log to $LOGS/NAME.log, cut at the deadline
  local name=$1 limit=$(( $2 * ${LIMIT_SCALE:-1} )) t0 rc left; shift 2
  left=$(( DEADLINE - ($(date +%s) - START) )); (( left < limit )) && limit=$left
  (( limit < 20 )) && { say "- stage $name skipped: ${left}s left before the deadline"; return 124; }
  t0=$(date +%s); (cd "$ROOT" && timeout -k 5 "$limit" "$@") > "$LOGS/$name.log" 2>&1; rc=$?
  say "- stage $name: rc=$rc, $(( $(date +%s) - t0 )) s"
  return $rc
}
want() { [[ " $STAGES " == *" $1 "* ]]; }
sample_gpu() {  # sample_gpu FILE: GPU utilisation and memory every 0.5 s until killed (nothing without nvidia-smi)
  command -v nvidia-smi >/dev/null && exec nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$1"
}
finish() { tar -czf "$OUT/logs.tar.gz" -C "$W" logs $(cd "$W" && ls -d sweep*/*/metrics.json sweep*/summary.* warm/metrics.json warm/train.log 2>/dev/null) 2>/dev/null
           say "- done after $(( $(date +%s) - START )) s"; }
trap finish EXIT

if [[ -z "${DRY_RUN:-}" ]]; then  # the image has torch, Lightning, timm; anomalib, Hydra and a few more come as wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl \
    > "$LOGS/pip.log" 2>&1 || { say "pip install of .whl/ failed: $(tail -1 "$LOGS/pip.log")"; exit 1; }
  mkdir -p /tmp/site/hdmap_train-0.1.0.dist-info  # the project runs from its source tree; its records read its version
  printf 'Metadata-Version: 2.1\nName: hdmap_train\nVersion: 0.1.0\n' > /tmp/site/hdmap_train-0.1.0.dist-info/METADATA
  export PYTHONPATH=/tmp/site:$ROOT
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
say "# hdmap_train GPU check ($(date -u +%F), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)${DRY_RUN:+, CPU dry run})"
say ""

if want env; then
  stage env 60 $PY -c "
import subprocess, time, torch, lightning, anomalib, hydra
t = time.perf_counter(); import hdmap_train.train
print('import hdmap_train.train', round(time.perf_counter() - t, 2), 's')
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')
print('lightning', lightning.__version__, 'anomalib', anomalib.__version__, 'hydra', hydra.__version__)"
  sed 's/^/    /' "$LOGS/env.log" | tail -3 | tee -a "$OUT/summary.md"
fi
if want tests; then
  stage tests 120 $PY -m pytest -m gpu -q -p no:cacheprovider -o addopts="" tests
  tail -3 "$LOGS/tests.log" | sed 's/^/    /' | tee -a "$OUT/summary.md"
fi
bench() {  # bench NAME ARGS...: bench/gpu.py into $W/NAME.md, its table rows into the summary
  local name=$1; shift
  stage "$name" 150 $PY bench/gpu.py --n-train "$BENCH_N" $BENCH_EXTRA --out "$W/$name.md" "$@"
  if [[ -f "$W/$name.md" ]]; then cat "$W/$name.md" >> "$OUT/summary.md"; cp "$W"/$name.*.profile.txt "$LOGS"/ 2>/dev/null
  else tail -3 "$LOGS/$name.log" | sed 's/^/    /' | tee -a "$OUT/summary.md"; fi
  say ""
}
want bench && { say "## bench/gpu.py, four models, paper size, $BENCH_N training images"; bench bench_models; }
want profile && { say "## One DRAEM training step, by part"; bench profile_draem --models draem draem_cutpaste --profile; }
if want variants; then
  say "## DRAEM: bf16-mixed, channels_last, TF32"
  bench variant_bf16 --models draem --precision bf16-mixed
  bench variant_bf16_cl --models draem --precision bf16-mixed --channels-last
  bench variant_tf32 --models draem --tf32
fi
want devcache && { say "## data.device_cache=true"; bench devcache --models draem --data device_cache=true; }

if want precision; then  # does bf16-mixed keep DRAEM's AUROC? The quick start at three seeds, fp32 against bf16-mixed
  say "## DRAEM's AUROC in fp32 and bf16-mixed (the quick start, seeds 0-2)"
  stage precision 150 $PY -m hdmap_train --multirun experiment=quickstart trainer=$TRAINER seed=0,1,2 \
    trainer.precision=32-true,bf16-mixed $QUICK_EXTRA paths.cache_dir="$W/cache" hydra.sweep.dir="$W/precision"
  $PY -c "
import glob, json
rows = sorted((r['condition']['config']['trainer']['precision'], r['condition']['config']['seed'], r['status'], r['source_results']['image_AUROC'], r['avg_target_auroc'])
              for r in (json.load(open(f)) for f in glob.glob('$W/precision/*/metrics.json')))
for precision, seed, status, source, target in rows: print(f'    {precision} seed {seed}: {status}, source AUROC {source:.4f}, avg target AUROC {target:.4f}')" \
    2>&1 | tail -6 | tee -a "$OUT/summary.md"
fi

SWEEP="model=draem,draem_cutpaste size=$SIZE data=synthetic trainer=$TRAINER domain=$SWEEP_DOMAINS model.max_epochs=$SWEEP_EPOCHS paths.cache_dir=$W/cache"
if want warm; then  # one run at CPU size: writes the synthetic dataset both sweeps read, and times a single job
  say "## A single run and two sweeps at CPU size (32x96)"
  stage warm 120 $PY -m hdmap_train model=draem size=$SIZE data=synthetic trainer=$TRAINER domain=A model.max_epochs=$SWEEP_EPOCHS \
    paths.cache_dir="$W/cache" hydra.run.dir="$W/warm"
  $PY -c "import json; r = json.load(open('$W/warm/metrics.json')); e = r.get('efficiency', {})
print('    warm run:', r['status'], '| source AUROC', r['source_results']['image_AUROC'], '| fit s', r['training_info']['fit_seconds'], '| device', e.get('device'))" \
    2>&1 | tail -1 | tee -a "$OUT/summary.md"
fi
declare -A SWEEP_SECONDS
for k in 1 4; do
  want "sweep$k" || continue
  sample_gpu "$LOGS/util_sweep$k.csv" & sampler=$!
  t0=$(date +%s)
  stage "sweep$k" 200 $PY -m hdmap_train --multirun hydra/launcher=gpus jobs_per_gpu=$k $SWEEP hydra.sweep.dir="$W/sweep$k"
  SWEEP_SECONDS[$k]=$(( $(date +%s) - t0 ))
  kill $sampler 2>/dev/null
  jobs=$(ls "$W/sweep$k"/*/metrics.json 2>/dev/null | wc -l)
  ok=$(grep -l '"status": "success"' "$W/sweep$k"/*/metrics.json 2>/dev/null | wc -l)
  say "    sweep jobs_per_gpu=$k: ${SWEEP_SECONDS[$k]} s, $ok of $jobs jobs successful"
  [[ -s "$LOGS/util_sweep$k.csv" ]] && awk -F', ' '{u += $1; if ($2 > m) m = $2; n++} END {if (n) printf "    GPU utilisation mean %.1f %% over %d samples (every 0.5 s), peak memory used %d MiB\n", u / n, n, m}' \
    "$LOGS/util_sweep$k.csv" | tee -a "$OUT/summary.md"
  grep -h "Leased GPU slot" "$W/sweep$k"/*/*.log 2>/dev/null | sed 's/.*Leased/Leased/' | sort | uniq -c | sed 's/^/    /' | tee -a "$OUT/summary.md"
done
if [[ -n "${SWEEP_SECONDS[1]:-}" && -n "${SWEEP_SECONDS[4]:-}" && "${SWEEP_SECONDS[4]}" -gt 0 ]]; then
  say "    jobs_per_gpu=4 against 1: $(awk "BEGIN {printf \"%.2f\", ${SWEEP_SECONDS[1]} / ${SWEEP_SECONDS[4]}}")x faster (goal >= 2.5)"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv | sed 's/^/    /' >> "$OUT/summary.md"
exit 0
