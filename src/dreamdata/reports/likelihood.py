"""The terms of the variational bound against t, from the record ``dreamdata evaluate --nll`` writes (nll.json)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from dreamdata.reports.figures import save_figure  # noqa: E402

__all__ = ["plot_vlb_terms"]

FLOOR = 1e-8  # bits/dim; terms below it are drawn at it (a log axis cannot show 0)


def plot_vlb_terms(record: dict, out: str | Path) -> Path:
    """``L_0`` (decoder), ``L_t`` (KL terms) and ``L_T`` (prior) in bits/dim against t, log y-axis, as a PNG.

    ``record`` is the dict of :func:`dreamdata.evaluation.likelihood.nll_bits_per_dim` (what nll.json holds).
    """
    t, bpd = record["terms"]["t"], [max(value, FLOOR) for value in record["terms"]["bpd"]]
    num_steps = record["num_steps"]
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    axis.plot(t[1:], bpd[1:], marker="." if len(t) < 60 else None, label="$L_t$, KL of the reverse step")
    axis.scatter([t[0]], [bpd[0]], color="C1", zorder=3, label="$L_0$, discretized decoder")
    axis.scatter([num_steps], [max(record["prior_bpd"], FLOOR)], color="C2", marker="s", zorder=3,
                 label="$L_T$, prior KL")
    axis.set_yscale("log")
    axis.set_xlabel("timestep t (training index; $L_T$ drawn at t = T)")
    axis.set_ylabel("term of the bound (bits/dim, mean over images)")
    kind = f"strided estimate, {record['nll_steps']} of {num_steps - 1} KL terms" if record["estimate"] else "exact"
    axis.set_title(f"VLB {record['bits_per_dim']:.4g} ± {record['bits_per_dim_stderr']:.2g} bits/dim "
                   f"(N={record['n']}, T={num_steps}, {kind})", fontsize=9)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, out)
