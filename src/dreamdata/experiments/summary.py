"""``summary.md`` of a sweep: one table row per finished cell, read from ``results.jsonl`` alone.

Two layouts: ``default`` (arm, checkpoint, the sampling settings that vary, every metric scored, N and
time) and ``cold-study`` (the cold-diffusion report's noise-vs-blur table, one row per arm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dreamdata.atomic import write_text_atomic
from dreamdata.experiments.sweep_config import SAMPLING_DEFAULTS

__all__ = ["cold_study_table", "default_table", "write_summary"]


def _number(value: Optional[float], digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cold_study_table(results: list[dict[str, Any]]) -> str:
    """The cold-diffusion study's table: held-out loss, restoration RMSE/SSIM/PSNR and FID per arm."""
    with_fid = any("fid" in r["metrics"] for r in results)
    header = ["arm", "process", "T", "train steps (images)", "train min", "held-out loss (own objective)",
              "RMSE ↓", "SSIM ↑", "PSNR dB ↑"] + (["FID ↓"] if with_fid else [])
    rows = []
    for r in results:
        p, m = r["process"], r["metrics"]
        restoration = m.get("restoration") or {}
        rows.append([r["arm"], f"{p['kind']} ({p['schedule']})", str(p["num_steps"]),
                     f"{r['checkpoint_step']:,} ({r['images_seen']:,})", _number(r.get("train_minutes"), 1),
                     f"{_number(m.get('held_out_loss'), 4)} ({p['objective']})",
                     _number(restoration.get("rmse"), 4), _number(restoration.get("ssim"), 4),
                     _number(restoration.get("psnr"), 2)] + ([_number(m.get("fid"), 1)] if with_fid else []))
    return _markdown(header, rows)


SCALAR_COLUMNS = [("fid", "FID ↓", 2), ("kid_mean", "KID ↓", 4), ("is_mean", "IS ↑", 2),
                  ("precision", "precision", 3), ("recall", "recall", 3), ("held_out_loss", "held-out loss", 4)]


def varying_sampling_keys(results: list[dict[str, Any]]) -> list[str]:
    keys = sorted({key for r in results for key in r["sampling"]})
    return [key for key in keys if len({repr(r["sampling"].get(key)) for r in results}) > 1]


def default_table(results: list[dict[str, Any]]) -> str:
    varying = varying_sampling_keys(results)
    shown = varying or ["sampler", "steps", "guidance"]
    scalars = [(key, title, digits) for key, title, digits in SCALAR_COLUMNS
               if any(r["metrics"].get(key) is not None for r in results)]
    has_restoration = any("restoration" in r["metrics"] for r in results)
    has_nll = any("nll" in r["metrics"] for r in results)
    header = ["arm", "checkpoint step", *shown, *(title for _, title, _ in scalars)]
    header += ["bits/dim ↓ (± s.e.)"] if has_nll else []
    header += ["restoration RMSE / SSIM / PSNR"] if has_restoration else []
    header += ["N", "samples/s", "seconds"]
    rows = []
    for r in results:
        m = r["metrics"]
        row = [r["arm"], f"{r['checkpoint_step']:,}",  # a key left out of a cell is at its default (fp32...)
               *(str(r["sampling"].get(key, SAMPLING_DEFAULTS.get(key))) for key in shown)]
        for key, _, digits in scalars:
            value = m.get(key)
            text = _number(value, digits)
            if key == "kid_mean" and value is not None:
                text += f" ± {m['kid_std']:.4f}"
            row.append(text)
        if has_nll:
            nll = m.get("nll") or {}
            row.append(f"{_number(nll.get('bits_per_dim'), 4)} ± {_number(nll.get('bits_per_dim_stderr'), 4)}"
                       + (" (est.)" if nll.get("estimate") else "") if nll else "-")
        if has_restoration:
            rest = m.get("restoration") or {}
            row.append(f"{_number(rest.get('rmse'), 4)} / {_number(rest.get('ssim'), 4)} / "
                       f"{_number(rest.get('psnr'), 2)}")
        row += [f"{r['n']:,}", _number(r.get("samples_per_s"), 2), _number(r["seconds"].get("total"), 0)]
        rows.append(row)
    return _markdown(header, rows)


def blur_robustness_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for row in r["metrics"].get("blur_robustness") or []:
            rows.append([r["arm"], f"{r['checkpoint_step']:,}", f"{row['sigma']:g}", str(row["t"]),
                         f"{_number(row['blurred_rmse'], 4)} → {_number(row['rmse'], 4)}",
                         f"{_number(row['blurred_ssim'], 4)} → {_number(row['ssim'], 4)}",
                         f"{_number(row['blurred_psnr'], 2)} → {_number(row['psnr'], 2)}"])
    if not rows:
        return ""
    header = ["arm", "checkpoint step", "blur σ (px)", "noised to t", "RMSE blurred → restored",
              "SSIM blurred → restored", "PSNR blurred → restored"]
    return _markdown(header, rows)


def write_summary(out_dir: Path, sweep, results: list[dict[str, Any]], total_cells: int,
                  run_dirs: Optional[dict[str, Path]] = None) -> Path:
    """Write ``summary.md`` (the table, the blur-robustness table when scored, the figures) and return it."""
    lines = [f"# Sweep {sweep.name}", "",
             f"{len(results)} of {total_cells} cells finished; N = {sweep.evaluation.n} samples per cell against "
             f"{sweep.evaluation.ref_n} {sweep.evaluation.ref_split} images; sample k of every cell is seeded "
             f"from (seed {sweep.evaluation.seed}, k). Source: `{sweep.source}`.", ""]
    if results:
        lines.append(cold_study_table(results) if sweep.table == "cold-study" else default_table(results))
        robustness = blur_robustness_table(results)
        if robustness:
            lines += ["## Blur robustness (scored against the sharp originals)", "", robustness]
    else:
        lines.append("No cell has finished yet.\n")
    figures = sorted(path.name for path in out_dir.glob("*.png"))
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    path = out_dir / "summary.md"
    write_text_atomic(path, "\n".join(lines))
    if sweep.table == "cold-study" and results:
        write_text_atomic(out_dir / "table.md", cold_study_table(results))
    return path
