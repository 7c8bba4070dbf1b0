"""Typed experiment configuration: dataclass defaults, YAML presets, ``key=value`` overrides.

Every default lives in the dataclasses below, in one place. A YAML file (a preset shipped in
``dreamdata/presets`` or any path) overrides some of them, and ``section.key=value`` arguments on the
command line override those. The resolved config is written into each run directory, so a run can always
be traced back to exactly what it was trained with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from dreamdata.errors import ConfigError


@dataclass
class DataConfig:
    """Which images to train on and how to present them to the network."""

    dataset: str = "fashion-mnist"  # mnist | fashion-mnist | cifar10 | cifar100 | folder:PATH | zip:PATH | npz:PATH
    data_root: str = "~/.cache/dreamdata/data"  # where torchvision datasets are downloaded / looked for
    classes: Optional[list[Union[int, str]]] = None  # subset of classes, by name or index; None = all
    per_class: Optional[int] = None  # keep at most this many images per class (low-data regimes)
    image_size: Optional[int] = None  # resize to this square size; None = native
    pad_to: Optional[int] = None  # zero-pad (black) symmetrically to this size, e.g. 28 -> 32 as the FID bench does
    channels: Optional[int] = None  # 1 (grayscale) or 3 (RGB); None = native
    # random horizontal flip during training; null = the dataset's default (on for fashion-mnist, cifar10,
    # cifar100; off for mnist and for folder:/zip:/npz: data, whose chirality dreamdata cannot know)
    hflip: Optional[bool] = None
    val_fraction: float = 0.02  # held out from the training split for validation loss
    split_seed: int = 0  # fixes which images are held out and which survive per_class
    skip_corrupt: bool = False  # skip unreadable images (and report how many) instead of failing


@dataclass
class ProcessConfig:
    """The forward corruption process and its training objective."""

    # gaussian (DDPM) | blur (cold diffusion, Bansal et al. 2022) | gan (adversarial, with model.network: dcgan)
    kind: str = "gaussian"
    schedule: str = "linear"  # gaussian: linear | cosine | constant
    num_steps: int = 1000  # T
    beta_start: float = 1e-4  # linear: beta_1 (Ho et al. 2020)
    beta_end: float = 0.02  # linear: beta_T
    constant_beta: float = 0.02  # constant: beta_t for every t
    cosine_s: float = 0.008  # cosine: offset s (Nichol & Dhariwal 2021, eq. 17)
    # epsilon | x0 | v | edm (EDM's preconditioned F: D = c_skip x_hat + c_out F(c_in x_hat), Karras et al. 2022)
    prediction: str = "epsilon"
    loss_weighting: str = "simple"  # of L_simple's MSE: simple (unweighted, Ho et al.) | min_snr (Hang et al. 2023)
    min_snr_gamma: float = 5.0
    # reverse variance: fixed_small (beta_tilde) | fixed_large (beta) | learned_range (Nichol & Dhariwal 2021,
    # eq. 15: the network outputs 2C channels, Sigma = exp(v log beta + (1 - v) log beta_tilde))
    variance: str = "fixed_small"
    loss: str = "simple"  # simple (L_simple) | vlb (the bound) | hybrid (L_simple + vlb_weight * L_vlb, mean frozen)
    vlb_weight: float = 0.001  # lambda of the hybrid loss (Nichol & Dhariwal 2021, eq. 16)
    importance_sampling: bool = False  # loss=vlb: t ~ sqrt(E[L_t^2]) (Nichol & Dhariwal 2021, sec. 3.3)
    sigma_data: float = 0.5  # prediction=edm: the data std sigma_data of EDM's preconditioning (Table 1)
    # training t: uniform on 0..T-1 | lognormal: ln sigma ~ N(lognormal_mean, lognormal_std^2) (EDM Table 1),
    # rounded to the t whose sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) is nearest in log space
    timestep_distribution: str = "uniform"
    lognormal_mean: float = -1.2  # P_mean
    lognormal_std: float = 1.2  # P_std
    # blur (cold diffusion): z_t = G_t * z_{t-1}, G_t a Gaussian kernel of variance beta_t, reflect padding
    blur_schedule: str = "constant"  # constant | linear | exponential (per-step kernel variance beta_t)
    blur_beta: float = 1.0  # constant: beta_t in pixels^2 (the cold-diffusion report: 1, with T = 100)
    blur_beta_start: float = 0.1  # linear / exponential: beta_1
    blur_beta_end: float = 2.0  # linear / exponential: beta_T
    kernel_size: int = 11  # odd side of the blur kernel
    blur_loss: str = "l1"  # l1 (Bansal et al.) | l2: distance between the restorer's x0 and x0
    blur_prior_components: int = 1  # generation: GMM components over per-channel means of fully blurred images
    blur_start_noise: float = 0.02  # generation: std of the noise added to the flat start image (diversity)
    # gan (an adversarial objective instead of a corruption process; see dreamdata.gan)
    gan_loss: str = "non_saturating"  # non_saturating (Goodfellow et al. 2014) | hinge (Lim & Ye 2017)
    r1_gamma: float = 0.0  # R1 penalty weight gamma (Mescheder et al. 2018): gamma/2 * |grad_x D(x)|^2; 0 = off
    diffaugment: str = "color,translation,cutout"  # DiffAugment policies (Zhao et al. 2020), or none


@dataclass
class ModelConfig:
    """The denoising network. Input channels, image size and class count come from the data."""

    network: str = "unet"  # unet | convnext_unet (ConvNeXt blocks, the cold-diffusion report's) | small_cnn | dcgan
    class_conditional: bool = True  # embed class labels (with a learned null class for CFG)
    base_channels: int = 64
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [8])  # feature-map sizes with self-attention
    attention_head_channels: int = 32
    dropout: float = 0.1
    latent_dim: int = 128  # dcgan: size of the latent code z (base_channels is the width)
    spectral_norm: bool = True  # dcgan: spectral normalisation of the discriminator (Miyato et al. 2018)


@dataclass
class TrainConfig:
    """Optimisation, budget, bookkeeping."""

    batch_size: int = 64
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 2e-4
    discriminator_lr: Optional[float] = None  # gan: the discriminator's learning rate; None = train.lr
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 500
    lr_schedule: str = "constant"  # constant | cosine (cosine needs a step or epoch budget)
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    max_bad_steps: int = 10  # steps in a row with a non-finite loss/gradient that are skipped (with a warning)
    #                          before training stops with an error; 0 = stop at the first
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay ramps as min(decay, (1 + n) / (10 + n)) so early EMA is not stuck at init
    p_uncond: float = 0.1  # label dropout for classifier-free guidance
    epochs: Optional[float] = None  # budget: exactly one of epochs, steps, minutes
    steps: Optional[int] = None
    minutes: Optional[float] = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere) | fp32 | bf16
    channels_last: bool = False
    compile: bool = False  # torch.compile the network
    num_threads: Optional[int] = None  # torch CPU threads; None = torch's default
    log_every: int = 50  # steps between metrics.jsonl lines
    val_every: int = 1000  # steps between validation losses (0 = only at the end)
    val_batches: int = 4  # validation batches per evaluation
    checkpoint_every: int = 2000  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    sample_grid: bool = True  # write a sample grid (one row per class) at the end
    sample_per_class: int = 8
    sample_steps: int = 100  # ancestral DDPM steps for the end-of-training grid
    progress: bool = True  # show a progress bar
    tensorboard: bool = False  # also log scalars and the sample grid to run_dir/tensorboard (pip install
    #                            'dreamdata[tensorboard]')


@dataclass
class EvaluationConfig:
    """Sample-quality metrics during training (FID/KID/IS over steps), logged to metrics.jsonl."""

    every: int = 0  # steps between evaluations (0 = off); also evaluated at the end of training when on
    samples: int = 500  # generated images per evaluation (small N: figures only comparable at equal N)
    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 0.0
    batch_size: int = 250
    reference_split: str = "test"
    reference_count: int = 2000  # reference images (features computed once and cached)
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "is"])  # of fid, kid, is, pr
    fid_weights: Optional[str] = None  # local TorchScript Inception; None = $DREAMDATA_FID_WEIGHTS or download
    seed: int = 0


@dataclass
class RunConfig:
    """Everything a training run is built from."""

    name: str = "run"
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------------
# Building a RunConfig from YAML and overrides, with errors that name the key and value.


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} on lines {seen[key]} and {line} of the same mapping")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str, origin: str) -> Any:
    """Parse config YAML safely, with a ConfigError naming ``origin`` for invalid YAML or a duplicated key."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin}: not valid YAML: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from None


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    folder = resources.files("dreamdata") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_config_file(path_or_preset: str) -> dict[str, Any]:
    """Read a YAML file, or a shipped preset by name (``fashion-mnist``, ``tiny``...)."""
    path = Path(path_or_preset).expanduser()
    if path.is_file():
        text = path.read_text()
        origin = str(path)
    elif path_or_preset in preset_names():
        text = (resources.files("dreamdata") / "presets" / f"{path_or_preset}.yaml").read_text()
        origin = f"preset {path_or_preset!r}"
    else:
        raise ConfigError(f"config {path_or_preset!r}: no such file, and not a preset name "
                          f"(presets: {', '.join(preset_names())})")
    loaded = load_yaml(text, origin)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value`` and parse the value as YAML (so ``3``, ``1e-4``, ``[1,2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.steps=1000")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted_key`` "a.b", creating sections on the way."""
    parts = dotted_key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted_key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a dataclass field's type, converting int -> float where harmless."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:  # Optional[int] and int | None alike
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        (item_type,) = get_args(annotation)
        return [_coerce(item, item_type, key) for item in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # nan and inf: no setting means them, and nan != nan breaks resume checks
                raise ConfigError(f"config key {key}: expected a finite number, got {value!r}")
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Any:
        return value
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key {key}: expected {type_name}, got {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build the (nested) config dataclass ``cls`` from a plain mapping, type-checking every value.

    Missing keys take the dataclass defaults; an unknown key or a mistyped value is a ConfigError naming
    ``prefix + key`` (e.g. ``train.lr``), so YAML files, overrides and study files all fail the same way.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<top>'}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known keys in this section: "
                          f"{', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build_dataclass(annotation, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, annotation, f"{prefix}{name}")
    return cls(**kwargs)


def merge_trees(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` laid over it, recursively for nested sections."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_trees(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_tree(path_or_preset: Optional[str], overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML file or preset (``{}`` for none) with ``section.key=value`` overrides applied."""
    tree: dict[str, Any] = read_config_file(path_or_preset) if path_or_preset else {}
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    return tree


def load_config(path_or_preset: Optional[str] = None, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Resolve a RunConfig: dataclass defaults <- YAML file or preset <- ``key=value`` overrides."""
    config = build_dataclass(RunConfig, config_tree(path_or_preset, overrides), "")
    validate(config)
    return config


def config_from_dict(tree: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from its ``to_dict`` form (e.g. the config saved in a run directory)."""
    config = build_dataclass(RunConfig, tree, "")
    validate(config)
    return config


def merge_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` overrides on top of an existing config (used by ``--resume``)."""
    tree = config.to_dict()
    for text in overrides:
        key, value = parse_override(text)
        update: dict[str, Any] = {}
        set_dotted(update, key, value)
        tree = merge_trees(tree, update)
    return config_from_dict(tree)


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(options)}")


def validate(config: RunConfig) -> None:
    """Reject values that are well-typed but meaningless, naming the key."""
    p, m, t, d = config.process, config.model, config.train, config.data
    _choice("process.kind", p.kind, ("gaussian", "blur", "gan"))
    _choice("process.schedule", p.schedule, ("linear", "cosine", "constant"))
    _choice("process.prediction", p.prediction, ("epsilon", "x0", "v", "edm"))
    _choice("process.loss_weighting", p.loss_weighting, ("simple", "min_snr"))
    _validate_variance_and_loss(p)
    _choice("model.network", m.network, ("unet", "convnext_unet", "small_cnn", "dcgan"))
    if (p.kind == "gan") != (m.network == "dcgan"):
        raise ConfigError(f"config keys process.kind={p.kind} and model.network={m.network}: a GAN is "
                          "process.kind=gan with model.network=dcgan (both, or neither; the gan preset sets them)")
    _choice("train.optimizer", t.optimizer, ("adam", "adamw"))
    _choice("train.lr_schedule", t.lr_schedule, ("constant", "cosine"))
    _choice("train.precision", t.precision, ("auto", "fp32", "bf16"))
    if p.num_steps < 1:
        raise ConfigError(f"config key process.num_steps: expected a positive integer, got {p.num_steps}")
    if p.kind == "blur":
        _validate_blur(p)
    if p.kind == "gan":
        _validate_gan(config)
    budgets = [name for name in ("epochs", "steps", "minutes") if getattr(t, name) is not None]
    if len(budgets) > 1:
        raise ConfigError(f"config keys train.{budgets[0]} and train.{budgets[1]}: give exactly one budget "
                          "(epochs, steps or minutes); set the others to null")
    if t.lr_schedule == "cosine" and t.minutes is not None:
        raise ConfigError("config key train.lr_schedule: cosine decay needs a step or epoch budget, "
                          "not train.minutes")
    for key in ("epochs", "steps", "minutes"):
        value = getattr(t, key)
        if value is not None and value <= 0:
            raise ConfigError(f"config key train.{key}: expected a positive number, got {value}")
    if t.batch_size < 1:
        raise ConfigError(f"config key train.batch_size: expected a positive integer, got {t.batch_size}")
    if not 0.0 <= t.p_uncond < 1.0:
        raise ConfigError(f"config key train.p_uncond: expected 0 <= p < 1, got {t.p_uncond}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"config key train.ema_decay: expected 0 <= decay < 1, got {t.ema_decay}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"config key data.val_fraction: expected 0 <= fraction < 1, got {d.val_fraction}")
    if d.channels not in (None, 1, 3):
        raise ConfigError(f"config key data.channels: expected 1, 3 or null, got {d.channels}")
    for key in ("image_size", "pad_to"):
        value = getattr(d, key)
        if value is not None and value < 1:
            raise ConfigError(f"config key data.{key}: expected a positive integer, got {value}")
    if d.per_class is not None and d.per_class < 1:
        raise ConfigError(f"config key data.per_class: expected a positive integer, got {d.per_class}")
    if len(t.adam_betas) != 2:
        raise ConfigError(f"config key train.adam_betas: expected two numbers, got {t.adam_betas}")
    _validate_numbers(config)
    if t.max_bad_steps < 0:
        raise ConfigError(f"config key train.max_bad_steps: expected a number of steps >= 0, got {t.max_bad_steps}")
    _validate_evaluation(config.evaluation)


def _expect(valid: bool, key: str, value: Any, expected: str) -> None:
    if not valid:
        raise ConfigError(f"config key {key}: expected {expected}, got {value}")


def _validate_numbers(config: RunConfig) -> None:
    """Ranges of the numeric keys, so a bad value fails when the config is built (and under ``--dry-run``),
    not as a torch traceback or a ZeroDivisionError mid-run. Non-finite floats are refused by ``_coerce``."""
    p, m, t = config.process, config.model, config.train
    for name in ("beta_start", "beta_end", "constant_beta"):  # checked whatever the schedule: a typo is a typo
        value = getattr(p, name)
        _expect(0.0 < value < 1.0, f"process.{name}", value, "a variance 0 < beta < 1")
    _expect(p.cosine_s > 0.0, "process.cosine_s", p.cosine_s, "an offset s > 0")
    _expect(p.sigma_data > 0.0, "process.sigma_data", p.sigma_data, "a data standard deviation sigma_data > 0")
    _expect(p.lognormal_std > 0.0, "process.lognormal_std", p.lognormal_std, "a standard deviation P_std > 0")
    if p.loss_weighting == "min_snr":
        _expect(p.min_snr_gamma > 0.0, "process.min_snr_gamma", p.min_snr_gamma, "gamma > 0")
    _expect(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "0 <= dropout < 1")
    for name in ("base_channels", "num_res_blocks", "attention_head_channels"):
        _expect(getattr(m, name) >= 1, f"model.{name}", getattr(m, name), "a positive integer")
    _expect(bool(m.channel_mults) and min(m.channel_mults) >= 1, "model.channel_mults", m.channel_mults,
            "a non-empty list of positive integers")
    _expect(t.lr >= 0.0, "train.lr", t.lr, "a learning rate >= 0")
    _expect(t.weight_decay >= 0.0, "train.weight_decay", t.weight_decay, "a weight decay >= 0")
    _expect(all(0.0 <= beta < 1.0 for beta in t.adam_betas), "train.adam_betas", t.adam_betas,
            "two numbers in [0, 1)")
    for name in ("log_every", "val_batches", "sample_per_class", "sample_steps"):
        _expect(getattr(t, name) >= 1, f"train.{name}", getattr(t, name), "a positive integer")
    for name in ("val_every", "checkpoint_every", "keep_checkpoints", "warmup_steps"):
        _expect(getattr(t, name) >= 0, f"train.{name}", getattr(t, name), "an integer >= 0")
    _expect(t.grad_clip >= 0.0, "train.grad_clip", t.grad_clip, "a gradient norm >= 0 (0 disables clipping)")
    _expect(t.num_threads is None or t.num_threads >= 1, "train.num_threads", t.num_threads,
            "a positive integer or null")


def _validate_variance_and_loss(p: ProcessConfig) -> None:
    """The reverse-variance, loss and timestep-distribution keys: each combination that would train nothing, or
    nothing it says, is refused."""
    _choice("process.variance", p.variance, ("fixed_small", "fixed_large", "learned_range"))
    _choice("process.loss", p.loss, ("simple", "vlb", "hybrid"))
    _choice("process.timestep_distribution", p.timestep_distribution, ("uniform", "lognormal"))
    _expect(p.vlb_weight > 0.0, "process.vlb_weight", p.vlb_weight, "a weight lambda > 0")
    if p.kind != "gaussian":
        for key, value, default in (("variance", p.variance, "fixed_small"), ("loss", p.loss, "simple"),
                                    ("importance_sampling", p.importance_sampling, False),
                                    ("timestep_distribution", p.timestep_distribution, "uniform")):
            if value != default:
                raise ConfigError(f"config key process.{key}: {value} applies to process.kind=gaussian only, "
                                  f"not {p.kind}")
    if p.variance == "learned_range" and p.loss == "simple":
        raise ConfigError("config key process.loss: simple does not train a learned_range variance (L_simple "
                          "ignores it); use process.loss=hybrid or vlb")
    if p.loss == "hybrid" and p.variance != "learned_range":
        raise ConfigError(f"config key process.loss: hybrid adds L_vlb to train the variance, with the mean frozen, "
                          f"so it needs process.variance=learned_range, not {p.variance}")
    if p.importance_sampling and p.loss != "vlb":
        raise ConfigError(f"config key process.importance_sampling: true needs process.loss=vlb (the paper's "
                          f"resampling of t for the bound), not {p.loss}")
    if p.importance_sampling and p.timestep_distribution != "uniform":
        raise ConfigError(f"config key process.timestep_distribution: {p.timestep_distribution} cannot be combined "
                          "with process.importance_sampling=true, which draws its own t; use one of them")
    if p.loss == "vlb" and p.loss_weighting != "simple":
        raise ConfigError(f"config key process.loss_weighting: {p.loss_weighting} weights L_simple's MSE, which "
                          "process.loss=vlb does not have; use loss_weighting=simple or loss=hybrid")


def _validate_evaluation(e: EvaluationConfig) -> None:
    if e.every < 0:
        raise ConfigError(f"config key evaluation.every: expected a number of steps >= 0, got {e.every}")
    if e.samples < 2 or e.reference_count < 2:
        key = "samples" if e.samples < 2 else "reference_count"
        raise ConfigError(f"config key evaluation.{key}: FID needs at least 2 images, got {getattr(e, key)}")
    for key in ("steps", "batch_size"):
        if getattr(e, key) < 1:
            raise ConfigError(f"config key evaluation.{key}: expected a positive integer, got {getattr(e, key)}")
    _expect(e.guidance >= 0.0, "evaluation.guidance", e.guidance, "a guidance scale w >= 0")
    _choice("evaluation.reference_split", e.reference_split, ("train", "test"))
    for name in e.metrics:
        _choice("evaluation.metrics", name, ("fid", "kid", "is", "pr"))
    if not e.metrics:
        raise ConfigError("config key evaluation.metrics: expected at least one of fid, kid, is, pr")


def _validate_gan(config: RunConfig) -> None:
    """The GAN keys; checked only when ``process.kind`` is ``gan``."""
    p, m, t = config.process, config.model, config.train
    _choice("process.gan_loss", p.gan_loss, ("non_saturating", "hinge"))
    _expect(p.r1_gamma >= 0.0, "process.r1_gamma", p.r1_gamma, "an R1 weight gamma >= 0 (0 = off)")
    from dreamdata.gan.diffaugment import parse_policy

    try:
        parse_policy(p.diffaugment)
    except ValueError as error:
        raise ConfigError(f"config key process.diffaugment: {error}") from None
    _expect(m.latent_dim >= 1, "model.latent_dim", m.latent_dim, "a positive integer")
    _expect(t.discriminator_lr is None or t.discriminator_lr >= 0.0, "train.discriminator_lr",
            t.discriminator_lr, "a learning rate >= 0 or null (= train.lr)")


def _validate_blur(p: ProcessConfig) -> None:
    """The blur (cold diffusion) keys; checked only when ``process.kind`` is ``blur``."""
    _choice("process.blur_schedule", p.blur_schedule, ("constant", "linear", "exponential"))
    _choice("process.blur_loss", p.blur_loss, ("l1", "l2"))
    if p.kernel_size < 1 or p.kernel_size % 2 == 0:
        raise ConfigError(f"config key process.kernel_size: expected a positive odd integer, got {p.kernel_size}")
    names = ("blur_beta",) if p.blur_schedule == "constant" else ("blur_beta_start", "blur_beta_end")
    for name in names:
        value = getattr(p, name)
        if not (value > 0 and value < float("inf")):
            raise ConfigError(f"config key process.{name}: expected a positive kernel variance (pixels^2), "
                              f"got {value}")
    if p.blur_prior_components < 1:
        raise ConfigError(f"config key process.blur_prior_components: expected a positive integer, "
                          f"got {p.blur_prior_components}")
    if not p.blur_start_noise >= 0:
        raise ConfigError(f"config key process.blur_start_noise: expected a standard deviation >= 0, "
                          f"got {p.blur_start_noise}")


def config_json(config: RunConfig) -> str:
    """Compact JSON of a config, stored in checkpoint metadata."""
    return json.dumps(config.to_dict(), sort_keys=True)
