"""Classifier-free guidance in a limited interval of noise levels (Kynkäänniemi et al. 2024).

Guidance applies at a visited index ``t`` when EDM's ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)`` satisfies
``σ_lo < σ_t ≤ σ_hi``; elsewhere the step takes the conditional output in one pass. Each check has an
answer found another way: plain guidance (interval over every level), ``w = 0`` (interval over none), a
network that guides itself by ``t``, and counts of doubled batches worked out from the schedule's ``ᾱ``.
"""

from __future__ import annotations

import inspect
import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import make_pattern_images, randomised_tiny_unet

from dreamdata.cli import main
from dreamdata.config import build_dataclass, load_config
from dreamdata.dream.manifest import DreamSpec, check_resumable, write_manifest
from dreamdata.errors import ConfigError, DataError
from dreamdata.experiments.cells import cell_slug, make_cell, resolve_sampling
from dreamdata.experiments.study.config import StudyConfig, study_from_tree, validate_study
from dreamdata.experiments.sweep_config import parse_sweep
from dreamdata.process import GaussianDiffusion, blur_betas, cosine_betas, linear_betas
from dreamdata.process.blur import GaussianBlurDegradation
from dreamdata.sampling import COLD_SAMPLERS, SAMPLERS, ddim_sample, ddpm_sample, dpm_solver_pp_2m_sample
from dreamdata.sampling.generate import generate, network_evaluations_per_sample
from dreamdata.sampling.registry import GAN_SAMPLERS
from dreamdata.sampling.timesteps import timestep_sequence
from dreamdata.training.run_dir import read_run_config
from dreamdata.training.trainer import train

CLASS_NAMES = ["hstripes", "vstripes", "square"]
PAPER_INTERVAL = (0.28, 5.42)  # Kynkäänniemi et al. 2024, ImageNet-512 (EDM2)
GAUSSIAN_SAMPLERS = [pytest.param(ddim_sample, {}, id="ddim"), pytest.param(ddpm_sample, {}, id="ddpm"),
                     pytest.param(dpm_solver_pp_2m_sample, {}, id="dpm++2m")]


def hand_sigmas(betas: torch.Tensor, timesteps) -> list[float]:
    """σ_t of each visited index, from ᾱ_t = prod_{s <= t} (1 - β_s) (Ho et al. 2020, eq. 4) worked out here."""
    alpha_bar = np.cumprod(1.0 - betas.double().numpy())
    return [float(np.sqrt((1.0 - alpha_bar[t]) / alpha_bar[t])) for t in timesteps]


@pytest.fixture(scope="module")
def network():
    return randomised_tiny_unet(len(CLASS_NAMES))


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(cosine_betas(50))


LABELS = torch.tensor([0, 1, 2, 0])


def run(sampler, network, process, guidance_scale, timesteps, **options):
    noise = torch.randn(len(LABELS), 1, 8, 8, generator=torch.Generator().manual_seed(3))
    return sampler(network, process, noise, timesteps, class_labels=LABELS, guidance_scale=guidance_scale,
                   generator=torch.Generator().manual_seed(4), **options)


# -- (1) an interval over every noise level is plain guidance -------------------------------------------


@pytest.mark.parametrize("sampler, options", GAUSSIAN_SAMPLERS)
def test_an_interval_over_every_visited_noise_level_is_plain_guidance(sampler, options, network, process):
    timesteps = timestep_sequence(50, 10)
    sigmas = hand_sigmas(cosine_betas(50), timesteps.tolist())
    # (0, σ_max]: σ_max is the first step's own level, guided because the interval is closed above
    everything = (0.0, max(sigmas))
    plain = run(sampler, network, process, 2.0, timesteps, **options)
    limited = run(sampler, network, process, 2.0, timesteps, guidance_interval=everything, **options)
    assert torch.equal(plain, limited)
    assert torch.equal(plain, run(sampler, network, process, 2.0, timesteps, guidance_interval=[0, 1e9], **options))


# -- (2) an interval over no visited level is w = 0 ------------------------------------------------------


