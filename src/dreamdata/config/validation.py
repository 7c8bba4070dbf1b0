"""Range and consistency checks of a built :class:`RunConfig`.

Types are checked while the config is built (``dreamdata.config.loading``); these checks refuse values
that are well-typed but meaningless (a negative learning rate, an even blur kernel, a hybrid loss without a
learned variance), naming the key, so a bad config fails when it is resolved (and under ``--dry-run``)
rather than mid-run.
"""

from __future__ import annotations

from typing import Any

from dreamdata.config.sections import EvaluationConfig, ProcessConfig, RunConfig
from dreamdata.errors import ConfigError


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
    _expect(p.input_perturbation >= 0.0, "process.input_perturbation", p.input_perturbation,
            "a perturbation scale gamma >= 0 (DDPM-IP uses 0.1)")
    if p.input_perturbation:
        _expect(p.loss == "simple", "process.input_perturbation", p.input_perturbation,
                f"0 with process.loss {p.loss!r} (input perturbation trains loss 'simple')")
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
    _expect(all(isinstance(step, int) and not isinstance(step, bool) and step >= 1 for step in t.keep_steps),
            "train.keep_steps", t.keep_steps, "a list of positive step numbers")
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
                                    ("timestep_distribution", p.timestep_distribution, "uniform"),
                                    ("input_perturbation", p.input_perturbation, 0.0)):
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
