#!/usr/bin/env bash
# Prepare, on this machine, what tools/gpu_check.sh needs on a lent GPU machine (see
# /work/.library/device/README.md where that tool exists): that machine has Python 3.12 with
# torch, numpy and h5py but none of the packages below, and no network.
#
#   tools/gpu_prepare.sh        # writes .whl/ (wheels) and .gpu/ (Fashion-MNIST), both git-ignored
#
# Then, with the device tool: run `bash tools/gpu_check.sh $OUT 500` with carry [".whl", ".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
version() {  # the project's venv's version of a package, else the given default
  "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p' | grep . || echo "$2"
}
mkdir -p .whl .gpu/FashionMNIST/raw
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's too
mkdir -p "$(dirname "$exclude")"
for entry in "/.whl/" "/.gpu/"; do
  grep -qxF "$entry" "$exclude" 2>/dev/null || echo "$entry" >> "$exclude"
done
# pure-Python wheels: the peers of benchmarks/train_step.py (snnTorch, SpikingJelly and its
# logger), NeuroBench and NIR for the evaluate stage
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "snntorch==$(version snntorch 1.0.0)" "spikingjelly==$(version spikingjelly 2.0.0)" "loguru==$(version loguru 0.7.3)" \
  "neurobench==$(version neurobench 2.3.0)" "nir==$(version nir 1.0.8)"
if ls /usr/share/datasets/fashion-mnist/*.gz >/dev/null 2>&1; then
  cp /usr/share/datasets/fashion-mnist/*.gz .gpu/FashionMNIST/raw/
else
  echo "note: no Fashion-MNIST here (Debian's dataset-fashion-mnist); gpu_check.sh will skip the 100-epoch runs" >&2
fi
du -sh .whl .gpu
