#!/usr/bin/env bash
# Issue #3 peer comparison, strictly sequential (each step uses both cores):
#   train 10 min -> 2,000 samples with 50-step DDIM -> FID/KID with ../shared/bench/fidlib.py.
# Usage (from the repository root, .venv and .venv-peers set up):
#   bash benchmarks/fid_vs_peers.sh [OUT_DIR] [KEY=VALUE config overrides ...]
# Overrides change the model or recipe of benchmarks/fmnist-uncond-10min.yaml, e.g. the deep-narrow UNet of the
# fast-cpu preset: model.base_channels=16 'model.channel_mults=[1,2,4]' model.num_res_blocks=2
# SAMPLERS="ddim dpm++2m-sde" draws 2,000 samples from the same model with each sampler at the same 50 steps
# (the peers' protocol is DDIM, so any other sampler's figure sits beside theirs, not in their column);
# SAMPLER=NAME is the one-sampler form. SAMPLE_BATCH sets the sampling batch (default 500).
# AUTOGUIDE=STEP (with AUTOGUIDE_WEIGHT=w, default 1) also samples each sampler autoguided by the run's own
# checkpoint at that training step (Karras et al. 2024; keep it with train.checkpoint_every=250
# train.keep_checkpoints=0 among the overrides): twice the network evaluations, into samples-<sampler>-ag.
set -euo pipefail
out=${1:-bench-results}
shift $(( $# > 0 ? 1 : 0 ))
mkdir -p "$out"
export FID_INCEPTION_WEIGHTS=${FID_INCEPTION_WEIGHTS:-$(../shared/tools/fid-inception-weights)}
.venv/bin/dreamdata train benchmarks/fmnist-uncond-10min.yaml runs_dir="$out/runs" "$@" --run-dir "$out/run"
repo=$(pwd)
# the 10,000-image test reference is computed once (~30 min on 2 idle cores) and cached by fidlib
(cd ../shared/bench && "$repo/.venv-peers/bin/python" fidlib.py ref)
for sampler in ${SAMPLERS:-${SAMPLER:-ddim}}; do
    .venv/bin/dreamdata sample "$out/run" --n 2000 --sampler "$sampler" --steps 50 --batch "${SAMPLE_BATCH:-500}" \
        --seed 0 --out "$out/samples-$sampler"
    (cd ../shared/bench && "$repo/.venv-peers/bin/python" fidlib.py score "$repo/$out/samples-$sampler/samples.npz" \
        --json "$repo/$out/fid-dreamdata-uncond-10min-$sampler.json")
    if [ -n "${AUTOGUIDE:-}" ]; then
        .venv/bin/dreamdata sample "$out/run" --n 2000 --sampler "$sampler" --steps 50 --batch "${SAMPLE_BATCH:-500}" \
            --seed 0 --autoguide "$AUTOGUIDE" --autoguide-weight "${AUTOGUIDE_WEIGHT:-1}" --out "$out/samples-$sampler-ag"
        (cd ../shared/bench && "$repo/.venv-peers/bin/python" fidlib.py score \
            "$repo/$out/samples-$sampler-ag/samples.npz" --json "$repo/$out/fid-dreamdata-uncond-10min-$sampler-ag.json")
    fi
done
