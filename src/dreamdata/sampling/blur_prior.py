"""Where unconditional cold-diffusion sampling starts: a Gaussian mixture over fully blurred images' colours.

A blur process has no analytic ``x_T`` distribution (unlike DDPM's ``N(0, I)``), but ``T`` blur steps leave
an image close to flat, i.e. close to its per-channel mean. Following Bansal et al. 2022 (sec. 5.1, "we fit
a Gaussian mixture model over the channel-wise means of the fully degraded training images"), generation
starts from a flat image whose channel means are drawn from that mixture. A deterministic sampler maps
equal starts to equal images, so - as the cold-diffusion report found necessary for diverse samples - a
small Gaussian noise term ``start_noise * eps`` is added to the flat image:

    x_T = mu 1 + start_noise * eps,   mu ~ sum_k pi_k N(m_k, S_k),   eps ~ N(0, I).

The mixture is fitted by EM (Dempster et al. 1977) in float64 from a seeded initialisation, so it is
deterministic; :meth:`BlurPrior.save` writes it as JSON into the run directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from dreamdata.atomic import write_text_atomic
from dreamdata.config import RunConfig
from dreamdata.data import load_dataset, split_validation
from dreamdata.process.blur import GaussianBlurDegradation
from dreamdata.process.rng import PerSampleGenerator

__all__ = ["PRIOR_FILE", "BlurPrior", "blurred_channel_means", "fit_blur_prior", "fit_gmm", "prior_for_run",
           "start_sampler"]

PRIOR_FILE = "blur_prior.json"
"""Name of the fitted mixture in a run directory."""


@dataclass(frozen=True)
class BlurPrior:
    """A ``K``-component Gaussian mixture over ``C``-dimensional channel means (plain lists, JSON-ready)."""

    weights: list[float]  # pi_k, [K]
    means: list[list[float]]  # m_k, [K, C]
    covariances: list[list[list[float]]]  # S_k, [K, C, C]
    num_images: int  # how many fully blurred training images it was fitted to
    seed: int

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BlurPrior":
        return cls(**json.loads(Path(path).read_text()))

    def sample_means(self, generator: PerSampleGenerator) -> torch.Tensor:
        """Channel means ``[N, C]`` (float64, CPU), one per sample, drawn from each sample's own stream."""
        weights = torch.tensor(self.weights, dtype=torch.float64)
        means = torch.tensor(self.means, dtype=torch.float64)
        factors = torch.linalg.cholesky(torch.tensor(self.covariances, dtype=torch.float64))  # S_k = L L^T
        u = generator.rand(1, dtype=torch.float64)[:, 0].cpu()
        component = torch.searchsorted(weights.cumsum(0), u.contiguous(), right=True).clamp(max=len(self.weights) - 1)
        z = generator.randn(means.shape[1], dtype=torch.float64).cpu()
        return means[component] + (factors[component] @ z[:, :, None])[:, :, 0]  # mu = m_k + L_k z


