"""The signal left by a noise schedule: ``alpha_bar_t`` against ``t / T``, for several schedules in one figure.

``alpha_bar_t = prod_{s <= t} (1 - beta_s)`` (Ho et al. 2020, sec. 2) is the squared weight of ``x_0`` in
``x_t``. A large constant ``beta`` (0.1) drives it to ~0 within a few percent of the steps, so most of the
chain trains and samples pure noise; a small one (0.001, T = 2000) never reaches 0, so ``x_T`` is not the
``N(0, I)`` the sampler starts from. The cosine schedule (Nichol & Dhariwal 2021) falls evenly in between.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from dreamdata.reports.figures import save_figure  # noqa: E402


def plot_alpha_bar(schedules: dict[str, torch.Tensor], out: str | Path) -> Path:
    """Plot ``alpha_bar`` ``[T]`` of each named schedule against ``t / T``, linear and log scale, as a PNG."""
    if not schedules:
        raise ValueError("plot_alpha_bar needs at least one schedule")
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for name, alpha_bar in schedules.items():
        alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
        fraction = torch.arange(1, alpha_bar.numel() + 1, dtype=torch.float64) / alpha_bar.numel()
        label = f"{name} (T = {alpha_bar.numel()}, " + r"$\bar\alpha_T$" + f" = {float(alpha_bar[-1]):.2g})"
        for axis in axes:
            axis.plot(fraction.numpy(), alpha_bar.clamp(min=1e-30).numpy(), label=label)
    axes[0].set_ylabel(r"$\bar\alpha_t$ (signal weight$^2$ in $x_t$)")
    axes[1].set_yscale("log")
    axes[1].set_ylim(1e-12, 1.5)
    for axis in axes:
        axis.set_xlabel("t / T")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(r"$\bar\alpha_t = \prod_{s \leq t} (1 - \beta_s)$: the share of the signal's power left "
                    r"in $x_t$ (log scale right: where it vanishes)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, out)
