"""Config resolution: defaults <- preset/YAML <- key=value, and errors naming the key."""

import pytest

from dreamdata.cli import main
from dreamdata.config import RunConfig, config_from_dict, load_config, merge_overrides, preset_names
from dreamdata.errors import ConfigError


def test_presets_resolve_and_override():
    assert {"tiny", "demo", "fashion-mnist", "cifar10"} <= set(preset_names())
    config = load_config("cifar10", ["train.steps=7", "model.channel_mults=[1,2]", "train.lr=1e-3"])
    assert config.train.steps == 7
    assert config.model.channel_mults == [1, 2]
    assert config.train.lr == pytest.approx(1e-3)
    assert config.model.base_channels == 128  # from the preset
    assert config.train.p_uncond == pytest.approx(0.1)  # from the dataclass default


def test_yaml_file_and_int_to_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1\n  steps: 5\nprocess:\n  schedule: cosine\n")
    config = load_config(str(path))
    assert isinstance(config.train.lr, float) and config.train.lr == 1.0
    assert config.process.schedule == "cosine"


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown config key train.stepz"),
    ("train.steps=abc", "train.steps: expected int, got 'abc'"),
    ("process.schedule=quadratic", "process.schedule: 'quadratic' is not one of linear, cosine, constant"),
    ("train.p_uncond=1.5", "train.p_uncond"),
    ("data.channels=2", "data.channels"),
    ("nonsense", "expected KEY=VALUE"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("tiny", [override])


def test_two_budgets_rejected():
    with pytest.raises(ConfigError, match="train.epochs and train.steps"):
        load_config("tiny", ["train.epochs=2"])


def test_missing_config_file_names_it():
    with pytest.raises(ConfigError, match="no_such.yaml"):
        load_config("no_such.yaml")


def test_round_trip_and_merge():
    config = load_config("tiny")
    again = merge_overrides(config, ["train.steps=99"])
    assert again.train.steps == 99 and again.model == config.model
    assert isinstance(again, RunConfig)


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "tiny", "train.steps=123", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "steps: 123" in out and "base_channels: 8" in out
    # overrides may also follow an option, in order
    assert main(["train", "tiny", "train.steps=1", "--dry-run", "train.steps=7", "train.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "lr: 0.5" in out
    with pytest.raises(SystemExit):  # a stray word that is no override is still argparse's error
        main(["train", "tiny", "--dry-run", "bogus"])
    assert "unrecognized arguments: bogus" in capsys.readouterr().err


def test_cli_error_is_one_line_naming_the_key(capsys):
    assert main(["train", "tiny", "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key train.bogus" in err and "Traceback" not in err


@pytest.mark.parametrize("overrides, message", [
    (["process.variance=learned"], "process.variance: 'learned' is not one of fixed_small, fixed_large, learned_range"),
    (["process.loss=kl"], "process.loss: 'kl' is not one of simple, vlb, hybrid"),
    (["process.variance=learned_range"], "process.loss: simple does not train a learned_range variance"),
    (["process.loss=hybrid"], "process.loss: hybrid adds L_vlb to train the variance"),
    (["process.importance_sampling=true"], "process.importance_sampling: true needs process.loss=vlb"),
    (["process.loss=vlb", "process.loss_weighting=min_snr"], "process.loss_weighting: min_snr weights L_simple"),
    (["process.variance=learned_range", "process.loss=hybrid", "process.vlb_weight=0"], "process.vlb_weight"),
    (["process.kind=blur", "process.variance=fixed_large"], "process.variance: fixed_large applies to "
                                                            "process.kind=gaussian only"),
    (["process.input_perturbation=-0.1"], "process.input_perturbation: expected a perturbation scale gamma >= 0"),
    (["process.variance=learned_range", "process.loss=hybrid", "process.input_perturbation=0.1"],
     "process.input_perturbation: expected 0 with process.loss 'hybrid'"),
    (["process.kind=blur", "process.input_perturbation=0.1"], "process.input_perturbation: 0.1 applies to "
                                                              "process.kind=gaussian only"),
])
def test_variance_and_loss_keys_are_checked_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config("tiny", overrides)
    assert "\n" not in str(caught.value)


def test_configs_without_the_variance_keys_load_with_todays_behaviour():
    tree = load_config("tiny").to_dict()
    for key in ("variance", "loss", "vlb_weight", "importance_sampling"):
        del tree["process"][key]
    config = config_from_dict(tree)  # a run directory written before the keys existed
    p = config.process
    assert (p.variance, p.loss, p.vlb_weight, p.importance_sampling) == ("fixed_small", "simple", 0.001, False)
    learned = load_config("tiny", ["process.variance=learned_range", "process.loss=hybrid"]).process
    assert (learned.variance, learned.loss) == ("learned_range", "hybrid")


def test_configs_measured_with_the_former_demo_unet_still_build_it(tmp_path):
    """The demo preset now has the deeper, narrower UNet (base 16, 1-2-4, 2 blocks). Every config whose results
    BENCHMARKS.md reports with the former demo UNet pins it, so it builds the very network those runs logged:
    1,114,209 parameters (`UNet: 1,114,209 parameters`, the study generator's run of dream-sampler.yaml)."""
    from pathlib import Path

    from dreamdata.experiments.study.config import load_study_config
    from dreamdata.experiments.study.pipeline import generator_run_config
    from dreamdata.experiments.runner import resolve_arms
    from dreamdata.experiments.sweep_config import load_sweep
    from dreamdata.training.objectives import build_networks

    def parameters(config) -> int:
        return sum(p.numel() for p in build_networks(config, 1, 28, 10).parameters())

    root = Path(__file__).resolve().parents[1] / "configs"
    study = load_study_config(str(root / "study-fmnist.yaml"), ["classifier_steps=[1, 1, 1]", "classifier_epochs=null",
                                                                "dream.per_class=[1, 1, 1]",
                                                                "dream.per_class_multiple=null"])
    configs = [generator_run_config(study, 0)]
    for name in ("dream-sampler", "schedules-and-steps", "blur-robustness"):
        sweep = load_sweep(str(root / "experiments" / f"{name}.yaml"), [])
        configs.append(resolve_arms(sweep, tmp_path / name)[0].config)
    assert [parameters(config) for config in configs] == [1_114_209] * 4
    demo, fast = load_config("demo"), load_config("fast-cpu")
    assert (demo.model.base_channels, demo.model.channel_mults, demo.model.num_res_blocks) == (16, [1, 2, 4], 2)
    assert demo.model == fast.model and fast.train.minutes == 10 and "fast-cpu" in preset_names()
