"""The config's sections: one dataclass per section, holding every default and its meaning.

This is the one place a config key is declared. ``dreamdata.config.loading`` lays YAML presets and
``key=value`` overrides over these defaults, and ``dreamdata.config.validation`` refuses values that are
well-typed but meaningless. A resolved :class:`RunConfig` is saved as YAML in each run directory and as
JSON (:func:`config_json`) in checkpoint metadata.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml


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
    # DDPM-IP (Ning et al. 2023): train on x_t made with eps + gamma xi, target eps (their gamma 0.1); 0 = off
    input_perturbation: float = 0.0
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
    # checkpoints also written at these steps and never deleted: e.g. the earlier self an autoguided sampler is
    # guided by (`dreamdata sample --autoguide STEP`, the study's dream.autoguide_step)
    keep_steps: list[int] = field(default_factory=list)
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


def config_json(config: RunConfig) -> str:
    """Compact JSON of a config, stored in checkpoint metadata."""
    return json.dumps(config.to_dict(), sort_keys=True)
