"""Sampling with the network in bf16 (`--precision bf16`, a sweep's `precision`, a study's `dream.precision`):
the network's arithmetic is bf16 autocast rounded as a hand computation says, the sampler's stays float32,
and every default (fp32) cell, dream and sample keeps the files and keys it had before the option."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_dream import dream, tiny_run  # noqa: F401  (the module-scoped tiny model fixture)
from test_sweep import base_file, cache, results_of, write_sweep  # noqa: F401

from dreamdata.cli import main
from dreamdata.errors import ConfigError
from dreamdata.experiments.runner import run_sweep
from dreamdata.experiments.sweep_config import load_sweep
from dreamdata.sampling.generate import generate
from dreamdata.sampling.precision import in_precision


class PointwiseLinear(torch.nn.Module):
    """eps(x, t) = conv1x1(x): one weight and one bias, so its bf16 rounding can be worked out by hand."""

    in_channels, image_size, num_classes = 1, 4, 0

    def __init__(self, weight: float, bias: float):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(weight)
            self.conv.bias.fill_(bias)

    def forward(self, x, t, y=None):
        return self.conv(x)


def bf16(value: torch.Tensor) -> torch.Tensor:
    return value.to(torch.bfloat16).to(torch.float32)


def test_the_network_runs_in_bf16_and_returns_float32_as_computed_by_hand():
    """Under autocast a convolution rounds its input, weight and bias to bf16, multiplies (exact in float32: two
    8-bit mantissas), adds in float32 and rounds the result to bf16; the wrapper hands it back as float32. The
    weight 1.2345 and inputs with long mantissas make each rounding visible."""
    network = PointwiseLinear(1.2345, 0.0101)
    x = torch.linspace(-1.1, 1.3, 16).reshape(1, 1, 4, 4) + 1e-3
    t = torch.zeros(1, dtype=torch.long)
    wanted = bf16(bf16(x) * bf16(torch.tensor(1.2345)) + bf16(torch.tensor(0.0101)))
    got = in_precision(network, "bf16")(x, t)
    assert got.dtype == torch.float32 and torch.equal(got, wanted)
    assert not torch.equal(got, network(x, t))  # fp32 differs: the rounding is real
    assert in_precision(network, "bf16").image_size == 4 and in_precision(network, "fp32") is network
    with pytest.raises(ValueError, match="precision 'fp16'"):
        in_precision(network, "fp16")


def test_generate_in_bf16_is_fp32_sampling_of_the_network_rounded_by_hand():
    """generate(precision="bf16") draws exactly what fp32 sampling draws from a network that does the bf16
    rounding itself (by hand, no autocast): only the network's arithmetic changes, the sampler's does not."""
    network = PointwiseLinear(0.8765, -0.0123)

    class RoundedByHand(PointwiseLinear):
        def forward(self, x, t, y=None):
            return bf16(bf16(x) * bf16(self.conv.weight.flatten()[0]) + bf16(self.conv.bias[0]))

    by_hand = RoundedByHand(0.8765, -0.0123)
    from dreamdata.process import build_process
    from dreamdata.config import ProcessConfig

    process = build_process(ProcessConfig(schedule="cosine", num_steps=50))
    ours = generate(network, process, None, 6, seed=3, sampler="ddim", steps=5, progress=False, precision="bf16")
    theirs = generate(by_hand, process, None, 6, seed=3, sampler="ddim", steps=5, progress=False)
    fp32 = generate(network, process, None, 6, seed=3, sampler="ddim", steps=5, progress=False)
    assert torch.equal(ours, theirs) and not torch.equal(ours, fp32)


def test_a_dream_records_bf16_and_a_manifest_from_before_the_option_still_resumes(tiny_run, tmp_path,  # noqa: F811
                                                                                   capsys):
    run, _ = tiny_run
    fast = tmp_path / "bf16"
    assert dream(run, fast, "--precision", "bf16") == 0
    assert json.loads((fast / "manifest.json").read_text())["spec"]["precision"] == "bf16"
    old = tmp_path / "fp32"
    assert dream(run, old, "--max-chunks", "1") == 0
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["spec"]["precision"] is None  # fp32: None, as a manifest without the key reads
    del manifest["spec"]["precision"]  # as dreamdata wrote it before the option
    (old / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert dream(run, old, "--precision", "bf16") == 2
    assert "precision: None -> 'bf16'" in capsys.readouterr().err
    assert dream(run, old) == 0  # fp32 resumes it
    assert json.loads((old / "manifest.json").read_text())["status"] == "complete"


def test_a_bf16_cell_is_its_own_cell_and_fp32_cells_keep_their_keys(base_file, tiny_extractor_file,  # noqa: F811
                                                                     tmp_path, cache):  # noqa: F811
    path = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid"], train_axes={},
                       sampling_axes={"precision": ["fp32", "bf16"]})
    run_sweep(load_sweep(path), tmp_path / "out")
    cells = {r["cell"]: r["sampling"] for r in results_of(tmp_path / "out")}
    (default_key,) = [key for key in cells if not key.endswith("-bf16")]
    assert default_key.endswith("/ddim-3steps-w0") and "precision" not in cells[default_key]
    assert cells[default_key + "-bf16"]["precision"] == "bf16"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| precision |" in summary and "| fp32 |" in summary and "| bf16 |" in summary
    tree = yaml.safe_load(path.read_text())
    tree["sampling_axes"] = {"precision": ["fp16"]}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="precision 'fp16': expected fp32 or bf16"):
        load_sweep(path)


def test_a_study_refuses_an_unknown_dream_precision(tmp_path):
    from test_study_budgets import RULE, write_rule_study

    from dreamdata.experiments.study.config import load_study_config

    path = write_rule_study(tmp_path, RULE)
    assert load_study_config(str(path), ["dream.precision=bf16"]).dream.precision == "bf16"
    with pytest.raises(ConfigError, match="dream.precision: expected fp32 or bf16, got 'fp16'"):
        load_study_config(str(path), ["dream.precision=fp16"])


def test_the_dry_run_prices_a_bf16_cell_at_the_bf16_forward_rate(base_file, tiny_extractor_file, tmp_path,  # noqa: F811
                                                                 monkeypatch):
    """Each cell's minutes are its network evaluations over the forward rate of its own precision: with stand-in
    rates of 0.01 img/s (fp32) and 0.04 img/s (bf16), a cell of 18 evaluations costs 18 / 0.01 / 60 = 30 and
    18 / 0.04 / 60 = 7.5 minutes."""
    from dreamdata.experiments import cost
    from dreamdata.experiments.runner import resolve_arms

    timed = []

    def stand_in_rate(arm, channels, size, classes, precision="fp32", **_):
        timed.append(precision)
        return {"fp32": 0.01, "bf16": 0.04}[precision]

    monkeypatch.setattr(cost, "_forward_rate", stand_in_rate)
    path = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid"], train_axes={},
                       sampling_axes={"precision": ["fp32", "bf16"]})
    sweep = load_sweep(path)
    (arm,) = cost.estimate_sweep(sweep, resolve_arms(sweep, tmp_path / "out"))["arms"]
    fp32_cell, bf16_cell = arm["cells"]
    assert "precision" not in fp32_cell["sampling"] and bf16_cell["sampling"]["precision"] == "bf16"
    assert fp32_cell["network_evaluations"] == bf16_cell["network_evaluations"] == 6 * 3  # N x steps, unguided
    assert fp32_cell["cpu_minutes"] == 30.0 and bf16_cell["cpu_minutes"] == 7.5
    assert set(arm["forward_images_per_s_by_precision"]) == {"fp32", "bf16"}
    assert sorted(timed) == ["bf16", "fp32"]  # each precision timed once


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_bf16_on_a_cpu_without_fast_bf16_says_so_once(monkeypatch, fast_bf16):
    """A CPU whose oneDNN has no bf16 kernels gets one warning naming the way back to fp32, at the first call;
    one with them gets none. The numbers are the same either way."""
    import warnings

    import dreamdata.sampling.precision as precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    network = in_precision(PointwiseLinear(1.2345, 0.0101), "bf16")
    x, t = torch.ones(1, 1, 4, 4), torch.zeros(1, dtype=torch.long)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = network(x, t), network(x, t)
    messages = [str(w.message) for w in caught if "bf16" in str(w.message)]
    assert len(messages) == (0 if fast_bf16 else 1)
    if not fast_bf16:
        assert "slower than fp32" in messages[0] and "--precision fp32" in messages[0]
    by_hand = bf16(bf16(torch.tensor(1.2345)) + bf16(torch.tensor(0.0101)))  # x = 1: weight + bias, rounded
    assert torch.equal(first, second) and torch.equal(first, by_hand.expand(1, 1, 4, 4))