@pytest.mark.parametrize("sampler, options", GAUSSIAN_SAMPLERS)
def test_an_interval_over_no_visited_noise_level_is_the_conditional_sampler(sampler, options, network, process):
    timesteps = timestep_sequence(50, 10)
    sigmas = sorted(hand_sigmas(cosine_betas(50), timesteps.tolist()))
    unguided = run(sampler, network, process, 0.0, timesteps, **options)
    above = (2 * sigmas[-1], 4 * sigmas[-1])  # beyond the noisiest level
    between = (sigmas[4] * 1.0001, sigmas[5] * 0.9999)  # strictly between two neighbouring visited levels
    at_a_lower_bound = (sigmas[4], (sigmas[4] + sigmas[5]) / 2)  # open below: sigma_4 itself is not in it
    for interval in (above, between, at_a_lower_bound):
        assert torch.equal(unguided, run(sampler, network, process, 2.0, timesteps, guidance_interval=interval,
                                         **options)), interval


@pytest.mark.parametrize("sampler, options", GAUSSIAN_SAMPLERS)
def test_a_partial_interval_guides_exactly_the_steps_inside_it(sampler, options, network, process):
    """Against a network that guides itself (Ho & Salimans 2022, eq. 6) only where σ_t is in the interval,
    sampled with w = 0; the two differ only in batching (float rounding)."""
    w, timesteps = 2.0, timestep_sequence(50, 10)
    sigmas = dict(zip(timesteps.tolist(), hand_sigmas(cosine_betas(50), timesteps.tolist())))
    low, high = PAPER_INTERVAL
    inside = {t for t, sigma in sigmas.items() if low < sigma <= high}
    assert 0 < len(inside) < len(sigmas)

    def self_guided(x, t, labels):
        conditional = network(x, t, labels)
        if int(t[0]) not in inside:
            return conditional
        return (1 + w) * conditional - w * network(x, t, torch.full_like(labels, network.null_class))

    expected = run(sampler, self_guided, process, 0.0, timesteps, **options)
    limited = run(sampler, network, process, w, timesteps, guidance_interval=PAPER_INTERVAL, **options)
    assert torch.allclose(limited, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(limited, run(sampler, network, process, w, timesteps, **options), atol=1e-3)


# -- (3) doubled batches only at the guided steps --------------------------------------------------------


class CountingNet(torch.nn.Module):
    """Records each call's batch size and timestep; its output depends on the label, so guidance matters."""

    in_channels, image_size, num_classes, null_class = 1, 4, 3, 3

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def forward(self, x, t, class_labels):
        self.calls.append((x.shape[0], int(t[0])))
        return x * 0.5 + (class_labels.float() * 0.1 + t.float() * 0.001).view(-1, 1, 1, 1)


GRIDS = [("linear", 1000, 20, "linspace"), ("linear", 1000, 10, "trailing"), ("cosine", 1000, 12, "logsnr"),
         ("cosine", 50, 50, "linspace")]


@pytest.mark.parametrize("schedule, T, steps, spacing", GRIDS)
@pytest.mark.parametrize("sampler, options", GAUSSIAN_SAMPLERS)
def test_doubled_batches_are_the_steps_whose_sigma_lies_in_the_interval(sampler, options, schedule, T, steps,
                                                                         spacing):
    betas = (linear_betas if schedule == "linear" else cosine_betas)(T)
    process = GaussianDiffusion(betas)
    timesteps = timestep_sequence(T, steps, spacing=spacing, alpha_bar=process.schedule.alpha_bar).tolist()
    sigmas = hand_sigmas(betas, timesteps)
    low, high = PAPER_INTERVAL
    assert min(abs(s - b) for s in sigmas for b in (low, high)) > 1e-6  # no level on a bound: no rounding question
    guided = [t for t, sigma in zip(timesteps, sigmas) if low < sigma <= high]
    assert 0 < len(guided) < steps

    batch = 5
    network = CountingNet()
    labels = torch.tensor([0, 1, 2, 0, 1])
    sampler(network, process, torch.randn(batch, 1, 4, 4), timesteps, class_labels=labels, guidance_scale=1.5,
            generator=torch.Generator().manual_seed(0), guidance_interval=PAPER_INTERVAL, **options)
    assert [t for _, t in network.calls] == timesteps  # one call per step
    assert [t for size, t in network.calls if size == 2 * batch] == guided
    assert all(size == batch for size, t in network.calls if t not in guided)
    assert network_evaluations_per_sample(process, steps, spacing, 1.5, PAPER_INTERVAL) == steps + len(guided)


def test_generate_passes_the_interval_and_counts_evaluations():
    process = GaussianDiffusion(linear_betas(1000))
    network = CountingNet()
    steps, count, batch = 20, 6, 4
    generate(network, process, torch.tensor([0, 1, 2, 0, 1, 2]), count, seed=0, sampler="ddim", steps=steps,
             guidance_scale=1.0, batch_size=batch, progress=False, guidance_interval=PAPER_INTERVAL)
    timesteps = timestep_sequence(1000, steps).tolist()
    guided = sum(PAPER_INTERVAL[0] < s <= PAPER_INTERVAL[1] for s in hand_sigmas(linear_betas(1000), timesteps))
    images_seen = sum(size for size, _ in network.calls)
    assert images_seen == count * network_evaluations_per_sample(process, steps, "linspace", 1.0, PAPER_INTERVAL)
    assert images_seen == count * (steps + guided)
    # without an interval every step is doubled; at w = 0 none is
    assert network_evaluations_per_sample(process, steps, "linspace", 1.0) == 2 * steps
    assert network_evaluations_per_sample(process, steps, "linspace", 0.0, PAPER_INTERVAL) == steps


# -- the shared signature and the processes without noise levels ----------------------------------------


def test_every_sampler_takes_the_interval_as_a_keyword():
    for name, sampler in {**SAMPLERS, **COLD_SAMPLERS, **GAN_SAMPLERS}.items():
        parameter = inspect.signature(sampler).parameters["guidance_interval"]
        assert parameter.kind == parameter.KEYWORD_ONLY and parameter.default is None, name


def test_bad_intervals_and_processes_without_noise_levels_are_refused(network, process):
    noise = torch.randn(len(LABELS), 1, 8, 8)
    for bad in ((5.0, 1.0), (2.0, 2.0), (-1.0, 2.0), (0.1, float("inf")), (float("nan"), 1.0), (1.0,), "0.3,5",
                (True, 2.0), ("a", "b")):
        with pytest.raises(ValueError, match="guidance_interval"):
            ddim_sample(network, process, noise, [10, 0], class_labels=LABELS, guidance_scale=1.0,
                        guidance_interval=bad)
    blur = GaussianBlurDegradation(blur_betas("constant", 5, beta=1.0), kernel_size=3)
    restorer = lambda x, t, c: x  # noqa: E731
    for sampler in COLD_SAMPLERS.values():
        with pytest.raises(ValueError, match="noise levels sigma"):
            sampler(restorer, blur, noise, [4, 0], guidance_interval=PAPER_INTERVAL)
        assert sampler(restorer, blur, noise, [4, 0], guidance_interval=None).shape == noise.shape
    with pytest.raises(ValueError, match="GAN"):
        GAN_SAMPLERS["gan"](lambda z, c: z, None, noise, [0], guidance_interval=PAPER_INTERVAL)


# -- (4) the command line: one clear line for a bad interval ------------------------------------------------


def cli_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


BAD_INTERVALS = ["5.42,0.28", "1,1", "-0.5,2", "a,b", "0.28", "0.28,5.42,9", "nan,1", "0.28,inf", ""]


@pytest.mark.parametrize("command", ["sample", "dream"])
@pytest.mark.parametrize("value", BAD_INTERVALS)
def test_cli_refuses_a_bad_interval_in_one_line(command, value, tmp_path, capsys):
    extra = ["--per-class", "2", "--out", str(tmp_path / "out")] if command == "dream" else []
    status = cli_status([command, str(tmp_path / "no-run"), "--guidance", "1", f"--guidance-interval={value}",
                         *extra])
    err = capsys.readouterr().err
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "--guidance-interval" in lines[0] and repr(value) in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sample", "dream"])
def test_cli_refuses_an_interval_without_guidance(command, tmp_path, capsys):
    extra = ["--per-class", "2", "--out", str(tmp_path / "out")] if command == "dream" else []
    assert cli_status([command, str(tmp_path / "no-run"), "--guidance-interval", "0.28,5.42", *extra]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--guidance-interval 0.28,5.42" in lines[0] and "--guidance" in lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("interval-run")
    images, labels = make_pattern_images(per_class=8)
    npz = root / "tiny.npz"
    np.savez(npz, images=images, labels=labels, class_names=np.array(CLASS_NAMES))
    config = load_config("tiny", [f"data.dataset=npz:{npz}", f"runs_dir={root / 'runs'}", "data.per_class=null",
                                  "train.steps=2", "train.sample_grid=false", "train.checkpoint_every=0",
                                  "train.val_every=0"])
    return train(config).run_dir


def test_sample_records_the_interval_and_its_evaluations(tiny_run, tmp_path):
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--n", "2", "--steps", "10", "--sampler", "ddim", "--guidance", "1.5",
                 "--guidance-interval", "0.28,5.42", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads((out / "sample.json").read_text())
    config = read_run_config(tiny_run).process
    betas = {"linear": linear_betas, "cosine": cosine_betas}[config.schedule](config.num_steps)
    guided = sum(0.28 < sigma <= 5.42 for sigma in hand_sigmas(betas, record["timesteps"]))
    assert 0 < guided < 10
    assert record["guidance_interval"] == [0.28, 5.42]
    assert record["network_evaluations_per_sample"] == 10 + guided
    assert main(["sample", str(tiny_run), "--n", "1", "--steps", "3", "--guidance", "1", "--guidance-interval",
                 "0.5,2", "--device", "cpu"]) == 0
    assert (tiny_run / "samples" / "ddpm-3steps-w1-gi0.5-2-seed0-step2").is_dir()  # the default --out names it


def test_dream_records_the_interval_and_refuses_a_changed_one_on_resume(tiny_run, tmp_path, capsys):
    out = tmp_path / "dreamed"
    common = ["dream", str(tiny_run), "--per-class", "2", "--out", str(out), "--steps", "4", "--chunk", "3",
              "--device", "cpu", "--guidance", "1.5"]
    assert main([*common, "--guidance-interval", "0.28,5.42", "--max-chunks", "1"]) == 0
    spec = json.loads((out / "manifest.json").read_text())["spec"]
    assert spec["guidance_interval"] == [0.28, 5.42]
    capsys.readouterr()
    assert cli_status([*common, "--guidance-interval", "0.3,5.42"]) == 2
    err = capsys.readouterr().err
    assert "guidance_interval: [0.28, 5.42] -> [0.3, 5.42]" in err and "Traceback" not in err
    assert cli_status([*common]) == 2  # dropping the interval changes the images too
    assert main([*common, "--guidance-interval", "0.28,5.42"]) == 0  # the same interval resumes
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_manifest_from_before_the_option_resumes_without_an_interval(tmp_path):
    spec = DreamSpec(checkpoint_sha256="0" * 64, checkpoint="c.safetensors", step=1, weights="ema",
                     class_names=CLASS_NAMES, classes=[0, 1, 2], per_class=2, sampler="ddim", steps=4,
                     spacing="linspace", guidance=1.5, seed=0, chunk=3, channels=1, image_size=8)
    write_manifest(tmp_path, spec, "incomplete")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["spec"]["guidance_interval"]  # as written before the key existed
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert check_resumable(tmp_path, spec) is not None
    with pytest.raises(DataError, match=re.escape("guidance_interval: None -> [0.28, 5.42]")):
        check_resumable(tmp_path, DreamSpec(**{**spec.to_dict(), "guidance_interval": [0.28, 5.42]}))


# -- (5) the sweep: no interval, the same cells as before ---------------------------------------------------


def sweep_cells(sampling: dict, **tree) -> list[dict]:
    return parse_sweep({"name": "s", "sampling": sampling, **tree}, "sweep.yaml").cells


def test_a_sweep_cell_without_an_interval_keeps_its_key_and_settings():
    process = GaussianDiffusion(cosine_betas(50))
    old_style = {"sampler": "ddim", "steps": 20, "guidance": 1.5, "spacing": "trailing"}
    for sampling in (old_style, {**old_style, "guidance_interval": None}):
        (cell,) = sweep_cells(sampling)
        resolved = resolve_sampling(cell, "gaussian", 50, process)
        # the settings and key a finished sweep stored before the option existed
        assert resolved == {"sampler": "ddim", "steps": 20, "spacing": "trailing", "guidance": 1.5, "eta": None,
                            "x0_clip": "static", "start_noise": None}
        assert make_cell("base", 400, resolved).key == "base/step-400/ddim-20steps-w1.5-spacingtrailing"


def test_a_sweep_interval_names_its_cell_and_collapses_where_it_cannot_apply():
    process = GaussianDiffusion(cosine_betas(50))
    cells = sweep_cells({"sampler": "ddim", "steps": 20, "guidance_interval": [0.28, 5.42]},
                        sampling_axes={"guidance": [0.0, 1.5]})
    unguided, guided = (resolve_sampling(cell, "gaussian", 50, process) for cell in cells)
    assert guided["guidance_interval"] == [0.28, 5.42] and cell_slug(guided) == "ddim-20steps-w1.5-gi0.28-5.42"
    assert "guidance_interval" not in unguided and cell_slug(unguided) == "ddim-20steps-w0"  # w = 0: nothing to limit
    unconditional = resolve_sampling(cells[1], "gaussian", 50, process, conditional=False)
    assert "guidance_interval" not in unconditional
    blur = GaussianBlurDegradation(blur_betas("constant", 5, beta=1.0), kernel_size=3)
    with pytest.raises(ConfigError, match="noise levels sigma"):
        resolve_sampling({**cells[1], "sampler": None, "steps": None}, "blur", 5, blur)
    per_process = {**cells[1], "sampler": None, "steps": None,
                   "guidance_interval": {"gaussian": [0.28, 5.42], "blur": None}}
    assert "guidance_interval" not in resolve_sampling(per_process, "blur", 5, blur)


@pytest.mark.parametrize("bad", [[5.42, 0.28], [0.28], "0.28,5.42", [-1, 2], [0.28, float("inf")]])
def test_a_bad_sweep_interval_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="guidance_interval"):
        sweep_cells({"guidance": 1.0, "guidance_interval": bad})


def test_the_study_dream_section_takes_an_interval():
    config = build_dataclass(StudyConfig, {"dream": {"guidance": 1.5, "guidance_interval": [0.28, 5.42]}}, "")
    validate_study(config)
    assert config.dream.guidance_interval == [0.28, 5.42]
    assert build_dataclass(StudyConfig, {}, "").dream.guidance_interval is None
    for dream, message in (({"guidance_interval": [5, 1]}, "dream.guidance_interval"),
                           ({"guidance": 0.0, "guidance_interval": [0.28, 5.42]}, "dream.guidance is 0")):
        with pytest.raises(ConfigError, match=message):
            validate_study(build_dataclass(StudyConfig, {"dream": dream}, ""))


def test_the_study_dreams_with_its_interval(tiny_run, tmp_path):
    from dreamdata.experiments.study.pipeline import _dream

    dream = {"per_class": [1], "steps": 4, "guidance": 1.5, "guidance_interval": [0.28, 5.42], "chunk": 3}
    config = study_from_tree({"real": {"per_class": [4]}, "generator": {"steps": [1]}, "dream": dream,
                              "classifier_steps": [1]})  # lists: they replace the default budget rules
    validate_study(config)
    manifest = _dream(config, 0, tiny_run, tmp_path / "synthetic", torch.device("cpu"), None)
    assert manifest["status"] == "complete" and manifest["spec"]["guidance_interval"] == [0.28, 5.42]


def test_sigma_is_edm_sigma_of_alpha_bar():
    from dreamdata.sampling.guidance import edm_sigma

    for sigma in (0.01, 0.28, 1.0, 5.42, 80.0):
        alpha_bar = 1.0 / (1.0 + sigma ** 2)  # Karras et al. 2022, Table 1 (VP): s = 1 / sqrt(1 + sigma^2)
        assert math.isclose(edm_sigma(alpha_bar), sigma, rel_tol=1e-12)
