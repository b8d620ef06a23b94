#!/usr/bin/env bash
# The checks that need a GPU, as one command for a lent GPU machine, whose files come back
# from OUT (at most 8 files). Run tools/gpu_prepare.sh here first, then on that machine:
#
#   bash tools/gpu_check.sh "$OUT" 500     # OUT: a folder; 500: seconds the whole script may take
#
# 1. the tests that skip without CUDA (`pytest -k cuda tests`);
# 2. benchmarks/train_step.py --device cuda, peers beside, without and with --deterministic
#    (what train.deterministic costs there), and benchmarks/compaction.py --device cuda (dense
#    against compacted networks), inferring in batches of 100 (the mnist-snn preset's
#    train.batch_size, which the evaluate stage infers in), 1000 and 10000;
# 3. the pipeline's stages on the GPU without DVC or MLflow (digits, params.yaml as it is,
#    train.device auto): download, preprocess, train, evaluate (NeuroBench metrics, NIR
#    export). The CPUs measured gave 0.9556 / 0.616 (test accuracy / compression, AMD Zen 5)
#    and 0.9583 / 0.612 (an earlier AMD EPYC), an H200 0.9611 / 0.617 (not repeatable without
#    train.deterministic). When every stage passed, its outputs (models/, metrics.json) come
#    back in pipeline_outputs.tgz, to be evaluated again on a CPU;
# 4. with the time left: Fashion-MNIST, the mnist-snn recipe for EPOCHS (100) epochs, DPAP and
#    its baseline side by side (benchmarks/method_comparison.py). A call cut off before the
#    last epoch resumes in the next one: put the returned *.json in .gpu/mc/ and *.pt in
#    .gpu/mc/checkpoints/ first (`--report-only --out .gpu/mc` here redraws the figure).
# Each step's output is in OUT: checks.log (the tests and both benchmarks), pipeline.log
# (metrics.json at its end), pipeline_outputs.tgz (when every stage passed), training.log,
# the two histories (*.json) and the two checkpoints (*.pt): 8 files at most.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: gpu_check.sh OUT SECONDS}"); BUDGET=${2:-500}; PY=${PY:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
start=$(date +%s)
left() { local s=$(( BUDGET - ($(date +%s) - start) )); echo $(( s > 1 ? s : 1 )); }  # timeout 0 would mean none
upto() { local l; l=$(left); echo $(( l < $1 ? l : $1 )); }  # at most $1 seconds, and no more than is left
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1

{ nvidia-smi -L; "$PY" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
  timeout "$(upto 150)" "$PY" -m pytest -p no:cacheprovider -n 0 -q -rfEs -k cuda tests
  echo "[$(( $(date +%s) - start )) s] tests done"
  for det in "" --deterministic; do
    timeout "$(upto 60)" "$PY" benchmarks/train_step.py --device "${DEVICE:-cuda}" ${det:+"$det"} --rounds "${TS_ROUNDS:-30}" 2>&1 | grep -v Warning | tail -14
  done
  for chunk in 100 1000 10000; do  # samples per batch in inference
    timeout "$(upto 50)" "$PY" benchmarks/compaction.py --device "${DEVICE:-cuda}" --rounds "${CMP_ROUNDS:-7}" \
      --infer-batch $(( chunk > 1000 ? chunk : 1000 )) --infer-chunk "$chunk" 2>&1 | grep -v Warning | tail -10
  done
} 2>&1 | tee "$OUT/checks.log"
echo "[$(( $(date +%s) - start )) s] tests, train_step and compaction done"

stage() {  # one pipeline stage, its last lines; its own exit status
  timeout "$(left)" "$PY" "pipeline/$1.py" "${@:2}" 2>&1 | grep -v Warning | tail -4
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || echo "stage $1 failed (exit $rc; 124: out of time)"
  return "$rc"
}
{ stage download && stage preprocess && stage train --no-mlflow --no-progress && stage evaluate --no-mlflow \
    && "$PY" -c "import json; m = json.load(open('metrics.json')); print({k: m[k] for k in ('test_accuracy', 'compression', 'params_retained')})" \
    && tar czf "$OUT/pipeline_outputs.tgz" models metrics.json  # only this run's: metrics.json is also the committed one
} > "$OUT/pipeline.log" 2>&1
tail -3 "$OUT/pipeline.log"
echo "[$(( $(date +%s) - start )) s] pipeline done"

if ls .gpu/FashionMNIST/raw/*.gz >/dev/null 2>&1 && [ "$(left)" -gt 60 ]; then
  mkdir -p data/raw/fashion-mnist .gpu/mc && cp -r .gpu/FashionMNIST data/raw/fashion-mnist/
  timeout "$(( $(left) - 15 ))" "$PY" benchmarks/method_comparison.py --methods baseline,dpap --jobs 2 --epochs "${EPOCHS:-100}" --out .gpu/mc 2>&1 \
    | grep -v Warning | tee "$OUT/training.log" | tail -8
  for m in baseline dpap; do  # these four files only: OUT takes 8
    cp ".gpu/mc/fashion-mnist-$m.json" ".gpu/mc/checkpoints/fashion-mnist-$m.pt" "$OUT/" 2>/dev/null
  done
fi
echo "[$(( $(date +%s) - start )) s] all done"; ls -la "$OUT"
