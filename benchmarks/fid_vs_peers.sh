#!/usr/bin/env bash
# Issue #3 peer comparison, strictly sequential (each step uses both cores):
#   train 10 min -> 2,000 samples with 50-step DDIM -> FID/KID with ../shared/bench/fidlib.py.
# Usage: bash benchmarks/fid_vs_peers.sh [OUT_DIR]   (run from the repository root, .venv and .venv-peers set up)
# SAMPLER=dpm++2m-sde bash benchmarks/fid_vs_peers.sh OUT_DIR draws the 2,000 samples with another sampler at the
# same 50 steps (the peers' protocol is DDIM, so that figure sits beside theirs, not in their column).
set -euo pipefail
out=${1:-bench-results}
mkdir -p "$out"
export FID_INCEPTION_WEIGHTS=${FID_INCEPTION_WEIGHTS:-$(../shared/tools/fid-inception-weights)}
.venv/bin/dreamdata train benchmarks/fmnist-uncond-10min.yaml runs_dir="$out/runs" --run-dir "$out/run"
sampler=${SAMPLER:-ddim}
.venv/bin/dreamdata sample "$out/run" --n 2000 --sampler "$sampler" --steps 50 --batch 500 --seed 0 --out "$out/samples"
repo=$(pwd)
# the 10,000-image test reference is computed once (~17 min on 2 cores) and cached by fidlib
(cd ../shared/bench && "$repo/.venv-peers/bin/python" fidlib.py ref)
(cd ../shared/bench && "$repo/.venv-peers/bin/python" fidlib.py score "$repo/$out/samples/samples.npz" \
    --json "$repo/$out/fid-dreamdata-uncond-10min-$sampler.json")