def start_sampler(prior: BlurPrior, start_noise: float):
    """``start(generator, shape, device) -> x_T`` ``[N, *shape]`` for :func:`dreamdata.sampling.generate.generate`.

    Draws (per sample, in this order) the mixture component, the channel means and the pixel noise.
    """
    if not start_noise >= 0:
        raise ValueError(f"start_noise must be >= 0, got {start_noise!r}")

    def start(generator: PerSampleGenerator, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        means = prior.sample_means(generator).to(device=device, dtype=torch.float32)
        if means.shape[1] != shape[0]:
            raise ValueError(f"the blur prior has {means.shape[1]} channel(s), the network {shape[0]}")
        flat = means[:, :, None, None].expand(-1, -1, *shape[1:])
        noise = generator.randn(*shape, device=device, dtype=torch.float32)
        return flat + start_noise * noise

    return start


# -- fitting ------------------------------------------------------------------------------------------


def blurred_channel_means(process: GaussianBlurDegradation, images_uint8: torch.Tensor,
                          batch_size: int = 4096) -> torch.Tensor:
    """Per-channel means ``[N, C]`` (float64) of ``D(x, T)`` for uint8 images ``[N, C, H, W]`` mapped to ``[-1, 1]``."""
    out = []
    for start in range(0, images_uint8.shape[0], batch_size):
        x = images_uint8[start:start + batch_size].double().div(127.5).sub(1.0)
        out.append(process.degrade(x, process.num_steps).mean(dim=(2, 3)))
    return torch.cat(out)


def fit_gmm(points: torch.Tensor, components: int, seed: int, iterations: int = 200, tol: float = 1e-9,
            reg_covar: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM for a full-covariance Gaussian mixture on ``points`` ``[N, D]``: ``(weights, means, covariances)``.

    Initialised with ``components`` distinct points picked by a generator seeded with ``seed`` as means,
    the pooled covariance and equal weights; ``reg_covar`` is added to every covariance's diagonal (as
    scikit-learn does) so a component on a few identical points stays invertible.
    """
    points = points.double()
    n, dim = points.shape
    if not 1 <= components <= n:
        raise ValueError(f"cannot fit {components} mixture components to {n} points")
    generator = torch.Generator().manual_seed(seed)
    means = points[torch.randperm(n, generator=generator)[:components]].clone()
    eye = torch.eye(dim, dtype=torch.float64)
    pooled = torch.cov(points.T).reshape(dim, dim) if n > 1 else torch.zeros(dim, dim, dtype=torch.float64)
    covariances = (pooled + reg_covar * eye).expand(components, dim, dim).clone()
    weights = torch.full((components,), 1.0 / components, dtype=torch.float64)
    previous = -math.inf
    for _ in range(iterations):
        # E step: responsibilities r_ik ∝ pi_k N(x_i | m_k, S_k), in log space
        log_density = torch.distributions.MultivariateNormal(means, covariances).log_prob(points[:, None, :])
        joint = log_density + weights.log()
        log_likelihood = torch.logsumexp(joint, dim=1)
        responsibilities = (joint - log_likelihood[:, None]).exp()
        # M step: weighted counts, means and covariances
        counts = responsibilities.sum(0) + 1e-12
        weights = counts / n
        means = responsibilities.T @ points / counts[:, None]
        centred = points[:, None, :] - means[None]
        covariances = torch.einsum("nk,nki,nkj->kij", responsibilities, centred, centred) / counts[:, None, None]
        covariances = covariances + reg_covar * eye
        mean_log_likelihood = float(log_likelihood.mean())
        if abs(mean_log_likelihood - previous) < tol:
            break
        previous = mean_log_likelihood
    return weights, means, covariances


def fit_blur_prior(process: GaussianBlurDegradation, images_uint8: torch.Tensor, components: int,
                   seed: int) -> BlurPrior:
    """Fit the start distribution to the channel means of the fully blurred ``images_uint8`` ``[N, C, H, W]``."""
    weights, means, covariances = fit_gmm(blurred_channel_means(process, images_uint8), components, seed)
    return BlurPrior(weights.tolist(), means.tolist(), covariances.tolist(), int(images_uint8.shape[0]), seed)


def prior_for_run(process, config: RunConfig, run_dir: Optional[Path] = None,
                  train_images: Optional[torch.Tensor] = None, save: bool = False) -> Optional[BlurPrior]:
    """A blur run's start distribution; ``None`` for Gaussian diffusion (which starts from ``N(0, I)``).

    Read from ``run_dir/blur_prior.json`` when it is there; otherwise fitted (``process.blur_prior_components``
    components, seeded by ``train.seed``) to ``train_images`` - by default the run's training split, loaded
    and held out exactly as the trainer does - and written there when ``save``.
    """
    if not isinstance(process, GaussianBlurDegradation):
        return None
    path = None if run_dir is None else Path(run_dir) / PRIOR_FILE
    if path is not None and path.is_file():
        return BlurPrior.load(path)
    if train_images is None:
        data = load_dataset(config.data, "train")
        train_images = split_validation(data, config.data.val_fraction, config.data.split_seed)[0].images
    prior = fit_blur_prior(process, train_images, config.process.blur_prior_components, config.train.seed)
    if save and path is not None:
        prior.save(path)
    return prior
